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
//!   header (`git archive` writes one holding the commit id), which carries no file.
//!
//! Data is streamed entry by entry: memory stays bounded whatever the archive's size (the
//! bookkeeping for links grows with the number of entries, never with their bytes).
//!
//! When an error occurs, the output is left without the tar end-of-archive marker, so a receiver
//! cannot mistake the truncated stream for a complete archive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    /// The archive unpacks to more than its limit: a decompression bomb, or a source bigger
    /// than the recipe allows.
    #[error(
        "archive {} unpacks to more than {limit} bytes, its limit (2 GiB or 50 times its size, or the recipe's `[build] max_unpacked_size`)",
        path.display()
    )]
    TooLarge {
        /// The archive.
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

/// Re-packs the source archive at `archive` into a sanitised tar stream written to `out`.
///
/// `strip_components` leading components are removed from every entry path, then `dest` (a
/// relative directory inside the work tree, `""` for its root) is prepended. See the module
/// documentation for what is refused.
pub fn repack_archive<W: Write>(
    archive: &Path,
    strip_components: u32,
    dest: &Path,
    out: W,
) -> Result<RepackSummary, ArchiveError> {
    repack_archive_with(
        archive,
        strip_components,
        dest,
        &RepackOptions::default(),
        out,
    )
}

/// How [`repack_archive_with`] writes its stream and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepackOptions {
    /// The owner of every entry written.
    pub owner: Owner,
    /// The most bytes the archive may unpack to (its tar stream, decompressed); `None` means
    /// [`default_max_unpacked`] of the archive's size.
    pub max_unpacked: Option<u64>,
}

impl Default for RepackOptions {
    fn default() -> Self {
        Self {
            owner: Owner::ROOT,
            max_unpacked: None,
        }
    }
}

/// The default limit of what an archive of `compressed` bytes may unpack to: 2 GiB, or 50
/// times its size when that is more. A small source that inflates past it is a decompression
/// bomb, not a runtime.
pub fn default_max_unpacked(compressed: u64) -> u64 {
    (2u64 << 30).max(compressed.saturating_mul(50))
}

/// [`repack_archive`] with options: the owner of the entries and the unpacked-size limit.
pub fn repack_archive_with<W: Write>(
    archive: &Path,
    strip_components: u32,
    dest: &Path,
    options: &RepackOptions,
    out: W,
) -> Result<RepackSummary, ArchiveError> {
    let owner = options.owner;
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
    let compressed = file.metadata().map_err(read_err)?.len();
    let limit = options
        .max_unpacked
        .unwrap_or_else(|| default_max_unpacked(compressed));
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

    let exceeded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = Limited {
        inner: reader,
        left: limit,
        exceeded: exceeded.clone(),
    };
    let mut repacker = Repacker::new(archive, out, owner);
    let result = repacker
        .write_destination_dirs(&dest_components)
        .and_then(|()| repacker.copy_entries(Box::new(reader), strip_components, &dest_components));
    // Whatever error the limit caused on its way up, the limit is what to report.
    let result = match result {
        Err(_) if exceeded.load(std::sync::atomic::Ordering::SeqCst) => {
            Err(ArchiveError::TooLarge {
                path: archive.to_owned(),
                limit,
            })
        }
        other => other,
    };
    repacker.finish(result)
}

/// Packs a single plain file (such as a patch) into a one-entry tar stream written to `out`,
/// placed at `dest`, a relative file path inside the work tree. Directories leading to `dest`
/// are emitted first (mode 0755). The file's permission bits and modification time are kept.
pub fn repack_file<W: Write>(
    file: &Path,
    dest: &Path,
    out: W,
) -> Result<RepackSummary, ArchiveError> {
    repack_file_as(file, dest, Owner::ROOT, out)
}

/// [`repack_file`], the entries owned by `owner`.
pub fn repack_file_as<W: Write>(
    file: &Path,
    dest: &Path,
    owner: Owner,
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
    let mut repacker = Repacker::new(file, out, owner);
    let result = repacker.write_destination_dirs(dirs).and_then(|()| {
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
        let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
        let strip = strip_components as usize;
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw_path = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw_path).into_owned();
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
                EntryType::XGlobalHeader => continue,
                other => return Err(refuse(UnsafeReason::UnsupportedType(type_name(other)))),
            };
            let header_size = entry.header().entry_size().map_err(read_err)?;
            if let Some(extensions) = entry.pax_extensions().map_err(read_err)? {
                for extension in extensions {
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
            check_ancestors(relative, &seen).map_err(refuse)?;
            if seen.get(&key) == Some(&Seen::Symlink) {
                return Err(refuse(UnsafeReason::ReplacesSymlink));
            }
            let mut out_components: Vec<&[u8]> = dest.iter().map(Vec::as_slice).collect();
            out_components.extend_from_slice(relative);
            let out_path = join(&out_components);

            let mut header = Header::new_gnu();
            header.set_mode(entry.header().mode().map_err(read_err)? & 0o777);
            header.set_uid(self.owner.uid);
            header.set_gid(self.owner.gid);
            header.set_mtime(entry.header().mtime().map_err(read_err)?);
            match entry_type {
                EntryType::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                    let target_name = String::from_utf8_lossy(&target).into_owned();
                    let unknown = || UnsafeReason::UnknownHardLinkTarget(target_name.clone());
                    let target_components = split_path(&target).map_err(|_| refuse(unknown()))?;
                    if target_components.len() <= strip {
                        return Err(refuse(unknown()));
                    }
                    let target_relative = &target_components[strip..];
                    check_ancestors(target_relative, &seen).map_err(refuse)?;
                    let target_key = join(target_relative).into_os_string().into_vec();
                    if seen.get(&target_key) != Some(&Seen::File) {
                        return Err(refuse(unknown()));
                    }
                    let mut target_out: Vec<&[u8]> = dest.iter().map(Vec::as_slice).collect();
                    target_out.extend_from_slice(target_relative);
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    self.append_link(&mut header, &out_path, &join(&target_out), &name)?;
                }
                EntryType::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
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
                    header.set_entry_type(EntryType::Symlink);
                    header.set_size(0);
                    let target_path = PathBuf::from(OsStr::from_bytes(&target));
                    self.append_link(&mut header, &out_path, &target_path, &name)?;
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
            seen.insert(key, kind);
        }
        Ok(())
    }
}

fn check_ancestors(relative: &[&[u8]], seen: &HashMap<Vec<u8>, Seen>) -> Result<(), UnsafeReason> {
    for depth in 1..relative.len() {
        let ancestor = join(&relative[..depth]).into_os_string().into_vec();
        if seen.get(&ancestor) == Some(&Seen::Symlink) {
            return Err(UnsafeReason::BelowSymlink(
                String::from_utf8_lossy(&ancestor).into_owned(),
            ));
        }
    }
    Ok(())
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

/// A reader that fails once more than `left` bytes have been read through it (and says so in
/// `exceeded`).
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than allowed is enough to know the limit is passed.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(io::Error::other("the archive unpacks past its size limit"));
        }
        self.left -= n as u64;
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
