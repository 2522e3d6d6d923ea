//! Encryption at rest for blocks, on real files: a local keyring, and AWS KMS (and S3) served by a
//! real moto server (`clew_encryption::testkit`). No mocks.

use clew_encryption::local::Keyring;
use clew_encryption::testkit::Moto;
use clew_encryption::{EncryptionConfig, Envelope, KeyManager, LocalConfig, ProviderKind};
use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::block::{BLOOM_FILE, DATA_FILE, META_FILE};
use clew_store::sealed_block::KEY_FILE;
use clew_store::storage::{S3Config, S3Credentials, Tier, TieringConfig};
use clew_store::{
    ManualClock, OpenReport, SearchQuery, Store, StoreConfig, StoreError, StoreMetrics, TraceReader,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// In the service names, span names and an attribute value of every test span.
const MARKER: &str = "MARKER-7f3a";
const T0: u64 = 1_750_000_000_000_000_000;
const CHILDREN: u32 = 4;

fn cfg(dir: &Path, keys: Option<Arc<KeyManager>>) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    // Flushes and compactions are driven by the tests.
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.compaction.min_blocks = 2;
    // Several row groups per block, so trace lookups read ranges in the middle of the file.
    c.rows_per_row_group = 100;
    // The fixtures' spans are from 2025: keep them whatever today's date.
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c.block_delete_delay = Duration::ZERO;
    c.keys = keys;
    c
}

fn front() -> String {
    format!("front-{MARKER}")
}

fn back() -> String {
    format!("back-{MARKER}")
}

fn root_op() -> String {
    format!("GET /{MARKER}")
}

fn trace_id(i: u32) -> [u8; 16] {
    let mut id = [0x5a; 16];
    id[..4].copy_from_slice(&i.to_be_bytes());
    id[12..].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
    id
}

/// Incompressible filler (xorshift), so blocks span several 64 KiB sealed chunks.
fn filler(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(128);
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out
}

/// Traces `traces` of `tenant`: a root span in `front-…` and `CHILDREN` child spans in `back-…`.
fn batch(tenant: &str, traces: std::ops::Range<u32>) -> SpanBatch {
    let mut roots = Vec::new();
    let mut children = Vec::new();
    for t in traces {
        let start = T0 + t as u64 * 1_000_000;
        let span = |i: u32, parent: Option<u32>, name: String| Span {
            trace_id: trace_id(t).to_vec(),
            span_id: [i as u8 + 1; 8].to_vec(),
            parent_span_id: parent.map(|p| vec![p as u8 + 1; 8]).unwrap_or_default(),
            name,
            kind: 2,
            start_time_unix_nano: start + i as u64 * 1000,
            end_time_unix_nano: start + 500_000,
            attributes: vec![
                kv_str("user.tag", format!("tag-{MARKER}")),
                kv_str(
                    "user.note",
                    format!("{MARKER} {t} {i} {}", filler(t as u64 * 16 + i as u64)),
                ),
            ],
            ..Default::default()
        };
        roots.push(span(0, None, root_op()));
        for i in 1..=CHILDREN {
            children.push(span(i, Some(0), format!("child-{MARKER}-{i}")));
        }
    }
    let rs = |service: String, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv_str("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    };
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![rs(front(), roots), rs(back(), children)],
    )
}

