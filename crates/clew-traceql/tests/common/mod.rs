//! A hand-built trace with known structure, shared by the evaluation and store tests.
//!
//! ```text
//! GET /        frontend  server  unset  100ms  http.method=GET http.status_code=200
//! ├─ cart.get  frontend  client  unset   40ms  peer=cart
//! │  └─ GetCart  cart    server  error   30ms  http.status_code=500 ratio=0.5 flag=true ("boom")
//! │     ├─ redis GET  cart  client  5ms  db.system=redis
//! │     └─ redis SET  cart  client  2ms  db.system=redis
//! └─ auth      auth      internal ok     10ms  "http status"="x"   (resource "k8s pod"=p1)
//! ```
#![allow(dead_code)]

use clew_model::attrs::{kv, kv_int, kv_str};
use clew_model::flat::flatten;
use clew_model::otlp::common::any_value::Value;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status};
use clew_model::FlatSpan;

pub const BASE: u64 = 1_750_000_000_000_000_000;
pub const MS: u64 = 1_000_000;

pub struct SpanSpec {
    pub id: u8,
    pub parent: Option<u8>,
    pub name: &'static str,
    pub service: &'static str,
    pub kind: i32,
    pub status: i32,
    pub message: &'static str,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub attrs: Vec<clew_model::otlp::common::KeyValue>,
}

pub fn spec() -> Vec<SpanSpec> {
    vec![
        SpanSpec {
            id: 1,
            parent: None,
            name: "GET /",
            service: "frontend",
            kind: 2,
            status: 0,
            message: "",
            start_ms: 0,
            duration_ms: 100,
            attrs: vec![
                kv_str("http.method", "GET"),
                kv_int("http.status_code", 200),
            ],
        },
        SpanSpec {
            id: 2,
            parent: Some(1),
            name: "cart.get",
            service: "frontend",
            kind: 3,
            status: 0,
            message: "",
            start_ms: 10,
            duration_ms: 40,
            attrs: vec![kv_str("peer", "cart")],
        },
        SpanSpec {
            id: 3,
            parent: Some(2),
            name: "GetCart",
            service: "cart",
            kind: 2,
            status: 2,
            message: "boom",
            start_ms: 15,
            duration_ms: 30,
            attrs: vec![
                kv_int("http.status_code", 500),
                kv("ratio", Value::DoubleValue(0.5)),
                kv("flag", Value::BoolValue(true)),
            ],
        },
        SpanSpec {
            id: 4,
            parent: Some(3),
            name: "redis GET",
            service: "cart",
            kind: 3,
            status: 0,
            message: "",
            start_ms: 20,
            duration_ms: 5,
            attrs: vec![kv_str("db.system", "redis")],
        },
        SpanSpec {
            id: 5,
            parent: Some(3),
            name: "redis SET",
            service: "cart",
            kind: 3,
            status: 0,
            message: "",
            start_ms: 30,
            duration_ms: 2,
            attrs: vec![kv_str("db.system", "redis")],
        },
        SpanSpec {
            id: 6,
            parent: Some(1),
            name: "auth",
            service: "auth",
            kind: 1,
            status: 1,
            message: "",
            start_ms: 60,
            duration_ms: 10,
            attrs: vec![kv_str("http status", "x")],
        },
    ]
}

fn resource(service: &str) -> Resource {
    let mut attributes = vec![kv_str("service.name", service)];
    match service {
        "frontend" => attributes.push(kv_str("deployment", "prod")),
        "auth" => attributes.push(kv_str("k8s pod", "p1")),
        _ => {}
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The trace as OTLP, one `ResourceSpans` per service; `trace` sets the trace id bytes and
/// `offset_ms` shifts every time.
pub fn resource_spans(specs: &[SpanSpec], trace: u8, offset_ms: u64) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for s in specs {
        let span = Span {
            trace_id: vec![trace; 16],
            span_id: vec![s.id; 8],
            parent_span_id: s.parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: s.name.into(),
            kind: s.kind,
            start_time_unix_nano: BASE + (offset_ms + s.start_ms) * MS,
            end_time_unix_nano: BASE + (offset_ms + s.start_ms + s.duration_ms) * MS,
            attributes: s.attrs.clone(),
            status: Some(Status {
                code: s.status,
                message: s.message.into(),
            }),
            ..Default::default()
        };
        let svc = s.service;
        match out.iter_mut().find(|rs| {
            rs.resource
                .as_ref()
                .is_some_and(|r| clew_model::attrs::service_name(Some(r)) == svc)
        }) {
            Some(rs) => rs.scope_spans[0].spans.push(span),
            None => out.push(ResourceSpans {
                resource: Some(resource(svc)),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }),
        }
    }
    out
}

pub fn trace() -> Vec<FlatSpan> {
    flatten(resource_spans(&spec(), 7, 0))
}
