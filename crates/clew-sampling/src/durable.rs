//! Durable tail sampling in a pipeline: the sampler log ([`crate::sampler_log`]) wired between
//! the processors before a `tail_sampling` processor and the ones after it.
//!
//! [`clew_pipeline::Processor::process`] is synchronous, and a durable ack must wait for an
//! fsync, so the binary splits a pipeline at each tail sampler: the processors before it end in a
//! [`DurableTailStage`] (a [`SpanSink`]: logs, waits for the fsync, then hands late spans of kept
//! traces on), which is followed by the processors after it. A [`TailStageShutdown`] placed last
//! among the processors before it keeps [`Pipeline::shutdown`]'s order: upstream processors first,
//! then the sampler (deciding and forwarding everything it holds, then closing its log), then the
//! processors after it.

use crate::sampler_log::{LogOptions, Replayed, SamplerLog};
use crate::tail::{TailCore, TailSampler};
use clew_encryption::KeyManager;
use clew_model::{SinkError, SpanBatch, SpanSink};
use clew_pipeline::{Pipeline, ProcessOutcome, Processor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `<data dir>/sampler/<pipeline>/<processor>`, names escaped so that `traces/x` or
/// `tail_sampling/y` stay one path component each.
pub fn log_dir(data_dir: &Path, pipeline: &str, processor: &str) -> PathBuf {
    data_dir
        .join("sampler")
        .join(escape(pipeline))
        .join(escape(processor))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The sink the processors before a tail sampler end in, and the processor placed last among them.
pub type Stage = (Arc<dyn SpanSink>, Box<dyn Processor>);

/// Opens (and replays) a tail sampler's log and attaches it to `core`.
pub async fn open(
    core: &mut TailCore,
    dir: &Path,
    keys: Option<Arc<KeyManager>>,
) -> Result<Replayed, crate::sampler_log::LogError> {
    let (log, replayed) = SamplerLog::open(dir, keys, LogOptions::default()).await?;
    core.attach_log(log);
    Ok(replayed)
}

/// Starts `core` (with its log attached) forwarding into `after`, rebuilds its buffer from
/// `replayed`, and returns the sink that the processors before it end in, and the processor to
/// place last among them.
pub fn stage(
    core: TailCore,
    replayed: Replayed,
    after: Arc<Pipeline>,
    keys: Option<Arc<KeyManager>>,
) -> Result<Stage, String> {
    if core.log().is_none() {
        return Err(format!("tail sampler {} has no log attached", core.name()));
    }
    let sampler = Arc::new(TailSampler::start(core, after.clone()));
    let n = sampler.restore(replayed)?;
    if n > 0 {
        tracing::info!(
            processor = sampler.core().name(),
            traces = n,
            "tail sampler rebuilt its buffer from its log"
        );
    }
    let stage = Arc::new(DurableTailStage {
        sampler: sampler.clone(),
        after: after.clone(),
        keys,
    });
    Ok((stage, Box::new(TailStageShutdown { sampler, after })))
}

/// See the module docs.
pub struct DurableTailStage {
    sampler: Arc<TailSampler>,
    after: Arc<Pipeline>,
    keys: Option<Arc<KeyManager>>,
}

#[async_trait::async_trait]
impl SpanSink for DurableTailStage {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        let key = match &self.keys {
            Some(km) => Some(km.wal_key(batch.tenant.as_str()).await.map_err(|e| {
                // Never written in clear instead: refused, retryably when the provider is down.
                if e.is_retryable() {
                    SinkError::Overloaded {
                        retry_after: Duration::from_secs(1),
                        reason: format!("no data key for the tail sampler's log: {e}"),
                    }
                } else {
                    SinkError::Internal(format!("no data key for the tail sampler's log: {e}"))
                }
            })?),
            None => None,
        };
        if let Some(late) = self.sampler.consume_logged(batch, key).await? {
            self.after.consume(late).await?;
        }
        Ok(())
    }
}

/// See the module docs.
pub struct TailStageShutdown {
    sampler: Arc<TailSampler>,
    after: Arc<Pipeline>,
}

#[async_trait::async_trait]
impl Processor for TailStageShutdown {
    fn name(&self) -> &str {
        self.sampler.core().name()
    }

    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        Ok(ProcessOutcome::Forward(batch))
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        let r = Processor::shutdown(&*self.sampler).await;
        let r2 = self.after.shutdown().await;
        r.and(r2)
    }
}
