//! How build and test containers are confined.
//!
//! A recipe's commands are code from the internet run on a build farm, so every build, test
//! and debug-shell container is made the same way:
//!
//! - every command runs as the unprivileged [`USER`] (`1000:1000`), which owns the work
//!   directory and the prefix (the sources and artifacts are uploaded with that owner); a
//!   recipe that names a phase in `[build] root` runs that phase as root, with only
//!   [`ROOT_CAPABILITIES`] (so that root can work on the build user's files);
//! - no capabilities for anything else (`--cap-drop ALL`), `no-new-privileges`;
//! - limits on processes, memory (no swap beyond it) and CPUs: the command line's, else the
//!   recipe's, else [`default_limits`];
//! - a read-only root filesystem; what can be written is the work directory ([`WORK_ROOT`]),
//!   the prefixes (an anonymous volume at `/app`, or at the parent of a prefix outside it; both
//!   removed with the container), `/tmp` and [`HOME`] (tmpfs, each with a size: see
//!   [`tmpfs_sizes`], so filling them fails with `ENOSPC` rather than eating the memory);
//! - a timeout on each build phase and on the test step ([`DEFAULT_TIMEOUT`],
//!   [`DEFAULT_TEST_TIMEOUT`]), after which the container is removed.
//!
//! Limits are not part of the build key: they cannot change what a build makes, only whether
//! it finishes.

use std::path::{Component, Path};

use bytes::Bytes;

use crate::archive::Owner;
use crate::docker::{self, ContainerGuard, DockerError, Sandbox};
use crate::recipe::Limits;

/// The owner of the work directory and the prefix, and the user of every command.
pub const OWNER: Owner = Owner {
    uid: 1000,
    gid: 1000,
};
/// [`OWNER`] as the engine's `uid:gid`.
pub const USER: &str = "1000:1000";
/// The user of a phase the recipe runs as root.
pub const ROOT_USER: &str = "0:0";
/// `HOME` of the build user: a tmpfs it owns.
pub const HOME: &str = "/home/packager";
/// The writable folder the sources are unpacked under (the work directory is inside it).
pub const WORK_ROOT: &str = "/build";
/// Where the prefixes live on a dyno.
pub const APP: &str = "/app";
/// The default process limit: room for `make -j` and a test suite, not for a fork bomb.
pub const DEFAULT_PIDS: u64 = 4096;
/// How long each build phase may run when neither the command line nor the recipe says:
/// generous enough for Mono's `make` on a small machine.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// How long the test step may run when neither the command line nor the recipe says.
pub const DEFAULT_TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// The sizes of `/tmp` and [`HOME`] in a container without a memory limit.
pub const DEFAULT_TMPFS_SIZES: (u64, u64) = (4 << 30, 1 << 30);
/// What a root phase keeps: enough to read, write and chown the build user's files.
pub const ROOT_CAPABILITIES: [&str; 3] = ["CHOWN", "DAC_OVERRIDE", "FOWNER"];

/// The writable volume that holds `dir`: `/app` for a folder under it, else the folder's parent
/// (a prefix outside `/app`, or the work directory under [`WORK_ROOT`]).
pub fn volume_for(dir: &str) -> String {
    let path = Path::new(dir);
    if path.starts_with(APP) && path != Path::new(APP) {
        return APP.to_string();
    }
    path.parent()
        .filter(|p| *p != Path::new("/"))
        .map_or_else(|| dir.to_string(), |p| p.to_string_lossy().into_owned())
}

