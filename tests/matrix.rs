//! Matrix builds on the real engine: a catalogue of fixture versions plus a runtime built
//! against one of them; dependency order, skipping unchanged work, blocking dependents of a
//! failure, parallel builds and --fail-fast.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::engine::{containers_of, docker, rt, workspace};
use common::{Server, Workspace, stderr, stdout};
use packager::package::list_artifact;

use common::engine::fixture_version as version;

fn runtime_file(ws: &Workspace, runtime: &str, test: &str) {
    ws.write(
        &format!("{runtime}/runtime.toml"),
        &format!("stack = \"mini\"\n[test]\ncommands = [{test}]\n"),
    );
}

fn lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn a_catalogue_builds_in_order_then_skips_then_rebuilds_what_changed() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime_file(&ws, "mx-base", "\"mx-base --version\"");
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        version(&ws, &server, "mx-base", v, "");
    }
    // Built against mx-base 1.2.0: its configure checks the dependency is at its own prefix, its
    // test runs the dependency too (found through PATH).
    runtime_file(
        &ws,
        "mx-ext",
        "\"mx-ext --version\", \"mx-base --version | grep -x 'mx-base 1.2.0'\"",
    );
    version(
        &ws,
        &server,
        "mx-ext",
        "1.0.0",
        "[build]\nrequires = [\"mx-base ^1.1\"]\nconfigure = [\"test -x /app/mx-base/bin/mx-base\", \"test ! -e {prefix}/bin/mx-base\", \"./configure --prefix={prefix}\"]\n",
    );
    let store = ws.dir.path().join("store");
    let store_arg = store.to_str().unwrap();

    let o = ws.run(&["build", "--all", "-j", "2", "--store", store_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&stdout(&o)), 4, "four artifacts: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("parallel efficiency"), "a summary: {err}");
    let ext = store.join("mini/mx-ext-1.0.0.tar.gz");
    let paths: Vec<String> = list_artifact(&ext)
        .unwrap()
        .iter()
        .map(|e| e.path.to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    assert!(paths.contains(&"bin/mx-ext".to_string()), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains("mx-base")),
        "the dependency is not in the dependent's artifact: {paths:?}"
    );
    // The debug shell extracts what the runtime requires at its prefix, as a build does.
    let o = ws.run(&[
        "shell",
        "mx-ext",
        "1.0.0",
        "--store",
        store_arg,
        "--",
        "sh",
        "-c",
        "mx-base --version",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "mx-base 1.2.0");
    let empty = ws.dir.path().join("empty-store");
    let o = ws.run(&[
        "shell",
        "mx-ext",
        "1.0.0",
        "--store",
        empty.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("build it first: `packager build mx-base 1.2.0"),
        "{}",
        stderr(&o)
    );

    let inv = std::fs::read_to_string(store.join("mini/inventory/mx-base.toml")).unwrap();
    assert_eq!(inv.matches("[[artifacts]]").count(), 3, "{inv}");
    assert!(inv.contains("build-key = "), "{inv}");

    // Nothing changed: nothing is built, and the engine is not even needed.
    let o = ws
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build", "--all", "--json", "--store", store_arg])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outcomes: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["skipped"; 4]);

    // A revision bump on one version rebuilds exactly that version.
    version(
        &ws,
        &server,
        "mx-base",
        "1.1.0",
        "revision = 1\n[build]\nenv = { CFLAGS = \"-O1\" }\n",
    );
    let o = ws.run(&["build", "--all", "--store", store_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&stdout(&o)), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("mx-base-1.1.0-build1.tar.gz"),
        "{}",
        stdout(&o)
    );

    // Changing the version the dependent is built against changes both keys: refused as
    // conflicts without --force; --force on that selection rebuilds exactly those two.
    version(
        &ws,
        &server,
        "mx-base",
        "1.2.0",
        "[build]\nenv = { CFLAGS = \"-O1\" }\n",
    );
    let o = ws.run(&["build", "--all", "--store", store_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("mx-base 1.2.0 is published with other inputs"),
        "{err}"
    );
    assert!(err.contains("blocked"), "{err}");
    let o = ws.run(&["build", "mx-ext", "--force", "--store", store_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&stdout(&o)), 2, "{}", stdout(&o));
    assert!(containers_of(&docker, "mx-base").is_empty());
    assert!(containers_of(&docker, "mx-ext").is_empty());
}

#[test]
fn a_failure_blocks_its_dependents_and_the_rest_is_built() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime_file(&ws, "mf-base", "\"mf-base --version\"");
    version(&ws, &server, "mf-base", "1.0.0", "");
    version(
        &ws,
        &server,
        "mf-base",
        "2.0.0",
        "[build]\nconfigure = [\"./configure --prefix={prefix} --fail\"]\n",
    );
    runtime_file(&ws, "mf-ext", "\"mf-ext --version\"");
    version(
        &ws,
        &server,
        "mf-ext",
        "2.0.0",
        "[build]\nrequires = [\"mf-base 2.0.0\"]\n",
    );
    let store = ws.dir.path().join("store");
    let o = ws.run(&[
        "build",
        "--all",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<(String, String)> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                format!(
                    "{} {}",
                    j["runtime"].as_str().unwrap(),
                    j["version"].as_str().unwrap()
                ),
                j["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("mf-base 1.0.0".to_string(), "built".to_string()),
            ("mf-base 2.0.0".to_string(), "failed".to_string()),
            ("mf-ext 2.0.0".to_string(), "blocked".to_string()),
        ]
    );
    let err = stderr(&o);
    assert!(err.contains("configure of mf-base 2.0.0 failed"), "{err}");
    assert!(err.contains("2 of 3 jobs did not complete"), "{err}");
    assert!(store.join("mini/mf-base-1.0.0.tar.gz").exists());
    assert!(containers_of(&docker, "mf-base").is_empty());
}

#[test]
fn two_builds_run_at_once_and_fail_fast_cancels() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime_file(&ws, "mp-a", "\"true\"");
    runtime_file(&ws, "mp-b", "\"true\"");
    let slow = "[build]\nbuild = [\"sleep 3\", \"make\"]\n";
    version(&ws, &server, "mp-a", "1.0.0", slow);
    version(&ws, &server, "mp-b", "1.0.0", slow);
    let store = ws.dir.path().join("store");

    // Watch the engine while the build runs: two build containers at the same time.
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, done, docker) = (seen.clone(), done.clone(), docker.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let n = rt()
                    .block_on(docker.list_containers(&[("packager.role", Some("build"))]))
                    .unwrap()
                    .iter()
                    .filter(|c| {
                        c.labels
                            .get("packager.runtime")
                            .is_some_and(|r| r.starts_with("mp-"))
                    })
                    .count();
                seen.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let o = ws.run(&[
        "build",
        "mp-a",
        "mp-b",
        "-j",
        "2",
        "--store",
        store.to_str().unwrap(),
    ]);
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the two builds overlapped");

    // --fail-fast: one fails at once, the other (sleeping) is cancelled and its container goes.
    runtime_file(&ws, "mq-a", "\"true\"");
    runtime_file(&ws, "mq-b", "\"true\"");
    version(
        &ws,
        &server,
        "mq-a",
        "1.0.0",
        "[build]\nconfigure = [\"sleep 1\", \"false\"]\n",
    );
    version(
        &ws,
        &server,
        "mq-b",
        "1.0.0",
        "[build]\nbuild = [\"sleep 60\"]\n",
    );
    let started = std::time::Instant::now();
    let o = ws.run(&[
        "build",
        "mq-a",
        "mq-b",
        "-j",
        "2",
        "--fail-fast",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "cancelled, not waited for"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outcomes: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "cancelled"]);
    assert!(containers_of(&docker, "mq-a").is_empty());
    assert!(containers_of(&docker, "mq-b").is_empty());
}

#[test]
fn shell_on_failure_is_refused_for_more_than_one_job() {
    let server = Server::start();
    let ws = workspace();
    runtime_file(&ws, "ms", "\"true\"");
    version(&ws, &server, "ms", "1.0.0", "");
    version(&ws, &server, "ms", "1.1.0", "");
    let o = ws.run(&["build", "ms", "--shell-on-failure"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--shell-on-failure needs exactly one job"),
        "{}",
        stderr(&o)
    );
}
