//! Node identities and flags.

use std::fmt;

use super::rng::Rng;

/// A node's name: 160 random bits, shown as 40 hex characters like a Redis node id.
///
/// The order of ids matters: on a configEpoch collision the node with the smaller id
/// keeps its epoch (as in Redis).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// Length of an id on the wire.
    pub const LEN: usize = 20;

    /// A fresh random id.
    pub fn random(rng: &mut Rng) -> Self {
        let mut b = [0u8; 20];
        for chunk in b.chunks_mut(8) {
            let v = rng.next_u64().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        NodeId(b)
    }

    /// A fresh id from the operating system's randomness (through std's randomly keyed
    /// hasher), the time and the process id: what a new node or a tool uses. For
    /// reproducible ids (tests, simulations) use [`NodeId::random`] with a seeded
    /// [`Rng`].
    pub fn generate() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        NodeId::random(&mut Rng::new(h.finish()))
    }

    /// Parses 40 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 40 {
            return None;
        }
        let mut b = [0u8; 20];
        for (i, out) in b.iter_mut().enumerate() {
            let hi = (s[2 * i] as char).to_digit(16)?;
            let lo = (s[2 * i + 1] as char).to_digit(16)?;
            *out = (hi * 16 + lo) as u8;
        }
        Some(NodeId(b))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight characters identify a node in logs, as redis-cli shows them.
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Flags a node holds about itself or about a peer, as in Redis's `nodes.conf`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeFlags(u16);

impl NodeFlags {
    /// No flags.
    pub const NONE: NodeFlags = NodeFlags(0);
    /// The node is a master (it may serve slots).
    pub const MASTER: NodeFlags = NodeFlags(1);
    /// The node replicates a master.
    pub const REPLICA: NodeFlags = NodeFlags(1 << 1);
    /// Possibly failing: this node has not heard from it for `node_timeout`.
    pub const PFAIL: NodeFlags = NodeFlags(1 << 2);
    /// Failing: a majority of masters agreed it is unreachable.
    pub const FAIL: NodeFlags = NodeFlags(1 << 3);
    /// The entry describes the local node.
    pub const MYSELF: NodeFlags = NodeFlags(1 << 4);
    /// Learnt from gossip and not yet answered a ping.
    pub const HANDSHAKE: NodeFlags = NodeFlags(1 << 5);
    /// The address is unknown.
    pub const NOADDR: NodeFlags = NodeFlags(1 << 6);
    /// A replica configured never to start a failover (`cluster-replica-no-failover`).
    pub const NOFAILOVER: NodeFlags = NodeFlags(1 << 7);
    /// Every flag this version knows; the decoder rejects others.
    pub const ALL: NodeFlags = NodeFlags(0xff);

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Flags from raw bits, `None` if an unknown bit is set.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 != 0 {
            None
        } else {
            Some(NodeFlags(bits))
        }
    }
    /// True if every flag in `other` is set.
    pub const fn contains(self, other: NodeFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// True if any flag in `other` is set.
    pub const fn intersects(self, other: NodeFlags) -> bool {
        self.0 & other.0 != 0
    }
    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: NodeFlags) {
        self.0 |= other.0;
    }
    /// Clears the flags in `other`.
    pub fn remove(&mut self, other: NodeFlags) {
        self.0 &= !other.0;
    }
}

impl std::ops::BitOr for NodeFlags {
    type Output = NodeFlags;
    fn bitor(self, rhs: NodeFlags) -> NodeFlags {
        NodeFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for NodeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = [
            "master",
            "slave",
            "fail?",
            "fail",
            "myself",
            "handshake",
            "noaddr",
            "nofailover",
        ];
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("noflags")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = NodeId::random(&mut Rng::new(1));
        assert_eq!(NodeId::from_hex(&id.to_string()), Some(id));
        assert_eq!(NodeId::from_hex("zz"), None);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<NodeId> = (0..64).map(|_| NodeId::generate()).collect();
        assert_eq!(ids.len(), 64);
    }

    #[test]
    fn flags_reject_unknown_bits() {
        assert!(NodeFlags::from_bits(0x100).is_none());
        let f = NodeFlags::from_bits(0b101).unwrap();
        assert!(f.contains(NodeFlags::MASTER | NodeFlags::PFAIL));
        assert_eq!(format!("{f:?}"), "master,fail?");
    }
}
