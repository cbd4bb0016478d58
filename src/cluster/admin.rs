//! Administration of a mesh: what `larder-cli` asks of nodes ([`Admin`], a client
//! that is not a node), what every [`ClusterCache`] answers ([`ClusterCache::admin`]),
//! and the slot mover ([`ClusterCache::migrate_slots`]).
//!
//! # Moving a slot
//!
//! The node that serves the slot (the source) moves it to another master (the
//! target), as `redis-cli --cluster reshard` drives Redis, but from inside the source:
//!
//! 1. the source installs the slot's *move lock*; the target sets the slot IMPORTING
//!    and the source MIGRATING. From then on operations on the slot decide where the
//!    key lives (here if present, else `ASK` the target) while holding the lock
//!    shared, and hold it until they are done;
//! 2. after a short grace (operations routed with an older table finish), the slot is
//!    *fenced*: a write to it made without the lock is refused at the gate, under the
//!    shard lock (it is retried through the lock), so no write can slip past the move;
//! 3. the keys are moved in batches: under the lock held exclusively, the source
//!    reads a batch, the target applies it (and fsyncs it if it is durable) and only
//!    then does the source delete it (logged and replicated like any delete). A key
//!    is in exactly one place whenever no batch is in flight;
//! 4. the hand-over: the target takes the slot (`SETSLOT NODE`, bumping its
//!    configEpoch so its claim wins), then the source; gossip spreads it and clients
//!    get `MOVED`.
//!
//! An interrupted move leaves the slot MIGRATING on the source and IMPORTING on the
//! target (both persisted in the nodes' state files). Moving it again resumes: the
//! keys still on the source are sent again (the source's copy is the authoritative
//! one while it serves the slot). Rolling back is `SetSlot Stable` on both and
//! dropping the target's copies (`DropSlotKeys`); `larder-cli fix` does either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use larder_cluster::net::client::Client;
use larder_cluster::net::{CertificateDer, NetError, PeerCert, Role};
use larder_cluster::proto::{FailoverMode, NodeFlags, NodeId, Slot, SlotSet};

use super::admin_wire::{
    to_ranges, AdminRequest, AdminResponse, MovedEntry, NodeEntry, NodesView, SlotRange, SlotState,
};
use super::journal::{cleaning, in_slot};
use super::{now_ms, ClusterCache, ClusterError, ClusterKey, ClusterValue, NodeIdentity};
use crate::weigh::Weigher;

/// How long the mover waits, once the slots are MIGRATING, before fencing them: an
/// operation routed with the table from before finishes within it (one in-memory
/// operation); one that does not is refused by the fence rather than misplaced.
const FENCE_GRACE: Duration = Duration::from_millis(50);

/// How long the mover waits for its node's routing table to show a change it made.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Most slots open (MIGRATING) at once, and handed over together.
pub const MAX_GROUP: usize = 1024;

/// Keys per batch when a request says 0.
pub const DEFAULT_BATCH: u32 = 100;

/// What a slot move did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Keys moved.
    pub keys: u64,
    /// Key and value bytes moved.
    pub bytes: u64,
    /// Slots handed over.
    pub slots: u32,
}

fn slot_set(ranges: &[SlotRange]) -> SlotSet {
    let mut s = SlotSet::new();
    for &(a, b) in ranges {
        for slot in a..=b {
            s.insert(slot);
        }
    }
    s
}

/// After a hand-over: a master pings every node at once (its new claims, and the
/// acknowledgements of its lease, need not wait for the next ping round). A node the
/// hand-over emptied, now a replica of the taker, does not: its peers unassign the
/// slots of a master that turned replica, and hearing that before the taker's claim
/// would leave a gap in their tables (a moment of CLUSTERDOWN); they learn it at its
/// next ordinary ping, well after the taker's announcement.
fn announce_hand_over(n: &mut larder_cluster::proto::Node, now: larder_cluster::proto::Instant) {
    if n.is_master() {
        n.announce(now);
    }
}

