use super::*;
use std::io::Seek;

fn t(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

fn opts(dir: &Path, max: u64) -> QueueOptions {
    let mut o = QueueOptions::new(dir, max);
    o.segment_bytes = 4096;
    o
}

/// Leases and acks everything, returning the payloads in order.
fn drain(q: &Queue, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(l) = q.try_next(max_bytes) {
        out.push(l.payload.clone());
        q.ack(&l).unwrap();
    }
    out
}

fn payload(i: u32) -> Vec<u8> {
    // Arbitrary bytes: the queue does not look inside.
    let mut p = format!("payload-{i:06}-").into_bytes();
    p.resize(100, b'x');
    p
}

#[test]
fn record_round_trip_and_framing_errors() {
    let rec = encode_record(&t("acme"), 7, b"hello");
    let (body, used) = frame(&rec).unwrap();
    assert_eq!(used, rec.len());
    let (tenant, spans, p) = parse_body(body).unwrap();
    assert_eq!((tenant.as_str(), spans, p), ("acme", 7, &b"hello"[..]));

    assert!(matches!(
        frame(&rec[..rec.len() - 1]),
        Err(RecordError::Truncated { .. })
    ));
    let mut flipped = rec.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(frame(&flipped), Err(RecordError::Checksum));
    assert!(matches!(frame(&[0xff; 8]), Err(RecordError::TooLarge(_))));
    assert!(matches!(frame(&[0; 8]), Err(RecordError::TooLarge(0))));

    let mut v2 = rec.clone();
    v2[HEADER_LEN] = 9;
    let crc = crc32fast::hash(&v2[HEADER_LEN..]);
    v2[4..8].copy_from_slice(&crc.to_le_bytes());
    let (body, _) = frame(&v2).unwrap();
    assert_eq!(parse_body(body).unwrap_err(), RecordError::Version(9));
}

#[test]
fn cursor_slots_survive_a_torn_slot() {
    let a = cursor_slot(
        4,
        Pos {
            segment: 2,
            offset: 10,
        },
    );
    let b = cursor_slot(
        5,
        Pos {
            segment: 3,
            offset: 0,
        },
    );
    let mut file = [a, b].concat();
    assert_eq!(
        read_cursor(&file).unwrap().1,
        Pos {
            segment: 3,
            offset: 0
        }
    );
    file[CURSOR_SLOT + 14] ^= 0xff; // the newer slot is torn
    assert_eq!(
        read_cursor(&file).unwrap(),
        (
            4,
            Pos {
                segment: 2,
                offset: 10
            }
        )
    );
    assert_eq!(read_cursor(&[0u8; 64]), None);
    assert_eq!(read_cursor(&[]), None);
}

#[tokio::test]
async fn push_lease_ack_in_order_across_segments_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.pending_records, 0);
    for i in 0..100 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    assert_eq!(q.len(), 100);
    assert!(
        list_segments(dir.path()).unwrap().len() > 2,
        "segments rotate"
    );
    // Take 30 (one record per lease), ack them, restart: 70 remain, in order.
    for i in 0..30 {
        let l = q.try_next(1).unwrap();
        assert_eq!(l.payload, payload(i));
        q.ack(&l).unwrap();
    }
    // One leased but not acked: resent after the restart.
    let _unacked = q.try_next(1).unwrap();
    q.close();
    drop(q);
    let (q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.pending_records, 70);
    assert_eq!(report.pending_spans, 70);
    let got = drain(&q, 1);
    assert_eq!(got, (30..100).map(payload).collect::<Vec<_>>());
    assert_eq!(q.len(), 0);
    assert_eq!(q.size_bytes(), 0);
    // Finished segments are deleted: only the last one or two remain.
    assert!(list_segments(dir.path()).unwrap().len() <= 2);
    q.close();
    drop(q);
    let (_q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.pending_records, 0);
}

#[tokio::test]
async fn leases_merge_consecutive_records_of_one_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    for (tenant, i) in [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("a", 4)] {
        q.push(&t(tenant), 2, &payload(i)).await.unwrap();
    }
    let l = q.try_next(250).unwrap();
    assert_eq!((l.tenant.as_str(), l.records, l.spans), ("a", 2, 4));
    assert_eq!(l.payload, [payload(0), payload(1)].concat());
    let l2 = q.try_next(1 << 20).unwrap();
    assert_eq!((l2.tenant.as_str(), l2.records), ("a", 1));
    let l3 = q.try_next(1 << 20).unwrap();
    assert_eq!(l3.tenant.as_str(), "b");
    let l4 = q.try_next(1 << 20).unwrap();
    assert_eq!(l4.payload, payload(4));
    assert!(q.try_next(1 << 20).is_none());
    // Acks out of order: the cursor moves only past the oldest outstanding lease.
    q.ack(&l3).unwrap();
    q.ack(&l2).unwrap();
    assert_eq!(lock(&q.shared.state).acked, l.start);
    q.ack(&l).unwrap();
    assert_eq!(lock(&q.shared.state).acked, l4.start);
    q.ack(&l4).unwrap();
    assert_eq!(q.len(), 0);
}

