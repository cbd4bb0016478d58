//! The packed entry layout of version-2 sections: entries back to back, no padding, no
//! per-entry allocation to write or read.
//!
//! ```text
//! entry := varint(key_len << 1 | has_expiry) varint(value_len) [expire_at_ms u64 LE]
//!          key bytes  value bytes
//! varint := LEB128, 7 bits a byte, low group first, at most 10 bytes
//! ```
//! A key of up to 63 bytes and a value of up to 127 take two bytes of lengths: for
//! `key:N` -> 16 bytes that is 2 bytes of overhead an entry (Redis's RDB spends 3).

use super::EntryRef;

/// Longest LEB128 encoding of a u64.
const MAX_VARINT: usize = 10;

/// Appends the packed encoding of one entry to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, key: &[u8], value: &[u8], expire_at_ms: Option<u64>) {
    put_varint(
        out,
        ((key.len() as u64) << 1) | u64::from(expire_at_ms.is_some()),
    );
    put_varint(out, value.len() as u64);
    if let Some(at) = expire_at_ms {
        out.extend_from_slice(&at.to_le_bytes());
    }
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `b[at..]`; returns it and the position after it.
fn varint(b: &[u8], at: usize) -> Result<(u64, usize), String> {
    let mut v = 0u64;
    for i in 0..MAX_VARINT {
        let Some(&byte) = b.get(at + i) else {
            return Err(format!("length at byte {at} runs past the section's end"));
        };
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT - 1 && bits > 1 {
            return Err(format!("length at byte {at} overflows 64 bits"));
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, at + i + 1));
        }
    }
    Err(format!(
        "length at byte {at} is longer than {MAX_VARINT} bytes"
    ))
}

/// Takes `len` bytes of `b` from `at`; says which field ran past the end otherwise.
fn field<'a>(b: &'a [u8], at: usize, len: u64, what: &str) -> Result<(&'a [u8], usize), String> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&end| end <= b.len())
        .ok_or_else(|| {
            format!(
                "{what} of {len} bytes at byte {at} runs past the section's end ({} bytes)",
                b.len()
            )
        })?;
    Ok((&b[at..end], end))
}

/// Decodes the entry starting at `b[at..]`; returns it and the position after it. The
/// error says which field is wrong and at which byte of the section.
pub(crate) fn decode(b: &[u8], at: usize) -> Result<(EntryRef<'_>, usize), String> {
    let (tag, pos) = varint(b, at)?;
    let (value_len, mut pos) = varint(b, pos)?;
    let expire_at_ms = if tag & 1 == 1 {
        let (raw, next) = field(b, pos, 8, "expiry")?;
        pos = next;
        let mut a = [0; 8];
        a.copy_from_slice(raw);
        Some(u64::from_le_bytes(a))
    } else {
        None
    };
    let (key, pos) = field(b, pos, tag >> 1, "key")?;
    let (value, pos) = field(b, pos, value_len, "value")?;
    Ok((
        EntryRef {
            key,
            value,
            expire_at_ms,
        },
        pos,
    ))
}

/// Checks that `b` holds exactly `entries` whole entries and nothing else.
pub(crate) fn validate(b: &[u8], entries: u64) -> Result<(), String> {
    let mut at = 0;
    let mut n = 0u64;
    while at < b.len() {
        if n == entries {
            return Err(format!(
                "{} bytes follow the {entries} entries the index names, from byte {at}",
                b.len() - at
            ));
        }
        at = decode(b, at).map_err(|e| format!("entry {n}: {e}"))?.1;
        n += 1;
    }
    if n != entries {
        return Err(format!("{n} entries, index says {entries}"));
    }
    Ok(())
}

/// The entries of a validated section, in order. On bytes that were not validated it
/// stops at the first bad entry (it never panics).
pub(crate) struct Entries<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        if self.at >= self.bytes.len() {
            return None;
        }
        match decode(self.bytes, self.at) {
            Ok((e, next)) => {
                self.at = next;
                Some(e)
            }
            Err(_) => {
                self.at = self.bytes.len();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_keys_and_values_cost_two_bytes() {
        let mut out = Vec::new();
        encode(&mut out, b"key:12345", &[7; 16], None);
        assert_eq!(out.len(), 2 + 9 + 16);
        let (e, end) = decode(&out, 0).unwrap();
        assert_eq!(
            (e.key, e.value, e.expire_at_ms),
            (&b"key:12345"[..], &[7u8; 16][..], None)
        );
        assert_eq!(end, out.len());
    }

    #[test]
    fn errors_name_the_field_and_byte() {
        let mut out = Vec::new();
        encode(&mut out, b"abc", b"defg", Some(5));
        let cut = &out[..out.len() - 1];
        let err = decode(cut, 0).unwrap_err();
        assert!(err.contains("value of 4 bytes at byte 13"), "{err}");
        let err = decode(&out[..5], 0).unwrap_err();
        assert!(err.contains("expiry of 8 bytes at byte 2"), "{err}");
        let err = varint(&[0xff; 11], 0).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        let err = validate(&out, 2).unwrap_err();
        assert!(err.contains("1 entries, index says 2"), "{err}");
        let mut two = out.clone();
        two.push(0);
        let err = validate(&two, 1).unwrap_err();
        assert!(err.contains("1 bytes follow the 1 entries"), "{err}");
    }

    proptest! {
        #[test]
        fn round_trip(entries in proptest::collection::vec((
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<Option<u64>>(),
        ), 0..20)) {
            let mut out = Vec::new();
            for (k, v, at) in &entries {
                encode(&mut out, k, v, *at);
            }
            prop_assert!(validate(&out, entries.len() as u64).is_ok());
            let got: Vec<_> = Entries { bytes: &out, at: 0 }
                .map(|e| (e.key.to_vec(), e.value.to_vec(), e.expire_at_ms))
                .collect();
            prop_assert_eq!(got, entries);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0u64..8) {
            let _ = validate(&bytes, n);
            let _ = Entries { bytes: &bytes, at: 0 }.count();
        }
    }
}
