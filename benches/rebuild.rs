//! The compiler cache: a cold build against a build of the next version of the same runtime,
//! with the cache and without it, in one run, with the sha256 of each artifact with and without
//! the cache side by side (they must be equal: the cache cannot change an artifact).
//! Goal: the next version in ≤ 0.5× the cold time.
//!
//! - The fixture: a generated C project (`PACKAGER_BENCH_FILES` files, default 48) in two
//!   versions that share every source but the one that includes the version.
//! - A real runtime, when `PACKAGER_BENCH_REAL="RUNTIME VERSION"` is set (with
//!   `PACKAGER_BENCH_RECIPES`, the recipes folder, default `recipes/`, and
//!   `PACKAGER_BENCH_MIRROR`, a content-addressed mirror, optional): built with an empty cache
//!   (cold), then again with `--force` and the cache it filled (warm), then rebuilt without the
//!   cache by `packager verify` against the warm build (verify never uses the cache, and its
//!   rebuild varies host name, umask, jobs and time zone): three builds that give the ratio, the
//!   sha256 with and without the cache, and the runtime's reproducibility at once. The three
//!   artifacts are kept in `target/tmp/rebuild-bench/{cold,warm,verify}/` and the differing
//!   entries printed when they differ (then the bench fails, at its end). Python 3.11.2, with its
//!   pinned PGO profile, takes about 6 minutes a build on two cores (about 20 with a training run).
//!
//! Run: `cargo bench --bench rebuild` (needs Docker and the `mini` test stack, which it builds
//! from Debian packages when absent). Under `cargo test --all-targets` (no `--bench`) it builds
//! a tiny project once each way and checks the sha256s match, no timing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fixture::tarball;
use common::{Route, Server, Workspace, sha256_hex};

/// A C project of `files` sources, each with `functions` functions that keep `-O2` busy; only
/// `main.c` includes `config.h` (the version), so two versions share every other object.
fn project(
    name: &str,
    version: &str,
    files: usize,
    functions: usize,
) -> Vec<(String, u32, Vec<u8>)> {
    let configure = format!(
        "#!/bin/sh\nset -e\nprefix=/usr/local\nfor arg in \"$@\"; do case \"$arg\" in --prefix=*) prefix=\"${{arg#--prefix=}}\" ;; esac; done\necho \"PREFIX = $prefix\" > config.mk\nprintf '#define VERSION \"%s\"\\n' \"{version}\" > config.h\n"
    );
    let objects: Vec<String> = (0..files).map(|i| format!("unit{i}.o")).collect();
    let makefile = format!(
        "include config.mk\nCC ?= cc\nOBJS = main.o {objs}\n\nall: {name}\n\n{name}: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) -O2 -g -c -o $@ $<\n\ninstall: all\n\tmkdir -p $(PREFIX)/bin\n\tcp {name} $(PREFIX)/bin/{name}\n\n.PHONY: all install\n",
        objs = objects.join(" ")
    );
    let mut calls = String::new();
    let mut decls = String::new();
    let mut files_out = vec![
        ("configure".to_string(), 0o755, configure.into_bytes()),
        ("Makefile".to_string(), 0o644, makefile.into_bytes()),
    ];
    for i in 0..files {
        let mut c = String::from("#include <stdint.h>\n");
        for f in 0..functions {
            // Unrolled, inlined arithmetic: real optimisation work for the compiler.
            c.push_str(&format!(
                "static uint64_t mix{i}_{f}(uint64_t x) {{\n  for (int k = 0; k < 8; k++) {{\n    x ^= x << {a}; x ^= x >> {b}; x *= 0x9E3779B97F4A7C15ull + {f};\n    switch ((x >> 3) & 7) {{ case 0: x += {i}; break; case 1: x -= {f}; break; case 2: x ^= 0x{f:x}{i:x}; break; case 3: x = (x << 7) | (x >> 57); break; default: x += k; }}\n  }}\n  return x;\n}}\n",
                a = 1 + f % 13,
                b = 1 + (f + i) % 17
            ));
        }
        c.push_str(&format!("uint64_t unit{i}(uint64_t x) {{\n"));
        for f in 0..functions {
            c.push_str(&format!("  x = mix{i}_{f}(x);\n"));
        }
        c.push_str("  return x;\n}\n");
        decls.push_str(&format!("uint64_t unit{i}(uint64_t);\n"));
        calls.push_str(&format!("  x = unit{i}(x);\n"));
        files_out.push((format!("unit{i}.c"), 0o644, c.into_bytes()));
    }
    files_out.push((
        "main.c".to_string(),
        0o644,
        format!(
            "#include <stdio.h>\n#include <stdint.h>\n#include \"config.h\"\n{decls}int main(void) {{\n  uint64_t x = 1;\n{calls}  printf(\"{name} %s %llu\\n\", VERSION, (unsigned long long)x);\n  return 0;\n}}\n"
        )
        .into_bytes(),
    ));
    files_out
}

