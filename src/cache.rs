//! `Cache`: an array of locked shard cores, the background cron, events and lazy free.

use crate::builder::CacheBuilder;
use crate::clock::Clock;
use crate::config::LiveConfig;
use crate::counter::Striped;
use crate::cron::CronSignal;
use crate::events::{EventHub, EventKind, Subscriber};
use crate::journal::Journal;
use crate::latency::{Histogram, Op, OpHistograms, Slowlog, SlowlogEntry};
use crate::lazyfree::{LazyFree, LazyFreeQueue};
use crate::loader::Flights;
use crate::shard::{Cause, Dead, Env, Garbage, Shard};
use crate::shim::{
    lock, read, thread, write, Arc, AtomicU64, Condvar, Mutex, Ordering, RwLock, RwLockWriteGuard,
};
use crate::weigh::{DefaultWeigher, Weigher};
use crate::{Admission, LfuDecay, Policy};
use crossbeam_utils::CachePadded;
use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How background work (active expiry, lazy free, the coarse clock) is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// Two threads per cache: the cron (active expiry every `cron_period`) and the
    /// lazy-free worker. Both stop when the last handle of the cache is dropped. Under
    /// `--cfg loom` they are loom threads.
    Threads,
    /// No threads: the owner calls [`Cache::run_pending_tasks`]. The default under
    /// `--cfg loom`, where every thread must be one the model can see.
    Manual,
}

impl Default for Background {
    fn default() -> Self {
        if cfg!(loom) {
            Background::Manual
        } else {
            Background::Threads
        }
    }
}

/// The configuration a cache was built with.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) max_memory: Option<u64>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) policy: Policy,
    pub(crate) samples: usize,
    pub(crate) lfu_log_factor: u32,
    pub(crate) lfu_decay_time: u32,
    /// How LFU counters decay; `lfu_decay_time` selects `LfuDecay::Minutes`.
    pub(crate) lfu_decay: LfuDecay,
    /// Admission as configured; `None`: the builder's default (see `admission_in_force`).
    pub(crate) admission: Option<Admission>,
    /// Whether `eviction(..)` chose the policy (then admission is off unless asked for).
    pub(crate) policy_chosen: bool,
    /// Whether the admission sketch has a doorkeeper.
    pub(crate) doorkeeper: bool,
    pub(crate) lazy_free: LazyFree,
    pub(crate) cron_period: Duration,
    pub(crate) event_capacity: usize,
    pub(crate) latency_tracking: bool,
    pub(crate) slowlog_log_slower_than: Option<Duration>,
    pub(crate) slowlog_max_len: usize,
    pub(crate) name: String,
    /// The TTL a plain `insert` gives a key (`time_to_live`).
    pub(crate) time_to_live: Option<Duration>,
    /// A key neither read nor written for this long expires (`time_to_idle`).
    pub(crate) time_to_idle: Option<Duration>,
}

/// One shard: its lock and the figures readable without it.
pub(crate) struct Slot<K, V> {
    pub(crate) shard: RwLock<Shard<K, V>>,
    used: AtomicU64,
    len: AtomicU64,
}

