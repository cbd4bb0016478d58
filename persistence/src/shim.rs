//! One place that picks the synchronisation types of the append path: std's in a normal
//! build, loom's under `--cfg loom`, as the cache's own `shim.rs` does. The log
//! (`log.rs`) and the data directory's lock around switches (`datadir.rs`) import them
//! from here, so a loom model sees every lock, condition variable and atomic an append,
//! a group commit, a poisoning and a segment switch go through.
//!
//! `Arc` stays std's: reference counting is not what the models check. The backends'
//! own mutexes stay std's too: they guard plain byte copies with no loom operation
//! inside, so no model thread can be preempted while holding one.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
