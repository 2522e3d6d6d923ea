//! Tail sampler behaviour with simulated time: every policy type, late and out-of-order spans,
//! huge traces, the memory bound, decision caches, shutdown flushing, partition handoff and config
//! errors.

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::{SinkError, SpanBatch, SpanSink, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_sampling::tail::{partition_of, Reason, POLICY_ATTRIBUTE};
use clew_sampling::{TailCore, TailSampler, TailSamplingConfig};
use std::sync::{Arc, Mutex};

fn cfg(yaml: &str) -> TailSamplingConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn core(yaml: &str) -> TailCore {
    TailCore::new("tail_sampling", cfg(yaml)).unwrap()
}

fn tid(n: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    t[8..].copy_from_slice(
        &(n ^ 0x5555_aaaa_1234_5678)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .to_be_bytes(),
    );
    t
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct S {
    trace: u64,
    id: u8,
    parent: Option<u8>,
    name: &'static str,
    dur_ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
    trace_state: &'static str,
}

fn span(s: &S) -> Span {
    Span {
        trace_id: tid(s.trace).to_vec(),
        span_id: vec![s.id.max(1); 8],
        parent_span_id: s.parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: s.name.into(),
        trace_state: s.trace_state.into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + s.dur_ms * 1_000_000,
        attributes: s.attrs.clone(),
        status: s.error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn batch_of(service: &str, spans: &[S]) -> SpanBatch {
    batch_tenant("single-tenant", service, spans)
}

fn batch_tenant(tenant: &str, service: &str, spans: &[S]) -> SpanBatch {
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans.iter().map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

fn root(trace: u64) -> S {
    S {
        trace,
        id: 1,
        name: "GET /",
        dur_ms: 10,
        ..Default::default()
    }
}

fn child(trace: u64, id: u8) -> S {
    S {
        trace,
        id,
        parent: Some(1),
        name: "db",
        dur_ms: 2,
        ..Default::default()
    }
}

fn kept_ids(batches: &[SpanBatch]) -> Vec<u64> {
    let mut out = Vec::new();
    for b in batches {
        for rs in &b.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    for n in 0..10_000u64 {
                        if s.trace_id == tid(n) && !out.contains(&n) {
                            out.push(n);
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn spans_of(batches: &[SpanBatch]) -> Vec<Span> {
    batches
        .iter()
        .flat_map(|b| b.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

fn policy_of(s: &Span) -> String {
    s.attributes
        .iter()
        .find(|kv| kv.key == POLICY_ATTRIBUTE)
        .and_then(|kv| kv.value.as_ref())
        .map(clew_model::attrs::to_text)
        .unwrap_or_default()
}

/// Feeds traces (one batch each), waits out decision_wait, returns the kept trace numbers.
fn run(c: &TailCore, batches: Vec<SpanBatch>) -> Vec<u64> {
    for b in &batches {
        assert!(c.ingest(b, 0).released.is_empty());
    }
    let mut out = Vec::new();
    for s in 0..c.num_shards() {
        out.extend(c.tick(s, 60_000));
    }
    kept_ids(&out)
}

const WAIT: &str = "decision_wait: 10s\nroot_send_delay: 0s\nnum_shards: 3\n";

#[test]
fn latency_status_and_span_count_policies() {
    let c = core(&format!(
        "{WAIT}policies:
  - {{name: slow, type: latency, latency: {{threshold_ms: 500}}}}
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: big, type: span_count, span_count: {{min_spans: 3, max_spans: 4}}}}
  - {{name: band, type: latency, latency: {{threshold_ms: 100, upper_threshold_ms: 200}}}}"
    ));
    let kept = run(
        &c,
        vec![
            batch_of(
                "a",
                &[S {
                    dur_ms: 900,
                    ..root(1)
                }],
            ),
            batch_of(
                "a",
                &[
                    root(2),
                    S {
                        error: true,
                        ..child(2, 2)
                    },
                ],
            ),
            batch_of("a", &[root(3), child(3, 2), child(3, 3)]),
            batch_of(
                "a",
                &[root(4), child(4, 2), child(4, 3), child(4, 4), child(4, 5)],
            ),
            batch_of(
                "a",
                &[S {
                    dur_ms: 150,
                    ..root(5)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    dur_ms: 250,
                    ..root(6)
                }],
            ),
            batch_of("a", &[root(7)]),
        ],
    );
    assert_eq!(kept, vec![1, 2, 3, 5]);
    assert_eq!(c.metrics.traces("tail_sampling", "errors", "kept"), 1);
    assert_eq!(c.metrics.traces("tail_sampling", "", "dropped"), 3);
}

#[test]
fn attribute_policies_with_regex_and_invert() {
    let s = |t: u64, a: KeyValue| S {
        attrs: vec![a],
        ..root(t)
    };
    let c = core(&format!(
        "{WAIT}policies:
  - {{name: route, type: string_attribute, string_attribute: {{key: http.route, values: ['/api/.*'], enabled_regex_matching: true}}}}
  - {{name: not-internal, type: string_attribute, string_attribute: {{key: tier, values: [internal], invert_match: true}}}}
  - {{name: code, type: numeric_attribute, numeric_attribute: {{key: http.status_code, min_value: 500, max_value: 599}}}}
  - {{name: flag, type: boolean_attribute, boolean_attribute: {{key: debug, value: true}}}}"
    ));
    let internal = || kv("tier", Value::StringValue("internal".into()));
    let kept = run(
        &c,
        vec![
            batch_of(
                "a",
                &[
                    s(1, kv("http.route", Value::StringValue("/api/users".into()))),
                    S {
                        attrs: vec![internal()],
                        ..child(1, 2)
                    },
                ],
            ),
            batch_of("a", &[s(2, internal())]),
            batch_of("a", &[s(3, kv("tier", Value::StringValue("edge".into())))]),
            batch_of(
                "a",
                &[S {
                    attrs: vec![internal(), kv("http.status_code", Value::IntValue(503))],
                    ..root(4)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    attrs: vec![internal(), kv("http.status_code", Value::IntValue(404))],
                    ..root(5)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    attrs: vec![internal(), kv("debug", Value::BoolValue(true))],
                    ..root(6)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    attrs: vec![internal(), kv("debug", Value::BoolValue(false))],
                    ..root(7)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    attrs: vec![
                        internal(),
                        kv("http.route", Value::StringValue("/health".into())),
                    ],
                    ..root(8)
                }],
            ),
        ],
    );
    assert_eq!(kept, vec![1, 3, 4, 6]);
}

#[test]
fn trace_state_probabilistic_and_always_sample() {
    let c = core(&format!(
        "{WAIT}policies:
  - {{name: vip, type: trace_state, trace_state: {{key: vendor, values: [vip]}}}}"
    ));
    let kept = run(
        &c,
        vec![
            batch_of(
                "a",
                &[S {
                    trace_state: "ot=th:0,vendor=vip",
                    ..root(1)
                }],
            ),
            batch_of(
                "a",
                &[S {
                    trace_state: "vendor=std",
                    ..root(2)
                }],
            ),
        ],
    );
    assert_eq!(kept, vec![1]);

    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: 20}}}}"
    ));
    let kept = run(&c, (0..2000).map(|i| batch_of("a", &[root(i)])).collect());
    assert!((300..500).contains(&kept.len()), "{}", kept.len());
    // Consistent with head sampling: same randomness → the same traces at the same rate.
    let c2 = core(&format!(
        "{WAIT}policies:\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: 20}}}}"
    ));
    assert_eq!(
        kept,
        run(&c2, (0..2000).map(|i| batch_of("a", &[root(i)])).collect())
    );
    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: 20, hash_salt: x}}}}"
    ));
    let salted = run(&c, (0..2000).map(|i| batch_of("a", &[root(i)])).collect());
    assert!((300..500).contains(&salted.len()), "{}", salted.len());
    assert_ne!(salted, kept);

    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: all, type: always_sample}}"
    ));
    assert_eq!(
        run(&c, (0..5).map(|i| batch_of("a", &[root(i)])).collect()),
        vec![0, 1, 2, 3, 4]
    );

    // Kept by a consistent probabilistic policy: spans carry th so adjusted counts stay right;
    // kept by another policy: th untouched (an existing th is never lowered).
    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: e, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: 20}}}}"
    ));
    for i in 0..200 {
        c.ingest(
            &batch_of(
                "a",
                &[S {
                    error: i == 0,
                    trace_state: "ot=th:4",
                    ..root(i)
                }],
            ),
            0,
        );
    }
    let out: Vec<SpanBatch> = (0..c.num_shards())
        .flat_map(|s| c.tick(s, 60_000))
        .collect();
    let want = clew_sampling::consistent::threshold_for_probability(0.2);
    let spans = spans_of(&out);
    assert!(spans.len() > 20, "{}", spans.len());
    for sp in spans {
        let th = clew_sampling::consistent::parse_ot(&sp.trace_state).th;
        if policy_of(&sp) == "e" {
            assert_eq!(th, Some(1 << 54), "errors keep the incoming th:4");
        } else {
            assert_eq!(th, Some(want));
        }
    }
}

