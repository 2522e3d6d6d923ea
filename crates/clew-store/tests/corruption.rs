//! Damaged files on real disk: every block file (`meta.json`, `bloom.bin`, `data.parquet`) and
//! WAL segments, each with a flipped byte and cut short. The store must open, quarantine what is
//! damaged (files kept, with a reason), serve everything else, and `fsck` must name the file;
//! `fsck` with `repair` leaves a data dir that checks clean.

use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::fsck::{self, FsckOptions, Status};
use clew_store::{Store, StoreConfig, StoreMetrics, TraceReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn cfg(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c
}

fn batch(trace: u8, spans: u8) -> SpanBatch {
    let base = 1_750_000_000_000_000_000u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            name: format!("op{i}"),
            kind: 2,
            start_time_unix_nano: base + trace as u64 * 1_000_000 + i as u64,
            end_time_unix_nano: base + trace as u64 * 1_000_000 + 5_000,
            attributes: vec![kv_str("http.route", format!("/r{trace}"))],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new("a").unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "cart")],
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

fn tenant() -> Tenant {
    Tenant::new("a").unwrap()
}

/// Three blocks (traces 1, 2, 3: one per flush); returns the block directory of trace 2.
async fn three_blocks(dir: &Path) -> PathBuf {
    let (store, _) = Store::open(cfg(dir), StoreMetrics::default())
        .await
        .unwrap();
    for trace in 1..=3u8 {
        store.consume(batch(trace, 40)).await.unwrap();
        store.flush().await.unwrap();
    }
    let mut blocks = store.blocks(&tenant());
    assert_eq!(blocks.len(), 3);
    // Trace n starts n ms after the base: by time, the second block is trace 2's.
    blocks.sort_by_key(|b| b.meta.min_start_unix_nano);
    let second = &blocks[1];
    let path = dir.join("blocks").join(second.meta.dir().as_ref());
    store.shutdown().await.unwrap();
    path
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// One byte inverted: in the middle of the file, in a data page of `data.parquet`.
    Flip,
    /// The file cut to half its length.
    Truncate,
}

fn damage(file: &Path, how: Damage) {
    let mut data = std::fs::read(file).unwrap();
    match how {
        Damage::Flip => {
            // In `data.parquet`, a byte of the first column's pages (the middle may be the
            // footer, which start-up reads: that case is the truncation's).
            let at = if file.ends_with("data.parquet") {
                64
            } else {
                data.len() / 2
            };
            data[at] ^= 0xff;
        }
        Damage::Truncate => data.truncate(data.len() / 2),
    }
    std::fs::write(file, data).unwrap();
}

async fn check(dir: &Path, repair: bool) -> fsck::FsckReport {
    let opts = FsckOptions {
        data_dir: dir.to_path_buf(),
        remote: None,
        keys: None,
        repair,
    };
    fsck::fsck(&opts, &mut |_, _, _| {}).await.unwrap()
}

