//! Recipes: `recipes/<runtime>/runtime.toml` (defaults for every version) and one
//! `recipes/<runtime>/<version>.toml` per version.
//!
//! Each file is parsed on its own into a layer, so that every error names the file and the
//! line. The version layer then overrides the runtime layer key by key: tables (`[source]`,
//! `[build]`, `[build.env]`, `[test]`) are merged deeply, arrays and scalars are replaced. The
//! checksum keys of `[source]` (`sha256`, `sha512`, `sha1`) count as one key: a version file that
//! names any of them replaces the runtime file's. Templates are expanded last (see [`template`]).

pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::checksum::{Algo, Checksum};
use crate::version::{Version, VersionReq};

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
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
        /// What the user can do, when we know.
        hint: Option<String>,
    },
    /// A file in a runtime folder whose name is not a version.
    #[error("{}: file name is not a version", path.display())]
    BadFileName {
        /// The file.
        path: PathBuf,
        /// Why the stem is not a version.
        #[source]
        source: crate::version::VersionError,
    },
    /// A file or folder could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
    /// No such runtime.
    #[error("no runtime `{name}` in {}", dir.display())]
    UnknownRuntime {
        /// What was asked for.
        name: String,
        /// The recipes directory.
        dir: PathBuf,
        /// The runtimes there are.
        known: Vec<String>,
    },
    /// No version of the runtime matches.
    #[error("no version of {runtime} matches `{wanted}`")]
    NoMatch {
        /// The runtime.
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
}

/// A runtime's name: the folder under `recipes/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RuntimeName(String);

impl RuntimeName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RuntimeName {
    type Err = RecipeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s != STACKS_DIR;
        if ok {
            Ok(RuntimeName(s.to_string()))
        } else {
            Err(RecipeError::BadRuntimeName(s.to_string()))
        }
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Layers: one file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    description: Option<Spanned<String>>,
    stack: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    prefix_outside_app: Option<bool>,
    artifact: Option<Spanned<String>>,
    revision: Option<u32>,
    source: Option<SourceLayer>,
    resources: Option<Vec<ResourceLayer>>,
    build: Option<BuildLayer>,
    test: Option<TestLayer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceLayer {
    url: Option<Spanned<String>>,
    mirrors: Option<Vec<Spanned<String>>>,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
    strip_components: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceLayer {
    url: Spanned<String>,
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
    #[serde(default)]
    unpack: bool,
    strip_components: Option<u32>,
    patch: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildLayer {
    env: Option<BTreeMap<String, Spanned<String>>>,
    configure: Option<Vec<Spanned<String>>>,
    build: Option<Vec<Spanned<String>>>,
    install: Option<Vec<Spanned<String>>>,
    requires: Option<Vec<Spanned<String>>>,
    network: Option<bool>,
    include_requires: Option<bool>,
    stack_packages: Option<Vec<Spanned<String>>>,
    memory: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    pids: Option<Spanned<i64>>,
    root: Option<Spanned<RootLayer>>,
    max_unpacked_size: Option<Spanned<String>>,
}

/// `root = true` (every phase) or `root = ["install"]` (those phases).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RootLayer {
    All(bool),
    Phases(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestLayer {
    commands: Option<Vec<Spanned<String>>>,
    allow_missing: Option<Vec<Spanned<String>>>,
}

/// A recipe file's text, kept to turn byte spans into line numbers.
#[derive(Debug)]
struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.clone(),
            line: self.line_of(span.start),
            message: message.into(),
            hint: None,
        }
    }

    fn parse(&self) -> Result<Layer, RecipeError> {
        toml::from_str::<Layer>(&self.text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s.start)).unwrap_or(1);
            let message = e.message().trim().to_string();
            let hint = message
                .contains("unknown field")
                .then(|| "see the recipe format in recipes/README.md".to_string());
            RecipeError::Invalid {
                path: self.path.clone(),
                line,
                message,
                hint,
            }
        })
    }
}

/// A value together with the file it came from.
struct At<'a, T> {
    file: &'a SourceFile,
    value: Spanned<T>,
}

fn at<T>(file: &SourceFile, value: Option<Spanned<T>>) -> Option<At<'_, T>> {
    value.map(|value| At { file, value })
}

