//! larder's files: append-only log segments, snapshots, the manifest that names them,
//! and crash-safe recovery. This crate knows records as bytes and nothing of the cache.
