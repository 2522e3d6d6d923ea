//! Jaeger-compatible remote sampling for SDKs: `GET /sampling?service=S` answers with Jaeger's JSON
//! sampling strategy, either from a strategies file (Jaeger's `strategies.json` format:
//! `default_strategy`, `service_strategies`, `operation_strategies`) or adaptively — per-operation
//! probabilities recomputed from the root spans flowing through the pipeline, toward a target
//! number of sampled traces per second (Jaeger's adaptive sampling).

use clew_model::{attrs, SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Jaeger's strategies file.
#[derive(Debug, Clone, Deserialize, Default, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategiesFile {
    #[serde(default)]
    pub default_strategy: Option<Strategy>,
    #[serde(default)]
    pub service_strategies: Vec<ServiceStrategy>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    #[serde(rename = "type")]
    pub kind: String,
    pub param: f64,
    #[serde(default)]
    pub operation_strategies: Vec<OperationStrategy>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStrategy {
    pub service: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: f64,
    #[serde(default)]
    pub operation_strategies: Vec<OperationStrategy>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperationStrategy {
    pub operation: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: f64,
}

fn check_strategy(kind: &str, param: f64, path: &str) -> Result<(), String> {
    match kind {
        "probabilistic" if (0.0..=1.0).contains(&param) => Ok(()),
        "probabilistic" => Err(format!(
            "{path}.param: {param} is not a probability (fix: 0.0 to 1.0)"
        )),
        "ratelimiting" if param >= 0.0 => Ok(()),
        "ratelimiting" => Err(format!(
            "{path}.param: {param} is negative (fix: traces per second, e.g. 10)"
        )),
        other => Err(format!(
            "{path}.type: {other:?} is not a strategy type (fix: probabilistic or ratelimiting)"
        )),
    }
}

impl StrategiesFile {
    /// Parses and validates a strategies file; errors name the key inside the file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let f: StrategiesFile = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("key `{}`: {}", e.path(), e.inner()))?;
        if let Some(d) = &f.default_strategy {
            check_strategy(&d.kind, d.param, "default_strategy")?;
            for (i, o) in d.operation_strategies.iter().enumerate() {
                check_op(o, &format!("default_strategy.operation_strategies[{i}]"))?;
            }
        }
        for (i, s) in f.service_strategies.iter().enumerate() {
            check_strategy(&s.kind, s.param, &format!("service_strategies[{i}]"))?;
            for (j, o) in s.operation_strategies.iter().enumerate() {
                check_op(
                    o,
                    &format!("service_strategies[{i}].operation_strategies[{j}]"),
                )?;
            }
        }
        Ok(f)
    }

    /// The Jaeger JSON response for a service; services the file does not name get its
    /// `default_strategy`, or Jaeger's default (probabilistic 0.001) when it has none.
    pub fn strategy_for(&self, service: &str) -> Json {
        self.strategy_for_or(service, 0.001)
    }

    /// Like [`StrategiesFile::strategy_for`], with `fallback` as the probability when the file
    /// has no `default_strategy`.
    pub fn strategy_for_or(&self, service: &str, fallback: f64) -> Json {
        let default = self.default_strategy.clone().unwrap_or(Strategy {
            kind: "probabilistic".into(),
            param: fallback,
            operation_strategies: Vec::new(),
        });
        let (kind, param, mut ops) = match self
            .service_strategies
            .iter()
            .find(|s| s.service == service)
        {
            Some(s) => (s.kind.clone(), s.param, s.operation_strategies.clone()),
            None => (default.kind.clone(), default.param, Vec::new()),
        };
        // Default operation strategies apply to every service unless it overrides the operation.
        for o in &default.operation_strategies {
            if !ops.iter().any(|x| x.operation == o.operation) {
                ops.push(o.clone());
            }
        }
        let mut out = if kind == "ratelimiting" {
            json!({
                "strategyType": "RATE_LIMITING",
                "rateLimitingSampling": {"maxTracesPerSecond": param.round() as i64},
            })
        } else {
            json!({
                "strategyType": "PROBABILISTIC",
                "probabilisticSampling": {"samplingRate": param},
            })
        };
        if !ops.is_empty() && kind == "probabilistic" {
            out["operationSampling"] = json!({
                "defaultSamplingProbability": param,
                "defaultLowerBoundTracesPerSecond": 0.0,
                "defaultUpperBoundTracesPerSecond": 0.0,
                "perOperationStrategies": ops.iter().map(|o| json!({
                    "operation": o.operation,
                    "probabilisticSampling": {"samplingRate": o.param},
                })).collect::<Vec<_>>(),
            });
        }
        out
    }
}

fn check_op(o: &OperationStrategy, path: &str) -> Result<(), String> {
    if o.kind != "probabilistic" {
        return Err(format!(
            "{path}.type: operation strategies must be probabilistic (fix: type: probabilistic)"
        ));
    }
    check_strategy(&o.kind, o.param, path)
}

/// Adaptive mode settings (Jaeger adaptive sampling names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Sampled traces per second wanted per operation.
    pub target_samples_per_second: f64,
    pub initial_sampling_probability: f64,
    pub min_sampling_probability: f64,
    pub max_sampling_probability: f64,
    /// Lower bound of traces per second per operation the SDK always samples.
    pub min_samples_per_second: f64,
    pub calculation_interval_secs: u64,
    /// Most operations tracked per service; others use the service default.
    pub max_operations_per_service: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            target_samples_per_second: 1.0,
            initial_sampling_probability: 0.001,
            min_sampling_probability: 1e-5,
            max_sampling_probability: 1.0,
            min_samples_per_second: 1.0 / 60.0,
            calculation_interval_secs: 60,
            max_operations_per_service: 2000,
        }
    }
}

