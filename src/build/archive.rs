//! Safe re-packing of untrusted source archives into a tar stream for the build container.
//!
//! Sources are verified by checksum, but their content is still untrusted: a tarball can contain
//! `../` paths, absolute paths, symlinks or hard links pointing outside the tree, or device nodes.
//! This module reads a source archive (plain tar, gzip, bzip2, xz or zstd, detected by magic bytes) and
//! writes a sanitised tar stream — the body of a Docker archive upload — to any [`Write`]:
//!
//! * `strip_components` leading path components are removed, as GNU tar does: entries with fewer
//!   components (such as the top-level `pkg-1.0/` directory itself) are dropped; a leading `./`
//!   and empty components are ignored before counting;
//! * the destination directory (relative to the work tree) is prepended, and its directories are
//!   emitted first (mode 0755);
//! * ownership is normalised to uid/gid 0 without user or group names; permission bits
//!   (`0o777`) and modification times are kept, setuid/setgid/sticky bits are dropped;
//! * every entry that is not a plain directory, regular file, symlink or hard link is refused, as
//!   are `..` components, absolute paths, symlinks whose target leaves the archive's root
//!   (resolved lexically from the link's directory), hard links to anything but an earlier
//!   regular file of the archive, entries placed below an earlier symlink, and entries replacing
//!   an earlier symlink. Bad entries are never skipped: the whole operation fails, naming the
//!   archive and the entry. The only header consumed without producing an entry is a pax global
//!   header (`git archive` writes one holding the commit id), which carries no file;
//! * symlinks are also followed the way the kernel would, through every symlink of the work tree
//!   (this archive's and those of the build's earlier archives): `a/b -> ..` then
//!   `c -> a/b/../..` is refused although each is harmless alone, and so is a chain of more than
//!   [`MAX_LINK_FOLLOWS`] links (a loop). The check runs when a link is met and again once the
//!   archive is complete, so the order of the entries does not matter.
//!
//! Data is streamed entry by entry: memory stays bounded whatever the archive's size. The only
//! records read whole are GNU long names and long link targets (at most [`MAX_PATH_LEN`] bytes)
//! and pax headers (at most [`MAX_PAX_HEADER`] bytes); a larger one is refused from its header's
//! size field, before its body is read. The bookkeeping for links grows with the number of
//! entries, which a [`WorkTree`] bounds, never with their bytes.
//!
//! The archives of one build share a [`WorkTree`]: their unpacked bytes and their entries are
//! counted together against its [`UnpackLimits`], so ten archives cannot each use the limit.
//!
//! When an error occurs, the output is left without the tar end-of-archive marker, so a receiver
//! cannot mistake the truncated stream for a complete archive.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::{EntryType, Header};

/// What was written to the output stream by [`repack_archive`] or [`repack_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepackSummary {
    /// Number of entries written, including the directories created for the destination.
    pub entries: u64,
    /// Number of file content bytes written (headers and padding excluded).
    pub bytes: u64,
}

/// Container format of a source archive, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An uncompressed tar archive (`ustar` magic at offset 257).
    Tar,
    /// A gzip-compressed tar archive.
    Gzip,
    /// A bzip2-compressed tar archive.
    Bzip2,
    /// An xz-compressed tar archive.
    Xz,
    /// A zstd-compressed tar archive (`.tar.zst`, one frame or several).
    Zstd,
}

/// Why an entry (or a destination) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeReason {
    /// The path is empty.
    EmptyPath,
    /// The path is absolute.
    AbsolutePath,
    /// The path contains a `..` component.
    ParentComponent,
    /// A symlink's target is absolute.
    AbsoluteLinkTarget(String),
    /// A symlink's target, resolved from the link's directory, leaves the archive's root.
    LinkEscapesRoot(String),
    /// A hard link's target is not an earlier regular file of the archive (after stripping).
    UnknownHardLinkTarget(String),
    /// The entry lies below an earlier symlink entry, so extracting it would follow the link.
    BelowSymlink(String),
    /// The entry would replace an earlier symlink entry.
    ReplacesSymlink,
    /// The entry type is not a directory, regular file, symlink or hard link.
    UnsupportedType(String),
    /// A pax `size` record disagrees with the entry's header: readers that believe one or the
    /// other see different files (size smuggling, CVE-2026-33055).
    PaxSizeMismatch {
        /// The pax record's value.
        pax: String,
        /// The header's size.
        header: u64,
    },
    /// A GNU long-name or long-link record or a pax header is bigger than the tar formats need:
    /// refused from its header's size field, before its body is read.
    RecordTooLarge {
        /// What the record is (`GNU long name record`, `pax header`, …).
        record: &'static str,
        /// The size its header declares.
        size: u64,
        /// The most allowed for such a record.
        limit: u64,
    },
    /// The path or link target (from a pax record) is longer than [`MAX_PATH_LEN`].
    PathTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A symlink's target, followed through the symlinks of the work tree, leaves its root.
    LinkChainEscapes {
        /// The symlink's target.
        target: Box<str>,
        /// The last symlink followed on the way out.
        through: Box<str>,
    },
    /// Following a symlink's target takes more than [`MAX_LINK_FOLLOWS`] symlinks (a loop).
    LinkLoop(String),
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyPath => f.write_str("the path is empty"),
            Self::AbsolutePath => f.write_str("the path is absolute"),
            Self::ParentComponent => f.write_str("the path contains a `..` component"),
            Self::AbsoluteLinkTarget(t) => write!(f, "symlink target `{t}` is absolute"),
            Self::LinkEscapesRoot(t) => {
                write!(
                    f,
                    "symlink target `{t}` resolves outside the archive's root"
                )
            }
            Self::UnknownHardLinkTarget(t) => write!(
                f,
                "hard link target `{t}` is not an earlier regular file of the archive"
            ),
            Self::BelowSymlink(l) => write!(f, "the path goes through the symlink `{l}`"),
            Self::ReplacesSymlink => f.write_str("the entry replaces an earlier symlink"),
            Self::UnsupportedType(t) => write!(f, "entries of type {t} are not allowed"),
            Self::PaxSizeMismatch { pax, header } => write!(
                f,
                "its pax size record ({pax}) disagrees with its header's size ({header})"
            ),
            Self::RecordTooLarge {
                record,
                size,
                limit,
            } => write!(
                f,
                "it is a {record} of {size} bytes, more than the {limit} allowed (a memory bomb)"
            ),
            Self::PathTooLong { len } => write!(
                f,
                "its path or link target is {len} bytes long, more than the {MAX_PATH_LEN} allowed"
            ),
            Self::LinkChainEscapes { target, through } => write!(
                f,
                "symlink target `{target}` resolves outside the source tree through the symlink `{through}`"
            ),
            Self::LinkLoop(t) => write!(
                f,
                "symlink target `{t}` goes through more than {MAX_LINK_FOLLOWS} symlinks (a loop or a chain no system follows)"
            ),
        }
    }
}

