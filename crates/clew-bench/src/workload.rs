//! The synthetic workload: realistic OTLP trace requests, encoded once up front.
//!
//! Each trace has 10 spans across 5 services (a checkout: frontend → cart, payment, shipping →
//! inventory; cart and payment query PostgreSQL), with HTTP and database attributes per the
//! semantic conventions, per-service resources, and ~2% error spans carrying an exception event.
//!
//! Requests are protobuf-encoded before the clock starts. To keep every sent trace unique without
//! re-encoding, each request remembers where its trace ids sit in the bytes; [`Pool::render`]
//! copies the request and rewrites the first 8 bytes of every trace id from a sequence number.
//!
//! Time advances like real traffic: each request also remembers where its span start/end times
//! and event times sit (fixed64 fields), and [`Pool::render`] adds `round × period` to each, where
//! a round is one pass over the pool and `period` is the pool's time span plus a small gap. So
//! successive rounds cover successive, disjoint time ranges, and blocks written from them do too
//! (before, every block covered the same ~1.3 s and held every attribute value, which no real
//! store looks like and which hid any pruning by time or by value).

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value, AnyValue, InstrumentationScope, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SPANS_PER_TRACE: usize = 10;
const SERVICES: [&str; 5] = ["frontend", "cart", "payment", "shipping", "inventory"];

/// One pre-encoded request and the byte offsets of each of its traces' ids.
#[derive(Clone)]
pub struct EncodedRequest {
    pub bytes: Vec<u8>,
    /// Per trace: offsets of the 16-byte trace id, once per span.
    pub trace_id_offsets: Vec<Vec<usize>>,
    /// Offsets of every fixed64 time value (span start/end, event time), little-endian.
    pub time_offsets: Vec<usize>,
    pub spans: usize,
}

#[derive(Clone)]
pub struct Pool {
    pub requests: Vec<EncodedRequest>,
    /// How far one round (one pass over every request) moves the clock: the pool's time span
    /// (earliest start to latest end) plus [`ROUND_GAP_NANOS`].
    pub round_nanos: u64,
    /// Earliest span start of round 0.
    pub first_start_nanos: u64,
}

/// Between the end of one round's time range and the start of the next.
pub const ROUND_GAP_NANOS: u64 = 10_000_000;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn resource(service: &str, instance: u32) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", "1.14.2"),
            s("service.namespace", "shop"),
            s(
                "service.instance.id",
                format!("{service}-7d9f8c6b5-{instance:05x}"),
            ),
            s("host.name", format!("node-{:02}", instance % 12)),
            s("deployment.environment.name", "production"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", "java"),
            s("telemetry.sdk.version", "1.44.1"),
        ],
        ..Default::default()
    }
}

struct SpanPlan {
    service: usize,
    parent: Option<usize>,
    kind: span::SpanKind,
    name: &'static str,
    /// Offset and duration as fractions of the root's duration.
    at: f64,
    len: f64,
}

static PLAN: [SpanPlan; SPANS_PER_TRACE] = [
    SpanPlan {
        service: 0,
        parent: None,
        kind: span::SpanKind::Server,
        name: "GET /api/checkout",
        at: 0.0,
        len: 1.0,
    },
    SpanPlan {
        service: 0,
        parent: Some(0),
        kind: span::SpanKind::Client,
        name: "POST",
        at: 0.05,
        len: 0.35,
    },
    SpanPlan {
        service: 1,
        parent: Some(1),
        kind: span::SpanKind::Server,
        name: "POST /cart/checkout",
        at: 0.07,
        len: 0.31,
    },
    SpanPlan {
        service: 1,
        parent: Some(2),
        kind: span::SpanKind::Client,
        name: "SELECT shop.cart_items",
        at: 0.1,
        len: 0.12,
    },
    SpanPlan {
        service: 0,
        parent: Some(0),
        kind: span::SpanKind::Client,
        name: "POST",
        at: 0.42,
        len: 0.3,
    },
    SpanPlan {
        service: 2,
        parent: Some(4),
        kind: span::SpanKind::Server,
        name: "POST /payment/charge",
        at: 0.44,
        len: 0.26,
    },
    SpanPlan {
        service: 2,
        parent: Some(5),
        kind: span::SpanKind::Client,
        name: "INSERT shop.payments",
        at: 0.5,
        len: 0.1,
    },
    SpanPlan {
        service: 0,
        parent: Some(0),
        kind: span::SpanKind::Client,
        name: "GET",
        at: 0.74,
        len: 0.22,
    },
    SpanPlan {
        service: 3,
        parent: Some(7),
        kind: span::SpanKind::Server,
        name: "GET /shipping/quote",
        at: 0.75,
        len: 0.2,
    },
    SpanPlan {
        service: 4,
        parent: Some(8),
        kind: span::SpanKind::Server,
        name: "GET /inventory/{sku}",
        at: 0.8,
        len: 0.1,
    },
];

