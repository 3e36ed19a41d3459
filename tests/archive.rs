//! Re-packing of source archives: real (and really malicious) tarballs built in the test.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use packager::archive::{
    ArchiveError, ArchiveFormat, Owner, RepackSummary, UnpackLimits, UnsafeReason, WorkTree,
    detect_format, repack_archive, repack_file,
};
use tar::{EntryType, Header};

/// One entry of a test tarball, with raw (possibly malicious) name and link name.
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
}

fn file<'a>(name: &'a str, mode: u32, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind: EntryType::Regular,
        mode,
        link: b"",
        data,
    }
}

fn dir(name: &str) -> Raw<'_> {
    Raw {
        name: name.as_bytes(),
        kind: EntryType::Directory,
        mode: 0o755,
        link: b"",
        data: b"",
    }
}

fn link<'a>(kind: EntryType, name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name: name.as_bytes(),
        kind,
        mode: 0o777,
        link: target.as_bytes(),
        data: b"",
    }
}

/// Writes a tar with raw headers, bypassing the `tar` crate's own path checks.
fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..entry.name.len()].copy_from_slice(entry.name);
        gnu.linkname[..entry.link.len()].copy_from_slice(entry.link);
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(1234);
        header.set_gid(5678);
        header.set_username("mallory").unwrap();
        header.set_groupname("evil").unwrap();
        header.set_mtime(1_600_000_000);
        header.set_size(entry.data.len() as u64);
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn good_entries() -> Vec<u8> {
    raw_tar(&[
        dir("pkg-1.0/"),
        file("pkg-1.0/README", 0o644, b"read me\n"),
        dir("pkg-1.0/bin/"),
        file("pkg-1.0/bin/tool", 0o755, b"#!/bin/sh\necho hi\n"),
        link(EntryType::Link, "pkg-1.0/bin/tool2", "pkg-1.0/bin/tool"),
        dir("./pkg-1.0/lib/"),
        link(EntryType::Symlink, "pkg-1.0/lib/readme", "../README"),
        file("toplevel-file", 0o644, b"dropped by strip"),
    ])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[derive(Debug, PartialEq, Eq)]
struct Out {
    path: String,
    kind: EntryType,
    mode: u32,
    link: Option<String>,
    data: Vec<u8>,
}

/// Parses the produced stream, checking ownership is normalised on every entry.
fn parse(stream: &[u8]) -> Vec<Out> {
    let mut archive = tar::Archive::new(stream);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.username_bytes(), Some(&b""[..]));
        assert_eq!(header.groupname_bytes(), Some(&b""[..]));
        let kind = header.entry_type();
        let mode = header.mode().unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(Out {
            path,
            kind,
            mode,
            link,
            data,
        });
    }
    out
}

fn repack(path: &Path, strip: u32, dest: &str) -> Result<(Vec<u8>, RepackSummary), ArchiveError> {
    let mut stream = Vec::new();
    let summary = repack_archive(path, strip, Path::new(dest), &mut stream)?;
    Ok((stream, summary))
}

fn expected_good() -> Vec<Out> {
    let entry = |path: &str, kind, mode, link: Option<&str>, data: &[u8]| Out {
        path: path.to_owned(),
        kind,
        mode,
        link: link.map(str::to_owned),
        data: data.to_vec(),
    };
    vec![
        entry("deps", EntryType::Directory, 0o755, None, b""),
        entry("deps/foo", EntryType::Directory, 0o755, None, b""),
        entry(
            "deps/foo/README",
            EntryType::Regular,
            0o644,
            None,
            b"read me\n",
        ),
        entry("deps/foo/bin", EntryType::Directory, 0o755, None, b""),
        entry(
            "deps/foo/bin/tool",
            EntryType::Regular,
            0o755,
            None,
            b"#!/bin/sh\necho hi\n",
        ),
        entry(
            "deps/foo/bin/tool2",
            EntryType::Link,
            0o777,
            Some("deps/foo/bin/tool"),
            b"",
        ),
        entry("deps/foo/lib", EntryType::Directory, 0o755, None, b""),
        entry(
            "deps/foo/lib/readme",
            EntryType::Symlink,
            0o777,
            Some("../README"),
            b"",
        ),
    ]
}

