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
///
/// Holding processors are built back to front: each gets an `Arc<dyn SpanSink>` for the part of the
/// pipeline that follows it (see [`Pipeline::build`]) and forwards what it releases there. They must
/// release everything they hold when [`Processor::shutdown`] is called.
#[async_trait::async_trait]
pub trait Processor: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError>;

    /// Releases everything the processor holds (decides and forwards buffered traces) and returns
    /// once it has been handed downstream. Called once on shutdown, in pipeline order, before the
    /// store's final flush. Stateless processors need not implement it.
    async fn shutdown(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Builds a processor given the sink for everything after it in the pipeline.
pub type ProcessorFactory =
    Box<dyn FnOnce(Arc<dyn SpanSink>) -> Result<Box<dyn Processor>, String> + Send>;

/// Processors in order, then a sink.
pub struct Pipeline {
    processors: Vec<Arc<dyn Processor>>,
    sink: Arc<dyn SpanSink>,
}

impl Pipeline {
    pub fn new(processors: Vec<Box<dyn Processor>>, sink: Arc<dyn SpanSink>) -> Self {
        Self {
            processors: processors.into_iter().map(Arc::from).collect(),
            sink,
        }
    }

    /// Builds a pipeline back to front: the last factory is called first with `sink`, and each
    /// earlier factory gets a pipeline of the processors after it ending in `sink` — what a holding
    /// processor (tail sampling) forwards its kept traces into.
    pub fn build(
        factories: Vec<ProcessorFactory>,
        sink: Arc<dyn SpanSink>,
    ) -> Result<Self, String> {
        let mut built: Vec<Arc<dyn Processor>> = Vec::new();
        for f in factories.into_iter().rev() {
            let downstream: Arc<dyn SpanSink> = Arc::new(Pipeline {
                processors: built.clone(),
                sink: sink.clone(),
            });
            let p = f(downstream)?;
            built.insert(0, Arc::from(p));
        }
        Ok(Self {
            processors: built,
            sink,
        })
    }

    /// Shuts the processors down in order: a holding processor forwards what it holds through the
    /// processors after it, which are still running. Call before the sink's own final flush.
    pub async fn shutdown(&self) -> Result<(), SinkError> {
        let mut first_err = None;
        for p in &self.processors {
            if let Err(e) = p.shutdown().await {
                tracing::error!(processor = p.name(), error = %e, "processor shutdown failed");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

/// Sends every batch to several sinks (a pipeline's exporters, or the pipelines one receiver
/// feeds). It succeeds only if every sink did; otherwise the first error goes back to the client,
/// which retries the whole batch — so a sink that had accepted it sees it again (reads dedupe).
pub struct FanOut {
    sinks: Vec<Arc<dyn SpanSink>>,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn SpanSink>>) -> Self {
        Self { sinks }
    }

    /// One sink as itself, several behind a `FanOut`.
    pub fn of(mut sinks: Vec<Arc<dyn SpanSink>>) -> Arc<dyn SpanSink> {
        if sinks.len() == 1 {
            sinks.remove(0)
        } else {
            Arc::new(Self::new(sinks))
        }
    }
}

#[async_trait::async_trait]
impl SpanSink for FanOut {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        let Some((last, rest)) = self.sinks.split_last() else {
            return Ok(());
        };
        // Concurrently: a slow exporter does not add its latency to the others'.
        let mut sends: Vec<_> = rest.iter().map(|s| s.consume(batch.clone())).collect();
        sends.push(last.consume(batch));
        let results = futures::future::join_all(sends).await;
        results.into_iter().collect()
    }
}

/// A processor shared by several pipelines (the service graph, which must count every span once
/// whichever pipelines it then goes to).
pub struct Shared(pub Arc<dyn Processor>);

#[async_trait::async_trait]
impl Processor for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        self.0.process(batch)
    }
    async fn shutdown(&self) -> Result<(), SinkError> {
        self.0.shutdown().await
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

    /// Holds every batch and forwards it downstream on shutdown.
    struct Hold(Arc<dyn SpanSink>, Mutex<Vec<SpanBatch>>);
    #[async_trait::async_trait]
    impl Processor for Hold {
        fn name(&self) -> &str {
            "hold"
        }
        fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
            self.1.lock().unwrap().push(batch);
            Ok(ProcessOutcome::Consumed)
        }
        async fn shutdown(&self) -> Result<(), SinkError> {
            let held = std::mem::take(&mut *self.1.lock().unwrap());
            for b in held {
                self.0.consume(b).await?;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn built_back_to_front_holding_processor_forwards_through_the_rest() {
        let sink = Arc::new(Collect::default());
        let factories: Vec<ProcessorFactory> = vec![
            Box::new(|_| Ok(Box::new(Rename) as Box<dyn Processor>)),
            Box::new(|down| Ok(Box::new(Hold(down, Mutex::new(Vec::new()))) as Box<dyn Processor>)),
            Box::new(|_| Ok(Box::new(Rename) as Box<dyn Processor>)),
        ];
        let p = Pipeline::build(factories, sink.clone()).unwrap();
        assert_eq!(p.processor_names(), vec!["rename", "hold", "rename"]);
        p.consume(batch()).await.unwrap();
        assert!(sink.0.lock().unwrap().is_empty(), "held");
        p.shutdown().await.unwrap();
        let got = sink.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].resource_spans[0].scope_spans[0].spans[0].name, "renamed-renamed-a",
            "the held batch went through the processor after the holder only"
        );
    }
}
