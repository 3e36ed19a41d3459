//! The compiler cache: ccache in the build container, its folder on the host.
//!
//! A catalogue of many versions of one runtime compiles nearly the same C code once per version.
//! With the compiler cache on (the default; `[build] compiler_cache = false` in a recipe or
//! `--no-compiler-cache` turn it off, and `packager verify` always rebuilds without it), a build
//! container gets:
//!
//! - `cache/ccache/<stack>/<arch>/<runtime>/` on the host mounted read-write at [`MOUNT`] — the
//!   container's only writable bind mount (the sources stay read-only), see [`Folder`];
//! - [`COMPILERS`] in `PATH` just before the system folders: a small tmpfs where the probe links
//!   `cc`, `c++`, `gcc`, `g++` and every name of Debian's [`MASQUERADE`] folder (which has no
//!   `cc`) to ccache, for each compiler the image has. So `gcc` and `cc` are ccache without the
//!   recipe knowing; `CC` and `CXX` are left alone, since build systems record them (Python's
//!   `sysconfig` keeps `CC`);
//! - `CCACHE_*` settings from packager, not the recipe ([`env`]).
//!
//! The cache cannot change the artifact: a hit hands back the object file the same compiler
//! made from the same preprocessed input and arguments, and ccache compiles the original source
//! (not its preprocessed form) on a miss. So the cache is no part of the build key. What makes
//! versions hit each other's entries is that every build runs in the same work directory
//! ([`super::SOURCE_DIR`], whatever the version): the current directory and the absolute paths
//! on compiler command lines are the same for 3.11.1 and 3.11.2. That is why no `base_dir` is
//! set — ccache would rewrite absolute paths on the compiler's command line into relative ones,
//! which changes `__FILE__` and debug information, so the artifact — nor any
//! `-ffile-prefix-map`, which is a compiler flag and would change the artifact too.
//!
//! A stack whose build image has no ccache (a prebuilt image), or a cache folder the build user
//! cannot write (a rootless engine maps uid 1000 elsewhere), is found by a probe in the started
//! container: the build then goes on without the cache in a container made without it, with
//! one warning per image or folder, and never fails for it.
//!
//! Engine uids are host uids, so the folder is walled off on the host: the area and its stack
//! and arch levels are 0700 and this user's, ccache writes with `CCACHE_UMASK=077`, and
//! whenever no build holds the folder (when one opens it, and when the last one lets go after
//! its container is removed) [`sweep`] clears setuid and setgid bits and removes anything that
//! is not a regular file or a folder. A build can still plant an object another version of its
//! runtime links in (ccache hashes neither `CCACHE_PREFIX` nor what it runs): `packager
//! verify`, which rebuilds without the cache, is what catches that.
//!
//! While a build uses a folder it holds a shared lock on `<runtime>.lock` beside it; `cache
//! prune` removes a folder only with that lock taken exclusively (so never under a running
//! build). Two builds of one runtime at once share the folder through ccache's own locking.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::docker::{BindMount, ContainerGuard, ContainerSpec, DockerError, ExecSpec};

/// Where the cache folder is mounted in the build container (`CCACHE_DIR`).
pub const MOUNT: &str = "/var/cache/packager/ccache";
/// Debian's folder of compiler names linked to ccache (`gcc`, `g++`, `gcc-12`…, no `cc`): the
/// probe links the same names, and `cc` and `c++`, in [`COMPILERS`].
pub const MASQUERADE: &str = "/usr/lib/ccache";
/// The folder of compiler names linked to ccache that goes in `PATH` before the system's: a
/// tmpfs of the build user, filled by the probe.
pub const COMPILERS: &str = "/run/packager-ccache";
/// Names linked to ccache in [`COMPILERS`] when the image has them, besides [`MASQUERADE`]'s.
pub const COMPILER_NAMES: [&str; 4] = ["cc", "c++", "gcc", "g++"];
/// ccache's own size limit for one runtime's folder (it evicts least recently used entries
/// past it); `cache prune --max-size` bounds the whole cache folder on top of that.
pub const MAX_SIZE: &str = "2G";

