//! Shared test helpers: a loopback HTTP server with fault injection, recipe folders, and a way
//! to run the real binary.
#![allow(dead_code)]

pub mod engine;
pub mod fixture;
pub mod moto;
pub mod proxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

/// How the server answers one path.
#[derive(Clone)]
pub enum Route {
    /// 200 with these bytes.
    Body(Vec<u8>),
    /// 404.
    NotFound,
    /// The first `n` requests get a Content-Length of the whole body but only `cut_at` bytes
    /// before the connection is closed; later requests get the whole body.
    CutFirst {
        body: Vec<u8>,
        cut_at: usize,
        n: usize,
    },
    /// 200, sent in chunks of `chunk` bytes with `pause` between them.
    Slow {
        body: Vec<u8>,
        chunk: usize,
        pause: Duration,
    },
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    hits: HashMap<String, usize>,
}

/// A loopback HTTP/1.1 server run on its own threads; it counts requests per path.
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || handle(conn, st));
            }
        });
        Server { base, state, stop }
    }

    /// Serves `route` at `path` (which starts with `/`); returns the full URL.
    pub fn route(&self, path: &str, route: Route) -> String {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), route);
        format!("{}{path}", self.base)
    }

    /// How many requests `path` got.
    pub fn hits(&self, path: &str) -> usize {
        *self.state.lock().unwrap().hits.get(path).unwrap_or(&0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

fn handle(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            close |= header.eq_ignore_ascii_case("connection: close\r\n");
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (route, hit) = {
            let mut s = state.lock().unwrap();
            let hit = {
                let h = s.hits.entry(path.clone()).or_insert(0);
                *h += 1;
                *h
            };
            (s.routes.get(&path).cloned(), hit)
        };
        let head = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
        };
        match route {
            None | Some(Route::NotFound) => {
                let _ =
                    conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found");
            }
            Some(Route::Body(body)) => {
                let _ = conn.write_all(head(body.len()).as_bytes());
                let _ = conn.write_all(&body);
            }
            Some(Route::CutFirst { body, cut_at, n }) => {
                let _ = conn.write_all(head(body.len()).as_bytes());
                if hit <= n {
                    let _ = conn.write_all(&body[..cut_at]);
                    let _ = conn.flush();
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    return;
                }
                let _ = conn.write_all(&body);
            }
            Some(Route::Slow { body, chunk, pause }) => {
                let _ = conn.write_all(head(body.len()).as_bytes());
                for piece in body.chunks(chunk) {
                    if conn.write_all(piece).is_err() {
                        return;
                    }
                    let _ = conn.flush();
                    std::thread::sleep(pause);
                }
            }
        }
        let _ = conn.flush();
        if close {
            return;
        }
    }
}

/// Deterministic pseudo-random bytes (incompressible enough for a download).
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The sha256 a store's `.sha256` sidecar file gives.
pub fn sidecar_sha256(side: &std::path::Path) -> String {
    std::fs::read_to_string(side)
        .unwrap_or_else(|e| panic!("{}: {e}", side.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A temp folder with `recipes/` and `cache/` inside.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("recipes")).unwrap();
        Workspace { dir }
    }

    pub fn recipes(&self) -> PathBuf {
        self.dir.path().join("recipes")
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes `recipes/<rel>`.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.recipes().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Copies the `mini` test stack's manifest into the recipes (its image is not made).
    pub fn write_mini_manifest(&self) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/mini/stack.toml");
        self.write(
            "stacks/mini/stack.toml",
            &std::fs::read_to_string(manifest).unwrap(),
        );
    }

    /// A one-file recipe `recipes/<runtime>/<version>.toml` for a source at `url`.
    pub fn recipe(&self, runtime: &str, version: &str, url: &str, sha256: &str) -> PathBuf {
        self.write(
            &format!("{runtime}/{version}.toml"),
            &format!("[source]\nurl = \"{url}\"\nsha256 = \"{sha256}\"\n"),
        )
    }

    /// The packager binary, with this workspace's recipes and cache.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_packager"));
        c.env("PACKAGER_RECIPES", self.recipes())
            .env("PACKAGER_CACHE", self.cache())
            .env_remove("PACKAGER_MIRROR")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Every file under the cache's sources bucket (relative paths), sorted.
    pub fn cache_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(
            &self.cache().join("sources"),
            &self.cache().join("sources"),
            &mut out,
        );
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