impl AdaptiveConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let prob = |v: f64| (0.0..=1.0).contains(&v);
        if self.target_samples_per_second.is_nan() || self.target_samples_per_second <= 0.0 {
            return Err((
                "target_samples_per_second".into(),
                "must be above 0 (fix: e.g. 1)".into(),
            ));
        }
        for (k, v) in [
            (
                "initial_sampling_probability",
                self.initial_sampling_probability,
            ),
            ("min_sampling_probability", self.min_sampling_probability),
            ("max_sampling_probability", self.max_sampling_probability),
        ] {
            if !prob(v) {
                return Err((
                    k.into(),
                    format!("{v} is not a probability (fix: 0.0 to 1.0)"),
                ));
            }
        }
        if self.min_sampling_probability > self.max_sampling_probability {
            return Err((
                "min_sampling_probability".into(),
                "is above max_sampling_probability (fix: swap them)".into(),
            ));
        }
        if self.calculation_interval_secs == 0 {
            return Err((
                "calculation_interval_secs".into(),
                "must be at least 1 (fix: e.g. 60)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Default)]
struct ServiceState {
    /// Root spans seen in the current interval, per operation.
    counts: HashMap<String, u64>,
    /// Current probability per operation.
    probabilities: HashMap<String, f64>,
}

/// Adaptive strategy computation, fed by [`RootSpanCounter`]. State is kept per tenant and
/// service: the operation names a strategy lists are tenant data, so one tenant's SDKs never learn
/// another tenant's operations (or rates).
pub struct Adaptive {
    cfg: AdaptiveConfig,
    services: Mutex<HashMap<(String, String), ServiceState>>,
}

impl Adaptive {
    pub fn new(cfg: AdaptiveConfig) -> Self {
        Self {
            cfg,
            services: Mutex::new(HashMap::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.cfg.calculation_interval_secs)
    }

    pub fn observe(&self, tenant: &str, service: &str, operation: &str, n: u64) {
        let mut s = self.services.lock();
        let st = s
            .entry((tenant.to_string(), service.to_string()))
            .or_default();
        if st.counts.len() >= self.cfg.max_operations_per_service
            && !st.counts.contains_key(operation)
        {
            return;
        }
        *st.counts.entry(operation.to_string()).or_default() += n;
    }

    /// Recomputes probabilities from the counts of the last `elapsed`: the observed (sampled) rate
    /// is `count / elapsed`; the probability is scaled by `target / observed`, at most doubling per
    /// interval (to avoid oscillation), and clamped to [min, max].
    pub fn recompute(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut s = self.services.lock();
        for st in s.values_mut() {
            let counts = std::mem::take(&mut st.counts);
            for (op, n) in counts {
                let p = st
                    .probabilities
                    .get(&op)
                    .copied()
                    .unwrap_or(self.cfg.initial_sampling_probability);
                let observed = n as f64 / secs;
                let want = if observed <= 0.0 {
                    p * 2.0
                } else {
                    p * self.cfg.target_samples_per_second / observed
                };
                let np = want.min(p * 2.0).clamp(
                    self.cfg.min_sampling_probability,
                    self.cfg.max_sampling_probability,
                );
                st.probabilities.insert(op, np);
            }
        }
    }

    pub fn probability(&self, tenant: &str, service: &str, operation: &str) -> Option<f64> {
        self.services
            .lock()
            .get(&(tenant.to_string(), service.to_string()))?
            .probabilities
            .get(operation)
            .copied()
    }

    /// The strategy for `service` of `tenant`.
    pub fn strategy_for(&self, tenant: &str, service: &str) -> Json {
        let s = self.services.lock();
        let mut ops: Vec<(String, f64)> = s
            .get(&(tenant.to_string(), service.to_string()))
            .map(|st| {
                st.probabilities
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        let p = self.cfg.initial_sampling_probability;
        json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": p},
            "operationSampling": {
                "defaultSamplingProbability": p,
                "defaultLowerBoundTracesPerSecond": self.cfg.min_samples_per_second,
                "defaultUpperBoundTracesPerSecond": 0.0,
                "perOperationStrategies": ops.iter().map(|(op, p)| json!({
                    "operation": op,
                    "probabilisticSampling": {"samplingRate": p},
                })).collect::<Vec<_>>(),
            }
        })
    }
}

/// Where strategies come from.
pub enum StrategySource {
    /// A strategies file (replaceable when it is reloaded), or none (an empty file): services it
    /// does not name get its `default_strategy`, else `default_probability`.
    File {
        strategies: parking_lot::RwLock<StrategiesFile>,
        default_probability: f64,
    },
    Adaptive(Arc<Adaptive>),
}

impl StrategySource {
    /// A strategies file; services without a strategy get Jaeger's default (0.001) unless the
    /// file has a `default_strategy`.
    pub fn file(f: StrategiesFile) -> Self {
        Self::file_with_default(f, 0.001)
    }

    /// A strategies file (possibly empty) with the probability for services it does not cover.
    pub fn file_with_default(f: StrategiesFile, default_probability: f64) -> Self {
        StrategySource::File {
            strategies: parking_lot::RwLock::new(f),
            default_probability,
        }
    }

    /// The strategy for `service` as seen by `tenant` (file strategies are configuration and the
    /// same for every tenant; adaptive ones are computed from the tenant's own traffic).
    pub fn strategy_for(&self, tenant: &str, service: &str) -> Json {
        match self {
            StrategySource::File {
                strategies,
                default_probability,
            } => strategies
                .read()
                .strategy_for_or(service, *default_probability),
            StrategySource::Adaptive(a) => a.strategy_for(tenant, service),
        }
    }

    /// Re-reads a strategies file; on error the previous strategies stay in force.
    pub fn reload(&self, text: &str) -> Result<(), String> {
        match self {
            StrategySource::File { strategies, .. } => {
                *strategies.write() = StrategiesFile::parse(text)?;
                Ok(())
            }
            StrategySource::Adaptive(_) => Err("not a file source".into()),
        }
    }
}

/// Counts root spans per service and operation for adaptive sampling; forwards every batch as is.
pub struct RootSpanCounter {
    adaptive: Arc<Adaptive>,
}

impl RootSpanCounter {
    pub fn new(adaptive: Arc<Adaptive>) -> Self {
        Self { adaptive }
    }
}

impl Processor for RootSpanCounter {
    fn name(&self) -> &str {
        "jaeger_remote_sampling/adaptive"
    }

    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        for rs in &batch.resource_spans {
            let service = attrs::service_name(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                for s in ss.spans.iter().filter(|s| s.parent_span_id.is_empty()) {
                    self.adaptive
                        .observe(batch.tenant.as_str(), service, &s.name, 1);
                }
            }
        }
        Ok(ProcessOutcome::Forward(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "service_strategies": [
        {"service": "checkout", "type": "probabilistic", "param": 0.8,
         "operation_strategies": [{"operation": "GET /health", "type": "probabilistic", "param": 0.0}]},
        {"service": "batch", "type": "ratelimiting", "param": 5}
      ],
      "default_strategy": {"type": "probabilistic", "param": 0.5,
        "operation_strategies": [{"operation": "GET /metrics", "type": "probabilistic", "param": 0.01}]}
    }"#;

    #[test]
    fn file_strategies_in_jaeger_json() {
        let f = StrategiesFile::parse(FILE).unwrap();
        let c = f.strategy_for("checkout");
        assert_eq!(c["strategyType"], "PROBABILISTIC");
        assert_eq!(c["probabilisticSampling"]["samplingRate"], 0.8);
        let ops = c["operationSampling"]["perOperationStrategies"]
            .as_array()
            .unwrap();
        assert_eq!(ops.len(), 2, "own + default operation strategies: {c}");
        assert_eq!(ops[0]["operation"], "GET /health");
        assert_eq!(ops[0]["probabilisticSampling"]["samplingRate"], 0.0);
        assert_eq!(c["operationSampling"]["defaultSamplingProbability"], 0.8);
        let b = f.strategy_for("batch");
        assert_eq!(b["strategyType"], "RATE_LIMITING");
        assert_eq!(b["rateLimitingSampling"]["maxTracesPerSecond"], 5);
        let other = f.strategy_for("unknown");
        assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
    }

    #[test]
    fn reload_replaces_strategies_and_keeps_them_on_error() {
        let src = StrategySource::file(StrategiesFile::parse(FILE).unwrap());
        src.reload(r#"{"default_strategy": {"type": "probabilistic", "param": 0.25}}"#)
            .unwrap();
        assert_eq!(
            src.strategy_for("single-tenant", "x")["probabilisticSampling"]["samplingRate"],
            0.25
        );
        assert!(src.reload("{not json").is_err());
        assert_eq!(
            src.strategy_for("single-tenant", "x")["probabilisticSampling"]["samplingRate"],
            0.25
        );
    }

    #[test]
    fn file_errors_name_the_key() {
        let e =
            StrategiesFile::parse(r#"{"default_strategy": {"type": "probabilistic", "param": 2}}"#)
                .unwrap_err();
        assert!(e.contains("default_strategy.param"), "{e}");
        let e = StrategiesFile::parse(
            r#"{"service_strategies": [{"service": "a", "type": "x", "param": 1}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("service_strategies[0].type"), "{e}");
        let e = StrategiesFile::parse(r#"{"default_stratgy": {}}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn adaptive_moves_toward_target() {
        let a = Adaptive::new(AdaptiveConfig {
            target_samples_per_second: 1.0,
            initial_sampling_probability: 0.5,
            ..Default::default()
        });
        // 100 sampled root spans/s at p=0.5 → p should drop to 0.005.
        a.observe("t1", "svc", "hot", 6000);
        a.observe("t1", "svc", "cold", 30);
        a.recompute(Duration::from_secs(60));
        let hot = a.probability("t1", "svc", "hot").unwrap();
        assert!((hot - 0.005).abs() < 1e-9, "{hot}");
        // cold: 0.5/s observed < 1/s target → raised, at most doubled, clamped to max 1.0.
        assert_eq!(a.probability("t1", "svc", "cold"), Some(1.0));
        // Another tenant's SDKs see none of t1's operations.
        assert_eq!(a.probability("t2", "svc", "hot"), None);
        let other = a.strategy_for("t2", "svc");
        assert_eq!(
            other["operationSampling"]["perOperationStrategies"],
            serde_json::json!([])
        );
        let j = a.strategy_for("t1", "svc");
        assert_eq!(
            j["operationSampling"]["perOperationStrategies"][1]["operation"],
            "hot"
        );
    }
}