/// The ccache settings of a build container: the folder, its size limit, and the settings that
/// keep entries from leaking across compilers or permissions.
pub fn env() -> Vec<(String, String)> {
    [
        ("CCACHE_DIR", MOUNT),
        ("CCACHE_MAXSIZE", MAX_SIZE),
        // The compiler's bytes, not its mtime: an image rebuilt with another gcc of the same
        // size and date (dpkg keeps the package's mtimes) must not hit the old entries.
        ("CCACHE_COMPILERCHECK", "content"),
        // Entries only for their owner, whatever the build's umask: no other host user may read
        // what a build stored (the folders above are 0700 too; see [`Folder::open`]).
        ("CCACHE_UMASK", "077"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `path` with [`COMPILERS`] inserted before the first system folder (`/usr/local/…`, `/usr/…`,
/// `/bin`, `/sbin`): the runtime's own programs and those of its requirements still come first.
pub fn with_masquerade(path: &str) -> String {
    let mut parts: Vec<&str> = path.split(':').collect();
    if parts.contains(&COMPILERS) {
        return path.to_string();
    }
    let system = |p: &&str| {
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .contains(p)
    };
    let at = parts.iter().position(system).unwrap_or(parts.len());
    parts.insert(at, COMPILERS);
    parts.join(":")
}

/// Adds the compiler cache to a build container's spec: the read-write mount of `host` at
/// [`MOUNT`], [`env`], the [`COMPILERS`] tmpfs and that folder in `PATH` (unless the recipe set
/// its own `PATH`, which is left as the recipe wrote it).
pub fn apply(spec: &mut ContainerSpec, host: &Path, recipe_sets_path: bool) {
    spec.mounts.push(BindMount {
        host: host.to_path_buf(),
        container: MOUNT.to_string(),
        read_only: false,
    });
    if !recipe_sets_path {
        for (k, v) in spec.env.iter_mut() {
            if k == "PATH" {
                *v = with_masquerade(v);
            }
        }
    }
    spec.env.retain(|(k, _)| !k.starts_with("CCACHE_"));
    spec.env.extend(env());
    if let Some(sandbox) = &mut spec.sandbox {
        let owner = crate::sandbox::OWNER;
        sandbox.tmpfs.push((
            COMPILERS.to_string(),
            format!(
                "rw,exec,nosuid,nodev,size=1m,mode=0755,uid={},gid={}",
                owner.uid, owner.gid
            ),
        ));
    }
}

/// How many folder levels under a runtime's folder [`sweep`] goes down (ccache uses two).
const SWEEP_DEPTH: usize = 32;

/// A runtime's compiler cache folder on the host, held for one build: the folder exists behind
/// the permission wall (see [`Folder::open`]), the build user may own it, and a shared lock
/// keeps `cache prune` away until released.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    lock: File,
    swept: Vec<Swept>,
}

impl Folder {
    /// Makes `dir` (`<area>/<stack>/<arch>/<runtime>`) and takes the shared lock on its lock
    /// file (`<dir>.lock`, waiting while a prune holds it exclusively).
    ///
    /// The permission wall: the area and the stack and arch levels are 0700 and belong to this
    /// process's user (root takes back a level another user owns; any other user gets an error
    /// for it), so no other host user can reach a file a build wrote there; the runtime's
    /// folder keeps at most its owner's bits and is given to the build user when this process
    /// may (root). Levels made 0755 by older versions are tightened here.
    ///
    /// When no other build holds the folder, it is [`sweep`]t first ([`Folder::swept`] says
    /// what that undid): what a build left that a build cannot have been stopped from leaving.
    /// Blocking: call it from a blocking thread.
    pub fn open(dir: &Path) -> io::Result<Folder> {
        let lock = lock_path(dir);
        for level in dir
            .ancestors()
            .skip(1)
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            make_level(level)?;
            secure_level(level, false)?;
        }
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)?
            .into_file();
        let locking =
            |e: io::Error| io::Error::new(e.kind(), format!("locking {}: {e}", lock.display()));
        let swept = match file.try_lock() {
            // No build uses the folder: sweep it, then share it.
            Ok(()) => {
                make_level(dir)?;
                secure_level(dir, true)?;
                let swept = sweep(dir)?;
                file.lock_shared().map_err(locking)?;
                swept
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                file.lock_shared().map_err(locking)?;
                Vec::new()
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(locking(e)),
        };
        // Again under the shared lock: a prune may have come between the two locks.
        make_level(dir)?;
        secure_level(dir, true)?;
        // Its modification time tells `cache status` and `prune` when it was last used.
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(Folder {
            dir: dir.to_path_buf(),
            lock: file,
            swept,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What [`Folder::open`]'s sweep undid (left by an earlier build, or by a container kept or
    /// killed before its sweep).
    pub fn swept(&self) -> &[Swept] {
        &self.swept
    }

    /// Lets the folder go once no container that mounted it runs any more: [`sweep`]s it when
    /// no other build holds it (else the last one to let go sweeps), and returns what that
    /// undid. Blocking: call it from a blocking thread.
    pub fn release(self) -> io::Result<Vec<Swept>> {
        match self.lock.try_lock() {
            Ok(()) => {
                // The build may have opened up its own folder (it is the folder's owner).
                secure_level(&self.dir, true)?;
                sweep(&self.dir)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(Vec::new()),
            Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("locking {}: {e}", lock_path(&self.dir).display()),
            )),
        }
    }
}

/// Makes one level of the compiler cache folders, 0700, if it is not there.
fn make_level(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The cache root itself (the levels above the area are the cache's business).
            if let Some(parent) = dir.parent() {
                fs_err::create_dir_all(parent)?;
            }
            make_level(dir)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", dir.display()),
        )),
        Ok(()) => Ok(()),
    }
}

/// Puts one level behind the permission wall: a folder (not a link), this user's and 0700; the
/// runtime's own folder (`leaf`) keeps only its owner's bits and goes to the build user when
/// this process is root.
fn secure_level(dir: &Path, leaf: bool) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let err = |e: rustix::io::Errno| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
    };
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let st = rustix::fs::fstat(&fd).map_err(err)?;
    let me = rustix::process::geteuid();
    let mode = st.st_mode & 0o7777;
    if leaf {
        if me.is_root() {
            // The build user (uid 1000) writes there. Anyone else keeps it, and the probe
            // tells when the build user cannot write it.
            let owner = crate::sandbox::OWNER;
            let _ = rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(owner.uid as u32)),
                Some(rustix::fs::Gid::from_raw(owner.gid as u32)),
            );
        }
        if mode & !0o700 != 0 {
            // Only the owner's bits, as they were (a folder made read-only stays read-only).
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o700)).map_err(err)?;
        }
        return Ok(());
    }
    if st.st_uid != me.as_raw() {
        if !me.is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to this user (uid {}): another user could swap the compiler cache folders in it (hint: remove it, or run packager as its owner)",
                    dir.display(),
                    st.st_uid,
                    me.as_raw()
                ),
            ));
        }
        rustix::fs::fchown(&fd, Some(me), Some(rustix::process::getegid())).map_err(err)?;
    }
    if mode != 0o700 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// One thing [`sweep`] undid in a compiler cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The path, relative to the folder.
    pub path: PathBuf,
    /// What was there and what was done.
    pub what: SweptKind,
}

