//! Unit tests over hand-built traces.

use crate::*;
use clew_model::attrs::{kv_int, kv_str};
use clew_model::otlp::common::{InstrumentationScope, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use clew_model::{FlatSpan, SpanBatch, Tenant};
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SERVER: i32 = SpanKind::Server as i32;
const CLIENT: i32 = SpanKind::Client as i32;
const PRODUCER: i32 = SpanKind::Producer as i32;
const CONSUMER: i32 = SpanKind::Consumer as i32;
const INTERNAL: i32 = SpanKind::Internal as i32;

fn res(svc: &str, host: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![kv_str("service.name", svc), kv_str("host.name", host)],
        ..Default::default()
    })
}

struct S {
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    name: &'static str,
    start_ms: i64,
    end_ms: i64,
    attrs: Vec<KeyValue>,
    error: bool,
}

fn s(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    name: &'static str,
    start_ms: i64,
    end_ms: i64,
) -> S {
    S {
        trace,
        id,
        parent,
        kind,
        name,
        start_ms,
        end_ms,
        attrs: vec![],
        error: false,
    }
}

impl S {
    fn attrs(mut self, a: Vec<KeyValue>) -> Self {
        self.attrs = a;
        self
    }
    fn failed(mut self) -> Self {
        self.error = true;
        self
    }
    fn on(self, r: &Arc<Resource>) -> FlatSpan {
        let t = |ms: i64| (T0 as i64 + ms * MS as i64) as u64;
        FlatSpan {
            resource: r.clone(),
            resource_schema_url: Arc::from(""),
            scope: Arc::new(InstrumentationScope::default()),
            scope_schema_url: Arc::from(""),
            span: Span {
                trace_id: vec![self.trace; 16],
                span_id: vec![self.id; 8],
                parent_span_id: self.parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: self.name.into(),
                kind: self.kind,
                start_time_unix_nano: t(self.start_ms),
                end_time_unix_nano: t(self.end_ms),
                attributes: self.attrs,
                status: self.error.then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            },
        }
    }
}

fn sid(b: u8) -> String {
    format!("{b:02x}").repeat(8)
}

fn tid(b: u8) -> String {
    format!("{b:02x}").repeat(16)
}

/// Window options judging everything (now is far after T0).
fn wopts() -> WindowOptions {
    WindowOptions::new(T0 + 3_600_000 * MS)
}

fn healthy(trace: u8) -> Vec<FlatSpan> {
    let (a, b) = (res("frontend", "h1"), res("cart", "h2"));
    vec![
        s(trace, 1, None, SERVER, "GET /", 0, 100).on(&a),
        s(trace, 2, Some(1), CLIENT, "GET /cart", 10, 60)
            .attrs(vec![
                kv_str("server.address", "cart"),
                kv_int("server.port", 8080),
            ])
            .on(&a),
        s(trace, 3, Some(2), SERVER, "GET /cart", 12, 58).on(&b),
        s(trace, 4, Some(3), CLIENT, "SELECT", 20, 30)
            .attrs(vec![kv_str("db.system", "postgresql")])
            .on(&b),
    ]
}

#[test]
fn healthy_trace_has_no_warnings_and_a_critical_path() {
    let t = healthy(1);
    let a = analyze_trace(&t, &TraceOptions::default());
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert!(a.orphans.is_empty() && a.clock_skew.is_empty());
    assert_eq!(a.roots, vec![sid(1)]);
    assert_eq!(a.duration_nanos, 100 * MS);
    let path: Vec<(String, u64, u64)> = a
        .critical_path
        .iter()
        .map(|c| {
            (
                c.span_id.clone(),
                (c.start_unix_nano - T0) / MS,
                (c.end_unix_nano - T0) / MS,
            )
        })
        .collect();
    assert_eq!(
        path,
        vec![
            (sid(1), 0, 10),
            (sid(2), 10, 12),
            (sid(3), 12, 20),
            (sid(4), 20, 30),
            (sid(3), 30, 58),
            (sid(2), 58, 60),
            (sid(1), 60, 100),
        ]
    );
    assert_eq!(
        a.critical_path_span_ids,
        vec![sid(1), sid(2), sid(3), sid(4)]
    );
    assert_eq!(a.self_time_nanos[&sid(1)], 50 * MS);
    assert_eq!(a.self_time_nanos[&sid(3)], 36 * MS);
    let fe = a.services.iter().find(|s| s.service == "frontend").unwrap();
    assert_eq!(fe.critical_path_nanos, 54 * MS);
    let cart = a.services.iter().find(|s| s.service == "cart").unwrap();
    assert_eq!(cart.critical_path_nanos, 46 * MS);
    let report = analyze_window(&[t, healthy(2), healthy(3)], &wopts());
    assert_eq!(report.findings, vec![]);
    assert_eq!(report.traces_examined, 3);
}

