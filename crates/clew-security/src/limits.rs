//! Per-tenant limits — Tempo calls them *overrides* — enforced where spans come in, live-reloaded.
//!
//! One [`Limiter`] per process, shared by every receiver. For each tenant it knows:
//!
//! | Key | Effect when exceeded |
//! |---|---|
//! | `ingestion_rate_spans` / `ingestion_burst_spans` | spans per second (token bucket): the whole request is refused, retryably ([`RateLimited`]) |
//! | `ingestion_rate_bytes` / `ingestion_burst_bytes` | request bytes per second (token bucket): the same |
//! | `max_attribute_value_length` | longer string (and bytes) values are cut, also inside arrays and maps; counted, not rejected |
//! | `max_attributes_per_span` | attributes past the limit are dropped and added to `dropped_attributes_count`; counted, not rejected |
//! | `max_spans_per_trace` | later spans of the trace are rejected (OTLP partial success) |
//! | `max_bytes_per_trace` | later spans of the trace are rejected (OTLP partial success) |
//!
//! Every key is optional; absent means unlimited. `limits.defaults` in `clew.yaml` applies to every
//! tenant; the per-tenant file (`overrides: {TENANT: {...}}`) overrides the defaults key by key, and
//! `unlimited` lifts a default for one tenant.
//!
//! ## Choices
//!
//! * **Token buckets** refill continuously at the rate up to the burst (which defaults to one
//!   second of the rate) and start full. A request is admitted when the bucket holds at least its
//!   size. A request *larger than the burst* could never be admitted that way, so it is admitted
//!   when the bucket is full and leaves the bucket in debt (negative tokens): it cannot be starved
//!   forever, and the debt keeps the long-run rate honest. A refused request takes no tokens from
//!   either bucket; the answer says how long until it would fit (`Retry-After`).
//! * **Per-trace counters** live in a bounded map of two generations, sharded by trace id. A trace
//!   untouched for one `trace_idle_timeout` moves to the old generation and is forgotten after a
//!   second one (so after 2–4 minutes by default); when a generation reaches its share of
//!   `max_tracked_traces` the old generation is dropped early. Both evictions are counted
//!   (`clew_tenant_limits_traces_evicted_total{reason}`); a forgotten trace starts counting from zero.
//!   Counters are taken back when the sink refuses the request ([`Limiter::release`]), so a retry
//!   after an overload is not counted twice; rate tokens are not given back (the request did cost
//!   the receiver its work).
//! * **Attribute limits** apply to the attributes of each span, of each of its events and of each of
//!   its links (each list on its own, like the OpenTelemetry SDKs' span limits). Resource and scope
//!   attributes are left alone: they are shared by many spans and stored once per row group.
//!   Value lengths are in bytes of UTF-8; strings are cut at a character boundary.
//!
//! The per-tenant file is re-read every `reload_interval` when its modification time, size or inode
//! changed ([`Limiter::spawn_reloader`]). A file that does not load keeps the previous limits, logs a
//! warning and counts `clew_tenant_limits_reload_failures_total`; at start-up the same file is an
//! error. Write it atomically (write a temporary file, then rename), as Kubernetes does for
//! ConfigMaps, so no reload sees half a file.

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::{ResourceSpans, Span};
use clew_model::otlp::Message;
use clew_model::Tenant;
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the per-tenant file is checked when `reload_interval` is not set.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// A trace not seen for this long moves to the old generation of the per-trace map (and is
/// forgotten after as long again).
pub const DEFAULT_TRACE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Traces whose counts are kept at most (~70 bytes each).
pub const DEFAULT_MAX_TRACKED_TRACES: usize = 500_000;

// ---------------------------------------------------------------------------------------------
// Configuration: what the YAML says.
// ---------------------------------------------------------------------------------------------

/// One limit as written: a number, or `unlimited` (to lift a default for one tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Limit(u64),
    Unlimited,
}

impl Setting {
    fn value(self) -> Option<u64> {
        match self {
            Setting::Limit(n) => Some(n),
            Setting::Unlimited => None,
        }
    }
}

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Setting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number, or `unlimited`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Setting, E> {
                Ok(Setting::Limit(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Setting, E> {
                u64::try_from(v).map(Setting::Limit).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative (fix: a whole number ≥ 0, or `unlimited`)"
                    ))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Setting, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number (fix: e.g. {})",
                    v.max(1.0).round()
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Setting, E> {
                match v.trim() {
                    "unlimited" => Ok(Setting::Unlimited),
                    other => Err(E::custom(format!(
                        "{other:?} is not a limit (fix: a whole number, or `unlimited`)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One tenant's limits as written (or the defaults): every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsSpec {
    /// Spans per second.
    #[serde(default)]
    pub ingestion_rate_spans: Option<Setting>,
    /// Spans the bucket holds (default: one second of `ingestion_rate_spans`).
    #[serde(default)]
    pub ingestion_burst_spans: Option<Setting>,
    /// Request bytes (decompressed) per second.
    #[serde(default)]
    pub ingestion_rate_bytes: Option<Setting>,
    /// Bytes the bucket holds (default: one second of `ingestion_rate_bytes`).
    #[serde(default)]
    pub ingestion_burst_bytes: Option<Setting>,
    /// Longest attribute value, in bytes (strings cut at a UTF-8 character boundary).
    #[serde(default)]
    pub max_attribute_value_length: Option<Setting>,
    /// Most attributes per span (and per event, per link).
    #[serde(default)]
    pub max_attributes_per_span: Option<Setting>,
    #[serde(default)]
    pub max_spans_per_trace: Option<Setting>,
    /// Sum of the spans' encoded (protobuf) sizes.
    #[serde(default)]
    pub max_bytes_per_trace: Option<Setting>,
    /// How long the tenant's spans are kept (e.g. "30d"), over `storage.retention`. Not a limit
    /// enforced here: the store reads it ([`Limiter::retention_for`]). Tempo's name is accepted.
    #[serde(
        default,
        alias = "block_retention",
        deserialize_with = "de_opt_duration"
    )]
    pub retention: Option<Duration>,
}

/// The keys of a tenant's limits, in the order they are documented.
pub const LIMIT_KEYS: [&str; 8] = [
    "ingestion_rate_spans",
    "ingestion_burst_spans",
    "ingestion_rate_bytes",
    "ingestion_burst_bytes",
    "max_attribute_value_length",
    "max_attributes_per_span",
    "max_spans_per_trace",
    "max_bytes_per_trace",
];

impl TenantLimitsSpec {
    fn fields(&self) -> [Option<Setting>; 8] {
        [
            self.ingestion_rate_spans,
            self.ingestion_burst_spans,
            self.ingestion_rate_bytes,
            self.ingestion_burst_bytes,
            self.max_attribute_value_length,
            self.max_attributes_per_span,
            self.max_spans_per_trace,
            self.max_bytes_per_trace,
        ]
    }

    /// This spec over `base`, key by key: what this one sets wins.
    pub fn over(&self, base: &TenantLimitsSpec) -> TenantLimitsSpec {
        TenantLimitsSpec {
            ingestion_rate_spans: self.ingestion_rate_spans.or(base.ingestion_rate_spans),
            ingestion_burst_spans: self.ingestion_burst_spans.or(base.ingestion_burst_spans),
            ingestion_rate_bytes: self.ingestion_rate_bytes.or(base.ingestion_rate_bytes),
            ingestion_burst_bytes: self.ingestion_burst_bytes.or(base.ingestion_burst_bytes),
            max_attribute_value_length: self
                .max_attribute_value_length
                .or(base.max_attribute_value_length),
            max_attributes_per_span: self
                .max_attributes_per_span
                .or(base.max_attributes_per_span),
            max_spans_per_trace: self.max_spans_per_trace.or(base.max_spans_per_trace),
            max_bytes_per_trace: self.max_bytes_per_trace.or(base.max_bytes_per_trace),
            retention: self.retention.or(base.retention),
        }
    }

    /// Checks the values this spec sets, and that a burst it sets has a rate in `merged` (the
    /// spec as it applies). `prefix` is the key path of this spec in its file.
    fn check(&self, merged: &TenantLimitsSpec, prefix: &str) -> Result<(), String> {
        if self
            .retention
            .is_some_and(|r| r < Duration::from_secs(3600))
        {
            return Err(format!(
                "key `{prefix}.retention`: must be at least 1h (fix: e.g. \"30d\"; remove the key for storage.retention)"
            ));
        }
        for (key, setting) in LIMIT_KEYS.iter().zip(self.fields()) {
            // Dropping every attribute is a legitimate choice; everything else must be positive.
            let min = u64::from(*key != "max_attributes_per_span");
            if let Some(Setting::Limit(n)) = setting {
                if n < min {
                    return Err(format!(
                        "key `{prefix}.{key}`: must be at least {min} (fix: a positive number; remove the key or write `unlimited` for no limit)"
                    ));
                }
            }
        }
        for (burst_key, burst, rate_key, rate) in [
            (
                "ingestion_burst_spans",
                self.ingestion_burst_spans,
                "ingestion_rate_spans",
                merged.ingestion_rate_spans,
            ),
            (
                "ingestion_burst_bytes",
                self.ingestion_burst_bytes,
                "ingestion_rate_bytes",
                merged.ingestion_rate_bytes,
            ),
        ] {
            if matches!(burst, Some(Setting::Limit(_))) && rate.and_then(Setting::value).is_none() {
                return Err(format!(
                    "key `{prefix}.{burst_key}`: a burst needs a rate, and `{rate_key}` is not set (fix: set `{rate_key}` too, or remove `{burst_key}`)"
                ));
            }
        }
        Ok(())
    }

    /// The limits this spec describes (unset and `unlimited` keys are no limit).
    pub fn resolve(&self) -> TenantLimits {
        let get = |s: Option<Setting>| s.and_then(Setting::value);
        let rate = |rate: Option<Setting>, burst: Option<Setting>| {
            get(rate).map(|per_second| Rate {
                per_second,
                burst: get(burst).unwrap_or(per_second),
            })
        };
        let size = |s: Option<Setting>| get(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        TenantLimits {
            spans_rate: rate(self.ingestion_rate_spans, self.ingestion_burst_spans),
            bytes_rate: rate(self.ingestion_rate_bytes, self.ingestion_burst_bytes),
            max_attribute_value_length: size(self.max_attribute_value_length),
            max_attributes_per_span: size(self.max_attributes_per_span),
            max_spans_per_trace: get(self.max_spans_per_trace),
            max_bytes_per_trace: get(self.max_bytes_per_trace),
            retention: self.retention,
        }
    }
}

/// The `limits:` section of `clew.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Limits of every tenant the per-tenant file does not override.
    #[serde(default)]
    pub defaults: TenantLimitsSpec,
    /// `overrides: {TENANT: {...}}`; relative paths are resolved against the config file's folder.
    #[serde(default)]
    pub per_tenant_file: Option<PathBuf>,
    /// How often the per-tenant file is checked for changes (default 10s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub reload_interval: Option<Duration>,
    /// The per-tenant file's contents, read and validated by [`LimitsConfig::load_per_tenant_file`].
    #[serde(skip)]
    pub overrides: Overrides,
    /// The per-tenant file's resolved path.
    #[serde(skip)]
    pub per_tenant_path: Option<PathBuf>,
    #[serde(skip)]
    stamp: Option<FileStamp>,
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"10s\", \"1m\""
        ))
    })
}

