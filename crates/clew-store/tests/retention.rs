//! Retention on real files with a simulated clock: expired spans are refused at ingest, hidden from
//! every read between expiry and deletion, and their blocks deleted whole (per tenant and day), with
//! per-tenant overrides that change while the store runs.

use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::retention::StoreEvents;
use clew_store::{
    ManualClock, RetentionPolicy, SearchQuery, Store, StoreConfig, StoreMetrics, TraceReader,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const DAY: u64 = 86_400 * 1_000_000_000;
/// 2026-11-30T12:00:00Z.
const NOW: u64 = 1_796_040_000 * 1_000_000_000;

#[derive(Debug, Default)]
struct Overrides(Mutex<HashMap<String, Duration>>);
impl RetentionPolicy for Overrides {
    fn retention(&self, tenant: &str) -> Option<Duration> {
        self.0.lock().get(tenant).copied()
    }
}

#[derive(Debug, Default)]
struct Events(Mutex<Vec<(String, Option<String>, serde_json::Value)>>);
impl StoreEvents for Events {
    fn record(&self, action: &str, tenant: Option<&str>, details: serde_json::Value) {
        self.0
            .lock()
            .push((action.into(), tenant.map(str::to_string), details));
    }
}

struct Fixture {
    clock: Arc<ManualClock>,
    overrides: Arc<Overrides>,
    events: Arc<Events>,
    metrics: StoreMetrics,
}

fn fixture() -> Fixture {
    Fixture {
        clock: Arc::new(ManualClock::new(NOW)),
        overrides: Arc::new(Overrides::default()),
        events: Arc::new(Events::default()),
        metrics: StoreMetrics::default(),
    }
}

impl Fixture {
    fn cfg(&self, dir: &std::path::Path) -> StoreConfig {
        let mut c = StoreConfig::new(dir);
        c.flush_max_age = Duration::from_secs(3600);
        c.compaction.enabled = false;
        c.retention = Duration::from_secs(3 * 86_400);
        c.retention_policy = Some(self.overrides.clone());
        c.clock = self.clock.clone();
        c.events = Some(self.events.clone());
        c.block_delete_delay = Duration::ZERO;
        c.retention_interval = Duration::from_secs(3600);
        c
    }

    async fn open(&self, dir: &std::path::Path) -> Store {
        Store::open(self.cfg(dir), self.metrics.clone())
            .await
            .unwrap()
            .0
    }

    fn metric(&self, name: &str, tenant: &str) -> f64 {
        let mut r = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let prefix = format!("{name}{{tenant=\"{tenant}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

/// A two-span trace of `tenant` that started at `start`.
fn trace(tenant: &str, id: u8, start: u64) -> SpanBatch {
    let span = |n: u8| Span {
        trace_id: vec![id; 16],
        span_id: vec![n; 8],
        parent_span_id: if n == 1 { vec![] } else { vec![1; 8] },
        name: format!("op{n}"),
        start_time_unix_nano: start + n as u64 * 1000,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    };
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "billing")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(1), span(2)],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

fn t(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

async fn found(store: &Store, tenant: &str, id: u8) -> (usize, usize) {
    let spans = store.trace(&t(tenant), TraceId([id; 16])).await.unwrap();
    let hits = store
        .search(
            &t(tenant),
            &SearchQuery {
                service: Some("billing".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let hit = hits
        .iter()
        .filter(|h| h.trace_id == TraceId([id; 16]))
        .count();
    (spans.len(), hit)
}

fn block_dirs(root: &std::path::Path, tenant: &str) -> usize {
    let base = root.join("blocks/tenants").join(tenant);
    let Ok(days) = std::fs::read_dir(&base) else {
        return 0;
    };
    days.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|b| b.path().join("meta.json").exists())
        .count()
}

#[tokio::test]
async fn spans_older_than_retention_are_refused_at_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let store = f.open(dir.path()).await;
    store.consume(trace("a", 1, NOW - 5 * DAY)).await.unwrap();
    store.consume(trace("a", 2, NOW - 2 * DAY)).await.unwrap();
    assert_eq!(found(&store, "a", 1).await, (0, 0), "5 days old: refused");
    assert_eq!(found(&store, "a", 2).await, (2, 1));
    assert_eq!(
        store.head_span_count(),
        2,
        "the head never held the expired spans"
    );
    assert_eq!(f.metric("clew_retention_refused_spans_total", "a"), 2.0);
    // Nor did the WAL: a restart replays only the accepted trace.
    drop(store);
    let store = f.open(dir.path()).await;
    assert_eq!(store.head_span_count(), 2);
}

#[tokio::test]
async fn expired_blocks_are_hidden_then_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let store = f.open(dir.path()).await;
    // Two UTC days: 2 days ago and today.
    store.consume(trace("a", 1, NOW - 2 * DAY)).await.unwrap();
    store
        .consume(trace("a", 2, NOW - 3_600_000_000_000))
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        block_dirs(dir.path(), "a"),
        2,
        "one block per tenant and day"
    );
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 0);

    // 1.5 days later the first trace is 3.5 days old: past the 3-day retention. Before any
    // deletion, no read returns it.
    f.clock.advance(Duration::from_secs(36 * 3600));
    assert_eq!(found(&store, "a", 1).await, (0, 0));
    assert_eq!(found(&store, "a", 2).await, (2, 1));
    let count = store
        .estimate_trace_count(&t("a"), 0, u64::MAX)
        .await
        .unwrap();
    assert_eq!(count, 1, "estimates skip expired data too");
    assert_eq!(block_dirs(dir.path(), "a"), 2, "not deleted yet");

    let report = store.apply_retention().await.unwrap();
    assert_eq!(report.deleted_blocks, 1);
    assert_eq!(report.deleted_spans, 2);
    assert!(report.deleted_bytes > 0);
    // Files go after `block_delete_delay` (0 here) in a background task.
    for _ in 0..100 {
        if block_dirs(dir.path(), "a") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(block_dirs(dir.path(), "a"), 1);
    assert_eq!(store.blocks(&t("a")).len(), 1);
    assert_eq!(f.metric("clew_retention_deleted_blocks_total", "a"), 1.0);
    assert_eq!(
        f.metric("clew_retention_deleted_bytes_total", "a"),
        report.deleted_bytes as f64
    );
    let events = f.events.0.lock().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "retention.delete");
    assert_eq!(events[0].1.as_deref(), Some("a"));
    assert_eq!(events[0].2["spans"], 2);
    assert_eq!(events[0].2["retention"], "3d");

    // A restart neither resurrects the deleted trace nor loses the other.
    drop(store);
    let store = f.open(dir.path()).await;
    assert_eq!(found(&store, "a", 1).await, (0, 0));
    assert_eq!(found(&store, "a", 2).await, (2, 1));
}

#[tokio::test]
async fn per_tenant_overrides_apply_as_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let store = f.open(dir.path()).await;
    store
        .consume(trace("short", 1, NOW - 2 * DAY))
        .await
        .unwrap();
    store
        .consume(trace("long", 1, NOW - 2 * DAY))
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(found(&store, "short", 1).await, (2, 1));

    // The overrides file now gives `short` one day: its data expires at once, `long`'s does not.
    f.overrides
        .0
        .lock()
        .insert("short".into(), Duration::from_secs(86_400));
    assert_eq!(found(&store, "short", 1).await, (0, 0));
    assert_eq!(found(&store, "long", 1).await, (2, 1));
    let report = store.apply_retention().await.unwrap();
    assert_eq!(report.deleted_blocks, 1);
    assert!(store.blocks(&t("short")).is_empty());
    assert_eq!(store.blocks(&t("long")).len(), 1);

    // And a longer override keeps data the default would drop.
    f.overrides
        .0
        .lock()
        .insert("long".into(), Duration::from_secs(30 * 86_400));
    f.clock.advance(Duration::from_secs(5 * 86_400));
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 0);
    assert_eq!(found(&store, "long", 1).await, (2, 1));
}

