//! Failure detection: failure reports from gossip, PFAIL -> FAIL on a majority of
//! masters, FAIL broadcast, and clearing FAIL the way Redis does.

use super::*;
use crate::proto::codec::Gossip;

/// Most nodes a table holds. Redis recommends clusters below 1000 nodes; the cap keeps a
/// misbehaving peer from filling memory with invented handshakes.
const MAX_NODES: usize = 4096;

impl Node {
    /// Number of masters serving slots, and how many of them make a majority.
    pub(super) fn quorum(&self) -> (usize, usize) {
        let size = self.nodes.values().filter(|r| r.is_voting_master()).count();
        (size, size / 2 + 1)
    }

    /// Reads the gossip section: failure reports from masters, and unknown nodes to
    /// greet.
    pub(super) fn process_gossip(&mut self, now: Instant, from: NodeId, gossip: &[Gossip]) {
        let sender_is_master = self.nodes.get(&from).is_some_and(|r| r.is_master());
        for g in gossip {
            if g.node == self.me {
                continue;
            }
            match self.nodes.get_mut(&g.node) {
                Some(rec) => {
                    if !sender_is_master {
                        continue;
                    }
                    if g.flags.intersects(NodeFlags::PFAIL | NodeFlags::FAIL) {
                        rec.fail_reports.add(from, now);
                        self.mark_failing_if_needed(now, g.node);
                    } else {
                        rec.fail_reports.remove(from);
                    }
                }
                None => {
                    if g.flags.contains(NodeFlags::NOADDR)
                        || g.addr.is_empty()
                        || self.is_banned_now(now, g.node)
                        || self.nodes.len() >= MAX_NODES
                    {
                        continue;
                    }
                    // Start a handshake: we will MEET it until it answers.
                    let flags = NodeFlags::HANDSHAKE | NodeFlags::MASTER;
                    self.nodes
                        .insert(g.node, NodeRecord::new(g.node, g.addr.clone(), flags, now));
                }
            }
        }
    }

    fn is_banned_now(&self, now: Instant, id: NodeId) -> bool {
        self.banned.get(&id).is_some_and(|until| *until > now)
    }

    /// Redis's `markNodeAsFailingIfNeeded`: a node we see as PFAIL becomes FAIL when a
    /// majority of slot-serving masters (us included, if we are one) report it within
    /// `2 * node_timeout`.
    pub(super) fn mark_failing_if_needed(&mut self, now: Instant, id: NodeId) {
        let (_, needed) = self.quorum();
        let validity = 2 * self.config.node_timeout;
        let i_count = self.myself().is_voting_master();
        let Some(rec) = self.nodes.get_mut(&id) else {
            return;
        };
        if !rec.flags.contains(NodeFlags::PFAIL) || rec.flags.contains(NodeFlags::FAIL) {
            return;
        }
        let failures = rec.fail_reports.count_valid(now, validity) + usize::from(i_count);
        if failures < needed {
            return;
        }
        rec.flags.remove(NodeFlags::PFAIL);
        rec.flags.insert(NodeFlags::FAIL);
        rec.fail_time = now;
        self.dirty = true;
        self.events.push_back(Event::NodeFailed(id));
        // Everyone learns at once; the FAIL flag is what lets a replica start.
        let targets: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|r| r.id != self.me && r.id != id && !r.in_handshake())
            .map(|r| r.id)
            .collect();
        for to in targets {
            self.push(to, Body::Fail { node: id }, 0);
        }
        self.update_state(now);
    }

    /// A FAIL message: believe it (Redis does not re-check the majority).
    pub(super) fn process_fail(&mut self, now: Instant, id: NodeId) {
        if id == self.me {
            return;
        }
        let Some(rec) = self.nodes.get_mut(&id) else {
            return;
        };
        if rec.flags.contains(NodeFlags::FAIL) {
            return;
        }
        rec.flags.remove(NodeFlags::PFAIL);
        rec.flags.insert(NodeFlags::FAIL);
        rec.fail_time = now;
        self.dirty = true;
        self.events.push_back(Event::NodeFailed(id));
        self.update_state(now);
    }

    /// Redis's `clearNodeFailureIfNeeded`, on a pong from a FAIL node: a replica or a
    /// master without slots is cleared at once; a master with slots only after
    /// `2 * node_timeout`, when it is clear nobody failed it over.
    pub(super) fn clear_failure_if_needed(&mut self, now: Instant, id: NodeId) {
        let undo = 2 * self.config.node_timeout;
        let Some(rec) = self.nodes.get_mut(&id) else {
            return;
        };
        if !rec.flags.contains(NodeFlags::FAIL) {
            return;
        }
        let serving = rec.is_master() && !rec.slots.is_empty();
        if !serving || now.since(rec.fail_time) > undo {
            rec.flags.remove(NodeFlags::FAIL);
            rec.fail_reports.clear();
            self.dirty = true;
            self.events.push_back(Event::FailCleared(id));
            self.update_state(now);
        }
    }
}
