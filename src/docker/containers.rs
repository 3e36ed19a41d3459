//! Containers: what to create ([`ContainerSpec`], with its [`Sandbox`]), creating, starting,
//! inspecting, renaming, listing and removing them, and the [`ContainerGuard`] that owns one and
//! removes it when dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::Stream;

use super::client::{env_list, label_filters, new_client};
use super::{
    AttachedExec, ByteStream, Docker, DockerError, EngineError, ExecResult, ExecSpec, KEPT_PREFIX,
    MANAGED_LABEL, OutputStream,
};

/// A bind mount of a host path into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path; the engine resolves it on its own machine, so it must exist there.
    pub host: PathBuf,
    /// Absolute path inside the container, created by the engine if missing.
    pub container: String,
    /// Mount read-only (the default from [`BindMount::read_only`]).
    pub read_only: bool,
}

impl BindMount {
    /// A read-only bind mount of `host` at `container` (what recipes' mounts are).
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
    /// The image (`repo:tag` or `sha256:…` id); it must be present: nothing is pulled.
    pub image: String,
    /// A container name; `None` lets the engine pick one (names must be unique on the engine).
    pub name: Option<String>,
    /// Labels; use `packager.*` keys. [`MANAGED_LABEL`] is always added.
    pub labels: BTreeMap<String, String>,
    /// The container's whole environment on top of the image's `ENV` (never the host's).
    pub env: Vec<(String, String)>,
    /// Working directory, created by the engine if missing.
    pub working_dir: Option<String>,
    /// The container's host name; `None` lets the engine use the start of its id.
    pub hostname: Option<String>,
    /// Host paths to mount (see [`BindMount`]); the sandbox adds its volumes and tmpfs.
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
            hostname: None,
            mounts: Vec::new(),
            network: false,
            command: vec!["sleep".to_owned(), "infinity".to_owned()],
            sandbox: None,
        }
    }
}

/// A container we know of (from [`Docker::list_containers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id (64 hex digits).
    pub id: String,
    /// Names (without the leading `/` the engine puts there).
    pub names: Vec<String>,
    /// The image it was created from, as it was given (a tag or an id).
    pub image: String,
    /// State, e.g. `running`, `exited`.
    pub state: String,
    /// Its labels, [`MANAGED_LABEL`] and the `packager.*` ones included.
    pub labels: BTreeMap<String, String>,
}

impl Docker {
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
            hostname: spec.hostname.clone(),
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

    /// Starts a created container (its main process, `sleep infinity` by default).
    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| DockerError::container(id, "start", e))
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

    /// The host process id of a running container's main process (`None` when it does not
    /// run): what joins its namespaces, for a process on the engine's own machine.
    pub async fn container_pid(&self, id: &str) -> Result<Option<u32>, DockerError> {
        let c = self
            .client
            .inspect_container(id, None)
            .await
            .map_err(|e| DockerError::container(id, "inspect", e))?;
        Ok(c.state
            .and_then(|s| s.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0))
    }

    /// Renames a container (the engine refuses a name another container has).
    pub async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.client
            .rename_container(id, options)
            .await
            .map_err(|e| DockerError::container(id, format!("rename to `{name}`"), e))
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

/// Removes container `id` through `client` (the guard's `Drop` brings a client of its own);
/// a container already gone, or being removed, is not an error.
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
/// container *synchronously* with [`crate::drop_cleanup::run_blocking`]: a helper thread with
/// its own single-threaded Tokio runtime and a fresh connection to the engine, waited for (up
/// to [`crate::drop_cleanup::TIMEOUT`]). A fresh connection and runtime are used because the
/// caller's runtime may be shutting down or be the one thread this `Drop` is blocking; blocking
/// briefly is the price for the container really being gone when `Drop` returns. This works
/// inside and outside a Tokio runtime.
///
/// Nothing runs if the process is killed outright (`SIGKILL`, `std::process::exit`); for that,
/// every container carries the [`MANAGED_LABEL`] label and [`Docker::remove_orphans`] cleans up.
#[derive(Debug)]
#[must_use = "dropping the guard removes the container"]
pub struct ContainerGuard {
    docker: Docker,
    /// The container id; empty once given up ([`ContainerGuard::keep`]).
    id: String,
    /// Whether `Drop` removes the container: cleared by `remove`, `keep` and
    /// `keep_for_debugging`.
    armed: bool,
    /// The user of execs that name none (the sandbox's).
    exec_user: Option<String>,
}

impl ContainerGuard {
    /// The container id (64 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection this container lives on.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Its main process's host pid; see [`Docker::container_pid`].
    pub async fn pid(&self) -> Result<Option<u32>, DockerError> {
        self.docker.container_pid(&self.id).await
    }

    /// Starts the container; see [`Docker::start_container`].
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

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let host = self.docker.host.clone();
        let version = self.docker.client.client_version();
        let id = std::mem::take(&mut self.id);
        crate::drop_cleanup::run_blocking(
            "packager-container-cleanup",
            format!("remove container {id}"),
            move || {
                let client = new_client(&host, &version)?;
                Ok(async move { remove_container_with(&client, &id).await })
            },
        );
    }
}
