//! larder's files: append-only log segments, snapshots, the manifest that names them,
//! and crash-safe recovery. This crate knows records as bytes and nothing of the cache.
//!
//! # Life cycle
//!
//! 1. [`DataDir::open`] recovers a directory: the base snapshot's sections go to a sink
//!    (in parallel), then every logged [`Record`] goes to a callback in sequence order.
//!    A torn tail of the last incr file is cut and reported in [`Status::loading`].
//! 2. Every cache write becomes [`DataDir::append`] (or [`DataDir::write`] under the
//!    shard lock, then [`DataDir::wait_durable`] outside it). Under
//!    [`FsyncPolicy::Always`] concurrent appenders share one fsync (group commit).
//! 3. A rewrite compacts the log: [`DataDir::begin_rewrite`] switches to a new incr
//!    file, the caller streams the keyspace into [`Rewrite::push`] while writes go on,
//!    and [`DataDir::finish_rewrite`] installs the new base and swaps the manifest.
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
pub mod snapshot;

pub use backend::{Backend, FileHandle, OpenMode};
pub use datadir::{DataDir, LoadStats, OpStatus, Options, Rewrite, Status};
pub use error::{AppendError, Error, OpenError, RewriteError};
pub use log::FsyncPolicy;
pub use manifest::{Manifest, ManifestError};
pub use record::{Record, RecordError};
pub use recovery::{FileKind, FileReport, Replay, Tail, TailKind};
pub use snapshot::{EntryRef, Section, SnapshotError, SnapshotInfo, SnapshotWriter};
