//! The append path: frames written to the current incr file, fsync by policy, and
//! group commit for `Always`.
//!
//! Group commit: an appender writes its frame under the state lock (so file order is
//! sequence order), releases it, and then waits until `durable_seq` covers its
//! sequence. The first waiter that finds no fsync running becomes the leader: it notes
//! the last written sequence, runs `sync_data` without the lock, publishes the new
//! `durable_seq` and wakes everyone. Records written while that fsync ran wait for the
//! next leader, so N concurrent appenders share about two fsyncs, not N.
//!
//! Poisoning: after a failed write or fsync the log refuses every later append and
//! every wait for a sequence not already durable, until the data directory is opened
//! again (recovery then truncates whatever the failed write left). Linux may drop dirty
//! pages after a failed fsync and report success on a retry, so retrying would turn a
//! reported loss into a silent one. The poisoned state is mirrored in an atomic flag so
//! the write path can ask "may I write?" without taking the log's lock; the cause is
//! read under the lock only once the flag is set.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::backend::FileHandle;
use crate::error::AppendError;
use crate::frame::{encode_record_frame, MAX_PAYLOAD};
use crate::record::Record;

/// When appended records are fsynced, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// An append returns only after its record is durable (group commit).
    Always,
    /// A background thread fsyncs once a second. Each append is written to the OS
    /// before it returns, so a process crash loses nothing; a power cut loses at most
    /// the records acknowledged in the last second plus the duration of one fsync.
    #[default]
    EverySec,
    /// Never fsync explicitly (the OS writes back when it likes; a rewrite and a file
    /// switch still fsync). A process crash loses nothing; a power cut may lose
    /// everything since the last switch.
    No,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    /// Parses Redis's spellings: `always`, `everysec`, `no`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(format!(
                "unknown appendfsync policy {other:?} (always, everysec, no)"
            )),
        }
    }
}

pub(crate) struct LogState {
    pub(crate) file: Arc<dyn FileHandle>,
    pub(crate) file_name: String,
    /// End of the last whole frame written.
    pub(crate) len: u64,
    /// The sequence the next record gets.
    pub(crate) next_seq: u64,
    /// Every sequence below or equal to this is durable (0: none yet).
    pub(crate) durable_seq: u64,
    syncing: bool,
    pub(crate) poisoned: Option<String>,
    pub(crate) last_write_error: Option<String>,
    /// Fsyncs run by group-commit leaders and everysec ticks.
    pub(crate) fsyncs: u64,
    buf: Vec<u8>,
}

pub(crate) struct Log {
    state: Mutex<LogState>,
    synced: Condvar,
    pub(crate) policy: FsyncPolicy,
    /// Set (Release) right after `LogState::poisoned` is first set, under the lock; never
    /// cleared. Lets the write path check for poisoning without the lock.
    poisoned: AtomicBool,
}

impl Log {
    pub(crate) fn new(
        file: Arc<dyn FileHandle>,
        file_name: String,
        len: u64,
        next_seq: u64,
        policy: FsyncPolicy,
    ) -> Log {
        Log {
            state: Mutex::new(LogState {
                file,
                file_name,
                len,
                next_seq,
                durable_seq: next_seq - 1,
                syncing: false,
                poisoned: None,
                last_write_error: None,
                fsyncs: 0,
                buf: Vec::new(),
            }),
            synced: Condvar::new(),
            policy,
            poisoned: AtomicBool::new(false),
        }
    }

