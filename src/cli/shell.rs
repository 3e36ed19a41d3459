//! The terminal side of `packager shell` and `--shell-on-failure`: the host terminal in raw
//! mode (restored on every exit path), the window size following the host's, stdin forwarded
//! to the command and its output to ours.
//!
//! Three ways to run, chosen from the command line and whether stdin is a terminal:
//! - no command, stdin a terminal: an interactive shell with a TTY (bash if the image has it,
//!   else sh);
//! - no command, stdin not a terminal: the same shell, without a TTY, reading commands from
//!   stdin (`echo 'make V=1' | packager shell …`);
//! - `-- CMD ARGS…`: that command, without a TTY, stdin forwarded, output streamed.

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use futures_util::StreamExt;
use packager::Error;
use packager::docker::{AttachedExec, Docker, ExecSpec, OutputStream};
use tokio::io::AsyncWriteExt;

/// Starts bash when the image has it, else sh.
const LAUNCHER: &str = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi";

/// Set while an interactive session owns the terminal: `cli::main` then leaves SIGINT to the
/// shell instead of ending the packager.
static INTERACTIVE: AtomicBool = AtomicBool::new(false);

/// Set once an interactive session has taken the terminal (its prompt may end a line).
static USED_TERMINAL: AtomicBool = AtomicBool::new(false);

/// Whether an interactive session has taken the terminal in this run.
pub fn used_terminal() -> bool {
    USED_TERMINAL.load(Ordering::SeqCst)
}

/// Whether an interactive session owns the terminal.
pub fn interactive() -> bool {
    INTERACTIVE.load(Ordering::SeqCst)
}

/// What to run in the container.
pub struct Session<'a> {
    /// The container (id or unique prefix).
    pub container: &'a str,
    /// Working directory of the shell or command.
    pub working_dir: &'a str,
    /// The command (`-- CMD ARGS…`); `None` for a shell.
    pub command: Option<&'a [String]>,
    /// Shown in the shell's prompt on Debian-like images (`debian_chroot`).
    pub prompt_tag: String,
}

impl Session<'_> {
    /// Whether this session gets a TTY (a shell, stdin a terminal).
    pub fn is_interactive(&self) -> bool {
        self.command.is_none() && std::io::stdin().is_terminal()
    }

    /// Runs the session to its end and returns the command's exit code. `banner` is called
    /// just before an interactive shell takes the terminal.
    pub async fn run(&self, docker: &Docker, banner: impl FnOnce()) -> Result<i64, Error> {
        let tty = self.is_interactive();
        let mut spec = match self.command {
            Some(argv) => ExecSpec::new(argv.iter().cloned()),
            None => ExecSpec::new(["/bin/sh", "-c", LAUNCHER]),
        }
        .working_dir(self.working_dir);
        // The build's user (and so its permissions): the shell reproduces the build.
        spec.user = Some(packager::sandbox::USER.to_owned());
        if tty {
            let term = std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty() && t != "dumb")
                .unwrap_or_else(|| "xterm".to_owned());
            spec = spec
                .env("TERM", term)
                .env("debian_chroot", &self.prompt_tag);
        }
        let exec = docker.exec_attached(self.container, &spec, tty).await?;
        if tty {
            banner();
        }
        pump(exec, tty).await
    }
}

/// Moves bytes between the host and the command until its output ends; returns its exit code.
async fn pump(exec: AttachedExec, tty: bool) -> Result<i64, Error> {
    let AttachedExec {
        mut output,
        mut input,
        handle,
    } = exec;
    let io_error = |what: &str, source| Error::Io {
        path: what.into(),
        source,
    };
    let raw = if tty {
        Some(RawMode::enable().map_err(|e| io_error("<terminal>", e))?)
    } else {
        None
    };
    let mut winch = if tty {
        if let Ok((columns, rows)) = crossterm::terminal::size() {
            handle.resize(columns, rows).await?;
        }
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(|e| io_error("<SIGWINCH>", e))?,
        )
    } else {
        None
    };
    let mut stdin = StdinPump::start();
    let mut stdin_open = true;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok((OutputStream::Stdout, bytes))) => {
                    stdout.write_all(&bytes).await.map_err(|e| io_error("<stdout>", e))?;
                    stdout.flush().await.map_err(|e| io_error("<stdout>", e))?;
                }
                Some(Ok((OutputStream::Stderr, bytes))) => {
                    stderr.write_all(&bytes).await.map_err(|e| io_error("<stderr>", e))?;
                    stderr.flush().await.map_err(|e| io_error("<stderr>", e))?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            data = stdin.rx.recv(), if stdin_open => match data {
                // The command may have exited already; its output ending says so.
                Some(bytes) => {
                    if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                        stdin_open = false;
                    }
                }
                None => {
                    stdin_open = false;
                    let _ = input.shutdown().await;
                }
            },
            Some(()) = async {
                match winch.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((columns, rows)) = crossterm::terminal::size() {
                    // A resize racing with the shell's exit is harmless.
                    let _ = handle.resize(columns, rows).await;
                }
            }
        }
    }
    drop(stdin);
    drop(raw);
    Ok(handle.exit_code().await?)
}

/// The host terminal in raw mode; restored when dropped, and by a panic hook before the panic
/// message is printed.
struct RawMode;

impl RawMode {
    fn enable() -> std::io::Result<RawMode> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = crossterm::terminal::disable_raw_mode();
                previous(info);
            }));
        });
        crossterm::terminal::enable_raw_mode()?;
        INTERACTIVE.store(true, Ordering::SeqCst);
        USED_TERMINAL.store(true, Ordering::SeqCst);
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
        INTERACTIVE.store(false, Ordering::SeqCst);
    }
}

/// Reads stdin on its own thread (a blocking read cannot be cancelled, so the thread polls
/// and stops soon after the pump is dropped); chunks arrive on `rx`, which closes at end of
/// input.
struct StdinPump {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StdinPump {
    fn start() -> StdinPump {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("packager-stdin".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                // At least std's stdin buffer, so reads bypass it (poll must see every byte).
                let mut buf = vec![0u8; 64 * 1024];
                while !flag.load(Ordering::SeqCst) {
                    let mut fds = [rustix::event::PollFd::new(
                        &stdin,
                        rustix::event::PollFlags::IN,
                    )];
                    let timeout = rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: Duration::from_millis(100).as_nanos() as _,
                    };
                    match rustix::event::poll(&mut fds, Some(&timeout)) {
                        Ok(0) => continue,
                        Ok(_) => {}
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(_) => return,
                    }
                    match stdin.lock().read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
            .ok();
        StdinPump { rx, stop, thread }
    }
}

impl Drop for StdinPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