impl<K: Hash + Eq, V> Slot<K, V> {
    /// Stores the shard's figures where `len()` and `used_memory()` read them lock-free.
    pub(crate) fn publish(&self, shard: &Shard<K, V>) {
        // Only this shard's lock holder writes these, so a load tells whether a store is
        // needed; reads (most operations) change nothing and skip the stores.
        let (used, len) = (shard.used(), shard.len() as u64);
        if self.used.load(Ordering::Relaxed) != used {
            self.used.store(used, Ordering::Relaxed);
        }
        if self.len.load(Ordering::Relaxed) != len {
            self.len.store(len, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Inner<K, V, W> {
    pub(crate) slots: Box<[CachePadded<Slot<K, V>>]>,
    pub(crate) shard_bits: u32,
    pub(crate) hasher: ahash::RandomState,
    pub(crate) weigher: W,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) coarse_ms: AtomicU64,
    /// When the cron last marked the shards' LRU clocks with the time.
    pub(crate) last_time_mark: AtomicU64,
    /// `lazyfree-lazy-*` as set now (`Cache::set_lazy_free`): the switches, one bit
    /// each, and the threshold.
    pub(crate) lazy_switches: AtomicU64,
    pub(crate) lazy_threshold: AtomicU64,
    pub(crate) peak: AtomicU64,
    pub(crate) events: EventHub<K>,
    pub(crate) lazy: Arc<LazyFreeQueue>,
    pub(crate) settings: Settings,
    /// The bounds and eviction settings in force (changed by `Cache::set_*`); each
    /// shard holds its own copy.
    pub(crate) live: Mutex<LiveConfig>,
    /// Held while a change of `live` is applied to the shards (one change at a time).
    pub(crate) reconfiguring: Mutex<()>,
    pub(crate) background: Background,
    pub(crate) cron: Arc<CronSignal>,
    pub(crate) threads: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Whether operations are timed (latency tracking or a slowlog threshold is on).
    pub(crate) timing: bool,
    pub(crate) slowlog: Slowlog<K>,
    /// Latency of operations that span shards.
    pub(crate) multi_latency: Mutex<OpHistograms>,
    /// The append-only log of a durable cache, attached once loading is done.
    pub(crate) journal: OnceLock<Box<dyn Journal<K, V>>>,
    /// Hits and misses of reads made under the shared lock (locked reads count in the
    /// shard).
    pub(crate) read_hits: Striped,
    pub(crate) read_misses: Striped,
    /// Set while a background rewrite runs.
    pub(crate) rewriting: std::sync::atomic::AtomicBool,
    /// Loads in progress (`get_with` and friends), for single flight.
    pub(crate) flights: Flights<K, V>,
}

/// A sharded, typed, in-process cache with Redis's memory model.
///
/// Cloning a `Cache` gives another handle to the same cache; the background threads stop
/// when the last handle is dropped.
///
/// `get` returns a clone of the value: for large values store `Arc<V>` so that a read
/// clones a pointer, not the data.
///
/// ```
/// use larder::{Cache, Policy};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// #[derive(Debug)]
/// struct Profile {
///     name: String,
/// }
///
/// // Unbounded caches need nothing of their types but `Clone` (`Arc` here).
/// let profiles: Cache<u64, Arc<Profile>> = Cache::builder()
///     .max_entries(10_000)
///     .eviction(Policy::AllKeysLfu)
///     .time_to_idle(Duration::from_secs(600))
///     .build();
///
/// // Read through: a miss runs the loader once, however many threads miss together.
/// let alice = profiles
///     .get_with(1, || Arc::new(Profile { name: "alice".into() }))
///     .unwrap();
/// assert_eq!(alice.name, "alice");
/// assert!(profiles.contains(&1));
///
/// // Handles are cheap to clone and share the cache.
/// let handle = profiles.clone();
/// std::thread::spawn(move || handle.remove(&1).unwrap()).join().unwrap();
/// assert_eq!(profiles.get(&1).map(|p| p.name.clone()), None);
/// ```
pub struct Cache<K, V, W = DefaultWeigher<K, V>> {
    pub(crate) inner: Arc<Inner<K, V, W>>,
}

impl<K, V, W> Clone for Cache<K, V, W> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, W> fmt::Debug for Cache<K, V, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.inner.slots.len())
            .field("name", &self.inner.settings.name)
            .field("config", &*lock(&self.inner.live))
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V> {
    /// A builder with Redis's defaults (unbounded; once bounded, `allkeys-lru`, with
    /// W-TinyLFU admission unless a policy is chosen, see [`CacheBuilder::admission`]),
    /// `maxmemory-samples 5`, `lfu-log-factor 10`, `lfu-decay-time 1`.
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::default()
    }
}

/// Holds the locks of a set of shards, always taken in ascending shard order.
pub(crate) struct Locked<'a, K, V> {
    pub(crate) guards: Vec<(usize, RwLockWriteGuard<'a, Shard<K, V>>)>,
}

impl<'a, K, V> Locked<'a, K, V> {
    pub(crate) fn shard(&mut self, idx: usize) -> &mut Shard<K, V> {
        let pos = self
            .guards
            .binary_search_by_key(&idx, |(i, _)| *i)
            .expect("shard not locked");
        &mut self.guards[pos].1
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    pub(crate) fn from_parts(
        settings: Settings,
        shards: usize,
        hasher: ahash::RandomState,
        weigher: W,
        clock: Arc<dyn Clock>,
        background: Background,
    ) -> Self {
        debug_assert!(shards.is_power_of_two());
        let live = LiveConfig::of(&settings);
        let cfg = live.shard_config(&settings, shards);
        let slots = (0..shards)
            .map(|i| {
                CachePadded::new(Slot {
                    shard: RwLock::new(Shard::new(cfg, hasher.clone(), hasher.hash_one(i))),
                    used: AtomicU64::new(0),
                    len: AtomicU64::new(0),
                })
            })
            .collect();
        let now = clock.now_ms();
        let flights = Flights::new(shards, &hasher);
        let inner = Arc::new(Inner {
            slots,
            shard_bits: shards.trailing_zeros(),
            hasher,
            weigher,
            clock,
            coarse_ms: AtomicU64::new(now),
            last_time_mark: AtomicU64::new(0),
            lazy_switches: AtomicU64::new(settings.lazy_free.switches()),
            lazy_threshold: AtomicU64::new(settings.lazy_free.threshold as u64),
            peak: AtomicU64::new(0),
            events: EventHub::new(),
            lazy: Arc::new(LazyFreeQueue::new()),
            background,
            cron: Arc::new(CronSignal {
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            threads: Mutex::new(Vec::new()),
            timing: settings.latency_tracking || settings.slowlog_log_slower_than.is_some(),
            slowlog: Slowlog::new(settings.slowlog_log_slower_than, settings.slowlog_max_len),
            multi_latency: Mutex::new(OpHistograms::default()),
            settings,
            live: Mutex::new(live),
            reconfiguring: Mutex::new(()),
            journal: OnceLock::new(),
            read_hits: Striped::default(),
            read_misses: Striped::default(),
            rewriting: std::sync::atomic::AtomicBool::new(false),
            flights,
        });
        if background == Background::Threads {
            Inner::start_threads(&inner);
        }
        Cache { inner }
    }

    // ---- reads -------------------------------------------------------------------

    /// Number of entries, including expired ones not yet deleted (as Redis's `DBSIZE`).
    /// Reads one atomic per shard; takes no lock.
    pub fn len(&self) -> usize {
        self.inner
            .slots
            .iter()
            .map(|s| s.len.load(Ordering::Relaxed) as usize)
            .sum()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in use: the sum of entry weights plus the per-entry overhead. Exact as of
    /// the last completed write; takes no lock.
    pub fn used_memory(&self) -> u64 {
        self.inner.used_memory()
    }

    // ---- writes ------------------------------------------------------------------

    // ---- iteration, events, background -------------------------------------------

    /// Subscribes to keyspace events. Each subscriber has a bounded queue (see
    /// [`CacheBuilder::event_capacity`]); when it is full, events are dropped and counted
    /// by [`Subscriber::dropped`], and writers never wait.
    pub fn subscribe(&self) -> Subscriber<K> {
        self.inner
            .events
            .subscribe(self.inner.settings.event_capacity)
    }

    /// Runs the background work now on the calling thread: one active-expiry cycle, the
    /// coarse clock refresh, and (with [`Background::Manual`]) every pending lazy free.
    /// Returns the number of keys expired.
    pub fn run_pending_tasks(&self) -> u64 {
        let expired = self.inner.cron_tick();
        if self.inner.background == Background::Manual {
            self.inner.lazy.drain_here();
        }
        expired
    }

    /// Values queued for the lazy-free thread and not yet dropped.
    pub fn lazyfree_pending_objects(&self) -> u64 {
        self.inner.lazy.pending()
    }

    /// The newest `n` slowlog entries, newest first (Redis's `SLOWLOG GET n`). Empty
    /// unless [`CacheBuilder::slowlog_log_slower_than`] is set.
    pub fn slowlog_get(&self, n: usize) -> Vec<SlowlogEntry<K>> {
        self.inner.slowlog.get(n)
    }

    /// Number of slowlog entries (`SLOWLOG LEN`).
    pub fn slowlog_len(&self) -> usize {
        self.inner.slowlog.len()
    }

    /// Empties the slowlog (`SLOWLOG RESET`).
    pub fn slowlog_reset(&self) {
        self.inner.slowlog.reset();
    }

    /// The latency histogram of `op` since the cache was built (Redis's `LATENCY
    /// HISTOGRAM`). Empty unless [`CacheBuilder::latency_tracking`] (or a slowlog
    /// threshold) is on. Locks each shard briefly.
    pub fn latency_histogram(&self, op: Op) -> Histogram {
        self.inner.latency().get(op).clone()
    }

    /// Returns unused allocator pages to the OS (Redis's `MEMORY PURGE`); with the
    /// `jemalloc` feature, purges every jemalloc arena. Returns whether anything was asked
    /// of the allocator.
    pub fn memory_purge(&self) -> bool {
        #[cfg(feature = "jemalloc")]
        {
            crate::alloc::memory_purge()
        }
        #[cfg(not(feature = "jemalloc"))]
        {
            false
        }
    }

    /// Publishes `info()`'s figures through the `metrics` crate now (the cron also does
    /// every cycle). Gauges are named `larder_<field>` with label `cache=<name>`.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish_metrics(&self) {
        crate::metrics_export::publish(&self.inner.settings.name, &self.inner.info());
    }

    /// The eviction policy in force.
    pub fn policy(&self) -> Policy {
        lock(&self.inner.live).policy
    }

    /// Locks the shards of `hashes` in ascending order (the one order every multi-shard
    /// operation uses, so they cannot deadlock).
    pub(crate) fn lock_shards(&self, hashes: impl Iterator<Item = u64>) -> Locked<'_, K, V> {
        let mut idx: Vec<usize> = hashes.map(|h| self.inner.shard_of(h)).collect();
        idx.sort_unstable();
        idx.dedup();
        Locked {
            guards: idx
                .into_iter()
                .map(|i| (i, write(&self.inner.slots[i].shard)))
                .collect(),
        }
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Makes room for about `additional` more entries spread over the shards, so a bulk
    /// load does not rehash every table at each doubling (a replica's full resync).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn reserve(&self, additional: usize) {
        let per_shard = additional / self.slots.len() + 1;
        for slot in self.slots.iter() {
            write(&slot.shard).reserve(per_shard);
        }
    }

    /// Attaches the log of a durable cache (once, after loading).
    #[cfg_attr(not(feature = "persistence"), allow(dead_code))]
    pub(crate) fn set_journal(&self, journal: Box<dyn Journal<K, V>>) {
        let _ = self.journal.set(journal);
    }

    /// The log, for a durable cache.
    pub(crate) fn journal(&self) -> Option<&dyn Journal<K, V>> {
        self.journal.get().map(|j| &**j)
    }

    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        if self.shard_bits == 0 {
            0
        } else {
            // High bits pick the shard; the table uses the low bits for buckets.
            (hash >> (64 - self.shard_bits)) as usize
        }
    }

    /// `time_to_idle` in milliseconds.
    #[inline]
    pub(crate) fn idle_ms(&self) -> Option<u64> {
        self.settings
            .time_to_idle
            .map(|d| (d.as_millis() as u64).max(1))
    }

    pub(crate) fn env(&self) -> Env<'_, W> {
        Env {
            weigher: &self.weigher,
            clock: &*self.clock,
            coarse_ms: self.coarse_ms.load(Ordering::Relaxed),
            idle_ms: self.idle_ms(),
            admit_all: false,
            known_absent: false,
            uncounted: false,
        }
    }

