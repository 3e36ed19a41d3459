//! Integration tests for `packager::docker` and `packager::stack` against the real Docker engine.
//!
//! They need a reachable engine and mmdebstrap (or debootstrap) on the host, and fail loudly
//! without them. The `mini` test stack (tests/stacks/mini) is bootstrapped once if absent.
//! Every container gets a per-test label, and each test asserts none is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use packager::docker::{ContainerSpec, Docker, DockerError, ExecSpec, MANAGED_LABEL, OutputStream};
use packager::stack::{self, ImageOutcome, Role, Stack, StackError};

const TEST_LABEL: &str = "packager.test";

async fn docker() -> Docker {
    match Docker::connect().await {
        Ok(docker) => docker,
        Err(e) => panic!(
            "these tests need a reachable Docker engine: {e} ({:?}); hint: {}",
            std::error::Error::source(&e).map(ToString::to_string),
            e.hint().unwrap_or_default()
        ),
    }
}

fn mini_stack() -> Stack {
    stack::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .as_path(),
        "mini",
    )
    .expect("tests/stacks/mini loads")
}

/// The mini stack's build image, bootstrapped once per test binary if absent.
async fn mini_image(docker: &Docker) -> String {
    static IMAGE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            let stack = mini_stack();
            let started = Instant::now();
            let mut lines = Vec::new();
            let ensured = stack
                .ensure_build_image(docker, &mut |line: &str| lines.push(line.to_owned()))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "mini stack: {e}\nhint: {:?}\n{}",
                        e.hint(),
                        lines.join("\n")
                    )
                });
            eprintln!(
                "mini stack: {:?} {} ({} MB) in {:.1?}",
                ensured.outcome,
                ensured.reference,
                ensured.size / 1_000_000,
                started.elapsed()
            );
            ensured.reference
        })
        .await
        .clone()
}

fn spec(image: &str, test: &str) -> ContainerSpec {
    let mut spec = ContainerSpec::new(image);
    spec.labels.insert(TEST_LABEL.to_owned(), test.to_owned());
    spec
}

async fn assert_no_containers(docker: &Docker, test: &str) {
    let left = docker
        .list_containers(&[(TEST_LABEL, Some(test))])
        .await
        .expect("list containers");
    assert!(
        left.is_empty(),
        "containers left behind by {test}: {left:?}"
    );
}

/// Runs `exec`, collecting (stream, line) pairs.
async fn run(
    container: &packager::docker::ContainerGuard,
    exec: &ExecSpec,
) -> (i64, Vec<(OutputStream, String)>) {
    let mut lines = Vec::new();
    let result = container
        .exec(exec, &mut |stream, line: &str| {
            lines.push((stream, line.to_owned()))
        })
        .await
        .expect("exec runs");
    (result.exit_code, lines)
}

fn text(lines: &[(OutputStream, String)], which: OutputStream) -> String {
    lines
        .iter()
        .filter(|(s, _)| *s == which)
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, *content)
            .expect("append to tar");
    }
    builder.into_inner().expect("finish tar")
}

fn once(bytes: Vec<u8>) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::iter([Ok(Bytes::from(bytes))])
}

#[tokio::test]
async fn engine_reports_version_and_arch() {
    let docker = docker().await;
    let engine = docker.engine().await.expect("engine info");
    assert!(!engine.version.is_empty());
    assert!(engine.api_version.starts_with("1."), "{engine:?}");
    assert_eq!(engine.os, "linux");
    docker.ping().await.expect("ping");
}

#[tokio::test]
async fn unreachable_engine_is_a_clear_error() {
    let err = Docker::connect_to("unix:///nonexistent/docker.sock")
        .await
        .expect_err("no engine there");
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("DOCKER_HOST"));
}

