//! The bytes of administrative requests (what `larder-cli` and the slot mover send to a
//! node), as a pure codec with no I/O. They travel on the same request streams as
//! forwarded cache operations; the first byte tells them apart ([`ADMIN_VERSION`] here,
//! the cache format's version 1 there).
//!
//! ```text
//! request  := version:u8 (0xA1) op
//! op       := 1 Nodes | 2 Info | 3 Meet addr:text | 4 AddSlots ranges
//!           | 5 Replicate node:20 | 6 Forget node:20 | 7 Failover mode:u8 (0 default,
//!             1 force, 2 takeover) | 8 SetSlot slot:u16 state
//!           | 9 MigrateSlots node:20 batch:u32 ranges | 10 KeyCounts
//!           | 11 Restore count:u32 entry* | 12 DropSlotKeys slot:u16
//!           | 13 Shutdown | 14 DelSlots ranges | 15 SetSlots ranges state
//!           | 16 Adopt count:u32 entry*
//! state    := 0 Stable | 1 Migrating node:20 | 2 Importing node:20 | 3 Node node:20
//! ranges   := count:u32 (first:u16 last:u16)*    inclusive, first <= last < 16384
//! entry    := has_expiry:u8 [expire_at_ms:u64] key value
//! response := 0 Ok | 1 Error text | 2 Text text | 3 Nodes view | 4 Migrated keys:u64
//!             bytes:u64 slots:u32 | 5 KeyCounts count:u32 (slot:u16 keys:u64)*
//!           | 6 Count u64
//! view     := me:20 cluster_ok:u8 current_epoch:u64 keys:u64 count:u32 node*
//!             count:u32 (slot:u16 node:20)* (migrating) count:u32 (slot:u16 node:20)*
//!             (importing)
//! node     := id:20 addr:text flags:u16 has_master:u8 [master:20] config_epoch:u64
//!             repl_offset:u64 ranges
//! key, value, text := len:u32 bytes
//! ```
//! All integers little-endian. A message must be consumed exactly. The decoders never
//! panic and name the field and byte offset of what is wrong; a fuzz target
//! (`fuzz/fuzz_targets/cluster_admin.rs`) includes this file as it is.

use super::wire::{NodeBytes, Reader, WireError};

/// The first byte of every administrative request.
pub const ADMIN_VERSION: u8 = 0xA1;

/// Number of hash slots.
const SLOTS: u16 = 16384;

/// A slot range, both ends included.
pub type SlotRange = (u16, u16);

/// What a `SetSlot` request sets (Redis's `CLUSTER SETSLOT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Clear MIGRATING/IMPORTING.
    Stable,
    /// MIGRATING to this node.
    Migrating(NodeBytes),
    /// IMPORTING from this node.
    Importing(NodeBytes),
    /// Owned by this node (the hand-over).
    Node(NodeBytes),
}

/// One entry moved by a `Restore`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedEntry {
    /// Key bytes (the cache's `Codec`).
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Absolute expiry, ms since the Unix epoch.
    pub expire_at_ms: Option<u64>,
}

