//! Replication scenarios and a seeded lossy-link simulation.
//!
//! A small world drives one master and its replicas with virtual time. Messages go
//! through the codec and a network that can drop, delay (hence reorder), duplicate and
//! cut links. Each node's "cache" is the list of records it holds; a snapshot is that
//! list encoded as length-prefixed records. On every applied record the world checks
//! it lands exactly at the replica's offset (no gap, no duplicate) and, where the
//! history is shared, that the replica's data is a prefix of its master's.
//!
//! `LARDER_REPL_SEEDS=<n>` runs the lossy simulation over more seeds.

use std::collections::VecDeque;

use larder_cluster::proto::{Instant, NodeId, Rng};
use larder_cluster::repl::{
    stream_len, FullReason, PsyncDecision, ReplConfig, ReplicaStatus, ReplicationSink,
    ReplicationSource, SinkEvent, SinkStatus, SourceEvent, WaitId,
};

#[derive(Clone, Copy, Debug)]
struct Faults {
    drop: f64,
    dup: f64,
    max_delay: u64,
    disconnect: f64,
}

const CLEAN: Faults = Faults {
    drop: 0.0,
    dup: 0.0,
    max_delay: 1,
    disconnect: 0.0,
};

#[allow(clippy::large_enum_variant)]
enum Role {
    Master(ReplicationSource),
    Replica {
        sink: ReplicationSink,
        master: usize,
    },
    Vacant,
}

struct PendingSnapshot {
    replica: NodeId,
    bytes: Vec<u8>,
    sent: usize,
}

struct Node {
    id: NodeId,
    role: Role,
    data: Vec<Vec<u8>>,
    staging: Option<Vec<u8>>,
    pending: Vec<PendingSnapshot>,
    full_syncs: usize,
    continues: usize,
    link_downs: usize,
    waits: Vec<(WaitId, usize, bool)>,
}

impl Node {
    fn sink(&mut self) -> &mut ReplicationSink {
        match &mut self.role {
            Role::Replica { sink, .. } => sink,
            _ => panic!("not a replica"),
        }
    }
    fn source(&mut self) -> &mut ReplicationSource {
        match &mut self.role {
            Role::Master(s) => s,
            _ => panic!("not a master"),
        }
    }
}

struct Msg {
    at: Instant,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

struct World {
    seed: u64,
    rng: Rng,
    now: Instant,
    nodes: Vec<Node>,
    net: Vec<Msg>,
    faults: Faults,
    /// Links (unordered node pairs) that lose everything.
    cut: Vec<(usize, usize)>,
    /// Snapshot bytes a master sends per step; `usize::MAX` sends each at once.
    snapshot_rate: usize,
    /// Check after every step that each replica's data is a prefix of its master's.
    check_prefix: bool,
    written: u64,
}

fn snapshot_of(data: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in data {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn load_snapshot(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    out
}

fn offset_of(data: &[Vec<u8>]) -> u64 {
    data.iter().map(|r| stream_len(r.len())).sum()
}

fn node_id(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 20])
}

impl World {
    /// Node 0 is a master, nodes 1..=replicas its replicas.
    fn new(seed: u64, config: ReplConfig, replicas: usize) -> World {
        let now = Instant::from_millis(1_000);
        let mut nodes = vec![Node {
            id: node_id(0),
            role: Role::Master(ReplicationSource::new(config.clone(), seed)),
            data: Vec::new(),
            staging: None,
            pending: Vec::new(),
            full_syncs: 0,
            continues: 0,
            link_downs: 0,
            waits: Vec::new(),
        }];
        for i in 1..=replicas {
            nodes.push(Node {
                id: node_id(i),
                role: Role::Replica {
                    sink: ReplicationSink::new(config.clone(), now),
                    master: 0,
                },
                data: Vec::new(),
                staging: None,
                pending: Vec::new(),
                full_syncs: 0,
                continues: 0,
                link_downs: 0,
                waits: Vec::new(),
            });
        }
        World {
            seed,
            rng: Rng::new(seed ^ 0x5eed),
            now,
            nodes,
            net: Vec::new(),
            faults: CLEAN,
            cut: Vec::new(),
            snapshot_rate: usize::MAX,
            check_prefix: true,
            written: 0,
        }
    }

