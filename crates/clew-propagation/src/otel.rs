//! Integration with the `opentelemetry` crate (feature `otel`, on by default).
//!
//! [`OtelPropagator`] wraps any Clew [`Propagator`] as an
//! `opentelemetry::propagation::TextMapPropagator`, so services using the official SDK can swap
//! Clew's propagators in (`opentelemetry::global::set_text_map_propagator(OtelPropagator::new(
//! TraceContextPropagator::new()))`). Conversions between the two context models are public too.

use std::fmt;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{
    Extractor as OtelExtractor, Injector as OtelInjector, TextMapPropagator,
};
use opentelemetry::trace::{self as ot, TraceContextExt};

use crate::baggage::{Baggage, BaggageProperty};
use crate::carrier::{Extractor, Injector};
use crate::context::Context;
use crate::ids::{SpanContext, SpanId, TraceFlags, TraceId};
use crate::propagator::Propagator;
use crate::tracestate::TraceState;

/// A Clew propagator usable wherever the OpenTelemetry API expects a `TextMapPropagator`.
pub struct OtelPropagator<P> {
    inner: P,
    fields: Vec<String>,
}

impl<P: Propagator> OtelPropagator<P> {
    /// Wrap `inner`.
    pub fn new(inner: P) -> Self {
        let fields = inner.fields();
        OtelPropagator { inner, fields }
    }
}

impl<P> fmt::Debug for OtelPropagator<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OtelPropagator({:?})", self.fields)
    }
}

struct ExtractorAdapter<'a>(&'a dyn OtelExtractor);

impl Extractor for ExtractorAdapter<'_> {
    fn get_all(&self, key: &str) -> Vec<&str> {
        match self.0.get_all(key) {
            Some(v) => v,
            None => self.0.get(key).into_iter().collect(),
        }
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

struct InjectorAdapter<'a>(&'a mut dyn OtelInjector);

impl Injector for InjectorAdapter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
    fn remove(&mut self, _key: &str) {
        // The OpenTelemetry injector cannot remove; `set` replaces.
    }
}

/// Clew span context → OpenTelemetry span context (the full flag byte is kept).
pub fn to_otel_span_context(sc: &SpanContext) -> ot::SpanContext {
    let ts = ot::TraceState::from_key_value(sc.trace_state.iter()).unwrap_or_default();
    ot::SpanContext::new(
        ot::TraceId::from_bytes(sc.trace_id.0),
        ot::SpanId::from_bytes(sc.span_id.0),
        ot::TraceFlags::new(sc.flags.bits()),
        sc.is_remote,
        ts,
    )
}

/// OpenTelemetry span context → Clew span context (unknown flag bits zeroed).
pub fn from_otel_span_context(sc: &ot::SpanContext) -> SpanContext {
    let trace_state = TraceState::parse(&sc.trace_state().header()).unwrap_or_default();
    SpanContext {
        trace_id: TraceId(sc.trace_id().to_bytes()),
        span_id: SpanId(sc.span_id().to_bytes()),
        flags: TraceFlags::new(sc.trace_flags().to_u8()),
        trace_state,
        is_remote: sc.is_remote(),
    }
}

/// Clew baggage → OpenTelemetry baggage (properties become metadata).
pub fn to_otel_baggage(b: &Baggage) -> opentelemetry::baggage::Baggage {
    let mut out = opentelemetry::baggage::Baggage::new();
    for e in b.iter() {
        let meta = e
            .properties
            .iter()
            .map(|p| match &p.value {
                Some(v) => format!("{}={v}", p.key),
                None => p.key.clone(),
            })
            .collect::<Vec<_>>()
            .join(";");
        out.insert_with_metadata(e.key.clone(), e.value.clone(), meta);
    }
    out
}

