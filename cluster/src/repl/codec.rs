//! The replication messages and their binary codec.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "LR" (2) | version (1) | type (1) | body by type:
//! 1 PSYNC          attempt u32 | has_replid u8 [replid 40] | offset u64
//! 2 CONTINUE       attempt u32 | replid 40 | offset u64
//! 3 FULLRESYNC     attempt u32 | replid 40 | offset u64
//! 4 SNAPSHOT_CHUNK attempt u32 | position u64 | len u32 | data (len)
//! 5 SNAPSHOT_END   attempt u32 | total_len u64 | crc32 u32
//! 6 RECORDS        replid 40 | start u64 | count u32 | count × (len u32 | payload)
//! 7 PING           replid 40 | offset u64
//! 8 GETACK         (empty)
//! 9 ACK            attempt u32 | replid 40 | offset u64
//! ```
//!
//! A replication id is 40 lowercase hex characters. The decoder checks the size cap
//! first, then every field, and requires the input to end exactly where the message
//! ends; errors say what was wrong and at which offset. It never panics and never
//! allocates more than the input's length. The transport frames messages; this codec
//! sees exactly one.

use crate::repl::backlog::stream_len;
use crate::repl::id::ReplId;

/// First two bytes of every replication message.
pub const MAGIC: [u8; 2] = *b"LR";
/// The codec version this build writes and reads.
pub const VERSION: u8 = 1;
/// Largest encoded message accepted (and produced): 256 MiB plus room for the header,
/// so one record may be as large as the log's largest (larder-persistence's
/// `MAX_PAYLOAD`): a write the log accepts is never refused by replication.
pub const MAX_MESSAGE_LEN: usize = (256 << 20) + 64;
/// Largest record payload: one record alone in a RECORDS message must fit the cap.
pub const MAX_RECORD_LEN: usize = MAX_MESSAGE_LEN - 64;

/// One replication message. `attempt` numbers a replica's PSYNC; every answer to it
/// echoes the number, so a replica can tell the answer to its latest request from a
/// late or duplicated one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplMessage {
    /// Replica → master: "I hold history `replid` up to `offset`" (`None`: nothing).
    Psync {
        /// The replica's request number.
        attempt: u32,
        /// The history the replica holds, if any.
        replid: Option<ReplId>,
        /// Stream bytes the replica has applied.
        offset: u64,
    },
    /// Master → replica: partial resync; records follow from `offset` under `replid`
    /// (which differs from the requested id when the master continues a history it
    /// took over by promotion).
    Continue {
        /// The PSYNC this answers.
        attempt: u32,
        /// The master's current replication id.
        replid: ReplId,
        /// Where the stream resumes (the offset the replica asked for).
        offset: u64,
    },
    /// Master → replica: full resync; a snapshot of the data at `offset` follows, then
    /// records from `offset`.
    FullResync {
        /// The PSYNC this answers.
        attempt: u32,
        /// The master's replication id.
        replid: ReplId,
        /// The stream offset the snapshot reflects.
        offset: u64,
    },
    /// Master → replica: a piece of the snapshot.
    SnapshotChunk {
        /// The PSYNC this answers.
        attempt: u32,
        /// Byte position of `data` within the snapshot.
        position: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Master → replica: the snapshot is complete.
    SnapshotEnd {
        /// The PSYNC this answers.
        attempt: u32,
        /// Snapshot length in bytes.
        total_len: u64,
        /// CRC-32 (IEEE) of the whole snapshot.
        crc: u32,
    },
    /// Master → replica: consecutive records starting at stream offset `start`.
    Records {
        /// The history these records belong to.
        replid: ReplId,
        /// Offset of the first record.
        start: u64,
        /// Payloads, opaque to replication.
        records: Vec<Vec<u8>>,
    },
    /// Master → replica heartbeat with the master's offset (lets a replica notice that
    /// the tail of the stream was lost).
    Ping {
        /// The master's replication id.
        replid: ReplId,
        /// The master's offset.
        offset: u64,
    },
    /// Master → replica: acknowledge now (sent by `wait`).
    GetAck,
    /// Replica → master: "I have applied up to `offset`" (REPLCONF ACK).
    Ack {
        /// The PSYNC whose session this belongs to.
        attempt: u32,
        /// The history the offset is in.
        replid: ReplId,
        /// Stream bytes applied.
        offset: u64,
    },
}