/// Errors from re-packing a source archive or file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The source archive or file could not be opened or inspected.
    #[error("failed to open {}", path.display())]
    Open {
        /// The archive or file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is neither a tar archive nor a gzip, bzip2, xz or zstd compressed one.
    #[error("{} is not a tar archive (plain, gzip, bzip2, xz or zstd)", path.display())]
    UnknownFormat {
        /// The archive.
        path: PathBuf,
    },
    /// Reading (decompressing or parsing) the archive failed.
    #[error("failed to read archive {}", path.display())]
    Read {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the content of one entry failed.
    #[error("failed to read entry `{entry}` of archive {}", path.display())]
    ReadEntry {
        /// The archive.
        path: PathBuf,
        /// The entry's path as stored in the archive.
        entry: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry is unsafe or unsupported; nothing was skipped, the stream is incomplete.
    #[error("refusing entry `{entry}` of archive {}: {reason}", path.display())]
    UnsafeEntry {
        /// The archive.
        path: PathBuf,
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it was refused.
        reason: UnsafeReason,
    },
    /// The destination path inside the work tree is not a clean relative path.
    #[error("invalid destination `{}`: {reason}", dest.display())]
    InvalidDestination {
        /// The destination as given.
        dest: PathBuf,
        /// Why it was refused.
        reason: UnsafeReason,
    },
    /// The archives of the build unpack to more than their limit together: a decompression
    /// bomb, or sources bigger than the recipe allows.
    #[error(
        "the sources of this build unpack to more than {limit} bytes together (at archive {}); the limit is {origin}",
        path.display()
    )]
    TooLarge {
        /// The archive being unpacked when the limit was passed.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
        /// Where the limit comes from.
        origin: SizeOrigin,
    },
    /// The archives of the build hold more entries than their limit together.
    #[error(
        "the sources of this build hold more than {limit} entries together (at archive {}); the limit is {origin}",
        path.display()
    )]
    TooManyEntries {
        /// The archive being unpacked when the limit was passed.
        path: PathBuf,
        /// The limit.
        limit: u64,
        /// Where the limit comes from.
        origin: EntriesOrigin,
    },
    /// The paths and link targets of the build's archives are too long together to be checked
    /// in bounded memory.
    #[error(
        "the paths and link targets of this build's sources take more than {limit} bytes together (at archive {}), more than the host keeps to check them",
        path.display()
    )]
    TooManyNames {
        /// The archive being unpacked when the limit was passed.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// Writing the output tar stream failed.
    #[error("failed to write the tar stream for {}", path.display())]
    Write {
        /// The archive or file being re-packed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Detects the format of the archive at `path` from its magic bytes.
pub fn detect_format(path: &Path) -> Result<ArchiveFormat, ArchiveError> {
    let mut file = File::open(path).map_err(|source| ArchiveError::Open {
        path: path.to_owned(),
        source,
    })?;
    let head = read_head(&mut file).map_err(|source| ArchiveError::Read {
        path: path.to_owned(),
        source,
    })?;
    format_from_magic(&head).ok_or_else(|| ArchiveError::UnknownFormat {
        path: path.to_owned(),
    })
}

fn read_head(file: &mut File) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    Read::by_ref(file).take(512).read_to_end(&mut head)?;
    Ok(head)
}

fn format_from_magic(head: &[u8]) -> Option<ArchiveFormat> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveFormat::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(ArchiveFormat::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(ArchiveFormat::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(ArchiveFormat::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(ArchiveFormat::Tar)
    } else {
        None
    }
}

/// The numeric owner written into every entry of a re-packed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
}

impl Owner {
    /// `0:0`.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// The most bytes a GNU long-name or long-link record may hold: `PATH_MAX`, 4096.
pub const MAX_PATH_LEN: u64 = 4096;

/// The most bytes a pax header (extended or global) may hold: 1 MiB.
pub const MAX_PAX_HEADER: u64 = 1 << 20;

/// The most symlinks followed while resolving one symlink's target, as Linux (`MAXSYMLINKS`).
pub const MAX_LINK_FOLLOWS: usize = 40;

/// The default number of entries the archives of one build may hold together.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// The default number of bytes of paths and link targets the checks of one build's archives
/// keep in memory (for hard links, duplicates and symlinks): 256 MiB. Real sources use a few
/// MiB; without a bound, a small archive of long names would make the host keep gigabytes.
pub const DEFAULT_MAX_NAME_BYTES: u64 = 256 << 20;

/// The default limit of what archives of `compressed` bytes (together) may unpack to: 2 GiB,
/// or 50 times their size when that is more. Small sources that inflate past it are a
/// decompression bomb, not a runtime.
pub fn default_max_unpacked(compressed: u64) -> u64 {
    (2u64 << 30).max(compressed.saturating_mul(50))
}

/// Where [`UnpackLimits::max_bytes`] comes from, for the error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeOrigin {
    /// [`default_max_unpacked`] of the archives' sizes.
    Default,
    /// The recipe's `[build] max_unpacked_size`.
    Recipe,
}

impl fmt::Display for SizeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => {
                "2 GiB or 50 times the archives' size (`[build] max_unpacked_size` raises it)"
            }
            Self::Recipe => "the recipe's `[build] max_unpacked_size`",
        })
    }
}

