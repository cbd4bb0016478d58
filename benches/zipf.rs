//! Zipf-distributed key streams: rank `r` (1-based) over `n` keys is drawn with
//! probability proportional to `1 / r^theta`.
//!
//! The sampler precomputes the CDF (8 bytes per key, 8 MB for a million keys) and draws
//! by binary search: exact for any `theta`, including `theta >= 1` where the common
//! closed-form approximations break down. Ranks are scrambled into keys with a bijection
//! so the hottest keys are not the small integers.

use crate::rng::{mix64, Xoshiro256};

/// A Zipf(theta) distribution over `n` ranks.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over ranks `0..n` (rank 0 the most popular) with exponent `theta`.
    ///
    /// # Panics
    /// If `n` is zero or `theta` is negative or not finite.
    pub fn new(n: usize, theta: f64) -> Self {
        assert!(n > 0, "Zipf over zero keys");
        assert!(
            theta.is_finite() && theta >= 0.0,
            "bad Zipf exponent {theta}"
        );
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for r in 1..=n {
            acc += (r as f64).powf(-theta);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// Probability of rank `r` (0-based).
    pub fn probability(&self, r: usize) -> f64 {
        if r == 0 {
            self.cdf[0]
        } else {
            self.cdf[r] - self.cdf[r - 1]
        }
    }

    /// Draws a rank in `0..n`.
    pub fn sample(&self, rng: &mut Xoshiro256) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The key for Zipf rank `rank`: a bijective scramble, so distinct ranks give distinct
/// keys, none with the top bit set (that half is reserved for scan keys).
pub fn key_of_rank(rank: usize) -> u64 {
    mix64(rank as u64) >> 1
}

/// `len` keys drawn from Zipf(`theta`) over `n` keys, reproducibly from `seed`.
pub fn zipf_stream(n: usize, theta: f64, len: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(n, theta);
    let mut rng = Xoshiro256::seed_from_u64(seed);
    (0..len)
        .map(|_| key_of_rank(zipf.sample(&mut rng)))
        .collect()
}

/// A Zipf(`theta`) stream polluted by one-shot scans: after every `run` Zipf draws comes a
/// burst of `burst` keys that never occur anywhere else in the stream (top bit set, so
/// they cannot collide with Zipf keys). Models a batch job or a crawler walking the
/// keyspace through the same cache. Total length is `len`.
pub fn scan_polluted_stream(
    n: usize,
    theta: f64,
    len: usize,
    run: usize,
    burst: usize,
    seed: u64,
) -> Vec<u64> {
    let zipf = Zipf::new(n, theta);
    let mut rng = Xoshiro256::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    let mut next_scan_key = 1u64 << 63;
    while out.len() < len {
        for _ in 0..run.min(len - out.len()) {
            out.push(key_of_rank(zipf.sample(&mut rng)));
        }
        for _ in 0..burst.min(len - out.len()) {
            out.push(next_scan_key);
            next_scan_key += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_decrease() {
        let z = Zipf::new(1000, 0.99);
        let total: f64 = (0..1000).map(|r| z.probability(r)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        for r in 1..1000 {
            assert!(z.probability(r) <= z.probability(r - 1));
        }
        // Rank 1 vs rank 2 is 2^theta.
        let ratio = z.probability(0) / z.probability(1);
        assert!((ratio - 2f64.powf(0.99)).abs() < 1e-9);
    }

    #[test]
    fn empirical_frequency_of_top_rank_matches() {
        let z = Zipf::new(1000, 1.2);
        let mut rng = Xoshiro256::seed_from_u64(3);
        let n = 200_000;
        let top = (0..n).filter(|_| z.sample(&mut rng) == 0).count();
        let expected = z.probability(0) * n as f64;
        assert!(
            (top as f64 - expected).abs() < 0.05 * expected,
            "{top} vs {expected}"
        );
    }

    #[test]
    fn theta_zero_is_uniform_and_samples_stay_in_range() {
        let z = Zipf::new(10, 0.0);
        let mut rng = Xoshiro256::seed_from_u64(5);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn streams_are_reproducible() {
        assert_eq!(zipf_stream(100, 0.99, 50, 9), zipf_stream(100, 0.99, 50, 9));
        assert_ne!(
            zipf_stream(100, 0.99, 50, 9),
            zipf_stream(100, 0.99, 50, 10)
        );
    }

    #[test]
    fn scan_keys_are_never_repeated_and_disjoint_from_zipf_keys() {
        let s = scan_polluted_stream(100, 0.99, 1_000, 30, 20, 1);
        assert_eq!(s.len(), 1_000);
        let scans: Vec<u64> = s.iter().copied().filter(|k| k >> 63 == 1).collect();
        assert_eq!(scans.len(), 400);
        let uniq: std::collections::HashSet<u64> = scans.iter().copied().collect();
        assert_eq!(uniq.len(), scans.len());
        assert_eq!(
            &s[30..50],
            &((1u64 << 63)..(1u64 << 63) + 20).collect::<Vec<_>>()[..]
        );
    }
}
