//! The `attributes` processor: every action, sources, include/exclude, odd value types, config
//! errors naming keys.

use clew_model::attrs::{self, kv, kv_str};
use clew_model::otlp::common::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{RequestMetadata, SpanBatch, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_processors::attributes::keyed_hash;
use clew_processors::{Attributes, AttributesConfig, ConfigError};

const KEY_ENV: &str = "CLEW_TEST_ATTRIBUTES_HASH_KEY";
const KEY: &str = "attributes-test-key-0123456789";

fn processor(yaml: &str) -> Result<Attributes, ConfigError> {
    std::env::set_var(KEY_ENV, KEY);
    let cfg: AttributesConfig = serde_yaml::from_str(yaml).expect("yaml");
    Attributes::new("attributes/test", cfg)
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        attributes,
        ..Default::default()
    }
}

fn batch_of(service: &str, spans: Vec<Span>) -> SpanBatch {
    SpanBatch::new(
        Tenant::new("acme").unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

fn run(p: &Attributes, batch: SpanBatch) -> SpanBatch {
    match p.process(batch).unwrap() {
        ProcessOutcome::Forward(b) => b,
        ProcessOutcome::Consumed => panic!("attributes never consumes"),
    }
}

fn run_attrs(p: &Attributes, attributes: Vec<KeyValue>) -> Vec<KeyValue> {
    let b = run(p, batch_of("svc", vec![span("op", attributes)]));
    b.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .clone()
}

fn get<'a>(a: &'a [KeyValue], k: &str) -> Option<&'a Value> {
    attrs::get(a, k).and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn odd_attrs() -> Vec<KeyValue> {
    vec![
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![attrs::string_value("a"), attrs::string_value("b")],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv_str("k", "v")],
            }),
        ),
        kv("bytes", Value::BytesValue(vec![0xde, 0xad])),
        kv("int", Value::IntValue(42)),
        kv("dbl", Value::DoubleValue(f64::NAN)),
        kv("bool", Value::BoolValue(true)),
        kv_str("num_str", " 17 "),
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
    ]
}

#[test]
fn insert_update_upsert() {
    let p = processor(
        r#"
actions:
  - {key: env, action: insert, value: prod}
  - {key: existing, action: insert, value: ignored}
  - {key: existing2, action: update, value: updated}
  - {key: missing, action: update, value: never}
  - {key: up1, action: upsert, value: 7}
  - {key: existing3, action: upsert, value: [a, 1, true]}
  - {key: m, action: insert, value: {k: v, n: 1.5}}
"#,
    )
    .unwrap();
    let out = run_attrs(
        &p,
        vec![
            kv_str("existing", "keep"),
            kv_str("existing2", "old"),
            kv_str("existing3", "old"),
        ],
    );
    assert_eq!(get(&out, "env"), Some(&s("prod")));
    assert_eq!(get(&out, "existing"), Some(&s("keep")));
    assert_eq!(get(&out, "existing2"), Some(&s("updated")));
    assert!(get(&out, "missing").is_none());
    assert_eq!(get(&out, "up1"), Some(&Value::IntValue(7)));
    assert_eq!(
        attrs::to_text(attrs::get(&out, "existing3").unwrap()),
        r#"["a",1,true]"#
    );
    assert_eq!(
        attrs::to_text(attrs::get(&out, "m").unwrap()),
        r#"{"k":"v","n":1.5}"#
    );
}