    fn write(&mut self, master: usize) -> u64 {
        self.written += 1;
        let mut payload = format!("seed{}-w{}-", self.seed, self.written).into_bytes();
        for _ in 0..self.rng.below(24) {
            payload.push(self.rng.below(256) as u8);
        }
        let node = &mut self.nodes[master];
        node.data.push(payload.clone());
        node.source().feed(payload).expect("feed")
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn cut_link(&mut self, a: usize, b: usize) {
        self.cut.push((a.min(b), a.max(b)));
    }

    fn heal_link(&mut self, a: usize, b: usize) {
        self.cut.retain(|&p| p != (a.min(b), a.max(b)));
    }

    /// A connection reset: in-flight messages vanish, the master forgets the replica
    /// and the replica starts a new PSYNC.
    fn reset_connection(&mut self, replica: usize) {
        let Role::Replica { master, .. } = self.nodes[replica].role else {
            return;
        };
        self.net.retain(|m| {
            !((m.from == replica && m.to == master) || (m.from == master && m.to == replica))
        });
        let id = self.nodes[replica].id;
        if let Role::Master(src) = &mut self.nodes[master].role {
            src.disconnected(id);
        }
        self.nodes[master].pending.retain(|p| p.replica != id);
        let now = self.now;
        self.nodes[replica].sink().reconnect(now);
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let f = self.faults;
        if self.rng.chance(f.drop) {
            return;
        }
        let copies = if self.rng.chance(f.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.rng.range(1, f.max_delay.max(1));
            self.net.push(Msg {
                at,
                from,
                to,
                bytes: bytes.clone(),
            });
        }
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("known node")
    }

    fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            let mut progressed = false;
            // Events first: a SnapshotNeeded queues the snapshot's messages.
            let mut master_evs = Vec::new();
            let mut replica_evs = Vec::new();
            match &mut self.nodes[i].role {
                Role::Master(src) => {
                    while let Some(ev) = src.poll_event() {
                        master_evs.push(ev);
                    }
                }
                Role::Replica { sink, .. } => {
                    while let Some(ev) = sink.poll_event() {
                        replica_evs.push(ev);
                    }
                }
                Role::Vacant => return,
            }
            for ev in master_evs {
                progressed = true;
                self.master_event(i, ev);
            }
            for ev in replica_evs {
                progressed = true;
                self.replica_event(i, ev);
            }
            let mut out = Vec::new();
            match &mut self.nodes[i].role {
                Role::Master(src) => {
                    while let Some(t) = src.poll_transmit() {
                        out.push((t.to, t.message));
                    }
                }
                Role::Replica { sink, master } => {
                    let to = node_id(*master);
                    while let Some(m) = sink.poll_transmit() {
                        out.push((to, m));
                    }
                }
                Role::Vacant => {}
            }
            for (to, m) in out {
                progressed = true;
                let to = self.index_of(to);
                let bytes = m.to_bytes().expect("encodes");
                self.send(i, to, bytes);
            }
            if !progressed {
                break;
            }
        }
        let _ = now;
    }

    fn master_event(&mut self, i: usize, ev: SourceEvent) {
        match ev {
            SourceEvent::SnapshotNeeded { replica } => {
                let node = &mut self.nodes[i];
                node.pending.retain(|p| p.replica != replica);
                let bytes = snapshot_of(&node.data);
                let src = node.source();
                let offset = src.offset();
                src.begin_snapshot(replica, offset).expect("begin");
                node.pending.push(PendingSnapshot {
                    replica,
                    bytes,
                    sent: 0,
                });
                self.feed_snapshots(i);
            }
            SourceEvent::WaitDone {
                id,
                acked,
                satisfied,
            } => self.nodes[i].waits.push((id, acked, satisfied)),
            SourceEvent::ReplicaOnline { .. } | SourceEvent::ReplicaDropped { .. } => {}
        }
    }

    /// Sends the next part of every snapshot in transfer.
    fn feed_snapshots(&mut self, i: usize) {
        let rate = self.snapshot_rate;
        let node = &mut self.nodes[i];
        let Role::Master(src) = &mut node.role else {
            return;
        };
        node.pending.retain_mut(|p| {
            let end = p.bytes.len().min(p.sent.saturating_add(rate));
            if src
                .snapshot_chunk(p.replica, &p.bytes[p.sent..end])
                .is_err()
            {
                return false; // the replica asked again meanwhile
            }
            p.sent = end;
            if p.sent == p.bytes.len() {
                let _ = src.finish_snapshot(p.replica);
                return false;
            }
            true
        });
    }

    fn replica_event(&mut self, i: usize, ev: SinkEvent) {
        // Applying a record, loading a snapshot and continuing a stream must each leave
        // the replica holding a prefix of its master's history, even across failovers.
        let check = matches!(
            ev,
            SinkEvent::Apply { .. } | SinkEvent::FullSyncDone { .. } | SinkEvent::Continued { .. }
        );
        self.handle_replica_event(i, ev);
        if check {
            self.check_prefix_of(i);
        }
    }

