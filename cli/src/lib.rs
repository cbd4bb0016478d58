//! larder's cluster tools as a library: what `larder-cli` and `larder-node` run.
//!
//! - [`certs`]: the cluster CA and certificates on disk (`larder-cli certs`);
//! - [`config`]: `larder-node`'s TOML configuration;
//! - [`tls`]: the TLS of `larder-node`'s RESP server, from its `tls_*` keys;
//! - [`ops`]: the cluster operations of `larder-cli` (create, check, reshard,
//!   rebalance, add-node, del-node, failover, fix), usable from Rust.

pub mod certs;
pub mod config;
pub mod ops;
pub mod tls;
