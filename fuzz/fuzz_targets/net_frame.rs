//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the cluster transport's stream
//! decoder (`larder_cluster::net::frame`). It must never panic, never hand out a
//! payload over the cap, and a stream it accepts whole must re-encode to the same
//! bytes. The decoder file is included directly, so this target builds without the
//! QUIC stack (the `net` feature).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cluster/src/net/frame.rs"]
mod frame;

use frame::{decode_frame, encode_frame, StreamDecoder, MAX_FRAME_LEN, PREAMBLE};

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let _ = decode_frame(data, MAX_FRAME_LEN);
    let mut decoder = StreamDecoder::new(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    let mut failed = false;
    'outer: for c in data.chunks(usize::from(chunk).max(1)) {
        decoder.push(c);
        loop {
            match decoder.next_frame() {
                Ok(Some(p)) => {
                    assert!(!p.is_empty() && p.len() <= MAX_FRAME_LEN);
                    frames.push(p.to_vec());
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    if !failed && decoder.finish().is_ok() && !data.is_empty() {
        let mut again = PREAMBLE.to_vec();
        for f in &frames {
            encode_frame(f, &mut again);
        }
        assert_eq!(again, data, "accepted stream does not re-encode to itself");
    }
});
