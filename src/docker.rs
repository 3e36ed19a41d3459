//! The Docker engine, seen through our own small types.
//!
//! This is the only module that talks to the engine (through `bollard`); everything else uses
//! [`Docker`], [`ContainerSpec`], [`ExecSpec`], [`ContainerGuard`] and friends. No `bollard` type
//! appears in this module's public API.
//!
//! Rules this module enforces so callers cannot forget them:
//! - containers get an explicit environment only (the host environment never leaks in) and no
//!   network unless [`ContainerSpec::network`] asks for one;
//! - every container carries the [`MANAGED_LABEL`] label so a later run can remove orphans;
//! - [`Docker::exec`] returns an [`ExecResult`] that is `#[must_use]`; [`ExecResult::check`]
//!   turns a non-zero exit code into an error carrying the output tail.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RenameContainerOptionsBuilder,
    ResizeExecOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

/// Label put on every container this module creates; the value is always `"true"`.
pub const MANAGED_LABEL: &str = "packager.managed";

/// Name prefix of containers kept for debugging ([`ContainerGuard::keep_for_debugging`]);
/// orphan cleanups leave them alone.
pub const KEPT_PREFIX: &str = "packager-kept-";

/// Where we connect when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Per-request timeout (time until the engine answers with headers). Imports and builds can take
/// a long time before the engine answers, so this is generous; pings use [`PING_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long we wait for the engine to answer a ping before calling it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// How many output lines errors keep (build logs, exec output).
const TAIL_LINES: usize = 40;

/// A stream of bytes coming out of the engine (e.g. a tar archive from [`Docker::download`]).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, DockerError>> + Send>>;

/// The output of an attached exec ([`Docker::exec_attached`]): chunks of bytes as they come,
/// tagged with their stream (with a TTY, everything is [`OutputStream::Stdout`]).
pub type ExecOutput =
    Pin<Box<dyn Stream<Item = Result<(OutputStream, Bytes), DockerError>> + Send>>;

/// The stdin of an attached exec. Shutting it down (`AsyncWriteExt::shutdown`) closes the
/// command's stdin (end of file), like `docker exec -i` does when its input ends.
pub type ExecInput = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// An error from the engine or its client library. Its text is the library's message; it is
/// only ever exposed as the `source()` of a [`DockerError`].
#[derive(Debug)]
pub struct EngineError(bollard::errors::Error);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The engine's error messages are already complete sentences; don't add to them.
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<bollard::errors::Error> for EngineError {
    fn from(error: bollard::errors::Error) -> Self {
        Self(error)
    }
}

impl EngineError {
    /// The HTTP status the engine answered with, if the engine answered at all.
    pub fn status(&self) -> Option<u16> {
        match &self.0 {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(*status_code)
            }
            _ => None,
        }
    }

    /// Whether the engine said "not found" (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the connection to the engine itself failed or broke (the daemon restarted or
    /// went away), rather than the engine answering an error: worth running again.
    pub fn is_connection_lost(&self) -> bool {
        use bollard::errors::Error as E;
        matches!(
            &self.0,
            E::IOError { .. }
                | E::HyperResponseError { .. }
                | E::HyperLegacyError { .. }
                | E::HttpClientError { .. }
                | E::RequestTimeoutError
                | E::SocketNotFoundError(_)
        )
    }
}

/// What to say when the engine connection was lost.
const CONNECTION_LOST_HINT: &str = "the connection to the Docker engine was lost (did the daemon restart?); \
run the command again: the next run removes the containers this one left behind";

