//! The W3C Trace Context propagator (`traceparent` + `tracestate`).

use crate::carrier::{Extractor, Injector};
use crate::context::Context;
use crate::ids::SpanContext;
use crate::propagator::Propagator;
use crate::traceparent::{Traceparent, TRACEPARENT};
use crate::tracestate::{TraceState, DEFAULT_MAX_LEN, TRACESTATE};

/// W3C Trace Context Level 2.
///
/// * extract: exactly one valid `traceparent` is required (several fields → invalid); when it is
///   invalid, `tracestate` is not even parsed; an invalid `tracestate` (a member breaking the key
///   or value grammar, more than 32 members) is dropped but does not affect `traceparent`; a
///   duplicated key is not invalid — the header is kept with the key's left-most entry (see
///   [`crate::tracestate`]).
/// * inject: version `00`, known flags only (the random flag is kept), `tracestate` truncated to
///   [`TraceContextPropagator::max_tracestate_len`] characters by whole members.
#[derive(Clone, Debug)]
pub struct TraceContextPropagator {
    max_tracestate_len: usize,
}

impl Default for TraceContextPropagator {
    fn default() -> Self {
        TraceContextPropagator {
            max_tracestate_len: DEFAULT_MAX_LEN,
        }
    }
}

impl TraceContextPropagator {
    /// The default propagator (512-character `tracestate` limit, the spec's recommended minimum).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the `tracestate` length limit used on injection.
    pub fn with_max_tracestate_len(mut self, max: usize) -> Self {
        self.max_tracestate_len = max;
        self
    }

    /// The `tracestate` length limit used on injection.
    pub fn max_tracestate_len(&self) -> usize {
        self.max_tracestate_len
    }

    /// Extract only the span context, if the headers carry a valid one.
    pub fn extract_span_context(&self, extractor: &dyn Extractor) -> Option<SpanContext> {
        let tp = Traceparent::parse_fields(&extractor.get_all(TRACEPARENT)).ok()?;
        // Only now that traceparent is valid may tracestate be parsed.
        let trace_state =
            TraceState::parse_fields(&extractor.get_all(TRACESTATE)).unwrap_or_default();
        Some(SpanContext {
            trace_id: tp.trace_id,
            span_id: tp.parent_id,
            flags: tp.flags,
            trace_state,
            is_remote: true,
        })
    }
}

impl Propagator for TraceContextPropagator {
    fn inject(&self, cx: &Context, injector: &mut dyn Injector) {
        let Some(sc) = cx.span.as_ref().filter(|sc| sc.is_valid()) else {
            return;
        };
        let tp = Traceparent {
            version: 0,
            trace_id: sc.trace_id,
            parent_id: sc.span_id,
            flags: sc.flags,
        };
        injector.set(TRACEPARENT, tp.to_header());
        let ts = sc
            .trace_state
            .header_value_truncated(self.max_tracestate_len);
        if !ts.is_empty() {
            injector.set(TRACESTATE, ts);
        }
    }

    fn extract(&self, extractor: &dyn Extractor, mut cx: Context) -> Context {
        if let Some(sc) = self.extract_span_context(extractor) {
            cx.span = Some(sc);
        }
        cx
    }

