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

/// `DOCKER_TLS_VERIFY` asks for TLS: without the certificates it is a usage error naming the
/// missing file, before anything is sent in the clear.
#[test]
fn a_tls_host_without_its_certificates_is_a_usage_error_naming_the_file() {
    let server = Server::start();
    let ws = workspace(&server, "fixture-tls");
    let certs = ws.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let o = Command::from_std(ws.cmd())
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &certs)
        .args(["build", "fixture-tls", "1.0.0", "--store"])
        .arg(ws.dir.path().join("store"))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} is missing", certs.join("ca.pem").display())),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("hint: ") && l.contains("DOCKER_CERT_PATH")),
        "{err}"
    );
}

/// An `ssh://` host is reached with the system's ssh (here on loopback, where no engine
/// answers): a failure to reach the engine, not a scheme the client refuses. A port in the URL
/// is a usage error (the ssh transport would take it for part of the host name).
#[test]
fn an_ssh_host_is_reached_with_ssh() {
    let o = build_with_engine_at("ssh://nobody@127.0.0.1", "fixture-ssh");
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.starts_with("error: ")
            && l.contains("ssh://nobody@127.0.0.1")
            && l.contains("unreachable")),
        "{err}"
    );
    assert!(!err.contains("Unsupported URI scheme"), "{err}");

    let server = Server::start();
    let ws = workspace(&server, "fixture-ssh-port");
    let o = Command::from_std(ws.cmd())
        .env("DOCKER_HOST", "ssh://nobody@127.0.0.1:2222")
        .args(["build", "fixture-ssh-port", "1.0.0", "--store"])
        .arg(ws.dir.path().join("store"))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot name a port (2222)") && err.contains("Port 2222"),
        "{err}"
    );
}
