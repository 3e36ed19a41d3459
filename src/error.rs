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
    /// The process exit code for this error: 2 for usage and recipe errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Recipe(_) | Error::Usage { .. } => EXIT_USAGE,
            Error::Fetch(_) | Error::Io { .. } | Error::Several { .. } => EXIT_FAILED,
        }
    }

    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Recipe(e) => e.hint(),
            Error::Fetch(e) => e.hint(),
            Error::Usage { hint, .. } => hint.clone(),
            Error::Io { .. } | Error::Several { .. } => None,
        }
    }
}
