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
}

impl Expires {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn get(&self, idx: u32) -> Option<u64> {
        self.pos.get(&idx).map(|&p| self.items[p as usize].1)
    }

    pub(crate) fn set(&mut self, idx: u32, at: u64) {
        match self.pos.get(&idx) {
            Some(&p) => self.items[p as usize].1 = at,
            None => {
                self.pos.insert(idx, self.items.len() as u32);
                self.items.push((idx, at));
            }
        }
    }

    pub(crate) fn remove(&mut self, idx: u32) -> Option<u64> {
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
}
