//! AOF incr files: a 16-byte file header, then frames back to back.
//!
//! ```text
//! file header (16 bytes)
//!  0        8        12       16
//!  +--------+--------+--------+
//!  | magic  | version| zero   |   magic = "LARDAOF\0", version = 1 or 2 (u32 LE)
//!  +--------+--------+--------+
//!
//! version 1: frames back to back; the file ends at the end of the last frame.
//! version 2 (a mapped segment): the file is preallocated (zeros) and written through
//!   a shared mapping; frames back to back from byte 16, then zeros to the end of the
//!   file. Appenders reserve space and copy concurrently, storing each frame's crc32
//!   last, so a crash can leave, before later whole frames, a hole: reserved frames
//!   never (fully) copied, whose crc32 field still reads zero. See [`next_in_segment`].
//!
//! frame (16 + len bytes)
//!  0        4        8                16
//!  +--------+--------+----------------+----------------------+
//!  | len    | crc32  | seq            | payload (len bytes)  |
//!  +--------+--------+----------------+----------------------+
//!  len: u32 LE, payload bytes, at most MAX_PAYLOAD
//!  crc32: u32 LE, CRC-32 (IEEE) of bytes [0..4) ++ [8..16+len): length, seq, payload
//!  seq: u64 LE, the record's sequence number
//! ```
//! The checksum covers the length, so a flipped length bit is caught even when the
//! new length still fits in the file.

use crate::record::{Record, RecordError};

/// Magic bytes at the start of every incr file.
pub const AOF_MAGIC: [u8; 8] = *b"LARDAOF\0";
/// Format version written at [`VERSION_OFFSET`] of new incr files: a mapped,
/// preallocated segment.
pub const AOF_VERSION: u32 = 2;
/// The version written before the log's tail was mapped: frames appended with
/// `pwrite`, no preallocation. Still read.
pub const AOF_VERSION_APPENDED: u32 = 1;
/// Offset of the magic in the file header.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the version (u32 LE) in the file header.
pub const VERSION_OFFSET: usize = 8;
/// Length of the file header; the first frame starts here.
pub const FILE_HEADER_LEN: usize = 16;

/// Offset of the payload length (u32 LE) within a frame.
pub const LEN_OFFSET: usize = 0;
/// Offset of the CRC-32 (u32 LE) within a frame.
pub const CRC_OFFSET: usize = 4;
/// Offset of the sequence number (u64 LE) within a frame.
pub const SEQ_OFFSET: usize = 8;
/// Length of a frame header; the payload starts here.
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest payload a frame may carry (256 MiB). Bigger lengths are corruption.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// The 16-byte header of a new incr file ([`AOF_VERSION`]).
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    file_header_version(AOF_VERSION)
}

/// The 16-byte header of an incr file of `version` (tests write older files with it).
pub fn file_header_version(version: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0; FILE_HEADER_LEN];
    h[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&AOF_MAGIC);
    h[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&version.to_le_bytes());
    h
}

/// Why an incr file's header is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_LEN`] bytes.
    #[error("file shorter than its {FILE_HEADER_LEN}-byte header ({len} bytes)")]
    Short {
        /// The file length.
        len: usize,
    },
    /// The magic is not [`AOF_MAGIC`].
    #[error("bad magic: not a larder AOF file")]
    BadMagic,
    /// A version this build does not read.
    #[error("unsupported AOF format version {0}")]
    Version(u32),
    /// The reserved bytes 12..16 are not zero.
    #[error("reserved header bytes 12..16 are not zero")]
    Reserved,
}

/// Checks the file header of an incr file; returns its version ([`AOF_VERSION`] or
/// [`AOF_VERSION_APPENDED`]).
pub fn check_file_header(bytes: &[u8]) -> Result<u32, HeaderError> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(HeaderError::Short { len: bytes.len() });
    }
    if bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8] != AOF_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let v = u32_at(bytes, VERSION_OFFSET);
    if v != AOF_VERSION && v != AOF_VERSION_APPENDED {
        return Err(HeaderError::Version(v));
    }
    if u32_at(bytes, VERSION_OFFSET + 4) != 0 {
        return Err(HeaderError::Reserved);
    }
    Ok(v)
}

