//! Replication as a sans-IO state machine: a master's stream of write records with
//! offsets, the replication backlog, partial resynchronisation (PSYNC with replication
//! ids), and full synchronisation from a snapshot.
//!
//! The semantics are Redis's. A master ([`ReplicationSource`]) numbers the bytes of its
//! write stream (`master_repl_offset`; a record of `n` bytes takes `n + 4`, see
//! [`RECORD_OVERHEAD`]) and keeps the latest `backlog_size` bytes of it in a
//! [`Backlog`]. A replica ([`ReplicationSink`]) says which history ([`ReplId`]) it
//! holds and up to which offset; the master continues from there if it can
//! ([`PsyncDecision::Continue`]), or sends a snapshot and then the records after it.
//! Replicas acknowledge their offset, which gives lag, `min-replicas-to-write` and
//! `WAIT`. A promoted replica keeps its old id as a secondary id so the other replicas
//! of the old master continue from it without a full sync.
//!
//! Both sides are driven quinn-proto style: `handle_message(now, ..)`,
//! `handle_timeout(now)`, commands, then `poll_transmit`, `poll_event`, `poll_timeout`.
//! Time is [`Instant`](crate::proto::Instant), given by the caller. Records and
//! snapshots are opaque bytes: this module never looks inside them.
//!
//! Modules, one job each: `id` (replication ids), `backlog` (the ring of records),
//! [`codec`] (messages and their wire format), `config`, `source` (master), `sink`
//! (replica).

mod backlog;
pub mod codec;
mod config;
mod id;
mod sink;
mod source;

pub use backlog::{stream_len, Backlog, RECORD_OVERHEAD};
pub use codec::{DecodeError, EncodeError, ReplMessage};
pub use config::ReplConfig;
pub use id::ReplId;
pub use sink::{ReplicationSink, SinkEvent, SinkInfo, SinkStatus};
pub use source::{
    CommandError, DropReason, FullReason, PsyncDecision, ReplicaInfo, ReplicaStatus,
    ReplicationSource, SourceEvent, SourceInfo, Transmit,
};

/// Names one [`ReplicationSource::wait`] call in its [`SourceEvent::WaitDone`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitId(pub u64);

/// Why a message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The bytes are not a replication message.
    #[error("undecodable replication message: {0}")]
    Decode(#[from] DecodeError),
    /// A message this side never receives (e.g. PSYNC sent to a replica).
    #[error("{message} is not a message a {role} receives")]
    Unexpected {
        /// The message's name.
        message: &'static str,
        /// "master" or "replica".
        role: &'static str,
    },
}
