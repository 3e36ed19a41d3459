//! Looking after the cache: what it holds ([`status`]), removing what is old or over a size
//! budget ([`prune`]), and re-hashing source entries ([`verify`]).
//!
//! Compiler cache folders (`ccache/<stack>/<arch>/<runtime>`) are entries too, whole: one is
//! removed only with its lock taken exclusively, so never while a build uses it (builds hold it
//! shared); its last use is the latest modification time in it (ccache touches what it hits).
//!
//! Source entries are only touched with their entry lock held (taken with `try_lock`, never
//! waited for): an entry another process is checking or writing is left alone, and so are its
//! temp files. Recency is the later of the payload's access and modification times (a cache hit
//! re-hashes the file, which reads it).
//!
//! Nothing here prints or talks to the engine; the CLI adds the stack images and kept
//! containers.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{CCACHE, Cache, EntryLock, LOGS, SOURCES, TMP_PREFIX, WORK};
use crate::checksum::{Algo, Checksum, hash_file};

/// How long a temp build folder in `work/` must be untouched before prune takes it for the
/// leftover of a killed run.
pub const STALE_WORK: Duration = Duration::from_secs(24 * 60 * 60);

/// One area of the cache: how many entries, their size, the oldest and newest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AreaStatus {
    /// `sources`, `logs`, `work`, …
    pub area: String,
    /// The area's folder, when it is one.
    pub path: Option<PathBuf>,
    /// Number of entries.
    pub entries: usize,
    /// Bytes on disk (apparent size of the files).
    pub bytes: u64,
    /// Time of the least recently used entry.
    #[serde(with = "opt_time")]
    pub oldest: Option<SystemTime>,
    /// Time of the most recently used entry.
    #[serde(with = "opt_time")]
    pub newest: Option<SystemTime>,
}

impl AreaStatus {
    /// An empty area.
    pub fn new(area: &str, path: Option<PathBuf>) -> Self {
        AreaStatus {
            area: area.to_string(),
            path,
            ..AreaStatus::default()
        }
    }

    /// Counts one entry.
    pub fn add(&mut self, bytes: u64, time: Option<SystemTime>) {
        self.entries += 1;
        self.bytes += bytes;
        if let Some(t) = time {
            self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
    }
}

mod opt_time {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// What is in one entry of a file area.
#[derive(Debug, Clone)]
struct Entry {
    area: &'static str,
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

/// The file areas of the cache: `sources`, `ccache`, `logs` and `work`. Locked source entries are
/// counted too (their payload is read without the lock; it is immutable once written), and so
/// are compiler cache folders in use.
pub fn status(cache: &Cache) -> io::Result<Vec<AreaStatus>> {
    let mut areas = Vec::new();
    let mut sources = AreaStatus::new(SOURCES, Some(cache.root().join(SOURCES)));
    for dir in entry_dirs(&cache.root().join(SOURCES))? {
        if let Some((_, bytes, used)) = payload(&dir)? {
            sources.add(bytes, Some(used));
        }
    }
    areas.push(sources);
    let mut ccache = AreaStatus::new(CCACHE, Some(cache.root().join(CCACHE)));
    for e in compiler_caches(cache)? {
        ccache.add(e.bytes, Some(e.used));
    }
    areas.push(ccache);
    for (name, entries) in [
        (LOGS, file_entries(cache, LOGS)?),
        (WORK, file_entries(cache, WORK)?),
    ] {
        let mut area = AreaStatus::new(name, Some(cache.root().join(name)));
        for e in entries {
            area.add(e.bytes, Some(e.used));
        }
        areas.push(area);
    }
    Ok(areas)
}

/// A local store folder (`<stack>/<artifact>` with `.sha256` and `.json` sidecars, and
/// `inventory/*.toml`): artifacts are the entries, every file counts in the size.
pub fn local_store_status(root: &Path) -> io::Result<AreaStatus> {
    let mut area = AreaStatus::new("store", Some(root.to_path_buf()));
    let mut stack = vec![root.to_path_buf()];
    let mut sidecars = 0;
    while let Some(dir) = stack.pop() {
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = fs_err::metadata(entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let artifact = !(name.ends_with(".sha256")
                || name.ends_with(".json")
                || name.ends_with(".toml")
                || name.starts_with('.'));
            if artifact {
                area.add(meta.len(), meta.modified().ok());
            } else {
                sidecars += meta.len();
            }
        }
    }
    area.bytes += sidecars;
    Ok(area)
}

/// Limits for [`prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove source entries, compiler cache folders and logs not used for this long.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used source entries, compiler cache folders and logs
    /// until they fit in this many bytes.
    pub max_size: Option<u64>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// "Now" (tests pass a fixed time); `None` is the clock.
    pub now: Option<SystemTime>,
}

/// Why something was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Not used for longer than `--older-than`.
    Old,
    /// Least recently used while the cache was over `--max-size`.
    OverSize,
    /// A temp file of a download that no longer runs.
    StaleTemp,
    /// A temp build folder of a run that no longer runs.
    StaleWork,
    /// Its content does not match its checksum.
    Corrupted,
}

impl Reason {
    /// A short word for people.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Old => "unused for longer than the limit",
            Reason::OverSize => "least recently used, over the size limit",
            Reason::StaleTemp => "stale temp file",
            Reason::StaleWork => "stale build folder",
            Reason::Corrupted => "corrupted",
        }
    }
}

