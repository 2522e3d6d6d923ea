//! Grafana Tempo's HTTP API, so Grafana's Tempo data source (search, TraceQL editor, trace view)
//! works against Clew unchanged: `/api/echo`, `/api/status/buildinfo`, `/ready`, trace by id
//! (`/api/traces/{id}`, `/api/v2/traces/{id}`; Tempo's protobuf with `Accept:
//! application/protobuf`, JSON otherwise), `/api/search` (TraceQL through
//! [`clew_traceql::search`]; `tags`/`minDuration`/`maxDuration` are turned into TraceQL), and the
//! tag name/value endpoints (v1 and v2) over [`TraceReader::tag_names`]/`tag_values` and the
//! service/operation catalog. Message shapes: [`proto`], mirrored from the vendored
//! `proto/tempopb/tempo.proto`.
//!
//! Tenancy as on every query route: the tenant header (Tempo's own `X-Scope-OrgID` by default),
//! which the listener's tenant gate has already rewritten when authentication is on.
//!
//! Errors are plain text, as Tempo answers: 400 with the message (a TraceQL parse error names the
//! position), 404 with an empty body for an unknown trace (Grafana falls back from v2 to v1 on
//! it), 500 for store failures.

pub mod params;
pub mod proto;

use crate::common::{ApiError, AppState, MAX_TRACES_PER_SEARCH};
use crate::params::{parse_duration_nanos, parse_trace_id, parse_u64, QueryParams};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::{group_into_resource_spans, FlatSpan, Tenant};
use clew_store::{AttrScope, TagValue};
use clew_traceql::{SearchRequest, TraceMatch, TraceqlError};
use prost::Message;
use std::collections::BTreeSet;

/// The Tempo version Clew reports in `/api/status/buildinfo`. Grafana enables features by the
/// reported version (TraceQL search, v2 tag endpoints, v2 trace by id need ≥ 2.x); Clew serves the
/// API of this Tempo release.
pub const TEMPO_COMPATIBLE_VERSION: &str = "2.8.0";

/// Tempo's defaults for `/api/search`.
const DEFAULT_LIMIT: usize = 20;
const DEFAULT_SPANS_PER_SPANSET: usize = 3;
/// At most this many values per tag-values answer unless `limit` asks for fewer: an unbounded
/// answer for a high-cardinality key would be megabytes that an autocomplete list cannot show.
const DEFAULT_TAG_VALUES_LIMIT: usize = 5_000;

/// TraceQL's intrinsics, as Tempo lists them under the `intrinsic` scope (the subset Clew's TraceQL
/// evaluates).
pub const INTRINSIC_TAGS: &[&str] = &[
    "duration",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:kind",
    "span:name",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// TraceQL's span status and kind keywords, the values of the `status` and `kind` intrinsics.
const STATUS_VALUES: &[&str] = &["error", "ok", "unset"];
const KIND_VALUES: &[&str] = &[
    "client",
    "consumer",
    "internal",
    "producer",
    "server",
    "unspecified",
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/echo", get(echo))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/ready", get(ready))
        .route("/api/traces/{trace_id}", get(trace_v1))
        .route("/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(tag_values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tag_values_v2))
}

/// An [`ApiError`] as Tempo renders errors: plain text, and an empty body for 404.
pub(crate) struct TempoError(ApiError);

impl From<ApiError> for TempoError {
    fn from(e: ApiError) -> Self {
        TempoError(e)
    }
}

impl From<clew_store::StoreError> for TempoError {
    fn from(e: clew_store::StoreError) -> Self {
        TempoError(ApiError::Store(e))
    }
}

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.status();
        if status == StatusCode::NOT_FOUND {
            return status.into_response();
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.0.to_string(),
        )
            .into_response()
    }
}

fn bad(name: &str, e: impl std::fmt::Display) -> TempoError {
    TempoError(ApiError::BadRequest(format!("invalid {name}: {e}")))
}

async fn echo() -> &'static str {
    "echo"
}

async fn ready() -> &'static str {
    "ready"
}

