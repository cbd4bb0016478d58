//! TinyLFU's frequency sketch: a count-min sketch of 4-bit counters that estimates how
//! often a key was asked for recently, whether or not it is in the cache, in 8 bytes per
//! entry of the shard's bound.
//!
//! Layout (Caffeine's): the table is an array of 64-byte blocks of eight `u64` words, each
//! word sixteen 4-bit counters. A key's hash picks one block, so an update or an estimate
//! touches one cache line; inside it, each of the four rows owns two words and the hash
//! picks one counter in one of them. The estimate is the least of the four counters
//! (count-min), the increment is conservative (only the counters at that minimum grow),
//! and counters stop at 15. After twenty bounds' worth of increments every counter is halved,
//! so the sketch tracks recent popularity and forgets old phases.
//!
//! Counters are relaxed atomics so that readers holding only the shard's shared lock can
//! count their hits; a racing increment may be lost, which costs an estimate one count,
//! as an unlocked Redis LFU update might.

use crate::shard::below;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Each nibble halved: drops the low bit of every counter.
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;
/// Counters per entry of the bound: 16 (one `u64` of 4-bit counters).
const WORDS_PER_BLOCK: usize = 8;
/// Entries of the bound one block serves.
const ENTRIES_PER_BLOCK: usize = 8;
/// Increments between halvings, per entry of the bound. Caffeine's 10 was measured
/// against 5 and 20 on the workload suite: 20 gains 0.3-1.6 points on the small-cache
/// Zipf, scan, one-hit-wonder and two-tenant streams, and loses 0.6-1.4 on the
/// recency-heavy and shifting ones; 5 loses on every stationary stream.
const SAMPLE_PER_ENTRY: u64 = 20;

/// Doorkeeper bits per entry of the bound (4 bytes), two bits set per key.
const DOOR_BITS_PER_ENTRY: usize = 32;

pub(crate) struct Sketch {
    table: Box<[AtomicU64]>,
    /// TinyLFU's doorkeeper, if on: a Bloom filter a key's first access sets instead of
    /// the counters, so keys seen once per period never reach them; cleared at halving.
    door: Option<Box<[AtomicU64]>>,
    blocks: usize,
    /// The entry count the sketch is sized for.
    capacity: usize,
    /// Increments since the last halving (readers add in batches, see `count_shared`).
    additions: AtomicU64,
    sample: u64,
}

