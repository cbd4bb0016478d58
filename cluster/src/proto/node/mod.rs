//! The per-node state machine.

mod cron;
mod election;
mod errors;
mod failure;
mod gossip;
mod migration;
mod persist;
mod state;

pub use errors::{CommandError, HandleError, Rejected, WriteRefusal};
pub use persist::{PersistedNode, PersistentState, WithheldAck};
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::codec::{Body, DecodeError, Message, MigrationState};
use super::config::Config;
use super::id::{NodeFlags, NodeId};
use super::peers::{NodeRecord, NodeView};
use super::rng::Rng;
use super::slots::{Slot, SlotSet, SLOTS};
use super::table::{KeyPresence, Route, SlotTable};
use super::time::Instant;

/// How long a forgotten node stays banned from being re-added by gossip (Redis: 60 s).
const FORGET_BAN: u64 = 60_000;

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination node, when known. `None` only for MEET to a bare address.
    pub to: Option<NodeId>,
    /// The destination's address.
    pub addr: String,
    /// The message; [`Message::encode`] turns it into bytes.
    pub message: Message,
}

/// Something the application or the data plane may want to react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A node joined this node's table.
    NodeAdded(NodeId),
    /// This node marked `0` as PFAIL (no answer for node_timeout).
    NodePfail(NodeId),
    /// `0` is FAIL (majority agreement or a FAIL message).
    NodeFailed(NodeId),
    /// The FAIL flag on `0` was cleared.
    FailCleared(NodeId),
    /// The cluster state changed; `true` means OK.
    StateChanged(bool),
    /// This node's role changed: `Some(master)` if it now replicates `master`, `None` if
    /// it is now a master.
    RoleChanged(Option<NodeId>),
    /// Slot ownership changed in this node's table.
    SlotsChanged,
    /// This replica asked for votes in election `0`.
    ElectionStarted(u64),
    /// This replica won election `0` and now serves its old master's slots.
    Promoted(u64),
    /// This master granted its vote for `epoch` to `candidate`.
    VoteGranted {
        /// The replica voted for.
        candidate: NodeId,
        /// The election.
        epoch: u64,
    },
    /// This master paused writes for a replica's manual failover until `0`.
    WritesPaused(Instant),
    /// A manual failover (either side) ended or was aborted.
    ManualFailoverEnded,
    /// This node's configEpoch was bumped to resolve a collision with another master.
    ConfigEpochBumped(u64),
}

/// The cluster state as one node sees it (`CLUSTER INFO cluster_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Slots covered and (for a master) a majority of masters reachable.
    Ok,
    /// Not serving keyed commands.
    Fail,
}

/// Kinds of `CLUSTER FAILOVER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverMode {
    /// The master pauses writes, the replica catches up to its offset, then wins an
    /// election. No acknowledged write is lost.
    Default,
    /// Start an election now without the master's agreement (the master may be down).
    Force,
    /// Take the slots with a new configEpoch without any election. Use when no majority
    /// of masters is reachable; it can lose writes and is not protected by the lease.
    Takeover,
}

#[derive(Clone, Debug, Default)]
struct Election {
    /// When the election starts (Redis's `failover_auth_time`).
    auth_time: Option<Instant>,
    sent: bool,
    epoch: u64,
    rank: usize,
    votes: BTreeSet<NodeId>,
    /// When the vote requests were last (re)sent.
    last_request: Instant,
}

#[derive(Clone, Debug, Default)]
struct ManualFailover {
    end: Option<Instant>,
    /// Replica side: the master paused and we reached its offset.
    can_start: bool,
    /// Replica side: the offset the paused master announced.
    master_offset: Option<u64>,
    /// Master side: the replica being handed the slots.
    replica: Option<NodeId>,
}

#[derive(Clone, Debug)]
struct PendingMeet {
    addr: String,
    since: Instant,
    last_sent: Instant,
}

/// A vote's promise: no acknowledgement of the replaced master's claims (or, for a
/// master that voted for its own replica, no acknowledgement, vote or self-count at
/// all) until the outcome of election `epoch` is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Promise {
    epoch: u64,
    /// The replica voted for; `None` only when restored from a state saved without it.
    candidate: Option<NodeId>,
}

#[derive(Clone, Debug)]
struct PendingVote {
    candidate: NodeId,
    addr: String,
    epoch: u64,
    send_at: Instant,
}

