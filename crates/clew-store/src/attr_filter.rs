//! A per-block filter of generic attribute values: a bloom filter ([`Bloom`], the trace-id one's
//! code) over every distinct (scope, key, value as text) of the block's span and resource
//! attributes whose key has no dedicated column. `Block::may_match` consults it for equality
//! (Jaeger tags, TraceQL `=`), so a search for a value the block never saw skips the block without
//! reading it. Dedicated-column keys are left out: their column search is already cheap, and a
//! query on them is never pruned here.
//!
//! The text form is `clew_model::attrs::to_text`, exactly what the row scan compares a Jaeger tag
//! with (`schema::AttrList::text_of`, the resource fallback). A typed int equality also matches a
//! double of the same numeric value, whose text may differ (`1e20` vs an int), so a key that holds
//! any double in a scope gets a marker entry, and an int query on it is never pruned.
//!
//! Stored in `meta.json` as [`AttrFilterMeta`]: a version and the base64 of the bloom file format
//! (`bloom.rs`). Sized at ~10 bits per distinct value (7 probes: ~1 % false positives), capped at
//! [`MAX_BITS`]; past the cap the filter is denser (more false positives), never wrong. Blocks
//! without the field, or with a version this code does not know, are never pruned by it.

use crate::api::{AttrScope, CompareOp, SearchQuery, SpanField, TagValue};
use crate::bloom::Bloom;
use base64::Engine;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The one filter layout this code writes and reads.
pub const VERSION: u32 = 1;
/// log2 of the largest filter: 2^20 bits = 128 KiB (≈175 KB of base64 in `meta.json`), enough for
/// ~100 000 distinct values at 1 % false positives.
const MAX_LOG2_BITS: u32 = 20;
pub const MAX_BITS: u64 = 1 << MAX_LOG2_BITS;
const BITS_PER_ITEM: u64 = 10;

const SPAN: u8 = 1;
const RESOURCE: u8 = 2;
/// Stands in for the value of the marker entry "this key holds a double" (not valid UTF-8, so no
/// attribute text equals it).
const DOUBLE_MARKER: &[u8] = &[0xff, b'd'];

/// The `meta.json` form (field `attr_filter`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttrFilterMeta {
    pub version: u32,
    /// Base64 (standard alphabet, padded) of the bloom filter file format.
    pub bloom: String,
}

/// Accumulates a block's attribute values while it is written.
pub struct AttrFilterBuilder {
    bloom: Bloom,
    /// Distinct hashes, to size the filter; not grown past what [`MAX_BITS`] holds.
    distinct: HashSet<u64>,
    saturated: bool,
    text: String,
}

impl Default for AttrFilterBuilder {
    fn default() -> Self {
        Self {
            bloom: Bloom::with_bits_pow2(MAX_LOG2_BITS),
            distinct: HashSet::new(),
            saturated: false,
            text: String::new(),
        }
    }
}

impl AttrFilterBuilder {
    pub fn add_span_attributes(&mut self, attrs: &[KeyValue]) {
        self.add(SPAN, attrs);
    }

    pub fn add_resource_attributes(&mut self, attrs: &[KeyValue]) {
        self.add(RESOURCE, attrs);
    }

    fn add(&mut self, scope: u8, attrs: &[KeyValue]) {
        for kv in attrs {
            if crate::schema::dedicated_index(&kv.key).is_some() {
                continue;
            }
            let h = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => hash(scope, &kv.key, s.as_bytes()),
                Some(Value::DoubleValue(_)) => {
                    let marker = hash(scope, &kv.key, DOUBLE_MARKER);
                    self.insert(marker);
                    self.text_hash(scope, kv)
                }
                _ => self.text_hash(scope, kv),
            };
            self.insert(h);
        }
    }

    fn text_hash(&mut self, scope: u8, kv: &KeyValue) -> u64 {
        use std::fmt::Write;
        self.text.clear();
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            // The common non-string types without an allocation; same text as `to_text`.
            Some(Value::IntValue(i)) => {
                let _ = write!(self.text, "{i}");
            }
            Some(Value::BoolValue(b)) => {
                let _ = write!(self.text, "{b}");
            }
            _ => {
                let none = AnyValue::default();
                self.text = clew_model::attrs::to_text(kv.value.as_ref().unwrap_or(&none));
            }
        }
        hash(scope, &kv.key, self.text.as_bytes())
    }

    fn insert(&mut self, h: u64) {
        self.bloom.insert_hash(h);
        if !self.saturated {
            self.distinct.insert(h);
            self.saturated = self.distinct.len() as u64 * BITS_PER_ITEM >= MAX_BITS;
        }
    }

    /// The filter, folded down to ~10 bits per distinct value.
    pub fn finish(mut self) -> AttrFilterMeta {
        let want = (self.distinct.len() as u64 * BITS_PER_ITEM)
            .max(64)
            .next_power_of_two()
            .min(MAX_BITS);
        self.bloom.fold_to(want);
        AttrFilterMeta {
            version: VERSION,
            bloom: base64::engine::general_purpose::STANDARD.encode(self.bloom.to_bytes()),
        }
    }
}

