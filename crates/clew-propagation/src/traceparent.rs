//! The W3C `traceparent` header, Trace Context Level 2.
//!
//! ```text
//! version-00 = "00" "-" 32HEXDIGLC "-" 16HEXDIGLC "-" 2HEXDIGLC      ; exactly 55 chars
//! ```
//!
//! * hex must be lowercase; trace-id and parent-id must not be all zeroes; version `ff` is invalid;
//! * a **higher version** is parsed by the forward-compatibility rules: at least 55 chars, the
//!   version-00 fields at their positions, and the flags followed by `-` or the end; anything after
//!   is ignored and the header is re-emitted as version `00`;
//! * flags: the Level 2 `random` bit (0x02) and `sampled` (0x01) are kept, every other bit zeroed;
//! * optional whitespace (SP / HTAB) around the value is ignored.

use std::fmt;

use crate::error::TraceparentError;
use crate::ids::{SpanId, TraceFlags, TraceId};

/// The field name.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traceparent {
    /// The version received (re-emitted as `00`).
    pub version: u8,
    /// trace-id.
    pub trace_id: TraceId,
    /// parent-id.
    pub parent_id: SpanId,
    /// Flags, unknown bits zeroed.
    pub flags: TraceFlags,
}

/// Strip leading and trailing optional whitespace (SP / HTAB).
pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\t')
}

fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_field<const N: usize>(b: &[u8], field: &'static str) -> Result<[u8; N], TraceparentError> {
    let mut out = [0u8; N];
    if b.len() != N * 2 {
        return Err(TraceparentError::Malformed(field));
    }
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = lower_hex(pair[0]).ok_or(TraceparentError::Malformed(field))?;
        let lo = lower_hex(pair[1]).ok_or(TraceparentError::Malformed(field))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

impl Traceparent {
    /// Parse one header value.
    pub fn parse(value: &str) -> Result<Self, TraceparentError> {
        let s = trim_ows(value).as_bytes();
        // version: 2 lowercase hex digits followed by '-'; otherwise restart the trace.
        if s.len() < 3 || s[2] != b'-' {
            return Err(TraceparentError::InvalidVersion);
        }
        let version =
            hex_field::<1>(&s[..2], "version").map_err(|_| TraceparentError::InvalidVersion)?[0];
        if version == 0xff {
            return Err(TraceparentError::ForbiddenVersion);
        }
        if s.len() < 55 {
            return Err(TraceparentError::TooShort(s.len()));
        }
        if version == 0 && s.len() != 55 {
            return Err(TraceparentError::WrongLength(s.len()));
        }
        if s[35] != b'-' {
            return Err(TraceparentError::Malformed("trace-id"));
        }
        if s[52] != b'-' {
            return Err(TraceparentError::Malformed("parent-id"));
        }
        if s.len() > 55 && s[55] != b'-' {
            return Err(TraceparentError::BadFutureSuffix);
        }
        let trace_id = TraceId(hex_field::<16>(&s[3..35], "trace-id")?);
        let parent_id = SpanId(hex_field::<8>(&s[36..52], "parent-id")?);
        let flags = hex_field::<1>(&s[53..55], "trace-flags")?[0];
        if !trace_id.is_valid() {
            return Err(TraceparentError::ZeroTraceId);
        }
        if !parent_id.is_valid() {
            return Err(TraceparentError::ZeroParentId);
        }
        Ok(Traceparent {
            version,
            trace_id,
            parent_id,
            flags: TraceFlags::new(flags),
        })
    }

    /// Parse every received `traceparent` field: exactly one is allowed.
    pub fn parse_fields(values: &[&str]) -> Result<Self, TraceparentError> {
        match values {
            [one] => Self::parse(one),
            many => Err(TraceparentError::Multiple(many.len())),
        }
    }

    /// The header value, always version `00`, unknown flags zeroed.
    pub fn to_header(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags.bits() & TraceFlags::KNOWN
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "12345678901234567890123456789012";
    const PID: &str = "1234567890123456";

    fn ok(s: &str) -> Traceparent {
        match Traceparent::parse(s) {
            Ok(tp) => tp,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }
    fn bad(s: &str) -> TraceparentError {
        match Traceparent::parse(s) {
            Ok(tp) => panic!("{s:?} should be rejected, got {tp:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn valid_version_00_round_trips() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = ok(s);
        assert!(tp.flags.is_sampled());
        assert_eq!(tp.to_header(), s);
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        bad("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01");
        bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01");
        bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A");
        assert_eq!(
            bad(&format!("0A-{TID}-{PID}-01")),
            TraceparentError::InvalidVersion
        );
    }

    #[test]
    fn all_zero_trace_id_is_invalid() {
        assert_eq!(
            bad(&format!("00-{}-{PID}-01", "0".repeat(32))),
            TraceparentError::ZeroTraceId
        );
    }

    #[test]
    fn all_zero_parent_id_is_invalid() {
        assert_eq!(
            bad(&format!("00-{TID}-{}-01", "0".repeat(16))),
            TraceparentError::ZeroParentId
        );
    }

    #[test]
    fn version_ff_is_invalid() {
        assert_eq!(
            bad(&format!("ff-{TID}-{PID}-01")),
            TraceparentError::ForbiddenVersion
        );
    }

    #[test]
    fn version_illegal_characters_or_lengths_are_invalid() {
        for v in [".0", "0.", "000", "0000", "0", "g0", " 0"] {
            bad(&format!("{v}-{TID}-{PID}-01"));
        }
    }

    #[test]
    fn version_00_with_trailing_data_is_invalid() {
        assert_eq!(
            bad(&format!("00-{TID}-{PID}-01.")),
            TraceparentError::WrongLength(56)
        );
        bad(&format!("00-{TID}-{PID}-01-what-the-future-will-be-like"));
    }

    #[test]
    fn future_version_is_parsed_and_reemitted_as_00() {
        let tp = ok(&format!("cc-{TID}-{PID}-01"));
        assert_eq!(tp.version, 0xcc);
        assert_eq!(tp.to_header(), format!("00-{TID}-{PID}-01"));
        let tp = ok(&format!("cc-{TID}-{PID}-01-what-the-future-will-be-like"));
        assert_eq!(tp.trace_id.to_string(), TID);
        assert_eq!(tp.to_header(), format!("00-{TID}-{PID}-01"));
    }

    #[test]
    fn future_version_with_bad_suffix_is_invalid() {
        assert_eq!(
            bad(&format!("cc-{TID}-{PID}-01.what-the-future-will-be-like")),
            TraceparentError::BadFutureSuffix
        );
        // shorter than 55 characters
        bad(&format!("cc-{TID}-{PID}-1"));
        // fields must still be valid
        bad(&format!("cc-{}-{PID}-01-x", "0".repeat(32)));
        bad(&format!("cc-{TID}-{PID}-0g-x"));
    }

    #[test]
    fn field_illegal_characters_and_lengths_are_invalid() {
        for s in [
            format!("00-.2345678901234567890123456789012-{PID}-01"),
            format!("00-1234567890123456789012345678901.-{PID}-01"),
            format!("00-123456789012345678901234567890123-{PID}-01"),
            format!("00-1234567890123456789012345678901-{PID}-01"),
            format!("00-{TID}-.234567890123456-01"),
            format!("00-{TID}-123456789012345.-01"),
            format!("00-{TID}-12345678901234567-01"),
            format!("00-{TID}-123456789012345-01"),
            format!("00-{TID}-{PID}-.0"),
            format!("00-{TID}-{PID}-0."),
            format!("00-{TID}-{PID}-001"),
            format!("00-{TID}-{PID}-1"),
            format!("00_{TID}_{PID}_01"),
        ] {
            bad(&s);
        }
    }

    #[test]
    fn random_flag_is_preserved_and_unknown_bits_zeroed() {
        let tp = ok(&format!("00-{TID}-{PID}-03"));
        assert!(tp.flags.is_sampled() && tp.flags.is_random());
        assert_eq!(tp.to_header(), format!("00-{TID}-{PID}-03"));
        let tp = ok(&format!("00-{TID}-{PID}-ff"));
        assert_eq!(tp.flags.bits(), 0x03);
        assert_eq!(tp.to_header(), format!("00-{TID}-{PID}-03"));
        let tp = ok(&format!("00-{TID}-{PID}-06"));
        assert_eq!(tp.to_header(), format!("00-{TID}-{PID}-02"));
        let tp = ok(&format!("cc-{TID}-{PID}-fe-xyz"));
        assert_eq!(tp.flags.bits(), 0x02);
    }

    #[test]
    fn surrounding_ows_is_accepted() {
        for s in [
            format!(" 00-{TID}-{PID}-01"),
            format!("\t00-{TID}-{PID}-01"),
            format!("00-{TID}-{PID}-01 "),
            format!("00-{TID}-{PID}-01\t"),
            format!("\t 00-{TID}-{PID}-01 \t"),
        ] {
            assert_eq!(ok(&s).trace_id.to_string(), TID);
        }
    }

    #[test]
    fn multiple_traceparent_fields_are_invalid() {
        let a = format!("00-{TID}-{PID}-01");
        assert_eq!(
            Traceparent::parse_fields(&[&a, &a]),
            Err(TraceparentError::Multiple(2))
        );
        assert_eq!(
            Traceparent::parse_fields(&[]),
            Err(TraceparentError::Multiple(0))
        );
        assert!(Traceparent::parse_fields(&[&a]).is_ok());
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let good = format!("cc-{TID}-{PID}-01-abc");
        for i in 0..=good.len() {
            let _ = Traceparent::parse(&good[..i]);
        }
        for s in [
            "",
            "-",
            "--",
            "\u{fffd}",
            "00-é2345678901234567890123456789012-1234567890123456-01",
            "ü0-12345678901234567890123456789012-1234567890123456-01",
            "00-12345678901234567890123456789012-1234567890123456-0é",
        ] {
            assert!(Traceparent::parse(s).is_err(), "{s:?}");
        }
        // pseudo-random bytes
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 80) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(b"0123456789abcdef-ABCDEF \t.\xc3\xa9"[(x % 27) as usize]);
            }
            let s = String::from_utf8_lossy(&buf);
            let _ = Traceparent::parse(&s);
        }
    }
}
