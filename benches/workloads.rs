//! The generated workload suite every eviction design is measured on: seeded key streams
//! shaped like the traces caches meet in practice, each paired with two cache sizes.
//! Nothing is downloaded; the same seed gives the same stream on every machine.
//!
//! | workload | shape |
//! |---|---|
//! | Zipf 0.6 / 0.9 / 1.2 | stationary skew over 1M keys |
//! | Zipf 0.99 + scans | Zipf interrupted by bursts of keys that never recur |
//! | loop | a cyclic walk over more keys than the cache holds |
//! | shifting hot set | Zipf 0.9 over 200k keys whose popular keys are replaced four times per run |
//! | recency | most requests re-use a key seen a short while ago (buffer-pool-like) |
//! | one-hit wonders | half the requests are keys seen once (CDN-like) |
//! | two tenants | a small skewed keyspace and a large flat one, interleaved |

use crate::rng::{mix64, Xoshiro256};
use crate::zipf::{key_of_rank, scan_polluted_stream, zipf_stream, Zipf};

/// One workload: a name, its stream and the cache sizes (in entries) it is run at.
pub struct Workload {
    /// Short name for tables, e.g. `"Zipf 0.9"`.
    pub name: &'static str,
    /// The key stream.
    pub stream: Vec<u64>,
    /// Cache capacities to replay it at.
    pub sizes: [u64; 2],
}

/// A cyclic walk over `keys` distinct keys, `len` requests long: with a cache smaller
/// than the loop, LRU and FIFO hit nothing.
pub fn loop_stream(keys: u64, len: usize) -> Vec<u64> {
    (0..len as u64).map(|i| mix64(i % keys) >> 1).collect()
}

/// Zipf(`theta`) over `n` keys whose rank-to-key mapping changes every `period`
/// requests: each phase has a fresh set of popular keys, unrelated to the last one.
pub fn shifting_stream(n: usize, theta: f64, period: usize, len: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(n, theta);
    let mut rng = Xoshiro256::seed_from_u64(seed);
    (0..len)
        .map(|i| {
            let phase = (i / period) as u64;
            let rank = zipf.sample(&mut rng) as u64;
            mix64(rank + phase * n as u64 + (1 << 40)) >> 1
        })
        .collect()
}

/// A recency-heavy stream, like a database buffer pool: with probability `reuse` a
/// request repeats the key issued `d` requests ago, `d` log-uniform in `1..=max_distance`;
/// otherwise it is a Zipf(`theta`) draw over `n` keys.
pub fn recency_stream(
    n: usize,
    theta: f64,
    reuse: f64,
    max_distance: usize,
    len: usize,
    seed: u64,
) -> Vec<u64> {
    let zipf = Zipf::new(n, theta);
    let mut rng = Xoshiro256::seed_from_u64(seed);
    let mut out: Vec<u64> = Vec::with_capacity(len);
    let ln_max = (max_distance as f64).ln();
    while out.len() < len {
        let k = if !out.is_empty() && rng.next_f64() < reuse {
            let d = ((rng.next_f64() * ln_max).exp() as usize).clamp(1, out.len());
            out[out.len() - d]
        } else {
            key_of_rank(zipf.sample(&mut rng) + (1 << 41))
        };
        out.push(k);
    }
    out
}

/// A CDN-like stream: with probability `once` a key never requested before or after,
/// otherwise a Zipf(`theta`) draw over `n` keys.
pub fn one_hit_stream(n: usize, theta: f64, once: f64, len: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(n, theta);
    let mut rng = Xoshiro256::seed_from_u64(seed);
    let mut fresh = 1u64 << 63;
    (0..len)
        .map(|_| {
            if rng.next_f64() < once {
                fresh += 1;
                fresh
            } else {
                key_of_rank(zipf.sample(&mut rng))
            }
        })
        .collect()
}

