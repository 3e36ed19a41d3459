//! The compiler cache (ccache) on the real Docker engine, with fixture runtimes served from
//! loopback and the `mini` test stack (which installs ccache): artifacts bit-identical with and
//! without it, hits across versions, off for `verify` and when a recipe says so, the only
//! writable mount, and a stack without ccache. These tests need Docker: without it they fail,
//! loudly.

mod common;

use std::path::PathBuf;

use common::engine::{containers_of, docker, fixture_version, workspace};
use common::fixture::{c_project, tarball};
use common::{Route, Server, Workspace, sha256_hex, stderr, stdout};

/// A fixture runtime on the mini stack (`runtime.toml`, then version files).
fn runtime(ws: &Workspace, server: &Server, name: &str, versions: &[&str], build: &str) {
    ws.write(
        &format!("{name}/runtime.toml"),
        &format!("stack = \"mini\"\n[build]\n{build}\n[test]\ncommands = [\"{name} --version\"]\n"),
    );
    for v in versions {
        fixture_version(ws, server, name, v, "");
    }
}

fn store(ws: &Workspace) -> String {
    ws.dir.path().join("store").to_str().unwrap().to_string()
}

/// `packager -v build ARGS… --store STORE`, asserted to succeed; returns stderr.
fn build(ws: &Workspace, args: &[&str]) -> String {
    let store = store(ws);
    let mut all = vec!["-v", "build"];
    all.extend(args);
    all.extend(["--store", &store]);
    let o = ws.run(&all);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    stderr(&o)
}

/// The sha256 the store holds for `name`'s artifact `version`.
fn published_sha256(ws: &Workspace, name: &str, version: &str) -> String {
    common::sidecar_sha256(
        &PathBuf::from(store(ws)).join(format!("mini/{name}-{version}.tar.gz.sha256")),
    )
}

/// `(hits, misses)` of each `# compiler cache: H hits, M misses` line in `log`.
fn cache_lines(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("# compiler cache: ").nth(1)?;
            let (hits, rest) = rest.split_once(" hits, ")?;
            let misses = rest.strip_suffix(" misses")?;
            Some((hits.parse().ok()?, misses.parse().ok()?))
        })
        .collect()
}

fn ccache_dir(ws: &Workspace, name: &str) -> PathBuf {
    ws.cache().join("ccache/mini").join(host_arch()).join(name)
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

#[test]
fn an_artifact_from_cache_hits_is_bit_identical_to_one_compiled_without_the_cache() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime(&ws, &server, "cc-same", &["1.0.0"], "");

    // Cold: every compilation a miss, stored.
    let log = build(&ws, &["cc-same", "1.0.0"]);
    assert_eq!(cache_lines(&log), [(0, 2)], "{log}");
    // Stored on the host, in the runtime's folder.
    assert!(walk_files(&ccache_dir(&ws, "cc-same")) > 0);
    // Warm: every compilation a hit, the objects from the cache.
    let log = build(&ws, &["cc-same", "1.0.0", "--force"]);
    assert_eq!(cache_lines(&log), [(2, 0)], "{log}");
    let from_hits = published_sha256(&ws, "cc-same", "1.0.0");
    // Without the cache: compiled from scratch.
    let log = build(&ws, &["cc-same", "1.0.0", "--force", "--no-compiler-cache"]);
    assert!(cache_lines(&log).is_empty(), "{log}");
    let compiled = published_sha256(&ws, "cc-same", "1.0.0");
    assert_eq!(
        from_hits, compiled,
        "the compiler cache changed the artifact"
    );
    assert!(containers_of(&docker, "cc-same").is_empty());
}

fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_files(&p) } else { 1 }
        })
        .sum()
}

#[test]
fn the_next_versions_hit_what_the_first_compiled_even_two_at_once() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime(&ws, &server, "cc-next", &["1.0.0", "1.0.1", "1.0.2"], "");
    let log = build(&ws, &["cc-next", "1.0.0"]);
    assert_eq!(cache_lines(&log), [(0, 2)], "{log}");
    // Two versions at once share the folder (ccache's own locking): each finds greet.c, which
    // does not change between versions, compiled by 1.0.0; main.c includes the version.
    let log = build(&ws, &["cc-next", "1.0.1", "cc-next", "1.0.2", "-j", "2"]);
    let lines = cache_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    for (hits, _) in &lines {
        assert!(*hits >= 1, "no hit from the first version's objects: {log}");
    }
    assert!(containers_of(&docker, "cc-next").is_empty());
}

