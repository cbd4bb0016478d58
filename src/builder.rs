//! `CacheBuilder`: every knob, named after its Redis configuration directive.

use crate::cache::{Background, Cache, Settings};
use crate::clock::{Clock, SystemClock};
use crate::lazyfree::LazyFree;
use crate::weigh::{DefaultWeigher, FnWeigher, MemoryWeigher, Weigher};
use crate::{Admission, LfuDecay, Policy};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Cache`]. Start from [`Cache::builder`].
///
/// ```
/// use larder::{Cache, Policy};
/// let cache: Cache<String, Vec<u8>> = Cache::builder()
///     .max_memory(64 << 20)              // maxmemory 64mb
///     .eviction(Policy::AllKeysLfu)      // maxmemory-policy allkeys-lfu
///     .maxmemory_samples(10)             // maxmemory-samples 10
///     .build();
/// # let _ = cache;
/// ```
#[must_use]
pub struct CacheBuilder<K, V, W = DefaultWeigher<K, V>> {
    pub(crate) settings: Settings,
    pub(crate) shards: Option<usize>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) weigher: W,
    pub(crate) background: Background,
    pub(crate) hasher_seed: Option<u64>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Default for CacheBuilder<K, V, DefaultWeigher<K, V>> {
    fn default() -> Self {
        CacheBuilder {
            settings: Settings {
                max_memory: None,
                max_entries: None,
                policy: DEFAULT_POLICY,
                samples: 5,
                lfu_log_factor: 10,
                lfu_decay_time: 1,
                lfu_decay: LfuDecay::default(),
                admission: None,
                policy_chosen: false,
                doorkeeper: false,
                lazy_free: LazyFree::default(),
                cron_period: Duration::from_millis(100),
                event_capacity: 1024,
                latency_tracking: false,
                slowlog_log_slower_than: None,
                slowlog_max_len: 128,
                name: "default".to_string(),
                time_to_live: None,
                time_to_idle: None,
            },
            shards: None,
            clock: Arc::new(SystemClock),
            weigher: DefaultWeigher::inline(),
            background: Background::default(),
            hasher_seed: None,
            _types: PhantomData,
        }
    }
}

impl<K, V, W> CacheBuilder<K, V, W> {
    /// `maxmemory`: the bound on `used_memory` in bytes (weights plus the per-entry
    /// overhead). Unbounded by default. Each shard holds an equal share.
    ///
    /// Bounding memory needs weights: the key and value types implement
    /// [`Weigh`](crate::Weigh), or a [`weigher`](Self::weigher) was given first.
    pub fn max_memory(mut self, bytes: u64) -> Self
    where
        W: MemoryWeigher<K, V>,
    {
        self.settings.max_memory = Some(bytes);
        self.weigher = self.weigher.for_memory_bound();
        self
    }

