//! The doctor under steady traffic: history spread over the last 10 minutes with context breaks
//! planted at three ages, plus live traffic arriving during the analysis (younger than the grace
//! period, so it must not crowd out the older traces). Every planted break must be found, in the
//! trend bucket of its age, with coverage reported.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
mod common;
use common::{clew, ok, Server};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECOND: u64 = 1_000_000_000;
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn str_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Unique ids from a counter: trace ids never collide across the history and the live load.
struct Ids(AtomicU64);

impl Ids {
    fn trace(&self) -> Vec<u8> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = vec![0x7d; 8];
        t.extend_from_slice(&n.to_be_bytes());
        t
    }
}

struct SpanSpec<'a> {
    trace: &'a [u8],
    id: u64,
    parent: Option<u64>,
    name: &'a str,
    kind: i32,
    start: u64,
    dur: u64,
    attrs: Vec<KeyValue>,
}

fn span(s: SpanSpec) -> Span {
    Span {
        trace_id: s.trace.to_vec(),
        span_id: s.id.to_be_bytes().to_vec(),
        parent_span_id: s
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: s.name.into(),
        kind: s.kind,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.start + s.dur,
        attributes: s.attrs,
        ..Default::default()
    }
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                str_kv("service.name", service),
                str_kv("service.instance.id", &format!("{service}-1")),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A healthy request: web SERVER → web CLIENT → api SERVER (context propagated).
fn healthy(ids: &Ids, start: u64) -> Vec<ResourceSpans> {
    let t = ids.trace();
    let web = vec![
        span(SpanSpec {
            trace: &t,
            id: 1,
            parent: None,
            name: "GET /home",
            kind: KIND_SERVER,
            start,
            dur: 20_000_000,
            attrs: vec![],
        }),
        span(SpanSpec {
            trace: &t,
            id: 2,
            parent: Some(1),
            name: "GET /api/items",
            kind: KIND_CLIENT,
            start: start + 1_000_000,
            dur: 15_000_000,
            attrs: vec![str_kv("peer.service", "api")],
        }),
    ];
    let api = vec![span(SpanSpec {
        trace: &t,
        id: 3,
        parent: Some(2),
        name: "GET /api/items",
        kind: KIND_SERVER,
        start: start + 2_000_000,
        dur: 12_000_000,
        attrs: vec![],
    })];
    vec![resource_spans("web", web), resource_spans("api", api)]
}

/// web calls payments on `POST /charge` without sending the context: payments starts a new trace.
fn lost_between(ids: &Ids, start: u64) -> Vec<ResourceSpans> {
    let (t1, t2) = (ids.trace(), ids.trace());
    let web = vec![
        span(SpanSpec {
            trace: &t1,
            id: 1,
            parent: None,
            name: "POST /checkout",
            kind: KIND_SERVER,
            start,
            dur: 30_000_000,
            attrs: vec![],
        }),
        span(SpanSpec {
            trace: &t1,
            id: 2,
            parent: Some(1),
            name: "POST /charge",
            kind: KIND_CLIENT,
            start: start + 1_000_000,
            dur: 20_000_000,
            attrs: vec![str_kv("peer.service", "payments")],
        }),
    ];
    let payments = vec![span(SpanSpec {
        trace: &t2,
        id: 3,
        parent: None,
        name: "POST /charge",
        kind: KIND_SERVER,
        start: start + 2_000_000,
        dur: 15_000_000,
        attrs: vec![],
    })];
    vec![
        resource_spans("web", web),
        resource_spans("payments", payments),
    ]
}

/// worker runs `process-job`, and a detached task starts a new trace while it runs.
fn lost_in_service(ids: &Ids, start: u64) -> Vec<ResourceSpans> {
    let (t1, t2) = (ids.trace(), ids.trace());
    let spans = vec![
        span(SpanSpec {
            trace: &t1,
            id: 1,
            parent: None,
            name: "process-job",
            kind: KIND_SERVER,
            start,
            dur: 40_000_000,
            attrs: vec![],
        }),
        span(SpanSpec {
            trace: &t2,
            id: 2,
            parent: None,
            name: "resize-image",
            kind: KIND_INTERNAL,
            start: start + 5_000_000,
            dur: 10_000_000,
            attrs: vec![],
        }),
    ];
    vec![resource_spans("worker", spans)]
}

/// inventory spans whose parent never arrives.
fn orphan(ids: &Ids, start: u64) -> Vec<ResourceSpans> {
    let t = ids.trace();
    vec![resource_spans(
        "inventory",
        vec![span(SpanSpec {
            trace: &t,
            id: 9,
            parent: Some(0xdead),
            name: "reserve-stock",
            kind: KIND_SERVER,
            start,
            dur: 5_000_000,
            attrs: vec![],
        })],
    )]
}

async fn send(client: &reqwest::Client, http: &str, rs: Vec<ResourceSpans>) {
    let body = ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec();
    let r = client
        .post(format!("{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_breaks_of_every_age_under_continuous_load() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = reqwest::Client::new();
    let ids = Arc::new(Ids(AtomicU64::new(0)));
    let t0 = now_nanos();

    // History: 12,000 healthy traces over the last 10 minutes (20/s), and in three age bands
    // one break every 5 traces: lost between services at 45-75 s, lost in a service at 3-4 min,
    // orphans at 8-9 min.
    let history = 12_000u64;
    let span_nanos = 600 * SECOND;
    let mut batch = Vec::new();
    let (mut planted_between, mut planted_in, mut planted_orphan) = (0, 0, 0);
    for i in 0..history {
        let start = t0 - span_nanos + i * span_nanos / history;
        let age = t0 - start;
        batch.extend(healthy(&ids, start));
        if i % 5 == 0 {
            if (45 * SECOND..75 * SECOND).contains(&age) {
                batch.extend(lost_between(&ids, start + 3_000_000));
                planted_between += 1;
            } else if (180 * SECOND..240 * SECOND).contains(&age) {
                batch.extend(lost_in_service(&ids, start + 3_000_000));
                planted_in += 1;
            } else if (480 * SECOND..540 * SECOND).contains(&age) {
                batch.extend(orphan(&ids, start + 3_000_000));
                planted_orphan += 1;
            }
        }
        if batch.len() >= 400 {
            send(&client, &server.http, std::mem::take(&mut batch)).await;
        }
    }
    send(&client, &server.http, batch).await;
    assert!(planted_between > 50 && planted_in > 100 && planted_orphan > 100);

    // Live traffic during the analysis: far more traces per second than the doctor examines,
    // all younger than the grace period.
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let (stop, ids, client, http) = (
            stop.clone(),
            ids.clone(),
            client.clone(),
            server.http.clone(),
        );
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = now_nanos();
                let rs: Vec<ResourceSpans> = (0..100).flat_map(|_| healthy(&ids, now)).collect();
                send(&client, &http, rs).await;
                sent += 100;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    let query = server.query.clone();
    let asked = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        clew(&[
            "doctor",
            "--since",
            "15m",
            "--format",
            "json",
            "--endpoint",
            &query,
        ])
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let live_sent = live.await.unwrap();
    assert!(
        live_sent >= 2_000,
        "live load too thin to matter: {live_sent}"
    );
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "doctor")).unwrap();

    let examined = report["traces_examined"].as_u64().unwrap();
    let in_window = report["traces_in_window"].as_u64().unwrap();
    eprintln!(
        "doctor: examined {examined} of ~{in_window} traces in {:?} under {live_sent} live traces",
        asked.elapsed()
    );
    assert!(examined >= 1_000, "examined {examined}: {report:#}");
    // Healthy + planted traces judged in the window (the 30 s grace cuts the newest ~600).
    let stored = history + planted_between * 2 + planted_in * 2 + planted_orphan;
    assert!(
        in_window > stored * 8 / 10 && in_window <= stored + 200,
        "estimate {in_window} vs ~{stored} stored"
    );
    let coverage = report["coverage"].as_f64().unwrap();
    assert!(
        (coverage - examined as f64 / in_window as f64).abs() < 1e-9,
        "{coverage}"
    );
    assert!(coverage < 0.5, "the window holds far more than the limit");

    let findings = report["findings"].as_array().unwrap();
    let find = |kind: &str, op: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == kind && f["operation"] == op)
            .unwrap_or_else(|| panic!("no {kind} on {op}: {report:#}"))
    };
    let between = find("context_lost_between_services", "POST /charge");
    assert_eq!(between["from_service"], "web");
    assert_eq!(between["to_service"], "payments");
    let inside = find("context_lost_in_service", "process-job");
    assert_eq!(inside["new_root_operation"], "resize-image");
    let orphans = find("orphan_spans", "reserve-stock");
    assert_eq!(orphans["to_service"], "inventory");
    assert!(
        !findings.iter().any(|f| f["operation"] == "GET /api/items"),
        "healthy traffic is not a finding: {report:#}"
    );

    // Each finding's trend puts its occurrences at the age it was planted.
    let start = report["window_start_unix_nano"].as_u64().unwrap();
    let width = report["trend_bucket_nanos"].as_u64().unwrap();
    for (f, lo, hi) in [(between, 45, 75), (inside, 180, 240), (orphans, 480, 540)] {
        let trend: Vec<u64> = f["trend"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(trend.iter().sum::<u64>(), f["count"].as_u64().unwrap());
        for (i, &n) in trend.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (b_lo, b_hi) = (start + i as u64 * width, start + (i as u64 + 1) * width);
            let (band_lo, band_hi) = (t0 - hi * SECOND, t0 - lo * SECOND);
            assert!(
                b_hi > band_lo && b_lo < band_hi + 10 * SECOND,
                "{}: bucket {i} holds {n} but the band is {lo}-{hi}s old: {trend:?}",
                f["kind"]
            );
        }
        // Every example links to a span of its trace.
        let traces = f["example_trace_ids"].as_array().unwrap();
        let spans = f["example_span_ids"].as_array().unwrap();
        assert_eq!(traces.len(), spans.len());
        assert!(spans.iter().all(|s| s.as_str().unwrap().len() == 16));
        assert!(f["remedy"].as_str().unwrap().len() > 40);
    }

    // The text output reports the coverage.
    let out = clew(&["doctor", "--since", "15m", "--endpoint", &server.query]);
    let text = ok(&out, "doctor text");
    assert!(text.contains("% coverage"), "{text}");
    assert!(
        text.contains("context lost from web to payments on POST /charge"),
        "{text}"
    );
}
