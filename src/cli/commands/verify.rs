//! `packager verify` (is a build reproducible?) and `packager test` (does an artifact pass its
//! test again?).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use packager::Error;
use packager::arch::Arch;
use packager::pipeline::{Pipeline, VerifyOptions};
use packager::publish::AnyStore;
use packager::reproduce::{Comparison, Variation, Variations, Verification};
use serde::Serialize;

use super::{out, print_table};
use crate::cli::ui::{Ui, render_error};

/// How `packager verify` was asked to run and report.
pub struct How<'a> {
    /// What the pipeline does.
    pub opts: &'a VerifyOptions,
    /// Print JSON rather than the report.
    pub json: bool,
    /// For notes on stderr.
    pub ui: &'a Arc<Ui>,
}

/// The options from the command line: `--vary none` (alone) varies nothing.
pub fn options(
    twice: bool,
    vary: &[Option<Variation>],
    keep_artifacts: Option<PathBuf>,
) -> Result<VerifyOptions, Error> {
    if vary.contains(&None) && vary.len() > 1 {
        return Err(Error::Usage {
            message: "`--vary none` cannot be combined with other variations".into(),
            hint: Some("give either `--vary none` or a list such as `--vary hostname,jobs`".into()),
        });
    }
    Ok(VerifyOptions {
        twice,
        variations: Variations::only(vary.iter().flatten().copied()),
        keep_artifacts,
    })
}

/// One line of `packager verify --all --json`.
#[derive(Serialize)]
struct Row<'a> {
    runtime: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<&'a Verification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `packager verify --all`: every version, one after the other, then a table; 1 when any is
/// not reproducible or fails.
pub async fn verify_all(
    pipeline: &Pipeline,
    runtime: Option<&str>,
    arch: Arch,
    how: &How<'_>,
    store: &AnyStore,
) -> Result<u8, Error> {
    let results = pipeline
        .reproduce_all(runtime, arch, how.opts, store)
        .await?;
    let bad = results
        .iter()
        .filter(|(_, _, r)| !matches!(r, Ok(v) if v.comparison.identical()))
        .count();
    if how.json {
        let rows: Vec<Row> = results
            .iter()
            .map(|(runtime, version, r)| Row {
                runtime,
                version,
                verification: r.as_ref().ok(),
                error: r.as_ref().err().map(|e| e.to_string()),
            })
            .collect();
        out(&serde_json::to_string_pretty(&rows).expect("verifications serialise"))?;
        return Ok(if bad == 0 { 0 } else { 1 });
    }
    let mut rows: Vec<[String; 4]> = Vec::new();
    for (runtime, version, result) in &results {
        let (result, detail) = match result {
            Ok(v) if v.comparison.identical() => (
                "reproducible".to_string(),
                format!("sha256:{}", v.comparison.right_sha256),
            ),
            Ok(v) => {
                let c = &v.comparison;
                let mut names: Vec<String> = c
                    .only_left
                    .iter()
                    .chain(&c.only_right)
                    .map(|p| p.display().to_string())
                    .chain(c.changed.iter().map(|c| c.path.display().to_string()))
                    .collect();
                let n = names.len();
                names.truncate(3);
                let more = if n > 3 { ", …" } else { "" };
                (
                    "differs".to_string(),
                    format!("{n} entries: {}{more}", names.join(", ")),
                )
            }
            Err(err) => {
                render_error(err);
                ("failed".to_string(), err.to_string())
            }
        };
        rows.push([runtime.clone(), version.clone(), result, detail]);
    }
    print_table(&["RUNTIME", "VERSION", "RESULT", "DETAIL"], &rows)?;
    if let Some(v) = results.iter().find_map(|(_, _, r)| r.as_ref().ok()) {
        out(&varied_line(v))?;
    }
    if bad > 0 {
        cause_hints(how, None);
    }
    Ok(if bad == 0 { 0 } else { 1 })
}