#[test]
fn and_not_drop_and_tenant_policies() {
    let c = core(&format!(
        "{WAIT}policies:
  - name: acme-errors
    type: and
    and:
      and_sub_policy:
        - {{name: t, type: tenant, tenant: {{tenants: [acme]}}}}
        - {{name: e, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - name: not-health
    type: not
    not:
      not_sub_policy: {{name: h, type: string_attribute, string_attribute: {{key: http.route, values: [/health]}}}}
  - name: no-synthetic
    type: drop
    drop:
      drop_sub_policy:
        - {{name: s, type: boolean_attribute, boolean_attribute: {{key: synthetic, value: true}}}}"
    ));
    let health = || vec![kv("http.route", Value::StringValue("/health".into()))];
    let b = |tenant: &str, s: S| batch_tenant(tenant, "a", &[s]);
    let kept = run(
        &c,
        vec![
            b(
                "acme",
                S {
                    error: true,
                    attrs: health(),
                    ..root(1)
                },
            ),
            b(
                "other",
                S {
                    error: true,
                    attrs: health(),
                    ..root(2)
                },
            ),
            b(
                "other",
                S {
                    attrs: health(),
                    ..root(3)
                },
            ),
            b("other", root(4)),
            b(
                "acme",
                S {
                    error: true,
                    attrs: vec![kv("synthetic", Value::BoolValue(true))],
                    ..root(5)
                },
            ),
        ],
    );
    assert_eq!(kept, vec![1, 4]);
}

#[test]
fn rate_limiting_bytes_limiting_and_composite_allocation() {
    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: rl, type: rate_limiting, rate_limiting: {{spans_per_second: 10}}}}"
    ));
    // 8 traces of 3 spans: only 3 fit in 10 spans/s (all decided in the same second).
    let kept = run(
        &c,
        (0..8)
            .map(|i| batch_of("a", &[root(i), child(i, 2), child(i, 3)]))
            .collect(),
    );
    assert_eq!(kept.len(), 3);

    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: bl, type: bytes_limiting, bytes_limiting: {{bytes_per_second: 1000, burst_capacity: 1000}}}}"
    ));
    let kept = run(&c, (0..50).map(|i| batch_of("a", &[root(i)])).collect());
    assert!(!kept.is_empty() && kept.len() < 50, "{}", kept.len());

    let c = core(&format!(
        "{WAIT}policies:
  - name: comp
    type: composite
    composite:
      max_total_spans_per_second: 10
      policy_order: [errors, rest]
      composite_sub_policy:
        - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
        - {{name: rest, type: always_sample}}
      rate_allocation:
        - {{policy: errors, percent: 60}}
        - {{policy: rest, percent: 40}}"
    ));
    let mut batches: Vec<SpanBatch> = (0..10)
        .map(|i| {
            batch_of(
                "a",
                &[S {
                    error: true,
                    ..root(i)
                }],
            )
        })
        .collect();
    batches.extend((10..20).map(|i| batch_of("a", &[root(i)])));
    let kept = run(&c, batches);
    // 10 spans/s in total: 6 for errors, 4 for the rest (errors over their share fall through
    // to `rest`).
    assert_eq!(kept.len(), 10, "{kept:?}");
    assert!(kept.iter().filter(|i| **i < 10).count() >= 6, "{kept:?}");
    assert_eq!(c.metrics.traces("tail_sampling", "comp/errors", "kept"), 6);
    assert_eq!(c.metrics.traces("tail_sampling", "comp/rest", "kept"), 4);
}