#[tokio::test]
async fn mini_image_has_config_and_labels() {
    let docker = docker().await;
    let reference = mini_image(&docker).await;
    let stack = mini_stack();
    assert_eq!(
        reference,
        format!("packager-stack-mini:build-{}", &stack.hash[..12])
    );
    let image = docker
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .expect("image exists");
    assert_eq!(
        image.labels.get("packager.stack").map(String::as_str),
        Some("mini")
    );
    assert_eq!(image.labels.get("packager.stack.hash"), Some(&stack.hash));
    assert_eq!(
        image.labels.get("packager.stack.role").map(String::as_str),
        Some("build")
    );
    assert!(
        image
            .env
            .iter()
            .any(|e| e.starts_with("PATH=/usr/local/sbin")),
        "{:?}",
        image.env
    );
    assert!(
        image.env.contains(&"LANG=C.UTF-8".to_owned()),
        "{:?}",
        image.env
    );
    let listed = docker
        .list_images(&[("packager.stack", Some("mini"))])
        .await
        .expect("list images");
    assert!(listed.iter().any(|i| i.id == image.id), "{listed:?}");
}

#[tokio::test]
async fn second_ensure_reuses_the_image() {
    let docker = docker().await;
    let reference = mini_image(&docker).await;
    let stack = mini_stack();
    let mut lines = Vec::new();
    let started = Instant::now();
    let again = stack
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .expect("ensure again");
    assert_eq!(again.outcome, ImageOutcome::Reused);
    assert_eq!(again.reference, reference);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reuse must not rebuild"
    );
    assert!(lines.iter().any(|l| l.contains("reusing")), "{lines:?}");
    // No run image: the build image is used for tests.
    let run = stack
        .ensure_run_image(&docker, &mut |_: &str| {})
        .await
        .expect("ensure run");
    assert_eq!(run.outcome, ImageOutcome::Reused);
    assert_eq!(run.reference, reference);
    assert_eq!(stack.image_reference(Role::Run), reference);
}

#[tokio::test]
async fn gcc_compiles_with_uploaded_sources_and_results_download() {
    const TEST: &str = "gcc";
    let docker = docker().await;
    let image = mini_image(&docker).await;
    let mut spec = spec(&image, TEST);
    spec.working_dir = Some("/work".to_owned());
    let container = docker.create_container(&spec).await.expect("create");
    container.start().await.expect("start");

    let (code, lines) = run(&container, &ExecSpec::new(["gcc", "--version"])).await;
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        text(&lines, OutputStream::Stdout).starts_with("gcc"),
        "{lines:?}"
    );

    let source =
        b"#include <stdio.h>\nint main(void) { puts(\"hello from packager\"); return 0; }\n";
    container
        .upload("/work", once(tar_of(&[("src/hello.c", source, 0o644)])))
        .await
        .expect("upload");
    let (code, lines) = run(
        &container,
        &ExecSpec::shell("mkdir -p out && gcc -O2 -o out/hello src/hello.c && ./out/hello"),
    )
    .await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(text(&lines, OutputStream::Stdout), "hello from packager");

    // Download incrementally, then read the archive.
    let mut archive = Vec::new();
    let mut chunks = 0;
    let mut stream = container.download("/work/out");
    while let Some(chunk) = stream.try_next().await.expect("download chunk") {
        chunks += 1;
        archive.extend_from_slice(&chunk);
    }
    assert!(chunks >= 1);
    let mut names = BTreeMap::new();
    let mut reader = tar::Archive::new(archive.as_slice());
    for entry in reader.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read entry");
        names.insert(name, content);
    }
    let binary = names.get("out/hello").expect("out/hello downloaded");
    assert_eq!(&binary[..4], b"\x7fELF");

    // Round trip: what we upload comes back byte for byte.
    container
        .upload(
            "/tmp",
            once(tar_of(&[("data.bin", &[0u8, 1, 2, 255], 0o600)])),
        )
        .await
        .expect("upload data");
    let archive: Vec<u8> = container
        .download("/tmp/data.bin")
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await
        .expect("download data");
    let mut reader = tar::Archive::new(archive.as_slice());
    let mut entry = reader.entries().unwrap().next().unwrap().unwrap();
    let mut content = Vec::new();
    entry.read_to_end(&mut content).unwrap();
    assert_eq!(content, [0u8, 1, 2, 255]);
    assert_eq!(entry.header().mode().unwrap() & 0o777, 0o600);

    container.remove().await.expect("remove");
    assert_no_containers(&docker, TEST).await;
}

