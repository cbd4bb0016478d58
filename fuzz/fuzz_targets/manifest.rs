//! Fuzzes the manifest parser. None may panic; what parses re-encodes and re-parses
//! to the same manifest and holds the invariants recovery relies on (see
//! `larder_fuzz::check_manifest`).
//!
//! The body is `larder_fuzz::manifest` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::manifest(data));
