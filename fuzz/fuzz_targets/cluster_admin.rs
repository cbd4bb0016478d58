//! Feeds arbitrary bytes to the decoders of administrative requests and answers
//! (`larder::cluster::admin_wire`: what `larder-cli` and slot moves send). They must
//! never panic, and whatever they accept must re-encode to the same bytes. The codec
//! files are included directly, so this target builds without the QUIC stack.
//!
//! The body is `larder_fuzz::cluster_admin` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::cluster_admin(data));
