//! A real runtime built end to end with the shipped recipe and the shipped `bookworm` stack:
//! Lua 5.4.4. The machine has no internet, but Debian's package archive carries Lua's upstream
//! tarball unchanged as `lua5.4_5.4.4.orig.tar.gz` (same sha256 as lua.org's, which the recipe
//! pins): the test downloads that source package with apt and serves it to packager as a
//! content-addressed mirror (`{mirror}/sha256/{hex}`), exactly as a build farm mirror would.
//! Needs Docker, apt, and Debian's archive; fails loudly without them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Route, Server, sha256_hex, stderr, stdout};
use packager::package::list_artifact;

const LUA_SHA256: &str = "164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61";

/// Downloads Debian's `lua5.4` source package into `dir` and returns the orig tarball's bytes.
fn debian_orig_tarball(dir: &Path) -> Vec<u8> {
    let parts = dir.join("sources.list.d");
    let lists = dir.join("lists");
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::create_dir_all(lists.join("partial")).unwrap();
    // The host's own Debian sources, as source (deb-src) entries.
    let host = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").expect(
        "this test needs the host's Debian apt sources (/etc/apt/sources.list.d/debian.sources)",
    );
    std::fs::write(
        parts.join("src.sources"),
        host.replace("Types: deb\n", "Types: deb-src\n"),
    )
    .unwrap();
    let apt = |args: &[&str]| {
        let o = Command::new("apt-get")
            .arg("-q")
            .arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", parts.display()))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", lists.display()))
            .args(args)
            .current_dir(dir)
            .output()
            .expect("apt-get runs");
        assert!(
            o.status.success(),
            "apt-get {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    apt(&["update"]);
    apt(&["source", "--download-only", "lua5.4"]);
    std::fs::read(dir.join("lua5.4_5.4.4.orig.tar.gz")).expect("the orig tarball")
}

#[test]
fn lua_5_4_4_builds_from_the_shipped_recipe_on_the_bookworm_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = debian_orig_tarball(tmp.path());
    assert_eq!(
        sha256_hex(&orig),
        LUA_SHA256,
        "Debian's orig tarball is lua.org's tarball, byte for byte"
    );
    let server = Server::start();
    server.route(&format!("/mirror/sha256/{LUA_SHA256}"), Route::Body(orig));
    let store = tmp.path().join("store");
    let o = Command::new(env!("CARGO_BIN_EXE_packager"))
        .env_remove("PACKAGER_STORE")
        .env("NO_COLOR", "1")
        .args(["--recipes", concat!(env!("CARGO_MANIFEST_DIR"), "/recipes")])
        .args(["--cache", tmp.path().join("cache").to_str().unwrap()])
        .args(["--mirror", &format!("{}/mirror", server.base)])
        .args(["-v", "build", "lua", "5.4.4"])
        .args(["--store", store.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("Lua 5.4.4  Copyright (C) 1994-2022"),
        "`lua -v` ran in the test phase: {err}"
    );
    assert!(
        err.contains("# linkage: 2 ELF files checked") && err.contains("0 with missing libraries"),
        "the linkage gate ran in the run image: {err}"
    );
    let artifact = store.join("bookworm/lua-5.4.4.tar.gz");
    assert!(stdout(&o).starts_with(&artifact.display().to_string()));
    let paths: Vec<String> = list_artifact(&artifact)
        .unwrap()
        .iter()
        .map(|e| e.path.to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    for want in ["bin/lua", "bin/luac", "include/lua.h", "lib/liblua.a"] {
        assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
    }
}
