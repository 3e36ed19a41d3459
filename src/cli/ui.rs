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
        let mut rows = vec![[
            "RUNTIME".to_string(),
            "VERSION".into(),
            "STATUS".into(),
            "DURATION".into(),
            "SIZE".into(),
            "SHA256".into(),
            "NOTE".into(),
        ]];
        for j in &report.jobs {
            rows.push([
                j.runtime.clone(),
                j.version.clone(),
                j.outcome.name().to_string(),
                if j.duration.is_zero() {
                    "-".into()
                } else {
                    format!("{:.1}s", j.duration.as_secs_f64())
                },
                j.made
                    .as_ref()
                    .map_or("-".into(), |m| indicatif::HumanBytes(m.size).to_string()),
                j.made
                    .as_ref()
                    .map_or("-".into(), |m| m.sha256.chars().take(12).collect()),
                j.reason
                    .as_deref()
                    .and_then(|r| r.lines().next())
                    .unwrap_or("")
                    .to_string(),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:w$}"))
                .collect();
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
        text.push_str(&format!(
            "wall {:.1}s, job time {:.1}s, parallel efficiency {:.0}% (-j {parallel})",
            report.wall.as_secs_f64(),
            report.job_time.as_secs_f64(),
            report.efficiency * 100.0
        ));
        self.line(&text);
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
