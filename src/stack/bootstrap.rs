//! Stack images bootstrapped from Debian: a root filesystem made on the host with mmdebstrap
//! (streamed as a tar) or debootstrap (into a temporary folder, then tarred), imported into the
//! engine as it is written.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{Bootstrap, DEFAULT_SOURCE_DATE_EPOCH, MIRROR_ENV, Progress, Role, Stack, StackError};
use crate::arch::Arch;
use crate::docker::{Docker, ImportOptions};
use crate::output_tail::OutputTail;

/// Lines of bootstrap output kept for error messages.
const TAIL_LINES: usize = 30;

/// PATH set in bootstrapped images.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Stack {
    /// Bootstraps the image for `role` and imports it, tagged and labelled as ours.
    pub(super) async fn bootstrap_image(
        &self,
        docker: &Docker,
        role: Role,
        bootstrap: &Bootstrap,
        progress: Progress<'_>,
    ) -> Result<crate::docker::ImageInfo, StackError> {
        let tool =
            BootstrapTool::find(bootstrap.tool).ok_or_else(|| StackError::NoBootstrapTool {
                stack: self.name.clone(),
                tool: bootstrap.tool,
            })?;
        let mirror = std::env::var(MIRROR_ENV)
            .ok()
            .filter(|m| !m.is_empty())
            .or_else(|| bootstrap.mirror.clone());
        let epoch = bootstrap
            .source_date_epoch
            .unwrap_or(DEFAULT_SOURCE_DATE_EPOCH);
        let reference = self.image_reference(role);
        progress(&format!(
            "stack {}: bootstrapping {role} image {reference} with {} ({} {}, {} extra packages)",
            self.name,
            tool.name(),
            bootstrap.suite,
            bootstrap.variant,
            bootstrap.packages.len()
        ));

        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let producer = RootfsProducer::start(
            tool,
            bootstrap,
            mirror.as_deref(),
            epoch,
            self.arch,
            &self.name,
            lines_tx.clone(),
        )
        .await?;
        let exit = producer.exit.clone();

        let mut changes = vec![
            format!("ENV PATH={IMAGE_PATH}"),
            "ENV LANG=C.UTF-8".to_owned(),
            r#"CMD ["/bin/bash"]"#.to_owned(),
        ];
        changes.extend(
            self.labels(role)
                .iter()
                .map(|(k, v)| format!("LABEL {k}={v}")),
        );
        let options = ImportOptions {
            repo: self.repository(),
            tag: self.tag(role),
            changes,
            platform: Some(self.arch),
            message: Some(format!(
                "packager stack {} ({role}), {} {}",
                self.name, bootstrap.suite, bootstrap.variant
            )),
        };
        let import_tx = lines_tx.clone();
        drop(lines_tx);
        let mut on_import = move |line: &str| {
            let _ = import_tx.send(format!("import: {line}"));
        };
        let import = docker.import_rootfs(producer.stream, &options, &mut on_import);
        tokio::pin!(import);

        let mut tail = OutputTail::new(TAIL_LINES);
        let mut record = |line: String, progress: &mut (dyn FnMut(&str) + Send)| {
            progress(&line);
            tail.push(&line);
        };
        let result = loop {
            tokio::select! {
                result = &mut import => break result,
                Some(line) = lines_rx.recv() => record(line, progress),
            }
        };
        // The stderr reader may still hold a few lines.
        if let Some(stderr_task) = producer.stderr_task {
            let _ = stderr_task.await;
        }
        while let Ok(line) = lines_rx.try_recv() {
            record(line, progress);
        }
        let status = *exit.lock().unwrap_or_else(|e| e.into_inner());
        match (result, status) {
            (_, Some(status)) if !status.success() => Err(StackError::Bootstrap {
                stack: self.name.clone(),
                tool: tool.name().to_owned(),
                status: status.to_string(),
                tail: tail.into_vec(),
            }),
            (Err(source), _) => Err(StackError::Docker {
                stack: self.name.clone(),
                role,
                source: Box::new(source),
            }),
            (Ok(info), _) => Ok(info),
        }
    }
}

/// The host tool that makes Debian root filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapTool {
    /// mmdebstrap: streams a tar, works unprivileged with user namespaces. Preferred.
    Mmdebstrap,
    /// debootstrap into a temporary folder (root only), then GNU tar.
    Debootstrap,
}

