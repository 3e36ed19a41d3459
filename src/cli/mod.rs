//! Command-line interface: argument definitions and dispatch. This layer (and only this layer)
//! writes to the terminal: data to stdout, logs and progress to stderr.

mod commands;
mod shell;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Builds the prebuilt runtime binaries that Heroku-style buildpacks download.
#[derive(Debug, Parser)]
#[command(name = "packager", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Folder of recipes (`<runtime>/runtime.toml`, `<runtime>/<version>.toml`)
    #[arg(
        long,
        global = true,
        env = "PACKAGER_RECIPES",
        default_value = "recipes",
        value_name = "DIR"
    )]
    pub recipes: PathBuf,
    /// Download cache folder
    #[arg(
        long,
        global = true,
        env = "PACKAGER_CACHE",
        default_value = "cache",
        value_name = "DIR"
    )]
    pub cache: PathBuf,
    /// Content-addressed mirror tried first, as {URL}/{algo}/{hex} (repeatable or comma-separated)
    #[arg(
        long = "mirror",
        global = true,
        env = "PACKAGER_MIRROR",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub mirrors: Vec<String>,
    /// Show more (build output, debug logs); repeat for more
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Show only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When to use colours (NO_COLOR is honoured with `auto`)
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,
    /// Memory of each build and test container, swap included (`8G`, `512M`); over the
    /// recipe's `[build] memory` (default: 3/4 of the engine's, shared by the running builds)
    #[arg(long, global = true, env = "PACKAGER_MEMORY", value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// CPUs of each build and test container (`1.5`); over the recipe's `[build] cpus`
    /// (default: its {jobs})
    #[arg(long, global = true, env = "PACKAGER_CPUS", value_name = "N", value_parser = parse_cpus)]
    pub cpus: Option<u64>,
    /// Processes (and threads) at once in each build and test container; over the recipe's
    /// `[build] pids` (default: 4096)
    #[arg(long, global = true, env = "PACKAGER_PIDS_LIMIT", value_name = "N", value_parser = clap::value_parser!(u64).range(16..))]
    pub pids_limit: Option<u64>,
    /// How long each build phase (configure, build, install) may run (`6h`, `90m`); over the
    /// recipe's `[build] timeout` (default: 6h)
    #[arg(long, global = true, env = "PACKAGER_TIMEOUT", value_name = "DURATION", value_parser = packager::recipe::parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    /// How long the test step may run (`30m`); over the recipe's `[test] timeout` (default:
    /// 30m)
    #[arg(long, global = true, env = "PACKAGER_TEST_TIMEOUT", value_name = "DURATION", value_parser = packager::recipe::parse_timeout)]
    pub test_timeout: Option<std::time::Duration>,
    /// The most bytes each build log keeps (`256M`): past seven eighths of it, only the last
    /// eighth is kept (default: 64M)
    #[arg(long, global = true, env = "PACKAGER_LOG_LIMIT", value_name = "SIZE", value_parser = parse_log_limit)]
    pub log_limit: Option<u64>,
    /// The engine arm64 builds run on (`unix:///…`, `tcp://…`), such as a native arm64 machine;
    /// default: the default engine (DOCKER_HOST), under emulation when it is not arm64
    #[arg(
        long,
        global = true,
        env = "PACKAGER_DOCKER_HOST_ARM64",
        value_name = "URL"
    )]
    pub engine_arm64: Option<String>,
    /// The engine amd64 builds run on; default: the default engine (DOCKER_HOST)
    #[arg(
        long,
        global = true,
        env = "PACKAGER_DOCKER_HOST_AMD64",
        value_name = "URL"
    )]
    pub engine_amd64: Option<String>,
    /// FOR TESTS ONLY: a networked build's requests to NAME:PORT go to 127.0.0.1:PORT when its
    /// recipe lists NAME (repeatable or comma-separated); the one way a build reaches loopback
    #[arg(
        long = "egress-test-host",
        global = true,
        env = "PACKAGER_EGRESS_TEST_HOST",
        value_delimiter = ',',
        value_name = "NAME:PORT",
        hide = true
    )]
    pub egress_test_hosts: Vec<packager::egress::TestHost>,
}

fn parse_memory(text: &str) -> Result<u64, String> {
    packager::recipe::parse_memory(text)
}

