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

/// The most bytes a log file holds by default (`--log-limit`): see [`BuildLog`].
pub const DEFAULT_LOG_LIMIT: u64 = 64 << 20;

/// A per-build log file, bounded by a limit: the first seven eighths of it are written as the
/// lines come; past that, only the last eighth is kept (in memory, written out at every
/// flush after a `# [log cut: N bytes dropped here …]` line). The log holds the lines as
/// [`crate::docker::Docker::exec`] gives them: long lines cut, control characters made
/// visible.
pub struct BuildLog {
    path: PathBuf,
    file: std::io::LineWriter<fs_err::File>,
    /// Bytes in the file's part that is never rewritten.
    written: u64,
    /// How long that part may grow.
    head_limit: u64,
    /// How many bytes of the last lines are kept once the head is full.
    tail_limit: usize,
    /// The last lines, once the head is full.
    tail: Option<LogTail>,
}

/// The end of a log whose head is full: its last lines, and how many bytes were dropped.
struct LogTail {
    kept: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl LogTail {
    fn push(&mut self, line: &[u8], capacity: usize) {
        self.kept.extend(line);
        self.kept.push_back(b'\n');
        if self.kept.len() > capacity {
            // Whole lines only: drop up to the first line break past the excess.
            let excess = self.kept.len() - capacity;
            let end = self
                .kept
                .iter()
                .skip(excess)
                .position(|&b| b == b'\n')
                .map_or(self.kept.len(), |p| excess + p + 1);
            self.kept.drain(..end);
            self.dropped += end as u64;
        }
    }
}

impl BuildLog {
    /// Creates `dir/<name>.log`, holding at most about `limit` bytes (see [`BuildLog`]).
    pub fn create(dir: &Path, name: &str, limit: u64) -> Result<Self, BuildError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Io { path, source }
        };
        fs_err::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("{name}.log"));
        let file = fs_err::File::create(&path).map_err(io(&path))?;
        Ok(BuildLog::new(path, file, 0, limit))
    }

    /// Opens an existing log to append at most about `limit` more bytes to it.
    pub fn append(path: &Path, limit: u64) -> Result<Self, BuildError> {
        let io = |source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = fs_err::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(BuildLog::new(path.to_path_buf(), file, len, limit))
    }

    fn new(path: PathBuf, file: fs_err::File, len: u64, limit: u64) -> Self {
        let tail_limit = limit / 8;
        BuildLog {
            path,
            file: std::io::LineWriter::new(file),
            written: len,
            head_limit: len + (limit - tail_limit),
            tail_limit: tail_limit as usize,
            tail: None,
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line (write errors are remembered by the OS and surface at flush).
    pub fn line(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        match &mut self.tail {
            None if self.written + len <= self.head_limit => {
                let _ = writeln!(self.file, "{line}");
                self.written += len;
            }
            None => {
                let mut tail = LogTail {
                    kept: std::collections::VecDeque::new(),
                    dropped: 0,
                };
                tail.push(line.as_bytes(), self.tail_limit);
                self.tail = Some(tail);
            }
            Some(tail) => tail.push(line.as_bytes(), self.tail_limit),
        }
    }

    /// Flushes to disk: the head, then (once the head is full) the marker and the last lines
    /// in place of the ones written at the previous flush.
    pub fn flush(&mut self) -> Result<(), BuildError> {
        self.write_out().map_err(|source| BuildError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.flush()?;
        let Some(tail) = &self.tail else {
            return Ok(());
        };
        let file = self.file.get_mut();
        file.set_len(self.written)?;
        file.seek(SeekFrom::End(0))?;
        let mut out = std::io::BufWriter::new(file);
        if tail.dropped > 0 {
            writeln!(
                out,
                "# [log cut: {} bytes dropped here; the last {} bytes follow; raise --log-limit to keep more]",
                tail.dropped,
                tail.kept.len()
            )?;
        }
        let (a, b) = tail.kept.as_slices();
        out.write_all(a)?;
        out.write_all(b)?;
        out.flush()
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        let _ = self.write_out();
    }
}

/// When a step of a build must be done by, and what to say when it is not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline<'a> {
    /// The step (`configure`, `build`, `install`, `test`).
    pub step: &'a str,
    /// Its time limit.
    pub limit: std::time::Duration,
    /// When it ends.
    pub at: tokio::time::Instant,
}

impl<'a> Deadline<'a> {
    /// `limit` from now for `step`.
    pub fn after(step: &'a str, limit: std::time::Duration) -> Self {
        Deadline {
            step,
            limit,
            at: tokio::time::Instant::now() + limit,
        }
    }

    /// The error for `job`'s step when `command` was still running at the deadline.
    pub fn passed(
        &self,
        job: &str,
        command: &str,
        tail: Vec<String>,
        log: &BuildLog,
    ) -> BuildError {
        BuildError::Timeout(Box::new(super::TimedOut {
            job: job.to_string(),
            step: self.step.to_string(),
            limit: self.limit,
            command: command.to_string(),
            tail,
            log: log.path().to_path_buf(),
        }))
    }
}

/// Runs shell commands in a container, logging and reporting every line; returns the first
/// failing command with its exit code and output tail, or [`BuildError::Timeout`] when a
/// command still runs at `deadline` (the command is left running: the caller removes the
/// container). With `surroundings`, each command runs under their umask (the log shows the
/// command as the recipe has it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_commands(
    container: &ContainerGuard,
    commands: &[String],
    working_dir: &str,
    user: Option<&str>,
    surroundings: Option<&Surroundings>,
    deadline: Deadline<'_>,
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
        // The exec keeps its own tail, lost when the deadline drops it: keep one here too.
        let mut tail = crate::output_tail::OutputTail::new(crate::docker::TAIL_LINES);
        let ran = tokio::time::timeout_at(
            deadline.at,
            container.exec(&spec, &mut |_stream: OutputStream, line: &str| {
                log.line(line);
                tail.push(line);
                reporter.output(job, line);
            }),
        )
        .await;
        let Ok(result) = ran else {
            let line = format!(
                "# timed out: `{command}` still ran after {}",
                humantime::format_duration(deadline.limit)
            );
            log.line(&line);
            reporter.output(job, &line);
            log.flush()?;
            return Err(deadline.passed(job, command, tail.into_vec(), log));
        };
        let result = result?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_keeps_its_head_and_its_tail_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 64 * 1024;
        let mut log = BuildLog::create(dir.path(), "big", limit).unwrap();
        for i in 0..20_000 {
            log.line(&format!("line {i:05}"));
        }
        log.flush().unwrap();
        // More lines after a flush replace the tail written then.
        log.line("the very last line");
        drop(log);
        let text = std::fs::read_to_string(dir.path().join("big.log")).unwrap();
        assert!(text.len() as u64 <= limit + 200, "{} bytes", text.len());
        assert!(text.starts_with("line 00000\nline 00001\n"));
        assert!(
            text.ends_with("line 19999\nthe very last line\n"),
            "{}",
            &text[text.len() - 100..]
        );
        let marker = text
            .lines()
            .find(|l| l.starts_with("# [log cut: "))
            .unwrap();
        let dropped: u64 = marker["# [log cut: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Every line is either kept or counted as dropped (each is 11 bytes with its newline).
        let kept = text.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(kept * 11 + dropped, 20_000 * 11, "{marker}");
        assert_eq!(text.matches("# [log cut: ").count(), 1);
    }

    #[test]
    fn an_appended_log_gets_a_limit_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = BuildLog::create(dir.path(), "a", 1 << 20).unwrap();
        log.line("build");
        drop(log);
        let mut log = BuildLog::append(&dir.path().join("a.log"), 1 << 20).unwrap();
        log.line("test");
        log.flush().unwrap();
        drop(log);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log")).unwrap(),
            "build\ntest\n"
        );
    }
}
