//! A backend wrapper that fails on cue: the Nth write, the Nth sync, a full disk, or
//! every operation after the Nth (the last one models a process that dies there).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Backend, DirLock, FileBytes, FileHandle, LockError, OpenMode};

/// When a [`FaultBackend`] fails. Counts are 1-based and cover all files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The Nth `write_at` fails (writing nothing) with an I/O error.
    pub fail_write: Option<u64>,
    /// The Nth `sync_data` fails with an I/O error, and syncs nothing.
    pub fail_sync: Option<u64>,
    /// Total bytes `write_at` may add across all files; a write crossing the limit
    /// writes the prefix that fits and then fails with `StorageFull`, like a full disk.
    pub capacity: Option<u64>,
    /// Every operation (file or directory) after the Nth fails, the Nth included.
    pub fail_after_ops: Option<u64>,
    /// Every `sync_data` sleeps this long first, like a slow disk.
    pub sync_delay: Option<std::time::Duration>,
}

#[derive(Default)]
struct Counters {
    plan: FaultPlan,
    writes: u64,
    syncs: u64,
    ops: u64,
    bytes_written: u64,
}

/// Wraps a backend and injects the failures of a [`FaultPlan`]. Cloning shares the plan
/// and the counters.
#[derive(Clone)]
pub struct FaultBackend<B> {
    inner: B,
    counters: Arc<Mutex<Counters>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

impl<B: Backend> FaultBackend<B> {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: B, plan: FaultPlan) -> Self {
        FaultBackend {
            inner,
            counters: Arc::new(Mutex::new(Counters {
                plan,
                ..Counters::default()
            })),
        }
    }

    /// Replaces the plan and resets the counters.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.counters() = Counters {
            plan,
            ..Counters::default()
        };
    }

    /// Operations counted so far (for sizing `fail_after_ops` sweeps).
    pub fn ops(&self) -> u64 {
        self.counters().ops
    }

    /// `sync_data` calls counted so far.
    pub fn syncs(&self) -> u64 {
        self.counters().syncs
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    fn op(&self, what: &str) -> io::Result<()> {
        op(&self.counters, what)
    }
}

fn lock(c: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

fn op(c: &Mutex<Counters>, what: &str) -> io::Result<()> {
    let mut c = lock(c);
    c.ops += 1;
    match c.plan.fail_after_ops {
        Some(n) if c.ops >= n => Err(injected(&format!("{what} after op limit"))),
        _ => Ok(()),
    }
}

struct FaultFile {
    inner: Arc<dyn FileHandle>,
    counters: Arc<Mutex<Counters>>,
}

impl FileHandle for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        op(&self.counters, "write")?;
        let allowed = {
            let mut c = lock(&self.counters);
            c.writes += 1;
            if c.plan.fail_write == Some(c.writes) {
                return Err(injected("write"));
            }
            let len = buf.len() as u64;
            match c.plan.capacity {
                Some(cap) if c.bytes_written + len > cap => {
                    let fits = cap.saturating_sub(c.bytes_written);
                    c.bytes_written += fits;
                    fits as usize
                }
                _ => {
                    c.bytes_written += len;
                    buf.len()
                }
            }
        };
        self.inner.write_at(&buf[..allowed], offset)?;
        if allowed < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected fault: no space left on device",
            ));
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        op(&self.counters, "set_len")?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        op(&self.counters, "sync_data")?;
        let delay = lock(&self.counters).plan.sync_delay;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        {
            let mut c = lock(&self.counters);
            c.syncs += 1;
            if c.plan.fail_sync == Some(c.syncs) {
                return Err(injected("sync_data"));
            }
        }
        self.inner.sync_data()
    }
}

impl<B: Backend> Backend for FaultBackend<B> {
    /// Passed through, not counted as an operation (plans count data operations).
    fn lock(&self) -> Result<DirLock, LockError> {
        self.inner.lock()
    }
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        if mode == OpenMode::CreateTruncate {
            self.op("create")?;
        }
        Ok(Arc::new(FaultFile {
            inner: self.inner.open(name, mode)?,
            counters: self.counters.clone(),
        }))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.op("rename")?;
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.op("remove")?;
        self.inner.remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.op("sync_dir")?;
        self.inner.sync_dir()
    }
    fn read_all(&self, name: &str) -> io::Result<FileBytes> {
        self.inner.read_all(name)
    }
}
