//! Deterministic `.tar.gz` and `.tar.zst` artifacts from the tar stream of a container's install
//! prefix.
//!
//! Docker's "download from container" archive API returns the prefix (say `/app`) as a tar
//! stream whose entries are `app/`, `app/bin/x`, … in filesystem order, with the build's owners
//! and times. [`package_tar_stream`] turns such a stream into an artifact that depends only on
//! the files' paths, content, kinds and executable bits:
//!
//! * paths are relative to the prefix (`bin/x`; the artifact is extracted *at* the prefix), the
//!   prefix directory itself is not an entry, and entries are sorted by path (byte order),
//!   directories included;
//! * GNU headers only (long names and link targets use GNU `././@LongLink` records, themselves
//!   deterministic), no pax records, no atime/ctime, uid/gid 0 without user or group names, one
//!   modification time for every entry ([`PackageOptions::mtime`]);
//! * modes are normalised: directories 0755, files 0755 if any executable bit is set else 0644,
//!   symlinks 0777; setuid, setgid and sticky bits are dropped;
//! * symlinks are kept. A relative target that climbs above the prefix, or an absolute target
//!   outside the prefix, is an error naming the link. **An absolute target inside the prefix**
//!   (`/app/lib/libx.so.1`) **is rewritten to the equivalent relative target**
//!   (`../lib/libx.so.1`), so the artifact never depends on where it is extracted. Once every
//!   entry is indexed, each target is also followed through the prefix's other symlinks, as the
//!   kernel would: one that leaves the prefix that way (`lib/up -> ..` then `x -> lib/up/../..`),
//!   or goes through more than 40 symlinks, is an error naming the link;
//! * hard links are kept as hard links: of each set of linked paths, the first in sorted order
//!   carries the data and the others are hard links to it;
//! * devices, fifos and other special files, entries outside the prefix, `..` components,
//!   duplicate paths and entries below a symlink are errors naming the entry;
//! * the tar is compressed with gzip or zstd ([`PackageOptions::format`]). The gzip stream has
//!   no file name and modification time 0, and is compressed at a fixed level in fixed-size
//!   blocks on several threads (see [`PackageOptions::threads`]); the zstd frame is written by
//!   zstd's multithreaded mode, always (even on one thread), with a content checksum. Either
//!   way the bytes depend on the format and level, never on the number of threads.
//!
//! Memory stays bounded whatever the artifact's size: file contents are spooled to an anonymous
//! temporary file next to the destination while their headers are indexed (memory grows with
//! the number of entries, not their bytes), then written in sorted order by reading the spool
//! back at each entry's offset. The artifact is written to a temporary file next to the
//! destination, hashed (SHA-256) on the way, and renamed into place only on success: a failure
//! leaves no file at the destination.

mod format;
mod gzip;
mod read;
mod zst;

pub use format::{ArtifactFormat, DEFAULT_ZSTD_LEVEL, ZSTD_LEVELS};
pub use read::{
    ArtifactEntry, EntryKind, list_artifact, open_artifact, read_artifact_files, write_owned_tar,
};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::archive::{
    ChainError, MAX_LINK_FOLLOWS, UnsafeReason, follow_link, resolve_link, split_path, type_name,
};

/// Modification time given to every entry when `SOURCE_DATE_EPOCH` is not set:
/// 1980-01-01T00:00:00Z, the earliest time ZIP files can store (Python's `zipfile` refuses older
/// files, so 0 would break building wheels from the extracted tree).
pub const DEFAULT_MTIME: u64 = 315_532_800;

/// gzip compression level used unless configured otherwise.
pub const DEFAULT_LEVEL: u32 = 6;

