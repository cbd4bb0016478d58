//! larder's files: append-only log segments, snapshots, the manifest that names them,
//! and crash-safe recovery. This crate knows records as bytes and nothing of the cache.
//!
//! # Life cycle
//!
//! 1. [`DataDir::open`] takes the directory's lock ([`Backend::lock`]; a second open
//!    fails with [`OpenError::Locked`] naming the holder) and recovers the directory:
//!    the base snapshot's sections go to a sink (in parallel), then every logged
//!    [`Record`] goes to a callback in sequence order. A torn tail of the last incr
//!    file is cut and reported in [`Status::loading`].
//! 2. Every cache write becomes [`DataDir::append`] (or [`DataDir::write`] under the
//!    shard lock, then [`DataDir::wait_durable`] outside it). Under
//!    [`FsyncPolicy::Always`] concurrent appenders share one fsync (group commit).
//! 3. A rewrite compacts the log: [`DataDir::begin_rewrite`] switches to a new incr
//!    file, the caller streams the keyspace into [`Rewrite::push`] while writes go on,
//!    and [`DataDir::finish_rewrite`] installs the new base and swaps the manifest.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use larder_persistence::backend::MemoryBackend;
//! use larder_persistence::{DataDir, FsyncPolicy, Options, Record};
//!
//! let disk = Arc::new(MemoryBackend::new()); // FsBackend::new(path) for a real disk
//! let opts = Options { fsync: FsyncPolicy::Always, ..Options::default() };
//! let dir = DataDir::open(disk.clone(), opts.clone(), &|_| {}, &mut |_, _| {})?;
//! let seq = dir.append(&Record::Set { key: b"k".to_vec(), value: b"v".to_vec(), expire_at_ms: None })?;
//! assert_eq!(seq, 1);
//!
//! // Rewrite: switch, stream the keyspace, install.
//! let mut rw = dir.begin_rewrite()?;
//! rw.push(b"k", b"v", None)?;
//! dir.finish_rewrite(rw)?;
//! drop(dir);
//!
//! // Recover: base sections (in parallel), then log records in order.
//! let base = Mutex::new(Vec::new());
//! let mut log = Vec::new();
//! let dir = DataDir::open(
//!     disk,
//!     opts,
//!     &|section| base.lock().unwrap().extend(section.iter().map(|e| e.key.to_vec())),
//!     &mut |seq, rec| log.push((seq, rec)),
//! )?;
//! assert_eq!(base.into_inner().unwrap(), vec![b"k".to_vec()]);
//! assert!(log.is_empty());
//! assert_eq!(dir.status().next_seq, 2);
//! # Ok::<(), larder_persistence::Error>(())
//! ```
//!
//! File layouts are drawn in `docs/format.md` and next to the offset constants in
//! [`frame`], [`snapshot`] and [`manifest`]. All integers are little-endian.

pub mod backend;
mod datadir;
mod error;
pub mod frame;
mod log;
pub mod manifest;
pub mod record;
pub mod recovery;
mod shim;
pub mod snapshot;

pub use backend::{Backend, DirLock, FileHandle, LockError, MappedFile, OpenMode};
pub use datadir::{
    discard, DataDir, LoadStats, OpStatus, Options, Rewrite, SchemaMismatch, Status,
    DEFAULT_SEGMENT_BYTES, DISCARD_MARKER,
};
pub use error::{AppendError, Error, OpenError, RewriteError};
pub use log::FsyncPolicy;
pub use manifest::{Manifest, ManifestError};
pub use record::{Record, RecordError};
pub use recovery::{FileKind, FileReport, Hole, RecordAt, Replay, Tail, TailKind};
pub use snapshot::{EntryRef, Section, SectionWriter, SnapshotError, SnapshotInfo, SnapshotWriter};
