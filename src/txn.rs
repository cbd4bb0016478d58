//! Transactions: atomic reads and writes over a declared set of keys.

use crate::cache::{Cache, Locked};
use crate::error::{Error, TxError};
use crate::events::EventKind;
use crate::journal::LogOp;
use crate::shard::{Env, Garbage, Ttl, TtlChange};
use crate::weigh::Weigher;
use crate::write::removals;
use std::hash::Hash;
use std::time::Duration;

/// A key's value and absolute expiry before a commit, or `None` if it was absent.
type Prior<V> = Option<(V, Option<u64>)>;

enum Staged<V> {
    Put(V, TtlChange),
    Del,
}

/// The view a transaction closure gets: reads see the transaction's own writes; writes
/// are staged and applied together when the closure returns `Ok`.
///
/// Only the keys declared to [`Cache::transaction`] may be touched; touching another
/// aborts the transaction with [`TxError::UndeclaredKey`].
pub struct Transaction<'a, K, V, W> {
    cache: &'a Cache<K, V, W>,
    locked: Locked<'a, K, V>,
    declared: Vec<(K, u64)>,
    staged: Vec<(K, u64, Staged<V>)>,
    garbage: Garbage<K, V>,
    undeclared: bool,
    /// Keys the commit wrote (or tried to), for the log.
    touched: Vec<(K, u64)>,
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Runs `f` atomically over `keys` (like Redis's `MULTI`/`EXEC` with `WATCH`, but
    /// pessimistic): the shards of `keys` are locked in ascending order, so concurrent
    /// transactions cannot deadlock; no other operation sees the keys until `f` returns.
    /// If `f` returns `Ok`, its writes are applied together; if it returns `Err`, or a
    /// write is refused for memory, none are.
    ///
    /// Keep `f` short: it runs under the locks of every shard it declared.
    pub fn transaction<R, E>(
        &self,
        keys: &[K],
        f: impl FnOnce(&mut Transaction<'_, K, V, W>) -> Result<R, E>,
    ) -> Result<R, TxError<E>> {
        let started = self.inner.multi_start();
        let declared: Vec<(K, u64)> = keys
            .iter()
            .map(|k| (k.clone(), self.inner.hash(k)))
            .collect();
        let locked = self.lock_shards(declared.iter().map(|(_, h)| *h));
        let mut tx = Transaction {
            cache: self,
            locked,
            declared,
            staged: Vec::new(),
            garbage: Garbage::new(),
            undeclared: false,
            touched: Vec::new(),
        };
        let outcome = f(&mut tx);
        // `seq`: what the log must make durable once the locks are released.
        let (result, seq) = match outcome {
            Err(e) => (Err(TxError::Aborted(e)), Ok(0)),
            Ok(_) if tx.undeclared => (Err(TxError::UndeclaredKey), Ok(0)),
            Ok(r) => {
                let applied = tx.commit();
                let seq = tx.log();
                (applied.map(|()| r).map_err(TxError::Write), seq)
            }
        };
        let durable = self.finish(tx, seq, started);
        match (result, durable) {
            (Ok(_), Err(e)) => Err(TxError::Write(e)),
            (result, _) => result,
        }
    }

    /// Inserts every entry, all or nothing, as Redis's `MSET`: no other operation sees
    /// some of them written and others not, and if one is refused (for memory, or by
    /// a durable cache's log) none is. Each entry's TTL is cleared; of two entries for
    /// one key, the later wins.
    ///
    /// Like a [`transaction`](Self::transaction) over the keys, without the closure:
    /// the keys are hashed once and moved in, not cloned.
    pub fn insert_all(&self, entries: Vec<(K, V)>) -> Result<(), Error> {
        let started = self.inner.multi_start();
        let staged: Vec<(K, u64, Staged<V>)> = entries
            .into_iter()
            .map(|(k, v)| {
                let h = self.inner.hash(&k);
                (k, h, Staged::Put(v, TtlChange::Clear))
            })
            .collect();
        let locked = self.lock_shards(staged.iter().map(|(_, h, _)| *h));
        let mut tx = Transaction {
            cache: self,
            locked,
            declared: Vec::new(),
            staged,
            garbage: Garbage::new(),
            undeclared: false,
            touched: Vec::new(),
        };
        let applied = tx.commit();
        let seq = tx.log();
        let durable = self.finish(tx, seq, started);
        applied.and(durable)
    }

    /// Publishes the shards a transaction locked, reports and frees what it removed,
    /// releases the locks, then waits for the log to make `seq` durable.
    fn finish(
        &self,
        tx: Transaction<'_, K, V, W>,
        seq: Result<u64, Error>,
        started: Option<std::time::Instant>,
    ) -> Result<(), Error> {
        let Transaction {
            locked,
            mut garbage,
            ..
        } = tx;
        for (i, guard) in &locked.guards {
            self.inner.slot(*i).publish(guard);
        }
        // Removals a transaction staged are reported by `commit`; the garbage's own `del`
        // entries are those, or rolled back.
        self.inner.emit_removals(&mut garbage, false);
        drop(locked);
        self.inner.dispose(garbage, false);
        self.inner
            .multi_record(crate::latency::Op::Transaction, started);
        seq.and_then(|seq| self.inner.wait(seq))
    }
}

impl<K, V, W> Transaction<'_, K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    fn declared_hash(&mut self, key: &K) -> Option<u64> {
        let h = self
            .declared
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, h)| *h);
        if h.is_none() {
            self.undeclared = true;
        }
        h
    }

    fn staged(&self, key: &K) -> Option<&Staged<V>> {
        self.staged
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, s)| s)
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let h = self.declared_hash(key)?;
        match self.staged(key) {
            Some(Staged::Put(v, _)) => return Some(v.clone()),
            Some(Staged::Del) => return None,
            None => {}
        }
        let inner = &*self.cache.inner;
        let env = inner.env();
        let shard = self.locked.shard(inner.shard_of(h));
        shard.get(h, key, &env, &mut self.garbage).cloned()
    }

    /// Whether `key` exists as this transaction sees it.
    pub fn contains(&mut self, key: &K) -> bool {
        let Some(h) = self.declared_hash(key) else {
            return false;
        };
        match self.staged(key) {
            Some(Staged::Put(..)) => return true,
            Some(Staged::Del) => return false,
            None => {}
        }
        let inner = &*self.cache.inner;
        let env = inner.env();
        let shard = self.locked.shard(inner.shard_of(h));
        shard.peek(h, key, &env, &mut self.garbage).is_some()
    }

    /// Stages an insert (clearing any TTL).
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(h) = self.declared_hash(&key) {
            self.staged
                .push((key, h, Staged::Put(value, TtlChange::Clear)));
        }
    }

    /// Stages an insert with a time to live counted from now.
    pub fn insert_with_ttl(&mut self, key: K, value: V, ttl: Duration) {
        if let Some(h) = self.declared_hash(&key) {
            let at = self
                .cache
                .inner
                .clock
                .now_ms()
                .saturating_add(ttl.as_millis() as u64);
            self.staged
                .push((key, h, Staged::Put(value, TtlChange::At(at))));
        }
    }

    /// Stages an insert that expires at `at_ms` (milliseconds since the Unix epoch, as
    /// the cache's clock counts them; Redis's `SET PXAT`).
    pub fn insert_expiring_at(&mut self, key: K, value: V, at_ms: u64) {
        if let Some(h) = self.declared_hash(&key) {
            self.staged
                .push((key, h, Staged::Put(value, TtlChange::At(at_ms))));
        }
    }

    /// Stages an insert that keeps the key's expiry as this transaction sees it (Redis's
    /// `SET KEEPTTL`, and what `INCR`, `APPEND` and `SETRANGE` do): none if the key is
    /// absent or has none.
    pub fn insert_keep_ttl(&mut self, key: K, value: V) {
        let ttl = match self.expire_at(&key) {
            Some(Some(at)) => TtlChange::At(at),
            _ => TtlChange::Clear,
        };
        if let Some(h) = self.declared_hash(&key) {
            self.staged.push((key, h, Staged::Put(value, ttl)));
        }
    }

    /// The absolute expiry of `key` as this transaction sees it (milliseconds since the
    /// Unix epoch): `None` if absent, `Some(None)` if it never expires.
    pub fn expire_at(&mut self, key: &K) -> Option<Option<u64>> {
        let h = self.declared_hash(key)?;
        match self.staged(key) {
            Some(Staged::Put(_, TtlChange::At(at))) => return Some(Some(*at)),
            Some(Staged::Put(_, TtlChange::Clear)) => return Some(None),
            Some(Staged::Del) => return None,
            None => {}
        }
        let inner = &*self.cache.inner;
        let env = inner.env();
        let shard = self.locked.shard(inner.shard_of(h));
        shard.expire_time(h, key, &env, &mut self.garbage)
    }

    /// The cache clock's time (milliseconds since the Unix epoch for the system clock):
    /// what absolute expiries are compared with.
    pub fn now_ms(&self) -> u64 {
        self.cache.inner.clock.now_ms()
    }

    /// Stages a removal; returns whether the key exists as this transaction sees it.
    pub fn remove(&mut self, key: &K) -> bool {
        let existed = self.contains(key);
        if let Some(h) = self.declared_hash(key) {
            self.staged.push((key.clone(), h, Staged::Del));
        }
        existed
    }

    /// Applies the staged writes in order; on a refused write, restores every key
    /// written so far to what it was and reports the error.
    fn commit(&mut self) -> Result<(), Error> {
        let inner = &*self.cache.inner;
        if let Some(j) = inner.journal() {
            j.check()?;
        }
        // All-or-nothing: admission does not refuse a transaction's writes, nor the
        // rollback's restores.
        let env = Env {
            admit_all: true,
            ..inner.env()
        };
        if inner.journal().is_some() {
            self.touched = self
                .staged
                .iter()
                .map(|(k, h, _)| (k.clone(), *h))
                .collect();
        }
        let staged = std::mem::take(&mut self.staged);
        // Keys the closure's reads found expired are reported before the commit's events.
        inner.emit_removals(&mut self.garbage, false);
        // What each written key was before, to restore on failure.
        let mut prior: Vec<(K, u64, Prior<V>)> = Vec::with_capacity(staged.len());
        for (k, h, _) in &staged {
            if prior.iter().any(|(p, ph, _)| ph == h && p == k) {
                continue;
            }
            let shard = self.locked.shard(inner.shard_of(*h));
            let before = shard.snapshot(*h, k, &env, &mut self.garbage);
            prior.push((k.clone(), *h, before));
        }
        let mut events = Vec::new();
        let mut failure = None;
        for (k, h, op) in staged {
            let shard = self.locked.shard(inner.shard_of(h));
            match op {
                Staged::Put(v, ttl) => {
                    let ek = inner.events.active().then(|| k.clone());
                    if let Err(e) = shard.insert(h, k, v, ttl, &env, &mut self.garbage) {
                        failure = Some(e);
                        break;
                    }
                    if let Some(k) = ek {
                        events.push((EventKind::Set, k));
                    }
                }
                Staged::Del => {
                    if shard.remove(h, &k, &env, &mut self.garbage) {
                        events.push((EventKind::Del, k));
                    }
                }
            }
        }
        if let Some(e) = failure {
            for (k, h, before) in prior {
                let shard = self.locked.shard(inner.shard_of(h));
                match before {
                    Some((v, at)) => {
                        let ttl = at.map_or(TtlChange::Clear, TtlChange::At);
                        // What was there fitted before; restoring it can only evict.
                        let _ = shard.insert(h, k, v, ttl, &env, &mut self.garbage);
                    }
                    None => {
                        shard.remove(h, &k, &env, &mut self.garbage);
                    }
                }
            }
            return Err(e);
        }
        for (kind, k) in events {
            inner.events.emit(kind, &k);
        }
        Ok(())
    }

    /// Logs what the commit (or its rollback) left, as one all-or-nothing record: a `Del`
    /// for every entry that left the keyspace, then the final value of every touched key
    /// still present. Replayed, it yields exactly the state the locks release. Returns
    /// the sequence to wait for.
    fn log(&mut self) -> Result<u64, Error> {
        let inner = &*self.cache.inner;
        let Some(j) = inner.journal() else {
            return Ok(0);
        };
        let mut records = removals(j, &mut self.garbage)?;
        let mut done: Vec<(&K, u64)> = Vec::with_capacity(self.touched.len());
        for (k, h) in &self.touched {
            if done.iter().any(|(d, dh)| dh == h && *d == k) {
                continue;
            }
            done.push((k, *h));
            let shard = self.locked.shard(inner.shard_of(*h));
            if let Some((key, value, expire_at)) = shard.stored_entry(*h, k) {
                records.push(j.record(LogOp::Set {
                    key,
                    value,
                    expire_at,
                })?);
            }
        }
        j.write(records, true)
    }

    /// Time to live of `key` as stored (staged writes not considered).
    pub fn ttl(&mut self, key: &K) -> Ttl {
        let Some(h) = self.declared_hash(key) else {
            return Ttl::Missing;
        };
        let inner = &*self.cache.inner;
        let env = inner.env();
        let shard = self.locked.shard(inner.shard_of(h));
        shard.ttl(h, key, &env, &mut self.garbage)
    }
}