/// Where [`UnpackLimits::max_entries`] comes from, for the error that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntriesOrigin {
    /// [`DEFAULT_MAX_ENTRIES`].
    Default,
    /// The recipe's `[build] max_unpacked_entries`.
    Recipe,
}

impl fmt::Display for EntriesOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => write!(
                f,
                "{DEFAULT_MAX_ENTRIES} per build (`[build] max_unpacked_entries` raises it)"
            ),
            Self::Recipe => f.write_str("the recipe's `[build] max_unpacked_entries`"),
        }
    }
}

/// What the archives of one build may unpack to, together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The most bytes of tar stream (decompressed, headers included) they may unpack to.
    pub max_bytes: u64,
    /// Where `max_bytes` comes from.
    pub bytes_origin: SizeOrigin,
    /// The most entries they may hold (every member of every archive, stripped ones included,
    /// and one per plain file).
    pub max_entries: u64,
    /// Where `max_entries` comes from.
    pub entries_origin: EntriesOrigin,
    /// The most bytes of paths and link targets kept in memory for the checks.
    pub max_name_bytes: u64,
}

impl UnpackLimits {
    /// The limits for archives of `compressed` bytes together: the recipe's
    /// `max_unpacked_size` and `max_unpacked_entries` when set, else [`default_max_unpacked`]
    /// and [`DEFAULT_MAX_ENTRIES`].
    pub fn for_sources(compressed: u64, max_bytes: Option<u64>, max_entries: Option<u64>) -> Self {
        Self {
            max_bytes: max_bytes.unwrap_or_else(|| default_max_unpacked(compressed)),
            bytes_origin: max_bytes.map_or(SizeOrigin::Default, |_| SizeOrigin::Recipe),
            max_entries: max_entries.unwrap_or(DEFAULT_MAX_ENTRIES),
            entries_origin: max_entries.map_or(EntriesOrigin::Default, |_| EntriesOrigin::Recipe),
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
        }
    }
}

/// The work tree the archives and files of one build are re-packed into, one after the other:
/// what they may use together ([`UnpackLimits`]), what they have used, and the symlinks they put
/// there, so that a later archive's links are followed through an earlier one's.
#[derive(Debug)]
pub struct WorkTree {
    owner: Owner,
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
    /// Bytes of paths and link targets kept in `links` and the archives' own maps.
    name_bytes: u64,
    /// Every symlink written so far, by its path in the work tree.
    links: HashMap<Vec<u8>, TreeLink>,
    /// The archives the links came from.
    archives: Vec<PathBuf>,
}

#[derive(Debug)]
struct TreeLink {
    target: Vec<u8>,
    archive: usize,
    entry: String,
}

impl WorkTree {
    /// An empty work tree whose entries are owned by `owner`.
    pub fn new(owner: Owner, limits: UnpackLimits) -> Self {
        Self {
            owner,
            limits,
            bytes: 0,
            entries: 0,
            name_bytes: 0,
            links: HashMap::new(),
            archives: Vec::new(),
        }
    }

