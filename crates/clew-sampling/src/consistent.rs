//! Consistent probability sampling per the OpenTelemetry tracestate probability-sampling spec.
//!
//! Every trace carries 56 bits of randomness `R` — the `rv:` sub-key of the `ot` tracestate entry,
//! or else the low 56 bits of the trace id. The W3C random flag (0x02 in the trace flags, the low
//! byte of OTLP `Span.flags`) would say the id is random, but most SDKs leave it unset, so Clew uses
//! the trace id bits whether or not it is set; for old, non-random ids use `mode: hash_seed`.
//! A sampler with rejection threshold `T`
//! keeps the span iff `R >= T`; `T = (1 - p) · 2^56`. The threshold a span was sampled with is
//! written as `th:` (hex, trailing zeros removed) so the adjusted count `2^56 / (2^56 - T)` stays
//! derivable downstream. Thresholds are only ever raised, never lowered.

use clew_model::otlp::trace::Span;
use clew_model::{SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::HashMap;

/// `clew_sampling_head_spans{processor, decision}`: spans kept/dropped by probabilistic samplers.
#[derive(Clone, Default)]
pub struct HeadMetrics(pub Family<Vec<(String, String)>, Counter>);

impl HeadMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_sampling_head_spans",
            "Spans decided by probabilistic (head) samplers",
            self.0.clone(),
        );
    }

    pub fn get(&self, processor: &str, decision: &str) -> u64 {
        self.0
            .get_or_create(&vec![
                ("processor".into(), processor.into()),
                ("decision".into(), decision.into()),
            ])
            .get()
    }
}

/// 2^56: the randomness and threshold domain.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// Threshold for a keep probability in [0, 1]. `p = 1` gives 0 (keep all); `p = 0` gives 2^56
/// (keep nothing; not representable as `th`, callers drop instead of writing it).
pub fn threshold_for_probability(p: f64) -> u64 {
    if p.is_nan() || p <= 0.0 {
        return MAX_THRESHOLD;
    }
    if p >= 1.0 {
        return 0;
    }
    let reject = (1.0 - p) * MAX_THRESHOLD as f64;
    (reject.round() as u64).min(MAX_THRESHOLD)
}

/// Keep probability of a threshold.
pub fn probability_of_threshold(th: u64) -> f64 {
    (MAX_THRESHOLD - th.min(MAX_THRESHOLD)) as f64 / MAX_THRESHOLD as f64
}

/// Adjusted count (how many spans a kept span represents): `2^56 / (2^56 - th)`.
pub fn adjusted_count(th: u64) -> f64 {
    if th >= MAX_THRESHOLD {
        return f64::INFINITY;
    }
    MAX_THRESHOLD as f64 / (MAX_THRESHOLD - th) as f64
}

/// `th` encoding: 14 hex digits with trailing zeros removed; zero is `"0"`.
pub fn encode_threshold(th: u64) -> String {
    if th == 0 {
        return "0".into();
    }
    let s = format!("{:014x}", th.min(MAX_THRESHOLD - 1));
    s.trim_end_matches('0').to_string()
}

/// Parses a `th` value: 1 to 14 hex digits, right-padded with zeros.
pub fn parse_threshold(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0<14}");
    u64::from_str_radix(&padded, 16).ok()
}

/// Parses an `rv` value: exactly 14 hex digits.
pub fn parse_randomness(s: &str) -> Option<u64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The `ot` vendor entry of a W3C tracestate: its `th` and `rv` plus the other sub-keys in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OtState {
    pub th: Option<u64>,
    pub rv: Option<u64>,
    /// Other `key:value` sub-keys, kept verbatim.
    pub rest: Vec<String>,
}

/// Reads the `ot` entry of a tracestate string. Malformed `th`/`rv` values are ignored (as if absent).
pub fn parse_ot(tracestate: &str) -> OtState {
    let mut out = OtState::default();
    for member in tracestate.split(',') {
        let member = member.trim();
        let Some(value) = member.strip_prefix("ot=") else {
            continue;
        };
        for sub in value.split(';').filter(|s| !s.is_empty()) {
            if let Some(v) = sub.strip_prefix("th:") {
                out.th = parse_threshold(v);
            } else if let Some(v) = sub.strip_prefix("rv:") {
                out.rv = parse_randomness(v);
            } else {
                out.rest.push(sub.to_string());
            }
        }
    }
    out
}

