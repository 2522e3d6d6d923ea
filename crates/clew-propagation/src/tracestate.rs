//! The W3C `tracestate` header, Trace Context Level 2.
//!
//! ```text
//! list             = list-member 0*31( OWS "," OWS list-member )
//! list-member      = (key "=" value) / OWS
//! key              = simple-key / multi-tenant-key
//! simple-key       = lcalpha 0*255( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//! multi-tenant-key = tenant-id "@" system-id
//! tenant-id        = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//! system-id        = lcalpha 0*13( lcalpha / DIGIT / "_" / "-" / "*" / "/" )
//! value            = 0*255(chr) nblk-chr
//! nblk-chr         = %x21-2B / %x2D-3C / %x3E-7E
//! chr              = %x20 / nblk-chr
//! ```
//!
//! Rules implemented: OWS around members and empty members are accepted (and not counted);
//! several header fields are combined in order; more than 32 members, a duplicated key or any
//! invalid member makes the whole header invalid (it is then dropped, which is what the
//! official test suite's strictest level expects); a modified or added key moves to the left;
//! truncation removes whole members, those over 128 characters first, then from the right.

use std::fmt;

use crate::error::TraceStateError;
use crate::traceparent::trim_ows;

/// The field name.
pub const TRACESTATE: &str = "tracestate";
/// At most this many list members.
pub const MAX_MEMBERS: usize = 32;
/// The spec asks to propagate at least this many characters; the default truncation limit.
pub const DEFAULT_MAX_LEN: usize = 512;
/// Members longer than this are removed first when truncating.
pub const LONG_MEMBER: usize = 128;

/// An ordered `tracestate` list (left-most = most recently modified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

fn is_keychar(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `lead` + up to `max - 1` keychars.
fn key_part(s: &[u8], max: usize, digit_first: bool) -> bool {
    match s.split_first() {
        Some((&first, rest)) => {
            (first.is_ascii_lowercase() || (digit_first && first.is_ascii_digit()))
                && s.len() <= max
                && rest.iter().all(|&b| is_keychar(b))
        }
        None => false,
    }
}

/// Whether `key` matches the Level 2 key grammar.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match b.iter().position(|&c| c == b'@') {
        None => key_part(b, 256, false),
        Some(at) => key_part(&b[..at], 241, true) && key_part(&b[at + 1..], 14, false),
    }
}

fn is_nblk(b: u8) -> bool {
    matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e)
}

/// Whether `value` matches the value grammar (1..=256 chars, last one not a space).
pub fn is_valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    match b.split_last() {
        Some((&last, rest)) => {
            b.len() <= 256 && is_nblk(last) && rest.iter().all(|&c| c == b' ' || is_nblk(c))
        }
        None => false,
    }
}

