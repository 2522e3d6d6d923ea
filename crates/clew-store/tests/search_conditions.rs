//! Typed span conditions (TraceQL pushdown) and the tag catalog, property-style: random spans and
//! random conditions, answered by the head, by flushed blocks (column and row paths), by a
//! compacted block, and by a naive evaluator written here from the rules alone.

#[path = "common/search.rs"]
mod search;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::column_filter::ColumnQuery;
use clew_store::matcher::Matcher;
use clew_store::{
    AttrScope, CompareOp, SearchQuery, SpanCondition, SpanField, Store, StoreConfig, StoreError,
    StoreMetrics, TagValue, TraceReader,
};
use search::{kv, s, Rng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const STRINGS: &[&str] = &[
    "/a", "/b", "/c/1", "GET", "POST", "x", "y", "xy", "10", "5", "s1", "s2", "eu", "us", "cart",
    "pay", "GET /a", "db", "boom", "", "200", "unknown",
];
const INTS: &[i64] = &[-1, 0, 1, 2, 3, 5, 7, 10, 200, 404, 500, 50_000, 2_000_000];
const DOUBLES: &[f64] = &[0.5, 5.0, 2.5, -2.25, 1e6, 10.0];
const REGEXES: &[&str] = &["/a.*", "x|y", ".*", "GE.", "[0-9]+", "s.", "c.*", "b"];
const KEYS: &[&str] = &[
    "http.route",
    "http.response.status_code",
    "http.request.method",
    "k.str",
    "k.int",
    "k.dbl",
    "k.bool",
    "mixed",
    "shared",
    "service.name",
    "region",
    "missing.key",
];

/// A trace: one resource, 1–4 spans. `dirty` adds what forces the row path: dedicated keys with
/// another type and dedicated keys on the resource.
fn random_batch(tenant: &Tenant, r: &mut Rng, n: u64, dirty: bool) -> SpanBatch {
    let mut res = vec![kv("service.name", s(r.pick(&["cart", "pay", "auth"])))];
    if r.chance(50) {
        res.push(kv("region", s(r.pick(&["eu", "us"]))));
    }
    if r.chance(40) {
        res.push(kv("shared", s(r.pick(&["s1", "s2"]))));
    }
    if r.chance(30) {
        res.push(kv("k.int", Value::IntValue(r.pick(&[5, 10]))));
    }
    if dirty && r.chance(30) {
        res.push(kv("http.route", s("/b")));
    }
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&r.next().to_be_bytes());
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    let base = 1_750_000_000_000_000_000u64 + n * 1_000_000_000;
    let spans = (0..1 + r.below(4))
        .map(|i| {
            let mut a = Vec::new();
            if r.chance(60) {
                a.push(if dirty && r.chance(30) {
                    kv("http.route", Value::IntValue(7))
                } else {
                    kv("http.route", s(r.pick(&["/a", "/b", "/c/1"])))
                });
            }
            if r.chance(60) {
                a.push(if dirty && r.chance(30) {
                    kv("http.response.status_code", s("200"))
                } else {
                    kv(
                        "http.response.status_code",
                        Value::IntValue(r.pick(&[200, 404, 500])),
                    )
                });
            }
            if r.chance(50) {
                a.push(kv("http.request.method", s(r.pick(&["GET", "POST"]))));
            }
            if r.chance(60) {
                a.push(kv("k.str", s(r.pick(&["x", "y", "xy", "10"]))));
            }
            if r.chance(60) {
                a.push(kv("k.int", Value::IntValue(r.pick(&[-1, 0, 5, 10]))));
            }
            if r.chance(60) {
                a.push(kv(
                    "k.dbl",
                    Value::DoubleValue(r.pick(&[0.5, 5.0, 10.0, -2.25])),
                ));
            }
            if r.chance(50) {
                a.push(kv("k.bool", Value::BoolValue(r.chance(50))));
            }
            if r.chance(70) {
                a.push(kv(
                    "mixed",
                    r.pick(&[
                        s("5"),
                        Value::IntValue(5),
                        Value::DoubleValue(5.0),
                        Value::BoolValue(true),
                        Value::BytesValue(vec![1, 2]),
                    ]),
                ));
            }
            if r.chance(30) {
                a.push(kv("shared", s(r.pick(&["s1", "s3"]))));
            }
            let start = base + i * 1000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (n * 8 + i + 1).to_be_bytes().to_vec(),
                name: r.pick(&["GET /a", "POST /b", "db"]).into(),
                kind: r.below(6) as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + r.pick(&[1000u64, 50_000, 2_000_000, 10_000_000]),
                status: Some(Status {
                    code: r.pick(&[
                        StatusCode::Unset as i32,
                        StatusCode::Ok as i32,
                        StatusCode::Error as i32,
                    ]),
                    message: r.pick(&["", "boom", "timeout"]).into(),
                }),
                attributes: a,
                ..Default::default()
            }
        })
        .collect();
    SpanBatch::new(
        tenant.clone(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: res,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

fn random_value(r: &mut Rng) -> TagValue {
    match r.below(4) {
        0 | 1 => TagValue::String(r.pick(STRINGS).into()),
        2 => {
            if r.chance(70) {
                TagValue::Int(r.pick(INTS))
            } else {
                TagValue::Double(r.pick(DOUBLES))
            }
        }
        _ => TagValue::Bool(r.chance(50)),
    }
}

fn random_condition(r: &mut Rng) -> SpanCondition {
    let field = match r.below(10) {
        0 => SpanField::Name,
        1 => SpanField::Status,
        2 => SpanField::StatusMessage,
        3 => SpanField::Kind,
        4 => SpanField::Duration,
        5 => SpanField::ServiceName,
        _ => SpanField::Attribute {
            scope: r.pick(&[AttrScope::Span, AttrScope::Resource, AttrScope::Any]),
            key: r.pick(KEYS).into(),
        },
    };
    let op = r.pick(&[
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Regex,
        CompareOp::NotRegex,
        CompareOp::Exists,
        CompareOp::NotExists,
    ]);
    let value = match op {
        CompareOp::Regex | CompareOp::NotRegex => TagValue::String(r.pick(REGEXES).into()),
        // Intrinsics are compared with values of their own type more often, so they match.
        _ => match (&field, r.chance(60)) {
            (SpanField::Status | SpanField::Kind, true) => TagValue::Int(r.below(6) as i64),
            (SpanField::Duration, true) => TagValue::Int(r.pick(INTS)),
            (SpanField::Name, true) => TagValue::String(r.pick(&["GET /a", "db", "x"]).into()),
            _ => random_value(r),
        },
    };
    SpanCondition { field, op, value }
}

// ---- the naive evaluator: the rules, restated from the API docs ----

#[derive(Debug)]
enum V {
    S(String),
    I(i64),
    D(f64),
    B(bool),
    Other,
}

fn naive_value(v: &Option<AnyValue>) -> V {
    match v.as_ref().and_then(|a| a.value.as_ref()) {
        Some(Value::StringValue(x)) => V::S(x.clone()),
        Some(Value::IntValue(x)) => V::I(*x),
        Some(Value::DoubleValue(x)) => V::D(*x),
        Some(Value::BoolValue(x)) => V::B(*x),
        _ => V::Other,
    }
}

fn naive_lookup(list: &[KeyValue], key: &str) -> Option<V> {
    list.iter()
        .find(|k| k.key == key)
        .map(|k| naive_value(&k.value))
}

fn naive_field(span: &Span, res: &[KeyValue], f: &SpanField) -> Option<V> {
    let status = span.status.clone().unwrap_or_default();
    Some(match f {
        SpanField::Name => V::S(span.name.clone()),
        SpanField::Status => V::I(status.code as i64),
        SpanField::StatusMessage => V::S(status.message),
        SpanField::Kind => V::I(span.kind as i64),
        SpanField::Duration => V::I((span.end_time_unix_nano - span.start_time_unix_nano) as i64),
        SpanField::ServiceName => match naive_lookup(res, "service.name") {
            Some(V::S(x)) => V::S(x),
            _ => V::S("unknown_service".into()),
        },
        SpanField::Attribute { scope, key } => {
            return match scope {
                AttrScope::Span => naive_lookup(&span.attributes, key),
                AttrScope::Resource => naive_lookup(res, key),
                AttrScope::Any => {
                    naive_lookup(&span.attributes, key).or_else(|| naive_lookup(res, key))
                }
            }
        }
    })
}

fn naive_holds(got: Option<V>, op: CompareOp, want: &TagValue) -> bool {
    use std::cmp::Ordering;
    match op {
        CompareOp::Exists => return got.is_some(),
        CompareOp::NotExists => return got.is_none(),
        _ => {}
    }
    let Some(got) = got else { return false };
    if matches!(op, CompareOp::Regex | CompareOp::NotRegex) {
        let (V::S(x), TagValue::String(p)) = (&got, want) else {
            return false;
        };
        let full = regex::Regex::new(&format!("^(?:{p})$")).unwrap();
        return full.is_match(x) == (op == CompareOp::Regex);
    }
    let ord: Option<Ordering> = match (&got, want) {
        (V::S(a), TagValue::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (V::I(a), TagValue::Int(b)) => Some(a.cmp(b)),
        (V::I(a), TagValue::Double(b)) => (*a as f64).partial_cmp(b),
        (V::D(a), TagValue::Int(b)) => a.partial_cmp(&(*b as f64)),
        (V::D(a), TagValue::Double(b)) => a.partial_cmp(b),
        (V::B(a), TagValue::Bool(b)) => {
            return match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                _ => false,
            }
        }
        _ => return false,
    };
    let Some(o) = ord else {
        return op == CompareOp::Ne;
    };
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        _ => unreachable!(),
    }
}

fn naive_search(batches: &[SpanBatch], q: &SearchQuery) -> BTreeMap<TraceId, u64> {
    let mut out = BTreeMap::new();
    for b in batches {
        for rs in &b.resource_spans {
            let res = rs.resource.clone().unwrap_or_default().attributes;
            for sp in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let svc_ok = q.service.as_ref().is_none_or(|want| {
                    matches!(naive_lookup(&res, "service.name"), Some(V::S(x)) if &x == want)
                });
                let tags_ok = q.attributes.iter().all(|(k, want)| {
                    let find = |l: &[KeyValue]| {
                        l.iter().find(|kv| &kv.key == k).map(|kv| {
                            clew_model::attrs::to_text(&kv.value.clone().unwrap_or_default())
                        })
                    };
                    find(&sp.attributes).or_else(|| find(&res)).as_ref() == Some(want)
                });
                if svc_ok
                    && tags_ok
                    && q.conditions
                        .iter()
                        .all(|c| naive_holds(naive_field(sp, &res, &c.field), c.op, &c.value))
                {
                    let id = TraceId::from_bytes(&sp.trace_id).unwrap();
                    let e = out.entry(id).or_insert(0);
                    *e = (*e).max(sp.start_time_unix_nano);
                }
            }
        }
    }
    out
}

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.compaction.min_blocks = 2;
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c
}