impl LimitsConfig {
    /// Checks the defaults and the reload settings. Errors name the key under `limits` and the fix.
    pub fn validate(&self) -> Result<(), String> {
        self.defaults.check(&self.defaults, "limits.defaults")?;
        match (self.reload_interval, &self.per_tenant_file) {
            (Some(_), None) => Err("key `limits.reload_interval`: there is no per-tenant file to reload (fix: set `limits.per_tenant_file`, or remove it)".into()),
            (Some(d), Some(_)) if d.is_zero() => Err("key `limits.reload_interval`: must be longer than 0s (fix: e.g. \"10s\")".into()),
            _ => Ok(()),
        }
    }

    pub fn reload_interval(&self) -> Duration {
        self.reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL)
    }

    /// Reads and validates the per-tenant file (relative to `config_dir`). An error names the file,
    /// the key in it and the fix; the caller prefixes the config file and `limits.per_tenant_file`.
    pub fn load_per_tenant_file(&mut self, config_dir: &Path) -> Result<(), String> {
        let Some(file) = &self.per_tenant_file else {
            return Ok(());
        };
        let path = if file.is_relative() {
            config_dir.join(file)
        } else {
            file.clone()
        };
        // The stamp is taken before reading, so a change made after this read is seen by the first
        // reload.
        let stamp = FileStamp::of(&path).ok();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (fix: create it with `overrides: {{}}`, or correct the path)",
                path.display()
            )
        })?;
        self.overrides = Overrides::parse(&text, &path.display().to_string(), &self.defaults)?;
        self.per_tenant_path = Some(path);
        self.stamp = stamp;
        Ok(())
    }
}

/// The per-tenant file: `overrides: {TENANT: {KEY: VALUE}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub tenants: BTreeMap<String, TenantLimitsSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    #[serde(default)]
    overrides: Option<BTreeMap<String, Option<TenantLimitsSpec>>>,
}

impl Overrides {
    /// Parses and validates a per-tenant file; `origin` names it in errors, `defaults` are the
    /// limits the tenants' entries apply over.
    pub fn parse(text: &str, origin: &str, defaults: &TenantLimitsSpec) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let file: OverridesFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let fix = if inner.contains("unknown field") {
                " (fix: the file holds `overrides:` with one entry per tenant; keys are listed in the README's limits table)"
            } else {
                ""
            };
            format!("{origin}: key `{key}`: {inner}{fix}")
        })?;
        let mut tenants = BTreeMap::new();
        for (name, spec) in file.overrides.unwrap_or_default() {
            Tenant::new(&name).map_err(|e| {
                format!("{origin}: key `overrides.{name}`: {e} (fix: use the tenant's name as sent in the tenant header)")
            })?;
            let spec = spec.unwrap_or_default();
            spec.check(&spec.over(defaults), &format!("overrides.{name}"))
                .map_err(|e| format!("{origin}: {e}"))?;
            tenants.insert(name, spec);
        }
        Ok(Self { tenants })
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved limits.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u64,
    pub burst: u64,
}

/// One tenant's limits as enforced; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub spans_rate: Option<Rate>,
    pub bytes_rate: Option<Rate>,
    pub max_attribute_value_length: Option<usize>,
    pub max_attributes_per_span: Option<usize>,
    pub max_spans_per_trace: Option<u64>,
    pub max_bytes_per_trace: Option<u64>,
    /// Retention over the store's default (`None`: the default).
    pub retention: Option<Duration>,
}

impl TenantLimits {
    fn limits_spans(&self) -> bool {
        self.max_attribute_value_length.is_some()
            || self.max_attributes_per_span.is_some()
            || self.limits_traces()
    }

    fn limits_traces(&self) -> bool {
        self.max_spans_per_trace.is_some() || self.max_bytes_per_trace.is_some()
    }
}

/// The limits of every tenant, swapped as a whole on reload.
#[derive(Debug, Default)]
struct Table {
    defaults: TenantLimits,
    tenants: HashMap<String, TenantLimits>,
}

impl Table {
    fn build(defaults: &TenantLimitsSpec, overrides: &Overrides) -> Self {
        Self {
            defaults: defaults.resolve(),
            tenants: overrides
                .tenants
                .iter()
                .map(|(name, spec)| (name.clone(), spec.over(defaults).resolve()))
                .collect(),
        }
    }

    fn get(&self, tenant: &str) -> TenantLimits {
        self.tenants.get(tenant).copied().unwrap_or(self.defaults)
    }
}

// ---------------------------------------------------------------------------------------------
// Token bucket.
// ---------------------------------------------------------------------------------------------

