//! Damaged files with the real `clew` binary: a block's `data.parquet` cut short and a flipped
//! byte in the middle of a WAL segment (after kill -9). `clew fsck` names both and exits 1; the
//! server still starts, quarantines the block (files and `reason.txt` under
//! `{data}/quarantine/`), skips only the damaged WAL record, counts both on `/metrics` and serves
//! every other trace. A flipped data page (which start-up does not read) is found by
//! `clew fsck`, and `clew fsck --repair` leaves a data dir that checks clean.

mod common;
use common::{clew, Server, BIN};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn trace_id(n: u8) -> String {
    format!("{:02x}", n).repeat(16)
}

fn otlp_json(n: u8) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ledger"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id(n), "spanId": "0102030405060708", "name": format!("op{n}"),
            "kind": 2, "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string()
        }]}]
    }]})
    .to_string()
}

async fn send(server: &Server, n: u8) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .body(otlp_json(n))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn found(server: &Server, n: u8) -> bool {
    let r = reqwest::get(format!("{}/api/traces/{}", server.query, trace_id(n)))
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => true,
        404 => false,
        s => panic!("trace {n}: status {s}: {}", r.text().await.unwrap()),
    }
}

async fn metric(server: &Server, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Block directories, oldest first (uuid v7 names sort by creation time).
fn block_dirs(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for tenant in std::fs::read_dir(data.join("blocks/tenants"))
        .unwrap()
        .flatten()
    {
        for day in std::fs::read_dir(tenant.path()).unwrap().flatten() {
            for b in std::fs::read_dir(day.path()).unwrap().flatten() {
                out.push(b.path());
            }
        }
    }
    out.sort_by_key(|p| p.file_name().unwrap().to_owned());
    out
}

fn fsck(data: &Path, repair: bool) -> (bool, String) {
    let mut args = vec!["fsck", "--data-dir", data.to_str().unwrap()];
    if repair {
        args.push("--repair");
    }
    let o = clew(&args);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test]
async fn damaged_block_and_wal_are_quarantined_and_the_rest_served() {
    assert!(Path::new(BIN).exists());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Traces 1, 2, 3 in three blocks: SIGTERM flushes the head into one block each time.
    for n in 1..=3u8 {
        let server = Server::start(&data);
        send(&server, n).await;
        assert!(server.terminate().success());
    }
    let blocks = block_dirs(&data);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    // Traces 4, 5, 6 only in the WAL: kill -9 (drop) before any flush.
    {
        let server = Server::start(&data);
        for n in 4..=6u8 {
            send(&server, n).await;
        }
    }
    let (clean, out) = fsck(&data, false);
    assert!(clean, "nothing damaged yet: {out}");

    // Damage: block 2's data.parquet cut in half; trace 5's WAL record gets a flipped byte.
    let parquet = blocks[1].join("data.parquet");
    let bytes = std::fs::read(&parquet).unwrap();
    std::fs::write(&parquet, &bytes[..bytes.len() / 2]).unwrap();
    let segment = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .expect("a WAL segment with records");
    let mut wal = std::fs::read(&segment).unwrap();
    let records = clew_store::wal::record::walk(&wal);
    assert_eq!(records.len(), 3, "{records:?}");
    let clew_store::wal::record::Piece::Record { offset, len } = records[1] else {
        panic!("{records:?}")
    };
    wal[offset + len / 2] ^= 0x55;
    std::fs::write(&segment, &wal).unwrap();

    let (clean, out) = fsck(&data, false);
    assert!(!clean, "fsck exits non-zero on damage: {out}");
    let block_name = blocks[1].file_name().unwrap().to_str().unwrap();
    assert!(
        out.lines().any(|l| l.starts_with("DAMAGED")
            && l.contains(block_name)
            && l.contains("data.parquet")),
        "{out}"
    );
    let seg_name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("DAMAGED") && l.contains(seg_name)),
        "{out}"
    );

    let server = Server::start(&data);
    for n in [1u8, 3, 4, 6] {
        assert!(found(&server, n).await, "trace {n} is served");
    }
    assert!(!found(&server, 2).await, "its block is quarantined");
    assert!(!found(&server, 5).await, "its WAL record was damaged");
    assert_eq!(
        metric(
            &server,
            "clew_store_quarantined_blocks_total{reason=\"data\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&server, "clew_store_wal_damaged_records_total").await,
        1.0
    );
    assert_eq!(
        metric(&server, "clew_store_wal_quarantined_segments_total").await,
        1.0
    );
    let rel = blocks[1].strip_prefix(data.join("blocks")).unwrap();
    let moved = data.join("quarantine/blocks/local").join(rel);
    let reason = std::fs::read_to_string(moved.join("reason.txt")).unwrap();
    assert!(reason.contains("data.parquet"), "{reason}");
    assert!(moved.join("data.parquet").is_file() && moved.join("meta.json").is_file());
    assert!(!blocks[1].exists());
    assert!(data.join("quarantine/wal").join(seg_name).is_file());
    assert!(server.terminate().success());
    let (clean, out) = fsck(&data, false);
    assert!(clean, "start-up repaired both: {out}");

    // A flipped byte in a data page: start-up does not read pages, fsck's checksum finds it.
    let remaining = block_dirs(&data);
    let parquet = remaining[0].join("data.parquet");
    let mut bytes = std::fs::read(&parquet).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    std::fs::write(&parquet, &bytes).unwrap();
    let (clean, out) = fsck(&data, false);
    let first = remaining[0].file_name().unwrap().to_str().unwrap();
    assert!(
        !clean
            && out
                .lines()
                .any(|l| l.starts_with("DAMAGED") && l.contains(first)),
        "{out}"
    );
    let (repaired, out) = fsck(&data, true);
    assert!(repaired, "--repair fixes what it finds: {out}");
    assert!(out.contains("REPAIRED"), "{out}");
    let (clean, out) = fsck(&data, false);
    assert!(clean, "{out}");
    let server = Server::start(&data);
    assert!(found(&server, 3).await && found(&server, 4).await);
    assert!(
        !found(&server, 1).await,
        "its block was quarantined by --repair"
    );
    assert!(server.terminate().success());
}
