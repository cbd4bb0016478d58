//! One place that picks the synchronisation types: std's in a normal build, loom's under
//! `--cfg loom`. Library code imports sync types only from here, so that a loom model of
//! a user's program sees every lock, condition variable, atomic and thread larder uses.
//!
//! `Arc` and `Weak` stay std's in both builds: loom has no `Weak`, and reference counting
//! is not what larder's models check; every hand-off between threads goes through the
//! modelled types.

#[cfg(loom)]
pub(crate) use loom::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    thread,
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    thread,
};

pub(crate) use std::sync::{Arc, Weak};

/// Locks `m`, ignoring poison. larder restores a shard's invariants before any user code
/// (a weigher, `Hash`, `Eq`, a transaction closure) can run under the lock, so a panic in
/// user code leaves the protected data consistent and the cache stays usable.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Takes `l` shared, ignoring poison (see [`lock`]).
#[inline]
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Takes `l` exclusively, ignoring poison (see [`lock`]).
#[inline]
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
