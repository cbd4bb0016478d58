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
    /// Masters this node promised not to acknowledge (it voted to replace them): the
    /// master, the election epoch, and the candidate voted for (`None` in a state saved
    /// by a version that did not record it).
    pub withheld_acks: Vec<WithheldAck>,
}

/// One promise of a [`PersistentState`]: this node voted in `epoch` for `candidate` to
/// replace `master`, and acknowledges `master`'s claims no more until the outcome is
/// known (see [`Node`]'s departures from Redis in the cluster documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithheldAck {
    /// The master voted against (this node itself when it voted for its own replica).
    pub master: NodeId,
    /// The election's epoch.
    pub epoch: u64,
    /// The replica voted for, if known.
    pub candidate: Option<NodeId>,
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
