//! Parse (extract) and inject cost of Clew's propagators next to the OpenTelemetry SDK's
//! equivalents (`opentelemetry_sdk::propagation::{TraceContextPropagator, BaggagePropagator}`,
//! `opentelemetry_zipkin::Propagator` for B3). Jaeger has no 0.33-compatible SDK propagator
//! (`opentelemetry-jaeger-propagator` stops at 0.32), so it is measured for Clew alone.
//!
//! Both sides read from and write to a `HashMap<String, String>` carrier; an inject benchmark
//! includes creating that (empty) map, the same for both.
//!
//! `cargo bench -p clew-propagation` (2 s measurement per case; results in BENCHMARKS.md).

// opentelemetry-zipkin marks its whole API deprecated (the exporter is); its B3 propagator is
// still the SDK's only one.
#![allow(deprecated)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use clew_propagation::{
    B3Encoding, B3Propagator, BaggagePropagator, JaegerPropagator, Propagator,
    TraceContextPropagator,
};
use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation as sdk;

type Map = HashMap<String, String>;

fn headers(pairs: &[(&str, String)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Parse and inject one format for Clew and (if given) the SDK.
fn compare(
    c: &mut Criterion,
    name: &str,
    input: &Map,
    clew: &dyn Propagator,
    sdk: Option<&dyn TextMapPropagator>,
) {
    let mut g = c.benchmark_group(name);
    g.bench_function("parse/clew", |b| {
        b.iter(|| clew.extract_new(black_box(input)))
    });
    let clew_cx = clew.extract_new(input);
    g.bench_function("inject/clew", |b| {
        b.iter(|| {
            let mut out = Map::new();
            clew.inject(black_box(&clew_cx), &mut out);
            out
        })
    });
    if let Some(sdk) = sdk {
        g.bench_function("parse/otel_sdk", |b| {
            b.iter(|| sdk.extract(black_box(input)))
        });
        let sdk_cx = sdk.extract(input);
        g.bench_function("inject/otel_sdk", |b| {
            b.iter(|| {
                let mut out = Map::new();
                sdk.inject_context(black_box(&sdk_cx), &mut out);
                out
            })
        });
    }
    g.finish();
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn benches(c: &mut Criterion) {
    compare(
        c,
        "traceparent+tracestate",
        &headers(&[
            ("traceparent", TP.into()),
            (
                "tracestate",
                "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor@tenant=opaque-value_123".into(),
            ),
        ]),
        &TraceContextPropagator::new(),
        Some(&sdk::TraceContextPropagator::new()),
    );

    compare(
        c,
        "baggage_small",
        &headers(&[(
            "baggage",
            "userId=alice,serverNode=DF%2028,isProduction=false".into(),
        )]),
        &BaggagePropagator::new(),
        Some(&sdk::BaggagePropagator::new()),
    );

    let big: Vec<String> = (0..64)
        .map(|i| format!("key{i:02}=value%20{i:02}"))
        .collect();
    compare(
        c,
        "baggage_64",
        &headers(&[("baggage", big.join(","))]),
        &BaggagePropagator::new(),
        Some(&sdk::BaggagePropagator::new()),
    );

    compare(
        c,
        "b3_single",
        &headers(&[(
            "b3",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1".into(),
        )]),
        &B3Propagator::with_encoding(B3Encoding::Single),
        Some(&opentelemetry_zipkin::Propagator::with_encoding(
            opentelemetry_zipkin::B3Encoding::SingleHeader,
        )),
    );

    compare(
        c,
        "b3_multi",
        &headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ("x-b3-spanid", "00f067aa0ba902b7".into()),
            ("x-b3-sampled", "1".into()),
        ]),
        &B3Propagator::with_encoding(B3Encoding::Multi),
        Some(&opentelemetry_zipkin::Propagator::with_encoding(
            opentelemetry_zipkin::B3Encoding::MultipleHeader,
        )),
    );

    compare(
        c,
        "jaeger",
        &headers(&[(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1".into(),
        )]),
        &JaegerPropagator::new(),
        None,
    );
}

criterion_group! {
    name = propagation;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = benches
}
criterion_main!(propagation);
