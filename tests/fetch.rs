//! The download cache against a real HTTP server on loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Route, Server, Workspace, bytes, sha256_hex, stderr, stdout};
use packager::cache::Cache;
use packager::checksum::{Algo, Checksum};
use packager::fetch::{Download, Fetcher, RetryPolicy};
use packager::report::Silent;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

#[test]
fn fetch_stores_a_verified_entry_and_reuses_it() {
    let server = Server::start();
    let body = bytes(300_000, 1);
    let sum = sha256_hex(&body);
    let url = server.route("/demo-1.0.0.tar.gz", Route::Body(body.clone()));
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sum);

    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let entry = ws
        .cache()
        .join(format!("sources/sha256-{sum}/demo-1.0.0.tar.gz"));
    assert_eq!(
        stdout(&o).trim(),
        format!("{}  sha256:{sum}", entry.display())
    );
    assert_eq!(std::fs::read(&entry).unwrap(), body);
    assert_eq!(
        ws.cache_files(),
        vec![
            format!("sha256-{sum}/.lock"),
            format!("sha256-{sum}/demo-1.0.0.tar.gz")
        ]
    );
    assert!(ws.cache().join("CACHEDIR.TAG").is_file());

    // A second fetch re-verifies the entry and makes no request.
    let o = ws.run(&["fetch", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.hits("/demo-1.0.0.tar.gz"), 1);
}

#[test]
fn checksum_mismatch_fails_and_caches_nothing() {
    let server = Server::start();
    let body = bytes(50_000, 2);
    let actual = sha256_hex(&body);
    let expected = sha256_hex(b"something else");
    let url = server.route("/demo.tar.gz", Route::Body(body));
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &expected);

    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("expected sha256:{expected}")),
        "{err}"
    );
    assert!(err.contains(&format!("got sha256:{actual}")), "{err}");
    assert!(err.contains("nothing was cached"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert_eq!(
        ws.cache_files(),
        vec![format!("sha256-{expected}/.lock")],
        "no partial or mismatching file may stay"
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn a_resource_kept_next_to_the_recipe_is_verified_like_a_download() {
    let server = Server::start();
    let body = bytes(10_000, 5);
    let url = server.route("/demo.tar.gz", Route::Body(body.clone()));
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sha256_hex(&body));
    let profile = b"training counts".to_vec();
    let local = ws.write("demo/profiles/p.bin", "training counts");
    let recipe = ws.recipes().join("demo/1.0.0.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let pin = |sum: &str| {
        std::fs::write(
            &recipe,
            format!("{text}\n[[resources]]\npath = \"profiles/p.bin\"\nsha256 = \"{sum}\"\n"),
        )
        .unwrap();
    };
    // Pinned to other bytes (edited after pinning, say): refused, and nothing is cached.
    let other = sha256_hex(b"other counts");
    pin(&other);
    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&local.canonicalize().unwrap().display().to_string()),
        "{err}"
    );
    assert!(err.contains(&format!("expected sha256:{other}")), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        !ws.cache_files()
            .iter()
            .any(|f| f.starts_with(&format!("sha256-{other}/")) && !f.ends_with(".lock")),
        "{:?}",
        ws.cache_files()
    );
    // Pinned right: copied into the cache under its checksum.
    let good = sha256_hex(&profile);
    pin(&good);
    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        ws.cache_files().contains(&format!("sha256-{good}/p.bin")),
        "{:?}",
        ws.cache_files()
    );
    // Only `path` reads the host's files: a `file:` URL is no way around its rules.
    let other_file = ws.write("demo/q.bin", "other counts");
    std::fs::write(
        &recipe,
        format!(
            "{text}\n[[resources]]\nurl = \"file://{}\"\nsha256 = \"{other}\"\n",
            other_file.canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("unusable URL"), "{}", stderr(&o));
}