#[test]
fn dynamic_keeps_rare_keys_and_samples_frequent_ones() {
    let c = core(&format!(
        "{WAIT}policies:
  - name: dyn
    type: dynamic
    dynamic: {{key_fields: [service.name, http.route], goal_sample_rate: 10, adjustment_interval_secs: 1}}"
    ));
    let route = |r: &str| vec![kv("http.route", Value::StringValue(r.into()))];
    let mut t = 0u64;
    let mut kept_hot = 0;
    let mut kept_rare = 0;
    for round in 0..4u64 {
        let now = round * 20_000;
        for _ in 0..1000 {
            t += 1;
            c.ingest(
                &batch_of(
                    "api",
                    &[S {
                        attrs: route("/hot"),
                        ..root(t)
                    }],
                ),
                now,
            );
        }
        let rare_start = t;
        for _ in 0..5 {
            t += 1;
            c.ingest(
                &batch_of(
                    "api",
                    &[S {
                        attrs: route("/rare"),
                        ..root(t)
                    }],
                ),
                now,
            );
        }
        let mut out = Vec::new();
        for s in 0..c.num_shards() {
            out.extend(c.tick(s, now + 15_000));
        }
        if round >= 2 {
            let ids = kept_ids(&out);
            kept_rare += ids.iter().filter(|i| **i > rare_start).count();
            kept_hot += ids.iter().filter(|i| **i <= rare_start).count();
        }
    }
    assert_eq!(kept_rare, 10, "rare keys kept whole");
    // Goal: 1005/10 ≈ 100 kept per round, 95 of them hot.
    assert!((120..280).contains(&kept_hot), "{kept_hot}");
}

