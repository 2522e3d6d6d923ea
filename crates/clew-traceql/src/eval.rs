//! Evaluation of a parsed query over one whole trace.
//!
//! A filter selects the spans for which its expression is true; the result of a query is a list
//! of spansets, and a trace matches when at least one non-empty spanset remains at the end of the
//! pipeline. Comparisons are typed: a missing field makes every comparison false (`!=` included)
//! except `= nil`; a string never equals a number; ints and floats compare numerically; regexes
//! match the whole value.
//!
//! Where a spanset operator receives several spansets from one side (a parenthesised pipeline
//! with `by()`), that side's spansets are merged first: the operators work on span sets.

use crate::ast::*;
use crate::parse::compile_anchored;
use clew_model::otlp::common::{any_value::Value, AnyValue};
use clew_model::query::{AttrScope, TagValue};
use clew_model::{attrs, FlatSpan};
use std::cmp::Ordering;
use std::collections::HashMap;

/// A query ready to run: the syntax tree and its regexes, compiled once.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub query: Query,
    regexes: HashMap<String, regex::Regex>,
    /// Fields whose values are returned with each matched span: attributes the filters look at,
    /// then everything `select()`ed.
    pub returned_fields: Vec<Field>,
}

/// One spanset of a trace: indexes into the trace's span slice (ascending), and the `by()` and
/// aggregate results that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanset {
    pub spans: Vec<usize>,
    pub attributes: Vec<(String, TagValue)>,
}

impl Compiled {
    pub fn new(query: Query) -> Result<Compiled, regex::Error> {
        let mut regexes = HashMap::new();
        let mut returned_fields = Vec::new();
        let mut selected = Vec::new();
        walk_query(
            &query,
            &mut |e| {
                if let FieldExpr::Compare { field, op, value } = e {
                    if let (CmpOp::Regex | CmpOp::NotRegex, Literal::String(p)) = (op, value) {
                        if !regexes.contains_key(p) {
                            regexes.insert(p.clone(), compile_anchored(p));
                        }
                    }
                    if matches!(field, Field::Attribute { .. }) && !returned_fields.contains(field)
                    {
                        returned_fields.push(field.clone());
                    }
                }
            },
            &mut selected,
        );
        for f in selected {
            if !returned_fields.contains(&f) {
                returned_fields.push(f);
            }
        }
        let regexes = regexes
            .into_iter()
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect::<Result<_, _>>()?;
        Ok(Compiled {
            query,
            regexes,
            returned_fields,
        })
    }

    /// The spansets the query yields for one trace; empty when the trace does not match.
    pub fn evaluate(&self, spans: &[FlatSpan]) -> Vec<Spanset> {
        let trace = TraceView::new(spans);
        let ev = Evaluator {
            trace: &trace,
            regexes: &self.regexes,
        };
        ev.query(&self.query)
    }

    /// The returned fields' values for one span, keyed by the field as the query writes it.
    pub fn span_attributes(&self, spans: &[FlatSpan], index: usize) -> Vec<(String, TagValue)> {
        self.attributes_in(&TraceView::new(spans), index)
    }

    /// [`Compiled::span_attributes`] over a trace already resolved, for many spans of one trace.
    pub(crate) fn attributes_in(&self, trace: &TraceView, index: usize) -> Vec<(String, TagValue)> {
        self.returned_fields
            .iter()
            .filter_map(|f| {
                let v = trace.value(f, index)?;
                Some((f.to_string(), v.to_tag()?))
            })
            .collect()
    }
}

fn walk_expr(e: &FieldExpr, f: &mut dyn FnMut(&FieldExpr)) {
    f(e);
    match e {
        FieldExpr::Or(a, b) | FieldExpr::And(a, b) => {
            walk_expr(a, f);
            walk_expr(b, f);
        }
        FieldExpr::Not(x) | FieldExpr::Paren(x) => walk_expr(x, f),
        FieldExpr::Compare { .. } | FieldExpr::Bool(_) => {}
    }
}

fn walk_spanset(s: &SpansetExpr, f: &mut dyn FnMut(&FieldExpr), selected: &mut Vec<Field>) {
    match s {
        SpansetExpr::Filter(Some(e)) => walk_expr(e, f),
        SpansetExpr::Filter(None) => {}
        SpansetExpr::Binary { lhs, rhs, .. } => {
            walk_spanset(lhs, f, selected);
            walk_spanset(rhs, f, selected);
        }
        SpansetExpr::Paren(q) => walk_query(q, f, selected),
    }
}

