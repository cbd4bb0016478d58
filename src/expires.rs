//! The TTL side table of a shard: keys without a TTL pay nothing here.
//!
//! A dense vector of `(entry index, expire_at_ms)` gives active expiry and the `volatile-*`
//! policies a random key with a TTL in O(1); a map from entry index to position makes
//! removal O(1). The entry's metadata carries a flag, so lookups of keys without a TTL
//! never touch this table.

use crate::table::Moved;
use std::collections::HashMap;

#[derive(Default)]
pub(crate) struct Expires {
    items: Vec<(u32, u64)>,
    pos: HashMap<u32, u32, ahash::RandomState>,
    /// Entries whose expiry is an idle deadline (`time_to_idle`) that reads move
    /// forward, with their hard deadline (`u64::MAX`: none), which the idle deadline
    /// never passes. Empty unless the cache has a `time_to_idle`.
    idle: HashMap<u32, u64, ahash::RandomState>,
}

impl Expires {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn get(&self, idx: u32) -> Option<u64> {
        self.pos.get(&idx).map(|&p| self.items[p as usize].1)
    }

    /// Sets a hard deadline (the entry stops being idle-governed until
    /// [`slide`](Self::slide) is called again).
    pub(crate) fn set(&mut self, idx: u32, at: u64) {
        if !self.idle.is_empty() {
            self.idle.remove(&idx);
        }
        self.set_at(idx, at);
    }

    fn set_at(&mut self, idx: u32, at: u64) {
        match self.pos.get(&idx) {
            Some(&p) => self.items[p as usize].1 = at,
            None => {
                self.pos.insert(idx, self.items.len() as u32);
                self.items.push((idx, at));
            }
        }
    }

    pub(crate) fn remove(&mut self, idx: u32) -> Option<u64> {
        if !self.idle.is_empty() {
            self.idle.remove(&idx);
        }
        let p = self.pos.remove(&idx)? as usize;
        let (_, at) = self.items.swap_remove(p);
        if let Some(&(moved_idx, _)) = self.items.get(p) {
            self.pos.insert(moved_idx, p as u32);
        }
        Some(at)
    }

    /// The table moved entry `from` to `to` (whose previous entry is gone).
    pub(crate) fn follow(&mut self, moved: Moved) {
        if let Some(p) = self.pos.remove(&moved.from) {
            self.items[p as usize].0 = moved.to;
            self.pos.insert(moved.to, p);
        }
        if let Some(cap) = self.idle.remove(&moved.from) {
            self.idle.insert(moved.to, cap);
        }
    }

    /// Makes entry `idx` idle-governed: its deadline becomes `now + idle_ms`, never
    /// past its hard deadline (the deadline it had, if it was not idle-governed yet).
    pub(crate) fn slide(&mut self, idx: u32, now: u64, idle_ms: u64) {
        let cap = match self.idle.get(&idx) {
            Some(&cap) => cap,
            None => self.get(idx).unwrap_or(u64::MAX),
        };
        self.idle.insert(idx, cap);
        self.set_at(idx, cap.min(now.saturating_add(idle_ms)));
    }

    /// The hard deadline of an idle-governed entry (`u64::MAX`: none).
    pub(crate) fn idle_cap(&self, idx: u32) -> Option<u64> {
        if self.idle.is_empty() {
            return None;
        }
        self.idle.get(&idx).copied()
    }

    /// The deadline that outlives memory: an idle-governed entry's hard deadline, or
    /// the entry's deadline.
    pub(crate) fn hard(&self, idx: u32) -> Option<u64> {
        match self.idle_cap(idx) {
            Some(u64::MAX) => None,
            Some(cap) => Some(cap),
            None => self.get(idx),
        }
    }

    /// A uniformly random `(entry index, expire_at_ms)`.
    pub(crate) fn random(&self, rand: u64) -> Option<(u32, u64)> {
        if self.items.is_empty() {
            None
        } else {
            Some(self.items[crate::shard::below(rand, self.items.len())])
        }
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.pos.clear();
        self.idle.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.items.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_remove_follow() {
        let mut e = Expires::default();
        e.set(1, 100);
        e.set(2, 200);
        e.set(3, 300);
        e.set(2, 250);
        assert_eq!(e.get(2), Some(250));
        assert_eq!(e.remove(1), Some(100));
        assert_eq!(e.get(3), Some(300));
        e.follow(Moved { from: 3, to: 1 });
        assert_eq!(e.get(3), None);
        assert_eq!(e.get(1), Some(300));
        assert_eq!(e.len(), 2);
        assert_eq!(e.remove(9), None);
    }

    #[test]
    fn idle_deadlines_slide_under_the_hard_deadline_and_follow_moves() {
        let mut e = Expires::default();
        e.slide(1, 1_000, 100); // no hard deadline
        assert_eq!((e.get(1), e.hard(1)), (Some(1_100), None));
        e.set(2, 1_150);
        e.slide(2, 1_000, 100);
        assert_eq!((e.get(2), e.hard(2)), (Some(1_100), Some(1_150)));
        e.slide(2, 1_080, 100); // capped by the hard deadline
        assert_eq!(e.get(2), Some(1_150));
        e.follow(Moved { from: 2, to: 0 });
        assert_eq!((e.idle_cap(0), e.idle_cap(2)), (Some(1_150), None));
        e.set(0, 5_000); // an explicit TTL ends idle governance
        assert_eq!((e.idle_cap(0), e.hard(0)), (None, Some(5_000)));
        e.remove(1);
        assert_eq!(e.idle_cap(1), None);
    }
}
