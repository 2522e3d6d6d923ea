//! Reading and writing context headers on both sides of the proxy. All parsing is
//! `clew-propagation`'s; this module only decides which format wins, what a malformed header
//! means (a new trace, and the broken header never leaves), and which headers are forwarded.

use clew_propagation::b3::{self, B3Context};
use clew_propagation::baggage::BAGGAGE;
use clew_propagation::jaeger::{parse_uber_trace_id, UBERCTX_PREFIX, UBER_TRACE_ID};
use clew_propagation::policy::{BaggagePolicy, DestinationRule, HostPattern, Pseudonymizer};
use clew_propagation::{
    B3Encoding, B3Propagator, Baggage, BaggagePropagator, Context, JaegerPropagator, Propagator,
    Sampling, SpanContext, SpanId, TraceContextPropagator, TraceFlags, TraceId,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::{
    DestinationConfig, EgressConfig, Format, ForwardConfig, ForwardFormat, UntrustedAction,
};

/// Longest request id accepted as a context source (longer: ignored as malformed).
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// Every header any supported format reads or writes (lowercase). Stripped before injecting, so
/// a malformed or stale header never reaches the next hop next to the fresh one.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

const TRACE_FIELDS: &[&str] = &[
    "traceparent",
    "tracestate",
    b3::B3,
    b3::X_B3_TRACE_ID,
    b3::X_B3_SPAN_ID,
    b3::X_B3_PARENT_SPAN_ID,
    b3::X_B3_SAMPLED,
    b3::X_B3_FLAGS,
    UBER_TRACE_ID,
];

/// Which context headers a request carries, found in one pass over its header names. Most
/// requests carry none or one, so everything below looks a format up only when its header is
/// there: a lookup by name hashes the name (and a `&str` name is parsed first) for every format
/// on every request otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(u16);

impl Seen {
    const TRACEPARENT: u16 = 1;
    const TRACESTATE: u16 = 1 << 1;
    const B3: u16 = 1 << 2;
    /// Any `x-b3-*` header.
    const B3_MULTI: u16 = 1 << 3;
    const UBER_TRACE_ID: u16 = 1 << 4;
    const BAGGAGE: u16 = 1 << 5;
    /// Any `uberctx-*` header.
    const UBERCTX: u16 = 1 << 6;

    /// One pass over the names (header names are lowercase in `http`).
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        for k in headers.keys() {
            let n = k.as_str();
            bits |= match n {
                "traceparent" => Self::TRACEPARENT,
                "tracestate" => Self::TRACESTATE,
                b3::B3 => Self::B3,
                UBER_TRACE_ID => Self::UBER_TRACE_ID,
                BAGGAGE => Self::BAGGAGE,
                _ if n.starts_with("x-b3-") => Self::B3_MULTI,
                _ if n.starts_with(UBERCTX_PREFIX) => Self::UBERCTX,
                _ => 0,
            };
        }
        Self(bits)
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// No context header of any format, baggage included.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Lowercase hex of `bytes` into `out` (`out.len() == 2 * bytes.len()`): the ids' `Display`
/// goes through `core::fmt` once per byte, which cost ~5,000 instructions per trace id on every
/// request (callgrind); this is a table lookup per nibble.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// The trace id as 32 lowercase hex digits (what `TraceId`'s `Display` writes).
pub fn trace_id_hex(id: &TraceId) -> String {
    let mut buf = [0u8; 32];
    hex_into(&id.0, &mut buf);
    // Only ASCII hex digits were written.
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `traceparent` value for `sc` (version `00`, unknown flags zeroed), as
/// `clew-propagation`'s `Traceparent` writes it; a unit test checks both agree.
fn traceparent_value(sc: &SpanContext) -> HeaderValue {
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    hex_into(&sc.trace_id.0, &mut buf[3..35]);
    buf[35] = b'-';
    hex_into(&sc.span_id.0, &mut buf[36..52]);
    buf[52] = b'-';
    hex_into(&[sc.flags.bits() & TraceFlags::KNOWN], &mut buf[53..55]);
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&buf))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the incoming headers carried.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The remote parent (valid ids), from the first format in precedence order that had one.
    pub parent: Option<SpanContext>,
    /// A trace id derived from a request id (no parent span), when no format gave a parent.
    pub request_id_trace: Option<TraceId>,
    /// A sampling decision without ids (`b3: 0`, `X-B3-Sampled: 1`) or with them.
    pub sampling: Option<Sampling>,
    pub baggage: Baggage,
    /// The format the parent (or derived trace id) came from.
    pub format: Option<Format>,
    /// Formats present and valid, in precedence order (for `forward.format: keep`).
    pub present: Vec<Format>,
    /// Formats present but malformed.
    pub malformed: Vec<Format>,
    /// The request id as received (first configured header present, valid or not).
    pub request_id: Option<String>,
}

fn b3_span(c: &B3Context) -> Option<SpanContext> {
    let (trace_id, span_id) = c.ids?;
    let sampled = matches!(c.sampling, Some(Sampling::Accept | Sampling::Debug));
    let mut sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::default().with_sampled(sampled),
    );
    sc.is_remote = true;
    Some(sc)
}

