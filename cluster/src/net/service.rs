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

use super::faults::Faults;
use super::frame::{decode_frame, encode_frame, Decoded, StreamDecoder, StreamKind};
use crate::proto::NodeId;

/// Most bytes in one request or response payload.
pub const MAX_REQUEST_LEN: usize = 64 * 1024 * 1024;

/// The stream was refused: the peer runs no service, or broke the framing.
const CLOSE_REFUSED: u32 = 5;

/// Answers requests forwarded by peers.
pub trait Service: Send + Sync + 'static {
    /// The response to `request` from the authenticated peer `from`. Errors travel
    /// inside the response; the transport only carries bytes.
    fn call(
        &self,
        from: NodeId,
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

/// Serves one request stream: reads the preamble and one frame, asks the service,
/// writes its response. A malformed request resets the stream (only that stream).
pub(crate) async fn serve_request(
    me: NodeId,
    faults: Faults,
    service: Option<Arc<dyn Service>>,
    _conn: quinn::Connection,
    peer: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let refuse = |send: &mut quinn::SendStream, why: &str| {
        warn!(node = %me, %peer, "request refused: {why}");
        let _ = send.reset(CLOSE_REFUSED.into());
    };
    let bytes = match recv.read_to_end(MAX_REQUEST_LEN + 12).await {
        Ok(b) => b,
        Err(e) => {
            refuse(&mut send, &format!("request not read: {e}"));
            return;
        }
    };
    let mut decoder = StreamDecoder::new(MAX_REQUEST_LEN);
    decoder.push(&bytes);
    let payload = match decoder.next_frame() {
        Ok(Some(p)) => p.to_vec(),
        Ok(None) => {
            refuse(
                &mut send,
                &format!("truncated request ({} bytes)", bytes.len()),
            );
            return;
        }
        Err(e) => {
            refuse(&mut send, &e.to_string());
            return;
        }
    };
    if decoder.kind() != Some(StreamKind::Request) {
        refuse(&mut send, "a bus or replication stream opened as a request");
        return;
    }
    if decoder.pending() != 0 {
        refuse(&mut send, "bytes after the request frame");
        return;
    }
    if faults.is_cut(peer, me) {
        let _ = send.reset(CLOSE_REFUSED.into());
        return;
    }
    let Some(service) = service else {
        refuse(&mut send, "this node serves no requests");
        return;
    };
    let response = service.call(peer, payload).await;
    let mut out = Vec::with_capacity(response.len() + 4);
    encode_frame(&response, &mut out);
    if let Err(e) = send.write_all(&out).await {
        debug!(node = %me, %peer, "response not sent: {e}");
        return;
    }
    let _ = send.finish();
}