mod ty {
    pub const PSYNC: u8 = 1;
    pub const CONTINUE: u8 = 2;
    pub const FULLRESYNC: u8 = 3;
    pub const SNAPSHOT_CHUNK: u8 = 4;
    pub const SNAPSHOT_END: u8 = 5;
    pub const RECORDS: u8 = 6;
    pub const PING: u8 = 7;
    pub const GETACK: u8 = 8;
    pub const ACK: u8 = 9;
}

/// Why bytes could not be decoded into a [`ReplMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than [`MAX_MESSAGE_LEN`].
    #[error("replication message of {len} bytes exceeds the {max} byte cap")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The input ended inside a field.
    #[error("truncated at offset {offset}: {field} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic {found:02x?} at offset 0, expected \"LR\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 2],
    },
    /// A version this build does not read.
    #[error(
        "unsupported replication codec version {found} at offset 2 (this build reads {VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// An unknown message type code.
    #[error("unknown replication message type {found} at offset 3")]
    UnknownType {
        /// The code found.
        found: u8,
    },
    /// A field holds a value outside its domain (a flag that is not 0/1, an offset
    /// range that overflows).
    #[error("invalid {field} value {value} at offset {offset}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// The raw value.
        value: u64,
    },
    /// A replication id that is not 40 lowercase hex characters.
    #[error("{field} at offset {offset} is not 40 lowercase hex characters")]
    InvalidReplId {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// Bytes left over after a complete message.
    #[error("{extra} trailing bytes at offset {offset} after a complete message")]
    TrailingBytes {
        /// Where the message ended.
        offset: usize,
        /// How many bytes follow.
        extra: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message would exceed [`MAX_MESSAGE_LEN`].
    #[error("encoded replication message of {len} bytes exceeds the {max} byte cap")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The cap.
        max: usize,
    },
}

impl From<crate::wire::Truncated> for DecodeError {
    fn from(t: crate::wire::Truncated) -> Self {
        DecodeError::Truncated {
            field: t.field,
            offset: t.offset,
            needed: t.needed,
            available: t.available,
        }
    }
}

type Reader<'a> = crate::wire::Reader<'a, DecodeError>;

impl Reader<'_> {
    fn replid(&mut self, field: &'static str) -> Result<ReplId, DecodeError> {
        let offset = self.pos;
        let b = self.take(ReplId::LEN, field)?;
        ReplId::from_bytes(b).ok_or(DecodeError::InvalidReplId { field, offset })
    }
    /// A `u32` length then that many bytes.
    fn bytes(
        &mut self,
        len_field: &'static str,
        field: &'static str,
    ) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(len_field)? as usize;
        Ok(self.take(n, field)?.to_vec())
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_replid(out: &mut Vec<u8>, id: &ReplId) {
    out.extend_from_slice(id.as_bytes());
}

