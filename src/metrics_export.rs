//! Exports `info()`'s figures through the `metrics` crate (cargo feature `metrics`).

use crate::info::Info;

/// Publishes `info` as gauges named like Redis's INFO fields, prefixed `larder_` and
/// labelled with the cache's `name`.
pub(crate) fn publish(name: &str, info: &Info) {
    let label = [("cache", name.to_string())];
    let gauges: [(&str, f64); 12] = [
        ("larder_used_memory", info.memory.used_memory as f64),
        (
            "larder_used_memory_peak",
            info.memory.used_memory_peak as f64,
        ),
        ("larder_maxmemory", info.memory.maxmemory as f64),
        ("larder_keyspace_hits", info.stats.keyspace_hits as f64),
        ("larder_keyspace_misses", info.stats.keyspace_misses as f64),
        ("larder_expired_keys", info.stats.expired_keys as f64),
        ("larder_evicted_keys", info.stats.evicted_keys as f64),
        (
            "larder_lazyfree_pending_objects",
            info.stats.lazyfree_pending_objects as f64,
        ),
        (
            "larder_lazyfreed_objects",
            info.stats.lazyfreed_objects as f64,
        ),
        ("larder_keys", info.keyspace.keys as f64),
        ("larder_expires", info.keyspace.expires as f64),
        ("larder_avg_ttl_ms", info.keyspace.avg_ttl as f64),
    ];
    for (metric, value) in gauges {
        metrics::gauge!(metric, &label).set(value);
    }
}