#[test]
fn critical_path_takes_the_last_finishing_child_first() {
    let a = res("a", "h");
    let t = vec![
        s(1, 1, None, SERVER, "root", 0, 100).on(&a),
        s(1, 2, Some(1), INTERNAL, "c1", 10, 40).on(&a),
        s(1, 3, Some(1), INTERNAL, "c2", 30, 90).on(&a),
    ];
    let an = analyze_trace(&t, &TraceOptions::default());
    let path: Vec<(String, u64, u64)> = an
        .critical_path
        .iter()
        .map(|c| {
            (
                c.span_id.clone(),
                (c.start_unix_nano - T0) / MS,
                (c.end_unix_nano - T0) / MS,
            )
        })
        .collect();
    assert_eq!(
        path,
        vec![
            (sid(1), 0, 10),
            (sid(2), 10, 30),
            (sid(3), 30, 90),
            (sid(1), 90, 100)
        ]
    );
    // Overlapping children: self time counts the union once.
    assert_eq!(an.self_time_nanos[&sid(1)], 20 * MS);
}

#[test]
fn errors_are_attributed_to_where_they_originate() {
    let (a, b) = (res("frontend", "h1"), res("payment", "h2"));
    let t = vec![
        s(1, 1, None, SERVER, "GET /", 0, 100).failed().on(&a),
        s(1, 2, Some(1), CLIENT, "POST /pay", 10, 60)
            .failed()
            .on(&a),
        s(1, 3, Some(2), SERVER, "POST /pay", 12, 58)
            .failed()
            .on(&b),
    ];
    let an = analyze_trace(&t, &TraceOptions::default());
    let p = an.services.iter().find(|s| s.service == "payment").unwrap();
    assert_eq!((p.error_spans, p.error_origins), (1, 1));
    let f = an
        .services
        .iter()
        .find(|s| s.service == "frontend")
        .unwrap();
    assert_eq!((f.error_spans, f.error_origins), (2, 0));
}

#[test]
fn orphans_are_warned_and_aggregated_after_the_grace_period() {
    let (a, b) = (res("frontend", "h1"), res("cart", "h2"));
    let mk = |tr: u8| {
        vec![
            s(tr, 1, None, SERVER, "GET /", 0, 100).on(&a),
            s(tr, 3, Some(9), SERVER, "GET /cart", 12, 58).on(&b),
        ]
    };
    let an = analyze_trace(&mk(1), &TraceOptions::default());
    assert_eq!(an.orphans.len(), 1);
    assert_eq!(an.orphans[0].missing_parent_span_id, sid(9));
    assert!(an.warnings[&sid(3)][0].contains(&format!("parent span {} not in trace", sid(9))));
    let report = analyze_window(&[mk(1), mk(2)], &wopts());
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let f = &report.findings[0];
    assert_eq!(f.kind, FindingKind::OrphanSpans);
    assert_eq!(f.to_service.as_deref(), Some("cart"));
    assert_eq!(f.operation.as_deref(), Some("GET /cart"));
    assert_eq!(f.count, 2);
    assert_eq!(f.example_trace_ids, vec![tid(1), tid(2)]);
    // Within the grace period nothing is judged.
    let recent = WindowOptions::new(T0 + 10_000 * MS);
    let r = analyze_window(&[mk(1)], &recent);
    assert_eq!(
        (r.findings.len(), r.traces_examined, r.traces_too_recent),
        (0, 0, 1)
    );
}

#[test]
fn several_roots_in_one_trace() {
    let a = res("worker", "h1");
    let t = vec![
        s(1, 1, None, SERVER, "GET /", 0, 100).on(&a),
        s(1, 2, None, INTERNAL, "job", 10, 20).on(&a),
    ];
    let an = analyze_trace(&t, &TraceOptions::default());
    assert_eq!(an.roots, vec![sid(1), sid(2)]);
    assert!(an.warnings[&sid(2)][0].contains("2 root spans"));
    let r = analyze_window(&[t], &wopts());
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, FindingKind::MultipleRoots);
    assert_eq!(r.findings[0].operation.as_deref(), Some("job"));
}

