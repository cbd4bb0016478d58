//! The stream framing of the mesh, as a pure decoder with no I/O.
//!
//! Every QUIC stream between nodes starts with a preamble naming what it carries, then
//! frames:
//!
//! ```text
//! offset  size  field
//! 0       3     magic: "LCB" cluster bus (unidirectional; `proto::Message`s)
//!                      "LCR" replication (unidirectional; `repl::ReplMessage`s)
//!                      "LCQ" a forwarded request (bidirectional; one frame each way)
//! 3       1     framing version (1)
//! -- then any number of frames --
//! 0       4     payload length n, u32 little-endian, 1 <= n <= max
//! 4       n     payload
//! ```
//!
//! The decoder rejects a length over the cap as soon as the four length bytes are in,
//! before buffering any of the payload, so a peer can make it hold at most
//! `PREAMBLE_LEN + LEN_PREFIX + max` bytes. A stream that ends inside the preamble, a
//! length prefix or a payload is truncated.
//!
//! This file uses only `std` so the fuzz target (`fuzz/fuzz_targets/net_frame.rs`)
//! includes it as it is, without building the QUIC stack.

use std::fmt;

/// The bytes that open a cluster bus stream: magic `"LCB"` and the framing version.
pub const PREAMBLE: [u8; 4] = *b"LCB\x01";
/// The bytes that open a replication stream.
pub const REPL_PREAMBLE: [u8; 4] = *b"LCR\x01";
/// The bytes that open a request stream.
pub const REQUEST_PREAMBLE: [u8; 4] = *b"LCQ\x01";

/// What a stream carries, named by its preamble's magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Cluster bus messages (`"LCB"`).
    Bus,
    /// Replication messages (`"LCR"`).
    Replication,
    /// One forwarded request and its response (`"LCQ"`).
    Request,
}
/// Length of [`PREAMBLE`].
pub const PREAMBLE_LEN: usize = PREAMBLE.len();
/// Length of a frame's length prefix.
pub const LEN_PREFIX: usize = 4;
/// The framing version this decoder speaks.
pub const VERSION: u8 = 1;
/// The payload cap for control-plane messages: the proto codec's `MAX_MESSAGE_LEN`
/// (checked equal in `net/mod.rs`).
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Why a stream's bytes are not a valid sequence of frames. Any of these closes the
/// connection that carried them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream does not start with a known magic (`"LCB"`, `"LCR"`, `"LCQ"`).
    BadMagic([u8; 3]),
    /// The stream's framing version is not [`VERSION`].
    UnsupportedVersion(u8),
    /// A length prefix announces more than the cap.
    TooLong {
        /// The announced payload length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// A length prefix of zero (no message is empty).
    Empty,
    /// The stream ended inside the preamble, a length prefix or a payload.
    Truncated {
        /// Bytes left over at the end of the stream.
        pending: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(
                f,
                "stream starts with {m:02x?}, not \"LCB\", \"LCR\" or \"LCQ\""
            ),
            FrameError::UnsupportedVersion(v) => {
                write!(f, "framing version {v} (this node speaks {VERSION})")
            }
            FrameError::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the cap of {max}")
            }
            FrameError::Empty => write!(f, "empty frame"),
            FrameError::Truncated { pending } => {
                write!(f, "stream ended inside a frame ({pending} bytes pending)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends the framing of `payload` (length prefix and bytes) to `out`. The caller
/// writes [`PREAMBLE`] once at the start of the stream.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    // Payloads are encoded messages, capped far below u32::MAX by the proto codec.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame: its payload, and how many bytes of the buffer it used.
    Frame {
        /// The payload.
        payload: &'a [u8],
        /// Bytes consumed (length prefix + payload).
        consumed: usize,
    },
    /// Not enough bytes yet; at least `needed` in total are required.
    Incomplete {
        /// Total bytes needed before the next call can make progress.
        needed: usize,
    },
}

/// Decodes one frame from the start of `buf` (after the preamble). Rejects a length
/// over `max` or of zero from the prefix alone.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Decoded<'_>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(Decoded::Incomplete { needed: LEN_PREFIX });
    };
    let mut len_bytes = [0u8; LEN_PREFIX];
    len_bytes.copy_from_slice(prefix);
    let len = u32::from_le_bytes(len_bytes);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    let end = LEN_PREFIX + len;
    match buf.get(LEN_PREFIX..end) {
        Some(payload) => Ok(Decoded::Frame {
            payload,
            consumed: end,
        }),
        None => Ok(Decoded::Incomplete { needed: end }),
    }
}

/// Checks a stream's preamble and says what the stream carries.
pub fn check_preamble(p: [u8; PREAMBLE_LEN]) -> Result<StreamKind, FrameError> {
    let kind = match &p[..3] {
        b"LCB" => StreamKind::Bus,
        b"LCR" => StreamKind::Replication,
        b"LCQ" => StreamKind::Request,
        _ => return Err(FrameError::BadMagic([p[0], p[1], p[2]])),
    };
    if p[3] != VERSION {
        return Err(FrameError::UnsupportedVersion(p[3]));
    }
    Ok(kind)
}

/// Turns the chunks of one stream into frames: the preamble check, then
/// [`decode_frame`] over a buffer that never holds more than one frame plus one chunk.
#[derive(Debug)]
pub struct StreamDecoder {
    max: usize,
    kind: Option<StreamKind>,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    failed: bool,
}

