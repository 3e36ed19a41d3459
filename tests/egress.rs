//! Networked builds on the real engine (src/egress.rs): `network = [...]` reaches the hosts it
//! lists through packager's egress proxy, and nothing else — not loopback, not the metadata
//! service, not a host off the list, and nothing at all without the proxy (the container has
//! no interface but loopback). These tests need Docker: without it they fail, loudly.

mod common;

use common::engine::{containers_of, docker, fixture_recipe, workspace};
use common::{Route, Server, Workspace, stderr};

/// Bash functions for the build: `get URL` sends a plain HTTP request through the proxy named
/// by `$http_proxy`, `tunnel HOST:PORT PATH` a CONNECT and then a GET inside the tunnel; both
/// print the whole answer. Then `expect WHAT TEXT...`: the answer must contain each TEXT.
const CLIENT: &str = r#"proxy=${http_proxy#http://}; proxy=${proxy%/}
get() ( exec 3<>/dev/tcp/${proxy%:*}/${proxy##*:} || exit 9; printf 'GET %s HTTP/1.1\r\nHost: x\r\n\r\n' "$1" >&3; cat <&3 )
tunnel() ( exec 3<>/dev/tcp/${proxy%:*}/${proxy##*:} || exit 9; printf 'CONNECT %s HTTP/1.1\r\n\r\nGET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$1" "$2" >&3; cat <&3 )
expect() ( out=$(eval "$1"); echo "$out"; shift; for t in "$@"; do case "$out" in *"$t"*) ;; *) echo "missing: $t"; exit 1;; esac; done )"#;

/// A configure command: bash with [`CLIENT`] (written by the first command), then `script`.
fn step(script: &str) -> String {
    format!("bash -c '. /tmp/client.sh; {script}'")
}

fn networked_recipe(ws: &Workspace, server: &Server, port: u16) {
    let steps = [
        format!("cat > /tmp/client.sh <<'EOF'\n{CLIENT}\nEOF"),
        // The allowed host, mapped to the loopback test server by the operator's switch, both
        // as plain HTTP and through a CONNECT tunnel.
        step(&format!(
            r#"expect "get http://allowed.test:{port}/egress-hello" "200 OK" "hello through the proxy""#
        )),
        step(&format!(
            r#"expect "tunnel allowed.test:{port} /egress-hello" "200 Connection established" "hello through the proxy""#
        )),
        // Listed, but a loopback name: the same server, refused by the address check.
        step(&format!(
            r#"expect "get http://localhost:{port}/egress-hello" "403 Forbidden" "localhost resolves to 127.0.0.1 is a loopback address""#
        )),
        // Not listed: refused before anything is resolved or checked (loopback first, so that
        // the test stops here, sending nothing, if the list were not checked).
        step(&format!(
            r#"expect "get http://127.0.0.1:{port}/egress-hello" "403 Forbidden" "127.0.0.1 is not in the recipe""#
        )),
        step(
            r#"expect "tunnel other.test:443 /" "403 Forbidden" "other.test is not in the recipe""#,
        ),
        // Listed as an address, and refused for what it is: the metadata service.
        step(
            r#"expect "get http://169.254.169.254/latest/meta-data/" "403 Forbidden" "169.254.169.254 is a link-local address""#,
        ),
        // Without the proxy there is no way out: no interface but loopback, so a direct
        // connection fails inside the container (no route) before any packet leaves it.
        "test \"$(ls /sys/class/net)\" = lo".to_string(),
        step(
            r#"if (exec 4<>/dev/tcp/169.254.169.254/80) 2>/dev/null; then echo reached; exit 1; fi"#,
        ),
        "./configure --prefix={prefix}".to_string(),
    ];
    let configure: Vec<String> = steps.iter().map(|s| format!("'''{s}'''")).collect();
    fixture_recipe(
        ws,
        server,
        "netfix",
        &format!(
            "[build]\nnetwork = [\"allowed.test\", \"localhost\", \"169.254.169.254\"]\nconfigure = [\n{}\n]\n",
            configure.join(",\n")
        ),
    );
}

#[test]
fn a_networked_build_reaches_only_its_listed_hosts_through_the_proxy() {
    let docker = docker();
    let server = Server::start();
    server.route(
        "/egress-hello",
        Route::Body(b"hello through the proxy\n".to_vec()),
    );
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let ws = workspace();
    networked_recipe(&ws, &server, port);
    let store = ws.dir.path().join("store");
    let o = ws
        .cmd()
        .env("PACKAGER_EGRESS_TEST_HOST", format!("allowed.test:{port}"))
        .args(["-v", "build", "--store", store.to_str().unwrap()])
        .args(["netfix", "1.0.0"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // Only the two allowed requests reached the server; the loopback name did not.
    assert_eq!(server.hits("/egress-hello"), 2, "{err}");

    // Every request is in the build log, allowed or refused and why.
    let log = std::fs::read_dir(ws.cache().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|l| l.contains("netfix 1.0.0 on stack"))
        .expect("the build log");
    for line in [
        format!("# network: GET http://allowed.test:{port}/egress-hello: allowed, to 127.0.0.1:{port}"),
        format!("# network: CONNECT allowed.test:{port}: allowed, to 127.0.0.1:{port}"),
        format!("# network: GET http://localhost:{port}/egress-hello: refused, localhost resolves to 127.0.0.1 is a loopback address"),
        "# network: CONNECT other.test:443: refused, other.test is not in the recipe's `network` list".to_string(),
        "# network: GET http://169.254.169.254/latest/meta-data/: refused, 169.254.169.254 is a link-local address (169.254.0.0/16, the cloud metadata service)".to_string(),
    ] {
        assert!(log.lines().any(|l| l == line), "`{line}` in the log:\n{log}");
    }

    // The provenance names the hosts reached, and only those.
    let inv: toml::Table = std::fs::read_to_string(store.join("mini/inventory/netfix.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let entry = inv["artifacts"][0].as_table().unwrap();
    assert_eq!(
        entry["metadata"]["network"].as_str(),
        Some(format!("allowed.test:{port}").as_str()),
        "{entry:?}"
    );
    assert!(containers_of(&docker, "netfix").is_empty());
}

#[test]
fn a_network_entry_that_is_not_a_host_is_a_recipe_error() {
    let ws = Workspace::new();
    let src = "[source]\nurl = \"https://example.invalid/x.tar.gz\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    for (entry, says) in [
        ("\"https://static.rust-lang.org/dist\"", "is a URL"),
        ("\"\"", "an empty `network` entry"),
    ] {
        let file = ws.write(
            "demo/1.0.0.toml",
            &format!("{src}[build]\nnetwork = [\n  \"ok.example\",\n  {entry},\n]\n"),
        );
        let o = ws.run(&["show", "demo", "1.0.0"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("error: {}:7: ", file.display())) && err.contains(says),
            "{err}"
        );
        assert!(err.contains("hint: `network = true`"), "{err}");
    }
    ws.write("demo/1.0.0.toml", &format!("{src}[build]\nnetwork = []\n"));
    let o = ws.run(&["show", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("network = false"), "{}", stderr(&o));
    // The canonical recipe shows the list as it is checked: lower case, each host once.
    ws.write(
        "demo/1.0.0.toml",
        &format!("{src}[build]\nnetwork = [\"Static.Rust-Lang.org\", \"*.example.org\", \"static.rust-lang.org\"]\n"),
    );
    let o = ws.run(&["show", "demo", "1.0.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: toml::Table = common::stdout(&o).parse().unwrap();
    assert_eq!(
        shown["build"]["network"],
        toml::Value::Array(vec!["static.rust-lang.org".into(), "*.example.org".into()])
    );
}
