//! Every guarantee of the S3 store, proven by faults: a fault-injecting proxy on loopback
//! (tests/common/proxy.rs) in front of moto answers 400/409/412/5xx, holds requests, cuts them
//! mid-body or changes a byte of their body, and the store's real aws-sdk-s3 client goes
//! through it. moto runs with the body checks S3 makes and moto 5.2.1 lacks
//! (tests/common/moto_verify.py: `Content-MD5` and `x-amz-checksum-sha256` compared with the
//! bytes received). Without `moto_server` these tests fail, loudly.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::moto::{self, Moto, artifact};
use common::proxy::{Action, Gate, Op, Proxy, Rule};
use common::{bytes, sha256_hex};
use packager::publish::inventory::{self, Entry};
use packager::publish::{ChecksumMode, PublishError, PublishOutcome, S3Options, S3Store, Store};

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let m = Moto::start_verifying();
        moto::set_env(&m);
        m
    })
}

/// A store on `bucket` (made here) through `endpoint` (the proxy's, or moto's own).
async fn store(bucket: &str, endpoint: &str, part_size: Option<u64>) -> S3Store {
    let mut options = S3Options {
        endpoint: Some(endpoint.to_string()),
        ..S3Options::default()
    };
    if let Some(p) = part_size {
        options.part_size = p;
    }
    S3Store::open(&format!("s3://{bucket}/runtimes"), options)
        .await
        .unwrap()
}

/// A new bucket and a proxy in front of moto.
async fn setup(bucket: &str) -> Proxy {
    moto().bucket(bucket).await;
    Proxy::start(&moto().endpoint)
}

async fn object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = moto()
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    Some(out.body.collect().await.unwrap().to_vec())
}

async fn pending_uploads(bucket: &str) -> usize {
    moto().pending_uploads(bucket).await
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_the_composite_checksum_header_takes_a_big_publish_by_default() {
    let proxy = setup("composite").await;
    // What a production S3-compatible store that is not AWS answers.
    proxy.add(
        Rule::new(
            Op::CompleteMultipartUpload,
            "/",
            Action::Respond(
                400,
                "<Error><Code>InvalidRequest</Code><Message>invalid x-amz-checksum-sha256 header</Message></Error>".into(),
            ),
        )
        .with_header("x-amz-checksum-sha256")
        .times(usize::MAX),
    );
    let tmp = tempfile::tempdir().unwrap();
    // Past the default part size: a multipart upload of two parts with the default options.
    let part = S3Options::default().part_size;
    let data = bytes((part + 1) as usize, 7);
    let a = artifact(tmp.path(), "big-1.0.0.tar.gz", &data);
    let s = store("composite", &proxy.endpoint, None).await;
    let published = s.publish(&a, false).await.unwrap();
    assert_eq!(published.outcome, PublishOutcome::Published);
    assert_eq!(proxy.count(Op::UploadPart, "big-1.0.0"), 2);
    let completes: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|r| r.op == Op::CompleteMultipartUpload)
        .collect();
    assert_eq!(completes.len(), 1, "{completes:?}");
    assert!(
        !completes[0]
            .headers
            .iter()
            .any(|h| h == "x-amz-checksum-sha256"),
        "{completes:?}"
    );
    // Every part carried its own checksum, so the store verified every byte.
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|r| r.op == Op::UploadPart)
            .all(|r| r.headers.iter().any(|h| h == "x-amz-checksum-sha256"))
    );
    let stored = object("composite", "runtimes/mini/big-1.0.0.tar.gz")
        .await
        .unwrap();
    assert_eq!(sha256_hex(&stored), a.sha256);
}

