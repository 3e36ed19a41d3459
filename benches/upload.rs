//! Upload of one large artifact to a local S3 server (moto) with `S3Store::publish` against
//! `aws s3 cp` (awscli from PyPI) on the same file and server, in one run. Targets: throughput
//! ≥ 1.0× `aws s3 cp`, peak RSS of our upload ≤ 100 MB.
//!
//! Run: `cargo bench --bench upload` (needs `moto_server` and `aws`: `pip install 'moto[server]'
//! awscli`). `PACKAGER_BENCH_UPLOAD_MB` sets the size (default 1000; 16 without `--bench`, as
//! under `cargo test --all-targets`), `PACKAGER_BENCH_RUNS` the runs of each (default 3; 1).
//! Ours runs once per part size of `PACKAGER_BENCH_PART_MB` (a comma-separated list of MiB,
//! default `8,16,32,64`, plus the default part size if it is not listed; `aws s3 cp` uses 8 MiB
//! parts, 10 at a time) in each run, interleaved with `aws s3 cp`, and a table of the medians
//! ends the output.
//! Each upload runs in its own process (ours: this binary re-run with `--upload-child`), which
//! reports its peak RSS (`VmHWM`); wall times are of the whole process, medians compared.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::Moto;
use packager::publish::{S3Options, S3Store, Store, Upload};
use sha2::Digest;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` (peak resident set) of this process, in kB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child: publishes `file` to `s3://bucket` at `endpoint`; prints `rss_kb=N`.
fn upload_child(args: &[String]) {
    let [endpoint, bucket, file, sha256, name, part_mb] = args else {
        panic!("usage: --upload-child ENDPOINT BUCKET FILE SHA256 NAME PART_MIB");
    };
    let size = std::fs::metadata(file).unwrap().len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = S3Store::open(
            &format!("s3://{bucket}"),
            S3Options {
                endpoint: Some(endpoint.clone()),
                part_size: part_mb.parse::<u64>().unwrap() << 20,
                concurrency: env_or("PACKAGER_BENCH_CONCURRENCY", 8),
                checksums: if std::env::var_os("PACKAGER_BENCH_WHEN_REQUIRED").is_some() {
                    packager::publish::ChecksumMode::WhenRequired
                } else {
                    packager::publish::ChecksumMode::Always
                },
                ..S3Options::default()
            },
        )
        .await
        .unwrap();
        store
            .publish(
                &Upload {
                    path: file.into(),
                    name: name.clone(),
                    stack: "bench".into(),
                    sha256: sha256.clone(),
                    size,
                    metadata: Default::default(),
                },
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    });
    println!("rss_kb={}", peak_rss_kb());
}

/// Writes `bytes` of incompressible data; returns its sha256.
fn generate(path: &Path, bytes: u64) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    hex::encode(hasher.finalize())
}

fn timed(cmd: &mut Command) -> (Duration, String) {
    let started = Instant::now();
    let o = cmd.output().expect("spawn");
    let elapsed = started.elapsed();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (elapsed, String::from_utf8_lossy(&o.stdout).into_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--upload-child") {
        upload_child(&args[i + 1..]);
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let megabytes: u64 = env_or("PACKAGER_BENCH_UPLOAD_MB", if full { 1000 } else { 16 });
    let runs: usize = env_or("PACKAGER_BENCH_RUNS", if full { 3 } else { 1 });
    let bytes = megabytes * 1_000_000;

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("artifact.tar.gz");
    let sha256 = generate(&file, bytes);
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        moto.bucket("bench-ours").await;
        moto.bucket("bench-awscli").await;
    });
    let env = moto.env();
    let clean_env = |cmd: &mut Command| {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_EC2_METADATA_DISABLED", "true");
    };
    // Deletes what a run uploaded, so that moto's memory does not grow run after run.
    let delete = |bucket: &str, key: &str| {
        rt.block_on(async {
            moto.client()
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        })
    };
    println!(
        "upload of {megabytes} MB (incompressible) to moto_server on loopback, {runs} run(s) each"
    );

    // Ours with each part size of PACKAGER_BENCH_PART_MB and the default one.
    let default_mb = S3Options::default().part_size >> 20;
    let listed = std::env::var("PACKAGER_BENCH_PART_MB").unwrap_or_else(|_| "8,16,32,64".into());
    let mut configs: Vec<u64> = listed
        .split(',')
        .map(|m| {
            m.trim()
                .parse()
                .unwrap_or_else(|_| panic!("PACKAGER_BENCH_PART_MB: `{m}` is not a number of MiB"))
        })
        .chain([default_mb])
        .collect();
    configs.sort_unstable();
    configs.dedup();
    let (mut ours, mut theirs) = (vec![Vec::new(); configs.len()], Vec::new());
    let mut peaks = vec![0u64; configs.len()];
    for run in 0..runs {
        for (c, part_mb) in configs.iter().enumerate() {
            let name = format!("run-{run}-{part_mb}.tar.gz");
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--upload-child",
                &moto.endpoint,
                "bench-ours",
                file.to_str().unwrap(),
                &sha256,
                &name,
                &part_mb.to_string(),
            ]);
            clean_env(&mut cmd);
            let (t, out) = timed(&mut cmd);
            let rss: u64 = out
                .lines()
                .find_map(|l| l.strip_prefix("rss_kb="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peaks[c] = peaks[c].max(rss);
            println!(
                "  packager ({part_mb:>3} MiB parts) run {run}: {:>7.2}s  {:>7.1} MB/s  peak RSS {:.1} MB",
                t.as_secs_f64(),
                bytes as f64 / 1e6 / t.as_secs_f64(),
                rss as f64 / 1024.0
            );
            ours[c].push(t);
            delete("bench-ours", &format!("bench/{name}"));
        }
        let name = format!("run-{run}.tar.gz");

        let mut cmd = Command::new("aws");
        cmd.args([
            "--endpoint-url",
            &moto.endpoint,
            "s3",
            "cp",
            "--only-show-errors",
            file.to_str().unwrap(),
            &format!("s3://bench-awscli/bench/{name}"),
        ]);
        clean_env(&mut cmd);
        let (t, _) = timed(&mut cmd);
        println!(
            "  aws s3 cp                  run {run}: {:>7.2}s  {:>7.1} MB/s",
            t.as_secs_f64(),
            bytes as f64 / 1e6 / t.as_secs_f64()
        );
        theirs.push(t);
        delete("bench-awscli", &format!("bench/{name}"));
    }
    let t = median(theirs);
    println!(
        "aws s3 cp: {:.2}s ({:.1} MB/s)",
        t.as_secs_f64(),
        bytes as f64 / 1e6 / t.as_secs_f64()
    );
    println!(
        "| part size | packager (median) | MB/s | ratio to `aws s3 cp` (target >= 1.0x) | peak RSS (target <= 100 MB) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for ((part_mb, times), peak) in configs.iter().zip(ours).zip(peaks) {
        let o = median(times);
        println!(
            "| {part_mb} MiB{} | {:.2} s | {:.1} | {:.2}x | {:.1} MB |",
            if *part_mb == default_mb {
                " (default)"
            } else {
                ""
            },
            o.as_secs_f64(),
            bytes as f64 / 1e6 / o.as_secs_f64(),
            t.as_secs_f64() / o.as_secs_f64(),
            peak as f64 / 1024.0
        );
    }
}
