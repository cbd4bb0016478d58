//! Snapshots: a base image of the keyspace, written from many threads at once and read
//! through a memory map with sections checked and decoded in parallel.
//!
//! ```text
//! header (32 bytes)
//!  0        8        12       16               24       28       32
//!  +--------+--------+--------+----------------+--------+--------+
//!  | magic  | version| flags  | start_seq      | schema | crc32  |
//!  +--------+--------+--------+----------------+--------+--------+
//!  magic "LARDSNP\0"; version u32 LE = 2 (1 is still read); start_seq u64 LE;
//!  flags u32 LE: bit 0 = every key appears at most once (a loader need not look for
//!  an earlier copy); other bits zero. crc32 u32 LE of [0..28)
//!  schema u32 LE: CRC-32 of the manifest's schema tag when the base was written
//!  (0: no tag; bases written before tags existed have 0 here)
//!
//! sections, back to back from byte 32 in version 2 (see `packed` for an entry):
//!  version 2: packed entries, varint lengths, no padding
//!  version 1: 16-byte aligned rkyv 0.8 archives of
//!             Vec<Entry{key: Vec<u8>, value: Vec<u8>, expire_at_ms: Option<u64>}>
//!
//! index (32 bytes per section, sorted by offset), at index_offset:
//!  0                8                16               24       28       32
//!  +----------------+----------------+----------------+--------+--------+
//!  | offset u64     | len u64        | entries u64    | crc32  | zero   |
//!  +----------------+----------------+----------------+--------+--------+
//!  crc32 of the section's len bytes
//!
//! trailer (40 bytes, the last bytes of the file)
//!  0                8                16               24       28       32        40
//!  +----------------+----------------+----------------+--------+--------+---------+
//!  | index_offset   | section_count  | entry_count    | crc32  | zero   | "LARDEND\0"
//!  +----------------+----------------+----------------+--------+--------+---------+
//!  crc32 of the index bytes followed by trailer [0..24)
//! ```
//! All integers little-endian.

mod packed;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backend::Backend;

pub use writer::{SectionWriter, SnapshotWriter};

/// Magic bytes at the start of a snapshot.
pub const SNAP_MAGIC: [u8; 8] = *b"LARDSNP\0";
/// Magic bytes at the very end of a snapshot.
pub const SNAP_END_MAGIC: [u8; 8] = *b"LARDEND\0";
/// The snapshot format version written: packed sections.
pub const SNAP_VERSION: u32 = 2;
/// The earlier version, still read: rkyv-archived sections.
pub const SNAP_VERSION_RKYV: u32 = 1;
/// Header flag: every key appears at most once.
pub const FLAG_DISTINCT_KEYS: u32 = 1;
/// Header length; the first section starts here.
pub const HEADER_LEN: usize = 32;
/// Offset of the version (u32 LE) in the header.
pub const VERSION_OFFSET: usize = 8;
/// Offset of the flags (u32 LE) in the header.
pub const FLAGS_OFFSET: usize = 12;
/// Offset of the start sequence (u64 LE) in the header.
pub const START_SEQ_OFFSET: usize = 16;
/// Offset of the schema tag's CRC-32 (u32 LE; 0: no tag) in the header.
pub const SCHEMA_OFFSET: usize = 24;
/// Offset of the header CRC-32 (u32 LE, of bytes `[0..28)`).
pub const HEADER_CRC_OFFSET: usize = 28;
/// Length of one index entry.
pub const INDEX_ENTRY_LEN: usize = 32;
/// Length of the trailer at the end of the file.
pub const TRAILER_LEN: usize = 40;
/// Version-1 sections start at multiples of this (rkyv's alignment).
pub const SECTION_ALIGN: usize = 16;
/// Default target size of one section before it is closed.
pub const DEFAULT_SECTION_BYTES: usize = 4 << 20;

/// One entry as archived in a section.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key bytes.
    pub key: Vec<u8>,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Absolute expiry in ms since the Unix epoch, if any.
    pub expire_at_ms: Option<u64>,
}

/// A borrowed view of one entry of a loaded snapshot (points into the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key bytes.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
    /// Absolute expiry in ms since the Unix epoch, if any.
    pub expire_at_ms: Option<u64>,
}

