//! Writing a snapshot, from one thread or from many at once.
//!
//! Each [`SectionWriter`] packs entries into a buffer of its own and, when the buffer
//! reaches the section size, reserves the next free range of the file with one atomic
//! add and writes the section there: threads feeding different shards never wait for
//! each other. The index, sorted by offset, and the header are written by
//! [`SnapshotWriter::finish`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    crc, packed, schema_crc, IndexEntry, SnapshotError, SnapshotInfo, DEFAULT_SECTION_BYTES,
    FLAGS_OFFSET, FLAG_DISTINCT_KEYS, HEADER_CRC_OFFSET, HEADER_LEN, SCHEMA_OFFSET, SNAP_MAGIC,
    SNAP_VERSION, START_SEQ_OFFSET, VERSION_OFFSET,
};
use crate::backend::{Backend, FileHandle, OpenMode};

/// What every section writer of one snapshot shares.
struct Sections {
    file: Arc<dyn FileHandle>,
    tmp: String,
    /// The next free byte of the file.
    next: AtomicU64,
    index: Mutex<Vec<IndexEntry>>,
    /// The first failure of a section write, reported by `finish`.
    failed: Mutex<Option<String>>,
    section_bytes: usize,
}

impl Sections {
    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            file: self.tmp.clone(),
            op,
            source,
        }
    }

    /// Writes one packed section at the next free offset and indexes it.
    fn write(&self, bytes: &[u8], entries: u64) -> Result<(), SnapshotError> {
        let offset = self.next.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let result = self
            .file
            .write_at(bytes, offset)
            .map_err(self.io("write section"));
        if let Err(e) = &result {
            lock(&self.failed).get_or_insert_with(|| e.to_string());
            return result;
        }
        lock(&self.index).push(IndexEntry {
            offset,
            len: bytes.len() as u64,
            entries,
            crc: crc(bytes),
        });
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Entries packed into a buffer until it makes a section.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    entries: u64,
}

impl Pending {
    fn push(
        &mut self,
        sections: &Sections,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), SnapshotError> {
        packed::encode(&mut self.buf, key, value, expire_at_ms);
        self.entries += 1;
        if self.buf.len() >= sections.section_bytes {
            self.flush(sections)?;
        }
        Ok(())
    }

    /// Writes what is buffered as one section.
    fn flush(&mut self, sections: &Sections) -> Result<(), SnapshotError> {
        if self.entries == 0 {
            return Ok(());
        }
        let r = sections.write(&self.buf, self.entries);
        self.buf.clear();
        self.entries = 0;
        r
    }
}

/// One thread's share of a snapshot: entries pushed here go into sections of their own.
/// Call [`SectionWriter::finish`] to write the last section and see its error;
/// dropping the writer writes it too, and a failure then fails
/// [`SnapshotWriter::finish`].
pub struct SectionWriter<'w> {
    sections: &'w Sections,
    pending: Pending,
}

impl SectionWriter<'_> {
    /// Adds one entry.
    pub fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), SnapshotError> {
        self.pending.push(self.sections, key, value, expire_at_ms)
    }

    /// Writes the last section.
    pub fn finish(mut self) -> Result<(), SnapshotError> {
        self.pending.flush(self.sections)
    }
}

impl Drop for SectionWriter<'_> {
    fn drop(&mut self) {
        // A failure is recorded for `SnapshotWriter::finish`.
        let _ = self.pending.flush(self.sections);
    }
}

