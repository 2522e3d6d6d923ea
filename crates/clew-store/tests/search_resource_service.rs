//! `resource.service.name = "x"` (structural TraceQL's usual left side) is answered from the
//! `service_name` column in blocks. The column holds the resource's first `service.name` when that
//! is a non-empty string and `unknown_service` otherwise, so only equality with another non-empty
//! string may take the column; the edge cases here (missing, empty, non-string, duplicated key,
//! the literal `unknown_service`) must answer exactly as the head's row matcher does.

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::column_filter::ColumnQuery;
use clew_store::matcher::Matcher;
use clew_store::{
    AttrScope, CompareOp, SearchQuery, SpanCondition, SpanField, Store, StoreConfig, StoreMetrics,
    TagValue, TraceReader,
};
use std::collections::BTreeSet;
use std::time::Duration;

fn kv(key: &str, v: Option<Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: v.map(|v| AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// The resources of traces 0..: what each one's `resource.service.name` is to the matcher.
fn resources() -> Vec<Vec<KeyValue>> {
    let s = |x: &str| Some(Value::StringValue(x.into()));
    vec![
        vec![kv("service.name", s("frontend"))],
        vec![kv("service.name", s("cart"))],
        vec![kv("service.name", s(""))],
        vec![kv("service.name", Some(Value::IntValue(5)))],
        vec![kv("host.name", s("frontend"))],
        vec![kv("service.name", s("unknown_service"))],
        // The first value counts, for the column as for the matcher.
        vec![
            kv("service.name", Some(Value::IntValue(1))),
            kv("service.name", s("frontend")),
        ],
        vec![
            kv("service.name", s("cart")),
            kv("service.name", s("frontend")),
        ],
        vec![kv("service.name", None)],
        vec![kv("service.name", s("frontend")), kv("region", s("eu"))],
    ]
}

fn batch(tenant: &Tenant, n: usize, attributes: Vec<KeyValue>) -> SpanBatch {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
    let start = 1_750_000_000_000_000_000u64 + n as u64 * 1_000_000_000;
    SpanBatch::new(
        tenant.clone(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id.to_vec(),
                    span_id: (n as u64 + 1).to_be_bytes().to_vec(),
                    name: "op".into(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + 1000,
                    // A span attribute of the same name must not count for the resource scope.
                    attributes: vec![kv(
                        "service.name",
                        Some(Value::StringValue("frontend".into())),
                    )],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

fn query(want: &str) -> SearchQuery {
    SearchQuery {
        conditions: vec![SpanCondition {
            field: SpanField::Attribute {
                scope: AttrScope::Resource,
                key: "service.name".into(),
            },
            op: CompareOp::Eq,
            value: TagValue::String(want.into()),
        }],
        limit: 1000,
        ..Default::default()
    }
}

/// Trace numbers whose first resource `service.name` is the string `want`.
fn expected(want: &str) -> BTreeSet<usize> {
    resources()
        .iter()
        .enumerate()
        .filter(|(_, attrs)| {
            attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .is_some_and(|kv| {
                    matches!(
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(Value::StringValue(s)) if s == want
                    )
                })
        })
        .map(|(n, _)| n)
        .collect()
}

async fn found(store: &Store, tenant: &Tenant, want: &str) -> BTreeSet<usize> {
    store
        .search(tenant, &query(want))
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            let id: TraceId = h.trace_id;
            u64::from_be_bytes(id.0[..8].try_into().unwrap()) as usize - 1
        })
        .collect()
}

#[test]
fn only_plain_service_names_compile_to_the_column() {
    for (want, column) in [
        ("frontend", true),
        ("cart", true),
        ("", false),
        ("unknown_service", false),
    ] {
        let m = Matcher::new(&query(want)).unwrap();
        assert_eq!(
            ColumnQuery::compile(&m).is_some(),
            column,
            "resource.service.name = {want:?}"
        );
    }
    // Other operators and other resource keys still take the row path.
    let mut q = query("frontend");
    q.conditions[0].op = CompareOp::Ne;
    assert!(ColumnQuery::compile(&Matcher::new(&q).unwrap()).is_none());
    let mut q = query("eu");
    q.conditions[0].field = SpanField::Attribute {
        scope: AttrScope::Resource,
        key: "region".into(),
    };
    assert!(ColumnQuery::compile(&Matcher::new(&q).unwrap()).is_none());
}

#[tokio::test]
async fn resource_service_name_answers_alike_in_head_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.flush_max_age = Duration::from_secs(3600);
    cfg.compaction.enabled = false;
    cfg.retention = Duration::from_secs(100 * 365 * 86_400);
    let (store, _) = Store::open(cfg, StoreMetrics::default()).await.unwrap();
    let tenant = Tenant::new("t").unwrap();
    for (n, attrs) in resources().into_iter().enumerate() {
        store.consume(batch(&tenant, n, attrs)).await.unwrap();
    }
    let wants = ["frontend", "cart", "", "unknown_service", "5", "eu"];
    assert_eq!(expected("frontend"), BTreeSet::from([0, 9]));
    assert_eq!(expected("cart"), BTreeSet::from([1, 7]));
    for want in wants {
        assert_eq!(
            found(&store, &tenant, want).await,
            expected(want),
            "head, {want:?}"
        );
    }
    store.flush().await.unwrap();
    assert_eq!(store.head_span_count(), 0);
    let blocks = store.blocks(&tenant);
    assert_eq!(blocks.len(), 1);
    // The column path is the one taken for the plain names (the block has a spill list).
    assert!(blocks[0].meta.dedicated_spills.is_some());
    for want in wants {
        assert_eq!(
            found(&store, &tenant, want).await,
            expected(want),
            "block, {want:?}"
        );
    }
}
