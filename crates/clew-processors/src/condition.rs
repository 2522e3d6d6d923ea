//! Shared matching for the processors: [`Condition`] (what the routing connector routes on), the
//! [`ConfigError`] every processor's constructor returns, and secret loading.
//!
//! ## Condition shape (YAML)
//!
//! A condition is a map with exactly one of these keys:
//!
//! ```yaml
//! tenant: {regex: "eu-.*"}                                  # the batch's tenant
//! resource_attribute: {key: deployment.environment.name, equals: dev}
//! span_attribute: {key: http.route, in: [/checkout, /cart]}
//! baggage: {key: user.tier, exists: true}                   # an attribute that came from baggage
//! all: [ <condition>, ... ]                                 # every one matches (empty: true)
//! any: [ <condition>, ... ]                                 # at least one matches (empty: false)
//! not: <condition>
//! ```
//!
//! Each matcher (`tenant`, `resource_attribute`, `span_attribute`, `baggage`) takes exactly one
//! operator:
//!
//! | operator | meaning |
//! |---|---|
//! | `equals: V` | the value's text form is `V` (numbers may be written unquoted: `equals: 200`) |
//! | `in: [V, ...]` | the value's text form is one of them |
//! | `regex: P` | the value's text form matches `P` **anchored** (`^(?:P)$`): `eu-.*`, not `eu-` |
//! | `exists: true/false` | the attribute is (not) present; not for `tenant` |
//!
//! The text form of a value is the one search uses ([`clew_model::attrs::to_text`]): strings as
//! they are, numbers and booleans as usual (`200`, `1.5`, `true`), bytes as base64, arrays and
//! maps as JSON; so odd types never fail, they just compare as text. An attribute that is absent
//! matches only `exists: false`.
//!
//! `baggage: {key: K}` looks for the attribute `<baggage_prefix>K` on the span, then on its
//! resource (`baggage_prefix` is set where the condition is used, default empty: the OTel SDKs'
//! baggage span processors copy entries with their key unchanged).
//!
//! Errors name the key: an unparseable regex in the second route is
//! `table[1].condition.tenant.regex: invalid regex: ...`.

use std::borrow::Cow;
use std::path::PathBuf;

use clew_model::attrs;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use regex::Regex;
use serde::Deserialize;

/// A configuration error, naming the offending key relative to the processor's configuration
/// (`actions[2].pattern`, `table[1].condition.tenant.regex`); the caller prefixes the processor's
/// own path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A scalar written in a configuration: `dev`, `200`, `1.5`, `true` — kept as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// `tenant: {...}`: one operator, no key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchConfig {
    #[serde(default)]
    pub equals: Option<Scalar>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Scalar>>,
    #[serde(default)]
    pub regex: Option<String>,
}

/// `resource_attribute` / `span_attribute` / `baggage: {key, <operator>}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatchConfig {
    pub key: String,
    #[serde(default)]
    pub equals: Option<Scalar>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Scalar>>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub exists: Option<bool>,
}

/// A condition as written; see the module documentation. Exactly one key must be set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    #[serde(default)]
    pub tenant: Option<ValueMatchConfig>,
    #[serde(default)]
    pub resource_attribute: Option<AttributeMatchConfig>,
    #[serde(default)]
    pub span_attribute: Option<AttributeMatchConfig>,
    #[serde(default)]
    pub baggage: Option<AttributeMatchConfig>,
    #[serde(default)]
    pub all: Option<Vec<ConditionConfig>>,
    #[serde(default)]
    pub any: Option<Vec<ConditionConfig>>,
    #[serde(default)]
    pub not: Option<Box<ConditionConfig>>,
}

/// One compiled operator.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    Equals(String),
    In(Vec<String>),
    /// Anchored.
    Regex(Regex),
    Exists(bool),
}

impl ValueMatcher {
    /// Whether `value` (absent: `None`) matches.
    pub fn matches(&self, value: Option<&AnyValue>) -> bool {
        match (self, value) {
            (ValueMatcher::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (m, Some(v)) => m.matches_text(&text_of(v)),
        }
    }

    /// Whether a present value whose text form is `text` matches.
    pub fn matches_text(&self, text: &str) -> bool {
        match self {
            ValueMatcher::Equals(e) => e == text,
            ValueMatcher::In(list) => list.iter().any(|e| e == text),
            ValueMatcher::Regex(r) => r.is_match(text),
            ValueMatcher::Exists(want) => *want,
        }
    }
}

/// The text form of a value, borrowed for strings (the common case).
pub fn text_of(v: &AnyValue) -> Cow<'_, str> {
    match &v.value {
        Some(Value::StringValue(s)) => Cow::Borrowed(s.as_str()),
        _ => Cow::Owned(attrs::to_text(v)),
    }
}

