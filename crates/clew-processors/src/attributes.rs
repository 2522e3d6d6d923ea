//! The `attributes` processor: changes span attributes, in the OpenTelemetry Collector's
//! `attributes` processor shape.
//!
//! ## Configuration
//!
//! ```yaml
//! attributes/clean:
//!   hash_key_env: CLEW_ATTRIBUTES_HASH_KEY   # or hash_key_file: /run/secrets/key; needed by `hash`
//!   include:                                  # optional: only spans matching this
//!     match_type: strict                      # strict | regexp (required)
//!     services: [checkout]                    # any of these service.name values
//!     span_names: ["GET /cart"]               # any of these span names
//!     attributes: [{key: http.route}, {key: env, value: prod}]   # all of these
//!   exclude: {match_type: regexp, span_names: ["health.*"]}      # optional: never these spans
//!   actions:
//!     - {key: env, action: insert, value: prod}
//!     - {key: client.id, action: upsert, from_context: metadata.x-client-id}
//!     - {key: tenant, action: insert, from_context: tenant}
//!     - {key: peer, action: update, from_attribute: net.peer.name}
//!     - {key: user.email, action: hash}
//!     - {pattern: "^internal\\.", action: delete}
//!     - {key: http.url, action: extract, pattern: "^https?://(?P<host>[^/]+)(?P<path>/[^?]*)"}
//!     - {key: http.status_code, action: convert, converted_type: int}
//! ```
//!
//! Actions run in order on every selected span's attributes (resource attributes are not
//! touched):
//!
//! | action | needs | does |
//! |---|---|---|
//! | `insert` | `key` + one source | sets `key` if absent |
//! | `update` | `key` + one source | sets `key` if present |
//! | `upsert` | `key` + one source | sets `key` |
//! | `delete` | `key` and/or `pattern` | removes `key` and every key matching `pattern` |
//! | `hash` | `key` and/or `pattern` | replaces the value by its keyed hash (below) |
//! | `extract` | `key` + `pattern` with named groups | each matching named group becomes an attribute (upserted) |
//! | `convert` | `key` + `converted_type` (`int`, `double`, `string`) | converts the value; leaves it if it cannot |
//!
//! A *source* is exactly one of `value` (any YAML scalar, list or map), `from_attribute` (another
//! span attribute; nothing happens when it is absent), or `from_context`: `metadata.<header>` —
//! the request's header / gRPC metadata as kept by the receiver (its `include_metadata` /
//! `metadata_keys`, see [`AttributesConfig::metadata_keys_referenced`]; credentials such as
//! `authorization` and `cookie` are never kept); names are case-insensitive, several values are
//! joined with `;`, an absent header does nothing — or `tenant` (the batch's tenant), or the
//! Collector's connection sources `client.address` (the peer's IP, no port) and `auth.subject`
//! (the authenticated identity's subject: token name, certificate name, JWT `sub` — never the
//! credential); the receiver keeps those two under reserved names (`:client.address`,
//! `:auth.subject`) only when an action asks for them.
//!
//! Patterns are Rust regexes matched **unanchored** as in the Collector (`password` matches
//! `user.password`); `delete`/`hash` patterns match keys, `extract` patterns the string value.
//!
//! **`hash` differs from the Collector**: the Collector uses unkeyed SHA-1, which anyone can
//! reverse for guessable values (user ids, e-mail addresses). Clew uses HMAC-SHA256 with a secret
//! key from `hash_key_env` (an environment variable) or `hash_key_file` (a file, trailing newline
//! removed); the value becomes the 64-character lowercase hex of the MAC. Strings are hashed as
//! UTF-8, bytes as they are, other values in their text form (`42`, `true`, JSON for arrays and
//! maps). A configuration with a `hash` action and no key is a start-up error.
//!
//! `extract` and `convert` leave values of other types alone; no action ever fails a batch or
//! panics on odd attribute types (arrays, maps, bytes, empty values).
//!
//! `include` / `exclude` (optional) select spans: a span matches when every property given matches
//! (`services`: its resource's `service.name` is one of them; `span_names`: its name is one of
//! them; `attributes`: every listed key is present and, if `value` is given, its text form equals
//! it). With `match_type: regexp`, `services`, `span_names` and attribute values are unanchored
//! regexes. The actions run on spans that match `include` (when given) and do not match
//! `exclude` (when given).
//!
//! Errors name keys relative to the processor: `actions[3].pattern`, `include.services[0]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clew_model::attrs;
use clew_model::otlp::common::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use clew_model::SpanBatch;
use clew_pipeline::{ProcessOutcome, Processor};
use hmac::{Hmac, Mac};
use regex::Regex;
use serde::Deserialize;
use sha2::Sha256;