#[test]
fn out_of_order_and_late_spans_follow_the_decision() {
    let c = core(
        "decision_wait: 10s\nroot_send_delay: 1s\nnum_shards: 2\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    );
    // Children before the root; error on a child.
    c.ingest(
        &batch_of(
            "b",
            &[S {
                error: true,
                ..child(1, 2)
            }],
        ),
        0,
    );
    c.ingest(&batch_of("b", &[child(2, 2)]), 0);
    let mut out: Vec<SpanBatch> = (0..2).flat_map(|s| c.tick(s, 500)).collect();
    assert!(out.is_empty(), "not due yet");
    c.ingest(&batch_of("a", &[root(1)]), 600);
    c.ingest(&batch_of("a", &[root(2)]), 600);
    // Early decision: root + 1 s send delay, well before decision_wait.
    out.extend((0..2).flat_map(|s| c.tick(s, 1_700)));
    assert_eq!(kept_ids(&out), vec![1]);
    assert_eq!(spans_of(&out).len(), 2);
    assert!(spans_of(&out).iter().all(|s| policy_of(s) == "errors"));
    assert_eq!(c.metrics.decided_by("tail_sampling", Reason::RootSpan), 2);
    assert_eq!(c.buffered_traces(), 0);

    // Late spans: kept trace → forwarded at once with the policy; dropped trace → dropped.
    let late = c.ingest(&batch_of("c", &[child(1, 7), child(2, 7)]), 60_000);
    assert!(late.released.is_empty());
    assert_eq!(late.forward_now.len(), 1);
    let s = &late.forward_now[0].scope_spans[0].spans;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].trace_id, tid(1).to_vec());
    assert_eq!(policy_of(&s[0]), "errors");
    assert_eq!(c.buffered_traces(), 0, "late spans are not buffered again");
    assert_eq!(c.metrics.late_spans("tail_sampling", "kept"), 1);
    assert_eq!(c.metrics.late_spans("tail_sampling", "dropped"), 1);
}

#[test]
fn huge_trace_is_decided_at_once_and_does_not_stall_others() {
    let c = core(&format!(
        "{WAIT}max_spans_per_trace: 100\npolicies:\n  - {{name: all, type: always_sample}}"
    ));
    c.ingest(&batch_of("a", &[root(2)]), 0);
    let spans: Vec<S> = (0..150)
        .map(|i| S {
            id: (i % 250 + 2) as u8,
            ..child(1, 2)
        })
        .collect();
    let ing = c.ingest(&batch_of("a", &spans), 0);
    assert_eq!(kept_ids(&ing.released), vec![1]);
    assert_eq!(spans_of(&ing.released).len(), 150);
    assert_eq!(c.metrics.decided_by("tail_sampling", Reason::SpanLimit), 1);
    assert_eq!(
        c.buffered_traces(),
        1,
        "the small trace still waits for its decision"
    );
    // More spans of the huge trace follow the decision immediately.
    let more = c.ingest(&batch_of("a", &spans[..10]), 1);
    assert_eq!(more.forward_now[0].scope_spans[0].spans.len(), 10);
    assert_eq!(run(&c, vec![]), vec![2]);
}

