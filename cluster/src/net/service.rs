//! Requests between nodes: one bidirectional QUIC stream per request, carrying the
//! `"LCQ"` preamble and one frame each way. The payloads are opaque here; the
//! application's [`Service`] answers them (larder forwards cache operations this way).
//!
//! Streams are cheap in QUIC, so concurrent requests to one peer share its connection
//! without waiting for each other (pipelining without a request-id table), and a slow
//! request does not hold up the ones behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::{debug, warn};

use super::driver::{bump, Counters};
use super::faults::Faults;
use super::frame::{check_preamble, decode_frame, encode_frame, Decoded, StreamKind, PREAMBLE_LEN};
use super::peers::PeerBudget;
use super::roles::PeerCert;
use crate::proto::NodeId;

/// Most bytes in one request or response payload.
pub const MAX_REQUEST_LEN: usize = 64 * 1024 * 1024;

/// The stream was refused: the peer runs no service, or broke the framing.
const CLOSE_REFUSED: u32 = 5;
/// The request did not arrive whole, or its response was not taken, in time.
const CLOSE_TIMED_OUT: u32 = 7;

/// Answers requests forwarded by peers.
pub trait Service: Send + Sync + 'static {
    /// The response to `request` from the authenticated peer `from` (its node id and
    /// the roles its certificate names: the service decides what each role may ask).
    /// Errors travel inside the response; the transport only carries bytes.
    fn call(
        &self,
        from: PeerCert,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'static>>;
}

/// Why an exchange failed.
pub(crate) enum ExchangeError {
    /// The connection or stream broke (a retry on a new connection may work).
    Connection(String),
    /// The peer refused the request or answered with bytes that are not one frame.
    Refused(String),
}

/// Writes `frame` (preamble and one frame) on a new stream of `conn` and reads the
/// response frame.
pub(crate) async fn exchange(
    conn: &quinn::Connection,
    frame: &[u8],
) -> Result<Vec<u8>, ExchangeError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ExchangeError::Connection(e.to_string()))?;
    send.write_all(frame)
        .await
        .map_err(|e| ExchangeError::Connection(e.to_string()))?;
    send.finish()
        .map_err(|e| ExchangeError::Connection(e.to_string()))?;
    let bytes = match recv.read_to_end(MAX_REQUEST_LEN + 4).await {
        Ok(b) => b,
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            return Err(ExchangeError::Refused(format!(
                "stream reset by the peer ({code})"
            )))
        }
        Err(e) => return Err(ExchangeError::Connection(e.to_string())),
    };
    match decode_frame(&bytes, MAX_REQUEST_LEN) {
        Ok(Decoded::Frame { payload, consumed }) if consumed == bytes.len() => Ok(payload.to_vec()),
        Ok(Decoded::Frame { consumed, .. }) => Err(ExchangeError::Refused(format!(
            "{} bytes after the response frame",
            bytes.len() - consumed
        ))),
        Ok(Decoded::Incomplete { needed }) => Err(ExchangeError::Refused(format!(
            "response truncated: {} of {needed} bytes",
            bytes.len()
        ))),
        Err(e) => Err(ExchangeError::Refused(format!("bad response frame: {e}"))),
    }
}

/// What a request stream of one peer may use: the peer's budget, the deadline, and
/// the node's counters.
pub(super) struct Admission {
    pub(super) budget: PeerBudget,
    pub(super) deadline: std::time::Duration,
    pub(super) counters: Arc<Counters>,
}

/// Request payload bytes held by one request, counted in the node's gauge while held.
struct Held<'a> {
    counters: &'a Counters,
    bytes: u64,
}

impl<'a> Held<'a> {
    fn new(counters: &'a Counters, bytes: u64) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let now = counters.request_bytes_buffered.fetch_add(bytes, Relaxed) + bytes;
        counters.request_bytes_peak.fetch_max(now, Relaxed);
        Held { counters, bytes }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters
            .request_bytes_buffered
            .fetch_sub(self.bytes, Relaxed);
    }
}

