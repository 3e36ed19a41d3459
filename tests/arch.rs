//! Stacks per architecture: an arm64 `mini` stack bootstrapped with `mmdebstrap --arch` is its
//! own image, recorded by the engine as arm64 (which a plain `docker import` would not do), and
//! runs aarch64 code here under emulation (qemu-user-static with a binfmt handler with the `F`
//! flag; `scripts/test` sets that up and these tests fail without it); amd64 stacks keep their
//! hashes; a stack's `arches` refuses the others.

use std::path::Path;

use packager::arch::Arch;
use packager::docker::{ContainerSpec, Docker, ExecSpec};
use packager::stack::{self, Role, StackError};

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::engine::{containers_of, docker, fixture, workspace};
use common::{Server, stderr, stdout};

const TEST_LABEL: &str = "packager.test";

fn recipes() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
}

#[test]
fn each_arch_has_its_own_hash_and_tag_and_amd64_keeps_today_s() {
    let native = stack::load(recipes(), "mini").unwrap();
    let amd64 = native.for_arch(Arch::Amd64).unwrap();
    let arm64 = native.for_arch(Arch::Arm64).unwrap();
    if Arch::host() == Arch::Amd64 {
        assert_eq!(amd64.hash, native.hash);
        assert_eq!(
            amd64.image_reference(Role::Build),
            native.image_reference(Role::Build)
        );
    }
    assert_ne!(arm64.hash, amd64.hash);
    assert!(
        arm64
            .image_reference(Role::Build)
            .starts_with("packager-stack-mini:build-arm64-"),
        "{}",
        arm64.image_reference(Role::Build)
    );
    // Going back gives amd64's again.
    assert_eq!(arm64.for_arch(Arch::Amd64).unwrap().hash, amd64.hash);
}

#[test]
fn a_stack_s_arches_refuse_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let stack_dir = dir.path().join("stacks/only-amd");
    std::fs::create_dir_all(&stack_dir).unwrap();
    std::fs::write(
        stack_dir.join("stack.toml"),
        "arches = [\"amd64\"]\n[bootstrap]\nsuite = \"bookworm\"\n",
    )
    .unwrap();
    let s = stack::load(dir.path(), "only-amd").unwrap();
    assert!(s.for_arch(Arch::Amd64).is_ok());
    let err = s.for_arch(Arch::Arm64).unwrap_err();
    assert!(
        matches!(
            err,
            StackError::UnsupportedArch {
                arch: Arch::Arm64,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_usage());
    assert!(err.to_string().contains("is not made for arm64"), "{err}");
    assert!(err.hint().unwrap().contains("arches"));
}

#[tokio::test]
async fn an_arm64_stack_is_bootstrapped_recorded_as_arm64_and_runs_aarch64_code() {
    const TEST: &str = "arm64-stack";
    let docker = Docker::connect()
        .await
        .unwrap_or_else(|e| panic!("these tests need a Docker engine: {e}"));
    let arm64 = stack::load(recipes(), "mini")
        .unwrap()
        .for_arch(Arch::Arm64)
        .unwrap();
    let mut lines = Vec::new();
    let ensured = arm64
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "arm64 mini stack: {e}\nhint: {:?}\n{}",
                e.hint(),
                lines.join("\n")
            )
        });
    let info = docker
        .inspect_image(&ensured.reference)
        .await
        .unwrap()
        .expect("the image exists");
    assert_eq!(info.arch.as_deref(), Some("arm64"), "the engine's record");
    assert_eq!(info.labels["packager.stack.arch"], "arm64");

    let mut spec = ContainerSpec::new(ensured.reference.clone());
    spec.labels.insert(TEST_LABEL.to_owned(), TEST.to_owned());
    let container = docker.create_container(&spec).await.expect("create");
    container.start().await.expect("start");
    let mut out = String::new();
    let result = container
        .exec(
            &ExecSpec::shell(
                "uname -m; gcc -dumpmachine; printf 'int main(void){return 0;}' > /tmp/a.c && gcc -o /tmp/a /tmp/a.c && /tmp/a && od -An -tx1 -j18 -N2 /tmp/a",
            ),
            &mut |_, line: &str| {
                out.push_str(line);
                out.push('\n');
            },
        )
        .await
        .expect("exec runs");
    container.remove().await.expect("remove");
    assert_eq!(result.exit_code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "aarch64", "{out}");
    assert_eq!(lines[1], "aarch64-linux-gnu", "{out}");
    // e_machine 0xb7 (EM_AARCH64), little-endian.
    assert_eq!(lines[2], "b7 00", "{out}");

    // A Dockerfile stack for arm64 is built for that platform: FROM the arm64 image, its RUN
    // steps run aarch64 code, and the engine records the result as arm64.
    let dir = tempfile::tempdir().unwrap();
    let stack_dir = dir.path().join("stacks/dfarm");
    std::fs::create_dir_all(&stack_dir).unwrap();
    std::fs::write(
        stack_dir.join("stack.toml"),
        "dockerfile = \"Dockerfile\"\n",
    )
    .unwrap();
    std::fs::write(
        stack_dir.join("Dockerfile"),
        format!(
            "FROM {}\nRUN uname -m > /built-on && echo \"built on $(cat /built-on)\"\n",
            ensured.reference
        ),
    )
    .unwrap();
    let dfarm = stack::load(dir.path(), "dfarm")
        .unwrap()
        .for_arch(Arch::Arm64)
        .unwrap();
    let mut lines = Vec::new();
    let built = dfarm
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("arm64 Dockerfile stack: {e}\n{}", lines.join("\n")));
    assert!(lines.iter().any(|l| l == "built on aarch64"), "{lines:?}");
    let info = docker
        .inspect_image(&built.reference)
        .await
        .unwrap()
        .expect("the image exists");
    assert_eq!(info.arch.as_deref(), Some("arm64"), "the engine's record");
    assert!(built.reference.contains("arm64"), "{}", built.reference);
    docker.remove_image(&built.reference, true).await.unwrap();

    // The amd64 image is another one: neither is ever used for the other.
    let amd64 = stack::load(recipes(), "mini")
        .unwrap()
        .for_arch(Arch::Amd64)
        .unwrap();
    assert_ne!(amd64.image_reference(Role::Build), ensured.reference);
    let left = docker
        .list_containers(&[(TEST_LABEL, Some(TEST))])
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Fields `a` and `b` of each object in the JSON array `list`.
fn pairs<'v>(list: &'v serde_json::Value, a: &str, b: &str) -> Vec<(&'v str, &'v str)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|j| (j[a].as_str().unwrap(), j[b].as_str().unwrap()))
        .collect()
}

