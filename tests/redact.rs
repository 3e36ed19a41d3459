//! Secrets never reach the output, even when what is printed holds them: an S3-compatible
//! store that echoes the session token and secret in its error message (as a misconfigured
//! proxy or a chatty server may). Without `scrub` (src/publish/s3/failure.rs) this test prints
//! them. No S3 server is needed: a loopback listener answers every request.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use common::{Workspace, stderr, stdout};

const TOKEN: &str = "session-token-that-must-not-be-printed";
const SECRET: &str = "secret-key-that-must-not-be-printed";

/// A loopback "store" that answers every request with a 403 whose message quotes the request's
/// security token and secret (which a store could only know because the test tells it).
fn echoing_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let head = line.starts_with("HEAD ");
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied for token {TOKEN} (secret {SECRET})</Message><RequestId>1</RequestId></Error>"
                    );
                    let reply = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{}",
                        body.len(),
                        if head { "" } else { body.as_str() }
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    base
}

#[test]
fn a_store_that_echoes_the_credentials_does_not_get_them_printed() {
    let endpoint = echoing_store();
    let ws = Workspace::new();
    ws.write("demo/1.0.0.toml", "[source]\nurl = \"http://127.0.0.1:1/x.tar.gz\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n");
    let mut cmd = ws.cmd();
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["inventory", "demo", "--store", "s3://bucket/p"])
        .output()
        .unwrap();
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(
        all.contains("Access Denied for token"),
        "the store's message is shown: {all}"
    );
    assert!(
        !all.contains(TOKEN) && !all.contains(SECRET),
        "a secret in: {all}"
    );
}
