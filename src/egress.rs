//! The egress proxy of networked builds: the only way out of a build container.
//!
//! A build whose recipe says `network = true` or `network = ["host", …]` still runs in a
//! container without any network interface but loopback (network mode `none`): no route to
//! the host, to other builds, to the cloud metadata service or to any private range. packager
//! opens a listening socket *inside that container's own network namespace* (at
//! [`PROXY_ADDR`], from the host: [`listen_in`] joins the namespace on a thread of its own),
//! and serves it from the host as an HTTP proxy ([`Egress`]), announced to the build through
//! `HTTP_PROXY`/`HTTPS_PROXY` ([`proxy_env`]):
//!
//! - `CONNECT host:port` (for `https://`) and absolute-URI requests (`GET http://host/…`);
//! - the host must pass the recipe's list ([`Network::allows`]);
//! - the proxy resolves the name itself and checks **every** address it resolves to
//!   ([`refusal`]): loopback, link-local (169.254.0.0/16, the metadata service; fe80::/10),
//!   private (10/8, 172.16/12, 192.168/16, fc00::/7), CGNAT (100.64/10), unspecified,
//!   multicast, reserved, the host's own addresses, and those embedded in IPv6 (mapped,
//!   NAT64, 6to4) are refused; it then connects to an address it checked, never resolving
//!   again (no DNS rebinding). An IP address in the request is checked the same way;
//! - each request is an [`Event`]: the build log gets one line per request (allowed or refused
//!   and why), the artifact's provenance the hosts reached ([`Egress::reached`]). A refused
//!   request is answered `403` with a body that says why.
//!
//! Joining a container's namespace needs what the engine's own machine gives root: packager
//! runs as root beside the engine (its socket is local). Elsewhere a networked build fails,
//! saying so.
//!
//! For tests only, the operator (never a recipe) can map a name the recipe lists to a port on
//! loopback ([`TestHost`], `--egress-test-host NAME:PORT`): the one way a build reaches
//! loopback, so that a test server can stand in for a real host.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::recipe::Network;

/// Where the proxy listens inside a build container's own network namespace.
pub const PROXY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3128);
/// [`PROXY_ADDR`] as a proxy URL.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// The most bytes of a request's head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long resolving a name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 128;

/// The environment that points a build's HTTP clients at the proxy (`NO_PROXY` empty: even
/// loopback names go through it, and are refused there).
pub fn proxy_env() -> Vec<(String, String)> {
    [
        ("HTTP_PROXY", PROXY_URL),
        ("HTTPS_PROXY", PROXY_URL),
        ("http_proxy", PROXY_URL),
        ("https_proxy", PROXY_URL),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// For tests: requests to `name:port` go to `127.0.0.1:port`, unchecked, when the recipe's
/// list admits `name`. Set by the operator (`--egress-test-host`), never by a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHost {
    /// The name, lower case.
    pub name: String,
    /// The port, the same on loopback.
    pub port: u16,
}

impl std::str::FromStr for TestHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` is not NAME:PORT (e.g. allowed.test:8080)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{port}` is not a port"))?;
        let pattern = crate::recipe::HostPattern::parse(name)?;
        if pattern.as_str().starts_with("*.") || pattern.as_str().parse::<IpAddr>().is_ok() {
            return Err(format!("`{name}` is not a host name"));
        }
        Ok(TestHost {
            name: pattern.as_str().to_string(),
            port,
        })
    }
}

/// What the proxy lets a build reach.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The recipe's `network`.
    pub network: Network,
    /// The operator's test hosts.
    pub test_hosts: Vec<TestHost>,
}

/// One request a build made through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `CONNECT`, `GET`, …
    pub method: String,
    /// `host:port` as asked for.
    pub target: String,
    /// The URL of a plain HTTP request (redacted); `None` for `CONNECT`.
    pub url: Option<String>,
    /// What the proxy did.
    pub outcome: Outcome,
}

/// What the proxy did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected to this address.
    Allowed(SocketAddr),
    /// Refused (403), for this reason.
    Refused(String),
    /// Allowed, but the host could not be resolved or reached (502).
    Failed(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.url {
            Some(url) => write!(f, "{} {url}", self.method)?,
            None => write!(f, "{} {}", self.method, self.target)?,
        }
        match &self.outcome {
            Outcome::Allowed(addr) => write!(f, ": allowed, to {addr}"),
            Outcome::Refused(why) => write!(f, ": refused, {why}"),
            Outcome::Failed(why) => write!(f, ": failed, {why}"),
        }
    }
}

