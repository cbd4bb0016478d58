//! `ClusterCache` nodes in one process over real QUIC on 127.0.0.1: routing (local,
//! forwarded, MOVED followed), CROSSSLOT, replica reads, replication and `wait`,
//! `min_replicas_to_write`, failover when a master stops, and a partition through the
//! fault switch. The multi-process SIGKILL tests are in `cluster_process.rs`.
#![cfg(feature = "cluster")]

use std::time::{Duration, Instant};

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::{NodeFlags, Rng, SLOTS};
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, ClusterError, ClusterOp, ClusterReply, Faults, KeySlot,
    NodeId, ReadFrom, SlotSet, StateStore, WriteOptions,
};
use larder::Cache;

type Node = ClusterCache<String, String>;

const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

fn range(i: usize, masters: usize) -> SlotSet {
    let lo = (SLOTS * i / masters) as u16;
    let hi = (SLOTS * (i + 1) / masters) as u16;
    SlotSet::from_range(lo..hi)
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct Mesh {
    nodes: Vec<Node>,
    faults: Faults,
    ca: ClusterCa,
}

/// `masters` masters splitting the slots and `replicas` replicas (replica i follows
/// master i % masters), formed and agreeing; replicas streaming.
async fn mesh(
    masters: usize,
    replicas: usize,
    seed: u64,
    tune: impl Fn(ClusterConfig) -> ClusterConfig,
) -> Mesh {
    let ca = ClusterCa::generate("test cluster").unwrap();
    let faults = Faults::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..masters + replicas {
        nodes.push(start_node(&ca, &faults, seed + i as u64, &tune).await);
    }
    for n in &nodes[1..] {
        n.node().meet(nodes[0].local_addr()).await.unwrap();
    }
    let all: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    eventually(
        "every node to know every node",
        Duration::from_secs(10),
        || async {
            nodes
                .iter()
                .all(|n| all.iter().all(|id| n.routing().node(*id).is_some()))
        },
    )
    .await;
    for (i, m) in nodes[..masters].iter().enumerate() {
        m.node().add_slots(range(i, masters)).await.unwrap();
    }
    for i in 0..replicas {
        nodes[masters + i]
            .node()
            .replicate(all[i % masters])
            .await
            .unwrap();
    }
    let m = Mesh { nodes, faults, ca };
    m.settle(masters).await;
    m
}

async fn start_node(
    ca: &ClusterCa,
    faults: &Faults,
    seed: u64,
    tune: &impl Fn(ClusterConfig) -> ClusterConfig,
) -> Node {
    let id = NodeId::random(&mut Rng::new(seed));
    let config = ClusterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    )
    .node_timeout(NODE_TIMEOUT)
    .faults(faults.clone());
    Cache::builder()
        .cluster(tune(config))
        .start()
        .await
        .unwrap()
}