async fn answers(store: &Store, tenant: &Tenant, q: &SearchQuery) -> BTreeMap<TraceId, u64> {
    store
        .search(tenant, q)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.trace_id, h.start_unix_nano))
        .collect()
}

fn queries(seed: u64, n: usize) -> Vec<SearchQuery> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| SearchQuery {
            service: r.chance(10).then(|| r.pick(&["cart", "pay"]).to_string()),
            // Jaeger tags (text form, span attribute first) alongside the typed conditions.
            attributes: if r.chance(25) {
                vec![(
                    r.pick(KEYS).to_string(),
                    r.pick(&[
                        "/a", "x", "10", "5", "200", "true", "s1", "eu", "-2.25", "7",
                    ])
                    .to_string(),
                )]
            } else {
                Vec::new()
            },
            conditions: (0..1 + r.below(2))
                .map(|_| random_condition(&mut r))
                .collect(),
            limit: 100_000,
            ..Default::default()
        })
        .collect()
}

/// Head, blocks (two flushes, then one compacted block) and the naive evaluator agree on every
/// random query, for a tenant whose blocks take the column path and one that needs the row path.
#[tokio::test]
async fn head_blocks_and_naive_evaluator_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    let clean = Tenant::new("clean").unwrap();
    let dirty = Tenant::new("dirty").unwrap();
    let mut r = Rng(7);
    let mut data: BTreeMap<String, Vec<SpanBatch>> = BTreeMap::new();
    for (tenant, is_dirty) in [(&clean, false), (&dirty, true)] {
        for n in 0..160 {
            let b = random_batch(tenant, &mut r, n, is_dirty);
            data.entry(tenant.as_str().to_string())
                .or_default()
                .push(b.clone());
            store.consume(b).await.unwrap();
        }
    }
    let mut qs = queries(11, 600);
    // Jaeger tags on every type of the generic list, text form ("5" is the double 5.0).
    for (k, v) in [
        ("k.dbl", "-2.25"),
        ("k.dbl", "5"),
        ("k.bool", "true"),
        ("k.int", "10"),
        ("k.int", "010"),
        ("k.str", "x"),
        ("mixed", "5"),
        ("shared", "s1"),
        ("http.request.method", "GET"),
    ] {
        qs.push(SearchQuery {
            attributes: vec![(k.into(), v.into())],
            limit: 100_000,
            ..Default::default()
        });
    }
    let naive: Vec<Vec<BTreeMap<TraceId, u64>>> = [&clean, &dirty]
        .iter()
        .map(|t| {
            qs.iter()
                .map(|q| naive_search(&data[t.as_str()], q))
                .collect()
        })
        .collect();
    let nonempty = naive[0].iter().filter(|m| !m.is_empty()).count();
    assert!(nonempty > 80, "too few queries match anything: {nonempty}");
    let empty_but_not_all = naive[0]
        .iter()
        .filter(|m| !m.is_empty() && m.len() < 160)
        .count();
    assert!(empty_but_not_all > 40, "{empty_but_not_all}");

    let check = |stage: &'static str| {
        let store = &store;
        let qs = &qs;
        let naive = &naive;
        let (clean, dirty) = (&clean, &dirty);
        async move {
            for (ti, t) in [clean, dirty].into_iter().enumerate() {
                for (qi, q) in qs.iter().enumerate() {
                    let got = answers(store, t, q).await;
                    assert_eq!(got, naive[ti][qi], "{stage}, tenant {t:?}, query {q:?}");
                }
            }
        }
    };
    check("head").await;

    store.flush().await.unwrap();
    assert_eq!(store.head_span_count(), 0);
    let blocks = store.blocks(&clean);
    assert_eq!(blocks.len(), 1);
    // The clean tenant's block has no spill: dedicated-key conditions run on the column path.
    assert_eq!(blocks[0].meta.dedicated_spills, Some(vec![]));
    assert!(store.blocks(&dirty)[0]
        .meta
        .dedicated_spills
        .as_ref()
        .is_some_and(|s| s.len() >= 2));
    let column_path = qs
        .iter()
        .filter(|q| ColumnQuery::compile(&Matcher::new(q).unwrap()).is_some())
        .count();
    assert!(
        column_path > 150,
        "only {column_path} queries compile to columns"
    );
    check("one block").await;

    // A second block with more data of the same tenants, then compaction into one.
    for (tenant, is_dirty) in [(&clean, false), (&dirty, true)] {
        for n in 160..220 {
            let b = random_batch(tenant, &mut r, n, is_dirty);
            data.get_mut(tenant.as_str()).unwrap().push(b.clone());
            store.consume(b).await.unwrap();
        }
    }
    store.flush().await.unwrap();
    let naive: Vec<Vec<BTreeMap<TraceId, u64>>> = [&clean, &dirty]
        .iter()
        .map(|t| {
            qs.iter()
                .map(|q| naive_search(&data[t.as_str()], q))
                .collect()
        })
        .collect();
    let check2 = |stage: &'static str| {
        let (store, qs, naive, clean, dirty) = (&store, &qs, &naive, &clean, &dirty);
        async move {
            for (ti, t) in [clean, dirty].into_iter().enumerate() {
                for (qi, q) in qs.iter().enumerate() {
                    let got = answers(store, t, q).await;
                    assert_eq!(got, naive[ti][qi], "{stage}, tenant {t:?}, query {q:?}");
                }
            }
        }
    };
    check2("two blocks").await;
    assert!(store.compact_once().await.unwrap() >= 1);
    assert_eq!(store.blocks(&clean).len(), 1);
    check2("compacted").await;
}