#[tokio::test]
async fn spans_that_expire_in_the_head_are_hidden_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let store = f.open(dir.path()).await;
    store
        .consume(trace("a", 1, NOW - 3 * DAY + 3_600_000_000_000))
        .await
        .unwrap();
    assert_eq!(found(&store, "a", 1).await, (2, 1));
    f.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        found(&store, "a", 1).await,
        (0, 0),
        "expired while in the head"
    );
    store.flush().await.unwrap();
    assert_eq!(
        block_dirs(dir.path(), "a"),
        0,
        "no block holds expired spans"
    );
    assert_eq!(store.head_span_count(), 0);
}

#[tokio::test]
async fn a_crash_before_the_files_are_deleted_is_finished_by_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let mut cfg = f.cfg(dir.path());
    cfg.block_delete_delay = Duration::from_secs(3600);
    let (store, _) = Store::open(cfg, f.metrics.clone()).await.unwrap();
    store.consume(trace("a", 1, NOW - 2 * DAY)).await.unwrap();
    store.flush().await.unwrap();
    f.clock.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 1);
    assert_eq!(
        block_dirs(dir.path(), "a"),
        1,
        "files still there: the delay has not passed"
    );
    drop(store); // "crash"
    let store = f.open(dir.path()).await;
    assert_eq!(
        found(&store, "a", 1).await,
        (0, 0),
        "hidden from the first query on"
    );
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 1);
    for _ in 0..100 {
        if block_dirs(dir.path(), "a") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(block_dirs(dir.path(), "a"), 0);
}

