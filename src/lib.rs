//! # larder — Redis inside your process
//!
//! A typed, sharded, in-process cache with Redis's memory model: `maxmemory` with the
//! eight eviction policies (sampled LRU and LFU with an eviction pool, logarithmic LFU
//! counters with decay), TTLs with lazy and active expiry, lazy-free deletion, SCAN,
//! pipelines, transactions and keyspace events.
//!
//! ```
//! use larder::{Cache, Policy, Ttl};
//! use std::time::Duration;
//!
//! let cache: Cache<String, String> = Cache::builder()
//!     .max_memory(16 << 20)
//!     .eviction(Policy::AllKeysLfu)
//!     .build();
//! cache.insert("greeting".into(), "hello".into()).unwrap();
//! cache
//!     .insert_with_ttl("session:1".into(), "alice".into(), Duration::from_secs(30))
//!     .unwrap();
//! assert_eq!(cache.get("greeting").as_deref(), Some("hello"));
//! assert!(matches!(cache.ttl("session:1"), Ttl::Remaining(ms) if ms <= 30_000));
//! ```
//!
//! ## Cargo features
//!
//! | feature | what it adds |
//! |---|---|
//! | `jemalloc` | jemalloc statistics in `info()` (allocated, active, resident, fragmentation ratios), `memory_purge()`, and [`Jemalloc`] to install as the global allocator |
//! | `persistence` | durability: `Cache::builder().durability(..).open()`, an append-only file with `always`/`everysec`/`no` fsync, snapshots, rewrites, crash-safe recovery |
//! | `metrics` | `info()`'s figures exported as `metrics` gauges every cron cycle |
//! | `resp` | [`resp::RespServer`]: a RESP2/RESP3 (Redis protocol) server over a `Cache` or `ClusterCache` on tokio |
//! | `resp-tls` | `RespServer::serve_tls`: the RESP server over TLS (rustls with ring, through tokio-rustls; implies `resp`) |
//! | `cluster` | [`cluster::ClusterCache`]: one node of a mesh, keys routed by Redis Cluster's 16384 slots over QUIC with mutual TLS, replication, failover, resharding (implies `persistence`; brings tokio) |
//!
//! Without features larder depends on no async runtime; the async loaders
//! ([`Cache::get_with_async`]) run on any executor.
//!
//! ## Loading, expiry and removal, as a moka user expects
//!
//! - [`Cache::get_with`] and [`Cache::try_get_with`] (and their async versions) load a
//!   missing key once however many callers miss it at the same time.
//! - [`CacheBuilder::time_to_live`] gives plain inserts a default TTL;
//!   [`CacheBuilder::time_to_idle`] expires keys nobody read or wrote for a while.
//! - [`Cache::invalidate_if`] and [`Cache::retain`] remove by predicate.
//! - Values need [`Weigh`] only when memory is bounded; [`CacheBuilder::weigher`] takes a
//!   closure and keeps the cache's type nameable (`Cache<K, V, FnWeigher<K, V>>`).
//!
//! ## Memory per entry
//!
//! An entry costs `size_of::<K>() + size_of::<V>() + 8` bytes in the shard's slab (4 bytes
//! of LRU/LFU metadata, 4 of hash-chain link; rounded up to the alignment of `K` and `V`),
//! plus 4 to 8 bytes of bucket array, plus whatever `K` and `V` own on the heap. A key with
//! a TTL costs about 24 bytes more, in the side table. `used_memory` counts the weight
//! (the [`Weigh`] sizes, or your [`Weigher`]) plus [`ENTRY_OVERHEAD`].
//!
//! ## Using larder in a loom model
//!
//! Built with `RUSTFLAGS="--cfg loom"`, larder takes every lock, condition variable,
//! atomic and thread from loom, and by default starts no thread at all
//! ([`Background::Manual`]): call [`Cache::run_pending_tasks`] where your model wants the
//! background work (active expiry, lazy free) to happen. See README.md.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "jemalloc")]
mod alloc;
mod batch;
mod builder;
mod cache;
mod clock;
#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
#[cfg(feature = "persistence")]
mod codec_fast;
mod config;
mod counter;
mod cron;
#[cfg(feature = "persistence")]
mod durable;
mod error;
mod events;
mod evict;
mod expires;
mod garbage;
mod info;
mod journal;
mod latency;
mod lazyfree;
mod loader;
mod meta;
#[cfg(feature = "metrics")]
mod metrics_export;
mod pattern;
mod policy;
mod read;
#[cfg(feature = "resp")]
#[cfg_attr(docsrs, doc(cfg(feature = "resp")))]
pub mod resp;
mod retain;
mod rewrite;
mod shard;
mod shim;
mod sketch;
mod table;
mod timeline;
mod txn;
mod weigh;
mod write;

#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use alloc::Jemalloc;
pub use batch::{Batch, BatchResult};
pub use builder::{CacheBuilder, DEFAULT_ADMISSION, DEFAULT_POLICY};
pub use cache::{Background, Cache};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::LiveConfig;
#[cfg(feature = "persistence")]
#[cfg_attr(docsrs, doc(cfg(feature = "persistence")))]
pub use durable::{
    verify, Codec, CodecError, Durability, DurableBuilder, Fsync, OpenError, Verified, VerifyError,
};
pub use error::{Error, TxError};
pub use events::{Event, EventKind, Subscriber};
pub use info::{
    AccessStats, AllocatorInfo, ClusterInfo, Info, KeyspaceInfo, MemoryInfo, PersistenceInfo,
    ReplicaLine, ReplicationInfo, StatsInfo,
};
/// The storage engine under a durable cache: file formats, backends (including the
/// crash-image and fault-injecting ones tests use), and recovery.
#[cfg(feature = "persistence")]
#[cfg_attr(docsrs, doc(cfg(feature = "persistence")))]
pub use larder_persistence as persistence;
pub use latency::{Histogram, Op, SlowlogEntry, BUCKETS};
pub use lazyfree::LazyFree;
pub use loader::LoadError;
pub use meta::LFU_INIT_VAL;
pub use pattern::glob_match;
pub use policy::{Admission, LfuDecay, ParsePolicyError, Policy};
pub use read::ScanPage;
pub use shard::Ttl;
pub use txn::Transaction;
pub use weigh::{DefaultWeigher, FnWeigher, MemoryWeigher, Weigh, Weigher, ENTRY_OVERHEAD};

/// README.md's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