/// A token bucket that refills continuously at `rate` per second up to `burst`, starting full.
///
/// A request of `n` tokens is admitted when the bucket holds `n`; a request larger than the burst
/// is admitted when the bucket is full and leaves it in debt (see the module docs).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        let burst = rate.burst as f64;
        Self {
            rate: rate.per_second as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Tokens available at `now` (negative while in debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Whether `n` tokens may be taken at `now`; if not, how long until they may. Takes nothing.
    pub fn check(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = n as f64;
        let target = if n > self.burst {
            // Larger than the bucket: admitted when it is full.
            self.burst
        } else {
            n
        };
        if self.tokens >= target {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((target - self.tokens) / self.rate))
        }
    }

    /// Takes `n` tokens (after a successful [`TokenBucket::check`]); may leave the bucket in debt.
    pub fn take(&mut self, n: u64) {
        self.tokens -= n as f64;
    }

    /// Applies a changed rate or burst, keeping the tokens (at most the new burst).
    pub fn reconfigure(&mut self, rate: Rate) {
        self.rate = rate.per_second as f64;
        self.burst = rate.burst as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.available(now) >= self.burst
    }
}

#[derive(Debug, Default)]
struct TenantBuckets {
    spans: Option<(Rate, TokenBucket)>,
    bytes: Option<(Rate, TokenBucket)>,
}

impl TenantBuckets {
    fn configure(&mut self, limits: &TenantLimits, now: Instant) {
        fn one(slot: &mut Option<(Rate, TokenBucket)>, rate: Option<Rate>, now: Instant) {
            match (slot.as_mut(), rate) {
                (_, None) => *slot = None,
                (None, Some(r)) => *slot = Some((r, TokenBucket::new(r, now))),
                (Some((old, bucket)), Some(r)) if *old != r => {
                    bucket.reconfigure(r);
                    *old = r;
                }
                _ => {}
            }
        }
        one(&mut self.spans, limits.spans_rate, now);
        one(&mut self.bytes, limits.bytes_rate, now);
    }

    /// A bucket that is full (or absent) holds no information: dropping it loses nothing.
    fn is_idle(&mut self, now: Instant) -> bool {
        self.spans.as_mut().is_none_or(|(_, b)| b.is_full(now))
            && self.bytes.as_mut().is_none_or(|(_, b)| b.is_full(now))
    }
}

/// Which ingestion rate refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Spans,
    Bytes,
}

impl RateKind {
    /// The metric `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            RateKind::Spans => "rate_spans",
            RateKind::Bytes => "rate_bytes",
        }
    }

    /// The configuration key.
    pub fn key(self) -> &'static str {
        match self {
            RateKind::Spans => "ingestion_rate_spans",
            RateKind::Bytes => "ingestion_rate_bytes",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            RateKind::Spans => "spans",
            RateKind::Bytes => "bytes",
        }
    }
}

/// A request refused by a tenant's ingestion rate: retryable after `retry_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    pub tenant: String,
    pub kind: RateKind,
    pub rate: Rate,
    /// The request's size in the bucket's unit (spans or bytes).
    pub requested: u64,
    pub retry_after: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = self.kind.unit();
        write!(
            f,
            "ingestion rate limit exceeded for tenant {}: {} is {} {unit}/s with a burst of {} {unit}, this request has {} {unit}; retry after {:.3}s",
            self.tenant,
            self.kind.key(),
            self.rate.per_second,
            self.rate.burst,
            self.requested,
            self.retry_after.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Per-trace counters.
// ---------------------------------------------------------------------------------------------

type TraceKey = (Arc<str>, u128);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    spans: u64,
    bytes: u64,
}

#[derive(Debug)]
struct TraceShard {
    current: HashMap<TraceKey, Usage>,
    previous: HashMap<TraceKey, Usage>,
    rotated_at: Instant,
}

/// Why a span was refused by its trace's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceLimit {
    Spans,
    Bytes,
}

impl TraceShard {
    fn new(now: Instant) -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            rotated_at: now,
        }
    }

    /// Forgets traces idle for long enough: the old generation after one idle period, both after
    /// two. Returns how many were forgotten.
    fn expire(&mut self, now: Instant, idle: Duration) -> u64 {
        let age = now.saturating_duration_since(self.rotated_at);
        if age < idle {
            return 0;
        }
        let mut evicted = self.previous.len() as u64;
        if age >= idle.saturating_mul(2) {
            evicted += self.current.len() as u64;
            self.current = HashMap::new();
            self.previous = HashMap::new();
        } else {
            self.previous = std::mem::take(&mut self.current);
        }
        self.rotated_at = now;
        evicted
    }

    /// The trace's usage, moved into the current generation. `gen_cap` bounds a generation; when
    /// the current one is full the old one is dropped (counted in `evicted`).
    fn usage(
        &mut self,
        key: &TraceKey,
        now: Instant,
        gen_cap: usize,
        evicted: &mut u64,
    ) -> &mut Usage {
        if !self.current.contains_key(key) {
            let usage = self.previous.remove(key).unwrap_or_default();
            if self.current.len() >= gen_cap {
                *evicted += self.previous.len() as u64;
                self.previous = std::mem::take(&mut self.current);
                self.rotated_at = now;
            }
            self.current.insert(key.clone(), usage);
        }
        self.current.get_mut(key).expect("inserted above")
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[derive(Debug)]
struct TraceTable {
    shards: Box<[Mutex<TraceShard>]>,
    idle: Duration,
    gen_cap: usize,
}

impl TraceTable {
    fn new(opts: &LimiterOptions, now: Instant) -> Self {
        let n = opts.trace_shards.max(1);
        Self {
            shards: (0..n).map(|_| Mutex::new(TraceShard::new(now))).collect(),
            idle: opts.trace_idle_timeout,
            // Two generations per shard share the shard's part of the cap.
            gen_cap: (opts.max_tracked_traces / n / 2).max(1),
        }
    }

    fn shard(&self, trace: u128) -> &Mutex<TraceShard> {
        // Trace ids are random: their low bits spread evenly.
        &self.shards[(trace as usize) % self.shards.len()]
    }
}

/// What [`Limiter::apply`] added to per-trace counters, to take back with [`Limiter::release`] when
/// the request is not accepted after all.
#[derive(Debug, Default)]
pub struct Reservation {
    tenant: Option<Arc<str>>,
    traces: HashMap<u128, Usage>,
}

/// What [`Limiter::apply`] did to a request's spans.
#[derive(Debug, Default)]
pub struct Applied {
    /// Spans removed by `max_spans_per_trace` / `max_bytes_per_trace`.
    pub rejected_spans: u64,
    /// For OTLP partial success: each limit that removed spans, its value, the tenant and the count.
    pub message: Option<String>,
    /// Attributes whose value was cut to `max_attribute_value_length`.
    pub truncated_values: u64,
    /// Attributes dropped by `max_attributes_per_span`.
    pub dropped_attributes: u64,
    pub reservation: Reservation,
}

// ---------------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReason {
    tenant: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Default)]
struct LimitMetrics {
    limited_spans: Family<TenantReason, Counter>,
    refused_requests: Family<TenantReason, Counter>,
    truncated_attributes: Family<TenantReason, Counter>,
    reload_failures: Counter,
    last_reload_successful: Gauge,
    traces_evicted: Family<ReasonLabel, Counter>,
}

impl LimitMetrics {
    fn add(family: &Family<TenantReason, Counter>, tenant: &str, reason: &'static str, n: u64) {
        if n > 0 {
            family
                .get_or_create(&TenantReason {
                    tenant: tenant.to_string(),
                    reason,
                })
                .inc_by(n);
        }
    }

    fn evicted(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.traces_evicted
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The limiter.
// ---------------------------------------------------------------------------------------------

/// Tuning of the per-trace map (the defaults suit a server; tests make them small).
#[derive(Debug, Clone)]
pub struct LimiterOptions {
    pub trace_idle_timeout: Duration,
    pub max_tracked_traces: usize,
    pub trace_shards: usize,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            trace_idle_timeout: DEFAULT_TRACE_IDLE_TIMEOUT,
            max_tracked_traces: DEFAULT_MAX_TRACKED_TRACES,
            trace_shards: 16,
        }
    }
}

/// Identifies a version of a file: reloading is skipped while it is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            modified: m.modified().ok(),
            len: m.len(),
            inode,
        })
    }
}

