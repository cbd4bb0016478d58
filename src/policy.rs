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
