//! Testing an artifact the way a dyno would run it: a fresh container from the stack's run
//! image (or its build image when it has none), no network, the artifact extracted at the
//! prefix (and each runtime it requires at its own), then the linkage gate (every ELF file finds
//! the libraries it needs there: see [`crate::linkage`]), then the recipe's `[test] commands`,
//! each exit code checked.

use std::path::Path;
use std::time::Instant;

use super::{
    BuildError, BuildLog, CommandFailure, Deadline, Required, container_env, labels, run_commands,
    upload_artifact,
};
use crate::docker::{ContainerGuard, ContainerSpec, Docker, ExecSpec};
use crate::linkage::{self, Probe, Resolver};
use crate::recipe::{Limits, Recipe};
use crate::report::Reporter;

/// A started test container, waiting for an artifact.
pub struct TestContainer {
    container: ContainerGuard,
    image: String,
    timeout: std::time::Duration,
}

impl TestContainer {
    /// Creates and starts a fresh container from `image` for testing `recipe`'s artifact: no
    /// network, no mounts, confined as a build is (see [`crate::sandbox`]).
    pub async fn start(
        docker: &Docker,
        image: &str,
        recipe: &Recipe,
        requires: &[Required],
        run_id: &str,
        source_date_epoch: u64,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let mut spec = ContainerSpec::new(image.to_string());
        spec.labels = labels(recipe, run_id, "test");
        spec.env = container_env(recipe, requires, 1, source_date_epoch);
        spec.network = false;
        // Confined as the build was; the prefixes are made by the uploads.
        let mut writable = vec![recipe.prefix.as_str()];
        writable.extend(requires.iter().map(|r| r.prefix.as_str()));
        spec.sandbox = Some(crate::sandbox::sandbox(&writable, limits, false));
        let container = docker.create_container(&spec).await?;
        container.start().await?;
        Ok(TestContainer {
            container,
            image: image.to_string(),
            timeout: limits
                .test_timeout
                .unwrap_or(crate::sandbox::DEFAULT_TEST_TIMEOUT),
        })
    }

    /// Extracts `artifact` at the prefix and runs the recipe's test commands (from `/`), each
    /// exit code checked; then removes the container. Recipes without test commands pass. The
    /// linkage gate and the commands together have the recipe's test timeout.
    pub async fn run(
        self,
        recipe: &Recipe,
        requires: &[Required],
        artifact: &Path,
        log: &mut BuildLog,
        reporter: &dyn Reporter,
    ) -> Result<(), BuildError> {
        let job = recipe.job_name();
        let started = Instant::now();
        reporter.step_started(&job, "test");
        log.line(&format!("# == test in {}", self.image));
        let container = self.container;
        let timeout = self.timeout;
        let result = async {
            // What it was built against first (XSP needs Mono to run), then the artifact.
            for r in requires {
                r.extract(&container).await?;
            }
            crate::sandbox::make_dir(&container, &recipe.prefix).await?;
            upload_artifact(&container, artifact, &recipe.prefix).await?;
            // The clock starts once the artifact is in place.
            let deadline = Deadline::after("test", timeout);
            let gate = linkage_gate(
                &container,
                &self.image,
                recipe,
                requires,
                artifact,
                &job,
                log,
                reporter,
            );
            match tokio::time::timeout_at(deadline.at, gate).await {
                Ok(gated) => gated?,
                Err(_) => {
                    let probe = "the linkage gate's probe";
                    return Err(deadline.passed(&job, probe, Vec::new(), log));
                }
            }
            if let Some((command, exit_code, tail)) = run_commands(
                &container,
                &recipe.test.commands,
                "/",
                None,
                None,
                deadline,
                &job,
                log,
                reporter,
            )
            .await?
            {
                return Err(BuildError::Test(Box::new(CommandFailure {
                    job: job.clone(),
                    command,
                    exit_code,
                    tail,
                    log: log.path().to_path_buf(),
                    debug: format!(
                        "the artifact was not published; reproduce with `packager build {} {} -v`",
                        recipe.runtime, recipe.version
                    ),
                })));
            }
            Ok(())
        }
        .await;
        // The test's own failure first: a failed removal must not hide it.
        let removed = container.remove().await;
        result?;
        removed?;
        reporter.step_finished(&job, "test", started.elapsed());
        Ok(())
    }
}

/// Runs the linkage gate of `artifact` in the test container: scans the artifacts on the host,
/// probes the image for what lies outside them, and fails with every file and library missing.
#[allow(clippy::too_many_arguments)]
async fn linkage_gate(
    container: &ContainerGuard,
    image: &str,
    recipe: &Recipe,
    requires: &[Required],
    artifact: &Path,
    job: &str,
    log: &mut BuildLog,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    let mut artifacts = vec![(artifact.to_path_buf(), recipe.prefix.clone())];
    artifacts.extend(
        requires
            .iter()
            .map(|r| (r.artifact.clone(), r.prefix.clone())),
    );
    let tree = tokio::task::spawn_blocking(move || linkage::scan(&artifacts))
        .await
        .expect("scan task does not panic")
        .map_err(|source| BuildError::LinkageScan {
            job: job.to_string(),
            source,
        })?;
    // The image's own tools in a clean environment: nothing the artifact or the recipe's
    // environment provides decides what the gate sees.
    let mut probe_exec = ExecSpec::new(linkage::probe_command(Resolver::candidates(&tree)));
    let mut emptied: Vec<String> = container_env(recipe, requires, 1, 0)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    emptied.extend(linkage::LOADER_VARS.iter().map(|v| v.to_string()));
    emptied.sort();
    emptied.dedup();
    probe_exec.env = emptied.into_iter().map(|k| (k, String::new())).collect();
    let mut output = String::new();
    container
        .exec(&probe_exec, &mut |_, line: &str| {
            output.push_str(line);
            output.push('\n');
        })
        .await?
        .check()?;
    let probe = Probe::parse(&output);
    let report = Resolver::new(&tree, &probe).check(&recipe.test.allow_missing);
    let say = |log: &mut BuildLog, line: String| {
        log.line(&line);
        reporter.output(job, &line);
    };
    say(
        log,
        format!(
            "# linkage: {} ELF files checked in {image} ({}), {} with missing libraries",
            report.checked,
            probe.machine,
            report.missing.len()
        ),
    );
    for (file, libs) in &report.allowed {
        say(
            log,
            format!("# linkage: allowed missing in {file}: {}", libs.join(", ")),
        );
    }
    for file in &report.foreign {
        say(
            log,
            format!("# linkage: not checked (another machine): {file}"),
        );
    }
    for (file, why) in &report.unreadable {
        say(
            log,
            format!("# linkage: not checked (unreadable ELF: {why}): {file}"),
        );
    }
    for (file, libs) in &report.missing {
        say(
            log,
            format!("# linkage: {file} needs {}, not found", libs.join(", ")),
        );
    }
    log.flush()?;
    if report.passed() {
        Ok(())
    } else {
        Err(BuildError::Linkage {
            job: job.to_string(),
            image: image.to_string(),
            report: Box::new(report),
            log: log.path().to_path_buf(),
        })
    }
}
