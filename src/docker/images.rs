//! Images: inspecting, listing and removing them, and the three ways one is made — pulled
//! from a registry, imported from a root filesystem tarball (`docker import`), or built from a
//! Dockerfile context with its log streamed line by line.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::client::label_filters;
use super::exec::LineSplitter;
use super::{Docker, DockerError, TAIL_LINES};
use crate::output_tail::OutputTail;

/// An image on the engine, from an inspect or a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id (`sha256:…`).
    pub id: String,
    /// Its tags (`repo:tag`).
    pub tags: Vec<String>,
    /// Its labels (the stack's `packager.*` labels say what it was made from).
    pub labels: BTreeMap<String, String>,
    /// Its `ENV` (`KEY=value`), when inspected (empty in listings).
    pub env: Vec<String>,
    /// Its architecture, when inspected (`None` in listings).
    pub arch: Option<String>,
    /// Its size in bytes, uncompressed, shared layers included.
    pub size: u64,
}

/// Options for [`Docker::import_rootfs`]: the equivalent of `docker import - repo:tag --change …`.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Repository, e.g. `packager-stack-bookworm`.
    pub repo: String,
    /// Tag, e.g. `build-0123456789ab`.
    pub tag: String,
    /// Dockerfile instructions applied to the image config, e.g. `ENV PATH=/usr/bin:/bin`,
    /// `CMD ["/bin/bash"]`, `LABEL key=value`.
    pub changes: Vec<String>,
    /// Commit message recorded in the image history.
    pub message: Option<String>,
}

/// Options for [`Docker::build_image`].
#[derive(Debug, Clone, Default)]
pub struct ImageBuildOptions {
    /// The tag to give the image, `repo:tag`.
    pub tag: String,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Labels to put on the image (`LABEL`s the Dockerfile does not write).
    pub labels: BTreeMap<String, String>,
    /// Values of the Dockerfile's `ARG`s.
    pub build_args: BTreeMap<String, String>,
    /// Give `RUN` steps a network (`default`) or not (`none`).
    pub network: bool,
}

impl Docker {
    /// Inspects an image by reference or id; `None` if there is no such image.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, DockerError> {
        match self.client.inspect_image(reference).await {
            Ok(image) => {
                let config = image.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    id: image.id.unwrap_or_default(),
                    tags: image.repo_tags.unwrap_or_default(),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                    env: config.env.unwrap_or_default(),
                    arch: image.architecture,
                    size: image.size.unwrap_or_default().max(0) as u64,
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DockerError::engine(
                format!("inspect image `{reference}`"),
                e,
            )),
        }
    }

    /// Whether an image exists locally.
    pub async fn image_exists(&self, reference: &str) -> Result<bool, DockerError> {
        Ok(self.inspect_image(reference).await?.is_some())
    }

    async fn inspect_created(&self, reference: &str) -> Result<ImageInfo, DockerError> {
        self.inspect_image(reference)
            .await?
            .ok_or_else(|| DockerError::ImageVanished {
                image: reference.to_owned(),
            })
    }

    /// Pulls an image from its registry, reporting progress lines.
    pub async fn pull_image(
        &self,
        reference: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ImageInfo, DockerError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let mut stream = self.client.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Pull {
                image: reference.to_owned(),
                source: e.into(),
            })?;
            if let Some(status) = info.status {
                match info.id {
                    Some(id) => progress(&format!("{id}: {status}")),
                    None => progress(&status),
                }
            }
        }
        self.inspect_created(reference).await
    }

    /// Creates an image from a root filesystem tarball, like `docker import - repo:tag`.
    ///
    /// The tarball is streamed: if `rootfs` yields an error, the upload is aborted and the error
    /// is returned (the engine discards the partial image).
    pub async fn import_rootfs<S>(
        &self,
        rootfs: S,
        options: &ImportOptions,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ImageInfo, DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let reference = format!("{}:{}", options.repo, options.tag);
        let mut builder = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(&options.repo)
            .tag(&options.tag)
            .changes(options.changes.clone());
        if let Some(message) = &options.message {
            builder = builder.message(message);
        }
        let mut stream = self.client.create_image(
            Some(builder.build()),
            Some(bollard::body_try_stream(rootfs)),
            None,
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Import {
                image: reference.clone(),
                source: e.into(),
            })?;
            if let Some(status) = info.status {
                progress(&status);
            }
        }
        self.inspect_created(&reference).await
    }

    /// Builds an image from a tar of the build context, streaming the build log line by line.
    ///
    /// A failing step returns [`DockerError::Build`] with the log tail.
    pub async fn build_image<S>(
        &self,
        context: S,
        options: &ImageBuildOptions,
        output: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ImageInfo, DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let labels: HashMap<String, String> = options
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let build_args: HashMap<String, String> = options
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile(&options.dockerfile)
            .t(&options.tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .buildargs(&build_args)
            .networkmode(if options.network { "default" } else { "none" })
            .build();
        let mut tail = OutputTail::new(TAIL_LINES);
        let mut lines = LineSplitter::default();
        let mut stream =
            self.client
                .build_image(opts, None, Some(bollard::body_try_stream(context)));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        lines.push(text.as_bytes(), |line| {
                            tail.push(line);
                            output(line);
                        });
                    }
                    if let Some(status) = info.status {
                        output(&status);
                    }
                }
                Err(e) => {
                    lines.finish(|line| {
                        tail.push(line);
                        output(line);
                    });
                    let message = match e {
                        bollard::errors::Error::DockerStreamError { error } => error,
                        e => e.to_string(),
                    };
                    return Err(DockerError::Build {
                        image: options.tag.clone(),
                        message: message.trim_end().to_owned(),
                        tail: tail.into_vec(),
                    });
                }
            }
        }
        lines.finish(|line| output(line));
        self.inspect_created(&options.tag).await
    }

    /// Removes an image (`force` also untags it from other references).
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<(), DockerError> {
        let options = RemoveImageOptionsBuilder::default().force(force).build();
        self.client
            .remove_image(reference, Some(options), None)
            .await
            .map(drop)
            .map_err(|e| DockerError::engine(format!("remove image `{reference}`"), e))
    }

    /// Lists images matching all the given labels (`(key, None)` matches any value).
    pub async fn list_images(
        &self,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Vec<ImageInfo>, DockerError> {
        let filters = label_filters(labels);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = self
            .client
            .list_images(Some(options))
            .await
            .map_err(|e| DockerError::engine("list images", e))?;
        Ok(images
            .into_iter()
            .map(|image| ImageInfo {
                id: image.id,
                tags: image.repo_tags,
                labels: image.labels.into_iter().collect(),
                env: Vec::new(),
                arch: None,
                size: image.size.max(0) as u64,
            })
            .collect())
    }
}