/// Each block file × flip/truncate: fsck names the block; start-up quarantines it (except a
/// flipped data page, which start-up does not read: fsck and `--repair` handle that one); the
/// other traces are served; after `repair` fsck is clean.
#[tokio::test]
async fn damaged_block_files_are_found_quarantined_and_the_rest_served() {
    for file in ["meta.json", "bloom.bin", "data.parquet"] {
        for how in [Damage::Flip, Damage::Truncate] {
            let case = format!("{file} {how:?}");
            let dir = tempfile::tempdir().unwrap();
            let block_dir = three_blocks(dir.path()).await;
            assert_eq!(check(dir.path(), false).await.damaged(), 0, "{case}");
            damage(&block_dir.join(file), how);

            let report = check(dir.path(), false).await;
            let bad: Vec<_> = report
                .files
                .iter()
                .filter(|f| matches!(f.status, Status::Damaged(_)))
                .collect();
            assert_eq!(bad.len(), 1, "{case}: {report:?}");
            let block_rel = block_dir
                .strip_prefix(dir.path().join("blocks"))
                .unwrap()
                .display()
                .to_string();
            assert_eq!(bad[0].name, format!("local:{block_rel}"), "{case}");
            let Status::Damaged(why) = &bad[0].status else {
                unreachable!()
            };
            assert!(
                why.contains(file),
                "{case}: the reason names the file: {why}"
            );

            let metrics = StoreMetrics::default();
            let (store, open) = Store::open(cfg(dir.path()), metrics.clone()).await.unwrap();
            let caught_at_start = !matches!((file, how), ("data.parquet", Damage::Flip));
            if caught_at_start {
                assert_eq!(open.quarantined_blocks.len(), 1, "{case}: {open:?}");
                let q = &open.quarantined_blocks[0];
                let reason = q.file.as_str();
                assert_eq!(
                    reason,
                    file.split('.').next().unwrap().replace("parquet", "data")
                );
                assert_eq!(metrics.quarantined_blocks(reason), 1, "{case}");
                assert!(!block_dir.exists(), "{case}: moved out of blocks/");
                for f in ["meta.json", "bloom.bin", "data.parquet", "reason.txt"] {
                    assert!(
                        q.moved_to.join(f).is_file(),
                        "{case}: {f} kept in quarantine"
                    );
                }
                let text = std::fs::read_to_string(q.moved_to.join("reason.txt")).unwrap();
                assert!(text.contains(file), "{case}: {text}");
                assert_eq!(store.blocks(&tenant()).len(), 2, "{case}");
                assert!(store
                    .trace(&tenant(), TraceId([2; 16]))
                    .await
                    .unwrap()
                    .is_empty());
            } else {
                assert!(open.quarantined_blocks.is_empty(), "{case}");
                // At run time: a query of the damaged block does not fail (a decoding error skips
                // the block and has it checked); the full check confirms and quarantines it.
                let _ = store.trace(&tenant(), TraceId([2; 16])).await.unwrap();
                let blocks = store.blocks(&tenant());
                let suspect = blocks
                    .iter()
                    .find(|b| dir.path().join("blocks").join(b.meta.dir().as_ref()) == block_dir)
                    .cloned();
                if let Some(b) = suspect {
                    // `false` if the background check of the query above moved it first.
                    store.quarantine_if_damaged(&b).await.unwrap();
                }
                assert_eq!(store.blocks(&tenant()).len(), 2, "{case}");
                assert_eq!(metrics.quarantined_blocks("data"), 1, "{case}");
            }
            for trace in [1u8, 3] {
                let spans = store.trace(&tenant(), TraceId([trace; 16])).await.unwrap();
                assert_eq!(spans.len(), 40, "{case}: trace {trace} still served");
            }
            store.shutdown().await.unwrap();
            drop(store);

            let repaired = check(dir.path(), true).await;
            assert_eq!(repaired.unrepaired(), 0, "{case}: {repaired:?}");
            assert_eq!(repaired.damaged(), 0, "{case}: {repaired:?}");
            let clean = check(dir.path(), false).await;
            assert_eq!(clean.damaged(), 0, "{case}: {clean:?}");
            assert_eq!(
                clean
                    .files
                    .iter()
                    .filter(|f| f.name.starts_with("local:"))
                    .count(),
                2
            );
            let quarantined = clew_store::quarantine::Quarantine::new(dir.path()).list_blocks();
            assert_eq!(quarantined.len(), 1, "{case}");
        }
    }
}

/// A meta.json whose flipped byte still parses (a digit of a count, a letter of a service name)
/// is caught by its own checksum.
#[tokio::test]
async fn a_meta_flip_that_still_parses_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let block_dir = three_blocks(dir.path()).await;
    let meta = block_dir.join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let edited = text.replacen("\"cart\"", "\"cars\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&meta, edited).unwrap();
    let (store, open) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!(open.quarantined_blocks.len(), 1, "{open:?}");
    assert!(open.quarantined_blocks[0].reason.contains("meta_crc32"));
    assert_eq!(store.blocks(&tenant()).len(), 2);
}

