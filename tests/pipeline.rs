//! The pipeline as a library, without the binary: a plan run end to end (build → test →
//! publish → inventory, the dependency taken from the store once), its report and events, the
//! provenance digest, and how `requires` picks versions.

mod common;

use std::sync::{Arc, Mutex};

use common::engine::{containers_of, docker, fixture_version, rt, workspace};
use common::{Server, Workspace};
use packager::pipeline::{Pipeline, RunOptions, Settings};
use packager::plan::{Selector, Status};
use packager::publish::{LocalStore, Store, inventory};
use packager::report::Reporter;
use packager::schedule::{JobOutcome, Made};
use sha2::Digest;

/// Writes fixture `runtime` 1.0.0 on the mini stack; `extra` goes into its version file.
fn version(ws: &Workspace, server: &Server, runtime: &str, extra: &str) {
    ws.write(&format!("{runtime}/runtime.toml"), "stack = \"mini\"\n");
    fixture_version(ws, server, runtime, "1.0.0", extra);
}

/// Remembers the artifacts reported.
#[derive(Default)]
struct Events {
    artifacts: Mutex<Vec<(String, Made)>>,
}

impl Reporter for Events {
    fn artifact(&self, job: &str, made: &Made) {
        self.artifacts
            .lock()
            .unwrap()
            .push((job.to_string(), made.clone()));
    }
}

fn settings(ws: &Workspace) -> Settings {
    Settings::new(ws.recipes(), ws.cache())
}

#[test]
fn a_plan_runs_end_to_end_through_the_library() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    version(&ws, &server, "pl-base", "");
    version(
        &ws,
        &server,
        "pl-app",
        "[build]\nrequires = [\"pl-base 1.0.0\"]\nconfigure = [\"test -x /app/pl-base/bin/pl-base\", \"./configure --prefix={prefix}\"]\n[test]\ncommands = [\"pl-app --version\", \"pl-base --version\"]",
    );
    let store = LocalStore::from_url(ws.dir.path().join("store").to_str().unwrap()).unwrap();
    let events = Arc::new(Events::default());
    let pipeline = Pipeline::new(settings(&ws), events.clone()).unwrap();
    let selection = [Selector::Runtime {
        runtime: "pl-app".into(),
        versions: Vec::new(),
    }];
    let opts = RunOptions {
        parallel: 2,
        // `{jobs}` other than the canonical 1: the provenance digest must not see it.
        make_jobs: Some(3),
        keep: false,
        force: false,
        fail_fast: false,
        compiler_cache: true,
    };
    let plan = rt()
        .block_on(pipeline.plan(&selection, &[], &store, false, 2))
        .unwrap();
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name()).collect();
    assert_eq!(names, ["pl-base 1.0.0", "pl-app 1.0.0"], "dependency first");
    assert_eq!(plan.jobs[1].requires, ["pl-base 1.0.0"]);

    let mut ran = rt()
        .block_on(pipeline.run(&plan, &store, &opts, None))
        .unwrap();
    assert!(ran.error().is_none(), "{:?}", ran.errors);
    let outcomes: Vec<JobOutcome> = ran.report.jobs.iter().map(|j| j.outcome).collect();
    assert_eq!(outcomes, [JobOutcome::Built, JobOutcome::Built]);

    // Each artifact is in the store, reported once, and in its inventory with this arch.
    let reported = events.artifacts.lock().unwrap().clone();
    assert_eq!(reported.len(), 2, "{reported:?}");
    let arch = rt().block_on(docker.engine()).unwrap().arch;
    for (runtime, job) in [("pl-base", "pl-base 1.0.0"), ("pl-app", "pl-app 1.0.0")] {
        let name = format!("{runtime}-1.0.0.tar.gz");
        let stored = rt()
            .block_on(store.lookup("mini", &name))
            .unwrap()
            .unwrap_or_else(|| panic!("{name} is published"));
        let made = &reported.iter().find(|(j, _)| j == job).unwrap().1;
        assert_eq!(made.sha256, stored.sha256);
        let inv = rt()
            .block_on(inventory::read(&store, "mini", runtime))
            .unwrap()
            .unwrap();
        assert_eq!(inv.artifacts.len(), 1);
        assert_eq!(inv.artifacts[0].arch, arch);
        assert_eq!(inv.artifacts[0].checksum.hex(), stored.sha256);
        // The provenance digest is the canonical recipe's, as the build key hashes it: the
        // same on a machine with another core count.
        let canonical = pipeline
            .catalogue()
            .load(
                runtime,
                &"1.0.0".parse().unwrap(),
                &packager::plan::canonical_load_options(packager::arch::Arch::host()),
            )
            .unwrap();
        let digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(canonical.to_toml().as_bytes()))
        );
        assert_eq!(stored.metadata["recipe-digest"], digest, "{runtime}");
        assert_eq!(
            stored.metadata["build-key"],
            plan.jobs[usize::from(runtime == "pl-app")].key.as_str()
        );
    }
    // The dependency was downloaded once for the run, into a folder removed with it.
    assert!(
        !ws.cache().join("work").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("run-")),
        "the run's work folder is removed"
    );

    // Nothing changed: the next plan skips both, and running it connects to no engine.
    let again = rt()
        .block_on(pipeline.plan(&selection, &[], &store, false, 1))
        .unwrap();
    assert!(again.jobs.iter().all(|j| j.status == Status::Skip));
    let mut ran = rt()
        .block_on(pipeline.run(&again, &store, &opts, None))
        .unwrap();
    assert!(ran.error().is_none());
    assert!(containers_of(&docker, "pl-app").is_empty());
    assert!(containers_of(&docker, "pl-base").is_empty());
}

