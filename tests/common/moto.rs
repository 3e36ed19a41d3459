//! A real S3-protocol server on loopback: moto's server mode (`pip install 'moto[server]'`).
//! Without `moto_server` the tests that need it fail, loudly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake credentials every test uses (moto accepts any unless told to check them).
pub const ACCESS_KEY: &str = "testing-access-key";
pub const SECRET_KEY: &str = "testing-secret-key-do-not-print";

/// A running `moto_server`, killed on drop. A watchdog process also kills it when the test
/// process exits (for servers kept in a `static`, which are never dropped).
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
    watchdog: Option<Child>,
}

impl Moto {
    /// Starts a server that accepts any credentials.
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// Starts a server with extra environment (`INITIAL_NO_AUTH_ACTION_COUNT=0` makes it
    /// check credentials against its IAM).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        Self::spawn(Command::new("moto_server"), env)
    }

    /// Starts moto's server with the checks S3 makes of an upload's body and moto 5.2.1 does
    /// not (tests/common/moto_verify.py): a PutObject or UploadPart whose `Content-MD5` or
    /// `x-amz-checksum-sha256` does not match the bytes received gets 400 BadDigest.
    pub fn start_verifying() -> Moto {
        let mut cmd = Command::new(moto_python());
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/moto_verify.py"
        ));
        Self::spawn(cmd, &[])
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "these tests need moto's S3 server: {cmd:?} cannot be started ({e}); install it with: pip install 'moto[server]' (scripts/test does)"
            )
        });
        let watchdog = Command::new("sh")
            .args([
                "-c",
                "while kill -0 \"$1\" 2>/dev/null && kill -0 \"$2\" 2>/dev/null; do sleep 0.5; done; kill \"$2\" 2>/dev/null",
                "watchdog",
                &std::process::id().to_string(),
                &child.id().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            watchdog,
        };
        moto.wait_ready(port);
        moto
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto_server exited at start ({status}): is moto[server] installed?");
            }
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = c.write_all(
                    b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut buf = [0u8; 12];
                if c.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that points the packager binary (or the SDK) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// An SDK client for this server (call inside a tokio runtime).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket.
    /// How many multipart uploads of `bucket` are pending (started, neither completed nor
    /// aborted).
    pub async fn pending_uploads(&self, bucket: &str) -> usize {
        self.client()
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    }

    pub async fn bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }
}

/// The Python that runs `moto_server` (its script's `#!` line): the one moto is installed in.
fn moto_python() -> std::path::PathBuf {
    let script = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "these tests need moto's S3 server: `moto_server` is not on PATH; install it with: pip install 'moto[server]' (scripts/test does)"
            )
        });
    let text = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let interpreter = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            // `#!/usr/bin/env python3`: the word after env.
            if first.ends_with("/env") {
                words.next()
            } else {
                Some(first)
            }
        })
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{} has no #! line naming its Python", script.display()));
    interpreter.into()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = &mut self.watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Sets the process environment so `S3Store::open` finds moto's endpoint and fake
/// credentials. Every test of a binary uses the same values, so concurrent tests agree.
pub fn set_env(moto: &Moto) {
    for (k, v) in moto.env() {
        // SAFETY: tests set the same values before any store is opened; nothing else
        // changes these variables.
        unsafe { std::env::set_var(k, v) };
    }
}

/// An artifact of `data` written under `dir`, as the stores publish it (stack `mini`, a little
/// provenance).
pub fn artifact(dir: &std::path::Path, name: &str, data: &[u8]) -> packager::publish::Upload {
    let sha256 = super::sha256_hex(data);
    let path = dir.join(format!("{sha256}-{name}"));
    std::fs::write(&path, data).unwrap();
    packager::publish::Upload {
        path,
        name: name.into(),
        stack: "mini".into(),
        sha256,
        size: data.len() as u64,
        metadata: std::collections::BTreeMap::from([
            ("recipe-digest".to_string(), "sha256:abc".to_string()),
            ("packager-version".to_string(), "0.1.0".to_string()),
        ]),
    }
}
