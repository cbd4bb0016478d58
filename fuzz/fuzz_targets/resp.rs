//! Feeds arbitrary bytes to the RESP decoders (`larder::resp::codec`): the server's
//! request parser (arrays of bulk strings and inline commands) and the RESP3 value
//! decoder. They must never panic; what they accept must re-encode consistently.
//!
//! The body is `larder_fuzz::resp` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::resp(data));
