//! What each command does, in terms of the library.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use packager::Error;
use packager::cache::Cache;
use packager::checksum::{Algo, hash_file};
use packager::fetch::{Download, Fetcher, RetryPolicy};
use packager::recipe::{Catalogue, LoadOptions, Recipe};
use packager::report::Reporter;
use packager::version::Version;

use super::ui::{Ui, render_error};
use super::{BuildArgs, Cli, Command, StackCommand};

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

/// Runs the parsed command.
pub async fn run(cli: &Cli) -> Result<(), Error> {
    let g = &cli.global;
    let ui = Arc::new(Ui::new(g));
    match &cli.command {
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
            runtime,
            version,
            build: args,
        } => build(cli, ui, runtime, version, args).await,
        Command::Stack { command } => stack_command(cli, ui, command).await,
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
    }
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

async fn build(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: &str,
    version: &str,
    args: &BuildArgs,
) -> Result<(), Error> {
    use packager::build::{BuildOptions, Builder, remove_orphans};
    use packager::publish::{AnyStore, Artifact, Outcome, Store};

    let g = &cli.global;
    let store = AnyStore::open_with(&args.store, args.s3.options()).await?;
    let catalogue = Catalogue::open(&g.recipes)?;
    let version: Version = version.parse().map_err(|e| Error::Usage {
        message: format!("{e}"),
        hint: Some(format!("`packager list {runtime}` shows the versions")),
    })?;
    let jobs = args
        .make_jobs
        .unwrap_or_else(|| LoadOptions::default().jobs)
        .max(1);
    let recipe = catalogue.load(runtime, &version, &LoadOptions { jobs })?;
    warn_recipe(&*ui, &recipe);
    let source_date_epoch = packager::package::mtime_from_source_date_epoch(
        std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(),
    )
    .map_err(|e| Error::Usage {
        message: e.to_string(),
        hint: Some("SOURCE_DATE_EPOCH must be a number of seconds since 1970".into()),
    })?;

    let docker = packager::docker::Docker::connect().await?;
    let orphans = remove_orphans(&docker).await?;
    if !orphans.is_empty() {
        ui.info(&format!(
            "removed {} container(s) left by killed runs",
            orphans.len()
        ));
    }
    let builder = Builder {
        docker: docker.clone(),
        fetcher: Arc::new(fetcher(g, ui.clone())?),
        recipes_dir: g.recipes.clone(),
        reporter: ui.clone(),
        run_id: run_id(),
        jobs,
    };
    let opts = BuildOptions {
        keep: args.keep,
        source_date_epoch,
    };
    let built = builder.build(&recipe, &opts).await?;

    let published = store
        .publish(
            &Artifact {
                path: built.artifact.path.clone(),
                name: recipe.artifact.clone(),
                stack: recipe.stack.clone(),
                sha256: built.artifact.sha256.clone(),
                size: built.artifact.size,
                metadata: built.provenance(&recipe),
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
    out(&format!(
        "{}  {}  sha256:{}",
        published.location, built.artifact.size, built.artifact.sha256
    ))
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
