//! The W3C `tracestate` header, Trace Context Level 2.
//!
//! What the current spec says (w3c/trace-context `main`, the Level 2 text published at
//! <https://www.w3.org/TR/trace-context-2/>; file `spec/20-http_request_header_format.md`, section
//! "Tracestate Header" → "tracestate Header Field Values" → "list", "list-members" → "Key",
//! "Value", then "Combined Header Value", "tracestate Limits" and "Mutating the tracestate Field"):
//!
//! ```text
//! list        = list-member 0*31( OWS "," OWS list-member )
//! list-member = key "=" value
//! list-member = OWS
//! key         = ( lcalpha / DIGIT ) 0*255 ( keychar )
//! keychar     = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"
//! lcalpha     = %x61-7A ; a-z
//! value       = 0*255(chr) nblk-chr
//! nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E
//! chr         = %x20 / nblk-chr
//! ```
//!
//! * **Key** ("Key"): "A `key` MUST begin with a lowercase letter or a digit and contain up to 256
//!   characters including lowercase letters (`a`-`z`), digits (`0`-`9`), underscores (`_`),
//!   dashes (`-`), asterisks (`*`), forward slashes (`/`), and at signs (`@`)." There is no
//!   longer a separate multi-tenant form: Level 1's `simple-key / multi-tenant-key` split
//!   (`tenant-id "@" system-id`, at most 241 + 14 characters, a simple key starting with a letter)
//!   was replaced by this single rule (w3c/trace-context#386). So `1abc`, `foo@`, `foo@@bar`,
//!   `foo@bar@baz` and `t…t@v` with 242 characters before the `@` are valid keys; `@foo` (an `@`
//!   first), `FOO`, `foo.bar`, `foo ` and any key over 256 characters are not. Every Level 1 key is
//!   still a valid key.
//! * **Value** ("Value"): up to 256 printable ASCII characters except `,` and `=`, not ending in a
//!   space; leading spaces are part of the value, trailing ones are optional whitespace.
//! * **List** ("tracestate Header Field Values"): "Spaces and horizontal tabs surrounding
//!   `list-member`s are ignored. There can be a maximum of 32 `list-member`s in a `list`." "Empty
//!   and whitespace-only list members are allowed." "When receiving multiple `tracestate` header
//!   fields, they MUST be combined into a single header according to RFC7230" (in field order).
//! * **Duplicated keys** ("Combined Header Value", "Mutating the tracestate Field"): "Only one
//!   entry per key is allowed" and "Adding a key/value pair MUST NOT result in the same key being
//!   present multiple times." — a duty of the *sender*. For the receiver: "Vendors receiving a
//!   `tracestate` request header MUST send it to outgoing requests"; w3c/trace-context#477 (which
//!   added the MUST) settled that an implementation MAY discard duplicated keys but is not obliged
//!   to, and #552 that participants "are not responsible for cleaning up duplicated tracestate
//!   keys that another upstream participant has added". Dropping the whole header is not among the
//!   options: #477 fixed the suite, which had demanded it. The official suite
//!   (`test_tracestate_duplicated_keys`) accepts `foo=1`, `foo=2` or both for `foo=1,foo=2`.
//! * **Limits** ("tracestate Limits"): propagate at least 512 characters; when truncating, remove
//!   whole entries, those over 128 characters first, then from the end.
//! * **Mutations** ("Mutating the tracestate Field"): a modified or added key moves to the
//!   beginning (left); the order of the others is kept.
//!
//! What this module does:
//!
//! * the key and value grammar above, exactly; OWS around members and empty members are accepted
//!   (and not counted); several header fields are combined in order;
//! * a duplicated key keeps its **left-most** entry (the most recent position, since entries are
//!   added on the left) and later ones are discarded — the allowed "MAY discard" behaviour, which
//!   keeps one value per key for [`TraceState::get`], mutation and truncation; the header itself
//!   is kept;
//! * more than 32 members as received (duplicates included, empty members not), or any member
//!   that breaks the key or value grammar, makes the whole header invalid: it is dropped (what the
//!   official suite's strictest level expects), without affecting `traceparent`;
//! * a modified or added key moves to the left and is never present twice; truncation removes
//!   whole members, those over 128 characters first, then from the right.

use std::fmt;

use crate::error::TraceStateError;
use crate::traceparent::trim_ows;

/// The field name.
pub const TRACESTATE: &str = "tracestate";
/// At most this many list members.
pub const MAX_MEMBERS: usize = 32;
/// A key has at most this many characters.
pub const MAX_KEY_LEN: usize = 256;
/// A value has at most this many characters.
pub const MAX_VALUE_LEN: usize = 256;
/// The spec asks to propagate at least this many characters; the default truncation limit.
pub const DEFAULT_MAX_LEN: usize = 512;
/// Members longer than this are removed first when truncating.
pub const LONG_MEMBER: usize = 128;

/// An ordered `tracestate` list (left-most = most recently modified). Keys are unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

/// `keychar = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"`
fn is_keychar(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
}

/// Whether `key` matches the Level 2 key grammar: `( lcalpha / DIGIT ) 0*255 ( keychar )`.
pub fn is_valid_key(key: &str) -> bool {
    match key.as_bytes().split_first() {
        Some((&first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && key.len() <= MAX_KEY_LEN
                && rest.iter().all(|&b| is_keychar(b))
        }
        None => false,
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
            b.len() <= MAX_VALUE_LEN
                && is_nblk(last)
                && rest.iter().all(|&c| c == b' ' || is_nblk(c))
        }
        None => false,
    }
}

