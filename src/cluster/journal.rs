//! The journal of a cluster node: the write gate, the replication stream, and the
//! node's own log (if it is durable), kept in one order.
//!
//! A master's write is checked against the gate under its shard lock, then its
//! records are written to the log and fed to the replication stream under one mutex,
//! so the log and the stream hold the same records in the same order. The log also
//! holds `Meta` records with the stream position ([`Position`]): on restart the
//! position of the recovered data is the last `Meta` plus the stream length of every
//! record after it, which lets a restarted node continue partially.
//!
//! A replica applies its master's records with the journal bypassed (the thread is
//! marked as applying) and then writes the master's record bytes to its own log
//! verbatim: its log, too, is the stream.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use larder_cluster::net::{Replication, WriteRefused};
use larder_cluster::repl::{stream_len, ReplId};
use larder_persistence::Record;

use crate::durable::{record_of, Codec};
use crate::error::Error;
use crate::info::PersistenceInfo;
use crate::journal::{Journal, LogOp, LogRecord, RewriteSink};

thread_local! {
    /// Set while this thread applies records from the master (or a snapshot).
    static APPLYING: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread deletes keys of slots the node does not serve.
    static CLEANING: Cell<bool> = const { Cell::new(false) };
    /// The hash slot of the operation this thread runs without holding its slot's
    /// move lock (see [`SlotFence`]).
    static OP_SLOT: Cell<u32> = const { Cell::new(NO_SLOT) };
}

/// Runs `f` with the thread-local `flag` set to `value`, restoring it afterwards (also
/// if `f` panics).
fn with_flag<T: Copy + 'static, R>(
    flag: &'static std::thread::LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Reset<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Reset<T> {
        fn drop(&mut self) {
            self.0.with(|a| a.set(self.1));
        }
    }
    let _reset = Reset(flag, flag.with(|a| a.replace(value)));
    f()
}

/// Runs `f` with this thread marked as applying replicated data: the gate and the
/// stream are bypassed and nothing is logged by the cache itself.
pub(crate) fn applying<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&APPLYING, true, f)
}

fn is_applying() -> bool {
    APPLYING.with(|a| a.get())
}

/// Runs `f` (deletes of keys of slots this node does not serve) past the write
/// permission: they are logged and replicated, but need no slot lease, and a master
/// that serves no slots (its gate closed) can still drop what it holds.
pub(crate) fn cleaning<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&CLEANING, true, f)
}

/// No slot: [`OP_SLOT`]'s value outside [`in_slot`].
const NO_SLOT: u32 = u32::MAX;

/// Runs `f` (an operation on a key of `slot`, decided without the slot's move lock)
/// with the thread marked, so the gate refuses its writes if the slot is fenced.
pub(crate) fn in_slot<R>(slot: u16, f: impl FnOnce() -> R) -> R {
    with_flag(&OP_SLOT, u32::from(slot), f)
}

/// The refusal a fenced write gets; the cluster layer retries it through the slot's
/// move lock.
pub(crate) const FENCED: &str = "TRYAGAIN the slot is moving to another node";

/// Slots whose keys move (or moved) to another node: writes to them are refused at
/// the gate, under the shard lock, unless the writer holds the slot's move lock (it
/// then decided where the key lives under that lock). It catches writes that were
/// routed with a routing table from before the move began.
pub(crate) struct SlotFence {
    count: AtomicUsize,
    bits: [AtomicU64; 256],
}

impl SlotFence {
    pub(crate) fn new() -> Self {
        SlotFence {
            count: AtomicUsize::new(0),
            bits: [const { AtomicU64::new(0) }; 256],
        }
    }