    /// Bytes of tar stream unpacked so far, over every archive (and plain file).
    pub fn unpacked_bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries read so far, over every archive (and plain file).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Re-packs the source archive at `archive` into a sanitised tar stream written to `out`.
    ///
    /// `strip_components` leading components are removed from every entry path, then `dest` (a
    /// relative directory inside the work tree, `""` for its root) is prepended. See the module
    /// documentation for what is refused.
    pub fn repack_archive<W: Write>(
        &mut self,
        archive: &Path,
        strip_components: u32,
        dest: &Path,
        out: W,
    ) -> Result<RepackSummary, ArchiveError> {
        let dest_components = destination_components(dest, true)?;
        let mut file = File::open(archive).map_err(|source| ArchiveError::Open {
            path: archive.to_owned(),
            source,
        })?;
        let read_err = |source| ArchiveError::Read {
            path: archive.to_owned(),
            source,
        };
        let head = read_head(&mut file).map_err(read_err)?;
        let format = format_from_magic(&head).ok_or_else(|| ArchiveError::UnknownFormat {
            path: archive.to_owned(),
        })?;
        file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let file = BufReader::with_capacity(128 * 1024, file);
        let reader: Box<dyn Read> = match format {
            ArchiveFormat::Tar => Box::new(file),
            ArchiveFormat::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
            ArchiveFormat::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
            ArchiveFormat::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(file)),
            ArchiveFormat::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(file).map_err(read_err)?)
            }
        };
        self.repack_stream(archive, reader, strip_components, &dest_components, out)
    }

    /// [`WorkTree::repack_archive`] from the decompressed tar stream `reader` of `archive`.
    fn repack_stream<W: Write>(
        &mut self,
        archive: &Path,
        reader: Box<dyn Read + '_>,
        strip_components: u32,
        dest: &[Vec<u8>],
        out: W,
    ) -> Result<RepackSummary, ArchiveError> {
        let consumed = Rc::new(Cell::new(0u64));
        let allowed = self.limits.max_bytes.saturating_sub(self.bytes);
        let reader = Limited {
            inner: reader,
            allowed,
            consumed: consumed.clone(),
        };
        self.archives.push(archive.to_owned());
        let mut repacker = Repacker::new(archive, out, self.owner);
        let result = self
            .check_destination(archive, dest)
            .and_then(|()| repacker.write_destination_dirs(dest))
            .and_then(|()| repacker.copy_entries(self, Box::new(reader), strip_components, dest))
            .and_then(|()| self.check_links());
        self.bytes = self.bytes.saturating_add(consumed.get().min(allowed));
        // Whatever error the limit caused on its way up, the limit is what to report.
        let result = match result {
            Err(_) if consumed.get() > allowed => Err(ArchiveError::TooLarge {
                path: archive.to_owned(),
                limit: self.limits.max_bytes,
                origin: self.limits.bytes_origin,
            }),
            other => other,
        };
        repacker.finish(result)
    }

    /// Packs a single plain file (such as a patch) into a one-entry tar stream written to
    /// `out`, placed at `dest`, a relative file path inside the work tree. Directories leading
    /// to `dest` are emitted first (mode 0755). The file's permission bits and modification
    /// time are kept. It counts as one entry of its size.
    pub fn repack_file<W: Write>(
        &mut self,
        file: &Path,
        dest: &Path,
        out: W,
    ) -> Result<RepackSummary, ArchiveError> {
        let dest_components = destination_components(dest, false)?;
        let open_err = |source| ArchiveError::Open {
            path: file.to_owned(),
            source,
        };
        let input = File::open(file).map_err(open_err)?;
        let metadata = input.metadata().map_err(open_err)?;
        if !metadata.is_file() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let (dirs, _) = dest_components.split_at(dest_components.len() - 1);
        let owner = self.owner;
        let mut repacker = Repacker::new(file, out, owner);
        let result = self
            .check_destination(file, &dest_components)
            .and_then(|()| repacker.write_destination_dirs(dirs))
            .and_then(|()| self.count_entry(file))
            .and_then(|()| {
                let allowed = self.limits.max_bytes.saturating_sub(self.bytes);
                if metadata.len() > allowed {
                    return Err(ArchiveError::TooLarge {
                        path: file.to_owned(),
                        limit: self.limits.max_bytes,
                        origin: self.limits.bytes_origin,
                    });
                }
                self.bytes += metadata.len();
                let mut header = Header::new_gnu();
                header.set_entry_type(EntryType::Regular);
                header.set_mode(metadata.permissions().mode() & 0o777);
                header.set_uid(owner.uid);
                header.set_gid(owner.gid);
                header.set_mtime(mtime_of(&metadata));
                header.set_size(metadata.len());
                let path = join(&dest_components);
                let mut limited = BufReader::new(input).take(metadata.len());
                repacker.append_data(&mut header, &path, &mut limited, "")?;
                repacker.summary.bytes += metadata.len();
                Ok(())
            });
        repacker.finish(result)
    }

    /// Counts one entry of `archive`, failing past the limit.
    fn count_entry(&mut self, archive: &Path) -> Step {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                path: archive.to_owned(),
                limit: self.limits.max_entries,
                origin: self.limits.entries_origin,
            });
        }
        Ok(())
    }

    /// Accounts for `bytes` more of paths kept in memory, failing past the limit.
    fn keep_names(&mut self, archive: &Path, bytes: usize) -> Step {
        self.name_bytes += bytes as u64;
        if self.name_bytes > self.limits.max_name_bytes {
            return Err(ArchiveError::TooManyNames {
                path: archive.to_owned(),
                limit: self.limits.max_name_bytes,
            });
        }
        Ok(())
    }

    /// Refuses a destination that is, or goes through, a symlink of an earlier archive.
    fn check_destination(&self, archive: &Path, dest: &[Vec<u8>]) -> Step {
        let refuse = |reason| ArchiveError::UnsafeEntry {
            path: archive.to_owned(),
            entry: join(dest).to_string_lossy().into_owned(),
            reason,
        };
        let components: Vec<&[u8]> = dest.iter().map(Vec::as_slice).collect();
        self.check_ancestors(&components).map_err(refuse)?;
        if !components.is_empty()
            && self
                .links
                .contains_key(join(&components).as_os_str().as_bytes())
        {
            return Err(refuse(UnsafeReason::ReplacesSymlink));
        }
        Ok(())
    }

    /// Refuses a path (in the work tree) below a symlink.
    fn check_ancestors(&self, path: &[&[u8]]) -> Result<(), UnsafeReason> {
        for depth in 1..path.len() {
            let ancestor = join(&path[..depth]).into_os_string().into_vec();
            if self.links.contains_key(&ancestor) {
                return Err(UnsafeReason::BelowSymlink(
                    String::from_utf8_lossy(&ancestor).into_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Follows `target`, a symlink's target in `link_dir` (in the work tree), through the
    /// symlinks written so far.
    fn follow(&self, link_dir: &[&[u8]], target: &[u8]) -> Result<(), UnsafeReason> {
        let target_name = || String::from_utf8_lossy(target).into_owned();
        follow_link(link_dir, target, |path| {
            self.links.get(path).map(|l| l.target.as_slice())
        })
        .map(drop)
        .map_err(|e| match e {
            ChainError::Escapes { through } => UnsafeReason::LinkChainEscapes {
                target: target_name().into(),
                through: String::from_utf8_lossy(&through).into(),
            },
            ChainError::TooDeep => UnsafeReason::LinkLoop(target_name()),
        })
    }

    /// Follows every symlink of the work tree again, now that more are known: a link met
    /// before one it goes through is refused too.
    fn check_links(&self) -> Step {
        let mut paths: Vec<&Vec<u8>> = self.links.keys().collect();
        paths.sort();
        for path in paths {
            let link = &self.links[path];
            let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let link_dir = &components[..components.len() - 1];
            self.follow(link_dir, &link.target)
                .map_err(|reason| ArchiveError::UnsafeEntry {
                    path: self.archives[link.archive].clone(),
                    entry: link.entry.clone(),
                    reason,
                })?;
        }
        Ok(())
    }
}

/// Re-packs the source archive at `archive` into a sanitised tar stream written to `out`, as
/// the only archive of a [`WorkTree`] owned by root with the default limits for its size.
pub fn repack_archive<W: Write>(
    archive: &Path,
    strip_components: u32,
    dest: &Path,
    out: W,
) -> Result<RepackSummary, ArchiveError> {
    let size = std::fs::metadata(archive)
        .map_err(|source| ArchiveError::Open {
            path: archive.to_owned(),
            source,
        })?
        .len();
    WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(size, None, None)).repack_archive(
        archive,
        strip_components,
        dest,
        out,
    )
}

/// Packs a single plain file into a one-entry tar stream written to `out` (see
/// [`WorkTree::repack_file`]), owned by root.
pub fn repack_file<W: Write>(
    file: &Path,
    dest: &Path,
    out: W,
) -> Result<RepackSummary, ArchiveError> {
    WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, None))
        .repack_file(file, dest, out)
}

fn mtime_of(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Splits a raw tar path into its normal components, ignoring empty and `.` components.
pub(crate) fn split_path(raw: &[u8]) -> Result<Vec<&[u8]>, UnsafeReason> {
    if raw.first() == Some(&b'/') {
        return Err(UnsafeReason::AbsolutePath);
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(UnsafeReason::ParentComponent),
            normal => components.push(normal),
        }
    }
    Ok(components)
}

/// Resolves a relative symlink target lexically from the link's directory; `Some` with the
/// resolved components when it stays inside the root.
pub(crate) fn resolve_link(link_dir: &[&[u8]], target: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut stack: Vec<Vec<u8>> = link_dir.iter().map(|c| c.to_vec()).collect();
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                stack.pop()?;
            }
            normal => stack.push(normal.to_vec()),
        }
    }
    Some(stack)
}