/// What [`sweep`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweptKind {
    /// Something that is neither a regular file nor a folder (a fifo, socket, device or
    /// symbolic link: ccache's own lock links are stale once no build runs), removed.
    Removed(&'static str),
    /// A file or folder with setuid, setgid or sticky bits (its mode then), which were cleared.
    Bits(u32),
    /// A folder nested deeper than ccache ever makes, removed whole.
    TooDeep,
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match self.what {
            SweptKind::Removed(kind) => write!(f, "removed {kind} {path}"),
            SweptKind::Bits(mode) => {
                let bits: Vec<&str> = [(0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")]
                    .into_iter()
                    .filter(|(bit, _)| mode & bit != 0)
                    .map(|(_, name)| name)
                    .collect();
                write!(
                    f,
                    "cleared the {} bit of {path} (mode {mode:04o})",
                    bits.join(" and ")
                )
            }
            SweptKind::TooDeep => {
                write!(f, "removed {path}: nested deeper than {SWEEP_DEPTH} levels")
            }
        }
    }
}

/// Makes a compiler cache folder hold nothing that is privileged on the host, whatever a build
/// (its `root` phases included) wrote there: setuid, setgid and sticky bits are cleared, and
/// whatever is not a regular file or a folder is removed. It never follows a link, and works
/// relative to the folders it has open, so a container that still writes there (a kept one)
/// cannot point it elsewhere. Returns what it undid.
pub fn sweep(dir: &Path) -> io::Result<Vec<Swept>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
    })?;
    let mut swept = Vec::new();
    sweep_in(&fd, dir, Path::new(""), 0, &mut swept)?;
    Ok(swept)
}

