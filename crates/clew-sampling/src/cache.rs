//! Decision caches, so late spans follow their trace's original decision: an exact bounded FIFO
//! for kept traces (with the deciding policy), and a rotating Bloom filter for dropped ones (two
//! generations; a false positive drops a late span of an unseen trace — ~0.05 % at the default
//! sizing — and can never drop a span of a trace that was kept, because the exact cache is checked
//! first).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A trace's identity in the sampler: trace id plus a hash of the tenant (the same trace id in two
/// tenants is two traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct TraceKey {
    pub id: u128,
    pub tenant: u64,
}

impl TraceKey {
    pub fn new(trace_id: &[u8; 16], tenant: &str) -> Self {
        Self {
            id: u128::from_be_bytes(*trace_id),
            tenant: hash_str(tenant),
        }
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.id.to_be_bytes()
    }

    /// A well-mixed 64-bit hash of the key (also picks the partition).
    pub fn hash64(&self) -> u64 {
        mix((self.id as u64) ^ mix((self.id >> 64) as u64 ^ self.tenant))
    }
}

/// FNV-1a 64 of a string: stable across processes (partition handoff needs that).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finalizer.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Kept traces: exact, bounded, oldest evicted first.
pub struct KeptCache {
    cap: usize,
    map: HashMap<TraceKey, Arc<str>>,
    order: VecDeque<TraceKey>,
}

impl KeptCache {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, k: &TraceKey) -> Option<&Arc<str>> {
        self.map.get(k)
    }

    pub fn insert(&mut self, k: TraceKey, policy: Arc<str>) {
        if self.map.insert(k, policy).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries (oldest first) matching `pred`, removed.
    pub fn extract(&mut self, pred: impl Fn(&TraceKey) -> bool) -> Vec<(TraceKey, String)> {
        let mut out = Vec::new();
        let map = &mut self.map;
        self.order.retain(|k| {
            if pred(k) {
                if let Some(p) = map.remove(k) {
                    out.push((*k, p.to_string()));
                }
                false
            } else {
                true
            }
        });
        out
    }
}

/// A Bloom filter generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bloom {
    bits: Vec<u64>,
    probes: u32,
    items: usize,
}

impl Bloom {
    /// `bits_per_item` 16 and 11 probes give ≈ 0.05 % false positives at capacity.
    pub fn new(capacity: usize) -> Self {
        let nbits = (capacity.max(64) * 16).next_power_of_two();
        Self {
            bits: vec![0; nbits / 64],
            probes: 11,
            items: 0,
        }
    }

    fn positions(&self, h: u64) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bits.len() * 64) as u64;
        let h1 = h;
        let h2 = mix(h) | 1;
        (0..self.probes as u64).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    pub fn insert(&mut self, h: u64) {
        let pos: Vec<usize> = self.positions(h).collect();
        for p in pos {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.items += 1;
    }

    pub fn contains(&self, h: u64) -> bool {
        self.positions(h)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Two generations: when the current one reaches capacity it becomes the previous one and a
/// fresh one starts, so the filter remembers between `capacity` and `2 × capacity` recent traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatingBloom {
    capacity: usize,
    current: Bloom,
    previous: Option<Bloom>,
}

impl RotatingBloom {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(64),
            current: Bloom::new(capacity),
            previous: None,
        }
    }

    pub fn insert(&mut self, h: u64) {
        if self.current.items >= self.capacity {
            let fresh = Bloom::new(self.capacity);
            self.previous = Some(std::mem::replace(&mut self.current, fresh));
        }
        self.current.insert(h);
    }

    pub fn contains(&self, h: u64) -> bool {
        self.current.contains(h) || self.previous.as_ref().is_some_and(|p| p.contains(h))
    }

    pub fn bytes(&self) -> usize {
        self.current.bytes() + self.previous.as_ref().map_or(0, Bloom::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_cache_is_bounded_fifo() {
        let mut c = KeptCache::new(2);
        let k = |i: u128| TraceKey { id: i, tenant: 0 };
        c.insert(k(1), "a".into());
        c.insert(k(2), "b".into());
        c.insert(k(3), "c".into());
        assert!(c.get(&k(1)).is_none());
        assert_eq!(c.get(&k(3)).map(|s| &**s), Some("c"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn rotating_bloom_remembers_recent_and_has_few_false_positives() {
        let mut b = RotatingBloom::new(10_000);
        for i in 0..10_000u64 {
            b.insert(mix(i));
        }
        assert!(
            (0..10_000u64).all(|i| b.contains(mix(i))),
            "no false negatives"
        );
        let fp = (1_000_000..1_100_000u64)
            .filter(|i| b.contains(mix(*i)))
            .count();
        assert!(fp < 200, "false positives {fp} / 100000");
        // After two more generations the oldest are forgotten.
        for i in 10_000..30_001u64 {
            b.insert(mix(i));
        }
        assert!((20_000..30_000u64).all(|i| b.contains(mix(i))));
        let old = (0..10_000u64).filter(|i| b.contains(mix(*i))).count();
        assert!(old < 100, "{old}");
    }
}
