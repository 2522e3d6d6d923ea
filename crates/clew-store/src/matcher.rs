//! The search predicate, shared by the head and the block scanner so both answer alike.
//!
//! Typed conditions ([`SpanCondition`]) follow TraceQL's typing: ints and doubles compare
//! numerically, a string never compares with a number or a boolean (every operator is false, `!=`
//! included, as a string column scan would find nothing), a missing field fails every operator but
//! `NotExists`, and regexes match the whole value. The one comparison function, [`compare`], is
//! also what the column predicates in `column_filter.rs` call, so head, row scan and column scan
//! cannot drift apart.

use crate::api::{AttrScope, CompareOp, SearchQuery, SpanCondition, SpanField, TagValue};
use crate::StoreError;
use clew_model::otlp::common::{any_value::Value, AnyValue};
use std::borrow::Cow;

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
    fn status_message(&self) -> &str;
    /// A span attribute, typed.
    fn span_attr(&self, key: &str) -> Option<Val<'_>>;
    /// A resource attribute, typed.
    fn resource_attr(&self, key: &str) -> Option<Val<'_>>;
}

/// A field value as conditions see it. `Other` is a present value of a type TraceQL cannot compare
/// (bytes, arrays, maps): it exists, and every comparison on it is false.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Other,
}

impl<'a> Val<'a> {
    pub fn of(v: &'a AnyValue) -> Val<'a> {
        match &v.value {
            Some(Value::StringValue(s)) => Val::Str(Cow::Borrowed(s)),
            Some(Value::IntValue(i)) => Val::Int(*i),
            Some(Value::DoubleValue(d)) => Val::Double(*d),
            Some(Value::BoolValue(b)) => Val::Bool(*b),
            _ => Val::Other,
        }
    }
}

/// A condition's literal, with its regex compiled.
#[derive(Debug, Clone)]
pub enum Lit {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Regex(regex::Regex),
}

impl Lit {
    /// Compiles `value` for `op`: a regex operator needs a string pattern, anchored at both ends.
    pub fn compile(op: CompareOp, value: &TagValue) -> Result<Lit, StoreError> {
        Ok(match (op, value) {
            (CompareOp::Regex | CompareOp::NotRegex, TagValue::String(p)) => {
                let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    StoreError::InvalidQuery(format!("bad regular expression {p:?}: {e}"))
                })?;
                Lit::Regex(re)
            }
            (CompareOp::Regex | CompareOp::NotRegex, other) => {
                return Err(StoreError::InvalidQuery(format!(
                    "a regular expression must be a string, not {other:?}"
                )))
            }
            (_, TagValue::String(s)) => Lit::Str(s.clone()),
            (_, TagValue::Int(i)) => Lit::Int(*i),
            (_, TagValue::Double(d)) => Lit::Double(*d),
            (_, TagValue::Bool(b)) => Lit::Bool(*b),
        })
    }
}

fn ordered(o: std::cmp::Ordering, op: CompareOp) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Eq => o == Equal,
        CompareOp::Ne => o != Equal,
        CompareOp::Gt => o == Greater,
        CompareOp::Ge => o != Less,
        CompareOp::Lt => o == Less,
        CompareOp::Le => o != Greater,
        _ => false,
    }
}

/// Whether a field's value (`None`: the field is missing) satisfies `op lit`.
pub fn compare(got: Option<&Val<'_>>, op: CompareOp, lit: &Lit) -> bool {
    let Some(got) = got else {
        return op == CompareOp::NotExists;
    };
    match op {
        CompareOp::Exists => return true,
        CompareOp::NotExists => return false,
        _ => {}
    }
    match (got, lit) {
        (Val::Str(s), Lit::Regex(re)) => match op {
            CompareOp::Regex => re.is_match(s),
            CompareOp::NotRegex => !re.is_match(s),
            _ => false,
        },
        (Val::Str(s), Lit::Str(want)) => ordered(s.as_ref().cmp(want.as_str()), op),
        (Val::Int(a), Lit::Int(b)) => ordered(a.cmp(b), op),
        (Val::Int(a), Lit::Double(b)) => num(*a as f64, *b, op),
        (Val::Double(a), Lit::Int(b)) => num(*a, *b as f64, op),
        (Val::Double(a), Lit::Double(b)) => num(*a, *b, op),
        (Val::Bool(a), Lit::Bool(b)) => match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            _ => false,
        },
        _ => false,
    }
}

/// Numeric comparison; NaN compares unequal to everything, as in IEEE 754.
fn num(a: f64, b: f64, op: CompareOp) -> bool {
    match a.partial_cmp(&b) {
        Some(o) => ordered(o, op),
        None => op == CompareOp::Ne,
    }
}

/// One compiled condition.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub field: SpanField,
    pub op: CompareOp,
    pub lit: Lit,
}

impl Compiled {
    pub fn new(c: &SpanCondition) -> Result<Self, StoreError> {
        Ok(Self {
            field: c.field.clone(),
            op: c.op,
            lit: Lit::compile(c.op, &c.value)?,
        })
    }

    pub fn holds(&self, v: &impl SpanView) -> bool {
        let got = field_value(&self.field, v);
        compare(got.as_ref(), self.op, &self.lit)
    }
}

/// The value of `field` on a span (`None`: missing). Intrinsics are always present.
pub fn field_value<'v>(field: &SpanField, v: &'v impl SpanView) -> Option<Val<'v>> {
    match field {
        SpanField::Name => Some(Val::Str(Cow::Borrowed(v.name()))),
        SpanField::Status => Some(Val::Int(v.status_code() as i64)),
        SpanField::StatusMessage => Some(Val::Str(Cow::Borrowed(v.status_message()))),
        SpanField::Kind => Some(Val::Int(v.kind() as i64)),
        SpanField::Duration => Some(Val::Int(
            v.end_unix_nano().saturating_sub(v.start_unix_nano()) as i64,
        )),
        SpanField::ServiceName => Some(Val::Str(Cow::Borrowed(v.service()))),
        SpanField::Attribute { scope, key } => match scope {
            AttrScope::Span => v.span_attr(key),
            AttrScope::Resource => v.resource_attr(key),
            AttrScope::Any => v.span_attr(key).or_else(|| v.resource_attr(key)),
        },
    }
}

/// A search compiled once (regexes built) and shared by the head and every block scan.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub query: SearchQuery,
    pub conditions: Vec<Compiled>,
}

impl Matcher {
    /// Compiles `q`; a bad regex is [`StoreError::InvalidQuery`].
    pub fn new(q: &SearchQuery) -> Result<Self, StoreError> {
        Ok(Self {
            query: q.clone(),
            conditions: q
                .conditions
                .iter()
                .map(Compiled::new)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, v: &impl SpanView) -> bool {
        matches(&self.query, v) && self.conditions.iter().all(|c| c.holds(v))
    }

    /// Whether some condition looks at attributes (the row scan then reads the attribute columns).
    pub fn needs_attributes(&self) -> bool {
        !self.query.attributes.is_empty()
            || self
                .conditions
                .iter()
                .any(|c| matches!(c.field, SpanField::Attribute { .. }))
    }
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

/// Whether a Jaeger tag key is answered (at least partly) from span fields by [`pseudo_tag`].
pub fn is_pseudo_tag(key: &str) -> bool {
    matches!(key, "error" | "span.kind" | "otel.status_code")
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
