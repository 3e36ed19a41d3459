//! What each command does, in terms of the library: parse what the library cannot (versions,
//! `SOURCE_DATE_EPOCH`), call it, print its results. Nothing here builds, publishes or decides.

mod build;
mod shell;
mod stores;
mod verify;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use packager::Error;
use packager::cache::Cache;
use packager::checksum::{Algo, hash_file};
use packager::fetch::{Download, Fetcher, RetryPolicy};
use packager::pipeline::{Pipeline, Settings};
use packager::recipe::{Catalogue, LoadOptions, Recipe};
use packager::report::Reporter;
use packager::version::Version;

use super::ui::{Ui, render_error};
use super::{Cli, Command, PlanFormat};

/// Prints a line of data on stdout; a closed pipe (`packager list | head`) is the reader's
/// choice, not an error.
pub fn out(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}") {
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
        Command::Shell(args) => return shell::shell(cli, ui, args).await,
        Command::Verify {
            runtime,
            version,
            all,
            twice,
            vary,
            keep_artifacts,
            json,
            arch,
            store,
        } => {
            let opts = verify::options(*twice, vary, keep_artifacts.clone())?;
            let pipeline = pipeline(cli, &ui)?;
            let store = store.open().await?;
            let arch = arch.get();
            let how = verify::How {
                opts: &opts,
                json: *json,
                ui: &ui,
            };
            return match (runtime, version, all) {
                (Some(runtime), Some(version), false) => {
                    verify::verify(&pipeline, runtime, version, arch, &how, &store).await
                }
                _ => verify::verify_all(&pipeline, runtime.as_deref(), arch, &how, &store).await,
            };
        }
        Command::Test {
            runtime,
            version,
            artifact,
            arch,
            store,
        } => {
            let pipeline = pipeline(cli, &ui)?;
            let store = store.open().await?;
            let what = (runtime.as_str(), version.as_str(), arch.get());
            verify::test_again(&pipeline, &ui, what, artifact.as_deref(), &store).await
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
        } => fetch(cli, ui, runtime, selectors, *jobs).await,
        Command::Build {
            selectors,
            all,
            build: args,
        } => build::build(cli, ui, selectors, *all, args).await,
        Command::Stack { command } => stores::stack(cli, ui, command).await,
        Command::Plan {
            selectors,
            all,
            force,
            json,
            format,
            arch,
            store,
        } => {
            let format = if *json { PlanFormat::Json } else { *format };
            let store = store.open().await?;
            build::plan(
                cli,
                &ui,
                (selectors, *all),
                *force,
                format,
                &arch.arches(),
                &store,
            )
            .await
        }
        Command::Inventory {
            runtime,
            stack,
            rebuild,
            store,
        } => {
            let store = store.open().await?;
            stores::inventory(
                cli,
                ui,
                runtime.as_deref(),
                stack.as_deref(),
                *rebuild,
                store,
            )
            .await
        }
        Command::Cache { command } => stores::cache(cli, ui, command).await,
        Command::Checksum { target } => {
            let is_url = target.starts_with("http://") || target.starts_with("https://");
            let (hex, _) = if is_url {
                fetcher(g, ui.clone())?.checksum_url(target).await?
            } else {
                let path = Path::new(target);
                hash_file(Algo::Sha256, path).map_err(io_error(path))?
            };
            out(&format!("{hex}  {}", packager::redact::redact_url(target)))
        }
    };
    done.map(|()| 0)
}

/// The library's pipeline with this command line's settings.
fn pipeline(cli: &Cli, ui: &Arc<Ui>) -> Result<Pipeline, Error> {
    let g = &cli.global;
    let settings = Settings {
        recipes_dir: g.recipes.clone(),
        cache_dir: g.cache.clone(),
        mirrors: g.mirrors.clone(),
        limits: g.limits(),
        source_date_epoch: source_date_epoch()?,
        engines: g.engines(),
        egress_test_hosts: g.egress_test_hosts.clone(),
    };
    Pipeline::new(settings, ui.clone())
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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prints a table on stdout.
fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Result<(), Error> {
    out(super::ui::table(header, rows).trim_end_matches('\n'))
}

/// `packager fetch`: every source and resource of the selected versions into the cache, each
/// download once.
async fn fetch(
    cli: &Cli,
    ui: Arc<Ui>,
    runtime: &str,
    selectors: &[String],
    jobs: usize,
) -> Result<(), Error> {
    let catalogue = Catalogue::open(&cli.global.recipes)?;
    let recipes = select(&catalogue, runtime, selectors)?;
    for r in &recipes {
        warn_recipe(&*ui, r);
    }
    let fetcher = fetcher(&cli.global, ui.clone())?;
    let mut seen = BTreeSet::new();
    let downloads: Vec<Download> = recipes
        .iter()
        .flat_map(Download::for_recipe)
        .filter(|d| seen.insert(d.checksum.clone()))
        .collect();
    let results = fetcher.fetch_all(&downloads, jobs).await;
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
    #[derive(serde::Serialize)]
    struct Listed {
        runtime: String,
        versions: Vec<String>,
    }
    let catalogue = Catalogue::open(recipes)?;
    let entries: Vec<_> = match runtime {
        Some(name) => vec![catalogue.runtime(name)?],
        None => catalogue.runtimes().collect(),
    };
    if json {
        let listed: Vec<Listed> = entries
            .iter()
            .map(|e| Listed {
                runtime: e.name.to_string(),
                versions: e.versions.iter().map(|(v, _)| v.to_string()).collect(),
            })
            .collect();
        return out(&serde_json::to_string_pretty(&listed).expect("JSON of strings"));
    }
    for e in entries {
        for (v, _) in &e.versions {
            out(&format!("{} {v}", e.name))?;
        }
    }
    Ok(())
}
