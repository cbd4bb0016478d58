//! `info()`: the figures Redis's `INFO` reports, as a typed struct with a Redis-style
//! text rendering; and the per-key introspection (`memory_usage`, `big_keys`,
//! `hot_keys`).

use crate::cache::{Cache, Inner};
use crate::latency::Op;
use crate::shim::read;
use crate::weigh::{Weigher, ENTRY_OVERHEAD};
use crate::Policy;
use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// The `# Memory` section.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MemoryInfo {
    /// Sum of entry weights plus the per-entry overhead.
    pub used_memory: u64,
    /// The highest `used_memory` observed (sampled by the cron and by `info()`).
    pub used_memory_peak: u64,
    /// The configured bound, 0 when unbounded (as Redis prints it).
    pub maxmemory: u64,
    /// The eviction policy.
    pub maxmemory_policy: Policy,
    /// The configured bound on entries, 0 when unbounded.
    pub max_entries: u64,
    /// jemalloc's figures; `None` without the `jemalloc` feature.
    pub allocator: Option<AllocatorInfo>,
}

/// What Redis's `INFO memory` reports of its allocator (cargo feature `jemalloc`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AllocatorInfo {
    /// Bytes allocated by the application (`allocator_allocated`).
    pub allocated: u64,
    /// Bytes in active pages (`allocator_active`).
    pub active: u64,
    /// Bytes in physically resident pages the allocator maps (`allocator_resident`).
    pub resident: u64,
    /// The process's resident set size (`used_memory_rss`).
    pub rss: u64,
    /// `active / allocated`: fragmentation inside the allocator's pages.
    pub allocator_frag_ratio: f64,
    /// `rss / used_memory`: resident bytes of the process per byte the cache accounts
    /// (Redis's `mem_fragmentation_ratio`).
    pub mem_fragmentation_ratio: f64,
}

/// The `# Persistence` section of a durable cache.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersistenceInfo {
    /// Always true for a durable cache (larder's snapshots are the AOF's base).
    pub aof_enabled: bool,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub aof_fsync: &'static str,
    /// Whether a rewrite (snapshot) is running.
    pub aof_rewrite_in_progress: bool,
    /// `ok`, or `err: ...` for the last rewrite.
    pub aof_last_rewrite_status: String,
    /// `ok`, or `err: ...` for the last log write or fsync.
    pub aof_last_write_status: String,
    /// Bytes of the base and every incr file.
    pub aof_current_size: u64,
    /// Bytes of the base snapshot.
    pub aof_base_size: u64,
    /// Fsyncs of the log since open (with `always`, records per fsync shows group commit).
    pub aof_fsyncs: u64,
    /// Sequence number of the last record written to the log.
    pub aof_last_seq: u64,
    /// Sequence number of the last record known durable.
    pub aof_durable_seq: u64,
    /// When the last snapshot (rewrite) completed, Unix seconds (the open time if none).
    pub rdb_last_save_time: u64,
    /// Writes logged since the last snapshot.
    pub rdb_changes_since_last_save: u64,
    /// Entries loaded from the base on open.
    pub loading_base_entries: u64,
    /// Records replayed from the incr files on open.
    pub loading_records: u64,
    /// Bytes read on open.
    pub loading_bytes: u64,
    /// How long opening took, in milliseconds.
    pub loading_time_ms: u64,
    /// Bytes of a torn tail cut on open (0: none).
    pub loading_truncated_bytes: u64,
    /// The file whose tail was cut, if any.
    pub loading_truncated_file: Option<String>,
    /// Where in that file the cut was made (0: no cut).
    pub loading_truncated_offset: u64,
    /// The last whole record before the cut: whatever the cut bytes held came after
    /// this sequence (0: no cut, or no record before it).
    pub loading_truncated_after_seq: u64,
    /// The schema tag of data discarded on open because it was written as other types
    /// (`Durability::discard_on_schema_change`), if any.
    pub loading_discarded_schema: Option<String>,
}

/// The `# Stats` section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsInfo {
    /// Reads that found a live key.
    pub keyspace_hits: u64,
    /// Reads that found nothing.
    pub keyspace_misses: u64,
    /// Keys deleted because their TTL passed.
    pub expired_keys: u64,
    /// Keys evicted to stay within the bounds.
    pub evicted_keys: u64,
    /// Values queued for the lazy-free thread, not yet dropped.
    pub lazyfree_pending_objects: u64,
    /// Values the lazy-free path has dropped.
    pub lazyfreed_objects: u64,
}

