//! Reproducibility: comparing two builds of the same artifact entry by entry.
//!
//! [`compare`] lists both artifacts with [`crate::package::list_artifact`] and reports entries
//! only in one, and entries whose kind, content, mode, size or link target differ; small text
//! files that differ get a short unified diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::package::{ArtifactEntry, PackageError, list_artifact, read_artifact_files};

/// Text files up to this size get a diff.
pub const DIFF_MAX_BYTES: u64 = 64 * 1024;
/// A diff is cut after this many lines.
pub const DIFF_MAX_LINES: usize = 40;

/// How two artifacts differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// SHA-256 of the first (the reference: the published one, or the first build).
    pub left_sha256: String,
    /// SHA-256 of the second (the rebuild).
    pub right_sha256: String,
    /// Entries only in the first.
    pub only_left: Vec<PathBuf>,
    /// Entries only in the second.
    pub only_right: Vec<PathBuf>,
    /// Entries in both that differ.
    pub changed: Vec<Changed>,
}

impl Comparison {
    /// Whether the two artifacts are byte for byte the same.
    pub fn identical(&self) -> bool {
        self.left_sha256 == self.right_sha256
    }
}

/// One entry that differs between the two artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Its path in the artifact.
    pub path: PathBuf,
    /// What differs: `content`, `mode 755 → 644`, `size 10 → 12`, `link target a → b`, `kind`.
    pub what: Vec<String>,
    /// A short unified diff, for small text files.
    pub diff: Option<String>,
}

/// Compares artifact `left` (the reference) with `right`.
pub fn compare(left: &Path, right: &Path) -> Result<Comparison, PackageError> {
    let left_sha256 = sha256_of(left)?;
    let right_sha256 = sha256_of(right)?;
    let mut comparison = Comparison {
        left_sha256,
        right_sha256,
        ..Comparison::default()
    };
    if comparison.identical() {
        return Ok(comparison);
    }
    let index = |entries: Vec<ArtifactEntry>| -> BTreeMap<PathBuf, ArtifactEntry> {
        entries.into_iter().map(|e| (e.path.clone(), e)).collect()
    };
    let l = index(list_artifact(left)?);
    let r = index(list_artifact(right)?);
    let mut text_candidates = BTreeSet::new();
    for (path, a) in &l {
        let Some(b) = r.get(path) else {
            comparison.only_left.push(path.clone());
            continue;
        };
        let mut what = Vec::new();
        if a.kind != b.kind {
            what.push(format!("kind {:?} → {:?}", a.kind, b.kind));
        }
        if a.sha256 != b.sha256 {
            what.push("content".to_string());
            if a.size <= DIFF_MAX_BYTES && b.size <= DIFF_MAX_BYTES {
                text_candidates.insert(path.clone());
            }
        }
        if a.size != b.size {
            what.push(format!("size {} → {}", a.size, b.size));
        }
        if a.mode != b.mode {
            what.push(format!("mode {:o} → {:o}", a.mode, b.mode));
        }
        if a.link_target != b.link_target {
            let show = |t: &Option<PathBuf>| {
                t.as_ref()
                    .map_or_else(|| "-".to_string(), |t| t.display().to_string())
            };
            what.push(format!(
                "link target {} → {}",
                show(&a.link_target),
                show(&b.link_target)
            ));
        }
        if !what.is_empty() {
            comparison.changed.push(Changed {
                path: path.clone(),
                what,
                diff: None,
            });
        }
    }
    comparison.only_right = r.keys().filter(|p| !l.contains_key(*p)).cloned().collect();
    if !text_candidates.is_empty() {
        let lt = read_artifact_files(left, &text_candidates, DIFF_MAX_BYTES)?;
        let rt = read_artifact_files(right, &text_candidates, DIFF_MAX_BYTES)?;
        for c in &mut comparison.changed {
            if let (Some(a), Some(b)) = (lt.get(&c.path), rt.get(&c.path)) {
                c.diff = text_diff(&c.path, a, b);
            }
        }
    }
    Ok(comparison)
}

/// A unified diff of two texts, cut to [`DIFF_MAX_LINES`]; `None` when either is not UTF-8
/// text.
fn text_diff(path: &Path, a: &[u8], b: &[u8]) -> Option<String> {
    let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
        return None;
    };
    if a.contains('\0') || b.contains('\0') {
        return None;
    }
    let name = path.display().to_string();
    let diff = similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string();
    let mut lines: Vec<&str> = diff.lines().collect();
    let cut = lines.len() > DIFF_MAX_LINES;
    lines.truncate(DIFF_MAX_LINES);
    let mut text = lines.join("\n");
    if cut {
        text.push_str("\n…");
    }
    Some(text)
}

fn sha256_of(path: &Path) -> Result<String, PackageError> {
    crate::checksum::hash_file(crate::checksum::Algo::Sha256, path)
        .map(|(hex, _)| hex)
        .map_err(|source| PackageError::ReadArtifact {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, name: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
        let path = dir.join(name);
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        for (p, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, p, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn identical_and_different_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8], u32)] =
            &[("bin/x", b"\x7fELF", 0o755), ("share/a", b"1\n", 0o644)];
        let a = artifact(dir.path(), "a.tar.gz", files);
        let b = artifact(dir.path(), "b.tar.gz", files);
        assert!(compare(&a, &b).unwrap().identical());

        let c = artifact(
            dir.path(),
            "c.tar.gz",
            &[
                ("bin/x", b"\x7fELF", 0o700),
                ("share/a", b"2\n", 0o644),
                ("share/new", b"", 0o644),
            ],
        );
        let cmp = compare(&a, &c).unwrap();
        assert!(!cmp.identical());
        assert_eq!(cmp.only_right, vec![PathBuf::from("share/new")]);
        assert!(cmp.only_left.is_empty());
        assert_eq!(cmp.changed.len(), 2);
        assert_eq!(cmp.changed[0].what, vec!["mode 755 → 700"]);
        assert_eq!(cmp.changed[1].path, PathBuf::from("share/a"));
        let diff = cmp.changed[1].diff.as_deref().unwrap();
        assert!(diff.contains("-1\n+2"), "{diff}");
    }
}