fn t(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

/// A KeyManager on a local keyring file (a fresh manager = no cached keys).
fn local_keys(keyring: &Path) -> Arc<KeyManager> {
    let config = EncryptionConfig {
        provider: ProviderKind::Local,
        local: Some(LocalConfig {
            keyring: keyring.to_path_buf(),
        }),
        aws_kms: None,
    };
    Arc::new(KeyManager::new(config.build().unwrap()))
}

async fn open_cfg(c: StoreConfig) -> (Store, OpenReport) {
    Store::open(c, StoreMetrics::default())
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

async fn open(dir: &Path, keys: Option<Arc<KeyManager>>) -> (Store, OpenReport) {
    open_cfg(cfg(dir, keys)).await
}

/// Trace lookups, searches on both paths (column predicates, row matcher) and dependencies all
/// see exactly the traces `traces` of `tenant`.
async fn check_reads(store: &Store, tenant: &str, traces: std::ops::Range<u32>) {
    let tn = t(tenant);
    let n = traces.len();
    for i in traces.clone().step_by(7).chain(traces.end.checked_sub(1)) {
        let spans = store.trace(&tn, TraceId(trace_id(i))).await.unwrap();
        assert_eq!(spans.len(), 1 + CHILDREN as usize, "trace {i} of {tenant}");
        assert!(spans.iter().any(|s| s.service_name() == back()));
    }
    // Dedicated columns only (service, operation): the column-predicate path.
    let q = SearchQuery {
        service: Some(front()),
        operation: Some(root_op()),
        limit: 100_000,
        ..Default::default()
    };
    assert_eq!(
        store.search(&tn, &q).await.unwrap().len(),
        n,
        "column search"
    );
    // A generic attribute: the row matcher.
    let q = SearchQuery {
        attributes: vec![("user.tag".into(), format!("tag-{MARKER}"))],
        limit: 100_000,
        ..Default::default()
    };
    assert_eq!(store.search(&tn, &q).await.unwrap().len(), n, "row search");
    let deps = store.dependencies(&tn, 0, u64::MAX).await.unwrap();
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert_eq!(deps[0].parent, front());
    assert_eq!(deps[0].child, back());
    assert_eq!(deps[0].call_count, n as u64 * CHILDREN as u64);
}

/// Every file under `root`, recursively.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn named(root: &Path, name: &str) -> Vec<PathBuf> {
    files(root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Files under `root` whose bytes contain the marker.
fn files_with_marker(root: &Path) -> Vec<PathBuf> {
    files(root)
        .into_iter()
        .filter(|p| contains(&std::fs::read(p).unwrap_or_default(), MARKER))
        .collect()
}

fn envelope(path: &Path) -> Envelope {
    Envelope::from_json(&std::fs::read(path).unwrap()).unwrap()
}

/// Contents of every data, bloom and meta file under `root`.
fn block_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == DATA_FILE || n == BLOOM_FILE || n == META_FILE)
        })
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// The test itself can fail: with a plaintext store the marker is in the block files.
#[tokio::test]
async fn plaintext_blocks_do_show_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), None).await;
    store.consume(batch("acme", 0..300)).await.unwrap();
    store.flush().await.unwrap();
    check_reads(&store, "acme", 0..300).await;
    let blocks = dir.path().join("blocks");
    let found = files_with_marker(&blocks);
    for name in [DATA_FILE, META_FILE] {
        assert!(
            found
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == name)),
            "the marker should be in a plaintext {name}: {found:?}"
        );
    }
    assert!(named(&blocks, KEY_FILE).is_empty());
}

#[tokio::test]
async fn sealed_blocks_hold_no_plaintext_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        store.consume(batch("acme", 0..300)).await.unwrap();
        store.flush().await.unwrap();
        store.consume(batch("acme", 300..600)).await.unwrap();
        store.flush().await.unwrap();
        check_reads(&store, "acme", 0..600).await;
        assert_eq!(store.compact_once().await.unwrap(), 1);
        let blocks = store.blocks(&t("acme"));
        assert_eq!(blocks.len(), 1);
        let b = &blocks[0];
        assert!(b.key().is_some());
        assert!(b
            .meta
            .encryption_key_id
            .as_deref()
            .unwrap()
            .starts_with("local:"));
        // Several sealed chunks: ranged reads map into the middle of the file.
        assert!(b.meta.size_bytes > 3 * clew_encryption::sealed::CHUNK_SIZE);
        assert!(b.meta.row_groups.len() > 5);
        check_reads(&store, "acme", 0..600).await;
        store.shutdown().await.unwrap();
        // The compaction inputs' deletion (delay zero) runs in a background task.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let blocks = dir.path().join("blocks");
    assert_eq!(named(&blocks, DATA_FILE).len(), 1);
    assert_eq!(named(&blocks, KEY_FILE).len(), 1);
    // The data file is sealed (its size is the sealed length of the meta's plaintext size).
    let data = std::fs::read(&named(&blocks, DATA_FILE)[0]).unwrap();
    assert_eq!(&data[..8], clew_encryption::sealed::MAGIC);
    let env = envelope(&named(&blocks, KEY_FILE)[0]);
    assert_eq!(env.tenant, "acme");
    assert_eq!(env.kek_version, Some(1));

    // Nothing anywhere in the data dir (WAL, blocks, bloom, meta.json, key.json) shows the marker.
    let found = files_with_marker(dir.path());
    assert!(found.is_empty(), "plaintext span data in {found:?}");
    assert!(!files(&blocks).is_empty());

    // A fresh key manager (no cached keys) reads everything back after a restart.
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.blocks, 1);
    assert_eq!(report.unreadable_blocks, 0);
    check_reads(&store, "acme", 0..600).await;
}