/// The `# Keyspace` section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyspaceInfo {
    /// Number of keys (expired keys not yet deleted included, as Redis counts them).
    pub keys: u64,
    /// Number of keys with a TTL.
    pub expires: u64,
    /// Mean remaining TTL of keys with a TTL, in milliseconds (0 when none).
    pub avg_ttl: u64,
}

/// One replica as its master sees it (Redis's `slaveN` line).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaLine {
    /// The replica's node id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// `wait_bgsave`, `send_bulk` or `online`.
    pub state: &'static str,
    /// The offset it last acknowledged.
    pub offset: u64,
    /// Milliseconds since that acknowledgement.
    pub lag_ms: Option<u64>,
}

/// The `# Replication` section of a cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationInfo {
    /// `master` or `slave`.
    pub role: &'static str,
    /// The master's node id, on a replica.
    pub master_id: Option<String>,
    /// The master's address, on a replica.
    pub master_addr: Option<String>,
    /// `up` or `down`, on a replica.
    pub master_link_status: Option<&'static str>,
    /// Milliseconds since the master was last heard, on a replica.
    pub master_last_io_ms: Option<u64>,
    /// A full sync is loading, on a replica.
    pub master_sync_in_progress: bool,
    /// The replica's applied offset, on a replica.
    pub slave_repl_offset: Option<u64>,
    /// Replicas streaming, on a master.
    pub connected_slaves: usize,
    /// Every replica the master knows.
    pub slaves: Vec<ReplicaLine>,
    /// The replication id of the history this node holds.
    pub master_replid: String,
    /// The id of the history this node continued, if it was promoted.
    pub master_replid2: Option<String>,
    /// The stream offset.
    pub master_repl_offset: u64,
    /// Up to where `master_replid2`'s history is shared.
    pub second_repl_offset: Option<u64>,
    /// First stream byte in the backlog.
    pub repl_backlog_first_byte_offset: u64,
    /// Stream bytes in the backlog.
    pub repl_backlog_histlen: u64,
    /// Partial resyncs served to replicas (as a master) plus made (as a replica).
    pub sync_partial_ok: u64,
    /// Full resyncs served plus made, likewise.
    pub sync_full: u64,
}

/// The `# Cluster` section of a cluster node (Redis's `CLUSTER INFO`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// `ok` or `fail`.
    pub cluster_state: &'static str,
    /// Slots with an owner.
    pub cluster_slots_assigned: usize,
    /// Nodes known, this one included.
    pub cluster_known_nodes: usize,
    /// Masters serving slots.
    pub cluster_size: usize,
    /// This node's id.
    pub myself: String,
}

/// How recently or how often a key was used, from [`Cache::access_stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessStats {
    /// Time since the last access (policies other than LFU), at least.
    Idle(std::time::Duration),
    /// The logarithmic access counter after decay (LFU policies; Redis's `OBJECT FREQ`).
    Frequency(u8),
}

