//! The builder's `time_to_live` (a default TTL for plain inserts) and `time_to_idle`
//! (a key neither read nor written for that long expires).

use larder::{Background, Cache, ManualClock, Ttl};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_000_000;

fn with_clock(
    ttl: Option<Duration>,
    idle: Option<Duration>,
) -> (Cache<u32, String>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let mut b = Cache::builder()
        .shards(2)
        .background(Background::Manual)
        .clock(Arc::clone(&clock));
    if let Some(t) = ttl {
        b = b.time_to_live(t);
    }
    if let Some(i) = idle {
        b = b.time_to_idle(i);
    }
    (b.build(), clock)
}

#[test]
fn the_default_ttl_applies_to_plain_inserts_and_loads_only() {
    let (c, clock) = with_clock(Some(Duration::from_secs(10)), None);
    c.insert(1, "plain".into()).unwrap();
    c.insert_with_ttl(2, "own ttl".into(), Duration::from_secs(1))
        .unwrap();
    c.get_with(3, || "loaded".into()).unwrap();
    assert_eq!(c.ttl(&1), Ttl::Remaining(10_000));
    assert_eq!(c.ttl(&2), Ttl::Remaining(1_000));
    assert_eq!(c.ttl(&3), Ttl::Remaining(10_000));
    // `persist` still makes a key persistent.
    c.insert(4, "kept".into()).unwrap();
    assert!(c.persist(&4).unwrap());
    clock.advance(10_000);
    assert_eq!(c.get(&1), None);
    assert_eq!(c.get(&3), None);
    assert_eq!(c.get(&4).as_deref(), Some("kept"));
}

#[test]
fn reads_keep_an_idle_key_alive_and_idleness_expires_it() {
    let (c, clock) = with_clock(None, Some(Duration::from_secs(1)));
    c.insert(1, "read often".into()).unwrap();
    c.insert(2, "never read".into()).unwrap();
    assert_eq!(c.ttl(&1), Ttl::Remaining(1_000));
    for _ in 0..5 {
        clock.advance(900);
        assert_eq!(c.get(&1).as_deref(), Some("read often"));
    }
    // 4.5 s after its write, kept alive by reads; the other idled out.
    assert_eq!(c.get(&2), None);
    assert_eq!(c.ttl(&1), Ttl::Remaining(1_000));
    clock.advance(1_000);
    assert_eq!(c.get(&1), None, "a second without a read");
}

#[test]
fn contains_and_ttl_do_not_count_as_use() {
    let (c, clock) = with_clock(None, Some(Duration::from_secs(1)));
    c.insert(1, "x".into()).unwrap();
    clock.advance(900);
    assert!(c.contains(&1));
    assert!(matches!(c.ttl(&1), Ttl::Remaining(100)));
    clock.advance(100);
    assert!(!c.contains(&1));
}

#[test]
fn a_write_restarts_the_idle_period() {
    let (c, clock) = with_clock(None, Some(Duration::from_secs(1)));
    c.insert(1, "a".into()).unwrap();
    clock.advance(900);
    c.insert(1, "b".into()).unwrap();
    clock.advance(900);
    assert_eq!(c.get(&1).as_deref(), Some("b"));
}

#[test]
fn reads_never_extend_a_key_past_its_ttl() {
    let (c, clock) = with_clock(None, Some(Duration::from_secs(1)));
    c.insert_with_ttl(1, "hard".into(), Duration::from_millis(1_500))
        .unwrap();
    c.insert_with_ttl(2, "far".into(), Duration::from_secs(60))
        .unwrap();
    // The nearer deadline is the idle one.
    assert_eq!(c.ttl(&2), Ttl::Remaining(1_000));
    clock.advance(900);
    assert!(c.get(&1).is_some());
    assert!(c.get(&2).is_some());
    assert_eq!(c.ttl(&1), Ttl::Remaining(600));
    clock.advance(600);
    assert_eq!(c.get(&1), None, "its TTL passed although it was read");
    // `expire` sets a new hard deadline under the idle one.
    assert!(c.get(&2).is_some());
    assert!(c.expire(&2, Duration::from_millis(300)).unwrap());
    assert_eq!(c.ttl(&2), Ttl::Remaining(300));
    clock.advance(300);
    assert_eq!(c.get(&2), None);
}

