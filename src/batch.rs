//! Pipelines: many operations, one lock acquisition per shard.

use crate::cache::{Cache, Inner};
use crate::error::Error;
use crate::events::EventKind;
use crate::journal::{Journal, LogOp, LogRecord};
use crate::shard::{Env, Garbage, Shard, TtlChange};
use crate::weigh::Weigher;
use crate::write::removals;
use std::hash::Hash;
use std::time::Duration;

enum Op<K, V> {
    Get(K),
    Insert(K, V, TtlChange),
    Remove(K),
    ExpireAt(K, u64),
    Persist(K),
}

/// The result of one operation of a [`Batch`], in the order the operations were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult<V> {
    /// A `get`: the value, if present.
    Value(Option<V>),
    /// An `insert`: whether it was stored.
    Inserted(Result<(), Error>),
    /// A `remove`: whether the key was present.
    Removed(bool),
    /// An `expire`: whether the key existed.
    Expired(bool),
    /// A `persist`: whether the key had a TTL.
    Persisted(bool),
}

/// A pipeline of operations applied with one lock acquisition per shard
/// ([`Cache::batch`]).
///
/// Operations on the same key apply in the order they were added. A batch is not a
/// transaction: other threads may see some shards' operations applied before others'.
#[must_use = "a batch does nothing until applied"]
pub struct Batch<'c, K, V, W> {
    cache: &'c Cache<K, V, W>,
    ops: Vec<(u64, Op<K, V>)>,
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Starts a pipeline.
    pub fn batch(&self) -> Batch<'_, K, V, W> {
        Batch {
            cache: self,
            ops: Vec::new(),
        }
    }
}

impl<K, V, W> Batch<'_, K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    fn push(mut self, key_hash: u64, op: Op<K, V>) -> Self {
        self.ops.push((key_hash, op));
        self
    }

    /// Adds a `get`.
    pub fn get(self, key: K) -> Self {
        let h = self.cache.inner.hash(&key);
        self.push(h, Op::Get(key))
    }

    /// Adds an `insert`.
    pub fn insert(self, key: K, value: V) -> Self {
        let h = self.cache.inner.hash(&key);
        self.push(h, Op::Insert(key, value, TtlChange::Clear))
    }

    /// Adds an `insert_with_ttl`; the TTL counts from now.
    pub fn insert_with_ttl(self, key: K, value: V, ttl: Duration) -> Self {
        let h = self.cache.inner.hash(&key);
        let at = self.now_plus(ttl);
        self.push(h, Op::Insert(key, value, TtlChange::At(at)))
    }

    /// Adds a `remove`.
    pub fn remove(self, key: K) -> Self {
        let h = self.cache.inner.hash(&key);
        self.push(h, Op::Remove(key))
    }

    /// Adds an `expire`; the TTL counts from now.
    pub fn expire(self, key: K, ttl: Duration) -> Self {
        let h = self.cache.inner.hash(&key);
        let at = self.now_plus(ttl);
        self.push(h, Op::ExpireAt(key, at))
    }

    /// Adds a `persist`.
    pub fn persist(self, key: K) -> Self {
        let h = self.cache.inner.hash(&key);
        self.push(h, Op::Persist(key))
    }

    /// Number of operations added.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn now_plus(&self, ttl: Duration) -> u64 {
        self.cache
            .inner
            .clock
            .now_ms()
            .saturating_add(ttl.as_millis() as u64)
    }

    /// Applies every operation, locking each shard once, and returns their results in the
    /// order they were added. A refused insert (memory) is reported in its result and
    /// the rest go on; an error of a durable cache's log, or a cluster node's refusal,
    /// fails the whole call (the operations of shards already done may be applied, but
    /// are not durable).
    pub fn apply(self) -> Result<Vec<BatchResult<V>>, Error> {
        let inner = &*self.cache.inner;
        let journal = inner.journal();
        if let Some(j) = journal {
            j.check()?;
        }
        let started = inner.multi_start();
        let n = self.ops.len();
        let mut order: Vec<(usize, usize)> = self
            .ops
            .iter()
            .enumerate()
            .map(|(i, (h, _))| (inner.shard_of(*h), i))
            .collect();
        // Stable: operations on one key keep their order.
        order.sort_by_key(|&(shard, _)| shard);
        let mut ops: Vec<Option<(u64, Op<K, V>)>> = self.ops.into_iter().map(Some).collect();
        let mut results: Vec<Option<BatchResult<V>>> = (0..n).map(|_| None).collect();
        let events = inner.events.active();
        let mut last_seq = 0;
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let slot = inner.slot(group[0].0);
            let mut g = Garbage::new();
            let written = {
                let mut shard = crate::shim::write(&slot.shard);
                // Checked again under each shard lock: a cluster node's write gate may
                // close between groups, and its barrier relies on the check being
                // made under the lock the write holds.
                if let Some(j) = journal {
                    j.check()?;
                }
                let env = inner.env();
                let mut records = Vec::new();
                let mut logged = Ok(());
                for &(_, i) in group {
                    let (h, op) = ops[i].take().expect("each op runs once");
                    let (r, own) = apply_one(inner, &mut shard, &env, &mut g, h, op, events);
                    if let (Some(j), Ok(())) = (journal, &logged) {
                        logged = log_one(j, &shard, &mut g, own, &mut records);
                    }
                    results[i] = Some(r);
                }
                inner.after_write(slot, &shard, &mut g);
                match (journal, logged) {
                    (Some(j), Ok(())) => j.write(records, false),
                    (_, Err(e)) => Err(e),
                    (None, Ok(())) => Ok(0),
                }
            };
            inner.dispose(g, false);
            last_seq = last_seq.max(written?);
        }
        inner.wait(last_seq)?;
        inner.multi_record(crate::latency::Op::Batch, started);
        Ok(results
            .into_iter()
            .map(|r| r.expect("every op produced a result"))
            .collect())
    }
}

