//! The `baggage_policy` processor: span and resource attributes that came from baggage pass the
//! same allowlist and pseudonymization that `clew-propagation`'s
//! [`BaggagePolicy`](clew_propagation::policy::BaggagePolicy) applies at trust boundaries, so a
//! client that leaks a raw user id in baggage never gets it stored.
//!
//! ## Configuration
//!
//! ```yaml
//! baggage_policy:
//!   baggage_keys: [user.id, tenant.tier]   # attributes that are baggage, key = baggage key
//!   baggage_prefix: "baggage."             # and/or: attributes `baggage.<baggage key>`
//!   allowed_keys: [tenant.tier, "app.*"]   # baggage keys kept in clear; every other is dropped
//!   pseudonymize: [user.id]                # baggage keys kept only as keyed pseudonyms
//!   secret_env: CLEW_BAGGAGE_SECRET        # or secret_file: /run/secrets/baggage (required
//!                                          #   when `pseudonymize` is not empty)
//!   max_value_length: 256                  # optional: longer values are dropped (bytes)
//! ```
//!
//! * **Which attributes are baggage.** The OTel SDKs' baggage span processors copy each baggage
//!   entry onto the span as an attribute with the key unchanged; list those keys in
//!   `baggage_keys` (patterns: exact or `prefix*`, e.g. `user.*`). SDKs configured to prefix the
//!   keys are covered by `baggage_prefix`: any attribute starting with it is baggage, its
//!   baggage key being the rest. At least one of the two is required. Both span and resource
//!   attributes are checked; other attributes are never touched.
//! * **Allowlist.** `allowed_keys` and `pseudonymize` are patterns as in `clew-propagation`
//!   ([`KeyPattern`]: exact, or a prefix ending in `*`), matched against the *baggage* key. A
//!   baggage attribute matching neither is dropped (deny by default, like the SDK side).
//! * **Pseudonymization.** A value whose key matches `pseudonymize` is replaced by
//!   [`Pseudonymizer::pseudonymize`]`(baggage key, value)` — `h1:` and 32 hex digits — with the
//!   secret from `secret_env` (an environment variable) or `secret_file` (trailing newline
//!   removed). With the same secret as the SDKs' egress policy the pseudonyms are identical, so
//!   ids pseudonymized by a service and ids pseudonymized here join. A value that already is a
//!   pseudonym (`h1:` + 32 lowercase hex digits, e.g. pseudonymized upstream by the SDK policy)
//!   is kept as it is, not hashed twice (and not subject to `max_value_length`).
//! * **Values.** Baggage values are strings; numbers and booleans are checked in their text form
//!   (`4242`), so `user.id = 4242` as an int gets the same pseudonym as the string `"4242"`.
//!   Arrays, maps, bytes and empty values cannot have come from baggage and are dropped when
//!   their key is baggage. `max_value_length` applies to the clear value; longer values are
//!   dropped, as the SDK side's `MaxLen` validator does.
//!
//! ## Metrics
//!
//! `clew_baggage_policy_dropped_attributes_total{processor, reason}` (`reason`: `not_allowed`,
//! `too_long`, `bad_type`) and `clew_baggage_policy_pseudonymized_attributes_total{processor}`.

use std::path::PathBuf;