/// One checked section handed to a load sink.
pub struct Section<'a> {
    file: &'a str,
    offset: u64,
    index: usize,
    body: Body<'a>,
    distinct_keys: bool,
}

/// A section's entries in the layout of its file's version.
#[derive(Clone, Copy)]
enum Body<'a> {
    Packed { bytes: &'a [u8], entries: usize },
    Archived(&'a rkyv::Archived<Vec<Entry>>),
}

impl<'a> Section<'a> {
    /// The snapshot file the section is in.
    pub fn file(&self) -> &'a str {
        self.file
    }
    /// Offset of the section in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Position of the section in the file (0-based).
    pub fn index(&self) -> usize {
        self.index
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self.body {
            Body::Packed { entries, .. } => entries,
            Body::Archived(a) => a.len(),
        }
    }
    /// Whether the section has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the snapshot promises that no key appears twice in it (in this section
    /// or any other), so a loader need not look for an earlier copy.
    pub fn distinct_keys(&self) -> bool {
        self.distinct_keys
    }
    /// The entries, zero-copy.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'a>> + 'a {
        let (packed, archived) = match self.body {
            Body::Packed { bytes, .. } => (Some(packed::Entries { bytes, at: 0 }), None),
            Body::Archived(a) => (None, Some(a)),
        };
        let archived = archived.into_iter().flat_map(|a| {
            a.iter().map(|e| EntryRef {
                key: e.key.as_slice(),
                value: e.value.as_slice(),
                expire_at_ms: e.expire_at_ms.as_ref().map(|v| v.to_native()),
            })
        });
        packed.into_iter().flatten().chain(archived)
    }
}

