//! Valid inputs for each target, made with the encoders: what a harness must accept
//! without complaint, and what mutations start from. `seeds/<target>/` holds the same
//! kind of inputs as files (a starting corpus for `cargo fuzz run <target> seeds/<target>`,
//! and regressions).

use std::sync::Arc;

use larder_cluster::proto::{
    Body, Gossip, Header, Message, MigrationState, NodeFlags, NodeId, Replacement, Rng, SlotSet,
};
use larder_cluster::repl::{ReplId, ReplMessage};
use larder_persistence::backend::MemoryBackend;
use larder_persistence::frame::{encode_record_frame, file_header};
use larder_persistence::manifest::ManifestFile;
use larder_persistence::snapshot::SnapshotWriter;
use larder_persistence::{Backend, Manifest, Record};

use crate::admin_wire::{AdminRequest, AdminResponse, SlotState};
use crate::frame::{encode_frame, PREAMBLE, REPL_PREAMBLE, REQUEST_PREAMBLE};
use crate::wire::{push_snapshot_record, WireOp, WireRequest, WireResponse};

/// Valid inputs for `target` (empty for an unknown name).
pub fn build(target: &str) -> Vec<Vec<u8>> {
    match target {
        "aof_record" => aof_record(),
        "aof_segment" => aof_segment(),
        "snapshot" => snapshot(),
        "codec" => codec(),
        "manifest" => manifest(),
        "cluster_message" => cluster_message(),
        "net_frame" => net_frame(),
        "repl_message" => repl_message(),
        "cluster_request" => cluster_request(),
        "cluster_admin" => cluster_admin(),
        "resp" => resp(),
        _ => Vec::new(),
    }
}

fn records() -> Vec<Record> {
    vec![
        Record::Set {
            key: b"user:1".to_vec(),
            value: b"alice".to_vec(),
            expire_at_ms: None,
        },
        Record::Set {
            key: b"session".to_vec(),
            value: vec![0, 1, 2, 255],
            expire_at_ms: Some(1_700_000_000_000),
        },
        Record::Del {
            key: b"user:1".to_vec(),
        },
        Record::Flush,
        Record::Multi(vec![
            Record::Del { key: b"a".to_vec() },
            Record::Del { key: b"b".to_vec() },
        ]),
        Record::Meta(b"replid".to_vec()),
    ]
}

fn aof_record() -> Vec<Vec<u8>> {
    let mut file = file_header().to_vec();
    for (seq, r) in records().iter().enumerate() {
        encode_record_frame(seq as u64 + 1, r, &mut file);
    }
    let mut out = vec![file];
    out.extend(records().iter().map(Record::encode));
    out
}

/// Mapped segments: whole frames then a zero tail; the same with a hole (a frame's
/// bytes zeroed) and with a frame copied but for its checksum.
fn aof_segment() -> Vec<Vec<u8>> {
    let mut file = file_header().to_vec();
    let mut starts = Vec::new();
    for (seq, r) in records().iter().enumerate() {
        starts.push(file.len());
        encode_record_frame(seq as u64 + 1, r, &mut file);
    }
    file.resize(file.len() + 256, 0);
    let mut hole = file.clone();
    hole[starts[1]..starts[2]].iter_mut().for_each(|b| *b = 0);
    let mut no_crc = file.clone();
    no_crc[starts[3] + 4..starts[3] + 8]
        .iter_mut()
        .for_each(|b| *b = 0);
    vec![file, hole, no_crc]
}

fn snapshot() -> Vec<Vec<u8>> {
    // Built and damaged by the target itself (odd first byte): entries, then damage.
    let mut built = vec![1u8];
    let entries = b"key1valueA\xffkey2valueB\xffk3";
    built.extend_from_slice(entries);
    built.extend_from_slice(&[0x20, 0x00, 0x01, 0x40, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    // A whole valid snapshot, read as it is (even first byte).
    let backend = MemoryBackend::new();
    let mut raw = vec![0u8];
    if let Ok(w) = SnapshotWriter::create(Arc::new(backend.clone()), "s", 1) {
        let mut w = w.section_bytes(64);
        for i in 0..8u64 {
            let _ = w.push(
                format!("key{i}").as_bytes(),
                format!("value {i}").as_bytes(),
                (i % 2 == 0).then_some(1_700_000_000_000 + i),
            );
        }
        if w.finish().is_ok() {
            if let Ok(bytes) = backend.read_all("s") {
                raw.extend_from_slice(&bytes);
            }
        }
    }
    // The same entries built in the version-1 (rkyv) layout, then damaged.
    let mut built_v1 = built.clone();
    built_v1[0] = 3;
    vec![built, built_v1, raw]
}

fn manifest() -> Vec<Vec<u8>> {
    let file = |name: &str, seq| ManifestFile {
        name: name.to_string(),
        seq,
    };
    vec![
        Manifest {
            base: None,
            incrs: vec![file("appendonly.1.incr.aof", 1)],
            schema: None,
        }
        .encode(),
        Manifest {
            base: Some(file("appendonly.3.base.rdb", 40)),
            incrs: vec![
                file("appendonly.4.incr.aof", 40),
                file("appendonly.5.incr.aof", 97),
            ],
            schema: Some("key=String value=u64 version=2".to_string()),
        }
        .encode(),
    ]
}

fn cluster_message() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(10);
    let id = NodeId::random(&mut rng);
    let header = Header {
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
            master: id,
            epoch: 8,
            candidate: NodeId::random(&mut rng),
        }],
    };
    let bodies = vec![
        Body::Ping {
            sent_at: 99,
            gossip: vec![Gossip {
                node: id,
                addr: "b:1".into(),
                flags: NodeFlags::MASTER | NodeFlags::PFAIL,
            }],
            migrations: vec![MigrationState {
                slot: 5,
                migrating: true,
                peer: id,
            }],
        },
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
    bodies
        .into_iter()
        .filter_map(|body| {
            Message {
                header: header.clone(),
                body,
            }
            .to_bytes()
            .ok()
        })
        .collect()
}

