//! The mesh over QUIC (cargo feature `net`): one quinn endpoint per node, mutual TLS under
//! one cluster CA, a length-prefixed codec, and the driver that runs [`crate::proto`].