/// One removed (or, in a dry run, removable) path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The area it was in.
    pub area: String,
    /// The file or folder.
    pub path: PathBuf,
    /// Bytes freed.
    pub bytes: u64,
    /// Which rule of the prune removed it (age, size, stale temporary, …).
    pub reason: Reason,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// What was removed (or would be, in a dry run).
    pub removed: Vec<Removed>,
    /// Source entries and compiler cache folders left alone because another process holds
    /// their lock.
    pub locked: Vec<PathBuf>,
}

impl PruneReport {
    /// Bytes freed (or that would be).
    pub fn freed(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }
}

/// Removes stale temp files, stale build folders, and source entries, compiler cache folders
/// and logs that are older than `older_than` or, least recently used first, over `max_size`.
/// Entries whose lock another process holds (a download, a build using a compiler cache) are
/// neither removed nor counted out of the budget.
pub fn prune(cache: &Cache, options: &PruneOptions) -> io::Result<PruneReport> {
    let now = options.now.unwrap_or_else(SystemTime::now);
    let mut report = PruneReport::default();
    // Held until the end, so no download starts into an entry we are about to remove.
    let mut locks: Vec<EntryLock> = Vec::new();
    let mut candidates: Vec<Entry> = Vec::new();
    let mut pinned_bytes = 0u64;

    for dir in entry_dirs(&cache.root().join(SOURCES))? {
        let Some(lock) = cache.try_lock_dir(&dir)? else {
            pinned_bytes += payload(&dir)?.map_or(0, |(_, b, _)| b);
            report.locked.push(dir);
            continue;
        };
        for (path, bytes) in temps(&dir)? {
            if !options.dry_run {
                remove_path(&path)?;
            }
            report.removed.push(Removed {
                area: SOURCES.into(),
                path,
                bytes,
                reason: Reason::StaleTemp,
            });
        }
        match payload(&dir)? {
            Some((_, bytes, used)) => candidates.push(Entry {
                area: SOURCES,
                path: dir,
                bytes,
                used,
            }),
            // An entry folder without payload (a failed download): nothing to keep.
            None => candidates.push(Entry {
                area: SOURCES,
                path: dir,
                bytes: 0,
                used: SystemTime::UNIX_EPOCH,
            }),
        }
        locks.push(lock);
    }
    // Compiler caches: whole folders, each with its lock taken exclusively or left alone.
    let mut ccache_locks: Vec<std::fs::File> = Vec::new();
    for e in compiler_caches(cache)? {
        match try_lock_exclusive(&crate::build::ccache::lock_path(&e.path))? {
            Some(lock) => {
                ccache_locks.push(lock);
                candidates.push(e);
            }
            None => {
                pinned_bytes += e.bytes;
                report.locked.push(e.path);
            }
        }
    }
    candidates.extend(file_entries(cache, LOGS)?);

    for e in file_entries(cache, WORK)? {
        if age(now, e.used) > STALE_WORK {
            if !options.dry_run {
                remove_path(&e.path)?;
            }
            report.removed.push(Removed {
                area: WORK.into(),
                path: e.path,
                bytes: e.bytes,
                reason: Reason::StaleWork,
            });
        }
    }

    // Least recently used first.
    candidates.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
    let mut total: u64 = pinned_bytes + candidates.iter().map(|e| e.bytes).sum::<u64>();
    for e in candidates {
        let empty = e.area == SOURCES && e.bytes == 0 && e.used == SystemTime::UNIX_EPOCH;
        if empty {
            // A failed download's folder: removed without a line.
            if !options.dry_run {
                remove_path(&e.path)?;
            }
            continue;
        }
        let reason = if options
            .older_than
            .is_some_and(|limit| age(now, e.used) > limit)
        {
            Reason::Old
        } else if options.max_size.is_some_and(|max| total > max) {
            Reason::OverSize
        } else {
            continue;
        };
        if !options.dry_run {
            remove_path(&e.path)?;
        }
        total -= e.bytes;
        report.removed.push(Removed {
            area: e.area.into(),
            path: e.path,
            bytes: e.bytes,
            reason,
        });
    }
    drop(locks);
    drop(ccache_locks);
    Ok(report)
}