fn run(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let o = cmd.output().expect("spawn packager");
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    started.elapsed()
}

/// The sha256 of a published artifact, from its sidecar.
fn sha256_of(store: &Path, stack: &str, artifact: &str) -> String {
    common::sidecar_sha256(&store.join(stack).join(format!("{artifact}.sha256")))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

struct Pair {
    what: String,
    cold: Duration,
    next: Duration,
    with: Vec<(String, String)>,
    without: Vec<(String, String)>,
}

fn fixture(full: bool) -> (Pair, Pair) {
    let files: usize = std::env::var("PACKAGER_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 48 } else { 2 });
    let functions = if full { 60 } else { 2 };
    let server = Server::start();
    let ws = Workspace::new();
    ws.write_mini_manifest();
    ws.write(
        "rebuild/runtime.toml",
        "stack = \"mini\"\n[test]\ncommands = [\"rebuild | grep -q '^rebuild '\"]\n",
    );
    for v in ["1.0.0", "1.0.1"] {
        let top = format!("rebuild-{v}");
        let tgz = tarball(&top, &project("rebuild", v, files, functions));
        let sum = sha256_hex(&tgz);
        let url = server.route(&format!("/{top}.tar.gz"), Route::Body(tgz));
        ws.write(
            &format!("rebuild/{v}.toml"),
            &format!("[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n"),
        );
    }
    // Not timed: the stack image and the downloads.
    run(ws.cmd().args(["stack", "build", "mini"]));
    run(ws.cmd().args(["fetch", "rebuild"]));

    let mut pairs = Vec::new();
    for cached in [true, false] {
        let store = ws.dir.path().join(format!("store-{cached}"));
        let _ = std::fs::remove_dir_all(ws.cache().join("ccache"));
        let mut times = Vec::new();
        let mut sums = Vec::new();
        for v in ["1.0.0", "1.0.1"] {
            let mut cmd = ws.cmd();
            cmd.args([
                "-q",
                "build",
                "rebuild",
                v,
                "--store",
                store.to_str().unwrap(),
            ]);
            if !cached {
                cmd.arg("--no-compiler-cache");
            }
            times.push(run(&mut cmd));
            sums.push((
                v.to_string(),
                sha256_of(&store, "mini", &format!("rebuild-{v}.tar.gz")),
            ));
        }
        pairs.push((times, sums));
    }
    let (with_t, with_s) = pairs.remove(0);
    let (without_t, without_s) = pairs.remove(0);
    let what = format!("fixture, {files} C files x {functions} functions");
    (
        Pair {
            what: format!("{what}, with the cache"),
            cold: with_t[0],
            next: with_t[1],
            with: with_s.clone(),
            without: without_s.clone(),
        },
        Pair {
            what: format!("{what}, without the cache"),
            cold: without_t[0],
            next: without_t[1],
            with: with_s,
            without: without_s,
        },
    )
}

/// `PACKAGER_BENCH_REAL="RUNTIME VERSION"`: cold with the cache, warm with it, then `verify`'s
/// rebuild without it.
fn real(spec: &str) -> Pair {
    let (runtime, version) = spec
        .split_once(' ')
        .expect("PACKAGER_BENCH_REAL is \"RUNTIME VERSION\"");
    let recipes = std::env::var("PACKAGER_BENCH_RECIPES").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("recipes")
            .to_string_lossy()
            .into_owned()
    });
    let ws = Workspace::new();
    let store = ws.dir.path().join("store");
    let cmd = |extra: &[&str]| {
        let mut c = ws.cmd();
        c.env("PACKAGER_RECIPES", &recipes);
        if let Ok(m) = std::env::var("PACKAGER_BENCH_MIRROR") {
            c.args(["--mirror", &m]);
        }
        c.args(extra);
        c
    };
    // Not timed: the stack image and the downloads.
    let show = cmd(&["show", runtime, version]).output().expect("spawn");
    let shown = String::from_utf8_lossy(&show.stdout);
    let stack = shown
        .lines()
        .find_map(|l| l.strip_prefix("stack = "))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "bookworm".into());
    let artifact = shown
        .lines()
        .find_map(|l| l.strip_prefix("artifact = "))
        .map(|s| s.trim_matches('"').to_string())
        .expect("the recipe names its artifact");
    run(&mut cmd(&["stack", "build", &stack]));
    run(&mut cmd(&["fetch", runtime, version]));
    let build = |extra: &[&str]| {
        let mut args = vec![
            "-q",
            "build",
            runtime,
            version,
            "--force",
            "--store",
            store.to_str().unwrap(),
        ];
        args.extend(extra);
        run(&mut cmd(&args))
    };
    let _ = std::fs::remove_dir_all(ws.cache().join("ccache"));
    // Both cached builds' artifacts outlive the bench, for `diffoscope` when they differ.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rebuild-bench");
    let keep = |name: &str| {
        let dir = kept.join(name);
        std::fs::create_dir_all(&dir).expect("the folder for kept artifacts");
        let to = dir.join(&artifact);
        std::fs::copy(store.join(&stack).join(&artifact), &to).expect("keep the artifact");
        to
    };
    let cold = build(&[]);
    let cold_sum = sha256_of(&store, &stack, &artifact);
    let cold_kept = keep("cold");
    eprintln!(
        "{runtime} {version}: cold build with the cache {:.0}s",
        secs(cold)
    );
    let next = build(&[]);
    let with = sha256_of(&store, &stack, &artifact);
    let warm_kept = keep("warm");
    eprintln!(
        "{runtime} {version}: warm build with the cache {:.0}s",
        secs(next)
    );
    if cold_sum != with {
        // Not the end: verify's rebuild without the cache tells the cache's doing from a build
        // that differs anyway. The assertion in `main` fails the bench afterwards.
        println!(
            "{runtime} {version}: the cold and the warm build DIFFER ({} and {}):",
            cold_kept.display(),
            warm_kept.display()
        );
        let c = packager::reproduce::compare(&cold_kept, &warm_kept).expect("compare");
        for e in c.changed.iter().take(20) {
            println!("  {}  {}", e.path.display(), e.what.join(", "));
        }
        if c.changed.len() > 20 {
            println!("  … {} entries differ in all", c.changed.len());
        }
    }
    // verify's rebuild is made without the compiler cache; exit 1 means it differs, which the
    // side-by-side sums below report.
    let started = Instant::now();
    let out = cmd(&[
        "verify",
        runtime,
        version,
        "--json",
        "--keep-artifacts",
        kept.join("verify").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ])
    .output()
    .expect("spawn packager verify");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "packager verify failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify's JSON");
    let without = v["comparison"]["right_sha256"]
        .as_str()
        .expect("verify's JSON has the rebuild's sha256")
        .to_string();
    if v["comparison"]["identical"] != true {
        println!(
            "{runtime} {version}: verify's rebuild without the cache differs from the warm build (both in {}):",
            kept.join("verify").display()
        );
        for e in v["comparison"]["changed"]
            .as_array()
            .into_iter()
            .flatten()
            .take(20)
        {
            println!("  {}  {}", e["path"], e["what"]);
        }
    }
    eprintln!(
        "{runtime} {version}: verify's rebuild without the cache {:.0}s, varied: {}",
        started.elapsed().as_secs_f64(),
        v["variations"]
    );
    Pair {
        what: format!("{runtime} {version} on {stack}, rebuilt with --force"),
        cold,
        next,
        with: vec![
            (format!("{version} cold"), cold_sum),
            (format!("{version} warm"), with),
        ],
        without: vec![
            (format!("{version} cold"), without.clone()),
            (format!("{version} warm"), without),
        ],
    }
}

