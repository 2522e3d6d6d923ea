//! Encryption at rest for the WAL, on real files: a local keyring, and AWS KMS served by a real
//! moto server (`clew_encryption::testkit`). No mocks.

use clew_encryption::local::Keyring;
use clew_encryption::testkit::Moto;
use clew_encryption::{EncryptionConfig, KeyManager, LocalConfig, ProviderKind};
use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SinkError, SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::wal::record;
use clew_store::{OpenReport, Store, StoreConfig, StoreError, StoreMetrics, TraceReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Appears in the service name, the span names and an attribute value of every test span.
const MARKER: &str = "zebra-marker-7f3a";

fn cfg(dir: &Path, keys: Option<Arc<KeyManager>>) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    // Flushes and compactions are driven by the tests.
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    // The fixtures' spans are from 2025: keep them whatever today's date.
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c.keys = keys;
    c
}

fn batch(tenant: &str, trace: u8, spans: u8) -> SpanBatch {
    let now = 1_750_000_000_000_000_000u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("{MARKER}-op{i}"),
            kind: 2,
            start_time_unix_nano: now + i as u64 * 1000 + trace as u64 * 1_000_000,
            end_time_unix_nano: now + 5_000_000 + trace as u64 * 1_000_000,
            attributes: vec![kv_str("user.note", format!("note {MARKER} {trace}"))],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", format!("svc-{MARKER}"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
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

async fn open(dir: &Path, keys: Option<Arc<KeyManager>>) -> (Store, OpenReport) {
    Store::open(cfg(dir, keys), StoreMetrics::default())
        .await
        .unwrap()
}

async fn open_err(dir: &Path, keys: Option<Arc<KeyManager>>) -> StoreError {
    match Store::open(cfg(dir, keys), StoreMetrics::default()).await {
        Ok(_) => panic!("the store opened"),
        Err(e) => e,
    }
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Every byte under `data_dir/wal`.
fn wal_bytes(dir: &Path) -> Vec<u8> {
    wal_files(dir)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The body versions of a segment's records, in order.
fn versions(segment: &Path) -> Vec<u8> {
    let data = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let (body, used) = record::frame(&data[off..]).unwrap();
        out.push(body[0]);
        off += used;
    }
    out
}

async fn span_count(store: &Store, tenant: &str, trace: u8) -> usize {
    store
        .trace(&t(tenant), TraceId([trace; 16]))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn sealed_wal_replays_after_a_crash_and_holds_no_plaintext() {
    // The check can fail: a plaintext store's WAL holds the marker in every place it is put.
    let plain = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(plain.path(), None).await;
        store.consume(batch("acme", 1, 3)).await.unwrap();
    }
    let bytes = wal_bytes(plain.path());
    assert!(contains(&bytes, &format!("svc-{MARKER}")));
    assert!(contains(&bytes, &format!("{MARKER}-op1")));
    assert!(contains(&bytes, &format!("note {MARKER} 1")));
    assert!(contains(&bytes, MARKER));

    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        for trace in 1..=5 {
            store.consume(batch("acme", trace, 3)).await.unwrap();
        }
        store.consume(batch("other", 9, 2)).await.unwrap();
        // No flush, no shutdown: the spans exist only in the WAL, as after kill -9.
    }
    let bytes = wal_bytes(dir.path());
    assert!(!bytes.is_empty());
    assert!(
        !contains(&bytes, MARKER),
        "span data in plaintext in the encrypted WAL"
    );
    assert!(!contains(&bytes, "op1"));
    // One key declaration per tenant, then sealed records only.
    let segs = wal_files(dir.path());
    let v: Vec<u8> = segs.iter().flat_map(|s| versions(s)).collect();
    assert_eq!(v.iter().filter(|&&v| v == record::VERSION_KEY).count(), 2);
    assert_eq!(
        v.iter().filter(|&&v| v == record::VERSION_SEALED).count(),
        6
    );
    assert!(!v.contains(&record::VERSION_PLAIN));

    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 6);
    assert_eq!(report.replay.spans, 17);
    assert_eq!(report.replay.key_records, 2);
    assert_eq!(report.replay.unreadable_records, 0);
    assert_eq!(report.replay.truncated_bytes, 0);
    for trace in 1..=5 {
        assert_eq!(span_count(&store, "acme", trace).await, 3);
    }
    assert_eq!(span_count(&store, "other", 9).await, 2);
    let spans = store.trace(&t("acme"), TraceId([1; 16])).await.unwrap();
    assert_eq!(spans[0].service_name(), format!("svc-{MARKER}"));

    // Records appended after the replay are sealed too, and replay again.
    store.consume(batch("acme", 6, 2)).await.unwrap();
    drop(store);
    assert!(!contains(&wal_bytes(dir.path()), MARKER));
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 7);
    assert_eq!(span_count(&store, "acme", 6).await, 2);
}

