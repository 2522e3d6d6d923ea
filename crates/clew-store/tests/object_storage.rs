//! Blocks in an S3-compatible bucket, against a real server (moto_server on loopback): straight
//! to the bucket, tiering from local disk with reads across both tiers, crash recovery of an
//! interrupted move, start-up errors, and object_store's conditional put on this server.

#[path = "common/moto.rs"]
mod moto;

use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::block::{DATA_FILE, META_FILE};
use clew_store::storage::{S3Config, S3Credentials, Storage, Tier, TieringConfig};
use clew_store::{
    ManualClock, OpenReport, SearchQuery, Store, StoreConfig, StoreError, StoreMetrics, TraceReader,
};
use moto::Moto;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_750_000_000_000_000_000;
const DAY: u64 = 86_400_000_000_000;

fn s3(moto: &Moto, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(moto.endpoint.clone()),
        region: Some(moto::REGION.into()),
        force_path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: moto::ACCESS_KEY.into(),
            secret_access_key: moto::SECRET_KEY.into(),
            session_token: None,
        }),
    }
}

fn cfg(dir: &std::path::Path, s3: S3Config, clock: Arc<ManualClock>) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.compaction.min_blocks = 2;
    c.retention = Duration::from_secs(3650 * 86_400);
    c.clock = clock;
    c.s3 = Some(s3);
    c.block_delete_delay = Duration::ZERO;
    c
}

fn batch(trace: u8, start: u64, spans: u8) -> SpanBatch {
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op{i}"),
            kind: 2,
            start_time_unix_nano: start + i as u64 * 1000,
            end_time_unix_nano: start + 5_000_000,
            attributes: vec![kv_str("http.route", format!("/r{trace}"))],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        t(),
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

fn t() -> Tenant {
    Tenant::new("acme").unwrap()
}

async fn open(c: StoreConfig) -> (Store, OpenReport) {
    Store::open(c, StoreMetrics::default()).await.unwrap()
}

async fn spans_of(store: &Store, trace: u8) -> usize {
    store.trace(&t(), TraceId([trace; 16])).await.unwrap().len()
}

async fn search_ids(store: &Store) -> Vec<TraceId> {
    let q = SearchQuery {
        service: Some("cart".into()),
        limit: 100,
        ..Default::default()
    };
    let mut ids: Vec<TraceId> = store
        .search(&t(), &q)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.trace_id)
        .collect();
    ids.sort();
    ids
}

fn local_files(dir: &std::path::Path, name: &str) -> usize {
    fn walk(p: &std::path::Path, name: &str) -> usize {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, name)
                    } else {
                        usize::from(e.file_name() == name)
                    }
                })
                .sum()
        })
    }
    walk(dir, name)
}

/// object_store's `PutMode::Create` (an `If-None-Match: *` PUT) is honoured by moto: the second
/// create of the same key fails with `AlreadyExists`.
#[tokio::test]
async fn conditional_put_create_is_honoured() {
    let moto = Moto::start();
    moto.create_bucket("cond");
    let storage = Storage::s3(&s3(&moto, "cond", "p")).await.unwrap();
    let path = Path::from("locks/one");
    let create = || PutOptions::from(PutMode::Create);
    storage
        .os
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .unwrap();
    let second = storage
        .os
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    let got = storage.get(&path).await.unwrap();
    assert_eq!(&got[..], b"first");
    assert!(moto.keys("cond", "p/").contains(&"p/locks/one".to_string()));
}

