//! Zipkin B3 propagation, single (`b3`) and multi (`X-B3-*`) header.
//!
//! * trace ids of 128 bits (32 hex) or 64 bits (16 hex, left-padded); lowercase hex as the B3
//!   spec requires; zero ids invalid;
//! * sampling state `1`, `0`, `d` (debug, implies sampled); `b3: 0` alone is a deny decision
//!   without ids ([`Sampling::Deny`]);
//! * when both encodings are present and `b3` is valid, the single header wins;
//! * inject: single header by default, never `ParentSpanId`.

use crate::carrier::{Extractor, Injector};
use crate::context::{Context, Sampling};
use crate::error::ParseError;
use crate::ids::{decode_hex, HexCase, SpanContext, SpanId, TraceFlags, TraceId};
use crate::propagator::Propagator;
use crate::traceparent::trim_ows;

/// Single header.
pub const B3: &str = "b3";
/// Multi header: trace id.
pub const X_B3_TRACE_ID: &str = "x-b3-traceid";
/// Multi header: span id.
pub const X_B3_SPAN_ID: &str = "x-b3-spanid";
/// Multi header: parent span id (read, never written).
pub const X_B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
/// Multi header: sampled.
pub const X_B3_SAMPLED: &str = "x-b3-sampled";
/// Multi header: flags (`1` = debug).
pub const X_B3_FLAGS: &str = "x-b3-flags";

