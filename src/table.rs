//! The shard's hash table: a dense slab of entries chained from a power-of-two array of
//! buckets.
//!
//! Why not `std`'s map: SCAN needs buckets addressed by `hash & mask` so that Redis's
//! reverse-binary cursor can promise to visit every key present for the whole scan even
//! when the table doubles or halves between calls; eviction and active expiry need a
//! random entry in O(1), which a dense slab gives; and the layout costs 4 bytes of link and
//! 4 to 8 bytes of bucket per entry, with no tombstones.
//!
//! Invariants: `entries` is dense (removal swaps the last entry into the hole);
//! `buckets.len()` is a power of two; every entry is on exactly one chain, the one of
//! bucket `hash(key) & mask`; chains end in [`NIL`].

use crate::meta::{Meta, MetaCell, TAG_MASK};
use std::borrow::Borrow;
use std::hash::Hash;

/// End of a chain / empty bucket.
pub(crate) const NIL: u32 = u32::MAX;
const MIN_BUCKETS: usize = 4;

pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) meta: MetaCell,
    next: u32,
}

/// Where a removal moved the last entry, so side tables holding indices can follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) from: u32,
    pub(crate) to: u32,
}

pub(crate) struct Table<K, V> {
    entries: Vec<Entry<K, V>>,
    buckets: Box<[u32]>,
    hasher: ahash::RandomState,
    /// Walks that need every key visited at most once (a snapshot's) hold this above
    /// zero: the bucket array then never shrinks, which is the one way a reverse-binary
    /// cursor meets a key twice.
    no_shrink: u32,
}

impl<K: Hash + Eq, V> Table<K, V> {
    pub(crate) fn new(hasher: ahash::RandomState) -> Self {
        Table {
            entries: Vec::new(),
            buckets: vec![NIL; MIN_BUCKETS].into_boxed_slice(),
            hasher,
            no_shrink: 0,
        }
    }

    /// Holds the bucket array at its size or larger until a matching
    /// [`Table::release_size`]: a SCAN walk over it then visits every key at most once.
    pub(crate) fn hold_size(&mut self) {
        self.no_shrink += 1;
    }

    /// Ends a [`Table::hold_size`], shrinking now if removals meanwhile asked for it.
    pub(crate) fn release_size(&mut self) {
        self.no_shrink = self.no_shrink.saturating_sub(1);
        if self.no_shrink == 0 {
            let mut n = self.buckets.len();
            while self.entries.len() * 8 < n && n > MIN_BUCKETS {
                n /= 2;
            }
            if n != self.buckets.len() {
                self.resize(n);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.buckets.len() as u64 - 1
    }

    #[inline]
    fn bucket_of(&self, hash: u64) -> usize {
        (hash & self.mask()) as usize
    }

    #[inline]
    pub(crate) fn hash_key<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn entry(&self, idx: u32) -> &Entry<K, V> {
        &self.entries[idx as usize]
    }

    pub(crate) fn entry_mut(&mut self, idx: u32) -> &mut Entry<K, V> {
        &mut self.entries[idx as usize]
    }

    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let tag = hash as u32 & TAG_MASK;
        let mut i = self.buckets[self.bucket_of(hash)];
        while i != NIL {
            let e = &self.entries[i as usize];
            // The tag first: most other keys of the chain are passed over without
            // reading their (separately allocated) bytes.
            if e.meta.get().tag() == tag && e.key.borrow() == key {
                return Some(i);
            }
            i = e.next;
        }
        None
    }

    /// The entry whose key's hash has the low 32 bits `hash` and that `pred` accepts
    /// (buckets are chosen by the low bits; a table never has 2^32 buckets).
    pub(crate) fn find_hashed(
        &self,
        hash: u32,
        pred: impl Fn(&Entry<K, V>) -> bool,
    ) -> Option<u32> {
        let mut i = self.buckets[self.bucket_of(hash as u64)];
        while i != NIL {
            let e = &self.entries[i as usize];
            if e.meta.get().tag() == hash & TAG_MASK
                && pred(e)
                && self.hash_key(&e.key) as u32 == hash
            {
                return Some(i);
            }
            i = e.next;
        }
        None
    }

    /// Makes room for `additional` more entries without further resizes.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.entries.len().saturating_add(additional);
        self.entries.reserve(additional);
        if want > self.buckets.len() {
            self.resize(want.next_power_of_two());
        }
    }

