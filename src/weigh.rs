//! How much memory an entry costs: `used_memory` is the sum of every entry's weight plus a
//! fixed per-entry cost ([`ENTRY_OVERHEAD`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

/// Bytes a value occupies: its inline size plus what it owns on the heap.
///
/// Implemented for the common types; implement it for your own or give the builder a
/// closure with [`CacheBuilder::weigher`](crate::CacheBuilder::weigher).
pub trait Weigh {
    /// Inline size plus owned heap bytes. Must return the same for the same value: the
    /// cache subtracts the weight it computes at removal time.
    fn weigh(&self) -> usize;
}

macro_rules! inline_weigh {
    ($($t:ty),*) => {$(
        impl Weigh for $t {
            fn weigh(&self) -> usize { size_of::<$t>() }
        }
    )*};
}
inline_weigh!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64
);

impl<const N: usize, T: Weigh> Weigh for [T; N] {
    fn weigh(&self) -> usize {
        // Inline elements: their inline size is already in size_of::<[T; N]>.
        size_of::<[T; N]>()
            + self
                .iter()
                .map(|t| t.weigh() - size_of::<T>())
                .sum::<usize>()
    }
}

impl Weigh for String {
    fn weigh(&self) -> usize {
        size_of::<String>() + self.capacity()
    }
}

impl Weigh for Box<str> {
    fn weigh(&self) -> usize {
        size_of::<Box<str>>() + self.len()
    }
}

impl Weigh for Arc<str> {
    fn weigh(&self) -> usize {
        // Two reference counts precede the bytes in an Arc's allocation.
        size_of::<Arc<str>>() + 2 * size_of::<usize>() + self.len()
    }
}

impl Weigh for Box<[u8]> {
    fn weigh(&self) -> usize {
        size_of::<Box<[u8]>>() + self.len()
    }
}

impl<T: Weigh> Weigh for Vec<T> {
    fn weigh(&self) -> usize {
        size_of::<Vec<T>>()
            + self.capacity() * size_of::<T>()
            + self
                .iter()
                .map(|t| t.weigh() - size_of::<T>())
                .sum::<usize>()
    }
}

impl<T: Weigh> Weigh for VecDeque<T> {
    fn weigh(&self) -> usize {
        size_of::<VecDeque<T>>()
            + self.capacity() * size_of::<T>()
            + self
                .iter()
                .map(|t| t.weigh() - size_of::<T>())
                .sum::<usize>()
    }
}

impl<T: Weigh> Weigh for Box<T> {
    fn weigh(&self) -> usize {
        size_of::<Box<T>>() + (**self).weigh()
    }
}

impl<T: Weigh> Weigh for Arc<T> {
    fn weigh(&self) -> usize {
        size_of::<Arc<T>>() + 2 * size_of::<usize>() + (**self).weigh()
    }
}

impl<T: Weigh> Weigh for Option<T> {
    fn weigh(&self) -> usize {
        size_of::<Option<T>>() + self.as_ref().map_or(0, |t| t.weigh() - size_of::<T>())
    }
}

impl<A: Weigh, B: Weigh> Weigh for (A, B) {
    fn weigh(&self) -> usize {
        size_of::<(A, B)>() + self.0.weigh() + self.1.weigh() - size_of::<A>() - size_of::<B>()
    }
}

impl<K: Weigh, V: Weigh, S> Weigh for HashMap<K, V, S> {
    fn weigh(&self) -> usize {
        // hashbrown: one control byte per bucket plus the (K, V) slots.
        size_of::<Self>()
            + self.capacity() * (size_of::<(K, V)>() + 1)
            + self
                .iter()
                .map(|(k, v)| k.weigh() + v.weigh() - size_of::<K>() - size_of::<V>())
                .sum::<usize>()
    }
}

impl<K: Weigh, V: Weigh> Weigh for BTreeMap<K, V> {
    fn weigh(&self) -> usize {
        size_of::<Self>()
            + self
                .iter()
                .map(|(k, v)| k.weigh() + v.weigh())
                .sum::<usize>()
    }
}

/// Computes the weight of an entry.
///
/// [`DefaultWeigher`] uses [`Weigh`]; any `Fn(&K, &V) -> usize` is a weigher too. A weigher
/// must be deterministic: the same entry must weigh the same at insert and at removal.
pub trait Weigher<K, V>: Send + Sync + 'static {
    /// The entry's weight in bytes, not counting [`ENTRY_OVERHEAD`].
    fn weight(&self, key: &K, value: &V) -> usize;
}

/// Weighs keys and values through their [`Weigh`] implementations.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultWeigher;

impl<K: Weigh, V: Weigh> Weigher<K, V> for DefaultWeigher {
    fn weight(&self, key: &K, value: &V) -> usize {
        key.weigh() + value.weigh()
    }
}

impl<K, V, F> Weigher<K, V> for F
where
    F: Fn(&K, &V) -> usize + Send + Sync + 'static,
{
    fn weight(&self, key: &K, value: &V) -> usize {
        self(key, value)
    }
}

/// The fixed cost of one entry beyond its key and value: 4 bytes of LRU/LFU metadata, a
/// 4-byte hash-chain link, and on average 6 bytes of bucket array (the table holds between
/// one and two buckets per entry at 4 bytes each).
pub const ENTRY_OVERHEAD: usize = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_count_heap_bytes() {
        assert_eq!(7u64.weigh(), 8);
        assert_eq!([0u8; 16].weigh(), 16);
        let s = String::with_capacity(100);
        assert_eq!(s.weigh(), 24 + 100);
        let v: Vec<String> = vec!["ab".to_string()];
        assert_eq!(v.weigh(), 24 + 24 + v[0].capacity());
        assert_eq!(Some(5u32).weigh(), size_of::<Option<u32>>());
        let w = |_: &u64, v: &Vec<u8>| v.len();
        assert_eq!(Weigher::weight(&w, &1, &vec![1, 2, 3]), 3);
    }
}
