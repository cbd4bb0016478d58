//! A deterministic simulation of a whole cluster: many [`Node`]s, virtual time, and a
//! seeded network that drops, delays, duplicates and reorders messages, partitions
//! nodes, and crashes and restarts them with their saved state.
//!
//! Everything is derived from one seed, so a failing run replays exactly. The
//! invariants in [`invariants`] are checked after every step; a violation stops the run
//! with an error that carries the seed and the last events.
//!
//! Messages go through the real codec ([`crate::proto::Message::encode`] and
//! [`Node::handle_bytes`]), so the simulation exercises the wire format too.

mod convergence;
pub mod invariants;
#[cfg(test)]
mod replica_migration;
#[cfg(test)]
mod seeds;
#[cfg(test)]
mod slot_moves;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use crate::proto::{
    Body, Config, Event, FailoverMode, Instant, Node, NodeId, PersistentState, Rng, SlotSet, SLOTS,
};
use invariants::Checker;

/// How the virtual network misbehaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way delay, ms.
    pub min_delay: u64,
    /// Largest one-way delay, ms. Different delays reorder messages.
    pub max_delay: u64,
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
}

impl NetConfig {
    /// A LAN: 1-5 ms, nothing lost.
    pub fn lan() -> Self {
        NetConfig {
            min_delay: 1,
            max_delay: 5,
            drop: 0.0,
            duplicate: 0.0,
        }
    }
    /// A bad network: 1-40 ms, 5% loss, 2% duplicates.
    pub fn lossy() -> Self {
        NetConfig {
            min_delay: 1,
            max_delay: 40,
            drop: 0.05,
            duplicate: 0.02,
        }
    }
}

/// Shape of a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for everything: network, node ids, node randomness.
    pub seed: u64,
    /// Masters (slots are split evenly between them).
    pub masters: usize,
    /// Replicas per master.
    pub replicas_per_master: usize,
    /// Node settings (node_timeout etc.).
    pub node: Config,
    /// Network behaviour.
    pub net: NetConfig,
    /// Give each node a distinct configEpoch at bootstrap (`SET-CONFIG-EPOCH`, as
    /// `redis-cli --cluster create` does). Without it every master starts at 0 and the
    /// collision rule has to separate them.
    pub distinct_epochs: bool,
}

impl SimConfig {
    /// `masters` x (1 + `replicas`) nodes, node_timeout 1000 ms, LAN network.
    pub fn new(seed: u64, masters: usize, replicas: usize) -> Self {
        SimConfig {
            seed,
            masters,
            replicas_per_master: replicas,
            node: Config::with_node_timeout(1000),
            net: NetConfig::lan(),
            distinct_epochs: true,
        }
    }
}

/// One simulated machine.
pub struct SimNode {
    /// Its id (stable across restarts).
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// The running state machine; `None` while crashed.
    pub node: Option<Node>,
    /// What it last saved.
    pub disk: Option<PersistentState>,
    /// Its replication offset (owned by the simulated data plane).
    pub offset: u64,
    /// Replication to this replica is stopped (to give replicas different offsets).
    pub frozen: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    now: Instant,
    rng: Rng,
    nodes: Vec<SimNode>,
    by_id: BTreeMap<NodeId, usize>,
    by_addr: BTreeMap<String, usize>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    group: Vec<u32>,
    blocked: BTreeSet<(usize, usize)>,
    checker: Checker,
    trace: VecDeque<String>,
    last_data_step: Instant,
    /// Model the application's slot fence in the single-writer check: a slot a node
    /// has MIGRATING takes no client writes there (see `migrate_slots`), so it does not
    /// count as writable on that node. Off by default: then `writable_slots` is taken
    /// as is.
    pub(crate) fence_migrating: bool,
    /// Counts of messages sent, by type name.
    pub sent: BTreeMap<&'static str, u64>,
}

const TRACE_LINES: usize = 60;

