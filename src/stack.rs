//! Stacks: the builder images runtimes are compiled in, and the run images they are tested in.
//!
//! A stack is a folder `recipes/stacks/<name>/` holding a `stack.toml` and, for Dockerfile
//! stacks, a Docker build context. The build image comes from exactly one source:
//!
//! ```toml
//! # A prebuilt image, pulled if absent.
//! image = "heroku/heroku:24-build"
//! run = { image = "heroku/heroku:24" }
//! ```
//!
//! ```toml
//! # A Dockerfile in the stack folder; the context is the stack folder only.
//! dockerfile = "Dockerfile"
//! ```
//!
//! ```toml
//! # A Debian root filesystem made on the host with mmdebstrap (or debootstrap) and imported.
//! [bootstrap]
//! suite = "bookworm"
//! variant = "minbase"
//! packages = ["gcc", "make", "libc6-dev"]
//!
//! # Optional: the image artifacts are tested in (no compilers). Defaults to the build image.
//! [run.bootstrap]
//! suite = "bookworm"
//! variant = "minbase"
//! ```
//!
//! Images we make are tagged `packager-stack-<name>:build-<hash12>` / `run-<hash12>`, where the
//! hash covers the parsed stack definition (and the context files of Dockerfile stacks), and are
//! labelled `packager.stack=<name>`, `packager.stack.hash=<hash>`, `packager.stack.role`. An
//! unchanged stack is never rebuilt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::docker::{BuildOptions, Docker, DockerError, ImportOptions};

/// The file every stack folder holds.
pub const MANIFEST: &str = "stack.toml";

/// Overrides the Debian mirror of every `[bootstrap]` section (which otherwise uses the
/// `mirror` key or, when absent, the bootstrap tool's default).
pub const MIRROR_ENV: &str = "PACKAGER_DEBIAN_MIRROR";

/// Label holding the stack name.
pub const STACK_LABEL: &str = "packager.stack";
/// Label holding the full stack hash.
pub const HASH_LABEL: &str = "packager.stack.hash";
/// Label holding the image role (`build` or `run`).
pub const ROLE_LABEL: &str = "packager.stack.role";

/// Bumped whenever the way we make images changes, so old images are not reused.
const HASH_SALT: &str = "packager-stack-v1";

/// `SOURCE_DATE_EPOCH` for bootstraps when the stack doesn't set one (2024-01-01T00:00:00Z).
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_704_067_200;

/// Lines of bootstrap output kept for error messages.
const TAIL_LINES: usize = 30;

/// PATH set in bootstrapped images.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Progress lines go here (the CLI decides whether and how to show them).
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Everything that can go wrong with stacks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// A file or folder could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stacks folder does not exist.
    #[error("no stacks folder at {}", dir.display())]
    NoStacksDir {
        /// The folder we looked for.
        dir: PathBuf,
    },
    /// `stack.toml` is not valid TOML or doesn't match the schema.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// `stack.toml` parses but makes no sense.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No stack by that name.
    #[error("unknown stack `{name}` (known stacks: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownStack {
        /// The name asked for.
        name: String,
        /// The stacks that exist.
        known: Vec<String>,
    },
    /// The bootstrap tool (any, or the one the stack asks for) is not installed.
    #[error("stack `{stack}` needs {} on the host, and it was not found", match tool {
        Some(tool) => tool.name(),
        None => "mmdebstrap or debootstrap",
    })]
    NoBootstrapTool {
        /// The stack.
        stack: String,
        /// The tool the stack asks for, if any.
        tool: Option<BootstrapTool>,
    },
    /// The bootstrap tool could not be started.
    #[error("cannot run {tool} for stack `{stack}`")]
    Spawn {
        /// The stack.
        stack: String,
        /// The tool.
        tool: String,
        /// The error of starting it (typically: not installed).
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap tool failed.
    #[error("{tool} failed for stack `{stack}` ({status})\n{}", tail.join("\n"))]
    Bootstrap {
        /// The stack.
        stack: String,
        /// The tool.
        tool: String,
        /// Its exit status.
        status: String,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The engine failed while making or fetching a stack image.
    #[error("cannot prepare the {role} image of stack `{stack}`")]
    Docker {
        /// The stack.
        stack: String,
        /// `build` or `run`.
        role: Role,
        /// The engine error.
        #[source]
        source: Box<DockerError>,
    },
}

impl StackError {
    /// Something the user can do about this error, if there is anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            StackError::UnknownStack { known, .. } if !known.is_empty() => Some(format!(
                "use one of: {}; or add recipes/stacks/<name>/stack.toml",
                known.join(", ")
            )),
            StackError::UnknownStack { .. } | StackError::NoStacksDir { .. } => {
                Some("add a stack as recipes/stacks/<name>/stack.toml".to_owned())
            }
            StackError::Invalid { .. } => Some(
                "a stack needs exactly one of `image = \"…\"`, `dockerfile = \"…\"` or a \
                 [bootstrap] section"
                    .to_owned(),
            ),
            StackError::NoBootstrapTool { tool, .. } => Some(format!(
                "install it: `apt-get install {}` (Debian/Ubuntu)",
                tool.map_or("mmdebstrap", BootstrapTool::name)
            )),
            StackError::Bootstrap { .. } | StackError::Spawn { .. } => Some(format!(
                "bootstrapping needs root (or unprivileged user namespaces for mmdebstrap) and a \
                 reachable Debian mirror; set {MIRROR_ENV} to use another mirror"
            )),
            StackError::Docker { source, .. } => source.hint(),
            _ => None,
        }
    }
}