    fn fields(&self) -> Vec<String> {
        vec![TRACEPARENT.to_string(), TRACESTATE.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::HeaderList;
    use crate::ids::TraceFlags;

    const TP: &str = "00-12345678901234567890123456789012-1234567890123456-01";

    fn extract(h: &HeaderList) -> Option<SpanContext> {
        TraceContextPropagator::new().extract_span_context(h)
    }

    #[test]
    fn header_names_are_case_insensitive() {
        for name in ["traceparent", "TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
            let h = HeaderList::new().with(name, TP).with("TrAcEsTaTe", "foo=1");
            let sc = extract(&h).expect("valid");
            assert_eq!(sc.trace_state.get("foo"), Some("1"));
        }
        for name in ["trace-parent", "trace.parent"] {
            assert!(extract(&HeaderList::new().with(name, TP)).is_none());
        }
        let sc = extract(
            &HeaderList::new()
                .with("traceparent", TP)
                .with("trace-state", "foo=1"),
        )
        .expect("valid");
        assert!(sc.trace_state.is_empty());
    }

    #[test]
    fn two_traceparent_headers_are_invalid() {
        let h = HeaderList::new()
            .with(
                "traceparent",
                "00-12345678901234567890123456789011-1234567890123456-01",
            )
            .with("traceparent", TP);
        assert!(extract(&h).is_none());
    }

    #[test]
    fn tracestate_is_ignored_when_traceparent_is_invalid() {
        let h = HeaderList::new()
            .with(
                "traceparent",
                "ff-12345678901234567890123456789012-1234567890123456-01",
            )
            .with("tracestate", "foo=1");
        let cx = TraceContextPropagator::new().extract_new(&h);
        assert!(cx.span.is_none());
        let h = HeaderList::new().with("tracestate", "foo=1,bar=2");
        assert!(TraceContextPropagator::new().extract_new(&h).span.is_none());
    }

    #[test]
    fn invalid_tracestate_does_not_affect_traceparent() {
        let h = HeaderList::new()
            .with("traceparent", TP)
            .with("tracestate", "foo=1,@bar=2");
        let sc = extract(&h).expect("traceparent still valid");
        assert!(sc.trace_state.is_empty());
        assert_eq!(sc.trace_id.to_string(), "12345678901234567890123456789012");
    }

    #[test]
    fn duplicated_tracestate_keys_are_propagated_once() {
        // The suite's test_tracestate_duplicated_keys: the header is inherited, with `foo=1`, `foo=2`
        // or both; Clew sends the left-most entry of each key.
        for (fields, want) in [
            (vec!["foo=1,foo=1"], "foo=1"),
            (vec!["foo=1,foo=2"], "foo=1"),
            (vec!["foo=1", "foo=1"], "foo=1"),
            (vec!["foo=1", "foo=2"], "foo=1"),
            (vec!["rojo=1,congo=2,rojo=3"], "rojo=1,congo=2"),
        ] {
            let mut h = HeaderList::new().with("traceparent", TP);
            for f in &fields {
                h.append("tracestate", *f);
            }
            let sc = extract(&h).expect("valid");
            let mut out = HeaderList::new();
            TraceContextPropagator::new().inject(&Context::new().with_span(sc.child()), &mut out);
            assert_eq!(out.get("tracestate"), Some(want), "{fields:?}");
        }
    }

    #[test]
    fn empty_tracestate_fields_are_accepted() {
        for fields in [vec![""], vec!["foo=1", ""], vec!["", "foo=1"]] {
            let mut h = HeaderList::new().with("traceparent", TP);
            for f in fields {
                h.append("tracestate", f);
            }
            let sc = extract(&h).expect("valid");
            let p = TraceContextPropagator::new();
            let mut out = HeaderList::new();
            p.inject(&Context::new().with_span(sc.child()), &mut out);
            // never send an empty tracestate
            assert!(out.get_all("tracestate").iter().all(|v| !v.is_empty()));
        }
    }

    #[test]
    fn continuing_a_trace_keeps_trace_id_random_flag_and_tracestate() {
        let h = HeaderList::new()
            .with(
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-ff",
            )
            .with("tracestate", "foo=1,bar=2");
        let p = TraceContextPropagator::new();
        let parent = extract(&h).expect("valid");
        let child = parent.child();
        let mut out = HeaderList::new();
        p.inject(&Context::new().with_span(child.clone()), &mut out);
        let tp = Traceparent::parse(out.get("traceparent").expect("set")).expect("valid");
        assert_eq!(tp.trace_id, parent.trace_id);
        assert_ne!(tp.parent_id, parent.span_id);
        assert_eq!(tp.flags.bits(), TraceFlags::SAMPLED | TraceFlags::RANDOM);
        assert_eq!(out.get("tracestate"), Some("foo=1,bar=2"));
    }

    #[test]
    fn new_root_sets_random_flag() {
        let root = SpanContext::new_root(false);
        assert!(root.flags.is_random());
        let mut out = HeaderList::new();
        TraceContextPropagator::new().inject(&Context::new().with_span(root), &mut out);
        assert!(out.get("traceparent").expect("set").ends_with("-02"));
    }

    #[test]
    fn inject_truncates_tracestate() {
        let mut sc = SpanContext::new_root(true);
        sc.trace_state =
            TraceState::parse(&format!("a=1,big={},b=2", "x".repeat(200))).expect("valid");
        let p = TraceContextPropagator::new().with_max_tracestate_len(64);
        let mut out = HeaderList::new();
        p.inject(&Context::new().with_span(sc), &mut out);
        assert_eq!(out.get("tracestate"), Some("a=1,b=2"));
    }

    #[test]
    fn inject_skips_invalid_span_context() {
        let mut out = HeaderList::new();
        TraceContextPropagator::new()
            .inject(&Context::new().with_span(SpanContext::default()), &mut out);
        assert!(out.0.is_empty());
    }
}
