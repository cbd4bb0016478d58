//! One interface over the caches being compared, so every program replays identical key
//! streams through larder (under each eviction policy), quick_cache and moka.

use larder::Policy;
use std::time::Duration;

/// The value type of every comparison: 16 bytes, cloned out on every hit.
pub type Value = [u8; 16];

/// The value stored for key `k` (derived from the key so a hit can be checked).
pub fn value_for(k: u64) -> Value {
    let b = k.to_le_bytes();
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&b);
    v[8..].copy_from_slice(&b);
    v
}

/// A `u64 -> Value` cache under test.
pub trait Subject: Sync {
    /// Looks `k` up, cloning the value out.
    fn get(&self, k: u64) -> Option<Value>;
    /// Inserts or replaces `k`, evicting as the cache's policy decides.
    fn insert(&self, k: u64, v: Value);
    /// Current entry count (after [`Subject::settle`] for caches with deferred work).
    fn entries(&self) -> u64;
    /// Applies deferred maintenance (moka's pending evictions); a no-op elsewhere.
    fn settle(&self) {}

    /// The access pattern of a read-through cache: get, and insert on a miss. Returns
    /// whether it hit.
    #[inline]
    fn access(&self, k: u64) -> bool {
        if self.get(k).is_some() {
            true
        } else {
            self.insert(k, value_for(k));
            false
        }
    }
}

/// TTL given to every key under the volatile policies, long enough never to expire
/// during a run: volatile policies only evict keys that have a TTL.
pub const VOLATILE_TTL: Duration = Duration::from_secs(24 * 3600);

/// larder under a policy; keys get [`VOLATILE_TTL`] when the policy is a volatile one.
pub struct Larder {
    cache: larder::Cache<u64, Value>,
    with_ttl: bool,
}

impl Larder {
    /// Wraps a cache built elsewhere (keys get no TTL).
    pub fn new(cache: larder::Cache<u64, Value>) -> Self {
        Larder {
            cache,
            with_ttl: false,
        }
    }
}

impl Subject for Larder {
    #[inline]
    fn get(&self, k: u64) -> Option<Value> {
        self.cache.get(&k)
    }
    #[inline]
    fn insert(&self, k: u64, v: Value) {
        // Under noeviction a full cache refuses the write; that is the policy working.
        let _ = if self.with_ttl {
            self.cache.insert_with_ttl(k, v, VOLATILE_TTL)
        } else {
            self.cache.insert(k, v)
        };
    }
    fn entries(&self) -> u64 {
        self.cache.len() as u64
    }
}

impl Subject for quick_cache::sync::Cache<u64, Value> {
    #[inline]
    fn get(&self, k: u64) -> Option<Value> {
        quick_cache::sync::Cache::get(self, &k)
    }
    #[inline]
    fn insert(&self, k: u64, v: Value) {
        quick_cache::sync::Cache::insert(self, k, v);
    }
    fn entries(&self) -> u64 {
        self.len() as u64
    }
}

impl Subject for moka::sync::Cache<u64, Value> {
    #[inline]
    fn get(&self, k: u64) -> Option<Value> {
        moka::sync::Cache::get(self, &k)
    }
    #[inline]
    fn insert(&self, k: u64, v: Value) {
        moka::sync::Cache::insert(self, k, v);
    }
    fn entries(&self) -> u64 {
        self.entry_count()
    }
    fn settle(&self) {
        self.run_pending_tasks();
    }
}

/// Something to do with a freshly built cache, generic over its concrete type so the
/// hot loop is monomorphised (no dynamic dispatch in timings).
pub trait WithSubject {
    /// What the visit returns.
    type Output;
    /// Runs against `subject`.
    fn visit<S: Subject>(self, subject: &S) -> Self::Output;
}

/// Replays a stream on one thread and returns the hit count: what the hit-ratio
/// comparisons (`compare hit-ratio`, `suite`) run against every cache. Lets the cache
/// catch up on deferred work every 10,000 accesses, as a busy application would.
pub struct Replay<'a> {
    /// The keys, in order.
    pub stream: &'a [u64],
}

