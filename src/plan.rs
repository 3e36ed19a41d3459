//! Planning: selectors → the jobs to run, each with its build key and status, in dependency
//! order. Planning builds no image and starts no container: it works from the recipes, the
//! stack definitions' hashes and store lookups only.
//!
//! A job's build key is a sha256 over the packager's artifact format version, the canonical
//! merged recipe (templated with `{jobs}` fixed, so the machine does not change it), the stack
//! definition hash, `SOURCE_DATE_EPOCH`, the source and resource checksums, and the keys of the
//! runtimes it is built against — so changing a recipe, its stack, a source or a dependency changes the key of that
//! job and of every job built against it, and changing nothing changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use futures_util::StreamExt;
use serde::Serialize;
use sha2::Digest;

use crate::arch::Arch;
use crate::publish::{PublishError, Store};
use crate::recipe::{Catalogue, LoadOptions, Recipe, RecipeError};
use crate::stack::{self, StackError};
use crate::version::Version;

/// Bumped when the artifact layout changes, so every key changes with it.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;
/// The metadata key the build key is stored under (S3 metadata, local sidecar, inventory).
pub const KEY_METADATA: &str = "build-key";
/// `{jobs}` as templated for the key (the real value is the machine's).
const CANONICAL_JOBS: usize = 1;

/// How a recipe is loaded for its build key and provenance digest: `{jobs}` fixed, so that
/// the machine that plans does not change either.
pub fn canonical_load_options(arch: Arch) -> LoadOptions {
    LoadOptions {
        jobs: CANONICAL_JOBS,
        arch,
    }
}

/// A job's build key: the sha256, in hex, of everything its artifact's bytes depend on (see
/// the module's documentation). Stored with the artifact under [`KEY_METADATA`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct BuildKey(String);

impl BuildKey {
    /// A key as read back (from a store's metadata, or made up in a test).
    pub fn new(hex: impl Into<String>) -> Self {
        BuildKey(hex.into())
    }

    /// The key as stored, 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as tables show it.
    pub fn short(&self) -> &str {
        short_key(&self.0)
    }
}

impl std::fmt::Display for BuildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for BuildKey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// What went wrong planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A recipe is wrong.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A stack definition is wrong.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] PublishError),
    /// A selector is not `RUNTIME [VERSION|REQ]…` or `--all`.
    #[error("`{0}` is neither a runtime nor a version of the runtime before it")]
    Selector(String),
    /// A required runtime or version does not exist.
    #[error("{}: requires `{requirement}`, but {problem}", file.display())]
    MissingRequirement {
        /// The recipe that requires it.
        file: std::path::PathBuf,
        /// What it requires.
        requirement: String,
        /// What is missing.
        problem: String,
    },
    /// A recipe needs packages its stack's build image does not install.
    #[error("{}: {runtime} needs {} in the build image, which stack `{stack}` does not install", file.display(), missing.join(", "))]
    MissingStackPackages {
        /// The recipe's version file.
        file: std::path::PathBuf,
        /// `runtime version`.
        runtime: String,
        /// The stack.
        stack: String,
        /// The packages it lacks.
        missing: Vec<String>,
    },
    /// Runtimes require each other in a circle.
    #[error("dependency cycle: {0}")]
    Cycle(String),
}

impl PlanError {
    /// Whether the selection, a recipe or a stack is wrong (not the store failing).
    pub fn is_usage(&self) -> bool {
        match self {
            PlanError::Recipe(e) => e.is_usage(),
            PlanError::Stack(e) => e.is_usage(),
            PlanError::Store(e) => e.is_usage(),
            PlanError::Selector(_)
            | PlanError::MissingRequirement { .. }
            | PlanError::MissingStackPackages { .. }
            | PlanError::Cycle(_) => true,
        }
    }

    /// What the user can do, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            PlanError::Recipe(e) => e.hint(),
            PlanError::Stack(e) => e.hint(),
            PlanError::Store(e) => e.hint(),
            PlanError::Selector(_) => Some(
                "select work as `RUNTIME [VERSION|REQ]…` (several allowed: `mono 3.2.8 lua '^5.4'`) or `--all`".into(),
            ),
            PlanError::MissingRequirement { .. } => {
                Some("add the required version's recipe, or change `requires`".into())
            }
            PlanError::Cycle(_) => Some("remove one of the `requires` in the circle".into()),
            PlanError::MissingStackPackages { stack, .. } => Some(format!(
                "add them to `[bootstrap] packages` of recipes/stacks/{stack}/stack.toml, or build on a stack that has them (`stack = \"…\"`)"
            )),
        }
    }
}