    pub(crate) fn set(&self, slot: u16) {
        let bit = 1u64 << (slot % 64);
        if self.bits[usize::from(slot / 64)].fetch_or(bit, Ordering::SeqCst) & bit == 0 {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn clear(&self, slot: u16) {
        let bit = 1u64 << (slot % 64);
        if self.bits[usize::from(slot / 64)].fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether any slot is fenced.
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn contains(&self, slot: u16) -> bool {
        self.count.load(Ordering::SeqCst) != 0
            && self.bits[usize::from(slot / 64)].load(Ordering::SeqCst) & (1u64 << (slot % 64)) != 0
    }

    /// Whether this thread's current operation may not write.
    fn blocks_this_thread(&self) -> bool {
        if self.count.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let slot = OP_SLOT.with(|a| a.get());
        slot != NO_SLOT && self.contains(slot as u16)
    }
}

/// The replication position of the data: the history and the stream offset the data
/// reflects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) replid: Option<ReplId>,
    pub(crate) offset: u64,
}

const META_MAGIC: &[u8; 6] = b"LRPOS1";

impl Position {
    /// The `Meta` record bytes: magic, then replication id (40 bytes) and offset
    /// (u64 LE), or nothing when the position is unknown (the data is no longer a
    /// prefix of any stream: a restart must resync fully).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_MAGIC.len() + ReplId::LEN + 8);
        out.extend_from_slice(META_MAGIC);
        if let Some(id) = self.replid {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&self.offset.to_le_bytes());
        }
        out
    }

    /// Decodes `Meta` bytes written by [`Position::encode`]; `None` for other bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Position> {
        let rest = bytes.strip_prefix(META_MAGIC)?;
        if rest.is_empty() {
            return Some(Position::default());
        }
        if rest.len() != ReplId::LEN + 8 {
            return None;
        }
        let replid = ReplId::from_bytes(&rest[..ReplId::LEN])?;
        let offset = u64::from_le_bytes(rest[ReplId::LEN..].try_into().ok()?);
        Some(Position {
            replid: Some(replid),
            offset,
        })
    }

    /// Follows recovery: a `Meta` sets the position, any other record advances it by
    /// its stream length.
    pub(crate) fn observe(&mut self, r: &Record) {
        match r {
            Record::Meta(bytes) => {
                if let Some(p) = Position::decode(bytes) {
                    *self = p;
                }
            }
            r => self.offset += stream_len(r.encoded_len()),
        }
    }
}

/// What the journal and the node's dataset share.
pub(crate) struct Shared<K, V> {
    /// The node's own log, if it is durable.
    pub(crate) aof: Option<Box<dyn Journal<K, V>>>,
    /// Set once the node has started; writes are refused before.
    pub(crate) repl: OnceLock<Arc<Replication>>,
    /// Orders log writes and stream feeds; holds the data's stream position.
    pub(crate) pos: Mutex<Position>,
    /// Slots whose writes are refused unless made under the slot's move lock.
    pub(crate) fence: SlotFence,
}

impl<K, V> Shared<K, V> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Position> {
        self.pos.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the position to the log (under the caller's lock).
    pub(crate) fn log_position(&self, pos: &Position) -> Result<(), Error> {
        if let Some(aof) = &self.aof {
            let seq = aof.write(vec![Record::Meta(pos.encode())], false)?;
            aof.wait(seq)?;
        }
        Ok(())
    }

    /// Logs records received from the master verbatim and moves the position past
    /// them (a replica).
    pub(crate) fn log_replicated(
        &self,
        pos: &mut Position,
        records: Vec<Record>,
        end: u64,
    ) -> Result<(), Error> {
        pos.offset = end;
        if let Some(aof) = &self.aof {
            if !records.is_empty() {
                aof.write(records, false)?;
            }
        }
        Ok(())
    }
}

/// The cache's journal on a cluster node.
pub(crate) struct ClusterJournal<K, V> {
    pub(crate) shared: Arc<Shared<K, V>>,
}

fn refused(e: WriteRefused) -> Error {
    Error::Cluster(e.to_string())
}

impl<K: Codec + 'static, V: Codec + 'static> Journal<K, V> for ClusterJournal<K, V> {
    fn check(&self) -> Result<(), Error> {
        if !is_applying() {
            match self.shared.repl.get() {
                Some(_) if CLEANING.with(|c| c.get()) => {}
                Some(r) => r.check_write().map_err(refused)?,
                None => return Err(Error::Cluster("CLUSTERDOWN the node is starting".into())),
            }
            if self.shared.fence.blocks_this_thread() {
                return Err(Error::Cluster(FENCED.into()));
            }
        }
        match &self.shared.aof {
            Some(aof) => aof.check(),
            None => Ok(()),
        }
    }