/// A request id as a trace id: 32 hex digits or a UUID are used as they are (a client that
/// puts its trace id there keeps it); anything else is hashed, so every hop that sees the same
/// request id lands in the same trace.
pub fn trace_id_from_request_id(v: &str) -> Option<TraceId> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_REQUEST_ID_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let compact: String = if v.len() == 36 && v.matches('-').count() == 4 {
        v.chars().filter(|c| *c != '-').collect()
    } else {
        v.to_string()
    };
    if compact.len() == 32 && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(id) = TraceId::from_hex_lower(&compact.to_ascii_lowercase()) {
            if id.is_valid() {
                return Some(id);
            }
        }
    }
    let digest = Sha256::digest(v.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let id = TraceId(id);
    id.is_valid().then_some(id)
}

/// One format's reading: absent, malformed, or parsed (ids and/or a sampling decision).
enum Read {
    Absent,
    Malformed,
    Parsed(Option<SpanContext>, Option<Sampling>),
}

fn read(headers: &HeaderMap, seen: Seen, f: Format, request_id: Option<&str>) -> Read {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().ok());
    match f {
        Format::Tracecontext => {
            if !seen.has(Seen::TRACEPARENT) {
                return Read::Absent;
            }
            match TraceContextPropagator::new().extract_span_context(headers) {
                Some(sc) => Read::Parsed(Some(sc), None),
                None => Read::Malformed,
            }
        }
        Format::B3 if !seen.has(Seen::B3) => Read::Absent,
        Format::B3 => match text(b3::B3) {
            None => Read::Absent,
            Some(Some(v)) => match b3::parse_single(v) {
                Ok(c) => Read::Parsed(b3_span(&c), c.sampling),
                Err(_) => Read::Malformed,
            },
            Some(None) => Read::Malformed,
        },
        Format::B3multi => {
            if !seen.has(Seen::B3_MULTI) {
                return Read::Absent;
            }
            let any = [
                b3::X_B3_TRACE_ID,
                b3::X_B3_SPAN_ID,
                b3::X_B3_SAMPLED,
                b3::X_B3_FLAGS,
            ]
            .iter()
            .any(|h| headers.contains_key(*h));
            if !any {
                return Read::Absent;
            }
            match b3::parse_multi(headers) {
                Ok(c) => Read::Parsed(b3_span(&c), c.sampling),
                Err(_) => Read::Malformed,
            }
        }
        Format::Jaeger if !seen.has(Seen::UBER_TRACE_ID) => Read::Absent,
        Format::Jaeger => match text(UBER_TRACE_ID) {
            None => Read::Absent,
            Some(Some(v)) => match parse_uber_trace_id(v) {
                Ok(u) => {
                    // Jaeger flags: 0x01 sampled, 0x02 debug (debug implies sampled).
                    let debug = u.flags & 0x02 != 0;
                    let sampled = debug || u.flags & 0x01 != 0;
                    let mut sc = SpanContext::new(
                        u.trace_id,
                        u.span_id,
                        TraceFlags::default().with_sampled(sampled),
                    );
                    sc.is_remote = true;
                    let s = match (debug, sampled) {
                        (true, _) => Sampling::Debug,
                        (false, true) => Sampling::Accept,
                        (false, false) => Sampling::Deny,
                    };
                    Read::Parsed(Some(sc), Some(s))
                }
                Err(_) => Read::Malformed,
            },
            Some(None) => Read::Malformed,
        },
        // Handled by the caller (it yields a trace id, not a span context).
        Format::RequestId => match request_id {
            None => Read::Absent,
            Some(v) if trace_id_from_request_id(v).is_some() => Read::Parsed(None, None),
            Some(_) => Read::Malformed,
        },
    }
}

