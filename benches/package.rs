//! Packaging throughput, output size and memory, `.tar.gz` and `.tar.zst`, against the
//! reference tools measured in the same run.
//!
//! Generates a tree (default ~500 MB; `PACKAGER_BENCH_MB` to change it) of source-like text,
//! binary-like data and incompressible data in many files, then times, in the same run:
//!
//! * `tar -cf - app | gzip -<level>` and `tar -cf - app | pigz -<level> -p <threads>`
//! * `tar -cf - app | <this binary> --pack-stdin … tar.gz …` (`package_tar_stream` on stdin)
//! * `tar -cf - app | zstd -T0 -<zstd level>` (`-T<threads>` when the thread count is set)
//! * `tar -cf - app | <this binary> --pack-stdin … tar.zst …`
//!
//! and reports wall time, MB/s (10^6 bytes of file content per second), output size and peak
//! RSS for each, and our ratios of wall time and of output size against each reference. Our
//! peak RSS is the packer's own `VmHWM` (from `/proc/self/status` when done); the references'
//! is measured with `/usr/bin/time -f %M` when it is installed. A reference tool that is not
//! installed is reported as missing (with how to install it) and its comparison skipped.
//!
//! Run: `PACKAGER_BENCH_MB=500 cargo bench --bench package`
//! Other knobs: `PACKAGER_BENCH_LEVEL` (gzip, 6), `PACKAGER_BENCH_ZSTD_LEVEL` (19),
//! `PACKAGER_BENCH_THREADS` (CPUs), `PACKAGER_BENCH_DIR` (where to generate; a temp dir by
//! default), `PACKAGER_BENCH_RUNS` (1).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use packager::package::{ArtifactFormat, PackageOptions, package_tar_stream};

