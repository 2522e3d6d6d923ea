//! The TraceQL syntax tree and its canonical printing.
//!
//! `Display` prints a query in canonical form so that `parse(&q.to_string()) == Ok(q)` for every
//! parsed query: parentheses the user wrote are kept as explicit nodes ([`SpansetExpr::Paren`],
//! [`FieldExpr::Paren`]), scoped intrinsics print in their short form (`span:name` → `name`, both
//! parse to the same node), durations print in the largest unit that divides them exactly, and
//! strings always print double-quoted.

use clew_model::query::AttrScope;
use std::fmt;

/// A whole query: a spanset expression followed by pipeline stages (`{ … } | count() > 2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub head: SpansetExpr,
    pub stages: Vec<Stage>,
}

/// An expression producing spansets.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ … }`; `None` for `{ }`, which selects every span.
    Filter(Option<FieldExpr>),
    Binary {
        op: SpansetOp,
        lhs: Box<SpansetExpr>,
        rhs: Box<SpansetExpr>,
    },
    /// `( … )`, possibly holding a pipeline: `({ a } | count() > 1) && { b }`.
    Paren(Box<Query>),
}

/// Operators between spansets. `&&`/`||` bind loosest (`||` looser than `&&`); the structural
/// operators bind tighter and associate to the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    And,
    Or,
    /// `>`: spans of the right side whose parent is in the left side.
    Child,
    /// `>>`: spans of the right side with an ancestor in the left side.
    Descendant,
    /// `<`: spans of the right side that are the parent of a left-side span.
    Parent,
    /// `<<`: spans of the right side that are an ancestor of a left-side span.
    Ancestor,
    /// `~`: spans of the right side sharing a parent with a (different) left-side span.
    Sibling,
    /// `!>`, `!>>`, `!<`, `!<<`, `!~`: the right-side spans for which the relation does not hold.
    NotChild,
    NotDescendant,
    NotParent,
    NotAncestor,
    NotSibling,
}

impl SpansetOp {
    pub fn symbol(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Or => "||",
            SpansetOp::Child => ">",
            SpansetOp::Descendant => ">>",
            SpansetOp::Parent => "<",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
        }
    }
}

/// One stage after `|`.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `{ … }`: keeps the spans of each spanset that match.
    Filter(Option<FieldExpr>),
    /// `count() > 3`, `avg(duration) > 1s`: keeps the spansets whose aggregate compares true.
    Aggregate {
        func: Aggregate,
        op: CmpOp,
        value: Literal,
    },
    /// `by(resource.service.name)`: splits each spanset by the values of the fields.
    By(Vec<Field>),
    /// `select(span.http.method, status)`: fields to return with each matched span.
    Select(Vec<Field>),
    /// `coalesce()`: merges all spansets of the trace into one.
    Coalesce,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Avg(Field),
    Min(Field),
    Max(Field),
    Sum(Field),
}

/// A boolean expression over one span's fields, inside `{ }`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    Or(Box<FieldExpr>, Box<FieldExpr>),
    And(Box<FieldExpr>, Box<FieldExpr>),
    Not(Box<FieldExpr>),
    Compare {
        field: Field,
        op: CmpOp,
        value: Literal,
    },
    /// `{ true }` / `{ false }`.
    Bool(bool),
    Paren(Box<FieldExpr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Regex,
    NotRegex,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Regex => "=~",
            CmpOp::NotRegex => "!~",
        }
    }
}

/// What a comparison looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Intrinsic(Intrinsic),
    Attribute { scope: AttrScope, key: String },
}

/// Span and trace intrinsics. Each has an unscoped and a scoped spelling (`name` / `span:name`,
/// `rootServiceName` / `trace:rootService`); both parse to the same variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    RootName,
    RootServiceName,
    TraceDuration,
}

impl Intrinsic {
    pub const ALL: [Intrinsic; 8] = [
        Intrinsic::Name,
        Intrinsic::Status,
        Intrinsic::StatusMessage,
        Intrinsic::Kind,
        Intrinsic::Duration,
        Intrinsic::RootName,
        Intrinsic::RootServiceName,
        Intrinsic::TraceDuration,
    ];