/// The compiler cache folders, `ccache/<stack>/<arch>/<runtime>`, each with its size and last
/// use (the latest modification in it, or of its lock file: a build's start).
fn compiler_caches(cache: &Cache) -> io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for stack in entry_dirs(&cache.root().join(CCACHE))? {
        for arch in entry_dirs(&stack)? {
            for dir in entry_dirs(&arch)? {
                let (bytes, mut used) = tree_size(&dir)?;
                if let Ok(meta) = fs_err::metadata(crate::build::ccache::lock_path(&dir)) {
                    used = used.max(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                }
                found.push(Entry {
                    area: CCACHE,
                    path: dir,
                    bytes,
                    used,
                });
            }
        }
    }
    Ok(found)
}

/// Takes the lock at `path` exclusively without waiting: `None` when a build holds it. The file
/// is made when missing (and never removed, so a waiting build's lock stays on a live file).
fn try_lock_exclusive(path: &Path) -> io::Result<Option<std::fs::File>> {
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .into_file();
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("locking {}: {e}", path.display()),
        )),
    }
}

/// One corrupted source entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Corrupted {
    /// The entry's file.
    pub path: PathBuf,
    /// The checksum its folder names.
    pub expected: String,
    /// The checksum of its content.
    pub actual: String,
}

/// What [`rehash`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RehashReport {
    /// Entries whose content matches their checksum.
    pub ok: usize,
    /// Entries that did not match, now removed.
    pub corrupted: Vec<Corrupted>,
    /// Entries left unchecked because another process holds their lock.
    pub locked: Vec<PathBuf>,
    /// Folders in `sources/` whose name is not `<algo>-<hex>`, left alone.
    pub unknown: Vec<PathBuf>,
}

