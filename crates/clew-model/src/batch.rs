//! [`SpanBatch`]: the unit that flows from a receiver through the pipeline into the store.

use crate::ids::{IdError, SpanId, TraceId};
use crate::otlp::trace::ResourceSpans;
use crate::{RequestMetadata, Tenant};

/// One export request's spans, owned by one tenant.
#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub tenant: Tenant,
    pub resource_spans: Vec<ResourceSpans>,
    /// The request's client metadata as kept by the receiver (empty unless configured there);
    /// every batch made from one request shares it.
    pub metadata: RequestMetadata,
}

/// What validation removed from a batch, for OTLP partial success and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    pub rejected_spans: u64,
    /// The first problem found, phrased for the client (OTLP `error_message`).
    pub first_error: Option<String>,
}

impl SpanBatch {
    pub fn new(tenant: Tenant, resource_spans: Vec<ResourceSpans>) -> Self {
        Self {
            tenant,
            resource_spans,
            metadata: RequestMetadata::default(),
        }
    }

    /// The same batch carrying the request's `metadata`.
    pub fn with_metadata(mut self, metadata: RequestMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter())
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// Removes spans whose ids are invalid (wrong length, all zero) — per span, never the whole
    /// batch — and drops containers left empty. Returns what was removed.
    pub fn validate(&mut self) -> ValidationReport {
        let mut report = ValidationReport::default();
        for rs in &mut self.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|span| {
                    match check_span_ids(&span.trace_id, &span.span_id, &span.parent_span_id) {
                        Ok(()) => true,
                        Err(e) => {
                            report.rejected_spans += 1;
                            if report.first_error.is_none() {
                                report.first_error = Some(format!(
                                    "span {:?} rejected: {e}",
                                    truncate(&span.name, 80)
                                ));
                            }
                            false
                        }
                    }
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        self.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        report
    }
}

fn check_span_ids(trace_id: &[u8], span_id: &[u8], parent_span_id: &[u8]) -> Result<(), IdError> {
    TraceId::from_bytes(trace_id)?;
    SpanId::from_bytes(span_id)?;
    if !parent_span_id.is_empty() && parent_span_id.len() != SpanId::LEN {
        return Err(IdError::WrongLength {
            kind: "parent span id",
            expected: SpanId::LEN,
            got: parent_span_id.len(),
        });
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::trace::{ScopeSpans, Span};

    fn span(t: Vec<u8>, s: Vec<u8>, p: Vec<u8>) -> Span {
        Span {
            trace_id: t,
            span_id: s,
            parent_span_id: p,
            name: "op".into(),
            ..Default::default()
        }
    }

    #[test]
    fn invalid_ids_are_rejected_per_span() {
        let good = span(vec![1; 16], vec![2; 8], vec![]);
        let child = span(vec![1; 16], vec![3; 8], vec![2; 8]);
        let zero_trace = span(vec![0; 16], vec![2; 8], vec![]);
        let short_span = span(vec![1; 16], vec![2; 4], vec![]);
        let bad_parent = span(vec![1; 16], vec![2; 8], vec![9; 3]);
        let mut batch = SpanBatch::new(
            Tenant::default(),
            vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![good, zero_trace, child],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![short_span, bad_parent],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        );
        let report = batch.validate();
        assert_eq!(report.rejected_spans, 3);
        assert!(report
            .first_error
            .unwrap()
            .contains("trace id must not be all zeros"));
        assert_eq!(batch.span_count(), 2);
        assert_eq!(batch.resource_spans.len(), 1, "emptied resource is dropped");
    }
}
