//! A node whose table names the wrong owner for slots (what a node kept, before the
//! protocol's fix, when it heard a later configEpoch bump of a slot's previous owner
//! before the new owner's claim) ends up with the right owner: the real owner's next
//! claim heals it (a slot its bound owner does not claim goes to the next claimant), and
//! `fix` tells it if gossip has not yet. Nodes run in this process over real QUIC.

use std::time::{Duration, Instant};

use larder::cluster::admin::Admin;
use larder::cluster::admin_wire::{to_ranges, AdminRequest, AdminResponse, SlotState};
use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::Rng;
use larder::cluster::{ClusterCa, ClusterCache, ClusterConfig, NodeId, SlotSet, StateStore};
use larder::Cache;
use larder_cli::ops::{fix, MoveOptions};

type Node = ClusterCache<String, Vec<u8>>;

async fn start(ca: &ClusterCa, seed: u64) -> Node {
    let config = ClusterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(NodeId::random(&mut Rng::new(seed))).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    )
    .node_timeout(Duration::from_millis(2000));
    Cache::builder().cluster(config).start().await.unwrap()
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_stale_owner_learns_the_truth_from_gossip_or_fix() {
    let ca = ClusterCa::generate("stale owner test").unwrap();
    let nodes = vec![
        start(&ca, 1).await,
        start(&ca, 2).await,
        start(&ca, 3).await,
    ];
    for n in &nodes[1..] {
        n.node().meet(nodes[0].local_addr()).await.unwrap();
    }
    eventually("every node to know every node", || {
        nodes
            .iter()
            .all(|n| nodes.iter().all(|o| n.routing().node(o.id()).is_some()))
    })
    .await;
    let thirds = [0u16, 5461, 10922, 16384];
    for (i, n) in nodes.iter().enumerate() {
        n.node()
            .add_slots(SlotSet::from_range(thirds[i]..thirds[i + 1]))
            .await
            .unwrap();
    }
    eventually("cluster_ok everywhere", || {
        nodes
            .iter()
            .all(|n| n.routing().cluster_ok && n.routing().slots.assigned() == 16384)
    })
    .await;

    // Node 2's table now says node 1 serves 100 of node 0's slots (no master claims
    // them for node 1, and node 0's claim has an older epoch than node 1 may have).
    let stale = to_ranges(0..100u16);
    match nodes[2]
        .admin(
            None,
            AdminRequest::SetSlots(stale.clone(), SlotState::Node(nodes[1].id().0)),
        )
        .await
    {
        AdminResponse::Ok => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(nodes[2].routing().slots.owner(0), Some(nodes[1].id()));

    let tool = ca
        .issue_as(
            NodeId::random(&mut Rng::new(99)),
            &[larder::cluster::larder_cluster::net::Role::Admin],
        )
        .unwrap();
    let admin = Admin::new(&tool, &ca.cert_der(), Duration::from_secs(5)).unwrap();
    let report = fix(
        &admin,
        nodes[0].local_addr(),
        &MoveOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    // Either `fix` told node 2, or node 0's gossip healed it first; both end here.
    assert!(
        report.actions.iter().all(|a| a.contains("told")),
        "{:?}",
        report.actions
    );
    eventually("node 2 to name node 0 for slot 0", || {
        nodes[2].routing().slots.owner(0) == Some(nodes[0].id())
    })
    .await;
    assert!(report.after.healthy(), "{:?}", report.after.findings);
    for n in nodes {
        n.shutdown().await;
    }
}
