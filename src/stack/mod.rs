//! Stacks: the builder images runtimes are compiled in, and the run images they are tested in.
//!
//! A stack is a folder `recipes/stacks/<name>/` holding a `stack.toml` and, for Dockerfile
//! stacks, a Docker build context. The build image comes from exactly one source:
//!
//! ```toml
//! # A prebuilt image, pulled if absent.
//! image = "heroku/heroku:24-build"
//! run = { image = "heroku/heroku:24" }
//! ```
//!
//! ```toml
//! # A Dockerfile in the stack folder; the context is the stack folder only.
//! dockerfile = "Dockerfile"
//! ```
//!
//! ```toml
//! # A Debian root filesystem made on the host with mmdebstrap (or debootstrap) and imported.
//! [bootstrap]
//! suite = "bookworm"
//! variant = "minbase"
//! packages = ["gcc", "make", "libc6-dev"]
//!
//! # Optional: the image artifacts are tested in (no compilers). Defaults to the build image.
//! [run.bootstrap]
//! suite = "bookworm"
//! variant = "minbase"
//! ```
//!
//! Images we make are tagged `packager-stack-<name>:build-<hash12>` / `run-<hash12>`, where the
//! hash covers the parsed stack definition (and the context files of Dockerfile stacks), and are
//! labelled `packager.stack=<name>`, `packager.stack.hash=<hash>`, `packager.stack.role`. An
//! unchanged stack is never rebuilt.
//!
//! What lives where: `manifest` holds what `stack.toml` says and checks it; `load` finds and
//! loads stacks and names their images (and hashes their definition); `image` makes sure of a
//! stack's images and prunes the ones no stack refers to; `bootstrap` makes Debian root
//! filesystems with mmdebstrap or debootstrap and imports them.

mod bootstrap;
mod image;
mod load;
mod manifest;

use std::path::PathBuf;

use crate::docker::DockerError;

pub use bootstrap::BootstrapTool;
pub use image::{EnsuredImage, ImageOutcome, PrunedImage, prune_images};
pub use load::{Stack, load, load_all, stack_names};
pub use manifest::{Bootstrap, ImageSource, RunManifest, StackManifest, parse_manifest};

/// The file every stack folder holds.
pub const MANIFEST: &str = "stack.toml";

/// Overrides the Debian mirror of every `[bootstrap]` section (which otherwise uses the
/// `mirror` key or, when absent, the bootstrap tool's default).
pub const MIRROR_ENV: &str = "PACKAGER_DEBIAN_MIRROR";

/// Label holding the stack name.
pub const STACK_LABEL: &str = "packager.stack";
/// Label holding the full stack hash.
pub const HASH_LABEL: &str = "packager.stack.hash";
/// Label holding the image role (`build` or `run`).
pub const IMAGE_ROLE_LABEL: &str = "packager.stack.role";
/// Label holding the architecture an image was made for (`amd64`, `arm64`).
pub const ARCH_LABEL: &str = "packager.stack.arch";

/// `SOURCE_DATE_EPOCH` for bootstraps when the stack doesn't set one (2024-01-01T00:00:00Z).
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_704_067_200;

