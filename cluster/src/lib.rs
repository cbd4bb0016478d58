//! larder's peer mesh.
//!
//! [`proto`] holds the Redis Cluster control plane as a deterministic state machine: no
//! sockets, no clocks, no threads. A driver feeds it decoded messages and the current
//! time, and takes out messages to send, events, and the next time it wants to be woken.
//! [`sim`] drives many of those state machines over a seeded, faulty virtual network and
//! checks the cluster's safety invariants at every step. [`repl`] is replication, also
//! sans-IO; `net` (feature `net`) runs both over QUIC with mutual TLS.

#[cfg(feature = "net")]
pub mod net;
pub mod proto;
pub mod repl;
pub mod sim;
mod wire;