/// What an applied operation asks the log to record of itself (its removals are taken
/// from the garbage).
enum Own<K> {
    Nothing,
    /// The entry at this index was set.
    Set(u32, Option<u64>),
    Expire(K, u64),
    Persist(K),
}

/// Applies one operation to its locked shard.
fn apply_one<K, V, W>(
    inner: &Inner<K, V, W>,
    shard: &mut Shard<K, V>,
    env: &Env<'_, W>,
    g: &mut Garbage<K, V>,
    h: u64,
    op: Op<K, V>,
    events: bool,
) -> (BatchResult<V>, Own<K>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    match op {
        Op::Get(k) => (
            BatchResult::Value(shard.get(h, &k, env, g).cloned()),
            Own::Nothing,
        ),
        Op::Insert(k, v, ttl) => {
            let ek = events.then(|| k.clone());
            let r = shard.insert(h, k, v, ttl, env, g);
            let own = match (&r, ttl) {
                (Ok(Some(idx)), TtlChange::Clear) => Own::Set(*idx, None),
                (Ok(Some(idx)), TtlChange::At(at)) => Own::Set(*idx, Some(at)),
                _ => Own::Nothing,
            };
            if let (Own::Set(..), Some(k)) = (&own, &ek) {
                inner.emit_removals(g, true);
                inner.events.emit(EventKind::Set, k);
            }
            (BatchResult::Inserted(r.map(|_| ())), own)
        }
        Op::Remove(k) => (
            BatchResult::Removed(shard.remove(h, &k, env, g)),
            Own::Nothing,
        ),
        Op::ExpireAt(k, at) => {
            let existed = shard.expire_at(h, &k, at, env, g);
            let own = if existed && shard.stored_key(h, &k).is_some() {
                Own::Expire(k, at)
            } else {
                Own::Nothing
            };
            (BatchResult::Expired(existed), own)
        }
        Op::Persist(k) => {
            let had = shard.persist(h, &k, env, g);
            let own = if had { Own::Persist(k) } else { Own::Nothing };
            (BatchResult::Persisted(had), own)
        }
    }
}

/// Appends the records of one applied operation: its removals, then itself.
fn log_one<K, V>(
    j: &dyn Journal<K, V>,
    shard: &Shard<K, V>,
    g: &mut Garbage<K, V>,
    own: Own<K>,
    records: &mut Vec<LogRecord>,
) -> Result<(), Error>
where
    K: Hash + Eq + 'static,
    V: 'static,
{
    records.extend(removals(j, g)?);
    let rec = match own {
        Own::Nothing => return Ok(()),
        Own::Set(idx, expire_at) => {
            let (key, value) = shard.entry_at(idx);
            j.record(LogOp::Set {
                key,
                value,
                expire_at,
            })?
        }
        Own::Expire(k, at) => j.record(LogOp::Expire(&k, at))?,
        Own::Persist(k) => j.record(LogOp::Persist(&k))?,
    };
    records.push(rec);
    Ok(())
}