/// One cluster node's control plane.
///
/// The API comes in four groups, in this order below:
/// 1. **getters** (`&self`): identity, epochs, role, the slot table, the cluster
///    state, [`Node::write_permission`] and [`Node::route`] for the data plane;
/// 2. **inputs**: [`Node::handle_message`] / [`Node::handle_bytes`] for each message
///    from a peer, [`Node::handle_timeout`] when [`Node::poll_timeout`] is reached;
/// 3. **commands** from the operator or the application (`CLUSTER MEET`, `ADDSLOTS`,
///    `SETSLOT`, `REPLICATE`, `FAILOVER`, `FORGET`, ...);
/// 4. **outputs**: [`Node::poll_save`] (persist first), then [`Node::poll_transmit`],
///    [`Node::poll_event`] and [`Node::poll_timeout`], drained after every input.
pub struct Node {
    config: Config,
    me: NodeId,
    addr: String,
    rng: Rng,
    nodes: BTreeMap<NodeId, NodeRecord>,
    table: SlotTable,
    current_epoch: u64,
    last_vote_epoch: u64,
    /// Who got the vote of `last_vote_epoch` (not persisted: after a restart a repeated
    /// request is refused, which is safe).
    last_vote_candidate: Option<NodeId>,
    state: ClusterState,
    among_minority_time: Option<Instant>,
    next_cron: Instant,
    last_random_ping: Instant,
    repl_offset: u64,
    election: Election,
    manual: ManualFailover,
    pending_meets: Vec<PendingMeet>,
    pending_votes: Vec<PendingVote>,
    banned: BTreeMap<NodeId, Instant>,
    /// Promises made by voting to replace a master, by master: the election's epoch and
    /// the candidate. They end only on news of the outcome, never by time.
    withheld_acks: BTreeMap<NodeId, Promise>,
    master_migrations: Vec<MigrationState>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    dirty: bool,
    /// The latest `now` given to any input, for headers built without one.
    last_now: Instant,
}