async fn buildinfo() -> Json<serde_json::Value> {
    // Grafana reads `version` (semver); Clew's own version goes where nothing parses it.
    let clew = env!("CARGO_PKG_VERSION");
    Json(serde_json::json!({
        "version": TEMPO_COMPATIBLE_VERSION,
        "revision": format!("clew-{clew}"),
        "branch": "clew",
        "buildUser": "clew",
        "buildDate": "",
        "goVersion": format!("none (Clew {clew}, Rust)"),
    }))
}

/// `start`/`end` in Unix seconds, both optional; `end` covers its whole second.
fn seconds_range(q: &QueryParams) -> Result<(Option<u64>, Option<u64>), TempoError> {
    let secs = |name: &str| -> Result<Option<u64>, TempoError> {
        match q.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => {
                let s = parse_u64(v).map_err(|e| bad(name, e))?;
                let ns = s
                    .checked_mul(1_000_000_000)
                    .ok_or_else(|| bad(name, format!("{s} seconds is out of range")))?;
                Ok(Some(ns))
            }
        }
    };
    let start = secs("start")?;
    let end = secs("end")?.map(|e| e.saturating_add(999_999_999));
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(bad("start", "start is after end"));
        }
    }
    Ok((start, end))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

/// The trace's spans, or 404 (unknown, or no span overlapping `start`/`end` when given: Tempo
/// looks only at blocks of that window).
async fn load_trace(
    st: &AppState,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
    raw: Option<&str>,
) -> Result<Vec<FlatSpan>, TempoError> {
    let tenant = st.tenant(headers)?;
    let Path(id) = id.map_err(|e| bad("trace id", e))?;
    let id = parse_trace_id(&id).map_err(|e| bad("trace id", e))?;
    let (start, end) = seconds_range(&QueryParams::parse(raw))?;
    let spans = st.reader.trace(&tenant, id).await?;
    let in_window = |s: &FlatSpan| {
        start.is_none_or(|st| s.span.end_time_unix_nano >= st)
            && end.is_none_or(|en| s.span.start_time_unix_nano <= en)
    };
    if spans.is_empty() || !spans.iter().any(in_window) {
        return Err(TempoError(ApiError::NotFound(String::new())));
    }
    Ok(spans)
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response()
}

async fn trace_v1(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let spans = load_trace(&st, &headers, id, raw.as_deref()).await?;
    let trace = proto::Trace {
        resource_spans: group_into_resource_spans(spans),
    };
    Ok(if wants_protobuf(&headers) {
        protobuf(trace.encode_to_vec())
    } else {
        Json(trace).into_response()
    })
}

async fn trace_v2(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, TempoError> {
    let spans = load_trace(&st, &headers, id, raw.as_deref()).await?;
    let trace = proto::Trace {
        resource_spans: group_into_resource_spans(spans),
    };
    let metrics = proto::TraceByIdMetrics {
        inspected_bytes: trace.encoded_len() as u64,
    };
    Ok(if wants_protobuf(&headers) {
        protobuf(
            proto::TraceByIdResponse {
                trace: Some(trace),
                metrics: Some(metrics),
                status: proto::PartialStatus::Complete as i32,
                message: String::new(),
            }
            .encode_to_vec(),
        )
    } else {
        // proto3 JSON: the enum by name; an empty `message` is left out as proto3 JSON does.
        Json(serde_json::json!({ "trace": trace, "metrics": metrics, "status": "COMPLETE" }))
            .into_response()
    })
}

/// The `/api/search` parameters, as a TraceQL search.
pub fn search_request(q: &QueryParams) -> Result<SearchRequest, String> {
    let e = |name: &str, err: &dyn std::fmt::Display| format!("invalid {name}: {err}");
    let duration = |name: &str| -> Result<Option<u64>, String> {
        q.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| parse_duration_nanos(v).map_err(|err| e(name, &err)))
            .transpose()
    };
    let count = |name: &str, default: usize| -> Result<usize, String> {
        match q.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => {
                let n = parse_u64(v).map_err(|err| e(name, &err))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    };
    let query = match q.get("q").map(str::trim).filter(|v| !v.is_empty()) {
        Some(traceql) => traceql.to_string(),
        None => {
            let tags = match q.get("tags") {
                Some(t) => params::parse_logfmt(t).map_err(|err| err.to_string())?,
                None => Vec::new(),
            };
            params::tags_to_traceql(&tags, duration("minDuration")?, duration("maxDuration")?)
        }
    };
    let (start, end) = seconds_range(q).map_err(|e| e.0.to_string())?;
    let limit = match count("limit", DEFAULT_LIMIT)? {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_TRACES_PER_SEARCH),
    };
    let spans_per_spanset = match count("spss", DEFAULT_SPANS_PER_SPANSET)? {
        0 => DEFAULT_SPANS_PER_SPANSET,
        n => n,
    };
    Ok(SearchRequest {
        query,
        start_unix_nano: start,
        end_unix_nano: end,
        limit,
        spans_per_spanset,
    })
}

