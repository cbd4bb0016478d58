//! Clusters over real QUIC on 127.0.0.1: formation, failover after a master's driver
//! shuts down, and a partition (through the fault switch) taking write permission
//! from the minority master.
#![cfg(feature = "net")]

use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use larder_cluster::net::certs::ClusterCa;
use larder_cluster::net::store::{MemoryStore, StateStore};
use larder_cluster::net::{ClusterNode, Faults, NetConfig};
use larder_cluster::proto::{ClusterState, Config, FailoverMode, NodeId, Rng, SlotSet, SLOTS};

mod common;
use common::{eventually, NODE_TIMEOUT};

struct Cluster {
    nodes: Vec<ClusterNode>,
    faults: Faults,
    ca: ClusterCa,
    config: Config,
}

async fn start(
    ca: &ClusterCa,
    seed: u64,
    config: &Config,
    faults: &Faults,
    store: StateStore,
) -> ClusterNode {
    let id = NodeId::random(&mut Rng::new(seed));
    let mut c = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id).unwrap(),
        ca.cert_der(),
        store,
    );
    c.cluster = config.clone();
    c.faults = faults.clone();
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(300);
    c.idle_timeout = Duration::from_secs(2);
    c.seed = seed;
    ClusterNode::start(c).await.unwrap()
}

fn range(i: usize, masters: usize) -> SlotSet {
    let lo = (SLOTS * i / masters) as u16;
    let hi = (SLOTS * (i + 1) / masters) as u16;
    SlotSet::from_range(lo..hi)
}

