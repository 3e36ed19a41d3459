//! Reading one version's recipe from its files: each file parsed on its own into a layer (so
//! every error names its file and line), the version layer laid over the runtime layer,
//! everything checked and every template expanded.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::checksum::{Algo, Checksum};
use crate::package::{ArtifactFormat, DEFAULT_ZSTD_LEVEL, ZSTD_LEVELS};
use crate::version::Version;

use super::model::{
    Build, Limits, LoadOptions, PHASES, Recipe, Requirement, Resource, Source, Test, parse_memory,
    parse_size, parse_timeout, url_file_name,
};
use super::network::{HostPattern, Network};
use super::source::{Location, parse_toml};
use super::{
    APP_DIR, DEFAULT_ARTIFACT, DEFAULT_PREFIX, DEFAULT_REVISED_ARTIFACT, DEFAULT_STACK,
    RecipeError, RuntimeName, template,
};

// ---------------------------------------------------------------------------------------------
// Layers: one file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    description: Option<Spanned<String>>,
    stack: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    prefix_outside_app: Option<bool>,
    artifact: Option<Spanned<String>>,
    format: Option<Spanned<ArtifactFormat>>,
    zstd_level: Option<Spanned<i64>>,
    revision: Option<u32>,
    arches: Option<Vec<crate::arch::Arch>>,
    source: Option<SourceLayer>,
    resources: Option<Vec<ResourceLayer>>,
    build: Option<BuildLayer>,
    test: Option<TestLayer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceLayer {
    url: Option<Spanned<String>>,
    mirrors: Option<Vec<Spanned<String>>>,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
    strip_components: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceLayer {
    url: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
    #[serde(default)]
    unpack: bool,
    strip_components: Option<u32>,
    patch: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildLayer {
    env: Option<BTreeMap<String, Spanned<String>>>,
    configure: Option<Vec<Spanned<String>>>,
    build: Option<Vec<Spanned<String>>>,
    install: Option<Vec<Spanned<String>>>,
    requires: Option<Vec<Spanned<String>>>,
    network: Option<Spanned<NetworkLayer>>,
    include_requires: Option<bool>,
    stack_packages: Option<Vec<Spanned<String>>>,
    memory: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    pids: Option<Spanned<i64>>,
    root: Option<Spanned<RootLayer>>,
    max_unpacked_size: Option<Spanned<String>>,
    max_unpacked_entries: Option<Spanned<i64>>,
    compiler_cache: Option<bool>,
    timeout: Option<Spanned<String>>,
}

/// `network = true` (any public host) or `network = ["host", …]` (those hosts).
#[derive(Debug)]
enum NetworkLayer {
    All(bool),
    Hosts(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for NetworkLayer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NetworkLayer;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a list of host names")
            }
            fn visit_bool<E>(self, v: bool) -> Result<NetworkLayer, E> {
                Ok(NetworkLayer::All(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NetworkLayer, A::Error> {
                let mut hosts = Vec::new();
                while let Some(host) = seq.next_element()? {
                    hosts.push(host);
                }
                Ok(NetworkLayer::Hosts(hosts))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `root = true` (every phase) or `root = ["install"]` (those phases).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RootLayer {
    All(bool),
    Phases(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestLayer {
    commands: Option<Vec<Spanned<String>>>,
    allow_missing: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
}

/// A recipe file's text, kept to turn byte spans into line numbers.
#[derive(Debug)]
struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    fn line_of(&self, offset: usize) -> usize {
        Location::of(&self.text, offset).line
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.clone(),
            line: self.line_of(span.start),
            message: message.into(),
            hint: None,
        }
    }

    fn parse(&self) -> Result<Layer, RecipeError> {
        parse_toml::<Layer>(&self.text).map_err(|e| {
            let hint = e
                .message
                .contains("unknown field")
                .then(|| "see the recipe format in recipes/README.md".to_string());
            RecipeError::Invalid {
                path: self.path.clone(),
                line: e.location.line,
                message: e.message,
                hint,
            }
        })
    }
}

/// A value together with the file it came from.
struct At<'a, T> {
    file: &'a SourceFile,
    value: Spanned<T>,
}

fn at<T>(file: &SourceFile, value: Option<Spanned<T>>) -> Option<At<'_, T>> {
    value.map(|value| At { file, value })
}

/// The checksum keys of one table, checked: at most one, valid hex of the right length.
fn checksum_of<'a>(
    file: &'a SourceFile,
    table: &str,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    sha1: Option<Spanned<String>>,
) -> Result<Option<(Checksum, usize, &'a SourceFile)>, RecipeError> {
    let given: Vec<(Algo, Spanned<String>)> = [
        (Algo::Sha256, sha256),
        (Algo::Sha512, sha512),
        (Algo::Sha1, sha1),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.map(|v| (a, v)))
    .collect();
    match given.as_slice() {
        [] => Ok(None),
        [(algo, value)] => Checksum::new(*algo, value.get_ref())
            .map(|c| Some((c, file.line_of(value.span().start), file)))
            .map_err(|e| file.error(value.span(), e.to_string())),
        [_, (_, second), ..] => Err(file.error(
            second.span(),
            format!(
                "{table} has more than one checksum; give exactly one of sha256, sha512 or sha1"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Merging and templating.

fn merge_opt<'a, T>(over: Option<At<'a, T>>, base: Option<At<'a, T>>) -> Option<At<'a, T>> {
    over.or(base)
}

/// A list of templated strings with their file.
struct AtList<'a> {
    file: &'a SourceFile,
    items: Vec<Spanned<String>>,
}

fn list_at(file: &SourceFile, items: Option<Vec<Spanned<String>>>) -> Option<AtList<'_>> {
    items.map(|items| AtList { file, items })
}

struct Templater {
    vars: BTreeMap<&'static str, String>,
}

impl Templater {
    fn one(&self, file: &SourceFile, v: &Spanned<String>) -> Result<String, RecipeError> {
        template::expand(v.get_ref(), &self.vars).map_err(|e| file.error(v.span(), e.to_string()))
    }

    fn at(&self, v: &At<'_, String>) -> Result<String, RecipeError> {
        self.one(v.file, &v.value)
    }

    fn list(&self, l: Option<&AtList<'_>>, default: &[&str]) -> Result<Vec<String>, RecipeError> {
        match l {
            Some(l) => l.items.iter().map(|s| self.one(l.file, s)).collect(),
            None => Ok(default
                .iter()
                .map(|d| template::expand(d, &self.vars).expect("default templates are valid"))
                .collect()),
        }
    }
}

fn read_source(path: &Path) -> Result<SourceFile, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        text,
    })
}

/// A `[[resources]] path` resolved, with its `file://` URL: a file kept with the recipes, next
/// to the file that names it (the target's folder when that file is a symbolic link, so an
/// overlay that links a shipped `runtime.toml` finds the shipped files).
fn local_resource(
    file: &SourceFile,
    value: &Spanned<String>,
    path: &str,
) -> Result<(String, PathBuf), RecipeError> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(file.error(
            value.span(),
            format!("resource path `{path}` must be a relative path below the recipe's folder"),
        ));
    }
    let real = std::fs::canonicalize(&file.path).map_err(|e| {
        file.error(
            value.span(),
            format!("cannot resolve {}: {e}", file.path.display()),
        )
    })?;
    let full = real
        .parent()
        .expect("a recipe file is in a folder")
        .join(path);
    if !full.is_file() {
        let mut e = file.error(
            value.span(),
            format!("resource file {} does not exist", full.display()),
        );
        if let RecipeError::Invalid { hint, .. } = &mut e {
            *hint = Some(format!(
                "a `path` is relative to the folder of {}",
                real.display()
            ));
        }
        return Err(e);
    }
    url::Url::from_file_path(&full)
        .map(|u| (String::from(u), full.clone()))
        .map_err(|()| {
            file.error(
                value.span(),
                format!("{} is not an absolute path", full.display()),
            )
        })
}

/// Checks every template in a layer, so a bad one is reported against its own file even when
/// another file's value would have been used.
fn check_layer_templates(file: &SourceFile, layer: &Layer) -> Result<(), RecipeError> {
    let mut all: Vec<&Spanned<String>> = Vec::new();
    all.extend(layer.artifact.iter());
    if let Some(s) = &layer.source {
        all.extend(s.url.iter());
        all.extend(s.mirrors.iter().flatten());
    }
    for r in layer.resources.iter().flatten() {
        all.extend(r.url.iter());
        all.extend(r.path.iter());
        all.extend(r.mirrors.iter());
        all.extend(r.dest.iter());
    }
    if let Some(b) = &layer.build {
        all.extend(b.env.iter().flat_map(|e| e.values()));
        for list in [
            &b.configure,
            &b.build,
            &b.install,
            &b.requires,
            &b.stack_packages,
        ] {
            all.extend(list.iter().flatten());
        }
    }
    if let Some(t) = &layer.test {
        all.extend(t.commands.iter().flatten());
        all.extend(t.allow_missing.iter().flatten());
    }
    for s in all {
        template::check(s.get_ref()).map_err(|e| file.error(s.span(), e.to_string()))?;
    }
    if let Some(p) = &layer.prefix {
        let v = p.get_ref();
        if !v.starts_with('/') || v.contains(['{', '}']) || v.split('/').any(|c| c == "..") {
            return Err(file.error(
                p.span(),
                format!("prefix `{v}` must be an absolute path without templates or `..`"),
            ));
        }
        if v.trim_end_matches('/').is_empty() {
            return Err(file.error(
                p.span(),
                "prefix `/` would install the runtime over the whole file system",
            ));
        }
        if let Some(dir) = system_dir(v) {
            return Err(file.error(
                p.span(),
                format!(
                    "prefix `{v}` is in `{dir}`, the image's own files: the artifact would be unpacked over them, and over the tools the linkage gate runs"
                ),
            ));
        }
    }
    Ok(())
}

/// The image's own folders: a prefix in one would be a volume over the image's files (or
/// inside one), where the artifact is unpacked as root, over `/etc/ld.so.preload` or
/// `/sbin/ldconfig`. `/usr/local` is free.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/usr", "/var",
];

/// The system folder (see [`SYSTEM_DIRS`]) `prefix` is or is in, if any.
fn system_dir(prefix: &str) -> Option<&'static str> {
    let path = std::path::Path::new(prefix);
    if path.starts_with("/usr/local") {
        return None;
    }
    SYSTEM_DIRS.iter().copied().find(|d| path.starts_with(d))
}

