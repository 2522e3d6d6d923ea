//! Handing freed heap pages back to the OS after the store's large transient allocations.
//!
//! A compaction slice decodes up to `merge_slice_spans` spans into objects (about 2 KiB each) and
//! a head flush frees a whole generation at once. glibc keeps freed memory in its per-thread
//! arenas, so without a trim the resident size stays at the high-water mark of the largest merge
//! for the rest of the process's life: measured on the soak's data dir (2026-12-01), one merge of
//! 746,500 spans peaked at 783 MiB and left 600 MiB resident while idle; `malloc_trim(0)` on the
//! idle process brought it to 51 MiB. That, not WAL replay, was the "RSS step after each restart"
//! of the soak: compaction runs at once after a start-up and merges every block written so far.

use std::time::Instant;

/// Returns free heap pages to the OS (glibc only; a no-op elsewhere). Cheap when there is little
/// to return; it walks the arenas, so it is called after rare, large frees, not per request.
pub(crate) fn release_free_heap(after: &'static str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = Instant::now();
        // SAFETY: malloc_trim only releases free memory held by the allocator; it takes no
        // pointers and has no preconditions.
        let released = unsafe { libc::malloc_trim(0) } != 0;
        tracing::debug!(
            after,
            released,
            micros = started.elapsed().as_micros() as u64,
            "returned free heap pages to the OS"
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (after, Instant::now());
    }
}
