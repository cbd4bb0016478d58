//! Hash slots: CRC16 with Redis's hash-tag rule, and a 16384-bit slot set.

use std::fmt;

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: usize = 16384;

/// A hash slot number, `0..16384`.
pub type Slot = u16;

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection. This is the
/// CRC Redis Cluster uses; its check value for `"123456789"` is `0x31C3`. Table-driven,
/// one lookup per byte (routing hashes every key of every operation).
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The CRC16 of each byte value, computed bit by bit at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The slot of `key`, as `CLUSTER KEYSLOT` computes it.
///
/// If the key holds a `{` followed later by a `}` with at least one byte between them,
/// only the bytes between the first `{` and the first `}` after it are hashed; otherwise
/// the whole key is. So `{user1000}.following` and `{user1000}.followers` share a slot,
/// `foo{}{bar}` hashes the whole key, and `foo{{bar}}zap` hashes `{bar`.
pub fn key_hash_slot(key: &[u8]) -> Slot {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS as u16 - 1)
}

/// A set of slots as a 16384-bit bitmap (2 KiB), the shape Redis gossips.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SlotSet(Box<[u64; SLOTS / 64]>);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet(Box::new([0; SLOTS / 64]))
    }
}

impl SlotSet {
    /// Number of 64-bit words in the bitmap.
    pub const WORDS: usize = SLOTS / 64;

    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every slot.
    pub fn full() -> Self {
        SlotSet(Box::new([u64::MAX; SLOTS / 64]))
    }

    /// The slots in `range`.
    pub fn from_range(range: std::ops::Range<Slot>) -> Self {
        let mut s = Self::new();
        for slot in range {
            s.insert(slot);
        }
        s
    }

    /// True if `slot` is in the set. Slots past 16383 are never in it.
    pub fn contains(&self, slot: Slot) -> bool {
        let s = slot as usize;
        s < SLOTS && self.0[s / 64] & (1 << (s % 64)) != 0
    }

    /// Adds `slot` (ignored if out of range).
    pub fn insert(&mut self, slot: Slot) {
        let s = slot as usize;
        if s < SLOTS {
            self.0[s / 64] |= 1 << (s % 64);
        }
    }

    /// Removes `slot`.
    pub fn remove(&mut self, slot: Slot) {
        let s = slot as usize;
        if s < SLOTS {
            self.0[s / 64] &= !(1 << (s % 64));
        }
    }

    /// Number of slots in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True if no slot is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// True if the two sets share a slot.
    pub fn intersects(&self, other: &SlotSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    /// True if every slot of `self` is in `other`.
    pub fn is_subset_of(&self, other: &SlotSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }

    /// Adds every slot of `other`.
    pub fn union_with(&mut self, other: &SlotSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    /// The slots in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some((i * 64 + bit as usize) as Slot)
            })
        })
    }

    /// The raw words, slot `64*i + b` at bit `b` of word `i`.
    pub fn words(&self) -> &[u64; SLOTS / 64] {
        &self.0
    }

    /// A set from raw words.
    pub fn from_words(words: [u64; SLOTS / 64]) -> Self {
        SlotSet(Box::new(words))
    }
}

impl fmt::Debug for SlotSet {
    /// Ranges, like `CLUSTER NODES` prints them: `0-5460 5462`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut it = self.iter().peekable();
        let mut first = true;
        f.write_str("[")?;
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().unwrap_or(end);
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_crc_matches_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc: u16 = 0;
            for &b in data {
                crc ^= (b as u16) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        let mut x: u32 = 7;
        for len in 0..300usize {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            assert_eq!(crc16(&data), bitwise(&data), "{data:?}");
        }
    }

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn keyslot_matches_redis() {
        // Values from `CLUSTER KEYSLOT` on a real Redis.
        assert_eq!(key_hash_slot(b"foo"), 12182);
        assert_eq!(key_hash_slot(b"bar"), 5061);
        assert_eq!(key_hash_slot(b"hello"), 866);
        assert_eq!(key_hash_slot(b""), 0);
        assert_eq!(
            key_hash_slot(b"{user1000}.following"),
            key_hash_slot(b"{user1000}.followers")
        );
        assert_eq!(
            key_hash_slot(b"{user1000}.following"),
            key_hash_slot(b"user1000")
        );
    }

    #[test]
    fn hash_tag_edge_cases() {
        // Empty tag: the whole key is hashed.
        assert_eq!(key_hash_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        // The tag is up to the first `}` after the first `{`.
        assert_eq!(key_hash_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
        assert_eq!(key_hash_slot(b"foo{bar}{zap}"), key_hash_slot(b"bar"));
        // No closing brace: whole key.
        assert_eq!(key_hash_slot(b"foo{bar"), crc16(b"foo{bar") & 16383);
        assert_eq!(key_hash_slot(b"}foo{"), crc16(b"}foo{") & 16383);
    }

    #[test]
    fn slot_set_basics() {
        let mut s = SlotSet::from_range(10..20);
        s.insert(16383);
        s.insert(20000);
        assert_eq!(s.len(), 11);
        assert!(s.contains(15) && !s.contains(20) && s.contains(16383));
        assert_eq!(format!("{s:?}"), "[10-19 16383]");
        s.remove(10);
        assert_eq!(s.iter().next(), Some(11));
        assert!(s.intersects(&SlotSet::from_range(19..21)));
        assert!(!s.intersects(&SlotSet::from_range(0..5)));
        assert_eq!(SlotSet::full().len(), SLOTS);
    }

    proptest::proptest! {
        #[test]
        fn slot_is_in_range(key: Vec<u8>) {
            proptest::prop_assert!((key_hash_slot(&key) as usize) < SLOTS);
        }

        #[test]
        fn tagged_keys_share_slot(tag in "[a-z]{1,10}", a in "[a-z]{0,5}", b in "[a-z]{0,5}") {
            let k1 = format!("{a}{{{tag}}}x");
            let k2 = format!("{b}{{{tag}}}yy");
            proptest::prop_assert_eq!(key_hash_slot(k1.as_bytes()), key_hash_slot(k2.as_bytes()));
        }
    }
}