/// Publisher A's write is held by the proxy until B (straight to moto) has published the same
/// name: A's conditional write then meets B's object.
async fn race(bucket: &str, held: Op, part_size: Option<u64>, size: usize) {
    let proxy = setup(bucket).await;
    let gate = Gate::new();
    proxy.add(Rule::new(held, "race-1.0.0", Action::Hold(gate.clone())));
    let tmp = tempfile::tempdir().unwrap();
    let a = artifact(tmp.path(), "race-1.0.0.tar.gz", &bytes(size, 1));
    let b = artifact(tmp.path(), "race-1.0.0.tar.gz", &bytes(size, 2));
    let store_a = store(bucket, &proxy.endpoint, part_size).await;
    let store_b = store(bucket, &moto().endpoint, part_size).await;
    let first = tokio::spawn(async move { store_a.publish(&a, false).await });
    let p = std::sync::Arc::new(proxy);
    let waiter = p.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for(held, "race-1.0.0", 1))
        .await
        .unwrap();
    let second = store_b.publish(&b, false).await.unwrap();
    assert_eq!(second.outcome, PublishOutcome::Published);
    // Only now that B's object is there does A's held write go on: no timing involved.
    gate.open();
    let first = first.await.unwrap();
    match first {
        Err(PublishError::Conflict { .. }) => {}
        other => panic!("the held publisher must see the conflict, got {other:?}"),
    }
    let stored = object(bucket, "runtimes/mini/race-1.0.0.tar.gz")
        .await
        .unwrap();
    assert_eq!(sha256_hex(&stored), b.sha256, "never an overwrite");
    assert_eq!(pending_uploads(bucket).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_of_one_object_one_wins_never_an_overwrite() {
    race("race-put", Op::PutObject, None, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_multipart_publishers_one_wins_never_an_overwrite() {
    race(
        "race-multipart",
        Op::CompleteMultipartUpload,
        Some(5 * MIB),
        (11 * MIB) as usize,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_on_completion_starts_the_upload_again() {
    let proxy = setup("conflict").await;
    proxy.add(Rule::new(
        Op::CompleteMultipartUpload,
        "again-1.0.0",
        Action::Respond(
            409,
            "<Error><Code>ConditionalRequestConflict</Code><Message>A conflicting operation occurred</Message></Error>".into(),
        ),
    ));
    let tmp = tempfile::tempdir().unwrap();
    let a = artifact(
        tmp.path(),
        "again-1.0.0.tar.gz",
        &bytes((11 * MIB) as usize, 3),
    );
    let s = store("conflict", &proxy.endpoint, Some(5 * MIB)).await;
    let published = s.publish(&a, false).await.unwrap();
    assert_eq!(published.outcome, PublishOutcome::Published);
    assert_eq!(proxy.count(Op::CreateMultipartUpload, "again-1.0.0"), 2);
    assert_eq!(proxy.count(Op::UploadPart, "again-1.0.0"), 6);
    assert_eq!(proxy.count(Op::AbortMultipartUpload, "again-1.0.0"), 1);
    assert_eq!(pending_uploads("conflict").await, 0);
    let stored = object("conflict", "runtimes/mini/again-1.0.0.tar.gz")
        .await
        .unwrap();
    assert_eq!(sha256_hex(&stored), a.sha256);
}

/// Four failures in a row: more than the SDK's default 3 attempts absorb, within the 5
/// packager configures (`S3Store::open`'s retry configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff() {
    let proxy = setup("retries").await;
    proxy.add(
        Rule::new(
            Op::PutObject,
            "small-1.0.0",
            Action::Respond(
                503,
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into(),
            ),
        )
        .times(4),
    );
    // All four on part 1, so that no part gets through with fewer attempts.
    proxy.add(
        Rule::new(
            Op::UploadPart,
            "partNumber=1",
            Action::Respond(
                500,
                "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>".into(),
            ),
        )
        .times(4),
    );
    let tmp = tempfile::tempdir().unwrap();
    let s = store("retries", &proxy.endpoint, Some(5 * MIB)).await;
    let small = artifact(tmp.path(), "small-1.0.0.tar.gz", &bytes(1000, 4));
    assert_eq!(
        s.publish(&small, false).await.unwrap().outcome,
        PublishOutcome::Published
    );
    assert_eq!(proxy.count(Op::PutObject, "small-1.0.0"), 5);
    let big = artifact(
        tmp.path(),
        "big-1.0.0.tar.gz",
        &bytes((6 * MIB) as usize, 5),
    );
    assert_eq!(
        s.publish(&big, false).await.unwrap().outcome,
        PublishOutcome::Published
    );
    assert_eq!(proxy.count(Op::UploadPart, "big-1.0.0"), 6);
    assert_eq!(pending_uploads("retries").await, 0);
}

/// The proxy changes one byte in the body of part 2 of a multipart upload, of a single
/// PutObject and of an inventory document, leaving their headers (and so the checksum each
/// carries, `header`) as packager sent them. The store refuses each (400 BadDigest): the
/// publish fails naming the object, nothing is published and no part is left.
async fn a_corrupted_body_is_refused_by_its_checksum(
    bucket: &str,
    checksums: ChecksumMode,
    header: &str,
) {
    let proxy = setup(bucket).await;
    proxy.add(Rule::new(Op::UploadPart, "partNumber=2", Action::Corrupt).times(usize::MAX));
    proxy.add(Rule::new(Op::PutObject, "small-1.0.0", Action::Corrupt).times(usize::MAX));
    proxy.add(Rule::new(Op::PutObject, "inventory/", Action::Corrupt).times(usize::MAX));
    let s = S3Store::open(
        &format!("s3://{bucket}/runtimes"),
        S3Options {
            endpoint: Some(proxy.endpoint.clone()),
            part_size: 5 * MIB,
            checksums,
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let big = artifact(
        tmp.path(),
        "big-1.0.0.tar.gz",
        &bytes((11 * MIB) as usize, 11),
    );
    let err = s.publish(&big, false).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("upload part 2 of s3://") && text.contains("big-1.0.0.tar.gz"),
        "{text}"
    );
    assert!(text.contains("BadDigest"), "{text}");
    assert!(
        err.hint()
            .unwrap_or_default()
            .contains("corrupted in transit"),
        "{:?}",
        err.hint()
    );
    let parts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|r| r.op == Op::UploadPart && r.path.contains("big-1.0.0"))
        .collect();
    assert!(
        parts.iter().any(|r| r.faulted),
        "part 2 went through the proxy: {parts:?}"
    );
    assert!(
        parts.iter().all(|r| r.headers.iter().any(|h| h == header)),
        "every part carries {header}: {parts:?}"
    );
    // Aborted (the SDK may retry an abort that meets a part still in flight), and nothing pending.
    assert!(proxy.count(Op::AbortMultipartUpload, "big-1.0.0") >= 1);
    assert_eq!(pending_uploads(bucket).await, 0, "no pending parts");
    assert!(
        object(bucket, "runtimes/mini/big-1.0.0.tar.gz")
            .await
            .is_none()
    );

    let small = artifact(tmp.path(), "small-1.0.0.tar.gz", &bytes(10_000, 12));
    let err = s.publish(&small, false).await.unwrap_err();
    assert!(
        err.to_string().contains("small-1.0.0.tar.gz") && err.to_string().contains("BadDigest"),
        "{err}"
    );
    assert!(
        object(bucket, "runtimes/mini/small-1.0.0.tar.gz")
            .await
            .is_none()
    );

    let err = s
        .write_doc("mini/inventory/small.toml", b"[[artifacts]]\n", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BadDigest"), "{err}");
    assert!(
        object(bucket, "runtimes/mini/inventory/small.toml")
            .await
            .is_none()
    );
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|r| r.op == Op::PutObject)
            .all(|r| r.faulted && r.headers.iter().any(|h| h == header)),
        "{:?}",
        proxy.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_part_fails_its_sha256_checksum_and_nothing_is_published() {
    a_corrupted_body_is_refused_by_its_checksum(
        "corrupt-sha256",
        ChecksumMode::Always,
        "x-amz-checksum-sha256",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_when_required_checksums_a_corrupted_part_fails_its_content_md5() {
    a_corrupted_body_is_refused_by_its_checksum(
        "corrupt-md5",
        ChecksumMode::WhenRequired,
        "content-md5",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_leaves_no_object_and_no_pending_parts() {
    let proxy = setup("cut").await;
    // Every attempt at part 2, and at the single object, loses its connection mid-body.
    proxy.add(Rule::new(Op::UploadPart, "partNumber=2", Action::Cut(64 * 1024)).times(usize::MAX));
    let tmp = tempfile::tempdir().unwrap();
    let s = store("cut", &proxy.endpoint, Some(5 * MIB)).await;
    let big = artifact(
        tmp.path(),
        "cut-1.0.0.tar.gz",
        &bytes((11 * MIB) as usize, 6),
    );
    let err = s.publish(&big, false).await.unwrap_err();
    assert!(err.to_string().contains("cut-1.0.0.tar.gz"), "{err}");
    assert!(proxy.count(Op::UploadPart, "cut-1.0.0") >= 3, "retried");
    assert_eq!(proxy.count(Op::AbortMultipartUpload, "cut-1.0.0"), 1);
    assert_eq!(pending_uploads("cut").await, 0, "no pending parts");
    assert!(
        object("cut", "runtimes/mini/cut-1.0.0.tar.gz")
            .await
            .is_none()
    );

    proxy.add(Rule::new(Op::PutObject, "small-1.0.0", Action::Cut(100)).times(usize::MAX));
    let small = artifact(tmp.path(), "small-1.0.0.tar.gz", &bytes(10_000, 7));
    assert!(s.publish(&small, false).await.is_err());
    assert!(
        object("cut", "runtimes/mini/small-1.0.0.tar.gz")
            .await
            .is_none()
    );
}

fn entry(version: &str) -> Entry {
    Entry {
        version: version.into(),
        os: "linux".into(),
        arch: packager::arch::Arch::Amd64,
        url: format!("https://example.invalid/race-{version}.tar.gz"),
        checksum: format!("sha256:{}", "0".repeat(64)).parse().unwrap(),
        metadata: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_update_losing_the_if_match_race_reads_again_and_keeps_both() {
    let proxy = setup("inventory-race").await;
    let direct = store("inventory-race", &moto().endpoint, None).await;
    inventory::add(&direct, "mini", "race", entry("1.0.0"))
        .await
        .unwrap();
    // A's conditional write (If-Match the first version) is held while B updates.
    let gate = Gate::new();
    proxy.add(
        Rule::new(
            Op::PutObject,
            "inventory/race.toml",
            Action::Hold(gate.clone()),
        )
        .with_header("if-match"),
    );
    let through = store("inventory-race", &proxy.endpoint, None).await;
    let a =
        tokio::spawn(async move { inventory::add(&through, "mini", "race", entry("2.0.0")).await });
    let p = std::sync::Arc::new(proxy);
    let waiter = p.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for(Op::PutObject, "inventory/race.toml", 1))
        .await
        .unwrap();
    inventory::add(&direct, "mini", "race", entry("3.0.0"))
        .await
        .unwrap();
    gate.open();
    a.await.unwrap().unwrap();
    // A wrote twice: the held write lost (412) and A read again.
    assert_eq!(p.count(Op::PutObject, "inventory/race.toml"), 2);
    let inv = inventory::read(&direct, "mini", "race")
        .await
        .unwrap()
        .unwrap();
    let mut versions: Vec<String> = inv.artifacts.iter().map(|e| e.version.clone()).collect();
    versions.sort();
    assert_eq!(versions, ["1.0.0", "2.0.0", "3.0.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_runtime_is_downloaded_once_and_never_seen_partial() {
    let proxy = setup("requires").await;
    let tmp = tempfile::tempdir().unwrap();
    let a = artifact(
        tmp.path(),
        "dep-1.0.0.tar.gz",
        &bytes((20 * MIB) as usize, 8),
    );
    let direct = store("requires", &moto().endpoint, None).await;
    direct.publish(&a, false).await.unwrap();

    // A download that breaks leaves nothing at the destination.
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("mini-dep-1.0.0.tar.gz");
    proxy.add(Rule::new(Op::Get, "dep-1.0.0", Action::Cut(0)).times(usize::MAX));
    let through = store("requires", &proxy.endpoint, None).await;
    assert!(
        packager::publish::download_once(&through, "mini", "dep-1.0.0.tar.gz", &dest)
            .await
            .is_err()
    );
    assert!(!dest.exists(), "no partial file");
    proxy.clear();
    let gets_before = proxy.count(Op::Get, "dep-1.0.0");

    // Two jobs needing it at once: one download, both see the whole file.
    let (x, y) = (through.clone(), through.clone());
    let (dx, dy) = (dest.clone(), dest.clone());
    let (rx, ry) = tokio::join!(
        tokio::spawn(async move {
            packager::publish::download_once(&x, "mini", "dep-1.0.0.tar.gz", &dx).await?;
            Ok::<_, PublishError>(sha256_hex(&std::fs::read(&dx).unwrap()))
        }),
        tokio::spawn(async move {
            packager::publish::download_once(&y, "mini", "dep-1.0.0.tar.gz", &dy).await?;
            Ok::<_, PublishError>(sha256_hex(&std::fs::read(&dy).unwrap()))
        })
    );
    assert_eq!(rx.unwrap().unwrap(), a.sha256);
    assert_eq!(ry.unwrap().unwrap(), a.sha256);
    assert_eq!(
        proxy.count(Op::Get, "dep-1.0.0") - gets_before,
        1,
        "one download"
    );
    let left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".download-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// An artifact of the `demo` runtime at `version`, with the metadata `inventory --rebuild`
/// makes entries from.
fn demo(dir: &std::path::Path, version: &str, seed: u64) -> packager::publish::Upload {
    let mut a = artifact(dir, &format!("demo-{version}.tar.gz"), &bytes(2000, seed));
    a.metadata.insert("runtime".into(), "demo".into());
    a.metadata.insert("version".into(), version.into());
    a
}

/// The inventory entry a publisher writes for `a`.
fn entry_of(store: &S3Store, a: &packager::publish::Upload, version: &str) -> Entry {
    Entry {
        version: version.into(),
        os: "linux".into(),
        arch: packager::arch::Arch::Amd64,
        url: store.public_url(&a.stack, &a.name),
        checksum: format!("sha256:{}", a.sha256).parse().unwrap(),
        metadata: inventory::entry_metadata(&a.metadata),
    }
}

/// `inventory --rebuild` runs through the proxy, which holds its first `held` request of the
/// inventory (its read, or its write) while a publisher publishes `demo 2.0.0` and enters it:
/// the rebuilt inventory keeps both entries. `writes`: how many times the rebuild writes it.
async fn rebuild_racing_a_publish(bucket: &str, held: Op, writes: usize) {
    let proxy = setup(bucket).await;
    let tmp = tempfile::tempdir().unwrap();
    let direct = store(bucket, &moto().endpoint, None).await;
    let one = demo(tmp.path(), "1.0.0", 21);
    direct.publish(&one, false).await.unwrap();
    inventory::add_published(
        &direct,
        "mini",
        "demo",
        &one.name,
        entry_of(&direct, &one, "1.0.0"),
    )
    .await
    .unwrap();

    let gate = Gate::new();
    proxy.add(Rule::new(
        held,
        "inventory/demo.toml",
        Action::Hold(gate.clone()),
    ));
    let through = store(bucket, &proxy.endpoint, None).await;
    let rebuild = tokio::spawn(async move {
        inventory::rebuild(
            &through,
            "mini",
            "linux",
            packager::arch::Arch::Amd64,
            &["demo".to_string()],
        )
        .await
    });
    let p = std::sync::Arc::new(proxy);
    let waiter = p.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for(held, "inventory/demo.toml", 1))
        .await
        .unwrap();
    // The rebuild is reading or writing the inventory: a publish lands now.
    let two = demo(tmp.path(), "2.0.0", 22);
    direct.publish(&two, false).await.unwrap();
    inventory::add_published(
        &direct,
        "mini",
        "demo",
        &two.name,
        entry_of(&direct, &two, "2.0.0"),
    )
    .await
    .unwrap();
    gate.open();
    let (rebuilt, skipped) = rebuild.await.unwrap().unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(rebuilt[0].entries, 2, "{rebuilt:?}");
    assert_eq!(p.count(Op::PutObject, "inventory/demo.toml"), writes);
    let inv = inventory::read(&direct, "mini", "demo")
        .await
        .unwrap()
        .unwrap();
    let got: Vec<(String, String)> = inv
        .artifacts
        .iter()
        .map(|e| (e.version.clone(), e.checksum.hex().to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("1.0.0".to_string(), one.sha256.clone()),
            ("2.0.0".to_string(), two.sha256.clone())
        ]
    );
}

/// The publish lands while the rebuild reads the inventory: read before the listing, so the
/// listing has the new artifact (fails when the store is listed first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_during_a_rebuilds_read_keeps_its_entry() {
    rebuild_racing_a_publish("rebuild-race-read", Op::Get, 1).await;
}

/// The publish lands while the rebuild writes the inventory: the held write loses (412) and
/// the rebuild reads, lists and writes again (fails when it writes its first listing again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_during_a_rebuilds_write_keeps_its_entry() {
    rebuild_racing_a_publish("rebuild-race-write", Op::PutObject, 2).await;
}

/// Two `--force` publishers of one name: A uploads first, then its inventory update is held
/// by the proxy while B replaces the object and enters it. A's entry would name bytes the store
/// no longer has: A's update looks the object up after reading the inventory, writes nothing
/// and says so; the entry left names the stored bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_entry_names_the_stored_bytes_when_a_forced_publish_replaces_them() {
    let proxy = setup("force-race").await;
    let tmp = tempfile::tempdir().unwrap();
    let direct = store("force-race", &moto().endpoint, None).await;
    let old = demo(tmp.path(), "1.0.0", 31);
    direct.publish(&old, false).await.unwrap();
    inventory::add_published(
        &direct,
        "mini",
        "demo",
        &old.name,
        entry_of(&direct, &old, "1.0.0"),
    )
    .await
    .unwrap();

    let gate = Gate::new();
    proxy.add(Rule::new(
        Op::Get,
        "inventory/demo.toml",
        Action::Hold(gate.clone()),
    ));
    let through = store("force-race", &proxy.endpoint, None).await;
    let a = demo(tmp.path(), "1.0.0", 32);
    let b = demo(tmp.path(), "1.0.0", 33);
    let entry_a = entry_of(&through, &a, "1.0.0");
    let (a_name, a_sum) = (a.name.clone(), a.sha256.clone());
    let first = tokio::spawn(async move {
        let published = through.publish(&a, true).await?;
        assert_eq!(published.outcome, PublishOutcome::Replaced);
        inventory::add_published(&through, "mini", "demo", &a_name, entry_a).await
    });
    let p = std::sync::Arc::new(proxy);
    let waiter = p.clone();
    tokio::task::spawn_blocking(move || waiter.wait_for(Op::Get, "inventory/demo.toml", 1))
        .await
        .unwrap();
    // A's upload is done and verified; B replaces it and enters its own bytes.
    assert_eq!(
        direct.publish(&b, true).await.unwrap().outcome,
        PublishOutcome::Replaced
    );
    inventory::add_published(
        &direct,
        "mini",
        "demo",
        &b.name,
        entry_of(&direct, &b, "1.0.0"),
    )
    .await
    .unwrap();
    gate.open();
    match first.await.unwrap() {
        Err(e @ PublishError::Superseded { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("sha256:{}", b.sha256))
                    && text.contains(&format!("sha256:{a_sum}"))
                    && text.contains("demo-1.0.0.tar.gz"),
                "{text}"
            );
            assert!(e.hint().unwrap().contains("--rebuild"), "{:?}", e.hint());
        }
        other => panic!("A must learn that its bytes were replaced, got {other:?}"),
    }
    let stored = object("force-race", "runtimes/mini/demo-1.0.0.tar.gz")
        .await
        .unwrap();
    let inv = inventory::read(&direct, "mini", "demo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inv.artifacts.len(), 1, "{inv:?}");
    assert_eq!(
        inv.artifacts[0].checksum.hex(),
        sha256_hex(&stored),
        "the entry names the stored bytes"
    );
}