/// Why the proxy never connects to `ip`, if it does not: the address ranges that are not the
/// public internet. The host's own addresses are refused by [`is_own_address`].
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified address (0.0.0.0/8)",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address (169.254.0.0/16, the cloud metadata service)",
        (10, _, _) => "a private address (10.0.0.0/8)",
        (172, 16..=31, _) => "a private address (172.16.0.0/12)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (100, 64..=127, _) => "a shared (CGNAT) address (100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address (240.0.0.0/4)",
        _ => return None,
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return refusal_v4(v4);
    }
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        "an unspecified address (::)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "a link-local address (fe80::/10)"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "a site-local address (fec0::/10)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "a unique local (private) address (fc00::/7)"
    } else if s[0] & 0xff00 == 0xff00 {
        "a multicast address"
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d (IPv4-compatible, deprecated) and the rest of ::/96.
        "a reserved address (::/96)"
    } else {
        return None;
    })
}

/// The IPv4 address inside an IPv6 one that stands for it: IPv4-mapped (`::ffff:a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(last())
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

/// Whether `ip` is an address of this machine (what a socket can be bound to here): the host
/// must not be reached on a public address of its own either.
pub fn is_own_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Why `ip` must not be connected to, if so.
fn check_address(ip: IpAddr) -> Result<(), String> {
    check_address_with(ip, is_own_address)
}

/// [`check_address`], with `is_own` telling the host's addresses.
fn check_address_with(ip: IpAddr, is_own: fn(IpAddr) -> bool) -> Result<(), String> {
    if let Some(why) = refusal(ip) {
        return Err(format!("{ip} is {why}"));
    }
    if is_own(ip) {
        return Err(format!("{ip} is an address of the build's host"));
    }
    Ok(())
}

/// What went wrong starting the proxy of a build.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The container's network namespace could not be joined or listened in.
    #[error(
        "cannot open the egress proxy inside the network namespace of process {pid} (the build container)"
    )]
    Listen {
        /// The container's main process on the host.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl EgressError {
    /// What the user can do.
    pub fn hint(&self) -> Option<String> {
        Some("a build with `network` gets its egress proxy inside its container: run packager as root on the machine of the Docker engine (a local socket), or build without network (`network = false`)".into())
    }
}

/// A listening socket at [`PROXY_ADDR`] in the network namespace of process `pid` (a
/// container's main process): a thread joins that namespace, opens the socket and ends, so the
/// socket lives there while this process stays where it is.
pub fn listen_in(pid: u32) -> Result<std::net::TcpListener, EgressError> {
    let err = |source| EgressError::Listen { pid, source };
    let joined = std::thread::Builder::new()
        .name("packager-egress-netns".into())
        .spawn(move || -> std::io::Result<std::net::TcpListener> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let listener = std::net::TcpListener::bind(PROXY_ADDR)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(err)?
        .join()
        .expect("the namespace thread does not panic");
    joined.map_err(err)
}

/// What the proxy saw: every event, and how many the log has.
#[derive(Debug, Default)]
struct Record {
    events: Vec<Event>,
    logged: usize,
}

/// A running proxy; dropping it stops it and every connection it serves.
#[derive(Debug)]
pub struct Egress {
    task: tokio::task::JoinHandle<()>,
    record: Arc<Mutex<Record>>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Egress {
    /// Serves `listener` (from [`listen_in`], or any listening socket) with `policy`;
    /// `on_event` hears of each request as it is decided (the build's reporter).
    pub fn serve(
        listener: std::net::TcpListener,
        policy: Policy,
        on_event: Box<dyn Fn(&Event) + Send + Sync>,
    ) -> std::io::Result<Egress> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = Arc::new(Shared {
            policy,
            record: record.clone(),
            on_event,
        });
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    // Reap finished connections while waiting.
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                };
                let Ok((client, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    shared.handle(client).await;
                    drop(permit);
                });
            }
        });
        Ok(Egress { task, record })
    }

    /// The events not yet taken, in order: the build log's lines.
    pub fn take_new(&self) -> Vec<Event> {
        let mut r = self.record.lock().expect("not poisoned");
        let new = r.events[r.logged..].to_vec();
        r.logged = r.events.len();
        new
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.record.lock().expect("not poisoned").events.clone()
    }

    /// The `host:port`s the build reached (allowed requests), sorted, each once: the
    /// provenance's `network`.
    pub fn reached(&self) -> Vec<String> {
        let r = self.record.lock().expect("not poisoned");
        let set: BTreeSet<&str> = r
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Allowed(_)))
            .map(|e| e.target.as_str())
            .collect();
        set.into_iter().map(str::to_string).collect()
    }
}