#[tokio::test]
async fn legal_holds_exempt_traces_and_tenants_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let store = f.open(dir.path()).await;
    // Trace 1 and 2 on one day (one block), trace 3 on another day.
    store.consume(trace("a", 1, NOW - 2 * DAY)).await.unwrap();
    store
        .consume(trace("a", 2, NOW - 2 * DAY + 1000))
        .await
        .unwrap();
    store.consume(trace("a", 3, NOW - DAY)).await.unwrap();
    store.consume(trace("b", 4, NOW - 2 * DAY)).await.unwrap();
    store.flush().await.unwrap();
    store
        .holds()
        .hold_trace("a", &[1; 16], "case 42", Some("token:legal"))
        .unwrap();
    store.holds().hold_tenant("b", "audit", None).unwrap();

    f.clock.advance(Duration::from_secs(5 * 86_400));
    // The held trace stays readable past retention; its block-mate does not.
    assert_eq!(found(&store, "a", 1).await.0, 2);
    assert_eq!(found(&store, "a", 2).await, (0, 0));
    assert_eq!(found(&store, "a", 3).await, (0, 0));
    // A held tenant keeps everything, searches included.
    assert_eq!(found(&store, "b", 4).await, (2, 1));
    let report = store.apply_retention().await.unwrap();
    assert_eq!(report.deleted_blocks, 1, "only the unheld block of a");
    assert_eq!(report.held_blocks, 2);
    assert_eq!(block_dirs(dir.path(), "b"), 1);

    // Holds survive a restart (once the deleted block's files are gone: a restart before that
    // would find the block and delete it again).
    for _ in 0..100 {
        if block_dirs(dir.path(), "a") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(block_dirs(dir.path(), "a"), 1);
    drop(store);
    let store = f.open(dir.path()).await;
    assert_eq!(found(&store, "a", 1).await.0, 2);
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 0);

    // Released: the next pass deletes.
    assert!(store.holds().release_trace("a", &[1; 16]).unwrap());
    assert!(store.holds().release_tenant("b").unwrap());
    assert_eq!(found(&store, "a", 1).await, (0, 0));
    assert_eq!(store.apply_retention().await.unwrap().deleted_blocks, 2);
}