/// Everything that can go wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// `DOCKER_HOST` (or the given host) cannot be used to build a client.
    #[error("cannot use Docker host `{host}`")]
    Connect {
        /// The host we tried.
        host: String,
        /// The client library's error: a malformed URL, a missing socket, bad TLS files.
        #[source]
        source: EngineError,
    },
    /// The engine did not answer.
    #[error("the Docker engine at `{host}` is unreachable")]
    Unreachable {
        /// The host we tried.
        host: String,
        /// Why, if the client library said; `None` after a timeout.
        #[source]
        source: Option<EngineError>,
    },
    /// The engine reports an architecture we don't build for.
    #[error("the Docker engine runs on unsupported architecture `{arch}`")]
    UnsupportedArch {
        /// What the engine reported.
        arch: String,
    },
    /// A generic engine call failed.
    #[error("Docker failed to {action}")]
    Engine {
        /// What we were doing, e.g. "inspect image `foo`".
        action: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Pulling an image failed.
    #[error("cannot pull image `{image}`")]
    Pull {
        /// The image reference.
        image: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Importing a root filesystem tarball failed.
    #[error("cannot import image `{image}` from a root filesystem tarball")]
    Import {
        /// The tag we were creating.
        image: String,
        /// The engine's answer (or the failure of the tarball producer).
        #[source]
        source: EngineError,
    },
    /// A Dockerfile build failed.
    #[error("building image `{image}` failed: {message}\n{}", tail.join("\n"))]
    Build {
        /// The tag we were building.
        image: String,
        /// The engine's error message.
        message: String,
        /// The last lines of the build log.
        tail: Vec<String>,
    },
    /// An image we just created could not be found afterwards.
    #[error("image `{image}` is missing after it was created")]
    ImageVanished {
        /// The image reference.
        image: String,
    },
    /// Creating a container failed.
    #[error("cannot create a container from image `{image}`")]
    CreateContainer {
        /// The image.
        image: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// A container call (start, exec, upload, download, remove…) failed.
    #[error("Docker failed to {action} in container {container}")]
    Container {
        /// The container id.
        container: String,
        /// What we were doing, e.g. "upload to `/app`".
        action: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// A command run in a container exited non-zero (from [`ExecResult::check`]).
    #[error("`{command}` exited with code {exit_code} in container {container}\n{}", tail.join("\n"))]
    ExecFailed {
        /// The container id.
        container: String,
        /// The command, for display.
        command: String,
        /// Its exit code.
        exit_code: i64,
        /// The last lines of its stdout and stderr, interleaved.
        tail: Vec<String>,
    },
    /// The engine never reported an exit code for an exec.
    #[error("`{command}` in container {container} ended without an exit code")]
    NoExitCode {
        /// The container id.
        container: String,
        /// The command, for display.
        command: String,
    },
}

impl DockerError {
    /// Whether the error is the user's input; an engine that fails or cannot be reached never
    /// is.
    pub fn is_usage(&self) -> bool {
        false
    }

    /// Something the user can do about this error, if there is anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            DockerError::Connect { .. } | DockerError::Unreachable { .. } => Some(
                "is the Docker engine running? Set DOCKER_HOST (e.g. unix:///var/run/docker.sock \
                 or tcp://host:2375) to point at it, and check that you may use its socket \
                 (`ls -l /var/run/docker.sock`, membership of the `docker` group)"
                    .to_owned(),
            ),
            DockerError::UnsupportedArch { .. } => {
                Some("packager builds for amd64 and arm64 engines only".to_owned())
            }
            DockerError::Pull { image, .. } => Some(format!(
                "no image registry may be reachable from the engine; load `{image}` with \
                 `docker load`, or use a stack with a [bootstrap] section, which needs no registry"
            )),
            DockerError::Build { .. } => Some(
                "the Dockerfile build failed; the log tail above shows the failing step".to_owned(),
            ),
            DockerError::ExecFailed { .. } => {
                Some("the output tail above shows why the command failed".to_owned())
            }
            DockerError::Engine { source, .. } | DockerError::Container { source, .. }
                if source.is_connection_lost() =>
            {
                Some(CONNECTION_LOST_HINT.to_owned())
            }
            _ => None,
        }
    }

    fn engine(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        DockerError::Engine {
            action: action.into(),
            source: source.into(),
        }
    }

    fn container(
        container: &str,
        action: impl Into<String>,
        source: bollard::errors::Error,
    ) -> Self {
        DockerError::Container {
            container: container.to_owned(),
            action: action.into(),
            source: source.into(),
        }
    }
}

pub use crate::arch::Arch;

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// API version the engine speaks (we negotiate down to it), e.g. `1.41`.
    pub api_version: String,
    /// The engine's (and so the containers') architecture.
    pub arch: Arch,
    /// The engine's OS, e.g. `linux`.
    pub os: String,
}

/// A local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image id (`sha256:…`).
    pub id: String,
    /// Its tags (`repo:tag`).
    pub tags: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its `ENV` (`KEY=value`), when inspected (empty in listings).
    pub env: Vec<String>,
    /// Its architecture, when inspected (`None` in listings).
    pub arch: Option<String>,
    /// Its size in bytes.
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
pub struct BuildOptions {
    /// The tag to give the image, `repo:tag`.
    pub tag: String,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Labels to put on the image.
    pub labels: BTreeMap<String, String>,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Give `RUN` steps a network (`default`) or not (`none`).
    pub network: bool,
}

