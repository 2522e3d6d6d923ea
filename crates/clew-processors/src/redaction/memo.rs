//! Per-batch memos: what the rules decided for a key or a value, remembered for the rest of the
//! batch.
//!
//! Keys and most values repeat across a batch's spans (`http.request.method=GET`, the same
//! `db.query.text` with placeholders, the same span names), and the rules are pure functions of
//! the text, so a second look is a hash and a comparison instead of a scan. The memo is
//! direct-mapped: a slot holds the last text that hashed to it, a collision just recomputes. The
//! texts live in one arena per batch; when it is full, nothing more is remembered. Memory per
//! batch is bounded and a batch of distinct values costs what it did without the memo, plus one
//! hash per value.
//!
//! The hash is `ahash`'s with random per-process keys: texts come from clients, and a chosen set
//! of colliding texts could only force the recomputation the memo saves.

use std::sync::OnceLock;

/// Slots per memo (a power of two).
const SLOTS: usize = 1024;
/// Texts longer than this are not remembered (rare repeats; they would fill the arena).
pub(crate) const MAX_TEXT: usize = 512;
/// Arena bytes per memo and batch.
const ARENA_MAX: usize = 256 * 1024;

fn hasher() -> &'static ahash::RandomState {
    static STATE: OnceLock<ahash::RandomState> = OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new)
}

#[derive(Clone, Copy)]
struct Slot<V> {
    hash: u64,
    start: u32,
    len: u32,
    /// Which kind of text this is (e.g. a SQL key's value or another): part of the identity.
    kind: u8,
    value: V,
}

/// A direct-mapped map from (kind, text) to a small `Copy` value, for one batch.
pub(crate) struct Memo<V: Copy> {
    slots: Vec<Option<Slot<V>>>,
    arena: String,
}

impl<V: Copy> Memo<V> {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            arena: String::new(),
        }
    }

    fn hash(kind: u8, text: &str) -> u64 {
        hasher().hash_one((kind, text))
    }

    fn slot_index(hash: u64) -> usize {
        // The high bits: ahash's low bits are as good, but this keeps `hash` usable as a tag.
        (hash >> 54) as usize & (SLOTS - 1)
    }

    /// The remembered value of `(kind, text)`, if any.
    pub fn get(&self, kind: u8, text: &str) -> Option<V> {
        if self.slots.is_empty() || text.len() > MAX_TEXT {
            return None;
        }
        let hash = Self::hash(kind, text);
        let slot = self.slots.get(Self::slot_index(hash))?.as_ref()?;
        if slot.hash != hash || slot.kind != kind || slot.len as usize != text.len() {
            return None;
        }
        let start = slot.start as usize;
        let stored = self.arena.get(start..start + slot.len as usize)?;
        (stored == text).then_some(slot.value)
    }

    /// Remembers `(kind, text) → value` (silently not, when the text is too long or the
    /// arena is full).
    pub fn insert(&mut self, kind: u8, text: &str, value: V) {
        if text.len() > MAX_TEXT || self.arena.len() + text.len() > ARENA_MAX {
            return;
        }
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let hash = Self::hash(kind, text);
        let start = self.arena.len();
        self.arena.push_str(text);
        if let Some(slot) = self.slots.get_mut(Self::slot_index(hash)) {
            *slot = Some(Slot {
                hash,
                // Both fit: the arena is bounded by ARENA_MAX.
                start: start as u32,
                len: text.len() as u32,
                kind,
                value,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_kind_and_exact_text() {
        let mut m: Memo<u8> = Memo::new();
        assert_eq!(m.get(0, "GET"), None);
        m.insert(0, "GET", 7);
        assert_eq!(m.get(0, "GET"), Some(7));
        assert_eq!(m.get(1, "GET"), None, "another kind is another entry");
        assert_eq!(m.get(0, "GE"), None);
        assert_eq!(m.get(0, "GETX"), None);
        m.insert(1, "GET", 9);
        assert_eq!(m.get(1, "GET"), Some(9));
        m.insert(0, "", 3);
        assert_eq!(m.get(0, ""), Some(3));
    }

    #[test]
    fn collisions_and_limits_only_forget() {
        let mut m: Memo<usize> = Memo::new();
        let texts: Vec<String> = (0..5000).map(|i| format!("value-{i}")).collect();
        for (i, t) in texts.iter().enumerate() {
            m.insert(0, t, i);
        }
        // Every answer is either nothing or the value inserted for exactly that text.
        let mut hits = 0;
        for (i, t) in texts.iter().enumerate() {
            if let Some(v) = m.get(0, t) {
                assert_eq!(v, i);
                hits += 1;
            }
        }
        assert!(hits > 0 && hits <= SLOTS, "{hits}");
        let long = "x".repeat(MAX_TEXT + 1);
        m.insert(0, &long, 1);
        assert_eq!(m.get(0, &long), None);
        // A full arena stops remembering; lookups still answer correctly.
        let mut full: Memo<u8> = Memo::new();
        let chunk = "y".repeat(MAX_TEXT);
        for i in 0..(ARENA_MAX / MAX_TEXT + 4) {
            full.insert(0, &format!("{i}{chunk}")[..MAX_TEXT], 1);
        }
        assert!(full.arena.len() <= ARENA_MAX);
        full.insert(0, "late", 2);
        assert_eq!(full.get(0, "late"), None);
    }
}
