//! How a build or its test fails, and what the user can do about it.

use std::path::PathBuf;

use super::Phase;
use crate::archive::ArchiveError;
use crate::docker::DockerError;
use crate::fetch::FetchError;
use crate::package::PackageError;
use crate::stack::StackError;

/// What went wrong building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Fetching a source or resource failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The stack could not be loaded or its image made.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The engine failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The egress proxy of a networked build could not be started.
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    /// A source archive was refused or could not be read.
    #[error("cannot unpack the sources of {job}")]
    Unpack {
        /// `runtime version`.
        job: String,
        /// The refused entry (and why), or the read error, naming the archive.
        #[source]
        source: ArchiveError,
    },
    /// A command of a phase exited non-zero.
    #[error("{phase} of {failure}")]
    Phase {
        /// The phase.
        phase: Phase,
        /// What failed.
        failure: Box<CommandFailure>,
    },
    /// The artifact could not be made.
    #[error("cannot package the prefix of {job}")]
    Package {
        /// `runtime version`.
        job: String,
        /// What went wrong reading the container's tar stream or writing the artifact.
        #[source]
        source: PackageError,
    },
    /// A test command failed.
    #[error("test of {0}")]
    Test(Box<CommandFailure>),
    /// The linkage gate found ELF files whose libraries the run image cannot provide.
    #[error("test of {job} failed: libraries missing in the run image {image}\n{}\nfull log: {}", missing_block(.report), log.display())]
    Linkage {
        /// `runtime version`.
        job: String,
        /// The run image.
        image: String,
        /// What the gate found.
        report: Box<crate::linkage::Report>,
        /// The log file.
        log: PathBuf,
    },
    /// An artifact could not be read for the linkage gate.
    #[error("cannot read the artifact of {job} for the linkage gate")]
    LinkageScan {
        /// `runtime version`.
        job: String,
        /// What went wrong reading the artifact.
        #[source]
        source: PackageError,
    },
    /// A build phase or the test step ran past its time limit; its container is removed.
    #[error("{0}")]
    Timeout(Box<TimedOut>),
    /// The log or a work file could not be written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
}

/// A command that exited non-zero in a build or test container.
#[derive(Debug)]
pub struct CommandFailure {
    /// `runtime version`.
    pub job: String,
    /// The command.
    pub command: String,
    /// Its exit code.
    pub exit_code: i64,
    /// The last lines of its output.
    pub tail: Vec<String>,
    /// The log file.
    pub log: PathBuf,
    /// What to run to debug it.
    pub debug: String,
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: `{}` exited with code {}\n{}\nfull log: {}",
            self.job,
            self.command,
            self.exit_code,
            tail_block(&self.tail),
            self.log.display()
        )
    }
}

/// A build phase or test step still running at its time limit.
#[derive(Debug)]
pub struct TimedOut {
    /// `runtime version`.
    pub job: String,
    /// The phase (`configure`, `build`, `install`) or `test`.
    pub step: String,
    /// Its time limit.
    pub limit: std::time::Duration,
    /// The command that was running.
    pub command: String,
    /// The last lines of its output.
    pub tail: Vec<String>,
    /// The log file.
    pub log: PathBuf,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} timed out: `{}` still ran after {}\n{}\nfull log: {}",
            self.step,
            self.job,
            self.command,
            humantime::format_duration(self.limit),
            tail_block(&self.tail),
            self.log.display()
        )
    }
}

fn missing_block(report: &crate::linkage::Report) -> String {
    report
        .missing
        .iter()
        .map(|(file, libs)| format!("  {file}: {}", libs.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail_block(tail: &[String]) -> String {
    if tail.is_empty() {
        return "  (no output)".into();
    }
    tail.iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl BuildError {
    /// Whether the recipe's stack definition is wrong; a build that fails is not the user's
    /// input.
    pub fn is_usage(&self) -> bool {
        match self {
            BuildError::Stack(e) => e.is_usage(),
            BuildError::Fetch(e) => e.is_usage(),
            BuildError::Docker(e) => e.is_usage(),
            _ => false,
        }
    }

    /// What the user can do, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::Fetch(e) => e.hint(),
            BuildError::Stack(e) => e.hint(),
            BuildError::Docker(e) => e.hint(),
            BuildError::Egress(e) => e.hint(),
            BuildError::Phase { failure, .. } | BuildError::Test(failure) => {
                Some(failure.debug.clone())
            }
            BuildError::Linkage { report, .. } => {
                let libs: std::collections::BTreeSet<&str> = report
                    .missing
                    .values()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                let libs: Vec<&str> = libs.into_iter().collect();
                Some(format!(
                    "the artifact was not published; add the package that provides {} to the stack's run image (`[run.bootstrap] packages`), remove the file that needs it in `install`, or allow it by name: `[test] allow_missing = [{}]`",
                    libs.join(", "),
                    libs.iter()
                        .map(|l| format!("\"{l}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            BuildError::Timeout(t) => {
                let (key, flag) = match t.step.as_str() {
                    "test" => ("[test] timeout", "--test-timeout"),
                    _ => ("[build] timeout", "--timeout"),
                };
                Some(format!(
                    "if it only needs longer, raise the limit ({}) with `{key} = \"…\"` in the recipe or `{flag}`",
                    humantime::format_duration(t.limit)
                ))
            }
            BuildError::Unpack {
                source: ArchiveError::TooLarge { .. },
                ..
            } => Some(
                "if the sources really are that big, raise `[build] max_unpacked_size` in the recipe (e.g. \"8G\"); it bounds the source and every resource together".into(),
            ),
            BuildError::Unpack {
                source: ArchiveError::TooManyEntries { .. },
                ..
            } => Some(
                "if the sources really hold that many files, raise `[build] max_unpacked_entries` in the recipe (e.g. 2000000); it bounds the source and every resource together".into(),
            ),
            BuildError::Unpack { .. } => Some(
                "the source archive is refused as unsafe or unreadable; check the recipe's URL and checksum".into(),
            ),
            _ => None,
        }
    }
}
