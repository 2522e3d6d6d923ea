//! The flat form of a span: one span with shared handles to its resource and scope. The store's
//! head keeps spans this way, and query results are regrouped into OTLP `ResourceSpans` from it.

use crate::attrs;
use crate::otlp::common::InstrumentationScope;
use crate::otlp::resource::Resource;
use crate::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use crate::otlp::Message;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct FlatSpan {
    pub resource: Arc<Resource>,
    pub resource_schema_url: Arc<str>,
    pub scope: Arc<InstrumentationScope>,
    pub scope_schema_url: Arc<str>,
    pub span: Span,
}

impl FlatSpan {
    pub fn service_name(&self) -> &str {
        attrs::service_name(Some(&self.resource))
    }

    pub fn duration_nanos(&self) -> u64 {
        self.span
            .end_time_unix_nano
            .saturating_sub(self.span.start_time_unix_nano)
    }
}

/// Flattens OTLP resource spans; resources and scopes are shared, not copied, between their spans.
pub fn flatten(resource_spans: Vec<ResourceSpans>) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = Arc::new(rs.resource.unwrap_or_default());
        let resource_schema_url: Arc<str> = Arc::from(rs.schema_url);
        for ss in rs.scope_spans {
            let scope = Arc::new(ss.scope.unwrap_or_default());
            let scope_schema_url: Arc<str> = Arc::from(ss.schema_url);
            for span in ss.spans {
                out.push(FlatSpan {
                    resource: resource.clone(),
                    resource_schema_url: resource_schema_url.clone(),
                    scope: scope.clone(),
                    scope_schema_url: scope_schema_url.clone(),
                    span,
                });
            }
        }
    }
    out
}

/// Regroups flat spans into OTLP form: one `ResourceSpans` per distinct resource (+ schema url), one
/// `ScopeSpans` per distinct scope within it. Order of first appearance is kept.
pub fn group_into_resource_spans(spans: impl IntoIterator<Item = FlatSpan>) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut resource_index: HashMap<(Vec<u8>, Arc<str>), usize> = HashMap::new();
    let mut scope_index: HashMap<(usize, Vec<u8>, Arc<str>), usize> = HashMap::new();
    for fs in spans {
        let rkey = (fs.resource.encode_to_vec(), fs.resource_schema_url.clone());
        let ri = *resource_index.entry(rkey).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some((*fs.resource).clone()),
                scope_spans: Vec::new(),
                schema_url: fs.resource_schema_url.to_string(),
            });
            out.len() - 1
        });
        let skey = (ri, fs.scope.encode_to_vec(), fs.scope_schema_url.clone());
        let scope_spans = &mut out[ri].scope_spans;
        let si = *scope_index.entry(skey).or_insert_with(|| {
            scope_spans.push(ScopeSpans {
                scope: Some((*fs.scope).clone()),
                spans: Vec::new(),
                schema_url: fs.scope_schema_url.to_string(),
            });
            scope_spans.len() - 1
        });
        scope_spans[si].spans.push(fs.span);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::kv_str;

    #[test]
    fn flatten_then_group_is_identity() {
        let rs = vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "a")],
                    dropped_attributes_count: 2,
                    ..Default::default()
                }),
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "s1".into(),
                            version: "1".into(),
                            ..Default::default()
                        }),
                        spans: vec![
                            Span {
                                name: "x".into(),
                                ..Default::default()
                            },
                            Span {
                                name: "y".into(),
                                ..Default::default()
                            },
                        ],
                        schema_url: String::new(),
                    },
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "s2".into(),
                            ..Default::default()
                        }),
                        spans: vec![Span {
                            name: "z".into(),
                            ..Default::default()
                        }],
                        schema_url: String::new(),
                    },
                ],
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", "b")],
                    ..Default::default()
                }),
                schema_url: String::new(),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![Span {
                        name: "w".into(),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
            },
        ];
        let flat = flatten(rs.clone());
        assert_eq!(flat.len(), 4);
        assert_eq!(flat[0].service_name(), "a");
        assert_eq!(group_into_resource_spans(flat), rs);
    }
}
