//! `invalidate_if` and `retain`: removal by predicate over every shard.

use larder::{Background, Cache, EventKind};
use std::collections::BTreeSet;

fn filled(n: u32) -> Cache<u32, u32> {
    let c = Cache::builder()
        .shards(8)
        .background(Background::Manual)
        .build();
    for k in 0..n {
        c.insert(k, k * 10).unwrap();
    }
    c
}

#[test]
fn invalidate_if_removes_matching_entries_of_every_shard_as_deletes() {
    let c = filled(1_000);
    let sub = c.subscribe();
    let removed = c.invalidate_if(|k, v| k % 3 == 0 && *v == k * 10).unwrap();
    assert_eq!(removed, 334);
    assert_eq!(c.len(), 666);
    for k in 0..1_000 {
        assert_eq!(c.contains(&k), k % 3 != 0, "key {k}");
    }
    let mut deleted = BTreeSet::new();
    while let Some(e) = sub.try_recv() {
        assert_eq!(e.kind, EventKind::Del);
        deleted.insert(e.key);
    }
    assert_eq!(deleted, (0..1_000).filter(|k| k % 3 == 0).collect());
}

#[test]
fn retain_keeps_what_the_predicate_accepts() {
    let c = filled(100);
    assert_eq!(c.retain(|k, _| *k < 10).unwrap(), 90);
    assert_eq!(c.len(), 10);
    assert_eq!(c.retain(|_, _| true).unwrap(), 0);
    assert_eq!(c.len(), 10);
}

#[test]
fn a_panicking_predicate_removes_nothing_of_its_shard() {
    let c: Cache<u32, u32> = Cache::builder()
        .shards(1)
        .background(Background::Manual)
        .build();
    for k in 0..10 {
        c.insert(k, k).unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.invalidate_if(|k, _| {
            if *k == 7 {
                panic!("bad predicate")
            } else {
                true
            }
        })
    }));
    assert!(r.is_err());
    assert_eq!(c.len(), 10);
    // The cache stays usable.
    assert_eq!(c.invalidate_if(|_, _| true).unwrap(), 10);
}

#[cfg(feature = "persistence")]
#[test]
fn removals_by_predicate_are_logged() {
    use larder::{Durability, Fsync};
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Cache<u32, u32> {
        Cache::builder()
            .shards(4)
            .background(Background::Manual)
            .durability(Durability::new(dir.path()).fsync(Fsync::Always))
            .open()
            .unwrap()
    };
    let c = open();
    for k in 0..50 {
        c.insert(k, k).unwrap();
    }
    assert_eq!(c.invalidate_if(|k, _| k % 2 == 1).unwrap(), 25);
    drop(c);
    let c = open();
    assert_eq!(c.len(), 25);
    assert!((0..50).all(|k| c.contains(&k) == (k % 2 == 0)));
}
