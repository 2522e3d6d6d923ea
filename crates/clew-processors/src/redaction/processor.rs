//! The [`Redaction`] processor: compiled rules, the attribute walk, summary attributes, metrics.

use super::config::{
    Action, ConfigError, HashFunction, HashKeySource, PatternRef, RedactionConfig, ScopeKind,
    Summary,
};
use super::memo::{Memo, MAX_TEXT};
use super::patterns::{builtin_names, candidates, Matcher, Trigger, Validator, BUILTINS};
use super::scan::{LiteralPrefilter, Scan};
use super::sql;
use clew_model::attrs;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::{SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Summary attribute names, as the OpenTelemetry Collector's redaction processor writes them.
pub const REDACTED_KEYS: &str = "redaction.redacted.keys";
pub const REDACTED_COUNT: &str = "redaction.redacted.count";
pub const MASKED_KEYS: &str = "redaction.masked.keys";
pub const MASKED_COUNT: &str = "redaction.masked.count";
pub const ALLOWED_KEYS: &str = "redaction.allowed.keys";
pub const ALLOWED_COUNT: &str = "redaction.allowed.count";
pub const IGNORED_COUNT: &str = "redaction.ignored.count";

/// What a masked match becomes.
pub const MASK: &str = "****";
/// Prefix of keyed hashes: `hmac:<key id>:<16 hex>`.
pub const HASH_PREFIX: &str = "hmac:";
/// Minimum hashing key length in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// Nesting depth (arrays in maps in arrays…) below which a nested value is masked whole.
pub const MAX_DEPTH: usize = 16;

type Labels = Vec<(String, String)>;

/// `clew_redaction_values_total{processor, pattern, action}` and
/// `clew_redaction_dropped_attributes_total{processor, reason}`. Share one instance between all
/// `redaction` processors and register it once.
#[derive(Clone, Default)]
pub struct RedactionMetrics {
    values: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
}

impl RedactionMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_redaction_values",
            "Values (or span names) changed or dropped by a redaction rule, by processor, pattern and action",
            self.values.clone(),
        );
        r.register(
            "clew_redaction_dropped_attributes",
            "Attributes removed by redaction processors (reason: not_allowed, drop_action)",
            self.dropped.clone(),
        );
    }

    fn values_counter(&self, processor: &str, pattern: &str, action: Action) -> Counter {
        self.values
            .get_or_create(&vec![
                ("processor".into(), processor.into()),
                ("pattern".into(), pattern.into()),
                ("action".into(), action.as_str().into()),
            ])
            .clone()
    }

    fn dropped_counter(&self, processor: &str, reason: &str) -> Counter {
        self.dropped
            .get_or_create(&vec![
                ("processor".into(), processor.into()),
                ("reason".into(), reason.into()),
            ])
            .clone()
    }

    /// Current value of `clew_redaction_values_total` for these labels.
    pub fn values(&self, processor: &str, pattern: &str, action: Action) -> u64 {
        self.values_counter(processor, pattern, action).get()
    }

    /// Current value of `clew_redaction_dropped_attributes_total` for these labels.
    pub fn dropped(&self, processor: &str, reason: &str) -> u64 {
        self.dropped_counter(processor, reason).get()
    }
}