/// Appends one frame carrying `payload` with sequence `seq` to `out`.
/// The caller keeps `payload.len() <= MAX_PAYLOAD`.
pub fn encode_frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame for `record`, encoding it in place (no intermediate payload copy).
pub fn encode_record_frame(seq: u64, record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + record.encoded_len());
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    record.encode_into(out);
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + LEN_OFFSET..start + LEN_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
    out[start + SEQ_OFFSET..start + SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
    let crc = frame_crc(&out[start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame for `record` with its sequence and checksum fields zero: the
/// bytes an appender encodes before it knows its sequence. [`seal_frame`] fills them.
pub fn encode_unsealed(record: &Record, out: &mut Vec<u8>) {
    // No `reserve(encoded_len)`: the log reuses one buffer per thread, and the length
    // was already computed once to check the limit.
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    record.encode_into(out);
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + LEN_OFFSET..start + LEN_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
}

/// Writes `seq` into the frame that `frame` holds exactly (made by [`encode_unsealed`])
/// and returns its checksum, leaving the checksum field as it is: a mapped appender
/// stores the frame first and the checksum last.
pub fn seal_frame(frame: &mut [u8], seq: u64) -> u32 {
    frame[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
    frame_crc(frame)
}

fn frame_crc(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[LEN_OFFSET..LEN_OFFSET + 4]);
    h.update(&frame[SEQ_OFFSET..]);
    h.finalize()
}

/// The little-endian `u32` at `at` (the caller has checked the length).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `at` (the caller has checked the length).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One checked frame inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Offset of the frame header in the buffer.
    pub offset: usize,
    /// The sequence number.
    pub seq: u64,
    /// The payload (checksum verified, not yet decoded).
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Offset just past this frame.
    pub fn end(&self) -> usize {
        self.offset + FRAME_HEADER_LEN + self.payload.len()
    }

    /// Decodes the payload.
    pub fn record(&self) -> Result<Record, RecordError> {
        Record::decode(self.payload)
    }
}

/// Why no frame could be read at an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The buffer ends inside the frame (a torn write, if at the end of the last file).
    #[error("frame at byte {offset} is incomplete: {needed} bytes needed, {available} left")]
    Incomplete {
        /// Offset of the frame.
        offset: usize,
        /// Bytes the frame needs (header, or header plus payload).
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// The length field exceeds [`MAX_PAYLOAD`].
    #[error("frame at byte {offset} claims a {len}-byte payload (limit {MAX_PAYLOAD})")]
    TooLong {
        /// Offset of the frame.
        offset: usize,
        /// The length found.
        len: usize,
    },
    /// The checksum does not match.
    #[error("frame at byte {offset} (seq field {seq}) fails its checksum")]
    Checksum {
        /// Offset of the frame.
        offset: usize,
        /// The sequence field as read (untrusted).
        seq: u64,
    },
}

impl FrameError {
    /// Offset of the frame the error is about.
    pub fn offset(&self) -> usize {
        match *self {
            FrameError::Incomplete { offset, .. }
            | FrameError::TooLong { offset, .. }
            | FrameError::Checksum { offset, .. } => offset,
        }
    }
}

/// Reads and checks the frame at `offset` of `buf`. Never panics.
pub fn decode_frame(buf: &[u8], offset: usize) -> Result<Frame<'_>, FrameError> {
    let available = buf.len().saturating_sub(offset);
    if available < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete {
            offset,
            needed: FRAME_HEADER_LEN,
            available,
        });
    }
    let len = u32_at(buf, offset + LEN_OFFSET) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong { offset, len });
    }
    if available < FRAME_HEADER_LEN + len {
        return Err(FrameError::Incomplete {
            offset,
            needed: FRAME_HEADER_LEN + len,
            available,
        });
    }
    let frame = &buf[offset..offset + FRAME_HEADER_LEN + len];
    let seq = u64_at(frame, SEQ_OFFSET);
    if frame_crc(frame) != u32_at(frame, CRC_OFFSET) {
        return Err(FrameError::Checksum { offset, seq });
    }
    Ok(Frame {
        offset,
        seq,
        payload: &frame[FRAME_HEADER_LEN..],
    })
}