#[test]
fn good_archive_with_strip_components_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = good_entries();
    let cases = [
        ("src.tar", tar.clone(), ArchiveFormat::Tar),
        ("src.tgz", gzip(&tar), ArchiveFormat::Gzip),
        ("src.tar.bz2", bzip2(&tar), ArchiveFormat::Bzip2),
        // Misleading name on purpose: detection goes by magic bytes.
        ("src.tar.gz", xz(&tar), ArchiveFormat::Xz),
        ("src.tar.zst", zstd(&tar), ArchiveFormat::Zstd),
        // Two frames, as `zstd` writes for concatenated inputs: both are read.
        (
            "src2.tar.zst",
            [zstd(&tar[..1024]), zstd(&tar[1024..])].concat(),
            ArchiveFormat::Zstd,
        ),
    ];
    for (name, bytes, format) in cases {
        let path = write(tmp.path(), name, &bytes);
        assert_eq!(detect_format(&path).unwrap(), format, "{name}");
        let (stream, summary) = repack(&path, 1, "deps/foo").unwrap();
        assert_eq!(parse(&stream), expected_good(), "{name}");
        assert_eq!(
            summary,
            RepackSummary {
                entries: 8,
                bytes: 8 + 18
            },
            "{name}"
        );
    }
}

#[test]
fn no_strip_keeps_top_directory_at_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "src.tar", &good_entries());
    let (stream, _) = repack(&path, 0, "").unwrap();
    let paths: Vec<String> = parse(&stream).into_iter().map(|o| o.path).collect();
    assert_eq!(
        paths,
        [
            "pkg-1.0",
            "pkg-1.0/README",
            "pkg-1.0/bin",
            "pkg-1.0/bin/tool",
            "pkg-1.0/bin/tool2",
            "pkg-1.0/lib",
            "pkg-1.0/lib/readme",
            "toplevel-file",
        ]
    );
}

/// Repacks `entries` and returns the refused entry's name and reason.
fn refused(entries: &[Raw<'_>], strip: u32) -> (String, UnsafeReason, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "evil.tar.gz", &gzip(&raw_tar(entries)));
    match repack(&path, strip, "deps") {
        Err(err @ ArchiveError::UnsafeEntry { .. }) => {
            let message = err.to_string();
            let ArchiveError::UnsafeEntry {
                path: archive,
                entry,
                reason,
            } = err
            else {
                unreachable!()
            };
            assert_eq!(archive, path);
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&entry), "{message}");
            (entry, reason, message)
        }
        other => panic!("expected a refused entry, got {other:?}"),
    }
}

#[test]
fn refuses_parent_components() {
    let (entry, reason, _) = refused(&[file("../escape", 0o644, b"x")], 0);
    assert_eq!(entry, "../escape");
    assert_eq!(reason, UnsafeReason::ParentComponent);

    // Even when the `..` would be stripped away.
    let (entry, reason, _) = refused(&[file("pkg/a/../../x", 0o644, b"x")], 1);
    assert_eq!(entry, "pkg/a/../../x");
    assert_eq!(reason, UnsafeReason::ParentComponent);
}

#[test]
fn refuses_absolute_paths() {
    let (entry, reason, message) = refused(&[file("/abs/path", 0o644, b"x")], 0);
    assert_eq!(entry, "/abs/path");
    assert_eq!(reason, UnsafeReason::AbsolutePath);
    assert!(message.contains("the path is absolute"), "{message}");
}

#[test]
fn refuses_escaping_symlinks() {
    let (entry, reason, _) = refused(
        &[
            dir("pkg/"),
            dir("pkg/a/"),
            link(EntryType::Symlink, "pkg/a/etc", "../../etc"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/a/etc");
    assert_eq!(reason, UnsafeReason::LinkEscapesRoot("../../etc".into()));

    let (entry, reason, _) = refused(&[link(EntryType::Symlink, "pkg/passwd", "/etc/passwd")], 1);
    assert_eq!(entry, "pkg/passwd");
    assert_eq!(
        reason,
        UnsafeReason::AbsoluteLinkTarget("/etc/passwd".into())
    );

    // Relative to the root left after stripping: `pkg/` is gone, so `../pkg/x` escapes.
    let (entry, _, _) = refused(&[link(EntryType::Symlink, "pkg/x", "../pkg/y")], 1);
    assert_eq!(entry, "pkg/x");
}

#[test]
fn accepts_symlinks_that_stay_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        link(EntryType::Symlink, "pkg/a/b/up", "../../c/./d"),
        link(EntryType::Symlink, "pkg/self", "."),
    ]);
    let path = write(tmp.path(), "ok.tar", &tar);
    let (stream, summary) = repack(&path, 1, "").unwrap();
    assert_eq!(summary.entries, 2);
    let out = parse(&stream);
    assert_eq!(out[0].path, "a/b/up");
    assert_eq!(out[0].kind, EntryType::Symlink);
    assert_eq!(out[1].link.as_deref(), Some("."));
}

