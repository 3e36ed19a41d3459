//! A Docker engine reached over TLS with client certificates (`DOCKER_HOST=tcp://…` with
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`), as a remote engine should be: a TLS endpoint on
//! loopback that requires a client certificate of its CA, in front of the local engine's
//! socket (a few lines of Python's `ssl`), with certificates made by `openssl`. Needs Docker,
//! `python3` and `openssl`; fails loudly without them.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::engine::workspace;
use common::{stderr, stdout};

/// A TLS proxy: argv = port file, certificate folder, engine socket.
const PROXY: &str = r#"import socket, ssl, sys, threading
port_file, certs, sock_path = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(certs + "/server.pem", certs + "/server-key.pem")
ctx.load_verify_locations(certs + "/ca.pem")
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
open(port_file, "w").write(str(srv.getsockname()[1]))
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("refused:", e, flush=True)
        c.close()
        return
    u = socket.socket(socket.AF_UNIX)
    u.connect(sock_path)
    threading.Thread(target=pump, args=(u, t), daemon=True).start()
    pump(t, u)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("these tests need the openssl command");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// A CA `name` in `dir` (`NAME-ca.pem`, `NAME-ca-key.pem`).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{name}-ca-key.pem"),
            "-out",
            &format!("{name}-ca.pem"),
            "-subj",
            &format!("/CN={name}-ca"),
        ],
    );
}

/// A certificate `out.pem` / `out-key.pem` signed by CA `ca` with the extensions `ext`.
fn signed(dir: &Path, ca: &str, out: &str, ext: &str) {
    std::fs::write(dir.join(format!("{out}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{out}-key.pem"),
            "-out",
            &format!("{out}.csr"),
            "-subj",
            &format!("/CN={out}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{out}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-out",
            &format!("{out}.pem"),
            "-extfile",
            &format!("{out}.ext"),
        ],
    );
}

/// `DOCKER_CERT_PATH` folder `name` with `ca.pem`, `cert.pem`, `key.pem`.
fn cert_path(dir: &Path, name: &str, ca: &str, client: &str) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for (from, file) in [
        (format!("{ca}-ca.pem"), "ca.pem"),
        (format!("{client}.pem"), "cert.pem"),
        (format!("{client}-key.pem"), "key.pem"),
    ] {
        std::fs::copy(dir.join(from), to.join(file)).unwrap();
    }
    to
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_engine_behind_tls_with_client_certificates_is_used_and_a_stranger_is_refused() {
    let ws = workspace(); // makes sure the mini stack's image is there
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "farm");
    ca(d, "stranger");
    signed(
        d,
        "farm",
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    signed(d, "farm", "client", "extendedKeyUsage=clientAuth\n");
    signed(d, "stranger", "intruder", "extendedKeyUsage=clientAuth\n");
    std::fs::write(d.join("proxy.py"), PROXY).unwrap();
    // The proxy's CA (whose client certificates it accepts) is the farm's.
    std::fs::copy(d.join("farm-ca.pem"), d.join("ca.pem")).unwrap();
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let port_file = d.join("port");
    let _proxy = KillOnDrop(
        Command::new("python3")
            .arg(d.join("proxy.py"))
            .arg(&port_file)
            .arg(d)
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("these tests need python3"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && !p.is_empty()
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the TLS proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let host = format!("tcp://127.0.0.1:{port}");
    let run = |cert_path: Option<&Path>| {
        let mut cmd = ws.cmd();
        cmd.env("DOCKER_HOST", &host)
            .env_remove("DOCKER_TLS")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        if let Some(p) = cert_path {
            cmd.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", p);
        }
        cmd.args(["stack", "build", "mini"]).output().unwrap()
    };

    // With the farm's CA and a client certificate it signed: the engine answers.
    let o = run(Some(&cert_path(d, "ours", "farm", "client")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("packager-stack-mini:build-"),
        "{}",
        stdout(&o)
    );

    // Plain HTTP to a TLS port, a client certificate of another CA, and an engine whose
    // certificate our CA did not sign: all refused.
    let o = run(None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("the Docker engine at `{host}` is unreachable")));
    let o = run(Some(&cert_path(d, "intruder", "farm", "intruder")));
    assert_eq!(
        o.status.code(),
        Some(1),
        "a stranger's certificate: {}",
        stderr(&o)
    );
    let o = run(Some(&cert_path(d, "wrong-ca", "stranger", "client")));
    assert_eq!(
        o.status.code(),
        Some(1),
        "an engine we cannot verify: {}",
        stderr(&o)
    );
}
