//! Recipes: `recipes/<runtime>/runtime.toml` (defaults for every version) and one
//! `recipes/<runtime>/<version>.toml` per version.
//!
//! Each file is parsed on its own into a layer, so that every error names the file and the
//! line. The version layer then overrides the runtime layer key by key: tables (`[source]`,
//! `[build]`, `[build.env]`, `[test]`) are merged deeply, arrays and scalars are replaced. The
//! checksum keys of `[source]` (`sha256`, `sha512`, `sha1`) count as one key: a version file that
//! names any of them replaces the runtime file's. Templates are expanded last (see [`template`]).
//!
//! The module owns everything under the recipes directory but the stacks: the recipe data
//! ([`Recipe`] and its parts, in `model`), reading one version from its files (`load`), the
//! merged recipe written back as TOML (`show`), the [`Catalogue`] of every runtime and version,
//! runtime names (`name`), and the [`source`] locations that recipe and stack errors point at.

pub mod source;
pub mod template;

mod catalogue;
mod load;
mod model;
mod name;
mod network;
mod show;

use std::path::PathBuf;

pub use catalogue::{Catalogue, RuntimeEntry};
pub use load::load;
pub use model::{
    Build, Limits, LoadOptions, PHASES, Recipe, Requirement, Resource, Source, Test, parse_memory,
    parse_size, parse_timeout, url_file_name,
};
pub use name::{RuntimeName, StackName, is_lowercase_slug};
pub use network::{HostPattern, Network};

/// The folder under the recipes directory that holds stacks, not a runtime.
pub const STACKS_DIR: &str = "stacks";
/// The name of the per-runtime defaults file.
pub const RUNTIME_FILE: &str = "runtime.toml";
/// The stack a recipe builds on when it names none.
pub const DEFAULT_STACK: &str = "bookworm";
/// The prefix a recipe installs into when it names none: a folder of its own under `/app`, where
/// a Heroku dyno runs the app (never `/app` itself, which holds the app's own `bin/`).
pub const DEFAULT_PREFIX: &str = "/app/{runtime}";
/// Where a dyno runs the app: every prefix is below it unless a recipe opts out.
pub const APP_DIR: &str = "/app";
/// The artifact file name when a recipe names none.
pub const DEFAULT_ARTIFACT: &str = "{runtime}-{version}.tar.gz";
/// The artifact file name when a recipe names none and sets a `revision` above 0.
pub const DEFAULT_REVISED_ARTIFACT: &str = "{runtime}-{version}-build{revision}.tar.gz";

/// What went wrong reading recipes.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A recipe file is wrong at a known place.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The recipe file: `runtime.toml` or a version file.
        path: PathBuf,
        /// 1-based line; 1 when what is wrong has no place of its own (a key missing from
        /// both files).
        line: usize,
        /// What is wrong.
        message: String,
        /// What the user can do, when we know.
        hint: Option<String>,
    },
    /// A file in a runtime folder whose name is not a version.
    #[error("{}: file name is not a version", path.display())]
    BadFileName {
        /// The `*.toml` file whose stem does not parse as a version.
        path: PathBuf,
        /// Why the stem is not a version.
        #[source]
        source: crate::version::VersionError,
    },
    /// A file or folder could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The recipe file, runtime folder or recipes directory.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// No such runtime.
    #[error("no runtime `{name}` in {}", dir.display())]
    UnknownRuntime {
        /// What was asked for.
        name: String,
        /// The recipes directory that was searched.
        dir: PathBuf,
        /// The runtimes there are.
        known: Vec<String>,
    },
    /// No version of the runtime matches.
    #[error("no version of {runtime} matches `{wanted}`")]
    NoMatch {
        /// The runtime whose versions were searched.
        runtime: String,
        /// The version or requirement asked for.
        wanted: String,
        /// The versions there are.
        available: Vec<String>,
    },
    /// The argument is neither a version nor a requirement.
    #[error(transparent)]
    Selector(#[from] crate::version::VersionError),
    /// A runtime name that cannot be one.
    #[error(
        "`{0}` is not a runtime name (lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit)"
    )]
    BadRuntimeName(String),
}

impl RecipeError {
    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            RecipeError::Invalid { hint, .. } => hint.clone(),
            RecipeError::BadFileName { .. } => Some(
                "name version files after the version (`3.2.8.toml`); shared settings go in runtime.toml"
                    .into(),
            ),
            RecipeError::UnknownRuntime { known, dir, .. } => Some(if known.is_empty() {
                format!(
                    "{} holds no runtime; pass --recipes or set PACKAGER_RECIPES",
                    dir.display()
                )
            } else {
                format!("known runtimes: {}", known.join(", "))
            }),
            RecipeError::NoMatch { available, .. } => Some(if available.is_empty() {
                "this runtime has no version files yet".into()
            } else {
                format!("available: {}", available.join(", "))
            }),
            _ => None,
        }
    }

    /// Whether the user, not the machine, has to fix this: always. Every recipe error is a
    /// wrong recipe, a wrong name or version asked for, or a recipes directory that cannot
    /// be read (a wrong `--recipes` as a rule).
    pub fn is_usage(&self) -> bool {
        match self {
            RecipeError::Invalid { .. }
            | RecipeError::BadFileName { .. }
            | RecipeError::Io { .. }
            | RecipeError::UnknownRuntime { .. }
            | RecipeError::NoMatch { .. }
            | RecipeError::Selector(_)
            | RecipeError::BadRuntimeName(_) => true,
        }
    }
}