/// An administrative request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// The node's view of the cluster (`CLUSTER NODES`).
    Nodes,
    /// The node's `info()` as text.
    Info,
    /// `CLUSTER MEET`.
    Meet(String),
    /// `CLUSTER ADDSLOTSRANGE`.
    AddSlots(Vec<SlotRange>),
    /// `CLUSTER DELSLOTSRANGE`.
    DelSlots(Vec<SlotRange>),
    /// `CLUSTER REPLICATE`.
    Replicate(NodeBytes),
    /// `CLUSTER FORGET`.
    Forget(NodeBytes),
    /// `CLUSTER FAILOVER` (0 default, 1 force, 2 takeover).
    Failover(u8),
    /// `CLUSTER SETSLOT`.
    SetSlot(u16, SlotState),
    /// `CLUSTER SETSLOT` on every slot of the ranges.
    SetSlots(Vec<SlotRange>, SlotState),
    /// Move these slots, with their keys, from the node asked to `to`, `batch` keys
    /// at a time; answered when every slot is handed over.
    MigrateSlots {
        /// The importing node.
        to: NodeBytes,
        /// Keys per batch.
        batch: u32,
        /// The slots.
        slots: Vec<SlotRange>,
    },
    /// How many keys the node holds per slot (slots with none left out).
    KeyCounts,
    /// Entries moved here by the migrating owner of their slots (node to node).
    Restore(Vec<MovedEntry>),
    /// Clears the node of its keys of a slot it neither serves nor imports (left by an
    /// interrupted migration): they are offered to the slot's owner first, which
    /// keeps its own copy of any key it has ([`AdminRequest::Adopt`]), then deleted
    /// here. Answers how many keys the node held.
    DropSlotKeys(u16),
    /// Entries of slots the node serves, found on another node: each is inserted
    /// only if the node does not hold the key (node to node).
    Adopt(Vec<MovedEntry>),
    /// Stops the node (its process decides what that means: `larder-node` exits).
    Shutdown,
}

impl AdminRequest {
    /// The request's name, for messages (`Shutdown`, `DropSlotKeys`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::Nodes => "Nodes",
            AdminRequest::Info => "Info",
            AdminRequest::Meet(_) => "Meet",
            AdminRequest::AddSlots(_) => "AddSlots",
            AdminRequest::DelSlots(_) => "DelSlots",
            AdminRequest::Replicate(_) => "Replicate",
            AdminRequest::Forget(_) => "Forget",
            AdminRequest::Failover(_) => "Failover",
            AdminRequest::SetSlot(..) => "SetSlot",
            AdminRequest::SetSlots(..) => "SetSlots",
            AdminRequest::MigrateSlots { .. } => "MigrateSlots",
            AdminRequest::KeyCounts => "KeyCounts",
            AdminRequest::Restore(_) => "Restore",
            AdminRequest::DropSlotKeys(_) => "DropSlotKeys",
            AdminRequest::Adopt(_) => "Adopt",
            AdminRequest::Shutdown => "Shutdown",
        }
    }
}

/// One node as another sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its id.
    pub id: NodeBytes,
    /// Its address.
    pub addr: String,
    /// Its flags (`larder_cluster::proto::NodeFlags` bits).
    pub flags: u16,
    /// The master it replicates.
    pub master: Option<NodeBytes>,
    /// Its configEpoch.
    pub config_epoch: u64,
    /// Its last announced replication offset.
    pub repl_offset: u64,
    /// The slots it serves.
    pub slots: Vec<SlotRange>,
}

/// A node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodesView {
    /// The node answering.
    pub me: NodeBytes,
    /// Whether its cluster state is OK.
    pub cluster_ok: bool,
    /// Its currentEpoch.
    pub current_epoch: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// Every node it knows, itself included.
    pub nodes: Vec<NodeEntry>,
    /// Its MIGRATING slots and their targets.
    pub migrating: Vec<(u16, NodeBytes)>,
    /// Its IMPORTING slots and their sources.
    pub importing: Vec<(u16, NodeBytes)>,
}

/// The answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminResponse {
    /// Done.
    Ok,
    /// Refused or failed; the text says why.
    Error(String),
    /// Text (`Info`).
    Text(String),
    /// `Nodes`.
    Nodes(NodesView),
    /// `MigrateSlots` finished.
    Migrated {
        /// Keys moved.
        keys: u64,
        /// Key and value bytes moved.
        bytes: u64,
        /// Slots handed over.
        slots: u32,
    },
    /// `KeyCounts`.
    KeyCounts(Vec<(u16, u64)>),
    /// A number.
    Count(u64),
}

