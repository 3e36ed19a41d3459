//! Generated fixture runtimes: small real C projects with a hand-written `configure` that
//! honours `--prefix`, and a Makefile, packed as tarballs.

use std::io::{Read, Write};

/// Files of a fixture source tree (path under the top folder, mode, contents).
pub fn c_project(name: &str, version: &str) -> Vec<(String, u32, Vec<u8>)> {
    let configure = format!(
        r#"#!/bin/sh
# A hand-written configure: honours --prefix, writes config.mk and config.h.
set -e
prefix=/usr/local
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix="${{arg#--prefix=}}" ;;
    --fail) echo "configure: error: asked to fail" >&2; exit 3 ;;
    *) echo "configure: unknown option $arg" >&2; exit 2 ;;
  esac
done
echo "checking for a C compiler... ${{CC:-cc}}"
command -v "${{CC:-cc}}" >/dev/null || {{ echo "configure: error: no C compiler" >&2; exit 1; }}
echo "PREFIX = $prefix" > config.mk
printf '#define VERSION "%s"\n#define PREFIX "%s"\n' "{version}" "$prefix" > config.h
echo "configured {name} {version} for $prefix"
"#
    );
    let makefile = format!(
        "include config.mk\nCC ?= cc\n\nall: {name} lib{name}.a\n\n{name}: main.o greet.o\n\t$(CC) -o $@ main.o greet.o\n\nlib{name}.a: greet.o\n\tar rcs $@ greet.o\n\n%.o: %.c config.h\n\t$(CC) -O2 -c -o $@ $<\n\ninstall: all\n\tmkdir -p $(PREFIX)/bin $(PREFIX)/lib $(PREFIX)/include $(PREFIX)/share/{name}\n\tcp {name} $(PREFIX)/bin/{name}\n\tchmod 755 $(PREFIX)/bin/{name}\n\tcp lib{name}.a $(PREFIX)/lib/\n\tcp greet.h $(PREFIX)/include/\n\tcp README $(PREFIX)/share/{name}/README\n\tln -sf {name} $(PREFIX)/bin/{name}-link\n\n.PHONY: all install\n"
    );
    let main_c = format!(
        "#include <stdio.h>\n#include <string.h>\n#include \"config.h\"\n#include \"greet.h\"\nint main(int argc, char **argv) {{\n  if (argc > 1 && strcmp(argv[1], \"--version\") == 0) {{ printf(\"{name} %s\\n\", VERSION); return 0; }}\n  greet(argc > 1 ? argv[1] : \"world\");\n  return 0;\n}}\n"
    );
    vec![
        ("configure".into(), 0o755, configure.into_bytes()),
        ("Makefile".into(), 0o644, makefile.into_bytes()),
        ("main.c".into(), 0o644, main_c.into_bytes()),
        (
            "greet.c".into(),
            0o644,
            b"#include <stdio.h>\n#include \"greet.h\"\nvoid greet(const char *who) { printf(\"hello, %s\\n\", who); }\n".to_vec(),
        ),
        ("greet.h".into(), 0o644, b"void greet(const char *who);\n".to_vec()),
        ("README".into(), 0o644, format!("{name} {version}\n").into_bytes()),
    ]
}

/// Like [`c_project`], with a `configure` that runs `checks` compiler checks one after the
/// other, as autoconf scripts do (serial work, like most of a real runtime's configure).
pub fn c_project_with_checks(
    name: &str,
    version: &str,
    checks: usize,
) -> Vec<(String, u32, Vec<u8>)> {
    let mut files = c_project(name, version);
    let configure = &mut files[0].2;
    let text = String::from_utf8(std::mem::take(configure)).unwrap();
    let checks_script = format!(
        "i=0\nwhile [ $i -lt {checks} ]; do\n  i=$((i+1))\n  printf 'checking feature %s... ' $i\n  printf '#include <stdio.h>\\nint main(void){{printf(\"%%d\\\\n\", %s);return 0;}}\\n' $i > conftest.c\n  ${{CC:-cc}} -O2 conftest.c -o conftest && ./conftest\ndone\nrm -f conftest conftest.c\n"
    );
    *configure = text
        .replacen(
            "echo \"PREFIX = $prefix\" > config.mk",
            &format!("{checks_script}echo \"PREFIX = $prefix\" > config.mk"),
            1,
        )
        .into_bytes();
    files
}

/// A `.tar.gz` of `files` under a top folder `top/` (mtimes and owners as a real release
/// tarball would have them).
pub fn tarball(top: &str, files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_600_000_000);
    dir.set_uid(1000);
    tar.append_data(&mut dir, format!("{top}/"), std::io::empty())
        .unwrap();
    for (path, mode, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(1000);
        h.set_gid(1000);
        tar.append_data(&mut h, format!("{top}/{path}"), &data[..])
            .unwrap();
    }
    let gz = tar.into_inner().unwrap();
    let mut out = gz.finish().unwrap();
    out.flush().unwrap();
    out
}

/// A tarball with one hostile entry, written with raw headers (the tar crate refuses to write
/// some of these itself).
pub fn hostile_tarball(kind: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut ok = tar::Header::new_gnu();
    ok.set_mode(0o755);
    ok.set_size(3);
    tar.append_data(&mut ok, "evil-1.0.0/configure", &b"#!\n"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    match kind {
        "dotdot" | "absolute" => {
            let name: &[u8] = if kind == "dotdot" {
                b"evil-1.0.0/../../escape"
            } else {
                b"/tmp/escape-absolute"
            };
            h.set_size(6);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            tar.append(&h, &b"pwned\n"[..]).unwrap();
        }
        "symlink" => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, "evil-1.0.0/link", "../../../etc")
                .unwrap();
        }
        "chain" => {
            // Each link stays inside alone; followed through `a/b`, `c` is above the root.
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, "evil-1.0.0/a/b", "..").unwrap();
            let mut c = tar::Header::new_gnu();
            c.set_entry_type(tar::EntryType::Symlink);
            c.set_size(0);
            tar.append_link(&mut c, "evil-1.0.0/c", "a/b/../..")
                .unwrap();
        }
        "pax-bomb" => {
            // A pax header declaring 1 GiB, then zeros: the host must not read it whole.
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(1 << 30);
            let name = b"PaxHeaders/bomb";
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            tar.get_mut().write_all(h.as_bytes()).unwrap();
            std::io::copy(&mut std::io::repeat(0).take(1 << 20), tar.get_mut()).unwrap();
        }
        other => panic!("unknown hostile kind {other}"),
    }
    tar.into_inner().unwrap().finish().unwrap()
}
