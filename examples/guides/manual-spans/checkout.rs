//! Manual spans for business logic with the OpenTelemetry Rust API (`opentelemetry` 0.33) and SDK
//! (`opentelemetry_sdk`): attributes, events, links, errors. Two traces, as in checkout.py: a
//! checkout whose discount step fails, and a settlement batch job that links to the checkout.
//!
//!     OTEL_SERVICE_NAME=shop OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!         cargo run -p clew-propagation --example manual_spans
//!
//! Prints {"checkout": TRACE_ID, "settlement": TRACE_ID} on stdout.
//!
//! Export: in an application use the `opentelemetry-otlp` crate. This example is built inside Clew's
//! workspace, which does not compile that crate, so it carries a small OTLP/HTTP JSON exporter (the
//! `otlp_json` module at the end): the SDK hands it finished spans, it POSTs them to `/v1/traces`.

use std::error::Error;
use std::fmt;

use opentelemetry::trace::{
    Link, Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

#[derive(Debug)]
struct CouponExpired(String);

impl fmt::Display for CouponExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coupon {} expired", self.0)
    }
}

impl Error for CouponExpired {}

struct Item {
    sku: &'static str,
    cents: i64,
}

fn apply_discount(coupon: &str) -> Result<i64, CouponExpired> {
    Err(CouponExpired(coupon.to_string()))
}

// ANCHOR: checkout
fn checkout(tracer: &SdkTracer, cart: &[Item], coupon: &str) -> SpanContext {
    let builder = tracer.span_builder("checkout").with_kind(SpanKind::Server);
    tracer.in_span_with_builder(builder, |cx| {
        let span = cx.span();
        // Attributes: what you will search and group by. Low-cardinality names, typed values
        // (`i64` is stored as an integer, so TraceQL can compare it).
        span.set_attribute(KeyValue::new("app.cart.items", cart.len() as i64));
        span.set_attribute(KeyValue::new(
            "app.cart.total_cents",
            cart.iter().map(|i| i.cents).sum::<i64>(),
        ));
        span.set_attribute(KeyValue::new("app.payment.method", "card"));

        tracer.in_span("validate-cart", |cx| {
            // Events: things that happened at one instant inside the span.
            let skus: Vec<StringValue> = cart.iter().map(|i| i.sku.into()).collect();
            cx.span().add_event(
                "cart.validated",
                vec![KeyValue::new(
                    "app.cart.skus",
                    Value::Array(Array::String(skus)),
                )],
            );
        });

        let discount = tracer
            .span_builder("apply-discount")
            .with_attributes([KeyValue::new("app.coupon", coupon.to_string())]);
        let applied = tracer.in_span_with_builder(discount, |cx| {
            let result = apply_discount(coupon);
            if let Err(e) = &result {
                // Unlike Python, nothing records an error for you: the `exception` event and the
                // ERROR status go on the span of the operation that failed.
                let span = cx.span();
                span.add_event(
                    "exception",
                    vec![
                        KeyValue::new("exception.type", "CouponExpired"),
                        KeyValue::new("exception.message", e.to_string()),
                    ],
                );
                span.set_status(Status::error(e.to_string()));
            }
            result
        });
        if applied.is_err() {
            // The checkout goes on without the discount: its own status stays unset.
            span.add_event(
                "discount.skipped",
                vec![KeyValue::new("app.coupon", coupon.to_string())],
            );
        }
        span.span_context().clone()
    })
}
// ANCHOR_END: checkout

// ANCHOR: settlement
fn settle(tracer: &SdkTracer, orders: &[SpanContext]) -> SpanContext {
    // A batch job is its own trace; links tie it to every trace it works on.
    let links = orders
        .iter()
        .map(|ctx| Link::new(ctx.clone(), vec![KeyValue::new("app.link", "settles")], 0))
        .collect();
    let mut span = tracer
        .span_builder("settle-payments")
        .with_links(links)
        .start(tracer);
    let timeout = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "payment provider did not answer within 5s",
    );
    // Handled errors: record them yourself, and say what failed in the status.
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", "std::io::Error"),
            KeyValue::new("exception.message", timeout.to_string()),
        ],
    );
    span.set_status(Status::error("provider timeout"));
    let ctx = span.span_context().clone();
    span.end();
    ctx
}
// ANCHOR_END: settlement

fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4318".to_string());
    let exporter = otlp_json::Exporter::new(&base)?;
    // ANCHOR: setup
    // Resource::builder() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().build())
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("shop.checkout")
            .with_version("1.0.0")
            .build(),
    );
    // ANCHOR_END: setup
    let _root = Context::new().attach(); // start from an empty context: no ambient parent

    let cart = [
        Item {
            sku: "sku-1",
            cents: 1250,
        },
        Item {
            sku: "sku-2",
            cents: 499,
        },
    ];
    let order = checkout(&tracer, &cart, "SPRING24");
    let batch = settle(&tracer, std::slice::from_ref(&order));
    provider.shutdown()?;
    println!(
        "{}",
        serde_json::json!({
            "checkout": order.trace_id().to_string(),
            "settlement": batch.trace_id().to_string(),
        })
    );
    Ok(())
}

