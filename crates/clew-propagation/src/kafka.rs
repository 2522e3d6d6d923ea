//! Kafka: propagation through record headers, and messaging span helpers.
//!
//! Record headers are bytes; propagation headers are written as UTF-8 and **replace** existing
//! headers of the same key (Kafka allows duplicates; a stale `traceparent` would make the
//! context invalid). Any header container implementing [`RecordHeaders`] works; [`KafkaHeaders`]
//! is a small owned one, and with feature `rdkafka` rdkafka's `OwnedHeaders` (write) and any
//! `rdkafka::message::Headers` (read, via [`RdHeaders`]) are supported.
//!
//! Span helpers follow the OpenTelemetry messaging semantic conventions: `send {topic}` is a
//! PRODUCER span, `process {topic}` a CONSUMER span; a batch consumer's process span has no
//! remote parent but a **link to each message's creation context**.

use crate::carrier::{Extractor, Injector};
use crate::context::Context;
use crate::ids::SpanContext;
use crate::propagator::Propagator;

/// Read access to Kafka record headers.
pub trait RecordHeaders {
    /// `(key, value)` pairs in order; `None` is a null value.
    fn header_pairs(&self) -> Vec<(&str, Option<&[u8]>)>;
}

/// Write access to Kafka record headers.
pub trait RecordHeadersMut: RecordHeaders {
    /// Replace every header named `key` (case-insensitive) with one `key: value`.
    fn replace_header(&mut self, key: &str, value: &[u8]);
    /// Remove every header named `key` (case-insensitive).
    fn remove_header(&mut self, key: &str);
}

/// A simple owned list of record headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaHeaders(pub Vec<(String, Option<Vec<u8>>)>);

impl KafkaHeaders {
    /// Empty headers.
    pub fn new() -> Self {
        Self::default()
    }
    /// Append a header (duplicates allowed, as in Kafka).
    pub fn push(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.0.push((key.to_string(), Some(value.to_vec())));
        self
    }
}

impl RecordHeaders for KafkaHeaders {
    fn header_pairs(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect()
    }
}

impl RecordHeadersMut for KafkaHeaders {
    fn replace_header(&mut self, key: &str, value: &[u8]) {
        self.remove_header(key);
        self.0.push((key.to_string(), Some(value.to_vec())));
    }
    fn remove_header(&mut self, key: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }
}

/// [`Extractor`] over record headers (non-UTF-8 values count as present but invalid).
pub struct HeaderExtractor<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> HeaderExtractor<'a> {
    /// Borrow `headers`.
    pub fn new<H: RecordHeaders + ?Sized>(headers: &'a H) -> Self {
        HeaderExtractor {
            pairs: headers
                .header_pairs()
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, std::str::from_utf8(v).unwrap_or("\u{fffd}"))))
                .collect(),
        }
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
            .collect()
    }
    fn keys(&self) -> Vec<&str> {
        self.pairs.iter().map(|(k, _)| *k).collect()
    }
}

/// [`Injector`] over record headers.
pub struct HeaderInjector<'a, H: RecordHeadersMut + ?Sized>(pub &'a mut H);

impl<H: RecordHeadersMut + ?Sized> Injector for HeaderInjector<'_, H> {
    fn set(&mut self, key: &str, value: String) {
        self.0.replace_header(key, value.as_bytes());
    }
    fn remove(&mut self, key: &str) {
        self.0.remove_header(key);
    }
    fn remove_prefix(&mut self, prefix: &str) {
        let keys: Vec<String> = self
            .0
            .header_pairs()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.len() >= prefix.len()
                    && k.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            })
            .map(str::to_string)
            .collect();
        for k in keys {
            self.0.remove_header(&k);
        }
    }
}

/// Inject `cx` into record headers (existing keys replaced).
pub fn inject<H: RecordHeadersMut + ?Sized>(p: &dyn Propagator, cx: &Context, headers: &mut H) {
    p.inject(cx, &mut HeaderInjector(headers));
}

/// Extract a context from record headers.
pub fn extract<H: RecordHeaders + ?Sized>(p: &dyn Propagator, headers: &H) -> Context {
    p.extract_new(&HeaderExtractor::new(headers))
}

/// Span kinds used by messaging spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// `send` / `create`.
    Producer,
    /// `process`.
    Consumer,
    /// `receive` (a pull), per current conventions.
    Client,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
}