/// Which of a stack's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The image runtimes are compiled in.
    Build,
    /// The image artifacts are tested in.
    Run,
}

impl Role {
    /// `build` or `run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Build => "build",
            Role::Run => "run",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a Debian root filesystem is bootstrapped (`[bootstrap]` / `[run.bootstrap]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// mmdebstrap/debootstrap variant, e.g. `minbase`, `apt`, `buildd`. Default `minbase`.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Packages to install on top of the variant.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Archive components. Default `["main"]`.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Mirror URL. Default: none, i.e. the tool's default; [`MIRROR_ENV`] overrides either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// `SOURCE_DATE_EPOCH` for the bootstrap. Default [`DEFAULT_SOURCE_DATE_EPOCH`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
    /// Force a tool: `"mmdebstrap"` or `"debootstrap"`. Default: mmdebstrap if installed,
    /// else debootstrap (which needs root and tars the result with GNU tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<BootstrapTool>,
}

fn default_variant() -> String {
    "minbase".to_owned()
}

fn default_components() -> Vec<String> {
    vec!["main".to_owned()]
}

/// The `[run]` table: where the run image comes from (same sources as the build image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    /// A prebuilt image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Dockerfile in the stack folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A Debian bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
}

/// `stack.toml`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackManifest {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A prebuilt build image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Dockerfile in the stack folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A Debian bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// The run image; absent means "test in the build image".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunManifest>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A prebuilt image, pulled if absent.
    Prebuilt {
        /// The reference.
        image: String,
    },
    /// Built from a Dockerfile; the context is the stack folder.
    Dockerfile {
        /// Path of the Dockerfile relative to the stack folder.
        path: String,
    },
    /// A Debian bootstrap, imported.
    Bootstrap(Bootstrap),
}

impl ImageSource {
    fn from_parts(
        image: &Option<String>,
        dockerfile: &Option<String>,
        bootstrap: &Option<Bootstrap>,
        manifest: &Path,
        table: &str,
    ) -> Result<Self, StackError> {
        let invalid = |reason: String| StackError::Invalid {
            path: manifest.to_owned(),
            reason,
        };
        match (image, dockerfile, bootstrap) {
            (Some(image), None, None) => {
                if image.trim().is_empty() {
                    return Err(invalid(format!("{table}`image` is empty")));
                }
                Ok(ImageSource::Prebuilt {
                    image: image.clone(),
                })
            }
            (None, Some(path), None) => {
                let p = Path::new(path);
                if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(invalid(format!(
                        "{table}`dockerfile = \"{path}\"` must be a relative path inside the \
                         stack folder"
                    )));
                }
                Ok(ImageSource::Dockerfile { path: path.clone() })
            }
            (None, None, Some(bootstrap)) => {
                if bootstrap.suite.trim().is_empty() {
                    return Err(invalid(format!("{table}[bootstrap] `suite` is empty")));
                }
                if bootstrap.components.is_empty() {
                    return Err(invalid(format!("{table}[bootstrap] `components` is empty")));
                }
                if let Some(bad) = bootstrap
                    .packages
                    .iter()
                    .find(|p| p.is_empty() || p.contains([',', ' ', '\t']))
                {
                    return Err(invalid(format!(
                        "{table}[bootstrap] package name `{bad}` is not a single package"
                    )));
                }
                Ok(ImageSource::Bootstrap(bootstrap.clone()))
            }
            (None, None, None) => Err(invalid(format!(
                "{table}no image source: set `image`, `dockerfile` or [bootstrap]"
            ))),
            _ => Err(invalid(format!(
                "{table}more than one image source: set only one of `image`, `dockerfile` or \
                 [bootstrap]"
            ))),
        }
    }
}

