//! The append path: frames copied into the mapped tail of the current incr file (a
//! preallocated segment), syncs by policy, and group commit for `Always`.
//!
//! Reservation: a segment's write position is one atomic word, `(records << 32) |
//! offset`. An appender encodes its frames (sequence and checksum still zero) into a
//! buffer of its own, reserves `n` sequences and their bytes with one compare-and-swap
//! of that word, fills in the sequences and checksums, and copies the frames into the
//! mapping, storing each frame's checksum last. No lock is taken and no system call
//! made: appenders on different shards never queue behind each other. Because
//! sequences and bytes come from the same word, file order is sequence order; the
//! cache reserves under its shard lock, so the order of writes to one key is the
//! order of their sequences and of their frames.
//!
//! Each appender holds the segment's read lock while it reserves and copies. Whatever
//! needs "every reserved frame is copied" takes the write lock for an instant: a sync
//! notes the write position under it (a sync point, behind which there is no hole),
//! and a switch to a new segment holds it while it syncs the old one and names the
//! new one in the manifest.
//!
//! Group commit: an appender under `Always` waits until `durable_seq` covers its
//! sequence. The first waiter that finds no sync running becomes the leader: it takes
//! a sync point, syncs the mapping up to it without any lock, publishes the point's
//! sequence as durable and wakes everyone. Records copied while that sync ran wait for
//! the next leader, so N concurrent appenders share about two syncs, not N.
//!
//! Poisoning: after a failed write or sync the log refuses every later append and
//! every wait for a sequence not already durable, until the data directory is opened
//! again (recovery then drops whatever the failed write left). Linux may drop dirty
//! pages after a failed fsync and report success on a retry, so retrying would turn a
//! reported loss into a silent one. The poisoned state is mirrored in an atomic flag so
//! the write path can ask "may I write?" without taking the log's lock; the cause is
//! read under the lock only once the flag is set.
//!
//! Each of these claims is checked by a loom model in `log/models.rs`.

use std::cell::RefCell;
use std::ops::RangeInclusive;
use std::sync::{Arc, PoisonError};

use crate::backend::{map_file, FileHandle, MappedFile};
use crate::error::AppendError;
use crate::frame::{encode_unsealed, seal_frame, CRC_OFFSET, FRAME_HEADER_LEN, MAX_PAYLOAD};
use crate::record::Record;
use crate::shim::{
    AtomicBool, AtomicU64, AtomicU8, Condvar, Mutex, MutexGuard, Ordering, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};

#[cfg(test)]
mod models;

/// When appended records are fsynced, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// An append returns only after its record is durable (group commit).
    Always,
    /// A background thread syncs once a second. Each append is in the page cache (the
    /// mapped tail) before it returns, so a process crash loses nothing; a power cut
    /// loses at most the records acknowledged in the last second plus the duration of
    /// one sync.
    #[default]
    EverySec,
    /// Never sync explicitly (the OS writes back when it likes; a rewrite and a file
    /// switch still sync). A process crash loses nothing; a power cut may lose
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

/// Bits of the write position word that hold the byte offset.
const OFFSET_BITS: u32 = 32;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Largest segment the position word can address.
pub(crate) const MAX_SEGMENT_BYTES: u64 = OFFSET_MASK;

fn unpack(word: u64) -> (u64, u64) {
    (word >> OFFSET_BITS, word & OFFSET_MASK)
}

/// One incr file being appended to through its mapping.
pub(crate) struct Segment {
    pub(crate) file: Arc<dyn FileHandle>,
    map: Arc<dyn MappedFile>,
    pub(crate) name: String,
    /// Sequence of the segment's first record.
    base_seq: u64,
    /// `(records reserved << 32) | end offset of the reserved bytes`.
    position: AtomicU64,
}

impl Segment {
    /// Maps `file` (already at least `size` bytes long) whose records start at
    /// `base_seq`, `records` of them ending at byte `end`.
    pub(crate) fn open(
        file: Arc<dyn FileHandle>,
        name: String,
        base_seq: u64,
        records: u64,
        end: u64,
        size: u64,
    ) -> std::io::Result<Segment> {
        if size > MAX_SEGMENT_BYTES || end > size || records > OFFSET_MASK {
            return Err(std::io::Error::other(format!(
                "segment {name}: {size} bytes, {records} records: past the limit of {MAX_SEGMENT_BYTES}"
            )));
        }
        let map = map_file(&file, size)?;
        Ok(Segment {
            file,
            map,
            name,
            base_seq,
            position: AtomicU64::new((records << OFFSET_BITS) | end),
        })
    }

    /// (records reserved, end offset of the reserved bytes).
    fn position(&self) -> (u64, u64) {
        unpack(self.position.load(Ordering::Relaxed))
    }

