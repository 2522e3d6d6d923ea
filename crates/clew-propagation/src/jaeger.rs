//! Jaeger propagation: `uber-trace-id` and `uberctx-*` baggage.
//!
//! `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`
//!
//! * ids are hex of up to 32 / 16 digits, **left-padded** when shorter; zero ids invalid;
//! * flags are hex: `0x01` sampled, `0x02` debug (implies sampled);
//! * the value may arrive URL-encoded (`%3A` for `:`);
//! * every `uberctx-{key}` header becomes baggage `{key}` (value percent-decoded).

use crate::baggage::{decode_value, encode_value, is_valid_key};
use crate::carrier::{Extractor, Injector};
use crate::context::{Context, Sampling};
use crate::error::ParseError;
use crate::ids::{decode_hex_padded, HexCase, SpanContext, SpanId, TraceFlags, TraceId};
use crate::propagator::Propagator;
use crate::traceparent::trim_ows;

/// The trace header.
pub const UBER_TRACE_ID: &str = "uber-trace-id";
/// The baggage header prefix.
pub const UBERCTX_PREFIX: &str = "uberctx-";

const FLAG_SAMPLED: u8 = 0x01;
const FLAG_DEBUG: u8 = 0x02;

/// The Jaeger propagator.
#[derive(Clone, Debug, Default)]
pub struct JaegerPropagator;

/// A parsed `uber-trace-id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UberTraceId {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Flags byte.
    pub flags: u8,
}

/// Parse an `uber-trace-id` value.
pub fn parse_uber_trace_id(value: &str) -> Result<UberTraceId, ParseError> {
    let decoded;
    let v = if value.contains('%') {
        decoded = decode_value(trim_ows(value));
        decoded.as_str()
    } else {
        trim_ows(value)
    };
    let parts: Vec<&str> = v.split(':').collect();
    let [t, s, p, f] = parts.as_slice() else {
        return Err(ParseError::Fields(parts.len()));
    };
    let trace_id = TraceId(decode_hex_padded::<16>(t, "trace-id", HexCase::Any)?);
    let span_id = SpanId(decode_hex_padded::<8>(s, "span-id", HexCase::Any)?);
    // parent-span-id is deprecated but must still be well-formed hex.
    decode_hex_padded::<8>(p, "parent-span-id", HexCase::Any)?;
    let flags = decode_hex_padded::<1>(f, "flags", HexCase::Any)
        .map_err(|_| ParseError::Flags(f.to_string()))?[0];
    if !trace_id.is_valid() {
        return Err(ParseError::Zero("trace-id"));
    }
    if !span_id.is_valid() {
        return Err(ParseError::Zero("span-id"));
    }
    Ok(UberTraceId {
        trace_id,
        span_id,
        flags,
    })
}

impl JaegerPropagator {
    /// A Jaeger propagator.
    pub fn new() -> Self {
        JaegerPropagator
    }
}

impl Propagator for JaegerPropagator {
    fn inject(&self, cx: &Context, injector: &mut dyn Injector) {
        if let Some(sc) = cx.span.as_ref().filter(|sc| sc.is_valid()) {
            let mut flags = 0u8;
            if sc.flags.is_sampled() {
                flags |= FLAG_SAMPLED;
            }
            if cx.sampling == Some(Sampling::Debug) {
                flags |= FLAG_DEBUG | FLAG_SAMPLED;
            }
            let trace = if sc.trace_id.to_u128() >> 64 == 0 {
                format!("{:016x}", sc.trace_id.to_u128())
            } else {
                sc.trace_id.to_string()
            };
            injector.set(UBER_TRACE_ID, format!("{trace}:{}:0:{flags:x}", sc.span_id));
        }
        for e in cx.baggage.iter() {
            injector.set(
                &format!("{UBERCTX_PREFIX}{}", e.key.to_ascii_lowercase()),
                encode_value(&e.value),
            );
        }
    }

