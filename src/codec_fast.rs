//! The built-in codec's bytes for the most common key and value types, written and read
//! without rkyv's serializer and validator.
//!
//! The bytes are exactly rkyv 0.8's (little-endian, aligned), so data written either way
//! reads either way and nothing on disk or on the wire changes; only the cost does. A
//! durable write encodes its key and value under the shard lock, and loading decodes
//! every entry: rkyv's general machinery (an arena, a validator that tracks claimed
//! ranges, a copy into an aligned buffer for unaligned input) costs about 200-300
//! instructions per value, against a few dozen here. Layouts (rkyv 0.8, `to_bytes` of a
//! root value):
//!
//! ```text
//! String, len <= 8:  [bytes][0xff to 8 bytes]                       (inline)
//! String, len > 8:   [bytes][zero pad to 4][len' u32][offset i32]
//!                    len' = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
//!                    offset = -(position of the repr) (the bytes start at 0)
//! Vec<u8>:           [bytes][zero pad to 4][offset i32][len u32]
//! [u8; N]:           [N bytes]
//! u64 / i64 / u32 / i32: little-endian
//! ```
//! Decoding reads the root at the end of the bytes, as rkyv does, and checks what rkyv's
//! validator checks for these types (bounds, the repr's length rule, UTF-8).
//! `tests::agrees_with_rkyv` holds the two to the same bytes and values.

use crate::durable::CodecError;
use std::any::{Any, TypeId};

/// Whether `T` is `U`: both type ids are constants in each instantiation, so the test
/// folds away and only the matching branch's downcast (one call) remains.
#[inline(always)]
fn is<T: Any, U: Any>() -> bool {
    TypeId::of::<T>() == TypeId::of::<U>()
}

/// rkyv's inline capacity for strings.
const INLINE: usize = 8;

/// Encodes `value` into `buf` (cleared first) if its type has a fast path.
#[inline]
pub(crate) fn encode<T: Any>(value: &T, buf: &mut Vec<u8>) -> bool {
    let any = value as &dyn Any;
    buf.clear();
    if is::<T, String>() {
        if let Some(s) = any.downcast_ref::<String>() {
            encode_str(s, buf);
            return true;
        }
    }
    if is::<T, Vec<u8>>() {
        if let Some(v) = any.downcast_ref::<Vec<u8>>() {
            encode_bytes(v, buf);
            return true;
        }
    }
    macro_rules! int {
        ($($t:ty)*) => {$(
            if is::<T, $t>() {
                if let Some(x) = any.downcast_ref::<$t>() {
                    buf.extend_from_slice(&x.to_le_bytes());
                    return true;
                }
            }
        )*};
    }
    int!(u64 i64 u32 i32);
    encode_array::<T>(any, buf)
}

fn encode_str(s: &str, buf: &mut Vec<u8>) {
    let b = s.as_bytes();
    // One allocation at most: the bytes, their padding and the 8-byte tail.
    buf.reserve(b.len().max(INLINE) + 12);
    if b.len() <= INLINE {
        buf.extend_from_slice(b);
        buf.resize(INLINE, 0xff);
        return;
    }
    buf.extend_from_slice(b);
    buf.resize(b.len().next_multiple_of(4), 0);
    let len = b.len() as u32;
    let word = (len & 0x3f) | 0x80 | ((len & !0x3f) << 2);
    let offset = -(buf.len() as i64) as i32;
    buf.extend_from_slice(&word.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
}

fn encode_bytes(b: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(b.len() + 12);
    buf.extend_from_slice(b);
    buf.resize(b.len().next_multiple_of(4), 0);
    let offset = -(buf.len() as i64) as i32;
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
}

macro_rules! byte_arrays {
    ($($n:literal)*) => {
        #[inline(always)]
        fn encode_array<T: Any>(any: &dyn Any, buf: &mut Vec<u8>) -> bool {
            $(
                if is::<T, [u8; $n]>() {
                    if let Some(a) = any.downcast_ref::<[u8; $n]>() {
                        buf.extend_from_slice(a);
                        return true;
                    }
                }
            )*
            false
        }

        #[inline(always)]
        fn decode_array<T: Any>(
            bytes: &[u8],
            out: &mut dyn Any,
        ) -> Option<Result<(), CodecError>> {
            $(
                if !is::<T, [u8; $n]>() {
                } else if let Some(slot) = out.downcast_mut::<Option<[u8; $n]>>() {
                    return Some(match bytes.len().checked_sub($n) {
                        Some(at) => {
                            let mut a = [0u8; $n];
                            a.copy_from_slice(&bytes[at..]);
                            *slot = Some(a);
                            Ok(())
                        }
                        None => Err(short(bytes, $n)),
                    });
                }
            )*
            None
        }
    };
}

byte_arrays!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28
    29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56
    57 58 59 60 61 62 63 64);

