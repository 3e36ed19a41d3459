//! Finding and loading the stacks of a recipes directory, hashing their definition, and the
//! names and labels of the images made from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::arch::Arch;

use super::manifest::parse_manifest;
use super::{
    ARCH_LABEL, HASH_LABEL, IMAGE_ROLE_LABEL, ImageSource, MANIFEST, Role, STACK_LABEL, StackError,
    StackManifest,
};
use crate::recipe::{STACKS_DIR, is_lowercase_slug};

/// Bumped whenever the way we make images changes, so old images are not reused.
const HASH_SALT: &str = "packager-stack-v1";

/// The longest stack name: it becomes part of an image name.
const MAX_NAME_LEN: usize = 64;

/// A loaded, validated stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The stack name (its folder name).
    pub name: String,
    /// The stack folder, `<recipes>/stacks/<name>`.
    pub dir: PathBuf,
    /// The manifest as written.
    pub manifest: StackManifest,
    /// Where the build image comes from.
    pub build: ImageSource,
    /// Where the run image comes from; `None`: the build image is used.
    pub run: Option<ImageSource>,
    /// Hex SHA-256 of the stack definition (and of the architecture, for any but amd64, so
    /// that amd64 hashes stay what they were before there were others).
    pub hash: String,
    /// The architecture its images are made for ([`Arch::host`] when loaded; see
    /// [`Stack::for_arch`]).
    pub arch: Arch,
    /// The hash of the definition alone, whatever the architecture.
    pub(super) definition_hash: String,
}

/// Loads every stack in `<recipes_dir>/stacks/*/`, sorted by name.
pub fn load_all(recipes_dir: &Path) -> Result<Vec<Stack>, StackError> {
    stack_names(recipes_dir)?
        .iter()
        .map(|name| Stack::load(&recipes_dir.join(STACKS_DIR).join(name)))
        .collect()
}

/// Loads the stack `<recipes_dir>/stacks/<name>/`; an unknown name lists the known ones.
pub fn load(recipes_dir: &Path, name: &str) -> Result<Stack, StackError> {
    let dir = recipes_dir.join(STACKS_DIR).join(name);
    if is_stack_name(name) && dir.join(MANIFEST).is_file() {
        return Stack::load(&dir);
    }
    Err(StackError::UnknownStack {
        name: name.to_owned(),
        known: stack_names(recipes_dir)?,
    })
}

/// Names of the folders in `<recipes_dir>/stacks/` that hold a `stack.toml`, sorted.
pub fn stack_names(recipes_dir: &Path) -> Result<Vec<String>, StackError> {
    let dir = recipes_dir.join(STACKS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StackError::NoStacksDir { dir });
        }
        Err(source) => return Err(StackError::Read { path: dir, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StackError::Read {
            path: dir.clone(),
            source,
        })?;
        if entry.path().join(MANIFEST).is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// A stack name: a [lowercase slug](is_lowercase_slug) of at most [`MAX_NAME_LEN`] bytes.
fn is_stack_name(name: &str) -> bool {
    is_lowercase_slug(name) && name.len() <= MAX_NAME_LEN
}

pub(super) fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> StackError + '_ {
    move |source| StackError::Read {
        path: path.to_owned(),
        source,
    }
}

