//! File I/O behind one small trait, so tests can swap the disk for memory, for a crash
//! image (bytes not yet fsynced are lost) or for a disk that fails on cue.
//!
//! A [`Backend`] is one directory holding flat file names (no `/`). Every file the crate
//! touches goes through [`Backend::open`] and the returned [`FileHandle`]; directory
//! changes (create, rename, remove) become durable only after [`Backend::sync_dir`].
//!
//! A data directory has one writer: [`Backend::lock`] takes an exclusive lock that the
//! open [`crate::DataDir`] holds until it is dropped, so a second open of the same
//! directory, in this process or another, fails with [`LockError::Held`] instead of
//! interleaving two logs.

use std::io;
use std::ops::Deref;
use std::sync::Arc;

mod crash;
mod fault;
mod fs;
mod memory;

pub use crash::CrashImageBackend;
pub use fault::{FaultBackend, FaultPlan};
pub use fs::{FsBackend, LOCK_NAME};
pub use memory::MemoryBackend;

/// How [`Backend::open`] treats an existing or missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open a file that must exist, for reading and writing.
    Existing,
    /// Create the file, truncating it to zero length if it already exists.
    CreateTruncate,
}

/// One open file. All methods take `&self`: the append path writes while another
/// thread runs [`FileHandle::sync_data`] on the same handle.
pub trait FileHandle: Send + Sync {
    /// Current length in bytes, as a reader would see it now (not necessarily durable).
    fn len(&self) -> io::Result<u64>;

    /// Whether [`FileHandle::len`] is zero.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills all of `buf` from `offset`. Reading past the end is an error of kind
    /// [`io::ErrorKind::UnexpectedEof`]; nothing is promised about `buf` then.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, extending the file if needed (a gap left by an
    /// offset past the end reads as zeros). On error, any prefix of `buf` may have been
    /// written. The bytes are visible to readers at once but durable only after a
    /// successful [`FileHandle::sync_data`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Truncates or zero-extends the file to `len` bytes. Durable after `sync_data`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes every write and `set_len` that returned before this call durable. An error
    /// means nothing about those bytes can be assumed, now or later (Linux may drop the
    /// dirty pages and report success on a retry), so callers must not retry and trust.
    fn sync_data(&self) -> io::Result<()>;

    /// Maps the first `len` bytes of the file for writing, if this backend has real
    /// shared mappings; `Ok(None)` otherwise, and [`map_file`] then writes through
    /// [`FileHandle::write_at`]. The file must already be at least `len` bytes long and
    /// must not shrink while the mapping lives.
    fn map_mut(&self, len: u64) -> io::Result<Option<Arc<dyn MappedFile>>> {
        let _ = len;
        Ok(None)
    }
}

/// A writable view of a file's first [`MappedFile::len`] bytes: the log's tail.
///
/// Writes land in the page cache (a real mapping) or in the file's live bytes (the
/// write-through fallback), so a reader of the file, or the same file after a process
/// crash, sees them at once; they become durable only through [`MappedFile::sync`],
/// which is how the crash-image backend keeps modelling a power cut (only synced bytes
/// survive) and the fault backend can fail a sync.
pub trait MappedFile: Send + Sync {
    /// Length of the mapped range.
    fn len(&self) -> u64;