/// Spans only in the WAL (as after kill -9), one batch per trace, one segment.
async fn wal_only(dir: &Path, traces: u8) -> PathBuf {
    let (store, _) = Store::open(cfg(dir), StoreMetrics::default())
        .await
        .unwrap();
    for trace in 1..=traces {
        store.consume(batch(trace, 5)).await.unwrap();
    }
    drop(store);
    let wal = dir.join("wal");
    std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .unwrap()
}

/// Offsets of the records of a segment.
fn record_offsets(seg: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(seg).unwrap();
    clew_store::wal::record::walk(&data)
        .into_iter()
        .map(|p| match p {
            clew_store::wal::record::Piece::Record { offset, len } => (offset, len),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A flipped byte in the middle of a segment costs only its record: replay resynchronises on
/// the next one, the acknowledged records after it are kept, the segment is copied to
/// quarantine and rewritten, fsck reports it until repaired.
#[tokio::test]
async fn a_flipped_byte_mid_segment_loses_only_its_record() {
    for target in ["body", "length"] {
        let dir = tempfile::tempdir().unwrap();
        let seg = wal_only(dir.path(), 6).await;
        let recs = record_offsets(&seg);
        assert_eq!(recs.len(), 6);
        let (start, len) = recs[2];
        let mut data = std::fs::read(&seg).unwrap();
        match target {
            "body" => data[start + len / 2] ^= 0x40,
            _ => data[start + 1] ^= 0x10, // the length field: the frame ends elsewhere
        }
        std::fs::write(&seg, &data).unwrap();

        let report = check(dir.path(), false).await;
        assert_eq!(report.damaged(), 1, "{target}: {report:?}");

        let metrics = StoreMetrics::default();
        let (store, open) = Store::open(cfg(dir.path()), metrics).await.unwrap();
        let r = &open.replay;
        assert_eq!((r.records, r.damaged_regions), (5, 1), "{target}: {r:?}");
        assert_eq!(r.damaged_bytes, len as u64, "{target}");
        assert_eq!(r.quarantined_segments.len(), 1);
        assert_eq!(
            std::fs::read(&r.quarantined_segments[0]).unwrap(),
            data,
            "{target}: the damaged segment is kept as it was"
        );
        for trace in 1..=6u8 {
            let n = store
                .trace(&tenant(), TraceId([trace; 16]))
                .await
                .unwrap()
                .len();
            assert_eq!(n, if trace == 3 { 0 } else { 5 }, "{target}: trace {trace}");
        }
        drop(store);
        // Rewritten without the damage: the next start and fsck find nothing.
        assert_eq!(check(dir.path(), false).await.damaged(), 0, "{target}");
        let (_store, open) = Store::open(cfg(dir.path()), StoreMetrics::default())
            .await
            .unwrap();
        assert_eq!(open.replay.damaged_regions, 0);
        assert_eq!(open.replay.records, 5);
    }
}

/// A torn tail (the segment cut inside its last record) is truncated as before, without a
/// quarantine copy; fsck reports it and `repair` fixes it.
#[tokio::test]
async fn a_truncated_segment_loses_only_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = wal_only(dir.path(), 4).await;
    let recs = record_offsets(&seg);
    let (start, len) = recs[3];
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((start + len / 2) as u64).unwrap();
    drop(f);
    let report = check(dir.path(), true).await;
    assert_eq!(
        (report.damaged(), report.unrepaired()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), start as u64);
    assert!(!dir.path().join("quarantine").join("wal").exists());
    let (store, open) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!((open.replay.records, open.replay.truncated_bytes), (3, 0));
    for trace in 1..=3u8 {
        assert_eq!(
            store
                .trace(&tenant(), TraceId([trace; 16]))
                .await
                .unwrap()
                .len(),
            5
        );
    }
}

/// The golden v1/v2/v3 segments stay clean to fsck (sealed records checked by frame only).
#[tokio::test]
async fn golden_segments_check_clean() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal_v1_v2_v3");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    for e in std::fs::read_dir(fixtures.join("wal")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join("wal").join(p.file_name().unwrap())).unwrap();
    }
    let report = check(dir.path(), false).await;
    assert!(!report.files.is_empty());
    assert_eq!(report.damaged(), 0, "{report:?}");
}
