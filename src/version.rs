//! Runtime versions as upstream projects really number them, and selection with semver
//! requirements.
//!
//! A [`Version`] has one to four numeric components and an optional pre-release: `3.2.8`,
//! `2.10.8.1`, `3.12`, `5.4.0-rc1`, `3.13.0a4`. Versions are totally ordered: numerically
//! component by component (missing components count as 0, so `3.12` sorts with `3.12.0`, and
//! the shorter spelling first), a pre-release before its release, pre-releases compared by
//! identifier (numbers numerically, words alphabetically, numbers before words).
//!
//! A [`VersionReq`] is a semver requirement (`^3.2`, `>=3, <4`, `3.2.*`, `=2.10.8.1`) matched
//! with the `semver` crate. The fourth component is mapped like this: a comparator written with
//! four components (`=2.10.8.1`, `>=2.10.8.2`) compares all four; a comparator written with
//! three or fewer ignores the fourth component of the version, so `2.10.8.1` matches `^2.10`,
//! `~2.10.8` and `2.10.*`. As in semver, a pre-release only matches a comparator that names the
//! same `major.minor.patch` with a pre-release (`>=5.4.0-rc1`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version or requirement string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string is not a runtime version.
    #[error(
        "`{input}` is not a version: expected 1 to 4 numeric components and an optional pre-release (`3.2.8`, `2.10.8.1`, `5.4.0-rc1`, `3.13.0a4`)"
    )]
    Invalid {
        /// The refused text.
        input: String,
    },
    /// The string is not a version requirement.
    #[error("`{input}` is not a version requirement: {reason}")]
    InvalidReq {
        /// The refused text.
        input: String,
        /// What the parser said.
        reason: String,
    },
}

/// One identifier of a pre-release: `rc1` is `rc`, `1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PreId {
    Num(u64),
    Word(String),
}

impl Ord for PreId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PreId::Num(a), PreId::Num(b)) => a.cmp(b),
            (PreId::Num(_), PreId::Word(_)) => Ordering::Less,
            (PreId::Word(_), PreId::Num(_)) => Ordering::Greater,
            (PreId::Word(a), PreId::Word(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for PreId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A runtime version: 1 to 4 numeric components and an optional pre-release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    parts: Vec<u64>,
    /// The pre-release as written, without a leading `-` (empty for a release).
    pre: String,
    /// Whether the pre-release was written with a `-` (`5.4.0-rc1`) rather than glued on
    /// (`3.13.0a4`); kept so that `Display` gives back what was written.
    dash: bool,
    pre_ids: Vec<PreId>,
}

impl Version {
    /// The numeric components as written (1 to 4 of them).
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    /// Component `i` (0-based), 0 where the version does not write it.
    pub fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }

    /// The major component.
    pub fn major(&self) -> u64 {
        self.part(0)
    }

    /// The minor component (0 when not written).
    pub fn minor(&self) -> u64 {
        self.part(1)
    }

    /// The patch component (0 when not written).
    pub fn patch(&self) -> u64 {
        self.part(2)
    }

    /// The pre-release (`rc1`, `a4`), if any.
    pub fn pre_release(&self) -> Option<&str> {
        (!self.pre.is_empty()).then_some(self.pre.as_str())
    }

    /// This version as a semver version: the first three components, and the pre-release with
    /// its letter/digit boundaries turned into dots (`a4` → `a.4`) so that semver orders
    /// `a10` after `a4`. The fourth component is not part of it.
    pub fn to_semver(&self) -> semver::Version {
        let pre = if self.pre_ids.is_empty() {
            semver::Prerelease::EMPTY
        } else {
            let text: Vec<String> = self
                .pre_ids
                .iter()
                .map(|id| match id {
                    PreId::Num(n) => n.to_string(),
                    PreId::Word(w) => w.clone(),
                })
                .collect();
            semver::Prerelease::new(&text.join(".")).unwrap_or(semver::Prerelease::EMPTY)
        };
        semver::Version {
            major: self.major(),
            minor: self.minor(),
            patch: self.patch(),
            pre,
            build: semver::BuildMetadata::EMPTY,
        }
    }
}

fn split_pre(pre: &str) -> Option<Vec<PreId>> {
    let mut ids = Vec::new();
    for piece in pre.split(['.', '-', '_']) {
        if piece.is_empty() {
            return None;
        }
        let mut cur = String::new();
        let mut cur_digit = None;
        for c in piece.chars() {
            if !c.is_ascii_alphanumeric() {
                return None;
            }
            let digit = c.is_ascii_digit();
            if cur_digit.is_some_and(|d| d != digit) {
                ids.push(to_pre_id(&cur));
                cur.clear();
            }
            cur_digit = Some(digit);
            cur.push(c.to_ascii_lowercase());
        }
        ids.push(to_pre_id(&cur));
    }
    Some(ids)
}

