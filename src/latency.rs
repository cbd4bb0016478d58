//! Per-operation latency histograms (Redis 7's `LATENCY HISTOGRAM` / `latencystats`) and
//! the slowlog (`SLOWLOG GET`).
//!
//! Timing costs two clock reads per operation, so it is off unless
//! [`CacheBuilder::latency_tracking`](crate::CacheBuilder::latency_tracking) or a slowlog
//! threshold is set. Single-shard operations record into their shard's histogram under
//! the shard lock they already hold (no shared counters); multi-shard operations record
//! into a cache-wide histogram under its own lock.

use crate::shim::{lock, AtomicU64, Mutex, Ordering};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The operations latency is tracked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `get`
    Get,
    /// `contains`
    Contains,
    /// `insert`, `insert_with_ttl`, `insert_expiring_at`
    Insert,
    /// `remove`
    Remove,
    /// `unlink`
    Unlink,
    /// `expire`, `expire_at`
    Expire,
    /// `persist`
    Persist,
    /// `ttl`
    Ttl,
    /// `scan` (one call)
    Scan,
    /// `batch().apply()`
    Batch,
    /// `transaction`
    Transaction,
}

impl Op {
    /// Every tracked operation.
    pub const ALL: [Op; 11] = [
        Op::Get,
        Op::Contains,
        Op::Insert,
        Op::Remove,
        Op::Unlink,
        Op::Expire,
        Op::Persist,
        Op::Ttl,
        Op::Scan,
        Op::Batch,
        Op::Transaction,
    ];

    /// The Redis-like command name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Contains => "exists",
            Op::Insert => "set",
            Op::Remove => "del",
            Op::Unlink => "unlink",
            Op::Expire => "pexpire",
            Op::Persist => "persist",
            Op::Ttl => "pttl",
            Op::Scan => "scan",
            Op::Batch => "pipeline",
            Op::Transaction => "exec",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Buckets by powers of two of nanoseconds: bucket `i` holds durations in
/// `[2^i, 2^(i+1))` ns (bucket 0 also holds 0).
pub const BUCKETS: usize = 48;

/// A latency histogram with power-of-two nanosecond buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket; see [`BUCKETS`].
    pub buckets: [u64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; BUCKETS],
        }
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let i = (63 - ns.max(1).leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[i] += 1;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }

    /// Number of recorded operations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0.0..=1.0); `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(1u64 << (i + 1).min(63)));
            }
        }
        None
    }
}

/// One histogram per [`Op`].
#[derive(Clone, Debug, Default)]
pub(crate) struct OpHistograms {
    ops: [Histogram; Op::ALL.len()],
}

impl OpHistograms {
    pub(crate) fn record(&mut self, op: Op, d: Duration) {
        self.ops[op.index()].record(d);
    }
    pub(crate) fn get(&self, op: Op) -> &Histogram {
        &self.ops[op.index()]
    }
    pub(crate) fn merge(&mut self, other: &OpHistograms) {
        for (a, b) in self.ops.iter_mut().zip(other.ops.iter()) {
            a.merge(b);
        }
    }
}

/// One slow operation, as `SLOWLOG GET` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowlogEntry<K> {
    /// Increasing id.
    pub id: u64,
    /// When the operation finished, Unix milliseconds (from the cache's clock).
    pub at_ms: u64,
    /// How long it took.
    pub duration: Duration,
    /// What it was.
    pub op: Op,
    /// The key, for single-key operations.
    pub key: Option<K>,
}

/// `slowlog-log-slower-than` and `slowlog-max-len`.
pub(crate) struct Slowlog<K> {
    pub(crate) threshold: Option<Duration>,
    max_len: usize,
    entries: Mutex<VecDeque<SlowlogEntry<K>>>,
    next_id: AtomicU64,
}

impl<K> Slowlog<K> {
    pub(crate) fn new(threshold: Option<Duration>, max_len: usize) -> Self {
        Slowlog {
            threshold,
            max_len,
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_slow(&self, d: Duration) -> bool {
        self.threshold.is_some_and(|t| d >= t)
    }

    pub(crate) fn push(&self, at_ms: u64, duration: Duration, op: Op, key: Option<K>) {
        if self.max_len == 0 {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut e = lock(&self.entries);
        if e.len() >= self.max_len {
            e.pop_back();
        }
        e.push_front(SlowlogEntry {
            id,
            at_ms,
            duration,
            op,
            key,
        });
    }

    /// Newest first, at most `n`.
    pub(crate) fn get(&self, n: usize) -> Vec<SlowlogEntry<K>>
    where
        K: Clone,
    {
        lock(&self.entries).iter().take(n).cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub(crate) fn reset(&self) {
        lock(&self.entries).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        let mut h = Histogram::default();
        for ns in [0u64, 1, 2, 3, 100, 1000, 1_000_000] {
            h.record(Duration::from_nanos(ns));
        }
        assert_eq!(h.count(), 7);
        assert_eq!(h.buckets[0], 2); // 0 and 1
        assert_eq!(h.buckets[1], 2); // 2 and 3
        assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(4)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_nanos(1 << 20)));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn slowlog_keeps_newest_max_len() {
        let s: Slowlog<u32> = Slowlog::new(Some(Duration::from_micros(10)), 2);
        assert!(!s.is_slow(Duration::from_micros(9)));
        assert!(s.is_slow(Duration::from_micros(10)));
        for i in 0..3 {
            s.push(i, Duration::from_micros(20), Op::Get, Some(i as u32));
        }
        let got = s.get(10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, 2);
        assert_eq!(got[1].key, Some(1));
        s.reset();
        assert_eq!(s.len(), 0);
    }
}