impl ReplMessage {
    /// A short name for logs ("PSYNC", "RECORDS", ...).
    pub fn name(&self) -> &'static str {
        match self {
            ReplMessage::Psync { .. } => "PSYNC",
            ReplMessage::Continue { .. } => "CONTINUE",
            ReplMessage::FullResync { .. } => "FULLRESYNC",
            ReplMessage::SnapshotChunk { .. } => "SNAPSHOT_CHUNK",
            ReplMessage::SnapshotEnd { .. } => "SNAPSHOT_END",
            ReplMessage::Records { .. } => "RECORDS",
            ReplMessage::Ping { .. } => "PING",
            ReplMessage::GetAck => "GETACK",
            ReplMessage::Ack { .. } => "ACK",
        }
    }

    /// Appends the encoding to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let begin = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        match self {
            ReplMessage::Psync {
                attempt,
                replid,
                offset,
            } => {
                out.push(ty::PSYNC);
                put_u32(out, *attempt);
                match replid {
                    Some(id) => {
                        out.push(1);
                        put_replid(out, id);
                    }
                    None => out.push(0),
                }
                put_u64(out, *offset);
            }
            ReplMessage::Continue {
                attempt,
                replid,
                offset,
            } => {
                out.push(ty::CONTINUE);
                put_u32(out, *attempt);
                put_replid(out, replid);
                put_u64(out, *offset);
            }
            ReplMessage::FullResync {
                attempt,
                replid,
                offset,
            } => {
                out.push(ty::FULLRESYNC);
                put_u32(out, *attempt);
                put_replid(out, replid);
                put_u64(out, *offset);
            }
            ReplMessage::SnapshotChunk {
                attempt,
                position,
                data,
            } => {
                out.push(ty::SNAPSHOT_CHUNK);
                put_u32(out, *attempt);
                put_u64(out, *position);
                if data.len() > MAX_MESSAGE_LEN {
                    return too_large(out, begin, data.len());
                }
                put_u32(out, data.len() as u32);
                out.extend_from_slice(data);
            }
            ReplMessage::SnapshotEnd {
                attempt,
                total_len,
                crc,
            } => {
                out.push(ty::SNAPSHOT_END);
                put_u32(out, *attempt);
                put_u64(out, *total_len);
                put_u32(out, *crc);
            }
            ReplMessage::Records {
                replid,
                start,
                records,
            } => {
                out.push(ty::RECORDS);
                put_replid(out, replid);
                put_u64(out, *start);
                let total: usize = records.iter().map(|r| r.len() + 4).sum();
                if total > MAX_MESSAGE_LEN {
                    return too_large(out, begin, total);
                }
                put_u32(out, records.len() as u32);
                for r in records {
                    put_u32(out, r.len() as u32);
                    out.extend_from_slice(r);
                }
            }
            ReplMessage::Ping { replid, offset } => {
                out.push(ty::PING);
                put_replid(out, replid);
                put_u64(out, *offset);
            }
            ReplMessage::GetAck => out.push(ty::GETACK),
            ReplMessage::Ack {
                attempt,
                replid,
                offset,
            } => {
                out.push(ty::ACK);
                put_u32(out, *attempt);
                put_replid(out, replid);
                put_u64(out, *offset);
            }
        }
        let len = out.len() - begin;
        if len > MAX_MESSAGE_LEN {
            return too_large(out, begin, len);
        }
        Ok(())
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one message.
    pub fn decode(buf: &[u8]) -> Result<ReplMessage, DecodeError> {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge {
                len: buf.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut r = Reader::new(buf);
        let magic = r.take(2, "magic")?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic {
                found: [magic[0], magic[1]],
            });
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let msg = match r.u8("type")? {
            ty::PSYNC => {
                let attempt = r.u32("attempt")?;
                let at = r.pos;
                let replid = match r.u8("has_replid")? {
                    0 => None,
                    1 => Some(r.replid("replid")?),
                    v => {
                        return Err(DecodeError::InvalidValue {
                            field: "has_replid",
                            offset: at,
                            value: v as u64,
                        })
                    }
                };
                let offset = r.u64("offset")?;
                ReplMessage::Psync {
                    attempt,
                    replid,
                    offset,
                }
            }
            ty::CONTINUE => ReplMessage::Continue {
                attempt: r.u32("attempt")?,
                replid: r.replid("replid")?,
                offset: r.u64("offset")?,
            },
            ty::FULLRESYNC => ReplMessage::FullResync {
                attempt: r.u32("attempt")?,
                replid: r.replid("replid")?,
                offset: r.u64("offset")?,
            },
            ty::SNAPSHOT_CHUNK => {
                let attempt = r.u32("attempt")?;
                let at = r.pos;
                let position = r.u64("position")?;
                let data = r.bytes("chunk length", "chunk data")?;
                if position.checked_add(data.len() as u64).is_none() {
                    return Err(DecodeError::InvalidValue {
                        field: "position",
                        offset: at,
                        value: position,
                    });
                }
                ReplMessage::SnapshotChunk {
                    attempt,
                    position,
                    data,
                }
            }
            ty::SNAPSHOT_END => ReplMessage::SnapshotEnd {
                attempt: r.u32("attempt")?,
                total_len: r.u64("total_len")?,
                crc: r.u32("crc")?,
            },
            ty::RECORDS => {
                let replid = r.replid("replid")?;
                let start_at = r.pos;
                let start = r.u64("start")?;
                let count = r.u32("record count")? as usize;
                // Each record takes at least its 4-byte length: a count the input cannot
                // hold is rejected before anything is allocated for it.
                if count > r.remaining() / 4 {
                    return Err(DecodeError::Truncated {
                        field: "records",
                        offset: r.pos,
                        needed: count.saturating_mul(4),
                        available: r.remaining(),
                    });
                }
                let mut records = Vec::with_capacity(count);
                let mut end = start;
                for _ in 0..count {
                    let rec = r.bytes("record length", "record")?;
                    end = match end.checked_add(stream_len(rec.len())) {
                        Some(e) => e,
                        None => {
                            return Err(DecodeError::InvalidValue {
                                field: "start",
                                offset: start_at,
                                value: start,
                            })
                        }
                    };
                    records.push(rec);
                }
                ReplMessage::Records {
                    replid,
                    start,
                    records,
                }
            }
            ty::PING => ReplMessage::Ping {
                replid: r.replid("replid")?,
                offset: r.u64("offset")?,
            },
            ty::GETACK => ReplMessage::GetAck,
            ty::ACK => ReplMessage::Ack {
                attempt: r.u32("attempt")?,
                replid: r.replid("replid")?,
                offset: r.u64("offset")?,
            },
            found => return Err(DecodeError::UnknownType { found }),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                offset: r.pos,
                extra: r.remaining(),
            });
        }
        Ok(msg)
    }
}

