//! `packager build` of the fixture runtime against the equivalent hand-written
//! `docker run … sh -c '…'` script (build + pack + test in a fresh container), in one run.
//! Target: packager ≤ 1.2× the script's wall time.
//!
//! Run: `cargo bench --bench build` (needs Docker and the `mini` test stack, which it builds
//! from Debian packages when absent). `PACKAGER_BENCH_RUNS` sets the runs of each (default 5;
//! 1 without `--bench`, as under `cargo test --all-targets`). The medians are compared.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fixture::{c_project, tarball};
use common::{Route, Server, Workspace, sha256_hex};

fn run(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("PACKAGER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5 } else { 1 });
    let server = Server::start();
    let ws = Workspace::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/mini/stack.toml");
    ws.write(
        "stacks/mini/stack.toml",
        &std::fs::read_to_string(manifest).unwrap(),
    );
    let tgz = tarball("bench-1.0.0", &c_project("bench", "1.0.0"));
    let sum = sha256_hex(&tgz);
    let url = server.route("/bench-1.0.0.tar.gz", Route::Body(tgz));
    ws.write(
        "bench/1.0.0.toml",
        &format!(
            "stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n[test]\ncommands = [\"bench --version\"]\n"
        ),
    );
    // Warm up both sides: the stack image and the download cache.
    run(ws.cmd().args(["stack", "build", "mini"]));
    run(ws.cmd().args(["fetch", "bench"]));
    let image = String::from_utf8(ws.cmd().args(["stack", "list"]).output().unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("packager-stack-mini:"))
        .expect("mini image")
        .to_string();
    let sources = ws.cache().join("sources");
    let tarball_in_cache = format!("/src/sha256-{sum}/bench-1.0.0.tar.gz");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut ours = Vec::new();
    let mut script = Vec::new();
    for i in 0..runs {
        let store = ws.dir.path().join(format!("store-{i}"));
        ours.push(run(ws.cmd().args([
            "-q",
            "build",
            "bench",
            "1.0.0",
            "--store",
            store.to_str().unwrap(),
        ])));

        let out = ws.dir.path().join(format!("script-{i}"));
        std::fs::create_dir_all(&out).unwrap();
        let started = Instant::now();
        run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:/src:ro", sources.display()),
            "-v",
            &format!("{}:/out", out.display()),
            &image,
            "sh",
            "-euc",
            &format!(
                "mkdir -p /build /app && cd /build && tar xzf {tarball_in_cache} --strip-components=1 \
                 && ./configure --prefix=/app && make -j{jobs} && make install \
                 && tar -C /app -czf /out/bench-1.0.0.tar.gz ."
            ),
        ]));
        run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:/out:ro", out.display()),
            &image,
            "sh",
            "-euc",
            "mkdir -p /app && tar -C /app -xzf /out/bench-1.0.0.tar.gz && PATH=/app/bin:$PATH bench --version",
        ]));
        script.push(started.elapsed());
    }
    let (o, s) = (median(ours), median(script));
    println!(
        "packager build (build+package+test+publish): median {:.2}s over {runs} run(s)",
        o.as_secs_f64()
    );
    println!(
        "docker run script (build+tar czf, then test):  median {:.2}s over {runs} run(s)",
        s.as_secs_f64()
    );
    println!(
        "ratio packager/script: {:.2}x (target <= 1.20x)",
        o.as_secs_f64() / s.as_secs_f64()
    );
}
