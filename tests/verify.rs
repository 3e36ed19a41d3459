//! `packager verify` on the real Docker engine, with fixture runtimes served from loopback and
//! the `mini` test stack. These tests need Docker: without it they fail, loudly.

mod common;

use common::engine::{containers_of, docker, fixture, workspace};
use common::{Server, stderr, stdout};

#[test]
fn a_reproducible_fixture_verifies_against_the_store() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-repro", "");
    let store = ws.dir.path().join("store");
    let store = store.to_str().unwrap();
    let o = ws.run(&["build", "fixture-repro", "1.0.0", "--store", store]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = ws.run(&["verify", "fixture-repro", "1.0.0", "--store", store]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("fixture-repro 1.0.0 is reproducible"),
        "{}",
        stdout(&o)
    );
    assert!(containers_of(&docker, "fixture-repro").is_empty());
}

#[test]
fn a_build_stamp_is_reported_by_name() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(
        &ws,
        &server,
        "fixture-stamp",
        "[build]\ninstall = [\"make install\", \"mkdir -p {prefix}/share/x && date +%s%N > {prefix}/share/x/stamp\"]\n",
    );
    let o = ws.run(&["verify", "fixture-stamp", "1.0.0", "--twice"]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("fixture-stamp 1.0.0 is not reproducible"),
        "{text}"
    );
    assert!(text.contains("differs: share/x/stamp (content)"), "{text}");
    assert!(text.contains("+++ b/share/x/stamp"), "{text}");
    // Only the stamp differs.
    assert_eq!(text.matches("differs:").count(), 1, "{text}");

    // Over a selection: a table, exit 1.
    let o = ws.run(&["verify", "--all", "fixture-stamp", "--twice"]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("RUNTIME"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("fixture-stamp")
            && l.contains("differs")
            && l.contains("share/x/stamp")),
        "{text}"
    );
    assert!(containers_of(&docker, "fixture-stamp").is_empty());
}
