//! Counters that many threads bump without sharing a cache line: each thread adds to its
//! own stripe; a read sums the stripes.

use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 16;

/// A striped counter. std atomics even under loom: these are statistics, not
/// synchronisation.
///
/// Threads get stripes round-robin, so up to 16 threads each write their own stripe and
/// an increment is a plain load and store (no locked instruction on the read path).
/// Beyond 16 threads two may share a stripe and, rarely, an increment is lost; the
/// figures are statistics, like Redis's, not accounting.
pub(crate) struct Striped {
    cells: [CachePadded<AtomicU64>; STRIPES],
}

impl Default for Striped {
    fn default() -> Self {
        Striped {
            cells: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }
}

impl Striped {
    #[inline]
    pub(crate) fn incr(&self) {
        let c = &self.cells[thread_slot() % STRIPES];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// This thread's stripe, assigned round-robin on first use.
#[inline]
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        s.get()
    })
}

/// A per-thread xorshift64* stream: LFU's coin for reads made under the shared lock,
/// where the shard's own generator cannot be advanced.
pub(crate) fn thread_rand() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // Distinct per thread: this thread's stripe and cell address, mixed
            // (splitmix64's finaliser).
            let mut z = (r as *const Cell<u64> as u64) ^ ((thread_slot() as u64) << 32);
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x = (z ^ (z >> 31)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_sum_across_threads() {
        let c = std::sync::Arc::new(Striped::default());
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || (0..1000).for_each(|_| c.incr()))
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.sum(), 4000);
        assert_ne!(thread_rand(), thread_rand());
    }
}