#[test]
fn refuses_entries_through_or_over_symlinks() {
    let (entry, reason, _) = refused(
        &[
            link(EntryType::Symlink, "pkg/d", "."),
            link(EntryType::Symlink, "pkg/d/l", "../x"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/d/l");
    assert_eq!(reason, UnsafeReason::BelowSymlink("deps/d".into()));

    let (entry, reason, _) = refused(
        &[
            link(EntryType::Symlink, "pkg/d", "sub"),
            file("pkg/d", 0o644, b"over"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/d");
    assert_eq!(reason, UnsafeReason::ReplacesSymlink);
}

#[test]
fn refuses_hard_links_outside_or_to_unknown_entries() {
    let (entry, reason, _) = refused(&[link(EntryType::Link, "pkg/passwd", "/etc/passwd")], 1);
    assert_eq!(entry, "pkg/passwd");
    assert_eq!(
        reason,
        UnsafeReason::UnknownHardLinkTarget("/etc/passwd".into())
    );

    let (entry, _, _) = refused(&[link(EntryType::Link, "pkg/up", "../outside")], 1);
    assert_eq!(entry, "pkg/up");

    // Target not seen (yet): order matters, as in tar itself.
    let (entry, reason, _) = refused(
        &[
            link(EntryType::Link, "pkg/early", "pkg/file"),
            file("pkg/file", 0o644, b"x"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/early");
    assert_eq!(
        reason,
        UnsafeReason::UnknownHardLinkTarget("pkg/file".into())
    );

    // Target removed by strip_components.
    let (entry, _, _) = refused(
        &[
            file("top", 0o644, b"x"),
            link(EntryType::Link, "pkg/l", "top"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/l");

    // Hard link to a directory.
    let (entry, _, _) = refused(&[dir("pkg/d/"), link(EntryType::Link, "pkg/l", "pkg/d")], 1);
    assert_eq!(entry, "pkg/l");
}

#[test]
fn refuses_devices_and_fifos() {
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let (entry, reason, message) = refused(
            &[
                dir("pkg/"),
                Raw {
                    name: b"pkg/dev/node",
                    kind,
                    mode: 0o600,
                    link: b"",
                    data: b"",
                },
            ],
            1,
        );
        assert_eq!(entry, "pkg/dev/node");
        assert_eq!(reason, UnsafeReason::UnsupportedType(name.into()));
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn failed_stream_has_no_end_of_archive_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        file("pkg/ok", 0o644, b"fine"),
        file("pkg/../../bad", 0o644, b"x"),
    ]);
    let path = write(tmp.path(), "evil.tar", &tar);
    let mut stream = Vec::new();
    let err = repack_archive(&path, 1, Path::new(""), &mut stream).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafeEntry { .. }), "{err:?}");
    // One header and one data block for `ok`, and nothing else.
    assert_eq!(stream.len(), 1024);
}

#[test]
fn long_names_pax_and_gnu_and_zero_size_pax_headers() {
    let long = format!("pkg/{}/file", "d".repeat(150));
    let long_target = format!("{}/target", "t".repeat(120));

    let mut builder = tar::Builder::new(Vec::new());
    // pax global header, as written by `git archive`.
    let mut global = Header::new_ustar();
    global.set_path("pax_global_header").unwrap();
    global.set_entry_type(EntryType::XGlobalHeader);
    let record = b"52 comment=0123456789012345678901234567890123456789\n";
    global.set_size(record.len() as u64);
    global.set_cksum();
    builder.append(&global, &record[..]).unwrap();
    // GNU long name (the tar crate writes these for long paths in GNU headers).
    let mut header = Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o755);
    builder
        .append_data(&mut header, &long, &b"long"[..])
        .unwrap();
    // pax long name.
    builder
        .append_pax_extensions([("path", format!("pkg/pax/{}", "p".repeat(120)).as_bytes())])
        .unwrap();
    let mut header = Header::new_ustar();
    header.set_path("pkg/pax/short").unwrap();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"pax"[..]).unwrap();
    // Zero-size pax header before a regular entry.
    let mut empty_pax = Header::new_ustar();
    empty_pax.set_path("PaxHeaders/empty").unwrap();
    empty_pax.set_entry_type(EntryType::XHeader);
    empty_pax.set_size(0);
    empty_pax.set_cksum();
    builder.append(&empty_pax, std::io::empty()).unwrap();
    let mut header = Header::new_ustar();
    header.set_path("pkg/after-empty-pax").unwrap();
    header.set_size(2);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"ok"[..]).unwrap();
    // Long symlink target, inside the root.
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder
        .append_link(&mut header, format!("pkg/{long_target}-link"), &long_target)
        .unwrap();
    let tar = builder.into_inner().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "long.tar.gz", &gzip(&tar));
    let (stream, summary) = repack(&path, 1, "x").unwrap();
    let out = parse(&stream);
    let paths: Vec<&str> = out.iter().map(|o| o.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "x".to_owned(),
            format!("x/{}/file", "d".repeat(150)),
            format!("x/pax/{}", "p".repeat(120)),
            "x/after-empty-pax".to_owned(),
            format!("x/{long_target}-link"),
        ]
    );
    assert_eq!(out[1].data, b"long");
    assert_eq!(out[1].mode, 0o755);
    assert_eq!(out[2].data, b"pax");
    assert_eq!(out[3].data, b"ok");
    assert_eq!(out[4].link.as_deref(), Some(long_target.as_str()));
    assert_eq!(summary.entries, 5);
    assert_eq!(summary.bytes, 9);
}

#[test]
fn unknown_format_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "notes.tar.gz",
        b"just some text, not an archive",
    );
    let err = repack(&path, 0, "").unwrap_err();
    assert!(
        matches!(&err, ArchiveError::UnknownFormat { path: p } if p == &path),
        "{err:?}"
    );
}

#[test]
fn corrupt_compressed_archive_is_a_read_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = gzip(&good_entries());
    let len = bytes.len();
    bytes.truncate(len / 2);
    let path = write(tmp.path(), "cut.tar.gz", &bytes);
    let err = repack(&path, 1, "").unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Read { path: p, .. } | ArchiveError::ReadEntry { path: p, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn plain_file_is_placed_at_its_destination() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let patch = write(tmp.path(), "fix.patch", b"--- a\n+++ b\n");
    std::fs::set_permissions(&patch, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut stream = Vec::new();
    let summary = repack_file(&patch, Path::new("patches/fix.patch"), &mut stream).unwrap();
    assert_eq!(
        summary,
        RepackSummary {
            entries: 2,
            bytes: 12
        }
    );
    let out = parse(&stream);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].path, "patches");
    assert_eq!(out[0].kind, EntryType::Directory);
    assert_eq!(out[1].path, "patches/fix.patch");
    assert_eq!(out[1].kind, EntryType::Regular);
    assert_eq!(out[1].mode, 0o640);
    assert_eq!(out[1].data, b"--- a\n+++ b\n");

    for bad in ["../fix.patch", "/tmp/fix.patch", ""] {
        let err = repack_file(&patch, Path::new(bad), Vec::new()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::InvalidDestination { dest, .. } if dest == Path::new(bad)),
            "{bad}: {err:?}"
        );
    }
}

