//! The inventory buildpacks read: `<stack>/inventory/<runtime>.toml` in a store, in exactly the
//! format of libherokubuildpack's `inventory` module (heroku/libcnb.rs), so Heroku's Rust
//! buildpacks consume it as is:
//!
//! ```toml
//! [[artifacts]]
//! version = "5.4.4"
//! os = "linux"
//! arch = "amd64"
//! url = "https://bucket.s3.us-east-1.amazonaws.com/bookworm/lua-5.4.4.tar.gz"
//! checksum = "sha256:8c0d0df9…"
//!
//! [artifacts.metadata]
//! recipe-digest = "sha256:…"
//! ```
//!
//! Entries are sorted by version (then os and arch); one entry per version, os and arch.
//! Updates are optimistic: read the document with its tag, change it, write it only if the tag
//! is unchanged, else read again and retry — so parallel publishers on different machines never
//! lose an entry. The artifact is always written before its entry, so a crash in between leaves
//! an orphan object (which `rebuild` picks up), never an entry that points at nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PublishError, Store, Written};
use crate::version::Version;

/// How often a conditional update is tried before giving up.
const ATTEMPTS: u32 = 50;

/// One artifact in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The runtime version.
    pub version: String,
    /// `linux`.
    pub os: String,
    /// The architecture it was built for.
    pub arch: crate::arch::Arch,
    /// Where buildpacks download it.
    pub url: String,
    /// Its checksum, written `sha256:<hex>`.
    pub checksum: crate::checksum::Checksum,
    /// Provenance.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// An inventory document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The artifacts, sorted.
    #[serde(default)]
    pub artifacts: Vec<Entry>,
}

impl Inventory {
    /// Parses a document.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The document's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an inventory always serialises")
    }

    /// Adds `entry`, replacing an entry of the same version, os and arch; keeps the order.
    pub fn upsert(&mut self, entry: Entry) {
        self.artifacts
            .retain(|e| !(e.version == entry.version && e.os == entry.os && e.arch == entry.arch));
        self.artifacts.push(entry);
        self.sort();
    }

    /// Sorts by version (as runtimes order them; unparsable ones last, by text), os, arch.
    pub fn sort(&mut self) {
        self.artifacts.sort_by(|a, b| {
            let key = |e: &Entry| e.version.parse::<Version>().ok();
            match (key(a), key(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.version.cmp(&b.version),
            }
            .then_with(|| a.os.cmp(&b.os))
            .then_with(|| a.arch.cmp(&b.arch))
        });
    }
}

/// The key of a runtime's inventory in a store.
pub fn key(stack: &str, runtime: &str) -> String {
    format!("{stack}/inventory/{runtime}.toml")
}

/// Reads a runtime's inventory (empty when there is none yet).
pub async fn read(
    store: &impl Store,
    stack: &str,
    runtime: &str,
) -> Result<Option<Inventory>, PublishError> {
    let key = key(stack, runtime);
    match store.read_doc(&key).await? {
        None => Ok(None),
        Some((bytes, _)) => parse_doc(store, &key, &bytes).map(Some),
    }
}

fn parse_doc(store: &impl Store, key: &str, bytes: &[u8]) -> Result<Inventory, PublishError> {
    let bad = |message: String| PublishError::BadDocument {
        location: format!("{}/{key}", store.describe().trim_end_matches('/')),
        what: "inventory",
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    Inventory::parse(text).map_err(|e| bad(e.message().to_string()))
}

/// Changes a runtime's inventory with `change`, retrying on concurrent updates.
pub async fn update(
    store: &impl Store,
    stack: &str,
    runtime: &str,
    mut change: impl FnMut(&mut Inventory),
) -> Result<Inventory, PublishError> {
    let key = key(stack, runtime);
    for attempt in 0..ATTEMPTS {
        let (mut inventory, tag) = match store.read_doc(&key).await? {
            None => (Inventory::default(), None),
            Some((bytes, tag)) => (parse_doc(store, &key, &bytes)?, Some(tag)),
        };
        change(&mut inventory);
        inventory.sort();
        match store
            .write_doc(&key, inventory.to_toml().as_bytes(), tag.as_ref())
            .await?
        {
            Written::Done => return Ok(inventory),
            Written::Conflict => {
                // Someone else won this round: back off a little (jittered) and retry.
                let jitter = u64::from(std::process::id() % 7 + attempt % 5);
                tokio::time::sleep(Duration::from_millis(10 + 15 * jitter)).await;
            }
        }
    }
    Err(PublishError::Contended {
        location: format!("{}/{key}", store.describe().trim_end_matches('/')),
        attempts: ATTEMPTS,
    })
}

/// Adds (or replaces) one entry.
pub async fn add(
    store: &impl Store,
    stack: &str,
    runtime: &str,
    entry: Entry,
) -> Result<Inventory, PublishError> {
    update(store, stack, runtime, |inv| inv.upsert(entry.clone())).await
}

/// What `rebuild` did for one runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The runtime.
    pub runtime: String,
    /// How many entries its inventory has now.
    pub entries: usize,
}