use crate::condition::{load_secret, text_of, unanchored_regex, ConfigError, Scalar};

/// A value written in the configuration: any YAML scalar, list or map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
    Array(Vec<ConfigValue>),
    Map(BTreeMap<String, ConfigValue>),
}

impl ConfigValue {
    pub fn to_any_value(&self) -> AnyValue {
        let v = match self {
            ConfigValue::Bool(b) => Value::BoolValue(*b),
            ConfigValue::Int(i) => Value::IntValue(*i),
            ConfigValue::Double(d) => Value::DoubleValue(*d),
            ConfigValue::String(s) => Value::StringValue(s.clone()),
            ConfigValue::Array(a) => Value::ArrayValue(ArrayValue {
                values: a.iter().map(ConfigValue::to_any_value).collect(),
            }),
            ConfigValue::Map(m) => Value::KvlistValue(KeyValueList {
                values: m
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: Some(v.to_any_value()),
                        ..Default::default()
                    })
                    .collect(),
            }),
        };
        AnyValue { value: Some(v) }
    }
}

/// The action of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Insert,
    Update,
    Upsert,
    Delete,
    Hash,
    Extract,
    Convert,
}

/// `converted_type` of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvertedType {
    Int,
    Double,
    String,
}

/// One entry of `actions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub key: Option<String>,
    pub action: ActionKind,
    #[serde(default)]
    pub value: Option<ConfigValue>,
    #[serde(default)]
    pub from_attribute: Option<String>,
    #[serde(default)]
    pub from_context: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub converted_type: Option<ConvertedType>,
}

/// `match_type` of `include` / `exclude`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    Strict,
    Regexp,
}

/// An entry of `include.attributes` / `exclude.attributes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub key: String,
    #[serde(default)]
    pub value: Option<Scalar>,
}

/// `include` / `exclude`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchPropertiesConfig {
    pub match_type: MatchType,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub span_names: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeMatch>,
}

/// The processor's configuration; see the module documentation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    pub actions: Vec<ActionConfig>,
    #[serde(default)]
    pub include: Option<MatchPropertiesConfig>,
    #[serde(default)]
    pub exclude: Option<MatchPropertiesConfig>,
    #[serde(default)]
    pub hash_key_env: Option<String>,
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
}

/// The receiver's reserved metadata name for a connection-context source: `client.address`
/// (the peer's IP) and `auth.subject` (the authenticated identity's subject), as the Collector's
/// `from_context` names them. `clew_receive::metadata::CONTEXT_KEYS` lists the same names.
fn context_key(from_context: &str) -> Option<&'static str> {
    match from_context {
        "client.address" => Some(":client.address"),
        "auth.subject" => Some(":auth.subject"),
        _ => None,
    }
}

impl AttributesConfig {
    /// The request headers the actions read (`from_context: metadata.<name>`), lowercase, each
    /// once: what the receivers must keep (`ReceiverConfig::metadata_keys`) for them to work.
    /// `client.address` / `auth.subject` appear as the receiver's reserved context keys
    /// (`:client.address`, `:auth.subject`).
    pub fn metadata_keys_referenced(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in &self.actions {
            let c = a.from_context.as_deref();
            let name = c
                .and_then(|c| c.strip_prefix("metadata."))
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase)
                .or_else(|| c.and_then(context_key).map(str::to_string));
            if let Some(h) = name {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
        }
        out
    }
}

enum Source {
    Value(AnyValue),
    Attribute(String),
    Metadata(String),
    Tenant,
}