/// Writes `th` into the `ot` entry (which moves to the front, as W3C requires for a modified
/// member), keeping the other members and `ot` sub-keys.
pub fn write_threshold(tracestate: &str, th: u64) -> String {
    let ot = parse_ot(tracestate);
    let mut subs = vec![format!("th:{}", encode_threshold(th))];
    if let Some(rv) = ot.rv {
        subs.push(format!("rv:{rv:014x}"));
    }
    subs.extend(ot.rest);
    let mut members = vec![format!("ot={}", subs.join(";"))];
    members.extend(
        tracestate
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && !m.starts_with("ot="))
            .map(str::to_string),
    );
    members.join(",")
}

/// The trace's 56-bit randomness: `rv` if present, else the trace id's low 56 bits.
pub fn randomness(trace_id: &[u8], ot: &OtState) -> u64 {
    if let Some(rv) = ot.rv {
        return rv;
    }
    trace_id_randomness(trace_id)
}

pub fn trace_id_randomness(trace_id: &[u8]) -> u64 {
    if trace_id.len() < 7 {
        return 0;
    }
    let mut v = 0u64;
    for b in &trace_id[trace_id.len() - 7..] {
        v = (v << 8) | *b as u64;
    }
    v
}

/// W3C trace-flags random bit, carried in the low byte of OTLP `Span.flags`.
pub const W3C_RANDOM_FLAG: u32 = 0x02;

/// FNV-1a 32-bit hash of seed + trace id, as the OTel Collector's `hash_seed` mode.
pub fn hash_seed_bucket(seed: u32, trace_id: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in seed.to_le_bytes().iter().chain(trace_id) {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Multiply the incoming probability by the configured one (threshold raised accordingly).
    #[default]
    Proportional,
    /// Sample to the configured probability overall: threshold = max(incoming, configured).
    Equalizing,
    /// Hash the trace id with `hash_seed` (for old ids without randomness); writes `th` too.
    HashSeed,
}

/// `probabilistic_sampler` processor config (OTel Collector shape, plus per-tenant percentages).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticSamplerConfig {
    pub sampling_percentage: f64,
    pub mode: Mode,
    pub hash_seed: u32,
    /// Per-tenant overrides of `sampling_percentage` (tenant from the request's tenant header).
    pub tenant_percentages: HashMap<String, f64>,
}

impl Default for ProbabilisticSamplerConfig {
    fn default() -> Self {
        Self {
            sampling_percentage: 100.0,
            mode: Mode::Proportional,
            hash_seed: 0,
            tenant_percentages: HashMap::new(),
        }
    }
}

impl ProbabilisticSamplerConfig {
    /// Checks ranges; errors are `(key relative to the processor, message with fix)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let ok = |p: f64| (0.0..=100.0).contains(&p);
        if !ok(self.sampling_percentage) {
            return Err((
                "sampling_percentage".into(),
                format!(
                    "{} is not a percentage (fix: a number from 0 to 100, e.g. 10)",
                    self.sampling_percentage
                ),
            ));
        }
        for (t, p) in &self.tenant_percentages {
            if !ok(*p) {
                return Err((
                    format!("tenant_percentages.{t}"),
                    format!("{p} is not a percentage (fix: a number from 0 to 100)"),
                ));
            }
        }
        Ok(())
    }
}

/// The head (consistent probability) sampling processor.
pub struct ProbabilisticSampler {
    name: String,
    cfg: ProbabilisticSamplerConfig,
    kept: Counter,
    dropped: Counter,
}

impl ProbabilisticSampler {
    pub fn new(name: impl Into<String>, cfg: ProbabilisticSamplerConfig) -> Self {
        Self::with_metrics(name, cfg, &HeadMetrics::default())
    }

    pub fn with_metrics(
        name: impl Into<String>,
        cfg: ProbabilisticSamplerConfig,
        m: &HeadMetrics,
    ) -> Self {
        let name = name.into();
        let c = |d: &str| {
            m.0.get_or_create(&vec![
                ("processor".into(), name.clone()),
                ("decision".into(), d.into()),
            ])
            .clone()
        };
        Self {
            kept: c("kept"),
            dropped: c("dropped"),
            name,
            cfg,
        }
    }

    fn percentage(&self, tenant: &str) -> f64 {
        self.cfg
            .tenant_percentages
            .get(tenant)
            .copied()
            .unwrap_or(self.cfg.sampling_percentage)
    }

