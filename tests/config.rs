//! Changing a running cache's bounds and policy (Redis's `CONFIG SET maxmemory`,
//! `maxmemory-policy`, ...): lowered bounds evict before the call returns, by the policy
//! in force, and are logged on a durable cache; the settings read back through
//! `config()` and `info()`.

use larder::{Admission, Background, Cache, Error, LfuDecay, Policy};
use std::time::Duration;

fn bounded(policy: Policy, max_memory: u64) -> Cache<u64, Vec<u8>> {
    Cache::builder()
        .max_memory(max_memory)
        .eviction(policy)
        .shards(4)
        .hasher_seed(7)
        .background(Background::Manual)
        .build()
}

#[test]
fn a_lowered_max_memory_evicts_down_to_it_before_returning() {
    for policy in [
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
    ] {
        let c = bounded(policy, 1 << 20);
        for i in 0..20_000u64 {
            c.insert(i, vec![1; 100]).unwrap();
        }
        let before = c.info();
        assert!(before.memory.used_memory > 512 << 10, "{policy}");
        c.set_max_memory(Some(256 << 10)).unwrap();
        let after = c.info();
        assert!(after.memory.used_memory <= 256 << 10, "{policy}");
        assert_eq!(after.memory.maxmemory, 256 << 10);
        assert!(
            after.stats.evicted_keys > before.stats.evicted_keys,
            "{policy}"
        );
        assert_eq!(c.config().max_memory, Some(256 << 10));
        // Writes keep within the new bound.
        for i in 20_000..30_000u64 {
            c.insert(i, vec![2; 100]).unwrap();
        }
        assert!(c.info().memory.used_memory <= 256 << 10, "{policy}");
        // Raising it lets the cache grow again.
        c.set_max_memory(Some(4 << 20)).unwrap();
        for i in 30_000..50_000u64 {
            c.insert(i, vec![3; 100]).unwrap();
        }
        assert!(c.info().memory.used_memory > 1 << 20, "{policy}");
    }
}

#[test]
fn volatile_policies_and_noeviction_evict_only_what_they_may() {
    let c = bounded(Policy::VolatileLru, 1 << 20);
    for i in 0..4000u64 {
        if i % 2 == 0 {
            c.insert_with_ttl(i, vec![1; 100], Duration::from_secs(600))
                .unwrap();
        } else {
            c.insert(i, vec![1; 100]).unwrap();
        }
    }
    c.set_max_memory(Some(64 << 10)).unwrap();
    // Every key with a TTL went; the others stay, over the bound, as in Redis.
    assert!((0..4000u64).step_by(2).all(|i| !c.contains(&i)));
    assert!((1..4000u64).step_by(2).all(|i| c.contains(&i)));
    assert!(matches!(
        c.insert(9999, vec![1; 100]),
        Err(Error::OutOfMemory { .. })
    ));

    let c = bounded(Policy::NoEviction, 1 << 20);
    for i in 0..2000u64 {
        c.insert(i, vec![1; 100]).unwrap();
    }
    c.set_max_memory(Some(64 << 10)).unwrap();
    assert_eq!(c.len(), 2000, "noeviction evicts nothing");
    assert!(matches!(
        c.insert(9999, vec![1; 100]),
        Err(Error::OutOfMemory { .. })
    ));
    c.set_max_memory(None).unwrap();
    c.insert(9999, vec![1; 100]).unwrap();
}

#[test]
fn a_memory_bound_needs_memory_weights() {
    let c: Cache<u64, Vec<u8>> = Cache::builder().background(Background::Manual).build();
    assert_eq!(
        c.set_max_memory(Some(1 << 20)),
        Err(Error::NotMemoryWeighed)
    );
    assert_eq!(c.config().max_memory, None);
    // An entry bound needs no weights.
    for i in 0..1000u64 {
        c.insert(i, vec![0; 10]).unwrap();
    }
    c.set_max_entries(Some(100)).unwrap();
    assert!(c.len() <= 100);
    assert_eq!(c.info().memory.max_entries, 100);
}

