//! The hook between the cache and its append-only log.
//!
//! Every write is applied to the shard and turned into log records under the shard lock
//! (so the log's order per key is the lock's order), written to the OS before the lock
//! is released, and waited for (fsync, group commit) after it is released. Without the
//! `persistence` feature no journal exists and the write path only checks an empty
//! `OnceLock`.

use crate::error::Error;

/// A write as the cache describes it to the journal, by reference. (Without the
/// `persistence` feature no journal reads them.)
#[cfg_attr(not(feature = "persistence"), allow(dead_code))]
pub(crate) enum LogOp<'a, K, V> {
    Set {
        key: &'a K,
        value: &'a V,
        expire_at: Option<u64>,
    },
    Del(&'a K),
    Expire(&'a K, u64),
    Persist(&'a K),
    Flush,
}

/// An encoded record, owned: `larder_persistence::Record` with the feature, and a type
/// with no values without it (no journal can exist then).
#[cfg(feature = "persistence")]
pub(crate) type LogRecord = larder_persistence::Record;
#[cfg(not(feature = "persistence"))]
pub(crate) enum LogRecord {}

/// The durable side of a cache.
pub(crate) trait Journal<K, V>: Send + Sync {
    /// Whether writes are accepted; after a failed log write they are refused (Redis's
    /// `MISCONF`) until the log is writable again.
    fn check(&self) -> Result<(), Error>;
    /// Encodes one operation.
    fn record(&self, op: LogOp<'_, K, V>) -> Result<LogRecord, Error>;
    /// Writes records to the OS under the shard lock(s); `atomic` wraps them in one
    /// all-or-nothing record. Returns the sequence to wait for (0: nothing written).
    fn write(&self, records: Vec<LogRecord>, atomic: bool) -> Result<u64, Error>;
    /// Waits, outside any lock, until `seq` is as durable as the fsync policy promises.
    fn wait(&self, seq: u64) -> Result<(), Error>;
    /// The `# Persistence` figures, if the journal writes a log.
    fn info(&self) -> Option<crate::info::PersistenceInfo>;
    /// Starts a rewrite: the cache then streams its entries into the sink.
    fn begin_rewrite(&self) -> Result<Box<dyn RewriteSink<K, V>>, Error>;
    /// Called by the cron: whether a rewrite is due (size growth, save rules, retry).
    fn rewrite_due(&self, now_ms: u64) -> bool;
    /// Records a rewrite's outcome for the save rules and retry backoff.
    fn rewrite_done(&self, now_ms: u64, ok: bool);
    /// Fsyncs everything written (a clean shutdown).
    fn sync(&self) -> Result<(), Error>;
    /// Changes the fsync policy (`Error::NotDurable` where no log is written).
    #[cfg(feature = "persistence")]
    fn set_fsync(&self, fsync: larder_persistence::FsyncPolicy) -> Result<(), Error>;
    /// The save rules (`save <seconds> <changes>`), `Error::NotDurable` without a log.
    fn save_rules(&self) -> Result<Vec<(std::time::Duration, u64)>, Error>;
    /// Replaces the save rules.
    fn set_save_rules(&self, rules: Vec<(std::time::Duration, u64)>) -> Result<(), Error>;
}

/// Receives the keyspace during a rewrite, from one or several threads at once.
pub(crate) trait RewriteSink<K, V>: Send + Sync {
    /// Declares that no key will be pushed twice (the loader may then skip lookups).
    fn distinct_keys(&mut self);
    /// A writer for one thread's share of the keyspace.
    fn part(&self) -> Result<Box<dyn RewritePart<K, V> + '_>, Error>;
    /// Makes the new base durable and puts it in force; every part is finished first.
    fn finish(self: Box<Self>) -> Result<(), Error>;
}

/// One thread's share of a rewrite.
pub(crate) trait RewritePart<K, V>: Send {
    fn push(&mut self, key: &K, value: &V, expire_at: Option<u64>) -> Result<(), Error>;
    /// Writes what is buffered.
    fn finish(self: Box<Self>) -> Result<(), Error>;
}

#[cfg(feature = "persistence")]
thread_local! {
    /// An emptied record vector kept for this thread's next write.
    static SPARE: std::cell::Cell<Vec<LogRecord>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A record vector for one write: this thread's spare if it has one (no allocation).
#[cfg(feature = "persistence")]
pub(crate) fn take_records() -> Vec<LogRecord> {
    SPARE.with(std::cell::Cell::take)
}

/// Keeps `records` (cleared) as this thread's spare, unless it grew large.
#[cfg(feature = "persistence")]
pub(crate) fn give_back(mut records: Vec<LogRecord>) {
    records.clear();
    if records.capacity() <= 64 {
        SPARE.with(|s| s.set(records));
    }
}

/// A record vector for one write (without the feature no records exist).
#[cfg(not(feature = "persistence"))]
pub(crate) fn take_records() -> Vec<LogRecord> {
    Vec::new()
}
