//! Deterministic artifacts from Docker-style tar streams of `/app`.

use std::io::Read;
use std::path::{Path, PathBuf};

use packager::package::{
    ArtifactEntry, ArtifactFormat, DEFAULT_MTIME, DEFAULT_ZSTD_LEVEL, EntryKind, PackageError,
    PackageOptions, Refusal, list_artifact, mtime_from_source_date_epoch, open_artifact,
    package_tar_stream, read_artifact_files,
};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// An entry of the stream Docker would send, with build-time noise (owners, times).
#[derive(Clone)]
struct In {
    path: String,
    kind: EntryType,
    mode: u32,
    link: String,
    data: Vec<u8>,
}

fn d(path: &str) -> In {
    In {
        path: path.into(),
        kind: EntryType::Directory,
        mode: 0o775,
        link: String::new(),
        data: Vec::new(),
    }
}

fn f(path: &str, mode: u32, data: &[u8]) -> In {
    In {
        path: path.into(),
        kind: EntryType::Regular,
        mode,
        link: String::new(),
        data: data.to_vec(),
    }
}

fn l(kind: EntryType, path: &str, target: &str) -> In {
    In {
        path: path.into(),
        kind,
        mode: 0o777,
        link: target.into(),
        data: Vec::new(),
    }
}

