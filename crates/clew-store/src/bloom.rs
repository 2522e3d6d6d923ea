//! A trace-id bloom filter per block (~10 bits per trace, 7 probes: about 1% false positives), small
//! enough to keep every block's filter in memory.
//!
//! File format: `b"CLBF"`, version u8 = 1, probes u8, bit count u64 LE, then the bit words (u64 LE).

use clew_model::TraceId;

const MAGIC: &[u8; 4] = b"CLBF";
const PROBES: u8 = 7;
const BITS_PER_ITEM: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    probes: u8,
    bits: u64,
    words: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bloom filter file is malformed: {0}")]
pub struct BloomError(&'static str);

impl Bloom {
    pub fn with_capacity(items: usize) -> Self {
        let bits = Self::bits_for(items as u64);
        Self {
            probes: PROBES,
            bits,
            words: vec![0; (bits / 64) as usize],
        }
    }

    /// The size in bits [`Bloom::with_capacity`] gives a filter for `items` (no allocation: a
    /// damaged `meta.json` may claim any count).
    pub fn bits_for(items: u64) -> u64 {
        items
            .max(64)
            .saturating_mul(BITS_PER_ITEM as u64)
            .div_ceil(64)
            .saturating_mul(64)
    }

    /// A filter of `2^log2_bits` bits (at least 64), for [`Bloom::fold_to`]: with a power-of-two
    /// size, a position modulo half the size is the position the half-size filter would use.
    pub fn with_bits_pow2(log2_bits: u32) -> Self {
        let bits = 1u64 << log2_bits.clamp(6, 40);
        Self {
            probes: PROBES,
            bits,
            words: vec![0; (bits / 64) as usize],
        }
    }

    /// Double hashing from one 64-bit mix of the whole id, so ids sharing a half still spread.
    fn positions(&self, id: &TraceId) -> impl Iterator<Item = u64> + '_ {
        self.positions_of(mix(id.low_u64() ^ mix(id.high_u64())))
    }

    fn positions_of(&self, h1: u64) -> impl Iterator<Item = u64> + '_ {
        let h2 = mix(h1 ^ 0x632b_e59b_d9b4_e019) | 1;
        (0..self.probes as u64).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.bits)
    }

    fn set(&mut self, h1: u64) {
        let (bits, probes) = (self.bits, self.probes as u64);
        let h2 = mix(h1 ^ 0x632b_e59b_d9b4_e019) | 1;
        for i in 0..probes {
            let p = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
            self.words[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    fn test(&self, h1: u64) -> bool {
        self.positions_of(h1)
            .all(|p| self.words[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    pub fn insert(&mut self, id: &TraceId) {
        self.set(mix(id.low_u64() ^ mix(id.high_u64())));
    }

    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.positions(id)
            .all(|p| self.words[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    /// Inserts an item given as a 64-bit hash (which must itself be well spread; it is mixed once
    /// more).
    pub fn insert_hash(&mut self, h: u64) {
        self.set(mix(h));
    }

    pub fn may_contain_hash(&self, h: u64) -> bool {
        self.test(mix(h))
    }

    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Halves the filter until it has at most `bits` bits (a power of two, ≥ 64), OR-ing the
    /// upper half onto the lower: every item inserted before still tests positive, since for a
    /// power-of-two size `x mod (m/2) = (x mod m) mod (m/2)`. A no-op on other sizes.
    pub fn fold_to(&mut self, bits: u64) {
        if !self.bits.is_power_of_two() || !bits.is_power_of_two() || bits < 64 {
            return;
        }
        while self.bits > bits {
            let half = self.words.len() / 2;
            let (lo, hi) = self.words.split_at_mut(half);
            for (l, h) in lo.iter_mut().zip(hi.iter()) {
                *l |= *h;
            }
            self.words.truncate(half);
            self.bits /= 2;
        }
    }

    /// Share of bits set, 0.0–1.0 (how saturated the filter is).
    pub fn fill_ratio(&self) -> f64 {
        let ones: u64 = self.words.iter().map(|w| w.count_ones() as u64).sum();
        ones as f64 / self.bits as f64
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.words.len() * 8);
        out.extend_from_slice(MAGIC);
        out.push(1);
        out.push(self.probes);
        out.extend_from_slice(&self.bits.to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, BloomError> {
        if b.len() < 14 || &b[..4] != MAGIC {
            return Err(BloomError("bad header"));
        }
        if b[4] != 1 {
            return Err(BloomError("unknown version"));
        }
        let probes = b[5];
        let bits = u64::from_le_bytes(b[6..14].try_into().map_err(|_| BloomError("bad header"))?);
        if probes == 0 || bits == 0 || bits % 64 != 0 || (b.len() - 14) as u64 != bits / 8 {
            return Err(BloomError("size does not match header"));
        }
        let words = b[14..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Self {
            probes,
            bits,
            words,
        })
    }

    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {

    #[test]
    fn bits_for_is_the_size_with_capacity_gives_without_allocating() {
        for n in [0, 1, 63, 64, 65, 1000, 123_457] {
            assert_eq!(
                Bloom::bits_for(n as u64),
                Bloom::with_capacity(n).bits(),
                "{n}"
            );
        }
        // A count from a damaged meta.json: a number, never an allocation or an overflow.
        assert!(Bloom::bits_for(u64::MAX) > 1 << 60);
    }
    use super::*;

    fn id(i: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&i.to_be_bytes());
        b[0] = 1;
        TraceId(b)
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::with_capacity(10_000);
        for i in 0..10_000 {
            b.insert(&id(i));
        }
        assert!((0..10_000).all(|i| b.may_contain(&id(i))));
        let fp = (10_000..110_000).filter(|&i| b.may_contain(&id(i))).count();
        assert!(fp < 3_000, "false positive rate too high: {fp}/100000");
    }

    #[test]
    fn folding_keeps_every_item() {
        let mut b = Bloom::with_bits_pow2(20);
        let items: Vec<u64> = (0..2_000u64).map(|i| mix(i * 7 + 1)).collect();
        for &h in &items {
            b.insert_hash(h);
        }
        b.fold_to(1 << 15);
        assert_eq!(b.bits(), 1 << 15);
        assert!(items.iter().all(|&h| b.may_contain_hash(h)));
        let fp = (0..100_000u64)
            .filter(|&i| b.may_contain_hash(mix(i * 7 + 2) ^ 0x5555))
            .count();
        // 2000 items in 32768 bits (16 bits per item): well under 1 % in theory.
        assert!(
            fp < 1_000,
            "false positive rate too high after folding: {fp}/100000"
        );
        let back = Bloom::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn serialization_round_trip_and_garbage() {
        let mut b = Bloom::with_capacity(10);
        b.insert(&id(3));
        let back = Bloom::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back, b);
        assert!(Bloom::from_bytes(b"junk").is_err());
        let bytes = b.to_bytes();
        assert!(Bloom::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}