    /// A bound on the number of entries, in addition to (or instead of) `max_memory`.
    /// Each shard holds an equal share.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.settings.max_entries = Some(n);
        self
    }

    /// `maxmemory-policy`: what to evict when a bound is reached. Without this call the
    /// cache uses [`DEFAULT_POLICY`] with [`DEFAULT_ADMISSION`]; with it, the policy
    /// alone, as Redis documents it, unless [`admission`](Self::admission) is also set.
    pub fn eviction(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self.settings.policy_chosen = true;
        self
    }

    /// Whether a new key may push out a resident one (TinyLFU, W-TinyLFU) or always
    /// enters (Redis's behaviour). Applies to the allkeys policies only. Default: none
    /// when [`eviction`](Self::eviction) chose the policy, else [`DEFAULT_ADMISSION`].
    pub fn admission(mut self, admission: Admission) -> Self {
        self.settings.admission = Some(admission);
        self
    }

    /// Gives the admission sketch TinyLFU's doorkeeper: a Bloom filter of 4 bytes per
    /// entry of the bound that takes each key's first access in a period, so keys seen
    /// once never reach the counters. Off by default (see BENCHMARKS.md for what it
    /// changes); no effect without admission.
    pub fn admission_doorkeeper(mut self, on: bool) -> Self {
        self.settings.doorkeeper = on;
        self
    }

    /// How LFU counters decay: in Redis's minutes ([`LfuDecay::Minutes`], the default,
    /// also what [`lfu_decay_time`](Self::lfu_decay_time) sets) or in logical time
    /// ([`LfuDecay::Turnovers`]: writes relative to the bound).
    pub fn lfu_decay(mut self, decay: LfuDecay) -> Self {
        self.settings.lfu_decay = decay;
        if let LfuDecay::Minutes(m) = decay {
            self.settings.lfu_decay_time = m;
        }
        self
    }

    /// `maxmemory-samples`: candidates sampled per eviction (default 5, as Redis).
    pub fn maxmemory_samples(mut self, n: usize) -> Self {
        self.settings.samples = n.max(1);
        self
    }

    /// `lfu-log-factor`: how many hits it takes to saturate the LFU counter (default 10).
    pub fn lfu_log_factor(mut self, factor: u32) -> Self {
        self.settings.lfu_log_factor = factor;
        self
    }

    /// `lfu-decay-time`: minutes per step of LFU counter decay; 0 disables decay.
    /// Selects Redis's wall-clock decay ([`LfuDecay::Minutes`]); see
    /// [`lfu_decay`](Self::lfu_decay) for decay in logical time.
    pub fn lfu_decay_time(mut self, minutes: u32) -> Self {
        self.settings.lfu_decay_time = minutes;
        self.settings.lfu_decay = LfuDecay::Minutes(minutes);
        self
    }

    /// `lazyfree-lazy-*`: which removals drop big values on the background thread.
    /// "Big" compares weights with the threshold, so, as for
    /// [`max_memory`](Self::max_memory), entries must be weighable.
    pub fn lazy_free(mut self, lazy_free: LazyFree) -> Self
    where
        W: MemoryWeigher<K, V>,
    {
        self.settings.lazy_free = lazy_free;
        self.weigher = self.weigher.for_memory_bound();
        self
    }

    /// Number of shards (rounded up to a power of two). Default: four per CPU, fewer when
    /// the bounds are small (one under `--cfg loom`).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// The clock expiry reads (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether background work (active expiry, lazy free) runs on threads or only when
    /// [`Cache::run_pending_tasks`] is called. Default: threads, except under
    /// `--cfg loom`.
    pub fn background(mut self, background: Background) -> Self {
        self.background = background;
        self
    }

    /// How often the cron runs (Redis's `hz`; default 100 ms, i.e. `hz 10`).
    pub fn cron_period(mut self, period: Duration) -> Self {
        self.settings.cron_period = period.max(Duration::from_millis(1));
        self
    }

    /// Capacity of each subscriber's event queue (default 1024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.settings.event_capacity = n.max(1);
        self
    }

    /// Fixes the hash seed, for reproducible tests and benches. Default: random.
    pub fn hasher_seed(mut self, seed: u64) -> Self {
        self.hasher_seed = Some(seed);
        self
    }

    /// Records a latency histogram per operation (Redis's `latency-tracking`). Off by
    /// default: it costs two clock reads per operation.
    pub fn latency_tracking(mut self, on: bool) -> Self {
        self.settings.latency_tracking = on;
        self
    }

    /// `slowlog-log-slower-than`: operations taking at least this long are logged (and
    /// every operation is timed). Off by default.
    pub fn slowlog_log_slower_than(mut self, threshold: Duration) -> Self {
        self.settings.slowlog_log_slower_than = Some(threshold);
        self
    }

    /// `slowlog-max-len`: how many slow operations are kept (default 128).
    pub fn slowlog_max_len(mut self, n: usize) -> Self {
        self.settings.slowlog_max_len = n;
        self
    }

    /// A name for this cache, used as the `cache` label of exported metrics (default
    /// `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// A default time to live: a plain [`insert`](Cache::insert) (and a value loaded by
    /// [`get_with`](Cache::get_with)) expires this long after it was written, as if
    /// written with [`insert_with_ttl`](Cache::insert_with_ttl). Writes that name their
    /// own expiry keep it, and a batch's or a transaction's `insert` clears the TTL as
    /// Redis's `SET` does. Logged like any TTL on a durable cache. None by default.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.settings.time_to_live = Some(ttl);
        self
    }

    /// A key neither read nor written for `idle` expires, whatever its TTL (and a key
    /// with a TTL still expires at its TTL, whichever comes first). Reads that count
    /// (`get`, `get_with`, a batch's or transaction's get) move the idle deadline;
    /// `contains` and `ttl` do not, as they do not touch LRU/LFU metadata. The moves
    /// have a resolution of 1/64 of `idle`. Expiry is lazy (on access) and active (the
    /// cron's sampling), as for TTLs, and [`Cache::ttl`] reports the nearer deadline.
    ///
    /// Idle deadlines live in memory only: the log, snapshots, replicas and slot moves
    /// carry each key's hard TTL, and a key recovered, replicated or moved starts a
    /// fresh idle period: idle expiry reclaims memory, as eviction does, and logging
    /// every read that moves a deadline would make reads write the log. A key that
    /// idled out may therefore come back after a restart (never past its hard TTL)
    /// until the next rewrite. None by default.
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.settings.time_to_idle = Some(idle);
        self
    }

    /// Weighs entries with the closure `weigher` (bytes, not counting the per-entry
    /// overhead) instead of the [`Weigh`](crate::Weigh) trait. The cache's type stays
    /// nameable: `Cache<K, V, FnWeigher<K, V>>`.
    ///
    /// ```
    /// use larder::{Cache, FnWeigher};
    ///
    /// struct Blob(Vec<u8>); // no `Weigh` implementation needed
    /// # impl Clone for Blob { fn clone(&self) -> Self { Blob(self.0.clone()) } }
    ///
    /// let cache: Cache<u64, Blob, FnWeigher<u64, Blob>> = Cache::builder()
    ///     .weigher(|_key, blob: &Blob| 8 + blob.0.capacity())
    ///     .max_memory(1 << 20)
    ///     .build();
    /// cache.insert(1, Blob(vec![0; 1000])).unwrap();
    /// assert!(cache.used_memory() >= 1000);
    /// ```
    pub fn weigher(
        self,
        weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static,
    ) -> CacheBuilder<K, V, FnWeigher<K, V>> {
        self.with_weigher(FnWeigher::new(weigher))
    }

    /// Weighs entries with `weigher`, any [`Weigher`] type, called without indirection
    /// (the cache's type names it: `Cache<K, V, W>`). To bound memory with it, it also
    /// implements [`MemoryWeigher`](crate::MemoryWeigher).
    pub fn custom_weigher<W2: Weigher<K, V>>(self, weigher: W2) -> CacheBuilder<K, V, W2> {
        self.with_weigher(weigher)
    }

    fn with_weigher<W2>(self, weigher: W2) -> CacheBuilder<K, V, W2> {
        CacheBuilder {
            settings: self.settings,
            shards: self.shards,
            clock: self.clock,
            weigher,
            background: self.background,
            hasher_seed: self.hasher_seed,
            _types: PhantomData,
        }
    }

    /// The shard count this configuration yields.
    fn shard_count(&self) -> usize {
        let wanted = self.shards.unwrap_or_else(default_shards);
        let mut n = wanted.next_power_of_two();
        // Keep shares large enough that hash imbalance between shards stays small.
        if let Some(m) = self.settings.max_memory {
            while n > 1 && m / (n as u64) < 64 * 1024 {
                n /= 2;
            }
        }
        if let Some(e) = self.settings.max_entries {
            while n > 1 && e / (n as u64) < 256 {
                n /= 2;
            }
        }
        n
    }
}

/// The policy of a cache whose builder was given none.
pub const DEFAULT_POLICY: Policy = Policy::AllKeysLru;
/// The admission of a cache whose builder was given neither a policy nor an admission.
pub const DEFAULT_ADMISSION: Admission = Admission::WindowTinyLfu;

fn default_shards() -> usize {
    if cfg!(loom) {
        1
    } else {
        std::thread::available_parallelism().map_or(4, |n| n.get()) * 4
    }
}

impl<K, V, W> CacheBuilder<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Builds the cache and, unless configured otherwise, starts its background threads.
    pub fn build(self) -> Cache<K, V, W> {
        let shards = self.shard_count();
        let hasher = match self.hasher_seed {
            Some(s) => ahash::RandomState::with_seeds(s, s ^ 0x9E37_79B9_7F4A_7C15, 7, 11),
            None => ahash::RandomState::new(),
        };
        Cache::from_parts(
            self.settings,
            shards,
            hasher,
            self.weigher,
            self.clock,
            self.background,
        )
    }
}