#[tokio::test]
async fn blocks_straight_to_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("direct");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + DAY));
    let c = cfg(dir.path(), s3(&moto, "direct", "clew/prod"), clock);
    let (store, _) = open(c.clone()).await;
    store.consume(batch(1, T0, 3)).await.unwrap();
    store.flush().await.unwrap();
    store.consume(batch(2, T0 + 1000, 2)).await.unwrap();
    store.flush().await.unwrap();
    let blocks = store.blocks(&t());
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|b| b.tier() == Tier::Remote));
    assert_eq!(local_files(&dir.path().join("blocks"), DATA_FILE), 0);
    let keys = moto.keys("direct", "clew/prod/");
    assert_eq!(keys.iter().filter(|k| k.ends_with(DATA_FILE)).count(), 2);
    assert!(keys
        .iter()
        .all(|k| k.starts_with("clew/prod/tenants/acme/")));
    // meta.json and bloom.bin are cached verbatim.
    let b = &blocks[0];
    let cached = dir
        .path()
        .join("cache/blocks/acme")
        .join(&b.meta.day)
        .join(&b.meta.block_id);
    let remote_meta = store
        .remote_storage()
        .unwrap()
        .os
        .get(&b.meta.dir().join(META_FILE))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(std::fs::read(cached.join(META_FILE)).unwrap(), remote_meta);
    assert!(cached.join("bloom.bin").exists());

    assert_eq!(spans_of(&store, 1).await, 3);
    assert_eq!(spans_of(&store, 2).await, 2);
    assert_eq!(
        search_ids(&store).await,
        vec![TraceId([1; 16]), TraceId([2; 16])]
    );

    // Compaction works in the bucket too: the merged block stays there, the inputs go.
    assert_eq!(store.compact_once().await.unwrap(), 1);
    let blocks = store.blocks(&t());
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].tier(), Tier::Remote);
    assert_eq!(spans_of(&store, 1).await, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = moto.keys("direct", "clew/prod/");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(META_FILE)).count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        local_files(&dir.path().join("cache"), META_FILE),
        1,
        "cache follows deletes"
    );
    store.shutdown().await.unwrap();
    drop(store);

    // A restart reads the blocks from the bucket (meta and bloom from the cache).
    let (store, report) = open(c).await;
    assert_eq!((report.blocks, report.remote_blocks), (1, 1));
    assert_eq!(spans_of(&store, 1).await, 3);
    assert_eq!(spans_of(&store, 2).await, 2);
    assert_eq!(search_ids(&store).await.len(), 2);
}

