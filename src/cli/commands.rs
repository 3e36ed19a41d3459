//! What each command does, in terms of the library.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use packager::Error;
use packager::cache::Cache;
use packager::checksum::{Algo, hash_file};
use packager::fetch::{Download, Fetcher, RetryPolicy};
use packager::publish::AnyStore;
use packager::recipe::{Catalogue, LoadOptions, Recipe};
use packager::report::Reporter;
use packager::version::Version;

use super::shell::Session;
use super::ui::{Ui, hint_line, render_chain, render_error};
use super::{BuildArgs, CacheCommand, Cli, Command, PlanFormat, ShellArgs, StackCommand};

fn out(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}") {
        // A closed pipe (`packager list | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|source| Error::Io {
            path: "<stdout>".into(),
            source,
        }),
    }
}

/// Runs the parsed command; returns the exit code (0, or a shell's).
pub async fn run(cli: &Cli) -> Result<u8, Error> {
    let g = &cli.global;
    let ui = Arc::new(Ui::new(g));
    let done = match &cli.command {
        Command::Shell(args) => return shell(cli, ui, args).await,
        Command::Verify {
            runtime,
            version,
            all,
            twice,
            store,
        } => {
            return match (runtime, version, all) {
                (Some(runtime), Some(version), false) => {
                    verify(cli, ui, runtime, version, *twice, store).await
                }
                _ => verify_all(cli, ui, runtime.as_deref(), *twice, store).await,
            };
        }
        Command::Test {
            runtime,
            version,
            artifact,
            store,
        } => {
            test_again(
                cli,
                ui.clone(),
                runtime,
                version,
                artifact.as_deref(),
                store,
            )
            .await
        }
        Command::List { runtime, json } => list(&g.recipes, runtime.as_deref(), *json),
        Command::Show { runtime, version } => {
            let catalogue = Catalogue::open(&g.recipes)?;
            let version: Version = version.parse().map_err(|e| Error::Usage {
                message: format!("{e}"),
                hint: Some(format!(
                    "`packager show` takes one exact version; `packager list {runtime}` shows them"
                )),
            })?;
            let recipe = catalogue.load(runtime, &version, &LoadOptions::default())?;
            warn_recipe(&*ui, &recipe);
            out(recipe.to_toml().trim_end())
        }
        Command::Fetch {
            runtime,
            selectors,
            jobs,
        } => {
            let catalogue = Catalogue::open(&g.recipes)?;
            let recipes = select(&catalogue, runtime, selectors)?;
            for r in &recipes {
                warn_recipe(&*ui, r);
            }
            let fetcher = fetcher(g, ui.clone())?;
            let mut seen = BTreeSet::new();
            let downloads: Vec<Download> = recipes
                .iter()
                .flat_map(Download::for_recipe)
                .filter(|d| seen.insert(d.checksum.clone()))
                .collect();
            let results = fetcher.fetch_all(&downloads, *jobs).await;
            let total = results.len();
            let mut errors = Vec::new();
            for r in results {
                match r {
                    Ok(f) => out(&format!("{}  {}", f.path.display(), f.checksum))?,
                    Err(e) => errors.push(Error::from(e)),
                }
            }
            match errors.len() {
                0 => Ok(()),
                1 => Err(errors.pop().expect("one error")),
                n => {
                    for e in &errors {
                        render_error(e);
                    }
                    Err(Error::Several { failed: n, total })
                }
            }
        }
        Command::Build {
            selectors,
            all,
            build: args,
        } => build(cli, ui, selectors, *all, args).await,
        Command::Stack { command } => stack_command(cli, ui, command).await,
        Command::Plan {
            selectors,
            all,
            force,
            json,
            format,
            store,
        } => {
            let format = if *json { PlanFormat::Json } else { *format };
            let store = store.open().await?;
            plan_command(cli, selectors, *all, *force, format, &store).await
        }
        Command::Inventory {
            runtime,
            stack,
            rebuild,
            store,
        } => {
            let store = store.open().await?;
            inventory_command(
                cli,
                ui,
                runtime.as_deref(),
                stack.as_deref(),
                *rebuild,
                store,
            )
            .await
        }
        Command::Cache { command } => cache_command(cli, ui, command).await,
        Command::Checksum { target } => {
            let is_url = target.starts_with("http://") || target.starts_with("https://");
            let (hex, _) = if is_url {
                fetcher(g, ui.clone())?.checksum_url(target).await?
            } else {
                let path = Path::new(target);
                hash_file(Algo::Sha256, path).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?
            };
            out(&format!("{hex}  {}", packager::redact::redact_url(target)))
        }
    };
    done.map(|()| 0)
}

fn fetcher(g: &super::Global, ui: Arc<Ui>) -> Result<Fetcher, Error> {
    Ok(Fetcher::new(
        Cache::new(&g.cache),
        g.mirrors.clone(),
        RetryPolicy::default(),
        ui,
    )?)
}

fn warn_recipe(ui: &dyn Reporter, recipe: &Recipe) {
    for w in &recipe.warnings {
        ui.warn(w);
    }
}