    fn check_prefix_of(&self, i: usize) {
        let n = &self.nodes[i];
        let Role::Replica { master, .. } = n.role else {
            return;
        };
        let m = &self.nodes[master].data;
        assert!(
            n.data.len() <= m.len() && n.data[..] == m[..n.data.len()],
            "seed {}: node {i} holds {} records that are not a prefix of its master's {}",
            self.seed,
            n.data.len(),
            m.len()
        );
    }

    fn handle_replica_event(&mut self, i: usize, ev: SinkEvent) {
        let seed = self.seed;
        let node = &mut self.nodes[i];
        match ev {
            SinkEvent::Apply { offset, payload } => {
                assert_eq!(
                    offset,
                    offset_of(&node.data),
                    "seed {seed}: node {i} applied a record at {offset}, not at its offset"
                );
                node.data.push(payload);
            }
            SinkEvent::FullSyncStarted { .. } => {
                node.full_syncs += 1;
                node.staging = Some(Vec::new());
            }
            SinkEvent::SnapshotChunk { data } => node
                .staging
                .as_mut()
                .expect("chunk without a full sync")
                .extend_from_slice(&data),
            SinkEvent::FullSyncDone { offset } => {
                let data = load_snapshot(&node.staging.take().expect("staged"));
                assert_eq!(offset_of(&data), offset, "seed {seed}: snapshot offset");
                node.data = data;
            }
            SinkEvent::FullSyncAborted => node.staging = None,
            SinkEvent::Continued { .. } => node.continues += 1,
            SinkEvent::LinkDown => node.link_downs += 1,
        }
    }

    fn step(&mut self) {
        // Deliver what is due, in arrival order.
        let now = self.now;
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.net.len() {
            if self.net[k].at <= now {
                due.push(self.net.remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|m| m.at);
        for m in due {
            if self.is_cut(m.from, m.to) {
                continue;
            }
            let from_id = self.nodes[m.from].id;
            match &mut self.nodes[m.to].role {
                Role::Master(src) => {
                    let _ = src.handle_bytes(now, from_id, &m.bytes);
                }
                Role::Replica { sink, master } => {
                    if *master == m.from {
                        let _ = sink.handle_bytes(now, &m.bytes);
                    }
                }
                Role::Vacant => {}
            }
        }
        for i in 0..self.nodes.len() {
            match &mut self.nodes[i].role {
                Role::Master(src) => {
                    if src.poll_timeout().is_some_and(|t| t <= now) {
                        src.handle_timeout(now);
                    }
                }
                Role::Replica { sink, .. } => {
                    if sink.poll_timeout().is_some_and(|t| t <= now) {
                        sink.handle_timeout(now);
                    }
                }
                Role::Vacant => {}
            }
            if self.snapshot_rate != usize::MAX {
                self.feed_snapshots(i);
            }
            self.drain(i);
        }
        if self.faults.disconnect > 0.0 && self.rng.chance(self.faults.disconnect) {
            let r = 1 + self.rng.below(self.nodes.len() as u64 - 1) as usize;
            self.reset_connection(r);
            self.drain(r);
        }
        if self.check_prefix {
            self.check_prefixes();
        }
        self.now = self.now + 1;
    }

    fn check_prefixes(&self) {
        for i in 0..self.nodes.len() {
            self.check_prefix_of(i);
        }
    }

    fn synced(&self, i: usize) -> bool {
        let Role::Replica { sink, master } = &self.nodes[i].role else {
            return false;
        };
        let Role::Master(src) = &self.nodes[*master].role else {
            return false;
        };
        sink.status() == SinkStatus::Streaming
            && sink.offset() == src.offset()
            && sink.replid() == Some(src.replid())
            && self.nodes[i].data == self.nodes[*master].data
    }

    fn all_synced(&self) -> bool {
        (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i].role, Role::Replica { .. }))
            .all(|i| self.synced(i))
    }