/// OpenTelemetry baggage → Clew baggage (invalid keys dropped).
pub fn from_otel_baggage(b: &opentelemetry::baggage::Baggage) -> Baggage {
    let mut out = Baggage::new();
    let mut items: Vec<_> = b.iter().collect();
    items.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (k, (v, meta)) in items {
        let props = meta
            .as_str()
            .split(';')
            .filter(|s| !s.trim().is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => BaggageProperty {
                    key: k.trim().to_string(),
                    value: Some(v.trim().to_string()),
                },
                None => BaggageProperty {
                    key: p.trim().to_string(),
                    value: None,
                },
            })
            .collect();
        if out
            .insert_with_properties(k.as_str(), v.as_str(), props)
            .is_err()
        {
            let _ = out.insert(k.as_str(), v.as_str());
        }
    }
    out
}

/// OpenTelemetry context → Clew context.
pub fn from_otel_context(cx: &opentelemetry::Context) -> Context {
    let span = cx.span();
    let sc = span.span_context();
    Context {
        span: sc.is_valid().then(|| from_otel_span_context(sc)),
        baggage: from_otel_baggage(cx.baggage()),
        sampling: None,
    }
}

/// Clew context layered onto an OpenTelemetry context.
pub fn to_otel_context(base: &opentelemetry::Context, cx: &Context) -> opentelemetry::Context {
    let mut out = base.clone();
    if let Some(sc) = &cx.span {
        out = out.with_remote_span_context(to_otel_span_context(sc));
    }
    if !cx.baggage.is_empty() {
        out = out.with_baggage(to_otel_baggage(&cx.baggage));
    }
    out
}

impl<P: Propagator> TextMapPropagator for OtelPropagator<P> {
    fn inject_context(&self, cx: &opentelemetry::Context, injector: &mut dyn OtelInjector) {
        self.inner
            .inject(&from_otel_context(cx), &mut InjectorAdapter(injector));
    }

    fn extract_with_context(
        &self,
        cx: &opentelemetry::Context,
        extractor: &dyn OtelExtractor,
    ) -> opentelemetry::Context {
        let got = self.inner.extract_new(&ExtractorAdapter(extractor));
        to_otel_context(cx, &got)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{B3Propagator, BaggagePropagator, CompositePropagator, TraceContextPropagator};
    use std::collections::HashMap;

    #[test]
    fn otel_round_trip_keeps_random_flag_and_tracestate() {
        let p = OtelPropagator::new(CompositePropagator::w3c());
        let mut carrier = HashMap::new();
        carrier.insert(
            "traceparent".to_string(),
            "00-12345678901234567890123456789012-1234567890123456-03".to_string(),
        );
        carrier.insert("tracestate".to_string(), "foo=1, ,bar=2".to_string());
        carrier.insert("baggage".to_string(), "a=b=c;p,k=v%20w".to_string());
        let cx = p.extract(&carrier);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote());
        assert_eq!(sc.trace_flags().to_u8(), 0x03);
        assert_eq!(sc.trace_state().header(), "foo=1,bar=2");
        assert_eq!(
            cx.baggage().get("a").map(|v| v.as_str().to_string()),
            Some("b=c".into())
        );
        let mut out: HashMap<String, String> = HashMap::new();
        p.inject_context(&cx, &mut out);
        assert_eq!(
            out.get("traceparent").map(String::as_str),
            Some("00-12345678901234567890123456789012-1234567890123456-03")
        );
        assert_eq!(
            out.get("tracestate").map(String::as_str),
            Some("foo=1,bar=2")
        );
        let bag = Baggage::parse(out.get("baggage").map(String::as_str).unwrap_or(""));
        assert_eq!(bag.get("a"), Some("b=c"));
        assert_eq!(bag.get("k"), Some("v w"));
        assert_eq!(bag.entry("a").map(|e| e.properties.len()), Some(1));
    }

    #[test]
    fn invalid_headers_leave_the_given_context() {
        let p = OtelPropagator::new(TraceContextPropagator::new());
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_string(), "garbage".to_string());
        let cx = p.extract_with_context(&opentelemetry::Context::new(), &carrier);
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn fields_are_reported() {
        let p = OtelPropagator::new(
            CompositePropagator::default()
                .with(B3Propagator::new())
                .with(BaggagePropagator::new()),
        );
        let f: Vec<&str> = p.fields().collect();
        assert!(f.contains(&"b3") && f.contains(&"baggage"));
    }
}
