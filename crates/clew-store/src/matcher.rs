//! The search predicate, shared by the head and the block scanner so both answer alike.

use crate::api::SearchQuery;

/// Read access to one span, whatever its storage form.
pub trait SpanView {
    fn service(&self) -> &str;
    fn name(&self) -> &str;
    fn start_unix_nano(&self) -> u64;
    fn end_unix_nano(&self) -> u64;
    fn kind(&self) -> i32;
    fn status_code(&self) -> i32;
    /// Text form of a span attribute, else of a resource attribute.
    fn attr_text(&self, key: &str) -> Option<String>;
}

pub const STATUS_ERROR: i32 = 2;

/// Jaeger-compatible names for OTLP span kinds (`span.kind` tag).
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The tags Jaeger derives from fields rather than attributes, so `error=true` and
/// `span.kind=server` searches work as Jaeger users expect.
fn pseudo_tag(view: &impl SpanView, key: &str) -> Option<String> {
    match key {
        "error" => (view.status_code() == STATUS_ERROR).then(|| "true".to_string()),
        "span.kind" => Some(kind_name(view.kind()).to_string()),
        "otel.status_code" => match view.status_code() {
            1 => Some("OK".into()),
            2 => Some("ERROR".into()),
            _ => None,
        },
        _ => None,
    }
}

/// Cheap checks that need no attribute lookup.
pub fn matches_fields(q: &SearchQuery, v: &impl SpanView) -> bool {
    if let Some(s) = &q.service {
        if v.service() != s {
            return false;
        }
    }
    if let Some(op) = &q.operation {
        if v.name() != op {
            return false;
        }
    }
    let start = v.start_unix_nano();
    if q.start_unix_nano.is_some_and(|t| start < t) || q.end_unix_nano.is_some_and(|t| start > t) {
        return false;
    }
    let duration = v.end_unix_nano().saturating_sub(start);
    if q.min_duration_nanos.is_some_and(|d| duration < d)
        || q.max_duration_nanos.is_some_and(|d| duration > d)
    {
        return false;
    }
    true
}

pub fn matches(q: &SearchQuery, v: &impl SpanView) -> bool {
    matches_fields(q, v)
        && q.attributes.iter().all(|(k, want)| {
            pseudo_tag(v, k)
                .or_else(|| v.attr_text(k))
                .is_some_and(|got| &got == want)
        })
}
