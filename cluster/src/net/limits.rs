//! What one authenticated peer may hold of a node: connections, streams, buffered
//! bytes and time. Every certificate the cluster CA issued is authenticated, so these
//! bound what a misbehaving or compromised holder (a tool's certificate included) can
//! make a node spend. The figures are in `docs/cluster.md`.
//!
//! - **Connections** per peer id: [`Limits::connections_per_peer`]. A new connection
//!   beyond it closes the peer's oldest one (close code 8), so a node that restarted
//!   is never locked out by its own half-dead connections.
//! - **Streams** per connection, enforced by QUIC flow control:
//!   [`Limits::bidi_streams`] request streams and [`Limits::uni_streams`] bus and
//!   replication streams open at once; the peer cannot open more until some finish.
//! - **Unread bytes** per connection: QUIC's connection receive window,
//!   [`Limits::receive_window`]. The peer cannot send more than that ahead of what the
//!   node has read.
//! - **Request bytes** per peer: a request's payload is read only once its announced
//!   length is reserved from the peer's budget, [`Limits::request_bytes_per_peer`]
//!   (at least one whole request, [`super::service::MAX_REQUEST_LEN`]); requests past
//!   it wait, unread, in the receive window above.
//! - **Requests in service** per peer: [`Limits::requests_per_peer`] run at once;
//!   the others wait, unread. A request in service outlives its connection, so the
//!   budget and slots stay with the peer id until its last request lets go of them
//!   (closing every connection does not renew them).
//! - **Time**: a request must arrive whole, and its response be taken, within
//!   [`Limits::request_deadline`] each, or its stream is reset; a connection silent for
//!   the idle timeout ([`super::NetConfig::idle_timeout`]) is closed.

use std::time::Duration;

use super::service::MAX_REQUEST_LEN;

/// Per-peer bounds (see the module docs). [`Limits::default`] gives the figures in
/// `docs/cluster.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Incoming connections one peer id may hold open; a new one closes its oldest.
    pub connections_per_peer: usize,
    /// Request (bidirectional) streams open at once per connection.
    pub bidi_streams: u32,
    /// Bus and replication (unidirectional) streams open at once per connection.
    pub uni_streams: u32,
    /// Bytes a peer may send on a connection ahead of what the node has read.
    pub receive_window: u32,
    /// Bytes of request payload one peer may have buffered in the node at once
    /// (raised to [`MAX_REQUEST_LEN`] if set lower, so a whole request always fits).
    pub request_bytes_per_peer: usize,
    /// Requests of one peer served at once.
    pub requests_per_peer: usize,
    /// How long a request may take to arrive whole, and its response to be taken.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_per_peer: 8,
            bidi_streams: 256,
            uni_streams: 8,
            receive_window: 8 << 20,
            request_bytes_per_peer: 2 * MAX_REQUEST_LEN,
            requests_per_peer: 256,
            request_deadline: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The request byte budget actually used: at least one whole request.
    pub fn request_budget(&self) -> usize {
        self.request_bytes_per_peer.max(MAX_REQUEST_LEN + 4)
    }
}
