//! The recipe format through the real binary: merging, templating, selection, and errors that
//! name the file and the line.

mod common;

use common::{Workspace, stderr, stdout};

const SUM: &str = "5f2b9d8e1c3a4b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";

fn show(ws: &Workspace, runtime: &str, version: &str) -> toml::Table {
    let o = ws.run(&["show", runtime, version]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).parse().unwrap()
}

#[test]
fn version_file_overrides_runtime_file_key_by_key() {
    let ws = Workspace::new();
    ws.write(
        "mono/runtime.toml",
        r#"
description = "Mono"
artifact = "{runtime}-{major}.{minor}.{patch}-{stack}.tar.gz"
[source]
url = "https://example.invalid/{runtime}-{version}.tar.bz2"
mirrors = ["https://mirror.invalid/{runtime}/{version}.tar.bz2"]
[build]
env = { CFLAGS = "-O2", LANG = "C" }
configure = ["./configure --prefix={prefix} --disable-nls"]
install = ["make install", "strip {prefix}/bin/mono"]
[test]
commands = ["{prefix}/bin/mono --version"]
"#,
    );
    ws.write(
        "mono/3.2.8.toml",
        &format!(
            r#"
stack = "heroku-24"
[source]
sha256 = "{SUM}"
strip_components = 2
[build]
env = {{ CFLAGS = "-O3" }}
build = []
"#
        ),
    );
    let t = show(&ws, "mono", "3.2.8");
    assert_eq!(t["description"].as_str(), Some("Mono"));
    assert_eq!(t["stack"].as_str(), Some("heroku-24"));
    assert_eq!(
        t["prefix"].as_str(),
        Some("/app/mono"),
        "a folder of its own"
    );
    assert_eq!(t["artifact"].as_str(), Some("mono-3.2.8-heroku-24.tar.gz"));
    let source = t["source"].as_table().unwrap();
    assert_eq!(
        source["url"].as_str(),
        Some("https://example.invalid/mono-3.2.8.tar.bz2")
    );
    assert_eq!(
        source["mirrors"][0].as_str(),
        Some("https://mirror.invalid/mono/3.2.8.tar.bz2")
    );
    assert_eq!(source["sha256"].as_str(), Some(SUM));
    assert_eq!(source["strip_components"].as_integer(), Some(2));
    let build = t["build"].as_table().unwrap();
    // Tables merge deeply: CFLAGS overridden, LANG kept.
    assert_eq!(build["env"]["CFLAGS"].as_str(), Some("-O3"));
    assert_eq!(build["env"]["LANG"].as_str(), Some("C"));
    assert_eq!(
        build["configure"][0].as_str(),
        Some("./configure --prefix=/app/mono --disable-nls")
    );
    // `[]` skips a phase; a missing phase gets the default.
    assert_eq!(build["build"].as_array().unwrap().len(), 0);
    assert_eq!(
        build["install"][1].as_str(),
        Some("strip /app/mono/bin/mono")
    );
    assert_eq!(build["network"].as_bool(), Some(false));
    assert_eq!(
        t["test"]["commands"][0].as_str(),
        Some("/app/mono/bin/mono --version")
    );
}

#[test]
fn defaults_apply_when_nothing_is_said() {
    let ws = Workspace::new();
    ws.recipe(
        "lua",
        "5.4.4",
        "https://example.invalid/lua-{version}.tar.gz",
        SUM,
    );
    let o = ws.cmd().args(["show", "lua", "5.4.4"]).output().unwrap();
    let t: toml::Table = stdout(&o).parse().unwrap();
    assert_eq!(t["stack"].as_str(), Some("bookworm"));
    assert_eq!(t["artifact"].as_str(), Some("lua-5.4.4.tar.gz"));
    assert_eq!(t["source"]["strip_components"].as_integer(), Some(1));
    let b = &t["build"];
    assert_eq!(
        b["configure"][0].as_str(),
        Some("./configure --prefix=/app/lua")
    );
    assert!(b["build"][0].as_str().unwrap().starts_with("make -j"));
    assert_eq!(b["install"][0].as_str(), Some("make install"));
}