impl Sketch {
    pub(crate) fn new(capacity: usize, doorkeeper: bool) -> Self {
        let capacity = capacity.max(16);
        let blocks = capacity.div_ceil(ENTRIES_PER_BLOCK);
        let zeroed = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Sketch {
            table: zeroed(blocks * WORDS_PER_BLOCK),
            door: doorkeeper.then(|| zeroed(capacity * DOOR_BITS_PER_ENTRY / 64)),
            blocks,
            capacity,
            additions: AtomicU64::new(0),
            sample: SAMPLE_PER_ENTRY * capacity as u64,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the sketch occupies.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.table.len() * 8
    }

    /// The key's block, and the word (within the block) and bit shift of its counter in
    /// each of the four rows.
    #[inline(always)]
    fn slots(&self, hash: u64) -> (&[AtomicU64; WORDS_PER_BLOCK], [(usize, u32); 4]) {
        // Re-mixed: the table's hash already chose the shard (high bits) and the bucket
        // (low bits).
        let h = (hash ^ (hash >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let start = below(h, self.blocks) * WORDS_PER_BLOCK;
        // One bounds check for the block; the words inside it are indexed below 8.
        let block: &[AtomicU64; WORDS_PER_BLOCK] = self.table[start..start + WORDS_PER_BLOCK]
            .try_into()
            .expect("the table is whole blocks");
        #[inline(always)]
        fn slot(h: u64, i: usize) -> (usize, u32) {
            let word = 2 * i + ((h >> i) & 1) as usize;
            let shift = (((h >> (8 + 4 * i)) & 15) * 4) as u32;
            (word, shift)
        }
        (block, [slot(h, 0), slot(h, 1), slot(h, 2), slot(h, 3)])
    }

    /// The four counters of `hash`'s key, in row order.
    #[inline(always)]
    fn counters(block: &[AtomicU64; WORDS_PER_BLOCK], slots: &[(usize, u32); 4]) -> [u64; 4] {
        let c = |i: usize| (block[slots[i].0 & 7].load(Relaxed) >> slots[i].1) & 15;
        [c(0), c(1), c(2), c(3)]
    }

    /// How often `hash`'s key was counted recently (0..=15, 16 with a doorkeeper).
    #[inline]
    pub(crate) fn estimate(&self, hash: u64) -> u8 {
        let (block, slots) = self.slots(hash);
        let [a, b, c, d] = Self::counters(block, &slots);
        let counted = a.min(b).min(c.min(d)) as u8;
        match &self.door {
            Some(door) => counted + u8::from(Self::door_bits(door, hash).is_none()),
            None => counted,
        }
    }

    /// The doorkeeper's two bits for `hash`: `None` when both are set, else where to set
    /// them.
    #[inline]
    fn door_bits(door: &[AtomicU64], hash: u64) -> Option<[(usize, u64); 2]> {
        let h = hash.rotate_left(21).wrapping_mul(0x94D0_49BB_1331_11EB);
        let bits = door.len() * 64;
        let at = [below(h, bits), below(h.rotate_left(32), bits)];
        let slots = at.map(|b| (b / 64, 1u64 << (b % 64)));
        slots
            .iter()
            .any(|&(w, m)| door[w].load(Relaxed) & m == 0)
            .then_some(slots)
    }

    /// Counts one access; returns whether a counter grew (not all saturated).
    #[inline]
    fn add(&self, hash: u64) -> bool {
        if let Some(door) = &self.door {
            if let Some(bits) = Self::door_bits(door, hash) {
                for (w, m) in bits {
                    door[w].fetch_or(m, Relaxed);
                }
                return true;
            }
        }
        let (block, slots) = self.slots(hash);
        let vals = Self::counters(block, &slots);
        let min = vals[0].min(vals[1]).min(vals[2].min(vals[3]));
        if min == 15 {
            return false;
        }
        // Conservative update: only the counters at the minimum grow (each row has words
        // of its own, so the four stores never overlap).
        for (i, &(w, s)) in slots.iter().enumerate() {
            if vals[i] == min {
                let cell = &block[w & 7];
                cell.store(cell.load(Relaxed) + (1 << s), Relaxed);
            }
        }
        true
    }

    /// Counts an access under the shard's exclusive lock.
    #[inline]
    pub(crate) fn count(&self, hash: u64) {
        if self.add(hash) {
            self.additions
                .store(self.additions.load(Relaxed) + 1, Relaxed);
        }
    }

    /// Counts an access under the shared lock. The increment total is kept in batches of
    /// 16 added with probability 1/16 (`coin` is a random value), so concurrent readers
    /// rarely write the shared total.
    #[inline]
    pub(crate) fn count_shared(&self, hash: u64, coin: u64) {
        if self.add(hash) && coin >> 60 == 0 {
            self.additions.fetch_add(16, Relaxed);
        }
    }

    /// Halves every counter once enough increments have been counted since the last
    /// halving. Called under the exclusive lock.
    pub(crate) fn maybe_age(&mut self) {
        let n = *self.additions.get_mut();
        if n < self.sample {
            return;
        }
        for w in self.table.iter_mut() {
            let v = w.get_mut();
            *v = (*v >> 1) & HALVE_MASK;
        }
        for w in self.door.iter_mut().flat_map(|d| d.iter_mut()) {
            *w.get_mut() = 0;
        }
        // Half a sample at most: reads count without aging, so `n` may hold many
        // samples' worth, which must not turn the next writes into a run of halvings.
        *self.additions.get_mut() = (n / 2).min(self.sample / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: u64) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(k)
    }

    #[test]
    fn counts_saturate_at_fifteen_and_estimates_never_undercount() {
        let s = Sketch::new(1024, false);
        for _ in 0..20 {
            s.count(h(1));
        }
        for _ in 0..3 {
            s.count(h(2));
        }
        assert_eq!(s.estimate(h(1)), 15);
        assert!(s.estimate(h(2)) >= 3);
        assert_eq!(s.estimate(h(999_999)), 0);
        // Few collisions: most never-seen keys estimate zero.
        for k in 0..500 {
            s.count(h(k));
        }
        let zero = (10_000..11_000).filter(|&k| s.estimate(h(k)) == 0).count();
        assert!(zero > 900, "{zero} of 1000 unseen keys estimate 0");
    }

    #[test]
    fn halving_after_the_sample_forgets_old_counts() {
        let mut s = Sketch::new(16, false);
        for _ in 0..8 {
            s.count(h(7));
        }
        assert_eq!(s.estimate(h(7)), 8);
        s.maybe_age();
        assert_eq!(s.estimate(h(7)), 8, "no halving before the sample is full");
        let mut k = 100;
        while *s.additions.get_mut() < s.sample {
            s.count(h(k));
            k += 1;
        }
        let before = s.estimate(h(7));
        s.maybe_age();
        assert_eq!(s.estimate(h(7)), before / 2);
        assert!(*s.additions.get_mut() < s.sample);
    }

    /// Reads count without aging (aging needs the exclusive lock, taken by writes): a
    /// long read-only phase may count many samples' worth before the next write. That
    /// write halves once; the writes after it must not halve again and again until the
    /// counts are gone, which would leave every newcomer level with the hottest key.
    #[test]
    fn one_halving_per_sample_even_after_a_long_phase_without_aging() {
        let mut s = Sketch::new(16, false);
        for _ in 0..15 {
            s.count(h(7));
        }
        let mut k = 100;
        while *s.additions.get_mut() < 8 * s.sample {
            s.count_shared(h(k), 0);
            k += 1;
        }
        for _ in 0..15 {
            s.count(h(7));
        }
        assert_eq!(s.estimate(h(7)), 15);
        s.maybe_age();
        assert_eq!(s.estimate(h(7)), 7);
        s.maybe_age();
        s.maybe_age();
        assert_eq!(s.estimate(h(7)), 7, "no new sample: no further halving");
    }

    #[test]
    fn eight_bytes_per_entry_of_the_bound() {
        let s = Sketch::new(10_000, false);
        assert_eq!(s.bytes(), 10_000 * 8);
        assert_eq!(s.capacity(), 10_000);
    }

    #[test]
    fn the_doorkeeper_takes_first_accesses_and_clears_at_halving() {
        let mut s = Sketch::new(1024, true);
        assert_eq!(s.estimate(h(1)), 0);
        s.count(h(1));
        assert_eq!(s.estimate(h(1)), 1, "first access: the doorkeeper only");
        let (block, slots) = s.slots(h(1));
        assert_eq!(Sketch::counters(block, &slots), [0; 4]);
        for _ in 0..3 {
            s.count(h(1));
        }
        assert_eq!(s.estimate(h(1)), 4, "doorkeeper plus three counts");
        let mut k = 1_000;
        while *s.additions.get_mut() < s.sample {
            s.count(h(k));
            k += 1;
        }
        s.maybe_age();
        assert_eq!(s.estimate(h(1)), 1, "counts halved, doorkeeper cleared");
    }
}
