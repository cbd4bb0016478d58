//! Fuzzes the manifest parser. None may panic; what parses re-encodes and re-parses
//! to the same manifest.
#![no_main]

use larder_persistence::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let again = Manifest::parse(&m.encode()).expect("an encoded manifest parses");
        assert_eq!(again, m);
    }
});
