//! `packager build` on the real Docker engine, with fixture runtimes served from loopback and
//! the small `mini` test stack (tests/stacks/mini), bootstrapped from Debian packages if absent.
//! These tests need Docker: without it they fail, loudly.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::engine::{containers_of, docker, fixture, rt, workspace};
use common::fixture::hostile_tarball;
use common::{Route, Server, sha256_hex, stderr, stdout};
use packager::package::{EntryKind, list_artifact};

#[test]
fn builds_tests_and_publishes_a_fixture() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-ok", "");
    let store = ws.dir.path().join("store");
    let o = ws.run(&[
        "build",
        "fixture-ok",
        "1.0.0",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let artifact = store.join("mini/fixture-ok-1.0.0.tar.gz");
    let line = stdout(&o);
    assert!(
        line.starts_with(&format!("{}  ", artifact.display())),
        "{line}"
    );
    let sha = sha256_hex(&std::fs::read(&artifact).unwrap());
    assert!(
        line.trim_end().ends_with(&format!("sha256:{sha}")),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(store.join("mini/fixture-ok-1.0.0.tar.gz.sha256")).unwrap(),
        format!("{sha}  fixture-ok-1.0.0.tar.gz\n")
    );

    let entries = list_artifact(&artifact).unwrap();
    let paths: Vec<String> = entries
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are sorted");
    for want in [
        "bin/fixture-ok",
        "bin/fixture-ok-link",
        "include/greet.h",
        "lib/libfixture-ok.a",
        "share/fixture-ok/README",
    ] {
        assert!(
            paths.iter().any(|p| p.trim_end_matches('/') == want),
            "{want} in {paths:?}"
        );
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("app")),
        "relative to the prefix: {paths:?}"
    );
    let bin = entries
        .iter()
        .find(|e| e.path == Path::new("bin/fixture-ok"))
        .unwrap();
    assert_eq!(bin.mode & 0o111, 0o111, "executable bit kept");
    let link = entries
        .iter()
        .find(|e| e.path == Path::new("bin/fixture-ok-link"))
        .unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.link_target.as_deref(), Some(Path::new("fixture-ok")));

    // The artifact's header fields are normalised.
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&artifact).unwrap());
    let mut ar = tar::Archive::new(gz);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mtime().unwrap(), packager::package::DEFAULT_MTIME);
        assert!(h.username().unwrap().unwrap_or("").is_empty());
    }

    // A log of the build (with the test phase) is in the cache.
    let logs: Vec<_> = std::fs::read_dir(ws.cache().join("logs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(
        log.contains("configured fixture-ok 1.0.0 for /app"),
        "{log}"
    );
    assert!(log.contains("hello, tester"), "the test phase ran: {log}");
    assert!(
        containers_of(&docker, "fixture-ok").is_empty(),
        "no container left"
    );
}