fn net_frame() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Every kind of stream, fed in chunks of 1, 3 and 64 bytes (the first byte).
    for (chunk, preamble) in [(1u8, PREAMBLE), (3, REPL_PREAMBLE), (64, REQUEST_PREAMBLE)] {
        let mut s = vec![chunk];
        s.extend_from_slice(&preamble);
        for payload in [&b"hello"[..], b"x", &[7u8; 300][..]] {
            encode_frame(payload, &mut s);
        }
        out.push(s);
        // A stream that is only a preamble: valid, five bytes in all.
        let mut bare = vec![chunk];
        bare.extend_from_slice(&preamble);
        out.push(bare);
    }
    out
}

fn repl_message() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(3);
    let replid = ReplId::random(&mut rng);
    [
        ReplMessage::Psync {
            attempt: 1,
            replid: Some(replid),
            offset: 4096,
        },
        ReplMessage::Psync {
            attempt: 2,
            replid: None,
            offset: 0,
        },
        ReplMessage::Continue {
            attempt: 1,
            replid,
            offset: 4096,
        },
        ReplMessage::FullResync {
            attempt: 1,
            replid,
            offset: 10,
        },
        ReplMessage::SnapshotChunk {
            attempt: 1,
            position: 0,
            data: b"snapshot bytes".to_vec(),
        },
    ]
    .iter()
    .filter_map(|m| m.to_bytes().ok())
    .collect()
}

fn cluster_request() -> Vec<Vec<u8>> {
    let request = |op| WireRequest {
        flags: 0,
        ack_replicas: 1,
        ack_timeout_ms: 500,
        op,
    };
    let mut snapshot = Vec::new();
    for r in [&b"first record"[..], b"second"] {
        push_snapshot_record(&mut snapshot, r);
    }
    vec![
        request(WireOp::Get(b"user:1".to_vec())).encode(),
        request(WireOp::Set {
            key: b"user:1".to_vec(),
            value: b"alice".to_vec(),
            expire_at_ms: Some(1_700_000_000_000),
        })
        .encode(),
        request(WireOp::Del(b"k".to_vec())).encode(),
        WireResponse::Value(Some(b"alice".to_vec())).encode(),
        WireResponse::Batch(vec![WireResponse::Done, WireResponse::Count(3)]).encode(),
        snapshot,
    ]
}

fn cluster_admin() -> Vec<Vec<u8>> {
    vec![
        AdminRequest::Nodes.encode(),
        AdminRequest::Meet("10.0.0.2:7000".into()).encode(),
        AdminRequest::AddSlots(vec![(0, 5460), (10923, 16383)]).encode(),
        AdminRequest::SetSlot(7, SlotState::Stable).encode(),
        AdminRequest::MigrateSlots {
            to: [9; 20],
            batch: 100,
            slots: vec![(0, 15)],
        }
        .encode(),
        AdminResponse::Ok.encode(),
        AdminResponse::Error("ERR no".into()).encode(),
        AdminResponse::Text("role:master".into()).encode(),
    ]
}

fn codec() -> Vec<Vec<u8>> {
    use larder::Codec;
    let mut out = Vec::new();
    for s in ["", "key:1", "exactly8", "key:12345678901", &"é".repeat(40)] {
        out.push(s.to_string().encode().unwrap_or_default());
    }
    out.push(vec![7u8; 30].encode().unwrap_or_default());
    out.push([3u8; 16].encode().unwrap_or_default());
    out.push(u64::MAX.encode().unwrap_or_default());
    out
}

fn resp() -> Vec<Vec<u8>> {
    use crate::resp_codec::{Protocol, Value};
    let value = Value::Array(vec![
        Value::Simple("OK".into()),
        Value::Error("ERR x".into()),
        Value::Integer(-7),
        Value::Bulk(b"a\r\nb".to_vec()),
        Value::Null,
        Value::Double(1.5),
        Value::Boolean(true),
        Value::Map(vec![(
            Value::Bulk(b"k".to_vec()),
            Value::Set(vec![Value::Integer(1)]),
        )]),
        Value::Push(vec![Value::Bulk(b"message".to_vec())]),
        Value::BigNumber("12345678901234567890".into()),
        Value::Verbatim {
            format: *b"txt",
            text: b"hello".to_vec(),
        },
    ]);
    vec![
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
        b"PING\r\nset \"a b\" 'c'\r\n".to_vec(),
        value.to_bytes(Protocol::Resp3),
        value.to_bytes(Protocol::Resp2),
    ]
}
