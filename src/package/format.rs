//! The artifact formats: a tar compressed with gzip (`.tar.gz`, the default) or with zstd
//! (`.tar.zst`). Readers tell them apart by their first bytes, never by the file's name.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// zstd compression level used unless a recipe sets `zstd_level`.
pub const DEFAULT_ZSTD_LEVEL: u32 = 19;
/// The zstd levels a recipe may set (zstd's own range, without the negative "fast" levels).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<u32> = 1..=22;

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The magic number of a zstd frame, little-endian 0xFD2FB528.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How an artifact's tar is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArtifactFormat {
    /// gzip: `.tar.gz`, what every artifact was before formats existed.
    #[default]
    #[serde(rename = "tar.gz")]
    TarGz,
    /// zstd: `.tar.zst`, about a third smaller at level 19 and faster to unpack.
    #[serde(rename = "tar.zst")]
    TarZst,
}

impl ArtifactFormat {
    /// Every format.
    pub const ALL: [ArtifactFormat; 2] = [ArtifactFormat::TarGz, ArtifactFormat::TarZst];

    /// The name recipes use: `tar.gz`, `tar.zst`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactFormat::TarGz => "tar.gz",
            ArtifactFormat::TarZst => "tar.zst",
        }
    }

    /// The file name extension, with its dot: `.tar.gz`, `.tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            ArtifactFormat::TarGz => ".tar.gz",
            ArtifactFormat::TarZst => ".tar.zst",
        }
    }

    /// The media type stores serve it with.
    pub fn content_type(self) -> &'static str {
        match self {
            ArtifactFormat::TarGz => "application/gzip",
            ArtifactFormat::TarZst => "application/zstd",
        }
    }

    /// The format a file name's extension says, if it has one of theirs.
    pub fn from_name(name: &str) -> Option<ArtifactFormat> {
        Self::ALL
            .into_iter()
            .find(|f| name.len() > f.extension().len() && name.ends_with(f.extension()))
    }

    /// The format whose magic bytes `head` (the first bytes of a file) starts with.
    pub fn detect(head: &[u8]) -> Option<ArtifactFormat> {
        if head.starts_with(&ZSTD_MAGIC) {
            Some(ArtifactFormat::TarZst)
        } else if head.starts_with(&GZIP_MAGIC) {
            Some(ArtifactFormat::TarGz)
        } else {
            None
        }
    }

    /// The format of the file at `path`, by its first bytes.
    pub fn of_file(path: &Path) -> io::Result<Option<ArtifactFormat>> {
        let mut head = [0u8; 4];
        let n = read_head(&mut std::fs::File::open(path)?, &mut head)?;
        Ok(Self::detect(&head[..n]))
    }
}

/// Reads up to `head.len()` bytes (fewer only at the end of the file); returns how many.
pub(crate) fn read_head(file: &mut impl Read, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl fmt::Display for ArtifactFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArtifactFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown artifact format `{s}`: expected tar.gz or tar.zst"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_magic() {
        assert_eq!(
            ArtifactFormat::from_name("lua-5.4.4.tar.zst"),
            Some(ArtifactFormat::TarZst)
        );
        assert_eq!(
            ArtifactFormat::from_name("lua-5.4.4.tar.gz"),
            Some(ArtifactFormat::TarGz)
        );
        assert_eq!(ArtifactFormat::from_name(".tar.gz"), None);
        assert_eq!(ArtifactFormat::from_name("lua.zip"), None);
        assert_eq!(
            ArtifactFormat::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(ArtifactFormat::TarZst)
        );
        assert_eq!(
            ArtifactFormat::detect(&[0x1f, 0x8b, 8]),
            Some(ArtifactFormat::TarGz)
        );
        assert_eq!(ArtifactFormat::detect(b"ustar"), None);
        assert_eq!(ArtifactFormat::detect(&[0x28, 0xb5]), None);
        assert_eq!("tar.zst".parse(), Ok(ArtifactFormat::TarZst));
        assert!("tar.xz".parse::<ArtifactFormat>().is_err());
    }
}
