//! The routing table a node publishes for its application: slot owners, slot moves and
//! the nodes it knows, as of the last change the state machine reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::proto::{
    ClusterState, KeyPresence, Node, NodeFlags, NodeId, NodeView, Route, Slot, SlotTable,
};

/// One node's view of where slots live, published by the driver.
#[derive(Clone, Debug)]
pub struct Routing {
    /// This node.
    pub me: NodeId,
    /// Whether this node's cluster state is OK.
    pub cluster_ok: bool,
    /// Whether this node is a master.
    pub is_master: bool,
    /// Slot owners and MIGRATING/IMPORTING state.
    pub slots: SlotTable,
    /// Every known node, this one included.
    pub nodes: Vec<NodeView>,
}

impl Routing {
    /// The table as `node` sees it now.
    pub fn of(node: &Node) -> Routing {
        Routing {
            me: node.id(),
            cluster_ok: node.state() == ClusterState::Ok,
            is_master: node.is_master(),
            slots: node.slots().clone(),
            nodes: node.nodes().collect(),
        }
    }

    /// Where a command on `slot` goes, decided as the node itself decides it.
    pub fn route(&self, slot: Slot, keys: KeyPresence, asking: bool) -> Route {
        self.slots
            .route(self.me, slot, keys, asking, self.cluster_ok)
    }

    /// A known node.
    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The replicas of `master` that are not failing.
    pub fn replicas_of(&self, master: NodeId) -> impl Iterator<Item = &NodeView> + '_ {
        self.nodes.iter().filter(move |n| {
            n.master == Some(master)
                && !n
                    .flags
                    .intersects(NodeFlags::FAIL | NodeFlags::PFAIL | NodeFlags::MASTER)
        })
    }
}

/// Where the driver publishes the routing table: the table, and a version bumped on
/// every publication, so readers can keep a copy and check with one atomic load
/// whether it is still current.
#[derive(Debug)]
pub(crate) struct RoutingCell {
    version: AtomicU64,
    table: RwLock<Arc<Routing>>,
}

impl RoutingCell {
    pub(crate) fn new(table: Routing) -> Self {
        RoutingCell {
            version: AtomicU64::new(1),
            table: RwLock::new(Arc::new(table)),
        }
    }

    pub(crate) fn publish(&self, table: Routing) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn load(&self) -> Arc<Routing> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}
