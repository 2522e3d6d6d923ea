//! W3C Baggage: the [`Baggage`] type and its `baggage` header codec.
//!
//! ```text
//! baggage-string = list-member 0*179( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! property       = key OWS "=" OWS value / key OWS
//! key            = token                           ; RFC 7230
//! value          = *baggage-octet
//! baggage-octet  = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! ```
//!
//! * values are percent-decoded on extraction; invalid UTF-8 after decoding becomes U+FFFD;
//!   anything outside `baggage-octet` (and `%`) is percent-encoded on injection;
//! * values may contain `=` (`a=b=c` is key `a`, value `b=c`);
//! * properties are kept (raw, validated) and re-emitted;
//! * several `baggage` fields are combined; an invalid list member is dropped on its own;
//! * limits: everything within 64 members **and** 8192 bytes is propagated; beyond that whole
//!   members are dropped — never a partial member.

use std::fmt::Write as _;

use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

use crate::carrier::{Extractor, Injector};
use crate::context::Context;
use crate::error::BaggageError;
use crate::propagator::Propagator;
use crate::traceparent::trim_ows;

/// The field name.
pub const BAGGAGE: &str = "baggage";
/// Members that must always propagate.
pub const MAX_MEMBERS: usize = 64;
/// Bytes that must always propagate.
pub const MAX_BYTES: usize = 8192;

/// Bytes outside `baggage-octet`, plus `%` so that decoding round-trips, plus `+` (allowed
/// literally, but implementations that form-decode, such as the Python SDK, read it as a space).
/// Non-ASCII is always encoded by `percent_encode`.
const VALUE_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'+')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// A baggage property (`;key` or `;key=value`), kept as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageProperty {
    /// Property key (a token).
    pub key: String,
    /// Property value (raw `baggage-octet`s), if any.
    pub value: Option<String>,
}

/// One baggage list member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaggageEntry {
    /// Key (a token).
    pub key: String,
    /// Decoded value (any UTF-8).
    pub value: String,
    /// Properties (metadata).
    pub properties: Vec<BaggageProperty>,
}

/// Ordered baggage. Keys are unique; inserting an existing key replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    entries: Vec<BaggageEntry>,
}

/// RFC 7230 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `key` is a non-empty RFC 7230 token.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(is_tchar)
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Whether `raw` is `*baggage-octet` (an encoded value).
pub fn is_valid_encoded_value(raw: &str) -> bool {
    raw.bytes().all(is_baggage_octet)
}

/// Percent-decode; malformed escapes stay literal; invalid UTF-8 becomes U+FFFD.
pub fn decode_value(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = crate::ids::hex_val(b[i + 1], crate::ids::HexCase::Any);
            let lo = crate::ids::hex_val(b[i + 2], crate::ids::HexCase::Any);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi << 4) | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode a value for the wire.
pub fn encode_value(value: &str) -> String {
    percent_encode(value.as_bytes(), VALUE_ENCODE).to_string()
}

fn parse_property(raw: &str) -> Result<BaggageProperty, BaggageError> {
    let p = trim_ows(raw);
    let (k, v) = match p.split_once('=') {
        Some((k, v)) => (trim_ows(k), Some(trim_ows(v))),
        None => (p, None),
    };
    if !is_valid_key(k) || v.is_some_and(|v| !is_valid_encoded_value(v)) {
        return Err(BaggageError::InvalidProperty(p.to_string()));
    }
    Ok(BaggageProperty {
        key: k.to_string(),
        value: v.map(str::to_string),
    })
}

/// Parse one list member (without the surrounding commas).
pub fn parse_member(raw: &str) -> Result<BaggageEntry, BaggageError> {
    let mut parts = raw.split(';');
    let kv = parts.next().unwrap_or_default();
    let (k, v) = kv.split_once('=').ok_or(BaggageError::MissingEquals)?;
    let (k, v) = (trim_ows(k), trim_ows(v));
    if !is_valid_key(k) {
        return Err(BaggageError::InvalidKey(k.to_string()));
    }
    if !is_valid_encoded_value(v) {
        return Err(BaggageError::InvalidValue(k.to_string()));
    }
    let properties = parts.map(parse_property).collect::<Result<Vec<_>, _>>()?;
    Ok(BaggageEntry {
        key: k.to_string(),
        value: decode_value(v),
        properties,
    })
}

