//! The bytes of forwarded operations and of full-sync snapshots, as pure codecs with
//! no I/O. Keys and values are already encoded (by the cache's `Codec`); this layer
//! only frames them.
//!
//! ```text
//! request  := version:u8 (1) flags:u8 ack_replicas:u32 ack_timeout_ms:u64 op
//!             flags bit 0 ASKING, bit 1 read from a replica; other bits must be 0
//! op       := 1 Get key | 2 Contains key | 3 Ttl key
//!           | 4 Set has_expiry:u8 [expire_at_ms:u64] key value
//!           | 5 Del key | 6 Unlink key | 7 Expire at_ms:u64 key | 8 Persist key
//!           | 9 Batch atomic:u8 count:u32 op*   (no Batch, Len or Wait inside)
//!           | 10 Len | 11 Wait replicas:u32 timeout_ms:u64
//! key, value, text := len:u32 bytes
//! response := 0 Value has:u8 [value] | 1 Bool u8 | 2 Ttl kind:u8 (0 missing,
//!             1 persistent, 2 remaining) [ms:u64] | 3 Done | 4 Count u64
//!           | 5 Batch count:u32 response*   (no Batch inside)
//!           | 10 Moved slot:u16 node:20 addr:text | 11 Ask slot:u16 node:20 addr:text
//!           | 12 TryAgain | 13 Error kind:u8 text
//!           | 14 NotAcked acked:u32 needed:u32
//! snapshot := (len:u32 record)*   records as the log encodes them
//! ```
//! All integers little-endian. A message must be consumed exactly. The decoders never
//! panic and name the field and byte offset of what is wrong; a fuzz target
//! (`fuzz/fuzz_targets/cluster_request.rs`) includes this file as it is.

use std::fmt;

/// The request format version.
pub const VERSION: u8 = 1;
/// Flag: the client was redirected here by ASK.
pub const FLAG_ASKING: u8 = 1;
/// Flag: a replica of the slot's master may answer (reads only).
pub const FLAG_REPLICA_READ: u8 = 2;
/// Most operations in one batch.
pub const MAX_BATCH: usize = 1 << 20;

/// A node id on the wire (the cluster's 20-byte ids).
pub type NodeBytes = [u8; 20];

/// One operation, with its key and value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireOp {
    /// `get`.
    Get(Vec<u8>),
    /// `contains`.
    Contains(Vec<u8>),
    /// `ttl`.
    Ttl(Vec<u8>),
    /// `insert` (with an absolute expiry or none).
    Set {
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
        /// Absolute expiry, ms since the Unix epoch.
        expire_at_ms: Option<u64>,
    },
    /// `remove`.
    Del(Vec<u8>),
    /// `unlink`.
    Unlink(Vec<u8>),
    /// `expire_at`.
    Expire {
        /// Key bytes.
        key: Vec<u8>,
        /// Absolute expiry, ms since the Unix epoch.
        at_ms: u64,
    },
    /// `persist`.
    Persist(Vec<u8>),
    /// Several operations on one slot, in order; `atomic`: all or nothing.
    Batch {
        /// All or nothing (a transaction) or a pipeline.
        atomic: bool,
        /// The operations.
        ops: Vec<WireOp>,
    },
    /// The number of keys the node holds.
    Len,
    /// Redis's `WAIT` on the node.
    Wait {
        /// Replicas to wait for.
        replicas: u32,
        /// Timeout in ms.
        timeout_ms: u64,
    },
}

impl WireOp {
    /// The key, for single-key operations.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            WireOp::Get(k)
            | WireOp::Contains(k)
            | WireOp::Ttl(k)
            | WireOp::Del(k)
            | WireOp::Unlink(k)
            | WireOp::Persist(k)
            | WireOp::Set { key: k, .. }
            | WireOp::Expire { key: k, .. } => Some(k),
            _ => None,
        }
    }

    /// Whether the operation writes.
    pub fn is_write(&self) -> bool {
        match self {
            WireOp::Get(_) | WireOp::Contains(_) | WireOp::Ttl(_) | WireOp::Len => false,
            WireOp::Wait { .. } => false,
            WireOp::Batch { ops, .. } => ops.iter().any(WireOp::is_write),
            _ => true,
        }
    }
}