#[tokio::test]
async fn rotation_rewraps_without_touching_data_and_old_versions_retire() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    let keys = local_keys(&ring);
    let (store, _) = open(dir.path(), Some(keys.clone())).await;
    for (tenant, range) in [("acme", 0..100), ("acme", 100..200), ("beta", 0..50)] {
        store.consume(batch(tenant, range)).await.unwrap();
        store.flush().await.unwrap();
    }
    let blocks = dir.path().join("blocks");
    let before = block_files(&blocks);
    assert_eq!(before.len(), 9);
    for k in named(&blocks, KEY_FILE) {
        assert_eq!(envelope(&k).kek_version, Some(1));
    }

    let rotated = Keyring::open(&ring).unwrap().rotate(None).unwrap();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    let report = store.rewrap_keys().await.unwrap();
    assert_eq!(report.rewrapped, 3, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    for k in named(&blocks, KEY_FILE) {
        assert_eq!(envelope(&k).kek_version, Some(2), "{}", k.display());
    }
    assert_eq!(block_files(&blocks), before, "data files were rewritten");
    // In-memory envelopes follow: a second pass has nothing to do.
    let again = store.rewrap_keys().await.unwrap();
    assert_eq!(again.already_current, 3, "{again:?}");
    assert_eq!(again.rewrapped, 0);
    keys.clear_cache();
    check_reads(&store, "acme", 0..200).await;
    check_reads(&store, "beta", 0..50).await;
    store.shutdown().await.unwrap();
    drop(store);

    let ring_file = Keyring::open(&ring).unwrap();
    ring_file.retire("acme", 1).unwrap();
    ring_file.retire("beta", 1).unwrap();
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.blocks, 3);
    assert_eq!(report.unreadable_blocks, 0);
    check_reads(&store, "acme", 0..200).await;
    check_reads(&store, "beta", 0..50).await;
    assert_eq!(block_files(&blocks), before);
}

#[tokio::test]
async fn crypto_shredded_tenant_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        for (tenant, range) in [("alpha", 0..100), ("alpha", 100..150), ("beta", 0..80)] {
            store.consume(batch(tenant, range)).await.unwrap();
            store.flush().await.unwrap();
        }
        store.shutdown().await.unwrap();
    }
    let blocks = dir.path().join("blocks");
    let before = files(&blocks);
    assert_eq!(Keyring::open(&ring).unwrap().destroy("alpha").unwrap(), 1);

    let metrics = StoreMetrics::default();
    let (store, report) = Store::open(cfg(dir.path(), Some(local_keys(&ring))), metrics.clone())
        .await
        .unwrap();
    assert_eq!(report.unreadable_blocks, 2, "{report:?}");
    assert_eq!(
        report.unreadable_blocks_by_tenant,
        BTreeMap::from([("alpha".to_string(), 2)])
    );
    assert_eq!(report.blocks, 1);
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("clew_store_unreadable_blocks{tenant=\"alpha\"} 2"),
        "{text}"
    );
    // Alpha's data is gone for readers; its files are still there (not deleted).
    assert!(store
        .trace(&t("alpha"), TraceId(trace_id(3)))
        .await
        .unwrap()
        .is_empty());
    check_reads(&store, "beta", 0..80).await;
    assert_eq!(files(&blocks), before);
    // Alpha can write again, under a fresh key version.
    store.consume(batch("alpha", 500..510)).await.unwrap();
    store.flush().await.unwrap();
    check_reads(&store, "alpha", 500..510).await;
}