/// Builds a stream like Go's archive/tar writes (ustar, pax for long names), with `noise`
/// varying owners and times.
fn stream(entries: &[In], noise: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (i, entry) in entries.iter().enumerate() {
        let mut header = Header::new_ustar();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(1000 + noise);
        header.set_gid(2000 + noise);
        header.set_username(&format!("builder{noise}")).unwrap();
        header.set_groupname("staff").unwrap();
        header.set_mtime(1_700_000_000 + noise * 1000 + i as u64);
        header.set_size(entry.data.len() as u64);
        let long_path = entry.path.len() > 99;
        let long_link = entry.link.len() > 99;
        if long_path || long_link {
            let mut records: Vec<(&str, &[u8])> = Vec::new();
            if long_path {
                records.push(("path", entry.path.as_bytes()));
            }
            if long_link {
                records.push(("linkpath", entry.link.as_bytes()));
            }
            builder.append_pax_extensions(records).unwrap();
        }
        let short_path = if long_path {
            "placeholder"
        } else {
            &entry.path
        };
        header.set_path(short_path).unwrap();
        if !entry.link.is_empty() {
            let short_link = if long_link {
                "placeholder"
            } else {
                &entry.link
            };
            header.set_link_name(short_link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, &entry.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn tree() -> Vec<In> {
    vec![
        d("app/"),
        d("app/bin/"),
        f("app/bin/ruby", 0o700, b"\x7fELF ruby"),
        f("app/bin/erb", 0o744, b"#!/app/bin/ruby\n"),
        d("app/lib/"),
        f("app/lib/libruby.so.3.3.0", 0o664, b"shared object"),
        l(
            EntryType::Symlink,
            "app/lib/libruby.so.3.3",
            "libruby.so.3.3.0",
        ),
        l(
            EntryType::Symlink,
            "app/lib/libruby.so",
            "/app/lib/libruby.so.3.3.0",
        ),
        l(EntryType::Symlink, "app/bin/lib", "/app/lib"),
        l(EntryType::Symlink, "app/lib/root", "/app"),
        d("app/share/"),
        f("app/share/README", 0o600, b"docs"),
    ]
}

fn options() -> PackageOptions {
    PackageOptions {
        threads: 2,
        ..PackageOptions::new("/app")
    }
}

fn package(entries: &[In], noise: u64, dir: &Path, name: &str) -> Result<PathBuf, PackageError> {
    let dest = dir.join(name);
    let input = stream(entries, noise);
    let artifact = package_tar_stream(&input[..], &dest, &options())?;
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(artifact.path, dest);
    assert_eq!(artifact.size, bytes.len() as u64);
    assert_eq!(artifact.sha256, hex::encode(Sha256::digest(&bytes)));
    Ok(dest)
}

fn entry(path: &str, kind: EntryKind, mode: u32, link: Option<&str>, data: &[u8]) -> ArtifactEntry {
    ArtifactEntry {
        path: path.into(),
        kind,
        mode,
        size: if kind == EntryKind::File {
            data.len() as u64
        } else {
            0
        },
        link_target: link.map(PathBuf::from),
        sha256: (kind == EntryKind::File).then(|| hex::encode(Sha256::digest(data))),
    }
}

/// Raw headers of the decompressed artifact, GNU long-name records included.
fn raw_headers(artifact: &Path) -> Vec<Header> {
    let file = std::fs::File::open(artifact).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut headers = Vec::new();
    for entry in archive.entries().unwrap().raw(true) {
        headers.push(entry.unwrap().header().clone());
    }
    headers
}

#[test]
fn same_tree_in_any_order_with_any_owners_and_times_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shuffled = tree();
    shuffled.reverse();
    // The prefix directory must come first in a real stream; its position does not matter here.
    shuffled.rotate_right(1);
    let a = package(&tree(), 1, tmp.path(), "a.tar.gz").unwrap();
    let b = package(&shuffled, 7, tmp.path(), "b.tar.gz").unwrap();
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn entries_are_sorted_relative_and_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = package(&tree(), 3, tmp.path(), "ruby.tar.gz").unwrap();
    let listed = list_artifact(&artifact).unwrap();
    assert_eq!(
        listed,
        vec![
            entry("bin", EntryKind::Directory, 0o755, None, b""),
            entry(
                "bin/erb",
                EntryKind::File,
                0o755,
                None,
                b"#!/app/bin/ruby\n"
            ),
            entry("bin/lib", EntryKind::Symlink, 0o777, Some("../lib"), b""),
            entry("bin/ruby", EntryKind::File, 0o755, None, b"\x7fELF ruby"),
            entry("lib", EntryKind::Directory, 0o755, None, b""),
            entry(
                "lib/libruby.so",
                EntryKind::Symlink,
                0o777,
                Some("libruby.so.3.3.0"),
                b""
            ),
            entry(
                "lib/libruby.so.3.3",
                EntryKind::Symlink,
                0o777,
                Some("libruby.so.3.3.0"),
                b""
            ),
            entry(
                "lib/libruby.so.3.3.0",
                EntryKind::File,
                0o644,
                None,
                b"shared object"
            ),
            entry("lib/root", EntryKind::Symlink, 0o777, Some(".."), b""),
            entry("share", EntryKind::Directory, 0o755, None, b""),
            entry("share/README", EntryKind::File, 0o644, None, b"docs"),
        ]
    );
    for header in raw_headers(&artifact) {
        assert!(header.as_gnu().is_some(), "GNU headers only");
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mtime().unwrap(), DEFAULT_MTIME);
        assert_eq!(header.username_bytes(), Some(&b""[..]));
        assert_eq!(header.groupname_bytes(), Some(&b""[..]));
        let gnu = header.as_gnu().unwrap();
        assert_eq!(gnu.atime, [0; 12]);
        assert_eq!(gnu.ctime, [0; 12]);
    }
}

#[test]
fn mtime_option_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("x.tar.gz");
    let opts = PackageOptions {
        mtime: 1_234_567_890,
        ..options()
    };
    package_tar_stream(&stream(&tree(), 0)[..], &dest, &opts).unwrap();
    for header in raw_headers(&dest) {
        assert_eq!(header.mtime().unwrap(), 1_234_567_890);
    }
    assert_eq!(mtime_from_source_date_epoch(None).unwrap(), DEFAULT_MTIME);
    assert_eq!(
        mtime_from_source_date_epoch(Some("1700000000")).unwrap(),
        1_700_000_000
    );
    assert!(matches!(
        mtime_from_source_date_epoch(Some("yesterday")),
        Err(PackageError::InvalidSourceDateEpoch { value }) if value == "yesterday"
    ));
}

#[test]
fn gzip_header_has_no_name_and_zero_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = package(&tree(), 0, tmp.path(), "ruby.tar.gz").unwrap();
    let bytes = std::fs::read(artifact).unwrap();
    assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "gzip magic, deflate");
    assert_eq!(bytes[3] & 0x08, 0, "no FNAME flag");
    assert_eq!(bytes[3], 0, "no flags at all");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    // The whole stream decodes and its trailer (CRC, size) is checked by the decoder.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut tar)
        .unwrap();
    let isize = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    assert_eq!(isize as usize, tar.len());
}