/// Iterates the frames of `buf` from `start`, ending after the first error.
pub fn frames(buf: &[u8], start: usize) -> Frames<'_> {
    Frames {
        buf,
        pos: start,
        done: false,
    }
}

/// Iterator returned by [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        match decode_frame(self.buf, self.pos) {
            Ok(f) => {
                self.pos = f.end();
                Some(Ok(f))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// What [`next_in_segment`] found at an offset of a mapped segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentStep<'a> {
    /// A whole frame (its sequence is not checked here).
    Frame(Frame<'a>),
    /// Frames reserved but never (fully) copied: from `offset` to `next`, where a
    /// whole frame follows whose sequence is `missing` above the expected one. The
    /// first reserved frame's crc32 field is still zero (appenders store it last).
    Hole {
        /// Offset of the first missing frame.
        offset: usize,
        /// Offset of the whole frame after the hole.
        next: usize,
        /// Sequences the hole took (at least 1).
        missing: u64,
    },
    /// Nothing or only zeros from here: the end of the data.
    End,
    /// Damage after which no frame of this log follows: a write cut short.
    Torn(FrameError),
    /// Damage followed by a whole frame, and not a hole: corruption.
    Corrupt(FrameError),
}

/// Reads a mapped segment ([`AOF_VERSION`]) at `offset`, where the frame of sequence
/// `expected` should start. Never panics; every step but `Frame` and `Hole` ends the
/// data, and `Hole::next` is past `offset`.
///
/// A failing frame is the end when only zeros follow (the preallocated tail), a hole
/// when a later whole frame carries a higher sequence within [`scan_for_frame`]'s
/// window and the failing frame's crc32 field is zero (what an appender killed before
/// its last store leaves; a bit flip in a whole frame leaves it nonzero), torn when no
/// such frame follows, and corruption otherwise.
pub fn next_in_segment(buf: &[u8], offset: usize, expected: u64) -> SegmentStep<'_> {
    if offset >= buf.len() {
        return SegmentStep::End;
    }
    let err = match decode_frame(buf, offset) {
        Ok(f) => return SegmentStep::Frame(f),
        Err(e) => e,
    };
    if all_zero(&buf[offset..]) {
        return SegmentStep::End;
    }
    let Some(next) = scan_for_frame(buf, offset, expected.checked_sub(1)).found else {
        return SegmentStep::Torn(err);
    };
    let next_seq = u64_at(buf, next + SEQ_OFFSET);
    let crc_zero = buf.len() >= offset + CRC_OFFSET + 4 && u32_at(buf, offset + CRC_OFFSET) == 0;
    if next_seq > expected && crc_zero {
        SegmentStep::Hole {
            offset,
            next,
            missing: next_seq - expected,
        }
    } else {
        SegmentStep::Corrupt(err)
    }
}

/// Whether `bytes` are all zero, eight at a time (a segment's tail is megabytes).
fn all_zero(bytes: &[u8]) -> bool {
    let chunks = bytes.chunks_exact(8);
    let rest = chunks.remainder();
    chunks
        .into_iter()
        .all(|c| u64::from_ne_bytes(c.try_into().unwrap_or([1; 8])) == 0)
        && rest.iter().all(|&b| b == 0)
}