/// One version of the hashing key. Outputs name the key id, so a rotation is visible in the data.
#[derive(Clone)]
pub struct HashKey {
    id: String,
    mac: Hmac<Sha256>,
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HashKey {
    /// A key version: `id` is 1–32 of `[A-Za-z0-9._-]`; the secret at least [`MIN_KEY_BYTES`].
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Result<Self, String> {
        let id = id.into();
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "key id {id:?} must be 1-32 characters of [A-Za-z0-9._-] (it is written into every hash)"
            ));
        }
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes, at least {MIN_KEY_BYTES} are needed (fix: `head -c 32 /dev/urandom | base64 > key`)",
                secret.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(Self { id, mac })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `hmac:<id>:` + the first 64 bits of HMAC-SHA256(key, text), hex.
    pub fn pseudonym(&self, text: &str) -> String {
        let mut out = String::with_capacity(HASH_PREFIX.len() + self.id.len() + 17);
        self.pseudonym_into(text, &mut out);
        out
    }

    fn pseudonym_into(&self, text: &str, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.mac.clone();
        mac.update(text.as_bytes());
        let tag = mac.finalize().into_bytes();
        out.push_str(HASH_PREFIX);
        out.push_str(&self.id);
        out.push(':');
        for b in tag.iter().take(8) {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Exact key names. Small sets (the usual case) are scanned linearly, comparing lengths first,
/// which beats hashing every key of every span.
#[derive(Debug, Default)]
struct KeySet {
    small: Vec<String>,
    large: HashSet<String>,
}

impl KeySet {
    fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut small: Vec<String> = Vec::new();
        for k in keys {
            if !small.iter().any(|s| s == k) {
                small.push(k.to_string());
            }
        }
        if small.len() > 8 {
            return Self {
                large: small.into_iter().collect(),
                small: Vec::new(),
            };
        }
        Self {
            small,
            large: HashSet::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.small.is_empty() && self.large.is_empty()
    }

    fn contains(&self, key: &str) -> bool {
        if self.large.is_empty() {
            self.small
                .iter()
                .any(|s| s.len() == key.len() && s.as_str() == key)
        } else {
            self.large.contains(key)
        }
    }
}

/// What the key rules decide for one attribute key: a function of the key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyClass {
    ignored: bool,
    allowed: bool,
    blocked: bool,
    sql: bool,
}

/// What one batch remembers: key decisions (keys repeat across its spans, and a
/// `blocked_key_patterns` regex per attribute was the processor's largest per-key cost) and the
/// string values and span names the value rules left alone (most repeat: methods, routes, SQL
/// with placeholders, user agents). See [`super::memo`].
struct BatchMemo {
    /// Only when a key regex decides; the exact-name sets are cheaper than a lookup.
    keys_on: bool,
    keys: Memo<KeyClass>,
    clean: Memo<()>,
}

/// [`BatchMemo::clean`] kinds: a value is clean under the value rules, or (SQL keys) under SQL
/// normalization and then the value rules.
const CLEAN_TEXT: u8 = 0;
const CLEAN_SQL: u8 = 1;

impl BatchMemo {
    fn new(keys_on: bool) -> Self {
        Self {
            keys_on,
            keys: Memo::new(),
            clean: Memo::new(),
        }
    }

    fn class(&mut self, r: &Redaction, key: &str) -> KeyClass {
        if !self.keys_on {
            return r.key_class(key);
        }
        if let Some(c) = self.keys.get(0, key) {
            return c;
        }
        let c = r.key_class(key);
        self.keys.insert(0, key, c);
        c
    }
}

/// A compiled value rule.
struct ValueRule {
    matcher: Matcher,
    action: Action,
    keep: usize,
    /// Built-ins only: their bit in [`candidates`] and their trigger (together the precheck).
    gate: Option<(u32, Option<Trigger>)>,
    counter: Counter,
}

/// What a rule or walk decided for a value.
enum Verdict {
    Keep,
    Changed(String),
    Drop,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Walk {
    Unchanged,
    Changed,
    Drop,
}

/// The `redaction` processor (see [`crate::redaction`] for its configuration).
pub struct Redaction {
    name: String,
    allow_all_keys: bool,
    allowed: KeySet,
    ignored: KeySet,
    allowed_values: Option<AnyOf>,
    blocked_keys: Option<AnyOf>,
    blocked_key_action: Action,
    blocked_key_counter: Counter,
    user_set: Option<AnyOf>,
    user_rules: Vec<ValueRule>,
    builtin_rules: Vec<ValueRule>,
    hash_masks: bool,
    keep: usize,
    keys: Vec<HashKey>,
    summary: Summary,
    span_names: bool,
    sql_keys: Option<KeySet>,
    sql_counter: Counter,
    scope_span: bool,
    scope_resource: bool,
    scope_event: bool,
    scope_link: bool,
    dropped_not_allowed: Counter,
    dropped_by_action: Counter,
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redaction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

const REGEX_FIX: &str = "(fix: it is a Rust `regex` expression (no look-around or back-references); escape `.`, `+`, `(`, `[` with `\\`, and quote the YAML string with single quotes)";

fn compile(key: &str, re: &str) -> Result<Regex, ConfigError> {
    RegexBuilder::new(re).build().map_err(|e| {
        ConfigError::new(
            key,
            format!("invalid regex {re:?}: {} {REGEX_FIX}", one_line(&e)),
        )
    })
}

/// Several regexes: `is_match` on one combined alternation (faster than a `RegexSet`, which
/// lacks some of `Regex`'s prefilters), `matches` on the set.
struct AnyOf {
    combined: Option<Regex>,
    set: RegexSet,
    /// Skips the regex search when no prefix literal of any pattern occurs.
    prefilter: Option<LiteralPrefilter>,
}

impl AnyOf {
    /// `None` for an empty list; errors name `field[i]` (checked one by one first).
    fn build(field: &str, res: &[String]) -> Result<Option<AnyOf>, ConfigError> {
        if res.is_empty() {
            return Ok(None);
        }
        for (i, re) in res.iter().enumerate() {
            compile(&format!("{field}[{i}]"), re)?;
        }
        let set = RegexSetBuilder::new(res)
            .build()
            .map_err(|e| ConfigError::new(field, format!("{} {REGEX_FIX}", one_line(&e))))?;
        // Fails only on duplicate group names across patterns: then the set answers alone.
        let alternation: Vec<String> = res.iter().map(|r| format!("(?:{r})")).collect();
        let combined = Regex::new(&alternation.join("|")).ok();
        Ok(Some(AnyOf {
            combined,
            set,
            prefilter: LiteralPrefilter::build(res),
        }))
    }

    fn is_match(&self, s: &str) -> bool {
        if self.prefilter.as_ref().is_some_and(|p| !p.may_match(s)) {
            return false;
        }
        match &self.combined {
            Some(r) => r.is_match(s),
            None => self.set.is_match(s),
        }
    }
}

fn one_line(e: &regex::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn load_secret(key: &str, file: Option<&str>, env: Option<&str>) -> Result<Vec<u8>, ConfigError> {
    let mut raw = match (file, env) {
        (Some(path), None) => std::fs::read(path).map_err(|e| {
            ConfigError::new(
                format!("{key}file"),
                format!("cannot read the hashing key {path:?}: {e} (fix: create it, e.g. `head -c 32 /dev/urandom | base64 > {path}`, readable by Clew only)"),
            )
        })?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| {
                ConfigError::new(
                    format!("{key}env"),
                    format!("environment variable {var:?} is not set or not UTF-8 (fix: export it with at least {MIN_KEY_BYTES} random bytes, e.g. base64 of 32)"),
                )
            })?
            .into_bytes(),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key.trim_end_matches('.').trim_end_matches('_'),
                "both a file and an env variable given (fix: keep one)",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                key.trim_end_matches('.'),
                "neither `file` nor `env` given (fix: add one)",
            ))
        }
    };
    while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
        raw.pop();
    }
    Ok(raw)
}