/// A log limit: a size of at least 1 MiB.
fn parse_log_limit(text: &str) -> Result<u64, String> {
    match packager::recipe::parse_size(text)? {
        n if n >= 1 << 20 => Ok(n),
        _ => Err(format!("a log limit of `{text}` is below the least (1M)")),
    }
}

/// One of `--vary`'s names; `none` is `None`.
fn parse_variation(text: &str) -> Result<Option<packager::reproduce::Variation>, String> {
    match text {
        "none" => Ok(None),
        name => name.parse().map(Some),
    }
}

/// CPUs as thousandths.
fn parse_cpus(text: &str) -> Result<u64, String> {
    match text.parse::<f64>() {
        Ok(c) if c.is_finite() && (0.01..=4096.0).contains(&c) => Ok((c * 1000.0).round() as u64),
        _ => Err(format!("`{text}` is not a number of CPUs (0.01 or more)")),
    }
}

impl Global {
    /// The engines given for particular architectures.
    pub fn engines(&self) -> std::collections::BTreeMap<packager::arch::Arch, String> {
        use packager::arch::Arch;
        [
            (Arch::Amd64, &self.engine_amd64),
            (Arch::Arm64, &self.engine_arm64),
        ]
        .into_iter()
        .filter_map(|(a, h)| h.as_ref().filter(|h| !h.is_empty()).map(|h| (a, h.clone())))
        .collect()
    }

    /// The limits set on the command line.
    pub fn limits(&self) -> packager::recipe::Limits {
        packager::recipe::Limits {
            memory: self.memory,
            millicpus: self.cpus,
            pids: self.pids_limit,
            timeout: self.timeout,
            test_timeout: self.test_timeout,
            log: self.log_limit,
        }
    }
}

