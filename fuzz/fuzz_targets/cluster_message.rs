//! Feeds arbitrary bytes to the cluster bus decoder. It must never panic, and whatever
//! it accepts must re-encode to the same bytes (the format has one encoding per message).
#![no_main]

use larder_cluster::proto::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        let bytes = msg.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(bytes, data, "decode/encode is not the identity");
    }
});
