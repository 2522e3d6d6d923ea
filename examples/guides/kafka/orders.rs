//! Propagating trace context through Kafka with `clew-propagation`'s Kafka helpers, rdkafka and the
//! OpenTelemetry Rust SDK (0.33). The producer writes the W3C `traceparent` into each record's
//! headers; the consumer reads it back, either per message (the `process` span is a child of the
//! message's `send` span) or per batch (one `process` span with a link to every message's context).
//!
//!     export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
//!     OTEL_SERVICE_NAME=orders cargo run -p clew-kafka \
//!         --example kafka_orders -- produce --bootstrap 127.0.0.1:9092 --topic orders --count 3
//!     OTEL_SERVICE_NAME=billing cargo run -p clew-kafka \
//!         --example kafka_orders -- consume --bootstrap 127.0.0.1:9092 --topic orders \
//!         --group billing --count 3 [--batch]
//!
//! `produce` prints {"traces": [TRACE_ID...], "send_spans": [SPAN_ID...]}, `consume` prints
//! {"traces": [...], "process_spans": [...]} (the trace and span ids of its `process` spans).

use std::error::Error;
use std::time::{Duration, Instant};

use clew_propagation::kafka::{self, RdHeaders, RecordMeta};
use clew_propagation::otel::from_otel_context;
use clew_propagation::CompositePropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

#[path = "../otlp_json.rs"]
mod otlp_json;

type Res<T> = Result<T, Box<dyn Error>>;

/// Counts failed deliveries: `BaseProducer::send` only enqueues, and a record the broker rejects is
/// reported later, to this callback, during `poll`/`flush`.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicUsize,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

// ANCHOR: produce
fn produce(
    tracer: &SdkTracer,
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> Res<Vec<SpanContext>> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create_with_context(Deliveries::default())?;
    let propagator = CompositePropagator::w3c(); // traceparent, tracestate, baggage
    let mut sent = Vec::new();
    for n in 1..=count {
        let order_id = format!("order-{n}");
        // The work that decides to send: here a root span per order; in a service, usually the
        // request's server span.
        let order = tracer.start_with_context("place-order", &Context::new());
        let cx = Context::new().with_span(order);

        // A PRODUCER `send {topic}` span (messaging semantic conventions), a child of place-order.
        let meta = RecordMeta {
            topic: topic.to_string(),
            key: Some(order_id.clone()),
            ..RecordMeta::default()
        };
        let (builder, parent) = kafka::producer_span(&meta, None).to_otel(&cx);
        let send_cx = cx.with_span(tracer.build_with_context(builder, &parent));

        // The send span's context is the message's creation context: it goes into the headers.
        let mut headers = OwnedHeaders::new();
        kafka::inject(&propagator, &from_otel_context(&send_cx), &mut headers);
        let payload = format!(r#"{{"order": "{order_id}"}}"#);
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&order_id)
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)?;

        sent.push(send_cx.span().span_context().clone());
        send_cx.span().end();
        cx.span().end();
    }
    producer.flush(Duration::from_secs(10))?;
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} of {count} records were not delivered").into());
    }
    Ok(sent)
}
// ANCHOR_END: produce

fn consumer(bootstrap: &str, topic: &str, group: &str) -> KafkaResult<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // Offsets are committed after the records are processed (at-least-once).
        .set("enable.auto.commit", "false")
        // Short group timeouts: the group forms in a second or two instead of ~20 s on a test
        // broker. The defaults are fine in production.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// The next `count` records, or an error after `timeout`.
fn poll_records(
    consumer: &BaseConsumer,
    count: usize,
    timeout: Duration,
) -> Res<Vec<OwnedMessage>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        if Instant::now() > deadline {
            return Err(format!("{} of {count} records after {timeout:?}", out.len()).into());
        }
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            out.push(msg?.detach());
        }
    }
    Ok(out)
}

fn meta(msg: &OwnedMessage) -> RecordMeta {
    RecordMeta {
        topic: msg.topic().to_string(),
        partition: Some(msg.partition()),
        offset: Some(msg.offset()),
        key: msg
            .key_view::<str>()
            .and_then(Result::ok)
            .map(str::to_string),
    }
}

