//! The periodic work: pings, PFAIL detection, handshakes and the checks that run
//! on every tick.

use super::*;

impl Node {
    /// The periodic work (Redis's `clusterCron`).
    pub(super) fn cron(&mut self, now: Instant) {
        let nt = self.config.node_timeout;
        let handshake_timeout = nt.max(1000);
        // Handshakes that never completed are dropped.
        let before = self.nodes.len();
        self.nodes
            .retain(|_, r| !(r.in_handshake() && now.since(r.created) > handshake_timeout));
        if self.nodes.len() != before {
            self.dirty = true;
        }
        self.pending_meets
            .retain(|m| now.since(m.since) <= handshake_timeout * 5);
        let resend: Vec<String> = self
            .pending_meets
            .iter_mut()
            .filter(|m| now.since(m.last_sent) >= nt / 4)
            .map(|m| {
                m.last_sent = now;
                m.addr.clone()
            })
            .collect();
        for addr in resend {
            self.send_meet_to_addr(now, addr);
        }

        // Once a second, ping the node with the oldest pong among five random ones.
        if now.since(self.last_random_ping) >= 1000 {
            self.last_random_ping = now;
            let idle: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|r| r.id != self.me && !r.in_handshake() && r.ping_sent.is_none())
                .map(|r| r.id)
                .collect();
            let mut best: Option<(Instant, NodeId)> = None;
            for _ in 0..5.min(idle.len()) {
                let id = idle[self.rng.below(idle.len() as u64) as usize];
                let pong = self.nodes[&id].pong_received;
                if best.is_none_or(|(p, _)| pong < p) {
                    best = Some((pong, id));
                }
            }
            if let Some((_, id)) = best {
                self.send_ping(now, id);
            }
        }

        let mut to_ping = Vec::new();
        let mut new_pfail = Vec::new();
        for rec in self.nodes.values_mut() {
            if rec.id == self.me || rec.flags.contains(NodeFlags::NOADDR) {
                continue;
            }
            match rec.ping_sent {
                Some(_) => {
                    // PFAIL once a ping is outstanding and nothing at all has been heard
                    // for node_timeout (Redis measures from the ping, which can add
                    // half a node_timeout to detection).
                    if !rec.in_handshake() && !rec.is_failing() && now.since(rec.data_received) > nt
                    {
                        rec.flags.insert(NodeFlags::PFAIL);
                        new_pfail.push(rec.id);
                    }
                    // The transport may lose a ping; repeat it (Redis reconnects the
                    // link after node_timeout/2 and pings again).
                    if now.since(rec.last_ping_out) >= nt / 4 {
                        to_ping.push(rec.id);
                    }
                }
                None => {
                    if rec.in_handshake() || now.since(rec.pong_received) > nt / 2 {
                        to_ping.push(rec.id);
                    }
                }
            }
        }
        // A master handing its slots to a replica keeps it informed of its offset.
        if let (Some(replica), true) = (self.manual.replica, self.is_master()) {
            if !to_ping.contains(&replica) {
                to_ping.push(replica);
            }
        }
        for id in to_ping {
            self.send_ping(now, id);
        }
        let any_new_pfail = !new_pfail.is_empty();
        for id in new_pfail {
            self.events.push_back(Event::NodePfail(id));
            self.mark_failing_if_needed(now, id);
        }
        if any_new_pfail && self.is_master() {
            // Spread our failure report now instead of waiting for the next regular
            // pings, so a majority agrees on FAIL about one network delay after
            // node_timeout. Only on a new PFAIL, which bounds the extra traffic.
            self.broadcast_ping(now);
        }
        self.release_held_slots(now);
        self.check_manual_failover(now);
        self.handle_replica_failover(now);
        self.handle_replica_migration(now);
        self.update_state(now);
    }

    /// Slots still bound to a master turned replica (see `process_header`) that no
    /// master claimed within node_timeout are unassigned, as Redis unassigns them at
    /// once: the taker's claim should have come one message later, so it is lost or
    /// the taker is gone, and a replica must not pass for their owner any longer. A
    /// claim that comes later takes them as it takes any unassigned slot.
    pub(super) fn release_held_slots(&mut self, now: Instant) {
        let nt = self.config.node_timeout;
        let expired: Vec<(NodeId, SlotSet)> = self
            .nodes
            .values()
            .filter(|r| {
                r.id != self.me
                    && !r.is_master()
                    && !r.slots.is_empty()
                    && r.held_since.is_none_or(|t| now.since(t) >= nt)
            })
            .map(|r| (r.id, r.slots.clone()))
            .collect();
        if expired.is_empty() {
            return;
        }
        for (id, slots) in expired {
            for slot in slots.iter() {
                self.assign_slot(slot, None);
            }
            if let Some(r) = self.nodes.get_mut(&id) {
                r.held_since = None;
            }
        }
        self.slots_changed(now);
    }
}