    /// The unscoped spelling (canonical).
    pub fn name(self) -> &'static str {
        match self {
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::Duration => "duration",
            Intrinsic::RootName => "rootName",
            Intrinsic::RootServiceName => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
        }
    }

    /// The scoped spelling, as Tempo writes it.
    pub fn scoped_name(self) -> &'static str {
        match self {
            Intrinsic::Name => "span:name",
            Intrinsic::Status => "span:status",
            Intrinsic::StatusMessage => "span:statusMessage",
            Intrinsic::Kind => "span:kind",
            Intrinsic::Duration => "span:duration",
            Intrinsic::RootName => "trace:rootName",
            Intrinsic::RootServiceName => "trace:rootService",
            Intrinsic::TraceDuration => "trace:duration",
        }
    }

    pub fn from_name(s: &str) -> Option<Intrinsic> {
        Intrinsic::ALL
            .into_iter()
            .find(|i| i.name() == s || i.scoped_name() == s)
    }

    /// Whether the value is the same for every span of a trace.
    pub fn is_trace_level(self) -> bool {
        matches!(
            self,
            Intrinsic::RootName | Intrinsic::RootServiceName | Intrinsic::TraceDuration
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusLit {
    Unset,
    Ok,
    Error,
}

impl StatusLit {
    /// OTLP status code number.
    pub fn code(self) -> i32 {
        match self {
            StatusLit::Unset => 0,
            StatusLit::Ok => 1,
            StatusLit::Error => 2,
        }
    }
    pub fn from_code(code: i32) -> Option<StatusLit> {
        [StatusLit::Unset, StatusLit::Ok, StatusLit::Error]
            .into_iter()
            .find(|s| s.code() == code)
    }
    pub fn name(self) -> &'static str {
        match self {
            StatusLit::Unset => "unset",
            StatusLit::Ok => "ok",
            StatusLit::Error => "error",
        }
    }
}

pub const KIND_NAMES: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    Status(StatusLit),
    /// OTLP span kind number (0 unspecified … 5 consumer).
    Kind(i32),
    Nil,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.head)?;
        for s in &self.stages {
            write!(f, " | {s}")?;
        }
        Ok(())
    }
}

fn fmt_filter(f: &mut fmt::Formatter<'_>, e: &Option<FieldExpr>) -> fmt::Result {
    match e {
        None => write!(f, "{{ }}"),
        Some(e) => write!(f, "{{ {e} }}"),
    }
}

impl fmt::Display for SpansetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(e) => fmt_filter(f, e),
            SpansetExpr::Binary { op, lhs, rhs } => write!(f, "{lhs} {} {rhs}", op.symbol()),
            SpansetExpr::Paren(q) => write!(f, "({q})"),
        }
    }
}

fn fmt_fields(f: &mut fmt::Formatter<'_>, fields: &[Field]) -> fmt::Result {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{field}")?;
    }
    Ok(())
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Filter(e) => fmt_filter(f, e),
            Stage::Aggregate { func, op, value } => write!(f, "{func} {} {value}", op.symbol()),
            Stage::By(fields) => {
                write!(f, "by(")?;
                fmt_fields(f, fields)?;
                write!(f, ")")
            }
            Stage::Select(fields) => {
                write!(f, "select(")?;
                fmt_fields(f, fields)?;
                write!(f, ")")
            }
            Stage::Coalesce => write!(f, "coalesce()"),
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Count => write!(f, "count()"),
            Aggregate::Avg(x) => write!(f, "avg({x})"),
            Aggregate::Min(x) => write!(f, "min({x})"),
            Aggregate::Max(x) => write!(f, "max({x})"),
            Aggregate::Sum(x) => write!(f, "sum({x})"),
        }
    }
}

impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Or(a, b) => write!(f, "{a} || {b}"),
            FieldExpr::And(a, b) => write!(f, "{a} && {b}"),
            FieldExpr::Not(e) => write!(f, "!{e}"),
            FieldExpr::Compare { field, op, value } => {
                write!(f, "{field} {} {value}", op.symbol())
            }
            FieldExpr::Bool(b) => write!(f, "{b}"),
            FieldExpr::Paren(e) => write!(f, "({e})"),
        }
    }
}

/// Characters an attribute name may contain without quotes.
pub(crate) fn is_bare_attr_char(c: char) -> bool {
    !c.is_whitespace()
        && !c.is_control()
        && !matches!(
            c,
            '{' | '}'
                | '('
                | ')'
                | '='
                | '~'
                | '!'
                | '<'
                | '>'
                | '&'
                | '|'
                | '^'
                | ','
                | '"'
                | '`'
                | '\''
                | '\\'
        )
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Intrinsic(i) => write!(f, "{}", i.name()),
            Field::Attribute { scope, key } => {
                let prefix = match scope {
                    AttrScope::Span => "span.",
                    AttrScope::Resource => "resource.",
                    AttrScope::Any => ".",
                };
                write!(f, "{prefix}")?;
                if !key.is_empty() && key.chars().all(is_bare_attr_char) {
                    write!(f, "{key}")
                } else {
                    write_quoted(f, key)
                }
            }
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    write!(f, "\"")?;
    for c in s.chars() {
        match c {
            '"' => write!(f, "\\\"")?,
            '\\' => write!(f, "\\\\")?,
            '\n' => write!(f, "\\n")?,
            '\r' => write!(f, "\\r")?,
            '\t' => write!(f, "\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "\"")
}

/// Formats nanoseconds in the largest unit that divides them exactly (`1500ms`, `2h`, `7ns`).
pub fn format_duration(nanos: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if nanos == 0 {
        return "0s".into();
    }
    for (size, unit) in UNITS {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write_quoted(f, s),
            Literal::Int(i) => write!(f, "{i}"),
            // Debug keeps a `.0` or an exponent, so the text lexes as a float again.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Duration(d) => write!(f, "{}", format_duration(*d)),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Status(s) => write!(f, "{}", s.name()),
            Literal::Kind(k) => write!(
                f,
                "{}",
                usize::try_from(*k)
                    .ok()
                    .and_then(|k| KIND_NAMES.get(k))
                    .copied()
                    .unwrap_or("unspecified")
            ),
            Literal::Nil => write!(f, "nil"),
        }
    }
}