/// Why a snapshot could not be written or read. `file` names the snapshot file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The backend failed.
    #[error("snapshot {file}: {op} failed: {source}")]
    Io {
        /// The file.
        file: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Shorter than a header plus a trailer.
    #[error("snapshot {file}: {len} bytes is too short to be a snapshot")]
    TooShort {
        /// The file.
        file: String,
        /// Its length.
        len: usize,
    },
    /// Wrong magic at the start or end.
    #[error("snapshot {file}: bad magic at byte {offset}")]
    BadMagic {
        /// The file.
        file: String,
        /// Where the magic was expected.
        offset: usize,
    },
    /// Header flags this build does not know.
    #[error("snapshot {file}: unknown header flags {flags:#x} at byte {FLAGS_OFFSET}")]
    Flags {
        /// The file.
        file: String,
        /// The flags found.
        flags: u32,
    },
    /// A version this build cannot read.
    #[error("snapshot {file}: unsupported format version {version}")]
    Version {
        /// The file.
        file: String,
        /// The version found.
        version: u32,
    },
    /// The header checksum does not match.
    #[error("snapshot {file}: header checksum mismatch (bytes 0..{HEADER_LEN})")]
    HeaderChecksum {
        /// The file.
        file: String,
    },
    /// The index or trailer checksum does not match, or their fields are impossible.
    #[error("snapshot {file}: footer index at byte {offset} is damaged: {reason}")]
    Footer {
        /// The file.
        file: String,
        /// Offset of the index (or trailer).
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A section's checksum does not match.
    #[error("snapshot {file}: section {section} at byte {offset} fails its checksum")]
    SectionChecksum {
        /// The file.
        file: String,
        /// The section.
        section: usize,
        /// Its offset.
        offset: usize,
    },
    /// A section's bytes pass the checksum but do not validate as an archive, or hold a
    /// different entry count than the index says.
    #[error("snapshot {file}: section {section} at byte {offset} is invalid: {reason}")]
    SectionInvalid {
        /// The file.
        file: String,
        /// The section.
        section: usize,
        /// Its offset.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Serializing a section failed.
    #[error("snapshot {file}: encoding a section failed: {reason}")]
    Encode {
        /// The file.
        file: String,
        /// What failed.
        reason: String,
    },
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

use crate::frame::{u32_at, u64_at};

/// What a finished snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The sequence the log replays from on top of this snapshot.
    pub start_seq: u64,
    /// Entries written.
    pub entries: u64,
    /// Sections written.
    pub sections: u64,
    /// File size in bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    offset: u64,
    len: u64,
    entries: u64,
    crc: u32,
}

/// The index and trailer for sections `index` (sorted by offset) placed at
/// `index_offset`.
fn footer(index: &[IndexEntry], index_offset: u64, entries: u64) -> Vec<u8> {
    let mut footer = Vec::with_capacity(index.len() * INDEX_ENTRY_LEN + TRAILER_LEN);
    for e in index {
        footer.extend_from_slice(&e.offset.to_le_bytes());
        footer.extend_from_slice(&e.len.to_le_bytes());
        footer.extend_from_slice(&e.entries.to_le_bytes());
        footer.extend_from_slice(&e.crc.to_le_bytes());
        footer.extend_from_slice(&0u32.to_le_bytes());
    }
    footer.extend_from_slice(&index_offset.to_le_bytes());
    footer.extend_from_slice(&(index.len() as u64).to_le_bytes());
    footer.extend_from_slice(&entries.to_le_bytes());
    let c = crc(&footer);
    footer.extend_from_slice(&c.to_le_bytes());
    footer.extend_from_slice(&0u32.to_le_bytes());
    footer.extend_from_slice(&SNAP_END_MAGIC);
    footer
}

/// A whole version-1 snapshot (rkyv sections) of `entries` in sections of `per_section`
/// entries: what earlier releases wrote, kept so tests and fuzzers can check that such
/// files still load.
#[doc(hidden)]
pub fn encode_v1(entries: &[Entry], start_seq: u64, per_section: usize) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..8].copy_from_slice(&SNAP_MAGIC);
    out[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&SNAP_VERSION_RKYV.to_le_bytes());
    out[START_SEQ_OFFSET..START_SEQ_OFFSET + 8].copy_from_slice(&start_seq.to_le_bytes());
    let c = crc(&out[..HEADER_CRC_OFFSET]);
    out[HEADER_CRC_OFFSET..].copy_from_slice(&c.to_le_bytes());
    let mut index = Vec::new();
    for chunk in entries.chunks(per_section.max(1)) {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&chunk.to_vec())
            .expect("serializing plain vectors into memory cannot fail");
        index.push(IndexEntry {
            offset: out.len() as u64,
            len: bytes.len() as u64,
            entries: chunk.len() as u64,
            crc: crc(&bytes),
        });
        out.extend_from_slice(&bytes);
        out.resize(out.len().next_multiple_of(SECTION_ALIGN), 0);
    }
    let index_offset = out.len() as u64;
    out.extend_from_slice(&footer(&index, index_offset, entries.len() as u64));
    out
}

/// The checked header and footer of a snapshot in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLayout {
    /// The sequence the log replays from.
    pub start_seq: u64,
    /// Total entries, per the trailer.
    pub entries: u64,
    /// The header's [`schema_crc`] of the tag the base was written under (0: none).
    pub schema_crc: u32,
    /// The format version (1: rkyv sections; 2: packed).
    pub version: u32,
    /// Whether the header promises that no key appears twice.
    pub distinct_keys: bool,
    sections: Vec<IndexEntry>,
}

/// What a snapshot header records for schema tag `tag`: its CRC-32, never 0 for a tag
/// (0 means none).
pub fn schema_crc(tag: Option<&str>) -> u32 {
    tag.map_or(0, |t| crc(t.as_bytes()).max(1))
}

impl SnapshotLayout {
    /// Number of sections.
    pub fn sections(&self) -> usize {
        self.sections.len()
    }