/// The checksum keys of one table, checked: at most one, valid hex of the right length.
fn checksum_of<'a>(
    file: &'a SourceFile,
    table: &str,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
) -> Result<Option<(Checksum, usize, &'a SourceFile)>, RecipeError> {
    let given: Vec<(Algo, Spanned<String>)> = [
        (Algo::Sha256, sha256),
        (Algo::Sha512, sha512),
        (Algo::Sha1, sha1),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.map(|v| (a, v)))
    .collect();
    match given.as_slice() {
        [] => Ok(None),
        [(algo, value)] => Checksum::new(*algo, value.get_ref())
            .map(|c| Some((c, file.line_of(value.span().start), file)))
            .map_err(|e| file.error(value.span(), e.to_string())),
        [_, (_, second), ..] => Err(file.error(
            second.span(),
            format!(
                "{table} has more than one checksum; give exactly one of sha256, sha512 or sha1"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The merged, templated recipe.

/// A requirement on another runtime: `mono 3.2.8`, `mono ^3.2`.
#[derive(Debug, Clone)]
pub struct Requirement {
    /// The required runtime.
    pub runtime: RuntimeName,
    /// The versions that satisfy it (a bare version means exactly that version).
    pub req: VersionReq,
    /// The text as written (after templating).
    pub text: String,
}

impl FromStr for Requirement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, req) = text
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("requirement `{text}` is not `RUNTIME VERSION-OR-RANGE`"))?;
        let runtime: RuntimeName = name.parse().map_err(|e: RecipeError| e.to_string())?;
        let req = req.trim();
        let req = if VersionReq::looks_like_req(req) {
            req.parse::<VersionReq>()
        } else {
            format!("={req}").parse()
        }
        .map_err(|e| e.to_string())?;
        Ok(Requirement {
            runtime,
            req,
            text: text.to_string(),
        })
    }
}

/// The main source tarball.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where to get it.
    pub url: String,
    /// More places to get it, tried after `url`.
    pub mirrors: Vec<String>,
    /// What it must hash to.
    pub checksum: Checksum,
    /// Leading path components to drop when unpacking.
    pub strip_components: u32,
}

/// An extra file: a patch, a bootstrap tarball.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Where to get it.
    pub url: String,
    /// More places to get it.
    pub mirrors: Vec<String>,
    /// What it must hash to.
    pub checksum: Checksum,
    /// Path under the source tree (a folder when unpacked, else the file's path).
    pub dest: String,
    /// Whether it is an archive to unpack at `dest`.
    pub unpack: bool,
    /// A patch, applied with `patch -pN` at the start of `configure` (N is the value).
    pub patch: Option<u32>,
    /// Leading path components to drop when unpacking.
    pub strip_components: u32,
}

/// How to build.
#[derive(Debug, Clone)]
pub struct Build {
    /// Extra environment for every phase.
    pub env: BTreeMap<String, String>,
    /// Configure commands.
    pub configure: Vec<String>,
    /// Compile commands.
    pub build: Vec<String>,
    /// Install commands.
    pub install: Vec<String>,
    /// Runtimes this one is built against.
    pub requires: Vec<Requirement>,
    /// Whether the build may use the network.
    pub network: bool,
    /// Whether the artifact keeps the files of the runtimes it was built against (by default
    /// it holds only what its own install added or changed).
    pub include_requires: bool,
    /// Debian packages the build needs in the stack's build image (a bootstrap compiler such
    /// as `mono-devel`): planning fails, naming the stack, when the stack does not install them.
    pub stack_packages: Vec<String>,
    /// Resource limits of the build container (and of its test container); unset ones take
    /// the builder's defaults. Not part of the build key: they cannot change the artifact.
    pub limits: Limits,
    /// The phases (`configure`, `build`, `install`) that run as root instead of the build
    /// user, still without capabilities. Empty: none.
    pub root: Vec<String>,
    /// The most bytes each source or resource archive may unpack to; `None`: 2 GiB or 50 times
    /// its size, whichever is more.
    pub max_unpacked_size: Option<u64>,
}

/// The phases a recipe may ask to run as root.
pub const PHASES: [&str; 3] = ["configure", "build", "install"];

/// Resource limits a recipe (or the command line) sets; `None` leaves the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes (`memory = "8GiB"`).
    pub memory: Option<u64>,
    /// CPUs in thousandths (`cpus = 1.5` is 1500).
    pub millicpus: Option<u64>,
    /// The most processes and threads at once (`pids = 4096`).
    pub pids: Option<u64>,
}

impl Limits {
    /// Each limit of `self`, or else of `other`.
    pub fn or(self, other: Limits) -> Limits {
        Limits {
            memory: self.memory.or(other.memory),
            millicpus: self.millicpus.or(other.millicpus),
            pids: self.pids.or(other.pids),
        }
    }
}