#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    interval: Duration,
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    stamp: Option<FileStamp>,
    /// The last failure, so a file that stays unreadable is reported once.
    failing: Option<String>,
}

/// Enforces per-tenant limits; one per process, shared by every receiver. See the module docs.
pub struct Limiter {
    defaults: TenantLimitsSpec,
    table: RwLock<Arc<Table>>,
    buckets: Mutex<HashMap<String, TenantBuckets>>,
    traces: TraceTable,
    metrics: LimitMetrics,
    file: Option<WatchedFile>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("defaults", &self.table.read().defaults)
            .field("tenants", &self.table.read().tenants.len())
            .field("per_tenant_file", &self.file.as_ref().map(|w| &w.path))
            .finish_non_exhaustive()
    }
}

/// Buckets are swept (full ones dropped) when this many tenants have one.
const BUCKET_SWEEP_AT: usize = 4096;

impl Limiter {
    /// A limiter for a loaded configuration (see [`LimitsConfig::load_per_tenant_file`]).
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self::with_options(cfg, LimiterOptions::default())
    }

    pub fn with_options(cfg: &LimitsConfig, opts: LimiterOptions) -> Self {
        let now = Instant::now();
        let metrics = LimitMetrics::default();
        metrics.last_reload_successful.set(1);
        let file = cfg
            .per_tenant_path
            .clone()
            .or_else(|| cfg.per_tenant_file.clone())
            .map(|path| WatchedFile {
                path,
                interval: cfg.reload_interval(),
                state: Mutex::new(WatchState {
                    stamp: cfg.stamp,
                    failing: None,
                }),
            });
        Self {
            defaults: cfg.defaults.clone(),
            table: RwLock::new(Arc::new(Table::build(&cfg.defaults, &cfg.overrides))),
            buckets: Mutex::new(HashMap::new()),
            traces: TraceTable::new(&opts, now),
            metrics,
            file,
        }
    }

    /// Registers the limiter's metrics: `clew_tenant_limited_spans_total{tenant,reason}`,
    /// `clew_tenant_refused_requests_total{tenant,reason}`,
    /// `clew_tenant_truncated_attributes_total{tenant,reason}`,
    /// `clew_tenant_limits_reload_failures_total`, `clew_tenant_limits_last_reload_successful` and
    /// `clew_tenant_limits_traces_evicted_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "clew_tenant_limited_spans",
            "Spans not accepted because of a per-tenant limit (reason: rate_spans, rate_bytes, max_spans_per_trace, max_bytes_per_trace)",
            m.limited_spans.clone(),
        );
        registry.register(
            "clew_tenant_refused_requests",
            "Export requests refused whole by a per-tenant ingestion rate (reason: rate_spans, rate_bytes)",
            m.refused_requests.clone(),
        );
        registry.register(
            "clew_tenant_truncated_attributes",
            "Attributes cut (value_length) or dropped (attributes_per_span) by per-tenant limits",
            m.truncated_attributes.clone(),
        );
        registry.register(
            "clew_tenant_limits_reload_failures",
            "Reloads of the per-tenant limits file that failed (the previous limits stay)",
            m.reload_failures.clone(),
        );
        registry.register(
            "clew_tenant_limits_last_reload_successful",
            "1 when the last reload of the per-tenant limits file succeeded (or none happened), 0 when it failed",
            m.last_reload_successful.clone(),
        );
        registry.register(
            "clew_tenant_limits_traces_evicted",
            "Traces whose per-trace counts were forgotten (reason: idle, capacity)",
            m.traces_evicted.clone(),
        );
    }

    /// The limits that apply to `tenant` now.
    /// The tenant's retention from the defaults and the per-tenant file, if either sets one.
    pub fn retention_for(&self, tenant: &str) -> Option<Duration> {
        self.limits_for(tenant).retention
    }

    pub fn limits_for(&self, tenant: &str) -> TenantLimits {
        self.table.read().get(tenant)
    }

    /// Checks the tenant's ingestion rates for a request of `spans` spans; `bytes` gives its size
    /// and is called only when the tenant has a bytes rate. Admitted requests take their tokens; a
    /// refused one takes none and is counted.
    pub fn check_rate(
        &self,
        tenant: &Tenant,
        spans: u64,
        bytes: impl FnOnce() -> u64,
    ) -> Result<(), RateLimited> {
        let limits = self.limits_for(tenant.as_str());
        if limits.spans_rate.is_none() && limits.bytes_rate.is_none() {
            return Ok(());
        }
        let bytes = if limits.bytes_rate.is_some() {
            bytes()
        } else {
            0
        };
        self.check_rate_at(tenant.as_str(), &limits, spans, bytes, Instant::now())
    }

    fn check_rate_at(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        spans: u64,
        bytes: u64,
        now: Instant,
    ) -> Result<(), RateLimited> {
        let refused = {
            let mut all = self.buckets.lock();
            if !all.contains_key(tenant) && all.len() >= BUCKET_SWEEP_AT {
                all.retain(|_, b| !b.is_idle(now));
            }
            let buckets = all.entry(tenant.to_string()).or_default();
            buckets.configure(limits, now);
            let mut refused: Option<(RateKind, Rate, u64, Duration)> = None;
            for (kind, slot, n) in [
                (RateKind::Spans, &mut buckets.spans, spans),
                (RateKind::Bytes, &mut buckets.bytes, bytes),
            ] {
                if let Some((rate, bucket)) = slot {
                    if let Err(wait) = bucket.check(n, now) {
                        // The longest wait is the one that matters.
                        if refused.is_none_or(|r| wait > r.3) {
                            refused = Some((kind, *rate, n, wait));
                        }
                    }
                }
            }
            if refused.is_none() {
                if let Some((_, b)) = &mut buckets.spans {
                    b.take(spans);
                }
                if let Some((_, b)) = &mut buckets.bytes {
                    b.take(bytes);
                }
            }
            refused
        };
        match refused {
            None => Ok(()),
            Some((kind, rate, requested, retry_after)) => {
                LimitMetrics::add(&self.metrics.refused_requests, tenant, kind.reason(), 1);
                LimitMetrics::add(&self.metrics.limited_spans, tenant, kind.reason(), spans);
                Err(RateLimited {
                    tenant: tenant.to_string(),
                    kind,
                    rate,
                    requested,
                    retry_after,
                })
            }
        }
    }

    /// Applies the per-span limits to a request's spans in place: attribute values cut, attributes
    /// over the count dropped (`dropped_attributes_count` raised), and spans over their trace's
    /// limits removed (containers left empty are removed too).
    pub fn apply(&self, tenant: &Tenant, resource_spans: &mut Vec<ResourceSpans>) -> Applied {
        let limits = self.limits_for(tenant.as_str());
        self.apply_at(tenant.as_str(), &limits, resource_spans, Instant::now())
    }

    fn apply_at(
        &self,
        tenant: &str,
        limits: &TenantLimits,
        resource_spans: &mut Vec<ResourceSpans>,
        now: Instant,
    ) -> Applied {
        let mut applied = Applied::default();
        if !limits.limits_spans() {
            return applied;
        }
        let tenant_key: Option<Arc<str>> = limits.limits_traces().then(|| Arc::from(tenant));
        let (mut over_spans, mut over_bytes) = (0u64, 0u64);
        let (mut idle_evicted, mut cap_evicted) = (0u64, 0u64);
        for rs in resource_spans.iter_mut() {
            for ss in rs.scope_spans.iter_mut() {
                ss.spans.retain_mut(|span| {
                    limit_attributes(span, limits, &mut applied);
                    let Some(tenant_key) = &tenant_key else {
                        return true;
                    };
                    let trace = trace_key(&span.trace_id);
                    let bytes = if limits.max_bytes_per_trace.is_some() {
                        span.encoded_len() as u64
                    } else {
                        0
                    };
                    let mut shard = self.traces.shard(trace).lock();
                    idle_evicted += shard.expire(now, self.traces.idle);
                    let key = (tenant_key.clone(), trace);
                    let usage = shard.usage(&key, now, self.traces.gen_cap, &mut cap_evicted);
                    let over = if limits.max_spans_per_trace.is_some_and(|m| usage.spans >= m) {
                        Some(TraceLimit::Spans)
                    } else if limits
                        .max_bytes_per_trace
                        .is_some_and(|m| usage.bytes.saturating_add(bytes) > m)
                    {
                        Some(TraceLimit::Bytes)
                    } else {
                        None
                    };
                    match over {
                        Some(TraceLimit::Spans) => {
                            over_spans += 1;
                            false
                        }
                        Some(TraceLimit::Bytes) => {
                            over_bytes += 1;
                            false
                        }
                        None => {
                            usage.spans += 1;
                            usage.bytes += bytes;
                            let r = applied.reservation.traces.entry(trace).or_default();
                            r.spans += 1;
                            r.bytes += bytes;
                            true
                        }
                    }
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        applied.reservation.tenant = tenant_key;

        let m = &self.metrics;
        m.evicted("idle", idle_evicted);
        m.evicted("capacity", cap_evicted);
        let mut messages = Vec::new();
        if over_spans > 0 {
            LimitMetrics::add(&m.limited_spans, tenant, "max_spans_per_trace", over_spans);
            messages.push(format!(
                "max_spans_per_trace ({}) exceeded for tenant {tenant}: {over_spans} spans dropped",
                limits.max_spans_per_trace.unwrap_or_default()
            ));
        }
        if over_bytes > 0 {
            LimitMetrics::add(&m.limited_spans, tenant, "max_bytes_per_trace", over_bytes);
            messages.push(format!(
                "max_bytes_per_trace ({} bytes) exceeded for tenant {tenant}: {over_bytes} spans dropped",
                limits.max_bytes_per_trace.unwrap_or_default()
            ));
        }
        applied.rejected_spans = over_spans + over_bytes;
        applied.message = (!messages.is_empty()).then(|| messages.join("; "));
        LimitMetrics::add(
            &m.truncated_attributes,
            tenant,
            "value_length",
            applied.truncated_values,
        );
        LimitMetrics::add(
            &m.truncated_attributes,
            tenant,
            "attributes_per_span",
            applied.dropped_attributes,
        );
        if applied.truncated_values + applied.dropped_attributes > 0 {
            tracing::debug!(
                tenant,
                truncated_values = applied.truncated_values,
                dropped_attributes = applied.dropped_attributes,
                "attributes limited"
            );
        }
        applied
    }

    /// Takes back what [`Limiter::apply`] counted for a request that was not accepted after all.
    pub fn release(&self, reservation: Reservation) {
        let Some(tenant) = reservation.tenant else {
            return;
        };
        for (trace, used) in reservation.traces {
            let mut shard = self.traces.shard(trace).lock();
            let key = (tenant.clone(), trace);
            let shard = &mut *shard;
            if let Some(u) = shard
                .current
                .get_mut(&key)
                .or_else(|| shard.previous.get_mut(&key))
            {
                u.spans = u.spans.saturating_sub(used.spans);
                u.bytes = u.bytes.saturating_sub(used.bytes);
            }
        }
    }

    /// Traces whose counts are held now.
    pub fn tracked_traces(&self) -> usize {
        self.traces.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Replaces the per-tenant overrides with the text of a per-tenant file (validated first; on
    /// error nothing changes).
    pub fn reload_overrides(&self, text: &str, origin: &str) -> Result<(), String> {
        let overrides = Overrides::parse(text, origin, &self.defaults)?;
        let table = Table::build(&self.defaults, &overrides);
        *self.table.write() = Arc::new(table);
        Ok(())
    }

    /// Re-reads the per-tenant file if it changed since the last look. `Ok(true)`: new limits
    /// apply. On error the previous limits stay; the failure is logged (once per change) and
    /// counted.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let Some(w) = &self.file else {
            return Ok(false);
        };
        let mut st = w.state.lock();
        let path = w.path.display().to_string();
        let stamp = match FileStamp::of(&w.path) {
            Ok(s) => s,
            Err(e) => {
                let e = format!("{path}: cannot read the per-tenant limits file: {e}");
                st.stamp = None;
                if st.failing.as_ref() != Some(&e) {
                    self.reload_failed(&e);
                    st.failing = Some(e.clone());
                }
                return Err(e);
            }
        };
        if st.stamp == Some(stamp) {
            return Ok(false);
        }
        // Remembered even when loading fails: the same broken file is reported once.
        st.stamp = Some(stamp);
        let result = std::fs::read_to_string(&w.path)
            .map_err(|e| format!("{path}: cannot read the per-tenant limits file: {e}"))
            .and_then(|text| self.reload_overrides(&text, &path));
        match &result {
            Ok(()) => {
                st.failing = None;
                self.metrics.last_reload_successful.set(1);
                let tenants = self.table.read().tenants.len();
                tracing::info!(file = %path, tenants, "per-tenant limits reloaded");
            }
            Err(e) => {
                self.reload_failed(e);
                st.failing = Some(e.clone());
            }
        }
        result.map(|()| true)
    }

    fn reload_failed(&self, e: &str) {
        self.metrics.reload_failures.inc();
        self.metrics.last_reload_successful.set(0);
        tracing::warn!(error = %e, "per-tenant limits not reloaded; keeping the previous limits");
    }

    /// Starts the task that checks the per-tenant file every `reload_interval` (none without a
    /// file). It ends with the runtime.
    pub fn spawn_reloader(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.file.as_ref()?.interval;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let limiter = this.clone();
                // Errors are logged and counted inside.
                let _ = tokio::task::spawn_blocking(move || limiter.reload_if_changed()).await;
            }
        }))
    }
}