use clew_model::attrs;
use clew_model::otlp::common::{any_value::Value, KeyValue};
use clew_model::{SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_propagation::policy::{KeyPattern, Pseudonymizer, PSEUDONYM_PREFIX};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::condition::{load_secret, ConfigError};

/// The processor's configuration; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaggagePolicyConfig {
    #[serde(default)]
    pub baggage_keys: Vec<String>,
    #[serde(default)]
    pub baggage_prefix: Option<String>,
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    #[serde(default)]
    pub pseudonymize: Vec<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub max_value_length: Option<usize>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    processor: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessorLabel {
    processor: String,
}

/// The processor's metrics; register once, share between processors.
#[derive(Clone, Default)]
pub struct BaggagePolicyMetrics {
    dropped: Family<DropLabels, Counter>,
    pseudonymized: Family<ProcessorLabel, Counter>,
}

impl BaggagePolicyMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_baggage_policy_dropped_attributes",
            "Attributes that came from baggage dropped by the baggage policy, by reason (not_allowed, too_long, bad_type)",
            self.dropped.clone(),
        );
        r.register(
            "clew_baggage_policy_pseudonymized_attributes",
            "Attributes that came from baggage replaced by their keyed pseudonym",
            self.pseudonymized.clone(),
        );
    }

    /// Attributes dropped by `processor` for `reason` so far.
    pub fn dropped(&self, processor: &str, reason: &str) -> u64 {
        self.dropped
            .get_or_create(&DropLabels {
                processor: processor.into(),
                reason: reason.into(),
            })
            .get()
    }

    /// Attributes pseudonymized by `processor` so far.
    pub fn pseudonymized(&self, processor: &str) -> u64 {
        self.pseudonymized
            .get_or_create(&ProcessorLabel {
                processor: processor.into(),
            })
            .get()
    }
}

/// The `baggage_policy` processor.
pub struct BaggagePolicyProcessor {
    name: String,
    keys: Vec<KeyPattern>,
    prefix: Option<String>,
    allowed: Vec<KeyPattern>,
    pseudonymize: Vec<KeyPattern>,
    pseudonymizer: Option<Pseudonymizer>,
    max_value_length: Option<usize>,
    counters: Counters,
    metrics: BaggagePolicyMetrics,
}

impl std::fmt::Debug for BaggagePolicyProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaggagePolicyProcessor")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("prefix", &self.prefix)
            .field("allowed", &self.allowed)
            .field("pseudonymize", &self.pseudonymize)
            .field("max_value_length", &self.max_value_length)
            .finish_non_exhaustive()
    }
}

struct Counters {
    not_allowed: Counter,
    too_long: Counter,
    bad_type: Counter,
    pseudonymized: Counter,
}

impl Counters {
    fn new(m: &BaggagePolicyMetrics, name: &str) -> Self {
        let d = |reason: &str| {
            m.dropped
                .get_or_create(&DropLabels {
                    processor: name.into(),
                    reason: reason.into(),
                })
                .clone()
        };
        Self {
            not_allowed: d("not_allowed"),
            too_long: d("too_long"),
            bad_type: d("bad_type"),
            pseudonymized: m
                .pseudonymized
                .get_or_create(&ProcessorLabel {
                    processor: name.into(),
                })
                .clone(),
        }
    }
}

#[derive(Default)]
struct Tally {
    not_allowed: u64,
    too_long: u64,
    bad_type: u64,
    pseudonymized: u64,
}

fn patterns(list: &[String], key: &str) -> Result<Vec<KeyPattern>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            let k = format!("{key}[{i}]");
            if p.is_empty() {
                return Err(ConfigError::new(k, "empty pattern"));
            }
            if p.trim_end_matches('*').contains('*') || p.ends_with("**") {
                return Err(ConfigError::new(
                    k,
                    format!("{p:?}: `*` is only allowed once, at the end (exact key or `prefix*`)"),
                ));
            }
            Ok(KeyPattern::new(p))
        })
        .collect()
}