/// A catalogue for planning only (no engine): versions of `q-base` and a runtime per
/// requirement.
fn catalogue() -> Workspace {
    let ws = Workspace::new();
    ws.write_mini_manifest();
    let src = format!(
        "stack = \"mini\"\n[source]\nurl = \"https://example.invalid/{{runtime}}-{{version}}.tar.gz\"\nsha256 = \"{}\"\n",
        "5f".repeat(32)
    );
    ws.write("q-base/runtime.toml", &src);
    for v in ["2.0.0", "2.0.0.7", "2.1.0"] {
        ws.write(&format!("q-base/{v}.toml"), "");
    }
    for (runtime, req) in [
        ("q-exact", "q-base 2.0.0"),
        ("q-fourth", "q-base 2.0.0.7"),
        ("q-range", "q-base ^2.0"),
        ("q-tilde", "q-base ~2.0.0"),
    ] {
        ws.write(&format!("{runtime}/runtime.toml"), &src);
        ws.write(
            &format!("{runtime}/1.0.0.toml"),
            &format!("[build]\nrequires = [\"{req}\"]\n"),
        );
    }
    ws
}

#[test]
fn requires_picks_versions_as_the_command_line_does() {
    let ws = catalogue();
    let store = LocalStore::from_url(ws.dir.path().join("store").to_str().unwrap()).unwrap();
    let pipeline = Pipeline::new(settings(&ws), Arc::new(packager::report::Silent)).unwrap();
    let picked = |runtime: &str| -> String {
        let selection = [Selector::Runtime {
            runtime: runtime.into(),
            versions: Vec::new(),
        }];
        let plan = rt()
            .block_on(pipeline.plan(&selection, &[], &store, false, 1))
            .unwrap();
        plan.jobs
            .iter()
            .find(|j| j.selected)
            .unwrap()
            .requires
            .join(",")
    };
    // A bare version is that version exactly, as `packager build q-base 2.0.0` is.
    assert_eq!(picked("q-exact"), "q-base 2.0.0");
    assert_eq!(picked("q-fourth"), "q-base 2.0.0.7");
    // A range is the highest version in it.
    assert_eq!(picked("q-range"), "q-base 2.1.0");
    assert_eq!(picked("q-tilde"), "q-base 2.0.0.7");
    // And the command line's selectors mean the same.
    let exact = pipeline
        .catalogue()
        .select("q-base", Some("2.0.0"))
        .unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].to_string(), "2.0.0");
}