enum Action {
    Set {
        key: String,
        kind: ActionKind,
        source: Source,
    },
    Delete {
        key: Option<String>,
        pattern: Option<Regex>,
    },
    Hash {
        key: Option<String>,
        pattern: Option<Regex>,
    },
    Extract {
        key: String,
        pattern: Regex,
    },
    Convert {
        key: String,
        to: ConvertedType,
    },
}

enum StrMatch {
    Strict(Vec<String>),
    Regexp(Vec<Regex>),
}

impl StrMatch {
    fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Strict(v) => v.iter().any(|x| x == s),
            StrMatch::Regexp(v) => v.iter().any(|r| r.is_match(s)),
        }
    }
}

enum ValueMatch {
    Any,
    Strict(String),
    Regexp(Regex),
}

struct MatchProperties {
    services: Option<StrMatch>,
    span_names: Option<StrMatch>,
    attributes: Vec<(String, ValueMatch)>,
}

impl MatchProperties {
    fn compile(cfg: &MatchPropertiesConfig, path: &str) -> Result<Self, ConfigError> {
        if cfg.services.is_empty() && cfg.span_names.is_empty() && cfg.attributes.is_empty() {
            return Err(ConfigError::new(
                path,
                "matches every span: give at least one of services, span_names, attributes",
            ));
        }
        let list = |items: &[String], what: &str| -> Result<Option<StrMatch>, ConfigError> {
            if items.is_empty() {
                return Ok(None);
            }
            Ok(Some(match cfg.match_type {
                MatchType::Strict => StrMatch::Strict(items.to_vec()),
                MatchType::Regexp => StrMatch::Regexp(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, p)| unanchored_regex(p, &format!("{path}.{what}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
            }))
        };
        let mut attributes = Vec::with_capacity(cfg.attributes.len());
        for (i, a) in cfg.attributes.iter().enumerate() {
            if a.key.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.attributes[{i}].key"),
                    "must not be empty",
                ));
            }
            let m = match (&a.value, cfg.match_type) {
                (None, _) => ValueMatch::Any,
                (Some(v), MatchType::Strict) => ValueMatch::Strict(v.to_text()),
                (Some(v), MatchType::Regexp) => ValueMatch::Regexp(unanchored_regex(
                    &v.to_text(),
                    &format!("{path}.attributes[{i}].value"),
                )?),
            };
            attributes.push((a.key.clone(), m));
        }
        Ok(Self {
            services: list(&cfg.services, "services")?,
            span_names: list(&cfg.span_names, "span_names")?,
            attributes,
        })
    }

    fn matches(&self, service: &str, span_name: &str, span_attrs: &[KeyValue]) -> bool {
        self.services.as_ref().is_none_or(|m| m.matches(service))
            && self
                .span_names
                .as_ref()
                .is_none_or(|m| m.matches(span_name))
            && self.attributes.iter().all(|(k, m)| {
                attrs::get(span_attrs, k).is_some_and(|v| match m {
                    ValueMatch::Any => true,
                    ValueMatch::Strict(s) => text_of(v) == s.as_str(),
                    ValueMatch::Regexp(r) => r.is_match(&text_of(v)),
                })
            })
    }
}

