//! Feeds arbitrary bytes to the replication message decoder. It must never panic, and
//! whatever it accepts must re-encode to the same bytes (one encoding per message).
//!
//! The body is `larder_fuzz::repl_message` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::repl_message(data));