/// The roles that may send `req` over the mesh (see
/// [`larder_cluster::net::roles`]): read-only queries any role; the node-to-node
/// steps of a slot move (`SetSlot(s)`, `Restore`, `Adopt`) nodes and administrators;
/// everything else administrators only.
pub fn permitted_roles(req: &AdminRequest) -> &'static [Role] {
    match req {
        AdminRequest::Nodes | AdminRequest::Info | AdminRequest::KeyCounts => {
            &[Role::Node, Role::Admin, Role::Client]
        }
        AdminRequest::SetSlot(..)
        | AdminRequest::SetSlots(..)
        | AdminRequest::Restore(_)
        | AdminRequest::Adopt(_) => &[Role::Node, Role::Admin],
        AdminRequest::Meet(_)
        | AdminRequest::AddSlots(_)
        | AdminRequest::DelSlots(_)
        | AdminRequest::Replicate(_)
        | AdminRequest::Forget(_)
        | AdminRequest::Failover(_)
        | AdminRequest::MigrateSlots { .. }
        | AdminRequest::DropSlotKeys(_)
        | AdminRequest::Shutdown => &[Role::Admin],
    }
}

/// Refuses `req` from `from` unless its certificate has a role that may send it, with
/// a `NOPERM` error naming the request, the certificate's roles and the roles needed.
pub fn check_permitted(from: &PeerCert, req: &AdminRequest) -> Result<(), String> {
    let needed = permitted_roles(req);
    if from.roles.any(needed) {
        return Ok(());
    }
    let names: Vec<&str> = needed.iter().map(|r| r.name()).collect();
    Err(format!(
        "NOPERM {} refused: the certificate of {} lacks the role it needs ({})",
        req.name(),
        from.describe(),
        names.join(" or ")
    ))
}

fn failover_mode(m: u8) -> FailoverMode {
    match m {
        1 => FailoverMode::Force,
        2 => FailoverMode::Takeover,
        _ => FailoverMode::Default,
    }
}

