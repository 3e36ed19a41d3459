//! The connection: [`Docker`] itself, how it connects (`DOCKER_HOST`, the API version
//! negotiation, the ping), what the engine says about itself, and the small conversions every
//! request uses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Arch, DockerError};

/// Where we connect when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Per-request timeout (time until the engine answers with headers). Imports and builds can take
/// a long time before the engine answers, so this is generous; pings use [`PING_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long we wait for the engine to answer a ping before calling it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. `20.10.24`.
    pub version: String,
    /// API version the engine speaks (we negotiate down to it), e.g. `1.41`.
    pub api_version: String,
    /// The engine's (and so the containers') architecture.
    pub arch: Arch,
    /// The engine's OS, e.g. `linux`.
    pub os: String,
}

/// A connection to the Docker engine. Cheap to clone.
#[derive(Clone)]
pub struct Docker {
    /// The library's client; only this module's files use it.
    pub(super) client: bollard::Docker,
    /// The host it was made for, to make another client like it (see
    /// [`ContainerGuard`](super::ContainerGuard)'s `Drop`).
    pub(super) host: String,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).finish()
    }
}

/// How a Docker host is reached, as told by its scheme and, for `tcp://`, the Docker CLI's
/// TLS variables. Whoever reaches the engine's API is root on the engine's machine, so a
/// remote engine should be reached over `ssh://` or TLS with client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket on this machine (`unix:///path` or `/path`).
    Unix,
    /// `ssh://[user@]host[:port]`: the system's `ssh` (with the user's keys and
    /// `~/.ssh/config`) runs `docker system dial-stdio` on the host.
    Ssh,
    /// `https://`, or `tcp://` with `DOCKER_TLS_VERIFY` (or `DOCKER_TLS`) set: TLS, the engine's
    /// certificate checked against `ca.pem`, ours from `cert.pem` and `key.pem` in
    /// `DOCKER_CERT_PATH` (default `~/.docker`).
    Tls {
        /// The certificate authority the engine's certificate must be signed by.
        ca: PathBuf,
        /// Our client certificate.
        cert: PathBuf,
        /// Its key.
        key: PathBuf,
    },
    /// `tcp://` or `http://` without TLS: unauthenticated and unencrypted.
    PlainTcp,
    /// Any other scheme: left to the library to refuse.
    Other,
}

impl Transport {
    /// The transport for `host`, reading the environment through `env` (`DOCKER_TLS_VERIFY`,
    /// `DOCKER_TLS`, `DOCKER_CERT_PATH`, `HOME`).
    pub fn choose(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Transport {
        let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
        if host.starts_with("unix://") || host.starts_with('/') {
            Transport::Unix
        } else if host.starts_with("ssh://") {
            Transport::Ssh
        } else if host.starts_with("https://")
            || host.starts_with("tcp://") && (set("DOCKER_TLS_VERIFY") || set("DOCKER_TLS"))
        {
            let dir = env("DOCKER_CERT_PATH")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env("HOME").unwrap_or_default()).join(".docker"));
            Transport::Tls {
                ca: dir.join("ca.pem"),
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            }
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Transport::PlainTcp
        } else {
            Transport::Other
        }
    }
}

/// A client of `host` (see [`Transport`]) speaking API `version`. No request is sent yet.
pub(super) fn new_client(
    host: &str,
    version: &bollard::ClientVersion,
) -> Result<bollard::Docker, DockerError> {
    let timeout = REQUEST_TIMEOUT.as_secs();
    let connect = |e: bollard::errors::Error| match e {
        bollard::errors::Error::SocketNotFoundError(_) => DockerError::Unreachable {
            host: host.to_owned(),
            source: Some(e.into()),
        },
        e => DockerError::Connect {
            host: host.to_owned(),
            source: e.into(),
        },
    };
    let client = match Transport::choose(host, &|k| std::env::var(k).ok()) {
        Transport::Unix => bollard::Docker::connect_with_unix(host, timeout, version),
        Transport::Ssh => {
            // The library hands `user@host:port` to ssh as a host name: a port must come from
            // ~/.ssh/config instead.
            if let Some(port) = url::Url::parse(host).ok().and_then(|u| u.port()) {
                return Err(DockerError::SshPort {
                    host: host.to_owned(),
                    port,
                });
            }
            bollard::Docker::connect_with_ssh(host, timeout, version, None)
        }
        Transport::Tls { ca, cert, key } => {
            for path in [&ca, &cert, &key] {
                if !path.is_file() {
                    return Err(DockerError::TlsFile {
                        host: host.to_owned(),
                        path: path.clone(),
                    });
                }
            }
            let addr = host.replacen("https://", "tcp://", 1);
            bollard::Docker::connect_with_ssl(&addr, &key, &cert, &ca, timeout, version)
        }
        Transport::PlainTcp => bollard::Docker::connect_with_http(host, timeout, version),
        // Let the library report the scheme it doesn't support.
        Transport::Other => bollard::Docker::connect_with_host(host),
    }
    .map_err(connect)?;
    Ok(client.with_timeout(REQUEST_TIMEOUT))
}

