//! The recipe as the rest of the pipeline sees it: one version, both files merged, every
//! template expanded. Plain data with public fields, plus the size parsers recipes and the
//! command line share.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::checksum::Checksum;
use crate::version::{Version, VersionReq};

use super::{RecipeError, RuntimeName};

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
    /// Where to get it, templated; the cache's content-addressed mirrors are tried first.
    pub url: String,
    /// More places to get it, tried after `url`.
    pub mirrors: Vec<String>,
    /// The one checksum (sha256, sha512 or sha1) the download must hash to.
    pub checksum: Checksum,
    /// Leading path components to drop when unpacking.
    pub strip_components: u32,
}

/// An extra file: a patch, a bootstrap tarball.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Where to get it, templated; the cache's content-addressed mirrors are tried first. For a
    /// file kept with the recipes (`path`), its `file://` URL, shown but never downloaded.
    pub url: String,
    /// A file kept with the recipes (`path`, resolved): read from there instead of `url`.
    pub local: Option<std::path::PathBuf>,
    /// More places to get it, tried after `url`.
    pub mirrors: Vec<String>,
    /// The one checksum (sha256, sha512 or sha1) the download must hash to.
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
    /// Configure commands: the patch resources' `patch` commands first, then the recipe's
    /// (by default `./configure --prefix={prefix}`).
    pub configure: Vec<String>,
    /// Compile commands (by default `make -j{jobs}`).
    pub build: Vec<String>,
    /// Install commands (by default `make install`).
    pub install: Vec<String>,
    /// Runtimes this one is built against.
    pub requires: Vec<Requirement>,
    /// What the build may reach, through the egress proxy ([`super::Network`]).
    pub network: super::Network,
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
    /// The most bytes the source and resource archives may unpack to together; `None`: 2 GiB
    /// or 50 times their size, whichever is more.
    pub max_unpacked_size: Option<u64>,
    /// The most entries the source and resource archives may hold together; `None`:
    /// [`crate::archive::DEFAULT_MAX_ENTRIES`].
    pub max_unpacked_entries: Option<u64>,
    /// Whether compilers are reached through the compiler cache (ccache, on by default; see
    /// [`crate::build::ccache`]). Not part of the build key: it cannot change the artifact.
    pub compiler_cache: bool,
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
    /// How long each build phase (`configure`, `build`, `install`) may run (`[build] timeout
    /// = "6h"`).
    pub timeout: Option<std::time::Duration>,
    /// How long the test step may run, the linkage gate and every test command together
    /// (`[test] timeout = "30m"`).
    pub test_timeout: Option<std::time::Duration>,
    /// The most bytes a build's log keeps (`--log-limit`; not a recipe field).
    pub log: Option<u64>,
}

impl Limits {
    /// Each limit of `self`, or else of `other`.
    pub fn or(self, other: Limits) -> Limits {
        Limits {
            memory: self.memory.or(other.memory),
            millicpus: self.millicpus.or(other.millicpus),
            pids: self.pids.or(other.pids),
            timeout: self.timeout.or(other.timeout),
            test_timeout: self.test_timeout.or(other.test_timeout),
            log: self.log.or(other.log),
        }
    }
}

/// Parses a duration such as `"6h"`, `"90m"`, `"30s"` or `"1h 30m"`: at least one second.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration (e.g. \"6h\", \"90m\", \"30s\"): {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("timeout `{text}` is shorter than a second"));
    }
    Ok(d)
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
    /// Free text for the people reading the recipe.
    pub description: Option<String>,
    /// The stack it builds on: a folder of `recipes/stacks/` (by default
    /// [`DEFAULT_STACK`](super::DEFAULT_STACK)).
    pub stack: super::StackName,
    /// The install prefix, without a trailing `/` (by default `/app/<runtime>`).
    pub prefix: String,
    /// Whether the prefix may lie outside `/app` (or be `/app` itself).
    pub prefix_outside_app: bool,
    /// Bumped when an already published version must be rebuilt with other inputs: part of
    /// the artifact's name (and of its inventory entry's metadata), so the old one stays.
    pub revision: u32,
    /// The artifact's file name: a plain name, no folders.
    pub artifact: String,
    /// How the artifact is compressed (`format`; by default `tar.gz`).
    pub format: crate::package::ArtifactFormat,
    /// The zstd level of a `tar.zst` artifact (`zstd_level`; by default
    /// [`DEFAULT_ZSTD_LEVEL`](crate::package::DEFAULT_ZSTD_LEVEL)).
    pub zstd_level: u32,
    /// The main source tarball, unpacked as the source tree.
    pub source: Source,
    /// Extra files (patches, bootstrap tarballs) placed in the source tree, in order.
    pub resources: Vec<Resource>,
    /// How to configure, compile and install, and in which container limits.
    pub build: Build,
    /// How the installed artifact is tested.
    pub test: Test,
    /// The files it was read from: runtime.toml (when present) and the version file.
    pub files: Vec<PathBuf>,
    /// Things worth telling the user that are not errors (a weak checksum).
    pub warnings: Vec<String>,
    /// The architecture it is loaded for ([`LoadOptions::arch`]).
    pub arch: crate::arch::Arch,
    /// The architectures it may be built for (`arches = [...]`); `None`: every one.
    pub arches: Option<Vec<crate::arch::Arch>>,
}

impl Recipe {
    /// `runtime version`, with the architecture for any but amd64 (`lua 5.4.4 arm64`): the
    /// name of a job in plans, reports and errors.
    pub fn job_name(&self) -> String {
        match self.arch {
            crate::arch::Arch::Amd64 => format!("{} {}", self.runtime, self.version),
            arch => format!("{} {} {arch}", self.runtime, self.version),
        }
    }
}

/// Settings that templates need but recipes do not hold.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The value of `{jobs}`: parallel compile jobs inside the build.
    pub jobs: usize,
    /// The architecture it is built for: `{arch}`, and part of the artifact's name for any
    /// but amd64.
    pub arch: crate::arch::Arch,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            arch: crate::arch::Arch::host(),
        }
    }
}

impl LoadOptions {
    /// `{jobs}` = `jobs`, for this host's architecture.
    pub fn jobs(jobs: usize) -> Self {
        LoadOptions {
            jobs,
            ..LoadOptions::default()
        }
    }
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
