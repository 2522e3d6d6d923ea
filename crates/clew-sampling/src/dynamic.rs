//! Dynamic per-key sampling (Refinery's EMA samplers): traces are grouped by a key built from
//! attribute fields (e.g. `service.name` + `http.route`); per-key counts are smoothed with an
//! exponential moving average every `adjustment_interval_secs`, and sample rates are assigned so
//! that rare keys are kept whole and frequent keys are sampled down, toward a goal overall sample
//! rate (`goal_sample_rate: 10` = keep 1 in 10) or a goal throughput (`goal_throughput_per_sec`).
//! Decisions use the trace's consistent randomness, so they agree with head sampling.

use crate::consistent::MAX_THRESHOLD;
use crate::policy::{ConfigError, TraceView};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicConfig {
    /// Fields making the key: span/resource attribute names of the root span, or `span.name`,
    /// `tenant`.
    pub key_fields: Vec<String>,
    pub goal_sample_rate: u32,
    pub goal_throughput_per_sec: u32,
    pub adjustment_interval_secs: u64,
    /// Weight of the newest interval in the moving average (0 < w ≤ 1).
    pub ema_weight: f64,
    /// Keys beyond this many share one overflow key.
    pub max_keys: usize,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        Self {
            key_fields: vec!["service.name".into()],
            goal_sample_rate: 0,
            goal_throughput_per_sec: 0,
            adjustment_interval_secs: 15,
            ema_weight: 0.5,
            max_keys: 10_000,
        }
    }
}

impl DynamicConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_fields.is_empty() {
            return Err((
                "key_fields".into(),
                "is empty (fix: e.g. [service.name, http.route])".into(),
            ));
        }
        if (self.goal_sample_rate == 0) == (self.goal_throughput_per_sec == 0) {
            return Err((
                "goal_sample_rate".into(),
                "set exactly one of goal_sample_rate and goal_throughput_per_sec (fix: e.g. goal_sample_rate: 10)".into(),
            ));
        }
        if self.adjustment_interval_secs == 0 {
            return Err((
                "adjustment_interval_secs".into(),
                "must be at least 1 (fix: e.g. 15)".into(),
            ));
        }
        if !(self.ema_weight > 0.0 && self.ema_weight <= 1.0) {
            return Err((
                "ema_weight".into(),
                "must be in (0, 1] (fix: e.g. 0.5)".into(),
            ));
        }
        Ok(())
    }
}

struct State {
    counts: HashMap<String, u64>,
    ema: HashMap<String, f64>,
    /// Sample rate per key (keep 1 in N); unknown keys are kept whole.
    rates: HashMap<String, f64>,
    next_adjust_ms: Option<u64>,
}

pub struct DynamicSampler {
    cfg: DynamicConfig,
    state: Mutex<State>,
}

const OVERFLOW_KEY: &str = "<overflow>";

impl DynamicSampler {
    pub fn new(cfg: DynamicConfig) -> Self {
        Self {
            cfg,
            state: Mutex::new(State {
                counts: HashMap::new(),
                ema: HashMap::new(),
                rates: HashMap::new(),
                next_adjust_ms: None,
            }),
        }
    }

    pub fn key(&self, t: &TraceView) -> String {
        self.cfg
            .key_fields
            .iter()
            .map(|f| t.field(f).unwrap_or_else(|| "-".into()))
            .collect::<Vec<_>>()
            .join("|")
    }

    /// The current sample rate (keep 1 in N) of a key.
    pub fn rate_of(&self, key: &str) -> f64 {
        self.state.lock().rates.get(key).copied().unwrap_or(1.0)
    }

    /// The rejection threshold (tracestate `th`) of the trace's key at its current rate.
    pub fn threshold_for(&self, t: &TraceView) -> u64 {
        let rate = self.rate_of(&self.key(t));
        if rate <= 1.0 {
            0
        } else {
            ((MAX_THRESHOLD as f64) * (1.0 - 1.0 / rate)) as u64
        }
    }

