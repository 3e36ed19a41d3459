//! Testing an artifact the way a dyno would run it: a fresh container from the stack's run
//! image (or its build image when it has none), no network, the artifact extracted at the
//! prefix, then the recipe's `[test] commands`, each exit code checked.

use std::path::Path;
use std::time::Instant;

use crate::build::{
    BuildError, BuildLog, Failure, container_env, labels, run_commands, upload_artifact,
};
use crate::docker::{ContainerGuard, ContainerSpec, Docker};
use crate::recipe::Recipe;
use crate::report::Reporter;

/// A started test container, waiting for an artifact.
pub struct TestContainer {
    container: ContainerGuard,
    image: String,
}

impl TestContainer {
    /// Creates and starts a fresh container from `image` for testing `recipe`'s artifact: no
    /// network, no mounts, the prefix as its (engine-made) working directory.
    pub async fn start(
        docker: &Docker,
        image: &str,
        recipe: &Recipe,
        run_id: &str,
        source_date_epoch: u64,
    ) -> Result<Self, BuildError> {
        let mut spec = ContainerSpec::new(image.to_string());
        spec.labels = labels(recipe, run_id, "test");
        spec.env = container_env(recipe, 1, source_date_epoch);
        spec.working_dir = Some(recipe.prefix.clone());
        spec.network = false;
        let container = docker.create_container(&spec).await?;
        container.start().await?;
        Ok(TestContainer {
            container,
            image: image.to_string(),
        })
    }

    /// Extracts `artifact` at the prefix and runs the recipe's test commands (from `/`), each
    /// exit code checked; then removes the container. Recipes without test commands pass.
    pub async fn run(
        self,
        recipe: &Recipe,
        requires: &[std::path::PathBuf],
        artifact: &Path,
        log: &mut BuildLog,
        reporter: &dyn Reporter,
    ) -> Result<(), BuildError> {
        let job = format!("{} {}", recipe.runtime, recipe.version);
        let started = Instant::now();
        reporter.step_started(&job, "test");
        log.line(&format!("# == test in {}", self.image));
        let container = self.container;
        let result = async {
            // What it was built against first (XSP needs Mono to run), then the artifact.
            for a in requires.iter().map(|p| p.as_path()).chain([artifact]) {
                upload_artifact(&container, a, &recipe.prefix).await?;
            }
            if let Some((command, exit_code, tail)) =
                run_commands(&container, &recipe.test.commands, "/", &job, log, reporter).await?
            {
                return Err(BuildError::Test(Box::new(Failure {
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
        container.remove().await?;
        result?;
        reporter.step_finished(&job, "test", started.elapsed());
        Ok(())
    }
}