    /// Inserts a key known to be absent; returns its index.
    pub(crate) fn push(&mut self, hash: u64, key: K, value: V, mut meta: Meta) -> u32 {
        meta.set_tag(hash as u32);
        assert!(
            self.entries.len() < NIL as usize,
            "shard holds 2^32-1 entries"
        );
        if self.entries.len() >= self.buckets.len() {
            self.resize(self.buckets.len() * 2);
        }
        let idx = self.entries.len() as u32;
        let b = self.bucket_of(hash);
        self.entries.push(Entry {
            key,
            value,
            meta: MetaCell::new(meta),
            next: self.buckets[b],
        });
        self.buckets[b] = idx;
        idx
    }

    /// Removes the entry at `idx`. The last entry moves into the hole; the move is
    /// reported so that side tables keyed by index can follow it.
    pub(crate) fn remove_at(&mut self, idx: u32) -> (Entry<K, V>, Option<Moved>) {
        let hash = self.hash_key(&self.entries[idx as usize].key);
        self.unlink(hash, idx);
        let last = self.entries.len() as u32 - 1;
        let moved = if idx != last {
            let h = self.hash_key(&self.entries[last as usize].key);
            self.relink(h, last, idx);
            Some(Moved {
                from: last,
                to: idx,
            })
        } else {
            None
        };
        let removed = self.entries.swap_remove(idx as usize);
        if self.entries.len() * 8 < self.buckets.len()
            && self.buckets.len() > MIN_BUCKETS
            && self.no_shrink == 0
        {
            self.resize((self.buckets.len() / 2).max(MIN_BUCKETS));
        }
        (removed, moved)
    }

    /// Removes `idx` from its chain.
    fn unlink(&mut self, hash: u64, idx: u32) {
        let next = self.entries[idx as usize].next;
        self.replace_link(hash, idx, next);
    }

    /// Points whatever link referred to `from` at `to` (the entry is about to move).
    fn relink(&mut self, hash: u64, from: u32, to: u32) {
        self.replace_link(hash, from, to);
    }

    /// Finds the link (bucket head or a `next`) on `hash`'s chain that holds `target` and
    /// makes it hold `with`.
    fn replace_link(&mut self, hash: u64, target: u32, with: u32) {
        let b = self.bucket_of(hash);
        if self.buckets[b] == target {
            self.buckets[b] = with;
            return;
        }
        let mut i = self.buckets[b];
        while i != NIL {
            if self.entries[i as usize].next == target {
                self.entries[i as usize].next = with;
                return;
            }
            i = self.entries[i as usize].next;
        }
        unreachable!("entry {target} is not on the chain of its bucket");
    }

    /// Rebuilds every chain for `n` buckets (a power of two). Done at once, under the
    /// shard lock, so a SCAN cursor only ever meets one table size.
    fn resize(&mut self, n: usize) {
        debug_assert!(n.is_power_of_two());
        let mut buckets = vec![NIL; n].into_boxed_slice();
        let mask = n as u64 - 1;
        for i in 0..self.entries.len() {
            let b = (self.hasher.hash_one(&self.entries[i].key) & mask) as usize;
            self.entries[i].next = buckets[b];
            buckets[b] = i as u32;
        }
        self.buckets = buckets;
    }

    /// Empties the table, handing back the entries so they can be dropped elsewhere.
    pub(crate) fn take_all(&mut self) -> Vec<Entry<K, V>> {
        let n = if self.no_shrink > 0 {
            self.buckets.len()
        } else {
            MIN_BUCKETS
        };
        self.buckets = vec![NIL; n].into_boxed_slice();
        std::mem::take(&mut self.entries)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Entry<K, V>)> {
        self.entries.iter().enumerate().map(|(i, e)| (i as u32, e))
    }

