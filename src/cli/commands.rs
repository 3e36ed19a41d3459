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
use super::{Cli, Command};

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
