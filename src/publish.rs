//! Publishing artifacts to a store. The local store (a folder) is the embedded default; every
//! store has the same layout: `<stack>/<artifact>` plus `<stack>/<artifact>.sha256`.
//!
//! A store never overwrites silently: publishing an artifact whose name exists with identical
//! bytes is a no-op success; with different bytes it is refused unless forced.

use std::path::{Path, PathBuf};

use crate::checksum::{Algo, hash_file};

/// An artifact ready to publish.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The `.tar.gz` on the host.
    pub path: PathBuf,
    /// Its file name in the store.
    pub name: String,
    /// The stack it was built on (the store's first path level).
    pub stack: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
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
    /// Where it is: a path for the local store, a URL for remote ones.
    pub location: String,
    /// What happened.
    pub outcome: Outcome,
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
    #[error("cannot write to the store at {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
    /// The store URL is not one we know.
    #[error("`{0}` is not a store: give a folder path or a file:// URL")]
    BadUrl(String),
}

impl PublishError {
    /// What the user can do, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            PublishError::Conflict { .. } => Some(
                "buildpacks pin what they downloaded: bump the recipe instead, or pass --force to replace it".into(),
            ),
            PublishError::BadUrl(_) => Some("for example --store ./dist or --store file:///srv/artifacts".into()),
            PublishError::Io { .. } => None,
        }
    }
}

/// A place artifacts are published to.
pub trait Store {
    /// Publishes `artifact` (refusing to replace different bytes unless `force`).
    fn publish(
        &self,
        artifact: &Artifact,
        force: bool,
    ) -> impl std::future::Future<Output = Result<Published, PublishError>> + Send;

    /// The sha256 of the artifact stored under `stack`/`name`, if there is one.
    fn lookup(
        &self,
        stack: &str,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Option<String>, PublishError>> + Send;
}

/// A store in a local folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Parses `--store`: a folder path or a `file://` URL.
    pub fn from_url(url: &str) -> Result<Self, PublishError> {
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(PublishError::BadUrl(url.to_string()));
            }
            return Ok(LocalStore { root: rest.into() });
        }
        if url.is_empty() || url.contains("://") {
            return Err(PublishError::BadUrl(url.to_string()));
        }
        Ok(LocalStore { root: url.into() })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
        move |source| PublishError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn publish_blocking(&self, a: &Artifact, force: bool) -> Result<Published, PublishError> {
        let dir = self.root.join(&a.stack);
        fs_err::create_dir_all(&dir).map_err(Self::io(&dir))?;
        // One publisher at a time per stack folder (an OS lock, released if we die).
        let lock_path = dir.join(".lock");
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Self::io(&lock_path))?
            .into_file();
        lock.lock().map_err(Self::io(&lock_path))?;

        let target = dir.join(&a.name);
        let location = target.display().to_string();
        let mut outcome = Outcome::Published;
        if target.exists() {
            let (existing, _) = hash_file(Algo::Sha256, &target).map_err(Self::io(&target))?;
            if existing == a.sha256 {
                // Repair a missing sidecar, then it is a no-op.
                self.write_sidecar(&dir, a)?;
                return Ok(Published {
                    location,
                    outcome: Outcome::AlreadyPublished,
                });
            }
            if !force {
                return Err(PublishError::Conflict {
                    location,
                    existing,
                    new: a.sha256.clone(),
                });
            }
            outcome = Outcome::Replaced;
        }
        // Copy to a temp file in the same folder, fsync, rename: readers see all or nothing.
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(Self::io(&dir))?;
        let mut src = fs_err::File::open(&a.path).map_err(Self::io(&a.path))?;
        std::io::copy(&mut src, &mut tmp.as_file()).map_err(Self::io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(Self::io(tmp.path()))?;
        tmp.persist(&target).map_err(|e| PublishError::Io {
            path: target.clone(),
            source: e.error,
        })?;
        self.write_sidecar(&dir, a)?;
        drop(lock);
        Ok(Published { location, outcome })
    }

    fn write_sidecar(&self, dir: &Path, a: &Artifact) -> Result<(), PublishError> {
        let sidecar = dir.join(format!("{}.sha256", a.name));
        let text = format!("{}  {}\n", a.sha256, a.name);
        if fs_err::read_to_string(&sidecar).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        crate::cache::write_atomic(&sidecar, text.as_bytes()).map_err(Self::io(&sidecar))
    }
}

impl Store for LocalStore {
    async fn publish(&self, artifact: &Artifact, force: bool) -> Result<Published, PublishError> {
        let me = self.clone();
        let a = artifact.clone();
        tokio::task::spawn_blocking(move || me.publish_blocking(&a, force))
            .await
            .expect("publish task does not panic")
    }

    async fn lookup(&self, stack: &str, name: &str) -> Result<Option<String>, PublishError> {
        let sidecar = self.root.join(stack).join(format!("{name}.sha256"));
        match fs_err::read_to_string(&sidecar) {
            Ok(text) => Ok(text.split_whitespace().next().map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PublishError::Io {
                path: sidecar,
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, bytes: &[u8]) -> Artifact {
        let path = dir.join(format!("in-{}", bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        let (sha256, size) = hash_file(Algo::Sha256, &path).unwrap();
        Artifact {
            path,
            name: "demo-1.0.0.tar.gz".into(),
            stack: "bookworm".into(),
            sha256,
            size,
        }
    }

    #[tokio::test]
    async fn publishes_once_and_refuses_different_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::from_url(tmp.path().join("dist").to_str().unwrap()).unwrap();
        let a = artifact(tmp.path(), b"first");
        let p = store.publish(&a, false).await.unwrap();
        assert_eq!(p.outcome, Outcome::Published);
        let stored = tmp.path().join("dist/bookworm/demo-1.0.0.tar.gz");
        assert_eq!(std::fs::read(&stored).unwrap(), b"first");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("dist/bookworm/demo-1.0.0.tar.gz.sha256"))
                .unwrap(),
            format!("{}  demo-1.0.0.tar.gz\n", a.sha256)
        );
        assert_eq!(
            store.publish(&a, false).await.unwrap().outcome,
            Outcome::AlreadyPublished
        );
        let b = artifact(tmp.path(), b"second!");
        let err = store.publish(&b, false).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&a.sha256) && text.contains(&b.sha256),
            "{text}"
        );
        assert_eq!(std::fs::read(&stored).unwrap(), b"first", "unchanged");
        assert_eq!(
            store.publish(&b, true).await.unwrap().outcome,
            Outcome::Replaced
        );
        assert_eq!(std::fs::read(&stored).unwrap(), b"second!");
        assert_eq!(
            store.lookup("bookworm", "demo-1.0.0.tar.gz").await.unwrap(),
            Some(b.sha256.clone())
        );
        assert_eq!(store.lookup("bookworm", "nope").await.unwrap(), None);
    }

    #[test]
    fn store_urls() {
        assert!(LocalStore::from_url("./dist").is_ok());
        assert_eq!(
            LocalStore::from_url("file:///srv/a").unwrap().root(),
            Path::new("/srv/a")
        );
        assert!(LocalStore::from_url("file://relative").is_err());
        assert!(LocalStore::from_url("ftp://x/y").is_err());
    }
}