#[tokio::test]
async fn tiering_moves_old_blocks_and_reads_span_both_tiers() {
    let moto = Moto::start();
    moto.create_bucket("tier");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + 2 * DAY));
    let mut c = cfg(dir.path(), s3(&moto, "tier", ""), clock.clone());
    c.tiering = Some(TieringConfig {
        after: Duration::from_secs(86_400),
    });
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(c.clone(), metrics.clone()).await.unwrap();
    // Trace 1 is two days old, trace 2 an hour old: separate blocks (days).
    store.consume(batch(1, T0, 4)).await.unwrap();
    store
        .consume(batch(2, T0 + 2 * DAY - 3_600_000_000_000, 3))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let blocks = store.blocks(&t());
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|b| b.tier() == Tier::Local));
    assert!(moto.keys("tier", "").is_empty());
    let before = (
        spans_of(&store, 1).await,
        spans_of(&store, 2).await,
        search_ids(&store).await,
    );

    assert_eq!(store.tier_once().await.unwrap(), 1);
    let tiers: Vec<(u64, Tier)> = {
        let mut v: Vec<_> = store
            .blocks(&t())
            .iter()
            .map(|b| (b.meta.span_count, b.tier()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(tiers, vec![(3, Tier::Local), (4, Tier::Remote)]);
    let after = (
        spans_of(&store, 1).await,
        spans_of(&store, 2).await,
        search_ids(&store).await,
    );
    assert_eq!(before, after);
    assert_eq!(after.0, 4);
    let keys = moto.keys("tier", "");
    assert_eq!(keys.len(), 3, "data, bloom, meta: {keys:?}");
    // The local copy goes after the (here zero) delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(local_files(&dir.path().join("blocks"), DATA_FILE), 1);
    assert_eq!(local_files(&dir.path().join("blocks"), META_FILE), 1);

    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "clew_store_tiering_moves_total 1",
        "clew_store_tier_blocks{tier=\"local\"} 1",
        "clew_store_tier_blocks{tier=\"remote\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }

    // Nothing else is due; a day later the second block goes too.
    assert_eq!(store.tier_once().await.unwrap(), 0);
    store.shutdown().await.unwrap();
    drop(store);

    // A restart reads both tiers.
    let (store, report) = open(c.clone()).await;
    assert_eq!((report.blocks, report.remote_blocks), (2, 1));
    assert_eq!(
        (
            spans_of(&store, 1).await,
            spans_of(&store, 2).await,
            search_ids(&store).await
        ),
        before
    );
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(store.tier_once().await.unwrap(), 1);
    assert!(store.blocks(&t()).iter().all(|b| b.tier() == Tier::Remote));
    assert_eq!(spans_of(&store, 2).await, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(local_files(&dir.path().join("blocks"), DATA_FILE), 0);
    assert_eq!(moto.keys("tier", "").len(), 6);
}

/// A crash while tiering leaves a remote copy without `meta.json` (copy interrupted) or a block
/// complete in both tiers (crash before the local copy was deleted). Start-up keeps exactly one
/// copy of each and loses no span.
#[tokio::test]
async fn crash_during_tiering_is_resolved_at_startup() {
    let moto = Moto::start();
    moto.create_bucket("crash");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + DAY));
    let mut c = cfg(dir.path(), s3(&moto, "crash", "x"), clock);
    c.tiering = Some(TieringConfig {
        after: Duration::from_secs(10 * 86_400),
    });
    let (store, _) = open(c.clone()).await;
    store.consume(batch(1, T0, 3)).await.unwrap();
    store.flush().await.unwrap();
    store.consume(batch(2, T0 + 1000, 5)).await.unwrap();
    store.flush().await.unwrap();
    let mut blocks = store.blocks(&t());
    blocks.sort_by_key(|b| b.meta.span_count);
    let (partial, both) = (blocks[0].meta.clone(), blocks[1].meta.clone());
    let local = store.local_storage().clone();
    let remote = store.remote_storage().unwrap().clone();
    store.shutdown().await.unwrap();
    drop(store);

    // Block 1: data and bloom copied, meta not yet. Block 2: fully copied.
    for f in local.list_dir(&partial.dir()).await.unwrap() {
        if f.filename() != Some(META_FILE) {
            remote
                .put(&f, local.get(&f).await.unwrap().to_vec())
                .await
                .unwrap();
        }
    }
    for f in local.list_dir(&both.dir()).await.unwrap() {
        remote
            .put(&f, local.get(&f).await.unwrap().to_vec())
            .await
            .unwrap();
    }
    assert_eq!(moto.keys("crash", "x/").len(), 5);

    let (store, report) = open(c).await;
    assert_eq!(report.removed_incomplete_blocks, 1, "{report:?}");
    assert_eq!(report.removed_tiered_duplicates, 1, "{report:?}");
    assert_eq!((report.blocks, report.remote_blocks), (2, 1));
    let mut tiers: Vec<(String, Tier)> = store
        .blocks(&t())
        .iter()
        .map(|b| (b.meta.block_id.clone(), b.tier()))
        .collect();
    tiers.sort_by_key(|(_, t)| *t);
    assert_eq!(
        tiers,
        vec![
            (partial.block_id.clone(), Tier::Local),
            (both.block_id.clone(), Tier::Remote)
        ]
    );
    assert_eq!(spans_of(&store, 1).await, 3);
    assert_eq!(spans_of(&store, 2).await, 5);
    let keys = moto.keys("crash", "x/");
    assert_eq!(keys.len(), 3, "only the complete copy remains: {keys:?}");
    assert!(keys.iter().all(|k| k.contains(&both.block_id)));
    assert_eq!(local_files(&dir.path().join("blocks"), DATA_FILE), 1);
}

#[tokio::test]
async fn startup_errors_name_the_key_and_the_fix() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let err = Store::open(
        cfg(dir.path(), s3(&moto, "no-such-bucket", ""), clock.clone()),
        StoreMetrics::default(),
    )
    .await
    .err()
    .expect("a missing bucket fails start-up");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Config { .. }), "{msg}");
    assert!(
        msg.contains("storage.s3.bucket")
            && msg.contains("no-such-bucket")
            && msg.contains("does not exist")
            && msg.contains("fix:"),
        "{msg}"
    );

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut bad = s3(&moto, "any", "");
    bad.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let err = Store::open(cfg(dir.path(), bad, clock), StoreMetrics::default())
        .await
        .err()
        .expect("an unreachable endpoint fails start-up");
    let msg = err.to_string();
    assert!(
        msg.contains("storage.s3.endpoint") && msg.contains("fix:"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(25), "fails fast");
}

/// With authentication on, an unknown access key is refused: the error names the credentials
/// and how to set them.
#[tokio::test]
async fn rejected_credentials_are_a_clear_startup_error() {
    let moto = Moto::start_with_auth(1);
    moto.create_bucket("locked");
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(
        cfg(
            dir.path(),
            s3(&moto, "locked", ""),
            Arc::new(ManualClock::new(T0)),
        ),
        StoreMetrics::default(),
    )
    .await
    .err()
    .expect("unknown credentials fail start-up");
    let msg = err.to_string();
    assert!(
        msg.contains("storage.s3:")
            && msg.contains(") rejected by")
            && msg.contains("InvalidAccessKeyId")
            && msg.contains("AWS_ACCESS_KEY_ID")
            && msg.contains("AWS_PROFILE"),
        "{msg}"
    );
}