/// A loaded filter.
#[derive(Debug, Clone)]
pub struct AttrFilter {
    bloom: Bloom,
}

impl AttrFilter {
    /// `None` (never prune) for an unknown version or a malformed filter.
    pub fn from_meta(m: &AttrFilterMeta) -> Option<Self> {
        if m.version != VERSION {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m.bloom.as_bytes())
            .ok()?;
        Some(Self {
            bloom: Bloom::from_bytes(&bytes).ok()?,
        })
    }

    pub fn memory_bytes(&self) -> usize {
        self.bloom.memory_bytes()
    }

    fn has(&self, scope: u8, key: &str, text: &[u8]) -> bool {
        self.bloom.may_contain_hash(hash(scope, key, text))
    }

    /// Whether some span of the block may satisfy every equality of `q` this filter can judge
    /// (false: certainly none does).
    pub fn may_match(&self, q: &SearchQuery) -> bool {
        // Jaeger tags: the span's text form, else the resource's (`matcher::matches`). Pseudo
        // tags are derived from fields, dedicated keys live in columns: neither is in the filter.
        for (key, want) in &q.attributes {
            if crate::matcher::is_pseudo_tag(key) || crate::schema::dedicated_index(key).is_some() {
                continue;
            }
            if !self.has(SPAN, key, want.as_bytes()) && !self.has(RESOURCE, key, want.as_bytes()) {
                return false;
            }
        }
        for c in &q.conditions {
            let (CompareOp::Eq, SpanField::Attribute { scope, key }) = (c.op, &c.field) else {
                continue;
            };
            if crate::schema::dedicated_index(key).is_some() {
                continue;
            }
            let scopes: &[u8] = match scope {
                AttrScope::Span => &[SPAN],
                AttrScope::Resource => &[RESOURCE],
                AttrScope::Any => &[SPAN, RESOURCE],
            };
            let present = match &c.value {
                TagValue::String(s) => scopes.iter().any(|&sc| self.has(sc, key, s.as_bytes())),
                TagValue::Bool(b) => {
                    let t = b.to_string();
                    scopes.iter().any(|&sc| self.has(sc, key, t.as_bytes()))
                }
                // An int equals a double of the same value: unprunable where the key has doubles.
                TagValue::Int(i) => {
                    let t = i.to_string();
                    scopes.iter().any(|&sc| {
                        self.has(sc, key, DOUBLE_MARKER) || self.has(sc, key, t.as_bytes())
                    })
                }
                // Numeric equality with ints and doubles of any text: not judged.
                TagValue::Double(_) => true,
            };
            if !present {
                return false;
            }
        }
        true
    }
}

/// A stable 64-bit hash of (scope, key, text): it is persisted, so no `std` hasher (whose output
/// may change between Rust releases). Lengths go in first so ("ab","c") ≠ ("a","bc").
fn hash(scope: u8, key: &str, text: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ scope as u64;
    h = mix(h ^ key.len() as u64);
    h = feed(h, key.as_bytes());
    h = mix(h ^ text.len() as u64 ^ 0xa5a5_a5a5_0000_0000);
    feed(h, text)
}