    /// The sequence the next record reserved here gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.base_seq + self.position().0
    }

    /// End of the reserved bytes (of whole frames, at a sync point).
    pub(crate) fn end(&self) -> u64 {
        self.position().1
    }

    /// Whether `bytes` more fit.
    pub(crate) fn has_room(&self, records: u64, bytes: u64) -> bool {
        let (n, end) = self.position();
        end + bytes <= self.map.len() && n + records <= OFFSET_MASK
    }

    /// Reserves `records` sequences and `bytes` bytes: (first sequence, offset), or
    /// `None` when they do not fit.
    fn reserve(&self, records: u64, bytes: u64) -> Option<(u64, u64)> {
        let size = self.map.len();
        let mut word = self.position.load(Ordering::Relaxed);
        loop {
            let (n, end) = unpack(word);
            if end + bytes > size || n + records > OFFSET_MASK {
                return None;
            }
            let next = ((n + records) << OFFSET_BITS) | (end + bytes);
            // Relaxed: the copies are published to syncs and switches by the segment's
            // lock, not by this word.
            match self.position.compare_exchange_weak(
                word,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((self.base_seq + n, end)),
                Err(w) => word = w,
            }
        }
    }

    /// Syncs the mapped bytes before `end`.
    pub(crate) fn sync(&self, end: u64) -> std::io::Result<()> {
        self.map.sync(0, end)
    }
}

pub(crate) struct LogState {
    /// Every sequence below or equal to this is durable (0: none yet).
    pub(crate) durable_seq: u64,
    syncing: bool,
    pub(crate) poisoned: Option<String>,
    pub(crate) last_write_error: Option<String>,
    /// Syncs run by group-commit leaders and everysec ticks.
    pub(crate) fsyncs: u64,
}

pub(crate) struct Log {
    current: RwLock<Arc<Segment>>,
    state: Mutex<LogState>,
    synced: Condvar,
    /// The fsync policy in force (`FsyncPolicy` as `u8`), changeable while appends run.
    policy: AtomicU8,
    /// Set (Release) right after `LogState::poisoned` is first set, under the lock; never
    /// cleared. Lets the write path check for poisoning without the lock.
    poisoned: AtomicBool,
}

/// What [`Log::write`] did.
pub(crate) enum Written {
    /// The records' sequences.
    Seqs(RangeInclusive<u64>),
    /// The current segment has no room for `bytes` more: switch, then try again.
    Full { bytes: u64 },
}

