//! Fuzzes the AOF decoders: incr file header, frames, record payloads, and the
//! torn-tail scan. None may panic on any input.
//!
//! The body is `larder_fuzz::aof_record` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::aof_record(data));
