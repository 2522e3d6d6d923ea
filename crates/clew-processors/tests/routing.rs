//! The routing connector: per span / trace / resource, default route, multiple matches, fan-out
//! errors, metadata kept, metrics, config errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clew_model::attrs::{self, kv, kv_str};
use clew_model::otlp::common::{any_value::Value, ArrayValue, KeyValueList};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{RequestMetadata, SinkError, SpanBatch, SpanSink, Tenant};
use clew_processors::{ConfigError, RoutingConfig, RoutingConnector, RoutingMetrics};

#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<SpanBatch>>,
    fail: Option<SinkError>,
}

impl Collect {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter())
            .map(|s| s.name.clone())
            .collect();
        v.sort();
        v
    }
}

#[async_trait::async_trait]
impl SpanSink for Collect {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        self.batches.lock().unwrap().push(batch);
        match &self.fail {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

struct Sinks(HashMap<String, Arc<Collect>>);

impl Sinks {
    fn new(names: &[&str]) -> Self {
        Self(
            names
                .iter()
                .map(|n| (n.to_string(), Arc::new(Collect::default())))
                .collect(),
        )
    }
    fn dyn_map(&self) -> HashMap<String, Arc<dyn SpanSink>> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone() as Arc<dyn SpanSink>))
            .collect()
    }
    fn names(&self, p: &str) -> Vec<String> {
        self.0[p].names()
    }
}

fn connector(yaml: &str, sinks: &Sinks) -> Result<RoutingConnector, ConfigError> {
    connector_named("routing", yaml, sinks)
}

fn connector_named(name: &str, yaml: &str, sinks: &Sinks) -> Result<RoutingConnector, ConfigError> {
    let cfg: RoutingConfig = serde_yaml::from_str(yaml).expect("yaml");
    RoutingConnector::new(name, cfg, sinks.dyn_map())
}

fn span(
    trace: u8,
    id: u8,
    name: &str,
    attributes: Vec<clew_model::otlp::common::KeyValue>,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        attributes,
        ..Default::default()
    }
}