#[test]
fn resources_and_requires_are_parsed() {
    let ws = Workspace::new();
    ws.recipe("mono", "3.2.8", "https://example.invalid/mono.tar.gz", SUM);
    ws.write(
        "xsp/3.0.11.toml",
        &format!(
            r#"
[source]
url = "https://example.invalid/xsp-{{version}}.tar.gz"
sha256 = "{SUM}"
[[resources]]
url = "https://example.invalid/patches/fix-{{version}}.patch"
sha256 = "{SUM}"
[[resources]]
url = "https://example.invalid/boot.tar.gz"
sha256 = "{SUM}"
dest = "external/boot"
unpack = true
[build]
requires = ["mono 3.2.8", "mono ^3.2"]
"#
        ),
    );
    let t = show(&ws, "xsp", "3.0.11");
    let res = t["resources"].as_array().unwrap();
    assert_eq!(res[0]["dest"].as_str(), Some("fix-3.0.11.patch"));
    assert_eq!(res[0]["unpack"].as_bool(), Some(false));
    assert_eq!(res[1]["dest"].as_str(), Some("external/boot"));
    assert_eq!(res[1]["strip_components"].as_integer(), Some(1));
    assert_eq!(t["build"]["requires"][1].as_str(), Some("mono ^3.2"));
}