/// Parses a memory size: a number with an optional unit (`512M`, `8G`, `8GiB`, `1.5GB`); `K`,
/// `M`, `G` and `T` (with or without `iB`) are binary, `KB`, `MB`, `GB`, `TB` decimal. At least
/// 64 MiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes < 64 * 1024 * 1024 {
        return Err(format!(
            "memory `{text}` is below the least a build can use (64M)"
        ));
    }
    Ok(bytes)
}

/// Parses a size in bytes, with the units of [`parse_memory`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. \"8G\" or \"512MiB\")"))?;
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KIB" => 1024.0,
        "M" | "MIB" => 1024.0 * 1024.0,
        "G" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TIB" => 1024.0f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "`{other}` is not a unit of memory (K, M, G, T, or KB, MB, GB, TB)"
            ));
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("`{text}` is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

/// How to test the installed artifact.
#[derive(Debug, Clone, Default)]
pub struct Test {
    /// Shell commands run against the artifact extracted at the prefix.
    pub commands: Vec<String>,
    /// Libraries (`libnsl.so.2`) the linkage gate lets ELF files need without finding them in
    /// the run image.
    pub allow_missing: Vec<String>,
}

/// A recipe for one version: both files merged and every template expanded.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The runtime.
    pub runtime: RuntimeName,
    /// The version.
    pub version: Version,
    /// Free text.
    pub description: Option<String>,
    /// The builder stack.
    pub stack: String,
    /// The install prefix.
    pub prefix: String,
    /// Whether the prefix may lie outside `/app` (or be `/app` itself).
    pub prefix_outside_app: bool,
    /// Bumped when an already published version must be rebuilt with other inputs: part of
    /// the artifact's name (and of its inventory entry's metadata), so the old one stays.
    pub revision: u32,
    /// The artifact's file name.
    pub artifact: String,
    /// The source tarball.
    pub source: Source,
    /// Extra files.
    pub resources: Vec<Resource>,
    /// Build settings.
    pub build: Build,
    /// Test settings.
    pub test: Test,
    /// The files it was read from: runtime.toml (when present) and the version file.
    pub files: Vec<PathBuf>,
    /// Things worth telling the user that are not errors (a weak checksum).
    pub warnings: Vec<String>,
}

/// Settings that templates need but recipes do not hold.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The value of `{jobs}`: parallel compile jobs inside the build.
    pub jobs: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

fn merge_opt<'a, T>(over: Option<At<'a, T>>, base: Option<At<'a, T>>) -> Option<At<'a, T>> {
    over.or(base)
}

/// A list of templated strings with their file.
struct AtList<'a> {
    file: &'a SourceFile,
    items: Vec<Spanned<String>>,
}

fn list_at(file: &SourceFile, items: Option<Vec<Spanned<String>>>) -> Option<AtList<'_>> {
    items.map(|items| AtList { file, items })
}

struct Templater {
    vars: BTreeMap<&'static str, String>,
}

impl Templater {
    fn one(&self, file: &SourceFile, v: &Spanned<String>) -> Result<String, RecipeError> {
        template::expand(v.get_ref(), &self.vars).map_err(|e| file.error(v.span(), e.to_string()))
    }

    fn at(&self, v: &At<'_, String>) -> Result<String, RecipeError> {
        self.one(v.file, &v.value)
    }

    fn list(&self, l: Option<&AtList<'_>>, default: &[&str]) -> Result<Vec<String>, RecipeError> {
        match l {
            Some(l) => l.items.iter().map(|s| self.one(l.file, s)).collect(),
            None => Ok(default
                .iter()
                .map(|d| template::expand(d, &self.vars).expect("default templates are valid"))
                .collect()),
        }
    }
}

fn read_source(path: &Path) -> Result<SourceFile, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        text,
    })
}

