//! `packager build` and `packager plan`.

use std::sync::Arc;

use futures_util::FutureExt;
use packager::Error;
use packager::build::{BuildError, SOURCE_DIR, job_name};
use packager::docker::{ContainerGuard, Docker};
use packager::pipeline::{Pipeline, RunOptions};
use packager::plan::{Plan, Selector, Status, parse_selectors};
use packager::publish::AnyStore;
use packager::recipe::{LoadOptions, Recipe};

use super::{out, pipeline, print_table};
use crate::cli::shell::Session;
use crate::cli::ui::{Ui, render_chain, render_error};
use crate::cli::{BuildArgs, Cli, PlanFormat};

/// Gives a closure the signature of a [`packager::pipeline::FailureHook`].
fn failure_hook<F>(f: F) -> F
where
    F: for<'a> Fn(
            &'a ContainerGuard,
            &'a BuildError,
            &'a Docker,
            &'a Recipe,
        ) -> futures_util::future::BoxFuture<'a, ()>
        + Send
        + Sync,
{
    f
}

/// The selection the arguments name.
fn selection(pipeline: &Pipeline, selectors: &[String], all: bool) -> Result<Vec<Selector>, Error> {
    Ok(if all {
        vec![Selector::All]
    } else {
        parse_selectors(selectors, pipeline.catalogue())?
    })
}

/// Plans the selection with `{jobs}` = the machine's cores.
async fn make_plan(
    pipeline: &Pipeline,
    selectors: &[String],
    all: bool,
    force: bool,
    arches: &[packager::arch::Arch],
    store: &AnyStore,
) -> Result<Plan, Error> {
    let selection = selection(pipeline, selectors, all)?;
    pipeline
        .plan(
            &selection,
            arches,
            store,
            force,
            LoadOptions::default().jobs,
        )
        .await
}

/// `packager build SELECTORS…`: plan, run the plan, then a report.
pub async fn build(
    cli: &Cli,
    ui: Arc<Ui>,
    selectors: &[String],
    all: bool,
    args: &BuildArgs,
) -> Result<(), Error> {
    let store = args.store.open().await?;
    let pipeline = pipeline(cli, &ui)?;
    let plan = make_plan(
        &pipeline,
        selectors,
        all,
        args.force,
        &args.arch.arches(),
        &store,
    )
    .await?;
    for j in &plan.jobs {
        pipeline.warn_recipe(&j.recipe);
    }
    // Asked only for what its recipes or stacks do not support: refused, with the reasons.
    if !plan.jobs.is_empty() && plan.jobs.iter().all(|j| j.status == Status::Unsupported) {
        return Err(Error::Usage {
            message: plan
                .jobs
                .iter()
                .map(|j| format!("{} cannot be built: {}", j.name(), j.reason))
                .collect::<Vec<_>>()
                .join("\n"),
            hint: Some(
                "choose an architecture the recipe supports (`--arch`), or see `packager plan`"
                    .into(),
            ),
        });
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
    let cores = LoadOptions::default().jobs;
    let opts = RunOptions {
        parallel: args.jobs.unwrap_or(cores.min(4)).max(1),
        make_jobs: args.make_jobs,
        keep: args.keep,
        force: args.force,
        fail_fast: args.fail_fast,
        compiler_cache: !args.no_compiler_cache,
    };
    let shell_ui = ui.clone();
    let hook = failure_hook(move |container, error, docker, recipe| {
        let ui = shell_ui.clone();
        ui.clear_steps();
        render_chain(error, None);
        let what = match error {
            BuildError::Phase { phase, .. } => format!("{phase} failed"),
            _ => "the build failed".into(),
        };
        let container_id = container.id().to_string();
        let (job, prefix, docker) = (job_name(recipe), recipe.prefix.clone(), docker.clone());
        async move {
            let session = Session {
                container: &container_id,
                working_dir: SOURCE_DIR,
                command: None,
                prompt_tag: job.clone(),
            };
            let banner = || {
                ui.note(&format!(
                    "{job} where {what}, {SOURCE_DIR}, prefix {prefix}; exit or Ctrl-D to leave (the build then fails)"
                ))
            };
            if let Err(e) = session.run(&docker, banner).await {
                render_error(&e);
            }
        }
        .boxed()
    });
    ui.print_artifacts(!args.json);
    let mut ran = pipeline
        .run(
            &plan,
            &store,
            &opts,
            args.shell_on_failure.then_some(&hook as _),
        )
        .await?;
    ui.print_artifacts(false);
    ui.clear_steps();

    if args.json {
        out(&serde_json::to_string_pretty(&ran.report).expect("the report serialises"))?;
    }
    // The summary, when there is more than one job to tell about.
    if plan.jobs.len() > 1 || plan.jobs.iter().any(|j| j.status != Status::Build) {
        ui.summary(&ran.report, opts.parallel);
    }
    // One failure is shown in full by `main` (phase, command, log tail, hint); several are
    // each shown here, then counted.
    match ran.error() {
        None => Ok(()),
        Some(e) => {
            for each in &ran.errors {
                render_error(each);
            }
            Err(e)
        }
    }
}

/// `packager plan`: what a build of the selection would do, as a table, JSON or a GitHub
/// Actions matrix.
pub async fn plan(
    cli: &Cli,
    ui: &Arc<Ui>,
    (selectors, all): (&[String], bool),
    force: bool,
    format: PlanFormat,
    arches: &[packager::arch::Arch],
    store: &AnyStore,
) -> Result<(), Error> {
    let pipeline = pipeline(cli, ui)?;
    let plan = make_plan(&pipeline, selectors, all, force, arches, store).await?;
    match format {
        PlanFormat::Table => {
            let rows: Vec<[String; 6]> = plan
                .jobs
                .iter()
                .map(|j| {
                    [
                        j.recipe.runtime.to_string(),
                        j.recipe.version.to_string(),
                        j.recipe.stack.to_string(),
                        j.key.short().to_string(),
                        j.status.name().to_string(),
                        j.reason.clone(),
                    ]
                })
                .collect();
            print_table(
                &["RUNTIME", "VERSION", "STACK", "KEY", "STATUS", "REASON"],
                &rows,
            )
        }
        PlanFormat::Json => out(&serde_json::to_string_pretty(&plan).expect("a plan serialises")),
        PlanFormat::GithubMatrix => {
            out(&serde_json::to_string(&plan.github_matrix()).expect("a matrix serialises"))
        }
    }
}