/// Loads the recipes a runtime and its selectors pick (every version when no selector).
fn select(
    catalogue: &Catalogue,
    runtime: &str,
    selectors: &[String],
) -> Result<Vec<Recipe>, Error> {
    let mut versions = BTreeSet::new();
    if selectors.is_empty() {
        versions.extend(catalogue.select(runtime, None)?);
    }
    for s in selectors {
        versions.extend(catalogue.select(runtime, Some(s))?);
    }
    let opts = LoadOptions::default();
    versions
        .iter()
        .map(|v| catalogue.load(runtime, v, &opts).map_err(Error::from))
        .collect()
}

fn list(recipes: &Path, runtime: Option<&str>, json: bool) -> Result<(), Error> {
    let catalogue = Catalogue::open(recipes)?;
    let entries: Vec<_> = match runtime {
        Some(name) => vec![catalogue.runtime(name)?],
        None => catalogue.runtimes().collect(),
    };
    if json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "runtime": e.name,
                    "versions": e.versions.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return out(&serde_json::to_string_pretty(&value).expect("JSON of strings"));
    }
    for e in entries {
        for (v, _) in &e.versions {
            out(&format!("{} {v}", e.name))?;
        }
    }
    Ok(())
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:08x}",
        (nanos as u64 ^ (std::process::id() as u64) << 32) & 0xffff_ffff
    )
}

/// A builder for one recipe, connected to the engine (orphans of killed runs removed).
struct Setup {
    recipe: Recipe,
    builder: packager::build::Builder,
    source_date_epoch: u64,
}

async fn setup(
    cli: &Cli,
    ui: &Arc<Ui>,
    runtime: &str,
    version: &str,
    make_jobs: Option<usize>,
) -> Result<Setup, Error> {
    use packager::build::Builder;
    let g = &cli.global;
    let catalogue = Catalogue::open(&g.recipes)?;
    let version: Version = version.parse().map_err(|e| Error::Usage {
        message: format!("{e}"),
        hint: Some(format!("`packager list {runtime}` shows the versions")),
    })?;
    let jobs = make_jobs
        .unwrap_or_else(|| LoadOptions::default().jobs)
        .max(1);
    let recipe = catalogue.load(runtime, &version, &LoadOptions { jobs })?;
    warn_recipe(&**ui, &recipe);
    let source_date_epoch = source_date_epoch()?;
    let docker = engine(ui).await?;
    let limits = limit_settings(g, &docker, jobs, 1).await?;
    let builder = Builder {
        docker,
        fetcher: Arc::new(fetcher(g, ui.clone())?),
        recipes_dir: g.recipes.clone(),
        reporter: ui.clone(),
        run_id: run_id(),
        jobs,
        limits,
    };
    Ok(Setup {
        recipe,
        builder,
        source_date_epoch,
    })
}

/// The command line's limits, and the defaults for `parallel` builds of `jobs` each on this
/// engine.
async fn limit_settings(
    g: &super::Global,
    docker: &packager::docker::Docker,
    jobs: usize,
    parallel: usize,
) -> Result<packager::build::LimitSettings, Error> {
    let (memory, cpus) = docker.capacity().await?;
    Ok(packager::build::LimitSettings {
        overrides: g.limits(),
        defaults: packager::sandbox::default_limits(memory, cpus, jobs, parallel),
    })
}

/// Connects to the engine and removes the containers of killed runs.
async fn engine(ui: &Ui) -> Result<packager::docker::Docker, Error> {
    let docker = packager::docker::Docker::connect().await?;
    let orphans = packager::build::remove_orphans(&docker).await?;
    if !orphans.is_empty() {
        ui.info(&format!(
            "removed {} container(s) left by killed runs",
            orphans.len()
        ));
    }
    Ok(docker)
}

/// `SOURCE_DATE_EPOCH` (or the fixed default).
fn source_date_epoch() -> Result<u64, Error> {
    packager::package::mtime_from_source_date_epoch(
        std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(),
    )
    .map_err(|e| Error::Usage {
        message: e.to_string(),
        hint: Some("SOURCE_DATE_EPOCH must be a number of seconds since 1970".into()),
    })
}