/// Whether any valid frame with a sequence above `after_seq` starts past `bad_offset`.
/// Recovery uses this to tell a torn tail (nothing valid follows the damage) from
/// damage in the middle (a later frame survived). See [`scan_for_frame`].
pub fn valid_frame_follows(buf: &[u8], bad_offset: usize, after_seq: Option<u64>) -> bool {
    scan_for_frame(buf, bad_offset, after_seq).found.is_some()
}

/// What [`scan_for_frame`] found and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// Offset of the first valid frame found past the damage, if any.
    pub found: Option<usize>,
    /// Bytes fed to CRC-32 along the way: linear in the bytes scanned (at most about
    /// 70 per candidate offset, plus one pass over the buffer).
    pub bytes_hashed: u64,
}

/// Spacing of the running-CRC checkpoints [`scan_for_frame`] keeps.
const CHECKPOINT: usize = 32;

/// Looks for a valid frame starting after `bad_offset` whose sequence could continue a
/// log whose last good record is `after_seq`: above it, and at most one more than it
/// plus the number of whole frame headers that fit between the damage and the frame
/// (every lost record took at least a header). Frames outside that window cannot be
/// this log's own and are ignored.
///
/// Linear in `buf.len() - bad_offset`: instead of checksumming each candidate frame
/// from scratch (quadratic on garbage, where most offsets read as a plausible length),
/// one pass keeps the running CRC-32 every 32 bytes, and a candidate's
/// checksum is derived from the running CRCs at its two ends with CRC-32's
/// concatenation algebra (zlib's `crc32_combine`): constant work per offset.
pub fn scan_for_frame(buf: &[u8], bad_offset: usize, after_seq: Option<u64>) -> Resync {
    let start = bad_offset.saturating_add(1);
    let mut out = Resync {
        found: None,
        bytes_hashed: 0,
    };
    if start >= buf.len() {
        return out;
    }
    let region = &buf[start..];
    // checkpoints[k] = CRC-32 of region[..k * CHECKPOINT].
    let mut checkpoints = Vec::with_capacity(region.len() / CHECKPOINT + 1);
    let mut running = crc32fast::Hasher::new();
    checkpoints.push(0u32);
    for chunk in region.chunks_exact(CHECKPOINT) {
        running.update(chunk);
        checkpoints.push(running.clone().finalize());
    }
    out.bytes_hashed += (region.len() - region.len() % CHECKPOINT) as u64;
    let mut hashed = 0u64;
    let mut prefix_crc = |i: usize| {
        let k = i / CHECKPOINT;
        let mut h = crc32fast::Hasher::new_with_initial(checkpoints[k]);
        h.update(&region[k * CHECKPOINT..i]);
        hashed += (i - k * CHECKPOINT) as u64;
        h.finalize()
    };
    let shifts = ShiftTables::new();
    let mut last_shift = (0u32, shifts.zeros(0));
    let mut rel = 0usize;
    let mut candidates = 0u64;
    while rel + FRAME_HEADER_LEN <= region.len() {
        let at = start + rel;
        let len = u32_at(buf, at + LEN_OFFSET) as usize;
        let seq = u64_at(buf, at + SEQ_OFFSET);
        let fits = len <= MAX_PAYLOAD && FRAME_HEADER_LEN + len <= region.len() - rel;
        let plausible = match after_seq {
            None => true,
            Some(s) => {
                let window = ((at - bad_offset) / FRAME_HEADER_LEN) as u64;
                seq > s && seq - s <= window.saturating_add(1)
            }
        };
        if fits && plausible {
            candidates += 1;
            // The frame checksum covers [at..at+4) ++ [at+8..end).
            let a = rel + SEQ_OFFSET;
            let e = rel + FRAME_HEADER_LEN + len;
            let head = crc32fast::hash(&buf[at..at + 4]);
            // Runs of candidates (a uniform fill can make every offset one) share
            // their length: keep the last shift.
            let n = (e - a) as u32;
            if last_shift.0 != n {
                last_shift = (n, shifts.zeros(n));
            }
            let shift = last_shift.1;
            let crc = multmodp(shift, head ^ prefix_crc(a)) ^ prefix_crc(e);
            if crc == u32_at(buf, at + CRC_OFFSET) {
                out.found = Some(at);
                break;
            }
        }
        rel += 1;
    }
    out.bytes_hashed += hashed + 4 * candidates;
    out
}