#[test]
fn verify_rebuilds_without_the_compiler_cache() {
    let server = Server::start();
    let ws = workspace();
    runtime(&ws, &server, "cc-verify", &["1.0.0"], "");
    build(&ws, &["cc-verify", "1.0.0"]);
    let dir = ccache_dir(&ws, "cc-verify");
    assert!(dir.is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
    let store = store(&ws);
    let o = ws.run(&["-v", "verify", "cc-verify", "1.0.0", "--store", &store]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        !dir.exists(),
        "verify made the compiler cache folder: it used the cache"
    );
    assert!(cache_lines(&stderr(&o)).is_empty(), "{}", stderr(&o));
}

#[test]
fn a_recipe_can_turn_the_compiler_cache_off() {
    let server = Server::start();
    let ws = workspace();
    runtime(&ws, &server, "cc-off", &["1.0.0"], "compiler_cache = false");
    let log = build(&ws, &["cc-off", "1.0.0"]);
    assert!(cache_lines(&log).is_empty(), "{log}");
    assert!(!ccache_dir(&ws, "cc-off").exists());
    let logs = std::fs::read_dir(ws.cache().join("logs")).unwrap();
    let text: String = logs
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cc-off-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        text.contains("# compiler cache: off (`[build] compiler_cache = false`)"),
        "{text}"
    );
}

#[test]
fn the_sources_stay_read_only_beside_the_read_write_compiler_cache() {
    let server = Server::start();
    let ws = workspace();
    // Mount options, per mount point, as the build sees them; then writes to each.
    let configure = [
        "grep -Eq ' /var/cache/packager/sources ro(,| )' /proc/self/mountinfo",
        "grep -Eq ' /var/cache/packager/ccache rw(,| )' /proc/self/mountinfo",
        "if touch /var/cache/packager/sources/x 2>/dev/null; then echo 'sources are writable'; exit 1; fi",
        "touch $CCACHE_DIR/written-by-the-build && rm $CCACHE_DIR/written-by-the-build",
        "test \\\"$(command -v cc)\\\" = /run/packager-ccache/cc",
        "./configure --prefix={prefix}",
    ]
    .map(|c| format!("\"{c}\""))
    .join(", ");
    runtime(
        &ws,
        &server,
        "cc-mounts",
        &["1.0.0"],
        &format!("configure = [{configure}]"),
    );
    let log = build(&ws, &["cc-mounts", "1.0.0"]);
    assert_eq!(cache_lines(&log), [(0, 2)], "{log}");
}