/// A forwarded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireRequest {
    /// [`FLAG_ASKING`], [`FLAG_REPLICA_READ`].
    pub flags: u8,
    /// For writes: answer only after this many replicas acknowledged (0: do not wait).
    pub ack_replicas: u32,
    /// How long to wait for those acknowledgements, in ms.
    pub ack_timeout_ms: u64,
    /// The operation.
    pub op: WireOp,
}

/// Remaining time to live, as `ttl` answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireTtl {
    /// No such key.
    Missing,
    /// No expiry.
    Persistent,
    /// Milliseconds left.
    Remaining(u64),
}

/// What an error response is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operation was refused or failed (the text says why).
    Refused = 0,
    /// The cluster cannot serve the slot now.
    ClusterDown = 1,
    /// The request itself was bad (undecodable key or value, cross-slot, ...).
    BadRequest = 2,
}

/// The answer to a [`WireRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireResponse {
    /// A value or none.
    Value(Option<Vec<u8>>),
    /// A yes/no answer.
    Bool(bool),
    /// A TTL.
    Ttl(WireTtl),
    /// Done, nothing to return.
    Done,
    /// A number.
    Count(u64),
    /// One answer per batched operation.
    Batch(Vec<WireResponse>),
    /// The slot is served by another node.
    Moved {
        /// The slot.
        slot: u16,
        /// Its owner.
        node: NodeBytes,
        /// The owner's address.
        addr: String,
    },
    /// Ask another node for this one key (slot migration).
    Ask {
        /// The slot.
        slot: u16,
        /// The node to ask.
        node: NodeBytes,
        /// Its address.
        addr: String,
    },
    /// Try again shortly (a multi-key operation during a migration).
    TryAgain,
    /// An error.
    Error(ErrorKind, String),
    /// The write was applied, but fewer replicas than asked acknowledged it in time.
    NotAcked {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        needed: u32,
    },
}

/// Why bytes are not a valid request, response or snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// What was being read.
    pub field: &'static str,
    /// Byte offset where it starts.
    pub at: usize,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.field, self.at, self.problem)
    }
}

impl std::error::Error for WireError {}

mod op {
    pub const GET: u8 = 1;
    pub const CONTAINS: u8 = 2;
    pub const TTL: u8 = 3;
    pub const SET: u8 = 4;
    pub const DEL: u8 = 5;
    pub const UNLINK: u8 = 6;
    pub const EXPIRE: u8 = 7;
    pub const PERSIST: u8 = 8;
    pub const BATCH: u8 = 9;
    pub const LEN: u8 = 10;
    pub const WAIT: u8 = 11;
}