async fn search(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<proto::SearchResponse>, TempoError> {
    let tenant = st.tenant(&headers)?;
    let req = search_request(&QueryParams::parse(raw.as_deref())).map_err(ApiError::BadRequest)?;
    let result = match clew_traceql::search(st.reader.as_ref(), &tenant, &req).await {
        Ok(r) => r,
        Err(TraceqlError::Parse(m)) => return Err(ApiError::BadRequest(m).into()),
        Err(TraceqlError::Store(e)) => return Err(ApiError::Store(e).into()),
    };
    Ok(Json(proto::SearchResponse {
        traces: result.traces.iter().map(trace_metadata).collect(),
        metrics: Some(proto::SearchMetrics {
            inspected_traces: u32::try_from(result.inspected_traces).unwrap_or(u32::MAX),
            inspected_spans: result.inspected_spans,
            completed_jobs: 1,
            total_jobs: 1,
            ..Default::default()
        }),
    }))
}

pub(crate) fn any_value(v: &TagValue) -> AnyValue {
    AnyValue {
        value: Some(match v {
            TagValue::String(s) => Value::StringValue(s.clone()),
            TagValue::Int(i) => Value::IntValue(*i),
            TagValue::Double(d) => Value::DoubleValue(*d),
            TagValue::Bool(b) => Value::BoolValue(*b),
        }),
    }
}

fn key_values(attrs: &[(String, TagValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(any_value(v)),
            ..Default::default()
        })
        .collect()
}

/// One search hit in Tempo's shape.
pub fn trace_metadata(t: &TraceMatch) -> proto::TraceSearchMetadata {
    let span_sets: Vec<proto::SpanSet> = t
        .span_sets
        .iter()
        .map(|set| proto::SpanSet {
            spans: set
                .spans
                .iter()
                .map(|s| proto::Span {
                    span_id: s.span_id.to_hex(),
                    name: s.name.clone(),
                    start_time_unix_nano: s.start_unix_nano,
                    duration_nanos: s.duration_nanos,
                    attributes: key_values(&s.attributes),
                })
                .collect(),
            matched: u32::try_from(set.matched).unwrap_or(u32::MAX),
            attributes: key_values(&set.attributes),
        })
        .collect();
    proto::TraceSearchMetadata {
        trace_id: t.trace_id.to_hex(),
        root_service_name: t.root_service_name.clone(),
        root_trace_name: t.root_trace_name.clone(),
        start_time_unix_nano: t.start_unix_nano,
        duration_ms: u32::try_from(t.duration_ms).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
    }
}

/// Which scopes a tag-name request asks for (`scope`: `span`, `resource`, `intrinsic`, or
/// `none`/absent for all).
fn scopes(q: &QueryParams) -> Result<&'static [&'static str], TempoError> {
    Ok(match q.get("scope").unwrap_or("") {
        "" | "none" | "all" => &["span", "resource", "intrinsic"],
        "span" => &["span"],
        "resource" => &["resource"],
        "intrinsic" => &["intrinsic"],
        other => {
            return Err(bad(
                "scope",
                format!("{other:?} (expected span, resource, intrinsic or none)"),
            ))
        }
    })
}

