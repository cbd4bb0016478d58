//! Lazy free: big values are dropped off the caller's thread and never under a shard
//! lock; small values are dropped inline.

use larder::{Background, Cache, LazyFree, Policy, Weigh};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Duration;

/// Where and how each value was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DropRecord {
    id: u32,
    thread: ThreadId,
    /// Whether another thread could take the cache's locks while the drop ran.
    locks_free: bool,
}

type Probe = Cache<u32, Recorder>;

static LOG: Mutex<Vec<DropRecord>> = Mutex::new(Vec::new());
static CACHE: OnceLock<Mutex<Option<Probe>>> = OnceLock::new();

/// A value of a chosen weight that records the thread that drops it and checks that no
/// shard lock is held at that moment: from another thread it asks the cache for
/// `info()`, which locks every shard; if a shard lock were held by the dropping thread
/// the request would not finish before the timeout.
struct Recorder {
    id: u32,
    weight: usize,
}

impl Clone for Recorder {
    fn clone(&self) -> Self {
        // Clones handed out by `get` are not the stored value; mark them so their drops
        // are ignored.
        Recorder {
            id: u32::MAX,
            weight: self.weight,
        }
    }
}

impl Weigh for Recorder {
    fn weigh(&self) -> usize {
        self.weight
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.id == u32::MAX {
            return;
        }
        let cache = CACHE.get().and_then(|c| c.lock().unwrap().clone());
        let locks_free = match cache {
            None => true,
            Some(c) => {
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    let _ = c.info();
                    let _ = tx.send(());
                });
                rx.recv_timeout(Duration::from_secs(5)).is_ok()
            }
        };
        LOG.lock().unwrap().push(DropRecord {
            id: self.id,
            thread: thread::current().id(),
            locks_free,
        });
    }
}

fn record_of(id: u32) -> Option<DropRecord> {
    LOG.lock().unwrap().iter().find(|r| r.id == id).cloned()
}

fn wait_for(id: u32) -> DropRecord {
    for _ in 0..500 {
        if let Some(r) = record_of(id) {
            return r;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("value {id} was never dropped");
}

/// One test so the shared probe cache is not raced by parallel tests.
#[test]
fn big_values_drop_off_thread_and_outside_locks_small_ones_inline() {
    let cache: Probe = Cache::builder()
        .max_entries(4)
        .shards(1)
        .eviction(Policy::AllKeysLru)
        .lazy_free(LazyFree {
            threshold: 1000,
            ..LazyFree::all()
        })
        .background(Background::Threads)
        .build();
    CACHE
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap()
        .replace(cache.clone());
    let me = thread::current().id();
    let big = |id| Recorder { id, weight: 5000 };
    let small = |id| Recorder { id, weight: 10 };

    // unlink: always deferred, even small values.
    cache.insert(1, small(1)).unwrap();
    assert!(cache.unlink(&1).unwrap());
    let r = wait_for(1);
    assert_ne!(r.thread, me, "unlink dropped on the caller's thread");
    assert!(r.locks_free);

    // remove with lazyfree-lazy-user-del: big deferred, small inline.
    cache.insert(2, big(2)).unwrap();
    cache.insert(3, small(3)).unwrap();
    cache.remove(&2).unwrap();
    cache.remove(&3).unwrap();
    let r3 = record_of(3).expect("small value dropped before remove returned");
    assert_eq!(r3.thread, me);
    assert!(r3.locks_free, "small value dropped under a shard lock");
    let r2 = wait_for(2);
    assert_ne!(r2.thread, me);
    assert!(r2.locks_free);

    // overwrite (lazyfree-lazy-server-del) and eviction (lazyfree-lazy-eviction).
    cache.insert(4, big(4)).unwrap();
    cache.insert(4, small(40)).unwrap();
    let r4 = wait_for(4);
    assert_ne!(r4.thread, me);
    for id in 10..20 {
        cache.insert(id, big(id)).unwrap(); // max 4 entries: evicts
    }
    let evicted: Vec<DropRecord> = (10..20).filter_map(record_of).collect();
    thread::sleep(Duration::from_millis(100));
    let evicted_later: Vec<DropRecord> = (10..20).filter_map(record_of).collect();
    assert!(
        evicted_later.len() >= 6,
        "evicted values dropped: {evicted_later:?} ({evicted:?} at first)"
    );
    for r in &evicted_later {
        assert_ne!(r.thread, me, "evicted big value dropped inline");
        assert!(r.locks_free);
    }

    // With every switch off, removal of a big value drops inline, outside the lock.
    let inline: Probe = Cache::builder()
        .shards(1)
        .background(Background::Manual)
        .build();
    CACHE.get().unwrap().lock().unwrap().replace(inline.clone());
    inline.insert(50, big(50)).unwrap();
    inline.remove(&50).unwrap();
    let r = record_of(50).expect("dropped before remove returned");
    assert_eq!(r.thread, me);
    assert!(r.locks_free);
    CACHE.get().unwrap().lock().unwrap().take();
}
