//! Grafana's Tempo data source against the real `clew` binary: spans go in over OTLP/HTTP
//! (protobuf), then the request sequence Grafana sends is replayed on the Tempo port (`:3200` in
//! production, a free port here): `/api/echo`, `/api/status/buildinfo`, a TraceQL search, tag
//! autocomplete (v2 tag names and values), then the trace by id as protobuf from `/api/v2/traces`
//! and `/api/traces` — decoded with the message types mirrored from the vendored `tempo.proto` and
//! compared span by span (ids, names, times, attributes, events, links, status, resource, scope)
//! with what was sent. The same routes answer under `/tempo` on the query port.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{span, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
use clew_query::tempo::proto;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::Server;

const TRACE: [u8; 16] = [
    0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9,
];
/// A second trace, for a search that must tell the two apart; a 64-bit id (upper half zero), as
/// Jaeger and Zipkin clients make, to look up by its short hex form.
const OTHER_TRACE: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// Attributes of every OTLP type.
fn every_type(prefix: &str) -> Vec<KeyValue> {
    vec![
        kv(&format!("{prefix}.str"), s("hello")),
        kv(&format!("{prefix}.int"), Value::IntValue(-42)),
        kv(&format!("{prefix}.double"), Value::DoubleValue(2.5)),
        kv(&format!("{prefix}.bool"), Value::BoolValue(true)),
        kv(
            &format!("{prefix}.bytes"),
            Value::BytesValue(vec![0, 1, 254, 255]),
        ),
        kv(
            &format!("{prefix}.array"),
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(s("a")),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(7)),
                    },
                ],
            }),
        ),
        kv(
            &format!("{prefix}.map"),
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", s("x")), kv("n", Value::DoubleValue(0.25))],
            }),
        ),
    ]
}

fn sid(n: u8) -> Vec<u8> {
    vec![n, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]
}