fn sweep_in(
    fd: &std::os::fd::OwnedFd,
    root: &Path,
    rel: &Path,
    depth: usize,
    swept: &mut Vec<Swept>,
) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use rustix::io::Errno;
    use std::os::unix::ffi::OsStrExt;
    let err = |path: &Path, e: Errno| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", root.join(path).display()))
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd).map_err(|e| err(rel, e))? {
        let entry = entry.map_err(|e| err(rel, e))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    for name in names {
        let path = rel.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let st = match rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(err(&path, e)),
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let (flags, what) = match kind {
            FileType::RegularFile if st.st_mode & 0o7000 == 0 => continue,
            FileType::RegularFile => (OFlags::NONBLOCK | OFlags::NOCTTY, None),
            FileType::Directory => (OFlags::DIRECTORY, None),
            FileType::Symlink => (OFlags::empty(), Some("symbolic link")),
            FileType::Fifo => (OFlags::empty(), Some("fifo")),
            FileType::Socket => (OFlags::empty(), Some("socket")),
            FileType::CharacterDevice => (OFlags::empty(), Some("character device")),
            FileType::BlockDevice => (OFlags::empty(), Some("block device")),
            FileType::Unknown => (OFlags::empty(), Some("file of unknown type")),
        };
        if let Some(what) = what {
            match rustix::fs::unlinkat(fd, name.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(err(&path, e)),
            }
            swept.push(Swept {
                path,
                what: SweptKind::Removed(what),
            });
            continue;
        }
        // Opened without following a link, then checked again: what is changed is what was
        // looked at.
        let opened = rustix::fs::openat(
            fd,
            name.as_c_str(),
            flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let child = match opened {
            Ok(child) => child,
            // Gone, or swapped for a link or a fifo since: the next sweep sees it.
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::NXIO) => continue,
            Err(e) => return Err(err(&path, e)),
        };
        let st = rustix::fs::fstat(&child).map_err(|e| err(&path, e))?;
        if FileType::from_raw_mode(st.st_mode) != kind {
            continue;
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o7000 != 0 {
            rustix::fs::fchmod(&child, Mode::from_raw_mode(mode & 0o777))
                .map_err(|e| err(&path, e))?;
            swept.push(Swept {
                path: path.clone(),
                what: SweptKind::Bits(mode),
            });
        }
        if kind == FileType::Directory {
            if depth >= SWEEP_DEPTH {
                drop(child);
                fs_err::remove_dir_all(root.join(&path))?;
                swept.push(Swept {
                    path,
                    what: SweptKind::TooDeep,
                });
            } else {
                sweep_in(&child, root, &path, depth + 1, swept)?;
            }
        }
    }
    Ok(())
}

/// The lock file of a compiler cache folder: `<dir>.lock`, beside it (not inside: the build can
/// write inside).
pub fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    dir.with_file_name(name)
}

/// ccache's counters, as `ccache --print-stats` gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Compilations answered from the cache (direct or preprocessed).
    pub hits: u64,
    /// Compilations that ran the compiler and stored their result.
    pub misses: u64,
}

impl Stats {
    /// Parses `ccache --print-stats` (`key<TAB>value` lines).
    pub fn parse(text: &str) -> Stats {
        let mut stats = Stats::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('\t') else {
                continue;
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            match key.trim() {
                "direct_cache_hit" | "preprocessed_cache_hit" => stats.hits += n,
                "cache_miss" => stats.misses += n,
                _ => {}
            }
        }
        stats
    }

    /// What changed since `before` (another build of the runtime at the same time counts too).
    pub fn since(self, before: Stats) -> Stats {
        Stats {
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hits, {} misses", self.hits, self.misses)
    }
}

/// What the probe found in a started build container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// ccache is there and the folder writable; its counters now.
    Ready(Stats),
    /// The cache cannot be used; why, for the warning.
    Unusable(String),
}

/// Checks ccache and the folder, links the image's compilers in [`COMPILERS`] (each name that a
/// system folder has), then prints ccache's counters.
fn probe_script() -> String {
    let system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    format!(
        r#"ccache=$(PATH={system} command -v ccache || true)
if [ -z "$ccache" ]; then echo "packager-probe: no-ccache"; exit 0; fi
if [ ! -w "$CCACHE_DIR" ]; then echo "packager-probe: not-writable"; exit 0; fi
for name in {names} $(ls {MASQUERADE} 2>/dev/null); do
  if PATH={system} command -v "$name" >/dev/null; then ln -sf "$ccache" "{COMPILERS}/$name"; fi
done
ccache --print-stats"#,
        names = COMPILER_NAMES.join(" ")
    )
}

