//! Keyspace events: what Redis publishes as `__keyevent@0__:set`, `del`, `expired` and
//! `evicted`.
//!
//! Each subscriber has its own bounded queue. A writer never waits for a reader: when a
//! queue is full the event is dropped and the subscriber's dropped counter grows.

use crate::shim::{lock, Arc, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, Weak};
use std::collections::VecDeque;
use std::time::Duration;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written (insert, overwrite, or a change of TTL by insert).
    Set,
    /// The key was removed by `remove`, `unlink` or `clear`.
    Del,
    /// The key's TTL passed and it was deleted (on access or by active expiry).
    Expired,
    /// The key was evicted to stay under `max_memory`.
    Evicted,
}

/// One keyspace event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<K> {
    /// What happened.
    pub kind: EventKind,
    /// The key it happened to.
    pub key: K,
}

struct State<K> {
    buf: VecDeque<Event<K>>,
    closed: bool,
}

struct Queue<K> {
    state: Mutex<State<K>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

/// The cache's side: the list of live subscribers.
pub(crate) struct EventHub<K> {
    subscribers: Mutex<Vec<Weak<Queue<K>>>>,
    /// Subscribers ever registered and not yet pruned: a lock-free check on the write path.
    active: AtomicUsize,
}

impl<K> EventHub<K> {
    pub(crate) fn new() -> Self {
        EventHub {
            subscribers: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
        }
    }

    /// Whether anyone may be listening; writers skip cloning keys when not.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    pub(crate) fn subscribe(&self, capacity: usize) -> Subscriber<K> {
        let q = Arc::new(Queue {
            state: Mutex::new(State {
                buf: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        });
        let mut subs = lock(&self.subscribers);
        subs.push(Arc::downgrade(&q));
        self.active.store(subs.len(), Ordering::Release);
        Subscriber { queue: q }
    }

    /// The cache is gone: wake every blocked reader.
    pub(crate) fn close(&self) {
        for w in lock(&self.subscribers).drain(..) {
            if let Some(q) = w.upgrade() {
                lock(&q.state).closed = true;
                q.ready.notify_all();
            }
        }
        self.active.store(0, Ordering::Release);
    }
}

impl<K: Clone> EventHub<K> {
    pub(crate) fn emit(&self, kind: EventKind, key: &K) {
        let mut subs = lock(&self.subscribers);
        let before = subs.len();
        subs.retain(|w| match w.upgrade() {
            Some(q) => {
                q.push(Event {
                    kind,
                    key: key.clone(),
                });
                true
            }
            None => false,
        });
        if subs.len() != before {
            self.active.store(subs.len(), Ordering::Release);
        }
    }
}

impl<K> Queue<K> {
    fn push(&self, e: Event<K>) {
        let mut st = lock(&self.state);
        if st.buf.len() >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.buf.push_back(e);
        drop(st);
        self.ready.notify_one();
    }
}

/// A subscription to keyspace events, from [`Cache::subscribe`](crate::Cache::subscribe).
///
/// Events arrive in the order they happened for any one key. Dropping the subscriber
/// unsubscribes it.
pub struct Subscriber<K> {
    queue: Arc<Queue<K>>,
}

impl<K> Subscriber<K> {
    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<Event<K>> {
        lock(&self.queue.state).buf.pop_front()
    }

    /// Waits for the next event; `None` once the cache is dropped and the queue is empty.
    pub fn recv(&self) -> Option<Event<K>> {
        let mut st = lock(&self.queue.state);
        loop {
            if let Some(e) = st.buf.pop_front() {
                return Some(e);
            }
            if st.closed {
                return None;
            }
            st = match self.queue.ready.wait(st) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }

    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event<K>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = lock(&self.queue.state);
        loop {
            if let Some(e) = st.buf.pop_front() {
                return Some(e);
            }
            let now = std::time::Instant::now();
            if st.closed || now >= deadline {
                return None;
            }
            st = match self.queue.ready.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Takes every event waiting now.
    pub fn drain(&self) -> Vec<Event<K>> {
        lock(&self.queue.state).buf.drain(..).collect()
    }

    /// How many events were dropped because this subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }
}

impl<K> std::fmt::Debug for Subscriber<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("capacity", &self.queue.capacity)
            .field("dropped", &self.dropped())
            .finish()
    }
}
