//! Behaviour of each cache operation, driven by a manual clock.

use larder::{Background, BatchResult, Cache, Error, EventKind, ManualClock, Policy, Ttl, TxError};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_700_000_000_000;

fn cache_with_clock() -> (Cache<String, u64>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let cache = Cache::builder()
        .clock(Arc::clone(&clock))
        .background(Background::Manual)
        .shards(4)
        .build();
    (cache, clock)
}

#[test]
fn insert_get_remove_contains() {
    let (c, _) = cache_with_clock();
    assert!(c.is_empty());
    c.insert("a".into(), 1).unwrap();
    c.insert("b".into(), 2).unwrap();
    assert_eq!(c.get("a"), Some(1));
    assert!(c.contains("b"));
    assert_eq!(c.len(), 2);
    c.insert("a".into(), 10).unwrap();
    assert_eq!(c.get("a"), Some(10));
    assert_eq!(c.len(), 2);
    assert!(c.remove("a").unwrap());
    assert!(!c.remove("a").unwrap());
    assert!(c.unlink("b").unwrap());
    assert!(c.is_empty());
    assert_eq!(c.get("a"), None);
    c.run_pending_tasks();
    assert_eq!(c.lazyfree_pending_objects(), 0);
}

#[test]
fn ttl_expire_persist_follow_redis() {
    let (c, clock) = cache_with_clock();
    assert_eq!(c.ttl("k"), Ttl::Missing);
    c.insert("k".into(), 1).unwrap();
    assert_eq!(c.ttl("k"), Ttl::Persistent);
    assert!(c.expire("k", Duration::from_millis(500)).unwrap());
    assert_eq!(c.ttl("k"), Ttl::Remaining(500));
    clock.advance(200);
    assert_eq!(c.ttl("k"), Ttl::Remaining(300));
    assert!(c.persist("k").unwrap());
    assert!(!c.persist("k").unwrap());
    assert_eq!(c.ttl("k"), Ttl::Persistent);
    c.insert_with_ttl("t".into(), 2, Duration::from_millis(100))
        .unwrap();
    // A plain insert clears the TTL, as SET does.
    c.insert("t".into(), 3).unwrap();
    assert_eq!(c.ttl("t"), Ttl::Persistent);
    c.insert_with_ttl("t".into(), 4, Duration::from_millis(100))
        .unwrap();
    clock.advance(100);
    assert_eq!(c.get("t"), None, "expired exactly at its deadline");
    assert_eq!(c.ttl("t"), Ttl::Missing);
    // Expire in the past deletes.
    assert!(c.expire_at("k", T0).unwrap());
    assert!(!c.contains("k"));
    assert!(!c.expire("nope", Duration::from_secs(1)).unwrap());
    let info = c.info();
    assert_eq!(info.stats.expired_keys, 2);
}

#[test]
fn active_expiry_deletes_without_access() {
    let (c, clock) = cache_with_clock();
    for i in 0..1000 {
        c.insert_with_ttl(format!("k{i}"), i, Duration::from_millis(10))
            .unwrap();
    }
    for i in 0..100 {
        c.insert(format!("p{i}"), i).unwrap();
    }
    clock.advance(11);
    let mut expired = 0;
    for _ in 0..100 {
        expired += c.run_pending_tasks();
        if c.len() == 100 {
            break;
        }
    }
    assert_eq!(expired, 1000);
    assert_eq!(c.len(), 100);
    assert_eq!(c.info().keyspace.expires, 0);
}

#[test]
fn max_entries_evicts_and_noeviction_refuses() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(1000)
        .shards(1)
        .background(Background::Manual)
        .build();
    for i in 0..5000 {
        c.insert(i, i).unwrap();
        assert!(c.len() <= 1000);
    }
    assert_eq!(c.info().stats.evicted_keys, 4000);

    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(10)
        .shards(1)
        .eviction(Policy::NoEviction)
        .background(Background::Manual)
        .build();
    for i in 0..10 {
        c.insert(i, i).unwrap();
    }
    let err = c.insert(99, 99).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }));
    assert!(err.to_string().starts_with("OOM command not allowed"));
    // Overwrites need no new entry and succeed.
    c.insert(3, 33).unwrap();
    assert_eq!(c.get(&3), Some(33));
    assert_eq!(c.len(), 10);
    assert!(!c.contains(&99));
}