    fn run_until(&mut self, max_steps: u64, what: &str, cond: impl Fn(&World) -> bool) {
        for _ in 0..max_steps {
            if cond(self) {
                return;
            }
            self.step();
        }
        assert!(
            cond(self),
            "seed {}: not {what} after {max_steps} steps",
            self.seed
        );
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Turns replica `i` into a master and points every other replica (and the old
    /// master, if `demote` is given) at it.
    fn promote(&mut self, i: usize, seed: u64, demote: Option<usize>) {
        let Role::Replica { sink, .. } = std::mem::replace(&mut self.nodes[i].role, Role::Vacant)
        else {
            panic!("not a replica");
        };
        let (src, leftover) = sink.promote(seed);
        for ev in leftover {
            self.replica_event(i, ev);
        }
        self.nodes[i].role = Role::Master(src);
        self.nodes[i].staging = None;
        let now = self.now;
        if let Some(old) = demote {
            let Role::Master(src) = std::mem::replace(&mut self.nodes[old].role, Role::Vacant)
            else {
                panic!("not a master");
            };
            self.nodes[old].pending.clear();
            self.nodes[old].role = Role::Replica {
                sink: src.into_replica(now),
                master: i,
            };
        }
        for j in 0..self.nodes.len() {
            if let Role::Replica { sink, master } = &mut self.nodes[j].role {
                if *master != i && j != i {
                    *master = i;
                    sink.reconnect(now);
                }
            }
        }
        // In-flight messages stay: stale ones must be harmless.
        for j in 0..self.nodes.len() {
            self.drain(j);
        }
    }
}

fn small_config() -> ReplConfig {
    ReplConfig {
        backlog_size: 4096,
        ping_period: 50,
        ack_period: 100,
        repl_timeout: 1_000,
        handshake_timeout: 200,
        min_replicas_to_write: 0,
        min_replicas_max_lag: 1_000,
        max_batch_bytes: 256,
        snapshot_chunk_bytes: 64,
    }
}

#[test]
fn initial_sync_then_streaming() {
    let mut w = World::new(1, small_config(), 2);
    for _ in 0..20 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 1);
    for _ in 0..30 {
        w.write(0);
        w.step();
    }
    w.run_until(500, "synced", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 1);
    assert_eq!(w.nodes[2].full_syncs, 1);
}

#[test]
fn partial_resync_after_a_short_disconnect() {
    let mut w = World::new(2, small_config(), 1);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.cut_link(0, 1);
    for _ in 0..15 {
        w.write(0);
        w.step();
    }
    w.heal_link(0, 1);
    w.reset_connection(1);
    w.run_until(500, "synced after reconnect", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 1, "the backlog covered the gap");
    assert_eq!(w.nodes[1].continues, 1);
}

#[test]
fn full_resync_when_the_backlog_does_not_cover_the_gap() {
    let config = ReplConfig {
        backlog_size: 200,
        ..small_config()
    };
    let mut w = World::new(3, config, 1);
    for _ in 0..5 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.cut_link(0, 1);
    for _ in 0..40 {
        w.write(0);
    }
    w.heal_link(0, 1);
    let r = w.nodes[1].sink();
    let (id, off) = (r.replid(), r.offset());
    let src = w.nodes[0].source();
    assert_eq!(
        src.decide(id, off),
        PsyncDecision::FullResync(FullReason::OutOfBacklog)
    );
    w.reset_connection(1);
    w.run_until(500, "synced after reconnect", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 2);
    assert_eq!(w.nodes[1].continues, 0);
}

#[test]
fn writes_during_a_snapshot_transfer_arrive_once_in_order() {
    let mut w = World::new(4, small_config(), 2);
    w.snapshot_rate = 16; // a slow snapshot: 16 bytes a step
    for _ in 0..30 {
        w.write(0);
    }
    let snapshot_offset = w.nodes[0].source().offset();
    // Writes continue while both replicas receive the snapshot.
    let mut saw_loading = false;
    for _ in 0..60 {
        w.write(0);
        w.step();
        saw_loading |= matches!(w.nodes[1].sink().status(), SinkStatus::Loading { .. });
    }
    assert!(saw_loading, "the transfer overlapped the writes");
    w.run_until(2_000, "synced", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 1);
    assert_eq!(w.nodes[2].full_syncs, 1);
    assert!(w.nodes[1].data.len() == 90 && snapshot_offset > 0);
}

#[test]
fn a_crc_mismatch_aborts_the_full_sync() {
    let config = small_config();
    let now = Instant::from_millis(0);
    let mut sink = ReplicationSink::new(config.clone(), now);
    let Some(larder_cluster::repl::ReplMessage::Psync { attempt, .. }) = sink.poll_transmit()
    else {
        panic!("psync first");
    };
    let id = larder_cluster::repl::ReplId::from_seed(5);
    use larder_cluster::repl::ReplMessage as M;
    sink.handle_message(
        now,
        M::FullResync {
            attempt,
            replid: id,
            offset: 8,
        },
    )
    .unwrap();
    sink.handle_message(
        now,
        M::SnapshotChunk {
            attempt,
            position: 0,
            data: vec![0, 0, 0, 4, 1, 2, 3, 4],
        },
    )
    .unwrap();
    sink.handle_message(
        now,
        M::SnapshotEnd {
            attempt,
            total_len: 8,
            crc: 0,
        },
    )
    .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| sink.poll_event()).collect();
    assert_eq!(events.last(), Some(&SinkEvent::FullSyncAborted));
    assert_eq!(sink.status(), SinkStatus::Handshake);
    assert_eq!(sink.offset(), 0);
    assert!(matches!(
        sink.poll_transmit(),
        Some(M::Psync { attempt: a, replid: None, offset: 0 }) if a == attempt + 1
    ));
}

