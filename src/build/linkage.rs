//! The linkage gate: every ELF file of an artifact must find each library it needs (`DT_NEEDED`)
//! in the run image it will run in, the way the dynamic loader will look for it.
//!
//! The artifact (and each runtime it requires) is read on the host: [`scan`] finds the ELF
//! files by their magic bytes (never by name, so a script named `*.so` or a shebang script is
//! no ELF file), and reads their needed libraries, `RPATH`, `RUNPATH`, `SONAME` and interpreter.
//! Symlinks are followed inside the tree, so a dangling link or a link to a text file provides
//! nothing. What the run image holds is asked of a container of that image by [`Probe`]: its
//! machine, its loader cache (`ldconfig -p`) and, for candidate paths outside the trees, whether
//! an ELF file of which class and machine is there.
//!
//! A needed library is found, as by glibc's loader, in the object's `RPATH` (when it has no
//! `RUNPATH`) and its executable's, its `RUNPATH`, the loader cache, or the default directories;
//! `$ORIGIN` is the object's own folder. A shared object that is no executable (a Python or Ruby
//! extension module, a plug-in) is loaded into a process of one of the tree's executables, so the
//! libraries those executables load are there for it too (Ruby's extensions need `libruby`, which
//! `bin/ruby` loads).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};

use crate::package::{self, PackageError};

/// The default directories glibc's loader searches after its cache, on a Debian system.
pub const TRUSTED_DIRS: &[&str] = &[
    "/lib/{triplet}",
    "/usr/lib/{triplet}",
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
];