/// Turns `[(k, v)]` into Docker's `k=v` filter values.
/// Turns `[(k, v)]` into Docker's `k=v` filter values (`(k, None)` matches any value).
pub(super) fn label_filters(labels: &[(&str, Option<&str>)]) -> HashMap<String, Vec<String>> {
    let values = labels
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => (*k).to_owned(),
        })
        .collect();
    HashMap::from([("label".to_owned(), values)])
}

/// Turns an environment into Docker's `KEY=value` list.
pub(super) fn env_list(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl Docker {
    /// Connects to `DOCKER_HOST` (or the default unix socket), negotiates the API version and
    /// pings the engine.
    pub async fn connect() -> Result<Docker, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self::connect_to(&host).await
    }

    /// Connects to `host` (`unix:///path`, `/path`, `ssh://user@host`, `tcp://host:port` with
    /// or without TLS, see [`Transport`]), negotiates the API version and pings the engine.
    pub async fn connect_to(host: &str) -> Result<Docker, DockerError> {
        let client = new_client(host, bollard::API_DEFAULT_VERSION)?;
        let unreachable = |source: Option<bollard::errors::Error>| DockerError::Unreachable {
            host: host.to_owned(),
            source: source.map(Into::into),
        };
        let client = tokio::time::timeout(PING_TIMEOUT, client.negotiate_version())
            .await
            .map_err(|_| unreachable(None))?
            .map_err(|e| unreachable(Some(e)))?;
        let docker = Docker {
            client,
            host: host.to_owned(),
        };
        docker.ping().await?;
        Ok(docker)
    }

    /// The host we are connected to, as given (`unix:///var/run/docker.sock`, `tcp://…`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks, before anything starts, that the engine can run containers of `arch`: its own
    /// architecture always; another one on an engine of this host when the kernel has a
    /// `binfmt_misc` handler for it with the fix-binary (`F`) flag, which containers need to
    /// find the emulator. A remote engine of another architecture is trusted: its first
    /// container tells.
    pub async fn check_runs(&self, arch: Arch) -> Result<(), DockerError> {
        let native = self.engine().await?.arch;
        if native == arch || !self.host.starts_with("unix://") && !self.host.starts_with('/') {
            return Ok(());
        }
        match binfmt_handler(arch) {
            Ok(()) => Ok(()),
            Err(reason) => Err(DockerError::CannotRun {
                arch,
                native,
                reason,
            }),
        }
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let unreachable = |source: Option<bollard::errors::Error>| DockerError::Unreachable {
            host: self.host.clone(),
            source: source.map(Into::into),
        };
        tokio::time::timeout(PING_TIMEOUT, self.client.ping())
            .await
            .map_err(|_| unreachable(None))?
            .map_err(|e| unreachable(Some(e)))?;
        Ok(())
    }

    /// The engine's version, API version, architecture and OS.
    pub async fn engine(&self) -> Result<EngineInfo, DockerError> {
        let v = self
            .client
            .version()
            .await
            .map_err(|e| DockerError::engine("query the engine version", e))?;
        let arch_name = v.arch.unwrap_or_default();
        let arch =
            Arch::parse(&arch_name).ok_or(DockerError::UnsupportedArch { arch: arch_name })?;
        Ok(EngineInfo {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            arch,
            os: v.os.unwrap_or_default(),
        })
    }

    /// The memory (bytes) and CPUs the engine's machine has, for the containers' default limits.
    pub async fn capacity(&self) -> Result<(u64, u64), DockerError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| DockerError::engine("query the engine's resources", e))?;
        let memory = info
            .mem_total
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0);
        let cpus = info.ncpu.and_then(|n| u64::try_from(n).ok()).unwrap_or(1);
        Ok((memory, cpus.max(1)))
    }
}