#[tokio::test]
async fn rotation_declares_new_keys_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
    store.consume(batch("acme", 1, 2)).await.unwrap();
    store.flush().await.unwrap();
    store.consume(batch("acme", 2, 2)).await.unwrap();
    drop(store);
    // The flushed segment is gone; the live one is self-contained: its own key declaration first.
    let segs = wal_files(dir.path());
    let last = segs.last().unwrap();
    assert_eq!(
        versions(last),
        vec![record::VERSION_KEY, record::VERSION_SEALED]
    );
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 1);
    assert_eq!(span_count(&store, "acme", 2).await, 2);
    assert_eq!(span_count(&store, "acme", 1).await, 2, "from the block");
}

#[tokio::test]
async fn plaintext_wal_upgrades_to_sealed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), None).await;
        store.consume(batch("acme", 1, 3)).await.unwrap();
        store.consume(batch("acme", 2, 1)).await.unwrap();
    }
    let old = wal_files(dir.path());
    assert_eq!(old.len(), 1);
    assert_eq!(
        versions(&old[0]),
        vec![record::VERSION_PLAIN, record::VERSION_PLAIN]
    );

    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 2);
    assert_eq!(report.replay.spans, 4);
    assert_eq!(span_count(&store, "acme", 1).await, 3);
    assert_eq!(span_count(&store, "acme", 2).await, 1);

    store.consume(batch("acme", 3, 2)).await.unwrap();
    drop(store);
    let segs = wal_files(dir.path());
    let new = segs.iter().find(|p| **p != old[0]).unwrap();
    assert_eq!(
        versions(new),
        vec![record::VERSION_KEY, record::VERSION_SEALED]
    );
    assert!(!contains(&std::fs::read(new).unwrap(), MARKER));

    // Both generations replay together.
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 3);
    assert_eq!(span_count(&store, "acme", 1).await, 3);
    assert_eq!(span_count(&store, "acme", 3).await, 2);
}

#[tokio::test]
async fn crypto_shredded_tenant_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        // Interleaved, so the shredded tenant's records sit between the other's.
        for trace in 1..=4 {
            store.consume(batch("doomed", trace, 2)).await.unwrap();
            store.consume(batch("kept", trace, 3)).await.unwrap();
        }
    }
    let lens: Vec<u64> = wal_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();

    assert_eq!(Keyring::open(&ring).unwrap().destroy("doomed").unwrap(), 1);
    // A fresh manager: no cached unwrapped key survives.
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.unreadable_records, 4);
    assert_eq!(report.replay.unreadable_tenants, vec!["doomed".to_string()]);
    assert_eq!(report.replay.records, 4);
    assert_eq!(report.replay.spans, 12);
    assert_eq!(report.replay.truncated_bytes, 0);
    for trace in 1..=4 {
        assert_eq!(span_count(&store, "kept", trace).await, 3);
        assert_eq!(span_count(&store, "doomed", trace).await, 0);
    }
    // Nothing was cut: the segments are intact.
    let after: Vec<u64> = wal_files(dir.path())
        .iter()
        .take(lens.len())
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(after, lens);

    // The tenant may write again (under a fresh key version); its new data is readable.
    store.consume(batch("doomed", 9, 1)).await.unwrap();
    drop(store);
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.unreadable_records, 4);
    assert_eq!(span_count(&store, "doomed", 9).await, 1);
    assert_eq!(span_count(&store, "doomed", 1).await, 0);
}