fn short(bytes: &[u8], need: usize) -> CodecError {
    CodecError(format!(
        "{} bytes is too short for the value ({need} bytes at the end)",
        bytes.len()
    ))
}

/// Decodes `bytes` as a `T` if its type has a fast path.
#[inline]
pub(crate) fn decode<T: Any>(bytes: &[u8]) -> Option<Result<T, CodecError>> {
    let mut out: Option<T> = None;
    let slot = &mut out as &mut dyn Any;
    let done = if is::<T, String>() {
        let s = slot.downcast_mut::<Option<String>>()?;
        decode_str(bytes).map(|v| *s = Some(v))
    } else if is::<T, Vec<u8>>() {
        let s = slot.downcast_mut::<Option<Vec<u8>>>()?;
        decode_bytes(bytes).map(|v| *s = Some(v.to_vec()))
    } else if is::<T, u64>() {
        let s = slot.downcast_mut::<Option<u64>>()?;
        tail::<8>(bytes).map(|a| *s = Some(u64::from_le_bytes(a)))
    } else if is::<T, i64>() {
        let s = slot.downcast_mut::<Option<i64>>()?;
        tail::<8>(bytes).map(|a| *s = Some(i64::from_le_bytes(a)))
    } else if is::<T, u32>() {
        let s = slot.downcast_mut::<Option<u32>>()?;
        tail::<4>(bytes).map(|a| *s = Some(u32::from_le_bytes(a)))
    } else if is::<T, i32>() {
        let s = slot.downcast_mut::<Option<i32>>()?;
        tail::<4>(bytes).map(|a| *s = Some(i32::from_le_bytes(a)))
    } else {
        decode_array::<T>(bytes, slot)?
    };
    Some(done.map(|()| out.expect("set on success")))
}

/// The last `N` bytes, where rkyv finds a root of `N` bytes (aligned to `N`, as the
/// primitives are).
fn tail<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CodecError> {
    let at = bytes.len().checked_sub(N).ok_or_else(|| short(bytes, N))?;
    if at % N != 0 {
        return Err(misaligned(at));
    }
    let mut a = [0u8; N];
    a.copy_from_slice(&bytes[at..]);
    Ok(a)
}

fn misaligned(at: usize) -> CodecError {
    CodecError(format!("the root at byte {at} is not aligned"))
}

/// The 8-byte root of a string or byte vector: its position and its two words.
fn root(bytes: &[u8]) -> Result<(usize, [u8; 4], [u8; 4]), CodecError> {
    let at = bytes.len().checked_sub(8).ok_or_else(|| short(bytes, 8))?;
    if at % 4 != 0 {
        return Err(misaligned(at));
    }
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    b.copy_from_slice(&bytes[at + 4..]);
    Ok((at, a, b))
}

/// The `len` bytes at `offset` from the root at `at`, which must lie before the root.
fn pointee(bytes: &[u8], at: usize, offset: i32, len: usize) -> Result<&[u8], CodecError> {
    let start = (at as i64) + i64::from(offset);
    let end = start.checked_add(len as i64);
    match end {
        Some(end) if start >= 0 && end <= at as i64 => Ok(&bytes[start as usize..end as usize]),
        _ => Err(CodecError(format!(
            "{len} bytes at offset {offset} from the root at byte {at} lie outside the value"
        ))),
    }
}

fn decode_str(bytes: &[u8]) -> Result<String, CodecError> {
    let (at, first, second) = root(bytes)?;
    let text = if first[0] & 0xc0 != 0x80 {
        let repr = &bytes[at..];
        let len = repr.iter().position(|&b| b == 0xff).unwrap_or(INLINE);
        &repr[..len]
    } else {
        let word = u32::from_le_bytes(first);
        let len = ((word & 0x3f) | ((word & !0xff) >> 2)) as usize;
        if len <= INLINE {
            return Err(CodecError(
                "string stored out of line with an inline length".into(),
            ));
        }
        pointee(bytes, at, i32::from_le_bytes(second), len)?
    };
    std::str::from_utf8(text)
        .map(str::to_owned)
        .map_err(|e| CodecError(format!("string is not UTF-8: {e}")))
}