mod resp {
    pub const VALUE: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const TTL: u8 = 2;
    pub const DONE: u8 = 3;
    pub const COUNT: u8 = 4;
    pub const BATCH: u8 = 5;
    pub const MOVED: u8 = 10;
    pub const ASK: u8 = 11;
    pub const TRYAGAIN: u8 = 12;
    pub const ERROR: u8 = 13;
    pub const NOT_ACKED: u8 = 14;
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_op(o: &WireOp, out: &mut Vec<u8>) {
    match o {
        WireOp::Get(k) => {
            out.push(op::GET);
            put_bytes(out, k);
        }
        WireOp::Contains(k) => {
            out.push(op::CONTAINS);
            put_bytes(out, k);
        }
        WireOp::Ttl(k) => {
            out.push(op::TTL);
            put_bytes(out, k);
        }
        WireOp::Set {
            key,
            value,
            expire_at_ms,
        } => {
            out.push(op::SET);
            match expire_at_ms {
                Some(at) => {
                    out.push(1);
                    out.extend_from_slice(&at.to_le_bytes());
                }
                None => out.push(0),
            }
            put_bytes(out, key);
            put_bytes(out, value);
        }
        WireOp::Del(k) => {
            out.push(op::DEL);
            put_bytes(out, k);
        }
        WireOp::Unlink(k) => {
            out.push(op::UNLINK);
            put_bytes(out, k);
        }
        WireOp::Expire { key, at_ms } => {
            out.push(op::EXPIRE);
            out.extend_from_slice(&at_ms.to_le_bytes());
            put_bytes(out, key);
        }
        WireOp::Persist(k) => {
            out.push(op::PERSIST);
            put_bytes(out, k);
        }
        WireOp::Batch { atomic, ops } => {
            out.push(op::BATCH);
            out.push(u8::from(*atomic));
            out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for o in ops {
                encode_op(o, out);
            }
        }
        WireOp::Len => out.push(op::LEN),
        WireOp::Wait {
            replicas,
            timeout_ms,
        } => {
            out.push(op::WAIT);
            out.extend_from_slice(&replicas.to_le_bytes());
            out.extend_from_slice(&timeout_ms.to_le_bytes());
        }
    }
}

impl WireRequest {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(VERSION);
        out.push(self.flags);
        out.extend_from_slice(&self.ack_replicas.to_le_bytes());
        out.extend_from_slice(&self.ack_timeout_ms.to_le_bytes());
        encode_op(&self.op, &mut out);
        out
    }

    /// Decodes a request; the bytes must be consumed exactly. Never panics.
    pub fn decode(buf: &[u8]) -> Result<WireRequest, WireError> {
        let mut r = Reader { buf, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(r.error_at(
                "version",
                0,
                format!("version {version}, expected {VERSION}"),
            ));
        }
        let flags = r.u8("flags")?;
        if flags & !(FLAG_ASKING | FLAG_REPLICA_READ) != 0 {
            return Err(r.error_at("flags", 1, format!("unknown flag bits {flags:#04x}")));
        }
        let ack_replicas = r.u32("ack_replicas")?;
        let ack_timeout_ms = r.u64("ack_timeout_ms")?;
        let op = r.op(true)?;
        r.end()?;
        Ok(WireRequest {
            flags,
            ack_replicas,
            ack_timeout_ms,
            op,
        })
    }
}

fn encode_response(x: &WireResponse, out: &mut Vec<u8>) {
    match x {
        WireResponse::Value(v) => {
            out.push(resp::VALUE);
            match v {
                Some(v) => {
                    out.push(1);
                    put_bytes(out, v);
                }
                None => out.push(0),
            }
        }
        WireResponse::Bool(b) => {
            out.push(resp::BOOL);
            out.push(u8::from(*b));
        }
        WireResponse::Ttl(t) => {
            out.push(resp::TTL);
            match t {
                WireTtl::Missing => out.push(0),
                WireTtl::Persistent => out.push(1),
                WireTtl::Remaining(ms) => {
                    out.push(2);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
            }
        }
        WireResponse::Done => out.push(resp::DONE),
        WireResponse::Count(n) => {
            out.push(resp::COUNT);
            out.extend_from_slice(&n.to_le_bytes());
        }
        WireResponse::Batch(rs) => {
            out.push(resp::BATCH);
            out.extend_from_slice(&(rs.len() as u32).to_le_bytes());
            for r in rs {
                encode_response(r, out);
            }
        }
        WireResponse::Moved { slot, node, addr } | WireResponse::Ask { slot, node, addr } => {
            out.push(if matches!(x, WireResponse::Moved { .. }) {
                resp::MOVED
            } else {
                resp::ASK
            });
            out.extend_from_slice(&slot.to_le_bytes());
            out.extend_from_slice(node);
            put_bytes(out, addr.as_bytes());
        }
        WireResponse::TryAgain => out.push(resp::TRYAGAIN),
        WireResponse::Error(kind, text) => {
            out.push(resp::ERROR);
            out.push(*kind as u8);
            put_bytes(out, text.as_bytes());
        }
        WireResponse::NotAcked { acked, needed } => {
            out.push(resp::NOT_ACKED);
            out.extend_from_slice(&acked.to_le_bytes());
            out.extend_from_slice(&needed.to_le_bytes());
        }
    }
}

impl WireResponse {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        encode_response(self, &mut out);
        out
    }

    /// Decodes a response; the bytes must be consumed exactly. Never panics.
    pub fn decode(buf: &[u8]) -> Result<WireResponse, WireError> {
        let mut r = Reader { buf, pos: 0 };
        let x = r.response(true)?;
        r.end()?;
        Ok(x)
    }
}

