//! The tail sampler's log (issue 18 point 1): replay after a crash, torn tails, encryption at
//! rest, and the pinned record format.

use clew_encryption::local::Keyring;
use clew_encryption::{EncryptionConfig, KeyManager, LocalConfig, ProviderKind};
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::{SinkError, SpanBatch, SpanSink, Tenant};
use clew_sampling::sampler_log::{self, Decision, LogOptions, Payload, SamplerLog};
use clew_sampling::{TailCore, TailSampler, TailSamplingConfig};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POLICIES: &str =
    "policies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n";

fn cfg(wait: &str) -> TailSamplingConfig {
    serde_yaml::from_str(&format!(
        "decision_wait: {wait}\nroot_send_delay: 0s\nnum_shards: 2\n{POLICIES}"
    ))
    .unwrap()
}

fn tid(n: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    t[8..].copy_from_slice(&(n + 1).to_be_bytes());
    t
}

/// One span per trace `n`, named `secret-span-name-<n>`, erroring when `n` is odd (kept).
fn batch(traces: &[u64]) -> SpanBatch {
    let spans = traces
        .iter()
        .map(|n| Span {
            trace_id: tid(*n).to_vec(),
            span_id: vec![1; 8],
            name: format!("secret-span-name-{n}"),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 2_000_000_000,
            status: (n % 2 == 1).then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new("acme").unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
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

fn trace_ids(batches: &[SpanBatch]) -> Vec<[u8; 16]> {
    let mut out: Vec<[u8; 16]> = batches
        .iter()
        .flat_map(|b| b.resource_spans.iter())
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .map(|s| <[u8; 16]>::try_from(s.trace_id.as_slice()).unwrap())
        .collect();
    out.sort();
    out
}

fn local_keys(dir: &Path) -> Arc<KeyManager> {
    let ring = dir.join("keyring.json");
    if !ring.exists() {
        Keyring::create(&ring).unwrap();
    }
    let config = EncryptionConfig {
        provider: ProviderKind::Local,
        local: Some(LocalConfig { keyring: ring }),
        aws_kms: None,
    };
    Arc::new(KeyManager::new(config.build().unwrap()))
}

/// A core with a log, fed `traces` durably; returns once every record is fsynced. Dropping the
/// returned log without closing it is the crash: nothing more reaches the disk.
async fn ingest_durably(
    dir: &Path,
    keys: Option<Arc<KeyManager>>,
    traces: &[u64],
) -> (TailCore, u64) {
    let (log, replayed) = SamplerLog::open(dir, keys.clone(), LogOptions::default())
        .await
        .unwrap();
    assert!(replayed.traces.is_empty());
    let mut core = TailCore::new("tail_sampling", cfg("10s")).unwrap();
    core.attach_log(log);
    let key = match &keys {
        Some(k) => Some(k.wal_key("acme").await.unwrap()),
        None => None,
    };
    let before = sampler_log::unix_ms();
    let ing = core.ingest_logged(&batch(traces), 1_000, key);
    assert!(!ing.durable.is_empty());
    for t in ing.durable {
        t.await.unwrap().unwrap();
    }
    (core, before)
}

#[tokio::test]
async fn replay_rebuilds_buffered_traces_with_their_age() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (crashed, first) = ingest_durably(&dir, None, &[1, 2, 3, 4]).await;
    drop(crashed);

    let (log, replayed) = SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .unwrap();
    assert_eq!(replayed.traces.len(), 4);
    let got: Vec<[u8; 16]> = {
        let mut v: Vec<_> = replayed.traces.iter().map(|t| t.trace_id).collect();
        v.sort();
        v
    };
    let mut want = vec![tid(1), tid(2), tid(3), tid(4)];
    want.sort();
    assert_eq!(got, want);
    for t in &replayed.traces {
        assert!(t.first_unix_ms >= first && t.first_unix_ms <= sampler_log::unix_ms());
        assert_eq!(t.tenant, "acme");
    }
    let first = replayed.traces[0].first_unix_ms;

    // Restored 4 s after the spans first arrived (simulated wall clock): with a 10 s wait the
    // traces are decided 6 s later, not 10.
    let mut core = TailCore::new("tail_sampling", cfg("10s")).unwrap();
    core.attach_log(log);
    let released = core.restore(replayed, 50_000, first + 4_000).unwrap();
    assert!(released.is_empty());
    assert_eq!(core.buffered_traces(), 4);
    let mut kept = Vec::new();
    for s in 0..core.num_shards() {
        kept.extend(core.tick(s, 55_900));
    }
    assert!(kept.is_empty(), "decided early");
    for s in 0..core.num_shards() {
        kept.extend(core.tick(s, 56_100));
    }
    assert_eq!(trace_ids(&kept), {
        let mut w = vec![tid(1), tid(3)];
        w.sort();
        w
    });
    assert_eq!(core.buffered_traces(), 0);
}

#[derive(Default)]
struct Collect(Mutex<Vec<SpanBatch>>);

#[async_trait::async_trait]
impl SpanSink for Collect {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

#[tokio::test]
async fn decided_traces_are_not_rebuilt_and_late_spans_follow_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let sink = Arc::new(Collect::default());
    // Phase 1 in its own runtime, dropped at the end: the crash (its tasks stop mid-flight,
    // nothing is decided on the way out).
    let (d, s) = (dir.clone(), sink.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let (log, _) = SamplerLog::open(&d, None, LogOptions::default())
                .await
                .unwrap();
            let mut core = TailCore::new("tail_sampling", cfg("300ms")).unwrap();
            core.attach_log(log.clone());
            let sampler = TailSampler::start(core, s.clone());
            let late = sampler.consume_logged(batch(&[1, 2]), None).await.unwrap();
            assert!(late.is_none());
            // Decided (1 kept and forwarded, 2 dropped), and the decisions logged.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while trace_ids(&s.0.lock().unwrap()).is_empty() {
                assert!(std::time::Instant::now() < deadline, "never decided");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let late = sampler.consume_logged(batch(&[3]), None).await.unwrap();
            assert!(late.is_none());
            log.sync().await.unwrap();
        });
        drop(rt);
    })
    .join()
    .unwrap();
    assert_eq!(trace_ids(&sink.0.lock().unwrap()), vec![tid(1)]);

    let (log, replayed) = SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .unwrap();
    assert_eq!(
        replayed.traces.len(),
        1,
        "only the undecided trace is rebuilt"
    );
    assert_eq!(replayed.traces[0].trace_id, tid(3));
    assert!(replayed.decisions.contains(&(
        "acme".into(),
        tid(1),
        Decision::Kept(Arc::from("errors"))
    )));
    assert!(replayed
        .decisions
        .contains(&("acme".into(), tid(2), Decision::Dropped)));

    let sink2 = Arc::new(Collect::default());
    let mut core = TailCore::new("tail_sampling", cfg("300ms")).unwrap();
    core.attach_log(log);
    let sampler = TailSampler::start(core, sink2.clone());
    sampler.restore(replayed).unwrap();
    // Late spans: of the kept trace 1, handed on with the request; of the dropped trace 2, dropped.
    let late = sampler.consume_logged(batch(&[1]), None).await.unwrap();
    assert_eq!(
        trace_ids(&late.into_iter().collect::<Vec<_>>()),
        vec![tid(1)]
    );
    let late = sampler.consume_logged(batch(&[2]), None).await.unwrap();
    assert!(late.is_none());
    // Trace 3 (kept) is decided after restart and stored once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while trace_ids(&sink2.0.lock().unwrap()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "rebuilt trace never decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    clew_pipeline::Processor::shutdown(&sampler).await.unwrap();
    assert_eq!(trace_ids(&sink2.0.lock().unwrap()), vec![tid(3)]);

    // After a clean stop every trace is decided: nothing to rebuild.
    let (_, replayed) = SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .unwrap();
    assert!(replayed.traces.is_empty());
}