/// A bind mount of a host path into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute container path.
    pub container: String,
    /// Mount read-only (the default from [`BindMount::read_only`]).
    pub read_only: bool,
}

impl BindMount {
    /// A read-only bind mount.
    pub fn read_only(host: impl Into<PathBuf>, container: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            container: container.into(),
            read_only: true,
        }
    }
}

/// What container to create; see [`Docker::create_container`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The image reference or id.
    pub image: String,
    /// An optional container name.
    pub name: Option<String>,
    /// Labels; use `packager.*` keys. [`MANAGED_LABEL`] is always added.
    pub labels: BTreeMap<String, String>,
    /// The container's whole environment on top of the image's `ENV` (never the host's).
    pub env: Vec<(String, String)>,
    /// Working directory, created by the engine if missing.
    pub working_dir: Option<String>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Whether the container gets a network. `false` (the default) means network mode `none`.
    pub network: bool,
    /// The container's main process. It must keep running so we can exec into it; the default
    /// is `sleep infinity`.
    pub command: Vec<String>,
    /// Confinement: the user, capabilities, limits and writable places. `None` runs the
    /// container with the engine's defaults (root, Docker's default capabilities, no limits).
    pub sandbox: Option<Sandbox>,
}

/// How a container is confined: every exec through its [`ContainerGuard`] runs as `user`
/// unless it names another; the container has no capabilities but `cap_add` (which a process
/// of a user other than root never holds), `no-new-privileges`, and the limits; with
/// `read_only`, the root filesystem is read-only and only `volumes` (anonymous volumes, removed
/// with the container) and `tmpfs` mounts can be written. The engine extracts uploads as root
/// and keeps the owners the tar stream gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// `uid:gid` of execs that name no user.
    pub user: String,
    /// Capabilities kept (root's execs only): none unless a step must run as root.
    pub cap_add: Vec<String>,
    /// Make the root filesystem read-only.
    pub read_only: bool,
    /// Anonymous volumes: writable directories on the engine's disk, removed with the container.
    pub volumes: Vec<String>,
    /// tmpfs mounts: path and mount options (e.g. `size=1g,mode=1777`).
    pub tmpfs: Vec<(String, String)>,
    /// Resource limits.
    pub limits: Limits,
}

/// Resource limits of a container (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes, swap included (no swap beyond it).
    pub memory: Option<u64>,
    /// CPUs in thousandths (1500 = 1.5 CPUs).
    pub millicpus: Option<u64>,
    /// The most processes and threads at once.
    pub pids: Option<u64>,
}

impl ContainerSpec {
    /// A container of `image` with no env, no mounts, no network, running `sleep infinity`.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            name: None,
            labels: BTreeMap::new(),
            env: Vec::new(),
            working_dir: None,
            mounts: Vec::new(),
            network: false,
            command: vec!["sleep".to_owned(), "infinity".to_owned()],
            sandbox: None,
        }
    }
}

/// A command to run in a running container; see [`Docker::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv.
    pub command: Vec<String>,
    /// Extra environment for this command (on top of the container's).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Run as this user (`uid[:gid]` or a name); `None` means the image's user.
    pub user: Option<String>,
}

impl ExecSpec {
    /// Runs `argv` as is.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            working_dir: None,
            user: None,
        }
    }

    /// Runs `script` with `/bin/sh -euc`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(["/bin/sh".to_owned(), "-euc".to_owned(), script.into()])
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The command for display (the script for shell commands).
    pub fn display(&self) -> String {
        match self.command.as_slice() {
            [sh, flag, script] if sh == "/bin/sh" && flag == "-euc" => script.clone(),
            argv => argv.join(" "),
        }
    }
}

/// Which stream an output line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The outcome of [`Docker::exec`]. Check it: a non-zero exit code is not an `Err` by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an exec's exit code must be checked, e.g. with `.check()`"]
pub struct ExecResult {
    /// The container id.
    pub container: String,
    /// The command, for display.
    pub command: String,
    /// The exit code.
    pub exit_code: i64,
    /// The last lines of output (stdout and stderr interleaved).
    pub tail: Vec<String>,
}