fn broken_call(
    tr: u8,
    server_tr: u8,
    server_start: i64,
    server_attrs: Vec<KeyValue>,
) -> Vec<Vec<FlatSpan>> {
    let (a, b) = (res("frontend", "h1"), res("cart", "h2"));
    vec![
        vec![
            s(tr, 1, None, SERVER, "GET /", 0, 100).on(&a),
            s(tr, 2, Some(1), CLIENT, "GET /cart", 10, 60)
                .attrs(vec![
                    kv_str("server.address", "cart"),
                    kv_int("server.port", 8080),
                    kv_str("url.full", "http://cart:8080/cart"),
                ])
                .on(&a),
        ],
        vec![s(
            server_tr,
            3,
            None,
            SERVER,
            "GET /cart",
            server_start,
            server_start + 40,
        )
        .attrs(server_attrs)
        .on(&b)],
    ]
}

#[test]
fn context_lost_between_services_needs_time_and_address() {
    let mut traces = broken_call(1, 2, 12, vec![]);
    traces.extend(broken_call(
        3,
        4,
        15,
        vec![
            kv_str("server.address", "cart"),
            kv_int("server.port", 8080),
        ],
    ));
    let r = analyze_window(&traces, &wopts());
    let lost: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::ContextLostBetweenServices)
        .collect();
    assert_eq!(lost.len(), 1, "{:#?}", r.findings);
    let f = lost[0];
    assert_eq!(f.from_service.as_deref(), Some("frontend"));
    assert_eq!(f.to_service.as_deref(), Some("cart"));
    assert_eq!(f.operation.as_deref(), Some("GET /cart"));
    assert_eq!(f.count, 2);
    assert_eq!(f.example_trace_ids, vec![tid(1), tid(3)]);
    assert_eq!(f.example_new_trace_ids, vec![tid(2), tid(4)]);
    assert_eq!(
        f.message,
        "context lost from frontend to cart on GET /cart: 2 occurrences"
    );
    assert_eq!(r.findings.len(), 1, "nothing else: {:#?}", r.findings);

    // A genuine root outside the client's window (a request from an uninstrumented client).
    let r = analyze_window(&broken_call(1, 2, 500, vec![]), &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // In the window but addressed as something else (another port): no match, no finding.
    let r = analyze_window(
        &broken_call(
            1,
            2,
            12,
            vec![
                kv_str("server.address", "cart"),
                kv_int("server.port", 9090),
            ],
        )
        .into_iter()
        .map(|t| {
            t.into_iter()
                .map(|mut f| {
                    if f.service_name() == "cart" {
                        f.resource = res("billing", "h3");
                    }
                    f
                })
                .collect()
        })
        .collect::<Vec<_>>(),
        &wopts(),
    );
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn context_lost_through_a_queue() {
    let (a, b) = (res("checkout", "h1"), res("email", "h2"));
    let dest = || {
        vec![
            kv_str("messaging.system", "kafka"),
            kv_str("messaging.destination.name", "orders"),
        ]
    };
    let traces = vec![
        vec![
            s(1, 1, None, SERVER, "POST /checkout", 0, 100).on(&a),
            s(1, 2, Some(1), PRODUCER, "publish orders", 50, 55)
                .attrs(dest())
                .on(&a),
        ],
        vec![s(2, 3, None, CONSUMER, "process orders", 300, 400)
            .attrs(dest())
            .on(&b)],
    ];
    let r = analyze_window(&traces, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].kind, FindingKind::ContextLostBetweenServices);
    assert_eq!(r.findings[0].to_service.as_deref(), Some("email"));
    assert_eq!(r.findings[0].operation.as_deref(), Some("publish orders"));
    // A batch consumer starting its own trace with links to the producers is deliberate.
    let mut linked = traces.clone();
    linked[1][0].span.links = vec![clew_model::otlp::trace::span::Link {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    }];
    let r = analyze_window(&linked, &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // Healthy: the consumer is a child of the producer (after it ended: asynchronous, no skew).
    let healthy = vec![vec![
        s(1, 1, None, SERVER, "POST /checkout", 0, 100).on(&a),
        s(1, 2, Some(1), PRODUCER, "publish orders", 50, 55)
            .attrs(dest())
            .on(&a),
        s(1, 3, Some(2), CONSUMER, "process orders", 300, 400)
            .attrs(dest())
            .on(&b),
    ]];
    let r = analyze_window(&healthy, &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn context_lost_inside_a_service() {
    let a = res("frontend", "h1");
    let b = res("cart", "h2");
    // A thread pool: the handler's outgoing call becomes a new trace while the handler runs.
    let traces = vec![
        vec![s(1, 1, None, SERVER, "GET /broken", 0, 100).on(&a)],
        vec![
            s(2, 2, None, CLIENT, "GET", 10, 60)
                .attrs(vec![kv_str("http.url", "http://cart:8080/x")])
                .on(&a),
            s(2, 3, Some(2), SERVER, "GET /x", 12, 58).on(&b),
        ],
    ];
    let r = analyze_window(&traces, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.kind, FindingKind::ContextLostInService);
    assert_eq!(f.from_service.as_deref(), Some("frontend"));
    assert_eq!(f.to_service.as_deref(), Some("frontend"));
    assert_eq!(f.operation.as_deref(), Some("GET /broken"));
    assert_eq!(f.new_root_operation.as_deref(), Some("GET"));
    assert_eq!(f.example_trace_ids, vec![tid(1)]);
    assert_eq!(f.example_new_trace_ids, vec![tid(2)]);

    // Two lost tasks of one request (a pool of two): both attributed to the request.
    let two = vec![
        vec![s(1, 1, None, SERVER, "GET /broken", 0, 100).on(&a)],
        vec![s(2, 2, None, CLIENT, "GET", 10, 60).on(&a)],
        vec![s(3, 3, None, CLIENT, "GET", 20, 70).on(&a)],
    ];
    let r = analyze_window(&two, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].count, 2);
    assert_eq!(r.findings[0].operation.as_deref(), Some("GET /broken"));
    // A batch job (no entry span) that loses its context in a worker is found too.
    let job = vec![
        vec![s(1, 1, None, INTERNAL, "nightly-export", 0, 100).on(&a)],
        vec![s(2, 2, None, CLIENT, "PUT", 10, 60).on(&a)],
    ];
    let r = analyze_window(&job, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].operation.as_deref(), Some("nightly-export"));
    assert_eq!(r.findings[0].new_root_operation.as_deref(), Some("PUT"));

    // Concurrent requests on one instance are genuine roots: nothing to report.
    let concurrent = vec![
        vec![s(1, 1, None, SERVER, "GET /a", 0, 100).on(&a)],
        vec![s(2, 2, None, SERVER, "GET /b", 10, 60).on(&a)],
    ];
    assert!(analyze_window(&concurrent, &wopts()).findings.is_empty());
    // A root on another instance is not inside anything of this one.
    let other = vec![
        vec![s(1, 1, None, SERVER, "GET /a", 0, 100).on(&a)],
        vec![s(2, 2, None, INTERNAL, "cron", 10, 60).on(&res("frontend", "h9"))],
    ];
    assert!(analyze_window(&other, &wopts()).findings.is_empty());
}

#[test]
fn clock_skew_is_detected_and_adjusted_like_jaeger() {
    let (a, b) = (res("frontend", "h1"), res("cart", "h2"));
    let t = vec![
        s(1, 1, None, SERVER, "GET /", 0, 200).on(&a),
        s(1, 2, Some(1), CLIENT, "GET /cart", 0, 100).on(&a),
        // cart's clock is 50 ms behind.
        s(1, 3, Some(2), SERVER, "GET /cart", -50, 30).on(&b),
        s(1, 4, Some(3), INTERNAL, "work", -40, 20).on(&b),
    ];
    let an = analyze_trace(&t, &TraceOptions::default());
    assert_eq!(an.clock_skew.len(), 1);
    let ev = &an.clock_skew[0];
    assert_eq!(ev.span_id, sid(3));
    assert_eq!(ev.starts_before_parent_nanos, 50 * MS);
    // Centered in the parent: (100 - 80) / 2 = 10 ms after the client start.
    assert_eq!(ev.adjustment_nanos, 60 * MS as i64);
    assert_eq!(an.skew_adjustments.get(&sid(3)), Some(&(60 * MS as i64)));
    assert_eq!(
        an.skew_adjustments.get(&sid(4)),
        Some(&(60 * MS as i64)),
        "subtree shifted"
    );
    assert!(
        an.warnings[&sid(3)][0].starts_with("clock skew: span starts 50.000ms before its parent")
    );
    assert!(!an.warnings.contains_key(&sid(4)));
    let r = analyze_window(&[t], &wopts());
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, FindingKind::ClockSkew);
    assert_eq!(r.findings[0].from_service.as_deref(), Some("frontend"));
    assert_eq!(r.findings[0].to_service.as_deref(), Some("cart"));

    // The same shape on one host is not skew (one clock); within tolerance neither.
    let same_host = vec![
        s(1, 1, None, SERVER, "GET /", 0, 100).on(&a),
        s(1, 2, Some(1), INTERNAL, "detached", 50, 300).on(&a),
    ];
    assert!(analyze_trace(&same_host, &TraceOptions::default())
        .clock_skew
        .is_empty());
    let tiny = vec![
        s(1, 2, None, CLIENT, "GET /cart", 0, 100).on(&a),
        s(1, 3, Some(2), SERVER, "GET /cart", 0, 100).on(&b),
    ];
    assert!(analyze_trace(&tiny, &TraceOptions::default())
        .clock_skew
        .is_empty());
    // A server span ending a little after its client (bookkeeping after the response) is normal.
    let late_end = vec![
        s(1, 2, None, CLIENT, "GET /cart", 0, 100).on(&a),
        s(1, 3, Some(2), SERVER, "GET /cart", 1, 103).on(&b),
    ];
    assert!(analyze_trace(&late_end, &TraceOptions::default())
        .clock_skew
        .is_empty());
    // A server span starting after its client ended: the server's clock is ahead.
    let ahead = vec![
        s(1, 2, None, CLIENT, "GET /cart", 0, 100).on(&a),
        s(1, 3, Some(2), SERVER, "GET /cart", 150, 180).on(&b),
    ];
    let an = analyze_trace(&ahead, &TraceOptions::default());
    assert_eq!(an.clock_skew.len(), 1);
    assert_eq!(an.clock_skew[0].ends_after_parent_nanos, 80 * MS);
    // Centered: 0 + (100 - 30) / 2 = 35 → shift by -115 ms.
    assert_eq!(an.clock_skew[0].adjustment_nanos, -115 * MS as i64);
    assert!(an.warnings[&sid(3)][0].contains("ends 80.000ms after its parent"));
}