#[tokio::test]
async fn exit_codes_propagate() {
    const TEST: &str = "exit-codes";
    let docker = docker().await;
    let image = mini_image(&docker).await;
    let container = docker
        .create_container(&spec(&image, TEST))
        .await
        .expect("create");
    container.start().await.expect("start");

    let result = container
        .exec(
            &ExecSpec::shell("echo before; echo oops >&2; exit 7"),
            &mut |_, _: &str| {},
        )
        .await
        .expect("exec runs");
    assert_eq!(result.exit_code, 7);
    // stdout and stderr are separate streams: their relative order is not guaranteed.
    let mut tail = result.tail.clone();
    tail.sort();
    assert_eq!(tail, ["before", "oops"]);
    let err = result.check().expect_err("exit 7 is an error");
    match &err {
        DockerError::ExecFailed {
            exit_code, command, ..
        } => {
            assert_eq!(*exit_code, 7);
            assert_eq!(command, "echo before; echo oops >&2; exit 7");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("exited with code 7"), "{err}");
    assert!(err.to_string().contains("oops"), "{err}");

    let (code, _) = run(&container, &ExecSpec::new(["false"])).await;
    assert_eq!(code, 1);
    let (code, _) = run(&container, &ExecSpec::new(["true"])).await;
    assert_eq!(code, 0);
    // A missing program is an exit code too (126/127), not a hang or an Ok(0).
    let (code, _) = run(&container, &ExecSpec::shell("no-such-program")).await;
    assert_eq!(code, 127);

    container.remove().await.expect("remove");
    assert_no_containers(&docker, TEST).await;
}

#[tokio::test]
async fn network_is_disabled_unless_asked() {
    const TEST: &str = "network";
    let docker = docker().await;
    let image = mini_image(&docker).await;

    let offline = docker
        .create_container(&spec(&image, TEST))
        .await
        .expect("create");
    offline.start().await.expect("start");
    let (code, lines) = run(&offline, &ExecSpec::new(["ls", "/sys/class/net"])).await;
    assert_eq!(code, 0);
    assert_eq!(text(&lines, OutputStream::Stdout), "lo", "only loopback");
    // Connect to the default bridge gateway: no route at all.
    let connect = ExecSpec::new(["bash", "-c", "echo > /dev/tcp/172.17.0.1/9"]);
    let (code, lines) = run(&offline, &connect).await;
    assert_ne!(code, 0, "connect must fail: {lines:?}");
    assert!(
        text(&lines, OutputStream::Stderr).contains("Network is unreachable"),
        "{lines:?}"
    );

    // Control: with a network the same attempt reaches the host (and is refused or succeeds),
    // so the failure above really is the missing network.
    let mut online_spec = spec(&image, TEST);
    online_spec.network = true;
    let online = docker.create_container(&online_spec).await.expect("create");
    online.start().await.expect("start");
    let (_, lines) = run(&online, &connect).await;
    assert!(
        !text(&lines, OutputStream::Stderr).contains("Network is unreachable"),
        "{lines:?}"
    );

    offline.remove().await.expect("remove");
    online.remove().await.expect("remove");
    assert_no_containers(&docker, TEST).await;
}

#[tokio::test]
async fn environment_is_exactly_what_we_pass() {
    const TEST: &str = "env";
    let docker = docker().await;
    let image = mini_image(&docker).await;
    // Cargo sets these in the test process; none may leak into the container.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());

    let mut spec = spec(&image, TEST);
    spec.env = vec![("STACK".to_owned(), "mini".to_owned())];
    let container = docker.create_container(&spec).await.expect("create");
    container.start().await.expect("start");
    let exec = ExecSpec::new(["env"]).env("ONLY_IN_EXEC", "1");
    let (code, lines) = run(&container, &exec).await;
    assert_eq!(code, 0);
    let names: BTreeSet<String> = lines
        .iter()
        .filter_map(|(_, l)| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    // Ours, the image's ENV, and the two the engine always sets.
    let expected: BTreeSet<String> = ["STACK", "ONLY_IN_EXEC", "PATH", "LANG", "HOSTNAME", "HOME"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, expected, "{lines:?}");
    assert!(lines.iter().any(|(_, l)| l == "STACK=mini"));

    container.remove().await.expect("remove");
    assert_no_containers(&docker, TEST).await;
}

#[tokio::test]
async fn guard_removes_container_on_drop_and_cancellation() {
    const TEST: &str = "guard";
    let docker = docker().await;
    let image = mini_image(&docker).await;

    // Plain drop (e.g. an early `?` return).
    let container = docker
        .create_container(&spec(&image, TEST))
        .await
        .expect("create");
    container.start().await.expect("start");
    let id = container.id().to_owned();
    let listed = docker
        .list_containers(&[(TEST_LABEL, Some(TEST)), (MANAGED_LABEL, Some("true"))])
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].state, "running");
    drop(container);
    assert_no_containers(&docker, TEST).await;

    // A cancelled future (what Ctrl-C in a `select!` does): the guard lives inside it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let work = {
        let docker = docker.clone();
        let spec = spec(&image, TEST);
        async move {
            let container = docker.create_container(&spec).await.expect("create");
            container.start().await.expect("start");
            tx.send(container.id().to_owned()).unwrap();
            let _ = container
                .exec(&ExecSpec::new(["sleep", "600"]), &mut |_, _: &str| {})
                .await;
            unreachable!("cancelled before the exec ends");
        }
    };
    let task = tokio::spawn(work);
    let id = rx.await.expect("container was created");
    assert!(!id.is_empty());
    task.abort();
    let cancelled = task.await.expect_err("the task was cancelled");
    assert!(cancelled.is_cancelled());
    assert_no_containers(&docker, TEST).await;

    // Orphans (e.g. after SIGKILL) are found and removed by label.
    let kept = docker
        .create_container(&spec(&image, TEST))
        .await
        .expect("create")
        .keep();
    let removed = docker
        .remove_orphans(&[(TEST_LABEL, Some(TEST))])
        .await
        .expect("remove orphans");
    assert_eq!(removed, [kept]);
    assert_no_containers(&docker, TEST).await;
}