impl<K, V, W> ClusterCache<K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    /// Answers an administrative request as this node (what peers and `larder-cli`
    /// send over the mesh; `from` is the authenticated sender, `None` in-process).
    /// Failures are answered as [`AdminResponse::Error`].
    pub async fn admin(&self, from: Option<NodeId>, req: AdminRequest) -> AdminResponse {
        match self.admin_inner(from, req).await {
            Ok(r) => r,
            Err(e) => AdminResponse::Error(e),
        }
    }

    /// Resolves once an administrative `Shutdown` arrived (`larder-node` then exits).
    pub async fn shutdown_requested(&self) {
        let mut rx = self.core.shutdown_requested.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    async fn admin_inner(
        &self,
        from: Option<NodeId>,
        req: AdminRequest,
    ) -> Result<AdminResponse, String> {
        let node = &self.core.node;
        let fence = &self.core.shared.fence;
        let net = |e: NetError| e.to_string();
        match req {
            AdminRequest::Nodes => Ok(AdminResponse::Nodes(self.nodes_view().await?)),
            AdminRequest::Info => Ok(AdminResponse::Text(self.info().to_string())),
            AdminRequest::Meet(addr) => {
                let a: SocketAddr = addr
                    .parse()
                    .map_err(|e| format!("ERR bad address {addr:?}: {e}"))?;
                node.meet(a).await.map_err(net)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::AddSlots(r) => {
                let set = slot_set(&r);
                node.add_slots(set.clone()).await.map_err(net)?;
                for s in set.iter() {
                    fence.clear(s);
                }
                Ok(AdminResponse::Ok)
            }
            AdminRequest::DelSlots(r) => {
                node.del_slots(slot_set(&r)).await.map_err(net)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::Replicate(m) => {
                node.replicate(NodeId(m)).await.map_err(net)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::Forget(id) => {
                node.forget(NodeId(id)).await.map_err(net)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::Failover(m) => {
                node.failover(failover_mode(m)).await.map_err(net)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::SetSlot(slot, state) => {
                self.set_slots(&SlotSet::from_range(slot..slot + 1), state)
                    .await?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::SetSlots(ranges, state) => {
                self.set_slots(&slot_set(&ranges), state).await?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::MigrateSlots { to, batch, slots } => {
                let m = self
                    .migrate_slots(&slot_set(&slots), NodeId(to), batch)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(AdminResponse::Migrated {
                    keys: m.keys,
                    bytes: m.bytes,
                    slots: m.slots,
                })
            }
            AdminRequest::KeyCounts => {
                // A walk of every shard: off the async threads.
                let me = self.clone();
                let counts = tokio::task::spawn_blocking(move || me.key_counts())
                    .await
                    .map_err(|e| format!("ERR the key walk failed: {e}"))??;
                Ok(AdminResponse::KeyCounts(counts))
            }
            AdminRequest::Restore(entries) => {
                let from = from.ok_or("ERR a restore comes from the slots' source node")?;
                self.restore(from, entries)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::DropSlotKeys(slot) => {
                Ok(AdminResponse::Count(self.drop_slot_keys(slot).await?))
            }
            AdminRequest::Adopt(entries) => {
                self.adopt(entries)?;
                Ok(AdminResponse::Ok)
            }
            AdminRequest::Shutdown => {
                self.core.shutdown_requested.send_replace(true);
                Ok(AdminResponse::Ok)
            }
        }
    }

    async fn nodes_view(&self) -> Result<NodesView, String> {
        let keys = self.core.cache.len() as u64;
        self.core
            .node
            .with_node(move |n, _| {
                let t = n.slots();
                let nodes = n
                    .nodes()
                    .map(|v| NodeEntry {
                        id: v.id.0,
                        addr: v.addr.clone(),
                        flags: v.flags.bits(),
                        master: v.master.map(|m| m.0),
                        config_epoch: v.config_epoch,
                        repl_offset: v.repl_offset,
                        // A master turned replica may still hold its slots until
                        // their taker's claim arrives; like Redis, list none for it.
                        slots: if v.flags.contains(NodeFlags::MASTER) {
                            to_ranges(t.slots_of(v.id).iter())
                        } else {
                            Vec::new()
                        },
                    })
                    .collect();
                NodesView {
                    me: n.id().0,
                    cluster_ok: n.state() == larder_cluster::proto::ClusterState::Ok,
                    current_epoch: n.current_epoch(),
                    keys,
                    nodes,
                    migrating: t.migrating().iter().map(|(&s, n)| (s, n.0)).collect(),
                    importing: t.importing().iter().map(|(&s, n)| (s, n.0)).collect(),
                }
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn set_slots(&self, slots: &SlotSet, state: SlotState) -> Result<(), String> {
        let node = &self.core.node;
        let fence = &self.core.shared.fence;
        let me = node.id();
        let set = slots.clone();
        let r = match state {
            SlotState::Stable => {
                let r = node
                    .with_node(move |n, _| set.iter().try_for_each(|s| n.set_slot_stable(s)))
                    .await;
                let rt = node.routing();
                for s in slots.iter().filter(|&s| rt.slots.owner(s) == Some(me)) {
                    // A move rolled back: the slot is this node's again.
                    self.end_move(s);
                    fence.clear(s);
                }
                r
            }
            SlotState::Migrating(to) => {
                node.with_node(move |n, _| {
                    set.iter()
                        .try_for_each(|s| n.set_slot_migrating(s, NodeId(to)))
                })
                .await
            }
            SlotState::Importing(src) => {
                if self.core.moving.load(Ordering::Acquire) != 0 {
                    // Taking a slot bumps this node's configEpoch, which would let its
                    // claims on the slots it is handing over win over their new owner.
                    return Err(
                        "ERR this node is moving slots out: it imports none meanwhile".into(),
                    );
                }
                for s in slots.iter() {
                    fence.clear(s);
                }
                node.with_node(move |n, _| {
                    set.iter()
                        .try_for_each(|s| n.set_slot_importing(s, NodeId(src)))
                })
                .await
            }
            SlotState::Node(owner) => {
                let owner = NodeId(owner);
                let rt = node.routing();
                for s in slots.iter() {
                    if owner == me {
                        fence.clear(s);
                    } else if rt.slots.owner(s) == Some(me) {
                        // Writes routed with the old table are refused, not stranded.
                        fence.set(s);
                    }
                }
                node.with_node(move |n, now| {
                    set.iter()
                        .try_for_each(|s| n.set_slot_node(now, s, owner))
                        .map(|()| announce_hand_over(n, now))
                })
                .await
            }
        };
        r.map_err(|e| e.to_string())?
            .map_err(|e| format!("ERR {e}"))
    }

    /// Keys held per slot (slots with none left out).
    fn key_counts(&self) -> Result<Vec<(u16, u64)>, String> {
        let mut counts: HashMap<Slot, u64> = HashMap::new();
        self.core
            .cache
            .inner
            .for_each_entry(|k, _, _| {
                *counts.entry(k.slot()).or_default() += 1;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        let mut v: Vec<(u16, u64)> = counts.into_iter().collect();
        v.sort_unstable();
        Ok(v)
    }

    fn keys_of(&self, slots: &SlotSet) -> Result<HashMap<Slot, Vec<K>>, String> {
        let mut keys: HashMap<Slot, Vec<K>> = HashMap::new();
        self.core
            .cache
            .inner
            .for_each_entry(|k, _, _| {
                let s = k.slot();
                if slots.contains(s) {
                    keys.entry(s).or_default().push(k.clone());
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        Ok(keys)
    }

    /// Clears this node of its keys of a slot it neither serves nor imports: offers
    /// them to the slot's owner (which keeps its own copies), then deletes them.
    async fn drop_slot_keys(&self, slot: Slot) -> Result<u64, String> {
        let rt = self.core.node.routing();
        if !rt.is_master {
            // A replica's data is its master's: clean the master, the replica follows.
            return Err("READONLY this node is a replica: drop stray keys on its master".into());
        }
        if rt.slots.owner(slot) == Some(rt.me) {
            return Err(format!("ERR slot {slot} is served by this node"));
        }
        if rt.slots.importing_from(slot).is_some() {
            return Err(format!("ERR slot {slot} is being imported by this node"));
        }
        let owner = rt
            .slots
            .owner(slot)
            .ok_or_else(|| format!("ERR slot {slot} is not assigned: assign it first"))?;
        let addr = rt
            .node(owner)
            .map(|n| n.addr.clone())
            .ok_or_else(|| format!("ERR slot {slot}'s owner {owner} is unknown here"))?;
        drop(rt);
        let keys = {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.keys_of(&SlotSet::from_range(slot..slot + 1)))
                .await
                .map_err(|e| format!("ERR the key walk failed: {e}"))??
                .into_values()
                .flatten()
                .collect::<Vec<K>>()
        };
        let codec = |e: crate::CodecError| format!("ERR encoding: {e}");
        for chunk in keys.chunks(DEFAULT_BATCH as usize) {
            let mut entries = Vec::with_capacity(chunk.len());
            for k in chunk {
                if let Some((v, at)) = self.core.cache.peek_entry(k) {
                    entries.push(MovedEntry {
                        key: k.encode().map_err(codec)?,
                        value: v.encode().map_err(codec)?,
                        expire_at_ms: at,
                    });
                }
            }
            if !entries.is_empty() {
                self.peer_admin(owner, &addr, &AdminRequest::Adopt(entries))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for k in chunk {
                cleaning(|| self.core.cache.remove(k)).map_err(|e| e.to_string())?;
            }
        }
        Ok(keys.len() as u64)
    }

    /// Inserts entries of slots this node serves that it does not hold.
    fn adopt(&self, entries: Vec<MovedEntry>) -> Result<(), String> {
        let rt = self.core.node.routing();
        let now = now_ms();
        for e in entries {
            let k = K::decode(&e.key).map_err(|e| format!("ERR key: {e}"))?;
            let slot = k.slot();
            if rt.slots.owner(slot) != Some(rt.me) || !rt.is_master {
                return Err(format!("ERR slot {slot} is not served by this node"));
            }
            if rt.slots.migrating_to(slot).is_some() {
                return Err(format!("TRYAGAIN slot {slot} is moving"));
            }
            let v = V::decode(&e.value).map_err(|e| format!("ERR value: {e}"))?;
            let ttl = match e.expire_at_ms {
                Some(at) if at <= now => continue,
                Some(at) => Some(Duration::from_millis(at - now)),
                None => None,
            };
            let key = k.clone();
            in_slot(slot, || {
                self.core.cache.transaction(&[key], |tx| {
                    if !tx.contains(&k) {
                        match ttl {
                            Some(t) => tx.insert_with_ttl(k, v, t),
                            None => tx.insert(k, v),
                        }
                    }
                    Ok::<(), std::convert::Infallible>(())
                })
            })
            .map_err(|e| match e {
                crate::error::TxError::Write(e) => e.to_string(),
                _ => "ERR the adoption transaction failed".to_string(),
            })?;
        }
        Ok(())
    }

    /// Applies a batch of moved entries (this node imports their slots from `from`).
    fn restore(&self, from: NodeId, entries: Vec<MovedEntry>) -> Result<(), String> {
        let rt = self.core.node.routing();
        let now = now_ms();
        let cache = &self.core.cache;
        for e in entries {
            let k = K::decode(&e.key).map_err(|e| format!("ERR key: {e}"))?;
            let slot = k.slot();
            if rt.slots.importing_from(slot) != Some(from) {
                return Err(format!(
                    "ERR slot {slot} is not being imported from {from} by this node"
                ));
            }
            let v = V::decode(&e.value).map_err(|e| format!("ERR value: {e}"))?;
            match e.expire_at_ms {
                Some(at) if at <= now => cache.remove(&k).map(|_| ()),
                at => cache.insert_exact(k, v, at),
            }
            .map_err(|e| e.to_string())?;
        }
        // The source deletes its copies once this answers: make ours durable first.
        if let Some(aof) = &self.core.shared.aof {
            aof.sync()
                .map_err(|e| format!("MISCONF syncing moved keys: {e}"))?;
        }
        Ok(())
    }

    /// Removes `slot`'s move lock (the move ended or was rolled back).
    fn end_move(&self, slot: Slot) {
        let mut m = self.core.moves.lock().unwrap_or_else(|p| p.into_inner());
        if m.remove(&slot).is_some() {
            self.core.moving.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends an administrative request to peer `to`.
    async fn peer_admin(
        &self,
        to: NodeId,
        addr: &str,
        req: &AdminRequest,
    ) -> Result<AdminResponse, ClusterError> {
        let bytes = self
            .core
            .node
            .request(to, addr, &req.encode())
            .await
            .map_err(|e| ClusterError::Unreachable(e.to_string()))?;
        match AdminResponse::decode(&bytes) {
            Ok(AdminResponse::Error(t)) => Err(ClusterError::Refused(format!("{to}: {t}"))),
            Ok(r) => Ok(r),
            Err(e) => Err(ClusterError::Codec(format!("answer from {to}: {e}"))),
        }
    }

    /// Waits until this node's routing table satisfies `ok`.
    async fn published(
        &self,
        what: &str,
        ok: impl Fn(&super::Routing) -> bool,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        loop {
            if ok(&self.core.node.routing()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Refused(format!(
                    "ERR the routing table did not show {what} within {PUBLISH_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Moves `slots` (served by this node) with their keys to master `to`, `batch`
    /// keys per round trip (0: [`DEFAULT_BATCH`]); returns once every slot is handed
    /// over. Operations on the slots keep working throughout (see the module docs).
    /// A slot already MIGRATING to `to` (an interrupted move) is resumed, one that `to`
    /// serves already is skipped. On failure the slots not handed over stay
    /// MIGRATING/IMPORTING: call again to resume.
    ///
    /// Slots are moved [`MAX_GROUP`] at a time (MIGRATING and IMPORTING included): a
    /// master tells its replicas its open slots in every ping, and a message has a
    /// size cap (about 2,800 open slots).
    pub async fn migrate_slots(
        &self,
        slots: &SlotSet,
        to: NodeId,
        batch: u32,
    ) -> Result<Migrated, ClusterError> {
        let all: Vec<Slot> = slots.iter().collect();
        let mut done = Migrated::default();
        for part in all.chunks(MAX_GROUP) {
            let mut set = SlotSet::new();
            part.iter().for_each(|&s| set.insert(s));
            let m = self.migrate_part(&set, to, batch).await?;
            done.keys += m.keys;
            done.bytes += m.bytes;
            done.slots += m.slots;
        }
        Ok(done)
    }

    /// [`migrate_slots`](Self::migrate_slots) for at most [`MAX_GROUP`] slots.
    async fn migrate_part(
        &self,
        slots: &SlotSet,
        to: NodeId,
        batch: u32,
    ) -> Result<Migrated, ClusterError> {
        let batch = if batch == 0 { DEFAULT_BATCH } else { batch } as usize;
        let me = self.core.node.id();
        let refused = |t: String| ClusterError::Refused(t);
        if to == me {
            return Err(refused("ERR a slot cannot move to its own node".into()));
        }
        let rt = self.core.node.routing();
        let target = rt
            .node(to)
            .ok_or_else(|| refused(format!("ERR unknown node {to}")))?;
        if !target.flags.contains(NodeFlags::MASTER) {
            return Err(refused(format!("ERR {to} is not a master")));
        }
        if target.flags.intersects(NodeFlags::FAIL | NodeFlags::PFAIL) {
            return Err(refused(format!("ERR {to} is failing")));
        }
        let addr = target.addr.clone();
        // Slots the target serves already were handed over by an earlier, interrupted
        // call: nothing left to do for them.
        let slots = &{
            let mut left = slots.clone();
            for s in slots.iter().filter(|&s| rt.slots.owner(s) == Some(to)) {
                left.remove(s);
                // Its move lock may have outlived the interruption.
                self.end_move(s);
            }
            left
        };
        for s in slots.iter() {
            if rt.slots.owner(s) != Some(me) {
                return Err(refused(format!("ERR slot {s} is not served by this node")));
            }
            if let Some(other) = rt.slots.migrating_to(s).filter(|&n| n != to) {
                return Err(refused(format!(
                    "ERR slot {s} is migrating to {other}: fix it first"
                )));
            }
        }
        if let Some((s, from)) = rt.slots.importing().iter().next() {
            // See `set_slots`: one direction at a time.
            return Err(refused(format!(
                "ERR this node is importing slot {s} from {from}: finish or fix that first"
            )));
        }
        drop(rt);
        let mut done = Migrated::default();
        if slots.is_empty() {
            return Ok(done);
        }

        // 1. The move locks, then IMPORTING on the target and MIGRATING here.
        {
            let mut m = self.core.moves.lock().unwrap_or_else(|p| p.into_inner());
            for s in slots.iter() {
                if let std::collections::hash_map::Entry::Vacant(e) = m.entry(s) {
                    e.insert(Arc::new(tokio::sync::RwLock::new(())));
                    self.core.moving.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        let ranges = to_ranges(slots.iter());
        self.peer_admin(
            to,
            &addr,
            &AdminRequest::SetSlots(ranges, SlotState::Importing(me.0)),
        )
        .await?;
        let set = slots.clone();
        self.core
            .node
            .with_node(move |n, _| set.iter().try_for_each(|s| n.set_slot_migrating(s, to)))
            .await
            .map_err(|e| ClusterError::Unreachable(e.to_string()))?
            .map_err(|e| refused(format!("ERR {e}")))?;
        self.published("the slots MIGRATING", |rt| {
            slots.iter().all(|s| rt.slots.migrating_to(s) == Some(to))
        })
        .await?;

        // 2. The fence, after operations routed with the old table have finished.
        tokio::time::sleep(FENCE_GRACE).await;
        for s in slots.iter() {
            self.core.shared.fence.set(s);
        }

        // 3. The keys, a batch at a time (a batch may span slots), then the hand-over
        // of a group of slots at a time. The walk of the shards runs off the async
        // threads: on the node's runtime it would stall the driver (and the lease).
        let keys = {
            let (me, set) = (self.clone(), slots.clone());
            tokio::task::spawn_blocking(move || me.keys_of(&set))
                .await
                .map_err(|e| refused(format!("ERR the key walk failed: {e}")))?
                .map_err(refused)?
        };
        let order: Vec<Slot> = slots.iter().collect();
        let mut start = 0;
        while start < order.len() {
            // A group: slots until they hold a few batches' worth of keys.
            let mut end = start;
            let mut n = 0;
            while end < order.len() && end - start < MAX_GROUP && n < batch * 8 {
                n += keys.get(&order[end]).map_or(0, Vec::len);
                end += 1;
            }
            let group = &order[start..end];
            let mut pending: Vec<(Slot, &K)> = group
                .iter()
                .flat_map(|s| keys.get(s).into_iter().flatten().map(move |k| (*s, k)))
                .collect();
            while !pending.is_empty() {
                let chunk: Vec<(Slot, &K)> = pending.drain(..batch.min(pending.len())).collect();
                let mut covered: Vec<Slot> = chunk.iter().map(|(s, _)| *s).collect();
                covered.dedup();
                let _w = self.lock_moves(&covered).await?;
                let (moved, bytes) = self.move_batch(&chunk, to, &addr).await?;
                done.keys += moved;
                done.bytes += bytes;
            }
            let _w = self.lock_moves(group).await?;
            let ranges = to_ranges(group.iter().copied());
            self.peer_admin(
                to,
                &addr,
                &AdminRequest::SetSlots(ranges, SlotState::Node(to.0)),
            )
            .await?;
            let g = group.to_vec();
            self.core
                .node
                .with_node(move |n, now| {
                    g.iter()
                        .try_for_each(|&s| n.set_slot_node(now, s, to))
                        .map(|()| announce_hand_over(n, now))
                })
                .await
                .map_err(|e| ClusterError::Unreachable(e.to_string()))?
                .map_err(|e| refused(format!("ERR {e}")))?;
            self.published("the slots handed over", |rt| {
                group.iter().all(|&s| rt.slots.owner(s) == Some(to))
            })
            .await?;
            for &s in group {
                self.end_move(s);
            }
            done.slots += group.len() as u32;
            start = end;
        }
        Ok(done)
    }

    /// The move locks of `slots` (ascending), held exclusively.
    async fn lock_moves(
        &self,
        slots: &[Slot],
    ) -> Result<Vec<tokio::sync::OwnedRwLockWriteGuard<()>>, ClusterError> {
        let locks: Vec<_> = {
            let m = self.core.moves.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .iter()
                .map(|s| {
                    m.get(s).cloned().ok_or_else(|| {
                        ClusterError::Refused(format!("ERR slot {s}'s move was ended meanwhile"))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut guards = Vec::with_capacity(locks.len());
        for l in locks {
            guards.push(l.write_owned().await);
        }
        Ok(guards)
    }

    /// Sends one batch of keys to the target and deletes them here once it applied
    /// them. The caller holds the move locks of their slots exclusively.
    async fn move_batch(
        &self,
        keys: &[(Slot, &K)],
        to: NodeId,
        addr: &str,
    ) -> Result<(u64, u64), ClusterError> {
        let codec = |e: crate::CodecError| ClusterError::Codec(e.to_string());
        let mut entries = Vec::with_capacity(keys.len());
        let mut present = Vec::with_capacity(keys.len());
        let mut bytes = 0u64;
        for &(_, k) in keys {
            // Deleted or expired since the scan: nothing to move.
            let Some((v, at)) = self.core.cache.peek_entry(k) else {
                continue;
            };
            let e = MovedEntry {
                key: k.encode().map_err(codec)?,
                value: v.encode().map_err(codec)?,
                expire_at_ms: at,
            };
            bytes += (e.key.len() + e.value.len()) as u64;
            entries.push(e);
            present.push(k);
        }
        if entries.is_empty() {
            return Ok((0, 0));
        }
        match self
            .peer_admin(to, addr, &AdminRequest::Restore(entries))
            .await?
        {
            AdminResponse::Ok => {}
            other => {
                return Err(ClusterError::Codec(format!(
                    "unexpected answer to a restore: {other:?}"
                )))
            }
        }
        for k in &present {
            self.core.cache.remove(*k)?;
        }
        Ok((present.len() as u64, bytes))
    }
}

/// Why an administrative request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The node could not be reached, or the exchange broke.
    #[error("{0}")]
    Net(#[from] NetError),
    /// The node refused or failed the request; the text says why.
    #[error("{0}")]
    Refused(String),
    /// The node answered with bytes that are not an answer, or of the wrong kind.
    #[error("bad answer: {0}")]
    Codec(String),
}

/// A client for administrative requests: a QUIC endpoint that is not a node. It
/// presents a certificate of the cluster CA (tools get their own with
/// `larder-cli certs issue --role admin`; see [`permitted_roles`] for what each role
/// may ask) and trusts every node that CA signed.
pub struct Admin {
    client: Client,
}

impl Admin {
    /// A client presenting `identity`, trusting nodes signed by `ca`; requests other
    /// than [`migrate_slots`](Self::migrate_slots) fail after `timeout`. Must be
    /// called inside a tokio runtime.
    pub fn new(
        identity: &NodeIdentity,
        ca: &CertificateDer<'static>,
        timeout: Duration,
    ) -> Result<Admin, NetError> {
        Ok(Admin {
            client: Client::new(identity, ca, timeout)?,
        })
    }

    /// Sends `req` to the node at `addr`; returns the node's id and its answer. An
    /// [`AdminResponse::Error`] becomes [`AdminError::Refused`].
    pub async fn call(
        &self,
        addr: SocketAddr,
        req: &AdminRequest,
    ) -> Result<(NodeId, AdminResponse), AdminError> {
        let (id, bytes) = self.client.request(addr, &req.encode()).await?;
        Self::answer(id, &bytes)
    }

    fn answer(id: NodeId, bytes: &[u8]) -> Result<(NodeId, AdminResponse), AdminError> {
        match AdminResponse::decode(bytes) {
            Ok(AdminResponse::Error(t)) => Err(AdminError::Refused(t)),
            Ok(r) => Ok((id, r)),
            Err(e) => Err(AdminError::Codec(e.to_string())),
        }
    }

    /// Sends `req`, expecting [`AdminResponse::Ok`].
    pub async fn ok(&self, addr: SocketAddr, req: &AdminRequest) -> Result<(), AdminError> {
        match self.call(addr, req).await?.1 {
            AdminResponse::Ok => Ok(()),
            other => Err(wrong(other)),
        }
    }

    /// The node's view of the cluster.
    pub async fn nodes(&self, addr: SocketAddr) -> Result<NodesView, AdminError> {
        match self.call(addr, &AdminRequest::Nodes).await?.1 {
            AdminResponse::Nodes(v) => Ok(v),
            other => Err(wrong(other)),
        }
    }

    /// The node's `info()` text.
    pub async fn info(&self, addr: SocketAddr) -> Result<String, AdminError> {
        match self.call(addr, &AdminRequest::Info).await?.1 {
            AdminResponse::Text(t) => Ok(t),
            other => Err(wrong(other)),
        }
    }

    /// Keys the node holds per slot.
    pub async fn key_counts(&self, addr: SocketAddr) -> Result<Vec<(u16, u64)>, AdminError> {
        match self.call(addr, &AdminRequest::KeyCounts).await?.1 {
            AdminResponse::KeyCounts(v) => Ok(v),
            other => Err(wrong(other)),
        }
    }

    /// Deletes the node's keys of a slot it neither serves nor imports; how many.
    pub async fn drop_slot_keys(&self, addr: SocketAddr, slot: u16) -> Result<u64, AdminError> {
        match self.call(addr, &AdminRequest::DropSlotKeys(slot)).await?.1 {
            AdminResponse::Count(n) => Ok(n),
            other => Err(wrong(other)),
        }
    }

    /// Asks the node at `from` (the slots' owner) to move `slots` and their keys to
    /// `to`, `batch` keys per round trip ([`ClusterCache::migrate_slots`]). No time
    /// limit: returns when every slot is handed over, or the move failed.
    pub async fn migrate_slots(
        &self,
        from: SocketAddr,
        to: NodeId,
        slots: Vec<SlotRange>,
        batch: u32,
    ) -> Result<Migrated, AdminError> {
        let req = AdminRequest::MigrateSlots {
            to: to.0,
            batch,
            slots,
        };
        let (id, bytes) = self
            .client
            .request_with_timeout(from, &req.encode(), Duration::from_secs(365 * 24 * 3600))
            .await?;
        match Self::answer(id, &bytes)?.1 {
            AdminResponse::Migrated { keys, bytes, slots } => Ok(Migrated { keys, bytes, slots }),
            other => Err(wrong(other)),
        }
    }

    /// Sends raw request bytes (a cache operation in the [`super::wire`] format, or
    /// an administrative one) and returns the node's id and raw answer.
    pub async fn request_raw(
        &self,
        addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<(NodeId, Vec<u8>), AdminError> {
        Ok(self.client.request(addr, bytes).await?)
    }

    /// Closes the client's connections.
    pub async fn close(&self) {
        self.client.close().await;
    }
}

fn wrong(r: AdminResponse) -> AdminError {
    AdminError::Codec(format!("answer of the wrong kind: {r:?}"))
}