struct Shared {
    policy: Policy,
    record: Arc<Mutex<Record>>,
    on_event: Box<dyn Fn(&Event) + Send + Sync>,
}

/// A parsed request head.
struct Head {
    method: String,
    /// Lower case, without brackets or a trailing dot.
    host: String,
    port: u16,
    /// For a plain HTTP request: the URL, and the head to send upstream (origin-form).
    forward: Option<(String, Vec<u8>)>,
}

impl Shared {
    async fn handle(&self, mut client: TcpStream) {
        let mut buf = Vec::with_capacity(4096);
        let head_len =
            match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await {
                Ok(Ok(Some(n))) => n,
                Ok(Ok(None)) => {
                    let _ = respond(&mut client, 431, "the request head is too large").await;
                    return;
                }
                _ => return,
            };
        let head = match parse_head(&buf[..head_len]) {
            Ok(head) => head,
            Err(why) => {
                let _ = respond(&mut client, 400, &why).await;
                return;
            }
        };
        let rest = buf[head_len..].to_vec();
        let mut event = Event {
            method: head.method.clone(),
            target: target_of(&head.host, head.port),
            url: head
                .forward
                .as_ref()
                .map(|(u, _)| crate::redact::redact_url(u)),
            outcome: Outcome::Refused(String::new()),
        };
        let upstream = self.decide(&head.host, head.port).await;
        let mut upstream = match upstream {
            Ok(Ok((stream, addr))) => {
                event.outcome = Outcome::Allowed(addr);
                self.note(event);
                stream
            }
            Ok(Err(failed)) => {
                event.outcome = Outcome::Failed(failed.clone());
                let body = format!("packager egress proxy: {}: {failed}", event.target);
                self.note(event);
                let _ = respond(&mut client, 502, &body).await;
                return;
            }
            Err(refused) => {
                event.outcome = Outcome::Refused(refused.clone());
                let body = format!(
                    "packager egress proxy: {} {} refused: {refused}",
                    head.method, event.target
                );
                self.note(event);
                let _ = respond(&mut client, 403, &body).await;
                return;
            }
        };
        let sent = match &head.forward {
            None => {
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
            }
            Some((_, forward)) => upstream.write_all(forward).await,
        };
        if sent.is_err() || upstream.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    fn note(&self, event: Event) {
        (self.on_event)(&event);
        self.record.lock().expect("not poisoned").events.push(event);
    }

    /// `Err`: refused (why). `Ok(Err)`: allowed but not reached (why). `Ok(Ok)`: connected.
    async fn decide(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Result<(TcpStream, SocketAddr), String>, String> {
        if !self.policy.network.allows(host) {
            return Err(format!("{host} is not in the recipe's `network` list"));
        }
        if let Some(t) = self
            .policy
            .test_hosts
            .iter()
            .find(|t| t.name == host && t.port == port)
        {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), t.port);
            return Ok(connect(&[addr]).await);
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                    .await
                {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(e)) => return Ok(Err(format!("cannot resolve {host}: {e}"))),
                    Err(_) => return Ok(Err(format!("resolving {host} timed out"))),
                }
            }
        };
        if addrs.is_empty() {
            return Ok(Err(format!("{host} has no address")));
        }
        // Every address is checked, not only the one used: a name that also points inside is
        // refused whole.
        for addr in &addrs {
            check_address(addr.ip()).map_err(|why| match host.parse::<IpAddr>() {
                Ok(_) => why,
                Err(_) => format!("{host} resolves to {why}"),
            })?;
        }
        Ok(connect(&addrs).await)
    }
}