/// `e_machine` of the ELF file `path` inside `artifact`.
fn machine(artifact: &Path, path: &str) -> u16 {
    let wanted = BTreeSet::from([PathBuf::from(path)]);
    let files = packager::package::read_artifact_files(artifact, &wanted, 1 << 24).unwrap();
    let bytes = &files[&PathBuf::from(path)];
    assert_eq!(&bytes[..4], b"\x7fELF", "{path} is an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[test]
fn one_recipe_builds_for_both_arches_into_one_inventory() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "ax", "");
    let store = ws.dir.path().join("store");
    let store_arg = store.to_str().unwrap();

    // The matrix carries the arch and a runner of it.
    let o = ws.run(&[
        "plan",
        "ax",
        "--arch",
        "all",
        "--format",
        "github-matrix",
        "--store",
        store_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let matrix: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        pairs(&matrix["include"], "arch", "runs-on"),
        [("amd64", "ubuntu-24.04"), ("arm64", "ubuntu-24.04-arm")]
    );

    let o = ws.run(&["build", "ax", "--arch", "all", "--store", store_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let amd = store.join("mini/ax-1.0.0.tar.gz");
    let arm = store.join("mini/ax-1.0.0-arm64.tar.gz");
    assert!(amd.is_file() && arm.is_file(), "{}", stdout(&o));
    assert_eq!(machine(&amd, "bin/ax"), 0x3e, "EM_X86_64");
    assert_eq!(machine(&arm, "bin/ax"), 0xb7, "EM_AARCH64");
    // Its test ran in the arm64 run image (the fixture's test runs the binary).
    assert!(
        stderr(&o).contains("ax 1.0.0 arm64: test"),
        "{}",
        stderr(&o)
    );

    // One inventory holds both; libherokubuildpack resolves each.
    let text = std::fs::read_to_string(store.join("mini/inventory/ax.toml")).unwrap();
    type Theirs = libherokubuildpack::inventory::Inventory<
        semver::Version,
        sha2::Sha256,
        BTreeMap<String, String>,
    >;
    let theirs: Theirs = text.parse().unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    use libherokubuildpack::inventory::artifact::{Arch as TheirArch, Os};
    let req = semver::VersionReq::parse("^1.0").unwrap();
    let arm_entry = theirs.resolve(Os::Linux, TheirArch::Arm64, &req).unwrap();
    assert!(
        arm_entry.url.ends_with("ax-1.0.0-arm64.tar.gz"),
        "{}",
        arm_entry.url
    );
    let amd_entry = theirs.resolve(Os::Linux, TheirArch::Amd64, &req).unwrap();
    assert!(
        amd_entry.url.ends_with("ax-1.0.0.tar.gz"),
        "{}",
        amd_entry.url
    );

    // `packager test` and `packager shell` take the arch too: the published arm64 artifact is
    // tested again in the arm64 run image, and the shell runs in the arm64 build image.
    let o = ws.run(&[
        "test", "ax", "1.0.0", "--arch", "arm64", "--store", store_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ax 1.0.0 arm64"), "{}", stderr(&o));
    let o = ws.run(&[
        "shell", "ax", "1.0.0", "--arch", "arm64", "--", "uname", "-m",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "aarch64");
    let o = ws.run(&["shell", "ax", "1.0.0", "--", "uname", "-m"]);
    assert_eq!(stdout(&o).trim(), "x86_64", "{}", stderr(&o));

    // Nothing changed: both are skipped.
    let o = ws.run(&[
        "plan", "ax", "--arch", "all", "--json", "--store", store_arg,
    ]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for j in plan["jobs"].as_array().unwrap() {
        assert_eq!(j["status"], "skip", "{j}");
    }
    assert!(containers_of(&docker, "ax").is_empty());
}

#[test]
fn a_recipe_s_arches_refuse_the_others_in_the_plan() {
    let server = Server::start();
    let ws = common::Workspace::new();
    ws.write_mini_manifest();
    ws.write("ay/runtime.toml", "arches = [\"amd64\"]\n");
    fixture(&ws, &server, "ay", "");
    let o = ws.run(&["plan", "ay", "--arch", "all", "--json", "--store", "store"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        pairs(&plan["jobs"], "arch", "status"),
        [("amd64", "build"), ("arm64", "unsupported")]
    );
    let reason = plan["jobs"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`arches`") && reason.contains("arm64"),
        "{reason}"
    );
}

#[test]
fn an_arch_s_own_engine_builds_it() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "az", "");
    let store = ws.dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    // The arm64 engine named is used (here: one that is not there), and said so.
    let o = ws
        .cmd()
        .env(
            "PACKAGER_DOCKER_HOST_ARM64",
            "unix:///nonexistent/arm64.sock",
        )
        .args(["build", "az", "--arch", "arm64", "--store", store_arg])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/nonexistent/arm64.sock"),
        "{}",
        stderr(&o)
    );
    // amd64 builds do not use it.
    let o = ws
        .cmd()
        .env(
            "PACKAGER_DOCKER_HOST_ARM64",
            "unix:///nonexistent/arm64.sock",
        )
        .args(["build", "az", "--store", store_arg])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The same engine named for arm64 builds it (emulated here).
    let host = std::env::var("DOCKER_HOST").unwrap_or("unix:///var/run/docker.sock".into());
    let o = ws
        .cmd()
        .env("PACKAGER_DOCKER_HOST_ARM64", &host)
        .args(["build", "az", "--arch", "arm64", "--store", store_arg])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(store.join("mini/az-1.0.0-arm64.tar.gz").is_file());
    assert!(containers_of(&docker, "az").is_empty());
}

#[test]
fn asking_only_for_an_unsupported_arch_is_refused() {
    let server = Server::start();
    let ws = common::Workspace::new();
    ws.write_mini_manifest();
    ws.write("aw/runtime.toml", "arches = [\"amd64\"]\n");
    fixture(&ws, &server, "aw", "");
    let o = ws.run(&["build", "aw", "--arch", "arm64", "--store", "store"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("aw 1.0.0 arm64 cannot be built") && err.contains("`arches`"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

/// Runs the packager where the kernel's `binfmt_misc` handlers cannot be seen: an empty tmpfs
/// over `/proc/sys/fs/binfmt_misc` in a private mount namespace (the handlers stay registered
/// for everyone else).
fn without_binfmt(ws: &common::Workspace, args: &[&str]) -> std::process::Output {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut cmd = std::process::Command::new("unshare");
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    let o = cmd
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /proc/sys/fs/binfmt_misc || exit 99; "$@""#)
        .arg("no-binfmt")
        .arg(env!("CARGO_BIN_EXE_packager"))
        .args(args)
        .env("PACKAGER_RECIPES", ws.recipes())
        .env("PACKAGER_CACHE", ws.cache())
        .env_remove("PACKAGER_MIRROR")
        .env_remove("PACKAGER_DOCKER_HOST_ARM64")
        .env("NO_COLOR", "1")
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    assert_ne!(
        o.status.code(),
        Some(99),
        "this test needs a private mount (unshare --mount): {}",
        stderr(&o)
    );
    o
}

#[test]
fn an_engine_that_cannot_run_arm64_is_said_before_anything_starts() {
    let docker = docker();
    let server = Server::start();
    let ws = workspace();
    fixture(&ws, &server, "av", "");
    let store = ws.dir.path().join("store");
    let o = without_binfmt(
        &ws,
        &[
            "build",
            "av",
            "--arch",
            "all",
            "--store",
            store.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("arm64"), "the arch is named: {err}");
    assert!(
        err.contains("hint:") && err.contains("qemu-user-static") && err.contains("--engine-arm64"),
        "how to fix it: {err}"
    );
    // Before anything started: not even the amd64 job ran.
    assert!(!err.contains("av 1.0.0: build"), "{err}");
    assert!(!store.join("mini/av-1.0.0.tar.gz").exists(), "{err}");
    assert!(containers_of(&docker, "av").is_empty());
}
