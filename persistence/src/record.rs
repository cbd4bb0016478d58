//! Records: what one write to the cache becomes in the log, and their byte encoding.
//!
//! The encoding is an explicit little-endian layout written by hand rather than rkyv:
//! a record is written once per cache write and read back only on recovery, so what
//! matters is encoding cost (one `Vec` extend per field, no alignment padding, no
//! scratch allocator) and a decoder that checks every length against the bytes left.
//! rkyv is used where zero-copy reading pays: snapshot sections.
//!
//! ```text
//! payload := tag:u8 body
//! tag 1 Set      flags:u8 (bit 0: has expiry) key_len:u32 value_len:u32
//!                [expire_at_ms:u64 if bit 0] key value
//! tag 2 Del      key_len:u32 key
//! tag 3 Expire   at_ms:u64 key_len:u32 key
//! tag 4 Persist  key_len:u32 key
//! tag 5 Flush    (empty)
//! tag 6 Multi    count:u32 then `count` payloads (nested at most MAX_NESTING deep)
//! tag 7 Meta     len:u32 bytes (not a write: the application's own marker, e.g. the
//!                replication position of the records that follow; replay skips it)
//! ```
//! All integers little-endian. A payload must be consumed exactly.

/// Tag byte of [`Record::Set`].
pub const TAG_SET: u8 = 1;
/// Tag byte of [`Record::Del`].
pub const TAG_DEL: u8 = 2;
/// Tag byte of [`Record::Expire`].
pub const TAG_EXPIRE: u8 = 3;
/// Tag byte of [`Record::Persist`].
pub const TAG_PERSIST: u8 = 4;
/// Tag byte of [`Record::Flush`].
pub const TAG_FLUSH: u8 = 5;
/// Tag byte of [`Record::Multi`].
pub const TAG_MULTI: u8 = 6;
/// Tag byte of [`Record::Meta`].
pub const TAG_META: u8 = 7;
/// How deep `Multi` may nest inside `Multi` before the decoder refuses.
pub const MAX_NESTING: usize = 8;

const FLAG_HAS_EXPIRY: u8 = 1;

/// One logged write. Times are absolute (milliseconds since the Unix epoch), so
/// replaying a record twice leaves the same state as once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Set `key` to `value`, with an absolute expiry or none.
    Set {
        /// The key bytes.
        key: Vec<u8>,
        /// The value bytes.
        value: Vec<u8>,
        /// Absolute expiry in ms since the Unix epoch; `None` means no expiry.
        expire_at_ms: Option<u64>,
    },
    /// Remove `key`.
    Del {
        /// The key bytes.
        key: Vec<u8>,
    },
    /// Set an absolute expiry on `key`.
    Expire {
        /// The key bytes.
        key: Vec<u8>,
        /// Absolute expiry in ms since the Unix epoch.
        at_ms: u64,
    },
    /// Remove the expiry of `key`.
    Persist {
        /// The key bytes.
        key: Vec<u8>,
    },
    /// Remove every key.
    Flush,
    /// Several records applied all-or-nothing: they share one frame, so a torn write
    /// loses all of them or none.
    Multi(Vec<Record>),
    /// Not a write: bytes the application stores in its log's order (larder's cluster
    /// layer records the replication id and offset of the records that follow). A
    /// cache replaying the log skips it.
    Meta(Vec<u8>),
}

/// Why a record payload could not be decoded. Offsets are within the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The payload ends inside a field.
    #[error("record truncated at payload byte {at}: needed {needed} more bytes")]
    Truncated {
        /// Offset where the missing field starts.
        at: usize,
        /// How many bytes the field needed.
        needed: usize,
    },
    /// The tag byte names no record type.
    #[error("unknown record tag {tag} at payload byte {at}")]
    UnknownTag {
        /// The tag found.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A `Set` has flag bits this version does not know.
    #[error("unknown Set flags {flags:#04x} at payload byte {at}")]
    UnknownFlags {
        /// The flags found.
        flags: u8,
        /// Their offset.
        at: usize,
    },
    /// Bytes remain after the record.
    #[error("{extra} trailing bytes after the record")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// `Multi` nested deeper than [`MAX_NESTING`].
    #[error("Multi nested deeper than {MAX_NESTING} at payload byte {at}")]
    TooDeep {
        /// Offset of the too-deep `Multi`.
        at: usize,
    },
}

