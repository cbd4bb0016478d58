//! Fuzzes the snapshot reader: header, footer index, section checksums and rkyv
//! validation, then walks every entry handed to the sink. None may panic.
//!
//! Raw bytes rarely get past the checksums, so half of the inputs instead build a
//! valid snapshot from the input, damage bytes inside it as the input says, and
//! recompute the checksums (`snapshot::reseal`): that puts hostile bytes in front of
//! rkyv's archive validation.
//!
//! The body is `larder_fuzz::snapshot` (fuzz/src/lib.rs), also replayed on stable by
//! `cargo test --lib` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| larder_fuzz::snapshot(data));
