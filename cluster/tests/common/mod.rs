//! What the transport tests share: node ids from seeds, a node configuration for
//! 127.0.0.1, a bare quinn client, the bytes of a MEET, and waiting on a condition.
#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::time::{Duration, Instant as StdInstant};

use larder_cluster::net::certs::{ClusterCa, NodeIdentity};
use larder_cluster::net::store::{MemoryStore, StateStore};
use larder_cluster::net::tls::client_config;
use larder_cluster::net::{ClusterNode, NetConfig};
use larder_cluster::proto::{Config, Instant, Node, NodeId, Rng};

/// The node timeout of the transport tests, in milliseconds.
pub const NODE_TIMEOUT: u64 = 1000;

/// The node id made from `seed`.
pub fn id(seed: u64) -> NodeId {
    NodeId::random(&mut Rng::new(seed))
}

/// A node on an ephemeral port of 127.0.0.1 with quick reconnects and a short idle
/// timeout, its state in memory.
pub fn node_config(identity: NodeIdentity, ca: &ClusterCa) -> NetConfig {
    let mut config = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        identity,
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    );
    config.cluster = Config::with_node_timeout(NODE_TIMEOUT);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config.idle_timeout = Duration::from_secs(2);
    config
}

/// A bare quinn client presenting `identity` and trusting `trust`.
pub fn raw_client(identity: &NodeIdentity, trust: &ClusterCa) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        client_config(identity, &trust.cert_der(), Duration::from_secs(2)).unwrap(),
    );
    ep
}

/// The encoded MEET a node with id `sender` sends to `to`.
pub fn meet_bytes(sender: NodeId, to: SocketAddr) -> Vec<u8> {
    let mut n = Node::new(
        Config::with_node_timeout(NODE_TIMEOUT),
        sender,
        "127.0.0.1:9",
        Instant::ZERO,
        1,
    );
    n.meet(Instant::ZERO, to.to_string());
    while let Some(t) = n.poll_transmit() {
        if t.to.is_none() {
            return t.message.to_bytes().unwrap();
        }
    }
    panic!("meet produced no MEET");
}

/// Polls `f` until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = StdInstant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether `node`'s view of the cluster names `other`.
pub async fn knows(node: &ClusterNode, other: NodeId) -> bool {
    node.view()
        .await
        .unwrap()
        .nodes
        .iter()
        .any(|n| n.id == other)
}
