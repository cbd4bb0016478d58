//! Guarantees that must hold while other threads write.

use larder::{Background, Cache, TxError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

/// SCAN returns every key present for the whole scan at least once, while other threads
/// insert and delete enough keys to make the tables grow and shrink many times (200
/// stable keys over 4 shards sit below the 1/8 fill at which a table halves).
#[test]
fn scan_sees_every_stable_key_while_tables_resize() {
    for round in 0..5u64 {
        let cache: Cache<String, u64> = Cache::builder()
            .shards(4)
            .hasher_seed(round)
            .background(Background::Manual)
            .build();
        let stable: Vec<String> = (0..200).map(|i| format!("stable:{i}")).collect();
        for (i, k) in stable.iter().enumerate() {
            cache.insert(k.clone(), i as u64).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let churners: Vec<_> = (0..2)
            .map(|t| {
                let c = cache.clone();
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Grow by thousands of keys, then delete them all: forces resizes.
                        for i in 0..3000 {
                            c.insert(format!("churn:{t}:{n}:{i}"), i).unwrap();
                        }
                        for i in 0..3000 {
                            c.remove(&format!("churn:{t}:{n}:{i}")).unwrap();
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let mut cursor = 0;
            loop {
                let page = cache.scan(cursor, Some("stable:*"), 10);
                seen.extend(page.keys);
                cursor = page.cursor;
                // Let the churners resize between steps.
                thread::yield_now();
                if cursor == 0 {
                    break;
                }
            }
            for k in &stable {
                assert!(seen.contains(k), "round {round}: scan missed {k}");
            }
            seen.clear();
        }
        stop.store(true, Ordering::Relaxed);
        for c in churners {
            c.join().unwrap();
        }
    }
}

/// Concurrent transfers between accounts keep the total constant, and many threads
/// locking overlapping shard sets in different key orders never deadlock.
#[test]
fn fund_transfers_keep_the_sum_and_never_deadlock() {
    const ACCOUNTS: u64 = 32;
    const THREADS: usize = 8;
    const TRANSFERS: usize = 3000;
    let cache: Cache<u64, i64> = Cache::builder()
        .shards(8)
        .background(Background::Manual)
        .build();
    for a in 0..ACCOUNTS {
        cache.insert(a, 1000).unwrap();
    }
    let start = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = cache.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut rnd = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                start.wait();
                let mut refused = 0;
                for _ in 0..TRANSFERS {
                    let from = rnd() % ACCOUNTS;
                    let to = rnd() % ACCOUNTS;
                    let amount = (rnd() % 50) as i64;
                    // Declare keys in an arbitrary order: locking must not depend on it.
                    let keys = if rnd() % 2 == 0 {
                        [from, to]
                    } else {
                        [to, from]
                    };
                    let r = c.transaction(&keys, |tx| {
                        let a = tx.get(&from).unwrap();
                        if a < amount {
                            return Err("insufficient");
                        }
                        let b = tx.get(&to).unwrap();
                        tx.insert(from, a - amount);
                        let b = if from == to { a - amount } else { b };
                        tx.insert(to, b + amount);
                        Ok(())
                    });
                    match r {
                        Ok(()) => {}
                        Err(TxError::Aborted(_)) => refused += 1,
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                refused
            })
        })
        .collect();
    // A reader checks the invariant with its own transactions while transfers run.
    let auditor = {
        let c = cache.clone();
        thread::spawn(move || {
            let all: Vec<u64> = (0..ACCOUNTS).collect();
            for _ in 0..200 {
                let sum: i64 = c
                    .transaction(&all, |tx| {
                        Ok::<_, ()>(all.iter().map(|a| tx.get(a).unwrap()).sum())
                    })
                    .unwrap();
                assert_eq!(sum, 1000 * ACCOUNTS as i64);
            }
        })
    };
    start.wait();
    for w in workers {
        w.join().unwrap();
    }
    auditor.join().unwrap();
    let total: i64 = (0..ACCOUNTS).map(|a| cache.get(&a).unwrap()).sum();
    assert_eq!(total, 1000 * ACCOUNTS as i64);
}

/// `insert_all` is atomic: a reader's transaction over the keys never sees some of one
/// call's entries and not the others, across shards.
#[test]
fn insert_all_is_seen_whole() {
    let cache: Cache<u64, u64> = Cache::builder()
        .shards(8)
        .background(Background::Manual)
        .build();
    let keys: Vec<u64> = (0..6).collect();
    cache
        .insert_all(keys.iter().map(|&k| (k, 0)).collect())
        .unwrap();
    let writer = {
        let c = cache.clone();
        let keys = keys.clone();
        thread::spawn(move || {
            for round in 1..=2_000u64 {
                c.insert_all(keys.iter().map(|&k| (k, round)).collect())
                    .unwrap();
            }
        })
    };
    let mut last = 0;
    while last < 2_000 && !writer.is_finished() {
        let seen: Vec<u64> = cache
            .transaction(&keys, |tx| {
                Ok::<_, ()>(keys.iter().map(|k| tx.get(k).unwrap()).collect())
            })
            .unwrap();
        assert!(seen.iter().all(|&v| v == seen[0]), "a torn write: {seen:?}");
        assert!(seen[0] >= last, "went back from {last} to {}", seen[0]);
        last = seen[0];
    }
    writer.join().unwrap();
    assert!(keys.iter().all(|k| cache.get(k) == Some(2_000)));
}

/// Readers and writers on many threads against a bounded cache: the bound holds and
/// every read returns a value that some writer wrote for that key.
#[test]
fn bounded_cache_under_contention() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_entries(5000)
        .shards(4)
        .background(Background::Manual)
        .build();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = cache.clone();
            thread::spawn(move || {
                for i in 0..50_000u64 {
                    let k = (i * 7919 + t) % 20_000;
                    match c.get(&k) {
                        Some(v) => assert_eq!(v % 20_000, k),
                        None => c.insert(k, k + 20_000 * t).unwrap(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(cache.len() <= 5000);
    let info = cache.info();
    assert_eq!(info.keyspace.keys as usize, cache.len());
}