/// A minimal OTLP/HTTP JSON span exporter: SDK `SpanData` to the OTLP JSON encoding (trace and span
/// ids as hex, 64-bit integers as strings), one blocking HTTP/1.1 POST per batch. Plain `http://`
/// only; use `opentelemetry-otlp` for TLS, retries and gzip.
mod otlp_json {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry::{Array, KeyValue, Value};
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use opentelemetry_sdk::Resource;
    use serde_json::{json, Value as Json};

    #[derive(Debug)]
    pub struct Exporter {
        host_port: String,
        resource: Vec<Json>,
    }

    impl Exporter {
        pub fn new(base: &str) -> Result<Self, String> {
            let host_port = base
                .strip_prefix("http://")
                .ok_or_else(|| format!("{base}: only http:// endpoints are supported"))?
                .trim_end_matches('/')
                .to_string();
            Ok(Self {
                host_port,
                resource: Vec::new(),
            })
        }

        fn post(&self, body: &[u8]) -> Result<(), String> {
            let mut conn = TcpStream::connect(&self.host_port).map_err(|e| e.to_string())?;
            // The SDK asks exporters not to block indefinitely.
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let head = format!(
                "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.host_port,
                body.len()
            );
            conn.write_all(head.as_bytes())
                .and_then(|()| conn.write_all(body))
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply).map_err(|e| e.to_string())?;
            let status = reply.split(' ').nth(1).unwrap_or("");
            if status == "200" {
                Ok(())
            } else {
                Err(format!(
                    "OTLP/HTTP export failed: {}",
                    reply.lines().next().unwrap_or("")
                ))
            }
        }
    }

    impl SpanExporter for Exporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let spans: Vec<Json> = batch.iter().map(span).collect();
            let body = json!({ "resourceSpans": [{
                "resource": { "attributes": self.resource },
                // One scope per process is all this example has; a general exporter groups by scope.
                "scopeSpans": [{
                    "scope": batch.first().map(|s| json!({
                        "name": s.instrumentation_scope.name(),
                        "version": s.instrumentation_scope.version().unwrap_or(""),
                    })),
                    "spans": spans,
                }],
            }]});
            self.post(body.to_string().as_bytes())
                .map_err(OTelSdkError::InternalFailure)
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.resource = resource
                .iter()
                .map(|(k, v)| kv(&KeyValue::new(k.clone(), v.clone())))
                .collect();
        }
    }

    fn nanos(t: SystemTime) -> String {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_string()
    }

    fn any_value(v: &Value) -> Json {
        match v {
            Value::Bool(b) => json!({ "boolValue": b }),
            Value::I64(i) => json!({ "intValue": i.to_string() }),
            Value::F64(f) => json!({ "doubleValue": f }),
            Value::String(s) => json!({ "stringValue": s.as_str() }),
            Value::Array(a) => {
                let values: Vec<Json> = match a {
                    Array::Bool(v) => v.iter().map(|b| any_value(&Value::Bool(*b))).collect(),
                    Array::I64(v) => v.iter().map(|i| any_value(&Value::I64(*i))).collect(),
                    Array::F64(v) => v.iter().map(|f| any_value(&Value::F64(*f))).collect(),
                    Array::String(v) => v
                        .iter()
                        .map(|s| json!({ "stringValue": s.as_str() }))
                        .collect(),
                    _ => Vec::new(),
                };
                json!({ "arrayValue": { "values": values } })
            }
            other => json!({ "stringValue": other.to_string() }),
        }
    }

    fn kv(kv: &KeyValue) -> Json {
        json!({ "key": kv.key.as_str(), "value": any_value(&kv.value) })
    }

    fn span(s: &SpanData) -> Json {
        let ctx = &s.span_context;
        let kind = match s.span_kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        };
        let status = match &s.status {
            Status::Unset => json!({}),
            Status::Ok => json!({ "code": 1 }),
            Status::Error { description } => json!({ "code": 2, "message": description }),
        };
        let parent = if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            String::new()
        } else {
            s.parent_span_id.to_string()
        };
        json!({
            "traceId": ctx.trace_id().to_string(),
            "spanId": ctx.span_id().to_string(),
            "parentSpanId": parent,
            "name": s.name,
            "kind": kind,
            "startTimeUnixNano": nanos(s.start_time),
            "endTimeUnixNano": nanos(s.end_time),
            "attributes": s.attributes.iter().map(kv).collect::<Vec<_>>(),
            "events": s.events.iter().map(|e| json!({
                "timeUnixNano": nanos(e.timestamp),
                "name": e.name,
                "attributes": e.attributes.iter().map(kv).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "links": s.links.iter().map(|l| json!({
                "traceId": l.span_context.trace_id().to_string(),
                "spanId": l.span_context.span_id().to_string(),
                "attributes": l.attributes.iter().map(kv).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "status": status,
        })
    }
}