    fn record(&self, op: LogOp<'_, K, V>) -> Result<LogRecord, Error> {
        record_of(op)
    }

    fn write(&self, mut records: Vec<LogRecord>, atomic: bool) -> Result<u64, Error> {
        if records.is_empty() || is_applying() {
            // A replica logs its master's bytes itself, after applying them.
            return Ok(0);
        }
        if atomic && records.len() > 1 {
            records = vec![Record::Multi(records)];
        }
        let Some(repl) = self.shared.repl.get() else {
            return Err(Error::Cluster("CLUSTERDOWN the node is starting".into()));
        };
        let Some(aof) = &self.shared.aof else {
            // No log to keep in step with the stream: the stream's own lock orders
            // the records, and the position matters only to a log.
            for r in &records {
                repl.feed(r.encode()).map_err(refused)?;
            }
            // The key and value buffers serve the next write's encoding.
            crate::durable::recycle(records);
            return Ok(0);
        };
        let payloads: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
        let mut pos = self.shared.lock();
        let seq = aof.write(records, false)?;
        for p in payloads {
            // Refused only if the record is too large for a replication message or
            // the role changed after the gate was checked (the driver closes the gate
            // and waits for in-flight writes before it changes the role, so this is
            // the too-large case).
            pos.offset = repl.feed(p).map_err(refused)?;
        }
        Ok(seq)
    }

    fn wait(&self, seq: u64) -> Result<(), Error> {
        match &self.shared.aof {
            Some(aof) => aof.wait(seq),
            None => Ok(()),
        }
    }

    fn info(&self) -> Option<PersistenceInfo> {
        self.shared.aof.as_ref().and_then(|a| a.info())
    }

    fn begin_rewrite(&self) -> Result<Box<dyn RewriteSink<K, V>>, Error> {
        let Some(aof) = &self.shared.aof else {
            return Err(Error::NotDurable);
        };
        // The new incr file starts with the position the new base will reflect with
        // it: nothing is logged between the switch and the `Meta`.
        let pos = self.shared.lock();
        let sink = aof.begin_rewrite()?;
        self.shared.log_position(&pos)?;
        Ok(sink)
    }

    fn rewrite_due(&self, now_ms: u64) -> bool {
        self.shared
            .aof
            .as_ref()
            .is_some_and(|a| a.rewrite_due(now_ms))
    }

    fn rewrite_done(&self, now_ms: u64, ok: bool) {
        if let Some(a) = &self.shared.aof {
            a.rewrite_done(now_ms, ok);
        }
    }

    fn sync(&self) -> Result<(), Error> {
        match &self.shared.aof {
            Some(a) => a.sync(),
            None => Ok(()),
        }
    }

    fn set_fsync(&self, fsync: larder_persistence::FsyncPolicy) -> Result<(), Error> {
        match &self.shared.aof {
            Some(a) => a.set_fsync(fsync),
            None => Err(Error::NotDurable),
        }
    }

    fn save_rules(&self) -> Result<Vec<(std::time::Duration, u64)>, Error> {
        match &self.shared.aof {
            Some(a) => a.save_rules(),
            None => Err(Error::NotDurable),
        }
    }

    fn set_save_rules(&self, rules: Vec<(std::time::Duration, u64)>) -> Result<(), Error> {
        match &self.shared.aof {
            Some(a) => a.set_save_rules(rules),
            None => Err(Error::NotDurable),
        }
    }
}
