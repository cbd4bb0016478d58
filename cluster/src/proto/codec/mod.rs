//! The binary codec for cluster bus messages.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic "LC" (2) | version (1) | type (1)
//! header: sender (20) | addr_len (1) addr (addr_len, UTF-8) | flags (2)
//!         current_epoch (8) | config_epoch (8) | repl_offset (8)
//!         has_master (1) [master (20)] | state_ok (1) | mflags (1) | slots (2048)
//!         replacement count (2), per entry: master (20) | epoch (8) | candidate (20)
//! body:   by type, see `Message::encode`; gossip and migration lists are a u16 count
//!         followed by entries.
//!
//! Version 2 added the replacements; a build reads only its own version.
//! ```
//!
//! The decoder checks the size cap first, then every field, and requires the input to
//! end exactly where the message ends. Errors say what was wrong and at which offset.
//! The transport frames messages (one QUIC stream frame or a length prefix); this codec
//! sees exactly one message.

mod message;

pub use message::{mflags, Body, Gossip, Header, Message, MigrationState, Replacement};

use crate::proto::id::{NodeFlags, NodeId};
use crate::proto::slots::{SlotSet, SLOTS};

/// First two bytes of every message.
pub const MAGIC: [u8; 2] = *b"LC";
/// The codec version this build writes and reads.
pub const VERSION: u8 = 2;
/// Largest encoded message accepted (and produced): 64 KiB.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Most gossip entries in one message.
pub const MAX_GOSSIP: usize = 1024;
/// Most migration entries in one message.
pub const MAX_MIGRATIONS: usize = SLOTS;
/// Most replacement entries in one header (one per master voted against).
pub const MAX_REPLACEMENTS: usize = 1024;

/// Why bytes could not be decoded into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the {max} byte cap")]
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
    #[error("bad magic {found:02x?} at offset 0, expected \"LC\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 2],
    },
    /// A version this build does not read.
    #[error("unsupported codec version {found} at offset 2 (this build reads {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// An unknown message type code.
    #[error("unknown message type {found} at offset 3")]
    UnknownType {
        /// The code found.
        found: u8,
    },
    /// A field holds a value outside its domain (a bool that is not 0/1, unknown flag
    /// bits, a slot past 16383).
    #[error("invalid {field} value {value} at offset {offset}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// The raw value.
        value: u64,
    },
    /// An address that is not UTF-8.
    #[error("{field} at offset {offset} is not UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// A list longer than its cap.
    #[error("{field} count {count} at offset {offset} exceeds the cap of {max}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Where the count is.
        offset: usize,
        /// The count found.
        count: usize,
        /// The cap.
        max: usize,
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
    /// An address longer than 255 bytes.
    #[error("address of {len} bytes is longer than 255")]
    AddrTooLong {
        /// Its length.
        len: usize,
    },
    /// A list longer than its cap.
    #[error("{field} has {count} entries, the cap is {max}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// The encoded message would exceed [`MAX_MESSAGE_LEN`].
    #[error("encoded message of {len} bytes exceeds the {max} byte cap")]
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
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field,
                offset,
                value: v as u64,
            }),
        }
    }
    fn id(&mut self, field: &'static str) -> Result<NodeId, DecodeError> {
        let b = self.take(NodeId::LEN, field)?;
        let mut a = [0u8; NodeId::LEN];
        a.copy_from_slice(b);
        Ok(NodeId(a))
    }
    fn addr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        let offset = self.pos;
        let b = self.take(len, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field, offset })
    }
    fn flags(&mut self, field: &'static str) -> Result<NodeFlags, DecodeError> {
        let offset = self.pos;
        let bits = self.u16(field)?;
        NodeFlags::from_bits(bits).ok_or(DecodeError::InvalidValue {
            field,
            offset,
            value: bits as u64,
        })
    }
    fn slots(&mut self) -> Result<SlotSet, DecodeError> {
        let b = self.take(SlotSet::WORDS * 8, "slot bitmap")?;
        let mut words = [0u64; SlotSet::WORDS];
        for (w, chunk) in words.iter_mut().zip(b.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            *w = u64::from_be_bytes(a);
        }
        Ok(SlotSet::from_words(words))
    }
    fn count(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let count = self.u16(field)? as usize;
        if count > max {
            return Err(DecodeError::TooMany {
                field,
                offset,
                count,
                max,
            });
        }
        Ok(count)
    }
    fn gossip(&mut self) -> Result<Vec<Gossip>, DecodeError> {
        let n = self.count("gossip count", MAX_GOSSIP)?;
        // Capacity is bounded by what the input can hold, not by the claimed count.
        let mut out = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 23));
        for _ in 0..n {
            let node = self.id("gossip node id")?;
            let addr = self.addr("gossip addr")?;
            let flags = self.flags("gossip flags")?;
            out.push(Gossip { node, addr, flags });
        }
        Ok(out)
    }
    fn replacements(&mut self) -> Result<Vec<Replacement>, DecodeError> {
        let n = self.count("replacement count", MAX_REPLACEMENTS)?;
        let mut out = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 48));
        for _ in 0..n {
            let master = self.id("replaced master id")?;
            let epoch = self.u64("replacement epoch")?;
            let candidate = self.id("replacement candidate id")?;
            out.push(Replacement {
                master,
                epoch,
                candidate,
            });
        }
        Ok(out)
    }
    fn migrations(&mut self) -> Result<Vec<MigrationState>, DecodeError> {
        let n = self.count("migration count", MAX_MIGRATIONS)?;
        let mut out = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 23));
        for _ in 0..n {
            let offset = self.pos;
            let slot = self.u16("migration slot")?;
            if slot as usize >= SLOTS {
                return Err(DecodeError::InvalidValue {
                    field: "migration slot",
                    offset,
                    value: slot as u64,
                });
            }
            let migrating = self.bool("migration direction")?;
            let peer = self.id("migration peer")?;
            out.push(MigrationState {
                slot,
                migrating,
                peer,
            });
        }
        Ok(out)
    }
}

