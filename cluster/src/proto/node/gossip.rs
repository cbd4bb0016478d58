//! Message handling and the gossip cadence: who is pinged when, what a header says,
//! how claims in headers update the slot table.

use super::*;
use crate::proto::codec::{mflags, Gossip, Header, Replacement};

impl Node {
    /// The header for a message from this node. A replica announces its master's
    /// slots and configEpoch, as in Redis, so peers learn them from any node of a shard
    /// (none while its master has turned replica: slots that one still holds are not
    /// its own).
    pub(super) fn header(&self, extra_mflags: u8) -> Header {
        let me = self.myself();
        let (config_epoch, slots) = match me.master.and_then(|m| self.nodes.get(&m)) {
            Some(m) if !me.is_master() && m.is_master() => (m.config_epoch, m.slots.clone()),
            Some(m) if !me.is_master() => (m.config_epoch, SlotSet::new()),
            _ => (me.config_epoch, me.slots.clone()),
        };
        let mut mf = extra_mflags;
        if me.is_master() && self.manual.end.is_some() {
            mf |= mflags::PAUSED;
        }
        if !me.is_master() && !self.election_window_open(self.last_now) {
            mf |= mflags::NO_ELECTION;
        }
        let mut flags = NodeFlags::from_bits(
            me.flags.bits()
                & (NodeFlags::MASTER | NodeFlags::REPLICA | NodeFlags::NOFAILOVER).bits(),
        )
        .unwrap_or(NodeFlags::MASTER);
        if self.config.replica_no_failover {
            // Redis's `myself->flags |= NOFAILOVER`: siblings leave this node out of
            // their ranks, and tools show it.
            flags.insert(NodeFlags::NOFAILOVER);
        }
        Header {
            sender: self.me,
            addr: self.addr.clone(),
            flags,
            current_epoch: self.current_epoch,
            config_epoch,
            repl_offset: self.repl_offset,
            master: if me.is_master() { None } else { me.master },
            slots,
            state_ok: self.state == ClusterState::Ok,
            mflags: mf,
            replacements: self.open_replacements(),
        }
    }

    /// The promises this master holds against other masters, announced in every
    /// header so that a replaced master that has not heard of its replacement learns
    /// that it may have been replaced (see `note_replaced`).
    fn open_replacements(&self) -> Vec<Replacement> {
        if !self.is_master() {
            return Vec::new();
        }
        self.withheld_acks
            .iter()
            .filter(|&(&m, _)| m != self.me)
            .filter_map(|(&master, p)| {
                Some(Replacement {
                    master,
                    epoch: p.epoch,
                    candidate: p.candidate?,
                })
            })
            .collect()
    }

