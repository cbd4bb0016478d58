//! One error enum per operation, each convertible into the umbrella [`Error`].

use crate::backend::LockError;
use crate::frame::HeaderError;
use crate::manifest::ManifestError;
use crate::record::RecordError;
use crate::snapshot::SnapshotError;

/// Why a data directory could not be opened (recovered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another open data directory holds the directory's lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The manifest's schema tag is not the one this open expects (the key or value
    /// type, or the user's schema version, changed).
    #[error(
        "the data was written with schema {found:?}, but it is being opened as \
         {expected:?}; open it with the types and version that wrote it, or let the \
         open discard it (SchemaMismatch::Discard)"
    )]
    Schema {
        /// The tag in the manifest.
        found: String,
        /// The tag asked for.
        expected: String,
    },
    /// The schema tag asked for cannot be stored (empty, too long, or with control
    /// characters).
    #[error("schema tag {tag:?} is empty, longer than {max} bytes or holds control characters", max = crate::manifest::MAX_SCHEMA_LEN)]
    BadSchemaTag {
        /// The tag.
        tag: String,
    },
    /// A file the manifest does not name may hold data the named files do not: an
    /// incr file with records the base does not cover, or a base newer than every
    /// named file. The manifest lost track of written data (a stale or edited
    /// manifest). Nothing is removed.
    #[error(
        "{file} ({bytes} bytes) may hold data but the manifest does not name it; \
         refusing to open (and to remove it): restore the manifest that names it, or \
         move the file away if its data is not wanted"
    )]
    Unnamed {
        /// The file.
        file: String,
        /// Its size.
        bytes: u64,
    },
    /// The manifest is missing, unreadable or inconsistent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The base snapshot is unreadable or damaged.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The base's header disagrees with the manifest about its start sequence.
    #[error("base {file}: header says start sequence {header}, manifest says {manifest}")]
    BaseSequence {
        /// The base file.
        file: String,
        /// Sequence in the manifest.
        manifest: u64,
        /// Sequence in the snapshot header.
        header: u64,
    },
    /// The base was written under another schema tag than the manifest's.
    #[error(
        "base {file} was written under another schema than the manifest's {manifest:?} \
         (files from two directories?)"
    )]
    BaseSchema {
        /// The base file.
        file: String,
        /// The manifest's tag.
        manifest: String,
    },
    /// An incr file's header is damaged.
    #[error(
        "{file}: bad file header: {source}; the records it holds, from sequence {seq} on, \
         cannot be read"
    )]
    Header {
        /// The incr file.
        file: String,
        /// The file's start sequence (per the manifest).
        seq: u64,
        /// What is wrong.
        source: HeaderError,
    },
    /// Damage that is not a torn tail of the last incr file.
    #[error("{file}: corrupt at byte {offset} (expected sequence {seq}): {reason}")]
    Corrupt {
        /// The incr file.
        file: String,
        /// Offset of the first bad frame.
        offset: u64,
        /// The sequence the bad frame should have carried.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// An incr file starts at a sequence that does not follow the previous file.
    #[error("{file}: starts at sequence {found}, expected {expected}")]
    SequenceGap {
        /// The incr file.
        file: String,
        /// The sequence that should come next.
        expected: u64,
        /// The sequence the manifest names for the file.
        found: u64,
    },
    /// The last incr file has a torn tail and `aof_load_truncated` is off.
    #[error(
        "{file}: torn tail at byte {offset} ({bytes} bytes after sequence {last_good_seq}); \
         refusing to truncate (aof_load_truncated = false; run larder-check --fix)"
    )]
    TornTail {
        /// The last incr file.
        file: String,
        /// Offset of the torn frame.
        offset: u64,
        /// Bytes from there to the end.
        bytes: u64,
        /// Sequence of the last whole record (0: none).
        last_good_seq: u64,
    },
    /// The backend failed.
    #[error("{file}: {op} failed: {source}")]
    Io {
        /// The file.
        file: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why an append failed. After `Write` or `Sync` the log is poisoned: later appends
/// fail with `Poisoned` until the directory is opened again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Writing the frames failed (full disk, I/O error). Nothing of this append is
    /// acknowledged; recovery drops whatever part of it reached the file.
    #[error("{file}: write at byte {offset} failed: {source}")]
    Write {
        /// The incr file.
        file: String,
        /// Where the frames were being written.
        offset: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The log refuses appends since an earlier write or fsync failed.
    #[error("log is poisoned and needs reopening: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// A record's encoding exceeds [`crate::frame::MAX_PAYLOAD`].
    #[error("record of {len} bytes exceeds the frame limit")]
    TooLarge {
        /// The encoded length.
        len: usize,
    },
    /// An empty batch.
    #[error("append of zero records")]
    Empty,
    /// The background sync thread `everysec` needs could not be started.
    #[error("starting the everysec sync thread failed: {0}")]
    Syncer(std::io::Error),
    /// The current incr file is full and switching to a new one failed (creating or
    /// syncing a file, or writing the manifest). Nothing of this append is written.
    #[error("switching the log to a new incr file failed: {reason}")]
    Switch {
        /// What failed.
        reason: String,
    },
}

/// Why a rewrite step failed. The previous files stay in force; retry with a new
/// [`crate::DataDir::begin_rewrite`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// Another rewrite is running.
    #[error("a rewrite is already in progress")]
    InProgress,
    /// The log is poisoned; reopen the directory first.
    #[error("log is poisoned and needs reopening: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// Writing the new base failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Creating or syncing a file failed.
    #[error("{file}: {op} failed: {source}")]
    Io {
        /// The file.
        file: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening a data directory.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Appending.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Rewriting.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// Reading or writing a snapshot.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Reading or writing the manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Decoding a record.
    #[error(transparent)]
    Record(#[from] RecordError),
}