/// Tiering copies big objects as streamed multipart uploads: the bytes arrive intact.
#[tokio::test]
async fn large_objects_are_copied_in_parts() {
    let moto = Moto::start();
    moto.create_bucket("big");
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::local(dir.path().to_path_buf()).unwrap();
    let remote = Storage::s3(&s3(&moto, "big", "")).await.unwrap();
    let path = Path::from("tenants/acme/2025-06-15/b/data.parquet");
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    local.put(&path, data.clone()).await.unwrap();
    assert_eq!(
        remote.copy_from(&local, &path).await.unwrap(),
        data.len() as u64
    );
    let got = remote.get(&path).await.unwrap();
    assert!(got.len() == data.len() && got[..] == data[..]);
}

// ---- A bucket shared by processes (`clew serve --target ingester|querier|compactor`) ----------

fn shared(
    dir: &std::path::Path,
    moto: &Moto,
    bucket: &str,
    role: clew_store::SharedRole,
    clock: Arc<ManualClock>,
) -> StoreConfig {
    let mut c = cfg(dir, s3(moto, bucket, "shared"), clock);
    c.shared = Some(clew_store::SharedBucket::new(
        role,
        format!("{}-{}", role.as_str(), dir.display()),
    ));
    c
}

/// Two holders race for leases in the bucket (conditional puts): one wins; the other gets the
/// lease once it is given back or has expired; a holder takes its own lease back after a restart.
#[tokio::test]
async fn leases_admit_one_holder_at_a_time() {
    use clew_store::lease::Leases;
    let moto = Moto::start();
    moto.create_bucket("leases");
    let storage = Storage::s3(&s3(&moto, "leases", "p")).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let ttl = Duration::from_secs(60);
    let a = Leases::new(storage.os.clone(), "a", ttl, clock.clone());
    let b = Leases::new(storage.os.clone(), "b", ttl, clock.clone());
    let name = "compaction/acme/2025-06-15";

    let (ra, rb) = tokio::join!(a.try_acquire(name), b.try_acquire(name));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.is_some() != rb.is_some(),
        "exactly one of two racing holders gets the lease: {ra:?} {rb:?}"
    );
    let (winner, loser, lease) = match (ra, rb) {
        (Some(l), None) => (&a, &b, l),
        (None, Some(l)) => (&b, &a, l),
        _ => unreachable!(),
    };
    assert!(
        loser.try_acquire(name).await.unwrap().is_none(),
        "held and not expired"
    );
    // The holder itself (say, restarted) takes it again.
    let lease = {
        drop(lease);
        winner
            .try_acquire(name)
            .await
            .unwrap()
            .expect("a holder retakes its own lease")
    };
    winner.release(lease).await.unwrap();
    let taken = loser
        .try_acquire(name)
        .await
        .unwrap()
        .expect("a given-back lease is free");
    // Never given back: free once it expires, and the old holder's release is then a no-op.
    assert!(winner.try_acquire(name).await.unwrap().is_none());
    clock.advance(ttl + Duration::from_secs(1));
    let retaken = winner
        .try_acquire(name)
        .await
        .unwrap()
        .expect("an expired lease is free");
    loser.release(taken).await.unwrap();
    assert!(
        loser.try_acquire(name).await.unwrap().is_none(),
        "a stale release must not free someone else's lease"
    );
    winner.release(retaken).await.unwrap();
    // Another name is another lease.
    assert!(a.try_acquire("retention/acme").await.unwrap().is_some());
    assert!(moto
        .keys("leases", "p/")
        .iter()
        .all(|k| k.starts_with("p/leases/")));
}

