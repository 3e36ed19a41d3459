//! The inventory: concurrent updates never lose an entry, and Heroku's own inventory parser
//! (libherokubuildpack) reads what we write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use libherokubuildpack::inventory::artifact::{Arch, Os};
use packager::publish::inventory::{self, Entry, Inventory};
use packager::publish::{LocalStore, Store};

fn entry(version: &str, sum_byte: u8) -> Entry {
    Entry {
        version: version.into(),
        os: "linux".into(),
        arch: packager::arch::Arch::Amd64,
        url: format!("https://example.invalid/bookworm/demo-{version}.tar.gz"),
        checksum: format!("sha256:{}", hex::encode([sum_byte; 32]))
            .parse()
            .unwrap(),
        metadata: [
            (
                "recipe-digest".to_string(),
                format!("sha256:{}", hex::encode([1u8; 32])),
            ),
            ("packager-version".to_string(), "0.1.0".to_string()),
        ]
        .into(),
    }
}

/// Eight publishers adding different versions at once: every entry lands.
async fn concurrent_adds_keep_every_entry(store: Arc<impl Store + 'static>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                inventory::add(
                    &*store,
                    "bookworm",
                    "demo",
                    entry(&format!("1.{i}.0"), i as u8),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let inv = inventory::read(&*store, "bookworm", "demo")
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<&str> = inv.artifacts.iter().map(|e| e.version.as_str()).collect();
    assert_eq!(
        versions,
        [
            "1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_concurrent_adds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::from_url(dir.path().to_str().unwrap()).unwrap());
    concurrent_adds_keep_every_entry(store).await;
}

/// The same, on a real S3-protocol server: conditional writes (If-Match / If-None-Match).
#[test]
fn s3_store_concurrent_adds() {
    let moto = common::moto::Moto::start();
    common::moto::set_env(&moto);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        moto.bucket("inventory-race").await;
        let store = packager::publish::S3Store::open(
            "s3://inventory-race/runtimes",
            packager::publish::S3Options::default(),
        )
        .await
        .unwrap();
        concurrent_adds_keep_every_entry(Arc::new(store)).await;
    });
}

#[tokio::test]
async fn re_adding_leaves_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::from_url(dir.path().to_str().unwrap()).unwrap();
    for _ in 0..3 {
        inventory::add(&store, "bookworm", "demo", entry("2.0.0", 9))
            .await
            .unwrap();
    }
    let inv = inventory::read(&store, "bookworm", "demo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inv.artifacts.len(), 1);
}

#[test]
fn libherokubuildpack_reads_what_we_write() {
    let mut inv = Inventory::default();
    for (v, b) in [("5.4.6", 3u8), ("5.1.5", 1), ("5.4.4", 2)] {
        inv.upsert(entry(v, b));
    }
    let text = inv.to_toml();
    type Theirs = libherokubuildpack::inventory::Inventory<
        semver::Version,
        sha2::Sha256,
        BTreeMap<String, String>,
    >;
    let theirs: Theirs = text.parse().unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(theirs.artifacts.len(), 3);
    let best = theirs
        .resolve(
            Os::Linux,
            Arch::Amd64,
            &semver::VersionReq::parse("^5.4").unwrap(),
        )
        .expect("resolves");
    assert_eq!(best.version, semver::Version::new(5, 4, 6));
    assert_eq!(
        best.url,
        "https://example.invalid/bookworm/demo-5.4.6.tar.gz"
    );
    assert_eq!(
        best.metadata["packager-version"], "0.1.0",
        "metadata comes through"
    );
    assert!(
        theirs
            .resolve(
                Os::Linux,
                Arch::Arm64,
                &semver::VersionReq::parse("^5.4").unwrap()
            )
            .is_none()
    );
}

#[tokio::test]
async fn rebuild_regenerates_from_the_artifacts_and_empties_inventories_left_without_any() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::from_url(dir.path().join("store").to_str().unwrap()).unwrap();
    let mut a = common::moto::artifact(dir.path(), "demo-1.0.0.tar.gz", b"demo bytes");
    a.metadata.insert("runtime".into(), "demo".into());
    a.metadata.insert("version".into(), "1.0.0".into());
    store.publish(&a, false).await.unwrap();
    // A `.tar.zst` artifact is one too.
    let mut z = common::moto::artifact(dir.path(), "demo-1.1.0.tar.zst", b"zstd bytes");
    z.metadata.insert("runtime".into(), "demo".into());
    z.metadata.insert("version".into(), "1.1.0".into());
    store.publish(&z, false).await.unwrap();
    // A stale entry in demo's inventory, and an inventory whose artifacts were all deleted.
    inventory::add(&store, "mini", "demo", entry("0.9.0", 1))
        .await
        .unwrap();
    inventory::add(&store, "mini", "gone", entry("2.0.0", 2))
        .await
        .unwrap();
    let known = vec!["demo".to_string(), "gone".to_string(), "never".to_string()];
    let (rebuilt, skipped) =
        inventory::rebuild(&store, "mini", "linux", packager::arch::Arch::Amd64, &known)
            .await
            .unwrap();
    assert!(skipped.is_empty());
    let counts: Vec<(String, usize)> = rebuilt
        .iter()
        .map(|r| (r.runtime.clone(), r.entries))
        .collect();
    assert_eq!(counts, [("demo".to_string(), 2), ("gone".to_string(), 0)]);
    let demo = inventory::read(&store, "mini", "demo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demo.artifacts.len(), 2);
    assert_eq!(demo.artifacts[0].version, "1.0.0");
    assert_eq!(demo.artifacts[1].version, "1.1.0");
    assert!(
        demo.artifacts[1].url.ends_with("/mini/demo-1.1.0.tar.zst"),
        "{}",
        demo.artifacts[1].url
    );
    assert_eq!(
        demo.artifacts[0].checksum.to_string(),
        format!("sha256:{}", a.sha256)
    );
    let gone = inventory::read(&store, "mini", "gone")
        .await
        .unwrap()
        .unwrap();
    assert!(gone.artifacts.is_empty(), "{gone:?}");
    assert!(
        inventory::read(&store, "mini", "never")
            .await
            .unwrap()
            .is_none()
    );
}