#[test]
fn max_memory_bounds_used_memory() {
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_memory(256 * 1024)
        .background(Background::Manual)
        .build();
    for i in 0..10_000u64 {
        let v = vec![0u8; (i % 500) as usize];
        let w = larder::Weigh::weigh(&v) + 8 + larder::ENTRY_OVERHEAD;
        c.insert(i, v).unwrap();
        assert!(c.used_memory() <= 256 * 1024 + w as u64);
    }
    assert!(c.used_memory() <= 256 * 1024);
    assert_eq!(
        c.memory_usage(&9_999),
        Some((larder::Weigh::weigh(&vec![0u8; 499]) + 8 + larder::ENTRY_OVERHEAD) as u64)
    );
    let too_big = vec![0u8; 1 << 20];
    assert!(matches!(
        c.insert(1, too_big),
        Err(Error::EntryTooLarge { .. })
    ));
}

#[test]
fn clear_empties_everything() {
    let (c, _) = cache_with_clock();
    for i in 0..100 {
        c.insert_with_ttl(format!("{i}"), i, Duration::from_secs(5))
            .unwrap();
    }
    c.clear().unwrap();
    assert!(c.is_empty());
    assert_eq!(c.used_memory(), 0);
    assert_eq!(c.info().keyspace.expires, 0);
}