/// A snapshot of the cache's figures, like Redis's `INFO`. `Display` renders it in
/// Redis's `field:value` format.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Info {
    /// Memory figures.
    pub memory: MemoryInfo,
    /// Counters.
    pub stats: StatsInfo,
    /// Key counts.
    pub keyspace: KeyspaceInfo,
    /// Number of shards.
    pub shards: usize,
    /// Persistence figures; `None` unless the cache is durable.
    pub persistence: Option<PersistenceInfo>,
    /// Replication figures; `None` unless the cache is a cluster node.
    pub replication: Option<ReplicationInfo>,
    /// Cluster figures; `None` unless the cache is a cluster node.
    pub cluster: Option<ClusterInfo>,
    /// p50, p99 and p99.9 latency of each operation that ran, when latency tracking is
    /// on (Redis's `latencystats`; bucket upper bounds, so within a factor of two).
    pub latency: Vec<(Op, Duration, Duration, Duration)>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl fmt::Display for Info {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.memory;
        writeln!(f, "# Memory")?;
        writeln!(f, "used_memory:{}", m.used_memory)?;
        writeln!(f, "used_memory_human:{}", human(m.used_memory))?;
        writeln!(f, "used_memory_peak:{}", m.used_memory_peak)?;
        writeln!(f, "used_memory_peak_human:{}", human(m.used_memory_peak))?;
        writeln!(f, "maxmemory:{}", m.maxmemory)?;
        writeln!(f, "maxmemory_human:{}", human(m.maxmemory))?;
        writeln!(f, "maxmemory_policy:{}", m.maxmemory_policy)?;
        writeln!(f, "max_entries:{}", m.max_entries)?;
        if let Some(a) = &m.allocator {
            writeln!(f, "used_memory_rss:{}", a.rss)?;
            writeln!(f, "allocator_allocated:{}", a.allocated)?;
            writeln!(f, "allocator_active:{}", a.active)?;
            writeln!(f, "allocator_resident:{}", a.resident)?;
            writeln!(f, "allocator_frag_ratio:{:.2}", a.allocator_frag_ratio)?;
            writeln!(
                f,
                "mem_fragmentation_ratio:{:.2}",
                a.mem_fragmentation_ratio
            )?;
        }
        writeln!(f)?;
        let s = &self.stats;
        if let Some(r) = &self.replication {
            writeln!(f, "# Replication")?;
            writeln!(f, "role:{}", r.role)?;
            if let Some(id) = &r.master_id {
                writeln!(f, "master_id:{id}")?;
            }
            if let Some(a) = &r.master_addr {
                writeln!(f, "master_host:{a}")?;
            }
            if let Some(l) = r.master_link_status {
                writeln!(f, "master_link_status:{l}")?;
            }
            if let Some(io) = r.master_last_io_ms {
                writeln!(f, "master_last_io_seconds_ago:{}", io / 1000)?;
            }
            if r.role == "slave" {
                writeln!(
                    f,
                    "master_sync_in_progress:{}",
                    u8::from(r.master_sync_in_progress)
                )?;
            }
            if let Some(o) = r.slave_repl_offset {
                writeln!(f, "slave_repl_offset:{o}")?;
            }
            writeln!(f, "connected_slaves:{}", r.connected_slaves)?;
            for (i, sl) in r.slaves.iter().enumerate() {
                writeln!(
                    f,
                    "slave{i}:id={},addr={},state={},offset={},lag={}",
                    sl.id,
                    sl.addr,
                    sl.state,
                    sl.offset,
                    sl.lag_ms.map_or(-1, |l| (l / 1000) as i64)
                )?;
            }
            writeln!(f, "master_replid:{}", r.master_replid)?;
            writeln!(
                f,
                "master_replid2:{}",
                r.master_replid2.as_deref().unwrap_or(&"0".repeat(40))
            )?;
            writeln!(f, "master_repl_offset:{}", r.master_repl_offset)?;
            writeln!(
                f,
                "second_repl_offset:{}",
                r.second_repl_offset.map_or(-1, |o| o as i64)
            )?;
            writeln!(
                f,
                "repl_backlog_first_byte_offset:{}",
                r.repl_backlog_first_byte_offset
            )?;
            writeln!(f, "repl_backlog_histlen:{}", r.repl_backlog_histlen)?;
            writeln!(f, "sync_full:{}", r.sync_full)?;
            writeln!(f, "sync_partial_ok:{}", r.sync_partial_ok)?;
            writeln!(f)?;
        }
        if let Some(c) = &self.cluster {
            writeln!(f, "# Cluster")?;
            writeln!(f, "cluster_enabled:1")?;
            writeln!(f, "cluster_state:{}", c.cluster_state)?;
            writeln!(f, "cluster_slots_assigned:{}", c.cluster_slots_assigned)?;
            writeln!(f, "cluster_known_nodes:{}", c.cluster_known_nodes)?;
            writeln!(f, "cluster_size:{}", c.cluster_size)?;
            writeln!(f, "cluster_myself:{}", c.myself)?;
            writeln!(f)?;
        }
        if let Some(p) = &self.persistence {
            writeln!(f, "# Persistence")?;
            writeln!(f, "aof_enabled:{}", u8::from(p.aof_enabled))?;
            writeln!(f, "aof_fsync:{}", p.aof_fsync)?;
            writeln!(
                f,
                "aof_rewrite_in_progress:{}",
                u8::from(p.aof_rewrite_in_progress)
            )?;
            writeln!(f, "aof_last_rewrite_status:{}", p.aof_last_rewrite_status)?;
            writeln!(f, "aof_last_write_status:{}", p.aof_last_write_status)?;
            writeln!(f, "aof_current_size:{}", p.aof_current_size)?;
            writeln!(f, "aof_base_size:{}", p.aof_base_size)?;
            writeln!(f, "aof_fsyncs:{}", p.aof_fsyncs)?;
            writeln!(f, "aof_last_seq:{}", p.aof_last_seq)?;
            writeln!(f, "aof_durable_seq:{}", p.aof_durable_seq)?;
            writeln!(f, "rdb_last_save_time:{}", p.rdb_last_save_time)?;
            writeln!(
                f,
                "rdb_changes_since_last_save:{}",
                p.rdb_changes_since_last_save
            )?;
            writeln!(f, "loading_base_entries:{}", p.loading_base_entries)?;
            writeln!(f, "loading_records:{}", p.loading_records)?;
            writeln!(f, "loading_bytes:{}", p.loading_bytes)?;
            writeln!(f, "loading_time_ms:{}", p.loading_time_ms)?;
            writeln!(f, "loading_truncated_bytes:{}", p.loading_truncated_bytes)?;
            if let Some(file) = &p.loading_truncated_file {
                writeln!(f, "loading_truncated_file:{file}")?;
                writeln!(f, "loading_truncated_offset:{}", p.loading_truncated_offset)?;
                writeln!(
                    f,
                    "loading_truncated_after_seq:{}",
                    p.loading_truncated_after_seq
                )?;
            }
            if let Some(tag) = &p.loading_discarded_schema {
                writeln!(f, "loading_discarded_schema:{tag}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "# Stats")?;
        writeln!(f, "keyspace_hits:{}", s.keyspace_hits)?;
        writeln!(f, "keyspace_misses:{}", s.keyspace_misses)?;
        writeln!(f, "expired_keys:{}", s.expired_keys)?;
        writeln!(f, "evicted_keys:{}", s.evicted_keys)?;
        writeln!(f, "lazyfree_pending_objects:{}", s.lazyfree_pending_objects)?;
        writeln!(f, "lazyfreed_objects:{}", s.lazyfreed_objects)?;
        writeln!(f)?;
        if !self.latency.is_empty() {
            writeln!(f, "# Latencystats")?;
            for (op, p50, p99, p999) in &self.latency {
                writeln!(
                    f,
                    "latency_percentiles_usec_{op}:p50={:.3},p99={:.3},p99.9={:.3}",
                    us(*p50),
                    us(*p99),
                    us(*p999)
                )?;
            }
            writeln!(f)?;
        }
        let k = &self.keyspace;
        writeln!(f, "# Keyspace")?;
        writeln!(
            f,
            "db0:keys={},expires={},avg_ttl={}",
            k.keys, k.expires, k.avg_ttl
        )
    }
}

/// Redis's `bytesToHuman`.
fn human(n: u64) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n < K {
        format!("{n}B")
    } else if n < K * K {
        format!("{:.2}K", n / K)
    } else if n < K * K * K {
        format!("{:.2}M", n / (K * K))
    } else {
        format!("{:.2}G", n / (K * K * K))
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// The cache's figures. Locks each shard briefly in turn.
    pub fn info(&self) -> Info {
        self.inner.info()
    }

    /// Bytes `key` accounts for (its weight plus the per-entry overhead), as Redis's
    /// `MEMORY USAGE`; `None` if absent.
    pub fn memory_usage<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let h = inner.hash(key);
        let s = read(&inner.slot(inner.shard_of(h)).shard);
        s.entries_matching(h, key)
            .map(|(k, v)| (inner.weigher.weight(k, v) + ENTRY_OVERHEAD) as u64)
    }

    /// How recently or how often `key` was used, as eviction sees it (Redis's `OBJECT
    /// IDLETIME` and `OBJECT FREQ`), without counting as an access; `None` if absent or
    /// expired.
    ///
    /// Under the LFU policies this is the key's logarithmic access counter after decay;
    /// under the others, the time since its last access. The LRU clock counts accesses,
    /// not seconds, so that time is placed between marks the cron takes about once a
    /// second and thins with age: it is a lower bound, within a second for recent
    /// accesses and within about a quarter for old ones.
    ///
    /// ```
    /// use larder::{AccessStats, Cache, Policy};
    ///
    /// let cache: Cache<u64, u64> = Cache::builder()
    ///     .max_entries(100)
    ///     .eviction(Policy::AllKeysLfu)
    ///     .build();
    /// cache.insert(1, 10);
    /// assert_eq!(cache.access_stats(&1), Some(AccessStats::Frequency(larder::LFU_INIT_VAL)));
    /// assert_eq!(cache.access_stats(&2), None);
    /// ```
    pub fn access_stats<Q>(&self, key: &Q) -> Option<AccessStats>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let h = inner.hash(key);
        let s = read(&inner.slot(inner.shard_of(h)).shard);
        match s.lookup(h, key, &*inner.clock) {
            crate::shard::Lookup::Live(idx) => {
                Some(s.access_stats(idx, inner.clock.now_ms(), inner.env().coarse_ms))
            }
            _ => None,
        }
    }

    /// The `n` heaviest keys with their memory usage, heaviest first (like
    /// `redis-cli --bigkeys`). Walks every entry: O(entries).
    pub fn big_keys(&self, n: usize) -> Vec<(K, u64)> {
        let inner = &*self.inner;
        let mut top: Vec<(K, u64)> = Vec::new();
        for slot in inner.slots.iter() {
            let s = read(&slot.shard);
            for (k, v, _, _) in s.entries() {
                let w = (inner.weigher.weight(k, v) + ENTRY_OVERHEAD) as u64;
                keep_top(&mut top, n, k, w);
            }
        }
        top.sort_by_key(|e| std::cmp::Reverse(e.1));
        top
    }

    /// The `n` most frequently used keys by their LFU counter after decay, highest first
    /// (like `redis-cli --hotkeys`). Meaningful only under an LFU policy, as in Redis;
    /// otherwise empty. Walks every entry: O(entries).
    pub fn hot_keys(&self, n: usize) -> Vec<(K, u8)> {
        let inner = &*self.inner;
        if !crate::shim::lock(&inner.live).policy.is_lfu() {
            return Vec::new();
        }
        let coarse = inner.env().coarse_ms;
        let mut top: Vec<(K, u64)> = Vec::new();
        for slot in inner.slots.iter() {
            let s = read(&slot.shard);
            for (k, _, meta, _) in s.entries() {
                keep_top(&mut top, n, k, s.lfu_of(meta, coarse) as u64);
            }
        }
        top.sort_by_key(|e| std::cmp::Reverse(e.1));
        top.into_iter().map(|(k, c)| (k, c as u8)).collect()
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    pub(crate) fn info(&self) -> Info {
        let inner = self;

        let now = inner.clock.now_ms();
        let (mut hits, mut misses, mut expired, mut evicted) = (0, 0, 0, 0);
        let (mut keys, mut expires, mut ttl_sum, mut ttl_n) = (0u64, 0u64, 0u64, 0u64);
        for slot in inner.slots.iter() {
            let s = read(&slot.shard);
            hits += s.stats.hits;
            misses += s.stats.misses;
            expired += s.stats.expired;
            evicted += s.stats.evicted;
            keys += s.len() as u64;
            expires += s.expires_len() as u64;
            let (sum, n) = s.ttl_sum(now);
            ttl_sum += sum;
            ttl_n += n;
        }
        hits += inner.read_hits.sum();
        misses += inner.read_misses.sum();
        let used = inner.used_memory();
        let live = *crate::shim::lock(&inner.live);
        Info {
            memory: MemoryInfo {
                used_memory: used,
                used_memory_peak: inner.update_peak(),
                maxmemory: live.max_memory.unwrap_or(0),
                maxmemory_policy: live.policy,
                max_entries: live.max_entries.unwrap_or(0),
                allocator: allocator(used),
            },
            stats: StatsInfo {
                keyspace_hits: hits,
                keyspace_misses: misses,
                expired_keys: expired,
                evicted_keys: evicted,
                lazyfree_pending_objects: inner.lazyfree_pending(),
                lazyfreed_objects: inner.lazyfreed_objects(),
            },
            keyspace: KeyspaceInfo {
                keys,
                expires,
                avg_ttl: ttl_sum.checked_div(ttl_n).unwrap_or(0),
            },
            shards: inner.slots.len(),
            persistence: inner.journal().and_then(|j| j.info()).map(|mut p| {
                // From the moment `bgsave()` returns, not only once its thread has
                // switched the log (Redis's `rdb_bgsave_in_progress` is set by the fork).
                p.aof_rewrite_in_progress |=
                    inner.rewriting.load(std::sync::atomic::Ordering::Acquire);
                p
            }),
            replication: None,
            cluster: None,
            latency: {
                let h = inner.latency();
                Op::ALL
                    .iter()
                    .filter_map(|&op| {
                        let g = h.get(op);
                        Some((op, g.quantile(0.5)?, g.quantile(0.99)?, g.quantile(0.999)?))
                    })
                    .collect()
            },
        }
    }
}

/// Keeps the `n` highest scores seen (n is small: a linear minimum is fine).
fn keep_top<K: Clone>(top: &mut Vec<(K, u64)>, n: usize, k: &K, score: u64) {
    if n == 0 {
        return;
    }
    if top.len() < n {
        top.push((k.clone(), score));
        return;
    }
    if let Some((i, min)) = top
        .iter()
        .enumerate()
        .min_by_key(|(_, e)| e.1)
        .map(|(i, e)| (i, e.1))
    {
        if score > min {
            top[i] = (k.clone(), score);
        }
    }
}

#[cfg(feature = "jemalloc")]
fn allocator(used: u64) -> Option<AllocatorInfo> {
    crate::alloc::allocator_info(used)
}

#[cfg(not(feature = "jemalloc"))]
fn allocator(_used: u64) -> Option<AllocatorInfo> {
    None
}