    /// Whether the log refuses appends (lock-free; the cause is in the state).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Poisons the log (keeping the first cause) and records `msg` as the last write
    /// error. Called with the state locked.
    pub(crate) fn poison(&self, st: &mut LogState, msg: String) {
        st.poisoned.get_or_insert_with(|| msg.clone());
        st.last_write_error = Some(msg);
        self.poisoned.store(true, Ordering::Release);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `records` as consecutive frames in one write; returns their sequences.
    /// The bytes are in the OS when this returns, not necessarily durable.
    pub(crate) fn write(&self, records: &[Record]) -> Result<RangeInclusive<u64>, AppendError> {
        if records.is_empty() {
            return Err(AppendError::Empty);
        }
        for r in records {
            let len = r.encoded_len();
            if len > MAX_PAYLOAD {
                return Err(AppendError::TooLarge { len });
            }
        }
        let mut st = self.lock();
        if let Some(cause) = &st.poisoned {
            return Err(AppendError::Poisoned {
                cause: cause.clone(),
            });
        }
        let first = st.next_seq;
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        for (i, r) in records.iter().enumerate() {
            encode_record_frame(first + i as u64, r, &mut buf);
        }
        let offset = st.len;
        let written = buf.len() as u64;
        let result = st.file.write_at(&buf, offset);
        // Keep a modest buffer around for the next append; drop huge ones.
        if buf.capacity() <= 1 << 20 {
            st.buf = buf;
        }
        match result {
            Ok(()) => {
                st.len += written;
                st.next_seq += records.len() as u64;
                Ok(first..=first + records.len() as u64 - 1)
            }
            Err(source) => {
                let msg = format!(
                    "write to {} at byte {offset} failed: {source}",
                    st.file_name
                );
                self.poison(&mut st, msg);
                Err(AppendError::Write {
                    file: st.file_name.clone(),
                    offset,
                    source,
                })
            }
        }
    }

    /// Waits until `seq` is durable, leading an fsync if none is running. Under
    /// `EverySec` and `No` returns at once (unless poisoned).
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<(), AppendError> {
        if self.policy != FsyncPolicy::Always && !self.is_poisoned() {
            // Nothing to wait for and nothing to report: no lock.
            return Ok(());
        }
        let mut st = self.lock();
        if self.policy != FsyncPolicy::Always {
            return match &st.poisoned {
                Some(cause) if seq > st.durable_seq => Err(AppendError::Poisoned {
                    cause: cause.clone(),
                }),
                _ => Ok(()),
            };
        }
        loop {
            if seq <= st.durable_seq {
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(AppendError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st = self.lead_sync(st);
        }
    }

    /// Runs one fsync covering everything written so far, with the lock released
    /// during the fsync. Requires `!st.syncing`.
    fn lead_sync<'a>(&'a self, mut st: MutexGuard<'a, LogState>) -> MutexGuard<'a, LogState> {
        st.syncing = true;
        let target = st.next_seq - 1;
        let file = st.file.clone();
        let name = st.file_name.clone();
        drop(st);
        let result = file.sync_data();
        let mut st = self.lock();
        st.syncing = false;
        st.fsyncs += 1;
        match result {
            Ok(()) => st.durable_seq = st.durable_seq.max(target),
            Err(e) => self.poison(&mut st, format!("fsync of {name} failed: {e}")),
        }
        self.synced.notify_all();
        st
    }

    /// The `EverySec` tick: fsync what was written, unless an fsync is running (it
    /// will be picked up by the next tick) or the log is poisoned.
    pub(crate) fn sync_tick(&self) {
        let st = self.lock();
        if st.syncing || st.poisoned.is_some() || st.durable_seq + 1 >= st.next_seq {
            return;
        }
        drop(self.lead_sync(st));
    }

    /// Fsyncs now (any policy) and waits; an explicit flush for shutdown.
    pub(crate) fn sync_all(&self) -> Result<(), AppendError> {
        let mut st = self.lock();
        let target = st.next_seq - 1;
        loop {
            if let Some(cause) = &st.poisoned {
                return Err(AppendError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if target <= st.durable_seq {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
            } else {
                st = self.lead_sync(st);
            }
        }
    }

    /// Waits for a running fsync to end, then hands the locked state to a file switch.
    pub(crate) fn lock_idle(&self) -> MutexGuard<'_, LogState> {
        let mut st = self.lock();
        while st.syncing {
            st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st
    }

    /// Marks everything written durable after the caller fsynced the current file
    /// itself with the lock held (file switch).
    pub(crate) fn mark_all_durable(st: &mut LogState) {
        st.durable_seq = st.next_seq - 1;
    }

    /// Wakes waiters after a state change made through [`Log::lock_idle`].
    pub(crate) fn notify(&self) {
        self.synced.notify_all();
    }
}
