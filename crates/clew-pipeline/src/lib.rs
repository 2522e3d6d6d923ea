//! # clew-pipeline — the processing room
//!
//! Batches arrive here from receivers and leave for the store and exporters. A pipeline is an
//! ordered list of [`Processor`]s ending in a [`SpanSink`]; it is itself a `SpanSink`, so receivers do
//! not know what runs after them. Sampling, redaction and routing processors live here.
//!
//! May depend on: `clew-model`. Must not depend on receivers, the store, or any network/storage code.

use clew_model::{SinkError, SpanBatch, SpanSink};
use std::sync::Arc;

/// What a processor decided for a batch.
pub enum ProcessOutcome {
    /// Hand the (possibly changed) batch to the next stage.
    Forward(SpanBatch),
    /// The processor took all spans out (e.g. sampled away); nothing goes further, the client is acked.
    Consumed,
}

/// One step of a traces pipeline. Processors are synchronous transformations on a batch; ones that
/// must hold spans (tail sampling) own their buffering and forward later through their own sink.
pub trait Processor: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError>;
}

/// Processors in order, then a sink.
pub struct Pipeline {
    processors: Vec<Box<dyn Processor>>,
    sink: Arc<dyn SpanSink>,
}

impl Pipeline {
    pub fn new(processors: Vec<Box<dyn Processor>>, sink: Arc<dyn SpanSink>) -> Self {
        Self { processors, sink }
    }

    pub fn processor_names(&self) -> Vec<&str> {
        self.processors.iter().map(|p| p.name()).collect()
    }
}

#[async_trait::async_trait]
impl SpanSink for Pipeline {
    async fn consume(&self, mut batch: SpanBatch) -> Result<(), SinkError> {
        for p in &self.processors {
            match p.process(batch)? {
                ProcessOutcome::Forward(b) => batch = b,
                ProcessOutcome::Consumed => return Ok(()),
            }
            if batch.span_count() == 0 {
                return Ok(());
            }
        }
        self.sink.consume(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
    use clew_model::Tenant;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanBatch>>);
    #[async_trait::async_trait]
    impl SpanSink for Collect {
        async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    struct Rename;
    impl Processor for Rename {
        fn name(&self) -> &str {
            "rename"
        }
        fn process(&self, mut batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
            for rs in &mut batch.resource_spans {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        s.name = format!("renamed-{}", s.name);
                    }
                }
            }
            Ok(ProcessOutcome::Forward(batch))
        }
    }

    struct DropAll;
    impl Processor for DropAll {
        fn name(&self) -> &str {
            "drop"
        }
        fn process(&self, _: SpanBatch) -> Result<ProcessOutcome, SinkError> {
            Ok(ProcessOutcome::Consumed)
        }
    }

    fn batch() -> SpanBatch {
        SpanBatch::new(
            Tenant::default(),
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: "a".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        )
    }

    #[tokio::test]
    async fn processors_run_in_order_then_sink() {
        let sink = Arc::new(Collect::default());
        let p = Pipeline::new(vec![Box::new(Rename), Box::new(Rename)], sink.clone());
        p.consume(batch()).await.unwrap();
        let got = sink.0.lock().unwrap();
        assert_eq!(
            got[0].resource_spans[0].scope_spans[0].spans[0].name,
            "renamed-renamed-a"
        );
    }

    #[tokio::test]
    async fn consumed_batches_stop() {
        let sink = Arc::new(Collect::default());
        let p = Pipeline::new(vec![Box::new(DropAll), Box::new(Rename)], sink.clone());
        p.consume(batch()).await.unwrap();
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(p.processor_names(), vec!["drop", "rename"]);
    }
}
