//! A durable cluster node whose data is discarded on open (written as other types)
//! starts over as a fresh master: it does not claim the discarded data's replication
//! history.
#![cfg(feature = "cluster")]

use std::path::Path;
use std::time::{Duration, Instant};

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::{Rng, SLOTS};
use larder::cluster::{ClusterCa, ClusterCache, ClusterConfig, NodeId, SlotSet, StateStore};
use larder::persistence::manifest::MANIFEST_NAME;
use larder::persistence::Manifest;
use larder::{Cache, Durability, Fsync};

async fn node<V: larder::cluster::ClusterValue + larder::Weigh>(
    ca: &ClusterCa,
    id: NodeId,
    dir: &Path,
    discard: bool,
) -> ClusterCache<String, V> {
    let config = ClusterConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    )
    .node_timeout(Duration::from_millis(1000));
    Cache::builder()
        .cluster(config)
        .durability(
            Durability::new(dir)
                .fsync(Fsync::Always)
                .discard_on_schema_change(discard),
        )
        .start()
        .await
        .unwrap()
}

/// The node's replication history: its id and offset.
fn history<V: larder::cluster::ClusterValue + larder::Weigh>(
    n: &ClusterCache<String, V>,
) -> (String, u64) {
    let r = n.info().replication.unwrap();
    (r.master_replid, r.master_repl_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_data_takes_its_replication_history_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("discard test").unwrap();
    let id = NodeId::random(&mut Rng::new(7));
    let first = node::<u64>(&ca, id, tmp.path(), false).await;
    first
        .node()
        .add_slots(SlotSet::from_range(0..SLOTS as u16))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        match first.insert("k".to_string(), u64::MAX).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "never writable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let old = history(&first);
    assert!(old.1 > 0, "the write is in the history: {old:?}");
    first.shutdown().await;
    drop(first);

    // As written before schema tags existed, then opened as other value types.
    let path = tmp.path().join(MANIFEST_NAME);
    let mut m = Manifest::parse(&std::fs::read(&path).unwrap()).unwrap();
    m.schema = None;
    std::fs::write(&path, m.encode()).unwrap();
    let second = node::<Vec<String>>(&ca, id, tmp.path(), true).await;
    let info = second.info();
    assert!(info.persistence.unwrap().loading_discarded_schema.is_some());
    // The same node id starts the same fresh history (its id comes from the node's
    // seed), but at offset 0: nothing of the discarded stream is claimed.
    let new = history(&second);
    assert_eq!(
        new.1, 0,
        "claims the discarded history: {new:?} after {old:?}"
    );
    second.shutdown().await;
}
