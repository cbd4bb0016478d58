//! Lazy free: dropping big values on a background thread, like Redis's `lazyfree-lazy-*`.
//!
//! The queue is a mutex-protected deque with a condition variable rather than a crossbeam
//! channel: built from the `shim` types it is visible to loom, so a loom model checks the
//! real hand-off (see docs/design.md). Nothing is ever dropped under a shard lock: the
//! shard hands removed entries back and the cache disposes of them after unlocking.

use crate::shim::{lock, AtomicU64, Condvar, Mutex, Ordering};
use std::collections::VecDeque;

/// Which removals drop big values in the background (Redis's `lazyfree-lazy-*` switches),
/// and what "big" means. [`Cache::unlink`](crate::Cache::unlink) always defers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LazyFree {
    /// `lazyfree-lazy-eviction`: entries evicted to stay under `max_memory`.
    pub eviction: bool,
    /// `lazyfree-lazy-expire`: entries deleted because their TTL passed.
    pub expire: bool,
    /// `lazyfree-lazy-server-del`: values replaced by an overwrite.
    pub server_del: bool,
    /// `lazyfree-lazy-user-del`: make `remove` behave like `unlink`.
    pub user_del: bool,
    /// Entries weighing at least this many bytes are deferred; smaller ones are dropped
    /// inline, where handing them off would cost more than dropping them.
    pub threshold: usize,
}

impl LazyFree {
    /// The switches as bits (eviction, expire, server_del, user_del).
    pub(crate) fn switches(&self) -> u64 {
        u64::from(self.eviction)
            | u64::from(self.expire) << 1
            | u64::from(self.server_del) << 2
            | u64::from(self.user_del) << 3
    }

    pub(crate) fn from_switches(bits: u64, threshold: usize) -> LazyFree {
        LazyFree {
            eviction: bits & 1 != 0,
            expire: bits & 2 != 0,
            server_del: bits & 4 != 0,
            user_del: bits & 8 != 0,
            threshold,
        }
    }
}

impl Default for LazyFree {
    /// Redis 7's defaults: every switch off; a 64 KiB threshold.
    fn default() -> Self {
        LazyFree {
            eviction: false,
            expire: false,
            server_del: false,
            user_del: false,
            threshold: 64 * 1024,
        }
    }
}

impl LazyFree {
    /// Every switch on, with the default threshold.
    pub fn all() -> Self {
        LazyFree {
            eviction: true,
            expire: true,
            server_del: true,
            user_del: true,
            ..LazyFree::default()
        }
    }
}

type Garbage = Box<dyn Send>;

struct State {
    items: VecDeque<Garbage>,
    closed: bool,
}

/// The hand-off between writers and the lazy-free thread.
pub(crate) struct LazyFreeQueue {
    state: Mutex<State>,
    ready: Condvar,
    pending: AtomicU64,
    freed: AtomicU64,
}

impl LazyFreeQueue {
    pub(crate) fn new() -> Self {
        LazyFreeQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            pending: AtomicU64::new(0),
            freed: AtomicU64::new(0),
        }
    }

    /// Queues `item` to be dropped off this thread. After `close`, drops it here instead.
    pub(crate) fn defer(&self, item: Garbage) {
        let mut st = lock(&self.state);
        if st.closed {
            drop(st);
            drop(item);
            return;
        }
        st.items.push_back(item);
        self.pending.fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.ready.notify_one();
    }

    /// Objects queued and not yet dropped (`lazyfree_pending_objects`).
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Objects dropped by the lazy-free path so far (`lazyfreed_objects`).
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }

    /// Drops everything queued now, on the calling thread. Returns how many.
    pub(crate) fn drain_here(&self) -> usize {
        let items: Vec<Garbage> = lock(&self.state).items.drain(..).collect();
        let n = items.len();
        for item in items {
            drop(item);
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.freed.fetch_add(1, Ordering::Relaxed);
        }
        n
    }

    /// The worker: drops items until the queue is closed and empty.
    pub(crate) fn run_worker(&self) {
        loop {
            let item = {
                let mut st = lock(&self.state);
                loop {
                    if let Some(item) = st.items.pop_front() {
                        break item;
                    }
                    if st.closed {
                        return;
                    }
                    st = match self.ready.wait(st) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
            };
            drop(item);
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.freed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No more deferrals; the worker finishes what is queued and exits.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}
