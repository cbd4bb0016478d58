//! Each model is small and named for the property it checks.

use larder::{Background, Cache, EventKind, LazyFree, ManualClock, Weigh};
use larder_loom_tests::sync::{Arc, AtomicUsize, Ordering};
use larder_loom_tests::{model, thread};
use std::time::Duration;

fn manual() -> Cache<u32, u32> {
    Cache::builder()
        .shards(1)
        .background(Background::Manual)
        .build()
}

/// Two writers race on one key: the key ends with one of their values, and the shard's
/// published figures agree with its contents.
#[test]
fn racing_inserts_leave_one_value() {
    model(|| {
        let c = manual();
        let c2 = c.clone();
        let t = thread::spawn(move || c2.insert(1, 20).unwrap());
        c.insert(1, 10).unwrap();
        t.join().unwrap();
        let v = c.get(&1).unwrap();
        assert!(v == 10 || v == 20);
        assert_eq!(c.len(), 1);
    });
}

/// A remove racing an insert: the remove reports success exactly when it found the
/// key, and the final state matches the order the two took.
#[test]
fn remove_racing_insert_is_linearizable() {
    model(|| {
        let c = manual();
        let c2 = c.clone();
        let t = thread::spawn(move || c2.remove(&7).unwrap());
        c.insert(7, 1).unwrap();
        let removed = t.join().unwrap();
        assert_eq!(c.contains(&7), !removed);
        assert_eq!(c.len(), usize::from(!removed));
    });
}

/// A reader sees nothing or the whole write; get never observes a torn state while
/// another thread inserts, reads and removes.
#[test]
fn get_during_insert_and_remove() {
    model(|| {
        let c = manual();
        let c2 = c.clone();
        let t = thread::spawn(move || {
            c2.insert(3, 33).unwrap();
            c2.remove(&3).unwrap();
        });
        let seen = c.get(&3);
        assert!(seen.is_none() || seen == Some(33));
        t.join().unwrap();
        assert_eq!(c.get(&3), None);
        assert!(c.is_empty());
    });
}

/// The event queue never blocks a writer: with room for one event and two writers,
/// every event is either delivered or counted as dropped.
#[test]
fn events_are_delivered_or_counted_never_blocking() {
    model(|| {
        let c: Cache<u32, u32> = Cache::builder()
            .shards(1)
            .event_capacity(1)
            .background(Background::Manual)
            .build();
        let sub = c.subscribe();
        let c2 = c.clone();
        let t = thread::spawn(move || c2.insert(1, 1).unwrap());
        c.insert(2, 2).unwrap();
        let early = sub.try_recv();
        t.join().unwrap();
        let mut got = usize::from(early.is_some());
        while let Some(e) = sub.try_recv() {
            assert_eq!(e.kind, EventKind::Set);
            got += 1;
        }
        assert_eq!(got as u64 + sub.dropped(), 2);
    });
}

/// The cron and lazy-free threads stop, and are joined, when the last handle is
/// dropped, whichever thread drops it.
#[test]
fn background_threads_stop_with_the_last_handle() {
    model(|| {
        let c: Cache<u32, u32> = Cache::builder()
            .shards(1)
            .background(Background::Threads)
            .cron_period(Duration::from_millis(1))
            .build();
        let c2 = c.clone();
        let t = thread::spawn(move || {
            c2.insert(1, 1).unwrap();
            drop(c2);
        });
        c.insert(2, 2).unwrap();
        drop(c);
        t.join().unwrap();
        // The model ends only if every thread larder started has exited.
    });
}

/// `unlink` hands the value to the lazy-free worker: it is dropped exactly once, and by
/// the time the cache is gone (the worker joined) it has been dropped.
#[test]
fn lazy_free_hand_off_drops_exactly_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let c: Cache<u32, Counted> = Cache::builder()
            .shards(1)
            .background(Background::Threads)
            .lazy_free(LazyFree::all())
            .build();
        c.insert(1, Counted(Arc::clone(&drops))).unwrap();
        let c2 = c.clone();
        let t = thread::spawn(move || {
            c2.unlink(&1).unwrap();
        });
        t.join().unwrap();
        assert_eq!(c.get(&1).map(|_| ()), None);
        drop(c);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// Counts drops of the original (clones handed out by `get` count too, so none are made
/// in the model above after the unlink).
struct Counted(Arc<AtomicUsize>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted(Arc::new(AtomicUsize::new(0)))
    }
}

