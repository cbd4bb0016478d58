//! Changing a running cache's bounds and eviction policy: what Redis's `CONFIG SET`
//! does for `maxmemory`, `maxmemory-policy`, `maxmemory-samples`, `lfu-log-factor` and
//! `lfu-decay-time`.
//!
//! The cache keeps the settings in force in one place (read by `info()` and
//! [`Cache::config`]); each shard holds its own copy, which a change replaces under the
//! shard's lock, one shard at a time, evicting down to a lowered bound before the lock
//! is released (Redis evicts on the next command; here the call returns once every
//! shard is within its bound, so `used_memory` is below the new `maxmemory` when it
//! returns, unless the policy may not evict). A durable cache logs those evictions as
//! it logs any write's.

use crate::cache::{Cache, Inner, Settings};
use crate::error::Error;
use crate::policy::{Admission, LfuDecay, Policy};
use crate::shard::ShardConfig;
use crate::shim::{lock, Ordering};
use crate::weigh::Weigher;
use std::hash::Hash;

/// The settings a running cache may change, as they stand ([`Cache::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveConfig {
    /// `maxmemory`: the bound on `used_memory`, `None` for none.
    pub max_memory: Option<u64>,
    /// The bound on the number of entries, `None` for none.
    pub max_entries: Option<u64>,
    /// `maxmemory-policy`.
    pub policy: Policy,
    /// `maxmemory-samples`.
    pub samples: usize,
    /// `lfu-log-factor`.
    pub lfu_log_factor: u32,
    /// How LFU counters decay (`lfu-decay-time` is [`LfuDecay::Minutes`]).
    pub lfu_decay: LfuDecay,
}

impl LiveConfig {
    pub(crate) fn of(settings: &Settings) -> Self {
        LiveConfig {
            max_memory: settings.max_memory,
            max_entries: settings.max_entries,
            policy: settings.policy,
            samples: settings.samples,
            lfu_log_factor: settings.lfu_log_factor,
            lfu_decay: settings.lfu_decay,
        }
    }