/// When to colour output.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Color {
    /// When the output is a terminal and NO_COLOR is not set
    Auto,
    /// Always
    Always,
    /// Never
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List runtimes and their versions, sorted by version
    List {
        /// Only this runtime
        runtime: Option<String>,
        /// Print JSON for machines
        #[arg(long)]
        json: bool,
    },
    /// Print the fully merged and templated recipe of one version (what a build will use)
    Show {
        /// The runtime
        runtime: String,
        /// The version
        version: String,
    },
    /// Download sources and resources into the cache, verified by checksum
    Fetch {
        /// The runtime
        runtime: String,
        /// Versions or semver requirements (`3.2.8`, `^3.2`, `3.2.*`); none means every version
        #[arg(value_name = "VERSION|REQ")]
        selectors: Vec<String>,
        /// Downloads at the same time
        #[arg(short, long, default_value_t = 4)]
        jobs: usize,
    },
    /// Build versions in clean containers (what they require first), test and publish them;
    /// what is published with the same inputs is skipped
    Build {
        /// `RUNTIME [VERSION|REQ]…`, several allowed (`mono 3.2.8 lua '^5.4'`); a runtime alone
        /// means every version
        #[arg(value_name = "SELECTOR", required_unless_present = "all")]
        selectors: Vec<String>,
        /// Every version of every runtime
        #[arg(long, conflicts_with = "selectors")]
        all: bool,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Open a shell (or run a command) in a build container, set up as a build would
    #[command(after_long_help = SHELL_EXAMPLES)]
    Shell(ShellArgs),
    /// Builder images (stacks): list them, or build one ahead of time
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
    /// Print the plan for a selection without building: each job, its build key and status
    Plan {
        /// `RUNTIME [VERSION|REQ]…`, several allowed (`mono 3.2.8 lua '^5.4'`)
        #[arg(value_name = "SELECTOR", required_unless_present = "all")]
        selectors: Vec<String>,
        /// Every version of every runtime
        #[arg(long, conflicts_with = "selectors")]
        all: bool,
        /// Plan as `build --force` would: rebuild what is published, replace conflicts
        #[arg(long)]
        force: bool,
        /// Print JSON for machines (same as --format json)
        #[arg(long)]
        json: bool,
        /// Output format
        #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
        format: PlanFormat,
        #[command(flatten)]
        arch: ArchArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a runtime's inventory (the index buildpacks read), or regenerate inventories
    Inventory {
        /// The runtime whose inventory to print
        #[arg(required_unless_present = "rebuild")]
        runtime: Option<String>,
        /// The stack (default: the stack of the runtime's recipes; with --rebuild: every stack
        /// in the recipes folder)
        #[arg(long)]
        stack: Option<String>,
        /// Regenerate the inventories from the artifacts in the store and their metadata
        #[arg(long, conflicts_with = "runtime")]
        rebuild: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rebuild a version from a clean slate and compare it with the published artifact (or build
    /// it twice): exit 0 when identical, 1 with a report of what differs
    Verify {
        /// The runtime
        #[arg(required_unless_present = "all")]
        runtime: Option<String>,
        /// The version
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        version: Option<String>,
        /// Every version (of RUNTIME, when given), one after the other, with a table at the end
        #[arg(long)]
        all: bool,
        /// Build twice and compare the builds, instead of comparing with the store
        #[arg(long)]
        twice: bool,
        /// What the rebuild varies, comma-separated: hostname, umask, jobs, time; or none
        #[arg(
            long,
            value_name = "WHAT",
            value_delimiter = ',',
            default_value = "hostname,umask,jobs,time",
            value_parser = parse_variation
        )]
        vary: Vec<Option<packager::reproduce::Variation>>,
        /// Copy both artifacts into DIR (reference/NAME, rebuild/NAME), e.g. for diffoscope
        #[arg(long, value_name = "DIR")]
        keep_artifacts: Option<PathBuf>,
        /// Print the result as JSON for machines
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        arch: OneArch,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Test a published artifact (or a file) again, without rebuilding it: in a fresh container
    /// of the stack's run image, the linkage gate and the recipe's test commands
    Test {
        /// The runtime
        runtime: String,
        /// The version
        version: String,
        /// Test this artifact file instead of the one in the store
        #[arg(long, value_name = "FILE")]
        artifact: Option<PathBuf>,
        #[command(flatten)]
        arch: OneArch,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Look after the cache: what it holds, prune it, re-hash its downloads
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the sha256 of a URL or a file (to compare with an authoritative checksum)
    Checksum {
        /// An http(s) URL or a local file
        #[arg(value_name = "URL|FILE")]
        target: String,
    },
}

/// The architectures to build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchChoice {
    /// x86-64
    Amd64,
    /// 64-bit ARM (emulated with qemu-user-static on an amd64 engine)
    Arm64,
    /// Both
    All,
}

/// `--arch`, repeatable: the architectures to build for.
#[derive(Debug, Args)]
pub struct ArchArgs {
    /// Build for this architecture (repeatable, or `all`); default: the engine host's
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    pub arch: Vec<ArchChoice>,
}

impl ArchArgs {
    /// The architectures asked for, each once; empty means the host's.
    pub fn arches(&self) -> Vec<packager::arch::Arch> {
        use packager::arch::Arch;
        let mut out = Vec::new();
        for choice in &self.arch {
            let these: &[Arch] = match choice {
                ArchChoice::Amd64 => &[Arch::Amd64],
                ArchChoice::Arm64 => &[Arch::Arm64],
                ArchChoice::All => &[Arch::Amd64, Arch::Arm64],
            };
            for a in these {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }
}

/// `--arch` of commands about one build.
#[derive(Debug, Args)]
pub struct OneArch {
    /// The architecture (default: the engine host's)
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    pub arch: Option<ArchName>,
}

/// One architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchName {
    /// x86-64
    Amd64,
    /// 64-bit ARM
    Arm64,
}

impl OneArch {
    /// The architecture asked for, or the host's.
    pub fn get(&self) -> packager::arch::Arch {
        match self.arch {
            Some(ArchName::Amd64) => packager::arch::Arch::Amd64,
            Some(ArchName::Arm64) => packager::arch::Arch::Arm64,
            None => packager::arch::Arch::host(),
        }
    }
}

/// Options of commands that build.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub arch: ArchArgs,
    /// Rebuild what is published with the same inputs, and replace what was published with
    /// other inputs
    #[arg(long)]
    pub force: bool,
    /// Builds at the same time (default: the number of cores, at most 4)
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Stop at the first failure: start nothing more, cancel running builds
    #[arg(long)]
    pub fail_fast: bool,
    /// Write the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Keep the container of a failed build, to look inside it (`packager shell --attach`)
    #[arg(long)]
    pub keep: bool,
    /// Parallel compile jobs inside each build ({jobs}, $JOBS); default: the cores divided
    /// among the running builds
    #[arg(long, value_name = "N")]
    pub make_jobs: Option<usize>,
    /// When the build fails in its container, open a shell there (as the failure left it);
    /// the build still fails when the shell exits
    #[arg(long)]
    pub shell_on_failure: bool,
    /// Compile without the compiler cache (ccache in cache/ccache/), as `packager verify` does;
    /// the artifact is the same either way
    #[arg(long)]
    pub no_compiler_cache: bool,
}

/// The store artifacts are published to (and looked up in).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: a folder, a file:// URL or s3://BUCKET[/PREFIX]
    #[arg(
        long,
        env = "PACKAGER_STORE",
        default_value = "dist",
        value_name = "URL"
    )]
    pub store: String,
    #[command(flatten)]
    pub s3: S3Args,
}