    /// Checks header, trailer and index of a whole snapshot file (`file` names it in
    /// errors). Section contents are not checked here. Never panics.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<SnapshotLayout, SnapshotError> {
        let f = || file.to_owned();
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(SnapshotError::TooShort {
                file: f(),
                len: bytes.len(),
            });
        }
        if bytes[..8] != SNAP_MAGIC {
            return Err(SnapshotError::BadMagic {
                file: f(),
                offset: 0,
            });
        }
        if crc(&bytes[..HEADER_CRC_OFFSET]) != u32_at(bytes, HEADER_CRC_OFFSET) {
            return Err(SnapshotError::HeaderChecksum { file: f() });
        }
        let version = u32_at(bytes, VERSION_OFFSET);
        if version != SNAP_VERSION && version != SNAP_VERSION_RKYV {
            return Err(SnapshotError::Version { file: f(), version });
        }
        let flags = u32_at(bytes, FLAGS_OFFSET);
        let known = if version == SNAP_VERSION {
            FLAG_DISTINCT_KEYS
        } else {
            0
        };
        if flags & !known != 0 {
            return Err(SnapshotError::Flags { file: f(), flags });
        }
        let start_seq = u64_at(bytes, START_SEQ_OFFSET);
        let t = bytes.len() - TRAILER_LEN;
        if bytes[t + 32..] != SNAP_END_MAGIC {
            return Err(SnapshotError::BadMagic {
                file: f(),
                offset: t + 32,
            });
        }
        let footer_err = |offset: usize, reason: String| SnapshotError::Footer {
            file: f(),
            offset,
            reason,
        };
        let index_offset = u64_at(bytes, t);
        let count = u64_at(bytes, t + 8);
        let entries = u64_at(bytes, t + 16);
        let index_len = count.checked_mul(INDEX_ENTRY_LEN as u64);
        let index_ok = index_len
            .and_then(|l| index_offset.checked_add(l))
            .is_some_and(|end| end == t as u64 && index_offset >= HEADER_LEN as u64);
        if !index_ok {
            return Err(footer_err(
                t,
                format!(
                    "index at {index_offset} with {count} sections does not end at the trailer"
                ),
            ));
        }
        let io = index_offset as usize;
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[io..t + 24]);
        if h.finalize() != u32_at(bytes, t + 24) {
            return Err(footer_err(io, "checksum mismatch".into()));
        }
        let mut sections = Vec::with_capacity(count as usize);
        let mut next_min = HEADER_LEN as u64;
        let mut total = 0u64;
        for i in 0..count as usize {
            let at = io + i * INDEX_ENTRY_LEN;
            let e = IndexEntry {
                offset: u64_at(bytes, at),
                len: u64_at(bytes, at + 8),
                entries: u64_at(bytes, at + 16),
                crc: u32_at(bytes, at + 24),
            };
            let end = e.offset.checked_add(e.len);
            if e.offset < next_min
                || (version == SNAP_VERSION_RKYV && e.offset % SECTION_ALIGN as u64 != 0)
                || !matches!(end, Some(end) if end <= index_offset)
            {
                return Err(footer_err(
                    at,
                    format!("section {i} at {} (+{}) is out of place", e.offset, e.len),
                ));
            }
            next_min = end.unwrap_or(u64::MAX);
            total = total.saturating_add(e.entries);
            sections.push(e);
        }
        if total != entries {
            return Err(footer_err(
                t,
                format!("sections hold {total} entries, trailer says {entries}"),
            ));
        }
        Ok(SnapshotLayout {
            start_seq,
            entries,
            schema_crc: u32_at(bytes, SCHEMA_OFFSET),
            version,
            distinct_keys: flags & FLAG_DISTINCT_KEYS != 0,
            sections,
        })
    }
}