/// Loads, merges and templates one version's recipe from its files.
pub fn load(
    runtime: &RuntimeName,
    version: &Version,
    runtime_file: Option<&Path>,
    version_file: &Path,
    opts: &LoadOptions,
) -> Result<Recipe, RecipeError> {
    let base_file = runtime_file.map(read_source).transpose()?;
    let over_file = read_source(version_file)?;
    let base = match &base_file {
        Some(f) => {
            let l = f.parse()?;
            check_layer_templates(f, &l)?;
            l
        }
        None => Layer::default(),
    };
    let over = over_file.parse()?;
    check_layer_templates(&over_file, &over)?;
    let base_f = base_file.as_ref().unwrap_or(&over_file);
    let over_f = &over_file;
    let mut warnings = Vec::new();

    let stack = merge_opt(at(over_f, over.stack), at(base_f, base.stack));
    let prefix = merge_opt(at(over_f, over.prefix), at(base_f, base.prefix));
    let artifact = merge_opt(at(over_f, over.artifact), at(base_f, base.artifact));
    let description = merge_opt(at(over_f, over.description), at(base_f, base.description));

    let revision = over.revision.or(base.revision).unwrap_or(0);
    let arches = over.arches.clone().or_else(|| base.arches.clone());
    let stack_name = stack
        .as_ref()
        .map_or(DEFAULT_STACK.to_string(), |s| s.value.get_ref().clone());
    let prefix_value = prefix.as_ref().map_or_else(
        || DEFAULT_PREFIX.replace("{runtime}", runtime.as_str()),
        |p| p.value.get_ref().trim_end_matches('/').to_string(),
    );
    let prefix_outside_app = over
        .prefix_outside_app
        .or(base.prefix_outside_app)
        .unwrap_or(false);
    if let Some(p) = &prefix
        && !prefix_outside_app
        && !prefix_value.starts_with(&format!("{APP_DIR}/"))
    {
        let mut e = p.file.error(
            p.value.span(),
            if prefix_value == APP_DIR {
                format!(
                    "prefix `{APP_DIR}` installs the runtime at the root of the app, over the app's own `bin/`"
                )
            } else {
                format!("prefix `{prefix_value}` is outside {APP_DIR}, where a dyno runs the app")
            },
        );
        if let RecipeError::Invalid { hint, .. } = &mut e {
            *hint = Some(format!(
                "give the runtime a folder of its own such as `{}`, or set `prefix_outside_app = true` if it really belongs there",
                DEFAULT_PREFIX.replace("{runtime}", runtime.as_str())
            ));
        }
        return Err(e);
    }
    let vars = [
        ("runtime", runtime.to_string()),
        ("version", version.to_string()),
        ("major", version.major().to_string()),
        ("minor", version.minor().to_string()),
        ("patch", version.patch().to_string()),
        ("prefix", prefix_value.clone()),
        ("stack", stack_name.clone()),
        ("jobs", opts.jobs.to_string()),
        ("arch", opts.arch.to_string()),
        ("revision", revision.to_string()),
    ]
    .into_iter()
    .collect();
    let t = Templater { vars };

    // [source]
    let (bs, os) = (
        base.source.unwrap_or_default(),
        over.source.unwrap_or_default(),
    );
    let base_sum = checksum_of(base_f, "[source]", bs.sha256, bs.sha512, bs.sha1)?;
    let over_sum = checksum_of(over_f, "[source]", os.sha256, os.sha512, os.sha1)?;
    let url =
        merge_opt(at(over_f, os.url), at(base_f, bs.url)).ok_or_else(|| RecipeError::Invalid {
            path: over_file.path.clone(),
            line: 1,
            message: "no [source] url in this file or in runtime.toml".into(),
            hint: Some(
                "add `url = \"https://…/{runtime}-{version}.tar.gz\"` under [source]".into(),
            ),
        })?;
    let (checksum, sum_line, sum_file) =
        over_sum.or(base_sum).ok_or_else(|| RecipeError::Invalid {
            path: over_file.path.clone(),
            line: url.file.line_of(url.value.span().start),
            message: "[source] has no checksum".into(),
            hint: Some(
                "add `sha256 = \"…\"` from an authoritative source (the project's SHA file or a packaging project); `packager checksum URL` computes one to compare with"
                    .into(),
            ),
        })?;
    if checksum.algo().is_weak() {
        warnings.push(format!(
            "{}:{sum_line}: the source is pinned by sha1, which is weak; prefer sha256 where an authoritative one exists",
            sum_file.path.display()
        ));
    }
    let mirrors = merge_opt_list(list_at(over_f, os.mirrors), list_at(base_f, bs.mirrors));
    let source = Source {
        url: t.at(&url)?,
        mirrors: t.list(mirrors.as_ref(), &[])?,
        checksum,
        strip_components: os.strip_components.or(bs.strip_components).unwrap_or(1),
    };

    // [[resources]] (an array: replaced as a whole)
    let (res_file, res) = match (over.resources, base.resources) {
        (Some(r), _) => (over_f, r),
        (None, Some(r)) => (base_f, r),
        (None, None) => (over_f, Vec::new()),
    };
    let mut resources = Vec::new();
    for r in res {
        let url_span = match (&r.url, &r.path) {
            (Some(u), None) => u.span(),
            (None, Some(p)) => p.span(),
            (Some(_), Some(p)) => {
                return Err(res_file.error(
                    p.span(),
                    "a resource has either a `url` or a `path`, not both",
                ));
            }
            (None, None) => {
                // The entry's line: that of any key it has.
                let near = [&r.sha256, &r.sha512, &r.sha1, &r.dest]
                    .into_iter()
                    .flatten()
                    .map(Spanned::span)
                    .next()
                    .unwrap_or(0..0);
                return Err(res_file.error(
                    near,
                    "a [[resources]] entry needs a `url` (a download) or a `path` (a file next to the recipe)",
                ));
            }
        };
        let (checksum, _, _) = checksum_of(res_file, "[[resources]]", r.sha256, r.sha512, r.sha1)?
            .ok_or_else(|| res_file.error(url_span.clone(), "resource has no checksum"))?;
        if checksum.algo().is_weak() {
            warnings.push(format!(
                "{}:{}: a resource is pinned by sha1, which is weak",
                res_file.path.display(),
                res_file.line_of(url_span.start)
            ));
        }
        if r.patch.is_some() && r.unpack {
            return Err(res_file.error(
                url_span,
                "a resource is either a patch (`patch`) or an archive (`unpack`), not both",
            ));
        }
        let (url, local) = match (&r.url, &r.path) {
            (Some(u), _) => (t.one(res_file, u)?, None),
            (None, Some(p)) => {
                let (url, path) = local_resource(res_file, p, &t.one(res_file, p)?)?;
                (url, Some(path))
            }
            (None, None) => unreachable!("checked above"),
        };
        let dest = match &r.dest {
            Some(d) => t.one(res_file, d)?,
            None if r.unpack => String::new(),
            None => url_file_name(&url).to_string(),
        };
        if dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
            return Err(res_file.error(
                r.dest.as_ref().map_or(url_span, Spanned::span),
                format!("resource dest `{dest}` must be a relative path inside the source tree"),
            ));
        }
        resources.push(Resource {
            url,
            local,
            mirrors: r
                .mirrors
                .iter()
                .map(|m| t.one(res_file, m))
                .collect::<Result<_, _>>()?,
            checksum,
            dest,
            unpack: r.unpack,
            patch: r.patch,
            strip_components: r.strip_components.unwrap_or(if r.unpack { 1 } else { 0 }),
        });
    }

    // [build]
    let (bb, ob) = (
        base.build.unwrap_or_default(),
        over.build.unwrap_or_default(),
    );
    let mut limits = build_limits(base_f, &bb, over_f, &ob)?;
    // Timeouts, the version file's winning: each phase's, and the test step's.
    let (bt_timeout, ot_timeout) = (
        base.test.as_ref().and_then(|t| t.timeout.clone()),
        over.test.as_ref().and_then(|t| t.timeout.clone()),
    );
    for (file, layer, test) in [(base_f, &bb, &bt_timeout), (over_f, &ob, &ot_timeout)] {
        if let Some(t) = &layer.timeout {
            limits.timeout = Some(parse_timeout(t.get_ref()).map_err(|e| file.error(t.span(), e))?);
        }
        if let Some(t) = test {
            limits.test_timeout =
                Some(parse_timeout(t.get_ref()).map_err(|e| file.error(t.span(), e))?);
        }
    }
    let mut max_unpacked_size = None;
    for (file, layer) in [(base_f, &bb), (over_f, &ob)] {
        if let Some(m) = &layer.max_unpacked_size {
            max_unpacked_size = Some(parse_size(m.get_ref()).map_err(|e| file.error(m.span(), e))?);
        }
    }
    let mut max_unpacked_entries = None;
    for (file, layer) in [(base_f, &bb), (over_f, &ob)] {
        if let Some(m) = &layer.max_unpacked_entries {
            let entries = *m.get_ref();
            if entries < 1 {
                return Err(file.error(
                    m.span(),
                    format!("max_unpacked_entries = {entries}: expected 1 or more"),
                ));
            }
            max_unpacked_entries = Some(entries as u64);
        }
    }
    // `[build.env]` is a table: merged key by key, the version file winning.
    let mut env_values = BTreeMap::new();
    for (file, table) in [(base_f, &bb.env), (over_f, &ob.env)] {
        for (k, v) in table.iter().flatten() {
            if k.is_empty() || k.contains('=') || k.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(file.error(
                    v.span(),
                    format!("`{k}` is not an environment variable name"),
                ));
            }
            env_values.insert(k.clone(), t.one(file, v)?);
        }
    }
    let configure = merge_opt_list(list_at(over_f, ob.configure), list_at(base_f, bb.configure));
    let build_cmds = merge_opt_list(list_at(over_f, ob.build), list_at(base_f, bb.build));
    let install = merge_opt_list(list_at(over_f, ob.install), list_at(base_f, bb.install));
    let requires_list = merge_opt_list(list_at(over_f, ob.requires), list_at(base_f, bb.requires));
    let mut requires = Vec::new();
    if let Some(l) = &requires_list {
        for item in &l.items {
            let text = t.one(l.file, item)?;
            let req: Requirement = text
                .parse()
                .map_err(|e: String| l.file.error(item.span(), e))?;
            if &req.runtime == runtime {
                return Err(l
                    .file
                    .error(item.span(), format!("{runtime} cannot require itself")));
            }
            requires.push(req);
        }
    }
    // Patches are applied first, in order, as the configure phase's first commands: a patch
    // that does not apply fails `configure`, naming its file.
    let mut configure_cmds: Vec<String> = resources
        .iter()
        .filter_map(|r| {
            r.patch
                .map(|n| format!("patch -p{n} --forward --batch --input={}", r.dest))
        })
        .collect();
    configure_cmds.extend(t.list(configure.as_ref(), &["./configure --prefix={prefix}"])?);
    let packages = merge_opt_list(
        list_at(over_f, ob.stack_packages),
        list_at(base_f, bb.stack_packages),
    );
    let build = Build {
        env: env_values,
        configure: configure_cmds,
        build: t.list(build_cmds.as_ref(), &["make -j{jobs}"])?,
        install: t.list(install.as_ref(), &["make install"])?,
        requires,
        network: network_policy(base_f, bb.network, over_f, ob.network)?,
        include_requires: ob.include_requires.or(bb.include_requires).unwrap_or(false),
        stack_packages: t.list(packages.as_ref(), &[])?,
        limits,
        root: root_phases(base_f, bb.root, over_f, ob.root)?,
        max_unpacked_size,
        max_unpacked_entries,
        compiler_cache: ob.compiler_cache.or(bb.compiler_cache).unwrap_or(true),
    };

    // [test]
    let (bt, ot) = (base.test.unwrap_or_default(), over.test.unwrap_or_default());
    let tests = merge_opt_list(list_at(over_f, ot.commands), list_at(base_f, bt.commands));
    let allow = merge_opt_list(
        list_at(over_f, ot.allow_missing),
        list_at(base_f, bt.allow_missing),
    );
    let test = Test {
        commands: t.list(tests.as_ref(), &[])?,
        allow_missing: t.list(allow.as_ref(), &[])?,
    };

    let format = merge_opt(at(over_f, over.format), at(base_f, base.format));
    let zstd_level = merge_opt(at(over_f, over.zstd_level), at(base_f, base.zstd_level));
    let (format, zstd_level) = artifact_format(format, zstd_level)?;
    let artifact = match &artifact {
        Some(a) => {
            let name = t.at(a)?;
            // A name that says the other format would be served and unpacked as that one.
            if let Some(said) = ArtifactFormat::from_name(&name)
                && said != format
            {
                let mut e = a.file.error(
                    a.value.span(),
                    format!(
                        "artifact name `{name}` ends in {} but the format is {format}",
                        said.extension()
                    ),
                );
                if let RecipeError::Invalid { hint, .. } = &mut e {
                    *hint = Some(format!(
                        "end the name in {} or set `format = \"{said}\"`",
                        format.extension()
                    ));
                }
                return Err(e);
            }
            name
        }
        None => {
            let name = template::expand(
                if revision > 0 {
                    DEFAULT_REVISED_ARTIFACT
                } else {
                    DEFAULT_ARTIFACT
                },
                &t.vars,
            )
            .expect("default template is valid");
            match name.strip_suffix(ArtifactFormat::TarGz.extension()) {
                Some(stem) => format!("{stem}{}", format.extension()),
                None => name,
            }
        }
    };
    // Two architectures never share a name in a store; amd64 names stay what they were.
    let arch_name = opts.arch.as_str();
    let artifact = if opts.arch != crate::arch::Arch::Amd64 && !artifact.contains(arch_name) {
        match ArtifactFormat::from_name(&artifact) {
            Some(f) => {
                let stem = &artifact[..artifact.len() - f.extension().len()];
                format!("{stem}-{arch_name}{}", f.extension())
            }
            None => format!("{artifact}-{arch_name}"),
        }
    } else {
        artifact
    };
    if artifact.is_empty() || artifact.contains('/') || artifact.starts_with('.') {
        return Err(RecipeError::Invalid {
            path: over_file.path.clone(),
            line: 1,
            message: format!("artifact name `{artifact}` must be a plain file name"),
            hint: None,
        });
    }

    let mut files = Vec::new();
    if let Some(f) = &base_file {
        files.push(f.path.clone());
    }
    files.push(over_file.path.clone());
    Ok(Recipe {
        runtime: runtime.clone(),
        version: version.clone(),
        description: description.map(|d| d.value.into_inner()),
        stack: super::StackName::new(stack_name),
        prefix: prefix_value,
        prefix_outside_app,
        revision,
        artifact,
        format,
        zstd_level,
        source,
        resources,
        build,
        test,
        files,
        warnings,
        arch: opts.arch,
        arches,
    })
}