/// The `attributes` processor.
pub struct Attributes {
    name: String,
    actions: Vec<Action>,
    include: Option<MatchProperties>,
    exclude: Option<MatchProperties>,
    hash_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attributes")
            .field("name", &self.name)
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

fn compile_action(a: &ActionConfig, path: &str) -> Result<Action, ConfigError> {
    let err = |k: &str, m: &str| Err(ConfigError::new(format!("{path}.{k}"), m));
    let not_for = |field: bool, k: &str| -> Result<(), ConfigError> {
        if field {
            return Err(ConfigError::new(
                format!("{path}.{k}"),
                format!("not used by action {:?}", a.action).to_lowercase(),
            ));
        }
        Ok(())
    };
    if a.key.as_deref() == Some("") {
        return err("key", "must not be empty");
    }
    let has_source = a.value.is_some() || a.from_attribute.is_some() || a.from_context.is_some();
    match a.action {
        ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
            let Some(key) = &a.key else {
                return err("key", "required");
            };
            not_for(a.pattern.is_some(), "pattern")?;
            not_for(a.converted_type.is_some(), "converted_type")?;
            let n = [
                a.value.is_some(),
                a.from_attribute.is_some(),
                a.from_context.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                return err(
                    "action",
                    &format!(
                        "needs exactly one of value, from_attribute, from_context (found {n})"
                    ),
                );
            }
            let source = if let Some(v) = &a.value {
                Source::Value(v.to_any_value())
            } else if let Some(f) = &a.from_attribute {
                if f.is_empty() {
                    return err("from_attribute", "must not be empty");
                }
                Source::Attribute(f.clone())
            } else {
                let c = a.from_context.as_deref().unwrap_or_default();
                match (c.strip_prefix("metadata."), context_key(c)) {
                    (Some(h), _) if !h.is_empty() => Source::Metadata(h.to_ascii_lowercase()),
                    // Kept by the receiver under a reserved `:` name (see context_key).
                    (_, Some(k)) => Source::Metadata(k.to_string()),
                    _ if c == "tenant" => Source::Tenant,
                    _ => {
                        return err(
                            "from_context",
                            &format!(
                                "unsupported {c:?} (supported: metadata.<header-name>, tenant, client.address, auth.subject)"
                            ),
                        )
                    }
                }
            };
            Ok(Action::Set {
                key: key.clone(),
                kind: a.action,
                source,
            })
        }
        ActionKind::Delete | ActionKind::Hash => {
            not_for(has_source, "value")?;
            not_for(a.converted_type.is_some(), "converted_type")?;
            if a.key.is_none() && a.pattern.is_none() {
                return err("key", "needs key and/or pattern");
            }
            let pattern = a
                .pattern
                .as_deref()
                .map(|p| unanchored_regex(p, &format!("{path}.pattern")))
                .transpose()?;
            let key = a.key.clone();
            Ok(if a.action == ActionKind::Delete {
                Action::Delete { key, pattern }
            } else {
                Action::Hash { key, pattern }
            })
        }
        ActionKind::Extract => {
            not_for(has_source, "value")?;
            not_for(a.converted_type.is_some(), "converted_type")?;
            let Some(key) = &a.key else {
                return err("key", "required");
            };
            let Some(p) = &a.pattern else {
                return err("pattern", "required (a regex with named groups)");
            };
            let pattern = unanchored_regex(p, &format!("{path}.pattern"))?;
            if pattern.capture_names().flatten().next().is_none() {
                return err(
                    "pattern",
                    "has no named group: nothing to extract (fix: (?P<name>...))",
                );
            }
            Ok(Action::Extract {
                key: key.clone(),
                pattern,
            })
        }
        ActionKind::Convert => {
            not_for(has_source, "value")?;
            not_for(a.pattern.is_some(), "pattern")?;
            let Some(key) = &a.key else {
                return err("key", "required");
            };
            let Some(to) = a.converted_type else {
                return err("converted_type", "required: int, double or string");
            };
            Ok(Action::Convert {
                key: key.clone(),
                to,
            })
        }
    }
}

impl Attributes {
    /// Builds the processor; errors name the key (relative to this processor's configuration).
    pub fn new(name: impl Into<String>, cfg: AttributesConfig) -> Result<Self, ConfigError> {
        if cfg.actions.is_empty() {
            return Err(ConfigError::new(
                "actions",
                "empty: the processor would do nothing",
            ));
        }
        let actions = cfg
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| compile_action(a, &format!("actions[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let hash_key = load_secret(
            cfg.hash_key_env.as_deref(),
            cfg.hash_key_file.as_ref(),
            "hash_key_env",
            "hash_key_file",
        )?;
        if hash_key.is_none() {
            if let Some(i) = cfg
                .actions
                .iter()
                .position(|a| a.action == ActionKind::Hash)
            {
                return Err(ConfigError::new(
                    format!("actions[{i}].action"),
                    "hash needs a secret key: set hash_key_env or hash_key_file",
                ));
            }
        }
        let include = cfg
            .include
            .as_ref()
            .map(|m| MatchProperties::compile(m, "include"))
            .transpose()?;
        let exclude = cfg
            .exclude
            .as_ref()
            .map(|m| MatchProperties::compile(m, "exclude"))
            .transpose()?;
        Ok(Self {
            name: name.into(),
            actions,
            include,
            exclude,
            hash_key,
        })
    }

    fn selected(&self, service: &str, span_name: &str, span_attrs: &[KeyValue]) -> bool {
        self.include
            .as_ref()
            .is_none_or(|m| m.matches(service, span_name, span_attrs))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|m| m.matches(service, span_name, span_attrs))
    }