impl TraceState {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one (combined) header value.
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for raw in value.split(',') {
            let m = trim_ows(raw);
            if m.is_empty() {
                continue;
            }
            let (k, v) = m.split_once('=').ok_or(TraceStateError::MissingEquals)?;
            if !is_valid_key(k) {
                return Err(TraceStateError::InvalidKey(k.to_string()));
            }
            if !is_valid_value(v) {
                return Err(TraceStateError::InvalidValue(k.to_string()));
            }
            if members.iter().any(|(ek, _)| ek == k) {
                return Err(TraceStateError::DuplicateKey(k.to_string()));
            }
            members.push((k.to_string(), v.to_string()));
            if members.len() > MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers(members.len()));
            }
        }
        Ok(TraceState { members })
    }

    /// Combine several received header fields (RFC 7230 field order) and parse them.
    pub fn parse_fields(values: &[&str]) -> Result<Self, TraceStateError> {
        Self::parse(&values.join(","))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Members, left to right.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Add or update `key`: the member moves to the left (the spec's mutation rule). If the list
    /// would exceed 32 members the right-most member is dropped.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !is_valid_key(key) {
            return Err(TraceStateError::InvalidKey(key.to_string()));
        }
        if !is_valid_value(value) {
            return Err(TraceStateError::InvalidValue(key.to_string()));
        }
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.members.truncate(MAX_MEMBERS);
        Ok(())
    }

    /// Delete `key`.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(i).1)
    }

    /// The header value (no OWS).
    pub fn header_value(&self) -> String {
        self.to_string()
    }

    /// The header value truncated to at most `max_len` characters by removing whole members:
    /// members longer than 128 characters first (right-most first), then from the right.
    pub fn header_value_truncated(&self, max_len: usize) -> String {
        let mut keep: Vec<&(String, String)> = self.members.iter().collect();
        let size = |m: &[&(String, String)]| -> usize {
            m.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>() + m.len().saturating_sub(1)
        };
        while size(&keep) > max_len {
            if let Some(i) = keep
                .iter()
                .rposition(|(k, v)| k.len() + 1 + v.len() > LONG_MEMBER)
            {
                keep.remove(i);
            } else {
                keep.pop();
            }
        }
        keep.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> TraceState {
        match TraceState::parse(s) {
            Ok(t) => t,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn simple_and_multi_tenant_keys() {
        let t = ok("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,1tenant@vendor=x");
        assert_eq!(t.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(t.get("1tenant@vendor"), Some("x"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn all_allowed_characters() {
        let key: String = ('a'..='z').chain('0'..='9').chain("_-*/".chars()).collect();
        let value: String = (0x20u8..=0x2b)
            .chain(0x2d..=0x3c)
            .chain(0x3e..=0x7e)
            .map(char::from)
            .collect();
        let t = ok(&format!("{key}={value}"));
        assert_eq!(t.get(&key), Some(value.as_str()));
        let vkey = format!("{key}@a-z0-9_-*/");
        let t = ok(&format!("{vkey}={value}"));
        assert_eq!(t.get(&vkey), Some(value.as_str()));
    }

    #[test]
    fn key_grammar_rejects_illegal_keys() {
        for k in [
            "foo ",
            "FOO",
            "foo.bar",
            "1abc",
            "_x",
            "",
            "foo@",
            "@foo",
            "foo@@bar",
            "foo@bar@baz",
            "foo@1bar",
            "foo@Bar",
            "é",
        ] {
            assert!(!is_valid_key(k), "{k:?}");
            assert!(TraceState::parse(&format!("{k}=1")).is_err(), "{k:?}");
        }
    }

    #[test]
    fn key_length_limits() {
        assert!(is_valid_key(&"z".repeat(256)));
        assert!(!is_valid_key(&"z".repeat(257)));
        assert!(is_valid_key(&format!(
            "{}@{}",
            "t".repeat(241),
            "v".repeat(14)
        )));
        assert!(!is_valid_key(&format!("{}@v", "t".repeat(242))));
        assert!(!is_valid_key(&format!("t@{}", "v".repeat(15))));
    }

    #[test]
    fn value_grammar() {
        assert!(is_valid_value(" leading-space-kept"));
        assert!(is_valid_value(&"v".repeat(256)));
        assert!(!is_valid_value(&"v".repeat(257)));
        for v in ["", "bar=baz", "a,b", "x\ty", "é", "trailing "] {
            assert!(!is_valid_value(v), "{v:?}");
        }
        assert!(TraceState::parse("foo=bar=baz").is_err());
        assert!(TraceState::parse("foo=,bar=3").is_err());
        assert_eq!(ok("foo= 1").get("foo"), Some(" 1"));
    }

    #[test]
    fn ows_and_empty_members_are_accepted() {
        for s in [
            "foo=1 \t , \t bar=2, \t baz=3",
            "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
            ",foo=1,,bar=2, ,baz=3,",
        ] {
            let t = ok(s);
            assert_eq!(
                t.iter().collect::<Vec<_>>(),
                vec![("foo", "1"), ("bar", "2"), ("baz", "3")]
            );
        }
        for s in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(ok(s).get("foo"), Some("1"));
        }
        assert!(ok("").is_empty());
        assert!(ok(" \t ,, ").is_empty());
    }

    #[test]
    fn multiple_fields_are_combined_in_order() {
        let t = TraceState::parse_fields(&["foo=1,bar=2", "rojo=1,congo=2", "", "baz=3"])
            .expect("valid");
        assert_eq!(t.header_value(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
    }

    #[test]
    fn duplicate_keys_invalidate_the_header() {
        for f in [
            vec!["foo=1,foo=1"],
            vec!["foo=1,foo=2"],
            vec!["foo=1", "foo=1"],
            vec!["foo=1", "foo=2"],
        ] {
            assert!(matches!(
                TraceState::parse_fields(&f),
                Err(TraceStateError::DuplicateKey(_))
            ));
        }
    }

    #[test]
    fn at_most_32_members() {
        let list = |n: usize| {
            (1..=n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(ok(&list(32)).len(), 32);
        assert_eq!(
            TraceState::parse(&list(33)),
            Err(TraceStateError::TooManyMembers(33))
        );
        // empty members do not count
        assert_eq!(ok(&format!("{},,,", list(32))).len(), 32);
    }

    #[test]
    fn mutated_keys_move_left_and_order_is_preserved() {
        let mut t = ok("congo=a,rojo=b,other=c");
        t.insert("rojo", "new").expect("valid");
        assert_eq!(t.header_value(), "rojo=new,congo=a,other=c");
        t.insert("clew", "1").expect("valid");
        assert_eq!(t.header_value(), "clew=1,rojo=new,congo=a,other=c");
        assert!(t.insert("Bad", "1").is_err());
        assert!(t.insert("ok", "bad,value").is_err());
        assert_eq!(t.remove("congo").as_deref(), Some("a"));
        assert_eq!(t.header_value(), "clew=1,rojo=new,other=c");
    }

    #[test]
    fn insert_into_full_list_drops_rightmost() {
        let list: Vec<String> = (1..=32).map(|i| format!("k{i}=v")).collect();
        let mut t = ok(&list.join(","));
        t.insert("new", "v").expect("valid");
        assert_eq!(t.len(), 32);
        assert_eq!(t.get("k32"), None);
        assert_eq!(t.iter().next(), Some(("new", "v")));
    }

    #[test]
    fn truncation_removes_long_members_first_then_from_the_end() {
        let long = "l".repeat(200);
        let t = ok(&format!("a=1,big={long},b=2,c=3"));
        // fits: nothing removed
        assert_eq!(t.header_value_truncated(10_000), t.header_value());
        // too long: the >128 char member goes first even though it is not last
        assert_eq!(t.header_value_truncated(20), "a=1,b=2,c=3");
        // still too long: then from the right
        assert_eq!(t.header_value_truncated(7), "a=1,b=2");
        assert_eq!(t.header_value_truncated(2), "");
        // whole members only
        for max in 0..300 {
            let out = t.header_value_truncated(max);
            assert!(out.len() <= max);
            assert!(out.is_empty() || TraceState::parse(&out).is_ok());
        }
    }

    #[test]
    fn garbage_never_panics() {
        let good = "foo=1,bar@baz=2, x=y ";
        for i in 0..=good.len() {
            let _ = TraceState::parse(&good[..i]);
        }
        for s in [
            "=",
            "==",
            ",=,",
            "é=é",
            "a=\u{0}",
            "@=1",
            "a@=",
            &"a=".repeat(5000),
        ] {
            let _ = TraceState::parse(s);
        }
    }
}