#[test]
fn level_is_configurable_and_threads_do_not_change_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 % 16 + b'a')
        .collect();
    let input = stream(&[d("app/"), f("app/data", 0o644, &big)], 0);
    let run = |level, threads, name: &str| {
        let dest = tmp.path().join(name);
        let opts = PackageOptions {
            level,
            threads,
            ..options()
        };
        package_tar_stream(&input[..], &dest, &opts).unwrap();
        std::fs::read(dest).unwrap()
    };
    let one = run(6, 1, "one");
    let four = run(6, 4, "four");
    assert_eq!(one, four);
    let fast = run(1, 2, "fast");
    let best = run(9, 2, "best");
    assert_ne!(fast, best);
    assert!(best.len() < fast.len());
    let bad = PackageOptions {
        level: 10,
        ..options()
    };
    let err = package_tar_stream(&input[..], &tmp.path().join("bad"), &bad).unwrap_err();
    assert!(matches!(err, PackageError::InvalidLevel { level: 10 }));
}

#[test]
fn hard_links_first_in_sorted_order_carries_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let entries = [
        d("app/"),
        d("app/z/"),
        f("app/z/ruby", 0o755, b"binary"),
        d("app/a/"),
        l(EntryType::Link, "app/a/ruby3", "app/z/ruby"),
        l(EntryType::Link, "app/m/ruby-link", "app/a/ruby3"),
    ];
    // `app/m/` has no directory entry: allowed, as in any tar.
    let artifact = package(&entries, 0, tmp.path(), "links.tar.gz").unwrap();
    assert_eq!(
        list_artifact(&artifact).unwrap(),
        vec![
            entry("a", EntryKind::Directory, 0o755, None, b""),
            entry("a/ruby3", EntryKind::File, 0o755, None, b"binary"),
            entry(
                "m/ruby-link",
                EntryKind::HardLink,
                0o755,
                Some("a/ruby3"),
                b""
            ),
            entry("z", EntryKind::Directory, 0o755, None, b""),
            entry("z/ruby", EntryKind::HardLink, 0o755, Some("a/ruby3"), b""),
        ]
    );
}

#[test]
fn long_names_are_deterministic_gnu_records() {
    let tmp = tempfile::tempdir().unwrap();
    let long_dir = format!("app/{}", "d".repeat(120));
    let long_file = format!("{long_dir}/{}", "f".repeat(90));
    let long_target = format!("{}/{}", "d".repeat(120), "f".repeat(90));
    let entries = [
        d("app/"),
        d(&format!("{long_dir}/")),
        f(&long_file, 0o644, b"long"),
        l(EntryType::Symlink, "app/link", &long_target),
    ];
    let a = package(&entries, 0, tmp.path(), "a.tar.gz").unwrap();
    let b = package(&entries, 9, tmp.path(), "b.tar.gz").unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let kinds: Vec<EntryType> = raw_headers(&a).iter().map(Header::entry_type).collect();
    assert_eq!(
        kinds,
        [
            EntryType::GNULongName,
            EntryType::Directory,
            EntryType::GNULongName,
            EntryType::Regular,
            EntryType::GNULongLink,
            EntryType::Symlink,
        ]
    );
    let listed = list_artifact(&a).unwrap();
    assert_eq!(listed[1].path, Path::new(&long_file["app/".len()..]));
    assert_eq!(
        listed[2].link_target.as_deref(),
        Some(Path::new(&long_target))
    );
}