/// `format` and `zstd_level` (each the version file's, else runtime.toml's), checked: the
/// level within zstd's range, and only with the zstd format.
fn artifact_format(
    format: Option<At<'_, ArtifactFormat>>,
    level: Option<At<'_, i64>>,
) -> Result<(ArtifactFormat, u32), RecipeError> {
    let format_value = format
        .as_ref()
        .map_or(ArtifactFormat::default(), |f| *f.value.get_ref());
    let Some(level) = level else {
        return Ok((format_value, DEFAULT_ZSTD_LEVEL));
    };
    let (file, span) = (level.file, level.value.span());
    let value = *level.value.get_ref();
    if format_value != ArtifactFormat::TarZst {
        let mut e = file.error(
            span,
            format!("zstd_level = {value} is set but the artifact format is {format_value}"),
        );
        if let RecipeError::Invalid { hint, .. } = &mut e {
            *hint = Some("add `format = \"tar.zst\"`, or remove zstd_level".into());
        }
        return Err(e);
    }
    match u32::try_from(value) {
        Ok(v) if ZSTD_LEVELS.contains(&v) => Ok((format_value, v)),
        _ => Err(file.error(
            span,
            format!(
                "zstd_level = {value} is out of range: zstd levels are {} to {}",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            ),
        )),
    }
}