fn put_addr(out: &mut Vec<u8>, addr: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(addr.len()).map_err(|_| EncodeError::AddrTooLong { len: addr.len() })?;
    out.push(len);
    out.extend_from_slice(addr.as_bytes());
    Ok(())
}

fn put_count(
    out: &mut Vec<u8>,
    field: &'static str,
    count: usize,
    max: usize,
) -> Result<(), EncodeError> {
    if count > max {
        return Err(EncodeError::TooMany { field, count, max });
    }
    out.extend_from_slice(&(count as u16).to_be_bytes());
    Ok(())
}

fn put_gossip(out: &mut Vec<u8>, gossip: &[Gossip]) -> Result<(), EncodeError> {
    put_count(out, "gossip", gossip.len(), MAX_GOSSIP)?;
    for g in gossip {
        out.extend_from_slice(&g.node.0);
        put_addr(out, &g.addr)?;
        out.extend_from_slice(&g.flags.bits().to_be_bytes());
    }
    Ok(())
}

fn put_replacements(out: &mut Vec<u8>, r: &[Replacement]) -> Result<(), EncodeError> {
    put_count(out, "replacements", r.len(), MAX_REPLACEMENTS)?;
    for e in r {
        out.extend_from_slice(&e.master.0);
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.candidate.0);
    }
    Ok(())
}

fn put_migrations(out: &mut Vec<u8>, m: &[MigrationState]) -> Result<(), EncodeError> {
    put_count(out, "migrations", m.len(), MAX_MIGRATIONS)?;
    for e in m {
        out.extend_from_slice(&e.slot.to_be_bytes());
        out.push(e.migrating as u8);
        out.extend_from_slice(&e.peer.0);
    }
    Ok(())
}