/// A raw header of `kind` named `name` with `data` (GNU long-name records, sparse entries):
/// the `tar` crate's builder would refuse or rewrite them.
fn raw_entry(builder: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &[u8], data: &[u8]) {
    let mut header = Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    // A sparse entry's real size (the map of its holes is empty).
    gnu.realsize.copy_from_slice(b"00000000000\0");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

/// A raw symlink header (its target may be left to a preceding pax or GNU record).
fn raw_symlink(builder: &mut tar::Builder<Vec<u8>>, name: &[u8], target: &[u8]) {
    let mut header = Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    gnu.linkname[..target.len()].copy_from_slice(target);
    header.set_entry_type(EntryType::Symlink);
    header.set_mode(0o777);
    header.set_mtime(0);
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, std::io::empty()).unwrap();
}

fn refused_tar(tar: Vec<u8>) -> (String, UnsafeReason) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "smuggled.tar.gz", &gzip(&tar));
    match repack(&path, 1, "") {
        Err(ArchiveError::UnsafeEntry { entry, reason, .. }) => (entry, reason),
        other => panic!("expected a refused entry, got {other:?}"),
    }
}

#[test]
fn pax_size_smuggling_is_refused() {
    // A pax `size` record that disagrees with the header: readers that trust one or the other
    // see different entries after it (RUSTSEC-2026-0068). Here the header says 3 bytes and the
    // record 1536, which would swallow the next entry, a hidden `../escape`.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("size", &b"1536"[..])])
        .unwrap();
    let mut header = Header::new_ustar();
    header.set_path("pkg/innocent").unwrap();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"abc"[..]).unwrap();
    raw_entry(&mut builder, EntryType::Regular, b"pkg/../escape", b"owned");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/innocent");
    assert_eq!(
        reason,
        UnsafeReason::PaxSizeMismatch {
            pax: "1536".into(),
            header: 3
        }
    );
    assert!(reason.to_string().contains("disagrees"), "{reason}");

    // A record that agrees is fine.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("size", &b"3"[..])])
        .unwrap();
    let mut header = Header::new_ustar();
    header.set_path("pkg/fine").unwrap();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"abc"[..]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "fine.tar.gz",
        &gzip(&builder.into_inner().unwrap()),
    );
    let (stream, _) = repack(&path, 1, "").unwrap();
    assert_eq!(parse(&stream)[0].data, b"abc");
}