impl BootstrapTool {
    /// The program name, looked up on `PATH` (and in `/usr/sbin` and `/sbin`).
    pub fn name(self) -> &'static str {
        match self {
            BootstrapTool::Mmdebstrap => "mmdebstrap",
            BootstrapTool::Debootstrap => "debootstrap",
        }
    }

    /// `wanted` if installed, else mmdebstrap if installed, else debootstrap if installed.
    fn find(wanted: Option<BootstrapTool>) -> Option<BootstrapTool> {
        match wanted {
            Some(tool) => find_in_path(tool.name()).map(|_| tool),
            None => [BootstrapTool::Mmdebstrap, BootstrapTool::Debootstrap]
                .into_iter()
                .find(|tool| find_in_path(tool.name()).is_some()),
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The host's variables a bootstrap tool gets, when set: `PATH` (the tools run dpkg, apt,
/// chroot, wget and tar from it), `TMPDIR` (where mmdebstrap works), and the proxy variables,
/// which apt (under mmdebstrap) and wget (under debootstrap) read to reach a mirror from a
/// host behind a proxy. Nothing else of the host's reaches them (no `AWS_*`, no `HOME`).
pub const HOST_ENV: [&str; 9] = [
    "PATH",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// A host tool of the bootstrap (`program`, found like [`BootstrapTool::find`] does) in a clean
/// environment: [`HOST_ENV`], `LANG=C.UTF-8` and `SOURCE_DATE_EPOCH=epoch`.
fn host_tool(program: &str, epoch: u64) -> tokio::process::Command {
    let mut command =
        tokio::process::Command::new(find_in_path(program).unwrap_or_else(|| program.into()));
    command.env_clear();
    for name in HOST_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("LANG", "C.UTF-8")
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    command
}

/// mmdebstrap arguments writing a tar of the root filesystem to stdout.
fn mmdebstrap_args(bootstrap: &Bootstrap, mirror: Option<&str>, arch: Arch) -> Vec<String> {
    let mut args = vec![
        // Debian's architecture names are ours.
        format!("--architectures={arch}"),
        format!("--variant={}", bootstrap.variant),
        format!("--components={}", bootstrap.components.join(",")),
        "--format=tar".to_owned(),
        // Small images: no translations, no docs/man/locales (copyright files are kept).
        "--aptopt=Acquire::Languages \"none\"".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/man/*".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/info/*".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".to_owned(),
        "--dpkgopt=path-include=/usr/share/locale/locale.alias".to_owned(),
        "--dpkgopt=path-exclude=/usr/share/doc/*".to_owned(),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright".to_owned(),
        // The engine provides these; the host's copies would make the output host-dependent.
        r#"--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname""#.to_owned(),
    ];
    if !bootstrap.packages.is_empty() {
        args.push(format!("--include={}", bootstrap.packages.join(",")));
    }
    args.push("--".to_owned());
    args.push(bootstrap.suite.clone());
    args.push("-".to_owned());
    args.extend(mirror.map(str::to_owned));
    args
}

/// debootstrap arguments bootstrapping into `target`.
fn debootstrap_args(
    bootstrap: &Bootstrap,
    mirror: Option<&str>,
    target: &Path,
    arch: Arch,
) -> Vec<String> {
    let mut args = vec![
        format!("--arch={arch}"),
        format!("--variant={}", bootstrap.variant),
        format!("--components={}", bootstrap.components.join(",")),
    ];
    if !bootstrap.packages.is_empty() {
        args.push(format!("--include={}", bootstrap.packages.join(",")));
    }
    args.push(bootstrap.suite.clone());
    args.push(target.to_string_lossy().into_owned());
    args.extend(mirror.map(str::to_owned));
    args
}

/// A running bootstrap whose stdout is a tar of the root filesystem.
struct RootfsProducer {
    stream: std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    /// Set when the tar writer exits.
    exit: Arc<Mutex<Option<ExitStatus>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl RootfsProducer {
    async fn start(
        tool: BootstrapTool,
        bootstrap: &Bootstrap,
        mirror: Option<&str>,
        epoch: u64,
        arch: Arch,
        stack: &str,
        lines: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<RootfsProducer, StackError> {
        let spawn_error = |tool: &str| {
            let tool = tool.to_owned();
            move |source| StackError::Spawn {
                stack: stack.to_owned(),
                tool,
                source,
            }
        };
        let exit = Arc::new(Mutex::new(None));
        let (mut command, keep_dir) = match tool {
            BootstrapTool::Mmdebstrap => {
                let mut command = host_tool("mmdebstrap", epoch);
                command.args(mmdebstrap_args(bootstrap, mirror, arch));
                (command, None)
            }
            BootstrapTool::Debootstrap => {
                // debootstrap writes a directory; bootstrap there, clean it, then tar it.
                let dir = tempfile::Builder::new()
                    .prefix("packager-rootfs-")
                    .tempdir()
                    .map_err(spawn_error("debootstrap"))?;
                let mut child = host_tool("debootstrap", epoch)
                    .args(debootstrap_args(bootstrap, mirror, dir.path(), arch))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(spawn_error("debootstrap"))?;
                let out = forward_lines(child.stdout.take(), lines.clone());
                let err = forward_lines(child.stderr.take(), lines.clone());
                let status = child.wait().await.map_err(spawn_error("debootstrap"))?;
                let _ = tokio::join!(out, err);
                if !status.success() {
                    *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    return Ok(RootfsProducer {
                        stream: Box::pin(futures_util::stream::once(async move {
                            Err(std::io::Error::other(format!(
                                "debootstrap failed ({status})"
                            )))
                        })),
                        exit,
                        stderr_task: None,
                    });
                }
                for junk in ["var/lib/apt/lists", "var/cache/apt/archives", "debootstrap"] {
                    let path = dir.path().join(junk);
                    if path.is_dir() {
                        let _ = std::fs::remove_dir_all(&path);
                    }
                }
                let _ = std::fs::create_dir_all(dir.path().join("var/lib/apt/lists/partial"));
                let mut command = host_tool("tar", epoch);
                command.args([
                    "--numeric-owner",
                    "--sort=name",
                    &format!("--mtime=@{epoch}"),
                    "--clamp-mtime",
                    "--xattrs",
                    "-C",
                ]);
                command.arg(dir.path()).args(["-c", "."]);
                (command, Some(dir))
            }
        };
        let tar_tool = if keep_dir.is_some() {
            "tar"
        } else {
            tool.name()
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error(tar_tool))?;
        let stderr_task = tokio::spawn(forward_lines(child.stderr.take(), lines));
        let stdout = child.stdout.take().expect("stdout is piped");
        let state = (stdout, Some(child), exit.clone(), keep_dir);
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let (stdout, child, exit, _dir) = &mut state;
            let child_ref = child.as_mut()?;
            let mut buf = vec![0u8; 256 * 1024];
            match stdout.read(&mut buf).await {
                Ok(0) => {
                    let status = child_ref.wait().await;
                    *child = None;
                    match status {
                        Ok(status) => {
                            *exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                            if status.success() {
                                None
                            } else {
                                Some((
                                    Err(std::io::Error::other(format!(
                                        "the root filesystem writer failed ({status})"
                                    ))),
                                    state,
                                ))
                            }
                        }
                        Err(e) => Some((Err(e), state)),
                    }
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), state))
                }
                Err(e) => {
                    *child = None;
                    Some((Err(e), state))
                }
            }
        });
        Ok(RootfsProducer {
            stream: Box::pin(stream),
            exit,
            stderr_task: Some(stderr_task),
        })
    }
}

async fn forward_lines<R>(reader: Option<R>, lines: tokio::sync::mpsc::UnboundedSender<String>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let Some(reader) = reader else { return };
    let mut reader = BufReader::new(reader).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        let _ = lines.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmdebstrap_arguments() {
        let bootstrap = Bootstrap {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            packages: vec!["gcc".into(), "make".into()],
            components: vec!["main".into()],
            mirror: None,
            source_date_epoch: None,
            tool: None,
        };
        let args = mmdebstrap_args(&bootstrap, None, Arch::Arm64);
        assert_eq!(args[0], "--architectures=arm64");
        assert!(args.contains(&"--include=gcc,make".to_owned()));
        assert!(args.contains(&"--variant=minbase".to_owned()));
        assert_eq!(&args[args.len() - 3..], ["--", "bookworm", "-"]);
        let args = mmdebstrap_args(&bootstrap, Some("file:///srv/debian"), Arch::Amd64);
        assert_eq!(args.last().unwrap(), "file:///srv/debian");
    }
}