fn put_slots(out: &mut Vec<u8>, slots: &SlotSet) {
    for w in slots.words() {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

impl Message {
    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let h = &self.header;
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.body.type_code());
        out.extend_from_slice(&h.sender.0);
        put_addr(out, &h.addr)?;
        out.extend_from_slice(&h.flags.bits().to_be_bytes());
        out.extend_from_slice(&h.current_epoch.to_be_bytes());
        out.extend_from_slice(&h.config_epoch.to_be_bytes());
        out.extend_from_slice(&h.repl_offset.to_be_bytes());
        match h.master {
            Some(m) => {
                out.push(1);
                out.extend_from_slice(&m.0);
            }
            None => out.push(0),
        }
        out.push(h.state_ok as u8);
        out.push(h.mflags);
        put_slots(out, &h.slots);
        put_replacements(out, &h.replacements)?;
        match &self.body {
            Body::Ping {
                sent_at,
                gossip,
                migrations,
            } => {
                out.extend_from_slice(&sent_at.to_be_bytes());
                put_gossip(out, gossip)?;
                put_migrations(out, migrations)?;
            }
            Body::Pong {
                echo,
                claims_acked,
                gossip,
                migrations,
            } => {
                out.extend_from_slice(&echo.to_be_bytes());
                out.push(*claims_acked as u8);
                put_gossip(out, gossip)?;
                put_migrations(out, migrations)?;
            }
            Body::Meet { sent_at, gossip } => {
                out.extend_from_slice(&sent_at.to_be_bytes());
                put_gossip(out, gossip)?;
            }
            Body::Fail { node } => out.extend_from_slice(&node.0),
            Body::Update {
                node,
                config_epoch,
                slots,
            } => {
                out.extend_from_slice(&node.0);
                out.extend_from_slice(&config_epoch.to_be_bytes());
                put_slots(out, slots);
            }
            Body::FailoverAuthRequest | Body::MfStart => {}
            Body::FailoverAuthAck { epoch } => out.extend_from_slice(&epoch.to_be_bytes()),
        }
        let len = out.len() - start;
        if len > MAX_MESSAGE_LEN {
            out.truncate(start);
            return Err(EncodeError::TooLarge {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        Ok(())
    }

    /// The encoding of `self` in a fresh buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(2200);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes exactly one message from `data`. Never panics; every malformed input is
    /// an error naming the field and offset.
    pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
        if data.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge {
                len: data.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut r = Reader::new(data);
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
        let ty = r.u8("type")?;
        if ty > 7 {
            return Err(DecodeError::UnknownType { found: ty });
        }
        let sender = r.id("sender id")?;
        let addr = r.addr("sender addr")?;
        let flags = r.flags("sender flags")?;
        let current_epoch = r.u64("current epoch")?;
        let config_epoch = r.u64("config epoch")?;
        let repl_offset = r.u64("replication offset")?;
        let master = if r.bool("has master")? {
            Some(r.id("master id")?)
        } else {
            None
        };
        let state_ok = r.bool("state ok")?;
        let mflags_offset = r.pos;
        let mflags = r.u8("mflags")?;
        if mflags & !mflags::ALL != 0 {
            return Err(DecodeError::InvalidValue {
                field: "mflags",
                offset: mflags_offset,
                value: mflags as u64,
            });
        }
        let slots = r.slots()?;
        let replacements = r.replacements()?;
        let header = Header {
            sender,
            addr,
            flags,
            current_epoch,
            config_epoch,
            repl_offset,
            master,
            slots,
            state_ok,
            mflags,
            replacements,
        };
        let body = match ty {
            0 => Body::Ping {
                sent_at: r.u64("ping time")?,
                gossip: r.gossip()?,
                migrations: r.migrations()?,
            },
            1 => Body::Pong {
                echo: r.u64("pong echo")?,
                claims_acked: r.bool("claims acked")?,
                gossip: r.gossip()?,
                migrations: r.migrations()?,
            },
            2 => Body::Meet {
                sent_at: r.u64("meet time")?,
                gossip: r.gossip()?,
            },
            3 => Body::Fail {
                node: r.id("failing node id")?,
            },
            4 => Body::Update {
                node: r.id("update node id")?,
                config_epoch: r.u64("update config epoch")?,
                slots: r.slots()?,
            },
            5 => Body::FailoverAuthRequest,
            6 => Body::FailoverAuthAck {
                epoch: r.u64("ack epoch")?,
            },
            _ => Body::MfStart,
        };
        if r.pos != data.len() {
            return Err(DecodeError::TrailingBytes {
                offset: r.pos,
                extra: data.len() - r.pos,
            });
        }
        Ok(Message { header, body })
    }
}

#[cfg(test)]
mod tests;