/// Checks every section of a snapshot held in `bytes` (which must start at a 16-byte
/// aligned address, as a memory map or [`crate::backend::FileBytes`] does) on up to
/// `threads` threads, then hands each section to `sink`, also in parallel. The sink
/// sees nothing unless every section's checksum passed; if a section then fails archive
/// validation (a writer bug, not disk damage) earlier sections may already have been
/// handed over, and the caller should discard what it built. Never panics on bad bytes.
pub fn load_bytes(
    file: &str,
    bytes: &[u8],
    threads: usize,
    sink: &(dyn Fn(Section<'_>) + Sync),
) -> Result<SnapshotLayout, SnapshotError> {
    let layout = SnapshotLayout::parse(file, bytes)?;
    let threads = threads.clamp(1, layout.sections.len().max(1));
    let first_error: Mutex<Option<SnapshotError>> = Mutex::new(None);
    let fail = |e: SnapshotError| {
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    };
    // Phase 1: checksums. Phase 2: validate the archive and hand over.
    for phase in 0..2 {
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(e) = layout.sections.get(i) else {
                break;
            };
            if first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                break;
            }
            let data = &bytes[e.offset as usize..(e.offset + e.len) as usize];
            let offset = e.offset as usize;
            if phase == 0 {
                if crc(data) != e.crc {
                    fail(SnapshotError::SectionChecksum {
                        file: file.to_owned(),
                        section: i,
                        offset,
                    });
                }
                continue;
            }
            let invalid = |reason: String| SnapshotError::SectionInvalid {
                file: file.to_owned(),
                section: i,
                offset,
                reason,
            };
            let body = if layout.version == SNAP_VERSION_RKYV {
                match rkyv::access::<rkyv::Archived<Vec<Entry>>, rkyv::rancor::Error>(data) {
                    Ok(entries) if entries.len() as u64 == e.entries => Body::Archived(entries),
                    Ok(entries) => {
                        fail(invalid(format!(
                            "{} entries, index says {}",
                            entries.len(),
                            e.entries
                        )));
                        continue;
                    }
                    Err(err) => {
                        fail(invalid(err.to_string()));
                        continue;
                    }
                }
            } else {
                match packed::validate(data, e.entries) {
                    // Validated: the entry count fits in memory.
                    Ok(()) => Body::Packed {
                        bytes: data,
                        entries: e.entries as usize,
                    },
                    Err(reason) => {
                        fail(invalid(reason));
                        continue;
                    }
                }
            };
            sink(Section {
                file,
                offset: e.offset,
                index: i,
                body,
                distinct_keys: layout.distinct_keys,
            });
        };
        // One thread: work inline rather than spawn (no thread for a small load).
        if threads == 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(work);
                }
            });
        }
        if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
    }
    Ok(layout)
}

/// Recomputes every checksum of a snapshot (header, each section, footer) whose
/// trailer and index are in bounds, so fuzzers and tests can damage the *contents* of
/// sections and reach archive validation past the checksums. Returns whether it could.
pub fn reseal(bytes: &mut [u8]) -> bool {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return false;
    }
    let c = crc(&bytes[..HEADER_CRC_OFFSET]);
    bytes[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&c.to_le_bytes());
    let t = bytes.len() - TRAILER_LEN;
    let index_offset = u64_at(bytes, t);
    let count = u64_at(bytes, t + 8);
    let fits = count
        .checked_mul(INDEX_ENTRY_LEN as u64)
        .and_then(|l| index_offset.checked_add(l))
        .is_some_and(|end| end == t as u64);
    if !fits {
        return false;
    }
    let io = index_offset as usize;
    for i in 0..count as usize {
        let at = io + i * INDEX_ENTRY_LEN;
        let (off, len) = (u64_at(bytes, at), u64_at(bytes, at + 8));
        let Some(end) = off.checked_add(len).filter(|&e| e <= index_offset) else {
            return false;
        };
        let c = crc(&bytes[off as usize..end as usize]);
        bytes[at + 24..at + 28].copy_from_slice(&c.to_le_bytes());
    }
    let c = crc(&bytes[io..t + 24]);
    bytes[t + 24..t + 28].copy_from_slice(&c.to_le_bytes());
    true
}

