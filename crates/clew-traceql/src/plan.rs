//! Planning: from a query, the store searches whose union holds every matching trace.
//!
//! The plan is a disjunction of per-span condition sets: a trace can match only if, for one of
//! the sets, it has a span satisfying every condition of that set. Conditions are necessary, never
//! sufficient: the executor re-evaluates every candidate trace exactly. Anything that cannot be
//! expressed per span (`!`, trace-level intrinsics such as `rootName`) contributes no condition,
//! and a plan with an empty set means a scan of the time range.

use crate::ast::*;
use clew_model::query::{CompareOp, SpanCondition, SpanField, TagValue};

/// At most this many store searches per query; wider disjunctions fall back to fewer, looser ones.
pub const MAX_DISJUNCTS: usize = 8;

/// `None`: no constraint (every trace is a candidate). `Some(vec![])`: nothing can match.
type Dnf = Option<Vec<Vec<SpanCondition>>>;

/// The store searches to run for a query. `vec![vec![]]` is one unconditioned search (a scan of
/// the time range); an empty list means the query can match nothing.
pub fn plan(q: &Query) -> Vec<Vec<SpanCondition>> {
    query_dnf(q).unwrap_or_else(|| vec![Vec::new()])
}

fn query_dnf(q: &Query) -> Dnf {
    let mut best = spanset_dnf(&q.head);
    for s in &q.stages {
        // A later filter must hold on a surviving span: its conditions are necessary too.
        if let Stage::Filter(e) = s {
            let d = e.as_ref().and_then(expr_dnf);
            best = more_selective(best, d);
        }
    }
    best
}

fn spanset_dnf(s: &SpansetExpr) -> Dnf {
    match s {
        SpansetExpr::Filter(None) => None,
        SpansetExpr::Filter(Some(e)) => expr_dnf(e),
        SpansetExpr::Paren(q) => query_dnf(q),
        SpansetExpr::Binary { op, lhs, rhs } => match op {
            SpansetOp::Or => or(spanset_dnf(lhs), spanset_dnf(rhs)),
            // Both sides must be non-empty: either side's conditions are necessary.
            SpansetOp::And
            | SpansetOp::Child
            | SpansetOp::Descendant
            | SpansetOp::Parent
            | SpansetOp::Ancestor
            | SpansetOp::Sibling => more_selective(spanset_dnf(lhs), spanset_dnf(rhs)),
            // Only the right side must be non-empty (the left one may well be empty).
            SpansetOp::NotChild
            | SpansetOp::NotDescendant
            | SpansetOp::NotParent
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling => spanset_dnf(rhs),
        },
    }
}

fn expr_dnf(e: &FieldExpr) -> Dnf {
    match e {
        FieldExpr::Bool(true) | FieldExpr::Not(_) => None,
        FieldExpr::Bool(false) => Some(Vec::new()),
        FieldExpr::Paren(x) => expr_dnf(x),
        FieldExpr::Or(a, b) => or(expr_dnf(a), expr_dnf(b)),
        FieldExpr::And(a, b) => and(expr_dnf(a), expr_dnf(b)),
        FieldExpr::Compare { field, op, value } => {
            condition(field, *op, value).map(|c| vec![vec![c]])
        }
    }
}

fn or(a: Dnf, b: Dnf) -> Dnf {
    let (mut a, b) = (a?, b?);
    a.extend(b);
    if a.len() > MAX_DISJUNCTS {
        return None;
    }
    Some(a)
}

/// Both must hold on the same span: the cross product, or the more selective side when the
/// product would be too wide.
fn and(a: Dnf, b: Dnf) -> Dnf {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => {
            if a.len() * b.len() > MAX_DISJUNCTS {
                return more_selective(Some(a), Some(b));
            }
            let mut out = Vec::new();
            for x in &a {
                for y in &b {
                    let mut c = x.clone();
                    c.extend(y.iter().cloned());
                    out.push(c);
                }
            }
            Some(out)
        }
    }
}

fn more_selective(a: Dnf, b: Dnf) -> Dnf {
    if score(&b) > score(&a) {
        b
    } else {
        a
    }
}

