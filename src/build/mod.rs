//! Building one recipe in a clean-slate container.
//!
//! 1. the stack's build image is made sure of (built or imported once, then reused);
//! 2. sources and resources are fetched into the cache on the host;
//! 3. a fresh container is created from the image: labelled (`packager.*`), the cache's sources
//!    mounted read-only, no network interface but loopback (a recipe with `network` gets the
//!    egress proxy inside it, see [`crate::egress`]), no host environment;
//! 4. the sources are re-packed on the host into a sanitised tar stream (see [`crate::archive`])
//!    and extracted into the work directory through the engine's archive API;
//! 5. `configure`, `build` and `install` run as separate execs, each exit code checked, all
//!    output going to a per-build log file (`cache/logs/…`) and to the [`Reporter`];
//! 6. the prefix is copied out through the archive API and rewritten as a deterministic
//!    `.tar.gz` or `.tar.zst`, as the recipe's `format` says (see [`crate::package`]).
//!
//! The container is removed on success, on failure (unless kept for debugging) and when the
//! future is dropped (Ctrl-C), by [`ContainerGuard`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use crate::docker::{BindMount, ContainerGuard, ContainerSpec, Docker, ExecSpec};
use crate::fetch::{Download, Fetched, Fetcher};
use crate::package::{self, PackageOptions};
use crate::recipe::Recipe;
use crate::report::Reporter;
use crate::stack::{self, EnsuredImage};

/// Where sources are unpacked and phases run, inside the build container.
pub const SOURCE_DIR: &str = "/build/src";
/// Where the cache's downloads are mounted (read-only) inside the build container.
pub const CACHE_MOUNT: &str = "/var/cache/packager/sources";
/// Label: the runtime a container builds or tests.
pub const RUNTIME_LABEL: &str = "packager.runtime";
/// Label: the version a container builds or tests.
pub const VERSION_LABEL: &str = "packager.version";
/// Label: the run (one packager invocation) a container belongs to.
pub const RUN_LABEL: &str = "packager.run";
/// Label: the process that owns a container, `host:pid`, so a later run can tell orphans.
pub const OWNER_LABEL: &str = "packager.owner";
/// Label: what a container is for, `build` or `test` (stack images carry their own role label).
pub const CONTAINER_ROLE_LABEL: &str = "packager.role";

pub mod archive;
pub mod ccache;
mod container;
mod error;
pub mod linkage;
pub mod sandbox;
mod surroundings;
pub mod test;

pub use container::{
    BuildLog, DEFAULT_LOG_LIMIT, container_env, labels, owner, remove_orphans, remove_own, short,
    upload_artifact,
};
pub(crate) use container::{Deadline, run_commands, writer_stream};
pub use error::{BuildError, CommandFailure, TimedOut};
pub use surroundings::{
    HOSTNAME, Surroundings, TZ, UMASK, VARIED_HOSTNAME, VARIED_TZ, VARIED_UMASK,
};