#[test]
fn memory_bound_decides_oldest_early_never_drops_undecided() {
    let c = core(
        "decision_wait: 60s\nroot_send_delay: 0s\nnum_shards: 2\nmax_buffered_mib: 1\npolicies:\n  - {name: all, type: always_sample}",
    );
    let pad = || vec![kv("payload", Value::StringValue("x".repeat(2000)))];
    let mut released = Vec::new();
    for i in 0..2000u64 {
        let ing = c.ingest(
            &batch_of(
                "a",
                &[S {
                    attrs: pad(),
                    ..root(i)
                }],
            ),
            i,
        );
        released.extend(ing.released);
    }
    assert!(c.buffered_bytes() <= 1 << 20, "{}", c.buffered_bytes());
    let early = c.metrics.decided_by("tail_sampling", Reason::MemoryLimit);
    assert!(early > 1000, "{early}");
    let mut all = kept_ids(&released);
    assert_eq!(all.len() as u64, early);
    assert!(all.contains(&0), "the oldest went first");
    // Everything else is decided at shutdown: nothing lost.
    all.extend(kept_ids(&c.drain_all(100_000)));
    all.sort();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
    assert_eq!(
        c.buffered_bytes(),
        0,
        "span bytes and shared resources all released"
    );

    let c = core(&format!(
        "{WAIT}num_traces: 10\npolicies:\n  - {{name: all, type: always_sample}}"
    ));
    let mut released = Vec::new();
    for i in 0..30u64 {
        released.extend(c.ingest(&batch_of("a", &[root(i)]), i).released);
    }
    assert!(c.buffered_traces() <= 12, "{}", c.buffered_traces());
    assert!(c.metrics.decided_by("tail_sampling", Reason::TraceLimit) >= 18);
}

#[test]
fn kept_traces_round_trip_resources_scopes_and_spans() {
    let c = core(&format!(
        "{WAIT}policies:\n  - {{name: all, type: always_sample}}"
    ));
    let mut b1 = batch_of("frontend", &[root(1), root(2)]);
    b1.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
    b1.resource_spans[0].scope_spans[0].scope =
        Some(clew_model::otlp::common::InstrumentationScope {
            name: "http".into(),
            version: "1.0".into(),
            ..Default::default()
        });
    b1.resource_spans[0].scope_spans.push(ScopeSpans {
        spans: vec![span(&child(1, 3))],
        schema_url: "s".into(),
        ..Default::default()
    });
    let b2 = batch_of("db", &[child(1, 2)]);
    c.ingest(&b1, 0);
    c.ingest(&b2, 5);
    let out: Vec<SpanBatch> = (0..c.num_shards())
        .flat_map(|s| c.tick(s, 60_000))
        .collect();
    let t1: Vec<&ResourceSpans> = out
        .iter()
        .flat_map(|b| b.resource_spans.iter())
        .filter(|rs| rs.scope_spans[0].spans[0].trace_id == tid(1))
        .collect();
    assert_eq!(t1.len(), 2, "one per resource");
    assert_eq!(t1[0].resource, b1.resource_spans[0].resource);
    assert_eq!(t1[0].schema_url, b1.resource_spans[0].schema_url);
    assert_eq!(t1[0].scope_spans.len(), 2);
    assert_eq!(
        t1[0].scope_spans[0].scope,
        b1.resource_spans[0].scope_spans[0].scope
    );
    assert_eq!(t1[0].scope_spans[1].schema_url, "s");
    let mut got = t1[0].scope_spans[0].spans[0].clone();
    got.attributes.retain(|kv| kv.key != POLICY_ATTRIBUTE);
    assert_eq!(got, b1.resource_spans[0].scope_spans[0].spans[0]);
    assert_eq!(t1[1].resource, b2.resource_spans[0].resource);
    assert_eq!(c.buffered_bytes(), 0);
}