/// The image a stack role ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredImage {
    /// The reference to create containers from.
    pub reference: String,
    /// The image id.
    pub id: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether we made it now or it was there.
    pub outcome: Outcome,
}

/// What ensuring an image did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The image was already there.
    Reused,
    /// We built or bootstrapped it now.
    Built,
    /// We pulled it now.
    Pulled,
}

/// A loaded, validated stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The stack name (its folder name).
    pub name: String,
    /// The stack folder.
    pub dir: PathBuf,
    /// The manifest as written.
    pub manifest: StackManifest,
    /// Where the build image comes from.
    pub build: ImageSource,
    /// Where the run image comes from; `None`: the build image is used.
    pub run: Option<ImageSource>,
    /// Hex SHA-256 of the stack definition.
    pub hash: String,
}

/// Loads every stack in `<recipes_dir>/stacks/*/`, sorted by name.
pub fn load_all(recipes_dir: &Path) -> Result<Vec<Stack>, StackError> {
    stack_names(recipes_dir)?
        .iter()
        .map(|name| Stack::load(&recipes_dir.join("stacks").join(name)))
        .collect()
}

/// Loads the stack `<recipes_dir>/stacks/<name>/`; an unknown name lists the known ones.
pub fn load(recipes_dir: &Path, name: &str) -> Result<Stack, StackError> {
    let dir = recipes_dir.join("stacks").join(name);
    if valid_name(name) && dir.join(MANIFEST).is_file() {
        return Stack::load(&dir);
    }
    Err(StackError::UnknownStack {
        name: name.to_owned(),
        known: stack_names(recipes_dir)?,
    })
}

/// Names of the folders in `<recipes_dir>/stacks/` that hold a `stack.toml`, sorted.
pub fn stack_names(recipes_dir: &Path) -> Result<Vec<String>, StackError> {
    let dir = recipes_dir.join("stacks");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StackError::NoStacksDir { dir });
        }
        Err(source) => return Err(StackError::Read { path: dir, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StackError::Read {
            path: dir.clone(),
            source,
        })?;
        if entry.path().join(MANIFEST).is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 64
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> StackError + '_ {
    move |source| StackError::Read {
        path: path.to_owned(),
        source,
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a manifest's text; `path` is only used in errors.
pub fn parse_manifest(text: &str, path: &Path) -> Result<StackManifest, StackError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((1, 1), |span| line_col(text, span.start));
        StackError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })
}

