//! What can go wrong talking to the engine: [`DockerError`] says what failed and where, and
//! carries the client library's error as its `source()`, wrapped in an [`EngineError`] so no
//! `bollard` type leaks out.
//!
//! The CLI prints an error's `Display`, then one `caused by:` line per source in the chain, so
//! no `Display` here repeats the text of its source: each cause is printed once.

use std::error::Error as _;

/// An error from the engine or its client library, only ever exposed as the `source()` of a
/// [`DockerError`]. Its text is the library's message without the text of the library's own
/// source (which follows it in the chain).
#[derive(Debug)]
pub struct EngineError(pub(super) bollard::errors::Error);

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Some of the library's errors print their source after their own words ("Error in the
        // hyper legacy client: client error (Connect)") and return that source as well; the
        // chain shows the source, so print only the words this level adds. The engine's own
        // messages are complete sentences: they are printed as they are.
        let text = self.0.to_string();
        let Some(source) = self.0.source().map(|s| s.to_string()) else {
            return f.write_str(&text);
        };
        match text.strip_suffix(source.as_str()) {
            Some(own) => {
                let own = own.trim_end_matches([':', ' ']);
                f.write_str(if own.is_empty() {
                    "the Docker client failed"
                } else {
                    own
                })
            }
            None => f.write_str(&text),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<bollard::errors::Error> for EngineError {
    fn from(error: bollard::errors::Error) -> Self {
        Self(error)
    }
}

impl EngineError {
    /// The HTTP status the engine answered with, if the engine answered at all.
    pub fn status(&self) -> Option<u16> {
        match &self.0 {
            bollard::errors::Error::DockerResponseServerError { status_code, .. } => {
                Some(*status_code)
            }
            _ => None,
        }
    }

    /// Whether the engine said "not found" (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the connection to the engine itself failed or broke (the daemon restarted or
    /// went away), rather than the engine answering an error: worth running again.
    pub fn is_connection_lost(&self) -> bool {
        use bollard::errors::Error as E;
        matches!(
            &self.0,
            E::IOError { .. }
                | E::HyperResponseError { .. }
                | E::HyperLegacyError { .. }
                | E::HttpClientError { .. }
                | E::RequestTimeoutError
                | E::SocketNotFoundError(_)
        )
    }

    /// Whether the client library refused the host string itself (a scheme it does not
    /// speak, a malformed URL), before trying to reach anything.
    fn rejects_host(&self) -> bool {
        use bollard::errors::Error as E;
        matches!(
            &self.0,
            E::UnsupportedURISchemeError { .. }
                | E::URLParseError { .. }
                | E::InvalidURIError { .. }
                | E::InvalidURIPartsError { .. }
        )
    }
}

/// What to say when the engine connection was lost.
const CONNECTION_LOST_HINT: &str = "the connection to the Docker engine was lost (did the daemon restart?); \
run the command again: the next run removes the containers this one left behind";

/// Everything that can go wrong talking to Docker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// `DOCKER_HOST` (or the given host) cannot be used to build a client.
    #[error("cannot use Docker host `{host}`")]
    Connect {
        /// The host we tried.
        host: String,
        /// The client library's error: a malformed URL, an unsupported scheme, bad TLS files.
        #[source]
        source: EngineError,
    },
    /// A TLS host's certificate or key file is missing.
    #[error("cannot use Docker host `{host}` over TLS: {} is missing", path.display())]
    TlsFile {
        /// The host.
        host: String,
        /// The missing `ca.pem`, `cert.pem` or `key.pem`.
        path: std::path::PathBuf,
    },
    /// An `ssh://` host with a port, which the ssh transport cannot pass on.
    #[error("cannot use Docker host `{host}`: an ssh:// host cannot name a port ({port})")]
    SshPort {
        /// The host.
        host: String,
        /// The port it named.
        port: u16,
    },
    /// The engine did not answer.
    #[error("the Docker engine at `{host}` is unreachable")]
    Unreachable {
        /// The host we tried.
        host: String,
        /// Why, if the client library said (a missing socket, a refused connection); `None`
        /// after a timeout.
        #[source]
        source: Option<EngineError>,
    },
    /// The engine reports an architecture we don't build for.
    #[error("the Docker engine runs on unsupported architecture `{arch}`")]
    UnsupportedArch {
        /// What the engine reported.
        arch: String,
    },
    /// The engine cannot run containers of an architecture.
    #[error("the engine ({native}) cannot run {arch} containers: {reason}")]
    CannotRun {
        /// The architecture asked for.
        arch: crate::arch::Arch,
        /// The engine's own.
        native: crate::arch::Arch,
        /// What is missing.
        reason: String,
    },
    /// A generic engine call failed.
    #[error("Docker failed to {action}")]
    Engine {
        /// What we were doing, e.g. "inspect image `foo`".
        action: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Pulling an image failed.
    #[error("cannot pull image `{image}`")]
    Pull {
        /// The image reference.
        image: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Importing a root filesystem tarball failed.
    #[error("cannot import image `{image}` from a root filesystem tarball")]
    Import {
        /// The tag we were creating.
        image: String,
        /// The engine's answer (or the failure of the tarball producer).
        #[source]
        source: EngineError,
    },
    /// A Dockerfile build failed.
    #[error("building image `{image}` failed: {message}\n{}", tail.join("\n"))]
    Build {
        /// The tag we were building.
        image: String,
        /// The engine's error message (the failing step's), as text: there is no source.
        message: String,
        /// The last lines of the build log.
        tail: Vec<String>,
    },
    /// An image we just created could not be found afterwards.
    #[error("image `{image}` is missing after it was created")]
    ImageVanished {
        /// The image reference.
        image: String,
    },
    /// Creating a container failed.
    #[error("cannot create a container from image `{image}`")]
    CreateContainer {
        /// The image.
        image: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// A container call (start, exec, upload, download, remove…) failed.
    #[error("Docker failed to {action} in container {container}")]
    Container {
        /// The container id.
        container: String,
        /// What we were doing, e.g. "upload to `/app`".
        action: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// A command run in a container exited non-zero (from [`ExecResult::check`]).
    ///
    /// [`ExecResult::check`]: super::ExecResult::check
    #[error("`{command}` exited with code {exit_code} in container {container}\n{}", tail.join("\n"))]
    ExecFailed {
        /// The container id.
        container: String,
        /// The command, for display.
        command: String,
        /// Its exit code.
        exit_code: i64,
        /// The last lines of its stdout and stderr, interleaved.
        tail: Vec<String>,
    },
    /// The engine never reported an exit code for an exec.
    #[error("`{command}` in container {container} ended without an exit code")]
    NoExitCode {
        /// The container id.
        container: String,
        /// The command, for display.
        command: String,
    },
}

impl DockerError {
    /// Something the user can do about this error, if there is anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            DockerError::Connect { .. } | DockerError::Unreachable { .. } => Some(
                "is the Docker engine running? Set DOCKER_HOST (e.g. unix:///var/run/docker.sock, \
                 ssh://user@host, or tcp://host:2376 with DOCKER_TLS_VERIFY=1) to point at it, \
                 and check that you may use its socket \
                 (`ls -l /var/run/docker.sock`, membership of the `docker` group)"
                    .to_owned(),
            ),
            DockerError::TlsFile { .. } => Some(
                "DOCKER_TLS_VERIFY (or an https:// host) asks for TLS: put the engine's CA and \
                 your client certificate and key in DOCKER_CERT_PATH (default ~/.docker) as \
                 ca.pem, cert.pem and key.pem"
                    .to_owned(),
            ),
            DockerError::SshPort { host, port } => Some(format!(
                "give the port in ~/.ssh/config (`Host NAME`, `HostName …`, `Port {port}`) and set \
                 DOCKER_HOST=ssh://NAME; {host} without the port uses ssh's own (22)"
            )),
            DockerError::CannotRun { arch, .. } => Some(format!(
                "install Debian's qemu-user-static and register its handler with the F flag \
                 (`mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-{}`), \
                 or build on a native {arch} engine: PACKAGER_DOCKER_HOST_{} (--engine-{arch})",
                match arch {
                    crate::arch::Arch::Amd64 => "x86_64",
                    crate::arch::Arch::Arm64 => "aarch64",
                },
                arch.as_str().to_uppercase()
            )),
            DockerError::UnsupportedArch { .. } => {
                Some("packager builds for amd64 and arm64 engines only".to_owned())
            }
            DockerError::Pull { image, .. } => Some(format!(
                "no image registry may be reachable from the engine; load `{image}` with \
                 `docker load`, or use a stack with a [bootstrap] section, which needs no registry"
            )),
            DockerError::Build { .. } => Some(
                "the Dockerfile build failed; the log tail above shows the failing step".to_owned(),
            ),
            DockerError::ExecFailed { .. } => {
                Some("the output tail above shows why the command failed".to_owned())
            }
            DockerError::Engine { source, .. } | DockerError::Container { source, .. }
                if source.is_connection_lost() =>
            {
                Some(CONNECTION_LOST_HINT.to_owned())
            }
            _ => None,
        }
    }

    /// Whether this error is the user's bad input rather than a failure of the engine or of
    /// the work: true only for a Docker host (`DOCKER_HOST`, or the host given to
    /// [`Docker::connect_to`]) that the client cannot even parse — a scheme it does not speak
    /// (`ftp://…`) or a malformed URL. An engine that is down, refuses the connection or
    /// answers an error is not a usage error, and neither is a failing build or command.
    /// Meant for choosing the exit code.
    ///
    /// [`Docker::connect_to`]: super::Docker::connect_to
    pub fn is_usage(&self) -> bool {
        matches!(self, DockerError::Connect { source, .. } if source.rejects_host())
            || matches!(
                self,
                DockerError::TlsFile { .. } | DockerError::SshPort { .. }
            )
    }

    /// [`DockerError::Engine`]: `action` failed outside any container.
    pub(super) fn engine(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        DockerError::Engine {
            action: action.into(),
            source: source.into(),
        }
    }

    /// [`DockerError::Container`]: `action` failed on container `container`.
    pub(super) fn container(
        container: &str,
        action: impl Into<String>,
        source: bollard::errors::Error,
    ) -> Self {
        DockerError::Container {
            container: container.to_owned(),
            action: action.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line the CLI would print for `e`: its text, then each source's.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut lines = vec![e.to_string()];
        let mut source = e.source();
        while let Some(s) = source {
            lines.push(s.to_string());
            source = s.source();
        }
        lines
    }

    #[test]
    fn a_library_error_that_prints_its_source_is_shown_once() {
        let e = DockerError::Connect {
            host: "tcp://[::1".to_owned(),
            source: bollard::errors::Error::from(url::ParseError::InvalidIpv6Address).into(),
        };
        let lines = chain(&e);
        assert_eq!(
            lines,
            [
                "cannot use Docker host `tcp://[::1`",
                "Unable to parse URL",
                "invalid IPv6 address",
            ]
        );
        assert!(e.is_usage());
        assert!(e.hint().unwrap().contains("DOCKER_HOST"));
    }

    #[test]
    fn the_engine_answer_is_printed_as_it_is() {
        let e = DockerError::container(
            "3f2a",
            "start",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "container is paused".to_owned(),
            },
        );
        assert_eq!(
            chain(&e),
            [
                "Docker failed to start in container 3f2a",
                "Docker responded with status code 409: container is paused",
            ]
        );
        assert!(!e.is_usage());
        assert_eq!(e.hint(), None);
    }

    #[test]
    fn only_a_host_the_client_cannot_parse_is_a_usage_error() {
        let scheme = DockerError::Connect {
            host: "ftp://x".to_owned(),
            source: bollard::errors::Error::UnsupportedURISchemeError {
                uri: "ftp://x".to_owned(),
            }
            .into(),
        };
        assert!(scheme.is_usage());
        let missing = DockerError::Unreachable {
            host: "unix:///nonexistent.sock".to_owned(),
            source: Some(
                bollard::errors::Error::SocketNotFoundError("/nonexistent.sock".to_owned()).into(),
            ),
        };
        assert!(!missing.is_usage());
        assert!(missing.hint().is_some());
    }

    #[test]
    fn a_lost_connection_has_the_rerun_hint() {
        let e = DockerError::engine(
            "list containers",
            bollard::errors::Error::RequestTimeoutError,
        );
        assert_eq!(e.hint().as_deref(), Some(CONNECTION_LOST_HINT));
    }
}