    /// Runs a single-key operation on the key's shard (timed when tracking is on).
    pub(crate) fn with_key<Q, R>(
        &self,
        op: Op,
        hash: u64,
        key: &Q,
        unlink: bool,
        f: impl FnOnce(&mut Shard<K, V>, &Env<'_, W>, &mut Garbage<K, V>) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.with_slot(self.shard_of(hash), Some(op), unlink, f, |s| {
            s.key_clone(hash, key)
        })
    }

    /// Runs `f` under shard `i`'s lock, then publishes figures, emits events, and drops
    /// what it removed after unlocking. With `op` and timing on, records the latency
    /// (lock wait included) and, if slow, a slowlog entry whose key `key_of` finds.
    pub(crate) fn with_slot<R>(
        &self,
        i: usize,
        op: Option<Op>,
        unlink: bool,
        f: impl FnOnce(&mut Shard<K, V>, &Env<'_, W>, &mut Garbage<K, V>) -> R,
        key_of: impl FnOnce(&Shard<K, V>) -> Option<K>,
    ) -> R {
        let slot = &self.slots[i];
        let started = match op {
            Some(_) if self.timing => Some(Instant::now()),
            _ => None,
        };
        let mut g = Garbage::new();
        let r = {
            let mut shard = write(&slot.shard);
            let r = f(&mut shard, &self.env(), &mut g);
            if let (Some(t0), Some(op)) = (started, op) {
                let d = t0.elapsed();
                shard.latency.record(op, d);
                if self.slowlog.is_slow(d) {
                    let key = key_of(&shard);
                    self.slowlog.push(self.clock.now_ms(), d, op, key);
                }
            }
            self.after_write(slot, &shard, &mut g);
            r
        };
        if !g.is_empty() {
            self.dispose(g, unlink);
        }
        r
    }

    /// Starts timing an operation that spans shards.
    pub(crate) fn multi_start(&self) -> Option<Instant> {
        self.timing.then(Instant::now)
    }

    /// Records an operation that spans shards.
    pub(crate) fn multi_record(&self, op: Op, started: Option<Instant>) {
        if let Some(t0) = started {
            let d = t0.elapsed();
            lock(&self.multi_latency).record(op, d);
            if self.slowlog.is_slow(d) {
                self.slowlog.push(self.clock.now_ms(), d, op, None);
            }
        }
    }

    /// The merged latency histograms of every shard and the multi-shard operations.
    pub(crate) fn latency(&self) -> OpHistograms {
        let mut all = lock(&self.multi_latency).clone();
        for slot in self.slots.iter() {
            all.merge(&read(&slot.shard).latency);
        }
        all
    }

    /// Under the shard lock: publish the shard's figures and emit removal events (under
    /// the lock so that events for one key keep their order).
    pub(crate) fn after_write(
        &self,
        slot: &Slot<K, V>,
        shard: &Shard<K, V>,
        g: &mut Garbage<K, V>,
    ) {
        slot.publish(shard);
        self.emit_removals(g, true);
    }

    /// Emits `del`/`expired`/`evicted` for what an operation removed; `del` only when
    /// `with_del` (a rolled-back transaction's removals did not happen).
    pub(crate) fn emit_removals(&self, g: &mut Garbage<K, V>, with_del: bool) {
        if g.is_empty() || !self.events.active() {
            return;
        }
        for d in g.unreported() {
            if let Dead::Entry { key, cause, .. } = d {
                let kind = match cause {
                    Cause::Removed if !with_del => continue,
                    Cause::Removed => EventKind::Del,
                    Cause::Expired => EventKind::Expired,
                    Cause::Evicted => EventKind::Evicted,
                };
                self.events.emit(kind, key);
            }
        }
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot<K, V> {
        &self.slots[i]
    }

    /// Drops what an operation removed, after its lock is released: on the lazy-free
    /// thread when the switches say so and the entry is big, or always for `unlink`.
    pub(crate) fn dispose(&self, g: Garbage<K, V>, unlink: bool) {
        if g.is_empty() {
            return;
        }
        let lf = LazyFree::from_switches(
            self.lazy_switches.load(Ordering::Relaxed),
            self.lazy_threshold.load(Ordering::Relaxed) as usize,
        );
        for d in g.into_items() {
            let defer = match &d {
                Dead::Entry { cause, weight, .. } => {
                    unlink
                        || (*weight >= lf.threshold as u64
                            && match cause {
                                Cause::Removed => lf.user_del,
                                Cause::Expired => lf.expire,
                                Cause::Evicted => lf.eviction,
                            })
                }
                Dead::Value { weight, .. } => lf.server_del && *weight >= lf.threshold as u64,
            };
            if defer {
                self.lazy.defer(Box::new(d));
            } else {
                drop(d);
            }
        }
    }

    pub(crate) fn used_memory(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.used.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn lazyfree_pending(&self) -> u64 {
        self.lazy.pending()
    }

    pub(crate) fn lazyfreed_objects(&self) -> u64 {
        self.lazy.freed()
    }

    /// The highest `used_memory` the cron or `info()` has seen.
    pub(crate) fn update_peak(&self) -> u64 {
        let used = self.used_memory();
        self.peak.fetch_max(used, Ordering::Relaxed).max(used)
    }
}

impl<K, V, W> Drop for Inner<K, V, W> {
    fn drop(&mut self) {
        self.cron.stop();
        self.lazy.close();
        self.events.close();
        if let Some(j) = self.journal.get() {
            // A clean close leaves nothing for a power cut to take.
            let _ = j.sync();
        }
        let me = thread::current().id();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            // The cron may itself hold the last handle for a moment; it exits on its own.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}
