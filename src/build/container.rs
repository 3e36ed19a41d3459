//! What build and test containers share: labels and environment, the log every command writes
//! to, running a phase's commands, streaming tar uploads, and removing containers of runs that
//! are gone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{
    BuildError, CONTAINER_ROLE_LABEL, OWNER_LABEL, RUN_LABEL, RUNTIME_LABEL, Required,
    Surroundings, VERSION_LABEL,
};
use crate::docker::{ContainerGuard, Docker, DockerError, ExecSpec, OutputStream};
use crate::package;
use crate::recipe::Recipe;
use crate::report::Reporter;

/// A per-build log file.
pub struct BuildLog {
    path: PathBuf,
    file: std::io::LineWriter<fs_err::File>,
}

impl BuildLog {
    /// Creates `dir/<name>.log`.
    pub fn create(dir: &Path, name: &str) -> Result<Self, BuildError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Io { path, source }
        };
        fs_err::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("{name}.log"));
        let file = fs_err::File::create(&path).map_err(io(&path))?;
        Ok(BuildLog {
            path,
            file: std::io::LineWriter::new(file),
        })
    }

    /// Opens an existing log to append to it.
    pub fn append(path: &Path) -> Result<Self, BuildError> {
        let file = fs_err::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| BuildError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            file: std::io::LineWriter::new(file),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line (write errors are remembered by the OS and surface at flush).
    pub fn line(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> Result<(), BuildError> {
        self.file.flush().map_err(|source| BuildError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Runs shell commands in a container, logging and reporting every line; returns the first
/// failing command with its exit code and output tail. With `surroundings`, each command runs
/// under their umask (the log shows the command as the recipe has it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_commands(
    container: &ContainerGuard,
    commands: &[String],
    working_dir: &str,
    user: Option<&str>,
    surroundings: Option<&Surroundings>,
    job: &str,
    log: &mut BuildLog,
    reporter: &dyn Reporter,
) -> Result<Option<(String, i64, Vec<String>)>, BuildError> {
    for command in commands {
        log.line(&format!("$ {command}"));
        reporter.output(job, &format!("$ {command}"));
        let script = surroundings.map_or_else(|| command.clone(), |s| s.script(command));
        let mut spec = ExecSpec::shell(script).working_dir(working_dir);
        spec.user = user.map(str::to_string);
        let result = container
            .exec(&spec, &mut |_stream: OutputStream, line: &str| {
                log.line(line);
                reporter.output(job, line);
            })
            .await?;
        if result.exit_code != 0 {
            log.line(&format!("# exit code {}", result.exit_code));
            log.flush()?;
            return Ok(Some((command.clone(), result.exit_code, result.tail)));
        }
    }
    log.flush()?;
    Ok(None)
}

/// The container environment of a build or test: nothing from the host, only this.
pub fn container_env(
    recipe: &Recipe,
    requires: &[Required],
    jobs: usize,
    source_date_epoch: u64,
) -> Vec<(String, String)> {
    // The runtime's own programs first, then those of what it is built against (each at its
    // own prefix), then the system's.
    let mut path = vec![format!("{}/bin", recipe.prefix)];
    for r in requires {
        let bin = format!("{}/bin", r.prefix);
        if !path.contains(&bin) {
            path.push(bin);
        }
    }
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env: BTreeMap<String, String> = [
        ("PATH", path.join(":")),
        ("HOME", crate::sandbox::HOME.into()),
        ("LANG", "C.UTF-8".into()),
        ("PREFIX", recipe.prefix.clone()),
        ("JOBS", jobs.to_string()),
        ("SOURCE_DATE_EPOCH", source_date_epoch.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(recipe.build.env.clone());
    env.into_iter().collect()
}

/// `host:pid` of this process, for the owner label.
pub fn owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Labels of a container of this run.
pub fn labels(recipe: &Recipe, run_id: &str, role: &str) -> BTreeMap<String, String> {
    [
        (RUNTIME_LABEL, recipe.runtime.to_string()),
        (VERSION_LABEL, recipe.version.to_string()),
        (RUN_LABEL, run_id.to_string()),
        (OWNER_LABEL, owner()),
        (CONTAINER_ROLE_LABEL, role.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Whether a container was kept for debugging (`--keep`, named [`crate::docker::KEPT_PREFIX`]…):
/// the user removes it, never a clean-up.
fn is_kept(c: &crate::docker::ContainerInfo) -> bool {
    c.names
        .iter()
        .any(|n| n.starts_with(crate::docker::KEPT_PREFIX))
}

/// Removes the containers of this very process (its owner label), except kept ones: the last
/// step of a run that was interrupted, for a container whose creation was under way when the
/// signal came (it has no guard yet). Returns their ids.
pub async fn remove_own(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let me = owner();
    let mut removed = Vec::new();
    for c in docker
        .list_containers(&[(OWNER_LABEL, Some(me.as_str()))])
        .await?
    {
        if is_kept(&c) {
            continue;
        }
        docker.remove_container(&c.id).await?;
        removed.push(c.id);
    }
    Ok(removed)
}

/// Removes containers left by packager processes on this host that no longer run (killed
/// runs), except those kept for debugging (named [`crate::docker::KEPT_PREFIX`]…). Returns their
/// ids.
pub async fn remove_orphans(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let me = hostname();
    let mut removed = Vec::new();
    for c in docker
        .list_containers(&[(crate::docker::MANAGED_LABEL, None)])
        .await?
    {
        if is_kept(&c) {
            continue;
        }
        let Some((host, pid)) = c.labels.get(OWNER_LABEL).and_then(|o| o.rsplit_once(':')) else {
            continue;
        };
        if host == me && !Path::new("/proc").join(pid).exists() {
            docker.remove_container(&c.id).await?;
            removed.push(c.id);
        }
    }
    Ok(removed)
}

/// Makes a byte stream for the engine from a blocking writer function run on its own thread:
/// what `write` writes is sent in chunks; an error it returns ends the stream with an error
/// (so the engine aborts the upload) and is handed back through the returned handle.
pub(crate) fn writer_stream<T, F>(
    write: F,
) -> (
    impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<T>,
)
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> (T, bool) + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let (value, ok) = write(&mut w);
        if ok {
            let _ = w.flush();
        } else {
            let _ = tx.blocking_send(Err(std::io::Error::other("the tar stream was aborted")));
        }
        value
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (stream, handle)
}

const CHUNK: usize = 256 * 1024;

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))
    }
}

/// Extracts an artifact at `prefix` (an existing folder) in a sandboxed container, every
/// entry owned by the build user, as a buildpack's unpacking leaves it on a dyno.
pub async fn upload_artifact(
    container: &ContainerGuard,
    artifact: &Path,
    prefix: &str,
) -> Result<(), BuildError> {
    let path = artifact.to_path_buf();
    let (stream, handle) = writer_stream(move |out| {
        let r = package::write_owned_tar(&path, crate::sandbox::OWNER, out);
        let ok = r.is_ok();
        (r, ok)
    });
    let uploaded = container.upload(prefix, stream).await;
    let written = handle.await.expect("tar task does not panic");
    written.map_err(|source| BuildError::Package {
        job: artifact.display().to_string(),
        source,
    })?;
    uploaded?;
    Ok(())
}

/// The short form of a container id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
