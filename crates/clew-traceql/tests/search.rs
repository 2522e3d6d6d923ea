//! Planning and the search loop, over in-memory readers: one that applies the pushed-down
//! conditions exactly (as the store will) and one that ignores them (as the store may: "no false
//! negatives" allows any superset). Both must give the same, exact answers.

mod common;

use clew_model::flat::flatten;
use clew_model::otlp::common::any_value::Value;
use clew_model::{attrs, FlatSpan, Tenant, TraceId};
use clew_store::{
    AttrScope, CompareOp, DependencyLink, Operation, SearchQuery, SpanCondition, SpanField,
    StoreError, TagValue, TraceHit, TraceReader,
};
use clew_traceql::{parse, plan::plan, search, SearchRequest};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

struct MemReader {
    traces: Vec<(TraceId, Vec<FlatSpan>)>,
    apply_conditions: bool,
    searches: AtomicUsize,
    seen: Mutex<Vec<Vec<SpanCondition>>>,
}

fn tag_of(v: &clew_model::otlp::common::AnyValue) -> Option<TagValue> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => TagValue::String(s.clone()),
        Value::IntValue(i) => TagValue::Int(*i),
        Value::DoubleValue(d) => TagValue::Double(*d),
        Value::BoolValue(b) => TagValue::Bool(*b),
        _ => return None,
    })
}

fn field_value(s: &FlatSpan, f: &SpanField) -> Option<TagValue> {
    Some(match f {
        SpanField::Name => TagValue::String(s.span.name.clone()),
        SpanField::Status => {
            TagValue::Int(s.span.status.as_ref().map(|x| x.code).unwrap_or(0).into())
        }
        SpanField::StatusMessage => TagValue::String(
            s.span
                .status
                .as_ref()
                .map(|x| x.message.clone())
                .unwrap_or_default(),
        ),
        SpanField::Kind => TagValue::Int(s.span.kind.into()),
        SpanField::Duration => TagValue::Int(s.duration_nanos() as i64),
        SpanField::ServiceName => TagValue::String(s.service_name().into()),
        SpanField::Attribute { scope, key } => {
            let v = match scope {
                AttrScope::Span => attrs::get(&s.span.attributes, key),
                AttrScope::Resource => attrs::get(&s.resource.attributes, key),
                AttrScope::Any => attrs::get(&s.span.attributes, key)
                    .or_else(|| attrs::get(&s.resource.attributes, key)),
            }?;
            tag_of(v)?
        }
    })
}

