//! Slowlog, latency histograms, and the allocator figures of `info()`.

use larder::{Background, Cache, FnWeigher, Op, Weigh};
use std::time::Duration;

/// A value whose weigher is slow, so an insert of it is a slow operation.
#[derive(Clone)]
struct Slow(u64);

impl Weigh for Slow {
    fn weigh(&self) -> usize {
        if self.0 == 13 {
            std::thread::sleep(Duration::from_millis(20));
        }
        8
    }
}

#[test]
fn slowlog_records_slow_operations_with_their_key() {
    // An unbounded cache weighs inline sizes; this one weighs through `Weigh`.
    let c: Cache<String, Slow, FnWeigher<String, Slow>> = Cache::builder()
        .weigher(|_, v: &Slow| v.weigh())
        .slowlog_log_slower_than(Duration::from_millis(10))
        .slowlog_max_len(2)
        .background(Background::Manual)
        .build();
    c.insert("fast".into(), Slow(1)).unwrap();
    assert_eq!(c.slowlog_len(), 0);
    c.insert("slow".into(), Slow(13)).unwrap();
    let log = c.slowlog_get(10);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].op, Op::Insert);
    assert_eq!(log[0].key.as_deref(), Some("slow"));
    assert!(log[0].duration >= Duration::from_millis(10));
    c.remove("slow").unwrap(); // weighs again: slow; the key is gone, so no key is logged
    c.insert("slow2".into(), Slow(13)).unwrap();
    assert_eq!(c.slowlog_len(), 2, "slowlog-max-len keeps the newest two");
    assert_eq!(c.slowlog_get(1)[0].key.as_deref(), Some("slow2"));
    c.slowlog_reset();
    assert_eq!(c.slowlog_len(), 0);
}

#[test]
fn latency_histograms_count_each_operation() {
    let c: Cache<u64, u64> = Cache::builder()
        .latency_tracking(true)
        .background(Background::Manual)
        .build();
    for i in 0..100 {
        c.insert(i, i).unwrap();
    }
    for i in 0..50 {
        c.get(&i);
    }
    c.batch().insert(1000, 1).get(1000).apply().unwrap();
    assert_eq!(c.latency_histogram(Op::Insert).count(), 100);
    assert_eq!(c.latency_histogram(Op::Get).count(), 50);
    assert_eq!(c.latency_histogram(Op::Batch).count(), 1);
    assert_eq!(c.latency_histogram(Op::Remove).count(), 0);
    let p99 = c.latency_histogram(Op::Get).quantile(0.99).unwrap();
    assert!(p99 < Duration::from_secs(1));
    let text = c.info().to_string();
    assert!(text.contains("# Latencystats"), "{text}");
    assert!(text.contains("latency_percentiles_usec_get:p50="), "{text}");

    let untracked: Cache<u64, u64> = Cache::builder().background(Background::Manual).build();
    untracked.get(&1);
    assert_eq!(untracked.latency_histogram(Op::Get).count(), 0);
    assert!(untracked.info().latency.is_empty());
}

#[test]
fn allocator_figures_follow_the_jemalloc_feature() {
    let c: Cache<u64, Vec<u8>> = Cache::builder().background(Background::Manual).build();
    for i in 0..1000 {
        c.insert(i, vec![0; 1000]).unwrap();
    }
    let info = c.info();
    if cfg!(feature = "jemalloc") {
        let a = info.memory.allocator.as_ref().expect("jemalloc figures");
        assert!(a.allocated > 0 && a.active >= a.allocated && a.resident > 0);
        assert!(info.to_string().contains("mem_fragmentation_ratio:"));
        c.clear().unwrap();
        assert!(c.memory_purge());
    } else {
        assert!(info.memory.allocator.is_none());
        assert!(!c.memory_purge());
    }
    let _ = Vec::<u8>::new().weigh();
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

#[cfg(feature = "metrics")]
#[test]
fn metrics_feature_exports_info_as_gauges() {
    use metrics::{Counter, Gauge, GaugeFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Store = Arc<Mutex<HashMap<String, f64>>>;
    struct Capture(Store);
    struct Slot(Store, String);
    impl GaugeFn for Slot {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, v: f64) {
            self.0.lock().unwrap().insert(self.1.clone(), v);
        }
    }
    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let label = key
                .labels()
                .map(|l| l.value().to_string())
                .collect::<String>();
            Gauge::from_arc(Arc::new(Slot(
                Arc::clone(&self.0),
                format!("{}{{{label}}}", key.name()),
            )))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }
    let store: Store = Arc::default();
    let recorder = Capture(Arc::clone(&store));
    let c: Cache<u64, u64> = Cache::builder()
        .name("sessions")
        .background(Background::Manual)
        .build();
    c.insert(1, 1).unwrap();
    c.get(&1);
    metrics::with_local_recorder(&recorder, || c.publish_metrics());
    let got = store.lock().unwrap();
    assert_eq!(got.get("larder_keys{sessions}"), Some(&1.0));
    assert_eq!(got.get("larder_keyspace_hits{sessions}"), Some(&1.0));
    assert!(got.contains_key("larder_used_memory{sessions}"));
}

#[test]
fn access_stats_give_idle_time_under_lru_and_frequency_under_lfu() {
    use larder::{AccessStats, ManualClock, Policy};
    use std::sync::Arc;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let c: Cache<u64, u64> = Cache::builder()
        .max_entries(1000)
        .shards(1)
        .eviction(Policy::AllKeysLru)
        .clock(clock.clone())
        .background(Background::Manual)
        .build();
    let idle = |k| match c.access_stats(&k) {
        Some(AccessStats::Idle(d)) => d.as_millis() as u64,
        other => panic!("{other:?}"),
    };
    // A second goes by with a write in it, and the cron marks the clock: what a busy
    // cache sees.
    let mut filler = 100;
    let mut seconds = |n: u64| {
        for _ in 0..n {
            clock.advance(1000);
            filler += 1;
            c.insert(filler, 0).unwrap();
            c.run_pending_tasks();
        }
    };
    c.insert(1, 1).unwrap();
    seconds(60);
    c.insert(2, 2).unwrap();
    seconds(10);
    assert!(idle(1).abs_diff(70_000) <= 1000, "{} ms", idle(1));
    assert!(idle(2).abs_diff(10_000) <= 1000, "{} ms", idle(2));
    // A read is an access.
    assert_eq!(c.get(&1), Some(1));
    assert!(idle(1) <= 1000, "{} ms", idle(1));
    assert_eq!(c.access_stats(&3), None);

    let lfu: Cache<u64, u64> = Cache::builder()
        .max_entries(1000)
        .eviction(Policy::AllKeysLfu)
        .background(Background::Manual)
        .build();
    lfu.insert(1, 1).unwrap();
    assert_eq!(
        lfu.access_stats(&1),
        Some(AccessStats::Frequency(larder::LFU_INIT_VAL))
    );
    for _ in 0..10_000 {
        lfu.get(&1);
    }
    let Some(AccessStats::Frequency(f)) = lfu.access_stats(&1) else {
        panic!("a frequency")
    };
    assert!(f > larder::LFU_INIT_VAL, "{f}");
    // Looking does not count as an access.
    assert_eq!(lfu.access_stats(&1), Some(AccessStats::Frequency(f)));
}