// ANCHOR: process
/// One `process {topic}` CONSUMER span per record: its parent is the record's creation context
/// (the producer's `send` span), so producer and consumer are one trace.
fn process_each(tracer: &SdkTracer, records: &[OwnedMessage], group: &str) -> Vec<SpanContext> {
    let propagator = CompositePropagator::w3c();
    let no_headers = OwnedHeaders::new();
    let mut out = Vec::new();
    for msg in records {
        let headers = msg.headers().unwrap_or(&no_headers);
        let span = kafka::process_span(&propagator, &RdHeaders(headers), &meta(msg), Some(group));
        // `parent` is the extracted remote context; an empty context when the record had none.
        let (builder, parent) = span.to_otel(&Context::new());
        let cx = parent.with_span(tracer.build_with_context(builder, &parent));
        let _active = cx.clone().attach(); // the business logic's spans become children
        tracer.in_span("charge-card", |_| { /* the work */ });
        out.push(cx.span().span_context().clone());
        cx.span().end();
    }
    out
}
// ANCHOR_END: process

// ANCHOR: batch
/// One `process {topic}` CONSUMER span for the whole batch: a new trace with a link to each
/// record's creation context (a span has one parent, a batch has many).
fn process_batch(tracer: &SdkTracer, records: &[OwnedMessage], group: &str) -> SpanContext {
    let propagator = CompositePropagator::w3c();
    let no_headers = OwnedHeaders::new();
    let batch: Vec<(&OwnedHeaders, RecordMeta)> = records
        .iter()
        .map(|m| (m.headers().unwrap_or(&no_headers), meta(m)))
        .collect();
    let span = kafka::batch_process_span(&propagator, &batch, Some(group));
    let (builder, parent) = span.to_otel(&Context::new()); // no parent: a root span
    let cx = parent.with_span(tracer.build_with_context(builder, &parent));
    let _active = cx.clone().attach();
    for _ in records {
        tracer.in_span("charge-card", |_| { /* the work, one record at a time */ });
    }
    let ctx = cx.span().span_context().clone();
    cx.span().end();
    ctx
}
// ANCHOR_END: batch

struct Args {
    command: String,
    bootstrap: String,
    topic: String,
    group: String,
    count: usize,
    batch: bool,
}

fn args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        command: it
            .next()
            .ok_or("usage: kafka_orders produce|consume [options]")?,
        bootstrap: "127.0.0.1:9092".into(),
        topic: "orders".into(),
        group: "billing".into(),
        count: 3,
        batch: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value()?,
            "--topic" => a.topic = value()?,
            "--group" => a.group = value()?,
            "--count" => a.count = value()?.parse()?,
            "--batch" => a.batch = true,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(a)
}

fn ids(spans: &[SpanContext]) -> (Vec<String>, Vec<String>) {
    spans
        .iter()
        .map(|s| (s.trace_id().to_string(), s.span_id().to_string()))
        .unzip()
}

fn main() -> Res<()> {
    let a = args()?;
    let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4318".to_string());
    // Resource::builder() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().build())
        .with_simple_exporter(otlp_json::Exporter::new(&base)?)
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("shop.orders")
            .with_version("1.0.0")
            .build(),
    );

    let out = match a.command.as_str() {
        "produce" => {
            let (traces, spans) = ids(&produce(&tracer, &a.bootstrap, &a.topic, a.count)?);
            serde_json::json!({ "traces": traces, "send_spans": spans })
        }
        "consume" => {
            let consumer = consumer(&a.bootstrap, &a.topic, &a.group)?;
            let records = poll_records(&consumer, a.count, Duration::from_secs(60))?;
            let spans = if a.batch {
                vec![process_batch(&tracer, &records, &a.group)]
            } else {
                process_each(&tracer, &records, &a.group)
            };
            consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
            let (traces, spans) = ids(&spans);
            serde_json::json!({ "traces": traces, "process_spans": spans })
        }
        other => return Err(format!("unknown command {other}: produce or consume").into()),
    };
    provider.shutdown()?;
    println!("{out}");
    Ok(())
}
