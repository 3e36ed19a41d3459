//! Making sure of a stack's images (reused, pulled, built or bootstrapped), and pruning the
//! images no stack refers to any more.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::load::context_tar;
use super::{HASH_LABEL, ImageSource, Progress, Role, STACK_LABEL, Stack, StackError};
use crate::docker::{Docker, ImageBuildOptions, ImageInfo};

/// The image a stack role ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredImage {
    /// The reference to create containers from.
    pub reference: String,
    /// The engine's image id (`sha256:…`).
    pub id: String,
    /// Its size in bytes, as the engine reports it.
    pub size: u64,
    /// Whether we made it now or it was there.
    pub outcome: ImageOutcome,
}

/// How [`Stack::ensure_image`] made sure of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOutcome {
    /// The image was already there (one of ours only with the current hash).
    Reused,
    /// We built or bootstrapped it now.
    Built,
    /// We pulled it now.
    Pulled,
}

impl Stack {
    /// Makes sure the build image exists: reuses it, pulls it, builds it or bootstraps it.
    pub async fn ensure_build_image(
        &self,
        docker: &Docker,
        progress: Progress<'_>,
    ) -> Result<EnsuredImage, StackError> {
        self.ensure_image(docker, Role::Build, progress).await
    }

    /// Makes sure the run image exists (the build image if the stack has no run image).
    pub async fn ensure_run_image(
        &self,
        docker: &Docker,
        progress: Progress<'_>,
    ) -> Result<EnsuredImage, StackError> {
        self.ensure_image(docker, Role::Run, progress).await
    }

    /// Makes sure the image for `role` exists.
    pub async fn ensure_image(
        &self,
        docker: &Docker,
        role: Role,
        progress: Progress<'_>,
    ) -> Result<EnsuredImage, StackError> {
        let (role, source) = self.source(role);
        let reference = self.image_reference(role);
        let docker_error = |source| StackError::Docker {
            stack: self.name.clone(),
            role,
            source: Box::new(source),
        };
        // Another architecture than the engine's own: say so before making anything.
        let native = docker.engine().await.map_err(docker_error)?.arch;
        if self.arch != native {
            docker
                .check_runs(self.arch)
                .await
                .map_err(|source| StackError::CannotRun {
                    stack: self.name.clone(),
                    arch: self.arch,
                    source: Box::new(source),
                })?;
        }
        if let Some(image) = docker
            .inspect_image(&reference)
            .await
            .map_err(docker_error)?
        {
            let ours = !matches!(source, ImageSource::Prebuilt { .. });
            // An image of another architecture is never used: the engine records what it ran.
            let right_arch = image
                .arch
                .as_deref()
                .and_then(crate::arch::Arch::parse)
                .is_none_or(|a| a == self.arch);
            if right_arch && (!ours || image.labels.get(HASH_LABEL) == Some(&self.hash)) {
                progress(&format!(
                    "stack {}: reusing {role} image {reference}",
                    self.name
                ));
                return Ok(EnsuredImage {
                    reference,
                    id: image.id,
                    size: image.size,
                    outcome: ImageOutcome::Reused,
                });
            }
        }
        let (image, outcome) = match source {
            ImageSource::Prebuilt { image } => {
                progress(&format!(
                    "stack {}: pulling {role} image {image}",
                    self.name
                ));
                let info = docker
                    .pull_image(image, (self.arch != native).then_some(self.arch), progress)
                    .await
                    .map_err(docker_error)?;
                (info, ImageOutcome::Pulled)
            }
            ImageSource::Dockerfile { path } => {
                progress(&format!(
                    "stack {}: building {role} image {reference} from {path}",
                    self.name
                ));
                let context = context_tar(&self.dir)?;
                let options = ImageBuildOptions {
                    tag: reference.clone(),
                    dockerfile: path.clone(),
                    labels: self.labels(role),
                    build_args: BTreeMap::new(),
                    // Stack Dockerfiles typically install packages.
                    network: true,
                    platform: (self.arch != native).then_some(self.arch),
                };
                let stream =
                    futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(context))]);
                let info = docker
                    .build_image(stream, &options, progress)
                    .await
                    .map_err(docker_error)?;
                (info, ImageOutcome::Built)
            }
            ImageSource::Bootstrap(bootstrap) => {
                let info = self
                    .bootstrap_image(docker, role, bootstrap, progress)
                    .await?;
                (info, ImageOutcome::Built)
            }
        };
        Ok(EnsuredImage {
            reference,
            id: image.id,
            size: image.size,
            outcome,
        })
    }
}

