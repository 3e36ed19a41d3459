//! `packager cache status|prune|verify` on a cache seeded by real downloads from loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Route, Server, Workspace, bytes, sha256_hex, stderr, stdout};

/// A workspace whose cache holds `n` fetched sources; returns their entry folders.
fn seeded(server: &Server, ws: &Workspace, n: u64) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for i in 0..n {
        let body = bytes(10_000, 100 + i);
        let sum = sha256_hex(&body);
        let url = server.route(&format!("/demo-{i}.0.0.tar.gz"), Route::Body(body));
        ws.recipe("demo", &format!("{i}.0.0"), &url, &sum);
        dirs.push(ws.cache().join(format!("sources/sha256-{sum}")));
    }
    let o = ws.run(&["fetch", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    dirs
}

fn payload(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap()
}

fn age(path: &Path, days: u64) {
    let t = SystemTime::now() - Duration::from_secs(days * 86_400);
    let f = std::fs::File::open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

/// Another process holding an entry's lock (util-linux `flock`), until dropped.
struct Holder(Child);

impl Holder {
    fn lock(dir: &Path) -> Holder {
        let lock = dir.join(".lock");
        use std::os::unix::process::CommandExt;
        // Its own process group, so dropping it ends `sleep` too.
        let child = Command::new("flock")
            .arg(&lock)
            .process_group(0)
            .args(["sleep", "120"])
            .stdout(Stdio::null())
            .spawn()
            .expect("`flock` (util-linux) is needed by this test");
        let file = std::fs::File::options().write(true).open(&lock).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait until the child holds it.
        while file.try_lock().is_ok() {
            file.unlock().unwrap();
            assert!(Instant::now() < deadline, "flock did not take the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn status_counts_the_areas() {
    let server = Server::start();
    let ws = Workspace::new();
    seeded(&server, &ws, 2);
    std::fs::create_dir_all(ws.cache().join("logs")).unwrap();
    std::fs::write(ws.cache().join("logs/demo-0.0.0.log"), "x".repeat(500)).unwrap();

    let o = ws.run(&["cache", "status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let areas: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let area = |name: &str| {
        areas
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["area"] == name)
            .unwrap_or_else(|| panic!("no area {name} in {areas}"))
            .clone()
    };
    assert_eq!(area("sources")["entries"], 2);
    assert_eq!(area("sources")["bytes"], 20_000);
    assert!(area("sources")["oldest"].is_string());
    assert_eq!(area("logs")["entries"], 1);
    assert_eq!(area("logs")["bytes"], 500);
    assert_eq!(area("work")["entries"], 0);
    assert_eq!(area("store")["entries"], 0);

    let o = ws.run(&["cache", "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("AREA"), "{text}");
    assert!(text.contains("sources"), "{text}");
}

#[test]
fn prune_spares_locked_entries_and_removes_stale_temps() {
    let server = Server::start();
    let ws = Workspace::new();
    let dirs = seeded(&server, &ws, 3);
    // Oldest first: 0 is 40 days old, 1 (locked) 35, 2 is fresh.
    age(&payload(&dirs[0]), 40);
    age(&payload(&dirs[1]), 35);
    let stale = dirs[2].join(".tmp-killed-download");
    std::fs::write(&stale, vec![0u8; 1234]).unwrap();
    let live = dirs[1].join(".tmp-running-download");
    std::fs::write(&live, b"partial").unwrap();
    let old_work = ws.cache().join("work/artifact-old");
    std::fs::create_dir_all(&old_work).unwrap();
    std::fs::write(old_work.join("f"), b"left by a killed run").unwrap();
    age(&old_work.join("f"), 3);
    age(&old_work, 3);
    let _holder = Holder::lock(&dirs[1]);

    // A dry run reports, removes nothing.
    let o = ws.run(&["cache", "prune", "--older-than", "30d", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("would remove {}", dirs[0].display())),
        "{text}"
    );
    assert!(dirs[0].exists() && stale.exists() && old_work.exists());

    let o = ws.run(&["cache", "prune", "--older-than", "30d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("removed {}", stale.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("removed {}", dirs[0].display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("removed {}", old_work.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "kept {}  (another process holds its lock)",
            dirs[1].display()
        )),
        "{text}"
    );
    assert!(
        !text.contains(&format!("removed {}", dirs[1].display())),
        "{text}"
    );
    assert!(text.contains("freed"), "{text}");
    assert!(!dirs[0].exists(), "the old entry is removed");
    assert!(!stale.exists(), "the stale temp file is removed");
    assert!(!old_work.exists(), "the stale build folder is removed");
    assert!(payload(&dirs[1]).is_file(), "the locked entry is kept");
    assert!(live.exists(), "the locked entry's temp file is kept");
    assert!(payload(&dirs[2]).is_file(), "the fresh entry is kept");

    // Over a size, least recently used first — still never the locked one.
    let o = ws.run(&["cache", "prune", "--max-size", "1B"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dirs[2].exists());
    assert!(payload(&dirs[1]).is_file(), "the locked entry is kept");
    drop(_holder);

    // A fetch after pruning downloads again into a fresh entry.
    let o = ws.run(&["fetch", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(payload(&dirs[0]).is_file());
}

#[test]
fn verify_reports_and_removes_corrupted_entries() {
    let server = Server::start();
    let ws = Workspace::new();
    let dirs = seeded(&server, &ws, 2);
    std::fs::write(payload(&dirs[1]), b"not what was downloaded").unwrap();

    let o = ws.run(&["cache", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 entry verified, 1 corrupted"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains(&dirs[1].display().to_string()),
        "{}",
        stderr(&o)
    );
    assert!(!dirs[1].exists());
    assert!(dirs[0].exists());

    let o = ws.run(&["cache", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Status after a real build counts its log and the stack images; `prune --images` (dry run:
/// the engine is shared, and its other stacks are not in this workspace's recipes) lists an image
/// whose stack hash no stack has any more, and not the mini stack's.
#[test]
fn status_after_a_build_and_unreferenced_stack_images() {
    use common::engine::{fixture, workspace};
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-cache", "");
    let store = ws.dir.path().join("store");
    let o = ws.run(&[
        "build",
        "fixture-cache",
        "1.0.0",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ws.run(&[
        "cache",
        "status",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let areas: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let area = |name: &str| {
        areas
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["area"] == name)
            .unwrap_or_else(|| panic!("no area {name} in {areas}"))
            .clone()
    };
    assert_eq!(area("sources")["entries"], 1);
    assert!(area("logs")["entries"].as_u64().unwrap() >= 1, "{areas}");
    assert_eq!(
        area("work")["entries"],
        0,
        "builds clean up after themselves"
    );
    assert_eq!(area("store")["entries"], 1);
    assert!(area("stack-images")["entries"].as_u64().unwrap() >= 1);

    // An image with the packager's labels and a hash no stack has.
    let tag = "packager-stack-mini:build-000000000000";
    let dockerfile = ws.dir.path().join("old-stack");
    std::fs::create_dir_all(&dockerfile).unwrap();
    std::fs::write(
        dockerfile.join("Dockerfile"),
        "FROM scratch\nLABEL packager.stack=mini packager.stack.hash=000000000000 packager.stack.role=build\nCOPY Dockerfile /\n",
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&dockerfile)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let o = ws.run(&["cache", "prune", "--images", "--dry-run"]);
    let _ = Command::new("docker").args(["rmi", tag]).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("would remove image {tag}")),
        "{text}"
    );
    // The image the mini stack refers to now is never a candidate (older mini images, made
    // before the stack changed, may be).
    let list = stdout(&ws.run(&["stack", "list"]));
    let current = list
        .split_whitespace()
        .find(|w| w.starts_with("packager-stack-mini:build-"))
        .unwrap_or_else(|| panic!("the mini stack's tag in {list}"));
    assert!(
        !text.contains(&format!("would remove image {current} ")),
        "{text}"
    );
}