/// Whether `v` already is a pseudonym of [`Pseudonymizer`] (`h1:` + 32 lowercase hex digits).
pub fn is_pseudonym(v: &str) -> bool {
    v.strip_prefix(PSEUDONYM_PREFIX).is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl BaggagePolicyProcessor {
    /// Builds the processor; errors name the key (relative to this processor's configuration).
    pub fn new(name: impl Into<String>, cfg: BaggagePolicyConfig) -> Result<Self, ConfigError> {
        let name = name.into();
        if cfg.baggage_keys.is_empty() && cfg.baggage_prefix.is_none() {
            return Err(ConfigError::new(
                "baggage_keys",
                "set baggage_keys and/or baggage_prefix: otherwise no attribute is baggage",
            ));
        }
        if cfg.baggage_prefix.as_deref() == Some("") {
            return Err(ConfigError::new(
                "baggage_prefix",
                "empty: every attribute would be baggage",
            ));
        }
        let keys = patterns(&cfg.baggage_keys, "baggage_keys")?;
        let allowed = patterns(&cfg.allowed_keys, "allowed_keys")?;
        let pseudonymize = patterns(&cfg.pseudonymize, "pseudonymize")?;
        let secret = load_secret(
            cfg.secret_env.as_deref(),
            cfg.secret_file.as_ref(),
            "secret_env",
            "secret_file",
        )?;
        if !pseudonymize.is_empty() && secret.is_none() {
            return Err(ConfigError::new(
                "secret_env",
                "pseudonymize needs the HMAC secret: set secret_env or secret_file",
            ));
        }
        if cfg.max_value_length == Some(0) {
            return Err(ConfigError::new(
                "max_value_length",
                "0 would drop every value (fix: leave it out for no limit)",
            ));
        }
        let metrics = BaggagePolicyMetrics::default();
        Ok(Self {
            counters: Counters::new(&metrics, &name),
            name,
            keys,
            prefix: cfg.baggage_prefix,
            allowed,
            pseudonymize,
            pseudonymizer: secret.map(Pseudonymizer::new),
            max_value_length: cfg.max_value_length,
            metrics,
        })
    }

    /// Counts into `metrics` (default: unregistered metrics of its own).
    pub fn with_metrics(mut self, metrics: BaggagePolicyMetrics) -> Self {
        self.counters = Counters::new(&metrics, &self.name);
        self.metrics = metrics;
        self
    }

    /// The metrics this processor counts into.
    pub fn metrics(&self) -> &BaggagePolicyMetrics {
        &self.metrics
    }

    /// The baggage key of attribute `key`, if it came from baggage.
    fn baggage_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.keys.iter().any(|p| p.matches(key)) {
            return Some(key);
        }
        self.prefix
            .as_deref()
            .and_then(|p| key.strip_prefix(p))
            .filter(|k| !k.is_empty())
    }

    /// Applies the policy to one attribute list.
    fn apply(&self, attributes: &mut Vec<KeyValue>, tally: &mut Tally) {
        attributes.retain_mut(|kv| {
            let Some(bkey) = self.baggage_key(&kv.key) else {
                return true;
            };
            let pseudo = self.pseudonymize.iter().any(|p| p.matches(bkey));
            if !pseudo && !self.allowed.iter().any(|p| p.matches(bkey)) {
                tally.not_allowed += 1;
                return false;
            }
            let text = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => std::borrow::Cow::Borrowed(s.as_str()),
                Some(Value::IntValue(_) | Value::DoubleValue(_) | Value::BoolValue(_)) => {
                    match kv.value.as_ref() {
                        Some(v) => std::borrow::Cow::Owned(attrs::to_text(v)),
                        None => return false,
                    }
                }
                _ => {
                    tally.bad_type += 1;
                    return false;
                }
            };
            if pseudo && is_pseudonym(&text) {
                // Pseudonymized upstream (fixed length, nothing in clear): kept as it is.
                return true;
            }
            if self.max_value_length.is_some_and(|max| text.len() > max) {
                tally.too_long += 1;
                return false;
            }
            if pseudo {
                let Some(p) = &self.pseudonymizer else {
                    // Not reached: `new` requires the secret when `pseudonymize` is set.
                    tally.not_allowed += 1;
                    return false;
                };
                let hashed = p.pseudonymize(bkey, &text);
                kv.value = Some(attrs::string_value(hashed));
                tally.pseudonymized += 1;
            }
            true
        });
    }
}

impl Processor for BaggagePolicyProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, mut batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        let mut tally = Tally::default();
        for rs in &mut batch.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                self.apply(&mut r.attributes, &mut tally);
            }
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    self.apply(&mut span.attributes, &mut tally);
                }
            }
        }
        let c = &self.counters;
        for (counter, n) in [
            (&c.not_allowed, tally.not_allowed),
            (&c.too_long, tally.too_long),
            (&c.bad_type, tally.bad_type),
            (&c.pseudonymized, tally.pseudonymized),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        Ok(ProcessOutcome::Forward(batch))
    }
}