#[tokio::test]
async fn full_queue_refuses_and_frees_space_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let rec_len = encode_record(&t("a"), 1, &payload(0)).len() as u64;
    let (q, _) = Queue::open(opts(dir.path(), rec_len * 3)).unwrap();
    for i in 0..3 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    assert!(matches!(
        q.push(&t("a"), 1, &payload(3)).await,
        Err(PushError::Full(_))
    ));
    assert!(matches!(
        q.push(&t("a"), 1, &vec![0u8; 4 * rec_len as usize]).await,
        Err(PushError::TooLarge { .. })
    ));
    let l = q.try_next(1).unwrap();
    q.ack(&l).unwrap();
    q.push(&t("a"), 1, &payload(3)).await.unwrap();
    assert_eq!(q.size_bytes(), rec_len * 3);

    // The batch-count bound.
    let dir2 = tempfile::tempdir().unwrap();
    let mut o = opts(dir2.path(), 1 << 20);
    o.max_items = Some(2);
    let (q2, _) = Queue::open(o).unwrap();
    q2.push(&t("a"), 1, b"x").await.unwrap();
    q2.push(&t("a"), 1, b"y").await.unwrap();
    assert!(matches!(
        q2.push(&t("a"), 1, b"z").await,
        Err(PushError::Full(_))
    ));
}

#[tokio::test]
async fn torn_tail_and_garbage_are_truncated_with_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..5 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    q.close();
    drop(q);
    let seg = *list_segments(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), seg);
    // A torn write: half a record at the end.
    let rec = encode_record(&t("a"), 1, &payload(5));
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&rec[..rec.len() / 2]).unwrap();
    drop(f);
    let (q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.pending_records, 5);
    assert_eq!(report.truncated_bytes, (rec.len() / 2) as u64);
    assert_eq!(drain(&q, 1), (0..5).map(payload).collect::<Vec<_>>());
    q.close();
    drop(q);

    // Garbage in the middle of a segment: the records before it survive.
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..6 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    q.close();
    drop(q);
    let seg = *list_segments(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), seg);
    let rec_len = encode_record(&t("a"), 1, &payload(0)).len() as u64;
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(io::SeekFrom::Start(rec_len * 3 + 10)).unwrap();
    f.write_all(b"garbage garbage").unwrap();
    drop(f);
    let (q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.pending_records, 3);
    assert_eq!(report.truncated_bytes, rec_len * 3);
    assert_eq!(drain(&q, 1), (0..3).map(payload).collect::<Vec<_>>());
    // New records go after the cut.
    q.push(&t("a"), 1, &payload(9)).await.unwrap();
    assert_eq!(drain(&q, 1), vec![payload(9)]);

    // A segment of pure garbage.
    q.close();
    drop(q);
    fs::write(segment_path(dir.path(), 999), b"\x01\x02\x03 not a queue").unwrap();
    let (q, report) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.truncated_bytes, 15);
    assert!(q.try_next(1).is_none());
}

