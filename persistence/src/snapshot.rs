//! Snapshots: a base image of the keyspace, written from an iterator, read through a
//! memory map with sections checked and decoded in parallel.
//!
//! ```text
//! header (32 bytes)
//!  0        8        12       16               24       28       32
//!  +--------+--------+--------+----------------+--------+--------+
//!  | magic  | version| flags=0| start_seq      | schema | crc32  |
//!  +--------+--------+--------+----------------+--------+--------+
//!  magic "LARDSNP\0"; version u32 LE = 1; start_seq u64 LE; crc32 u32 LE of [0..28)
//!  schema u32 LE: CRC-32 of the manifest's schema tag when the base was written
//!  (0: no tag; bases written before tags existed have 0 here)
//!
//! sections, each starting at a 16-byte aligned offset (zero padding between):
//!  rkyv 0.8 archive of Vec<Entry{key: Vec<u8>, value: Vec<u8>, expire_at_ms: Option<u64>}>
//!  (rkyv's own little-endian, 16-aligned layout; root object at the end)
//!
//! index (32 bytes per section), at index_offset:
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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, FileHandle, OpenMode};

/// Magic bytes at the start of a snapshot.
pub const SNAP_MAGIC: [u8; 8] = *b"LARDSNP\0";
/// Magic bytes at the very end of a snapshot.
pub const SNAP_END_MAGIC: [u8; 8] = *b"LARDEND\0";
/// Snapshot format version.
pub const SNAP_VERSION: u32 = 1;
/// Header length; the first section starts here.
pub const HEADER_LEN: usize = 32;
/// Offset of the version (u32 LE) in the header.
pub const VERSION_OFFSET: usize = 8;
/// Offset of the flags (u32 LE, zero) in the header.
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
/// Sections start at multiples of this (rkyv's alignment).
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
    entries: &'a rkyv::Archived<Vec<Entry>>,
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
        self.entries.len()
    }
    /// Whether the section has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The entries, zero-copy.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'a>> + 'a {
        self.entries.iter().map(|e| EntryRef {
            key: e.key.as_slice(),
            value: e.value.as_slice(),
            expire_at_ms: e.expire_at_ms.as_ref().map(|v| v.to_native()),
        })
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

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

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

/// Writes a snapshot from entries fed one by one (so a caller can feed a fuzzy
/// snapshot shard by shard while writers go on). Bytes go to `<name>.tmp`; `finish`
/// syncs it, renames it to `name` and syncs the directory. Dropping the writer without
/// `finish` removes the temp file (best effort).
pub struct SnapshotWriter {
    backend: Arc<dyn Backend>,
    name: String,
    tmp: String,
    file: Arc<dyn FileHandle>,
    start_seq: u64,
    pos: u64,
    index: Vec<IndexEntry>,
    pending: Vec<Entry>,
    pending_bytes: usize,
    section_bytes: usize,
    entries: u64,
    finished: bool,
}

impl SnapshotWriter {
    /// Starts `name` (written as `name.tmp` until [`SnapshotWriter::finish`]) for a log
    /// that replays from `start_seq`.
    pub fn create(
        backend: Arc<dyn Backend>,
        name: &str,
        start_seq: u64,
    ) -> Result<Self, SnapshotError> {
        Self::create_tagged(backend, name, start_seq, None)
    }

