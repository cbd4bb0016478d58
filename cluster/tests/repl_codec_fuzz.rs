//! The replication decoder under seeded random and mutated inputs, for CI, which cannot
//! run libFuzzer (`fuzz/fuzz_targets/repl_message.rs` is the coverage-guided version).
//! It must never panic, must reject every truncation, and whatever it accepts must
//! re-encode to the same bytes. `LARDER_FUZZ_ITERS=<n>` runs longer.

use larder_cluster::proto::Rng;
use larder_cluster::repl::{ReplId, ReplMessage};

fn iters(default: u64) -> u64 {
    std::env::var("LARDER_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max + 1))
        .map(|_| rng.below(256) as u8)
        .collect()
}

fn random_message(rng: &mut Rng) -> ReplMessage {
    let replid = ReplId::random(rng);
    let attempt = rng.next_u64() as u32;
    let offset = rng.next_u64() >> rng.below(64);
    match rng.below(9) {
        0 => ReplMessage::Psync {
            attempt,
            replid: rng.chance(0.5).then_some(replid),
            offset,
        },
        1 => ReplMessage::Continue {
            attempt,
            replid,
            offset,
        },
        2 => ReplMessage::FullResync {
            attempt,
            replid,
            offset,
        },
        3 => ReplMessage::SnapshotChunk {
            attempt,
            position: offset >> 8,
            data: bytes(rng, 200),
        },
        4 => ReplMessage::SnapshotEnd {
            attempt,
            total_len: offset,
            crc: rng.next_u64() as u32,
        },
        5 => ReplMessage::Records {
            replid,
            start: offset >> 8,
            records: (0..rng.below(6)).map(|_| bytes(rng, 40)).collect(),
        },
        6 => ReplMessage::Ping { replid, offset },
        7 => ReplMessage::GetAck,
        _ => ReplMessage::Ack {
            attempt,
            replid,
            offset,
        },
    }
}

/// Decoding must not panic; an accepted input must be the one encoding of its message.
fn check(input: &[u8]) {
    if let Ok(msg) = ReplMessage::decode(input) {
        assert_eq!(msg.to_bytes().expect("re-encodes"), input, "{msg:?}");
    }
}

#[test]
fn valid_messages_round_trip_and_truncations_fail() {
    let mut rng = Rng::new(0x4e91);
    for _ in 0..iters(2_000) {
        let msg = random_message(&mut rng);
        let enc = msg.to_bytes().unwrap();
        assert_eq!(ReplMessage::decode(&enc).unwrap(), msg);
        let cut = rng.below(enc.len() as u64) as usize;
        assert!(
            ReplMessage::decode(&enc[..cut]).is_err(),
            "cut at {cut} of {msg:?}"
        );
        let mut longer = enc.clone();
        longer.push(0);
        assert!(ReplMessage::decode(&longer).is_err());
    }
}

#[test]
fn bit_flips_and_byte_mutations_never_panic() {
    let mut rng = Rng::new(0xb17f);
    for _ in 0..iters(5_000) {
        let mut enc = random_message(&mut rng).to_bytes().unwrap();
        for _ in 0..rng.range(1, 4) {
            let i = rng.below(enc.len() as u64) as usize;
            match rng.below(3) {
                0 => enc[i] ^= 1 << rng.below(8),
                1 => enc[i] = rng.below(256) as u8,
                _ => {
                    enc.insert(i, rng.below(256) as u8);
                }
            }
        }
        check(&enc);
        let cut = rng.below(enc.len() as u64 + 1) as usize;
        check(&enc[..cut]);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(0x7a4d);
    for _ in 0..iters(5_000) {
        let mut input = bytes(&mut rng, 120);
        // Give most inputs a valid prefix so the body decoders are reached.
        if rng.chance(0.8) && input.len() >= 4 {
            input[0] = b'L';
            input[1] = b'R';
            input[2] = 1;
            input[3] = rng.range(1, 9) as u8;
        }
        check(&input);
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![0u8; larder_cluster::repl::codec::MAX_MESSAGE_LEN + 1];
    let e = ReplMessage::decode(&big).unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
}