#[test]
fn decision_caches_remember_dropped_and_kept_traces() {
    let c = core(&format!(
        "{WAIT}decision_cache: {{sampled_cache_size: 1000, non_sampled_cache_size: 100000}}\npolicies:\n  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}"
    ));
    let batches: Vec<SpanBatch> = (0..500)
        .map(|i| {
            batch_of(
                "a",
                &[S {
                    error: i % 5 == 0,
                    ..root(i)
                }],
            )
        })
        .collect();
    let kept = run(&c, batches);
    assert_eq!(kept.len(), 100);
    // Late children of every trace arrive after the decision.
    let mut forwarded = Vec::new();
    for i in 0..500 {
        let ing = c.ingest(&batch_of("a", &[child(i, 9)]), 70_000);
        forwarded.extend(
            ing.forward_now
                .into_iter()
                .map(|rs| SpanBatch::new(Tenant::default(), vec![rs])),
        );
    }
    assert_eq!(
        kept_ids(&forwarded),
        kept,
        "late spans follow the original decision"
    );
    assert_eq!(
        c.buffered_traces(),
        0,
        "dropped traces' late spans are not buffered again"
    );
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
async fn processor_forwards_after_decision_and_flushes_everything_on_shutdown() {
    let sink = Arc::new(Collect::default());
    let core = TailCore::new(
        "tail_sampling/errors",
        cfg("decision_wait: 300ms\nroot_send_delay: 0s\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}"),
    )
    .unwrap();
    let p = TailSampler::start(core, sink.clone());
    assert!(matches!(
        p.process(batch_of(
            "a",
            &[S {
                error: true,
                ..root(1)
            }]
        ))
        .unwrap(),
        ProcessOutcome::Consumed
    ));
    p.process(batch_of("a", &[root(2)])).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(
        kept_ids(&sink.0.lock().unwrap()),
        vec![1],
        "decided by the shard task"
    );

    // A long decision_wait: shutdown decides and forwards every buffered trace at once.
    let sink = Arc::new(Collect::default());
    let core = TailCore::new(
        "t",
        cfg("decision_wait: 1h\npolicies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}"),
    )
    .unwrap();
    let p = TailSampler::start(core, sink.clone());
    for i in 0..100 {
        p.process(batch_of(
            "a",
            &[S {
                error: i % 2 == 0,
                ..root(i)
            }],
        ))
        .unwrap();
    }
    assert!(sink.0.lock().unwrap().is_empty());
    p.shutdown().await.unwrap();
    assert_eq!(kept_ids(&sink.0.lock().unwrap()).len(), 50);
    assert_eq!(p.core().buffered_traces(), 0);
    assert!(matches!(
        p.process(batch_of("a", &[root(500)])),
        Err(SinkError::ShuttingDown)
    ));
}

/// Refuses the first `n` batches as overloaded, then accepts.
struct Flaky(Mutex<u32>, Collect);
#[async_trait::async_trait]
impl SpanSink for Flaky {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        {
            let mut n = self.0.lock().unwrap();
            if *n > 0 {
                *n -= 1;
                return Err(SinkError::Overloaded {
                    retry_after: std::time::Duration::from_millis(10),
                    reason: "head full".into(),
                });
            }
        }
        self.1.consume(batch).await
    }
}

#[tokio::test]
async fn store_backpressure_is_retried_not_dropped() {
    let sink = Arc::new(Flaky(Mutex::new(2), Collect::default()));
    let core = TailCore::new(
        "t",
        cfg("decision_wait: 1h\npolicies:\n  - {name: all, type: always_sample}"),
    )
    .unwrap();
    let p = TailSampler::start(core, sink.clone());
    p.process(batch_of("a", &[root(1), child(1, 2)])).unwrap();
    p.shutdown().await.unwrap();
    assert_eq!(spans_of(&sink.1 .0.lock().unwrap()).len(), 2);
    assert_eq!(p.core().metrics.forward_failures.get(), 2);
}