#[tokio::test]
async fn torn_tail_is_cut_and_the_rest_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (c, _) = ingest_durably(&dir, None, &[1, 2]).await;
    let ing = c.ingest_logged(&batch(&[5]), 2_000, None);
    for t in ing.durable {
        t.await.unwrap().unwrap();
    }
    drop(c);
    let segs = sampler_log::list_segments(&dir).unwrap();
    let last = dir.join(format!("{:016}.slog", segs.last().unwrap()));
    let len = std::fs::metadata(&last).unwrap().len();
    // Half of the last record (trace 5) never reached the disk.
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    let (_, replayed) = SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .unwrap();
    assert!(replayed.truncated_bytes > 0);
    let mut got: Vec<_> = replayed.traces.iter().map(|t| t.trace_id).collect();
    got.sort();
    let mut want = vec![tid(1), tid(2)];
    want.sort();
    assert_eq!(got, want);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn dir_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn sealed_log_holds_no_plaintext_and_replays_with_its_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (c, _) = ingest_durably(&dir, Some(local_keys(tmp.path())), &[1, 2]).await;
    drop(c);
    let bytes = dir_bytes(&dir);
    assert!(!bytes.is_empty());
    assert!(!contains(&bytes, b"secret-span-name"), "span name in clear");
    assert!(!contains(&bytes, b"checkout"), "resource in clear");

    // Without the keys the log is refused, not skipped.
    assert!(SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .is_err());

    // A fresh key manager (nothing cached) unwraps through the keyring.
    let (log, replayed) =
        SamplerLog::open(&dir, Some(local_keys(tmp.path())), LogOptions::default())
            .await
            .unwrap();
    assert_eq!(replayed.traces.len(), 2);
    let names: Vec<String> = replayed
        .traces
        .iter()
        .flat_map(|t| t.resource_spans.iter())
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .map(|s| s.name.clone())
        .collect();
    assert!(names.contains(&"secret-span-name-1".to_string()));
    // The rewritten segment is sealed too.
    log.sync().await.unwrap();
    assert!(!contains(&dir_bytes(&dir), b"secret-span-name"));

    // Encryption on but no data key given: refused, never written in clear.
    let mut core = TailCore::new("tail_sampling", cfg("10s")).unwrap();
    core.attach_log(log);
    let ing = core.ingest_logged(&batch(&[9]), 1_000, None);
    for t in ing.durable {
        assert!(t.await.unwrap().is_err());
    }
}

