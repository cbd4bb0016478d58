//! The single-threaded shard core. The eviction policy, expiry and accounting live here,
//! once; `Cache` holds an array of these behind locks.
//!
//! A shard never drops a user's key or value: whatever an operation removes is handed
//! back in a [`Garbage`] so the caller can drop it after releasing the lock (inline or on
//! the lazy-free thread).

use crate::clock::Clock;
use crate::error::Error;
use crate::evict::Pool;
use crate::expires::Expires;
pub(crate) use crate::garbage::{Cause, Dead, Garbage};
use crate::info::AccessStats;
use crate::latency::OpHistograms;
use crate::meta::{lfu_minutes, Lfu, Meta, LFU_INIT_VAL};
use crate::sketch::Sketch;
use crate::table::{Moved, Table};
use crate::weigh::{Weigher, ENTRY_OVERHEAD};
use crate::{Admission, LfuDecay, Policy};
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::Hash;

/// W-TinyLFU's window at the start, as a share of the bound (measured on the workload
/// suite, docs/design.md: 1 % is 5-6 points below 10 % on the recency-heavy stream, 20 %
/// loses 13 on a loop slightly larger than the cache). Hill climbing then moves it
/// between [`WINDOW_MIN`] and [`WINDOW_MAX`].
const WINDOW_START: f64 = 0.10;
const WINDOW_MIN: f64 = 0.01;
const WINDOW_MAX: f64 = 0.80;
/// Hill climbing (Caffeine's): one step is this share of the bound, shrinking by
/// `CLIMB_DECAY` per sample unless the hit ratio moved by `CLIMB_RESTART` or more, which
/// restarts it at full size. A sample is `CLIMB_SAMPLE` bounds' worth of accesses.
const CLIMB_STEP: f64 = 0.0625;
const CLIMB_DECAY: f64 = 0.98;
const CLIMB_RESTART: f64 = 0.05;
const CLIMB_SAMPLE: u64 = 10;

/// The hill climber of the window size: keeps moving the window the way that last
/// raised the hit ratio, turns back when it fell.
#[derive(Clone, Copy, Debug)]
struct Climber {
    misses: u64,
    hits_at_start: u64,
    shared_hits_at_start: u64,
    /// The hit ratio of the last sample; negative before the first.
    last_ratio: f64,
    /// The next move, signed, as a share of the bound.
    step: f64,
}

impl Default for Climber {
    fn default() -> Self {
        Climber {
            misses: 0,
            hits_at_start: 0,
            shared_hits_at_start: 0,
            last_ratio: -1.0,
            // The first move tries a smaller window.
            step: -CLIMB_STEP,
        }
    }
}

impl Climber {
    /// Takes a sample's hit ratio and returns how far to move the window (a share of
    /// the bound; 0 for the first sample, which only sets the reference).
    fn adjust(&mut self, ratio: f64) -> f64 {
        let first = self.last_ratio < 0.0;
        let delta = if first { 0.0 } else { ratio - self.last_ratio };
        self.last_ratio = ratio;
        if first {
            return 0.0;
        }
        let amount = if delta >= 0.0 { self.step } else { -self.step };
        self.step = if delta.abs() >= CLIMB_RESTART {
            CLIMB_STEP.copysign(amount)
        } else {
            amount * CLIMB_DECAY
        };
        amount
    }
}

/// Maps a random `r` onto `0..n` with a multiply and a shift instead of a division.
#[inline]
pub(crate) fn below(r: u64, n: usize) -> usize {
    ((r as u128 * n as u128) >> 64) as usize
}

/// What a read under the shared lock found.
pub(crate) enum Lookup {
    /// A live entry at this index.
    Live(u32),
    /// No such key.
    Missing,
    /// The key is there but its TTL has passed; deleting it needs the exclusive lock.
    Expired,
}

/// Settings a shard needs, fixed at build time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardConfig {
    pub(crate) policy: Policy,
    pub(crate) samples: usize,
    pub(crate) lfu: Lfu,
    /// This shard's share of `max_memory` (u64::MAX: unbounded).
    pub(crate) budget: u64,
    /// This shard's share of `max_entries` (u64::MAX: unbounded).
    pub(crate) max_entries: u64,
    /// Admission in force: [`Admission::None`] unless the policy is an allkeys one.
    pub(crate) admission: Admission,
    /// Whether the admission sketch has a doorkeeper.
    pub(crate) doorkeeper: bool,
}

/// Counters kept under the shard lock (no atomics on the hot path).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShardStats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) expired: u64,
    pub(crate) evicted: u64,
}

/// What a shard operation needs from outside: the weigher and the time.
pub(crate) struct Env<'a, W> {
    pub(crate) weigher: &'a W,
    pub(crate) clock: &'a dyn Clock,
    /// A recent time, read cheaply; enough for LFU's minute resolution.
    pub(crate) coarse_ms: u64,
    /// `time_to_idle` in ms: writes and reads move a key's deadline to now plus this.
    pub(crate) idle_ms: Option<u64>,
    /// Writes skip TinyLFU's contest (a transaction's writes and its rollback, which
    /// are all-or-nothing; a replayed or replicated write, admitted where it was made):
    /// a newcomer always enters, evicting as any write does.
    pub(crate) admit_all: bool,
    /// The key of an insert is known not to be in the shard (a base snapshot whose keys
    /// are distinct, loading into an empty cache): the insert skips the lookup.
    pub(crate) known_absent: bool,
    /// The write is not an access (restoring a base): the frequency sketch and the
    /// window's climber do not count it.
    pub(crate) uncounted: bool,
}