/// Whether this host's kernel hands binaries of `arch` to an emulator, in a way that works in
/// containers: a `binfmt_misc` handler that is enabled and has the fix-binary (`F`) flag.
fn binfmt_handler(arch: Arch) -> Result<(), String> {
    let name = match arch {
        Arch::Amd64 => "qemu-x86_64",
        Arch::Arm64 => "qemu-aarch64",
    };
    let dir = std::path::Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("status").exists() {
        return Err("binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc".into());
    }
    let entry = dir.join(name);
    let text = std::fs::read_to_string(&entry)
        .map_err(|_| format!("no {name} handler is registered in binfmt_misc"))?;
    if !text.lines().any(|l| l.trim() == "enabled") {
        return Err(format!("the {name} handler is disabled"));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    if !flags.contains('F') {
        return Err(format!(
            "the {name} handler lacks the fix-binary (F) flag (flags: {flags:?}), so containers cannot find the emulator"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_and_the_tls_variables_choose_the_transport() {
        let none = |_: &str| None;
        assert_eq!(
            Transport::choose("unix:///var/run/docker.sock", &none),
            Transport::Unix
        );
        assert_eq!(
            Transport::choose("/run/docker.sock", &none),
            Transport::Unix
        );
        assert_eq!(
            Transport::choose("ssh://builder@farm:2222", &none),
            Transport::Ssh
        );
        assert_eq!(
            Transport::choose("tcp://farm:2375", &none),
            Transport::PlainTcp
        );
        assert_eq!(
            Transport::choose("http://farm:2375", &none),
            Transport::PlainTcp
        );
        assert_eq!(
            Transport::choose("npipe:////./pipe/x", &none),
            Transport::Other
        );
        let tls = |dir: &str| Transport::Tls {
            ca: PathBuf::from(dir).join("ca.pem"),
            cert: PathBuf::from(dir).join("cert.pem"),
            key: PathBuf::from(dir).join("key.pem"),
        };
        // DOCKER_TLS_VERIFY (any non-empty value, as the Docker CLI reads it) or DOCKER_TLS
        // turn tcp:// into TLS, with the certificates of DOCKER_CERT_PATH, else ~/.docker.
        let verify = |k: &str| match k {
            "DOCKER_TLS_VERIFY" => Some("1".to_owned()),
            "DOCKER_CERT_PATH" => Some("/etc/farm-certs".to_owned()),
            _ => None,
        };
        assert_eq!(
            Transport::choose("tcp://farm:2376", &verify),
            tls("/etc/farm-certs")
        );
        let tls_only = |k: &str| match k {
            "DOCKER_TLS" => Some("1".to_owned()),
            "HOME" => Some("/home/me".to_owned()),
            _ => None,
        };
        assert_eq!(
            Transport::choose("tcp://farm:2376", &tls_only),
            tls("/home/me/.docker")
        );
        let home = |k: &str| (k == "HOME").then(|| "/home/me".to_owned());
        assert_eq!(
            Transport::choose("https://farm:2376", &home),
            tls("/home/me/.docker")
        );
        // An empty DOCKER_TLS_VERIFY is unset; the variables do not change a unix socket.
        let empty = |k: &str| (k == "DOCKER_TLS_VERIFY").then(String::new);
        assert_eq!(
            Transport::choose("tcp://farm:2375", &empty),
            Transport::PlainTcp
        );
        assert_eq!(
            Transport::choose("unix:///x.sock", &verify),
            Transport::Unix
        );
    }

    #[test]
    fn label_filters_format() {
        let filters =
            label_filters(&[("packager.stack", Some("mini")), ("packager.managed", None)]);
        assert_eq!(
            filters["label"],
            [
                "packager.stack=mini".to_owned(),
                "packager.managed".to_owned()
            ]
        );
    }
}