impl Node {
    /// A fresh node that knows only itself: a master with no slots and epoch 0.
    /// `seed` drives its gossip and election randomness.
    pub fn new(
        config: Config,
        id: NodeId,
        addr: impl Into<String>,
        now: Instant,
        seed: u64,
    ) -> Self {
        let addr = addr.into();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            id,
            NodeRecord::new(id, addr.clone(), NodeFlags::MASTER | NodeFlags::MYSELF, now),
        );
        let mut node = Node {
            next_cron: now,
            config,
            me: id,
            addr,
            rng: Rng::new(seed),
            nodes,
            table: SlotTable::default(),
            current_epoch: 0,
            last_vote_epoch: 0,
            last_vote_candidate: None,
            state: ClusterState::Fail,
            among_minority_time: None,
            last_random_ping: now,
            repl_offset: 0,
            election: Election::default(),
            manual: ManualFailover::default(),
            pending_meets: Vec::new(),
            pending_votes: Vec::new(),
            banned: BTreeMap::new(),
            withheld_acks: BTreeMap::new(),
            master_migrations: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dirty: true,
            last_now: now,
        };
        node.update_state(now);
        node
    }

    /// A node restarted from its saved state. Peers start with no failure flags; a
    /// restarted master writes only once a majority acknowledges its slots again.
    pub fn restore(
        config: Config,
        saved: &PersistentState,
        addr: impl Into<String>,
        now: Instant,
        seed: u64,
    ) -> Self {
        let mut node = Node::new(config, saved.id, addr, now, seed);
        node.current_epoch = saved.current_epoch;
        node.last_vote_epoch = saved.last_vote_epoch;
        for p in &saved.nodes {
            let mut flags = if p.master.is_some() {
                NodeFlags::REPLICA
            } else {
                NodeFlags::MASTER
            };
            if p.id == saved.id {
                flags.insert(NodeFlags::MYSELF);
            }
            let mut rec = NodeRecord::new(
                p.id,
                if p.id == saved.id {
                    node.addr.clone()
                } else {
                    p.addr.clone()
                },
                flags,
                now,
            );
            rec.master = p.master;
            rec.config_epoch = p.config_epoch;
            // We may have acknowledged any master just before the crash: wait a full
            // node_timeout before voting against it.
            rec.last_ack_sent = Some(now);
            node.nodes.insert(p.id, rec);
        }
        for p in &saved.nodes {
            for slot in p.slots.iter() {
                node.assign_slot(slot, Some(p.id));
            }
            if p.master.is_some() && p.id != saved.id && !p.slots.is_empty() {
                // Slots held by a master turned replica (see `process_header`): still
                // unclaimed, and held for node_timeout from now.
                node.table.note_claims(&p.slots, &SlotSet::new());
                if let Some(r) = node.nodes.get_mut(&p.id) {
                    r.held_since = Some(now);
                }
            }
        }
        for &(slot, n) in &saved.migrating {
            node.table.set_migrating(slot, Some(n));
        }
        for &(slot, n) in &saved.importing {
            node.table.set_importing(slot, Some(n));
        }
        for w in &saved.withheld_acks {
            node.withheld_acks.insert(
                w.master,
                Promise {
                    epoch: w.epoch,
                    candidate: w.candidate,
                },
            );
        }
        node.update_state(now);
        node
    }

    // ---------------------------------------------------------------- getters

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }
    /// This node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// currentEpoch: the highest epoch this node has seen.
    pub fn current_epoch(&self) -> u64 {
        self.current_epoch
    }
    /// This node's configEpoch.
    pub fn config_epoch(&self) -> u64 {
        self.myself().config_epoch
    }
    /// The last epoch this node voted in.
    pub fn last_vote_epoch(&self) -> u64 {
        self.last_vote_epoch
    }
    /// True if this node is a master.
    pub fn is_master(&self) -> bool {
        self.myself().is_master()
    }
    /// The master this node replicates.
    pub fn master(&self) -> Option<NodeId> {
        self.myself().master
    }
    /// The replication offset last set with [`Node::set_repl_offset`].
    pub fn repl_offset(&self) -> u64 {
        self.repl_offset
    }
    /// The cluster state.
    pub fn state(&self) -> ClusterState {
        self.state
    }
    /// The slot table: owner of every slot and this node's slot moves.
    pub fn slots(&self) -> &SlotTable {
        &self.table
    }
    /// The slots this node serves.
    pub fn my_slots(&self) -> &SlotSet {
        &self.myself().slots
    }
    /// What this node knows about `id`.
    pub fn node(&self, id: NodeId) -> Option<NodeView> {
        self.nodes.get(&id).map(NodeRecord::view)
    }
    /// What this node knows about every node, itself included (`CLUSTER NODES`).
    pub fn nodes(&self) -> impl Iterator<Item = NodeView> + '_ {
        self.nodes.values().map(NodeRecord::view)
    }
    /// Where a command on `slot` must go (`getNodeByQuery`).
    pub fn route(&self, slot: Slot, keys: KeyPresence, asking: bool) -> Route {
        self.table
            .route(self.me, slot, keys, asking, self.state == ClusterState::Ok)
    }
    /// Whether this node may accept a write for `slot` now.
    pub fn write_permission(&self, now: Instant, slot: Slot) -> Result<(), WriteRefusal> {
        if !self.is_master() {
            return Err(WriteRefusal::NotMaster);
        }
        let owner = self.table.owner(slot);
        if owner != Some(self.me) {
            return Err(WriteRefusal::NotOwner(owner));
        }
        self.write_status(now)
    }
    /// Whether this node, a master, may accept writes now whatever the slot (its lease,
    /// cluster state and replicas): what a master that only imports slots checks.
    pub fn master_write_status(&self, now: Instant) -> Result<(), WriteRefusal> {
        if !self.is_master() {
            return Err(WriteRefusal::NotMaster);
        }
        self.write_status(now)
    }
    /// Every slot this node may accept writes for now (empty if none).
    pub fn writable_slots(&self, now: Instant) -> SlotSet {
        if self.is_master() && self.write_status(now).is_ok() {
            self.myself().slots.clone()
        } else {
            SlotSet::new()
        }
    }
    /// The state to persist, as [`Node::poll_save`] would return it.
    pub fn persistent_state(&self) -> PersistentState {
        PersistentState {
            id: self.me,
            current_epoch: self.current_epoch,
            last_vote_epoch: self.last_vote_epoch,
            nodes: self
                .nodes
                .values()
                .filter(|r| !r.in_handshake())
                .map(|r| PersistedNode {
                    id: r.id,
                    addr: r.addr.clone(),
                    master: if r.is_master() { None } else { r.master },
                    config_epoch: r.config_epoch,
                    slots: r.slots.clone(),
                })
                .collect(),
            migrating: self
                .table
                .migrating()
                .iter()
                .map(|(s, n)| (*s, *n))
                .collect(),
            importing: self
                .table
                .importing()
                .iter()
                .map(|(s, n)| (*s, *n))
                .collect(),
            withheld_acks: self
                .withheld_acks
                .iter()
                .map(|(&master, p)| WithheldAck {
                    master,
                    epoch: p.epoch,
                    candidate: p.candidate,
                })
                .collect(),
        }
    }

    // ----------------------------------------------------------------- inputs

    /// Decodes `bytes` from the authenticated peer `from` and handles the message.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), HandleError> {
        let msg = Message::decode(bytes)?;
        self.handle_message(now, from, msg)?;
        Ok(())
    }

    /// Handles one message from the authenticated peer `from`.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: Message,
    ) -> Result<(), Rejected> {
        self.last_now = self.last_now.max(now);
        let r = self.process_message(now, from, msg);
        self.after_input(now);
        r
    }

    /// Runs timers: gossip, failure detection, elections, manual failover timeouts.
    /// Call it when [`Node::poll_timeout`] is reached (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if now >= self.next_cron {
            self.next_cron = now + self.config.cron_interval();
            self.cron(now);
        }
        self.send_due_votes(now);
        self.after_input(now);
    }

    // --------------------------------------------------------------- commands

    /// `CLUSTER MEET addr`: greet the node at `addr` and add it once it answers.
    pub fn meet(&mut self, now: Instant, addr: impl Into<String>) {
        let addr = addr.into();
        self.send_meet_to_addr(now, addr.clone());
        self.pending_meets.push(PendingMeet {
            addr,
            since: now,
            last_sent: now,
        });
    }

    /// `CLUSTER ADDSLOTS`: serve `slots`, each of which must be unassigned.
    pub fn add_slots(&mut self, now: Instant, slots: &SlotSet) -> Result<(), CommandError> {
        if !self.is_master() {
            return Err(CommandError::NotMaster);
        }
        for slot in slots.iter() {
            if let Some(owner) = self.table.owner(slot) {
                return Err(CommandError::SlotBusy { slot, owner });
            }
        }
        for slot in slots.iter() {
            self.assign_slot(slot, Some(self.me));
        }
        self.slots_changed(now);
        Ok(())
    }

    /// `CLUSTER DELSLOTS`: forget the owner of `slots` locally.
    pub fn del_slots(&mut self, now: Instant, slots: &SlotSet) {
        for slot in slots.iter() {
            self.assign_slot(slot, None);
            self.table.set_importing(slot, None);
            self.table.set_migrating(slot, None);
        }
        self.slots_changed(now);
    }

    /// `CLUSTER SET-CONFIG-EPOCH`: give a fresh node a configEpoch before it meets
    /// anyone, so a new cluster starts with distinct epochs instead of resolving
    /// collisions one by one.
    pub fn set_config_epoch(&mut self, epoch: u64) -> Result<(), CommandError> {
        if self.nodes.len() > 1 || self.myself().config_epoch != 0 {
            return Err(CommandError::EpochLocked);
        }
        self.myself_mut().config_epoch = epoch;
        self.current_epoch = self.current_epoch.max(epoch);
        self.dirty = true;
        Ok(())
    }

    /// `CLUSTER REPLICATE master`: become a replica of `master`.
    pub fn replicate(&mut self, now: Instant, master: NodeId) -> Result<(), CommandError> {
        if master == self.me {
            return Err(CommandError::IsMyself);
        }
        let rec = self
            .nodes
            .get(&master)
            .ok_or(CommandError::UnknownNode(master))?;
        if !rec.is_master() {
            return Err(CommandError::TargetNotMaster(master));
        }
        if self.is_master() && !self.myself().slots.is_empty() {
            return Err(CommandError::HasSlots);
        }
        self.become_replica_of(now, master);
        Ok(())
    }

    /// `CLUSTER SETSLOT slot MIGRATING to`: keys of `slot` are moving to `to`.
    pub fn set_slot_migrating(&mut self, slot: Slot, to: NodeId) -> Result<(), CommandError> {
        self.check_slot(slot)?;
        if self.table.owner(slot) != Some(self.me) {
            return Err(CommandError::NotOwner(slot));
        }
        if !self.nodes.contains_key(&to) {
            return Err(CommandError::UnknownNode(to));
        }
        self.table.set_migrating(slot, Some(to));
        self.dirty = true;
        Ok(())
    }

    /// `CLUSTER SETSLOT slot IMPORTING from`: keys of `slot` are arriving from `from`.
    pub fn set_slot_importing(&mut self, slot: Slot, from: NodeId) -> Result<(), CommandError> {
        self.check_slot(slot)?;
        if self.table.owner(slot) == Some(self.me) {
            return Err(CommandError::IsMyself);
        }
        if !self.nodes.contains_key(&from) {
            return Err(CommandError::UnknownNode(from));
        }
        self.table.set_importing(slot, Some(from));
        self.dirty = true;
        Ok(())
    }

    /// `CLUSTER SETSLOT slot STABLE`: clear MIGRATING/IMPORTING on `slot`.
    pub fn set_slot_stable(&mut self, slot: Slot) -> Result<(), CommandError> {
        self.check_slot(slot)?;
        self.table.set_migrating(slot, None);
        self.table.set_importing(slot, None);
        self.dirty = true;
        Ok(())
    }

    /// `CLUSTER SETSLOT slot NODE node`: the move is done, `node` owns `slot`. When the
    /// importing node takes the slot it bumps its configEpoch without consensus, as
    /// Redis does, so its claim wins over the source's.
    pub fn set_slot_node(
        &mut self,
        now: Instant,
        slot: Slot,
        node: NodeId,
    ) -> Result<(), CommandError> {
        self.check_slot(slot)?;
        if !self.nodes.contains_key(&node) {
            return Err(CommandError::UnknownNode(node));
        }
        if self.table.owner(slot) == Some(self.me) && node != self.me {
            self.table.set_migrating(slot, None);
        }
        let was_importing = self.table.importing_from(slot).is_some();
        if node == self.me {
            self.table.set_importing(slot, None);
        }
        let gave_away = self.table.owner(slot) == Some(self.me) && node != self.me;
        self.assign_slot(slot, Some(node));
        if node == self.me && was_importing {
            self.bump_epoch_without_consensus();
        }
        self.slots_changed(now);
        // Redis 7: a master that hands over its last slot becomes a replica of the
        // node that took it (with cluster-allow-replica-migration), as it would when
        // it learns the hand-over from that node's claims.
        if gave_away
            && self.is_master()
            && self.my_slots().is_empty()
            && self.config.allow_replica_migration
        {
            self.become_replica_of(now, node);
        }
        Ok(())
    }

    /// Pings every known node now, so a change of slot owners (a hand-over) reaches
    /// them, and their acknowledgements of this node's new claims return, without
    /// waiting for the next ping round. Redis broadcasts a PONG after `SETSLOT` for
    /// the same reason.
    pub fn announce(&mut self, now: Instant) {
        self.broadcast_ping(now);
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]` on a replica.
    pub fn failover(&mut self, now: Instant, mode: FailoverMode) -> Result<(), CommandError> {
        if self.is_master() {
            return Err(CommandError::NotReplica);
        }
        let master = self.master().ok_or(CommandError::NoMaster)?;
        let master_rec = self.nodes.get(&master).ok_or(CommandError::NoMaster)?;
        if mode == FailoverMode::Default && master_rec.is_failing() {
            return Err(CommandError::MasterDown);
        }
        self.start_manual_failover(now, mode, master);
        self.after_input(now);
        Ok(())
    }

    /// `CLUSTER FORGET id`: drop `id` and ignore it for a minute.
    pub fn forget(&mut self, now: Instant, id: NodeId) -> Result<(), CommandError> {
        if id == self.me {
            return Err(CommandError::IsMyself);
        }
        if self.master() == Some(id) {
            return Err(CommandError::TargetNotMaster(id));
        }
        if self.nodes.remove(&id).is_none() {
            return Err(CommandError::UnknownNode(id));
        }
        self.table.forget(id);
        for r in self.nodes.values_mut() {
            r.fail_reports.remove(id);
        }
        // The operator says `id` is gone for good: promises made to it as a candidate
        // would otherwise wait for its word forever.
        self.withheld_acks
            .retain(|&m, p| m != id && p.candidate != Some(id));
        self.banned.insert(id, now + FORGET_BAN);
        self.slots_changed(now);
        Ok(())
    }

    /// Tells the control plane this node's replication offset (the data plane owns
    /// replication). Replicas are ranked by it in elections.
    pub fn set_repl_offset(&mut self, offset: u64) {
        self.repl_offset = offset;
    }

    // ---------------------------------------------------------------- outputs

    /// The state to persist (fsync) before sending any transmit queued so far, if it
    /// changed. A vote must hit the disk before the ack leaves.
    pub fn poll_save(&mut self) -> Option<PersistentState> {
        if std::mem::take(&mut self.dirty) {
            Some(self.persistent_state())
        } else {
            None
        }
    }
    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_cron;
        if let (Some(at), false) = (self.election.auth_time, self.election.sent) {
            // Only a start still ahead: one that is due but blocked (validity factor,
            // rank change) is re-checked by the cron, so the timer never stays in the past.
            if self.election_pending() && at > self.last_now {
                t = t.min(at);
            }
        }
        for v in &self.pending_votes {
            t = t.min(v.send_at);
        }
        t
    }

    // ---------------------------------------------------------------- helpers

    fn myself(&self) -> &NodeRecord {
        self.nodes
            .get(&self.me)
            .expect("the local node is never removed from its table")
    }
    fn myself_mut(&mut self) -> &mut NodeRecord {
        self.nodes
            .get_mut(&self.me)
            .expect("the local node is never removed from its table")
    }
    fn check_slot(&self, slot: Slot) -> Result<(), CommandError> {
        if slot as usize >= SLOTS {
            Err(CommandError::SlotOutOfRange(slot as u32))
        } else {
            Ok(())
        }
    }

    /// Sets the owner of `slot`, keeping the per-node bitmaps in step with the table.
    fn assign_slot(&mut self, slot: Slot, owner: Option<NodeId>) {
        if let Some(old) = self.table.owner(slot) {
            if let Some(r) = self.nodes.get_mut(&old) {
                r.slots.remove(slot);
            }
        }
        if let Some(new) = owner {
            if let Some(r) = self.nodes.get_mut(&new) {
                r.slots.insert(slot);
            }
        }
        self.table.set_owner(slot, owner);
    }

    fn slots_changed(&mut self, now: Instant) {
        self.dirty = true;
        self.events.push_back(Event::SlotsChanged);
        self.update_state(now);
    }

    /// Redis's `clusterBumpConfigEpochWithoutConsensus`: take a fresh epoch unless this
    /// node already holds the greatest one.
    fn bump_epoch_without_consensus(&mut self) {
        let max = self
            .nodes
            .values()
            .map(|r| r.config_epoch)
            .max()
            .unwrap_or(0)
            .max(self.current_epoch);
        let mine = self.myself().config_epoch;
        if mine == 0
            || mine != max
            || self
                .nodes
                .values()
                .filter(|r| r.config_epoch == max)
                .count()
                > 1
        {
            self.current_epoch += 1;
            let e = self.current_epoch;
            self.myself_mut().config_epoch = e;
            self.dirty = true;
        }
    }

    fn become_replica_of(&mut self, now: Instant, master: NodeId) {
        let mine = self.myself().slots.clone();
        for slot in mine.iter() {
            self.assign_slot(slot, None);
        }
        let me = self.myself_mut();
        me.flags.remove(NodeFlags::MASTER);
        me.flags.insert(NodeFlags::REPLICA);
        me.master = Some(master);
        self.election = Election::default();
        self.end_manual_failover();
        self.master_migrations.clear();
        self.dirty = true;
        self.events.push_back(Event::RoleChanged(Some(master)));
        self.update_state(now);
    }

    fn push(&mut self, to: NodeId, body: Body, mflags: u8) {
        let Some(addr) = self.nodes.get(&to).map(|r| r.addr.clone()) else {
            return;
        };
        let header = self.header(mflags);
        self.transmits.push_back(Transmit {
            to: Some(to),
            addr,
            message: Message { header, body },
        });
    }

    /// Work that follows every input: elections and manual failovers react to what
    /// just arrived without waiting for the next tick.
    fn after_input(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.check_manual_failover(now);
        self.handle_replica_failover(now);
        self.update_state(now);
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.me)
            .field("master", &self.master())
            .field("current_epoch", &self.current_epoch)
            .field("config_epoch", &self.config_epoch())
            .field("state", &self.state)
            .field("slots", &self.myself().slots)
            .finish()
    }
}
