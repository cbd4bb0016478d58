//! Fuzzes the manifest parser. None may panic; what parses re-encodes and re-parses
//! to the same manifest, and holds every invariant recovery relies on: sequences in
//! `1..=MAX_SEQ`, file ids at most `MAX_FILE_ID`, the first incr file starting where
//! the base (or 1) says, start sequences non-decreasing, a storable schema tag.
#![no_main]

use larder_persistence::manifest::{file_id, schema_ok, MAX_FILE_ID, MAX_SEQ};
use larder_persistence::Manifest;
use libfuzzer_sys::fuzz_target;

fn check(m: &Manifest) {
    for f in m.files() {
        assert!((1..=MAX_SEQ).contains(&f.seq), "seq {} accepted", f.seq);
        assert!(file_id(&f.name).is_none_or(|id| id <= MAX_FILE_ID));
    }
    let first = m.incrs.first().expect("a parsed manifest names an incr file");
    assert_eq!(first.seq, m.base.as_ref().map_or(1, |b| b.seq));
    assert!(m.incrs.windows(2).all(|w| w[0].seq <= w[1].seq));
    assert!(m.schema.as_deref().is_none_or(schema_ok));
    // next_id never wraps.
    assert!(m.next_id() > 0);
}

/// CRC-32 (IEEE), bit by bit: the manifest's checksum line.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        check(&m);
        let again = Manifest::parse(&m.encode()).expect("an encoded manifest parses");
        assert_eq!(again, m);
    }
    // The same bytes with a correct checksum line appended, so the fuzzer reaches the
    // line checks without having to forge a CRC.
    if let Ok(body) = std::str::from_utf8(data) {
        let body = format!("larder-manifest 1\n{body}");
        let body = if body.ends_with('\n') { body } else { format!("{body}\n") };
        let sealed = format!("{body}crc32 {:08x}\n", crc32(body.as_bytes()));
        if let Ok(m) = Manifest::parse(sealed.as_bytes()) {
            check(&m);
            assert_eq!(Manifest::parse(&m.encode()).expect("re-parses"), m);
        }
    }
});
