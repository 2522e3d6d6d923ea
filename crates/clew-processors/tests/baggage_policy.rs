//! The `baggage_policy` processor: allowlist, pseudonyms identical to the SDK-side egress policy,
//! limits, odd types, metrics, config errors.

use clew_model::attrs::{self, kv, kv_str};
use clew_model::otlp::common::{any_value::Value, ArrayValue, KeyValue, KeyValueList};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_processors::baggage_policy::is_pseudonym;
use clew_processors::{
    BaggagePolicyConfig, BaggagePolicyMetrics, BaggagePolicyProcessor, ConfigError,
};
use clew_propagation::policy::{BaggagePolicy, DestinationRule, Egress, Pseudonymizer};
use clew_propagation::{Baggage, Context};

const SECRET_ENV: &str = "CLEW_TEST_BAGGAGE_SECRET";
const SECRET: &str = "shared-baggage-secret-0123456789";

fn processor(yaml: &str) -> Result<BaggagePolicyProcessor, ConfigError> {
    std::env::set_var(SECRET_ENV, SECRET);
    let cfg: BaggagePolicyConfig = serde_yaml::from_str(yaml).expect("yaml");
    BaggagePolicyProcessor::new("baggage_policy", cfg)
}

fn batch(resource: Vec<KeyValue>, span_attrs: Vec<KeyValue>) -> SpanBatch {
    SpanBatch::new(
        Tenant::default(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "op".into(),
                    attributes: span_attrs,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

fn run(p: &BaggagePolicyProcessor, b: SpanBatch) -> (Vec<KeyValue>, Vec<KeyValue>) {
    let ProcessOutcome::Forward(b) = p.process(b).unwrap() else {
        panic!("never consumes");
    };
    let rs = &b.resource_spans[0];
    (
        rs.resource.clone().unwrap_or_default().attributes,
        rs.scope_spans[0].spans[0].attributes.clone(),
    )
}

fn text(a: &[KeyValue], k: &str) -> Option<String> {
    attrs::get(a, k).map(attrs::to_text)
}

const CFG: &str = r#"
baggage_keys: [user.id, tenant.tier, session.token, "app.*"]
baggage_prefix: "baggage."
allowed_keys: [tenant.tier, "app.*"]
pseudonymize: [user.id]
secret_env: CLEW_TEST_BAGGAGE_SECRET
max_value_length: 16
"#;

#[test]
fn allowlist_and_pseudonymization_on_spans_and_resources() {
    let p = processor(CFG).unwrap();
    let (res, span) = run(
        &p,
        batch(
            vec![
                kv_str("service.name", "checkout"),
                kv_str("baggage.user.id", "4242"),
                kv_str("baggage.user.email", "alice@example.com"),
            ],
            vec![
                kv_str("user.id", "4242"),
                kv_str("tenant.tier", "gold"),
                kv_str("session.token", "s3cr3t"),
                kv_str("app.region", "eu-1"),
                kv_str("app.note", "far too long for the limit"),
                kv_str("http.route", "/cart"),
                kv_str("baggage.app.x", "y"),
            ],
        ),
    );
    let expected = Pseudonymizer::new(SECRET.as_bytes().to_vec()).pseudonymize("user.id", "4242");
    assert_eq!(text(&span, "user.id"), Some(expected.clone()));
    assert_eq!(
        text(&res, "baggage.user.id"),
        Some(expected),
        "the pseudonym uses the baggage key, without the prefix"
    );
    assert!(text(&res, "baggage.user.email").is_none(), "not allowed");
    assert_eq!(text(&res, "service.name").as_deref(), Some("checkout"));
    assert_eq!(text(&span, "tenant.tier").as_deref(), Some("gold"));
    assert!(text(&span, "session.token").is_none(), "not allowed");
    assert_eq!(text(&span, "app.region").as_deref(), Some("eu-1"));
    assert!(text(&span, "app.note").is_none(), "too long");
    assert_eq!(
        text(&span, "http.route").as_deref(),
        Some("/cart"),
        "not baggage"
    );
    assert_eq!(text(&span, "baggage.app.x").as_deref(), Some("y"));
    let all: String = span
        .iter()
        .chain(&res)
        .map(|kv| format!("{kv:?}"))
        .collect();
    for leaked in ["4242", "alice", "s3cr3t"] {
        assert!(!all.contains(leaked), "{leaked} stored");
    }
    let m = p.metrics();
    assert_eq!(m.pseudonymized("baggage_policy"), 2);
    assert_eq!(m.dropped("baggage_policy", "not_allowed"), 2);
    assert_eq!(m.dropped("baggage_policy", "too_long"), 1);
}

/// The server side produces exactly the pseudonym the SDK-side egress policy put on the wire
/// (same secret), and does not hash a pseudonym twice.
#[test]
fn pseudonyms_equal_the_sdk_side_policy() {
    let sdk = BaggagePolicy::new()
        .pseudonymizer(Pseudonymizer::new(SECRET.as_bytes().to_vec()))
        .default_rule(
            DestinationRule::default()
                .pseudonymize("user.id")
                .allow("tenant.tier"),
        );
    let mut bag = Baggage::new();
    bag.insert("user.id", "4242").unwrap();
    bag.insert("tenant.tier", "gold").unwrap();
    let Egress::Send(out) = sdk.egress(&Context::new().with_baggage(bag), "collector") else {
        panic!("send");
    };
    let on_the_wire = out.baggage.get("user.id").unwrap().to_string();

    let p = processor(CFG).unwrap();
    // A leaky client sends the raw id (as a string and as an int) ...
    let (_, raw) = run(&p, batch(vec![], vec![kv_str("user.id", "4242")]));
    let (_, raw_int) = run(
        &p,
        batch(vec![], vec![kv("user.id", Value::IntValue(4242))]),
    );
    // ... a well-behaved one the already pseudonymized value.
    let (_, already) = run(&p, batch(vec![], vec![kv_str("user.id", &on_the_wire)]));
    assert_eq!(text(&raw, "user.id"), Some(on_the_wire.clone()));
    assert_eq!(text(&raw_int, "user.id"), Some(on_the_wire.clone()));
    assert_eq!(text(&already, "user.id"), Some(on_the_wire.clone()));
    assert!(is_pseudonym(&on_the_wire));
    assert!(!is_pseudonym("h1:xyz"));
    assert!(!is_pseudonym(&format!(
        "{}A",
        &on_the_wire[..on_the_wire.len() - 1]
    )));
}

#[test]
fn odd_types_are_dropped_never_panic() {
    let p = processor(CFG).unwrap();
    let (_, span) = run(
        &p,
        batch(
            vec![],
            vec![
                kv(
                    "app.arr",
                    Value::ArrayValue(ArrayValue {
                        values: vec![attrs::string_value("a")],
                    }),
                ),
                kv(
                    "app.map",
                    Value::KvlistValue(KeyValueList {
                        values: vec![kv_str("k", "v")],
                    }),
                ),
                kv("user.id", Value::BytesValue(vec![1, 2, 3])),
                KeyValue {
                    key: "tenant.tier".into(),
                    value: None,
                    ..Default::default()
                },
                kv("app.flag", Value::BoolValue(true)),
                kv("app.ratio", Value::DoubleValue(0.5)),
            ],
        ),
    );
    let keys: Vec<&str> = span.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["app.flag", "app.ratio"]);
    assert_eq!(p.metrics().dropped("baggage_policy", "bad_type"), 4);
}

#[test]
fn shared_metrics_and_secret_file() {
    let path = std::env::temp_dir().join(format!("clew-bag-secret-{}", std::process::id()));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let metrics = BaggagePolicyMetrics::default();
    let mut reg = prometheus_client::registry::Registry::default();
    metrics.register(&mut reg);
    let p = processor(&format!(
        "baggage_keys: [user.id]\npseudonymize: [user.id]\nsecret_file: {}",
        path.display()
    ))
    .unwrap()
    .with_metrics(metrics.clone());
    let (_, span) = run(&p, batch(vec![], vec![kv_str("user.id", "7")]));
    assert_eq!(
        text(&span, "user.id"),
        Some(Pseudonymizer::new(SECRET.as_bytes().to_vec()).pseudonymize("user.id", "7"))
    );
    assert_eq!(metrics.pseudonymized("baggage_policy"), 1);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    assert!(
        out.contains(
            "clew_baggage_policy_pseudonymized_attributes_total{processor=\"baggage_policy\"} 1"
        ),
        "{out}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn config_errors_name_keys() {
    let cases = [
        ("allowed_keys: [a]", "baggage_keys"),
        ("baggage_prefix: ''", "baggage_prefix"),
        ("baggage_keys: [a]\npseudonymize: [user.id]", "secret_env"),
        ("baggage_keys: [a, 'b*c']", "baggage_keys[1]"),
        ("baggage_keys: [a]\nallowed_keys: ['']", "allowed_keys[0]"),
        (
            "baggage_keys: [a]\npseudonymize: ['x**']",
            "pseudonymize[0]",
        ),
        ("baggage_keys: [a]\nmax_value_length: 0", "max_value_length"),
        (
            "baggage_keys: [a]\nsecret_env: CLEW_SURELY_UNSET_ENV_VAR",
            "secret_env",
        ),
        (
            "baggage_keys: [a]\nsecret_file: /nonexistent/secret",
            "secret_file",
        ),
    ];
    for (yaml, key) in cases {
        let e = processor(yaml).expect_err(yaml);
        assert_eq!(e.key, key, "{yaml}: {e}");
    }
    assert!(serde_yaml::from_str::<BaggagePolicyConfig>("bogus: 1").is_err());
}