/// Compiles `pattern` anchored at both ends; the error names `key`.
pub fn anchored_regex(pattern: &str, key: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new(key, format!("invalid regex {pattern:?}: {e}")))
}

/// Compiles `pattern` as written (unanchored, as the Collector's processors use them).
pub fn unanchored_regex(pattern: &str, key: &str) -> Result<Regex, ConfigError> {
    Regex::new(pattern)
        .map_err(|e| ConfigError::new(key, format!("invalid regex {pattern:?}: {e}")))
}

fn compile_matcher(
    equals: &Option<Scalar>,
    one_of: &Option<Vec<Scalar>>,
    regex: &Option<String>,
    exists: Option<bool>,
    path: &str,
) -> Result<ValueMatcher, ConfigError> {
    let set = [
        equals.is_some(),
        one_of.is_some(),
        regex.is_some(),
        exists.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        let ops = if exists.is_none() && path.ends_with("tenant") {
            "equals, in, regex"
        } else {
            "equals, in, regex, exists"
        };
        return Err(ConfigError::new(
            path,
            format!("needs exactly one operator of {ops} (found {set})"),
        ));
    }
    if let Some(e) = equals {
        return Ok(ValueMatcher::Equals(e.to_text()));
    }
    if let Some(list) = one_of {
        if list.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.in"),
                "empty list: nothing would match",
            ));
        }
        return Ok(ValueMatcher::In(list.iter().map(Scalar::to_text).collect()));
    }
    if let Some(r) = regex {
        return Ok(ValueMatcher::Regex(anchored_regex(
            r,
            &format!("{path}.regex"),
        )?));
    }
    Ok(ValueMatcher::Exists(exists.unwrap_or(true)))
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    Tenant(ValueMatcher),
    ResourceAttribute {
        key: String,
        matcher: ValueMatcher,
    },
    SpanAttribute {
        key: String,
        matcher: ValueMatcher,
    },
    /// `key` is the attribute key, the baggage prefix included.
    Baggage {
        key: String,
        matcher: ValueMatcher,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct MatchContext<'a> {
    pub tenant: &'a str,
    /// The resource's attributes.
    pub resource: &'a [KeyValue],
    /// The span's attributes; `None` when evaluating a whole resource.
    pub span: Option<&'a [KeyValue]>,
}

impl Condition {
    /// Compiles `cfg`; errors name keys under `path` (e.g. `table[1].condition`).
    /// `baggage_prefix` is prepended to `baggage` keys.
    pub fn compile(
        cfg: &ConditionConfig,
        path: &str,
        baggage_prefix: &str,
    ) -> Result<Self, ConfigError> {
        let set = [
            cfg.tenant.is_some(),
            cfg.resource_attribute.is_some(),
            cfg.span_attribute.is_some(),
            cfg.baggage.is_some(),
            cfg.all.is_some(),
            cfg.any.is_some(),
            cfg.not.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(ConfigError::new(
                path,
                format!(
                    "needs exactly one of tenant, resource_attribute, span_attribute, baggage, \
                     all, any, not (found {set}; combine several with all/any)"
                ),
            ));
        }
        if let Some(t) = &cfg.tenant {
            let p = format!("{path}.tenant");
            return Ok(Condition::Tenant(compile_matcher(
                &t.equals, &t.one_of, &t.regex, None, &p,
            )?));
        }
        let attr =
            |a: &AttributeMatchConfig, what: &str| -> Result<(String, ValueMatcher), ConfigError> {
                let p = format!("{path}.{what}");
                if a.key.is_empty() {
                    return Err(ConfigError::new(format!("{p}.key"), "must not be empty"));
                }
                let m = compile_matcher(&a.equals, &a.one_of, &a.regex, a.exists, &p)?;
                Ok((a.key.clone(), m))
            };
        if let Some(a) = &cfg.resource_attribute {
            let (key, matcher) = attr(a, "resource_attribute")?;
            return Ok(Condition::ResourceAttribute { key, matcher });
        }
        if let Some(a) = &cfg.span_attribute {
            let (key, matcher) = attr(a, "span_attribute")?;
            return Ok(Condition::SpanAttribute { key, matcher });
        }
        if let Some(a) = &cfg.baggage {
            let (key, matcher) = attr(a, "baggage")?;
            return Ok(Condition::Baggage {
                key: format!("{baggage_prefix}{key}"),
                matcher,
            });
        }
        let list = |items: &[ConditionConfig], what: &str| -> Result<Vec<Condition>, ConfigError> {
            items
                .iter()
                .enumerate()
                .map(|(i, c)| Condition::compile(c, &format!("{path}.{what}[{i}]"), baggage_prefix))
                .collect()
        };
        if let Some(items) = &cfg.all {
            return Ok(Condition::All(list(items, "all")?));
        }
        if let Some(items) = &cfg.any {
            return Ok(Condition::Any(list(items, "any")?));
        }
        match &cfg.not {
            Some(inner) => Ok(Condition::Not(Box::new(Condition::compile(
                inner,
                &format!("{path}.not"),
                baggage_prefix,
            )?))),
            None => Err(ConfigError::new(path, "empty condition")),
        }
    }