/// Replicas 1 and 2 follow master 0; replica 2 is cut off and falls behind; replica 1
/// is promoted. Replica 2 continues from it under the secondary id, no full sync.
#[test]
fn promotion_lets_a_lagging_replica_continue_with_the_secondary_id() {
    let mut w = World::new(6, small_config(), 2);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.cut_link(0, 2);
    for _ in 0..10 {
        w.write(0);
        w.step();
    }
    w.run_until(500, "replica 1 synced", |w| w.synced(1));
    let old_id = w.nodes[0].source().replid();
    let behind = w.nodes[2].sink().offset();
    let at = w.nodes[1].sink().offset();
    assert!(behind < at);
    w.heal_link(0, 2);
    w.cut_link(0, 1);
    w.cut_link(0, 2);
    w.promote(1, 99, None);
    let src = w.nodes[1].source();
    assert_eq!(src.secondary(), Some((old_id, at)));
    assert_ne!(src.replid(), old_id);
    // Exactly at second_replid_offset continues too.
    assert_eq!(src.decide(Some(old_id), at), PsyncDecision::Continue);
    assert_eq!(src.decide(Some(old_id), behind), PsyncDecision::Continue);
    for _ in 0..5 {
        w.write(1);
    }
    w.run_until(500, "replica 2 synced to the new master", |w| w.synced(2));
    assert_eq!(w.nodes[2].full_syncs, 1, "no second full sync");
    assert_eq!(w.nodes[2].continues, 1);
    let new_id = w.nodes[1].source().replid();
    assert_eq!(w.nodes[2].sink().replid(), Some(new_id));
    let info = w.nodes[1].source().info(w.now);
    assert_eq!(info.replid2, Some(old_id));
    assert_eq!(info.second_replid_offset, Some(at));
    assert_eq!(info.connected_replicas, 1);
}

/// Replica 1 is cut off; the master keeps writing to replica 2; replica 1 is promoted.
/// Replica 2 and the demoted old master hold history the new master never had: they
/// must fully resync.
#[test]
fn promotion_forces_a_full_resync_on_a_diverged_replica() {
    let mut w = World::new(7, small_config(), 2);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.cut_link(0, 1);
    for _ in 0..10 {
        w.write(0);
        w.step();
    }
    w.run_until(500, "replica 2 synced", |w| w.synced(2));
    let old_id = w.nodes[0].source().replid();
    let ahead = w.nodes[2].sink().offset();
    let at = w.nodes[1].sink().offset();
    assert!(ahead > at);
    w.heal_link(0, 1);
    w.check_prefix = false; // replica 2 holds records the new master lacks until it syncs
    w.promote(1, 123, Some(0));
    assert_eq!(
        w.nodes[1].source().decide(Some(old_id), ahead),
        PsyncDecision::FullResync(FullReason::BeyondSecondaryOffset)
    );
    for _ in 0..5 {
        w.write(1);
    }
    w.run_until(
        1_000,
        "everyone synced to the new master",
        World::all_synced,
    );
    assert_eq!(w.nodes[2].full_syncs, 2);
    assert_eq!(
        w.nodes[0].full_syncs, 1,
        "the demoted master resynced fully"
    );
    w.check_prefixes();
}

/// A master demoted without having diverged continues partially from its successor.
#[test]
fn a_demoted_master_that_did_not_diverge_continues() {
    let mut w = World::new(8, small_config(), 1);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.promote(1, 5, Some(0));
    for _ in 0..5 {
        w.write(1);
    }
    w.run_until(500, "old master synced", World::all_synced);
    assert_eq!(w.nodes[0].full_syncs, 0);
    assert_eq!(w.nodes[0].continues, 1);
}

