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
        Err(FrameError::Truncated { .. })
    ));
    let mut flipped = rec.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(frame(&flipped), Err(FrameError::Checksum));
    assert!(matches!(frame(&[0xff; 8]), Err(FrameError::TooLarge(_))));
    assert!(matches!(frame(&[0; 8]), Err(FrameError::TooLarge(0))));

    let mut v2 = rec.clone();
    v2[HEADER_LEN] = 9;
    let crc = crc32fast::hash(&v2[HEADER_LEN..]);
    v2[4..8].copy_from_slice(&crc.to_le_bytes());
    let (body, _) = frame(&v2).unwrap();
    assert_eq!(parse_body(body).unwrap_err(), FrameError::Version(9));
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
    rec[HEADER_LEN] = 2;
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
        matches!(err, QueueError::UnknownVersion { version: 2, .. }),
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