const ROUTES: [(&str, &str, u16); 5] = [
    ("GET", "/api/checkout", 8080),
    ("POST", "/cart/checkout", 8081),
    ("POST", "/payment/charge", 8082),
    ("GET", "/shipping/quote", 8083),
    ("GET", "/inventory/{sku}", 8084),
];

fn span_attributes(
    idx: usize,
    p: &SpanPlan,
    rng: &mut StdRng,
    status_code: i64,
    sku: u32,
    user: u32,
) -> Vec<KeyValue> {
    let (method, route, port) = ROUTES[p.service];
    match p.kind {
        span::SpanKind::Server => {
            let path = route.replace("{sku}", &format!("SKU-{sku:06}"));
            vec![
                s("http.request.method", method),
                s("http.route", route),
                s("url.path", path),
                s("url.scheme", "http"),
                i("http.response.status_code", status_code),
                s("server.address", SERVICES[p.service]),
                i("server.port", port as i64),
                s(
                    "client.address",
                    format!(
                        "10.4.{}.{}",
                        rng.random_range(0..16),
                        rng.random_range(1..255)
                    ),
                ),
                s("network.protocol.version", "1.1"),
                s("user_agent.original", "shop-web/3.2 (okhttp)"),
            ]
        }
        span::SpanKind::Client if p.name.starts_with("SELECT") || p.name.starts_with("INSERT") => {
            let (op, table, q) = if p.name.starts_with("SELECT") {
                (
                    "SELECT",
                    "cart_items",
                    "SELECT sku, qty, price FROM cart_items WHERE user_id = $1",
                )
            } else {
                (
                    "INSERT",
                    "payments",
                    "INSERT INTO payments (user_id, amount, currency) VALUES ($1, $2, $3)",
                )
            };
            vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "shop"),
                s("db.operation.name", op),
                s("db.collection.name", table),
                s("db.query.text", q),
                s("server.address", "pg-primary.shop.svc"),
                i("server.port", 5432),
            ]
        }
        _ => {
            let target = PLAN.iter().position(|c| c.parent == Some(idx));
            let svc = target.map(|t| PLAN[t].service).unwrap_or(1);
            let (m, route, port) = ROUTES[svc];
            let path = route.replace("{sku}", &format!("SKU-{sku:06}"));
            vec![
                s("http.request.method", m),
                s(
                    "url.full",
                    format!("http://{}:{port}{path}?user=u{user}", SERVICES[svc]),
                ),
                s("server.address", SERVICES[svc]),
                i("server.port", port as i64),
                i("http.response.status_code", status_code),
            ]
        }
    }
}