#[tokio::test]
async fn dockerfile_stack_builds_once_and_reports_failures() {
    const TEST: &str = "dockerfile";
    let docker = docker().await;
    let base = mini_image(&docker).await;
    let recipes = tempfile::tempdir().unwrap();
    let dir = recipes.path().join("stacks").join("dftest");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stack.toml"), "dockerfile = \"Dockerfile\"\n").unwrap();
    std::fs::write(dir.join("greeting.txt"), "hi from the context\n").unwrap();
    // The marker makes this test's image unique per run, so it is really built.
    let marker = format!("{:?}", Instant::now());
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY greeting.txt /greeting.txt\nRUN echo '{marker}' > /marker && \
             cat /greeting.txt\n"
        ),
    )
    .unwrap();
    let stack = stack::load(recipes.path(), "dftest").expect("load");
    let mut lines = Vec::new();
    let built = stack
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
    assert_eq!(built.outcome, ImageOutcome::Built);
    assert!(
        lines.iter().any(|l| l == "hi from the context"),
        "{lines:?}"
    );
    let image = docker
        .inspect_image(&built.reference)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(image.labels.get("packager.stack.hash"), Some(&stack.hash));
    let again = stack
        .ensure_build_image(&docker, &mut |_: &str| {})
        .await
        .expect("ensure again");
    assert_eq!(again.outcome, ImageOutcome::Reused);
    assert_eq!(again.id, built.id);

    // Changing a context file changes the hash, hence the tag.
    std::fs::write(dir.join("greeting.txt"), "changed\n").unwrap();
    let changed = stack::load(recipes.path(), "dftest").expect("load");
    assert_ne!(changed.hash, stack.hash);

    // A failing step: error with the log tail.
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nRUN echo about to fail && exit 3\n"),
    )
    .unwrap();
    let failing = stack::load(recipes.path(), "dftest").expect("load");
    let err = failing
        .ensure_build_image(&docker, &mut |_: &str| {})
        .await
        .expect_err("build fails");
    let StackError::Docker { source, .. } = &err else {
        panic!("{err:?}")
    };
    match source.as_ref() {
        DockerError::Build { message, tail, .. } => {
            assert!(message.contains("returned a non-zero code: 3"), "{message}");
            assert!(tail.iter().any(|l| l == "about to fail"), "{tail:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.hint().is_some());

    docker
        .remove_image(&built.reference, true)
        .await
        .expect("remove image");
    assert!(!docker.image_exists(&built.reference).await.unwrap());
    assert_no_containers(&docker, TEST).await;
}

/// A bootstrap that fails (here: a suite that doesn't exist) reports the tool's output and
/// leaves no image behind.
#[tokio::test]
async fn failing_bootstrap_reports_the_tool_output() {
    let docker = docker().await;
    let recipes = tempfile::tempdir().unwrap();
    let dir = recipes.path().join("stacks").join("nosuite");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stack.toml"),
        "[bootstrap]\nsuite = \"no-such-suite\"\nvariant = \"minbase\"\n",
    )
    .unwrap();
    let stack = stack::load(recipes.path(), "nosuite").expect("load");
    let mut lines = Vec::new();
    let err = stack
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .expect_err("no such suite");
    match &err {
        StackError::Bootstrap { tool, tail, .. } => {
            assert_eq!(tool, "mmdebstrap");
            assert!(!tail.is_empty(), "{err}");
        }
        other => panic!("{other:?}\n{lines:?}"),
    }
    assert!(err.hint().unwrap().contains("PACKAGER_DEBIAN_MIRROR"));
    let reference = stack.image_reference(Role::Build);
    assert!(
        !docker.image_exists(&reference).await.unwrap(),
        "{reference}"
    );
}

#[tokio::test]
async fn pull_without_registry_is_a_clear_error() {
    let docker = docker().await;
    let err = docker
        .pull_image("packager-test/no-such-image:1", None, &mut |_: &str| {})
        .await
        .expect_err("nothing to pull from");
    assert!(matches!(err, DockerError::Pull { .. }), "{err:?}");
    assert!(
        err.to_string().contains("packager-test/no-such-image:1"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("registry"));
}

#[test]
fn bad_stack_toml_names_file_and_line() {
    let recipes = tempfile::tempdir().unwrap();
    let dir = recipes.path().join("stacks").join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stack.toml"),
        "[bootstrap]\nsuite = \"bookworm\"\npakages = [\"gcc\"]\n",
    )
    .unwrap();
    let err = stack::load(recipes.path(), "broken").expect_err("typo in key");
    let message = err.to_string();
    let path = dir.join("stack.toml");
    assert!(
        message.starts_with(&format!("{}:3:1: ", path.display())),
        "{message}"
    );
    assert!(message.contains("pakages"), "{message}");

    std::fs::write(
        dir.join("stack.toml"),
        "image = \"a\"\ndockerfile = \"Dockerfile\"\n",
    )
    .unwrap();
    let err = stack::load(recipes.path(), "broken").expect_err("two sources");
    assert!(
        err.to_string().contains("more than one image source"),
        "{err}"
    );

    std::fs::write(dir.join("stack.toml"), "[bootstrap]\nsuite = 12\n").unwrap();
    let err = stack::load(recipes.path(), "broken").expect_err("wrong type");
    assert!(err.to_string().contains("stack.toml:2:9: "), "{err}");
}

#[test]
fn shipped_stacks_load_and_unknown_names_list_them() {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let stacks = stack::load_all(&recipes).expect("shipped stacks load");
    let names: Vec<&str> = stacks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["bookworm", "bookworm-mono", "heroku-24"]);

    let bookworm = &stacks[0];
    assert_eq!(
        bookworm.image_reference(Role::Build),
        format!("packager-stack-bookworm:build-{}", &bookworm.hash[..12])
    );
    assert_eq!(
        bookworm.image_reference(Role::Run),
        format!("packager-stack-bookworm:run-{}", &bookworm.hash[..12])
    );
    let heroku = &stacks[2];
    assert_eq!(
        heroku.image_reference(Role::Build),
        "heroku/heroku:24-build"
    );
    assert_eq!(heroku.image_reference(Role::Run), "heroku/heroku:24");

    let err = stack::load(&recipes, "bullseye").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown stack `bullseye` (known stacks: bookworm, bookworm-mono, heroku-24)"
    );
    assert!(err.hint().unwrap().contains("bookworm"));
}

