//! Pipelines: many operations, one lock acquisition per shard.

use crate::cache::Cache;
use crate::error::Error;
use crate::events::EventKind;
use crate::shard::{Garbage, TtlChange};
use crate::weigh::Weigher;
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
    /// order they were added.
    pub fn apply(self) -> Vec<BatchResult<V>> {
        let inner = &*self.cache.inner;
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
        let mut start = 0;
        while start < order.len() {
            let shard_idx = order[start].0;
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|(s, _)| *s == shard_idx)
                    .count();
            let slot = inner.slot(shard_idx);
            let mut g = Garbage::new();
            {
                let mut shard = crate::shim::lock(&slot.shard);
                let env = inner.env();
                for &(_, i) in &order[start..end] {
                    let (h, op) = ops[i].take().expect("each op runs once");
                    let r = match op {
                        Op::Get(k) => BatchResult::Value(shard.get(h, &k, &env, &mut g).cloned()),
                        Op::Insert(k, v, ttl) => {
                            let ek = events.then(|| k.clone());
                            let r = shard.insert(h, k, v, ttl, &env, &mut g);
                            let stored =
                                !matches!(ttl, TtlChange::At(at) if at <= env.clock.now_ms());
                            if let (Ok(()), Some(k), true) = (&r, &ek, stored) {
                                inner.emit_removals(&mut g, true);
                                inner.events.emit(EventKind::Set, k);
                            }
                            BatchResult::Inserted(r)
                        }
                        Op::Remove(k) => BatchResult::Removed(shard.remove(h, &k, &env, &mut g)),
                        Op::ExpireAt(k, at) => {
                            BatchResult::Expired(shard.expire_at(h, &k, at, &env, &mut g))
                        }
                        Op::Persist(k) => {
                            BatchResult::Persisted(shard.persist(h, &k, &env, &mut g))
                        }
                    };
                    results[i] = Some(r);
                }
                inner.after_write(slot, &shard, &mut g);
            }
            inner.dispose(g, false);
            start = end;
        }
        inner.multi_record(crate::latency::Op::Batch, started);
        results
            .into_iter()
            .map(|r| r.expect("every op produced a result"))
            .collect()
    }
}