#[test]
fn pax_and_gnu_long_paths_and_link_targets_are_checked_like_short_ones() {
    // pax `path` with `..`
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("path", &b"pkg/../../etc/cron.d/evil"[..])])
        .unwrap();
    raw_entry(&mut builder, EntryType::Regular, b"pkg/harmless", b"x");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/../../etc/cron.d/evil");
    assert_eq!(reason, UnsafeReason::ParentComponent);

    // pax `path` absolute
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("path", &b"/etc/passwd"[..])])
        .unwrap();
    raw_entry(&mut builder, EntryType::Regular, b"pkg/harmless", b"x");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "/etc/passwd");
    assert_eq!(reason, UnsafeReason::AbsolutePath);

    // pax `linkpath` absolute, on a symlink whose header target is harmless
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("linkpath", &b"/etc/shadow"[..])])
        .unwrap();
    raw_symlink(&mut builder, b"pkg/link", b"file");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/link");
    assert_eq!(
        reason,
        UnsafeReason::AbsoluteLinkTarget("/etc/shadow".into())
    );

    // GNU long name (`L` record) with `..`
    let mut builder = tar::Builder::new(Vec::new());
    raw_entry(
        &mut builder,
        EntryType::GNULongName,
        b"././@LongLink",
        b"pkg/../../../home/evil\0",
    );
    raw_entry(&mut builder, EntryType::Regular, b"pkg/harmless", b"x");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/../../../home/evil");
    assert_eq!(reason, UnsafeReason::ParentComponent);

    // GNU long link (`K` record) escaping the root
    let mut builder = tar::Builder::new(Vec::new());
    raw_entry(
        &mut builder,
        EntryType::GNULongLink,
        b"././@LongLink",
        b"../../../../../etc\0",
    );
    raw_symlink(&mut builder, b"pkg/etc2", b"");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/etc2");
    assert_eq!(
        reason,
        UnsafeReason::LinkEscapesRoot("../../../../../etc".into())
    );
}

#[test]
fn gnu_sparse_entries_are_refused_not_mis_sized() {
    let mut builder = tar::Builder::new(Vec::new());
    raw_entry(&mut builder, EntryType::GNUSparse, b"pkg/sparse", b"");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/sparse");
    assert_eq!(
        reason,
        UnsafeReason::UnsupportedType("GNU sparse file".into())
    );
}

#[test]
fn a_decompression_bomb_stops_at_the_limit_naming_the_archive() {
    // 8 MiB of zeros: a few KiB of gzip.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_gnu();
    header.set_size(8 << 20);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "pkg/zeros", std::io::repeat(0).take(8 << 20))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "bomb.tar.gz",
        &gzip(&builder.into_inner().unwrap()),
    );
    assert!(std::fs::metadata(&path).unwrap().len() < 64 << 10);

    let mut tree = WorkTree::new(
        Owner::ROOT,
        UnpackLimits::for_sources(0, Some(1 << 20), None),
    );
    let mut stream = Vec::new();
    let err = tree
        .repack_archive(&path, 1, Path::new(""), &mut stream)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, ArchiveError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err:?}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("1048576 bytes"), "{message}");
    // It stopped there: not the 8 MiB.
    assert!(stream.len() < 2 << 20, "{}", stream.len());

    // Under the default limit (2 GiB here) the same archive is fine.
    let (stream, summary) = repack(&path, 1, "").unwrap();
    assert_eq!(summary.bytes, 8 << 20);
    assert!(stream.len() > 8 << 20);
    assert_eq!(packager::archive::default_max_unpacked(1 << 20), 2 << 30);
    assert_eq!(
        packager::archive::default_max_unpacked(100 << 20),
        5000 << 20
    );
}

/// A work tree with the default limits for small archives, owned by root.
fn default_tree() -> WorkTree {
    WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, None))
}

