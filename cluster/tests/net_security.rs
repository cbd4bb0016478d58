//! The transport's handshake and framing checks, on real QUIC over 127.0.0.1: a node
//! from another CA cannot connect, a certificate for another node id is refused or its
//! messages dropped, and malformed frames close only the connection that sent them.
#![cfg(feature = "net")]

mod common;
use common::{eventually, id, knows, meet_bytes, node_config, raw_client};

use std::net::SocketAddr;
use std::time::Duration;

use larder_cluster::net::certs::{node_dns_name, ClusterCa, NodeIdentity};
use larder_cluster::net::frame::{encode_frame, PREAMBLE};
use larder_cluster::net::tls::MEET_SERVER_NAME;
use larder_cluster::net::ClusterNode;
use larder_cluster::proto::{Rng, SlotSet};

async fn start(ca: &ClusterCa, seed: u64) -> ClusterNode {
    start_with(ca.issue(id(seed)).unwrap(), ca).await
}

async fn start_with(identity: NodeIdentity, ca: &ClusterCa) -> ClusterNode {
    ClusterNode::start(node_config(identity, ca)).await.unwrap()
}

/// Sends `stream_bytes` on a uni stream and returns the close code the node answered
/// with (None if it did not close the connection in time).
async fn send_and_wait_close(
    client: &quinn::Endpoint,
    to: SocketAddr,
    stream_bytes: &[u8],
    finish: bool,
) -> Option<u64> {
    let conn = client.connect(to, MEET_SERVER_NAME).unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(stream_bytes).await;
    if finish {
        let _ = s.finish();
    }
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_from_another_ca_cannot_connect() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let a = start(&ca, 1).await;
    let rogue = start(&rogue_ca, 2).await;

    // A whole node under another CA: its MEET never gets through (it refuses a's
    // certificate, and a would refuse its own).
    rogue.meet(a.local_addr()).await.unwrap();
    // And a client that trusts the right CA but presents a rogue certificate: the
    // server refuses its certificate.
    let impostor = raw_client(&rogue_ca.issue(id(3)).unwrap(), &ca);
    if let Ok(connecting) = impostor.connect(a.local_addr(), MEET_SERVER_NAME) {
        if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(3), connecting).await {
            if let Ok(mut s) = conn.open_uni().await {
                let mut bytes = PREAMBLE.to_vec();
                encode_frame(&meet_bytes(id(3), a.local_addr()), &mut bytes);
                let _ = s.write_all(&bytes).await;
                let _ = s.finish();
            }
            // The server closes it once it has checked the client certificate.
            let closed = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await;
            assert!(
                closed.is_ok(),
                "server kept a connection with a rogue certificate"
            );
        }
    }
    eventually(
        "a to refuse both handshakes",
        Duration::from_secs(5),
        || async { a.stats().handshakes_failed >= 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.stats().connections_accepted, 0);
    assert!(rogue.stats().dials_failed >= 1);
    assert!(!knows(&a, rogue.id()).await && !knows(&a, id(3)).await);
    assert!(!knows(&rogue, a.id()).await);

    // Control: a node under the right CA joins at once.
    let b = start(&ca, 4).await;
    b.meet(a.local_addr()).await.unwrap();
    eventually("a and b to meet", Duration::from_secs(5), || async {
        knows(&a, b.id()).await && knows(&b, a.id()).await
    })
    .await;
    for n in [a, b, rogue] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_node_is_refused() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let a = start(&ca, 10).await;
    let (x, y) = (id(11), id(12));
    let client = raw_client(&ca.issue(x).unwrap(), &ca);

    // Dialing a by another node's name: a's certificate does not match, the client
    // refuses it.
    let wrong_name = node_dns_name(y);
    let r = client.connect(a.local_addr(), &wrong_name).unwrap().await;
    assert!(
        r.is_err(),
        "client accepted a certificate for another node id"
    );
    // By its own name it works.
    let conn = client
        .connect(a.local_addr(), &node_dns_name(a.id()))
        .unwrap()
        .await
        .unwrap();

    // x's connection carries a MEET whose header claims y: dropped and counted.
    let mut s = conn.open_uni().await.unwrap();
    let mut bytes = PREAMBLE.to_vec();
    encode_frame(&meet_bytes(y, a.local_addr()), &mut bytes);
    s.write_all(&bytes).await.unwrap();
    eventually(
        "the impersonation to be dropped",
        Duration::from_secs(5),
        || async { a.stats().sender_mismatches >= 1 },
    )
    .await;
    assert!(!knows(&a, y).await && !knows(&a, x).await);

    // The same connection with x's own MEET is accepted: x is added under its id.
    let mut bytes = Vec::new();
    encode_frame(&meet_bytes(x, a.local_addr()), &mut bytes);
    s.write_all(&bytes).await.unwrap();
    eventually("x to be added", Duration::from_secs(5), || knows(&a, x)).await;
    assert!(!knows(&a, y).await);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let ca = ClusterCa::generate("cluster").unwrap();
    let a = start(&ca, 20).await;
    let b = start(&ca, 21).await;
    b.meet(a.local_addr()).await.unwrap();
    eventually("a and b to meet", Duration::from_secs(5), || async {
        knows(&a, b.id()).await && knows(&b, a.id()).await
    })
    .await;

    let client = raw_client(&ca.issue(id(22)).unwrap(), &ca);
    let to = a.local_addr();
    const FRAME_ERROR: u64 = 1;
    const BAD_MESSAGE: u64 = 2;

    // Random bytes: no preamble.
    let mut rng = Rng::new(7);
    let junk: Vec<u8> = (0..300).map(|_| rng.next_u64() as u8).collect();
    assert_eq!(
        send_and_wait_close(&client, to, &junk, false).await,
        Some(FRAME_ERROR)
    );

    // A length prefix over the cap (the payload is never sent).
    let mut oversized = PREAMBLE.to_vec();
    oversized.extend_from_slice(&(64 * 1024 + 1u32).to_le_bytes());
    assert_eq!(
        send_and_wait_close(&client, to, &oversized, false).await,
        Some(FRAME_ERROR)
    );
    let mut huge = PREAMBLE.to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        send_and_wait_close(&client, to, &huge, false).await,
        Some(FRAME_ERROR)
    );

    // A truncated frame: the stream ends inside the payload.
    let mut truncated = PREAMBLE.to_vec();
    encode_frame(&meet_bytes(id(22), to), &mut truncated);
    truncated.truncate(truncated.len() - 10);
    assert_eq!(
        send_and_wait_close(&client, to, &truncated, true).await,
        Some(FRAME_ERROR)
    );

    // A well-framed payload that is not a cluster message.
    let mut garbage = PREAMBLE.to_vec();
    encode_frame(&junk, &mut garbage);
    assert_eq!(
        send_and_wait_close(&client, to, &garbage, false).await,
        Some(BAD_MESSAGE)
    );

    assert!(a.stats().bad_frames >= 5, "{:?}", a.stats());
    assert!(!knows(&a, id(22)).await);

    // a still serves b: slots it takes reach b.
    let before = a.stats().frames_received;
    a.add_slots(SlotSet::from_range(0..100)).await.unwrap();
    eventually("b to see a's slots", Duration::from_secs(5), || async {
        b.view().await.unwrap().slots.owner(0) == Some(a.id())
    })
    .await;
    eventually(
        "a to keep hearing from b",
        Duration::from_secs(5),
        || async { a.stats().frames_received > before },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
