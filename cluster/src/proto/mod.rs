//! The Redis Cluster control plane as a sans-IO state machine.
//!
//! Everything here is deterministic: no sockets, no clocks, no threads. A [`Node`] is
//! driven by [`Node::handle_message`] (or [`Node::handle_bytes`]) and
//! [`Node::handle_timeout`], each given the current [`Instant`]; it answers through
//! [`Node::poll_transmit`], [`Node::poll_event`] and [`Node::poll_timeout`]. The shape
//! is quinn-proto's: the transport (QUIC, in `net`) owns sockets and timers, this module
//! owns the protocol.
//!
//! Modules, one job each:
//! - [`slots`]: CRC16, hash tags, slot bitmaps;
//! - [`codec`]: the wire format;
//! - `table`: slot ownership and MIGRATING/IMPORTING state; [`Route`] decisions;
//! - `peers`: what a node knows about each node, failure reports;
//! - `node`: the state machine, split into gossip, failure detection, election,
//!   manual failover, replica migration and write safety.

pub mod codec;
mod config;
mod id;
mod node;
mod peers;
mod rng;
pub mod slots;
mod table;
mod time;

pub use codec::{
    Body, DecodeError, EncodeError, Gossip, Header, Message, MigrationState, Replacement,
};
pub use config::Config;
pub use id::{NodeFlags, NodeId};
pub use node::{
    ClusterState, CommandError, Event, FailoverMode, HandleError, Node, PersistedNode,
    PersistentState, Rejected, Transmit, WithheldAck, WriteRefusal,
};
pub use peers::NodeView;
pub use rng::Rng;
pub use slots::{crc16, key_hash_slot, Slot, SlotSet, SLOTS};
pub use table::{KeyPresence, Route, SlotTable};
pub use time::Instant;