#[test]
fn acks_give_lag_and_min_replicas() {
    let config = ReplConfig {
        min_replicas_to_write: 2,
        min_replicas_max_lag: 300,
        ..small_config()
    };
    let mut w = World::new(9, config, 2);
    assert!(!w.nodes[0].source().write_allowed(w.now));
    for _ in 0..5 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    w.run(250);
    let now = w.now;
    let offset = w.nodes[0].source().offset();
    let src = w.nodes[0].source();
    assert_eq!(src.good_replicas(now), 2);
    assert!(src.write_allowed(now));
    for r in src.replicas(now) {
        assert_eq!(r.status, ReplicaStatus::Online);
        assert_eq!(r.ack_offset, Some(offset));
        assert!(r.lag.unwrap() <= 100, "acks every 100 ms: {r:?}");
    }
    // Replica 2 goes silent: its lag grows past the limit.
    w.cut_link(0, 2);
    w.run(450);
    let now = w.now;
    let src = w.nodes[0].source();
    assert_eq!(src.good_replicas(now), 1);
    assert!(!src.write_allowed(now));
    let info = src.info(now);
    assert!(info.replicas[1].lag.unwrap() > 300);
    // After repl_timeout the master drops it.
    w.run(700);
    let now = w.now;
    assert_eq!(w.nodes[0].source().info(now).connected_replicas, 1);
    // The replica noticed too.
    assert_eq!(w.nodes[2].link_downs, 1);
    assert!(!w.nodes[2].sink().info(now).link_up);
    assert!(w.nodes[1].sink().info(now).link_up);
    w.heal_link(0, 2);
    w.run_until(1_000, "synced after healing", World::all_synced);
    assert_eq!(w.nodes[0].source().good_replicas(w.now), 2);
}

#[test]
fn wait_counts_replicas_that_acknowledged_an_offset() {
    let config = ReplConfig {
        ack_period: 10_000, // only GETACK makes replicas ack quickly
        ..small_config()
    };
    let mut w = World::new(10, config, 2);
    w.run_until(500, "synced", World::all_synced);
    w.run(20);
    let offset = w.write(0);
    let now = w.now;
    let id = w.nodes[0].source().wait(now, 2, offset, 1_000);
    assert_eq!(w.nodes[0].source().acked_count(offset), 0);
    w.drain(0);
    w.run_until(50, "wait done", |w| !w.nodes[0].waits.is_empty());
    assert_eq!(w.nodes[0].waits, vec![(id, 2, true)]);
    assert_eq!(w.nodes[0].source().acked_count(offset), 2);
    // Asking for more replicas than exist ends at the timeout.
    let offset = w.write(0);
    let start = w.now;
    let id = w.nodes[0].source().wait(start, 3, offset, 200);
    w.drain(0);
    w.run_until(300, "wait timed out", |w| w.nodes[0].waits.len() == 2);
    assert_eq!(w.nodes[0].waits[1], (id, 2, false));
    assert!(w.now.since(start) >= 200);
    // A wait already satisfied ends at once.
    let now = w.now;
    let id = w.nodes[0].source().wait(now, 0, offset, 200);
    w.drain(0);
    assert_eq!(w.nodes[0].waits[2], (id, 2, true));
}