impl StoreArgs {
    /// Opens the store.
    pub async fn open(
        &self,
    ) -> Result<packager::publish::AnyStore, packager::publish::PublishError> {
        packager::publish::AnyStore::open_with(&self.store, self.s3.options()).await
    }
}

/// Options of the S3 store (`--store s3://…`). Credentials, region and profile come from the
/// standard AWS chain (environment, AWS_PROFILE, shared files, SSO, instance roles).
#[derive(Debug, Args)]
#[command(next_help_heading = "S3 store")]
pub struct S3Args {
    /// S3-compatible endpoint (path-style addressing); default: AWS_ENDPOINT_URL, else AWS
    #[arg(long, env = "PACKAGER_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET (default with a custom endpoint) or BUCKET.ENDPOINT
    #[arg(long, env = "PACKAGER_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// Send the sha256 as the S3 checksum (always), or only checksums an operation requires,
    /// for stores that reject the x-amz-checksum headers (when-required)
    #[arg(
        long,
        env = "PACKAGER_S3_CHECKSUMS",
        value_enum,
        default_value_t = S3Checksums::Always,
        value_name = "WHEN"
    )]
    pub s3_checksums: S3Checksums,
    /// Canned ACL of published objects (off by default)
    #[arg(
        long,
        env = "PACKAGER_S3_ACL",
        value_name = "ACL",
        value_parser = ["private", "public-read", "authenticated-read", "bucket-owner-read", "bucket-owner-full-control"]
    )]
    pub acl: Option<String>,
    /// Base URL that serves the bucket's root, for the URLs buildpacks download from
    /// (default: derived from the bucket and endpoint)
    #[arg(long, env = "PACKAGER_PUBLIC_URL", value_name = "BASE")]
    pub public_url: Option<String>,
    /// Size of a multipart part in MiB (min 5); larger artifacts are uploaded in parts
    #[arg(long, env = "PACKAGER_S3_PART_SIZE", default_value_t = 16, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub s3_part_size: u64,
    /// Parts uploaded at the same time
    #[arg(long, env = "PACKAGER_S3_CONCURRENCY", default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub s3_concurrency: u64,
}

/// When to send S3 checksum headers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum S3Checksums {
    /// Always send x-amz-checksum-sha256 (the server verifies the bytes)
    Always,
    /// Content-MD5 instead of x-amz-checksum headers (stores that reject those)
    WhenRequired,
}

impl S3Args {
    /// The library's options.
    pub fn options(&self) -> packager::publish::S3Options {
        use packager::publish::{ChecksumMode, S3Options};
        S3Options {
            part_size: self.s3_part_size * 1024 * 1024,
            concurrency: self.s3_concurrency as usize,
            checksums: match self.s3_checksums {
                S3Checksums::Always => ChecksumMode::Always,
                S3Checksums::WhenRequired => ChecksumMode::WhenRequired,
            },
            acl: self.acl.clone(),
            endpoint: self.endpoint_url.clone(),
            force_path_style: self.s3_path_style,
            public_url: self.public_url.clone(),
        }
    }
}

const SHELL_EXAMPLES: &str = "\
Examples:
  packager shell ruby 3.3.6                      a shell in the unpacked sources
  packager shell ruby 3.3.6 --after configure    … after running configure
  packager shell ruby 3.3.6 -- make -n           run one command, exit with its code
  echo 'cat config.log' | packager shell ruby 3.3.6 --after configure
  packager shell --attach 0123456789ab           re-enter a kept container";

