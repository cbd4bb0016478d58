//! A RESP2/RESP3 server (the Redis protocol) over a [`Cache`](crate::Cache) or, with
//! feature `cluster`, a [`ClusterCache`](crate::cluster::ClusterCache): every Redis
//! client (redis-cli, redis-benchmark, client libraries) can use larder as a Redis.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use larder::resp::{RespConfig, RespServer};
//! use larder::Cache;
//!
//! let cache: Cache<String, Vec<u8>> = Cache::builder().max_memory(64 << 20).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6379").await?;
//! RespServer::new(cache, RespConfig::default()).serve(listener).await
//! # }
//! ```
//!
//! Keys are UTF-8 strings (`Cache<String, Vec<u8>>`, what `larder-node` embeds);
//! values are bytes. Every request runs on the connection's task: the cache's
//! operations are synchronous and short, and a pipeline of requests already in the
//! buffer runs before one write of all their replies. A protocol error is answered
//! with Redis's text and closes that connection only; a command error is answered and
//! the connection goes on. The command table (README's "RESP server") says what is
//! supported; anything else answers Redis's unknown-command error.
//!
//! With feature `resp-tls`, [`RespServer::serve_tls`] serves clients over TLS
//! (rustls, re-exported as [`rustls`]): `redis-cli --tls`, `rediss://` URLs. The
//! `ServerConfig` decides the certificate and whether clients must present one
//! (Redis's `tls-auth-clients`); a failed handshake closes that connection only.

mod admin;
#[cfg(feature = "cluster")]
mod cluster;
pub mod codec;
mod keys;
mod keyspace;
mod latency;
mod pubsub;
mod server;
mod session;
mod strings;
pub mod table;

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub use cluster::ClusterKeyspace;
pub use codec::{Protocol, ProtocolError, ProtocolErrorKind, Value};
pub use keyspace::{Keyspace, RouteFlags};
pub use pubsub::NotifyFlags;
pub use server::{RespConfig, RespServer, RespThreads, RespUser};
/// The rustls that [`RespServer::serve_tls`] takes a `ServerConfig` of (0.23, with
/// ring), re-exported so a caller builds one of the same version.
#[cfg(feature = "resp-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "resp-tls")))]
pub use tokio_rustls::rustls;
