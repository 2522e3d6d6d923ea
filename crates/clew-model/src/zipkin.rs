//! Zipkin v2 JSON → OTLP, per the OpenTelemetry Zipkin translation rules.
//!
//! The rules are the reverse of the OTel specification's "OpenTelemetry to Zipkin Transformation" plus
//! what the collector's Zipkin receiver does, so that spans which went OTel → Zipkin exporter → Clew come
//! back as close to the original as the Zipkin model allows:
//!
//! | Zipkin                                   | OTLP                                                          |
//! | ---------------------------------------- | ------------------------------------------------------------- |
//! | `traceId` (16 or 32 hex digits)          | `trace_id` (64-bit ids left-padded with zeros to 16 bytes)    |
//! | `id`, `parentId`                         | `span_id`, `parent_span_id` (`parentId == id` or all-zero: root) |
//! | `kind` CLIENT/SERVER/PRODUCER/CONSUMER   | the same span kind; absent → INTERNAL (the spec maps INTERNAL → absent), or the `span.kind` tag |
//! | `timestamp`, `duration` (µs)             | start, end = start + duration (ns); absent timestamp → 0 and `otel.zipkin.absentField.startTime` |
//! | `localEndpoint.serviceName`              | resource `service.name`                                       |
//! | `localEndpoint.ipv4/ipv6/port`           | `network.local.address`, `network.local.port`                 |
//! | `remoteEndpoint.serviceName`             | `peer.service` (unless a `peer.service` tag exists)           |
//! | `remoteEndpoint.ipv4/ipv6/port`          | `network.peer.address`, `network.peer.port` (unless tagged)   |
//! | tags                                     | string attributes, except the special tags below              |
//! | tags with resource prefixes (`service.*`, `host.*`, `k8s.*`, …) | resource attributes                    |
//! | `otel.scope.name/version` (`otel.library.*`) | instrumentation scope                                     |
//! | `otel.status_code`, `otel.status_description`, `error` | status (`error` ⇒ ERROR, its text the message; `error: "false"` dropped) |
//! | `w3c.tracestate`                         | `trace_state`                                                 |
//! | `otel.dropped_{attributes,events,links}_count` | the dropped counts                                      |
//! | `otlp.link.N` (`trace|span|state|{json}|dropped`) | links                                                |
//! | `annotations` (`name` or `name|{json}|dropped`) | events                                                 |
//! | `debug`, `shared`                        | boolean attributes `zipkin.debug`, `zipkin.shared`            |
//!
//! Spans are grouped by resource (local endpoint + resource tags) and scope. A span with an invalid id
//! is rejected on its own and reported in a [`ValidationReport`]; only malformed JSON fails the whole
//! payload.

use crate::attrs::{kv, kv_str, SERVICE_NAME};
use crate::flat::{group_into_resource_spans, FlatSpan};
use crate::ids::{IdError, SpanId, TraceId};
use crate::otlp::common::{any_value::Value, InstrumentationScope, KeyValue};
use crate::otlp::resource::Resource;
use crate::otlp::trace::{span, status, ResourceSpans, Span, Status};
use crate::ValidationReport;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// Attribute set when a Zipkin span has no `timestamp` (same key as the collector uses).
pub const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";
pub const ZIPKIN_DEBUG: &str = "zipkin.debug";
pub const ZIPKIN_SHARED: &str = "zipkin.shared";

/// Tags whose key starts with one of these are resource attributes (the Zipkin exporter flattens the
/// resource into tags; this puts them back).
const RESOURCE_TAG_PREFIXES: &[&str] = &[
    "service.",
    "telemetry.sdk.",
    "telemetry.distro.",
    "host.",
    "os.",
    "process.",
    "container.",
    "k8s.",
    "cloud.",
    "deployment.",
    "device.",
    "webengine.",
];

/// The longest `otlp.link.N` series followed (the collector's limit too).
const MAX_LINK_TAGS: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid Zipkin v2 JSON at line {line} column {column}: {message}")]
pub struct ZipkinError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One Zipkin v2 span as sent on the wire (`zipkin2-api.yaml`). Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    pub trace_id: Option<String>,
    pub id: Option<String>,
    pub parent_id: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub timestamp: Option<u64>,
    pub duration: Option<u64>,
    pub debug: Option<bool>,
    pub shared: Option<bool>,
    pub local_endpoint: Option<Endpoint>,
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: Vec<Annotation>,
    /// Zipkin tags are strings, but some tracers send numbers or booleans: any JSON value is taken
    /// and rendered as text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub service_name: Option<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Annotation {
    pub timestamp: Option<u64>,
    pub value: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The result of converting one payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converted {
    pub resource_spans: Vec<ResourceSpans>,
    /// Spans in the payload, accepted or not.
    pub received_spans: u64,
    /// Spans rejected for invalid ids.
    pub report: ValidationReport,
}

