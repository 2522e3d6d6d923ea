//! The WAL's on-disk format does not change: golden segments written by an older Clew
//! (`tests/fixtures/wal_v1_v2_v3`, see its README) replay, re-encode byte for byte, refuse what
//! they must, and are cut where they are torn. Real files, a real local keyring, the real store.

use clew_encryption::local::Keyring;
use clew_encryption::{EncryptionConfig, KeyManager, LocalConfig, ProviderKind};
use clew_model::attrs::kv_str;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant, TraceId};
use clew_store::wal::record::{self, Record, HEADER_LEN, KEY_ID_LEN};
use clew_store::{OpenReport, Store, StoreConfig, StoreError, StoreMetrics, TraceReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// (tenant, trace, spans) of every batch in the fixture, in write order: segment 1 plaintext,
/// segment 2 sealed.
const PLAIN: [(&str, u8, u8); 2] = [("acme", 1, 3), ("other", 2, 1)];
const SEALED: [(&str, u8, u8); 3] = [("acme", 3, 2), ("other", 4, 2), ("acme", 5, 1)];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal_v1_v2_v3")
}

/// A fresh data dir holding a copy of the fixture's `wal/`, and a copy of its keyring.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_dir();
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    for name in ["0000000000000001.wal", "0000000000000002.wal"] {
        std::fs::copy(
            src.join("wal").join(name),
            dir.path().join("wal").join(name),
        )
        .unwrap();
    }
    let ring = dir.path().join("keyring.yaml");
    std::fs::copy(src.join("keyring.yaml"), &ring).unwrap();
    // Git does not keep the 0600 a keyring is written with.
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, ring)
}

/// The batch the fixture generator wrote (the same function, kept here verbatim).
fn batch(tenant: &str, trace: u8, spans: u8) -> SpanBatch {
    let now = 1_750_000_000_000_000_000u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("golden-op{i}"),
            kind: 2,
            start_time_unix_nano: now + i as u64 * 1000 + trace as u64 * 1_000_000,
            end_time_unix_nano: now + 5_000_000 + trace as u64 * 1_000_000,
            attributes: vec![kv_str("user.note", format!("note {trace}"))],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "svc-golden")],
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

fn cfg(dir: &Path, keys: Option<Arc<KeyManager>>) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    // The fixture's spans are from 2025: keep them whatever today's date.
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c.keys = keys;
    c
}

async fn open(
    dir: &Path,
    keys: Option<Arc<KeyManager>>,
) -> Result<(Store, OpenReport), StoreError> {
    Store::open(cfg(dir, keys), StoreMetrics::default()).await
}

async fn span_names(store: &Store, tenant: &str, trace: u8) -> Vec<String> {
    let mut names: Vec<String> = store
        .trace(&Tenant::new(tenant).unwrap(), TraceId([trace; 16]))
        .await
        .unwrap()
        .iter()
        .map(|s| s.span.name.clone())
        .collect();
    names.sort();
    names
}

fn expected_names(spans: u8) -> Vec<String> {
    (1..=spans).map(|i| format!("golden-op{i}")).collect()
}

/// (offset, record bytes) of every record in a fixture segment.
fn records(segment: &str) -> Vec<(usize, Vec<u8>)> {
    let data = std::fs::read(fixture_dir().join("wal").join(segment)).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (_, used) = record::frame(&data[at..]).unwrap();
        out.push((at, data[at..at + used].to_vec()));
        at += used;
    }
    out
}

#[tokio::test]
async fn golden_segments_replay_plain_and_sealed_records() {
    let (dir, ring) = copy_fixture();
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await.unwrap();
    let r = &report.replay;
    assert_eq!((r.segments, r.records, r.key_records), (2, 5, 2), "{r:?}");
    assert_eq!(
        (r.spans, r.unreadable_records, r.truncated_bytes),
        (9, 0, 0),
        "{r:?}"
    );
    for (tenant, trace, spans) in PLAIN.into_iter().chain(SEALED) {
        assert_eq!(
            span_names(&store, tenant, trace).await,
            expected_names(spans),
            "{tenant} trace {trace}"
        );
    }
    // Tenants stay apart: acme's trace is not other's.
    assert!(span_names(&store, "other", 1).await.is_empty());
}

