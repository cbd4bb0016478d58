//! Fuzzes the snapshot reader: header, footer index, section checksums and rkyv
//! validation, then walks every entry handed to the sink. None may panic.
#![no_main]

use larder_persistence::snapshot::load_slice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = load_slice("fuzz", data, 2, &|section| {
        for e in section.iter() {
            std::hint::black_box((e.key.len(), e.value.len(), e.expire_at_ms));
        }
    });
});