fn feed(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = mix(h ^ w);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w) ^ 0x0100_0000_0000_0000);
    }
    h
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn eq(scope: AttrScope, key: &str, value: TagValue) -> SearchQuery {
        SearchQuery {
            conditions: vec![crate::api::SpanCondition {
                field: SpanField::Attribute {
                    scope,
                    key: key.into(),
                },
                op: CompareOp::Eq,
                value,
            }],
            ..Default::default()
        }
    }

    fn jaeger(key: &str, value: &str) -> SearchQuery {
        SearchQuery {
            attributes: vec![(key.into(), value.into())],
            ..Default::default()
        }
    }

    fn built() -> AttrFilter {
        let mut b = AttrFilterBuilder::default();
        b.add_span_attributes(&[
            kv("client.address", Value::StringValue("10.4.3.7".into())),
            kv("retries", Value::IntValue(3)),
            kv("cached", Value::BoolValue(true)),
            kv("ratio", Value::DoubleValue(0.5)),
            kv("http.route", Value::StringValue("/x".into())),
        ]);
        b.add_resource_attributes(&[kv("host.name", Value::StringValue("node-01".into()))]);
        let meta = b.finish();
        let json = serde_json::to_string(&meta).unwrap();
        AttrFilter::from_meta(&serde_json::from_str(&json).unwrap()).unwrap()
    }

    #[test]
    fn judges_equalities_by_scope_and_type() {
        let f = built();
        assert!(f.may_match(&eq(
            AttrScope::Span,
            "client.address",
            TagValue::String("10.4.3.7".into())
        )));
        assert!(!f.may_match(&eq(
            AttrScope::Span,
            "client.address",
            TagValue::String("10.4.3.8".into())
        )));
        // Scope matters; Any looks in both.
        assert!(!f.may_match(&eq(
            AttrScope::Resource,
            "client.address",
            TagValue::String("10.4.3.7".into())
        )));
        assert!(f.may_match(&eq(
            AttrScope::Any,
            "host.name",
            TagValue::String("node-01".into())
        )));
        assert!(!f.may_match(&eq(
            AttrScope::Span,
            "host.name",
            TagValue::String("node-01".into())
        )));
        assert!(f.may_match(&eq(AttrScope::Span, "retries", TagValue::Int(3))));
        assert!(!f.may_match(&eq(AttrScope::Span, "retries", TagValue::Int(4))));
        assert!(f.may_match(&eq(AttrScope::Span, "cached", TagValue::Bool(true))));
        assert!(!f.may_match(&eq(AttrScope::Span, "cached", TagValue::Bool(false))));
        // A key holding a double: int and double equalities are not judged.
        assert!(f.may_match(&eq(AttrScope::Span, "ratio", TagValue::Int(7))));
        assert!(f.may_match(&eq(AttrScope::Span, "ratio", TagValue::Double(9.0))));
        // Dedicated keys are not in the filter and never pruned.
        assert!(f.may_match(&eq(
            AttrScope::Span,
            "http.route",
            TagValue::String("/nope".into())
        )));
        // Jaeger tags compare text, span or resource.
        assert!(f.may_match(&jaeger("retries", "3")));
        assert!(f.may_match(&jaeger("ratio", "0.5")));
        assert!(f.may_match(&jaeger("host.name", "node-01")));
        assert!(!f.may_match(&jaeger("host.name", "node-02")));
        assert!(!f.may_match(&jaeger("client.address", "10.4.3.8")));
        // Pseudo tags are derived from fields.
        assert!(f.may_match(&jaeger("error", "true")));
        assert!(f.may_match(&jaeger("span.kind", "server")));
    }

    #[test]
    fn unknown_versions_and_garbage_are_ignored() {
        let mut m = AttrFilterBuilder::default().finish();
        m.version = VERSION + 1;
        assert!(AttrFilter::from_meta(&m).is_none());
        let bad = AttrFilterMeta {
            version: VERSION,
            bloom: "!!!".into(),
        };
        assert!(AttrFilter::from_meta(&bad).is_none());
    }

    #[test]
    fn filter_is_sized_by_distinct_values_and_capped() {
        let mut small = AttrFilterBuilder::default();
        for i in 0..1_000 {
            small.add_span_attributes(&[kv("k", Value::IntValue(i % 100))]);
        }
        let f = AttrFilter::from_meta(&small.finish()).unwrap();
        // 100 distinct values: 1 024 bits (next power of two of 1 000).
        assert_eq!(f.bloom.bits(), 1024);
        let mut big = AttrFilterBuilder::default();
        for i in 0..300_000 {
            big.add_span_attributes(&[kv("id", Value::IntValue(i))]);
        }
        let f = AttrFilter::from_meta(&big.finish()).unwrap();
        assert_eq!(f.bloom.bits(), MAX_BITS);
        // Overfull, yet every value still tests positive.
        assert!((0..300_000).all(|i| f.may_match(&jaeger("id", &i.to_string()))));
    }
}