/// Writes a snapshot. Entries come one by one through [`SnapshotWriter::push`], or from
/// several threads at once through [`SnapshotWriter::section_writer`] (a fuzzy
/// snapshot fed shard by shard while writers go on). Bytes go to `<name>.tmp`;
/// `finish` syncs it, renames it to `name` and syncs the directory. Dropping the
/// writer without `finish` removes the temp file (best effort).
pub struct SnapshotWriter {
    backend: Arc<dyn Backend>,
    name: String,
    sections: Sections,
    start_seq: u64,
    schema_crc: u32,
    distinct_keys: bool,
    /// The section [`SnapshotWriter::push`] fills.
    own: Pending,
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
        let file = backend
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|source| SnapshotError::Io {
                file: tmp.clone(),
                op: "create",
                source,
            })?;
        Ok(SnapshotWriter {
            backend,
            name: name.to_owned(),
            sections: Sections {
                file,
                tmp,
                next: AtomicU64::new(HEADER_LEN as u64),
                index: Mutex::new(Vec::new()),
                failed: Mutex::new(None),
                section_bytes: DEFAULT_SECTION_BYTES,
            },
            start_seq,
            schema_crc: schema_crc(schema),
            distinct_keys: false,
            own: Pending::default(),
            finished: false,
        })
    }

    /// Sets the target section size (bytes of packed entries per section, at least 1).
    /// Smaller sections load with more parallelism; each costs 32 index bytes.
    pub fn section_bytes(mut self, bytes: usize) -> Self {
        self.sections.section_bytes = bytes.max(1);
        self
    }

    /// Declares that no key is pushed twice, which the header records so that a loader
    /// may insert without looking for an existing copy. The caller keeps the promise
    /// (a loader trusting it would hold two copies of a repeated key).
    pub fn distinct_keys(&mut self) {
        self.distinct_keys = true;
    }

    /// A writer for one thread's share of the entries; any number may be open at once.
    pub fn section_writer(&self) -> SectionWriter<'_> {
        SectionWriter {
            sections: &self.sections,
            pending: Pending {
                buf: Vec::with_capacity(
                    self.sections.section_bytes.min(DEFAULT_SECTION_BYTES) + 64,
                ),
                entries: 0,
            },
        }
    }

    /// Adds one entry.
    pub fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), SnapshotError> {
        self.own.push(&self.sections, key, value, expire_at_ms)
    }

    /// Adds every entry of `entries`.
    pub fn extend<'a>(
        &mut self,
        entries: impl IntoIterator<Item = super::EntryRef<'a>>,
    ) -> Result<(), SnapshotError> {
        for e in entries {
            self.push(e.key, e.value, e.expire_at_ms)?;
        }
        Ok(())
    }

    /// Entries in the sections written so far plus those pushed and not yet written.
    pub fn entries(&self) -> u64 {
        lock(&self.sections.index)
            .iter()
            .map(|e| e.entries)
            .sum::<u64>()
            + self.own.entries
    }

    /// Writes the last section, the header and the footer, syncs, renames into place
    /// and syncs the directory. The snapshot is durable when this returns `Ok`. Every
    /// [`SectionWriter`] must be finished or dropped before (the borrow checker sees
    /// to it).
    pub fn finish(mut self) -> Result<SnapshotInfo, SnapshotError> {
        self.own.flush(&self.sections)?;
        let s = &self.sections;
        if let Some(reason) = lock(&s.failed).take() {
            return Err(SnapshotError::Encode {
                file: s.tmp.clone(),
                reason: format!("a section write failed: {reason}"),
            });
        }
        let mut index = std::mem::take(&mut *lock(&s.index));
        index.sort_by_key(|e| e.offset);
        let entries: u64 = index.iter().map(|e| e.entries).sum();

        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&SNAP_MAGIC);
        h[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&SNAP_VERSION.to_le_bytes());
        let flags = if self.distinct_keys {
            FLAG_DISTINCT_KEYS
        } else {
            0
        };
        h[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&flags.to_le_bytes());
        h[START_SEQ_OFFSET..START_SEQ_OFFSET + 8].copy_from_slice(&self.start_seq.to_le_bytes());
        h[SCHEMA_OFFSET..SCHEMA_OFFSET + 4].copy_from_slice(&self.schema_crc.to_le_bytes());
        let c = crc(&h[..HEADER_CRC_OFFSET]);
        h[HEADER_CRC_OFFSET..].copy_from_slice(&c.to_le_bytes());
        s.file.write_at(&h, 0).map_err(s.io("write header"))?;

        let index_offset = s.next.load(Ordering::Relaxed);
        let footer = super::footer(&index, index_offset, entries);
        s.file
            .write_at(&footer, index_offset)
            .map_err(s.io("write footer"))?;
        let bytes = index_offset + footer.len() as u64;
        s.file.set_len(bytes).map_err(s.io("set_len"))?;
        s.file.sync_data().map_err(s.io("fsync"))?;
        self.backend
            .rename(&s.tmp, &self.name)
            .map_err(s.io("rename"))?;
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
            entries,
            sections: index.len() as u64,
            bytes,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.backend.remove(&self.sections.tmp);
        }
    }
}
