//! The pipeline end to end, as the commands use it: a [`Pipeline`] plans a selection, runs the
//! plan (each job built, tested, published and entered in its inventory, the runtimes it is
//! built against taken from the store once), rebuilds a version to check that it is
//! reproducible, and tests a published artifact again.
//!
//! It owns no mechanism of its own: planning is [`crate::plan`], scheduling
//! [`crate::schedule`], building and testing [`crate::build`], publishing [`crate::publish`].
//! What it adds is the order between them — an artifact is in the store, verified, before its
//! inventory entry is written — and the settings they share. It never prints: progress goes to
//! the [`Reporter`], results come back as values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::Error;
use crate::arch::Arch;
use crate::build::{BuildError, BuildOptions, Builder, LimitSettings, Required};
use crate::cache::Cache;
use crate::docker::{ContainerGuard, Docker};
use crate::fetch::{Fetcher, RetryPolicy};
use crate::plan::{KEY_METADATA, Plan, PlanOptions, Selector, Status};
use crate::publish::{self, PublishOutcome, Store, inventory};
use crate::recipe::{Catalogue, Limits, LoadOptions, Recipe};
use crate::report::Reporter;
use crate::reproduce::{Reference, Variations, Verification};
use crate::schedule::{JobOutcome, Made, Report, Slot};
use crate::version::Version;

/// What every run of the pipeline shares, as the command line sets it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The recipes folder (runtimes and `stacks/`).
    pub recipes_dir: PathBuf,
    /// The cache folder (downloads, logs, work files).
    pub cache_dir: PathBuf,
    /// Content-addressed mirrors tried before a source's own URLs.
    pub mirrors: Vec<String>,
    /// Container limits given on the command line; they win over a recipe's.
    pub limits: Limits,
    /// The mtime of every artifact entry and `SOURCE_DATE_EPOCH` in the containers.
    pub source_date_epoch: u64,
    /// The engine (`DOCKER_HOST`-style URL) to build each architecture on, when not the
    /// default one: a native arm64 engine, say, rather than emulation.
    pub engines: BTreeMap<Arch, String>,
    /// For tests only: names that networked builds reach on loopback
    /// ([`crate::egress::TestHost`], `--egress-test-host`).
    pub egress_test_hosts: Vec<crate::egress::TestHost>,
}

impl Settings {
    /// Settings for `recipes_dir` and `cache_dir` with nothing else set: no mirrors, no limits,
    /// the default `SOURCE_DATE_EPOCH`, the default engine for every architecture.
    pub fn new(recipes_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        Settings {
            recipes_dir: recipes_dir.into(),
            cache_dir: cache_dir.into(),
            mirrors: Vec::new(),
            limits: Limits::default(),
            source_date_epoch: crate::package::DEFAULT_MTIME,
            engines: BTreeMap::new(),
            egress_test_hosts: Vec::new(),
        }
    }
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Jobs built at once (at least 1).
    pub parallel: usize,
    /// `{jobs}` for every build; by default the machine's cores shared among running builds.
    pub make_jobs: Option<usize>,
    /// Keep the container of a failed build.
    pub keep: bool,
    /// Replace what is published with other bytes.
    pub force: bool,
    /// Stop starting jobs, and cancel running ones, at the first failure.
    pub fail_fast: bool,
    /// Reach compilers through the compiler cache (unless a recipe turns it off); see
    /// [`crate::build::ccache`].
    pub compiler_cache: bool,
}

/// How `packager verify` rebuilds.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Compare with a normal first build made just before, not with the published artifact.
    pub twice: bool,
    /// What the rebuild varies (all by default).
    pub variations: Variations,
    /// Copy both artifacts into this folder, as `reference/NAME` and `rebuild/NAME` (to look
    /// at them with diffoscope, say).
    pub keep_artifacts: Option<PathBuf>,
}

/// The usage error for a recipe's artifact the store does not hold: build it first, `or_else`.
fn not_in_store(store: &impl Store, recipe: &Recipe, or_else: &str) -> Error {
    Error::Usage {
        message: format!(
            "{} does not hold {}/{}",
            store.describe(),
            recipe.stack,
            recipe.artifact
        ),
        hint: Some(format!(
            "build it first (`packager build {} {}`), {or_else}",
            recipe.runtime, recipe.version
        )),
    }
}