/// Connects to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, *addr)),
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr} timed out"),
        }
    }
    Err(last)
}

fn target_of(host: &str, port: u16) -> String {
    match host.parse::<Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

/// Reads until the end of the request head; its length, or `None` past [`MAX_HEAD`].
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Headers a proxy consumes or that would keep an upstream connection open.
const HOP_HEADERS: [&str; 4] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
];

fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("an incomplete request head".into()),
        Err(e) => return Err(format!("a malformed request: {e}")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    if method == "CONNECT" {
        let (host, port) = split_authority(target)
            .ok_or_else(|| format!("`CONNECT {target}` does not name host:port"))?;
        return Ok(Head {
            method,
            host,
            port,
            forward: None,
        });
    }
    let url = url::Url::parse(target).map_err(|_| {
        format!("`{method} {target}` is not a proxy request: send an absolute http:// URL, or CONNECT for https")
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "`{method} {target}`: only http:// is forwarded as a request; use CONNECT for https"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => normalise(d),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("`{target}` names no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for h in req.headers.iter() {
        if HOP_HEADERS
            .iter()
            .any(|hop| h.name.eq_ignore_ascii_case(hop))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Head {
        method,
        host,
        port,
        forward: Some((url.to_string(), out)),
    })
}

/// `host:port` (`[v6]:port` for IPv6) → (host, port).
fn split_authority(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok()?.to_string(),
        None => normalise(host),
    };
    (!host.is_empty()).then_some((host, port))
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

async fn respond(client: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = format!("{body}\n");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(text.as_bytes()).await?;
    client.shutdown().await?;
    // Closing with unread bytes (a request body, what a client sent after its CONNECT) would
    // reset the connection and could lose the answer: read what comes, briefly, first.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut left = MAX_HEAD;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::HostPattern;

    #[test]
    fn only_public_addresses_pass() {
        for (ip, says) in [
            ("169.254.169.254", "link-local"),
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique local"),
            ("ff02::1", "multicast"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("::127.0.0.1", "reserved"),
        ] {
            let why = refusal(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(why.contains(says), "{ip}: {why}");
        }
        for ip in [
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(refusal(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused() {
        assert!(is_own_address("127.0.0.1".parse().unwrap()));
        assert!(!is_own_address("192.0.2.1".parse().unwrap()));
        let e = check_address("127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        // A public address is refused too when it is one of this machine's.
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        assert_eq!(check_address_with(public, |_| false), Ok(()));
        let e = check_address_with(public, |ip| {
            ip == "93.184.215.14".parse::<IpAddr>().unwrap()
        })
        .unwrap_err();
        assert_eq!(e, "93.184.215.14 is an address of the build's host");
    }

    #[test]
    fn requests_are_parsed_into_host_and_port() {
        let h = parse_head(b"CONNECT Static.Example.ORG.:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (h.method.as_str(), h.host.as_str(), h.port),
            ("CONNECT", "static.example.org", 443)
        );
        let h = parse_head(b"CONNECT [::ffff:127.0.0.1]:80 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.host, "::ffff:127.0.0.1");
        let h = parse_head(
            b"GET http://a.example:8080/x?y=1 HTTP/1.1\r\nHost: a.example:8080\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!((h.host.as_str(), h.port), ("a.example", 8080));
        let (url, forward) = h.forward.unwrap();
        assert_eq!(url, "http://a.example:8080/x?y=1");
        let forward = String::from_utf8(forward).unwrap();
        assert!(forward.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{forward}");
        assert!(forward.contains("Host: a.example:8080\r\n"), "{forward}");
        assert!(
            !forward.to_lowercase().contains("proxy-connection"),
            "{forward}"
        );
        assert!(forward.ends_with("Connection: close\r\n\r\n"), "{forward}");
        let h = parse_head(b"GET http://[::ffff:a9fe:a9fe]/ HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            h.host.parse::<IpAddr>().unwrap(),
            "::ffff:169.254.169.254".parse::<IpAddr>().unwrap()
        );
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"GET https://a.example/ HTTP/1.1\r\n\r\n",
            b"CONNECT a.example HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn test_hosts_are_names_with_a_port() {
        let t: TestHost = "Allowed.Test:8080".parse().unwrap();
        assert_eq!(
            t,
            TestHost {
                name: "allowed.test".into(),
                port: 8080
            }
        );
        for bad in [
            "allowed.test",
            "allowed.test:0",
            "*.test:80",
            "127.0.0.1:80",
            "http://x:80",
        ] {
            assert!(bad.parse::<TestHost>().is_err(), "{bad}");
        }
    }

    /// A proxy on host loopback with `network`, and one loopback server mapped as
    /// `allowed.test`; returns the proxy's address, the server's port and the proxy.
    async fn proxy(network: Network) -> (SocketAddr, u16, Egress) {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    let first = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let body = format!("served {first}");
                    let _ = c
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let policy = Policy {
            network,
            test_hosts: vec![TestHost {
                name: "allowed.test".into(),
                port,
            }],
        };
        (
            addr,
            port,
            Egress::serve(listener, policy, Box::new(|_| {})).unwrap(),
        )
    }

    async fn ask(proxy: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_proxy_forwards_allowed_hosts_and_refuses_the_rest() {
        let list = Network::Hosts(vec![
            HostPattern::parse("allowed.test").unwrap(),
            HostPattern::parse("localhost").unwrap(),
            HostPattern::parse("169.254.169.254").unwrap(),
        ]);
        let (proxy, port, egress) = proxy(list).await;
        let ok = ask(
            proxy,
            &format!("GET http://allowed.test:{port}/hello HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("served GET /hello HTTP/1.1"),
            "{ok}"
        );
        let tunnel = ask(
            proxy,
            &format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\nGET /tunnelled HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(
            tunnel.starts_with("HTTP/1.1 200 Connection established")
                && tunnel.ends_with("served GET /tunnelled HTTP/1.1"),
            "{tunnel}"
        );
        // Listed, but resolving to loopback (the same server), or link-local: refused.
        for (request, why) in [
            (
                format!("GET http://localhost:{port}/ HTTP/1.1\r\n\r\n"),
                "localhost resolves to 127.0.0.1 is a loopback address",
            ),
            (
                format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n"),
                "loopback",
            ),
            (
                "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".to_string(),
                "169.254.169.254 is a link-local address",
            ),
            // Not listed: refused before anything is resolved.
            (
                format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"),
                "127.0.0.1 is not in the recipe's `network` list",
            ),
            (
                "CONNECT other.test:443 HTTP/1.1\r\n\r\n".to_string(),
                "other.test is not in the recipe's `network` list",
            ),
        ] {
            let answer = ask(proxy, &request).await;
            assert!(
                answer.starts_with("HTTP/1.1 403 Forbidden") && answer.contains(why),
                "{request}: {answer}"
            );
        }
        let events = egress.events();
        assert_eq!(events.len(), 7);
        assert!(matches!(events[0].outcome, Outcome::Allowed(a) if a.port() == port));
        assert_eq!(
            events[0].url.as_deref(),
            Some(format!("http://allowed.test:{port}/hello").as_str())
        );
        assert_eq!(egress.reached(), [format!("allowed.test:{port}")]);
        assert_eq!(egress.take_new().len(), 7);
        assert!(egress.take_new().is_empty());
        let line = events[4].to_string();
        assert!(
            line.starts_with(
                "CONNECT 169.254.169.254:80: refused, 169.254.169.254 is a link-local"
            ),
            "{line}"
        );
    }

    #[tokio::test]
    async fn any_host_still_means_no_loopback_private_or_link_local() {
        let (proxy, port, egress) = proxy(Network::Any).await;
        for target in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
            "169.254.169.254:80".to_string(),
            "[::ffff:a9fe:a9fe]:80".to_string(),
            "10.0.0.1:80".to_string(),
        ] {
            let answer = ask(proxy, &format!("CONNECT {target} HTTP/1.1\r\n\r\n")).await;
            assert!(
                answer.starts_with("HTTP/1.1 403 Forbidden"),
                "{target}: {answer}"
            );
        }
        assert!(egress.reached().is_empty());
        // The operator's test host is reachable with `true` too, on its port only.
        let ok = ask(
            proxy,
            &format!("GET http://allowed.test:{port}/ HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }
}
