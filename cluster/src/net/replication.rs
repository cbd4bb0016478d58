//! Replication over the mesh: the driver runs [`crate::repl`]'s master or replica side
//! next to the cluster state machine, switches between them when the node's role
//! changes, and hands the data to the application through [`Dataset`].
//!
//! The application side is synchronous and called from three places:
//! - its write path calls [`Replication::feed`] (a master appends a record to the
//!   stream; the driver is woken to send it);
//! - the driver calls [`Dataset::apply`], [`Dataset::load`] and [`Dataset::position`]
//!   on a replica, in stream order, on the driver task (a replica acknowledges only
//!   what it applied);
//! - a full sync runs [`Dataset::snapshot`] on a blocking thread.
//!
//! Writes are gated: [`Replication::check_write`] says whether this node may accept a
//! write now. The driver computes it from the cluster state machine (master, slots
//! held, quorum lease, manual-failover pause) and from `min_replicas_to_write`, for a
//! short horizon ahead; when permission is withdrawn it calls [`Dataset::barrier`] so
//! every write that passed the old gate is in the stream before, for example, a manual
//! failover reads the offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use crate::proto::{Instant, NodeId};
use crate::repl::{
    ReplConfig, ReplId, ReplicationSink, ReplicationSource, SinkInfo, SourceInfo, WaitId,
};

/// What replication needs from the application's data. Payloads are opaque bytes.
pub trait Dataset: Send + Sync + 'static {
    /// A master: writes the whole dataset as a snapshot, in chunks, through `chunk`.
    /// Called on a blocking thread right after the stream offset was taken: every write
    /// fed up to that offset must be in the snapshot (later ones may be too; they are
    /// replayed after it, so they must be idempotent). When `chunk` returns false the
    /// transfer was abandoned: stop and return.
    fn snapshot(&self, chunk: &mut dyn FnMut(Vec<u8>) -> bool) -> Result<(), String>;
    /// A replica: applies one record, which occupies the stream from `offset`.
    fn apply(&self, offset: u64, record: &[u8]) -> Result<(), String>;
    /// A replica: replaces the whole dataset with `snapshot`, which reflects the stream
    /// of `replid` up to `offset`.
    fn load(&self, replid: ReplId, offset: u64, snapshot: Vec<u8>) -> Result<(), LoadFailure>;
    /// The stream position of the data changed without a record (promotion to master:
    /// a new id; a partial resync under a new id): the data reflects `replid` up to
    /// `offset` from now on.
    fn position(&self, replid: ReplId, offset: u64);
    /// Returns once every write that passed [`Replication::check_write`] before the call
    /// has been fed (for example by taking and releasing every shard lock).
    fn barrier(&self);
}

/// Why [`Dataset::load`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadFailure {
    /// The snapshot was refused before the data changed (it does not decode): the
    /// replica asks for a new full sync.
    #[error("snapshot refused: {0}")]
    Rejected(String),
    /// The data was replaced only in part (for example entries refused by the memory
    /// bound); the replica keeps streaming, its data differs from its master's.
    #[error("snapshot applied in part: {0}")]
    Partial(String),
}

/// How replication starts on a node.
#[derive(Clone)]
pub struct ReplSetup {
    /// The data.
    pub dataset: Arc<dyn Dataset>,
    /// Backlog size, timeouts, `min_replicas_to_write`, ...
    pub config: ReplConfig,
    /// The history the data holds (restored from the application's own persistence):
    /// the node continues it as a master, or asks to continue it as a replica.
    pub resume: Option<(ReplId, u64)>,
}

impl std::fmt::Debug for ReplSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplSetup")
            .field("config", &self.config)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

/// Why a write or a feed was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteRefused {
    /// The gate is closed; the text says why (Redis's error words first:
    /// `READONLY`, `CLUSTERDOWN`, `NOREPLICAS`, ...).
    #[error("{0}")]
    Refused(String),
    /// The record is larger than a replication message can carry.
    #[error("record too large to replicate: {0}")]
    TooLarge(String),
}

/// The replication role of this node.
pub(crate) enum Role {
    Master(ReplicationSource),
    Replica {
        sink: ReplicationSink,
        master: NodeId,
    },
    /// Between a shutdown and the end of the driver.
    Stopped,
}

/// A node's replication figures, for `info()`.
#[derive(Clone, Debug)]
pub enum ReplInfo {
    /// This node is a master.
    Master(SourceInfo),
    /// This node replicates `master`.
    Replica {
        /// The master.
        master: NodeId,
        /// Its figures.
        info: SinkInfo,
    },
}

