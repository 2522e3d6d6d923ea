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

/// A minimal OTLP/HTTP JSON span exporter (shared by the guides' Rust examples).
#[path = "../otlp_json.rs"]
mod otlp_json;
