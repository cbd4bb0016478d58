//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the cluster transport's stream
//! decoder (`larder_cluster::net::frame`). It must never panic, never hand out a
//! payload over the cap, and a stream it accepts whole must re-encode to the same
//! bytes. The decoder file is included directly, so this target builds without the
//! QUIC stack (the `net` feature).
//!
//! The body is `larder_fuzz::net_frame` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::net_frame(data));