impl ExecResult {
    /// `Ok` when the command exited 0, else [`DockerError::ExecFailed`] with the output tail.
    pub fn check(self) -> Result<(), DockerError> {
        if self.exit_code == 0 {
            Ok(())
        } else {
            Err(DockerError::ExecFailed {
                container: self.container,
                command: self.command,
                exit_code: self.exit_code,
                tail: self.tail,
            })
        }
    }
}

/// A container we know of (from [`Docker::list_containers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Names (without the leading `/`).
    pub names: Vec<String>,
    /// Image it was created from.
    pub image: String,
    /// State, e.g. `running`, `exited`.
    pub state: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A connection to the Docker engine. Cheap to clone.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    host: String,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).finish()
    }
}

fn new_client(
    host: &str,
    version: &bollard::ClientVersion,
) -> Result<bollard::Docker, bollard::errors::Error> {
    let timeout = REQUEST_TIMEOUT.as_secs();
    let client = if host.starts_with("unix://") || host.starts_with('/') {
        bollard::Docker::connect_with_unix(host, timeout, version)?
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        bollard::Docker::connect_with_http(host, timeout, version)?
    } else {
        // Let the library report the scheme it doesn't support.
        bollard::Docker::connect_with_host(host)?
    };
    Ok(client.with_timeout(REQUEST_TIMEOUT))
}

/// Turns `[(k, v)]` into Docker's `k=v` filter values.
fn label_filters(labels: &[(&str, Option<&str>)]) -> HashMap<String, Vec<String>> {
    let values = labels
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => (*k).to_owned(),
        })
        .collect();
    HashMap::from([("label".to_owned(), values)])
}

fn env_list(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Splits a byte stream into lines, per output stream.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        self.partial.extend_from_slice(bytes);
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            emit(line.trim_end_matches('\r'));
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            emit(&line);
        }
    }
}

struct Tail(VecDeque<String>);

impl Tail {
    fn new() -> Self {
        Self(VecDeque::with_capacity(TAIL_LINES))
    }

    fn push(&mut self, line: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_owned());
    }

    fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

