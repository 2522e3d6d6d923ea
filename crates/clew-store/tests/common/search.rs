//! What the search tests share: a seeded generator (splitmix64, so a failing case reproduces from
//! its seed), OTLP attribute shorthands, and the reference ordering of search answers (newest
//! first, ties by trace id, cut to the limit).
#![allow(dead_code)]

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::TraceId;
use clew_store::TraceHit;
use std::collections::HashMap;

pub const BASE: u64 = 1_750_000_000_000_000_000;
pub const SECOND: u64 = 1_000_000_000;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

pub fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub fn s(x: &str) -> Value {
    Value::StringValue(x.into())
}

/// Trace hits newest first (ties by trace id), at most `limit`: the order the store answers in.
pub fn ordered(hits: HashMap<TraceId, u64>, limit: usize) -> Vec<TraceHit> {
    let mut out: Vec<TraceHit> = hits
        .into_iter()
        .map(|(trace_id, start_unix_nano)| TraceHit {
            trace_id,
            start_unix_nano,
        })
        .collect();
    out.sort_by(|a, b| {
        b.start_unix_nano
            .cmp(&a.start_unix_nano)
            .then(a.trace_id.cmp(&b.trace_id))
    });
    out.truncate(limit);
    out
}

/// Adds `from`'s hits to `into`, keeping each trace's newest start.
pub fn merge(into: &mut HashMap<TraceId, u64>, from: HashMap<TraceId, u64>) {
    for (id, t) in from {
        let e = into.entry(id).or_insert(0);
        *e = (*e).max(t);
    }
}