    /// A few random healthy nodes plus every PFAIL node, as Redis picks them: enough
    /// that failure reports about a node reach everyone within a few pings.
    fn gossip_for(&mut self, to: NodeId) -> Vec<Gossip> {
        let candidates: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|r| {
                r.id != self.me
                    && r.id != to
                    && !r.in_handshake()
                    && !r.flags.contains(NodeFlags::NOADDR)
                    && !r.flags.contains(NodeFlags::PFAIL)
            })
            .map(|r| r.id)
            .collect();
        let wanted = (self.nodes.len() / 10).max(3).min(candidates.len());
        let mut picked = candidates;
        // Partial Fisher-Yates: the first `wanted` entries become a random sample.
        for i in 0..wanted {
            let j = i + self.rng.below((picked.len() - i) as u64) as usize;
            picked.swap(i, j);
        }
        picked.truncate(wanted);
        picked.extend(
            self.nodes
                .values()
                .filter(|r| r.id != to && r.flags.contains(NodeFlags::PFAIL))
                .map(|r| r.id),
        );
        picked
            .into_iter()
            .filter_map(|id| self.nodes.get(&id))
            .map(|r| Gossip {
                node: r.id,
                addr: r.addr.clone(),
                flags: r.flags,
            })
            .collect()
    }

    /// A master tells its replicas about its slot moves so they survive a failover.
    fn migrations_for(&self, to: NodeId) -> Vec<MigrationState> {
        let is_my_replica = self
            .nodes
            .get(&to)
            .is_some_and(|r| r.master == Some(self.me));
        if !self.is_master() || !is_my_replica {
            return Vec::new();
        }
        let t = &self.table;
        t.migrating()
            .iter()
            .map(|(&slot, &peer)| MigrationState {
                slot,
                migrating: true,
                peer,
            })
            .chain(t.importing().iter().map(|(&slot, &peer)| MigrationState {
                slot,
                migrating: false,
                peer,
            }))
            .collect()
    }

    /// Sends a PING (or MEET, to a node still in handshake) to `to`.
    pub(super) fn send_ping(&mut self, now: Instant, to: NodeId) {
        let Some(rec) = self.nodes.get(&to) else {
            return;
        };
        let meet = rec.in_handshake();
        let gossip = self.gossip_for(to);
        let body = if meet {
            Body::Meet {
                sent_at: now.as_millis(),
                gossip,
            }
        } else {
            Body::Ping {
                sent_at: now.as_millis(),
                gossip,
                migrations: self.migrations_for(to),
            }
        };
        if let Some(rec) = self.nodes.get_mut(&to) {
            // Keep the time of the oldest unanswered ping: a retransmission must not
            // postpone failure detection.
            rec.ping_sent.get_or_insert(now);
            rec.last_ping_out = now;
        }
        self.push(to, body, 0);
    }

    pub(super) fn send_meet_to_addr(&mut self, now: Instant, addr: String) {
        let header = self.header(0);
        let body = Body::Meet {
            sent_at: now.as_millis(),
            gossip: Vec::new(),
        };
        self.transmits.push_back(Transmit {
            to: None,
            addr,
            message: Message { header, body },
        });
    }

    /// Pings every known node now. Used when something others must learn quickly
    /// happened (a promotion, a local PFAIL).
    pub(super) fn broadcast_ping(&mut self, now: Instant) {
        let ids: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&id| id != self.me)
            .collect();
        for id in ids {
            self.send_ping(now, id);
        }
    }

    pub(super) fn send_pong(&mut self, to: NodeId, addr: String, echo: u64, claims_acked: bool) {
        let gossip = self.gossip_for(to);
        let migrations = self.migrations_for(to);
        let header = self.header(0);
        let body = Body::Pong {
            echo,
            claims_acked,
            gossip,
            migrations,
        };
        self.transmits.push_back(Transmit {
            to: Some(to),
            addr,
            message: Message { header, body },
        });
    }

    fn add_node(&mut self, now: Instant, id: NodeId, addr: String, flags: NodeFlags) {
        self.nodes.insert(id, NodeRecord::new(id, addr, flags, now));
        if !flags.contains(NodeFlags::HANDSHAKE) {
            self.events.push_back(Event::NodeAdded(id));
        }
        self.dirty = true;
    }

    fn is_banned(&mut self, now: Instant, id: NodeId) -> bool {
        self.banned.retain(|_, until| *until > now);
        self.banned.contains_key(&id)
    }

    pub(super) fn process_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: Message,
    ) -> Result<(), Rejected> {
        let Message { header: h, body } = msg;
        if h.sender != from {
            return Err(Rejected::SenderMismatch {
                claimed: h.sender,
                authenticated: from,
            });
        }
        if from == self.me {
            return Err(Rejected::FromMyself);
        }
        if self.is_banned(now, from) {
            return Err(Rejected::Forgotten(from));
        }
        let role = if h.master.is_some() {
            NodeFlags::REPLICA
        } else {
            NodeFlags::MASTER
        };
        if !self.nodes.contains_key(&from) {
            match &body {
                Body::Meet { .. } => self.add_node(now, from, h.addr.clone(), role),
                Body::Pong { .. } if self.pending_meets.iter().any(|m| m.addr == h.addr) => {
                    self.pending_meets.retain(|m| m.addr != h.addr);
                    self.add_node(now, from, h.addr.clone(), role);
                }
                Body::Ping { sent_at, .. } => {
                    // Redis answers pings from strangers; it lets them finish a MEET
                    // whose first PONG was lost.
                    self.send_pong(from, h.addr.clone(), *sent_at, false);
                    return Err(Rejected::UnknownSender(from));
                }
                _ => return Err(Rejected::UnknownSender(from)),
            }
        }
        self.process_header(now, from, &h);
        self.note_master_paused(from, &h);
        self.note_candidate_lost(from, &h);
        self.note_replaced(&h);
        match body {
            Body::Ping {
                sent_at,
                gossip,
                migrations,
            } => {
                self.process_gossip(now, from, &gossip);
                self.take_master_migrations(from, migrations);
                let acked = self.acks_claims(now, from, &h);
                self.send_pong(from, h.addr.clone(), sent_at, acked);
            }
            Body::Meet { sent_at, gossip } => {
                self.process_gossip(now, from, &gossip);
                let acked = self.acks_claims(now, from, &h);
                self.send_pong(from, h.addr.clone(), sent_at, acked);
            }
            Body::Pong {
                echo,
                claims_acked,
                gossip,
                migrations,
            } => {
                self.process_pong(now, from, echo, claims_acked);
                self.process_gossip(now, from, &gossip);
                self.take_master_migrations(from, migrations);
            }
            Body::Fail { node } => self.process_fail(now, node),
            Body::Update {
                node,
                config_epoch,
                slots,
            } => self.process_update(now, node, config_epoch, &slots),
            Body::FailoverAuthRequest => self.handle_auth_request(now, from, &h),
            Body::FailoverAuthAck { epoch } => self.handle_auth_ack(now, from, epoch),
            Body::MfStart => self.handle_mfstart(now, from),
        }
        Ok(())
    }

    /// What every message teaches: the sender is alive, its epochs, role, offset and
    /// slot claims; and whether its claims are stale or collide with ours.
    fn process_header(&mut self, now: Instant, from: NodeId, h: &Header) {
        if h.current_epoch > self.current_epoch {
            self.current_epoch = h.current_epoch;
            self.dirty = true;
        }
        let sender_is_master = h.master.is_none();
        let Some(rec) = self.nodes.get_mut(&from) else {
            return;
        };
        rec.data_received = now;
        rec.repl_offset = h.repl_offset;
        if rec.in_handshake() {
            rec.flags.remove(NodeFlags::HANDSHAKE);
            self.events.push_back(Event::NodeAdded(from));
            self.dirty = true;
        }
        if rec.addr != h.addr {
            rec.addr = h.addr.clone();
            self.dirty = true;
        }
        if h.flags.contains(NodeFlags::NOFAILOVER) {
            rec.flags.insert(NodeFlags::NOFAILOVER);
        } else {
            rec.flags.remove(NodeFlags::NOFAILOVER);
        }
        if sender_is_master && h.config_epoch > rec.config_epoch {
            rec.config_epoch = h.config_epoch;
            self.dirty = true;
        }
        // Role changes.
        if sender_is_master && !rec.is_master() {
            rec.flags.remove(NodeFlags::REPLICA);
            rec.flags.insert(NodeFlags::MASTER);
            rec.master = None;
            // A promoted replica took over a shard that had replicas: if it is left
            // without any, replica migration should give it one (Redis sets
            // MIGRATE_TO in `clusterSetNodeAsPrimary`).
            rec.migrate_to = true;
            rec.held_since = None;
            self.dirty = true;
        } else if !sender_is_master && (rec.is_master() || rec.master != h.master) {
            let was_master = rec.is_master();
            rec.flags.remove(NodeFlags::MASTER);
            rec.flags.insert(NodeFlags::REPLICA);
            rec.master = h.master;
            self.dirty = true;
            if was_master && !rec.slots.is_empty() {
                // A master turned replica serves nothing any more, but its slots stay
                // bound to it, unclaimed, instead of being unassigned as Redis's
                // `clusterDelNodeSlots` does: a master that hands over its last slot
                // turns replica, and any message of it may arrive before the taker's
                // claim, which would leave the slots uncovered (cluster state FAIL)
                // until the claim came. The next claimant takes them whatever its
                // configEpoch; if none does within node_timeout they are unassigned
                // (`release_held_slots`).
                rec.held_since = Some(now);
                let held = rec.slots.clone();
                self.table.note_claims(&held, &SlotSet::new());
                self.events.push_back(Event::SlotsChanged);
            }
        }
        if !sender_is_master {
            return;
        }
        let known = self
            .nodes
            .get(&from)
            .map(|r| r.slots != h.slots)
            .unwrap_or(false);
        if known {
            self.update_slots_config_with(now, from, h.config_epoch, &h.slots);
        }
        // Also when its claims match our table: a claim renewed after a reordered
        // message marked it dropped binds the slot again.
        self.note_dropped_claims(from, h);
        if known {
            // The sender still claims slots someone newer owns: tell it (one UPDATE per
            // message, as Redis does). A slot whose owner stopped claiming it is not
            // worth an UPDATE: the owner's config no longer says it has it.
            let stale_owner = h.slots.iter().find_map(|slot| {
                let owner = self.table.owner(slot)?;
                let rec = self.nodes.get(&owner)?;
                (owner != from
                    && !self.table.is_unclaimed(slot)
                    && rec.config_epoch > h.config_epoch)
                    .then_some(owner)
            });
            if let Some(owner) = stale_owner {
                let (config_epoch, slots) = {
                    let r = &self.nodes[&owner];
                    (r.config_epoch, r.slots.clone())
                };
                self.push(
                    from,
                    Body::Update {
                        node: owner,
                        config_epoch,
                        slots,
                    },
                    0,
                );
            }
        }
        self.handle_epoch_collision(now, from);
    }

    /// Slots our table binds to the master `from` that its header `h` does not claim
    /// are marked unclaimed (Redis's `owner_not_claiming_slot`): the owner handed them
    /// over, and the next claimant must be able to take them even with an older
    /// configEpoch than the one the owner has since reached by taking other slots.
    /// Otherwise a node that hears the owner's later bump before the new owner's claim
    /// keeps the old owner for good. The binding stays until a claim arrives, so
    /// routing (MOVED to the old owner, which redirects) and coverage are unchanged.
    ///
    /// Only a header at least as new as the sender's configEpoch we know counts: a
    /// delayed message from before the sender took a slot must not unbind it.
    fn note_dropped_claims(&mut self, from: NodeId, h: &Header) {
        let Some(rec) = self.nodes.get(&from) else {
            return;
        };
        if h.config_epoch < rec.config_epoch {
            return;
        }
        self.table.note_claims(&rec.slots, &h.slots);
    }

    /// Redis's `clusterUpdateSlotsConfigWith`: `sender` claims `slots` at `epoch`; take
    /// every slot that is unclaimed (no owner, or an owner that stopped claiming it)
    /// or whose current owner has an older configEpoch. If that leaves this node's
    /// master (or this master) without slots, follow the new owner.
    pub(super) fn update_slots_config_with(
        &mut self,
        now: Instant,
        sender: NodeId,
        epoch: u64,
        slots: &SlotSet,
    ) {
        if sender == self.me {
            return;
        }
        let my_primary = if self.is_master() {
            Some(self.me)
        } else {
            self.master()
        };
        let mut new_primary = None;
        let mut changed = false;
        for slot in slots.iter() {
            let owner = self.table.owner(slot);
            if owner == Some(sender) || self.table.importing_from(slot).is_some() {
                continue;
            }
            let owner_epoch = owner
                .and_then(|o| self.nodes.get(&o))
                .map(|r| r.config_epoch);
            if self.table.is_unclaimed(slot) || owner_epoch.is_none_or(|e| e < epoch) {
                if owner.is_some() && owner == my_primary {
                    new_primary = Some(sender);
                }
                if owner == Some(self.me) {
                    self.table.set_migrating(slot, None);
                }
                self.assign_slot(slot, Some(sender));
                changed = true;
            }
        }
        if changed {
            self.slots_changed(now);
        }
        let Some(new_primary) = new_primary else {
            return;
        };
        let primary_empty = my_primary
            .and_then(|p| self.nodes.get(&p))
            .is_some_and(|r| r.slots.is_empty());
        if !primary_empty {
            return;
        }
        if self.is_master() {
            self.become_replica_of(now, new_primary);
        } else if self.master() != Some(new_primary) {
            self.myself_mut().master = Some(new_primary);
            self.election = Election::default();
            self.end_manual_failover();
            self.dirty = true;
            self.events.push_back(Event::RoleChanged(Some(new_primary)));
        }
    }

    fn process_update(&mut self, now: Instant, node: NodeId, config_epoch: u64, slots: &SlotSet) {
        let Some(rec) = self.nodes.get_mut(&node) else {
            return;
        };
        if rec.config_epoch >= config_epoch {
            return;
        }
        if !rec.is_master() {
            rec.flags.remove(NodeFlags::REPLICA);
            rec.flags.insert(NodeFlags::MASTER);
            rec.master = None;
            rec.migrate_to = true;
        }
        rec.config_epoch = config_epoch;
        self.dirty = true;
        self.update_slots_config_with(now, node, config_epoch, slots);
    }

    /// Redis's `clusterHandleConfigEpochCollision`: two masters with one configEpoch;
    /// the one with the smaller id takes a new epoch, so all masters end up distinct.
    fn handle_epoch_collision(&mut self, _now: Instant, from: NodeId) {
        let Some(sender) = self.nodes.get(&from) else {
            return;
        };
        if !sender.is_master()
            || !self.is_master()
            || sender.config_epoch != self.myself().config_epoch
        {
            return;
        }
        if from <= self.me {
            return;
        }
        self.current_epoch += 1;
        let e = self.current_epoch;
        self.myself_mut().config_epoch = e;
        self.dirty = true;
        self.events.push_back(Event::ConfigEpochBumped(e));
    }

    fn process_pong(&mut self, now: Instant, from: NodeId, echo: u64, claims_acked: bool) {
        let lease = self.config.lease();
        let Some(rec) = self.nodes.get_mut(&from) else {
            return;
        };
        rec.pong_received = now;
        rec.ping_sent = None;
        if claims_acked && echo != 0 {
            // The lease runs from when *we* sent the ping, on our own clock: the peer
            // acked no earlier than that, and waits a full node_timeout after its last
            // ack before voting to replace us.
            rec.lease_until = rec.lease_until.max(Instant::from_millis(echo) + lease);
        }
        if rec.flags.contains(NodeFlags::PFAIL) {
            rec.flags.remove(NodeFlags::PFAIL);
        } else if rec.flags.contains(NodeFlags::FAIL) {
            self.clear_failure_if_needed(now, from);
        }
    }

    fn take_master_migrations(&mut self, from: NodeId, migrations: Vec<MigrationState>) {
        if !self.is_master() && self.master() == Some(from) {
            self.master_migrations = migrations;
        }
    }

    /// Whether to acknowledge `from`'s slot claims in our pong, granting it a write
    /// lease: it must be a master we see as healthy, own in our table every slot it
    /// claims, and not be a master we voted to replace.
    fn acks_claims(&mut self, now: Instant, from: NodeId, h: &Header) -> bool {
        if h.master.is_some() || self.abstaining() {
            return false;
        }
        if let Some(p) = self.withheld_acks.get(&from) {
            let current = self.nodes.get(&from).map_or(0, |r| r.config_epoch);
            if current < p.epoch {
                return false;
            }
            self.withheld_acks.remove(&from);
            self.dirty = true;
        }
        let Some(rec) = self.nodes.get_mut(&from) else {
            return false;
        };
        if !rec.is_master() || rec.is_failing() || !h.slots.is_subset_of(&rec.slots) {
            return false;
        }
        rec.last_ack_sent = Some(now);
        true
    }
}