/// An ingester writes blocks into a shared bucket; a querier lists and reads them; two compactors
/// run at once and the tenant-day is merged exactly once; the querier's next listing swaps the
/// inputs for the merged block (every trace still whole), and the inputs are deleted.
#[tokio::test]
async fn roles_share_a_bucket_and_compactors_merge_a_day_once() {
    use clew_store::SharedRole;
    let moto = Moto::start();
    moto.create_bucket("shared");
    let clock = Arc::new(ManualClock::new(T0 + DAY));
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ingester, _) = open(shared(
        dirs[0].path(),
        &moto,
        "shared",
        SharedRole::Ingester,
        clock.clone(),
    ))
    .await;
    let (querier, _) = open(shared(
        dirs[1].path(),
        &moto,
        "shared",
        SharedRole::Querier,
        clock.clone(),
    ))
    .await;
    let compactor =
        |d: &std::path::Path| shared(d, &moto, "shared", SharedRole::Compactor, clock.clone());
    let (c1, _) = open(compactor(dirs[2].path())).await;
    let (c2, _) = open(compactor(dirs[3].path())).await;

    for trace in 1..=4u8 {
        ingester
            .consume(batch(trace, T0 + trace as u64 * 1000, 3))
            .await
            .unwrap();
        ingester.flush().await.unwrap();
    }
    assert_eq!(
        ingester.blocks(&t()).len(),
        4,
        "an ingester serves the blocks it wrote"
    );
    assert_eq!(querier.blocks(&t()).len(), 0, "not listed yet");
    let changes = querier.refresh_blocklist().await.unwrap();
    assert_eq!(changes.added, 4);
    assert_eq!(search_ids(&querier).await.len(), 4);
    assert_eq!(spans_of(&querier, 3).await, 3);
    assert_eq!(querier.services(&t()).await.unwrap(), ["cart"]);

    let (w1, w2) = tokio::join!(c1.compact_once(), c2.compact_once());
    let (w1, w2) = (w1.unwrap(), w2.unwrap());
    assert_eq!(
        w1 + w2,
        1,
        "two compactors merged the one tenant-day {w1} + {w2} times"
    );
    // The one that did not merge learns of the merge at its next listing.
    for c in [&c1, &c2] {
        c.refresh_blocklist().await.unwrap();
        assert_eq!(c.blocks(&t()).len(), 1);
        assert_eq!(c.compact_once().await.unwrap(), 0, "nothing left to merge");
    }
    let changes = querier.refresh_blocklist().await.unwrap();
    assert_eq!((changes.added, changes.removed), (1, 4));
    for trace in 1..=4u8 {
        assert_eq!(
            spans_of(&querier, trace).await,
            3,
            "trace {trace} whole after the merge"
        );
    }
    // The merge's inputs are deleted (delay 0 in this test): one block directory is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metas = moto
            .keys("shared", "shared/tenants/")
            .into_iter()
            .filter(|k| k.ends_with(META_FILE))
            .count();
        if metas == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{metas} blocks left in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An ingester forgets its own blocks once queriers have had time to list them.
    clock.advance(Duration::from_secs(120));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !ingester.blocks(&t()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ingester still serves its old blocks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in [ingester, querier, c1, c2] {
        s.shutdown().await.unwrap();
    }
}

/// Start-up with a shared bucket removes nothing: a block another process is still writing (no
/// `meta.json` yet) stays, and so do blocks a compacted block replaces (hidden, not deleted, by a
/// querier).
#[tokio::test]
async fn a_process_sharing_the_bucket_never_tidies_it_at_start() {
    use clew_store::SharedRole;
    let moto = Moto::start();
    moto.create_bucket("tidy");
    let clock = Arc::new(ManualClock::new(T0 + DAY));
    let d1 = tempfile::tempdir().unwrap();
    let (writer, _) = open(shared(
        d1.path(),
        &moto,
        "tidy",
        SharedRole::Ingester,
        clock.clone(),
    ))
    .await;
    writer.consume(batch(1, T0, 2)).await.unwrap();
    writer.flush().await.unwrap();
    let in_progress = Path::from("tenants/acme/2025-06-15/0000-in-progress/data.parquet");
    writer
        .storage()
        .put(&in_progress, b"partial".to_vec())
        .await
        .unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (querier, report) = open(shared(
        d2.path(),
        &moto,
        "tidy",
        SharedRole::Querier,
        clock.clone(),
    ))
    .await;
    assert_eq!(report.removed_incomplete_blocks, 0);
    assert_eq!(report.blocks, 1);
    assert!(moto
        .keys("tidy", "shared/")
        .iter()
        .any(|k| k.ends_with("0000-in-progress/data.parquet")));
    assert_eq!(spans_of(&querier, 1).await, 2);
    querier.shutdown().await.unwrap();
    writer.shutdown().await.unwrap();
}