/// Re-hashes every source entry; removes those whose content does not match the checksum
/// their folder is named for.
pub fn rehash(cache: &Cache) -> io::Result<RehashReport> {
    let mut report = RehashReport::default();
    for dir in entry_dirs(&cache.root().join(SOURCES))? {
        let Some(expected) = dir.file_name().and_then(|n| n.to_str()).and_then(parse_key) else {
            report.unknown.push(dir);
            continue;
        };
        let Some(lock) = cache.try_lock_dir(&dir)? else {
            report.locked.push(dir);
            continue;
        };
        let Some(file) = cache.entry_file(&lock)? else {
            continue;
        };
        let (actual, _) = hash_file(expected.algo(), &file)?;
        if actual == expected.hex() {
            report.ok += 1;
        } else {
            remove_path(&dir)?;
            report.corrupted.push(Corrupted {
                path: file,
                expected: expected.to_string(),
                actual: format!("{}:{actual}", expected.algo()),
            });
        }
        drop(lock);
    }
    Ok(report)
}

/// Parses a cache key `<algo>-<hex>`.
pub fn parse_key(key: &str) -> Option<Checksum> {
    let (algo, hex) = key.split_once('-')?;
    let algo = [Algo::Sha256, Algo::Sha512, Algo::Sha1]
        .into_iter()
        .find(|a| a.name() == algo)?;
    Checksum::new(algo, hex).ok()
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// The entry folders of `sources/`, sorted.
fn entry_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The payload of an entry folder: its file, size and last use.
fn payload(dir: &Path) -> io::Result<Option<(PathBuf, u64, SystemTime)>> {
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = fs_err::metadata(entry.path())?;
        if meta.is_file() {
            return Ok(Some((entry.path(), meta.len(), last_used(&meta))));
        }
    }
    Ok(None)
}

/// The temp files of an entry folder, with their sizes.
fn temps(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let len = fs_err::metadata(entry.path())?.len();
            found.push((entry.path(), len));
        }
    }
    found.sort();
    Ok(found)
}