impl WithSubject for Replay<'_> {
    type Output = u64;
    fn visit<S: Subject>(self, cache: &S) -> u64 {
        let mut hits = 0u64;
        for (i, &k) in self.stream.iter().enumerate() {
            hits += u64::from(cache.access(k));
            if i % 10_000 == 0 {
                cache.settle();
            }
        }
        hits
    }
}

/// A cache configuration under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// larder with the given `maxmemory-policy`.
    Larder(Policy),
    /// larder as the builder configures it when no policy is chosen.
    LarderDefault,
    /// `quick_cache::sync::Cache::new(capacity)`.
    QuickCache,
    /// `moka::sync::Cache::new(capacity)`.
    Moka,
}

impl Contender {
    /// A short display name, e.g. `larder allkeys-lru`.
    pub fn name(self) -> String {
        match self {
            Contender::Larder(p) => format!("larder {}", p.as_str()),
            Contender::LarderDefault => "larder default".to_string(),
            Contender::QuickCache => "quick_cache".to_string(),
            Contender::Moka => "moka".to_string(),
        }
    }

    /// Builds this cache bounded to `capacity` entries and hands it to `job`. larder gets
    /// its defaults (5 `maxmemory-samples`, default shard count).
    pub fn run<J: WithSubject>(self, capacity: u64, job: J) -> J::Output {
        self.run_with_samples(capacity, 5, job)
    }

    /// As [`Contender::run`], with larder's `maxmemory-samples` set to `samples` (peers
    /// have no such knob), to see what eviction sampling costs.
    pub fn run_with_samples<J: WithSubject>(
        self,
        capacity: u64,
        samples: usize,
        job: J,
    ) -> J::Output {
        match self {
            Contender::Larder(policy) => {
                let cache = larder::Cache::builder()
                    .max_entries(capacity)
                    .eviction(policy)
                    .maxmemory_samples(samples)
                    .hasher_seed(42)
                    .build();
                let with_ttl = policy.as_str().starts_with("volatile");
                job.visit(&Larder { cache, with_ttl })
            }
            Contender::LarderDefault => {
                let cache = larder::Cache::builder()
                    .max_entries(capacity)
                    .maxmemory_samples(samples)
                    .hasher_seed(42)
                    .build();
                job.visit(&Larder {
                    cache,
                    with_ttl: false,
                })
            }
            Contender::QuickCache => job.visit(&quick_cache::sync::Cache::<u64, Value>::new(
                capacity as usize,
            )),
            Contender::Moka => job.visit(&moka::sync::Cache::<u64, Value>::new(capacity)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct CountHits<'a>(&'a [u64]);
    impl WithSubject for CountHits<'_> {
        type Output = (u64, u64);
        fn visit<S: Subject>(self, s: &S) -> (u64, u64) {
            let hits = self.0.iter().filter(|&&k| s.access(k)).count() as u64;
            s.settle();
            (hits, s.entries())
        }
    }

    #[test]
    fn every_contender_hits_on_a_repeat_and_respects_its_bound() {
        let keys: Vec<u64> = (0..50).chain(0..50).collect();
        for c in [
            Contender::Larder(Policy::AllKeysLru),
            Contender::Larder(Policy::VolatileLru),
            Contender::QuickCache,
            Contender::Moka,
        ] {
            let (hits, len) = c.run(1_000, CountHits(&keys));
            assert_eq!(hits, 50, "{}", c.name());
            assert_eq!(len, 50, "{}", c.name());
        }
        let many: Vec<u64> = (0..5_000).collect();
        let (_, len) = Contender::Larder(Policy::AllKeysLru).run(1_000, CountHits(&many));
        assert!(len <= 1_000, "{len}");
    }

    #[test]
    fn value_round_trips_the_key() {
        let v = value_for(0x0102_0304_0506_0708);
        assert_eq!(
            u64::from_le_bytes(v[..8].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
    }
}
