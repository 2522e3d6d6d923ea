//! The sending queue's on-disk format does not change: golden segments written by an older Clew
//! (`tests/fixtures/queue_v1_v2_v3`, see its README) drain, re-encode byte for byte, refuse what
//! they must, and are cut where they are torn. Real files and a real local keyring.

use clew_encryption::local::Keyring;
use clew_encryption::sealed::record::RecordKey;
use clew_encryption::{EncryptionConfig, KeyManager, LocalConfig, ProviderKind};
use clew_export::queue::{
    self, Body, OpenReport, Queue, QueueError, QueueOptions, HEADER_LEN, KEY_ID_LEN,
};
use clew_model::Tenant;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// (tenant, spans, payload) of every batch in the fixture, in write order: segment 1 plaintext,
/// segment 2 sealed.
const PLAIN: [(&str, u64, &[u8]); 2] = [
    ("acme", 3, b"golden plain payload one"),
    ("other", 1, b"golden plain payload two"),
];
const SEALED: [(&str, u64, &[u8]); 3] = [
    ("acme", 2, b"golden sealed payload three"),
    ("other", 2, b"golden sealed payload four"),
    ("acme", 1, b"golden sealed payload five"),
];
const SEGMENTS: [&str; 2] = ["0000000000000001.seg", "0000000000000002.seg"];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queue_v1_v2_v3")
}

/// A copy of the fixture's queue directory and keyring.
fn copy_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_dir();
    let qdir = dir.path().join("queue");
    std::fs::create_dir(&qdir).unwrap();
    for name in SEGMENTS.iter().chain(&["cursor"]) {
        std::fs::copy(src.join("queue").join(name), qdir.join(name)).unwrap();
    }
    let ring = dir.path().join("keyring.yaml");
    std::fs::copy(src.join("keyring.yaml"), &ring).unwrap();
    // Git does not keep the 0600 a keyring is written with.
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, qdir, ring)
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

async fn open(qdir: &Path, ring: &Path) -> (Arc<Queue>, OpenReport) {
    Queue::open_with_keys(QueueOptions::new(qdir, 1 << 20), Some(local_keys(ring)))
        .await
        .unwrap()
}

/// Leases one record at a time and acks it: (tenant, spans, payload) in order.
fn drain(q: &Queue) -> Vec<(String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(l) = q.try_next(1) {
        out.push((l.tenant.as_str().to_string(), l.spans, l.payload.clone()));
        q.ack(&l).unwrap();
    }
    out
}

fn expected(batches: &[(&str, u64, &[u8])]) -> Vec<(String, u64, Vec<u8>)> {
    batches
        .iter()
        .map(|(t, s, p)| (t.to_string(), *s, p.to_vec()))
        .collect()
}

/// (offset, record bytes) of every record in a fixture segment.
fn records(segment: &str) -> Vec<(usize, Vec<u8>)> {
    let data = std::fs::read(fixture_dir().join("queue").join(segment)).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (_, used) = queue::frame(&data[at..]).unwrap();
        out.push((at, data[at..at + used].to_vec()));
        at += used;
    }
    out
}

#[tokio::test]
async fn golden_segments_drain_plain_and_sealed_records_in_order() {
    let (_dir, qdir, ring) = copy_fixture();
    let (q, report) = open(&qdir, &ring).await;
    assert_eq!(
        (
            report.segments,
            report.pending_records,
            report.pending_spans
        ),
        (2, 5, 9),
        "{report:?}"
    );
    assert_eq!(
        (
            report.key_records,
            report.unreadable_records,
            report.truncated_bytes
        ),
        (2, 0, 0),
        "{report:?}"
    );
    let all: Vec<_> = PLAIN.into_iter().chain(SEALED).collect();
    assert_eq!(drain(&q), expected(&all));
    assert_eq!((q.len(), q.size_bytes()), (0, 0));
}