#[test]
fn from_attribute_context_and_tenant() {
    let p = processor(
        r#"
actions:
  - {key: peer, action: upsert, from_attribute: net.peer.name}
  - {key: nothing, action: upsert, from_attribute: absent}
  - {key: client.id, action: insert, from_context: metadata.X-Client-Id}
  - {key: agents, action: insert, from_context: metadata.user-agent}
  - {key: absent.header, action: insert, from_context: metadata.x-absent}
  - {key: clew.tenant, action: insert, from_context: tenant}
"#,
    )
    .unwrap();
    let cfg: AttributesConfig = serde_yaml::from_str(
        "actions: [{key: a, action: insert, from_context: metadata.X-Client-Id}, {key: b, action: upsert, from_context: metadata.x-client-id}, {key: c, action: insert, from_context: tenant}]",
    )
    .unwrap();
    assert_eq!(cfg.metadata_keys_referenced(), ["x-client-id"]);
    let mut b = batch_of(
        "svc",
        vec![span("op", vec![kv("net.peer.name", Value::IntValue(5))])],
    );
    b.metadata = RequestMetadata::new(vec![
        ("x-client-id".into(), "web-7".into()),
        ("user-agent".into(), "a".into()),
        ("user-agent".into(), "b".into()),
    ]);
    let out = run(&p, b);
    assert_eq!(out.metadata.get("x-client-id"), Some("web-7"), "kept");
    let a = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(get(a, "peer"), Some(&Value::IntValue(5)));
    assert!(get(a, "nothing").is_none());
    assert_eq!(get(a, "client.id"), Some(&s("web-7")));
    assert_eq!(get(a, "agents"), Some(&s("a;b")));
    assert!(get(a, "absent.header").is_none());
    assert_eq!(get(a, "clew.tenant"), Some(&s("acme")));
}

#[test]
fn delete_by_key_and_pattern() {
    let p = processor(
        r#"
actions:
  - {key: drop.me, action: delete}
  - {pattern: "password|^internal\\.", action: delete}
"#,
    )
    .unwrap();
    let out = run_attrs(
        &p,
        vec![
            kv_str("drop.me", "x"),
            kv_str("user.password", "x"),
            kv_str("internal.x", "x"),
            kv_str("not.internal", "keep"),
        ],
    );
    let keys: Vec<&str> = out.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec!["not.internal"]);
}

#[test]
fn hash_is_keyed_hmac_sha256() {
    let p = processor(&format!(
        "hash_key_env: {KEY_ENV}\nactions:\n  - {{key: user.email, action: hash}}\n  - {{pattern: '^secret\\.', action: hash}}\n"
    ))
    .unwrap();
    let mut input = vec![
        kv_str("user.email", "alice@example.com"),
        kv("secret.n", Value::IntValue(42)),
        kv("secret.b", Value::BytesValue(vec![1, 2])),
        kv_str("other", "clear"),
    ];
    input.extend(odd_attrs().into_iter().map(|mut kv| {
        kv.key = format!("secret.{}", kv.key);
        kv
    }));
    let out = run_attrs(&p, input);
    let Some(Value::StringValue(h)) = get(&out, "user.email") else {
        panic!("hashed to a string");
    };
    assert_eq!(h.len(), 64);
    assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        *h,
        keyed_hash(KEY.as_bytes(), &attrs::string_value("alice@example.com"))
    );
    assert_ne!(
        *h,
        keyed_hash(b"another key", &attrs::string_value("alice@example.com"))
    );
    // Known answer: HMAC-SHA256(key, "alice@example.com").
    assert_eq!(
        keyed_hash(
            b"key",
            &attrs::string_value("The quick brown fox jumps over the lazy dog")
        ),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    // Ints hash their text form; odd types are hashed without panicking; unset values stay.
    assert_eq!(
        get(&out, "secret.n"),
        Some(&s(&keyed_hash(KEY.as_bytes(), &attrs::string_value("42"))))
    );
    for k in [
        "secret.b",
        "secret.arr",
        "secret.map",
        "secret.bytes",
        "secret.bool",
    ] {
        assert!(
            matches!(get(&out, k), Some(Value::StringValue(h)) if h.len() == 64),
            "{k}"
        );
    }
    assert!(get(&out, "secret.empty").is_none());
    assert_eq!(get(&out, "other"), Some(&s("clear")));
}