/// The record format is pinned: a fixture written by this build must replay in every later one.
/// Regenerate only with a format change (new payload kind or version), never silently:
/// `CLEW_WRITE_FIXTURES=1 cargo test -p clew-sampling --test sampler_log`.
#[test]
fn log_format_is_stable() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampler_log_v1.slog");
    let spans = {
        // One spans record (one trace, one span, fixed times) and one decision record.
        let mut core_bytes = Vec::new();
        let rs = batch(&[7]).resource_spans;
        let rec = sampler_log::encode_plain_spans_record("acme", 1_700_000_000_000, &rs);
        core_bytes.extend(rec);
        core_bytes.extend(sampler_log::encode_plain_decided_record(
            "acme",
            1_700_000_001_000,
            &Decision::Kept(Arc::from("errors")),
            &[tid(7)],
        ));
        core_bytes
    };
    if std::env::var_os("CLEW_WRITE_FIXTURES").is_some() {
        std::fs::write(&fixture, &spans).unwrap();
    }
    let want = std::fs::read(&fixture).expect("fixture present");
    assert_eq!(
        spans, want,
        "the encoder's bytes changed: the log format changed"
    );
    // And it decodes to what was written.
    let (body, used) = clew_encryption::sealed_record::frame(&want).unwrap();
    assert_eq!(body[0], clew_encryption::sealed_record::VERSION_PLAIN);
    match sampler_log::decode_payload(&body[3 + 4..]).unwrap() {
        Payload::Spans { unix_ms, groups } => {
            assert_eq!(unix_ms, 1_700_000_000_000);
            assert_eq!(groups.len(), 1);
            assert_eq!(groups[0].trace_id, tid(7));
            assert_eq!(groups[0].resource_spans, batch(&[7]).resource_spans);
        }
        p => panic!("{p:?}"),
    }
    let (body, _) = clew_encryption::sealed_record::frame(&want[used..]).unwrap();
    match sampler_log::decode_payload(&body[3 + 4..]).unwrap() {
        Payload::Decided {
            decision,
            trace_ids,
            ..
        } => {
            assert_eq!(decision, Decision::Kept(Arc::from("errors")));
            assert_eq!(trace_ids, vec![tid(7)]);
        }
        p => panic!("{p:?}"),
    }
}

