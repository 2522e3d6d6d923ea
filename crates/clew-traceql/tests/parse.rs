//! Parser: canonical printing round trips, and errors that point at the position.

use clew_store::AttrScope;
use clew_traceql::ast::*;
use clew_traceql::parse;

const CORPUS: &[&str] = &[
    "{}",
    "{ }",
    "{ true }",
    "{ false }",
    "{ name = \"GET /cart\" }",
    "{ span:name = \"x\" }",
    "{ status = error }",
    "{ span:status = ok }",
    "{ status != unset }",
    "{ statusMessage =~ \"time.*out\" }",
    "{ span:statusMessage = \"\" }",
    "{ kind = server }",
    "{ span:kind = consumer || kind = producer || kind = client || kind = internal || kind = unspecified }",
    "{ duration > 100ms }",
    "{ span:duration >= 1.5s }",
    "{ duration < 10us && duration <= 10µs }",
    "{ duration > 1h30m }",
    "{ duration > 2m }",
    "{ duration > 7ns }",
    "{ rootName = \"root\" }",
    "{ trace:rootName != \"x\" }",
    "{ rootServiceName = \"cart\" }",
    "{ trace:rootService =~ \"car.*\" }",
    "{ traceDuration > 1s }",
    "{ trace:duration < 2s }",
    "{ span.http.status_code = 200 }",
    "{ span.http.status_code >= 200 && span.http.status_code < 300 }",
    "{ resource.service.name = \"cart\" }",
    "{ .http.method = \"GET\" }",
    "{ span.\"http status\" = 500 }",
    "{ resource.\"k8s pod\" != nil }",
    "{ .\"a\\\"b\" = `raw\\string` }",
    "{ span.ratio > 0.5 }",
    "{ span.ratio < -0.25 }",
    "{ span.big = 1e20 }",
    "{ span.small = 1e-7 }",
    "{ span.neg = -42 }",
    "{ span.min = -9223372036854775808 }",
    "{ span.flag = true }",
    "{ span.flag != false }",
    "{ span.missing = nil }",
    "{ span.s = \"line\\nbreak\\ttab\\\\\" }",
    "{ !(span.a = 1) }",
    "{ !span.a = 1 }",
    "{ (span.a = 1 || span.b = 2) && span.c = 3 }",
    "{ span.a = 1 || span.b = 2 && span.c = 3 }",
    "{ span.a !~ \"x|y\" }",
    "{ span.a = 1 } && { span.b = 2 }",
    "{ span.a = 1 } || { span.b = 2 }",
    "{ span.a = 1 } > { span.b = 2 }",
    "{ span.a = 1 } >> { span.b = 2 }",
    "{ span.a = 1 } < { span.b = 2 }",
    "{ span.a = 1 } << { span.b = 2 }",
    "{ span.a = 1 } ~ { span.b = 2 }",
    "{ span.a = 1 } !> { span.b = 2 }",
    "{ span.a = 1 } !>> { span.b = 2 }",
    "{ span.a = 1 } !< { span.b = 2 }",
    "{ span.a = 1 } !<< { span.b = 2 }",
    "{ span.a = 1 } !~ { span.b = 2 }",
    "({ .b = 1 } && { .c = 2 }) >> { .d = 3 }",
    "{ .a = 1 } && { .b = 2 } || { .c = 3 } > { .d = 4 }",
    "({ .a = 1 } | count() > 1) && { .b = 2 }",
    "{ } | count() > 3",
    "{ } | count() = 1.5",
    "{ status = error } | avg(duration) > 1s",
    "{ } | min(duration) < 10ms | max(span.bytes) >= 1000 | sum(span.bytes) != 5.5",
    "{ } | by(resource.service.name) | count() > 1",
    "{ } | by(resource.service.name, name) | select(span.http.method, status)",
    "{ } | select(span.http.method)",
    "{ } | coalesce()",
    "{ .a = 1 } | { .b = 2 } | { }",
    "{span.a=1}&&{span.b=2}",
    "{\n  span.a = \"x\"\n}\n| count() > 0",
    "{ span.kind = \"server\" }",
    "{ span.\"\" = 1 }",
    "{ span.日本 = \"語\" }",
];

#[test]
fn corpus_round_trips_through_canonical_form() {
    for src in CORPUS {
        let q = parse(src).unwrap_or_else(|e| panic!("{src:?} does not parse: {e}"));
        let printed = q.to_string();
        let again = parse(&printed)
            .unwrap_or_else(|e| panic!("{src:?} printed as {printed:?} does not parse: {e}"));
        assert_eq!(again, q, "{src:?} printed as {printed:?}");
        // Canonical: printing is a fixed point.
        assert_eq!(again.to_string(), printed);
    }
}

#[test]
fn scoped_intrinsics_are_the_same_node_as_unscoped_ones() {
    let pairs = [
        ("name", "span:name"),
        ("status", "span:status"),
        ("statusMessage", "span:statusMessage"),
        ("kind", "span:kind"),
        ("duration", "span:duration"),
        ("rootName", "trace:rootName"),
        ("rootServiceName", "trace:rootService"),
        ("traceDuration", "trace:duration"),
    ];
    for (short, scoped) in pairs {
        let i = Intrinsic::from_name(short).unwrap();
        assert_eq!(Intrinsic::from_name(scoped), Some(i));
        assert_eq!(i.scoped_name(), scoped);
        assert_eq!(i.name(), short);
    }
}