/// [`load_bytes`] for bytes at any address: copies them into an aligned buffer first
/// when they are not 16-byte aligned (fuzzers, network buffers).
pub fn load_slice(
    file: &str,
    bytes: &[u8],
    threads: usize,
    sink: &(dyn Fn(Section<'_>) + Sync),
) -> Result<SnapshotLayout, SnapshotError> {
    if (bytes.as_ptr() as usize) % SECTION_ALIGN == 0 {
        return load_bytes(file, bytes, threads, sink);
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    load_bytes(file, &aligned, threads, sink)
}

/// Loads snapshot `name` from `backend` (memory-mapped on a real disk); see
/// [`load_bytes`].
pub fn load(
    backend: &dyn Backend,
    name: &str,
    threads: usize,
    sink: &(dyn Fn(Section<'_>) + Sync),
) -> Result<(SnapshotLayout, u64), SnapshotError> {
    let bytes = backend.read_all(name).map_err(|source| SnapshotError::Io {
        file: name.to_owned(),
        op: "read",
        source,
    })?;
    let layout = load_bytes(name, &bytes, threads, sink)?;
    Ok((layout, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemoryBackend, OpenMode};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn collect(backend: &dyn Backend, name: &str) -> Result<Vec<Entry>, SnapshotError> {
        let got = Mutex::new(Vec::new());
        load(backend, name, 3, &|s: Section<'_>| {
            let v: Vec<Entry> = s
                .iter()
                .map(|e| Entry {
                    key: e.key.to_vec(),
                    value: e.value.to_vec(),
                    expire_at_ms: e.expire_at_ms,
                })
                .collect();
            got.lock().unwrap().push((s.index(), v));
        })?;
        let mut got = got.into_inner().unwrap();
        got.sort_by_key(|(i, _)| *i);
        Ok(got.into_iter().flat_map(|(_, v)| v).collect())
    }

    fn write(backend: &MemoryBackend, entries: &[Entry], section: usize) -> SnapshotInfo {
        let mut w = SnapshotWriter::create(Arc::new(backend.clone()), "s", 9)
            .unwrap()
            .section_bytes(section);
        for e in entries {
            w.push(&e.key, &e.value, e.expire_at_ms).unwrap();
        }
        w.finish().unwrap()
    }

    fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..16),
                proptest::collection::vec(any::<u8>(), 0..40),
                any::<Option<u64>>(),
            )
                .prop_map(|(key, value, expire_at_ms)| Entry {
                    key,
                    value,
                    expire_at_ms,
                }),
            0..60,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(entries in arb_entries(), section in 1usize..300) {
            let b = MemoryBackend::new();
            let info = write(&b, &entries, section);
            prop_assert_eq!(info.entries, entries.len() as u64);
            prop_assert_eq!(collect(&b, "s").unwrap(), entries);
            prop_assert!(!b.list().unwrap().iter().any(|n| n.ends_with(".tmp")));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            let _ = load_bytes("g", &aligned, 2, &|_| {});
        }
    }

    #[test]
    fn every_bit_flip_is_refused_or_harmless() {
        let b = MemoryBackend::new();
        let entries: Vec<Entry> = (0..20u8)
            .map(|i| Entry {
                key: vec![i; 3],
                value: vec![i; 7],
                expire_at_ms: (i % 2 == 0).then_some(u64::from(i)),
            })
            .collect();
        write(&b, &entries, 64);
        let good = b.read_all("s").unwrap().to_vec();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let f = b.open("s", OpenMode::CreateTruncate).unwrap();
            f.write_at(&bad, 0).unwrap();
            // Flips in padding or reserved zero bytes change nothing we read.
            if let Ok(got) = collect(&b, "s") {
                assert_eq!(got, entries, "bit {bit}");
            }
        }
    }

    #[test]
    fn resealed_damage_inside_sections_never_panics() {
        let b = MemoryBackend::new();
        let entries: Vec<Entry> = (0..30u8)
            .map(|i| Entry {
                key: vec![i; 5],
                value: vec![i; 11],
                expire_at_ms: None,
            })
            .collect();
        write(&b, &entries, 100);
        let good = b.read_all("s").unwrap().to_vec();
        let mut resealed = good.clone();
        assert!(reseal(&mut resealed));
        assert_eq!(resealed, good, "reseal of an intact file changes nothing");
        for byte in HEADER_LEN..good.len() - TRAILER_LEN {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[byte] ^= x;
                reseal(&mut bad);
                // Must not panic; may load (changed data) or refuse.
                let _ = load_slice("s", &bad, 2, &|s| {
                    for e in s.iter() {
                        std::hint::black_box(e);
                    }
                });
            }
        }
    }

    #[test]
    fn empty_snapshot_loads() {
        let b = MemoryBackend::new();
        let info = write(&b, &[], 10);
        assert_eq!(info.sections, 0);
        assert_eq!(collect(&b, "s").unwrap(), vec![]);
    }

    #[test]
    fn abandoned_writer_leaves_no_temp_file() {
        let b = MemoryBackend::new();
        let mut w = SnapshotWriter::create(Arc::new(b.clone()), "s", 1).unwrap();
        w.push(b"k", b"v", None).unwrap();
        drop(w);
        assert!(b.list().unwrap().is_empty());
    }

    fn numbered(n: u32) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                key: format!("key:{i}").into_bytes(),
                value: vec![i as u8; (i % 40) as usize],
                expire_at_ms: (i % 3 == 0).then_some(1_700_000_000_000 + u64::from(i)),
            })
            .collect()
    }

    #[test]
    fn version_1_files_still_load() {
        let entries = numbered(100);
        let b = MemoryBackend::new();
        let f = b.open("s", OpenMode::CreateTruncate).unwrap();
        f.write_at(&encode_v1(&entries, 9, 7), 0).unwrap();
        let layout = SnapshotLayout::parse("s", &b.read_all("s").unwrap()).unwrap();
        assert_eq!((layout.version, layout.distinct_keys), (1, false));
        assert_eq!(layout.sections(), 15);
        assert_eq!(collect(&b, "s").unwrap(), entries);
    }

    #[test]
    fn packed_sections_cost_little_more_than_the_bytes() {
        let b = MemoryBackend::new();
        let entries: Vec<Entry> = (0..1000)
            .map(|i| Entry {
                key: format!("key:{i}").into_bytes(),
                value: vec![7; 16],
                expire_at_ms: None,
            })
            .collect();
        let payload: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        let info = write(&b, &entries, 1 << 20);
        let overhead = info.bytes as usize - payload - HEADER_LEN - TRAILER_LEN;
        // Two length bytes an entry and one index entry.
        assert_eq!(overhead, 2 * 1000 + INDEX_ENTRY_LEN);
    }

    #[test]
    fn section_writers_on_many_threads_make_one_snapshot() {
        let b = MemoryBackend::new();
        let entries = numbered(4000);
        let mut w = SnapshotWriter::create(Arc::new(b.clone()), "s", 3)
            .unwrap()
            .section_bytes(500);
        w.distinct_keys();
        w.push(b"first", b"own", None).unwrap();
        std::thread::scope(|s| {
            for part in entries.chunks(1000) {
                let mut sw = w.section_writer();
                s.spawn(move || {
                    for e in part {
                        sw.push(&e.key, &e.value, e.expire_at_ms).unwrap();
                    }
                    // The last of them is written when the writer is dropped.
                    if part[0].key != b"key:0" {
                        sw.finish().unwrap();
                    }
                });
            }
        });
        let info = w.finish().unwrap();
        assert_eq!(info.entries, 4001);
        let layout = SnapshotLayout::parse("s", &b.read_all("s").unwrap()).unwrap();
        assert!(layout.distinct_keys);
        let mut got = collect(&b, "s").unwrap();
        let mut want = entries;
        want.push(Entry {
            key: b"first".to_vec(),
            value: b"own".to_vec(),
            expire_at_ms: None,
        });
        got.sort_by(|x, y| x.key.cmp(&y.key));
        want.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(got, want);
    }

    #[test]
    fn unknown_flags_and_versions_are_refused() {
        let b = MemoryBackend::new();
        write(&b, &numbered(3), 100);
        let good = b.read_all("s").unwrap().to_vec();
        let mut bad = good.clone();
        bad[FLAGS_OFFSET] = 2;
        reseal(&mut bad);
        let err = SnapshotLayout::parse("s", &bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown header flags 0x2 at byte 12"),
            "{err}"
        );
        let mut bad = good;
        bad[VERSION_OFFSET] = 3;
        reseal(&mut bad);
        let err = SnapshotLayout::parse("s", &bad).unwrap_err();
        assert!(
            err.to_string().contains("unsupported format version 3"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_packed_section_names_the_entry() {
        let b = MemoryBackend::new();
        write(&b, &numbered(5), 1 << 20);
        let mut bad = b.read_all("s").unwrap().to_vec();
        // The second entry's key length claims more than the section holds.
        // Lengths (2 bytes), expiry (8), key "key:0" (5), empty value.
        let first = 2 + 8 + 5;
        bad[HEADER_LEN + first] = 0x7e;
        reseal(&mut bad);
        let err = load_slice("s", &bad, 1, &|_| {}).unwrap_err().to_string();
        assert!(
            err.contains("section 0 at byte 32 is invalid: entry 1: key of 63 bytes"),
            "{err}"
        );
    }
}