impl StreamDecoder {
    /// A decoder for a fresh stream, with payloads capped at `max` bytes.
    pub fn new(max: usize) -> Self {
        StreamDecoder {
            max,
            kind: None,
            buf: Vec::new(),
            pos: 0,
            failed: false,
        }
    }

    /// Appends bytes read from the stream. Call [`StreamDecoder::next_frame`] until it
    /// returns `Ok(None)` before pushing more, so the buffer stays bounded.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed. After an
    /// error the decoder stays failed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.failed {
            return Err(FrameError::Truncated {
                pending: self.pending(),
            });
        }
        let r = self.next_frame_inner();
        if r.is_err() {
            self.failed = true;
        }
        r.map(|range| range.map(|(s, e)| &self.buf[s..e]))
    }

    fn next_frame_inner(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        if self.kind.is_none() {
            let Some(p) = self.buf.get(self.pos..self.pos + PREAMBLE_LEN) else {
                return Ok(None);
            };
            let mut pre = [0u8; PREAMBLE_LEN];
            pre.copy_from_slice(p);
            self.kind = Some(check_preamble(pre)?);
            self.pos += PREAMBLE_LEN;
        }
        match decode_frame(&self.buf[self.pos..], self.max)? {
            Decoded::Frame { payload, consumed } => {
                let start = self.pos + LEN_PREFIX;
                let end = start + payload.len();
                self.pos += consumed;
                Ok(Some((start, end)))
            }
            Decoded::Incomplete { .. } => Ok(None),
        }
    }

    /// What the stream carries, once its preamble was read.
    pub fn kind(&self) -> Option<StreamKind> {
        self.kind
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The stream ended: an error if it ended inside the preamble or a frame. A stream
    /// that ends right after its preamble, or with no bytes at all, is fine.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.pending() {
            0 => Ok(()),
            pending => Err(FrameError::Truncated { pending }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = PREAMBLE.to_vec();
        for p in payloads {
            encode_frame(p, &mut out);
        }
        out
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut d = StreamDecoder::new(MAX_FRAME_LEN);
        let mut out = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.push(c);
            while let Some(f) = d.next_frame()? {
                out.push(f.to_vec());
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_in_any_chunking() {
        let big = vec![7u8; MAX_FRAME_LEN];
        let payloads: [&[u8]; 4] = [b"a", b"hello", &big, b"z"];
        let bytes = stream(&payloads);
        for chunk in [1, 2, 3, 5, 1000, bytes.len()] {
            let got = decode_all(&bytes, chunk).unwrap();
            assert_eq!(got.len(), 4);
            for (g, p) in got.iter().zip(payloads) {
                assert_eq!(g.as_slice(), p);
            }
        }
    }

    #[test]
    fn empty_stream_and_preamble_only_are_fine() {
        assert_eq!(decode_all(&[], 1).unwrap().len(), 0);
        assert_eq!(decode_all(&PREAMBLE, 1).unwrap().len(), 0);
    }

    #[test]
    fn rejects_bad_magic_and_version() {
        assert_eq!(
            decode_all(b"XYZ\x01", 4),
            Err(FrameError::BadMagic(*b"XYZ"))
        );
        assert_eq!(
            decode_all(b"LCB\x02", 4),
            Err(FrameError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn rejects_oversized_length_before_the_payload() {
        let mut bytes = PREAMBLE.to_vec();
        bytes.extend_from_slice(&((MAX_FRAME_LEN as u32) + 1).to_le_bytes());
        // No payload bytes at all: the prefix alone is enough to refuse.
        let mut d = StreamDecoder::new(MAX_FRAME_LEN);
        d.push(&bytes);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong {
                len: MAX_FRAME_LEN as u64 + 1,
                max: MAX_FRAME_LEN
            })
        );
        // And it stays failed.
        assert!(d.next_frame().is_err());
        let mut bytes = PREAMBLE.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_all(&bytes, 3),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn rejects_empty_frames() {
        let mut bytes = PREAMBLE.to_vec();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_all(&bytes, 8), Err(FrameError::Empty));
    }

    #[test]
    fn every_truncation_is_rejected_or_a_prefix_of_frames() {
        let bytes = stream(&[b"one", b"three", b"fifteen bytes!!"]);
        // Frame boundaries: after the preamble and after each whole frame.
        let boundaries = [4, 4 + 7, 4 + 7 + 9, bytes.len()];
        for cut in 1..bytes.len() {
            let r = decode_all(&bytes[..cut], 2);
            if boundaries.contains(&cut) {
                assert!(r.is_ok(), "cut {cut}");
            } else {
                assert!(
                    matches!(r, Err(FrameError::Truncated { .. })),
                    "cut {cut}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn decode_frame_reports_what_it_needs() {
        assert_eq!(
            decode_frame(&[1, 0], 10),
            Ok(Decoded::Incomplete { needed: 4 })
        );
        assert_eq!(
            decode_frame(&[3, 0, 0, 0, 9], 10),
            Ok(Decoded::Incomplete { needed: 7 })
        );
        assert_eq!(
            decode_frame(&[1, 0, 0, 0, 9, 8], 10),
            Ok(Decoded::Frame {
                payload: &[9],
                consumed: 5
            })
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift keeps this test free of dependencies.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 8) & 0xff) as u8)
                .collect();
            if x % 2 == 0 && bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&PREAMBLE);
            }
            let _ = decode_all(&bytes, (x % 7) as usize + 1);
        }
    }
}