/// Checks every template in a layer, so a bad one is reported against its own file even when
/// another file's value would have been used.
fn check_layer_templates(file: &SourceFile, layer: &Layer) -> Result<(), RecipeError> {
    let mut all: Vec<&Spanned<String>> = Vec::new();
    all.extend(layer.artifact.iter());
    if let Some(s) = &layer.source {
        all.extend(s.url.iter());
        all.extend(s.mirrors.iter().flatten());
    }
    for r in layer.resources.iter().flatten() {
        all.push(&r.url);
        all.extend(r.mirrors.iter());
        all.extend(r.dest.iter());
    }
    if let Some(b) = &layer.build {
        all.extend(b.env.iter().flat_map(|e| e.values()));
        for list in [
            &b.configure,
            &b.build,
            &b.install,
            &b.requires,
            &b.stack_packages,
        ] {
            all.extend(list.iter().flatten());
        }
    }
    if let Some(t) = &layer.test {
        all.extend(t.commands.iter().flatten());
        all.extend(t.allow_missing.iter().flatten());
    }
    for s in all {
        template::check(s.get_ref()).map_err(|e| file.error(s.span(), e.to_string()))?;
    }
    if let Some(p) = &layer.prefix {
        let v = p.get_ref();
        if !v.starts_with('/') || v.contains(['{', '}']) || v.split('/').any(|c| c == "..") {
            return Err(file.error(
                p.span(),
                format!("prefix `{v}` must be an absolute path without templates or `..`"),
            ));
        }
        if v.trim_end_matches('/').is_empty() {
            return Err(file.error(
                p.span(),
                "prefix `/` would install the runtime over the whole file system",
            ));
        }
    }
    Ok(())
}