fn load_keys(cfg: &RedactionConfig) -> Result<Vec<HashKey>, ConfigError> {
    // `hash_key_source: key_provider`: the keys are not in the configuration (see keys.rs).
    if cfg.hash_key_source == super::config::HashKeyOrigin::KeyProvider {
        return Err(super::keys::not_in_config(cfg));
    }
    let single = cfg.hash_key_file.is_some() || cfg.hash_key_env.is_some();
    if single && !cfg.hash_keys.is_empty() {
        return Err(ConfigError::new(
            "hash_keys",
            "given together with `hash_key_file`/`hash_key_env` (fix: list every version under `hash_keys`, current first)",
        ));
    }
    if single {
        let secret = load_secret(
            "hash_key_",
            cfg.hash_key_file.as_deref(),
            cfg.hash_key_env.as_deref(),
        )?;
        let id = cfg.hash_key_id.clone().unwrap_or_else(|| "k1".into());
        let key = HashKey::new(id, &secret).map_err(|m| {
            let k = if cfg.hash_key_file.is_some() {
                "hash_key_file"
            } else {
                "hash_key_env"
            };
            ConfigError::new(k, m)
        })?;
        return Ok(vec![key]);
    }
    if cfg.hash_key_id.is_some() {
        return Err(ConfigError::new(
            "hash_key_id",
            "set without `hash_key_file` or `hash_key_env` (fix: add one, or use `hash_keys`)",
        ));
    }
    let mut keys: Vec<HashKey> = Vec::new();
    for (i, HashKeySource { id, file, env }) in cfg.hash_keys.iter().enumerate() {
        let prefix = format!("hash_keys[{i}].");
        let secret = load_secret(&prefix, file.as_deref(), env.as_deref())?;
        let key = HashKey::new(id.clone(), &secret)
            .map_err(|m| ConfigError::new(format!("hash_keys[{i}]"), m))?;
        if keys.iter().any(|k| k.id == key.id) {
            return Err(ConfigError::new(
                format!("hash_keys[{i}].id"),
                format!("key id {id:?} is listed twice (fix: give every key version its own id)"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

impl Redaction {
    /// Builds the processor, validating everything: regexes compile, pattern names exist, a key
    /// is present when something hashes. Keys are read from `hash_key_file` / `hash_key_env` /
    /// `hash_keys`.
    pub fn new(
        name: String,
        cfg: RedactionConfig,
        metrics: &RedactionMetrics,
    ) -> Result<Redaction, ConfigError> {
        let keys = load_keys(&cfg)?;
        Self::build(name, cfg, metrics, keys)
    }

    /// Like [`Redaction::new`] with the hashing keys supplied by the caller (e.g. from the key
    /// provider), current first; they replace any key the configuration names.
    pub fn with_hash_keys(
        name: String,
        cfg: RedactionConfig,
        metrics: &RedactionMetrics,
        keys: Vec<HashKey>,
    ) -> Result<Redaction, ConfigError> {
        Self::build(name, cfg, metrics, keys)
    }

    fn build(
        name: String,
        cfg: RedactionConfig,
        metrics: &RedactionMetrics,
        keys: Vec<HashKey>,
    ) -> Result<Redaction, ConfigError> {
        let hash_masks = match cfg.hash_function {
            HashFunction::None => false,
            HashFunction::HmacSha256 => true,
            other => {
                let f = match other {
                    HashFunction::Md5 => "md5",
                    HashFunction::Sha1 => "sha1",
                    _ => "sha3",
                };
                return Err(ConfigError::new(
                    "hash_function",
                    format!("unkeyed `{f}` is not supported: hashes of e-mails, card numbers or phone numbers are reversed by trying every value (fix: `hash_function: hmac_sha256` with `hash_key_file`, `hash_key_env` or `hash_keys`)"),
                ));
            }
        };
        // Every place that may hash, to name it if there is no key.
        let mut needs_key: Option<String> = hash_masks.then(|| "hash_function".to_string());
        let mut note = |key: String, action: Action| {
            let hashes = action == Action::Hash || (action == Action::Mask && hash_masks);
            if hashes && needs_key.is_none() {
                needs_key = Some(key);
            }
        };

        let allowed_values = AnyOf::build("allowed_values", &cfg.allowed_values)?;
        let blocked_keys = AnyOf::build("blocked_key_patterns", &cfg.blocked_key_patterns)?;
        let blocked_key_action = cfg.blocked_key_action.unwrap_or(cfg.action);
        if blocked_keys.is_some() {
            note(
                if cfg.blocked_key_action.is_some() {
                    "blocked_key_action"
                } else {
                    "action"
                }
                .into(),
                blocked_key_action,
            );
        }

        let mut user_rules = Vec::new();
        let mut user_res = Vec::new();
        for (i, re) in cfg.blocked_values.iter().enumerate() {
            let regex = compile(&format!("blocked_values[{i}]"), re)?;
            note("action".into(), cfg.action);
            user_rules.push(ValueRule {
                matcher: Matcher::new(regex, Validator::None),
                action: cfg.action,
                keep: cfg.truncate_keep,
                gate: None,
                counter: metrics.values_counter(&name, "blocked_values", cfg.action),
            });
            user_res.push(re.clone());
        }
        let mut custom_names: HashSet<&str> = HashSet::new();
        for (i, cp) in cfg.custom_patterns.iter().enumerate() {
            if cp.name.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("custom_patterns[{i}].name"),
                    "empty (fix: name the pattern; it is the `pattern` label of the metrics)",
                ));
            }
            if BUILTINS.iter().any(|b| b.name == cp.name) || !custom_names.insert(&cp.name) {
                return Err(ConfigError::new(
                    format!("custom_patterns[{i}].name"),
                    format!(
                        "{:?} is already used by another pattern (fix: pick a unique name)",
                        cp.name
                    ),
                ));
            }
            let regex = compile(&format!("custom_patterns[{i}].regex"), &cp.regex)?;
            let action = cp.action.unwrap_or(cfg.action);
            note(
                if cp.action.is_some() {
                    format!("custom_patterns[{i}].action")
                } else {
                    "action".into()
                },
                action,
            );
            user_rules.push(ValueRule {
                matcher: Matcher::new(regex, Validator::None),
                action,
                keep: cp.keep.unwrap_or(cfg.truncate_keep),
                gate: None,
                counter: metrics.values_counter(&name, &cp.name, action),
            });
            user_res.push(cp.regex.clone());
        }
        // Indexes in the set are rule indexes (blocked_values first, then custom_patterns).
        let user_set = AnyOf::build("custom_patterns", &user_res)?;

        // Built-ins: validate the names, then compile in the canonical (specific-first) order.
        let mut chosen: Vec<Option<(Action, usize, String)>> = vec![None; BUILTINS.len()];
        for (i, p) in cfg.patterns.iter().enumerate() {
            let Some(pos) = BUILTINS.iter().position(|b| b.name == p.name()) else {
                return Err(ConfigError::new(
                    format!("patterns[{i}]"),
                    format!(
                        "unknown pattern {:?} (known: {}; fix: use one of these, or add it under `custom_patterns`)",
                        p.name(),
                        builtin_names().join(", ")
                    ),
                ));
            };
            if chosen[pos].is_some() {
                return Err(ConfigError::new(
                    format!("patterns[{i}]"),
                    format!("{:?} is listed twice (fix: keep one entry)", p.name()),
                ));
            }
            let (action, keep, key) = match p {
                PatternRef::Name(_) => (cfg.action, cfg.truncate_keep, "action".to_string()),
                PatternRef::Spec(s) => (
                    s.action.unwrap_or(cfg.action),
                    s.keep.unwrap_or(cfg.truncate_keep),
                    if s.action.is_some() {
                        format!("patterns[{i}].action")
                    } else {
                        "action".into()
                    },
                ),
            };
            chosen[pos] = Some((action, keep, key));
        }
        let mut builtin_rules = Vec::new();
        for (i, (b, c)) in BUILTINS.iter().zip(chosen).enumerate() {
            let Some((action, keep, key)) = c else {
                continue;
            };
            note(key, action);
            let regex = compile(&format!("patterns.{}", b.name), b.regex)?;
            builtin_rules.push(ValueRule {
                matcher: Matcher::new(regex, b.validator).with_finder(b.finder),
                action,
                keep,
                gate: Some((1 << i, b.trigger)),
                counter: metrics.values_counter(&name, b.name, action),
            });
        }

        if let Some(key) = needs_key {
            if keys.is_empty() {
                return Err(ConfigError::new(
                    key,
                    "hashing needs a key (fix: set `hash_key_file` or `hash_key_env` to at least 16 random bytes, or list versions under `hash_keys`)",
                ));
            }
        }
        if cfg.scope.is_empty() {
            return Err(ConfigError::new(
                "scope",
                "empty: the processor would change nothing (fix: remove `scope` to apply everywhere, or list some of span, resource, event, link)",
            ));
        }

        // As in the Collector: a later redaction processor keeps an earlier one's summary.
        let allowed = KeySet::new(cfg.allowed_keys.iter().map(String::as_str).chain([
            REDACTED_KEYS,
            REDACTED_COUNT,
            MASKED_KEYS,
            MASKED_COUNT,
            IGNORED_COUNT,
        ]));
        Ok(Redaction {
            blocked_key_counter: metrics.values_counter(
                &name,
                "blocked_key_patterns",
                blocked_key_action,
            ),
            sql_counter: metrics.values_counter(&name, "sql", Action::Mask),
            dropped_not_allowed: metrics.dropped_counter(&name, "not_allowed"),
            dropped_by_action: metrics.dropped_counter(&name, "drop_action"),
            allow_all_keys: cfg.allow_all_keys,
            allowed,
            ignored: KeySet::new(cfg.ignored_keys.iter().map(String::as_str)),
            allowed_values,
            blocked_keys,
            blocked_key_action,
            user_set,
            user_rules,
            builtin_rules,
            hash_masks,
            keep: cfg.truncate_keep,
            keys,
            summary: cfg.summary,
            span_names: cfg.span_names,
            sql_keys: cfg
                .sql
                .then(|| KeySet::new(cfg.sql_keys.iter().map(String::as_str))),
            scope_span: cfg.scope.contains(&ScopeKind::Span),
            scope_resource: cfg.scope.contains(&ScopeKind::Resource),
            scope_event: cfg.scope.contains(&ScopeKind::Event),
            scope_link: cfg.scope.contains(&ScopeKind::Link),
            name,
        })
    }

    /// The keyed hash of `text` under every configured key version, current first: what a search
    /// for a pseudonymized value must look for across a rotation.
    pub fn pseudonyms(&self, text: &str) -> Vec<String> {
        self.keys.iter().map(|k| k.pseudonym(text)).collect()
    }

    /// Applies the value rules (patterns, custom patterns, `blocked_values`) to a free text.
    /// `None`: unchanged; `Some("")` never happens — a `drop` rule gives `Some("****")`.
    pub fn redact_text(&self, text: &str) -> Option<String> {
        match self.redact_str(text) {
            Verdict::Keep => None,
            Verdict::Changed(s) => Some(s),
            Verdict::Drop => Some(MASK.to_string()),
        }
    }

    fn has_value_rules(&self) -> bool {
        self.user_set.is_some() || !self.builtin_rules.is_empty()
    }

    fn replacement(&self, action: Action, keep: usize, text: &str, out: &mut String) {
        let hash = action == Action::Hash || (action == Action::Mask && self.hash_masks);
        if hash {
            match self.keys.first() {
                Some(k) => k.pseudonym_into(text, out),
                None => out.push_str(MASK),
            }
            return;
        }
        if action == Action::Truncate {
            if let Some((idx, _)) = text.char_indices().nth(keep) {
                out.push_str(text.get(..idx).unwrap_or(""));
            }
        }
        out.push_str(MASK);
    }

    fn apply_rule(&self, rule: &ValueRule, hay: &str) -> Verdict {
        let mut out: Option<String> = None;
        let mut last = 0;
        let mut drop = false;
        rule.matcher.for_each_match(hay, |r| {
            if drop || r.is_empty() || r.start < last {
                return;
            }
            if rule.action == Action::Drop {
                drop = true;
                return;
            }
            let o = out.get_or_insert_with(|| String::with_capacity(hay.len() + 16));
            o.push_str(hay.get(last..r.start).unwrap_or(""));
            self.replacement(rule.action, rule.keep, hay.get(r.clone()).unwrap_or(""), o);
            last = r.end;
        });
        if drop {
            rule.counter.inc();
            return Verdict::Drop;
        }
        match out {
            Some(mut o) => {
                o.push_str(hay.get(last..).unwrap_or(""));
                rule.counter.inc();
                Verdict::Changed(o)
            }
            None => Verdict::Keep,
        }
    }

    fn redact_str(&self, s: &str) -> Verdict {
        let mut cur: Option<String> = None;
        if let Some(set) = &self.user_set {
            if set.is_match(s) {
                for idx in set.set.matches(s).iter() {
                    let Some(rule) = self.user_rules.get(idx) else {
                        continue;
                    };
                    let hay = cur.as_deref().unwrap_or(s);
                    match self.apply_rule(rule, hay) {
                        Verdict::Keep => {}
                        Verdict::Changed(n) => cur = Some(n),
                        Verdict::Drop => return Verdict::Drop,
                    }
                }
            }
        }
        if !self.builtin_rules.is_empty() {
            // The scan describes the text the prechecks see: redone after a rule changed it
            // (rare: only values that held something).
            let mut scan = Scan::of(cur.as_deref().unwrap_or(s));
            let mut allowed = candidates(&scan);
            for rule in &self.builtin_rules {
                if allowed == 0 {
                    break;
                }
                let hay = cur.as_deref().unwrap_or(s);
                if let Some((bit, trigger)) = rule.gate {
                    if allowed & bit == 0 || trigger.is_some_and(|t| !t(&scan, hay)) {
                        continue;
                    }
                }
                match self.apply_rule(rule, hay) {
                    Verdict::Keep => {}
                    Verdict::Changed(n) => {
                        scan = Scan::of(&n);
                        allowed = candidates(&scan);
                        cur = Some(n);
                    }
                    Verdict::Drop => return Verdict::Drop,
                }
            }
        }
        match cur {
            Some(c) => Verdict::Changed(c),
            None => Verdict::Keep,
        }
    }

    /// The key rule's action on a whole value (any type): non-strings are rendered as text first.
    fn apply_key_action(&self, v: &mut AnyValue) -> Walk {
        self.blocked_key_counter.inc();
        if self.blocked_key_action == Action::Drop {
            return Walk::Drop;
        }
        let text: Cow<'_, str> = match &v.value {
            Some(Value::StringValue(s)) => Cow::Borrowed(s.as_str()),
            _ => Cow::Owned(attrs::to_text(v)),
        };
        let mut out = String::new();
        self.replacement(self.blocked_key_action, self.keep, &text, &mut out);
        v.value = Some(Value::StringValue(out));
        Walk::Changed
    }

    fn key_class(&self, key: &str) -> KeyClass {
        KeyClass {
            ignored: !self.ignored.is_empty() && self.ignored.contains(key),
            allowed: self.allow_all_keys || self.allowed.contains(key),
            blocked: self.key_blocked(key),
            sql: self.sql_keys.as_ref().is_some_and(|k| k.contains(key)),
        }
    }

    fn key_blocked(&self, key: &str) -> bool {
        self.blocked_keys.as_ref().is_some_and(|s| s.is_match(key))
    }

    /// Value rules over a value: strings directly, arrays and maps element by element (nested
    /// map keys matching `blocked_key_patterns` get the key action). Numbers, booleans and bytes
    /// are left alone. A `drop` anywhere inside drops the whole attribute.
    fn walk(&self, v: &mut AnyValue, depth: usize) -> Walk {
        match &mut v.value {
            Some(Value::StringValue(s)) => match self.redact_str(s) {
                Verdict::Keep => Walk::Unchanged,
                Verdict::Changed(n) => {
                    *s = n;
                    Walk::Changed
                }
                Verdict::Drop => Walk::Drop,
            },
            Some(Value::ArrayValue(_)) | Some(Value::KvlistValue(_)) if depth >= MAX_DEPTH => {
                v.value = Some(Value::StringValue(MASK.to_string()));
                Walk::Changed
            }
            Some(Value::ArrayValue(a)) => {
                let mut res = Walk::Unchanged;
                for e in &mut a.values {
                    match self.walk(e, depth + 1) {
                        Walk::Drop => return Walk::Drop,
                        Walk::Changed => res = Walk::Changed,
                        Walk::Unchanged => {}
                    }
                }
                res
            }
            Some(Value::KvlistValue(kvs)) => {
                let mut res = Walk::Unchanged;
                for kv in &mut kvs.values {
                    let Some(inner) = kv.value.as_mut() else {
                        continue;
                    };
                    let r = if self.key_blocked(&kv.key) {
                        self.apply_key_action(inner)
                    } else {
                        self.walk(inner, depth + 1)
                    };
                    match r {
                        Walk::Drop => return Walk::Drop,
                        Walk::Changed => res = Walk::Changed,
                        Walk::Unchanged => {}
                    }
                }
                res
            }
            _ => Walk::Unchanged,
        }
    }

    /// Redacts one attribute list (of a resource, span, event or link) and adds the summary.
    fn process_attrs(&self, attrs: &mut Vec<KeyValue>, memo: &mut BatchMemo) {
        let debug = self.summary == Summary::Debug;
        let mut redacted: Vec<String> = Vec::new();
        let mut masked: Vec<String> = Vec::new();
        let mut allowed: Vec<String> = Vec::new();
        let (mut n_redacted, mut n_masked, mut n_allowed, mut n_ignored) = (0i64, 0i64, 0i64, 0i64);
        let value_rules = self.has_value_rules() || self.blocked_keys.is_some();
        let note = |list: &mut Vec<String>, n: &mut i64, key: &str| {
            *n += 1;
            if debug {
                list.push(key.to_string());
            }
        };
        attrs.retain_mut(|kv| {
            let class = memo.class(self, &kv.key);
            if class.ignored {
                n_ignored += 1;
                return true;
            }
            if !class.allowed {
                self.dropped_not_allowed.inc();
                note(&mut redacted, &mut n_redacted, &kv.key);
                return false;
            }
            let Some(val) = kv.value.as_mut() else {
                return true;
            };
            if let (Some(av), Some(Value::StringValue(s))) = (&self.allowed_values, &val.value) {
                if av.is_match(s) {
                    note(&mut allowed, &mut n_allowed, &kv.key);
                    return true;
                }
            }
            if class.blocked {
                return match self.apply_key_action(val) {
                    Walk::Drop => {
                        self.dropped_by_action.inc();
                        note(&mut redacted, &mut n_redacted, &kv.key);
                        false
                    }
                    _ => {
                        note(&mut masked, &mut n_masked, &kv.key);
                        true
                    }
                };
            }
            // A string the rules already left alone in this batch stays as it is.
            let clean_kind = if class.sql { CLEAN_SQL } else { CLEAN_TEXT };
            let remember = match &val.value {
                Some(Value::StringValue(s))
                    if (value_rules || class.sql) && s.len() <= MAX_TEXT =>
                {
                    if memo.clean.get(clean_kind, s).is_some() {
                        return true;
                    }
                    true
                }
                _ => false,
            };
            let mut changed = false;
            if let (true, Some(Value::StringValue(s))) = (class.sql, &mut val.value) {
                if let Cow::Owned(n) = sql::normalize(s) {
                    *s = n;
                    self.sql_counter.inc();
                    changed = true;
                }
            }
            if value_rules {
                match self.walk(val, 0) {
                    Walk::Drop => {
                        self.dropped_by_action.inc();
                        note(&mut redacted, &mut n_redacted, &kv.key);
                        return false;
                    }
                    Walk::Changed => changed = true,
                    Walk::Unchanged => {}
                }
            }
            if changed {
                note(&mut masked, &mut n_masked, &kv.key);
            } else if let (true, Some(Value::StringValue(s))) = (remember, &val.value) {
                memo.clean.insert(clean_kind, s, ());
            }
            true
        });
        if self.summary == Summary::Silent {
            return;
        }
        add_summary(
            attrs,
            debug,
            redacted,
            n_redacted,
            Some(REDACTED_KEYS),
            REDACTED_COUNT,
        );
        add_summary(
            attrs,
            debug,
            masked,
            n_masked,
            Some(MASKED_KEYS),
            MASKED_COUNT,
        );
        add_summary(
            attrs,
            debug,
            allowed,
            n_allowed,
            Some(ALLOWED_KEYS),
            ALLOWED_COUNT,
        );
        add_summary(attrs, debug, Vec::new(), n_ignored, None, IGNORED_COUNT);
    }
}

/// The Collector's `addMetaAttrs`: nothing for a zero count; with `debug` the sorted,
/// comma-joined key list (merged with an existing one); the count (added to an existing one).
fn add_summary(
    attrs: &mut Vec<KeyValue>,
    debug: bool,
    mut keys: Vec<String>,
    count: i64,
    keys_attr: Option<&str>,
    count_attr: &str,
) {
    if count == 0 {
        return;
    }
    if let (true, Some(ka)) = (debug, keys_attr) {
        if let Some(existing) = attrs::get_str(attrs, ka).filter(|s| !s.is_empty()) {
            keys.extend(existing.split(',').map(str::to_string));
        }
        keys.sort();
        put(attrs, ka, Value::StringValue(keys.join(",")));
    }
    let prev = match attrs::get(attrs, count_attr).and_then(|v| v.value.as_ref()) {
        Some(Value::IntValue(i)) => *i,
        _ => 0,
    };
    put(
        attrs,
        count_attr,
        Value::IntValue(prev.saturating_add(count)),
    );
}

fn put(attrs: &mut Vec<KeyValue>, key: &str, v: Value) {
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = Some(AnyValue { value: Some(v) }),
        None => attrs.push(attrs::kv(key, v)),
    }
}

impl Processor for Redaction {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, mut batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        let memo = &mut BatchMemo::new(self.blocked_keys.is_some());
        for rs in &mut batch.resource_spans {
            if self.scope_resource {
                if let Some(r) = rs.resource.as_mut() {
                    self.process_attrs(&mut r.attributes, memo);
                }
            }
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if self.scope_span {
                        self.process_attrs(&mut span.attributes, memo);
                    }
                    if self.span_names
                        && self.has_value_rules()
                        && memo.clean.get(CLEAN_TEXT, &span.name).is_none()
                    {
                        match self.redact_str(&span.name) {
                            Verdict::Keep => memo.clean.insert(CLEAN_TEXT, &span.name, ()),
                            Verdict::Changed(n) => span.name = n,
                            Verdict::Drop => span.name = MASK.to_string(),
                        }
                    }
                    if self.scope_event {
                        for e in &mut span.events {
                            self.process_attrs(&mut e.attributes, memo);
                        }
                    }
                    if self.scope_link {
                        for l in &mut span.links {
                            self.process_attrs(&mut l.attributes, memo);
                        }
                    }
                }
            }
        }
        Ok(ProcessOutcome::Forward(batch))
    }
}
