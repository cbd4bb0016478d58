//! Admission (TinyLFU, W-TinyLFU), the default configuration, and LFU decay in logical
//! time.

use larder::{Admission, Background, Cache, EventKind, LfuDecay, Policy};

fn cache(
    f: impl FnOnce(larder::CacheBuilder<u64, u64>) -> larder::CacheBuilder<u64, u64>,
) -> Cache<u64, u64> {
    f(Cache::builder()
        .max_entries(100)
        .shards(1)
        .hasher_seed(5)
        .background(Background::Manual))
    .build()
}

/// Fills the cache with keys 0..100 and reads each `reads` times.
fn warm(c: &Cache<u64, u64>, reads: usize) {
    for k in 0..100 {
        c.insert(k, k).unwrap();
    }
    for _ in 0..reads {
        for k in 0..100 {
            assert_eq!(c.get(&k), Some(k));
        }
    }
}

/// Under TinyLFU a newcomer never asked for before does not displace frequently read
/// keys: the write is dropped and reported as an eviction of the new key.
#[test]
fn tinylfu_refuses_a_one_shot_newcomer_and_reports_it_evicted() {
    let c = cache(|b| b.eviction(Policy::AllKeysLru).admission(Admission::TinyLfu));
    warm(&c, 5);
    let sub = c.subscribe();
    let before = c.info().stats.evicted_keys;
    c.insert(1_000, 1).unwrap();
    assert!(!c.contains(&1_000));
    assert_eq!(c.len(), 100);
    assert!((0..100).all(|k| c.contains(&k)));
    assert_eq!(c.info().stats.evicted_keys, before + 1);
    let events: Vec<(EventKind, u64)> = sub.drain().into_iter().map(|e| (e.kind, e.key)).collect();
    assert_eq!(events, vec![(EventKind::Evicted, 1_000)]);
}

/// A newcomer asked for often enough is admitted under TinyLFU.
#[test]
fn tinylfu_admits_a_newcomer_more_frequent_than_the_victim() {
    let c = cache(|b| b.eviction(Policy::AllKeysLru).admission(Admission::TinyLfu));
    warm(&c, 1);
    for _ in 0..8 {
        c.insert(1_000, 1).unwrap();
    }
    assert_eq!(c.get(&1_000), Some(1));
    assert_eq!(c.len(), 100);
}

/// The same workload without `admission(..)`: a policy chosen with `eviction(..)` alone
/// behaves as Redis documents, so the newcomer enters.
#[test]
fn a_chosen_policy_alone_admits_every_newcomer() {
    let c = cache(|b| b.eviction(Policy::AllKeysLru));
    warm(&c, 5);
    c.insert(1_000, 1).unwrap();
    assert_eq!(c.get(&1_000), Some(1));
    assert_eq!(c.len(), 100);
}

/// The default (W-TinyLFU): the key just written is always present, and keys read
/// steadily stay while one-shot keys stream through; without admission the same stream
/// flushes them (their reuse distance is larger than the cache).
#[test]
fn default_window_keeps_the_last_write_and_the_frequent_keys() {
    let run = |c: Cache<u64, u64>| {
        warm(&c, 5);
        for k in 1_000..3_000u64 {
            c.insert(k, k).unwrap();
            assert_eq!(c.get(&k), Some(k), "key {k} just written");
            let hot = k % 80;
            if c.get(&hot).is_none() {
                c.insert(hot, hot).unwrap();
            }
            assert!(c.len() <= 100);
        }
        (0..80).filter(|k| c.contains(k)).count()
    };
    assert_eq!(larder::DEFAULT_ADMISSION, Admission::WindowTinyLfu);
    for seed in 0..8 {
        let default = run(cache(|b| b.hasher_seed(seed)));
        let plain = run(cache(|b| b.hasher_seed(seed).eviction(Policy::AllKeysLru)));
        assert!(
            default >= 60,
            "W-TinyLFU kept {default} of 80 steadily read keys"
        );
        assert!(plain < 60, "allkeys-lru alone kept {plain}");
    }
}

/// Under W-TinyLFU, keys hit since they left the window (protected) outlast keys never
/// hit since admission (probation), even when the hits are older than the probation
/// keys' writes: newcomers that win admission push out probation keys first.
#[test]
fn default_main_part_evicts_keys_never_hit_before_keys_hit_since_admission() {
    for seed in 0..8 {
        let c = cache(|b| b.hasher_seed(seed));
        for k in 0..50 {
            c.insert(k, k).unwrap();
        }
        for k in 0..50 {
            assert_eq!(c.get(&k), Some(k));
        }
        for k in 50..100 {
            c.insert(k, k).unwrap();
        }
        // Newcomers written often enough to win admission against any resident.
        for k in 1_000..1_030u64 {
            for _ in 0..6 {
                c.insert(k, k).unwrap();
            }
        }
        let hit = (0..50).filter(|k| c.contains(k)).count();
        let never_hit = (50..100).filter(|k| c.contains(k)).count();
        assert!(
            hit >= 40 && never_hit <= 30,
            "seed {seed}: kept {hit} of 50 hit keys and {never_hit} of 50 never hit"
        );
    }
}