impl Sim {
    /// Builds the machines; they know nothing of each other yet (see [`Sim::bootstrap`]).
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.masters * (1 + cfg.replicas_per_master);
        let mut nodes = Vec::new();
        let mut by_id = BTreeMap::new();
        let mut by_addr = BTreeMap::new();
        for i in 0..n {
            let id = NodeId::random(&mut rng);
            let addr = format!("10.0.0.{i}:7000");
            let node = Node::new(
                cfg.node.clone(),
                id,
                addr.clone(),
                Instant::ZERO,
                rng.next_u64(),
            );
            by_id.insert(id, i);
            by_addr.insert(addr.clone(), i);
            nodes.push(SimNode {
                id,
                addr,
                node: Some(node),
                disk: None,
                offset: 0,
                frozen: false,
            });
        }
        Sim {
            cfg,
            now: Instant::ZERO,
            rng,
            nodes,
            by_id,
            by_addr,
            queue: BinaryHeap::new(),
            seq: 0,
            group: vec![0; n],
            blocked: BTreeSet::new(),
            checker: Checker::default(),
            trace: VecDeque::new(),
            last_data_step: Instant::ZERO,
            fence_migrating: false,
            sent: BTreeMap::new(),
        }
    }

    /// Forms the cluster as `redis-cli --cluster create` would: distinct configEpochs,
    /// even slot ranges, node 0 meets everyone, replica `r` of master `m` is node
    /// `masters + m * replicas + r`. Returns once the cluster has converged.
    pub fn bootstrap(&mut self) -> Result<(), String> {
        let m = self.cfg.masters;
        let now = self.now;
        for i in 0..self.nodes.len() {
            let node = self.nodes[i]
                .node
                .as_mut()
                .ok_or("crashed before bootstrap")?;
            if self.cfg.distinct_epochs {
                node.set_config_epoch(i as u64 + 1)
                    .map_err(|e| e.to_string())?;
            }
            if i < m {
                let lo = (SLOTS * i / m) as u16;
                let hi = (SLOTS * (i + 1) / m) as u16;
                node.add_slots(now, &SlotSet::from_range(lo..hi))
                    .map_err(|e| e.to_string())?;
            }
        }
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        if let Some(first) = self.nodes[0].node.as_mut() {
            for a in &addrs[1..] {
                first.meet(now, a.clone());
            }
        }
        self.flush_all()?;
        let n = self.nodes.len();
        // Wait until everyone knows everyone, then attach replicas.
        let deadline = self.now + 20_000;
        while self.nodes.iter().any(|s| {
            s.node.as_ref().is_some_and(|node| {
                node.nodes()
                    .filter(|v| !v.flags.contains(crate::proto::NodeFlags::HANDSHAKE))
                    .count()
                    < n
            })
        }) {
            if self.now > deadline {
                return Err(self.fail("nodes did not discover each other"));
            }
            self.run_for(100)?;
        }
        for i in m..n {
            let master = self.nodes[(i - m) / self.cfg.replicas_per_master.max(1)].id;
            let now = self.now;
            if let Some(node) = self.nodes[i].node.as_mut() {
                node.replicate(now, master).map_err(|e| e.to_string())?;
            }
        }
        self.flush_all()?;
        self.run_until_converged(30_000)?;
        Ok(())
    }

    // --------------------------------------------------------------- queries

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }
    /// The seed this run was built from.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }
    /// Number of machines.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True if there are no machines.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// Machine `i`.
    pub fn machine(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }
    /// The running node `i`, if up.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }
    /// The running node `i`, if up, for commands.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes[i].node.as_mut()
    }
    /// Index of the machine with `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }
    /// Running nodes that are masters and serve slots (in their own view).
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.node(i)
                    .is_some_and(|n| n.is_master() && !n.my_slots().is_empty())
            })
            .collect()
    }
    /// Running nodes that replicate `master` (in their own view).
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let id = self.nodes[master].id;
        (0..self.nodes.len())
            .filter(|&i| self.node(i).is_some_and(|n| n.master() == Some(id)))
            .collect()
    }
    /// Running masters serving slots (in their own view) that no running replica
    /// replicates (in the replica's own view): the shards one more crash would leave
    /// without a standby.
    pub fn unreplicated_masters(&self) -> Vec<usize> {
        self.masters()
            .into_iter()
            .filter(|&m| self.replicas_of(m).is_empty())
            .collect()
    }
    /// The running node that accepts writes for `slot` now, if exactly one does.
    pub fn writer_of(&self, slot: u16) -> Option<usize> {
        let now = self.now;
        let w: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.node(i)
                    .is_some_and(|n| n.write_permission(now, slot).is_ok())
            })
            .collect();
        (w.len() == 1).then(|| w[0])
    }
    /// The recent trace (faults, events), for failure reports.
    pub fn trace(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }
    /// Steps checked so far.
    pub fn steps(&self) -> u64 {
        self.checker.steps
    }

    // ---------------------------------------------------------------- faults

    /// Replaces the network behaviour.
    pub fn set_net(&mut self, net: NetConfig) {
        self.cfg.net = net;
    }
    /// Crashes machine `i`: its in-memory state is lost, its disk kept.
    pub fn crash(&mut self, i: usize) {
        self.log(format!("crash n{i}"));
        self.nodes[i].node = None;
    }
    /// Restarts machine `i` from its disk.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.log(format!("restart n{i}"));
        let seed = self.rng.next_u64();
        let m = &mut self.nodes[i];
        let disk = m.disk.as_ref().ok_or("restart without saved state")?;
        m.node = Some(Node::restore(
            self.cfg.node.clone(),
            disk,
            m.addr.clone(),
            self.now,
            seed,
        ));
        self.flush(i)
    }
    /// Splits the network: each list is a side; machines in no list form one more
    /// side together.
    pub fn partition(&mut self, sides: &[&[usize]]) {
        self.log(format!("partition {sides:?}"));
        self.group.iter_mut().for_each(|g| *g = 0);
        for (k, side) in sides.iter().enumerate() {
            for &i in side.iter() {
                self.group[i] = k as u32 + 1;
            }
        }
    }
    /// Cuts (or restores) the link between `a` and `b`, both directions.
    pub fn set_link(&mut self, a: usize, b: usize, up: bool) {
        self.set_direction(a, b, up);
        self.set_direction(b, a, up);
    }
    /// Cuts (or restores) delivery from `from` to `to` only: an asymmetric fault.
    pub fn set_direction(&mut self, from: usize, to: usize, up: bool) {
        if up {
            self.blocked.remove(&(from, to));
        } else {
            self.blocked.insert((from, to));
        }
    }
    /// Ends every partition and cut link.
    pub fn heal(&mut self) {
        self.log("heal".to_string());
        self.group.iter_mut().for_each(|g| *g = 0);
        self.blocked.clear();
    }
    /// Stops (or resumes) replication into replica `i`.
    pub fn freeze_replication(&mut self, i: usize, frozen: bool) {
        self.nodes[i].frozen = frozen;
    }
    /// Tolerates two writers per slot for `ms` (after an operator TAKEOVER).
    pub fn allow_overlap_for(&mut self, ms: u64) {
        self.checker.overlap_allowed_until = self.now + ms;
    }
    /// Runs a manual failover command on `i`.
    pub fn failover(&mut self, i: usize, mode: FailoverMode) -> Result<(), String> {
        self.log(format!("n{i}: CLUSTER FAILOVER {mode:?}"));
        let now = self.now;
        let node = self.nodes[i]
            .node
            .as_mut()
            .ok_or("failover on a crashed node")?;
        node.failover(now, mode).map_err(|e| e.to_string())?;
        if mode == FailoverMode::Takeover {
            self.allow_overlap_for(self.cfg.node.node_timeout + 100);
        }
        self.flush(i)
    }

    /// Runs `CLUSTER REPLICATE` on `i`, making it a replica of machine `master`.
    pub fn replicate(&mut self, i: usize, master: usize) -> Result<(), String> {
        self.log(format!("n{i}: CLUSTER REPLICATE n{master}"));
        let now = self.now;
        let id = self.nodes[master].id;
        let node = self.nodes[i]
            .node
            .as_mut()
            .ok_or("replicate on a crashed node")?;
        node.replicate(now, id).map_err(|e| e.to_string())?;
        self.flush(i)
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b] && !self.blocked.contains(&(a, b))
    }

    fn log(&mut self, line: String) {
        let cap = std::env::var("LARDER_SIM_TRACE_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(TRACE_LINES);
        while self.trace.len() >= cap.max(1) {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>7} {line}", self.now.as_millis()));
    }

    fn fail(&self, what: &str) -> String {
        format!(
            "seed {}: t={}: {what}\nrecent trace:\n{}",
            self.cfg.seed,
            self.now,
            self.trace()
        )
    }

    // --------------------------------------------------------------- driving

    /// Runs for `ms` of virtual time, checking invariants after every step.
    pub fn run_for(&mut self, ms: u64) -> Result<(), String> {
        let end = self.now + ms;
        loop {
            let mut next = end;
            if let Some(Reverse(m)) = self.queue.peek() {
                next = next.min(m.at);
            }
            for s in &self.nodes {
                if let Some(n) = &s.node {
                    next = next.min(n.poll_timeout());
                }
            }
            self.now = self.now.max(next);
            self.step()?;
            if self.now >= end {
                return Ok(());
            }
        }
    }

    fn step(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut touched = BTreeSet::new();
        while self.queue.peek().is_some_and(|Reverse(m)| m.at <= now) {
            let Some(Reverse(m)) = self.queue.pop() else {
                break;
            };
            if !self.connected(m.from, m.to) {
                continue;
            }
            let from = self.nodes[m.from].id;
            if let Some(node) = self.nodes[m.to].node.as_mut() {
                // Rejections (unknown sender etc.) are normal protocol noise.
                let _ = node.handle_bytes(now, from, &m.bytes);
                touched.insert(m.to);
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].node.as_mut() {
                if node.poll_timeout() <= now {
                    node.handle_timeout(now);
                    touched.insert(i);
                }
            }
        }
        for i in touched {
            self.flush(i)?;
        }
        self.data_plane();
        self.check()
    }

    fn flush_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.flush(i)?;
        }
        Ok(())
    }

    /// Saves, then sends, then logs events: the order a real driver must keep.
    fn flush(&mut self, i: usize) -> Result<(), String> {
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Ok(());
        };
        if let Some(saved) = node.poll_save() {
            self.nodes[i].disk = Some(saved);
        }
        let mut out = Vec::new();
        let mut events = Vec::new();
        if let Some(node) = self.nodes[i].node.as_mut() {
            while let Some(t) = node.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = node.poll_event() {
                events.push(e);
            }
        }
        for e in events {
            if !matches!(e, Event::NodeAdded(_) | Event::SlotsChanged) {
                let e = self.describe_event(&e);
                self.log(format!("n{i}: {e}"));
            }
        }
        let me = self.nodes[i].id;
        for t in out {
            let to = match t.to {
                Some(id) => self.by_id.get(&id).copied(),
                None => self.by_addr.get(&t.addr).copied(),
            };
            let Some(to) = to else { continue };
            if let Body::FailoverAuthAck { epoch } = t.message.body {
                let cand = self.nodes[to].id;
                self.checker
                    .check_vote(me, epoch, cand)
                    .map_err(|e| self.fail(&e))?;
            }
            *self.sent.entry(t.message.body.type_name()).or_default() += 1;
            let bytes = t
                .message
                .to_bytes()
                .map_err(|e| self.fail(&format!("encode: {e}")))?;
            let net = self.cfg.net.clone();
            if self.rng.chance(net.drop) {
                continue;
            }
            let copies = if self.rng.chance(net.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = self.rng.range(net.min_delay, net.max_delay);
                self.seq += 1;
                self.queue.push(Reverse(InFlight {
                    at: self.now + delay,
                    seq: self.seq,
                    from: i,
                    to,
                    bytes: bytes.clone(),
                }));
            }
        }
        Ok(())
    }

    fn describe_event(&self, e: &Event) -> String {
        let name = |id: &NodeId| {
            self.by_id
                .get(id)
                .map_or(format!("{id:?}"), |i| format!("n{i}"))
        };
        match e {
            Event::NodePfail(id) => format!("PFAIL {}", name(id)),
            Event::NodeFailed(id) => format!("FAIL {}", name(id)),
            Event::FailCleared(id) => format!("FAIL cleared {}", name(id)),
            Event::RoleChanged(Some(m)) => format!("now replica of {}", name(m)),
            Event::VoteGranted { candidate, epoch } => {
                format!("votes for {} in epoch {epoch}", name(candidate))
            }
            other => format!("{other:?}"),
        }
    }

    /// The data plane, crudely: a master that may write takes writes (its offset grows
    /// with time); a connected, unfrozen replica copies its master's offset.
    fn data_plane(&mut self) {
        let elapsed = self.now.since(self.last_data_step);
        self.last_data_step = self.now;
        let now = self.now;
        for s in self.nodes.iter_mut() {
            if let Some(n) = &s.node {
                if n.is_master() && !n.writable_slots(now).is_empty() {
                    s.offset += elapsed;
                }
            }
        }
        for i in 0..self.nodes.len() {
            let Some(master) = self.node(i).and_then(|n| n.master()) else {
                continue;
            };
            let Some(m) = self.index_of(master) else {
                continue;
            };
            if self.nodes[i].frozen || self.nodes[m].node.is_none() || !self.connected(i, m) {
                continue;
            }
            // A replica never moves backwards: after a failover its new master may be
            // behind (Redis would resync; the offset is what elections compare).
            self.nodes[i].offset = self.nodes[i].offset.max(self.nodes[m].offset);
        }
        for s in self.nodes.iter_mut() {
            let off = s.offset;
            if let Some(n) = s.node.as_mut() {
                n.set_repl_offset(off);
            }
        }
    }

    fn check(&mut self) -> Result<(), String> {
        self.checker.steps += 1;
        let now = self.now;
        let mut writable = Vec::new();
        for i in 0..self.nodes.len() {
            let Some(n) = &self.nodes[i].node else {
                continue;
            };
            let (id, cur, conf) = (n.id(), n.current_epoch(), n.config_epoch());
            let mut w = n.writable_slots(now);
            if self.fence_migrating {
                for &s in n.slots().migrating().keys() {
                    w.remove(s);
                }
            }
            self.checker
                .check_epochs(id, cur, conf)
                .map_err(|e| self.fail(&e))?;
            if !w.is_empty() {
                writable.push((i, w));
            }
        }
        self.checker
            .check_single_writer(now, &writable)
            .map_err(|e| self.fail(&e))
    }

    /// Runs until `pred` holds (checked every 10 ms); errors after `max_ms`.
    pub fn run_until(
        &mut self,
        max_ms: u64,
        what: &str,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Result<u64, String> {
        let start = self.now;
        while !pred(self) {
            if self.now.since(start) > max_ms {
                return Err(self.fail(&format!("timed out after {max_ms} ms waiting for {what}")));
            }
            self.run_for(10)?;
        }
        Ok(self.now.since(start))
    }
}