/// Builds one trace's spans, grouped by service index.
fn trace(rng: &mut StdRng, base_nanos: u64, by_service: &mut [Vec<Span>; 5]) -> [u8; 16] {
    let trace_id: [u8; 16] = rng.random();
    let span_ids: Vec<[u8; 8]> = (0..SPANS_PER_TRACE).map(|_| rng.random()).collect();
    let total = rng.random_range(8_000_000u64..400_000_000);
    let start = base_nanos + rng.random_range(0..1_000_000_000u64);
    let error_span = if rng.random_bool(0.2) {
        // ~2% of spans: one span in 20% of traces.
        Some(rng.random_range(0..SPANS_PER_TRACE))
    } else {
        None
    };
    let sku = rng.random_range(0..200_000u32);
    let user = rng.random_range(0..5_000_000u32);
    for (idx, p) in PLAN.iter().enumerate() {
        let is_error = error_span == Some(idx);
        let status_code = if is_error { 500 } else { 200 };
        let s_start = start + (total as f64 * p.at) as u64;
        let s_end = s_start + ((total as f64 * p.len) as u64).max(1000);
        let mut events = Vec::new();
        if is_error {
            events.push(span::Event {
                time_unix_nano: s_end - 500,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "java.net.SocketTimeoutException"),
                    s("exception.message", format!("Read timed out after 2000 ms (user u{user})")),
                    s(
                        "exception.stacktrace",
                        "java.net.SocketTimeoutException: Read timed out\n\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)\n\tat shop.http.Client.send(Client.java:112)",
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        by_service[p.service].push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_ids[idx].to_vec(),
            parent_span_id: p.parent.map(|pi| span_ids[pi].to_vec()).unwrap_or_default(),
            name: p.name.to_string(),
            kind: p.kind as i32,
            start_time_unix_nano: s_start,
            end_time_unix_nano: s_end,
            attributes: span_attributes(idx, p, rng, status_code, sku, user),
            events,
            status: Some(Status {
                code: if is_error {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
                message: if is_error {
                    "Read timed out".into()
                } else {
                    String::new()
                },
            }),
            flags: 0x100 | 0x1,
            ..Default::default()
        });
    }
    trace_id
}

/// Offsets (of the 8 value bytes) of every fixed64 time field in an encoded request: span
/// `start_time_unix_nano` (field 7) and `end_time_unix_nano` (8), event `time_unix_nano` (1),
/// found by their tag byte followed by the exact value, like the trace ids. A false match would
/// need 9 random bytes to equal a tag and a time of this pool; the tests decode every rendered
/// request and compare each time field.
fn time_offsets(bytes: &[u8], req: &ExportTraceServiceRequest) -> Vec<usize> {
    let mut needles: Vec<[u8; 9]> = Vec::new();
    let tagged = |tag: u8, v: u64| {
        let mut n = [0u8; 9];
        n[0] = tag;
        n[1..].copy_from_slice(&v.to_le_bytes());
        n
    };
    for sp in req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        needles.push(tagged(7 << 3 | 1, sp.start_time_unix_nano));
        needles.push(tagged(8 << 3 | 1, sp.end_time_unix_nano));
        for e in &sp.events {
            needles.push(tagged(1 << 3 | 1, e.time_unix_nano));
        }
    }
    needles.sort();
    needles.dedup();
    let mut out: Vec<usize> = needles
        .iter()
        .flat_map(|n| find_all(bytes, n))
        .map(|o| o + 1)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Adds `delta` (wrapping, so it may move values back) to every little-endian u64 at `offsets`
/// (fixed64 protobuf fields: span times); offsets past the end are skipped.
pub(crate) fn add_to_u64_le(bytes: &mut [u8], offsets: &[usize], delta: u64) {
    for &o in offsets {
        if let Some(field) = bytes.get_mut(o..o + 8) {
            let mut v = [0u8; 8];
            v.copy_from_slice(field);
            field.copy_from_slice(&u64::from_le_bytes(v).wrapping_add(delta).to_le_bytes());
        }
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

impl Pool {
    /// `requests` distinct requests of `traces_per_request` traces each, from a seeded RNG.
    pub fn generate(
        seed: u64,
        requests: usize,
        traces_per_request: usize,
        base_nanos: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut first, mut last) = (u64::MAX, 0u64);
        let out = (0..requests)
            .map(|r| {
                let mut by_service: [Vec<Span>; 5] = Default::default();
                let ids: Vec<[u8; 16]> = (0..traces_per_request)
                    .map(|_| trace(&mut rng, base_nanos + r as u64 * 1_000_000, &mut by_service))
                    .collect();
                let req = ExportTraceServiceRequest {
                    resource_spans: by_service
                        .into_iter()
                        .enumerate()
                        .map(|(svc, spans)| ResourceSpans {
                            resource: Some(resource(SERVICES[svc], (r % 7) as u32)),
                            scope_spans: vec![ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: "io.opentelemetry.spring-webmvc-6.0".into(),
                                    version: "2.10.0-alpha".into(),
                                    ..Default::default()
                                }),
                                spans,
                                schema_url: String::new(),
                            }],
                            schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
                        })
                        .collect(),
                };
                let bytes = req.encode_to_vec();
                let trace_id_offsets = ids.iter().map(|id| find_all(&bytes, id)).collect();
                let time_offsets = time_offsets(&bytes, &req);
                for sp in req
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .flat_map(|ss| &ss.spans)
                {
                    first = first.min(sp.start_time_unix_nano);
                    last = last.max(sp.end_time_unix_nano);
                }
                EncodedRequest {
                    bytes,
                    trace_id_offsets,
                    time_offsets,
                    spans: traces_per_request * SPANS_PER_TRACE,
                }
            })
            .collect();
        Pool {
            requests: out,
            round_nanos: last.saturating_sub(first) + ROUND_GAP_NANOS,
            first_start_nanos: first,
        }
    }

    /// Spans in one round (one pass over every request).
    pub fn spans_per_round(&self) -> u64 {
        self.requests.iter().map(|r| r.spans as u64).sum()
    }

    /// The same pool with every time moved so that the round holding the `spans`-th span ends
    /// about `end_nanos` (minus one period): sending `spans` spans from sequence 0 then covers the
    /// time up to `end_nanos`, not past it (a store built for a query benchmark ends "now").
    pub fn ending_at(mut self, spans: u64, end_nanos: u64) -> Self {
        let rounds = spans.div_ceil(self.spans_per_round().max(1));
        let want_first = end_nanos.saturating_sub((rounds + 1).saturating_mul(self.round_nanos));
        let delta = want_first.wrapping_sub(self.first_start_nanos);
        for r in &mut self.requests {
            add_to_u64_le(&mut r.bytes, &r.time_offsets, delta);
        }
        self.first_start_nanos = want_first;
        self
    }

    pub fn bytes_per_span(&self) -> f64 {
        let bytes: usize = self.requests.iter().map(|r| r.bytes.len()).sum();
        let spans: usize = self.requests.iter().map(|r| r.spans).sum();
        bytes as f64 / spans as f64
    }

    /// The `seq`-th request to send: a copy of a pooled request whose trace ids are made unique by
    /// `seq` and whose times are moved on by `round × round_nanos`. Returns the bytes and the
    /// trace ids it carries.
    pub fn render(&self, seq: u64) -> (Vec<u8>, usize, impl Iterator<Item = [u8; 16]> + '_) {
        let req = &self.requests[(seq % self.requests.len() as u64) as usize];
        let mut bytes = req.bytes.clone();
        let round = seq / self.requests.len() as u64;
        if round > 0 {
            add_to_u64_le(
                &mut bytes,
                &req.time_offsets,
                round.wrapping_mul(self.round_nanos),
            );
        }
        let key = splitmix64(round.wrapping_add(1)).to_le_bytes();
        for offsets in &req.trace_id_offsets {
            for &o in offsets {
                for (b, k) in bytes[o..o + 8].iter_mut().zip(key) {
                    *b ^= k;
                }
            }
        }
        let ids = req.trace_id_offsets.iter().filter_map(move |offs| {
            let o = *offs.first()?;
            let mut id = [0u8; 16];
            id.copy_from_slice(&req.bytes[o..o + 16]);
            for (b, k) in id[..8].iter_mut().zip(key) {
                *b ^= k;
            }
            Some(id)
        });
        (bytes, req.spans, ids)
    }
}

pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans_of(bytes: &[u8]) -> Vec<Span> {
        let req = ExportTraceServiceRequest::decode(bytes).expect("rendered request decodes");
        req.resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    #[test]
    fn requests_decode_and_render_unique_ids() {
        let pool = Pool::generate(7, 3, 20, 1_700_000_000_000_000_000);
        let bps = pool.bytes_per_span();
        assert!((250.0..600.0).contains(&bps), "bytes/span {bps}");
        let (a, n, ids_a) = pool.render(0);
        let ids_a: Vec<_> = ids_a.collect();
        let (b, _, ids_b) = pool.render(3);
        let ids_b: Vec<_> = ids_b.collect();
        assert_eq!(n, 200);
        assert_ne!(ids_a, ids_b);
        for (bytes, ids) in [(a, ids_a), (b, ids_b)] {
            let mut seen: Vec<[u8; 16]> = spans_of(&bytes)
                .iter()
                .map(|s| s.trace_id.as_slice().try_into().unwrap())
                .collect();
            seen.sort();
            seen.dedup();
            let mut want = ids.clone();
            want.sort();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn ids_stay_unique_over_many_rounds() {
        let pool = Pool::generate(11, 4, 10, 1_700_000_000_000_000_000);
        let mut all: Vec<[u8; 16]> = (0..4 * 50).flat_map(|seq| pool.render(seq).2).collect();
        let n = all.len();
        assert_eq!(n, 4 * 50 * 10);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a trace id repeated across rounds");
    }

    /// Each round is round 0 moved by `round × round_nanos` — every time field, and nothing else —
    /// and rounds cover disjoint, successive time ranges.
    #[test]
    fn times_advance_by_round() {
        let base = 1_700_000_000_000_000_000;
        let pool = Pool::generate(3, 3, 20, base);
        let per = pool.requests.len() as u64;
        assert!(pool.round_nanos > ROUND_GAP_NANOS, "{}", pool.round_nanos);
        assert!(pool.round_nanos < 3_000_000_000, "{}", pool.round_nanos);
        for r in &pool.requests {
            let spans = spans_of(&r.bytes);
            let events: usize = spans.iter().map(|s| s.events.len()).sum();
            assert_eq!(r.time_offsets.len(), 2 * spans.len() + events);
        }
        let range = |round: u64| {
            let (mut lo, mut hi) = (u64::MAX, 0);
            for r in 0..per {
                for s in spans_of(&pool.render(round * per + r).0) {
                    lo = lo.min(s.start_time_unix_nano);
                    hi = hi.max(s.end_time_unix_nano);
                }
            }
            (lo, hi)
        };
        let r0 = range(0);
        assert_eq!(r0.0, pool.first_start_nanos);
        let mut prev_end = r0.1;
        for round in 1..4 {
            let (lo, hi) = range(round);
            assert!(
                lo > prev_end,
                "round {round} starts at {lo}, before {prev_end}"
            );
            assert_eq!(lo, r0.0 + round * pool.round_nanos);
            assert_eq!(hi, r0.1 + round * pool.round_nanos);
            prev_end = hi;
        }
        let mut events = 0;
        for r in 0..per {
            let a = spans_of(&pool.render(r).0);
            let b = spans_of(&pool.render(2 * per + r).0);
            assert_eq!(a.len(), b.len());
            let d = 2 * pool.round_nanos;
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(y.start_time_unix_nano, x.start_time_unix_nano + d);
                assert_eq!(y.end_time_unix_nano, x.end_time_unix_nano + d);
                assert_eq!(x.events.len(), y.events.len());
                for (ex, ey) in x.events.iter().zip(&y.events) {
                    assert_eq!(ey.time_unix_nano, ex.time_unix_nano + d);
                    events += 1;
                }
                // Only ids and times differ.
                let mut y2 = y.clone();
                y2.trace_id = x.trace_id.clone();
                y2.start_time_unix_nano = x.start_time_unix_nano;
                y2.end_time_unix_nano = x.end_time_unix_nano;
                for (ex, ey) in x.events.iter().zip(&mut y2.events) {
                    ey.time_unix_nano = ex.time_unix_nano;
                }
                assert_eq!(&y2, x);
            }
        }
        assert!(events > 0, "no exception event was checked");
    }

    #[test]
    fn ending_at_puts_the_last_round_before_the_end() {
        let pool = Pool::generate(5, 4, 10, 1_000_000_000_000);
        let end = 1_800_000_000_000_000_000u64;
        let spans = pool.spans_per_round() * 7 + 1; // 8 rounds
        let pool = pool.ending_at(spans, end);
        let per = pool.requests.len() as u64;
        let (mut lo, mut hi) = (u64::MAX, 0);
        for seq in 0..8 * per {
            for s in spans_of(&pool.render(seq).0) {
                lo = lo.min(s.start_time_unix_nano);
                hi = hi.max(s.end_time_unix_nano);
            }
        }
        assert_eq!(lo, pool.first_start_nanos);
        assert!(hi < end, "last span ends at {hi}, after {end}");
        assert!(
            end - hi < 3 * pool.round_nanos,
            "{} before the end",
            end - hi
        );
    }
}