/// `packager build SELECTORS…`: plan, then run the jobs to build (dependencies first, `-j` at a
/// time), each built, tested, published and added to the inventory; then a report.
async fn build(
    cli: &Cli,
    ui: Arc<Ui>,
    selectors: &[String],
    all: bool,
    args: &BuildArgs,
) -> Result<(), Error> {
    use packager::build::{BuildError, BuildOptions, Builder, SOURCE_DIR, job_name};
    use packager::docker::ContainerGuard;
    use packager::plan::{KEY_METADATA, Status};
    use packager::publish::{Artifact, Outcome, Store, inventory};
    use packager::schedule::{Made, execute};

    let g = &cli.global;
    let store = args.store.open().await?;
    let cores = LoadOptions::default().jobs;
    let plan = make_plan(g, selectors, all, args.force, &store, cores).await?;
    for j in &plan.jobs {
        warn_recipe(&*ui, &j.recipe);
    }
    let to_build = plan
        .jobs
        .iter()
        .filter(|j| j.status == Status::Build)
        .count();
    if args.shell_on_failure && to_build > 1 {
        return Err(Error::Usage {
            message: format!(
                "--shell-on-failure needs exactly one job to build, and this selection builds {to_build}"
            ),
            hint: Some(
                "select one version (`packager build RUNTIME VERSION --shell-on-failure`), or debug a failed job with `packager shell`".into(),
            ),
        });
    }
    let source_date_epoch = source_date_epoch()?;
    let catalogue = Catalogue::open(&g.recipes)?;
    let run_id = run_id();
    let parallel = args.jobs.unwrap_or(cores.min(4)).max(1);

    // The engine is needed only when something is built.
    let docker = if to_build > 0 {
        Some(engine(&ui).await?)
    } else {
        None
    };
    let arch = match &docker {
        Some(d) => d.engine().await?.arch.as_str().to_string(),
        None => host_arch().to_string(),
    };
    let capacity = match &docker {
        Some(d) => d.capacity().await?,
        None => (0, 1),
    };
    let fetcher = Arc::new(fetcher(g, ui.clone())?);
    let work = tempfile::Builder::new()
        .prefix(&format!("run-{run_id}-"))
        .tempdir_in({
            let d = g.cache.join("work");
            fs_err::create_dir_all(&d).map_err(|source| Error::Io {
                path: d.clone(),
                source,
            })?;
            d
        })
        .map_err(|source| Error::Io {
            path: g.cache.join("work"),
            source,
        })?;

    let plan_ref = &plan;
    let run_job = |slot: packager::schedule::Slot| {
        let plan = plan_ref;
        let job = &plan.jobs[slot.index];
        let (ui, store, fetcher, docker, catalogue, arch) = (
            ui.clone(),
            &store,
            fetcher.clone(),
            docker.clone(),
            &catalogue,
            &arch,
        );
        let (work, run_id) = (work.path().to_path_buf(), run_id.clone());
        async move {
            let docker = docker.expect("the engine is connected when something is built");
            let make_jobs = args.make_jobs.unwrap_or(slot.make_jobs).max(1);
            let recipe = catalogue.load(
                job.recipe.runtime.as_str(),
                &job.recipe.version,
                &LoadOptions { jobs: make_jobs },
            )?;
            // What it is built against, from the store (built earlier in this run, or before).
            let mut requires = Vec::new();
            for &d in &job.deps {
                let dep = &plan.jobs[d].recipe;
                let path = work.join(format!("{}-{}", dep.stack, dep.artifact));
                packager::publish::download_once(store, &dep.stack, &dep.artifact, &path).await?;
                requires.push(packager::build::Required {
                    artifact: path,
                    prefix: dep.prefix.clone(),
                });
            }
            let builder = Builder {
                docker: docker.clone(),
                fetcher,
                recipes_dir: g.recipes.clone(),
                reporter: ui.clone(),
                run_id,
                jobs: make_jobs,
                limits: packager::build::LimitSettings {
                    overrides: g.limits(),
                    defaults: packager::sandbox::default_limits(
                        capacity.0, capacity.1, make_jobs, parallel,
                    ),
                },
            };
            let opts = BuildOptions {
                keep: args.keep,
                source_date_epoch,
                requires,
            };
            let on_failure = async |container: &ContainerGuard, error: &BuildError| {
                if !args.shell_on_failure {
                    return;
                }
                ui.clear_steps();
                render_chain(error, None);
                let session = Session {
                    container: container.id(),
                    working_dir: SOURCE_DIR,
                    command: None,
                    prompt_tag: job_name(&recipe),
                };
                let what = match error {
                    BuildError::Phase { phase, .. } => format!("{phase} failed"),
                    _ => "the build failed".into(),
                };
                let banner = || {
                    ui.note(&format!(
                        "{} where {what}, {SOURCE_DIR}, prefix {}; exit or Ctrl-D to leave (the build then fails)",
                        job_name(&recipe),
                        recipe.prefix
                    ))
                };
                if let Err(e) = session.run(&builder.docker, banner).await {
                    render_error(&e);
                }
            };
            let built = builder.build_with(&recipe, &opts, on_failure).await?;

            let mut metadata = built.provenance(&recipe);
            metadata.insert("arch".into(), arch.clone());
            metadata.insert(KEY_METADATA.into(), job.key.clone());
            metadata.insert("revision".into(), recipe.revision.to_string());
            let published = store
                .publish(
                    &Artifact {
                        path: built.artifact.path.clone(),
                        name: recipe.artifact.clone(),
                        stack: recipe.stack.clone(),
                        sha256: built.artifact.sha256.clone(),
                        size: built.artifact.size,
                        metadata: metadata.clone(),
                    },
                    args.force,
                )
                .await?;
            match published.outcome {
                Outcome::Published => ui.info(&format!("published {}", published.location)),
                Outcome::AlreadyPublished => ui.warn(&format!(
                    "{} was already published with the same content",
                    published.location
                )),
                Outcome::Replaced => ui.warn(&format!("replaced {} (--force)", published.location)),
            }
            // The artifact is in the store (and verified) before its inventory entry is written.
            let entry = inventory::Entry {
                version: recipe.version.to_string(),
                os: "linux".into(),
                arch: arch.clone(),
                url: store.public_url(&recipe.stack, &recipe.artifact),
                checksum: format!("sha256:{}", built.artifact.sha256),
                metadata: inventory::entry_metadata(&metadata),
            };
            inventory::add(store, &recipe.stack, recipe.runtime.as_str(), entry).await?;
            if !args.json {
                out(&format!(
                    "{}  {}  sha256:{}",
                    published.location, built.artifact.size, built.artifact.sha256
                ))?;
            }
            Ok::<_, Error>(Made {
                size: built.artifact.size,
                sha256: built.artifact.sha256.clone(),
                location: published.location,
            })
        }
    };
    let (report, mut errors) = execute(&plan, parallel, cores, args.fail_fast, run_job).await;
    ui.clear_steps();

    if args.json {
        out(&serde_json::to_string_pretty(&report).expect("the report serialises"))?;
    }
    // The summary, when there is more than one job to tell about.
    if plan.jobs.len() > 1 || plan.jobs.iter().any(|j| j.status != Status::Build) {
        ui.summary(&report, parallel);
    }
    if report.ok() {
        return Ok(());
    }
    // One failure is shown in full (phase, command, log tail, hint); several are each shown,
    // then counted.
    let mut all: Vec<Error> = plan
        .jobs
        .iter()
        .filter(|j| j.status == Status::Conflict)
        .map(|j| Error::Conflict {
            job: j.name(),
            reason: j.reason.clone(),
        })
        .collect();
    let conflicts = all.len();
    all.extend(errors.drain(..).map(|(_, e)| e));
    let failed = report
        .jobs
        .iter()
        .filter(|j| {
            !matches!(
                j.outcome,
                packager::schedule::Outcome::Built | packager::schedule::Outcome::Skipped
            )
        })
        .count();
    if all.len() == 1 && failed == 1 {
        return Err(all.pop().expect("one error"));
    }
    for e in &all {
        render_error(e);
    }
    Err(Error::Jobs {
        failed,
        total: report.jobs.len(),
        conflicts,
    })
}

