//! The exporter's messages: a batch cut into Kafka messages — one per trace, keyed by its
//! lowercase hex trace id (`partition_traces_by_id`), or unkeyed requests — each no larger than
//! the producer's `max_message_bytes`, encoded as `otlp_proto` or `otlp_json`.
//!
//! A trace (or request) too large for one message is cut into several with the same key, so its
//! spans still share a partition; resource and scope are repeated in each part.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use std::collections::HashMap;

/// One message to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    /// The lowercase 32-hex trace id, or none (the partitioner spreads unkeyed messages).
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub spans: u64,
}

/// Where one span sits in the batch: (resource index, scope index).
type Slot = (usize, usize);
/// Spans that go to messages with one key (a trace, or the whole batch unkeyed).
type Group<'a> = (Option<String>, Vec<(Slot, &'a Span)>);

/// Cuts `resource_spans` into messages (see the module documentation).
pub fn messages(
    resource_spans: &[ResourceSpans],
    by_trace: bool,
    json: bool,
    max_bytes: usize,
) -> Vec<OutMessage> {
    let mut groups: Vec<Group> = Vec::new();
    if by_trace {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for (ri, rs) in resource_spans.iter().enumerate() {
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for span in &ss.spans {
                    let g = *index.entry(span.trace_id.as_slice()).or_insert_with(|| {
                        groups.push((Some(hex::encode(&span.trace_id)), Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(((ri, si), span));
                }
            }
        }
    } else {
        let all = resource_spans
            .iter()
            .enumerate()
            .flat_map(|(ri, rs)| {
                rs.scope_spans
                    .iter()
                    .enumerate()
                    .flat_map(move |(si, ss)| ss.spans.iter().map(move |span| ((ri, si), span)))
            })
            .collect();
        groups.push((None, all));
    }
    // The estimate is of protobuf sizes; JSON (hex ids, names, quoting) is up to ~3× larger.
    let budget = if json { max_bytes / 3 } else { max_bytes };
    let mut out = Vec::new();
    for (key, spans) in groups {
        for part in fit(resource_spans, &spans, budget) {
            let n = part.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: assemble(resource_spans, &part),
            };
            out.push(OutMessage {
                key: key.clone(),
                payload: encode(&request, json),
                spans: n,
            });
        }
    }
    out
}

fn encode(request: &ExportTraceServiceRequest, json: bool) -> Vec<u8> {
    if json {
        clew_model::otlp_json::encode_resource_spans(&request.resource_spans)
            .to_string()
            .into_bytes()
    } else {
        request.encode_to_vec()
    }
}

/// Cuts one group of spans into parts whose encoded request stays under `max_bytes` (estimated
/// from the protobuf sizes: spans, plus each distinct resource and scope once per part; JSON is
/// larger, so it gets a third of the budget). A single span over the limit is a part of its own:
/// the broker refuses it and the exporter counts it.
fn fit<'a>(
    batch: &[ResourceSpans],
    spans: &[(Slot, &'a Span)],
    max_bytes: usize,
) -> Vec<Vec<(Slot, &'a Span)>> {
    // Protobuf field overhead per nested message: tag + length varint.
    const FRAME: usize = 6;
    let mut parts = Vec::new();
    let mut current: Vec<(Slot, &Span)> = Vec::new();
    let mut size = 0usize;
    let mut seen_resources: Vec<usize> = Vec::new();
    let mut seen_scopes: Vec<Slot> = Vec::new();
    for &(slot, span) in spans {
        let mut add = span.encoded_len() + FRAME;
        if !seen_resources.contains(&slot.0) {
            add += batch[slot.0]
                .resource
                .as_ref()
                .map_or(0, |r| r.encoded_len())
                + batch[slot.0].schema_url.len()
                + 2 * FRAME;
        }
        if !seen_scopes.contains(&slot) {
            let ss = &batch[slot.0].scope_spans[slot.1];
            add +=
                ss.scope.as_ref().map_or(0, |s| s.encoded_len()) + ss.schema_url.len() + 2 * FRAME;
        }
        if !current.is_empty() && size + add > max_bytes {
            parts.push(std::mem::take(&mut current));
            seen_resources.clear();
            seen_scopes.clear();
            size = 0;
            // Counted again for the new part.
            add = span.encoded_len()
                + FRAME
                + batch[slot.0]
                    .resource
                    .as_ref()
                    .map_or(0, |r| r.encoded_len())
                + 4 * FRAME;
        }
        if !seen_resources.contains(&slot.0) {
            seen_resources.push(slot.0);
        }
        if !seen_scopes.contains(&slot) {
            seen_scopes.push(slot);
        }
        size += add;
        current.push((slot, span));
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// Rebuilds the resource → scope → spans nesting of `part`, in batch order.
fn assemble(batch: &[ResourceSpans], part: &[(Slot, &Span)]) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut where_resource: HashMap<usize, usize> = HashMap::new();
    let mut where_scope: HashMap<Slot, (usize, usize)> = HashMap::new();
    for &((ri, si), span) in part {
        let r = *where_resource.entry(ri).or_insert_with(|| {
            let src = &batch[ri];
            out.push(ResourceSpans {
                resource: src.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: src.schema_url.clone(),
            });
            out.len() - 1
        });
        let (r, s) = *where_scope.entry((ri, si)).or_insert_with(|| {
            let src = &batch[ri].scope_spans[si];
            out[r].scope_spans.push(ScopeSpans {
                scope: src.scope.clone(),
                spans: Vec::new(),
                schema_url: src.schema_url.clone(),
            });
            (r, out[r].scope_spans.len() - 1)
        });
        out[r].scope_spans[s].spans.push(span.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::otlp::common::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use clew_model::otlp::resource::Resource;

    fn span(trace: u8, id: u8, attr_bytes: usize) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("op{id}"),
            attributes: vec![KeyValue {
                key: "pad".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(attr_bytes))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn rs(service: &str, scopes: Vec<Vec<Span>>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .enumerate()
                .map(|(i, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("lib{i}"),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }
    }

    fn decode(m: &OutMessage) -> Vec<ResourceSpans> {
        ExportTraceServiceRequest::decode(m.payload.as_slice())
            .unwrap()
            .resource_spans
    }

    #[test]
    fn by_trace_gives_one_keyed_message_per_trace_keeping_resource_and_scope() {
        let batch = vec![
            rs(
                "a",
                vec![vec![span(1, 1, 1), span(2, 2, 1)], vec![span(1, 3, 1)]],
            ),
            rs("b", vec![vec![span(2, 4, 1)]]),
        ];
        let msgs = messages(&batch, true, false, 1_000_000);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0].key.as_deref(),
            Some("01010101010101010101010101010101")
        );
        assert_eq!(
            msgs[1].key.as_deref(),
            Some("02020202020202020202020202020202")
        );
        let one = decode(&msgs[0]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].scope_spans.len(), 2, "both scopes of resource a");
        assert_eq!(one[0].schema_url, batch[0].schema_url);
        assert_eq!(one[0].scope_spans[1].scope.as_ref().unwrap().name, "lib1");
        let two = decode(&msgs[1]);
        assert_eq!(two.len(), 2, "trace 2 spans two resources");
        assert_eq!(two[1].resource, batch[1].resource);
        assert_eq!((msgs[0].spans, msgs[1].spans), (2, 2));
    }

    #[test]
    fn unkeyed_is_the_request_as_is() {
        let batch = vec![rs("a", vec![vec![span(1, 1, 1), span(2, 2, 1)]])];
        let msgs = messages(&batch, false, false, 1_000_000);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].key, None);
        assert_eq!(decode(&msgs[0]), batch);
    }

    #[test]
    fn oversized_groups_are_cut_under_the_limit_without_losing_a_span() {
        let spans: Vec<Span> = (0..50).map(|i| span(7, i, 300)).collect();
        let batch = vec![rs("a", vec![spans])];
        let max = 4096;
        let msgs = messages(&batch, true, false, max);
        assert!(msgs.len() > 3, "{}", msgs.len());
        let mut ids = Vec::new();
        for m in &msgs {
            assert!(m.payload.len() <= max, "{} > {max}", m.payload.len());
            assert_eq!(m.key.as_deref(), Some("07070707070707070707070707070707"));
            for r in decode(m) {
                assert_eq!(r.resource, batch[0].resource);
                ids.extend(
                    r.scope_spans
                        .into_iter()
                        .flat_map(|s| s.spans)
                        .map(|s| s.span_id),
                );
            }
        }
        let want: Vec<Vec<u8>> = (0..50).map(|i| vec![i; 8]).collect();
        assert_eq!(ids, want, "every span once, in order");
    }

    #[test]
    fn json_is_the_otlp_json_mapping() {
        let batch = vec![rs("a", vec![vec![span(3, 1, 1)]])];
        let msgs = messages(&batch, true, true, 1_000_000);
        let back = clew_model::otlp_json::decode_request(&msgs[0].payload).unwrap();
        assert_eq!(back.resource_spans, batch);
    }
}
