//! Images: inspecting, listing and removing them, and the three ways one is made — pulled
//! from a registry, imported from a root filesystem tarball (`docker import`), or built from a
//! Dockerfile context with its log streamed line by line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::client::label_filters;
use super::exec::LineSplitter;
use super::{Docker, DockerError, TAIL_LINES};
use crate::arch::Arch;
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
    /// The architecture of the root file system. The engine's import records its own
    /// architecture whatever the files are, so a root file system of another architecture is
    /// built `FROM scratch` for that platform instead, which records the right one.
    pub platform: Option<Arch>,
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
    /// Build for this platform (`linux/<arch>`) rather than the engine's own.
    pub platform: Option<Arch>,
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

    /// Pulls an image from its registry (for `platform` when given, else the engine's own),
    /// reporting progress lines.
    pub async fn pull_image(
        &self,
        reference: &str,
        platform: Option<Arch>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ImageInfo, DockerError> {
        let platform = platform.map(|a| format!("linux/{a}"));
        let mut options = CreateImageOptionsBuilder::default().from_image(reference);
        if let Some(platform) = &platform {
            options = options.platform(platform);
        }
        let options = options.build();
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
        if let Some(arch) = options.platform
            && arch != self.engine().await?.arch
        {
            return self
                .import_foreign(rootfs, options, arch, &reference, progress)
                .await;
        }
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

    /// [`Docker::import_rootfs`] of a root file system of another architecture than the
    /// engine's: the stream is written into a build context (`Dockerfile` + `rootfs.tar`) in a
    /// temporary folder, then built `FROM scratch` for `linux/<arch>`, with the import's
    /// changes as Dockerfile instructions.
    async fn import_foreign<S>(
        &self,
        rootfs: S,
        options: &ImportOptions,
        arch: Arch,
        reference: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ImageInfo, DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut dockerfile = String::from("FROM scratch\nADD rootfs.tar /\n");
        for change in &options.changes {
            dockerfile.push_str(change);
            dockerfile.push('\n');
        }
        let failed = |err: std::io::Error| DockerError::Import {
            image: reference.to_owned(),
            source: bollard::errors::Error::IOError { err }.into(),
        };
        let dir = tempfile::Builder::new()
            .prefix("packager-import-")
            .tempdir()
            .map_err(failed)?;
        let context = dir.path().join("context.tar");
        progress(&format!("writing a linux/{arch} build context"));
        write_rootfs_context(rootfs, &dockerfile, &context)
            .await
            .map_err(failed)?;
        let file = tokio::fs::File::open(&context).await.map_err(failed)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let build = ImageBuildOptions {
            tag: reference.to_owned(),
            dockerfile: "Dockerfile".into(),
            labels: BTreeMap::new(),
            build_args: BTreeMap::new(),
            network: false,
            platform: Some(arch),
        };
        self.build_image(stream, &build, progress).await
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
        let platform = options.platform.map(|a| format!("linux/{a}"));
        let mut opts = BuildImageOptionsBuilder::default();
        if let Some(platform) = &platform {
            opts = opts.platform(platform);
        }
        let opts = opts
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

/// Writes a build context tar at `path`: `Dockerfile`, then `rootfs.tar` holding the bytes of
/// `rootfs`. The root file system is streamed straight into the context (its header is written
/// once its size is known), so it is on disk once.
async fn write_rootfs_context<S>(rootfs: S, dockerfile: &str, path: &Path) -> std::io::Result<()>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    fn header(name: &str, size: u64) -> std::io::Result<tar::Header> {
        let mut h = tar::Header::new_gnu();
        h.set_path(name)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h)
    }
    fn padding(size: u64) -> usize {
        ((512 - size % 512) % 512) as usize
    }
    let mut file = tokio::fs::File::create(path).await?;
    let text = dockerfile.as_bytes();
    file.write_all(header("Dockerfile", text.len() as u64)?.as_bytes())
        .await?;
    file.write_all(text).await?;
    file.write_all(&vec![0; padding(text.len() as u64)]).await?;
    let rootfs_header_at = file.stream_position().await?;
    file.write_all(&[0; 512]).await?;
    let mut size = 0u64;
    futures_util::pin_mut!(rootfs);
    while let Some(chunk) = rootfs.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.write_all(&vec![0; padding(size)]).await?;
    file.write_all(&[0; 1024]).await?;
    file.seek(std::io::SeekFrom::Start(rootfs_header_at))
        .await?;
    file.write_all(header("rootfs.tar", size)?.as_bytes())
        .await?;
    file.flush().await?;
    Ok(())
}