fn trace_key(id: &[u8]) -> u128 {
    // Validation guarantees 16 bytes before limits apply.
    <[u8; 16]>::try_from(id)
        .map(u128::from_be_bytes)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Attribute limits.
// ---------------------------------------------------------------------------------------------

fn limit_attributes(span: &mut Span, limits: &TenantLimits, applied: &mut Applied) {
    let mut one = |attrs: &mut Vec<KeyValue>, dropped_count: &mut u32| {
        if let Some(max) = limits.max_attributes_per_span {
            if attrs.len() > max {
                let excess = attrs.len() - max;
                attrs.truncate(max);
                *dropped_count =
                    dropped_count.saturating_add(u32::try_from(excess).unwrap_or(u32::MAX));
                applied.dropped_attributes += excess as u64;
            }
        }
        if let Some(max) = limits.max_attribute_value_length {
            for kv in attrs.iter_mut() {
                if kv.value.as_mut().is_some_and(|v| truncate_value(v, max)) {
                    applied.truncated_values += 1;
                }
            }
        }
    };
    one(&mut span.attributes, &mut span.dropped_attributes_count);
    for e in &mut span.events {
        one(&mut e.attributes, &mut e.dropped_attributes_count);
    }
    for l in &mut span.links {
        one(&mut l.attributes, &mut l.dropped_attributes_count);
    }
}

/// Cuts string and bytes values longer than `max` bytes, also inside arrays and maps (keys are
/// left alone). Returns whether anything was cut.
pub fn truncate_value(value: &mut AnyValue, max: usize) -> bool {
    match &mut value.value {
        Some(Value::StringValue(s)) if s.len() > max => {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            true
        }
        Some(Value::BytesValue(b)) if b.len() > max => {
            b.truncate(max);
            true
        }
        Some(Value::ArrayValue(a)) => a
            .values
            .iter_mut()
            .fold(false, |any, v| truncate_value(v, max) | any),
        Some(Value::KvlistValue(kv)) => kv.values.iter_mut().fold(false, |any, kv| {
            kv.value.as_mut().is_some_and(|v| truncate_value(v, max)) | any
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::otlp::common::{ArrayValue, KeyValueList};
    use clew_model::otlp::trace::span::{Event, Link};
    use clew_model::otlp::trace::ScopeSpans;

    fn rate(per_second: u64, burst: u64) -> Rate {
        Rate { per_second, burst }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_millis(1)
    }

    #[test]
    fn bucket_starts_full_refills_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(10, 20), t0);
        assert_eq!(b.check(20, t0), Ok(()));
        b.take(20);
        // Empty: 5 tokens need half a second at 10/s.
        let wait = b.check(5, t0).unwrap_err();
        assert!(close(wait, secs(0.5)), "{wait:?}");
        assert_eq!(b.check(5, t0 + secs(0.5)), Ok(()));
        // Refill stops at the burst.
        assert!((b.available(t0 + secs(100.0)) - 20.0).abs() < 1e-9);
        assert!(
            b.check(21, t0 + secs(100.0)).is_ok(),
            "larger than the burst, bucket full"
        );
    }

    #[test]
    fn retry_after_is_the_time_until_the_request_fits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(4, 8), t0);
        b.take(6); // 2 left
        let wait = b.check(8, t0).unwrap_err();
        assert!(close(wait, secs(1.5)), "6 missing at 4/s: {wait:?}");
        // A refused check takes nothing.
        assert!((b.available(t0) - 2.0).abs() < 1e-9);
        // Waiting exactly that long is enough.
        assert_eq!(b.check(8, t0 + wait), Ok(()));
    }

    #[test]
    fn request_larger_than_burst_waits_for_a_full_bucket_then_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(10, 10), t0);
        b.take(4); // 6 left
                   // 25 can never fit in a bucket of 10: it waits for the bucket to be full (0.4s).
        let wait = b.check(25, t0).unwrap_err();
        assert!(close(wait, secs(0.4)), "{wait:?}");
        let t1 = t0 + wait;
        assert_eq!(b.check(25, t1), Ok(()));
        b.take(25);
        assert!((b.available(t1) + 15.0).abs() < 1e-6, "in debt by 15");
        // The debt is paid before anything else fits: 1 token needs 1.6s.
        let wait = b.check(1, t1).unwrap_err();
        assert!(close(wait, secs(1.6)), "{wait:?}");
    }

    #[test]
    fn bucket_reconfigure_keeps_tokens_up_to_the_new_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(100, 100), t0);
        b.reconfigure(rate(1, 5));
        assert!((b.available(t0) - 5.0).abs() < 1e-9);
        b.take(5);
        assert!(close(b.check(1, t0).unwrap_err(), secs(1.0)));
    }

    fn config(defaults: &str, overrides: &str) -> LimitsConfig {
        let mut cfg: LimitsConfig = serde_yaml::from_str(defaults).unwrap();
        cfg.validate().unwrap();
        cfg.overrides = Overrides::parse(overrides, "o.yaml", &cfg.defaults).unwrap();
        cfg
    }

    fn limiter(defaults: &str, overrides: &str) -> Limiter {
        Limiter::new(&config(defaults, overrides))
    }

    fn encoded(l: &Limiter) -> String {
        let mut r = Registry::default();
        l.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        text
    }

    #[test]
    fn rate_refusal_takes_nothing_and_is_counted_per_tenant() {
        let l = limiter(
            "defaults: {}",
            "overrides:\n  small: {ingestion_rate_spans: 10, ingestion_burst_spans: 10, ingestion_rate_bytes: 1000}\n",
        );
        let t0 = Instant::now();
        let small = l.limits_for("small");
        assert_eq!(small.spans_rate, Some(rate(10, 10)));
        assert_eq!(
            small.bytes_rate,
            Some(rate(1000, 1000)),
            "burst defaults to one second"
        );
        assert!(l.check_rate_at("small", &small, 6, 600, t0).is_ok());
        // Spans fit (4 left), bytes do not (400 left): refused by bytes, nothing taken.
        let e = l.check_rate_at("small", &small, 4, 500, t0).unwrap_err();
        assert_eq!(e.kind, RateKind::Bytes);
        assert!(close(e.retry_after, secs(0.1)), "{e:?}");
        assert!(
            e.to_string()
                .contains("ingestion_rate_bytes is 1000 bytes/s"),
            "{e}"
        );
        assert!(
            l.check_rate_at("small", &small, 4, 400, t0).is_ok(),
            "the refusal took nothing"
        );
        let e = l.check_rate_at("small", &small, 1, 0, t0).unwrap_err();
        assert_eq!(e.kind, RateKind::Spans);
        assert!(close(e.retry_after, secs(0.1)));
        // Another tenant has no limit at all; the bytes closure is not even called.
        let mut called = false;
        let big = Tenant::new("big").unwrap();
        for _ in 0..100 {
            l.check_rate(&big, 1_000_000, || {
                called = true;
                0
            })
            .unwrap();
        }
        assert!(!called);
        let text = encoded(&l);
        assert!(
            text.contains(
                r#"clew_tenant_refused_requests_total{tenant="small",reason="rate_bytes"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"clew_tenant_limited_spans_total{tenant="small",reason="rate_spans"} 1"#
            ),
            "{text}"
        );
        assert!(text
            .contains(r#"clew_tenant_limited_spans_total{tenant="small",reason="rate_bytes"} 4"#));
    }

    #[test]
    fn idle_full_buckets_are_swept() {
        let l = limiter("defaults: {ingestion_rate_spans: 100}", "");
        let limits = l.limits_for("x");
        let t0 = Instant::now();
        for i in 0..BUCKET_SWEEP_AT {
            l.check_rate_at(&format!("t{i}"), &limits, 1, 0, t0)
                .unwrap();
        }
        assert_eq!(l.buckets.lock().len(), BUCKET_SWEEP_AT);
        // A second later every bucket is full again, so they are dropped when a new tenant comes.
        l.check_rate_at("new", &limits, 1, 0, t0 + secs(1.0))
            .unwrap();
        assert_eq!(l.buckets.lock().len(), 1);
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn span(trace: u8, id: u8, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("span {id}"),
            attributes: attrs,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn spans_of(rs: &[ResourceSpans]) -> Vec<&Span> {
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect()
    }

    #[test]
    fn truncation_cuts_at_a_utf8_boundary() {
        let mut v = AnyValue {
            value: Some(s("héllo")), // 'é' is bytes 1..3
        };
        assert!(truncate_value(&mut v, 2));
        assert_eq!(v.value, Some(s("h")));
        let mut v = AnyValue {
            value: Some(s("héllo")),
        };
        assert!(truncate_value(&mut v, 3));
        assert_eq!(v.value, Some(s("hé")));
        let mut v = AnyValue {
            value: Some(s("😀😀")),
        };
        assert!(truncate_value(&mut v, 7));
        assert_eq!(v.value, Some(s("😀")));
        let mut v = AnyValue {
            value: Some(s("short")),
        };
        assert!(!truncate_value(&mut v, 5), "exactly the limit is kept");
        let mut v = AnyValue {
            value: Some(Value::IntValue(123456789)),
        };
        assert!(!truncate_value(&mut v, 1), "numbers are not cut");
    }

    #[test]
    fn truncation_reaches_nested_values_and_bytes() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("deep", s("abcdefgh")),
                kv(
                    "list",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(s("0123456789")),
                            },
                            AnyValue {
                                value: Some(Value::BoolValue(true)),
                            },
                        ],
                    }),
                ),
                kv("keep", s("abc")),
            ],
        });
        let mut v = AnyValue {
            value: Some(nested),
        };
        assert!(truncate_value(&mut v, 4));
        let Some(Value::KvlistValue(kvs)) = &v.value else {
            panic!()
        };
        assert_eq!(kvs.values[0].key, "deep", "keys are not cut");
        assert_eq!(kvs.values[0].value.as_ref().unwrap().value, Some(s("abcd")));
        let Some(Value::ArrayValue(a)) = &kvs.values[1].value.as_ref().unwrap().value else {
            panic!()
        };
        assert_eq!(a.values[0].value, Some(s("0123")));
        assert_eq!(a.values[1].value, Some(Value::BoolValue(true)));
        assert_eq!(kvs.values[2].value.as_ref().unwrap().value, Some(s("abc")));

        let mut b = AnyValue {
            value: Some(Value::BytesValue(vec![1, 2, 3, 4, 5, 6])),
        };
        assert!(truncate_value(&mut b, 4));
        assert_eq!(b.value, Some(Value::BytesValue(vec![1, 2, 3, 4])));
    }

    #[test]
    fn attribute_limits_apply_to_spans_events_and_links_and_are_counted() {
        let l = limiter(
            "defaults: {max_attributes_per_span: 2, max_attribute_value_length: 3}",
            "",
        );
        let tenant = Tenant::new("team-a").unwrap();
        let mut sp = span(
            1,
            1,
            vec![
                kv("a", s("long value")),
                kv("b", s("ok")),
                kv("c", s("dropped")),
                kv("d", s("dropped too")),
            ],
        );
        sp.dropped_attributes_count = 5; // the SDK dropped some already
        sp.events.push(Event {
            name: "e".into(),
            attributes: vec![kv("x", s("1")), kv("y", s("2")), kv("z", s("3"))],
            ..Default::default()
        });
        sp.links.push(Link {
            trace_id: vec![2; 16],
            span_id: vec![2; 8],
            attributes: vec![kv("l", s("abcdef"))],
            ..Default::default()
        });
        let mut rs = request(vec![sp]);
        rs[0].resource = Some(clew_model::otlp::resource::Resource {
            attributes: vec![
                kv("service.name", s("a very long service name")),
                kv("r2", s("x")),
                kv("r3", s("y")),
            ],
            ..Default::default()
        });
        let applied = l.apply(&tenant, &mut rs);
        assert_eq!(applied.rejected_spans, 0, "attribute limits reject nothing");
        assert!(applied.message.is_none());
        let out = spans_of(&rs)[0];
        let keys: Vec<&str> = out.attributes.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"], "the first ones are kept");
        assert_eq!(out.dropped_attributes_count, 7, "5 + 2 dropped here");
        assert_eq!(
            out.attributes[0].value.as_ref().unwrap().value,
            Some(s("lon"))
        );
        assert_eq!(out.events[0].attributes.len(), 2);
        assert_eq!(out.events[0].dropped_attributes_count, 1);
        assert_eq!(
            out.links[0].attributes[0].value.as_ref().unwrap().value,
            Some(s("abc"))
        );
        let resource = rs[0].resource.as_ref().unwrap();
        assert_eq!(
            resource.attributes.len(),
            3,
            "resource attributes are not limited"
        );
        assert_eq!(
            resource.attributes[0].value.as_ref().unwrap().value,
            Some(s("a very long service name"))
        );
        assert_eq!(applied.dropped_attributes, 3);
        assert_eq!(applied.truncated_values, 2);
        let text = encoded(&l);
        assert!(
            text.contains(
                r#"clew_tenant_truncated_attributes_total{tenant="team-a",reason="value_length"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"clew_tenant_truncated_attributes_total{tenant="team-a",reason="attributes_per_span"} 3"#
        ));
    }

    #[test]
    fn max_spans_per_trace_counts_across_requests_and_releases() {
        let l = limiter(
            "defaults: {}",
            "overrides:\n  team-a: {max_spans_per_trace: 3}\n",
        );
        let a = Tenant::new("team-a").unwrap();
        let b = Tenant::new("team-b").unwrap();
        let mut rs = request(vec![
            span(1, 1, vec![]),
            span(1, 2, vec![]),
            span(2, 3, vec![]),
        ]);
        assert_eq!(l.apply(&a, &mut rs).rejected_spans, 0);
        let mut rs = request(vec![
            span(1, 4, vec![]),
            span(1, 5, vec![]),
            span(2, 6, vec![]),
        ]);
        let applied = l.apply(&a, &mut rs);
        assert_eq!(applied.rejected_spans, 1);
        assert_eq!(
            applied.message.as_deref(),
            Some("max_spans_per_trace (3) exceeded for tenant team-a: 1 spans dropped")
        );
        let ids: Vec<u8> = spans_of(&rs).iter().map(|s| s.span_id[0]).collect();
        assert_eq!(ids, [4, 6], "the span over the limit is removed, in order");
        // Another tenant's trace with the same id is its own (and unlimited here).
        let mut rs = request((10..20).map(|i| span(1, i, vec![])).collect());
        assert_eq!(l.apply(&b, &mut rs).rejected_spans, 0);
        // A request the sink refused gives its counts back.
        let mut rs = request(vec![span(3, 1, vec![]), span(3, 2, vec![])]);
        let applied = l.apply(&a, &mut rs);
        assert_eq!(applied.rejected_spans, 0);
        l.release(applied.reservation);
        let mut rs = request(vec![
            span(3, 1, vec![]),
            span(3, 2, vec![]),
            span(3, 3, vec![]),
        ]);
        assert_eq!(l.apply(&a, &mut rs).rejected_spans, 0, "the retry fits");
        // Emptied containers are removed.
        let mut rs = request(vec![span(3, 9, vec![])]);
        assert_eq!(l.apply(&a, &mut rs).rejected_spans, 1);
        assert!(rs.is_empty());
        assert!(encoded(&l).contains(
            r#"clew_tenant_limited_spans_total{tenant="team-a",reason="max_spans_per_trace"} 2"#
        ));
    }

    #[test]
    fn max_bytes_per_trace_uses_encoded_span_sizes() {
        let one = span(1, 1, vec![kv("k", s("v"))]).encoded_len() as u64;
        let l = limiter(
            &format!("defaults: {{max_bytes_per_trace: {}}}", one * 2),
            "",
        );
        let t = Tenant::new("t").unwrap();
        let mut rs = request(vec![
            span(1, 1, vec![kv("k", s("v"))]),
            span(1, 2, vec![kv("k", s("v"))]),
            span(1, 3, vec![kv("k", s("v"))]),
        ]);
        let applied = l.apply(&t, &mut rs);
        assert_eq!(applied.rejected_spans, 1);
        assert!(applied.message.unwrap().starts_with(&format!(
            "max_bytes_per_trace ({} bytes) exceeded for tenant t: 1 spans dropped",
            one * 2
        )),);
    }

    #[test]
    fn idle_traces_are_evicted_and_counted() {
        let cfg = config("defaults: {max_spans_per_trace: 1}", "");
        let opts = LimiterOptions {
            trace_idle_timeout: secs(60.0),
            max_tracked_traces: 1000,
            trace_shards: 1,
        };
        let l = Limiter::with_options(&cfg, opts);
        let limits = l.limits_for("t");
        let t0 = Instant::now();
        let mut rs = request(vec![span(1, 1, vec![]), span(2, 1, vec![])]);
        l.apply_at("t", &limits, &mut rs, t0);
        assert_eq!(l.tracked_traces(), 2);
        // Trace 1 is seen again within the idle period: it is remembered (and full).
        let mut rs = request(vec![span(1, 2, vec![])]);
        assert_eq!(
            l.apply_at("t", &limits, &mut rs, t0 + secs(61.0))
                .rejected_spans,
            1
        );
        // Trace 2, untouched for two periods, is forgotten: it may start again.
        let mut rs = request(vec![span(2, 2, vec![])]);
        assert_eq!(
            l.apply_at("t", &limits, &mut rs, t0 + secs(125.0))
                .rejected_spans,
            0
        );
        let text = encoded(&l);
        assert!(
            text.contains(r#"clew_tenant_limits_traces_evicted_total{reason="idle"} 1"#),
            "{text}"
        );
        // Everything idle for two periods goes at the next access.
        let mut rs = request(vec![span(9, 1, vec![])]);
        l.apply_at("t", &limits, &mut rs, t0 + secs(400.0));
        assert_eq!(l.tracked_traces(), 1);
        assert!(encoded(&l).contains(r#"clew_tenant_limits_traces_evicted_total{reason="idle"} 3"#));
    }

    #[test]
    fn the_trace_map_is_bounded() {
        let cfg = config("defaults: {max_spans_per_trace: 10}", "");
        let opts = LimiterOptions {
            trace_idle_timeout: secs(3600.0),
            max_tracked_traces: 8,
            trace_shards: 1,
        };
        let l = Limiter::with_options(&cfg, opts);
        let limits = l.limits_for("t");
        let t0 = Instant::now();
        for i in 0..100u8 {
            let mut rs = request(vec![span(i + 1, 1, vec![])]);
            l.apply_at("t", &limits, &mut rs, t0);
            assert!(l.tracked_traces() <= 8, "{} after {i}", l.tracked_traces());
        }
        assert!(encoded(&l)
            .contains(r#"clew_tenant_limits_traces_evicted_total{reason="capacity"} 92"#));
        // A trace in the old generation is still known and moves back.
        let mut rs = request(vec![span(97, 2, vec![])]);
        l.apply_at("t", &limits, &mut rs, t0);
        let shard = l.traces.shards[0].lock();
        let key: TraceKey = (Arc::from("t"), u128::from_be_bytes([97; 16]));
        assert_eq!(shard.current.get(&key).map(|u| u.spans), Some(2));
    }

    #[test]
    fn overrides_merge_key_by_key_and_unlimited_lifts_a_default() {
        let l = limiter(
            "defaults: {ingestion_rate_spans: 100, max_spans_per_trace: 10, max_attribute_value_length: 64}",
            "overrides:\n  small: {ingestion_rate_spans: 5, ingestion_burst_spans: 7}\n  big: {ingestion_rate_spans: unlimited, max_spans_per_trace: 100000}\n  plain:\n",
        );
        let small = l.limits_for("small");
        assert_eq!(small.spans_rate, Some(rate(5, 7)));
        assert_eq!(small.max_spans_per_trace, Some(10), "inherited");
        assert_eq!(small.max_attribute_value_length, Some(64));
        let big = l.limits_for("big");
        assert_eq!(big.spans_rate, None);
        assert_eq!(big.max_spans_per_trace, Some(100000));
        assert_eq!(big.max_attribute_value_length, Some(64));
        assert_eq!(l.limits_for("plain"), l.limits_for("anyone-else"));
        assert_eq!(l.limits_for("anyone-else").spans_rate, Some(rate(100, 100)));
    }

    fn overrides_err(text: &str) -> String {
        Overrides::parse(text, "o.yaml", &TenantLimitsSpec::default()).unwrap_err()
    }

    #[test]
    fn validation_errors_name_the_file_the_key_and_the_fix() {
        let e = overrides_err("overrides:\n  small: {max_spans_per_trace: 0}\n");
        assert_eq!(e, "o.yaml: key `overrides.small.max_spans_per_trace`: must be at least 1 (fix: a positive number; remove the key or write `unlimited` for no limit)");
        let e = overrides_err("overrides:\n  small: {max_span_per_trace: 3}\n");
        assert!(
            e.starts_with("o.yaml: key `overrides.small.max_span_per_trace`: ")
                && e.contains("unknown field `max_span_per_trace`")
                && e.contains("fix:"),
            "{e}"
        );
        let e = overrides_err("overrides:\n  small: {ingestion_rate_bytes: -5}\n");
        assert!(
            e.contains("overrides.small.ingestion_rate_bytes") && e.contains("negative"),
            "{e}"
        );
        let e = overrides_err("overrides:\n  small: {ingestion_rate_bytes: 2.5}\n");
        assert!(e.contains("not a whole number"), "{e}");
        let e = overrides_err("overrides:\n  small: {ingestion_rate_bytes: lots}\n");
        assert!(e.contains("`unlimited`"), "{e}");
        let e = overrides_err("overrides:\n  small: {ingestion_burst_spans: 10}\n");
        assert!(
            e.contains("key `overrides.small.ingestion_burst_spans`: a burst needs a rate")
                && e.contains("fix:"),
            "{e}"
        );
        let e = overrides_err("overrides:\n  \"a/b\": {}\n");
        assert!(
            e.contains("key `overrides.a/b`") && e.contains("fix:"),
            "{e}"
        );
        let e = overrides_err("small: {max_spans_per_trace: 3}\n");
        assert!(e.contains("unknown field `small`"), "{e}");
        let e = overrides_err("overrides: [1, 2]\n");
        assert!(e.starts_with("o.yaml: key `overrides`"), "{e}");
        // A burst whose rate comes from the defaults is fine; 0 attributes is a choice.
        let defaults = TenantLimitsSpec {
            ingestion_rate_spans: Some(Setting::Limit(10)),
            ..Default::default()
        };
        Overrides::parse(
            "overrides:\n  small: {ingestion_burst_spans: 50, max_attributes_per_span: 0}\n",
            "o.yaml",
            &defaults,
        )
        .unwrap();
        assert_eq!(
            Overrides::parse("", "o.yaml", &defaults).unwrap(),
            Overrides::default()
        );
        assert_eq!(
            Overrides::parse("overrides:\n", "o.yaml", &defaults).unwrap(),
            Overrides::default()
        );
    }

    #[test]
    fn config_validation() {
        let parse = |y: &str| serde_yaml::from_str::<LimitsConfig>(y).unwrap().validate();
        assert!(parse("defaults: {max_spans_per_trace: 1000}").is_ok());
        let e = parse("defaults: {ingestion_burst_bytes: 10}").unwrap_err();
        assert!(
            e.starts_with("key `limits.defaults.ingestion_burst_bytes`"),
            "{e}"
        );
        let e = parse("reload_interval: 5s").unwrap_err();
        assert!(
            e.contains("limits.reload_interval") && e.contains("fix:"),
            "{e}"
        );
        let e = parse("per_tenant_file: o.yaml\nreload_interval: 0s").unwrap_err();
        assert!(e.contains("longer than 0s"), "{e}");
        let e = serde_yaml::from_str::<LimitsConfig>("reload_interval: soon").unwrap_err();
        assert!(e.to_string().contains("fix:"), "{e}");
    }

    #[test]
    fn per_tenant_file_loads_and_reloads_and_a_broken_file_keeps_the_old_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.yml");
        std::fs::write(&path, "overrides:\n  small: {max_spans_per_trace: 2}\n").unwrap();
        let mut cfg: LimitsConfig =
            serde_yaml::from_str("per_tenant_file: overrides.yml\nreload_interval: 1s").unwrap();
        cfg.validate().unwrap();
        cfg.load_per_tenant_file(dir.path()).unwrap();
        let l = Limiter::new(&cfg);
        assert_eq!(l.limits_for("small").max_spans_per_trace, Some(2));
        assert_eq!(l.reload_if_changed(), Ok(false), "unchanged");

        let write = |text: &str| {
            // Atomically, as the docs recommend.
            let tmp = dir.path().join("overrides.yml.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("overrides:\n  small: {max_spans_per_trace: 20}\n");
        assert_eq!(l.reload_if_changed(), Ok(true));
        assert_eq!(l.limits_for("small").max_spans_per_trace, Some(20));

        write("overrides:\n  small: {max_spans_per_trace: many}\n");
        let e = l.reload_if_changed().unwrap_err();
        assert!(e.contains("overrides.small.max_spans_per_trace"), "{e}");
        assert_eq!(l.limits_for("small").max_spans_per_trace, Some(20), "kept");
        assert_eq!(
            l.reload_if_changed(),
            Ok(false),
            "the same broken file is not re-read"
        );
        let text = encoded(&l);
        assert!(
            text.contains("clew_tenant_limits_reload_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("clew_tenant_limits_last_reload_successful 0"),
            "{text}"
        );

        write("overrides:\n  small: {max_spans_per_trace: 5}\n");
        assert_eq!(l.reload_if_changed(), Ok(true));
        assert_eq!(l.limits_for("small").max_spans_per_trace, Some(5));
        assert!(encoded(&l).contains("clew_tenant_limits_last_reload_successful 1"));

        // At start-up the same broken file is an error naming the file and the key.
        write("overrides:\n  small: {max_spans_per_trace: 0}\n");
        let mut cfg2: LimitsConfig =
            serde_yaml::from_str("per_tenant_file: overrides.yml").unwrap();
        let e = cfg2.load_per_tenant_file(dir.path()).unwrap_err();
        assert!(
            e.contains("overrides.yml: key `overrides.small.max_spans_per_trace`"),
            "{e}"
        );
        let mut cfg3: LimitsConfig = serde_yaml::from_str("per_tenant_file: missing.yml").unwrap();
        let e = cfg3.load_per_tenant_file(dir.path()).unwrap_err();
        assert!(e.contains("missing.yml") && e.contains("fix:"), "{e}");
    }
}