impl TraceState {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one (combined) header value. A duplicated key keeps its left-most entry; more than
    /// 32 members or any invalid member is an error (the caller drops the header).
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut received = 0usize;
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
            received += 1;
            if received > MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers(received));
            }
            // A duplicate is the sender's fault; keep the header, keep the left-most entry.
            if !members.iter().any(|(ek, _)| ek == k) {
                members.push((k.to_string(), v.to_string()));
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
    fn keys_with_and_without_at_signs() {
        let t = ok("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,1tenant@vendor=x,fw529a3039@dt=y");
        assert_eq!(t.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(t.get("1tenant@vendor"), Some("x"));
        assert_eq!(t.get("fw529a3039@dt"), Some("y"));
        assert_eq!(t.len(), 4);
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
    fn key_may_start_with_a_letter_or_a_digit() {
        // key = ( lcalpha / DIGIT ) 0*255 ( keychar ): a digit first is fine without an `@` now.
        for k in ["a", "z", "0", "9", "1abc", "0123", "7@x"] {
            assert!(is_valid_key(k), "{k:?}");
            assert_eq!(ok(&format!("{k}=1")).get(k), Some("1"), "{k:?}");
        }
        for k in ["_x", "-x", "*x", "/x", "@foo", "@", "Ax", "é"] {
            assert!(!is_valid_key(k), "{k:?}");
            assert!(TraceState::parse(&format!("{k}=1,bar=2")).is_err(), "{k:?}");
        }
    }

    #[test]
    fn at_sign_is_an_ordinary_keychar() {
        // Level 1's tenant@system split is gone: `@` may appear anywhere but first, any number of
        // times, with any keychar (or nothing) around it (the suite's
        // test_tracestate_key_illegal_vendor_format).
        for k in [
            "foo@",
            "foo@@bar",
            "foo@bar@baz",
            "foo@1bar",
            "foo@_",
            "a@b@c@d",
        ] {
            assert!(is_valid_key(k), "{k:?}");
            let t = ok(&format!("{k}=1,bar=2"));
            assert_eq!(t.get(k), Some("1"), "{k:?}");
            assert_eq!(t.get("bar"), Some("2"), "{k:?}");
        }
    }

    #[test]
    fn key_grammar_rejects_illegal_characters() {
        for k in [
            "foo ", "FOO", "fOo", "foo.bar", "foo=bar", "foo,bar", "foo\tbar", "", "é",
        ] {
            assert!(!is_valid_key(k), "{k:?}");
        }
        // a bad key drops the whole header
        for s in ["foo =1", "FOO=1", "foo.bar=1", "bar=2,@foo=1"] {
            assert!(
                matches!(TraceState::parse(s), Err(TraceStateError::InvalidKey(_))),
                "{s:?}"
            );
        }
        assert_eq!(
            TraceState::parse("foo=1,bar"),
            Err(TraceStateError::MissingEquals)
        );
    }

    #[test]
    fn key_is_at_most_256_characters_in_total() {
        assert!(is_valid_key(&"z".repeat(256)));
        assert!(!is_valid_key(&"z".repeat(257)));
        // Where the `@` sits no longer matters, only the total length (Level 1 capped the part
        // before it at 241 and the part after it at 14 characters).
        for k in [
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
            format!("t@{}", "v".repeat(254)),
            format!("{}@", "t".repeat(255)),
        ] {
            assert!(is_valid_key(&k), "{} chars", k.len());
            let t = TraceState::parse_fields(&["foo=1", &format!("{k}=1")]).expect("valid");
            assert_eq!(t.get("foo"), Some("1"));
            assert_eq!(t.get(&k), Some("1"));
        }
        for k in [
            "z".repeat(257),
            format!("t@{}", "v".repeat(255)),
            format!("{}@", "t".repeat(256)),
        ] {
            assert!(!is_valid_key(&k), "{} chars", k.len());
            assert!(TraceState::parse_fields(&["foo=1", &format!("{k}=1")]).is_err());
        }
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
    fn duplicated_keys_keep_the_header_and_the_left_most_entry() {
        // The sender must not duplicate a key; a receiver keeps the header and MAY discard the
        // duplicates. Clew keeps the left-most (most recent) entry, whether the duplicate is in the
        // same field or in another one.
        for (fields, want) in [
            (vec!["foo=1,foo=1"], "foo=1"),
            (vec!["foo=1,foo=2"], "foo=1"),
            (vec!["foo=1", "foo=1"], "foo=1"),
            (vec!["foo=1", "foo=2"], "foo=1"),
            (vec!["a=1,b=2,a=3"], "a=1,b=2"),
            (vec!["x@y=1 , b=2", "x@y=3,c=4"], "x@y=1,b=2,c=4"),
        ] {
            let t = TraceState::parse_fields(&fields).expect("duplicates do not invalidate");
            assert_eq!(t.header_value(), want, "{fields:?}");
        }
        // A duplicate still counts as a received list member: 33 members are too many.
        let mut many: Vec<String> = (1..=32).map(|i| format!("k{i}=v")).collect();
        many.push("k1=again".to_string());
        assert_eq!(
            TraceState::parse(&many.join(",")),
            Err(TraceStateError::TooManyMembers(33))
        );
        // Updating a duplicated key leaves it present once, on the left.
        let mut t = ok("a=1,b=2,a=3");
        t.insert("a", "9").expect("valid");
        assert_eq!(t.header_value(), "a=9,b=2");
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
