//! Which hash slot a key belongs to.

use std::borrow::Cow;

use larder_cluster::proto::{key_hash_slot, Slot};

/// The bytes Redis Cluster hashes for a key (CRC16 mod 16384, honouring `{hash tags}`).
///
/// Strings and byte strings hash their bytes, as in Redis, so `"{user1}:cart"` and
/// `"{user1}:profile"` share a slot. Integers hash their decimal text (the key `42`
/// lives where Redis keeps `"42"`). Implement it for your own key types by returning
/// the bytes that should decide the slot (include a `{tag}` to group keys).
pub trait KeySlot {
    /// The bytes to hash.
    fn slot_bytes(&self) -> Cow<'_, [u8]>;

    /// The key's slot.
    fn slot(&self) -> Slot {
        key_hash_slot(&self.slot_bytes())
    }
}

impl KeySlot for str {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl KeySlot for String {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl KeySlot for [u8] {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl KeySlot for Vec<u8> {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<T: KeySlot + ?Sized> KeySlot for &T {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        (**self).slot_bytes()
    }
}

impl<T: KeySlot + ?Sized> KeySlot for Box<T> {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        (**self).slot_bytes()
    }
}

impl<T: KeySlot + ?Sized> KeySlot for std::sync::Arc<T> {
    fn slot_bytes(&self) -> Cow<'_, [u8]> {
        (**self).slot_bytes()
    }
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl KeySlot for $t {
            fn slot_bytes(&self) -> Cow<'_, [u8]> {
                Cow::Owned(self.to_string().into_bytes())
            }
        }
    )*};
}

integer_keys!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from Redis's `CLUSTER KEYSLOT`.
        assert_eq!("foo".slot(), 12182);
        assert_eq!(
            String::from("{user1000}.following").slot(),
            "user1000".slot()
        );
        assert_eq!(42u64.slot(), "42".slot());
        assert_eq!(b"foo".to_vec().slot(), 12182);
    }
}
