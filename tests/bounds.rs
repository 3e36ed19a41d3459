//! The host process is bounded whatever a build does: a line without a newline cannot grow its
//! memory, a log cannot grow past its limit, no control character reaches the terminal, a phase
//! or test cannot run forever, `/tmp` and `HOME` cannot fill the container's memory. The tests
//! that build need Docker: without it they fail, loudly.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::engine::{containers_of, docker, fixture_recipe, workspace};
use common::{Server, Workspace, stderr};

fn build(ws: &Workspace, args: &[&str]) -> Output {
    let store = ws.dir.path().join("store");
    let mut all = vec!["build", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    ws.run(&all)
}

/// The build logs of `runtime` in the workspace's cache.
fn logs_of(ws: &Workspace, runtime: &str) -> Vec<PathBuf> {
    std::fs::read_dir(ws.cache().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{runtime}-"))
        })
        .collect()
}

#[test]
fn a_line_without_end_and_a_flood_of_lines_leave_memory_and_log_bounded() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // 100 MB without a newline, then 400 000 short lines (2.7 MB): under a 1 MiB log limit.
    fixture_recipe(
        &ws,
        &server,
        "flood",
        r#"[build]
build = ["head -c 100000000 /dev/zero | tr '\\0' x; echo", "seq 1 400000", "make"]
"#,
    );
    let rss = ws.dir.path().join("rss");
    let store = ws.dir.path().join("store");
    // The packager binary under /usr/bin/time, for its peak resident memory.
    let packager = ws.cmd().get_program().to_owned();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o", rss.to_str().unwrap()])
        .arg(&packager)
        .args([
            "build",
            "--store",
            store.to_str().unwrap(),
            "flood",
            "1.0.0",
        ])
        .env("PACKAGER_RECIPES", ws.recipes())
        .env("PACKAGER_CACHE", ws.cache())
        .env("PACKAGER_LOG_LIMIT", "1M")
        .env("NO_COLOR", "1")
        .current_dir(ws.dir.path());
    let o = timed
        .output()
        .expect("this test needs GNU time at /usr/bin/time (scripts/test installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let kib: u64 = std::fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("peak RSS of the build: {kib} KiB");
    // The 100 MB line alone would take more than that, held once in the splitter's buffer.
    assert!(kib < 96 * 1024, "peak RSS {kib} KiB");
    for log in logs_of(&ws, "flood") {
        let text = std::fs::read_to_string(&log).unwrap();
        let size = text.len() as u64;
        // The build's part is within its limit; the test's lines come after it.
        assert!(
            size < (1 << 20) + 64 * 1024,
            "{}: {size} bytes",
            log.display()
        );
        assert!(
            text.contains(&format!(
                "{}[… {} bytes cut]",
                "x".repeat(16),
                100_000_000 - 65536
            )),
            "{}: the long line is cut and says so",
            log.display()
        );
        assert!(text.contains("# [log cut: "), "{}", log.display());
        // The head and the tail survive: the first and the last of the short lines.
        assert!(text.contains("\n1\n2\n3\n") && text.contains("\n400000\n"));
        assert!(text.contains("# == test"), "{}", log.display());
    }
    assert_eq!(logs_of(&ws, "flood").len(), 1);
    assert!(containers_of(&docker, "flood").is_empty());
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // Clear the screen, retitle the window, a C1 CSI, then fail: the output shows under -v and
    // in the error's tail.
    fixture_recipe(
        &ws,
        &server,
        "escapes",
        r#"[build]
configure = ["printf '\\033[2J\\033]0;pwned\\007\\302\\23331mred\\r\\n'; exit 3"]
"#,
    );
    let o = build(&ws, &["-v", "escapes", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        !o.stderr.contains(&0x1b),
        "raw ESC on the terminal: {log:?}"
    );
    assert!(!log.contains('\u{9b}') && !log.contains('\u{7}'), "{log:?}");
    // Once under -v, once in the error's tail.
    assert_eq!(
        log.matches("^[[2J^[]0;pwned^G\\u{9b}31mred").count(),
        2,
        "{log}"
    );
    // The log holds the same visible text.
    let logs = logs_of(&ws, "escapes");
    let text = std::fs::read(&logs[0]).unwrap();
    assert!(!text.contains(&0x1b), "{}", String::from_utf8_lossy(&text));
    assert!(String::from_utf8_lossy(&text).contains("^[[2J^[]0;pwned^G\\u{9b}31mred"));
    assert!(containers_of(&docker, "escapes").is_empty());
}

#[test]
fn a_phase_past_its_timeout_fails_naming_it_and_leaves_no_container() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture_recipe(
        &ws,
        &server,
        "slow-build",
        "[build]\ntimeout = \"2s\"\nbuild = [\"echo started; sleep 60\"]\n",
    );
    let started = Instant::now();
    let o = build(&ws, &["slow-build", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(started.elapsed() < Duration::from_secs(45), "{log}");
    assert!(
        log.contains(
            "build of slow-build 1.0.0 timed out: `echo started; sleep 60` still ran after 2s"
        ),
        "{log}"
    );
    assert!(log.contains("| started"), "the tail: {log}");
    assert!(
        log.contains("`[build] timeout = \"…\"`") && log.contains("--timeout"),
        "{log}"
    );
    assert!(containers_of(&docker, "slow-build").is_empty());

    // The command line wins over the recipe.
    fixture_recipe(
        &ws,
        &server,
        "slow-build",
        "[build]\ntimeout = \"5h\"\nconfigure = [\"sleep 60\"]\n",
    );
    let started = Instant::now();
    let o = build(&ws, &["--timeout", "2s", "slow-build", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(started.elapsed() < Duration::from_secs(45), "{log}");
    assert!(
        log.contains("configure of slow-build 1.0.0 timed out"),
        "{log}"
    );
    assert!(containers_of(&docker, "slow-build").is_empty());
}

#[test]
fn a_test_past_its_timeout_fails_and_leaves_no_container() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture_recipe(
        &ws,
        &server,
        "slow-test",
        "[test]\ntimeout = \"3s\"\ncommands = [\"sleep 60\"]\n",
    );
    let started = Instant::now();
    let o = build(&ws, &["slow-test", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60), "{log}");
    assert!(
        log.contains("test of slow-test 1.0.0 timed out: `sleep 60` still ran after 3s"),
        "{log}"
    );
    assert!(
        log.contains("`[test] timeout = \"…\"`") && log.contains("--test-timeout"),
        "{log}"
    );
    assert!(containers_of(&docker, "slow-test").is_empty());
    assert!(!ws.dir.path().join("store").join("slow-test").exists());

    // An artifact whose own `uname` hangs cannot hold the linkage gate up: the probe runs the
    // run image's tools by absolute path, never the prefix's (it did, and hung, before).
    fixture_recipe(
        &ws,
        &server,
        "slow-test",
        r#"[build]
install = ["make install", "printf '#!/bin/sh\nsleep 60\n' > {prefix}/bin/uname", "chmod 755 {prefix}/bin/uname"]
[test]
timeout = "20s"
"#,
    );
    let started = Instant::now();
    let o = build(&ws, &["slow-test", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60), "{log}");
    assert!(containers_of(&docker, "slow-test").is_empty());
}

#[test]
fn tmp_and_home_are_full_at_their_size() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // With 256 MiB of memory, /tmp has 128 MiB and HOME 64 MiB: more fails, and the build
    // goes on (unbounded, the writes would succeed, or the build be killed for memory).
    fixture_recipe(
        &ws,
        &server,
        "fills-tmp",
        r#"[build]
configure = [
  "if dd if=/dev/zero of=/tmp/fill bs=1M count=160; then echo TMP-UNBOUNDED; fi; rm -f /tmp/fill",
  "if dd if=/dev/zero of=$HOME/fill bs=1M count=96; then echo HOME-UNBOUNDED; fi; rm -f $HOME/fill",
  "./configure --prefix={prefix}",
]
"#,
    );
    let o = build(&ws, &["-v", "--memory", "256M", "fills-tmp", "1.0.0"]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(log.matches("No space left on device").count(), 2, "{log}");
    assert!(
        !log.lines()
            .any(|l| l.ends_with("| TMP-UNBOUNDED") || l.ends_with("| HOME-UNBOUNDED")),
        "{log}"
    );
    assert!(containers_of(&docker, "fills-tmp").is_empty());
}

#[test]
fn timeouts_are_checked_and_not_part_of_the_build_key() {
    let ws = Workspace::new();
    ws.write_mini_manifest();
    let key = |ws: &Workspace| {
        let store = ws.dir.path().join("store");
        let o = ws.run(&["plan", "--json", "--store", store.to_str().unwrap(), "t"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["jobs"][0]["key"].as_str().unwrap().to_string()
    };
    let source = format!(
        "stack = \"mini\"\n[source]\nurl = \"http://127.0.0.1:9/t-1.0.0.tar.gz\"\nsha256 = \"{}\"\n",
        "0".repeat(64)
    );
    ws.write("t/1.0.0.toml", &source);
    let plain = key(&ws);
    ws.write(
        "t/1.0.0.toml",
        &format!("{source}[build]\ntimeout = \"90m\"\n[test]\ntimeout = \"1h 30m\"\n"),
    );
    assert_eq!(key(&ws), plain);

    ws.write(
        "t/1.0.0.toml",
        &format!("{source}[build]\ntimeout = \"soon\"\n"),
    );
    let o = ws.run(&["show", "t", "1.0.0"]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("1.0.0.toml:6") && log.contains("`soon` is not a duration"),
        "{log}"
    );
    let o = ws.run(&["build", "--timeout", "0s", "t", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