    /// Each of `shards` shards' configuration under these settings (the admission
    /// configured at build time applies while the policy is an allkeys one).
    pub(crate) fn shard_config(&self, settings: &Settings, shards: usize) -> ShardConfig {
        let share = |total: Option<u64>| total.map_or(u64::MAX, |t| t / shards as u64);
        ShardConfig {
            policy: self.policy,
            samples: self.samples.max(1),
            lfu: crate::meta::Lfu {
                log_factor: self.lfu_log_factor,
                decay: self.lfu_decay,
            },
            budget: share(self.max_memory),
            max_entries: share(self.max_entries).max(1),
            admission: settings.admission_in_force(self.policy),
            doorkeeper: settings.doorkeeper,
        }
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// The bounds and eviction settings in force.
    pub fn config(&self) -> LiveConfig {
        *lock(&self.inner.live)
    }

    /// Sets `maxmemory` on the running cache (`None`: unbounded), as Redis's `CONFIG
    /// SET maxmemory`. A lowered bound evicts by the policy before this returns.
    ///
    /// The weights must count memory: a cache built without
    /// [`max_memory`](crate::CacheBuilder::max_memory) or
    /// [`lazy_free`](crate::CacheBuilder::lazy_free) weighs entries by their inline
    /// size only and refuses with [`Error::NotMemoryWeighed`] (build it with a bound,
    /// however large, to change the bound later).
    pub fn set_max_memory(&self, bytes: Option<u64>) -> Result<(), Error> {
        if bytes.is_some() && !self.inner.weigher.weighs_memory() {
            return Err(Error::NotMemoryWeighed);
        }
        self.inner.reconfigure(|c| c.max_memory = bytes)
    }

    /// The `lazyfree-lazy-*` switches and threshold in force.
    pub fn lazy_free(&self) -> crate::LazyFree {
        crate::LazyFree::from_switches(
            self.inner.lazy_switches.load(Ordering::Relaxed),
            self.inner.lazy_threshold.load(Ordering::Relaxed) as usize,
        )
    }

    /// Sets `lazyfree-lazy-*` on the running cache (Redis's `CONFIG SET
    /// lazyfree-lazy-eviction yes` ...): removals after this call follow the new
    /// switches. The threshold compares weights, so turning a switch on needs weights
    /// that count memory, as [`set_max_memory`](Self::set_max_memory) does
    /// ([`Error::NotMemoryWeighed`] otherwise).
    pub fn set_lazy_free(&self, lazy_free: crate::LazyFree) -> Result<(), Error> {
        if lazy_free.switches() != 0 && !self.inner.weigher.weighs_memory() {
            return Err(Error::NotMemoryWeighed);
        }
        self.inner
            .lazy_threshold
            .store(lazy_free.threshold as u64, Ordering::Relaxed);
        self.inner
            .lazy_switches
            .store(lazy_free.switches(), Ordering::Relaxed);
        Ok(())
    }

    /// Sets the bound on the number of entries (`None`: unbounded); a lowered bound
    /// evicts by the policy before this returns.
    pub fn set_max_entries(&self, n: Option<u64>) -> Result<(), Error> {
        self.inner.reconfigure(|c| c.max_entries = n)
    }

    /// Sets `maxmemory-policy`. Admission configured at build time (or the default's)
    /// applies while the policy is an allkeys one. Between LRU-like and LFU policies
    /// every key starts afresh, as if just written.
    pub fn set_eviction(&self, policy: Policy) -> Result<(), Error> {
        self.inner.reconfigure(|c| c.policy = policy)
    }

    /// Sets `maxmemory-samples` (at least 1).
    pub fn set_maxmemory_samples(&self, n: usize) -> Result<(), Error> {
        self.inner.reconfigure(|c| c.samples = n.max(1))
    }

    /// Sets `lfu-log-factor`.
    pub fn set_lfu_log_factor(&self, factor: u32) -> Result<(), Error> {
        self.inner.reconfigure(|c| c.lfu_log_factor = factor)
    }

    /// Sets how LFU counters decay (`lfu-decay-time` is [`LfuDecay::Minutes`]).
    pub fn set_lfu_decay(&self, decay: LfuDecay) -> Result<(), Error> {
        self.inner.reconfigure(|c| c.lfu_decay = decay)
    }

    /// Sets the fsync policy of a durable cache (Redis's `CONFIG SET appendfsync`).
    /// What was written before is synced first, so the new policy's promise covers it
    /// too. [`Error::NotDurable`] on a cache without a log.
    #[cfg(feature = "persistence")]
    #[cfg_attr(docsrs, doc(cfg(feature = "persistence")))]
    pub fn set_fsync(&self, fsync: crate::Fsync) -> Result<(), Error> {
        self.inner
            .journal()
            .ok_or(Error::NotDurable)?
            .set_fsync(fsync)
    }

    /// A durable cache's save rules (Redis's `save <seconds> <changes>`: a snapshot is
    /// taken when at least `changes` writes came in the `seconds` since the last one).
    /// [`Error::NotDurable`] on a cache without a log.
    pub fn save_rules(&self) -> Result<Vec<(std::time::Duration, u64)>, Error> {
        self.inner.journal().ok_or(Error::NotDurable)?.save_rules()
    }

    /// Replaces the save rules on the running cache (Redis's `CONFIG SET save`; empty:
    /// no snapshot by rule). [`Error::NotDurable`] on a cache without a log.
    pub fn set_save_rules(&self, rules: Vec<(std::time::Duration, u64)>) -> Result<(), Error> {
        self.inner
            .journal()
            .ok_or(Error::NotDurable)?
            .set_save_rules(rules)
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Applies `change` to the settings in force and to every shard, one shard lock at a
    /// time, logging what it evicts. Changes are serialised by their own lock, not the
    /// settings', which `info()` reads while a lowered bound is still evicting.
    fn reconfigure(&self, change: impl FnOnce(&mut LiveConfig)) -> Result<(), Error> {
        let _one_at_a_time = lock(&self.reconfiguring);
        let cfg = {
            let mut live = lock(&self.live);
            change(&mut live);
            live.shard_config(&self.settings, self.slots.len())
        };
        let journal = self.journal();
        for i in 0..self.slots.len() {
            let seq = self.with_slot(
                i,
                None,
                false,
                |s, env, g| {
                    if let Some(j) = journal {
                        j.check()?;
                    }
                    s.reconfigure(cfg, env, g);
                    match journal {
                        Some(j) => j.write(crate::write::removals(j, g)?, false),
                        None => Ok(0),
                    }
                },
                |_| None,
            )?;
            self.wait(seq)?;
        }
        Ok(())
    }
}

impl Settings {
    /// The admission the shards apply under `policy`: as configured, else the default
    /// when the policy was not chosen either, else none; and none for policies other
    /// than allkeys ones.
    pub(crate) fn admission_in_force(&self, policy: Policy) -> Admission {
        let wanted = match self.admission {
            Some(a) => a,
            None if self.policy_chosen => Admission::None,
            None => crate::builder::DEFAULT_ADMISSION,
        };
        match policy {
            Policy::AllKeysLru | Policy::AllKeysLfu | Policy::AllKeysRandom => wanted,
            _ => Admission::None,
        }
    }
}
