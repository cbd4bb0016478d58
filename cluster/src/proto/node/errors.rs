//! Why inputs, commands and writes are refused.

use super::*;

/// Why a message was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The header names a sender other than the authenticated peer (impersonation).
    #[error("message claims sender {claimed} but came from {authenticated}")]
    SenderMismatch {
        /// The header's sender.
        claimed: NodeId,
        /// The peer the transport authenticated.
        authenticated: NodeId,
    },
    /// The message carries this node's own id.
    #[error("message claims to come from this node")]
    FromMyself,
    /// The sender was forgotten recently (CLUSTER FORGET).
    #[error("sender {0} was forgotten")]
    Forgotten(NodeId),
    /// The sender is unknown and the message type cannot introduce it.
    #[error("sender {0} is unknown")]
    UnknownSender(NodeId),
}

/// Why bytes from a peer were not processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The bytes are not a valid message.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// The message was valid but ignored.
    #[error("message ignored: {0}")]
    Rejected(#[from] Rejected),
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The command needs a replica and this node is a master.
    #[error("this node is a master")]
    NotReplica,
    /// The command needs a master and this node is a replica.
    #[error("this node is a replica")]
    NotMaster,
    /// A replica with no known master.
    #[error("this replica has no known master")]
    NoMaster,
    /// Default manual failover needs a reachable master.
    #[error("the master is down or failed; use FORCE or TAKEOVER")]
    MasterDown,
    /// A slot number past 16383.
    #[error("slot {0} is out of range")]
    SlotOutOfRange(u32),
    /// ADDSLOTS on a slot that already has an owner.
    #[error("slot {slot} is already owned by {owner}")]
    SlotBusy {
        /// The slot.
        slot: Slot,
        /// Its owner.
        owner: NodeId,
    },
    /// The command needs this node to own the slot.
    #[error("slot {0} is not served by this node")]
    NotOwner(Slot),
    /// The command names a node this node does not know.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The command cannot target this node itself.
    #[error("cannot do that to myself")]
    IsMyself,
    /// REPLICATE on a master that still serves slots.
    #[error("this node serves slots; move them away first")]
    HasSlots,
    /// REPLICATE targeting a replica.
    #[error("{0} is not a master")]
    TargetNotMaster(NodeId),
    /// SET-CONFIG-EPOCH once other nodes are known or the epoch is set.
    #[error("config epoch can only be set on a fresh, alone node")]
    EpochLocked,
}

/// Why this node may not accept a write for a slot right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteRefusal {
    /// This node is a replica.
    #[error("this node is a replica")]
    NotMaster,
    /// Another node (or none) serves the slot.
    #[error("slot not served here (owner {0:?})")]
    NotOwner(Option<NodeId>),
    /// The cluster state is FAIL.
    #[error("cluster is down")]
    ClusterDown,
    /// Writes are paused for a manual failover.
    #[error("writes paused for a manual failover")]
    Paused,
    /// Not enough masters acknowledged this node's slots within the lease.
    #[error("only {acked} of the {needed} masters needed acknowledge this node's slots")]
    NoQuorum {
        /// Masters (this one included) whose acknowledgement is current.
        acked: usize,
        /// A majority of slot-serving masters.
        needed: usize,
    },
    /// `min-replicas-to-write` is not met.
    #[error("{healthy} healthy replicas, {needed} required")]
    NotEnoughReplicas {
        /// Replicas heard from within `min_replicas_max_lag`.
        healthy: usize,
        /// `min_replicas_to_write`.
        needed: usize,
    },
}