fn holds(s: &FlatSpan, c: &SpanCondition) -> bool {
    let v = field_value(s, &c.field);
    match c.op {
        CompareOp::Exists => return v.is_some(),
        CompareOp::NotExists => return v.is_none(),
        _ => {}
    }
    let Some(v) = v else { return false };
    let ord = match (&v, &c.value) {
        (TagValue::String(a), TagValue::String(b)) => {
            if matches!(c.op, CompareOp::Regex | CompareOp::NotRegex) {
                let re = regex_lite(b);
                return re.is_match(a) == (c.op == CompareOp::Regex);
            }
            a.partial_cmp(b)
        }
        (TagValue::Int(a), TagValue::Int(b)) => a.partial_cmp(b),
        (TagValue::Int(a), TagValue::Double(b)) => (*a as f64).partial_cmp(b),
        (TagValue::Double(a), TagValue::Int(b)) => a.partial_cmp(&(*b as f64)),
        (TagValue::Double(a), TagValue::Double(b)) => a.partial_cmp(b),
        (TagValue::Bool(a), TagValue::Bool(b)) => a.partial_cmp(b),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match c.op {
        CompareOp::Eq => ord == Equal,
        CompareOp::Ne => ord != Equal,
        CompareOp::Gt => ord == Greater,
        CompareOp::Ge => ord != Less,
        CompareOp::Lt => ord == Less,
        CompareOp::Le => ord != Greater,
        _ => false,
    }
}

fn regex_lite(p: &str) -> regex::Regex {
    regex::Regex::new(&format!("^(?:{p})$")).unwrap()
}

#[async_trait::async_trait]
impl TraceReader for MemReader {
    async fn trace(&self, _: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        Ok(self
            .traces
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default())
    }
    async fn search(&self, _: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        self.searches.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(q.conditions.clone());
        let mut hits: Vec<TraceHit> = self
            .traces
            .iter()
            .filter_map(|(id, spans)| {
                let start = spans
                    .iter()
                    .filter(|s| {
                        let t = s.span.start_time_unix_nano;
                        q.start_unix_nano.is_none_or(|x| t >= x)
                            && q.end_unix_nano.is_none_or(|x| t <= x)
                            && (!self.apply_conditions || q.conditions.iter().all(|c| holds(s, c)))
                    })
                    .map(|s| s.span.start_time_unix_nano)
                    .max()?;
                Some(TraceHit {
                    trace_id: *id,
                    start_unix_nano: start,
                })
            })
            .collect();
        hits.sort_by_key(|h| std::cmp::Reverse(h.start_unix_nano));
        hits.truncate(q.effective_limit());
        Ok(hits)
    }
    async fn estimate_trace_count(&self, _: &Tenant, _: u64, _: u64) -> Result<u64, StoreError> {
        Ok(self.traces.len() as u64)
    }
    async fn services(&self, _: &Tenant) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    async fn operations(&self, _: &Tenant, _: Option<&str>) -> Result<Vec<Operation>, StoreError> {
        Ok(Vec::new())
    }
    async fn dependencies(
        &self,
        _: &Tenant,
        _: u64,
        _: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        Ok(Vec::new())
    }
}

fn id(n: u16) -> TraceId {
    let mut b = [0u8; 16];
    b[14..].copy_from_slice(&n.to_be_bytes());
    b[0] = 1;
    TraceId(b)
}

/// 500 traces; trace n starts n seconds after BASE. Every 97th has an error in GetCart; every
/// 50th has a slow redis call.
fn reader(apply_conditions: bool) -> MemReader {
    let traces = (1..=500u16)
        .map(|n| {
            let mut specs = common::spec();
            specs[2].status = if n % 97 == 0 { 2 } else { 1 };
            if n % 50 == 0 {
                specs[3].duration_ms = 80;
            }
            (
                id(n),
                flatten(common::resource_spans(&specs, 1, n as u64 * 1000)),
            )
        })
        .collect();
    MemReader {
        traces,
        apply_conditions,
        searches: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    }
}

fn numbers(res: &clew_traceql::SearchResult) -> Vec<u16> {
    res.traces
        .iter()
        .map(|t| u16::from_be_bytes([t.trace_id.0[14], t.trace_id.0[15]]))
        .collect()
}

fn cond(field: SpanField, op: CompareOp, value: TagValue) -> SpanCondition {
    SpanCondition { field, op, value }
}

fn attr(scope: AttrScope, key: &str) -> SpanField {
    SpanField::Attribute {
        scope,
        key: key.into(),
    }
}

#[test]
fn plans() {
    let p = |q: &str| plan(&parse(q).unwrap());
    let a1 = cond(attr(AttrScope::Any, "a"), CompareOp::Eq, TagValue::Int(1));
    let b2 = cond(attr(AttrScope::Span, "b"), CompareOp::Eq, TagValue::Int(2));
    let c3 = cond(
        attr(AttrScope::Resource, "c"),
        CompareOp::Eq,
        TagValue::String("3".into()),
    );
    let err = cond(SpanField::Status, CompareOp::Eq, TagValue::Int(2));
    let named = cond(
        SpanField::Name,
        CompareOp::Regex,
        TagValue::String("x.*".into()),
    );

    assert_eq!(p("{ }"), vec![vec![]]);
    assert_eq!(p("{ traceDuration > 1s }"), vec![vec![]]);
    assert_eq!(p("{ rootName = nil }"), vec![vec![]]);
    assert_eq!(
        p("{ rootName = \"x\" }"),
        vec![vec![cond(
            SpanField::Name,
            CompareOp::Eq,
            TagValue::String("x".into())
        )]]
    );
    assert_eq!(
        p("{ rootServiceName = \"cart\" }"),
        vec![vec![cond(
            SpanField::ServiceName,
            CompareOp::Eq,
            TagValue::String("cart".into())
        )]]
    );
    assert_eq!(p("{ rootServiceName = \"unknown_service\" }"), vec![vec![]]);
    assert_eq!(p("{ rootServiceName != \"cart\" }"), vec![vec![]]);
    assert_eq!(p("{ !(.a = 1) }"), vec![vec![]]);
    assert_eq!(p("{ false }"), Vec::<Vec<SpanCondition>>::new());
    assert_eq!(p("{ .a = 1 }"), vec![vec![a1.clone()]]);
    assert_eq!(
        p("{ .a = 1 && span.b = 2 }"),
        vec![vec![a1.clone(), b2.clone()]]
    );
    assert_eq!(
        p("{ .a = 1 || span.b = 2 }"),
        vec![vec![a1.clone()], vec![b2.clone()]]
    );
    assert_eq!(
        p("{ (.a = 1 || span.b = 2) && resource.c = \"3\" }"),
        vec![vec![a1.clone(), c3.clone()], vec![b2.clone(), c3.clone()]]
    );
    assert_eq!(
        p("{ .a = 1 } || { span.b = 2 }"),
        vec![vec![a1.clone()], vec![b2.clone()]]
    );
    assert_eq!(p("{ .a = 1 } || { }"), vec![vec![]]);
    // Both sides necessary: the more selective one.
    assert_eq!(
        p("{ .a = 1 } && { span.b = 2 && status = error }"),
        vec![vec![b2.clone(), err.clone()]]
    );
    assert_eq!(p("{ } >> { .a = 1 }"), vec![vec![a1.clone()]]);
    assert_eq!(p("{ .a = 1 } ~ { }"), vec![vec![a1.clone()]]);
    // Only the right side of a negated relation is necessary.
    assert_eq!(
        p("{ .a = 1 } !> { name =~ \"x.*\" }"),
        vec![vec![named.clone()]]
    );
    assert_eq!(p("{ .a = 1 } !> { }"), vec![vec![]]);
    // A later filter stage is necessary too.
    assert_eq!(
        p("{ } | count() > 1 | { status = error }"),
        vec![vec![err.clone()]]
    );
    assert_eq!(
        p("{ .a = nil && span.b != nil }"),
        vec![vec![
            cond(
                attr(AttrScope::Any, "a"),
                CompareOp::NotExists,
                TagValue::Bool(false)
            ),
            cond(
                attr(AttrScope::Span, "b"),
                CompareOp::Exists,
                TagValue::Bool(false)
            ),
        ]]
    );
    assert_eq!(
        p("{ duration > 1ms && kind = client && name = \"n\" }"),
        vec![vec![
            cond(SpanField::Duration, CompareOp::Gt, TagValue::Int(1_000_000)),
            cond(SpanField::Kind, CompareOp::Eq, TagValue::Int(3)),
            cond(SpanField::Name, CompareOp::Eq, TagValue::String("n".into())),
        ]]
    );
    // Too wide a disjunction: fewer, looser searches.
    let wide = (0..10)
        .map(|i| format!(".k = {i}"))
        .collect::<Vec<_>>()
        .join(" || ");
    assert_eq!(p(&format!("{{ {wide} }}")), vec![vec![]]);
}

#[tokio::test]
async fn exact_answers_whether_or_not_the_store_applies_conditions() {
    let t = Tenant::new("t").unwrap();
    let cases: &[(&str, Vec<u16>)] = &[
        ("{ status = error }", vec![485, 388, 291, 194, 97]),
        (
            "{ name = \"redis GET\" && duration > 50ms }",
            (1..=10).rev().map(|i| i * 50).collect(),
        ),
        (
            "{ status = error } || { name = \"redis GET\" && duration > 50ms }",
            {
                let mut v: Vec<u16> = (1..=500).filter(|n| n % 97 == 0 || n % 50 == 0).collect();
                v.reverse();
                v
            },
        ),
        (
            "{ kind = client } > { status = error }",
            vec![485, 388, 291, 194, 97],
        ),
        ("{ kind = server } > { status = error }", vec![]),
        (
            "{ status = error } && { duration > 50ms && span.db.system = \"redis\" }",
            vec![],
        ),
        ("{ name = \"cart.get\" } !> { status = error }", vec![]),
        (
            "{ rootServiceName = \"frontend\" && rootName = \"GET /\" } >> { status = error }",
            vec![485, 388, 291, 194, 97],
        ),
        ("{ rootServiceName = \"cart\" }", vec![]),
        (
            "{ name = \"GetCart\" } !> { status = error }",
            vec![485, 388, 291, 194, 97],
        ),
    ];
    for apply in [true, false] {
        for (q, want) in cases {
            let r = reader(apply);
            let req = SearchRequest {
                query: q.to_string(),
                limit: 100,
                ..Default::default()
            };
            let res = search(&r, &t, &req).await.unwrap();
            assert_eq!(
                &numbers(&res),
                want,
                "{q} (store applies conditions: {apply})"
            );
            // (For the `root…` query the planner's estimate prefers the root side's two
            // equalities, which every trace here satisfies: still exact, just more fetching.)
            if apply && !q.contains("root") {
                // Only candidates that satisfy the pushed-down conditions were fetched.
                assert!(res.inspected_traces <= 15, "{q}: {}", res.inspected_traces);
            }
            let searches_per_round = plan(&parse(q).unwrap()).len();
            assert_eq!(
                r.searches.load(Ordering::SeqCst) % searches_per_round.max(1),
                0
            );
        }
    }

    // `||` runs one store search per side.
    let r = reader(true);
    let req = SearchRequest {
        query: "{ status = error } || { span.db.system = \"redis\" && duration > 50ms }".into(),
        ..Default::default()
    };
    search(&r, &t, &req).await.unwrap();
    assert_eq!(r.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn candidates_come_in_growing_batches_until_limit() {
    let t = Tenant::new("t").unwrap();
    // The store ignores conditions: matches (every 97th trace) must be found by scanning.
    let r = reader(false);
    let req = SearchRequest {
        query: "{ status = error }".into(),
        limit: 2,
        spans_per_spanset: 1,
        ..Default::default()
    };
    let res = search(&r, &t, &req).await.unwrap();
    assert_eq!(numbers(&res), vec![485, 388]);
    // The first batch (64 newest) holds one match; the second (256) the next; it stops there.
    assert_eq!(r.searches.load(Ordering::SeqCst), 2);
    assert_eq!(res.inspected_traces, 500 - 388 + 1);
    assert_eq!(res.inspected_spans, res.inspected_traces * 6);
    let m = &res.traces[0];
    assert_eq!(m.root_service_name, "frontend");
    assert_eq!(m.span_sets[0].spans.len(), 1);
    assert_eq!(m.span_sets[0].matched, 1);
    assert_eq!(m.span_sets[0].spans[0].name, "GetCart");

    // Time range: only traces with a span starting in it.
    let req = SearchRequest {
        query: "{ status = error }".into(),
        start_unix_nano: Some(common::BASE + 100_000 * common::MS),
        end_unix_nano: Some(common::BASE + 300_000 * common::MS),
        ..Default::default()
    };
    for apply in [true, false] {
        let res = search(&reader(apply), &t, &req).await.unwrap();
        assert_eq!(numbers(&res), vec![291, 194], "apply {apply}");
    }
}