    pub fn sample(&self, t: &TraceView) -> bool {
        let mut key = self.key(t);
        let rate = {
            let mut st = self.state.lock();
            if !st.counts.contains_key(&key)
                && !st.ema.contains_key(&key)
                && st.counts.len() >= self.cfg.max_keys
            {
                key = OVERFLOW_KEY.into();
            }
            *st.counts.entry(key.clone()).or_default() += 1;
            if st.next_adjust_ms.is_none() {
                st.next_adjust_ms = Some(t.now_ms + self.cfg.adjustment_interval_secs * 1000);
            }
            st.rates.get(&key).copied().unwrap_or(1.0)
        };
        if rate <= 1.0 {
            return true;
        }
        // Keep iff randomness falls in the top 1/rate of the space: consistent per trace.
        let threshold = MAX_THRESHOLD as f64 * (1.0 - 1.0 / rate);
        (t.randomness() as f64) >= threshold
    }

    /// Recomputes the rates when the adjustment interval has passed.
    pub fn tick(&self, now_ms: u64) {
        let mut st = self.state.lock();
        match st.next_adjust_ms {
            Some(due) if now_ms >= due => {}
            _ => return,
        }
        st.next_adjust_ms = Some(now_ms + self.cfg.adjustment_interval_secs * 1000);
        let counts = std::mem::take(&mut st.counts);
        let w = self.cfg.ema_weight;
        let mut keys: Vec<String> = st.ema.keys().cloned().collect();
        keys.extend(counts.keys().filter(|k| !st.ema.contains_key(*k)).cloned());
        let mut ema = HashMap::new();
        for k in keys {
            let c = counts.get(&k).copied().unwrap_or(0) as f64;
            let old = st.ema.get(&k).copied().unwrap_or(c);
            let v = w * c + (1.0 - w) * old;
            if v >= 0.01 {
                ema.insert(k, v);
            }
        }
        st.rates = assign_rates(&ema, self.goal_kept(&ema));
        st.ema = ema;
    }

    fn goal_kept(&self, ema: &HashMap<String, f64>) -> f64 {
        if self.cfg.goal_throughput_per_sec > 0 {
            (self.cfg.goal_throughput_per_sec as u64 * self.cfg.adjustment_interval_secs) as f64
        } else {
            ema.values().sum::<f64>() / self.cfg.goal_sample_rate as f64
        }
    }
}

/// Water-filling: keys in ascending order of traffic each get an equal share of the remaining
/// budget of kept traces; a key under its share is kept whole (rate 1), a key over it is sampled at
/// `count / share`.
pub fn assign_rates(ema: &HashMap<String, f64>, goal_kept: f64) -> HashMap<String, f64> {
    let mut keys: Vec<(&String, f64)> = ema.iter().map(|(k, v)| (k, *v)).collect();
    keys.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut budget = goal_kept.max(1.0);
    let n = keys.len();
    let mut out = HashMap::new();
    for (i, (k, c)) in keys.into_iter().enumerate() {
        let share = budget / (n - i) as f64;
        if c <= share {
            out.insert(k.clone(), 1.0);
            budget -= c;
        } else {
            out.insert(k.clone(), c / share.max(1e-9));
            budget -= share;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_keys_kept_frequent_keys_sampled_toward_goal() {
        let ema: HashMap<String, f64> = [("rare".into(), 5.0), ("hot".into(), 995.0)].into();
        let r = assign_rates(&ema, 100.0);
        assert_eq!(r["rare"], 1.0);
        // 95 kept out of 995.
        assert!((r["hot"] - 995.0 / 95.0).abs() < 1e-6, "{r:?}");
        let kept: f64 = ema.iter().map(|(k, c)| c / r[k]).sum();
        assert!((kept - 100.0).abs() < 1e-6);
    }

    #[test]
    fn throughput_goal_sets_the_kept_budget() {
        let d = DynamicSampler::new(DynamicConfig {
            key_fields: vec!["service.name".into()],
            goal_throughput_per_sec: 2,
            adjustment_interval_secs: 10,
            ..Default::default()
        });
        let ema: HashMap<String, f64> = [("a".into(), 400.0), ("b".into(), 10.0)].into();
        let goal = d.goal_kept(&ema);
        assert_eq!(goal, 20.0, "2/s over a 10 s interval");
        let r = assign_rates(&ema, goal);
        assert_eq!(r["b"], 1.0);
        assert!((400.0 / r["a"] - 10.0).abs() < 1e-9, "{r:?}");
        assert!(DynamicConfig {
            goal_sample_rate: 5,
            goal_throughput_per_sec: 5,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