/// Loads, merges and templates one version's recipe from its files.
pub fn load(
    runtime: &RuntimeName,
    version: &Version,
    runtime_file: Option<&Path>,
    version_file: &Path,
    opts: &LoadOptions,
) -> Result<Recipe, RecipeError> {
    let base_file = runtime_file.map(read_source).transpose()?;
    let over_file = read_source(version_file)?;
    let base = match &base_file {
        Some(f) => {
            let l = f.parse()?;
            check_layer_templates(f, &l)?;
            l
        }
        None => Layer::default(),
    };
    let over = over_file.parse()?;
    check_layer_templates(&over_file, &over)?;
    let base_f = base_file.as_ref().unwrap_or(&over_file);
    let over_f = &over_file;
    let mut warnings = Vec::new();

    let stack = merge_opt(at(over_f, over.stack), at(base_f, base.stack));
    let prefix = merge_opt(at(over_f, over.prefix), at(base_f, base.prefix));
    let artifact = merge_opt(at(over_f, over.artifact), at(base_f, base.artifact));
    let description = merge_opt(at(over_f, over.description), at(base_f, base.description));

    let revision = over.revision.or(base.revision).unwrap_or(0);
    let stack_name = stack
        .as_ref()
        .map_or(DEFAULT_STACK.to_string(), |s| s.value.get_ref().clone());
    let prefix_value = prefix.as_ref().map_or_else(
        || DEFAULT_PREFIX.replace("{runtime}", runtime.as_str()),
        |p| p.value.get_ref().trim_end_matches('/').to_string(),
    );
    let prefix_outside_app = over
        .prefix_outside_app
        .or(base.prefix_outside_app)
        .unwrap_or(false);
    if let Some(p) = &prefix
        && !prefix_outside_app
        && !prefix_value.starts_with(&format!("{APP_DIR}/"))
    {
        let mut e = p.file.error(
            p.value.span(),
            if prefix_value == APP_DIR {
                format!(
                    "prefix `{APP_DIR}` installs the runtime at the root of the app, over the app's own `bin/`"
                )
            } else {
                format!("prefix `{prefix_value}` is outside {APP_DIR}, where a dyno runs the app")
            },
        );
        if let RecipeError::Invalid { hint, .. } = &mut e {
            *hint = Some(format!(
                "give the runtime a folder of its own such as `{}`, or set `prefix_outside_app = true` if it really belongs there",
                DEFAULT_PREFIX.replace("{runtime}", runtime.as_str())
            ));
        }
        return Err(e);
    }
    let vars = [
        ("runtime", runtime.to_string()),
        ("version", version.to_string()),
        ("major", version.major().to_string()),
        ("minor", version.minor().to_string()),
        ("patch", version.patch().to_string()),
        ("prefix", prefix_value.clone()),
        ("stack", stack_name.clone()),
        ("jobs", opts.jobs.to_string()),
        ("revision", revision.to_string()),
    ]
    .into_iter()
    .collect();
    let t = Templater { vars };

    // [source]
    let (bs, os) = (
        base.source.unwrap_or_default(),
        over.source.unwrap_or_default(),
    );
    let base_sum = checksum_of(base_f, "[source]", bs.sha256, bs.sha512, bs.sha1)?;
    let over_sum = checksum_of(over_f, "[source]", os.sha256, os.sha512, os.sha1)?;
    let url =
        merge_opt(at(over_f, os.url), at(base_f, bs.url)).ok_or_else(|| RecipeError::Invalid {
            path: over_file.path.clone(),
            line: 1,
            message: "no [source] url in this file or in runtime.toml".into(),
            hint: Some(
                "add `url = \"https://…/{runtime}-{version}.tar.gz\"` under [source]".into(),
            ),
        })?;
    let (checksum, sum_line, sum_file) =
        over_sum.or(base_sum).ok_or_else(|| RecipeError::Invalid {
            path: over_file.path.clone(),
            line: url.file.line_of(url.value.span().start),
            message: "[source] has no checksum".into(),
            hint: Some(
                "add `sha256 = \"…\"` from an authoritative source (the project's SHA file or a packaging project); `packager checksum URL` computes one to compare with"
                    .into(),
            ),
        })?;
    if checksum.algo().is_weak() {
        warnings.push(format!(
            "{}:{sum_line}: the source is pinned by sha1, which is weak; prefer sha256 where an authoritative one exists",
            sum_file.path.display()
        ));
    }
    let mirrors = merge_opt_list(list_at(over_f, os.mirrors), list_at(base_f, bs.mirrors));
    let source = Source {
        url: t.at(&url)?,
        mirrors: t.list(mirrors.as_ref(), &[])?,
        checksum,
        strip_components: os.strip_components.or(bs.strip_components).unwrap_or(1),
    };

    // [[resources]] (an array: replaced as a whole)
    let (res_file, res) = match (over.resources, base.resources) {
        (Some(r), _) => (over_f, r),
        (None, Some(r)) => (base_f, r),
        (None, None) => (over_f, Vec::new()),
    };
    let mut resources = Vec::new();
    for r in res {
        let url_span = r.url.span();
        let (checksum, _, _) = checksum_of(res_file, "[[resources]]", r.sha256, r.sha512, r.sha1)?
            .ok_or_else(|| res_file.error(url_span.clone(), "resource has no checksum"))?;
        if checksum.algo().is_weak() {
            warnings.push(format!(
                "{}:{}: a resource is pinned by sha1, which is weak",
                res_file.path.display(),
                res_file.line_of(url_span.start)
            ));
        }
        if r.patch.is_some() && r.unpack {
            return Err(res_file.error(
                url_span,
                "a resource is either a patch (`patch`) or an archive (`unpack`), not both",
            ));
        }
        let url = t.one(res_file, &r.url)?;
        let dest = match &r.dest {
            Some(d) => t.one(res_file, d)?,
            None if r.unpack => String::new(),
            None => url_file_name(&url).to_string(),
        };
        if dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
            return Err(res_file.error(
                r.dest.as_ref().map_or(url_span, Spanned::span),
                format!("resource dest `{dest}` must be a relative path inside the source tree"),
            ));
        }
        resources.push(Resource {
            url,
            mirrors: r
                .mirrors
                .iter()
                .map(|m| t.one(res_file, m))
                .collect::<Result<_, _>>()?,
            checksum,
            dest,
            unpack: r.unpack,
            patch: r.patch,
            strip_components: r.strip_components.unwrap_or(if r.unpack { 1 } else { 0 }),
        });
    }

    // [build]
    let (bb, ob) = (
        base.build.unwrap_or_default(),
        over.build.unwrap_or_default(),
    );
    let limits = build_limits(base_f, &bb, over_f, &ob)?;
    let mut max_unpacked_size = None;
    for (file, layer) in [(base_f, &bb), (over_f, &ob)] {
        if let Some(m) = &layer.max_unpacked_size {
            max_unpacked_size = Some(parse_size(m.get_ref()).map_err(|e| file.error(m.span(), e))?);
        }
    }
    // `[build.env]` is a table: merged key by key, the version file winning.
    let mut env_values = BTreeMap::new();
    for (file, table) in [(base_f, &bb.env), (over_f, &ob.env)] {
        for (k, v) in table.iter().flatten() {
            if k.is_empty() || k.contains('=') || k.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(file.error(
                    v.span(),
                    format!("`{k}` is not an environment variable name"),
                ));
            }
            env_values.insert(k.clone(), t.one(file, v)?);
        }
    }
    let configure = merge_opt_list(list_at(over_f, ob.configure), list_at(base_f, bb.configure));
    let build_cmds = merge_opt_list(list_at(over_f, ob.build), list_at(base_f, bb.build));
    let install = merge_opt_list(list_at(over_f, ob.install), list_at(base_f, bb.install));
    let requires_list = merge_opt_list(list_at(over_f, ob.requires), list_at(base_f, bb.requires));
    let mut requires = Vec::new();
    if let Some(l) = &requires_list {
        for item in &l.items {
            let text = t.one(l.file, item)?;
            let req: Requirement = text
                .parse()
                .map_err(|e: String| l.file.error(item.span(), e))?;
            if &req.runtime == runtime {
                return Err(l
                    .file
                    .error(item.span(), format!("{runtime} cannot require itself")));
            }
            requires.push(req);
        }
    }
    // Patches are applied first, in order, as the configure phase's first commands: a patch
    // that does not apply fails `configure`, naming its file.
    let mut configure_cmds: Vec<String> = resources
        .iter()
        .filter_map(|r| {
            r.patch
                .map(|n| format!("patch -p{n} --forward --batch --input={}", r.dest))
        })
        .collect();
    configure_cmds.extend(t.list(configure.as_ref(), &["./configure --prefix={prefix}"])?);
    let packages = merge_opt_list(
        list_at(over_f, ob.stack_packages),
        list_at(base_f, bb.stack_packages),
    );
    let build = Build {
        env: env_values,
        configure: configure_cmds,
        build: t.list(build_cmds.as_ref(), &["make -j{jobs}"])?,
        install: t.list(install.as_ref(), &["make install"])?,
        requires,
        network: ob.network.or(bb.network).unwrap_or(false),
        include_requires: ob.include_requires.or(bb.include_requires).unwrap_or(false),
        stack_packages: t.list(packages.as_ref(), &[])?,
        limits,
        root: root_phases(base_f, bb.root, over_f, ob.root)?,
        max_unpacked_size,
    };

    // [test]
    let (bt, ot) = (base.test.unwrap_or_default(), over.test.unwrap_or_default());
    let tests = merge_opt_list(list_at(over_f, ot.commands), list_at(base_f, bt.commands));
    let allow = merge_opt_list(
        list_at(over_f, ot.allow_missing),
        list_at(base_f, bt.allow_missing),
    );
    let test = Test {
        commands: t.list(tests.as_ref(), &[])?,
        allow_missing: t.list(allow.as_ref(), &[])?,
    };

    let artifact = match &artifact {
        Some(a) => t.at(a)?,
        None => template::expand(
            if revision > 0 {
                DEFAULT_REVISED_ARTIFACT
            } else {
                DEFAULT_ARTIFACT
            },
            &t.vars,
        )
        .expect("default template is valid"),
    };
    if artifact.is_empty() || artifact.contains('/') || artifact.starts_with('.') {
        return Err(RecipeError::Invalid {
            path: over_file.path.clone(),
            line: 1,
            message: format!("artifact name `{artifact}` must be a plain file name"),
            hint: None,
        });
    }

    let mut files = Vec::new();
    if let Some(f) = &base_file {
        files.push(f.path.clone());
    }
    files.push(over_file.path.clone());
    Ok(Recipe {
        runtime: runtime.clone(),
        version: version.clone(),
        description: description.map(|d| d.value.into_inner()),
        stack: stack_name,
        prefix: prefix_value,
        prefix_outside_app,
        revision,
        artifact,
        source,
        resources,
        build,
        test,
        files,
        warnings,
    })
}

