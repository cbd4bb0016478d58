//! Where a node's [`PersistentState`] goes: a file (written to a temporary file,
//! fsynced, renamed over the old one, directory fsynced) or memory, for tests.
//!
//! File format, integers big-endian like the cluster bus:
//!
//! ```text
//! 4     magic "LCNS"     1  version (2; 1 is still read)
//! 20    node id          8  currentEpoch      8  lastVoteEpoch
//! 4     node count, then per node:
//!         20 id | 2+n address (UTF-8) | 1 has-master (+20 master id) |
//!         8 configEpoch | 2048 slot bitmap (256 big-endian u64 words)
//! 4     migrating count, then per entry: 2 slot | 20 node id
//! 4     importing count, then per entry: 2 slot | 20 node id
//! 4     withheld-ack count, then per entry: 20 node id | 8 epoch |
//!         1 has-candidate (+20 candidate id)   (version 1: no candidate bytes)
//! ```
//!
//! The file must end exactly after the last entry. The rename makes a save atomic, so
//! there is no checksum: a torn write leaves the previous file in place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::NetError;
use crate::proto::{Config, Instant, Node, NodeId, PersistentState, SlotSet, WithheldAck};

const MAGIC: &[u8; 4] = b"LCNS";
const VERSION: u8 = 2;
/// The version before promises recorded their candidate; read as promises without one.
const VERSION_NO_CANDIDATE: u8 = 1;

/// Where the driver saves the node's state before sending anything.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// A file, replaced atomically on each save. Read back at start (if it exists) to
    /// restore the node with `Node::restore`.
    File(PathBuf),
    /// Memory shared with the caller (tests); a restart from it works the same way.
    Memory(MemoryStore),
}

/// An in-memory [`StateStore`]: the last saved state, shared by clones.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(Arc<Mutex<Option<PersistentState>>>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }
    /// The last saved state.
    pub fn get(&self) -> Option<PersistentState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, s: PersistentState) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }
}

impl StateStore {
    /// The saved state, if any.
    pub fn load(&self) -> Result<Option<PersistentState>, NetError> {
        match self {
            StateStore::Memory(m) => Ok(m.get()),
            StateStore::File(path) => match fs::read(path) {
                Ok(bytes) => decode_state(&bytes).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(NetError::Io(e)),
            },
        }
    }

    /// Saves `state` durably (for a file: write, fsync, rename, fsync the directory).
    pub fn save(&self, state: &PersistentState) -> Result<(), NetError> {
        match self {
            StateStore::Memory(m) => {
                m.set(state.clone());
                Ok(())
            }
            StateStore::File(path) => save_file(path, &encode_state(state)),
        }
    }
}

fn save_file(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Make the rename itself durable.
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Encodes a state in the file format above.
pub fn encode_state(s: &PersistentState) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.nodes.len() * 2100);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&s.id.0);
    out.extend_from_slice(&s.current_epoch.to_be_bytes());
    out.extend_from_slice(&s.last_vote_epoch.to_be_bytes());
    put_len(&mut out, s.nodes.len());
    for n in &s.nodes {
        out.extend_from_slice(&n.id.0);
        let addr = n.addr.as_bytes();
        let addr = &addr[..addr.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        out.extend_from_slice(addr);
        match n.master {
            Some(m) => {
                out.push(1);
                out.extend_from_slice(&m.0);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&n.config_epoch.to_be_bytes());
        for w in n.slots.words() {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }
    for list in [&s.migrating, &s.importing] {
        put_len(&mut out, list.len());
        for (slot, id) in list.iter() {
            out.extend_from_slice(&slot.to_be_bytes());
            out.extend_from_slice(&id.0);
        }
    }
    put_len(&mut out, s.withheld_acks.len());
    for w in &s.withheld_acks {
        out.extend_from_slice(&w.master.0);
        out.extend_from_slice(&w.epoch.to_be_bytes());
        match w.candidate {
            Some(c) => {
                out.push(1);
                out.extend_from_slice(&c.0);
            }
            None => out.push(0),
        }
    }
    out
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], NetError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(NetError::State(format!(
                "truncated at offset {} reading {what}",
                self.pos
            )));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], NetError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, NetError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, NetError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, NetError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, NetError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn id(&mut self, what: &str) -> Result<NodeId, NetError> {
        Ok(NodeId(self.array(what)?))
    }
}