/// A link to another span's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanLink {
    /// The linked context (a message's creation context).
    pub context: SpanContext,
    /// Link attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// Everything needed to start a messaging span with any tracer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagingSpan {
    /// `{operation} {destination}`.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// The parent, if it should be a remote parent.
    pub parent: Option<SpanContext>,
    /// Links.
    pub links: Vec<SpanLink>,
    /// `messaging.*` attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// What is known about one Kafka record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: Option<i32>,
    /// Offset.
    pub offset: Option<i64>,
    /// Record key, if it is a string.
    pub key: Option<String>,
}

fn base_attrs(op_type: &str, op_name: &str, topic: &str) -> Vec<(&'static str, AttrValue)> {
    vec![
        ("messaging.system", AttrValue::Str("kafka".into())),
        ("messaging.operation.type", AttrValue::Str(op_type.into())),
        ("messaging.operation.name", AttrValue::Str(op_name.into())),
        ("messaging.destination.name", AttrValue::Str(topic.into())),
    ]
}

fn record_attrs(meta: &RecordMeta, out: &mut Vec<(&'static str, AttrValue)>) {
    if let Some(p) = meta.partition {
        out.push((
            "messaging.destination.partition.id",
            AttrValue::Str(p.to_string()),
        ));
    }
    if let Some(o) = meta.offset {
        out.push(("messaging.kafka.offset", AttrValue::Int(o)));
    }
    if let Some(k) = &meta.key {
        out.push(("messaging.kafka.message.key", AttrValue::Str(k.clone())));
    }
}

/// A PRODUCER `send {topic}` span. Inject **its** context into the record ([`inject`]) so it
/// becomes the message's creation context.
pub fn producer_span(meta: &RecordMeta, parent: Option<&SpanContext>) -> MessagingSpan {
    let mut attributes = base_attrs("send", "send", &meta.topic);
    record_attrs(meta, &mut attributes);
    MessagingSpan {
        name: format!("send {}", meta.topic),
        kind: SpanKind::Producer,
        parent: parent.cloned(),
        links: Vec::new(),
        attributes,
    }
}

/// A CONSUMER `process {topic}` span for one record: the creation context is the parent and
/// is also linked.
pub fn process_span<H: RecordHeaders + ?Sized>(
    p: &dyn Propagator,
    headers: &H,
    meta: &RecordMeta,
    consumer_group: Option<&str>,
) -> MessagingSpan {
    let creation = extract(p, headers).span;
    let mut attributes = base_attrs("process", "process", &meta.topic);
    record_attrs(meta, &mut attributes);
    if let Some(g) = consumer_group {
        attributes.push(("messaging.consumer.group.name", AttrValue::Str(g.into())));
    }
    MessagingSpan {
        name: format!("process {}", meta.topic),
        kind: SpanKind::Consumer,
        parent: creation.clone(),
        links: creation
            .into_iter()
            .map(|context| SpanLink {
                context,
                attributes: Vec::new(),
            })
            .collect(),
        attributes,
    }
}

/// A CONSUMER `process {topic}` span for a batch: no remote parent, one link per record that
/// carries a valid creation context (with the record's partition and offset on the link).
pub fn batch_process_span<H: RecordHeaders>(
    p: &dyn Propagator,
    records: &[(&H, RecordMeta)],
    consumer_group: Option<&str>,
) -> MessagingSpan {
    let topic = match records.first() {
        Some((_, m)) if records.iter().all(|(_, x)| x.topic == m.topic) => m.topic.clone(),
        _ => "multiple".to_string(),
    };
    let mut attributes = base_attrs("process", "process", &topic);
    attributes.push((
        "messaging.batch.message_count",
        AttrValue::Int(i64::try_from(records.len()).unwrap_or(i64::MAX)),
    ));
    if let Some(g) = consumer_group {
        attributes.push(("messaging.consumer.group.name", AttrValue::Str(g.into())));
    }
    let links = records
        .iter()
        .filter_map(|(h, meta)| {
            let context = extract(p, *h).span?;
            let mut attributes = Vec::new();
            record_attrs(meta, &mut attributes);
            Some(SpanLink {
                context,
                attributes,
            })
        })
        .collect();
    MessagingSpan {
        name: format!("process {topic}"),
        kind: SpanKind::Consumer,
        parent: None,
        links,
        attributes,
    }
}

#[cfg(feature = "otel")]
impl MessagingSpan {
    /// An OpenTelemetry `SpanBuilder` (name, kind, attributes, links) and the parent context
    /// to start it in (`tracer.build_with_context(builder, &parent_cx)`).
    pub fn to_otel(
        &self,
        base: &opentelemetry::Context,
    ) -> (opentelemetry::trace::SpanBuilder, opentelemetry::Context) {
        use opentelemetry::trace::{Link, SpanBuilder, TraceContextExt};
        use opentelemetry::KeyValue;
        let kv = |(k, v): &(&'static str, AttrValue)| match v {
            AttrValue::Str(s) => KeyValue::new(*k, s.clone()),
            AttrValue::Int(i) => KeyValue::new(*k, *i),
        };
        let kind = match self.kind {
            SpanKind::Producer => opentelemetry::trace::SpanKind::Producer,
            SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
        };
        let links = self
            .links
            .iter()
            .map(|l| {
                Link::new(
                    crate::otel::to_otel_span_context(&l.context),
                    l.attributes.iter().map(kv).collect(),
                    0,
                )
            })
            .collect();
        let builder = SpanBuilder::from_name(self.name.clone())
            .with_kind(kind)
            .with_attributes(self.attributes.iter().map(kv))
            .with_links(links);
        let parent = match &self.parent {
            Some(p) => base.with_remote_span_context(crate::otel::to_otel_span_context(p)),
            None => base.clone(),
        };
        (builder, parent)
    }
}

/// rdkafka support (feature `rdkafka`).
#[cfg(feature = "rdkafka")]
mod rd {
    use super::{RecordHeaders, RecordHeadersMut};
    use rdkafka::message::{Header, Headers, OwnedHeaders};

    /// Read adapter for any rdkafka headers (`BorrowedHeaders` of a consumed message, ...).
    pub struct RdHeaders<'a, H: Headers>(pub &'a H);

    fn pairs<H: Headers>(h: &H) -> Vec<(&str, Option<&[u8]>)> {
        h.iter().map(|x| (x.key, x.value)).collect()
    }

    impl<H: Headers> RecordHeaders for RdHeaders<'_, H> {
        fn header_pairs(&self) -> Vec<(&str, Option<&[u8]>)> {
            pairs(self.0)
        }
    }

    impl RecordHeaders for OwnedHeaders {
        fn header_pairs(&self) -> Vec<(&str, Option<&[u8]>)> {
            pairs(self)
        }
    }

    fn rebuild(old: &OwnedHeaders, skip: &str) -> OwnedHeaders {
        let mut out = OwnedHeaders::new_with_capacity(old.count() + 1);
        for h in old.iter() {
            if !h.key.eq_ignore_ascii_case(skip) {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        out
    }

    impl RecordHeadersMut for OwnedHeaders {
        fn replace_header(&mut self, key: &str, value: &[u8]) {
            let rebuilt = rebuild(self, key).insert(Header {
                key,
                value: Some(value),
            });
            *self = rebuilt;
        }
        fn remove_header(&mut self, key: &str) {
            *self = rebuild(self, key);
        }
    }
}

#[cfg(feature = "rdkafka")]
pub use rd::RdHeaders;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Baggage, CompositePropagator, TraceContextPropagator};

    fn cx() -> Context {
        let mut b = Baggage::new();
        let _ = b.insert("tenant", "acme");
        Context::new()
            .with_span(SpanContext::new_root(true))
            .with_baggage(b)
    }

    #[test]
    fn inject_replaces_existing_headers_and_extract_reads_them() {
        let p = CompositePropagator::w3c();
        let mut h = KafkaHeaders::new();
        h.push("traceparent", b"stale-1")
            .push("TraceParent", b"stale-2")
            .push("app", b"keep");
        let c = cx();
        inject(&p, &c, &mut h);
        assert_eq!(
            h.0.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                .count(),
            1
        );
        assert!(h.0.iter().any(|(k, _)| k == "app"));
        let back = extract(&p, &h);
        assert_eq!(
            back.span.as_ref().map(|s| s.trace_id),
            c.span.as_ref().map(|s| s.trace_id)
        );
        assert_eq!(back.baggage.get("tenant"), Some("acme"));
        // values are UTF-8
        assert!(h
            .0
            .iter()
            .all(|(_, v)| v.as_deref().is_some_and(|v| std::str::from_utf8(v).is_ok())));
    }

    #[test]
    fn non_utf8_and_null_values_are_handled() {
        let p = TraceContextPropagator::new();
        let mut h = KafkaHeaders::new();
        h.push("traceparent", b"\xff\xfe");
        h.0.push(("tracestate".into(), None));
        assert!(extract(&p, &h).span.is_none());
    }

    #[test]
    fn producer_and_single_process_spans() {
        let meta = RecordMeta {
            topic: "orders".into(),
            partition: Some(3),
            offset: Some(42),
            key: Some("k1".into()),
        };
        let parent = SpanContext::new_root(true);
        let send = producer_span(&meta, Some(&parent));
        assert_eq!(send.name, "send orders");
        assert_eq!(send.kind, SpanKind::Producer);
        assert!(send
            .attributes
            .contains(&("messaging.system", AttrValue::Str("kafka".into()))));
        let p = TraceContextPropagator::new();
        let creation = parent.child();
        let mut h = KafkaHeaders::new();
        inject(&p, &Context::new().with_span(creation.clone()), &mut h);
        let proc_span = process_span(&p, &h, &meta, Some("billing"));
        assert_eq!(proc_span.name, "process orders");
        assert_eq!(proc_span.kind, SpanKind::Consumer);
        assert_eq!(
            proc_span.parent.as_ref().map(|s| s.span_id),
            Some(creation.span_id)
        );
        assert_eq!(proc_span.links.len(), 1);
        assert!(proc_span
            .attributes
            .contains(&("messaging.kafka.offset", AttrValue::Int(42))));
    }

    #[test]
    fn batch_consumer_links_each_message_creation_context() {
        let p = TraceContextPropagator::new();
        let creations: Vec<SpanContext> = (0..3).map(|_| SpanContext::new_root(true)).collect();
        let mut headers: Vec<KafkaHeaders> = creations
            .iter()
            .map(|c| {
                let mut h = KafkaHeaders::new();
                inject(&p, &Context::new().with_span(c.clone()), &mut h);
                h
            })
            .collect();
        headers.push(KafkaHeaders::new()); // a record without context
        let records: Vec<(&KafkaHeaders, RecordMeta)> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    h,
                    RecordMeta {
                        topic: "orders".into(),
                        partition: Some(0),
                        offset: Some(i as i64),
                        key: None,
                    },
                )
            })
            .collect();
        let span = batch_process_span(&p, &records, Some("g"));
        assert_eq!(span.name, "process orders");
        assert!(span.parent.is_none());
        assert_eq!(span.links.len(), 3);
        for (l, c) in span.links.iter().zip(&creations) {
            assert_eq!(l.context.trace_id, c.trace_id);
            assert_eq!(l.context.span_id, c.span_id);
        }
        assert!(span
            .attributes
            .contains(&("messaging.batch.message_count", AttrValue::Int(4))));
    }

    #[cfg(feature = "rdkafka")]
    #[test]
    fn rdkafka_owned_headers_replace_and_extract() {
        use rdkafka::message::{Header, Headers, OwnedHeaders};
        let mut h = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some(&b"stale"[..]),
            })
            .insert(Header {
                key: "app",
                value: Some(&b"keep"[..]),
            });
        let p = CompositePropagator::w3c();
        let c = cx();
        inject(&p, &c, &mut h);
        assert_eq!(h.iter().filter(|x| x.key == "traceparent").count(), 1);
        assert!(h.iter().any(|x| x.key == "app"));
        let back = extract(&p, &RdHeaders(&h));
        assert_eq!(back.span.map(|s| s.trace_id), c.span.map(|s| s.trace_id));
        assert_eq!(back.baggage.get("tenant"), Some("acme"));
    }

    #[cfg(feature = "otel")]
    #[test]
    fn otel_builder_carries_kind_links_and_parent() {
        use opentelemetry::trace::TraceContextExt;
        let p = TraceContextPropagator::new();
        let c = SpanContext::new_root(true);
        let mut h = KafkaHeaders::new();
        inject(&p, &Context::new().with_span(c.clone()), &mut h);
        let span = process_span(&p, &h, &RecordMeta::default(), None);
        let (b, parent) = span.to_otel(&opentelemetry::Context::new());
        assert_eq!(b.span_kind, Some(opentelemetry::trace::SpanKind::Consumer));
        assert_eq!(b.links.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            parent.span().span_context().trace_id().to_bytes(),
            c.trace_id.0
        );
    }
}