fn resource(env: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv_str("service.name", "svc"),
                kv_str("deployment.environment.name", env),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn batch(tenant: &str, rs: Vec<ResourceSpans>) -> SpanBatch {
    SpanBatch::new(Tenant::new(tenant).unwrap(), rs)
}

const TABLE: &str = r#"
default_pipelines: [default]
table:
  - name: eu
    condition: {tenant: {regex: "eu-.*"}}
    pipelines: [eu]
  - condition: {resource_attribute: {key: deployment.environment.name, equals: dev}}
    pipelines: [dev]
  - condition: {span_attribute: {key: http.status_code, in: [500, 503]}}
    pipelines: [errors]
  - condition: {baggage: {key: user.tier, equals: gold}}
    pipelines: [gold, errors]
"#;

const PIPES: &[&str] = &["default", "eu", "dev", "errors", "gold"];

#[tokio::test]
async fn per_span_first_match_wins_with_default() {
    let sinks = Sinks::new(PIPES);
    let c = connector(&format!("granularity: span\n{TABLE}"), &sinks).unwrap();
    let b = batch(
        "acme",
        vec![
            resource(
                "prod",
                vec![
                    span(1, 1, "plain", vec![]),
                    span(
                        1,
                        2,
                        "err",
                        vec![kv("http.status_code", Value::IntValue(500))],
                    ),
                    span(
                        2,
                        3,
                        "gold",
                        vec![
                            kv_str("baggage.user.tier", "x"),
                            kv_str("user.tier", "gold"),
                        ],
                    ),
                    span(
                        2,
                        4,
                        "gold-err",
                        vec![
                            kv_str("http.status_code", "503"),
                            kv_str("user.tier", "gold"),
                        ],
                    ),
                ],
            ),
            resource(
                "dev",
                vec![span(
                    3,
                    5,
                    "dev",
                    vec![kv("http.status_code", Value::IntValue(500))],
                )],
            ),
        ],
    );
    c.consume(b).await.unwrap();
    assert_eq!(sinks.names("default"), ["plain"]);
    assert_eq!(sinks.names("dev"), ["dev"], "dev matched before errors");
    assert_eq!(sinks.names("errors"), ["err", "gold", "gold-err"]);
    assert_eq!(
        sinks.names("gold"),
        ["gold"],
        "gold-err stopped at the errors route"
    );
    assert!(sinks.names("eu").is_empty());
    // The tenant decides before anything else.
    c.consume(batch(
        "eu-west",
        vec![resource("dev", vec![span(9, 9, "eu", vec![])])],
    ))
    .await
    .unwrap();
    assert_eq!(sinks.names("eu"), ["eu"]);
}

#[tokio::test]
async fn every_match_without_match_once() {
    let sinks = Sinks::new(PIPES);
    let c = connector(
        &format!("granularity: span\nmatch_once: false\n{TABLE}"),
        &sinks,
    )
    .unwrap();
    let b = batch(
        "eu-1",
        vec![resource(
            "dev",
            vec![span(
                1,
                1,
                "all",
                vec![
                    kv_str("http.status_code", "500"),
                    kv_str("user.tier", "gold"),
                ],
            )],
        )],
    );
    c.consume(b).await.unwrap();
    for p in ["eu", "dev", "errors", "gold"] {
        assert_eq!(
            sinks.names(p),
            ["all"],
            "{p}: once, even when two routes name it"
        );
    }
    assert!(sinks.names("default").is_empty());
}

#[tokio::test]
async fn per_trace_follows_the_first_span_of_the_trace() {
    let sinks = Sinks::new(PIPES);
    let c = connector(TABLE, &sinks).unwrap(); // trace is the default
    let b = batch(
        "acme",
        vec![
            resource(
                "prod",
                vec![
                    span(1, 1, "t1-err", vec![kv_str("http.status_code", "500")]),
                    span(1, 2, "t1-ok", vec![]),
                    span(2, 3, "t2-ok", vec![]),
                ],
            ),
            resource(
                "prod",
                vec![
                    span(2, 4, "t2-err", vec![kv_str("http.status_code", "500")]),
                    span(1, 5, "t1-late", vec![]),
                ],
            ),
        ],
    );
    c.consume(b).await.unwrap();
    assert_eq!(sinks.names("errors"), ["t1-err", "t1-late", "t1-ok"]);
    assert_eq!(sinks.names("default"), ["t2-err", "t2-ok"]);
}

#[tokio::test]
async fn per_resource() {
    let sinks = Sinks::new(PIPES);
    let yaml = r#"
granularity: resource
default_pipelines: [default]
table:
  - condition: {all: [{tenant: {in: [acme]}}, {resource_attribute: {key: deployment.environment.name, equals: dev}}]}
    pipelines: [dev]
"#;
    let c = connector(yaml, &sinks).unwrap();
    let b = batch(
        "acme",
        vec![
            resource(
                "dev",
                vec![span(1, 1, "a", vec![]), span(2, 2, "b", vec![])],
            ),
            resource("prod", vec![span(1, 3, "c", vec![])]),
        ],
    );
    c.consume(b).await.unwrap();
    assert_eq!(sinks.names("dev"), ["a", "b"]);
    assert_eq!(sinks.names("default"), ["c"]);
    // Span conditions cannot be evaluated per resource.
    let e = connector(
        "granularity: resource\ntable: [{condition: {any: [{tenant: {equals: a}}, {baggage: {key: k, exists: true}}]}, pipelines: [dev]}]",
        &sinks,
    )
    .unwrap_err();
    assert_eq!(e.key, "table[0].condition.any[1].baggage");
}

#[tokio::test]
async fn structure_tenant_and_metadata_are_kept_and_unrouted_spans_dropped() {
    let sinks = Sinks::new(PIPES);
    let metrics = RoutingMetrics::default();
    let c = connector_named(
        "routing/main",
        "granularity: span\ntable: [{condition: {span_attribute: {key: k, exists: true}}, pipelines: [eu]}]",
        &sinks,
    )
    .unwrap()
    .with_metrics(metrics.clone());
    let mut b = batch(
        "acme",
        vec![resource(
            "prod",
            vec![
                span(1, 1, "yes", vec![kv_str("k", "v")]),
                span(1, 2, "no", vec![]),
            ],
        )],
    );
    b.metadata = RequestMetadata::new(vec![("x-client".into(), "c1".into())]);
    c.consume(b).await.unwrap();
    let got = sinks.0["eu"].batches.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tenant.as_str(), "acme");
    assert_eq!(got[0].metadata.get("x-client"), Some("c1"));
    let rs = &got[0].resource_spans[0];
    assert_eq!(attrs::service_name(rs.resource.as_ref()), "svc");
    assert_eq!(rs.scope_spans[0].spans.len(), 1);
    assert_eq!(metrics.spans("routing/main", "table[0]"), 1);
    assert_eq!(metrics.spans("routing/main", "unrouted"), 1);
    assert_eq!(metrics.spans("routing/main", "default"), 0);
}

#[tokio::test]
async fn whole_batch_to_one_route_is_moved_and_counted() {
    let sinks = Sinks::new(PIPES);
    let metrics = RoutingMetrics::default();
    let c = connector_named("r", TABLE, &sinks)
        .unwrap()
        .with_metrics(metrics.clone());
    c.consume(batch(
        "eu-x",
        vec![resource(
            "prod",
            vec![span(1, 1, "a", vec![]), span(2, 2, "b", vec![])],
        )],
    ))
    .await
    .unwrap();
    assert_eq!(sinks.names("eu"), ["a", "b"]);
    assert_eq!(metrics.spans("r", "eu"), 2);
    c.consume(batch("eu-x", vec![])).await.unwrap();
    assert_eq!(
        sinks.0["eu"].batches.lock().unwrap().len(),
        1,
        "empty batches are not sent"
    );
}