/// Why [`follow_link`] refused a symlink's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// It leaves the root; `through` is the last symlink followed (its path from the root).
    Escapes {
        /// The symlink whose target took the walk out, or the path so far when none did.
        through: Vec<u8>,
    },
    /// It goes through more than [`MAX_LINK_FOLLOWS`] symlinks.
    TooDeep,
}

/// Follows a symlink's relative `target`, read from its directory `link_dir`, the way the
/// kernel would: every component naming a symlink (`links` gives the target of the symlink at a
/// path, `/`-joined from the root) is replaced by that symlink's target, read from the
/// symlink's own directory. `Ok` with the resolved components when the walk never leaves the
/// root; an absolute target met on the way counts as leaving it.
pub(crate) fn follow_link<'l>(
    link_dir: &[&[u8]],
    target: &[u8],
    links: impl Fn(&[u8]) -> Option<&'l [u8]>,
) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut resolved: Vec<Vec<u8>> = link_dir.iter().map(|c| c.to_vec()).collect();
    // Components still to walk, the next one last.
    let mut pending: Vec<Vec<u8>> = target
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut followed = 0;
    let mut through: Option<Vec<u8>> = None;
    let escapes = |through: &Option<Vec<u8>>, resolved: &[Vec<u8>]| ChainError::Escapes {
        through: through.clone().unwrap_or_else(|| resolved.join(&b'/')),
    };
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"" | b"." => {}
            b".." => {
                if resolved.pop().is_none() {
                    return Err(escapes(&through, &resolved));
                }
            }
            _ => {
                resolved.push(component);
                let path = resolved.join(&b'/');
                if let Some(next) = links(&path) {
                    followed += 1;
                    if followed > MAX_LINK_FOLLOWS {
                        return Err(ChainError::TooDeep);
                    }
                    resolved.pop();
                    if next.first() == Some(&b'/') {
                        return Err(ChainError::Escapes { through: path });
                    }
                    pending.extend(next.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                    through = Some(path);
                }
            }
        }
    }
    Ok(resolved)
}

/// One member of a tar stream read without the `tar` crate's own handling of GNU long-name and
/// pax records (which reads their bodies whole, whatever their size): the entry, with the path
/// and link target those records give it.
pub(crate) struct Member<'a, R: Read> {
    /// The entry (its header is the member's own, its data the member's data).
    pub(crate) entry: tar::Entry<'a, R>,
    /// The path: a GNU long name, else a pax `path` record, else the header's.
    pub(crate) path: Vec<u8>,
    /// The link target: a GNU long link, else a pax `linkpath` record, else the header's.
    pub(crate) link: Option<Vec<u8>>,
    /// The body of the pax header describing the member, if any.
    pub(crate) pax: Option<Vec<u8>>,
}

/// Why [`next_member`] failed.
pub(crate) enum MemberError {
    /// Reading or parsing the stream failed.
    Read(io::Error),
    /// A record is refused (`entry` is its header's name).
    Refused {
        /// The record's name in its header.
        entry: String,
        /// Why.
        reason: UnsafeReason,
    },
}