    fn extract(&self, extractor: &dyn Extractor, mut cx: Context) -> Context {
        if let Some(Ok(u)) = extractor.get(UBER_TRACE_ID).map(parse_uber_trace_id) {
            let debug = u.flags & FLAG_DEBUG != 0;
            let sampled = debug || u.flags & FLAG_SAMPLED != 0;
            let mut sc = SpanContext::new(
                u.trace_id,
                u.span_id,
                TraceFlags::default().with_sampled(sampled),
            );
            sc.is_remote = true;
            cx.span = Some(sc);
            cx.sampling = Some(match (debug, sampled) {
                (true, _) => Sampling::Debug,
                (false, true) => Sampling::Accept,
                (false, false) => Sampling::Deny,
            });
        }
        for name in extractor.keys() {
            let lower = name.to_ascii_lowercase();
            let Some(key) = lower.strip_prefix(UBERCTX_PREFIX) else {
                continue;
            };
            if !is_valid_key(key) {
                continue;
            }
            if let Some(v) = extractor.get(name) {
                let _ = cx.baggage.insert(key, &decode_value(trim_ows(v)));
            }
        }
        cx
    }

    fn fields(&self) -> Vec<String> {
        vec![UBER_TRACE_ID.to_string(), format!("{UBERCTX_PREFIX}*")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::HeaderList;

    fn ex(h: HeaderList) -> Context {
        JaegerPropagator::new().extract_new(&h)
    }

    #[test]
    fn parses_128_and_64_bit_ids_and_hex_flags() {
        let cx = ex(HeaderList::new().with(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        ));
        let sc = cx.span.expect("valid");
        assert_eq!(sc.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(sc.flags.is_sampled());
        assert_eq!(cx.sampling, Some(Sampling::Accept));
        let cx =
            ex(HeaderList::new().with("Uber-Trace-Id", "a3ce929d0e0e4736:f067aa0ba902b7:0:03"));
        assert_eq!(cx.sampling, Some(Sampling::Debug));
        assert!(cx.span.expect("valid").flags.is_sampled());
    }

    #[test]
    fn short_ids_are_left_padded() {
        let sc = ex(HeaderList::new().with("uber-trace-id", "abc:1f:0:0"))
            .span
            .expect("valid");
        assert_eq!(sc.trace_id.to_u128(), 0xabc);
        assert_eq!(sc.span_id.to_u64(), 0x1f);
        assert!(!sc.flags.is_sampled());
    }

    #[test]
    fn url_encoded_value_is_accepted() {
        let sc = ex(HeaderList::new().with("uber-trace-id", "abc%3A1f%3A0%3A1"))
            .span
            .expect("valid");
        assert_eq!(sc.trace_id.to_u128(), 0xabc);
    }

    #[test]
    fn invalid_values_are_rejected() {
        for v in [
            "0:1:0:1",
            "1:0:0:1",
            "abc:def:0",
            "abc:def:0:1:extra",
            "xyz:def:0:1",
            "abc:def:0:zz",
            "abc:def:0:100",
            &format!("{}:1:0:1", "a".repeat(33)),
            "abc:1234567890abcdef1:0:1",
            ":::",
            "",
        ] {
            assert!(parse_uber_trace_id(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn uberctx_headers_become_baggage_and_back() {
        let cx = ex(HeaderList::new()
            .with("uber-trace-id", "abc:1f:0:1")
            .with("uberctx-user", "alice%20smith")
            .with("UberCtx-Tenant", "t1")
            .with("uberctx-", "ignored"));
        assert_eq!(cx.baggage.get("user"), Some("alice smith"));
        assert_eq!(cx.baggage.get("tenant"), Some("t1"));
        assert_eq!(cx.baggage.len(), 2);
        let mut out = HeaderList::new();
        JaegerPropagator::new().inject(&cx, &mut out);
        assert_eq!(out.get("uberctx-user"), Some("alice%20smith"));
        assert_eq!(
            out.get("uber-trace-id"),
            Some("0000000000000abc:000000000000001f:0:1")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let good = "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1";
        for i in 0..=good.len() {
            let _ = parse_uber_trace_id(&good[..i]);
        }
        for s in ["é:é:é:é", "%", "%3", "::::::", "\u{fffd}"] {
            let _ = parse_uber_trace_id(s);
        }
    }
}
