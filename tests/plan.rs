//! `packager plan`: build keys, statuses and dependency order, from recipes and store lookups
//! only (no engine needed).

mod common;

use std::collections::BTreeMap;

use common::{Workspace, stderr, stdout};
use packager::publish::{LocalStore, Store, Upload};

const SUM: &str = "5f2b9d8e1c3a4b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";

fn catalogue() -> Workspace {
    let ws = Workspace::new();
    ws.write_mini_manifest();
    let src = format!(
        "stack = \"mini\"\n[source]\nurl = \"https://example.invalid/{{runtime}}-{{version}}.tar.gz\"\nsha256 = \"{SUM}\"\n"
    );
    ws.write("base/runtime.toml", &src);
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        ws.write(&format!("base/{v}.toml"), "");
    }
    ws.write("ext/runtime.toml", &src);
    ws.write("ext/1.0.0.toml", "[build]\nrequires = [\"base ^1.0\"]\n");
    ws
}

fn plan_json(ws: &Workspace, args: &[&str]) -> Vec<serde_json::Value> {
    let store = ws.dir.path().join("store");
    let mut all = vec!["plan", "--json", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = ws.run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["jobs"].as_array().unwrap().clone()
}

fn summary(jobs: &[serde_json::Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| {
            format!(
                "{} {} {}",
                j["runtime"].as_str().unwrap(),
                j["version"].as_str().unwrap(),
                j["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn keys(jobs: &[serde_json::Value]) -> BTreeMap<String, String> {
    jobs.iter()
        .map(|j| {
            (
                format!(
                    "{} {}",
                    j["runtime"].as_str().unwrap(),
                    j["version"].as_str().unwrap()
                ),
                j["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Publishes a stand-in artifact for each job, carrying its key, as a build would.
fn publish_all(ws: &Workspace, jobs: &[serde_json::Value]) {
    let store = LocalStore::from_url(ws.dir.path().join("store").to_str().unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for j in jobs {
        let name = j["artifact"].as_str().unwrap();
        let path = ws.dir.path().join(name);
        std::fs::write(&path, j["key"].as_str().unwrap()).unwrap();
        let a = Upload {
            path,
            name: name.to_string(),
            stack: j["stack"].as_str().unwrap().to_string(),
            sha256: common::sha256_hex(j["key"].as_str().unwrap().as_bytes()),
            size: 64,
            metadata: [(
                "build-key".to_string(),
                j["key"].as_str().unwrap().to_string(),
            )]
            .into(),
        };
        rt.block_on(store.publish(&a, true)).unwrap();
    }
}

#[test]
fn keys_and_statuses_follow_the_inputs() {
    let ws = catalogue();
    let first = plan_json(&ws, &["--all"]);
    assert_eq!(
        summary(&first),
        [
            "base 1.0.0 build",
            "base 1.1.0 build",
            "base 2.0.0 build",
            "ext 1.0.0 build"
        ],
        "dependencies come first"
    );
    assert_eq!(
        first[3]["requires"],
        serde_json::json!(["base 1.1.0"]),
        "the highest match of ^1.0"
    );
    assert_eq!(first[0]["reason"], "not published");
    assert_eq!(
        keys(&first),
        keys(&plan_json(&ws, &["--all"])),
        "nothing changed, no key changed"
    );

    // Published with the same keys: nothing to do.
    publish_all(&ws, &first);
    let again = plan_json(&ws, &["--all"]);
    assert_eq!(
        summary(&again),
        [
            "base 1.0.0 skip",
            "base 1.1.0 skip",
            "base 2.0.0 skip",
            "ext 1.0.0 skip"
        ]
    );
    let forced = plan_json(&ws, &["--all", "--force"]);
    assert!(
        forced
            .iter()
            .all(|j| j["status"] == "build" && j["reason"] == "forced")
    );

    // Change one version file: its key and its dependent's change, no other.
    ws.write("base/1.1.0.toml", "[build]\nenv = { CFLAGS = \"-O3\" }\n");
    let changed = plan_json(&ws, &["--all"]);
    let (k0, k1) = (keys(&first), keys(&changed));
    let differ: Vec<&String> = k0.keys().filter(|n| k0[*n] != k1[*n]).collect();
    assert_eq!(differ, ["base 1.1.0", "ext 1.0.0"]);
    assert_eq!(
        summary(&changed),
        [
            "base 1.0.0 skip",
            "base 1.1.0 conflict",
            "base 2.0.0 skip",
            "ext 1.0.0 blocked"
        ]
    );
    assert!(
        changed[1]["reason"]
            .as_str()
            .unwrap()
            .contains("bump `revision`")
    );
    assert_eq!(changed[3]["reason"], "base 1.1.0 is conflict");

    // A revision bump gives a new artifact name, so it builds without replacing anything.
    ws.write(
        "base/1.1.0.toml",
        "revision = 1\n[build]\nenv = { CFLAGS = \"-O3\" }\n",
    );
    let revised = plan_json(&ws, &["base", "1.1.0"]);
    assert_eq!(summary(&revised), ["base 1.1.0 build"]);
    assert_eq!(revised[0]["artifact"], "base-1.1.0-build1.tar.gz");
    assert_eq!(revised[0]["reason"], "revision bumped to 1");

    // Selecting a dependent pulls in what it requires.
    let ext = plan_json(&ws, &["ext"]);
    assert_eq!(summary(&ext), ["base 1.1.0 build", "ext 1.0.0 conflict"]);
    assert_eq!(ext[0]["selected"], false);
    assert_eq!(ext[1]["selected"], true);
}

#[test]
fn selectors_pick_versions_across_runtimes() {
    let ws = catalogue();
    let jobs = plan_json(&ws, &["base", "^1", "2.0.0", "ext"]);
    assert_eq!(
        summary(&jobs),
        [
            "base 1.0.0 build",
            "base 1.1.0 build",
            "base 2.0.0 build",
            "ext 1.0.0 build"
        ]
    );
    let o = ws.run(&["plan", "base", "9.9.9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no version of base matches `9.9.9`"),
        "{}",
        stderr(&o)
    );
    let o = ws.run(&["plan", "nothing"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no runtime `nothing`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn github_matrix_lists_the_jobs_to_build() {
    let ws = catalogue();
    let first = plan_json(&ws, &["--all"]);
    publish_all(&ws, &first[..2]);
    let store = ws.dir.path().join("store");
    let o = ws.run(&[
        "plan",
        "--all",
        "--format",
        "github-matrix",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"include\":[{\"arch\":\"amd64\",\"runs-on\":\"ubuntu-24.04\",\"runtime\":\"base\",\"stack\":\"mini\",\"version\":\"2.0.0\"},{\"arch\":\"amd64\",\"runs-on\":\"ubuntu-24.04\",\"runtime\":\"ext\",\"stack\":\"mini\",\"version\":\"1.0.0\"}]}\n"
    );
    let o = ws.run(&["plan", "--all", "--store", store.to_str().unwrap()]);
    let table = stdout(&o);
    assert!(table.starts_with("RUNTIME  VERSION  STACK  KEY"), "{table}");
    assert!(
        table.contains("skip    published with the same key"),
        "{table}"
    );
}

#[test]
fn cycles_and_missing_requirements_are_errors() {
    let ws = catalogue();
    let src = format!(
        "stack = \"mini\"\n[source]\nurl = \"https://example.invalid/x.tar.gz\"\nsha256 = \"{SUM}\"\n"
    );
    ws.write(
        "a/1.0.0.toml",
        &format!("{src}[build]\nrequires = [\"b 1.0.0\"]\n"),
    );
    ws.write(
        "b/1.0.0.toml",
        &format!("{src}[build]\nrequires = [\"c ^1\"]\n"),
    );
    ws.write(
        "c/1.0.0.toml",
        &format!("{src}[build]\nrequires = [\"a 1.0.0\"]\n"),
    );
    let o = ws.run(&["plan", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("dependency cycle: a 1.0.0 → b 1.0.0 → c 1.0.0 → a 1.0.0"),
        "{}",
        stderr(&o)
    );

    ws.write(
        "d/1.0.0.toml",
        &format!("{src}[build]\nrequires = [\"base ^7\"]\n"),
    );
    let o = ws.run(&["plan", "d"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("d/1.0.0.toml: requires `base ^7`"), "{err}");
    assert!(
        err.contains("no version of base matches (there are: 1.0.0, 1.1.0, 2.0.0)"),
        "{err}"
    );
    ws.write(
        "e/1.0.0.toml",
        &format!("{src}[build]\nrequires = [\"nope 1\"]\n"),
    );
    let o = ws.run(&["plan", "e"]);
    assert!(
        stderr(&o).contains("there is no runtime `nope`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plan_output_snapshots() {
    let ws = catalogue();
    let store = ws.dir.path().join("store");
    let store = store.to_str().unwrap();
    let o = ws.run(&["plan", "--all", "--json", "--store", store]);
    assert!(o.status.success(), "{}", stderr(&o));
    insta::assert_snapshot!("plan_json", stdout(&o));
    let o = ws.run(&[
        "plan",
        "--all",
        "--format",
        "github-matrix",
        "--store",
        store,
    ]);
    insta::assert_snapshot!("plan_github_matrix", stdout(&o));
    let o = ws.run(&["plan", "--all", "--store", store]);
    insta::assert_snapshot!("plan_table", stdout(&o));
}

#[test]
fn packages_a_recipe_needs_in_the_stack_are_checked_when_planning() {
    let ws = catalogue();
    ws.write(
        "old/runtime.toml",
        &format!(
            "stack = \"mini\"\n[source]\nurl = \"https://example.invalid/old.tar.gz\"\nsha256 = \"{SUM}\"\n[build]\nstack_packages = [\"gcc\", \"mono-devel\"]\n"
        ),
    );
    ws.write("old/1.0.0.toml", "");
    let o = ws.run(&["plan", "old"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "old 1.0.0 needs mono-devel in the build image, which stack `mini` does not install"
        ),
        "{err}"
    );
    assert!(err.contains("old/1.0.0.toml"), "names the recipe: {err}");
    assert!(
        err.contains("hint: add them to `[bootstrap] packages` of recipes/stacks/mini/stack.toml"),
        "{err}"
    );
    // What the stack has passes.
    ws.write(
        "old/1.0.0.toml",
        "[build]\nstack_packages = [\"gcc\", \"make\"]\n",
    );
    let o = ws.run(&["plan", "old"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
