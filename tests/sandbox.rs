//! The confinement of build, test and shell containers (src/build/sandbox.rs), on the real engine:
//! an unprivileged user, no capabilities, `no-new-privileges`, process/memory/CPU limits, a
//! read-only root filesystem. These tests need Docker: without it they fail, loudly.

mod common;

use std::process::Output;

use common::engine::{containers_of, docker, fixture_recipe, workspace};
use common::{Server, Workspace, stderr};

fn recipe(ws: &Workspace, server: &Server, runtime: &str, body: &str) {
    fixture_recipe(ws, server, runtime, body);
}

/// The commands that print what confines the container, one `key=value` line each (cgroup v1
/// or v2, whichever the engine has): the user, every capability set (inheritable, permitted,
/// effective, bounding, ambient: a uid 1000 process has no effective capabilities even when the
/// bounding set is Docker's default, so only the bounding set shows `cap_drop`), the limits, and
/// the swap beyond the memory limit (`memory.swap.max` on v2, `memsw - memory` on v1).
const PROBE: &str = r#"echo "uid=$(id -u)"; sed -n 's/^\(Cap[A-Za-z]*\|NoNewPrivs\):[[:space:]]*/\1=/p' /proc/self/status; echo "pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"; echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"; if [ -e /sys/fs/cgroup/memory.swap.max ]; then echo "swap=$(cat /sys/fs/cgroup/memory.swap.max)"; else echo "swap=$(( $(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes) - $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) ))"; fi; echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max)""#;

/// The network a container sees: its interfaces and how many routes it has (`lo,` and none
/// without a network).
const NET_PROBE: &str = r#"echo "net=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,) routes=$(tail -n +2 /proc/net/route | wc -l)""#;

/// Every capability set of a process with none.
const NO_CAPABILITIES: [&str; 5] = [
    "CapInh=0000000000000000",
    "CapPrm=0000000000000000",
    "CapEff=0000000000000000",
    "CapBnd=0000000000000000",
    "CapAmb=0000000000000000",
];

fn build(ws: &Workspace, args: &[&str]) -> Output {
    let store = ws.dir.path().join("store");
    let mut all = vec!["-v", "build", "--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    ws.run(&all)
}

#[test]
fn builds_and_tests_run_unprivileged_without_capabilities_within_limits() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    recipe(
        &ws,
        &server,
        "confined",
        &format!(
            r#"[build]
memory = "1G"
cpus = 1
pids = 300
configure = ['''{PROBE}''', "./configure --prefix={{prefix}}"]
install = ["make install", "touch $HOME/home-is-writable /tmp/tmp-is-writable", "test -O {{prefix}}", "test -O ."]
[test]
commands = ['''{PROBE}''', '''{NET_PROBE}''', "test -O {{prefix}}/bin/confined", "{{prefix}}/bin/confined --version"]
"#
        ),
    );
    let o = build(&ws, &["confined", "1.0.0"]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    // Both the build and the test container print the same confinement.
    for line in NO_CAPABILITIES.iter().chain(&[
        "uid=1000",
        "NoNewPrivs=1",
        "pids=300",
        "memory=1073741824",
        "swap=0",
        "cpu=100000",
    ]) {
        let n = log.lines().filter(|l| l.ends_with(line)).count();
        assert_eq!(n, 2, "`{line}` in the build and in the test: {log}");
    }
    // The test container has no network: only the loopback interface, no route.
    assert!(
        log.lines().any(|l| l.ends_with("net=lo, routes=0")),
        "the test container's network: {log}"
    );

    // The command line wins over the recipe.
    let o = build(
        &ws,
        &[
            "--force",
            "--pids-limit",
            "200",
            "--memory",
            "768M",
            "--cpus",
            "0.5",
            "confined",
            "1.0.0",
        ],
    );
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    for line in ["pids=200", "memory=805306368", "cpu=50000"] {
        assert!(log.lines().any(|l| l.ends_with(line)), "{line}: {log}");
    }
    assert!(containers_of(&docker, "confined").is_empty());
}

#[test]
fn a_build_that_writes_outside_its_work_directory_and_prefix_fails() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    for (runtime, target, why) in [
        ("writes-etc", "/etc/packager-was-here", None),
        (
            "writes-app",
            "/app/not-my-prefix",
            Some("Permission denied"),
        ),
        ("writes-usr", "/usr/local/bin/evil", None),
        // World-writable, so only the read-only root file system stops it.
        (
            "writes-var-tmp",
            "/var/tmp/packager-was-here",
            Some("Read-only file system"),
        ),
    ] {
        recipe(
            &ws,
            &server,
            runtime,
            &format!(
                "[build]\nconfigure = [\"touch {target}\", \"./configure --prefix={{prefix}}\"]\n"
            ),
        );
        let o = build(&ws, &[runtime, "1.0.0"]);
        let log = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{log}");
        assert!(log.contains(&format!("touch {target}")), "{log}");
        match why {
            Some(why) => assert!(log.contains(why), "{target}: {log}"),
            None => assert!(
                log.contains("Read-only file system") || log.contains("Permission denied"),
                "{target}: {log}"
            ),
        }
        assert!(containers_of(&docker, runtime).is_empty());
    }
}