impl Stack {
    /// Loads and validates the stack in `dir` (which holds `stack.toml`); the stack's name is
    /// the folder name.
    pub fn load(dir: &Path) -> Result<Stack, StackError> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(read_error(&manifest_path))?;
        let manifest = parse_manifest(&text, &manifest_path)?;
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !valid_name(&name) {
            return Err(StackError::Invalid {
                path: manifest_path,
                reason: format!(
                    "the stack folder name `{name}` must be lowercase letters, digits, `.`, `_` \
                     and `-` (it becomes part of an image name)"
                ),
            });
        }
        let build = ImageSource::from_parts(
            &manifest.image,
            &manifest.dockerfile,
            &manifest.bootstrap,
            &manifest_path,
            "",
        )?;
        let run = manifest
            .run
            .as_ref()
            .map(|run| {
                ImageSource::from_parts(
                    &run.image,
                    &run.dockerfile,
                    &run.bootstrap,
                    &manifest_path,
                    "[run] ",
                )
            })
            .transpose()?;
        for source in std::iter::once(&build).chain(run.as_ref()) {
            if let ImageSource::Dockerfile { path } = source
                && !dir.join(path).is_file()
            {
                return Err(StackError::Invalid {
                    path: manifest_path.clone(),
                    reason: format!("`dockerfile = \"{path}\"`: no such file in the stack folder"),
                });
            }
        }
        let uses_context = std::iter::once(&build)
            .chain(run.as_ref())
            .any(|s| matches!(s, ImageSource::Dockerfile { .. }));
        let hash = stack_hash(&manifest, uses_context.then_some(dir))?;
        Ok(Stack {
            name,
            dir: dir.to_owned(),
            manifest,
            build,
            run,
            hash,
        })
    }

    /// The manifest's path.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The first 12 hex digits of [`Stack::hash`].
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }

    /// The image reference for a role: the prebuilt reference, or the tag we make,
    /// `packager-stack-<name>:<role>-<hash12>`. A stack without a run image uses its build
    /// image for [`Role::Run`].
    pub fn image_reference(&self, role: Role) -> String {
        let (role, source) = self.source(role);
        match source {
            ImageSource::Prebuilt { image } => image.clone(),
            _ => format!("{}:{}", self.repository(), self.tag(role)),
        }
    }

    /// The repository our images of this stack use: `packager-stack-<name>`.
    pub fn repository(&self) -> String {
        format!("packager-stack-{}", self.name)
    }

    fn tag(&self, role: Role) -> String {
        format!("{role}-{}", self.short_hash())
    }

    /// The role and source that actually provide `role` (run falls back to build).
    fn source(&self, role: Role) -> (Role, &ImageSource) {
        match (role, &self.run) {
            (Role::Run, Some(run)) => (Role::Run, run),
            _ => (Role::Build, &self.build),
        }
    }

    fn labels(&self, role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([
            (STACK_LABEL.to_owned(), self.name.clone()),
            (HASH_LABEL.to_owned(), self.hash.clone()),
            (ROLE_LABEL.to_owned(), role.as_str().to_owned()),
        ])
    }

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
        if let Some(image) = docker
            .inspect_image(&reference)
            .await
            .map_err(docker_error)?
        {
            let ours = !matches!(source, ImageSource::Prebuilt { .. });
            if !ours || image.labels.get(HASH_LABEL) == Some(&self.hash) {
                progress(&format!(
                    "stack {}: reusing {role} image {reference}",
                    self.name
                ));
                return Ok(EnsuredImage {
                    reference,
                    id: image.id,
                    size: image.size,
                    outcome: Outcome::Reused,
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
                    .pull_image(image, progress)
                    .await
                    .map_err(docker_error)?;
                (info, Outcome::Pulled)
            }
            ImageSource::Dockerfile { path } => {
                progress(&format!(
                    "stack {}: building {role} image {reference} from {path}",
                    self.name
                ));
                let context = context_tar(&self.dir)?;
                let options = BuildOptions {
                    tag: reference.clone(),
                    dockerfile: path.clone(),
                    labels: self.labels(role),
                    build_args: BTreeMap::new(),
                    // Stack Dockerfiles typically install packages.
                    network: true,
                };
                let stream =
                    futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(context))]);
                let info = docker
                    .build_image(stream, &options, progress)
                    .await
                    .map_err(docker_error)?;
                (info, Outcome::Built)
            }
            ImageSource::Bootstrap(bootstrap) => {
                let info = self
                    .bootstrap_image(docker, role, bootstrap, progress)
                    .await?;
                (info, Outcome::Built)
            }
        };
        Ok(EnsuredImage {
            reference,
            id: image.id,
            size: image.size,
            outcome,
        })
    }

    async fn bootstrap_image(
        &self,
        docker: &Docker,
        role: Role,
        bootstrap: &Bootstrap,
        progress: Progress<'_>,
    ) -> Result<crate::docker::ImageInfo, StackError> {
        let tool =
            BootstrapTool::find(bootstrap.tool).ok_or_else(|| StackError::NoBootstrapTool {
                stack: self.name.clone(),
                tool: bootstrap.tool,
            })?;
        let mirror = std::env::var(MIRROR_ENV)
            .ok()
            .filter(|m| !m.is_empty())
            .or_else(|| bootstrap.mirror.clone());
        let epoch = bootstrap
            .source_date_epoch
            .unwrap_or(DEFAULT_SOURCE_DATE_EPOCH);
        let reference = self.image_reference(role);
        progress(&format!(
            "stack {}: bootstrapping {role} image {reference} with {} ({} {}, {} extra packages)",
            self.name,
            tool.name(),
            bootstrap.suite,
            bootstrap.variant,
            bootstrap.packages.len()
        ));

        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let producer = RootfsProducer::start(
            tool,
            bootstrap,
            mirror.as_deref(),
            epoch,
            &self.name,
            lines_tx.clone(),
        )
        .await?;
        let exit = producer.exit.clone();

        let mut changes = vec![
            format!("ENV PATH={IMAGE_PATH}"),
            "ENV LANG=C.UTF-8".to_owned(),
            r#"CMD ["/bin/bash"]"#.to_owned(),
        ];
        changes.extend(
            self.labels(role)
                .iter()
                .map(|(k, v)| format!("LABEL {k}={v}")),
        );
        let options = ImportOptions {
            repo: self.repository(),
            tag: self.tag(role),
            changes,
            message: Some(format!(
                "packager stack {} ({role}), {} {}",
                self.name, bootstrap.suite, bootstrap.variant
            )),
        };
        let import_tx = lines_tx.clone();
        drop(lines_tx);
        let mut on_import = move |line: &str| {
            let _ = import_tx.send(format!("import: {line}"));
        };
        let import = docker.import_rootfs(producer.stream, &options, &mut on_import);
        tokio::pin!(import);

        let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
        let mut record = |line: String, progress: &mut (dyn FnMut(&str) + Send)| {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            progress(&line);
            tail.push_back(line);
        };
        let result = loop {
            tokio::select! {
                result = &mut import => break result,
                Some(line) = lines_rx.recv() => record(line, progress),
            }
        };
        // The stderr reader may still hold a few lines.
        if let Some(stderr_task) = producer.stderr_task {
            let _ = stderr_task.await;
        }
        while let Ok(line) = lines_rx.try_recv() {
            record(line, progress);
        }
        let status = *exit.lock().unwrap_or_else(|e| e.into_inner());
        match (result, status) {
            (_, Some(status)) if !status.success() => Err(StackError::Bootstrap {
                stack: self.name.clone(),
                tool: tool.name().to_owned(),
                status: status.to_string(),
                tail: tail.into(),
            }),
            (Err(source), _) => Err(StackError::Docker {
                stack: self.name.clone(),
                role,
                source: Box::new(source),
            }),
            (Ok(info), _) => Ok(info),
        }
    }

    /// Removes this stack's images whose hash is not the current one (stale builds) and
    /// returns their ids.
    pub async fn remove_stale_images(&self, docker: &Docker) -> Result<Vec<String>, StackError> {
        let docker_error = |source| StackError::Docker {
            stack: self.name.clone(),
            role: Role::Build,
            source: Box::new(source),
        };
        let images = docker
            .list_images(&[(STACK_LABEL, Some(&self.name))])
            .await
            .map_err(docker_error)?;
        let mut removed = Vec::new();
        for image in images {
            if image.labels.get(HASH_LABEL) != Some(&self.hash) {
                docker
                    .remove_image(&image.id, true)
                    .await
                    .map_err(docker_error)?;
                removed.push(image.id);
            }
        }
        Ok(removed)
    }
}