/// Appends one record (as the log encodes it) to a snapshot being built.
pub fn push_snapshot_record(out: &mut Vec<u8>, record: &[u8]) {
    put_bytes(out, record);
}

/// Splits a snapshot into its records' bytes. Never panics.
pub fn split_snapshot(buf: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.bytes("snapshot record")?);
    }
    Ok(out)
}

/// A cursor over bytes being decoded (shared with the admin codec).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn error_at(&self, field: &'static str, at: usize, problem: String) -> WireError {
        WireError { field, at, problem }
    }

    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.error_at(
                field,
                self.pos,
                format!("needs {n} bytes, {} left", self.buf.len() - self.pos),
            )),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(field, 1)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        let b = self.take(field, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(field, 4)?);
        Ok(u32::from_le_bytes(a))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(field, 8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(field)? as usize;
        self.take(field, len)
    }

    pub(crate) fn vec(&mut self, field: &'static str) -> Result<Vec<u8>, WireError> {
        Ok(self.bytes(field)?.to_vec())
    }

    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, WireError> {
        let at = self.pos;
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.error_at(field, at, "not UTF-8".into()))
    }

    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.error_at(field, at, format!("{v} is not 0 or 1"))),
        }
    }

    pub(crate) fn count(&mut self, field: &'static str) -> Result<usize, WireError> {
        let at = self.pos;
        let n = self.u32(field)? as usize;
        // Every element takes at least one byte.
        if n > MAX_BATCH || n > self.buf.len() - self.pos {
            return Err(self.error_at(field, at, format!("count {n} exceeds what follows")));
        }
        Ok(n)
    }

    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.pos != self.buf.len() {
            return Err(self.error_at(
                "end",
                self.pos,
                format!("{} trailing bytes", self.buf.len() - self.pos),
            ));
        }
        Ok(())
    }

    fn op(&mut self, top: bool) -> Result<WireOp, WireError> {
        let at = self.pos;
        let tag = self.u8("op")?;
        Ok(match tag {
            op::GET => WireOp::Get(self.vec("key")?),
            op::CONTAINS => WireOp::Contains(self.vec("key")?),
            op::TTL => WireOp::Ttl(self.vec("key")?),
            op::SET => {
                let expire_at_ms = if self.flag("has_expiry")? {
                    Some(self.u64("expire_at_ms")?)
                } else {
                    None
                };
                WireOp::Set {
                    key: self.vec("key")?,
                    value: self.vec("value")?,
                    expire_at_ms,
                }
            }
            op::DEL => WireOp::Del(self.vec("key")?),
            op::UNLINK => WireOp::Unlink(self.vec("key")?),
            op::EXPIRE => {
                let at_ms = self.u64("at_ms")?;
                WireOp::Expire {
                    key: self.vec("key")?,
                    at_ms,
                }
            }
            op::PERSIST => WireOp::Persist(self.vec("key")?),
            op::BATCH if top => {
                let atomic = self.flag("atomic")?;
                let n = self.count("batch count")?;
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    ops.push(self.op(false)?);
                }
                WireOp::Batch { atomic, ops }
            }
            op::LEN if top => WireOp::Len,
            op::WAIT if top => WireOp::Wait {
                replicas: self.u32("replicas")?,
                timeout_ms: self.u64("timeout_ms")?,
            },
            op::BATCH | op::LEN | op::WAIT => {
                return Err(self.error_at("op", at, format!("op {tag} inside a batch")))
            }
            t => return Err(self.error_at("op", at, format!("unknown op {t}"))),
        })
    }

    pub(crate) fn node(&mut self) -> Result<NodeBytes, WireError> {
        let mut n = [0u8; 20];
        n.copy_from_slice(self.take("node", 20)?);
        Ok(n)
    }

    fn response(&mut self, top: bool) -> Result<WireResponse, WireError> {
        let at = self.pos;
        let tag = self.u8("response")?;
        Ok(match tag {
            resp::VALUE => WireResponse::Value(if self.flag("has_value")? {
                Some(self.vec("value")?)
            } else {
                None
            }),
            resp::BOOL => WireResponse::Bool(self.flag("bool")?),
            resp::TTL => {
                let kat = self.pos;
                match self.u8("ttl kind")? {
                    0 => WireResponse::Ttl(WireTtl::Missing),
                    1 => WireResponse::Ttl(WireTtl::Persistent),
                    2 => WireResponse::Ttl(WireTtl::Remaining(self.u64("ttl ms")?)),
                    k => return Err(self.error_at("ttl kind", kat, format!("unknown kind {k}"))),
                }
            }
            resp::DONE => WireResponse::Done,
            resp::COUNT => WireResponse::Count(self.u64("count")?),
            resp::BATCH if top => {
                let n = self.count("batch count")?;
                let mut rs = Vec::with_capacity(n);
                for _ in 0..n {
                    rs.push(self.response(false)?);
                }
                WireResponse::Batch(rs)
            }
            resp::MOVED | resp::ASK => {
                let slot = self.u16("slot")?;
                if slot >= 16384 {
                    return Err(self.error_at(
                        "slot",
                        self.pos - 2,
                        format!("slot {slot} >= 16384"),
                    ));
                }
                let node = self.node()?;
                let addr = self.text("addr")?;
                if tag == resp::MOVED {
                    WireResponse::Moved { slot, node, addr }
                } else {
                    WireResponse::Ask { slot, node, addr }
                }
            }
            resp::TRYAGAIN => WireResponse::TryAgain,
            resp::ERROR => {
                let kat = self.pos;
                let kind = match self.u8("error kind")? {
                    0 => ErrorKind::Refused,
                    1 => ErrorKind::ClusterDown,
                    2 => ErrorKind::BadRequest,
                    k => return Err(self.error_at("error kind", kat, format!("unknown kind {k}"))),
                };
                WireResponse::Error(kind, self.text("error text")?)
            }
            resp::NOT_ACKED => WireResponse::NotAcked {
                acked: self.u32("acked")?,
                needed: self.u32("needed")?,
            },
            resp::BATCH => {
                return Err(self.error_at("response", at, "batch inside a batch".into()))
            }
            t => return Err(self.error_at("response", at, format!("unknown response {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_requests() -> Vec<WireRequest> {
        let ops = vec![
            WireOp::Get(b"k".to_vec()),
            WireOp::Contains(vec![]),
            WireOp::Ttl(b"t".to_vec()),
            WireOp::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                expire_at_ms: Some(7),
            },
            WireOp::Set {
                key: b"k".to_vec(),
                value: vec![],
                expire_at_ms: None,
            },
            WireOp::Del(b"d".to_vec()),
            WireOp::Unlink(b"u".to_vec()),
            WireOp::Expire {
                key: b"e".to_vec(),
                at_ms: u64::MAX,
            },
            WireOp::Persist(b"p".to_vec()),
            WireOp::Len,
            WireOp::Wait {
                replicas: 2,
                timeout_ms: 100,
            },
        ];
        let mut out: Vec<WireRequest> = ops
            .iter()
            .cloned()
            .map(|op| WireRequest {
                flags: FLAG_ASKING,
                ack_replicas: 1,
                ack_timeout_ms: 50,
                op,
            })
            .collect();
        out.push(WireRequest {
            flags: FLAG_REPLICA_READ,
            ack_replicas: 0,
            ack_timeout_ms: 0,
            op: WireOp::Batch {
                atomic: true,
                ops: ops[..9].to_vec(),
            },
        });
        out
    }

    fn sample_responses() -> Vec<WireResponse> {
        let leaves = vec![
            WireResponse::Value(Some(b"v".to_vec())),
            WireResponse::Value(None),
            WireResponse::Bool(true),
            WireResponse::Ttl(WireTtl::Missing),
            WireResponse::Ttl(WireTtl::Persistent),
            WireResponse::Ttl(WireTtl::Remaining(5)),
            WireResponse::Done,
            WireResponse::Count(9),
            WireResponse::Moved {
                slot: 16383,
                node: [7; 20],
                addr: "127.0.0.1:7000".into(),
            },
            WireResponse::Ask {
                slot: 0,
                node: [1; 20],
                addr: "a".into(),
            },
            WireResponse::TryAgain,
            WireResponse::Error(ErrorKind::ClusterDown, "CLUSTERDOWN".into()),
            WireResponse::NotAcked {
                acked: 0,
                needed: 1,
            },
        ];
        let mut out = leaves.clone();
        out.push(WireResponse::Batch(leaves));
        out
    }

    #[test]
    fn round_trips() {
        for r in sample_requests() {
            assert_eq!(WireRequest::decode(&r.encode()).unwrap(), r);
        }
        for r in sample_responses() {
            assert_eq!(WireResponse::decode(&r.encode()).unwrap(), r);
        }
        let mut snap = Vec::new();
        push_snapshot_record(&mut snap, b"abc");
        push_snapshot_record(&mut snap, b"");
        assert_eq!(split_snapshot(&snap).unwrap(), vec![&b"abc"[..], &b""[..]]);
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        for r in sample_requests() {
            let b = r.encode();
            for cut in 0..b.len() {
                assert!(
                    WireRequest::decode(&b[..cut]).is_err(),
                    "{r:?} cut at {cut}"
                );
            }
            let mut long = b.clone();
            long.push(0);
            let e = WireRequest::decode(&long).unwrap_err();
            assert_eq!(e.field, "end");
        }
        for r in sample_responses() {
            let b = r.encode();
            for cut in 0..b.len() {
                assert!(
                    WireResponse::decode(&b[..cut]).is_err(),
                    "{r:?} cut at {cut}"
                );
            }
        }
        let mut snap = Vec::new();
        push_snapshot_record(&mut snap, b"abcdef");
        for cut in 1..snap.len() {
            assert!(split_snapshot(&snap[..cut]).is_err());
        }
    }

    #[test]
    fn errors_name_field_and_offset() {
        let e = WireRequest::decode(&[2]).unwrap_err();
        assert_eq!((e.field, e.at), ("version", 0));
        let e = WireRequest::decode(&[1, 0x80]).unwrap_err();
        assert_eq!((e.field, e.at), ("flags", 1));
        let mut b = WireRequest {
            flags: 0,
            ack_replicas: 0,
            ack_timeout_ms: 0,
            op: WireOp::Len,
        }
        .encode();
        *b.last_mut().unwrap() = 99;
        let e = WireRequest::decode(&b).unwrap_err();
        assert_eq!((e.field, e.at), ("op", 14));
        assert!(e.to_string().contains("unknown op 99"), "{e}");
        // A huge count with nothing after it is refused before allocating.
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = WireRequest::decode(&b).unwrap_err();
        assert_eq!(e.field, "batch count");
    }

    #[test]
    fn seeded_garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = WireRequest::decode(&bytes);
            let _ = WireResponse::decode(&bytes);
            let _ = split_snapshot(&bytes);
        }
    }
}