/// What a job will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Build it.
    Build,
    /// Published with the same key: nothing to do.
    Skip,
    /// Published with another key: refusing to replace it silently.
    Conflict,
    /// Cannot be built because a dependency cannot.
    Blocked,
    /// The recipe or its stack is not built for the job's architecture.
    Unsupported,
}

impl Status {
    /// The status as printed.
    pub fn name(self) -> &'static str {
        match self {
            Status::Build => "build",
            Status::Skip => "skip",
            Status::Conflict => "conflict",
            Status::Blocked => "blocked",
            Status::Unsupported => "unsupported",
        }
    }
}

/// One runtime version to build (or not). It serialises as `--json` prints it: `runtime`,
/// `version`, `stack`, `artifact`, `key`, `status`, `reason`, `selected` and `requires` (the
/// names of the jobs it is built against).
#[derive(Debug, Clone)]
pub struct Job {
    /// The recipe, templated for this machine.
    pub recipe: Recipe,
    /// The build key.
    pub key: BuildKey,
    /// Indices (into [`Plan::jobs`]) of the jobs this one is built against.
    pub deps: Vec<usize>,
    /// The names (`runtime version`) of those jobs.
    pub requires: Vec<String>,
    /// What will happen.
    pub status: Status,
    /// Why the status: what is published under that name and with which key, or what blocks it.
    pub reason: String,
    /// Whether a selector picked it (rather than being needed by another job).
    pub selected: bool,
}

impl Job {
    /// `runtime version`, with the architecture for any but amd64 (`lua 5.4.4 arm64`).
    pub fn name(&self) -> String {
        job_name(&self.recipe)
    }
}

/// See [`Recipe::job_name`].
fn job_name(recipe: &Recipe) -> String {
    recipe.job_name()
}

impl Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Fields in alphabetical order, as the JSON has always had them.
        #[derive(Serialize)]
        struct View<'a> {
            arch: Arch,
            artifact: &'a str,
            key: &'a BuildKey,
            reason: &'a str,
            requires: &'a [String],
            runtime: &'a str,
            selected: bool,
            stack: &'a str,
            status: Status,
            version: String,
        }
        View {
            arch: self.recipe.arch,
            artifact: &self.recipe.artifact,
            key: &self.key,
            reason: &self.reason,
            requires: &self.requires,
            runtime: self.recipe.runtime.as_str(),
            selected: self.selected,
            stack: &self.recipe.stack,
            status: self.status,
            version: self.recipe.version.to_string(),
        }
        .serialize(serializer)
    }
}

/// The jobs, dependencies first. Serialises as `{"jobs": [...]}` (see [`Job`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Every job, in an order where each job comes after the jobs it is built against.
    pub jobs: Vec<Job>,
}

impl Plan {
    /// The jobs to build, as a GitHub Actions matrix (`strategy.matrix` from `fromJSON`).
    pub fn github_matrix(&self) -> GithubMatrix {
        GithubMatrix {
            include: self
                .jobs
                .iter()
                .filter(|j| j.status == Status::Build)
                .map(|j| MatrixJob {
                    arch: j.recipe.arch,
                    runs_on: runner(j.recipe.arch).to_string(),
                    runtime: j.recipe.runtime.to_string(),
                    stack: j.recipe.stack.to_string(),
                    version: j.recipe.version.to_string(),
                })
                .collect(),
        }
    }
}

/// A GitHub Actions matrix: one entry per job to build, each run as
/// `packager build RUNTIME VERSION` on its own runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GithubMatrix {
    /// The jobs.
    pub include: Vec<MatrixJob>,
}

/// The GitHub-hosted runner of an architecture.
fn runner(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "ubuntu-24.04",
        Arch::Arm64 => "ubuntu-24.04-arm",
    }
}