#[tokio::test]
async fn golden_records_decode_and_reencode_byte_for_byte() {
    let plain = records(SEGMENTS[0]);
    assert_eq!(plain.len(), PLAIN.len());
    for ((_, rec), (tenant, spans, payload)) in plain.iter().zip(PLAIN) {
        let (body, used) = queue::frame(rec).unwrap();
        assert_eq!(used, rec.len());
        let (t, s, p) = queue::parse_body(body).unwrap();
        assert_eq!((t.as_str(), s, p), (tenant, spans, payload));
        let t = Tenant::new(tenant).unwrap();
        assert_eq!(&queue::encode_record(&t, spans, payload), rec);
    }

    let sealed = records(SEGMENTS[1]);
    let versions: Vec<u8> = sealed.iter().map(|(_, r)| r[HEADER_LEN]).collect();
    assert_eq!(versions, vec![3, 2, 3, 2, 2]);
    let (_dir, _, ring) = copy_fixture();
    let keys = local_keys(&ring);
    let mut data_keys = std::collections::HashMap::new();
    let mut batches = SEALED.iter();
    for (_, rec) in &sealed {
        let (body, _) = queue::frame(rec).unwrap();
        match queue::parse(body).unwrap() {
            Body::Key {
                tenant,
                key_id,
                envelope,
            } => {
                // Declarations re-encode byte for byte (pretty envelope JSON).
                assert_eq!(&queue::encode_key(tenant.as_str(), &key_id, &envelope), rec);
                let key = keys.open(&envelope).await.unwrap();
                data_keys.insert(key_id, (tenant, key));
            }
            Body::Sealed {
                tenant,
                spans,
                key_id,
                body,
            } => {
                let &(want_tenant, want_spans, payload) = batches.next().unwrap();
                let (decl_tenant, key) = &data_keys[&key_id];
                assert_eq!((tenant.as_str(), spans), (want_tenant, want_spans));
                assert_eq!(decl_tenant, &tenant);
                let record_key = RecordKey::new(key);
                assert_eq!(body.open(&record_key).unwrap(), payload);
                // A new seal (random nonce) has the same layout: the same clear header, the
                // same length, and its sealed part opens under the hand-built AAD.
                let new = queue::encode_sealed(&tenant, spans, payload, &key_id, &record_key);
                let mut aad = vec![2u8, want_tenant.len() as u8, 0];
                aad.extend_from_slice(want_tenant.as_bytes());
                aad.extend_from_slice(&(want_spans as u32).to_le_bytes());
                aad.extend_from_slice(&key_id);
                assert_eq!(aad.len(), 3 + want_tenant.len() + 4 + KEY_ID_LEN);
                for r in [rec, &new] {
                    assert_eq!(r.len(), rec.len());
                    assert_eq!(&r[..4], &rec[..4], "length field");
                    assert_eq!(&r[HEADER_LEN..HEADER_LEN + aad.len()], &aad[..]);
                    let opened =
                        clew_encryption::open_record(key, &aad, &r[HEADER_LEN + aad.len()..]);
                    assert_eq!(opened.unwrap(), payload);
                }
            }
            Body::Plain { .. } => panic!("plaintext record in the sealed segment"),
        }
    }
    assert!(batches.next().is_none());
}

#[tokio::test]
async fn golden_sealed_segment_needs_storage_encryption() {
    let (_dir, qdir, _) = copy_fixture();
    let err = Queue::open(QueueOptions::new(&qdir, 1 << 20))
        .err()
        .unwrap();
    // Three sealed batches and two declarations.
    assert!(
        matches!(err, QueueError::EncryptionRequired { records: 5, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn golden_records_of_a_shredded_tenant_are_refused_and_counted() {
    let (_dir, qdir, ring) = copy_fixture();
    Keyring::open(&ring).unwrap().destroy("other").unwrap();
    let (q, report) = open(&qdir, &ring).await;
    assert_eq!(
        (report.pending_records, report.unreadable_records),
        (5, 1),
        "{report:?}"
    );
    // other's sealed batch does not open; its plaintext one is still sent.
    let want = [PLAIN[0], PLAIN[1], SEALED[0], SEALED[2]];
    assert_eq!(drain(&q), expected(&want));
    assert_eq!((q.len(), q.size_bytes()), (0, 0));
}

#[tokio::test]
async fn golden_segment_with_a_tampered_record_and_a_torn_tail() {
    let (_dir, qdir, ring) = copy_fixture();
    let seg = qdir.join(SEGMENTS[1]);
    let mut data = std::fs::read(&seg).unwrap();
    let recs = records(SEGMENTS[1]);
    // other's sealed batch (record 3): flip a ciphertext byte and fix the CRC — a checksummed
    // record that does not open is skipped, not cut.
    let (start, rec) = &recs[3];
    let end = start + rec.len();
    data[end - 5] ^= 1;
    let crc = crc32fast::hash(&data[start + HEADER_LEN..end]);
    data[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    // The last record (acme, "five") torn after 30 bytes, then garbage.
    let last = recs[4].0;
    data.truncate(last + 30);
    data.extend_from_slice(&[0xAB; 50]);
    std::fs::write(&seg, &data).unwrap();

    let (q, report) = open(&qdir, &ring).await;
    assert_eq!(
        (report.truncated_bytes, report.pending_records),
        (80, 4),
        "{report:?}"
    );
    assert_eq!(drain(&q), expected(&[PLAIN[0], PLAIN[1], SEALED[0]]));
    assert_eq!((q.len(), q.size_bytes()), (0, 0));
}
