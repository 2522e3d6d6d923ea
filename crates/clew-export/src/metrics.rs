//! Exporter metrics (Collector-like names, `clew_` prefix), one label set per exporter.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    pub exporter: String,
    /// `permanent` (refused by the receiver), `partial` (partial success: rejected spans),
    /// `expired` (retried for `max_elapsed_time`), `disk` (unreadable queue record).
    pub reason: String,
}

/// Every exporter's metrics; clone freely (shared inside).
#[derive(Clone, Default)]
pub struct ExporterMetrics {
    pub sent_spans: Family<ExporterLabels, Counter>,
    pub sent_requests: Family<ExporterLabels, Counter>,
    pub send_failed_spans: Family<FailedLabels, Counter>,
    pub enqueue_failed_spans: Family<ExporterLabels, Counter>,
    pub retries: Family<ExporterLabels, Counter>,
    pub queue_size_bytes: Family<ExporterLabels, Gauge>,
    pub queue_size_batches: Family<ExporterLabels, Gauge>,
    pub queue_capacity_bytes: Family<ExporterLabels, Gauge>,
    pub debug_spans: Family<ExporterLabels, Counter>,
}

impl ExporterMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers everything under `clew_exporter_*`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_exporter_sent_spans",
            "Spans accepted by the exporter's destination",
            self.sent_spans.clone(),
        );
        r.register(
            "clew_exporter_sent_requests",
            "Export requests accepted by the destination",
            self.sent_requests.clone(),
        );
        r.register(
            "clew_exporter_send_failed_spans",
            "Spans dropped: refused permanently, rejected by partial success, or retried past max_elapsed_time",
            self.send_failed_spans.clone(),
        );
        r.register(
            "clew_exporter_enqueue_failed_spans",
            "Spans refused (retryably) because the sending queue was full or could not be written",
            self.enqueue_failed_spans.clone(),
        );
        r.register(
            "clew_exporter_send_retries",
            "Export attempts that failed retryably and were retried",
            self.retries.clone(),
        );
        r.register(
            "clew_exporter_queue_size_bytes",
            "Bytes of batches in the sending queue not yet accepted downstream",
            self.queue_size_bytes.clone(),
        );
        r.register(
            "clew_exporter_queue_size_batches",
            "Batches in the sending queue not yet accepted downstream",
            self.queue_size_batches.clone(),
        );
        r.register(
            "clew_exporter_queue_capacity_bytes",
            "The sending queue's max_bytes",
            self.queue_capacity_bytes.clone(),
        );
        r.register(
            "clew_exporter_debug_spans",
            "Spans logged by debug exporters",
            self.debug_spans.clone(),
        );
    }
}