/// Two traces; the first spans two services, three resources (two of one service, different
/// host), two scopes, every attribute type, events, links and statuses.
fn request(base: u64) -> ExportTraceServiceRequest {
    let span = |trace: &[u8; 16],
                id: u8,
                parent: Option<u8>,
                name: &str,
                kind: i32,
                start: u64,
                end: u64| Span {
        trace_id: trace.to_vec(),
        span_id: sid(id),
        parent_span_id: parent.map(sid).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: base + start,
        end_time_unix_nano: base + end,
        ..Default::default()
    };
    let mut root = span(&TRACE, 1, None, "GET /checkout", 2, 0, 120_000_000);
    root.attributes = every_type("span");
    root.attributes.push(kv("http.method", s("GET")));
    root.attributes
        .push(kv("http.status_code", Value::IntValue(500)));
    root.status = Some(Status {
        code: 2,
        message: "checkout failed".into(),
    });
    root.trace_state = "clew=1".into();
    root.flags = 0x101;
    root.dropped_attributes_count = 3;
    root.events = vec![
        span::Event {
            time_unix_nano: base + 10_000_000,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", s("Timeout")),
                kv("attempt", Value::IntValue(2)),
            ],
            dropped_attributes_count: 1,
        },
        span::Event {
            time_unix_nano: base + 20_000_000,
            name: "retry".into(),
            ..Default::default()
        },
    ];
    root.dropped_events_count = 4;
    root.links = vec![span::Link {
        trace_id: OTHER_TRACE.to_vec(),
        span_id: sid(9),
        trace_state: "k=v".into(),
        attributes: vec![kv("link.kind", s("follows"))],
        dropped_attributes_count: 2,
        flags: 0x301,
    }];
    root.dropped_links_count = 5;
    let mut client = span(&TRACE, 2, Some(1), "reserve", 3, 5_000_000, 60_000_000);
    client.status = Some(Status {
        code: 1,
        message: String::new(),
    });
    client.attributes = vec![kv("peer.service", s("tempo-inventory"))];
    let mut server = span(
        &TRACE,
        3,
        Some(2),
        "POST /reserve",
        2,
        8_000_000,
        55_000_000,
    );
    server.attributes = vec![kv("db.rows", Value::IntValue(12))];
    let internal = span(&TRACE, 4, Some(3), "select", 1, 9_000_000, 30_000_000);
    let other = span(&OTHER_TRACE, 9, None, "GET /health", 2, 0, 1_000_000);

    let resource = |service: &str, host: &str| Resource {
        attributes: {
            let mut a = vec![kv("service.name", s(service)), kv("host.name", s(host))];
            a.extend(every_type("res"));
            a
        },
        dropped_attributes_count: 1,
        ..Default::default()
    };
    let scope = |name: &str, version: &str| InstrumentationScope {
        name: name.into(),
        version: version.into(),
        attributes: vec![kv("scope.attr", s(name))],
        dropped_attributes_count: 0,
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("tempo-frontend", "web-1")),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(scope("http", "1.2.3")),
                        spans: vec![root],
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                    },
                    ScopeSpans {
                        scope: Some(scope("rpc-client", "0.9")),
                        spans: vec![client],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            },
            ResourceSpans {
                resource: Some(resource("tempo-inventory", "db-1")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("http", "1.2.3")),
                    spans: vec![server, internal],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: Some(resource("tempo-frontend", "web-2")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("http", "1.2.3")),
                    spans: vec![other],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

fn sort_attrs(a: &mut [KeyValue]) {
    a.sort_by(|x, y| x.key.cmp(&y.key));
}

/// Every span of `rs` keyed by span id, with its resource and scope; attribute lists sorted by key
/// (the store may keep some attributes in dedicated columns: order is not part of OTLP's meaning).
fn by_span_id(
    rs: &[ResourceSpans],
) -> BTreeMap<Vec<u8>, (Resource, String, InstrumentationScope, String, Span)> {
    let mut out = BTreeMap::new();
    for r in rs {
        let mut resource = r.resource.clone().unwrap_or_default();
        sort_attrs(&mut resource.attributes);
        for ss in &r.scope_spans {
            let mut scope = ss.scope.clone().unwrap_or_default();
            sort_attrs(&mut scope.attributes);
            for sp in &ss.spans {
                let mut sp = sp.clone();
                sort_attrs(&mut sp.attributes);
                for e in &mut sp.events {
                    sort_attrs(&mut e.attributes);
                }
                for l in &mut sp.links {
                    sort_attrs(&mut l.attributes);
                }
                let prev = out.insert(
                    sp.span_id.clone(),
                    (
                        resource.clone(),
                        r.schema_url.clone(),
                        scope.clone(),
                        ss.schema_url.clone(),
                        sp,
                    ),
                );
                assert!(prev.is_none(), "span returned twice");
            }
        }
    }
    out
}

/// Compares a returned trace with the spans of `TRACE` that were sent, span by span.
fn assert_same_trace(sent: &ExportTraceServiceRequest, got: &[ResourceSpans], what: &str) {
    let mut want = by_span_id(&sent.resource_spans);
    want.retain(|_, (_, _, _, _, sp)| sp.trace_id == TRACE);
    let got_rs = got;
    let got = by_span_id(got_rs);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: span ids"
    );
    for (id, w) in &want {
        let g = &got[id];
        assert_eq!(g.4, w.4, "{what}: span {}", hex::encode(id));
        assert_eq!(g.0, w.0, "{what}: resource of span {}", hex::encode(id));
        assert_eq!(
            g.1,
            w.1,
            "{what}: resource schema url of span {}",
            hex::encode(id)
        );
        assert_eq!(g.2, w.2, "{what}: scope of span {}", hex::encode(id));
        assert_eq!(
            g.3,
            w.3,
            "{what}: scope schema url of span {}",
            hex::encode(id)
        );
    }
    // Grouped back: one ResourceSpans per distinct resource, one ScopeSpans per scope in it.
    let shape: Vec<usize> = got_rs.iter().map(|r| r.scope_spans.len()).collect();
    let mut sorted = shape.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2], "{what}: resource/scope grouping {shape:?}");
}

