//! OTLP spans → Jaeger UI JSON (`model/json` in Jaeger), mapped as Jaeger's own OTLP translator
//! does: span kind, status, scope, trace state and dropped counts become tags, the parent becomes a
//! `CHILD_OF` reference and links `FOLLOWS_FROM`, events become logs, and resources become
//! deduplicated `processes`.

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::{span::SpanKind, status::StatusCode, Span};
use clew_model::{attrs, FlatSpan};
use serde::Serialize;
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<JSpan>,
    /// Sorted map so that `p1, p2, ...` serialize in a stable order.
    pub processes: BTreeMap<String, Process>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JSpan {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    /// W3C trace flags; Jaeger's sampled bit is the same bit. Omitted when zero, as Jaeger does.
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u32,
    #[serde(rename = "operationName")]
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the epoch.
    #[serde(rename = "startTime")]
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: RefType,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RefType {
    #[serde(rename = "CHILD_OF")]
    ChildOf,
    #[serde(rename = "FOLLOWS_FROM")]
    FollowsFrom,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: TagType,
    pub value: J,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TagType {
    String,
    Bool,
    Int64,
    Float64,
    Binary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    /// Microseconds since the epoch.
    pub timestamp: u64,
    pub fields: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    pub tags: Vec<Tag>,
}

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32 (Jaeger's
/// `TraceID.String()`); any other length is rendered as plain hex.
pub fn trace_id_text(bytes: &[u8]) -> String {
    match <[u8; 16]>::try_from(bytes) {
        Ok(arr) if arr[..8] == [0u8; 8] => hex::encode(&arr[8..]),
        _ => hex::encode(bytes),
    }
}

/// Span id text: 16 hex digits.
pub fn span_id_text(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The Jaeger name of an OTLP span kind, or `None` for unspecified/unknown values.
pub fn span_kind_name(kind: i32) -> Option<&'static str> {
    match SpanKind::try_from(kind).ok()? {
        SpanKind::Unspecified => None,
        SpanKind::Internal => Some("internal"),
        SpanKind::Server => Some("server"),
        SpanKind::Client => Some("client"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
    }
}

fn string_tag(key: &str, value: impl Into<String>) -> Tag {
    Tag {
        key: key.to_string(),
        kind: TagType::String,
        value: J::String(value.into()),
    }
}

fn int_tag(key: &str, value: i64) -> Tag {
    Tag {
        key: key.to_string(),
        kind: TagType::Int64,
        value: J::from(value),
    }
}

/// One attribute as a Jaeger tag. Arrays and maps become JSON text (Jaeger has no such types);
/// non-finite doubles, which JSON cannot carry as numbers, become strings.
pub fn attribute_to_tag(key: &str, value: Option<&AnyValue>) -> Tag {
    let Some(v) = value.and_then(|v| v.value.as_ref()) else {
        return string_tag(key, "");
    };
    match v {
        Value::StringValue(s) => string_tag(key, s.clone()),
        Value::BoolValue(b) => Tag {
            key: key.to_string(),
            kind: TagType::Bool,
            value: J::Bool(*b),
        },
        Value::IntValue(i) => int_tag(key, *i),
        Value::DoubleValue(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => Tag {
                key: key.to_string(),
                kind: TagType::Float64,
                value: J::Number(n),
            },
            None => string_tag(key, d.to_string()),
        },
        Value::BytesValue(_) => Tag {
            key: key.to_string(),
            kind: TagType::Binary,
            // `value` is Some here; to_text renders bytes as base64, as Go's JSON does for []byte.
            value: J::String(value.map(attrs::to_text).unwrap_or_default()),
        },
        // A string-table index only means something inside a profiles dictionary; shown as text.
        Value::ArrayValue(_) | Value::KvlistValue(_) | Value::StringValueStrindex(_) => {
            string_tag(key, value.map(attrs::to_text).unwrap_or_default())
        }
    }
}

fn attributes_to_tags(attributes: &[KeyValue], out: &mut Vec<Tag>) {
    out.extend(
        attributes
            .iter()
            .map(|kv| attribute_to_tag(&kv.key, kv.value.as_ref())),
    );
}

fn is_set_id(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().any(|b| *b != 0)
}

/// The span's tags in the order Jaeger's translator emits them.
pub fn span_tags(fs: &FlatSpan) -> Vec<Tag> {
    let span = &fs.span;
    let mut tags = Vec::with_capacity(span.attributes.len() + 6);
    if !fs.scope.name.is_empty() {
        tags.push(string_tag("otel.scope.name", fs.scope.name.clone()));
    }
    if !fs.scope.version.is_empty() {
        tags.push(string_tag("otel.scope.version", fs.scope.version.clone()));
    }
    attributes_to_tags(&span.attributes, &mut tags);
    if let Some(kind) = span_kind_name(span.kind) {
        tags.push(string_tag("span.kind", kind));
    }
    if let Some(status) = &span.status {
        match StatusCode::try_from(status.code) {
            Ok(StatusCode::Ok) => tags.push(string_tag("otel.status_code", "OK")),
            Ok(StatusCode::Error) => {
                tags.push(string_tag("otel.status_code", "ERROR"));
                // An `error` attribute set by the instrumentation is kept rather than doubled.
                if !span.attributes.iter().any(|kv| kv.key == "error") {
                    tags.push(Tag {
                        key: "error".into(),
                        kind: TagType::Bool,
                        value: J::Bool(true),
                    });
                }
            }
            _ => {}
        }
        if !status.message.is_empty() {
            tags.push(string_tag(
                "otel.status_description",
                status.message.clone(),
            ));
        }
    }
    if !span.trace_state.is_empty() {
        tags.push(string_tag("w3c.tracestate", span.trace_state.clone()));
    }
    for (key, count) in [
        (
            "otel.dropped_attributes_count",
            span.dropped_attributes_count,
        ),
        ("otel.dropped_events_count", span.dropped_events_count),
        ("otel.dropped_links_count", span.dropped_links_count),
    ] {
        if count != 0 {
            tags.push(int_tag(key, i64::from(count)));
        }
    }
    tags
}

pub fn span_references(span: &Span) -> Vec<Reference> {
    let mut refs = Vec::with_capacity(span.links.len() + 1);
    // The parent goes first: Jaeger consumers take the first CHILD_OF as the parent.
    if is_set_id(&span.parent_span_id) {
        refs.push(Reference {
            ref_type: RefType::ChildOf,
            trace_id: trace_id_text(&span.trace_id),
            span_id: span_id_text(&span.parent_span_id),
        });
    }
    refs.extend(span.links.iter().map(|link| Reference {
        ref_type: RefType::FollowsFrom,
        trace_id: trace_id_text(&link.trace_id),
        span_id: span_id_text(&link.span_id),
    }));
    refs
}

pub fn span_logs(span: &Span) -> Vec<Log> {
    span.events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 1);
            if !event.name.is_empty() {
                fields.push(string_tag("event", event.name.clone()));
            }
            attributes_to_tags(&event.attributes, &mut fields);
            Log {
                timestamp: event.time_unix_nano / 1_000,
                fields,
            }
        })
        .collect()
}

/// The Jaeger process of a span's resource: `service.name` plus the other resource attributes.
pub fn process_of(fs: &FlatSpan) -> Process {
    let mut tags = Vec::with_capacity(fs.resource.attributes.len());
    for kv in fs
        .resource
        .attributes
        .iter()
        .filter(|kv| kv.key != attrs::SERVICE_NAME)
    {
        tags.push(attribute_to_tag(&kv.key, kv.value.as_ref()));
    }
    Process {
        service_name: fs.service_name().to_string(),
        tags,
    }
}

/// Converts one trace's spans (in the given order) to a Jaeger trace. Processes are deduplicated
/// by content and numbered `p1, p2, ...` in order of first use. Returns `None` for no spans.
pub fn to_jaeger_trace(spans: &[FlatSpan]) -> Option<Trace> {
    let first = spans.first()?;
    let mut processes = BTreeMap::new();
    let mut by_content: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(spans.len());
    // Spans of one resource share its `Arc`: convert each resource once.
    let mut by_resource: HashMap<*const clew_model::otlp::resource::Resource, String> =
        HashMap::new();
    for fs in spans {
        let process_id = match by_resource.get(&Arc::as_ptr(&fs.resource)) {
            // Same resource, and the service name comes from the resource: same process.
            Some(id) => id.clone(),
            None => {
                let process = process_of(fs);
                // Serialized form as the dedup key: tags hold JSON values, which are not hashable.
                let key = serde_json::to_string(&process).unwrap_or_default();
                let next_id = by_content.len() + 1;
                let id = by_content
                    .entry(key)
                    .or_insert_with(|| {
                        let id = format!("p{next_id}");
                        processes.insert(id.clone(), process);
                        id
                    })
                    .clone();
                by_resource.insert(Arc::as_ptr(&fs.resource), id.clone());
                id
            }
        };
        let span = &fs.span;
        out.push(JSpan {
            trace_id: trace_id_text(&span.trace_id),
            span_id: span_id_text(&span.span_id),
            flags: span.flags & 0xff,
            operation_name: span.name.clone(),
            references: span_references(span),
            start_time: span.start_time_unix_nano / 1_000,
            duration: fs.duration_nanos() / 1_000,
            tags: span_tags(fs),
            logs: span_logs(span),
            process_id,
            warnings: None,
        });
    }
    Some(Trace {
        trace_id: trace_id_text(&first.span.trace_id),
        spans: out,
        processes,
        warnings: None,
    })
}

/// Fills the spans' `warnings` from the trace doctor (orphans — "parent span X not in trace" —,
/// extra roots, clock skew, duplicate ids) and applies its clock-skew adjustment to the displayed
/// times, as Jaeger's query service does with its adjusters. `trace` must come from
/// [`to_jaeger_trace`] over the same `spans`, in the same order.
pub fn apply_doctor(trace: &mut Trace, spans: &[FlatSpan]) {
    let analysis = clew_doctor::analyze_trace(spans, &clew_doctor::TraceOptions::default());
    if analysis.warnings.is_empty() && analysis.skew_adjustments.is_empty() {
        return;
    }
    for js in &mut trace.spans {
        if let Some(w) = analysis.warnings.get(&js.span_id) {
            js.warnings
                .get_or_insert_with(Vec::new)
                .extend(w.iter().cloned());
        }
        if let Some(&delta) = analysis.skew_adjustments.get(&js.span_id) {
            let shift = |t: u64| t.saturating_add_signed(delta / 1_000);
            js.start_time = shift(js.start_time);
            for log in &mut js.logs {
                log.timestamp = shift(log.timestamp);
            }
        }
    }
}

/// [`to_jaeger_trace`] plus [`apply_doctor`]: what the Jaeger API serves.
pub fn to_jaeger_trace_with_warnings(spans: &[FlatSpan]) -> Option<Trace> {
    let mut trace = to_jaeger_trace(spans)?;
    apply_doctor(&mut trace, spans);
    Some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::attrs::{kv, kv_int, kv_str};
    use clew_model::otlp::common::{ArrayValue, InstrumentationScope};
    use clew_model::otlp::resource::Resource;
    use clew_model::otlp::trace::{span, Status};
    use serde_json::json;
    use std::sync::Arc;

    fn flat(resource: &Arc<Resource>, scope: &Arc<InstrumentationScope>, span: Span) -> FlatSpan {
        FlatSpan {
            resource: resource.clone(),
            resource_schema_url: Arc::from(""),
            scope: scope.clone(),
            scope_schema_url: Arc::from(""),
            span,
        }
    }

    fn tag_json(tags: &[Tag]) -> serde_json::Value {
        serde_json::to_value(tags).unwrap_or_default()
    }

    const TID: [u8; 16] = [0xab; 16];

    fn base_span() -> Span {
        Span {
            trace_id: TID.to_vec(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "GET /x".into(),
            start_time_unix_nano: 1_700_000_000_123_456_789,
            end_time_unix_nano: 1_700_000_000_135_756_789,
            ..Default::default()
        }
    }

    #[test]
    fn attribute_types() {
        let bytes = AnyValue {
            value: Some(Value::BytesValue(vec![0xde, 0xad])),
        };
        let arr = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    attrs::string_value("a"),
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                ],
            })),
        };
        let tags = vec![
            attribute_to_tag("s", Some(&attrs::string_value("v"))),
            attribute_to_tag(
                "b",
                Some(&AnyValue {
                    value: Some(Value::BoolValue(true)),
                }),
            ),
            attribute_to_tag(
                "i",
                Some(&AnyValue {
                    value: Some(Value::IntValue(-7)),
                }),
            ),
            attribute_to_tag(
                "d",
                Some(&AnyValue {
                    value: Some(Value::DoubleValue(1.5)),
                }),
            ),
            attribute_to_tag(
                "nan",
                Some(&AnyValue {
                    value: Some(Value::DoubleValue(f64::NAN)),
                }),
            ),
            attribute_to_tag("bin", Some(&bytes)),
            attribute_to_tag("arr", Some(&arr)),
            attribute_to_tag("none", None),
        ];
        assert_eq!(
            tag_json(&tags),
            json!([
                {"key": "s", "type": "string", "value": "v"},
                {"key": "b", "type": "bool", "value": true},
                {"key": "i", "type": "int64", "value": -7},
                {"key": "d", "type": "float64", "value": 1.5},
                {"key": "nan", "type": "string", "value": "NaN"},
                {"key": "bin", "type": "binary", "value": "3q0="},
                {"key": "arr", "type": "string", "value": "[\"a\",1]"},
                {"key": "none", "type": "string", "value": ""},
            ])
        );
    }

    #[test]
    fn every_derived_tag() {
        let resource = Arc::new(Resource {
            attributes: vec![kv_str("service.name", "cart")],
            ..Default::default()
        });
        let scope = Arc::new(InstrumentationScope {
            name: "io.lib".into(),
            version: "1.2".into(),
            ..Default::default()
        });
        let span = Span {
            attributes: vec![kv_str("http.method", "GET")],
            kind: span::SpanKind::Client as i32,
            status: Some(Status {
                code: StatusCode::Error as i32,
                message: "boom".into(),
            }),
            trace_state: "vendor=x".into(),
            dropped_attributes_count: 3,
            dropped_events_count: 0,
            dropped_links_count: 2,
            ..base_span()
        };
        let tags = span_tags(&flat(&resource, &scope, span));
        assert_eq!(
            tag_json(&tags),
            json!([
                {"key": "otel.scope.name", "type": "string", "value": "io.lib"},
                {"key": "otel.scope.version", "type": "string", "value": "1.2"},
                {"key": "http.method", "type": "string", "value": "GET"},
                {"key": "span.kind", "type": "string", "value": "client"},
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "boom"},
                {"key": "w3c.tracestate", "type": "string", "value": "vendor=x"},
                {"key": "otel.dropped_attributes_count", "type": "int64", "value": 3},
                {"key": "otel.dropped_links_count", "type": "int64", "value": 2},
            ])
        );
    }

    #[test]
    fn kinds_and_statuses() {
        let resource = Arc::new(Resource::default());
        let scope = Arc::new(InstrumentationScope::default());
        let kinds = [
            (0, None),
            (1, Some("internal")),
            (2, Some("server")),
            (3, Some("client")),
            (4, Some("producer")),
            (5, Some("consumer")),
            (99, None),
        ];
        for (kind, expected) in kinds {
            let tags = span_tags(&flat(
                &resource,
                &scope,
                Span {
                    kind,
                    ..base_span()
                },
            ));
            let found = tags
                .iter()
                .find(|t| t.key == "span.kind")
                .map(|t| t.value.clone());
            assert_eq!(found, expected.map(|s| J::String(s.into())), "kind {kind}");
        }
        // OK: status code tag but no error; unset: nothing; empty scope: no scope tags.
        let ok = span_tags(&flat(
            &resource,
            &scope,
            Span {
                status: Some(Status {
                    code: 1,
                    message: String::new(),
                }),
                ..base_span()
            },
        ));
        assert_eq!(
            tag_json(&ok),
            json!([{"key": "otel.status_code", "type": "string", "value": "OK"}])
        );
        let unset = span_tags(&flat(
            &resource,
            &scope,
            Span {
                status: Some(Status::default()),
                ..base_span()
            },
        ));
        assert!(unset.is_empty());
        // An instrumentation-provided `error` attribute is not duplicated.
        let own_error = Span {
            attributes: vec![kv("error", Value::BoolValue(true))],
            status: Some(Status {
                code: 2,
                message: String::new(),
            }),
            ..base_span()
        };
        let tags = span_tags(&flat(&resource, &scope, own_error));
        assert_eq!(tags.iter().filter(|t| t.key == "error").count(), 1);
    }

    #[test]
    fn references_logs_times_and_ids() {
        use clew_model::otlp::trace::span::{Event, Link};
        let resource = Arc::new(Resource::default());
        let scope = Arc::new(InstrumentationScope::default());
        let mut low_trace = [0u8; 16];
        low_trace[15] = 0x2a;
        let span = Span {
            parent_span_id: vec![9; 8],
            links: vec![Link {
                trace_id: low_trace.to_vec(),
                span_id: vec![7; 8],
                ..Default::default()
            }],
            events: vec![
                Event {
                    time_unix_nano: 1_700_000_000_200_000_999,
                    name: "retry".into(),
                    attributes: vec![kv_int("attempt", 2)],
                    ..Default::default()
                },
                Event {
                    time_unix_nano: 5_000,
                    name: String::new(),
                    attributes: vec![],
                    ..Default::default()
                },
            ],
            flags: 0x301,
            ..base_span()
        };
        let trace = to_jaeger_trace(&[flat(&resource, &scope, span)]).expect("one span");
        let v = serde_json::to_value(&trace).unwrap_or_default();
        let s = &v["spans"][0];
        assert_eq!(s["traceID"], json!("ab".repeat(16)));
        assert_eq!(s["spanID"], json!("0102030405060708"));
        assert_eq!(s["startTime"], json!(1_700_000_000_123_456u64));
        assert_eq!(s["duration"], json!(12_300));
        assert_eq!(s["flags"], json!(1));
        assert_eq!(
            s["references"],
            json!([
                {"refType": "CHILD_OF", "traceID": "ab".repeat(16), "spanID": "0909090909090909"},
                {"refType": "FOLLOWS_FROM", "traceID": "000000000000002a", "spanID": "0707070707070707"},
            ])
        );
        assert_eq!(
            s["logs"],
            json!([
                {"timestamp": 1_700_000_000_200_000u64, "fields": [
                    {"key": "event", "type": "string", "value": "retry"},
                    {"key": "attempt", "type": "int64", "value": 2},
                ]},
                {"timestamp": 5, "fields": []},
            ])
        );
        assert_eq!(s["warnings"], json!(null));
        assert_eq!(s["processID"], json!("p1"));
        assert_eq!(v["warnings"], json!(null));
    }

    #[test]
    fn root_span_has_no_references_and_no_flags_field() {
        let resource = Arc::new(Resource::default());
        let scope = Arc::new(InstrumentationScope::default());
        let with_zero_parent = Span {
            parent_span_id: vec![0; 8],
            ..base_span()
        };
        let trace =
            to_jaeger_trace(&[flat(&resource, &scope, with_zero_parent)]).expect("one span");
        let v = serde_json::to_value(&trace).unwrap_or_default();
        assert_eq!(v["spans"][0]["references"], json!([]));
        assert!(v["spans"][0].get("flags").is_none());
        assert_eq!(
            v["processes"]["p1"],
            json!({"serviceName": "unknown_service", "tags": []})
        );
    }

    #[test]
    fn processes_are_deduplicated_by_content() {
        let res = |svc: &str, host: &str| {
            Arc::new(Resource {
                attributes: vec![kv_str("service.name", svc), kv_str("host.name", host)],
                ..Default::default()
            })
        };
        let scope = Arc::new(InstrumentationScope::default());
        let a1 = res("a", "h1");
        let a1_copy = res("a", "h1"); // equal content, different Arc
        let a2 = res("a", "h2");
        let b1 = res("b", "h1");
        let spans = vec![
            flat(&a1, &scope, base_span()),
            flat(&b1, &scope, base_span()),
            flat(&a1_copy, &scope, base_span()),
            flat(&a2, &scope, base_span()),
            flat(&a1, &scope, base_span()),
        ];
        let trace = to_jaeger_trace(&spans).expect("spans");
        let ids: Vec<&str> = trace.spans.iter().map(|s| s.process_id.as_str()).collect();
        assert_eq!(ids, vec!["p1", "p2", "p1", "p3", "p1"]);
        let v = serde_json::to_value(&trace.processes).unwrap_or_default();
        assert_eq!(
            v,
            json!({
                "p1": {"serviceName": "a", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
                "p2": {"serviceName": "b", "tags": [{"key": "host.name", "type": "string", "value": "h1"}]},
                "p3": {"serviceName": "a", "tags": [{"key": "host.name", "type": "string", "value": "h2"}]},
            })
        );
        assert!(to_jaeger_trace(&[]).is_none());
    }

    #[test]
    fn doctor_warnings_and_skew_adjustment() {
        let scope = Arc::new(InstrumentationScope::default());
        let res = |svc: &str, host: &str| {
            Arc::new(Resource {
                attributes: vec![kv_str("service.name", svc), kv_str("host.name", host)],
                ..Default::default()
            })
        };
        let (a, b) = (res("a", "h1"), res("b", "h2"));
        let root = Span {
            span_id: vec![1; 8],
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_100_000_000,
            kind: span::SpanKind::Client as i32,
            ..base_span()
        };
        // b's clock is 50 ms behind: starts before its parent.
        let skewed = Span {
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            start_time_unix_nano: 950_000_000,
            end_time_unix_nano: 1_030_000_000,
            kind: span::SpanKind::Server as i32,
            ..base_span()
        };
        let orphan = Span {
            span_id: vec![3; 8],
            parent_span_id: vec![9; 8],
            start_time_unix_nano: 1_010_000_000,
            end_time_unix_nano: 1_020_000_000,
            ..base_span()
        };
        let spans = vec![
            flat(&a, &scope, root),
            flat(&b, &scope, skewed),
            flat(&a, &scope, orphan),
        ];
        let trace = to_jaeger_trace_with_warnings(&spans).expect("trace");
        assert_eq!(trace.spans[0].warnings, None);
        let w = trace.spans[1].warnings.clone().unwrap_or_default();
        assert!(
            w[0].starts_with("clock skew: span starts 50.000ms before its parent"),
            "{w:?}"
        );
        // Centered in the parent: 1_000 ms + (100 - 80) / 2 ms.
        assert_eq!(trace.spans[1].start_time, 1_010_000);
        let w = trace.spans[2].warnings.clone().unwrap_or_default();
        assert_eq!(
            w,
            vec!["parent span 0909090909090909 not in trace (context lost, or the parent span was not exported)".to_string()]
        );
        assert_eq!(trace.spans[2].start_time, 1_010_000);
    }

    #[test]
    fn id_texts() {
        let mut t = [0u8; 16];
        t[8] = 1;
        assert_eq!(trace_id_text(&t), "0100000000000000");
        t[0] = 1;
        assert_eq!(trace_id_text(&t), "01000000000000000100000000000000");
        assert_eq!(trace_id_text(&[1, 2]), "0102");
    }
}