#[test]
fn symlink_chains_are_refused_in_either_order() {
    // `a/b -> ..` is the root and `c -> a/b/../..` is then above it, though each link alone,
    // read lexically, stays inside.
    let (entry, reason, message) = refused(
        &[
            dir("pkg/a/"),
            link(EntryType::Symlink, "pkg/a/b", ".."),
            link(EntryType::Symlink, "pkg/c", "a/b/../.."),
        ],
        1,
    );
    assert_eq!(entry, "pkg/c");
    assert_eq!(
        reason,
        UnsafeReason::LinkChainEscapes {
            target: "a/b/../..".into(),
            through: "deps/a/b".into()
        }
    );
    assert!(
        message.contains("through the symlink `deps/a/b`"),
        "{message}"
    );
    // Refused before it is written: the engine never sees the link.
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "chain.tar",
        &raw_tar(&[
            dir("pkg/a/"),
            link(EntryType::Symlink, "pkg/a/b", ".."),
            link(EntryType::Symlink, "pkg/c", "a/b/../.."),
        ]),
    );
    let mut stream = Vec::new();
    repack_archive(&path, 1, Path::new(""), &mut stream).unwrap_err();
    let written: Vec<String> = tar::Archive::new(&stream[..])
        .entries()
        .unwrap()
        .map_while(Result::ok)
        .map(|e| e.path().unwrap().display().to_string())
        .collect();
    assert_eq!(written, ["a", "a/b"]);

    // The same links the other way round: `c` is refused once `a/b` is known.
    let (entry, reason, _) = refused(
        &[
            link(EntryType::Symlink, "pkg/c", "a/b/../.."),
            dir("pkg/a/"),
            link(EntryType::Symlink, "pkg/a/b", ".."),
        ],
        1,
    );
    assert_eq!(entry, "pkg/c");
    assert!(
        matches!(reason, UnsafeReason::LinkChainEscapes { .. }),
        "{reason:?}"
    );

    // A loop.
    let (entry, reason, _) = refused(
        &[
            link(EntryType::Symlink, "pkg/x", "y"),
            link(EntryType::Symlink, "pkg/y", "x"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/x");
    assert_eq!(reason, UnsafeReason::LinkLoop("y".into()));

    // Chains that stay inside are fine.
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        dir("pkg/usr/lib/"),
        link(EntryType::Symlink, "pkg/lib", "usr/lib"),
        link(EntryType::Symlink, "pkg/usr/lib/up", ".."),
        link(EntryType::Symlink, "pkg/top", "lib/up/.."),
    ]);
    let path = write(tmp.path(), "ok.tar", &tar);
    let (stream, _) = repack(&path, 1, "").unwrap();
    assert_eq!(parse(&stream).len(), 4);
}

#[test]
fn links_are_followed_through_an_earlier_archive_of_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    // The source: `x -> y/z/../..`, lexically the root.
    let source = write(
        tmp.path(),
        "source.tar",
        &raw_tar(&[
            dir("pkg/y/"),
            link(EntryType::Symlink, "pkg/x", "y/z/../.."),
        ]),
    );
    // A resource unpacked at `y`: `z -> .` is harmless alone, but makes `x` the parent of the
    // work tree.
    let resource = write(
        tmp.path(),
        "resource.tar",
        &raw_tar(&[link(EntryType::Symlink, "res/z", ".")]),
    );
    let mut tree = default_tree();
    tree.repack_archive(&source, 1, Path::new(""), &mut Vec::new())
        .unwrap();
    let err = tree
        .repack_archive(&resource, 1, Path::new("y"), &mut Vec::new())
        .unwrap_err();
    match err {
        ArchiveError::UnsafeEntry {
            path,
            entry,
            reason,
        } => {
            // Named where it is: the source's `x`.
            assert_eq!(path, source);
            assert_eq!(entry, "pkg/x");
            assert_eq!(
                reason,
                UnsafeReason::LinkChainEscapes {
                    target: "y/z/../..".into(),
                    through: "y/z".into()
                }
            );
        }
        other => panic!("expected a refused link, got {other:?}"),
    }

    // A resource whose destination goes through a link of the source.
    let source = write(
        tmp.path(),
        "source2.tar",
        &raw_tar(&[link(EntryType::Symlink, "pkg/lib", "sub")]),
    );
    let resource = write(
        tmp.path(),
        "resource2.tar",
        &raw_tar(&[file("res/f", 0o644, b"x")]),
    );
    let mut tree = default_tree();
    tree.repack_archive(&source, 1, Path::new(""), &mut Vec::new())
        .unwrap();
    let mut stream = Vec::new();
    let err = tree
        .repack_archive(&resource, 1, Path::new("lib/x"), &mut stream)
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::UnsafeEntry { entry, reason: UnsafeReason::BelowSymlink(l), .. } if l == "lib" && entry == "lib/x"),
        "{err:?}"
    );
    // Refused before its directories are written.
    assert!(stream.is_empty(), "{} bytes written", stream.len());
    // A plain file too.
    let err = tree
        .repack_file(&resource, Path::new("lib/patch"), &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::UnsafeEntry { reason: UnsafeReason::BelowSymlink(l), .. } if l == "lib"),
        "{err:?}"
    );
}