/// Decodes the file format above, checking every field.
pub fn decode_state(data: &[u8]) -> Result<PersistentState, NetError> {
    let mut r = Reader { data, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(NetError::State("not a larder node state file".into()));
    }
    let v = r.u8("version")?;
    if v != VERSION && v != VERSION_NO_CANDIDATE {
        return Err(NetError::State(format!("unsupported state version {v}")));
    }
    let id = r.id("node id")?;
    let current_epoch = r.u64("currentEpoch")?;
    let last_vote_epoch = r.u64("lastVoteEpoch")?;
    let mut state = PersistentState {
        id,
        current_epoch,
        last_vote_epoch,
        nodes: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
        withheld_acks: Vec::new(),
    };
    for _ in 0..r.u32("node count")? {
        let nid = r.id("node id")?;
        let len = r.u16("address length")? as usize;
        let addr = std::str::from_utf8(r.take(len, "address")?)
            .map_err(|_| NetError::State(format!("address of {nid} is not UTF-8")))?
            .to_string();
        let master = match r.u8("has-master")? {
            0 => None,
            1 => Some(r.id("master id")?),
            b => return Err(NetError::State(format!("has-master byte {b}"))),
        };
        let config_epoch = r.u64("configEpoch")?;
        let mut words = [0u64; SlotSet::WORDS];
        for w in words.iter_mut() {
            *w = r.u64("slot bitmap")?;
        }
        push_node(
            &mut state,
            nid,
            addr,
            master,
            config_epoch,
            SlotSet::from_words(words),
        );
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        for _ in 0..r.u32("slot move count")? {
            let slot = r.u16("slot")?;
            if slot as usize >= crate::proto::SLOTS {
                return Err(NetError::State(format!("slot {slot} out of range")));
            }
            list.push((slot, r.id("slot move peer")?));
        }
    }
    let [migrating, importing] = lists;
    state.migrating = migrating;
    state.importing = importing;
    for _ in 0..r.u32("withheld-ack count")? {
        let master = r.id("withheld node")?;
        let epoch = r.u64("withheld epoch")?;
        let candidate = match v {
            VERSION_NO_CANDIDATE => None,
            _ => match r.u8("has-candidate")? {
                0 => None,
                1 => Some(r.id("candidate id")?),
                b => return Err(NetError::State(format!("has-candidate byte {b}"))),
            },
        };
        state.withheld_acks.push(WithheldAck {
            master,
            epoch,
            candidate,
        });
    }
    if r.pos != data.len() {
        return Err(NetError::State(format!(
            "{} trailing bytes",
            data.len() - r.pos
        )));
    }
    Ok(state)
}

/// Appends a node entry to `state.nodes`. `proto` does not re-export the entry type
/// (`PersistedNode`), so the entry is made by taking the one a fresh `Node` saves for
/// itself and overwriting its fields.
fn push_node(
    state: &mut PersistentState,
    id: NodeId,
    addr: String,
    master: Option<NodeId>,
    config_epoch: u64,
    slots: SlotSet,
) {
    let fresh = Node::new(Config::default(), id, addr, Instant::ZERO, 0).persistent_state();
    if let Some(mut n) = fresh.nodes.into_iter().find(|n| n.id == id) {
        n.master = master;
        n.config_epoch = config_epoch;
        n.slots = slots;
        state.nodes.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistentState {
        let (a, b) = (NodeId([1; 20]), NodeId([2; 20]));
        let mut s = PersistentState {
            id: a,
            current_epoch: 7,
            last_vote_epoch: 5,
            nodes: Vec::new(),
            migrating: vec![(5, b)],
            importing: vec![(16383, b)],
            withheld_acks: vec![
                WithheldAck {
                    master: b,
                    epoch: 9,
                    candidate: Some(a),
                },
                WithheldAck {
                    master: a,
                    epoch: 10,
                    candidate: None,
                },
            ],
        };
        push_node(
            &mut s,
            a,
            "127.0.0.1:7000".into(),
            None,
            3,
            SlotSet::from_range(0..100),
        );
        push_node(
            &mut s,
            b,
            "127.0.0.1:7001".into(),
            Some(a),
            3,
            SlotSet::new(),
        );
        assert_eq!(s.nodes.len(), 2);
        s
    }

    #[test]
    fn state_round_trips_and_truncations_fail() {
        let s = sample();
        let bytes = encode_state(&s);
        assert_eq!(decode_state(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state(&longer).is_err());
    }

    /// A version-1 file (promises without their candidate) still loads.
    #[test]
    fn version_1_state_loads_with_promises_without_candidates() {
        let mut s = sample();
        for w in s.withheld_acks.iter_mut() {
            w.candidate = None;
        }
        let v2 = encode_state(&s);
        // Rewrite as version 1: drop each entry's has-candidate byte (all zero here).
        let n = s.withheld_acks.len();
        let entries_at = v2.len() - n * 29;
        let mut v1 = v2[..entries_at].to_vec();
        v1[4] = VERSION_NO_CANDIDATE;
        for e in v2[entries_at..].chunks(29) {
            assert_eq!(e[28], 0);
            v1.extend_from_slice(&e[..28]);
        }
        assert_eq!(decode_state(&v1).unwrap(), s);
        let mut bad = v2.clone();
        let last = bad.len() - 1;
        bad[last] = 7;
        assert!(decode_state(&bad).is_err());
    }

    #[test]
    fn file_store_saves_atomically_and_loads() {
        let dir = std::env::temp_dir().join(format!("larder-net-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = StateStore::File(dir.join("node.state"));
        assert!(store.load().unwrap().is_none());
        let mut s = sample();
        store.save(&s).unwrap();
        s.current_epoch = 8;
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s));
        fs::remove_dir_all(&dir).unwrap();
    }
}
