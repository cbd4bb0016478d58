//! How much memory an entry costs: `used_memory` is the sum of every entry's weight plus a
//! fixed per-entry cost ([`ENTRY_OVERHEAD`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

/// Bytes a value occupies: its inline size plus what it owns on the heap.
///
/// Implemented for the common types; implement it for your own or give the builder a
/// closure with [`CacheBuilder::weigher`](crate::CacheBuilder::weigher). Only a cache
/// with a memory bound (or lazy free) needs it: an unbounded cache weighs inline sizes.
///
/// ```
/// use larder::{Cache, Weigh};
///
/// #[derive(Clone)]
/// struct Page {
///     title: String,
///     body: Vec<u8>,
/// }
///
/// impl Weigh for Page {
///     fn weigh(&self) -> usize {
///         // Inline size plus what the fields own on the heap.
///         std::mem::size_of::<Self>() + self.title.capacity() + self.body.capacity()
///     }
/// }
///
/// let cache: Cache<String, Page> = Cache::builder().max_memory(64 << 20).build();
/// # let _ = cache;
/// ```
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
/// [`DefaultWeigher`] uses [`Weigh`] once memory is bounded; a closure given to
/// [`CacheBuilder::weigher`](crate::CacheBuilder::weigher) becomes a [`FnWeigher`]; any
/// other type implementing this trait can be given to
/// [`CacheBuilder::custom_weigher`](crate::CacheBuilder::custom_weigher) (and is called
/// without indirection). A weigher must be deterministic: the same entry must weigh the
/// same at insert and at removal.
pub trait Weigher<K, V>: Send + Sync + 'static {
    /// The entry's weight in bytes, not counting [`ENTRY_OVERHEAD`].
    fn weight(&self, key: &K, value: &V) -> usize;

    /// Whether the weights count memory, so that a memory bound may be set on a running
    /// cache ([`Cache::set_max_memory`](crate::Cache::set_max_memory)); true unless
    /// overridden ([`DefaultWeigher`] weighs inline sizes only until the cache is built
    /// with a memory bound).
    fn weighs_memory(&self) -> bool {
        true
    }
}

/// A weigher that can bound memory: what [`CacheBuilder::max_memory`] and
/// [`CacheBuilder::lazy_free`] (whose threshold compares weights) ask of the builder's
/// weigher.
///
/// Implemented for [`DefaultWeigher`] when the key and value types implement [`Weigh`],
/// for [`FnWeigher`], and for closures. For your own [`Weigher`] type, an empty
/// `impl MemoryWeigher<K, V> for MyWeigher {}` does.
///
/// A value type without [`Weigh`] can be cached without a bound, but bounding its
/// memory needs a weigher, given before the bound:
///
/// ```compile_fail
/// # use larder::Cache;
/// #[derive(Clone)]
/// struct Opaque(Vec<u8>);
/// let c: Cache<u64, Opaque> = Cache::builder().max_memory(1 << 20).build();
/// ```
///
/// ```
/// # use larder::{Cache, FnWeigher};
/// #[derive(Clone)]
/// struct Opaque(Vec<u8>);
/// let unbounded: Cache<u64, Opaque> = Cache::builder().build();
/// let bounded: Cache<u64, Opaque, FnWeigher<u64, Opaque>> = Cache::builder()
///     .weigher(|_, v: &Opaque| v.0.capacity())
///     .max_memory(1 << 20)
///     .build();
/// # let _ = (unbounded, bounded);
/// ```
///
/// [`CacheBuilder::max_memory`]: crate::CacheBuilder::max_memory
/// [`CacheBuilder::lazy_free`]: crate::CacheBuilder::lazy_free
#[diagnostic::on_unimplemented(
    message = "bounding memory needs weights: `{K}` and `{V}` must implement `Weigh`, or the builder needs a weigher",
    note = "implement `larder::Weigh` for them, or call `.weigher(|key, value| bytes)` before `.max_memory(..)` / `.lazy_free(..)`"
)]
pub trait MemoryWeigher<K, V>: Weigher<K, V> {
    /// The weigher to use once memory is bounded (the default weigher switches from
    /// inline sizes to [`Weigh`]); unchanged by default.
    fn for_memory_bound(self) -> Self
    where
        Self: Sized,
    {
        self
    }
}