#[tokio::test]
async fn unknown_version_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    q.push(&t("a"), 1, b"x").await.unwrap();
    q.close();
    drop(q);
    let seg = *list_segments(dir.path()).unwrap().first().unwrap();
    let mut rec = encode_record(&t("a"), 1, b"future");
    rec[HEADER_LEN] = 9;
    let crc = crc32fast::hash(&rec[HEADER_LEN..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    let mut f = OpenOptions::new()
        .append(true)
        .open(segment_path(dir.path(), seg))
        .unwrap();
    f.write_all(&rec).unwrap();
    drop(f);
    let err = Queue::open(opts(dir.path(), 1 << 20)).err().unwrap();
    assert!(
        matches!(err, QueueError::UnknownVersion { version: 9, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_pushes_group_commit_and_wake_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(QueueOptions::new(dir.path(), 64 << 20)).unwrap();
    let (stop_tx, mut stop) = watch::channel(false);
    let reader = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while n < 400 {
                let Some(l) = q.next(1 << 20, &mut stop).await else {
                    break;
                };
                n += l.records;
                q.ack(&l).unwrap();
            }
            n
        })
    };
    let mut tasks = Vec::new();
    for w in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                q.push(&t("a"), 1, &payload(w * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 400);
    drop(stop_tx);
}

use std::time::Duration;

// ---- directory lock ----

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    q.push(&t("a"), 1, &payload(1)).await.unwrap();
    // flock locks belong to the open file description: a second open in this process conflicts
    // exactly like a second Clew process would.
    let err = Queue::open(opts(dir.path(), 1 << 20)).err().unwrap();
    assert!(matches!(err, QueueError::Locked { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("locked by another process"), "{msg}");
    // Nothing was touched by the refused open.
    assert_eq!(drain(&q, 1), vec![payload(1)]);
    q.close();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    assert!(q.is_empty());
}

// ---- encryption ----

/// A keyring provider that can be taken down, like a KMS outage.
struct Flaky {
    ring: clew_encryption::local::Keyring,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl clew_encryption::KeyProvider for Flaky {
    fn name(&self) -> &'static str {
        "local"
    }
    async fn generate(&self, tenant: &str) -> Result<clew_encryption::DataKey, KeyError> {
        self.up()?;
        self.ring.generate(tenant).await
    }
    async fn unwrap(
        &self,
        envelope: &Envelope,
    ) -> Result<clew_encryption::Zeroizing<[u8; 32]>, KeyError> {
        self.up()?;
        self.ring.unwrap(envelope).await
    }
    async fn rewrap(&self, envelope: &Envelope) -> Result<Option<Envelope>, KeyError> {
        self.up()?;
        self.ring.rewrap(envelope).await
    }
    async fn check(&self) -> Result<(), KeyError> {
        self.up()
    }
}

impl Flaky {
    fn up(&self) -> Result<(), KeyError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(KeyError::Unavailable {
                provider: "local".into(),
                message: "scripted outage".into(),
            });
        }
        Ok(())
    }
}

struct Keys {
    _dir: tempfile::TempDir,
    flaky: Arc<Flaky>,
    manager: Arc<KeyManager>,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ring =
            clew_encryption::local::Keyring::create(dir.path().join("keyring.json")).unwrap();
        let flaky = Arc::new(Flaky {
            ring,
            down: Default::default(),
        });
        Keys {
            _dir: dir,
            manager: Arc::new(KeyManager::new(flaky.clone())),
            flaky,
        }
    }

    /// A fresh manager over the same keyring (no cached keys: a restart).
    fn restarted(&self) -> Arc<KeyManager> {
        Arc::new(KeyManager::new(self.flaky.clone()))
    }

    fn set_down(&self, down: bool) {
        self.flaky
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

fn marked(i: u32) -> Vec<u8> {
    let mut p = format!("MARKER-7f3a-{i:06}-").into_bytes();
    p.resize(200, b'm');
    p
}

/// True when any file under `dir` contains `needle`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let data = fs::read(e.unwrap().path()).unwrap_or_default();
        data.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test]
async fn sealed_queue_holds_no_plaintext_and_drains_across_restart_and_rotation() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    for i in 0..60 {
        let tenant = if i % 3 == 0 { "b" } else { "a" };
        q.push(&t(tenant), 2, &marked(i)).await.unwrap();
    }
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() > 2, "segments rotate: {segs:?}");
    assert!(!any_file_contains(dir.path(), b"MARKER-7f3a"));
    // Each segment declares the keys its records use, and rotation rolls them.
    let mut ids_per_segment = Vec::new();
    for n in &segs {
        let data = fs::read(segment_path(dir.path(), *n)).unwrap();
        let mut at = 0;
        let mut declared = std::collections::HashSet::new();
        while at < data.len() {
            let (body, used) = frame(&data[at..]).unwrap();
            match parse(body).unwrap() {
                Body::Key { key_id, .. } => {
                    declared.insert(key_id);
                }
                Body::Sealed { key_id, .. } => assert!(declared.contains(&key_id)),
                Body::Plain { .. } => panic!("plaintext record in a sealed queue"),
            }
            at += used;
        }
        if !declared.is_empty() {
            ids_per_segment.push(declared);
        }
    }
    assert!(ids_per_segment.len() >= 2);
    // The record that triggered the rotation was sealed before it (its key is declared again);
    // the ones after it use fresh keys.
    assert!(
        !ids_per_segment[1].is_subset(&ids_per_segment[0]),
        "a new segment gets new data keys"
    );
    // Send 10, leave one leased, restart with a fresh key manager: the rest comes back in order.
    for _ in 0..10 {
        let l = q.try_next(1).unwrap();
        q.ack(&l).unwrap();
    }
    let _in_flight = q.try_next(1).unwrap();
    q.close();
    drop(q);
    let (q, report) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
    assert_eq!(report.pending_records, 50);
    assert_eq!(report.pending_spans, 100);
    assert_eq!(report.unreadable_records, 0);
    assert!(report.key_records > 0);
    let got = drain(&q, 1);
    assert_eq!(got, (10..60).map(marked).collect::<Vec<_>>());
    assert_eq!((q.len(), q.size_bytes()), (0, 0));
}

