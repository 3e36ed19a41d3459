//! The local store: a folder (or `file://` URL). Writes are temp file + rename under an OS
//! file lock per stack folder; metadata lives in a sidecar `<artifact>.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{PublishError, PublishOutcome, Published, Store, Stored, Tag, Upload, Written};
use crate::checksum::{Algo, hash_file};

/// A store in a local folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    url: String,
}

impl LocalStore {
    /// Parses `--store`: a folder path or a `file://` URL.
    pub fn from_url(url: &str) -> Result<Self, PublishError> {
        if let Some(rest) = url.strip_prefix("file://") {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(PublishError::BadUrl(url.to_string()));
            }
            return Ok(LocalStore {
                root: rest.into(),
                url: url.to_string(),
            });
        }
        if url.is_empty() || url.contains("://") {
            return Err(PublishError::BadUrl(url.to_string()));
        }
        Ok(LocalStore {
            root: url.into(),
            url: url.to_string(),
        })
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

    /// Takes the OS lock of a folder of the store (created if needed); released on drop or
    /// when the process dies.
    fn lock_dir(dir: &Path) -> Result<std::fs::File, PublishError> {
        fs_err::create_dir_all(dir).map_err(Self::io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Self::io(&lock_path))?
            .into_file();
        lock.lock().map_err(Self::io(&lock_path))?;
        Ok(lock)
    }

    fn publish_blocking(&self, a: &Upload, force: bool) -> Result<Published, PublishError> {
        let dir = self.root.join(&a.stack);
        // One publisher at a time per stack folder.
        let lock = Self::lock_dir(&dir)?;

        let target = dir.join(&a.name);
        let location = target.display().to_string();
        let mut outcome = PublishOutcome::Published;
        if target.exists() {
            let (existing, _) = hash_file(Algo::Sha256, &target).map_err(Self::io(&target))?;
            if let Some(done) = super::decide_existing(existing, a, force, || location.clone())? {
                // Repair a missing sidecar, then it is a no-op.
                self.write_sidecar(&dir, a)?;
                return Ok(Published {
                    location,
                    outcome: done,
                });
            }
            outcome = PublishOutcome::Replaced;
        }
        // Copy to a temp file in the same folder, fsync, rename: readers see all or nothing.
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(Self::io(&dir))?;
        let mut src = fs_err::File::open(&a.path).map_err(Self::io(&a.path))?;
        std::io::copy(&mut src, &mut tmp.as_file()).map_err(Self::io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(Self::io(tmp.path()))?;
        if outcome == PublishOutcome::Replaced {
            tmp.persist(&target).map_err(|e| PublishError::Io {
                path: target.clone(),
                source: e.error,
            })?;
        } else if !place_new(tmp, &target)? {
            // Someone wrote the name without the store's lock (another host on a shared
            // folder, a copy by hand) since we looked: never replace it, judge it as it is.
            let (existing, _) = hash_file(Algo::Sha256, &target).map_err(Self::io(&target))?;
            let done = super::decide_existing(existing, a, false, || location.clone())?
                .expect("without force, different bytes are a conflict");
            self.write_sidecar(&dir, a)?;
            return Ok(Published {
                location,
                outcome: done,
            });
        }
        self.write_sidecar(&dir, a)?;
        drop(lock);
        Ok(Published { location, outcome })
    }
}

/// Moves `tmp` to `target` only if nothing is there: the final step itself refuses to replace
/// (a hard link or `renameat2(RENAME_NOREPLACE)`, whichever the file system offers), so the
/// file lock is not the only guard. `Ok(false)` when `target` exists; `tmp` is then removed.
fn place_new(tmp: tempfile::NamedTempFile, target: &Path) -> Result<bool, PublishError> {
    match tmp.persist_noclobber(target) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(PublishError::Io {
            path: target.to_path_buf(),
            source: e.error,
        }),
    }
}

impl LocalStore {
    fn write_sidecar(&self, dir: &Path, a: &Upload) -> Result<(), PublishError> {
        let sidecar = dir.join(format!("{}.sha256", a.name));
        let text = format!("{}  {}\n", a.sha256, a.name);
        if fs_err::read_to_string(&sidecar).ok().as_deref() != Some(text.as_str()) {
            crate::cache::write_atomic(&sidecar, text.as_bytes()).map_err(Self::io(&sidecar))?;
        }
        let meta = dir.join(format!("{}.json", a.name));
        let json = serde_json::to_string_pretty(&a.metadata).expect("a string map serialises");
        if fs_err::read_to_string(&meta).ok().as_deref() != Some(json.as_str()) {
            crate::cache::write_atomic(&meta, json.as_bytes()).map_err(Self::io(&meta))?;
        }
        Ok(())
    }

