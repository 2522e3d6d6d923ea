//! Unit tests of the pure parts: request parsing, tag references, value typing, JSON shapes.
//! The handlers run over a real server in `tests/tempo_http.rs`.

use super::*;
use clew_model::{SpanId, TraceId};
use clew_traceql::{MatchedSpan, MatchedSpanSet};

fn qp(s: &str) -> QueryParams {
    QueryParams::parse(Some(s))
}

#[test]
fn search_without_q_is_translated_to_traceql() {
    let r = search_request(&qp(
        "tags=service.name%3Dcart%20http.status_code%3D500&minDuration=100ms&maxDuration=2s&start=10&end=20",
    ))
    .unwrap();
    assert_eq!(
        r.query,
        "{ resource.service.name = \"cart\" && (.http.status_code = 500 || .http.status_code = \"500\") \
         && traceDuration >= 100000000ns && traceDuration <= 2000000000ns }"
    );
    assert_eq!(r.start_unix_nano, Some(10_000_000_000));
    assert_eq!(r.end_unix_nano, Some(20_999_999_999));
    assert_eq!((r.limit, r.spans_per_spanset), (20, 3));

    let r = search_request(&qp("q=%7B%20.a%20%3D%201%20%7D&tags=x%3Dy&limit=5&spss=7")).unwrap();
    assert_eq!(r.query, "{ .a = 1 }", "q wins over tags");
    assert_eq!((r.limit, r.spans_per_spanset), (5, 7));
    assert_eq!(search_request(&qp("")).unwrap().query, "{}");
    assert_eq!(search_request(&qp("q=")).unwrap().query, "{}");
    assert_eq!(
        search_request(&qp("limit=999999")).unwrap().limit,
        MAX_TRACES_PER_SEARCH
    );
    assert_eq!(search_request(&qp("limit=0&spss=0")).unwrap().limit, 20);
}

#[test]
fn bad_search_parameters_are_named() {
    for (q, needle) in [
        ("minDuration=fast", "invalid minDuration"),
        ("maxDuration=-1s", "invalid maxDuration"),
        ("limit=-1", "invalid limit"),
        ("spss=x", "invalid spss"),
        ("start=yesterday", "invalid start"),
        ("start=20&end=10", "start is after end"),
        ("end=99999999999999999999", "invalid end"),
        ("start=18446744073709551615", "out of range"),
        ("tags=lonely", "tags: expected `key=value`"),
        ("tags=k%3D%22open", "unterminated"),
    ] {
        let e = search_request(&qp(q)).unwrap_err();
        assert!(e.contains(needle), "{q}: {e}");
    }
}