mod op {
    pub const NODES: u8 = 1;
    pub const INFO: u8 = 2;
    pub const MEET: u8 = 3;
    pub const ADD_SLOTS: u8 = 4;
    pub const REPLICATE: u8 = 5;
    pub const FORGET: u8 = 6;
    pub const FAILOVER: u8 = 7;
    pub const SET_SLOT: u8 = 8;
    pub const MIGRATE: u8 = 9;
    pub const KEY_COUNTS: u8 = 10;
    pub const RESTORE: u8 = 11;
    pub const DROP_SLOT_KEYS: u8 = 12;
    pub const SHUTDOWN: u8 = 13;
    pub const DEL_SLOTS: u8 = 14;
    pub const SET_SLOTS: u8 = 15;
    pub const ADOPT: u8 = 16;
}

mod resp {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const TEXT: u8 = 2;
    pub const NODES: u8 = 3;
    pub const MIGRATED: u8 = 4;
    pub const KEY_COUNTS: u8 = 5;
    pub const COUNT: u8 = 6;
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_ranges(out: &mut Vec<u8>, ranges: &[SlotRange]) {
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for &(a, b) in ranges {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
}

fn put_entries(out: &mut Vec<u8>, entries: &[MovedEntry]) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        match e.expire_at_ms {
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&at.to_le_bytes());
            }
            None => out.push(0),
        }
        put_bytes(out, &e.key);
        put_bytes(out, &e.value);
    }
}

fn entries(r: &mut Reader<'_>) -> Result<Vec<MovedEntry>, WireError> {
    let n = r.count("entry count")?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let expire_at_ms = if r.flag("has_expiry")? {
            Some(r.u64("expire_at_ms")?)
        } else {
            None
        };
        entries.push(MovedEntry {
            expire_at_ms,
            key: r.vec("key")?,
            value: r.vec("value")?,
        });
    }
    Ok(entries)
}

fn put_state(out: &mut Vec<u8>, state: &SlotState) {
    match state {
        SlotState::Stable => out.push(0),
        SlotState::Migrating(n) => {
            out.push(1);
            out.extend_from_slice(n);
        }
        SlotState::Importing(n) => {
            out.push(2);
            out.extend_from_slice(n);
        }
        SlotState::Node(n) => {
            out.push(3);
            out.extend_from_slice(n);
        }
    }
}

fn state(r: &mut Reader<'_>) -> Result<SlotState, WireError> {
    let at = r.pos();
    Ok(match r.u8("slot state")? {
        0 => SlotState::Stable,
        1 => SlotState::Migrating(r.node()?),
        2 => SlotState::Importing(r.node()?),
        3 => SlotState::Node(r.node()?),
        k => return Err(r.error_at("slot state", at, format!("unknown state {k}"))),
    })
}

fn put_slot_nodes(out: &mut Vec<u8>, v: &[(u16, NodeBytes)]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for (s, n) in v {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(n);
    }
}