#[test]
fn trees_have_the_expected_shape() {
    let q = parse("{ span.a = 1 || span.b = \"x\" && !resource.c = nil }").unwrap();
    let SpansetExpr::Filter(Some(FieldExpr::Or(a, rest))) = &q.head else {
        panic!("{q:?}")
    };
    assert_eq!(
        **a,
        FieldExpr::Compare {
            field: Field::Attribute {
                scope: AttrScope::Span,
                key: "a".into()
            },
            op: CmpOp::Eq,
            value: Literal::Int(1),
        }
    );
    assert!(matches!(**rest, FieldExpr::And(_, _)));

    // Structural operators bind tighter than && and ||, and associate to the left.
    let q = parse("{ .a = 1 } && { .b = 2 } > { .c = 3 } >> { .d = 4 }").unwrap();
    let SpansetExpr::Binary { op, rhs, .. } = &q.head else {
        panic!()
    };
    assert_eq!(*op, SpansetOp::And);
    let SpansetExpr::Binary { op, lhs, .. } = &**rhs else {
        panic!()
    };
    assert_eq!(*op, SpansetOp::Descendant);
    assert!(matches!(
        &**lhs,
        SpansetExpr::Binary {
            op: SpansetOp::Child,
            ..
        }
    ));

    let q = parse("{ duration > 1.5s && duration < 1h30m && duration > 250µs }").unwrap();
    assert_eq!(
        q.to_string(),
        "{ duration > 1500ms && duration < 90m && duration > 250us }"
    );
    let q = parse("{ .a = `x\\y` }").unwrap();
    assert_eq!(q.to_string(), "{ .a = \"x\\\\y\" }");
    let q = parse("{ } | by(span.a) | count() >= 2 | select(kind)").unwrap();
    assert_eq!(q.stages.len(), 3);
}

fn err(src: &str) -> clew_traceql::ParseError {
    match parse(src) {
        Ok(q) => panic!("{src:?} parsed as {q:?}"),
        Err(e) => e,
    }
}

#[test]
fn errors_point_at_the_position_and_say_what_was_expected() {
    let e = err("{ span.foo foo }");
    assert_eq!((e.line, e.column, e.offset), (1, 12, 11));
    assert_eq!(
        e.to_string(),
        "parse error at 1:12 (byte 11): expected a comparison operator (=, !=, >, >=, <, <=, =~, !~), found \"foo\""
    );

    let e = err("{ span.a = }");
    assert_eq!((e.column, e.found.as_str()), (12, "\"}\""));
    assert!(e.expected.starts_with("a value"), "{e}");

    let e = err("{ span.a = 1 ");
    assert_eq!(e.found, "end of query");
    assert_eq!(e.offset, 13);
    assert!(e.expected.contains("`}`"), "{e}");

    // Line and column on a later line; columns count characters, not bytes.
    let e = err("{ .é = 1 }\n| cnt() > 1");
    assert_eq!((e.line, e.column, e.offset), (2, 3, 14));
    assert!(e.expected.starts_with("a pipeline stage"), "{e}");

    let e = err("{ duration > 100 }");
    assert_eq!(e.column, 14);
    assert!(e.expected.starts_with("a duration"), "{e}");

    let e = err("{ status = 200 }");
    assert!(e.expected.starts_with("a status"), "{e}");

    let e = err("{ kind = serverx }");
    assert!(e.expected.starts_with("a value"), "{e}");

    let e = err("{ .a =~ \"(\" }");
    assert_eq!(e.column, 9);
    assert!(e.expected.starts_with("a valid regular expression"), "{e}");

    let e = err("{ .a =~ 5 }");
    assert!(e.expected.contains("regular expression"), "{e}");

    let e = err("{ .a > nil }");
    assert!(e.expected.contains("nil only compares"), "{e}");

    let e = err("{ .a = \"unterminated }");
    assert_eq!(e.column, 8);
    assert!(e.expected.contains("closing"), "{e}");

    let e = err("{ .a = 5xs }");
    assert_eq!(e.column, 9);
    assert!(e.expected.contains("duration unit"), "{e}");

    let e = err("{ .a = 99999999999999999999 }");
    assert!(e.expected.starts_with("an integer"), "{e}");

    let e = err("{ event.name = \"x\" }");
    assert!(e.expected.contains("scope is not supported"), "{e}");

    let e = err("{ .a = 1 } {");
    assert_eq!(e.column, 12);

    let e = err("");
    assert_eq!((e.offset, e.found.as_str()), (0, "end of query"));

    let e = err("{ } | count() > 1s");
    assert_eq!(e.expected, "a number");

    let e = err("{ } | by(span.a");
    assert!(e.expected.contains("`)`"), "{e}");

    let e = err("{ .a = 1 } >");
    assert!(e.expected.contains("spanset filter"), "{e}");

    let e = err("{ .a = \"\\q\" }");
    assert!(e.expected.contains("escape"), "{e}");

    let e = err("{ .a = 1 } # {}");
    assert_eq!(e.found, "\"#\"");
}

#[test]
fn nesting_and_size_are_bounded() {
    let deep = format!("{}{{ }}{}", "(".repeat(1000), ")".repeat(1000));
    assert!(err(&deep).expected.contains("less nesting"));
    let nots = format!("{{ {}.a = 1 }}", "!".repeat(1000));
    assert!(err(&nots).expected.contains("less nesting"));
    let long = vec!["{ .a = 1 }"; 2000].join(" && ");
    assert!(err(&long).expected.contains("shorter query"));
    // Just under the limits parses.
    let ok = format!("{}{{ }}{}", "(".repeat(60), ")".repeat(60));
    assert!(parse(&ok).is_ok());
}