#[test]
fn a_resource_path_is_a_file_next_to_the_recipe_that_names_it() {
    let ws = Workspace::new();
    let src = format!("[source]\nurl = \"https://example.invalid/d.tar.gz\"\nsha256 = \"{SUM}\"\n");
    ws.write("demo/profiles/1.0-amd64.tar.zst", "counts");
    // Named in runtime.toml, resolved next to it, templated.
    ws.write(
        "demo/runtime.toml",
        &format!(
            "{src}[[resources]]\npath = \"profiles/{{version}}-{{arch}}.tar.zst\"\nsha256 = \"{SUM}\"\ndest = \"pgo\"\nunpack = true\n"
        ),
    );
    ws.write("demo/1.0.toml", "");
    let t = show(&ws, "demo", "1.0");
    let res = t["resources"].as_array().unwrap();
    let want = ws
        .recipes()
        .join("demo/profiles/1.0-amd64.tar.zst")
        .canonicalize()
        .unwrap();
    assert_eq!(
        res[0]["url"].as_str(),
        Some(format!("file://{}", want.display()).as_str())
    );
    assert_eq!(res[0]["dest"].as_str(), Some("pgo"));

    // A missing file, a path out of the folder, and both keys: errors naming the line.
    let bad = |resource: &str, says: &str| {
        let ws = Workspace::new();
        ws.write(
            "demo/1.0.toml",
            &format!("{src}[[resources]]\n{resource}sha256 = \"{SUM}\"\n"),
        );
        let o = ws.run(&["show", "demo", "1.0"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        let file = ws.recipes().join("demo/1.0.toml");
        assert!(
            err.starts_with(&format!("error: {}:5: ", file.display())),
            "{err}"
        );
        assert!(err.contains(says), "expected `{says}` in:\n{err}");
    };
    bad("path = \"profiles/none.tar.zst\"\n", "does not exist");
    bad(
        "path = \"../x/p.tar.zst\"\n",
        "relative path below the recipe's folder",
    );
    bad(
        "path = \"/etc/passwd\"\n",
        "relative path below the recipe's folder",
    );
    bad(
        "path = \"p\"\nurl = \"https://example.invalid/p\"\n",
        "either a `url` or a `path`, not both",
    );
    bad("", "needs a `url` (a download) or a `path`");
}

#[test]
fn shell_expansions_pass_through_templates() {
    let ws = Workspace::new();
    ws.write(
        "demo/1.0.toml",
        &format!(
            r#"
[source]
url = "https://example.invalid/d.tar.gz"
sha256 = "{SUM}"
[build]
configure = ['CFLAGS="${{CFLAGS:-}} -fPIC" ./configure --prefix={{prefix}} --with-x={{{{yes}}}}']
"#
        ),
    );
    let t = show(&ws, "demo", "1.0");
    assert_eq!(
        t["build"]["configure"][0].as_str(),
        Some(r#"CFLAGS="${CFLAGS:-} -fPIC" ./configure --prefix=/app/demo --with-x={yes}"#)
    );
}

/// Writes one bad recipe and checks `show` exits 2 naming the file and line.
fn assert_bad(runtime_toml: Option<&str>, version_toml: &str, file: &str, line: usize, says: &str) {
    let ws = Workspace::new();
    if let Some(r) = runtime_toml {
        ws.write("demo/runtime.toml", r);
    }
    ws.write("demo/1.0.0.toml", version_toml);
    let o = ws.run(&["show", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let path = ws.recipes().join("demo").join(file);
    let want = format!("error: {}:{line}: ", path.display());
    assert!(err.starts_with(&want), "expected `{want}…` in:\n{err}");
    assert!(err.contains(says), "expected `{says}` in:\n{err}");
}

#[test]
fn errors_name_the_file_and_the_line() {
    let src = format!("[source]\nurl = \"https://example.invalid/x.tar.gz\"\nsha256 = \"{SUM}\"\n");
    // Unknown key.
    assert_bad(
        None,
        &format!("{src}sha265 = \"x\"\n"),
        "1.0.0.toml",
        4,
        "unknown field `sha265`",
    );
    // Unknown top-level key, with a hint.
    assert_bad(
        None,
        &format!("\nversion_name = 1\n{src}"),
        "1.0.0.toml",
        2,
        "unknown field",
    );
    // Wrong type.
    assert_bad(
        None,
        &format!("{src}strip_components = \"one\"\n"),
        "1.0.0.toml",
        4,
        "invalid type",
    );
    assert_bad(
        None,
        &format!("{src}[build]\nnetwork = \"yes\"\n"),
        "1.0.0.toml",
        5,
        "invalid type",
    );
    // Missing checksum.
    assert_bad(
        None,
        "[source]\n\nurl = \"https://example.invalid/x.tar.gz\"\n",
        "1.0.0.toml",
        3,
        "no checksum",
    );
    // Checksum that is not hex of the right length.
    assert_bad(
        None,
        "[source]\nurl = \"https://x.invalid/a\"\nsha256 = \"abc\"\n",
        "1.0.0.toml",
        3,
        "not 64 lowercase hex digits",
    );
    assert_bad(
        None,
        &format!("[source]\nurl = \"https://x.invalid/a\"\nsha512 = \"{SUM}\"\n"),
        "1.0.0.toml",
        3,
        "not 128",
    );
    assert_bad(
        None,
        "[source]\nurl = \"https://x.invalid/a\"\nsha1 = \"zz58403caec82af414507cefa58ce74bbb792985\"\n",
        "1.0.0.toml",
        3,
        "not 40",
    );
    // Two checksums.
    assert_bad(
        None,
        &format!("{src}sha1 = \"d58403caec82af414507cefa58ce74bbb792985a\"\n"),
        "1.0.0.toml",
        4,
        "more than one checksum",
    );
    // Unknown template variable, in the version file and in runtime.toml.
    assert_bad(
        None,
        &format!("{src}[build]\nconfigure = [\n  \"./configure --prefix={{prefx}}\",\n]\n"),
        "1.0.0.toml",
        6,
        "unknown template variable `{prefx}`",
    );
    assert_bad(
        Some("[test]\ncommands = [\"{verison}\"]\n"),
        &src,
        "runtime.toml",
        2,
        "unknown template variable",
    );
    // Bad TOML syntax.
    assert_bad(None, &format!("{src}[build\n"), "1.0.0.toml", 4, "");
    // Missing URL.
    assert_bad(
        None,
        &format!("[source]\nsha256 = \"{SUM}\"\n"),
        "1.0.0.toml",
        1,
        "no [source] url",
    );
    // Bad requirement.
    assert_bad(
        None,
        &format!("{src}[build]\nrequires = [\"mono\"]\n"),
        "1.0.0.toml",
        5,
        "RUNTIME VERSION-OR-RANGE",
    );
    // Prefix that is not absolute.
    assert_bad(
        None,
        &format!("prefix = \"app\"\n{src}"),
        "1.0.0.toml",
        1,
        "absolute path",
    );
    // The root of the file system, the root of the app, and a folder outside it.
    assert_bad(
        None,
        &format!("prefix = \"/\"\n{src}"),
        "1.0.0.toml",
        1,
        "whole file system",
    );
    // The image's own folders, where the artifact would be unpacked over its files (and the
    // tools the linkage gate runs), even when the recipe says the prefix is outside /app.
    for system in ["/usr", "/usr/sbin", "/etc", "/lib/x86_64-linux-gnu"] {
        assert_bad(
            None,
            &format!("prefix = \"{system}\"\nprefix_outside_app = true\n{src}"),
            "1.0.0.toml",
            1,
            "the image's own files",
        );
    }
    assert_bad(
        None,
        &format!("prefix = \"/app\"\n{src}"),
        "1.0.0.toml",
        1,
        "at the root of the app",
    );
    assert_bad(
        None,
        &format!("\n\nprefix = \"/opt/demo\"\n{src}"),
        "1.0.0.toml",
        3,
        "outside /app",
    );
    assert_bad(
        Some("prefix = \"/usr/local\"\n"),
        &src,
        "runtime.toml",
        1,
        "outside /app",
    );
    // Resource dest escaping the tree.
    assert_bad(
        None,
        &format!(
            "{src}[[resources]]\nurl = \"https://x.invalid/p\"\nsha256 = \"{SUM}\"\ndest = \"../p\"\n"
        ),
        "1.0.0.toml",
        7,
        "relative path inside the source tree",
    );
}

#[test]
fn a_prefix_outside_app_needs_an_explicit_opt_in() {
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", "https://example.invalid/x.tar.gz", SUM);
    let file = ws.recipes().join("demo/1.0.0.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("prefix = \"/opt/demo\"\n{text}")).unwrap();
    let o = ws.run(&["show", "demo", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("prefix_outside_app = true"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &file,
        format!("prefix = \"/opt/demo/\"\nprefix_outside_app = true\n{text}"),
    )
    .unwrap();
    let t = show(&ws, "demo", "1.0.0");
    assert_eq!(t["prefix"].as_str(), Some("/opt/demo"));
    assert_eq!(t["prefix_outside_app"].as_bool(), Some(true));
    // Below /app, no opt-in is needed.
    std::fs::write(&file, format!("prefix = \"/app/.heroku/demo\"\n{text}")).unwrap();
    assert_eq!(
        show(&ws, "demo", "1.0.0")["prefix"].as_str(),
        Some("/app/.heroku/demo")
    );
}

#[test]
fn a_version_file_whose_name_is_not_a_version_is_an_error() {
    let ws = Workspace::new();
    ws.recipe("demo", "1.0.0", "https://example.invalid/x.tar.gz", SUM);
    ws.write("demo/latest.toml", "");
    let o = ws.run(&["list"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("latest.toml: file name is not a version"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn sha1_is_accepted_with_a_warning() {
    let ws = Workspace::new();
    ws.write(
        "mono/3.2.8.toml",
        "[source]\nurl = \"https://example.invalid/mono-3.2.8.tar.bz2\"\nsha1 = \"d58403caec82af414507cefa58ce74bbb792985a\"\n",
    );
    let o = ws.run(&["show", "mono", "3.2.8"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("warning:") && stderr(&o).contains("sha1"),
        "{}",
        stderr(&o)
    );
    let o = ws.run(&["-q", "show", "mono", "3.2.8"]);
    assert!(stderr(&o).is_empty(), "-q hides warnings: {}", stderr(&o));
}

#[test]
fn list_sorts_by_version_and_selects() {
    let ws = Workspace::new();
    for v in ["5.4.10", "5.1.5", "5.4.0-rc1", "5.4.0", "5.4.2", "5.3.6"] {
        ws.recipe("lua", v, "https://example.invalid/lua.tar.gz", SUM);
    }
    ws.recipe(
        "mono",
        "2.10.8.1",
        "https://example.invalid/mono.tar.gz",
        SUM,
    );
    std::fs::create_dir_all(ws.recipes().join("stacks/bookworm")).unwrap();
    let o = ws.run(&["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "lua 5.1.5\nlua 5.3.6\nlua 5.4.0-rc1\nlua 5.4.0\nlua 5.4.2\nlua 5.4.10\nmono 2.10.8.1\n"
    );
    let o = ws.run(&["list", "mono", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"runtime": "mono", "versions": ["2.10.8.1"]}])
    );

    let o = ws.run(&["list", "ruby"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no runtime `ruby`"));
    assert!(
        stderr(&o).contains("hint: known runtimes: lua, mono"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fetch_selectors_pick_versions() {
    let ws = Workspace::new();
    for v in ["5.3.6", "5.4.2"] {
        ws.recipe("lua", v, "http://127.0.0.1:9/x.tar.gz", SUM);
    }
    let o = ws.run(&["fetch", "lua", "^6"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("no version of lua matches `^6`"), "{err}");
    assert!(err.contains("hint: available: 5.3.6, 5.4.2"), "{err}");
    let o = ws.run(&["fetch", "lua", "not-a-req!"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = ws.run(&["show", "lua", "^5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("one exact version"), "{}", stderr(&o));
}

#[test]
fn bad_usage_exits_2() {
    let ws = Workspace::new();
    let o = ws.run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ws.run(&["--color", "sometimes", "list"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn format_tar_zst_names_the_artifact_and_sets_the_level() {
    let ws = Workspace::new();
    // runtime.toml chooses the format for every version; a version file may change the level.
    ws.write("lua/runtime.toml", "format = \"tar.zst\"\n");
    ws.recipe("lua", "5.4.4", "https://example.invalid/lua.tar.gz", SUM);
    ws.write(
        "lua/5.4.6.toml",
        &format!(
            "zstd_level = 12\nrevision = 2\n[source]\nurl = \"https://example.invalid/lua.tar.gz\"\nsha256 = \"{SUM}\"\n"
        ),
    );
    let t = show(&ws, "lua", "5.4.4");
    assert_eq!(t["artifact"].as_str(), Some("lua-5.4.4.tar.zst"));
    assert_eq!(t["format"].as_str(), Some("tar.zst"));
    assert_eq!(t["zstd_level"].as_integer(), Some(19), "the default");
    let t = show(&ws, "lua", "5.4.6");
    assert_eq!(t["artifact"].as_str(), Some("lua-5.4.6-build2.tar.zst"));
    assert_eq!(t["zstd_level"].as_integer(), Some(12));

    // The arm64 name keeps the extension last.
    let cat = packager::recipe::Catalogue::open(&ws.recipes()).unwrap();
    let arm = cat
        .load(
            "lua",
            &"5.4.4".parse().unwrap(),
            &packager::recipe::LoadOptions {
                jobs: 1,
                arch: packager::arch::Arch::Arm64,
            },
        )
        .unwrap();
    assert_eq!(arm.artifact, "lua-5.4.4-arm64.tar.zst");
    assert_eq!(arm.format, packager::package::ArtifactFormat::TarZst);

    // A tar.gz recipe shows neither key: its build key stays what it was.
    ws.recipe("ruby", "3.3.0", "https://example.invalid/ruby.tar.gz", SUM);
    let t = show(&ws, "ruby", "3.3.0");
    assert_eq!(t["artifact"].as_str(), Some("ruby-3.3.0.tar.gz"));
    assert!(!t.contains_key("format") && !t.contains_key("zstd_level"));
    // Saying the default out loud changes nothing either.
    ws.write(
        "ruby/3.3.1.toml",
        &format!(
            "format = \"tar.gz\"\n[source]\nurl = \"https://example.invalid/ruby.tar.gz\"\nsha256 = \"{SUM}\"\n"
        ),
    );
    let a = ws.run(&["show", "ruby", "3.3.0"]);
    let b = ws.run(&["show", "ruby", "3.3.1"]);
    assert_eq!(
        stdout(&a).replace("3.3.0", "V"),
        stdout(&b).replace("3.3.1", "V")
    );

    // An explicit name is kept as written when it agrees (or says no format at all).
    ws.write(
        "lua/5.4.7.toml",
        &format!(
            "artifact = \"lua-{{version}}-{{stack}}.tar.zst\"\n[source]\nurl = \"https://example.invalid/lua.tar.gz\"\nsha256 = \"{SUM}\"\n"
        ),
    );
    assert_eq!(
        show(&ws, "lua", "5.4.7")["artifact"].as_str(),
        Some("lua-5.4.7-bookworm.tar.zst")
    );
}

#[test]
fn bad_formats_and_zstd_levels_are_errors_naming_the_file() {
    let src = format!("[source]\nurl = \"https://example.invalid/x.tar.gz\"\nsha256 = \"{SUM}\"\n");
    assert_bad(
        None,
        &format!("\nformat = \"tar.xz\"\n{src}"),
        "1.0.0.toml",
        2,
        "unknown variant `tar.xz`, expected `tar.gz` or `tar.zst`",
    );
    for level in ["0", "23", "-5"] {
        assert_bad(
            Some("format = \"tar.zst\"\n"),
            &format!("\n\nzstd_level = {level}\n{src}"),
            "1.0.0.toml",
            3,
            "out of range: zstd levels are 1 to 22",
        );
    }
    // In runtime.toml: the error names runtime.toml.
    assert_bad(
        Some("format = \"tar.zst\"\nzstd_level = 99\n"),
        &src,
        "runtime.toml",
        2,
        "zstd_level = 99 is out of range",
    );
    // A level for a gzip artifact would be ignored: refused instead.
    assert_bad(
        None,
        &format!("zstd_level = 9\n{src}"),
        "1.0.0.toml",
        1,
        "zstd_level = 9 is set but the artifact format is tar.gz",
    );
    // A name that says the other format.
    assert_bad(
        Some("format = \"tar.zst\"\n"),
        &format!("artifact = \"{{runtime}}-{{version}}.tar.gz\"\n{src}"),
        "1.0.0.toml",
        1,
        "artifact name `demo-1.0.0.tar.gz` ends in .tar.gz but the format is tar.zst",
    );
    assert_bad(
        None,
        &format!("\nartifact = \"demo.tar.zst\"\n{src}"),
        "1.0.0.toml",
        2,
        "ends in .tar.zst but the format is tar.gz",
    );
}