#[tokio::test]
async fn a_failing_pipeline_fails_the_batch_after_all_were_tried() {
    let mut sinks = Sinks::new(&["ok"]);
    sinks.0.insert(
        "bad".into(),
        Arc::new(Collect {
            fail: Some(SinkError::Overloaded {
                retry_after: std::time::Duration::from_secs(1),
                reason: "full".into(),
            }),
            ..Default::default()
        }),
    );
    let c = connector(
        "default_pipelines: [ok]\ntable: [{condition: {tenant: {equals: acme}}, pipelines: [ok, bad]}]",
        &sinks,
    )
    .unwrap();
    let e = c
        .consume(batch(
            "acme",
            vec![resource("prod", vec![span(1, 1, "a", vec![])])],
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Overloaded { .. }));
    assert_eq!(
        sinks.names("ok"),
        ["a"],
        "delivered to the others (duplicate on retry)"
    );
}

#[tokio::test]
async fn odd_attribute_types_never_panic() {
    let sinks = Sinks::new(PIPES);
    let c = connector(
        r#"
granularity: span
default_pipelines: [default]
table:
  - condition: {span_attribute: {key: arr, regex: '\[.*\]'}}
    pipelines: [eu]
  - condition: {any: [{span_attribute: {key: map, equals: x}}, {span_attribute: {key: bytes, in: [AQI=]}}]}
    pipelines: [dev]
"#,
        &sinks,
    )
    .unwrap();
    let odd = vec![
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv_str("k", "v")],
            }),
        ),
        kv("bytes", Value::BytesValue(vec![1, 2])),
        clew_model::otlp::common::KeyValue {
            key: "arr".into(),
            value: None,
            ..Default::default()
        },
    ];
    let arr = vec![kv(
        "arr",
        Value::ArrayValue(ArrayValue {
            values: vec![attrs::string_value("a")],
        }),
    )];
    c.consume(batch(
        "acme",
        vec![resource(
            "prod",
            vec![span(1, 1, "odd", odd), span(2, 2, "arr", arr)],
        )],
    ))
    .await
    .unwrap();
    assert_eq!(sinks.names("eu"), ["arr"]);
    assert_eq!(sinks.names("dev"), ["odd"], "bytes compare as base64");
}

#[test]
fn config_errors_name_keys_and_pipelines_are_listed() {
    let sinks = Sinks::new(PIPES);
    let cases = [
        ("table: []", "table"),
        (
            "table: [{condition: {tenant: {equals: a}}, pipelines: [eu]}, {condition: {tenant: {regex: '(eu'}}, pipelines: [eu]}]",
            "table[1].condition.tenant.regex",
        ),
        (
            "table: [{condition: {tenant: {equals: a}}, pipelines: [eu, nope]}]",
            "table[0].pipelines[1]",
        ),
        (
            "default_pipelines: [nope]\ntable: [{condition: {tenant: {equals: a}}, pipelines: [eu]}]",
            "default_pipelines[0]",
        ),
        ("table: [{condition: {tenant: {equals: a}}, pipelines: []}]", "table[0].pipelines"),
        ("table: [{condition: {}, pipelines: [eu]}]", "table[0].condition"),
        (
            "table: [{name: default, condition: {tenant: {equals: a}}, pipelines: [eu]}]",
            "table[0].name",
        ),
        (
            "table: [{condition: {all: [{span_attribute: {key: k, regex: '*'}}]}, pipelines: [eu]}]",
            "table[0].condition.all[0].span_attribute.regex",
        ),
    ];
    for (yaml, key) in cases {
        let e = connector(yaml, &sinks).expect_err(yaml);
        assert_eq!(e.key, key, "{yaml}: {e}");
        // `validate` finds the same errors, except unknown pipeline names.
        let cfg: RoutingConfig = serde_yaml::from_str(yaml).unwrap();
        match cfg.validate() {
            Err(v) => assert_eq!(v, e),
            Ok(()) => assert!(e.message.contains("unknown pipeline"), "{yaml}"),
        }
    }
    assert!(serde_yaml::from_str::<RoutingConfig>("granularity: batch\ntable: []").is_err());
    let cfg: RoutingConfig = serde_yaml::from_str(TABLE).unwrap();
    assert_eq!(
        cfg.pipelines_referenced(),
        ["default", "eu", "dev", "errors", "gold"]
    );
    assert!(cfg.match_once);
    assert_eq!(cfg.granularity, clew_processors::Granularity::Trace);
}