fn merge_opt_list<'a>(over: Option<AtList<'a>>, base: Option<AtList<'a>>) -> Option<AtList<'a>> {
    over.or(base)
}

/// The last path segment of a URL, without query or fragment: the name a download is cached
/// under.
pub fn url_file_name(url: &str) -> &str {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let name = no_query.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        "download"
    } else {
        name
    }
}

// ---------------------------------------------------------------------------------------------
// `show`: the merged recipe written back as TOML.

#[derive(Serialize)]
struct ShowRecipe<'a> {
    runtime: &'a str,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    stack: &'a str,
    prefix: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    prefix_outside_app: bool,
    revision: u32,
    artifact: &'a str,
    source: ShowSource<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<ShowResource<'a>>,
    build: ShowBuild<'a>,
    test: ShowTest<'a>,
}

#[derive(Serialize)]
struct ShowSource<'a> {
    url: &'a str,
    mirrors: &'a [String],
    #[serde(flatten)]
    checksum: BTreeMap<&'static str, &'a str>,
    strip_components: u32,
}

#[derive(Serialize)]
struct ShowResource<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    mirrors: &'a [String],
    #[serde(flatten)]
    checksum: BTreeMap<&'static str, &'a str>,
    dest: &'a str,
    unpack: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<u32>,
    strip_components: u32,
}

