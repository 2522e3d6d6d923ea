//! The `debug` exporter: logs what it receives (through `tracing`, target `clew_export::debug`),
//! like the Collector's.

use crate::config::{DebugConfig, Verbosity};
use crate::metrics::{ExporterLabels, ExporterMetrics};
use clew_model::otlp::common::{any_value, AnyValue, KeyValue};
use clew_model::{SinkError, SpanBatch, SpanSink};
use std::fmt::Write;

pub struct DebugExporter {
    name: String,
    verbosity: Verbosity,
    metrics: ExporterMetrics,
    labels: ExporterLabels,
}

impl DebugExporter {
    pub fn new(name: &str, cfg: &DebugConfig, metrics: &ExporterMetrics) -> Self {
        Self {
            name: name.to_string(),
            verbosity: cfg.verbosity,
            metrics: metrics.clone(),
            labels: ExporterLabels {
                exporter: name.to_string(),
            },
        }
    }

    /// The lines logged for `batch` (the first is the summary).
    pub fn render(&self, batch: &SpanBatch) -> Vec<String> {
        let mut out = vec![format!(
            "Traces: tenant={} resource spans={} spans={}",
            batch.tenant,
            batch.resource_spans.len(),
            batch.span_count()
        )];
        if self.verbosity == Verbosity::Basic {
            return out;
        }
        let detailed = self.verbosity == Verbosity::Detailed;
        for (i, rs) in batch.resource_spans.iter().enumerate() {
            let attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => value(v),
                })
                .unwrap_or_default();
            if detailed {
                out.push(format!(
                    "ResourceSpans #{i} service={service} {}",
                    kvs(attrs)
                ));
            }
            for ss in &rs.scope_spans {
                if detailed {
                    if let Some(s) = &ss.scope {
                        out.push(format!("  Scope {} {}", s.name, s.version));
                    }
                }
                for span in &ss.spans {
                    let dur = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano);
                    let mut line = format!(
                        "  Span {} trace={} id={} parent={} kind={} duration={}µs service={service}",
                        span.name,
                        hex::encode(&span.trace_id),
                        hex::encode(&span.span_id),
                        hex::encode(&span.parent_span_id),
                        span.kind,
                        dur / 1000,
                    );
                    if let Some(st) = &span.status {
                        if st.code != 0 {
                            let _ = write!(line, " status={} {:?}", st.code, st.message);
                        }
                    }
                    if detailed {
                        let _ = write!(line, " attributes: {}", kvs(&span.attributes));
                        for e in &span.events {
                            let _ = write!(line, " | event {} {}", e.name, kvs(&e.attributes));
                        }
                        for l in &span.links {
                            let _ = write!(
                                line,
                                " | link trace={} span={}",
                                hex::encode(&l.trace_id),
                                hex::encode(&l.span_id)
                            );
                        }
                    }
                    out.push(line);
                }
            }
        }
        out
    }
}

fn kvs(attrs: &[KeyValue]) -> String {
    let mut s = String::new();
    for kv in attrs {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(
            s,
            "{}={}",
            kv.key,
            kv.value.as_ref().map(value).unwrap_or_default()
        );
    }
    s
}

fn value(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values.iter().map(value).collect::<Vec<_>>().join(", ")
        ),
        Some(any_value::Value::KvlistValue(l)) => format!("{{{}}}", kvs(&l.values)),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[async_trait::async_trait]
impl SpanSink for DebugExporter {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        self.metrics
            .debug_spans
            .get_or_create(&self.labels)
            .inc_by(batch.span_count() as u64);
        for line in self.render(&batch) {
            tracing::info!(target: "clew_export::debug", exporter = %self.name, "{line}");
        }
        Ok(())
    }
}