impl BaggageEntry {
    /// The encoded list member.
    pub fn encode(&self) -> String {
        let mut s = format!("{}={}", self.key, encode_value(&self.value));
        for p in &self.properties {
            match &p.value {
                Some(v) => {
                    let _ = write!(s, ";{}={}", p.key, v);
                }
                None => {
                    let _ = write!(s, ";{}", p.key);
                }
            }
        }
        s
    }
}

impl Baggage {
    /// Empty baggage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one (combined) header value. Invalid members are dropped individually; at most
    /// `max_members` members and `max_bytes` bytes of members are kept, whole members only.
    pub fn parse_with_limits(value: &str, max_members: usize, max_bytes: usize) -> Self {
        let mut bag = Baggage::new();
        let mut bytes = 0usize;
        for raw in value.split(',') {
            let raw = trim_ows(raw);
            if raw.is_empty() {
                continue;
            }
            let Ok(entry) = parse_member(raw) else {
                continue;
            };
            if bag.len() >= max_members && bag.get(&entry.key).is_none() {
                break;
            }
            let sep = usize::from(bytes > 0);
            if bytes + sep + raw.len() > max_bytes {
                continue;
            }
            bytes += sep + raw.len();
            bag.insert_entry(entry);
        }
        bag
    }

    /// Parse with the W3C limits (64 members, 8192 bytes).
    pub fn parse(value: &str) -> Self {
        Self::parse_with_limits(value, MAX_MEMBERS, MAX_BYTES)
    }

    /// Combine several received fields and parse them.
    pub fn parse_fields(values: &[&str]) -> Self {
        Self::parse(&values.join(","))
    }

    /// Insert or replace `key` (validated as a token).
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), BaggageError> {
        self.insert_with_properties(key, value, Vec::new())
    }

    /// Insert or replace `key` with properties.
    pub fn insert_with_properties(
        &mut self,
        key: &str,
        value: &str,
        properties: Vec<BaggageProperty>,
    ) -> Result<(), BaggageError> {
        if !is_valid_key(key) {
            return Err(BaggageError::InvalidKey(key.to_string()));
        }
        for p in &properties {
            if !is_valid_key(&p.key)
                || p.value
                    .as_deref()
                    .is_some_and(|v| !is_valid_encoded_value(v))
            {
                return Err(BaggageError::InvalidProperty(p.key.clone()));
            }
        }
        self.insert_entry(BaggageEntry {
            key: key.to_string(),
            value: value.to_string(),
            properties,
        });
        Ok(())
    }

    fn insert_entry(&mut self, entry: BaggageEntry) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == entry.key) {
            *e = entry;
        } else {
            self.entries.push(entry);
        }
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The entry for `key`.
    pub fn entry(&self, key: &str) -> Option<&BaggageEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: &str) -> Option<BaggageEntry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    /// Keep only entries for which `f` returns true.
    pub fn retain(&mut self, f: impl FnMut(&BaggageEntry) -> bool) {
        self.entries.retain(f);
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageEntry> {
        self.entries.iter()
    }

    /// Mutable entries in order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut BaggageEntry> {
        self.entries.iter_mut()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The header value: whole members, in order, while within `max_members` and `max_bytes`.
    /// A member that does not fit is dropped entirely (later, smaller members may still fit).
    pub fn header_value_with_limits(&self, max_members: usize, max_bytes: usize) -> String {
        let mut out = String::new();
        let mut n = 0;
        for e in &self.entries {
            if n >= max_members {
                break;
            }
            let m = e.encode();
            let sep = usize::from(!out.is_empty());
            if out.len() + sep + m.len() > max_bytes {
                continue;
            }
            if sep == 1 {
                out.push(',');
            }
            out.push_str(&m);
            n += 1;
        }
        out
    }

    /// The header value with the W3C limits.
    pub fn header_value(&self) -> String {
        self.header_value_with_limits(MAX_MEMBERS, MAX_BYTES)
    }
}

impl FromIterator<(String, String)> for Baggage {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        let mut b = Baggage::new();
        for (k, v) in iter {
            let _ = b.insert(&k, &v);
        }
        b
    }
}

