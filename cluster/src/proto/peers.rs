//! What a node knows about each node of the cluster (itself included), and the
//! failure reports other masters sent about them.

use std::collections::BTreeMap;

use super::id::{NodeFlags, NodeId};
use super::slots::SlotSet;
use super::time::Instant;

/// Reports from masters that a node is PFAIL or FAIL, each with the time it was last
/// repeated. Reports older than `2 * node_timeout` no longer count.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailureReports(BTreeMap<NodeId, Instant>);

impl FailureReports {
    /// Records (or refreshes) a report from `reporter`.
    pub(crate) fn add(&mut self, reporter: NodeId, now: Instant) {
        self.0.insert(reporter, now);
    }
    /// Withdraws `reporter`'s report (it now sees the node as healthy).
    pub(crate) fn remove(&mut self, reporter: NodeId) {
        self.0.remove(&reporter);
    }
    /// Drops reports older than `validity` and returns how many remain.
    pub(crate) fn count_valid(&mut self, now: Instant, validity: u64) -> usize {
        self.0.retain(|_, at| now.since(*at) <= validity);
        self.0.len()
    }
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
    pub(crate) fn reporters(&self) -> impl Iterator<Item = &NodeId> {
        self.0.keys()
    }
}

/// Everything one node tracks about one node.
#[derive(Clone, Debug)]
pub(crate) struct NodeRecord {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) flags: NodeFlags,
    pub(crate) master: Option<NodeId>,
    pub(crate) config_epoch: u64,
    pub(crate) repl_offset: u64,
    /// Mirror of the slot table's entries owned by this node (kept in sync by
    /// `Node::assign_slot`), so counts and headers need no scan of 16384 owners.
    pub(crate) slots: SlotSet,
    /// When the oldest unanswered ping was sent; `None` when nothing is pending.
    pub(crate) ping_sent: Option<Instant>,
    /// When a ping was last (re)sent, to pace retransmissions.
    pub(crate) last_ping_out: Instant,
    pub(crate) pong_received: Instant,
    /// Last time any message arrived from it.
    pub(crate) data_received: Instant,
    pub(crate) fail_time: Instant,
    pub(crate) fail_reports: FailureReports,
    /// Last time this node voted for a replica of this (master) node.
    pub(crate) voted_time: Option<Instant>,
    /// Last time this node acked this master's slot claims (granting it a write lease).
    pub(crate) last_ack_sent: Option<Instant>,
    /// This (master) node may write on our word until then: the `sent_at` of its ping
    /// we acked, plus the lease. Kept by the master about each peer master.
    pub(crate) lease_until: Instant,
    pub(crate) created: Instant,
    /// Redis's `CLUSTER_NODE_MIGRATE_TO`, kept locally (never on the wire): this master
    /// has had replicas, or was a replica promoted in place of its master, so it may be
    /// an orphan that replica migration should fill.
    pub(crate) migrate_to: bool,
    /// How many replicas pointed at this node when the cron last looked; a drop to
    /// zero (its replicas moved elsewhere or were forgotten) clears `migrate_to`.
    pub(crate) replicas_seen: usize,
    /// Since when this master has been orphaned in this node's view (Redis's
    /// `orphaned_time`); `None` while it is not.
    pub(crate) orphaned_since: Option<Instant>,
    /// Since when this node, a master turned replica in this node's view, has held
    /// slots it served as a master. They stay bound to it, unclaimed, until a master
    /// claims them or node_timeout passes (`Node::release_held_slots`). Only meaningful
    /// while it is a replica with slots.
    pub(crate) held_since: Option<Instant>,
}

impl NodeRecord {
    pub(crate) fn new(id: NodeId, addr: String, flags: NodeFlags, now: Instant) -> Self {
        NodeRecord {
            id,
            addr,
            flags,
            master: None,
            config_epoch: 0,
            repl_offset: 0,
            slots: SlotSet::new(),
            ping_sent: None,
            last_ping_out: Instant::ZERO,
            pong_received: Instant::ZERO,
            data_received: now,
            fail_time: Instant::ZERO,
            fail_reports: FailureReports::default(),
            voted_time: None,
            last_ack_sent: None,
            lease_until: Instant::ZERO,
            created: now,
            migrate_to: false,
            replicas_seen: 0,
            orphaned_since: None,
            held_since: None,
        }
    }

    pub(crate) fn is_master(&self) -> bool {
        self.flags.contains(NodeFlags::MASTER)
    }
    pub(crate) fn is_failing(&self) -> bool {
        self.flags.intersects(NodeFlags::PFAIL | NodeFlags::FAIL)
    }
    pub(crate) fn in_handshake(&self) -> bool {
        self.flags.contains(NodeFlags::HANDSHAKE)
    }
    /// A master serving at least one slot: the nodes whose majority decides FAIL,
    /// elections and write safety.
    pub(crate) fn is_voting_master(&self) -> bool {
        self.is_master() && !self.slots.is_empty() && !self.in_handshake()
    }

    pub(crate) fn view(&self) -> NodeView {
        NodeView {
            id: self.id,
            addr: self.addr.clone(),
            flags: self.flags,
            master: self.master,
            config_epoch: self.config_epoch,
            repl_offset: self.repl_offset,
            slot_count: self.slots.len(),
            failure_reports: self.fail_reports.reporters().count(),
        }
    }
}

/// A snapshot of what a node knows about one node, like a line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node's id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Its flags.
    pub flags: NodeFlags,
    /// The master it replicates.
    pub master: Option<NodeId>,
    /// Its configEpoch (for a replica, the last one it announced).
    pub config_epoch: u64,
    /// Its last announced replication offset.
    pub repl_offset: u64,
    /// How many slots it serves.
    pub slot_count: usize,
    /// How many masters currently report it failing.
    pub failure_reports: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rng::Rng;

    #[test]
    fn reports_expire() {
        let mut rng = Rng::new(1);
        let (a, b) = (NodeId::random(&mut rng), NodeId::random(&mut rng));
        let mut r = FailureReports::default();
        r.add(a, Instant::from_millis(0));
        r.add(b, Instant::from_millis(1500));
        assert_eq!(r.count_valid(Instant::from_millis(2000), 2000), 2);
        assert_eq!(r.count_valid(Instant::from_millis(2001), 2000), 1);
        r.remove(b);
        assert_eq!(r.count_valid(Instant::from_millis(2001), 2000), 0);
    }
}
