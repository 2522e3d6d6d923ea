//! Which blocks of one tenant-day a compaction round merges.
//!
//! Merges take **neighbours in time**: blocks are ordered by their newest span start, and a merge
//! takes a run of consecutive blocks that are each under the ceiling and together at most the
//! ceiling. Outputs therefore cover successive time ranges, like the flushes they came from, and
//! a `limit`-N search — which reads blocks newest first and stops once no older block can change
//! its answer (`Store::search_blocks`) — reads the newest block or two, whose size the ceiling
//! bounds. Merging by size alone ("smallest first") made every compacted block span the whole
//! day, so a search read all of them. A full block is a barrier: blocks on either side of it are
//! not neighbours.
//!
//! Among the runs allowed, the longest wins (the most blocks gone in one rewrite: freshly flushed
//! small blocks merge together before a large block is rewritten to absorb one more), then the
//! one with the fewest spans to rewrite, then the older one.

/// What the plan needs to know of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanBlock {
    pub min_start: u64,
    pub max_start: u64,
    pub spans: u64,
}

/// Indices (into `blocks`) of the blocks to merge this round, oldest first, or `None` when the
/// group has fewer than `min_blocks` blocks under the ceiling or no two neighbours fit under it.
pub(crate) fn plan_merge(
    blocks: &[PlanBlock],
    min_blocks: usize,
    max_block_spans: u64,
) -> Option<Vec<usize>> {
    let small = |b: &PlanBlock| b.spans < max_block_spans;
    if blocks.iter().filter(|b| small(b)).count() < min_blocks.max(2) {
        return None;
    }
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| (blocks[i].max_start, blocks[i].min_start, i));

    // Best run so far: (first position in `order`, length, spans).
    let mut best: Option<(usize, usize, u64)> = None;
    for first in 0..order.len() {
        let mut total = 0u64;
        for (len, &i) in order[first..].iter().enumerate().map(|(k, i)| (k + 1, i)) {
            let b = &blocks[i];
            if !small(b) || total.saturating_add(b.spans) > max_block_spans {
                break;
            }
            total += b.spans;
            if len < 2 {
                continue;
            }
            // Strictly better only: on a tie the older run (found first) stays.
            let better = match best {
                None => true,
                Some((_, blen, btotal)) => len > blen || (len == blen && total < btotal),
            };
            if better {
                best = Some((first, len, total));
            }
        }
    }
    let (first, len, _) = best?;
    Some(order[first..first + len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks at successive time ranges (one second each), with these span counts.
    fn successive(counts: &[u64]) -> Vec<PlanBlock> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &spans)| PlanBlock {
                min_start: i as u64 * 1_000,
                max_start: i as u64 * 1_000 + 999,
                spans,
            })
            .collect()
    }

    #[test]
    fn too_few_blocks_under_the_ceiling_wait() {
        assert_eq!(plan_merge(&successive(&[10, 10, 10]), 4, 100), None);
        assert_eq!(plan_merge(&successive(&[100, 100, 10, 10]), 4, 100), None);
        assert_eq!(plan_merge(&successive(&[10]), 1, 100), None);
    }

    #[test]
    fn merges_neighbours_in_time_not_the_smallest_anywhere() {
        // Smallest first would merge the 5 (oldest) with the 6 (newest) and make one block that
        // spans everything; neighbours only: the two 40s in the middle are the best run.
        let blocks = successive(&[5, 90, 40, 40, 95, 6]);
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![2, 3]));
    }

    #[test]
    fn a_full_block_is_a_barrier() {
        let blocks = successive(&[30, 100, 30]);
        assert_eq!(plan_merge(&blocks, 2, 100), None);
        let blocks = successive(&[30, 100, 30, 30]);
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![2, 3]));
    }

    #[test]
    fn prefers_many_small_blocks_to_rewriting_a_large_one() {
        // 80+10+10 removes two blocks for 100 spans; 10+10+10+10 removes three for 40.
        let blocks = successive(&[80, 10, 10, 10, 10]);
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![1, 2, 3, 4]));
        // One rewrite of all three rather than two rounds.
        let blocks = successive(&[10, 1, 1]);
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![0, 1, 2]));
        // The run stops at the ceiling.
        let blocks = successive(&[30, 30, 30, 30, 30]);
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![0, 1, 2]));
    }

    #[test]
    fn order_is_by_time_not_by_position() {
        let mut blocks = successive(&[10, 10, 90, 90]);
        blocks.swap(0, 3); // positions no longer follow time
                           // The two oldest (and smallest) blocks, oldest first: now at positions 3 and 1.
        assert_eq!(plan_merge(&blocks, 2, 100), Some(vec![3, 1]));
    }

    #[test]
    fn repeated_rounds_leave_blocks_that_cover_successive_ranges() {
        // Twelve flushes of 30 spans, ceiling 100: rounds merge until nothing fits, and no two
        // resulting blocks overlap in time.
        let mut blocks = successive(&[30; 12]);
        while let Some(plan) = plan_merge(&blocks, 2, 100) {
            let merged = PlanBlock {
                min_start: plan.iter().map(|&i| blocks[i].min_start).min().unwrap_or(0),
                max_start: plan.iter().map(|&i| blocks[i].max_start).max().unwrap_or(0),
                spans: plan.iter().map(|&i| blocks[i].spans).sum(),
            };
            let mut rest: Vec<PlanBlock> = blocks
                .iter()
                .enumerate()
                .filter(|(i, _)| !plan.contains(i))
                .map(|(_, b)| *b)
                .collect();
            rest.push(merged);
            blocks = rest;
        }
        blocks.sort_by_key(|b| b.min_start);
        assert_eq!(
            blocks.iter().map(|b| b.spans).collect::<Vec<_>>(),
            vec![90, 90, 90, 90]
        );
        for w in blocks.windows(2) {
            assert!(w[0].max_start < w[1].min_start, "{w:?}");
        }
    }
}