#[tokio::test]
async fn plaintext_records_still_drain_after_encryption_is_turned_on() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..5 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    q.close();
    drop(q);
    // Upgrade: same directory, now with keys; old plaintext and new sealed records mix.
    let (q, report) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    assert_eq!(report.pending_records, 5);
    for i in 5..10 {
        q.push(&t("a"), 1, &payload(i)).await.unwrap();
    }
    // One merged lease may span both versions: the payloads are concatenated in order.
    let l = q.try_next(1 << 20).unwrap();
    assert_eq!(l.records, 10);
    assert_eq!(
        l.payload,
        (0..10).flat_map(payload).collect::<Vec<u8>>(),
        "plaintext then sealed, in order"
    );
    q.release_all();
    q.close();
    drop(q);
    // And after another restart, still all ten.
    let (q, report) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
    assert_eq!(report.pending_records, 10);
    assert_eq!(drain(&q, 1), (0..10).map(payload).collect::<Vec<_>>());
}

#[tokio::test]
async fn sealed_queue_without_encryption_configured_fails_to_open() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    q.push(&t("a"), 1, &marked(1)).await.unwrap();
    q.close();
    drop(q);
    for r in [
        Queue::open(opts(dir.path(), 1 << 20)).map(|_| ()),
        Queue::open_with_keys(opts(dir.path(), 1 << 20), None)
            .await
            .map(|_| ()),
    ] {
        let err = r.unwrap_err();
        assert!(
            matches!(err, QueueError::EncryptionRequired { records: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("storage.encryption"), "{err}");
    }
    // Nothing was dropped by the refusals.
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
    assert_eq!(drain(&q, 1), vec![marked(1)]);
}

#[tokio::test]
async fn kms_outage_refuses_appends_retryably_and_never_writes_plaintext() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    keys.set_down(true);
    let err = q.push(&t("a"), 1, &marked(1)).await.unwrap_err();
    assert!(matches!(err, PushError::KeyUnavailable { .. }), "{err}");
    assert!(q.is_empty());
    assert!(!any_file_contains(dir.path(), b"MARKER-7f3a"));
    let seg_bytes: u64 = list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|n| fs::metadata(segment_path(dir.path(), *n)).unwrap().len())
        .sum();
    assert_eq!(seg_bytes, 0, "nothing written during the outage");
    keys.set_down(false);
    q.push(&t("a"), 1, &marked(2)).await.unwrap();
    // Once a tenant has its segment key, a later outage does not stop its appends.
    keys.set_down(true);
    q.push(&t("a"), 1, &marked(3)).await.unwrap();
    assert_eq!(drain(&q, 1), vec![marked(2), marked(3)]);
    q.close();
    drop(q);
    // Start-up during an outage fails (the queue is not dropped), and works once it is back.
    let err = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QueueError::Key { .. }), "{err}");
    keys.set_down(false);
    Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
}

#[tokio::test]
async fn sealed_records_of_a_crypto_shredded_tenant_are_skipped_and_counted() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    q.push(&t("a"), 1, &marked(1)).await.unwrap();
    q.push(&t("gone"), 4, &marked(2)).await.unwrap();
    q.push(&t("a"), 1, &marked(3)).await.unwrap();
    q.close();
    drop(q);
    keys.flaky.ring.destroy("gone").unwrap();
    let (q, report) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
    assert_eq!(report.pending_records, 3);
    assert_eq!(report.unreadable_records, 1);
    assert_eq!(drain(&q, 1 << 20), vec![marked(1), marked(3)]);
    assert_eq!(
        (q.len(), q.size_bytes()),
        (0, 0),
        "the skipped record is accounted"
    );
}