#[test]
fn parent_cycles_and_duplicates_do_not_hang() {
    let a = res("a", "h");
    let t = vec![
        s(1, 1, Some(2), INTERNAL, "x", 0, 10).on(&a),
        s(1, 2, Some(1), INTERNAL, "y", 0, 10).on(&a),
        s(1, 3, None, INTERNAL, "z", 0, 10).on(&a),
        s(1, 3, None, INTERNAL, "z2", 0, 10).on(&a),
    ];
    let an = analyze_trace(&t, &TraceOptions::default());
    assert!(an.warnings.values().flatten().any(|w| w.contains("cycle")));
    assert!(an
        .warnings
        .values()
        .flatten()
        .any(|w| w.contains("duplicate")));
    assert!(analyze_trace(&[], &TraceOptions::default())
        .critical_path
        .is_empty());
}

#[test]
fn tracestate_thresholds() {
    assert_eq!(parse_threshold("ot=th:8"), Some(0x80_0000_0000_0000));
    assert_eq!(adjusted_count("ot=th:8"), 2.0);
    assert_eq!(adjusted_count("vendor=x, ot=rv:abcdef01234567;th:c"), 4.0);
    assert_eq!(adjusted_count("ot=th:0"), 1.0);
    assert_eq!(adjusted_count(""), 1.0);
    assert_eq!(adjusted_count("ot=th:xyz"), 1.0);
    assert_eq!(
        adjusted_count("ot=th:123456789abcdef"),
        1.0,
        "15 digits is invalid"
    );
    assert_eq!(
        parse_threshold("ot=th:fffffffffffff"),
        Some(0xff_ffff_ffff_fff0)
    );
}