impl Mesh {
    /// Every node OK with every slot assigned, masters writable, replicas streaming.
    async fn settle(&self, masters: usize) {
        eventually("the mesh to settle", Duration::from_secs(15), || async {
            self.nodes.iter().enumerate().all(|(i, n)| {
                let rt = n.routing();
                let info = n.info();
                let r = info.replication.as_ref().unwrap();
                rt.cluster_ok
                    && rt.slots.assigned() == SLOTS
                    && if i < masters {
                        n.node().replication().unwrap().check_write().is_ok()
                    } else {
                        r.master_link_status == Some("up")
                    }
            })
        })
        .await;
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

/// A key whose slot master `i` of `masters` serves.
fn key_of(i: usize, masters: usize, n: usize) -> String {
    let r = range(i, masters);
    (0..)
        .map(|j| format!("key-{n}-{j}"))
        .find(|k| r.contains(k.slot()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_read_through_any_other() {
    let m = mesh(3, 3, 1000, |c| c).await;
    let mut keys = Vec::new();
    for n in 0..60usize {
        let k = format!("user:{n}");
        let via = &m.nodes[n % 6];
        let r = via.insert(k.clone(), format!("v{n}")).await;
        // A write through a replica is forwarded to the master like any other.
        r.unwrap_or_else(|e| panic!("insert {k} via node {}: {e}", n % 6));
        keys.push(k);
    }
    for (n, k) in keys.iter().enumerate() {
        let via = &m.nodes[(n + 1) % 6];
        assert_eq!(via.get(k).await.unwrap(), Some(format!("v{n}")), "{k}");
        assert!(via.contains(k).await.unwrap());
    }
    // Local slots are served in-process: the owner's own cache holds the key.
    for k in &keys {
        let owner = m.nodes[0].routing().slots.owner(k.slot()).unwrap();
        let node = m.nodes.iter().find(|n| n.id() == owner).unwrap();
        assert!(node.local().contains(k));
    }
    // Removal, TTL and persist through remote nodes.
    assert!(m.nodes[4].remove(&keys[0]).await.unwrap());
    assert_eq!(m.nodes[2].get(&keys[0]).await.unwrap(), None);
    assert!(m.nodes[5]
        .expire(&keys[1], Duration::from_secs(100))
        .await
        .unwrap());
    match m.nodes[3].ttl(&keys[1]).await.unwrap() {
        larder::Ttl::Remaining(ms) => assert!(ms > 90_000 && ms <= 100_000),
        other => panic!("ttl {other:?}"),
    }
    let far = 4_102_444_800_000; // 2100-01-01
    m.nodes[2]
        .insert_expiring_at(keys[2].clone(), "x".into(), far)
        .await
        .unwrap();
    assert!(m.nodes[4].expire_at(&keys[3], far).await.unwrap());
    for k in &keys[2..4] {
        assert!(matches!(
            m.nodes[5].ttl(k).await.unwrap(),
            larder::Ttl::Remaining(_)
        ));
    }
    assert!(m.nodes[1].persist(&keys[1]).await.unwrap());
    assert_eq!(
        m.nodes[0].ttl(&keys[1]).await.unwrap(),
        larder::Ttl::Persistent
    );
    m.shutdown().await;
}

/// Tasks of one node missing the same key (served by another node) share one load; the
/// value is written through the owner like any insert; a loader error reaches every
/// waiting task and is not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_loads_a_remote_key_once_per_node() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TASKS: usize = 50;
    let m = mesh(2, 0, 3000, |c| c).await;
    let key = key_of(1, 2, 0); // served by node 1, loaded through node 0
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (node, key, loads) = (m.nodes[0].clone(), key.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                let n2 = node.clone();
                node.get_with(key, async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // Hold the load until every other task waits on it.
                    eventually("every task to wait", Duration::from_secs(60), || async {
                        n2.local().loading_waiters() == TASKS - 1
                    })
                    .await;
                    "loaded".to_string()
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "loaded");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(
        m.nodes[1].local().contains(&key),
        "written through the owner"
    );
    assert!(!m.nodes[0].local().contains(&key));

    let other = key_of(1, 2, 1);
    let r = m.nodes[0]
        .try_get_with(other.clone(), async { Err::<String, _>("backend down") })
        .await;
    assert!(matches!(r, Err(larder::LoadError::Loader(e)) if *e == "backend down"));
    assert_eq!(m.nodes[1].get(&other).await.unwrap(), None, "not cached");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_operations_need_one_slot() {
    let m = mesh(3, 0, 2000, |c| c).await;
    let a = "{cart:7}:items".to_string();
    let b = "{cart:7}:total".to_string();
    // Same hash tag: one slot, forwarded from every node.
    for via in &m.nodes {
        let out = via
            .multi(vec![
                ClusterOp::Insert(a.clone(), "3".into(), None),
                ClusterOp::Insert(b.clone(), "42".into(), Some(Duration::from_secs(60))),
                ClusterOp::Get(a.clone()),
            ])
            .await
            .unwrap();
        assert_eq!(out[2], ClusterReply::Value(Some("3".into())));
        let out = via
            .batch(vec![
                ClusterOp::Get(b.clone()),
                ClusterOp::Remove(a.clone()),
            ])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                ClusterReply::Value(Some("42".into())),
                ClusterReply::Bool(true)
            ]
        );
    }
    // Different slots: refused with CROSSSLOT before anything is sent.
    let x = key_of(0, 3, 1);
    let y = key_of(1, 3, 1);
    let e = m.nodes[0]
        .multi(vec![
            ClusterOp::Insert(x.clone(), "1".into(), None),
            ClusterOp::Insert(y.clone(), "2".into(), None),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::CrossSlot { .. }), "{e}");
    assert!(e.to_string().starts_with("CROSSSLOT"));
    assert_eq!(m.nodes[1].get(&x).await.unwrap(), None);
    // A transaction closure runs only where its slot is served.
    let owner = m
        .nodes
        .iter()
        .position(|n| n.routing().slots.owner(x.slot()) == Some(n.id()))
        .unwrap();
    let r = m.nodes[owner].transaction(std::slice::from_ref(&x), |tx| {
        tx.insert(x.clone(), "t".into());
        Ok::<_, ()>(())
    });
    assert!(r.is_ok());
    let other = (owner + 1) % 3;
    let r = m.nodes[other].transaction(std::slice::from_ref(&x), |tx| {
        tx.insert(x.clone(), "u".into());
        Ok::<_, ()>(())
    });
    assert!(matches!(
        r,
        Err(larder::cluster::TransactionError::Cluster(
            ClusterError::NotLocal { .. }
        ))
    ));
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_receive_writes_and_acknowledge_them() {
    let m = mesh(3, 3, 3000, |c| c).await;
    let k = key_of(0, 3, 0);
    // The write returns only once the replica acknowledged it.
    m.nodes[1]
        .insert_with(
            k.clone(),
            "acked".into(),
            None,
            WriteOptions::acked_by(1, Duration::from_secs(5)),
        )
        .await
        .unwrap();
    // Node 3 replicates master 0: it holds the key locally and serves replica reads.
    assert_eq!(m.nodes[3].local().get(&k), Some("acked".into()));
    assert_eq!(
        m.nodes[3].get_from(&k, ReadFrom::Replica).await.unwrap(),
        Some("acked".into())
    );
    // A replica read through another node goes to a replica of the owner.
    assert_eq!(
        m.nodes[2].get_from(&k, ReadFrom::Replica).await.unwrap(),
        Some("acked".into())
    );
    // More writes, then WAIT on the master.
    for n in 0..100 {
        m.nodes[0]
            .insert(key_of(0, 3, n + 10), n.to_string())
            .await
            .unwrap();
    }
    assert_eq!(m.nodes[0].wait(1, Duration::from_secs(5)).await, 1);
    assert_eq!(m.nodes[3].local().len(), m.nodes[0].local().len());
    // Asking for more replicas than exist times out with what it got.
    let e = m.nodes[0]
        .insert_with(
            key_of(0, 3, 7),
            "x".into(),
            None,
            WriteOptions::acked_by(2, Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ClusterError::NotAcknowledged {
            acked: 1,
            needed: 2
        }
    );
    // info(): roles, replicas and offsets.
    let info = m.nodes[0].info();
    let r = info.replication.as_ref().unwrap();
    assert_eq!(r.role, "master");
    assert_eq!(r.connected_slaves, 1);
    assert_eq!(r.slaves[0].id, m.nodes[3].id().to_string());
    assert_eq!(r.slaves[0].state, "online");
    let text = info.to_string();
    assert!(text.contains("# Replication\nrole:master\n"), "{text}");
    assert!(text.contains("slave0:id="), "{text}");
    assert!(
        text.contains("# Cluster\ncluster_enabled:1\ncluster_state:ok"),
        "{text}"
    );
    let info = m.nodes[3].info();
    let r = info.replication.as_ref().unwrap();
    assert_eq!(r.role, "slave");
    assert_eq!(r.master_link_status, Some("up"));
    assert_eq!(
        r.master_id.as_deref(),
        Some(m.nodes[0].id().to_string().as_str())
    );
    assert_eq!(
        r.slave_repl_offset,
        Some(m.nodes[0].info().replication.unwrap().master_repl_offset)
    );
    // A value larger than the old 16 MiB message cap replicates like any other.
    let big = "x".repeat(20 << 20);
    let bk = key_of(0, 3, 8);
    m.nodes[0]
        .insert_with(
            bk.clone(),
            big.clone(),
            None,
            WriteOptions::acked_by(1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(
        m.nodes[3].local().get(&bk).map(|v| v.len()),
        Some(big.len())
    );
    // A replica refuses local writes.
    let e = m.nodes[3]
        .local()
        .insert(k.clone(), "no".into())
        .unwrap_err();
    assert!(e.to_string().starts_with("READONLY"), "{e}");
    assert_eq!(
        m.nodes[5].cluster_len().await.unwrap(),
        m.nodes[0].local_len() + m.nodes[1].local_len() + m.nodes[2].local_len()
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_to_write_refuses_writes_without_replicas() {
    let m = mesh(3, 3, 4000, |c| {
        c.min_replicas_to_write(1, Duration::from_millis(1500))
    })
    .await;
    let k = key_of(0, 3, 3);
    m.nodes[2].insert(k.clone(), "1".into()).await.unwrap();
    // Cut master 0 off from its replica (node 3) only: the cluster stays healthy, but
    // the replica's acknowledgements stop, and after max_lag writes are refused.
    m.faults.cut(m.nodes[0].id(), m.nodes[3].id());
    let t = Instant::now();
    let mut refused = None;
    while t.elapsed() < Duration::from_secs(8) {
        match m.nodes[1].insert(k.clone(), "2".into()).await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("writes were never refused");
    assert!(e.to_string().starts_with("NOREPLICAS"), "{e}");
    eprintln!("refused after {:?}: {e}", t.elapsed());
    // Reads go on.
    assert!(m.nodes[1].get(&k).await.unwrap().is_some());
    m.faults.heal_all();
    eventually("writes to resume", Duration::from_secs(10), || async {
        m.nodes[1].insert(k.clone(), "3".into()).await.is_ok()
    })
    .await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_takes_over_when_its_master_stops() {
    let m = mesh(3, 3, 5000, |c| c).await;
    let mut acked = Vec::new();
    for n in 0..200 {
        let k = key_of(n % 3, 3, n);
        m.nodes[(n + 1) % 6]
            .insert_with(
                k.clone(),
                n.to_string(),
                None,
                WriteOptions::acked_by(1, Duration::from_secs(5)),
            )
            .await
            .unwrap();
        acked.push((k, n.to_string()));
    }
    let old = m.nodes[0].id();
    let k = key_of(0, 3, 999);
    m.nodes[0].shutdown().await;
    let t = Instant::now();
    eventually(
        "master 0's slots to accept writes again",
        Duration::from_secs(10),
        || async { m.nodes[1].insert(k.clone(), "after".into()).await.is_ok() },
    )
    .await;
    eprintln!("writes resumed {:?} after the master stopped", t.elapsed());
    let rt = m.nodes[1].routing();
    assert_eq!(rt.slots.owner(k.slot()), Some(m.nodes[3].id()));
    assert_ne!(rt.slots.owner(k.slot()), Some(old));
    // Every write acknowledged by a replica survived.
    for (k, v) in &acked {
        assert_eq!(m.nodes[2].get(k).await.unwrap().as_ref(), Some(v), "{k}");
    }
    let info = m.nodes[3].info();
    assert_eq!(info.replication.as_ref().unwrap().role, "master");
    assert!(info.replication.as_ref().unwrap().master_replid2.is_some());
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_minority_master_stops_writing() {
    let m = mesh(3, 3, 6000, |c| c).await;
    let k = key_of(0, 3, 5);
    m.nodes[0]
        .local()
        .insert(k.clone(), "before".into())
        .unwrap();
    let ids: Vec<NodeId> = m.nodes.iter().map(|n| n.id()).collect();
    // Two gates of the slot's possible owners sampled throughout: never both open.
    let gates = [0, 3].map(|i| m.nodes[i].node().replication().unwrap().clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a1 = gates[0].check_write().is_ok();
                let b = gates[1].check_write().is_ok();
                let a2 = gates[0].check_write().is_ok();
                assert!(!(a1 && b && a2), "two writable masters for one slot");
                samples += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            samples
        })
    };
    // Master 0 alone on one side.
    m.faults.partition(&ids[..1], &ids[1..]);
    let t = Instant::now();
    eventually(
        "the minority master to refuse writes",
        Duration::from_secs(5),
        || async {
            m.nodes[0]
                .local()
                .insert(k.clone(), "minority".into())
                .is_err()
        },
    )
    .await;
    let refused_after = t.elapsed();
    eprintln!("minority master refused writes after {refused_after:?}");
    assert!(
        refused_after <= NODE_TIMEOUT + Duration::from_millis(500),
        "{refused_after:?}"
    );
    // The majority promotes node 3; from then on only it may write the slot, and the
    // old master never accepts a write again while cut off.
    eventually(
        "the majority to promote the replica",
        Duration::from_secs(10),
        || async {
            m.nodes[3]
                .local()
                .insert(k.clone(), "majority".into())
                .is_ok()
        },
    )
    .await;
    assert!(m.nodes[0]
        .local()
        .insert(k.clone(), "minority".into())
        .is_err());
    m.faults.heal_all();
    // After healing, the old master rejoins as a replica of the new one and converges.
    eventually(
        "the old master to follow the new one",
        Duration::from_secs(15),
        || async {
            let r = m.nodes[0].info().replication.unwrap();
            r.role == "slave"
                && r.master_link_status == Some("up")
                && m.nodes[0].local().get(&k).as_deref() == Some("majority")
        },
    )
    .await;
    for n in &m.nodes {
        assert_eq!(n.get(&k).await.unwrap().as_deref(), Some("majority"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().expect("two writable masters for one slot");
    assert!(samples > 100, "{samples}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_wrappers_work_from_plain_threads() {
    let m = mesh(3, 0, 7000, |c| c).await;
    let nodes = m.nodes.clone();
    let done = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            for n in 0..30usize {
                let k = format!("blocking:{n}");
                nodes[n % 3]
                    .blocking()
                    .insert(k.clone(), n.to_string())
                    .unwrap();
                let got = nodes[(n + 1) % 3].blocking().get(&k).unwrap();
                assert_eq!(got, Some(n.to_string()));
            }
            nodes[0].blocking().cluster_len().unwrap()
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(done, 30);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_to_a_loaded_master_syncs_fully() {
    let mut m = mesh(3, 0, 8000, |c| c).await;
    let mut written = Vec::new();
    for n in 0..3000 {
        let k = key_of(0, 3, n);
        let ttl = (n % 3 == 0).then(|| Duration::from_secs(3600));
        m.nodes[0]
            .insert_with(k.clone(), format!("v{n}"), ttl, WriteOptions::default())
            .await
            .unwrap();
        written.push(k);
    }
    let replica = start_node(&m.ca, &m.faults, 8100, &|c| c).await;
    replica.node().meet(m.nodes[0].local_addr()).await.unwrap();
    let master = m.nodes[0].id();
    eventually(
        "the new node to know the master",
        Duration::from_secs(10),
        || async { replica.routing().node(master).is_some() },
    )
    .await;
    replica.node().replicate(master).await.unwrap();
    // Writes go on during the sync.
    for n in 0..200 {
        m.nodes[1]
            .insert(key_of(0, 3, 10_000 + n), "late".into())
            .await
            .unwrap();
    }
    eventually("the replica to stream", Duration::from_secs(15), || async {
        replica.info().replication.unwrap().master_link_status == Some("up")
            && replica.local().len() == m.nodes[0].local().len()
    })
    .await;
    let r = replica.info().replication.unwrap();
    assert_eq!(r.sync_full, 1, "{r:?}");
    for (n, k) in written.iter().enumerate() {
        assert_eq!(replica.local().get(k), Some(format!("v{n}")));
        let ttl = replica.local().ttl(k);
        assert_eq!(
            matches!(ttl, larder::Ttl::Remaining(_)),
            n % 3 == 0,
            "{k}: {ttl:?}"
        );
    }
    m.nodes.push(replica);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_keeps_every_acknowledged_write() {
    let m = mesh(3, 3, 9000, |c| c).await;
    let writer = {
        let node = m.nodes[0].clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(4) {
                let k = key_of(0, 3, 50_000 + n);
                if node.insert(k.clone(), n.to_string()).await.is_ok() {
                    acked.push((k, n.to_string()));
                }
                n += 1;
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.nodes[3]
        .node()
        .failover(larder::cluster::FailoverMode::Default)
        .await
        .unwrap();
    eventually(
        "the replica to take over",
        Duration::from_secs(10),
        || async { m.nodes[3].info().replication.unwrap().role == "master" },
    )
    .await;
    let acked = writer.await.unwrap();
    assert!(acked.len() > 100, "{}", acked.len());
    for (k, v) in &acked {
        assert_eq!(
            m.nodes[3].local().get(k).as_ref(),
            Some(v),
            "acknowledged {k} lost"
        );
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_redirects_are_followed_during_a_slot_move() {
    let m = mesh(3, 0, 10_000, |c| c).await;
    // A hash tag whose slot master 0 serves.
    let tag = (0..)
        .map(|n| format!("mig{n}"))
        .find(|t| range(0, 3).contains(t.slot()))
        .unwrap();
    let slot = tag.slot();
    let (a, b) = (format!("{{{tag}}}:a"), format!("{{{tag}}}:b"));
    m.nodes[2]
        .insert(a.clone(), "on the source".into())
        .await
        .unwrap();
    let (src, dst) = (m.nodes[0].id(), m.nodes[1].id());
    m.nodes[0]
        .node()
        .with_node(move |n, _| n.set_slot_migrating(slot, dst))
        .await
        .unwrap()
        .unwrap();
    m.nodes[1]
        .node()
        .with_node(move |n, _| n.set_slot_importing(slot, src))
        .await
        .unwrap()
        .unwrap();
    eventually(
        "both tables to show the move",
        Duration::from_secs(5),
        || async {
            m.nodes[0].routing().slots.migrating_to(slot) == Some(dst)
                && m.nodes[1].routing().slots.importing_from(slot) == Some(src)
        },
    )
    .await;
    // A key still on the source is served there.
    assert_eq!(
        m.nodes[2].get(&a).await.unwrap().as_deref(),
        Some("on the source")
    );
    // A new key is not on the source: ASK sends it to the target, which serves it
    // because the request comes with ASKING.
    m.nodes[2]
        .insert(b.clone(), "on the target".into())
        .await
        .unwrap();
    assert!(m.nodes[1].local().contains(&b));
    assert!(!m.nodes[0].local().contains(&b));
    assert_eq!(
        m.nodes[2].get(&b).await.unwrap().as_deref(),
        Some("on the target")
    );
    assert_eq!(
        m.nodes[0].get(&b).await.unwrap().as_deref(),
        Some("on the target")
    );
    // Without ASKING the target refuses the slot (MOVED back to the owner).
    assert_eq!(m.nodes[1].routing().slots.owner(slot), Some(src));
    // A multi-key operation with keys on both sides cannot run anywhere yet.
    let e = m.nodes[2]
        .multi(vec![ClusterOp::Get(a.clone()), ClusterOp::Get(b.clone())])
        .await
        .unwrap_err();
    assert_eq!(e, ClusterError::TooManyRedirects(slot));
    m.shutdown().await;
}

/// A refusal by a master whose write lease lapsed (its driver ran late, or too few
/// masters acknowledged its slots in time): nothing was applied, and a client retries.
fn lease_lapsed(e: &ClusterError) -> bool {
    let text = e.to_string();
    text.contains("masters needed acknowledge") || text.contains("write permission lapsed")
}

/// Slots move between masters while writers and readers work through every node:
/// afterwards every acknowledged write is there, exactly once, on its slot's owner,
/// and no operation saw an error (redirects are followed inside the library).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing() {
    use larder::cluster::admin::Admin;
    use larder::cluster::admin_wire::to_ranges;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    // Three masters; master 0 has a replica, which must follow the moves too.
    let m = mesh(3, 1, 7000, |c| c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    // Refusals of a master whose write lease lapsed: on a loaded machine a node's
    // driver can run late, and the gate then refuses (nothing is applied). They are no
    // fault of the moves; any other error is.
    let lapses = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    // Writer w owns keys `w{w}:{i}`: the last value it was acknowledged for is what
    // the key must hold at the end (or absent, if the last acknowledged op deleted it).
    let mut writers = Vec::new();
    for w in 0..4usize {
        let via = m.nodes[w % 4].clone();
        let (stop, errors, ops) = (stop.clone(), errors.clone(), ops.clone());
        let lapses = lapses.clone();
        writers.push(tokio::spawn(async move {
            let mut last: HashMap<String, Option<String>> = HashMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 2000 {
                let k = format!("w{w}:{}", n % 700);
                let r = if n % 11 == 10 {
                    via.remove(&k).await.map(|_| None)
                } else {
                    let v = format!("{n}");
                    via.insert(k.clone(), v.clone()).await.map(|_| Some(v))
                };
                match r {
                    Ok(v) => {
                        last.insert(k, v);
                    }
                    Err(e) if lease_lapsed(&e) => {
                        lapses.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("writer {w}: {k}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            last
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2usize {
        let via = m.nodes[(r + 1) % 4].clone();
        let (stop, errors) = (stop.clone(), errors.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("w{}:{}", n % 4, (n * 7) % 700);
                if let Err(e) = via.get(&k).await {
                    eprintln!("reader {r}: {k}: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    // Let the keys exist before the moves.
    eventually("some writes", Duration::from_secs(60), || async {
        ops.load(Ordering::Relaxed) > 3000
    })
    .await;

    // Half of master 0's slots to master 1, asked over QUIC as larder-cli does;
    // then all of master 2's slots to master 0, in-process. (A node moves slots one
    // direction at a time.)
    let tool =
        m.ca.issue_as(
            NodeId::random(&mut Rng::new(99)),
            &[larder::cluster::larder_cluster::net::Role::Admin],
        )
        .unwrap();
    let admin = Admin::new(&tool, &m.ca.cert_der(), Duration::from_secs(60)).unwrap();
    let half: Vec<u16> = range(0, 3).iter().take(2730).collect();
    let to1 = m.nodes[1].id();
    let a0 = m.nodes[0].local_addr();
    let first = admin
        .migrate_slots(a0, to1, to_ranges(half.iter().copied()), 50)
        .await
        .unwrap();
    let second = m.nodes[2]
        .migrate_slots(&range(2, 3), m.nodes[0].id(), 100)
        .await
        .unwrap();
    assert_eq!(first.slots, 2730);
    assert_eq!(second.slots as usize, range(2, 3).len());
    assert!(first.keys > 0 && second.keys > 0, "{first:?} {second:?}");

    // Writers go on a little after the hand-over (MOVED is followed), then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "operations saw errors");
    eprintln!(
        "{} writes refused while a lease had lapsed",
        lapses.load(Ordering::Relaxed)
    );

    // Every node agrees on the new owners.
    eventually(
        "the hand-overs to spread",
        Duration::from_secs(60),
        || async {
            m.nodes.iter().all(|n| {
                let rt = n.routing();
                half.iter().all(|&s| rt.slots.owner(s) == Some(to1))
                    && range(2, 3)
                        .iter()
                        .all(|s| rt.slots.owner(s) == Some(m.nodes[0].id()))
                    && rt.slots.migrating().is_empty()
                    && rt.slots.importing().is_empty()
            })
        },
    )
    .await;
    // Each acknowledged write, through a node that serves none of it.
    for (k, v) in &expected {
        assert_eq!(&m.nodes[3].get(k).await.unwrap(), v, "{k}");
    }
    // Exactly once, on the owner: no master holds a key of a slot it does not serve,
    // and the masters hold as many keys as are live.
    let live = expected.values().filter(|v| v.is_some()).count();
    let mut held = 0;
    // Master 2 handed over its last slots: like a Redis master emptied by resharding,
    // it now replicates the node that took them (and holds its keys as a replica).
    eventually(
        "master 2 to follow master 0",
        Duration::from_secs(60),
        || async {
            m.nodes[2]
                .routing()
                .node(m.nodes[2].id())
                .and_then(|v| v.master)
                == Some(m.nodes[0].id())
        },
    )
    .await;
    for n in &m.nodes[..2] {
        let rt = n.routing();
        n.local().run_pending_tasks();
        let mut cursor = 0;
        loop {
            let page = n.local().scan(cursor, None, 1000);
            for k in page.keys {
                assert_eq!(
                    rt.slots.owner(k.slot()),
                    Some(n.id()),
                    "{k} held by a non-owner"
                );
                held += 1;
            }
            cursor = page.cursor;
            if cursor == 0 {
                break;
            }
        }
    }
    assert_eq!(held, live);
    // The replica of master 0 dropped what its master moved away.
    eventually("the replica to follow", Duration::from_secs(60), || async {
        m.nodes[3].local().len() == m.nodes[0].local().len()
    })
    .await;
    // A replica refuses to drop stray keys (its master decides), before deleting any.
    let held = m.nodes[3].local().len();
    let slot = m.nodes[3].local().scan(0, None, 10).keys[0].slot();
    match m.nodes[3]
        .admin(
            None,
            larder::cluster::admin_wire::AdminRequest::DropSlotKeys(slot),
        )
        .await
    {
        larder::cluster::admin_wire::AdminResponse::Error(e) => {
            assert!(e.starts_with("READONLY"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.nodes[3].local().len(), held);
    m.shutdown().await;
}

/// A move cut off half-way (the target unreachable) leaves the slots MIGRATING and
/// IMPORTING with the keys split between the two nodes, all still readable; moving
/// again resumes and finishes it. Keys left on a node that does not serve their slot
/// are handed to the owner, which keeps its own copies, by `DropSlotKeys`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_move_resumes_and_stray_keys_go_to_the_owner() {
    use larder::cluster::admin_wire::{AdminRequest, AdminResponse};

    let m = mesh(2, 0, 7100, |c| c).await;
    let (a, b) = (&m.nodes[0], &m.nodes[1]);
    // Half of a's slots: it keeps serving the rest.
    let slots = SlotSet::from_range(0..(SLOTS / 4) as u16);
    let keys: Vec<String> = (0..3000)
        .map(|i| format!("k{i}"))
        .filter(|k| slots.contains(k.slot()))
        .collect();
    for k in &keys {
        a.insert(k.clone(), format!("v-{k}")).await.unwrap();
    }
    // Cut the link once the move is under way.
    let cutter = {
        let (faults, a_id, b_id, b) = (m.faults.clone(), a.id(), b.id(), b.clone());
        tokio::spawn(async move {
            while b.local().len() < 200 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            faults.cut(a_id, b_id);
        })
    };
    let r = a.migrate_slots(&slots, b.id(), 20).await;
    cutter.await.unwrap();
    assert!(r.is_err(), "the move should fail once cut: {r:?}");
    let rt = a.routing();
    assert!(!rt.slots.migrating().is_empty(), "slots left MIGRATING");
    assert!(!b.local().is_empty() && !a.local().is_empty());
    // At most the batch in flight when the link went is on both (the source keeps
    // its copy until the target's answer arrives; its copy is the one that counts).
    let both = a.local().len() + b.local().len() - keys.len();
    assert!(both <= 20, "{both} keys on both nodes");
    m.faults.heal_all();
    // Every key readable while the move is interrupted (present here, or ASK there).
    for k in keys.iter().step_by(17) {
        assert_eq!(a.get(k).await.unwrap(), Some(format!("v-{k}")), "{k}");
    }
    let done = a.migrate_slots(&slots, b.id(), 100).await.unwrap();
    assert!(done.slots > 0 && done.keys > 0, "{done:?}");
    assert!(slots
        .iter()
        .all(|s| a.routing().slots.owner(s) == Some(b.id())));
    assert_eq!(a.local().len(), 0);
    assert_eq!(b.local().len(), keys.len());
    for k in keys.iter().step_by(13) {
        assert_eq!(a.get(k).await.unwrap(), Some(format!("v-{k}")), "{k}");
    }

    // Strays: copies on `a` of keys whose slot `b` now serves (as a move that died
    // between the target's apply and the source's delete leaves them), one of them
    // older than the owner's copy and one the owner lacks.
    let slot = keys
        .iter()
        .map(|k| k.slot())
        .find(|&s| keys.iter().filter(|k| k.slot() == s).count() >= 2)
        .unwrap();
    let same_slot: Vec<&String> = keys.iter().filter(|k| k.slot() == slot).collect();
    b.insert(same_slot[0].clone(), "newer".into())
        .await
        .unwrap();
    b.local().remove(same_slot[1]).unwrap();
    a.local()
        .insert(same_slot[0].clone(), "stale".into())
        .unwrap();
    a.local()
        .insert(same_slot[1].clone(), "only-here".into())
        .unwrap();
    match a.admin(None, AdminRequest::DropSlotKeys(slot)).await {
        AdminResponse::Count(2) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(a.local().len(), 0);
    assert_eq!(b.get(same_slot[0]).await.unwrap().as_deref(), Some("newer"));
    assert_eq!(
        b.get(same_slot[1]).await.unwrap().as_deref(),
        Some("only-here")
    );
    // The owner refuses to drop its own slot's keys.
    match b.admin(None, AdminRequest::DropSlotKeys(slot)).await {
        AdminResponse::Error(e) => assert!(e.contains("served by this node"), "{e}"),
        other => panic!("{other:?}"),
    }
    m.shutdown().await;
}

/// Certificate roles are checked by the node that receives a request: a read-only
/// client's certificate may read and query, but not write, administer (Shutdown,
/// DropSlotKeys, Meet) or take part in a slot move; an administrator's may; a node's
/// may take part in slot moves but not administer; one naming no role (issued before
/// roles) is taken as node and administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_roles_are_checked_by_the_receiver() {
    use larder::cluster::admin::{Admin, AdminError};
    use larder::cluster::admin_wire::{AdminRequest, SlotState};
    use larder::cluster::larder_cluster::net::Role;
    use larder::cluster::wire::{WireOp, WireRequest, WireResponse};
    use larder::Codec;

    let m = mesh(1, 0, 7100, |c| c).await;
    let node = &m.nodes[0];
    let addr = node.local_addr();
    node.insert("k".into(), "v".into()).await.unwrap();
    let tool = |seed: u64, roles: &[Role]| {
        let id = NodeId::random(&mut Rng::new(seed));
        let identity = if roles.is_empty() {
            m.ca.issue_without_roles(id).unwrap()
        } else {
            m.ca.issue_as(id, roles).unwrap()
        };
        Admin::new(&identity, &m.ca.cert_der(), Duration::from_secs(10)).unwrap()
    };
    let op = |op: WireOp| {
        WireRequest {
            flags: 0,
            ack_replicas: 0,
            ack_timeout_ms: 0,
            op,
        }
        .encode()
    };
    let key = "k".to_string().encode().unwrap();
    let get = op(WireOp::Get(key.clone()));
    let set = op(WireOp::Set {
        key: key.clone(),
        value: "w".to_string().encode().unwrap(),
        expire_at_ms: None,
    });
    let noperm = |r: Result<(), AdminError>, what: &str| match r {
        Err(AdminError::Refused(e)) => {
            assert!(e.starts_with("NOPERM"), "{what}: {e}");
            assert!(e.contains("admin"), "{what} names the role it needs: {e}");
        }
        other => panic!("{what} from a client certificate: {other:?}"),
    };

    // A read-only client: reads and queries pass.
    let client = tool(1, &[Role::Client]);
    assert_eq!(client.nodes(addr).await.unwrap().nodes.len(), 1);
    let (_, r) = client.request_raw(addr, &get).await.unwrap();
    assert!(
        matches!(
            WireResponse::decode(&r).unwrap(),
            WireResponse::Value(Some(_))
        ),
        "a read from a client certificate"
    );
    // Writes are refused, the value unchanged.
    let (_, r) = client.request_raw(addr, &set).await.unwrap();
    match WireResponse::decode(&r).unwrap() {
        WireResponse::Error(_, e) => assert!(e.starts_with("NOPERM"), "{e}"),
        other => panic!("a write from a client certificate: {other:?}"),
    }
    assert_eq!(node.local().get(&"k".to_string()), Some("v".to_string()));
    // Administration is refused, and nothing happens.
    noperm(client.ok(addr, &AdminRequest::Shutdown).await, "Shutdown");
    noperm(
        client.drop_slot_keys(addr, 0).await.map(|_| ()),
        "DropSlotKeys",
    );
    noperm(
        client
            .ok(addr, &AdminRequest::Meet("127.0.0.1:9".into()))
            .await,
        "Meet",
    );
    match client
        .ok(addr, &AdminRequest::SetSlot(0, SlotState::Stable))
        .await
    {
        Err(AdminError::Refused(e)) => assert!(e.contains("node or admin"), "{e}"),
        other => panic!("SetSlot from a client certificate: {other:?}"),
    }
    // A node's certificate takes part in slot moves, but does not administer.
    let peer = tool(2, &[Role::Node]);
    peer.ok(addr, &AdminRequest::SetSlot(0, SlotState::Stable))
        .await
        .unwrap();
    noperm(
        peer.ok(addr, &AdminRequest::Shutdown).await,
        "Shutdown from a node",
    );
    // Nothing above asked the node to stop.
    let stopped = tokio::time::timeout(Duration::from_millis(1), node.shutdown_requested());
    assert!(
        stopped.await.is_err(),
        "a refused Shutdown stopped the node"
    );

    // An administrator writes and administers; so does a certificate naming no role.
    let legacy = tool(3, &[]);
    let (_, r) = legacy.request_raw(addr, &set).await.unwrap();
    assert_eq!(WireResponse::decode(&r).unwrap(), WireResponse::Done);
    let admin = tool(4, &[Role::Admin]);
    // (Past the role check, the node refuses to drop keys of a slot it serves.)
    match admin.drop_slot_keys(addr, 0).await {
        Err(AdminError::Refused(e)) => assert!(e.starts_with("ERR slot 0 is served"), "{e}"),
        other => panic!("DropSlotKeys from an administrator: {other:?}"),
    }
    admin.ok(addr, &AdminRequest::Shutdown).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.shutdown_requested())
        .await
        .expect("Shutdown from an administrator");
    for a in [client, peer, legacy, admin] {
        a.close().await;
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_full_coverage_covered_slots_stay_served() {
    let m = mesh(3, 0, 7000, |mut c| {
        c.require_full_coverage = false;
        c
    })
    .await;
    let (k0, k2) = (key_of(0, 3, 1), key_of(2, 3, 1));
    m.nodes[1].insert(k0.clone(), "zero".into()).await.unwrap();
    // Master 2's slots are deleted everywhere (CLUSTER DELSLOTS on every node): a gap
    // nobody serves.
    for n in &m.nodes {
        n.node().del_slots(range(2, 3)).await.unwrap();
    }
    eventually(
        "every node to see master 2's slots unassigned",
        Duration::from_secs(15),
        || async {
            m.nodes
                .iter()
                .all(|n| n.routing().slots.owner(k2.slot()).is_none())
        },
    )
    .await;
    for n in &m.nodes {
        assert!(n.routing().cluster_ok, "the covered part stays OK");
        // Borrowed keys, like `Cache::get`.
        assert_eq!(n.get(k0.as_str()).await.unwrap().as_deref(), Some("zero"));
        n.insert(k0.clone(), "zero".into()).await.unwrap();
        assert!(n.contains(k0.as_str()).await.unwrap());
        let e = n.get(k2.as_str()).await.unwrap_err();
        assert!(matches!(e, ClusterError::ClusterDown(_)), "{e}");
    }
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_while_down_when_allowed() {
    let m = mesh(3, 0, 7100, |mut c| {
        c.allow_reads_when_down = true;
        c
    })
    .await;
    let k = key_of(0, 3, 2);
    m.nodes[0].insert(k.clone(), "kept".into()).await.unwrap();
    let ids: Vec<NodeId> = m.nodes.iter().map(|n| n.id()).collect();
    // Master 0 alone in a minority: its cluster state turns FAIL.
    m.faults.partition(&ids[..1], &ids[1..]);
    eventually(
        "the minority master's state to turn FAIL",
        Duration::from_secs(15),
        || async { !m.nodes[0].routing().cluster_ok },
    )
    .await;
    assert_eq!(m.nodes[0].get(&k).await.unwrap().as_deref(), Some("kept"));
    assert!(m.nodes[0].contains(&k).await.unwrap());
    let e = m.nodes[0]
        .insert(k.clone(), "refused".into())
        .await
        .unwrap_err();
    assert!(matches!(e, ClusterError::ClusterDown(_)), "{e}");
    m.faults.heal_all();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_its_master_refuses_stale_reads_when_told() {
    let m = mesh(1, 1, 7200, |mut c| {
        c.replica_serve_stale_data = false;
        c.replication.repl_timeout = 1000;
        c
    })
    .await;
    let k = key_of(0, 1, 3);
    m.nodes[0]
        .insert_with(
            k.clone(),
            "v".into(),
            None,
            WriteOptions::acked_by(1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let replica = &m.nodes[1];
    // On a loaded machine the link may miss its 1 s timeout now and then and refuse a
    // read with MASTERDOWN until it is back: wait for the value rather than assume it.
    eventually(
        "the replica to serve the value",
        Duration::from_secs(15),
        || async {
            matches!(
                replica.get_from(&k, ReadFrom::Replica).await,
                Ok(Some(v)) if v == "v"
            )
        },
    )
    .await;
    m.faults.cut(m.nodes[0].id(), replica.id());
    eventually(
        "the replica to refuse reads with MASTERDOWN",
        Duration::from_secs(15),
        || async {
            match replica.get_from(&k, ReadFrom::Replica).await {
                Err(ClusterError::Refused(why)) => why.starts_with("MASTERDOWN"),
                _ => false,
            }
        },
    )
    .await;
    m.faults.heal_all();
    eventually(
        "the replica to serve reads again once its link is up",
        Duration::from_secs(20),
        || async {
            replica
                .get_from(&k, ReadFrom::Replica)
                .await
                .is_ok_and(|v| v.as_deref() == Some("v"))
        },
    )
    .await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_and_migration_settings_reach_the_protocol() {
    let m = mesh(1, 1, 7300, |mut c| {
        c.replica_validity_factor = 3;
        c.replica_no_failover = true;
        c.migration_barrier = 4;
        c.allow_replica_migration = false;
        c
    })
    .await;
    let replica = m.nodes[1].id();
    let config = m.nodes[1]
        .node()
        .with_node(|n, _| n.config().clone())
        .await
        .unwrap();
    assert_eq!(config.replica_validity_factor, 3);
    assert!(config.replica_no_failover);
    assert_eq!(config.migration_barrier, 4);
    assert!(!config.allow_replica_migration);
    assert_eq!(config.node_timeout, NODE_TIMEOUT.as_millis() as u64);
    // The master learns that this replica never fails over.
    eventually(
        "the master to see the replica's nofailover flag",
        Duration::from_secs(10),
        || async {
            m.nodes[0]
                .routing()
                .node(replica)
                .is_some_and(|v| v.flags.contains(NodeFlags::NOFAILOVER))
        },
    )
    .await;
    m.shutdown().await;
}
