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
//! an orphan object (which `rebuild` picks up), never an entry that points at nothing. A
//! publisher's entry takes its checksum from the object the store holds, read after the
//! document ([`add_published`]); `rebuild` reads each document before listing the store, so
//! neither can write an entry that disagrees with the store or drop one published meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PublishError, Store, Tag, Written};
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

/// A runtime's inventory and its tag, if it exists.
async fn read_tagged(
    store: &impl Store,
    key: &str,
) -> Result<Option<(Inventory, Tag)>, PublishError> {
    match store.read_doc(key).await? {
        None => Ok(None),
        Some((bytes, tag)) => Ok(Some((parse_doc(store, key, &bytes)?, tag))),
    }
}

/// Someone else won this round of a conditional write: back off a little (jittered).
async fn back_off(attempt: u32) {
    let jitter = u64::from(std::process::id() % 7 + attempt % 5);
    tokio::time::sleep(Duration::from_millis(10 + 15 * jitter)).await;
}

fn contended(store: &impl Store, key: &str) -> PublishError {
    PublishError::Contended {
        location: format!("{}/{key}", store.describe().trim_end_matches('/')),
        attempts: ATTEMPTS,
    }
}

/// Changes a runtime's inventory with `change`, retrying on concurrent updates.
pub async fn update(
    store: &impl Store,
    stack: &str,
    runtime: &str,
    mut change: impl FnMut(&mut Inventory),
) -> Result<Inventory, PublishError> {
    update_with(store, stack, runtime, |mut inventory| {
        change(&mut inventory);
        std::future::ready(Ok(inventory))
    })
    .await
}

/// Changes a runtime's inventory with `change`, which may ask the store (it runs after each
/// read of the document, before the conditional write), retrying on concurrent updates.
async fn update_with<F, Fut>(
    store: &impl Store,
    stack: &str,
    runtime: &str,
    mut change: F,
) -> Result<Inventory, PublishError>
where
    F: FnMut(Inventory) -> Fut,
    Fut: Future<Output = Result<Inventory, PublishError>>,
{
    let key = key(stack, runtime);
    for attempt in 0..ATTEMPTS {
        let (inventory, tag) = match read_tagged(store, &key).await? {
            None => (Inventory::default(), None),
            Some((inventory, tag)) => (inventory, Some(tag)),
        };
        let mut inventory = change(inventory).await?;
        inventory.sort();
        match store
            .write_doc(&key, inventory.to_toml().as_bytes(), tag.as_ref())
            .await?
        {
            Written::Done => return Ok(inventory),
            Written::Conflict => back_off(attempt).await,
        }
    }
    Err(contended(store, &key))
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

/// Adds the entry of the artifact `<stack>/<name>` that was just published, `entry.checksum`
/// being the sha256 of the bytes sent. After each read of the document, a look-up of the
/// artifact compares what the store holds with what was sent: when another publisher replaced
/// it since (two `--force` publishers, or a store that ignores conditional writes), nothing is
/// written and the error says so — the entry the last writer leaves always names the stored
/// bytes, since every replacement is followed by its publisher's own update.
pub async fn add_published(
    store: &impl Store,
    stack: &str,
    runtime: &str,
    name: &str,
    entry: Entry,
) -> Result<Inventory, PublishError> {
    let location = || format!("{}/{stack}/{name}", store.describe().trim_end_matches('/'));
    update_with(store, stack, runtime, |mut inventory| {
        let entry = entry.clone();
        async move {
            let stored = store.lookup(stack, name).await?;
            let stored = stored.map(|s| s.sha256);
            if stored.as_deref() != Some(entry.checksum.hex())
                || entry.checksum.algo() != crate::checksum::Algo::Sha256
            {
                return Err(PublishError::Superseded {
                    location: location(),
                    stored: stored.map(|s| format!("sha256:{s}")),
                    sent: entry.checksum.to_string(),
                });
            }
            inventory.upsert(entry);
            Ok(inventory)
        }
    })
    .await
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
///
/// Safe while others publish: each inventory is read (with its tag) *before* the store is
/// listed, and written only if unchanged since (`If-Match`). An entry is only ever added after
/// its artifact is in the store, so every entry the document had when read has its artifact in
/// the listing; an entry added after the read makes the write fail, and that runtime goes round
/// again (read, list, write). A runtime first seen in the listing goes round again too, its
/// document read first.
pub async fn rebuild(
    store: &impl Store,
    stack: &str,
    os: &str,
    default_arch: crate::arch::Arch,
    known: &[String],
) -> Result<(Vec<Rebuilt>, Vec<String>), PublishError> {
    let mut pending: BTreeSet<String> = known.iter().cloned().collect();
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in 0..ATTEMPTS {
        // The documents first, then the listing.
        let mut docs = BTreeMap::new();
        for runtime in &pending {
            let key = key(stack, runtime);
            docs.insert(runtime.clone(), read_tagged(store, &key).await?);
        }
        let (by_runtime, skipped) = listed(store, stack, os, default_arch).await?;
        let mut again: BTreeSet<String> = by_runtime
            .keys()
            .filter(|r| !done.contains_key(*r) && !docs.contains_key(*r))
            .cloned()
            .collect();
        for (runtime, doc) in docs {
            let fresh = match (by_runtime.get(&runtime), &doc) {
                (Some(fresh), _) => fresh.clone(),
                // Every artifact gone: emptied, not left listing missing files.
                (None, Some((old, _))) if !old.artifacts.is_empty() => Inventory::default(),
                (None, _) => continue,
            };
            let tag = doc.as_ref().map(|(_, tag)| tag);
            match store
                .write_doc(&key(stack, &runtime), fresh.to_toml().as_bytes(), tag)
                .await?
            {
                Written::Done => {
                    done.insert(runtime, fresh.artifacts.len());
                }
                Written::Conflict => {
                    again.insert(runtime);
                }
            }
        }
        if again.is_empty() {
            let rebuilt = done
                .into_iter()
                .map(|(runtime, entries)| Rebuilt { runtime, entries })
                .collect();
            return Ok((rebuilt, skipped));
        }
        pending = again;
        back_off(attempt).await;
    }
    let first = pending.into_iter().next().unwrap_or_default();
    Err(contended(store, &key(stack, &first)))
}

/// The inventories the artifacts of `stack` make, by runtime, and the artifacts whose metadata
/// names no runtime and version.
async fn listed(
    store: &impl Store,
    stack: &str,
    os: &str,
    default_arch: crate::arch::Arch,
) -> Result<(BTreeMap<String, Inventory>, Vec<String>), PublishError> {
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
    Ok((by_runtime, skipped))
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