async fn get(c: &reqwest::Client, url: &str, protobuf: bool) -> (u16, Vec<u8>) {
    let mut req = c.get(url).header("x-scope-orgid", "grafana-team");
    if protobuf {
        req = req.header("accept", "application/protobuf");
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_tempo_data_source_request_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = now_ns() - 30_000_000_000;
    let sent = request(base);
    let r = c
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .header("x-scope-orgid", "grafana-team")
        .body(sent.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );

    let tempo = server.tempo.clone();
    let trace_hex = hex::encode(TRACE);

    // 1. Data source "Save & test": echo, then the version Grafana gates features on.
    let (st, body) = get(&c, &format!("{tempo}/api/echo"), false).await;
    assert_eq!((st, text(&body).as_str()), (200, "echo"));
    let (st, body) = get(&c, &format!("{tempo}/api/status/buildinfo"), false).await;
    assert_eq!(st, 200);
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let version = info["version"].as_str().unwrap();
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        parts.len() == 3 && (parts[0], parts[1]) >= (2, 7),
        "{version}"
    );
    for k in ["revision", "branch", "buildDate", "buildUser", "goVersion"] {
        assert!(info[k].is_string(), "buildinfo.{k}: {info}");
    }
    let (st, body) = get(&c, &format!("{tempo}/ready"), false).await;
    assert_eq!((st, text(&body).as_str()), (200, "ready"));

    // 2. Trace by id, as Grafana fetches it: protobuf from v2 …
    let (st, body) = get(&c, &format!("{tempo}/api/v2/traces/{trace_hex}"), true).await;
    assert_eq!(st, 200, "{}", text(&body));
    let v2 = proto::TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!(v2.status, proto::PartialStatus::Complete as i32);
    assert!(v2.metrics.is_some_and(|m| m.inspected_bytes > 0));
    assert_same_trace(&sent, &v2.trace.unwrap().resource_spans, "v2 protobuf");
    // … and from v1 (Grafana's fallback after a 404 from v2).
    let (st, body) = get(&c, &format!("{tempo}/api/traces/{trace_hex}"), true).await;
    assert_eq!(st, 200);
    let v1 = proto::Trace::decode(body.as_slice()).unwrap();
    assert_same_trace(&sent, &v1.resource_spans, "v1 protobuf");
    // JSON without `Accept: application/protobuf`, decoded through the same types.
    let (st, body) = get(&c, &format!("{tempo}/api/traces/{trace_hex}"), false).await;
    assert_eq!(st, 200);
    let json: proto::Trace = serde_json::from_slice(&body).unwrap();
    assert_same_trace(&sent, &json.resource_spans, "v1 JSON");
    let (st, body) = get(&c, &format!("{tempo}/api/v2/traces/{trace_hex}"), false).await;
    assert_eq!(st, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let trace: proto::Trace = serde_json::from_value(json["trace"].clone()).unwrap();
    assert_same_trace(&sent, &trace.resource_spans, "v2 JSON");
    // Short ids are left-padded (64-bit ids from Jaeger/Zipkin clients).
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/traces/{}", "3".repeat(16)),
        true,
    )
    .await;
    assert_eq!(st, 200);
    let short = proto::TraceByIdResponse::decode(body.as_slice()).unwrap();
    let names: Vec<String> = short
        .trace
        .unwrap()
        .resource_spans
        .iter()
        .flat_map(|r| {
            r.scope_spans
                .iter()
                .flat_map(|s| s.spans.iter().map(|sp| sp.name.clone()))
        })
        .collect();
    assert_eq!(names, ["GET /health"]);
    // A window that does not contain the trace: not found, as Tempo (blocks outside are skipped).
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/traces/{trace_hex}?start=1000&end=2000"),
        true,
    )
    .await;
    assert_eq!((st, body.len()), (404, 0));
    let secs = base / 1_000_000_000;
    let (st, _) = get(
        &c,
        &format!(
            "{tempo}/api/v2/traces/{trace_hex}?start={}&end={}",
            secs - 60,
            secs + 60
        ),
        true,
    )
    .await;
    assert_eq!(st, 200);
    // Unknown: 404 with an empty body on both versions; malformed: 400.
    for path in ["/api/v2/traces/", "/api/traces/"] {
        let (st, body) = get(&c, &format!("{tempo}{path}{}", "ab".repeat(16)), true).await;
        assert_eq!((st, body.len()), (404, 0), "{path}");
        let (st, body) = get(&c, &format!("{tempo}{path}not-hex"), true).await;
        assert_eq!(st, 400, "{path}");
        assert!(text(&body).contains("trace id"), "{}", text(&body));
    }
    // Another tenant does not see it.
    let r = c
        .get(format!("{tempo}/api/v2/traces/{trace_hex}"))
        .header("x-scope-orgid", "someone-else")
        .header("accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // 3. Autocomplete: v2 tag names per scope, then values.
    let (st, body) = get(&c, &format!("{tempo}/api/v2/search/tags?scope=none"), false).await;
    assert_eq!(st, 200, "{}", text(&body));
    let tags: proto::SearchTagsV2Response = serde_json::from_slice(&body).unwrap();
    let scope = |name: &str| -> Vec<String> {
        tags.scopes
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.tags.clone())
            .unwrap_or_else(|| panic!("no scope {name}: {tags:?}"))
    };
    for k in ["http.method", "http.status_code", "span.int", "db.rows"] {
        assert!(
            scope("span").contains(&k.to_string()),
            "span tags: {:?}",
            scope("span")
        );
    }
    assert!(!scope("span").contains(&"host.name".to_string()));
    for k in ["service.name", "host.name", "res.str"] {
        assert!(
            scope("resource").contains(&k.to_string()),
            "resource tags: {:?}",
            scope("resource")
        );
    }
    for k in [
        "name",
        "status",
        "kind",
        "duration",
        "traceDuration",
        "rootServiceName",
    ] {
        assert!(scope("intrinsic").contains(&k.to_string()));
    }
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/search/tags?scope=resource"),
        false,
    )
    .await;
    assert_eq!(st, 200);
    let only: proto::SearchTagsV2Response = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        only.scopes
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["resource"]
    );
    let (st, _) = get(
        &c,
        &format!("{tempo}/api/v2/search/tags?scope=bogus"),
        false,
    )
    .await;
    assert_eq!(st, 400);
    let (st, body) = get(&c, &format!("{tempo}/api/search/tags"), false).await;
    assert_eq!(st, 200);
    let v1: proto::SearchTagsResponse = serde_json::from_slice(&body).unwrap();
    assert!(v1.tag_names.contains(&"http.method".to_string()), "{v1:?}");
    assert!(v1.tag_names.contains(&"service.name".to_string()), "{v1:?}");

    let values = |body: &[u8]| -> Vec<(String, String)> {
        let v: proto::SearchTagValuesV2Response = serde_json::from_slice(body).unwrap();
        v.tag_values
            .into_iter()
            .map(|t| (t.r#type, t.value))
            .collect()
    };
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/search/tag/resource.service.name/values"),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        values(&body),
        [
            ("string".to_string(), "tempo-frontend".to_string()),
            ("string".into(), "tempo-inventory".into())
        ]
    );
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/search/tag/span.http.status_code/values"),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(values(&body), [("int".to_string(), "500".to_string())]);
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/v2/search/tag/status/values"),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert!(values(&body).contains(&("status".into(), "error".into())));
    // `name` narrowed by a query pinning the service, as Grafana asks while composing.
    let (st, body) = get(
        &c,
        &format!(
            "{tempo}/api/v2/search/tag/name/values?q={}",
            urlencode(r#"{resource.service.name="tempo-inventory"}"#)
        ),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        values(&body),
        [
            ("string".to_string(), "POST /reserve".to_string()),
            ("string".into(), "select".into())
        ]
    );
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/search/tag/service.name/values"),
        false,
    )
    .await;
    assert_eq!(st, 200);
    let v1: proto::SearchTagValuesResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(v1.tag_values, ["tempo-frontend", "tempo-inventory"]);

    // 4. The TraceQL search Grafana sends, with its parameters.
    let start = base / 1_000_000_000 - 600;
    let end = now_ns() / 1_000_000_000 + 60;
    let q = r#"{resource.service.name="tempo-inventory" && span.db.rows > 10}"#;
    let (st, body) = get(
        &c,
        &format!(
            "{tempo}/api/search?q={}&limit=20&start={start}&end={end}&spss=3",
            urlencode(q)
        ),
        false,
    )
    .await;
    assert_eq!(st, 200, "search: {}", text(&body));
    let res: proto::SearchResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(res.traces.len(), 1, "{res:?}");
    let t = &res.traces[0];
    assert_eq!(
        t.trace_id.trim_start_matches('0'),
        trace_hex.trim_start_matches('0')
    );
    assert_eq!(t.root_service_name, "tempo-frontend");
    assert_eq!(t.root_trace_name, "GET /checkout");
    assert_eq!(t.start_time_unix_nano, base);
    assert_eq!(t.duration_ms, 120);
    let set = &t.span_sets[0];
    assert_eq!(set.matched, 1);
    assert_eq!(set.spans[0].span_id, hex::encode(sid(3)));
    assert_eq!(set.spans[0].name, "POST /reserve");
    assert_eq!(set.spans[0].duration_nanos, 47_000_000);
    assert!(res.metrics.is_some_and(|m| m.inspected_traces >= 1));
    // spss bounds the spans shown, not `matched`.
    let (st, body) = get(
        &c,
        &format!(
            "{tempo}/api/search?q={}&start={start}&end={end}&spss=1",
            urlencode(r#"{resource.service.name="tempo-frontend"}"#)
        ),
        false,
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    let res: proto::SearchResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        res.traces.len(),
        2,
        "both traces have frontend spans: {res:?}"
    );
    let ours = res
        .traces
        .iter()
        .find(|t| t.root_trace_name == "GET /checkout")
        .unwrap();
    assert_eq!(ours.span_sets[0].spans.len(), 1);
    assert_eq!(ours.span_sets[0].matched, 2);
    // The legacy tag search answers through the same path.
    let (st, body) = get(
        &c,
        &format!(
            "{tempo}/api/search?tags={}&minDuration=100ms&start={start}&end={end}",
            urlencode("service.name=tempo-frontend http.status_code=500")
        ),
        false,
    )
    .await;
    assert_eq!(st, 200, "{}", text(&body));
    let res: proto::SearchResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        res.traces
            .iter()
            .map(|t| t.root_trace_name.as_str())
            .collect::<Vec<_>>(),
        ["GET /checkout"]
    );
    // A TraceQL syntax error: 400 with the parser's message.
    let (st, body) = get(
        &c,
        &format!("{tempo}/api/search?q={}", urlencode("{ .a = }")),
        false,
    )
    .await;
    assert_eq!(st, 400);
    assert!(!body.is_empty());

    // 5. The same API under `/tempo` on the query port (web UI, CLI).
    let q = &server.query;
    let (st, body) = get(&c, &format!("{q}/tempo/api/echo"), false).await;
    assert_eq!((st, text(&body).as_str()), (200, "echo"));
    let (st, body) = get(&c, &format!("{q}/tempo/api/v2/traces/{trace_hex}"), true).await;
    assert_eq!(st, 200);
    let v2 = proto::TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_same_trace(
        &sent,
        &v2.trace.unwrap().resource_spans,
        "/tempo v2 protobuf",
    );
    let (st, body) = get(
        &c,
        &format!("{q}/tempo/api/traces/{}", "ab".repeat(16)),
        true,
    )
    .await;
    assert_eq!((st, body.len()), (404, 0));

    assert_eq!(server.terminate().code(), Some(0));
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
