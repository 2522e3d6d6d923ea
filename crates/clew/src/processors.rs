//! Builds the traces pipeline from `clew.yaml`: the always-on service graph first, the adaptive
//! sampling root-span counter (when adaptive remote sampling is on), then the configured processors
//! in `service.pipelines.traces.processors` order, ending in the store. The pipeline is built back
//! to front so a holding processor (tail sampling) forwards its kept traces through the processors
//! after it.

use crate::config::{Config, ProcessorConfig};
use clew_model::SpanSink;
use clew_pipeline::{Pipeline, Processor, ProcessorFactory};
use clew_sampling::consistent::HeadMetrics;
use clew_sampling::tail::TailMetrics;
use clew_sampling::{Adaptive, ProbabilisticSampler, RootSpanCounter, TailCore, TailSampler};
use prometheus_client::registry::Registry;
use std::sync::Arc;

pub fn build_pipeline(
    cfg: &Config,
    first: Box<dyn Processor>,
    sink: Arc<dyn SpanSink>,
    registry: &mut Registry,
    adaptive: Option<Arc<Adaptive>>,
) -> anyhow::Result<Arc<Pipeline>> {
    let mut factories: Vec<ProcessorFactory> = vec![Box::new(move |_| Ok(first))];
    if let Some(a) = adaptive {
        factories.push(Box::new(move |_| {
            Ok(Box::new(RootSpanCounter::new(a)) as Box<dyn Processor>)
        }));
    }
    let head_metrics = HeadMetrics::default();
    let tail_metrics = TailMetrics::default();
    let (mut has_head, mut has_tail) = (false, false);
    for (name, pc) in &cfg.processor_configs {
        let name = name.clone();
        match pc {
            ProcessorConfig::ProbabilisticSampler(c) => {
                has_head = true;
                let p = ProbabilisticSampler::with_metrics(name, c.clone(), &head_metrics);
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::TailSampling(c) => {
                has_tail = true;
                let core = TailCore::with_metrics(name.clone(), c.clone(), tail_metrics.clone())
                    .map_err(|(k, m)| anyhow::anyhow!("processors.{name}.{k}: {m}"))?;
                tracing::info!(processor = %name, shards = core.num_shards(), "tail sampling on");
                factories.push(Box::new(move |down| {
                    Ok(Box::new(TailSampler::start(core, down)) as Box<dyn Processor>)
                }));
            }
        }
    }
    if has_head {
        head_metrics.register(registry);
    }
    if has_tail {
        tail_metrics.register(registry);
    }
    let p = Pipeline::build(factories, sink).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Arc::new(p))
}
