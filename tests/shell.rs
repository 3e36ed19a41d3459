//! `packager shell` and `packager build --shell-on-failure` on the real Docker engine: commands
//! and stdin-fed shells, `--after`, `--keep`/`--attach`, and interactive sessions through a
//! real pseudo-terminal (tmux drives the binary). These tests need Docker and tmux: without
//! them they fail, loudly.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::engine::{containers_of, docker, fixture, rt, workspace};
use common::{Server, Workspace, stderr, stdout};

/// Runs the packager with `input` on its stdin.
fn run_with_stdin(ws: &Workspace, args: &[&str], input: &str) -> Output {
    let mut child = ws
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_command_runs_in_the_unpacked_sources_with_the_build_environment() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-cmd", "");
    let o = ws.run(&[
        "shell",
        "fixture-cmd",
        "1.0.0",
        "--",
        "sh",
        "-c",
        "pwd; ls; echo prefix=$PREFIX; test -d $PREFIX && echo prefix-exists; echo to-stderr >&2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"/build/src"), "{out}");
    for file in ["configure", "Makefile", "main.c", "greet.h"] {
        assert!(lines.contains(&file), "{file} unpacked: {out}");
    }
    assert!(
        !lines.contains(&"config.mk"),
        "no phase ran without --after: {out}"
    );
    assert!(lines.contains(&"prefix=/app/fixture-cmd"), "{out}");
    assert!(lines.contains(&"prefix-exists"), "{out}");
    assert!(
        stderr(&o).contains("to-stderr") && !out.contains("to-stderr"),
        "stderr stays stderr: {}",
        stderr(&o)
    );
    assert!(containers_of(&docker, "fixture-cmd").is_empty());
}

#[test]
fn the_exit_code_of_the_command_is_the_packagers() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-exit", "");
    let o = ws.run(&["shell", "fixture-exit", "1.0.0", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("error"),
        "a command's exit code is not a packager error: {}",
        stderr(&o)
    );
    let o = ws.run(&["shell", "fixture-exit", "1.0.0", "--", "no-such-command"]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(containers_of(&docker, "fixture-exit").is_empty());
}

#[test]
fn without_a_command_and_a_terminal_commands_are_read_from_stdin() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-stdin", "");
    let o = run_with_stdin(
        &ws,
        &["shell", "fixture-stdin", "1.0.0"],
        "pwd\necho \"shell=$0 jobs=$JOBS\"\nexit 3\necho never\n",
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("/build/src\n"), "{out}");
    assert!(
        out.contains("shell=bash jobs="),
        "bash when the image has it: {out}"
    );
    assert!(!out.contains("never"), "{out}");

    // A command gets stdin too, closed at its end.
    let o = run_with_stdin(
        &ws,
        &[
            "shell",
            "fixture-stdin",
            "1.0.0",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ],
        "hello from the host\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "HELLO FROM THE HOST\ndone\n");
    assert!(containers_of(&docker, "fixture-stdin").is_empty());
}

#[test]
fn after_a_phase_its_outputs_are_in_place() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-after", "");
    let o = ws.run(&[
        "shell",
        "fixture-after",
        "1.0.0",
        "--after",
        "configure",
        "--",
        "sh",
        "-c",
        "cat config.mk; ls",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("PREFIX = /app"), "configure's output: {out}");
    assert!(!out.contains("main.o"), "build did not run: {out}");

    let o = ws.run(&[
        "shell",
        "fixture-after",
        "1.0.0",
        "--after",
        "build",
        "--",
        "sh",
        "-c",
        "ls; ls $PREFIX | wc -l",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("main.o") && out.contains("libfixture-after.a"),
        "{out}"
    );
    assert!(out.ends_with("0\n"), "install did not run: {out}");
    assert!(containers_of(&docker, "fixture-after").is_empty());
}

#[test]
fn kept_containers_survive_orphan_cleanup_and_can_be_attached() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-keep", "");
    let o = ws.run(&[
        "shell",
        "fixture-keep",
        "1.0.0",
        "--keep",
        "--",
        "sh",
        "-c",
        "echo left-here > marker",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let id = err
        .split("`packager shell --attach ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("how to come back: {err}"))
        .to_string();
    let kept = containers_of(&docker, "fixture-keep");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let cleanup = KeptContainer(kept[0].id.clone());
    assert!(kept[0].id.starts_with(&id));
    assert!(kept[0].names[0].starts_with("packager-kept-"), "{kept:?}");

    // Another run removes orphans of dead packagers, but not kept containers.
    let o = ws.run(&["shell", "fixture-keep", "1.0.0", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(containers_of(&docker, "fixture-keep").len(), 1);

    let o = ws.run(&[
        "shell",
        "--attach",
        &id,
        "--",
        "sh",
        "-c",
        "pwd; cat marker; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "/build/src\nleft-here\n");
    assert_eq!(
        containers_of(&docker, "fixture-keep").len(),
        1,
        "--attach leaves the container"
    );
    drop(cleanup);
    assert!(containers_of(&docker, "fixture-keep").is_empty());

    let o = ws.run(&["shell", "--attach", "no-such-container-here", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no packager container `no-such-container-here`"),
        "{}",
        stderr(&o)
    );
}

/// Removes a kept container at the end of a test, whatever happens.
struct KeptContainer(String);

impl Drop for KeptContainer {
    fn drop(&mut self) {
        let _ = rt().block_on(docker().remove_container(&self.0));
    }
}

const FAILING_CONFIGURE: &str = r#"[build]
configure = [
  "./configure --prefix={prefix}",
  "echo 'checking for libfoo... no' > config.log; echo 'configure: error: libfoo missing' >&2; exit 5",
]
"#;

#[test]
fn shell_on_failure_opens_in_the_failed_tree_and_the_build_still_fails() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-sof", FAILING_CONFIGURE);
    let o = run_with_stdin(
        &ws,
        &["build", "fixture-sof", "1.0.0", "--shell-on-failure"],
        "pwd; cat config.log; cat config.mk; exit 0\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("/build/src\n"), "{out}");
    assert!(
        out.contains("checking for libfoo... no"),
        "the failing step's file: {out}"
    );
    assert!(out.contains("PREFIX = /app"), "earlier outputs: {out}");
    let err = stderr(&o);
    assert!(
        err.contains("error: configure of fixture-sof 1.0.0 failed"),
        "{err}"
    );
    assert!(err.contains("exited with code 5"), "{err}");
    assert!(err.contains("configure: error: libfoo missing"), "{err}");
    assert!(containers_of(&docker, "fixture-sof").is_empty());
    assert!(!ws.dir.path().join("dist").exists(), "nothing published");

    // `shell --after` over a failing phase also lands in the failed tree.
    let o = ws.run(&[
        "shell",
        "fixture-sof",
        "1.0.0",
        "--after",
        "build",
        "--",
        "cat",
        "config.log",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "checking for libfoo... no\n");
    assert!(
        stderr(&o).contains("configure of fixture-sof 1.0.0 failed"),
        "{}",
        stderr(&o)
    );
    assert!(containers_of(&docker, "fixture-sof").is_empty());
}

#[test]
fn keep_on_a_failed_build_says_how_to_attach() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-keptfail", FAILING_CONFIGURE);
    let o = ws.run(&["build", "fixture-keptfail", "1.0.0", "--keep"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let kept = containers_of(&docker, "fixture-keptfail");
    let _cleanup = kept.first().map(|c| KeptContainer(c.id.clone()));
    assert_eq!(kept.len(), 1);
    let err = stderr(&o);
    let short = &kept[0].id[..12];
    assert!(
        err.contains(&format!("`packager shell --attach {short}`")),
        "{err}"
    );
    let o = ws.run(&["shell", "--attach", short, "--", "cat", "config.log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "checking for libfoo... no\n");
}

#[test]
fn a_killed_shell_leaves_no_orphan_after_the_next_run() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-killed", "");
    let mut child = ws
        .cmd()
        .args(["shell", "fixture-killed", "1.0.0", "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_of(&docker, "fixture-killed").is_empty() {
        assert!(Instant::now() < deadline, "the shell never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(containers_of(&docker, "fixture-killed").len(), 1);
    let o = ws.run(&["shell", "fixture-killed", "1.0.0", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        containers_of(&docker, "fixture-killed").is_empty(),
        "the next run removed the orphan"
    );
}

#[test]
fn docker_unreachable_is_a_clear_error() {
    let server = Server::start();
    let ws = Workspace::new();
    fixture(&ws, &server, "fixture-nodocker", "");
    for args in [
        &["shell", "fixture-nodocker", "1.0.0", "--", "true"][..],
        &["shell", "--attach", "0123456789ab"][..],
    ] {
        let o = ws
            .cmd()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("DOCKER_HOST"), "{}", stderr(&o));
    }
}

// ----- interactive sessions through a real terminal ----------------------------------------

/// A tmux server of its own (its own socket), running one command in a detached session whose
/// terminal the test reads and types into. Killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, command: &str, columns: u16, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let o = tmux
            .cmd()
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "t"])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()])
            .arg(command)
            .output()
            .unwrap_or_else(|e| panic!("these tests need tmux: {e}"));
        assert!(o.status.success(), "tmux: {}", stderr(&o));
        let o = tmux
            .cmd()
            .args(["set", "-g", "status", "off"])
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux: {}", stderr(&o));
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// The screen's text.
    fn screen(&self) -> String {
        stdout(
            &self
                .cmd()
                .args(["capture-pane", "-p", "-t", "t"])
                .output()
                .unwrap(),
        )
    }

    /// Waits until a line of the screen satisfies `want`.
    fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let screen = self.screen();
            if screen.lines().any(|l| want(l.trim_end())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys` (tmux key names, e.g. `Enter`, `C-c`, or literal text with `-l`).
    fn keys(&self, keys: &[&str]) {
        let o = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux send-keys: {}", stderr(&o));
    }

    /// Types a line of text and Enter.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn resize(&self, columns: u16, rows: u16) {
        let o = self
            .cmd()
            .args(["resize-window", "-t", "t"])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux resize-window: {}", stderr(&o));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// A script for the terminal: records `stty -g` before and after running the packager with
/// `args`, and the packager's exit code.
fn script(ws: &Workspace, args: &str) -> String {
    let dir = ws.dir.path().display();
    format!(
        "cd {dir} && stty -g > stty.before; env PACKAGER_RECIPES={recipes} PACKAGER_CACHE={cache} NO_COLOR=1 {bin} {args}; echo $? > code.tmp; stty -g > stty.after; mv code.tmp code; sleep 600",
        recipes = ws.recipes().display(),
        cache = ws.cache().display(),
        bin = env!("CARGO_BIN_EXE_packager"),
    )
}

/// Waits for the packager in the terminal to exit; returns its exit code.
fn exit_code(ws: &Workspace) -> i32 {
    let file = ws.dir.path().join("code");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the packager did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn assert_terminal_restored(ws: &Workspace) {
    let before = std::fs::read_to_string(ws.dir.path().join("stty.before")).unwrap();
    let after = std::fs::read_to_string(ws.dir.path().join("stty.after")).unwrap();
    assert!(!before.trim().is_empty());
    assert_eq!(before, after, "the terminal settings are restored");
}

#[test]
fn an_interactive_shell_has_a_terminal_that_follows_the_window() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-tty", "");
    let tmux = Tmux::start(
        ws.dir.path(),
        &script(&ws, "shell fixture-tty 1.0.0 --after configure"),
        110,
        30,
    );
    tmux.wait_for("the banner", |l| {
        l.contains("packager: fixture-tty 1.0.0 after configure, /build/src, prefix /app/fixture-tty; exit or Ctrl-D to leave")
    });
    let containers = containers_of(&docker, "fixture-tty");
    assert_eq!(containers.len(), 1);

    tmux.line("echo \"in-$(pwd)-$((6*7))\"; test -t 0 && echo stdin-is-a-tty");
    tmux.wait_for("a command's output", |l| l == "in-/build/src-42");
    tmux.wait_for("a TTY", |l| l == "stdin-is-a-tty");
    tmux.line("stty size | sed 's/^/size=/'");
    tmux.wait_for("the initial size", |l| l == "size=30 110");

    tmux.resize(120, 40);
    tmux.line("stty size | sed 's/^/size=/'");
    tmux.wait_for("the new size", |l| l == "size=40 120");

    // Ctrl-C goes to the shell (interrupting its command), not to the packager.
    tmux.line("sleep 300");
    std::thread::sleep(Duration::from_millis(500));
    tmux.keys(&["C-c"]);
    tmux.line("echo \"still-$((1+1))\"");
    tmux.wait_for("the shell after Ctrl-C", |l| l == "still-2");
    assert!(!ws.dir.path().join("code").exists(), "the packager runs on");

    tmux.line("exit 5");
    assert_eq!(exit_code(&ws), 5, "{}", tmux.screen());
    assert_terminal_restored(&ws);
    assert!(containers_of(&docker, "fixture-tty").is_empty());
    let docker_ids: Vec<_> = containers.iter().map(|c| c.id.clone()).collect();
    for id in docker_ids {
        assert!(
            rt().block_on(docker.inspect_container(&id))
                .unwrap()
                .is_none(),
            "{id} removed"
        );
    }
}

#[test]
fn an_interactive_shell_on_failure_ends_the_build_with_ctrl_d() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-ttyfail", FAILING_CONFIGURE);
    let tmux = Tmux::start(
        ws.dir.path(),
        &script(&ws, "build fixture-ttyfail 1.0.0 --shell-on-failure"),
        110,
        30,
    );
    tmux.wait_for("the banner", |l| {
        l.contains("packager: fixture-ttyfail 1.0.0 where configure failed, /build/src")
    });
    tmux.line("cat config.log");
    tmux.wait_for("the failed tree", |l| l == "checking for libfoo... no");
    tmux.keys(&["C-d"]);
    assert_eq!(exit_code(&ws), 1, "{}", tmux.screen());
    assert_terminal_restored(&ws);
    assert!(containers_of(&docker, "fixture-ttyfail").is_empty());
}