/// Reads every format in `order`; the first valid one gives the parent.
pub fn extract(
    headers: &HeaderMap,
    order: &[Format],
    request_id_headers: &[HeaderName],
) -> Incoming {
    let seen = Seen::scan(headers);
    let mut out = Incoming {
        request_id: request_id_headers
            .iter()
            .find_map(|h| headers.get(h))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        ..Incoming::default()
    };
    for &f in order {
        match read(headers, seen, f, out.request_id.as_deref()) {
            Read::Absent => {}
            Read::Malformed => out.malformed.push(f),
            Read::Parsed(sc, sampling) => {
                out.present.push(f);
                let decided = out.parent.is_some() || out.request_id_trace.is_some();
                if decided {
                    continue;
                }
                if f == Format::RequestId {
                    out.request_id_trace =
                        out.request_id.as_deref().and_then(trace_id_from_request_id);
                    out.format = Some(f);
                } else if let Some(sc) = sc {
                    out.parent = Some(sc);
                    out.format = Some(f);
                    out.sampling = sampling.or(out.sampling);
                } else if out.sampling.is_none() {
                    // A sampling decision alone (`b3: 0`) is kept for the new trace.
                    out.sampling = sampling;
                }
            }
        }
    }
    // Baggage: W3C `baggage` (invalid members dropped by the parser, limits applied), plus
    // Jaeger's `uberctx-*` when Jaeger is read.
    let mut bag = if seen.has(Seen::BAGGAGE) {
        BaggagePropagator::new().extract_new(headers).baggage
    } else {
        Baggage::default()
    };
    if order.contains(&Format::Jaeger) && seen.has(Seen::UBERCTX) {
        let j = JaegerPropagator::new().extract_new(headers).baggage;
        for e in j.iter() {
            if bag.get(&e.key).is_none() {
                let _ = bag.insert(&e.key, &e.value);
            }
        }
    }
    out.baggage = bag;
    out
}

/// Consistent head sampling: the decision depends only on the trace id (the low 56 bits, the
/// W3C Level 2 random part), so every proxy with the same ratio decides the same way.
pub fn sample(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let r = trace_id.to_u128() as u64 & ((1u64 << 56) - 1);
    (r as f64) < ratio * (1u64 << 56) as f64
}

/// The context of the proxy's span for a request: a child of the parent, or a new trace.
pub fn span_for(
    parent: Option<&SpanContext>,
    derived: Option<TraceId>,
    sampling: Option<Sampling>,
    ratio: f64,
) -> SpanContext {
    if let Some(p) = parent {
        return p.child();
    }
    let trace_id = derived.unwrap_or_else(TraceId::random);
    let sampled = match sampling {
        Some(Sampling::Accept | Sampling::Debug) => true,
        Some(Sampling::Deny) => false,
        None => sample(trace_id, ratio),
    };
    // A derived trace id is not random: no Level 2 random flag for it.
    let flags = TraceFlags::new(if derived.is_some() {
        0
    } else {
        TraceFlags::RANDOM
    });
    SpanContext::new(trace_id, SpanId::random(), flags.with_sampled(sampled))
}