/// How long a key has to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No such key (Redis's `TTL` answers -2).
    Missing,
    /// The key exists and never expires (Redis answers -1).
    Persistent,
    /// The key expires in this many milliseconds.
    Remaining(u64),
}

/// Whether an insert keeps, sets or clears the key's TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TtlChange {
    /// Clear any TTL (Redis's plain `SET`).
    Clear,
    /// Set an absolute expiry in Unix milliseconds.
    At(u64),
}

pub(crate) struct Shard<K, V> {
    table: Table<K, V>,
    expires: Expires,
    pool: Pool,
    used: u64,
    /// Logical LRU clock, unwrapped; entries store its low 24 bits.
    tick: u64,
    /// When the LRU clock read what (`OBJECT IDLETIME`), marked by the cron.
    timeline: crate::timeline::Timeline,
    rng: u64,
    /// LFU's logical decay period (`LfuDecay::Turnovers`) and the writes into it.
    lfu_epoch: u64,
    lfu_epoch_writes: u64,
    /// The admission sketch (admission on only).
    sketch: Option<Sketch>,
    /// W-TinyLFU's window, oldest first: the low 32 bits of the hash and the index of
    /// each key written new (8 bytes). The index is a hint (the table moves entries);
    /// the hash finds the key again (buckets are chosen by the low bits). A key gone or
    /// already out of the window is skipped when it comes up.
    window: VecDeque<(u32, u32)>,
    /// Entries whose metadata says they are in the window.
    window_len: usize,
    /// The window's size as a share of the bound, tuned by hill climbing.
    window_share: f64,
    climb: Climber,
    /// Hits counted under the shared lock, in batches (see `Sketch::count_shared`).
    shared_hits: std::sync::atomic::AtomicU64,
    pub(crate) stats: ShardStats,
    pub(crate) cfg: ShardConfig,
    /// Latency of this shard's single-key operations (recorded only when timing is on).
    /// Boxed: 4 KiB that would otherwise sit between the fields every operation reads.
    pub(crate) latency: Box<OpHistograms>,
}

