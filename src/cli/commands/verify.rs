//! `packager verify` (is a build reproducible?) and `packager test` (does an artifact pass its
//! test again?).

use std::path::Path;
use std::sync::Arc;

use packager::Error;
use packager::arch::Arch;
use packager::pipeline::Pipeline;
use packager::publish::AnyStore;
use packager::reproduce::Comparison;

use super::{out, print_table};
use crate::cli::ui::{Ui, render_error};

/// `packager verify --all`: every version, one after the other, then a table; 1 when any is
/// not reproducible or fails.
pub async fn verify_all(
    pipeline: &Pipeline,
    runtime: Option<&str>,
    arch: Arch,
    twice: bool,
    store: &AnyStore,
) -> Result<u8, Error> {
    let results = pipeline.reproduce_all(runtime, arch, twice, store).await?;
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut bad = 0;
    for (runtime, version, result) in results {
        let (result, detail) = match result {
            Ok(c) if c.identical() => (
                "reproducible".to_string(),
                format!("sha256:{}", c.right_sha256),
            ),
            Ok(c) => {
                bad += 1;
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
                bad += 1;
                render_error(&err);
                ("failed".to_string(), err.to_string())
            }
        };
        rows.push([runtime, version, result, detail]);
    }
    print_table(&["RUNTIME", "VERSION", "RESULT", "DETAIL"], &rows)?;
    Ok(if bad == 0 { 0 } else { 1 })
}

/// `packager verify`: 0 when the rebuild is identical, 1 with a report when it is not.
pub async fn verify(
    pipeline: &Pipeline,
    runtime: &str,
    version: &str,
    arch: Arch,
    twice: bool,
    store: &AnyStore,
) -> Result<u8, Error> {
    let comparison = pipeline
        .reproduce(runtime, version, arch, twice, store)
        .await?;
    let what = if twice {
        "the first build"
    } else {
        "the published artifact"
    };
    if comparison.identical() {
        out(&format!(
            "{runtime} {version} is reproducible: the rebuild is identical to {what} (sha256:{})",
            comparison.right_sha256
        ))?;
        return Ok(0);
    }
    out(&format!(
        "{runtime} {version} is not reproducible: {what} is sha256:{}, the rebuild sha256:{}",
        comparison.left_sha256, comparison.right_sha256
    ))?;
    print_differences(&comparison, what)?;
    Ok(1)
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
