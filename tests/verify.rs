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
    let text = stdout(&o);
    assert!(
        text.contains("fixture-repro 1.0.0 is reproducible"),
        "{text}"
    );
    // Rebuilt under every variation: an ordinary build does not depend on any.
    assert!(text.contains(&all_varied()), "{text}");

    // The recipe changed since: verify says the published artifact has another build key.
    fixture(
        &ws,
        &server,
        "fixture-repro",
        "[build]\ninstall = [\"make install\", \"touch {prefix}/new\"]\n",
    );
    let o = ws.run(&["verify", "fixture-repro", "1.0.0", "--store", store]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the rebuild may differ for that reason alone"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("only in the rebuild: new"),
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

/// `{jobs}` of a normal build here, and of the varied one.
fn jobs() -> (usize, usize) {
    let cores = std::thread::available_parallelism().unwrap().get();
    (cores, cores * 2)
}

/// The report's line when every variation is applied.
fn all_varied() -> String {
    let (cores, other) = jobs();
    format!(
        "  varied: hostname packager-build → varied-host, umask 0022 → 0002, jobs {cores} → {other}, time TZ=UTC → TZ=<+14>-14\n"
    )
}

/// A fixture whose install writes what the varied build changes: the host name, `{jobs}`, the
/// umask and the time zone's offset.
const EMBEDS: &str = "[build]\ninstall = [\"make install\", \"mkdir -p {prefix}/share/x\", \"hostname > {prefix}/share/x/hostname\", \"echo {jobs} > {prefix}/share/x/jobs\", \"umask > {prefix}/share/x/umask\", \"date +%z > {prefix}/share/x/tz\"]\n";

#[test]
fn what_a_build_may_not_depend_on_is_varied_and_caught() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-vary", EMBEDS);
    // `none` goes alone.
    let o = ws.run(&["verify", "fixture-vary", "1.0.0", "--vary", "none,jobs"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`--vary none` cannot be combined"),
        "{}",
        stderr(&o)
    );

    let kept = ws.dir.path().join("kept");
    let o = ws.run(&[
        "verify",
        "fixture-vary",
        "1.0.0",
        "--twice",
        "--keep-artifacts",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    // Both artifacts are kept, the first build's as the reference.
    for (folder, which) in [
        ("reference", "the first build is"),
        ("rebuild", "the rebuild"),
    ] {
        let bytes = std::fs::read(kept.join(folder).join("fixture-vary-1.0.0.tar.gz")).unwrap();
        let sum = common::sha256_hex(&bytes);
        assert!(
            text.contains(&format!("{which} sha256:{sum}")),
            "{folder}: {text}"
        );
    }
    assert!(
        text.contains("fixture-vary 1.0.0 is not reproducible"),
        "{text}"
    );
    let (cores, other) = jobs();
    assert!(text.contains(&all_varied()), "{text}");
    // Each embedded value is named, with the first build's value and the varied one.
    for (file, first, second) in [
        (
            "hostname",
            "packager-build".to_string(),
            "varied-host".to_string(),
        ),
        ("jobs", cores.to_string(), other.to_string()),
        ("umask", "0022".to_string(), "0002".to_string()),
        ("tz", "+0000".to_string(), "+1400".to_string()),
    ] {
        assert!(
            text.contains(&format!("differs: share/x/{file} (content")),
            "{file}: {text}"
        );
        assert!(text.contains(&format!("-{first}\n")), "{file}: {text}");
        assert!(text.contains(&format!("+{second}\n")), "{file}: {text}");
    }
    // Nothing else: the programs themselves do not depend on any of it.
    assert_eq!(text.matches("differs:").count(), 4, "{text}");

    // One variation at a time tells which causes what.
    let o = ws.run(&[
        "verify",
        "fixture-vary",
        "1.0.0",
        "--twice",
        "--vary",
        "jobs",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("  varied: jobs {cores} → {other}\n")),
        "{text}"
    );
    assert!(text.contains("differs: share/x/jobs (content)"), "{text}");
    assert_eq!(text.matches("differs:").count(), 1, "{text}");

    // Unvaried, two builds are the same: every build gets the same host name, umask and time
    // zone, so what embeds them still builds bit for bit.
    let o = ws.run(&[
        "verify",
        "fixture-vary",
        "1.0.0",
        "--twice",
        "--vary",
        "none",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["reference"], "first-build");
    assert_eq!(json["comparison"]["identical"], true);
    assert_eq!(json["variations"], serde_json::json!([]));
    assert!(containers_of(&docker, "fixture-vary").is_empty());
}

#[test]
fn a_runtime_built_against_another_verifies() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "vr-base", "");
    fixture(
        &ws,
        &server,
        "vr-app",
        "[build]\nrequires = [\"vr-base 1.0.0\"]\nconfigure = [\"test -x /app/vr-base/bin/vr-base\", \"./configure --prefix={prefix}\"]\n",
    );
    // The dependency must come from the store: a store without it is refused, saying which.
    let empty = ws.dir.path().join("empty");
    let o = ws.run(&[
        "verify",
        "vr-app",
        "1.0.0",
        "--twice",
        "--store",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("requires vr-base 1.0.0"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("packager build vr-base 1.0.0"),
        "{}",
        stderr(&o)
    );

    let store = ws.dir.path().join("store");
    let store = store.to_str().unwrap();
    let o = ws.run(&["build", "vr-app", "1.0.0", "--store", store]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ws.run(&["verify", "vr-app", "1.0.0", "--store", store, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["reference"], "published");
    assert_eq!(json["comparison"]["identical"], true, "{json}");
    assert_eq!(json["variations"].as_array().unwrap().len(), 4, "{json}");
    assert!(containers_of(&docker, "vr-app").is_empty());
}