#[test]
fn sealed_record_opens_only_with_its_key_tenant_and_bytes() {
    let key = RecordKey::new(&[7; 32]);
    let other = RecordKey::new(&[8; 32]);
    let id: KeyId = [3; 16];
    let rec = encode_sealed(&t("acme"), 5, b"secret payload", &id, &key);
    assert!(!rec.windows(6).any(|w| w == b"secret"));
    let (body, used) = frame(&rec).unwrap();
    assert_eq!(used, rec.len());
    let Body::Sealed {
        tenant,
        spans,
        key_id,
        body: sealed_body,
    } = parse(body).unwrap()
    else {
        panic!("not sealed")
    };
    let (aad, sealed) = (sealed_body.aad(), sealed_body.sealed());
    assert_eq!((tenant.as_str(), spans, key_id), ("acme", 5, id));
    assert_eq!(sealed_body.open(&key).unwrap(), b"secret payload");
    assert_eq!(key.open(aad, sealed).unwrap(), b"secret payload");
    // Wrong key.
    assert_eq!(
        sealed_body.open(&other).unwrap_err(),
        RecordError::Seal(clew_encryption::SealError::Auth)
    );
    // The header is authenticated: another tenant's header (CRC recomputed) does not open.
    let moved = encode_sealed(&t("acmf"), 5, b"x", &id, &key);
    let (mbody, _) = frame(&moved).unwrap();
    let Body::Sealed { body: mb, .. } = parse(mbody).unwrap() else {
        panic!()
    };
    assert!(key.open(mb.aad(), sealed).is_err());
    // A flipped ciphertext byte with a recomputed CRC passes framing but does not open.
    let mut flipped = rec.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    let crc = crc32fast::hash(&flipped[HEADER_LEN..]);
    flipped[4..8].copy_from_slice(&crc.to_le_bytes());
    let (fbody, _) = frame(&flipped).unwrap();
    let Body::Sealed { body: fb, .. } = parse(fbody).unwrap() else {
        panic!()
    };
    assert!(fb.open(&key).is_err());
    // Truncated sealed records (body cut inside the key id) are malformed, not panics.
    for cut in [
        HEADER_LEN + 1,
        HEADER_LEN + 3,
        HEADER_LEN + 12,
        HEADER_LEN + 20,
    ] {
        let body = &rec[HEADER_LEN..cut];
        assert!(
            matches!(parse(body), Err(RecordError::Malformed(_))),
            "cut {cut}"
        );
    }
    // A declaration whose envelope is garbage is malformed.
    let mut decl = vec![VERSION_KEY, 4, 0];
    decl.extend_from_slice(b"acme");
    decl.extend_from_slice(&id);
    decl.extend_from_slice(b"{not json");
    let body = &decl[..];
    assert!(matches!(parse(body), Err(RecordError::Malformed(_))));
}

#[tokio::test]
async fn tampered_and_torn_sealed_records_are_skipped_or_cut_with_the_rest_kept() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.manager.clone()))
        .await
        .unwrap();
    for i in 0..4 {
        q.push(&t("a"), 1, &marked(i)).await.unwrap();
    }
    q.close();
    drop(q);
    let seg = *list_segments(dir.path()).unwrap().first().unwrap();
    let path = segment_path(dir.path(), seg);
    let mut data = fs::read(&path).unwrap();
    // Walk the records: [decl, r0, r1, r2, r3].
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        starts.push(at);
        at += frame(&data[at..]).unwrap().1;
    }
    assert_eq!(starts.len(), 5);
    // r1: flip a ciphertext byte and fix the CRC (a checksummed record that does not open).
    let (s1, e1) = (starts[2], starts[3]);
    data[e1 - 5] ^= 1;
    let crc = crc32fast::hash(&data[s1 + HEADER_LEN..e1]);
    data[s1 + 4..s1 + 8].copy_from_slice(&crc.to_le_bytes());
    // r3: torn in the middle, then garbage.
    data.truncate(starts[4] + 30);
    data.extend_from_slice(&[0xAB; 50]);
    fs::write(&path, &data).unwrap();
    let (q, report) = Queue::open_with_keys(opts(dir.path(), 1 << 20), Some(keys.restarted()))
        .await
        .unwrap();
    assert_eq!(report.truncated_bytes, 80);
    assert_eq!(report.pending_records, 3);
    assert_eq!(drain(&q, 1), vec![marked(0), marked(2)]);
    assert_eq!((q.len(), q.size_bytes()), (0, 0));
}