/// The W3C `baggage` propagator.
#[derive(Clone, Debug)]
pub struct BaggagePropagator {
    max_members: usize,
    max_bytes: usize,
}

impl Default for BaggagePropagator {
    fn default() -> Self {
        BaggagePropagator {
            max_members: MAX_MEMBERS,
            max_bytes: MAX_BYTES,
        }
    }
}

impl BaggagePropagator {
    /// With the W3C limits (64 members, 8192 bytes).
    pub fn new() -> Self {
        Self::default()
    }

    /// With other limits (raise them to accept more; the W3C minimums always fit by default).
    pub fn with_limits(max_members: usize, max_bytes: usize) -> Self {
        BaggagePropagator {
            max_members,
            max_bytes,
        }
    }
}

impl Propagator for BaggagePropagator {
    fn inject(&self, cx: &Context, injector: &mut dyn Injector) {
        let v = cx
            .baggage
            .header_value_with_limits(self.max_members, self.max_bytes);
        if !v.is_empty() {
            injector.set(BAGGAGE, v);
        }
    }

    fn extract(&self, extractor: &dyn Extractor, mut cx: Context) -> Context {
        let fields = extractor.get_all(BAGGAGE);
        if fields.is_empty() {
            return cx;
        }
        let bag = Baggage::parse_with_limits(&fields.join(","), self.max_members, self.max_bytes);
        for e in bag.entries {
            cx.baggage.insert_entry(e);
        }
        cx
    }