#[tokio::test]
async fn golden_records_decode_and_reencode_byte_for_byte() {
    // Segment 1: plaintext records re-encode to exactly the stored bytes.
    let plain = records("0000000000000001.wal");
    assert_eq!(plain.len(), PLAIN.len());
    for ((_, rec), (tenant, trace, spans)) in plain.iter().zip(PLAIN) {
        let (Record::Plain(b), used) = record::decode(rec).unwrap() else {
            panic!("not a plaintext record")
        };
        assert_eq!(used, rec.len());
        assert_eq!(b.tenant.as_str(), tenant);
        assert_eq!(b.resource_spans, batch(tenant, trace, spans).resource_spans);
        assert_eq!(&record::encode_plain(&batch(tenant, trace, spans)), rec);
    }

    // Segment 2: a declaration before the first record of each tenant's key.
    let sealed = records("0000000000000002.wal");
    let versions: Vec<u8> = sealed.iter().map(|(_, r)| r[HEADER_LEN]).collect();
    assert_eq!(versions, vec![3, 2, 3, 2, 2]);
    let (_ring_dir, ring) = copy_fixture();
    let keys = local_keys(&ring);
    let mut data_keys = std::collections::HashMap::new();
    let mut batches = SEALED.iter();
    for (_, rec) in &sealed {
        match record::decode(rec).unwrap().0 {
            Record::Key(k) => {
                // Declarations re-encode byte for byte (compact envelope JSON).
                assert_eq!(
                    &record::encode_key(k.tenant.as_str(), &k.key_id, &k.envelope),
                    rec
                );
                let key = keys.open(&k.envelope).await.unwrap();
                data_keys.insert(k.key_id, (k.tenant.clone(), key));
            }
            Record::Sealed(s) => {
                let &(tenant, trace, spans) = batches.next().unwrap();
                let (decl_tenant, key) = &data_keys[&s.key_id];
                assert_eq!((s.tenant.as_str(), decl_tenant.as_str()), (tenant, tenant));
                let b = s.open(key).unwrap();
                let want = batch(tenant, trace, spans);
                assert_eq!(b.resource_spans, want.resource_spans);
                // A new seal (random nonce) has the same layout: the same clear header, the same
                // length, and its sealed part opens under the hand-built AAD of the format.
                let new = record::encode_sealed(&want, &s.key_id, key);
                let mut aad = vec![2u8, tenant.len() as u8, 0];
                aad.extend_from_slice(tenant.as_bytes());
                aad.extend_from_slice(&s.key_id);
                assert_eq!(aad.len(), 3 + tenant.len() + KEY_ID_LEN);
                for r in [rec, &new] {
                    assert_eq!(r.len(), rec.len());
                    assert_eq!(&r[..4], &rec[..4], "length field");
                    assert_eq!(&r[HEADER_LEN..HEADER_LEN + aad.len()], &aad[..]);
                    let proto =
                        clew_encryption::open_record(key, &aad, &r[HEADER_LEN + aad.len()..])
                            .unwrap();
                    let req = ExportTraceServiceRequest::decode(proto.as_slice()).unwrap();
                    assert_eq!(req.resource_spans, want.resource_spans);
                }
            }
            Record::Plain(_) => panic!("plaintext record in the sealed segment"),
        }
    }
    assert!(batches.next().is_none());
}

#[tokio::test]
async fn golden_sealed_segment_needs_storage_encryption() {
    let (dir, _) = copy_fixture();
    let err = open(dir.path(), None).await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Config { key, .. } if key == "storage.encryption"),
        "{err}"
    );
    // Nothing was cut by the refusal.
    let size = |n: &str| {
        std::fs::metadata(dir.path().join("wal").join(n))
            .unwrap()
            .len()
    };
    assert_eq!(
        (size("0000000000000001.wal"), size("0000000000000002.wal")),
        (465, 1254)
    );
}

#[tokio::test]
async fn golden_records_of_a_shredded_tenant_are_refused_and_counted() {
    let (dir, ring) = copy_fixture();
    Keyring::open(&ring).unwrap().destroy("other").unwrap();
    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await.unwrap();
    let r = &report.replay;
    // other's sealed batch (trace 4) does not open; its plaintext one (trace 2) still replays.
    assert_eq!((r.records, r.unreadable_records), (4, 1), "{r:?}");
    assert_eq!(r.unreadable_tenants, vec!["other".to_string()]);
    assert!(span_names(&store, "other", 4).await.is_empty());
    assert_eq!(span_names(&store, "other", 2).await, expected_names(1));
    assert_eq!(span_names(&store, "acme", 5).await, expected_names(1));
}

#[tokio::test]
async fn golden_segment_with_a_tampered_record_and_a_torn_tail() {
    let (dir, ring) = copy_fixture();
    let seg = dir.path().join("wal/0000000000000002.wal");
    let mut data = std::fs::read(&seg).unwrap();
    let recs = records("0000000000000002.wal");
    // other's sealed batch (record 3): flip a ciphertext byte and fix the CRC — a checksummed
    // record that does not open is skipped and counted, not cut.
    let (start, rec) = &recs[3];
    let end = start + rec.len();
    data[end - 5] ^= 1;
    let crc = crc32fast::hash(&data[start + HEADER_LEN..end]);
    data[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    // The last record (acme trace 5) torn after 30 bytes.
    let last = recs[4].0;
    data.truncate(last + 30);
    std::fs::write(&seg, &data).unwrap();

    let (store, report) = open(dir.path(), Some(local_keys(&ring))).await.unwrap();
    let r = &report.replay;
    assert_eq!(
        (r.records, r.unreadable_records, r.truncated_bytes),
        (3, 1, 30),
        "{r:?}"
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        last as u64,
        "cut at the torn record"
    );
    assert_eq!(span_names(&store, "acme", 3).await, expected_names(2));
    assert!(span_names(&store, "acme", 5).await.is_empty());
}
