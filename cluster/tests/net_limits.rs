//! Per-peer limits on real QUIC over 127.0.0.1: a misbehaving authenticated peer (a
//! tool's certificate) that opens many request streams announcing huge frames and
//! sends them partly, or opens many connections, holds no more of the node than its
//! limits, and the node keeps serving others. Memory is measured by the node's own
//! counters of request bytes held; nothing here asserts a duration.
#![cfg(feature = "net")]

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use larder_cluster::net::certs::ClusterCa;
use larder_cluster::net::client::Client;
use larder_cluster::net::frame::REQUEST_PREAMBLE;
use larder_cluster::net::service::MAX_REQUEST_LEN;
use larder_cluster::net::store::{MemoryStore, StateStore};
use larder_cluster::net::tls::{client_config, MEET_SERVER_NAME};
use larder_cluster::net::{ClusterNode, Limits, NetConfig, PeerCert, Role, Service};
use larder_cluster::proto::{NodeId, Rng};

const TOO_MANY_CONNECTIONS: u64 = 8;

fn id(seed: u64) -> NodeId {
    NodeId::random(&mut Rng::new(seed))
}

struct Echo;

impl Service for Echo {
    fn call(
        &self,
        _from: PeerCert,
        request: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>> {
        Box::pin(async move { request })
    }
}

async fn eventually<F>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> bool,
{
    let start = StdInstant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start(ca: &ClusterCa, limits: Limits) -> ClusterNode {
    let mut config = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id(1)).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    );
    config.idle_timeout = Duration::from_secs(5);
    config.service = Some(Arc::new(Echo));
    config.limits = limits;
    ClusterNode::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_buffer_more_than_its_request_budget() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let limits = Limits {
        request_deadline: Duration::from_secs(2),
        ..Limits::default()
    };
    let budget = limits.request_budget() as u64;
    let node = start(&ca, limits).await;
    let to = node.local_addr();

    // The rogue: 16 request streams, each announcing a frame of the largest size and
    // sending 256 KiB of it, then nothing more. Unbounded, the node would set aside
    // 16 x 64 MiB for them.
    let rogue_ident = ca.issue_as(id(2), &[Role::Client]).unwrap();
    let mut rogue = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    rogue.set_default_client_config(
        client_config(&rogue_ident, &ca.cert_der(), Duration::from_secs(5)).unwrap(),
    );
    let conn = rogue.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..16 {
        let c = conn.clone();
        streams.push(tokio::spawn(async move {
            let (mut send, mut recv) = c.open_bi().await.ok()?;
            let mut bytes = REQUEST_PREAMBLE.to_vec();
            bytes.extend_from_slice(&(MAX_REQUEST_LEN as u32).to_le_bytes());
            bytes.extend(std::iter::repeat_n(7u8, 256 << 10));
            let _ = send.write_all(&bytes).await;
            // Never finished: the node gives up at its deadline.
            let r = recv.read_to_end(1 << 20).await;
            drop(send);
            Some(r.is_err())
        }));
    }
    eventually(
        "the rogue to fill its budget",
        Duration::from_secs(30),
        || node.stats().request_bytes_buffered >= budget,
    )
    .await;

    // Another certificate is served meanwhile.
    let good = Client::new(
        &ca.issue_as(id(3), &[Role::Client]).unwrap(),
        &ca.cert_der(),
        Duration::from_secs(10),
    )
    .unwrap();
    let (_, r) = good.request(to, b"hello").await.unwrap();
    assert_eq!(r, b"hello");

    // Every stalled stream is reset at the deadline, its reservation returned; the
    // ones that waited for budget get their turn and are reset in their turn.
    for s in streams {
        assert_eq!(
            s.await.unwrap(),
            Some(true),
            "a stalled stream was answered"
        );
    }
    let stats = node.stats();
    assert!(stats.requests_timed_out >= 2, "{stats:?}");
    // Never more than the rogue's budget held (and the good client's 5 bytes),
    // although 16 x 64 MiB were announced.
    assert!(
        stats.request_bytes_peak <= budget + 5,
        "peak {} over the budget {budget}",
        stats.request_bytes_peak
    );
    conn.close(0u32.into(), b"done");
    eventually(
        "the reservations to be returned",
        Duration::from_secs(30),
        || node.stats().request_bytes_buffered == 0,
    )
    .await;
    // The good client is still served.
    let (_, r) = good.request(to, b"again").await.unwrap();
    assert_eq!(r, b"again");
    good.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holds_at_most_its_connection_limit() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let limits = Limits {
        connections_per_peer: 3,
        ..Limits::default()
    };
    let node = start(&ca, limits).await;
    let to = node.local_addr();
    let rogue_ident = ca.issue_as(id(2), &[Role::Client]).unwrap();
    let mut rogue = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    rogue.set_default_client_config(
        client_config(&rogue_ident, &ca.cert_der(), Duration::from_secs(5)).unwrap(),
    );
    let mut conns = Vec::new();
    for i in 0..8 {
        let c = rogue.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
        conns.push(c);
        // One at a time, so which are the oldest is clear.
        eventually(
            "the node to admit the connection",
            Duration::from_secs(10),
            || node.stats().connections_accepted == i + 1,
        )
        .await;
    }
    assert_eq!(node.connections_from(rogue_ident.id()), 3);
    assert_eq!(node.stats().connections_evicted, 5);
    // The five oldest were closed, with the reason; the newest three are open.
    for c in &conns[..5] {
        match tokio::time::timeout(Duration::from_secs(10), c.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(e)) => {
                assert_eq!(e.error_code.into_inner(), TOO_MANY_CONNECTIONS)
            }
            other => panic!("an evicted connection: {other:?}"),
        }
    }
    for c in &conns[5..] {
        assert!(c.close_reason().is_none());
    }
    // Another certificate is not affected.
    let good = Client::new(
        &ca.issue_as(id(3), &[Role::Client]).unwrap(),
        &ca.cert_der(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(good.request(to, b"hi").await.unwrap().1, b"hi");
    good.close().await;
    node.shutdown().await;
}

/// Answers `block` once the gate lets it through (counting the calls begun), and
/// echoes anything else at once.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    begun: Arc<std::sync::atomic::AtomicU64>,
}

