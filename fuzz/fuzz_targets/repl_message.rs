//! Feeds arbitrary bytes to the replication message decoder. It must never panic, and
//! whatever it accepts must re-encode to the same bytes (one encoding per message).
#![no_main]

use larder_cluster::repl::ReplMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ReplMessage::decode(data) {
        let bytes = msg.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(bytes, data, "decode/encode is not the identity");
    }
});