#[test]
fn partition_handoff_moves_buffer_and_caches() {
    let policy =
        "policies:\n  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}";
    let a = core(&format!(
        "decision_wait: 10s\nroot_send_delay: 0s\nnum_shards: 4\n{policy}"
    ));
    let b = core(&format!(
        "decision_wait: 10s\nroot_send_delay: 0s\nnum_shards: 3\n{policy}"
    ));
    // Decided traces (caches) and buffered ones, spread over partitions.
    for i in 0..400u64 {
        a.ingest(
            &batch_of(
                "a",
                &[S {
                    error: i % 2 == 0,
                    ..root(i)
                }],
            ),
            0,
        );
    }
    for s in 0..4 {
        a.tick(s, 20_000);
    }
    for i in 400..800u64 {
        a.ingest(
            &batch_of(
                "a",
                &[S {
                    error: i % 2 == 0,
                    ..root(i)
                }],
            ),
            15_000,
        );
    }
    let key = |i: u64| clew_sampling::cache::TraceKey::new(&tid(i), "single-tenant");
    let part = partition_of(&key(401));
    let in_part: Vec<u64> = (0..800)
        .filter(|i| partition_of(&key(*i)) == part)
        .collect();
    let state = a.export_partition(part, 16_000);
    let bytes = state.to_json();
    let state = clew_sampling::PartitionState::from_json(&bytes).unwrap();
    assert_eq!(
        state.buffered.len(),
        in_part.iter().filter(|i| **i >= 400).count()
    );
    assert!(state.buffered.iter().all(|t| t.age_ms == 1_000));
    assert!(b.import_partition(state, 100_000).unwrap().is_empty());
    // The source no longer has them; the target decides them when their wait is over.
    assert!((0..4)
        .flat_map(|s| a.tick(s, 100_000))
        .all(|x| kept_ids(&[x]).iter().all(|i| !in_part.contains(i))));
    let early: Vec<SpanBatch> = (0..3).flat_map(|s| b.tick(s, 100_000 + 8_000)).collect();
    assert!(early.is_empty(), "9 s of the 10 s wait were left");
    let decided: Vec<SpanBatch> = (0..3).flat_map(|s| b.tick(s, 100_000 + 9_500)).collect();
    let want: Vec<u64> = in_part
        .iter()
        .copied()
        .filter(|i| *i >= 400 && i % 2 == 0)
        .collect();
    assert_eq!(kept_ids(&decided), want);
    // Late spans of traces decided on the old owner follow the old decision on the new one.
    for i in in_part.iter().copied().filter(|i| *i < 400) {
        let ing = b.ingest(&batch_of("a", &[child(i, 5)]), 200_000);
        assert_eq!(!ing.forward_now.is_empty(), i % 2 == 0, "trace {i}");
    }
    assert_eq!(b.buffered_traces(), 0);
}

#[test]
fn config_errors_name_the_key_and_fix() {
    let e = |y: &str| TailCore::new("t", cfg(y)).err().unwrap();
    let (k, m) = e("policies:\n  - {name: a, type: always_sample}\n  - {name: b, type: always_sample}\n  - {name: c, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}");
    assert_eq!(k, "policies[2].latency.upper_threshold_ms");
    assert!(m.contains("fix:"), "{m}");
    let (k, _) = e("policies:\n  - {name: a, type: latensy}");
    assert_eq!(k, "policies[0].type");
    let (k, m) = e("policies:\n  - {name: a, type: latency, status_code: {status_codes: [ERROR]}}");
    assert_eq!(k, "policies[0].status_code");
    assert!(m.contains("does not match"), "{m}");
    let (k, _) = e("policies:\n  - {name: a, type: string_attribute, string_attribute: {key: k, values: ['(('], enabled_regex_matching: true}}");
    assert_eq!(k, "policies[0].string_attribute.values[0]");
    let (k, _) = e("policies: []");
    assert_eq!(k, "policies");
    let (k, _) =
        e("policies:\n  - {name: a, type: always_sample}\n  - {name: a, type: always_sample}");
    assert_eq!(k, "policies[1].name");
    let (k, _) = e("policies:\n  - {name: a, type: and, and: {and_sub_policy: [{name: x, type: status_code, status_code: {status_codes: [BAD]}}]}}");
    assert_eq!(
        k,
        "policies[0].and.and_sub_policy[0].status_code.status_codes[0]"
    );
    let (k, _) = e("policies:\n  - {name: c, type: composite, composite: {max_total_spans_per_second: 10, composite_sub_policy: [{name: x, type: always_sample}], rate_allocation: [{policy: y, percent: 10}]}}");
    assert_eq!(k, "policies[0].composite.rate_allocation[0].policy");
    let (k, _) =
        e("policies:\n  - {name: d, type: dynamic, dynamic: {key_fields: [service.name]}}");
    assert_eq!(k, "policies[0].dynamic.goal_sample_rate");
}