/// The host tool that makes Debian root filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapTool {
    /// mmdebstrap: streams a tar, works unprivileged with user namespaces. Preferred.
    Mmdebstrap,
    /// debootstrap into a temporary folder (root only), then GNU tar.
    Debootstrap,
}

impl BootstrapTool {
    /// The program name.
    pub fn name(self) -> &'static str {
        match self {
            BootstrapTool::Mmdebstrap => "mmdebstrap",
            BootstrapTool::Debootstrap => "debootstrap",
        }
    }

    /// `wanted` if installed, else mmdebstrap if installed, else debootstrap if installed.
    fn find(wanted: Option<BootstrapTool>) -> Option<BootstrapTool> {
        match wanted {
            Some(tool) => find_in_path(tool.name()).map(|_| tool),
            None => [BootstrapTool::Mmdebstrap, BootstrapTool::Debootstrap]
                .into_iter()
                .find(|tool| find_in_path(tool.name()).is_some()),
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// mmdebstrap arguments writing a tar of the root filesystem to stdout.
fn mmdebstrap_args(bootstrap: &Bootstrap, mirror: Option<&str>) -> Vec<String> {
    let mut args = vec![
        format!("--variant={}", bootstrap.variant),
        format!("--components={}", bootstrap.components.join(",")),
        "--format=tar".to_owned(),
        // Small images: no translations, no docs/man/locales (copyright files are kept).
        "--aptopt=Acquire::Languages \"none\"".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/man/*".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/info/*".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".to_owned(),
        "--dpkgopt=path-include=/usr/share/locale/locale.alias".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/doc/*".to_owned(),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright".to_owned(),
        // The engine provides these; the host's copies would make the output host-dependent.
        r#"--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname""#.to_owned(),
    ];
    if !bootstrap.packages.is_empty() {
        args.push(format!("--include={}", bootstrap.packages.join(",")));
    }
    args.push("--".to_owned());
    args.push(bootstrap.suite.clone());
    args.push("-".to_owned());
    args.extend(mirror.map(str::to_owned));
    args
}

/// debootstrap arguments bootstrapping into `target`.
fn debootstrap_args(bootstrap: &Bootstrap, mirror: Option<&str>, target: &Path) -> Vec<String> {
    let mut args = vec![
        format!("--variant={}", bootstrap.variant),
        format!("--components={}", bootstrap.components.join(",")),
    ];
    if !bootstrap.packages.is_empty() {
        args.push(format!("--include={}", bootstrap.packages.join(",")));
    }
    args.push(bootstrap.suite.clone());
    args.push(target.to_string_lossy().into_owned());
    args.extend(mirror.map(str::to_owned));
    args
}

/// A running bootstrap whose stdout is a tar of the root filesystem.
struct RootfsProducer {
    stream: std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    /// Set when the tar writer exits.
    exit: Arc<Mutex<Option<ExitStatus>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl RootfsProducer {
    async fn start(
        tool: BootstrapTool,
        bootstrap: &Bootstrap,
        mirror: Option<&str>,
        epoch: u64,
        stack: &str,
        lines: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<RootfsProducer, StackError> {
        let spawn_error = |tool: &str| {
            let tool = tool.to_owned();
            move |source| StackError::Spawn {
                stack: stack.to_owned(),
                tool,
                source,
            }
        };
        let exit = Arc::new(Mutex::new(None));
        let (mut command, keep_dir) = match tool {
            BootstrapTool::Mmdebstrap => {
                let mut command = tokio::process::Command::new("mmdebstrap");
                command.args(mmdebstrap_args(bootstrap, mirror));
                (command, None)
            }
            BootstrapTool::Debootstrap => {
                // debootstrap writes a directory; bootstrap there, clean it, then tar it.
                let dir = tempfile::Builder::new()
                    .prefix("packager-rootfs-")
                    .tempdir()
                    .map_err(spawn_error("debootstrap"))?;
                let mut child = tokio::process::Command::new("debootstrap")
                    .args(debootstrap_args(bootstrap, mirror, dir.path()))
                    .env("SOURCE_DATE_EPOCH", epoch.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(spawn_error("debootstrap"))?;
                let out = forward_lines(child.stdout.take(), lines.clone());
                let err = forward_lines(child.stderr.take(), lines.clone());
                let status = child.wait().await.map_err(spawn_error("debootstrap"))?;
                let _ = tokio::join!(out, err);
                if !status.success() {
                    *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    return Ok(RootfsProducer {
                        stream: Box::pin(futures_util::stream::once(async move {
                            Err(std::io::Error::other(format!(
                                "debootstrap failed ({status})"
                            )))
                        })),
                        exit,
                        stderr_task: None,
                    });
                }
                for junk in ["var/lib/apt/lists", "var/cache/apt/archives", "debootstrap"] {
                    let path = dir.path().join(junk);
                    if path.is_dir() {
                        let _ = std::fs::remove_dir_all(&path);
                    }
                }
                let _ = std::fs::create_dir_all(dir.path().join("var/lib/apt/lists/partial"));
                let mut command = tokio::process::Command::new("tar");
                command.args([
                    "--numeric-owner",
                    "--sort=name",
                    &format!("--mtime=@{epoch}"),
                    "--clamp-mtime",
                    "--xattrs",
                    "-C",
                ]);
                command.arg(dir.path()).args(["-c", "."]);
                (command, Some(dir))
            }
        };
        let tar_tool = if keep_dir.is_some() {
            "tar"
        } else {
            tool.name()
        };
        let mut child = command
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error(tar_tool))?;
        let stderr_task = tokio::spawn(forward_lines(child.stderr.take(), lines));
        let stdout = child.stdout.take().expect("stdout is piped");
        let state = (stdout, Some(child), exit.clone(), keep_dir);
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let (stdout, child, exit, _dir) = &mut state;
            let child_ref = child.as_mut()?;
            let mut buf = vec![0u8; 256 * 1024];
            match stdout.read(&mut buf).await {
                Ok(0) => {
                    let status = child_ref.wait().await;
                    *child = None;
                    match status {
                        Ok(status) => {
                            *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                            if status.success() {
                                None
                            } else {
                                Some((
                                    Err(std::io::Error::other(format!(
                                        "the root filesystem writer failed ({status})"
                                    ))),
                                    state,
                                ))
                            }
                        }
                        Err(e) => Some((Err(e), state)),
                    }
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), state))
                }
                Err(e) => {
                    *child = None;
                    Some((Err(e), state))
                }
            }
        });
        Ok(RootfsProducer {
            stream: Box::pin(stream),
            exit,
            stderr_task: Some(stderr_task),
        })
    }
}

async fn forward_lines<R>(reader: Option<R>, lines: tokio::sync::mpsc::UnboundedSender<String>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let Some(reader) = reader else { return };
    let mut reader = BufReader::new(reader).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        let _ = lines.send(line);
    }
}

/// Relative paths (with `/`) of every file, symlink and folder under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, StackError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(read_error(&current))?;
        for entry in entries {
            let entry = entry.map_err(read_error(&current))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .expect("walked paths are under dir")
                .to_string_lossy()
                .replace('\\', "/");
            let file_type = entry.file_type().map_err(read_error(&path))?;
            if file_type.is_dir() {
                stack.push(path.clone());
            }
            out.push((rel, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A deterministic tar of the stack folder (the Docker build context).
fn context_tar(dir: &Path) -> Result<Vec<u8>, StackError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for (rel, path) in walk(dir)? {
        builder
            .append_path_with_name(&path, &rel)
            .map_err(read_error(&path))?;
    }
    builder.into_inner().map_err(read_error(dir))
}

/// Hash of the parsed manifest (so comments and formatting don't matter) and, for Dockerfile
/// stacks, of every other file in the folder.
fn stack_hash(manifest: &StackManifest, context: Option<&Path>) -> Result<String, StackError> {
    let mut hasher = Sha256::new();
    hasher.update(HASH_SALT.as_bytes());
    hasher.update([0]);
    let canonical = toml::to_string(manifest).expect("a parsed manifest serializes");
    hasher.update((canonical.len() as u64).to_le_bytes());
    hasher.update(canonical.as_bytes());
    if let Some(dir) = context {
        for (rel, path) in walk(dir)? {
            if rel == MANIFEST {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(read_error(&path))?;
            let content = if meta.is_file() {
                std::fs::read(&path).map_err(read_error(&path))?
            } else if meta.is_symlink() {
                let target = std::fs::read_link(&path).map_err(read_error(&path))?;
                format!("symlink:{}", target.to_string_lossy()).into_bytes()
            } else {
                b"dir".to_vec()
            };
            hasher.update((rel.len() as u64).to_le_bytes());
            hasher.update(rel.as_bytes());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                hasher.update(meta.permissions().mode().to_le_bytes());
            }
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(&content);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let text = "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\"]\nfrobnicate = 1\n";
        let err = parse_manifest(text, Path::new("x/stack.toml")).unwrap_err();
        let StackError::Parse { line, column, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (4, 1));
        assert!(err.to_string().starts_with("x/stack.toml:4:1: "), "{err}");
        assert!(err.to_string().contains("frobnicate"), "{err}");
    }

    /// The TOML examples in this module's documentation are valid stacks.
    #[test]
    fn doc_examples_parse() {
        let source = include_str!("stack.rs");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in source.lines().filter_map(|l| l.strip_prefix("//!")) {
            let line = line.strip_prefix(' ').unwrap_or(line);
            match (&mut current, line) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), line) => {
                    block.push_str(line);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        assert_eq!(blocks.len(), 3);
        for block in blocks {
            let m = parse_manifest(&block, Path::new("doc")).unwrap();
            let p = Path::new("doc");
            ImageSource::from_parts(&m.image, &m.dockerfile, &m.bootstrap, p, "").unwrap();
            if let Some(run) = &m.run {
                ImageSource::from_parts(&run.image, &run.dockerfile, &run.bootstrap, p, "")
                    .unwrap();
            }
        }
    }

    #[test]
    fn exactly_one_source() {
        let both = StackManifest {
            description: None,
            image: Some("a".into()),
            dockerfile: Some("Dockerfile".into()),
            bootstrap: None,
            run: None,
        };
        let err = ImageSource::from_parts(
            &both.image,
            &both.dockerfile,
            &both.bootstrap,
            Path::new("s/stack.toml"),
            "",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("more than one image source"),
            "{err}"
        );
        let err = ImageSource::from_parts(&None, &None, &None, Path::new("s/stack.toml"), "[run] ")
            .unwrap_err();
        assert!(err.to_string().contains("[run] no image source"), "{err}");
    }

    #[test]
    fn hash_ignores_comments_and_formatting() {
        let a = parse_manifest(
            "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\"]\n",
            Path::new("a"),
        )
        .unwrap();
        let b = parse_manifest(
            "# a comment\n[bootstrap]\nsuite=\"bookworm\"\n  packages = [ \"gcc\" ]  # c\n",
            Path::new("b"),
        )
        .unwrap();
        let c = parse_manifest(
            "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\", \"make\"]\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(stack_hash(&a, None).unwrap(), stack_hash(&b, None).unwrap());
        assert_ne!(stack_hash(&a, None).unwrap(), stack_hash(&c, None).unwrap());
    }

    #[test]
    fn mmdebstrap_arguments() {
        let bootstrap = Bootstrap {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            packages: vec!["gcc".into(), "make".into()],
            components: vec!["main".into()],
            mirror: None,
            source_date_epoch: None,
            tool: None,
        };
        let args = mmdebstrap_args(&bootstrap, None);
        assert!(args.contains(&"--include=gcc,make".to_owned()));
        assert!(args.contains(&"--variant=minbase".to_owned()));
        assert_eq!(&args[args.len() - 3..], ["--", "bookworm", "-"]);
        let args = mmdebstrap_args(&bootstrap, Some("file:///srv/debian"));
        assert_eq!(args.last().unwrap(), "file:///srv/debian");
    }

    #[test]
    fn names() {
        assert!(valid_name("bookworm"));
        assert!(valid_name("heroku-24"));
        assert!(!valid_name("Bookworm"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
