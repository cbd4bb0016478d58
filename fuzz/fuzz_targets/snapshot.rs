//! Fuzzes the snapshot reader: header, footer index, section checksums and rkyv
//! validation, then walks every entry handed to the sink. None may panic.
//!
//! Raw bytes rarely get past the checksums, so half of the inputs instead build a
//! valid snapshot from the input, damage bytes inside it as the input says, and
//! recompute the checksums (`snapshot::reseal`): that puts hostile bytes in front of
//! rkyv's archive validation.
#![no_main]

use std::sync::Arc;

use larder_persistence::backend::MemoryBackend;
use larder_persistence::snapshot::{load_slice, reseal, SnapshotWriter};
use larder_persistence::Backend;
use libfuzzer_sys::fuzz_target;

fn walk(data: &[u8]) {
    // One thread: runs inline, so LeakSanitizer does not flag the 32-byte TLS
    // destructor record every spawned thread leaves (a known false positive).
    let _ = load_slice("fuzz", data, 1, &|section| {
        for e in section.iter() {
            std::hint::black_box((e.key.len(), e.value.len(), e.expire_at_ms));
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        walk(rest);
        return;
    }
    // First half: entries (chunks split at 0xff); second half: (offset, xor) pairs.
    let (entries, damage) = rest.split_at(rest.len() / 2);
    let backend = MemoryBackend::new();
    let mut w = match SnapshotWriter::create(Arc::new(backend.clone()), "s", 1) {
        Ok(w) => w.section_bytes(64),
        Err(_) => return,
    };
    for (i, chunk) in entries.split(|&b| b == 0xff).enumerate() {
        let (k, v) = chunk.split_at(chunk.len().min(4));
        let _ = w.push(k, v, (i % 2 == 0).then_some(i as u64));
    }
    if w.finish().is_err() {
        return;
    }
    let Ok(bytes) = backend.read_all("s") else {
        return;
    };
    let mut bytes = bytes.to_vec();
    for pair in damage.chunks_exact(3) {
        let at = u16::from_le_bytes([pair[0], pair[1]]) as usize;
        if let Some(b) = bytes.get_mut(at) {
            *b ^= pair[2];
        }
    }
    reseal(&mut bytes);
    walk(&bytes);
});