impl Record {
    /// Appends the payload encoding of `self` to `out`. Lengths are u32 on disk: a
    /// key, value or `Multi` over 4 GiB cannot be represented (the log refuses any
    /// record over [`crate::frame::MAX_PAYLOAD`] before encoding it).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        self.encode_unreserved(out);
    }

    /// The payload encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Exact length of the payload encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Set {
                key,
                value,
                expire_at_ms,
            } => 1 + 1 + 4 + 4 + expire_at_ms.map_or(0, |_| 8) + key.len() + value.len(),
            Record::Del { key } | Record::Persist { key } => 1 + 4 + key.len(),
            Record::Expire { key, .. } => 1 + 8 + 4 + key.len(),
            Record::Flush => 1,
            Record::Meta(bytes) => 1 + 4 + bytes.len(),
            Record::Multi(rs) => 1 + 4 + rs.iter().map(Record::encoded_len).sum::<usize>(),
        }
    }

    fn encode_unreserved(&self, out: &mut Vec<u8>) {
        match self {
            Record::Set {
                key,
                value,
                expire_at_ms,
            } => {
                out.push(TAG_SET);
                out.push(if expire_at_ms.is_some() {
                    FLAG_HAS_EXPIRY
                } else {
                    0
                });
                out.extend_from_slice(&len32(key.len()).to_le_bytes());
                out.extend_from_slice(&len32(value.len()).to_le_bytes());
                if let Some(at) = expire_at_ms {
                    out.extend_from_slice(&at.to_le_bytes());
                }
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            Record::Del { key } => {
                out.push(TAG_DEL);
                out.extend_from_slice(&len32(key.len()).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Expire { key, at_ms } => {
                out.push(TAG_EXPIRE);
                out.extend_from_slice(&at_ms.to_le_bytes());
                out.extend_from_slice(&len32(key.len()).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Persist { key } => {
                out.push(TAG_PERSIST);
                out.extend_from_slice(&len32(key.len()).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Flush => out.push(TAG_FLUSH),
            Record::Meta(bytes) => {
                out.push(TAG_META);
                out.extend_from_slice(&len32(bytes.len()).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Record::Multi(rs) => {
                out.push(TAG_MULTI);
                out.extend_from_slice(&len32(rs.len()).to_le_bytes());
                for r in rs {
                    r.encode_unreserved(out);
                }
            }
        }
    }

    /// Decodes one payload, which must be consumed exactly. Never panics.
    pub fn decode(payload: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let rec = r.record(0)?;
        if r.pos != payload.len() {
            return Err(RecordError::TrailingBytes {
                extra: payload.len() - r.pos,
            });
        }
        Ok(rec)
    }
}

/// Lengths are u32 on disk; frames are capped far below 4 GiB (see
/// [`crate::frame::MAX_PAYLOAD`]), and the append path checks the total before encoding.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(RecordError::Truncated {
                at: self.pos,
                needed: n,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn bytes(&mut self, len: u32) -> Result<Vec<u8>, RecordError> {
        Ok(self.take(len as usize)?.to_vec())
    }
    fn record(&mut self, depth: usize) -> Result<Record, RecordError> {
        let at = self.pos;
        let tag = self.u8()?;
        Ok(match tag {
            TAG_SET => {
                let flags_at = self.pos;
                let flags = self.u8()?;
                if flags & !FLAG_HAS_EXPIRY != 0 {
                    return Err(RecordError::UnknownFlags {
                        flags,
                        at: flags_at,
                    });
                }
                let klen = self.u32()?;
                let vlen = self.u32()?;
                let expire_at_ms = if flags & FLAG_HAS_EXPIRY != 0 {
                    Some(self.u64()?)
                } else {
                    None
                };
                let key = self.bytes(klen)?;
                let value = self.bytes(vlen)?;
                Record::Set {
                    key,
                    value,
                    expire_at_ms,
                }
            }
            TAG_DEL => {
                let klen = self.u32()?;
                Record::Del {
                    key: self.bytes(klen)?,
                }
            }
            TAG_EXPIRE => {
                let at_ms = self.u64()?;
                let klen = self.u32()?;
                Record::Expire {
                    key: self.bytes(klen)?,
                    at_ms,
                }
            }
            TAG_PERSIST => {
                let klen = self.u32()?;
                Record::Persist {
                    key: self.bytes(klen)?,
                }
            }
            TAG_FLUSH => Record::Flush,
            TAG_META => {
                let len = self.u32()?;
                Record::Meta(self.bytes(len)?)
            }
            TAG_MULTI => {
                if depth >= MAX_NESTING {
                    return Err(RecordError::TooDeep { at });
                }
                let count = self.u32()? as usize;
                // Every record is at least one byte: cap the allocation by what is left.
                let mut rs = Vec::with_capacity(count.min(self.buf.len() - self.pos));
                for _ in 0..count {
                    rs.push(self.record(depth + 1)?);
                }
                Record::Multi(rs)
            }
            tag => return Err(RecordError::UnknownTag { tag, at }),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_leaf() -> impl Strategy<Value = Record> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..24);
        prop_oneof![
            (bytes(), bytes(), any::<Option<u64>>()).prop_map(|(key, value, expire_at_ms)| {
                Record::Set {
                    key,
                    value,
                    expire_at_ms,
                }
            }),
            bytes().prop_map(|key| Record::Del { key }),
            (bytes(), any::<u64>()).prop_map(|(key, at_ms)| Record::Expire { key, at_ms }),
            bytes().prop_map(|key| Record::Persist { key }),
            Just(Record::Flush),
            bytes().prop_map(Record::Meta),
        ]
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = Record> {
        arb_leaf().prop_recursive(3, 24, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Record::Multi)
        })
    }

    proptest! {
        #[test]
        fn round_trip(rec in arb_record()) {
            let bytes = rec.encode();
            prop_assert_eq!(bytes.len(), rec.encoded_len());
            prop_assert_eq!(Record::decode(&bytes).unwrap(), rec);
        }

        #[test]
        fn decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever decodes re-encodes to the same bytes: the encoding is canonical.
            if let Ok(r) = Record::decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes);
            }
        }

        #[test]
        fn every_strict_prefix_is_rejected(rec in arb_record()) {
            let bytes = rec.encode();
            for cut in 0..bytes.len() {
                prop_assert!(Record::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut rec = Record::Flush;
        for _ in 0..=MAX_NESTING {
            rec = Record::Multi(vec![rec]);
        }
        assert!(matches!(
            Record::decode(&rec.encode()),
            Err(RecordError::TooDeep { .. })
        ));
        // Huge count, no bytes: must not allocate 4G entries.
        let bytes = [TAG_MULTI, 0xff, 0xff, 0xff, 0xff];
        assert!(Record::decode(&bytes).is_err());
    }
}
