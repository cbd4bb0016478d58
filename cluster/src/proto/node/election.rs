//! Replica elections, votes, and manual failover.

use super::*;
use crate::proto::codec::{mflags, Header};

impl Node {
    /// True while an automatic or manual failover may be scheduled or running.
    pub(super) fn election_pending(&self) -> bool {
        let Some(master) = self.master().and_then(|m| self.nodes.get(&m)) else {
            return false;
        };
        !self.is_master()
            && master.is_master()
            && !master.slots.is_empty()
            && (master.flags.contains(NodeFlags::FAIL) || self.manual.can_start)
    }

    /// This replica's rank among its master's replicas: how many have a better offset
    /// (ties broken by id, so two equal replicas never wait the same time).
    pub(super) fn rank(&self) -> usize {
        let Some(master) = self.master() else {
            return 0;
        };
        self.nodes
            .values()
            .filter(|r| {
                r.id != self.me
                    && r.master == Some(master)
                    && !r.is_master()
                    && !r.flags.contains(NodeFlags::NOFAILOVER)
                    && (r.repl_offset > self.repl_offset
                        || (r.repl_offset == self.repl_offset && r.id < self.me))
            })
            .count()
    }

    /// Redis's `clusterHandleSlaveFailover`.
    pub(super) fn handle_replica_failover(&mut self, now: Instant) {
        let manual = self.manual.end.is_some() && self.manual.can_start;
        let Some(master_id) = self.master() else {
            return;
        };
        if self.is_master() {
            return;
        }
        let Some(master) = self.nodes.get(&master_id) else {
            return;
        };
        let master_failed = master.flags.contains(NodeFlags::FAIL);
        // Automatic failover needs a FAIL master and may be disabled; a manual one
        // needs neither. Either way the master must have had slots to hand over, and
        // still be a master: slots a master turned replica still holds (until their
        // taker's claim arrives) are not its to hand over.
        let automatic_ok = master_failed && !self.config.replica_no_failover;
        if (!manual && !automatic_ok) || !master.is_master() || master.slots.is_empty() {
            return;
        }
        let nt = self.config.node_timeout;
        let mut data_age = now.since(master.data_received);
        if data_age > nt {
            data_age -= nt;
        }
        let factor = self.config.replica_validity_factor;
        if factor > 0 && !manual && data_age > self.config.repl_ping_replica_period + nt * factor {
            // Our data is too old to be a good master (the replica validity factor).
            return;
        }
        let auth_timeout = self.config.auth_timeout();
        let retry = auth_timeout * 2;
        let stale = match self.election.auth_time {
            None => true,
            Some(t) => now > t && now.since(t) > retry,
        };
        if stale {
            let rank = if manual { 0 } else { self.rank() };
            let delay = if manual {
                0
            } else {
                let fixed = self.config.failover_fixed_delay_max.min(nt / 30);
                let random = self
                    .rng
                    .below(self.config.failover_random_delay_max.min(nt / 4).max(1));
                fixed + random + rank as u64 * self.config.failover_rank_delay
            };
            self.election = Election {
                auth_time: Some(now + delay),
                rank,
                ..Election::default()
            };
            // Siblings learn our offset now, so their ranks are right.
            let siblings: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|r| r.id != self.me && r.master == Some(master_id) && !r.is_master())
                .map(|r| r.id)
                .collect();
            for s in siblings {
                if let Some(addr) = self.nodes.get(&s).map(|r| r.addr.clone()) {
                    self.send_pong(s, addr, 0, false);
                }
            }
            if delay > 0 {
                return;
            }
        }
        let Some(auth_time) = self.election.auth_time else {
            return;
        };
        if !self.election.sent && !manual {
            let rank = self.rank();
            if rank > self.election.rank {
                let extra = (rank - self.election.rank) as u64 * self.config.failover_rank_delay;
                self.election.auth_time = Some(auth_time + extra);
                self.election.rank = rank;
                return;
            }
        }
        if now < auth_time || now.since(auth_time) > auth_timeout {
            return;
        }
        if !self.election.sent {
            self.current_epoch += 1;
            self.election.epoch = self.current_epoch;
            self.election.sent = true;
            self.dirty = true;
            self.events
                .push_back(Event::ElectionStarted(self.current_epoch));
            self.request_votes(now);
            return;
        }
        let (_, needed) = self.quorum();
        if self.election.votes.len() >= needed {
            let epoch = self.election.epoch;
            self.take_over_master(now, epoch);
        } else if now.since(self.election.last_request) >= nt / 4 {
            // A lost request or ack would otherwise cost a whole retry period
            // (2 * auth_timeout); voters answer a repeated request idempotently.
            self.request_votes(now);
        }
    }

    /// Asks every master that has not voted yet for its vote in the current election.
    fn request_votes(&mut self, now: Instant) {
        self.election.last_request = now;
        let mf = if self.manual.end.is_some() {
            mflags::FORCEACK
        } else {
            0
        };
        let masters: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|r| {
                r.id != self.me
                    && r.is_master()
                    && !r.in_handshake()
                    && !self.election.votes.contains(&r.id)
            })
            .map(|r| r.id)
            .collect();
        for m in masters {
            self.push(m, Body::FailoverAuthRequest, mf);
        }
    }

    /// The winner (or a TAKEOVER) serves its master's slots under `epoch`.
    pub(super) fn take_over_master(&mut self, now: Instant, epoch: u64) {
        let Some(old) = self.master() else { return };
        if self.myself().config_epoch < epoch {
            self.myself_mut().config_epoch = epoch;
        }
        let me = self.myself_mut();
        me.flags.remove(NodeFlags::REPLICA);
        me.flags.insert(NodeFlags::MASTER);
        me.master = None;
        let slots = self
            .nodes
            .get(&old)
            .map(|r| r.slots.clone())
            .unwrap_or_default();
        for slot in slots.iter() {
            self.assign_slot(slot, Some(self.me));
        }
        // Slot moves the old master told us about continue under us.
        for m in std::mem::take(&mut self.master_migrations) {
            if m.migrating && slots.contains(m.slot) {
                self.table.set_migrating(m.slot, Some(m.peer));
            } else if !m.migrating && !slots.contains(m.slot) {
                self.table.set_importing(m.slot, Some(m.peer));
            }
        }
        self.election = Election {
            auth_time: self.election.auth_time,
            ..Election::default()
        };
        self.end_manual_failover();
        self.dirty = true;
        self.events.push_back(Event::RoleChanged(None));
        self.events.push_back(Event::Promoted(epoch));
        self.events.push_back(Event::SlotsChanged);
        // Pings rather than Redis's pongs: the answers acknowledge our new claims and
        // give us the write lease one round trip after winning.
        self.broadcast_ping(now);
        self.update_state(now);
    }

    /// Redis's `clusterSendFailoverAuthIfNeeded`, plus the lease rule: the vote is
    /// recorded now but its ack leaves only a full node_timeout after we last
    /// acknowledged the old master's claims, and we acknowledge it no more.
    pub(super) fn handle_auth_request(&mut self, now: Instant, from: NodeId, h: &Header) {
        if !self.myself().is_voting_master() || self.abstaining() {
            return;
        }
        // Only a master whose seat a majority confirms right now may vote: a master that
        // was replaced while cut off (and does not know yet) would otherwise lend its
        // old seat to a second majority.
        let (acked, needed) = self.lease_quorum(now);
        if acked < needed {
            return;
        }
        if h.current_epoch < self.current_epoch {
            return;
        }
        if self.last_vote_epoch == self.current_epoch {
            // Already voted in this epoch. The same candidate asking again (its request
            // or our ack was lost) gets the same answer; anyone else gets nothing.
            let repeat =
                self.last_vote_candidate == Some(from) && h.current_epoch == self.last_vote_epoch;
            let deferred = self.pending_votes.iter().any(|v| v.candidate == from);
            if repeat && !deferred {
                let epoch = self.last_vote_epoch;
                self.pending_votes.push(PendingVote {
                    candidate: from,
                    addr: h.addr.clone(),
                    epoch,
                    send_at: now,
                });
                self.send_due_votes(now);
            }
            return;
        }
        let Some(cand) = self.nodes.get(&from) else {
            return;
        };
        let Some(master_id) = cand.master.filter(|_| !cand.is_master()) else {
            return;
        };
        let Some(master) = self.nodes.get(&master_id) else {
            return;
        };
        if !master.is_master() {
            // Its master turned replica: whatever slots it still holds here are on
            // their way to another master, not the candidate's to take.
            return;
        }
        let force = h.mflags & mflags::FORCEACK != 0;
        let nt = self.config.node_timeout;
        if !master.flags.contains(NodeFlags::FAIL) && !force {
            return;
        }
        if master.voted_time.is_some_and(|t| now.since(t) < 2 * nt) {
            return;
        }
        // Every claimed slot must not belong to a newer configuration.
        let stale = h.slots.iter().any(|slot| {
            self.table
                .owner(slot)
                .and_then(|o| self.nodes.get(&o))
                .is_some_and(|o| o.config_epoch > h.config_epoch)
        });
        if stale {
            return;
        }
        let epoch = self.current_epoch;
        self.last_vote_epoch = epoch;
        self.last_vote_candidate = Some(from);
        let last_ack = master.last_ack_sent;
        if let Some(m) = self.nodes.get_mut(&master_id) {
            m.voted_time = Some(now);
        }
        self.withheld_acks.insert(
            master_id,
            Promise {
                epoch,
                candidate: Some(from),
            },
        );
        self.dirty = true;
        self.events.push_back(Event::VoteGranted {
            candidate: from,
            epoch,
        });
        let send_at = last_ack.map_or(now, |t| t + nt).max(now);
        let addr = h.addr.clone();
        self.pending_votes.push(PendingVote {
            candidate: from,
            addr,
            epoch,
            send_at,
        });
        self.send_due_votes(now);
    }

    pub(super) fn send_due_votes(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_votes)
            .into_iter()
            .partition(|v| v.send_at <= now);
        self.pending_votes = later;
        for v in due {
            let header = self.header(0);
            let body = Body::FailoverAuthAck { epoch: v.epoch };
            self.transmits.push_back(Transmit {
                to: Some(v.candidate),
                addr: v.addr,
                message: Message { header, body },
            });
        }
    }

    /// Counts a vote, only for the election running now: an ack carrying an older
    /// epoch (a late answer to a previous attempt) never counts.
    pub(super) fn handle_auth_ack(&mut self, now: Instant, from: NodeId, epoch: u64) {
        let voter_ok = self.nodes.get(&from).is_some_and(|r| r.is_voting_master());
        if voter_ok && !self.is_master() && self.election.sent && epoch == self.election.epoch {
            self.election.votes.insert(from);
            self.handle_replica_failover(now);
        }
    }

    pub(super) fn start_manual_failover(
        &mut self,
        now: Instant,
        mode: FailoverMode,
        master: NodeId,
    ) {
        self.end_manual_failover();
        match mode {
            FailoverMode::Takeover => {
                self.bump_epoch_without_consensus();
                let epoch = self.myself().config_epoch;
                self.take_over_master(now, epoch);
            }
            FailoverMode::Force => {
                self.manual.end = Some(now + self.config.manual_failover_timeout);
                self.manual.can_start = true;
                self.election = Election::default();
            }
            FailoverMode::Default => {
                self.manual.end = Some(now + self.config.manual_failover_timeout);
                self.election = Election::default();
                self.push(master, Body::MfStart, 0);
            }
        }
    }

    /// Master side of a manual failover: pause writes and tell the replica our offset.
    pub(super) fn handle_mfstart(&mut self, now: Instant, from: NodeId) {
        let is_my_replica = self
            .nodes
            .get(&from)
            .is_some_and(|r| r.master == Some(self.me) && !r.is_master());
        if !self.is_master() || !is_my_replica {
            return;
        }
        self.end_manual_failover();
        let end = now + self.config.manual_failover_timeout;
        self.manual.end = Some(end);
        self.manual.replica = Some(from);
        self.events.push_back(Event::WritesPaused(end));
        self.send_ping(now, from);
    }

    /// Timeouts of either side, and the replica noticing it caught up with the paused
    /// master (`clusterHandleManualFailover`).
    pub(super) fn check_manual_failover(&mut self, now: Instant) {
        let Some(end) = self.manual.end else { return };
        if now > end {
            self.end_manual_failover();
            return;
        }
        if self.is_master() || self.manual.can_start {
            return;
        }
        if let Some(offset) = self.manual.master_offset {
            if self.repl_offset >= offset {
                self.manual.can_start = true;
            }
        }
    }

    /// True while this replica's current election could still be won.
    pub(super) fn election_window_open(&self, now: Instant) -> bool {
        match (self.election.sent, self.election.auth_time) {
            (true, Some(t)) => now.since(t) <= self.config.auth_timeout(),
            _ => false,
        }
    }

    /// True while this master has voted for its own replica and does not know the
    /// outcome. Its seat may already belong to that replica, so it grants no leases,
    /// casts no votes and does not count itself (see `write_status`): otherwise a side
    /// of a partition that still counts it could form a second majority.
    pub(super) fn abstaining(&self) -> bool {
        self.withheld_acks
            .get(&self.me)
            .is_some_and(|p| self.myself().config_epoch < p.epoch)
    }

    /// The one trustworthy "it lost" signal short of the winner's claims: the candidate
    /// of a promise says, in its own header, that it is still a replica of the master
    /// it ran against, that its currentEpoch reached the election's, and that no
    /// election of its own is open (`NO_ELECTION`). A candidate counts votes only
    /// while its window is open, and a winner turns master before it sends anything,
    /// so it can no longer win that election: the promise ends. Neither a voter's
    /// promise to withhold acknowledgements from the old master nor the old master's
    /// abstention ends by time: a partition may hide a successful election for any
    /// length of time, and ending the promise then gives the old master a lease
    /// beside the new one's.
    pub(super) fn note_candidate_lost(&mut self, from: NodeId, h: &Header) {
        if h.mflags & mflags::NO_ELECTION == 0 {
            return;
        }
        let Some(master) = h.master else {
            return;
        };
        let before = self.withheld_acks.len();
        self.withheld_acks.retain(|&m, p| {
            !(p.candidate == Some(from) && m == master && h.current_epoch >= p.epoch)
        });
        if self.withheld_acks.len() != before {
            self.dirty = true;
        }
    }

    /// A master that a peer voted to replace (the peer's header lists it among its
    /// open replacements) abstains as if it had voted for that replica itself: its
    /// seat may already be the winner's, and acknowledging others or counting itself
    /// would lend that seat to a second majority (two replaced masters on one side of
    /// a partition could otherwise lease each other their old seats). The abstention
    /// ends the same ways: this master's configEpoch reaches the election's, or the
    /// candidate says it lost.
    pub(super) fn note_replaced(&mut self, h: &Header) {
        if h.master.is_some() || !self.is_master() {
            return;
        }
        let mine = self.myself().config_epoch;
        let Some(r) = h
            .replacements
            .iter()
            .filter(|r| r.master == self.me && r.epoch > mine)
            .max_by_key(|r| r.epoch)
        else {
            return;
        };
        if self
            .withheld_acks
            .get(&self.me)
            .is_some_and(|p| p.epoch >= r.epoch)
        {
            return;
        }
        self.withheld_acks.insert(
            self.me,
            Promise {
                epoch: r.epoch,
                candidate: Some(r.candidate),
            },
        );
        self.dirty = true;
    }

    /// The paused master's offset arrives in any message with the PAUSED flag.
    pub(super) fn note_master_paused(&mut self, from: NodeId, h: &Header) {
        if self.manual.end.is_some()
            && !self.is_master()
            && self.master() == Some(from)
            && h.mflags & mflags::PAUSED != 0
            && self.manual.master_offset.is_none()
        {
            self.manual.master_offset = Some(h.repl_offset);
        }
    }

    pub(super) fn end_manual_failover(&mut self) {
        if self.manual.end.is_some() {
            self.events.push_back(Event::ManualFailoverEnded);
        }
        self.manual = ManualFailover::default();
    }
}
