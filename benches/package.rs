//! Packaging throughput and memory against `tar -cf - DIR | gzip -6`.
//!
//! Generates a tree (default ~500 MB; `PACKAGER_BENCH_MB` to change it) of source-like text,
//! binary-like data and incompressible data in many files, then times, in the same run:
//!
//! * `tar -cf - app | gzip -<level> > ref.tar.gz`
//! * `tar -cf - app | <this binary> --pack-stdin` (which runs `package_tar_stream` on stdin)
//!
//! and reports wall time, MB/s (10^6 bytes of file content per second) for each, the ratio and
//! our peak RSS (the packer reports its own `VmHWM` from `/proc/self/status` when done).
//!
//! Run: `PACKAGER_BENCH_MB=500 cargo bench --bench package`
//! Other knobs: `PACKAGER_BENCH_LEVEL` (6), `PACKAGER_BENCH_THREADS` (CPUs), `PACKAGER_BENCH_DIR`
//! (where to generate; a temp dir by default), `PACKAGER_BENCH_RUNS` (1).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use packager::package::{PackageOptions, package_tar_stream};

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
    // --all-targets` runs this too) a small tree checks the benchmark still works.
    let full = args.iter().any(|a| a == "--bench");
    let megabytes: u64 = env_or("PACKAGER_BENCH_MB", if full { 500 } else { 4 });
    let level: u32 = env_or("PACKAGER_BENCH_LEVEL", 6);
    let threads: usize = env_or(
        "PACKAGER_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, usize::from),
    );
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
    println!("level {level}, {threads} compression threads, {runs} run(s) each");

    for run in 1..=runs {
        let reference = tmp.path().join("ref.tar.gz");
        let gzip_time = pipeline(
            tmp.path(),
            Command::new("gzip").arg(format!("-{level}")),
            &reference,
        );
        let ours = tmp.path().join("ours.tar.gz");
        let rss_file = tmp.path().join("rss");
        let exe = std::env::current_exe().expect("current exe");
        let mut packer = Command::new(exe);
        packer
            .arg("--pack-stdin")
            .arg(&ours)
            .arg(&rss_file)
            .arg(level.to_string())
            .arg(threads.to_string());
        let ours_time = pipeline(tmp.path(), &mut packer, Path::new("/dev/null"));
        let rss_kb: u64 = fs::read_to_string(&rss_file)
            .expect("packer reports its peak RSS")
            .trim()
            .parse()
            .expect("peak RSS in kB");

        for file in [&reference, &ours] {
            let ok = Command::new("gzip").arg("-t").arg(file).status();
            assert!(
                ok.expect("gzip -t").success(),
                "{} is valid",
                file.display()
            );
        }
        let ref_size = fs::metadata(&reference).expect("reference").len();
        let our_size = fs::metadata(&ours).expect("artifact").len();
        let gzip_rate = mb(stats.bytes) / gzip_time.as_secs_f64();
        let our_rate = mb(stats.bytes) / ours_time.as_secs_f64();
        println!("run {run}:");
        println!(
            "  tar | gzip -{level}: {:7.2}s {:7.1} MB/s  output {:.1} MB",
            gzip_time.as_secs_f64(),
            gzip_rate,
            mb(ref_size)
        );
        println!(
            "  tar | packager: {:7.2}s {:7.1} MB/s  output {:.1} MB  peak RSS {:.1} MB",
            ours_time.as_secs_f64(),
            our_rate,
            mb(our_size),
            rss_kb as f64 / 1024.0
        );
        println!(
            "  throughput ratio packager / gzip: {:.2}x; size ratio {:.3}",
            our_rate / gzip_rate,
            our_size as f64 / ref_size as f64
        );
        fs::remove_file(&reference).ok();
        fs::remove_file(&ours).ok();
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
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

/// `--pack-stdin DEST RSS_FILE LEVEL THREADS`: package stdin, then write our peak RSS (kB).
fn pack_stdin(args: &[String]) {
    let [dest, rss_file, level, threads] = args else {
        panic!("usage: --pack-stdin DEST RSS_FILE LEVEL THREADS");
    };
    let options = PackageOptions {
        level: level.parse().expect("level"),
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
        "  artifact: {} entries, sha256 {}",
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