#[test]
fn idle_keys_are_found_by_active_expiry() {
    let (c, clock) = with_clock(None, Some(Duration::from_secs(1)));
    for k in 0..100 {
        c.insert(k, "v".into()).unwrap();
    }
    clock.advance(1_000);
    let mut expired = 0;
    for _ in 0..100 {
        expired += c.run_pending_tasks();
        if c.is_empty() {
            break;
        }
    }
    assert_eq!(expired, 100);
    assert!(c.is_empty());
}

#[test]
fn ttl_and_idle_together_expire_at_the_first() {
    let (c, clock) = with_clock(Some(Duration::from_secs(2)), Some(Duration::from_secs(1)));
    c.insert(1, "v".into()).unwrap();
    for _ in 0..3 {
        clock.advance(600);
        assert!(c.get(&1).is_some());
    }
    clock.advance(200); // 2 s since the write: read every 600 ms, but its TTL passed
    assert_eq!(c.get(&1), None);
}

#[cfg(feature = "persistence")]
mod durable {
    use super::*;
    use larder::{Durability, Fsync};
    use std::path::Path;

    fn open(
        dir: &Path,
        clock: &Arc<ManualClock>,
        ttl: Option<Duration>,
        idle: Option<Duration>,
    ) -> Cache<u32, String> {
        let mut b = Cache::builder()
            .shards(2)
            .background(Background::Manual)
            .clock(Arc::clone(clock));
        if let Some(t) = ttl {
            b = b.time_to_live(t);
        }
        if let Some(i) = idle {
            b = b.time_to_idle(i);
        }
        b.durability(Durability::new(dir).fsync(Fsync::Always))
            .open()
            .unwrap()
    }

    /// Idle deadlines are not written to the log or a snapshot: a key kept alive by
    /// reads is recovered with a fresh idle period, while its hard TTL is kept.
    #[test]
    fn idle_deadlines_stay_in_memory_and_hard_ttls_survive() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let idle = Some(Duration::from_secs(1));
        let c = open(dir.path(), &clock, None, idle);
        c.insert(1, "read".into()).unwrap();
        c.insert_with_ttl(2, "hard".into(), Duration::from_secs(30))
            .unwrap();
        for _ in 0..3 {
            clock.advance(900);
            assert!(c.get(&1).is_some());
            assert!(c.get(&2).is_some());
        }
        // The snapshot is taken while the idle deadline is T0 + 3.7 s.
        c.rewrite_aof().unwrap();
        drop(c);
        clock.advance(5_000);
        let c = open(dir.path(), &clock, None, idle);
        assert_eq!(c.get(&1).as_deref(), Some("read"));
        assert_eq!(c.ttl(&1), Ttl::Remaining(1_000), "a fresh idle period");
        clock.advance(20_000);
        drop(c);
        let c = open(dir.path(), &clock, None, None);
        // 27.7 s after its write, the key with a 30 s TTL has 2.3 s left.
        assert_eq!(c.ttl(&2), Ttl::Remaining(2_300));
    }

    /// The default TTL is logged with the write; a key made persistent stays so
    /// after a restart (recovery does not apply the default TTL again).
    #[test]
    fn the_default_ttl_is_logged_and_not_reapplied_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let ttl = Some(Duration::from_secs(10));
        let c = open(dir.path(), &clock, ttl, None);
        c.insert(1, "default ttl".into()).unwrap();
        c.insert(2, "made persistent".into()).unwrap();
        assert!(c.persist(&2).unwrap());
        drop(c);
        clock.advance(1_000);
        let c = open(dir.path(), &clock, ttl, None);
        assert_eq!(c.ttl(&1), Ttl::Remaining(9_000));
        assert_eq!(c.ttl(&2), Ttl::Persistent);
        c.rewrite_aof().unwrap();
        drop(c);
        let c = open(dir.path(), &clock, ttl, None);
        assert_eq!(c.ttl(&1), Ttl::Remaining(9_000));
        assert_eq!(c.ttl(&2), Ttl::Persistent);
    }
}