    fn stored(&self, stack: &str, name: &str) -> Result<Option<Stored>, PublishError> {
        let dir = self.root.join(stack);
        let artifact = dir.join(name);
        let size = match fs_err::metadata(&artifact) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&artifact)(e)),
        };
        let sidecar = dir.join(format!("{name}.sha256"));
        let sha256 = match fs_err::read_to_string(&sidecar) {
            Ok(text) => text
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            // An artifact without its sidecar (copied in by hand): hash it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                hash_file(Algo::Sha256, &artifact)
                    .map_err(Self::io(&artifact))?
                    .0
            }
            Err(e) => return Err(Self::io(&sidecar)(e)),
        };
        let meta = dir.join(format!("{name}.json"));
        let metadata = match fs_err::read_to_string(&meta) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| PublishError::BadDocument {
                location: meta.display().to_string(),
                what: "metadata sidecar",
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Self::io(&meta)(e)),
        };
        Ok(Some(Stored {
            sha256,
            size,
            metadata,
        }))
    }

    fn tag_of(data: &[u8]) -> Tag {
        Tag(hex::encode(sha2::Sha256::digest(data)))
    }

    fn write_doc_blocking(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&Tag>,
    ) -> Result<Written, PublishError> {
        let path = self.root.join(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let _lock = Self::lock_dir(&dir)?;
        let current = match fs_err::read(&path) {
            Ok(bytes) => Some(Self::tag_of(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Self::io(&path)(e)),
        };
        if current.as_ref() != expected {
            return Ok(Written::Conflict);
        }
        crate::cache::write_atomic(&path, data).map_err(Self::io(&path))?;
        Ok(Written::Done)
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn publish(&self, artifact: &Upload, force: bool) -> Result<Published, PublishError> {
        let me = self.clone();
        let a = artifact.clone();
        tokio::task::spawn_blocking(move || me.publish_blocking(&a, force))
            .await
            .expect("publish task does not panic")
    }

    async fn lookup(&self, stack: &str, name: &str) -> Result<Option<Stored>, PublishError> {
        let (me, stack, name) = (self.clone(), stack.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || me.stored(&stack, &name))
            .await
            .expect("lookup task does not panic")
    }

    async fn download(&self, stack: &str, name: &str, dest: &Path) -> Result<(), PublishError> {
        let (me, stack, name, dest) = (
            self.clone(),
            stack.to_string(),
            name.to_string(),
            dest.to_path_buf(),
        );
        tokio::task::spawn_blocking(move || {
            let src = me.root.join(&stack).join(&name);
            let want = me
                .stored(&stack, &name)?
                .ok_or_else(|| {
                    LocalStore::io(&src)(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not in the store",
                    ))
                })?
                .sha256;
            fs_err::copy(&src, &dest).map_err(LocalStore::io(&dest))?;
            let (got, _) = hash_file(Algo::Sha256, &dest).map_err(LocalStore::io(&dest))?;
            if got != want {
                let _ = fs_err::remove_file(&dest);
                return Err(PublishError::BadDocument {
                    location: src.display().to_string(),
                    what: "artifact",
                    message: format!("its sha256 is {got}, the store records {want}"),
                });
            }
            Ok(())
        })
        .await
        .expect("download task does not panic")
    }

    async fn list(&self, stack: &str) -> Result<Vec<(String, Stored)>, PublishError> {
        let (me, stack) = (self.clone(), stack.to_string());
        tokio::task::spawn_blocking(move || {
            let dir = me.root.join(&stack);
            let mut names = Vec::new();
            match fs_err::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(LocalStore::io(&dir))?;
                        let name = e.file_name().to_string_lossy().into_owned();
                        if super::is_artifact_name(&name) {
                            names.push(name);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LocalStore::io(&dir)(e)),
            }
            names.sort();
            let mut out = Vec::new();
            for name in names {
                if let Some(s) = me.stored(&stack, &name)? {
                    out.push((name, s));
                }
            }
            Ok(out)
        })
        .await
        .expect("list task does not panic")
    }

    async fn read_doc(&self, key: &str) -> Result<Option<(Vec<u8>, Tag)>, PublishError> {
        let path = self.root.join(key);
        match fs_err::tokio::read(&path).await {
            Ok(bytes) => {
                let tag = Self::tag_of(&bytes);
                Ok(Some((bytes, tag)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    async fn write_doc(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&Tag>,
    ) -> Result<Written, PublishError> {
        let (me, key, data, expected) = (
            self.clone(),
            key.to_string(),
            data.to_vec(),
            expected.cloned(),
        );
        tokio::task::spawn_blocking(move || me.write_doc_blocking(&key, &data, expected.as_ref()))
            .await
            .expect("write task does not panic")
    }

    fn public_url(&self, stack: &str, name: &str) -> String {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", root.join(stack).join(name).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, bytes: &[u8]) -> Upload {
        let path = dir.join(format!("in-{}", bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        let (sha256, size) = hash_file(Algo::Sha256, &path).unwrap();
        Upload {
            path,
            name: "demo-1.0.0.tar.gz".into(),
            stack: "bookworm".into(),
            sha256,
            size,
            metadata: [("recipe-digest".to_string(), "abc".to_string())].into(),
        }
    }

    #[test]
    fn the_final_step_never_replaces_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a.tar.gz");
        std::fs::write(&target, b"theirs").unwrap();
        let mut ours = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
        std::io::Write::write_all(&mut ours, b"ours").unwrap();
        assert!(!place_new(ours, &target).unwrap(), "refused");
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temp left"
        );
        let other = tmp.path().join("b.tar.gz");
        let mut ours = tempfile::NamedTempFile::new_in(tmp.path()).unwrap();
        std::io::Write::write_all(&mut ours, b"ours").unwrap();
        assert!(place_new(ours, &other).unwrap());
        assert_eq!(std::fs::read(&other).unwrap(), b"ours");
    }

    #[test]
    fn two_publishers_of_different_bytes_under_one_name_one_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("dist");
        let handles: Vec<_> = [&b"first"[..], &b"second!"[..]]
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let dir = tmp.path().join(format!("src{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let a = artifact(&dir, bytes);
                let store = LocalStore::from_url(root.to_str().unwrap()).unwrap();
                std::thread::spawn(move || (a.sha256.clone(), store.publish_blocking(&a, false)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won: Vec<&String> = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(p) if p.outcome == PublishOutcome::Published))
            .map(|(sha, _)| sha)
            .collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|(_, r)| matches!(r, Err(PublishError::Conflict { .. }))),
            "{results:?}"
        );
        let (stored, _) =
            hash_file(Algo::Sha256, &root.join("bookworm/demo-1.0.0.tar.gz")).unwrap();
        assert_eq!(&stored, won[0], "the winner's bytes");
    }

    #[tokio::test]
    async fn publishes_once_and_refuses_different_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::from_url(tmp.path().join("dist").to_str().unwrap()).unwrap();
        let a = artifact(tmp.path(), b"first");
        let p = store.publish(&a, false).await.unwrap();
        assert_eq!(p.outcome, PublishOutcome::Published);
        let stored = tmp.path().join("dist/bookworm/demo-1.0.0.tar.gz");
        assert_eq!(std::fs::read(&stored).unwrap(), b"first");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("dist/bookworm/demo-1.0.0.tar.gz.sha256"))
                .unwrap(),
            format!("{}  demo-1.0.0.tar.gz\n", a.sha256)
        );
        assert_eq!(
            store.publish(&a, false).await.unwrap().outcome,
            PublishOutcome::AlreadyPublished
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
            PublishOutcome::Replaced
        );
        assert_eq!(std::fs::read(&stored).unwrap(), b"second!");
        let stored = store
            .lookup("bookworm", "demo-1.0.0.tar.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.sha256, b.sha256);
        assert_eq!(stored.metadata["recipe-digest"], "abc");
        assert_eq!(store.lookup("bookworm", "nope").await.unwrap(), None);
        let listed = store.list("bookworm").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "demo-1.0.0.tar.gz");
    }

    #[tokio::test]
    async fn documents_are_written_only_at_the_expected_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::from_url(tmp.path().to_str().unwrap()).unwrap();
        let key = "bookworm/inventory/demo.toml";
        assert!(store.read_doc(key).await.unwrap().is_none());
        assert_eq!(
            store.write_doc(key, b"one", None).await.unwrap(),
            Written::Done
        );
        assert_eq!(
            store.write_doc(key, b"two", None).await.unwrap(),
            Written::Conflict,
            "it exists now"
        );
        let (data, tag) = store.read_doc(key).await.unwrap().unwrap();
        assert_eq!(data, b"one");
        assert_eq!(
            store.write_doc(key, b"two", Some(&tag)).await.unwrap(),
            Written::Done
        );
        assert_eq!(
            store.write_doc(key, b"three", Some(&tag)).await.unwrap(),
            Written::Conflict,
            "stale tag"
        );
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