/// Bootstraps the real bookworm stack (build and run images) and reports time and size.
/// Slow (minutes) and network-hungry: `cargo test --test stack -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "slow: bootstraps the full bookworm stack"]
async fn bootstrap_bookworm() {
    let docker = docker().await;
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let stack = stack::load(&recipes, "bookworm").expect("load");
    for role in [Role::Build, Role::Run] {
        let started = Instant::now();
        let ensured = stack
            .ensure_image(&docker, role, &mut |_: &str| {})
            .await
            .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
        eprintln!(
            "bookworm {role}: {:?} {} ({} MB) in {:.1?}",
            ensured.outcome,
            ensured.reference,
            ensured.size / 1_000_000,
            started.elapsed()
        );
        let container = docker
            .create_container(&spec(&ensured.reference, "bookworm"))
            .await
            .expect("create");
        container.start().await.expect("start");
        let check = match role {
            Role::Build => "gcc --version && pkg-config --exists openssl libffi sqlite3 yaml-0.1",
            Role::Run => "! command -v gcc && ls /usr/lib/*/libssl.so.3 /usr/lib/*/libyaml-0.so.2",
        };
        let result = container
            .exec(&ExecSpec::shell(check), &mut |_, _: &str| {})
            .await
            .expect("exec");
        let tail = result.tail.clone();
        result.check().unwrap_or_else(|e| panic!("{e}: {tail:?}"));
        container.remove().await.expect("remove");
    }
    assert_no_containers(&docker, "bookworm").await;
}