/// Parses a Zipkin v2 JSON array of spans. Errors name the line and column.
pub fn parse_json(body: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    serde_json::from_slice(body).map_err(|e| ZipkinError {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Parses and converts a Zipkin v2 JSON payload.
pub fn decode_json(body: &[u8]) -> Result<Converted, ZipkinError> {
    Ok(to_otlp(parse_json(body)?))
}

/// Converts Zipkin spans to OTLP, grouped by resource and scope in order of first appearance.
pub fn to_otlp(spans: Vec<ZipkinSpan>) -> Converted {
    let mut report = ValidationReport::default();
    let received_spans = spans.len() as u64;
    // Resources and scopes are interned so spans of one service share one `Arc`, and grouping
    // compares few distinct values.
    let mut resources: Vec<Arc<Resource>> = Vec::new();
    let mut scopes: Vec<Arc<InstrumentationScope>> = Vec::new();
    let empty_url: Arc<str> = Arc::from("");
    let mut flat = Vec::with_capacity(spans.len());
    for (index, zspan) in spans.into_iter().enumerate() {
        match convert_span(zspan) {
            Ok(parts) => {
                let resource = intern(&mut resources, parts.resource);
                let scope = intern(&mut scopes, parts.scope);
                flat.push(FlatSpan {
                    resource,
                    resource_schema_url: empty_url.clone(),
                    scope,
                    scope_schema_url: empty_url.clone(),
                    span: parts.span,
                });
            }
            Err(rejected) => {
                report.rejected_spans += 1;
                if report.first_error.is_none() {
                    report.first_error = Some(format!(
                        "span #{index} ({:?}) rejected: {}",
                        rejected.name, rejected.error
                    ));
                }
            }
        }
    }
    Converted {
        resource_spans: group_into_resource_spans(flat),
        received_spans,
        report,
    }
}

fn intern<T: PartialEq>(seen: &mut Vec<Arc<T>>, value: T) -> Arc<T> {
    if let Some(existing) = seen.iter().find(|s| ***s == value) {
        return existing.clone();
    }
    let arc = Arc::new(value);
    seen.push(arc.clone());
    arc
}

/// One converted span with the resource and scope it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedSpan {
    pub resource: Resource,
    pub scope: InstrumentationScope,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSpan {
    pub name: String,
    pub error: IdError,
}

/// Converts one Zipkin span. Fails only on invalid ids.
pub fn convert_span(z: ZipkinSpan) -> Result<ConvertedSpan, RejectedSpan> {
    let name = z.name.unwrap_or_default();
    let ids = parse_ids(
        z.trace_id.as_deref(),
        z.id.as_deref(),
        z.parent_id.as_deref(),
    );
    let (trace_id, span_id, parent_span_id) = match ids {
        Ok(ids) => ids,
        Err(error) => {
            return Err(RejectedSpan {
                name: truncate(&name, 80).to_string(),
                error,
            })
        }
    };

    // Every tag is a string from here on; special tags are taken out as they are consumed, and what
    // remains becomes span attributes.
    let mut tags: BTreeMap<String, String> = z
        .tags
        .into_iter()
        .filter_map(|(k, v)| tag_text(v).map(|t| (k, t)))
        .collect();

    let resource = take_resource(&mut tags, z.local_endpoint.as_ref());
    let scope = take_scope(&mut tags);
    let status = take_status(&mut tags);
    let kind = take_kind(z.kind.as_deref(), &mut tags);
    let trace_state = tags.remove("w3c.tracestate").unwrap_or_default();
    let dropped_attributes_count = take_count(&mut tags, "otel.dropped_attributes_count");
    let dropped_events_count = take_count(&mut tags, "otel.dropped_events_count");
    let dropped_links_count = take_count(&mut tags, "otel.dropped_links_count");
    let links = take_links(&mut tags);

    let mut attributes: Vec<KeyValue> = Vec::with_capacity(tags.len() + 6);
    let has_tag = |k: &str| tags.contains_key(k);
    if let Some(local) = &z.local_endpoint {
        if let Some(ip) = endpoint_ip(local) {
            if !has_tag("network.local.address") {
                attributes.push(kv_str("network.local.address", ip));
            }
        }
        if let Some(port) = endpoint_port(local) {
            if !has_tag("network.local.port") {
                attributes.push(kv("network.local.port", Value::IntValue(port)));
            }
        }
    }
    if let Some(remote) = &z.remote_endpoint {
        // Spec (Zipkin → OTLP): "set peer.service tag from remoteEndpoint unless there is a
        // peer.service tag defined explicitly".
        if let Some(svc) = remote.service_name.as_deref().filter(|s| !s.is_empty()) {
            if !has_tag("peer.service") {
                attributes.push(kv_str("peer.service", svc));
            }
        }
        if let Some(ip) = endpoint_ip(remote) {
            if !has_tag("network.peer.address") {
                attributes.push(kv_str("network.peer.address", ip));
            }
        }
        if let Some(port) = endpoint_port(remote) {
            if !has_tag("network.peer.port") {
                attributes.push(kv("network.peer.port", Value::IntValue(port)));
            }
        }
    }
    attributes.extend(tags.into_iter().map(|(k, v)| kv_str(k, v)));

    let start = match z.timestamp {
        Some(ts) if ts > 0 => ts.saturating_mul(1000),
        _ => {
            // The collector's convention: a start time is required in OTLP, so use the epoch and
            // flag it, rather than inventing a time.
            attributes.push(kv(START_TIME_ABSENT, Value::BoolValue(true)));
            0
        }
    };
    let end = start.saturating_add(z.duration.unwrap_or(0).saturating_mul(1000));
    if z.debug == Some(true) {
        attributes.push(kv(ZIPKIN_DEBUG, Value::BoolValue(true)));
    }
    if z.shared == Some(true) {
        attributes.push(kv(ZIPKIN_SHARED, Value::BoolValue(true)));
    }

    let events = z.annotations.into_iter().map(annotation_to_event).collect();

    let span = Span {
        trace_id,
        span_id,
        trace_state,
        parent_span_id,
        flags: 0,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status,
    };
    Ok(ConvertedSpan {
        resource,
        scope,
        span,
    })
}

type Ids = (Vec<u8>, Vec<u8>, Vec<u8>);

fn parse_ids(
    trace_id: Option<&str>,
    id: Option<&str>,
    parent_id: Option<&str>,
) -> Result<Ids, IdError> {
    let trace = TraceId::from_hex(required(trace_id, "trace id")?)?;
    let span = SpanId::from_hex(required(id, "span id")?)?;
    let parent = match parent_id.filter(|p| !p.is_empty()) {
        None => Vec::new(),
        Some(p) => match SpanId::from_hex(p) {
            // Some tracers send an all-zero parent for a root span.
            Err(IdError::AllZero { .. }) => Vec::new(),
            Err(e) => return Err(rename_kind(e, "parent span id")),
            // The collector drops a parent equal to the span's own id (a malformed root).
            Ok(p) if p == span => Vec::new(),
            Ok(p) => p.0.to_vec(),
        },
    };
    Ok((trace.0.to_vec(), span.0.to_vec(), parent))
}

/// An absent or empty id field, reported as such rather than as bad hex `""`.
fn required<'a>(text: Option<&'a str>, kind: &'static str) -> Result<&'a str, IdError> {
    text.filter(|t| !t.is_empty()).ok_or(IdError::BadHex {
        kind,
        text: String::from("<missing>"),
    })
}

fn rename_kind(e: IdError, kind: &'static str) -> IdError {
    match e {
        IdError::WrongLength { expected, got, .. } => IdError::WrongLength {
            kind,
            expected,
            got,
        },
        IdError::AllZero { .. } => IdError::AllZero { kind },
        IdError::BadHex { text, .. } => IdError::BadHex { kind, text },
    }
}

fn tag_text(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn take_resource(tags: &mut BTreeMap<String, String>, local: Option<&Endpoint>) -> Resource {
    let local_service = local
        .and_then(|e| e.service_name.as_deref())
        .filter(|s| !s.is_empty());
    let tag_service = tags.remove(SERVICE_NAME);
    let mut attributes = Vec::new();
    // The local endpoint names the service (spec: Zipkin service name == `service.name`); a
    // `service.name` tag is the fallback.
    if let Some(svc) = local_service.map(str::to_string).or(tag_service) {
        attributes.push(kv_str(SERVICE_NAME, svc));
    }
    let resource_keys: Vec<String> = tags
        .keys()
        .filter(|k| RESOURCE_TAG_PREFIXES.iter().any(|p| k.starts_with(p)))
        .cloned()
        .collect();
    for key in resource_keys {
        if let Some(v) = tags.remove(&key) {
            attributes.push(kv_str(key, v));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn take_scope(tags: &mut BTreeMap<String, String>) -> InstrumentationScope {
    let name = tags.remove("otel.scope.name");
    let version = tags.remove("otel.scope.version");
    let legacy_name = tags.remove("otel.library.name");
    let legacy_version = tags.remove("otel.library.version");
    InstrumentationScope {
        name: name.or(legacy_name).unwrap_or_default(),
        version: version.or(legacy_version).unwrap_or_default(),
        ..Default::default()
    }
}

fn take_status(tags: &mut BTreeMap<String, String>) -> Option<Status> {
    let mut code = status::StatusCode::Unset;
    let mut message = String::new();
    if let Some(value) = tags.get("otel.status_code") {
        let parsed = match value
            .to_ascii_uppercase()
            .trim_start_matches("STATUS_CODE_")
        {
            "OK" => Some(status::StatusCode::Ok),
            "ERROR" => Some(status::StatusCode::Error),
            "UNSET" => Some(status::StatusCode::Unset),
            _ => None,
        };
        // An unknown value is kept as an attribute rather than lost.
        if let Some(c) = parsed {
            code = c;
            tags.remove("otel.status_code");
            if let Some(desc) = tags.remove("otel.status_description") {
                message = desc;
            }
        }
    }
    if let Some(err) = tags.remove("error") {
        // Spec: a boolean `false` error tag SHOULD be removed; anything else marks the span failed,
        // and its text (when not just "true") is the status description.
        if !err.eq_ignore_ascii_case("false") {
            code = status::StatusCode::Error;
            if message.is_empty() && !err.eq_ignore_ascii_case("true") {
                message = err;
            }
        }
    }
    if code == status::StatusCode::Unset && message.is_empty() {
        None
    } else {
        Some(Status {
            message,
            code: code as i32,
        })
    }
}

fn take_kind(kind: Option<&str>, tags: &mut BTreeMap<String, String>) -> span::SpanKind {
    use span::SpanKind as K;
    let parse = |s: &str| match s.to_ascii_uppercase().as_str() {
        "CLIENT" => Some(K::Client),
        "SERVER" => Some(K::Server),
        "PRODUCER" => Some(K::Producer),
        "CONSUMER" => Some(K::Consumer),
        "INTERNAL" => Some(K::Internal),
        _ => None,
    };
    let tagged = tags.remove("span.kind");
    kind.and_then(parse)
        .or_else(|| tagged.as_deref().and_then(parse))
        // The spec maps INTERNAL to an absent kind, so absent reads back as INTERNAL.
        .unwrap_or(K::Internal)
}

fn take_count(tags: &mut BTreeMap<String, String>, key: &str) -> u32 {
    match tags.get(key).and_then(|v| v.trim().parse::<u32>().ok()) {
        Some(n) => {
            tags.remove(key);
            n
        }
        None => 0,
    }
}

/// Links from the collector's `otlp.link.N` tags; a tag that does not parse stays an attribute.
fn take_links(tags: &mut BTreeMap<String, String>) -> Vec<span::Link> {
    let mut links = Vec::new();
    for i in 0..MAX_LINK_TAGS {
        let key = format!("otlp.link.{i}");
        let Some(value) = tags.get(&key) else { break };
        if let Some(link) = parse_link(value) {
            links.push(link);
            tags.remove(&key);
        }
    }
    links
}

fn parse_link(value: &str) -> Option<span::Link> {
    // trace|span|tracestate|{json attrs, may contain '|'}|dropped
    let mut head = value.splitn(4, '|');
    let trace = TraceId::from_hex(head.next()?).ok()?;
    let span_id = SpanId::from_hex(head.next()?).ok()?;
    let trace_state = head.next()?.to_string();
    let (json, dropped) = head.next()?.rsplit_once('|')?;
    Some(span::Link {
        trace_id: trace.0.to_vec(),
        span_id: span_id.0.to_vec(),
        trace_state,
        attributes: json_attributes(json)?,
        dropped_attributes_count: dropped.parse().ok()?,
        flags: 0,
    })
}

fn annotation_to_event(a: Annotation) -> span::Event {
    let value = a.value.unwrap_or_default();
    let time_unix_nano = a.timestamp.unwrap_or(0).saturating_mul(1000);
    // The collector's exporter writes `name|{json attributes}|dropped`; anything else is a plain name.
    if let Some((name, rest)) = value.split_once('|') {
        if let Some((json, dropped)) = rest.rsplit_once('|') {
            if let (Some(attributes), Ok(dropped)) = (json_attributes(json), dropped.parse::<u32>())
            {
                return span::Event {
                    time_unix_nano,
                    name: name.to_string(),
                    attributes,
                    dropped_attributes_count: dropped,
                };
            }
        }
    }
    span::Event {
        time_unix_nano,
        name: value,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// A flat JSON object → attributes (strings, integers, doubles, booleans; other values skipped, as
/// the collector does).
fn json_attributes(json: &str) -> Option<Vec<KeyValue>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    Some(
        map.into_iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => Value::StringValue(s),
                    serde_json::Value::Bool(b) => Value::BoolValue(b),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => Value::IntValue(i),
                        None => Value::DoubleValue(n.as_f64()?),
                    },
                    _ => return None,
                };
                Some(kv(k, value))
            })
            .collect(),
    )
}

fn endpoint_ip(e: &Endpoint) -> Option<&str> {
    e.ipv6
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| e.ipv4.as_deref().filter(|s| !s.is_empty()))
}

fn endpoint_port(e: &Endpoint) -> Option<i64> {
    e.port.filter(|p| (1..=65535).contains(p))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{get, get_str};
    use crate::otlp::common::AnyValue;

    fn one(json: &str) -> ConvertedSpan {
        let spans = parse_json(json.as_bytes()).unwrap();
        assert_eq!(spans.len(), 1);
        convert_span(spans.into_iter().next().unwrap()).unwrap()
    }

    fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a AnyValue> {
        get(&s.attributes, k)
    }

    const FULL: &str = r#"[{
        "traceId": "5b8efff798038103d269b633813fc60c",
        "id": "eee19b7ec3c1b174",
        "parentId": "eee19b7ec3c1b173",
        "name": "get /api",
        "kind": "SERVER",
        "timestamp": 1544712660000000,
        "duration": 1500,
        "debug": true,
        "shared": true,
        "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
        "remoteEndpoint": {"serviceName": "backend", "ipv6": "::1", "port": 9000},
        "annotations": [{"timestamp": 1544712660000100, "value": "ws"}],
        "tags": {"http.method": "GET", "http.status_code": 200, "cached": true, "host.name": "box1",
                 "otel.scope.name": "io.lib", "otel.scope.version": "1.2", "nothing": null}
    }]"#;

    #[test]
    fn ids_times_kind_and_name() {
        let c = one(FULL);
        let s = &c.span;
        assert_eq!(hex::encode(&s.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(hex::encode(&s.span_id), "eee19b7ec3c1b174");
        assert_eq!(hex::encode(&s.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!(s.name, "get /api");
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_544_712_660_000_000_000 + 1_500_000);
    }

    #[test]
    fn endpoints_resource_scope_and_tags() {
        let c = one(FULL);
        assert_eq!(
            get_str(&c.resource.attributes, "service.name"),
            Some("frontend")
        );
        assert_eq!(get_str(&c.resource.attributes, "host.name"), Some("box1"));
        assert_eq!(c.scope.name, "io.lib");
        assert_eq!(c.scope.version, "1.2");
        let s = &c.span;
        assert_eq!(
            get_str(&s.attributes, "network.local.address"),
            Some("10.0.0.1")
        );
        assert_eq!(
            attr(s, "network.local.port").unwrap().value,
            Some(Value::IntValue(8080))
        );
        assert_eq!(get_str(&s.attributes, "peer.service"), Some("backend"));
        assert_eq!(get_str(&s.attributes, "network.peer.address"), Some("::1"));
        assert_eq!(
            attr(s, "network.peer.port").unwrap().value,
            Some(Value::IntValue(9000))
        );
        assert_eq!(get_str(&s.attributes, "http.method"), Some("GET"));
        assert_eq!(
            get_str(&s.attributes, "http.status_code"),
            Some("200"),
            "non-string tags become text"
        );
        assert_eq!(get_str(&s.attributes, "cached"), Some("true"));
        assert!(attr(s, "nothing").is_none(), "null tags are dropped");
        assert!(
            attr(s, "host.name").is_none(),
            "resource tags move to the resource"
        );
        assert!(attr(s, "otel.scope.name").is_none());
        assert_eq!(
            attr(s, ZIPKIN_DEBUG).unwrap().value,
            Some(Value::BoolValue(true))
        );
        assert_eq!(
            attr(s, ZIPKIN_SHARED).unwrap().value,
            Some(Value::BoolValue(true))
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "ws");
        assert_eq!(s.events[0].time_unix_nano, 1_544_712_660_000_100_000);
    }

    #[test]
    fn short_ids_are_left_padded() {
        let c =
            one(r#"[{"traceId": "d269b633813fc60c", "id": "1", "parentId": "0000000000000000"}]"#);
        assert_eq!(
            hex::encode(&c.span.trace_id),
            "0000000000000000d269b633813fc60c"
        );
        assert_eq!(hex::encode(&c.span.span_id), "0000000000000001");
        assert!(
            c.span.parent_span_id.is_empty(),
            "all-zero parent is a root"
        );
        // 17 zeros is too long for a span id: that is a bad parent, not a root.
        let spans =
            parse_json(br#"[{"traceId": "1", "id": "1", "parentId": "00000000000000000"}]"#)
                .unwrap();
        assert!(convert_span(spans[0].clone()).is_err());
    }

    #[test]
    fn parent_equal_to_id_is_dropped() {
        let c = one(r#"[{"traceId": "1", "id": "abc", "parentId": "abc"}]"#);
        assert!(c.span.parent_span_id.is_empty());
    }

    #[test]
    fn every_kind() {
        for (z, k) in [
            ("CLIENT", span::SpanKind::Client),
            ("SERVER", span::SpanKind::Server),
            ("PRODUCER", span::SpanKind::Producer),
            ("CONSUMER", span::SpanKind::Consumer),
            ("bogus", span::SpanKind::Internal),
        ] {
            let c = one(&format!(r#"[{{"traceId":"1","id":"2","kind":"{z}"}}]"#));
            assert_eq!(c.span.kind, k as i32, "{z}");
        }
        let c = one(r#"[{"traceId":"1","id":"2"}]"#);
        assert_eq!(c.span.kind, span::SpanKind::Internal as i32);
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"span.kind":"client"}}]"#);
        assert_eq!(c.span.kind, span::SpanKind::Client as i32);
        assert!(attr(&c.span, "span.kind").is_none());
    }

    #[test]
    fn status_from_otel_tags() {
        let c = one(
            r#"[{"traceId":"1","id":"2","tags":{"otel.status_code":"ERROR","otel.status_description":"db down"}}]"#,
        );
        let st = c.span.status.clone().unwrap();
        assert_eq!(st.code, status::StatusCode::Error as i32);
        assert_eq!(st.message, "db down");
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"otel.status_code":"OK"}}]"#);
        assert_eq!(
            c.span.status.clone().unwrap().code,
            status::StatusCode::Ok as i32
        );
        assert!(c.span.attributes.is_empty() || attr(&c.span, "otel.status_code").is_none());
        let c =
            one(r#"[{"traceId":"1","id":"2","tags":{"otel.status_code":"STATUS_CODE_ERROR"}}]"#);
        assert_eq!(
            c.span.status.clone().unwrap().code,
            status::StatusCode::Error as i32
        );
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"otel.status_code":"weird"}}]"#);
        assert!(c.span.status.is_none());
        assert_eq!(
            get_str(&c.span.attributes, "otel.status_code"),
            Some("weird")
        );
    }

    #[test]
    fn status_from_error_tag() {
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"error":"connection refused"}}]"#);
        let st = c.span.status.clone().unwrap();
        assert_eq!(st.code, status::StatusCode::Error as i32);
        assert_eq!(st.message, "connection refused");
        assert!(attr(&c.span, "error").is_none());
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"error":"true"}}]"#);
        let st = c.span.status.clone().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (status::StatusCode::Error as i32, "")
        );
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"error":""}}]"#);
        assert_eq!(
            c.span.status.clone().unwrap().code,
            status::StatusCode::Error as i32
        );
        let c = one(r#"[{"traceId":"1","id":"2","tags":{"error":false}}]"#);
        assert!(
            c.span.status.is_none(),
            "error=false is removed, not an error"
        );
        assert!(attr(&c.span, "error").is_none());
        let c =
            one(r#"[{"traceId":"1","id":"2","tags":{"otel.status_code":"OK","error":"boom"}}]"#);
        assert_eq!(
            c.span.status.clone().unwrap().code,
            status::StatusCode::Error as i32
        );
    }

    #[test]
    fn legacy_library_tags_are_the_scope() {
        let c = one(
            r#"[{"traceId":"1","id":"2","tags":{"otel.library.name":"old","otel.library.version":"0.1"}}]"#,
        );
        assert_eq!(
            (c.scope.name.as_str(), c.scope.version.as_str()),
            ("old", "0.1")
        );
        assert!(c
            .span
            .attributes
            .iter()
            .all(|kv| !kv.key.starts_with("otel.library")));
    }

    #[test]
    fn explicit_peer_tags_win_over_remote_endpoint() {
        let c = one(
            r#"[{"traceId":"1","id":"2","remoteEndpoint":{"serviceName":"ep","ipv4":"1.2.3.4","port":0},
                "tags":{"peer.service":"tagged"}}]"#,
        );
        let peers: Vec<_> = c
            .span
            .attributes
            .iter()
            .filter(|kv| kv.key == "peer.service")
            .collect();
        assert_eq!(peers.len(), 1);
        assert_eq!(get_str(&c.span.attributes, "peer.service"), Some("tagged"));
        assert_eq!(
            get_str(&c.span.attributes, "network.peer.address"),
            Some("1.2.3.4")
        );
        assert!(
            attr(&c.span, "network.peer.port").is_none(),
            "port 0 means unknown"
        );
    }

    #[test]
    fn missing_timestamp_is_flagged() {
        let c = one(r#"[{"traceId":"1","id":"2","duration":7}]"#);
        assert_eq!(c.span.start_time_unix_nano, 0);
        assert_eq!(c.span.end_time_unix_nano, 7000);
        assert_eq!(
            attr(&c.span, START_TIME_ABSENT).unwrap().value,
            Some(Value::BoolValue(true))
        );
    }

    #[test]
    fn huge_times_saturate() {
        let c = one(&format!(
            r#"[{{"traceId":"1","id":"2","timestamp":{},"duration":{}}}]"#,
            u64::MAX,
            u64::MAX
        ));
        assert_eq!(c.span.start_time_unix_nano, u64::MAX);
        assert_eq!(c.span.end_time_unix_nano, u64::MAX);
    }

    #[test]
    fn tracestate_dropped_counts_and_links() {
        let c = one(r#"[{"traceId":"1","id":"2","tags":{
                "w3c.tracestate":"k=v",
                "otel.dropped_attributes_count":"3","otel.dropped_events_count":"4","otel.dropped_links_count":"5",
                "otlp.link.0":"0102030405060708090a0b0c0d0e0f10|0102030405060708|st|{\"a\":\"b\",\"n\":1,\"x\":\"p|q\"}|2",
                "otlp.link.1":"garbage"}}]"#);
        let s = &c.span;
        assert_eq!(s.trace_state, "k=v");
        assert_eq!(
            (
                s.dropped_attributes_count,
                s.dropped_events_count,
                s.dropped_links_count
            ),
            (3, 4, 5)
        );
        assert_eq!(s.links.len(), 1);
        let l = &s.links[0];
        assert_eq!(hex::encode(&l.trace_id), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(l.trace_state, "st");
        assert_eq!(l.dropped_attributes_count, 2);
        assert_eq!(get_str(&l.attributes, "x"), Some("p|q"));
        assert_eq!(
            get(&l.attributes, "n").unwrap().value,
            Some(Value::IntValue(1))
        );
        assert_eq!(
            get_str(&s.attributes, "otlp.link.1"),
            Some("garbage"),
            "unparsable link stays a tag"
        );
    }

    #[test]
    fn annotations_with_attributes() {
        let c = one(r#"[{"traceId":"1","id":"2","annotations":[
                {"timestamp":5,"value":"exception|{\"exception.type\":\"E\",\"d\":1.5,\"ok\":true}|1"},
                {"timestamp":6,"value":"a|b"},
                {"value":null}]}]"#);
        let ev = &c.span.events;
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].name, "exception");
        assert_eq!(ev[0].time_unix_nano, 5000);
        assert_eq!(ev[0].dropped_attributes_count, 1);
        assert_eq!(get_str(&ev[0].attributes, "exception.type"), Some("E"));
        assert_eq!(
            get(&ev[0].attributes, "d").unwrap().value,
            Some(Value::DoubleValue(1.5))
        );
        assert_eq!(ev[1].name, "a|b", "not the attribute form: kept whole");
        assert_eq!(ev[2].name, "");
    }

    #[test]
    fn groups_by_resource_and_scope() {
        let body = br#"[
            {"traceId":"1","id":"1","localEndpoint":{"serviceName":"a"}},
            {"traceId":"1","id":"2","localEndpoint":{"serviceName":"b"}},
            {"traceId":"1","id":"3","localEndpoint":{"serviceName":"a"},"tags":{"otel.scope.name":"s"}},
            {"traceId":"1","id":"4","localEndpoint":{"serviceName":"a"}},
            {"traceId":"1","id":"5"}
        ]"#;
        let c = decode_json(body).unwrap();
        assert_eq!(c.received_spans, 5);
        assert_eq!(c.report.rejected_spans, 0);
        assert_eq!(c.resource_spans.len(), 3);
        let a = &c.resource_spans[0];
        assert_eq!(
            get_str(&a.resource.as_ref().unwrap().attributes, "service.name"),
            Some("a")
        );
        assert_eq!(a.scope_spans.len(), 2);
        assert_eq!(a.scope_spans[0].spans.len(), 2);
        assert_eq!(a.scope_spans[1].scope.as_ref().unwrap().name, "s");
        assert!(
            c.resource_spans[2]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .is_empty(),
            "no service: no service.name"
        );
    }

    #[test]
    fn invalid_ids_rejected_per_span() {
        let body = br#"[
            {"traceId":"1","id":"1","name":"good"},
            {"traceId":"00000000000000000000000000000000","id":"2","name":"zero trace"},
            {"traceId":"xyz","id":"3"},
            {"id":"4"},
            {"traceId":"1"},
            {"traceId":"1","id":"00000000000000001"},
            {"traceId":"1","id":"5","parentId":"zz"},
            {"traceId":"111111111111111111111111111111111","id":"6"}
        ]"#;
        let c = decode_json(body).unwrap();
        assert_eq!(c.received_spans, 8);
        assert_eq!(c.report.rejected_spans, 7);
        let msg = c.report.first_error.unwrap();
        assert!(
            msg.contains("#1") && msg.contains("zero trace") && msg.contains("all zeros"),
            "{msg}"
        );
        assert_eq!(c.resource_spans.len(), 1);
        assert_eq!(c.resource_spans[0].scope_spans[0].spans[0].name, "good");
    }

    #[test]
    fn rejected_parent_is_named() {
        let spans = parse_json(br#"[{"traceId":"1","id":"5","parentId":"zz"}]"#).unwrap();
        let err = convert_span(spans[0].clone()).unwrap_err();
        assert!(
            err.error.to_string().contains("parent span id"),
            "{}",
            err.error
        );
    }

    #[test]
    fn empty_and_null_collections() {
        assert_eq!(decode_json(b"[]").unwrap(), Converted::default());
        let c = one(
            r#"[{"traceId":"1","id":"2","tags":null,"annotations":null,"localEndpoint":null}]"#,
        );
        assert!(c.resource.attributes.is_empty());
    }

    #[test]
    fn garbage_truncation_and_wrong_types_are_errors_with_location() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"[{\"traceId\": \"1\", \"id\": \"2\"",
            br#"[{"traceId": 1, "id": "2"}]"#,
            br#"[{"traceId": "1", "timestamp": "yesterday"}]"#,
            br#"[{"traceId": "1", "timestamp": -5}]"#,
            br#"[{"traceId": "1", "annotations": {}}]"#,
            b"",
            &[0xff, 0xfe, 0x00],
        ] {
            let e = decode_json(bad).unwrap_err();
            assert!(e.to_string().contains("line"), "{e}");
        }
        let e = parse_json(b"[\n{\"traceId\": 7}]").unwrap_err();
        assert_eq!(e.line, 2);
        // Every prefix of a valid payload either parses or errors; none panics.
        for i in 0..FULL.len() {
            let _ = decode_json(&FULL.as_bytes()[..i]);
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "[{{\"traceId\":\"1\",\"id\":\"2\",\"tags\":{{\"t\":{}{}}}}}]",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(decode_json(deep.as_bytes()).is_err());
    }
}