#[test]
fn a_body_cut_mid_way_is_retried_and_leaves_no_partial_file() {
    let server = Server::start();
    let body = bytes(200_000, 3);
    let sum = sha256_hex(&body);
    let url = server.route(
        "/cut.tar.gz",
        Route::CutFirst {
            body: body.clone(),
            cut_at: 70_000,
            n: 1,
        },
    );
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sum);
    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("retrying"), "{}", stderr(&o));
    assert_eq!(server.hits("/cut.tar.gz"), 2);
    assert_eq!(
        ws.cache_files(),
        vec![
            format!("sha256-{sum}/.lock"),
            format!("sha256-{sum}/cut.tar.gz")
        ]
    );
}

#[test]
fn a_body_cut_every_time_fails_after_bounded_retries() {
    let server = Server::start();
    let body = bytes(100_000, 4);
    let sum = sha256_hex(&body);
    let url = server.route(
        "/always-cut.tar.gz",
        Route::CutFirst {
            body,
            cut_at: 10,
            n: usize::MAX,
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(
        Cache::new(dir.path()),
        vec![],
        fast_retry(),
        Arc::new(Silent),
    )
    .unwrap();
    let sum = Checksum::new(Algo::Sha256, &sum).unwrap();
    let err = rt
        .block_on(fetcher.fetch(&Download::new(&url, &[], &sum)))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("after 3 attempts"), "{text}");
    assert_eq!(server.hits("/always-cut.tar.gz"), 3);
    let entry = std::fs::read_dir(fetcher.cache().entry_dir(&sum))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(entry, vec![".lock"]);
}

#[test]
fn mirror_404_then_upstream_success_and_mirror_hit() {
    let server = Server::start();
    let body = bytes(40_000, 5);
    let sum = sha256_hex(&body);
    let upstream = server.route("/upstream/demo.tar.gz", Route::Body(body.clone()));
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &upstream, &sum);

    let mirror = format!("{}/mirror", server.base);
    let o = ws.run(&["--mirror", &mirror, "fetch", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mirror_path = format!("/mirror/sha256/{sum}");
    assert_eq!(server.hits(&mirror_path), 1, "the mirror is tried first");
    assert_eq!(server.hits("/upstream/demo.tar.gz"), 1);

    // With the mirror holding the file, a fresh cache gets it from the mirror only.
    server.route(&mirror_path, Route::Body(body));
    let ws2 = Workspace::new();
    ws2.recipe("demo", "1.0.0", &upstream, &sum);
    let o = ws2
        .cmd()
        .env(
            "PACKAGER_MIRROR",
            format!("http://127.0.0.1:9/nothing,{mirror}"),
        )
        .args(["fetch", "demo"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.hits(&mirror_path), 2);
    assert_eq!(server.hits("/upstream/demo.tar.gz"), 1);
}

#[test]
fn every_url_failing_lists_each_url_and_why() {
    let server = Server::start();
    let sum = sha256_hex(b"x");
    let a = server.route("/a.tar.gz", Route::NotFound);
    let b = server.route("/b.tar.gz", Route::Body(b"not x".to_vec()));
    let ws = Workspace::new();
    ws.write(
        "demo/1.0.0.toml",
        &format!("[source]\nurl = \"{a}\"\nmirrors = [\"{b}\"]\nsha256 = \"{sum}\"\n"),
    );
    let o = ws.run(&["fetch", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("{a}: HTTP 404")), "{err}");
    assert!(err.contains(&format!("{b}: checksum mismatch")), "{err}");
}

#[test]
fn a_corrupted_entry_is_evicted_and_fetched_again() {
    let server = Server::start();
    let body = bytes(80_000, 6);
    let sum = sha256_hex(&body);
    let url = server.route("/c.tar.gz", Route::Body(body.clone()));
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sum);
    assert!(ws.run(&["fetch", "demo"]).status.success());
    let entry = ws.cache().join(format!("sources/sha256-{sum}/c.tar.gz"));
    let mut bad = body.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&entry, &bad).unwrap();

    let o = ws.run(&["fetch", "demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("corrupted"), "{}", stderr(&o));
    assert_eq!(server.hits("/c.tar.gz"), 2);
    assert_eq!(std::fs::read(&entry).unwrap(), body);
}

fn slow_route(server: &Server, path: &str, len: usize, seed: u64) -> (String, String, Vec<u8>) {
    let body = bytes(len, seed);
    let sum = sha256_hex(&body);
    let url = server.route(
        path,
        Route::Slow {
            body: body.clone(),
            chunk: 16 * 1024,
            pause: Duration::from_millis(20),
        },
    );
    (url, sum, body)
}

#[test]
fn eight_concurrent_tasks_make_one_request() {
    let server = Server::start();
    let (url, sum, body) = slow_route(&server, "/shared.tar.gz", 256 * 1024, 7);
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Arc::new(
        Fetcher::new(
            Cache::new(dir.path()),
            vec![],
            fast_retry(),
            Arc::new(Silent),
        )
        .unwrap(),
    );
    let sum = Checksum::new(Algo::Sha256, &sum).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let paths = rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let f = fetcher.clone();
                let d = Download::new(&url, &[], &sum);
                tokio::spawn(async move { f.fetch(&d).await.unwrap() })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(server.hits("/shared.tar.gz"), 1);
    assert_eq!(
        paths.iter().filter(|f| f.downloaded_from.is_some()).count(),
        1
    );
    for f in &paths {
        assert_eq!(std::fs::read(&f.path).unwrap(), body);
    }
}

#[test]
fn eight_concurrent_processes_make_one_request() {
    let server = Server::start();
    let (url, sum, body) = slow_route(&server, "/procs.tar.gz", 256 * 1024, 8);
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sum);
    let children: Vec<_> = (0..8)
        .map(|_| {
            ws.cmd()
                .args(["fetch", "demo", "1.0.0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(&sum));
    }
    assert_eq!(server.hits("/procs.tar.gz"), 1);
    let entry = ws
        .cache()
        .join(format!("sources/sha256-{sum}/procs.tar.gz"));
    assert_eq!(std::fs::read(entry).unwrap(), body);
}

#[test]
fn a_killed_download_does_not_block_the_next_run() {
    let server = Server::start();
    let (url, sum, body) = slow_route(&server, "/killed.tar.gz", 2 * 1024 * 1024, 9);
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", &url, &sum);
    let mut child = ws
        .cmd()
        .args(["fetch", "demo", "1.0.0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the download is under way (a temp file has data), then kill -9.
    let entry_dir = ws.cache().join(format!("sources/sha256-{sum}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let partial = std::fs::read_dir(&entry_dir).ok().and_then(|rd| {
            rd.flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .filter(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        });
        if partial.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        ws.cache_files().iter().any(|f| f.contains(".tmp-")),
        "the killed run left its temp file: {:?}",
        ws.cache_files()
    );

    // The next run is not blocked by the dead process's lock and cleans its temp file.
    server.route("/killed.tar.gz", Route::Body(body));
    let started = Instant::now();
    let o = ws.run(&["-v", "fetch", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(stderr(&o).contains("stale temp"), "{}", stderr(&o));
    assert_eq!(
        ws.cache_files(),
        vec![
            format!("sha256-{sum}/.lock"),
            format!("sha256-{sum}/killed.tar.gz")
        ]
    );
}

#[test]
fn checksum_command_hashes_urls_and_files_and_redacts() {
    let server = Server::start();
    let body = bytes(10_000, 10);
    let sum = sha256_hex(&body);
    let url = server.route("/k.tar.gz", Route::Body(body.clone()));
    let ws = Workspace::new();
    let o = ws.run(&["checksum", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{sum}  {url}\n"));

    let file = ws.dir.path().join("local.tar.gz");
    std::fs::write(&file, &body).unwrap();
    let o = ws.run(&["checksum", file.to_str().unwrap()]);
    assert_eq!(stdout(&o), format!("{sum}  {}\n", file.display()));

    // Nothing is cached by `checksum`.
    assert!(ws.cache_files().is_empty());

    // Secrets in URLs never reach the output.
    let secret = format!(
        "http://user:hunter2@{}/missing?X-Amz-Signature=deadbeef",
        server.base.trim_start_matches("http://")
    );
    let o = ws.run(&["checksum", &secret]);
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !all.contains("hunter2") && !all.contains("deadbeef"),
        "{all}"
    );
    assert!(all.contains("HTTP 404"), "{all}");
}