/// How to build an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOptions {
    /// Absolute install prefix inside the container, e.g. `/app`. The tar stream's entries are
    /// expected under its last component (`app/…`), which is stripped; absolute symlink targets
    /// inside it are made relative.
    pub prefix: PathBuf,
    /// Modification time of every entry, in seconds since the epoch.
    pub mtime: u64,
    /// How the tar is compressed.
    pub format: ArtifactFormat,
    /// gzip compression level, 0 to 9 (for [`ArtifactFormat::TarGz`]).
    pub level: u32,
    /// zstd compression level, within [`ZSTD_LEVELS`] (for [`ArtifactFormat::TarZst`]).
    pub zstd_level: u32,
    /// Compression threads (at least one is used). Does not affect the output bytes.
    pub threads: usize,
    /// Entries to leave out: what the runtimes this one was built against already hold.
    pub exclude: Option<std::sync::Arc<Exclusions>>,
}

/// The entries of other artifacts (the runtimes a build was built against, extracted into its
/// prefix first), to leave out of an artifact: an entry of the prefix is left out when one of
/// them holds the same path with the same kind, mode and content (or link target). Directories
/// are left out when they are theirs and nothing kept lies below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    entries: HashMap<Vec<u8>, ArtifactEntry>,
}

impl Exclusions {
    /// The entries of the artifacts at `paths`.
    pub fn from_artifacts(paths: &[PathBuf]) -> Result<Self, PackageError> {
        let mut entries = HashMap::new();
        for p in paths {
            for e in list_artifact(p)? {
                let key = e.path.as_os_str().as_bytes().to_vec();
                let key = key.strip_suffix(b"/").map(<[u8]>::to_vec).unwrap_or(key);
                entries.insert(key, e);
            }
        }
        Ok(Exclusions { entries })
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl PackageOptions {
    /// Options for `prefix`: a `.tar.gz` with [`DEFAULT_MTIME`], [`DEFAULT_LEVEL`] (and
    /// [`DEFAULT_ZSTD_LEVEL`] should the format be changed) and one compression thread per
    /// available CPU.
    pub fn new(prefix: impl Into<PathBuf>) -> Self {
        Self {
            prefix: prefix.into(),
            mtime: DEFAULT_MTIME,
            format: ArtifactFormat::TarGz,
            level: DEFAULT_LEVEL,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            exclude: None,
        }
    }
}

/// Parses the value of `SOURCE_DATE_EPOCH` (if set) into an mtime, defaulting to
/// [`DEFAULT_MTIME`].
pub fn mtime_from_source_date_epoch(value: Option<&str>) -> Result<u64, PackageError> {
    match value {
        None => Ok(DEFAULT_MTIME),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| PackageError::InvalidSourceDateEpoch {
                value: value.to_owned(),
            }),
    }
}

/// A finished artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it was written.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Number of entries in the tar (GNU long-name records not counted).
    pub entries: u64,
}

/// Why an entry of the container's tar stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path itself is unsafe (absolute, `..`, empty).
    Path(UnsafeReason),
    /// The entry is not under the prefix's directory.
    OutsidePrefix,
    /// The prefix's own entry is not a directory.
    PrefixNotDirectory,
    /// The same path appears twice.
    Duplicate,
    /// The entry lies below a symlink entry.
    BelowSymlink(String),
    /// A symlink target leaves the prefix.
    SymlinkEscapes(String),
    /// A symlink target, followed through the other symlinks of the prefix, leaves it.
    SymlinkChainEscapes {
        /// The symlink's target.
        target: Box<str>,
        /// The last symlink followed on the way out.
        through: Box<str>,
    },
    /// Following a symlink target takes more than [`MAX_LINK_FOLLOWS`] symlinks (a loop).
    SymlinkLoop(String),
    /// A hard link target is outside the prefix or not an earlier regular file.
    HardLinkTarget(String),
    /// Devices, fifos and other special entries.
    Unsupported(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(reason) => reason.fmt(f),
            Self::OutsidePrefix => f.write_str("the entry is outside the prefix"),
            Self::PrefixNotDirectory => f.write_str("the prefix is not a directory"),
            Self::Duplicate => f.write_str("the path appears more than once"),
            Self::BelowSymlink(link) => write!(f, "the path goes through the symlink `{link}`"),
            Self::SymlinkEscapes(target) => {
                write!(f, "symlink target `{target}` points outside the prefix")
            }
            Self::SymlinkChainEscapes { target, through } => write!(
                f,
                "symlink target `{target}` points outside the prefix through the symlink `{through}`"
            ),
            Self::SymlinkLoop(target) => write!(
                f,
                "symlink target `{target}` goes through more than {MAX_LINK_FOLLOWS} symlinks (a loop or a chain no system follows)"
            ),
            Self::HardLinkTarget(target) => write!(
                f,
                "hard link target `{target}` is not an earlier regular file inside the prefix"
            ),
            Self::Unsupported(kind) => write!(f, "entries of type {kind} are not allowed"),
        }
    }
}