/// Removes every context header of every format (and, with `baggage`, baggage headers).
pub fn strip_context(headers: &mut HeaderMap, baggage: bool) {
    // One pass over the names; nothing is removed (or allocated) when no context header came,
    // the common case, instead of nine removals by name that each parse and hash the name.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            TRACE_FIELDS.contains(&n)
                || (baggage && (n == BAGGAGE || n.starts_with(UBERCTX_PREFIX)))
        })
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(k);
    }
}

fn propagator(f: Format) -> Option<Box<dyn Propagator>> {
    match f {
        Format::Tracecontext => Some(Box::new(TraceContextPropagator::new())),
        Format::B3 => Some(Box::new(B3Propagator::with_encoding(B3Encoding::Single))),
        Format::B3multi => Some(Box::new(B3Propagator::with_encoding(B3Encoding::Multi))),
        Format::Jaeger => Some(Box::new(JaegerPropagator::new())),
        Format::RequestId => None,
    }
}

/// Injects `cx` in format `f`. Static dispatch on stateless propagators: nothing is boxed or
/// built per request.
fn inject_format(f: Format, cx: &Context, headers: &mut HeaderMap) {
    match f {
        // Without `tracestate` (the common case) the header is written here without `core::fmt`;
        // with it, the propagator applies its truncation rules.
        Format::Tracecontext => match &cx.span {
            Some(sc) if sc.is_valid() && sc.trace_state.is_empty() => {
                headers.insert(TRACEPARENT, traceparent_value(sc));
            }
            _ => TraceContextPropagator::new().inject(cx, headers),
        },
        Format::B3 => B3Propagator::with_encoding(B3Encoding::Single).inject(cx, headers),
        Format::B3multi => B3Propagator::with_encoding(B3Encoding::Multi).inject(cx, headers),
        Format::Jaeger => JaegerPropagator::new().inject(cx, headers),
        Format::RequestId => {}
    }
}

/// Rewrites the request's context headers for the app behind the ingress: what came in is
/// removed, the proxy's SERVER span is injected as the parent in the chosen format(s), and the
/// request id is set from the trace id when there was none. Returns the request id the app sees.
pub fn forward_to_app(
    headers: &mut HeaderMap,
    server: &SpanContext,
    incoming: &Incoming,
    cfg: &ForwardConfig,
    request_id_headers: &[HeaderName],
) -> Option<String> {
    strip_context(headers, true);
    let cx = Context {
        span: Some(server.clone()),
        baggage: incoming.baggage.clone(),
        sampling: incoming.sampling,
    };
    // The formats to write, without building a vector of them per request: `keep` writes what
    // came (request ids aside), or W3C when nothing did; the others one format, or none.
    let mut wrote = false;
    let mut write = |f: Format| {
        inject_format(f, &cx, headers);
        wrote = true;
    };
    match cfg.format {
        ForwardFormat::Keep => {
            let mut kept = incoming
                .present
                .iter()
                .copied()
                .filter(|f| *f != Format::RequestId)
                .peekable();
            if kept.peek().is_none() {
                write(Format::Tracecontext);
            }
            kept.for_each(&mut write);
        }
        ForwardFormat::Tracecontext => write(Format::Tracecontext),
        ForwardFormat::B3 => write(Format::B3),
        ForwardFormat::B3multi => write(Format::B3multi),
        ForwardFormat::Jaeger => write(Format::Jaeger),
        ForwardFormat::None => {}
    }
    if wrote && !cx.baggage.is_empty() {
        BaggagePropagator::new().inject(&cx, headers);
    }
    match &incoming.request_id {
        Some(rid) => Some(rid.clone()),
        None if cfg.request_id => {
            let rid = trace_id_hex(&server.trace_id);
            if let (Some(h), Ok(v)) = (request_id_headers.first(), HeaderValue::from_str(&rid)) {
                headers.insert(h.clone(), v);
            }
            Some(rid)
        }
        None => None,
    }
}