/// Copies `reference` and `rebuild` (artifact `name`) to `dir/reference/name` and
/// `dir/rebuild/name`.
fn keep_pair(
    dir: &Path,
    name: &str,
    reference: &Path,
    rebuild: &Path,
) -> Result<(PathBuf, PathBuf), Error> {
    let copy = |from: &Path, folder: &str| -> Result<PathBuf, Error> {
        let to_dir = dir.join(folder);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(&to_dir).map_err(io(&to_dir))?;
        let to = to_dir.join(name);
        std::fs::copy(from, &to).map_err(io(&to))?;
        Ok(to)
    };
    Ok((copy(reference, "reference")?, copy(rebuild, "rebuild")?))
}

/// Called with the build container, the engine and the error when a build fails inside its
/// container, before the container is removed: the command line opens a debug shell there.
pub type FailureHook<'h> = &'h (
        dyn for<'a> Fn(
    &'a ContainerGuard,
    &'a BuildError,
    &'a Docker,
    &'a Recipe,
) -> BoxFuture<'a, ()>
            + Send
            + Sync
    );

/// The end of a run: the report, and what went wrong (conflicts first, then failures in the
/// order they happened).
#[derive(Debug)]
pub struct Ran {
    /// Each job's outcome.
    pub report: Report,
    /// One error per job that did not complete.
    pub errors: Vec<Error>,
}

impl Ran {
    /// `None` when every job was built or skipped. Otherwise the error to exit with: a single
    /// failure itself (taken out of [`Ran::errors`]); for several, a count, with each error
    /// left in [`Ran::errors`] to be shown.
    pub fn error(&mut self) -> Option<Error> {
        if self.report.ok() {
            return None;
        }
        let failed = self
            .report
            .jobs
            .iter()
            .filter(|j| !matches!(j.outcome, JobOutcome::Built | JobOutcome::Skipped))
            .count();
        if self.errors.len() == 1 && failed == 1 {
            return self.errors.pop();
        }
        let conflicts = self
            .errors
            .iter()
            .filter(|e| matches!(e, Error::Conflict { .. }))
            .count();
        Some(Error::Jobs {
            failed,
            total: self.report.jobs.len(),
            conflicts,
        })
    }
}

/// The pipeline, for one invocation: its settings, the catalogue, the fetcher and the run id
/// every container it starts is labelled with.
pub struct Pipeline {
    settings: Settings,
    catalogue: Catalogue,
    fetcher: Arc<Fetcher>,
    reporter: Arc<dyn Reporter>,
    run_id: String,
}

impl Pipeline {
    /// Opens the catalogue and the cache.
    pub fn new(settings: Settings, reporter: Arc<dyn Reporter>) -> Result<Self, Error> {
        let catalogue = Catalogue::open(&settings.recipes_dir)?;
        let fetcher = Fetcher::new(
            Cache::new(&settings.cache_dir),
            settings.mirrors.clone(),
            RetryPolicy::default(),
            reporter.clone(),
        )?;
        Ok(Pipeline {
            settings,
            catalogue,
            fetcher: Arc::new(fetcher),
            reporter,
            run_id: crate::build::new_run_id(),
        })
    }

    /// The recipes.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The fetcher (and through it the cache).
    pub fn fetcher(&self) -> &Arc<Fetcher> {
        &self.fetcher
    }

    /// The id every container of this invocation is labelled with.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Plans `selection` for `arches` (this host's when empty) against `store`, with `{jobs}` =
    /// `jobs` in the recipes.
    pub async fn plan(
        &self,
        selection: &[Selector],
        arches: &[Arch],
        store: &impl Store,
        force: bool,
        jobs: usize,
    ) -> Result<Plan, Error> {
        Ok(crate::plan::plan(
            &self.catalogue,
            &self.settings.recipes_dir,
            selection,
            store,
            &PlanOptions {
                force,
                jobs,
                source_date_epoch: self.settings.source_date_epoch,
                arches: arches.to_vec(),
            },
        )
        .await?)
    }

