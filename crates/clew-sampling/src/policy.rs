//! Tail-sampling policies: the OTel Collector `tail_sampling` config shapes (`name`, `type`, and a
//! sub-object named after the type), compiled once and evaluated on a whole buffered trace.

use crate::consistent::{self, MAX_THRESHOLD};
use crate::dynamic::{DynamicConfig, DynamicSampler};
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, Span};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashSet;

/// Relative key path + message (with a fix), turned into "FILE: key `processors.X.<path>`: msg".
pub type ConfigError = (String, String);

fn err<T>(path: &str, msg: impl Into<String>) -> Result<T, ConfigError> {
    Err((path.to_string(), msg.into()))
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub always_sample: Option<serde_yaml::Value>,
    pub latency: Option<LatencyCfg>,
    pub status_code: Option<StatusCodeCfg>,
    pub string_attribute: Option<StringAttributeCfg>,
    pub numeric_attribute: Option<NumericAttributeCfg>,
    pub boolean_attribute: Option<BooleanAttributeCfg>,
    pub trace_state: Option<TraceStateCfg>,
    pub span_count: Option<SpanCountCfg>,
    pub rate_limiting: Option<RateLimitingCfg>,
    pub bytes_limiting: Option<BytesLimitingCfg>,
    pub probabilistic: Option<ProbabilisticCfg>,
    pub and: Option<AndCfg>,
    pub not: Option<NotCfg>,
    pub drop: Option<DropCfg>,
    pub composite: Option<CompositeCfg>,
    pub dynamic: Option<DynamicConfig>,
    pub tenant: Option<TenantCfg>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LatencyCfg {
    pub threshold_ms: u64,
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeCfg {
    pub status_codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeCfg {
    pub key: String,
    pub values: Vec<String>,
    #[serde(default)]
    pub enabled_regex_matching: bool,
    #[serde(default)]
    pub cache_max_size: usize,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeCfg {
    pub key: String,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeCfg {
    pub key: String,
    pub value: bool,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceStateCfg {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpanCountCfg {
    pub min_spans: u32,
    #[serde(default)]
    pub max_spans: u32,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingCfg {
    #[serde(default)]
    pub spans_per_second: u64,
    #[serde(default)]
    pub bytes_per_second: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingCfg {
    pub bytes_per_second: u64,
    #[serde(default)]
    pub burst_capacity: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticCfg {
    pub sampling_percentage: f64,
    /// When set, the trace id is hashed with this salt; when empty the trace's consistent
    /// randomness (`rv` or trace id bits) is used, agreeing with head sampling.
    #[serde(default)]
    pub hash_salt: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AndCfg {
    pub and_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NotCfg {
    pub not_sub_policy: Box<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DropCfg {
    pub drop_sub_policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CompositeCfg {
    pub max_total_spans_per_second: u64,
    #[serde(default)]
    pub policy_order: Vec<String>,
    pub composite_sub_policy: Vec<PolicyConfig>,
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    pub policy: String,
    pub percent: f64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantCfg {
    pub tenants: Vec<String>,
}

/// What one policy says about a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sample,
    NotSample,
    /// A `drop` policy matched: the trace is dropped whatever other policies say.
    Drop,
}

/// Everything a policy can look at: summary numbers kept while buffering, and the trace's spans,
/// decoded only if a policy asks for them (most dropped traces are never decoded).
pub struct TraceView<'a> {
    pub tenant: &'a str,
    pub trace_id: [u8; 16],
    pub span_count: u32,
    pub bytes: u64,
    /// Earliest start and latest end over the spans (ns).
    pub start_ns: u64,
    pub end_ns: u64,
    pub now_ms: u64,
    /// Bit `1 << code` for every span status code seen.
    pub status_mask: u8,
    /// `rv` from a span's tracestate, if any.
    pub rv: Option<u64>,
    decoded: std::cell::OnceCell<Vec<ResourceSpans>>,
    decode: &'a dyn Fn() -> Vec<ResourceSpans>,
}

/// The summary part of a [`TraceView`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub span_count: u32,
    pub bytes: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status_mask: u8,
    pub rv: Option<u64>,
}

impl<'a> TraceView<'a> {
    pub fn new(
        tenant: &'a str,
        trace_id: [u8; 16],
        summary: Summary,
        now_ms: u64,
        decode: &'a dyn Fn() -> Vec<ResourceSpans>,
    ) -> Self {
        Self {
            tenant,
            trace_id,
            span_count: summary.span_count,
            bytes: summary.bytes,
            start_ns: summary.start_ns,
            end_ns: summary.end_ns,
            now_ms,
            status_mask: summary.status_mask,
            rv: summary.rv,
            decoded: std::cell::OnceCell::new(),
            decode,
        }
    }

    /// The decoded spans (decoded on first use).
    pub fn resource_spans(&self) -> &[ResourceSpans] {
        self.decoded.get_or_init(|| (self.decode)())
    }

    /// The decoded spans, decoding now if no policy needed them.
    pub fn into_resource_spans(self) -> Vec<ResourceSpans> {
        match self.decoded.into_inner() {
            Some(v) => v,
            None => (self.decode)(),
        }
    }

    pub fn spans(&self) -> impl Iterator<Item = (&[KeyValue], &Span)> {
        self.resource_spans().iter().flat_map(|rs| {
            let rattrs: &[KeyValue] = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            rs.scope_spans
                .iter()
                .flat_map(move |ss| ss.spans.iter().map(move |s| (rattrs, s)))
        })
    }

    /// Every value of `key` on a span or its resource.
    fn values<'b>(&'b self, key: &'b str) -> impl Iterator<Item = &'b AnyValue> + 'b {
        self.spans().flat_map(move |(r, s)| {
            s.attributes
                .iter()
                .chain(r.iter())
                .filter(move |kv| kv.key == key)
                .filter_map(|kv| kv.value.as_ref())
        })
    }

    /// Consistent randomness of the trace (`rv` of any span's tracestate, else trace id bits).
    pub fn randomness(&self) -> u64 {
        self.rv
            .unwrap_or_else(|| consistent::trace_id_randomness(&self.trace_id))
    }

    /// The root span (no parent), if it has arrived.
    pub fn root(&self) -> Option<(&[KeyValue], &Span)> {
        self.spans().find(|(_, s)| s.parent_span_id.is_empty())
    }

    /// Looks a field up on the root span (or the first span): span attributes, then resource
    /// attributes; `span.name` and `tenant` are special.
    pub fn field(&self, key: &str) -> Option<String> {
        let (r, s) = self.root().or_else(|| self.spans().next())?;
        match key {
            "span.name" => return Some(s.name.clone()),
            "tenant" => return Some(self.tenant.to_string()),
            _ => {}
        }
        s.attributes
            .iter()
            .chain(r.iter())
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(clew_model::attrs::to_text)
    }
}

/// A compiled policy.
pub struct Policy {
    pub name: String,
    kind: Kind,
}

enum Kind {
    AlwaysSample,
    Latency {
        lower_ns: u64,
        upper_ns: Option<u64>,
    },
    StatusCode(Vec<i32>),
    StringAttr {
        key: String,
        values: HashSet<String>,
        regexes: Vec<regex::Regex>,
        invert: bool,
    },
    NumericAttr {
        key: String,
        min: f64,
        max: f64,
        invert: bool,
    },
    BoolAttr {
        key: String,
        value: bool,
        invert: bool,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    SpanCount {
        min: u32,
        max: u32,
    },
    RateLimiting {
        spans_per_sec: u64,
        bytes_per_sec: u64,
        window: Mutex<Window>,
    },
    BytesLimiting {
        bucket: Mutex<TokenBucket>,
    },
    Probabilistic {
        threshold: u64,
        salt: Option<String>,
    },
    And(Vec<Policy>),
    Not(Box<Policy>),
    Drop(Vec<Policy>),
    Composite(Box<Composite>),
    Dynamic(Box<DynamicSampler>),
    Tenant(HashSet<String>),
}

/// Spans and bytes used in the current one-second window.
#[derive(Default)]
pub struct Window {
    second: u64,
    spans: u64,
    bytes: u64,
}

impl Window {
    fn admit(
        &mut self,
        now_ms: u64,
        spans: u64,
        bytes: u64,
        max_spans: u64,
        max_bytes: u64,
    ) -> bool {
        let sec = now_ms / 1000;
        if sec != self.second {
            *self = Window {
                second: sec,
                ..Default::default()
            };
        }
        if max_spans > 0 && self.spans + spans > max_spans {
            return false;
        }
        if max_bytes > 0 && self.bytes + bytes > max_bytes {
            return false;
        }
        self.spans += spans;
        self.bytes += bytes;
        true
    }
}

pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last_ms: Option<u64>,
}

impl TokenBucket {
    fn take(&mut self, now_ms: u64, n: f64) -> bool {
        if let Some(last) = self.last_ms {
            self.tokens = (self.tokens + self.rate * now_ms.saturating_sub(last) as f64 / 1000.0)
                .min(self.capacity);
        }
        self.last_ms = Some(now_ms);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

struct Composite {
    max_spans_per_sec: u64,
    /// Sub-policies in evaluation order, each with its share of the span budget.
    subs: Vec<(Policy, u64)>,
    windows: Mutex<Vec<Window>>,
}

fn sub_cfg<'a, T>(c: &'a PolicyConfig, v: &'a Option<T>, path: &str) -> Result<&'a T, ConfigError> {
    v.as_ref().ok_or_else(|| {
        (
            format!("{path}.{}", c.kind),
            format!(
                "policy `{}` has type `{}` but no `{}:` section (fix: add `{}: {{...}}` next to `type`)",
                c.name, c.kind, c.kind, c.kind
            ),
        )
    })
}

pub const POLICY_TYPES: &[&str] = &[
    "always_sample",
    "latency",
    "status_code",
    "string_attribute",
    "numeric_attribute",
    "boolean_attribute",
    "trace_state",
    "span_count",
    "rate_limiting",
    "bytes_limiting",
    "probabilistic",
    "and",
    "not",
    "drop",
    "composite",
    "dynamic",
    "tenant",
];

impl Policy {
    /// Compiles a policy config; `path` is its key path (e.g. `policies[2]`) for errors.
    pub fn compile(c: &PolicyConfig, path: &str) -> Result<Policy, ConfigError> {
        if c.name.trim().is_empty() {
            return err(
                &format!("{path}.name"),
                "every policy needs a name (fix: add e.g. `name: keep-errors`)",
            );
        }
        // Exactly the section for its type may be present.
        let present: Vec<&str> = [
            ("always_sample", c.always_sample.is_some()),
            ("latency", c.latency.is_some()),
            ("status_code", c.status_code.is_some()),
            ("string_attribute", c.string_attribute.is_some()),
            ("numeric_attribute", c.numeric_attribute.is_some()),
            ("boolean_attribute", c.boolean_attribute.is_some()),
            ("trace_state", c.trace_state.is_some()),
            ("span_count", c.span_count.is_some()),
            ("rate_limiting", c.rate_limiting.is_some()),
            ("bytes_limiting", c.bytes_limiting.is_some()),
            ("probabilistic", c.probabilistic.is_some()),
            ("and", c.and.is_some()),
            ("not", c.not.is_some()),
            ("drop", c.drop.is_some()),
            ("composite", c.composite.is_some()),
            ("dynamic", c.dynamic.is_some()),
            ("tenant", c.tenant.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.then_some(k))
        .collect();
        if let Some(other) = present.iter().find(|k| **k != c.kind) {
            return err(
                &format!("{path}.{other}"),
                format!(
                    "section `{other}` does not match `type: {}` (fix: set `type: {other}` or remove the section)",
                    c.kind
                ),
            );
        }
        let p = |sub: &str| format!("{path}.{}.{sub}", c.kind);
        let kind = match c.kind.as_str() {
            "always_sample" => Kind::AlwaysSample,
            "latency" => {
                let l = sub_cfg(c, &c.latency, path)?;
                if l.upper_threshold_ms != 0 && l.upper_threshold_ms < l.threshold_ms {
                    return err(
                        &p("upper_threshold_ms"),
                        format!(
                            "{} is below threshold_ms {} (fix: raise it, or remove it for no upper bound)",
                            l.upper_threshold_ms, l.threshold_ms
                        ),
                    );
                }
                if l.threshold_ms == 0 && l.upper_threshold_ms == 0 {
                    return err(
                        &p("threshold_ms"),
                        "must be above 0 (fix: e.g. threshold_ms: 500)",
                    );
                }
                Kind::Latency {
                    lower_ns: l.threshold_ms * 1_000_000,
                    upper_ns: (l.upper_threshold_ms > 0)
                        .then_some(l.upper_threshold_ms * 1_000_000),
                }
            }
            "status_code" => {
                let s = sub_cfg(c, &c.status_code, path)?;
                if s.status_codes.is_empty() {
                    return err(&p("status_codes"), "is empty (fix: e.g. [ERROR])");
                }
                let mut codes = Vec::new();
                for (i, code) in s.status_codes.iter().enumerate() {
                    codes.push(match code.as_str() {
                        "ERROR" => StatusCode::Error as i32,
                        "OK" => StatusCode::Ok as i32,
                        "UNSET" => StatusCode::Unset as i32,
                        other => {
                            return err(
                                &format!("{}[{i}]", p("status_codes")),
                                format!(
                                    "{other:?} is not a status code (fix: one of ERROR, OK, UNSET)"
                                ),
                            )
                        }
                    });
                }
                Kind::StatusCode(codes)
            }
            "string_attribute" => {
                let s = sub_cfg(c, &c.string_attribute, path)?;
                if s.key.is_empty() {
                    return err(
                        &p("key"),
                        "is empty (fix: the attribute key, e.g. http.route)",
                    );
                }
                if s.values.is_empty() {
                    return err(&p("values"), "is empty (fix: list at least one value)");
                }
                let mut regexes = Vec::new();
                if s.enabled_regex_matching {
                    for (i, v) in s.values.iter().enumerate() {
                        regexes.push(regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                            (
                                format!("{}[{i}]", p("values")),
                                format!("{v:?} is not a valid regular expression: {e} (fix: escape special characters)"),
                            )
                        })?);
                    }
                }
                Kind::StringAttr {
                    key: s.key.clone(),
                    values: s.values.iter().cloned().collect(),
                    regexes,
                    invert: s.invert_match,
                }
            }
            "numeric_attribute" => {
                let n = sub_cfg(c, &c.numeric_attribute, path)?;
                if n.min_value.is_none() && n.max_value.is_none() {
                    return err(
                        &p("min_value"),
                        "neither min_value nor max_value is set (fix: set one or both)",
                    );
                }
                let (min, max) = (
                    n.min_value.unwrap_or(f64::NEG_INFINITY),
                    n.max_value.unwrap_or(f64::INFINITY),
                );
                if min > max {
                    return err(
                        &p("max_value"),
                        format!("{max} is below min_value {min} (fix: swap them)"),
                    );
                }
                Kind::NumericAttr {
                    key: n.key.clone(),
                    min,
                    max,
                    invert: n.invert_match,
                }
            }
            "boolean_attribute" => {
                let b = sub_cfg(c, &c.boolean_attribute, path)?;
                Kind::BoolAttr {
                    key: b.key.clone(),
                    value: b.value,
                    invert: b.invert_match,
                }
            }
            "trace_state" => {
                let t = sub_cfg(c, &c.trace_state, path)?;
                if t.key.is_empty() || t.values.is_empty() {
                    return err(
                        &p("values"),
                        "key and values are required (fix: e.g. key: ot, values: [\"th:0\"])",
                    );
                }
                Kind::TraceState {
                    key: t.key.clone(),
                    values: t.values.iter().cloned().collect(),
                }
            }
            "span_count" => {
                let s = sub_cfg(c, &c.span_count, path)?;
                if s.max_spans != 0 && s.max_spans < s.min_spans {
                    return err(
                        &p("max_spans"),
                        format!(
                            "{} is below min_spans {} (fix: raise it or remove it)",
                            s.max_spans, s.min_spans
                        ),
                    );
                }
                Kind::SpanCount {
                    min: s.min_spans,
                    max: if s.max_spans == 0 {
                        u32::MAX
                    } else {
                        s.max_spans
                    },
                }
            }
            "rate_limiting" => {
                let r = sub_cfg(c, &c.rate_limiting, path)?;
                if r.spans_per_second == 0 && r.bytes_per_second == 0 {
                    return err(
                        &p("spans_per_second"),
                        "no limit set (fix: set spans_per_second and/or bytes_per_second above 0)",
                    );
                }
                Kind::RateLimiting {
                    spans_per_sec: r.spans_per_second,
                    bytes_per_sec: r.bytes_per_second,
                    window: Mutex::new(Window::default()),
                }
            }
            "bytes_limiting" => {
                let b = sub_cfg(c, &c.bytes_limiting, path)?;
                if b.bytes_per_second == 0 {
                    return err(
                        &p("bytes_per_second"),
                        "must be above 0 (fix: e.g. 1048576)",
                    );
                }
                let cap = if b.burst_capacity == 0 {
                    2 * b.bytes_per_second
                } else {
                    b.burst_capacity
                } as f64;
                Kind::BytesLimiting {
                    bucket: Mutex::new(TokenBucket {
                        rate: b.bytes_per_second as f64,
                        capacity: cap,
                        tokens: cap,
                        last_ms: None,
                    }),
                }
            }
            "probabilistic" => {
                let pr = sub_cfg(c, &c.probabilistic, path)?;
                if !(0.0..=100.0).contains(&pr.sampling_percentage) {
                    return err(
                        &p("sampling_percentage"),
                        format!(
                            "{} is not a percentage (fix: 0 to 100, e.g. 10)",
                            pr.sampling_percentage
                        ),
                    );
                }
                Kind::Probabilistic {
                    threshold: consistent::threshold_for_probability(
                        pr.sampling_percentage / 100.0,
                    ),
                    salt: (!pr.hash_salt.is_empty()).then(|| pr.hash_salt.clone()),
                }
            }
            "and" => {
                let a = sub_cfg(c, &c.and, path)?;
                if a.and_sub_policy.is_empty() {
                    return err(
                        &p("and_sub_policy"),
                        "is empty (fix: list the policies that must all match)",
                    );
                }
                Kind::And(compile_list(&a.and_sub_policy, &p("and_sub_policy"))?)
            }
            "not" => {
                let n = sub_cfg(c, &c.not, path)?;
                Kind::Not(Box::new(Policy::compile(
                    &n.not_sub_policy,
                    &p("not_sub_policy"),
                )?))
            }
            "drop" => {
                let d = sub_cfg(c, &c.drop, path)?;
                if d.drop_sub_policy.is_empty() {
                    return err(
                        &p("drop_sub_policy"),
                        "is empty (fix: list the policies that must all match to drop)",
                    );
                }
                Kind::Drop(compile_list(&d.drop_sub_policy, &p("drop_sub_policy"))?)
            }
            "composite" => {
                let k = sub_cfg(c, &c.composite, path)?;
                Kind::Composite(Box::new(compile_composite(
                    k,
                    &format!("{path}.composite"),
                )?))
            }
            "dynamic" => {
                let d = sub_cfg(c, &c.dynamic, path)?;
                d.validate().map_err(|(k, m)| (p(&k), m))?;
                Kind::Dynamic(Box::new(DynamicSampler::new(d.clone())))
            }
            "tenant" => {
                let t = sub_cfg(c, &c.tenant, path)?;
                if t.tenants.is_empty() {
                    return err(
                        &p("tenants"),
                        "is empty (fix: list tenant ids, e.g. [acme])",
                    );
                }
                Kind::Tenant(t.tenants.iter().cloned().collect())
            }
            other => {
                return err(
                    &format!("{path}.type"),
                    format!(
                        "unknown policy type {other:?} (fix: one of {})",
                        POLICY_TYPES.join(", ")
                    ),
                )
            }
        };
        Ok(Policy {
            name: c.name.clone(),
            kind,
        })
    }

    /// Evaluates the policy. Returns the verdict and, for a sample, the name of the deciding
    /// (sub-)policy.
    pub fn evaluate(&self, t: &TraceView) -> (Verdict, Option<String>) {
        let v = |b: bool| {
            if b {
                Verdict::Sample
            } else {
                Verdict::NotSample
            }
        };
        let verdict = match &self.kind {
            Kind::AlwaysSample => Verdict::Sample,
            Kind::Latency { lower_ns, upper_ns } => {
                let d = t.end_ns.saturating_sub(t.start_ns);
                v(match upper_ns {
                    Some(u) => d >= *lower_ns && d <= *u,
                    None => d >= *lower_ns,
                })
            }
            Kind::StatusCode(codes) => v(codes
                .iter()
                .any(|c| (0..8).contains(c) && t.status_mask & (1 << c) != 0)),
            Kind::StringAttr {
                key,
                values,
                regexes,
                invert,
            } => {
                let matched = t.values(key).any(|val| match &val.value {
                    Some(Value::StringValue(s)) => {
                        if regexes.is_empty() {
                            values.contains(s)
                        } else {
                            regexes.iter().any(|r| r.is_match(s))
                        }
                    }
                    _ => false,
                });
                v(matched != *invert)
            }
            Kind::NumericAttr {
                key,
                min,
                max,
                invert,
            } => {
                let matched = t.values(key).any(|val| {
                    let x = match &val.value {
                        Some(Value::IntValue(i)) => *i as f64,
                        Some(Value::DoubleValue(d)) => *d,
                        _ => return false,
                    };
                    x >= *min && x <= *max
                });
                v(matched != *invert)
            }
            Kind::BoolAttr { key, value, invert } => {
                let matched = t
                    .values(key)
                    .any(|val| matches!(&val.value, Some(Value::BoolValue(b)) if b == value));
                v(matched != *invert)
            }
            Kind::TraceState { key, values } => v(t.spans().any(|(_, s)| {
                s.trace_state.split(',').any(|m| {
                    m.trim()
                        .split_once('=')
                        .is_some_and(|(k, val)| k == key && values.contains(val))
                })
            })),
            Kind::SpanCount { min, max } => v(t.span_count >= *min && t.span_count <= *max),
            Kind::RateLimiting {
                spans_per_sec,
                bytes_per_sec,
                window,
            } => v(window.lock().admit(
                t.now_ms,
                t.span_count as u64,
                t.bytes,
                *spans_per_sec,
                *bytes_per_sec,
            )),
            Kind::BytesLimiting { bucket } => v(bucket.lock().take(t.now_ms, t.bytes as f64)),
            Kind::Probabilistic { threshold, salt } => {
                if *threshold >= MAX_THRESHOLD {
                    Verdict::NotSample
                } else {
                    let r = match salt {
                        Some(s) => {
                            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                            for b in s.as_bytes().iter().chain(&t.trace_id) {
                                h ^= *b as u64;
                                h = h.wrapping_mul(0x0100_0000_01b3);
                            }
                            h >> 8
                        }
                        None => t.randomness(),
                    };
                    v(r >= *threshold)
                }
            }
            Kind::And(subs) => {
                for s in subs {
                    if s.evaluate(t).0 != Verdict::Sample {
                        return (Verdict::NotSample, None);
                    }
                }
                Verdict::Sample
            }
            Kind::Not(sub) => v(sub.evaluate(t).0 != Verdict::Sample),
            Kind::Drop(subs) => {
                if subs.iter().all(|s| s.evaluate(t).0 == Verdict::Sample) {
                    Verdict::Drop
                } else {
                    Verdict::NotSample
                }
            }
            Kind::Composite(c) => return c.evaluate(t, &self.name),
            Kind::Dynamic(d) => v(d.sample(t)),
            Kind::Tenant(ts) => v(ts.contains(t.tenant)),
        };
        let name = (verdict == Verdict::Sample).then(|| self.name.clone());
        (verdict, name)
    }

    /// Called periodically (about once a second) so stateful policies can adjust.
    pub fn tick(&self, now_ms: u64) {
        match &self.kind {
            Kind::Dynamic(d) => d.tick(now_ms),
            Kind::And(s) | Kind::Drop(s) => s.iter().for_each(|p| p.tick(now_ms)),
            Kind::Not(p) => p.tick(now_ms),
            Kind::Composite(c) => c.subs.iter().for_each(|(p, _)| p.tick(now_ms)),
            _ => {}
        }
    }
}

fn compile_list(list: &[PolicyConfig], path: &str) -> Result<Vec<Policy>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, c)| Policy::compile(c, &format!("{path}[{i}]")))
        .collect()
}

fn compile_composite(k: &CompositeCfg, path: &str) -> Result<Composite, ConfigError> {
    if k.max_total_spans_per_second == 0 {
        return err(
            &format!("{path}.max_total_spans_per_second"),
            "must be above 0 (fix: e.g. 1000)",
        );
    }
    if k.composite_sub_policy.is_empty() {
        return err(
            &format!("{path}.composite_sub_policy"),
            "is empty (fix: list the sub-policies)",
        );
    }
    let subs = compile_list(
        &k.composite_sub_policy,
        &format!("{path}.composite_sub_policy"),
    )?;
    let names: Vec<String> = subs.iter().map(|s| s.name.clone()).collect();
    let order: Vec<String> = if k.policy_order.is_empty() {
        names.clone()
    } else {
        k.policy_order.clone()
    };
    for (i, n) in order.iter().enumerate() {
        if !names.contains(n) {
            return err(
                &format!("{path}.policy_order[{i}]"),
                format!(
                    "{n:?} is not a composite_sub_policy name (fix: one of {})",
                    names.join(", ")
                ),
            );
        }
    }
    for (i, n) in names.iter().enumerate() {
        if !order.contains(n) {
            return err(&format!("{path}.policy_order"), format!("sub-policy {n:?} (composite_sub_policy[{i}]) is missing (fix: add it to policy_order)"));
        }
    }
    let mut alloc = std::collections::HashMap::new();
    let mut total = 0.0;
    for (i, a) in k.rate_allocation.iter().enumerate() {
        if !names.contains(&a.policy) {
            return err(
                &format!("{path}.rate_allocation[{i}].policy"),
                format!(
                    "{:?} is not a composite_sub_policy name (fix: one of {})",
                    a.policy,
                    names.join(", ")
                ),
            );
        }
        if !(0.0..=100.0).contains(&a.percent) {
            return err(
                &format!("{path}.rate_allocation[{i}].percent"),
                "is not a percentage (fix: 0 to 100)",
            );
        }
        total += a.percent;
        alloc.insert(a.policy.clone(), a.percent);
    }
    if total > 100.0 + 1e-9 {
        return err(
            &format!("{path}.rate_allocation"),
            format!("percentages add up to {total} (fix: at most 100)"),
        );
    }
    let unallocated = names.iter().filter(|n| !alloc.contains_key(*n)).count();
    let leftover = if unallocated > 0 {
        (100.0 - total) / unallocated as f64
    } else {
        0.0
    };
    let mut subs: Vec<Option<Policy>> = subs.into_iter().map(Some).collect();
    let mut ordered = Vec::new();
    for n in &order {
        let i = names.iter().position(|x| x == n).unwrap_or(0);
        if let Some(p) = subs[i].take() {
            let pct = alloc.get(n).copied().unwrap_or(leftover);
            let budget = (k.max_total_spans_per_second as f64 * pct / 100.0).round() as u64;
            ordered.push((p, budget));
        }
    }
    let n = ordered.len();
    Ok(Composite {
        max_spans_per_sec: k.max_total_spans_per_second,
        subs: ordered,
        windows: Mutex::new((0..=n).map(|_| Window::default()).collect()),
    })
}

impl Composite {
    fn evaluate(&self, t: &TraceView, name: &str) -> (Verdict, Option<String>) {
        for (i, (p, budget)) in self.subs.iter().enumerate() {
            if p.evaluate(t).0 != Verdict::Sample {
                continue;
            }
            let mut w = self.windows.lock();
            let n = w.len() - 1;
            // The sub-policy's own share, and the composite's total.
            let sec = t.now_ms / 1000;
            if w[n].second != sec {
                w[n] = Window {
                    second: sec,
                    ..Default::default()
                };
            }
            if w[n].spans + t.span_count as u64 > self.max_spans_per_sec {
                return (Verdict::NotSample, None);
            }
            if w[i].admit(t.now_ms, t.span_count as u64, 0, (*budget).max(1), 0) {
                w[n].spans += t.span_count as u64;
                return (Verdict::Sample, Some(format!("{name}/{}", p.name)));
            }
        }
        (Verdict::NotSample, None)
    }
}

/// Evaluates a policy list: any matching `drop` policy drops the trace; otherwise the first
/// policy (in config order) that samples keeps it and is recorded as the decider. Policies after
/// the decider are not evaluated, so stateful ones (rate limits, dynamic) only count traces that
/// are still undecided. Returns the decider's name and, for consistent probabilistic deciders
/// (`probabilistic` without `hash_salt`, `dynamic`), the rejection threshold the trace was kept
/// with, to be written as tracestate `th` so adjusted counts stay derivable.
pub fn decide(policies: &[Policy], t: &TraceView) -> Option<(String, Option<u64>)> {
    for p in policies.iter().filter(|p| matches!(p.kind, Kind::Drop(_))) {
        if p.evaluate(t).0 == Verdict::Drop {
            return None;
        }
    }
    for p in policies.iter().filter(|p| !matches!(p.kind, Kind::Drop(_))) {
        if let (Verdict::Sample, Some(name)) = p.evaluate(t) {
            let th = match &p.kind {
                Kind::Probabilistic {
                    threshold,
                    salt: None,
                } => Some(*threshold),
                Kind::Dynamic(d) => Some(d.threshold_for(t)),
                _ => None,
            };
            return Some((name, th));
        }
    }
    None
}