/// Tag names of one scope. `service.name` comes from the service catalog too, so the resource
/// scope names it as soon as any span is stored.
async fn scope_tags(
    st: &AppState,
    tenant: &Tenant,
    scope: &str,
    range: Option<(u64, u64)>,
) -> Result<Vec<String>, TempoError> {
    let mut names: BTreeSet<String> = match scope {
        "intrinsic" => return Ok(INTRINSIC_TAGS.iter().map(|s| s.to_string()).collect()),
        "span" => st.reader.tag_names(tenant, AttrScope::Span, range).await?,
        _ => {
            st.reader
                .tag_names(tenant, AttrScope::Resource, range)
                .await?
        }
    }
    .into_iter()
    .collect();
    if scope == "resource" && !st.reader.services(tenant).await?.is_empty() {
        names.insert("service.name".into());
    }
    Ok(names.into_iter().collect())
}

fn nanos_range(q: &QueryParams) -> Result<Option<(u64, u64)>, TempoError> {
    Ok(match seconds_range(q)? {
        (None, None) => None,
        (s, e) => Some((s.unwrap_or(0), e.unwrap_or(u64::MAX))),
    })
}

async fn tags_v1(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<proto::SearchTagsResponse>, TempoError> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());
    let range = nanos_range(&q)?;
    let mut names = BTreeSet::new();
    for scope in scopes(&q)? {
        // v1 lists attribute names only, unscoped; intrinsics only when asked for.
        if *scope == "intrinsic" && q.get("scope") != Some("intrinsic") {
            continue;
        }
        names.extend(scope_tags(&st, &tenant, scope, range).await?);
    }
    Ok(Json(proto::SearchTagsResponse {
        tag_names: names.into_iter().collect(),
    }))
}

async fn tags_v2(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<proto::SearchTagsV2Response>, TempoError> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());
    let range = nanos_range(&q)?;
    let mut out = Vec::new();
    for scope in scopes(&q)? {
        out.push(proto::SearchTagsV2Scope {
            name: scope.to_string(),
            tags: scope_tags(&st, &tenant, scope, range).await?,
        });
    }
    Ok(Json(proto::SearchTagsV2Response { scopes: out }))
}

/// What a tag-values request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRef {
    /// `resource.service.name` (and unscoped `service.name`): the service catalog.
    ServiceName,
    /// `name` / `span:name` / `rootName` / `trace:rootName`: the operation catalog.
    SpanName,
    /// `rootServiceName` / `trace:rootService`: the service catalog.
    RootService,
    Status,
    Kind,
    /// An intrinsic whose values are not enumerated (`duration`, `statusMessage` …): no values.
    OtherIntrinsic,
    Attribute {
        scope: AttrScope,
        key: String,
    },
}

/// Parses a v2 tag reference (`resource.service.name`, `span.http.method`, `.k`, `name`,
/// `span:status` …). An unscoped bare key that is no intrinsic is an attribute of any scope, as
/// in v1.
pub fn parse_tag_ref(tag: &str) -> Result<TagRef, String> {
    let attr = |scope, key: &str| {
        if key.is_empty() {
            Err(format!("tag {tag:?} has no attribute name"))
        } else {
            Ok(TagRef::Attribute {
                scope,
                key: key.to_string(),
            })
        }
    };
    match tag {
        "" => Err("empty tag name".into()),
        "resource.service.name" | "service.name" | ".service.name" => Ok(TagRef::ServiceName),
        "name" | "span:name" | "rootName" | "trace:rootName" => Ok(TagRef::SpanName),
        "rootServiceName" | "trace:rootService" => Ok(TagRef::RootService),
        "status" | "span:status" => Ok(TagRef::Status),
        "kind" | "span:kind" => Ok(TagRef::Kind),
        t if INTRINSIC_TAGS.contains(&t) => Ok(TagRef::OtherIntrinsic),
        t => {
            if let Some(k) = t.strip_prefix("resource.") {
                attr(AttrScope::Resource, k)
            } else if let Some(k) = t.strip_prefix("span.") {
                attr(AttrScope::Span, k)
            } else if let Some(k) = t.strip_prefix('.') {
                attr(AttrScope::Any, k)
            } else if t.contains(':') {
                // `event:name`, `link:traceID`, `instrumentation:name`: not indexed by Clew.
                Ok(TagRef::OtherIntrinsic)
            } else {
                attr(AttrScope::Any, t)
            }
        }
    }
}