#[tokio::test]
async fn kms_outage_refuses_appends_retryably_and_never_writes_plaintext() {
    let moto = Moto::start();
    let key_id = moto.create_kms_key("clew wal test").await;
    let kms_keys = || {
        Arc::new(KeyManager::new(Arc::new(
            moto.kms_provider(moto.kms_config(&key_id)),
        )))
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), Some(kms_keys())).await;
        store.consume(batch("acme", 1, 2)).await.unwrap();
    }
    // Replay unwraps the declared key through KMS (Decrypt).
    let (store, report) = open(dir.path(), Some(kms_keys())).await;
    assert_eq!(report.replay.records, 1);
    assert_eq!(span_count(&store, "acme", 1).await, 2);
    store.consume(batch("acme", 2, 2)).await.unwrap();
    let dead_keys = kms_keys();
    drop(moto); // KMS is gone.

    // The tenant's current WAL key is cached until the next rotation: appends continue.
    store.consume(batch("acme", 3, 2)).await.unwrap();
    // A copy of the WAL as a crash now would leave it (sealed records, all fsynced), for the
    // start-up check below (the flush further down may delete these segments here).
    let crashed = tempfile::tempdir().unwrap();
    std::fs::create_dir(crashed.path().join("wal")).unwrap();
    for seg in wal_files(dir.path()) {
        std::fs::copy(
            &seg,
            crashed.path().join("wal").join(seg.file_name().unwrap()),
        )
        .unwrap();
    }
    // A tenant without a current key needs KMS: refused retryably.
    match store.consume(batch("newcomer", 4, 1)).await {
        Err(SinkError::Overloaded { reason, .. }) => {
            assert!(reason.contains("newcomer"), "{reason}")
        }
        other => panic!("expected a retryable refusal, got {other:?}"),
    }
    // Rotation rolls the WAL keys (the block write may fail without KMS; the rotation happened).
    let _ = store.flush().await;
    match store.consume(batch("acme", 5, 2)).await {
        Err(SinkError::Overloaded {
            retry_after,
            reason,
        }) => {
            assert!(retry_after > Duration::ZERO);
            assert!(reason.contains("aws_kms"), "{reason}");
        }
        other => panic!("expected a retryable refusal, got {other:?}"),
    }
    assert_eq!(span_count(&store, "acme", 5).await, 0);
    assert_eq!(span_count(&store, "newcomer", 4).await, 0);
    drop(store);

    let bytes = wal_bytes(dir.path());
    assert!(!contains(&bytes, MARKER), "plaintext span data in the WAL");
    for seg in wal_files(dir.path()) {
        assert!(
            !versions(&seg).contains(&record::VERSION_PLAIN),
            "{}",
            seg.display()
        );
    }

    // Start-up with KMS down and sealed records to replay fails clearly instead of dropping data.
    dead_keys.clear_cache();
    let fresh = Arc::new(KeyManager::new(dead_keys.provider().clone()));
    match open_err(crashed.path(), Some(fresh)).await {
        StoreError::KeyUnavailable(msg) => {
            assert!(msg.contains("nothing was dropped"), "{msg}")
        }
        other => panic!("expected KeyUnavailable, got {other}"),
    }
}

#[tokio::test]
async fn sealed_wal_without_keys_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        store.consume(batch("acme", 1, 2)).await.unwrap();
    }
    let before = wal_bytes(dir.path());
    let err = open_err(dir.path(), None).await;
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Config { .. }), "{err:?}");
    assert!(msg.contains("storage.encryption"), "{msg}");
    assert!(msg.contains("encrypted WAL records"), "{msg}");
    // Nothing was truncated or removed by the refused start.
    assert!(wal_bytes(dir.path()).starts_with(&before));
    // With keys it still opens.
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 1);
    assert_eq!(span_count(&store, "acme", 1).await, 2);
}

#[tokio::test]
async fn torn_tail_of_a_sealed_segment_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let ring = keys_dir.path().join("keyring.yaml");
    Keyring::create(&ring).unwrap();
    {
        let (store, _) = open(dir.path(), Some(local_keys(&ring))).await;
        store.consume(batch("acme", 1, 2)).await.unwrap();
        store.consume(batch("acme", 2, 2)).await.unwrap();
    }
    let seg = wal_files(dir.path()).pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    // Cut the last sealed record in half, as a crash in the middle of a write would.
    let cut = data.len() - 20;
    std::fs::write(&seg, &data[..cut]).unwrap();
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await;
    assert_eq!(report.replay.records, 1);
    assert_eq!(report.replay.unreadable_records, 0);
    assert!(report.replay.truncated_bytes > 0);
    assert_eq!(span_count(&store, "acme", 1).await, 2);
    assert_eq!(span_count(&store, "acme", 2).await, 0);
}

#[tokio::test]
async fn record_of_an_unknown_version_refuses_start_instead_of_truncating() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), None).await;
        store.consume(batch("acme", 1, 2)).await.unwrap();
    }
    let seg = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let len = data.len();
    // A checksummed record of version 9 (as a newer Clew might write).
    let body = [9u8, 1, 2, 3];
    data.extend_from_slice(&(body.len() as u32).to_le_bytes());
    data.extend_from_slice(&crc32fast_hash(&body).to_le_bytes());
    data.extend_from_slice(&body);
    std::fs::write(&seg, &data).unwrap();
    let err = open_err(dir.path(), None).await;
    assert!(err.to_string().contains("record version 9"), "{err}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, len + 12);
}

/// CRC-32 (IEEE), as the WAL framing uses, without a dev-dependency on crc32fast.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