    /// The path (relative to the condition) of the first matcher that needs a span
    /// (`span_attribute`, `baggage`), if any: such conditions cannot be evaluated per resource.
    pub fn span_matcher_path(&self) -> Option<String> {
        match self {
            Condition::SpanAttribute { .. } => Some("span_attribute".into()),
            Condition::Baggage { .. } => Some("baggage".into()),
            Condition::Tenant(_) | Condition::ResourceAttribute { .. } => None,
            Condition::All(items) | Condition::Any(items) => {
                let what = if matches!(self, Condition::All(_)) {
                    "all"
                } else {
                    "any"
                };
                items
                    .iter()
                    .enumerate()
                    .find_map(|(i, c)| c.span_matcher_path().map(|p| format!("{what}[{i}].{p}")))
            }
            Condition::Not(inner) => inner.span_matcher_path().map(|p| format!("not.{p}")),
        }
    }

    /// Whether the condition holds in `cx`. Never panics, whatever the attribute types.
    pub fn matches(&self, cx: &MatchContext<'_>) -> bool {
        match self {
            Condition::Tenant(m) => m.matches_text(cx.tenant),
            Condition::ResourceAttribute { key, matcher } => {
                matcher.matches(attrs::get(cx.resource, key))
            }
            Condition::SpanAttribute { key, matcher } => {
                matcher.matches(cx.span.and_then(|s| attrs::get(s, key)))
            }
            Condition::Baggage { key, matcher } => matcher.matches(
                cx.span
                    .and_then(|s| attrs::get(s, key))
                    .or_else(|| attrs::get(cx.resource, key)),
            ),
            Condition::All(items) => items.iter().all(|c| c.matches(cx)),
            Condition::Any(items) => items.iter().any(|c| c.matches(cx)),
            Condition::Not(inner) => !inner.matches(cx),
        }
    }
}