    /// Loads one version's recipe for `arch` with `{jobs}` = `jobs` (the machine's cores when
    /// `None`); the recipe's warnings go to the reporter.
    pub fn recipe(
        &self,
        runtime: &str,
        version: &str,
        arch: Arch,
        jobs: Option<usize>,
    ) -> Result<Recipe, Error> {
        let version: Version = version.parse().map_err(|e| Error::Usage {
            message: format!("{e}"),
            hint: Some(format!("`packager list {runtime}` shows the versions")),
        })?;
        let jobs = jobs.unwrap_or_else(|| LoadOptions::default().jobs).max(1);
        let recipe = self
            .catalogue
            .load(runtime, &version, &LoadOptions { jobs, arch })?;
        self.warn_recipe(&recipe);
        Ok(recipe)
    }

    /// Passes a recipe's warnings to the reporter.
    pub fn warn_recipe(&self, recipe: &Recipe) {
        for w in &recipe.warnings {
            self.reporter.warn(w);
        }
    }

    /// Connects to the default engine and removes the containers of killed runs.
    pub async fn connect(&self) -> Result<Docker, Error> {
        self.connect_for(Arch::host()).await
    }

    /// Connects to the engine that builds `arch` (the one [`Settings::engines`] names for it,
    /// else the default) and removes the containers of killed runs.
    pub async fn connect_for(&self, arch: Arch) -> Result<Docker, Error> {
        let docker = match self.settings.engines.get(&arch) {
            Some(host) => Docker::connect_to(host).await?,
            None => Docker::connect().await?,
        };
        let orphans = crate::build::remove_orphans(&docker).await?;
        if !orphans.is_empty() {
            self.reporter.info(&format!(
                "removed {} container(s) left by killed runs",
                orphans.len()
            ));
        }
        Ok(docker)
    }

    /// A builder on `docker` for builds with `{jobs}` = `jobs`, `parallel` of them at once
    /// (which shares the engine's memory out among them).
    pub async fn builder(
        &self,
        docker: &Docker,
        jobs: usize,
        parallel: usize,
    ) -> Result<Builder, Error> {
        let capacity = docker.capacity().await?;
        Ok(self.builder_with(docker, jobs, parallel, capacity))
    }

    fn builder_with(
        &self,
        docker: &Docker,
        jobs: usize,
        parallel: usize,
        (memory, cpus): (u64, u64),
    ) -> Builder {
        Builder {
            docker: docker.clone(),
            fetcher: self.fetcher.clone(),
            recipes_dir: self.settings.recipes_dir.clone(),
            reporter: self.reporter.clone(),
            run_id: self.run_id.clone(),
            jobs,
            limits: LimitSettings {
                overrides: self.settings.limits,
                defaults: crate::sandbox::default_limits(memory, cpus, jobs, parallel),
            },
            egress_test_hosts: self.settings.egress_test_hosts.clone(),
        }
    }

    fn options(&self, keep: bool, requires: Vec<Required>) -> BuildOptions {
        BuildOptions {
            keep,
            source_date_epoch: self.settings.source_date_epoch,
            requires,
            surroundings: crate::build::Surroundings::default(),
            compiler_cache: true,
        }
    }

    /// A temporary folder in the cache's work area, removed when dropped.
    fn work_dir(&self, prefix: &str) -> Result<tempfile::TempDir, Error> {
        Cache::new(&self.settings.cache_dir)
            .work_dir(prefix)
            .map_err(|(path, source)| Error::Io { path, source })
    }