/// The part of replication shared between the driver and the application's threads.
pub struct Replication {
    pub(crate) role: Mutex<Role>,
    pub(crate) notify: Notify,
    origin: std::time::Instant,
    /// Milliseconds since `origin` before which writes are allowed (0: never).
    writable_until: AtomicU64,
    refusal: Mutex<String>,
    pub(crate) waiters: Mutex<HashMap<WaitId, oneshot::Sender<usize>>>,
    /// Partial resyncs served (master) or made (replica).
    pub(crate) partial_syncs: AtomicU64,
    /// Full resyncs served (master) or made (replica).
    pub(crate) full_syncs: AtomicU64,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

impl Replication {
    pub(crate) fn new(role: Role, origin: std::time::Instant) -> Self {
        Replication {
            role: Mutex::new(role),
            notify: Notify::new(),
            origin,
            writable_until: AtomicU64::new(0),
            refusal: Mutex::new("CLUSTERDOWN the node is starting".into()),
            waiters: Mutex::new(HashMap::new()),
            partial_syncs: AtomicU64::new(0),
            full_syncs: AtomicU64::new(0),
        }
    }

    /// Resynchronisations so far, `(partial, full)`: served to replicas while this
    /// node was a master, plus made while it was a replica (Redis's `sync_partial_ok`
    /// and `sync_full`).
    pub fn syncs(&self) -> (u64, u64) {
        (
            self.partial_syncs.load(Ordering::Relaxed),
            self.full_syncs.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The driver's clock (milliseconds since the node started).
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Whether this node may accept a write now; the error says why not.
    pub fn check_write(&self) -> Result<(), WriteRefused> {
        let until = self.writable_until.load(Ordering::Acquire);
        if self.now().as_millis() < until {
            return Ok(());
        }
        if until != 0 {
            // Permission was granted but not renewed in time: the driver is late (its
            // runtime is starved). Refusing is what keeps the lease promise.
            return Err(WriteRefused::Refused(format!(
                "TRYAGAIN write permission lapsed {} ms ago: the node's driver is late",
                self.now().as_millis() - until
            )));
        }
        Err(WriteRefused::Refused(
            self.refusal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        ))
    }

    /// Publishes the gate: writes allowed until `until` (driver time), or refused with
    /// `why`. Returns whether permission was withdrawn by this call.
    pub(crate) fn set_gate(&self, gate: Result<Instant, String>) -> bool {
        match gate {
            Ok(until) => {
                self.writable_until
                    .store(until.as_millis(), Ordering::Release);
                false
            }
            Err(why) => {
                *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = why;
                let was = self.writable_until.swap(0, Ordering::AcqRel);
                was > self.now().as_millis()
            }
        }
    }

    /// A master appends a record to the stream and returns the stream offset after it.
    /// Called by the application's write path, in the order its records must be
    /// applied (under the lock that orders them).
    pub fn feed(&self, record: Vec<u8>) -> Result<u64, WriteRefused> {
        let (offset, replicas) = match &mut *self.role() {
            Role::Master(source) => (
                source
                    .feed(record)
                    .map_err(|e| WriteRefused::TooLarge(e.to_string()))?,
                source.replica_count(),
            ),
            _ => {
                return Err(WriteRefused::Refused(
                    "READONLY this node is a replica".into(),
                ))
            }
        };
        // The driver has something to send only if a replica may want it.
        if replicas > 0 {
            self.notify.notify_one();
        }
        Ok(offset)
    }

    /// The stream position now: the master offset, or the replica's applied offset.
    pub fn offset(&self) -> u64 {
        match &*self.role() {
            Role::Master(s) => s.offset(),
            Role::Replica { sink, .. } => sink.offset(),
            Role::Stopped => 0,
        }
    }

    /// Redis's `WAIT`: resolves with the number of replicas that acknowledged `offset`
    /// once `replicas` did, or when `timeout_ms` passed. On a replica it resolves with
    /// 0 at once.
    pub async fn wait(&self, replicas: usize, offset: u64, timeout_ms: u64) -> usize {
        let rx = {
            let mut role = self.role();
            let Role::Master(source) = &mut *role else {
                return 0;
            };
            let (tx, rx) = oneshot::channel();
            let id = source.wait(self.now(), replicas, offset, timeout_ms);
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx);
            rx
        };
        self.notify.notify_one();
        rx.await.unwrap_or(0)
    }

    /// This node's replication figures.
    pub fn info(&self) -> Option<ReplInfo> {
        let now = self.now();
        match &*self.role() {
            Role::Master(s) => Some(ReplInfo::Master(s.info(now))),
            Role::Replica { sink, master } => Some(ReplInfo::Replica {
                master: *master,
                info: sink.info(now),
            }),
            Role::Stopped => None,
        }
    }
}