    /// Whether the mapped range is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf` to `offset` (`offset + buf.len() <= len()`). Concurrent calls must
    /// cover disjoint ranges. The bytes of one call are stored after every byte of the
    /// calls this thread made before it, so a crash never keeps a later call's bytes
    /// without an earlier one's (the log stores each frame's checksum last). A real
    /// mapping never fails; the write-through fallback fails as the file's `write_at`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Makes every write to `[offset, offset + len)` that returned before this call
    /// durable (`msync(MS_SYNC)` of a mapping; `sync_data` of the fallback). An error
    /// means as much as a failed [`FileHandle::sync_data`].
    fn sync(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// Writes through the file's own `write_at` and `sync_data`: the mapping of backends
/// that keep files in memory or inject faults.
struct WriteThrough {
    file: Arc<dyn FileHandle>,
    len: u64,
}

impl MappedFile for WriteThrough {
    fn len(&self) -> u64 {
        self.len
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_at(buf, offset)
    }
    fn sync(&self, _offset: u64, _len: u64) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Maps the first `len` bytes of `file` for writing: the backend's own mapping
/// ([`FileHandle::map_mut`]) where it has one, else a view that writes through
/// [`FileHandle::write_at`] and syncs with [`FileHandle::sync_data`].
pub fn map_file(file: &Arc<dyn FileHandle>, len: u64) -> io::Result<Arc<dyn MappedFile>> {
    match file.map_mut(len)? {
        Some(m) => Ok(m),
        None => Ok(Arc::new(WriteThrough {
            file: file.clone(),
            len,
        })),
    }
}

/// The whole content of a file, read-only: a memory map on a real disk, a copy
/// elsewhere. The bytes start at an address aligned to at least 16.
pub enum FileBytes {
    /// A read-only memory map (page aligned).
    Mapped(memmap2::Mmap),
    /// An owned, 16-byte aligned copy.
    Owned(rkyv::util::AlignedVec<16>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v.as_slice(),
        }
    }
}

/// The exclusive lock on a directory, taken by [`Backend::lock`]; dropping it releases
/// the lock.
pub struct DirLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl DirLock {
    /// Wraps whatever keeps the lock held (an open lock file, a flag guard).
    pub fn new(holder: impl Send + Sync + 'static) -> Self {
        DirLock(Box::new(holder))
    }
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirLock")
    }
}

/// Why a directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another open data directory (in this process or another) holds the lock.
    #[error(
        "data directory {dir} is already open {} (one writer per directory; \
         stop it or use another directory)",
        match pid { Some(p) if *p == std::process::id() => format!("in this process (pid {p})"), Some(p) => format!("by process {p}"), None => "by another process or handle (pid unknown)".to_string() }
    )]
    Held {
        /// The directory.
        dir: String,
        /// The holder's process id, when it could be read from the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("data directory {dir}: lock file: {op} failed: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
}

/// An in-process lock flag for the in-memory backends: set while a [`DirLock`] made by
/// [`flag_lock`] lives.
pub(crate) fn flag_lock(
    flag: &Arc<std::sync::atomic::AtomicBool>,
    dir: &str,
) -> Result<DirLock, LockError> {
    use std::sync::atomic::Ordering;
    struct Release(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    if flag.swap(true, Ordering::AcqRel) {
        return Err(LockError::Held {
            dir: dir.to_owned(),
            pid: Some(std::process::id()),
        });
    }
    Ok(DirLock::new(Release(flag.clone())))
}

/// A directory of files. Names are plain file names: no separators, no `..`.
pub trait Backend: Send + Sync {
    /// Takes the directory's exclusive lock without waiting, held until the returned
    /// [`DirLock`] is dropped. Fails with [`LockError::Held`] while another lock on the
    /// same directory lives, whether taken by this process or another.
    fn lock(&self) -> Result<DirLock, LockError>;

    /// Opens `name` as [`OpenMode`] says. A file created here exists durably only after
    /// [`Backend::sync_dir`]. A missing file with [`OpenMode::Existing`] is an error of
    /// kind [`io::ErrorKind::NotFound`].
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;

    /// Renames `from` to `to`, replacing `to` atomically if it exists: a reader sees the
    /// old or the new file, never neither. Durable after [`Backend::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes `name`. Removing a missing file is an error of kind `NotFound`.
    /// Durable after [`Backend::sync_dir`].
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Makes every create, rename and remove that returned before this call durable.
    fn sync_dir(&self) -> io::Result<()>;

    /// The whole content of `name` for reading. The default reads it through
    /// [`Backend::open`]; a real disk maps it instead. The caller must not write the
    /// file while holding the result.
    fn read_all(&self, name: &str) -> io::Result<FileBytes> {
        let file = self.open(name, OpenMode::Existing)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = rkyv::util::AlignedVec::<16>::with_capacity(len);
        buf.resize(len, 0);
        file.read_at(buf.as_mut_slice(), 0)?;
        Ok(FileBytes::Owned(buf))
    }
}

/// Checks that `name` is a plain file name; backends reject anything else.
pub(crate) fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a plain file name: {name:?}"),
        ));
    }
    Ok(())
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn lock(&self) -> Result<DirLock, LockError> {
        (**self).lock()
    }
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        (**self).open(name, mode)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        (**self).remove(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        (**self).list()
    }
    fn sync_dir(&self) -> io::Result<()> {
        (**self).sync_dir()
    }
    fn read_all(&self, name: &str) -> io::Result<FileBytes> {
        (**self).read_all(name)
    }
}
