//! What a compaction merge may allocate: the memory limiter's headroom.
//!
//! A merge slice decodes up to `merge_slice_spans` spans into objects (about
//! [`DECODED_SPAN_BYTES`] each), on top of whatever the head holds. Under a `memory_limiter` whose
//! hard limit is small next to a slice, a merge that starts while the head sits near the soft
//! limit goes over the hard limit: measured with a 512 MiB limit and 10× overload (BENCHMARKS.md,
//! "Overload and the memory limiter"), the first compaction tick took RSS from 398 to 578 MiB.
//! Refusing data cannot prevent that, since the merge reads blocks, not requests. So the server
//! hands the store a [`MemoryBudget`] (the limiter's latest reading against its soft limit: planned
//! work that crossed it would make the limiter refuse ingest), and
//! the store sizes each merge's slices to half the room left once the merge's output (held in
//! memory until it is written, [`OUTPUT_SPAN_BYTES`] a span) is set aside, re-sizes every slice
//! to the room at hand (it shrinks as the output grows), waits between slices while not even a
//! useful slice fits, and defers a merge that cannot get one at the start. Without a budget (no
//! limiter configured) merges run as before.

use std::time::Duration;

/// Memory left for transient work, from the latest reading of the process's resident memory.
pub trait MemoryBudget: Send + Sync {
    /// Bytes that may still be allocated before the limit; `None`: no limit known (no reading
    /// yet, or no limit), so nothing is held back.
    fn room_bytes(&self) -> Option<u64>;
}

/// What one decoded span takes in a merge slice (measured: a 100k-span slice peaks near 200 MiB).
pub const DECODED_SPAN_BYTES: u64 = 2048;

/// Below this a slice is not worth reading: each slice reads the overlapping row groups of every
/// input, so tiny slices multiply the reads. A merge that cannot get this much waits or is
/// deferred to a later round.
pub const MIN_SLICE_SPANS: u64 = 10_000;

/// How long a merge waits between slices for memory before it gives up (and tries again next
/// round). Long enough to ride out a head flush; short enough not to hold the compaction lock
/// through a long overload.
pub const SLICE_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Spans per slice for a merge that may use `room` bytes: half the room (the per-span figure is
/// an average, and the head keeps growing while a slice is decoded), at most `configured`.
/// `None`: not even [`MIN_SLICE_SPANS`] fit; defer the merge.
pub fn slice_spans(configured: u64, room: Option<u64>) -> Option<u64> {
    let configured = configured.max(1);
    let Some(room) = room else {
        return Some(configured);
    };
    let fits = room / 2 / DECODED_SPAN_BYTES;
    if fits < MIN_SLICE_SPANS.min(configured) {
        None
    } else {
        Some(fits.min(configured))
    }
}

/// What the merge's output takes in memory until it is written (the encoded Parquet file, the
/// bloom filter and the attribute index are built in memory): compacted blocks take ~36 bytes a
/// span on disk; 64 leaves room for the writer's open row group and the indexes.
pub const OUTPUT_SPAN_BYTES: u64 = 64;

/// The memory a merge of `total` spans holds for its output by the end.
pub fn output_bytes(total: u64) -> u64 {
    total.saturating_mul(OUTPUT_SPAN_BYTES)
}

/// The last trace-id key (inclusive) of a slice that starts at `lo` and should hold about `spans`
/// of a merge's `total`: trace ids are random, so spans spread evenly over the key space.
/// `u64::MAX` ends the merge.
pub fn slice_end(lo: u64, spans: u64, total: u64) -> u64 {
    let width = ((u128::from(spans.max(1))) << 64) / u128::from(total.max(1));
    let hi = u128::from(lo) + width.max(1) - 1;
    u64::try_from(hi).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn without_a_budget_slices_keep_their_configured_size() {
        assert_eq!(slice_spans(100_000, None), Some(100_000));
    }

    #[test]
    fn slices_shrink_to_half_the_room() {
        // 114 MiB of room → 57 MiB → 29,184 spans.
        assert_eq!(slice_spans(100_000, Some(114 * MIB)), Some(29_184));
        // Plenty of room: the configured size.
        assert_eq!(slice_spans(100_000, Some(4096 * MIB)), Some(100_000));
    }

    #[test]
    fn slices_cover_the_key_space_once_in_proportion_to_their_spans() {
        // A merge small enough for one slice: one range, the whole space.
        assert_eq!(slice_end(0, 100_000, 90), u64::MAX);
        assert_eq!(slice_end(0, 90, 90), u64::MAX);
        // Four equal slices.
        let quarter = slice_end(0, 25, 100);
        assert_eq!(quarter, u64::MAX / 4);
        let mut lo = 0u64;
        let mut n = 0;
        loop {
            let hi = slice_end(lo, 25, 100);
            assert!(hi >= lo);
            n += 1;
            if hi == u64::MAX {
                break;
            }
            lo = hi + 1;
        }
        assert_eq!(n, 4);
        // Slices of different sizes still end at the end of the space.
        let mut lo = 0u64;
        for spans in [10, 40, 5, 1_000] {
            let hi = slice_end(lo, spans, 100);
            if hi == u64::MAX {
                lo = u64::MAX;
                break;
            }
            lo = hi + 1;
        }
        assert_eq!(lo, u64::MAX);
        assert_eq!(output_bytes(1_000_000), 64_000_000);
    }

    #[test]
    fn a_merge_without_room_for_a_useful_slice_is_deferred() {
        // 10,000 spans need 2 × 20 MB of room.
        assert_eq!(slice_spans(100_000, Some(39 * MIB)), None);
        assert_eq!(slice_spans(100_000, Some(0)), None);
        // A configuration with small slices is not held to the minimum.
        assert_eq!(slice_spans(500, Some(4 * MIB)), Some(500));
    }
}