async fn shell(cli: &Cli, ui: Arc<Ui>, args: &ShellArgs) -> Result<u8, Error> {
    use packager::build::{BuildOptions, Phase, RUNTIME_LABEL, SOURCE_DIR, VERSION_LABEL, short};
    use packager::docker::{Docker, MANAGED_LABEL};

    let command = (!args.command.is_empty()).then_some(args.command.as_slice());
    let exit = |code: i64| u8::try_from(code).unwrap_or(1);
    if let Some(target) = &args.attach {
        let docker = Docker::connect().await?;
        let info = docker
            .inspect_container(target)
            .await?
            .filter(|c| c.labels.contains_key(MANAGED_LABEL))
            .ok_or_else(|| Error::Usage {
                message: format!("no packager container `{target}`"),
                hint: Some(
                    "`docker ps --filter label=packager.managed` lists them; `packager build --keep` and `packager shell --keep` keep one".into(),
                ),
            })?;
        if info.state != "running" {
            docker.start_container(&info.id).await?;
        }
        let label = |key: &str| info.labels.get(key).cloned().unwrap_or_default();
        let job = format!("{} {}", label(RUNTIME_LABEL), label(VERSION_LABEL));
        let session = Session {
            container: &info.id,
            working_dir: SOURCE_DIR,
            command,
            prompt_tag: job.clone(),
        };
        let code = session
            .run(&docker, || {
                ui.note(&format!(
                    "kept container {} of {job}, {SOURCE_DIR}; exit or Ctrl-D to leave",
                    short(&info.id)
                ))
            })
            .await?;
        if session.is_interactive() {
            hint_line(
                ui.is_quiet(),
                &format!(
                    "the container is kept: `docker rm -f {}` when done",
                    short(&info.id)
                ),
            );
        }
        return Ok(exit(code));
    }

    let (Some(runtime), Some(version)) = (&args.runtime, &args.version) else {
        unreachable!("clap requires RUNTIME and VERSION without --attach");
    };
    let Setup {
        recipe,
        builder,
        source_date_epoch,
    } = setup(cli, &ui, runtime, version, args.make_jobs).await?;
    // What it is built against comes from the store, extracted at its prefix as in a build.
    let deps_dir = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let requires = if recipe.build.requires.is_empty() {
        Vec::new()
    } else {
        let store = args.store.open().await?;
        required_runtimes(cli, &recipe, &store, builder.jobs, deps_dir.path()).await?
    };
    let opts = BuildOptions {
        keep: args.keep,
        source_date_epoch,
        requires,
    };
    let until = args.after.map(Phase::from);
    let mut prepared = builder.prepare(&recipe, &opts, until).await?;
    let reached = match (&prepared.failure, prepared.reached) {
        (Some(packager::build::BuildError::Phase { phase, .. }), _) => {
            format!("where {phase} failed")
        }
        (Some(_), _) => "where setting up failed".into(),
        (None, Some(phase)) => format!("after {phase}"),
        (None, None) => "with sources unpacked".into(),
    };
    if let Some(failure) = prepared.failure.take() {
        // Not the end: the shell opens where the failure left the tree.
        ui.clear_steps();
        render_chain(&failure, None);
    }
    let job = packager::build::job_name(&recipe);
    let session = Session {
        container: prepared.container.id(),
        working_dir: SOURCE_DIR,
        command,
        prompt_tag: job.clone(),
    };
    let code = session
        .run(&builder.docker, || {
            ui.note(&format!(
                "{job} {reached}, {SOURCE_DIR}, prefix {}; exit or Ctrl-D to leave{}",
                recipe.prefix,
                if args.keep {
                    " (the container is kept)"
                } else {
                    ""
                }
            ))
        })
        .await;
    if args.keep {
        let id = prepared.container.keep_for_debugging().await?;
        hint_line(
            ui.is_quiet(),
            &format!(
                "the container is kept: `packager shell --attach {}` to come back, `docker rm -f {}` when done",
                short(&id),
                short(&id)
            ),
        );
    } else {
        prepared.container.remove().await?;
    }
    Ok(exit(code?))
}

