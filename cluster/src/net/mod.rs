//! The mesh over QUIC (cargo feature `net`): one quinn endpoint per node, mutual TLS under
//! one cluster CA, a length-prefixed codec, and the driver that runs [`crate::proto`].
//!
//! - [`certs`]: the cluster CA and node certificates, which name their node id;
//! - [`roles`]: what a certificate's holder may do (node, admin, read-only client);
//! - [`revocation`]: the CA-signed list of revoked certificates nodes load;
//! - [`limits`]: what one authenticated peer may hold of a node;
//! - [`tls`]: rustls (ring) and quinn configurations, the handshake checks;
//! - [`frame`]: the stream framing, a pure decoder;
//! - [`store`]: where the node's `PersistentState` is saved before anything is sent;
//! - [`faults`]: a switch that drops messages between chosen nodes, for tests;
//! - [`replication`]: [`crate::repl`] run by the driver, and the [`Dataset`] the
//!   application gives it;
//! - [`client`]: a request client for tools, which is not a node;
//! - [`service`]: requests between nodes (the application's [`Service`] answers);
//! - [`routing`]: the slot table the driver publishes for the application;
//! - `driver`: the task that owns the [`crate::proto::Node`], and [`ClusterNode`], the
//!   handle to it.
//!
//! Start a node:
//!
//! ```no_run
//! # async fn run() -> Result<(), larder_cluster::net::NetError> {
//! use larder_cluster::net::{certs::ClusterCa, store::StateStore, ClusterNode, NetConfig};
//! use larder_cluster::proto::{NodeId, Rng, SlotSet};
//!
//! let ca = ClusterCa::generate("my cluster")?;
//! let identity = ca.issue(NodeId::random(&mut Rng::new(42)))?;
//! let config = NetConfig::new(
//!     "127.0.0.1:7000".parse().unwrap(),
//!     identity,
//!     ca.cert_der(),
//!     StateStore::File("node-7000.state".into()),
//! );
//! let node = ClusterNode::start(config).await?;
//! node.meet("127.0.0.1:7001".parse().unwrap()).await?;
//! node.add_slots(SlotSet::from_range(0..5461)).await?;
//! let mut events = node.subscribe();
//! # let _ = events.recv().await;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod certs;
pub mod client;
mod driver;
pub mod faults;
pub mod frame;
pub mod limits;
mod peers;
pub mod replication;
pub mod revocation;
pub mod roles;
pub mod routing;
pub mod service;
pub mod store;
pub mod tls;

pub use driver::{ClusterNode, ClusterView, NetConfig, Stats};
pub use faults::Faults;
pub use limits::Limits;
pub use replication::{Dataset, LoadFailure, ReplInfo, ReplSetup, Replication, WriteRefused};
pub use revocation::RevocationList;
pub use roles::{PeerCert, Role, Roles};
pub use routing::Routing;
/// The certificate type of [`NetConfig::ca`] (rustls's).
pub use rustls::pki_types::CertificateDer;
pub use service::Service;

use crate::proto::CommandError;

// The framing cap is the codec's message cap; frame.rs cannot import it (the fuzz
// target builds that file alone).
const _: () = assert!(frame::MAX_FRAME_LEN == crate::proto::codec::MAX_MESSAGE_LEN);

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A certificate or key could not be made, parsed, or names no node id.
    #[error("certificate: {0}")]
    Certificate(String),
    /// rcgen failed to make a certificate.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A socket or file operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The saved node state is unreadable or belongs to another node.
    #[error("saved node state: {0}")]
    State(String),
    /// The state machine refused a command.
    #[error("command refused: {0}")]
    Command(#[from] CommandError),
    /// The node's driver has stopped (shut down, or failed to save its state).
    #[error("the node has stopped")]
    Stopped,
    /// A peer could not be reached (dial failed, connection lost, or cut by fault
    /// injection).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A peer refused a request or answered with malformed bytes.
    #[error("request refused: {0}")]
    Request(String),
}