#[tokio::test]
async fn plaintext_blocks_from_before_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), None).await;
        store.consume(batch("acme", 0..100)).await.unwrap();
        store.flush().await.unwrap();
        store.shutdown().await.unwrap();
    }
    let blocks = dir.path().join("blocks");
    assert!(named(&blocks, KEY_FILE).is_empty());
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.blocks, 1);
    store.consume(batch("acme", 100..200)).await.unwrap();
    store.flush().await.unwrap();
    let sealed: Vec<bool> = store
        .blocks(&t("acme"))
        .iter()
        .map(|b| b.key().is_some())
        .collect();
    assert_eq!(sealed, vec![false, true]);
    check_reads(&store, "acme", 0..200).await;
    let report = store.rewrap_keys().await.unwrap();
    assert_eq!((report.plaintext, report.already_current), (1, 1));

    // Compaction rewrites both into one sealed block.
    assert_eq!(store.compact_once().await.unwrap(), 1);
    check_reads(&store, "acme", 0..200).await;
    store.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(store);
    assert_eq!(named(&blocks, KEY_FILE).len(), 1);
    assert_eq!(named(&blocks, DATA_FILE).len(), 1);
    let found = files_with_marker(&blocks);
    assert!(found.is_empty(), "plaintext left in {found:?}");
    let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
    check_reads(&store, "acme", 0..200).await;
}

#[tokio::test]
async fn sealed_blocks_without_keys_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        store.consume(batch("acme", 0..10)).await.unwrap();
        store.flush().await.unwrap();
        store.shutdown().await.unwrap();
    }
    let before = block_files(&dir.path().join("blocks"));
    match Store::open(cfg(dir.path(), None), StoreMetrics::default()).await {
        Err(StoreError::Config { key, message }) => {
            assert_eq!(key, "storage.encryption");
            assert!(message.contains("encrypted blocks found"), "{message}");
        }
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("a store without keys opened sealed blocks"),
    }
    // Nothing was removed or rewritten.
    assert_eq!(block_files(&dir.path().join("blocks")), before);
}

#[tokio::test]
async fn kms_round_trip_and_outage_never_writes_plaintext() {
    let moto = Moto::start();
    let key_id = moto.create_kms_key("clew block test").await;
    let kms_keys = || {
        Arc::new(KeyManager::new(Arc::new(
            moto.kms_provider(moto.kms_config(&key_id)),
        )))
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), Some(kms_keys())).await;
        store.consume(batch("acme", 0..150)).await.unwrap();
        store.flush().await.unwrap();
        store.consume(batch("acme", 150..300)).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.compact_once().await.unwrap(), 1);
        check_reads(&store, "acme", 0..300).await;
        store.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let blocks = dir.path().join("blocks");
    let keyfiles = named(&blocks, KEY_FILE);
    assert_eq!(keyfiles.len(), 1);
    let env = envelope(&keyfiles[0]);
    assert_eq!(env.provider, ProviderKind::AwsKms);
    let (store, report) = open(dir.path(), Some(kms_keys())).await;
    assert_eq!(report.blocks, 1);
    check_reads(&store, "acme", 0..300).await;
    let rewrap = store.rewrap_keys().await.unwrap();
    assert_eq!(rewrap.failed, 0, "{rewrap:?}");

    // Appended while KMS is up; then KMS goes away. The flush needs a new data key from KMS:
    // it fails retryably and writes nothing.
    store.consume(batch("acme", 300..310)).await.unwrap();
    let before = files(&blocks);
    drop(moto);
    match store.flush().await {
        Err(StoreError::KeyUnavailable(msg)) => assert!(msg.contains("acme"), "{msg}"),
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    assert_eq!(files(&blocks), before, "a block was (partly) written");
    // The spans are not lost: still in the head, readable.
    let spans = store
        .trace(&t("acme"), TraceId(trace_id(305)))
        .await
        .unwrap();
    assert_eq!(spans.len(), 1 + CHILDREN as usize);
    let found = files_with_marker(dir.path());
    assert!(found.is_empty(), "plaintext span data in {found:?}");

    // A restart with KMS unreachable fails clearly instead of dropping blocks.
    drop(store);
    let dead = Arc::new(KeyManager::new(Arc::new(
        clew_encryption::kms::KmsProvider::with_credentials(
            clew_encryption::kms::KmsConfig {
                timeout: Some(Duration::from_secs(2)),
                ..env_kms_config(&env)
            },
            clew_encryption::AwsCredentials {
                access_key_id: "test".into(),
                secret_access_key: "test".to_string().into(),
                session_token: None,
            },
        )
        .unwrap(),
    )));
    match Store::open(cfg(dir.path(), Some(dead)), StoreMetrics::default()).await {
        Err(StoreError::KeyUnavailable(msg)) => {
            assert!(msg.contains("KMS unreachable"), "{msg}")
        }
        Err(e) => panic!("expected KeyUnavailable, got {e}"),
        Ok(_) => panic!("opened without a reachable KMS"),
    }
}