#[tokio::test]
async fn bad_regex_is_an_invalid_query() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    let t = Tenant::new("a").unwrap();
    for (op, value) in [
        (CompareOp::Regex, TagValue::String("(".into())),
        (CompareOp::NotRegex, TagValue::String("[a-".into())),
        (CompareOp::Regex, TagValue::Int(3)),
    ] {
        let q = SearchQuery {
            conditions: vec![SpanCondition {
                field: SpanField::Name,
                op,
                value,
            }],
            ..Default::default()
        };
        let err = store.search(&t, &q).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidQuery(_)), "{err:?}");
    }
}

/// Tag names and values: the same from the head, from blocks and after a reopen (the catalog is
/// in the blocks' meta), by scope, distinct, sorted, typed, limited, and by time range.
#[tokio::test]
async fn tag_catalog_from_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tenant::new("a").unwrap();
    let mut r = Rng(3);
    let batches: Vec<SpanBatch> = (0..100)
        .map(|n| random_batch(&t, &mut r, n, true))
        .collect();
    let mut expect_span = BTreeSet::new();
    let mut expect_res = BTreeSet::new();
    for b in &batches {
        for rs in &b.resource_spans {
            for kv in &rs.resource.as_ref().unwrap().attributes {
                expect_res.insert(kv.key.clone());
            }
            for sp in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                for kv in &sp.attributes {
                    expect_span.insert(kv.key.clone());
                }
            }
        }
    }
    let expect_any: BTreeSet<String> = expect_span.union(&expect_res).cloned().collect();
    let check = |store: Store| {
        let (t, es, er, ea) = (t.clone(), &expect_span, &expect_res, &expect_any);
        async move {
            let names = |scope| {
                let (store, t) = (&store, &t);
                async move { store.tag_names(t, scope, None).await.unwrap() }
            };
            assert_eq!(
                names(AttrScope::Span).await,
                es.iter().cloned().collect::<Vec<_>>()
            );
            assert_eq!(
                names(AttrScope::Resource).await,
                er.iter().cloned().collect::<Vec<_>>()
            );
            assert_eq!(
                names(AttrScope::Any).await,
                ea.iter().cloned().collect::<Vec<_>>()
            );
            let v = store
                .tag_values(&t, AttrScope::Span, "k.str", None, 0)
                .await
                .unwrap();
            assert_eq!(
                v,
                ["10", "x", "xy", "y"]
                    .map(|x| TagValue::String(x.into()))
                    .to_vec()
            );
            // Typed: the dedicated key holds strings and, in this dirty data, the int 7.
            let v = store
                .tag_values(&t, AttrScope::Span, "http.route", None, 0)
                .await
                .unwrap();
            assert_eq!(
                v,
                vec![
                    TagValue::String("/a".into()),
                    TagValue::String("/b".into()),
                    TagValue::String("/c/1".into()),
                    TagValue::Int(7)
                ]
            );
            let v = store
                .tag_values(&t, AttrScope::Any, "k.int", None, 0)
                .await
                .unwrap();
            assert_eq!(v, [-1, 0, 5, 10].map(TagValue::Int).to_vec());
            let v = store
                .tag_values(&t, AttrScope::Resource, "k.int", None, 1)
                .await
                .unwrap();
            assert_eq!(v, vec![TagValue::Int(5)]);
            let v = store
                .tag_values(&t, AttrScope::Span, "mixed", None, 0)
                .await
                .unwrap();
            assert_eq!(
                v,
                vec![
                    TagValue::String("5".into()),
                    TagValue::Int(5),
                    TagValue::Double(5.0),
                    TagValue::Bool(true)
                ]
            );
            assert!(store
                .tag_values(&t, AttrScope::Span, "service.name", None, 0)
                .await
                .unwrap()
                .is_empty());
            // A range before every span: nothing.
            assert!(store
                .tag_names(&t, AttrScope::Any, Some((0, 1000)))
                .await
                .unwrap()
                .is_empty());
            store
        }
    };
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    for b in batches {
        store.consume(b).await.unwrap();
    }
    let store = check(store).await;
    store.flush().await.unwrap();
    assert_eq!(store.head_span_count(), 0);
    let store = check(store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    check(store).await;
}