/// The next member of `entries` (a **raw** iterator, see [`tar::Entries::raw`]): GNU long-name
/// and long-link records and pax headers are read here, each refused from its header's size
/// before its body is read when it is bigger than [`MAX_PATH_LEN`] or [`MAX_PAX_HEADER`]. Pax
/// global headers are skipped (the `tar` crate skips their data without keeping it).
pub(crate) fn next_member<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
) -> Result<Option<Member<'a, R>>, MemberError> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    loop {
        let Some(entry) = entries.next() else {
            if long_name.is_some() || long_link.is_some() || pax.is_some() {
                return Err(MemberError::Read(io::Error::other(
                    "a long-name or pax record describes a member, but no member follows",
                )));
            }
            return Ok(None);
        };
        let mut entry = entry.map_err(MemberError::Read)?;
        let kind = entry.header().entry_type();
        let (record, limit) = match kind {
            EntryType::GNULongName => ("GNU long name record", MAX_PATH_LEN),
            EntryType::GNULongLink => ("GNU long link record", MAX_PATH_LEN),
            EntryType::XHeader => ("pax header", MAX_PAX_HEADER),
            EntryType::XGlobalHeader => ("pax global header", MAX_PAX_HEADER),
            _ => {
                let pax_value = |key: &[u8]| {
                    pax.as_deref().and_then(|records| {
                        tar::PaxExtensions::new(records)
                            .filter_map(Result::ok)
                            .find(|r| r.key_bytes() == key)
                            .map(|r| r.value_bytes().to_vec())
                    })
                };
                let path = match long_name {
                    Some(name) => without_nul(name),
                    None => pax_value(b"path")
                        .unwrap_or_else(|| entry.header().path_bytes().into_owned()),
                };
                let link = match long_link {
                    Some(name) => Some(without_nul(name)),
                    None => pax_value(b"linkpath")
                        .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned())),
                };
                return Ok(Some(Member {
                    entry,
                    path,
                    link,
                    pax,
                }));
            }
        };
        let size = entry.header().entry_size().map_err(MemberError::Read)?;
        if size > limit {
            return Err(MemberError::Refused {
                entry: String::from_utf8_lossy(&entry.header().path_bytes()).into_owned(),
                reason: UnsafeReason::RecordTooLarge {
                    record,
                    size,
                    limit,
                },
            });
        }
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut body).map_err(MemberError::Read)?;
        if body.len() as u64 != size {
            return Err(MemberError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        let slot = match kind {
            EntryType::GNULongName => &mut long_name,
            EntryType::GNULongLink => &mut long_link,
            _ => &mut pax,
        };
        if slot.is_some() {
            return Err(MemberError::Read(io::Error::other(format!(
                "two {record}s describe the same member"
            ))));
        }
        *slot = Some(body);
    }
}

/// A GNU long name without its terminating NUL.
fn without_nul(mut name: Vec<u8>) -> Vec<u8> {
    if name.last() == Some(&0) {
        name.pop();
    }
    name
}

fn join<C: AsRef<[u8]>>(components: &[C]) -> PathBuf {
    let mut joined = Vec::new();
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(component.as_ref());
    }
    PathBuf::from(OsStr::from_bytes(&joined))
}

fn destination_components(dest: &Path, allow_empty: bool) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let invalid = |reason| ArchiveError::InvalidDestination {
        dest: dest.to_owned(),
        reason,
    };
    let components = split_path(dest.as_os_str().as_bytes()).map_err(invalid)?;
    if components.is_empty() && !allow_empty {
        return Err(invalid(UnsafeReason::EmptyPath));
    }
    Ok(components.into_iter().map(<[u8]>::to_vec).collect())
}

/// What an earlier output entry at a path was, for link and path checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Directory,
    File,
    Symlink,
}

/// Failure while copying: already a complete [`ArchiveError`].
type Step = Result<(), ArchiveError>;

struct Repacker<'a, W: Write> {
    source: &'a Path,
    builder: tar::Builder<GuardedWriter<W>>,
    summary: RepackSummary,
    owner: Owner,
}

impl<'a, W: Write> Repacker<'a, W> {
    fn new(source: &'a Path, out: W, owner: Owner) -> Self {
        Self {
            source,
            owner,
            builder: tar::Builder::new(GuardedWriter {
                inner: out,
                write_failed: false,
                poisoned: false,
            }),
            summary: RepackSummary::default(),
        }
    }

    fn finish(mut self, result: Step) -> Result<RepackSummary, ArchiveError> {
        match result {
            Ok(()) => {
                let source = self.source;
                let summary = self.summary;
                let writer =
                    self.builder
                        .into_inner()
                        .map_err(|source_err| ArchiveError::Write {
                            path: source.to_owned(),
                            source: source_err,
                        })?;
                let mut inner = writer.inner;
                inner.flush().map_err(|e| ArchiveError::Write {
                    path: source.to_owned(),
                    source: e,
                })?;
                Ok(summary)
            }
            Err(e) => {
                // The builder writes the end-of-archive marker when dropped; make sure a failed
                // stream stays visibly truncated.
                self.builder.get_mut().poisoned = true;
                Err(e)
            }
        }
    }

    fn write_destination_dirs<C: AsRef<[u8]>>(&mut self, dirs: &[C]) -> Step {
        for depth in 1..=dirs.len() {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(self.owner.uid);
            header.set_gid(self.owner.gid);
            header.set_mtime(0);
            header.set_size(0);
            self.append_data(&mut header, &join(&dirs[..depth]), io::empty(), "")?;
        }
        Ok(())
    }

    /// Appends one entry, attributing an error to the output or to the entry being read.
    fn append_data<R: Read>(
        &mut self,
        header: &mut Header,
        path: &Path,
        data: R,
        entry: &str,
    ) -> Step {
        let result = self.builder.append_data(header, path, data);
        self.check(result, entry)
    }

    fn append_link(
        &mut self,
        header: &mut Header,
        path: &Path,
        target: &Path,
        entry: &str,
    ) -> Step {
        let result = self.builder.append_link(header, path, target);
        self.check(result, entry)
    }

    fn check(&mut self, result: io::Result<()>, entry: &str) -> Step {
        match result {
            Ok(()) => {
                self.summary.entries += 1;
                Ok(())
            }
            Err(source) if self.builder.get_ref().write_failed || entry.is_empty() => {
                Err(ArchiveError::Write {
                    path: self.source.to_owned(),
                    source,
                })
            }
            Err(source) => Err(ArchiveError::ReadEntry {
                path: self.source.to_owned(),
                entry: entry.to_owned(),
                source,
            }),
        }
    }