/// A KMS config for an endpoint nothing listens on.
fn env_kms_config(env: &Envelope) -> clew_encryption::kms::KmsConfig {
    let port = clew_encryption::testkit::free_port();
    clew_encryption::kms::KmsConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some(clew_encryption::testkit::REGION.into()),
        key_id: Some(env.kek_id.clone()),
        tenant_keys: Default::default(),
        timeout: None,
    }
}

/// Tiering copies a sealed block (key.json included) to the bucket verbatim; reads work from the
/// bucket, after a restart too (through the local cache of sealed meta/bloom/key files), and
/// neither the bucket nor the cache holds plaintext.
#[tokio::test]
async fn sealed_blocks_tier_to_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("clew").await;
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    let creds = moto.credentials();
    let s3 = S3Config {
        bucket: "clew".into(),
        prefix: "enc".into(),
        endpoint: Some(moto.endpoint()),
        region: Some(clew_encryption::testkit::REGION.into()),
        force_path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.to_string(),
            session_token: None,
        }),
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let c = || {
        let mut c = cfg(dir.path(), Some(local_keys(&ring)));
        c.s3 = Some(s3.clone());
        c.tiering = Some(TieringConfig {
            after: Duration::from_secs(3600),
        });
        c.clock = clock.clone();
        c
    };
    {
        let (store, _) = open_cfg(c()).await;
        store.consume(batch("acme", 0..200)).await.unwrap();
        store.flush().await.unwrap();
        clock.advance(Duration::from_secs(2 * 86_400));
        assert_eq!(store.tier_once().await.unwrap(), 1);
        assert_eq!(store.blocks(&t("acme"))[0].tier(), Tier::Remote);
        check_reads(&store, "acme", 0..200).await;
        store.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let remote = Store::open(c(), StoreMetrics::default()).await.unwrap();
    let (store, report) = remote;
    assert_eq!(report.remote_blocks, 1);
    check_reads(&store, "acme", 0..200).await;
    // The bucket holds the sealed files and key.json; neither it nor the cache shows the marker.
    let remote = store.remote_storage().unwrap();
    let objects = remote.list_all().await.unwrap();
    let names: Vec<String> = objects.iter().map(|(p, _)| p.to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with(KEY_FILE)), "{names:?}");
    for (p, _) in &objects {
        let bytes = remote.get(p).await.unwrap();
        assert!(!contains(&bytes, MARKER), "plaintext in bucket object {p}");
    }
    assert!(!named(&dir.path().join("cache"), KEY_FILE).is_empty());
    let found = files_with_marker(dir.path());
    assert!(found.is_empty(), "plaintext span data in {found:?}");
}

#[tokio::test]
async fn a_key_destroyed_while_running_empties_that_tenant_not_the_queries() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    let keys = local_keys(&ring);
    let (store, _) = open(dir.path(), Some(keys.clone())).await;
    for (tenant, range) in [("alpha", 0..40), ("beta", 0..30)] {
        store.consume(batch(tenant, range)).await.unwrap();
    }
    store.flush().await.unwrap();
    check_reads(&store, "alpha", 0..40).await;
    // Crypto-shred alpha while the server runs; drop the cached unwrapped keys (their TTL).
    Keyring::open(&ring).unwrap().destroy("alpha").unwrap();
    keys.clear_cache();
    let spans = store
        .trace(&t("alpha"), TraceId(trace_id(3)))
        .await
        .unwrap();
    assert!(
        spans.is_empty(),
        "alpha's blocks answer as empty, not as an error"
    );
    let q = SearchQuery {
        service: Some(front()),
        limit: 100,
        ..Default::default()
    };
    assert!(store.search(&t("alpha"), &q).await.unwrap().is_empty());
    check_reads(&store, "beta", 0..30).await;
}
