//! Feeds arbitrary bytes to the decoders of forwarded cache operations, their answers
//! and full-sync snapshots (`larder::cluster::wire`). They must never panic, and
//! whatever they accept must re-encode to the same bytes. The codec file is included
//! directly, so this target builds without the QUIC stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/cluster/wire.rs"]
mod wire;

use wire::{split_snapshot, WireRequest, WireResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = WireRequest::decode(data) {
        assert_eq!(r.encode(), data, "request re-encodes differently: {r:?}");
    }
    if let Ok(r) = WireResponse::decode(data) {
        assert_eq!(r.encode(), data, "response re-encodes differently: {r:?}");
    }
    if let Ok(records) = split_snapshot(data) {
        let mut out = Vec::new();
        for r in records {
            wire::push_snapshot_record(&mut out, r);
        }
        assert_eq!(out, data);
    }
});