/// Packages `entries`, expecting a refusal; checks nothing is left in the directory.
fn refused(entries: &[In]) -> (String, Refusal) {
    let tmp = tempfile::tempdir().unwrap();
    let err = package(entries, 0, tmp.path(), "out.tar.gz").unwrap_err();
    let message = err.to_string();
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    match err {
        PackageError::Refused { entry, reason, .. } => {
            assert!(message.contains(&entry), "{message}");
            (entry, reason)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn escaping_symlinks_are_errors() {
    let (entry, reason) = refused(&[
        d("app/"),
        d("app/lib/"),
        l(EntryType::Symlink, "app/lib/etc", "../../etc"),
    ]);
    assert_eq!(entry, "app/lib/etc");
    assert_eq!(reason, Refusal::SymlinkEscapes("../../etc".into()));

    let (entry, reason) = refused(&[
        d("app/"),
        l(EntryType::Symlink, "app/libssl.so", "/usr/lib/libssl.so"),
    ]);
    assert_eq!(entry, "app/libssl.so");
    assert_eq!(reason, Refusal::SymlinkEscapes("/usr/lib/libssl.so".into()));

    // `/app/../etc` is `/etc`, lexically.
    let (entry, _) = refused(&[d("app/"), l(EntryType::Symlink, "app/x", "/app/../etc")]);
    assert_eq!(entry, "app/x");
}

#[test]
fn other_bad_entries_are_errors() {
    let (entry, reason) = refused(&[d("app/"), l(EntryType::Link, "app/passwd", "etc/passwd")]);
    assert_eq!(entry, "app/passwd");
    assert_eq!(reason, Refusal::HardLinkTarget("etc/passwd".into()));

    let mut fifo = f("app/pipe", 0o644, b"");
    fifo.kind = EntryType::Fifo;
    let (entry, reason) = refused(&[d("app/"), fifo]);
    assert_eq!(entry, "app/pipe");
    assert_eq!(reason, Refusal::Unsupported("fifo".into()));

    let (entry, reason) = refused(&[d("app/"), f("other/file", 0o644, b"")]);
    assert_eq!(entry, "other/file");
    assert_eq!(reason, Refusal::OutsidePrefix);

    let (entry, reason) = refused(&[d("app/"), f("app/x", 0o644, b"1"), f("app/x", 0o644, b"2")]);
    assert_eq!(entry, "app/x");
    assert_eq!(reason, Refusal::Duplicate);

    let (entry, reason) = refused(&[
        d("app/"),
        l(EntryType::Symlink, "app/lib", "."),
        f("app/lib/x", 0o644, b""),
    ]);
    assert_eq!(entry, "app/lib/x");
    assert_eq!(reason, Refusal::BelowSymlink("lib".into()));
}

#[test]
fn failure_mid_way_leaves_no_artifact_and_no_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ruby.tar.gz");
    let mut entries = tree();
    entries.push(f("app/share/big", 0o644, &vec![7u8; 100_000]));
    let input = stream(&entries, 0);
    // Cut the stream in the middle of the last file's data.
    let cut = &input[..input.len() - 60_000];
    let err = package_tar_stream(cut, &dest, &options()).unwrap_err();
    assert!(
        matches!(&err, PackageError::ReadEntry { entry, .. } if entry == "app/share/big")
            || matches!(&err, PackageError::ReadStream { .. }),
        "{err:?}"
    );
    assert!(!dest.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // A destination in a directory that does not exist fails cleanly too.
    let missing = tmp.path().join("missing/ruby.tar.gz");
    let err = package_tar_stream(&stream(&tree(), 0)[..], &missing, &options()).unwrap_err();
    assert!(matches!(err, PackageError::Spool { .. }), "{err:?}");
}

#[test]
fn existing_artifact_is_replaced_only_on_success() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("ruby.tar.gz");
    std::fs::write(&dest, b"previous").unwrap();
    let bad = stream(&[d("app/"), l(EntryType::Symlink, "app/x", "/etc")], 0);
    package_tar_stream(&bad[..], &dest, &options()).unwrap_err();
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous");
    package_tar_stream(&stream(&tree(), 0)[..], &dest, &options()).unwrap();
    assert_eq!(list_artifact(&dest).unwrap().len(), 11);
}

#[test]
fn invalid_prefix_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for prefix in ["app", "/", ""] {
        let opts = PackageOptions::new(prefix);
        let err = package_tar_stream(&b""[..], &tmp.path().join("x"), &opts).unwrap_err();
        assert!(
            matches!(&err, PackageError::InvalidPrefix { prefix: p } if p == Path::new(prefix)),
            "{prefix}: {err:?}"
        );
    }
}

fn zst_options() -> PackageOptions {
    PackageOptions {
        format: ArtifactFormat::TarZst,
        ..options()
    }
}

/// Compressible data that is not one repeated pattern.
fn text_like(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 % 16 + b'a')
        .collect()
}

#[test]
fn zstd_artifact_lists_like_the_gzip_one_and_is_a_checksummed_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let input = stream(&tree(), 3);
    let gz = tmp.path().join("ruby.tar.gz");
    let zst = tmp.path().join("ruby.tar.zst");
    package_tar_stream(&input[..], &gz, &options()).unwrap();
    let artifact = package_tar_stream(&input[..], &zst, &zst_options()).unwrap();
    assert_eq!(artifact.entries, 11);
    let bytes = std::fs::read(&zst).unwrap();
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    // Frame header descriptor: bit 2 is the content checksum flag.
    assert_ne!(bytes[4] & 0x04, 0, "the frame has a content checksum");
    assert_eq!(list_artifact(&zst).unwrap(), list_artifact(&gz).unwrap());
    // The same tar inside: only the compression differs.
    let mut tar_gz = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_end(&mut tar_gz)
        .unwrap();
    let tar_zst = zstd_decode(&bytes);
    assert!(tar_gz == tar_zst);
    // Any noise in the stream still gives the same bytes.
    let again = tmp.path().join("again.tar.zst");
    package_tar_stream(&stream(&tree(), 9)[..], &again, &zst_options()).unwrap();
    assert!(std::fs::read(&again).unwrap() == bytes);
    assert_eq!(PackageOptions::new("/app").zstd_level, DEFAULT_ZSTD_LEVEL);
}

fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn zstd_level_is_configurable_and_threads_do_not_change_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    // 12 MB: at level 3 (8 MiB jobs) two jobs, so two and four workers really split it.
    let big = text_like(12_000_000);
    let input = stream(&[d("app/"), f("app/data", 0o644, &big)], 0);
    let run = |zstd_level, threads, name: &str| {
        let dest = tmp.path().join(name);
        let opts = PackageOptions {
            zstd_level,
            threads,
            ..zst_options()
        };
        package_tar_stream(&input[..], &dest, &opts).unwrap();
        std::fs::read(dest).unwrap()
    };
    let one = run(3, 1, "one");
    assert!(one == run(3, 2, "two"), "1 and 2 threads differ");
    assert!(one == run(3, 4, "four"), "1 and 4 threads differ");
    let small = stream(&tree(), 0);
    let at = |zstd_level, threads| {
        let dest = tmp.path().join(format!("small-{zstd_level}-{threads}"));
        let opts = PackageOptions {
            zstd_level,
            threads,
            ..zst_options()
        };
        package_tar_stream(&small[..], &dest, &opts).unwrap();
        std::fs::read(dest).unwrap()
    };
    assert_eq!(at(19, 1), at(19, 4));
    assert_ne!(at(1, 2), at(19, 2));
    for level in [0, 23] {
        let bad = PackageOptions {
            zstd_level: level,
            ..zst_options()
        };
        let err = package_tar_stream(&small[..], &tmp.path().join("bad"), &bad).unwrap_err();
        assert!(
            matches!(err, PackageError::InvalidZstdLevel { level: l } if l == level),
            "{err:?}"
        );
        assert!(!tmp.path().join("bad").exists());
    }
}

#[test]
fn readers_tell_formats_apart_by_their_bytes_not_their_names() {
    let tmp = tempfile::tempdir().unwrap();
    let input = stream(&tree(), 0);
    // A zstd artifact under a gzip name, and the other way round.
    let zst = tmp.path().join("misnamed.tar.gz");
    let gz = tmp.path().join("misnamed.tar.zst");
    package_tar_stream(&input[..], &zst, &zst_options()).unwrap();
    package_tar_stream(&input[..], &gz, &options()).unwrap();
    assert_eq!(
        ArtifactFormat::of_file(&zst).unwrap(),
        Some(ArtifactFormat::TarZst)
    );
    assert_eq!(
        ArtifactFormat::of_file(&gz).unwrap(),
        Some(ArtifactFormat::TarGz)
    );
    assert_eq!(list_artifact(&zst).unwrap(), list_artifact(&gz).unwrap());
    let wanted = [PathBuf::from("share/README")].into_iter().collect();
    for path in [&zst, &gz] {
        let files = read_artifact_files(path, &wanted, 1024).unwrap();
        assert_eq!(files[Path::new("share/README")], b"docs");
        assert_eq!(open_artifact(path).unwrap().entries().unwrap().count(), 11);
    }

    // Neither: an error naming the file, for every reader.
    let plain = tmp.path().join("plain.tar.zst");
    std::fs::write(&plain, &input).unwrap();
    let empty = tmp.path().join("empty.tar.gz");
    std::fs::write(&empty, b"").unwrap();
    for path in [&plain, &empty] {
        let err = list_artifact(path).unwrap_err();
        assert!(
            matches!(&err, PackageError::UnknownFormat { path: p } if p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("neither gzip"), "{err}");
        assert!(matches!(
            read_artifact_files(path, &wanted, 1024),
            Err(PackageError::UnknownFormat { .. })
        ));
        assert!(matches!(
            open_artifact(path),
            Err(PackageError::UnknownFormat { .. })
        ));
    }
}

#[test]
fn truncated_zstd_artifact_is_an_error_not_a_short_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = tree();
    entries.push(f("app/share/big", 0o644, &text_like(3_000_000)));
    let dest = tmp.path().join("big.tar.zst");
    package_tar_stream(&stream(&entries, 0)[..], &dest, &zst_options()).unwrap();
    let bytes = std::fs::read(&dest).unwrap();
    let cut = tmp.path().join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = list_artifact(&cut).unwrap_err();
    assert!(
        matches!(&err, PackageError::ReadArtifact { path, .. } if path == &cut),
        "{err:?}"
    );
}