impl Docker {
    /// Connects to `DOCKER_HOST` (or the default unix socket), negotiates the API version and
    /// pings the engine.
    pub async fn connect() -> Result<Docker, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self::connect_to(&host).await
    }

    /// Connects to `host` (`unix:///path`, `/path`, `tcp://host:port`), negotiates the API
    /// version and pings the engine.
    pub async fn connect_to(host: &str) -> Result<Docker, DockerError> {
        let client = new_client(host, bollard::API_DEFAULT_VERSION).map_err(|e| match e {
            bollard::errors::Error::SocketNotFoundError(_) => DockerError::Unreachable {
                host: host.to_owned(),
                source: Some(e.into()),
            },
            e => DockerError::Connect {
                host: host.to_owned(),
                source: e.into(),
            },
        })?;
        let unreachable = |source: Option<bollard::errors::Error>| DockerError::Unreachable {
            host: host.to_owned(),
            source: source.map(Into::into),
        };
        let client = tokio::time::timeout(PING_TIMEOUT, client.negotiate_version())
            .await
            .map_err(|_| unreachable(None))?
            .map_err(|e| unreachable(Some(e)))?;
        let docker = Docker {
            client,
            host: host.to_owned(),
        };
        docker.ping().await?;
        Ok(docker)
    }

    /// The host we are connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let unreachable = |source: Option<bollard::errors::Error>| DockerError::Unreachable {
            host: self.host.clone(),
            source: source.map(Into::into),
        };
        tokio::time::timeout(PING_TIMEOUT, self.client.ping())
            .await
            .map_err(|_| unreachable(None))?
            .map_err(|e| unreachable(Some(e)))?;
        Ok(())
    }

    /// The engine's version, API version, architecture and OS.
    pub async fn engine(&self) -> Result<EngineInfo, DockerError> {
        let v = self
            .client
            .version()
            .await
            .map_err(|e| DockerError::engine("query the engine version", e))?;
        let arch_name = v.arch.unwrap_or_default();
        let arch =
            Arch::parse(&arch_name).ok_or(DockerError::UnsupportedArch { arch: arch_name })?;
        Ok(EngineInfo {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            arch,
            os: v.os.unwrap_or_default(),
        })
    }

    /// The memory (bytes) and CPUs the engine's machine has, for the containers' default limits.
    pub async fn capacity(&self) -> Result<(u64, u64), DockerError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| DockerError::engine("query the engine's resources", e))?;
        let memory = info
            .mem_total
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0);
        let cpus = info.ncpu.and_then(|n| u64::try_from(n).ok()).unwrap_or(1);
        Ok((memory, cpus.max(1)))
    }

    // ----- images -------------------------------------------------------------------------------

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
        options: &BuildOptions,
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
        let mut tail = Tail::new();
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

    // ----- containers ---------------------------------------------------------------------------

    /// Creates (but does not start) a container and returns a guard that removes it on drop.
    pub async fn create_container(
        &self,
        spec: &ContainerSpec,
    ) -> Result<ContainerGuard, DockerError> {
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let mut mounts: Vec<Mount> = spec
            .mounts
            .iter()
            .map(|m| Mount {
                source: Some(m.host.to_string_lossy().into_owned()),
                target: Some(m.container.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let mut host_config = HostConfig {
            network_mode: Some(if spec.network { "default" } else { "none" }.to_owned()),
            // A tiny init reaps zombies and makes `sleep infinity` stop promptly.
            init: Some(true),
            ..Default::default()
        };
        if let Some(sandbox) = &spec.sandbox {
            mounts.extend(sandbox.volumes.iter().map(|target| Mount {
                target: Some(target.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }));
            host_config.tmpfs = Some(sandbox.tmpfs.iter().cloned().collect());
            host_config.cap_drop = Some(vec!["ALL".to_owned()]);
            if !sandbox.cap_add.is_empty() {
                host_config.cap_add = Some(sandbox.cap_add.clone());
            }
            host_config.security_opt = Some(vec!["no-new-privileges".to_owned()]);
            host_config.readonly_rootfs = Some(sandbox.read_only);
            let limits = sandbox.limits;
            host_config.pids_limit = limits.pids.map(clamp_i64);
            host_config.memory = limits.memory.map(clamp_i64);
            // No swap beyond the memory limit.
            host_config.memory_swap = limits.memory.map(clamp_i64);
            host_config.nano_cpus = limits
                .millicpus
                .map(|m| clamp_i64(m.saturating_mul(1_000_000)));
        }
        host_config.mounts = Some(mounts);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(env_list(&spec.env)),
            cmd: Some(spec.command.clone()),
            // The image's entrypoint would wrap our command; we want exactly our command.
            entrypoint: Some(Vec::new()),
            labels: Some(labels),
            working_dir: spec.working_dir.clone(),
            network_disabled: Some(!spec.network),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = spec
            .name
            .as_ref()
            .map(|name| CreateContainerOptionsBuilder::default().name(name).build());
        let created = self
            .client
            .create_container(options, body)
            .await
            .map_err(|e| DockerError::CreateContainer {
                image: spec.image.clone(),
                source: e.into(),
            })?;
        Ok(ContainerGuard {
            docker: self.clone(),
            id: created.id,
            armed: true,
            exec_user: spec.sandbox.as_ref().map(|s| s.user.clone()),
        })
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| DockerError::container(id, "start", e))
    }

    /// Creates an exec of `spec` in container `id`, attached to its output (and its input
    /// when `stdin`), with a TTY when `tty`.
    async fn create_exec(
        &self,
        id: &str,
        spec: &ExecSpec,
        stdin: bool,
        tty: bool,
    ) -> Result<String, DockerError> {
        let config = bollard::exec::CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(stdin),
            tty: Some(tty),
            env: Some(env_list(&spec.env)),
            cmd: Some(spec.command.clone()),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            ..Default::default()
        };
        self.client
            .create_exec(id, config)
            .await
            .map(|created| created.id)
            .map_err(|e| DockerError::container(id, format!("create exec `{}`", spec.display()), e))
    }

    /// Runs a command in a running container, calling `output` for every line of its stdout
    /// and stderr, and returns its exit code (check it!).
    pub async fn exec(
        &self,
        id: &str,
        spec: &ExecSpec,
        output: &mut (dyn FnMut(OutputStream, &str) + Send),
    ) -> Result<ExecResult, DockerError> {
        let command = spec.display();
        let exec = self.create_exec(id, spec, false, false).await?;
        let started = self
            .client
            .start_exec(&exec, None)
            .await
            .map_err(|e| DockerError::container(id, format!("start exec `{command}`"), e))?;
        let mut tail = Tail::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut out, ..
        } = started
        {
            let mut stdout = LineSplitter::default();
            let mut stderr = LineSplitter::default();
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(|e| {
                    DockerError::container(id, format!("read output of `{command}`"), e)
                })?;
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.push(&message, |line| {
                            tail.push(line);
                            output(OutputStream::Stderr, line);
                        });
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        stdout.push(&message, |line| {
                            tail.push(line);
                            output(OutputStream::Stdout, line);
                        });
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            stdout.finish(|line| {
                tail.push(line);
                output(OutputStream::Stdout, line);
            });
            stderr.finish(|line| {
                tail.push(line);
                output(OutputStream::Stderr, line);
            });
        }
        let exit_code = self.exec_exit_code(id, &exec, &command).await?;
        Ok(ExecResult {
            container: id.to_owned(),
            command,
            exit_code,
            tail: tail.into_vec(),
        })
    }

    /// Starts a command with its stdin attached and returns its output stream, its input and a
    /// handle to resize its TTY and read its exit code. With `tty`, the command gets a
    /// pseudo-terminal (an interactive shell); without, stdout and stderr stay apart.
    ///
    /// The output stream ends when the command exits; then [`ExecHandle::exit_code`] gives
    /// its exit code.
    pub async fn exec_attached(
        &self,
        id: &str,
        spec: &ExecSpec,
        tty: bool,
    ) -> Result<AttachedExec, DockerError> {
        let command = spec.display();
        let exec = self.create_exec(id, spec, true, tty).await?;
        let options = bollard::exec::StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        let started = self
            .client
            .start_exec(&exec, Some(options))
            .await
            .map_err(|e| DockerError::container(id, format!("start exec `{command}`"), e))?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(DockerError::NoExitCode {
                container: id.to_owned(),
                command,
            });
        };
        let (container, what) = (id.to_owned(), format!("read output of `{command}`"));
        let output = output
            .filter_map(move |chunk| {
                let item = match chunk {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok((OutputStream::Stderr, message)))
                    }
                    Ok(
                        bollard::container::LogOutput::StdOut { message }
                        | bollard::container::LogOutput::Console { message },
                    ) => Some(Ok((OutputStream::Stdout, message))),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(DockerError::container(&container, what.clone(), e))),
                };
                std::future::ready(item)
            })
            .boxed();
        Ok(AttachedExec {
            output,
            input,
            handle: ExecHandle {
                docker: self.clone(),
                container: id.to_owned(),
                exec_id: exec,
                command,
            },
        })
    }

    /// Waits for the engine to record the exit code of an exec whose output has ended.
    async fn exec_exit_code(
        &self,
        id: &str,
        exec_id: &str,
        command: &str,
    ) -> Result<i64, DockerError> {
        // The output stream closes when the process exits, but the engine may record the exit
        // code a moment later.
        for attempt in 0..50 {
            let inspect =
                self.client.inspect_exec(exec_id).await.map_err(|e| {
                    DockerError::container(id, format!("inspect exec `{command}`"), e)
                })?;
            match (inspect.running, inspect.exit_code) {
                (Some(false), Some(exit_code)) => return Ok(exit_code),
                _ => tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await,
            }
        }
        Err(DockerError::NoExitCode {
            container: id.to_owned(),
            command: command.to_owned(),
        })
    }

    /// What the engine knows of a container (by id, unique id prefix or name); `None` if there
    /// is no such container.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        match self.client.inspect_container(id, None).await {
            Ok(c) => {
                let config = c.config.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    names: c
                        .name
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .into_iter()
                        .collect(),
                    image: config.image.unwrap_or_default(),
                    state: c
                        .state
                        .and_then(|s| s.status)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    labels: config.labels.unwrap_or_default().into_iter().collect(),
                }))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DockerError::engine(format!("inspect container `{id}`"), e)),
        }
    }

    /// Renames a container.
    pub async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.client
            .rename_container(id, options)
            .await
            .map_err(|e| DockerError::container(id, format!("rename to `{name}`"), e))
    }

    /// Extracts a tar stream into `path` (an existing directory) in the container.
    pub async fn upload<S>(&self, id: &str, path: &str, tar: S) -> Result<(), DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.client
            .upload_to_container(id, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(|e| DockerError::container(id, format!("upload to `{path}`"), e))
    }

    /// Downloads `path` from the container as a tar stream, consumed incrementally.
    ///
    /// Like `docker cp`, the archive's top-level entry is the last component of `path`.
    pub fn download(&self, id: &str, path: &str) -> ByteStream {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let id_owned = id.to_owned();
        let path_owned = path.to_owned();
        self.client
            .download_from_container(id, Some(options))
            .map_err(move |e| {
                DockerError::container(&id_owned, format!("download `{path_owned}`"), e)
            })
            .boxed()
    }

    /// Removes a container, killing it if it runs, with its anonymous volumes. A container that
    /// is already gone is not an error.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        remove_container_with(&self.client, id).await
    }

    /// Lists containers (running or not) matching all the given labels.
    pub async fn list_containers(
        &self,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Vec<ContainerInfo>, DockerError> {
        let filters = label_filters(labels);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::engine("list containers", e))?;
        Ok(containers
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                names: c
                    .names
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .collect(),
                image: c.image.unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    /// Removes every container matching all the given labels (e.g. left behind by a killed run)
    /// and returns their ids.
    pub async fn remove_orphans(
        &self,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Vec<String>, DockerError> {
        let mut removed = Vec::new();
        for container in self.list_containers(labels).await? {
            self.remove_container(&container.id).await?;
            removed.push(container.id);
        }
        Ok(removed)
    }
}

/// `v` as an engine integer, saturating.
fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn remove_container_with(client: &bollard::Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match client.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = EngineError(e);
            // 404: already gone. 409: removal already in progress (e.g. by a guard).
            if e.is_not_found() || e.status() == Some(409) {
                Ok(())
            } else {
                Err(DockerError::Container {
                    container: id.to_owned(),
                    action: "remove the container".to_owned(),
                    source: e,
                })
            }
        }
    }
}

