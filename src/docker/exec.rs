//! Running commands in a running container: [`Docker::exec`] collects the output line by line
//! (and keeps its tail for the error), [`Docker::exec_attached`] hands over the raw output and
//! stdin (an interactive shell), and both read the exit code the engine records.

use std::pin::Pin;
use std::time::Duration;

use bollard::query_parameters::ResizeExecOptionsBuilder;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::client::env_list;
use super::{Docker, DockerError, TAIL_LINES};
use crate::output_tail::OutputTail;

/// The output of an attached exec ([`Docker::exec_attached`]): chunks of bytes as they come,
/// tagged with their stream (with a TTY, everything is [`OutputStream::Stdout`]).
pub type ExecOutput =
    Pin<Box<dyn Stream<Item = Result<(OutputStream, Bytes), DockerError>> + Send>>;

/// The stdin of an attached exec. Shutting it down (`AsyncWriteExt::shutdown`) closes the
/// command's stdin (end of file), like `docker exec -i` does when its input ends.
pub type ExecInput = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// A command to run in a running container; see [`Docker::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv, run as is (no shell unless it is one, see [`ExecSpec::shell`]).
    pub command: Vec<String>,
    /// Extra environment for this command (on top of the container's).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` is the container's.
    pub working_dir: Option<String>,
    /// Run as this user (`uid[:gid]` or a name); `None` means the image's user.
    pub user: Option<String>,
}

impl ExecSpec {
    /// Runs `argv` as is, with the container's environment, directory and user.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            working_dir: None,
            user: None,
        }
    }

    /// Runs `script` with `/bin/sh -euc`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(["/bin/sh".to_owned(), "-euc".to_owned(), script.into()])
    }

    /// Adds `key=value` to this command's environment (a later one of the same key wins).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the command in `dir` (which must exist in the container).
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The command for display (the script for shell commands).
    pub fn display(&self) -> String {
        match self.command.as_slice() {
            [sh, flag, script] if sh == "/bin/sh" && flag == "-euc" => script.clone(),
            argv => argv.join(" "),
        }
    }
}

/// Which stream an output line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output (everything, with a TTY).
    Stdout,
    /// Standard error.
    Stderr,
}

/// The outcome of [`Docker::exec`]. Check it: a non-zero exit code is not an `Err` by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an exec's exit code must be checked, e.g. with `.check()`"]
pub struct ExecResult {
    /// The container id.
    pub container: String,
    /// The command, for display.
    pub command: String,
    /// The exit code (0 is success; 126/127: not executable / not found, as in a shell).
    pub exit_code: i64,
    /// The last lines of output (stdout and stderr interleaved).
    pub tail: Vec<String>,
}

impl ExecResult {
    /// `Ok` when the command exited 0, else [`DockerError::ExecFailed`] with the output tail.
    pub fn check(self) -> Result<(), DockerError> {
        if self.exit_code == 0 {
            Ok(())
        } else {
            Err(DockerError::ExecFailed {
                container: self.container,
                command: self.command,
                exit_code: self.exit_code,
                tail: self.tail,
            })
        }
    }
}

/// The longest line [`LineSplitter`] hands on, in bytes: the rest of a longer line is dropped
/// (and counted in a mark at its end), so a command that prints without newlines cannot grow
/// the host's memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines (one splitter per output stream: chunks break lines
/// anywhere). Lines lose their `\n` or `\r\n`; bytes that are not UTF-8 are replaced; control
/// characters are made visible ([`crate::output_tail::visible`]), so no line can drive the
/// terminal that shows it. A line longer than [`MAX_LINE`] keeps its first [`MAX_LINE`]
/// bytes and ends with `[… N bytes cut]`; only new bytes are scanned for the newline.
#[derive(Default)]
pub(super) struct LineSplitter {
    /// The bytes after the last newline seen (at most [`MAX_LINE`]).
    partial: Vec<u8>,
    /// Bytes of the current line dropped past [`MAX_LINE`].
    cut: u64,
}

