//! A local six-node mesh in one process: three masters and three replicas over QUIC on
//! 127.0.0.1, with a cluster CA made on the spot. It shows where keys live, that any
//! node serves any key (forwarding to the owner), replica reads, `WAIT`, and a
//! failover: master 0 stops, its replica is promoted, writes to its slots resume and
//! nothing acknowledged is lost.
//!
//! ```text
//! cargo run --example cluster --features cluster
//! ```

use std::time::{Duration, Instant};

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::Rng;
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, KeySlot, NodeId, ReadFrom, SlotSet, StateStore,
    WriteOptions,
};
use larder::Cache;

type Node = ClusterCache<String, String>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One CA for the cluster; each node's certificate names its node id.
    let ca = ClusterCa::generate("example cluster")?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..6u64 {
        let id = NodeId::random(&mut Rng::new(0xC1u64 << 8 | i));
        let config = ClusterConfig::new(
            "127.0.0.1:0".parse()?,
            ca.issue(id)?,
            ca.cert_der(),
            // Production nodes keep this in a file (StateStore::File).
            StateStore::Memory(MemoryStore::new()),
        )
        .node_timeout(Duration::from_millis(1000));
        nodes.push(
            Cache::builder()
                .max_memory(64 << 20)
                .cluster(config)
                .start()
                .await?,
        );
        println!(
            "node {i}: {} at {}",
            nodes[i as usize].id(),
            nodes[i as usize].local_addr()
        );
    }

    // CLUSTER MEET, ADDSLOTS and REPLICATE, as redis-cli --cluster create does.
    for n in &nodes[1..] {
        n.node().meet(nodes[0].local_addr()).await?;
    }
    wait_for("every node to know the others", || {
        nodes.iter().all(|n| n.routing().nodes.len() == 6)
    })
    .await;
    for (i, m) in nodes[..3].iter().enumerate() {
        let lo = (16384 * i / 3) as u16;
        let hi = (16384 * (i + 1) / 3) as u16;
        m.node().add_slots(SlotSet::from_range(lo..hi)).await?;
        println!("node {i} serves slots {lo}..{hi}");
    }
    for i in 0..3 {
        nodes[3 + i].node().replicate(nodes[i].id()).await?;
    }
    wait_for("the cluster to be OK and the replicas streaming", || {
        nodes.iter().all(|n| {
            let info = n.info();
            let r = info.replication.unwrap();
            n.routing().cluster_ok && (r.role == "master" || r.master_link_status == Some("up"))
        })
    })
    .await;

    // Routing: write through node 4 (a replica), read through node 2.
    for user in ["alice", "bob", "carol"] {
        let key = format!("user:{user}");
        nodes[4]
            .insert(key.clone(), format!("{user}'s profile"))
            .await?;
        let owner = nodes[0].routing().slots.owner(key.slot());
        let at = nodes
            .iter()
            .position(|n| Some(n.id()) == owner)
            .unwrap_or(usize::MAX);
        println!(
            "{key}: slot {}, served by node {at}; read via node 2: {:?}",
            key.slot(),
            nodes[2].get(&key).await?
        );
    }
    // Keys with one {hash tag} share a slot, so they can go in one atomic `multi`.
    let cart = "{cart:alice}";
    println!(
        "{cart}:items and {cart}:total share slot {}",
        format!("{cart}:items").slot()
    );

    // A write acknowledged by a replica survives its master's failure.
    let key = (0..)
        .map(|n| format!("order:{n}"))
        .find(|k| nodes[0].routing().slots.owner(k.slot()) == Some(nodes[0].id()))
        .unwrap_or_default();
    nodes[1]
        .insert_with(
            key.clone(),
            "paid".into(),
            None,
            WriteOptions::acked_by(1, Duration::from_secs(2)),
        )
        .await?;
    println!(
        "{key} written to master 0, acknowledged by its replica; replica read: {:?}",
        nodes[3].get_from(&key, ReadFrom::Replica).await?
    );

    // Failover: stop master 0. Its replica (node 3) notices after node_timeout, wins
    // the election and takes over the slots.
    println!("stopping master 0 ...");
    let t = Instant::now();
    nodes[0].shutdown().await;
    loop {
        if nodes[1].insert(key.clone(), "shipped".into()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "writes to master 0's slots resumed after {:?}; the slot is now served by node {}",
        t.elapsed(),
        nodes
            .iter()
            .position(|n| Some(n.id()) == nodes[1].routing().slots.owner(key.slot()))
            .unwrap_or(usize::MAX)
    );
    println!("{key} = {:?}", nodes[2].get(&key).await?);
    print!(
        "{}",
        nodes[3]
            .info()
            .to_string()
            .split("# Persistence")
            .next()
            .unwrap_or("")
    );

    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
