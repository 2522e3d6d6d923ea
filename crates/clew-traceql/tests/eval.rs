//! Each intrinsic, scope and operator against a hand-built trace with known answers.

mod common;

use clew_model::FlatSpan;
use clew_model::TraceId;
use clew_store::TagValue;
use clew_traceql::{compile, trace_match};

/// The spansets a query yields, as span names.
fn sets_in(spans: &[FlatSpan], q: &str) -> Vec<Vec<String>> {
    let c = compile(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    c.evaluate(spans)
        .into_iter()
        .map(|s| {
            s.spans
                .iter()
                .map(|&i| spans[i].span.name.clone())
                .collect()
        })
        .collect()
}

fn sets(q: &str) -> Vec<Vec<String>> {
    sets_in(&common::trace(), q)
}

/// The single spanset's span names, or an empty list when the trace does not match.
fn one(q: &str) -> Vec<String> {
    let s = sets(q);
    assert!(s.len() <= 1, "{q}: {s:?}");
    s.into_iter().next().unwrap_or_default()
}

fn check(q: &str, want: &[&str]) {
    assert_eq!(one(q), want, "{q}");
}

const ALL: &[&str] = &[
    "GET /",
    "cart.get",
    "GetCart",
    "redis GET",
    "redis SET",
    "auth",
];

#[test]
fn intrinsics() {
    check("{ }", ALL);
    check("{ true }", ALL);
    check("{ false }", &[]);
    check("{ name = \"GetCart\" }", &["GetCart"]);
    check(
        "{ span:name != \"GetCart\" }",
        &["GET /", "cart.get", "redis GET", "redis SET", "auth"],
    );
    check("{ status = error }", &["GetCart"]);
    check("{ span:status = ok }", &["auth"]);
    check(
        "{ status = unset }",
        &["GET /", "cart.get", "redis GET", "redis SET"],
    );
    check("{ status != unset }", &["GetCart", "auth"]);
    check("{ statusMessage = \"boom\" }", &["GetCart"]);
    check("{ span:statusMessage =~ \"bo.*\" }", &["GetCart"]);
    check("{ kind = server }", &["GET /", "GetCart"]);
    check(
        "{ span:kind = client }",
        &["cart.get", "redis GET", "redis SET"],
    );
    check("{ kind = internal }", &["auth"]);
    check(
        "{ kind = producer || kind = consumer || kind = unspecified }",
        &[],
    );
    check("{ duration > 20ms }", &["GET /", "cart.get", "GetCart"]);
    check(
        "{ span:duration >= 30ms && duration <= 40ms }",
        &["cart.get", "GetCart"],
    );
    check("{ duration < 5ms }", &["redis SET"]);
    check("{ duration = 5000us }", &["redis GET"]);
    check("{ rootName = \"GET /\" }", ALL);
    check("{ trace:rootName = \"auth\" }", &[]);
    check("{ rootServiceName = \"frontend\" }", ALL);
    check("{ trace:rootService = \"cart\" }", &[]);
    check("{ traceDuration = 100ms }", ALL);
    check("{ trace:duration > 100ms }", &[]);
    check("{ traceDuration > 99ms && name = \"auth\" }", &["auth"]);
}

#[test]
fn attributes_scopes_and_typed_comparisons() {
    check("{ span.http.status_code = 200 }", &["GET /"]);
    // An int attribute never equals a string.
    check("{ span.http.status_code = \"200\" }", &[]);
    // Ints and floats compare numerically.
    check("{ span.http.status_code >= 200.0 }", &["GET /", "GetCart"]);
    check(
        "{ span.http.status_code > 199.5 && span.http.status_code < 200.5 }",
        &["GET /"],
    );
    // `!=` on a missing attribute is false.
    check("{ span.http.status_code != 200 }", &["GetCart"]);
    check(
        "{ span.http.status_code = nil }",
        &["cart.get", "redis GET", "redis SET", "auth"],
    );
    check("{ span.http.status_code != nil }", &["GET /", "GetCart"]);
    check(
        "{ resource.service.name = \"cart\" }",
        &["GetCart", "redis GET", "redis SET"],
    );
    // Unscoped: the span's attribute, else the resource's.
    check(
        "{ .service.name = \"cart\" }",
        &["GetCart", "redis GET", "redis SET"],
    );
    check("{ span.service.name = \"cart\" }", &[]);
    check("{ .deployment = \"prod\" }", &["GET /", "cart.get"]);
    check("{ span.\"http status\" = \"x\" }", &["auth"]);
    check("{ resource.\"k8s pod\" = `p1` }", &["auth"]);
    check("{ span.ratio > 0.4 }", &["GetCart"]);
    check("{ span.ratio = 0.5 && span.ratio < 1 }", &["GetCart"]);
    check("{ span.flag = true }", &["GetCart"]);
    check("{ span.flag != false }", &["GetCart"]);
    check("{ span.flag = \"true\" }", &[]);
    check(
        "{ span.http.method > \"A\" && span.http.method < \"H\" }",
        &["GET /"],
    );
    check("{ span.missing = nil }", ALL);
    check("{ span.missing != \"x\" }", &[]);
}

#[test]
fn regexes_are_anchored() {
    check("{ name =~ \"redis.*\" }", &["redis GET", "redis SET"]);
    check("{ name =~ \"redis\" }", &[]);
    check("{ name =~ \"GET\" }", &[]);
    check("{ name =~ \".*GET.*\" }", &["GET /", "redis GET"]);
    check(
        "{ name !~ \"redis.*\" }",
        &["GET /", "cart.get", "GetCart", "auth"],
    );
    check(
        "{ span.db.system =~ \"re(d|x)is\" }",
        &["redis GET", "redis SET"],
    );
    // A regex on a missing attribute is false, negated or not.
    check("{ span.db.system !~ \"x\" }", &["redis GET", "redis SET"]);
    check("{ span.http.status_code =~ \"200\" }", &[]);
    check("{ name =~ \"a|GetCart\" }", &["GetCart"]);
}

#[test]
fn boolean_operators_inside_filters() {
    check("{ !(kind = client) }", &["GET /", "GetCart", "auth"]);
    check("{ !kind = client && !status = error }", &["GET /", "auth"]);
    check(
        "{ kind = internal || status = error }",
        &["GetCart", "auth"],
    );
    check(
        "{ (kind = client || kind = internal) && duration > 3ms }",
        &["cart.get", "redis GET", "auth"],
    );
    // && binds tighter than ||.
    check(
        "{ kind = internal || kind = client && duration > 20ms }",
        &["cart.get", "auth"],
    );
}

#[test]
fn spanset_operators() {
    check(
        "{ status = error } && { name = \"auth\" }",
        &["GetCart", "auth"],
    );
    check("{ status = error } && { name = \"nope\" }", &[]);
    check("{ status = error } || { name = \"nope\" }", &["GetCart"]);
    check(
        "{ name = \"auth\" } || { status = error }",
        &["GetCart", "auth"],
    );
    check("{ name = \"cart.get\" } > { kind = server }", &["GetCart"]);
    check("{ name = \"GET /\" } > { }", &["cart.get", "auth"]);
    check(
        "{ name = \"GET /\" } >> { kind = client }",
        &["cart.get", "redis GET", "redis SET"],
    );
    check("{ name = \"redis GET\" } < { }", &["GetCart"]);
    check("{ kind = client } < { }", &["GET /", "GetCart"]);
    check(
        "{ name = \"redis GET\" } << { kind = server }",
        &["GET /", "GetCart"],
    );
    check(
        "{ name = \"redis GET\" } << { }",
        &["GET /", "cart.get", "GetCart"],
    );
    check("{ name = \"redis GET\" } ~ { }", &["redis SET"]);
    check("{ name = \"cart.get\" } ~ { }", &["auth"]);
    // A span is not its own sibling.
    check(
        "{ kind = client } ~ { kind = client }",
        &["redis GET", "redis SET"],
    );
    check("{ name = \"GET /\" } ~ { }", &[]);
    check("{ name = \"cart.get\" } !> { kind = server }", &["GET /"]);
    check("{ kind = server } !>> { }", &["GET /"]);
    check("{ name = \"redis GET\" } !<< { kind = server }", &[]);
    check(
        "{ name = \"redis GET\" } !< { }",
        &["GET /", "cart.get", "redis GET", "redis SET", "auth"],
    );
    check(
        "{ name = \"redis GET\" } !~ { kind = client }",
        &["cart.get", "redis GET"],
    );
    // Parentheses and precedence between spanset operators.
    check(
        "({ name = \"GET /\" } > { }) >> { status = error }",
        &["GetCart"],
    );
    check(
        "{ name = \"nope\" } && { } || { name = \"auth\" }",
        &["auth"],
    );
    check(
        "{ name = \"GET /\" } > { kind = client } > { kind = server } > { name = \"redis SET\" }",
        &["redis SET"],
    );
    check(
        "{ name = \"GET /\" } > ({ kind = client } > { kind = server })",
        &[],
    );
}

#[test]
fn pipelines() {
    check(
        "{ kind = client } | count() = 3",
        &["cart.get", "redis GET", "redis SET"],
    );
    check("{ kind = client } | count() > 3", &[]);
    check(
        "{ kind = client } | count() >= 2.5",
        &["cart.get", "redis GET", "redis SET"],
    );
    // avg = 187ms / 6
    check("{ } | avg(duration) > 31ms", ALL);
    check("{ } | avg(duration) > 32ms", &[]);
    check("{ } | min(duration) = 2ms", ALL);
    check("{ } | max(duration) = 100ms", ALL);
    check("{ } | sum(duration) = 187ms", ALL);
    check("{ } | sum(span.http.status_code) = 700", ALL);
    check("{ } | avg(span.ratio) = 0.5", ALL);
    // Duration aggregates compare with durations, numeric ones with numbers.
    check("{ } | sum(duration) > 5", &[]);
    check("{ } | max(span.missing) > 0", &[]);
    check("{ } | { status = error }", &["GetCart"]);
    check(
        "{ kind = server } | { status = error } | count() = 1",
        &["GetCart"],
    );
    check(
        "({ kind = client } | count() > 2) && { name = \"auth\" }",
        &["cart.get", "redis GET", "redis SET", "auth"],
    );
    check(
        "({ kind = client } | count() > 3) && { name = \"auth\" }",
        &[],
    );
    check("{ } | select(span.db.system)", ALL);

    let c = compile("{ } | by(resource.service.name) | count() > 1").unwrap();
    let spans = common::trace();
    let got = c.evaluate(&spans);
    assert_eq!(got.len(), 2);
    let names: Vec<Vec<&str>> = got
        .iter()
        .map(|s| {
            s.spans
                .iter()
                .map(|&i| spans[i].span.name.as_str())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["GET /", "cart.get"],
            vec!["GetCart", "redis GET", "redis SET"]
        ]
    );
    assert_eq!(
        got[1].attributes,
        vec![
            (
                "by(resource.service.name)".to_string(),
                TagValue::String("cart".into())
            ),
            ("count()".to_string(), TagValue::Int(3)),
        ]
    );
    assert_eq!(
        sets("{ } | by(resource.service.name) | { status = error }"),
        vec![vec!["GetCart".to_string()]]
    );
    assert_eq!(sets("{ } | by(kind)").len(), 3);
    assert_eq!(
        sets("{ } | by(kind) | coalesce()"),
        vec![ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>()]
    );
    assert!(sets("{ } | by(kind) | count() > 3").is_empty());
}

#[test]
fn trace_summary_and_returned_attributes() {
    let spans = common::trace();
    let c = compile("{ span.db.system = \"redis\" } | select(status, duration)").unwrap();
    let sets = c.evaluate(&spans);
    let m = trace_match(&c, TraceId([7; 16]), &spans, &sets, 1);
    assert_eq!(m.root_service_name, "frontend");
    assert_eq!(m.root_trace_name, "GET /");
    assert_eq!(m.start_unix_nano, common::BASE);
    assert_eq!(m.duration_ms, 100);
    assert_eq!(m.span_sets.len(), 1);
    assert_eq!(m.span_sets[0].matched, 2);
    assert_eq!(m.span_sets[0].spans.len(), 1);
    let s = &m.span_sets[0].spans[0];
    assert_eq!(s.name, "redis GET");
    assert_eq!(s.span_id.0, [4; 8]);
    assert_eq!(s.duration_nanos, 5 * common::MS);
    assert_eq!(
        s.attributes,
        vec![
            (
                "span.db.system".to_string(),
                TagValue::String("redis".into())
            ),
            ("status".to_string(), TagValue::String("unset".into())),
            ("duration".to_string(), TagValue::Int(5_000_000)),
        ]
    );

    // Without its root span, a trace has no root name or service, and says so.
    let rootless: Vec<FlatSpan> = spans.iter().skip(1).cloned().collect();
    let c = compile("{ rootName = \"GET /\" }").unwrap();
    assert!(c.evaluate(&rootless).is_empty());
    let c = compile("{ rootName = nil }").unwrap();
    let sets = c.evaluate(&rootless);
    assert_eq!(sets[0].spans.len(), 5);
    let m = trace_match(&c, TraceId([7; 16]), &rootless, &sets, 3);
    assert_eq!(m.root_service_name, "<root span not yet received>");
    assert_eq!(m.root_trace_name, "");
    assert_eq!(m.start_unix_nano, common::BASE + 10 * common::MS);
    // The orphaned child of the missing root has no parent in the trace.
    assert_eq!(
        sets_in(&rootless, "{ } > { name = \"cart.get\" }"),
        Vec::<Vec<String>>::new()
    );
}

#[test]
fn malformed_traces_do_not_hang_or_panic() {
    // Two spans that are each other's parent, one its own parent, and an empty trace.
    let mut spans = common::trace();
    spans[0].span.parent_span_id = vec![2; 8];
    spans[1].span.parent_span_id = vec![1; 8];
    spans[5].span.parent_span_id = vec![6; 8];
    for q in [
        "{ } >> { }",
        "{ } << { }",
        "{ } !>> { }",
        "{ } ~ { }",
        "{ } > { } < { }",
        "{ rootName != nil }",
        "{ } | by(name) | avg(duration) > 1ms",
    ] {
        let _ = sets_in(&spans, q);
        assert!(sets_in(&[], q).is_empty(), "{q}");
    }
    assert_eq!(
        sets_in(&spans, "{ name = \"GET /\" } >> { name = \"cart.get\" }"),
        vec![vec!["cart.get".to_string()]]
    );
}

#[test]
fn deep_traces_resolve_ancestry() {
    // A chain of 5,000 spans: s0 → s1 → … → s4999 (deep enough that any recursion over the tree
    // or a walk per span pair would show).
    let template = common::trace().remove(0);
    let spans: Vec<FlatSpan> = (0..5_000u32)
        .map(|i| {
            let mut s = template.clone();
            s.span.name = format!("s{i}");
            s.span.span_id = (u64::from(i) + 1).to_be_bytes().to_vec();
            s.span.parent_span_id = if i == 0 {
                Vec::new()
            } else {
                u64::from(i).to_be_bytes().to_vec()
            };
            s
        })
        .collect();
    let last = vec![vec!["s4999".to_string()]];
    assert_eq!(
        sets_in(&spans, "{ name = \"s0\" } >> { name = \"s4999\" }"),
        last
    );
    assert_eq!(
        sets_in(&spans, "{ name = \"s4998\" } > { name = \"s4999\" }"),
        last
    );
    assert_eq!(
        sets_in(&spans, "{ name = \"s4999\" } << { name = \"s0\" }"),
        vec![vec!["s0".to_string()]]
    );
    assert_eq!(sets_in(&spans, "{ } >> { }")[0].len(), 4_999);
    assert_eq!(sets_in(&spans, "{ } << { }")[0].len(), 4_999);
    assert!(sets_in(&spans, "{ } ~ { }").is_empty());
    assert_eq!(sets_in(&spans, "{ } | by(name) | count() = 1").len(), 5_000);
}
