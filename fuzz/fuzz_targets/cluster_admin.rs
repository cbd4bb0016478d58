//! Feeds arbitrary bytes to the decoders of administrative requests and answers
//! (`larder::cluster::admin_wire`: what `larder-cli` and slot moves send). They must
//! never panic, and whatever they accept must re-encode to the same bytes. The codec
//! files are included directly, so this target builds without the QUIC stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/cluster/wire.rs"]
mod wire;

#[allow(dead_code)]
#[path = "../../src/cluster/admin_wire.rs"]
mod admin_wire;

use admin_wire::{AdminRequest, AdminResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = AdminRequest::decode(data) {
        assert_eq!(r.encode(), data, "request re-encodes differently: {r:?}");
    }
    if let Ok(r) = AdminResponse::decode(data) {
        assert_eq!(r.encode(), data, "response re-encodes differently: {r:?}");
    }
});
