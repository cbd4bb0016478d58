//! Redis's eviction pool: sampled candidates feed a small pool of the best ones seen, and
//! the best of the pool is evicted.

use crate::table::Moved;

/// Redis's `EVPOOL_SIZE`.
pub(crate) const POOL_SIZE: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Candidate {
    idx: u32,
    /// Higher is a better victim (idle time, 255 - LFU counter, or time-to-expiry inverted).
    score: u64,
}

/// The best eviction candidates seen so far, kept across evictions as Redis keeps its
/// `EvictionPoolLRU`. Candidates refer to entries by table index and follow their moves.
///
/// Kept sorted by ascending score in a fixed array, as Redis keeps its pool: once the
/// pool is full of good candidates, most samples are worse than the worst of them and are
/// turned away with one comparison; the best is always last.
pub(crate) struct Pool {
    slots: [Candidate; POOL_SIZE],
    len: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: [Candidate { idx: 0, score: 0 }; POOL_SIZE],
            len: 0,
        }
    }
}

impl Pool {
    fn live(&self) -> &[Candidate] {
        &self.slots[..self.len]
    }

    fn remove_at(&mut self, pos: usize) {
        self.slots.copy_within(pos + 1..self.len, pos);
        self.len -= 1;
    }

    pub(crate) fn offer(&mut self, idx: u32, score: u64) {
        if self.len == POOL_SIZE && score <= self.slots[0].score {
            return;
        }
        // No duplicate check (Redis has none either): a candidate sampled twice sits in
        // the pool twice; `forget` removes every copy when its entry goes, and the
        // victim is rescored before eviction.
        if self.len == POOL_SIZE {
            self.remove_at(0);
        }
        let at = self.live().partition_point(|c| c.score < score);
        self.slots.copy_within(at..self.len, at + 1);
        self.slots[at] = Candidate { idx, score };
        self.len += 1;
    }

    /// Takes the best candidate out of the pool.
    pub(crate) fn take_best(&mut self) -> Option<(u32, u64)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let c = self.slots[self.len];
        Some((c.idx, c.score))
    }

    /// The best score left, if any.
    pub(crate) fn best_score(&self) -> Option<u64> {
        self.live().last().map(|c| c.score)
    }

    /// Entry `idx` is gone: every copy of it leaves the pool.
    pub(crate) fn forget(&mut self, idx: u32) {
        while let Some(pos) = self.live().iter().position(|c| c.idx == idx) {
            self.remove_at(pos);
        }
    }

    /// The table moved an entry; candidates follow it.
    pub(crate) fn follow(&mut self, moved: Moved) {
        let len = self.len;
        for c in &mut self.slots[..len] {
            if c.idx == moved.from {
                c.idx = moved.to;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_sixteen() {
        let mut p = Pool::default();
        for i in 0..100u32 {
            p.offer(i, (i as u64 * 37) % 101);
        }
        let mut got = Vec::new();
        while let Some((_, s)) = p.take_best() {
            got.push(s);
        }
        let mut all: Vec<u64> = (0..100u64).map(|i| (i * 37) % 101).collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(got, all[..POOL_SIZE].to_vec());
    }

    #[test]
    fn forgetting_removes_every_copy() {
        let mut p = Pool::default();
        p.offer(1, 10);
        p.offer(2, 20);
        p.offer(1, 30);
        p.forget(1);
        assert_eq!(p.take_best(), Some((2, 20)));
        assert_eq!(p.take_best(), None);
    }

    #[test]
    fn follows_moves_and_forgets() {
        let mut p = Pool::default();
        p.offer(5, 10);
        p.offer(9, 20);
        p.forget(5);
        p.follow(Moved { from: 9, to: 5 });
        assert_eq!(p.take_best(), Some((5, 20)));
        assert_eq!(p.take_best(), None);
    }
}
