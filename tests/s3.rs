//! The S3 store against a real S3-protocol server on loopback (moto's server mode), through the
//! same aws-sdk-s3 code production uses. Without `moto_server` these tests fail, loudly.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::moto::{self, Moto, SECRET_KEY, artifact};
use common::{bytes, sha256_hex};
use packager::publish::{
    AnyStore, ChecksumMode, PublishError, PublishOutcome, S3Options, S3Store, Store, Written,
};

/// One server for the whole test binary; each test has its own bucket.
fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let m = Moto::start();
        moto::set_env(&m);
        m
    })
}

/// Moto's endpoint, and objects readable anonymously (as buildpacks download them).
fn options() -> S3Options {
    S3Options {
        endpoint: Some(moto().endpoint.clone()),
        acl: Some("public-read".into()),
        ..S3Options::default()
    }
}

/// A new bucket and a store on it (under a prefix).
async fn store(bucket: &str, options: S3Options) -> S3Store {
    moto().bucket(bucket).await;
    S3Store::open(&format!("s3://{bucket}/runtimes"), options)
        .await
        .unwrap()
}

async fn download(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().await.unwrap().to_vec()
}

/// Pending multipart uploads of a bucket.
async fn pending_uploads(bucket: &str) -> Vec<String> {
    let out = moto()
        .client()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}

async fn object_exists(bucket: &str, key: &str) -> bool {
    moto()
        .client()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn publishes_downloads_refuses_and_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store("publish-basic", options()).await;
    let a = artifact(tmp.path(), "demo-1.0.0.tar.gz", &bytes(100_000, 1));

    let p = s.publish(&a, false).await.unwrap();
    assert_eq!(p.outcome, PublishOutcome::Published);
    assert_eq!(
        p.location,
        "s3://publish-basic/runtimes/mini/demo-1.0.0.tar.gz"
    );
    let url = s.public_url("mini", "demo-1.0.0.tar.gz");
    assert_eq!(
        url,
        format!(
            "{}/publish-basic/runtimes/mini/demo-1.0.0.tar.gz",
            moto().endpoint
        )
    );
    assert_eq!(sha256_hex(&download(&url).await), a.sha256);

    // What the object carries: type, provenance, sha256 as metadata and as the S3 checksum.
    let head = moto()
        .client()
        .head_object()
        .bucket("publish-basic")
        .key("runtimes/mini/demo-1.0.0.tar.gz")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/gzip"));
    let meta = head.metadata().unwrap();
    assert_eq!(meta["sha256"], a.sha256);
    assert_eq!(meta["recipe-digest"], "sha256:abc");
    let raw = hex::decode(&a.sha256).unwrap();
    use base64::Engine as _;
    assert_eq!(
        head.checksum_sha256(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .as_str()
        )
    );

    // Identical again: a no-op success.
    assert_eq!(
        s.publish(&a, false).await.unwrap().outcome,
        PublishOutcome::AlreadyPublished
    );

    // Different bytes under the same name: refused, both checksums shown, object unchanged.
    let b = artifact(tmp.path(), "demo-1.0.0.tar.gz", &bytes(90_000, 2));
    let err = s.publish(&b, false).await.unwrap_err();
    assert!(matches!(err, PublishError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&a.sha256) && text.contains(&b.sha256),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("--force"));
    assert_eq!(sha256_hex(&download(&url).await), a.sha256, "unchanged");

    // --force replaces.
    assert_eq!(
        s.publish(&b, true).await.unwrap().outcome,
        PublishOutcome::Replaced
    );
    assert_eq!(sha256_hex(&download(&url).await), b.sha256);

    // lookup and list see what the store holds, with the provenance.
    let stored = s
        .lookup("mini", "demo-1.0.0.tar.gz")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.sha256, b.sha256);
    assert_eq!(stored.size, b.size);
    assert_eq!(
        stored.metadata, b.metadata,
        "provenance, without the sha256 key"
    );
    assert_eq!(s.lookup("mini", "nope.tar.gz").await.unwrap(), None);
    let c = artifact(tmp.path(), "demo-1.1.0.tar.gz", b"small");
    s.publish(&c, false).await.unwrap();
    s.write_doc("mini/inventory/demo.toml", b"[[artifacts]]\n", None)
        .await
        .unwrap();
    let listed = s.list("mini").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["demo-1.0.0.tar.gz", "demo-1.1.0.tar.gz"]);
    assert_eq!(listed[1].1.sha256, c.sha256);
    assert!(s.list("other-stack").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_object_put_by_hand_is_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store("by-hand", options()).await;
    let data = bytes(4096, 3);
    moto()
        .client()
        .put_object()
        .bucket("by-hand")
        .key("runtimes/mini/hand-1.0.0.tar.gz")
        .body(data.clone().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap();
    let stored = s
        .lookup("mini", "hand-1.0.0.tar.gz")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.sha256, sha256_hex(&data));
    let a = artifact(tmp.path(), "hand-1.0.0.tar.gz", &data);
    assert_eq!(
        s.publish(&a, false).await.unwrap().outcome,
        PublishOutcome::AlreadyPublished
    );
}