    /// Runs the jobs of `plan` whose status is `build`, dependencies first, `parallel` at a
    /// time: each is built against the runtimes it requires (from `store`, downloaded once),
    /// tested, published, and entered in its inventory once the artifact is in the store.
    /// Jobs refused as conflicts are reported as errors. The engine is connected only when
    /// something is built.
    pub async fn run<S: Store>(
        &self,
        plan: &Plan,
        store: &S,
        opts: &RunOptions,
        on_failure: Option<FailureHook<'_>>,
    ) -> Result<Ran, Error> {
        let cores = LoadOptions::default().jobs;
        let parallel = opts.parallel.max(1);
        // An engine per architecture that has something to build (none when nothing is).
        let mut engines: BTreeMap<Arch, (Docker, (u64, u64))> = BTreeMap::new();
        for job in plan.jobs.iter().filter(|j| j.status == Status::Build) {
            if let std::collections::btree_map::Entry::Vacant(slot) = engines.entry(job.recipe.arch)
            {
                let docker = self.connect_for(job.recipe.arch).await?;
                // An engine that cannot run the arch is said before any job of the run starts.
                docker.check_runs(job.recipe.arch).await?;
                let capacity = docker.capacity().await?;
                slot.insert((docker, capacity));
            }
        }
        let work = self.work_dir(&format!("run-{}-", self.run_id))?;

        let run_job = |slot: Slot| {
            let job = &plan.jobs[slot.index];
            let (engine, work) = (engines.get(&job.recipe.arch).cloned(), work.path());
            async move {
                let (docker, capacity) =
                    engine.expect("an engine is connected for each arch with builds");
                let make_jobs = opts.make_jobs.unwrap_or(slot.make_jobs).max(1);
                let recipe = self.catalogue.load(
                    job.recipe.runtime.as_str(),
                    &job.recipe.version,
                    &LoadOptions {
                        jobs: make_jobs,
                        arch: job.recipe.arch,
                    },
                )?;
                // What it is built against, from the store (built earlier in this run, or
                // before), each downloaded once for the whole run.
                let mut requires = Vec::new();
                for &d in &job.deps {
                    let dep = &plan.jobs[d].recipe;
                    let path = work.join(format!("{}-{}", dep.stack, dep.artifact));
                    publish::download_once(store, &dep.stack, &dep.artifact, &path).await?;
                    requires.push(Required {
                        artifact: path,
                        prefix: dep.prefix.clone(),
                    });
                }
                let builder = self.builder_with(&docker, make_jobs, parallel, capacity);
                let mut build_opts = self.options(opts.keep, requires);
                build_opts.compiler_cache = opts.compiler_cache;
                let hook = async |container: &ContainerGuard, error: &BuildError| {
                    if let Some(hook) = on_failure {
                        hook(container, error, &docker, &recipe).await;
                    }
                };
                let built = builder.build_with(&recipe, &build_opts, hook).await?;
                let mut metadata = built.provenance(&self.canonical(&recipe)?);
                let arch = recipe.arch;
                metadata.insert("arch".into(), arch.to_string());
                metadata.insert(KEY_METADATA.into(), job.key.to_string());
                metadata.insert("revision".into(), recipe.revision.to_string());
                self.publish(store, &recipe, &built, metadata, arch, opts.force)
                    .await
            }
        };
        let (report, errors) =
            crate::schedule::execute(plan, parallel, cores, opts.fail_fast, run_job).await;
        let mut all: Vec<Error> = plan
            .jobs
            .iter()
            .filter(|j| j.status == Status::Conflict)
            .map(|j| Error::Conflict {
                job: j.name(),
                reason: j.reason.clone(),
            })
            .collect();
        all.extend(errors.into_iter().map(|(_, e)| e));
        Ok(Ran {
            report,
            errors: all,
        })
    }

    /// The recipe as the build key hashes it (`{jobs}` fixed), for provenance digests that
    /// do not change with the machine.
    fn canonical(&self, recipe: &Recipe) -> Result<Recipe, Error> {
        Ok(self.catalogue.load(
            recipe.runtime.as_str(),
            &recipe.version,
            &crate::plan::canonical_load_options(recipe.arch),
        )?)
    }

    /// Publishes a built artifact, then (the artifact complete and verified in the store)
    /// enters it in its inventory.
    async fn publish(
        &self,
        store: &impl Store,
        recipe: &Recipe,
        built: &crate::build::Built,
        metadata: BTreeMap<String, String>,
        arch: Arch,
        force: bool,
    ) -> Result<Made, Error> {
        let published = store
            .publish(
                &publish::Upload {
                    path: built.artifact.path.clone(),
                    name: recipe.artifact.clone(),
                    stack: recipe.stack.to_string(),
                    sha256: built.artifact.sha256.clone(),
                    size: built.artifact.size,
                    metadata: metadata.clone(),
                },
                force,
            )
            .await?;
        let location = &published.location;
        match published.outcome {
            PublishOutcome::Published => self.reporter.info(&format!("published {location}")),
            PublishOutcome::AlreadyPublished => self.reporter.warn(&format!(
                "{location} was already published with the same content"
            )),
            PublishOutcome::Replaced => self
                .reporter
                .warn(&format!("replaced {location} (--force)")),
        }
        let entry = inventory::Entry {
            version: recipe.version.to_string(),
            os: "linux".into(),
            arch,
            url: store.public_url(&recipe.stack, &recipe.artifact),
            checksum: crate::checksum::Checksum::new(
                crate::checksum::Algo::Sha256,
                &built.artifact.sha256,
            )
            .expect("the packer writes a sha256 in hex"),
            metadata: inventory::entry_metadata(&metadata),
        };
        // The entry names what the store holds, checked after reading the inventory.
        inventory::add_published(
            store,
            &recipe.stack,
            recipe.runtime.as_str(),
            &recipe.artifact,
            entry,
        )
        .await?;
        let made = Made {
            size: built.artifact.size,
            sha256: built.artifact.sha256.clone(),
            location: published.location,
        };
        self.reporter
            .artifact(&crate::build::job_name(recipe), &made);
        Ok(made)
    }