/// `packager shell …`
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The runtime
    #[arg(required_unless_present = "attach")]
    pub runtime: Option<String>,
    /// The version
    #[arg(required_unless_present = "attach")]
    pub version: Option<String>,
    /// Run the phases up to and including this one first
    #[arg(long, value_enum, value_name = "PHASE", conflicts_with = "attach")]
    pub after: Option<AfterPhase>,
    /// Keep the container when the shell exits (and print how to come back)
    #[arg(long, conflicts_with = "attach")]
    pub keep: bool,
    /// Re-enter a container kept by `--keep` (id, id prefix or name)
    #[arg(
        long,
        value_name = "CONTAINER",
        conflicts_with_all = ["runtime", "version"]
    )]
    pub attach: Option<String>,
    /// Parallel compile jobs inside the container ($JOBS); default: the number of CPUs
    #[arg(long, value_name = "N", conflicts_with = "attach")]
    pub make_jobs: Option<usize>,
    /// Compile without the compiler cache (ccache in cache/ccache/), as `packager verify` does
    #[arg(long, conflicts_with = "attach")]
    pub no_compiler_cache: bool,
    #[command(flatten)]
    pub arch: OneArch,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Run this command (no TTY; output streamed, its exit code returned) instead of a shell
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A phase to stop after.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AfterPhase {
    /// After the `configure` commands
    Configure,
    /// After the `build` commands
    Build,
    /// After the `install` commands
    Install,
}

impl From<AfterPhase> for packager::build::Phase {
    fn from(p: AfterPhase) -> Self {
        match p {
            AfterPhase::Configure => packager::build::Phase::Configure,
            AfterPhase::Build => packager::build::Phase::Build,
            AfterPhase::Install => packager::build::Phase::Install,
        }
    }
}

/// How `plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people
    Table,
    /// Every job as JSON
    Json,
    /// The jobs to build as a GitHub Actions matrix (`{"include":[…]}`)
    GithubMatrix,
}

/// `packager stack …`
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// List the stacks in the recipes folder, with their image tags and whether they exist
    List,
    /// Build (or import) a stack's build and run images now; an unchanged stack is reused
    Build {
        /// The stack (a folder under recipes/stacks)
        name: String,
    },
}

/// `packager cache …`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Per area (sources, logs, work, store, stack images, kept containers): entries, size on
    /// disk, oldest and newest
    Status {
        /// Print JSON for machines
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove stale temp files and build folders, then sources and logs that are old or, least
    /// recently used first, over a size; entries another process holds are never removed
    Prune {
        /// Remove sources and logs unused for longer than this (`30d`, `12h`, `2w`)
        #[arg(long, value_name = "DURATION")]
        older_than: Option<humantime::Duration>,
        /// Then remove the least recently used until sources and logs fit in this (`10G`,
        /// `500MiB`)
        #[arg(long, value_name = "SIZE")]
        max_size: Option<bytesize::ByteSize>,
        /// Print what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
        /// Also remove stack images (with the packager's labels) that no stack in the recipes
        /// folder refers to any more
        #[arg(long)]
        images: bool,
    },
    /// Re-hash every downloaded source; corrupted entries are reported and removed
    Verify,
}

/// Parses the command line, runs the command and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::setup(&cli.global);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            ui::error_line(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let result = tokio::select! {
            r = commands::run(&cli) => Ok(r),
            code = interrupted() => Err(code),
        };
        if result.is_err() {
            // The command's guards have removed its containers; one whose creation was under
            // way when the signal came has none yet: sweep what this process owns.
            // On the default engine and on each engine named for an architecture.
            let sweep = async {
                if let Ok(docker) = packager::docker::Docker::connect().await {
                    let _ = packager::build::remove_own(&docker).await;
                }
                for host in cli.global.engines().values() {
                    if let Ok(docker) = packager::docker::Docker::connect_to(host).await {
                        let _ = packager::build::remove_own(&docker).await;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), sweep).await;
        }
        result
    });
    // A read of stdin may still block a thread of the runtime; don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            ui::render_error(&e);
            ExitCode::from(e.exit_code() as u8)
        }
        Err(code) => {
            if shell::used_terminal() {
                // The shell's prompt may still be on the last line.
                eprintln!();
            }
            ui::error_line("interrupted");
            ExitCode::from(code)
        }
    }
}

/// Resolves with the exit code when the packager is asked to stop: SIGINT (130) — except
/// while an interactive shell owns the terminal, whose Ctrl-C belongs to the shell — SIGTERM
/// (143) or SIGHUP (129). The command's future is then dropped, so its containers are removed
/// and the terminal restored by their guards.
async fn interrupted() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return 130;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                if !shell::interactive() {
                    return 130;
                }
            }
            _ = term.recv() => return 143,
            _ = hup.recv() => return 129,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