#[test]
fn a_stack_without_ccache_builds_without_the_cache_and_says_so_once() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // The mini image without ccache: a Dockerfile stack on top of it.
    let o = ws.run(&["stack", "list"]);
    let base = stdout(&o)
        .split_whitespace()
        .find(|w| w.starts_with("packager-stack-mini:build-"))
        .unwrap_or_else(|| panic!("no mini image: {}", stdout(&o)))
        .to_string();
    ws.write(
        "stacks/noccache/stack.toml",
        "dockerfile = \"Dockerfile\"\n",
    );
    ws.write(
        "stacks/noccache/Dockerfile",
        &format!("FROM {base}\nRUN rm /usr/bin/ccache && rm -r /usr/lib/ccache\n"),
    );
    ws.write(
        "cc-none/runtime.toml",
        "stack = \"noccache\"\n[test]\ncommands = [\"cc-none --version\"]\n",
    );
    fixture_version(&ws, &server, "cc-none", "1.0.0", "");
    fixture_version(&ws, &server, "cc-none", "1.0.1", "");
    let store = store(&ws);
    let o = ws.run(&["build", "cc-none", "--store", &store, "-j", "1"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let warning = "the build image of stack noccache has no ccache";
    assert_eq!(err.matches(warning).count(), 1, "one warning: {err}");
    assert!(cache_lines(&err).is_empty(), "{err}");
    assert!(containers_of(&docker, "cc-none").is_empty());
}

#[test]
fn a_cache_folder_the_build_user_cannot_write_is_left_out_with_a_hint() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let ws = workspace();
    // Left out whole: no host folder mounted in the container the build runs in.
    runtime(
        &ws,
        &server,
        "cc-ro",
        &["1.0.0"],
        "configure = [\"! grep -q ' /var/cache/packager/ccache ' /proc/self/mountinfo\", \"./configure --prefix={prefix}\"]",
    );
    let dir = ccache_dir(&ws, "cc-ro");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let log = build(&ws, &["cc-ro", "1.0.0"]);
    assert!(log.contains("is not writable by the build user"), "{log}");
    assert!(log.contains("--no-compiler-cache"), "{log}");
    assert!(cache_lines(&log).is_empty(), "{log}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_shell_uses_the_compiler_cache_unless_told_not_to() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    runtime(&ws, &server, "cc-shell", &["1.0.0"], "");
    let mounted = "grep -q ' /var/cache/packager/ccache ' /proc/self/mountinfo";
    let o = ws.run(&[
        "shell",
        "cc-shell",
        "1.0.0",
        "--no-compiler-cache",
        "--",
        "sh",
        "-c",
        &format!("! {mounted} && test \"$(command -v cc)\" = /usr/bin/cc"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        !ccache_dir(&ws, "cc-shell").exists(),
        "--no-compiler-cache made the compiler cache folder"
    );
    let o = ws.run(&[
        "shell",
        "cc-shell",
        "1.0.0",
        "--",
        "sh",
        "-c",
        &format!("{mounted} && test \"$(command -v cc)\" = /run/packager-ccache/cc"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(ccache_dir(&ws, "cc-shell").is_dir());
    assert!(containers_of(&docker, "cc-shell").is_empty());
}

/// Every entry under `dir` (relative path, file type, mode with the setuid/setgid/sticky bits),
/// links not followed.
fn entries(dir: &std::path::Path) -> Vec<(PathBuf, std::fs::FileType, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            out.push((rel, meta.file_type(), meta.permissions().mode() & 0o7777));
        }
    }
    out
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn nothing_a_build_or_a_shell_leaves_in_the_compiler_cache_is_privileged_on_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    // The build user plants in configure, root in install (a root phase keeps CHOWN,
    // DAC_OVERRIDE and FOWNER): setuid and setgid copies of a shell, fifos, a setgid folder,
    // a link out, and the folder itself opened to everyone. Each plant is checked in place.
    let plant = |who: &str| {
        [
            format!(
                "cp /bin/sh $CCACHE_DIR/{who}-sh && chmod 6755 $CCACHE_DIR/{who}-sh && test -u $CCACHE_DIR/{who}-sh && test -g $CCACHE_DIR/{who}-sh"
            ),
            format!(
                "mkdir -p $CCACHE_DIR/{who}-dir && chmod 2777 $CCACHE_DIR/{who}-dir && mkfifo $CCACHE_DIR/{who}-dir/fifo && test -p $CCACHE_DIR/{who}-dir/fifo"
            ),
            format!("ln -s /etc/shadow $CCACHE_DIR/{who}-link"),
        ]
    };
    let toml = |who: &str| plant(who).map(|c| format!("\"{c}\"")).join(", ");
    runtime(
        &ws,
        &server,
        "cc-suid",
        &["1.0.0"],
        &format!(
            "root = [\"install\"]\nconfigure = [{}, \"chmod 0777 $CCACHE_DIR\", \"./configure --prefix={{prefix}}\"]\ninstall = [{}, \"test $(id -u) = 0\", \"make install\"]",
            toml("user"),
            toml("root")
        ),
    );
    // The folders as an older packager made them: 0755.
    let dir = ccache_dir(&ws, "cc-suid");
    std::fs::create_dir_all(&dir).unwrap();
    let levels = [
        ws.cache().join("ccache"),
        ws.cache().join("ccache/mini"),
        dir.parent().unwrap().to_path_buf(),
        dir.clone(),
    ];
    for level in &levels {
        std::fs::set_permissions(level, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let log = build(&ws, &["cc-suid", "1.0.0"]);
    assert_eq!(cache_lines(&log), [(0, 2)], "{log}");
    let check = |log: &str, prefixes: &[&str]| {
        for level in &levels {
            assert_eq!(mode(level), 0o700, "{}\n{log}", level.display());
        }
        let found = entries(&dir);
        let mut stored = 0;
        for (path, kind, mode) in &found {
            assert!(
                kind.is_file() || kind.is_dir(),
                "{path:?} is {kind:?}\n{log}"
            );
            assert_eq!(mode & 0o7000, 0, "{path:?} mode {mode:o}\n{log}");
            let planted = ["user", "root", "shell"].iter().any(|p| {
                path.starts_with(format!("{p}-sh")) || path.starts_with(format!("{p}-dir"))
            });
            if !planted {
                // What ccache stored: its owner's alone (CCACHE_UMASK=077).
                assert_eq!(mode & 0o077, 0, "{path:?} mode {mode:o}\n{log}");
                stored += kind.is_file() as usize;
            }
        }
        assert!(stored > 0, "ccache stored nothing: {found:?}");
        for p in prefixes {
            assert!(dir.join(format!("{p}-sh")).is_file(), "{log}");
            assert!(!dir.join(format!("{p}-dir/fifo")).exists(), "{log}");
            assert!(
                std::fs::symlink_metadata(dir.join(format!("{p}-link"))).is_err(),
                "{log}"
            );
            // Reported, with what was done.
            assert!(
                log.contains(&format!("cleared the setuid and setgid bit of {p}-sh")),
                "{log}"
            );
            assert!(log.contains(&format!("removed fifo {p}-dir/fifo")), "{log}");
        }
    };
    check(&log, &["user", "root"]);

    // A shell's leftovers too.
    let o = ws.run(&[
        "shell",
        "cc-suid",
        "1.0.0",
        "--",
        "sh",
        "-c",
        &plant("shell").join(" && "),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    check(&stderr(&o), &["shell"]);
    assert!(containers_of(&docker, "cc-suid").is_empty());
}

#[test]
fn a_poisoned_entry_reaches_the_next_version_and_verify_reports_it() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    ws.write(
        "cc-poison/runtime.toml",
        "stack = \"mini\"\n[test]\ncommands = [\"cc-poison --version\"]\n",
    );
    // 1.0.0's build compiles greet.c (the same file in every version) through ccache with a
    // CCACHE_PREFIX wrapper that compiles another greet.c: ccache hashes neither the prefix
    // nor what it does, so the evil object is stored under the honest source's key.
    let mut files = c_project("cc-poison", "1.0.0");
    files.push((
        ".evil/greet.c".into(),
        0o644,
        b"#include <stdio.h>\nvoid greet(const char *who) { printf(\"pwned, %s\\n\", who); }\n"
            .to_vec(),
    ));
    files.push((
        ".evil/wrap".into(),
        0o755,
        b"#!/bin/sh\nfor a do\n  shift\n  case $a in greet.c|*/greet.c) a=/build/src/.evil/greet.c ;; esac\n  set -- \"$@\" \"$a\"\ndone\nexec \"$@\"\n".to_vec(),
    ));
    let tgz = tarball("cc-poison-1.0.0", &files);
    let sum = sha256_hex(&tgz);
    let url = server.route("/cc-poison-1.0.0.tar.gz", Route::Body(tgz));
    ws.write(
        "cc-poison/1.0.0.toml",
        &format!("[build]\nbuild = [\"CCACHE_PREFIX=/build/src/.evil/wrap make\"]\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n"),
    );
    fixture_version(&ws, &server, "cc-poison", "1.0.1", "");
    build(&ws, &["cc-poison", "1.0.0"]);

    // 1.0.1's honest greet.c hits the evil object; its artifact links it in.
    let log = build(&ws, &["cc-poison", "1.0.1"]);
    assert_eq!(cache_lines(&log), [(1, 1)], "{log}");
    let artifact = PathBuf::from(store(&ws)).join("mini/cc-poison-1.0.1.tar.gz");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&artifact).unwrap()),
        &mut tar,
    )
    .unwrap();
    assert!(
        tar.windows(6).any(|w| w == b"pwned,"),
        "the poisoned object is not in {}",
        artifact.display()
    );

    // verify rebuilds 1.0.1 without the cache: the artifacts differ, exit 1.
    let store = store(&ws);
    let o = ws.run(&["verify", "cc-poison", "1.0.1", "--store", &store]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}\n{}", stderr(&o));
    assert!(
        text.contains("cc-poison 1.0.1 is not reproducible"),
        "{text}"
    );
    assert!(text.contains("differs: bin/cc-poison (content)"), "{text}");
    assert!(containers_of(&docker, "cc-poison").is_empty());
}