    /// Decides one span; on keep, rewrites its tracestate `th`. Returns whether to keep it.
    pub fn decide_span(&self, span: &mut Span, percentage: f64) -> bool {
        let p = percentage / 100.0;
        let cfg_th = threshold_for_probability(p);
        let ot = parse_ot(&span.trace_state);
        let incoming = ot.th.unwrap_or(0);
        let (keep, new_th) = match self.cfg.mode {
            Mode::HashSeed => {
                // 14-bit buckets, as the collector: keep iff hash bucket < p · 2^14.
                let bucket = hash_seed_bucket(self.cfg.hash_seed, &span.trace_id) & 0x3fff;
                let keep = (bucket as f64) < p * 16384.0;
                (keep, incoming.max(cfg_th))
            }
            Mode::Equalizing => {
                let th = incoming.max(cfg_th);
                (randomness(&span.trace_id, &ot) >= th, th)
            }
            Mode::Proportional => {
                // p_new = p_in · p  ⇒  th_new = 2^56 − (2^56 − th_in) · p
                let keep_in = (MAX_THRESHOLD - incoming.min(MAX_THRESHOLD)) as f64;
                let th = if p >= 1.0 {
                    incoming
                } else {
                    MAX_THRESHOLD - (keep_in * p).round() as u64
                };
                let th = th.max(incoming);
                (randomness(&span.trace_id, &ot) >= th, th)
            }
        };
        if !keep || new_th >= MAX_THRESHOLD {
            return false;
        }
        if new_th != incoming || ot.th.is_none() {
            span.trace_state = write_threshold(&span.trace_state, new_th);
        }
        true
    }
}

