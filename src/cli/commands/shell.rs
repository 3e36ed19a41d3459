//! `packager shell`: a debug shell in a build container set up as a build sets it up, or in a
//! kept container.

use std::sync::Arc;

use packager::Error;
use packager::build::{BuildError, Phase, RUNTIME_LABEL, SOURCE_DIR, VERSION_LABEL, short};
use packager::docker::{Docker, MANAGED_LABEL};
use packager::recipe::LoadOptions;

use super::pipeline;
use crate::cli::shell::Session;
use crate::cli::ui::{Ui, hint_line, render_chain};
use crate::cli::{Cli, ShellArgs};

/// Runs the shell; returns its exit code.
pub async fn shell(cli: &Cli, ui: Arc<Ui>, args: &ShellArgs) -> Result<u8, Error> {
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
    let pipeline = pipeline(cli, &ui)?;
    let arch = args.arch.get();
    let recipe = pipeline.recipe(runtime, version, arch, args.make_jobs)?;
    let docker = pipeline.connect_for(arch).await?;
    docker.check_runs(arch).await?;
    let jobs = args
        .make_jobs
        .unwrap_or_else(|| LoadOptions::default().jobs)
        .max(1);
    let builder = pipeline.builder(&docker, jobs, 1).await?;
    // What it is built against comes from the store, extracted at its prefix as in a build.
    let deps_dir = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let requires = if recipe.build.requires.is_empty() {
        Vec::new()
    } else {
        let store = args.store.open().await?;
        pipeline
            .required_runtimes(&recipe, &store, deps_dir.path())
            .await?
    };
    let opts = packager::build::BuildOptions {
        keep: args.keep,
        source_date_epoch: pipeline.settings().source_date_epoch,
        requires,
        surroundings: packager::build::Surroundings::default(),
        compiler_cache: !args.no_compiler_cache,
    };
    let until = args.after.map(Phase::from);
    let mut prepared = builder.prepare(&recipe, &opts, until).await?;
    let reached = match (&prepared.failure, prepared.reached) {
        (Some(BuildError::Phase { phase, .. }), _) => format!("where {phase} failed"),
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
    // What the shell left in the compiler cache is swept (a kept container's later writes, by
    // the next build).
    let folder = prepared.compiler_cache.take().map(|(folder, _)| folder);
    builder
        .release_compiler_cache(&job, folder, Some(&mut prepared.log))
        .await;
    Ok(exit(code?))
}