/// Owns a container and removes it when dropped.
///
/// The normal path is the explicit, async [`ContainerGuard::remove`], which reports errors.
/// If the guard is dropped instead — an early `?` return, a panic, or the owning future being
/// cancelled (e.g. a `tokio::select!` on Ctrl-C dropping the build future) — `Drop` removes the
/// container *synchronously*: it starts a helper thread with its own single-threaded Tokio
/// runtime and a fresh connection to the engine, and waits (up to 30 s) for the removal. A
/// fresh connection and runtime are used because the caller's runtime may be shutting down or
/// be the one thread this `Drop` is blocking; blocking briefly is the price for the container
/// really being gone when `Drop` returns. This works inside and outside a Tokio runtime.
///
/// Nothing runs if the process is killed outright (`SIGKILL`, `std::process::exit`); for that,
/// every container carries the [`MANAGED_LABEL`] label and [`Docker::remove_orphans`] cleans up.
#[derive(Debug)]
#[must_use = "dropping the guard removes the container"]
pub struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
    /// The user of execs that name none (the sandbox's).
    exec_user: Option<String>,
}

impl ContainerGuard {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection this container lives on.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts the container.
    pub async fn start(&self) -> Result<(), DockerError> {
        self.docker.start_container(&self.id).await
    }