/// The sandbox of a container whose commands write `dirs` (the work directory, the prefix,
/// the prefixes of required runtimes), with `limits`; `root` keeps [`ROOT_CAPABILITIES`] for
/// phases that run as root.
pub fn sandbox(dirs: &[&str], limits: Limits, root: bool) -> Sandbox {
    let mut volumes: Vec<String> = Vec::new();
    for dir in dirs {
        let volume = volume_for(dir);
        if !volumes
            .iter()
            .any(|v| Path::new(&volume).starts_with(v) || Path::new(v).starts_with(&volume))
        {
            volumes.push(volume);
        }
    }
    let owner = format!("uid={},gid={}", OWNER.uid, OWNER.gid);
    let (tmp_size, home_size) = tmpfs_sizes(limits.memory);
    Sandbox {
        user: USER.to_string(),
        cap_add: if root {
            ROOT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
        } else {
            Vec::new()
        },
        read_only: true,
        volumes,
        tmpfs: vec![
            (
                "/tmp".to_string(),
                format!("rw,exec,nosuid,nodev,mode=1777,size={tmp_size}"),
            ),
            (
                HOME.to_string(),
                format!("rw,exec,nosuid,nodev,mode=0755,{owner},size={home_size}"),
            ),
        ],
        limits: docker::Limits {
            memory: limits.memory,
            millicpus: limits.millicpus,
            pids: limits.pids,
        },
    }
}

/// The sizes in bytes of `/tmp` and [`HOME`]: half and a quarter of the container's memory
/// (tmpfs lives in it), else [`DEFAULT_TMPFS_SIZES`]. More room: more `--memory`.
pub fn tmpfs_sizes(memory: Option<u64>) -> (u64, u64) {
    memory.map_or(DEFAULT_TMPFS_SIZES, |m| (m / 2, m / 4))
}

/// The limits a build gets when neither the command line nor the recipe sets one: three
/// quarters of the engine's memory shared among the builds running at once (at least 1 GiB),
/// the CPUs of its `{jobs}` share, [`DEFAULT_PIDS`] processes, [`DEFAULT_TIMEOUT`] per phase,
/// [`DEFAULT_TEST_TIMEOUT`] for the test, a log of [`crate::build::DEFAULT_LOG_LIMIT`].
pub fn default_limits(memory_total: u64, cpus_total: u64, jobs: usize, parallel: usize) -> Limits {
    let parallel = parallel.max(1) as u64;
    let memory = (memory_total > 0).then(|| (memory_total / 4 * 3 / parallel).max(1 << 30));
    let cpus = (jobs.max(1) as u64).min(cpus_total.max(1));
    Limits {
        memory,
        millicpus: Some(cpus * 1000),
        pids: Some(DEFAULT_PIDS),
        timeout: Some(DEFAULT_TIMEOUT),
        test_timeout: Some(DEFAULT_TEST_TIMEOUT),
        log: Some(crate::build::DEFAULT_LOG_LIMIT),
    }
}

/// When a failed command's exit code or output says it hit a limit, what to tell the user.
pub fn limit_note(exit_code: i64, tail: &[String], limits: Limits) -> Option<String> {
    let forked = tail.iter().any(|l| {
        l.contains("Cannot fork")
            || l.contains("fork: Resource temporarily unavailable")
            || l.contains("fork: retry")
    });
    if forked {
        let n = limits.pids.map_or("its".to_string(), |p| p.to_string());
        return Some(format!(
            "the build reached its process limit ({n} processes at once): raise it with `[build] pids` in the recipe or `--pids-limit`"
        ));
    }
    if exit_code == 137 {
        let m = limits.memory.map_or("its memory limit".to_string(), |m| {
            format!("its memory limit of {} MiB", m >> 20)
        });
        return Some(format!(
            "the command was killed (exit code 137), most likely for {m}: raise it with `[build] memory` in the recipe or `--memory`"
        ));
    }
    None
}

/// A tar stream of the folders leading to `rel` (relative), each owned by [`OWNER`], 0755.
fn folders_tar(rel: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut path = std::path::PathBuf::new();
    for component in rel.components() {
        if let Component::Normal(c) = component {
            path.push(c);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(OWNER.uid);
            header.set_gid(OWNER.gid);
            header.set_mtime(0);
            header.set_size(0);
            builder
                .append_data(&mut header, &path, std::io::empty())
                .expect("writing to memory does not fail");
        }
    }
    builder
        .into_inner()
        .expect("writing to memory does not fail")
}