    fn copy_entries(
        &mut self,
        tree: &mut WorkTree,
        reader: Box<dyn Read + '_>,
        strip_components: u32,
        dest: &[Vec<u8>],
    ) -> Step {
        let archive_path = self.source;
        let read_err = |source| ArchiveError::Read {
            path: archive_path.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        // What each entry of this archive was, by its path after stripping (for hard links).
        let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
        let strip = strip_components as usize;
        let this_archive = tree.archives.len() - 1;
        let mut entries = archive.entries().map_err(read_err)?.raw(true);
        loop {
            let member = match next_member(&mut entries) {
                Ok(Some(member)) => member,
                Ok(None) => break,
                Err(MemberError::Read(source)) => return Err(read_err(source)),
                Err(MemberError::Refused { entry, reason }) => {
                    return Err(ArchiveError::UnsafeEntry {
                        path: archive_path.to_owned(),
                        entry,
                        reason,
                    });
                }
            };
            tree.count_entry(archive_path)?;
            let Member {
                mut entry,
                path: raw_path,
                link: link_name,
                pax,
            } = member;
            let mut name = String::from_utf8_lossy(&raw_path).into_owned();
            if raw_path.len() as u64 > MAX_PATH_LEN {
                let shown: String = name.chars().take(100).collect();
                name = format!("{shown}…");
            }
            let refuse = |reason| ArchiveError::UnsafeEntry {
                path: archive_path.to_owned(),
                entry: name.clone(),
                reason,
            };
            let entry_type = entry.header().entry_type();
            let kind = match entry_type {
                EntryType::Regular | EntryType::Continuous => Seen::File,
                EntryType::Link => Seen::File,
                EntryType::Directory => Seen::Directory,
                EntryType::Symlink => Seen::Symlink,
                other => return Err(refuse(UnsafeReason::UnsupportedType(type_name(other)))),
            };
            let header_size = entry.header().entry_size().map_err(read_err)?;
            for extension in pax
                .as_deref()
                .map(tar::PaxExtensions::new)
                .into_iter()
                .flatten()
            {
                let extension = extension.map_err(read_err)?;
                if extension.key_bytes() == b"size" {
                    let pax = String::from_utf8_lossy(extension.value_bytes()).into_owned();
                    if pax.trim().parse::<u64>().ok() != Some(header_size) {
                        return Err(refuse(UnsafeReason::PaxSizeMismatch {
                            pax,
                            header: header_size,
                        }));
                    }
                }
            }
            for len in [Some(raw_path.len()), link_name.as_ref().map(Vec::len)]
                .into_iter()
                .flatten()
            {
                if len as u64 > MAX_PATH_LEN {
                    return Err(refuse(UnsafeReason::PathTooLong { len }));
                }
            }
            let components = split_path(&raw_path).map_err(refuse)?;
            if components.is_empty() && kind != Seen::Directory {
                return Err(refuse(UnsafeReason::EmptyPath));
            }
            if components.len() <= strip {
                // Requested strip (GNU tar semantics), not a skipped bad entry.
                continue;
            }
            let relative = &components[strip..];
            let key = join(relative).into_os_string().into_vec();
            let mut out_components: Vec<&[u8]> = dest.iter().map(Vec::as_slice).collect();
            out_components.extend_from_slice(relative);
            tree.check_ancestors(&out_components).map_err(refuse)?;
            let out_path = join(&out_components);
            let tree_key = out_path.as_os_str().as_bytes().to_vec();
            if tree.links.contains_key(&tree_key) {
                return Err(refuse(UnsafeReason::ReplacesSymlink));
            }

            let mut header = Header::new_gnu();
            header.set_mode(entry.header().mode().map_err(read_err)? & 0o777);
            header.set_uid(self.owner.uid);
            header.set_gid(self.owner.gid);
            header.set_mtime(entry.header().mtime().map_err(read_err)?);
            match entry_type {
                EntryType::Link => {
                    let target = link_name.unwrap_or_default();
                    let target_name = String::from_utf8_lossy(&target).into_owned();
                    let unknown = || UnsafeReason::UnknownHardLinkTarget(target_name.clone());
                    let target_components = split_path(&target).map_err(|_| refuse(unknown()))?;
                    if target_components.len() <= strip {
                        return Err(refuse(unknown()));
                    }
                    let target_relative = &target_components[strip..];
                    let mut target_out: Vec<&[u8]> = dest.iter().map(Vec::as_slice).collect();
                    target_out.extend_from_slice(target_relative);
                    tree.check_ancestors(&target_out).map_err(refuse)?;
                    let target_key = join(target_relative).into_os_string().into_vec();
                    if seen.get(&target_key) != Some(&Seen::File) {
                        return Err(refuse(unknown()));
                    }
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    self.append_link(&mut header, &out_path, &join(&target_out), &name)?;
                }
                EntryType::Symlink => {
                    let target = link_name.unwrap_or_default();
                    let target_name = String::from_utf8_lossy(&target).into_owned();
                    if target.is_empty() {
                        return Err(refuse(UnsafeReason::LinkEscapesRoot(target_name)));
                    }
                    if target.first() == Some(&b'/') {
                        return Err(refuse(UnsafeReason::AbsoluteLinkTarget(target_name)));
                    }
                    let link_dir = &relative[..relative.len() - 1];
                    if resolve_link(link_dir, &target).is_none() {
                        return Err(refuse(UnsafeReason::LinkEscapesRoot(target_name)));
                    }
                    tree.follow(&out_components[..out_components.len() - 1], &target)
                        .map_err(refuse)?;
                    header.set_entry_type(EntryType::Symlink);
                    header.set_size(0);
                    let target_path = PathBuf::from(OsStr::from_bytes(&target));
                    self.append_link(&mut header, &out_path, &target_path, &name)?;
                    tree.keep_names(archive_path, tree_key.len() + target.len() + name.len())?;
                    tree.links.insert(
                        tree_key,
                        TreeLink {
                            target,
                            archive: this_archive,
                            entry: name.clone(),
                        },
                    );
                }
                EntryType::Directory => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_size(0);
                    self.append_data(&mut header, &out_path, io::empty(), &name)?;
                }
                _ => {
                    let size = entry.size();
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(size);
                    self.append_data(&mut header, &out_path, &mut entry, &name)?;
                    self.summary.bytes += size;
                }
            }
            tree.keep_names(archive_path, key.len())?;
            seen.insert(key, kind);
        }
        Ok(())
    }
}

