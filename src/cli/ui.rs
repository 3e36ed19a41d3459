//! Terminal output: colours, error rendering, progress bars and the [`Reporter`] the library
//! reports through.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use packager::report::Reporter;

use super::{Color, Global};

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const HINT: Style = AnsiColor::Cyan.on_default().bold();
const DIM: Style = Style::new().dimmed();

/// Sets colours and logging from the global options.
pub fn setup(global: &Global) {
    let choice = match global.color {
        Color::Auto => anstream::ColorChoice::Auto,
        Color::Always => anstream::ColorChoice::Always,
        Color::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PACKAGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("packager={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(anstream::stderr().current_choice() != anstream::ColorChoice::Never)
        .without_time()
        .try_init();
}

/// Prints `error: message` on stderr.
pub fn error_line(message: &str) {
    let _ = writeln!(anstream::stderr(), "{ERROR}error{ERROR:#}: {message}");
}

/// Prints an error, its causes and its hint on stderr.
pub fn render_error(e: &packager::Error) {
    render_chain(e, e.hint().as_deref());
}

/// Prints an error, its causes and, when given, a hint on stderr.
pub fn render_chain(e: &dyn std::error::Error, hint: Option<&str>) {
    let mut err = anstream::stderr().lock();
    let _ = writeln!(err, "{ERROR}error{ERROR:#}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = writeln!(err, "{DIM}caused by{DIM:#}: {s}");
        source = s.source();
    }
    if let Some(hint) = hint {
        let _ = writeln!(err, "{HINT}hint{HINT:#}: {hint}");
    }
}

/// Prints a hint line on stderr (`hint: …`), unless quiet.
pub fn hint_line(quiet: bool, message: &str) {
    if !quiet {
        let _ = writeln!(anstream::stderr(), "{HINT}hint{HINT:#}: {message}");
    }
}

/// The CLI's reporter: progress bars on a terminal, plain lines otherwise, nothing under -q.
pub struct Ui {
    quiet: bool,
    verbose: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<u64, ProgressBar>>,
    steps: Mutex<HashMap<String, ProgressBar>>,
    artifact_lines: std::sync::atomic::AtomicBool,
}

/// Rows as a table with a header, columns padded to their widest cell, two spaces apart, each
/// line ending in a newline.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let header = header.map(String::from);
    let mut widths = [0usize; N];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// A size as people read it: `1.6 KiB`, `124.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

impl Ui {
    /// A reporter for these options.
    pub fn new(global: &Global) -> Self {
        let show_bars = !global.quiet && global.verbose == 0 && std::io::stderr().is_terminal();
        let target = if show_bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Ui {
            quiet: global.quiet,
            verbose: global.verbose > 0,
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            steps: Mutex::new(HashMap::new()),
            artifact_lines: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Shows a line (unless quiet) whatever the verbosity: what the user asked to see.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            self.line(&format!("{HINT}packager{HINT:#}: {text}"));
        }
    }

    /// The end-of-run table: each job's outcome, duration, size and short sha256, then the wall
    /// time, the summed job time and the parallel efficiency. On stderr (data is on stdout).
    pub fn summary(&self, report: &packager::schedule::Report, parallel: usize) {
        if self.quiet {
            return;
        }
        let rows: Vec<[String; 7]> = report
            .jobs
            .iter()
            .map(|j| {
                [
                    j.runtime.clone(),
                    j.version.clone(),
                    j.outcome.name().to_string(),
                    if j.duration.is_zero() {
                        "-".into()
                    } else {
                        format!("{:.1}s", j.duration.as_secs_f64())
                    },
                    j.made.as_ref().map_or("-".into(), |m| human_bytes(m.size)),
                    j.made
                        .as_ref()
                        .map_or("-".into(), |m| m.sha256.chars().take(12).collect()),
                    j.reason
                        .as_deref()
                        .and_then(|r| r.lines().next())
                        .unwrap_or("")
                        .to_string(),
                ]
            })
            .collect();
        let mut text = table(
            &[
                "RUNTIME", "VERSION", "STATUS", "DURATION", "SIZE", "SHA256", "NOTE",
            ],
            &rows,
        );
        text.push_str(&format!(
            "wall {:.1}s, job time {:.1}s, parallel efficiency {:.0}% (-j {parallel})",
            report.wall.as_secs_f64(),
            report.job_time.as_secs_f64(),
            report.efficiency * 100.0
        ));
        self.line(&text);
    }

    /// Whether each artifact put in the store is printed on stdout as it is (`location  size
    /// sha256:…`): on for `build`, off for `build --json`.
    pub fn print_artifacts(&self, on: bool) {
        self.artifact_lines
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether only errors are shown.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Clears the spinners of unfinished steps (before a shell takes the terminal).
    pub fn clear_steps(&self) {
        if let Ok(mut steps) = self.steps.lock() {
            for (_, bar) in steps.drain() {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
    }

    fn line(&self, text: &str) {
        self.multi.suspend(|| {
            let _ = writeln!(anstream::stderr(), "{text}");
        });
    }
}

impl Reporter for Ui {
    fn download_started(&self, id: u64, url: &str, total: Option<u64>) {
        if self.verbose {
            self.line(&format!("downloading {url}"));
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let style = ProgressStyle::with_template(
            "{spinner} {wide_msg} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
        )
        .expect("valid template");
        let bar = self
            .multi
            .add(bar.with_style(style).with_message(url.to_string()));
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.lock().expect("bars lock").insert(id, bar);
    }

    fn download_progress(&self, id: u64, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("bars lock").get(&id) {
            bar.inc(bytes);
        }
    }

    fn download_finished(&self, id: u64) {
        if let Some(bar) = self.bars.lock().expect("bars lock").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn warn(&self, message: &str) {
        if !self.quiet {
            self.line(&format!("{WARNING}warning{WARNING:#}: {message}"));
        }
    }

    fn info(&self, message: &str) {
        if self.verbose {
            self.line(message);
        }
    }

    fn step_started(&self, job: &str, step: &str) {
        if self.quiet {
            return;
        }
        if self.multi.is_hidden() {
            self.line(&format!("{job}: {step}…"));
            return;
        }
        let bar = ProgressBar::new_spinner()
            .with_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed:>4}")
                    .expect("valid template"),
            )
            .with_message(format!("{job}: {step}"));
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(120));
        self.steps
            .lock()
            .expect("steps lock")
            .insert(job.to_string(), bar);
    }

    fn step_finished(&self, job: &str, step: &str, elapsed: Duration) {
        if let Some(bar) = self.steps.lock().expect("steps lock").remove(job) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if !self.quiet {
            self.line(&format!(
                "{job}: {step} {DIM}done in {:.1}s{DIM:#}",
                elapsed.as_secs_f64()
            ));
        }
    }

    fn output(&self, _job: &str, line: &str) {
        if self.verbose {
            self.line(&format!("{DIM}  | {DIM:#}{line}"));
        }
    }

    fn artifact(&self, _job: &str, made: &packager::schedule::Made) {
        if self
            .artifact_lines
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let line = format!("{}  {}  sha256:{}", made.location, made.size, made.sha256);
            self.multi.suspend(|| super::commands::out(&line).ok());
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        // Spinners of steps that never finished (a failure) must not stay on screen.
        if let Ok(mut steps) = self.steps.lock() {
            for (_, bar) in steps.drain() {
                bar.finish_and_clear();
            }
        }
    }
}