/// Two tenants sharing the cache, each request from A with probability `share_a`:
/// A is Zipf(`theta_a`) over `n_a` keys, B Zipf(`theta_b`) over `n_b` disjoint keys.
pub fn two_tenant_stream(
    (n_a, theta_a): (usize, f64),
    (n_b, theta_b): (usize, f64),
    share_a: f64,
    len: usize,
    seed: u64,
) -> Vec<u64> {
    let (za, zb) = (Zipf::new(n_a, theta_a), Zipf::new(n_b, theta_b));
    let mut rng = Xoshiro256::seed_from_u64(seed);
    (0..len)
        .map(|_| {
            if rng.next_f64() < share_a {
                key_of_rank(za.sample(&mut rng) + (1 << 42))
            } else {
                key_of_rank(zb.sample(&mut rng) + (1 << 43))
            }
        })
        .collect()
}

/// The whole suite, `len` requests per workload.
pub fn suite(len: usize) -> Vec<Workload> {
    const N: usize = 1_000_000;
    vec![
        Workload {
            name: "Zipf 0.6",
            stream: zipf_stream(N, 0.6, len, 11),
            sizes: [10_000, 100_000],
        },
        Workload {
            name: "Zipf 0.9",
            stream: zipf_stream(N, 0.9, len, 12),
            sizes: [10_000, 100_000],
        },
        Workload {
            name: "Zipf 1.2",
            stream: zipf_stream(N, 1.2, len, 13),
            sizes: [1_000, 10_000],
        },
        Workload {
            name: "Zipf 0.99 + scans",
            stream: scan_polluted_stream(N, 0.99, len, 40_000, 20_000, 14),
            sizes: [10_000, 50_000],
        },
        Workload {
            name: "loop 60k",
            stream: loop_stream(60_000, len),
            sizes: [20_000, 50_000],
        },
        Workload {
            name: "shifting hot set",
            stream: shifting_stream(200_000, 0.9, len / 4, len, 15),
            sizes: [10_000, 50_000],
        },
        Workload {
            name: "recency",
            stream: recency_stream(N, 0.6, 0.7, 20_000, len, 16),
            sizes: [5_000, 20_000],
        },
        Workload {
            name: "one-hit wonders",
            stream: one_hit_stream(200_000, 0.9, 0.5, len, 17),
            sizes: [10_000, 50_000],
        },
        Workload {
            name: "two tenants",
            stream: two_tenant_stream((50_000, 1.1), (N, 0.6), 0.5, len, 18),
            sizes: [10_000, 50_000],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn loop_cycles_over_distinct_keys() {
        let s = loop_stream(10, 35);
        assert_eq!(s.iter().collect::<HashSet<_>>().len(), 10);
        assert_eq!(s[0], s[10]);
        assert_ne!(s[0], s[1]);
    }

    #[test]
    fn shifting_phases_share_no_keys() {
        let s = shifting_stream(1000, 0.9, 5_000, 10_000, 1);
        let a: HashSet<u64> = s[..5_000].iter().copied().collect();
        let b: HashSet<u64> = s[5_000..].iter().copied().collect();
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn recency_reuses_recent_keys() {
        let s = recency_stream(1_000_000, 0.6, 0.7, 100, 20_000, 2);
        let repeats = (1..s.len())
            .filter(|&i| s[i.saturating_sub(100)..i].contains(&s[i]))
            .count();
        assert!(repeats > 12_000, "{repeats}");
    }

    #[test]
    fn one_hit_keys_never_recur() {
        let s = one_hit_stream(1000, 0.9, 0.5, 10_000, 3);
        let once: Vec<u64> = s.iter().copied().filter(|k| k >> 63 == 1).collect();
        assert!((4_500..5_500).contains(&once.len()), "{}", once.len());
        assert_eq!(once.iter().collect::<HashSet<_>>().len(), once.len());
    }

    #[test]
    fn suite_is_reproducible_and_sized() {
        let a = suite(2_000);
        let b = suite(2_000);
        assert_eq!(a.len(), 9);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.stream, y.stream, "{}", x.name);
            assert_eq!(x.stream.len(), 2_000);
        }
    }
}