#[derive(Serialize)]
struct ShowBuild<'a> {
    configure: &'a [String],
    build: &'a [String],
    install: &'a [String],
    requires: Vec<&'a str>,
    include_requires: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stack_packages: &'a [String],
    network: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    root: &'a [String],
    env: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ShowTest<'a> {
    commands: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allow_missing: &'a [String],
}

fn checksum_map(c: &Checksum) -> BTreeMap<&'static str, &str> {
    [(c.algo().name(), c.hex())].into_iter().collect()
}

impl Recipe {
    /// The merged, templated recipe as TOML, in the recipe format (plus `runtime` and
    /// `version`).
    pub fn to_toml(&self) -> String {
        let show = ShowRecipe {
            runtime: self.runtime.as_str(),
            version: self.version.to_string(),
            description: self.description.as_deref(),
            stack: &self.stack,
            prefix: &self.prefix,
            prefix_outside_app: self.prefix_outside_app,
            revision: self.revision,
            artifact: &self.artifact,
            source: ShowSource {
                url: &self.source.url,
                mirrors: &self.source.mirrors,
                checksum: checksum_map(&self.source.checksum),
                strip_components: self.source.strip_components,
            },
            resources: self
                .resources
                .iter()
                .map(|r| ShowResource {
                    url: &r.url,
                    mirrors: &r.mirrors,
                    checksum: checksum_map(&r.checksum),
                    dest: &r.dest,
                    unpack: r.unpack,
                    patch: r.patch,
                    strip_components: r.strip_components,
                })
                .collect(),
            build: ShowBuild {
                configure: &self.build.configure,
                build: &self.build.build,
                install: &self.build.install,
                requires: self
                    .build
                    .requires
                    .iter()
                    .map(|r| r.text.as_str())
                    .collect(),
                include_requires: self.build.include_requires,
                stack_packages: &self.build.stack_packages,
                network: self.build.network,
                root: &self.build.root,
                env: &self.build.env,
            },
            test: ShowTest {
                commands: &self.test.commands,
                allow_missing: &self.test.allow_missing,
            },
        };
        toml::to_string_pretty(&show).expect("a recipe always serialises")
    }
}

/// The `[build]` limits, the version file's winning key by key.
fn build_limits(
    base_f: &SourceFile,
    bb: &BuildLayer,
    over_f: &SourceFile,
    ob: &BuildLayer,
) -> Result<Limits, RecipeError> {
    let mut limits = Limits::default();
    for (file, layer) in [(base_f, bb), (over_f, ob)] {
        if let Some(m) = &layer.memory {
            limits.memory = Some(parse_memory(m.get_ref()).map_err(|e| file.error(m.span(), e))?);
        }
        if let Some(c) = &layer.cpus {
            let cpus = *c.get_ref();
            if !(cpus.is_finite() && (0.01..=4096.0).contains(&cpus)) {
                return Err(file.error(
                    c.span(),
                    format!("cpus = {cpus} is not a number of CPUs (0.01 or more)"),
                ));
            }
            limits.millicpus = Some((cpus * 1000.0).round() as u64);
        }
        if let Some(p) = &layer.pids {
            let pids = *p.get_ref();
            if pids < 16 {
                return Err(file.error(
                    p.span(),
                    format!("pids = {pids} is too few for a build (16 or more)"),
                ));
            }
            limits.pids = Some(pids as u64);
        }
    }
    Ok(limits)
}

