//! The read operations: `get`, `contains`, `ttl` and `scan`. Each takes its shard's lock
//! shared, so readers of one shard never wait for each other (see docs/design.md).

use crate::cache::Cache;
use crate::counter::thread_rand;
use crate::latency::Op;
use crate::pattern::glob_match;
use crate::shard::{Lookup, Ttl};
use crate::shim::{read, Ordering};
use crate::weigh::Weigher;
use std::borrow::Borrow;
use std::fmt::{self, Write as _};
use std::hash::Hash;

/// A page of keys from [`Cache::scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage<K> {
    /// Pass this to the next call; 0 when the scan is complete.
    pub cursor: u64,
    /// The keys of this page.
    pub keys: Vec<K>,
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// The value of `key`, cloned; `None` if absent or expired. Counts a hit or a miss and
    /// refreshes the key's LRU/LFU metadata. Takes the shard's lock shared, so readers of
    /// one shard do not wait for each other.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        if !inner.timing {
            let s = read(&inner.slots[inner.shard_of(hash)].shard);
            match s.lookup(hash, key, &*inner.clock) {
                // An idle deadline to move needs the exclusive lock: the path below.
                Lookup::Live(idx)
                    if inner
                        .idle_ms()
                        .is_some_and(|d| s.idle_refresh_due(idx, inner.clock.now_ms(), d)) => {}
                Lookup::Live(idx) => {
                    s.touch_shared(
                        idx,
                        hash,
                        inner.coarse_ms.load(Ordering::Relaxed),
                        thread_rand,
                    );
                    let v = s.value_at(idx).clone();
                    drop(s);
                    inner.read_hits.incr();
                    return Some(v);
                }
                Lookup::Missing => {
                    drop(s);
                    inner.read_misses.incr();
                    return None;
                }
                // Deleting it (Redis's lazy expiry) needs the exclusive lock.
                Lookup::Expired => {}
            }
        }
        inner.with_key(Op::Get, hash, key, false, |s, env, g| {
            s.get(hash, key, env, g).cloned()
        })
    }

    /// The value and absolute expiry (ms) of `key`, without touching its metadata or
    /// the hit counters (what a slot move reads).
    #[cfg(feature = "cluster")]
    pub(crate) fn peek_entry(&self, key: &K) -> Option<(V, Option<u64>)> {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        let s = read(&inner.slots[inner.shard_of(hash)].shard);
        match s.lookup(hash, key, &*inner.clock) {
            Lookup::Live(idx) => Some((s.value_at(idx).clone(), s.hard_expiry_at(idx))),
            Lookup::Missing | Lookup::Expired => None,
        }
    }

    /// Whether `key` is present and not expired. Does not touch its metadata (like
    /// Redis's `EXISTS`). Takes the shard's lock shared.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        if inner.timing {
            return inner.with_key(Op::Contains, hash, key, false, |s, env, g| {
                s.peek(hash, key, env, g).is_some()
            });
        }
        let s = read(&inner.slots[inner.shard_of(hash)].shard);
        matches!(s.lookup(hash, key, &*inner.clock), Lookup::Live(_))
    }

    /// Time to live of `key` (Redis's `PTTL`). Takes the shard's lock shared.
    pub fn ttl<Q>(&self, key: &Q) -> Ttl
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hash(key);
        if inner.timing {
            return inner.with_key(Op::Ttl, hash, key, false, |s, env, g| {
                s.ttl(hash, key, env, g)
            });
        }
        let s = read(&inner.slots[inner.shard_of(hash)].shard);
        match s.lookup(hash, key, &*inner.clock) {
            Lookup::Live(idx) => match s.expiry_at(idx) {
                None => Ttl::Persistent,
                Some(at) => Ttl::Remaining(at.saturating_sub(inner.clock.now_ms())),
            },
            Lookup::Missing | Lookup::Expired => Ttl::Missing,
        }
    }

    /// One step of a cursor scan (Redis's `SCAN cursor MATCH pattern COUNT count`).
    ///
    /// Start with cursor 0; the scan is complete when the returned cursor is 0. Every key
    /// present for the whole scan is returned at least once, even if the cache grows or
    /// shrinks between calls; a key may be returned more than once. `pattern` is a Redis
    /// glob (`*`, `?`, `[a-z]`, `[^a]`, `\x`) matched against the key's `Display` form;
    /// `count` is a hint of how many keys to look at. Expired keys are not returned.
    pub fn scan(&self, cursor: u64, pattern: Option<&str>, count: usize) -> ScanPage<K>
    where
        K: fmt::Display,
    {
        let started = self.inner.multi_start();
        let shards = self.inner.slots.len() as u64;
        let mut shard = cursor >> 32;
        let mut bucket = cursor & 0xFFFF_FFFF;
        let mut keys = Vec::new();
        let mut text = String::new();
        let now = self.inner.clock.now_ms();
        let count = count.max(1);
        while shard < shards && keys.len() < count {
            let guard = read(&self.inner.slots[shard as usize].shard);
            bucket = guard.scan(bucket, count - keys.len(), now, |k, _, _| match pattern {
                None => keys.push(k.clone()),
                Some(p) => {
                    text.clear();
                    let _ = write!(text, "{k}");
                    if glob_match(p.as_bytes(), text.as_bytes()) {
                        keys.push(k.clone());
                    }
                }
            });
            drop(guard);
            if bucket == 0 {
                shard += 1;
            }
        }
        let cursor = if shard >= shards {
            0
        } else {
            (shard << 32) | bucket
        };
        self.inner.multi_record(Op::Scan, started);
        ScanPage { cursor, keys }
    }
}
