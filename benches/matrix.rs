//! Matrix figures, in one run:
//! 1. a no-op `packager build --all` over 100 published versions (target: under 2 s), against
//!    the local store and against an S3-protocol server on loopback (moto, when `moto_server`
//!    is installed);
//! 2. 8 independent fixture builds at `-j 2` against `-j 1` (target: ≥ 1.8× faster). The
//!    fixture's configure runs compiler checks one after the other, as autoconf does: the serial
//!    part of real runtime builds, which running builds side by side overlaps.
//!
//! Run: `cargo bench --bench matrix` (needs Docker and the `mini` stack, made when absent).
//! Without `--bench` (as under `cargo test --all-targets`) it runs small: 10 versions, 2 builds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixture::{c_project_with_checks, tarball};
use common::{Route, Server, Workspace, sha256_hex};
use packager::pipeline::{Pipeline, Settings};
use packager::plan::{KEY_METADATA, Selector};
use packager::publish::{AnyStore, Store, Upload};

fn timed(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Duration {
    let started = Instant::now();
    let mut cmd = ws.cmd();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("spawn packager");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    started.elapsed()
}

/// Plans `--all` against `store` with the library, as `packager build` would, and publishes a
/// stand-in artifact carrying each job's key, as builds would have.
fn publish_all(ws: &Workspace, store_url: &str, env: &[(&str, &str)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("AWS_")) {
        // SAFETY: set before any thread of this process reads the environment concurrently
        // (the runtime above has not started work yet). Only the S3 client's settings.
        unsafe { std::env::set_var(k, v) };
    }
    let store = rt.block_on(AnyStore::open(store_url)).unwrap();
    let settings = Settings::new(ws.recipes(), ws.cache());
    let pipeline = Pipeline::new(settings, Arc::new(packager::report::Silent)).unwrap();
    let jobs = packager::recipe::LoadOptions::default().jobs;
    let plan = rt
        .block_on(pipeline.plan(&[Selector::All], &[], &store, false, jobs))
        .unwrap();
    rt.block_on(async {
        for j in &plan.jobs {
            let name = &j.recipe.artifact;
            let key = j.key.as_str();
            let path = ws.dir.path().join(name);
            std::fs::write(&path, key).unwrap();
            let a = Upload {
                path,
                name: name.clone(),
                stack: j.recipe.stack.to_string(),
                sha256: sha256_hex(key.as_bytes()),
                size: key.len() as u64,
                metadata: [(KEY_METADATA.to_string(), key.to_string())].into(),
            };
            store.publish(&a, true).await.unwrap();
        }
    });
}

fn noop(versions: usize) {
    let ws = Workspace::new();
    ws.write_mini_manifest();
    ws.write(
        "many/runtime.toml",
        &format!(
            "stack = \"mini\"\n[source]\nurl = \"https://example.invalid/many-{{version}}.tar.gz\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    );
    for i in 0..versions {
        ws.write(&format!("many/1.{}.{}.toml", i / 10, i % 10), "");
    }
    let local = ws.dir.path().join("store");
    let local = local.to_str().unwrap();
    publish_all(&ws, local, &[]);
    // The engine is not reachable here on purpose: a no-op run must not need it.
    let no_engine = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let t = timed(&ws, &["-q", "build", "--all", "--store", local], &no_engine);
    println!(
        "no-op build --all, {versions} published versions, local store: {:.3}s (target < 2 s)",
        t.as_secs_f64()
    );

    if which("moto_server") {
        let moto = common::moto::Moto::start();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(moto.bucket("bench-noop"));
        let url = "s3://bench-noop/runtimes".to_string();
        let mut env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        env.extend(
            no_engine
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let env_ref: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        publish_all(&ws, &url, &env_ref);
        let t = timed(&ws, &["-q", "build", "--all", "--store", &url], &env_ref);
        println!(
            "no-op build --all, {versions} published versions, S3 (moto on loopback): {:.3}s (target < 2 s)",
            t.as_secs_f64()
        );
    } else {
        println!("moto_server is not installed: the S3 figure was not measured");
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn parallel(builds: usize) {
    let server = Server::start();
    let ws = Workspace::new();
    ws.write_mini_manifest();
    let o = ws.cmd().args(["stack", "build", "mini"]).output().unwrap();
    assert!(o.status.success());
    let mut names = Vec::new();
    for i in 0..builds {
        let name = format!("par{i}");
        let top = format!("{name}-1.0.0");
        // Realistic shape: a serial configure (12 compiler checks one by one; a real autoconf
        // configure runs hundreds), then make.
        let tgz = tarball(&top, &c_project_with_checks(&name, "1.0.0", 12));
        let sum = sha256_hex(&tgz);
        let url = server.route(&format!("/{top}.tar.gz"), Route::Body(tgz));
        ws.write(
            &format!("{name}/1.0.0.toml"),
            &format!(
                "stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n[test]\ncommands = [\"{name} --version\"]\n"
            ),
        );
        names.push(name);
    }
    // Warm the download cache so both runs do the same work.
    for n in &names {
        timed(&ws, &["-q", "fetch", n], &[]);
    }
    let mut times = Vec::new();
    for j in ["1", "2"] {
        let store = ws.dir.path().join(format!("store-j{j}"));
        times.push(timed(
            &ws,
            &[
                "-q",
                "build",
                "--all",
                "-j",
                j,
                "--store",
                store.to_str().unwrap(),
            ],
            &[],
        ));
    }
    println!(
        "{builds} independent fixture builds: -j 1 {:.2}s, -j 2 {:.2}s, speed-up {:.2}x (target >= 1.8x)",
        times[0].as_secs_f64(),
        times[1].as_secs_f64(),
        times[0].as_secs_f64() / times[1].as_secs_f64()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    noop(if full { 100 } else { 10 });
    parallel(if full { 8 } else { 2 });
}
