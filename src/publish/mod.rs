//! Publishing artifacts to a store. The local store (a folder) is the embedded default; every
//! store has the same layout under its root:
//!
//! - `<stack>/<artifact>` — the artifact;
//! - `<stack>/<artifact>.sha256` (local) / the object's checksum (remote) — its sha256;
//! - `<stack>/inventory/<runtime>.toml` — the inventory buildpacks read.
//!
//! A store never overwrites silently: publishing an artifact whose name exists with identical
//! bytes is a no-op success; with different bytes it is refused unless forced. Small documents
//! (inventories) are written with optimistic concurrency: read with a tag, write only if the tag
//! is unchanged.

pub mod inventory;
pub mod local;
pub mod s3;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

pub use local::LocalStore;
pub use s3::{ChecksumMode, S3Options, S3Store};

/// An artifact ready to publish: the packed file, the name it gets in the store and the
/// provenance stored with it (a build's [`crate::package::Artifact`] is the file alone).
#[derive(Debug, Clone)]
pub struct Upload {
    /// The artifact (`.tar.gz` or `.tar.zst`) on the host.
    pub path: PathBuf,
    /// Its file name in the store.
    pub name: String,
    /// The stack it was built on (the store's first path level).
    pub stack: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Provenance stored with it (S3 object metadata, a local sidecar): short ASCII keys
    /// (`recipe-digest`, `stack-image`, `sources`, `packager-version`, …) and ASCII values.
    pub metadata: BTreeMap<String, String>,
}

/// Whether a file name in a store's `<stack>/` is an artifact's: ends in one of the formats'
/// extensions (`.tar.gz`, `.tar.zst`) and is not hidden (a temporary file).
pub fn is_artifact_name(name: &str) -> bool {
    !name.starts_with('.') && crate::package::ArtifactFormat::from_name(name).is_some()
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The artifact is new in the store.
    Published,
    /// The store already had these exact bytes under that name.
    AlreadyPublished,
    /// Different bytes were replaced (`--force`).
    Replaced,
}

/// Where an artifact ended up.
#[derive(Debug, Clone)]
pub struct Published {
    /// Where it is: a path for the local store, an `s3://` URL for S3.
    pub location: String,
    /// What happened.
    pub outcome: PublishOutcome,
}

/// An artifact as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The provenance stored with it.
    pub metadata: BTreeMap<String, String>,
}

/// The version of a document as read, for a conditional write (an S3 ETag; for the local
/// store, a hash of the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub String);

/// How a conditional write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The document was written.
    Done,
    /// Someone else changed (or created) it since it was read: read again and retry.
    Conflict,
}

/// What went wrong publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The name exists with other bytes.
    #[error(
        "{location} already exists with different content (store has sha256:{existing}, this build made sha256:{new})"
    )]
    Conflict {
        /// The artifact's place in the store.
        location: String,
        /// The stored checksum.
        existing: String,
        /// The new checksum.
        new: String,
    },
    /// A file of the store could not be read or written.
    #[error("cannot access the store at {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
    /// The artifact's file could not be read, or is not what the build made.
    #[error("cannot upload {}: {message}", path.display())]
    Artifact {
        /// The file on the host.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The store URL is not one we know.
    #[error(
        "`{0}` is not a store: give a folder path, a file:// URL or an s3://BUCKET[/PREFIX] URL"
    )]
    BadUrl(String),
    /// A stored document could not be understood.
    #[error("{location} is not a valid {what}: {message}")]
    BadDocument {
        /// Where it is.
        location: String,
        /// What it should be.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// Optimistic concurrency kept losing.
    #[error(
        "{location} kept changing under us ({attempts} attempts); another publisher is very busy"
    )]
    Contended {
        /// The object or document (`s3://…` or a path).
        location: String,
        /// How often we tried.
        attempts: u32,
    },
    /// After our upload, another publisher replaced the artifact (two `--force` publishers, or
    /// a store that ignores conditional writes): its inventory entry is not written.
    #[error(
        "{location} now holds {}, not the {sent} this build uploaded: another publisher replaced it since; its inventory entry was not written",
        stored.as_deref().unwrap_or("nothing")
    )]
    Superseded {
        /// The artifact's place in the store.
        location: String,
        /// The stored checksum (`sha256:<hex>`), `None` when the object is gone.
        stored: Option<String>,
        /// What this build uploaded (`sha256:<hex>`).
        sent: String,
    },
    /// A remote store failed (S3): what we were doing, where, and what it said.
    #[error("{action} {location} failed: {message}")]
    Remote {
        /// What we were doing (`upload`, `HEAD`, …).
        action: String,
        /// The object or bucket (`s3://bucket/key`), never with credentials.
        location: String,
        /// What the store said (redacted).
        message: String,
        /// What the user can do.
        hint: Option<String>,
    },
}

impl PublishError {
    /// Whether the store URL itself is wrong; every other publish error is an operation that
    /// failed.
    pub fn is_usage(&self) -> bool {
        matches!(self, PublishError::BadUrl(_))
    }

    /// What the user can do, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            PublishError::Conflict { .. } => Some(
                "buildpacks pin what they downloaded: bump the recipe's version or revision instead, or pass --force to replace it"
                    .into(),
            ),
            PublishError::BadUrl(_) => Some(
                "for example --store ./dist, --store file:///srv/artifacts or --store s3://my-bucket/runtimes"
                    .into(),
            ),
            PublishError::Superseded { .. } => Some(
                "the other publisher's entry stands; publish again to check (with --force only if this build must win), and `packager inventory --rebuild` makes the inventories match the store"
                    .into(),
            ),
            PublishError::Remote { hint, .. } => hint.clone(),
            _ => None,
        }
    }
}

