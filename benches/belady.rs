//! Belady's MIN: the offline optimum a cache of `capacity` entries could reach on a
//! trace, given perfect knowledge of the future. Every online policy is measured against
//! it.
//!
//! On a miss the optimal cache evicts the resident key whose next use is farthest away,
//! and does not admit the new key at all if its own next use is farther still (an
//! admission-capable cache may bypass, and both peers here have admission policies).

use std::collections::{BTreeSet, HashMap};

/// Position meaning "never used again".
const NEVER: usize = usize::MAX;

/// For each position `i`, the position of the next occurrence of `trace[i]`, or
/// `usize::MAX` if it does not recur.
pub fn next_uses(trace: &[u64]) -> Vec<usize> {
    let mut next = vec![NEVER; trace.len()];
    let mut last_seen: HashMap<u64, usize> = HashMap::with_capacity(trace.len() / 4);
    for (i, &k) in trace.iter().enumerate().rev() {
        if let Some(j) = last_seen.insert(k, i) {
            next[i] = j;
        }
    }
    next
}

/// Number of hits Belady's MIN scores on `trace` with room for `capacity` entries.
///
/// The cache holds `(next use, key)` pairs in an ordered set, so the eviction victim is
/// its last element; a resident key's stored next use is always the current position
/// when it is hit. O(n log capacity).
pub fn belady_hits(trace: &[u64], capacity: usize) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let next = next_uses(trace);
    let mut resident: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut hits = 0u64;
    for (i, &k) in trace.iter().enumerate() {
        if resident.remove(&(i, k)) {
            hits += 1;
            resident.insert((next[i], k));
            continue;
        }
        if next[i] == NEVER {
            continue; // never used again: admitting it can only hurt
        }
        if resident.len() == capacity {
            let &(farthest, _) = resident.last().expect("full cache is not empty");
            if farthest <= next[i] {
                continue; // every resident key is needed sooner than this one
            }
            resident.pop_last();
        }
        resident.insert((next[i], k));
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_uses_points_forward() {
        assert_eq!(next_uses(&[1, 2, 1, 1, 3]), vec![2, NEVER, 3, NEVER, NEVER]);
    }

    #[test]
    fn textbook_example() {
        // Classic page-reference string with 3 frames: MIN takes 9 faults of 20 when it
        // must admit; with bypass it does at least as well.
        let trace = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];
        let hits = belady_hits(&trace, 3);
        assert!(hits >= 11, "{hits}");
    }

    #[test]
    fn everything_fits_means_only_cold_misses() {
        let trace = [1, 2, 3, 1, 2, 3, 1, 2, 3];
        assert_eq!(belady_hits(&trace, 3), 6);
        assert_eq!(belady_hits(&trace, 0), 0);
    }

    #[test]
    fn beats_lru_on_a_loop_larger_than_the_cache() {
        // LRU scores zero on a cyclic scan one larger than the cache; MIN keeps most.
        let trace: Vec<u64> = (0..10).flat_map(|_| 0..4u64).collect();
        let hits = belady_hits(&trace, 3);
        assert!(hits >= 20, "{hits}");
    }

    #[test]
    fn never_worse_than_brute_force_lru() {
        let trace = crate::zipf::zipf_stream(200, 0.9, 5_000, 11);
        let cap = 20;
        let mut lru: Vec<u64> = Vec::new();
        let mut lru_hits = 0u64;
        for &k in &trace {
            if let Some(p) = lru.iter().position(|&x| x == k) {
                lru_hits += 1;
                lru.remove(p);
            } else if lru.len() == cap {
                lru.remove(0);
            }
            lru.push(k);
        }
        assert!(belady_hits(&trace, cap) >= lru_hits);
    }
}