    fn fields(&self) -> Vec<String> {
        vec![BAGGAGE.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::HeaderList;

    #[test]
    fn plus_is_sent_encoded_and_read_literally() {
        // Form decoders (the Python SDK) turn a literal '+' into a space: send it as %2B.
        assert_eq!(encode_value("a+b c"), "a%2Bb%20c");
        assert_eq!(decode_value("a%2Bb%20c"), "a+b c");
        // A received '+' is a baggage-octet, not a space.
        assert_eq!(Baggage::parse("k=a+b").get("k"), Some("a+b"));
    }

    #[test]
    fn simple_members_and_ows() {
        let b = Baggage::parse(" userId = alice , serverNode=DF%2028 ,isProduction=false ");
        assert_eq!(b.get("userId"), Some("alice"));
        assert_eq!(b.get("serverNode"), Some("DF 28"));
        assert_eq!(b.get("isProduction"), Some("false"));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn values_may_contain_equals() {
        let b = Baggage::parse("a=b=c,d==");
        assert_eq!(b.get("a"), Some("b=c"));
        assert_eq!(b.get("d"), Some("="));
        assert_eq!(b.header_value(), "a=b=c,d==");
    }

    #[test]
    fn properties_are_parsed_and_reemitted() {
        let b = Baggage::parse("key1=value1;property1;property2, key2 = value2 ; p3 = v3");
        let e1 = b.entry("key1").expect("present");
        assert_eq!(e1.properties.len(), 2);
        assert_eq!(e1.properties[0].key, "property1");
        assert_eq!(e1.properties[0].value, None);
        let e2 = b.entry("key2").expect("present");
        assert_eq!(e2.value, "value2");
        assert_eq!(e2.properties[0].value.as_deref(), Some("v3"));
        assert_eq!(
            b.header_value(),
            "key1=value1;property1;property2,key2=value2;p3=v3"
        );
        // invalid property drops the member
        assert!(Baggage::parse("k=v;bad key").is_empty());
    }

    #[test]
    fn percent_encoding_round_trips() {
        let mut b = Baggage::new();
        let v = "a b,c;d\\e\"f%g=h✓\u{7f}";
        b.insert("k", v).expect("valid key");
        let h = b.header_value();
        assert_eq!(h, "k=a%20b%2Cc%3Bd%5Ce%22f%25g=h%E2%9C%93%7F");
        assert!(h
            .bytes()
            .all(|c| is_baggage_octet(c) || c == b'=' || c == b','));
        assert_eq!(Baggage::parse(&h).get("k"), Some(v));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let b = Baggage::parse("k=%FF%FEok,j=%E2%9C,m=%C3%A9");
        assert_eq!(b.get("k"), Some("\u{fffd}\u{fffd}ok"));
        assert_eq!(b.get("j"), Some("\u{fffd}"));
        assert_eq!(b.get("m"), Some("é"));
        // malformed escapes stay literal
        assert_eq!(Baggage::parse("k=100%,j=%zz,l=%4").get("k"), Some("100%"));
        assert_eq!(Baggage::parse("j=%zz").get("j"), Some("%zz"));
        assert_eq!(Baggage::parse("l=%4").get("l"), Some("%4"));
    }

    #[test]
    fn invalid_members_are_dropped_individually() {
        let b = Baggage::parse("good=1,bad key=2,noequals,=x,k=\"q\",ok=é,fine=2");
        assert_eq!(
            b.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            vec!["good", "fine"]
        );
        // empty value is allowed
        assert_eq!(Baggage::parse("e=").get("e"), Some(""));
    }

    #[test]
    fn multiple_headers_are_combined() {
        let h = HeaderList::new()
            .with("baggage", "a=1,b=2")
            .with("Baggage", "c=3");
        let cx = BaggagePropagator::new().extract_new(&h);
        assert_eq!(cx.baggage.len(), 3);
        assert_eq!(cx.baggage.get("c"), Some("3"));
    }

    #[test]
    fn sixty_four_members_and_8192_bytes_always_propagate() {
        // 64 members, exactly 8192 bytes including 63 commas.
        let per = (MAX_BYTES - 63) / 64; // 127
        let extra = (MAX_BYTES - 63) % 64;
        let members: Vec<String> = (0..64)
            .map(|i| {
                let key = format!("k{i:02}");
                let len = per + usize::from(i < extra) - key.len() - 1;
                format!("{key}={}", "v".repeat(len))
            })
            .collect();
        let header = members.join(",");
        assert_eq!(header.len(), MAX_BYTES);
        let b = Baggage::parse(&header);
        assert_eq!(b.len(), 64);
        assert_eq!(b.header_value(), header);
        let mut out = HeaderList::new();
        BaggagePropagator::new().inject(&Context::new().with_baggage(b), &mut out);
        assert_eq!(out.get("baggage"), Some(header.as_str()));
    }

    #[test]
    fn limits_drop_whole_members_never_partial() {
        let mut b = Baggage::new();
        for i in 0..70 {
            b.insert(&format!("k{i}"), "v").expect("valid");
        }
        let h = b.header_value();
        assert_eq!(Baggage::parse(&h).len(), 64);
        // a member that would cross the byte limit is dropped whole
        let mut b = Baggage::new();
        b.insert("a", &"x".repeat(8000)).expect("valid");
        b.insert("big", &"y".repeat(500)).expect("valid");
        b.insert("small", "z").expect("valid");
        let h = b.header_value();
        assert!(h.len() <= MAX_BYTES);
        let back = Baggage::parse(&h);
        assert_eq!(back.get("big"), None);
        assert_eq!(back.get("small"), Some("z"));
        assert_eq!(back.get("a").map(str::len), Some(8000));
        // on extraction too
        let raw = format!("a={},big={},small=z", "x".repeat(8000), "y".repeat(500));
        let back = Baggage::parse(&raw);
        assert!(back.get("big").is_none() && back.get("small") == Some("z"));
        // custom limits
        assert_eq!(
            b.header_value_with_limits(1, 100_000).matches(',').count(),
            0
        );
    }

    #[test]
    fn invalid_keys_are_rejected_on_insert() {
        let mut b = Baggage::new();
        assert!(b.insert("bad key", "v").is_err());
        assert!(b.insert("", "v").is_err());
        assert!(b.insert("k,", "v").is_err());
        assert!(b.insert("ok", "").is_ok());
        let bad = vec![BaggageProperty {
            key: "p".into(),
            value: Some("a b".into()),
        }];
        assert!(b.insert_with_properties("k", "v", bad).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = "k=v%20x;p=1;q, a = b ";
        for i in 0..=good.len() {
            let _ = Baggage::parse(&good[..i]);
        }
        for s in [
            "%",
            "k=%",
            "k=%%",
            "k=%f",
            ";",
            "=;=",
            ",,,,",
            "k=v;",
            "k=v;;",
            "\u{fffd}=1",
        ] {
            let _ = Baggage::parse(s);
        }
        let big = "k=v,".repeat(100_000);
        assert_eq!(Baggage::parse(&big).len(), 1);
    }
}