fn decode_bytes(bytes: &[u8]) -> Result<&[u8], CodecError> {
    let (at, offset, len) = root(bytes)?;
    let len = u32::from_le_bytes(len) as usize;
    pointee(bytes, at, i32::from_le_bytes(offset), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rkyv_bytes<T>(v: &T) -> Vec<u8>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                Vec<u8>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(v, Vec::new()).unwrap()
    }

    fn rkyv_decode<T>(b: &[u8]) -> Option<T>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(b);
        rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned).ok()
    }

    fn same<T>(v: T)
    where
        T: Any + Clone + PartialEq + std::fmt::Debug + rkyv::Archive,
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                Vec<u8>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let mut fast = Vec::new();
        assert!(encode(&v, &mut fast));
        let slow = rkyv_bytes(&v);
        assert_eq!(fast, slow, "bytes of {v:?}");
        assert_eq!(decode::<T>(&slow).unwrap().unwrap(), v);
        assert_eq!(rkyv_decode::<T>(&fast).unwrap(), v);
    }

    /// Decoding arbitrary bytes never panics, and where rkyv also accepts them both
    /// read the same value.
    fn garbage<T>(b: &[u8])
    where
        T: Any + PartialEq + std::fmt::Debug + rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let fast = decode::<T>(b).unwrap();
        let slow = rkyv_decode::<T>(b);
        match (fast, slow) {
            (Ok(f), Some(s)) => assert_eq!(f, s, "{b:?}"),
            (Err(_), Some(s)) => panic!("rkyv reads {s:?} from {b:?}, the fast path refuses"),
            _ => {}
        }
    }

    #[test]
    fn agrees_with_rkyv_at_the_boundaries() {
        for len in [
            0, 1, 7, 8, 9, 10, 11, 12, 13, 63, 64, 65, 255, 256, 257, 5000,
        ] {
            same("x".repeat(len));
            same("é".repeat(len));
            same(vec![7u8; len]);
        }
        same(String::from("key:1234567"));
        for x in [0u64, 1, u64::MAX, 1 << 40] {
            same(x);
            same(x as i64);
            same(x as u32);
            same(x as i32);
        }
        same([9u8; 16]);
        same([1u8; 1]);
        same([2u8; 64]);
        let mut buf = Vec::new();
        assert!(!encode(&[0u8; 65], &mut buf), "no fast path past 64 bytes");
        assert!(!encode(&(1u8, 2u8), &mut buf));
        assert!(decode::<(u8, u8)>(&[1, 2]).is_none());
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let e = decode::<String>(&[1, 2]).unwrap().unwrap_err();
        assert!(e.0.contains("too short"), "{e}");
        let mut b = Vec::new();
        encode_str("a longer string", &mut b);
        let n = b.len();
        b[n - 4..].copy_from_slice(&(-100i32).to_le_bytes());
        let e = decode::<String>(&b).unwrap().unwrap_err();
        assert!(e.0.contains("outside the value"), "{e}");
        let e = decode::<String>(&[0xc3, 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap()
            .unwrap_err();
        assert!(e.0.contains("UTF-8"), "{e}");
    }

    proptest! {
        #[test]
        fn strings_and_bytes_agree_with_rkyv(s in ".{0,80}", b in proptest::collection::vec(any::<u8>(), 0..80)) {
            same(s);
            same(b);
        }

        #[test]
        fn damaged_encodings_agree_with_rkyv(s in ".{0,40}", at in any::<usize>(), x in 1u8..=255, cut in 0usize..3) {
            for bytes in [rkyv_bytes(&s), rkyv_bytes(&s.clone().into_bytes())] {
                let mut b = bytes.clone();
                let i = at % b.len();
                b[i] ^= x;
                garbage::<String>(&b);
                garbage::<Vec<u8>>(&b);
                // Shorter, and with bytes in front (rkyv reads the root at the end).
                let short = &bytes[..bytes.len().saturating_sub(cut * 4)];
                garbage::<String>(short);
                garbage::<Vec<u8>>(short);
                let mut front = vec![0u8; cut * 4];
                front.extend_from_slice(&bytes);
                garbage::<String>(&front);
                garbage::<Vec<u8>>(&front);
            }
        }

        #[test]
        fn garbage_never_panics_and_agrees_where_rkyv_reads(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            garbage::<String>(&b);
            garbage::<Vec<u8>>(&b);
            garbage::<u64>(&b);
            garbage::<i32>(&b);
            garbage::<[u8; 16]>(&b);
        }
    }
}