impl AdminRequest {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ADMIN_VERSION];
        match self {
            AdminRequest::Nodes => out.push(op::NODES),
            AdminRequest::Info => out.push(op::INFO),
            AdminRequest::Meet(addr) => {
                out.push(op::MEET);
                put_bytes(&mut out, addr.as_bytes());
            }
            AdminRequest::AddSlots(r) => {
                out.push(op::ADD_SLOTS);
                put_ranges(&mut out, r);
            }
            AdminRequest::DelSlots(r) => {
                out.push(op::DEL_SLOTS);
                put_ranges(&mut out, r);
            }
            AdminRequest::Replicate(n) => {
                out.push(op::REPLICATE);
                out.extend_from_slice(n);
            }
            AdminRequest::Forget(n) => {
                out.push(op::FORGET);
                out.extend_from_slice(n);
            }
            AdminRequest::Failover(m) => {
                out.push(op::FAILOVER);
                out.push(*m);
            }
            AdminRequest::SetSlot(slot, state) => {
                out.push(op::SET_SLOT);
                out.extend_from_slice(&slot.to_le_bytes());
                put_state(&mut out, state);
            }
            AdminRequest::SetSlots(ranges, state) => {
                out.push(op::SET_SLOTS);
                put_ranges(&mut out, ranges);
                put_state(&mut out, state);
            }
            AdminRequest::MigrateSlots { to, batch, slots } => {
                out.push(op::MIGRATE);
                out.extend_from_slice(to);
                out.extend_from_slice(&batch.to_le_bytes());
                put_ranges(&mut out, slots);
            }
            AdminRequest::KeyCounts => out.push(op::KEY_COUNTS),
            AdminRequest::Restore(entries) => {
                out.push(op::RESTORE);
                put_entries(&mut out, entries);
            }
            AdminRequest::Adopt(entries) => {
                out.push(op::ADOPT);
                put_entries(&mut out, entries);
            }
            AdminRequest::DropSlotKeys(slot) => {
                out.push(op::DROP_SLOT_KEYS);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            AdminRequest::Shutdown => out.push(op::SHUTDOWN),
        }
        out
    }

    /// Decodes a request; the bytes must be consumed exactly. Never panics.
    pub fn decode(buf: &[u8]) -> Result<AdminRequest, WireError> {
        let mut r = Reader::new(buf);
        let version = r.u8("version")?;
        if version != ADMIN_VERSION {
            return Err(r.error_at(
                "version",
                0,
                format!("version {version:#04x}, expected {ADMIN_VERSION:#04x}"),
            ));
        }
        let at = r.pos();
        let x = match r.u8("admin op")? {
            op::NODES => AdminRequest::Nodes,
            op::INFO => AdminRequest::Info,
            op::MEET => AdminRequest::Meet(r.text("addr")?),
            op::ADD_SLOTS => AdminRequest::AddSlots(ranges(&mut r)?),
            op::DEL_SLOTS => AdminRequest::DelSlots(ranges(&mut r)?),
            op::REPLICATE => AdminRequest::Replicate(r.node()?),
            op::FORGET => AdminRequest::Forget(r.node()?),
            op::FAILOVER => {
                let mat = r.pos();
                let m = r.u8("failover mode")?;
                if m > 2 {
                    return Err(r.error_at("failover mode", mat, format!("unknown mode {m}")));
                }
                AdminRequest::Failover(m)
            }
            op::SET_SLOT => {
                let s = slot(&mut r)?;
                AdminRequest::SetSlot(s, state(&mut r)?)
            }
            op::SET_SLOTS => {
                let rs = ranges(&mut r)?;
                AdminRequest::SetSlots(rs, state(&mut r)?)
            }
            op::MIGRATE => {
                let to = r.node()?;
                let batch = r.u32("batch")?;
                AdminRequest::MigrateSlots {
                    to,
                    batch,
                    slots: ranges(&mut r)?,
                }
            }
            op::KEY_COUNTS => AdminRequest::KeyCounts,
            op::RESTORE => AdminRequest::Restore(entries(&mut r)?),
            op::ADOPT => AdminRequest::Adopt(entries(&mut r)?),
            op::DROP_SLOT_KEYS => AdminRequest::DropSlotKeys(slot(&mut r)?),
            op::SHUTDOWN => AdminRequest::Shutdown,
            t => return Err(r.error_at("admin op", at, format!("unknown op {t}"))),
        };
        r.end()?;
        Ok(x)
    }
}

fn slot(r: &mut Reader<'_>) -> Result<u16, WireError> {
    let at = r.pos();
    let s = r.u16("slot")?;
    if s >= SLOTS {
        return Err(r.error_at("slot", at, format!("slot {s} >= 16384")));
    }
    Ok(s)
}

fn ranges(r: &mut Reader<'_>) -> Result<Vec<SlotRange>, WireError> {
    let n = r.count("range count")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.pos();
        let a = slot(r)?;
        let b = slot(r)?;
        if a > b {
            return Err(r.error_at("slot range", at, format!("{a}-{b} is empty")));
        }
        out.push((a, b));
    }
    Ok(out)
}

fn slot_nodes(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<(u16, NodeBytes)>, WireError> {
    let n = r.count(field)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((slot(r)?, r.node()?));
    }
    Ok(out)
}