#[test]
fn hard_links_through_symlinks_and_directories_over_symlinks_are_refused() {
    let (entry, reason, _) = refused(
        &[
            dir("pkg/sub/"),
            file("pkg/sub/f", 0o644, b"x"),
            link(EntryType::Symlink, "pkg/d", "sub"),
            link(EntryType::Link, "pkg/h", "pkg/d/f"),
        ],
        1,
    );
    assert_eq!(entry, "pkg/h");
    assert_eq!(reason, UnsafeReason::BelowSymlink("deps/d".into()));

    let (entry, reason, _) = refused(
        &[link(EntryType::Symlink, "pkg/d", "sub"), dir("pkg/d/")],
        1,
    );
    assert_eq!(entry, "pkg/d/");
    assert_eq!(reason, UnsafeReason::ReplacesSymlink);
}

#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        Raw {
            mode: 0o3775,
            ..dir("pkg/shared/")
        },
        file("pkg/suid", 0o4755, b"#!/bin/sh\n"),
        file("pkg/sgid", 0o2711, b"#!/bin/sh\n"),
    ]);
    let path = write(tmp.path(), "suid.tar", &tar);
    let (stream, _) = repack(&path, 1, "").unwrap();
    let modes: Vec<(String, u32)> = parse(&stream)
        .into_iter()
        .map(|o| (o.path, o.mode))
        .collect();
    assert_eq!(
        modes,
        [
            ("shared".to_owned(), 0o775),
            ("suid".to_owned(), 0o755),
            ("sgid".to_owned(), 0o711),
        ]
    );

    // A plain file (a patch, a resource) too.
    use std::os::unix::fs::PermissionsExt;
    let plain = write(tmp.path(), "tool", b"#!/bin/sh\n");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o6755)).unwrap();
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o7777,
        0o6755
    );
    let mut stream = Vec::new();
    repack_file(&plain, Path::new("bin/tool"), &mut stream).unwrap();
    assert_eq!(parse(&stream).last().unwrap().mode, 0o755);
}

#[test]
fn a_huge_pax_header_is_refused_from_its_size_naming_the_archive() {
    // A pax header declaring 64 MiB, followed by zeros (only 4 MiB of them here, to keep the
    // test fast: the body is never read). Read whole, as the `tar` crate does, 64 MiB would be
    // memory (and 2 GiB from a 2 MB archive).
    let declared: u64 = 64 << 20;
    let mut tar = Vec::new();
    let mut header = Header::new_ustar();
    header.set_path("PaxHeaders/bomb").unwrap();
    header.set_entry_type(EntryType::XHeader);
    header.set_size(declared);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(4 << 20), &mut gz).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "pax-bomb.tar.gz", &gz.finish().unwrap());
    assert!(std::fs::metadata(&path).unwrap().len() < 256 << 10);

    let mut stream = Vec::new();
    let err = repack_archive(&path, 1, Path::new(""), &mut stream).unwrap_err();
    let message = err.to_string();
    match err {
        ArchiveError::UnsafeEntry { entry, reason, .. } => {
            assert_eq!(entry, "PaxHeaders/bomb");
            assert_eq!(
                reason,
                UnsafeReason::RecordTooLarge {
                    record: "pax header",
                    size: declared,
                    limit: packager::archive::MAX_PAX_HEADER
                }
            );
        }
        other => panic!("expected a refused pax header, got {other:?}"),
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("more than the 1048576 allowed"),
        "{message}"
    );
    assert!(stream.is_empty());
}

#[test]
fn the_size_limit_is_for_all_the_archives_of_a_build_together() {
    // Three archives of 600 KiB each (unpacked) against a limit of 1 MiB: the second passes it.
    let tmp = tempfile::tempdir().unwrap();
    let data = vec![7u8; 600 << 10];
    let archives: Vec<PathBuf> = (0..3)
        .map(|i| {
            write(
                tmp.path(),
                &format!("part{i}.tar.gz"),
                &gzip(&raw_tar(&[file("pkg/data", 0o644, &data)])),
            )
        })
        .collect();
    let mut tree = WorkTree::new(
        Owner::ROOT,
        UnpackLimits::for_sources(0, Some(1 << 20), None),
    );
    tree.repack_archive(&archives[0], 1, Path::new("a"), &mut Vec::new())
        .unwrap();
    assert!(tree.unpacked_bytes() > 600 << 10);
    let err = tree
        .repack_archive(&archives[1], 1, Path::new("b"), &mut Vec::new())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ArchiveError::TooLarge { path, limit, .. } if *path == archives[1] && *limit == 1 << 20),
        "{err:?}"
    );
    assert!(message.contains("together"), "{message}");
    assert!(message.contains("max_unpacked_size"), "{message}");

    // A plain file counts too.
    let mut tree = WorkTree::new(
        Owner::ROOT,
        UnpackLimits::for_sources(0, Some(1 << 20), None),
    );
    tree.repack_archive(&archives[0], 1, Path::new("a"), &mut Vec::new())
        .unwrap();
    let plain = write(tmp.path(), "plain", &data);
    let err = tree
        .repack_file(&plain, Path::new("b/file"), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");

    // The default is 2 GiB or 50 times the archives' sizes together.
    let limits = UnpackLimits::for_sources(100 << 20, None, None);
    assert_eq!(limits.max_bytes, 5000 << 20);
}

