//! Erasure on real files: traces leave the head, the WAL and every block (rewritten or deleted),
//! holds are respected, and a crash at any point leaves either the old or the new block live and
//! the erase re-runnable.

use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::erase::{EraseError, EraseTarget};
use clew_store::{SearchQuery, Store, StoreConfig, StoreMetrics, TraceReader};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn cfg(dir: &Path, delete_delay: Duration) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.block_delete_delay = delete_delay;
    c
}

async fn open(dir: &Path, delete_delay: Duration) -> Store {
    Store::open(cfg(dir, delete_delay), StoreMetrics::default())
        .await
        .unwrap()
        .0
}

/// A three-span trace of user `user` whose attribute values carry `marker`.
fn trace(id: u8, user: &str, marker: &str) -> SpanBatch {
    let t0 = now() - 60_000_000_000;
    let span = |n: u8| Span {
        trace_id: vec![id; 16],
        span_id: vec![n; 8],
        parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
        name: format!("op{n}"),
        start_time_unix_nano: t0 + n as u64 * 1000,
        end_time_unix_nano: t0 + 1_000_000,
        attributes: vec![kv_str("user.id", user), kv_str("note", marker)],
        ..Default::default()
    };
    SpanBatch::new(
        Tenant::new("acme").unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "shop")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(1), span(2), span(3)],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

fn acme() -> Tenant {
    Tenant::new("acme").unwrap()
}

async fn spans(store: &Store, id: u8) -> usize {
    store.trace(&acme(), TraceId([id; 16])).await.unwrap().len()
}