impl Processor for ProbabilisticSampler {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&self, mut batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        let pct = self.percentage(batch.tenant.as_str());
        let (mut kept, mut dropped) = (0u64, 0u64);
        for rs in &mut batch.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain_mut(|s| {
                    let k = self.decide_span(s, pct);
                    if k {
                        kept += 1;
                    } else {
                        dropped += 1;
                    }
                    k
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        batch.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        self.kept.inc_by(kept);
        self.dropped.inc_by(dropped);
        if batch.span_count() == 0 {
            Ok(ProcessOutcome::Consumed)
        } else {
            Ok(ProcessOutcome::Forward(batch))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span_with(trace_id: [u8; 16], ts: &str) -> Span {
        Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![1; 8],
            trace_state: ts.into(),
            ..Default::default()
        }
    }

    fn tid(r: u64) -> [u8; 16] {
        let mut t = [0xaa; 16];
        t[9..].copy_from_slice(&r.to_be_bytes()[1..]);
        t
    }

    #[test]
    fn threshold_encoding_matches_spec_examples() {
        // Spec examples: 50% → th:8, 25% → th:c, 10% → th:e666..., 100% → th:0.
        assert_eq!(encode_threshold(threshold_for_probability(0.5)), "8");
        assert_eq!(encode_threshold(threshold_for_probability(0.25)), "c");
        assert_eq!(encode_threshold(threshold_for_probability(1.0)), "0");
        assert!(encode_threshold(threshold_for_probability(0.1)).starts_with("e666"));
        assert_eq!(parse_threshold("8"), Some(1 << 55));
        assert_eq!(parse_threshold("c"), Some(0xc0_0000_0000_0000));
        assert_eq!(parse_threshold(""), None);
        assert_eq!(parse_threshold("123456789abcdef"), None, "15 digits");
        assert_eq!(parse_threshold("xyz"), None);
        assert_eq!(adjusted_count(1 << 55), 2.0);
        assert_eq!(adjusted_count(0xc0_0000_0000_0000), 4.0);
        assert_eq!(parse_randomness("ffffffffffffff"), Some(MAX_THRESHOLD - 1));
        assert_eq!(parse_randomness("fff"), None);
    }

    #[test]
    fn tracestate_rewrite_keeps_other_members_and_subkeys() {
        let ts = "vendor=a,ot=rv:0123456789abcd;p:8;th:c,other=b";
        let o = parse_ot(ts);
        assert_eq!(o.rv, Some(0x0123456789abcd));
        assert_eq!(o.th, Some(0xc0_0000_0000_0000));
        assert_eq!(o.rest, vec!["p:8"]);
        let w = write_threshold(ts, 0xe0_0000_0000_0000);
        assert_eq!(w, "ot=th:e;rv:0123456789abcd;p:8,vendor=a,other=b");
        assert_eq!(write_threshold("", 1 << 55), "ot=th:8");
    }

    #[test]
    fn keeps_iff_randomness_at_least_threshold_and_writes_th() {
        let s = ProbabilisticSampler::new(
            "p",
            ProbabilisticSamplerConfig {
                sampling_percentage: 50.0,
                ..Default::default()
            },
        );
        let mut low = span_with(tid((1 << 55) - 1), "");
        let mut high = span_with(tid(1 << 55), "");
        assert!(!s.decide_span(&mut low, 50.0));
        assert!(s.decide_span(&mut high, 50.0));
        assert_eq!(high.trace_state, "ot=th:8");
        // rv overrides the trace id bits.
        let mut rv = span_with(tid(0), "ot=rv:ffffffffffffff");
        assert!(s.decide_span(&mut rv, 50.0));
        assert_eq!(rv.trace_state, "ot=th:8;rv:ffffffffffffff");
    }

    #[test]
    fn proportional_multiplies_and_never_lowers_threshold() {
        let s = ProbabilisticSampler::new("p", ProbabilisticSamplerConfig::default());
        // Incoming 50% (th:8), we apply 50% → 25% overall (th:c).
        let mut sp = span_with(tid(0xf0_0000_0000_0000), "ot=th:8");
        assert!(s.decide_span(&mut sp, 50.0));
        assert_eq!(parse_ot(&sp.trace_state).th, Some(0xc0_0000_0000_0000));
        // 100% downstream keeps th as it is.
        let mut sp = span_with(tid(0xf0_0000_0000_0000), "ot=th:8");
        assert!(s.decide_span(&mut sp, 100.0));
        assert_eq!(sp.trace_state, "ot=th:8");
    }

    #[test]
    fn equalizing_takes_the_max_threshold() {
        let s = ProbabilisticSampler::new(
            "p",
            ProbabilisticSamplerConfig {
                mode: Mode::Equalizing,
                ..Default::default()
            },
        );
        // Incoming 25% (th:c) with configured 50% keeps th:c — never lowered.
        let mut sp = span_with(tid(0xd0_0000_0000_0000), "ot=th:c");
        assert!(s.decide_span(&mut sp, 50.0));
        assert_eq!(parse_ot(&sp.trace_state).th, Some(0xc0_0000_0000_0000));
        // Incoming 75% (th:4) with configured 50% → th:8.
        let mut sp = span_with(tid(0xd0_0000_0000_0000), "ot=th:4");
        assert!(s.decide_span(&mut sp, 50.0));
        assert_eq!(parse_ot(&sp.trace_state).th, Some(1 << 55));
        let mut sp = span_with(tid(0x70_0000_0000_0000), "ot=th:4");
        assert!(!s.decide_span(&mut sp, 50.0));
    }

    #[test]
    fn rate_is_close_to_configured_and_consistent_per_trace() {
        let s = ProbabilisticSampler::new("p", ProbabilisticSamplerConfig::default());
        let mut kept = 0;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&x.to_be_bytes());
            t[8..].copy_from_slice(&x.rotate_left(29).to_be_bytes());
            let a = s.decide_span(&mut span_with(t, ""), 10.0);
            let b = s.decide_span(&mut span_with(t, ""), 10.0);
            assert_eq!(a, b, "same trace, same decision");
            kept += a as u32;
        }
        assert!((1700..2300).contains(&kept), "{kept}");
    }

    #[test]
    fn hash_seed_mode_and_tenant_rates() {
        let cfg = ProbabilisticSamplerConfig {
            mode: Mode::HashSeed,
            hash_seed: 22,
            sampling_percentage: 0.0,
            tenant_percentages: [("vip".to_string(), 100.0)].into(),
        };
        let s = ProbabilisticSampler::new("p", cfg);
        use clew_model::otlp::trace::{ResourceSpans, ScopeSpans};
        let batch = |tenant: &str| {
            SpanBatch::new(
                clew_model::Tenant::new(tenant).unwrap(),
                vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span_with(tid(5), "")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            )
        };
        assert!(matches!(
            s.process(batch("free")).unwrap(),
            ProcessOutcome::Consumed
        ));
        match s.process(batch("vip")).unwrap() {
            ProcessOutcome::Forward(b) => assert_eq!(
                b.resource_spans[0].scope_spans[0].spans[0].trace_state,
                "ot=th:0"
            ),
            ProcessOutcome::Consumed => panic!("vip is kept at 100%"),
        }
    }
}
