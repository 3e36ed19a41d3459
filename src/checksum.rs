//! Checksums of downloaded files: the algorithms a recipe may name, and streaming hashers.

use std::fmt;
use std::io::Read;
use std::path::Path;

use sha1::Digest;

/// A hash algorithm a recipe may use to pin a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    /// SHA-256: the default and the one `packager checksum` prints.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1: legacy, accepted with a warning that it is weak.
    Sha1,
}

impl Algo {
    /// The name used in recipes, cache paths and mirror URLs.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
            Algo::Sha1 => "sha1",
        }
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
            Algo::Sha1 => 40,
        }
    }

    /// Whether the algorithm is too weak to trust on its own.
    pub fn is_weak(self) -> bool {
        self == Algo::Sha1
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a checksum text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{algo} checksum `{value}` is not {len} lowercase hex digits", len = algo.hex_len())]
pub struct ChecksumError {
    /// The algorithm the checksum was given for.
    pub algo: Algo,
    /// The refused text.
    pub value: String,
}

/// A checksum: an algorithm and the expected digest in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum {
    algo: Algo,
    hex: String,
}

impl Checksum {
    /// Checks that `hex` is a digest of the right length for `algo` (lowercase hex; uppercase
    /// is accepted and folded).
    pub fn new(algo: Algo, hex: &str) -> Result<Self, ChecksumError> {
        let folded = hex.to_ascii_lowercase();
        if folded.len() != algo.hex_len() || !folded.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChecksumError {
                algo,
                value: hex.to_string(),
            });
        }
        Ok(Checksum { algo, hex: folded })
    }

    /// The algorithm.
    pub fn algo(&self) -> Algo {
        self.algo
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The cache key: `sha256-<hex>`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.algo, self.hex)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

impl std::str::FromStr for Checksum {
    type Err = String;

    /// Parses `ALGO:HEX` (`sha256:8c0d…`), as inventories and provenance write it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, hex) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not `ALGO:HEX`"))?;
        let algo = [Algo::Sha256, Algo::Sha512, Algo::Sha1]
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| format!("`{name}` is not a known hash algorithm"))?;
        Checksum::new(algo, hex).map_err(|e| e.to_string())
    }
}

impl serde::Serialize for Checksum {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Checksum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher for one of the [`Algo`]s.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
    /// SHA-1 state.
    Sha1(sha1::Sha1),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
        }
    }

    /// The digest in lowercase hex.
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hashes everything `reader` yields; returns the hex digest and the byte count.
pub fn hash_reader(algo: Algo, mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = algo.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish_hex(), total))
}

/// Hashes a file; io errors name the path.
pub fn hash_file(algo: Algo, path: &Path) -> std::io::Result<(String, u64)> {
    hash_reader(algo, fs_err::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_length_and_hex() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(Checksum::new(Algo::Sha256, good).is_ok());
        assert_eq!(
            Checksum::new(Algo::Sha256, &good.to_uppercase())
                .unwrap()
                .hex(),
            good
        );
        assert!(Checksum::new(Algo::Sha256, &good[1..]).is_err());
        assert!(Checksum::new(Algo::Sha1, good).is_err());
        assert!(Checksum::new(Algo::Sha1, "d58403caec82af414507cefa58ce74bbb792985z").is_err());
        assert!(Checksum::new(Algo::Sha1, "d58403caec82af414507cefa58ce74bbb792985a").is_ok());
    }

    #[test]
    fn hashes_known_vectors() {
        let (h, n) = hash_reader(Algo::Sha256, &b"abc"[..]).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
        let (h, _) = hash_reader(Algo::Sha1, &b"abc"[..]).unwrap();
        assert_eq!(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
        let (h, _) = hash_reader(Algo::Sha512, &b""[..]).unwrap();
        assert!(h.starts_with("cf83e1357eefb8bd"));
    }
}
