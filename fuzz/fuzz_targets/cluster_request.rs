//! Feeds arbitrary bytes to the decoders of forwarded cache operations, their answers
//! and full-sync snapshots (`larder::cluster::wire`). They must never panic, and
//! whatever they accept must re-encode to the same bytes. The codec file is included
//! directly, so this target builds without the QUIC stack.
//!
//! The body is `larder_fuzz::cluster_request` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::cluster_request(data));
