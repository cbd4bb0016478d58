//! Fuzzes the built-in codec's decoders for keys and values (`larder::Codec` for
//! `String`, `Vec<u8>`, byte arrays and integers, read without rkyv's validator). None may
//! panic; what decodes encodes to bytes that decode to the same value.
//!
//! The body is `larder_fuzz::codec` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::codec(data));
