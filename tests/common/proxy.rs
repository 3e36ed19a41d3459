//! A fault-injecting HTTP proxy on loopback, in front of moto: the S3 store talks to it as it
//! would to a production endpoint, and each test tells it which requests to answer itself (a
//! status and body), to hold for a while or until the test opens a [`Gate`], to cut mid-body, or
//! to forward with one byte of the body changed. Everything else is forwarded to moto unchanged. One request per connection: each answer carries `Connection: close`.
//!
//! Not a mock inside the process: the store's real aws-sdk-s3 client speaks HTTP over TCP to
//! it, and moto behind it is a real S3-protocol server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A gate a held request waits at until the test opens it (or 60 s pass: a failing test never
/// hangs).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets every request held at this gate through.
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.0;
        let _ = changed
            .wait_timeout_while(open.lock().unwrap(), Duration::from_secs(60), |o| !*o)
            .unwrap();
    }
}

/// The S3 operation a request is, from its method and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    PutObject,
    UploadPart,
    CreateMultipartUpload,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    Head,
    Get,
    Other,
}

impl Op {
    fn of(method: &str, query: &str) -> Op {
        let has = |k: &str| {
            query
                .split('&')
                .any(|p| p == k || p.starts_with(&format!("{k}=")))
        };
        match method {
            "PUT" if has("partNumber") && has("uploadId") => Op::UploadPart,
            "PUT" if query.is_empty() || !has("acl") => Op::PutObject,
            "POST" if has("uploads") => Op::CreateMultipartUpload,
            "POST" if has("uploadId") => Op::CompleteMultipartUpload,
            "DELETE" if has("uploadId") => Op::AbortMultipartUpload,
            "HEAD" => Op::Head,
            "GET" => Op::Get,
            _ => Op::Other,
        }
    }
}

/// What to do with a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer this status and (XML) body without forwarding.
    Respond(u16, String),
    /// Wait, then forward.
    Delay(Duration),
    /// Forward the head and this many bytes of the body, then close both connections.
    Cut(usize),
    /// Hold until the gate is opened, then forward.
    Hold(Gate),
    /// Forward with one byte in the middle of the body's data changed, the headers (and so
    /// any checksum they carry) as they were: what a faulty network or middlebox does.
    Corrupt,
}

/// A fault: requests of `op` whose path contains `path` (and, when set, that carry the
/// header `header`) get `action`, `times` times (`usize::MAX`: always).
#[derive(Debug, Clone)]
pub struct Rule {
    pub op: Op,
    pub path: String,
    pub header: Option<String>,
    pub action: Action,
    pub times: usize,
}

impl Rule {
    pub fn new(op: Op, path: &str, action: Action) -> Rule {
        Rule {
            op,
            path: path.to_string(),
            header: None,
            action,
            times: 1,
        }
    }

    pub fn times(mut self, n: usize) -> Rule {
        self.times = n;
        self
    }

    pub fn with_header(mut self, name: &str) -> Rule {
        self.header = Some(name.to_ascii_lowercase());
        self
    }
}

/// One request the proxy saw: its operation, path and query, the headers' names, and whether a
/// fault was applied.
#[derive(Debug, Clone)]
pub struct Seen {
    pub op: Op,
    pub path: String,
    pub headers: Vec<String>,
    pub faulted: bool,
}

/// A running proxy (its threads end with the test process).
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http upstream")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (rules.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, up) = (r.clone(), s.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &r, &s);
                });
            }
        });
        Proxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            rules,
            seen,
        }
    }

    /// Adds a fault.
    pub fn add(&self, rule: Rule) {
        self.rules.lock().unwrap().push(rule);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests of `op` on a path containing `path` were seen.
    pub fn count(&self, op: Op, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.op == op && s.path.contains(path))
            .count()
    }

    /// Waits (up to 30 s) until `count(op, path)` reaches `n`.
    pub fn wait_for(&self, op: Op, path: &str, n: usize) {
        for _ in 0..3000 {
            if self.count(op, path) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the proxy never saw {n} {op:?} on {path}: {:?}",
            self.seen()
        );
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    // The request head.
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (_, query) = target.split_once('?').unwrap_or((&target, ""));
    let op = Op::of(&method, query);
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }

    // The first rule that matches, used up.
    let action = {
        let mut rules = rules.lock().unwrap();
        let found = rules.iter_mut().find(|r| {
            r.times > 0
                && r.op == op
                && target.contains(&r.path)
                && r.header.as_ref().is_none_or(|h| header(h).is_some())
        });
        found.map(|r| {
            if r.times != usize::MAX {
                r.times -= 1;
            }
            r.action.clone()
        })
    };
    seen.lock().unwrap().push(Seen {
        op,
        path: target.clone(),
        headers: headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect(),
        faulted: action.is_some(),
    });

    // The body, whole (S3 requests are sent with a length).
    let mut body = read_body(&mut reader, chunked, length)?;

    match action {
        Some(Action::Respond(status, xml)) => {
            let reason = match status {
                400 => "Bad Request",
                409 => "Conflict",
                412 => "Precondition Failed",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Fault",
            };
            let answer = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            client.write_all(answer.as_bytes())?;
            client.flush()?;
            return Ok(());
        }
        Some(Action::Delay(d)) => {
            // Held; a client that gives up meanwhile (an interrupted publisher) is not
            // forwarded for.
            let until = std::time::Instant::now() + d;
            client.set_nonblocking(true)?;
            while std::time::Instant::now() < until {
                let mut probe = [0u8; 1];
                match client.peek(&mut probe) {
                    Ok(0) => return Ok(()),
                    Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Ok(()),
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            client.set_nonblocking(false)?;
        }
        Some(Action::Hold(gate)) => gate.wait(),
        Some(Action::Corrupt) => corrupt(&mut body, chunked),
        Some(Action::Cut(n)) => {
            let mut up = TcpStream::connect(upstream)?;
            up.write_all(head(&method, &target, &headers).as_bytes())?;
            up.write_all(&body[..n.min(body.len())])?;
            let _ = up.shutdown(Shutdown::Both);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        None => {}
    }

    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head(&method, &target, &headers).as_bytes())?;
    up.write_all(&body)?;
    up.flush()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// The request head as forwarded: one request per connection, no `Expect`.
fn head(method: &str, target: &str, headers: &[(String, String)]) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("expect") {
            continue;
        }
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    text
}

/// Changes one byte in the middle of a body's data (for a chunked body: of its first chunk's
/// data, never the framing).
fn corrupt(body: &mut [u8], chunked: bool) {
    let (start, len) = if chunked {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let size_text = String::from_utf8_lossy(&body[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        (eol + 2, size)
    } else {
        (0, body.len())
    };
    if len > 0 {
        body[start + len / 2] ^= 0x5a;
    }
}

/// Reads a body of `length` bytes, or a chunked one (kept in its chunked form).
fn read_body(
    reader: &mut BufReader<TcpStream>,
    chunked: bool,
    length: usize,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if !chunked {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        body.extend_from_slice(line.as_bytes());
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        if size == 0 {
            return Ok(body);
        }
    }
}