fn batch(tenant: &str, spans: Vec<FlatSpan>) -> SpanBatch {
    SpanBatch {
        tenant: Tenant::new(tenant).unwrap(),
        resource_spans: spans
            .into_iter()
            .map(|f| ResourceSpans {
                resource: Some((*f.resource).clone()),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![f.span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
        metadata: Default::default(),
    }
}

fn metrics_text(r: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, r).unwrap();
    out
}

#[test]
fn service_graph_pairs_across_batches_and_exports_tempo_names() {
    use std::time::{Duration, Instant};
    let mut reg = prometheus_client::registry::Registry::default();
    let table = Arc::new(EdgeTable::default());
    let g = ServiceGraph::with_config(
        &mut reg,
        ServiceGraphConfig {
            wait: Duration::from_secs(10),
            max_items: 3,
        },
        table.clone(),
    );
    let t = healthy(1);
    let now = Instant::now();
    // Client side first, server side in a later batch; the client is head-sampled at 50 %.
    let mut client = t[1].clone();
    client.span.trace_state = "ot=th:8".into();
    g.observe(&batch("t1", vec![t[0].clone(), client]), now);
    g.observe(&batch("t1", vec![t[2].clone(), t[3].clone()]), now);
    // An unpaired client without a peer name, and one that expires into a virtual node.
    let a = res("frontend", "h1");
    g.observe(
        &batch(
            "t1",
            vec![
                s(5, 1, None, CLIENT, "mystery", 0, 5).on(&a),
                s(6, 1, None, CLIENT, "GET ext", 0, 5)
                    .attrs(vec![kv_str("peer.service", "stripe")])
                    .failed()
                    .on(&a),
            ],
        ),
        now,
    );
    // Map holds 3 at most: this one is dropped.
    g.observe(
        &batch(
            "t1",
            vec![
                s(7, 1, None, CLIENT, "x", 0, 5).on(&a),
                s(8, 1, None, CLIENT, "y", 0, 5).on(&a),
            ],
        ),
        now,
    );
    g.observe(&batch("t1", vec![]), now + Duration::from_secs(11));
    let text = metrics_text(&reg);
    for line in [
        "traces_service_graph_request_total{client=\"frontend\",server=\"cart\",connection_type=\"\"} 2.0",
        "traces_service_graph_request_total{client=\"cart\",server=\"postgresql\",connection_type=\"database\"} 1.0",
        "traces_service_graph_request_total{client=\"frontend\",server=\"stripe\",connection_type=\"virtual_node\"} 1.0",
        "traces_service_graph_request_failed_total{client=\"frontend\",server=\"stripe\",connection_type=\"virtual_node\"} 1.0",
        "traces_service_graph_request_server_seconds_count{client=\"frontend\",server=\"cart\",connection_type=\"\"} 2",
        "traces_service_graph_request_client_seconds_bucket{le=\"0.064\",client=\"frontend\",server=\"cart\",connection_type=\"\"} 2",
        "traces_service_graph_unpaired_spans_total 2",
        "traces_service_graph_dropped_spans_total 1",
        "traces_spanmetrics_calls_total{service=\"frontend\",span_name=\"GET /cart\",span_kind=\"SPAN_KIND_CLIENT\",status_code=\"STATUS_CODE_UNSET\"} 2.0",
        "traces_spanmetrics_latency_count{service=\"cart\",span_name=\"SELECT\",span_kind=\"SPAN_KIND_CLIENT\",status_code=\"STATUS_CODE_UNSET\"} 1",
        "traces_spanmetrics_size_total{service=\"cart\",span_name=\"SELECT\"",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("_total_total"));
    let graph = table.graph("t1", T0 - 3_600_000 * MS, T0 + 3_600_000 * MS);
    let json = serde_json::to_value(&graph).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "nodes": [
                {"id": "cart", "virtual": false},
                {"id": "frontend", "virtual": false},
                {"id": "postgresql", "virtual": true},
                {"id": "stripe", "virtual": true},
            ],
            "edges": [
                {"source": "cart", "target": "postgresql", "requests": 1, "errors": 0},
                {"source": "frontend", "target": "cart", "requests": 2, "errors": 0},
                {"source": "frontend", "target": "stripe", "requests": 1, "errors": 1},
            ]
        })
    );
    assert!(table.graph("other", 0, u64::MAX / 2).edges.is_empty());
    // The same graph from stored traces (weights from the tracestate of the server span: 1).
    let from_traces = graph_from_traces(&[healthy(1)]);
    assert_eq!(from_traces.edges.len(), 2);
    assert_eq!(from_traces.edges[0].target, "postgresql");
}