/// `packager verify`: 0 when the rebuild is identical, 1 with a report when it is not.
pub async fn verify(
    pipeline: &Pipeline,
    runtime: &str,
    version: &str,
    arch: Arch,
    how: &How<'_>,
    store: &AnyStore,
) -> Result<u8, Error> {
    let v = pipeline
        .reproduce(runtime, version, arch, how.opts, store)
        .await?;
    let code = if v.comparison.identical() { 0 } else { 1 };
    if how.json {
        out(&serde_json::to_string_pretty(&v).expect("a verification serialises"))?;
        return Ok(code);
    }
    let comparison = &v.comparison;
    let what = v.reference.describe();
    if comparison.identical() {
        out(&format!(
            "{runtime} {version} is reproducible: the rebuild is identical to {what} (sha256:{})",
            comparison.right_sha256
        ))?;
        out(&varied_line(&v))?;
        return Ok(0);
    }
    out(&format!(
        "{runtime} {version} is not reproducible: {what} is sha256:{}, the rebuild sha256:{}",
        comparison.left_sha256, comparison.right_sha256
    ))?;
    out(&varied_line(&v))?;
    print_differences(comparison, what)?;
    cause_hints(how, v.kept.as_ref());
    Ok(code)
}

/// `  varied: hostname packager-build → varied-host, …`, or that nothing was.
fn varied_line(v: &Verification) -> String {
    if v.variations.is_empty() {
        return "  varied: nothing (--vary none)".to_string();
    }
    let list: Vec<String> = v
        .variations
        .iter()
        .map(|a| format!("{} {} → {}", a.variation, a.normal, a.varied))
        .collect();
    format!("  varied: {}", list.join(", "))
}

/// How to find the cause of each difference: `--vary` one at a time, and diffoscope on the two
/// artifacts when it is installed.
fn cause_hints(how: &How<'_>, kept: Option<&(PathBuf, PathBuf)>) {
    if !how.opts.variations.is_empty() {
        how.ui.note(
            "to tell which variation causes a difference, verify again with one at a time (`--vary hostname`, …) or none (`--vary none`)",
        );
    }
    if !on_path("diffoscope") {
        return;
    }
    match kept {
        Some((a, b)) => how.ui.note(&format!(
            "diffoscope explains each difference: `diffoscope {} {}`",
            a.display(),
            b.display()
        )),
        None => how.ui.note(
            "diffoscope is installed: verify again with `--keep-artifacts DIR` and run `diffoscope DIR/reference/NAME DIR/rebuild/NAME`",
        ),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn print_differences(comparison: &Comparison, what: &str) -> Result<(), Error> {
    for p in &comparison.only_left {
        out(&format!("  only in {what}: {}", p.display()))?;
    }
    for p in &comparison.only_right {
        out(&format!("  only in the rebuild: {}", p.display()))?;
    }
    for c in &comparison.changed {
        out(&format!(
            "  differs: {} ({})",
            c.path.display(),
            c.what.join(", ")
        ))?;
        if let Some(diff) = &c.diff {
            for line in diff.lines() {
                out(&format!("    {line}"))?;
            }
        }
    }
    if comparison.only_left.is_empty()
        && comparison.only_right.is_empty()
        && comparison.changed.is_empty()
    {
        out("  every entry is the same: the difference is in the archive's metadata")?;
    }
    Ok(())
}

/// `packager test`: tests a published artifact (or a file) again without rebuilding it.
pub async fn test_again(
    pipeline: &Pipeline,
    ui: &Arc<Ui>,
    (runtime, version, arch): (&str, &str, Arch),
    artifact: Option<&Path>,
    store: &AnyStore,
) -> Result<(), Error> {
    let log = pipeline
        .retest(runtime, version, arch, artifact, store)
        .await?;
    let tested = match artifact {
        Some(a) => a.display().to_string(),
        None => format!("{}'s artifact", store_name(store)),
    };
    ui.note(&format!(
        "{runtime} {version} passed its test ({tested}); log: {}",
        log.display()
    ));
    Ok(())
}

fn store_name(store: &AnyStore) -> String {
    use packager::publish::Store;
    store.describe()
}
