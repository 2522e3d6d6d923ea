//! The Monitor page's API with the real `clew` binary: spans sent over OTLP/HTTP, then Jaeger's
//! SPM endpoints (`/api/metrics/calls|errors|latencies|minstep`, plus `/api/metrics/services`)
//! answer exact call counts, error rates and latency quantiles per service and operation, per
//! tenant, computed before sampling (a tenant sampled at 0 % still has its metrics).

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
mod common;
use common::Server;
use serde_json::Value as Json;

const MS: u64 = 1_000_000;

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn span(n: u32, name: &str, kind: i32, start: u64, dur: u64, error: bool) -> Span {
    let mut trace_id = vec![0x4d; 16];
    trace_id[12..].copy_from_slice(&n.to_be_bytes());
    let mut span_id = vec![0x11; 8];
    span_id[4..].copy_from_slice(&n.to_be_bytes());
    Span {
        trace_id,
        span_id,
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn send(http: &str, tenant: Option<&str>, rs: Vec<ResourceSpans>) {
    let body = ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec();
    let mut req = reqwest::Client::new()
        .post(format!("{http}/v1/traces"))
        .header("content-type", "application/x-protobuf");
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.body(body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn get(url: &str, tenant: Option<&str>) -> (u16, Json) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    (status, v)
}

/// `(operation or "", value of the single point)` per series.
fn single_points(v: &Json) -> Vec<(String, f64)> {
    v["metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("no metrics: {v}"))
        .iter()
        .map(|m| {
            let labels = m["labels"].as_array().unwrap();
            let op = labels
                .iter()
                .find(|l| l["name"] == "operation")
                .map(|l| l["value"].as_str().unwrap().to_string())
                .unwrap_or_default();
            let points = m["metricPoints"].as_array().unwrap();
            assert_eq!(points.len(), 1, "{v}");
            (op, points[0]["gaugeValue"]["doubleValue"].as_f64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spm_api_answers_from_spans_seen_before_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clew.yaml");
    // The `unsampled` tenant keeps no spans at all: its metrics must still be there.
    std::fs::write(
        &cfg,
        "processors:\n  probabilistic_sampler:\n    sampling_percentage: 100\n    tenant_percentages:\n      unsampled: 0\n\
         service:\n  pipelines:\n    traces:\n      processors: [probabilistic_sampler]\n",
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), Some(&cfg));

    let t0 = now_nanos() - 2_000 * MS;
    // shop: GET /x 10 calls (10, 20, ..., 100 ms; 2 errors), POST /y 5 calls (5 ms), and a
    // client span.
    let mut spans: Vec<Span> = (0..10)
        .map(|i| {
            span(
                i,
                "GET /x",
                2,
                t0 + u64::from(i) * MS,
                u64::from(i + 1) * 10 * MS,
                i < 2,
            )
        })
        .collect();
    spans.extend((10..15).map(|i| span(i, "POST /y", 2, t0, 5 * MS, false)));
    spans.push(span(20, "GET inventory", 3, t0, 3 * MS, true));
    send(&server.http, None, vec![resource_spans("shop", spans)]).await;
    let hidden: Vec<Span> = (30..34)
        .map(|i| span(i, "GET /z", 2, t0, MS, false))
        .collect();
    send(
        &server.http,
        Some("unsampled"),
        vec![resource_spans("hidden", hidden)],
    )
    .await;

    let q = &server.query;
    // One point over the last 10 minutes: value × 600 s = calls.
    let end = now_nanos() / MS;
    let win = format!("endTs={end}&lookback=600000&step=600000&ratePer=600000");

    let (st, calls) = get(
        &format!("{q}/api/metrics/calls?service=shop&groupByOperation=true&{win}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{calls}");
    assert_eq!(calls["name"], "service_operation_call_rate");
    assert_eq!(calls["type"], "GAUGE");
    let mut got = single_points(&calls);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2, "{calls}");
    assert_eq!(got[0].0, "GET /x");
    assert!((got[0].1 * 600.0 - 10.0).abs() < 1e-6, "{calls}");
    assert_eq!(got[1].0, "POST /y");
    assert!((got[1].1 * 600.0 - 5.0).abs() < 1e-6, "{calls}");
    let ts = calls["metrics"][0]["metricPoints"][0]["timestamp"]
        .as_str()
        .unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");

    // Service level, server spans only (the default kind): 15 calls.
    let (_, all) = get(&format!("{q}/api/metrics/calls?service=shop&{win}"), None).await;
    assert_eq!(all["name"], "service_call_rate");
    let all = single_points(&all);
    assert_eq!(all.len(), 1);
    assert!((all[0].1 * 600.0 - 15.0).abs() < 1e-6);

    let (_, errors) = get(
        &format!("{q}/api/metrics/errors?service=shop&groupByOperation=true&{win}"),
        None,
    )
    .await;
    let mut errs = single_points(&errors);
    errs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(errs, vec![("GET /x".into(), 0.2), ("POST /y".into(), 0.0)]);

    // Latency quantiles (ms), within one histogram bucket (< 9.1 %).
    for (quantile, lo, hi) in [(0.5, 45.0, 62.0), (0.99, 91.0, 110.0)] {
        let (st, lat) = get(
            &format!(
                "{q}/api/metrics/latencies?service=shop&groupByOperation=true&quantile={quantile}&{win}"
            ),
            None,
        )
        .await;
        assert_eq!(st, 200, "{lat}");
        let p = single_points(&lat);
        let x = p.iter().find(|(op, _)| op == "GET /x").unwrap().1;
        assert!((lo..=hi).contains(&x), "p{quantile} of GET /x = {x}");
        let y = p.iter().find(|(op, _)| op == "POST /y").unwrap().1;
        assert!((4.5..=5.5).contains(&y), "p{quantile} of POST /y = {y}");
    }

    // Client spans on request (Jaeger UI's lower-case kind).
    let (_, client) = get(
        &format!("{q}/api/metrics/errors?service=shop&groupByOperation=true&spanKind=client&{win}"),
        None,
    )
    .await;
    assert_eq!(single_points(&client), vec![("GET inventory".into(), 1.0)]);

    // Per-minute points: the spans' minute has all 15 server calls.
    let (_, series) = get(
        &format!(
            "{q}/api/metrics/calls?service=shop&endTs={end}&lookback=600000&step=60000&ratePer=60000"
        ),
        None,
    )
    .await;
    let points = series["metrics"][0]["metricPoints"].as_array().unwrap();
    assert_eq!(points.len(), 10, "{series}");
    let total: f64 = points
        .iter()
        .map(|p| p["gaugeValue"]["doubleValue"].as_f64().unwrap() * 60.0)
        .sum();
    assert!((total - 15.0).abs() < 1e-6, "{series}");

    // Before sampling: the tenant sampled at 0 % stored nothing, yet has its metrics.
    let (_, hidden) = get(
        &format!("{q}/api/metrics/calls?service=hidden&{win}"),
        Some("unsampled"),
    )
    .await;
    let hidden = single_points(&hidden);
    assert!((hidden[0].1 * 600.0 - 4.0).abs() < 1e-6, "{hidden:?}");
    let (_, traces) = get(&format!("{q}/api/services"), Some("unsampled")).await;
    assert_eq!(traces["data"], serde_json::json!([]), "{traces}");
    // Tenants are separate.
    let (_, none) = get(&format!("{q}/api/metrics/calls?service=hidden&{win}"), None).await;
    assert_eq!(none["metrics"], serde_json::json!([]));

    let (_, minstep) = get(&format!("{q}/api/metrics/minstep"), None).await;
    assert_eq!(minstep["data"], 60_000);
    let (_, services) = get(&format!("{q}/api/metrics/services?endTs={end}"), None).await;
    assert_eq!(
        services["data"],
        serde_json::json!([{"name": "shop", "spanKinds": ["server", "client"]}])
    );

    // Bad parameters: 400, Jaeger's error envelope naming the parameter.
    for (query, param) in [
        ("/api/metrics/calls?lookback=60000", "service"),
        ("/api/metrics/latencies?service=shop", "quantile"),
        (
            "/api/metrics/latencies?service=shop&quantile=95",
            "quantile",
        ),
        (
            "/api/metrics/errors?service=shop&spanKind=sideways",
            "spanKind",
        ),
        ("/api/metrics/calls?service=shop&endTs=yesterday", "endTs"),
        ("/api/metrics/calls?service=shop&lookback=1h", "lookback"),
    ] {
        let (st, v) = get(&format!("{q}{query}"), None).await;
        assert_eq!(st, 400, "{query}: {v}");
        let msg = v["errors"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("'{param}'")), "{query}: {msg}");
    }

    // The table's own health metrics.
    let metrics = reqwest::get(format!("{q}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clew_spanmetrics_table_cells"),
        "{metrics}"
    );
}
