//! A minimal OTLP/HTTP JSON span exporter for the guides' Rust examples: SDK `SpanData` to the OTLP
//! JSON encoding (trace and span ids as hex, 64-bit integers as strings), one blocking HTTP/1.1 POST
//! per batch. Plain `http://` only; in an application use the `opentelemetry-otlp` crate (TLS,
//! retries, gzip), which Clew's workspace does not build. Included with
//! `#[path = "../otlp_json.rs"] mod otlp_json;` by manual-spans/checkout.rs and kafka/orders.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use serde_json::{json, Value as Json};

#[derive(Debug)]
pub struct Exporter {
    host_port: String,
    resource: Vec<Json>,
}

impl Exporter {
    pub fn new(base: &str) -> Result<Self, String> {
        let host_port = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base}: only http:// endpoints are supported"))?
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            host_port,
            resource: Vec::new(),
        })
    }

    fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut conn = TcpStream::connect(&self.host_port).map_err(|e| e.to_string())?;
        // The SDK asks exporters not to block indefinitely.
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.host_port,
            body.len()
        );
        conn.write_all(head.as_bytes())
            .and_then(|()| conn.write_all(body))
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        let status = reply.split(' ').nth(1).unwrap_or("");
        if status == "200" {
            Ok(())
        } else {
            Err(format!(
                "OTLP/HTTP export failed: {}",
                reply.lines().next().unwrap_or("")
            ))
        }
    }
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<Json> = batch.iter().map(span).collect();
        let body = json!({ "resourceSpans": [{
            "resource": { "attributes": self.resource },
            // One scope per process is all this example has; a general exporter groups by scope.
            "scopeSpans": [{
                "scope": batch.first().map(|s| json!({
                    "name": s.instrumentation_scope.name(),
                    "version": s.instrumentation_scope.version().unwrap_or(""),
                })),
                "spans": spans,
            }],
        }]});
        self.post(body.to_string().as_bytes())
            .map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource
            .iter()
            .map(|(k, v)| kv(&KeyValue::new(k.clone(), v.clone())))
            .collect();
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

fn any_value(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::I64(i) => json!({ "intValue": i.to_string() }),
        Value::F64(f) => json!({ "doubleValue": f }),
        Value::String(s) => json!({ "stringValue": s.as_str() }),
        Value::Array(a) => {
            let values: Vec<Json> = match a {
                Array::Bool(v) => v.iter().map(|b| any_value(&Value::Bool(*b))).collect(),
                Array::I64(v) => v.iter().map(|i| any_value(&Value::I64(*i))).collect(),
                Array::F64(v) => v.iter().map(|f| any_value(&Value::F64(*f))).collect(),
                Array::String(v) => v
                    .iter()
                    .map(|s| json!({ "stringValue": s.as_str() }))
                    .collect(),
                _ => Vec::new(),
            };
            json!({ "arrayValue": { "values": values } })
        }
        other => json!({ "stringValue": other.to_string() }),
    }
}

fn kv(kv: &KeyValue) -> Json {
    json!({ "key": kv.key.as_str(), "value": any_value(&kv.value) })
}

fn span(s: &SpanData) -> Json {
    let ctx = &s.span_context;
    let kind = match s.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    let status = match &s.status {
        Status::Unset => json!({}),
        Status::Ok => json!({ "code": 1 }),
        Status::Error { description } => json!({ "code": 2, "message": description }),
    };
    let parent = if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        String::new()
    } else {
        s.parent_span_id.to_string()
    };
    json!({
        "traceId": ctx.trace_id().to_string(),
        "spanId": ctx.span_id().to_string(),
        "parentSpanId": parent,
        "name": s.name,
        "kind": kind,
        "startTimeUnixNano": nanos(s.start_time),
        "endTimeUnixNano": nanos(s.end_time),
        "attributes": s.attributes.iter().map(kv).collect::<Vec<_>>(),
        "events": s.events.iter().map(|e| json!({
            "timeUnixNano": nanos(e.timestamp),
            "name": e.name,
            "attributes": e.attributes.iter().map(kv).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "links": s.links.iter().map(|l| json!({
            "traceId": l.span_context.trace_id().to_string(),
            "spanId": l.span_context.span_id().to_string(),
            "attributes": l.attributes.iter().map(kv).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "status": status,
    })
}