    /// The plan of `recipe` alone (its dependencies first) against `store`, and the index of
    /// its job.
    async fn plan_of(&self, recipe: &Recipe, store: &impl Store) -> Result<(Plan, usize), Error> {
        let selection = [Selector::Runtime {
            runtime: recipe.runtime.to_string(),
            versions: vec![recipe.version.to_string()],
        }];
        let plan = self
            .plan(&selection, &[recipe.arch], store, false, 1)
            .await?;
        let index = plan
            .jobs
            .iter()
            .position(|j| j.selected)
            .expect("the plan holds the selected job");
        Ok((plan, index))
    }

    /// The artifacts of the runtimes `recipe` is built against, downloaded from `store` into
    /// `dir`, each with the prefix it unpacks at. Versions are picked as `plan` picks them. A
    /// requirement the store does not hold is a usage error naming the build that makes it.
    pub async fn required_runtimes(
        &self,
        recipe: &Recipe,
        store: &impl Store,
        dir: &Path,
    ) -> Result<Vec<Required>, Error> {
        if recipe.build.requires.is_empty() {
            return Ok(Vec::new());
        }
        let (plan, index) = self.plan_of(recipe, store).await?;
        self.download_requires(&plan, index, store, dir).await
    }

    /// What job `index` of `plan` requires, downloaded from `store` into `dir`.
    async fn download_requires(
        &self,
        plan: &Plan,
        index: usize,
        store: &impl Store,
        dir: &Path,
    ) -> Result<Vec<Required>, Error> {
        let job = &plan.jobs[index];
        let mut requires = Vec::new();
        for &d in &job.deps {
            let dep = &plan.jobs[d].recipe;
            if store.lookup(&dep.stack, &dep.artifact).await?.is_none() {
                return Err(Error::Usage {
                    message: format!(
                        "{} requires {} {}, which {} does not hold",
                        job.name(),
                        dep.runtime,
                        dep.version,
                        store.describe()
                    ),
                    hint: Some(format!(
                        "build it first: `packager build {} {} --store {}`",
                        dep.runtime,
                        dep.version,
                        store.describe()
                    )),
                });
            }
            let path = dir.join(&dep.artifact);
            store.download(&dep.stack, &dep.artifact, &path).await?;
            requires.push(Required {
                artifact: path,
                prefix: dep.prefix.clone(),
            });
        }
        Ok(requires)
    }

