//! The write operations. Each applies to its shard under the shard lock, logs (for a
//! durable cache) the entries it removed and the record describing itself before the
//! lock is released, and waits for the log's durability after it is released.
//!
//! On a durable cache a write fails with [`Error::Persistence`] when the log cannot be
//! written; the failing write may then be visible in memory but is not durable, and
//! every later write is refused before it changes anything, as Redis refuses writes
//! after an AOF error.

use crate::cache::{Cache, Inner};
use crate::error::Error;
use crate::events::EventKind;
use crate::journal::{Journal, LogOp, LogRecord};
use crate::latency::Op;
use crate::shard::{Env, Garbage, Shard, TtlChange};
use crate::shim::write;
use crate::weigh::Weigher;
use std::borrow::Borrow;
use std::hash::Hash;
use std::time::Duration;

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Inserts or overwrites `key`, clearing any TTL it had (as Redis's `SET`), or, with
    /// a default [`time_to_live`](crate::CacheBuilder::time_to_live), giving it that TTL.
    /// Evicts by policy if the bounds require it; fails with [`Error::OutOfMemory`] when
    /// the policy may not free enough.
    pub fn insert(&self, key: K, value: V) -> Result<(), Error> {
        self.inner.insert(key, value, self.default_ttl(), false)
    }

    /// The TTL a plain insert gives: the builder's `time_to_live` from now, or none.
    pub(crate) fn default_ttl(&self) -> TtlChange {
        match self.inner.settings.time_to_live {
            None => TtlChange::Clear,
            Some(ttl) => TtlChange::At(
                self.inner
                    .clock
                    .now_ms()
                    .saturating_add(ttl.as_millis() as u64),
            ),
        }
    }

    /// Inserts `key` with exactly the hard expiry `expire_at` (none: persistent),
    /// ignoring the default TTL: what replaying a log, a replica or a slot move does
    /// with a key whose expiry was decided where it was first written. Admission does
    /// not contest it: the write was admitted where it was first made (a refused one is
    /// never logged), and a replica or a replay that dropped it would silently lose a key
    /// its source holds.
    #[cfg_attr(not(feature = "persistence"), allow(dead_code))]
    pub(crate) fn insert_exact(
        &self,
        key: K,
        value: V,
        expire_at: Option<u64>,
    ) -> Result<(), Error> {
        let ttl = expire_at.map_or(TtlChange::Clear, TtlChange::At);
        self.inner.insert(key, value, ttl, true)
    }

    /// Inserts or overwrites `key` with a time to live (as `SET key value PX ttl`).
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), Error> {
        let at = self
            .inner
            .clock
            .now_ms()
            .saturating_add(ttl.as_millis() as u64);
        self.inner.insert(key, value, TtlChange::At(at), false)
    }

    /// Inserts or overwrites `key` to expire at `at_ms` Unix milliseconds (as `SET key
    /// value PXAT at_ms`); a time not in the future deletes the key.
    pub fn insert_expiring_at(&self, key: K, value: V, at_ms: u64) -> Result<(), Error> {
        self.inner.insert(key, value, TtlChange::At(at_ms), false)
    }

    /// Removes `key` (Redis's `DEL`); its value is dropped before this returns, after
    /// the shard lock is released (unless `lazyfree-lazy-user-del` is on). Returns
    /// whether it was present.
    pub fn remove<Q>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(Op::Remove, key, false)
    }

    /// Removes `key` and drops its value on the lazy-free thread (Redis's `UNLINK`):
    /// returns in constant time however large the value. Returns whether it was present.
    pub fn unlink<Q>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(Op::Unlink, key, true)
    }

    /// Sets a time to live on an existing key (Redis's `PEXPIRE`). A zero TTL deletes the
    /// key. Returns whether the key existed.
    pub fn expire<Q>(&self, key: &Q, ttl: Duration) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self
            .inner
            .clock
            .now_ms()
            .saturating_add(ttl.as_millis() as u64);
        self.expire_at(key, at)
    }

    /// Sets an absolute expiry in Unix milliseconds (Redis's `PEXPIREAT`); a time not in
    /// the future deletes the key. Returns whether the key existed.
    pub fn expire_at<Q>(&self, key: &Q, at_ms: u64) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        inner.write_slot(
            Op::Expire,
            inner.shard_of(hash),
            false,
            |s, env, g| Ok(s.expire_at(hash, key, at_ms, env, g)),
            |s, existed, j| match s.stored_key(hash, key) {
                // Still there: it got an expiry. Gone: its `Del` is logged already.
                Some(k) if *existed => j.record(LogOp::Expire(k, at_ms)).map(Some),
                _ => Ok(None),
            },
            |s| s.key_clone(hash, key),
        )
    }

    /// Removes the TTL of `key` (Redis's `PERSIST`). Returns whether it had one.
    pub fn persist<Q>(&self, key: &Q) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        inner.write_slot(
            Op::Persist,
            inner.shard_of(hash),
            false,
            |s, env, g| Ok(s.persist(hash, key, env, g)),
            |s, had, j| match s.stored_key(hash, key) {
                Some(k) if *had => j.record(LogOp::Persist(k)).map(Some),
                _ => Ok(None),
            },
            |s| s.key_clone(hash, key),
        )
    }

    /// Removes every entry (Redis's `FLUSHDB`), atomically: every shard is locked (in
    /// ascending order) while it runs. Values are dropped after the locks are released.
    pub fn clear(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        let journal = inner.journal();
        let mut g = Garbage::new();
        let seq = {
            let mut locked = self.lock_all();
            if let Some(j) = journal {
                j.check()?;
            }
            for (_, shard) in &mut locked.guards {
                shard.clear(&inner.weigher, &mut g);
            }
            // One `Flush` covers every removal.
            let _ = g.unlogged_keys().count();
            let seq = match journal {
                Some(j) => j.record(LogOp::Flush).and_then(|r| j.write(vec![r], false)),
                None => Ok(0),
            };
            for (i, shard) in &locked.guards {
                inner.slot(*i).publish(shard);
            }
            inner.emit_removals(&mut g, true);
            seq
        };
        inner.dispose(g, false);
        inner.wait(seq?)
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// A write on shard `i`: refused up front if the log refuses writes; applies `f`;
    /// logs the entries `f` removed and the record `own` describes, under the lock;
    /// then, after unlocking, waits for durability.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_slot<R>(
        &self,
        op: Op,
        i: usize,
        unlink: bool,
        f: impl FnOnce(&mut Shard<K, V>, &Env<'_, W>, &mut Garbage<K, V>) -> Result<R, Error>,
        own: impl FnOnce(&Shard<K, V>, &R, &dyn Journal<K, V>) -> Result<Option<LogRecord>, Error>,
        key_of: impl FnOnce(&Shard<K, V>) -> Option<K>,
    ) -> Result<R, Error> {
        let journal = self.journal();
        let (r, seq) = self.with_slot(
            i,
            Some(op),
            unlink,
            |s, env, g| {
                if let Some(j) = journal {
                    j.check()?;
                }
                let r = f(s, env, g)?;
                let seq = match journal {
                    Some(j) => {
                        let mut records = removals(j, g)?;
                        records.extend(own(s, &r, j)?);
                        j.write(records, false)?
                    }
                    None => 0,
                };
                Ok((r, seq))
            },
            key_of,
        )?;
        self.wait(seq)?;
        Ok(r)
    }

    /// Inserts entries loaded from a base snapshot, before the log is attached: grouped
    /// by shard, one lock per shard touched. Admission does not contest them, and with
    /// `distinct` (a base whose keys are distinct, loading into a cache that holds none
    /// of them) no insert looks for an existing copy. Bounds and eviction apply as for
    /// any insert. Shards are visited from shard `rotate` on (modulo their number).
    /// Stops at the first error.
    #[cfg(feature = "persistence")]
    pub(crate) fn restore(
        &self,
        entries: impl IntoIterator<Item = (K, V, Option<u64>)>,
        distinct: bool,
        rotate: usize,
    ) -> Result<(), Error> {
        // (hash, key, value, expiry) for each shard.
        #[allow(clippy::type_complexity)]
        let mut by_shard: Vec<Vec<(u64, K, V, Option<u64>)>> =
            (0..self.slots.len()).map(|_| Vec::new()).collect();
        for (k, v, at) in entries {
            let h = self.hash(&k);
            by_shard[self.shard_of(h)].push((h, k, v, at));
        }
        // Loaders of different sections start at different shards, so that threads
        // loading in parallel rarely wait for the same shard lock.
        let n = by_shard.len();
        let first = rotate % n;
        let mut batches: Vec<_> = by_shard.into_iter().enumerate().collect();
        batches.rotate_left(first);
        for (i, batch) in batches {
            if batch.is_empty() {
                continue;
            }
            self.with_slot(
                i,
                None,
                false,
                |s, env, g| {
                    let env = &Env {
                        admit_all: true,
                        known_absent: distinct,
                        uncounted: true,
                        ..*env
                    };
                    s.reserve(batch.len());
                    for (h, k, v, at) in batch {
                        let ttl = at.map_or(TtlChange::Clear, TtlChange::At);
                        s.insert(h, k, v, ttl, env, g)?;
                    }
                    Ok(())
                },
                |_| None,
            )?;
        }
        Ok(())
    }

    /// Waits for `seq` to be durable (0: nothing to wait for).
    pub(crate) fn wait(&self, seq: u64) -> Result<(), Error> {
        match self.journal() {
            Some(j) if seq != 0 => j.wait(seq),
            _ => Ok(()),
        }
    }

    /// Inserts or overwrites; with `admit_all`, admission does not contest a new key.
    pub(crate) fn insert(
        &self,
        key: K,
        value: V,
        ttl: TtlChange,
        admit_all: bool,
    ) -> Result<(), Error> {
        self.put(key, value, ttl, false, admit_all).map(|_| ())
    }

    /// Inserts `key` only if it has no live value; returns the live value it has
    /// instead (what a loader's result must not overwrite: a value written while the
    /// loader ran is newer than what the loader read).
    pub(crate) fn insert_absent(
        &self,
        key: K,
        value: V,
        ttl: TtlChange,
    ) -> Result<Option<V>, Error> {
        self.put(key, value, ttl, true, false)
    }

    /// An insert; with `absent_only`, none if `key` has a live value, which is returned;
    /// with `admit_all`, admission does not contest a new key.
    fn put(
        &self,
        key: K,
        value: V,
        ttl: TtlChange,
        absent_only: bool,
        admit_all: bool,
    ) -> Result<Option<V>, Error> {
        let hash = self.hash(&key);
        let mut present = None;
        let event_key = self.events.active().then(|| key.clone());
        let log_key = self.slowlog.threshold.is_some().then(|| key.clone());
        let expire_at = match ttl {
            TtlChange::Clear => None,
            TtlChange::At(at) => Some(at),
        };
        self.write_slot(
            Op::Insert,
            self.shard_of(hash),
            false,
            |s, env, g| {
                let env = &Env { admit_all, ..*env };
                if absent_only {
                    if let Some(v) = s.peek(hash, &key, env, g) {
                        present = Some(v.clone());
                        return Ok(None);
                    }
                }
                let idx = s.insert(hash, key, value, ttl, env, g)?;
                if let (Some(_), Some(k)) = (idx, &event_key) {
                    // Evictions the write caused come first.
                    self.emit_removals(g, true);
                    self.events.emit(EventKind::Set, k);
                }
                Ok(idx)
            },
            |s, idx, j| match idx {
                Some(idx) => {
                    let (key, value) = s.entry_at(*idx);
                    j.record(LogOp::Set {
                        key,
                        value,
                        expire_at,
                    })
                    .map(Some)
                }
                // An expiry already past deleted the key; its `Del` is logged already.
                None => Ok(None),
            },
            |_| log_key,
        )?;
        Ok(present)
    }

    fn remove<Q>(&self, op: Op, key: &Q, unlink: bool) -> Result<bool, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.write_slot(
            op,
            self.shard_of(hash),
            unlink,
            |s, env, g| Ok(s.remove(hash, key, env, g)),
            |_, _, _| Ok(None),
            |s| s.key_clone(hash, key),
        )
    }
}

/// `Del` records for the entries a write removed (evictions, expiries met on the way,
/// the removal itself) that are not logged yet.
pub(crate) fn removals<K: 'static, V: 'static>(
    j: &dyn Journal<K, V>,
    g: &mut Garbage<K, V>,
) -> Result<Vec<LogRecord>, Error> {
    let mut records = crate::journal::take_records();
    for k in g.unlogged_keys() {
        records.push(j.record(LogOp::Del(k))?);
    }
    Ok(records)
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Locks every shard, in ascending order.
    pub(crate) fn lock_all(&self) -> crate::cache::Locked<'_, K, V> {
        crate::cache::Locked {
            guards: (0..self.inner.slots.len())
                .map(|i| (i, write(&self.inner.slots[i].shard)))
                .collect(),
        }
    }
}