/// CRC-32 (IEEE, reflected) polynomial.
const POLY: u32 = 0xedb8_8320;

/// `a * b mod p(x)` over GF(2), reflected bit order (zlib's `multmodp`).
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        if m == 0 {
            break;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `x^(2^k) mod p(x)` for k in 0..32.
fn x2n_table() -> [u32; 32] {
    let mut t = [0u32; 32];
    let mut p = 1u32 << 30; // x^1
    t[0] = p;
    for slot in t.iter_mut().skip(1) {
        p = multmodp(p, p);
        *slot = p;
    }
    t
}

/// `x^(8 n) mod p(x)` for any 32-bit `n` in four table lookups and three products:
/// `tables[j][b] = x^(8 b 256^j)`.
struct ShiftTables {
    tables: Box<[[u32; 256]; 4]>,
}

impl ShiftTables {
    fn new() -> Self {
        let x2n = x2n_table();
        let mut tables = Box::new([[0u32; 256]; 4]);
        for (j, t) in tables.iter_mut().enumerate() {
            let step = x2nmodp(&x2n, 1u64 << (8 * j), 3);
            t[0] = 1 << 31; // x^0
            for b in 1..256 {
                t[b] = multmodp(t[b - 1], step);
            }
        }
        ShiftTables { tables }
    }

    /// `x^(8 n) mod p(x)`: what appending `n` zero bytes multiplies a CRC by.
    fn zeros(&self, n: u32) -> u32 {
        let [b0, b1, b2, b3] = n.to_le_bytes();
        let t = &self.tables;
        multmodp(
            multmodp(t[0][b0 as usize], t[1][b1 as usize]),
            multmodp(t[2][b2 as usize], t[3][b3 as usize]),
        )
    }
}

/// `x^(n * 2^k) mod p(x)`; with k = 3, the shift that appends `n` zero bytes.
fn x2nmodp(table: &[u32; 32], mut n: u64, mut k: usize) -> u32 {
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(table[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::arb_record;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip(recs in proptest::collection::vec(arb_record(), 0..8), first in 0u64..1000) {
            let mut buf = file_header().to_vec();
            for (i, r) in recs.iter().enumerate() {
                encode_record_frame(first + i as u64, r, &mut buf);
            }
            check_file_header(&buf).unwrap();
            let got: Vec<_> = frames(&buf, FILE_HEADER_LEN).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got.len(), recs.len());
            for (i, (f, r)) in got.iter().zip(&recs).enumerate() {
                prop_assert_eq!(f.seq, first + i as u64);
                prop_assert_eq!(&f.record().unwrap(), r);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for f in frames(&bytes, 0).flatten() {
                let _ = f.record();
            }
            let _ = valid_frame_follows(&bytes, 0, None);
            let _ = scan_for_frame(&bytes, bytes.len() / 2, Some(3));
            let _ = check_file_header(&bytes);
        }
    }

    #[test]
    fn both_encoders_agree() {
        let r = Record::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            expire_at_ms: Some(7),
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_frame(3, &r.encode(), &mut a);
        encode_record_frame(3, &r, &mut b);
        assert_eq!(a, b);
    }

    /// The byte-by-byte scan the resync replaced: the reference for `scan_for_frame`.
    fn naive_scan(buf: &[u8], bad: usize, after: Option<u64>) -> Option<usize> {
        let mut pos = bad + 1;
        while pos + FRAME_HEADER_LEN <= buf.len() {
            if let Ok(f) = decode_frame(buf, pos) {
                let window = ((pos - bad) / FRAME_HEADER_LEN) as u64 + 1;
                if after.is_none_or(|s| f.seq > s && f.seq - s <= window) {
                    return Some(pos);
                }
            }
            pos += 1;
        }
        None
    }

    proptest! {
        #[test]
        fn resync_finds_what_the_naive_scan_finds(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            seq_ahead in 1u64..4,
            cut in 0usize..64,
        ) {
            // Garbage, then a valid frame, then a cut-off copy of it.
            let mut buf = junk.clone();
            let after = 10u64;
            encode_frame(after + seq_ahead, &payload, &mut buf);
            let whole = buf.clone();
            buf.extend_from_slice(&whole[junk.len()..whole.len().min(junk.len() + cut)]);
            for bad in [0, junk.len() / 2, junk.len().saturating_sub(1)] {
                for after_seq in [None, Some(after), Some(after + 2)] {
                    let got = scan_for_frame(&buf, bad, after_seq).found;
                    prop_assert_eq!(got, naive_scan(&buf, bad, after_seq), "bad {} after {:?}", bad, after_seq);
                }
            }
        }
    }

    #[test]
    fn shift_tables_agree_with_crc_of_zeros() {
        let t = ShiftTables::new();
        let x2n = x2n_table();
        for n in [
            0u32,
            1,
            2,
            255,
            256,
            257,
            65_535,
            1 << 20,
            (256 << 20) + 8,
            u32::MAX,
        ] {
            assert_eq!(t.zeros(n), x2nmodp(&x2n, n as u64, 3), "n {n}");
        }
        // And with crc32fast: crc(A ++ zeros) = shift(crc(A)) ^ crc(zeros).
        let a = b"larder";
        for n in [0usize, 1, 7, 100, 4096] {
            let mut whole = a.to_vec();
            whole.resize(a.len() + n, 0);
            let zeros = vec![0u8; n];
            let combined =
                multmodp(t.zeros(n as u32), crc32fast::hash(a)) ^ crc32fast::hash(&zeros);
            assert_eq!(combined, crc32fast::hash(&whole), "n {n}");
        }
    }

    #[test]
    fn resync_work_is_linear_even_on_adversarial_garbage() {
        // Random bytes: most offsets read as a length that fits.
        let n = 1 << 20;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r = scan_for_frame(&random, 0, Some(5));
        assert_eq!(r.found, None);
        assert!(
            r.bytes_hashed <= 2 * n as u64,
            "random: {} bytes hashed for {n}",
            r.bytes_hashed
        );
        // Headers crafted to pass every cheap test at every 16th offset, each claiming
        // to run to the end: a from-scratch checksum per candidate would hash about
        // n^2 / 32 bytes (32 GiB here).
        let mut crafted = Vec::with_capacity(n);
        let mut i = 0u64;
        while crafted.len() + FRAME_HEADER_LEN <= n {
            let rest = n - crafted.len() - FRAME_HEADER_LEN;
            crafted.extend_from_slice(&(rest as u32).to_le_bytes());
            crafted.extend_from_slice(&[0xAB; 4]);
            crafted.extend_from_slice(&(6 + i / 4).to_le_bytes());
            i += 1;
        }
        let r = scan_for_frame(&crafted, 0, Some(5));
        assert_eq!(r.found, None);
        let per_byte = r.bytes_hashed / n as u64;
        assert!(
            per_byte <= 2 * CHECKPOINT as u64 + 6,
            "crafted: {} bytes hashed for {n}",
            r.bytes_hashed
        );
    }

    #[test]
    fn flipped_length_is_caught() {
        let mut buf = Vec::new();
        encode_frame(1, &[1, 2, 3, 4, 5, 6, 7, 8], &mut buf);
        encode_frame(2, &[9; 8], &mut buf);
        buf[0] ^= 0x04; // 8 -> 12: still inside the buffer
        assert!(decode_frame(&buf, 0).is_err());
    }
}