/// Which encoding(s) to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum B3Encoding {
    /// `b3: {trace}-{span}-{sampling}` (the default).
    #[default]
    Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` / `X-B3-Flags`.
    Multi,
    /// Both.
    SingleAndMulti,
}

/// The B3 propagator.
#[derive(Clone, Debug, Default)]
pub struct B3Propagator {
    encoding: B3Encoding,
}

/// What a B3 header carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct B3Context {
    /// Ids, when present.
    pub ids: Option<(TraceId, SpanId)>,
    /// Sampling decision, when present.
    pub sampling: Option<Sampling>,
}

fn trace_id(s: &str) -> Result<TraceId, ParseError> {
    let mut out = [0u8; 16];
    match s.len() {
        32 => decode_hex(s.as_bytes(), &mut out, "trace-id", HexCase::Lower)?,
        16 => decode_hex(s.as_bytes(), &mut out[8..], "trace-id", HexCase::Lower)?,
        len => {
            return Err(ParseError::Length {
                field: "trace-id",
                len,
            })
        }
    }
    let id = TraceId(out);
    if !id.is_valid() {
        return Err(ParseError::Zero("trace-id"));
    }
    Ok(id)
}

fn span_id(s: &str, field: &'static str) -> Result<SpanId, ParseError> {
    let mut out = [0u8; 8];
    decode_hex(s.as_bytes(), &mut out, field, HexCase::Lower)?;
    let id = SpanId(out);
    if !id.is_valid() {
        return Err(ParseError::Zero(field));
    }
    Ok(id)
}

fn sampling(s: &str) -> Result<Sampling, ParseError> {
    match s {
        "0" => Ok(Sampling::Deny),
        "1" => Ok(Sampling::Accept),
        "d" => Ok(Sampling::Debug),
        other => Err(ParseError::Sampling(other.to_string())),
    }
}

/// Parse a single-header `b3` value.
pub fn parse_single(value: &str) -> Result<B3Context, ParseError> {
    let v = trim_ows(value);
    let parts: Vec<&str> = v.split('-').collect();
    match parts.as_slice() {
        [s] => Ok(B3Context {
            ids: None,
            sampling: Some(sampling(s)?),
        }),
        [t, s, rest @ ..] if rest.len() <= 2 => {
            let ids = (trace_id(t)?, span_id(s, "span-id")?);
            let sampling = match rest.first() {
                Some(x) => Some(sampling(x)?),
                None => None,
            };
            if let Some(p) = rest.get(1) {
                span_id(p, "parent-span-id")?;
            }
            Ok(B3Context {
                ids: Some(ids),
                sampling,
            })
        }
        other => Err(ParseError::Fields(other.len())),
    }
}

/// Parse the multi-header encoding.
pub fn parse_multi(ex: &dyn Extractor) -> Result<B3Context, ParseError> {
    let get = |k: &str| ex.get(k).map(trim_ows);
    let debug = get(X_B3_FLAGS) == Some("1");
    let sampled = match get(X_B3_SAMPLED) {
        None => None,
        Some("1") | Some("true") => Some(Sampling::Accept),
        Some("0") | Some("false") => Some(Sampling::Deny),
        Some(other) => return Err(ParseError::Sampling(other.to_string())),
    };
    let sampling = if debug {
        Some(Sampling::Debug)
    } else {
        sampled
    };
    let ids = match (get(X_B3_TRACE_ID), get(X_B3_SPAN_ID)) {
        (Some(t), Some(s)) => {
            if let Some(p) = get(X_B3_PARENT_SPAN_ID) {
                span_id(p, "parent-span-id")?;
            }
            Some((trace_id(t)?, span_id(s, "span-id")?))
        }
        (None, None) => None,
        _ => return Err(ParseError::Fields(1)),
    };
    if ids.is_none() && sampling.is_none() {
        return Err(ParseError::Fields(0));
    }
    Ok(B3Context { ids, sampling })
}

impl B3Propagator {
    /// Single-header injection (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Choose the injection encoding.
    pub fn with_encoding(encoding: B3Encoding) -> Self {
        B3Propagator { encoding }
    }

    fn extract_b3(&self, ex: &dyn Extractor) -> Option<B3Context> {
        if let Some(v) = ex.get(B3) {
            if let Ok(c) = parse_single(v) {
                return Some(c);
            }
        }
        parse_multi(ex).ok()
    }
}

fn sampling_char(cx: &Context, sc: &SpanContext) -> &'static str {
    match cx.sampling {
        Some(Sampling::Debug) => "d",
        _ if sc.flags.is_sampled() => "1",
        _ => "0",
    }
}

impl Propagator for B3Propagator {
    fn inject(&self, cx: &Context, injector: &mut dyn Injector) {
        let single = matches!(
            self.encoding,
            B3Encoding::Single | B3Encoding::SingleAndMulti
        );
        let multi = matches!(
            self.encoding,
            B3Encoding::Multi | B3Encoding::SingleAndMulti
        );
        match cx.span.as_ref().filter(|sc| sc.is_valid()) {
            Some(sc) => {
                let s = sampling_char(cx, sc);
                if single {
                    injector.set(B3, format!("{}-{}-{}", sc.trace_id, sc.span_id, s));
                }
                if multi {
                    injector.set(X_B3_TRACE_ID, sc.trace_id.to_string());
                    injector.set(X_B3_SPAN_ID, sc.span_id.to_string());
                    if s == "d" {
                        injector.set(X_B3_FLAGS, "1".into());
                    } else {
                        injector.set(X_B3_SAMPLED, s.into());
                    }
                }
            }
            None => {
                let s = match cx.sampling {
                    Some(Sampling::Deny) => "0",
                    Some(Sampling::Accept) => "1",
                    Some(Sampling::Debug) => "d",
                    None => return,
                };
                if single {
                    injector.set(B3, s.into());
                }
                if multi {
                    if s == "d" {
                        injector.set(X_B3_FLAGS, "1".into());
                    } else {
                        injector.set(X_B3_SAMPLED, s.into());
                    }
                }
            }
        }
    }

    fn extract(&self, extractor: &dyn Extractor, mut cx: Context) -> Context {
        let Some(b3) = self.extract_b3(extractor) else {
            return cx;
        };
        cx.sampling = b3.sampling;
        if let Some((trace_id, span_id)) = b3.ids {
            let sampled = matches!(b3.sampling, Some(Sampling::Accept | Sampling::Debug));
            let mut sc = SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::default().with_sampled(sampled),
            );
            sc.is_remote = true;
            cx.span = Some(sc);
        }
        cx
    }

    fn fields(&self) -> Vec<String> {
        [
            B3,
            X_B3_TRACE_ID,
            X_B3_SPAN_ID,
            X_B3_PARENT_SPAN_ID,
            X_B3_SAMPLED,
            X_B3_FLAGS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::HeaderList;

    const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T64: &str = "64fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    fn ex(h: HeaderList) -> Context {
        B3Propagator::new().extract_new(&h)
    }

    #[test]
    fn single_header_128_bit_with_parent() {
        let cx = ex(HeaderList::new().with("b3", format!("{T128}-{S}-1-{P}")));
        let sc = cx.span.expect("valid");
        assert_eq!(sc.trace_id.to_string(), T128);
        assert_eq!(sc.span_id.to_string(), S);
        assert!(sc.flags.is_sampled());
        assert_eq!(cx.sampling, Some(Sampling::Accept));
    }

    #[test]
    fn single_header_64_bit_is_left_padded() {
        let sc = ex(HeaderList::new().with("b3", format!("{T64}-{S}")))
            .span
            .expect("valid");
        assert_eq!(sc.trace_id.to_string(), format!("{}{T64}", "0".repeat(16)));
        assert!(!sc.flags.is_sampled());
    }

    #[test]
    fn debug_implies_sampled() {
        let cx = ex(HeaderList::new().with("b3", format!("{T128}-{S}-d")));
        assert!(cx.span.expect("valid").flags.is_sampled());
        assert_eq!(cx.sampling, Some(Sampling::Debug));
        let cx = ex(HeaderList::new()
            .with("X-B3-TraceId", T128)
            .with("X-B3-SpanId", S)
            .with("X-B3-Flags", "1"));
        assert!(cx.span.expect("valid").flags.is_sampled());
        assert_eq!(cx.sampling, Some(Sampling::Debug));
    }

    #[test]
    fn b3_zero_is_a_deny_decision() {
        let cx = ex(HeaderList::new().with("b3", "0"));
        assert!(cx.span.is_none());
        assert_eq!(cx.sampling, Some(Sampling::Deny));
        let mut out = HeaderList::new();
        B3Propagator::new().inject(&cx, &mut out);
        assert_eq!(out.get("b3"), Some("0"));
        let cx = ex(HeaderList::new().with("X-B3-Sampled", "0"));
        assert_eq!(cx.sampling, Some(Sampling::Deny));
    }

    #[test]
    fn multi_header() {
        let cx = ex(HeaderList::new()
            .with("X-B3-TraceId", T64)
            .with("X-B3-SpanId", S)
            .with("X-B3-ParentSpanId", P)
            .with("X-B3-Sampled", "1"));
        let sc = cx.span.expect("valid");
        assert_eq!(
            sc.trace_id.to_u128(),
            u128::from_str_radix(T64, 16).expect("hex")
        );
        assert!(sc.flags.is_sampled());
    }

    #[test]
    fn single_wins_over_multi() {
        let cx = ex(HeaderList::new()
            .with("b3", format!("{T128}-{S}-0"))
            .with("X-B3-TraceId", T64)
            .with("X-B3-SpanId", P)
            .with("X-B3-Sampled", "1"));
        let sc = cx.span.expect("valid");
        assert_eq!(sc.trace_id.to_string(), T128);
        assert!(!sc.flags.is_sampled());
    }

    #[test]
    fn invalid_single_falls_back_to_multi() {
        let cx = ex(HeaderList::new()
            .with("b3", "garbage")
            .with("X-B3-TraceId", T64)
            .with("X-B3-SpanId", P));
        assert_eq!(cx.span.expect("valid").span_id.to_string(), P);
    }

    #[test]
    fn inject_single_by_default_without_parent() {
        let cx = ex(HeaderList::new().with("b3", format!("{T128}-{S}-1-{P}")));
        let child = Context::new().with_span(cx.span.expect("valid").child());
        let mut out = HeaderList::new();
        B3Propagator::new().inject(&child, &mut out);
        assert_eq!(out.0.len(), 1);
        let v = out.get("b3").expect("single header");
        assert!(v.starts_with(T128) && v.ends_with("-1"));
        assert_eq!(v.split('-').count(), 3, "no parent span id");
    }

    #[test]
    fn inject_multi_without_parent_and_debug_as_flags() {
        let mut cx = ex(HeaderList::new().with("b3", format!("{T128}-{S}-d")));
        cx.span = cx.span.map(|s| s.child());
        let mut out = HeaderList::new();
        B3Propagator::with_encoding(B3Encoding::Multi).inject(&cx, &mut out);
        assert_eq!(out.get("x-b3-traceid"), Some(T128));
        assert_eq!(out.get("x-b3-flags"), Some("1"));
        assert!(out.get("x-b3-sampled").is_none());
        assert!(out.get("x-b3-parentspanid").is_none());
        assert!(out.get("b3").is_none());
    }

    #[test]
    fn invalid_values_are_rejected() {
        for v in [
            format!("{}-{S}-1", "0".repeat(32)),
            format!("{T128}-{}-1", "0".repeat(16)),
            format!("{}-{S}-1", T128.to_uppercase()),
            format!("{T128}-{S}-x"),
            format!("{T128}-{S}-1-zz"),
            format!("{T128}-{S}-1-{P}-extra"),
            format!("{}-{S}", &T128[..20]),
            "".to_string(),
            "2".to_string(),
            "-".to_string(),
        ] {
            assert!(parse_single(&v).is_err(), "{v:?}");
        }
        assert!(ex(HeaderList::new().with("X-B3-TraceId", T128))
            .span
            .is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let good = format!("{T128}-{S}-1-{P}");
        for i in 0..=good.len() {
            let _ = parse_single(&good[..i]);
        }
        for s in ["é-é", "---", "d-d-d-d-d", "\u{fffd}"] {
            let _ = parse_single(s);
        }
    }
}