fn merge_opt_list<'a>(over: Option<AtList<'a>>, base: Option<AtList<'a>>) -> Option<AtList<'a>> {
    over.or(base)
}

/// The `[build]` limits, the version file's winning key by key.
fn build_limits(
    base_f: &SourceFile,
    bb: &BuildLayer,
    over_f: &SourceFile,
    ob: &BuildLayer,
) -> Result<Limits, RecipeError> {
    let mut limits = Limits::default();
    for (file, layer) in [(base_f, bb), (over_f, ob)] {
        if let Some(m) = &layer.memory {
            limits.memory = Some(parse_memory(m.get_ref()).map_err(|e| file.error(m.span(), e))?);
        }
        if let Some(c) = &layer.cpus {
            let cpus = *c.get_ref();
            if !(cpus.is_finite() && (0.01..=4096.0).contains(&cpus)) {
                return Err(file.error(
                    c.span(),
                    format!("cpus = {cpus} is not a number of CPUs (0.01 or more)"),
                ));
            }
            limits.millicpus = Some((cpus * 1000.0).round() as u64);
        }
        if let Some(p) = &layer.pids {
            let pids = *p.get_ref();
            if pids < 16 {
                return Err(file.error(
                    p.span(),
                    format!("pids = {pids} is too few for a build (16 or more)"),
                ));
            }
            limits.pids = Some(pids as u64);
        }
    }
    Ok(limits)
}