/// The entries of a plain area (`logs`, `work`): each file or folder directly in it.
fn file_entries(cache: &Cache, area: &'static str) -> io::Result<Vec<Entry>> {
    let dir = cache.root().join(area);
    let mut found = Vec::new();
    let entries = match fs_err::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let (bytes, used) = tree_size(&path)?;
        found.push(Entry {
            area,
            path,
            bytes,
            used,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// The size of a file or folder tree and the latest use of anything in it.
fn tree_size(path: &Path) -> io::Result<(u64, SystemTime)> {
    let meta = fs_err::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok((meta.len(), last_used(&meta)));
    }
    // A folder's access time changes whenever it is listed — by this scan too: only its
    // modification time says it was used.
    let mut used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let mut bytes = 0;
    for entry in fs_err::read_dir(path)? {
        let (b, u) = tree_size(&entry?.path())?;
        bytes += b;
        used = used.max(u);
    }
    Ok((bytes, used))
}

fn last_used(meta: &std::fs::Metadata) -> SystemTime {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let accessed = meta.accessed().unwrap_or(SystemTime::UNIX_EPOCH);
    modified.max(accessed)
}

fn remove_path(path: &Path) -> io::Result<()> {
    let result = if fs_err::symlink_metadata(path)?.is_dir() {
        fs_err::remove_dir_all(path)
    } else {
        fs_err::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_time(path: &Path, t: SystemTime) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    fn seed(cache: &Cache, key: &str, len: usize, t: SystemTime) -> PathBuf {
        let dir = cache.root().join(SOURCES).join(key);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("payload.tar.gz");
        std::fs::write(&file, vec![7u8; len]).unwrap();
        set_time(&file, t);
        dir
    }

    fn key(n: u8) -> String {
        format!("sha1-{}", hex::encode([n; 20]))
    }

    #[test]
    fn keys_parse_back_into_checksums() {
        let k = key(1);
        assert_eq!(parse_key(&k).unwrap().key(), k);
        assert!(parse_key("md5-00").is_none());
        assert!(parse_key("junk").is_none());
    }

    #[test]
    fn prune_removes_old_then_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        cache.init().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let old = seed(&cache, &key(1), 100, now - day * 40);
        let mid = seed(&cache, &key(2), 100, now - day * 5);
        let new = seed(&cache, &key(3), 100, now - day);
        let options = PruneOptions {
            older_than: Some(day * 30),
            max_size: Some(150),
            dry_run: true,
            now: Some(now),
        };
        let report = prune(&cache, &options).unwrap();
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|r| (r.path.clone(), r.reason))
            .collect();
        assert_eq!(
            removed,
            vec![(old.clone(), Reason::Old), (mid.clone(), Reason::OverSize)]
        );
        assert!(old.exists(), "a dry run removes nothing");
        let report = prune(
            &cache,
            &PruneOptions {
                dry_run: false,
                ..options
            },
        )
        .unwrap();
        assert_eq!(report.freed(), 200);
        assert!(!old.exists() && !mid.exists() && new.exists());
        let status = status(&cache).unwrap();
        assert_eq!(status[0].entries, 1);
        assert_eq!(status[0].bytes, 100);
    }

    #[test]
    fn compiler_caches_are_counted_and_pruned_whole_unless_a_build_holds_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        cache.init().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let old = cache.compiler_cache_dir("mini", "amd64", "old");
        let busy = cache.compiler_cache_dir("mini", "amd64", "busy");
        for (dir, t) in [(&old, now - day * 40), (&busy, now - day * 50)] {
            std::fs::create_dir_all(dir.join("a")).unwrap();
            let f = dir.join("a/objR");
            std::fs::write(&f, vec![1u8; 300]).unwrap();
            set_time(&f, t);
            std::fs::write(crate::build::ccache::lock_path(dir), b"").unwrap();
            set_time(&crate::build::ccache::lock_path(dir), t);
            for d in [dir.join("a"), dir.to_path_buf()] {
                let times = std::fs::FileTimes::new().set_accessed(t).set_modified(t);
                std::fs::File::open(&d).unwrap().set_times(times).unwrap();
            }
        }
        let areas = status(&cache).unwrap();
        let ccache = areas.iter().find(|a| a.area == CCACHE).unwrap();
        assert_eq!((ccache.entries, ccache.bytes), (2, 600));

        // A build holds `busy` (shared), as `ccache::Folder::open` does.
        let held = crate::build::ccache::Folder::open(&busy).unwrap();
        let report = prune(
            &cache,
            &PruneOptions {
                older_than: Some(day * 30),
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            report
                .removed
                .iter()
                .map(|r| (r.path.clone(), r.area.as_str(), r.reason))
                .collect::<Vec<_>>(),
            [(old.clone(), CCACHE, Reason::Old)]
        );
        assert_eq!(report.locked, std::slice::from_ref(&busy));
        assert!(!old.exists() && busy.join("a/objR").exists());
        assert!(
            crate::build::ccache::lock_path(&old).exists(),
            "the lock file stays"
        );
        drop(held);

        // Released, it goes by size too.
        let report = prune(
            &cache,
            &PruneOptions {
                max_size: Some(100),
                ..PruneOptions::default()
            },
        )
        .unwrap();
        assert_eq!(report.removed.len(), 1, "{:?}", report.removed);
        assert_eq!(report.removed[0].reason, Reason::OverSize);
        assert!(!busy.exists());
    }

    #[test]
    fn rehash_removes_corrupted_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        cache.init().unwrap();
        let good = b"hello";
        let (hex, _) = crate::checksum::hash_reader(Algo::Sha1, &good[..]).unwrap();
        let dir = cache.root().join(SOURCES).join(format!("sha1-{hex}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good"), good).unwrap();
        let bad = seed(&cache, &key(9), 10, SystemTime::now());
        let report = rehash(&cache).unwrap();
        assert_eq!(report.ok, 1);
        assert_eq!(report.corrupted.len(), 1);
        assert!(!bad.exists() && dir.exists());
    }
}