/// The weigher of a `Cache<K, V>`: inline sizes (`size_of::<K>() + size_of::<V>()`) while
/// the cache has no memory bound, so that an unbounded cache needs no [`Weigh`]; the
/// [`Weigh`] sizes (inline plus owned heap bytes) once
/// [`max_memory`](crate::CacheBuilder::max_memory) or
/// [`lazy_free`](crate::CacheBuilder::lazy_free) is set.
///
/// Either way it is one call through a function pointer chosen at build time.
pub struct DefaultWeigher<K, V> {
    weigh: fn(&K, &V) -> usize,
    /// Whether `weigh` goes through [`Weigh`].
    heap: bool,
}

impl<K, V> DefaultWeigher<K, V> {
    /// Weighs inline sizes only.
    pub(crate) fn inline() -> Self {
        DefaultWeigher {
            weigh: |_, _| size_of::<K>() + size_of::<V>(),
            heap: false,
        }
    }
}

impl<K, V> Clone for DefaultWeigher<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for DefaultWeigher<K, V> {}

impl<K, V> std::fmt::Debug for DefaultWeigher<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.heap { "Weigh" } else { "inline sizes" };
        f.debug_tuple("DefaultWeigher").field(&how).finish()
    }
}

impl<K: 'static, V: 'static> Weigher<K, V> for DefaultWeigher<K, V> {
    #[inline]
    fn weight(&self, key: &K, value: &V) -> usize {
        (self.weigh)(key, value)
    }

    fn weighs_memory(&self) -> bool {
        self.heap
    }
}

impl<K: Weigh + 'static, V: Weigh + 'static> MemoryWeigher<K, V> for DefaultWeigher<K, V> {
    fn for_memory_bound(self) -> Self {
        DefaultWeigher {
            weigh: |k, v| k.weigh() + v.weigh(),
            heap: true,
        }
    }
}

/// A weigher closure, boxed so that a cache with a custom weigher has a type you can
/// name: `Cache<K, V, FnWeigher<K, V>>`. Made by
/// [`CacheBuilder::weigher`](crate::CacheBuilder::weigher).
pub struct FnWeigher<K, V>(Arc<WeighFn<K, V>>);

/// The closure a [`FnWeigher`] holds.
type WeighFn<K, V> = dyn Fn(&K, &V) -> usize + Send + Sync;

impl<K, V> FnWeigher<K, V> {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&K, &V) -> usize + Send + Sync + 'static) -> Self {
        FnWeigher(Arc::new(f))
    }
}

impl<K, V> Clone for FnWeigher<K, V> {
    fn clone(&self) -> Self {
        FnWeigher(Arc::clone(&self.0))
    }
}

impl<K, V> std::fmt::Debug for FnWeigher<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnWeigher(..)")
    }
}

impl<K: 'static, V: 'static> Weigher<K, V> for FnWeigher<K, V> {
    #[inline]
    fn weight(&self, key: &K, value: &V) -> usize {
        (self.0)(key, value)
    }
}

impl<K: 'static, V: 'static> MemoryWeigher<K, V> for FnWeigher<K, V> {}

impl<K, V, F> Weigher<K, V> for F
where
    F: Fn(&K, &V) -> usize + Send + Sync + 'static,
{
    fn weight(&self, key: &K, value: &V) -> usize {
        self(key, value)
    }
}

impl<K, V, F> MemoryWeigher<K, V> for F where F: Fn(&K, &V) -> usize + Send + Sync + 'static {}

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

    #[test]
    fn the_default_weigher_counts_heap_bytes_once_memory_is_bounded() {
        let s = String::with_capacity(100);
        let inline = DefaultWeigher::<u64, String>::inline();
        assert_eq!(inline.weight(&1, &s), 8 + 24);
        let bounded = inline.for_memory_bound();
        assert_eq!(bounded.weight(&1, &s), 8 + 24 + 100);
        assert!(format!("{inline:?}").contains("inline"));
        assert!(format!("{bounded:?}").contains("Weigh"));
        let f = FnWeigher::new(|_: &u64, v: &String| v.len());
        assert_eq!(f.clone().weight(&1, &"abc".to_string()), 3);
    }
}