async fn stack_command(cli: &Cli, ui: Arc<Ui>, command: &StackCommand) -> Result<(), Error> {
    use packager::stack::{ImageSource, Role};
    let recipes = &cli.global.recipes;
    match command {
        StackCommand::List => {
            let stacks = packager::stack::load_all(recipes)?;
            // The engine is optional here: without it, presence is unknown.
            let docker = packager::docker::Docker::connect().await.ok();
            for s in stacks {
                let kind = match &s.build {
                    ImageSource::Prebuilt { image } => format!("image {image}"),
                    ImageSource::Dockerfile { path } => format!("dockerfile {path}"),
                    ImageSource::Bootstrap(b) => format!("bootstrap {} ({})", b.suite, b.variant),
                };
                let mut images = Vec::new();
                for role in [Role::Build, Role::Run] {
                    if role == Role::Run && s.run.is_none() {
                        continue;
                    }
                    let reference = s.image_reference(role);
                    let state = match &docker {
                        Some(d) => match d.image_exists(&reference).await? {
                            true => "present",
                            false => "absent",
                        },
                        None => "engine unreachable",
                    };
                    images.push(format!("{reference} ({state})"));
                }
                out(&format!("{}\t{kind}\t{}", s.name, images.join(", ")))?;
            }
            Ok(())
        }
        StackCommand::Build { name } => {
            let stack = packager::stack::load(recipes, name)?;
            let docker = packager::docker::Docker::connect().await?;
            let job = format!("stack {name}");
            for role in [Role::Build, Role::Run] {
                if role == Role::Run && stack.run.is_none() {
                    continue;
                }
                let step = format!("{role:?}").to_lowercase();
                let started = std::time::Instant::now();
                ui.step_started(&job, &step);
                let image = stack
                    .ensure_image(&docker, role, &mut |line: &str| ui.output(&job, line))
                    .await?;
                ui.step_finished(&job, &step, started.elapsed());
                out(&format!(
                    "{}  {:?}  {}  {} bytes",
                    image.reference, image.outcome, image.id, image.size
                ))?;
            }
            Ok(())
        }
    }
}