    /// Calls `f` for every entry in the bucket `cursor & mask` and returns the next cursor
    /// in reverse-binary order (0 when the scan is complete). Redis's `dictScan`: the
    /// cursor increments from the high bit down, so when the table doubles, the buckets a
    /// cursor has passed split into buckets it has also passed, and when it halves, they
    /// fold into buckets whose every former part was passed; no key present for the whole
    /// scan is missed (some may be returned twice after a shrink).
    pub(crate) fn scan_bucket(&self, cursor: u64, mut f: impl FnMut(u32, &Entry<K, V>)) -> u64 {
        let mask = self.mask();
        let mut i = self.buckets[(cursor & mask) as usize];
        while i != NIL {
            let e = &self.entries[i as usize];
            f(i, e);
            i = e.next;
        }
        let mut v = cursor | !mask;
        v = v.reverse_bits();
        v = v.wrapping_add(1);
        v.reverse_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn table() -> Table<u64, u64> {
        Table::new(ahash::RandomState::with_seeds(1, 2, 3, 4))
    }

    #[test]
    fn tags_come_from_the_hash_and_survive_metadata_changes() {
        let mut t = table();
        // Hashes made up: one bucket, tags that differ and tags that agree.
        let a = t.push(0x0000_0000, 1, 10, Meta::default());
        let b = t.push(0x0800_0000, 2, 20, Meta::default());
        let c = t.push(0x0000_0000, 3, 30, Meta::default());
        assert_eq!(t.find(0x0800_0000, &2), Some(b));
        // Same tag, other key: the key decides.
        assert_eq!(t.find(0x0000_0000, &3), Some(c));
        assert_eq!(t.find(0x0000_0000, &1), Some(a));
        // A key under a hash with another tag is not found (the hash is the key's).
        assert_eq!(t.find(0x0800_0000, &1), None);
        t.entry_mut(a).meta.update(|m| {
            m.set_clock(u32::MAX);
            m.set_ttl_flag(true);
            m.set_window(true);
            m.set_protected(true);
        });
        assert_eq!(t.find(0x0000_0000, &1), Some(a));
    }

    fn insert(t: &mut Table<u64, u64>, k: u64) {
        let h = t.hash_key(&k);
        if t.find(h, &k).is_none() {
            t.push(h, k, k * 10, Meta::default());
        }
    }

    fn remove(t: &mut Table<u64, u64>, k: u64) -> bool {
        let h = t.hash_key(&k);
        match t.find(h, &k) {
            Some(i) => {
                let (e, _) = t.remove_at(i);
                assert_eq!(e.key, k);
                true
            }
            None => false,
        }
    }

    #[test]
    fn grows_and_shrinks_keeping_every_key_findable() {
        let mut t = table();
        for k in 0..10_000 {
            insert(&mut t, k);
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.bucket_count() >= 10_000);
        for k in 0..10_000 {
            let h = t.hash_key(&k);
            let i = t.find(h, &k).expect("present");
            assert_eq!(t.entry(i).value, k * 10);
        }
        for k in 0..9_990 {
            assert!(remove(&mut t, k));
        }
        assert!(t.bucket_count() <= 128, "shrunk to {}", t.bucket_count());
        for k in 9_990..10_000 {
            let h = t.hash_key(&k);
            assert!(t.find(h, &k).is_some());
        }
        assert!(!remove(&mut t, 5));
    }

    fn full_scan(t: &Table<u64, u64>) -> HashSet<u64> {
        let mut seen = HashSet::new();
        let mut c = 0;
        loop {
            c = t.scan_bucket(c, |_, e| {
                seen.insert(e.key);
            });
            if c == 0 {
                return seen;
            }
        }
    }

    #[test]
    fn reserve_sizes_once_for_a_bulk_load() {
        let mut t = table();
        t.reserve(5000);
        let buckets = t.bucket_count();
        assert!(buckets >= 5000);
        for k in 0..5000 {
            insert(&mut t, k);
        }
        assert_eq!(
            t.bucket_count(),
            buckets,
            "no resize while filling reserved room"
        );
        for k in 0..5000 {
            let h = t.hash_key(&k);
            assert!(t.find(h, &k).is_some());
        }
    }

    #[test]
    fn scan_visits_everything_once_without_resizes() {
        let mut t = table();
        for k in 0..1000 {
            insert(&mut t, k);
        }
        assert_eq!(full_scan(&t).len(), 1000);
    }

    #[test]
    fn scan_survives_growth_and_shrink_between_steps() {
        let mut t = table();
        for k in 0..500 {
            insert(&mut t, k);
        }
        let mut seen = HashSet::new();
        let mut c = 0;
        let mut step = 0u64;
        loop {
            c = t.scan_bucket(c, |_, e| {
                seen.insert(e.key);
            });
            // Alternate bursts of growth and shrinkage with keys outside 0..500.
            step += 1;
            if step % 40 < 20 {
                for k in 0..200 {
                    insert(&mut t, 1_000_000 + step * 1000 + k);
                }
            } else {
                let extra: Vec<u64> = t
                    .iter()
                    .map(|(_, e)| e.key)
                    .filter(|&k| k >= 1_000_000)
                    .collect();
                for k in extra {
                    remove(&mut t, k);
                }
            }
            if c == 0 {
                break;
            }
        }
        for k in 0..500 {
            assert!(seen.contains(&k), "key {k} missed");
        }
    }

    #[test]
    fn a_held_size_makes_a_scan_visit_each_key_at_most_once() {
        // Bursts of growth, removal of most keys, re-insertion of removed keys and a
        // full clear between scan steps: with the size held nothing is seen twice, and
        // the keys present throughout are all seen.
        for seed in 0..20u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut t = table();
            for k in 0..300 {
                insert(&mut t, k);
            }
            t.hold_size();
            let mut seen = Vec::new();
            let mut c = 0;
            let mut cleared = false;
            loop {
                c = t.scan_bucket(c, |_, e| seen.push(e.key));
                match next() % 10 {
                    0..=3 => {
                        for _ in 0..100 {
                            let k = 1000 + next() % 3000;
                            if t.find(t.hash_key(&k), &k).is_none() {
                                insert(&mut t, k);
                            }
                        }
                    }
                    4..=7 => {
                        let extra: Vec<u64> = t
                            .iter()
                            .map(|(_, e)| e.key)
                            .filter(|&k| k >= 1000)
                            .collect();
                        for k in extra {
                            remove(&mut t, k);
                        }
                    }
                    8 if seed % 4 == 0 && !cleared => {
                        t.take_all();
                        cleared = true;
                    }
                    _ => {}
                }
                if c == 0 {
                    break;
                }
            }
            let unique: HashSet<u64> = seen.iter().copied().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "seed {seed}: a key was seen twice"
            );
            if !cleared {
                assert!(
                    (0..300).all(|k| unique.contains(&k)),
                    "seed {seed}: a key was missed"
                );
            }
            let buckets = t.bucket_count();
            t.release_size();
            assert!(t.bucket_count() <= buckets);
            assert!(t.len() * 8 >= t.bucket_count() || t.bucket_count() == MIN_BUCKETS);
        }
    }

    /// Walks a table of 4000 keys, removing all but the first 300 at step `at` (which
    /// shrinks it, unless `hold`); returns the keys in the order the walk met them.
    fn walk_through_a_shrink(trial: u64, at: u64, hold: bool) -> Vec<u64> {
        let mut t = table();
        let keys = (0..4000).map(|i| trial * 10_000 + i);
        for k in keys.clone() {
            insert(&mut t, k);
        }
        if hold {
            t.hold_size();
        }
        let mut seen = Vec::new();
        let mut c = 0;
        let mut step = 0;
        loop {
            c = t.scan_bucket(c, |_, e| seen.push(e.key));
            step += 1;
            if step == at {
                for k in keys.clone().skip(300) {
                    remove(&mut t, k);
                }
            }
            if c == 0 {
                break;
            }
        }
        if hold {
            let buckets = t.bucket_count();
            t.release_size();
            assert!(
                t.bucket_count() < buckets,
                "the held shrink happens on release"
            );
        }
        seen
    }

    fn repeats(seen: &[u64]) -> usize {
        seen.len() - seen.iter().collect::<HashSet<_>>().len()
    }

    #[test]
    fn without_a_held_size_a_shrink_can_repeat_keys() {
        // What the hold prevents: a shrink in mid-walk folds a bucket the cursor has
        // passed into one it has not, and the walk meets those keys again.
        let total: usize = (0..64)
            .map(|trial| repeats(&walk_through_a_shrink(trial, 1001 + trial, false)))
            .sum();
        assert!(total > 0);
    }

    #[test]
    fn with_a_held_size_the_same_walks_meet_each_key_once() {
        for trial in 0..64 {
            let seen = walk_through_a_shrink(trial, 1001 + trial, true);
            assert_eq!(repeats(&seen), 0, "trial {trial}");
            let kept = (0..300).map(|i| trial * 10_000 + i);
            assert!(kept.clone().all(|k| seen.contains(&k)), "trial {trial}");
        }
    }
}
