//! The download cache on the host.
//!
//! Layout (one bucket per kind of data, versioned where the format may change):
//! - `CACHEDIR.TAG` — so backup tools skip the cache;
//! - `sources/<algo>-<hex>/<file name>` — content-addressed downloads, immutable once written;
//!   each entry folder also holds `.lock` (an OS file lock taken while the entry is checked or
//!   written) and, only while a download runs, `.tmp-*` files;
//! - `ccache/<stack>/<arch>/<runtime>/` — the compiler cache of one runtime's builds (ccache's
//!   own layout inside), mounted read-write into its build containers, with `<runtime>.lock`
//!   beside it (shared while a build uses it); `ccache/` and the levels under it are 0700 and
//!   swept of setuid bits and special files (see [`crate::build::ccache::Folder`]);
//! - `logs/`, `work/` — build logs, and temp build folders removed after each build.
//!
//! Nothing here touches the network; [`crate::fetch`] fills entries.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::checksum::Checksum;

pub mod gc;

/// The folder of build logs.
pub const LOGS: &str = "logs";
/// The folder of temp build folders (`artifact-*`, `run-*`), removed after each build.
pub const WORK: &str = "work";

/// The folder of source entries.
pub const SOURCES: &str = "sources";
/// The folder of compiler caches, one per stack, arch and runtime.
pub const CCACHE: &str = "ccache";
/// The per-entry lock file.
pub const LOCK_FILE: &str = ".lock";
/// The prefix of temp files that downloads write before renaming into place.
pub const TMP_PREFIX: &str = ".tmp-";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by packager.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// A cache rooted at a folder.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A held lock on one cache entry; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
    dir: PathBuf,
}

impl EntryLock {
    /// The entry's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Cache {
    /// A cache at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder build logs are written to.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS)
    }

    /// The compiler cache folder of `runtime`'s builds on `stack` for `arch`:
    /// `ccache/<stack>/<arch>/<runtime>`.
    pub fn compiler_cache_dir(&self, stack: &str, arch: &str, runtime: &str) -> PathBuf {
        self.root.join(CCACHE).join(stack).join(arch).join(runtime)
    }

    /// A new temporary folder in the work area (`prefix…`, removed when dropped; a stale one
    /// left by a killed process is removed by `cache prune`). The error names the folder.
    pub fn work_dir(&self, prefix: &str) -> Result<tempfile::TempDir, (PathBuf, io::Error)> {
        let dir = self.root.join(WORK);
        fs_err::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&dir)
            .map_err(|e| (dir, e))
    }

    /// Creates the root, the tag and the sources bucket if missing.
    pub fn init(&self) -> io::Result<()> {
        fs_err::create_dir_all(self.root.join(SOURCES))?;
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomic(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        Ok(())
    }

    /// The folder of the entry for `checksum`.
    pub fn entry_dir(&self, checksum: &Checksum) -> PathBuf {
        self.root.join(SOURCES).join(checksum.key())
    }

    /// Takes the entry's lock, waiting for another process or task that holds it. Blocking:
    /// call it from a blocking thread.
    pub fn lock_entry(&self, checksum: &Checksum) -> io::Result<EntryLock> {
        let dir = self.entry_dir(checksum);
        let path = dir.join(LOCK_FILE);
        loop {
            fs_err::create_dir_all(&dir)?;
            let file = open_lock_file(&path)?;
            file.lock().map_err(|e| {
                io::Error::new(e.kind(), format!("locking {}: {e}", path.display()))
            })?;
            // `cache prune` may have removed the entry while we waited: then our lock is on a
            // deleted file, and we start over on a fresh one.
            if still_linked(&file, &path)? {
                return Ok(EntryLock { _file: file, dir });
            }
        }
    }

    /// Takes the entry lock of an existing entry folder without waiting: `None` when another
    /// process or task holds it.
    pub fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<EntryLock>> {
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(EntryLock {
                _file: file,
                dir: dir.to_path_buf(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("locking {}: {e}", path.display()),
            )),
        }
    }

    /// The entry's file, if the entry has one. Call with the entry's lock held.
    pub fn entry_file(&self, lock: &EntryLock) -> io::Result<Option<PathBuf>> {
        for entry in fs_err::read_dir(lock.dir())? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') && entry.file_type()?.is_file() {
                return Ok(Some(entry.path()));
            }
        }
        Ok(None)
    }

    /// Removes temp files left by killed downloads. Call with the entry's lock held: then no
    /// live download can own them. Returns how many were removed.
    pub fn remove_stale_temps(&self, lock: &EntryLock) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs_err::read_dir(lock.dir())? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                fs_err::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    Ok(fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .into_file())
}

/// Whether the open `file` is still the one at `path` (not removed or replaced meanwhile).
fn still_linked(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("checking {}: {e}", path.display()),
        )),
    }
}

/// Writes a small file atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating a temp file in {}: {e}", dir.display()),
            )
        })?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| {
        io::Error::new(
            e.error.kind(),
            format!("renaming into {}: {}", path.display(), e.error),
        )
    })?;
    Ok(())
}

/// Makes a file name safe to store: the characters URLs commonly use in tarball names are
/// kept, anything else becomes `_`.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        format!("download{cleaned}")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algo;

    #[test]
    fn lock_is_exclusive_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.init().unwrap();
        let sum = Checksum::new(Algo::Sha1, "d58403caec82af414507cefa58ce74bbb792985a").unwrap();
        let held = cache.lock_entry(&sum).unwrap();
        let second = File::options()
            .write(true)
            .open(held.dir().join(LOCK_FILE))
            .unwrap();
        assert!(
            second.try_lock().is_err(),
            "a second handle must not get the lock"
        );
        drop(held);
        assert!(second.try_lock().is_ok(), "the lock is released on drop");
        assert!(dir.path().join("CACHEDIR.TAG").is_file());
    }

    #[test]
    fn a_waiter_relocks_an_entry_removed_while_it_waited() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.init().unwrap();
        let sum = Checksum::new(Algo::Sha1, "d58403caec82af414507cefa58ce74bbb792985a").unwrap();
        let held = cache.lock_entry(&sum).unwrap();
        let waiter = {
            let cache = cache.clone();
            let sum = sum.clone();
            std::thread::spawn(move || cache.lock_entry(&sum).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        // What `cache prune` does with the lock held: remove the whole entry.
        fs_err::remove_dir_all(held.dir()).unwrap();
        drop(held);
        let relocked = waiter.join().unwrap();
        let lock_path = relocked.dir().join(LOCK_FILE);
        assert!(
            lock_path.is_file(),
            "the waiter holds a lock on a live file"
        );
        let other = File::options().write(true).open(&lock_path).unwrap();
        assert!(other.try_lock().is_err(), "and that file is locked");
    }

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(safe_file_name("mono-3.2.8.tar.bz2"), "mono-3.2.8.tar.bz2");
        assert_eq!(safe_file_name("a b%20c"), "a_b_20c");
        assert_eq!(safe_file_name(".hidden"), "download.hidden");
    }
}
