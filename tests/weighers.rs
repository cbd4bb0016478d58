//! Weighers: an unbounded cache needs no `Weigh`; a closure weigher keeps the cache's
//! type nameable; a memory bound weighs through `Weigh` or the weigher given.

use larder::{Background, Cache, FnWeigher, MemoryWeigher, Weigher, ENTRY_OVERHEAD};
use std::mem::size_of;

/// A value type without a `Weigh` implementation.
#[derive(Clone, Debug, PartialEq)]
struct Opaque {
    bytes: Vec<u8>,
}

#[test]
fn an_unbounded_cache_needs_no_weigh_and_counts_inline_sizes() {
    let c: Cache<u64, Opaque> = Cache::builder().background(Background::Manual).build();
    c.insert(
        1,
        Opaque {
            bytes: vec![0; 1000],
        },
    )
    .unwrap();
    assert_eq!(c.get(&1).unwrap().bytes.len(), 1000);
    let per_entry = size_of::<u64>() + size_of::<Opaque>() + ENTRY_OVERHEAD;
    assert_eq!(c.used_memory(), per_entry as u64);
    let c: Cache<u64, Opaque> = Cache::builder()
        .max_entries(10)
        .background(Background::Manual)
        .build();
    for k in 0..100 {
        c.insert(k, Opaque { bytes: Vec::new() }).unwrap();
    }
    assert!(c.len() <= 10);
}

#[test]
fn a_closure_weigher_keeps_the_type_nameable_and_bounds_memory() {
    struct Holder {
        cache: Cache<u64, Opaque, FnWeigher<u64, Opaque>>,
    }
    let h = Holder {
        cache: Cache::builder()
            .shards(1)
            .weigher(|_, v: &Opaque| 8 + v.bytes.len())
            .max_memory(10_000)
            .background(Background::Manual)
            .build(),
    };
    for k in 0..100 {
        h.cache
            .insert(
                k,
                Opaque {
                    bytes: vec![0; 1000],
                },
            )
            .unwrap();
    }
    assert!(h.cache.used_memory() <= 10_000);
    assert!(h.cache.len() < 10, "weights of 1 KB bound the count");
    // The boxed weigher is the same type for every closure.
    let other: Cache<u64, Opaque, FnWeigher<u64, Opaque>> =
        Cache::builder().weigher(|_, _| 1).build();
    drop(other);
}

#[test]
fn a_memory_bound_weighs_heap_bytes_through_weigh() {
    let c: Cache<u64, String> = Cache::builder()
        .shards(1)
        .max_memory(1 << 20)
        .background(Background::Manual)
        .build();
    c.insert(1, String::with_capacity(5000)).unwrap();
    assert_eq!(
        c.used_memory(),
        (8 + size_of::<String>() + 5000 + ENTRY_OVERHEAD) as u64
    );
}

/// A zero-sized weigher type, called without indirection.
struct ByLen;

impl Weigher<u64, Opaque> for ByLen {
    fn weight(&self, _: &u64, v: &Opaque) -> usize {
        v.bytes.len()
    }
}

impl MemoryWeigher<u64, Opaque> for ByLen {}

#[test]
fn a_custom_weigher_type_can_bound_memory() {
    let c: Cache<u64, Opaque, ByLen> = Cache::builder()
        .shards(1)
        .custom_weigher(ByLen)
        .max_memory(5_000)
        .background(Background::Manual)
        .build();
    for k in 0..20 {
        c.insert(
            k,
            Opaque {
                bytes: vec![1; 1000],
            },
        )
        .unwrap();
    }
    assert!(c.used_memory() <= 5_000);
    assert!(c.len() <= 5);
}

#[test]
fn overwriting_with_an_equal_key_of_another_weight_keeps_used_memory_exact() {
    // Equal keys can weigh differently (a `String`'s capacity): the stored key is the
    // one removal weighs, so the overwrite must be weighed with it too.
    let c: Cache<String, u64> = Cache::builder()
        .shards(1)
        .max_memory(1 << 20)
        .background(Background::Manual)
        .build();
    let mut roomy = String::with_capacity(1000);
    roomy.push('k');
    c.insert(roomy, 1).unwrap();
    let before = c.used_memory();
    c.insert("k".to_string(), 2).unwrap();
    assert_eq!(c.used_memory(), before, "an overwrite of an 8-byte value");
    assert!(c.remove("k").unwrap());
    assert_eq!(c.used_memory(), 0);
}