#[test]
fn gzip_artifact_bytes_are_pinned() {
    // The `.tar.gz` of a fixed tree at the default level: formats must not change these bytes
    // (published amd64 artifacts and their build keys depend on them).
    let tmp = tempfile::tempdir().unwrap();
    let artifact = package(&tree(), 0, tmp.path(), "pinned.tar.gz").unwrap();
    let bytes = std::fs::read(artifact).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), PINNED_GZIP_SHA256);
}

const PINNED_GZIP_SHA256: &str = "7d17ef92842f04b0b112aec45171c10b841a5dc962068dfadc746f64a5908033";

#[test]
fn symlink_chains_out_of_the_prefix_are_errors_in_either_order() {
    // `lib/up -> ..` is the prefix, so `x -> lib/up/../..` is above it: each link alone is
    // inside, lexically.
    let chain = [
        d("app/"),
        d("app/lib/"),
        l(EntryType::Symlink, "app/lib/up", ".."),
        l(EntryType::Symlink, "app/x", "lib/up/../.."),
    ];
    let (entry, reason) = refused(&chain);
    assert_eq!(entry, "app/x");
    assert_eq!(
        reason,
        Refusal::SymlinkChainEscapes {
            target: "lib/up/../..".into(),
            through: "lib/up".into()
        }
    );
    let reversed = [
        d("app/"),
        l(EntryType::Symlink, "app/x", "lib/up/../.."),
        d("app/lib/"),
        l(EntryType::Symlink, "app/lib/up", ".."),
    ];
    let (entry, _) = refused(&reversed);
    assert_eq!(entry, "app/x");

    // An absolute target is normalised lexically before it is stored, so what is stored (and
    // followed) is `.`, harmless.
    let tmp = tempfile::tempdir().unwrap();
    let artifact = package(
        &[
            d("app/"),
            d("app/lib/"),
            l(EntryType::Symlink, "app/lib/up", "/app"),
            l(EntryType::Symlink, "app/x", "/app/lib/up/../.."),
        ],
        0,
        tmp.path(),
        "abs.tar.gz",
    )
    .unwrap();
    let listed = list_artifact(&artifact).unwrap();
    assert_eq!(listed[1].link_target.as_deref(), Some(Path::new("..")));
    assert_eq!(listed[2].link_target.as_deref(), Some(Path::new(".")));

    // A loop.
    let (entry, reason) = refused(&[
        d("app/"),
        l(EntryType::Symlink, "app/a", "b"),
        l(EntryType::Symlink, "app/b", "a"),
    ]);
    assert_eq!(entry, "app/a");
    assert_eq!(reason, Refusal::SymlinkLoop("b".into()));

    // Chains inside are kept.
    let tmp = tempfile::tempdir().unwrap();
    let artifact = package(
        &[
            d("app/"),
            d("app/lib/"),
            l(EntryType::Symlink, "app/lib/up", ".."),
            l(EntryType::Symlink, "app/x", "lib/up/lib"),
        ],
        0,
        tmp.path(),
        "ok.tar.gz",
    )
    .unwrap();
    assert_eq!(list_artifact(&artifact).unwrap().len(), 3);
}

#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shared = d("app/shared/");
    shared.mode = 0o3777;
    let artifact = package(
        &[
            d("app/"),
            shared,
            f("app/suid", 0o4755, b"#!/bin/sh\n"),
            f("app/sgid", 0o2644, b"data"),
        ],
        0,
        tmp.path(),
        "suid.tar.gz",
    )
    .unwrap();
    let modes: Vec<(String, u32)> = raw_headers(&artifact)
        .iter()
        .map(|h| (h.path().unwrap().display().to_string(), h.mode().unwrap()))
        .collect();
    assert_eq!(
        modes,
        [
            ("sgid".to_owned(), 0o644),
            ("shared".to_owned(), 0o755),
            ("suid".to_owned(), 0o755),
        ]
    );
}
