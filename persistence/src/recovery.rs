//! Recovery: load the base, replay the incr files in order, classify damage.
//!
//! A torn tail is damage in the last incr file after which no valid frame with a
//! higher sequence exists: the end of a write that a crash cut short. Anything else
//! (damage in an earlier file, a valid frame after the damage, a frame whose checksum
//! passes but whose payload does not decode, a sequence out of order) is corruption.
//! Records are handed to the caller as they are read, so on an error the caller has
//! seen a prefix and should discard what it built.

use std::time::{Duration, Instant};

use crate::backend::{Backend, OpenMode};
use crate::error::OpenError;
use crate::frame::{
    check_file_header, decode_frame, next_in_segment, valid_frame_follows, Frame, HeaderError,
    SegmentStep, AOF_VERSION, AOF_VERSION_APPENDED, FILE_HEADER_LEN,
};
use crate::manifest::{Manifest, ManifestError, MANIFEST_NAME};
use crate::record::Record;
use crate::snapshot::{self, Section};

/// Where a replayed record was read: what a caller's own decoding error should name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt<'a> {
    /// The incr file.
    pub file: &'a str,
    /// Offset of the record's frame in the file.
    pub offset: u64,
    /// The record's sequence.
    pub seq: u64,
}

impl std::fmt::Display for RecordAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {} (sequence {})",
            self.file, self.offset, self.seq
        )
    }
}

/// What kind of file a [`FileReport`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The base snapshot.
    Base,
    /// An incr file.
    Incr,
}

/// What recovery found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file name.
    pub name: String,
    /// Base or incr.
    pub kind: FileKind,
    /// File size in bytes as found.
    pub bytes: u64,
    /// Entries (base) or whole records (incr) read.
    pub records: u64,
    /// Sequence of the first record read (incr only).
    pub first_seq: Option<u64>,
    /// Sequence of the last good record read (incr only).
    pub last_seq: Option<u64>,
    /// End of the last whole frame (incr only; a mapped segment's zero tail follows).
    pub end: u64,
}

/// Frames reserved in a mapped segment but never (fully) copied before a crash, found
/// before later whole frames. Their appends were never acknowledged (an appender
/// returns only after its copy, and under `Always` only after a sync point, which no
/// hole precedes), so they are skipped; the whole frames after them are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// The incr file.
    pub file: String,
    /// Offset of the first missing frame.
    pub offset: u64,
    /// Bytes up to the next whole frame.
    pub bytes: u64,
    /// The first missing sequence.
    pub first_seq: u64,
    /// How many sequences are missing.
    pub records: u64,
}

/// What is wrong at the end of the last incr file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailKind {
    /// A write cut short; nothing valid follows.
    Torn,
    /// Damage with something valid after it (or a frame that passes its checksum but
    /// does not decode). `larder-check --fix` may still cut here; open refuses.
    Corrupt(String),
}

/// Damage at the end of the last incr file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last incr file.
    pub file: String,
    /// Offset of the first bad byte (start of the first bad frame).
    pub offset: u64,
    /// Bytes from `offset` to the end of the file (of a mapped segment: to its last
    /// nonzero byte, the preallocated zeros after it being no data).
    pub bytes: u64,
    /// Sequence of the last good record before it (0: none).
    pub last_good_seq: u64,
    /// Torn or corrupt.
    pub kind: TailKind,
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The manifest read.
    pub manifest: Manifest,
    /// One report per file, base first.
    pub files: Vec<FileReport>,
    /// Damage at the end of the last incr file: truncated (open) or found (check).
    pub tail: Option<Tail>,
    /// Holes skipped in the last incr file (see [`Hole`]).
    pub holes: Vec<Hole>,
    /// Format version of the last incr file.
    pub last_version: u32,
    /// The sequence the next append gets.
    pub next_seq: u64,
    /// Length of the last incr file after recovery (end of its last whole frame).
    pub last_len: u64,
    /// Entries loaded from the base.
    pub base_entries: u64,
    /// Records replayed from incr files.
    pub records: u64,
    /// Bytes read (base plus incr files).
    pub bytes: u64,
    /// Wall time spent.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Open for writing: cut a torn tail if allowed, refuse corruption.
    Open { truncate: bool },
    /// Verify only: report a torn or corrupt last-file tail instead of failing.
    Check,
}

