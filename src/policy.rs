//! The eight `maxmemory-policy` values, named as Redis names them.

use std::fmt;
use std::str::FromStr;

/// What to evict when an insert would pass `max_memory` (Redis's `maxmemory-policy`).
///
/// | policy | candidates | chooses |
/// |---|---|---|
/// | `noeviction` | none | inserts that need memory fail with [`Error::OutOfMemory`](crate::Error::OutOfMemory) |
/// | `allkeys-lru` | every key | least recently used |
/// | `allkeys-lfu` | every key | least frequently used |
/// | `allkeys-random` | every key | any |
/// | `volatile-lru` | keys with a TTL | least recently used |
/// | `volatile-lfu` | keys with a TTL | least frequently used |
/// | `volatile-random` | keys with a TTL | any |
/// | `volatile-ttl` | keys with a TTL | nearest expiry |
///
/// The `volatile-*` policies never evict a key without a TTL and fail like `noeviction`
/// when no key with a TTL is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Never evict; refuse inserts that need memory.
    NoEviction,
    /// Evict the least recently used key.
    #[default]
    AllKeysLru,
    /// Evict the least frequently used key.
    AllKeysLfu,
    /// Evict a random key.
    AllKeysRandom,
    /// Evict the least recently used key among keys with a TTL.
    VolatileLru,
    /// Evict the least frequently used key among keys with a TTL.
    VolatileLfu,
    /// Evict a random key among keys with a TTL.
    VolatileRandom,
    /// Evict the key with the nearest expiry.
    VolatileTtl,
}

impl Policy {
    /// Every policy, in Redis's documentation order.
    pub const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    /// The Redis name, e.g. `"allkeys-lru"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllKeysLru => "allkeys-lru",
            Policy::AllKeysLfu => "allkeys-lfu",
            Policy::AllKeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    /// Whether entries carry an LFU counter instead of an LRU tick.
    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllKeysLfu | Policy::VolatileLfu)
    }

    /// Whether only keys with a TTL may be evicted.
    pub fn is_volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is not one of Redis's eight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown maxmemory-policy {0:?}: expected one of noeviction, allkeys-lru, allkeys-lfu, allkeys-random, volatile-lru, volatile-lfu, volatile-random, volatile-ttl")]
pub struct ParsePolicyError(pub String);

impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| ParsePolicyError(s.to_string()))
    }
}

/// How LFU counters decay: Redis's wall-clock minutes, or larder's logical time.
///
/// Redis lowers a key's counter by one for every `lfu-decay-time` minutes since its last
/// access. At in-process rates a minute is millions of operations, so counters of keys
/// that were hot in an earlier phase stay saturated and hold the cache until minutes
/// pass. [`LfuDecay::Turnovers`] decays in writes instead, relative to the shard's bound,
/// so a phase change is forgotten after a set number of turnovers of the cache however
/// fast the operations come. It is not the default: on stationary workloads any decay
/// that acts within a run lowers allkeys-lfu's hit ratio (by 1-4 points on the suite's
/// Zipf streams at small sizes, see BENCHMARKS.md), and the default cache ages
/// popularity through its admission sketch instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LfuDecay {
    /// Redis's rule: one step down per this many minutes since the key's last access;
    /// 0 disables decay. The default is `Minutes(1)`, as Redis; also what
    /// [`CacheBuilder::lfu_decay_time`](crate::CacheBuilder::lfu_decay_time) selects.
    Minutes(u32),
    /// One step down per `n` turnovers of the shard (`n` times its bound in writes; its
    /// entry count when bounded by memory only); 0 disables decay.
    Turnovers(u32),
}

impl Default for LfuDecay {
    fn default() -> Self {
        LfuDecay::Minutes(1)
    }
}

/// Whether a key that is not in the cache may push out one that is, decided from a
/// compact record of how often keys (resident or not) were asked for.
///
/// Applies to the `allkeys-*` policies; the `volatile-*` ones and `noeviction` always
/// behave as Redis documents. With admission on, each shard keeps a count-min sketch of
/// 4-bit counters (16 counters, 8 bytes, per entry of the shard's bound), halved every
/// twenty bounds' worth of accesses so that it forgets old popularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Admission {
    /// Every new key enters and the policy's victim leaves (Redis's behaviour).
    #[default]
    None,
    /// TinyLFU: a new key that would evict enters only if the sketch estimates it more
    /// frequent than the policy's victim; otherwise the write is dropped at once and
    /// reported as an eviction of the new key. A transaction's writes (and the restores
    /// of a failed one) are not contested: they enter, evicting the policy's victim.
    TinyLfu,
    /// W-TinyLFU: every new key enters a window (first in first out; 10 % of the bound
    /// at first, then sized by hill climbing on the shard's hit ratio, 1-80 %); the key leaving the window competes with the policy's victim among the rest
    /// and the one the sketch estimates less frequent is evicted. A key just written is
    /// always present.
    WindowTinyLfu,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(
            " AllKeys-LFU ".parse::<Policy>().unwrap(),
            Policy::AllKeysLfu
        );
        let err = "lru".parse::<Policy>().unwrap_err();
        assert!(err.to_string().contains("\"lru\""));
    }
}
