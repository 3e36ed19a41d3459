//! CPU architectures, by the names Docker, OCI and Heroku's inventories use.

use serde::{Deserialize, Serialize};

/// A CPU architecture an engine runs and an artifact is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64 (the kernel's `x86_64`).
    Amd64,
    /// 64-bit ARM (the kernel's `aarch64`; Graviton, Apple silicon).
    Arm64,
}

impl Arch {
    /// The Docker/OCI name: `amd64` or `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture this program was compiled for (the host's).
    pub fn host() -> Arch {
        match std::env::consts::ARCH {
            "aarch64" => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// Parses Docker's (`amd64`, `arm64`) and the kernel's (`x86_64`, `aarch64`) spellings.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        assert_eq!(Arch::parse("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("arm64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("s390x"), None);
    }

    #[test]
    fn displays_and_serializes_the_docker_name() {
        assert_eq!(Arch::Amd64.to_string(), "amd64");
        assert_eq!(serde_json::to_string(&Arch::Arm64).unwrap(), "\"arm64\"");
        assert_eq!(Arch::parse(Arch::host().as_str()), Some(Arch::host()));
    }
}