/// The debootstrap fallback (root only; ./scripts/test installs debootstrap): bootstrap into a
/// folder, tar it, import it. About three minutes (a minbase bookworm from the Debian mirror,
/// 168 s on a 2-core machine under load), well inside CI's budget, so it runs with the suite.
#[tokio::test]
async fn bootstrap_with_debootstrap() {
    const TEST: &str = "debootstrap";
    let docker = docker().await;
    let recipes = tempfile::tempdir().unwrap();
    let dir = recipes.path().join("stacks").join("deboot");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stack.toml"),
        "[bootstrap]\nsuite = \"bookworm\"\nvariant = \"minbase\"\ntool = \"debootstrap\"\n",
    )
    .unwrap();
    let stack = stack::load(recipes.path(), "deboot").expect("load");
    let started = Instant::now();
    let mut lines = Vec::new();
    let ensured = stack
        .ensure_build_image(&docker, &mut |l: &str| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", e.hint(), lines.join("\n")));
    eprintln!(
        "debootstrap minbase: {:?} ({} MB) in {:.1?}",
        ensured.outcome,
        ensured.size / 1_000_000,
        started.elapsed()
    );
    let container = docker
        .create_container(&spec(&ensured.reference, TEST))
        .await
        .expect("create");
    container.start().await.expect("start");
    let (code, out) = run(
        &container,
        &ExecSpec::shell("cat /etc/debian_version && ! ls /var/lib/apt/lists/*_Packages"),
    )
    .await;
    assert_eq!(code, 0, "{out:?}");
    assert!(
        text(&out, OutputStream::Stdout).starts_with("12."),
        "{out:?}"
    );
    container.remove().await.expect("remove");
    docker
        .remove_image(&ensured.reference, true)
        .await
        .expect("remove image");
    assert_no_containers(&docker, TEST).await;
}