/// Serves one request stream: reads the preamble and one frame, asks the service,
/// writes its response. A malformed request resets the stream (only that stream).
///
/// Bounded per peer ([`super::limits`]): the request waits for a service slot, then
/// its header (preamble and length) is read; its payload is read only once its length
/// is reserved from the peer's byte budget. The request must arrive whole, and the
/// response be taken, within the deadline each.
pub(super) async fn serve_request(
    me: NodeId,
    faults: Faults,
    service: Option<Arc<dyn Service>>,
    admission: Admission,
    peer: PeerCert,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Admission {
        budget,
        deadline,
        counters,
    } = admission;
    let id = peer.id;
    let refuse = |send: &mut quinn::SendStream, why: &str| {
        warn!(node = %me, peer = %id, "request refused: {why}");
        let _ = send.reset(CLOSE_REFUSED.into());
    };
    let timed_out = |send: &mut quinn::SendStream, what: &str| {
        bump(&counters.requests_timed_out);
        debug!(node = %me, peer = %id, "{what} not done within {deadline:?}");
        let _ = send.reset(CLOSE_TIMED_OUT.into());
    };
    // Waiting for a slot ends when the peer gives up the stream or its connection
    // closes: slots may be held for long (a `WAIT`), and a waiter that outlived its
    // connection would be one more task per stream for every reconnect.
    let slot = {
        use std::sync::atomic::Ordering::Relaxed;
        counters.requests_waiting.fetch_add(1, Relaxed);
        let slot = tokio::select! {
            slot = budget.serving.clone().acquire_owned() => slot.ok(),
            _ = send.stopped() => None,
        };
        counters.requests_waiting.fetch_sub(1, Relaxed);
        slot
    };
    let Some(_slot) = slot else {
        return;
    };
    // The header: preamble and length prefix.
    let mut header = [0u8; PREAMBLE_LEN + 4];
    match tokio::time::timeout(deadline, recv.read_exact(&mut header)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            refuse(&mut send, &format!("truncated request header: {e}"));
            return;
        }
        Err(_) => {
            timed_out(&mut send, "request header");
            return;
        }
    }
    let mut pre = [0u8; PREAMBLE_LEN];
    pre.copy_from_slice(&header[..PREAMBLE_LEN]);
    match check_preamble(pre) {
        Ok(StreamKind::Request) => {}
        Ok(_) => {
            refuse(&mut send, "a bus or replication stream opened as a request");
            return;
        }
        Err(e) => {
            refuse(&mut send, &e.to_string());
            return;
        }
    }
    let len = match decode_frame(&header[PREAMBLE_LEN..], MAX_REQUEST_LEN) {
        Ok(Decoded::Incomplete { needed }) => needed - 4,
        // Four bytes hold no whole frame (none is empty); refused like a bad one.
        Ok(Decoded::Frame { .. }) => {
            refuse(&mut send, "empty request frame");
            return;
        }
        Err(e) => {
            refuse(&mut send, &e.to_string());
            return;
        }
    };
    // MAX_REQUEST_LEN fits a u32 and the budget holds at least one whole request.
    // As for the slot: the wait ends with the stream or the connection.
    let reserved = tokio::select! {
        r = budget.bytes.clone().acquire_many_owned(len as u32) => r.ok(),
        _ = send.stopped() => None,
    };
    let Some(reserved) = reserved else {
        return;
    };
    let held = Held::new(&counters, len as u64);
    let mut payload = vec![0u8; len];
    let read = async {
        recv.read_exact(&mut payload)
            .await
            .map_err(|e| format!("truncated request: {e}"))?;
        // Nothing may follow the frame.
        match recv.read_to_end(0).await {
            Ok(_) => Ok(()),
            Err(quinn::ReadToEndError::TooLong) => Err("bytes after the request frame".into()),
            Err(e) => Err(format!("request not finished: {e}")),
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            refuse(&mut send, &why);
            return;
        }
        Err(_) => {
            timed_out(&mut send, "request");
            return;
        }
    }
    if faults.is_cut(id, me) {
        let _ = send.reset(CLOSE_REFUSED.into());
        return;
    }
    let Some(service) = service else {
        refuse(&mut send, "this node serves no requests");
        return;
    };
    let response = service.call(peer, payload).await;
    drop(held);
    drop(reserved);
    let mut out = Vec::with_capacity(response.len() + 4);
    encode_frame(&response, &mut out);
    drop(response);
    match tokio::time::timeout(deadline, send.write_all(&out)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        Ok(Err(e)) => debug!(node = %me, peer = %id, "response not sent: {e}"),
        Err(_) => timed_out(&mut send, "response"),
    }
}