fn multipart_options() -> S3Options {
    S3Options {
        part_size: 5 * 1024 * 1024,
        concurrency: 2,
        ..options()
    }
}

/// Content types follow the bytes (a zstd file is `application/zstd` whatever its name), else
/// the name; `list` (what `inventory --rebuild` reads) takes both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_artifacts_are_served_as_zstd_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store("zstd-types", multipart_options()).await;
    let zst = zstd::stream::encode_all(&bytes(50_000, 6)[..], 3).unwrap();
    let mut big = zst.clone();
    big.extend(bytes(12 << 20, 7));
    let cases = [
        ("small-1.0.0.tar.zst", zst.clone(), "application/zstd"),
        ("big-1.0.0.tar.zst", big, "application/zstd"),
        ("misnamed-1.0.0.tar.gz", zst, "application/zstd"),
        ("opaque-1.0.0.tar.zst", bytes(1000, 8), "application/zstd"),
        ("opaque-1.0.0.tar.gz", bytes(1000, 9), "application/gzip"),
    ];
    for (name, data, want) in &cases {
        let a = artifact(tmp.path(), name, data);
        s.publish(&a, false).await.unwrap();
        let head = moto()
            .client()
            .head_object()
            .bucket("zstd-types")
            .key(format!("runtimes/mini/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some(*want), "{name}");
    }
    let mut listed: Vec<String> = s
        .list("mini")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    listed.sort();
    let mut names: Vec<String> = cases.iter().map(|c| c.0.to_string()).collect();
    names.sort();
    assert_eq!(listed, names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_round_trips_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store("multipart", multipart_options()).await;
    let a = artifact(tmp.path(), "big-1.0.0.tar.gz", &bytes(12 << 20, 4));
    assert_eq!(
        s.publish(&a, false).await.unwrap().outcome,
        PublishOutcome::Published
    );
    let url = s.public_url("mini", "big-1.0.0.tar.gz");
    assert_eq!(sha256_hex(&download(&url).await), a.sha256);

    // The composite checksum of the three parts' sha256.
    let head = moto()
        .client()
        .head_object()
        .bucket("multipart")
        .key("runtimes/mini/big-1.0.0.tar.gz")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let data = std::fs::read(&a.path).unwrap();
    let mut digests = Vec::new();
    for part in data.chunks(5 << 20) {
        digests.extend(hex::decode(sha256_hex(part)).unwrap());
    }
    use base64::Engine as _;
    let composite = base64::engine::general_purpose::STANDARD
        .encode(hex::decode(sha256_hex(&digests)).unwrap());
    let checksum = head.checksum_sha256().unwrap_or_default();
    // moto's HEAD leaves out the `-<parts>` suffix that S3 (and moto's GET) add.
    assert!(
        checksum == composite || checksum == format!("{composite}-3"),
        "{checksum} vs {composite}-3"
    );
    assert_eq!(head.metadata().unwrap()["sha256"], a.sha256);

    assert_eq!(
        s.publish(&a, false).await.unwrap().outcome,
        PublishOutcome::AlreadyPublished
    );
    let b = artifact(tmp.path(), "big-1.0.0.tar.gz", &bytes(11 << 20, 5));
    let err = s.publish(&b, false).await.unwrap_err();
    assert!(matches!(err, PublishError::Conflict { .. }), "{err:?}");
    assert_eq!(sha256_hex(&download(&url).await), a.sha256, "unchanged");
    assert_eq!(
        s.publish(&b, true).await.unwrap().outcome,
        PublishOutcome::Replaced
    );
    assert_eq!(sha256_hex(&download(&url).await), b.sha256);
    assert!(pending_uploads("multipart").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store("multipart-fail", multipart_options()).await;

    // The file is shorter than the artifact says: reading part 2 fails mid-way.
    let mut a = artifact(tmp.path(), "short-1.0.0.tar.gz", &bytes(7 << 20, 6));
    a.size = 12 << 20;
    let err = s.publish(&a, false).await.unwrap_err();
    assert!(err.to_string().contains("short-1.0.0.tar.gz"), "{err}");

    // The file's bytes are not the ones the build hashed: found after the parts went up.
    let mut b = artifact(tmp.path(), "changed-1.0.0.tar.gz", &bytes(12 << 20, 7));
    b.sha256 = sha256_hex(b"something else");
    let err = s.publish(&b, false).await.unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(text.contains("changed"), "{text}");

    for name in ["short-1.0.0.tar.gz", "changed-1.0.0.tar.gz"] {
        assert!(
            !object_exists("multipart-fail", &format!("runtimes/mini/{name}")).await,
            "{name}"
        );
    }
    assert_eq!(
        pending_uploads("multipart-fail").await,
        Vec::<String>::new()
    );
}

/// Dropping the publish future mid-upload (what Ctrl-C does) aborts the multipart upload —
/// here on a current-thread runtime, the hardest case for a cleanup in `Drop`.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_multipart_upload_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = "multipart-cancel";
    let s = store(
        bucket,
        S3Options {
            concurrency: 1,
            ..multipart_options()
        },
    )
    .await;
    let a = artifact(tmp.path(), "cut-1.0.0.tar.gz", &bytes(80 << 20, 8));
    // Started, and known to the publisher: a part of it is uploaded (between the server
    // creating the upload and its answer arriving, no client can abort it; that is what the
    // bucket's lifecycle rule is for).
    let started = async {
        loop {
            let c = moto().client();
            let uploads = c
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            if let Some(u) = uploads.uploads().first() {
                // ListParts by hand: moto names its answer's root element ListPartsResponse,
                // which the SDK refuses.
                let url = format!(
                    "{}/{bucket}/{}?uploadId={}",
                    moto().endpoint,
                    u.key().unwrap_or_default(),
                    u.upload_id().unwrap_or_default()
                );
                let listing = reqwest::get(&url).await.unwrap().text().await.unwrap();
                if listing.contains("<Part>") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = s.publish(&a, false) => panic!("the upload should have been cut: {r:?}"),
        _ = started => {}
    }
    // The publish future is dropped: its guard aborted the upload before returning.
    assert_eq!(pending_uploads(bucket).await, Vec::<String>::new());
    assert!(!object_exists(bucket, "runtimes/mini/cut-1.0.0.tar.gz").await);
    // And a later publish works.
    assert_eq!(
        s.publish(&a, false).await.unwrap().outcome,
        PublishOutcome::Published
    );
}

#[tokio::test]
async fn documents_are_written_only_at_the_expected_tag() {
    let s = store("documents", options()).await;
    let key = "mini/inventory/demo.toml";
    assert!(s.read_doc(key).await.unwrap().is_none());
    assert_eq!(s.write_doc(key, b"one", None).await.unwrap(), Written::Done);
    assert_eq!(
        s.write_doc(key, b"two", None).await.unwrap(),
        Written::Conflict,
        "it exists now"
    );
    let (data, tag) = s.read_doc(key).await.unwrap().unwrap();
    assert_eq!(data, b"one");
    assert_eq!(
        s.write_doc(key, b"two", Some(&tag)).await.unwrap(),
        Written::Done
    );
    assert_eq!(
        s.write_doc(key, b"three", Some(&tag)).await.unwrap(),
        Written::Conflict,
        "stale tag"
    );
    let (data, tag2) = s.read_doc(key).await.unwrap().unwrap();
    assert_eq!(data, b"two");
    assert_ne!(tag, tag2);
    assert!(object_exists("documents", "runtimes/mini/inventory/demo.toml").await);
}

/// Read-modify-write loops of several writers never lose a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_document_updates_lose_nothing() {
    let s = store("documents-race", options()).await;
    let key = "mini/inventory/race.toml";
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let (mut data, tag) = match s.read_doc(key).await.unwrap() {
                        Some((d, t)) => (d, Some(t)),
                        None => (Vec::new(), None),
                    };
                    data.extend_from_slice(format!("writer {i}\n").as_bytes());
                    if s.write_doc(key, &data, tag.as_ref()).await.unwrap() == Written::Done {
                        return;
                    }
                }
                panic!("writer {i} never got through");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (data, _) = s.read_doc(key).await.unwrap().unwrap();
    let text = String::from_utf8(data).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let want: Vec<String> = (0..8).map(|i| format!("writer {i}")).collect();
    assert_eq!(lines, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_required_checksums_send_no_checksum_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(
        "when-required",
        S3Options {
            checksums: ChecksumMode::WhenRequired,
            ..multipart_options()
        },
    )
    .await;
    let small = artifact(tmp.path(), "small-1.0.0.tar.gz", &bytes(1000, 9));
    let big = artifact(tmp.path(), "big-1.0.0.tar.gz", &bytes(11 << 20, 10));
    for a in [&small, &big] {
        assert_eq!(
            s.publish(a, false).await.unwrap().outcome,
            PublishOutcome::Published
        );
        let head = moto()
            .client()
            .head_object()
            .bucket("when-required")
            .key(format!("runtimes/mini/{}", a.name))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        // moto stores a checksum only when the request names an algorithm.
        assert_eq!(head.checksum_sha256(), None, "{}", a.name);
        assert_eq!(head.metadata().unwrap()["sha256"], a.sha256);
        assert_eq!(
            sha256_hex(&download(&s.public_url("mini", &a.name)).await),
            a.sha256
        );
        assert_eq!(
            s.publish(a, false).await.unwrap().outcome,
            PublishOutcome::AlreadyPublished
        );
    }
    assert!(pending_uploads("when-required").await.is_empty());
}

#[tokio::test]
async fn public_read_acl_and_public_url_base() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(
        "acl-public",
        S3Options {
            acl: Some("public-read".into()),
            public_url: Some("https://cdn.example.invalid/base/".into()),
            ..options()
        },
    )
    .await;
    let a = artifact(tmp.path(), "demo-2.0.0.tar.gz", b"acl");
    s.publish(&a, false).await.unwrap();
    let acl = moto()
        .client()
        .get_object_acl()
        .bucket("acl-public")
        .key("runtimes/mini/demo-2.0.0.tar.gz")
        .send()
        .await
        .unwrap();
    let public = acl.grants().iter().any(|g| {
        g.grantee().and_then(|g| g.uri()) == Some("http://acs.amazonaws.com/groups/global/AllUsers")
    });
    assert!(public, "{acl:?}");
    assert_eq!(
        s.public_url("mini", "demo-2.0.0.tar.gz"),
        "https://cdn.example.invalid/base/runtimes/mini/demo-2.0.0.tar.gz"
    );
}

fn assert_clear(err: &PublishError, location: &str, hint_has: &str) {
    let text = err.to_string();
    let hint = err.hint().unwrap_or_default();
    assert!(text.contains(location), "{text}");
    assert!(hint.contains(hint_has), "{text}\nhint: {hint}");
    let all = format!("{text} {hint} {err:?}");
    assert!(!all.contains(SECRET_KEY), "a secret in: {all}");
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error() {
    moto();
    let tmp = tempfile::tempdir().unwrap();
    let s = S3Store::open("s3://no-such-bucket/p", options())
        .await
        .unwrap();
    let a = artifact(tmp.path(), "demo-1.0.0.tar.gz", b"x");
    let err = s.publish(&a, false).await.unwrap_err();
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    assert_clear(
        &err,
        "s3://no-such-bucket/p/mini/demo-1.0.0.tar.gz",
        "bucket does not exist",
    );
    let err = s.list("mini").await.unwrap_err();
    assert_clear(&err, "s3://no-such-bucket", "bucket does not exist");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_clear_error() {
    moto();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let s = S3Store::open(
        "s3://bucket-x",
        S3Options {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    let a = artifact(tmp.path(), "demo-1.0.0.tar.gz", b"x");
    let err = s.publish(&a, false).await.unwrap_err();
    assert_clear(
        &err,
        "s3://bucket-x/mini/demo-1.0.0.tar.gz",
        "AWS_ENDPOINT_URL",
    );
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for bad in ["s3://", "s3://UPPER", "s3://b/a//c"] {
        let err = AnyStore::open(bad).await.unwrap_err();
        assert!(matches!(err, PublishError::BadUrl(_)), "{bad}: {err:?}");
    }
    let err = S3Store::open(
        "s3://fine-bucket",
        S3Options {
            endpoint: Some("not a url".into()),
            ..S3Options::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PublishError::BadUrl(_)), "{err:?}");
}

// Credential tests change the process environment, so each runs in a child process (this test
// binary, re-run on one test with `S3_TEST_CHILD` set).

/// Runs `test` of this binary in a child with `env` (and no other AWS variables); returns what
/// it printed.
fn in_child(test: &str, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("S3_TEST_CHILD", "1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {test} failed:\n{text}");
    assert!(
        text.contains("CHILD-RAN"),
        "child {test} did not run:\n{text}"
    );
    text
}

/// In a child: publishes to `S3_TEST_URL` at `S3_TEST_ENDPOINT` and checks the error's hint.
#[tokio::test]
async fn child_publish_fails_clearly() {
    let Ok(endpoint) = std::env::var("S3_TEST_ENDPOINT") else {
        return; // only meaningful in a child
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = S3Store::open(
        &std::env::var("S3_TEST_URL").unwrap(),
        S3Options {
            endpoint: Some(endpoint),
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    let a = artifact(tmp.path(), "demo-1.0.0.tar.gz", b"x");
    let err = s.publish(&a, false).await.unwrap_err();
    let want = std::env::var("S3_TEST_HINT").unwrap();
    println!(
        "CHILD-RAN error: {err}\nhint: {}",
        err.hint().unwrap_or_default()
    );
    assert_clear(&err, "s3://", &want);
    if let Ok(secret) = std::env::var("AWS_SECRET_ACCESS_KEY") {
        let all = format!("{err} {:?} {err:?}", err.hint());
        assert!(!all.contains(&secret), "the secret in: {all}");
    }
}

#[test]
fn no_credentials_is_a_clear_error() {
    if std::env::var("S3_TEST_CHILD").is_ok() {
        return;
    }
    let m = moto();
    let text = in_child(
        "child_publish_fails_clearly",
        &[
            ("S3_TEST_ENDPOINT", m.endpoint.clone()),
            ("S3_TEST_URL", "s3://no-credentials".into()),
            ("S3_TEST_HINT", "AWS_ACCESS_KEY_ID".into()),
        ],
    );
    assert!(text.to_lowercase().contains("credentials"), "{text}");
}

/// A server that checks credentials (moto with `INITIAL_NO_AUTH_ACTION_COUNT`), with one IAM
/// user whose key id is real: a wrong key id and a wrong secret are both refused.
#[test]
fn wrong_credentials_are_a_clear_error_without_the_secret() {
    if std::env::var("S3_TEST_CHILD").is_ok() {
        return;
    }
    // The first two actions (creating the user and its key) are let through unchecked.
    let auth = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    let aws = |args: &[&str]| {
        let out = Command::new("aws")
            .args(["--endpoint-url", &auth.endpoint, "--output", "json"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "bootstrap")
            .env("AWS_SECRET_ACCESS_KEY", "bootstrap")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap_or_else(|e| panic!("these tests need awscli (pip install awscli): {e}"));
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    aws(&["iam", "create-user", "--user-name", "publisher"]);
    let key = aws(&["iam", "create-access-key", "--user-name", "publisher"]);
    let key_id = key["AccessKey"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();

    let wrong_secret = "wrong-secret-must-not-be-printed".to_string();
    for (id, expect) in [
        ("AKIAUNKNOWNKEY000000".to_string(), "InvalidAccessKeyId"),
        (key_id, "SignatureDoesNotMatch"),
    ] {
        let text = in_child(
            "child_publish_fails_clearly",
            &[
                ("S3_TEST_ENDPOINT", auth.endpoint.clone()),
                ("S3_TEST_URL", "s3://any-bucket/p".into()),
                ("S3_TEST_HINT", "AWS_SECRET_ACCESS_KEY".into()),
                ("AWS_ACCESS_KEY_ID", id),
                ("AWS_SECRET_ACCESS_KEY", wrong_secret.clone()),
                ("AWS_REGION", "us-east-1".into()),
            ],
        );
        assert!(text.contains(expect), "{text}");
        assert!(!text.contains(&wrong_secret), "{text}");
    }
}

/// The real binary: `packager build … --store s3://…` builds the fixture in Docker (the mini
/// test stack) and publishes it to moto; identical again is a no-op, other bytes are refused
/// (exit 1, both checksums) unless `--force`, and a missing bucket is a clear error.
#[test]
fn packager_build_publishes_to_s3() {
    use common::fixture::{c_project, tarball};
    use common::{Route, Server, Workspace, stderr, stdout};

    let m = moto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(m.bucket("cli-build"));
    let server = Server::start();
    let ws = Workspace::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/mini/stack.toml");
    ws.write(
        "stacks/mini/stack.toml",
        &std::fs::read_to_string(manifest).unwrap(),
    );
    let o = ws.run(&["stack", "build", "mini"]);
    assert!(
        o.status.success(),
        "these tests need Docker and the mini stack: {}",
        stderr(&o)
    );
    // The fixture's source; `readme` changes the built bytes.
    let recipe = |readme: &str| {
        let mut files = c_project("fixture-s3", "1.0.0");
        files.push(("EXTRA".into(), 0o644, readme.as_bytes().to_vec()));
        files.iter_mut().for_each(|f| {
            if f.0 == "Makefile" {
                let mk = String::from_utf8(f.2.clone()).unwrap();
                f.2 = mk
                    .replace(
                        "\tcp README ",
                        "\tcp EXTRA $(PREFIX)/share/fixture-s3/EXTRA\n\tcp README ",
                    )
                    .into_bytes();
            }
        });
        let tgz = tarball("fixture-s3-1.0.0", &files);
        let sum = sha256_hex(&tgz);
        let url = server.route(&format!("/{sum}/fixture-s3-1.0.0.tar.gz"), Route::Body(tgz));
        ws.write(
            "fixture-s3/1.0.0.toml",
            &format!(
                "stack = \"mini\"\n[source]\nurl = \"{url}\"\nsha256 = \"{sum}\"\n[test]\ncommands = [\"fixture-s3 --version | grep -x 'fixture-s3 1.0.0'\"]\n"
            ),
        );
    };
    let build = |store: &str, extra: &[&str]| {
        let mut cmd = ws.cmd();
        cmd.args([
            "build",
            "fixture-s3",
            "1.0.0",
            "--store",
            store,
            "--acl",
            "public-read",
        ])
        .args(extra);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(m.env())
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let o = cmd.output().unwrap();
        assert!(
            !format!("{}{}", stdout(&o), stderr(&o)).contains(SECRET_KEY),
            "the secret was printed"
        );
        o
    };

    recipe("first");
    let o = build("s3://cli-build/rt", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.starts_with("s3://cli-build/rt/mini/fixture-s3-1.0.0.tar.gz  "),
        "{line}"
    );
    let sha = line
        .trim_end()
        .rsplit("sha256:")
        .next()
        .unwrap()
        .to_string();
    let url = format!("{}/cli-build/rt/mini/fixture-s3-1.0.0.tar.gz", m.endpoint);
    assert_eq!(sha256_hex(&rt.block_on(download(&url))), sha);

    // Same inputs: the plan finds the build key in the object's metadata and skips it.
    let o = build("s3://cli-build/rt", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
    // Rebuilt anyway, the same bytes make the conditional upload a no-op.
    let o = build("s3://cli-build/rt", &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already published"), "{}", stderr(&o));

    // Other inputs: refused as a conflict, the object unchanged.
    recipe("second");
    let o = build("s3://cli-build/rt", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is published with other inputs"), "{err}");
    assert!(err.contains("hint:") && err.contains("--force"), "{err}");
    assert_eq!(sha256_hex(&rt.block_on(download(&url))), sha, "unchanged");
    // The store side of the same guarantee: different bytes under an existing name are
    // refused with both checksums (S3Store::publish, tested above), and --force replaces.

    let o = build("s3://cli-build/rt", &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("replaced"), "{}", stderr(&o));
    assert_ne!(sha256_hex(&rt.block_on(download(&url))), sha);

    let o = build("s3://no-such-cli-bucket/rt", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("s3://no-such-cli-bucket/rt/mini/fixture-s3-1.0.0.tar.gz")
            && err.contains("NoSuchBucket")
            && err.contains("hint: the bucket does not exist"),
        "{err}"
    );
}
