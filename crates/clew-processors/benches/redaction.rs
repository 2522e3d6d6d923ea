//! Cost of the `redaction` processor per span: a realistic server span (20 attributes, a few PII
//! values, a SQL statement) in batches of 100, with the full rule set, with a Collector-style
//! minimal rule set, and with a no-op processor; plus protobuf decoding of the same batch as a
//! yardstick for the ingest path's own cost per span.
//!
//! `cargo bench -p clew-processors --bench redaction` (`REDACTION_BENCH_PARTS=1` adds one row per
//! kind of rule). For profilers: `REDACTION_BENCH_ITERS=N` runs N batches through each rule set
//! whose name contains `REDACTION_BENCH_ONLY` (default: all) and exits without criterion, so
//! `perf stat -e instructions:u` or `valgrind --tool=callgrind` count a fixed amount of work.

use clew_model::attrs::{kv, kv_int, kv_str};
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::any_value::Value;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use clew_model::{SinkError, SpanBatch, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_processors::redaction::{HashKey, Redaction, RedactionConfig, RedactionMetrics};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use std::hint::black_box;

const SPANS: usize = 100;

fn span(i: usize) -> Span {
    // Every 5th span carries PII (e-mail, card, bearer JWT, client IP); the rest are clean.
    let pii = i.is_multiple_of(5);
    let mut attrs = vec![
        kv_str("http.request.method", "GET"),
        kv_str("http.route", "/api/v1/orders/{id}"),
        kv_str("url.full", format!("https://shop.example.com/api/v1/orders/{}?ref=newsletter", 10_000 + i)),
        kv_int("http.response.status_code", 200),
        kv_str("server.address", "shop.example.com"),
        kv_int("server.port", 443),
        kv_str("network.protocol.version", "1.1"),
        kv_str("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
        kv_str("db.system", "postgresql"),
        kv_str("db.statement", format!("SELECT id, total, status FROM orders WHERE customer_id = {} AND status IN ('open', 'paid') LIMIT 50", 4000 + i)),
        kv_str("thread.name", "tokio-runtime-worker"),
        kv_str("code.function", "orders::handlers::get_order"),
        kv_str("code.filepath", "src/handlers/orders.rs"),
        kv_str("order.id", format!("ORD-2024-{:06}", i)),
        kv_str("session.id", "123e4567-e89b-12d3-a456-426614174000"),
        kv("feature.new_checkout", Value::BoolValue(true)),
        kv_int("retry.count", 0),
    ];
    if pii {
        attrs.push(kv_str("enduser.id", "jane.doe@example.com"));
        attrs.push(kv_str("payment.note", "paid with 4111 1111 1111 1111"));
        attrs.push(kv_str("http.request.header.authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"));
        attrs.push(kv_str("client.address", "203.0.113.42"));
    } else {
        attrs.push(kv_str("enduser.role", "customer"));
        attrs.push(kv_str("app.cache", "hit"));
        attrs.push(kv_str("deployment.slot", "blue"));
    }
    Span {
        trace_id: vec![1; 16],
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: "GET /api/v1/orders/{id}".into(),
        attributes: attrs,
        ..Default::default()
    }
}

fn batch() -> SpanBatch {
    SpanBatch::new(
        Tenant::default(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "orders"),
                    kv_str("service.version", "2.4.1"),
                    kv_str("host.name", "orders-7c9f"),
                    kv_str("k8s.pod.ip", "10.42.3.17"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..SPANS).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

const FULL: &str = "
allow_all_keys: true
ignored_keys: [http.route, service.name]
blocked_key_patterns: ['(?i)password|passwd|secret|api[_.-]?key|cookie']
patterns:
  - {name: email, action: hash}
  - credit_card
  - iban
  - phone
  - ipv4
  - ipv6
  - jwt
  - bearer_token
  - aws_access_key
  - gcp_api_key
  - github_token
  - slack_token
  - stripe_key
  - private_key
  - url_password
custom_patterns:
  - {name: customer_ref, regex: 'CUST-[0-9]{8}', action: hash}
sql: true
span_names: true
summary: info
";

const COLLECTOR_STYLE: &str = "
allow_all_keys: true
blocked_values: ['4[0-9]{12}(?:[0-9]{3})?', '(5[1-5][0-9]{14})']
summary: info
";

struct Noop;
impl Processor for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        Ok(ProcessOutcome::Forward(batch))
    }
}

fn processor(yaml: &str) -> Redaction {
    let cfg: RedactionConfig = serde_yaml::from_str(yaml).expect("config");
    let key = HashKey::new("k1", b"0123456789abcdef0123456789abcdef").expect("key");
    Redaction::with_hash_keys(
        "redaction/bench".into(),
        cfg,
        &RedactionMetrics::default(),
        vec![key],
    )
    .expect("valid")
}

/// Every rule set measured, by name.
fn rule_sets() -> Vec<(&'static str, Box<dyn Processor>)> {
    let mut v: Vec<(&'static str, Box<dyn Processor>)> = vec![
        ("no_processor", Box::new(Noop)),
        (
            "collector_style_card_regexes",
            Box::new(processor(COLLECTOR_STYLE)),
        ),
        ("full_rule_set", Box::new(processor(FULL))),
    ];
    if std::env::var_os("REDACTION_BENCH_PARTS").is_some()
        || std::env::var_os("REDACTION_BENCH_ITERS").is_some()
    {
        v.extend([
            (
                "part_patterns",
                Box::new(processor(PATTERNS)) as Box<dyn Processor>,
            ),
            (
                "part_sql",
                Box::new(processor("allow_all_keys: true\nsql: true")),
            ),
            ("part_blocked_keys", Box::new(processor(BLOCKED_KEYS))),
            ("part_custom", Box::new(processor(CUSTOM))),
            ("part_nothing", Box::new(processor("allow_all_keys: true"))),
        ]);
    }
    v
}

const PATTERNS: &str = "allow_all_keys: true\npatterns: [email, credit_card, iban, phone, ipv4, ipv6, jwt, bearer_token, aws_access_key, gcp_api_key, github_token, slack_token, stripe_key, private_key, url_password]";
const BLOCKED_KEYS: &str =
    "allow_all_keys: true\nblocked_key_patterns: ['(?i)password|passwd|secret|api[_.-]?key|cookie']";
const CUSTOM: &str = "allow_all_keys: true\ncustom_patterns: [{name: c, regex: 'CUST-[0-9]{8}'}]";

/// `REDACTION_BENCH_ITERS`: a fixed number of batches per selected rule set, no statistics.
fn fixed_iterations(iters: usize) {
    let only = std::env::var("REDACTION_BENCH_ONLY").unwrap_or_default();
    let b = batch();
    for (name, p) in rule_sets() {
        if !name.contains(only.as_str()) {
            continue;
        }
        let batches: Vec<SpanBatch> = (0..iters).map(|_| b.clone()).collect();
        let t = std::time::Instant::now();
        for batch in batches {
            black_box(p.process(batch).map(|_| ()).ok());
        }
        eprintln!("{name}: {iters} batches in {:?}", t.elapsed());
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("redaction");
    g.throughput(Throughput::Elements(SPANS as u64));
    let b = batch();
    let run = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
               id: &str,
               p: &dyn Processor| {
        g.bench_function(id, |bch| {
            bch.iter_batched(
                || b.clone(),
                |batch| black_box(p.process(batch).map(|_| ())),
                BatchSize::SmallInput,
            )
        });
    };
    for (name, p) in rule_sets() {
        run(&mut g, name, p.as_ref());
    }

    // Yardstick: decoding the same 100 spans from OTLP protobuf (one part of the ingest path).
    let bytes = ExportTraceServiceRequest {
        resource_spans: b.resource_spans.clone(),
    }
    .encode_to_vec();
    g.bench_function("otlp_decode_yardstick", |bch| {
        bch.iter(|| {
            black_box(
                ExportTraceServiceRequest::decode(bytes.as_slice()).map(|r| r.resource_spans.len()),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("REDACTION_BENCH_ITERS").map(|n| n.parse::<usize>()) {
        Ok(Ok(n)) => fixed_iterations(n),
        Ok(Err(e)) => eprintln!("REDACTION_BENCH_ITERS: {e}"),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