/// What one ELF file says about its linkage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfObject {
    /// Its absolute path where it is unpacked.
    pub path: String,
    /// 64-bit (`ELFCLASS64`).
    pub is_64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `PT_INTERP`: the program interpreter of an executable.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` entries.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries.
    pub runpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
}

impl ElfObject {
    /// Whether the kernel starts it as a program (it has an interpreter), rather than a library
    /// or module something else loads.
    pub fn is_program(&self) -> bool {
        self.interpreter.is_some()
    }

    /// The folder `$ORIGIN` stands for.
    fn origin(&self) -> &str {
        self.path.rsplit_once('/').map_or("/", |(d, _)| d)
    }

    /// Reads an ELF file; `Ok(None)` when `data` is not ELF at all or not something the loader
    /// loads (an object file `.o`, a core dump), `Err` when it starts like one but cannot be
    /// read.
    pub fn parse(path: &str, data: &[u8]) -> Result<Option<ElfObject>, String> {
        if !data.starts_with(&elf::ELFMAG) {
            return Ok(None);
        }
        let parsed = match data.get(4).copied() {
            Some(c) if c == elf::ELFCLASS64.0 => {
                parse_as::<elf::FileHeader64<object::Endianness>>(path, data)
            }
            Some(c) if c == elf::ELFCLASS32.0 => {
                parse_as::<elf::FileHeader32<object::Endianness>>(path, data)
            }
            _ => return Err("unknown ELF class".into()),
        };
        parsed.map_err(|e| e.to_string())
    }
}

fn parse_as<H: FileHeader<Endian = object::Endianness>>(
    path: &str,
    data: &[u8],
) -> object::read::Result<Option<ElfObject>> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let kind = header.e_type(endian);
    if kind != elf::ET_EXEC && kind != elf::ET_DYN {
        return Ok(None);
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut interpreter = None;
    for ph in header.program_headers(endian, data)? {
        if let Some(i) = ph.interpreter(endian, data)? {
            interpreter = Some(text(i));
        }
    }
    let (mut needed, mut rpath, mut runpath, mut soname) = (Vec::new(), vec![], vec![], None);
    let sections = header.sections(endian, data)?;
    if let Some((dyns, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for d in dyns {
            let tag = d.d_tag(endian);
            if tag == elf::DT_NULL {
                break;
            }
            let value = || d.string(endian, strings).map(text);
            if tag == elf::DT_NEEDED {
                needed.push(value()?);
            } else if tag == elf::DT_RPATH {
                rpath.extend(search_path(&value()?));
            } else if tag == elf::DT_RUNPATH {
                runpath.extend(search_path(&value()?));
            } else if tag == elf::DT_SONAME {
                soname = Some(value()?);
            }
        }
    }
    Ok(Some(ElfObject {
        path: path.to_string(),
        is_64: header.is_type_64(),
        machine: header.e_machine(endian).0,
        interpreter,
        needed,
        rpath,
        runpath,
        soname,
    }))
}

/// The folders of a colon-separated `RPATH`/`RUNPATH`.
fn search_path(value: &str) -> impl Iterator<Item = String> + '_ {
    value.split(':').filter(|s| !s.is_empty()).map(String::from)
}

/// The machines the gate knows: `uname -m`, ELF `e_machine`, Debian's multiarch folder.
const MACHINES: &[(&str, u16, &str)] = &[
    ("x86_64", elf::EM_X86_64.0, "x86_64-linux-gnu"),
    ("aarch64", elf::EM_AARCH64.0, "aarch64-linux-gnu"),
    ("i686", elf::EM_386.0, "i386-linux-gnu"),
    ("armv7l", elf::EM_ARM.0, "arm-linux-gnueabihf"),
    ("s390x", elf::EM_S390.0, "s390x-linux-gnu"),
    ("ppc64le", elf::EM_PPC64.0, "powerpc64le-linux-gnu"),
    ("riscv64", elf::EM_RISCV.0, "riscv64-linux-gnu"),
];

/// The loader's default folders for a multiarch triplet.
fn trusted_dirs(triplet: &str) -> Vec<String> {
    TRUSTED_DIRS
        .iter()
        .map(|d| d.replace("{triplet}", triplet))
        .collect()
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    /// A regular file; the index of its [`ElfObject`] when it is one.
    File(Option<usize>),
    Symlink(String),
}

/// The files of one or more artifacts as unpacked, each at its prefix: what the gate checks
/// and what can provide a library from inside the artifacts.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Every ELF file found, by absolute path.
    pub objects: Vec<ElfObject>,
    /// Files that start like ELF but could not be read, with why.
    pub unreadable: Vec<(String, String)>,
    /// The prefixes the artifacts are unpacked at.
    prefixes: Vec<String>,
    /// How many objects belong to the artifact under test (the first added); the others come
    /// from required runtimes and only provide libraries.
    checked: usize,
}

fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str().unwrap_or("")),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    normalize(&format!("{dir}/{name}"))
}

impl Tree {
    /// Adds the artifact at `artifact`, unpacked at `prefix`. The first artifact added is the
    /// one checked; later ones (required runtimes) only provide libraries.
    pub fn add_artifact(&mut self, artifact: &Path, prefix: &str) -> Result<(), PackageError> {
        let read_err = |source| PackageError::ReadArtifact {
            path: artifact.to_owned(),
            source,
        };
        let first = self.prefixes.is_empty();
        self.prefixes.push(normalize(prefix));
        let mut archive = package::open_artifact(artifact)?;
        let mut hard_links = Vec::new();
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let rel = entry.path().map_err(read_err)?.into_owned();
            let path = join(prefix, &rel.to_string_lossy());
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    self.nodes.insert(path, Node::Dir);
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(read_err)?.unwrap_or_default();
                    self.nodes
                        .insert(path, Node::Symlink(target.to_string_lossy().into_owned()));
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(read_err)?.unwrap_or_default();
                    hard_links.push((path, join(prefix, &target.to_string_lossy())));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut magic = [0u8; 4];
                    let n = read_up_to(&mut entry, &mut magic).map_err(read_err)?;
                    let index = if n == 4 && magic == elf::ELFMAG {
                        let mut data = magic.to_vec();
                        entry.read_to_end(&mut data).map_err(read_err)?;
                        match ElfObject::parse(&path, &data) {
                            Ok(Some(o)) => {
                                self.objects.push(o);
                                Some(self.objects.len() - 1)
                            }
                            Ok(None) => None,
                            Err(why) => {
                                self.unreadable.push((path.clone(), why));
                                None
                            }
                        }
                    } else {
                        None
                    };
                    self.nodes.insert(path, Node::File(index));
                }
                _ => {}
            }
        }
        // A hard link is the same file as its target, ELF or not.
        for (path, target) in hard_links {
            if let Some(node) = self.nodes.get(&target).cloned() {
                if let Node::File(Some(i)) = node {
                    let mut o = self.objects[i].clone();
                    o.path = path.clone();
                    self.objects.push(o);
                    self.nodes
                        .insert(path, Node::File(Some(self.objects.len() - 1)));
                } else {
                    self.nodes.insert(path, node);
                }
            }
        }
        if first {
            self.checked = self.objects.len();
        }
        Ok(())
    }

    fn inside(&self, path: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/")))
    }

    /// Follows symlinks, component by component, as far as the tree knows them: the real path.
    fn real_path(&self, path: &str) -> String {
        let mut path = normalize(path);
        for _ in 0..40 {
            let mut changed = false;
            let mut done = String::new();
            let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                let here = format!("{done}/{part}");
                if let Some(Node::Symlink(target)) = self.nodes.get(&here) {
                    let base = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("{done}/{target}")
                    };
                    let rest = parts[i + 1..].join("/");
                    path = normalize(&format!("{base}/{rest}"));
                    changed = true;
                    break;
                }
                done = here;
            }
            if !changed {
                return path;
            }
        }
        path
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What a container of the run image says about itself.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// `uname -m`.
    pub machine: String,
    /// The loader cache: soname → (flags such as `libc6,x86-64`, path).
    pub cache: Vec<(String, String, String)>,
    /// Candidate paths that hold an ELF file: path → (64-bit, e_machine).
    pub files: HashMap<String, (bool, u16)>,
}

/// The folders the probe's programs may come from: the run image's system folders, never an
/// artifact's `bin/` (whose own `ldconfig` or `sed` would decide what the gate sees) and not
/// `/usr/local`, where a prefix's volume may be.
pub const PROBE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables the container's environment may set that change what the probe's programs load
/// or read: they are emptied for the probe's first program, which then clears the rest.
pub const LOADER_VARS: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "GCONV_PATH",
    "LOCPATH",
    "ENV",
];

/// The shell script a [`Probe`] runs (with the candidate paths as its arguments); its output
/// is what [`Probe::parse`] reads. Every program is named by its absolute path in a Debian or
/// Ubuntu image (merged `/usr` or not), so nothing on a `PATH` can stand in for it.
pub const PROBE_SCRIPT: &str = r#"echo "machine $(/bin/uname -m)"
/sbin/ldconfig -p 2>/dev/null | /bin/sed -n 's/^[[:space:]]*\(.*\) (\(.*\)) => \(.*\)$/cache \1|\2|\3/p'
for p in "$@"; do
  if [ -f "$p" ] && [ -r "$p" ]; then echo "file $(/usr/bin/od -An -tx1 -N20 "$p" | /usr/bin/tr -d ' \n') $p"; fi
done
"#;

/// The probe's command line for these candidate paths: [`PROBE_SCRIPT`] run by the image's own
/// `/bin/sh`, started by its own `/usr/bin/env` with nothing of the container's environment
/// (no artifact `PATH`, no `LD_PRELOAD` or `LD_LIBRARY_PATH`) but [`PROBE_PATH`] and the C
/// locale. Run it with [`LOADER_VARS`] (and every variable the container sets) emptied, so that
/// `env` itself starts clean.
pub fn probe_command(candidates: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut argv: Vec<String> = [
        "/usr/bin/env",
        "-i",
        &format!("PATH={PROBE_PATH}"),
        "LC_ALL=C",
        "/bin/sh",
        "-c",
        PROBE_SCRIPT,
        "probe",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(candidates);
    argv
}

impl Probe {
    /// Reads the output of [`PROBE_SCRIPT`].
    pub fn parse(output: &str) -> Probe {
        let mut probe = Probe::default();
        for line in output.lines() {
            if let Some(m) = line.strip_prefix("machine ") {
                probe.machine = m.trim().to_string();
            } else if let Some(c) = line.strip_prefix("cache ") {
                let mut parts = c.splitn(3, '|');
                if let (Some(name), Some(flags), Some(path)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    probe
                        .cache
                        .push((name.to_string(), flags.to_string(), path.to_string()));
                }
            } else if let Some(f) = line.strip_prefix("file ") {
                let Some((hex, path)) = f.split_once(' ') else {
                    continue;
                };
                let Ok(bytes) = hex::decode(hex) else {
                    continue;
                };
                if bytes.len() == 20 && bytes.starts_with(&elf::ELFMAG) {
                    let is_64 = bytes[4] == elf::ELFCLASS64.0;
                    let m = [bytes[18], bytes[19]];
                    let machine = if bytes[5] == elf::ELFDATA2MSB.0 {
                        u16::from_be_bytes(m)
                    } else {
                        u16::from_le_bytes(m)
                    };
                    probe.files.insert(path.to_string(), (is_64, machine));
                }
            }
        }
        probe
    }

    /// The machine's GNU triplet folder (`x86_64-linux-gnu`).
    fn triplet(&self) -> String {
        MACHINES
            .iter()
            .find(|(uname, _, _)| *uname == self.machine)
            .map_or_else(
                || format!("{}-linux-gnu", self.machine),
                |m| m.2.to_string(),
            )
    }

    /// The `e_machine` of the run image's own programs, when the gate knows the machine.
    pub fn elf_machine(&self) -> Option<u16> {
        MACHINES
            .iter()
            .find(|(uname, _, _)| *uname == self.machine)
            .map(|m| m.1)
    }

    /// Whether a loader-cache entry's flags fit an object (`libc6,x86-64` for 64-bit x86…).
    fn cache_fits(flags: &str, o: &ElfObject) -> bool {
        let arch = |m: object::elf::Machine| o.machine == m.0;
        let is = |s: &str| flags.split(',').any(|f| f.trim() == s);
        if arch(elf::EM_X86_64) {
            o.is_64 && is("x86-64")
        } else if arch(elf::EM_AARCH64) {
            is("AArch64")
        } else if arch(elf::EM_386) {
            !is("x86-64") && !o.is_64
        } else {
            true
        }
    }
}

/// The result of the gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// ELF files checked.
    pub checked: usize,
    /// ELF files of another machine than the run image's, not checked.
    pub foreign: Vec<String>,
    /// ELF-looking files that could not be read (not checked), with why.
    pub unreadable: Vec<(String, String)>,
    /// Each file and the libraries (or interpreter) it cannot find.
    pub missing: BTreeMap<String, Vec<String>>,
    /// Missing libraries that the recipe allows by name, by file.
    pub allowed: BTreeMap<String, Vec<String>>,
}

impl Report {
    /// Whether every needed library resolves (or is allowed).
    pub fn passed(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Decides where the loader would find things, over a [`Tree`] and a [`Probe`].
pub struct Resolver<'a> {
    tree: &'a Tree,
    probe: &'a Probe,
}

enum Found {
    /// An object of the tree.
    Tree(usize),
    /// A library of the run image.
    Image,
}

impl<'a> Resolver<'a> {
    /// A resolver over `tree` and what `probe` saw of the run image.
    pub fn new(tree: &'a Tree, probe: &'a Probe) -> Self {
        Resolver { tree, probe }
    }

    fn fits(o: &ElfObject, is_64: bool, machine: u16) -> bool {
        o.is_64 == is_64 && o.machine == machine
    }

    /// The ELF file at `path` if it fits `o`, in the tree or (outside it) the image.
    fn at(&self, path: &str, o: &ElfObject) -> Option<Found> {
        let real = self.tree.real_path(path);
        if self.tree.inside(&real) {
            return match self.tree.nodes.get(&real) {
                Some(Node::File(Some(i))) => {
                    let p = &self.tree.objects[*i];
                    Self::fits(o, p.is_64, p.machine).then_some(Found::Tree(*i))
                }
                _ => None,
            };
        }
        match self.probe.files.get(&real) {
            Some(&(is_64, machine)) if Self::fits(o, is_64, machine) => Some(Found::Image),
            _ => None,
        }
    }

    fn expand(dir: &str, o: &ElfObject) -> Option<String> {
        let d = dir
            .replace("${ORIGIN}", o.origin())
            .replace("$ORIGIN", o.origin());
        (d.starts_with('/') && !d.contains('$')).then_some(d)
    }

    /// The folders searched for `o`'s needs before the cache, with `program` the executable
    /// of the process (whose `RPATH` applies to libraries without a `RUNPATH`).
    fn search_dirs(o: &ElfObject, program: Option<&ElfObject>) -> Vec<String> {
        let mut dirs = Vec::new();
        if o.runpath.is_empty() {
            dirs.extend(o.rpath.iter().filter_map(|d| Self::expand(d, o)));
            if let Some(p) = program.filter(|p| p.runpath.is_empty()) {
                dirs.extend(p.rpath.iter().filter_map(|d| Self::expand(d, p)));
            }
        }
        dirs.extend(o.runpath.iter().filter_map(|d| Self::expand(d, o)));
        dirs
    }

    fn find(&self, o: &ElfObject, name: &str, program: Option<&ElfObject>) -> Option<Found> {
        if name.contains('/') {
            let path = if name.starts_with('/') {
                normalize(name)
            } else {
                join(o.origin(), name)
            };
            return self.at(&path, o);
        }
        for dir in Self::search_dirs(o, program) {
            if let Some(f) = self.at(&join(&dir, name), o) {
                return Some(f);
            }
        }
        for (soname, flags, path) in &self.probe.cache {
            if soname == name && Probe::cache_fits(flags, o) {
                // The cache lists only ELF files; its path may point into a tree, too.
                return Some(self.at(path, o).unwrap_or(Found::Image));
            }
        }
        trusted_dirs(&self.probe.triplet())
            .iter()
            .find_map(|d| self.at(&join(d, name), o))
    }

    /// Every path outside the tree the gate may need to know about: interpreters, and each
    /// needed library in each folder searched for it. The probe checks them in the image.
    pub fn candidates(tree: &Tree) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let programs: Vec<&ElfObject> = tree.objects.iter().filter(|o| o.is_program()).collect();
        for o in &tree.objects {
            if let Some(i) = &o.interpreter {
                out.insert(tree.real_path(i));
            }
            let mut dirs: Vec<String> = Self::search_dirs(o, None);
            for p in &programs {
                dirs.extend(Self::search_dirs(o, Some(p)));
            }
            // The default folders of the object's own machine.
            if let Some((_, _, triplet)) = MACHINES.iter().find(|m| m.1 == o.machine) {
                dirs.extend(trusted_dirs(triplet));
            }
            for name in &o.needed {
                if name.contains('/') {
                    out.insert(tree.real_path(&join(o.origin(), name)));
                    continue;
                }
                for d in &dirs {
                    out.insert(tree.real_path(&join(d, name)));
                }
            }
        }
        out.retain(|p| !tree.inside(p));
        out
    }

    /// Runs the gate over the tree's checked artifact, allowing the libraries named in `allow`
    /// to be missing.
    pub fn check(&self, allow: &[String]) -> Report {
        let tree = self.tree;
        let mut report = Report {
            unreadable: tree
                .unreadable
                .iter()
                .filter(|(p, _)| tree.inside(p))
                .cloned()
                .collect(),
            ..Report::default()
        };
        let target = self.probe.elf_machine();
        let native = |o: &ElfObject| target.is_none_or(|m| o.machine == m);

        // What the tree's programs load, transitively: there for every module they load.
        let mut loaded: BTreeSet<String> = BTreeSet::new();
        for program in tree.objects.iter().filter(|o| o.is_program() && native(o)) {
            let mut queue = vec![program];
            let mut seen = BTreeSet::new();
            while let Some(o) = queue.pop() {
                if !seen.insert(o.path.clone()) {
                    continue;
                }
                for name in &o.needed {
                    match self.find(o, name, Some(program)) {
                        Some(Found::Tree(i)) => {
                            let lib = &tree.objects[i];
                            loaded.insert(name.clone());
                            loaded.extend(lib.soname.iter().cloned());
                            queue.push(lib);
                        }
                        Some(Found::Image) => {
                            loaded.insert(name.clone());
                        }
                        None => {}
                    }
                }
            }
        }

        for o in &tree.objects[..tree.checked] {
            if !native(o) {
                report.foreign.push(o.path.clone());
                continue;
            }
            report.checked += 1;
            let mut missing = Vec::new();
            if let Some(interp) = &o.interpreter
                && self.at(interp, o).is_none()
            {
                missing.push(interp.clone());
            }
            for name in &o.needed {
                let found = self.find(o, name, None).is_some()
                    || (!o.is_program() && loaded.contains(name));
                if !found {
                    missing.push(name.clone());
                }
            }
            let (allowed, missing): (Vec<String>, Vec<String>) =
                missing.into_iter().partition(|m| allow.contains(m));
            if !missing.is_empty() {
                report.missing.insert(o.path.clone(), missing);
            }
            if !allowed.is_empty() {
                report.allowed.insert(o.path.clone(), allowed);
            }
        }
        report
    }
}

/// Where the artifacts of a test are: the one under test first, then its requirements.
pub fn scan(artifacts: &[(PathBuf, String)]) -> Result<Tree, PackageError> {
    let mut tree = Tree::default();
    for (path, prefix) in artifacts {
        tree.add_artifact(path, prefix)?;
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(path: &str, needed: &[&str]) -> ElfObject {
        ElfObject {
            path: path.into(),
            is_64: true,
            machine: elf::EM_X86_64.0,
            interpreter: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            rpath: vec![],
            runpath: vec![],
            soname: None,
        }
    }

    fn tree(objects: Vec<ElfObject>, links: &[(&str, &str)]) -> Tree {
        let mut t = Tree {
            prefixes: vec!["/app/x".into()],
            ..Tree::default()
        };
        for (i, o) in objects.iter().enumerate() {
            t.nodes.insert(o.path.clone(), Node::File(Some(i)));
        }
        for (from, to) in links {
            t.nodes
                .insert(from.to_string(), Node::Symlink(to.to_string()));
        }
        t.checked = objects.len();
        t.objects = objects;
        t
    }

    fn probe() -> Probe {
        Probe::parse(
            "machine x86_64\ncache libc.so.6|libc6,x86-64|/lib/x86_64-linux-gnu/libc.so.6\n\
             cache libfoo.so.1|libc6|/usr/lib/i386-linux-gnu/libfoo.so.1\n\
             file 7f454c4602010100000000000000000003003e00 /lib64/ld-linux-x86-64.so.2\n",
        )
    }

    #[test]
    fn rpath_origin_and_symlinks_resolve_inside_the_tree() {
        let mut exe = obj("/app/x/bin/tool", &["libc.so.6", "libx.so.1"]);
        exe.interpreter = Some("/lib64/ld-linux-x86-64.so.2".into());
        exe.rpath = vec!["$ORIGIN/../lib".into()];
        let lib = obj("/app/x/lib/libx.so.1.2", &["libc.so.6"]);
        let t = tree(vec![exe, lib], &[("/app/x/lib/libx.so.1", "libx.so.1.2")]);
        let p = probe();
        let r = Resolver::new(&t, &p).check(&[]);
        assert!(r.passed(), "{r:?}");
        assert_eq!(r.checked, 2);
    }

    #[test]
    fn a_library_only_elsewhere_is_missing_and_can_be_allowed() {
        let t = tree(
            vec![obj("/app/x/lib/m.so", &["libc.so.6", "libnsl.so.2"])],
            &[],
        );
        let p = probe();
        let r = Resolver::new(&t, &p).check(&[]);
        assert_eq!(
            r.missing.get("/app/x/lib/m.so"),
            Some(&vec!["libnsl.so.2".to_string()])
        );
        let r = Resolver::new(&t, &p).check(&["libnsl.so.2".into()]);
        assert!(r.passed());
        assert_eq!(r.allowed.len(), 1);
    }

    #[test]
    fn a_cache_entry_of_another_arch_or_a_dangling_link_provides_nothing() {
        let mut exe = obj("/app/x/bin/t", &["libfoo.so.1", "libgone.so.1"]);
        exe.runpath = vec!["/app/x/lib".into()];
        let t = tree(vec![exe], &[("/app/x/lib/libgone.so.1", "nowhere.so")]);
        let p = probe();
        let r = Resolver::new(&t, &p).check(&[]);
        assert_eq!(
            r.missing["/app/x/bin/t"],
            vec!["libfoo.so.1", "libgone.so.1"]
        );
    }

    #[test]
    fn modules_find_what_the_programs_load() {
        let mut exe = obj("/app/x/bin/ruby", &["libruby.so.3.3", "libc.so.6"]);
        exe.interpreter = Some("/lib64/ld-linux-x86-64.so.2".into());
        exe.rpath = vec!["$ORIGIN/../lib".into()];
        let mut lib = obj("/app/x/lib/libruby.so.3.3.8", &["libc.so.6"]);
        lib.soname = Some("libruby.so.3.3".into());
        let ext = obj(
            "/app/x/lib/ruby/3.3.0/x86_64-linux/zlib.so",
            &["libruby.so.3.3"],
        );
        let t = tree(
            vec![exe, lib, ext],
            &[("/app/x/lib/libruby.so.3.3", "libruby.so.3.3.8")],
        );
        let p = probe();
        assert!(Resolver::new(&t, &p).check(&[]).passed());
        // Without the program, the module's library is nowhere.
        let t2 = tree(vec![t.objects[2].clone()], &[]);
        assert!(!Resolver::new(&t2, &p).check(&[]).passed());
    }

    #[test]
    fn a_missing_interpreter_fails_and_foreign_objects_are_skipped() {
        let mut exe = obj("/app/x/bin/t", &[]);
        exe.interpreter = Some("/lib/ld-musl-x86_64.so.1".into());
        let mut arm = obj("/app/x/lib/arm.so", &["libnothere.so"]);
        arm.machine = elf::EM_AARCH64.0;
        let t = tree(vec![exe, arm], &[]);
        let p = probe();
        let r = Resolver::new(&t, &p).check(&[]);
        assert_eq!(r.missing["/app/x/bin/t"], vec!["/lib/ld-musl-x86_64.so.1"]);
        assert_eq!(r.foreign, vec!["/app/x/lib/arm.so"]);
        assert_eq!(r.checked, 1);
    }

    #[test]
    fn a_real_program_is_read_and_an_object_file_is_not_checked() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let o = ElfObject::parse("/x/test", &data).unwrap().unwrap();
        assert!(o.is_program(), "{o:?}");
        assert!(o.needed.iter().any(|n| n.starts_with("libc.so")), "{o:?}");
        // An ELF64 header of type ET_REL (an object file): not loaded, so not checked.
        let mut rel = vec![0u8; 64];
        rel[..4].copy_from_slice(&elf::ELFMAG);
        rel[4] = elf::ELFCLASS64.0;
        rel[5] = elf::ELFDATA2LSB.0;
        rel[6] = 1;
        rel[16] = 1;
        rel[18] = 62;
        rel[20] = 1;
        rel[52] = 64;
        assert_eq!(ElfObject::parse("/x/a.o", &rel), Ok(None));
    }

    #[test]
    fn non_elf_bytes_are_not_elf() {
        assert_eq!(ElfObject::parse("/a.so", b"#!/bin/sh\necho\n"), Ok(None));
        assert!(ElfObject::parse("/a.so", b"\x7fELF\x02junk").is_err());
    }

    #[test]
    fn the_probe_reads_ldconfig_lines_and_elf_headers() {
        let p = probe();
        assert_eq!(p.cache.len(), 2);
        assert_eq!(
            p.files.get("/lib64/ld-linux-x86-64.so.2"),
            Some(&(true, elf::EM_X86_64.0))
        );
        assert_eq!(p.elf_machine(), Some(62));
    }

    #[test]
    fn candidates_name_paths_outside_the_tree_only() {
        let mut exe = obj("/app/x/bin/t", &["libz.so.1"]);
        exe.interpreter = Some("/lib64/ld-linux-x86-64.so.2".into());
        exe.rpath = vec!["$ORIGIN/../lib".into(), "/opt/extra".into()];
        let t = tree(vec![exe], &[]);
        let c = Resolver::candidates(&t);
        assert!(c.contains("/lib64/ld-linux-x86-64.so.2"));
        assert!(c.contains("/opt/extra/libz.so.1"));
        assert!(c.contains("/usr/lib/x86_64-linux-gnu/libz.so.1"));
        assert!(!c.iter().any(|p| p.starts_with("/app/x")));
    }
}