/// A rough selectivity estimate: higher means fewer candidate traces.
fn score(d: &Dnf) -> f64 {
    match d {
        None => 0.0,
        Some(ds) if ds.is_empty() => f64::INFINITY,
        Some(ds) => {
            let weakest = ds
                .iter()
                .map(|c| c.iter().map(weight).sum::<f64>())
                .fold(f64::INFINITY, f64::min);
            // Each extra search widens the candidate set.
            weakest / ds.len() as f64
        }
    }
}

fn weight(c: &SpanCondition) -> f64 {
    match (&c.field, c.op) {
        (SpanField::Status, CompareOp::Eq) if c.value == TagValue::Int(2) => 2.0,
        (SpanField::Status | SpanField::Kind, CompareOp::Eq) => 0.7,
        (_, CompareOp::Eq) => 3.0,
        (_, CompareOp::Regex) => 2.0,
        (_, CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le) => 1.0,
        (_, CompareOp::Exists) => 0.5,
        (_, CompareOp::Ne | CompareOp::NotRegex | CompareOp::NotExists) => 0.3,
    }
}

/// One comparison as a store condition; `None` when it is not a property of a single span.
pub fn condition(field: &Field, op: CmpOp, value: &Literal) -> Option<SpanCondition> {
    let field = match field {
        Field::Intrinsic(Intrinsic::Name) => SpanField::Name,
        Field::Intrinsic(Intrinsic::Status) => SpanField::Status,
        Field::Intrinsic(Intrinsic::StatusMessage) => SpanField::StatusMessage,
        Field::Intrinsic(Intrinsic::Kind) => SpanField::Kind,
        Field::Intrinsic(Intrinsic::Duration) => SpanField::Duration,
        // The root span is one of the trace's spans: whatever holds of its name holds of some
        // span's name (not for `nil`, which means there is no root span).
        Field::Intrinsic(Intrinsic::RootName) if *value != Literal::Nil => SpanField::Name,
        // Likewise for its service, but only for plain equality with a named service: a span
        // without `service.name` counts as `unknown_service` here, which a store need not know.
        Field::Intrinsic(Intrinsic::RootServiceName)
            if op == CmpOp::Eq
                && matches!(value, Literal::String(s) if s != clew_model::attrs::UNKNOWN_SERVICE) =>
        {
            SpanField::ServiceName
        }
        Field::Intrinsic(
            Intrinsic::RootName | Intrinsic::RootServiceName | Intrinsic::TraceDuration,
        ) => return None,
        Field::Attribute { scope, key } => SpanField::Attribute {
            scope: *scope,
            key: key.clone(),
        },
    };
    let (op, value) = match value {
        Literal::Nil => match op {
            CmpOp::Eq => (CompareOp::NotExists, TagValue::Bool(false)),
            CmpOp::Ne => (CompareOp::Exists, TagValue::Bool(false)),
            _ => return None,
        },
        Literal::String(s) => (store_op(op), TagValue::String(s.clone())),
        Literal::Int(i) => (store_op(op), TagValue::Int(*i)),
        Literal::Float(f) => (store_op(op), TagValue::Double(*f)),
        Literal::Duration(d) => (store_op(op), TagValue::Int(*d)),
        Literal::Bool(b) => (store_op(op), TagValue::Bool(*b)),
        Literal::Status(s) => (store_op(op), TagValue::Int(i64::from(s.code()))),
        Literal::Kind(k) => (store_op(op), TagValue::Int(i64::from(*k))),
    };
    Some(SpanCondition { field, op, value })
}

fn store_op(op: CmpOp) -> CompareOp {
    match op {
        CmpOp::Eq => CompareOp::Eq,
        CmpOp::Ne => CompareOp::Ne,
        CmpOp::Gt => CompareOp::Gt,
        CmpOp::Ge => CompareOp::Ge,
        CmpOp::Lt => CompareOp::Lt,
        CmpOp::Le => CompareOp::Le,
        CmpOp::Regex => CompareOp::Regex,
        CmpOp::NotRegex => CompareOp::NotRegex,
    }
}