/// Looks in a build container made with [`apply`]: whether its image has ccache, whether the
/// build user can write the cache folder, and ccache's counters.
pub async fn probe(
    container: &ContainerGuard,
    stack: &str,
    host_dir: &Path,
) -> Result<Probe, DockerError> {
    let (out, code) = output(container, &probe_script()).await?;
    Ok(if out.contains("packager-probe: no-ccache") {
        Probe::Unusable(format!(
            "the build image of stack {stack} has no ccache: building without the compiler cache (add `ccache` to the stack's packages, or set `[build] compiler_cache = false`)"
        ))
    } else if out.contains("packager-probe: not-writable") {
        Probe::Unusable(format!(
            "the compiler cache folder {} is not writable by the build user (uid {}): building without it (hint: `chown -R {}:{} {}`, or pass --no-compiler-cache)",
            host_dir.display(),
            crate::sandbox::OWNER.uid,
            crate::sandbox::OWNER.uid,
            crate::sandbox::OWNER.gid,
            host_dir.display()
        ))
    } else if code != 0 {
        Probe::Unusable(format!(
            "ccache in the build image of stack {stack} does not answer (`ccache --print-stats` exited {code}): building without the compiler cache"
        ))
    } else {
        Probe::Ready(Stats::parse(&out))
    })
}

/// ccache's counters in a container where the probe found it ready.
pub async fn stats(container: &ContainerGuard) -> Result<Option<Stats>, DockerError> {
    let (out, code) = output(container, "ccache --print-stats").await?;
    Ok((code == 0).then(|| Stats::parse(&out)))
}

async fn output(container: &ContainerGuard, script: &str) -> Result<(String, i64), DockerError> {
    let mut out = String::new();
    let result = container
        .exec(&ExecSpec::shell(script), &mut |_, line| {
            out.push_str(line);
            out.push('\n');
        })
        .await?;
    Ok((out, result.exit_code))
}