impl Stack {
    /// Loads and validates the stack in `dir` (which holds `stack.toml`); the stack's name is
    /// the folder name.
    pub fn load(dir: &Path) -> Result<Stack, StackError> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(read_error(&manifest_path))?;
        let manifest = parse_manifest(&text, &manifest_path)?;
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !is_stack_name(&name) {
            return Err(StackError::Invalid {
                path: manifest_path,
                reason: format!(
                    "the stack folder name `{name}` must be lowercase letters, digits, `.`, `_` \
                     and `-` (it becomes part of an image name)"
                ),
            });
        }
        let build = ImageSource::from_parts(
            &manifest.image,
            &manifest.dockerfile,
            &manifest.bootstrap,
            &manifest_path,
            "",
        )?;
        let run = manifest
            .run
            .as_ref()
            .map(|run| {
                ImageSource::from_parts(
                    &run.image,
                    &run.dockerfile,
                    &run.bootstrap,
                    &manifest_path,
                    "[run] ",
                )
            })
            .transpose()?;
        for source in std::iter::once(&build).chain(run.as_ref()) {
            if let ImageSource::Dockerfile { path } = source
                && !dir.join(path).is_file()
            {
                return Err(StackError::Invalid {
                    path: manifest_path.clone(),
                    reason: format!("`dockerfile = \"{path}\"`: no such file in the stack folder"),
                });
            }
        }
        let uses_context = std::iter::once(&build)
            .chain(run.as_ref())
            .any(|s| matches!(s, ImageSource::Dockerfile { .. }));
        let hash = stack_hash(&manifest, uses_context.then_some(dir))?;
        Ok(Stack {
            name,
            dir: dir.to_owned(),
            manifest,
            build,
            run,
            definition_hash: hash.clone(),
            hash,
            arch: Arch::Amd64,
        }
        .with_arch(Arch::host()))
    }

    /// The stack for `arch`: its own hash (amd64 keeps the plain one), tags and labels, and
    /// images made for that platform. Refused when the manifest's `arches` leaves it out.
    pub fn for_arch(&self, arch: Arch) -> Result<Stack, StackError> {
        if let Some(arches) = &self.manifest.arches
            && !arches.contains(&arch)
        {
            return Err(StackError::UnsupportedArch {
                stack: self.name.clone(),
                arch,
                supported: arches.clone(),
            });
        }
        Ok(self.with_arch(arch))
    }

    fn with_arch(&self, arch: Arch) -> Stack {
        let mut stack = self.clone();
        let plain = self.definition_hash.as_str();
        stack.hash = match arch {
            Arch::Amd64 => plain.to_owned(),
            other => {
                let mut hasher = Sha256::new();
                hasher.update(plain.as_bytes());
                hasher.update(b"\0arch\0");
                hasher.update(other.as_str().as_bytes());
                hex::encode(hasher.finalize())
            }
        };
        stack.arch = arch;
        stack
    }

    /// The path of its `stack.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The first 12 hex digits of [`Stack::hash`].
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }

    /// The image reference for a role: the prebuilt reference, or the tag we make,
    /// `packager-stack-<name>:<role>-<hash12>`. A stack without a run image uses its build
    /// image for [`Role::Run`].
    pub fn image_reference(&self, role: Role) -> String {
        let (role, source) = self.source(role);
        match source {
            ImageSource::Prebuilt { image } => image.clone(),
            _ => format!("{}:{}", self.repository(), self.tag(role)),
        }
    }

    /// The repository our images of this stack use: `packager-stack-<name>`.
    pub fn repository(&self) -> String {
        format!("packager-stack-{}", self.name)
    }

    pub(super) fn tag(&self, role: Role) -> String {
        match self.arch {
            Arch::Amd64 => format!("{role}-{}", self.short_hash()),
            arch => format!("{role}-{arch}-{}", self.short_hash()),
        }
    }

    /// The role and source that actually provide `role` (run falls back to build).
    pub(super) fn source(&self, role: Role) -> (Role, &ImageSource) {
        match (role, &self.run) {
            (Role::Run, Some(run)) => (Role::Run, run),
            _ => (Role::Build, &self.build),
        }
    }

    pub(super) fn labels(&self, role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([
            (STACK_LABEL.to_owned(), self.name.clone()),
            (HASH_LABEL.to_owned(), self.hash.clone()),
            (IMAGE_ROLE_LABEL.to_owned(), role.as_str().to_owned()),
            (ARCH_LABEL.to_owned(), self.arch.to_string()),
        ])
    }
}

/// Relative paths (with `/`) of every file, symlink and folder under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, StackError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(read_error(&current))?;
        for entry in entries {
            let entry = entry.map_err(read_error(&current))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .expect("walked paths are under dir")
                .to_string_lossy()
                .replace('\\', "/");
            let file_type = entry.file_type().map_err(read_error(&path))?;
            if file_type.is_dir() {
                stack.push(path.clone());
            }
            out.push((rel, path));
        }
    }
    out.sort();
    Ok(out)
}

/// A deterministic tar of the stack folder (the Docker build context).
pub(super) fn context_tar(dir: &Path) -> Result<Vec<u8>, StackError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for (rel, path) in walk(dir)? {
        builder
            .append_path_with_name(&path, &rel)
            .map_err(read_error(&path))?;
    }
    builder.into_inner().map_err(read_error(dir))
}

/// Hash of the parsed manifest (so comments and formatting don't matter) and, for Dockerfile
/// stacks, of every other file in the folder.
fn stack_hash(manifest: &StackManifest, context: Option<&Path>) -> Result<String, StackError> {
    let mut hasher = Sha256::new();
    hasher.update(HASH_SALT.as_bytes());
    hasher.update([0]);
    let canonical = toml::to_string(manifest).expect("a parsed manifest serializes");
    hasher.update((canonical.len() as u64).to_le_bytes());
    hasher.update(canonical.as_bytes());
    if let Some(dir) = context {
        for (rel, path) in walk(dir)? {
            if rel == MANIFEST {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(read_error(&path))?;
            let content = if meta.is_file() {
                std::fs::read(&path).map_err(read_error(&path))?
            } else if meta.is_symlink() {
                let target = std::fs::read_link(&path).map_err(read_error(&path))?;
                format!("symlink:{}", target.to_string_lossy()).into_bytes()
            } else {
                b"dir".to_vec()
            };
            hasher.update((rel.len() as u64).to_le_bytes());
            hasher.update(rel.as_bytes());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                hasher.update(meta.permissions().mode().to_le_bytes());
            }
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(&content);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_comments_and_formatting() {
        let a = parse_manifest(
            "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\"]\n",
            Path::new("a"),
        )
        .unwrap();
        let b = parse_manifest(
            "# a comment\n[bootstrap]\nsuite=\"bookworm\"\n  packages = [ \"gcc\" ]  # c\n",
            Path::new("b"),
        )
        .unwrap();
        let c = parse_manifest(
            "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\", \"make\"]\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(stack_hash(&a, None).unwrap(), stack_hash(&b, None).unwrap());
        assert_ne!(stack_hash(&a, None).unwrap(), stack_hash(&c, None).unwrap());
    }

    #[test]
    fn names() {
        assert!(is_stack_name("bookworm"));
        assert!(is_stack_name("heroku-24"));
        assert!(!is_stack_name("Bookworm"));
        assert!(!is_stack_name("-x"));
        assert!(!is_stack_name(""));
    }
}