fn seeds() -> u64 {
    std::env::var("LARDER_REPL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// One seeded run: phases of a faulty link (loss, duplication, reordering, resets,
/// partitions) alternate with calm ones, while the master keeps writing. Returns how
/// many full and partial resyncs the replicas made.
fn lossy_run(seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let config = ReplConfig {
        backlog_size: [300, 2_000, 20_000][rng.below(3) as usize],
        snapshot_chunk_bytes: rng.range(64, 2_000) as usize,
        max_batch_bytes: rng.range(30, 400),
        ..small_config()
    };
    let mut w = World::new(seed, config, 2);
    w.snapshot_rate = [usize::MAX, 256, 2_048][rng.below(3) as usize];
    let faulty = Faults {
        drop: rng.below(15) as f64 / 100.0,
        dup: rng.below(10) as f64 / 100.0,
        max_delay: rng.range(1, 80),
        disconnect: rng.below(4) as f64 / 1000.0,
    };
    let phase = rng.range(100, 600);
    let write_p = rng.range(5, 50) as f64 / 100.0;
    for step in 0..4_000u64 {
        w.faults = if (step / phase) % 2 == 1 {
            faulty
        } else {
            CLEAN
        };
        if w.rng.chance(write_p) {
            w.write(0);
        }
        if w.rng.chance(0.001) {
            let r = 1 + w.rng.below(2) as usize;
            w.cut_link(0, r);
        }
        if w.rng.chance(0.002) {
            w.cut.clear();
        }
        w.step();
    }
    // Heal and check that everyone converges.
    w.faults = CLEAN;
    w.cut.clear();
    for _ in 0..20 {
        w.write(0);
        w.step();
    }
    w.run_until(10_000, "converged after healing", World::all_synced);
    let n = &w.nodes;
    if std::env::var_os("LARDER_REPL_VERBOSE").is_some() {
        eprintln!(
            "seed {seed}: {} records, full syncs {}/{}, continues {}/{}, link downs {}/{}",
            n[0].data.len(),
            n[1].full_syncs,
            n[2].full_syncs,
            n[1].continues,
            n[2].continues,
            n[1].link_downs,
            n[2].link_downs
        );
    }
    (
        n[1].full_syncs + n[2].full_syncs,
        n[1].continues + n[2].continues,
    )
}

#[test]
fn lossy_links_never_gap_or_duplicate_and_converge() {
    let (mut full, mut partial) = (0, 0);
    for seed in 0..seeds() {
        match std::panic::catch_unwind(|| lossy_run(seed)) {
            Ok((f, p)) => {
                full += f;
                partial += p;
            }
            Err(e) => {
                eprintln!("lossy replication simulation failed: seed {seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    // Both resync paths were exercised, not just one.
    assert!(full > 0 && partial > 0, "full {full}, partial {partial}");
}

#[test]
fn a_replica_that_restarts_resumes_from_its_offset() {
    let config = small_config();
    let mut w = World::new(11, config.clone(), 1);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    let (id, off) = {
        let s = w.nodes[1].sink();
        (s.replid().unwrap(), s.offset())
    };
    let now = w.now;
    w.nodes[0].source().disconnected(node_id(1));
    w.nodes[1].role = Role::Replica {
        sink: ReplicationSink::resume(config, now, id, off),
        master: 0,
    };
    for _ in 0..3 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 1);
    assert_eq!(w.nodes[1].continues, 1);
    let _ = VecDeque::<u8>::new();
}

/// Failovers under a faulty link: now and then a random replica (not always the most
/// up to date) is promoted and the old master demoted into a replica of it. Replicas
/// behind the promotion point continue under the secondary id, the others resync
/// fully; applying, loading and continuing must always leave a replica holding a
/// prefix of its current master's history.
fn failover_run(seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let config = ReplConfig {
        backlog_size: [500, 5_000, 50_000][rng.below(3) as usize],
        ..small_config()
    };
    let mut w = World::new(seed, config, 3);
    w.check_prefix = false; // diverged nodes hold foreign records until they resync
    w.faults = Faults {
        drop: rng.below(8) as f64 / 100.0,
        dup: rng.below(8) as f64 / 100.0,
        max_delay: rng.range(1, 30),
        disconnect: rng.below(3) as f64 / 1000.0,
    };
    let mut master = 0;
    for step in 0..4_000u64 {
        if w.rng.chance(0.3) {
            w.write(master);
        }
        if step % 500 == 499 {
            let candidates: Vec<usize> = (0..4).filter(|&i| i != master).collect();
            let next = candidates[w.rng.below(3) as usize];
            w.promote(next, seed * 1_000 + step, Some(master));
            master = next;
        }
        w.step();
    }
    w.faults = CLEAN;
    for _ in 0..20 {
        w.write(master);
        w.step();
    }
    w.run_until(
        10_000,
        "converged after the last failover",
        World::all_synced,
    );
    w.check_prefixes();
    let full = w.nodes.iter().map(|n| n.full_syncs).sum();
    let partial = w.nodes.iter().map(|n| n.continues).sum();
    (full, partial)
}

#[test]
fn failovers_keep_every_replica_on_its_masters_history() {
    let (mut full, mut partial) = (0, 0);
    for seed in 0..seeds().div_ceil(2) {
        match std::panic::catch_unwind(|| failover_run(seed)) {
            Ok((f, p)) => {
                full += f;
                partial += p;
            }
            Err(e) => {
                eprintln!("replication failover simulation failed: seed {seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    assert!(full > 0 && partial > 0, "full {full}, partial {partial}");
}

/// The diverged replica's offset happens to fall on a record boundary of the new
/// master's own later writes (equal-sized records): only the secondary offset check
/// tells the histories apart.
#[test]
fn a_diverged_offset_on_a_record_boundary_still_resyncs_fully() {
    let mut w = World::new(12, small_config(), 2);
    let fixed = |w: &mut World, m: usize, n: u8| {
        w.nodes[m].data.push(vec![n; 10]);
        w.nodes[m].source().feed(vec![n; 10]).unwrap();
    };
    for n in 0..5 {
        fixed(&mut w, 0, n);
    }
    w.run_until(500, "synced", World::all_synced);
    w.cut_link(0, 1);
    for n in 10..15 {
        fixed(&mut w, 0, n);
    }
    w.run_until(500, "replica 2 synced", |w| w.synced(2));
    let old_id = w.nodes[0].source().replid();
    let diverged = w.nodes[2].sink().offset();
    w.cut_link(1, 2);
    w.check_prefix = false;
    w.promote(1, 77, None);
    for n in 20..25 {
        fixed(&mut w, 1, n);
    }
    let src = w.nodes[1].source();
    assert_eq!(src.offset(), diverged, "same length, different records");
    assert!(src.backlog().can_serve(diverged));
    assert_eq!(
        src.decide(Some(old_id), diverged),
        PsyncDecision::FullResync(FullReason::BeyondSecondaryOffset)
    );
    w.heal_link(1, 2);
    w.run_until(1_000, "replica 2 synced to the new master", |w| w.synced(2));
    assert_eq!(w.nodes[2].full_syncs, 2);
    assert_eq!(w.nodes[2].continues, 0);
}

/// A master restarted from its persisted id and offset lets a replica that is exactly
/// there continue; one that holds writes the restart lost resyncs fully.
#[test]
fn a_restarted_master_resumes_its_history() {
    let config = small_config();
    let mut w = World::new(13, config.clone(), 2);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    let id = w.nodes[0].source().replid();
    let persisted = w.nodes[0].source().offset();
    let persisted_len = w.nodes[0].data.len();
    w.cut_link(0, 1);
    w.write(0); // reaches replica 2 only, then is lost by the restart
    w.run_until(500, "replica 2 synced", |w| w.synced(2));
    w.nodes[0].data.truncate(persisted_len);
    w.nodes[0].role = Role::Master(ReplicationSource::resume(config, id, persisted, 1_313));
    w.heal_link(0, 1);
    w.check_prefix = false;
    w.reset_connection(1);
    w.reset_connection(2);
    w.run_until(500, "synced to the restarted master", World::all_synced);
    assert_eq!((w.nodes[1].full_syncs, w.nodes[1].continues), (1, 1));
    assert_eq!((w.nodes[2].full_syncs, w.nodes[2].continues), (2, 0));
    assert_ne!(w.nodes[0].source().replid(), id);
    assert_eq!(w.nodes[0].source().secondary(), Some((id, persisted)));
}

/// A replica restarts (its PSYNC numbering starts again at 1) and the driver never
/// tells the master the old connection is gone: once the old session is older than
/// any message could be in flight, the master takes the new PSYNC.
#[test]
fn a_restarted_replica_gets_in_without_a_disconnect() {
    let config = small_config();
    let mut w = World::new(14, config.clone(), 1);
    for _ in 0..10 {
        w.write(0);
    }
    w.run_until(500, "synced", World::all_synced);
    // Some resyncs, so the master's session has a PSYNC number well above 1.
    for _ in 0..5 {
        let now = w.now;
        w.nodes[1].sink().reconnect(now);
        w.run_until(500, "synced", World::all_synced);
    }
    assert!(w.nodes[1].sink().attempt() > 5);
    w.run(config.repl_timeout);
    let now = w.now;
    w.nodes[1].role = Role::Replica {
        sink: ReplicationSink::new(config, now),
        master: 0,
    };
    w.nodes[1].data.clear();
    w.write(0);
    // Faster than the new replica could count up to the old session's number.
    w.run_until(100, "synced", World::all_synced);
    assert_eq!(w.nodes[1].full_syncs, 2);
}

#[test]
fn a_resumed_master_demoted_before_writing_continues_its_old_history() {
    let id = larder_cluster::repl::ReplId::from_seed(77);
    let src = ReplicationSource::resume(small_config(), id, 500, 9);
    assert_ne!(src.replid(), id);
    // No write under the new id: as a replica it holds `id` up to 500, and says so.
    let sink = src.into_replica(Instant::ZERO);
    assert_eq!(sink.replid(), Some(id));
    assert_eq!(sink.offset(), 500);
    // After a write under the new id it is that history it holds.
    let mut src = ReplicationSource::resume(small_config(), id, 500, 9);
    let new_id = src.replid();
    src.feed(b"x".to_vec()).unwrap();
    assert_eq!(src.into_replica(Instant::ZERO).replid(), Some(new_id));
}