    /// Applies the actions to one span's attributes.
    pub fn apply(&self, attributes: &mut Vec<KeyValue>, batch: &BatchContext<'_>) {
        for a in &self.actions {
            match a {
                Action::Set { key, kind, source } => {
                    let value = match source {
                        Source::Value(v) => Some(v.clone()),
                        Source::Attribute(from) => attrs::get(attributes, from).cloned(),
                        Source::Metadata(h) => {
                            let mut vals = batch.metadata.get_all(h);
                            vals.next().map(|first| {
                                let mut s = first.to_string();
                                for v in vals {
                                    s.push(';');
                                    s.push_str(v);
                                }
                                attrs::string_value(s)
                            })
                        }
                        Source::Tenant => Some(attrs::string_value(batch.tenant)),
                    };
                    let Some(value) = value else { continue };
                    let existing = attributes.iter_mut().find(|kv| kv.key == *key);
                    match (existing, kind) {
                        (Some(kv), ActionKind::Update | ActionKind::Upsert) => {
                            kv.value = Some(value)
                        }
                        (None, ActionKind::Insert | ActionKind::Upsert) => {
                            attributes.push(KeyValue {
                                key: key.clone(),
                                value: Some(value),
                                ..Default::default()
                            })
                        }
                        _ => {}
                    }
                }
                Action::Delete { key, pattern } => attributes.retain(|kv| {
                    !(key.as_deref() == Some(kv.key.as_str())
                        || pattern.as_ref().is_some_and(|p| p.is_match(&kv.key)))
                }),
                Action::Hash { key, pattern } => {
                    let Some(secret) = &self.hash_key else {
                        continue;
                    };
                    for kv in attributes.iter_mut() {
                        if key.as_deref() == Some(kv.key.as_str())
                            || pattern.as_ref().is_some_and(|p| p.is_match(&kv.key))
                        {
                            if let Some(v) = &kv.value {
                                if v.value.is_some() {
                                    kv.value = Some(attrs::string_value(keyed_hash(secret, v)));
                                }
                            }
                        }
                    }
                }
                Action::Extract { key, pattern } => {
                    let Some(text) = attrs::get_str(attributes, key) else {
                        continue;
                    };
                    let Some(caps) = pattern.captures(text) else {
                        continue;
                    };
                    let found: Vec<(String, String)> = pattern
                        .capture_names()
                        .flatten()
                        .filter_map(|n| caps.name(n).map(|m| (n.to_string(), m.as_str().into())))
                        .collect();
                    for (k, v) in found {
                        upsert(attributes, k, attrs::string_value(v));
                    }
                }
                Action::Convert { key, to } => {
                    if let Some(kv) = attributes.iter_mut().find(|kv| kv.key == *key) {
                        if let Some(v) = kv.value.as_ref().and_then(|v| convert(v, *to)) {
                            kv.value = Some(v);
                        }
                    }
                }
            }
        }
    }
}

/// What the actions may read from the batch.
pub struct BatchContext<'a> {
    pub tenant: &'a str,
    pub metadata: &'a clew_model::RequestMetadata,
}

fn upsert(attributes: &mut Vec<KeyValue>, key: String, value: AnyValue) {
    match attributes.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(value),
        None => attributes.push(KeyValue {
            key,
            value: Some(value),
            ..Default::default()
        }),
    }
}

