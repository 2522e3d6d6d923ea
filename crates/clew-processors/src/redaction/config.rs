//! The `redaction` processor's configuration (see the module documentation of
//! [`crate::redaction`] for every key and its default) and the start-up error type.

use serde::Deserialize;

/// The crate's configuration error (`key` relative to the processor, e.g.
/// `custom_patterns[2].regex`; the caller prefixes `processors.<name>.`).
pub use crate::condition::ConfigError;

/// What happens to a value (or the part of it) a rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace the match with `****` (or with its keyed hash when `hash_function: hmac_sha256`).
    Mask,
    /// Replace the match with `hmac:<key id>:<16 hex>` (HMAC-SHA256 under the current key).
    Hash,
    /// Remove the whole attribute.
    Drop,
    /// Keep the first `truncate_keep` characters of the match, then `****`.
    Truncate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Drop => "drop",
            Action::Truncate => "truncate",
        }
    }
}

/// Verbosity of the summary attributes (the Collector's `summary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Summary {
    /// Counts and the key lists.
    Debug,
    /// Counts only.
    #[default]
    Info,
    /// Nothing.
    Silent,
}

/// The Collector's `hash_function`. Unkeyed `md5`/`sha1`/`sha3` are refused at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFunction {
    #[default]
    None,
    HmacSha256,
    Md5,
    Sha1,
    Sha3,
}

/// Where the processor applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Span,
    Resource,
    Event,
    Link,
}

/// An entry of `patterns`: a built-in's name, or `{name, action, keep}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PatternRef {
    Name(String),
    Spec(PatternSpec),
}

impl PatternRef {
    pub fn name(&self) -> &str {
        match self {
            PatternRef::Name(n) => n,
            PatternRef::Spec(s) => &s.name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    pub name: String,
    #[serde(default)]
    pub action: Option<Action>,
    /// Characters kept by `truncate` (default: the processor's `truncate_keep`).
    #[serde(default)]
    pub keep: Option<usize>,
}

/// An entry of `custom_patterns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// The `pattern` label of the metrics.
    pub name: String,
    /// A Rust `regex` expression. With a capture group named `redact`, only that group is
    /// replaced (e.g. `password=(?P<redact>[^&]+)`).
    pub regex: String,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub keep: Option<usize>,
}

/// One version of the hashing key: `{id, file}` or `{id, env}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashKeySource {
    pub id: String,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
}

/// Where the HMAC keys come from (`hash_key_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKeyOrigin {
    /// `hash_key_file` / `hash_key_env` / `hash_keys` (the default).
    #[default]
    Config,
    /// A random 32-byte secret per processor, generated once by `storage.encryption`'s key
    /// provider and stored only wrapped (under `{storage.path}/keys/secrets/`); versions added by
    /// `clew keys rotate-secret <processor>`. Clew resolves it at start-up and hands the keys in
    /// ([`super::Redaction::with_hash_keys`]).
    KeyProvider,
}

/// The `redaction` processor's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    pub allow_all_keys: bool,
    pub allowed_keys: Vec<String>,
    pub ignored_keys: Vec<String>,
    pub blocked_key_patterns: Vec<String>,
    pub blocked_key_action: Option<Action>,
    pub blocked_values: Vec<String>,
    pub allowed_values: Vec<String>,
    pub summary: Summary,
    pub hash_function: HashFunction,
    pub action: Action,
    pub truncate_keep: usize,
    pub patterns: Vec<PatternRef>,
    pub custom_patterns: Vec<CustomPattern>,
    pub hash_key_file: Option<String>,
    pub hash_key_env: Option<String>,
    pub hash_key_id: Option<String>,
    pub hash_keys: Vec<HashKeySource>,
    pub hash_key_source: HashKeyOrigin,
    pub span_names: bool,
    pub sql: bool,
    pub sql_keys: Vec<String>,
    pub scope: Vec<ScopeKind>,
}

/// Attribute keys whose values `sql: true` normalizes.
pub const DEFAULT_SQL_KEYS: [&str; 2] = ["db.statement", "db.query.text"];

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            allow_all_keys: false,
            allowed_keys: Vec::new(),
            ignored_keys: Vec::new(),
            blocked_key_patterns: Vec::new(),
            blocked_key_action: None,
            blocked_values: Vec::new(),
            allowed_values: Vec::new(),
            summary: Summary::Info,
            hash_function: HashFunction::None,
            action: Action::Mask,
            truncate_keep: 4,
            patterns: Vec::new(),
            custom_patterns: Vec::new(),
            hash_key_file: None,
            hash_key_env: None,
            hash_key_id: None,
            hash_keys: Vec::new(),
            hash_key_source: HashKeyOrigin::Config,
            span_names: false,
            sql: false,
            sql_keys: DEFAULT_SQL_KEYS.iter().map(|s| s.to_string()).collect(),
            scope: vec![
                ScopeKind::Span,
                ScopeKind::Resource,
                ScopeKind::Event,
                ScopeKind::Link,
            ],
        }
    }
}
