//! The shipped catalogue (`recipes/`): every version loads with a well-formed checksum, versions
//! sort as upstream orders them, `packager plan --all` works on it, and `packager list` is
//! snapshot-tested so that a version added or dropped is seen in review.

use packager::recipe::{Catalogue, LoadOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

fn packager(dir: &Path, args: &[&str]) -> Output {
    let (sub, rest) = args.split_first().unwrap();
    Command::new(env!("CARGO_BIN_EXE_packager"))
        .arg(sub)
        .arg("--recipes")
        .arg(recipes())
        .arg("--cache")
        .arg(dir.join("cache"))
        .args(rest)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Upstream order of a release number: numerically, component by component.
fn upstream_key(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|c| {
            c.parse()
                .unwrap_or_else(|_| panic!("{v}: not a plain release"))
        })
        .collect()
}

#[test]
fn every_checksum_is_well_formed_and_cited() {
    let cat = Catalogue::open(&recipes()).unwrap();
    let mut n = 0;
    for rt in cat.runtimes() {
        for (v, path) in &rt.versions {
            // Loading checks that there is exactly one checksum of the right length in hex.
            let r = cat
                .load(rt.name.as_str(), v, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{} {v}: {e}", rt.name));
            // Each runtime has a folder of its own under /app, never the app's root (where the
            // app's own bin/ is), matching the buildpack that vendors it.
            let want = match rt.name.as_str() {
                "python" => "/app/.heroku/python",
                "ruby" => "/app/vendor/ruby",
                "mono" | "xsp" => "/app/mono",
                other => &format!("/app/{other}"),
            };
            assert_eq!(r.prefix, want, "{} {v}", rt.name);
            // The tests prove the runtime works from the prefix: each one runs something there.
            assert!(
                r.test.commands.iter().all(|c| c.contains(want)),
                "{} {v}: every test command runs from the prefix",
                rt.name
            );
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.lines()
                    .any(|l| l.starts_with('#') && l.contains("Checksum")),
                "{}: the version file cites where its checksum comes from",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 80, "the catalogue has its versions ({n})");
}

#[test]
fn versions_sort_as_upstream_orders_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&packager(dir.path(), &["list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut seen = Vec::new();
    for rt in list.as_array().unwrap() {
        let name = rt["runtime"].as_str().unwrap().to_string();
        let versions: Vec<String> = rt["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut upstream = versions.clone();
        upstream.sort_by_key(|v| upstream_key(v));
        assert_eq!(versions, upstream, "{name} is listed in upstream order");
        seen.push((name, versions));
    }
    let of = |name: &str| -> &Vec<String> {
        &seen
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is in the catalogue"))
            .1
    };
    let before = |name: &str, a: &str, b: &str| {
        let vs = of(name);
        let pa = vs.iter().position(|v| v == a).unwrap();
        let pb = vs.iter().position(|v| v == b).unwrap();
        assert!(pa < pb, "{name}: {a} sorts before {b}");
    };
    // Two-digit components sort numerically, not as text.
    before("python", "3.11.9", "3.11.10");
    before("python", "3.11.17", "3.12.0");
    before("python", "3.12.9", "3.12.10");
    before("ruby", "3.2.9", "3.2.10");
    before("ruby", "3.3.9", "3.3.10");
    before("lua", "5.1.5", "5.2.4");
    before("lua", "5.3.6", "5.4.0");
    before("mono", "3.2.8", "3.12.1");
    before("mono", "5.4.1.7", "5.10.1.57");
    // The versions the issue names.
    assert_eq!(of("lua").first().unwrap(), "5.1.5");
    assert!(of("mono").contains(&"3.2.8".to_string()));
    assert!(of("xsp").contains(&"3.0.11".to_string()));
    for v in ["5.4.4", "5.4.6"] {
        assert!(of("lua").contains(&v.to_string()), "lua {v}");
    }
}

#[test]
fn plan_all_works_on_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = packager(
        dir.path(),
        &[
            "plan",
            "--all",
            "--json",
            "--store",
            store.to_str().unwrap(),
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let jobs = plan["jobs"].as_array().unwrap();
    let cat = Catalogue::open(&recipes()).unwrap();
    let versions: usize = cat.runtimes().map(|rt| rt.versions.len()).sum();
    assert_eq!(jobs.len(), versions, "one job per version");
    for j in jobs {
        assert_eq!(
            j["status"], "build",
            "an empty store builds everything: {j}"
        );
        // Mono and what is built against it need Mono's build tools (python, cmake, mono-devel).
        let stack = match j["runtime"].as_str() {
            Some("mono" | "xsp") => "bookworm-mono",
            _ => "bookworm",
        };
        assert_eq!(j["stack"], stack, "{j}");
    }
    // xsp is built against the mono it requires, which is planned before it.
    let pos = |rt: &str, v: &str| {
        jobs.iter()
            .position(|j| j["runtime"] == rt && j["version"] == v)
            .unwrap_or_else(|| panic!("{rt} {v} is planned"))
    };
    assert!(pos("mono", "3.2.8") < pos("xsp", "3.0.11"));
}

#[test]
fn list_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    insta::assert_snapshot!("list", stdout(&packager(dir.path(), &["list"])));
}
