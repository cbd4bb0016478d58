//! Errors of cache operations.

use crate::Policy;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The write needs memory, and the policy may not evict anything that would free it:
    /// `noeviction`, or a `volatile-*` policy with no key with a TTL left. Nothing was
    /// written.
    #[error("OOM command not allowed when used memory > 'maxmemory' (shard uses {used} of {budget} bytes, policy {policy})")]
    OutOfMemory {
        /// Bytes the shard would use after the write.
        used: u64,
        /// The shard's share of `max_memory`.
        budget: u64,
        /// The eviction policy in force.
        policy: Policy,
    },
    /// The append-only file could not be written or synced. The write that returns this
    /// may be visible in memory but is not durable; later writes are refused with this
    /// error until the log can be written again (Redis's `MISCONF`).
    #[error("MISCONF writes refused: the append-only file cannot be written: {0}")]
    Persistence(String),
    /// A rewrite (`rewrite_aof`, `save`, `bgsave`) could not run or failed; the files in
    /// force are complete and loadable.
    #[error("AOF rewrite failed: {0}")]
    Rewrite(String),
    /// The operation needs a durable cache (one opened with `durability`).
    #[error("this cache has no persistence configured")]
    NotDurable,
    /// A cluster node refused the write: it is a replica (`READONLY`), cannot reach a
    /// majority or serves no slots (`CLUSTERDOWN`), lacks good replicas
    /// (`NOREPLICAS`), or pauses writes for a failover (`TRYAGAIN`). Nothing was
    /// written.
    #[error("{0}")]
    Cluster(String),
    /// A memory bound was set on a running cache whose weigher counts inline sizes
    /// only (one built without `max_memory` or `lazy_free`).
    #[error("ERR maxmemory needs memory weights: build the cache with max_memory(..) or lazy_free(..) to change the bound at runtime")]
    NotMemoryWeighed,
    /// One entry weighs more than a shard's share of `max_memory`; it can never fit.
    #[error("entry of {weight} bytes exceeds the shard's share of maxmemory ({budget} bytes)")]
    EntryTooLarge {
        /// The entry's weight including the per-entry overhead.
        weight: u64,
        /// The shard's share of `max_memory`.
        budget: u64,
    },
}

/// Why a transaction did not commit. Nothing it wrote was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError<E> {
    /// The closure returned an error and the transaction was rolled back.
    #[error("transaction aborted: {0}")]
    Aborted(E),
    /// The closure touched a key it did not declare when the transaction began.
    #[error("transaction touched a key it did not declare")]
    UndeclaredKey,
    /// Applying a write was refused (memory); none of the writes were applied.
    #[error(transparent)]
    Write(#[from] Error),
}
