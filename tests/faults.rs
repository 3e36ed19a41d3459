//! Faults from outside, through the binary: signals during a matrix build, the engine's
//! connection lost mid-build, a publish to S3 interrupted or cut. These tests need Docker and
//! moto: without them they fail, loudly.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::engine::{containers_of, docker, fixture, rt, workspace};
use common::moto::Moto;
use common::proxy::{Action, Op, Proxy, Rule};
use common::{Workspace, stderr};

/// Kills the child if the test fails half-way.
struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn log_contains(ws: &Workspace, needle: &str) -> usize {
    std::fs::read_dir(ws.cache().join("logs"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(needle)
        })
        .count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, name: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn sigterm_and_sighup_during_a_matrix_build_remove_both_running_containers() {
    let docker = docker();
    let server = common::Server::start();
    let ws = workspace();
    for (signal_name, code) in [("TERM", 143), ("HUP", 129)] {
        let (a, b) = (
            format!("sig{}-a", signal_name.to_lowercase()),
            format!("sig{}-b", signal_name.to_lowercase()),
        );
        for r in [&a, &b] {
            fixture(&ws, &server, r, "[build]\nbuild = [\"sleep 300\"]\n");
        }
        let store = ws.dir.path().join("store");
        let child = ws
            .cmd()
            .args(["-v", "build", "--all", "-j", "2", "--store"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _guard = KillOnDrop(child.id());
        wait_until("both builds to reach `sleep 300`", || {
            log_contains(&ws, "$ sleep 300") >= 2
        });
        wait_until("both build containers", || {
            !containers_of(&docker, &a).is_empty() && !containers_of(&docker, &b).is_empty()
        });
        signal(&child, signal_name);
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "SIG{signal_name}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
        assert!(
            containers_of(&docker, &a).is_empty(),
            "SIG{signal_name}: {a} left"
        );
        assert!(
            containers_of(&docker, &b).is_empty(),
            "SIG{signal_name}: {b} left"
        );
        // Next round: other runtimes.
        for r in [&a, &b] {
            std::fs::remove_dir_all(ws.recipes().join(r)).unwrap();
        }
    }
}

/// A proxy of the engine's socket that can lose every connection at once and refuse new ones:
/// to the client, the daemon restarting.
struct EngineSocket {
    path: std::path::PathBuf,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<UnixStream>>>,
}

impl EngineSocket {
    fn start(dir: &Path) -> EngineSocket {
        let path = dir.join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let Ok(up) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                o.lock().unwrap().push(conn.try_clone().unwrap());
                o.lock().unwrap().push(up.try_clone().unwrap());
                let (mut c1, mut u1) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c2, mut u2) = (conn, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut u1);
                    let _ = u1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        EngineSocket { path, down, open }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Every connection cut, new ones refused.
    fn restart_begins(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restart_ends(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[test]
fn an_engine_lost_mid_build_is_a_retryable_error_and_the_next_run_reaps_what_is_left() {
    let docker = docker();
    let server = common::Server::start();
    let ws = workspace();
    let engine = EngineSocket::start(ws.dir.path());
    fixture(
        &ws,
        &server,
        "engine-lost",
        "[build]\nbuild = [\"sleep 300\"]\n",
    );
    let child = ws
        .cmd()
        .env("DOCKER_HOST", engine.host())
        .args(["-v", "build", "engine-lost", "1.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    wait_until("the build phase", || log_contains(&ws, "$ sleep 300") >= 1);
    engine.restart_begins();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connection to the Docker engine was lost")
            && err.contains("run the command again"),
        "{err}"
    );
    // What it could not remove is still there...
    let left = containers_of(&docker, "engine-lost");
    assert!(
        !left.is_empty(),
        "the engine was unreachable: nothing could be removed"
    );
    // ...until the next run, with the engine back, reaps it.
    engine.restart_ends();
    let o = ws
        .cmd()
        .env("DOCKER_HOST", engine.host())
        .args(["stack", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ws
        .cmd()
        .env("DOCKER_HOST", engine.host())
        .args(["shell", "engine-lost", "1.0.0", "--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        containers_of(&docker, "engine-lost").is_empty(),
        "the next run removed the orphans"
    );
}

fn moto_server() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// A fixture whose artifact is 12 MiB of random bytes: three parts of 5 MiB.
fn big_fixture(ws: &Workspace, server: &common::Server, runtime: &str) {
    fixture(
        ws,
        server,
        runtime,
        "[build]\ninstall = [\"make install\", \"head -c 12582912 /dev/urandom > {prefix}/share/blob\"]\n",
    );
}

fn s3_build(ws: &Workspace, proxy: &Proxy, bucket: &str, runtime: &str) -> std::process::Command {
    let mut cmd = ws.cmd();
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(moto_server().env())
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "build",
            runtime,
            "1.0.0",
            "--store",
            &format!("s3://{bucket}/rt"),
            "--s3-part-size",
            "5",
        ]);
    cmd
}

/// What is in the bucket: objects and pending multipart uploads.
fn bucket_state(bucket: &str) -> (Vec<String>, usize) {
    rt().block_on(async {
        let c = moto_server().client();
        let objects = c
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .map(|o| o.key().unwrap_or_default().to_string())
            .collect();
        let pending = moto_server().pending_uploads(bucket).await;
        (objects, pending)
    })
}

#[test]
fn ctrl_c_during_an_s3_publish_leaves_no_object_and_no_pending_parts() {
    let docker = docker();
    let server = common::Server::start();
    let ws = workspace();
    rt().block_on(moto_server().bucket("interrupted"));
    let proxy = Proxy::start(&moto_server().endpoint);
    proxy.add(Rule::new(
        Op::UploadPart,
        "partNumber=2",
        Action::Delay(Duration::from_secs(60)),
    ));
    big_fixture(&ws, &server, "s3-interrupted");
    let child = s3_build(&ws, &proxy, "interrupted", "s3-interrupted")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    wait_until("the second part to be sent", || {
        proxy.count(Op::UploadPart, "partNumber=2") >= 1
    });
    signal(&child, "INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(proxy.count(Op::AbortMultipartUpload, "s3-interrupted") >= 1);
    assert_eq!(bucket_state("interrupted"), (Vec::new(), 0));
    assert!(containers_of(&docker, "s3-interrupted").is_empty());
}

#[test]
fn a_publish_whose_connection_is_cut_leaves_no_object_no_parts_and_no_inventory_entry() {
    let server = common::Server::start();
    let ws = workspace();
    rt().block_on(moto_server().bucket("cut-cli"));
    let proxy = Proxy::start(&moto_server().endpoint);
    proxy.add(Rule::new(Op::UploadPart, "partNumber=2", Action::Cut(4096)).times(usize::MAX));
    big_fixture(&ws, &server, "s3-cut");
    let o = s3_build(&ws, &proxy, "cut-cli", "s3-cut").output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("s3://cut-cli/rt/mini/s3-cut-1.0.0.tar.gz"),
        "{err}"
    );
    assert_eq!(
        bucket_state("cut-cli"),
        (Vec::new(), 0),
        "no object, no pending parts, no inventory"
    );
}

/// Runs the packager with `disk` (its cache or a folder in it) on a tmpfs of `size` (a private mount namespace:
/// `unshare`, as root or in a user namespace), so that the disk fills up.
fn on_small_disk(ws: &Workspace, disk: &Path, size: &str, args: &[&str]) -> std::process::Output {
    std::fs::create_dir_all(disk).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    // SAFETY-free check of who we are: `id -u`.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$2" || exit 99; disk=$2; shift 2; "$@"; rc=$?; echo "== files on the small disk" >&2; find "$disk" -type f >&2; exit $rc"#)
        .arg("small-disk")
        .arg(size)
        .arg(disk)
        .arg(env!("CARGO_BIN_EXE_packager"))
        .args(args)
        .env("PACKAGER_RECIPES", ws.recipes())
        .env("PACKAGER_CACHE", ws.cache())
        .env_remove("PACKAGER_MIRROR")
        .env("NO_COLOR", "1")
        .current_dir(ws.dir.path());
    let o = cmd.output().unwrap();
    assert_ne!(
        o.status.code(),
        Some(99),
        "these tests need a private tmpfs mount (unshare --mount): {}",
        stderr(&o)
    );
    o
}

#[test]
fn a_full_cache_disk_is_a_clear_error_and_leaves_no_partial_entry() {
    let server = common::Server::start();
    let ws = Workspace::new();
    // 3 MiB of source onto a 1 MiB disk.
    let data = common::bytes(3 << 20, 9);
    let sum = common::sha256_hex(&data);
    let url = server.route("/big-1.0.tar.gz", common::Route::Body(data));
    ws.recipe("big", "1.0", &url, &sum);
    let o = on_small_disk(&ws, &ws.cache(), "1m", &["fetch", "big", "1.0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&ws.cache().display().to_string()),
        "the path is named: {err}"
    );
    // What was on the small disk when the packager exited: no entry, no temporary file.
    let files = err.split("== files on the small disk").nth(1).unwrap_or("");
    let partial: Vec<&str> = files
        .lines()
        .filter(|l| l.contains("/sources/") && !l.ends_with("/.lock"))
        .collect();
    assert!(
        partial.is_empty(),
        "no partial entry (only the entry's lock): {files}"
    );
}

#[test]
fn a_full_work_disk_fails_the_build_clearly_and_publishes_nothing() {
    let server = common::Server::start();
    let ws = workspace();
    big_fixture(&ws, &server, "full-disk");
    let store = ws.dir.path().join("store");
    // The work folder (where the artifact is packed) on a disk too small for the 12 MiB
    // artifact; the sources stay where the engine can mount them.
    let o = on_small_disk(
        &ws,
        &ws.cache().join("work"),
        "4m",
        &[
            "build",
            "full-disk",
            "1.0.0",
            "--store",
            store.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&ws.cache().display().to_string()),
        "the path is named: {err}"
    );
    let published: Vec<_> = walkdir(&store);
    assert!(published.is_empty(), "nothing is published: {published:?}");
    assert!(containers_of(&docker(), "full-disk").is_empty());
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walkdir(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