/// Makes `dir` (and the folders leading to it inside its volume, see [`volume_for`]) in a
/// sandboxed container, owned by the build user: the user cannot make them itself, since the
/// volume's root belongs to root.
pub async fn make_dir(container: &ContainerGuard, dir: &str) -> Result<(), DockerError> {
    let volume = volume_for(dir);
    let rel = Path::new(dir)
        .strip_prefix(&volume)
        .unwrap_or_else(|_| Path::new(""));
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    let tar = folders_tar(rel);
    container
        .upload(
            &volume,
            futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(tar)) }),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_live_in_app_or_beside_themselves() {
        assert_eq!(volume_for("/app/.heroku/python"), "/app");
        assert_eq!(volume_for("/app/mono"), "/app");
        assert_eq!(volume_for("/build/src"), "/build");
        assert_eq!(volume_for("/opt/lua"), "/opt");
        assert_eq!(volume_for("/usr/local/x"), "/usr/local");
    }

    #[test]
    fn one_volume_per_tree() {
        let s = sandbox(
            &["/build/src", "/app/mono", "/app/.heroku/python", "/opt/x"],
            Limits::default(),
            false,
        );
        assert_eq!(s.volumes, ["/build", "/app", "/opt"]);
        assert!(s.read_only);
        assert!(s.cap_add.is_empty());
        assert_eq!(s.user, "1000:1000");
        assert!(
            sandbox(&["/build/src"], Limits::default(), true)
                .cap_add
                .len()
                == 3
        );
    }

    #[test]
    fn tmp_and_home_have_a_size() {
        let gib = 1u64 << 30;
        let limits = Limits {
            memory: Some(gib),
            ..Limits::default()
        };
        let s = sandbox(&["/build/src"], limits, false);
        let size = |dir: &str| {
            let (_, options) = s.tmpfs.iter().find(|(d, _)| d == dir).unwrap();
            options
                .split(',')
                .find_map(|o| o.strip_prefix("size="))
                .map(str::to_string)
        };
        assert_eq!(size("/tmp"), Some((gib / 2).to_string()));
        assert_eq!(size(HOME), Some((gib / 4).to_string()));
        assert_eq!(tmpfs_sizes(None), DEFAULT_TMPFS_SIZES);
    }

    #[test]
    fn default_limits_share_the_machine() {
        let gib = 1u64 << 30;
        let l = default_limits(24 * gib, 2, 2, 1);
        assert_eq!(l.memory, Some(18 * gib));
        assert_eq!(l.millicpus, Some(2000));
        assert_eq!(l.pids, Some(DEFAULT_PIDS));
        assert_eq!(default_limits(24 * gib, 2, 1, 2).memory, Some(9 * gib));
        assert_eq!(default_limits(gib, 2, 8, 4).memory, Some(gib));
        assert_eq!(default_limits(gib, 2, 8, 4).millicpus, Some(2000));
        assert_eq!(default_limits(0, 2, 1, 1).memory, None);
    }

    #[test]
    fn failures_at_a_limit_say_which() {
        let limits = Limits {
            memory: Some(1 << 30),
            millicpus: None,
            pids: Some(64),
            ..Limits::default()
        };
        let note = limit_note(2, &["/bin/sh: 0: Cannot fork".into()], limits).unwrap();
        assert!(
            note.contains("64 processes") && note.contains("--pids-limit"),
            "{note}"
        );
        let note = limit_note(137, &[], limits).unwrap();
        assert!(
            note.contains("1024 MiB") && note.contains("--memory"),
            "{note}"
        );
        assert_eq!(limit_note(2, &["error: no".into()], limits), None);
    }

    #[test]
    fn folders_are_made_owned_by_the_build_user() {
        let tar = folders_tar(Path::new(".heroku/python"));
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (".heroku".to_string(), 1000),
                (".heroku/python".to_string(), 1000)
            ]
        );
    }
}