fn walk_query(q: &Query, f: &mut dyn FnMut(&FieldExpr), selected: &mut Vec<Field>) {
    walk_spanset(&q.head, f, selected);
    for s in &q.stages {
        match s {
            Stage::Filter(Some(e)) => walk_expr(e, f),
            Stage::Select(fields) => selected.extend(fields.iter().cloned()),
            _ => {}
        }
    }
}

/// A trace with its span tree resolved.
pub(crate) struct TraceView<'a> {
    spans: &'a [FlatSpan],
    parent: Vec<Option<usize>>,
    root: Option<usize>,
    duration_nanos: u64,
}

impl<'a> TraceView<'a> {
    pub(crate) fn new(spans: &'a [FlatSpan]) -> TraceView<'a> {
        let mut by_id: HashMap<&[u8], usize> = HashMap::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            by_id.entry(s.span.span_id.as_slice()).or_insert(i);
        }
        let parent = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.span.parent_span_id.is_empty() {
                    return None;
                }
                by_id
                    .get(s.span.parent_span_id.as_slice())
                    .copied()
                    .filter(|&p| p != i)
            })
            .collect();
        let root = spans.iter().position(|s| s.span.parent_span_id.is_empty());
        let start = spans.iter().map(|s| s.span.start_time_unix_nano).min();
        let end = spans.iter().map(|s| s.span.end_time_unix_nano).max();
        let duration_nanos = match (start, end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => 0,
        };
        TraceView {
            spans,
            parent,
            root,
            duration_nanos,
        }
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn value(&self, field: &Field, i: usize) -> Option<Val<'a>> {
        let fs = self.spans.get(i)?;
        let span = &fs.span;
        Some(match field {
            Field::Intrinsic(Intrinsic::Name) => Val::Str(&span.name),
            Field::Intrinsic(Intrinsic::Status) => {
                Val::Status(span.status.as_ref().map(|s| s.code).unwrap_or(0))
            }
            Field::Intrinsic(Intrinsic::StatusMessage) => Val::Str(
                span.status
                    .as_ref()
                    .map(|s| s.message.as_str())
                    .unwrap_or(""),
            ),
            Field::Intrinsic(Intrinsic::Kind) => Val::Kind(span.kind),
            Field::Intrinsic(Intrinsic::Duration) => Val::Dur(to_i64(fs.duration_nanos())),
            Field::Intrinsic(Intrinsic::RootName) => {
                Val::Str(&self.spans.get(self.root?)?.span.name)
            }
            Field::Intrinsic(Intrinsic::RootServiceName) => {
                Val::Str(self.spans.get(self.root?)?.service_name())
            }
            Field::Intrinsic(Intrinsic::TraceDuration) => Val::Dur(to_i64(self.duration_nanos)),
            Field::Attribute { scope, key } => {
                let v = match scope {
                    AttrScope::Span => attrs::get(&span.attributes, key),
                    AttrScope::Resource => attrs::get(&fs.resource.attributes, key),
                    AttrScope::Any => attrs::get(&span.attributes, key)
                        .or_else(|| attrs::get(&fs.resource.attributes, key)),
                }?;
                Val::from_any(v)
            }
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A field's value on one span.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(i64),
    Status(i32),
    Kind(i32),
    /// Bytes, arrays, maps: present, but equal to no literal.
    Other(&'a AnyValue),
}

impl<'a> Val<'a> {
    fn from_any(v: &'a AnyValue) -> Val<'a> {
        match &v.value {
            Some(Value::StringValue(s)) => Val::Str(s),
            Some(Value::IntValue(i)) => Val::Int(*i),
            Some(Value::DoubleValue(d)) => Val::Float(*d),
            Some(Value::BoolValue(b)) => Val::Bool(*b),
            _ => Val::Other(v),
        }
    }

    fn to_tag(self) -> Option<TagValue> {
        Some(match self {
            Val::Str(s) => TagValue::String(s.to_string()),
            Val::Int(i) => TagValue::Int(i),
            Val::Float(f) => TagValue::Double(f),
            Val::Bool(b) => TagValue::Bool(b),
            Val::Dur(d) => TagValue::Int(d),
            Val::Status(c) => TagValue::String(StatusLit::from_code(c)?.name().to_string()),
            Val::Kind(k) => TagValue::String(KIND_NAMES.get(usize::try_from(k).ok()?)?.to_string()),
            Val::Other(v) => TagValue::String(attrs::to_text(v)),
        })
    }

    /// A key for grouping by value (`by()`): equal values, equal keys; ints and floats apart.
    fn group_key(self) -> String {
        match self {
            Val::Str(s) => format!("s{s}"),
            Val::Int(i) => format!("i{i}"),
            Val::Float(f) => format!("f{f:?}"),
            Val::Bool(b) => format!("b{b}"),
            Val::Dur(d) => format!("d{d}"),
            Val::Status(c) => format!("t{c}"),
            Val::Kind(k) => format!("k{k}"),
            Val::Other(v) => format!("o{}", attrs::to_text(v)),
        }
    }
}

fn ordering_holds(op: CmpOp, ord: Option<Ordering>) -> bool {
    let Some(ord) = ord else { return false };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Regex | CmpOp::NotRegex => false,
    }
}

fn numeric_cmp(a: Val, b: &Literal) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Literal::Int(y)) => Some(x.cmp(y)),
        (Val::Int(x), Literal::Float(y)) => (x as f64).partial_cmp(y),
        (Val::Float(x), Literal::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Val::Float(x), Literal::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

struct Evaluator<'t, 'a> {
    trace: &'t TraceView<'a>,
    regexes: &'t HashMap<String, regex::Regex>,
}

impl Evaluator<'_, '_> {
    fn compare(&self, v: Option<Val>, op: CmpOp, lit: &Literal) -> bool {
        if let Literal::Nil = lit {
            return match op {
                CmpOp::Eq => v.is_none(),
                CmpOp::Ne => v.is_some(),
                _ => false,
            };
        }
        let Some(v) = v else { return false };
        match (v, lit) {
            (Val::Str(s), Literal::String(p)) => match op {
                CmpOp::Regex | CmpOp::NotRegex => match self.regexes.get(p) {
                    Some(re) => re.is_match(s) == (op == CmpOp::Regex),
                    None => false,
                },
                _ => ordering_holds(op, Some(s.cmp(p.as_str()))),
            },
            (Val::Int(_) | Val::Float(_), Literal::Int(_) | Literal::Float(_)) => {
                ordering_holds(op, numeric_cmp(v, lit))
            }
            (Val::Dur(a), Literal::Duration(b)) => ordering_holds(op, Some(a.cmp(b))),
            (Val::Bool(a), Literal::Bool(b)) => {
                matches!(op, CmpOp::Eq | CmpOp::Ne) && ordering_holds(op, Some(a.cmp(b)))
            }
            (Val::Status(a), Literal::Status(b)) => {
                matches!(op, CmpOp::Eq | CmpOp::Ne) && ordering_holds(op, Some(a.cmp(&b.code())))
            }
            (Val::Kind(a), Literal::Kind(b)) => {
                matches!(op, CmpOp::Eq | CmpOp::Ne) && ordering_holds(op, Some(a.cmp(b)))
            }
            _ => false,
        }
    }

    fn expr(&self, e: &FieldExpr, i: usize) -> bool {
        match e {
            FieldExpr::Or(a, b) => self.expr(a, i) || self.expr(b, i),
            FieldExpr::And(a, b) => self.expr(a, i) && self.expr(b, i),
            FieldExpr::Not(x) => !self.expr(x, i),
            FieldExpr::Paren(x) => self.expr(x, i),
            FieldExpr::Bool(b) => *b,
            FieldExpr::Compare { field, op, value } => {
                self.compare(self.trace.value(field, i), *op, value)
            }
        }
    }

    fn filter_mask(&self, e: &Option<FieldExpr>) -> Vec<bool> {
        (0..self.trace.len())
            .map(|i| e.as_ref().is_none_or(|e| self.expr(e, i)))
            .collect()
    }

    fn query(&self, q: &Query) -> Vec<Spanset> {
        let mut sets = match &q.head {
            SpansetExpr::Paren(inner) => self.query(inner),
            head => {
                let mask = self.spanset(head);
                let spans = mask_to_indexes(&mask);
                if spans.is_empty() {
                    Vec::new()
                } else {
                    vec![Spanset {
                        spans,
                        attributes: Vec::new(),
                    }]
                }
            }
        };
        for stage in &q.stages {
            if sets.is_empty() {
                break;
            }
            sets = self.stage(stage, sets);
        }
        sets.retain(|s| !s.spans.is_empty());
        sets
    }

    fn spanset(&self, s: &SpansetExpr) -> Vec<bool> {
        match s {
            SpansetExpr::Filter(e) => self.filter_mask(e),
            SpansetExpr::Paren(q) => {
                let mut mask = vec![false; self.trace.len()];
                for set in self.query(q) {
                    for i in set.spans {
                        if let Some(m) = mask.get_mut(i) {
                            *m = true;
                        }
                    }
                }
                mask
            }
            SpansetExpr::Binary { op, lhs, rhs } => {
                let l = self.spanset(lhs);
                let r = self.spanset(rhs);
                self.binary(*op, &l, &r)
            }
        }
    }

    fn binary(&self, op: SpansetOp, l: &[bool], r: &[bool]) -> Vec<bool> {
        let n = self.trace.len();
        let parent = &self.trace.parent;
        let any = |m: &[bool]| m.iter().any(|&x| x);
        let relation = |op: SpansetOp| -> Vec<bool> {
            match op {
                SpansetOp::Child | SpansetOp::NotChild => {
                    (0..n).map(|b| parent[b].is_some_and(|p| l[p])).collect()
                }
                SpansetOp::Parent | SpansetOp::NotParent => {
                    let mut is_parent_of_l = vec![false; n];
                    for a in (0..n).filter(|&a| l[a]) {
                        if let Some(p) = parent[a] {
                            is_parent_of_l[p] = true;
                        }
                    }
                    is_parent_of_l
                }
                SpansetOp::Descendant | SpansetOp::NotDescendant => self.has_ancestor_in(l),
                SpansetOp::Ancestor | SpansetOp::NotAncestor => {
                    let mut is_ancestor = vec![false; n];
                    for a in (0..n).filter(|&a| l[a]) {
                        let mut cur = parent[a];
                        // Stops at the root or at a span already marked (whose ancestors are
                        // marked too), which also ends cycles in malformed traces.
                        while let Some(p) = cur {
                            if is_ancestor[p] {
                                break;
                            }
                            is_ancestor[p] = true;
                            cur = parent[p];
                        }
                    }
                    is_ancestor
                }
                SpansetOp::Sibling | SpansetOp::NotSibling => {
                    let mut l_children = vec![0usize; n];
                    for a in (0..n).filter(|&a| l[a]) {
                        if let Some(p) = parent[a] {
                            l_children[p] += 1;
                        }
                    }
                    (0..n)
                        .map(|b| parent[b].is_some_and(|p| l_children[p] > usize::from(l[b])))
                        .collect()
                }
                SpansetOp::And | SpansetOp::Or => vec![false; n],
            }
        };
        match op {
            SpansetOp::And => {
                if any(l) && any(r) {
                    (0..n).map(|i| l[i] || r[i]).collect()
                } else {
                    vec![false; n]
                }
            }
            SpansetOp::Or => (0..n).map(|i| l[i] || r[i]).collect(),
            SpansetOp::Child
            | SpansetOp::Parent
            | SpansetOp::Descendant
            | SpansetOp::Ancestor
            | SpansetOp::Sibling => {
                let rel = relation(op);
                (0..n).map(|i| r[i] && rel[i]).collect()
            }
            SpansetOp::NotChild
            | SpansetOp::NotParent
            | SpansetOp::NotDescendant
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling => {
                let rel = relation(op);
                (0..n).map(|i| r[i] && !rel[i]).collect()
            }
        }
    }

    /// For each span: whether one of its ancestors is in `set`. Memoised along each walk up;
    /// a walk longer than the trace means a cycle in a malformed trace and stops.
    fn has_ancestor_in(&self, set: &[bool]) -> Vec<bool> {
        let n = self.trace.len();
        let parent = &self.trace.parent;
        let mut memo: Vec<Option<bool>> = vec![None; n];
        let mut path = Vec::new();
        for start in 0..n {
            path.clear();
            let mut cur = start;
            let result = loop {
                if let Some(m) = memo[cur] {
                    break m;
                }
                path.push(cur);
                match parent[cur] {
                    None => break false,
                    Some(p) if set[p] => break true,
                    Some(_) if path.len() > n => break false,
                    Some(p) => cur = p,
                }
            };
            for &i in &path {
                memo[i] = Some(result);
            }
        }
        memo.into_iter().map(|m| m.unwrap_or(false)).collect()
    }

    fn stage(&self, stage: &Stage, sets: Vec<Spanset>) -> Vec<Spanset> {
        match stage {
            Stage::Filter(e) => sets
                .into_iter()
                .filter_map(|mut s| {
                    if let Some(e) = e {
                        s.spans.retain(|&i| self.expr(e, i));
                    }
                    (!s.spans.is_empty()).then_some(s)
                })
                .collect(),
            Stage::Select(_) => sets,
            Stage::Coalesce => {
                let mut mask = vec![false; self.trace.len()];
                for s in &sets {
                    for &i in &s.spans {
                        if let Some(m) = mask.get_mut(i) {
                            *m = true;
                        }
                    }
                }
                let spans = mask_to_indexes(&mask);
                if spans.is_empty() {
                    Vec::new()
                } else {
                    vec![Spanset {
                        spans,
                        attributes: Vec::new(),
                    }]
                }
            }
            Stage::By(fields) => {
                let mut out = Vec::new();
                for s in sets {
                    // Groups in order of first appearance.
                    let mut groups: Vec<Spanset> = Vec::new();
                    let mut index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
                    for &i in &s.spans {
                        let vals: Vec<Option<Val>> =
                            fields.iter().map(|f| self.trace.value(f, i)).collect();
                        let key: Vec<Option<String>> =
                            vals.iter().map(|v| v.map(|v| v.group_key())).collect();
                        match index.get(&key).and_then(|&g| groups.get_mut(g)) {
                            Some(g) => g.spans.push(i),
                            None => {
                                let mut attributes = s.attributes.clone();
                                for (f, v) in fields.iter().zip(&vals) {
                                    if let Some(t) = v.and_then(|v| v.to_tag()) {
                                        attributes.push((format!("by({f})"), t));
                                    }
                                }
                                index.insert(key, groups.len());
                                groups.push(Spanset {
                                    spans: vec![i],
                                    attributes,
                                });
                            }
                        }
                    }
                    out.extend(groups);
                }
                out
            }
            Stage::Aggregate { func, op, value } => sets
                .into_iter()
                .filter_map(|mut s| {
                    let (holds, result) = self.aggregate(func, *op, value, &s.spans)?;
                    if !holds {
                        return None;
                    }
                    s.attributes.push((func.to_string(), result));
                    Some(s)
                })
                .collect(),
        }
    }

    /// Computes an aggregate over a spanset and compares it; `None` when it has no value (no
    /// span has a numeric value for the field).
    fn aggregate(
        &self,
        func: &Aggregate,
        op: CmpOp,
        lit: &Literal,
        spans: &[usize],
    ) -> Option<(bool, TagValue)> {
        let field = match func {
            Aggregate::Count => {
                let n = i64::try_from(spans.len()).unwrap_or(i64::MAX);
                let holds = ordering_holds(op, numeric_cmp(Val::Int(n), lit));
                return Some((holds, TagValue::Int(n)));
            }
            Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => f,
        };
        // Durations and numbers are kept apart: a duration aggregate compares with duration
        // literals only, a numeric one with numbers only.
        let mut durations = Vec::new();
        let mut numbers = Vec::new();
        for &i in spans {
            match self.trace.value(field, i) {
                Some(Val::Dur(d)) => durations.push(d as f64),
                Some(Val::Int(x)) => numbers.push(x as f64),
                Some(Val::Float(x)) => numbers.push(x),
                _ => {}
            }
        }
        let (values, lit_value) = match lit {
            Literal::Duration(d) => (durations, *d as f64),
            Literal::Int(x) => (numbers, *x as f64),
            Literal::Float(x) => (numbers, *x),
            _ => return None,
        };
        if values.is_empty() {
            return None;
        }
        let result = match func {
            Aggregate::Avg(_) => values.iter().sum::<f64>() / values.len() as f64,
            Aggregate::Min(_) => values.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregate::Max(_) => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Sum(_) | Aggregate::Count => values.iter().sum(),
        };
        let holds = ordering_holds(op, result.partial_cmp(&lit_value));
        Some((holds, TagValue::Double(result)))
    }
}

fn mask_to_indexes(mask: &[bool]) -> Vec<usize> {
    mask.iter()
        .enumerate()
        .filter_map(|(i, &m)| m.then_some(i))
        .collect()
}
