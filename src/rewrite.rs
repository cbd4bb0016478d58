//! Rewrites of a durable cache's log: `rewrite_aof`, `save` and `bgsave` (and the
//! automatic rewrites the cron starts).
//!
//! The journal first switches writes to a new incr file; the keyspace is then read shard
//! by shard with the SCAN cursor, a chunk at a time under the shard's shared lock (so
//! writers wait at most one chunk; readers not at all), encoded straight into the new
//! base by one thread per core, each with sections of its own. The cursor's guarantee
//! matters here: every key present for the whole rewrite is read at least once, even if
//! tables resize, and a key written meanwhile is also in the new incr file, whose
//! records replay idempotently on top of the base. A shard's table is held from
//! shrinking while it is walked, the one way the cursor could meet a key twice, so the
//! base's keys are distinct and a restart inserts them without lookups.

use crate::cache::{Cache, Inner};
use crate::error::Error;
use crate::journal::RewriteSink;
use crate::shim::Ordering;
use crate::shim::{read, thread, write, Arc, AtomicUsize};
use crate::weigh::Weigher;
use std::hash::Hash;

/// Entries copied per shard-lock acquisition during a rewrite.
const CHUNK: usize = 512;

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Compacts the log now, on this thread (Redis's `BGREWRITEAOF`, run in the
    /// foreground): a new base snapshot of the keyspace, taken while writes go on, then
    /// an atomic manifest swap. On failure the files in force stay complete and loadable.
    pub fn rewrite_aof(&self) -> Result<(), Error> {
        Inner::rewrite_now(&self.inner)
    }

    /// Takes a snapshot now (Redis's `SAVE`). In larder the snapshot is the log's base,
    /// so this is [`rewrite_aof`](Self::rewrite_aof).
    pub fn save(&self) -> Result<(), Error> {
        self.rewrite_aof()
    }

    /// Starts a snapshot on a background thread and returns at once (Redis's `BGSAVE`).
    /// Fails if one is already running; its outcome shows in `info().persistence`.
    pub fn bgsave(&self) -> Result<(), Error> {
        Inner::start_rewrite(&self.inner)
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Starts a rewrite on its own thread unless one is running.
    pub(crate) fn start_rewrite(inner: &Arc<Self>) -> Result<(), Error> {
        if inner.journal().is_none() {
            return Err(Error::NotDurable);
        }
        if inner
            .rewriting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::Rewrite("a rewrite is already in progress".into()));
        }
        let me = Arc::clone(inner);
        thread::spawn(move || {
            // In the background: the application keeps at least half the cores.
            let _ = me.rewrite_locked_out(base_threads(me.slots.len()).div_ceil(2));
            me.rewriting.store(false, Ordering::Release);
        });
        Ok(())
    }

    fn rewrite_now(inner: &Arc<Self>) -> Result<(), Error> {
        if inner.journal().is_none() {
            return Err(Error::NotDurable);
        }
        if inner
            .rewriting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::Rewrite("a rewrite is already in progress".into()));
        }
        // The caller waits for it: use every core.
        let r = inner.rewrite_locked_out(base_threads(inner.slots.len()));
        inner.rewriting.store(false, Ordering::Release);
        r
    }

    /// Calls `f` on every live entry (key, value, absolute expiry), reading each shard
    /// with the SCAN cursor a chunk at a time under its shared lock: every key present
    /// for the whole walk is visited at least once (a key moved by a resize may be
    /// visited twice). Stops at the first error.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn for_each_entry(
        &self,
        mut f: impl FnMut(&K, &V, Option<u64>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        for slot in self.slots.iter() {
            let mut cursor = 0;
            loop {
                let mut failed = Ok(());
                cursor = read(&slot.shard).scan(cursor, CHUNK, now, |k, v, at| {
                    if failed.is_ok() {
                        failed = f(k, v, at);
                    }
                });
                failed?;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Returns once every write that held a shard lock when it was called has
    /// released it.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn barrier(&self) {
        for slot in self.slots.iter() {
            drop(crate::shim::write(&slot.shard));
        }
    }

    /// The rewrite itself, on up to `threads` threads; the caller holds the
    /// `rewriting` flag.
    fn rewrite_locked_out(&self, threads: usize) -> Result<(), Error> {
        let journal = self.journal().ok_or(Error::NotDurable)?;
        let result = (|| {
            let mut sink = journal.begin_rewrite()?;
            sink.distinct_keys();
            self.write_base(&*sink, threads)?;
            sink.finish()
        })();
        journal.rewrite_done(self.clock.now_ms(), result.is_ok());
        result
    }

    /// Feeds every live entry to `sink`, each shard walked by one of up to `threads`
    /// threads, each with its own part of the sink. Entries are encoded
    /// straight from the shard under its shared lock, a chunk at a time: no copies of
    /// keys or values; writers wait for at most one chunk.
    fn write_base(&self, sink: &dyn RewriteSink<K, V>, threads: usize) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let next = AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let work = || -> Result<(), Error> {
            let mut part = sink.part()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= self.slots.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                let walked = self.walk_shard_once(i, now, |k, v, at| part.push(k, v, at));
                if let Err(e) = walked {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            part.finish()
        };
        if threads <= 1 {
            return work();
        }
        #[cfg(not(loom))]
        {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
                let mut first = Ok(());
                for h in handles {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(Error::Rewrite("a snapshot thread panicked".into()))
                    });
                    if first.is_ok() {
                        first = r;
                    }
                }
                first
            })
        }
        #[cfg(loom)]
        work()
    }

    /// Walks shard `i` with the SCAN cursor, a chunk at a time under its shared lock,
    /// with the shard's table held from shrinking: every live key present for the whole
    /// walk is visited, and none twice (so the base's keys are distinct).
    fn walk_shard_once(
        &self,
        i: usize,
        now: u64,
        mut f: impl FnMut(&K, &V, Option<u64>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let slot = &self.slots[i];
        write(&slot.shard).hold_size();
        let mut cursor = 0;
        let walked = loop {
            let mut failed = Ok(());
            cursor = read(&slot.shard).scan(cursor, CHUNK, now, |k, v, at| {
                if failed.is_ok() {
                    failed = f(k, v, at);
                }
            });
            if failed.is_err() || cursor == 0 {
                break failed;
            }
        };
        write(&slot.shard).release_size();
        walked
    }
}

/// Threads that write a base in the foreground (`save`, `rewrite_aof`): one per core,
/// no more than there are shards; a background save takes half as many. Under loom,
/// one: the walk then runs on the calling (modelled) thread.
fn base_threads(shards: usize) -> usize {
    if cfg!(loom) {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(shards)
}