/// `masters` masters splitting the slots, then `replicas` replicas (replica i follows
/// master i), all agreeing on the slot map and OK. Node i saves its state in
/// `dir/node-i.state` if `dir` is given, in memory otherwise.
async fn form(
    masters: usize,
    replicas: usize,
    config: Config,
    seed: u64,
    dir: Option<&Path>,
) -> Cluster {
    let ca = ClusterCa::generate("test cluster").unwrap();
    let faults = Faults::new();
    let mut nodes = Vec::new();
    for i in 0..masters + replicas {
        let store = match dir {
            Some(d) => StateStore::File(d.join(format!("node-{i}.state"))),
            None => StateStore::Memory(MemoryStore::new()),
        };
        nodes.push(start(&ca, seed + i as u64, &config, &faults, store).await);
    }
    for n in &nodes[1..] {
        n.meet(nodes[0].local_addr()).await.unwrap();
    }
    let all: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    eventually(
        "every node to know every node",
        Duration::from_secs(10),
        || async {
            for n in &nodes {
                let v = n.view().await.unwrap();
                if !all.iter().all(|id| v.nodes.iter().any(|x| x.id == *id)) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for (i, m) in nodes[..masters].iter().enumerate() {
        m.add_slots(range(i, masters)).await.unwrap();
    }
    for i in 0..replicas {
        nodes[masters + i].replicate(all[i]).await.unwrap();
    }
    let c = Cluster {
        nodes,
        faults,
        ca,
        config,
    };
    eventually(
        "the cluster to agree and be OK",
        Duration::from_secs(10),
        || c.agrees(masters),
    )
    .await;
    c
}

impl Cluster {
    /// Every node OK, and all agree that master i owns range i.
    async fn agrees(&self, masters: usize) -> bool {
        let mut first = None;
        for n in &self.nodes {
            let v = n.view().await.unwrap();
            if v.state != ClusterState::Ok {
                return false;
            }
            let owners: Vec<Option<NodeId>> = (0..SLOTS as u16).map(|s| v.slots.owner(s)).collect();
            if owners.iter().any(|o| o.is_none()) {
                return false;
            }
            match &first {
                None => first = Some(owners),
                Some(f) if *f != owners => return false,
                Some(_) => {}
            }
        }
        let owners = first.unwrap_or_default();
        (0..masters).all(|i| {
            range(i, masters)
                .iter()
                .all(|s| owners[s as usize] == Some(self.nodes[i].id()))
        })
    }

    async fn writable(&self, i: usize, slot: u16) -> bool {
        matches!(self.nodes[i].write_permission(slot).await, Ok(Ok(())))
    }

    /// Stops every node at once (each waits up to a second for its closes to land).
    async fn shutdown(self) {
        let tasks: Vec<_> = self
            .nodes
            .into_iter()
            .map(|n| tokio::spawn(n.shutdown()))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_three_replicas_form_and_agree() {
    let t = StdInstant::now();
    let c = form(3, 3, Config::with_node_timeout(NODE_TIMEOUT), 100, None).await;
    eprintln!("formed in {:?}", t.elapsed());
    // Each master accepts writes for its slots and refuses the others'.
    for i in 0..3 {
        let mine = range(i, 3).iter().next().unwrap();
        let other = range((i + 1) % 3, 3).iter().next().unwrap();
        eventually(
            "masters to hold their write lease",
            Duration::from_secs(5),
            || c.writable(i, mine),
        )
        .await;
        assert!(!c.writable(i, other).await);
        // Replicas never accept writes.
        assert!(!c.writable(3 + i, mine).await);
    }
    for i in 0..3 {
        let v = c.nodes[3 + i].view().await.unwrap();
        assert_eq!(v.master, Some(c.nodes[i].id()));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_is_promoted_when_its_master_stops() {
    let mut c = form(3, 3, Config::with_node_timeout(NODE_TIMEOUT), 200, None).await;
    let slot = range(0, 3).iter().next().unwrap();
    eventually("master 0 to be writable", Duration::from_secs(5), || {
        c.writable(0, slot)
    })
    .await;
    let old = c.nodes.remove(0);
    let old_id = old.id();
    let t = StdInstant::now();
    old.shutdown().await;
    // nodes[2] is now the replica of the stopped master.
    let replica = c.nodes[2].id();
    eventually(
        "the replica to accept writes",
        Duration::from_secs(15),
        || c.writable(2, slot),
    )
    .await;
    eprintln!(
        "replica accepts writes {:?} after its master stopped",
        t.elapsed()
    );
    eventually(
        "everyone to route the slot to the replica",
        Duration::from_secs(5),
        || async {
            for n in &c.nodes {
                let v = n.view().await.unwrap();
                if v.slots.owner(slot) != Some(replica) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let v = c.nodes[2].view().await.unwrap();
    assert!(v.is_master);
    assert!(v.nodes.iter().any(|n| n.id == old_id));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_minority_master_loses_write_permission() {
    // No replicas, so no failover: the majority keeps the rest of the slots.
    let mut config = Config::with_node_timeout(NODE_TIMEOUT);
    config.require_full_coverage = false;
    let c = form(3, 0, config, 300, None).await;
    let s0 = range(0, 3).iter().next().unwrap();
    let s1 = range(1, 3).iter().next().unwrap();
    eventually("both masters writable", Duration::from_secs(5), || async {
        c.writable(0, s0).await && c.writable(1, s1).await
    })
    .await;
    let ids: Vec<NodeId> = c.nodes.iter().map(|n| n.id()).collect();
    let t = StdInstant::now();
    c.faults.partition(&ids[..1], &ids[1..]);
    eventually(
        "the minority master to stop writing",
        Duration::from_secs(5),
        || async { !c.writable(0, s0).await },
    )
    .await;
    let lost = t.elapsed();
    eprintln!("minority master refused writes {lost:?} after the partition");
    // The lease (0.9 x node_timeout from the last acknowledged ping) bounds this; the
    // margin covers polling and a loaded machine's scheduling.
    assert!(lost < Duration::from_millis(2 * NODE_TIMEOUT), "{lost:?}");
    // The majority goes on.
    eventually(
        "the majority to keep writing",
        Duration::from_secs(5),
        || c.writable(1, s1),
    )
    .await;
    // Healed, the old master gets its lease back.
    c.faults.heal_all();
    eventually(
        "the healed master to write again",
        Duration::from_secs(10),
        || c.writable(0, s0),
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restarts_from_its_state_file() {
    let dir = std::env::temp_dir().join(format!("larder-net-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = form(
        3,
        0,
        Config::with_node_timeout(NODE_TIMEOUT),
        400,
        Some(&dir),
    )
    .await;
    let s0 = range(0, 3).iter().next().unwrap();
    eventually("master 0 writable", Duration::from_secs(5), || {
        c.writable(0, s0)
    })
    .await;
    let old = c.nodes.remove(0);
    let (id, old_addr) = (old.id(), old.local_addr());
    let epoch = old.view().await.unwrap().current_epoch;
    old.shutdown().await;

    // Same id (a fresh certificate from the CA), same state file, another port.
    let mut config = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        c.ca.issue(id).unwrap(),
        c.ca.cert_der(),
        StateStore::File(dir.join("node-0.state")),
    );
    config.cluster = c.config.clone();
    config.faults = c.faults.clone();
    config.idle_timeout = Duration::from_secs(2);
    let back = ClusterNode::start(config).await.unwrap();
    assert_ne!(back.local_addr(), old_addr);
    let v = back.view().await.unwrap();
    assert_eq!(v.nodes.len(), 3, "the node table comes back from the file");
    assert!(v.current_epoch >= epoch);
    assert_eq!(v.slots.owner(s0), Some(id));
    c.nodes.insert(0, back);
    eventually(
        "the restarted master to write again",
        Duration::from_secs(10),
        || c.writable(0, s0),
    )
    .await;
    eventually(
        "peers to learn its new address",
        Duration::from_secs(5),
        || async {
            let addr = c.nodes[0].local_addr().to_string();
            for n in &c.nodes[1..] {
                let v = n.view().await.unwrap();
                if !v.nodes.iter().any(|x| x.id == id && x.addr == addr) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    c.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_hands_the_slots_to_the_replica() {
    let c = form(3, 3, Config::with_node_timeout(NODE_TIMEOUT), 500, None).await;
    let slot = range(1, 3).iter().next().unwrap();
    eventually("master 1 writable", Duration::from_secs(5), || {
        c.writable(1, slot)
    })
    .await;
    let t = StdInstant::now();
    c.nodes[4].failover(FailoverMode::Default).await.unwrap();
    eventually(
        "the replica to accept writes",
        Duration::from_secs(10),
        || c.writable(4, slot),
    )
    .await;
    eprintln!("manual failover took {:?}", t.elapsed());
    eventually(
        "the old master to follow its replica",
        Duration::from_secs(5),
        || async { c.nodes[1].view().await.unwrap().master == Some(c.nodes[4].id()) },
    )
    .await;
    assert!(!c.writable(1, slot).await);
    c.shutdown().await;
}
