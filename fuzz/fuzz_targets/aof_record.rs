//! Fuzzes the AOF decoders: incr file header, frames, record payloads, and the
//! torn-tail scan. None may panic on any input.
#![no_main]

use larder_persistence::frame::{check_file_header, frames, valid_frame_follows};
use larder_persistence::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_file_header(data);
    let mut last = None;
    for frame in frames(data, 0) {
        match frame {
            Ok(f) => {
                last = Some(f.seq);
                if let Ok(rec) = f.record() {
                    // A payload that decodes re-encodes to the same bytes.
                    assert_eq!(rec.encode(), f.payload);
                }
            }
            Err(e) => {
                let _ = valid_frame_follows(data, e.offset(), last);
            }
        }
    }
    if let Ok(rec) = Record::decode(data) {
        assert_eq!(rec.encode(), data);
    }
});
