//! The 32 bits of metadata every entry carries, like the `lru` field of a Redis object.
//!
//! ```text
//!  31     27 26 25 24 23            8 7        0
//! +---------+--+--+--+---------------+----------+
//! | tag     | P| W| T| LRU: 24-bit access tick  |   LRU and non-LFU policies
//! +---------+--+--+--+---------------+----------+
//! | tag     | P| W| T| LFU: period   | counter  |   LFU policies
//! +---------+--+--+--+---------------+----------+
//!  tag = bits 27-31 of the key's hash, set by the table: a chain walk compares keys
//!        only where the tags agree, so it reads 1 in 32 of the other keys
//!  T = the key has an expiry in the shard's side table
//!  W (bit 25) = the key is in the admission window (W-TinyLFU)
//!  P (bit 26) = the key was hit after it left the window (W-TinyLFU's protected part)
//!  period = Redis's minutes, or the shard's logical decay period (see `LfuDecay`)
//! ```
//!
//! The LRU field is a per-shard *logical* tick (one per access) rather than Redis's
//! one-second wall clock: at millions of operations a second a one-second clock makes every
//! key look equally old and LRU degrades to random eviction. See docs/design.md.

/// The tag: bits 27-31 of the entry's key's hash (`Table` sets and reads it; nothing
/// else may change it).
pub(crate) const TAG_MASK: u32 = 0xF800_0000;

/// Mask of the 24-bit LRU/LFU field.
pub(crate) const CLOCK_MASK: u32 = 0x00FF_FFFF;
/// Set when the entry has a TTL in the side table.
pub(crate) const HAS_TTL: u32 = 1 << 24;
/// Set while the entry is in the admission window.
pub(crate) const IN_WINDOW: u32 = 1 << 25;
/// Set once the entry was hit after it left the admission window.
pub(crate) const PROTECTED: u32 = 1 << 26;
/// The LFU counter a new key starts with (Redis's `LFU_INIT_VAL`).
pub const LFU_INIT_VAL: u8 = 5;

/// Packed entry metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Meta(pub(crate) u32);

impl Meta {
    /// The tag bits (in place).
    #[inline]
    pub(crate) fn tag(self) -> u32 {
        self.0 & TAG_MASK
    }

    /// Sets the tag bits from a hash's low 32 bits.
    #[inline]
    pub(crate) fn set_tag(&mut self, hash: u32) {
        self.0 = (self.0 & !TAG_MASK) | (hash & TAG_MASK);
    }

    #[inline]
    pub(crate) fn has_ttl(self) -> bool {
        self.0 & HAS_TTL != 0
    }

    pub(crate) fn set_ttl_flag(&mut self, on: bool) {
        if on {
            self.0 |= HAS_TTL;
        } else {
            self.0 &= !HAS_TTL;
        }
    }

    #[inline]
    pub(crate) fn in_window(self) -> bool {
        self.0 & IN_WINDOW != 0
    }

    pub(crate) fn set_window(&mut self, on: bool) {
        if on {
            self.0 |= IN_WINDOW;
        } else {
            self.0 &= !IN_WINDOW;
        }
    }

    #[inline]
    pub(crate) fn protected(self) -> bool {
        self.0 & PROTECTED != 0
    }

    pub(crate) fn set_protected(&mut self, on: bool) {
        if on {
            self.0 |= PROTECTED;
        } else {
            self.0 &= !PROTECTED;
        }
    }

    #[inline]
    pub(crate) fn clock(self) -> u32 {
        self.0 & CLOCK_MASK
    }

    #[inline]
    pub(crate) fn set_clock(&mut self, v: u32) {
        self.0 = (self.0 & !CLOCK_MASK) | (v & CLOCK_MASK);
    }

    /// LRU: how many shard accesses ago this entry was last touched (one wrap assumed).
    pub(crate) fn lru_idle(self, tick: u32) -> u32 {
        tick.wrapping_sub(self.clock()) & CLOCK_MASK
    }

    pub(crate) fn lfu_counter(self) -> u8 {
        (self.0 & 0xFF) as u8
    }

    pub(crate) fn lfu_minutes(self) -> u16 {
        ((self.0 >> 8) & 0xFFFF) as u16
    }

    pub(crate) fn set_lfu(&mut self, minutes: u16, counter: u8) {
        self.set_clock(((minutes as u32) << 8) | counter as u32);
    }
}

/// An entry's metadata, in a cell a reader holding only the shard's shared lock may
/// stamp. Relaxed: the bits are a hint for eviction, never used to synchronise; a racing
/// reader's stamp may overwrite another's, as an unlocked Redis counter update might.
/// std's atomic even under loom: modelling every stamp would only grow the state space.
pub(crate) struct MetaCell(std::sync::atomic::AtomicU32);

impl MetaCell {
    pub(crate) fn new(m: Meta) -> Self {
        MetaCell(std::sync::atomic::AtomicU32::new(m.0))
    }