#[test]
fn trace_ids_are_left_padded_and_checked() {
    // Tempo pads short ids (64-bit ids of Jaeger/Zipkin origin) with leading zeros.
    assert_eq!(
        parse_trace_id("abc").unwrap().to_hex(),
        "00000000000000000000000000000abc"
    );
    assert_eq!(
        parse_trace_id("0123456789abcdefFEDCBA9876543210")
            .unwrap()
            .to_hex(),
        "0123456789abcdeffedcba9876543210"
    );
    for bad in [
        "",
        "xyz",
        "0",
        "00000000000000000000000000000000",
        &"a".repeat(33),
        "ab cd",
    ] {
        assert!(parse_trace_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tag_references() {
    use TagRef::*;
    assert_eq!(parse_tag_ref("resource.service.name"), Ok(ServiceName));
    assert_eq!(parse_tag_ref("name"), Ok(SpanName));
    assert_eq!(parse_tag_ref("span:name"), Ok(SpanName));
    assert_eq!(parse_tag_ref("status"), Ok(Status));
    assert_eq!(parse_tag_ref("span:kind"), Ok(Kind));
    assert_eq!(parse_tag_ref("trace:rootService"), Ok(RootService));
    assert_eq!(parse_tag_ref("duration"), Ok(OtherIntrinsic));
    assert_eq!(parse_tag_ref("event:name"), Ok(OtherIntrinsic));
    assert_eq!(
        parse_tag_ref("span.http.method"),
        Ok(Attribute {
            scope: AttrScope::Span,
            key: "http.method".into()
        })
    );
    assert_eq!(
        parse_tag_ref("resource.host.name"),
        Ok(Attribute {
            scope: AttrScope::Resource,
            key: "host.name".into()
        })
    );
    assert_eq!(
        parse_tag_ref(".k"),
        Ok(Attribute {
            scope: AttrScope::Any,
            key: "k".into()
        })
    );
    assert_eq!(
        parse_tag_ref("plain"),
        Ok(Attribute {
            scope: AttrScope::Any,
            key: "plain".into()
        })
    );
    assert!(parse_tag_ref("").is_err());
    assert!(parse_tag_ref("span.").is_err());
    assert!(parse_tag_ref(".").is_err());
}

#[test]
fn typed_values() {
    let t = |v: TagValue| {
        let tv = typed_value(&v);
        (tv.r#type, tv.value)
    };
    assert_eq!(
        t(TagValue::String("a".into())),
        ("string".into(), "a".into())
    );
    assert_eq!(t(TagValue::Int(-5)), ("int".into(), "-5".into()));
    assert_eq!(t(TagValue::Double(1.5)), ("float".into(), "1.5".into()));
    assert_eq!(t(TagValue::Bool(true)), ("bool".into(), "true".into()));
}

#[test]
fn search_hit_json_shape() {
    let m = TraceMatch {
        trace_id: TraceId([1; 16]),
        root_service_name: "cart".into(),
        root_trace_name: "GET /".into(),
        start_unix_nano: 1_700_000_000_123_456_789,
        duration_ms: 42,
        span_sets: vec![MatchedSpanSet {
            spans: vec![MatchedSpan {
                span_id: SpanId([2; 8]),
                name: "db".into(),
                start_unix_nano: 1_700_000_000_200_000_000,
                duration_nanos: 5_000_000,
                attributes: vec![
                    ("span.http.status_code".into(), TagValue::Int(500)),
                    ("span.ok".into(), TagValue::Bool(false)),
                ],
            }],
            matched: 4,
            attributes: vec![(
                "by(resource.service.name)".into(),
                TagValue::String("cart".into()),
            )],
        }],
    };
    let json = serde_json::to_value(proto::SearchResponse {
        traces: vec![trace_metadata(&m)],
        metrics: Some(proto::SearchMetrics {
            inspected_traces: 3,
            inspected_spans: 9,
            ..Default::default()
        }),
    })
    .unwrap();
    let set = serde_json::json!({
        "spans": [{
            "spanID": "0202020202020202",
            "name": "db",
            "startTimeUnixNano": "1700000000200000000",
            "durationNanos": "5000000",
            "attributes": [
                {"key": "span.http.status_code", "value": {"intValue": "500"}},
                {"key": "span.ok", "value": {"boolValue": false}},
            ],
        }],
        "matched": 4,
        "attributes": [{"key": "by(resource.service.name)", "value": {"stringValue": "cart"}}],
    });
    assert_eq!(
        json,
        serde_json::json!({
            "traces": [{
                "traceID": "01010101010101010101010101010101",
                "rootServiceName": "cart",
                "rootTraceName": "GET /",
                "startTimeUnixNano": "1700000000123456789",
                "durationMs": 42,
                "spanSet": set,
                "spanSets": [set],
            }],
            "metrics": {
                "inspectedTraces": 3,
                "inspectedBytes": "0",
                "totalBlocks": 0,
                "completedJobs": 0,
                "totalJobs": 0,
                "totalBlockBytes": "0",
                "inspectedSpans": "9",
            },
        })
    );
}

#[test]
fn intrinsics_are_sorted_and_known_to_the_tag_parser() {
    let mut sorted = INTRINSIC_TAGS.to_vec();
    sorted.sort();
    assert_eq!(sorted, INTRINSIC_TAGS);
    for t in INTRINSIC_TAGS {
        assert!(
            !matches!(parse_tag_ref(t), Ok(TagRef::Attribute { .. }) | Err(_)),
            "{t}"
        );
    }
}

#[test]
fn translated_tag_searches_are_valid_traceql() {
    // Whatever `tags` holds, the query Clew builds from it parses (a 400 for a tag search would
    // be Clew's bug, not the caller's).
    for tags in [
        "",
        "service.name=cart",
        "http.status_code=500 n=-7 ratio=0.5 ok=true no=false",
        r#"msg="say \"hi\" \\ there" odd/key:x=1 k-2=v"#,
        "x=inf y=NaN z=1e5 p=+5 d=1. big=99999999999999999999",
        r#"name="GET /" status=error status=ok kind=server"#,
        "unicode=ü→✓ empty=",
    ] {
        let parsed = params::parse_logfmt(tags).unwrap();
        let query = params::tags_to_traceql(&parsed, Some(1_000_000), Some(3_600_000_000_000));
        if let Err(e) = clew_traceql::parse(&query) {
            panic!("{tags:?} → {query:?}: {e}");
        }
    }
}
