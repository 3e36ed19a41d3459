//! Helpers for tests on the real Docker engine: the `mini` test stack (made once per test
//! binary) and fixture runtimes served from loopback.

use std::sync::OnceLock;

use packager::docker::Docker;

use super::fixture::{c_project, tarball};
use super::{Route, Server, Workspace, sha256_hex, stderr};

/// One runtime for the whole test binary.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// The engine; these tests fail loudly without one.
pub fn docker() -> Docker {
    rt().block_on(Docker::connect()).unwrap_or_else(|e| {
        panic!("these tests need a Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}")
    })
}

/// A workspace with the mini stack, whose image is made once per test binary.
pub fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write_mini_manifest();
    static STACK: OnceLock<()> = OnceLock::new();
    STACK.get_or_init(|| {
        let o = ws.run(&["stack", "build", "mini"]);
        assert!(o.status.success(), "stack build mini: {}", stderr(&o));
    });
    ws
}

/// Serves a fixture C project and writes its recipe (`extra` is appended); returns the
/// tarball's sha256.
pub fn fixture(ws: &Workspace, server: &Server, runtime: &str, extra: &str) -> String {
    fixture_recipe(
        ws,
        server,
        runtime,
        &format!(
            r#"[test]
commands = ["{runtime} --version | grep -x '{runtime} 1.0.0'", "{{prefix}}/bin/{runtime}-link tester | grep -x 'hello, tester'"]
{extra}"#
        ),
    )
}

/// Serves fixture `runtime` 1.0.0 and writes its recipe: the mini stack, the source, then
/// `body` (TOML); returns the tarball's sha256.
pub fn fixture_recipe(ws: &Workspace, server: &Server, runtime: &str, body: &str) -> String {
    let top = format!("{runtime}-1.0.0");
    let tgz = tarball(&top, &c_project(runtime, "1.0.0"));
    let sum = sha256_hex(&tgz);
    let url = server.route(&format!("/{top}.tar.gz"), Route::Body(tgz));
    ws.write(
        &format!("{runtime}/1.0.0.toml"),
        &format!("stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n{body}"),
    );
    sum
}

/// Serves `runtime`'s fixture project at `version` and writes its version file (`extra` first:
/// it may hold top-level keys such as `revision`; tables can come in any order).
pub fn fixture_version(ws: &Workspace, server: &Server, runtime: &str, v: &str, extra: &str) {
    let top = format!("{runtime}-{v}");
    let tgz = tarball(&top, &c_project(runtime, v));
    let sum = sha256_hex(&tgz);
    let url = server.route(&format!("/{top}.tar.gz"), Route::Body(tgz));
    ws.write(
        &format!("{runtime}/{v}.toml"),
        &format!("{extra}\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n"),
    );
}

/// Containers of a runtime still on the engine.
pub fn containers_of(docker: &Docker, runtime: &str) -> Vec<packager::docker::ContainerInfo> {
    rt().block_on(docker.list_containers(&[("packager.runtime", Some(runtime))]))
        .unwrap()
}