/// Bytes of the `.slog` files in `dir` and their number.
fn slog_files(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".slog") {
            bytes += e.metadata().unwrap().len();
            n += 1;
        }
    }
    (bytes, n)
}

/// The sampler log's metrics as a scrape shows them: records and fsyncs counted, bytes and
/// segments matching the files on disk, and after a crash the rebuilt traces and their decisions
/// (kept ones once accepted downstream) — counted from what start-up did, before binding.
#[tokio::test]
async fn log_metrics_count_appends_disk_and_decisions_after_replay() {
    use clew_sampling::tail::TailMetrics;
    use prometheus_client::registry::Registry;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (crashed, _) = ingest_durably(&dir, None, &[1, 2, 3, 4]).await;
    let m = crashed.metrics.log_metrics("tail_sampling");
    // The rewrite at open (empty), then one record per shard the traces fell in (two shards),
    // in one or two group commits.
    assert!((2..=3).contains(&m.fsyncs.get()), "{}", m.fsyncs.get());
    assert!((1..=2).contains(&m.spans_records.get()));
    assert_eq!(m.decided_records.get(), 0);
    assert_eq!(m.replayed_traces.get(), 0);
    let (bytes, segments) = slog_files(&dir);
    assert!(bytes > 0);
    assert_eq!(m.bytes.get(), bytes as i64);
    assert_eq!(m.segments.get(), segments as i64);
    drop(crashed);

    let metrics = TailMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let (log, replayed) = SamplerLog::open(&dir, None, LogOptions::default())
        .await
        .unwrap();
    assert_eq!(replayed.traces.len(), 4);
    let mut core = TailCore::with_metrics("tail_sampling", cfg("300ms"), metrics.clone()).unwrap();
    core.attach_log(log.clone());
    let m = metrics.log_metrics("tail_sampling");
    // Carried over from start-up: replay and the rewrite of 4 traces (one record each).
    assert_eq!(m.replayed_traces.get(), 4);
    assert_eq!(m.spans_records.get(), 4);
    assert_eq!(m.fsyncs.get(), 1);
    assert_eq!(m.segments.get(), 1, "replayed segments deleted");
    assert_eq!(m.bytes.get(), slog_files(&dir).0 as i64);
    let sink = Arc::new(Collect::default());
    let sampler = TailSampler::start(core, sink.clone());
    sampler.restore(replayed).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.replayed_kept.get() + m.replayed_dropped.get() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "rebuilt traces not durably decided: kept {} dropped {}",
            m.replayed_kept.get(),
            m.replayed_dropped.get()
        );
        log.sync().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.replayed_kept.get(), 2, "traces 1 and 3 have errors");
    assert_eq!(m.replayed_dropped.get(), 2);
    assert_eq!(m.replayed_handed_off.get(), 0);
    assert!(m.decided_records.get() >= 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "clew_sampling_log_replayed_traces_total{processor=\"tail_sampling\"} 4",
        "clew_sampling_log_replayed_decided_total{processor=\"tail_sampling\",decision=\"kept\"} 2",
        "clew_sampling_log_replayed_decided_total{processor=\"tail_sampling\",decision=\"dropped\"} 2",
        "clew_sampling_log_segments{processor=\"tail_sampling\"} 1",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    for name in [
        "clew_sampling_log_bytes{",
        "clew_sampling_log_records_total{processor=\"tail_sampling\",kind=\"spans\"}",
        "clew_sampling_log_records_total{processor=\"tail_sampling\",kind=\"decided\"}",
        "clew_sampling_log_fsyncs_total{",
    ] {
        assert!(text.contains(name), "no `{name}` in:\n{text}");
    }
    clew_pipeline::Processor::shutdown(&sampler).await.unwrap();
    assert_eq!(trace_ids(&sink.0.lock().unwrap()), vec![tid(1), tid(3)]);
}
