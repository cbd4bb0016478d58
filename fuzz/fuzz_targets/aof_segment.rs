//! Fuzzes the scan of a mapped incr segment: frames, holes left by copies cut short,
//! the preallocated zero tail. It may not panic and must always move forward.
//!
//! The body is `larder_fuzz::aof_segment` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::aof_segment(data));