/// A build phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `configure` commands.
    Configure,
    /// `build` commands.
    Build,
    /// `install` commands.
    Install,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 3] = [Phase::Configure, Phase::Build, Phase::Install];

    /// The phase's name, as in recipes.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Configure => "configure",
            Phase::Build => "build",
            Phase::Install => "install",
        }
    }

    /// The recipe's commands for this phase.
    pub fn commands(self, recipe: &Recipe) -> &[String] {
        match self {
            Phase::Configure => &recipe.build.configure,
            Phase::Build => &recipe.build.build,
            Phase::Install => &recipe.build.install,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of one build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Keep the container of a failed build (its id is in the error's hint).
    pub keep: bool,
    /// The mtime of every artifact entry, and `SOURCE_DATE_EPOCH` inside the container.
    pub source_date_epoch: u64,
    /// The runtimes this one is built against: extracted, each at its own prefix, before
    /// `configure` and before the test; left out of the artifact unless the recipe sets
    /// `include_requires`.
    pub requires: Vec<Required>,
    /// The build container's host name, umask and time zone: the default ones but for
    /// `packager verify`'s varied build.
    pub surroundings: Surroundings,
    /// Whether compilers may go through the compiler cache (when the recipe does not turn it
    /// off and the stack's build image has ccache). `packager verify` rebuilds without it.
    pub compiler_cache: bool,
}

/// A runtime another is built against: its artifact on the host and the prefix it unpacks at.
#[derive(Debug, Clone)]
pub struct Required {
    /// The artifact file.
    pub artifact: PathBuf,
    /// Its recipe's prefix.
    pub prefix: String,
}

impl Required {
    /// Extracts it at its prefix in `container` (made first when missing).
    pub async fn extract(&self, container: &ContainerGuard) -> Result<(), BuildError> {
        crate::sandbox::make_dir(container, &self.prefix).await?;
        upload_artifact(container, &self.artifact, &self.prefix).await
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            keep: false,
            source_date_epoch: package::DEFAULT_MTIME,
            requires: Vec::new(),
            surroundings: Surroundings::default(),
            compiler_cache: true,
        }
    }
}

/// The result of a successful build (before testing and publishing).
#[derive(Debug)]
pub struct Built {
    /// The artifact.
    pub artifact: package::Artifact,
    /// The build log.
    pub log: PathBuf,
    /// The build image used.
    pub build_image: EnsuredImage,
    /// The downloads used.
    pub fetched: Vec<Fetched>,
    /// Holds the artifact's folder; dropping it removes the artifact.
    pub work: tempfile::TempDir,
    /// What the compiler cache did in this build; `None` when it was not used.
    pub compiler_cache: Option<ccache::Stats>,
    /// The `host:port`s the build reached through its egress proxy; `None` without network.
    pub network: Option<Vec<String>>,
}

impl Built {
    /// The provenance stored with the artifact: what it was built from and with.
    pub fn provenance(&self, recipe: &Recipe) -> BTreeMap<String, String> {
        use sha2::Digest;
        let sources: Vec<String> = self
            .fetched
            .iter()
            .map(|f| f.checksum.to_string())
            .collect();
        [
            ("runtime", recipe.runtime.to_string()),
            ("version", recipe.version.to_string()),
            ("stack", recipe.stack.to_string()),
            (
                "recipe-digest",
                format!(
                    "sha256:{}",
                    hex::encode(sha2::Sha256::digest(recipe.to_toml().as_bytes()))
                ),
            ),
            ("stack-image", self.build_image.id.clone()),
            ("sources", sources.join(",")),
            ("packager-version", env!("CARGO_PKG_VERSION").to_string()),
            ("format", recipe.format.to_string()),
        ]
        .into_iter()
        .chain(
            (recipe.format == package::ArtifactFormat::TarZst)
                .then(|| ("zstd-level", recipe.zstd_level.to_string())),
        )
        .chain(self.network.as_ref().map(|n| ("network", n.join(","))))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Builds recipes: one per [`Builder::build`] call.
pub struct Builder {
    /// The engine.
    pub docker: Docker,
    /// The fetcher (and through it the cache).
    pub fetcher: Arc<Fetcher>,
    /// The recipes folder (for stacks).
    pub recipes_dir: PathBuf,
    /// Where reports go.
    pub reporter: Arc<dyn Reporter>,
    /// This run's id (a label on every container).
    pub run_id: String,
    /// `{jobs}` / `JOBS` inside the build.
    pub jobs: usize,
    /// The containers' resource limits: the command line's, and the defaults.
    pub limits: LimitSettings,
    /// For tests only: names that networked builds reach on loopback ([`crate::egress`]).
    pub egress_test_hosts: Vec<crate::egress::TestHost>,
}

/// Where a container's resource limits come from: the command line's
/// ([`LimitSettings::overrides`]) win over the recipe's, which win over the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    /// Set on the command line.
    pub overrides: crate::recipe::Limits,
    /// Used where neither sets one (see [`crate::sandbox::default_limits`]).
    pub defaults: crate::recipe::Limits,
}

impl LimitSettings {
    /// The limits of `recipe`'s build and test containers.
    pub fn for_recipe(&self, recipe: &Recipe) -> crate::recipe::Limits {
        self.overrides.or(recipe.build.limits).or(self.defaults)
    }
}

/// A build container set up by [`Builder::prepare`]: created, started, sources unpacked, and
/// the phases up to the one asked for run (or the first failure).
pub struct Prepared {
    /// The build container (removed when dropped).
    pub container: ContainerGuard,
    /// The build log.
    pub log: BuildLog,
    /// The build image used.
    pub image: EnsuredImage,
    /// The downloads used.
    pub fetched: Vec<Fetched>,
    /// The last phase that completed; `None` when none ran (or the first one failed).
    pub reached: Option<Phase>,
    /// What failed in the container (unpacking or a phase), leaving it as the failure left it.
    pub failure: Option<BuildError>,
    /// The compiler cache the container uses, if any: its folder (held) and ccache's counters
    /// when the container started.
    pub compiler_cache: Option<(ccache::Folder, ccache::Stats)>,
    /// The container's egress proxy, when the recipe has `network` (stopped when dropped).
    pub egress: Option<crate::egress::Egress>,
}

impl Builder {
    fn cache_dir(&self) -> &Path {
        self.fetcher.cache().root()
    }

    /// The logs folder.
    pub fn logs_dir(&self) -> PathBuf {
        self.fetcher.cache().logs_dir()
    }

    /// The most bytes `recipe`'s log keeps.
    fn log_limit(&self, recipe: &Recipe) -> u64 {
        self.limits
            .for_recipe(recipe)
            .log
            .unwrap_or(DEFAULT_LOG_LIMIT)
    }

    /// A new log in the logs folder: `<runtime>-<version><kind>-<time>-<run>.log`.
    fn new_log(&self, recipe: &Recipe, kind: &str) -> Result<BuildLog, BuildError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        BuildLog::create(
            &self.logs_dir(),
            &format!(
                "{}-{}{kind}-{stamp}-{}",
                recipe.runtime, recipe.version, self.run_id
            ),
            self.log_limit(recipe),
        )
    }

    /// Makes sure of the recipe's stack images (built or imported once, then reused): the
    /// build image, and the run image when `with_run`.
    async fn stack_images(
        &self,
        recipe: &Recipe,
        with_run: bool,
    ) -> Result<(EnsuredImage, Option<EnsuredImage>), BuildError> {
        let job = job_name(recipe);
        let reporter = &*self.reporter;
        let started = Instant::now();
        reporter.step_started(&job, "stack");
        let stack = stack::load(&self.recipes_dir, &recipe.stack)?.for_arch(recipe.arch)?;
        let mut progress = |line: &str| reporter.output(&job, line);
        let image = stack
            .ensure_build_image(&self.docker, &mut progress)
            .await?;
        let run_image = match with_run {
            true => Some(stack.ensure_run_image(&self.docker, &mut progress).await?),
            false => None,
        };
        reporter.step_finished(&job, "stack", started.elapsed());
        Ok((image, run_image))
    }

    /// Tests an artifact already made (published, or a file) as a build tests its own: in a
    /// fresh container of the stack's run image, with what it requires at their prefixes, the
    /// linkage gate, then the recipe's test commands. Returns the log's path.
    pub async fn test_artifact(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        artifact: &Path,
    ) -> Result<PathBuf, BuildError> {
        let (_, run_image) = self.stack_images(recipe, true).await?;
        let run_image = run_image.expect("asked for the run image");
        let mut log = self.new_log(recipe, "-test")?;
        log.line(&format!(
            "# test {} of {}",
            artifact.display(),
            job_name(recipe)
        ));
        let tester = self.start_tester(recipe, opts, &run_image).await?;
        tester
            .run(recipe, &opts.requires, artifact, &mut log, &*self.reporter)
            .await?;
        Ok(log.path().to_path_buf())
    }

    /// Starts the container `recipe`'s artifact is tested in, from `run_image`, confined with
    /// the recipe's limits and labelled with this run.
    async fn start_tester(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        run_image: &EnsuredImage,
    ) -> Result<test::TestContainer, BuildError> {
        test::TestContainer::start(
            &self.docker,
            &run_image.reference,
            recipe,
            &opts.requires,
            &self.run_id,
            opts.source_date_epoch,
            self.limits.for_recipe(recipe),
        )
        .await
    }

    /// Builds `recipe` into an artifact in a fresh container, then tests the artifact in
    /// another fresh container from the stack's run image. The test container is started while
    /// the build runs, and the build container removed while the test runs.
    pub async fn build(&self, recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
        self.build_with(recipe, opts, async |_: &ContainerGuard, _: &BuildError| {})
            .await
    }

    /// [`Builder::build`], calling `on_failure` with the build container and the error when
    /// the build fails in it (unpacking, a phase, packaging), before the container is removed
    /// (or kept, with [`BuildOptions::keep`]): the container is exactly as the failure left it.
    /// The CLI opens a debug shell there (`--shell-on-failure`).
    pub async fn build_with<F>(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        on_failure: F,
    ) -> Result<Built, BuildError>
    where
        F: AsyncFnOnce(&ContainerGuard, &BuildError),
    {
        let reporter = &*self.reporter;
        let (image, run_image) = self.stack_images(recipe, true).await?;
        let run_image = run_image.expect("asked for the run image");

        let (built, tester) = tokio::join!(
            self.build_only(recipe, opts, image, on_failure),
            self.start_tester(recipe, opts, &run_image)
        );
        let (built, container, folder) = built?;
        let tester = tester?;
        let mut log = BuildLog::append(&built.log, self.log_limit(recipe))?;
        let (removed, tested) = tokio::join!(
            container.remove(),
            tester.run(
                recipe,
                &opts.requires,
                &built.artifact.path,
                &mut log,
                reporter
            )
        );
        if removed.is_ok() {
            // No container writes in the compiler cache any more: sweep it.
            self.release_compiler_cache(&job_name(recipe), folder, Some(&mut log))
                .await;
        }
        tested?;
        removed?;
        Ok(built)
    }

    /// Sets up a build container exactly as a build does — stack image, fetched sources, a
    /// fresh labelled container with the read-only cache mount, the recipe's network policy
    /// and environment, sources unpacked in [`SOURCE_DIR`] — then runs the phases up to and
    /// including `until` (none when `None`). A failure inside the container does not remove
    /// it: it is returned in [`Prepared::failure`] with the container as it left it.
    pub async fn prepare(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        until: Option<Phase>,
    ) -> Result<Prepared, BuildError> {
        let (image, _) = self.stack_images(recipe, false).await?;
        self.prepare_in(recipe, opts, image, until).await
    }

    /// [`Builder::prepare`] with the build image already made sure of.
    async fn prepare_in(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        image: EnsuredImage,
        until: Option<Phase>,
    ) -> Result<Prepared, BuildError> {
        let job = job_name(recipe);
        let reporter = &*self.reporter;
        let started = Instant::now();
        reporter.step_started(&job, "fetch");
        let downloads = Download::for_recipe(recipe);
        let mut fetched = Vec::new();
        for r in self.fetcher.fetch_all(&downloads, 4).await {
            fetched.push(r?);
        }
        reporter.step_finished(&job, "fetch", started.elapsed());

        let mut log = self.new_log(recipe, "")?;
        log.line(&format!(
            "# {job} on stack {} ({})",
            recipe.stack, image.reference
        ));

        let cache_sources = std::path::absolute(self.cache_dir().join(crate::cache::SOURCES))
            .map_err(|source| BuildError::Io {
                path: self.cache_dir().to_path_buf(),
                source,
            })?;
        let mut spec = ContainerSpec::new(image.reference.clone());
        spec.labels = labels(recipe, &self.run_id, "build");
        spec.env = container_env(recipe, &opts.requires, self.jobs, opts.source_date_epoch);
        // No engine-made working directory: it would sit under the work volume's mount point.
        // Every command names its own.
        spec.working_dir = None;
        spec.mounts = vec![BindMount::read_only(cache_sources, CACHE_MOUNT)];
        // Never an engine network: a networked build reaches out only through its egress
        // proxy, which listens inside the container (see `crate::egress`).
        spec.network = false;
        if recipe.build.network.is_on() {
            let proxy = crate::egress::proxy_env();
            spec.env.retain(|(k, _)| !proxy.iter().any(|(p, _)| p == k));
            spec.env.extend(proxy);
        }
        opts.surroundings.apply(&mut spec);
        let mut writable = vec![SOURCE_DIR, recipe.prefix.as_str()];
        writable.extend(opts.requires.iter().map(|r| r.prefix.as_str()));
        spec.sandbox = Some(crate::sandbox::sandbox(
            &writable,
            self.limits.for_recipe(recipe),
            !recipe.build.root.is_empty(),
        ));
        for required in &opts.requires {
            log.line(&format!(
                "# requires {} at {}",
                required.artifact.display(),
                required.prefix
            ));
        }
        let (container, compiler_cache, unpacked) = self
            .start_build_container(recipe, opts, spec, &job, &fetched, &mut log)
            .await?;
        let egress = self
            .start_egress(&container, recipe, &job, &mut log)
            .await?;
        let mut reached = None;
        let failure = match unpacked {
            Err(e) => Some(e),
            Ok(()) => self
                .phases_in(
                    &container,
                    recipe,
                    opts,
                    &job,
                    &mut log,
                    until,
                    &mut reached,
                    egress.as_ref(),
                )
                .await
                .err(),
        };
        if let Some(e) = &failure {
            log.line(&format!("# failed: {e}"));
            let _ = log.flush();
        }
        Ok(Prepared {
            container,
            log,
            image,
            fetched,
            reached,
            failure,
            compiler_cache,
            egress,
        })
    }

    /// The egress proxy of a build whose recipe has `network`, listening inside `container`
    /// (see [`crate::egress`]); each request is reported as it is decided.
    async fn start_egress(
        &self,
        container: &ContainerGuard,
        recipe: &Recipe,
        job: &str,
        log: &mut BuildLog,
    ) -> Result<Option<crate::egress::Egress>, BuildError> {
        if !recipe.build.network.is_on() {
            return Ok(None);
        }
        let pid = container.pid().await?.ok_or_else(|| {
            BuildError::Egress(crate::egress::EgressError::Listen {
                pid: 0,
                source: std::io::Error::other("the build container is not running"),
            })
        })?;
        let listener = crate::egress::listen_in(pid)?;
        let policy = crate::egress::Policy {
            network: recipe.build.network.clone(),
            test_hosts: self.egress_test_hosts.clone(),
        };
        let allowed = match &recipe.build.network {
            crate::recipe::Network::Hosts(hosts) => hosts
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => "any public host".into(),
        };
        log.line(&format!(
            "# network: only through the egress proxy {} (allowed: {allowed}; never loopback, link-local, private or the host's addresses)",
            crate::egress::PROXY_URL
        ));
        let reporter = self.reporter.clone();
        let job = job.to_string();
        let egress = crate::egress::Egress::serve(
            listener,
            policy,
            Box::new(move |event| reporter.output(&job, &format!("# network: {event}"))),
        )
        .map_err(|source| BuildError::Egress(crate::egress::EgressError::Listen { pid, source }))?;
        Ok(Some(egress))
    }

    /// Creates and starts the build container from `spec` and unpacks the sources in it (the
    /// result of that is the third value), with the compiler cache when `opts` and the recipe
    /// allow it (see [`ccache`]): its folder held, the probe run while the sources are sent.
    /// When the probe finds the cache unusable (no ccache in the image, a folder the build user
    /// cannot write), the container is made again without it, with one warning.
    #[allow(clippy::type_complexity)]
    async fn start_build_container(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        spec: ContainerSpec,
        job: &str,
        fetched: &[Fetched],
        log: &mut BuildLog,
    ) -> Result<
        (
            ContainerGuard,
            Option<(ccache::Folder, ccache::Stats)>,
            Result<(), BuildError>,
        ),
        BuildError,
    > {
        if !(opts.compiler_cache && recipe.build.compiler_cache) {
            let why = match opts.compiler_cache {
                false => "off for this build",
                true => "off (`[build] compiler_cache = false`)",
            };
            log.line(&format!("# compiler cache: {why}"));
            let container = self.docker.create_container(&spec).await?;
            container.start().await?;
            let unpacked = self
                .unpack_step(&container, recipe, opts, job, fetched)
                .await;
            return Ok((container, None, unpacked));
        }
        let cache = self.fetcher.cache();
        let dir = std::path::absolute(cache.compiler_cache_dir(
            recipe.stack.as_str(),
            &recipe.arch.to_string(),
            recipe.runtime.as_str(),
        ))
        .map_err(|source| BuildError::Io {
            path: cache.root().to_path_buf(),
            source,
        })?;
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || ccache::Folder::open(&dir))
                .await
                .expect("lock task does not panic")
        };
        let folder = opened.map_err(|source| BuildError::Io {
            path: dir.clone(),
            source,
        })?;
        self.report_swept(job, folder.dir(), folder.swept(), Some(log));
        let mut cached = spec.clone();
        ccache::apply(
            &mut cached,
            folder.dir(),
            recipe.build.env.contains_key("PATH"),
        );
        let container = self.docker.create_container(&cached).await?;
        container.start().await?;
        // The probe links the compilers in a tmpfs of its own while the sources go to the
        // work directory: neither waits for the other.
        let (probed, unpacked) = tokio::join!(
            ccache::probe(&container, recipe.stack.as_str(), folder.dir()),
            self.unpack_step(&container, recipe, opts, job, fetched)
        );
        match probed? {
            ccache::Probe::Ready(stats) => {
                log.line(&format!(
                    "# compiler cache: {} (ccache)",
                    folder.dir().display()
                ));
                Ok((container, Some((folder, stats)), unpacked))
            }
            ccache::Probe::Unusable(why) => {
                log.line(&format!("# compiler cache: not used: {why}"));
                let key = format!("{} {}", recipe.stack, folder.dir().display());
                if ccache::first_warning(&key) {
                    self.reporter.warn(&format!("{job}: {why}"));
                }
                container.remove().await?;
                drop(folder);
                let container = self.docker.create_container(&spec).await?;
                container.start().await?;
                let unpacked = self
                    .unpack_step(&container, recipe, opts, job, fetched)
                    .await;
                Ok((container, None, unpacked))
            }
        }
    }

    /// Fetches, builds and packages; returns the still-running build container too.
    async fn build_only<F>(
        &self,
        recipe: &Recipe,
        opts: &BuildOptions,
        image: EnsuredImage,
        on_failure: F,
    ) -> Result<(Built, ContainerGuard, Option<ccache::Folder>), BuildError>
    where
        F: AsyncFnOnce(&ContainerGuard, &BuildError),
    {
        let job = job_name(recipe);
        let Prepared {
            container,
            mut log,
            image,
            fetched,
            failure,
            compiler_cache,
            egress,
            ..
        } = self
            .prepare_in(recipe, opts, image, Some(Phase::Install))
            .await?;
        let result = match failure {
            Some(e) => Err(e),
            None => {
                // ccache's counters are read while the prefix is copied out.
                let (cache_stats, packaged) = tokio::join!(
                    Self::compiler_cache_stats(&container, compiler_cache.as_ref()),
                    self.package_in(&container, recipe, opts, &job, &mut log)
                );
                if let Some(delta) = &cache_stats {
                    let line = format!("# compiler cache: {delta}");
                    log.line(&line);
                    self.reporter.output(&job, &line);
                }
                if let Err(e) = &packaged {
                    log.line(&format!("# failed: {e}"));
                }
                let _ = log.flush();
                packaged.map(|(artifact, work)| (artifact, work, cache_stats))
            }
        };
        let folder = compiler_cache.map(|(folder, _)| folder);
        // The proxy stays up until the container is handed on or removed: a debug shell
        // (`--shell-on-failure`) has the build's network too.
        let network = egress.as_ref().map(|e| e.reached());
        match result {
            Ok((artifact, work, compiler_cache)) => Ok((
                Built {
                    artifact,
                    log: log.path().to_path_buf(),
                    build_image: image,
                    fetched,
                    work,
                    compiler_cache,
                    network,
                },
                container,
                folder,
            )),
            Err(mut e) => {
                on_failure(&container, &e).await;
                if opts.keep {
                    let id = container.keep_for_debugging().await?;
                    if let BuildError::Phase { failure, .. } = &mut e {
                        failure.debug = format!(
                            "the container is kept: `packager shell --attach {}` to look inside, `docker rm -f {}` when done",
                            short(&id),
                            short(&id)
                        );
                    }
                } else {
                    container.remove().await?;
                }
                // A kept container can still write there: the next build's sweep sees that.
                self.release_compiler_cache(&job, folder, Some(&mut log))
                    .await;
                Err(e)
            }
        }
    }

    /// What the compiler cache did since the container started. `None` without a cache, or
    /// when ccache does not answer.
    async fn compiler_cache_stats(
        container: &ContainerGuard,
        compiler_cache: Option<&(ccache::Folder, ccache::Stats)>,
    ) -> Option<ccache::Stats> {
        let (_, before) = compiler_cache?;
        let now = ccache::stats(container).await.ok().flatten()?;
        Some(now.since(*before))
    }

    /// Lets go of a compiler cache folder once the container that mounted it is removed (or
    /// kept): [`ccache::Folder::release`] sweeps it, and what that undid is a warning and a
    /// line of `log`. A sweep that fails is a warning too (the build's artifact is not
    /// affected, and the next build's [`ccache::Folder::open`] sweeps again).
    pub async fn release_compiler_cache(
        &self,
        job: &str,
        folder: Option<ccache::Folder>,
        log: Option<&mut BuildLog>,
    ) {
        let Some(folder) = folder else { return };
        let dir = folder.dir().to_path_buf();
        let released = tokio::task::spawn_blocking(move || folder.release())
            .await
            .expect("sweep task does not panic");
        match released {
            Ok(swept) => self.report_swept(job, &dir, &swept, log),
            Err(e) => self.reporter.warn(&format!(
                "{job}: could not sweep the compiler cache folder {}: {e}",
                dir.display()
            )),
        }
    }

    /// Says what a sweep of the compiler cache folder `dir` undid (see [`ccache::sweep`]).
    fn report_swept(
        &self,
        job: &str,
        dir: &Path,
        swept: &[ccache::Swept],
        mut log: Option<&mut BuildLog>,
    ) {
        for s in swept {
            let line = format!("compiler cache {}: {s}", dir.display());
            if let Some(log) = log.as_deref_mut() {
                log.line(&format!("# {line}"));
            }
            self.reporter.warn(&format!("{job}: {line}"));
        }
        if let Some(log) = log {
            let _ = log.flush();
        }
    }

    /// Unpacks the sources (and what the recipe requires) in [`SOURCE_DIR`] as the build
    /// user: the `unpack` step.
    async fn unpack_step(
        &self,
        container: &ContainerGuard,
        recipe: &Recipe,
        opts: &BuildOptions,
        job: &str,
        fetched: &[Fetched],
    ) -> Result<(), BuildError> {
        let reporter = &*self.reporter;
        // The work directory first, then the prefix while the sources are sent; both belong
        // to the build user.
        let started = Instant::now();
        reporter.step_started(job, "unpack");
        crate::sandbox::make_dir(container, SOURCE_DIR).await?;
        let (made, unpacked) = tokio::join!(
            crate::sandbox::make_dir(container, &recipe.prefix),
            self.unpack(container, recipe, job, fetched)
        );
        made?;
        if let Err(e) = unpacked {
            // What the engine extracted before the stream was refused is not the sources:
            // leave an empty work directory (for a kept container), not a partial tree.
            let clean = ExecSpec::shell(format!("find {SOURCE_DIR} -mindepth 1 -delete"));
            let _ = container.exec(&clean, &mut |_, _| {}).await;
            return Err(e);
        }
        for required in &opts.requires {
            required.extract(container).await?;
        }
        reporter.step_finished(job, "unpack", started.elapsed());
        Ok(())
    }

    /// Runs the phases up to `until` in a container whose sources are unpacked, recording
    /// each completed phase in `reached`; the requests of each phase through `egress` are
    /// logged after its commands.
    #[allow(clippy::too_many_arguments)]
    async fn phases_in(
        &self,
        container: &ContainerGuard,
        recipe: &Recipe,
        opts: &BuildOptions,
        job: &str,
        log: &mut BuildLog,
        until: Option<Phase>,
        reached: &mut Option<Phase>,
        egress: Option<&crate::egress::Egress>,
    ) -> Result<(), BuildError> {
        let reporter = &*self.reporter;
        let Some(until) = until else {
            return Ok(());
        };
        for phase in Phase::ALL {
            let commands = phase.commands(recipe);
            let started = Instant::now();
            reporter.step_started(job, phase.name());
            log.line(&format!("# == {phase}"));
            let user = recipe
                .build
                .root
                .iter()
                .any(|p| p == phase.name())
                .then_some(crate::sandbox::ROOT_USER);
            if user.is_some() {
                let note = format!("# {phase} runs as root (`[build] root`)");
                log.line(&note);
                reporter.output(job, &note);
            }
            let umask = Some(&opts.surroundings);
            let limit = self.limits.for_recipe(recipe).timeout;
            let deadline = Deadline::after(
                phase.name(),
                limit.unwrap_or(crate::sandbox::DEFAULT_TIMEOUT),
            );
            let ran = run_commands(
                container, commands, SOURCE_DIR, user, umask, deadline, job, log, reporter,
            )
            .await;
            for event in egress.iter().flat_map(|e| e.take_new()) {
                log.line(&format!("# network: {event}"));
            }
            if let Some((command, exit_code, tail)) = ran? {
                let after = reached.map_or(String::new(), |p| format!(" --after {p}"));
                let limit =
                    crate::sandbox::limit_note(exit_code, &tail, self.limits.for_recipe(recipe))
                        .map_or(String::new(), |n| format!("{n}; "));
                return Err(BuildError::Phase {
                    phase,
                    failure: Box::new(CommandFailure {
                        job: job.to_string(),
                        command,
                        exit_code,
                        tail,
                        log: log.path().to_path_buf(),
                        debug: format!(
                            "{limit}debug it in the same environment: `packager shell {} {}{after}` (or rerun with --keep or --shell-on-failure)",
                            recipe.runtime, recipe.version
                        ),
                    }),
                });
            }
            reporter.step_finished(job, phase.name(), started.elapsed());
            *reached = Some(phase);
            if phase == until {
                break;
            }
        }
        Ok(())
    }

    /// Copies the prefix out of the container and packages it.
    async fn package_in(
        &self,
        container: &ContainerGuard,
        recipe: &Recipe,
        opts: &BuildOptions,
        job: &str,
        log: &mut BuildLog,
    ) -> Result<(package::Artifact, tempfile::TempDir), BuildError> {
        let reporter = &*self.reporter;
        let started = Instant::now();
        reporter.step_started(job, "package");
        let work = self
            .fetcher
            .cache()
            .work_dir("artifact-")
            .map_err(|(path, source)| BuildError::Io { path, source })?;
        let dest = work.path().join(&recipe.artifact);
        let stream = container.download(&recipe.prefix).map(|item| {
            item.map_err(|e| std::io::Error::other(crate::redact::redact_url(&e.to_string())))
        });
        let reader = tokio_util::io::StreamReader::new(stream);
        let mut options = PackageOptions::new(&recipe.prefix);
        options.mtime = opts.source_date_epoch;
        options.format = recipe.format;
        options.zstd_level = recipe.zstd_level;
        // Only what a requirement put into this recipe's own prefix can be in its artifact.
        let requires: Vec<PathBuf> = opts
            .requires
            .iter()
            .filter(|r| r.prefix == recipe.prefix)
            .map(|r| r.artifact.clone())
            .collect();
        if !requires.is_empty() && !recipe.build.include_requires {
            let exclusions =
                tokio::task::spawn_blocking(move || package::Exclusions::from_artifacts(&requires))
                    .await
                    .expect("listing task does not panic")
                    .map_err(|source| BuildError::Package {
                        job: job.to_string(),
                        source,
                    })?;
            options.exclude = Some(Arc::new(exclusions));
        }
        let artifact = tokio::task::spawn_blocking(move || {
            let sync = tokio_util::io::SyncIoBridge::new(reader);
            package::package_tar_stream(sync, &dest, &options)
        })
        .await
        .expect("package task does not panic")
        .map_err(|source| BuildError::Package {
            job: job.to_string(),
            source,
        })?;
        reporter.step_finished(job, "package", started.elapsed());
        log.line(&format!(
            "# artifact {} ({} bytes, sha256:{})",
            recipe.artifact, artifact.size, artifact.sha256
        ));
        log.flush()?;
        Ok((artifact, work))
    }

    /// Re-packs the source and each resource on the host and extracts them in the container.
    async fn unpack(
        &self,
        container: &ContainerGuard,
        recipe: &Recipe,
        job: &str,
        fetched: &[Fetched],
    ) -> Result<(), BuildError> {
        let mut items = vec![(
            fetched[0].path.clone(),
            true,
            recipe.source.strip_components,
            String::new(),
        )];
        for (r, f) in recipe.resources.iter().zip(&fetched[1..]) {
            items.push((f.path.clone(), r.unpack, r.strip_components, r.dest.clone()));
        }
        // One work tree for all of them: the size and entry limits apply to their sum, and a
        // resource's links are followed through the source's.
        let mut compressed = 0u64;
        for (path, ..) in &items {
            compressed += std::fs::metadata(path)
                .map_err(|source| BuildError::Io {
                    path: path.clone(),
                    source,
                })?
                .len();
        }
        let limits = archive::UnpackLimits::for_sources(
            compressed,
            recipe.build.max_unpacked_size,
            recipe.build.max_unpacked_entries,
        );
        let mut tree = archive::WorkTree::new(crate::sandbox::OWNER, limits);
        for (path, unpack, strip, dest) in items {
            let (stream, handle) = writer_stream(move |out| {
                let r = if unpack {
                    tree.repack_archive(&path, strip, Path::new(&dest), out)
                } else {
                    tree.repack_file(&path, Path::new(&dest), out)
                };
                let ok = r.is_ok();
                ((r, tree), ok)
            });
            let uploaded = container.upload(SOURCE_DIR, stream).await;
            let (repacked, returned) = handle.await.expect("repack task does not panic");
            tree = returned;
            repacked.map_err(|source| BuildError::Unpack {
                job: job.to_string(),
                source,
            })?;
            uploaded?;
        }
        Ok(())
    }
}

/// A new id for one invocation's containers (the [`RUN_LABEL`]): eight hex digits from the
/// time and the process id.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:08x}",
        (nanos as u64 ^ (std::process::id() as u64) << 32) & 0xffff_ffff
    )
}

/// `runtime version` (and the arch for any but amd64), the name of a job in reports and
/// errors: [`Recipe::job_name`].
pub fn job_name(recipe: &Recipe) -> String {
    recipe.job_name()
}