/// A typed value as Tempo's v2 tag-values response writes it.
pub fn typed_value(v: &TagValue) -> proto::TagValue {
    let (ty, value) = match v {
        TagValue::String(s) => ("string", s.clone()),
        TagValue::Int(i) => ("int", i.to_string()),
        TagValue::Double(d) => ("float", d.to_string()),
        TagValue::Bool(b) => ("bool", b.to_string()),
    };
    proto::TagValue {
        r#type: ty.into(),
        value,
    }
}

/// The values of one tag, typed. `q` (a TraceQL query) narrows only the span names of a pinned
/// service ([`params::pinned_service`]); otherwise it is accepted and ignored: the values are
/// those of the whole time range, a superset of what the query would allow.
async fn values_of(
    st: &AppState,
    tenant: &Tenant,
    tag: &TagRef,
    q: &QueryParams,
) -> Result<Vec<proto::TagValue>, TempoError> {
    let range = nanos_range(q)?;
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        Some(v) => usize::try_from(parse_u64(v).map_err(|e| bad("limit", e))?)
            .unwrap_or(usize::MAX)
            .min(DEFAULT_TAG_VALUES_LIMIT),
        None => DEFAULT_TAG_VALUES_LIMIT,
    };
    let string = |s: String| proto::TagValue {
        r#type: "string".into(),
        value: s,
    };
    let keyword = |ty: &str, vals: &[&str]| {
        vals.iter()
            .map(|v| proto::TagValue {
                r#type: ty.into(),
                value: v.to_string(),
            })
            .collect::<Vec<_>>()
    };
    let mut out: Vec<proto::TagValue> = match tag {
        TagRef::ServiceName | TagRef::RootService => st
            .reader
            .services(tenant)
            .await?
            .into_iter()
            .map(string)
            .collect(),
        TagRef::SpanName => {
            let service = q.get("q").and_then(params::pinned_service);
            let names: BTreeSet<String> = st
                .reader
                .operations(tenant, service.as_deref())
                .await?
                .into_iter()
                .map(|o| o.name)
                .collect();
            names.into_iter().map(string).collect()
        }
        TagRef::Status => keyword("status", STATUS_VALUES),
        TagRef::Kind => keyword("kind", KIND_VALUES),
        TagRef::OtherIntrinsic => Vec::new(),
        TagRef::Attribute { scope, key } => st
            .reader
            .tag_values(tenant, *scope, key, range, limit)
            .await?
            .iter()
            .map(typed_value)
            .collect(),
    };
    out.truncate(limit);
    Ok(out)
}

async fn tag_values_v1(
    State(st): State<AppState>,
    headers: HeaderMap,
    tag: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<proto::SearchTagValuesResponse>, TempoError> {
    let tenant = st.tenant(&headers)?;
    let Path(tag) = tag.map_err(|e| bad("tag", e))?;
    let q = QueryParams::parse(raw.as_deref());
    // v1 names an unscoped attribute (`service.name`, `http.method`).
    let tag = match tag.as_str() {
        "" => return Err(bad("tag", "empty tag name")),
        "service.name" => TagRef::ServiceName,
        t => TagRef::Attribute {
            scope: AttrScope::Any,
            key: t.to_string(),
        },
    };
    let values = values_of(&st, &tenant, &tag, &q).await?;
    let distinct: BTreeSet<String> = values.into_iter().map(|v| v.value).collect();
    Ok(Json(proto::SearchTagValuesResponse {
        tag_values: distinct.into_iter().collect(),
    }))
}

async fn tag_values_v2(
    State(st): State<AppState>,
    headers: HeaderMap,
    tag: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<proto::SearchTagValuesV2Response>, TempoError> {
    let tenant = st.tenant(&headers)?;
    let Path(tag) = tag.map_err(|e| bad("tag", e))?;
    let tag = parse_tag_ref(&tag).map_err(ApiError::BadRequest)?;
    let q = QueryParams::parse(raw.as_deref());
    Ok(Json(proto::SearchTagValuesV2Response {
        tag_values: values_of(&st, &tenant, &tag, &q).await?,
    }))
}

#[cfg(test)]
mod tests;