#[test]
fn hash_key_from_file() {
    let path = std::env::temp_dir().join(format!("clew-attr-key-{}", std::process::id()));
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let p = processor(&format!(
        "hash_key_file: {}\nactions: [{{key: u, action: hash}}]",
        path.display()
    ))
    .unwrap();
    let out = run_attrs(&p, vec![kv_str("u", "x")]);
    assert_eq!(
        get(&out, "u"),
        Some(&s(&keyed_hash(KEY.as_bytes(), &attrs::string_value("x"))))
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn extract_named_groups() {
    let p = processor(
        r#"
actions:
  - key: http.url
    action: extract
    pattern: "^(?P<http_scheme>https?)://(?P<http_host>[^/:]+)(:(?P<http_port>\\d+))?(?P<http_path>/[^?]*)?"
"#,
    )
    .unwrap();
    let out = run_attrs(
        &p,
        vec![
            kv_str("http.url", "https://shop.example.com/cart?id=1"),
            kv_str("http_host", "overwritten"),
        ],
    );
    assert_eq!(get(&out, "http_scheme"), Some(&s("https")));
    assert_eq!(get(&out, "http_host"), Some(&s("shop.example.com")));
    assert_eq!(get(&out, "http_path"), Some(&s("/cart")));
    assert!(
        get(&out, "http_port").is_none(),
        "unmatched group: no attribute"
    );
    // No match, or not a string: nothing happens.
    let out = run_attrs(&p, vec![kv_str("http.url", "not a url")]);
    assert_eq!(out.len(), 1);
    let out = run_attrs(&p, vec![kv("http.url", Value::IntValue(1))]);
    assert_eq!(out.len(), 1);
}

#[test]
fn convert_types() {
    let p = processor(
        r#"
actions:
  - {key: num_str, action: convert, converted_type: int}
  - {key: dbl, action: convert, converted_type: int}
  - {key: bool, action: convert, converted_type: double}
  - {key: int, action: convert, converted_type: string}
  - {key: arr, action: convert, converted_type: int}
  - {key: map, action: convert, converted_type: string}
  - {key: bytes, action: convert, converted_type: double}
  - {key: none, action: convert, converted_type: int}
  - {key: empty, action: convert, converted_type: string}
  - {key: bad, action: convert, converted_type: double}
"#,
    )
    .unwrap();
    let mut input = odd_attrs();
    input.push(kv_str("bad", "x1"));
    let out = run_attrs(&p, input);
    assert_eq!(get(&out, "num_str"), Some(&Value::IntValue(17)));
    assert!(
        matches!(get(&out, "dbl"), Some(Value::DoubleValue(d)) if d.is_nan()),
        "NaN cannot be an int: unchanged"
    );
    assert_eq!(get(&out, "bool"), Some(&Value::DoubleValue(1.0)));
    assert_eq!(get(&out, "int"), Some(&s("42")));
    assert!(matches!(get(&out, "arr"), Some(Value::ArrayValue(_))));
    assert_eq!(get(&out, "map"), Some(&s(r#"{"k":"v"}"#)));
    assert!(matches!(get(&out, "bytes"), Some(Value::BytesValue(_))));
    assert_eq!(get(&out, "bad"), Some(&s("x1")));
    let p = processor("actions: [{key: d, action: convert, converted_type: int}]").unwrap();
    let out = run_attrs(&p, vec![kv("d", Value::DoubleValue(2.9))]);
    assert_eq!(get(&out, "d"), Some(&Value::IntValue(2)));
    let out = run_attrs(&p, vec![kv("d", Value::DoubleValue(1e300))]);
    assert_eq!(get(&out, "d"), Some(&Value::DoubleValue(1e300)));
}

#[test]
fn odd_types_never_panic_in_any_action() {
    let p = processor(&format!(
        r#"
hash_key_env: {KEY_ENV}
include: {{match_type: regexp, attributes: [{{key: arr, value: ".*"}}]}}
actions:
  - {{key: arr, action: upsert, from_attribute: map}}
  - {{key: bytes, action: update, from_attribute: none}}
  - {{key: empty, action: extract, pattern: "(?P<x>.*)"}}
  - {{key: map, action: extract, pattern: "(?P<y>.*)"}}
  - {{pattern: ".*", action: hash}}
  - {{key: dbl, action: convert, converted_type: string}}
  - {{pattern: "^n", action: delete}}
"#
    ))
    .unwrap();
    let out = run_attrs(&p, odd_attrs());
    assert!(get(&out, "x").is_none() && get(&out, "y").is_none());
    assert!(attrs::get(&out, "none").is_none() && attrs::get(&out, "num_str").is_none());
}

#[test]
fn include_and_exclude() {
    let p = processor(
        r#"
include:
  match_type: strict
  services: [checkout]
  attributes: [{key: http.route}, {key: code, value: 200}]
exclude: {match_type: regexp, span_names: ["^health"]}
actions: [{key: touched, action: insert, value: true}]
"#,
    )
    .unwrap();
    let good = || vec![kv_str("http.route", "/x"), kv("code", Value::IntValue(200))];
    let touched = |service: &str, name: &str, a: Vec<KeyValue>| {
        let b = run(&p, batch_of(service, vec![span(name, a)]));
        attrs::get(
            &b.resource_spans[0].scope_spans[0].spans[0].attributes,
            "touched",
        )
        .is_some()
    };
    assert!(touched("checkout", "GET /x", good()));
    assert!(!touched("cart", "GET /x", good()), "other service");
    assert!(!touched("checkout", "healthz", good()), "excluded");
    assert!(
        !touched("checkout", "GET /x", vec![kv_str("http.route", "/x")]),
        "attribute missing"
    );
    assert!(
        !touched(
            "checkout",
            "GET /x",
            vec![kv_str("http.route", "/x"), kv_str("code", "500")]
        ),
        "value differs"
    );
}

#[test]
fn config_errors_name_keys() {
    let cases = [
        ("actions: []", "actions"),
        ("actions: [{key: a, action: insert}]", "actions[0].action"),
        (
            "actions: [{key: a, action: insert, value: 1, from_attribute: b}]",
            "actions[0].action",
        ),
        ("actions: [{action: upsert, value: 1}]", "actions[0].key"),
        (
            "actions: [{key: a, action: delete}, {pattern: '(', action: delete}]",
            "actions[1].pattern",
        ),
        ("actions: [{action: delete}]", "actions[0].key"),
        ("actions: [{key: a, action: extract, pattern: '(x)'}]", "actions[0].pattern"),
        ("actions: [{key: a, action: extract}]", "actions[0].pattern"),
        ("actions: [{key: a, action: extract, pattern: '(?P<x'}]", "actions[0].pattern"),
        ("actions: [{key: a, action: convert}]", "actions[0].converted_type"),
        ("actions: [{key: a, action: hash}]", "actions[0].action"),
        (
            "actions: [{key: a, action: insert, from_context: auth.token}]",
            "actions[0].from_context",
        ),
        (
            "actions: [{key: a, action: insert, from_context: 'metadata.'}]",
            "actions[0].from_context",
        ),
        (
            "actions: [{key: a, action: delete, value: 1}]",
            "actions[0].value",
        ),
        ("actions: [{key: '', action: delete}]", "actions[0].key"),
        (
            "hash_key_env: CLEW_SURELY_UNSET_ENV_VAR\nactions: [{key: a, action: hash}]",
            "hash_key_env",
        ),
        (
            "hash_key_file: /nonexistent/key\nactions: [{key: a, action: hash}]",
            "hash_key_file",
        ),
        (
            "include: {match_type: strict}\nactions: [{key: a, action: delete}]",
            "include",
        ),
        (
            "exclude: {match_type: regexp, services: [ok, '[']}\nactions: [{key: a, action: delete}]",
            "exclude.services[1]",
        ),
    ];
    for (yaml, key) in cases {
        let e = processor(yaml).expect_err(yaml);
        assert_eq!(e.key, key, "{yaml}: {e}");
    }
    // Unknown actions and keys are refused by deserialization.
    assert!(serde_yaml::from_str::<AttributesConfig>("actions: [{key: a, action: nope}]").is_err());
    assert!(serde_yaml::from_str::<AttributesConfig>(
        "actions: [{key: a, action: delete, bogus: 1}]"
    )
    .is_err());
}