/// A stack image [`prune_images`] removed or, in a dry run, would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedImage {
    /// Its first tag (`packager-stack-bookworm:build-0123456789ab`), or its id when it has none.
    pub name: String,
    /// Its size in bytes, as the engine lists it.
    pub size: u64,
}

/// Removes every image labelled [`STACK_LABEL`] whose [`HASH_LABEL`] is the hash of none of
/// `stacks` (images of an older definition of a stack, of a stack that is gone, or without a
/// hash label) and returns them in the engine's listing order. Pass every stack
/// ([`load_all`](super::load_all)): the images of a stack left out are pruned too.
///
/// An image is removed tag by tag (by id when untagged) and never forced, so an image a
/// container still uses is an error and stays; images removed before the error are gone. With
/// `dry_run`, nothing is removed and the list says what would be.
pub async fn prune_images(
    docker: &Docker,
    stacks: &[Stack],
    dry_run: bool,
) -> Result<Vec<PrunedImage>, StackError> {
    let engine = |e| StackError::Prune(Box::new(e));
    let images = docker
        .list_images(&[(STACK_LABEL, None)])
        .await
        .map_err(engine)?;
    let mut pruned = Vec::new();
    for image in unreferenced(images, stacks) {
        if !dry_run {
            let refs = if image.tags.is_empty() {
                std::slice::from_ref(&image.id)
            } else {
                image.tags.as_slice()
            };
            for r in refs {
                docker.remove_image(r, false).await.map_err(engine)?;
            }
        }
        pruned.push(PrunedImage {
            name: image.tags.first().unwrap_or(&image.id).clone(),
            size: image.size,
        });
    }
    Ok(pruned)
}

/// The images whose [`HASH_LABEL`] is the hash of none of `stacks`.
fn unreferenced(images: Vec<ImageInfo>, stacks: &[Stack]) -> impl Iterator<Item = ImageInfo> {
    let wanted: BTreeSet<String> = stacks.iter().map(|s| s.hash.clone()).collect();
    images.into_iter().filter(move |image| {
        let hash = image.labels.get(HASH_LABEL).map_or("", String::as_str);
        !wanted.contains(hash)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::stack::StackManifest;

    fn image(id: &str, hash: Option<&str>) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            tags: Vec::new(),
            labels: hash
                .map(|h| BTreeMap::from([(HASH_LABEL.to_owned(), h.to_owned())]))
                .unwrap_or_default(),
            env: Vec::new(),
            arch: None,
            size: 1,
        }
    }

    fn stack(hash: &str) -> Stack {
        Stack {
            name: "s".into(),
            dir: PathBuf::from("s"),
            manifest: StackManifest {
                description: None,
                image: Some("x".into()),
                dockerfile: None,
                bootstrap: None,
                run: None,
                arches: None,
            },
            build: ImageSource::Prebuilt { image: "x".into() },
            run: None,
            hash: hash.into(),
            arch: crate::arch::Arch::Amd64,
            definition_hash: hash.into(),
        }
    }

    #[test]
    fn images_no_stack_refers_to_are_unreferenced() {
        let images = vec![
            image("current", Some("aaa")),
            image("old", Some("bbb")),
            image("unlabelled", None),
            image("other", Some("ccc")),
        ];
        let stale: Vec<String> = unreferenced(images, &[stack("aaa"), stack("ccc")])
            .map(|i| i.id)
            .collect();
        assert_eq!(stale, ["old", "unlabelled"]);
    }
}
