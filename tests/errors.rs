//! How engine errors reach the user: the CLI prints `error: …`, then one `caused by: …` line per
//! source in the chain, then a `hint: …`. Each cause must be printed once — an error whose
//! `Display` repeats the text of its `source()` shows it twice. No Docker engine is needed: the
//! engine is pointed at places where there is none.

mod common;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use common::engine::fixture_recipe;
use common::{Server, Workspace, stderr};

/// A workspace with the `mini` stack's manifest (its image is never made: nothing gets as far)
/// and a fixture runtime `runtime` 1.0.0 served from loopback.
fn workspace(server: &Server, runtime: &str) -> Workspace {
    let ws = Workspace::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/mini/stack.toml");
    ws.write(
        "stacks/mini/stack.toml",
        &std::fs::read_to_string(manifest).unwrap(),
    );
    fixture_recipe(&ws, server, runtime, "");
    ws
}

/// `packager build <runtime> 1.0.0 --store <empty folder>` with `DOCKER_HOST=host`: the store
/// has nothing, so the job must be built and the engine connected.
fn build_with_engine_at(host: &str, runtime: &str) -> Output {
    let server = Server::start();
    let ws = workspace(&server, runtime);
    let store = ws.dir.path().join("store");
    let o = Command::from_std(ws.cmd())
        .env("DOCKER_HOST", host)
        .args(["build", runtime, "1.0.0", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    o
}

/// Asserts that each of `causes` is printed exactly once and that there is a hint.
fn assert_each_cause_once(o: &Output, causes: &[&str]) {
    let err = stderr(o);
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "an error line:\n{err}"
    );
    for cause in causes {
        assert_eq!(err.matches(cause).count(), 1, "`{cause}` once in:\n{err}");
    }
    assert!(
        err.lines()
            .any(|l| l.starts_with("hint: ") && l.contains("DOCKER_HOST")),
        "a hint line:\n{err}"
    );
}

#[test]
fn a_missing_socket_is_reported_once() {
    let o = build_with_engine_at("unix:///nonexistent/docker.sock", "fixture-nosocket");
    // The socket's path is also the host the error line names, so count the cause's own text.
    assert_each_cause_once(&o, &["Socket not found"]);
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains("unix:///nonexistent/docker.sock")),
        "the error line names the host:\n{err}"
    );
}

#[test]
fn a_refused_connection_is_reported_once() {
    let o = build_with_engine_at("tcp://127.0.0.1:1", "fixture-refused");
    assert_each_cause_once(&o, &["client error (Connect)", "Connection refused"]);
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains("tcp://127.0.0.1:1")),
        "the error line names the host:\n{err}"
    );
}
