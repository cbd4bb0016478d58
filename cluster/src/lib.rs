//! larder's peer mesh.
//!
//! [`proto`] holds the Redis Cluster control plane as a deterministic state machine: no
//! sockets, no clocks, no threads. A driver feeds it decoded messages and the current
//! time, and takes out messages to send, events, and the next time it wants to be woken.
//! [`sim`] drives many of those state machines over a seeded, faulty virtual network and
//! checks the cluster's safety invariants at every step.

pub mod proto;
pub mod sim;