#[test]
fn changing_the_policy_and_its_knobs_keeps_the_cache_consistent() {
    // The default (allkeys-lru with W-TinyLFU) through LFU, a volatile policy (no
    // admission) and back, with writes between: every key read back holds the value
    // last written, and the bound holds.
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_entries(2000)
        .shards(2)
        .background(Background::Manual)
        .build();
    let mut last = std::collections::HashMap::new();
    let write_round = |c: &Cache<u64, Vec<u8>>,
                       last: &mut std::collections::HashMap<u64, Vec<u8>>,
                       round: u64| {
        for i in 0..3000u64 {
            let k = (i * 7 + round * 13) % 5000;
            let v = vec![round as u8; (k % 50) as usize];
            let r = if i % 3 == 0 {
                c.insert_with_ttl(k, v.clone(), Duration::from_secs(600))
            } else {
                c.insert(k, v.clone())
            };
            match r {
                Ok(()) => drop(last.insert(k, v)),
                // A volatile policy with no TTL left to evict refuses, as Redis does.
                Err(Error::OutOfMemory { policy, .. }) => assert!(policy.is_volatile()),
                Err(e) => panic!("{e}"),
            }
            let _ = c.get(&((k * 3) % 5000));
        }
    };
    let policies = [
        Policy::AllKeysLfu,
        Policy::VolatileTtl,
        Policy::AllKeysRandom,
        Policy::VolatileLfu,
        Policy::AllKeysLru,
    ];
    for (round, policy) in policies.into_iter().enumerate() {
        write_round(&c, &mut last, round as u64);
        c.set_eviction(policy).unwrap();
        assert_eq!(c.policy(), policy);
        assert_eq!(c.info().memory.maxmemory_policy, policy);
        assert!(c.len() <= 2000);
        for (k, v) in &last {
            if let Some(got) = c.get(k) {
                assert_eq!(&got, v, "key {k} after switching to {policy}");
            }
        }
    }
    c.set_maxmemory_samples(10).unwrap();
    c.set_lfu_log_factor(1).unwrap();
    c.set_lfu_decay(LfuDecay::Turnovers(2)).unwrap();
    c.set_eviction(Policy::AllKeysLfu).unwrap();
    write_round(&c, &mut last, 9);
    let cfg = c.config();
    assert_eq!(
        (cfg.samples, cfg.lfu_log_factor, cfg.lfu_decay),
        (10, 1, LfuDecay::Turnovers(2))
    );
    assert!(!c.hot_keys(5).is_empty(), "LFU counters after the switch");
    assert!(c.len() <= 2000);
}

#[test]
fn admission_follows_the_policy_in_force() {
    // TinyLFU applies to allkeys policies only: under volatile-lru a newcomer always
    // enters; back under allkeys-lru a newcomer with no history may be refused.
    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(64)
        .shards(1)
        .eviction(Policy::AllKeysLru)
        .admission(Admission::TinyLfu)
        .background(Background::Manual)
        .build();
    for round in 0..20 {
        for k in 0..64u64 {
            c.insert_with_ttl(k, round, Duration::from_secs(600))
                .unwrap();
            let _ = c.get(&k);
        }
    }
    // A newcomer refused by admission is gone right after its insert.
    let refused = |c: &Cache<u64, u64>, keys: std::ops::Range<u64>| {
        keys.filter(|&k| {
            c.insert_with_ttl(k, 2, Duration::from_secs(60)).unwrap();
            !c.contains(&k)
        })
        .count()
    };
    assert!(
        refused(&c, 1000..1064) > 0,
        "TinyLFU in force under allkeys-lru"
    );
    for round in 0..20 {
        for k in 0..64u64 {
            c.insert_with_ttl(k, round, Duration::from_secs(600))
                .unwrap();
            let _ = c.get(&k);
        }
    }
    c.set_eviction(Policy::VolatileLru).unwrap();
    assert_eq!(
        refused(&c, 2000..2064),
        0,
        "no admission under volatile-lru"
    );
    c.set_eviction(Policy::AllKeysLru).unwrap();
    for round in 0..20 {
        for k in 0..64u64 {
            c.insert_with_ttl(k, round, Duration::from_secs(600))
                .unwrap();
            let _ = c.get(&k);
        }
    }
    assert!(refused(&c, 3000..3064) > 0, "TinyLFU is back in force");
}

#[cfg(feature = "persistence")]
#[test]
fn evictions_by_a_lowered_bound_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Cache<u64, Vec<u8>> {
        Cache::builder()
            .max_memory(1 << 20)
            .eviction(Policy::AllKeysLru)
            .shards(4)
            .background(Background::Manual)
            .durability(larder::Durability::new(dir.path()).fsync(larder::Fsync::Always))
            .open()
            .unwrap()
    };
    let c = open();
    for i in 0..5000u64 {
        c.insert(i, vec![1; 100]).unwrap();
    }
    c.set_max_memory(Some(128 << 10)).unwrap();
    let kept: Vec<u64> = (0..5000).filter(|i| c.contains(i)).collect();
    assert!(kept.len() < 5000);
    drop(c);
    let c = open();
    let reopened: Vec<u64> = (0..5000).filter(|i| c.contains(i)).collect();
    assert_eq!(reopened, kept);
}