fn report(p: &Pair, goal: Option<f64>) {
    let ratio = secs(p.next) / secs(p.cold);
    let verdict = match goal {
        Some(g) if ratio <= g => format!("  (goal <= {g}: met)"),
        Some(g) => format!("  (goal <= {g}: NOT met)"),
        None => String::new(),
    };
    println!(
        "{}: cold {:.1}s, next {:.1}s, ratio {ratio:.2}{verdict}",
        p.what,
        secs(p.cold),
        secs(p.next)
    );
}

fn sums(p: &Pair) -> bool {
    let mut same = true;
    for ((v, with), (_, without)) in p.with.iter().zip(&p.without) {
        let eq = with == without;
        same &= eq;
        println!(
            "  {v}: with the cache sha256:{with}  without sha256:{without}  {}",
            if eq { "identical" } else { "DIFFERENT" }
        );
    }
    same
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (with, without) = fixture(full);
    if full {
        report(&with, Some(0.5));
        report(&without, None);
    }
    println!("sha256 of each artifact, with and without the compiler cache:");
    let mut same = sums(&with);
    if let Ok(spec) = std::env::var("PACKAGER_BENCH_REAL") {
        let real = real(&spec);
        report(&real, Some(0.5));
        same &= sums(&real);
    }
    assert!(same, "the compiler cache changed an artifact");
}