#[test]
fn weighted_histogram_rounds_cumulatively() {
    let mut reg = prometheus_client::registry::Registry::default();
    let h = WeightedHistogram::default();
    reg.register("h", "h", h.clone());
    h.observe(0.001, 0.4);
    h.observe(0.003, 0.4);
    h.observe(10.0, 1.5);
    let text = metrics_text(&reg);
    assert!(text.contains("h_bucket{le=\"0.002\"} 0"), "{text}");
    assert!(text.contains("h_bucket{le=\"0.004\"} 1"), "{text}");
    assert!(text.contains("h_bucket{le=\"+Inf\"} 2"), "{text}");
    assert!(text.contains("h_count 2"), "{text}");
}

mod http {
    use super::*;
    use clew_model::TraceId;
    use clew_store::{DependencyLink, Operation, SearchQuery, StoreError, TraceHit, TraceReader};
    use std::collections::HashMap;

    struct Mem(HashMap<(String, TraceId), Vec<FlatSpan>>);

    #[async_trait::async_trait]
    impl TraceReader for Mem {
        async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
            Ok(self
                .0
                .get(&(tenant.to_string(), id))
                .cloned()
                .unwrap_or_default())
        }
        async fn search(
            &self,
            tenant: &Tenant,
            q: &SearchQuery,
        ) -> Result<Vec<TraceHit>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|((t, _), spans)| {
                    t == tenant.as_str()
                        && spans.iter().any(|s| {
                            q.start_unix_nano
                                .is_none_or(|x| s.span.start_time_unix_nano >= x)
                                && q.end_unix_nano
                                    .is_none_or(|x| s.span.start_time_unix_nano <= x)
                        })
                })
                .map(|((_, id), s)| TraceHit {
                    trace_id: *id,
                    start_unix_nano: s[0].span.start_time_unix_nano,
                })
                .take(q.effective_limit())
                .collect())
        }
        async fn estimate_trace_count(
            &self,
            tenant: &Tenant,
            start: u64,
            end: u64,
        ) -> Result<u64, StoreError> {
            let q = SearchQuery {
                start_unix_nano: Some(start),
                end_unix_nano: Some(end),
                limit: usize::MAX,
                ..Default::default()
            };
            Ok(self.search(tenant, &q).await?.len() as u64)
        }
        async fn services(&self, _: &Tenant) -> Result<Vec<String>, StoreError> {
            Ok(vec![])
        }
        async fn operations(
            &self,
            _: &Tenant,
            _: Option<&str>,
        ) -> Result<Vec<Operation>, StoreError> {
            Ok(vec![])
        }
        async fn dependencies(
            &self,
            _: &Tenant,
            _: u64,
            _: u64,
        ) -> Result<Vec<DependencyLink>, StoreError> {
            Ok(vec![])
        }
    }

    async fn get(app: &axum::Router, uri: &str, tenant: Option<&str>) -> (u16, serde_json::Value) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(uri);
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn endpoints() {
        let mut m = HashMap::new();
        for t in broken_call(1, 2, 12, vec![])
            .into_iter()
            .chain([healthy(3)])
        {
            let id = TraceId::from_bytes(&t[0].span.trace_id).unwrap();
            m.insert(("acme".to_string(), id), t);
        }
        let app = router_with_graph(
            Arc::new(Mem(m)),
            "X-Scope-OrgID",
            Arc::new(EdgeTable::default()),
        );
        let (start, end) = ((T0 - 60_000 * MS) / 1000, (T0 + 60_000 * MS) / 1000);
        let (st, body) = get(
            &app,
            &format!("/api/doctor/findings?start={start}&end={end}"),
            Some("acme"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["traces_examined"], 3);
        assert_eq!(body["findings"].as_array().unwrap().len(), 1, "{body}");
        let f = &body["findings"][0];
        assert_eq!(f["kind"], "context_lost_between_services");
        assert_eq!(f["from_service"], "frontend");
        assert_eq!(f["to_service"], "cart");
        assert_eq!(f["operation"], "GET /cart");
        assert_eq!(f["count"], 1);
        assert_eq!(f["example_trace_ids"], serde_json::json!([tid(1)]));
        // Other tenant: nothing.
        let (_, body) = get(
            &app,
            &format!("/api/doctor/findings?start={start}&end={end}"),
            None,
        )
        .await;
        assert_eq!(body["traces_examined"], 0);
        let (st, _) = get(&app, "/api/doctor/findings?since=1h", Some("../x")).await;
        assert_eq!(st, 400);
        let (st, body) = get(&app, "/api/doctor/findings?since=forever", Some("acme")).await;
        assert_eq!(st, 400);
        assert!(body["error"].as_str().unwrap().contains("'since'"));

        let (st, body) = get(
            &app,
            &format!("/api/doctor/traces/{}", tid(3)),
            Some("acme"),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(body["span_count"], 4);
        assert_eq!(body["critical_path"][0]["span_id"], sid(1));
        assert_eq!(body["self_time_nanos"][sid(1)], 50 * MS);
        let (st, _) = get(
            &app,
            &format!("/api/doctor/traces/{}", tid(9)),
            Some("acme"),
        )
        .await;
        assert_eq!(st, 404);
        let (st, _) = get(&app, "/api/doctor/traces/xyz", Some("acme")).await;
        assert_eq!(st, 400);

        // The table was never fed: computed from stored traces.
        let (st, body) = get(
            &app,
            &format!("/api/doctor/service-graph?start={start}&end={end}"),
            Some("acme"),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(
            body,
            serde_json::json!({
                "nodes": [
                    {"id": "cart", "virtual": false},
                    {"id": "frontend", "virtual": false},
                    {"id": "postgresql", "virtual": true},
                ],
                "edges": [
                    {"source": "cart", "target": "postgresql", "requests": 1, "errors": 0},
                    {"source": "frontend", "target": "cart", "requests": 2, "errors": 0},
                ]
            })
        );
    }
}

/// A client calls a legacy app (not instrumented) at `legacy:8081`, which calls `orders`
/// without forwarding the context: `orders` starts a new trace inside the client's call.
/// `n` such calls, `gap_ms` apart, each call lasting 40 ms.
fn calls_through_a_legacy_hop(n: u8, gap_ms: i64, overlap: bool) -> Vec<Vec<FlatSpan>> {
    let (web, web2, orders) = (res("web", "h1"), res("web", "h4"), res("orders", "h3"));
    let to_legacy = || {
        vec![
            kv_str("http.request.method", "GET"),
            kv_str("url.full", "http://legacy:8081/orders/7"),
        ]
    };
    let own = || {
        vec![
            kv_str("server.address", "orders"),
            kv_int("server.port", 9000),
        ]
    };
    let mut traces = Vec::new();
    for i in 0..n {
        let t0 = i as i64 * gap_ms;
        let (a, b) = (2 * i + 1, 2 * i + 2);
        traces.push(vec![s(a, 1, None, CLIENT, "GET", t0, t0 + 40)
            .attrs(to_legacy())
            .on(&web)]);
        traces.push(vec![s(
            b,
            2,
            None,
            SERVER,
            "GET /orders/{id}",
            t0 + 10,
            t0 + 30,
        )
        .attrs(own())
        .on(&orders)]);
        if overlap {
            // A second client call at the same time (another instance of web): the new root
            // lies inside two calls, so which one lost the context is unknown.
            traces.push(vec![s(200 + i, 3, None, CLIENT, "GET", t0 + 1, t0 + 39)
                .attrs(to_legacy())
                .on(&web2)]);
        }
    }
    traces
}

#[test]
fn context_lost_at_an_uninstrumented_hop_is_named() {
    let r = analyze_window(&calls_through_a_legacy_hop(3, 1000, false), &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.kind, FindingKind::ContextLostBetweenServices);
    assert_eq!(f.from_service.as_deref(), Some("web"));
    assert_eq!(f.to_service.as_deref(), Some("orders"));
    assert_eq!(f.via.as_deref(), Some("legacy:8081"));
    assert_eq!(f.count, 3);
    assert_eq!(f.example_new_trace_ids.len(), 3);
    assert!(
        f.message.contains("uninstrumented hop legacy:8081"),
        "{}",
        f.message
    );
}

#[test]
fn uninstrumented_hop_tolerates_a_root_that_ends_just_after_the_call() {
    // A server span ends when its handler returns, after its response is on the wire: on a
    // loaded machine the new roots were seen ending ~10 ms after the client calls they answered.
    let mut traces = calls_through_a_legacy_hop(3, 1000, false);
    for t in &mut traces {
        for f in t.iter_mut().filter(|f| f.service_name() == "orders") {
            f.span.end_time_unix_nano += 20 * MS; // t0 + 50: 10 ms after the call's end
        }
    }
    let r = analyze_window(&traces, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].count, 3);
    assert_eq!(r.findings[0].via.as_deref(), Some("legacy:8081"));
}

#[test]
fn uninstrumented_hop_back_to_back_calls_each_hold_their_own_root() {
    // Calls 3 ms apart whose roots start 2 ms into the call (as CI saw): the next call's root
    // must not also count as inside the previous call.
    let mut traces = calls_through_a_legacy_hop(3, 43, false);
    for t in &mut traces {
        for f in t.iter_mut().filter(|f| f.service_name() == "orders") {
            f.span.start_time_unix_nano -= 8 * MS; // t0 + 2
            f.span.end_time_unix_nano += 10 * MS; // t0 + 40
        }
    }
    let r = analyze_window(&traces, &wopts());
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].count, 3);
}

