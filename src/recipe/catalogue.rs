//! The catalogue: every runtime and version under a recipes directory, found by file name
//! alone (no recipe is parsed until one is loaded).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::version::{Version, VersionReq};

use super::{LoadOptions, RUNTIME_FILE, Recipe, RecipeError, RuntimeName, STACKS_DIR, load};

/// One runtime's folder as the catalogue found it: its version files, none parsed yet.
#[derive(Debug, Clone)]
pub struct RuntimeEntry {
    /// The runtime: the folder's name.
    pub name: RuntimeName,
    /// Its folder, `<recipes>/<runtime>`.
    pub dir: PathBuf,
    /// Its versions, sorted, each with its file.
    pub versions: Vec<(Version, PathBuf)>,
}

impl RuntimeEntry {
    /// The shared defaults file, when there is one.
    pub fn runtime_file(&self) -> Option<PathBuf> {
        let p = self.dir.join(RUNTIME_FILE);
        p.is_file().then_some(p)
    }
}

/// Every runtime and version under a recipes directory.
#[derive(Debug, Clone)]
pub struct Catalogue {
    dir: PathBuf,
    runtimes: BTreeMap<RuntimeName, RuntimeEntry>,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, RecipeError> {
    let io = |source| RecipeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

impl Catalogue {
    /// Scans a recipes directory: every folder (but `stacks/` and hidden ones) is a runtime;
    /// every `*.toml` in it but `runtime.toml` is a version.
    pub fn open(dir: &Path) -> Result<Self, RecipeError> {
        let mut runtimes = BTreeMap::new();
        for path in read_dir_sorted(dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !path.is_dir() || name.starts_with('.') || name == STACKS_DIR {
                continue;
            }
            let runtime: RuntimeName = name.parse()?;
            let mut versions = Vec::new();
            for file in read_dir_sorted(&path)? {
                let fname = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !file.is_file() || fname == RUNTIME_FILE {
                    continue;
                }
                let Some(stem) = fname.strip_suffix(".toml") else {
                    continue;
                };
                let version: Version = stem.parse().map_err(|source| RecipeError::BadFileName {
                    path: file.clone(),
                    source,
                })?;
                versions.push((version, file));
            }
            versions.sort_by(|a, b| a.0.cmp(&b.0));
            runtimes.insert(
                runtime.clone(),
                RuntimeEntry {
                    name: runtime,
                    dir: path,
                    versions,
                },
            );
        }
        Ok(Catalogue {
            dir: dir.to_path_buf(),
            runtimes,
        })
    }

    /// The recipes directory it was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every runtime, by name.
    pub fn runtimes(&self) -> impl Iterator<Item = &RuntimeEntry> {
        self.runtimes.values()
    }

    /// One runtime by name; an unknown name's error lists the known ones.
    pub fn runtime(&self, name: &str) -> Result<&RuntimeEntry, RecipeError> {
        self.runtimes
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, e)| e)
            .ok_or_else(|| RecipeError::UnknownRuntime {
                name: name.to_string(),
                dir: self.dir.clone(),
                known: self.runtimes.keys().map(ToString::to_string).collect(),
            })
    }

    /// The versions of `runtime` that a selector picks: every version for `None`, exactly one
    /// for a version (`3.2.8`), the matching ones for a requirement (`^3.2`, `3.2.*`).
    pub fn select(
        &self,
        runtime: &str,
        selector: Option<&str>,
    ) -> Result<Vec<Version>, RecipeError> {
        let entry = self.runtime(runtime)?;
        let all = entry.versions.iter().map(|(v, _)| v);
        let picked: Vec<Version> = match selector {
            None => all.cloned().collect(),
            Some(s) if !VersionReq::looks_like_req(s) => {
                let want: Version = s.parse()?;
                all.filter(|v| **v == want).cloned().collect()
            }
            Some(s) => {
                let req: VersionReq = s.parse()?;
                all.filter(|v| req.matches(v)).cloned().collect()
            }
        };
        if picked.is_empty() && selector.is_some() {
            return Err(RecipeError::NoMatch {
                runtime: runtime.to_string(),
                wanted: selector.unwrap_or_default().to_string(),
                available: entry.versions.iter().map(|(v, _)| v.to_string()).collect(),
            });
        }
        Ok(picked)
    }

    /// Loads one version's recipe.
    pub fn load(
        &self,
        runtime: &str,
        version: &Version,
        opts: &LoadOptions,
    ) -> Result<Recipe, RecipeError> {
        let entry = self.runtime(runtime)?;
        let (_, file) = entry
            .versions
            .iter()
            .find(|(v, _)| v == version)
            .ok_or_else(|| RecipeError::NoMatch {
                runtime: runtime.to_string(),
                wanted: version.to_string(),
                available: entry.versions.iter().map(|(v, _)| v.to_string()).collect(),
            })?;
        load(
            &entry.name,
            version,
            entry.runtime_file().as_deref(),
            file,
            opts,
        )
    }
}
