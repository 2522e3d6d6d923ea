//! The typed search vocabulary shared by the store's read API and TraceQL: which span field a
//! condition looks at, how it compares, and typed literal values. Here rather than in the store so
//! that the TraceQL parser (and its fuzz target) builds without the storage stack.

/// Where an attribute is looked up: TraceQL's `span.`, `resource.` and unscoped `.` (span first,
/// then resource).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum AttrScope {
    Span,
    Resource,
    Any,
}

/// What a [`SpanCondition`] looks at.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SpanField {
    /// Span name.
    Name,
    /// OTLP status code number (0 unset, 1 ok, 2 error).
    Status,
    StatusMessage,
    /// OTLP span kind number (0 unspecified … 5 consumer).
    Kind,
    /// End minus start, nanoseconds.
    Duration,
    /// `resource.service.name`.
    ServiceName,
    Attribute {
        scope: AttrScope,
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// Regex, anchored at both ends as in TraceQL (`=~`).
    Regex,
    NotRegex,
    /// The field is present (TraceQL `!= nil`); `value` is ignored.
    Exists,
    /// The field is absent (TraceQL `= nil`); `value` is ignored.
    NotExists,
}

/// A typed literal. Ints and doubles compare with each other numerically; a string never equals a
/// number (TraceQL's typing), and `Ne` on a missing field is false.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TagValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// One typed condition on a span's field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpanCondition {
    pub field: SpanField,
    pub op: CompareOp,
    pub value: TagValue,
}
