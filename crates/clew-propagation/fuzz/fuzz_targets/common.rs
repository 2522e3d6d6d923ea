//! Shared invariant: whatever a propagator extracts, it re-injects and re-extracts to the same
//! span; a second injection round is a fixpoint (same headers).
#![allow(dead_code)]

use clew_propagation::tracestate::DEFAULT_MAX_LEN;
use clew_propagation::{Context, HeaderList, Propagator, TraceState};

/// Header list sorted by name (injection order does not matter).
pub fn sorted(h: &HeaderList) -> Vec<(String, String)> {
    let mut v = h.0.clone();
    v.sort();
    v
}

pub fn inject(p: &dyn Propagator, cx: &Context) -> HeaderList {
    let mut h = HeaderList::new();
    p.inject(cx, &mut h);
    h
}

/// Span identity as a format can carry it (flags compared in full: every propagator keeps
/// only the bits it can re-emit). With `strict == false` (composites) only the ids and the
/// sampled bit: once re-injected in every format, another format than the one that won may win
/// the next extraction (say Jaeger over a traceparent when the incoming `uber-trace-id` was
/// invalid), and only W3C carries `tracestate` and the random flag.
pub fn same_span(a: &Context, b: &Context, strict: bool) -> bool {
    match (&a.span, &b.span) {
        (None, None) => true,
        (Some(x), Some(y)) if !strict => {
            x.trace_id == y.trace_id
                && x.span_id == y.span_id
                && x.flags.is_sampled() == y.flags.is_sampled()
        }
        (Some(x), Some(y)) => {
            x.trace_id == y.trace_id
                && x.span_id == y.span_id
                && x.flags == y.flags
                && same_trace_state(&x.trace_state, &y.trace_state)
        }
        _ => false,
    }
}

/// Equal, or (when over the injection limit) truncated to a subset.
fn same_trace_state(sent: &TraceState, got: &TraceState) -> bool {
    if sent.header_value().len() <= DEFAULT_MAX_LEN {
        sent == got
    } else {
        got.iter().all(|(k, v)| sent.get(k) == Some(v))
    }
}

/// Extract from `input`, inject, re-extract: same span; inject again: same headers as the
/// round after.
pub fn round_trip(p: &dyn Propagator, input: &HeaderList) {
    round_trip_with(p, input, true)
}

/// [`round_trip`] with the span comparison of [`same_span`].
pub fn round_trip_with(p: &dyn Propagator, input: &HeaderList, strict: bool) {
    let cx1 = p.extract_new(input);
    let h1 = inject(p, &cx1);
    let cx2 = p.extract_new(&h1);
    assert!(
        same_span(&cx1, &cx2, strict),
        "span changed: {cx1:?} -> {h1:?} -> {cx2:?}"
    );
    let h2 = inject(p, &cx2);
    let cx3 = p.extract_new(&h2);
    let h3 = inject(p, &cx3);
    if strict {
        assert_eq!(sorted(&h2), sorted(&h3), "no fixpoint: {cx2:?} vs {cx3:?}");
        assert_eq!(cx2, cx3, "no fixpoint");
    } else {
        // Composites merge baggage from several formats (Jaeger lowercases keys), so member
        // order may change between rounds; the set of members may not.
        assert!(
            same_span(&cx2, &cx3, false),
            "no fixpoint: {cx2:?} vs {cx3:?}"
        );
        let set = |cx: &Context| {
            let mut v: Vec<_> = cx
                .baggage
                .iter()
                .cloned()
                .map(|e| (e.key, e.value))
                .collect();
            v.sort();
            v
        };
        assert_eq!(set(&cx2), set(&cx3), "baggage changed: {cx2:?} vs {cx3:?}");
    }
}

/// Lines of the input as header fields: `name: value` (a line without `:` is skipped).
pub fn header_lines(s: &str) -> HeaderList {
    s.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