/// One job of a [`GithubMatrix`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixJob {
    /// The architecture, for `packager build … --arch`.
    pub arch: Arch,
    /// A GitHub runner of that architecture (`runs-on: ${{ matrix.runs-on }}`).
    #[serde(rename = "runs-on")]
    pub runs_on: String,
    /// The runtime.
    pub runtime: String,
    /// The stack it builds on.
    pub stack: String,
    /// The version.
    pub version: String,
}

/// How to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Rebuild even what is published with the same key; replace conflicting artifacts.
    pub force: bool,
    /// `{jobs}` for the recipes the jobs build with.
    pub jobs: usize,
    /// The artifacts' entry mtime (`SOURCE_DATE_EPOCH`): it changes their bytes, so it is part
    /// of the key.
    pub source_date_epoch: u64,
    /// The architectures to build each selected version for; empty means this host's.
    pub arches: Vec<Arch>,
}

/// A selection: a runtime and its versions or requirements (none: every version), or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every version of every runtime.
    All,
    /// Some versions of one runtime.
    Runtime {
        /// The runtime.
        runtime: String,
        /// Versions or requirements; empty means every version.
        versions: Vec<String>,
    },
}

/// Reads `RUNTIME [VERSION|REQ]… [RUNTIME [VERSION|REQ]…]…`: a word that names a runtime of the
/// catalogue starts a new selector; anything else is a version or requirement of the one
/// before.
pub fn parse_selectors(args: &[String], catalogue: &Catalogue) -> Result<Vec<Selector>, PlanError> {
    let mut out: Vec<Selector> = Vec::new();
    for arg in args {
        if catalogue.runtime(arg).is_ok() {
            out.push(Selector::Runtime {
                runtime: arg.clone(),
                versions: Vec::new(),
            });
            continue;
        }
        match out.last_mut() {
            Some(Selector::Runtime { versions, .. }) => versions.push(arg.clone()),
            _ => {
                // Not a version of anything: report it as an unknown runtime.
                catalogue.runtime(arg)?;
                return Err(PlanError::Selector(arg.clone()));
            }
        }
    }
    Ok(out)
}