/// Regenerates the inventories of a stack from the artifacts in the store and their metadata
/// (repair after manual deletion). Artifacts whose metadata does not name a runtime and version
/// are returned as skipped. Each of `known` (the catalogue's runtimes) that has an inventory but
/// no artifact left gets an empty one.
pub async fn rebuild(
    store: &impl Store,
    stack: &str,
    os: &str,
    default_arch: crate::arch::Arch,
    known: &[String],
) -> Result<(Vec<Rebuilt>, Vec<String>), PublishError> {
    let mut by_runtime: BTreeMap<String, Inventory> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, stored) in store.list(stack).await? {
        let (Some(runtime), Some(version)) = (
            stored.metadata.get("runtime"),
            stored.metadata.get("version"),
        ) else {
            skipped.push(name);
            continue;
        };
        let arch = stored
            .metadata
            .get("arch")
            .and_then(|a| crate::arch::Arch::parse(a))
            .unwrap_or(default_arch);
        let entry = Entry {
            version: version.clone(),
            os: os.to_string(),
            arch,
            url: store.public_url(stack, &name),
            checksum: crate::checksum::Checksum::new(crate::checksum::Algo::Sha256, &stored.sha256)
                .map_err(|e| PublishError::BadDocument {
                    location: format!("{}/{stack}/{name}", store.describe()),
                    what: "artifact's stored sha256",
                    message: e.to_string(),
                })?,
            metadata: entry_metadata(&stored.metadata),
        };
        by_runtime.entry(runtime.clone()).or_default().upsert(entry);
    }
    // Inventories whose artifacts are all gone: emptied, not left listing missing files.
    for runtime in known {
        if !by_runtime.contains_key(runtime)
            && read(store, stack, runtime)
                .await?
                .is_some_and(|inv| !inv.artifacts.is_empty())
        {
            by_runtime.insert(runtime.clone(), Inventory::default());
        }
    }
    let mut out = Vec::new();
    for (runtime, fresh) in by_runtime {
        let entries = fresh.artifacts.len();
        update(store, stack, &runtime, |inv| *inv = fresh.clone()).await?;
        out.push(Rebuilt { runtime, entries });
    }
    Ok((out, skipped))
}

/// The provenance that goes into an inventory entry's metadata (what the artifact's metadata
/// holds, less what the entry already says).
pub fn entry_metadata(metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    metadata
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "runtime" | "version" | "arch" | "sha256"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str, arch: &str, sum: &str) -> Entry {
        Entry {
            version: version.into(),
            os: "linux".into(),
            arch: crate::arch::Arch::parse(arch).unwrap(),
            url: format!("https://example.invalid/lua-{version}.tar.gz"),
            checksum: format!("sha256:{}", sum.repeat(32)).parse().unwrap(),
            metadata: [("recipe-digest".to_string(), "sha256:00".to_string())].into(),
        }
    }

    #[test]
    fn upsert_keeps_one_entry_per_version_and_sorts() {
        let mut inv = Inventory::default();
        for v in ["5.4.10", "5.4.2", "5.1.5", "5.4.2"] {
            inv.upsert(entry(v, "amd64", "aa"));
        }
        inv.upsert(entry("5.4.2", "arm64", "bb"));
        inv.upsert(entry("5.4.2", "amd64", "cc"));
        let got: Vec<(String, String, String)> = inv
            .artifacts
            .iter()
            .map(|e| {
                (
                    e.version.clone(),
                    e.arch.to_string(),
                    e.checksum.hex()[..2].to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("5.1.5", "amd64", "aa"),
                ("5.4.2", "amd64", "cc"),
                ("5.4.2", "arm64", "bb"),
                ("5.4.10", "amd64", "aa"),
            ]
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        );
    }

    #[test]
    fn writes_the_libherokubuildpack_layout() {
        let mut inv = Inventory::default();
        inv.upsert(entry("5.4.4", "amd64", "ab"));
        let text = inv.to_toml();
        assert!(
            text.starts_with(
                "[[artifacts]]\nversion = \"5.4.4\"\nos = \"linux\"\narch = \"amd64\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n[artifacts.metadata]\nrecipe-digest = "),
            "{text}"
        );
        assert_eq!(Inventory::parse(&text).unwrap(), inv);
        assert_eq!(Inventory::parse("").unwrap(), Inventory::default());
    }
}
