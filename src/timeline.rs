//! When a shard's logical LRU clock had which value, so that a key's idle time in
//! accesses converts into wall time (Redis's `OBJECT IDLETIME`).
//!
//! The LRU clock counts accesses, not seconds (see docs/design.md), so a key's stamp
//! says how many accesses ago it was touched, not when. The cron marks each shard's
//! clock with the wall time about once a second; an access at tick `t` happened after
//! the newest mark whose tick is below `t` and before the oldest whose tick is above. Old marks are thinned so
//! that the spacing grows with age (about a quarter of the age, and never under a
//! second): a handful of marks cover years, and the error stays a fraction of the
//! idle time it reports.

use std::collections::VecDeque;

/// The most marks kept; the oldest go first beyond it.
const MAX_MARKS: usize = 128;
/// The finest spacing between marks.
const MIN_SPACING_MS: u64 = 1000;

/// Marks of `(tick, unix ms)`, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    marks: VecDeque<(u64, u64)>,
}

impl Timeline {
    /// Records that the clock read `tick` at `now_ms` (no-op within a second of the
    /// newest mark).
    pub(crate) fn mark(&mut self, tick: u64, now_ms: u64) {
        if let Some(&(t, at)) = self.marks.back() {
            if now_ms < at.saturating_add(MIN_SPACING_MS) || tick <= t {
                return;
            }
        }
        self.marks.push_back((tick, now_ms));
        // Thin: drop an interior mark when the interval its neighbours span is still
        // small against the age of that interval's newer end.
        let mut j = 1;
        while j + 1 < self.marks.len() {
            let (older, newer) = (self.marks[j - 1].1, self.marks[j + 1].1);
            let allowed = (now_ms.saturating_sub(newer) / 4).max(MIN_SPACING_MS);
            if newer - older <= allowed {
                self.marks.remove(j);
            } else {
                j += 1;
            }
        }
        while self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
    }

    /// About how many milliseconds before `now_ms` an access at `tick` happened.
    ///
    /// A mark whose tick is below `tick` came before the access; one whose tick is
    /// above came after it; one with the same tick says nothing (reads stamp the
    /// current tick without advancing it). The answer is the middle of the interval
    /// the nearest such marks leave: 0 to the newest mark's age when the access came
    /// after it, the oldest mark's age when it came before every mark.
    pub(crate) fn idle_ms(&self, tick: u64, now_ms: u64) -> u64 {
        let before = self.marks.partition_point(|&(t, _)| t < tick);
        let after = self.marks.partition_point(|&(t, _)| t <= tick);
        let age = |i: usize| now_ms.saturating_sub(self.marks[i].1);
        let longest = before.checked_sub(1).map(age);
        let shortest = self.marks.get(after).map(|_| age(after)).unwrap_or(0);
        match longest {
            Some(longest) => shortest + (longest.saturating_sub(shortest)) / 2,
            None => shortest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_is_placed_between_the_marks_around_its_tick() {
        let mut tl = Timeline::default();
        // One access per ms for 100 s; a mark every second.
        for s in 0..100u64 {
            tl.mark(s * 1000, s * 1000);
        }
        let now = 100_000;
        // An access at tick 42_500 happened at 42.5 s; marks that old are thinned to
        // a spacing of about a quarter of their age, and the answer is the middle.
        let idle = tl.idle_ms(42_500, now);
        assert!(idle.abs_diff(57_500) <= 57_500 / 8 + 500, "{idle}");
        // Recent marks are a second apart; on a mark's tick: between its neighbours.
        assert_eq!(tl.idle_ms(98_000, now), 2_000);
        assert_eq!(tl.idle_ms(97_500, now), 2_500);
        // Newer than every mark: half the newest mark's age.
        assert_eq!(tl.idle_ms(99_500, now), 500);
        // Older than every mark: at least the oldest mark's age.
        assert!(tl.idle_ms(0, now) >= 57_000);
    }

    #[test]
    fn thinning_keeps_few_marks_and_a_relative_error() {
        let mut tl = Timeline::default();
        let year_s = 365 * 24 * 3600u64;
        // A mark a minute for a year, then a mark a second for the last hour; ten
        // accesses a second throughout.
        let mut s = 0;
        while s < year_s {
            tl.mark(s * 10, s * 1000);
            s += if s < year_s - 3600 { 60 } else { 1 };
        }
        let now = year_s * 1000;
        assert!(tl.marks.len() <= MAX_MARKS, "{} marks", tl.marks.len());
        assert!(tl.marks.len() > 20, "{} marks", tl.marks.len());
        for age_s in [2u64, 30, 600, 86_400, 30 * 86_400] {
            let at_s = year_s - age_s;
            let idle = tl.idle_ms(at_s * 10, now);
            let truth = age_s * 1000;
            let slack = truth / 4 + MIN_SPACING_MS;
            assert!(
                idle.abs_diff(truth) <= slack,
                "age {age_s}s: {idle} ms reported"
            );
        }
    }

    #[test]
    fn marks_need_a_second_between_them_and_a_clock_that_moved() {
        let mut tl = Timeline::default();
        tl.mark(10, 1000);
        tl.mark(20, 1500);
        tl.mark(5, 5000);
        tl.mark(10, 6000);
        assert_eq!(tl.marks.len(), 1);
    }
}