#[cfg(not(loom))]
thread_local! {
    /// Each appender's frame buffer: the frames of one append, encoded once. The same
    /// bytes are what lands in the segment (the seam for a replication stream).
    static FRAMES: RefCell<(Vec<u8>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

// Under loom the buffer is loom's thread-local. std's would be sound (the `RefCell`
// and the fallback below cover any overlap) but not faithful: loom runs every model
// thread on one OS thread, so all appenders would share one buffer and, whenever one
// is preempted mid-append, the others would take the fallback path instead of the
// one production takes. loom's gives each model thread its own buffer, as each OS
// thread has in production.
#[cfg(loom)]
loom::thread_local! {
    static FRAMES: RefCell<(Vec<u8>, Vec<u32>)> = RefCell::new((Vec::new(), Vec::new()));
}

impl Log {
    pub(crate) fn new(segment: Segment, durable_seq: u64, policy: FsyncPolicy) -> Log {
        Log {
            current: RwLock::new(Arc::new(segment)),
            state: Mutex::new(LogState {
                durable_seq,
                syncing: false,
                poisoned: None,
                last_write_error: None,
                fsyncs: 0,
            }),
            synced: Condvar::new(),
            policy: AtomicU8::new(policy as u8),
            poisoned: AtomicBool::new(false),
        }
    }

    /// The fsync policy in force.
    pub(crate) fn policy(&self) -> FsyncPolicy {
        match self.policy.load(Ordering::Acquire) {
            p if p == FsyncPolicy::Always as u8 => FsyncPolicy::Always,
            p if p == FsyncPolicy::EverySec as u8 => FsyncPolicy::EverySec,
            _ => FsyncPolicy::No,
        }
    }

    /// Changes the fsync policy. Appends that return after this follow the new one;
    /// the caller syncs what was written before (see `DataDir::set_fsync`).
    pub(crate) fn set_policy(&self, policy: FsyncPolicy) {
        self.policy.store(policy as u8, Ordering::Release);
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

    fn read_segment(&self) -> RwLockReadGuard<'_, Arc<Segment>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current segment with every reservation in it copied, held until the guard is
    /// dropped: for a switch, which replaces the segment through the guard.
    pub(crate) fn exclusive(&self) -> RwLockWriteGuard<'_, Arc<Segment>> {
        self.current.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current segment (a snapshot; it may be switched right after).
    pub(crate) fn segment(&self) -> Arc<Segment> {
        self.read_segment().clone()
    }

    fn poisoned_error(&self) -> AppendError {
        AppendError::Poisoned {
            cause: self
                .lock()
                .poisoned
                .clone()
                .unwrap_or_else(|| "an earlier write failed".into()),
        }
    }

    /// Copies `records` as consecutive frames into the current segment; returns their
    /// sequences, or [`Written::Full`] when the segment has no room. The bytes are in
    /// the page cache when this returns, not necessarily durable.
    pub(crate) fn write(&self, records: &[Record]) -> Result<Written, AppendError> {
        if records.is_empty() {
            return Err(AppendError::Empty);
        }
        for r in records {
            let len = r.encoded_len();
            if len > MAX_PAYLOAD {
                return Err(AppendError::TooLarge { len });
            }
        }
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        FRAMES.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => {
                let (frames, crcs) = &mut *bufs;
                let r = self.write_with(records, frames, crcs);
                // Keep a modest buffer around for the next append; drop huge ones.
                if frames.capacity() > 1 << 20 {
                    *frames = Vec::new();
                }
                r
            }
            Err(_) => self.write_with(records, &mut Vec::new(), &mut Vec::new()),
        })
    }

    fn write_with(
        &self,
        records: &[Record],
        frames: &mut Vec<u8>,
        crcs: &mut Vec<u32>,
    ) -> Result<Written, AppendError> {
        frames.clear();
        crcs.clear();
        for r in records {
            encode_unsealed(r, frames);
        }
        let bytes = frames.len() as u64;
        let n = records.len() as u64;
        let seg = self.read_segment();
        let Some((first, offset)) = seg.reserve(n, bytes) else {
            return Ok(Written::Full { bytes });
        };
        let mut at = 0;
        for i in 0..n {
            let mut len = [0; 4];
            len.copy_from_slice(&frames[at..at + 4]);
            let end = at + FRAME_HEADER_LEN + u32::from_le_bytes(len) as usize;
            crcs.push(seal_frame(&mut frames[at..end], first + i));
            at = end;
        }
        // The frames with their checksums still zero, then each checksum: a crash in
        // between leaves frames that recovery reads as a hole, not as corruption.
        let mut result = seg.map.write_at(frames, offset);
        let mut at = 0usize;
        for crc in crcs.iter() {
            if result.is_err() {
                break;
            }
            let mut len = [0; 4];
            len.copy_from_slice(&frames[at..at + 4]);
            result = seg
                .map
                .write_at(&crc.to_le_bytes(), offset + (at + CRC_OFFSET) as u64);
            at += FRAME_HEADER_LEN + u32::from_le_bytes(len) as usize;
        }
        match result {
            Ok(()) => Ok(Written::Seqs(first..=first + n - 1)),
            Err(source) => {
                let file = seg.name.clone();
                drop(seg);
                let msg = format!("write to {file} at byte {offset} failed: {source}");
                let mut st = self.lock();
                self.poison(&mut st, msg);
                Err(AppendError::Write {
                    file,
                    offset,
                    source,
                })
            }
        }
    }

    /// Waits until `seq` is durable, leading a sync if none is running. Under
    /// `EverySec` and `No` returns at once (unless poisoned).
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<(), AppendError> {
        let always = self.policy() == FsyncPolicy::Always;
        if !always && !self.is_poisoned() {
            // Nothing to wait for and nothing to report: no lock.
            return Ok(());
        }
        let mut st = self.lock();
        if !always {
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

    /// Runs one sync covering every frame copied before its sync point, with no lock
    /// held during the sync. Requires `!st.syncing`.
    fn lead_sync<'a>(&'a self, mut st: MutexGuard<'a, LogState>) -> MutexGuard<'a, LogState> {
        st.syncing = true;
        drop(st);
        // The sync point: an instant with no copy in flight, so every frame before
        // `end` is whole. Older segments were synced when they were switched away.
        let (seg, end, target) = {
            let seg = self.exclusive();
            (seg.clone(), seg.end(), seg.next_seq() - 1)
        };
        let result = seg.sync(end);
        let mut st = self.lock();
        st.syncing = false;
        st.fsyncs += 1;
        match result {
            Ok(()) => st.durable_seq = st.durable_seq.max(target),
            Err(e) => self.poison(&mut st, format!("fsync of {} failed: {e}", seg.name)),
        }
        self.synced.notify_all();
        st
    }

    /// The `EverySec` tick: sync what was written, unless a sync is running (it will
    /// be picked up by the next tick) or the log is poisoned.
    // Under loom no `EverySec` thread runs (see `start_syncer`); only the models tick.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn sync_tick(&self) {
        // Read before the state lock: a switch holds the segment's write lock while it
        // takes the state lock.
        let next = self.segment().next_seq();
        let st = self.lock();
        if st.syncing || st.poisoned.is_some() || st.durable_seq + 1 >= next {
            return;
        }
        drop(self.lead_sync(st));
    }

    /// Syncs now (any policy) and waits; an explicit flush for shutdown.
    pub(crate) fn sync_all(&self) -> Result<(), AppendError> {
        let target = self.segment().next_seq() - 1;
        let mut st = self.lock();
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

    /// Marks everything before `next_seq` durable after a switch synced the old
    /// segment itself (holding [`Log::exclusive`]), and wakes waiters.
    pub(crate) fn mark_durable(&self, next_seq: u64) {
        let mut st = self.lock();
        st.durable_seq = st.durable_seq.max(next_seq - 1);
        drop(st);
        self.synced.notify_all();
    }

    /// Poisons with `msg` and wakes waiters (a failed switch).
    pub(crate) fn poison_and_wake(&self, msg: String) {
        let mut st = self.lock();
        self.poison(&mut st, msg);
        drop(st);
        self.synced.notify_all();
    }
}