fn to_pre_id(s: &str) -> PreId {
    match s.parse::<u64>() {
        Ok(n) => PreId::Num(n),
        Err(_) => PreId::Word(s.to_string()),
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || VersionError::Invalid {
            input: input.to_string(),
        };
        let end = input
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(input.len());
        let (numeric, rest) = input.split_at(end);
        let parts: Vec<u64> = numeric
            .split('.')
            .map(|p| {
                if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect::<Option<_>>()
            .ok_or_else(invalid)?;
        if parts.is_empty() || parts.len() > 4 {
            return Err(invalid());
        }
        let (dash, pre) = match rest.strip_prefix('-') {
            Some(pre) => (true, pre),
            None => (false, rest),
        };
        if !dash && !pre.is_empty() && !pre.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(invalid());
        }
        if dash && pre.is_empty() {
            return Err(invalid());
        }
        let pre_ids = if pre.is_empty() {
            Vec::new()
        } else {
            split_pre(pre).ok_or_else(invalid)?
        };
        Ok(Version {
            parts,
            pre: pre.to_string(),
            dash,
            pre_ids,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nums: Vec<String> = self.parts.iter().map(u64::to_string).collect();
        f.write_str(&nums.join("."))?;
        if !self.pre.is_empty() {
            if self.dash {
                f.write_str("-")?;
            }
            f.write_str(&self.pre)?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        for i in 0..4 {
            match self.part(i).cmp(&other.part(i)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        let pre = match (self.pre_ids.is_empty(), other.pre_ids.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre_ids.cmp(&other.pre_ids),
        };
        // Tie-breaks keep the order total and consistent with `Eq`: `3.12` before `3.12.0`.
        pre.then_with(|| self.parts.len().cmp(&other.parts.len()))
            .then_with(|| self.dash.cmp(&other.dash))
            .then_with(|| self.pre.cmp(&other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone)]
enum Comparator {
    /// Three components or fewer: matched by semver against the first three components.
    Semver(semver::Comparator),
    /// Four components: compared on all four with our own order.
    Four(semver::Op, Version),
}

/// A version requirement: comma-separated comparators, all of which must match.
#[derive(Debug, Clone)]
pub struct VersionReq {
    text: String,
    comparators: Vec<Comparator>,
}

impl VersionReq {
    /// Whether `v` satisfies every comparator.
    pub fn matches(&self, v: &Version) -> bool {
        self.comparators.iter().all(|c| match c {
            Comparator::Semver(c) => c.matches(&v.to_semver()),
            Comparator::Four(op, want) => {
                let o = v.cmp(want);
                match op {
                    semver::Op::Exact => o == Ordering::Equal,
                    semver::Op::Greater => o == Ordering::Greater,
                    semver::Op::GreaterEq => o != Ordering::Less,
                    semver::Op::Less => o == Ordering::Less,
                    semver::Op::LessEq => o != Ordering::Greater,
                    // `~` and `^` keep the first three components and allow later fourths.
                    _ => {
                        o != Ordering::Less
                            && v.major() == want.major()
                            && v.minor() == want.minor()
                            && v.patch() == want.patch()
                    }
                }
            }
        })
    }

    /// Whether this text looks like a requirement rather than a single version: a version
    /// (`3.2.8`) is an exact pick, anything else (`^3.2`, `3.2.*`, `>=3`) a requirement.
    pub fn looks_like_req(text: &str) -> bool {
        text.parse::<Version>().is_err()
    }
}

impl FromStr for VersionReq {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| VersionError::InvalidReq {
            input: input.to_string(),
            reason,
        };
        let mut comparators = Vec::new();
        for piece in input.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                return Err(bad("empty comparator".into()));
            }
            let op_len = piece
                .find(|c: char| c.is_ascii_alphanumeric() || c == '*')
                .unwrap_or(piece.len());
            let (op, rest) = piece.split_at(op_len);
            let rest = rest.trim();
            let numeric_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let components = rest[..numeric_len].split('.').count();
            if components == 4 {
                let version: Version =
                    rest.parse().map_err(|e: VersionError| bad(e.to_string()))?;
                let op = match op.trim() {
                    "" | "=" => semver::Op::Exact,
                    ">" => semver::Op::Greater,
                    ">=" => semver::Op::GreaterEq,
                    "<" => semver::Op::Less,
                    "<=" => semver::Op::LessEq,
                    "~" => semver::Op::Tilde,
                    "^" => semver::Op::Caret,
                    other => return Err(bad(format!("unknown operator `{other}`"))),
                };
                comparators.push(Comparator::Four(op, version));
            } else if components > 4 {
                return Err(bad("more than 4 components".into()));
            } else {
                // Bring glued pre-releases (`3.13.0a4`) into semver's spelling.
                let text = match rest.parse::<Version>() {
                    Ok(v) if v.pre_release().is_some() => {
                        format!("{op}{}", v.to_semver())
                    }
                    _ => piece.to_string(),
                };
                // Through `semver::VersionReq` so that `*` (no comparator at all) works too.
                let req = semver::VersionReq::parse(&text).map_err(|e| bad(e.to_string()))?;
                comparators.extend(req.comparators.into_iter().map(Comparator::Semver));
            }
        }
        Ok(VersionReq {
            text: input.to_string(),
            comparators,
        })
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_what_runtimes_use() {
        for (s, parts, pre) in [
            ("3.2.8", &[3u64, 2, 8][..], None),
            ("2.10.8.1", &[2, 10, 8, 1][..], None),
            ("3.12", &[3, 12][..], None),
            ("5", &[5][..], None),
            ("5.4.0-rc1", &[5, 4, 0][..], Some("rc1")),
            ("3.13.0a4", &[3, 13, 0][..], Some("a4")),
            ("3.0.0-preview1", &[3, 0, 0][..], Some("preview1")),
        ] {
            let ver = v(s);
            assert_eq!(ver.parts(), parts, "{s}");
            assert_eq!(ver.pre_release(), pre, "{s}");
            assert_eq!(ver.to_string(), s, "round trip of {s}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for s in [
            "",
            "runtime",
            "1.2.3.4.5",
            "1..2",
            ".1",
            "1.",
            "01.2",
            "1.2-",
            "1.2.3+b",
            "1.2.3 ",
            "v1.2",
            "1.2.3-rc!",
        ] {
            assert!(s.parse::<Version>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn orders_like_upstream() {
        let sorted = [
            "2.7",
            "3",
            "3.2.8",
            "3.10.0-rc1",
            "3.10.0",
            "3.12",
            "3.12.0",
            "3.12.1",
            "3.13.0a4",
            "3.13.0a10",
            "3.13.0b1",
            "3.13.0rc1",
            "3.13.0",
            "5.4.0-alpha",
            "5.4.0-rc1",
            "5.4.0-rc2",
            "5.4.0",
            "5.4.0.1",
            "5.4.0.10",
            "5.4.1",
        ];
        let mut shuffled: Vec<Version> = sorted.iter().rev().map(|s| v(s)).collect();
        shuffled.sort();
        let got: Vec<String> = shuffled.iter().map(ToString::to_string).collect();
        assert_eq!(got, sorted);
        assert!(v("3.12") != v("3.12.0"));
        assert_eq!(v("3.12").cmp(&v("3.12")), Ordering::Equal);
    }

    #[test]
    fn requirement_table() {
        let table: &[(&str, &str, bool)] = &[
            ("^3.2", "3.2.8", true),
            ("^3.2", "3.4.0", true),
            ("^3.2", "4.0.0", false),
            ("^3.2", "3.1.9", false),
            (">=3, <4", "3.99", true),
            (">=3, <4", "4", false),
            ("3.2.*", "3.2.0", true),
            ("3.2.*", "3.3.0", false),
            ("=2.10.8.1", "2.10.8.1", true),
            ("=2.10.8.1", "2.10.8.2", false),
            ("=2.10.8.1", "2.10.8", false),
            (">=2.10.8.2", "2.10.8.10", true),
            (">=2.10.8.2", "2.10.8.1", false),
            ("^2.10", "2.10.8.1", true),
            ("~2.10.8", "2.10.8.1", true),
            ("=3.12", "3.12.7", true),
            ("^5.4", "5.4.0-rc1", false),
            (">=5.4.0-rc1", "5.4.0-rc2", true),
            (">=3.13.0a4", "3.13.0a10", true),
            (">=3.13.0a10", "3.13.0a4", false),
            ("*", "1.0", true),
        ];
        for (req, ver, want) in table {
            let r: VersionReq = req.parse().unwrap();
            assert_eq!(r.matches(&v(ver)), *want, "{req} matches {ver}");
        }
    }

    #[test]
    fn bad_requirements_are_refused() {
        for s in ["", "^", ">=3,", "1.2.3.4.5", "~>1.2", "=a.b.c.d"] {
            assert!(s.parse::<VersionReq>().is_err(), "{s:?} should be refused");
        }
        assert!(VersionReq::looks_like_req("^3.2"));
        assert!(!VersionReq::looks_like_req("3.2.8"));
    }
}
