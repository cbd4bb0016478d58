//! Certificate roles and revocation at the transport, on real QUIC over 127.0.0.1: a
//! certificate without the node role cannot join the cluster bus or serve as a node,
//! a roleless (pre-roles) certificate is accepted or refused by configuration, and a
//! revoked certificate can no longer connect, its open connections closed on reload.
#![cfg(feature = "net")]

mod common;
use common::{eventually, id, knows, meet_bytes, node_config, raw_client};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use larder_cluster::net::certs::{ClusterCa, NodeIdentity};
use larder_cluster::net::client::Client;
use larder_cluster::net::frame::{encode_frame, PREAMBLE};
use larder_cluster::net::tls::{server_config, MEET_SERVER_NAME};
use larder_cluster::net::{ClusterNode, NetConfig, NetError, PeerCert, Role, Service};

const FORBIDDEN: u64 = 6;
const REVOKED: u64 = 9;

/// Answers every request with the roles of its sender.
struct Echo;

impl Service for Echo {
    fn call(
        &self,
        from: PeerCert,
        _request: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>> {
        Box::pin(async move { from.roles.to_string().into_bytes() })
    }
}

fn config(identity: NodeIdentity, ca: &ClusterCa) -> NetConfig {
    let mut config = node_config(identity, ca);
    config.service = Some(Arc::new(Echo));
    config
}

async fn meet_as(identity: &NodeIdentity, ca: &ClusterCa, to: SocketAddr) -> Option<u64> {
    let client = raw_client(identity, ca);
    let conn = client.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    // The node may close the connection before a stream is open.
    if let Ok(mut s) = conn.open_uni().await {
        let mut bytes = PREAMBLE.to_vec();
        encode_frame(&meet_bytes(identity.id(), to), &mut bytes);
        let _ = s.write_all(&bytes).await;
        let _ = s.finish();
    }
    match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_certificates_join_the_bus() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let a = ClusterNode::start(config(ca.issue(id(1)).unwrap(), &ca))
        .await
        .unwrap();
    let to = a.local_addr();

    // A client's and an administrator's certificate cannot speak the bus: the
    // connection is closed and the MEET never reaches the state machine.
    for (seed, role) in [(2, Role::Client), (3, Role::Admin)] {
        let tool = ca.issue_as(id(seed), &[role]).unwrap();
        assert_eq!(meet_as(&tool, &ca, to).await, Some(FORBIDDEN), "{role}");
        assert!(!knows(&a, tool.id()).await, "a {role} certificate joined");
    }
    assert_eq!(a.stats().role_refusals, 2, "{:?}", a.stats());

    // A node's certificate joins.
    let peer = ca.issue(id(4)).unwrap();
    let client = raw_client(&peer, &ca);
    let conn = client.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let mut bytes = PREAMBLE.to_vec();
    encode_frame(&meet_bytes(peer.id(), to), &mut bytes);
    s.write_all(&bytes).await.unwrap();
    eventually("the node to be met", Duration::from_secs(10), || {
        knows(&a, peer.id())
    })
    .await;

    // The service sees each sender's roles.
    let admin = ca.issue_as(id(5), &[Role::Admin, Role::Client]).unwrap();
    let c = Client::new(&admin, &ca.cert_der(), Duration::from_secs(10)).unwrap();
    let (_, r) = c.request(to, b"who").await.unwrap();
    assert_eq!(r, b"admin+client");
    c.close().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_certificate_cannot_serve_as_a_node() {
    let ca = ClusterCa::generate("cluster").unwrap();
    // A node refuses to start with a certificate that is not a node's.
    let err = ClusterNode::start(config(ca.issue_as(id(1), &[Role::Admin]).unwrap(), &ca))
        .await
        .err()
        .expect("a node started with an admin certificate");
    assert!(err.to_string().contains("node role"), "{err}");

    // A server presenting an administrator's certificate: nodes and tools refuse it.
    let fake = ca.issue_as(id(2), &[Role::Admin]).unwrap();
    let server = quinn::Endpoint::server(
        server_config(&fake, &ca.cert_der(), Duration::from_secs(2)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let node = raw_client(&ca.issue(id(3)).unwrap(), &ca);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        node.connect(addr, MEET_SERVER_NAME).unwrap(),
    )
    .await
    .expect("handshake timed out");
    let e = r.expect_err("a node accepted an admin certificate as a server");
    assert!(e.to_string().contains("not node"), "{e}");
    let tool = Client::new(
        &ca.issue_as(id(4), &[Role::Admin]).unwrap(),
        &ca.cert_der(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(tool.request(addr, b"x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roleless_certificates_are_accepted_or_refused_by_configuration() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let old = ca.issue_without_roles(id(1)).unwrap();

    // By default: taken as node and administrator.
    let a = ClusterNode::start(config(ca.issue(id(2)).unwrap(), &ca))
        .await
        .unwrap();
    let c = Client::new(&old, &ca.cert_der(), Duration::from_secs(10)).unwrap();
    let (_, r) = c.request(a.local_addr(), b"who").await.unwrap();
    assert_eq!(r, b"node+admin");
    c.close().await;
    a.shutdown().await;

    // With allow_roleless = false: refused.
    let mut strict = config(ca.issue(id(3)).unwrap(), &ca);
    strict.allow_roleless = false;
    let b = ClusterNode::start(strict).await.unwrap();
    assert_eq!(meet_as(&old, &ca, b.local_addr()).await, Some(FORBIDDEN));
    assert!(!knows(&b, old.id()).await);
    let c = Client::new(&old, &ca.cert_der(), Duration::from_secs(10)).unwrap();
    assert!(c.request(b.local_addr(), b"who").await.is_err());
    assert!(b.stats().role_refusals >= 2, "{:?}", b.stats());
    // Nor does it join a node whose certificate names no role.
    let old_node = ClusterNode::start(config(ca.issue_without_roles(id(4)).unwrap(), &ca))
        .await
        .unwrap();
    let refusals = b.stats().role_refusals;
    b.meet(old_node.local_addr()).await.unwrap();
    eventually(
        "b to refuse the roleless node",
        Duration::from_secs(10),
        || async { b.stats().role_refusals > refusals },
    )
    .await;
    assert!(!knows(&b, old_node.id()).await);
    old_node.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_can_no_longer_connect() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list_path = dir.path().join("revoked.crl");
    let keep = ca.issue_as(id(10), &[Role::Admin]).unwrap();
    let retire = ca.issue_as(id(11), &[Role::Client]).unwrap();
    // An empty list to start with (what a new cluster has).
    let empty = ca.revocation_list(None, &[]).unwrap();
    std::fs::write(&list_path, empty.pem()).unwrap();

    let mut cfg = config(ca.issue(id(1)).unwrap(), &ca);
    cfg.revocation_list = Some(list_path.clone());
    cfg.revocation_poll = Duration::from_millis(50);
    let a = ClusterNode::start(cfg).await.unwrap();
    let to = a.local_addr();

    let retired = Client::new(&retire, &ca.cert_der(), Duration::from_secs(5)).unwrap();
    let kept = Client::new(&keep, &ca.cert_der(), Duration::from_secs(5)).unwrap();
    retired.request(to, b"who").await.unwrap();
    kept.request(to, b"who").await.unwrap();
    let raw = raw_client(&retire, &ca);
    let raw_conn = raw.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    eventually(
        "both connections to be admitted",
        Duration::from_secs(10),
        || async { a.connections_from(retire.id()) == 2 },
    )
    .await;

    // Revoke: the list is replaced, the node notices the change and closes the open
    // connection of the revoked certificate.
    let list = ca
        .revocation_list(Some(&empty), std::slice::from_ref(&retire.cert_chain()[0]))
        .unwrap();
    assert!(list.revokes(&retire.cert_chain()[0]));
    assert!(!list.revokes(&keep.cert_chain()[0]));
    let tmp = dir.path().join("revoked.crl.tmp");
    std::fs::write(&tmp, list.pem()).unwrap();
    std::fs::rename(&tmp, &list_path).unwrap();
    eventually(
        "the revoked connection to close",
        Duration::from_secs(20),
        || async { a.stats().revoked_closed >= 1 },
    )
    .await;
    assert_eq!(a.stats().revocation_loads, 2, "{:?}", a.stats());
    match tokio::time::timeout(Duration::from_secs(10), raw_conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            assert_eq!(c.error_code.into_inner(), REVOKED)
        }
        other => panic!("the revoked connection: {other:?}"),
    }

    // New handshakes with it fail; the other tool goes on.
    let again = Client::new(&retire, &ca.cert_der(), Duration::from_secs(5)).unwrap();
    match again.request(to, b"who").await {
        Err(NetError::Unreachable(_)) => {}
        other => panic!("a revoked certificate connected: {other:?}"),
    }
    assert!(retired.request(to, b"who").await.is_err());
    kept.request(to, b"who").await.unwrap();
    assert_eq!(a.connections_from(retire.id()), 0);

    // A list the cluster CA did not sign is refused; the one in force stays.
    let other = ClusterCa::generate("cluster").unwrap();
    std::fs::write(&list_path, other.revocation_list(None, &[]).unwrap().pem()).unwrap();
    let err = a.reload_revocation_list().unwrap_err();
    assert!(err.to_string().contains("not the cluster CA's"), "{err}");
    assert!(again.request(to, b"who").await.is_err());

    // And a node refuses to start on one.
    let mut cfg = config(ca.issue(id(2)).unwrap(), &ca);
    cfg.revocation_list = Some(list_path.clone());
    let err = ClusterNode::start(cfg).await.err().expect("started");
    assert!(err.to_string().contains("not the cluster CA's"), "{err}");

    kept.close().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_dial_a_revoked_node() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list_path = dir.path().join("revoked.crl");
    let b_ident = ca.issue(id(21)).unwrap();
    let list = ca
        .revocation_list(None, std::slice::from_ref(&b_ident.cert_chain()[0]))
        .unwrap();
    std::fs::write(&list_path, list.pem()).unwrap();
    let mut cfg = config(ca.issue(id(20)).unwrap(), &ca);
    cfg.revocation_list = Some(list_path);
    let a = ClusterNode::start(cfg).await.unwrap();
    let b = ClusterNode::start(config(b_ident, &ca)).await.unwrap();
    // a MEETs the revoked b: the dial fails on b's certificate.
    a.meet(b.local_addr()).await.unwrap();
    eventually("a's dial to fail", Duration::from_secs(10), || async {
        a.stats().dials_failed >= 1
    })
    .await;
    assert!(!knows(&a, b.id()).await);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_whose_handshake_spans_a_reload_is_checked_against_the_new_list() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list_path = dir.path().join("revoked.crl");
    let empty = ca.revocation_list(None, &[]).unwrap();
    std::fs::write(&list_path, empty.pem()).unwrap();
    let mut cfg = config(ca.issue(id(1)).unwrap(), &ca);
    cfg.revocation_list = Some(list_path.clone());
    // Reloaded by hand below, at the moment that matters.
    cfg.revocation_poll = Duration::from_secs(3600);
    let a = Arc::new(ClusterNode::start(cfg).await.unwrap());

    // A node-role server the test holds mid-handshake.
    let b_ident = ca.issue(id(31)).unwrap();
    let b = quinn::Endpoint::server(
        server_config(&b_ident, &ca.cert_der(), Duration::from_secs(2)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let b_addr = b.local_addr().unwrap().to_string();
    let asked = {
        let (a, addr, b_id) = (a.clone(), b_addr.clone(), b_ident.id());
        tokio::spawn(async move { a.request(b_id, &addr, b"hello").await })
    };
    // The node's Initial arrived; its handshake waits for this side to accept.
    let incoming = tokio::time::timeout(Duration::from_secs(10), b.accept())
        .await
        .expect("the node never dialled")
        .unwrap();

    // Meanwhile B's certificate is revoked and the node loads the list.
    let list = ca
        .revocation_list(Some(&empty), std::slice::from_ref(&b_ident.cert_chain()[0]))
        .unwrap();
    std::fs::write(&list_path, list.pem()).unwrap();
    assert_eq!(a.reload_revocation_list().unwrap(), 1);

    // The handshake completes under the list the dial began with; B would answer.
    let conn = incoming.await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let _ = recv.read_to_end(1 << 20).await;
            let mut out = Vec::new();
            encode_frame(b"served by a revoked node", &mut out);
            let _ = send.write_all(&out).await;
            let _ = send.finish();
        }
    });
    let r = tokio::time::timeout(Duration::from_secs(20), asked)
        .await
        .expect("the request never ended")
        .unwrap();
    assert!(
        r.is_err(),
        "a revoked node was dialled and answered: {:?}",
        r.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    assert!(a.stats().revoked_closed >= 1, "{:?}", a.stats());
    b.close(0u32.into(), b"done");
}