async fn inventory_command(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: Option<&str>,
    stack: Option<&str>,
    rebuild: bool,
    store: AnyStore,
) -> Result<(), Error> {
    use packager::publish::{Store, inventory};
    let g = &cli.global;
    if rebuild {
        let stacks = match stack {
            Some(s) => vec![s.to_string()],
            None => packager::stack::stack_names(&g.recipes)?,
        };
        // Entries without a recorded arch get the engine's, or the host's when it is away.
        let arch = match packager::docker::Docker::connect().await {
            Ok(d) => d.engine().await?.arch.as_str().to_string(),
            Err(_) => host_arch().to_string(),
        };
        let known: Vec<String> = Catalogue::open(&g.recipes)?
            .runtimes()
            .map(|r| r.name.to_string())
            .collect();
        for stack in stacks {
            let (rebuilt, skipped) =
                inventory::rebuild(&store, &stack, "linux", &arch, &known).await?;
            for r in rebuilt {
                out(&format!(
                    "{}  {} entr{}",
                    store.public_url(&stack, &format!("inventory/{}.toml", r.runtime)),
                    r.entries,
                    if r.entries == 1 { "y" } else { "ies" }
                ))?;
            }
            for name in skipped {
                ui.warn(&format!(
                    "{stack}/{name} has no runtime/version metadata; left out of the inventories"
                ));
            }
        }
        return Ok(());
    }
    let runtime = runtime.expect("clap requires a runtime without --rebuild");
    let stack = match stack {
        Some(s) => s.to_string(),
        None => {
            let catalogue = Catalogue::open(&g.recipes)?;
            let entry = catalogue.runtime(runtime)?;
            match entry.versions.last() {
                Some((v, _)) => catalogue.load(runtime, v, &LoadOptions::default())?.stack,
                None => packager::recipe::DEFAULT_STACK.to_string(),
            }
        }
    };
    match inventory::read(&store, &stack, runtime).await? {
        Some(inv) => out(inv.to_toml().trim_end()),
        None => Err(Error::Usage {
            message: format!(
                "{} has no inventory for {runtime} on stack {stack}",
                store.describe()
            ),
            hint: Some(format!(
                "`packager build {runtime} VERSION --store {}` publishes one; `--stack` picks another stack",
                store.describe()
            )),
        }),
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Plans a selection against a store.
async fn make_plan(
    g: &super::Global,
    selectors: &[String],
    all: bool,
    force: bool,
    store: &impl packager::publish::Store,
    jobs: usize,
) -> Result<packager::plan::Plan, Error> {
    let source_date_epoch = source_date_epoch()?;
    use packager::plan::{PlanOptions, Selector, parse_selectors, plan};
    let catalogue = Catalogue::open(&g.recipes)?;
    let selection = if all {
        vec![Selector::All]
    } else {
        parse_selectors(selectors, &catalogue)?
    };
    Ok(plan(
        &catalogue,
        &g.recipes,
        &selection,
        store,
        &PlanOptions {
            force,
            jobs,
            source_date_epoch,
        },
    )
    .await?)
}

async fn plan_command(
    cli: &Cli,
    selectors: &[String],
    all: bool,
    force: bool,
    format: PlanFormat,
    store: &AnyStore,
) -> Result<(), Error> {
    use packager::plan::{Status, short_key};
    let plan = make_plan(
        &cli.global,
        selectors,
        all,
        force,
        store,
        LoadOptions::default().jobs,
    )
    .await?;
    match format {
        PlanFormat::Table => {
            let rows: Vec<[String; 6]> = plan
                .jobs
                .iter()
                .map(|j| {
                    [
                        j.recipe.runtime.to_string(),
                        j.recipe.version.to_string(),
                        j.recipe.stack.clone(),
                        short_key(&j.key).to_string(),
                        j.status.name().to_string(),
                        j.reason.clone(),
                    ]
                })
                .collect();
            let header =
                ["RUNTIME", "VERSION", "STACK", "KEY", "STATUS", "REASON"].map(String::from);
            let mut widths = [0usize; 6];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect();
                out(line.join("  ").trim_end())?;
            }
            Ok(())
        }
        PlanFormat::Json => {
            let jobs: Vec<serde_json::Value> = plan
                .jobs
                .iter()
                .map(|j| {
                    serde_json::json!({
                        "runtime": j.recipe.runtime,
                        "version": j.recipe.version.to_string(),
                        "stack": j.recipe.stack,
                        "artifact": j.recipe.artifact,
                        "key": j.key,
                        "status": j.status,
                        "reason": j.reason,
                        "selected": j.selected,
                        "requires": j.deps.iter().map(|&d| plan.jobs[d].name()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            out(
                &serde_json::to_string_pretty(&serde_json::json!({ "jobs": jobs }))
                    .expect("JSON of strings"),
            )
        }
        PlanFormat::GithubMatrix => {
            let include: Vec<serde_json::Value> = plan
                .jobs
                .iter()
                .filter(|j| j.status == Status::Build)
                .map(|j| {
                    serde_json::json!({
                        "runtime": j.recipe.runtime,
                        "version": j.recipe.version.to_string(),
                        "stack": j.recipe.stack,
                    })
                })
                .collect();
            out(
                &serde_json::to_string(&serde_json::json!({ "include": include }))
                    .expect("JSON of strings"),
            )
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

fn human_time(t: Option<std::time::SystemTime>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

async fn cache_command(cli: &Cli, ui: Arc<Ui>, command: &CacheCommand) -> Result<(), Error> {
    use packager::cache::gc;
    let g = &cli.global;
    let cache = Cache::new(&g.cache);
    match command {
        CacheCommand::Status { json, store } => {
            let mut areas = gc::status(&cache).map_err(io_error(&g.cache))?;
            let local = Path::new(store.store.strip_prefix("file://").unwrap_or(&store.store));
            if !store.store.contains("://") || store.store.starts_with("file://") {
                areas.push(gc::local_store_status(local).map_err(io_error(local))?);
            }
            // The engine is optional here: without it, its areas are left out with a warning.
            match packager::docker::Docker::connect().await {
                Ok(docker) => {
                    let mut images = gc::AreaStatus::new("stack-images", None);
                    for image in docker
                        .list_images(&[(packager::stack::STACK_LABEL, None)])
                        .await?
                    {
                        images.add(image.size, None);
                    }
                    areas.push(images);
                    let mut kept = gc::AreaStatus::new("kept-containers", None);
                    for c in docker
                        .list_containers(&[(packager::docker::MANAGED_LABEL, None)])
                        .await?
                    {
                        if c.names
                            .iter()
                            .any(|n| n.starts_with(packager::docker::KEPT_PREFIX))
                        {
                            kept.add(0, None);
                        }
                    }
                    areas.push(kept);
                }
                Err(e) => ui.warn(&format!(
                    "stack images and kept containers not counted: {e}"
                )),
            }
            if *json {
                return out(&serde_json::to_string_pretty(&areas).expect("JSON of plain data"));
            }
            let rows: Vec<[String; 5]> = areas
                .iter()
                .map(|a| {
                    [
                        a.area.clone(),
                        a.entries.to_string(),
                        human_bytes(a.bytes),
                        human_time(a.oldest),
                        human_time(a.newest),
                    ]
                })
                .collect();
            table(&["AREA", "ENTRIES", "SIZE", "OLDEST", "NEWEST"], &rows)
        }
        CacheCommand::Prune {
            older_than,
            max_size,
            dry_run,
            images,
        } => {
            let options = gc::PruneOptions {
                older_than: older_than.map(Into::into),
                max_size: max_size.map(|s| s.as_u64()),
                dry_run: *dry_run,
                now: None,
            };
            let root = cache.root().to_path_buf();
            let report =
                tokio::task::spawn_blocking(move || gc::prune(&Cache::new(root), &options))
                    .await
                    .expect("prune does not panic")
                    .map_err(io_error(&g.cache))?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            for r in &report.removed {
                out(&format!(
                    "{verb} {}  {}  ({})",
                    r.path.display(),
                    human_bytes(r.bytes),
                    r.reason.describe()
                ))?;
            }
            for dir in &report.locked {
                out(&format!(
                    "kept {}  (another process holds its lock)",
                    dir.display()
                ))?;
            }
            let mut freed = report.freed();
            let mut count = report.removed.len();
            if *images {
                let docker = packager::docker::Docker::connect().await?;
                let stacks = packager::stack::load_all(&g.recipes)?;
                let wanted: BTreeSet<&str> = stacks.iter().map(|s| s.hash.as_str()).collect();
                for image in docker
                    .list_images(&[(packager::stack::STACK_LABEL, None)])
                    .await?
                {
                    let hash = image
                        .labels
                        .get(packager::stack::HASH_LABEL)
                        .map(String::as_str)
                        .unwrap_or_default();
                    if wanted.contains(hash) {
                        continue;
                    }
                    let name = image.tags.first().cloned().unwrap_or(image.id.clone());
                    if !*dry_run {
                        let refs = if image.tags.is_empty() {
                            vec![image.id.clone()]
                        } else {
                            image.tags.clone()
                        };
                        for r in refs {
                            docker.remove_image(&r, false).await?;
                        }
                    }
                    out(&format!(
                        "{verb} image {name}  {}  (no stack refers to it)",
                        human_bytes(image.size)
                    ))?;
                    freed += image.size;
                    count += 1;
                }
            }
            let summary = format!(
                "{} {count} entr{}, {} {}",
                if *dry_run { "would remove" } else { "removed" },
                if count == 1 { "y" } else { "ies" },
                human_bytes(freed),
                if *dry_run { "would be freed" } else { "freed" },
            );
            out(&summary)
        }
        CacheCommand::Verify => {
            let root = cache.root().to_path_buf();
            let report = tokio::task::spawn_blocking(move || gc::verify(&Cache::new(root)))
                .await
                .expect("verify does not panic")
                .map_err(io_error(&g.cache))?;
            for c in &report.corrupted {
                ui.warn(&format!(
                    "{} is corrupted (expected {}, computed {}); removed",
                    c.path.display(),
                    c.expected,
                    c.actual
                ));
            }
            for dir in &report.locked {
                ui.info(&format!(
                    "skipped {}: another process holds its lock",
                    dir.display()
                ));
            }
            out(&format!(
                "{} entr{} verified, {} corrupted and removed, {} skipped (locked)",
                report.ok,
                if report.ok == 1 { "y" } else { "ies" },
                report.corrupted.len(),
                report.locked.len()
            ))?;
            if report.corrupted.is_empty() {
                Ok(())
            } else {
                Err(Error::Several {
                    failed: report.corrupted.len(),
                    total: report.ok + report.corrupted.len(),
                })
            }
        }
    }
}

/// Prints rows as a table with a header, columns padded to their widest cell.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Result<(), Error> {
    let header = header.map(String::from);
    let mut widths = [0usize; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out(line.join("  ").trim_end())?;
    }
    Ok(())
}

/// `packager verify --all`: every version, one after the other, then a table; 1 when any is
/// not reproducible or fails.
async fn verify_all(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: Option<&str>,
    twice: bool,
    store: &super::StoreArgs,
) -> Result<u8, Error> {
    let catalogue = Catalogue::open(&cli.global.recipes)?;
    let entries: Vec<_> = match runtime {
        Some(name) => vec![catalogue.runtime(name)?],
        None => catalogue.runtimes().collect(),
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut bad = 0;
    for e in entries {
        for (v, _) in &e.versions {
            let version = v.to_string();
            let (result, detail) =
                match verify_one(cli, &ui, e.name.as_str(), &version, twice, store).await {
                    Ok(c) if c.identical() => (
                        "reproducible".to_string(),
                        format!("sha256:{}", c.right_sha256),
                    ),
                    Ok(c) => {
                        bad += 1;
                        let mut names: Vec<String> = c
                            .only_left
                            .iter()
                            .chain(&c.only_right)
                            .map(|p| p.display().to_string())
                            .chain(c.changed.iter().map(|c| c.path.display().to_string()))
                            .collect();
                        let n = names.len();
                        names.truncate(3);
                        let more = if n > 3 { ", …" } else { "" };
                        (
                            "differs".to_string(),
                            format!("{n} entries: {}{more}", names.join(", ")),
                        )
                    }
                    Err(err) => {
                        bad += 1;
                        render_error(&err);
                        ("failed".to_string(), err.to_string())
                    }
                };
            rows.push([e.name.to_string(), version, result, detail]);
        }
    }
    table(&["RUNTIME", "VERSION", "RESULT", "DETAIL"], &rows)?;
    Ok(if bad == 0 { 0 } else { 1 })
}

/// `packager verify`: 0 when the rebuild is identical, 1 with a report when it is not.
async fn verify(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: &str,
    version: &str,
    twice: bool,
    store: &super::StoreArgs,
) -> Result<u8, Error> {
    let comparison = verify_one(cli, &ui, runtime, version, twice, store).await?;
    let what = if twice {
        "the first build"
    } else {
        "the published artifact"
    };
    if comparison.identical() {
        out(&format!(
            "{runtime} {version} is reproducible: the rebuild is identical to {what} (sha256:{})",
            comparison.right_sha256
        ))?;
        return Ok(0);
    }
    out(&format!(
        "{runtime} {version} is not reproducible: {what} is sha256:{}, the rebuild sha256:{}",
        comparison.left_sha256, comparison.right_sha256
    ))?;
    for p in &comparison.only_left {
        out(&format!("  only in {what}: {}", p.display()))?;
    }
    for p in &comparison.only_right {
        out(&format!("  only in the rebuild: {}", p.display()))?;
    }
    for c in &comparison.changed {
        out(&format!(
            "  differs: {} ({})",
            c.path.display(),
            c.what.join(", ")
        ))?;
        if let Some(diff) = &c.diff {
            for line in diff.lines() {
                out(&format!("    {line}"))?;
            }
        }
    }
    if comparison.only_left.is_empty()
        && comparison.only_right.is_empty()
        && comparison.changed.is_empty()
    {
        out("  every entry is the same: the difference is in the archive's metadata")?;
    }
    Ok(1)
}

/// Rebuilds one version and compares it with the reference (the store's, or a first build).
async fn verify_one(
    cli: &Cli,
    ui: &Arc<Ui>,
    runtime: &str,
    version: &str,
    twice: bool,
    store: &super::StoreArgs,
) -> Result<packager::verify::Comparison, Error> {
    use packager::build::BuildOptions;
    use packager::publish::Store;
    let setup = setup(cli, ui, runtime, version, None).await?;
    let recipe = &setup.recipe;
    if !recipe.build.requires.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "{runtime} {version} is built against other runtimes; `packager verify` does not rebuild those yet"
            ),
            hint: Some("verify a version without `requires`".into()),
        });
    }
    let opts = BuildOptions {
        keep: false,
        source_date_epoch: setup.source_date_epoch,
        requires: Vec::new(),
    };
    let work_dir = cli.global.cache.join(packager::cache::WORK);
    fs_err::create_dir_all(&work_dir).map_err(io_error(&work_dir))?;
    // The reference: the published artifact, or a first build.
    let reference_dir = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(&work_dir)
        .map_err(io_error(&work_dir))?;
    let (reference, _first) = if twice {
        let first = setup.builder.build(recipe, &opts).await?;
        let path = first.artifact.path.clone();
        (path, Some(first))
    } else {
        let store = store.open().await?;
        let dest = reference_dir.path().join(&recipe.artifact);
        store
            .download(&recipe.stack, &recipe.artifact, &dest)
            .await?;
        (dest, None)
    };
    let rebuilt = setup.builder.build(recipe, &opts).await?;
    let path = rebuilt.artifact.path.clone();
    let comparison =
        tokio::task::spawn_blocking(move || packager::verify::compare(&reference, &path))
            .await
            .expect("compare does not panic")?;
    Ok(comparison)
}

/// The artifacts of the runtimes `recipe` is built against, downloaded from `store` into `dir`,
/// each with the prefix it unpacks at. A requirement the store does not hold is a usage error.
async fn required_runtimes(
    cli: &Cli,
    recipe: &Recipe,
    store: &packager::publish::AnyStore,
    jobs: usize,
    dir: &std::path::Path,
) -> Result<Vec<packager::build::Required>, Error> {
    use packager::publish::Store;
    let plan = make_plan(
        &cli.global,
        &[recipe.runtime.to_string(), recipe.version.to_string()],
        false,
        false,
        store,
        jobs,
    )
    .await?;
    let job = plan
        .jobs
        .iter()
        .find(|j| j.selected)
        .expect("the plan holds the selected job");
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
        requires.push(packager::build::Required {
            artifact: path,
            prefix: dep.prefix.clone(),
        });
    }
    Ok(requires)
}

/// `packager test`: tests a published artifact (or a file) again without rebuilding it.
async fn test_again(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: &str,
    version: &str,
    artifact: Option<&std::path::Path>,
    store: &super::StoreArgs,
) -> Result<(), Error> {
    use packager::publish::Store;
    let Setup {
        recipe,
        builder,
        source_date_epoch,
    } = setup(cli, &ui, runtime, version, None).await?;
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let store = store.open().await?;
    let artifact = match artifact {
        Some(a) => a.to_path_buf(),
        None => {
            if store
                .lookup(&recipe.stack, &recipe.artifact)
                .await?
                .is_none()
            {
                return Err(Error::Usage {
                    message: format!(
                        "{} does not hold {}/{}",
                        store.describe(),
                        recipe.stack,
                        recipe.artifact
                    ),
                    hint: Some(format!(
                        "build it first (`packager build {runtime} {version}`), or pass --artifact FILE"
                    )),
                });
            }
            let path = dir.path().join(&recipe.artifact);
            store
                .download(&recipe.stack, &recipe.artifact, &path)
                .await?;
            path
        }
    };
    let requires = if recipe.build.requires.is_empty() {
        Vec::new()
    } else {
        required_runtimes(cli, &recipe, &store, builder.jobs, dir.path()).await?
    };
    let opts = packager::build::BuildOptions {
        keep: false,
        source_date_epoch,
        requires,
    };
    let log = builder.test_artifact(&recipe, &opts, &artifact).await?;
    ui.note(&format!(
        "{} passed its test ({}); log: {}",
        packager::build::job_name(&recipe),
        artifact.display(),
        log.display()
    ));
    Ok(())
}