/// Errors from building or listing an artifact.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The prefix is not absolute or has no last component.
    #[error("install prefix `{}` must be an absolute path such as /app", prefix.display())]
    InvalidPrefix {
        /// The prefix as given.
        prefix: PathBuf,
    },
    /// The compression level is out of range.
    #[error("invalid compression level {level}: expected 0 to 9")]
    InvalidLevel {
        /// The level as given.
        level: u32,
    },
    /// The zstd compression level is out of range.
    #[error("invalid zstd level {level}: expected 1 to 22")]
    InvalidZstdLevel {
        /// The level as given.
        level: u32,
    },
    /// `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error("invalid SOURCE_DATE_EPOCH `{value}`: expected a number of seconds since 1970")]
    InvalidSourceDateEpoch {
        /// The value as given.
        value: String,
    },
    /// Reading the incoming tar stream failed.
    #[error("failed to read the tar stream of {}", prefix.display())]
    ReadStream {
        /// The prefix being packaged.
        prefix: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading one entry's content from the incoming tar stream failed.
    #[error("failed to read entry `{entry}` of the tar stream of {}", prefix.display())]
    ReadEntry {
        /// The prefix being packaged.
        prefix: PathBuf,
        /// The entry's path in the stream.
        entry: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry of the incoming stream is unsafe or unsupported.
    #[error("refusing entry `{entry}` of the tar stream of {}: {reason}", prefix.display())]
    Refused {
        /// The prefix being packaged.
        prefix: PathBuf,
        /// The entry's path in the stream.
        entry: String,
        /// What makes the entry unsafe or unsupported.
        reason: Refusal,
    },
    /// The temporary spool file next to the destination could not be created or used.
    #[error("failed to spool file contents to a temporary file in {}", dir.display())]
    Spool {
        /// Directory of the spool file.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing the artifact (or renaming it into place) failed.
    #[error("failed to write artifact {}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file read as an artifact is neither gzip nor zstd compressed.
    #[error(
        "{} is not an artifact: it is neither gzip (.tar.gz) nor zstd (.tar.zst) compressed",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// Reading an artifact failed.
    #[error("failed to read artifact {}", path.display())]
    ReadArtifact {
        /// The artifact.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An indexed entry of the incoming stream.
struct Indexed {
    /// Path relative to the prefix, no trailing slash.
    path: Vec<u8>,
    /// Mode bits from the stream (normalised when written).
    mode: u32,
    kind: Kind,
}

enum Kind {
    Directory,
    File { offset: u64, size: u64 },
    Symlink { target: Vec<u8> },
    HardLink { file: usize },
}

/// Builds the artifact at `dest` from `input`, the tar stream of `options.prefix` as returned by
/// Docker's archive API. See the module documentation for what the artifact contains.
pub fn package_tar_stream<R: Read>(
    input: R,
    dest: &Path,
    options: &PackageOptions,
) -> Result<Artifact, PackageError> {
    let prefix = prefix_components(&options.prefix)?;
    match options.format {
        ArtifactFormat::TarGz if options.level > 9 => {
            return Err(PackageError::InvalidLevel {
                level: options.level,
            });
        }
        ArtifactFormat::TarZst if !ZSTD_LEVELS.contains(&options.zstd_level) => {
            return Err(PackageError::InvalidZstdLevel {
                level: options.zstd_level,
            });
        }
        _ => {}
    }
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let spool = tempfile::tempfile_in(dir).map_err(|source| PackageError::Spool {
        dir: dir.to_owned(),
        source,
    })?;
    let index = Indexer {
        options,
        prefix: &prefix,
        dir,
        entries: Vec::new(),
        by_path: HashMap::new(),
    }
    .run(input, &spool)?;

    let write_err = |source| PackageError::Write {
        path: dest.to_owned(),
        source,
    };
    let file_name = dest.file_name().unwrap_or(OsStr::new("artifact"));
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let keep = match &options.exclude {
        Some(ex) => kept(&index, &spool, ex).map_err(write_err)?,
        None => vec![true; index.len()],
    };
    let (entries, size, sha256) =
        write_artifact(temp.as_file(), index, &keep, &spool, options).map_err(write_err)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(write_err)?;
    temp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(Artifact {
        path: dest.to_owned(),
        size,
        sha256,
        entries,
    })
}

/// Writes the artifact to `out`; returns the entry count, the size and the SHA-256 (hex).
fn write_artifact(
    out: &File,
    index: Vec<Indexed>,
    keep: &[bool],
    spool: &File,
    options: &PackageOptions,
) -> io::Result<(u64, u64, String)> {
    let hashing = HashingWriter {
        inner: BufWriter::with_capacity(256 * 1024, out),
        hasher: Sha256::new(),
        written: 0,
    };
    let encoder = match options.format {
        ArtifactFormat::TarGz => Encoder::Gz(gzip::ParallelGzEncoder::new(
            hashing,
            options.level,
            options.threads,
        )?),
        ArtifactFormat::TarZst => Encoder::Zst(zst::ZstdEncoder::new(
            hashing,
            options.zstd_level,
            options.threads,
        )?),
    };
    let mut builder = tar::Builder::new(encoder);
    let entries = write_sorted(&mut builder, index, keep, spool, options.mtime)?;
    let hashing = builder.into_inner()?.finish()?;
    hashing
        .inner
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    Ok((
        entries,
        hashing.written,
        hex::encode(hashing.hasher.finalize()),
    ))
}

fn prefix_components(prefix: &Path) -> Result<Vec<Vec<u8>>, PackageError> {
    let invalid = || PackageError::InvalidPrefix {
        prefix: prefix.to_owned(),
    };
    if !prefix.is_absolute() {
        return Err(invalid());
    }
    let mut components = Vec::new();
    for component in prefix.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => components.push(name.as_bytes().to_vec()),
            Component::ParentDir | Component::Prefix(_) => return Err(invalid()),
        }
    }
    if components.is_empty() {
        return Err(invalid());
    }
    Ok(components)
}

struct Indexer<'a> {
    options: &'a PackageOptions,
    prefix: &'a [Vec<u8>],
    dir: &'a Path,
    entries: Vec<Indexed>,
    by_path: HashMap<Vec<u8>, usize>,
}

impl Indexer<'_> {
    fn run<R: Read>(mut self, input: R, spool: &File) -> Result<Vec<Indexed>, PackageError> {
        let prefix_path = &self.options.prefix;
        let read_err = |source| PackageError::ReadStream {
            prefix: prefix_path.clone(),
            source,
        };
        let spool_err = |source| PackageError::Spool {
            dir: self.dir.to_owned(),
            source,
        };
        let root = self.prefix.last().expect("prefix has a last component");
        let mut writer = BufWriter::with_capacity(256 * 1024, spool);
        let mut offset = 0u64;
        let mut buf = vec![0u8; 128 * 1024];
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            let refuse = |reason| PackageError::Refused {
                prefix: prefix_path.clone(),
                entry: name.clone(),
                reason,
            };
            let entry_type = entry.header().entry_type();
            if entry_type == EntryType::XGlobalHeader {
                continue;
            }
            let components = split_path(&raw).map_err(|r| refuse(Refusal::Path(r)))?;
            let Some((first, relative)) = components.split_first() else {
                return Err(refuse(Refusal::Path(UnsafeReason::EmptyPath)));
            };
            if first != root {
                return Err(refuse(Refusal::OutsidePrefix));
            }
            if relative.is_empty() {
                if entry_type != EntryType::Directory {
                    return Err(refuse(Refusal::PrefixNotDirectory));
                }
                continue;
            }
            self.check_ancestors(relative).map_err(&refuse)?;
            let path = relative.join(&b'/');
            if self.by_path.contains_key(&path) {
                return Err(refuse(Refusal::Duplicate));
            }
            let mode = entry.header().mode().map_err(read_err)?;
            let kind = match entry_type {
                EntryType::Directory => Kind::Directory,
                EntryType::Regular | EntryType::Continuous => {
                    let size = entry.size();
                    let mut copied = 0u64;
                    loop {
                        let n = match entry.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(source) => {
                                return Err(PackageError::ReadEntry {
                                    prefix: prefix_path.clone(),
                                    entry: name,
                                    source,
                                });
                            }
                        };
                        writer.write_all(&buf[..n]).map_err(spool_err)?;
                        copied += n as u64;
                    }
                    if copied != size {
                        return Err(PackageError::ReadEntry {
                            prefix: prefix_path.clone(),
                            entry: name,
                            source: io::ErrorKind::UnexpectedEof.into(),
                        });
                    }
                    let kind = Kind::File { offset, size };
                    offset += size;
                    kind
                }
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let link_dir = &relative[..relative.len() - 1];
                    // Followed through the other symlinks once all are known, below.
                    let target = self.symlink_target(link_dir, &target).ok_or_else(|| {
                        refuse(Refusal::SymlinkEscapes(
                            String::from_utf8_lossy(&target).into_owned(),
                        ))
                    })?;
                    Kind::Symlink { target }
                }
                EntryType::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    let file = self.hard_link_target(&target).ok_or_else(|| {
                        refuse(Refusal::HardLinkTarget(
                            String::from_utf8_lossy(&target).into_owned(),
                        ))
                    })?;
                    Kind::HardLink { file }
                }
                other => return Err(refuse(Refusal::Unsupported(type_name(other)))),
            };
            self.by_path.insert(path.clone(), self.entries.len());
            self.entries.push(Indexed { path, mode, kind });
        }
        writer.flush().map_err(spool_err)?;
        // Follow every symlink again, now that all are known: one met before a symlink it goes
        // through is refused too, whatever the order of the stream.
        for entry in &self.entries {
            if let Kind::Symlink { target } = &entry.kind {
                let components: Vec<&[u8]> = entry.path.split(|&b| b == b'/').collect();
                self.follow(&components[..components.len() - 1], target)
                    .map_err(|reason| PackageError::Refused {
                        prefix: prefix_path.clone(),
                        entry: format!(
                            "{}/{}",
                            String::from_utf8_lossy(root),
                            String::from_utf8_lossy(&entry.path)
                        ),
                        reason,
                    })?;
            }
        }
        Ok(self.entries)
    }

    /// Follows a (relative) symlink target from `link_dir` through the symlinks indexed so far.
    fn follow(&self, link_dir: &[&[u8]], target: &[u8]) -> Result<(), Refusal> {
        let target_name = || String::from_utf8_lossy(target).into_owned();
        follow_link(link_dir, target, |path| {
            let &i = self.by_path.get(path)?;
            match &self.entries[i].kind {
                Kind::Symlink { target } => Some(target.as_slice()),
                _ => None,
            }
        })
        .map(drop)
        .map_err(|e| match e {
            ChainError::Escapes { through } => Refusal::SymlinkChainEscapes {
                target: target_name().into(),
                through: String::from_utf8_lossy(&through).into(),
            },
            ChainError::TooDeep => Refusal::SymlinkLoop(target_name()),
        })
    }

    fn check_ancestors(&self, relative: &[&[u8]]) -> Result<(), Refusal> {
        for depth in 1..relative.len() {
            let ancestor = relative[..depth].join(&b'/');
            if let Some(&i) = self.by_path.get(&ancestor)
                && matches!(self.entries[i].kind, Kind::Symlink { .. })
            {
                return Err(Refusal::BelowSymlink(
                    String::from_utf8_lossy(&ancestor).into_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The target to store for a symlink in `link_dir`, or `None` when it escapes the prefix.
    fn symlink_target(&self, link_dir: &[&[u8]], target: &[u8]) -> Option<Vec<u8>> {
        if target.is_empty() {
            return None;
        }
        if target.first() != Some(&b'/') {
            resolve_link(link_dir, target)?;
            return Some(target.to_vec());
        }
        // Absolute: lexically normalise (`..` at `/` stays at `/`), then make it relative.
        let mut absolute: Vec<Vec<u8>> = Vec::new();
        for component in target.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => {
                    absolute.pop();
                }
                normal => absolute.push(normal.to_vec()),
            }
        }
        let inside = absolute.strip_prefix(self.prefix)?;
        let common = link_dir
            .iter()
            .zip(inside)
            .take_while(|(a, b)| **a == b.as_slice())
            .count();
        let mut parts: Vec<&[u8]> = vec![b".."; link_dir.len() - common];
        parts.extend(inside[common..].iter().map(Vec::as_slice));
        if parts.is_empty() {
            return Some(b".".to_vec());
        }
        Some(parts.join(&b'/'))
    }

    /// The index of the regular file a hard link's target names, if it is one inside the prefix.
    fn hard_link_target(&self, target: &[u8]) -> Option<usize> {
        let root = self.prefix.last()?;
        let components = split_path(target).ok()?;
        let (first, relative) = components.split_first()?;
        if first != root || relative.is_empty() {
            return None;
        }
        let &i = self.by_path.get(&relative.join(&b'/'))?;
        match self.entries[i].kind {
            Kind::File { .. } => Some(i),
            Kind::HardLink { file } => Some(file),
            Kind::Directory | Kind::Symlink { .. } => None,
        }
    }
}

fn normalised_mode(mode: u32, kind: EntryType) -> u32 {
    match kind {
        EntryType::Directory => 0o755,
        EntryType::Symlink => 0o777,
        _ if mode & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Writes the indexed entries sorted by path; returns the number of entries written.
/// Which entries to keep, given what other artifacts already hold.
fn kept(entries: &[Indexed], spool: &File, ex: &Exclusions) -> io::Result<Vec<bool>> {
    let mut keep = vec![true; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        let Some(theirs) = ex.entries.get(&e.path) else {
            continue;
        };
        let same = match &e.kind {
            Kind::Directory => theirs.kind == EntryKind::Directory,
            Kind::Symlink { target } => {
                theirs.kind == EntryKind::Symlink
                    && theirs.link_target.as_deref() == Some(path_of(target))
            }
            Kind::File { offset, size } => {
                theirs.kind == EntryKind::File
                    && theirs.size == *size
                    && theirs.mode == normalised_mode(e.mode, EntryType::Regular)
                    && theirs.sha256.as_deref() == Some(hash_spool(spool, *offset, *size)?.as_str())
            }
            Kind::HardLink { file } => match entries[*file].kind {
                Kind::File { offset, size } => {
                    matches!(theirs.kind, EntryKind::File | EntryKind::HardLink)
                        && (theirs.kind == EntryKind::HardLink
                            || theirs.sha256.as_deref()
                                == Some(hash_spool(spool, offset, size)?.as_str()))
                }
                _ => false,
            },
        };
        keep[i] = !same;
    }
    // Keep the directories that lead to kept entries.
    let kept_paths: Vec<&[u8]> = entries
        .iter()
        .zip(&keep)
        .filter(|(e, k)| **k && !matches!(e.kind, Kind::Directory))
        .map(|(e, _)| e.path.as_slice())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if keep[i] || !matches!(e.kind, Kind::Directory) {
            continue;
        }
        let mut prefix = e.path.clone();
        prefix.push(b'/');
        if kept_paths.iter().any(|p| p.starts_with(&prefix)) {
            keep[i] = true;
        }
    }
    Ok(keep)
}

fn hash_spool(spool: &File, offset: u64, size: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut reader = SpoolReader {
        file: spool,
        offset,
        remaining: size,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn write_sorted<W: Write>(
    builder: &mut tar::Builder<W>,
    entries: Vec<Indexed>,
    keep: &[bool],
    spool: &File,
    mtime: u64,
) -> io::Result<u64> {
    let mut order: Vec<usize> = (0..entries.len()).filter(|&i| keep[i]).collect();
    order.sort_unstable_by(|&a, &b| entries[a].path.cmp(&entries[b].path));
    // For each file with hard links: the sorted position of the entry that carries its data.
    let mut linked = vec![false; entries.len()];
    for entry in &entries {
        if let Kind::HardLink { file } = entry.kind {
            linked[file] = true;
        }
    }
    let mut carrier: HashMap<usize, usize> = HashMap::new();
    let mut count = 0u64;
    for (position, &i) in order.iter().enumerate() {
        let entry = &entries[i];
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        let path = path_of(&entry.path);
        let data_of = match entry.kind {
            Kind::Directory => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(normalised_mode(entry.mode, EntryType::Directory));
                header.set_size(0);
                builder.append_data(&mut header, path, io::empty())?;
                None
            }
            Kind::Symlink { ref target } => {
                header.set_entry_type(EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, path_of(target))?;
                None
            }
            Kind::File { .. } if !linked[i] => Some(i),
            Kind::File { .. } | Kind::HardLink { .. } => {
                let file = match entry.kind {
                    Kind::HardLink { file } => file,
                    _ => i,
                };
                match carrier.get(&file) {
                    Some(&first) => {
                        header.set_entry_type(EntryType::Link);
                        header.set_mode(normalised_mode(entries[file].mode, EntryType::Regular));
                        header.set_size(0);
                        let target = path_of(&entries[order[first]].path);
                        builder.append_link(&mut header, path, target)?;
                        None
                    }
                    None => {
                        carrier.insert(file, position);
                        Some(file)
                    }
                }
            }
        };
        if let Some(file) = data_of
            && let Kind::File { offset, size } = entries[file].kind
        {
            header.set_entry_type(EntryType::Regular);
            header.set_mode(normalised_mode(entries[file].mode, EntryType::Regular));
            header.set_size(size);
            let capacity = usize::try_from(size.clamp(1, 1024 * 1024)).unwrap_or(1024 * 1024);
            let data = BufReader::with_capacity(
                capacity,
                SpoolReader {
                    file: spool,
                    offset,
                    remaining: size,
                },
            );
            builder.append_data(&mut header, path, data)?;
        }
        count += 1;
    }
    Ok(count)
}

/// Reads `remaining` bytes of the spool from `offset`, without moving any file cursor.
struct SpoolReader<'a> {
    file: &'a File,
    offset: u64,
    remaining: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The compressor of [`PackageOptions::format`].
enum Encoder<W: Write> {
    Gz(gzip::ParallelGzEncoder<W>),
    Zst(zst::ZstdEncoder<W>),
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gz(e) => e.finish(),
            Encoder::Zst(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gz(e) => e.write(data),
            Encoder::Zst(e) => e.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gz(e) => e.flush(),
            Encoder::Zst(e) => e.flush(),
        }
    }
}

/// Counts and hashes the bytes on their way to `inner`.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compressible text with some pseudo-random bytes mixed in, for the compressors' tests.
#[cfg(test)]
pub(crate) fn test_sample(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if i % 7 == 0 {
                state as u8
            } else {
                b"the quick brown fox "[i % 20]
            }
        })
        .collect()
}