pub(crate) fn type_name(entry_type: EntryType) -> String {
    match entry_type {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        EntryType::GNUSparse => "GNU sparse file".to_owned(),
        EntryType::GNULongName | EntryType::GNULongLink => "dangling GNU long name".to_owned(),
        EntryType::XHeader => "dangling pax header".to_owned(),
        other => format!("unknown type {:?}", char::from(other.as_byte())),
    }
}

/// A reader that fails once more than `allowed` bytes have been read through it; `consumed`
/// says how many were (one more than allowed when it failed).
struct Limited<R> {
    inner: R,
    allowed: u64,
    consumed: Rc<Cell<u64>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.allowed.saturating_sub(self.consumed.get());
        // One byte more than allowed is enough to know the limit is passed.
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.consumed.set(self.consumed.get() + n as u64);
        if n as u64 > left {
            return Err(io::Error::other(
                "the archives unpack past their size limit",
            ));
        }
        Ok(n)
    }
}

/// Output writer that remembers failures and can refuse writes after an error.
struct GuardedWriter<W: Write> {
    inner: W,
    write_failed: bool,
    poisoned: bool,
}

impl<W: Write> Write for GuardedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("stream abandoned after an error"));
        }
        self.inner
            .write(buf)
            .inspect_err(|_| self.write_failed = true)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Ok(());
        }
        self.inner.flush().inspect_err(|_| self.write_failed = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: Rc<Cell<u64>>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    /// A header of `kind` declaring `size` bytes, as an attacker writes it: the body that
    /// follows is whatever the decompressor produces (here, zeros).
    fn record_header(kind: EntryType, size: u64) -> Vec<u8> {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_mode(0o644);
        header.set_size(size);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    fn repack_reader(reader: impl Read + 'static) -> Result<RepackSummary, ArchiveError> {
        let mut tree = WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, None));
        tree.repack_stream(Path::new("bomb.tar"), Box::new(reader), 0, &[], io::sink())
    }

    #[test]
    fn long_name_and_pax_records_are_refused_before_their_bodies_are_read() {
        // 64 MiB bodies: without the caps they would be read whole (into memory, for all but
        // the global header).
        let declared = 64u64 << 20;
        for (kind, record, limit) in [
            (EntryType::GNULongName, "GNU long name record", MAX_PATH_LEN),
            (EntryType::GNULongLink, "GNU long link record", MAX_PATH_LEN),
            (EntryType::XHeader, "pax header", MAX_PAX_HEADER),
            (
                EntryType::XGlobalHeader,
                "pax global header",
                MAX_PAX_HEADER,
            ),
        ] {
            let read = Rc::new(Cell::new(0));
            let stream = io::Cursor::new(record_header(kind, declared))
                .chain(io::repeat(0).take(declared + 4096));
            let err = repack_reader(Counting {
                inner: stream,
                read: read.clone(),
            })
            .unwrap_err();
            // The header and nothing of the body.
            assert!(read.get() <= 512, "{record}: read {} bytes", read.get());
            match &err {
                ArchiveError::UnsafeEntry { entry, reason, .. } => {
                    assert_eq!(entry, "././@LongLink");
                    assert_eq!(
                        *reason,
                        UnsafeReason::RecordTooLarge {
                            record,
                            size: declared,
                            limit
                        }
                    );
                }
                other => panic!("{record}: expected a refused record, got {other:?}"),
            }
            assert!(err.to_string().contains("bomb.tar"), "{err}");
        }
    }

    #[test]
    fn records_at_their_limit_are_read() {
        // A 4095-byte path and its NUL: exactly MAX_PATH_LEN.
        let name = format!("pkg/{}", "n".repeat(4091));
        let mut tar = record_header(EntryType::GNULongName, MAX_PATH_LEN);
        tar.extend_from_slice(name.as_bytes());
        tar.push(0);
        tar.resize(tar.len().next_multiple_of(512), 0);
        let mut header = Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"short");
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(&[0; 1024]);
        let mut tree = WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, None));
        let mut out = Vec::new();
        tree.repack_stream(
            Path::new("long.tar"),
            Box::new(io::Cursor::new(tar)),
            0,
            &[],
            &mut out,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path_bytes().as_ref(), name.as_bytes());
    }

    fn links<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&[u8]) -> Option<&'a [u8]> {
        move |path| {
            pairs
                .iter()
                .find(|(p, _)| p.as_bytes() == path)
                .map(|(_, t)| t.as_bytes())
        }
    }

    #[test]
    fn follow_link_walks_through_earlier_links() {
        // `a/b -> ..` is the root: `a/b/../..` is above it.
        let known = [("a/b", "..")];
        assert_eq!(
            follow_link(&[], b"a/b/../..", links(&known)),
            Err(ChainError::Escapes {
                through: b"a/b".to_vec()
            })
        );
        // Lexically the same target is fine.
        assert_eq!(resolve_link(&[], b"a/b/../.."), Some(vec![]));
        // Links to links, inside.
        let known = [("lib", "usr/lib"), ("usr/lib/x", "../share")];
        assert_eq!(
            follow_link(&[b"bin"], b"../lib/x/y", links(&known)),
            Ok(vec![b"usr".to_vec(), b"share".to_vec(), b"y".to_vec()])
        );
        // A link met on the way whose own target is absolute.
        let known = [("etc", "/etc")];
        assert!(matches!(
            follow_link(&[], b"etc/passwd", links(&known)),
            Err(ChainError::Escapes { .. })
        ));
        // A loop, and a chain longer than the kernel follows.
        let known = [("x", "y"), ("y", "x")];
        assert_eq!(
            follow_link(&[], b"x", links(&known)),
            Err(ChainError::TooDeep)
        );
        let chain: Vec<(String, String)> = (0..=MAX_LINK_FOLLOWS)
            .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
            .collect();
        let chain: Vec<(&str, &str)> = chain
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            follow_link(&[], b"l0", links(&chain)),
            Err(ChainError::TooDeep)
        );
        assert!(follow_link(&[], b"l1", links(&chain)).is_ok());
    }
}