    /// Rebuilds `runtime version` under `opts.variations` and compares the result with a
    /// reference: the artifact `store` holds, or (`opts.twice`) a normal first build made just
    /// before — what `packager build` makes. The runtimes it is built against come from
    /// `store` in both cases, as in a build.
    pub async fn reproduce(
        &self,
        runtime: &str,
        version: &str,
        arch: Arch,
        opts: &VerifyOptions,
        store: &impl Store,
    ) -> Result<Verification, Error> {
        let jobs = LoadOptions::default().jobs.max(1);
        let recipe = self.recipe(runtime, version, arch, Some(jobs))?;
        let varied_jobs = opts.variations.jobs(jobs);
        let varied_recipe = self.catalogue.load(
            recipe.runtime.as_str(),
            &recipe.version,
            &LoadOptions {
                jobs: varied_jobs,
                arch: recipe.arch,
            },
        )?;
        let (plan, index) = self.plan_of(&recipe, store).await?;
        let job = &plan.jobs[index];
        let reference = match opts.twice {
            true => Reference::FirstBuild,
            false => Reference::Published,
        };
        if reference == Reference::Published {
            match job.status {
                Status::Build => {
                    return Err(not_in_store(
                        store,
                        &recipe,
                        &format!(
                            "or build it twice: `packager verify {runtime} {version} --twice`"
                        ),
                    ));
                }
                Status::Conflict => self.reporter.warn(&format!(
                    "{}: {}; the rebuild may differ for that reason alone",
                    job.name(),
                    job.reason
                )),
                _ => {}
            }
        }
        let work = self.work_dir("verify-")?;
        let requires = self
            .download_requires(&plan, index, store, work.path())
            .await?;
        let docker = self.connect_for(recipe.arch).await?;
        let capacity = docker.capacity().await?;
        // Never through the compiler cache: an artifact must be the same with and without it,
        // and a rebuild from a clean slate is what proves that.
        let normal_opts = BuildOptions {
            compiler_cache: false,
            ..self.options(false, requires)
        };
        let varied_opts = BuildOptions {
            surroundings: opts.variations.surroundings(),
            ..normal_opts.clone()
        };
        // The reference: a first build, or the published artifact. `_first` holds the first
        // build's folder until the comparison is done.
        let (reference_path, _first) = match reference {
            Reference::FirstBuild => {
                let builder = self.builder_with(&docker, jobs, 1, capacity);
                let first = builder.build(&recipe, &normal_opts).await?;
                (first.artifact.path.clone(), Some(first))
            }
            Reference::Published => {
                let dest = work.path().join(&recipe.artifact);
                store
                    .download(&recipe.stack, &recipe.artifact, &dest)
                    .await?;
                (dest, None)
            }
        };
        let builder = self.builder_with(&docker, varied_jobs, 1, capacity);
        let rebuilt = builder.build(&varied_recipe, &varied_opts).await?;
        let path = rebuilt.artifact.path.clone();
        let (left, right) = (reference_path.clone(), path.clone());
        let comparison =
            tokio::task::spawn_blocking(move || crate::reproduce::compare(&left, &right))
                .await
                .expect("compare does not panic")?;
        let kept = match &opts.keep_artifacts {
            Some(dir) => Some(keep_pair(dir, &recipe.artifact, &reference_path, &path)?),
            None => None,
        };
        Ok(Verification {
            runtime: recipe.runtime.to_string(),
            version: recipe.version.to_string(),
            reference,
            variations: opts.variations.applied(jobs),
            comparison,
            kept,
        })
    }

    /// [`Pipeline::reproduce`] for every version of `runtime` (of every runtime when `None`),
    /// one after the other: `(runtime, version, result)` in catalogue order.
    pub async fn reproduce_all(
        &self,
        runtime: Option<&str>,
        arch: Arch,
        opts: &VerifyOptions,
        store: &impl Store,
    ) -> Result<Vec<(String, String, Result<Verification, Error>)>, Error> {
        let entries: Vec<_> = match runtime {
            Some(name) => vec![self.catalogue.runtime(name)?],
            None => self.catalogue.runtimes().collect(),
        };
        let mut results = Vec::new();
        for e in entries {
            for (v, _) in &e.versions {
                let version = v.to_string();
                let result = self
                    .reproduce(e.name.as_str(), &version, arch, opts, store)
                    .await;
                results.push((e.name.to_string(), version, result));
            }
        }
        Ok(results)
    }

    /// Tests an artifact already made — `artifact`, or the one `store` holds — as a build tests
    /// its own (run image, required runtimes, linkage gate, test commands). Returns the log.
    pub async fn retest(
        &self,
        runtime: &str,
        version: &str,
        arch: Arch,
        artifact: Option<&Path>,
        store: &impl Store,
    ) -> Result<PathBuf, Error> {
        let recipe = self.recipe(runtime, version, arch, None)?;
        let docker = self.connect_for(recipe.arch).await?;
        let jobs = LoadOptions::default().jobs.max(1);
        let builder = self.builder(&docker, jobs, 1).await?;
        let dir = self.work_dir("test-")?;
        let artifact = match artifact {
            Some(a) => a.to_path_buf(),
            None => {
                if store
                    .lookup(&recipe.stack, &recipe.artifact)
                    .await?
                    .is_none()
                {
                    return Err(not_in_store(store, &recipe, "or pass --artifact FILE"));
                }
                let path = dir.path().join(&recipe.artifact);
                store
                    .download(&recipe.stack, &recipe.artifact, &path)
                    .await?;
                path
            }
        };
        let requires = self.required_runtimes(&recipe, store, dir.path()).await?;
        let opts = self.options(false, requires);
        Ok(builder.test_artifact(&recipe, &opts, &artifact).await?)
    }
}