    /// Runs a command in the container; see [`Docker::exec`].
    pub async fn exec(
        &self,
        spec: &ExecSpec,
        output: &mut (dyn FnMut(OutputStream, &str) + Send),
    ) -> Result<ExecResult, DockerError> {
        self.docker
            .exec(&self.id, &self.as_user(spec), output)
            .await
    }

    /// Extracts a tar stream into `path` in the container; see [`Docker::upload`].
    pub async fn upload<S>(&self, path: &str, tar: S) -> Result<(), DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        self.docker.upload(&self.id, path, tar).await
    }

    /// `spec` with the sandbox's user when it names none.
    fn as_user<'s>(&self, spec: &'s ExecSpec) -> std::borrow::Cow<'s, ExecSpec> {
        match (&spec.user, &self.exec_user) {
            (None, Some(user)) => {
                let mut spec = spec.clone();
                spec.user = Some(user.clone());
                std::borrow::Cow::Owned(spec)
            }
            _ => std::borrow::Cow::Borrowed(spec),
        }
    }

    /// Downloads `path` as a tar stream; see [`Docker::download`].
    pub fn download(&self, path: &str) -> ByteStream {
        self.docker.download(&self.id, path)
    }

    /// Removes the container now, reporting errors (the guard is disarmed either way).
    pub async fn remove(mut self) -> Result<(), DockerError> {
        self.armed = false;
        self.docker.remove_container(&self.id).await
    }

    /// Starts a command with its stdin attached; see [`Docker::exec_attached`].
    pub async fn exec_attached(
        &self,
        spec: &ExecSpec,
        tty: bool,
    ) -> Result<AttachedExec, DockerError> {
        self.docker
            .exec_attached(&self.id, &self.as_user(spec), tty)
            .await
    }

    /// Gives up ownership: the container is kept, and its id returned.
    pub fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.id)
    }

    /// Gives up ownership and renames the container `packager-kept-<short id>` ([`KEPT_PREFIX`])
    /// so that orphan cleanups of later runs leave it alone; returns its id. If the rename
    /// fails, the container is removed (the guard stays armed) and the error returned.
    pub async fn keep_for_debugging(self) -> Result<String, DockerError> {
        let name = format!("{KEPT_PREFIX}{}", &self.id[..self.id.len().min(12)]);
        self.docker.rename_container(&self.id, &name).await?;
        Ok(self.keep())
    }
}

