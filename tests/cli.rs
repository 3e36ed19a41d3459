//! `--help` output, snapshot-tested so that changes to the interface are seen in review.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_packager"))
        .args(args)
        .env_clear()
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn help_snapshots() {
    insta::assert_snapshot!("help", help(&["--help"]));
    for sub in [
        "list",
        "show",
        "fetch",
        "build",
        "shell",
        "stack",
        "plan",
        "inventory",
        "verify",
        "test",
        "cache",
        "checksum",
    ] {
        insta::assert_snapshot!(format!("help_{sub}"), help(&[sub, "--help"]));
    }
    for sub in ["status", "prune", "verify"] {
        insta::assert_snapshot!(format!("help_cache_{sub}"), help(&["cache", sub, "--help"]));
    }
}

#[test]
fn version_flag() {
    assert_eq!(
        help(&["--version"]),
        format!("packager {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn shell_arguments_are_checked() {
    for args in [
        &["shell"][..],
        &["shell", "lua"][..],
        &["shell", "--attach", "abc", "lua", "5.4.4"][..],
        &["shell", "--attach", "abc", "--after", "build"][..],
        &["shell", "lua", "5.4.4", "--after", "test"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_packager"))
            .args(args)
            .env_clear()
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}