/// HMAC-SHA256 of a value, lowercase hex (64 characters).
pub fn keyed_hash(secret: &[u8], value: &AnyValue) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        // HMAC takes keys of any length; never reached.
        return String::new();
    };
    match &value.value {
        Some(Value::StringValue(s)) => mac.update(s.as_bytes()),
        Some(Value::BytesValue(b)) => mac.update(b),
        _ => mac.update(attrs::to_text(value).as_bytes()),
    }
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(64);
    for b in tag.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn convert(v: &AnyValue, to: ConvertedType) -> Option<AnyValue> {
    let out = match (to, v.value.as_ref()?) {
        (ConvertedType::Int, Value::IntValue(_))
        | (ConvertedType::Double, Value::DoubleValue(_))
        | (ConvertedType::String, Value::StringValue(_)) => return None,
        (ConvertedType::Int, Value::StringValue(s)) => Value::IntValue(s.trim().parse().ok()?),
        (ConvertedType::Int, Value::DoubleValue(d)) => {
            if !d.is_finite() || *d >= i64::MAX as f64 || *d < i64::MIN as f64 {
                return None;
            }
            Value::IntValue(d.trunc() as i64)
        }
        (ConvertedType::Int, Value::BoolValue(b)) => Value::IntValue(i64::from(*b)),
        (ConvertedType::Double, Value::StringValue(s)) => {
            Value::DoubleValue(s.trim().parse().ok()?)
        }
        (ConvertedType::Double, Value::IntValue(i)) => Value::DoubleValue(*i as f64),
        (ConvertedType::Double, Value::BoolValue(b)) => Value::DoubleValue(f64::from(u8::from(*b))),
        (ConvertedType::String, _) => Value::StringValue(attrs::to_text(v)),
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}

impl Processor for Attributes {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, mut batch: SpanBatch) -> Result<ProcessOutcome, clew_model::SinkError> {
        let metadata = std::mem::take(&mut batch.metadata);
        let tenant = batch.tenant.clone();
        let cx = BatchContext {
            tenant: tenant.as_str(),
            metadata: &metadata,
        };
        let filtered = self.include.is_some() || self.exclude.is_some();
        for rs in &mut batch.resource_spans {
            let service = if filtered {
                attrs::service_name(rs.resource.as_ref()).to_string()
            } else {
                String::new()
            };
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if filtered && !self.selected(&service, &span.name, &span.attributes) {
                        continue;
                    }
                    self.apply(&mut span.attributes, &cx);
                }
            }
        }
        batch.metadata = metadata;
        Ok(ProcessOutcome::Forward(batch))
    }
}

#[cfg(test)]
mod context_tests {
    use super::*;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
    use clew_model::{RequestMetadata, Tenant};

    #[test]
    fn client_address_and_auth_subject_come_from_the_receivers_context_keys() {
        let cfg: AttributesConfig = serde_yaml::from_str(
            "{actions: [{key: client.address, action: insert, from_context: client.address},
                        {key: enduser.id, action: upsert, from_context: auth.subject},
                        {key: region, action: insert, from_context: metadata.X-Region}]}",
        )
        .unwrap();
        assert_eq!(
            cfg.metadata_keys_referenced(),
            vec![":client.address", ":auth.subject", "x-region"]
        );
        let p = Attributes::new("attributes", cfg).unwrap();
        let batch = SpanBatch::new(
            Tenant::new("acme").unwrap(),
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        )
        .with_metadata(RequestMetadata::new(vec![
            (":client.address".into(), "127.0.0.1".into()),
            (":auth.subject".into(), "ingest-bot".into()),
        ]));
        let ProcessOutcome::Forward(out) = p.process(batch).unwrap() else {
            panic!("not forwarded")
        };
        let attrs = &out.resource_spans[0].scope_spans[0].spans[0].attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| attrs::to_text(kv.value.as_ref().unwrap()))
        };
        assert_eq!(get("client.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("enduser.id").as_deref(), Some("ingest-bot"));
        assert_eq!(get("region"), None, "absent metadata sets nothing");
        // Other context names are still refused, naming what is supported.
        let bad: AttributesConfig =
            serde_yaml::from_str("{actions: [{key: a, action: insert, from_context: auth.token}]}")
                .unwrap();
        let err = Attributes::new("attributes", bad).err().unwrap();
        assert!(err.message.contains("client.address"), "{}", err.message);
    }
}
