//! Trace ids, span ids, trace flags and the remote span context they form.

use std::fmt;

use crate::error::ParseError;
use crate::tracestate::TraceState;

/// A 16-byte trace id. The all-zero id is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id. The all-zero id is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// The invalid all-zero id.
    pub const INVALID: TraceId = TraceId([0; 16]);

    /// A new random trace id (never all zeroes). Every byte is random, so a trace started with
    /// it may set [`TraceFlags::RANDOM`].
    pub fn random() -> Self {
        loop {
            let id = TraceId(rand::random::<u128>().to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    /// Whether the id is not all zeroes.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// From a `u128` (big-endian byte order).
    pub fn from_u128(v: u128) -> Self {
        TraceId(v.to_be_bytes())
    }

    /// As a `u128` (big-endian byte order).
    pub fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Parse exactly 32 **lowercase** hex digits (the W3C form).
    pub fn from_hex_lower(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 16];
        decode_hex(s.as_bytes(), &mut out, "trace-id", HexCase::Lower)?;
        Ok(TraceId(out))
    }
}

impl SpanId {
    /// The invalid all-zero id.
    pub const INVALID: SpanId = SpanId([0; 8]);

    /// A new random span id (never all zeroes).
    pub fn random() -> Self {
        loop {
            let id = SpanId(rand::random::<u64>().to_be_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }

    /// Whether the id is not all zeroes.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    /// From a `u64` (big-endian byte order).
    pub fn from_u64(v: u64) -> Self {
        SpanId(v.to_be_bytes())
    }

    /// As a `u64` (big-endian byte order).
    pub fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// Parse exactly 16 **lowercase** hex digits (the W3C form).
    pub fn from_hex_lower(s: &str) -> Result<Self, ParseError> {
        let mut out = [0u8; 8];
        decode_hex(s.as_bytes(), &mut out, "span-id", HexCase::Lower)?;
        Ok(SpanId(out))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Which hex digits a decoder accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexCase {
    /// `0-9a-f` only (W3C `HEXDIGLC`).
    Lower,
    /// `0-9a-fA-F` (B3 and Jaeger are lenient).
    Any,
}

pub(crate) fn hex_val(b: u8, case: HexCase) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' if case == HexCase::Any => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode exactly `2 * out.len()` hex digits into `out`.
pub(crate) fn decode_hex(
    s: &[u8],
    out: &mut [u8],
    field: &'static str,
    case: HexCase,
) -> Result<(), ParseError> {
    if s.len() != out.len() * 2 {
        return Err(ParseError::Length {
            field,
            len: s.len(),
        });
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0], case).ok_or(ParseError::NotHex(field))?;
        let lo = hex_val(pair[1], case).ok_or(ParseError::NotHex(field))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(())
}

/// Decode 1..=`2 * N` hex digits, left-padding with zeroes (B3 64-bit ids, Jaeger short ids).
pub(crate) fn decode_hex_padded<const N: usize>(
    s: &str,
    field: &'static str,
    case: HexCase,
) -> Result<[u8; N], ParseError> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > N * 2 {
        return Err(ParseError::Length {
            field,
            len: b.len(),
        });
    }
    let mut digits = [b'0'; 64];
    let start = N * 2 - b.len();
    digits[start..N * 2].copy_from_slice(b);
    let mut out = [0u8; N];
    decode_hex(&digits[..N * 2], &mut out, field, case)?;
    Ok(out)
}

/// W3C trace flags. Level 2 defines `sampled` (0x01) and `random` (0x02); every other bit is
/// unknown and is zeroed on parse and on injection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The `sampled` flag.
    pub const SAMPLED: u8 = 0x01;
    /// The Level 2 `random-trace-id` flag.
    pub const RANDOM: u8 = 0x02;
    /// The bits this implementation knows; the rest are zeroed.
    pub const KNOWN: u8 = Self::SAMPLED | Self::RANDOM;

    /// Flags from a raw byte, **unknown bits zeroed**.
    pub fn new(raw: u8) -> Self {
        TraceFlags(raw & Self::KNOWN)
    }
    /// The flag byte.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Whether the caller may have recorded trace data.
    pub fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }
    /// Whether at least the right-most 7 bytes of the trace id are random.
    pub fn is_random(self) -> bool {
        self.0 & Self::RANDOM != 0
    }
    /// With the sampled flag set or cleared; the random flag is kept.
    pub fn with_sampled(self, sampled: bool) -> Self {
        if sampled {
            TraceFlags(self.0 | Self::SAMPLED)
        } else {
            TraceFlags(self.0 & !Self::SAMPLED)
        }
    }
    /// With the random flag set or cleared.
    pub fn with_random(self, random: bool) -> Self {
        if random {
            TraceFlags(self.0 | Self::RANDOM)
        } else {
            TraceFlags(self.0 & !Self::RANDOM)
        }
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

/// The context of a span: what crosses process boundaries.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SpanContext {
    /// The trace id.
    pub trace_id: TraceId,
    /// The span id (the `parent-id` of the next hop).
    pub span_id: SpanId,
    /// Trace flags (only known bits).
    pub flags: TraceFlags,
    /// Vendor state (`tracestate`).
    pub trace_state: TraceState,
    /// Whether this context was extracted from a carrier.
    pub is_remote: bool,
}

impl SpanContext {
    /// A local span context.
    pub fn new(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Self {
        SpanContext {
            trace_id,
            span_id,
            flags,
            trace_state: TraceState::default(),
            is_remote: false,
        }
    }

    /// Both ids valid.
    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }

    /// Start a new trace: random trace id (so the random flag is set), random span id.
    pub fn new_root(sampled: bool) -> Self {
        SpanContext::new(
            TraceId::random(),
            SpanId::random(),
            TraceFlags::new(TraceFlags::RANDOM).with_sampled(sampled),
        )
    }

    /// Continue this trace in a new child span: same trace id, new span id, flags (including
    /// the Level 2 random flag) and tracestate carried over unchanged.
    pub fn child(&self) -> Self {
        SpanContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            flags: self.flags,
            trace_state: self.trace_state.clone(),
            is_remote: false,
        }
    }
}