/// Progress lines go here (the CLI decides whether and how to show them).
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Everything that can go wrong with stacks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// A file or folder could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stacks folder does not exist.
    #[error("no stacks folder at {}", dir.display())]
    NoStacksDir {
        /// The folder we looked for.
        dir: PathBuf,
    },
    /// `stack.toml` is not valid TOML or doesn't match the schema.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The `stack.toml`.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// `stack.toml` parses but makes no sense.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The `stack.toml`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The stack's `arches` leave this architecture out.
    #[error("stack `{stack}` is not made for {arch} (its `arches`: {})", supported.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))]
    UnsupportedArch {
        /// The stack.
        stack: String,
        /// The architecture asked for.
        arch: crate::arch::Arch,
        /// What its manifest allows.
        supported: Vec<crate::arch::Arch>,
    },
    /// The engine cannot run containers of the stack's architecture.
    #[error("the Docker engine cannot run {arch} containers for stack `{stack}`")]
    CannotRun {
        /// The stack.
        stack: String,
        /// The architecture asked for.
        arch: crate::arch::Arch,
        /// Why.
        #[source]
        source: Box<DockerError>,
    },
    /// No stack by that name.
    #[error("unknown stack `{name}` (known stacks: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownStack {
        /// The name asked for.
        name: String,
        /// The stacks that exist.
        known: Vec<String>,
    },
    /// The bootstrap tool (any, or the one the stack asks for) is not installed.
    #[error("stack `{stack}` needs {} on the host, and it was not found", match tool {
        Some(tool) => tool.name(),
        None => "mmdebstrap or debootstrap",
    })]
    NoBootstrapTool {
        /// The stack.
        stack: String,
        /// The tool the stack asks for, if any.
        tool: Option<BootstrapTool>,
    },
    /// The bootstrap tool could not be started.
    #[error("cannot run {tool} for stack `{stack}`")]
    Spawn {
        /// The stack.
        stack: String,
        /// The program: mmdebstrap, debootstrap or the `tar` after debootstrap.
        tool: String,
        /// The error of starting it (typically: not installed).
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap tool failed.
    #[error("{tool} failed for stack `{stack}` ({status})\n{}", tail.join("\n"))]
    Bootstrap {
        /// The stack.
        stack: String,
        /// The program: mmdebstrap, debootstrap or the `tar` after debootstrap.
        tool: String,
        /// Its exit status.
        status: String,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The engine failed while making or fetching a stack image.
    #[error("cannot prepare the {role} image of stack `{stack}`")]
    Docker {
        /// The stack.
        stack: String,
        /// `build` or `run`.
        role: Role,
        /// The engine error.
        #[source]
        source: Box<DockerError>,
    },
    /// The engine failed while listing or removing stack images ([`prune_images`]).
    #[error(transparent)]
    Prune(Box<DockerError>),
}

impl StackError {
    /// Something the user can do about this error, if there is anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            StackError::UnknownStack { known, .. } if !known.is_empty() => Some(format!(
                "use one of: {}; or add recipes/stacks/<name>/stack.toml",
                known.join(", ")
            )),
            StackError::UnknownStack { .. } | StackError::NoStacksDir { .. } => {
                Some("add a stack as recipes/stacks/<name>/stack.toml".to_owned())
            }
            StackError::Invalid { .. } => Some(
                "a stack needs exactly one of `image = \"…\"`, `dockerfile = \"…\"` or a \
                 [bootstrap] section"
                    .to_owned(),
            ),
            StackError::NoBootstrapTool { tool, .. } => Some(format!(
                "install it: `apt-get install {}` (Debian/Ubuntu)",
                tool.map_or("mmdebstrap", BootstrapTool::name)
            )),
            StackError::Bootstrap { .. } | StackError::Spawn { .. } => Some(format!(
                "bootstrapping needs root (or unprivileged user namespaces for mmdebstrap) and a \
                 reachable Debian mirror; set {MIRROR_ENV} to use another mirror"
            )),
            StackError::Docker { source, .. }
            | StackError::Prune(source)
            | StackError::CannotRun { source, .. } => source.hint(),
            StackError::UnsupportedArch { .. } => Some(
                "build for an architecture the stack lists, or add it to `arches` in its stack.toml".to_owned(),
            ),
            _ => None,
        }
    }

    /// Whether the user has to fix the recipes directory or the command line: true for a
    /// manifest that does not parse or makes no sense and for an unknown stack name; false for
    /// what goes wrong on the host or in the engine (an unreadable or missing stacks folder, a
    /// missing or failing bootstrap tool, an engine error).
    pub fn is_usage(&self) -> bool {
        match self {
            StackError::Parse { .. }
            | StackError::Invalid { .. }
            | StackError::UnknownStack { .. }
            | StackError::UnsupportedArch { .. } => true,
            StackError::Read { .. }
            | StackError::NoStacksDir { .. }
            | StackError::NoBootstrapTool { .. }
            | StackError::Spawn { .. }
            | StackError::Bootstrap { .. }
            | StackError::Docker { .. }
            | StackError::Prune(_)
            | StackError::CannotRun { .. } => false,
        }
    }
}

/// Which of a stack's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The image runtimes are compiled in.
    Build,
    /// The image artifacts are tested in.
    Run,
}

impl Role {
    /// The role as tags and the role label spell it: `build` or `run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Build => "build",
            Role::Run => "run",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The TOML examples in this module's documentation are valid stacks.
    #[test]
    fn doc_examples_parse() {
        let source = include_str!("mod.rs");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in source.lines().filter_map(|l| l.strip_prefix("//!")) {
            let line = line.strip_prefix(' ').unwrap_or(line);
            match (&mut current, line) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), line) => {
                    block.push_str(line);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        assert_eq!(blocks.len(), 3);
        for block in blocks {
            let m = parse_manifest(&block, Path::new("doc")).unwrap();
            let p = Path::new("doc");
            ImageSource::from_parts(&m.image, &m.dockerfile, &m.bootstrap, p, "").unwrap();
            if let Some(run) = &m.run {
                ImageSource::from_parts(&run.image, &run.dockerfile, &run.bootstrap, p, "")
                    .unwrap();
            }
        }
    }

    #[test]
    fn usage_errors_are_the_bad_stack_definitions() {
        let path = PathBuf::from("s/stack.toml");
        let invalid = StackError::Invalid {
            path: path.clone(),
            reason: String::new(),
        };
        let unknown = StackError::UnknownStack {
            name: "x".into(),
            known: Vec::new(),
        };
        assert!(invalid.is_usage() && unknown.is_usage());
        assert!(
            parse_manifest("frobnicate = 1", &path)
                .unwrap_err()
                .is_usage()
        );
        assert!(!StackError::NoStacksDir { dir: path }.is_usage());
        let no_tool = StackError::NoBootstrapTool {
            stack: "s".into(),
            tool: None,
        };
        assert!(!no_tool.is_usage());
    }
}
