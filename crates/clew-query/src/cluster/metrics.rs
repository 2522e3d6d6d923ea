//! The querier's view of its ingesters, for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngesterOutcome {
    /// The ingester's URL as configured.
    pub ingester: String,
    /// `ok`, or `failed` (no answer in time, refused, or an error): the answer went out without
    /// that ingester's unflushed spans.
    pub outcome: String,
}

#[derive(Clone, Debug, Default)]
pub struct QuerierMetrics {
    pub calls: Family<IngesterOutcome, Counter>,
}

impl QuerierMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clew_querier_ingester_calls",
            "Calls from this querier to an ingester's read API, by ingester and outcome (failed: answered without it)",
            self.calls.clone(),
        );
    }

    pub(crate) fn count(&self, ingester: &str, ok: bool) {
        self.calls
            .get_or_create(&IngesterOutcome {
                ingester: ingester.to_string(),
                outcome: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }
}