/// The peak RSS the issue asks of the packer, in MB.
const RSS_GOAL_MB: f64 = 64.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--pack-stdin") {
        pack_stdin(&args[i + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; filters are not meaningful here. Without it (`cargo test
    // --all-targets` runs this too) a small tree at a fast zstd level checks the benchmark
    // still works.
    let full = args.iter().any(|a| a == "--bench");
    let megabytes: u64 = env_or("PACKAGER_BENCH_MB", if full { 500 } else { 4 });
    let level: u32 = env_or("PACKAGER_BENCH_LEVEL", 6);
    let zstd_level: u32 = env_or("PACKAGER_BENCH_ZSTD_LEVEL", if full { 19 } else { 3 });
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: usize = env_or("PACKAGER_BENCH_THREADS", cpus);
    let runs: usize = env_or("PACKAGER_BENCH_RUNS", 1);
    let tmp = match std::env::var_os("PACKAGER_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let root = tmp.path().join("app");

    let started = Instant::now();
    let stats = generate(&root, megabytes * 1_000_000).expect("generate tree");
    println!(
        "tree: {} files in {} directories, {} symlinks, {:.1} MB in {:.1}s ({})",
        stats.files,
        stats.dirs,
        stats.symlinks,
        mb(stats.bytes),
        started.elapsed().as_secs_f64(),
        root.display()
    );
    println!(
        "gzip level {level}, zstd level {zstd_level}, {threads} compression threads ({cpus} CPUs), {runs} run(s) each"
    );
    let time_tool = Path::new("/usr/bin/time").exists();
    if !time_tool {
        println!(
            "/usr/bin/time is missing (apt-get install time): references' peak RSS not measured"
        );
    }
    let zstd_threads = if threads == cpus {
        "-T0".to_string()
    } else {
        format!("-T{threads}")
    };
    let bench = Bench {
        dir: tmp.path(),
        bytes: stats.bytes,
        time_tool,
    };

    for run in 1..=runs {
        println!("run {run}:");
        println!("  tar.gz, level {level}:");
        let gzip = bench.reference("gzip", &[format!("-{level}")], "ref.tar.gz");
        let pigz = bench.reference(
            "pigz",
            &[format!("-{level}"), "-p".into(), threads.to_string()],
            "ref-pigz.tar.gz",
        );
        let ours = bench.ours(ArtifactFormat::TarGz, level, threads);
        for (name, reference) in [("gzip", &gzip), ("pigz", &pigz)] {
            if let Some(r) = reference {
                compare(&ours, name, r);
            }
        }
        check(&[
            ("gzip", "-t", &gzip),
            ("gzip", "-t", &pigz),
            ("gzip", "-t", &Some(ours)),
        ]);

        println!("  tar.zst, level {zstd_level}:");
        let zstd = bench.reference(
            "zstd",
            &[
                "-q".into(),
                "-c".into(),
                zstd_threads.clone(),
                format!("-{zstd_level}"),
            ],
            "ref.tar.zst",
        );
        let ours = bench.ours(ArtifactFormat::TarZst, zstd_level, threads);
        if let Some(r) = &zstd {
            compare(&ours, &format!("zstd {zstd_threads}"), r);
        }
        let rss = ours.rss_kb.unwrap_or(0) as f64 / 1024.0;
        println!(
            "    peak RSS goal {RSS_GOAL_MB:.0} MB: {} ({rss:.1} MB)",
            if rss <= RSS_GOAL_MB { "met" } else { "NOT met" }
        );
        check(&[("zstd", "-tq", &zstd), ("zstd", "-tq", &Some(ours))]);
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// One output: how long it took, how big it is, the peak RSS of its compressor.
struct Measured {
    label: String,
    path: PathBuf,
    time: Duration,
    size: u64,
    rss_kb: Option<u64>,
}

struct Bench<'a> {
    dir: &'a Path,
    bytes: u64,
    time_tool: bool,
}

impl Bench<'_> {
    /// `tar | tool args > output`, or `None` (said) when the tool is not installed.
    fn reference(&self, tool: &str, args: &[String], output: &str) -> Option<Measured> {
        let installed = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            println!(
                "    {tool}: NOT INSTALLED (apt-get install {tool}): its comparison is skipped"
            );
            return None;
        }
        let path = self.dir.join(output);
        let rss_file = self.dir.join(format!("{output}.rss"));
        let mut command = if self.time_tool {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        command.args(args);
        let time = pipeline(self.dir, &mut command, &path);
        let rss_kb = self
            .time_tool
            .then(|| read_kb(&rss_file, "/usr/bin/time -f %M"));
        let measured = Measured {
            label: format!("tar | {tool} {}", args.join(" ")),
            size: fs::metadata(&path).expect("reference output").len(),
            path,
            time,
            rss_kb,
        };
        self.print(&measured);
        Some(measured)
    }

    /// `tar | this binary --pack-stdin`, our packer.
    fn ours(&self, format: ArtifactFormat, level: u32, threads: usize) -> Measured {
        let path = self.dir.join(format!("ours{}", format.extension()));
        let rss_file = self.dir.join("rss");
        let exe = std::env::current_exe().expect("current exe");
        let mut packer = Command::new(exe);
        packer
            .arg("--pack-stdin")
            .arg(&path)
            .arg(&rss_file)
            .arg(format.as_str())
            .arg(level.to_string())
            .arg(threads.to_string());
        let time = pipeline(self.dir, &mut packer, Path::new("/dev/null"));
        let measured = Measured {
            label: "tar | packager".into(),
            size: fs::metadata(&path).expect("artifact").len(),
            path,
            time,
            rss_kb: Some(read_kb(&rss_file, "the packer's VmHWM")),
        };
        self.print(&measured);
        measured
    }

    fn print(&self, m: &Measured) {
        let rss = m.rss_kb.map_or("n/a".to_string(), |kb| {
            format!("{:.1} MB", kb as f64 / 1024.0)
        });
        println!(
            "    {:<28} {:7.2}s {:7.1} MB/s  output {:8.1} MB  peak RSS {rss}",
            m.label,
            m.time.as_secs_f64(),
            mb(self.bytes) / m.time.as_secs_f64(),
            mb(m.size),
        );
    }
}

/// Our ratios against a reference: wall time (below 1 is faster) and output size (below 1 is
/// smaller).
fn compare(ours: &Measured, name: &str, reference: &Measured) {
    println!(
        "    packager / {name}: wall time {:.2}x, output size {:.3}x",
        ours.time.as_secs_f64() / reference.time.as_secs_f64(),
        ours.size as f64 / reference.size as f64
    );
}

/// Each output passes its tool's integrity test; then it is removed.
fn check(outputs: &[(&str, &str, &Option<Measured>)]) {
    for (tool, flag, m) in outputs {
        let Some(m) = m else { continue };
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            let ok = Command::new(tool).arg(flag).arg(&m.path).status();
            assert!(
                ok.expect("integrity test").success(),
                "{} is valid",
                m.path.display()
            );
        }
        fs::remove_file(&m.path).ok();
    }
}

fn read_kb(path: &Path, what: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{what} in {}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: peak RSS in kB: {e}"))
}

/// Times `tar -cf - app | consumer > output`, both exiting successfully.
fn pipeline(dir: &Path, consumer: &mut Command, output: &Path) -> Duration {
    let started = Instant::now();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "app"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tar");
    let stdout = tar.stdout.take().expect("tar stdout");
    let out = fs::File::create(output).expect("output file");
    let mut consumer = consumer
        .stdin(stdout)
        .stdout(out)
        .spawn()
        .expect("spawn consumer");
    let consumer_status = consumer.wait().expect("wait consumer");
    let tar_status = tar.wait().expect("wait tar");
    let elapsed = started.elapsed();
    assert!(tar_status.success(), "tar failed");
    assert!(consumer_status.success(), "consumer failed");
    elapsed
}

/// `--pack-stdin DEST RSS_FILE FORMAT LEVEL THREADS`: package stdin, then write our peak RSS
/// (kB).
fn pack_stdin(args: &[String]) {
    let [dest, rss_file, format, level, threads] = args else {
        panic!("usage: --pack-stdin DEST RSS_FILE FORMAT LEVEL THREADS");
    };
    let format: ArtifactFormat = format.parse().expect("format");
    let level = level.parse().expect("level");
    let options = PackageOptions {
        format,
        level,
        zstd_level: level,
        threads: threads.parse().expect("threads"),
        ..PackageOptions::new("/app")
    };
    let stdin = io::stdin().lock();
    let artifact = package_tar_stream(stdin, Path::new(dest), &options).expect("package");
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .to_owned();
    fs::write(rss_file, hwm).expect("write RSS");
    eprintln!(
        "    artifact: {} entries, sha256 {}",
        artifact.entries, artifact.sha256
    );
}

#[derive(Default)]
struct Stats {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

/// xorshift64*: deterministic, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "def",
    "end",
    "class",
    "module",
    "self",
    "return",
    "if",
    "else",
    "elsif",
    "unless",
    "while",
    "require",
    "attr_reader",
    "nil",
    "true",
    "false",
    "raise",
    "ArgumentError",
    "yield",
    "block",
    "value",
    "result",
    "buffer",
    "index",
    "length",
    "options",
    "config",
    "path",
    "File",
    "String",
    "Hash",
    "Array",
    "each",
    "map",
    "select",
    "initialize",
    "private",
    "protected",
    "@name",
    "@value",
    "#",
    "=",
    "==",
    "(",
    ")",
    "{",
    "}",
    "|x|",
    "do",
    "0",
    "1",
    "42",
    "\"text\"",
];

fn text(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let mut line = 0usize;
    while out.len() < len {
        if line == 0 {
            let indent = rng.below(4) as usize * 2;
            out.extend(std::iter::repeat_n(b' ', indent));
        }
        if rng.below(12) == 0 {
            // An identifier of its own.
            for _ in 0..rng.below(10) + 3 {
                out.push(b'a' + rng.below(26) as u8);
            }
        } else {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
        line += 1;
        if line > 4 + rng.below(8) as usize {
            out.push(b'\n');
            line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
}

fn binary(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    // Machine-code-like: a small set of opcodes with random operands, zero padding, strings.
    const OPS: &[&[u8]] = &[
        b"\x48\x89\xe5",
        b"\x48\x83\xec",
        b"\xe8",
        b"\x0f\x1f\x44\x00\x00",
        b"\xc3",
        b"\x55",
        b"\x41\x57",
        b"\x48\x8b\x45",
        b"\x74",
        b"\x75",
    ];
    while out.len() < len {
        match rng.below(100) {
            0..=79 => {
                out.extend_from_slice(OPS[rng.below(OPS.len() as u64) as usize]);
                for _ in 0..rng.below(3) {
                    out.push(rng.below(64) as u8);
                }
            }
            80..=89 => out.extend(std::iter::repeat_n(0u8, rng.below(64) as usize)),
            _ => {
                out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(0);
            }
        }
    }
    out.truncate(len);
}

fn generate(root: &Path, target: u64) -> io::Result<Stats> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = Stats::default();
    let mut buf = Vec::new();
    let mut dir_index = 0u64;
    let mut current_dir = PathBuf::new();
    let mut files_in_dir = 0u64;
    while stats.bytes < target {
        if files_in_dir == 0 {
            dir_index += 1;
            let top = [
                "lib/ruby/3.3.0",
                "lib/ruby/gems",
                "include",
                "share/doc",
                "bin",
            ][rng.below(5) as usize];
            current_dir = root
                .join(top)
                .join(format!("pkg{}/sub{}", dir_index / 8, dir_index % 8));
            fs::create_dir_all(&current_dir)?;
            stats.dirs += 1;
            files_in_dir = 10 + rng.below(40);
        }
        files_in_dir -= 1;
        // Mostly small files, some medium, a few large.
        let size = match rng.below(1000) {
            0..=959 => 512 + rng.below(32 * 1024),
            960..=996 => 64 * 1024 + rng.below(2 * 1024 * 1024),
            _ => 4 * 1024 * 1024 + rng.below(28 * 1024 * 1024),
        }
        .min(target - stats.bytes + 1) as usize;
        buf.clear();
        let (kind, executable) = match rng.below(10) {
            0..=5 => ("rb", false),
            6..=8 => ("so", rng.below(2) == 0),
            _ => ("dat", false),
        };
        match kind {
            "rb" => text(&mut rng, size, &mut buf),
            "so" => binary(&mut rng, size, &mut buf),
            _ => {
                buf.resize(size, 0);
                rng.fill(&mut buf);
            }
        }
        let path = current_dir.join(format!("file{}.{kind}", stats.files));
        let mut file = BufWriter::new(fs::File::create(&path)?);
        file.write_all(&buf)?;
        file.flush()?;
        if executable {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        if rng.below(50) == 0 {
            let link = current_dir.join(format!("link{}", stats.files));
            std::os::unix::fs::symlink(path.file_name().expect("name"), link)?;
            stats.symlinks += 1;
        }
        stats.files += 1;
        stats.bytes += size as u64;
    }
    Ok(stats)
}
