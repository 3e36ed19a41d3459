//! The commands about what packager keeps: stacks and their images, inventories in a store,
//! the cache.

use std::path::Path;
use std::sync::Arc;

use packager::Error;
use packager::cache::Cache;
use packager::publish::AnyStore;
use packager::recipe::{Catalogue, LoadOptions};
use packager::report::Reporter;

use super::{io_error, out, print_table};
use crate::cli::ui::{Ui, human_bytes};
use crate::cli::{CacheCommand, Cli, StackCommand};

fn human_time(t: Option<std::time::SystemTime>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// `packager stack list|build`.
pub async fn stack(cli: &Cli, ui: Arc<Ui>, command: &StackCommand) -> Result<(), Error> {
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

/// `packager inventory`: print one inventory, or rebuild every inventory from what the
/// store holds.
pub async fn inventory(
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
            Ok(d) => d.engine().await?.arch,
            Err(_) => packager::arch::Arch::host(),
        };
        let known: Vec<String> = Catalogue::open(&g.recipes)?
            .runtimes()
            .map(|r| r.name.to_string())
            .collect();
        for stack in stacks {
            let (rebuilt, skipped) =
                inventory::rebuild(&store, &stack, "linux", arch, &known).await?;
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
                Some((v, _)) => catalogue
                    .load(runtime, v, &LoadOptions::default())?
                    .stack
                    .to_string(),
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

/// `packager cache status|prune|verify`.
pub async fn cache(cli: &Cli, ui: Arc<Ui>, command: &CacheCommand) -> Result<(), Error> {
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
            print_table(&["AREA", "ENTRIES", "SIZE", "OLDEST", "NEWEST"], &rows)
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
                for image in packager::stack::prune_images(&docker, &stacks, *dry_run).await? {
                    out(&format!(
                        "{verb} image {}  {}  (no stack refers to it)",
                        image.name,
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
            let report = tokio::task::spawn_blocking(move || gc::rehash(&Cache::new(root)))
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
