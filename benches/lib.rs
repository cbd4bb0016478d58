//! Shared helpers for larder's benches: seeded key streams, the offline optimum, RSS
//! readings and one interface over larder, quick_cache and moka so every program replays
//! the same keys through every cache.
//!
//! Everything here is deterministic given a seed: two runs of a bench see the same keys.

pub mod belady;
pub mod contenders;
pub mod redis_cluster;
pub mod resp;
pub mod rng;
pub mod rss;
pub mod run_env;
pub mod svg;
pub mod workloads;
pub mod zipf;

pub use belady::belady_hits;
pub use contenders::{Contender, Subject, Value};
pub use rng::Xoshiro256;
pub use rss::{resident_bytes, thread_cpu_time};
pub use zipf::{scan_polluted_stream, zipf_stream, Zipf};
