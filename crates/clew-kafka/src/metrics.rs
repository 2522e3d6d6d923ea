//! Prometheus metrics of the Kafka exporter and receiver (spans received through Kafka are also
//! counted by `clew-receive`'s receiver metrics under `protocol="kafka"`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentOutcome {
    /// The component's name in the configuration (`kafka`, `kafka/eu`).
    pub component: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Default)]
pub struct KafkaMetrics {
    /// Messages the exporter produced: `sent`, `failed` (retryable: the batch was refused),
    /// `dropped` (permanent: too large for the broker).
    pub produced: Family<ComponentOutcome, Counter>,
    pub produced_bytes: Family<ComponentOutcome, Counter>,
    /// Messages the receiver consumed: `stored`, `invalid` (skipped), `retried`.
    pub consumed: Family<ComponentOutcome, Counter>,
    /// Offset commits after durable storage: `ok`, `failed`.
    pub commits: Family<ComponentOutcome, Counter>,
}

impl KafkaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clew_kafka_exporter_messages",
            "Kafka messages produced by outcome (sent, failed: retryable, dropped: too large)",
            self.produced.clone(),
        );
        registry.register(
            "clew_kafka_exporter_message_bytes",
            "Payload bytes of Kafka messages produced, by outcome",
            self.produced_bytes.clone(),
        );
        registry.register(
            "clew_kafka_receiver_messages",
            "Kafka messages consumed by outcome (stored, invalid: skipped, retried)",
            self.consumed.clone(),
        );
        registry.register(
            "clew_kafka_receiver_commits",
            "Offset commits of the Kafka receiver (only offsets of durable messages), by outcome",
            self.commits.clone(),
        );
    }

    pub(crate) fn inc(
        family: &Family<ComponentOutcome, Counter>,
        component: &str,
        outcome: &str,
        by: u64,
    ) {
        family
            .get_or_create(&ComponentOutcome {
                component: component.to_string(),
                outcome: outcome.to_string(),
            })
            .inc_by(by);
    }
}