impl AdminResponse {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            AdminResponse::Ok => out.push(resp::OK),
            AdminResponse::Error(t) => {
                out.push(resp::ERROR);
                put_bytes(&mut out, t.as_bytes());
            }
            AdminResponse::Text(t) => {
                out.push(resp::TEXT);
                put_bytes(&mut out, t.as_bytes());
            }
            AdminResponse::Nodes(v) => {
                out.push(resp::NODES);
                out.extend_from_slice(&v.me);
                out.push(u8::from(v.cluster_ok));
                out.extend_from_slice(&v.current_epoch.to_le_bytes());
                out.extend_from_slice(&v.keys.to_le_bytes());
                out.extend_from_slice(&(v.nodes.len() as u32).to_le_bytes());
                for n in &v.nodes {
                    out.extend_from_slice(&n.id);
                    put_bytes(&mut out, n.addr.as_bytes());
                    out.extend_from_slice(&n.flags.to_le_bytes());
                    match &n.master {
                        Some(m) => {
                            out.push(1);
                            out.extend_from_slice(m);
                        }
                        None => out.push(0),
                    }
                    out.extend_from_slice(&n.config_epoch.to_le_bytes());
                    out.extend_from_slice(&n.repl_offset.to_le_bytes());
                    put_ranges(&mut out, &n.slots);
                }
                put_slot_nodes(&mut out, &v.migrating);
                put_slot_nodes(&mut out, &v.importing);
            }
            AdminResponse::Migrated { keys, bytes, slots } => {
                out.push(resp::MIGRATED);
                out.extend_from_slice(&keys.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
                out.extend_from_slice(&slots.to_le_bytes());
            }
            AdminResponse::KeyCounts(v) => {
                out.push(resp::KEY_COUNTS);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for (s, n) in v {
                    out.extend_from_slice(&s.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            AdminResponse::Count(n) => {
                out.push(resp::COUNT);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a response; the bytes must be consumed exactly. Never panics.
    pub fn decode(buf: &[u8]) -> Result<AdminResponse, WireError> {
        let mut r = Reader::new(buf);
        let at = r.pos();
        let x = match r.u8("admin response")? {
            resp::OK => AdminResponse::Ok,
            resp::ERROR => AdminResponse::Error(r.text("error")?),
            resp::TEXT => AdminResponse::Text(r.text("text")?),
            resp::NODES => {
                let me = r.node()?;
                let cluster_ok = r.flag("cluster_ok")?;
                let current_epoch = r.u64("current_epoch")?;
                let keys = r.u64("keys")?;
                let n = r.count("node count")?;
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.node()?;
                    let addr = r.text("addr")?;
                    let fat = r.pos();
                    let flags = r.u16("flags")?;
                    if flags > 0xff {
                        return Err(r.error_at("flags", fat, format!("unknown bits {flags:#x}")));
                    }
                    let master = if r.flag("has_master")? {
                        Some(r.node()?)
                    } else {
                        None
                    };
                    nodes.push(NodeEntry {
                        id,
                        addr,
                        flags,
                        master,
                        config_epoch: r.u64("config_epoch")?,
                        repl_offset: r.u64("repl_offset")?,
                        slots: ranges(&mut r)?,
                    });
                }
                AdminResponse::Nodes(NodesView {
                    me,
                    cluster_ok,
                    current_epoch,
                    keys,
                    nodes,
                    migrating: slot_nodes(&mut r, "migrating count")?,
                    importing: slot_nodes(&mut r, "importing count")?,
                })
            }
            resp::MIGRATED => AdminResponse::Migrated {
                keys: r.u64("keys")?,
                bytes: r.u64("bytes")?,
                slots: r.u32("slots")?,
            },
            resp::KEY_COUNTS => {
                let n = r.count("slot count")?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push((slot(&mut r)?, r.u64("keys")?));
                }
                AdminResponse::KeyCounts(v)
            }
            resp::COUNT => AdminResponse::Count(r.u64("count")?),
            t => return Err(r.error_at("admin response", at, format!("unknown tag {t}"))),
        };
        r.end()?;
        Ok(x)
    }
}

/// Slot ranges covering `slots` (sorted, merged).
pub fn to_ranges(slots: impl IntoIterator<Item = u16>) -> Vec<SlotRange> {
    let mut v: Vec<u16> = slots.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<SlotRange> = Vec::new();
    for s in v {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(r: AdminRequest) {
        let b = r.encode();
        assert_eq!(AdminRequest::decode(&b).unwrap(), r);
        for cut in 0..b.len() {
            assert!(AdminRequest::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn requests_round_trip_and_truncations_fail() {
        let n = [7u8; 20];
        round(AdminRequest::Nodes);
        round(AdminRequest::Meet("127.0.0.1:7000".into()));
        round(AdminRequest::AddSlots(vec![(0, 5460), (9000, 9000)]));
        round(AdminRequest::DelSlots(vec![(1, 2)]));
        round(AdminRequest::Replicate(n));
        round(AdminRequest::Forget(n));
        round(AdminRequest::Failover(2));
        round(AdminRequest::SetSlot(16383, SlotState::Importing(n)));
        round(AdminRequest::SetSlot(3, SlotState::Stable));
        round(AdminRequest::MigrateSlots {
            to: n,
            batch: 100,
            slots: vec![(5, 9)],
        });
        round(AdminRequest::SetSlots(vec![(0, 9)], SlotState::Node(n)));
        round(AdminRequest::Restore(vec![
            MovedEntry {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                expire_at_ms: Some(99),
            },
            MovedEntry {
                key: vec![],
                value: vec![1; 300],
                expire_at_ms: None,
            },
        ]));
        round(AdminRequest::DropSlotKeys(0));
        round(AdminRequest::Adopt(vec![MovedEntry {
            key: b"a".to_vec(),
            value: vec![],
            expire_at_ms: None,
        }]));
        round(AdminRequest::Shutdown);
    }

    #[test]
    fn bad_requests_say_what_and_where() {
        let e = AdminRequest::decode(&[1, 1]).unwrap_err();
        assert_eq!((e.field, e.at), ("version", 0));
        let e = AdminRequest::decode(&[ADMIN_VERSION, 8, 0, 0x40, 0]).unwrap_err();
        assert_eq!((e.field, e.at), ("slot", 2));
        let mut b = AdminRequest::AddSlots(vec![(9, 9)]).encode();
        b[6] = 10; // first > last
        let e = AdminRequest::decode(&b).unwrap_err();
        assert_eq!(e.field, "slot range");
        let mut b = AdminRequest::Nodes.encode();
        b.push(0);
        assert_eq!(AdminRequest::decode(&b).unwrap_err().field, "end");
    }

    #[test]
    fn responses_round_trip() {
        let n = [3u8; 20];
        for r in [
            AdminResponse::Ok,
            AdminResponse::Error("no".into()),
            AdminResponse::Text("a\nb".into()),
            AdminResponse::Migrated {
                keys: 1,
                bytes: 2,
                slots: 3,
            },
            AdminResponse::KeyCounts(vec![(1, 5), (16383, 1)]),
            AdminResponse::Count(9),
            AdminResponse::Nodes(NodesView {
                me: n,
                cluster_ok: true,
                current_epoch: 4,
                keys: 10,
                nodes: vec![NodeEntry {
                    id: n,
                    addr: "x".into(),
                    flags: 0x11,
                    master: Some([1; 20]),
                    config_epoch: 2,
                    repl_offset: 77,
                    slots: vec![(0, 100)],
                }],
                migrating: vec![(5, [2; 20])],
                importing: vec![],
            }),
        ] {
            let b = r.encode();
            assert_eq!(AdminResponse::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(AdminResponse::decode(&b[..cut]).is_err());
            }
        }
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(
            to_ranges([5, 3, 4, 9, 10, 1]),
            vec![(1, 1), (3, 5), (9, 10)]
        );
        assert!(to_ranges([]).is_empty());
    }
}