pub(crate) fn read_manifest(backend: &dyn Backend) -> Result<Manifest, ManifestError> {
    let bytes = backend
        .read_all(MANIFEST_NAME)
        .map_err(|source| ManifestError::Io {
            file: MANIFEST_NAME.into(),
            op: "read",
            source,
        })?;
    let m = Manifest::parse(&bytes)?;
    let present = backend.list().map_err(|source| ManifestError::Io {
        file: ".".into(),
        op: "list directory",
        source,
    })?;
    for f in m.files() {
        if !present.iter().any(|p| p == &f.name) {
            return Err(ManifestError::MissingFile {
                name: f.name.clone(),
            });
        }
    }
    Ok(m)
}

/// Replays `manifest`'s files. `progress` is called with bytes consumed.
pub(crate) fn replay(
    backend: &dyn Backend,
    manifest: Manifest,
    mode: Mode,
    threads: usize,
    sink: &(dyn Fn(Section<'_>) + Sync),
    on_record: &mut dyn FnMut(RecordAt<'_>, Record),
    progress: &mut dyn FnMut(u64),
) -> Result<Replay, OpenError> {
    let started = Instant::now();
    let mut files = Vec::new();
    let mut bytes_read = 0u64;
    let mut base_entries = 0;
    if let Some(base) = &manifest.base {
        let (layout, len) = snapshot::load(backend, &base.name, threads, sink)?;
        if layout.start_seq != base.seq {
            return Err(OpenError::BaseSequence {
                file: base.name.clone(),
                manifest: base.seq,
                header: layout.start_seq,
            });
        }
        // A base records the tag it was written under; a tagged manifest naming a
        // base of another tag was put together from two directories.
        if let Some(tag) = manifest.schema.as_deref() {
            if layout.schema_crc != 0 && layout.schema_crc != snapshot::schema_crc(Some(tag)) {
                return Err(OpenError::BaseSchema {
                    file: base.name.clone(),
                    manifest: tag.to_owned(),
                });
            }
        }
        base_entries = layout.entries;
        bytes_read += len;
        progress(len);
        files.push(FileReport {
            name: base.name.clone(),
            kind: FileKind::Base,
            bytes: len,
            records: layout.entries,
            first_seq: None,
            last_seq: None,
            end: len,
        });
    }
    let mut expected = manifest
        .base
        .as_ref()
        .map_or(manifest.incrs[0].seq, |b| b.seq);
    let mut tail = None;
    let mut holes = Vec::new();
    let mut last_version = AOF_VERSION;
    let mut records = 0;
    let mut last_len = 0;
    let n = manifest.incrs.len();
    for (i, incr) in manifest.incrs.iter().enumerate() {
        let last = i + 1 == n;
        let name = &incr.name;
        if incr.seq != expected {
            return Err(OpenError::SequenceGap {
                file: name.clone(),
                expected,
                found: incr.seq,
            });
        }
        let io = |op, source| OpenError::Io {
            file: name.clone(),
            op,
            source,
        };
        let data = backend.read_all(name).map_err(|e| io("read", e))?;
        let len = data.len() as u64;
        let mut report = FileReport {
            name: name.clone(),
            kind: FileKind::Incr,
            bytes: len,
            records: 0,
            first_seq: None,
            last_seq: None,
            end: 0,
        };
        let mut bad: Option<(u64, TailKind)> = None;
        let mut version = AOF_VERSION_APPENDED;
        match check_file_header(&data) {
            Ok(v) => version = v,
            // Not a torn write: a file's header is fsynced before any manifest names
            // it, so a named file shorter than its header was emptied or cut later,
            // taking whatever records it held with it.
            Err(HeaderError::Short { len }) if last => {
                let why = format!(
                    "the file is {len} bytes, shorter than its {FILE_HEADER_LEN}-byte header, \
                     which was made durable before the manifest named it: the file was \
                     emptied or cut after it was written, and every record it held from \
                     sequence {expected} on is lost (how many is unknown)"
                );
                bad = Some((0, TailKind::Corrupt(why)));
            }
            Err(source) => {
                return Err(OpenError::Header {
                    file: name.clone(),
                    seq: incr.seq,
                    source,
                })
            }
        }
        let mut good_end = FILE_HEADER_LEN as u64;
        let mut pos = FILE_HEADER_LEN;
        while bad.is_none() {
            // One whole frame, or the reason the data ends here.
            let step = if version == AOF_VERSION {
                next_in_segment(&data, pos, expected)
            } else if pos >= data.len() {
                SegmentStep::End
            } else {
                match decode_frame(&data, pos) {
                    Ok(f) => SegmentStep::Frame(f),
                    Err(e)
                        if last
                            && !valid_frame_follows(&data, e.offset(), expected.checked_sub(1)) =>
                    {
                        SegmentStep::Torn(e)
                    }
                    Err(e) => SegmentStep::Corrupt(e),
                }
            };
            let f: Frame<'_> = match step {
                SegmentStep::Frame(f) => f,
                SegmentStep::End => break,
                SegmentStep::Hole {
                    offset,
                    next,
                    missing,
                } if last => {
                    holes.push(Hole {
                        file: name.clone(),
                        offset: offset as u64,
                        bytes: (next - offset) as u64,
                        first_seq: expected,
                        records: missing,
                    });
                    expected += missing;
                    pos = next;
                    continue;
                }
                SegmentStep::Hole { offset, .. } => {
                    // A closed segment was synced whole before its successor was named.
                    let why =
                        "frames missing before later whole frames in a file that is not the last";
                    bad = Some((offset as u64, TailKind::Corrupt(why.into())));
                    break;
                }
                SegmentStep::Torn(e) => {
                    let kind = if last {
                        TailKind::Torn
                    } else {
                        TailKind::Corrupt(e.to_string())
                    };
                    bad = Some((e.offset() as u64, kind));
                    break;
                }
                SegmentStep::Corrupt(e) => {
                    bad = Some((e.offset() as u64, TailKind::Corrupt(e.to_string())));
                    break;
                }
            };
            if f.seq != expected {
                let why = format!("frame carries sequence {}", f.seq);
                bad = Some((f.offset as u64, TailKind::Corrupt(why)));
                break;
            }
            let rec = match f.record() {
                Ok(r) => r,
                Err(e) => {
                    bad = Some((f.offset as u64, TailKind::Corrupt(e.to_string())));
                    break;
                }
            };
            on_record(
                RecordAt {
                    file: name,
                    offset: f.offset as u64,
                    seq: f.seq,
                },
                rec,
            );
            report.first_seq.get_or_insert(f.seq);
            report.last_seq = Some(f.seq);
            report.records += 1;
            records += 1;
            expected += 1;
            good_end = f.end() as u64;
            pos = f.end();
        }
        report.end = good_end;
        bytes_read += len;
        progress(len);
        if let Some((offset, kind)) = bad {
            // In a segment, the preallocated zeros after the damage are not data.
            let end = if version == AOF_VERSION {
                data.iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |i| i as u64 + 1)
            } else {
                len
            };
            let t = Tail {
                file: name.clone(),
                offset,
                bytes: end.max(offset) - offset,
                last_good_seq: expected - 1,
                kind,
            };
            match (mode, last, &t.kind) {
                (Mode::Check, true, _) => tail = Some(t),
                (Mode::Open { truncate: true }, true, TailKind::Torn) => {
                    let file = backend
                        .open(name, OpenMode::Existing)
                        .map_err(|e| io("open", e))?;
                    if offset < FILE_HEADER_LEN as u64 {
                        // The header itself is torn: start the file over.
                        file.set_len(0).map_err(|e| io("truncate", e))?;
                        file.write_at(&crate::frame::file_header(), 0)
                            .map_err(|e| io("write header", e))?;
                    } else {
                        file.set_len(offset).map_err(|e| io("truncate", e))?;
                    }
                    file.sync_data().map_err(|e| io("fsync", e))?;
                    tail = Some(t);
                }
                (Mode::Open { truncate: false }, true, TailKind::Torn) => {
                    return Err(OpenError::TornTail {
                        file: t.file,
                        offset: t.offset,
                        bytes: t.bytes,
                        last_good_seq: t.last_good_seq,
                    })
                }
                (_, _, TailKind::Torn) => {
                    return Err(OpenError::Corrupt {
                        file: t.file,
                        offset: t.offset,
                        seq: expected,
                        reason: "incomplete frame in a file that is not the last".into(),
                    })
                }
                (_, _, TailKind::Corrupt(reason)) => {
                    return Err(OpenError::Corrupt {
                        file: t.file.clone(),
                        offset: t.offset,
                        seq: expected,
                        reason: reason.clone(),
                    })
                }
            }
        }
        files.push(report);
        if last {
            last_len = good_end;
            last_version = version;
        }
    }
    Ok(Replay {
        manifest,
        files,
        tail,
        holes,
        last_version,
        next_seq: expected,
        last_len,
        base_entries,
        records,
        bytes: bytes_read,
        duration: started.elapsed(),
    })
}

/// The manifest, refused as open refuses it when files it does not name may hold data
/// (see [`OpenError::Unnamed`]).
fn read_checked_manifest(backend: &dyn Backend) -> Result<Manifest, OpenError> {
    let manifest = read_manifest(backend)?;
    let names = backend.list().map_err(|source| OpenError::Io {
        file: ".".into(),
        op: "list directory",
        source,
    })?;
    crate::datadir::leftovers(backend, &names, &manifest)?;
    Ok(manifest)
}

/// Verifies a data directory without changing it: reads the manifest, checks the base
/// and replays every incr file, reporting a torn or corrupt tail of the last incr file
/// in [`Replay::tail`] instead of failing. Damage anywhere else is an error.
/// `progress` is called with the bytes of each file as it is done.
pub fn check(backend: &dyn Backend, progress: &mut dyn FnMut(u64)) -> Result<Replay, OpenError> {
    let manifest = read_checked_manifest(backend)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    replay(
        backend,
        manifest,
        Mode::Check,
        threads,
        &|_| {},
        &mut |_, _| {},
        progress,
    )
}

/// [`check`], also handing every base entry to `entry` and every record to `record`,
/// for a caller that decodes what the files hold (see `larder::verify`). An error a
/// callback returns stops nothing here; collect it and report it with the position.
pub fn check_with(
    backend: &dyn Backend,
    entry: &(dyn Fn(&str, Section<'_>) + Sync),
    record: &mut dyn FnMut(RecordAt<'_>, Record),
    progress: &mut dyn FnMut(u64),
) -> Result<Replay, OpenError> {
    let manifest = read_checked_manifest(backend)?;
    let base = manifest
        .base
        .as_ref()
        .map(|b| b.name.clone())
        .unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    replay(
        backend,
        manifest,
        Mode::Check,
        threads,
        &|section| entry(&base, section),
        record,
        progress,
    )
}

/// Cuts the last incr file at `tail.offset` (what `larder-check --fix` does), syncing
/// the result. A cut inside the file header leaves an empty, valid incr file.
pub fn truncate_tail(backend: &dyn Backend, tail: &Tail) -> Result<(), OpenError> {
    let io = |op, source| OpenError::Io {
        file: tail.file.clone(),
        op,
        source,
    };
    let file = backend
        .open(&tail.file, OpenMode::Existing)
        .map_err(|e| io("open", e))?;
    if tail.offset < FILE_HEADER_LEN as u64 {
        file.set_len(0).map_err(|e| io("truncate", e))?;
        file.write_at(&crate::frame::file_header(), 0)
            .map_err(|e| io("write header", e))?;
    } else {
        file.set_len(tail.offset).map_err(|e| io("truncate", e))?;
    }
    file.sync_data().map_err(|e| io("fsync", e))
}