/// Loads a secret (an HMAC key) from an environment variable or a file — exactly one of them may
/// be set; neither: `Ok(None)`. A file's trailing newline is removed. Empty secrets are refused.
/// Errors name `env_key` / `file_key` and never include the secret.
pub fn load_secret(
    env: Option<&str>,
    file: Option<&PathBuf>,
    env_key: &str,
    file_key: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let secret = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                env_key,
                format!("set either {env_key} or {file_key}, not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(var), None) => match std::env::var_os(var) {
            Some(v) => v.into_encoded_bytes(),
            None => {
                return Err(ConfigError::new(
                    env_key,
                    format!("environment variable {var:?} is not set"),
                ))
            }
        },
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path).map_err(|e| {
                ConfigError::new(file_key, format!("cannot read {}: {e}", path.display()))
            })?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
    };
    if secret.is_empty() {
        let key = if env.is_some() { env_key } else { file_key };
        return Err(ConfigError::new(key, "the secret is empty"));
    }
    if secret.len() < 16 {
        tracing::warn!(
            key = if env.is_some() { env_key } else { file_key },
            "HMAC secret shorter than 16 bytes: pseudonyms of guessable values can be brute-forced"
        );
    }
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::attrs::{kv, kv_str};
    use clew_model::otlp::common::{ArrayValue, KeyValueList};

    fn cond(yaml: &str) -> Result<Condition, ConfigError> {
        let cfg: ConditionConfig = serde_yaml::from_str(yaml).expect("yaml");
        Condition::compile(&cfg, "c", "baggage.")
    }

    fn odd_attrs() -> Vec<KeyValue> {
        vec![
            kv(
                "arr",
                Value::ArrayValue(ArrayValue {
                    values: vec![attrs::string_value("a")],
                }),
            ),
            kv(
                "map",
                Value::KvlistValue(KeyValueList {
                    values: vec![kv_str("k", "v")],
                }),
            ),
            kv("bytes", Value::BytesValue(vec![0xff, 0])),
            kv("code", Value::IntValue(200)),
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
            kv_str("baggage.user.tier", "gold"),
        ]
    }

    #[test]
    fn operators() {
        let span = odd_attrs();
        let res = vec![kv_str("deployment.environment.name", "dev")];
        let cx = MatchContext {
            tenant: "eu-west",
            resource: &res,
            span: Some(&span),
        };
        let yes = [
            "tenant: {regex: 'eu-.*'}",
            "tenant: {in: [us, eu-west]}",
            "tenant: {equals: eu-west}",
            "resource_attribute: {key: deployment.environment.name, equals: dev}",
            "span_attribute: {key: code, equals: 200}",
            "span_attribute: {key: code, in: ['200', 404]}",
            "span_attribute: {key: code, regex: '2..'}",
            "span_attribute: {key: arr, exists: true}",
            "span_attribute: {key: arr, equals: '[\"a\"]'}",
            "span_attribute: {key: map, regex: '.*k.*'}",
            "span_attribute: {key: bytes, regex: '.*'}",
            "span_attribute: {key: absent, exists: false}",
            "baggage: {key: user.tier, equals: gold}",
            "all: [{tenant: {regex: 'eu-.*'}}, {baggage: {key: user.tier, exists: true}}]",
            "any: [{tenant: {equals: x}}, {span_attribute: {key: code, equals: 200}}]",
            "not: {tenant: {equals: us}}",
            "all: []",
        ];
        for y in yes {
            assert!(cond(y).unwrap().matches(&cx), "{y}");
        }
        let no = [
            "tenant: {regex: 'eu-'}",
            "tenant: {regex: 'west'}",
            "span_attribute: {key: absent, equals: x}",
            "span_attribute: {key: absent, regex: '.*'}",
            "span_attribute: {key: none, equals: ''}",
            "span_attribute: {key: none, exists: true}",
            "resource_attribute: {key: code, exists: true}",
            "any: []",
        ];
        for y in no {
            assert!(!cond(y).unwrap().matches(&cx), "{y}");
        }
        // Evaluated per resource: span matchers see nothing, baggage falls back to the resource.
        let cx = MatchContext { span: None, ..cx };
        assert!(!cond("span_attribute: {key: code, exists: true}")
            .unwrap()
            .matches(&cx));
        assert!(!cond("baggage: {key: user.tier, exists: true}")
            .unwrap()
            .matches(&cx));
    }

    #[test]
    fn errors_name_keys() {
        let e = cond("tenant: {regex: '(eu'}").unwrap_err();
        assert_eq!(e.key, "c.tenant.regex");
        let e = cond("any: [{tenant: {equals: a}}, {span_attribute: {key: k, regex: '['}}]")
            .unwrap_err();
        assert_eq!(e.key, "c.any[1].span_attribute.regex");
        let e = cond("span_attribute: {key: k, equals: a, regex: b}").unwrap_err();
        assert_eq!(e.key, "c.span_attribute");
        let e = cond("span_attribute: {key: '', exists: true}").unwrap_err();
        assert_eq!(e.key, "c.span_attribute.key");
        let e = cond("{tenant: {equals: a}, span_attribute: {key: k, exists: true}}").unwrap_err();
        assert_eq!(e.key, "c");
        let e = cond("{}").unwrap_err();
        assert_eq!(e.key, "c");
        let e = cond("tenant: {}").unwrap_err();
        assert_eq!(e.key, "c.tenant");
        let e = cond("resource_attribute: {key: k, in: []}").unwrap_err();
        assert_eq!(e.key, "c.resource_attribute.in");
        assert!(serde_yaml::from_str::<ConditionConfig>("tenant: {exists: true}").is_err());
        assert!(serde_yaml::from_str::<ConditionConfig>("bogus: 1").is_err());
    }

    #[test]
    fn span_matcher_paths() {
        let c =
            cond("all: [{tenant: {equals: a}}, {not: {baggage: {key: k, exists: true}}}]").unwrap();
        assert_eq!(c.span_matcher_path().as_deref(), Some("all[1].not.baggage"));
        assert!(cond("tenant: {equals: a}")
            .unwrap()
            .span_matcher_path()
            .is_none());
    }

    #[test]
    fn secrets() {
        let dir = std::env::temp_dir().join(format!("clew-proc-secret-{}", std::process::id()));
        std::fs::write(&dir, b"0123456789abcdef\n").unwrap();
        let s = load_secret(None, Some(&dir), "e", "f").unwrap().unwrap();
        assert_eq!(s, b"0123456789abcdef");
        assert_eq!(load_secret(None, None, "e", "f").unwrap(), None);
        let e = load_secret(Some("CLEW_SURELY_UNSET_VAR_42"), None, "e", "f").unwrap_err();
        assert_eq!(e.key, "e");
        let e = load_secret(Some("X"), Some(&dir), "e", "f").unwrap_err();
        assert_eq!(e.key, "e");
        let e = load_secret(None, Some(&PathBuf::from("/nonexistent/x")), "e", "f").unwrap_err();
        assert_eq!(e.key, "f");
        std::fs::write(&dir, b"\n").unwrap();
        assert_eq!(
            load_secret(None, Some(&dir), "e", "f").unwrap_err().key,
            "f"
        );
        let _ = std::fs::remove_file(&dir);
    }
}
