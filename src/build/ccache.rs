//! The compiler cache: ccache in the build container, its folder on the host.
//!
//! A catalogue of many versions of one runtime compiles nearly the same C code once per version.
//! With the compiler cache on (the default; `[build] compiler_cache = false` in a recipe or
//! `--no-compiler-cache` turn it off, and `packager verify` always rebuilds without it), a build
//! container gets:
//!
//! - `cache/ccache/<stack>/<arch>/<runtime>/` on the host mounted read-write at [`MOUNT`] — the
//!   container's only writable bind mount (the sources stay read-only);
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
        // Entries readable by whoever prunes the cache on the host, whatever the build's umask.
        ("CCACHE_UMASK", "022"),
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

/// A runtime's compiler cache folder on the host, held for one build: the folder exists, the
/// build user may own it, and a shared lock keeps `cache prune` away until dropped.
#[derive(Debug)]
pub struct Folder {
    dir: PathBuf,
    _lock: File,
}

impl Folder {
    /// Takes the shared lock on `dir`'s lock file (`<dir>.lock`, waiting while a prune holds it
    /// exclusively), then makes `dir`, given to the build user when this process may (root).
    /// Blocking: call it from a blocking thread.
    pub fn open(dir: &Path) -> io::Result<Folder> {
        let lock = lock_path(dir);
        if let Some(parent) = lock.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)?
            .into_file();
        file.lock_shared()
            .map_err(|e| io::Error::new(e.kind(), format!("locking {}: {e}", lock.display())))?;
        fs_err::create_dir_all(dir)?;
        // The build user (uid 1000) writes there. Root can hand the folder over; anyone else
        // keeps it, and the probe tells when the build user cannot write it.
        let owner = crate::sandbox::OWNER;
        let _ = std::os::unix::fs::chown(dir, Some(owner.uid as u32), Some(owner.gid as u32));
        // Its modification time tells `cache status` and `prune` when it was last used.
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(Folder {
            dir: dir.to_path_buf(),
            _lock: file,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
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

    #[test]
    fn the_lock_file_sits_beside_the_folder() {
        assert_eq!(
            lock_path(Path::new("/c/ccache/mini/amd64/lua")),
            Path::new("/c/ccache/mini/amd64/lua.lock")
        );
    }
}
