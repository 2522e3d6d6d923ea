//! The tag catalog: attribute keys and their low-cardinality values, recorded per block at write
//! time (in `meta.json`, so it is sealed with the block and cached with its meta) and gathered from
//! the head at query time. It answers Tempo's tag-name and tag-value endpoints (autocomplete)
//! without reading any `data.parquet`.
//!
//! Bounds keep a block's meta small whatever the data: at most [`MAX_VALUES_PER_KEY`] values per
//! key (beyond, the key is marked `high_cardinality` and keeps the values already seen), string
//! values longer than [`MAX_VALUE_LEN`] bytes are not listed (the key is marked too), and at most
//! [`MAX_KEYS_PER_SCOPE`] keys per scope (beyond, `truncated`). Only strings, ints, finite doubles
//! and booleans are listed as values; keys of other types are listed without values.

use crate::api::{AttrScope, TagValue};
use crate::matcher::Val;
use clew_model::otlp::common::KeyValue;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

pub const MAX_VALUES_PER_KEY: usize = 1000;
pub const MAX_VALUE_LEN: usize = 256;
pub const MAX_KEYS_PER_SCOPE: usize = 5000;

/// One listed value, typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "lowercase")]
pub enum CatalogValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

// Doubles compare by bits (NaN is never listed), so equality is reflexive.
impl PartialEq for CatalogValue {
    fn eq(&self, other: &Self) -> bool {
        self.sort_key() == other.sort_key()
    }
}
impl Eq for CatalogValue {}

impl CatalogValue {
    /// Type first (string, int, double, bool), then value: the order answers are sorted in.
    fn sort_key(&self) -> (u8, &str, i64, u64, bool) {
        match self {
            CatalogValue::String(s) => (0, s, 0, 0, false),
            CatalogValue::Int(i) => (1, "", *i, 0, false),
            // Order-preserving bits of a finite double.
            CatalogValue::Double(d) => {
                let b = d.to_bits();
                let k = if b >> 63 == 1 { !b } else { b | (1 << 63) };
                (2, "", 0, k, false)
            }
            CatalogValue::Bool(b) => (3, "", 0, 0, *b),
        }
    }

    pub fn to_tag_value(&self) -> TagValue {
        match self {
            CatalogValue::String(s) => TagValue::String(s.clone()),
            CatalogValue::Int(i) => TagValue::Int(*i),
            CatalogValue::Double(d) => TagValue::Double(*d),
            CatalogValue::Bool(b) => TagValue::Bool(*b),
        }
    }
}

impl PartialOrd for CatalogValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for CatalogValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// The values of one key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyValues {
    /// Distinct listable values, sorted.
    pub values: Vec<CatalogValue>,
    /// More values exist than are listed (over the cap, or too long to list).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high_cardinality: bool,
    /// Every value type seen for the key, listed or not ([`TYPE_STR`] …; 0: unknown). Tells a
    /// search whether the key's values are all comparable from the generic list's typed leaves.
    #[serde(default)]
    pub types: u8,
}

pub const TYPE_STR: u8 = 1;
pub const TYPE_INT: u8 = 2;
pub const TYPE_DOUBLE: u8 = 4;
pub const TYPE_BOOL: u8 = 8;
/// Bytes, arrays, maps, or no value.
pub const TYPE_OTHER: u8 = 16;

