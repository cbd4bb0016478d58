//! `ClusterBuilder::start` failing: a port already in use, a key that is not the
//! certificate's, a "CA" that is a node certificate. Each must come back as
//! `Err(StartError)` with a message that says what is wrong, from inside a tokio
//! runtime of either flavour and from `block_on` on a plain thread, never as a panic
//! (the node's own runtime must not be dropped in async context).
#![cfg(feature = "cluster")]

use std::net::{SocketAddr, UdpSocket};

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::Rng;
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, NodeId, NodeIdentity, StartError, StateStore,
};
use larder::Cache;

type Node = ClusterCache<String, String>;

fn identity(ca: &ClusterCa, seed: u64) -> NodeIdentity {
    ca.issue(NodeId::random(&mut Rng::new(seed))).unwrap()
}

fn config(bind: SocketAddr, identity: NodeIdentity, ca: &ClusterCa) -> ClusterConfig {
    ClusterConfig::new(
        bind,
        identity,
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    )
}

async fn start(config: ClusterConfig) -> Result<Node, StartError> {
    Cache::builder().cluster(config).start().await
}

/// Runs `start` three ways: on a multi-thread runtime, on a current-thread runtime,
/// and through `block_on` from a plain thread; each must return the error.
fn start_everywhere(make: impl Fn() -> ClusterConfig + Send + Sync) -> Vec<String> {
    let mut errors = Vec::new();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    errors.push(multi.block_on(async {
        // From a task, as an application would call it.
        let config = make();
        tokio::spawn(start(config))
            .await
            .expect("start panicked on a multi-thread runtime")
            .err()
            .expect("start succeeded")
    }));
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    errors.push(
        current
            .block_on(start(make()))
            .err()
            .expect("start succeeded on a current-thread runtime"),
    );
    std::thread::scope(|s| {
        let e = s
            .spawn(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(start(make())).err()
            })
            .join()
            .expect("start panicked in block_on on a plain thread")
            .expect("start succeeded");
        errors.push(e);
    });
    errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn a_port_in_use_is_an_error_naming_the_address() {
    let ca = ClusterCa::generate("test cluster").unwrap();
    // QUIC is UDP: hold the UDP port the node is told to bind.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let messages = start_everywhere(|| config(addr, identity(&ca, 1), &ca));
    for m in messages {
        assert!(m.contains(&addr.to_string()), "{m}");
        assert!(m.contains("in use"), "{m}");
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_an_error() {
    let ca = ClusterCa::generate("test cluster").unwrap();
    let messages = start_everywhere(|| {
        let a = identity(&ca, 1);
        let b = identity(&ca, 2);
        let mismatched = NodeIdentity::from_der(a.cert_chain().to_vec(), b.key().clone_key())
            .expect("the certificate names a node id");
        config("127.0.0.1:0".parse().unwrap(), mismatched, &ca)
    });
    for m in messages {
        assert!(
            m.contains("key") && m.contains("certificate"),
            "the message says the key and certificate do not match: {m}"
        );
    }
}

#[test]
fn a_node_certificate_as_the_ca_is_an_error() {
    let ca = ClusterCa::generate("test cluster").unwrap();
    let messages = start_everywhere(|| {
        let own = identity(&ca, 1);
        let not_a_ca = own.cert_chain()[0].clone();
        ClusterConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            own,
            not_a_ca,
            StateStore::Memory(MemoryStore::new()),
        )
    });
    for m in messages {
        assert!(m.contains("not a CA certificate"), "{m}");
    }
}