/// The egress side: per-destination format and baggage policy.
pub struct EgressPolicy {
    destinations: Vec<(Vec<HostPattern>, Format)>,
    default_format: Format,
    baggage: BaggagePolicy,
    /// The injecting propagator of each format, built once (they are stateless): building
    /// the boxed composite per outgoing call cost allocations on every request.
    propagators: Vec<(Format, Box<dyn Propagator>)>,
}

/// The propagator that injects `format` on the egress side: the format's own, plus W3C
/// `baggage` for every format but Jaeger (which carries baggage in `uberctx-*`).
fn egress_propagator(format: Format) -> Option<Box<dyn Propagator>> {
    let p = propagator(format)?;
    Some(if format == Format::Jaeger {
        p
    } else {
        Box::new(clew_propagation::CompositePropagator::new(vec![
            p,
            Box::new(BaggagePropagator::new()),
        ]))
    })
}

fn rule(d: &DestinationConfig) -> DestinationRule {
    let mut r = DestinationRule::for_hosts(&d.hosts);
    for k in &d.baggage.allow {
        r = r.allow(k);
    }
    for k in &d.baggage.pseudonymize {
        r = r.pseudonymize(k);
    }
    if d.baggage.max_members.is_some() || d.baggage.max_bytes.is_some() {
        r = r.limits(
            d.baggage
                .max_members
                .unwrap_or(clew_propagation::baggage::MAX_MEMBERS),
            d.baggage
                .max_bytes
                .unwrap_or(clew_propagation::baggage::MAX_BYTES),
        );
    }
    r
}

impl EgressPolicy {
    pub fn new(cfg: &EgressConfig, hmac_key: Option<Vec<u8>>) -> Self {
        let mut baggage = BaggagePolicy::new().default_rule(rule(&cfg.default_destination));
        let mut untrusted = Vec::new();
        for d in &cfg.destinations {
            baggage = baggage.rule(rule(d));
            if !d.trusted {
                untrusted.extend(d.hosts.iter().cloned());
            }
        }
        let action = match cfg.untrusted_action {
            UntrustedAction::StripBaggage => {
                clew_propagation::policy::UntrustedAction::StripBaggage
            }
            UntrustedAction::StripAll => clew_propagation::policy::UntrustedAction::StripAll,
        };
        baggage = baggage.untrusted(untrusted, action);
        if let Some(k) = hmac_key {
            baggage = baggage.pseudonymizer(Pseudonymizer::new(k));
        }
        Self {
            destinations: cfg
                .destinations
                .iter()
                .map(|d| {
                    (
                        d.hosts.iter().map(|h| HostPattern::new(h)).collect(),
                        d.format,
                    )
                })
                .collect(),
            default_format: cfg.default_destination.format,
            baggage,
            propagators: [
                Format::Tracecontext,
                Format::B3,
                Format::B3multi,
                Format::Jaeger,
            ]
            .into_iter()
            .filter_map(|f| egress_propagator(f).map(|p| (f, p)))
            .collect(),
        }
    }

    /// The format `host` understands.
    pub fn format_for(&self, host: &str) -> Format {
        let host = clew_propagation::policy::normalize_host(host);
        self.destinations
            .iter()
            .find(|(pats, _)| pats.iter().any(|p| p.matches(&host)))
            .map(|(_, f)| *f)
            .unwrap_or(self.default_format)
    }