    #[inline]
    pub(crate) fn get(&self) -> Meta {
        Meta(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stores `m` from a shared reference; skipped when unchanged so hot keys do not
    /// dirty their cache line on every read.
    #[inline]
    pub(crate) fn stamp(&self, m: Meta) {
        if self.get() != m {
            self.0.store(m.0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Changes the metadata under the exclusive lock.
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut Meta)) {
        let mut m = Meta(*self.0.get_mut());
        f(&mut m);
        *self.0.get_mut() = m.0;
    }
}

/// Redis's LFU arithmetic: a logarithmic 8-bit counter that decays with time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lfu {
    pub(crate) log_factor: u32,
    pub(crate) decay: LfuDecay,
}

impl Lfu {
    /// Minutes elapsed between a stored 16-bit minute stamp and now, with one wrap
    /// (Redis's `LFUTimeElapsed`).
    pub(crate) fn minutes_elapsed(now_min: u16, then: u16) -> u32 {
        if now_min >= then {
            (now_min - then) as u32
        } else {
            65535 - then as u32 + now_min as u32
        }
    }

    /// Stamp periods per step of decay: Redis's `lfu-decay-time` in minutes, or one
    /// logical period (0: no decay).
    fn step(&self) -> u32 {
        match self.decay {
            LfuDecay::Minutes(m) => m,
            LfuDecay::Turnovers(0) => 0,
            LfuDecay::Turnovers(_) => 1,
        }
    }

    /// The counter after decay: one step down per decay period elapsed
    /// (Redis's `LFUDecrAndReturn`). `now_min` is the current stamp: minutes, or the
    /// shard's logical period under [`LfuDecay::Turnovers`].
    pub(crate) fn decayed(&self, meta: Meta, now_min: u16) -> u8 {
        let counter = meta.lfu_counter();
        let step = self.step();
        if step == 0 {
            return counter;
        }
        let periods = Self::minutes_elapsed(now_min, meta.lfu_minutes()) / step;
        counter.saturating_sub(periods.min(255) as u8)
    }

    /// One access: increments with probability `1 / ((counter - 5) * log_factor + 1)`
    /// (Redis's `LFULogIncr`). `rand` is a uniformly random 64-bit value.
    pub(crate) fn log_incr(&self, counter: u8, rand: u64) -> u8 {
        if counter == 255 {
            return 255;
        }
        let base = counter.saturating_sub(LFU_INIT_VAL) as u64;
        let denominator = base * self.log_factor as u64 + 1;
        // `rand < MAX / d` has probability 1/d and reads the generator's high bits, the
        // strong ones of an xorshift (`rand % d` would lean on the weak low bits).
        if rand < u64::MAX / denominator {
            counter + 1
        } else {
            counter
        }
    }

    /// Applies decay and one logarithmic increment, stamping the current minute.
    pub(crate) fn touch(&self, meta: &mut Meta, now_min: u16, rand: u64) {
        let c = self.log_incr(self.decayed(*meta, now_min), rand);
        meta.set_lfu(now_min, c);
    }
}

/// The 16-bit minute stamp Redis's LFU uses.
pub(crate) fn lfu_minutes(now_ms: u64) -> u16 {
    ((now_ms / 60_000) & 0xFFFF) as u16
}

use crate::LfuDecay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_flag_and_clock_do_not_overlap() {
        let mut m = Meta::default();
        m.set_clock(CLOCK_MASK);
        m.set_ttl_flag(true);
        assert_eq!(m.clock(), CLOCK_MASK);
        assert!(m.has_ttl());
        m.set_clock(7);
        assert!(m.has_ttl());
        m.set_ttl_flag(false);
        assert_eq!(m.0, 7);
    }

    #[test]
    fn lru_idle_handles_wrap() {
        let mut m = Meta::default();
        m.set_clock(CLOCK_MASK - 1);
        assert_eq!(m.lru_idle(CLOCK_MASK + 3), 4);
    }

    #[test]
    fn lfu_decay_one_step_per_period() {
        let lfu = Lfu {
            log_factor: 10,
            decay: LfuDecay::Minutes(2),
        };
        let mut m = Meta::default();
        m.set_lfu(100, 20);
        for (now, want) in [(100, 20), (101, 20), (102, 19), (110, 15), (200, 0)] {
            assert_eq!(lfu.decayed(m, now), want, "at minute {now}");
        }
        // Wrap of the 16-bit minute counter.
        m.set_lfu(65530, 20);
        // Elapsed = 65535 - 65530 + 3 = 8 minutes: four periods of two.
        assert_eq!(lfu.decayed(m, 3), 16);
        let off = Lfu {
            log_factor: 10,
            decay: LfuDecay::Minutes(0),
        };
        assert_eq!(off.decayed(m, 3), 20);
    }

    #[test]
    fn lfu_increment_probability_follows_the_formula() {
        let lfu = Lfu {
            log_factor: 10,
            decay: LfuDecay::Minutes(1),
        };
        // At or below LFU_INIT_VAL every access increments.
        for c in 0..=LFU_INIT_VAL {
            assert_eq!(lfu.log_incr(c, u64::MAX - 1), c + 1);
        }
        assert_eq!(lfu.log_incr(255, 0), 255);
        // Above it, the share of an evenly spread set of coins that increments is
        // 1 / ((c-5)*factor + 1).
        const N: u64 = 1 << 20;
        for c in [6u8, 10, 50, 200] {
            let d = (c - LFU_INIT_VAL) as u64 * 10 + 1;
            let hits = (0..N)
                .filter(|&i| lfu.log_incr(c, i * (u64::MAX / N)) == c + 1)
                .count() as u64;
            assert!(hits.abs_diff(N / d) <= 1, "counter {c}: {hits} of {N}");
        }
    }
}
