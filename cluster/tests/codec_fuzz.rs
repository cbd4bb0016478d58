//! The decoder under seeded random and mutated inputs, for CI, which cannot run
//! libFuzzer (`fuzz/fuzz_targets/cluster_message.rs` is the coverage-guided version).
//! It must never panic, must reject every truncation, and valid messages must
//! round-trip. `LARDER_FUZZ_ITERS=<n>` runs longer.

use larder_cluster::proto::{
    Body, Gossip, Header, Message, MigrationState, NodeFlags, NodeId, Replacement, Rng, SlotSet,
};

fn iters(default: u64) -> u64 {
    std::env::var("LARDER_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_id(rng: &mut Rng) -> NodeId {
    NodeId::random(rng)
}

fn random_addr(rng: &mut Rng) -> String {
    let len = rng.below(30) as usize;
    (0..len)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

fn random_flags(rng: &mut Rng) -> NodeFlags {
    NodeFlags::from_bits(rng.below(256) as u16).unwrap_or(NodeFlags::MASTER)
}

fn random_slots(rng: &mut Rng) -> SlotSet {
    match rng.below(3) {
        0 => SlotSet::new(),
        1 => {
            let lo = rng.below(16384) as u16;
            let hi = lo + rng.below(16384 - lo as u64) as u16;
            SlotSet::from_range(lo..hi)
        }
        _ => {
            let mut w = [0u64; SlotSet::WORDS];
            for x in w.iter_mut() {
                *x = rng.next_u64();
            }
            SlotSet::from_words(w)
        }
    }
}

fn random_gossip(rng: &mut Rng) -> Vec<Gossip> {
    (0..rng.below(6))
        .map(|_| Gossip {
            node: random_id(rng),
            addr: random_addr(rng),
            flags: random_flags(rng),
        })
        .collect()
}

fn random_message(rng: &mut Rng) -> Message {
    let header = Header {
        sender: random_id(rng),
        addr: random_addr(rng),
        flags: random_flags(rng),
        current_epoch: rng.next_u64(),
        config_epoch: rng.next_u64(),
        repl_offset: rng.next_u64(),
        master: if rng.chance(0.5) {
            Some(random_id(rng))
        } else {
            None
        },
        slots: random_slots(rng),
        state_ok: rng.chance(0.5),
        mflags: rng.below(4) as u8,
        replacements: (0..rng.below(3))
            .map(|_| Replacement {
                master: random_id(rng),
                epoch: rng.next_u64(),
                candidate: random_id(rng),
            })
            .collect(),
    };
    let body = match rng.below(8) {
        0 => Body::Ping {
            sent_at: rng.next_u64(),
            gossip: random_gossip(rng),
            migrations: (0..rng.below(4))
                .map(|_| MigrationState {
                    slot: rng.below(16384) as u16,
                    migrating: rng.chance(0.5),
                    peer: random_id(rng),
                })
                .collect(),
        },
        1 => Body::Pong {
            echo: rng.next_u64(),
            claims_acked: rng.chance(0.5),
            gossip: random_gossip(rng),
            migrations: vec![],
        },
        2 => Body::Meet {
            sent_at: rng.next_u64(),
            gossip: random_gossip(rng),
        },
        3 => Body::Fail {
            node: random_id(rng),
        },
        4 => Body::Update {
            node: random_id(rng),
            config_epoch: rng.next_u64(),
            slots: random_slots(rng),
        },
        5 => Body::FailoverAuthRequest,
        6 => Body::FailoverAuthAck {
            epoch: rng.next_u64(),
        },
        _ => Body::MfStart,
    };
    Message { header, body }
}

#[test]
fn valid_messages_round_trip() {
    let mut rng = Rng::new(1);
    for _ in 0..iters(2000) {
        let m = random_message(&mut rng);
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }
}

#[test]
fn every_truncation_is_rejected() {
    let mut rng = Rng::new(2);
    for _ in 0..iters(40) {
        let bytes = random_message(&mut rng).to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "accepted a message cut at {cut}"
            );
        }
    }
}

#[test]
fn mutations_never_panic_and_accepted_input_round_trips() {
    let mut rng = Rng::new(3);
    for _ in 0..iters(3000) {
        let mut bytes = random_message(&mut rng).to_bytes().unwrap();
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            match rng.below(4) {
                0 => {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] = rng.next_u64() as u8;
                }
                2 => {
                    let i = rng.below(bytes.len() as u64 + 1) as usize;
                    bytes.insert(i, rng.next_u64() as u8);
                }
                _ => {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes.remove(i);
                }
            }
        }
        if let Ok(m) = Message::decode(&bytes) {
            // Mutations that still decode are valid messages: one encoding each.
            assert_eq!(m.to_bytes().unwrap(), bytes);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(4);
    for _ in 0..iters(5000) {
        let len = rng.below(3000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half the time start with a valid prefix so the decoder gets past the magic.
        if rng.chance(0.5) && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&[b'L', b'C', 1, rng.below(9) as u8]);
        }
        let _ = Message::decode(&bytes);
    }
}

#[test]
fn oversized_counts_are_rejected_without_allocating() {
    let mut rng = Rng::new(5);
    let m = Message {
        header: random_message(&mut rng).header,
        body: Body::Meet {
            sent_at: 1,
            gossip: vec![],
        },
    };
    let mut bytes = m.to_bytes().unwrap();
    let n = bytes.len();
    // The gossip count is the last two bytes of a MEET with no gossip.
    bytes[n - 2] = 0xff;
    bytes[n - 1] = 0xff;
    let err = Message::decode(&bytes).unwrap_err();
    assert!(err.to_string().contains("gossip count"), "{err}");
}
