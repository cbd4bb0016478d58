//! What a node saves so a restart keeps its epochs, vote and configuration.

use super::*;

/// What must survive a restart, like Redis's `nodes.conf`: epochs, the vote, the node
/// table with slot owners, and slot moves. The driver saves it whenever
/// [`Node::poll_save`] returns one, before sending that call's transmits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistentState {
    /// This node's id.
    pub id: NodeId,
    /// currentEpoch.
    pub current_epoch: u64,
    /// The last epoch this node voted in.
    pub last_vote_epoch: u64,
    /// Every known node (this one included).
    pub nodes: Vec<PersistedNode>,
    /// MIGRATING slots of this node.
    pub migrating: Vec<(Slot, NodeId)>,
    /// IMPORTING slots of this node.
    pub importing: Vec<(Slot, NodeId)>,
    /// Masters this node promised not to acknowledge until their configEpoch reaches
    /// the epoch given (it voted to replace them).
    pub withheld_acks: Vec<(NodeId, u64)>,
}

/// One node of a [`PersistentState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedNode {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// The master it replicates, `None` for a master.
    pub master: Option<NodeId>,
    /// Its configEpoch.
    pub config_epoch: u64,
    /// The slots it serves.
    pub slots: SlotSet,
}