/// The host tools of a bootstrap (mmdebstrap; debootstrap, then tar) get a clean environment:
/// fakes first on `PATH` write down theirs and fail, and no host variable but `PATH`, `TMPDIR`
/// and the proxy variables reaches them (the credentials of a publish least of all).
#[test]
fn bootstrap_tools_get_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes");
    let fakes = dir.path().join("bin");
    std::fs::create_dir_all(&fakes).unwrap();
    for tool in ["mmdebstrap", "debootstrap", "tar"] {
        let fake = fakes.join(tool);
        // debootstrap succeeds (so that tar runs next); the others fail.
        let code = if tool == "debootstrap" { 0 } else { 3 };
        let dump = dir.path().join(format!("{tool}.env"));
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nenv > '{}'\necho 'fake {tool}' >&2\nexit {code}\n",
                dump.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (name, tool) in [("envmm", "mmdebstrap"), ("envdeb", "debootstrap")] {
        let stack = recipes.join("stacks").join(name);
        std::fs::create_dir_all(&stack).unwrap();
        std::fs::write(
            stack.join("stack.toml"),
            format!(
                "[bootstrap]\nsuite = \"bookworm\"\nvariant = \"minbase\"\ntool = \"{tool}\"\n"
            ),
        )
        .unwrap();
    }
    let path = format!(
        "{}:{}",
        fakes.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_packager"))
            .args(["stack", "build", name])
            .env("PACKAGER_RECIPES", &recipes)
            .env("PACKAGER_CACHE", dir.path().join("cache"))
            .env("PATH", &path)
            .env("AWS_SECRET_ACCESS_KEY", "host-secret")
            .env("AWS_ACCESS_KEY_ID", "host-key")
            .env("LC_ALL", "de_DE.UTF-8")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("TMPDIR", dir.path())
            .env("NO_COLOR", "1")
            // The other variables a tool may get: not this test's to set.
            .env_remove("https_proxy")
            .env_remove("ftp_proxy")
            .env_remove("no_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("NO_PROXY")
            .output()
            .unwrap()
    };
    let read = |tool: &str| -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(dir.path().join(format!("{tool}.env")))
            .unwrap_or_else(|e| panic!("{tool} did not run: {e}"));
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let o = run("envmm");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("fake mmdebstrap"));
    let o = run("envdeb");
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for tool in ["mmdebstrap", "debootstrap", "tar"] {
        let env = read(tool);
        // What the shell of the fake adds itself.
        let names: BTreeSet<&str> = env
            .keys()
            .map(String::as_str)
            .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(k))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["LANG", "PATH", "SOURCE_DATE_EPOCH", "TMPDIR", "http_proxy"]),
            "{tool}: {env:?}"
        );
        assert_eq!(env["PATH"], path, "{tool}");
        assert_eq!(env["LANG"], "C.UTF-8", "{tool}");
        assert_eq!(env["http_proxy"], "http://127.0.0.1:9", "{tool}");
    }
}