async fn user_hits(store: &Store, user: &str) -> usize {
    store
        .search(
            &acme(),
            &SearchQuery {
                attributes: vec![("user.id".into(), user.into())],
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .len()
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(f(), "timed out");
}

#[tokio::test]
async fn erase_by_trace_id_and_by_query_removes_from_head_wal_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Duration::ZERO).await;
    // Block 1: traces 1 (alice), 2 (bob). Block 2: trace 3 (alice) only. Head: trace 4 (alice), 5.
    store
        .consume(trace(1, "alice", "MARKER-ONE"))
        .await
        .unwrap();
    store.consume(trace(2, "bob", "keep-two")).await.unwrap();
    store.flush().await.unwrap();
    store
        .consume(trace(3, "alice", "MARKER-THREE"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .consume(trace(4, "alice", "MARKER-FOUR"))
        .await
        .unwrap();
    store.consume(trace(5, "carol", "keep-five")).await.unwrap();
    // The plaintext store does hold the markers (so the scans below can fail).
    assert!(!files_contain(dir.path(), b"MARKER-ONE").is_empty());
    assert!(
        !files_contain(dir.path(), b"MARKER-FOUR").is_empty(),
        "in the WAL"
    );

    let r = store
        .erase(&acme(), EraseTarget::Traces(vec![TraceId([5; 16])]), None)
        .await
        .unwrap();
    assert_eq!(
        (r.traces, r.head_spans),
        (1, 3),
        "from the head (and its WAL segment)"
    );
    store.consume(trace(5, "carol", "keep-five")).await.unwrap();
    let r = store
        .erase(
            &acme(),
            EraseTarget::Traces(vec![TraceId([1; 16])]),
            Some("token:dpo"),
        )
        .await
        .unwrap();
    assert_eq!((r.traces, r.block_spans, r.head_spans), (1, 3, 0));

    assert_eq!((r.blocks_rewritten, r.blocks_deleted), (1, 0));
    assert_eq!(spans(&store, 1).await, 0);
    assert_eq!(
        spans(&store, 2).await,
        3,
        "its block-mate survives the rewrite"
    );

    let r = store
        .erase(
            &acme(),
            EraseTarget::Query(SearchQuery {
                attributes: vec![("user.id".into(), "alice".into())],
                ..Default::default()
            }),
            None,
        )
        .await
        .unwrap();
    // The first erase flushed the head, so trace 4 is in a block by now too.
    assert_eq!(r.traces, 2);
    assert_eq!(r.block_spans + r.head_spans, 6);
    assert_eq!(
        r.blocks_deleted, 2,
        "the blocks of trace 3 and of trace 4 held only alice's traces"
    );
    assert_eq!(user_hits(&store, "alice").await, 0);
    for id in [1, 3, 4] {
        assert_eq!(spans(&store, id).await, 0);
    }
    for id in [2, 5] {
        assert_eq!(spans(&store, id).await, 3);
    }
    // Gone from every file: WAL segments, blocks (old files deleted after the 0 s delay).
    for m in ["MARKER-ONE", "MARKER-THREE", "MARKER-FOUR"] {
        let dir = dir.path().to_path_buf();
        eventually(|| files_contain(&dir, m.as_bytes()).is_empty()).await;
    }
    assert!(!files_contain(dir.path(), b"keep-five").is_empty());
    // Nothing comes back after a restart.
    drop(store);
    let store = open(dir.path(), Duration::ZERO).await;
    assert_eq!(user_hits(&store, "alice").await, 0);
    assert_eq!(spans(&store, 2).await, 3);
    assert_eq!(spans(&store, 5).await, 3);
    assert!(
        !dir.path().join("erase").exists()
            || std::fs::read_dir(dir.path().join("erase"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn holds_protect_traces_and_tenants_from_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Duration::ZERO).await;
    store.consume(trace(1, "alice", "a")).await.unwrap();
    store.consume(trace(2, "alice", "b")).await.unwrap();
    store.flush().await.unwrap();
    store
        .holds()
        .hold_trace("acme", &[1; 16], "litigation", None)
        .unwrap();
    let r = store
        .erase(
            &acme(),
            EraseTarget::Query(SearchQuery {
                attributes: vec![("user.id".into(), "alice".into())],
                ..Default::default()
            }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.traces, 1);
    assert_eq!(r.held, vec![hex::encode([1u8; 16])]);
    assert_eq!(spans(&store, 1).await, 3);
    assert_eq!(spans(&store, 2).await, 0);

    store.holds().hold_tenant("acme", "audit", None).unwrap();
    let e = store
        .erase(&acme(), EraseTarget::Traces(vec![TraceId([1; 16])]), None)
        .await
        .unwrap_err();
    assert!(matches!(e, EraseError::TenantHeld(_)), "{e}");
    assert_eq!(spans(&store, 1).await, 3);
}

#[tokio::test]
async fn a_crash_after_the_new_block_leaves_only_the_new_block_live() {
    let dir = tempfile::tempdir().unwrap();
    // Old block files are kept an hour: a crash right after the swap leaves both on disk.
    let store = open(dir.path(), Duration::from_secs(3600)).await;
    store.consume(trace(1, "alice", "MARKER-A")).await.unwrap();
    store.consume(trace(2, "bob", "keep")).await.unwrap();
    store.flush().await.unwrap();
    store
        .erase(&acme(), EraseTarget::Traces(vec![TraceId([1; 16])]), None)
        .await
        .unwrap();
    assert!(
        !files_contain(dir.path(), b"MARKER-A").is_empty(),
        "old block still on disk"
    );
    drop(store); // kill -9 before the delayed delete
    let store = open(dir.path(), Duration::from_secs(3600)).await;
    assert_eq!(spans(&store, 1).await, 0);
    assert_eq!(spans(&store, 2).await, 3);
    assert!(
        files_contain(dir.path(), b"MARKER-A").is_empty(),
        "start-up removed the replaced block"
    );
}

#[tokio::test]
async fn an_interrupted_erase_hides_its_traces_at_start_up_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Duration::ZERO).await;
    store.consume(trace(1, "alice", "MARKER-J")).await.unwrap();
    store.consume(trace(2, "bob", "keep")).await.unwrap();
    store.flush().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);
    // The journal entry an erase writes first, as a crash right after it would leave it.
    let journal = serde_json::json!({
        "id": "0193-test", "tenant": "acme",
        "trace_ids": [hex::encode([1u8; 16])],
        "actor": "token:dpo", "requested_unix_nano": 1
    });
    std::fs::create_dir_all(dir.path().join("erase")).unwrap();
    std::fs::write(
        dir.path().join("erase/0193-test.json"),
        serde_json::to_vec(&journal).unwrap(),
    )
    .unwrap();
    let store = open(dir.path(), Duration::ZERO).await;
    assert_eq!(spans(&store, 1).await, 0, "hidden from the first query on");
    let d = dir.path().to_path_buf();
    eventually(|| !d.join("erase/0193-test.json").exists()).await;
    eventually(|| files_contain(&d, b"MARKER-J").is_empty()).await;
    assert_eq!(spans(&store, 2).await, 3);
}