impl Weigh for Counted {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A model as a larder user would write it: their own type memoises an expensive
/// function in a larder cache and is called from two threads; active expiry and
/// lazy free are driven explicitly with `run_pending_tasks`.
#[test]
fn user_style_memoiser_model() {
    struct Memo {
        cache: Cache<u32, u32>,
        computed: AtomicUsize,
    }
    impl Memo {
        fn get_or_compute(&self, k: u32) -> u32 {
            if let Some(v) = self.cache.get(&k) {
                return v;
            }
            self.computed.fetch_add(1, Ordering::SeqCst);
            let v = k * 2;
            self.cache
                .insert_with_ttl(k, v, Duration::from_millis(10))
                .unwrap();
            v
        }
    }
    model(|| {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let memo = Arc::new(Memo {
            cache: Cache::builder()
                .shards(1)
                .clock(std::sync::Arc::clone(&clock))
                .background(Background::Manual)
                .build(),
            computed: AtomicUsize::new(0),
        });
        let m2 = Arc::clone(&memo);
        let t = thread::spawn(move || m2.get_or_compute(4));
        assert_eq!(memo.get_or_compute(4), 8);
        assert_eq!(t.join().unwrap(), 8);
        let computed = memo.computed.load(Ordering::SeqCst);
        assert!((1..=2).contains(&computed));
        clock.advance(10);
        memo.cache.run_pending_tasks();
        assert!(
            memo.cache.is_empty(),
            "the TTL passed and the cron step expired it"
        );
    });
}

/// Two threads race `get_with` on one key: the loader runs once, and both see its
/// value (the second either waits on the first's load or finds the value stored).
#[test]
fn racing_get_with_loads_once() {
    model(|| {
        let c = manual();
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |loads: &AtomicUsize| {
            loads.fetch_add(1, Ordering::SeqCst);
            77
        };
        let (c2, loads2) = (c.clone(), Arc::clone(&loads));
        let t = thread::spawn(move || c2.get_with(5, || load(&loads2)).unwrap());
        assert_eq!(c.get_with(5, || load(&loads)).unwrap(), 77);
        assert_eq!(t.join().unwrap(), 77);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(c.loading_waiters(), 0);
        assert_eq!(c.get(&5), Some(77));
    });
}

/// Three threads race `get_with` on one key: still one load, and all three see it
/// (two may wait on the same flight).
#[test]
fn three_racing_get_with_load_once() {
    model(|| {
        let c = manual();
        let loads = Arc::new(AtomicUsize::new(0));
        let spawn = |c: Cache<u32, u32>, loads: Arc<AtomicUsize>| {
            thread::spawn(move || {
                c.get_with(5, || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    77
                })
                .unwrap()
            })
        };
        let a = spawn(c.clone(), Arc::clone(&loads));
        let b = spawn(c.clone(), Arc::clone(&loads));
        let mine = c
            .get_with(5, || {
                loads.fetch_add(1, Ordering::SeqCst);
                77
            })
            .unwrap();
        assert_eq!((mine, a.join().unwrap(), b.join().unwrap()), (77, 77, 77));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(c.loading_waiters(), 0);
    });
}

/// A load whose future is dropped before it finishes (a cancelled task) releases a
/// thread waiting on it, which then loads itself; a waiting future that is dropped
/// leaves nothing behind.
#[test]
fn a_cancelled_load_releases_the_waiter() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    model(|| {
        let c = manual();
        let c2 = c.clone();
        let t = thread::spawn(move || {
            // Never finishes: if this task leads, only dropping it ends its flight.
            let mut f = Box::pin(c2.get_with_async(5, std::future::pending::<u32>()));
            let mut cx = Context::from_waker(Waker::noop());
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(v) => assert_eq!(v.unwrap(), 1),
                Poll::Pending => drop(f),
            }
        });
        assert_eq!(c.get_with(5, || 1).unwrap(), 1);
        t.join().unwrap();
        assert_eq!(c.loading_waiters(), 0);
        assert_eq!(c.get(&5), Some(1));
    });
}

/// A loader that panics releases a thread waiting on it, which then loads itself.
#[test]
fn a_panicking_load_releases_the_waiter() {
    model(|| {
        let c = manual();
        let c2 = c.clone();
        let t = thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c2.get_with(5, || panic!("loader failed")).unwrap()
            }));
            // It panicked as leader, or found the other thread's value.
            if let Ok(v) = r {
                assert_eq!(v, 1);
            }
        });
        assert_eq!(c.get_with(5, || 1).unwrap(), 1);
        t.join().unwrap();
        assert_eq!(c.loading_waiters(), 0);
        assert_eq!(c.get(&5), Some(1));
    });
}