/// The rule every store applies when the name already holds an artifact whose sha256 is
/// `existing`: the same bytes are already published (`Some(AlreadyPublished)`); other bytes are
/// refused, naming both checksums, unless `force` (`None`: go ahead and replace them).
pub fn decide_existing(
    existing: String,
    artifact: &Upload,
    force: bool,
    location: impl FnOnce() -> String,
) -> Result<Option<PublishOutcome>, PublishError> {
    if existing == artifact.sha256 {
        return Ok(Some(PublishOutcome::AlreadyPublished));
    }
    if force {
        return Ok(None);
    }
    Err(PublishError::Conflict {
        location: location(),
        existing,
        new: artifact.sha256.clone(),
    })
}

/// A place artifacts are published to.
pub trait Store: Send + Sync {
    /// The store as the user named it (`./dist`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// Publishes `artifact` under `<stack>/<name>`, refusing to replace different bytes unless
    /// `force`. The artifact is complete in the store (or absent) when this returns.
    fn publish(
        &self,
        artifact: &Upload,
        force: bool,
    ) -> impl Future<Output = Result<Published, PublishError>> + Send;

    /// The artifact stored under `<stack>/<name>`, if there is one.
    fn lookup(
        &self,
        stack: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Stored>, PublishError>> + Send;

    /// Copies the artifact stored under `<stack>/<name>` to `dest` (a dependency to build
    /// against), verifying its sha256 on the way.
    fn download(
        &self,
        stack: &str,
        name: &str,
        dest: &std::path::Path,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Every artifact (`.tar.gz` or `.tar.zst`, see [`is_artifact_name`]) directly under
    /// `<stack>/`, by name.
    fn list(
        &self,
        stack: &str,
    ) -> impl Future<Output = Result<Vec<(String, Stored)>, PublishError>> + Send;

    /// A small document (`<stack>/inventory/<runtime>.toml`) and its tag, if it exists.
    fn read_doc(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, Tag)>, PublishError>> + Send;

    /// Writes a small document only if it is still at `expected` (`None`: only if it does not
    /// exist yet).
    fn write_doc(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&Tag>,
    ) -> impl Future<Output = Result<Written, PublishError>> + Send;

    /// The URL buildpacks download `<stack>/<name>` from.
    fn public_url(&self, stack: &str, name: &str) -> String;
}

/// Any of the stores, chosen by URL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// A folder.
    Local(LocalStore),
    /// An S3 bucket (AWS or S3-compatible).
    S3(S3Store),
}

impl AnyStore {
    /// Opens the store a `--store` URL names: a folder path, a `file://` URL or
    /// `s3://BUCKET[/PREFIX]` (with default [`S3Options`]).
    pub async fn open(url: &str) -> Result<Self, PublishError> {
        Self::open_with(url, S3Options::default()).await
    }

    /// Opens the store a `--store` URL names; `s3` applies to an `s3://` store.
    pub async fn open_with(url: &str, s3: S3Options) -> Result<Self, PublishError> {
        if url.starts_with("s3://") {
            return Ok(AnyStore::S3(S3Store::open(url, s3).await?));
        }
        Ok(AnyStore::Local(LocalStore::from_url(url)?))
    }
}

/// Forwards a call to whichever store this is.
macro_rules! each_store {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Local($s) => $call,
            AnyStore::S3($s) => $call,
        }
    };
}

impl Store for AnyStore {
    fn describe(&self) -> String {
        each_store!(self, s => s.describe())
    }

    async fn publish(&self, artifact: &Upload, force: bool) -> Result<Published, PublishError> {
        each_store!(self, s => s.publish(artifact, force).await)
    }

    async fn lookup(&self, stack: &str, name: &str) -> Result<Option<Stored>, PublishError> {
        each_store!(self, s => s.lookup(stack, name).await)
    }

    async fn list(&self, stack: &str) -> Result<Vec<(String, Stored)>, PublishError> {
        each_store!(self, s => s.list(stack).await)
    }

    async fn download(
        &self,
        stack: &str,
        name: &str,
        dest: &std::path::Path,
    ) -> Result<(), PublishError> {
        each_store!(self, s => s.download(stack, name, dest).await)
    }

    async fn read_doc(&self, key: &str) -> Result<Option<(Vec<u8>, Tag)>, PublishError> {
        each_store!(self, s => s.read_doc(key).await)
    }

    async fn write_doc(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&Tag>,
    ) -> Result<Written, PublishError> {
        each_store!(self, s => s.write_doc(key, data, expected).await)
    }

    fn public_url(&self, stack: &str, name: &str) -> String {
        each_store!(self, s => s.public_url(stack, name))
    }
}

/// Makes sure the artifact `<stack>/<name>` of `store` is at `dest` (a runtime a build is
/// against): downloaded once, whole and verified. Under a lock on `dest`'s `.lock` file, a
/// `dest` that is already there is used as it is; otherwise the artifact is downloaded into a
/// temporary file beside it and renamed into place, so that two jobs needing it at the same
/// time (in this process or another) make one download and neither ever sees a partial file.
pub async fn download_once(
    store: &impl Store,
    stack: &str,
    name: &str,
    dest: &std::path::Path,
) -> Result<(), PublishError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| PublishError::Io { path, source }
    };
    let dir = dest.parent().unwrap_or(std::path::Path::new("."));
    let lock_path = {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        dir.join(name)
    };
    let opened = lock_path.clone();
    let lock = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&opened)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .expect("lock task does not panic")
    .map_err(io(&lock_path))?;
    if dest.exists() {
        drop(lock);
        return Ok(());
    }
    let temp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    store.download(stack, name, temp.path()).await?;
    temp.persist(dest).map_err(|e| io(dest)(e.error))?;
    drop(lock);
    Ok(())
}