impl LineSplitter {
    /// Adds `bytes` and calls `emit` for every line they complete.
    pub(super) fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&str)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let line_part = &bytes[..newline.unwrap_or(bytes.len())];
            let room = MAX_LINE - self.partial.len();
            let kept = line_part.len().min(room);
            self.partial.extend_from_slice(&line_part[..kept]);
            self.cut += (line_part.len() - kept) as u64;
            match newline {
                Some(pos) => {
                    self.emit_line(true, &mut emit);
                    bytes = &bytes[pos + 1..];
                }
                None => bytes = &[],
            }
        }
    }

    /// Calls `emit` for the last line if the stream ended without a newline.
    pub(super) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() || self.cut > 0 {
            self.emit_line(false, &mut emit);
        }
    }

    fn emit_line(&mut self, ended: bool, emit: &mut impl FnMut(&str)) {
        let mut text = String::from_utf8_lossy(&self.partial);
        if ended && self.cut == 0 && text.ends_with('\r') {
            text.to_mut().pop();
        }
        let mut line = crate::output_tail::visible(&text).into_owned();
        if self.cut > 0 {
            line.push_str(&format!("[… {} bytes cut]", self.cut));
        }
        emit(&line);
        self.partial.clear();
        self.cut = 0;
    }
}

impl Docker {
    /// Creates an exec of `spec` in container `id`, attached to its output (and its input
    /// when `stdin`), with a TTY when `tty`.
    async fn create_exec(
        &self,
        id: &str,
        spec: &ExecSpec,
        stdin: bool,
        tty: bool,
    ) -> Result<String, DockerError> {
        let config = bollard::exec::CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(stdin),
            tty: Some(tty),
            env: Some(env_list(&spec.env)),
            cmd: Some(spec.command.clone()),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            ..Default::default()
        };
        self.client
            .create_exec(id, config)
            .await
            .map(|created| created.id)
            .map_err(|e| DockerError::container(id, format!("create exec `{}`", spec.display()), e))
    }

    /// Runs a command in a running container, calling `output` for every line of its stdout
    /// and stderr, and returns its exit code (check it!).
    pub async fn exec(
        &self,
        id: &str,
        spec: &ExecSpec,
        output: &mut (dyn FnMut(OutputStream, &str) + Send),
    ) -> Result<ExecResult, DockerError> {
        let command = spec.display();
        let exec = self.create_exec(id, spec, false, false).await?;
        let started = self
            .client
            .start_exec(&exec, None)
            .await
            .map_err(|e| DockerError::container(id, format!("start exec `{command}`"), e))?;
        let mut tail = OutputTail::new(TAIL_LINES);
        if let bollard::exec::StartExecResults::Attached {
            output: mut out, ..
        } = started
        {
            let mut stdout = LineSplitter::default();
            let mut stderr = LineSplitter::default();
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(|e| {
                    DockerError::container(id, format!("read output of `{command}`"), e)
                })?;
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.push(&message, |line| {
                            tail.push(line);
                            output(OutputStream::Stderr, line);
                        });
                    }
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        stdout.push(&message, |line| {
                            tail.push(line);
                            output(OutputStream::Stdout, line);
                        });
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            stdout.finish(|line| {
                tail.push(line);
                output(OutputStream::Stdout, line);
            });
            stderr.finish(|line| {
                tail.push(line);
                output(OutputStream::Stderr, line);
            });
        }
        let exit_code = self.exec_exit_code(id, &exec, &command).await?;
        Ok(ExecResult {
            container: id.to_owned(),
            command,
            exit_code,
            tail: tail.into_vec(),
        })
    }

    /// Starts a command with its stdin attached and returns its output stream, its input and a
    /// handle to resize its TTY and read its exit code. With `tty`, the command gets a
    /// pseudo-terminal (an interactive shell); without, stdout and stderr stay apart.
    ///
    /// The output stream ends when the command exits; then [`ExecHandle::exit_code`] gives
    /// its exit code.
    pub async fn exec_attached(
        &self,
        id: &str,
        spec: &ExecSpec,
        tty: bool,
    ) -> Result<AttachedExec, DockerError> {
        let command = spec.display();
        let exec = self.create_exec(id, spec, true, tty).await?;
        let options = bollard::exec::StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        let started = self
            .client
            .start_exec(&exec, Some(options))
            .await
            .map_err(|e| DockerError::container(id, format!("start exec `{command}`"), e))?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(DockerError::NoExitCode {
                container: id.to_owned(),
                command,
            });
        };
        let (container, what) = (id.to_owned(), format!("read output of `{command}`"));
        let output = output
            .filter_map(move |chunk| {
                let item = match chunk {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok((OutputStream::Stderr, message)))
                    }
                    Ok(
                        bollard::container::LogOutput::StdOut { message }
                        | bollard::container::LogOutput::Console { message },
                    ) => Some(Ok((OutputStream::Stdout, message))),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(DockerError::container(&container, what.clone(), e))),
                };
                std::future::ready(item)
            })
            .boxed();
        Ok(AttachedExec {
            output,
            input,
            handle: ExecHandle {
                docker: self.clone(),
                container: id.to_owned(),
                exec_id: exec,
                command,
            },
        })
    }

    /// Waits for the engine to record the exit code of an exec whose output has ended.
    async fn exec_exit_code(
        &self,
        id: &str,
        exec_id: &str,
        command: &str,
    ) -> Result<i64, DockerError> {
        // The output stream closes when the process exits, but the engine may record the exit
        // code a moment later.
        for attempt in 0..50 {
            let inspect =
                self.client.inspect_exec(exec_id).await.map_err(|e| {
                    DockerError::container(id, format!("inspect exec `{command}`"), e)
                })?;
            match (inspect.running, inspect.exit_code) {
                (Some(false), Some(exit_code)) => return Ok(exit_code),
                _ => tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await,
            }
        }
        Err(DockerError::NoExitCode {
            container: id.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// A command started by [`Docker::exec_attached`]: its output, its input and a handle.
pub struct AttachedExec {
    /// What the command writes, as it comes; ends when the command exits.
    pub output: ExecOutput,
    /// The command's stdin; shut it down to send end of file.
    pub input: ExecInput,
    /// Resizes the command's TTY and reads its exit code.
    pub handle: ExecHandle,
}

impl std::fmt::Debug for AttachedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedExec")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// A handle on an attached exec: resize its TTY, read its exit code. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecHandle {
    docker: Docker,
    container: String,
    exec_id: String,
    command: String,
}

impl ExecHandle {
    /// Sets the size of the command's TTY (a `SIGWINCH` for the command). The engine refuses
    /// to resize an exec that has not started yet, so a refusal is retried a few times.
    pub async fn resize(&self, columns: u16, rows: u16) -> Result<(), DockerError> {
        let options = ResizeExecOptionsBuilder::new()
            .h(i32::from(rows))
            .w(i32::from(columns))
            .build();
        let mut attempt = 0;
        loop {
            match self
                .docker
                .client
                .resize_exec(&self.exec_id, options.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                }
                Err(e) => {
                    return Err(DockerError::container(
                        &self.container,
                        format!("resize the terminal of `{}`", self.command),
                        e,
                    ));
                }
            }
        }
    }

    /// The command's exit code, once its output has ended.
    pub async fn exit_code(&self) -> Result<i64, DockerError> {
        self.docker
            .exec_exit_code(&self.container, &self.exec_id, &self.command)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(b"one\ntw", |l| lines.push(l.to_owned()));
        splitter.push(b"o\r\nthree", |l| lines.push(l.to_owned()));
        splitter.finish(|l| lines.push(l.to_owned()));
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        // 1 MiB without a newline, in small chunks, then the end of the line and another.
        for _ in 0..256 {
            splitter.push(&[b'x'; 4096], |l| lines.push(l.to_owned()));
            assert!(splitter.partial.len() <= MAX_LINE);
        }
        splitter.push(b"yz\r\nnext\n", |l| lines.push(l.to_owned()));
        let cut = (1 << 20) + 3 - MAX_LINE;
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            format!("{}[… {cut} bytes cut]", "x".repeat(MAX_LINE))
        );
        assert_eq!(lines[1], "next");
        // A stream that ends in the middle of a long line still says so.
        let mut last = Vec::new();
        splitter.push(&vec![b'a'; MAX_LINE + 10], |l| last.push(l.to_owned()));
        assert!(last.is_empty());
        splitter.finish(|l| last.push(l.to_owned()));
        assert_eq!(last, [format!("{}[… 10 bytes cut]", "a".repeat(MAX_LINE))]);
    }

    #[test]
    fn lines_reach_their_readers_without_control_characters() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(b"\x1b[31mred\x1b[0m\tok\n\x1b]0;t", |l| {
            lines.push(l.to_owned())
        });
        splitter.finish(|l| lines.push(l.to_owned()));
        assert_eq!(lines, ["^[[31mred^[[0m\tok", "^[]0;t"]);
    }

    #[test]
    fn exec_display_shows_script() {
        assert_eq!(ExecSpec::shell("make -j2").display(), "make -j2");
        assert_eq!(
            ExecSpec::new(["gcc", "--version"]).display(),
            "gcc --version"
        );
    }
}