impl Service for Gated {
    fn call(
        &self,
        _from: PeerCert,
        request: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>> {
        let (gate, begun) = (self.gate.clone(), self.begun.clone());
        Box::pin(async move {
            begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if request == b"block" {
                let _pass = gate.acquire().await;
            }
            request
        })
    }
}

/// Sends one request on a stream of its own and returns the response payload.
async fn raw_request(conn: quinn::Connection, payload: &'static [u8]) -> Option<Vec<u8>> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    let mut bytes = REQUEST_PREAMBLE.to_vec();
    larder_cluster::net::frame::encode_frame(payload, &mut bytes);
    send.write_all(&bytes).await.ok()?;
    send.finish().ok()?;
    let response = recv.read_to_end(1 << 20).await.ok()?;
    Some(response.get(4..)?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_every_connection_does_not_renew_a_peers_service_slots() {
    use std::sync::atomic::Ordering::SeqCst;
    let ca = ClusterCa::generate("cluster").unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let begun = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut config = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id(1)).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    );
    config.idle_timeout = Duration::from_secs(5);
    config.service = Some(Arc::new(Gated {
        gate: gate.clone(),
        begun: begun.clone(),
    }));
    config.limits = Limits {
        requests_per_peer: 2,
        ..Limits::default()
    };
    let node = ClusterNode::start(config).await.unwrap();
    let to = node.local_addr();

    // The rogue fills its two service slots with requests that do not finish (a
    // `WAIT` for replicas that never come, say), then drops the connection.
    let rogue_ident = ca.issue_as(id(2), &[Role::Client]).unwrap();
    let mut rogue = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    rogue.set_default_client_config(
        client_config(&rogue_ident, &ca.cert_der(), Duration::from_secs(5)).unwrap(),
    );
    let first = rogue.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    for _ in 0..2 {
        tokio::spawn(raw_request(first.clone(), b"block"));
    }
    eventually("two requests in service", Duration::from_secs(30), || {
        begun.load(SeqCst) == 2
    })
    .await;
    first.close(0u32.into(), b"bye");
    eventually(
        "the node to see the connection close",
        Duration::from_secs(30),
        || node.connections_from(rogue_ident.id()) == 0,
    )
    .await;

    // A new connection of the same certificate: its request waits for a slot its
    // first two still hold; a fresh budget would serve it at once.
    let second = rogue.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    let third = tokio::spawn(raw_request(second.clone(), b"third"));
    eventually(
        "the third request to wait or be served",
        Duration::from_secs(30),
        || node.stats().requests_waiting == 1 || begun.load(SeqCst) == 3,
    )
    .await;
    assert_eq!(
        begun.load(SeqCst),
        2,
        "a request was served beyond the peer's service slots"
    );
    // Once the first two finish, the third gets its turn.
    gate.add_permits(2);
    let r = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .expect("the third request was never served")
        .unwrap();
    assert_eq!(r.as_deref(), Some(&b"third"[..]));
    second.close(0u32.into(), b"done");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_slot_end_with_their_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    let ca = ClusterCa::generate("cluster").unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let begun = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut config = NetConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(id(1)).unwrap(),
        ca.cert_der(),
        StateStore::Memory(MemoryStore::new()),
    );
    config.idle_timeout = Duration::from_secs(5);
    config.service = Some(Arc::new(Gated {
        gate: gate.clone(),
        begun: begun.clone(),
    }));
    config.limits = Limits {
        requests_per_peer: 1,
        ..Limits::default()
    };
    let node = ClusterNode::start(config).await.unwrap();
    let to = node.local_addr();
    let rogue_ident = ca.issue_as(id(2), &[Role::Client]).unwrap();
    let mut rogue = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    rogue.set_default_client_config(
        client_config(&rogue_ident, &ca.cert_der(), Duration::from_secs(5)).unwrap(),
    );
    // Its one slot held by a request that does not finish, then streams that queue
    // behind it, then the connection is dropped; repeated, this would pile up tasks
    // waiting for a slot that never frees.
    for round in 0..3u64 {
        let conn = rogue.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
        if round == 0 {
            tokio::spawn(raw_request(conn.clone(), b"block"));
            eventually("the slot to be taken", Duration::from_secs(30), || {
                begun.load(SeqCst) == 1
            })
            .await;
        }
        for _ in 0..8 {
            tokio::spawn(raw_request(conn.clone(), b"queued"));
        }
        eventually("eight requests to queue", Duration::from_secs(30), || {
            node.stats().requests_waiting == 8
        })
        .await;
        conn.close(0u32.into(), b"bye");
        eventually(
            "the queued requests to end with their connection",
            Duration::from_secs(30),
            || node.stats().requests_waiting == 0,
        )
        .await;
    }
    assert_eq!(begun.load(SeqCst), 1, "a queued request was served");
    gate.add_permits(1);
    node.shutdown().await;
}