    /// [`SnapshotWriter::create`], recording the schema tag the data is written under
    /// (its [`schema_crc`] goes in the header).
    pub fn create_tagged(
        backend: Arc<dyn Backend>,
        name: &str,
        start_seq: u64,
        schema: Option<&str>,
    ) -> Result<Self, SnapshotError> {
        let tmp = format!("{name}.tmp");
        let io = |op, source| SnapshotError::Io {
            file: tmp.clone(),
            op,
            source,
        };
        let file = backend
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|e| io("create", e))?;
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&SNAP_MAGIC);
        h[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&SNAP_VERSION.to_le_bytes());
        h[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        h[START_SEQ_OFFSET..START_SEQ_OFFSET + 8].copy_from_slice(&start_seq.to_le_bytes());
        h[SCHEMA_OFFSET..SCHEMA_OFFSET + 4].copy_from_slice(&schema_crc(schema).to_le_bytes());
        let c = crc(&h[..HEADER_CRC_OFFSET]);
        h[HEADER_CRC_OFFSET..].copy_from_slice(&c.to_le_bytes());
        file.write_at(&h, 0).map_err(|e| io("write header", e))?;
        Ok(SnapshotWriter {
            backend,
            name: name.to_owned(),
            tmp,
            file,
            start_seq,
            pos: HEADER_LEN as u64,
            index: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            section_bytes: DEFAULT_SECTION_BYTES,
            entries: 0,
            finished: false,
        })
    }

    /// Sets the target section size (bytes of keys and values per section, at least 1).
    /// Smaller sections load with more parallelism; each costs 32 index bytes.
    pub fn section_bytes(mut self, bytes: usize) -> Self {
        self.section_bytes = bytes.max(1);
        self
    }

    /// Adds one entry.
    pub fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), SnapshotError> {
        self.pending_bytes += key.len() + value.len() + 24;
        self.pending.push(Entry {
            key: key.to_vec(),
            value: value.to_vec(),
            expire_at_ms,
        });
        if self.pending_bytes >= self.section_bytes {
            self.flush_section()?;
        }
        Ok(())
    }

    /// Adds every entry of `entries`.
    pub fn extend<'a>(
        &mut self,
        entries: impl IntoIterator<Item = EntryRef<'a>>,
    ) -> Result<(), SnapshotError> {
        for e in entries {
            self.push(e.key, e.value, e.expire_at_ms)?;
        }
        Ok(())
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries + self.pending.len() as u64
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            file: self.tmp.clone(),
            op,
            source,
        }
    }

    fn flush_section(&mut self) -> Result<(), SnapshotError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&self.pending).map_err(|e| {
            SnapshotError::Encode {
                file: self.tmp.clone(),
                reason: e.to_string(),
            }
        })?;
        let offset = self.pos;
        self.file
            .write_at(&bytes, offset)
            .map_err(self.io("write section"))?;
        self.index.push(IndexEntry {
            offset,
            len: bytes.len() as u64,
            entries: self.pending.len() as u64,
            crc: crc(&bytes),
        });
        self.entries += self.pending.len() as u64;
        self.pos = align_up(offset + bytes.len() as u64);
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the last section and the footer, syncs, renames into place and syncs the
    /// directory. The snapshot is durable when this returns `Ok`.
    pub fn finish(mut self) -> Result<SnapshotInfo, SnapshotError> {
        self.flush_section()?;
        let index_offset = self.pos;
        let mut footer = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN + TRAILER_LEN);
        for e in &self.index {
            footer.extend_from_slice(&e.offset.to_le_bytes());
            footer.extend_from_slice(&e.len.to_le_bytes());
            footer.extend_from_slice(&e.entries.to_le_bytes());
            footer.extend_from_slice(&e.crc.to_le_bytes());
            footer.extend_from_slice(&0u32.to_le_bytes());
        }
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        let c = crc(&footer);
        footer.extend_from_slice(&c.to_le_bytes());
        footer.extend_from_slice(&0u32.to_le_bytes());
        footer.extend_from_slice(&SNAP_END_MAGIC);
        self.file
            .write_at(&footer, index_offset)
            .map_err(self.io("write footer"))?;
        let bytes = index_offset + footer.len() as u64;
        // Padding may have been written past the footer by nothing; pin the length.
        self.file.set_len(bytes).map_err(self.io("set_len"))?;
        self.file.sync_data().map_err(self.io("fsync"))?;
        self.backend
            .rename(&self.tmp, &self.name)
            .map_err(self.io("rename"))?;
        self.finished = true;
        self.backend
            .sync_dir()
            .map_err(|source| SnapshotError::Io {
                file: self.name.clone(),
                op: "fsync directory",
                source,
            })?;
        Ok(SnapshotInfo {
            start_seq: self.start_seq,
            entries: self.entries,
            sections: self.index.len() as u64,
            bytes,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.backend.remove(&self.tmp);
        }
    }
}

fn align_up(x: u64) -> u64 {
    let a = SECTION_ALIGN as u64;
    x.div_ceil(a) * a
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
        if version != SNAP_VERSION {
            return Err(SnapshotError::Version { file: f(), version });
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
                || e.offset % SECTION_ALIGN as u64 != 0
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
            match rkyv::access::<rkyv::Archived<Vec<Entry>>, rkyv::rancor::Error>(data) {
                Ok(entries) if entries.len() as u64 == e.entries => {
                    sink(Section {
                        file,
                        offset: e.offset,
                        index: i,
                        entries,
                    });
                }
                Ok(entries) => fail(invalid(format!(
                    "{} entries, index says {}",
                    entries.len(),
                    e.entries
                ))),
                Err(err) => fail(invalid(err.to_string())),
            }
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
    use crate::backend::MemoryBackend;
    use proptest::prelude::*;

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
}
