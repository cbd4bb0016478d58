//! Replication ids: 40 lowercase hex characters, as Redis's `master_replid`.

use std::fmt;

use crate::proto::Rng;

/// A replication id: names one history of the write stream.
///
/// Two nodes with the same id and the same offset hold the same data. A master takes a
/// new id when it starts a history (first start, or promotion of a replica), so an
/// offset only means something together with its id. Ids come from a seed the caller
/// passes (no OS randomness here); two masters given the same seed get the same id, so
/// the caller must seed from something unique (node id, time, OS entropy in the driver).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplId([u8; ReplId::LEN]);

impl ReplId {
    /// Length in characters (and bytes on the wire).
    pub const LEN: usize = 40;

    /// An id derived from `seed`; the same seed gives the same id.
    pub fn from_seed(seed: u64) -> Self {
        Self::random(&mut Rng::new(seed))
    }

    /// An id drawn from `rng`.
    pub fn random(rng: &mut Rng) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; Self::LEN];
        for chunk in out.chunks_mut(16) {
            let mut bits = rng.next_u64();
            for c in chunk {
                *c = HEX[(bits & 0xf) as usize];
                bits >>= 4;
            }
        }
        ReplId(out)
    }

    /// Parses 40 lowercase hex characters; anything else is `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(bytes);
        Some(ReplId(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Constructors only admit ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The 40 ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Display for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReplId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_hex_and_reproducible() {
        let a = ReplId::from_seed(1);
        assert_eq!(a, ReplId::from_seed(1));
        assert_ne!(a, ReplId::from_seed(2));
        assert_eq!(a.as_str().len(), 40);
        assert_eq!(ReplId::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(ReplId::from_bytes(&[b'G'; 40]), None);
        assert_eq!(ReplId::from_bytes(b"abc"), None);
    }
}