/// Admission does not apply to the volatile policies: they stay as Redis documents.
#[test]
fn volatile_policies_ignore_admission() {
    let c = cache(|b| {
        b.eviction(Policy::VolatileLru)
            .admission(Admission::TinyLfu)
    });
    for k in 0..100 {
        c.insert_with_ttl(k, k, std::time::Duration::from_secs(3600))
            .unwrap();
    }
    for _ in 0..5 {
        for k in 0..100 {
            c.get(&k);
        }
    }
    c.insert_with_ttl(1_000, 1, std::time::Duration::from_secs(3600))
        .unwrap();
    assert!(c.contains(&1_000));
}

/// `LfuDecay::Turnovers(1)`: a counter loses one step per turnover of the shard (its
/// bound in writes), with no clock involved; Redis's minute decay leaves it alone.
#[test]
fn logical_lfu_decay_counts_turnovers_of_the_shard() {
    let counter_after_turnovers = |decay: LfuDecay, turnovers: u64| {
        let c: Cache<u64, u64> = Cache::builder()
            .max_entries(1_000)
            .shards(1)
            .eviction(Policy::AllKeysLfu)
            .lfu_decay(decay)
            // Factor 0 makes every hit a step up, so the counter before decay does
            // not depend on the random draws (at 10, 200 hits can end as low as 8).
            .lfu_log_factor(0)
            .background(Background::Manual)
            .build();
        c.insert(0, 0).unwrap();
        for _ in 0..200 {
            c.get(&0);
        }
        let hot = c.hot_keys(1)[0].1;
        // Overwrites of another key are writes to the shard that never touch key 0.
        for i in 0..turnovers * 1_000 {
            c.insert(1, i).unwrap();
        }
        (hot, c.hot_keys(2).iter().find(|(k, _)| *k == 0).unwrap().1)
    };
    let (hot, after) = counter_after_turnovers(LfuDecay::Turnovers(1), 6);
    assert_eq!(hot, 205, "the initial 5 plus one step per hit");
    assert!(
        (hot - 7..=hot - 5).contains(&after),
        "{hot} -> {after} after six turnovers"
    );
    let (hot, after) = counter_after_turnovers(LfuDecay::Minutes(1), 6);
    assert_eq!(after, hot, "no minute has passed");
    let (hot, after) = counter_after_turnovers(LfuDecay::Turnovers(0), 6);
    assert_eq!(after, hot, "0 disables decay");
}

/// Transactions stay all-or-nothing under TinyLFU: a committed transaction's new key is
/// present, and a failed one restores a key it deleted even where admission would
/// refuse that key as a newcomer.
#[test]
fn tinylfu_admits_a_transactions_writes_and_its_rollback() {
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_memory(1 << 20)
        .max_entries(100)
        .shards(1)
        .hasher_seed(5)
        .background(Background::Manual)
        .eviction(Policy::AllKeysLru)
        .admission(Admission::TinyLfu)
        .build();
    for k in 0..100 {
        c.insert(k, vec![0; 8]).unwrap();
    }
    for _ in 0..5 {
        for k in 0..100 {
            assert!(c.get(&k).is_some());
        }
    }
    // A plain insert of a one-shot newcomer is refused...
    c.insert(1_000, vec![1]).unwrap();
    assert!(!c.contains(&1_000));
    // ...but a transaction's is applied.
    let r: Result<(), larder::TxError<()>> = c.transaction(&[1_000], |tx| {
        tx.insert(1_000, vec![1]);
        Ok(())
    });
    r.unwrap();
    assert!(c.contains(&1_000));
    assert_eq!(c.len(), 100);

    // A transaction deletes the rarely used 1_000, writes a new key, then a value too
    // large for the cache: the rollback puts 1_000 back while the new key still holds
    // its place, which under admission would be a contest 1_000 loses.
    let r: Result<(), larder::TxError<()>> = c.transaction(&[1_000, 2_000, 3_000], |tx| {
        tx.remove(&1_000);
        tx.insert(2_000, vec![2]);
        tx.insert(3_000, vec![0; 2 << 20]);
        Ok(())
    });
    assert!(matches!(
        r,
        Err(larder::TxError::Write(larder::Error::EntryTooLarge { .. }))
    ));
    assert_eq!(c.get(&1_000), Some(vec![1]));
    assert!(!c.contains(&2_000));
    assert!(!c.contains(&3_000));
}