/// A block's catalog: keys per scope.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagCatalog {
    pub span: BTreeMap<String, KeyValues>,
    pub resource: BTreeMap<String, KeyValues>,
    /// Some keys were not recorded (over [`MAX_KEYS_PER_SCOPE`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl TagCatalog {
    fn scopes(&self, scope: AttrScope) -> impl Iterator<Item = &BTreeMap<String, KeyValues>> {
        let (span, resource) = match scope {
            AttrScope::Span => (true, false),
            AttrScope::Resource => (false, true),
            AttrScope::Any => (true, true),
        };
        [
            span.then_some(&self.span),
            resource.then_some(&self.resource),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether `key` may be an attribute of `scope` in this block (`true` when not sure).
    pub fn may_have(&self, scope: AttrScope, key: &str) -> bool {
        self.truncated || self.scopes(scope).any(|m| m.contains_key(key))
    }

    /// The value types of a span attribute key (0: absent; all bits when not sure).
    pub fn span_types(&self, key: &str) -> u8 {
        match self.span.get(key) {
            Some(kv) if kv.types != 0 => kv.types,
            Some(_) => u8::MAX,
            None if self.truncated => u8::MAX,
            None => 0,
        }
    }

    pub fn names_into(&self, scope: AttrScope, out: &mut BTreeSet<String>) {
        for m in self.scopes(scope) {
            for k in m.keys() {
                if !out.contains(k) {
                    out.insert(k.clone());
                }
            }
        }
    }

    pub fn values_into(&self, scope: AttrScope, key: &str, out: &mut BTreeSet<CatalogValue>) {
        for m in self.scopes(scope) {
            if let Some(kv) = m.get(key) {
                out.extend(kv.values.iter().cloned());
            }
        }
    }
}

#[derive(Default)]
struct KeyAcc {
    /// Hash of a value → the value: checks membership without allocating.
    values: HashMap<u64, CatalogValue>,
    high: bool,
    types: u8,
}

#[derive(Default)]
struct ScopeAcc {
    keys: HashMap<String, KeyAcc>,
    truncated: bool,
}

impl ScopeAcc {
    fn add(&mut self, list: &[KeyValue]) {
        for kv in list {
            // Allocates the key only when it is new: this runs once per attribute per span.
            if !self.keys.contains_key(kv.key.as_str()) {
                if self.keys.len() >= MAX_KEYS_PER_SCOPE {
                    self.truncated = true;
                    continue;
                }
                self.keys.insert(kv.key.clone(), KeyAcc::default());
            }
            let Some(acc) = self.keys.get_mut(kv.key.as_str()) else {
                continue;
            };
            let Some(v) = kv.value.as_ref() else {
                acc.types |= TYPE_OTHER;
                continue;
            };
            add_value(acc, &Val::of(v));
        }
    }

    fn finish(self) -> (BTreeMap<String, KeyValues>, bool) {
        let keys = self
            .keys
            .into_iter()
            .map(|(k, acc)| {
                let mut values: Vec<CatalogValue> = acc.values.into_values().collect();
                values.sort();
                (
                    k,
                    KeyValues {
                        values,
                        high_cardinality: acc.high,
                        types: acc.types,
                    },
                )
            })
            .collect();
        (keys, self.truncated)
    }
}

fn add_value(acc: &mut KeyAcc, v: &Val<'_>) {
    acc.types |= match v {
        Val::Str(_) => TYPE_STR,
        Val::Int(_) => TYPE_INT,
        Val::Double(_) => TYPE_DOUBLE,
        Val::Bool(_) => TYPE_BOOL,
        Val::Other => TYPE_OTHER,
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match v {
        Val::Str(s) if s.len() > MAX_VALUE_LEN => {
            acc.high = true;
            return;
        }
        Val::Str(s) => (0u8, s.as_ref()).hash(&mut h),
        Val::Int(i) => (1u8, i).hash(&mut h),
        Val::Double(d) if d.is_finite() => (2u8, d.to_bits()).hash(&mut h),
        Val::Bool(b) => (3u8, b).hash(&mut h),
        Val::Double(_) | Val::Other => return,
    }
    let hash = h.finish();
    if acc.values.contains_key(&hash) {
        return;
    }
    if acc.values.len() >= MAX_VALUES_PER_KEY {
        acc.high = true;
        return;
    }
    let value = match v {
        Val::Str(s) => CatalogValue::String(s.to_string()),
        Val::Int(i) => CatalogValue::Int(*i),
        Val::Double(d) => CatalogValue::Double(*d),
        Val::Bool(b) => CatalogValue::Bool(*b),
        Val::Other => return,
    };
    acc.values.insert(hash, value);
}

/// Accumulates a catalog span by span (block writer, head scan).
#[derive(Default)]
pub struct CatalogBuilder {
    span: ScopeAcc,
    resource: ScopeAcc,
    resources_seen: HashSet<usize>,
}

impl CatalogBuilder {
    /// Starts a new batch of spans: addresses of earlier resources may have been reused.
    pub fn new_push(&mut self) {
        self.resources_seen.clear();
    }

    pub fn add_span_attributes(&mut self, list: &[KeyValue]) {
        self.span.add(list);
    }

    /// Adds a resource's attributes once per distinct resource (by address: spans of one batch
    /// share their resource).
    pub fn add_resource(
        &mut self,
        resource: &std::sync::Arc<clew_model::otlp::resource::Resource>,
    ) {
        if self
            .resources_seen
            .insert(std::sync::Arc::as_ptr(resource) as usize)
        {
            self.resource.add(&resource.attributes);
        }
    }

    pub fn finish(self) -> TagCatalog {
        let (span, t1) = self.span.finish();
        let (resource, t2) = self.resource.finish();
        TagCatalog {
            span,
            resource,
            truncated: t1 || t2,
        }
    }
}

/// Sorted, distinct values as the read API returns them, at most `limit` (0: all).
pub fn to_tag_values(values: BTreeSet<CatalogValue>, limit: usize) -> Vec<TagValue> {
    let take = if limit == 0 { usize::MAX } else { limit };
    values
        .iter()
        .take(take)
        .map(CatalogValue::to_tag_value)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::attrs::{kv_int, kv_str};
    use clew_model::otlp::common::AnyValue;

    #[test]
    fn caps_values_and_marks_high_cardinality() {
        let mut b = CatalogBuilder::default();
        for i in 0..(MAX_VALUES_PER_KEY + 500) {
            b.add_span_attributes(&[kv_int("n", i as i64), kv_str("low", "a")]);
        }
        b.add_span_attributes(&[kv_str("long", "x".repeat(MAX_VALUE_LEN + 1))]);
        b.add_span_attributes(&[KeyValue {
            key: "bytes".into(),
            value: Some(AnyValue {
                value: Some(clew_model::otlp::common::any_value::Value::BytesValue(
                    vec![1],
                )),
            }),
            ..Default::default()
        }]);
        b.add_span_attributes(&[kv_str("low", "b"), kv_str("low", "a")]);
        let c = b.finish();
        let n = &c.span["n"];
        assert!(n.high_cardinality);
        assert_eq!(n.values.len(), MAX_VALUES_PER_KEY);
        assert_eq!(n.types, TYPE_INT);
        let low = &c.span["low"];
        assert!(!low.high_cardinality);
        assert_eq!(
            low.values,
            vec![
                CatalogValue::String("a".into()),
                CatalogValue::String("b".into())
            ]
        );
        assert!(c.span["long"].high_cardinality && c.span["long"].values.is_empty());
        assert_eq!(c.span["bytes"].types, TYPE_OTHER);
        assert!(c.span["bytes"].values.is_empty());
        assert!(!c.truncated);
        assert_eq!(c.span_types("nope"), 0);
        assert!(!c.may_have(AttrScope::Resource, "n"));
        assert!(c.may_have(AttrScope::Any, "n"));
    }

    #[test]
    fn caps_keys_and_then_answers_not_sure() {
        let mut b = CatalogBuilder::default();
        for i in 0..(MAX_KEYS_PER_SCOPE + 10) {
            b.add_span_attributes(&[kv_str(format!("k{i}"), "v")]);
        }
        let c = b.finish();
        assert!(c.truncated);
        assert_eq!(c.span.len(), MAX_KEYS_PER_SCOPE);
        // A key it could not record may be anywhere, of any type.
        assert!(c.may_have(AttrScope::Resource, "unrecorded"));
        assert_eq!(c.span_types("unrecorded"), u8::MAX);
    }

    #[test]
    fn values_sort_by_type_then_value_and_round_trip_as_json() {
        let mut vals = vec![
            CatalogValue::Bool(false),
            CatalogValue::Double(-1.5),
            CatalogValue::Int(3),
            CatalogValue::Double(2.0),
            CatalogValue::String("b".into()),
            CatalogValue::Int(-7),
            CatalogValue::String("a".into()),
            CatalogValue::Double(-3.0),
        ];
        vals.sort();
        assert_eq!(
            vals,
            vec![
                CatalogValue::String("a".into()),
                CatalogValue::String("b".into()),
                CatalogValue::Int(-7),
                CatalogValue::Int(3),
                CatalogValue::Double(-3.0),
                CatalogValue::Double(-1.5),
                CatalogValue::Double(2.0),
                CatalogValue::Bool(false),
            ]
        );
        let mut c = TagCatalog::default();
        c.span.insert(
            "k".into(),
            KeyValues {
                values: vals.clone(),
                high_cardinality: true,
                types: TYPE_STR | TYPE_INT | TYPE_DOUBLE | TYPE_BOOL,
            },
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TagCatalog>(&json).unwrap(), c);
        // A catalog written without `types` (or anything optional) still reads.
        let old: TagCatalog =
            serde_json::from_str(r#"{"span":{"k":{"values":[]}},"resource":{}}"#).unwrap();
        assert_eq!(old.span_types("k"), u8::MAX);
    }
}
