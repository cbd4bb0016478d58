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
#[derive(Default)]
pub(crate) struct Pool {
    slots: Vec<Candidate>,
}

impl Pool {
    pub(crate) fn offer(&mut self, idx: u32, score: u64) {
        if let Some(c) = self.slots.iter_mut().find(|c| c.idx == idx) {
            c.score = score;
            return;
        }
        if self.slots.len() < POOL_SIZE {
            self.slots.push(Candidate { idx, score });
            return;
        }
        // Full: replace the worst candidate if this one is better.
        let (worst, w) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.score)
            .map(|(i, c)| (i, c.score))
            .expect("pool is full");
        if score > w {
            self.slots[worst] = Candidate { idx, score };
        }
    }

    /// Takes the best candidate out of the pool.
    pub(crate) fn take_best(&mut self) -> Option<(u32, u64)> {
        let (i, _) = self.slots.iter().enumerate().max_by_key(|(_, c)| c.score)?;
        let c = self.slots.swap_remove(i);
        Some((c.idx, c.score))
    }

    /// The best score left, if any.
    pub(crate) fn best_score(&self) -> Option<u64> {
        self.slots.iter().map(|c| c.score).max()
    }

    /// Entry `idx` is gone.
    pub(crate) fn forget(&mut self, idx: u32) {
        self.slots.retain(|c| c.idx != idx);
    }

    /// The table moved an entry; candidates follow it.
    pub(crate) fn follow(&mut self, moved: Moved) {
        for c in &mut self.slots {
            if c.idx == moved.from {
                c.idx = moved.to;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
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