impl<K: Hash + Eq, V> Shard<K, V> {
    pub(crate) fn new(cfg: ShardConfig, hasher: ahash::RandomState, seed: u64) -> Self {
        Shard {
            table: Table::new(hasher),
            expires: Expires::default(),
            pool: Pool::default(),
            used: 0,
            tick: 0,
            timeline: crate::timeline::Timeline::default(),
            rng: seed | 1,
            lfu_epoch: 0,
            lfu_epoch_writes: 0,
            // Sized for the bound at once (growing by doubling leaves the smaller tables
            // resident in the allocator); a shard bounded by memory, or by more entries
            // than this, starts small and grows with its entry count.
            sketch: (cfg.admission != Admission::None).then(|| {
                Sketch::new(
                    if cfg.max_entries <= 1 << 24 {
                        cfg.max_entries as usize
                    } else {
                        4096
                    },
                    cfg.doorkeeper,
                )
            }),
            window: VecDeque::new(),
            window_len: 0,
            window_share: WINDOW_START,
            climb: Climber::default(),
            shared_hits: std::sync::atomic::AtomicU64::new(0),
            stats: ShardStats::default(),
            cfg,
            latency: Box::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Makes room for `additional` more entries, within the shard's entry bound.
    /// Holds the table's bucket array from shrinking, so that a SCAN walk visits each
    /// key at most once, until [`Shard::release_size`].
    pub(crate) fn hold_size(&mut self) {
        self.table.hold_size();
    }

    /// Ends a [`Shard::hold_size`].
    pub(crate) fn release_size(&mut self) {
        self.table.release_size();
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        let room = (self.cfg.max_entries as usize).saturating_sub(self.table.len());
        self.table.reserve(additional.min(room));
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn expires_len(&self) -> usize {
        self.expires.len()
    }

    /// xorshift64*: cheap, good enough for sampling and LFU's coin.
    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn weight<W: Weigher<K, V>>(w: &W, key: &K, value: &V) -> u64 {
        (w.weight(key, value) + ENTRY_OVERHEAD) as u64
    }

    /// The LFU stamp "now": minutes (Redis's decay) or the logical decay period.
    #[inline]
    fn lfu_now(&self, coarse_ms: u64) -> u16 {
        match self.cfg.lfu.decay {
            LfuDecay::Minutes(_) => lfu_minutes(coarse_ms),
            LfuDecay::Turnovers(_) => self.lfu_epoch as u16,
        }
    }

    /// Counts a write (under the exclusive lock) towards LFU's logical decay: the period
    /// advances every `n` turnovers of the shard (`n` times its bound in writes).
    fn lfu_write(&mut self) {
        if let LfuDecay::Turnovers(n) = self.cfg.lfu.decay {
            if n > 0 {
                self.lfu_epoch_writes += 1;
                let size = if self.cfg.max_entries == u64::MAX {
                    self.table.len() as u64
                } else {
                    self.cfg.max_entries
                };
                if self.lfu_epoch_writes >= (size * n as u64).max(1) {
                    self.lfu_epoch += 1;
                    self.lfu_epoch_writes = 0;
                }
            }
        }
    }

    fn new_meta(&mut self, env_coarse_ms: u64) -> Meta {
        let mut m = Meta::default();
        if self.cfg.policy.is_lfu() {
            self.lfu_write();
            m.set_lfu(self.lfu_now(env_coarse_ms), LFU_INIT_VAL);
        } else {
            self.tick += 1;
            m.set_clock(self.tick as u32);
        }
        m
    }

    fn touch(&mut self, idx: u32, coarse_ms: u64) {
        if self.cfg.admission == Admission::WindowTinyLfu {
            self.table.entry_mut(idx).meta.update(|m| {
                if !m.in_window() {
                    m.set_protected(true)
                }
            });
        }
        if self.cfg.policy.is_lfu() {
            self.lfu_write();
            let r = self.rand();
            let lfu = self.cfg.lfu;
            let now = self.lfu_now(coarse_ms);
            self.table
                .entry_mut(idx)
                .meta
                .update(|m| lfu.touch(m, now, r));
        } else {
            self.tick += 1;
            let t = self.tick as u32;
            self.table.entry_mut(idx).meta.update(|m| m.set_clock(t));
        }
    }

    /// Finds `key` under the shared lock, without deleting anything.
    #[inline]
    pub(crate) fn lookup<Q>(&self, hash: u64, key: &Q, clock: &dyn Clock) -> Lookup
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let Some(idx) = self.table.find(hash, key) else {
            return Lookup::Missing;
        };
        if self.table.entry(idx).meta.get().has_ttl() {
            let at = self
                .expires
                .get(idx)
                .expect("TTL flag without side-table entry");
            if at <= clock.now_ms() {
                return Lookup::Expired;
            }
        }
        Lookup::Live(idx)
    }

    /// Records a read made under the shared lock: stamps the current LRU tick (the tick
    /// itself advances only under the exclusive lock), or makes one LFU access with a
    /// coin from `rand`.
    #[inline]
    pub(crate) fn touch_shared(
        &self,
        idx: u32,
        hash: u64,
        coarse_ms: u64,
        mut rand: impl FnMut() -> u64,
    ) {
        if let Some(sk) = &self.sketch {
            let coin = rand();
            sk.count_shared(hash, coin);
            if coin & 15 == 0 {
                self.shared_hits
                    .fetch_add(16, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let cell = &self.table.entry(idx).meta;
        let mut m = cell.get();
        if self.cfg.policy.is_lfu() {
            self.cfg.lfu.touch(&mut m, self.lfu_now(coarse_ms), rand());
        } else {
            m.set_clock(self.tick as u32);
        }
        if self.cfg.admission == Admission::WindowTinyLfu && !m.in_window() {
            m.set_protected(true);
        }
        cell.stamp(m);
    }

    /// The value at `idx`.
    #[inline]
    pub(crate) fn value_at(&self, idx: u32) -> &V {
        &self.table.entry(idx).value
    }

    /// The absolute expiry of the entry at `idx`, if it has one.
    #[inline]
    pub(crate) fn expiry_at(&self, idx: u32) -> Option<u64> {
        if self.table.entry(idx).meta.get().has_ttl() {
            self.expires.get(idx)
        } else {
            None
        }
    }

    /// Removes entry `idx`, keeping the side tables in step. Returns the move the table
    /// made so callers holding an index can follow it.
    fn remove_idx<W: Weigher<K, V>>(
        &mut self,
        w: &W,
        idx: u32,
        cause: Cause,
        g: &mut Garbage<K, V>,
    ) -> Option<Moved> {
        let meta = self.table.entry(idx).meta.get();
        if meta.has_ttl() {
            self.expires.remove(idx);
        }
        if meta.in_window() {
            self.window_len -= 1;
        }
        self.pool.forget(idx);
        let (e, moved) = self.table.remove_at(idx);
        if let Some(m) = moved {
            if self.table.entry(m.to).meta.get().has_ttl() {
                self.expires.follow(m);
            }
            self.pool.follow(m);
        }
        let weight = Self::weight(w, &e.key, &e.value);
        self.used -= weight;
        match cause {
            Cause::Expired => self.stats.expired += 1,
            Cause::Evicted => self.stats.evicted += 1,
            Cause::Removed => {}
        }
        g.push(Dead::Entry {
            key: e.key,
            value: e.value,
            cause,
            weight,
        });
        moved
    }

    /// Finds a live entry; an expired one is deleted on the way (lazy expiry).
    #[inline]
    fn find_live<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        let idx = self.table.find(hash, key)?;
        if self.table.entry(idx).meta.get().has_ttl() {
            let at = self
                .expires
                .get(idx)
                .expect("TTL flag without side-table entry");
            if at <= env.clock.now_ms() {
                self.remove_idx(env.weigher, idx, Cause::Expired, g);
                return None;
            }
        }
        Some(idx)
    }

    /// A read: touches the entry's LRU/LFU metadata and counts a hit or a miss.
    #[inline]
    pub(crate) fn get<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        match self.find_live(hash, key, env, g) {
            Some(idx) => {
                self.stats.hits += 1;
                if let Some(sk) = &self.sketch {
                    sk.count(hash);
                }
                self.touch(idx, env.coarse_ms);
                self.refresh_idle(idx, env);
                Some(&self.table.entry(idx).value)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// A read that neither touches metadata nor counts (Redis's `LOOKUP_NOTOUCH`).
    pub(crate) fn peek<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        let idx = self.find_live(hash, key, env, g)?;
        Some(&self.table.entry(idx).value)
    }

    /// A copy of the key's value and its absolute expiry (ms), if present: what a
    /// transaction restores when its commit is refused. Does not touch the key.
    pub(crate) fn snapshot<W>(
        &mut self,
        hash: u64,
        key: &K,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Option<(V, Option<u64>)>
    where
        V: Clone,
        W: Weigher<K, V>,
    {
        let idx = self.find_live(hash, key, env, g)?;
        Some((
            self.table.entry(idx).value.clone(),
            self.hard_expiry_at(idx),
        ))
    }

    /// Inserts or overwrites. Evicts by policy first if the write needs memory; fails
    /// without changing anything the caller can observe of this key when it cannot.
    /// Returns the entry's index, or `None` when an expiry already past deleted the key
    /// instead.
    pub(crate) fn insert<W: Weigher<K, V>>(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        ttl: TtlChange,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Result<Option<u32>, Error> {
        if let TtlChange::At(at) = ttl {
            if at <= env.clock.now_ms() {
                // Redis: SET with an expiry in the past deletes the key.
                let found = (!env.known_absent)
                    .then(|| self.find_live(hash, &key, env, g))
                    .flatten();
                if let Some(idx) = found {
                    self.remove_idx(env.weigher, idx, Cause::Expired, g);
                }
                return Ok(None);
            }
        }
        let mut existing = if env.known_absent {
            None
        } else {
            self.find_live(hash, &key, env, g)
        };
        // An overwrite keeps the stored key, which removal will weigh: an equal key
        // may weigh differently (a `String`'s capacity), so weigh the stored one.
        let (new_w, old_w) = match existing {
            Some(i) => {
                let e = self.table.entry(i);
                (
                    Self::weight(env.weigher, &e.key, &value),
                    Self::weight(env.weigher, &e.key, &e.value),
                )
            }
            None => (Self::weight(env.weigher, &key, &value), 0),
        };
        if new_w > self.cfg.budget {
            return Err(Error::EntryTooLarge {
                weight: new_w,
                budget: self.cfg.budget,
            });
        }
        if self.sketch.is_some() {
            if existing.is_none() {
                self.grow_sketch();
                if self.cfg.admission == Admission::WindowTinyLfu && !env.uncounted {
                    self.climb();
                }
            }
            if !env.uncounted {
                let sk = self.sketch.as_mut().expect("checked");
                sk.maybe_age();
                sk.count(hash);
            }
        }
        loop {
            let after = self.used - old_w + new_w;
            let over_memory = after > self.cfg.budget;
            let over_count = existing.is_none() && self.table.len() as u64 >= self.cfg.max_entries;
            if !over_memory && !over_count {
                break;
            }
            let admission = match self.cfg.admission {
                _ if existing.is_some() => Admission::None,
                Admission::TinyLfu if env.admit_all => Admission::None,
                a => a,
            };
            let victim = match admission {
                Admission::None => self.pick_victim(existing, env.coarse_ms, false),
                Admission::TinyLfu => match self.pick_victim(None, env.coarse_ms, false) {
                    Some(v) if self.estimate_at(v) >= self.estimate(hash) => {
                        // The newcomer is not more frequent than the victim: it is
                        // dropped at once, reported as evicted.
                        self.stats.evicted += 1;
                        g.push(Dead::Entry {
                            key,
                            value,
                            cause: Cause::Evicted,
                            weight: new_w,
                        });
                        return Ok(None);
                    }
                    other => other,
                },
                Admission::WindowTinyLfu => self.window_victim(env.coarse_ms),
            };
            let Some(victim) = victim else {
                return Err(Error::OutOfMemory {
                    used: after,
                    budget: self.cfg.budget,
                    policy: self.cfg.policy,
                });
            };
            let moved = self.remove_idx(env.weigher, victim, Cause::Evicted, g);
            if let (Some(m), Some(e)) = (moved, existing) {
                if m.from == e {
                    existing = Some(m.to);
                }
            }
        }
        self.used = self.used - old_w + new_w;
        let idx = match existing {
            Some(idx) => {
                let old = std::mem::replace(&mut self.table.entry_mut(idx).value, value);
                g.push(Dead::Value {
                    value: old,
                    weight: old_w,
                });
                self.touch(idx, env.coarse_ms);
                idx
            }
            None => {
                let mut meta = self.new_meta(env.coarse_ms);
                // A restored key goes straight to the main part: the window is for
                // keys the workload just brought in.
                let windowed = self.cfg.admission == Admission::WindowTinyLfu && !env.uncounted;
                meta.set_window(windowed);
                let idx = self.table.push(hash, key, value, meta);
                if windowed {
                    self.window.push_back((hash as u32, idx));
                    self.window_len += 1;
                    self.compact_window();
                }
                // While the cache fills, keys leave the window without a contest.
                while self.window_len > self.window_cap() {
                    if self.leave_window().is_none() {
                        break;
                    }
                }
                idx
            }
        };
        self.set_ttl(idx, ttl);
        self.slide(idx, env);
        Ok(Some(idx))
    }

    /// Counts a miss (a new key written) and, once the shard is full and a sample of
    /// accesses has gone by, moves the window by the climber's step. Hits under the
    /// shared lock are counted in batches, like the sketch's total.
    fn climb(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.climb.misses += 1;
        let hits = (self.stats.hits - self.climb.hits_at_start)
            + (self.shared_hits.load(Relaxed) - self.climb.shared_hits_at_start);
        let total = hits + self.climb.misses;
        let bound = if self.cfg.max_entries == u64::MAX {
            self.table.len() as u64
        } else {
            self.cfg.max_entries
        };
        if total < (bound * CLIMB_SAMPLE).max(1024) || self.table.len() as u64 + 1 < bound {
            return;
        }
        let amount = self.climb.adjust(hits as f64 / total as f64);
        self.window_share = (self.window_share + amount).clamp(WINDOW_MIN, WINDOW_MAX);
        self.climb.misses = 0;
        self.climb.hits_at_start = self.stats.hits;
        self.climb.shared_hits_at_start = self.shared_hits.load(Relaxed);
    }

    /// Grows the sketch with the shard while it is below its bound (its counts restart).
    fn grow_sketch(&mut self) {
        let len = self.table.len() + 1;
        let bound = self.cfg.max_entries.min(usize::MAX as u64) as usize;
        if let Some(sk) = &mut self.sketch {
            if len > sk.capacity() && sk.capacity() < bound {
                *sk = Sketch::new((sk.capacity() * 2).min(bound), self.cfg.doorkeeper);
            }
        }
    }

    fn estimate(&self, hash: u64) -> u8 {
        self.sketch.as_ref().map_or(0, |sk| sk.estimate(hash))
    }

    fn estimate_at(&self, idx: u32) -> u8 {
        let h = self.table.hash_key(&self.table.entry(idx).key);
        self.estimate(h)
    }

    /// The window's size: its hill-climbed share of the shard's bound (of its entries when
    /// bounded by memory), at least one.
    fn window_cap(&self) -> usize {
        let base = if self.cfg.max_entries == u64::MAX {
            self.table.len()
        } else {
            self.cfg.max_entries as usize
        };
        ((base as f64 * self.window_share) as usize).max(1)
    }

    /// Moves the oldest key of the window to the main part; returns its index.
    fn leave_window(&mut self) -> Option<u32> {
        while let Some((h, hint)) = self.window.pop_front() {
            let at_hint = (hint as usize) < self.table.len() && {
                let e = self.table.entry(hint);
                e.meta.get().in_window() && self.table.hash_key(&e.key) as u32 == h
            };
            let found = if at_hint {
                Some(hint)
            } else {
                self.table.find_hashed(h, |e| e.meta.get().in_window())
            };
            if let Some(idx) = found {
                self.table
                    .entry_mut(idx)
                    .meta
                    .update(|m| m.set_window(false));
                self.window_len -= 1;
                return Some(idx);
            }
        }
        None
    }

    /// Drops the hashes of keys deleted while in the window once they outnumber the
    /// window's keys (amortised: the queue must grow by as much again before the next
    /// pass). Run on every push, since a cache below its bound never evicts.
    fn compact_window(&mut self) {
        if self.window.len() > 4 * self.window_len + 64 {
            let table = &self.table;
            self.window
                .retain(|&(h, _)| table.find_hashed(h, |e| e.meta.get().in_window()).is_some());
        }
    }

    /// Applies a running cache's new configuration (Redis's `CONFIG SET maxmemory`,
    /// `maxmemory-policy`, ...), then evicts down to the bounds as a write would,
    /// stopping where the policy finds no candidate (`noeviction`, a `volatile-*` policy
    /// with no TTL left: writes then fail as over the bound). Between an LRU-like and an
    /// LFU policy every key is stamped as just written under the new one (Redis reads
    /// the old stamps in the new policy's units until keys are touched); a change of
    /// admission adds or drops the sketch and the window. Returns the keys evicted.
    pub(crate) fn reconfigure<W: Weigher<K, V>>(
        &mut self,
        cfg: ShardConfig,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> u64 {
        let old = std::mem::replace(&mut self.cfg, cfg);
        let leaves_window =
            old.admission == Admission::WindowTinyLfu && cfg.admission != Admission::WindowTinyLfu;
        let restamp = old.policy.is_lfu() != cfg.policy.is_lfu();
        if restamp || leaves_window {
            for i in 0..self.table.len() as u32 {
                let fresh = restamp.then(|| self.new_meta(env.coarse_ms));
                self.table.entry_mut(i).meta.update(|m| {
                    let (ttl, window) = (m.has_ttl(), m.in_window() && !leaves_window);
                    if let Some(f) = fresh {
                        let tag = m.tag();
                        *m = f;
                        m.set_tag(tag);
                    }
                    m.set_ttl_flag(ttl);
                    m.set_window(window);
                });
            }
        }
        if leaves_window {
            self.window.clear();
            self.window_len = 0;
        }
        if old.policy != cfg.policy {
            self.pool = Pool::default();
        }
        if cfg.admission == Admission::None {
            self.sketch = None;
        } else if self.sketch.is_none() {
            let bound = cfg.max_entries.min(usize::MAX as u64) as usize;
            self.sketch = Some(Sketch::new(
                self.table.len().clamp(4096, bound.max(4096)),
                cfg.doorkeeper,
            ));
        }
        let mut evicted = 0;
        while self.used > self.cfg.budget || self.table.len() as u64 > self.cfg.max_entries {
            let victim = match self.cfg.admission {
                Admission::WindowTinyLfu => self.window_victim(env.coarse_ms),
                _ => self.pick_victim(None, env.coarse_ms, false),
            };
            let Some(v) = victim else {
                break;
            };
            self.remove_idx(env.weigher, v, Cause::Evicted, g);
            evicted += 1;
        }
        evicted
    }

    /// W-TinyLFU's choice: the key leaving the window against the policy's victim among
    /// the others; the one estimated less frequent goes (the victim wins ties).
    fn window_victim(&mut self, coarse_ms: u64) -> Option<u32> {
        let candidate = if self.window_len >= self.window_cap() {
            self.leave_window()
        } else {
            None
        };
        let victim = self.pick_victim(candidate, coarse_ms, true);
        match (candidate, victim) {
            (Some(c), Some(v)) => Some(if self.estimate_at(c) > self.estimate_at(v) {
                v
            } else {
                c
            }),
            (Some(c), None) => Some(c),
            (None, Some(v)) => Some(v),
            // Everything is in the window: its oldest key goes.
            (None, None) => self.leave_window(),
        }
    }

    /// The stored key and value at `idx`.
    pub(crate) fn entry_at(&self, idx: u32) -> (&K, &V) {
        let e = self.table.entry(idx);
        (&e.key, &e.value)
    }

    fn set_ttl(&mut self, idx: u32, ttl: TtlChange) {
        let meta = &mut self.table.entry_mut(idx).meta;
        match ttl {
            TtlChange::Clear => {
                if meta.get().has_ttl() {
                    meta.update(|m| m.set_ttl_flag(false));
                    self.expires.remove(idx);
                }
            }
            TtlChange::At(at) => {
                meta.update(|m| m.set_ttl_flag(true));
                self.expires.set(idx, at);
            }
        }
    }

    pub(crate) fn remove<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        match self.find_live(hash, key, env, g) {
            Some(idx) => {
                self.remove_idx(env.weigher, idx, Cause::Removed, g);
                true
            }
            None => false,
        }
    }

    /// Sets an absolute expiry; a time not in the future deletes the key, as Redis's
    /// `PEXPIREAT` does. Returns whether the key existed.
    pub(crate) fn expire_at<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        at: u64,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        let Some(idx) = self.find_live(hash, key, env, g) else {
            return false;
        };
        if at <= env.clock.now_ms() {
            self.remove_idx(env.weigher, idx, Cause::Expired, g);
        } else {
            self.set_ttl(idx, TtlChange::At(at));
            self.slide(idx, env);
        }
        true
    }

    /// Clears the TTL. Returns whether the key had one.
    pub(crate) fn persist<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        match self.find_live(hash, key, env, g) {
            Some(idx) if self.table.entry(idx).meta.get().has_ttl() => {
                self.set_ttl(idx, TtlChange::Clear);
                self.slide(idx, env);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn ttl<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Ttl
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        match self.find_live(hash, key, env, g) {
            None => Ttl::Missing,
            Some(idx) => match self.expires.get(idx) {
                None => Ttl::Persistent,
                Some(at) => Ttl::Remaining(at.saturating_sub(env.clock.now_ms())),
            },
        }
    }

    /// The absolute expiry of a live key, if it has one.
    pub(crate) fn expire_time<Q, W>(
        &mut self,
        hash: u64,
        key: &Q,
        env: &Env<'_, W>,
        g: &mut Garbage<K, V>,
    ) -> Option<Option<u64>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        W: Weigher<K, V>,
    {
        let idx = self.find_live(hash, key, env, g)?;
        Some(self.expires.hard(idx))
    }

    pub(crate) fn clear<W: Weigher<K, V>>(&mut self, w: &W, g: &mut Garbage<K, V>) {
        for e in self.table.take_all() {
            let weight = Self::weight(w, &e.key, &e.value);
            g.push(Dead::Entry {
                key: e.key,
                value: e.value,
                cause: Cause::Removed,
                weight,
            });
        }
        self.expires.clear();
        self.pool.clear();
        self.window.clear();
        self.window_len = 0;
        self.used = 0;
    }

    /// A better victim has a higher score.
    fn score(&self, idx: u32, coarse_ms: u64) -> u64 {
        let meta = self.table.entry(idx).meta.get();
        match self.cfg.policy {
            Policy::AllKeysLfu | Policy::VolatileLfu => {
                255 - self.cfg.lfu.decayed(meta, self.lfu_now(coarse_ms)) as u64
            }
            Policy::VolatileTtl => u64::MAX - self.expires.get(idx).unwrap_or(u64::MAX),
            // The unwrapped access stamp, older scoring higher: unlike the idle time it
            // does not grow stale in the pool as the clock moves on.
            _ => {
                // W-TinyLFU's main part as a segmented LRU without a second queue: a
                // key hit since it left the window (protected) scores as if accessed
                // two shard-sizes of accesses later, so keys never hit since admission
                // (probation) go first, and a protected key that stops being hit still
                // ages out.
                let bonus = if meta.protected() {
                    2 * self.table.len() as u64
                } else {
                    0
                };
                u64::MAX
                    - self
                        .tick
                        .saturating_sub(meta.lru_idle(self.tick as u32) as u64)
                        .saturating_add(bonus)
            }
        }
    }

    /// Chooses an entry to evict, never `exclude` (the key being written), and with
    /// `main_only` never a key in the admission window.
    fn pick_victim(
        &mut self,
        exclude: Option<u32>,
        coarse_ms: u64,
        main_only: bool,
    ) -> Option<u32> {
        let policy = self.cfg.policy;
        let volatile = policy.is_volatile();
        let candidates = if volatile {
            self.expires.len()
        } else {
            self.table.len()
        };
        let excluded_is_candidate =
            exclude.is_some_and(|e| !volatile || self.table.entry(e).meta.get().has_ttl());
        if candidates <= usize::from(excluded_is_candidate) {
            return None;
        }
        match policy {
            Policy::NoEviction => None,
            Policy::AllKeysRandom | Policy::VolatileRandom => {
                for _ in 0..if main_only { 64 } else { usize::MAX } {
                    let r = self.rand();
                    let idx = if volatile {
                        self.expires.random(r)?.0
                    } else {
                        below(r, self.table.len()) as u32
                    };
                    if Some(idx) != exclude
                        && !(main_only && self.table.entry(idx).meta.get().in_window())
                    {
                        return Some(idx);
                    }
                }
                None
            }
            _ => {
                for _ in 0..self.cfg.samples.max(1) {
                    let r = self.rand();
                    let idx = if volatile {
                        self.expires.random(r)?.0
                    } else {
                        below(r, self.table.len()) as u32
                    };
                    if Some(idx) != exclude
                        && !(main_only && self.table.entry(idx).meta.get().in_window())
                    {
                        let s = self.score(idx, coarse_ms);
                        self.pool.offer(idx, s);
                    }
                }
                // Scores in the pool may be stale (a candidate read since it was
                // sampled): rescore the best and put it back while a better one remains.
                loop {
                    let (idx, _) = self.pool.take_best()?;
                    let meta = self.table.entry(idx).meta.get();
                    if Some(idx) == exclude
                        || (volatile && !meta.has_ttl())
                        || (main_only && meta.in_window())
                    {
                        continue;
                    }
                    let fresh = self.score(idx, coarse_ms);
                    match self.pool.best_score() {
                        Some(next) if next > fresh => self.pool.offer(idx, fresh),
                        _ => return Some(idx),
                    }
                }
            }
        }
    }

    /// One round of Redis's active expiry: samples up to `n` keys with a TTL and deletes
    /// the expired ones. Returns `(sampled, expired)`.
    pub(crate) fn expire_sample<W: Weigher<K, V>>(
        &mut self,
        n: usize,
        now_ms: u64,
        w: &W,
        g: &mut Garbage<K, V>,
    ) -> (usize, usize) {
        let n = n.min(self.expires.len());
        let mut expired = 0;
        for _ in 0..n {
            let r = self.rand();
            let Some((idx, at)) = self.expires.random(r) else {
                break;
            };
            if at <= now_ms {
                self.remove_idx(w, idx, Cause::Expired, g);
                expired += 1;
            }
        }
        (n, expired)
    }

    /// Scans buckets from `cursor` until at least `count` entries are visited or the
    /// shard is done (returns 0 then). Expired entries are skipped.
    pub(crate) fn scan(
        &self,
        mut cursor: u64,
        count: usize,
        now_ms: u64,
        mut f: impl FnMut(&K, &V, Option<u64>),
    ) -> u64 {
        let mut n = 0;
        loop {
            cursor = self.table.scan_bucket(cursor, |idx, e| {
                let at = if e.meta.get().has_ttl() {
                    self.expires.get(idx)
                } else {
                    None
                };
                if at.is_none_or(|at| at > now_ms) {
                    n += 1;
                    // Idle deadlines stay in memory: callers log and copy hard ones.
                    f(&e.key, &e.value, at.and_then(|_| self.expires.hard(idx)));
                }
            });
            if cursor == 0 || n >= count {
                return cursor;
            }
        }
    }

    /// Every live entry with its expiry, for introspection and snapshots.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&K, &V, Meta, Option<u64>)> {
        self.table.iter().map(|(i, e)| {
            let at = if e.meta.get().has_ttl() {
                self.expires.get(i)
            } else {
                None
            };
            (&e.key, &e.value, e.meta.get(), at)
        })
    }

    /// The stored entry equal to `key` with its expiry, if present.
    pub(crate) fn stored_entry<Q>(&self, hash: u64, key: &Q) -> Option<(&K, &V, Option<u64>)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let idx = self.table.find(hash, key)?;
        let e = self.table.entry(idx);
        let at = if e.meta.get().has_ttl() {
            self.expires.hard(idx)
        } else {
            None
        };
        Some((&e.key, &e.value, at))
    }

    /// The stored key equal to `key`, if present.
    pub(crate) fn stored_key<Q>(&self, hash: u64, key: &Q) -> Option<&K>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.entries_matching(hash, key).map(|(k, _)| k)
    }

    /// A clone of the stored key equal to `key`, if present.
    pub(crate) fn key_clone<Q>(&self, hash: u64, key: &Q) -> Option<K>
    where
        K: Borrow<Q> + Clone,
        Q: Eq + ?Sized,
    {
        self.entries_matching(hash, key).map(|(k, _)| k.clone())
    }

    /// The entry stored under `key`, live or not, without touching it.
    pub(crate) fn entries_matching<Q>(&self, hash: u64, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let idx = self.table.find(hash, key)?;
        let e = self.table.entry(idx);
        Some((&e.key, &e.value))
    }

    /// Sum of remaining TTLs and their count, for `avg_ttl`.
    pub(crate) fn ttl_sum(&self, now_ms: u64) -> (u64, u64) {
        self.expires.iter().fold((0, 0), |(s, n), (_, at)| {
            (s + at.saturating_sub(now_ms), n + 1)
        })
    }

    /// Marks the LRU clock with the wall time (the cron, about once a second).
    pub(crate) fn mark_time(&mut self, now_ms: u64) {
        self.timeline.mark(self.tick, now_ms);
    }

    /// How recently (non-LFU policies) or how often (LFU) the live entry at `idx` was
    /// used, without touching it.
    pub(crate) fn access_stats(&self, idx: u32, now_ms: u64, coarse_ms: u64) -> AccessStats {
        let meta = self.table.entry(idx).meta.get();
        if self.cfg.policy.is_lfu() {
            AccessStats::Frequency(self.lfu_of(meta, coarse_ms))
        } else {
            let at = self
                .tick
                .saturating_sub(meta.lru_idle(self.tick as u32) as u64);
            AccessStats::Idle(std::time::Duration::from_millis(
                self.timeline.idle_ms(at, now_ms),
            ))
        }
    }

    /// The LFU counter (after decay) of a live key, for `hot_keys`.
    pub(crate) fn lfu_of(&self, meta: Meta, coarse_ms: u64) -> u8 {
        self.cfg.lfu.decayed(meta, self.lfu_now(coarse_ms))
    }

    // ---- time_to_idle --------------------------------------------------------------

    /// With a `time_to_idle`, makes the entry's deadline now plus the idle time (never
    /// past its hard deadline), after a write set its TTL.
    fn slide<W>(&mut self, idx: u32, env: &Env<'_, W>) {
        if let Some(idle) = env.idle_ms {
            self.table
                .entry_mut(idx)
                .meta
                .update(|m| m.set_ttl_flag(true));
            self.expires.slide(idx, env.clock.now_ms(), idle);
        }
    }

    /// A read of an idle-governed entry moves its deadline forward.
    fn refresh_idle<W>(&mut self, idx: u32, env: &Env<'_, W>) {
        if let Some(idle) = env.idle_ms {
            if self.expires.idle_cap(idx).is_some() {
                self.expires.slide(idx, env.clock.now_ms(), idle);
            }
        }
    }

    /// Whether a read at `now` should move the idle deadline of entry `idx` (which
    /// needs the exclusive lock). Only moves of more than 1/64 of the idle time count,
    /// so a hot key takes the exclusive lock at most 64 times per idle period.
    pub(crate) fn idle_refresh_due(&self, idx: u32, now: u64, idle_ms: u64) -> bool {
        let Some(cap) = self.expires.idle_cap(idx) else {
            return false;
        };
        let Some(at) = self.expires.get(idx) else {
            return false;
        };
        cap.min(now.saturating_add(idle_ms)) >= at.saturating_add((idle_ms / 64).max(1))
    }

    /// The deadline of entry `idx` that outlives memory (its hard TTL; an idle deadline
    /// is not carried to the log, replicas or other nodes).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn hard_expiry_at(&self, idx: u32) -> Option<u64> {
        if self.table.entry(idx).meta.get().has_ttl() {
            self.expires.hard(idx)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_climber_keeps_a_winning_direction_and_turns_back_on_a_loss() {
        let mut c = Climber::default();
        assert_eq!(
            c.adjust(0.50),
            0.0,
            "the first sample only sets the reference"
        );
        // The first move tries a smaller window.
        assert_eq!(c.adjust(0.50), -CLIMB_STEP);
        // Better: keep going, with a slightly smaller step.
        let m = c.adjust(0.51);
        assert!(m < 0.0 && m.abs() < CLIMB_STEP, "{m}");
        // Worse: turn back.
        let back = c.adjust(0.50);
        assert!(back > 0.0, "{back}");
        // A jump of five points or more restarts the step at full size.
        let big = c.adjust(0.60);
        assert!(
            (big - back * CLIMB_DECAY).abs() < 1e-12,
            "{big} after {back}"
        );
        assert_eq!(c.step, CLIMB_STEP);
    }

    /// Under a random mix of writes, overwrites, deletes, expiries and reads on a full
    /// W-TinyLFU shard (so swap-removals keep moving window keys away from their index
    /// hints), the window's count matches the entries flagged in it, every flagged entry
    /// still has a hash in the queue, and the shard stays within its bound.
    #[test]
    fn the_window_stays_consistent_as_removals_move_entries() {
        let clock = std::sync::Arc::new(crate::clock::ManualClock::new(1_000));
        let c: crate::Cache<u64, u64> = crate::Cache::builder()
            .max_entries(200)
            .shards(1)
            .hasher_seed(5)
            .clock(clock.clone())
            .background(crate::Background::Manual)
            .build();
        let mut r: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..60_000u64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let k = r % 600;
            match (r >> 32) % 10 {
                0..=3 => c.insert(k, i).unwrap(),
                4 => c
                    .insert_with_ttl(k, i, std::time::Duration::from_millis(1 + (r >> 40) % 50))
                    .unwrap(),
                5 | 6 => {
                    c.remove(&k).unwrap();
                }
                _ => {
                    c.get(&k);
                }
            }
            if i % 97 == 0 {
                clock.advance(7);
            }
            if i % 1_000 == 0 {
                let shard = crate::shim::read(&c.inner.slot(0).shard);
                let flagged: Vec<u64> = shard
                    .entries()
                    .filter(|(_, _, m, _)| m.in_window())
                    .map(|(k, _, _, _)| shard.table.hash_key(k))
                    .collect();
                assert_eq!(flagged.len(), shard.window_len, "at op {i}");
                assert!(flagged
                    .iter()
                    .all(|&h| shard.window.iter().any(|&(f, _)| f == h as u32)));
                assert!(shard.len() <= 200);
            }
        }
    }

    /// Keys written and deleted while in the window leave their hashes in the window's
    /// queue; a cache that never needs to evict (below its bound) must still drop them,
    /// or a write-then-delete churn grows the queue by 8 bytes a key forever.
    #[test]
    fn the_window_queue_stays_bounded_under_churn_below_the_bound() {
        let c: crate::Cache<u64, u64> = crate::Cache::builder()
            .max_entries(100_000)
            .shards(1)
            .hasher_seed(5)
            .background(crate::Background::Manual)
            .build();
        for k in 0..1_000 {
            c.insert(k, k).unwrap();
        }
        for k in 1_000..101_000 {
            c.insert(k, k).unwrap();
            assert!(c.remove(&k).unwrap());
        }
        let shard = crate::shim::read(&c.inner.slot(0).shard);
        assert_eq!(shard.cfg.admission, Admission::WindowTinyLfu);
        assert!(
            shard.window.len() <= 4 * shard.window_len + 64,
            "{} queued for {} keys in the window",
            shard.window.len(),
            shard.window_len
        );
    }
}