#[test]
fn two_builds_from_scratch_are_bit_for_bit_identical() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-repro", "");
    let mut sums = Vec::new();
    for store in ["a", "b"] {
        let store = ws.dir.path().join(store);
        let o = ws.run(&[
            "build",
            "fixture-repro",
            "1.0.0",
            "--store",
            store.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        sums.push(sha256_hex(
            &std::fs::read(store.join("mini/fixture-repro-1.0.0.tar.gz")).unwrap(),
        ));
    }
    assert_eq!(sums[0], sums[1]);

    // Building again with the same inputs is skipped; with --force it is rebuilt, and the
    // same bytes make publishing a no-op.
    let a = ws.dir.path().join("a");
    let store_a = a.to_str().unwrap();
    let o = ws.run(&["build", "fixture-repro", "1.0.0", "--store", store_a]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing built: {}", stdout(&o));
    let o = ws.run(&[
        "build",
        "fixture-repro",
        "1.0.0",
        "--force",
        "--store",
        store_a,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already published"), "{}", stderr(&o));
    // Other inputs (here SOURCE_DATE_EPOCH, which changes the bytes) are refused as a
    // conflict rather than replacing what buildpacks may have pinned.
    let o = ws
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            "fixture-repro",
            "1.0.0",
            "--store",
            a.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "error: fixture-repro 1.0.0 is published with other inputs: published with key"
        ),
        "{err}"
    );
    assert!(
        err.contains("bump `revision` in the recipe or pass --force"),
        "{err}"
    );
    assert_eq!(
        sha256_hex(&std::fs::read(a.join("mini/fixture-repro-1.0.0.tar.gz")).unwrap()),
        sums[0],
        "the stored artifact is unchanged"
    );
    assert!(containers_of(&docker, "fixture-repro").is_empty());
}

#[test]
fn a_failing_configure_names_the_phase_and_leaves_no_container() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(
        &ws,
        &server,
        "fixture-fail",
        "[build]\nconfigure = [\"./configure --prefix={prefix} --fail\"]\n",
    );
    let o = ws.run(&["build", "fixture-fail", "1.0.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: configure of fixture-fail 1.0.0 failed"),
        "{err}"
    );
    assert!(
        err.contains("`./configure --prefix=/app/fixture-fail --fail` exited with code 3"),
        "{err}"
    );
    assert!(
        err.contains("configure: error: asked to fail"),
        "the log tail: {err}"
    );
    assert!(err.contains("full log: "), "{err}");
    assert!(
        err.contains("hint: debug it in the same environment: `packager shell fixture-fail 1.0.0`"),
        "{err}"
    );
    assert!(
        containers_of(&docker, "fixture-fail").is_empty(),
        "no container left"
    );
    assert!(!ws.dir.path().join("dist").exists(), "nothing published");
}

#[test]
fn a_failing_test_publishes_nothing() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-badtest", "");
    let recipe = ws.recipes().join("fixture-badtest/1.0.0.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(
        &recipe,
        text.replace("grep -x 'hello, tester'", "grep -x 'goodbye'"),
    )
    .unwrap();
    let o = ws.run(&["build", "fixture-badtest", "1.0.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("test of fixture-badtest 1.0.0 failed"),
        "{}",
        stderr(&o)
    );
    assert!(!ws.dir.path().join("dist").exists(), "nothing published");
    assert!(containers_of(&docker, "fixture-badtest").is_empty());
}

#[test]
fn builds_have_no_network_and_no_host_environment() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(
        &ws,
        &server,
        "fixture-env",
        r#"[build]
configure = [
  "env | sort",
  "ls /sys/class/net",
  "test \"$(ls /sys/class/net)\" = lo",
  "./configure --prefix={prefix}",
]
env = { FROM_RECIPE = "yes" }
"#,
    );
    let o = ws
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "AKIAHOSTKEY")
        .env("AWS_SECRET_ACCESS_KEY", "host-secret-value")
        .env("HOST_ONLY_VARIABLE", "leaked")
        .args(["-v", "build", "fixture-env", "1.0.0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "only loopback inside: {}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("PREFIX=/app") && log.contains("FROM_RECIPE=yes"),
        "{log}"
    );
    assert!(
        log.contains("JOBS=") && log.contains("SOURCE_DATE_EPOCH="),
        "{log}"
    );
    for leak in [
        "AWS_",
        "AKIAHOSTKEY",
        "host-secret-value",
        "HOST_ONLY_VARIABLE",
    ] {
        assert!(!log.contains(leak), "{leak} leaked into the build: {log}");
    }

    // With `network = true` the container still has only loopback: its way out is the egress
    // proxy packager runs inside it (tests/egress.rs), announced in the environment.
    fixture(
        &ws,
        &server,
        "fixture-net",
        "[build]\nnetwork = true\nconfigure = [\"test \\\"$(ls /sys/class/net)\\\" = lo\", \"test \\\"$HTTPS_PROXY\\\" = http://127.0.0.1:3128\", \"./configure --prefix={prefix}\"]\n",
    );
    let o = ws.run(&["build", "fixture-net", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(containers_of(&docker, "fixture-env").is_empty());
    assert!(containers_of(&docker, "fixture-net").is_empty());
}

#[test]
fn hostile_source_archives_are_refused() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    for (kind, entry) in [
        ("dotdot", "../../escape"),
        ("absolute", "/tmp/escape-absolute"),
        ("symlink", "link"),
        ("chain", "evil-1.0.0/c"),
        ("pax-bomb", "PaxHeaders/bomb"),
    ] {
        let runtime = format!("evil-{kind}");
        let tgz = hostile_tarball(kind);
        let sum = sha256_hex(&tgz);
        let url = server.route(&format!("/{runtime}.tar.gz"), Route::Body(tgz));
        ws.write(
            &format!("{runtime}/1.0.0.toml"),
            &format!("stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n"),
        );
        let o = ws.run(&["build", &runtime, "1.0.0", "--keep"]);
        assert_eq!(o.status.code(), Some(1), "{kind}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("cannot unpack the sources"), "{kind}: {err}");
        assert!(err.contains(entry), "{kind}: the entry is named: {err}");
        // The kept container shows nothing was written outside the work directory.
        let kept = containers_of(&docker, &runtime);
        assert_eq!(kept.len(), 1, "{kind}: --keep keeps the container");
        let check = std::process::Command::new("docker")
            .args(["exec", &kept[0].id, "sh", "-c"])
            .arg("test ! -e /escape && test ! -e /build/escape && test ! -e /tmp/escape-absolute && test ! -e /build/src/link && test ! -e /build/src/c")
            .status()
            .unwrap();
        rt().block_on(docker.remove_container(&kept[0].id)).unwrap();
        assert!(check.success(), "{kind}: something was written");
    }
}

#[test]
fn a_decompression_bomb_fails_naming_the_archive_and_its_limit_and_leaves_nothing() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    let mut files = common::fixture::c_project("bomb", "1.0.0");
    files.push(("zeros".into(), 0o644, vec![0u8; 8 << 20]));
    let tgz = common::fixture::tarball("bomb-1.0.0", &files);
    assert!(tgz.len() < 64 << 10, "a small download: {}", tgz.len());
    let sum = sha256_hex(&tgz);
    let url = server.route("/bomb-1.0.0.tar.gz", Route::Body(tgz));
    ws.write(
        "bomb/1.0.0.toml",
        &format!("stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n[build]\nmax_unpacked_size = \"1M\"\n"),
    );
    let o = ws.run(&["build", "bomb", "1.0.0", "--keep"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot unpack the sources"), "{err}");
    assert!(
        err.contains(&sum),
        "the archive is named (its cache file): {err}"
    );
    assert!(
        err.contains("more than 1048576 bytes"),
        "the limit is named: {err}"
    );
    let kept = containers_of(&docker, "bomb");
    assert_eq!(kept.len(), 1);
    let listing = std::process::Command::new("docker")
        .args(["exec", &kept[0].id, "find", "/build/src", "-mindepth", "1"])
        .output()
        .unwrap();
    rt().block_on(docker.remove_container(&kept[0].id)).unwrap();
    assert!(listing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "",
        "nothing is left in the work directory"
    );
    // Nothing half-made on the host either.
    let work = ws.cache().join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_entry_limit_counts_the_source_and_its_resources_together() {
    // The source holds 7 entries and the resource 4: each is under `max_unpacked_entries = 10`,
    // together they are not.
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    let source =
        common::fixture::tarball("many-1.0.0", &common::fixture::c_project("many", "1.0.0"));
    let source_sum = sha256_hex(&source);
    let source_url = server.route("/many-1.0.0.tar.gz", Route::Body(source));
    let files: Vec<(String, u32, Vec<u8>)> = (0..3)
        .map(|i| (format!("tool{i}"), 0o644, vec![b'x'; 10]))
        .collect();
    let resource = common::fixture::tarball("tools", &files);
    let resource_sum = sha256_hex(&resource);
    let resource_url = server.route("/tools.tar.gz", Route::Body(resource));
    ws.write(
        "many/1.0.0.toml",
        &format!(
            "stack = \"mini\"\n[source]\nurl = \"{source_url}\"\nsha256 = \"{source_sum}\"\n[[resources]]\nurl = \"{resource_url}\"\nsha256 = \"{resource_sum}\"\ndest = \"external/tools\"\nunpack = true\n[build]\nmax_unpacked_entries = 10\n"
        ),
    );
    let o = ws.run(&["build", "many", "1.0.0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot unpack the sources"), "{err}");
    assert!(err.contains("more than 10 entries together"), "{err}");
    assert!(
        err.contains(&resource_sum),
        "the resource, where the limit was passed, is named (its cache file): {err}"
    );
    assert!(
        err.contains("raise `[build] max_unpacked_entries`"),
        "{err}"
    );
    assert!(containers_of(&docker, "many").is_empty());

    // `0` is not a limit.
    ws.write(
        "many/1.0.0.toml",
        &format!(
            "stack = \"mini\"\n[source]\nurl = \"{source_url}\"\nsha256 = \"{source_sum}\"\n[build]\nmax_unpacked_entries = 0\n"
        ),
    );
    let o = ws.run(&["show", "many", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1.0.0.toml:6"), "{}", stderr(&o));
}

/// Starts `packager -v build ARGS`, waits until each of `runtimes` runs its `sleep 120` build
/// phase (all at once), sends SIGINT, and checks the exit code and that no container is left.
fn interrupt_builds(args: &[&str], runtimes: &[&str]) {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    for runtime in runtimes {
        fixture(&ws, &server, runtime, "[build]\nbuild = [\"sleep 120\"]\n");
    }
    let child = ws
        .cmd()
        .arg("-v")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // If this test fails half-way, the builds must not outlive it.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &self.0.to_string()])
                .status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let logs = std::fs::read_dir(ws.cache().join("logs"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        let sleeping = logs
            .iter()
            .filter(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains("$ sleep 120")
            })
            .count();
        if sleeping == runtimes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the builds never reached their build phases at once"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each build container, and the test container started while its build runs.
    for runtime in runtimes {
        let running = containers_of(&docker, runtime);
        assert!(
            !running.is_empty() && running.len() <= 2,
            "{runtime}: {running:?}"
        );
    }
    let started = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(60));
    for runtime in runtimes {
        assert!(
            containers_of(&docker, runtime).is_empty(),
            "{runtime}'s containers removed"
        );
    }
}

#[test]
fn sigint_during_a_build_exits_130_and_removes_the_container() {
    interrupt_builds(&["build", "fixture-sigint", "1.0.0"], &["fixture-sigint"]);
}

/// Ctrl-C while `build --all -j2` runs two builds at once: both containers (and the test
/// containers started beside them) are removed, and the exit code is 130.
#[test]
fn sigint_during_two_parallel_builds_exits_130_and_removes_both_containers() {
    interrupt_builds(
        &["build", "--all", "-j2"],
        &["fixture-sigint-a", "fixture-sigint-b"],
    );
}

#[test]
fn an_unchanged_stack_is_not_rebuilt() {
    let ws = workspace();
    let o = ws.run(&["stack", "build", "mini"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Reused"), "{}", stdout(&o));
    let o = ws.run(&["stack", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("mini\tbootstrap bookworm"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("(present)"), "{}", stdout(&o));
}

#[test]
fn docker_unreachable_is_a_clear_error() {
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-nodocker", "");
    let o = ws
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build", "fixture-nodocker", "1.0.0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("DOCKER_HOST"), "{}", stderr(&o));
}

/// The fixture's install adds `bin/useextra`, linked against `libextra.so.1` built in the source
/// tree (so only the build container has it), with an rpath to `$ORIGIN/../lib`, where `install`
/// puts `lib_extra` (a shell command). Its test commands never run `useextra`, so they pass.
fn gate_fixture(ws: &common::Workspace, server: &Server, runtime: &str, lib_extra: &str) {
    fixture(
        ws,
        server,
        runtime,
        &format!(
            r#"[build]
install = [
  "make install",
  "printf 'int extra(void) {{{{ return 4; }}}}\n' > extra.c && cc -shared -fPIC -Wl,-soname,libextra.so.1 -o libextra.so.1 extra.c",
  "printf 'int extra(void);\nint main(void) {{{{ return extra() - 4; }}}}\n' > use.c && cc -o {{prefix}}/bin/useextra use.c -L. -l:libextra.so.1 -Wl,-rpath,'$ORIGIN/../lib'",
  "mkdir -p {{prefix}}/lib/fake && printf '#!/bin/sh\necho not a library\n' > {{prefix}}/lib/fake/libfake.so && chmod +x {{prefix}}/lib/fake/libfake.so",
  "ln -s nowhere.so.1 {{prefix}}/lib/libdangling.so.1",
  "{lib_extra}",
]
"#
        ),
    );
}

#[test]
fn the_linkage_gate_fails_a_binary_whose_library_only_the_build_image_has() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // A script named like the library, where the rpath points: not an ELF file, so no provider.
    gate_fixture(
        &ws,
        &server,
        "fixture-gate",
        "printf '#!/bin/sh\\\\n' > {prefix}/lib/libextra.so.1",
    );
    let store = ws.dir.path().join("store");
    let o = ws.run(&[
        "build",
        "fixture-gate",
        "1.0.0",
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("test of fixture-gate 1.0.0 failed: libraries missing in the run image"),
        "{err}"
    );
    assert!(
        err.contains("/app/fixture-gate/bin/useextra: libextra.so.1"),
        "names the file and the library: {err}"
    );
    assert!(
        err.contains("allow_missing = [\"libextra.so.1\"]"),
        "hint: {err}"
    );
    assert!(
        !err.contains("libfake.so") && !err.contains("libdangling"),
        "a script named *.so and a dangling link are not checked: {err}"
    );
    assert!(!store.exists(), "nothing published");
    assert!(containers_of(&docker, "fixture-gate").is_empty());

    // Allowed by name: the build passes, and the log says what was allowed.
    let recipe = ws.recipes().join("fixture-gate/1.0.0.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(
        &recipe,
        text.replacen(
            "[test]\n",
            "[test]\nallow_missing = [\"libextra.so.1\"]\n",
            1,
        ),
    )
    .unwrap();
    let o = ws.run(&[
        "-v",
        "build",
        "fixture-gate",
        "1.0.0",
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("allowed missing in /app/fixture-gate/bin/useextra: libextra.so.1"),
        "{err}"
    );
    assert!(containers_of(&docker, "fixture-gate").is_empty());
}

/// An artifact that ships its own `ldconfig` and `sed` (each adding a loader-cache entry for
/// the library only the build image has), and a recipe environment that preloads a library of
/// the artifact printing such an entry from every program it is loaded into: the gate asks the
/// run image's own tools in a clean environment, so it still finds the library missing.
#[test]
fn the_linkage_gate_cannot_be_fooled_by_tools_or_preloads_in_the_artifact() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(
        &ws,
        &server,
        "fixture-gate-fool",
        r#"[build]
env = { LD_PRELOAD = "{prefix}/lib/libfool.so" }
install = [
  "make install",
  '''printf 'int extra(void) {{ return 4; }}\n' > extra.c && cc -shared -fPIC -Wl,-soname,libextra.so.1 -o libextra.so.1 extra.c''',
  '''printf 'int extra(void);\nint main(void) {{ return extra() - 4; }}\n' > use.c && cc -o {prefix}/bin/useextra use.c -L. -l:libextra.so.1''',
  '''printf '#!/bin/sh\n/sbin/ldconfig "$@" | /bin/sed "p; s/libc[.]so[.]6 (/libextra.so.1 (/"\n' > {prefix}/bin/ldconfig''',
  '''printf '#!/bin/sh\n/bin/sed "$@" | /bin/sed -n "p; s/^cache libc[.]so[.]6|/cache libextra.so.1|/p"\n' > {prefix}/bin/sed''',
  "chmod 755 {prefix}/bin/ldconfig {prefix}/bin/sed",
  '''printf '#include <stdio.h>\n#if defined(__x86_64__)\n#define FLAGS "libc6,x86-64"\n#elif defined(__aarch64__)\n#define FLAGS "libc6,AArch64"\n#else\n#define FLAGS "libc6"\n#endif\n__attribute__((constructor)) static void fool(void) {{ printf("cache libextra.so.1|" FLAGS "|/lib/libextra.so.1\\n"); fflush(stdout); }}\n' > fool.c && cc -shared -fPIC -o {prefix}/lib/libfool.so fool.c''',
]
"#,
    );
    let o = ws.run(&["-v", "build", "fixture-gate-fool", "1.0.0"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "the gate was fooled: {err}");
    assert!(
        err.contains("test of fixture-gate-fool 1.0.0 failed: libraries missing in the run image"),
        "{err}"
    );
    assert!(
        err.contains("/app/fixture-gate-fool/bin/useextra: libextra.so.1"),
        "{err}"
    );
    assert!(containers_of(&docker, "fixture-gate-fool").is_empty());
}

#[test]
fn the_linkage_gate_passes_a_library_shipped_in_the_artifact() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    gate_fixture(
        &ws,
        &server,
        "fixture-gate-ok",
        "cp libextra.so.1 {prefix}/lib/",
    );
    let o = ws.run(&["-v", "build", "fixture-gate-ok", "1.0.0"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("# linkage: 3 ELF files checked") && err.contains("0 with missing libraries"),
        "bin/fixture-gate-ok, bin/useextra, lib/libextra.so.1: {err}"
    );
    assert!(containers_of(&docker, "fixture-gate-ok").is_empty());

    // `packager test` runs the gate and the commands again on the published artifact.
    let o = ws.run(&["-v", "test", "fixture-gate-ok", "1.0.0"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("# linkage: 3 ELF files checked"), "{err}");
    assert!(
        err.contains("hello, tester"),
        "the test commands ran: {err}"
    );
    assert!(containers_of(&docker, "fixture-gate-ok").is_empty());
    // A version the store does not hold is a usage error.
    let o = ws.run(&["test", "fixture-gate-ok", "1.0.0", "--store", "elsewhere"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("hint: build it first"),
        "{}",
        stderr(&o)
    );
}

/// A patch for the fixture's greet.c: "hello" becomes `word`.
fn greet_patch(word: &str) -> Vec<u8> {
    format!(
        "--- a/greet.c\n+++ b/greet.c\n@@ -1,3 +1,3 @@\n #include <stdio.h>\n #include \"greet.h\"\n-void greet(const char *who) {{ printf(\"hello, %s\\n\", who); }}\n+void greet(const char *who) {{ printf(\"{word}, %s\\n\", who); }}\n"
    )
    .into_bytes()
}

#[test]
fn patch_resources_apply_before_configure_and_a_bad_one_names_its_file() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "fixture-patch", "");
    let good = greet_patch("howdy");
    let good_sum = sha256_hex(&good);
    let good_url = server.route("/patches/howdy.patch", Route::Body(good));
    // A patch made against other sources: its context does not match.
    let bad = String::from_utf8(greet_patch("howdy")).unwrap().replace(
        "-void greet(const char *who) {",
        "-void greet(char *whom) {",
    );
    let bad = bad.into_bytes();
    let bad_sum = sha256_hex(&bad);
    let bad_url = server.route("/patches/stale.patch", Route::Body(bad));
    let recipe = ws.recipes().join("fixture-patch/1.0.0.toml");
    let text = std::fs::read_to_string(&recipe)
        .unwrap()
        .replace("grep -x 'hello, tester'", "grep -x 'howdy, tester'");
    std::fs::write(
        &recipe,
        format!(
            "{text}\n[[resources]]\nurl = \"{good_url}\"\nsha256 = \"{good_sum}\"\ndest = \"patches/howdy.patch\"\npatch = 1\n"
        ),
    )
    .unwrap();
    let o = ws.run(&["show", "fixture-patch", "1.0.0"]);
    assert!(
        stdout(&o).contains("patch -p1 --forward --batch --input=patches/howdy.patch"),
        "show says what configure runs: {}",
        stdout(&o)
    );
    let o = ws.run(&["build", "fixture-patch", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The same patch kept next to the recipe (`path`): copied into the cache as a download is.
    let local = ws.recipes().join("fixture-patch/patches/local.patch");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, greet_patch("howdy")).unwrap();
    std::fs::write(
        &recipe,
        format!(
            "{text}\n[[resources]]\npath = \"patches/local.patch\"\nsha256 = \"{good_sum}\"\ndest = \"patches/howdy.patch\"\npatch = 1\n"
        ),
    )
    .unwrap();
    let o = ws.run(&["build", "fixture-patch", "1.0.0", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::write(
        &recipe,
        format!(
            "{text}\n[[resources]]\nurl = \"{bad_url}\"\nsha256 = \"{bad_sum}\"\ndest = \"patches/stale.patch\"\npatch = 1\n"
        ),
    )
    .unwrap();
    let o = ws.run(&["build", "fixture-patch", "1.0.0", "--force"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("configure of fixture-patch 1.0.0 failed: `patch -p1 --forward --batch --input=patches/stale.patch` exited with code 1"),
        "{err}"
    );
    assert!(containers_of(&docker, "fixture-patch").is_empty());
}

#[test]
fn two_processes_publishing_different_bytes_under_one_name_one_wins() {
    use packager::docker::ExecSpec;
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // Every build of it has other bytes; each holds in its install phase until the test lets
    // it go (or for five minutes at most, should the test die), so both have planned against
    // an empty store before either publishes.
    fixture(
        &ws,
        &server,
        "fixture-race",
        "[build]\ninstall = [\"touch /tmp/held; i=0; while [ ! -e /tmp/go ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done\", \"make install\", \"head -c 64 /dev/urandom > {prefix}/share/random\"]\n",
    );
    let store = ws.dir.path().join("store");
    let spawn = || {
        ws.cmd()
            .args(["build", "fixture-race", "1.0.0", "--store"])
            .arg(&store)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &self.0.to_string()])
                .status();
        }
    }
    let (a, b) = (spawn(), spawn());
    let _guards = (KillOnDrop(a.id()), KillOnDrop(b.id()));
    // The build container of each process, by its owner label (`host:pid`).
    let exec = |id: &str, argv: &[&str]| {
        rt().block_on(docker.exec(id, &ExecSpec::new(argv.to_vec()), &mut |_, _| {}))
            .map(|r| r.exit_code == 0)
            .unwrap_or(false)
    };
    let held = |pid: u32| {
        containers_of(&docker, "fixture-race")
            .into_iter()
            .filter(|c| {
                c.labels.get("packager.role").map(String::as_str) == Some("build")
                    && c.labels
                        .get("packager.owner")
                        .is_some_and(|o| o.ends_with(&format!(":{pid}")))
            })
            .find(|c| exec(&c.id, &["test", "-e", "/tmp/held"]))
            .map(|c| c.id)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let (held_a, held_b) = loop {
        if let (Some(x), Some(y)) = (held(a.id()), held(b.id())) {
            break (x, y);
        }
        assert!(
            Instant::now() < deadline,
            "the two builds never reached their install phases at once"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The first one released publishes; the second, built from the same plan, is refused
    // when it publishes other bytes under the same name.
    assert!(exec(&held_a, &["touch", "/tmp/go"]));
    let a = a.wait_with_output().unwrap();
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert!(exec(&held_b, &["touch", "/tmp/go"]));
    let b = b.wait_with_output().unwrap();
    assert_eq!(b.status.code(), Some(1), "{}", stderr(&b));
    assert!(
        stderr(&b).contains("already exists with different content"),
        "{}",
        stderr(&b)
    );
    let artifact = store.join("mini/fixture-race-1.0.0.tar.gz");
    let sha = sha256_hex(&std::fs::read(&artifact).unwrap());
    assert!(
        stdout(&a).trim_end().ends_with(&format!("sha256:{sha}")),
        "the store holds the first one's bytes: {}",
        stdout(&a)
    );
    assert!(containers_of(&docker, "fixture-race").is_empty());
}

/// A runtime whose recipe says `format = "tar.zst"`: built, tested from its `.tar.zst`, published
/// under that name with an inventory URL to match; a runtime that requires it builds against it
/// (the dependency extracted from the `.tar.zst`), and `test`, `shell`, `verify` and
/// `inventory --rebuild` read it.
#[test]
fn a_tar_zst_runtime_builds_is_tested_published_and_required() {
    use common::engine::fixture_version;
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    ws.write(
        "zs-base/runtime.toml",
        "stack = \"mini\"\nformat = \"tar.zst\"\n[test]\ncommands = [\"zs-base --version | grep -x 'zs-base 1.0.0'\", \"echo tested-$((6 * 7))\"]\n",
    );
    fixture_version(&ws, &server, "zs-base", "1.0.0", "");
    ws.write(
        "zs-app/runtime.toml",
        "stack = \"mini\"\n[test]\ncommands = [\"zs-app --version\", \"zs-base --version | grep -x 'zs-base 1.0.0'\"]\n",
    );
    fixture_version(
        &ws,
        &server,
        "zs-app",
        "1.0.0",
        "[build]\nrequires = [\"zs-base 1.0.0\"]\nconfigure = [\"test -x /app/zs-base/bin/zs-base\", \"./configure --prefix={prefix}\"]\n",
    );
    let store = ws.dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let o = ws.run(&["build", "--all", "--store", store_arg]);
    assert!(o.status.success(), "{}", stderr(&o));

    let base = store.join("mini/zs-base-1.0.0.tar.zst");
    let bytes = std::fs::read(&base).unwrap();
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    assert!(!store.join("mini/zs-base-1.0.0.tar.gz").exists());
    assert_eq!(
        std::fs::read_to_string(store.join("mini/zs-base-1.0.0.tar.zst.sha256")).unwrap(),
        format!("{}  zs-base-1.0.0.tar.zst\n", sha256_hex(&bytes))
    );
    let paths = |artifact: &Path| -> Vec<String> {
        list_artifact(artifact)
            .unwrap()
            .iter()
            .map(|e| e.path.to_string_lossy().trim_end_matches('/').to_string())
            .collect()
    };
    assert!(paths(&base).contains(&"bin/zs-base".to_string()));
    // The dependent is a .tar.gz, without the files of the .tar.zst it was built against.
    let app = paths(&store.join("mini/zs-app-1.0.0.tar.gz"));
    assert!(app.contains(&"bin/zs-app".to_string()), "{app:?}");
    assert!(!app.iter().any(|p| p.contains("zs-base")), "{app:?}");
    // The test step ran on the .tar.zst.
    let logs: Vec<String> = std::fs::read_dir(ws.cache().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("\ntested-42")),
        "the test commands ran: {logs:?}"
    );

    let inventory = |stdout_of_build: &str| {
        let inv: toml::Table = std::fs::read_to_string(store.join("mini/inventory/zs-base.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let entry = inv["artifacts"][0].as_table().unwrap().clone();
        let url = entry["url"].as_str().unwrap().to_string();
        assert!(
            url.ends_with("/mini/zs-base-1.0.0.tar.zst"),
            "{url} ({stdout_of_build})"
        );
        entry
    };
    let entry = inventory("build");
    assert_eq!(entry["metadata"]["format"].as_str(), Some("tar.zst"));
    assert_eq!(entry["metadata"]["zstd-level"].as_str(), Some("19"));

    // Every command that reads artifacts reads it.
    let o = ws.run(&["test", "zs-base", "1.0.0", "--store", store_arg]);
    assert!(o.status.success(), "test: {}", stderr(&o));
    let o = ws.run(&[
        "shell",
        "zs-app",
        "1.0.0",
        "--store",
        store_arg,
        "--",
        "sh",
        "-c",
        "zs-base --version",
    ]);
    assert!(o.status.success(), "shell: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "zs-base 1.0.0");
    let o = ws.run(&["verify", "zs-base", "1.0.0", "--store", store_arg]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("zs-base 1.0.0 is reproducible"));
    std::fs::remove_file(store.join("mini/inventory/zs-base.toml")).unwrap();
    let o = ws.run(&["inventory", "--rebuild", "--store", store_arg]);
    assert!(o.status.success(), "inventory --rebuild: {}", stderr(&o));
    let rebuilt = inventory("rebuild");
    assert_eq!(rebuilt["checksum"], entry["checksum"]);
    for runtime in ["zs-base", "zs-app"] {
        assert!(containers_of(&docker, runtime).is_empty(), "{runtime}");
    }
}
