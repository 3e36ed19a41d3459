//! Reading artifacts back: listing their entries (for `verify`'s comparison and the linkage
//! gate), reading files out of them, and re-owning them for an upload into a container. Every
//! reader takes both formats, told apart by the file's first bytes (see [`ArtifactFormat`]), so
//! a `.tar.zst` read under any name, or a `.tar.gz` renamed, reads the same.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::PackageError;
use super::format::{ArtifactFormat, read_head};

/// Read buffer of artifact files.
const READ_BUFFER: usize = 256 * 1024;

/// Kind of an artifact entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    HardLink,
    /// Anything else, with its tar type byte (never produced by [`package_tar_stream`]).
    Other(u8),
}

/// One entry of an artifact, as listed by [`list_artifact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEntry {
    /// Path inside the artifact, relative to the prefix.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Content size in bytes (0 for anything but files).
    pub size: u64,
    /// Target of a symlink or hard link.
    pub link_target: Option<PathBuf>,
    /// SHA-256 of a file's content, lowercase hex.
    pub sha256: Option<String>,
}

/// Opens the artifact at `path` as a tar archive, to read its entries in order: gzip or zstd,
/// whichever its first bytes say; anything else is [`PackageError::UnknownFormat`].
pub fn open_artifact(path: &Path) -> Result<tar::Archive<Box<dyn Read>>, PackageError> {
    Ok(tar::Archive::new(decompressed(path)?))
}

/// The tar stream inside the artifact at `path`.
fn decompressed(path: &Path) -> Result<Box<dyn Read>, PackageError> {
    let read_err = |source| PackageError::ReadArtifact {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = [0u8; 4];
    let n = read_head(&mut file, &mut head).map_err(read_err)?;
    file.rewind().map_err(read_err)?;
    let buffered = BufReader::with_capacity(READ_BUFFER, file);
    Ok(match ArtifactFormat::detect(&head[..n]) {
        Some(ArtifactFormat::TarGz) => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Some(ArtifactFormat::TarZst) => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(read_err)?)
        }
        None => {
            return Err(PackageError::UnknownFormat {
                path: path.to_owned(),
            });
        }
    })
}

/// Writes the artifact at `path` to `out` as a plain tar stream whose every entry belongs to
/// `owner`: how an artifact is extracted in a container whose commands run as that user (the
/// engine extracts as root and keeps the owners the stream gives). Paths, modes, times, links
/// and contents are copied as they are.
pub fn write_owned_tar<W: Write>(
    path: &Path,
    owner: crate::archive::Owner,
    out: W,
) -> Result<(), PackageError> {
    let read_err = |source| PackageError::ReadArtifact {
        path: path.to_owned(),
        source,
    };
    let mut archive = open_artifact(path)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let mut header = entry.header().clone();
        header.set_uid(owner.uid);
        header.set_gid(owner.gid);
        let name = entry.path_bytes().into_owned();
        let name = Path::new(OsStr::from_bytes(&name)).to_path_buf();
        match header.entry_type() {
            EntryType::Symlink | EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = Path::new(OsStr::from_bytes(&target)).to_path_buf();
                builder
                    .append_link(&mut header, &name, &target)
                    .map_err(read_err)?;
            }
            _ => builder
                .append_data(&mut header, &name, &mut entry)
                .map_err(read_err)?,
        }
    }
    builder
        .into_inner()
        .map_err(read_err)?
        .flush()
        .map_err(read_err)?;
    Ok(())
}

/// The contents of the regular files `wanted` (paths as [`list_artifact`] gives them) in an
/// artifact, each at most `max` bytes (larger ones are left out).
pub fn read_artifact_files(
    path: &Path,
    wanted: &std::collections::BTreeSet<PathBuf>,
    max: u64,
) -> Result<std::collections::BTreeMap<PathBuf, Vec<u8>>, PackageError> {
    let read_err = |source| PackageError::ReadArtifact {
        path: path.to_owned(),
        source,
    };
    let mut archive = open_artifact(path)?;
    let mut found = std::collections::BTreeMap::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let entry_path = entry.path().map_err(read_err)?.into_owned();
        let regular = matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::Continuous
        );
        if regular && entry.size() <= max && wanted.contains(&entry_path) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(read_err)?;
            found.insert(entry_path, data);
        }
    }
    Ok(found)
}

/// Lists the entries of the artifact at `path` (either format), hashing each file's content.
pub fn list_artifact(path: &Path) -> Result<Vec<ArtifactEntry>, PackageError> {
    let read_err = |source| PackageError::ReadArtifact {
        path: path.to_owned(),
        source,
    };
    let mut archive = open_artifact(path)?;
    let mut listed = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let header = entry.header();
        let kind = match header.entry_type() {
            EntryType::Directory => EntryKind::Directory,
            EntryType::Regular | EntryType::Continuous => EntryKind::File,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Link => EntryKind::HardLink,
            other => EntryKind::Other(other.as_byte()),
        };
        let mode = header.mode().map_err(read_err)?;
        let entry_path = entry.path().map_err(read_err)?.into_owned();
        let link_target = entry
            .link_name()
            .map_err(read_err)?
            .map(std::borrow::Cow::into_owned);
        let (size, sha256) = if kind == EntryKind::File {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let n = entry.read(&mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            (size, Some(hex::encode(hasher.finalize())))
        } else {
            (0, None)
        };
        listed.push(ArtifactEntry {
            path: entry_path,
            kind,
            mode,
            size,
            link_target,
            sha256,
        });
    }
    Ok(listed)
}
