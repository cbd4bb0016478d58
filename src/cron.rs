//! The background: the cron (active expiry, the coarse clock, the memory peak,
//! automatic rewrites) and the lazy-free worker, started per cache and stopped with its
//! last handle.

use crate::cache::Inner;
use crate::shim::{lock, thread, Arc, Condvar, Mutex, Ordering, Weak};
use crate::weigh::Weigher;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Wakes the cron early and tells it to stop.
pub(crate) struct CronSignal {
    pub(crate) stop: Mutex<bool>,
    pub(crate) wake: Condvar,
}

impl CronSignal {
    /// Sleeps up to `period`; true when asked to stop.
    pub(crate) fn sleep(&self, period: Duration) -> bool {
        let stop = lock(&self.stop);
        if *stop {
            return true;
        }
        match self.wake.wait_timeout(stop, period) {
            Ok((g, _)) => *g,
            Err(p) => *p.into_inner().0,
        }
    }

    pub(crate) fn stop(&self) {
        *lock(&self.stop) = true;
        self.wake.notify_all();
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// One cron cycle: refresh the coarse clock, track the memory peak, and run Redis's
    /// adaptive active expiry on every shard: sample 20 keys with a TTL, delete the
    /// expired, and repeat while more than a quarter of a sample had expired, within a
    /// time budget of a quarter of the cron period.
    pub(crate) fn cron_tick(&self) -> u64 {
        const SAMPLE: usize = 20;
        let now = self.clock.now_ms();
        self.coarse_ms.store(now, Ordering::Relaxed);
        self.update_peak();
        #[cfg(feature = "metrics")]
        crate::metrics_export::publish(&self.settings.name, &self.info());
        // Mark each shard's LRU clock with the time, about once a second
        // (`access_stats`, `OBJECT IDLETIME`).
        if now >= self.last_time_mark.load(Ordering::Relaxed) + 1000 {
            self.last_time_mark.store(now, Ordering::Relaxed);
            for i in 0..self.slots.len() {
                self.with_slot(i, None, false, |s, _, _| s.mark_time(now), |_| None);
            }
        }
        let budget = self.settings.cron_period / 4;
        let start = Instant::now();
        let mut expired_total = 0u64;
        for i in 0..self.slots.len() {
            loop {
                let (sampled, expired) = self.with_slot(
                    i,
                    None,
                    false,
                    |s, env, g| s.expire_sample(SAMPLE, now, env.weigher, g),
                    |_| None,
                );
                expired_total += expired as u64;
                if sampled == 0 || expired * 4 <= sampled || start.elapsed() > budget {
                    break;
                }
            }
            if start.elapsed() > budget {
                break;
            }
        }
        expired_total
    }

    /// Whether the journal's rules (size growth, save rules, retry) call for a rewrite.
    pub(crate) fn rewrite_due(&self) -> bool {
        self.journal()
            .is_some_and(|j| j.rewrite_due(self.clock.now_ms()))
    }

    pub(crate) fn start_threads(inner: &Arc<Self>) {
        let mut threads = lock(&inner.threads);
        let weak: Weak<Self> = Arc::downgrade(inner);
        let signal = Arc::clone(&inner.cron);
        let period = inner.settings.cron_period;
        threads.push(thread::spawn(move || loop {
            if signal.sleep(period) {
                return;
            }
            match weak.upgrade() {
                Some(inner) => {
                    inner.cron_tick();
                    if inner.rewrite_due() {
                        // The outcome is recorded in the journal's status and backoff.
                        let _ = Inner::start_rewrite(&inner);
                    }
                }
                None => return,
            }
        }));
        let lazy = Arc::clone(&inner.lazy);
        threads.push(thread::spawn(move || {
            lowest_priority();
            lazy.run_worker()
        }));
    }
}

/// Background drops must not take the CPU from the threads serving requests: when
/// `unlink` wakes the lazy-free worker, the scheduler would otherwise often run the worker
/// at once on the caller's core and stall the caller for the whole drop. Nice 19 (the
/// lowest priority) on Linux, where `setpriority` with `who = 0` applies to the calling
/// thread; elsewhere, nothing.
fn lowest_priority() {
    #[cfg(all(target_os = "linux", not(loom)))]
    // SAFETY: setpriority has no memory-safety preconditions; failure is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