#[test]
fn uninstrumented_hop_needs_repeated_unambiguous_evidence() {
    // Seen once: a coincidence in time is not evidence.
    let r = analyze_window(&calls_through_a_legacy_hop(1, 1000, false), &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // Two calls in flight whenever a new root starts: which one lost the context is unknown.
    let r = analyze_window(&calls_through_a_legacy_hop(3, 1000, true), &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // The new root outlives the call: it was not made on the call's behalf.
    let mut traces = calls_through_a_legacy_hop(3, 1000, false);
    for t in &mut traces {
        for f in t.iter_mut().filter(|f| f.service_name() == "orders") {
            f.span.end_time_unix_nano += 100 * MS;
        }
    }
    let r = analyze_window(&traces, &wopts());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // The address the client called is an instrumented server's: not a hop (and that server's
    // own lost context is the address match's job).
    let mut traces = calls_through_a_legacy_hop(3, 1000, false);
    let legacy = res("legacy", "h2");
    traces.push(vec![s(250, 9, None, SERVER, "GET /health", 5000, 5001)
        .attrs(vec![
            kv_str("server.address", "legacy"),
            kv_int("server.port", 8081),
        ])
        .on(&legacy)]);
    let r = analyze_window(&traces, &wopts());
    assert!(
        r.findings.iter().all(|f| f.via.is_none()),
        "{:#?}",
        r.findings
    );
}
