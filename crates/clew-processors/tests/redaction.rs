//! End-to-end tests of the `redaction` processor through its public API and YAML configuration.

use clew_model::attrs::{get, get_str, kv, kv_int, kv_str};
use clew_model::otlp::common::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{span::Event, span::Link, ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_processors::redaction::{
    Action, HashKey, Redaction, RedactionConfig, RedactionMetrics, MASK,
};

const CARD: &str = "4111 1111 1111 1111";
const BAD_CARD: &str = "4111 1111 1111 1112";
const KEY_A: &str = "0123456789abcdef0123456789abcdef";
const KEY_B: &str = "fedcba9876543210fedcba9876543210";

fn cfg(yaml: &str) -> RedactionConfig {
    serde_yaml::from_str(yaml).expect("config parses")
}

fn build(yaml: &str) -> Redaction {
    Redaction::new(
        "redaction/test".into(),
        cfg(yaml),
        &RedactionMetrics::default(),
    )
    .expect("valid config")
}

fn build_err(yaml: &str) -> (String, String) {
    let e = Redaction::new(
        "redaction/test".into(),
        cfg(yaml),
        &RedactionMetrics::default(),
    )
    .expect_err("invalid config");
    (e.key, e.message)
}

fn span(attrs: Vec<KeyValue>) -> Span {
    Span {
        name: "op".into(),
        attributes: attrs,
        ..Default::default()
    }
}

fn batch_of(resource: Vec<KeyValue>, spans: Vec<Span>) -> SpanBatch {
    SpanBatch::new(
        Tenant::default(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
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

fn run(p: &Redaction, b: SpanBatch) -> SpanBatch {
    match p.process(b).expect("process") {
        ProcessOutcome::Forward(b) => b,
        ProcessOutcome::Consumed => panic!("redaction never consumes"),
    }
}

/// Runs one span with these attributes and returns them.
fn attrs_after(p: &Redaction, attrs: Vec<KeyValue>) -> Vec<KeyValue> {
    let b = run(p, batch_of(vec![], vec![span(attrs)]));
    b.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .clone()
}

fn s<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    get_str(attrs, key)
}

fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match get(attrs, key)?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

#[test]
fn builtin_patterns_mask_true_positives_and_keep_near_misses() {
    let p = build(
        "allow_all_keys: true
patterns: [email, credit_card, iban, phone, ipv4, ipv6, jwt, bearer_token, aws_access_key, gcp_api_key]",
    );
    let out = attrs_after(
        &p,
        vec![
            kv_str("email", "mail jane.doe@example.com now"),
            kv_str("card", format!("pan {CARD}")),
            kv_str("bad_card", format!("order {BAD_CARD}")),
            kv_str("iban", "DE89370400440532013000"),
            kv_str("bad_iban", "DE89370400440532013001"),
            kv_str("phone", "+44 20 7946 0958"),
            kv_str("ip", "client 10.1.2.3"),
            kv_str("version", "1.2.3.4.5"),
            kv_str("ip6", "2001:db8::1"),
            kv_str("rust", "std::fmt::Display"),
            kv_str("auth", "Bearer abcdefgh12345678"),
            kv_str("aws", "AKIAIOSFODNN7EXAMPLE"),
            kv_str("gcp", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
            kv_str("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_part"),
            kv_str("route", "/api/users/{id}"),
        ],
    );
    assert_eq!(s(&out, "email"), Some("mail **** now"));
    assert_eq!(s(&out, "card"), Some("pan ****"));
    assert_eq!(
        s(&out, "bad_card"),
        Some("order 4111 1111 1111 1112"),
        "Luhn fails: kept"
    );
    assert_eq!(s(&out, "iban"), Some(MASK));
    assert_eq!(
        s(&out, "bad_iban"),
        Some("DE89370400440532013001"),
        "mod 97 fails: kept"
    );
    assert_eq!(s(&out, "phone"), Some(MASK));
    assert_eq!(s(&out, "ip"), Some("client ****"));
    assert_eq!(s(&out, "version"), Some("1.2.3.4.5"));
    assert_eq!(s(&out, "ip6"), Some(MASK));
    assert_eq!(s(&out, "rust"), Some("std::fmt::Display"));
    assert_eq!(s(&out, "auth"), Some("Bearer ****"));
    assert_eq!(s(&out, "aws"), Some(MASK));
    assert_eq!(s(&out, "gcp"), Some(MASK));
    assert_eq!(s(&out, "jwt"), Some(MASK));
    assert_eq!(s(&out, "route"), Some("/api/users/{id}"));
    assert_eq!(int(&out, "redaction.masked.count"), Some(10));
}

#[test]
fn every_action() {
    let yaml = "allow_all_keys: true
hash_keys: [{id: v2, env: CLEW_TEST_REDACTION_KEY_ACTIONS}]
patterns:
  - email
  - {name: credit_card, action: truncate, keep: 4}
  - {name: iban, action: drop}
  - {name: phone, action: hash}";
    std::env::set_var("CLEW_TEST_REDACTION_KEY_ACTIONS", KEY_A);
    let p = build(yaml);
    let out = attrs_after(
        &p,
        vec![
            kv_str("a", "x@example.org"),
            kv_str("b", format!("card {CARD}")),
            kv_str("c", "GB82 WEST 1234 5698 7654 32"),
            kv_str("d", "call +1 415 555 2671"),
        ],
    );
    assert_eq!(s(&out, "a"), Some(MASK));
    assert_eq!(s(&out, "b"), Some("card 4111****"));
    assert!(get(&out, "c").is_none(), "dropped");
    let d = s(&out, "d").expect("hashed");
    assert!(d.starts_with("call hmac:v2:"), "{d}");
    assert_eq!(d.len(), "call hmac:v2:".len() + 16);
    assert_eq!(int(&out, "redaction.redacted.count"), Some(1));
    assert_eq!(int(&out, "redaction.masked.count"), Some(3));
}

#[test]
fn hash_is_deterministic_and_rotation_is_visible() {
    let m = RedactionMetrics::default();
    let c = cfg("allow_all_keys: true\npatterns: [{name: email, action: hash}]");
    let k1 = Redaction::with_hash_keys(
        "r".into(),
        c.clone(),
        &m,
        vec![HashKey::new("k1", KEY_A.as_bytes()).expect("key")],
    )
    .expect("valid");
    let k2 = Redaction::with_hash_keys(
        "r".into(),
        c,
        &m,
        vec![
            HashKey::new("k2", KEY_B.as_bytes()).expect("key"),
            HashKey::new("k1", KEY_A.as_bytes()).expect("key"),
        ],
    )
    .expect("valid");
    let a1 = k1.redact_text("jane@example.com").expect("changed");
    let a2 = k1.redact_text("jane@example.com").expect("changed");
    let other = k1.redact_text("john@example.com").expect("changed");
    let b1 = k2.redact_text("jane@example.com").expect("changed");
    assert_eq!(a1, a2, "deterministic");
    assert_ne!(a1, other);
    assert!(a1.starts_with("hmac:k1:") && b1.starts_with("hmac:k2:"));
    assert_ne!(a1[8..], b1[8..], "a new key gives new values");
    // The old form is still computable for searches across the rotation.
    assert_eq!(
        k2.pseudonyms("jane@example.com"),
        vec![b1.clone(), a1.clone()]
    );
    // Keyed: not a plain hash of the input.
    assert_eq!(
        HashKey::new("k1", KEY_A.as_bytes())
            .expect("key")
            .pseudonym("jane@example.com"),
        a1
    );
}

#[test]
fn hash_key_from_file_and_hash_function_masks_as_hash() {
    let dir = std::env::temp_dir().join(format!("clew-redaction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("key");
    std::fs::write(&path, format!("{KEY_A}\n")).expect("write");
    let p = build(&format!(
        "allow_all_keys: true\nhash_function: hmac_sha256\nhash_key_file: {}\nhash_key_id: prod-1\nblocked_values: ['secret-[0-9]+']",
        path.display()
    ));
    let out = attrs_after(&p, vec![kv_str("x", "a secret-42 b")]);
    let v = s(&out, "x").expect("x");
    assert!(v.starts_with("a hmac:prod-1:") && v.ends_with(" b"), "{v}");
    // Same key (newline trimmed) as the programmatic one.
    let expect = HashKey::new("prod-1", KEY_A.as_bytes())
        .expect("key")
        .pseudonym("secret-42");
    assert_eq!(v, format!("a {expect} b"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn allow_block_ignore_semantics_like_the_collector() {
    let p = build(
        "allowed_keys: [id, name, notes, password, service.name]
ignored_keys: [safe]
blocked_key_patterns: ['(?i)pass']
blocked_values: ['4[0-9]{12}(?:[0-9]{3})?']
allowed_values: ['.+@mycompany\\.com']
summary: debug",
    );
    let out = attrs_after(
        &p,
        vec![
            kv_str("id", "4111111111111111"),
            kv_str("name", "ops@mycompany.com"),
            kv_str("notes", "nothing here"),
            kv_str("password", "hunter2"),
            kv_str("safe", "4111111111111111"),
            kv_str("birth_date", "1970-01-01"),
            kv_str("mothers_maiden_name", "Smith"),
        ],
    );
    assert_eq!(s(&out, "id"), Some(MASK), "blocked value masked");
    assert_eq!(s(&out, "name"), Some("ops@mycompany.com"), "allowed value");
    assert_eq!(s(&out, "notes"), Some("nothing here"));
    assert_eq!(s(&out, "password"), Some(MASK), "blocked key masked whole");
    assert_eq!(
        s(&out, "safe"),
        Some("4111111111111111"),
        "ignored key untouched"
    );
    assert!(get(&out, "birth_date").is_none() && get(&out, "mothers_maiden_name").is_none());
    assert_eq!(
        s(&out, "redaction.redacted.keys"),
        Some("birth_date,mothers_maiden_name")
    );
    assert_eq!(int(&out, "redaction.redacted.count"), Some(2));
    assert_eq!(s(&out, "redaction.masked.keys"), Some("id,password"));
    assert_eq!(int(&out, "redaction.masked.count"), Some(2));
    assert_eq!(s(&out, "redaction.allowed.keys"), Some("name"));
    assert_eq!(int(&out, "redaction.allowed.count"), Some(1));
    assert_eq!(int(&out, "redaction.ignored.count"), Some(1));
}

#[test]
fn summary_levels_and_chaining() {
    let info = build("blocked_values: ['x+']\nallow_all_keys: true");
    let out = attrs_after(&info, vec![kv_str("a", "xx"), kv_str("b", "y")]);
    assert_eq!(int(&out, "redaction.masked.count"), Some(1));
    assert!(
        get(&out, "redaction.masked.keys").is_none(),
        "info: counts only"
    );
    let silent = build("blocked_values: ['x+']\nallow_all_keys: true\nsummary: silent");
    let out = attrs_after(&silent, vec![kv_str("a", "xx")]);
    assert_eq!(out.len(), 1, "silent: nothing added");
    // A second processor (allow list on) keeps and adds to the first one's summary.
    let first = build("blocked_values: ['x+']\nallow_all_keys: true\nsummary: debug");
    let second = build("allowed_keys: [a, b]\nblocked_values: ['y+']\nsummary: debug");
    let b = run(
        &first,
        batch_of(
            vec![],
            vec![span(vec![kv_str("a", "xx"), kv_str("b", "yy")])],
        ),
    );
    let b = run(&second, b);
    let out = &b.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(s(out, "redaction.masked.keys"), Some("a,b"));
    assert_eq!(int(out, "redaction.masked.count"), Some(2));
}

#[test]
fn resource_event_and_link_attributes_and_scope() {
    let yaml = "allow_all_keys: true\npatterns: [email]";
    let mk = || {
        let mut sp = span(vec![kv_str("user", "a@b.io")]);
        sp.events.push(Event {
            name: "exception".into(),
            attributes: vec![kv_str("exception.message", "no user c@d.io")],
            ..Default::default()
        });
        sp.links.push(Link {
            attributes: vec![kv_str("peer", "e@f.io")],
            ..Default::default()
        });
        batch_of(vec![kv_str("owner", "team@corp.io")], vec![sp])
    };
    let b = run(&build(yaml), mk());
    let rs = &b.resource_spans[0];
    let sp = &rs.scope_spans[0].spans[0];
    let res = &rs.resource.as_ref().expect("resource").attributes;
    assert_eq!(s(res, "owner"), Some(MASK));
    assert_eq!(int(res, "redaction.masked.count"), Some(1));
    assert_eq!(s(&sp.attributes, "user"), Some(MASK));
    assert_eq!(
        s(&sp.events[0].attributes, "exception.message"),
        Some("no user ****")
    );
    assert_eq!(
        int(&sp.events[0].attributes, "redaction.masked.count"),
        Some(1)
    );
    assert_eq!(s(&sp.links[0].attributes, "peer"), Some(MASK));

    let only_spans = build(&format!("{yaml}\nscope: [span]"));
    let b = run(&only_spans, mk());
    let rs = &b.resource_spans[0];
    let sp = &rs.scope_spans[0].spans[0];
    assert_eq!(
        s(&rs.resource.as_ref().expect("r").attributes, "owner"),
        Some("team@corp.io")
    );
    assert_eq!(s(&sp.attributes, "user"), Some(MASK));
    assert_eq!(
        s(&sp.events[0].attributes, "exception.message"),
        Some("no user c@d.io")
    );
    assert_eq!(s(&sp.links[0].attributes, "peer"), Some("e@f.io"));
}

#[test]
fn span_names() {
    let p = build("allow_all_keys: true\npatterns: [email]\nspan_names: true");
    let mut sp = span(vec![]);
    sp.name = "GET /users/jane@example.com".into();
    let b = run(&p, batch_of(vec![], vec![sp]));
    assert_eq!(
        b.resource_spans[0].scope_spans[0].spans[0].name,
        "GET /users/****"
    );
    let off = build("allow_all_keys: true\npatterns: [email]");
    let mut sp = span(vec![]);
    sp.name = "GET /users/jane@example.com".into();
    let b = run(&off, batch_of(vec![], vec![sp]));
    assert_eq!(
        b.resource_spans[0].scope_spans[0].spans[0].name,
        "GET /users/jane@example.com"
    );
}

#[test]
fn sql_statements() {
    let p = build("allow_all_keys: true\nsql: true\npatterns: [email]\nsummary: debug");
    let out = attrs_after(
        &p,
        vec![
            kv_str(
                "db.statement",
                "SELECT * FROM users WHERE email = 'jane@x.io' AND id IN (1, 2, 3)",
            ),
            kv_str("db.query.text", "UPDATE t SET n = -5 /* by bob@x.io */"),
            kv_str("other", "WHERE id = 5"),
            kv_str("db.system", "postgresql"),
        ],
    );
    assert_eq!(
        s(&out, "db.statement"),
        Some("SELECT * FROM users WHERE email = ? AND id IN (?)")
    );
    assert_eq!(
        s(&out, "db.query.text"),
        Some("UPDATE t SET n = ? /* by **** */")
    );
    assert_eq!(s(&out, "other"), Some("WHERE id = 5"), "only sql_keys");
    assert_eq!(
        s(&out, "redaction.masked.keys"),
        Some("db.query.text,db.statement")
    );
}

fn arr(v: Vec<AnyValue>) -> Value {
    Value::ArrayValue(ArrayValue { values: v })
}

fn map(v: Vec<KeyValue>) -> Value {
    Value::KvlistValue(KeyValueList { values: v })
}

fn sv(x: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(x.into())),
    }
}

#[test]
fn odd_value_types_never_panic_and_nested_strings_are_redacted() {
    let p = build(
        "allow_all_keys: true
patterns: [email, credit_card, {name: iban, action: drop}]
blocked_key_patterns: ['(?i)token']
sql: true",
    );
    let mut deep = AnyValue {
        value: Some(Value::StringValue("x@y.io".into())),
    };
    for _ in 0..40 {
        deep = AnyValue {
            value: Some(arr(vec![deep])),
        };
    }
    let out = attrs_after(
        &p,
        vec![
            kv(
                "list",
                arr(vec![
                    sv("a@b.io"),
                    sv("plain"),
                    AnyValue {
                        value: Some(Value::IntValue(4111111111111111)),
                    },
                ]),
            ),
            kv(
                "headers",
                map(vec![
                    kv_str("authorization_token", "abc"),
                    kv_str("from", "c@d.io"),
                    kv_str("x", "y"),
                ]),
            ),
            kv("bytes", Value::BytesValue(b"a@b.io \xff\x00".to_vec())),
            kv("n", Value::IntValue(4111111111111111)),
            kv("f", Value::DoubleValue(f64::NAN)),
            kv("b", Value::BoolValue(true)),
            kv("idx", Value::StringValueStrindex(3)),
            kv("deep", deep.value.clone().expect("value")),
            kv("nested_iban", arr(vec![sv("DE89370400440532013000")])),
            kv("token_map", map(vec![kv_int("k", 1)])),
            kv("db.statement", Value::IntValue(1)),
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
        ],
    );
    let list = match get(&out, "list").and_then(|v| v.value.clone()) {
        Some(Value::ArrayValue(a)) => a.values,
        other => panic!("{other:?}"),
    };
    assert_eq!(list[0], sv(MASK));
    assert_eq!(list[1], sv("plain"));
    assert_eq!(
        list[2].value,
        Some(Value::IntValue(4111111111111111)),
        "ints untouched by value rules"
    );
    let headers = match get(&out, "headers").and_then(|v| v.value.clone()) {
        Some(Value::KvlistValue(m)) => m.values,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        s(&headers, "authorization_token"),
        Some(MASK),
        "nested blocked key"
    );
    assert_eq!(s(&headers, "from"), Some(MASK), "nested value pattern");
    assert_eq!(s(&headers, "x"), Some("y"));
    assert!(matches!(
        get(&out, "bytes").and_then(|v| v.value.as_ref()),
        Some(Value::BytesValue(_))
    ));
    assert_eq!(int(&out, "n"), Some(4111111111111111));
    assert_eq!(
        s(&out, "token_map"),
        Some(MASK),
        "key rule renders any type, then masks"
    );
    assert!(
        get(&out, "nested_iban").is_none(),
        "drop inside drops the attribute"
    );
    // Deeper than MAX_DEPTH: masked whole somewhere down the chain, never a stack overflow.
    assert!(format!("{:?}", get(&out, "deep")).contains(MASK));
    assert!(!format!("{:?}", get(&out, "deep")).contains("x@y.io"));
    assert_eq!(int(&out, "db.statement"), Some(1));
}

#[test]
fn custom_patterns_with_redact_group_and_metrics() {
    let m = RedactionMetrics::default();
    let mut reg = prometheus_client::registry::Registry::default();
    m.register(&mut reg);
    let p = Redaction::new(
        "redaction/pii".into(),
        cfg("allow_all_keys: true
custom_patterns:
  - {name: query_password, regex: 'password=(?P<redact>[^&]+)'}
  - {name: ticket, regex: 'TCK-[0-9]+', action: truncate, keep: 4}
patterns: [email]
blocked_key_patterns: [secret]
blocked_key_action: drop"),
        &m,
    )
    .expect("valid");
    let out = attrs_after(
        &p,
        vec![
            kv_str("url", "/login?user=a&password=hunter2&x=1"),
            kv_str("t", "see TCK-12345"),
            kv_str("mail", "a@b.io"),
            kv_str("client_secret", "s"),
        ],
    );
    assert_eq!(s(&out, "url"), Some("/login?user=a&password=****&x=1"));
    assert_eq!(s(&out, "t"), Some("see TCK-****"));
    assert!(get(&out, "client_secret").is_none());
    assert_eq!(m.values("redaction/pii", "query_password", Action::Mask), 1);
    assert_eq!(m.values("redaction/pii", "ticket", Action::Truncate), 1);
    assert_eq!(m.values("redaction/pii", "email", Action::Mask), 1);
    assert_eq!(
        m.values("redaction/pii", "blocked_key_patterns", Action::Drop),
        1
    );
    assert_eq!(m.dropped("redaction/pii", "drop_action"), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    assert!(text.contains(r#"clew_redaction_values_total{processor="redaction/pii",pattern="email",action="mask"} 1"#), "{text}");
    assert!(
        text.contains("clew_redaction_dropped_attributes_total"),
        "{text}"
    );
}

#[test]
fn nothing_matches_nothing_changes() {
    let p = build("allow_all_keys: true\npatterns: [email, credit_card, iban, phone, ipv4, ipv6, jwt, bearer_token]");
    let attrs = vec![
        kv_str("http.route", "/api/v1/orders/{id}"),
        kv_int("http.status_code", 200),
        kv_str("trace", "4bf92f3577b34da6a3ce929d0e0e4736"),
        kv_str("ts", "2024-01-15T10:00:00.123Z"),
    ];
    assert_eq!(
        attrs_after(&p, attrs.clone()),
        attrs,
        "no summary when nothing happened"
    );
}

#[test]
fn config_errors_name_the_key() {
    let (k, m) = build_err("custom_patterns: [{name: a, regex: 'x'}, {name: b, regex: 'y'}, {name: c, regex: '(unclosed'}]");
    assert_eq!(k, "custom_patterns[2].regex");
    assert!(m.contains("invalid regex") && m.contains("fix:"), "{m}");
    let (k, m) = build_err("patterns: [email, emial]");
    assert_eq!(k, "patterns[1]");
    assert!(
        m.contains("emial") && m.contains("credit_card") && m.contains("known:"),
        "{m}"
    );
    assert_eq!(
        build_err("blocked_values: ['ok', '[']").0,
        "blocked_values[1]"
    );
    assert_eq!(
        build_err("allowed_values: ['(?<x)']").0,
        "allowed_values[0]"
    );
    assert_eq!(
        build_err("blocked_key_patterns: ['*']").0,
        "blocked_key_patterns[0]"
    );
    assert_eq!(
        build_err("patterns: [{name: email, action: hash}]").0,
        "patterns[0].action"
    );
    assert_eq!(build_err("hash_function: hmac_sha256").0, "hash_function");
    let (k, m) = build_err("hash_function: md5");
    assert_eq!(k, "hash_function");
    assert!(m.contains("hmac_sha256"), "{m}");
    assert_eq!(
        build_err("hash_key_file: /nonexistent/clew/key").0,
        "hash_key_file"
    );
    assert_eq!(
        build_err("hash_key_env: CLEW_TEST_SURELY_UNSET_VAR").0,
        "hash_key_env"
    );
    std::env::set_var("CLEW_TEST_REDACTION_SHORT_KEY", "short");
    let (k, m) = build_err("hash_keys: [{id: a, env: CLEW_TEST_REDACTION_SHORT_KEY}]");
    assert_eq!(k, "hash_keys[0]");
    assert!(m.contains("16"), "{m}");
    std::env::set_var("CLEW_TEST_REDACTION_KEY_ERR", KEY_A);
    assert_eq!(
        build_err("hash_keys: [{id: a, env: CLEW_TEST_REDACTION_KEY_ERR}, {id: a, env: CLEW_TEST_REDACTION_KEY_ERR}]").0,
        "hash_keys[1].id"
    );
    assert_eq!(
        build_err("hash_keys: [{id: 'a:b', env: CLEW_TEST_REDACTION_KEY_ERR}]").0,
        "hash_keys[0]"
    );
    assert_eq!(build_err("patterns: [email, email]").0, "patterns[1]");
    assert_eq!(
        build_err("custom_patterns: [{name: email, regex: x}]").0,
        "custom_patterns[0].name"
    );
    assert_eq!(build_err("scope: []").0, "scope");
    // Unknown keys are refused by serde.
    assert!(serde_yaml::from_str::<RedactionConfig>("allow_all: true").is_err());
    assert!(serde_yaml::from_str::<RedactionConfig>(
        "custom_patterns: [{name: a, regex: b, acton: mask}]"
    )
    .is_err());
}

#[test]
fn defaults_follow_the_collector() {
    // allow_all_keys defaults to false: with no allowed_keys everything but ignored keys goes.
    let p = build("ignored_keys: [keep]");
    let out = attrs_after(&p, vec![kv_str("a", "1"), kv_str("keep", "2")]);
    assert_eq!(s(&out, "keep"), Some("2"));
    assert!(get(&out, "a").is_none());
    assert_eq!(int(&out, "redaction.redacted.count"), Some(1));
    assert_eq!(int(&out, "redaction.ignored.count"), Some(1));
}

/// The per-batch memo (key decisions, values and names the rules left alone) must not change
/// any answer: a batch of many spans whose values repeat under keys of every kind (SQL, ignored,
/// blocked, plain) gives exactly what each span gives alone.
#[test]
fn batch_memo_answers_like_one_span_at_a_time() {
    std::env::set_var("CLEW_TEST_REDACTION_KEY_MEMO", KEY_B);
    let p = build(
        "allow_all_keys: true
ignored_keys: [http.route]
blocked_key_patterns: ['(?i)token']
patterns: [email, credit_card, ipv4, jwt, bearer_token]
custom_patterns:
  - {name: customer_id, regex: 'CUST-[0-9]{8}', action: hash}
hash_key_env: CLEW_TEST_REDACTION_KEY_MEMO
sql: true
span_names: true
summary: debug",
    );
    let values = [
        "GET",
        "SELECT * FROM t WHERE id = 42",
        "SELECT * FROM t WHERE id = $1",
        "jane@example.com",
        CARD,
        BAD_CARD,
        "10.4.3.7",
        "CUST-12345678",
        "CUST-1234",
        "/api/orders/{id}",
        "",
    ];
    let keys = [
        "db.statement",
        "db.query.text",
        "http.route",
        "auth.token",
        "note",
        "url.path",
    ];
    // A fixed-seed LCG: every run sees the same batch.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize % n
    };
    let spans: Vec<Span> = (0..300)
        .map(|_| {
            let attrs = (0..1 + next(6))
                .map(|_| kv_str(keys[next(keys.len())], values[next(values.len())]))
                .collect();
            Span {
                name: values[next(values.len())].to_string(),
                attributes: attrs,
                ..Default::default()
            }
        })
        .collect();
    let resource = vec![
        kv_str("service.name", "orders"),
        kv_str("host.ip", "10.4.3.7"),
    ];
    let together = run(&p, batch_of(resource.clone(), spans.clone()));
    let together = &together.resource_spans[0].scope_spans[0].spans;
    assert_eq!(together.len(), spans.len());
    for (i, sp) in spans.into_iter().enumerate() {
        let alone = run(&p, batch_of(resource.clone(), vec![sp]));
        assert_eq!(
            alone.resource_spans[0].scope_spans[0].spans[0], together[i],
            "span {i}"
        );
    }
    // And the memo did see repeats: the same clean value under two kinds of key.
    assert!(together.iter().any(|s| s.name == "GET"));
}