/// `network`: the version file's value replaces the shared one; each host is checked
/// ([`HostPattern::parse`]), an error naming its line.
fn network_policy(
    base_f: &SourceFile,
    base: Option<Spanned<NetworkLayer>>,
    over_f: &SourceFile,
    over: Option<Spanned<NetworkLayer>>,
) -> Result<Network, RecipeError> {
    let (file, layer) = match (over, base) {
        (Some(o), _) => (over_f, o),
        (None, Some(b)) => (base_f, b),
        (None, None) => return Ok(Network::Off),
    };
    let span = layer.span();
    match layer.into_inner() {
        NetworkLayer::Hosts(list) if list.is_empty() => Err(file.error(
            span,
            "`network = []` allows no host: write `network = false` for no network",
        )),
        NetworkLayer::All(true) => Ok(Network::Any),
        NetworkLayer::All(false) => Ok(Network::Off),
        NetworkLayer::Hosts(list) => {
            let mut hosts: Vec<HostPattern> = Vec::new();
            for item in list {
                let host = HostPattern::parse(item.get_ref()).map_err(|e| {
                    let mut e = file.error(item.span(), e);
                    if let RecipeError::Invalid { hint, .. } = &mut e {
                        *hint = Some("`network = true` for any public host, `false` for none, or a list of host names such as [\"static.rust-lang.org\", \"*.example.org\"]".into());
                    }
                    e
                })?;
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
            Ok(Network::Hosts(hosts))
        }
    }
}

/// `root`: the version file's value replaces the shared one.
fn root_phases(
    base_f: &SourceFile,
    base: Option<Spanned<RootLayer>>,
    over_f: &SourceFile,
    over: Option<Spanned<RootLayer>>,
) -> Result<Vec<String>, RecipeError> {
    let (file, layer) = match (over, base) {
        (Some(o), _) => (over_f, o),
        (None, Some(b)) => (base_f, b),
        (None, None) => return Ok(Vec::new()),
    };
    let span = layer.span();
    match layer.into_inner() {
        RootLayer::All(true) => Ok(PHASES.iter().map(|p| p.to_string()).collect()),
        RootLayer::All(false) => Ok(Vec::new()),
        RootLayer::Phases(list) => {
            let mut phases = Vec::new();
            for p in list {
                if !PHASES.contains(&p.as_str()) {
                    return Err(file.error(
                        span.clone(),
                        format!("`{p}` is not a phase (root = true, or a list of configure, build, install)"),
                    ));
                }
                if !phases.contains(&p) {
                    phases.push(p);
                }
            }
            Ok(phases)
        }
    }
}
