use super::*;
use crate::proto::rng::Rng;

fn header() -> Header {
    let mut rng = Rng::new(9);
    Header {
        sender: NodeId::random(&mut rng),
        addr: "10.0.0.1:7000".into(),
        flags: NodeFlags::MASTER,
        current_epoch: 7,
        config_epoch: 3,
        repl_offset: 12345,
        master: None,
        slots: SlotSet::from_range(0..5461),
        state_ok: true,
        mflags: 0,
        replacements: vec![Replacement {
            master: NodeId::random(&mut rng),
            epoch: 8,
            candidate: NodeId::random(&mut rng),
        }],
    }
}

fn ping() -> Message {
    let mut rng = Rng::new(10);
    Message {
        header: header(),
        body: Body::Ping {
            sent_at: 99,
            gossip: vec![Gossip {
                node: NodeId::random(&mut rng),
                addr: "b:1".into(),
                flags: NodeFlags::MASTER | NodeFlags::PFAIL,
            }],
            migrations: vec![MigrationState {
                slot: 5,
                migrating: true,
                peer: NodeId::random(&mut rng),
            }],
        },
    }
}

#[test]
fn round_trip_every_type() {
    let id = NodeId::random(&mut Rng::new(1));
    let bodies = vec![
        ping().body,
        Body::Pong {
            echo: 5,
            claims_acked: true,
            gossip: vec![],
            migrations: vec![],
        },
        Body::Meet {
            sent_at: 1,
            gossip: vec![],
        },
        Body::Fail { node: id },
        Body::Update {
            node: id,
            config_epoch: 9,
            slots: SlotSet::from_range(100..200),
        },
        Body::FailoverAuthRequest,
        Body::FailoverAuthAck { epoch: 42 },
        Body::MfStart,
    ];
    for body in bodies {
        let mut h = header();
        h.master = Some(id);
        let m = Message { header: h, body };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }
}

#[test]
fn rejects_with_what_and_where() {
    let bytes = ping().to_bytes().unwrap();
    assert!(matches!(
        Message::decode(&bytes[..1]),
        Err(DecodeError::Truncated {
            field: "magic",
            offset: 0,
            ..
        })
    ));
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(
        Message::decode(&b),
        Err(DecodeError::BadMagic { .. })
    ));
    // Version 1 (before headers carried replacements) is refused, as is any other.
    for v in [1, 3] {
        let mut b = bytes.clone();
        b[2] = v;
        assert_eq!(
            Message::decode(&b),
            Err(DecodeError::UnsupportedVersion { found: v })
        );
    }
    // A replacement count over the cap is refused where it stands.
    let count_at = 4 + 20 + 1 + "10.0.0.1:7000".len() + 2 + 24 + 1 + 1 + 1 + 2048;
    let mut b = bytes.clone();
    b[count_at..count_at + 2].copy_from_slice(&(MAX_REPLACEMENTS as u16 + 1).to_be_bytes());
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::TooMany {
            field: "replacement count",
            offset: count_at,
            count: MAX_REPLACEMENTS + 1,
            max: MAX_REPLACEMENTS
        })
    );
    let mut b = bytes.clone();
    b[3] = 8;
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::UnknownType { found: 8 })
    );
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        Message::decode(&b),
        Err(DecodeError::TrailingBytes {
            offset: bytes.len(),
            extra: 1
        })
    );
    let big = vec![0u8; MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        Message::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    // Flags: sender flags live right after sender id and addr.
    let flags_at = 4 + 20 + 1 + "10.0.0.1:7000".len();
    let mut b = bytes.clone();
    b[flags_at] = 0xff;
    let err = Message::decode(&b).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidValue {
            field: "sender flags",
            offset: flags_at,
            value: 0xff00 | b[flags_at + 1] as u64
        }
    );
    assert!(err.to_string().contains("offset"));
}

#[test]
fn encode_refuses_long_addr() {
    let mut m = ping();
    m.header.addr = "x".repeat(300);
    assert_eq!(m.to_bytes(), Err(EncodeError::AddrTooLong { len: 300 }));
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = ping().to_bytes().unwrap();
    for cut in 0..bytes.len() {
        assert!(Message::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}