/// `root`: the version file's value replaces the shared one.
fn root_phases(
    base_f: &SourceFile,
    base: Option<Spanned<RootLayer>>,
    over_f: &SourceFile,
    over: Option<Spanned<RootLayer>>,
) -> Result<Vec<String>, RecipeError> {
    let (file, layer) = match (over, base) {
        (Some(o), _) => (over_f, o),
        (None, Some(b)) => (base_f, b),
        (None, None) => return Ok(Vec::new()),
    };
    let span = layer.span();
    match layer.into_inner() {
        RootLayer::All(true) => Ok(PHASES.iter().map(|p| p.to_string()).collect()),
        RootLayer::All(false) => Ok(Vec::new()),
        RootLayer::Phases(list) => {
            let mut phases = Vec::new();
            for p in list {
                if !PHASES.contains(&p.as_str()) {
                    return Err(file.error(
                        span.clone(),
                        format!("`{p}` is not a phase (root = true, or a list of configure, build, install)"),
                    ));
                }
                if !phases.contains(&p) {
                    phases.push(p);
                }
            }
            Ok(phases)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The catalogue: every runtime and version under a recipes directory.

/// One runtime's folder.
#[derive(Debug, Clone)]
pub struct RuntimeEntry {
    /// The runtime.
    pub name: RuntimeName,
    /// Its folder.
    pub dir: PathBuf,
    /// Its versions, sorted, each with its file.
    pub versions: Vec<(Version, PathBuf)>,
}

impl RuntimeEntry {
    /// The shared defaults file, when there is one.
    pub fn runtime_file(&self) -> Option<PathBuf> {
        let p = self.dir.join(RUNTIME_FILE);
        p.is_file().then_some(p)
    }
}

/// Every runtime and version under a recipes directory.
#[derive(Debug, Clone)]
pub struct Catalogue {
    dir: PathBuf,
    runtimes: BTreeMap<RuntimeName, RuntimeEntry>,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, RecipeError> {
    let io = |source| RecipeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

impl Catalogue {
    /// Scans a recipes directory: every folder (but `stacks/` and hidden ones) is a runtime;
    /// every `*.toml` in it but `runtime.toml` is a version.
    pub fn open(dir: &Path) -> Result<Self, RecipeError> {
        let mut runtimes = BTreeMap::new();
        for path in read_dir_sorted(dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') || name == STACKS_DIR {
                continue;
            }
            let runtime: RuntimeName = name.parse()?;
            let mut versions = Vec::new();
            for file in read_dir_sorted(&path)? {
                let fname = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !file.is_file() || fname == RUNTIME_FILE {
                    continue;
                }
                let Some(stem) = fname.strip_suffix(".toml") else {
                    continue;
                };
                let version: Version = stem.parse().map_err(|source| RecipeError::BadFileName {
                    path: file.clone(),
                    source,
                })?;
                versions.push((version, file));
            }
            versions.sort_by(|a, b| a.0.cmp(&b.0));
            runtimes.insert(
                runtime.clone(),
                RuntimeEntry {
                    name: runtime,
                    dir: path,
                    versions,
                },
            );
        }
        Ok(Catalogue {
            dir: dir.to_path_buf(),
            runtimes,
        })
    }

    /// The recipes directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every runtime, by name.
    pub fn runtimes(&self) -> impl Iterator<Item = &RuntimeEntry> {
        self.runtimes.values()
    }

    /// One runtime.
    pub fn runtime(&self, name: &str) -> Result<&RuntimeEntry, RecipeError> {
        self.runtimes
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, e)| e)
            .ok_or_else(|| RecipeError::UnknownRuntime {
                name: name.to_string(),
                dir: self.dir.clone(),
                known: self.runtimes.keys().map(ToString::to_string).collect(),
            })
    }

    /// The versions of `runtime` that a selector picks: every version for `None`, exactly one
    /// for a version (`3.2.8`), the matching ones for a requirement (`^3.2`, `3.2.*`).
    pub fn select(
        &self,
        runtime: &str,
        selector: Option<&str>,
    ) -> Result<Vec<Version>, RecipeError> {
        let entry = self.runtime(runtime)?;
        let all = entry.versions.iter().map(|(v, _)| v);
        let picked: Vec<Version> = match selector {
            None => all.cloned().collect(),
            Some(s) if !VersionReq::looks_like_req(s) => {
                let want: Version = s.parse()?;
                all.filter(|v| **v == want).cloned().collect()
            }
            Some(s) => {
                let req: VersionReq = s.parse()?;
                all.filter(|v| req.matches(v)).cloned().collect()
            }
        };
        if picked.is_empty() && selector.is_some() {
            return Err(RecipeError::NoMatch {
                runtime: runtime.to_string(),
                wanted: selector.unwrap_or_default().to_string(),
                available: entry.versions.iter().map(|(v, _)| v.to_string()).collect(),
            });
        }
        Ok(picked)
    }

    /// Loads one version's recipe.
    pub fn load(
        &self,
        runtime: &str,
        version: &Version,
        opts: &LoadOptions,
    ) -> Result<Recipe, RecipeError> {
        let entry = self.runtime(runtime)?;
        let (_, file) = entry
            .versions
            .iter()
            .find(|(v, _)| v == version)
            .ok_or_else(|| RecipeError::NoMatch {
                runtime: runtime.to_string(),
                wanted: version.to_string(),
                available: entry.versions.iter().map(|(v, _)| v.to_string()).collect(),
            })?;
        load(
            &entry.name,
            version,
            entry.runtime_file().as_deref(),
            file,
            opts,
        )
    }
}
