//! Reproducibility: what `packager verify` varies in the build it compares, and comparing two
//! builds of the same artifact entry by entry.
//!
//! The rebuild is made under [`Variations`] of what the artifact may not depend on, in the
//! manner of reprotest: another host name, umask, time zone and `{jobs}` (the build key never
//! sees them). A [`Verification`] says which were applied, with their normal and varied values.
//!
//! [`compare`] lists both artifacts with [`crate::package::list_artifact`] and reports entries
//! only in one, and entries whose kind, content, mode, size or link target differ; small text
//! files that differ get a short unified diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Surroundings;
use crate::package::{ArtifactEntry, PackageError, list_artifact, read_artifact_files};

/// One thing `packager verify`'s rebuild changes that the artifact may not depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variation {
    /// The build container's host name.
    Hostname,
    /// The umask of the phases' commands.
    Umask,
    /// `{jobs}` and `$JOBS` (and the CPUs the container gets with them).
    Jobs,
    /// The time zone (`TZ`); the clock itself is later in any rebuild.
    Time,
}

impl Variation {
    /// Every variation.
    pub const ALL: [Variation; 4] = [
        Variation::Hostname,
        Variation::Umask,
        Variation::Jobs,
        Variation::Time,
    ];

    /// Its name, as `--vary` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Variation::Hostname => "hostname",
            Variation::Umask => "umask",
            Variation::Jobs => "jobs",
            Variation::Time => "time",
        }
    }
}

impl std::fmt::Display for Variation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variation::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Variation::ALL.iter().map(|v| v.name()).collect();
                format!(
                    "unknown variation `{s}`: expected {} or none",
                    names.join(", ")
                )
            })
    }
}

/// The variations a rebuild is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variations(BTreeSet<Variation>);

impl Default for Variations {
    /// All of them.
    fn default() -> Self {
        Variations::all()
    }
}

impl Variations {
    /// Every [`Variation`].
    pub fn all() -> Self {
        Variations(Variation::ALL.into_iter().collect())
    }

    /// None: the rebuild is made as `packager build` makes it.
    pub fn none() -> Self {
        Variations(BTreeSet::new())
    }

    /// Only these.
    pub fn only(variations: impl IntoIterator<Item = Variation>) -> Self {
        Variations(variations.into_iter().collect())
    }

    /// Whether nothing is varied.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `v` is one of them.
    pub fn contains(&self, v: Variation) -> bool {
        self.0.contains(&v)
    }

    /// The rebuild's host name, umask and time zone: the varied ones where asked, else the
    /// normal ones.
    pub fn surroundings(&self) -> Surroundings {
        let (normal, varied) = (Surroundings::default(), Surroundings::varied());
        let pick = |v, varied: String, normal: String| match self.contains(v) {
            true => varied,
            false => normal,
        };
        Surroundings {
            hostname: pick(Variation::Hostname, varied.hostname, normal.hostname),
            umask: match self.contains(Variation::Umask) {
                true => varied.umask,
                false => normal.umask,
            },
            tz: pick(Variation::Time, varied.tz, normal.tz),
        }
    }

    /// The rebuild's `{jobs}` when a normal build has `normal`: twice as many. Any other count
    /// shows a build that depends on it; more, not fewer, keeps a long rebuild from taking
    /// twice as long (the container's CPUs stay capped at the machine's).
    pub fn jobs(&self, normal: usize) -> usize {
        match self.contains(Variation::Jobs) {
            false => normal,
            true => normal.max(1) * 2,
        }
    }

    /// What each variation changed, for the report: a normal build's value and the rebuild's.
    pub fn applied(&self, normal_jobs: usize) -> Vec<Applied> {
        let (normal, varied) = (Surroundings::default(), self.surroundings());
        self.0
            .iter()
            .map(|&variation| {
                let (normal, varied) = match variation {
                    Variation::Hostname => (normal.hostname.clone(), varied.hostname.clone()),
                    Variation::Umask => (
                        format!("{:04o}", normal.umask),
                        format!("{:04o}", varied.umask),
                    ),
                    Variation::Jobs => {
                        (normal_jobs.to_string(), self.jobs(normal_jobs).to_string())
                    }
                    Variation::Time => (format!("TZ={}", normal.tz), format!("TZ={}", varied.tz)),
                };
                Applied {
                    variation,
                    normal,
                    varied,
                }
            })
            .collect()
    }
}

/// One variation as a rebuild applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// What was varied.
    pub variation: Variation,
    /// Its value in a normal build on this machine (the first build of `--twice`).
    pub normal: String,
    /// Its value in the rebuild.
    pub varied: String,
}

/// What the rebuild is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The artifact the store holds.
    Published,
    /// A normal build made just before (`--twice`).
    FirstBuild,
}

impl Reference {
    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Reference::Published => "the published artifact",
            Reference::FirstBuild => "the first build",
        }
    }
}

/// The result of `packager verify` for one version.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The runtime.
    pub runtime: String,
    /// The version.
    pub version: String,
    /// What the rebuild was compared with.
    pub reference: Reference,
    /// The variations the rebuild was made under.
    pub variations: Vec<Applied>,
    /// How the two differ.
    pub comparison: Comparison,
    /// The two artifacts, reference first, when asked to keep them.
    pub kept: Option<(PathBuf, PathBuf)>,
}

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

impl Serialize for Comparison {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Comparison", 6)?;
        s.serialize_field("identical", &self.identical())?;
        s.serialize_field("left_sha256", &self.left_sha256)?;
        s.serialize_field("right_sha256", &self.right_sha256)?;
        s.serialize_field("only_left", &self.only_left)?;
        s.serialize_field("only_right", &self.only_right)?;
        s.serialize_field("changed", &self.changed)?;
        s.end()
    }
}

/// One entry that differs between the two artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    fn each_variation_changes_its_own_value() {
        let all = Variations::all();
        let normal = Surroundings::default();
        let varied = all.surroundings();
        assert_ne!(varied.hostname, normal.hostname);
        assert_ne!(varied.umask, normal.umask);
        assert_ne!(varied.tz, normal.tz);
        assert_eq!((all.jobs(8), all.jobs(2), all.jobs(1)), (16, 4, 2));
        assert_eq!(Variations::none().surroundings(), normal);
        assert_eq!(Variations::none().jobs(8), 8);
        assert!(Variations::none().applied(4).is_empty());

        let only = Variations::only([Variation::Jobs]);
        assert_eq!(only.surroundings(), normal);
        let applied = only.applied(4);
        assert_eq!(
            applied,
            [Applied {
                variation: Variation::Jobs,
                normal: "4".into(),
                varied: "8".into()
            }]
        );
        let names: Vec<String> = all
            .applied(2)
            .iter()
            .map(|a| format!("{}: {} → {}", a.variation, a.normal, a.varied))
            .collect();
        assert_eq!(
            names,
            [
                "hostname: packager-build → varied-host",
                "umask: 0022 → 0002",
                "jobs: 2 → 4",
                "time: TZ=UTC → TZ=<+14>-14"
            ]
        );
        assert_eq!("umask".parse::<Variation>(), Ok(Variation::Umask));
        assert!(
            "clock"
                .parse::<Variation>()
                .unwrap_err()
                .contains("hostname, umask")
        );
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
