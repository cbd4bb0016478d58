//! A request client that is not a node: tools (`larder-cli`) reach nodes with it.
//!
//! It presents a certificate issued by the cluster CA (any node id: tools get one of
//! their own with `larder-cli certs issue --role admin|client`), accepts any node the
//! CA signed (a server certificate must have the `node` role), and sends requests on
//! the same `"LCQ"` streams nodes use between themselves. What it may ask is decided by
//! the node from its certificate's roles ([`super::roles`]). It runs no state machine
//! and joins no cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::certs::NodeIdentity;
use super::frame::{encode_frame, REQUEST_PREAMBLE};
use super::service::{exchange, ExchangeError};
use super::tls::{client_config, peer_node_id, server_name_for};
use super::{CertificateDer, NetError};
use crate::proto::NodeId;

/// The connection to one address; its lock makes concurrent first requests wait for
/// one dial, without holding up requests to other addresses.
type ConnSlot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// A client endpoint with one cached connection per node address.
pub struct Client {
    endpoint: quinn::Endpoint,
    conns: std::sync::Mutex<HashMap<SocketAddr, ConnSlot>>,
    timeout: Duration,
}

impl Client {
    /// A client presenting `identity`, trusting nodes signed by `ca`; requests fail
    /// after `timeout` (dial and answer together). Must be called inside a tokio
    /// runtime.
    pub fn new(
        identity: &NodeIdentity,
        ca: &CertificateDer<'static>,
        timeout: Duration,
    ) -> Result<Client, NetError> {
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        // A connection whose node went silent closes after 5 s (or the node's own,
        // shorter, idle timeout); both sides' keep-alives hold a quiet one open, also
        // while a long request (a slot move) runs.
        endpoint.set_default_client_config(client_config(identity, ca, Duration::from_secs(5))?);
        Ok(Client {
            endpoint,
            conns: std::sync::Mutex::new(HashMap::new()),
            timeout,
        })
    }

    /// Sends one request to the node at `addr` and returns the node's id (from its
    /// certificate) and its response. One retry on a fresh connection if the cached
    /// one died.
    pub async fn request(
        &self,
        addr: SocketAddr,
        payload: &[u8],
    ) -> Result<(NodeId, Vec<u8>), NetError> {
        self.request_with_timeout(addr, payload, self.timeout).await
    }

    /// [`Client::request`] with its own time limit (a slot migration may take long).
    pub async fn request_with_timeout(
        &self,
        addr: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(NodeId, Vec<u8>), NetError> {
        let mut frame = Vec::with_capacity(REQUEST_PREAMBLE.len() + 4 + payload.len());
        frame.extend_from_slice(&REQUEST_PREAMBLE);
        encode_frame(payload, &mut frame);
        let work = async {
            let mut last = String::new();
            for _ in 0..2 {
                let conn = self.conn(addr).await?;
                let id = peer_node_id(&conn)?;
                match exchange(&conn, &frame).await {
                    Ok(r) => return Ok((id, r)),
                    Err(ExchangeError::Connection(e)) => {
                        last = e;
                        *self.slot(addr).lock().await = None;
                    }
                    Err(ExchangeError::Refused(e)) => {
                        return Err(NetError::Request(format!("{addr}: {e}")))
                    }
                }
            }
            Err(NetError::Unreachable(format!("{addr}: {last}")))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Unreachable(format!(
                "{addr}: no answer within {timeout:?}"
            ))),
        }
    }

    fn slot(&self, addr: SocketAddr) -> ConnSlot {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr)
            .or_default()
            .clone()
    }

    async fn conn(&self, addr: SocketAddr) -> Result<quinn::Connection, NetError> {
        let slot = self.slot(addr);
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        // The dial is bounded by the client's timeout even for a request allowed to
        // take longer (a slot move): a dead node is not waited for.
        let connecting = self
            .endpoint
            .connect(addr, &server_name_for(None))
            .map_err(|e| NetError::Unreachable(format!("{addr}: {e}")))?;
        let c = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| {
                NetError::Unreachable(format!("{addr}: no handshake within {:?}", self.timeout))
            })?
            .map_err(|e| NetError::Unreachable(format!("{addr}: {e}")))?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let slots: Vec<ConnSlot> = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in slots {
            if let Some(c) = s.lock().await.take() {
                c.close(0u32.into(), b"done");
            }
        }
        self.endpoint.wait_idle().await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"dropped");
    }
}

/// The node id a client's certificate would have to name: tools use a random one.
pub fn tool_identity_id() -> NodeId {
    NodeId::generate()
}
