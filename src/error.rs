//! The error every command returns, with its exit code and hint.

use std::path::PathBuf;

/// Exit code of a failed operation (download, build, publish).
pub const EXIT_FAILED: i32 = 1;
/// Exit code of bad usage or a bad recipe.
pub const EXIT_USAGE: i32 = 2;

/// Anything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recipe is wrong or missing.
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    /// A download failed.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// A build, its test or its packaging failed.
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    /// A stack could not be loaded or its image made.
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    /// The container engine failed or cannot be reached.
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// An artifact could not be read.
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// The command line asks for something that cannot be done.
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// A local file could not be read or written.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
    /// A job was refused: its version is published with other inputs.
    #[error("{job} is published with other inputs: {reason}")]
    Conflict {
        /// `runtime version`.
        job: String,
        /// The plan's reason.
        reason: String,
    },
    /// Jobs of a build run failed, conflicted or were blocked (each is reported above).
    #[error("{failed} of {total} jobs did not complete ({conflicts} refused as conflicts)")]
    Jobs {
        /// Jobs that failed, conflicted, were blocked or cancelled.
        failed: usize,
        /// All jobs.
        total: usize,
        /// Of which conflicts.
        conflicts: usize,
    },
    /// Several independent operations failed (each is reported on its own line).
    #[error("{failed} of {total} operations failed")]
    Several {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
    },
}

impl Error {
    /// Whether the user's input is wrong (the command line, a recipe, a stack definition, a
    /// store URL), rather than an operation failing: each error says so itself.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Recipe(e) => e.is_usage(),
            Error::Fetch(e) => e.is_usage(),
            Error::Build(e) => e.is_usage(),
            Error::Stack(e) => e.is_usage(),
            Error::Docker(e) => e.is_usage(),
            Error::Plan(e) => e.is_usage(),
            Error::Package(_) => false,
            Error::Publish(e) => e.is_usage(),
            Error::Usage { .. } => true,
            Error::Io { .. }
            | Error::Conflict { .. }
            | Error::Jobs { .. }
            | Error::Several { .. } => false,
        }
    }

    /// The process exit code for this error: 2 for usage and recipe errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        }
    }

    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Recipe(e) => e.hint(),
            Error::Fetch(e) => e.hint(),
            Error::Usage { hint, .. } => hint.clone(),
            Error::Build(e) => e.hint(),
            Error::Stack(e) => e.hint(),
            Error::Docker(e) => e.hint(),
            Error::Publish(e) => e.hint(),
            Error::Plan(e) => e.hint(),
            Error::Conflict { .. } => Some(
                "buildpacks pin what they downloaded: bump the recipe's `revision` to publish a new artifact, or pass --force to replace it".into(),
            ),
            Error::Jobs { conflicts, .. } if *conflicts > 0 => Some(
                "a conflict is a version published with other inputs: bump its `revision`, or pass --force to replace it".into(),
            ),
            Error::Io { .. } | Error::Several { .. } | Error::Jobs { .. } | Error::Package(_) => {
                None
            }
        }
    }
}
