//! A composite propagator: several formats in a configurable order.
//!
//! * extract: the **first** propagator (in configured order) that yields a span context wins the
//!   span and its sampling decision; baggage from all of them is merged, earlier propagators
//!   winning on conflicting keys;
//! * inject: every propagator injects, in order.

use crate::carrier::{Extractor, Injector};
use crate::context::Context;
use crate::propagator::Propagator;

/// Several propagators in priority order.
#[derive(Default)]
pub struct CompositePropagator {
    propagators: Vec<Box<dyn Propagator>>,
}

impl CompositePropagator {
    /// From propagators in priority order.
    pub fn new(propagators: Vec<Box<dyn Propagator>>) -> Self {
        CompositePropagator { propagators }
    }

    /// Append a propagator (lowest priority so far).
    pub fn with(mut self, p: impl Propagator + 'static) -> Self {
        self.propagators.push(Box::new(p));
        self
    }

    /// W3C Trace Context + W3C Baggage, the usual default.
    pub fn w3c() -> Self {
        Self::default()
            .with(crate::TraceContextPropagator::new())
            .with(crate::BaggagePropagator::new())
    }
}

impl Propagator for CompositePropagator {
    fn inject(&self, cx: &Context, injector: &mut dyn Injector) {
        for p in &self.propagators {
            p.inject(cx, injector);
        }
    }

    fn extract(&self, extractor: &dyn Extractor, mut cx: Context) -> Context {
        let mut span_found = false;
        let mut seen_keys: Vec<String> = Vec::new();
        for p in &self.propagators {
            let got = p.extract_new(extractor);
            if !span_found {
                if let Some(span) = got.span {
                    cx.span = Some(span);
                    cx.sampling = got.sampling;
                    span_found = true;
                } else if cx.sampling.is_none() {
                    cx.sampling = got.sampling;
                }
            }
            for e in got.baggage.iter() {
                if seen_keys.iter().any(|k| k == &e.key) {
                    continue;
                }
                seen_keys.push(e.key.clone());
                let _ = cx
                    .baggage
                    .insert_with_properties(&e.key, &e.value, e.properties.clone());
            }
        }
        cx
    }

    fn fields(&self) -> Vec<String> {
        let mut f: Vec<String> = Vec::new();
        for p in &self.propagators {
            for x in p.fields() {
                if !f.contains(&x) {
                    f.push(x);
                }
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::HeaderList;
    use crate::{B3Propagator, BaggagePropagator, JaegerPropagator, TraceContextPropagator};

    const W3C: &str = "00-11111111111111111111111111111111-1111111111111111-01";
    const B3V: &str = "22222222222222222222222222222222-2222222222222222-0";

    fn both() -> HeaderList {
        HeaderList::new().with("traceparent", W3C).with("b3", B3V)
    }

    #[test]
    fn order_decides_which_span_wins() {
        let w3c_first = CompositePropagator::default()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::new());
        let b3_first = CompositePropagator::default()
            .with(B3Propagator::new())
            .with(TraceContextPropagator::new());
        let a = w3c_first.extract_new(&both()).span.expect("span");
        let b = b3_first.extract_new(&both()).span.expect("span");
        assert_eq!(a.trace_id.to_string(), "1".repeat(32));
        assert_eq!(b.trace_id.to_string(), "2".repeat(32));
    }

    #[test]
    fn falls_through_to_next_format() {
        let p = CompositePropagator::default()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::new());
        let h = HeaderList::new()
            .with("traceparent", "garbage")
            .with("b3", B3V);
        assert_eq!(
            p.extract_new(&h).span.expect("span").trace_id.to_string(),
            "2".repeat(32)
        );
    }

    #[test]
    fn baggage_is_merged_earlier_wins() {
        let p = CompositePropagator::default()
            .with(BaggagePropagator::new())
            .with(JaegerPropagator::new());
        let h = HeaderList::new()
            .with("baggage", "a=w3c")
            .with("uberctx-a", "jaeger")
            .with("uberctx-b", "jaeger");
        let cx = p.extract_new(&h);
        assert_eq!(cx.baggage.get("a"), Some("w3c"));
        assert_eq!(cx.baggage.get("b"), Some("jaeger"));
    }

    #[test]
    fn inject_writes_every_format() {
        let p = CompositePropagator::w3c().with(B3Propagator::new());
        let cx = p.extract_new(&both());
        let mut out = HeaderList::new();
        p.inject(&cx, &mut out);
        assert_eq!(out.get("traceparent"), Some(W3C));
        assert!(out
            .get("b3")
            .is_some_and(|v| v.starts_with(&"1".repeat(32))));
        assert!(p.fields().contains(&"b3".to_string()));
    }
}