#[test]
fn scan_with_pattern_returns_every_match_once_when_static() {
    let (c, _) = cache_with_clock();
    for i in 0..500 {
        c.insert(format!("user:{i}"), i).unwrap();
        c.insert(format!("order:{i}"), i).unwrap();
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = c.scan(cursor, Some("user:*"), 37);
        seen.extend(page.keys);
        cursor = page.cursor;
        if cursor == 0 {
            break;
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..500).map(|i| format!("user:{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn batch_applies_in_order_per_key() {
    let (c, clock) = cache_with_clock();
    c.insert("x".into(), 1).unwrap();
    let results = c
        .batch()
        .get("x".into())
        .insert("x".into(), 2)
        .get("x".into())
        .remove("x".into())
        .get("x".into())
        .insert_with_ttl("y".into(), 5, Duration::from_millis(10))
        .persist("y".into())
        .expire("y".into(), Duration::from_millis(10))
        .apply()
        .unwrap();
    assert_eq!(
        results,
        vec![
            BatchResult::Value(Some(1)),
            BatchResult::Inserted(Ok(())),
            BatchResult::Value(Some(2)),
            BatchResult::Removed(true),
            BatchResult::Value(None),
            BatchResult::Inserted(Ok(())),
            BatchResult::Persisted(true),
            BatchResult::Expired(true),
        ]
    );
    clock.advance(10);
    assert!(!c.contains("y"));
}

#[test]
fn transaction_commits_or_rolls_back() {
    let (c, _) = cache_with_clock();
    c.insert("a".into(), 10).unwrap();
    c.insert("b".into(), 0).unwrap();
    let keys = ["a".to_string(), "b".to_string()];
    let moved: Result<u64, TxError<&str>> = c.transaction(&keys, |tx| {
        let a = tx.get(&keys[0]).unwrap_or(0);
        let b = tx.get(&keys[1]).unwrap_or(0);
        tx.insert(keys[0].clone(), a - 4);
        tx.insert(keys[1].clone(), b + 4);
        Ok(4)
    });
    assert_eq!(moved, Ok(4));
    assert_eq!((c.get("a"), c.get("b")), (Some(6), Some(4)));

    let aborted: Result<(), TxError<&str>> = c.transaction(&keys, |tx| {
        tx.insert(keys[0].clone(), 0);
        tx.remove(&keys[1]);
        assert_eq!(tx.get(&keys[0]), Some(0), "reads see own writes");
        Err("insufficient funds")
    });
    assert_eq!(aborted, Err(TxError::Aborted("insufficient funds")));
    assert_eq!((c.get("a"), c.get("b")), (Some(6), Some(4)));

    let undeclared: Result<(), TxError<()>> = c.transaction(&keys, |tx| {
        tx.insert("zzz".into(), 1);
        tx.insert(keys[0].clone(), 99);
        Ok(())
    });
    assert_eq!(undeclared, Err(TxError::UndeclaredKey));
    assert_eq!(c.get("a"), Some(6));
    assert!(!c.contains("zzz"));
}

#[test]
fn transaction_refused_write_restores_earlier_writes() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(2)
        .shards(1)
        .eviction(Policy::NoEviction)
        .background(Background::Manual)
        .build();
    c.insert(1, 1).unwrap();
    let r: Result<(), TxError<()>> = c.transaction(&[1, 2, 3], |tx| {
        tx.insert(1, 100);
        tx.insert(2, 200);
        tx.insert(3, 300); // third entry: refused under noeviction
        Ok(())
    });
    assert!(matches!(r, Err(TxError::Write(Error::OutOfMemory { .. }))));
    assert_eq!(c.get(&1), Some(1));
    assert_eq!(c.get(&2), None);
    assert_eq!(c.len(), 1);
}

/// `insert_all` (Redis's `MSET`): every entry or none; later entries for a key win;
/// TTLs are cleared; each write is reported.
#[test]
fn insert_all_writes_every_entry_or_none() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(2)
        .shards(1)
        .eviction(Policy::NoEviction)
        .background(Background::Manual)
        .build();
    c.insert(1, 1).unwrap();
    let r = c.insert_all(vec![(1, 100), (2, 200), (3, 300)]);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    assert_eq!((c.get(&1), c.get(&2), c.len()), (Some(1), None, 1));

    let (c, _) = cache_with_clock();
    c.insert_with_ttl("a".into(), 1, Duration::from_secs(60))
        .unwrap();
    let sub = c.subscribe();
    c.insert_all(vec![("a".into(), 2), ("b".into(), 3), ("a".into(), 4)])
        .unwrap();
    assert_eq!((c.get("a"), c.get("b")), (Some(4), Some(3)));
    assert_eq!(c.ttl("a"), Ttl::Persistent);
    let sets = sub
        .drain()
        .into_iter()
        .filter(|e| e.kind == EventKind::Set)
        .count();
    assert_eq!(sets, 3);
    c.insert_all(Vec::new()).unwrap();
    assert_eq!(c.len(), 2);
}

#[test]
fn events_report_set_del_expired_evicted_and_count_drops() {
    let clock = Arc::new(ManualClock::new(T0));
    let c: Cache<u64, u64> = Cache::builder()
        .clock(Arc::clone(&clock))
        .max_entries(2)
        .shards(1)
        .event_capacity(8)
        .background(Background::Manual)
        .build();
    let sub = c.subscribe();
    c.insert(1, 1).unwrap();
    c.insert_with_ttl(2, 2, Duration::from_millis(5)).unwrap();
    c.remove(&1).unwrap();
    clock.advance(5);
    assert_eq!(c.get(&2), None);
    c.insert(3, 3).unwrap();
    c.insert(4, 4).unwrap();
    c.insert(5, 5).unwrap(); // evicts 3 or 4
    let kinds: Vec<(EventKind, u64)> = sub.drain().into_iter().map(|e| (e.kind, e.key)).collect();
    assert_eq!(
        &kinds[..5],
        &[
            (EventKind::Set, 1),
            (EventKind::Set, 2),
            (EventKind::Del, 1),
            (EventKind::Expired, 2),
            (EventKind::Set, 3),
        ]
    );
    assert_eq!(kinds[5], (EventKind::Set, 4));
    assert_eq!(kinds[6].0, EventKind::Evicted);
    assert_eq!(kinds[7], (EventKind::Set, 5));
    assert_eq!(sub.dropped(), 0);
    for i in 0..20 {
        c.insert(100 + i, i).unwrap();
    }
    assert!(sub.dropped() > 0, "a full queue drops instead of blocking");
    assert_eq!(sub.drain().len(), 8);
    drop(c);
    assert_eq!(sub.recv(), None, "recv ends when the cache is gone");
}

#[test]
fn background_threads_expire_and_stop_on_drop() {
    let c: Cache<u64, u64> = Cache::builder()
        .cron_period(Duration::from_millis(5))
        .build();
    for i in 0..200 {
        c.insert_with_ttl(i, i, Duration::from_millis(1)).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !c.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.len(), 0, "the cron expired every key without access");
    let c2 = c.clone();
    drop(c);
    c2.insert(1, 1).unwrap();
    drop(c2); // joins both threads; a hang here fails the test by timeout
}

#[test]
fn info_renders_redis_style() {
    let c: Cache<u64, u64> = Cache::builder()
        .max_memory(1 << 20)
        .eviction(Policy::AllKeysLfu)
        .background(Background::Manual)
        .build();
    c.insert(1, 1).unwrap();
    c.get(&1);
    c.get(&2);
    let text = c.info().to_string();
    for line in [
        "maxmemory:1048576",
        "maxmemory_policy:allkeys-lfu",
        "keyspace_hits:1",
        "keyspace_misses:1",
        "db0:keys=1,expires=0,avg_ttl=0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert_eq!(c.hot_keys(5).len(), 1);
    assert_eq!(c.big_keys(5)[0].0, 1);
}