#[test]
fn a_build_past_its_process_limit_fails_while_another_build_succeeds() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // A bounded loop that starts more processes than the limit lets it.
    recipe(
        &ws,
        &server,
        "many-procs",
        "[build]\npids = 64\nbuild = [\"i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; wait\"]\n",
    );
    recipe(&ws, &server, "neighbour", "");
    let store = ws.dir.path().join("store");
    let store = store.to_str().unwrap();
    let mut greedy = ws.cmd();
    greedy.args(["build", "--store", store, "many-procs", "1.0.0"]);
    let mut neighbour = ws.cmd();
    neighbour.args(["build", "--store", store, "neighbour", "1.0.0"]);
    let piped = |c: &mut std::process::Command| {
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let greedy = piped(&mut greedy);
    let neighbour = piped(&mut neighbour);
    let (greedy, neighbour) = (
        greedy.wait_with_output().unwrap(),
        neighbour.wait_with_output().unwrap(),
    );
    let log = stderr(&greedy);
    assert_eq!(greedy.status.code(), Some(1), "{log}");
    assert!(log.contains("build of many-procs 1.0.0 failed"), "{log}");
    assert!(
        log.contains("reached its process limit (64 processes at once)")
            && log.contains("--pids-limit"),
        "the error says why: {log}"
    );
    assert!(neighbour.status.success(), "{}", stderr(&neighbour));
    assert!(containers_of(&docker, "many-procs").is_empty());
    assert!(containers_of(&docker, "neighbour").is_empty());
}

#[test]
fn a_root_phase_runs_as_root_with_only_the_file_capabilities() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    recipe(
        &ws,
        &server,
        "rooted",
        r#"[build]
root = ["install"]
build = ["test \"$(id -u)\" = 1000", "make"]
install = ["test \"$(id -u)\" = 0", "grep -cE '^Cap(Prm|Eff|Bnd):[[:space:]]+000000000000000b$' /proc/self/status | grep -x 3", "grep -E '^CapAmb:[[:space:]]+0000000000000000$' /proc/self/status", "! touch /etc/x", "! touch /etc/ld.so.preload", "make install"]
"#,
    );
    let o = build(&ws, &["rooted", "1.0.0"]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("install runs as root"), "{log}");
    assert!(containers_of(&docker, "rooted").is_empty());

    // A phase that is not a phase is a recipe error.
    recipe(&ws, &server, "rooted", "[build]\nroot = [\"deploy\"]\n");
    let o = build(&ws, &["rooted", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`deploy` is not a phase"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_debug_shell_runs_as_the_build_user_within_the_same_limits() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    recipe(&ws, &server, "shelled", "[build]\npids = 128\n");
    let o = ws.run(&["shell", "shelled", "1.0.0", "--", "sh", "-c", PROBE]);
    let out = common::stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for line in NO_CAPABILITIES
        .iter()
        .chain(&["uid=1000", "NoNewPrivs=1", "pids=128"])
    {
        assert!(out.lines().any(|l| l == *line), "{line}: {out}");
    }
    assert!(containers_of(&docker, "shelled").is_empty());
}