/// A command started by [`Docker::exec_attached`]: its output, its input and a handle.
pub struct AttachedExec {
    /// What the command writes, as it comes; ends when the command exits.
    pub output: ExecOutput,
    /// The command's stdin.
    pub input: ExecInput,
    /// Resizes the command's TTY and reads its exit code.
    pub handle: ExecHandle,
}

impl std::fmt::Debug for AttachedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedExec")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// A handle on an attached exec: resize its TTY, read its exit code. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecHandle {
    docker: Docker,
    container: String,
    exec_id: String,
    command: String,
}

impl ExecHandle {
    /// Sets the size of the command's TTY (a `SIGWINCH` for the command). The engine refuses
    /// to resize an exec that has not started yet, so a refusal is retried a few times.
    pub async fn resize(&self, columns: u16, rows: u16) -> Result<(), DockerError> {
        let options = ResizeExecOptionsBuilder::new()
            .h(i32::from(rows))
            .w(i32::from(columns))
            .build();
        let mut attempt = 0;
        loop {
            match self
                .docker
                .client
                .resize_exec(&self.exec_id, options.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                Err(e) => {
                    return Err(DockerError::container(
                        &self.container,
                        format!("resize the terminal of `{}`", self.command),
                        e,
                    ));
                }
            }
        }
    }

    /// The command's exit code, once its output has ended.
    pub async fn exit_code(&self) -> Result<i64, DockerError> {
        self.docker
            .exec_exit_code(&self.container, &self.exec_id, &self.command)
            .await
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let host = self.docker.host.clone();
        let version = self.docker.client.client_version();
        let id = std::mem::take(&mut self.id);
        let remover = std::thread::Builder::new()
            .name("packager-container-cleanup".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| tracing::warn!(container = %id, error = %e, "cannot start cleanup runtime"))
                    .ok()?;
                let client = new_client(&host, &version)
                    .map_err(|e| tracing::warn!(container = %id, error = %e, "cannot reconnect to remove container"))
                    .ok()?;
                let result = runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        remove_container_with(&client, &id),
                    )
                    .await
                });
                match result {
                    Ok(Ok(())) => tracing::debug!(container = %id, "removed container on drop"),
                    Ok(Err(e)) => {
                        tracing::warn!(container = %id, error = %e, "cannot remove container")
                    }
                    Err(_) => tracing::warn!(container = %id, "timed out removing container"),
                }
                Some(())
            });
        match remover {
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(e) => tracing::warn!(error = %e, "cannot spawn container cleanup thread"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(b"one\ntw", |l| lines.push(l.to_owned()));
        splitter.push(b"o\r\nthree", |l| lines.push(l.to_owned()));
        splitter.finish(|l| lines.push(l.to_owned()));
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut tail = Tail::new();
        for i in 0..100 {
            tail.push(&i.to_string());
        }
        let tail = tail.into_vec();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("99"));
    }

    #[test]
    fn exec_display_shows_script() {
        assert_eq!(ExecSpec::shell("make -j2").display(), "make -j2");
        assert_eq!(
            ExecSpec::new(["gcc", "--version"]).display(),
            "gcc --version"
        );
    }

    #[test]
    fn label_filters_format() {
        let filters =
            label_filters(&[("packager.stack", Some("mini")), ("packager.managed", None)]);
        assert_eq!(
            filters["label"],
            [
                "packager.stack=mini".to_owned(),
                "packager.managed".to_owned()
            ]
        );
    }

    #[test]
    fn arch_parses_both_spellings() {
        assert_eq!(Arch::parse("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("arm64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("s390x"), None);
    }
}