/// Whether to warn about `key` (an image or a folder): once per process, so a catalogue built on
/// a stack without ccache says it once, not once per version.
pub fn first_warning(key: &str) -> bool {
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    WARNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masquerade_goes_before_the_system_folders() {
        assert_eq!(
            with_masquerade("/app/x/bin:/app/y/bin:/usr/local/sbin:/usr/local/bin:/usr/bin:/bin"),
            "/app/x/bin:/app/y/bin:/run/packager-ccache:/usr/local/sbin:/usr/local/bin:/usr/bin:/bin"
        );
        assert_eq!(with_masquerade("/opt/bin"), "/opt/bin:/run/packager-ccache");
        let once = with_masquerade("/usr/bin");
        assert_eq!(with_masquerade(&once), once);
    }

    #[test]
    fn apply_mounts_read_write_and_sets_only_packagers_settings() {
        let mut spec = ContainerSpec::new("img");
        spec.env = vec![
            ("PATH".into(), "/app/x/bin:/usr/bin:/bin".into()),
            ("CCACHE_BASEDIR".into(), "/".into()),
        ];
        apply(&mut spec, Path::new("/c/ccache/mini/amd64/x"), false);
        assert_eq!(
            spec.mounts,
            [BindMount {
                host: "/c/ccache/mini/amd64/x".into(),
                container: MOUNT.into(),
                read_only: false
            }]
        );
        let get = |k: &str| {
            spec.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("PATH").unwrap(),
            "/app/x/bin:/run/packager-ccache:/usr/bin:/bin"
        );
        assert_eq!(get("CCACHE_DIR").unwrap(), MOUNT);
        assert_eq!(
            get("CCACHE_BASEDIR"),
            None,
            "no base_dir: it changes __FILE__"
        );
        assert_eq!(
            get("CC"),
            None,
            "CC is recorded by build systems: left alone"
        );

        let mut own = ContainerSpec::new("img");
        own.env = vec![("PATH".into(), "/mine".into())];
        apply(&mut own, Path::new("/c"), true);
        assert_eq!(own.env[0].1, "/mine", "a recipe's own PATH is kept");
    }

    #[test]
    fn stats_parse_hits_and_misses() {
        let text = "stats_updated_timestamp\t1700000000\ndirect_cache_hit\t3\npreprocessed_cache_hit\t2\ncache_miss\t7\nfiles_in_cache\t14\n";
        let s = Stats::parse(text);
        assert_eq!(s, Stats { hits: 5, misses: 7 });
        assert_eq!(
            s.since(Stats { hits: 1, misses: 7 }),
            Stats { hits: 4, misses: 0 }
        );
        assert_eq!(s.to_string(), "5 hits, 7 misses");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    #[test]
    fn open_walls_the_levels_off_and_sweeps_what_an_earlier_build_left() {
        let tmp = tempfile::tempdir().unwrap();
        let area = tmp.path().join("ccache");
        let dir = area.join("mini/amd64/lua");
        // As an older packager left them: 0755, with a build's leftovers inside.
        std::fs::create_dir_all(dir.join("a")).unwrap();
        let levels = [
            area.clone(),
            area.join("mini"),
            area.join("mini/amd64"),
            dir.clone(),
        ];
        for level in &levels {
            set_mode(level, 0o755);
        }
        std::fs::write(dir.join("a/entry"), b"an object").unwrap();
        std::fs::write(dir.join("a/sh"), b"#!/bin/sh\n").unwrap();
        set_mode(&dir.join("a/sh"), 0o6755);
        set_mode(&dir.join("a"), 0o2755);
        mkfifo(&dir.join("fifo"));
        std::os::unix::fs::symlink("/etc/shadow", dir.join("link")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();

        let folder = Folder::open(&dir).unwrap();
        for level in &levels[..3] {
            assert_eq!(mode(level), 0o700, "{}", level.display());
        }
        assert_eq!(mode(&dir), 0o700);
        let mut said: Vec<String> = folder.swept().iter().map(|s| s.to_string()).collect();
        said.sort();
        assert_eq!(
            said,
            [
                "cleared the setgid bit of a (mode 2755)",
                "cleared the setuid and setgid bit of a/sh (mode 6755)",
                "removed fifo fifo",
                "removed socket sock",
                "removed symbolic link link",
            ]
        );
        assert_eq!(mode(&dir.join("a/sh")), 0o755);
        assert_eq!(mode(&dir.join("a")), 0o755);
        for gone in ["fifo", "link", "sock"] {
            assert!(std::fs::symlink_metadata(dir.join(gone)).is_err(), "{gone}");
        }
        assert_eq!(std::fs::read(dir.join("a/entry")).unwrap(), b"an object");

        // While another build holds the folder, neither opening nor letting go sweeps it: the
        // last one out does.
        mkfifo(&dir.join("late"));
        let second = Folder::open(&dir).unwrap();
        assert!(second.swept().is_empty());
        assert!(second.release().unwrap().is_empty());
        assert!(std::fs::symlink_metadata(dir.join("late")).is_ok());
        let swept = folder.release().unwrap();
        assert_eq!(
            swept,
            [Swept {
                path: "late".into(),
                what: SweptKind::Removed("fifo")
            }]
        );
    }

    #[test]
    fn a_folder_nested_past_what_ccache_makes_is_removed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let mut deep = tmp.path().to_path_buf();
        for _ in 0..=SWEEP_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("sh"), b"").unwrap();
        set_mode(&deep.join("sh"), 0o4755);
        let swept = sweep(tmp.path()).unwrap();
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert_eq!(swept[0].what, SweptKind::TooDeep);
        assert_eq!(swept[0].path.components().count(), SWEEP_DEPTH + 1);
        assert!(!tmp.path().join(&swept[0].path).exists());
        assert!(tmp.path().join("d").is_dir());
    }

    #[test]
    fn a_level_another_user_owns_goes_back_to_root() {
        let tmp = tempfile::tempdir().unwrap();
        let level = tmp.path().join("ccache");
        std::fs::create_dir(&level).unwrap();
        let other = rustix::fs::Uid::from_raw(4242);
        rustix::fs::chown(&level, Some(other), None).ok();
        let meta = std::fs::metadata(&level).unwrap();
        use std::os::unix::fs::MetadataExt;
        if rustix::process::geteuid().is_root() {
            assert_eq!(meta.uid(), 4242);
            secure_level(&level, false).unwrap();
            assert_eq!(std::fs::metadata(&level).unwrap().uid(), 0);
            assert_eq!(mode(&level), 0o700);
        } else {
            // Not root: the level stays this user's; another user's is an error.
            secure_level(&level, false).unwrap();
            assert_eq!(mode(&level), 0o700);
        }
    }

    #[test]
    fn the_lock_file_sits_beside_the_folder() {
        assert_eq!(
            lock_path(Path::new("/c/ccache/mini/amd64/lua")),
            Path::new("/c/ccache/mini/amd64/lua.lock")
        );
    }
}