/// Makes the plan for `selectors` against `store`.
pub async fn plan(
    catalogue: &Catalogue,
    recipes_dir: &Path,
    selectors: &[Selector],
    store: &impl Store,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    // 1. The selected versions, for each architecture.
    let mut wanted: BTreeSet<(String, Version)> = BTreeSet::new();
    for s in selectors {
        match s {
            Selector::All => {
                for rt in catalogue.runtimes() {
                    for (v, _) in &rt.versions {
                        wanted.insert((rt.name.to_string(), v.clone()));
                    }
                }
            }
            Selector::Runtime { runtime, versions } if versions.is_empty() => {
                for v in catalogue.select(runtime, None)? {
                    wanted.insert((runtime.clone(), v));
                }
            }
            Selector::Runtime { runtime, versions } => {
                for sel in versions {
                    for v in catalogue.select(runtime, Some(sel))? {
                        wanted.insert((runtime.clone(), v));
                    }
                }
            }
        }
    }

    let arches = if opts.arches.is_empty() {
        vec![Arch::host()]
    } else {
        opts.arches.clone()
    };
    let wanted: Vec<(String, Version, Arch)> = arches
        .iter()
        .flat_map(|&a| wanted.iter().map(move |(r, v)| (r.clone(), v.clone(), a)))
        .collect();

    // 2. Load them and, transitively, what they require (for the same architecture).
    struct Node {
        recipe: Recipe,
        canon: Recipe,
        selected: bool,
        dep_keys: Vec<(String, Version, Arch)>,
    }
    let mut index: HashMap<(String, Version, Arch), usize> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut queue: Vec<((String, Version, Arch), bool)> =
        wanted.into_iter().map(|k| (k, true)).collect();
    queue.reverse();
    while let Some((key, selected)) = queue.pop() {
        if let Some(&i) = index.get(&key) {
            nodes[i].selected |= selected;
            continue;
        }
        let real = LoadOptions {
            jobs: opts.jobs.max(1),
            arch: key.2,
        };
        let recipe = catalogue.load(&key.0, &key.1, &real)?;
        let canon = catalogue.load(&key.0, &key.1, &canonical_load_options(key.2))?;
        let mut dep_keys = Vec::new();
        for req in &recipe.build.requires {
            let (runtime, version) =
                resolve_requirement(catalogue, &recipe, req.runtime.as_str(), &req.text)?;
            let dep = (runtime, version, key.2);
            if !dep_keys.contains(&dep) {
                dep_keys.push(dep.clone());
            }
            queue.push((dep, false));
        }
        index.insert(key, nodes.len());
        nodes.push(Node {
            recipe,
            canon,
            selected,
            dep_keys,
        });
    }
    let deps: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| n.dep_keys.iter().map(|k| index[k]).collect())
        .collect();

    // 3. Dependencies first; a cycle is an error naming it.
    let order = topological(
        &nodes
            .iter()
            .map(|n| job_name(&n.recipe))
            .collect::<Vec<_>>(),
        &deps,
    )?;

    // 4. Keys, in that order (a key includes its dependencies' keys).
    let mut stacks: BTreeMap<crate::recipe::StackName, stack::Stack> = BTreeMap::new();
    let mut keys: Vec<BuildKey> = vec![BuildKey::default(); nodes.len()];
    // Why a job cannot be built for its architecture (the recipe's or the stack's `arches`).
    let mut unsupported: HashMap<usize, String> = HashMap::new();
    for &i in &order {
        let n = &nodes[i];
        if !stacks.contains_key(&n.recipe.stack) {
            let loaded = stack::load(recipes_dir, &n.recipe.stack)?;
            stacks.insert(n.recipe.stack.clone(), loaded);
        }
        let stack = match stacks[&n.recipe.stack].for_arch(n.recipe.arch) {
            Ok(s) => s,
            Err(e @ StackError::UnsupportedArch { .. }) => {
                unsupported.insert(i, e.to_string());
                stacks[&n.recipe.stack].clone()
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(arches) = &n.recipe.arches
            && !arches.contains(&n.recipe.arch)
        {
            unsupported.entry(i).or_insert_with(|| {
                format!(
                    "the recipe's `arches` ({}) leave out {}",
                    arches
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    n.recipe.arch
                )
            });
        }
        check_stack_packages(&n.recipe, &stack)?;
        let stack_hash = stack.hash.clone();
        let dep_keys: Vec<&BuildKey> = deps[i].iter().map(|&d| &keys[d]).collect();
        keys[i] = build_key(&n.canon, &stack_hash, opts.source_date_epoch, &dep_keys);
    }

    // 5. What the store has (looked up concurrently).
    let lookups: Vec<_> = futures_util::stream::iter(order.iter().map(|&i| {
        let r = &nodes[i].recipe;
        async move { (i, store.lookup(&r.stack, &r.artifact).await) }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let mut stored = HashMap::new();
    for (i, r) in lookups {
        stored.insert(i, r?);
    }

    // 6. Statuses, dependencies first.
    let position: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let mut jobs: Vec<Job> = Vec::with_capacity(order.len());
    for &i in &order {
        let n = &nodes[i];
        let key = keys[i].clone();
        let my_deps: Vec<usize> = deps[i].iter().map(|d| position[d]).collect();
        let bad_dep = my_deps.iter().map(|&p| &jobs[p]).find(|j: &&Job| {
            matches!(
                j.status,
                Status::Conflict | Status::Blocked | Status::Unsupported
            )
        });
        let (status, reason) = if let Some(why) = unsupported.get(&i) {
            (Status::Unsupported, why.clone())
        } else if let Some(d) = bad_dep {
            (
                Status::Blocked,
                format!("{} is {}", d.name(), d.status.name()),
            )
        } else {
            match &stored[&i] {
                None if n.recipe.revision > 0 => (
                    Status::Build,
                    format!("revision bumped to {}", n.recipe.revision),
                ),
                None => (Status::Build, "not published".to_string()),
                Some(s) => match s.metadata.get(KEY_METADATA) {
                    Some(k) if key == *k.as_str() && opts.force => {
                        (Status::Build, "forced".to_string())
                    }
                    Some(k) if key == *k.as_str() => {
                        (Status::Skip, "published with the same key".to_string())
                    }
                    other if opts.force => (
                        Status::Build,
                        format!(
                            "forced: replaces the artifact built with {}",
                            other.map_or("no key".to_string(), |k| format!("key {}", short_key(k)))
                        ),
                    ),
                    other => (
                        Status::Conflict,
                        format!(
                            "published with {}; bump `revision` in the recipe or pass --force",
                            other.map_or("no build key".to_string(), |k| format!(
                                "key {}",
                                short_key(k)
                            ))
                        ),
                    ),
                },
            }
        };
        let requires = my_deps.iter().map(|&p| jobs[p].name()).collect();
        jobs.push(Job {
            recipe: n.recipe.clone(),
            key,
            deps: my_deps,
            requires,
            status,
            reason,
            selected: n.selected,
        });
    }
    Ok(Plan { jobs })
}

/// The first 12 hex digits of a key.
pub fn short_key(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// A job's build key, from its recipe as [`canonical_load_options`] loads it.
pub fn build_key(
    canonical: &Recipe,
    stack_hash: &str,
    source_date_epoch: u64,
    dep_keys: &[&BuildKey],
) -> BuildKey {
    let mut h = sha2::Sha256::new();
    let mut field = |name: &str, value: &str| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_le_bytes());
        h.update(value.as_bytes());
    };
    field("format", &ARTIFACT_FORMAT_VERSION.to_string());
    field("recipe", &canonical.to_toml());
    field("stack", stack_hash);
    field("source-date-epoch", &source_date_epoch.to_string());
    field("source", &canonical.source.checksum.to_string());
    for r in &canonical.resources {
        field("resource", &r.checksum.to_string());
    }
    let mut sorted = dep_keys.to_vec();
    sorted.sort();
    for k in sorted {
        field("requires", k.as_str());
    }
    BuildKey(hex::encode(h.finalize()))
}

/// Orders nodes so that each comes after its dependencies (otherwise in input order); a cycle
/// is an error that names it.
fn topological(names: &[String], deps: &[Vec<usize>]) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        names: &[String],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) -> Result<(), PlanError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let from = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle: Vec<&str> =
                    path[from..].iter().map(|&p| names[p].as_str()).collect();
                cycle.push(&names[i]);
                return Err(PlanError::Cycle(cycle.join(" → ")));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        path.push(i);
        for &d in &deps[i] {
            visit(d, deps, names, marks, path, out)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        out.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; names.len()];
    let mut out = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        visit(i, deps, names, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// The version a `requires` entry picks: the highest of those the same words pick on the
/// command line ([`Catalogue::select`]): a bare version is that version exactly, a range is
/// the highest version in it.
fn resolve_requirement(
    catalogue: &Catalogue,
    recipe: &Recipe,
    runtime: &str,
    text: &str,
) -> Result<(String, Version), PlanError> {
    let file = recipe.files.last().cloned().unwrap_or_default();
    let entry = catalogue
        .runtime(runtime)
        .map_err(|_| PlanError::MissingRequirement {
            file: file.clone(),
            requirement: text.to_string(),
            problem: format!("there is no runtime `{runtime}`"),
        })?;
    let wanted = text
        .split_once(char::is_whitespace)
        .map_or("", |(_, v)| v.trim());
    catalogue
        .select(runtime, Some(wanted))
        .ok()
        .and_then(|picked| picked.into_iter().max())
        .map(|v| (runtime.to_string(), v))
        .ok_or_else(|| PlanError::MissingRequirement {
            file,
            requirement: text.to_string(),
            problem: format!(
                "no version of {runtime} matches (there are: {})",
                entry
                    .versions
                    .iter()
                    .map(|(v, _)| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Fails when `recipe` names `stack_packages` that its stack's bootstrapped build image does not
/// install (or has patches and no `patch`). A stack from a Dockerfile or a prebuilt image cannot be checked ahead and passes.
fn check_stack_packages(recipe: &Recipe, stack: &stack::Stack) -> Result<(), PlanError> {
    let Some(bootstrap) = &stack.manifest.bootstrap else {
        return Ok(());
    };
    // Patch resources are applied with `patch`.
    let patches = recipe.resources.iter().any(|r| r.patch.is_some());
    let missing: Vec<String> = recipe
        .build
        .stack_packages
        .iter()
        .map(String::as_str)
        .chain(patches.then_some("patch"))
        .filter(|p| !bootstrap.packages.iter().any(|have| have == p))
        .map(String::from)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PlanError::MissingStackPackages {
        file: recipe.files.last().cloned().unwrap_or_default(),
        runtime: format!("{} {}", recipe.runtime, recipe.version),
        stack: stack.name.clone(),
        missing,
    })
}
