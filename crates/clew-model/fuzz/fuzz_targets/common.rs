//! What ingest does after parsing, for every target: validate (per-span id checks), then
//! flatten into the store's span form and regroup. None of it may panic on anything a parser
//! accepted, and validation must account for every span.

use clew_model::otlp::trace::ResourceSpans;
use clew_model::{flat, SpanBatch, Tenant};

pub fn after_parse(resource_spans: Vec<ResourceSpans>) {
    let mut batch = SpanBatch::new(Tenant::default(), resource_spans);
    let before = batch.span_count();
    let report = batch.validate();
    let kept = batch.span_count();
    assert_eq!(kept as u64 + report.rejected_spans, before as u64);
    assert_eq!(report.first_error.is_some(), report.rejected_spans > 0);
    let spans = flat::flatten(batch.resource_spans);
    assert_eq!(spans.len(), kept);
    for s in &spans {
        let _ = s.service_name();
        let _ = s.duration_nanos();
    }
    let regrouped = flat::group_into_resource_spans(spans);
    let again: usize = regrouped
        .iter()
        .flat_map(|rs| rs.scope_spans.iter())
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(again, kept);
}