fn too_large(out: &mut Vec<u8>, begin: usize, len: usize) -> Result<(), EncodeError> {
    out.truncate(begin);
    Err(EncodeError::TooLarge {
        len,
        max: MAX_MESSAGE_LEN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ReplId {
        ReplId::from_seed(9)
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = vec![
            ReplMessage::Psync {
                attempt: 1,
                replid: None,
                offset: 0,
            },
            ReplMessage::Psync {
                attempt: 2,
                replid: Some(id()),
                offset: 77,
            },
            ReplMessage::Continue {
                attempt: 3,
                replid: id(),
                offset: 5,
            },
            ReplMessage::FullResync {
                attempt: 3,
                replid: id(),
                offset: 5,
            },
            ReplMessage::SnapshotChunk {
                attempt: 3,
                position: 10,
                data: vec![1, 2, 3],
            },
            ReplMessage::SnapshotEnd {
                attempt: 3,
                total_len: 13,
                crc: 0xdead_beef,
            },
            ReplMessage::Records {
                replid: id(),
                start: 100,
                records: vec![vec![], vec![7; 9]],
            },
            ReplMessage::Ping {
                replid: id(),
                offset: 4,
            },
            ReplMessage::GetAck,
            ReplMessage::Ack {
                attempt: 3,
                replid: id(),
                offset: 4,
            },
        ];
        for m in msgs {
            let b = m.to_bytes().unwrap();
            assert_eq!(ReplMessage::decode(&b).unwrap(), m, "{}", m.name());
            for cut in 0..b.len() {
                assert!(
                    ReplMessage::decode(&b[..cut]).is_err(),
                    "{} cut {cut}",
                    m.name()
                );
            }
        }
    }

    #[test]
    fn errors_name_the_field_and_offset() {
        let mut b = ReplMessage::Ping {
            replid: id(),
            offset: 4,
        }
        .to_bytes()
        .unwrap();
        b[4] = b'X';
        let e = ReplMessage::decode(&b).unwrap_err();
        assert_eq!(
            e,
            DecodeError::InvalidReplId {
                field: "replid",
                offset: 4
            }
        );
        assert!(e.to_string().contains("offset 4"));
        // A record count far beyond the input is refused without allocating.
        let mut b = ReplMessage::Records {
            replid: id(),
            start: 0,
            records: vec![],
        }
        .to_bytes()
        .unwrap();
        let n = b.len();
        b[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            ReplMessage::decode(&b),
            Err(DecodeError::Truncated {
                field: "records",
                ..
            })
        ));
    }
}