#[test]
fn the_entry_limit_is_for_all_the_archives_of_a_build_together() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = |name: &str| {
        write(
            tmp.path(),
            name,
            &raw_tar(&[
                dir("pkg/"),
                file("pkg/one", 0o644, b"1"),
                file("pkg/two", 0o644, b"2"),
            ]),
        )
    };
    let (first, second) = (archive("first.tar"), archive("second.tar"));
    let mut tree = WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, Some(5)));
    tree.repack_archive(&first, 1, Path::new("a"), &mut Vec::new())
        .unwrap();
    // Stripped entries count: they were read.
    assert_eq!(tree.entries(), 3);
    let err = tree
        .repack_archive(&second, 1, Path::new("b"), &mut Vec::new())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ArchiveError::TooManyEntries { path, limit: 5, .. } if *path == second),
        "{err:?}"
    );
    assert!(message.contains("more than 5 entries"), "{message}");
    assert!(
        message.contains("`[build] max_unpacked_entries`"),
        "{message}"
    );

    // A plain file is one entry.
    let mut tree = WorkTree::new(Owner::ROOT, UnpackLimits::for_sources(0, None, Some(3)));
    tree.repack_archive(&first, 1, Path::new("a"), &mut Vec::new())
        .unwrap();
    let err = tree
        .repack_file(&first, Path::new("b/file"), &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyEntries { .. }),
        "{err:?}"
    );

    // The default.
    let limits = UnpackLimits::for_sources(0, None, None);
    assert_eq!(limits.max_entries, packager::archive::DEFAULT_MAX_ENTRIES);
    assert_eq!(limits.max_entries, 1_000_000);
    let default_message = ArchiveError::TooManyEntries {
        path: first.clone(),
        limit: limits.max_entries,
        origin: limits.entries_origin,
    }
    .to_string();
    assert!(
        default_message.contains("1000000 per build (`[build] max_unpacked_entries` raises it)"),
        "{default_message}"
    );
}

#[test]
fn paths_and_link_targets_longer_than_path_max_are_refused() {
    // A pax `path` record may be up to 1 MiB; a path may not be longer than PATH_MAX.
    let long = format!("pkg/{}", "p".repeat(5000));
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    raw_entry(&mut builder, EntryType::Regular, b"pkg/harmless", b"x");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(reason, UnsafeReason::PathTooLong { len: 5004 });
    // The name is shortened in the error.
    assert_eq!(entry, format!("pkg/{}…", "p".repeat(96)));

    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("linkpath", "t/".repeat(3000).as_bytes())])
        .unwrap();
    raw_symlink(&mut builder, b"pkg/link", b"t");
    let (entry, reason) = refused_tar(builder.into_inner().unwrap());
    assert_eq!(entry, "pkg/link");
    assert_eq!(reason, UnsafeReason::PathTooLong { len: 6000 });
}

#[test]
fn the_paths_kept_for_the_checks_are_bounded() {
    // Long names are cheap in a compressed archive; the host keeps each path (and each link's
    // target) to check hard links and symlinks, within a budget.
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..4)
        .map(|i| format!("pkg/{i}{}", "n".repeat(90)))
        .collect();
    let mut entries: Vec<Raw<'_>> = names.iter().map(|n| file(n, 0o644, b"x")).collect();
    entries.push(link(EntryType::Symlink, "pkg/l", &names[0][4..]));
    let path = write(tmp.path(), "names.tar", &raw_tar(&entries));
    let limits = |max_name_bytes| UnpackLimits {
        max_name_bytes,
        ..UnpackLimits::for_sources(0, None, None)
    };
    // 4 paths of 91 bytes (after stripping), then the link: its path, target and name, and its
    // path again for the archive's own map.
    let mut tree = WorkTree::new(Owner::ROOT, limits(364 + 1 + 91 + 5 + 1));
    tree.repack_archive(&path, 1, Path::new(""), &mut Vec::new())
        .unwrap();
    for max in [300, 364 + 1 + 91 + 5] {
        let err = WorkTree::new(Owner::ROOT, limits(max))
            .repack_archive(&path, 1, Path::new(""), &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(&err, ArchiveError::TooManyNames { limit, .. } if *limit == max),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(
        UnpackLimits::for_sources(0, None, None).max_name_bytes,
        256 << 20
    );
}