    /// Replaces the request's context headers with `cx` for `host`: the destination's format,
    /// its baggage rule, nothing or no baggage across a trust boundary.
    pub fn inject(&self, headers: &mut HeaderMap, cx: &Context, host: &str) -> Format {
        strip_context(headers, true);
        let format = self.format_for(host);
        let host_n = clew_propagation::policy::normalize_host(host);
        if let Some((_, p)) = self.propagators.iter().find(|(f, _)| *f == format) {
            self.baggage.inject(p.as_ref(), cx, &host_n, headers);
        }
        format
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn rid() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-correlation-id"),
        ]
    }

    const ALL: &[Format] = &[
        Format::Tracecontext,
        Format::B3,
        Format::B3multi,
        Format::Jaeger,
        Format::RequestId,
    ];

    #[test]
    fn fast_traceparent_and_request_id_match_the_propagator() {
        // The hand-written hex must write exactly what clew-propagation writes, for every flag
        // combination (unknown bits zeroed) and for ids whose bytes span the whole hex range.
        for flags in [0u8, 1, 2, 3] {
            for _ in 0..50 {
                let sc =
                    SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::new(flags));
                let cx = Context::new().with_span(sc.clone());
                let mut fast = HeaderMap::new();
                inject_format(Format::Tracecontext, &cx, &mut fast);
                let mut slow = HeaderMap::new();
                TraceContextPropagator::new().inject(&cx, &mut slow);
                assert_eq!(fast.get("traceparent"), slow.get("traceparent"));
                assert_eq!(slow.len(), 1, "no tracestate for an empty one");
                assert_eq!(trace_id_hex(&sc.trace_id), sc.trace_id.to_string());
            }
        }
        let sc = SpanContext::new(
            TraceId([0xff; 16]),
            SpanId([0x0a; 8]),
            TraceFlags::new(0xff),
        );
        assert_eq!(
            traceparent_value(&sc),
            "00-ffffffffffffffffffffffffffffffff-0a0a0a0a0a0a0a0a-03"
        );
        // With a tracestate, the propagator writes both (and truncates by its rules).
        let mut sc = SpanContext::new_root(true);
        sc.trace_state = clew_propagation::TraceState::parse("a=1,b=2").expect("valid");
        let mut h = HeaderMap::new();
        inject_format(Format::Tracecontext, &Context::new().with_span(sc), &mut h);
        assert_eq!(
            h.get("tracestate").map(|v| v.as_bytes()),
            Some(&b"a=1,b=2"[..])
        );
        assert!(h.contains_key("traceparent"));
    }

    #[test]
    fn header_scan_finds_every_context_header_and_strip_removes_only_those() {
        let mut h = hm(&[
            ("Content-Type", "text/plain"),
            ("X-B3-Sampled", "1"),
            ("uberctx-user", "x"),
            ("baggage", "k=v"),
            ("tracestate", "a=b"),
            ("x-request-id", "r1"),
        ]);
        let seen = Seen::scan(&h);
        assert!(seen.has(Seen::B3_MULTI) && seen.has(Seen::UBERCTX));
        assert!(seen.has(Seen::BAGGAGE) && seen.has(Seen::TRACESTATE));
        assert!(!seen.has(Seen::TRACEPARENT) && !seen.has(Seen::B3));
        assert!(!seen.has(Seen::UBER_TRACE_ID));
        assert!(Seen::scan(&hm(&[("content-type", "x")])).is_empty());
        let mut keep_baggage = h.clone();
        strip_context(&mut keep_baggage, false);
        let names = |m: &HeaderMap| {
            let mut v: Vec<String> = m.keys().map(|k| k.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&keep_baggage),
            ["baggage", "content-type", "uberctx-user", "x-request-id"]
        );
        strip_context(&mut h, true);
        assert_eq!(names(&h), ["content-type", "x-request-id"]);
        // Baggage alone (no ids) is still read.
        let inc = extract(&hm(&[("baggage", "k=v")]), ALL, &rid());
        assert_eq!(inc.baggage.get("k"), Some("v"));
        assert!(inc.parent.is_none() && inc.malformed.is_empty());
    }

    #[test]
    fn each_format_is_read() {
        let cases: Vec<(Vec<(&str, &str)>, Format)> = vec![
            (vec![("traceparent", TP)], Format::Tracecontext),
            (
                vec![("b3", "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1")],
                Format::B3,
            ),
            (
                vec![
                    ("X-B3-TraceId", "0af7651916cd43dd8448eb211c80319c"),
                    ("X-B3-SpanId", "b7ad6b7169203331"),
                    ("X-B3-Sampled", "1"),
                ],
                Format::B3multi,
            ),
            (
                vec![(
                    "uber-trace-id",
                    "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:1",
                )],
                Format::Jaeger,
            ),
        ];
        for (h, f) in cases {
            let inc = extract(&hm(&h), ALL, &rid());
            assert_eq!(inc.format, Some(f), "{h:?}");
            let p = inc.parent.expect("parent");
            assert_eq!(p.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(p.span_id.to_string(), "b7ad6b7169203331");
            assert!(p.flags.is_sampled());
        }
    }

    #[test]
    fn precedence_is_configurable() {
        let h = hm(&[
            ("traceparent", TP),
            (
                "uber-trace-id",
                "11111111111111111111111111111111:2222222222222222:0:1",
            ),
        ]);
        let a = extract(&h, &[Format::Tracecontext, Format::Jaeger], &rid());
        assert_eq!(a.format, Some(Format::Tracecontext));
        let b = extract(&h, &[Format::Jaeger, Format::Tracecontext], &rid());
        assert_eq!(b.format, Some(Format::Jaeger));
        assert_eq!(b.parent.unwrap().span_id.to_string(), "2222222222222222");
        // A format not listed is not read.
        let c = extract(&h, &[Format::B3], &rid());
        assert!(c.parent.is_none() && c.present.is_empty());
    }

    #[test]
    fn malformed_headers_start_a_new_trace_and_are_not_forwarded() {
        for bad in [
            (
                "traceparent",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ),
            ("traceparent", "garbage"),
            ("b3", "xyz-1"),
            ("uber-trace-id", "1:2"),
            ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
        ] {
            let mut h = hm(&[bad, ("tracestate", "a=b")]);
            let inc = extract(&h, ALL, &rid());
            assert!(inc.parent.is_none(), "{bad:?}");
            assert_eq!(inc.malformed.len(), 1, "{bad:?}");
            let sc = span_for(None, None, None, 1.0);
            forward_to_app(&mut h, &sc, &inc, &ForwardConfig::default(), &rid());
            assert!(
                h.get(bad.0).is_none_or(|v| v != bad.1),
                "{bad:?} forwarded broken"
            );
            let tp = h.get("traceparent").unwrap().to_str().unwrap();
            assert!(tp.contains(&sc.trace_id.to_string()), "{tp}");
            assert!(h.get("tracestate").is_none());
        }
    }

    #[test]
    fn request_id_gives_a_stable_trace_id() {
        let uuid = "0af76519-16cd-43dd-8448-eb211c80319c";
        assert_eq!(
            trace_id_from_request_id(uuid).unwrap().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let a = trace_id_from_request_id("req-42").unwrap();
        assert_eq!(Some(a), trace_id_from_request_id("req-42"));
        assert_ne!(Some(a), trace_id_from_request_id("req-43"));
        assert!(trace_id_from_request_id("").is_none());
        assert!(trace_id_from_request_id("a b").is_none());
        assert!(trace_id_from_request_id(&"x".repeat(MAX_REQUEST_ID_LEN + 1)).is_none());
        let inc = extract(&hm(&[("X-Correlation-ID", "req-42")]), ALL, &rid());
        assert_eq!(inc.request_id_trace, Some(a));
        assert_eq!(inc.format, Some(Format::RequestId));
        // A traceparent wins over the request id (default precedence).
        let inc = extract(
            &hm(&[("X-Request-ID", "req-42"), ("traceparent", TP)]),
            ALL,
            &rid(),
        );
        assert_eq!(inc.format, Some(Format::Tracecontext));
        assert!(inc.request_id_trace.is_none());
        assert_eq!(inc.request_id.as_deref(), Some("req-42"));
    }

    #[test]
    fn translate_and_keep() {
        let h0 = hm(&[
            ("b3", "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"),
            ("baggage", "tenant=acme"),
        ]);
        let inc = extract(&h0, ALL, &rid());
        let sc = span_for(inc.parent.as_ref(), None, inc.sampling, 1.0);
        let mut keep = h0.clone();
        let rid_v = forward_to_app(&mut keep, &sc, &inc, &ForwardConfig::default(), &rid());
        let b3v = keep.get("b3").unwrap().to_str().unwrap();
        assert_eq!(b3v, format!("{}-{}-1", sc.trace_id, sc.span_id));
        assert!(keep.get("traceparent").is_none());
        assert_eq!(keep.get("baggage").unwrap(), "tenant=acme");
        assert_eq!(
            keep.get("x-request-id").unwrap().to_str().unwrap(),
            sc.trace_id.to_string()
        );
        assert_eq!(rid_v.unwrap(), sc.trace_id.to_string());
        for (ff, header) in [
            (ForwardFormat::Tracecontext, "traceparent"),
            (ForwardFormat::Jaeger, "uber-trace-id"),
            (ForwardFormat::B3multi, "x-b3-traceid"),
        ] {
            let mut h = h0.clone();
            let cfg = ForwardConfig {
                format: ff,
                request_id: false,
            };
            assert!(forward_to_app(&mut h, &sc, &inc, &cfg, &rid()).is_none());
            assert!(h.get(header).is_some(), "{ff:?}");
            assert!(h.get("b3").is_none(), "{ff:?}");
            assert!(h.get("x-request-id").is_none());
        }
    }

    #[test]
    fn sampling_is_consistent_and_respects_the_ratio() {
        let n = 20_000;
        let kept = (0..n).filter(|_| sample(TraceId::random(), 0.25)).count();
        assert!((4000..6000).contains(&kept), "{kept}");
        let t = TraceId::random();
        assert_eq!(sample(t, 0.5), sample(t, 0.5));
        assert!(!span_for(None, None, None, 0.0).flags.is_sampled());
        assert!(span_for(None, None, Some(Sampling::Accept), 0.0)
            .flags
            .is_sampled());
    }

    #[test]
    fn egress_policy_per_destination() {
        let yaml = r#"
destinations:
  - hosts: ["payments.internal"]
    format: b3
    baggage: {allow: [tenant]}
  - hosts: ["*.partner.example"]
    trusted: false
default_destination: {format: tracecontext}
"#;
        let cfg: EgressConfig = serde_yaml::from_str(yaml).unwrap();
        let pol = EgressPolicy::new(&cfg, None);
        let mut bag = Baggage::new();
        bag.insert("tenant", "acme").unwrap();
        bag.insert("user.email", "a@b.c").unwrap();
        let cx = Context {
            span: Some(SpanContext::new_root(true)),
            baggage: bag,
            sampling: None,
        };
        let mut h = hm(&[("traceparent", TP), ("baggage", "user.email=x")]);
        assert_eq!(pol.inject(&mut h, &cx, "payments.internal"), Format::B3);
        assert!(h.get("traceparent").is_none());
        assert!(h.get("b3").is_some());
        assert_eq!(h.get("baggage").unwrap(), "tenant=acme");
        let mut h = HeaderMap::new();
        pol.inject(&mut h, &cx, "api.partner.example");
        assert!(h.get("traceparent").is_some() && h.get("baggage").is_none());
        let mut h = HeaderMap::new();
        pol.inject(&mut h, &cx, "other");
        assert!(
            h.get("traceparent").is_some() && h.get("baggage").is_none(),
            "default allows no baggage"
        );
    }
}
