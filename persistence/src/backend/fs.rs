//! The real filesystem: one directory, positioned reads and writes, `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_name, Backend, DirLock, FileBytes, FileHandle, LockError, MappedFile, OpenMode};

/// Name of the lock file [`FsBackend::lock`] locks (it holds the holder's pid).
pub const LOCK_NAME: &str = "lock";

/// A directory on the real filesystem. Unix only (positioned I/O, directory fsync).
#[derive(Debug, Clone)]
pub struct FsBackend {
    dir: PathBuf,
}

#[cfg(test)]
thread_local! {
    /// Directories fsynced by [`sync_path`] on this thread, for tests.
    static SYNCED_DIRS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fsyncs the directory `path` (its entries: names created, renamed or removed).
fn sync_path(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    #[cfg(test)]
    SYNCED_DIRS.with(|d| d.borrow_mut().push(path.to_path_buf()));
    Ok(())
}

/// Creates `dir` and its missing parents, then fsyncs the parent of every directory it
/// created, outermost first: a new directory's name lives in its parent, and until
/// that parent is fsynced a power cut can take the directory, and every file
/// acknowledged in it, away. A directory that exists but holds no manifest yet (made
/// by someone else just before, perhaps never synced) has its parent fsynced too.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    if missing.is_empty() && !dir.join(crate::manifest::MANIFEST_NAME).exists() {
        missing.push(dir.to_path_buf());
    }
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        match sync_path(parent) {
            // A parent this process may write into but not open for reading (mode
            // -wx): nothing more can be done from here; the files inside are still
            // synced as they are made.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            r => r?,
        }
    }
    Ok(())
}

impl FsBackend {
    /// Uses `dir`, creating it (and its parents) if missing. Directories it creates
    /// are fsynced into their parents before it returns.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        create_dir_durably(dir.as_ref())?;
        Ok(FsBackend {
            dir: dir.as_ref().to_path_buf(),
        })
    }

    /// The directory this backend works in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

struct FsFile(File);

impl FileHandle for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    /// Allocates the blocks first (`posix_fallocate`), so a store into the mapping can
    /// never meet a full disk (which would be `SIGBUS`, not an error), then maps the
    /// range shared.
    fn map_mut(&self, len: u64) -> io::Result<Option<Arc<dyn MappedFile>>> {
        allocate(&self.0, len)?;
        let map = memmap2::MmapOptions::new()
            .len(usize::try_from(len).map_err(|_| io::Error::other("mapping too large"))?)
            .map_raw(&self.0)?;
        Ok(Some(Arc::new(FsMap { map, len })))
    }
}

#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    // SAFETY: plain call on a descriptor this `File` owns.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        // Filesystems without fallocate: the file was already extended with set_len.
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

/// A shared, writable mapping of a log segment.
struct FsMap {
    map: memmap2::MmapRaw,
    len: u64,
}

impl MappedFile for FsMap {
    fn len(&self) -> u64 {
        self.len
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| io::Error::other("write past the end of the mapping"))?;
        debug_assert!(end <= self.len);
        // Earlier stores of this thread (a frame's body) before these (its checksum).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: the range is inside the mapping (checked above), the mapping lives as
        // long as `self`, and callers write disjoint ranges (the trait's contract), so no
        // two threads store to the same bytes; nothing in this process reads them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                buf.len(),
            );
        }
        Ok(())
    }
    fn sync(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.saturating_add(len).min(self.len);
        if end <= offset {
            return Ok(());
        }
        self.map
            .flush_range(offset as usize, (end - offset) as usize)
    }
}

/// The lock files this process holds, by device and inode, each with its directory's
/// device and inode. A POSIX record lock (`fcntl`) does not conflict with its own
/// process, and closing *any* descriptor of the file releases it, so an in-process
/// second opener is caught here before it opens the file at all. The directory is
/// recorded too: a lock file removed while held (by hand, by a cleanup job) would
/// otherwise let a second opener in this process create a new one and lock it.
static HELD: std::sync::Mutex<Vec<Held>> = std::sync::Mutex::new(Vec::new());

/// One entry of [`HELD`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Held {
    file: (u64, u64),
    dir: (u64, u64),
}

fn held() -> std::sync::MutexGuard<'static, Vec<Held>> {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(unix)]
fn file_key(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Holds the lock: the record lock lives as long as `file` is open in this process.
struct FsLock {
    file: Option<File>,
    key: Held,
}

impl Drop for FsLock {
    fn drop(&mut self) {
        let mut held = held();
        drop(self.file.take());
        held.retain(|k| *k != self.key);
    }
}

fn holder_pid_from_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_suffix('\n')?.parse().ok()
}

impl Backend for FsBackend {
    /// Takes a POSIX record lock (`fcntl(F_SETLK)`, write, whole file) on
    /// [`LOCK_NAME`] in the directory and writes this process's id into it. The
    /// kernel releases it when the holder exits, however it exits, and, unlike
    /// `flock`, a child forked by another thread (on its way to `exec`) never holds a
    /// copy of it, so a directory closed and reopened is never spuriously busy. A
    /// second lock in the same process is refused from a table of the lock files this
    /// process holds (record locks do not conflict within a process).
    fn lock(&self) -> Result<DirLock, LockError> {
        let path = self.dir.join(LOCK_NAME);
        let dir = self.dir.display().to_string();
        let io = |op, source| LockError::Io {
            dir: dir.clone(),
            op,
            source,
        };
        let mut held = held();
        let dir_key = file_key(&std::fs::metadata(&self.dir).map_err(|e| io("stat directory", e))?);
        // stat, not open: closing a descriptor of a lock file this process holds would
        // release its lock.
        let file_held = std::fs::metadata(&path)
            .is_ok_and(|meta| held.iter().any(|h| h.file == file_key(&meta)));
        if file_held || held.iter().any(|h| h.dir == dir_key) {
            return Err(LockError::Held {
                dir,
                pid: Some(std::process::id()),
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let key = Held {
            file: file_key(&file.metadata().map_err(|e| io("stat", e))?),
            dir: dir_key,
        };
        if held.iter().any(|h| h.file == key.file) {
            // A lock file this process holds, renamed into place between the stat and
            // the open by someone else. Closing this descriptor would release our own
            // lock on it, so it is kept open for the life of the process.
            std::mem::forget(file);
            return Err(LockError::Held {
                dir,
                pid: Some(std::process::id()),
            });
        }
        match try_lock(&file) {
            Ok(()) => {}
            Err(LockAttempt::Held(pid)) => {
                drop(file);
                let pid = pid.or_else(|| holder_pid_from_file(&path));
                return Err(LockError::Held { dir, pid });
            }
            Err(LockAttempt::Io(e)) => return Err(io("fcntl(F_SETLK)", e)),
        }
        // The pid first, then cut to its length: a reader racing this sees the old pid,
        // a mix that does not parse (reported as unknown), or the new pid.
        let pid = format!("{}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0)
            .and_then(|()| file.set_len(pid.len() as u64))
            .map_err(|e| io("write pid", e))?;
        held.push(key);
        Ok(DirLock::new(FsLock {
            file: Some(file),
            key,
        }))
    }
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let path = self.path(name)?;
        let file = match mode {
            OpenMode::Existing => OpenOptions::new().read(true).write(true).open(path)?,
            OpenMode::CreateTruncate => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?,
        };
        Ok(Arc::new(FsFile(file)))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from)?, self.path(to)?)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name)?)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }
    fn sync_dir(&self) -> io::Result<()> {
        sync_path(&self.dir)
    }
    fn read_all(&self, name: &str) -> io::Result<FileBytes> {
        let file = File::open(self.path(name)?)?;
        if file.metadata()?.len() == 0 {
            // mmap of an empty file fails on Linux; an empty copy says the same.
            return Ok(FileBytes::Owned(rkyv::util::AlignedVec::new()));
        }
        // SAFETY: the crate holds maps only while recovering or checking, when nothing
        // in this process writes the file (a torn tail is cut only after its bytes were
        // last read), and the trait tells other callers not to write a file while
        // holding its map. Another process truncating the file could still fault us;
        // that is the documented limit of every mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(FileBytes::Mapped(map))
    }
}

impl FsBackend {
    /// Who holds the directory's lock, without taking it: `Some(LockError::Held)`
    /// naming the holder if a process (this one included) holds it, `None` if no one
    /// does or there is no lock file. Unlike [`Backend::lock`], it creates and writes
    /// nothing and never holds the lock, so a read-only look (`larder-check` without
    /// `--fix`) cannot make an open starting at that moment fail as busy.
    pub fn lock_holder(&self) -> Option<LockError> {
        let path = self.dir.join(LOCK_NAME);
        let dir = self.dir.display().to_string();
        // Held across the probe: a descriptor of a lock file this process holds must
        // not be opened and closed (that releases the lock), and the table says which.
        let held = held();
        let ours = |meta: &std::fs::Metadata| held.iter().any(|h| h.file == file_key(meta));
        let dir_ours =
            std::fs::metadata(&self.dir).is_ok_and(|m| held.iter().any(|h| h.dir == file_key(&m)));
        if dir_ours || std::fs::metadata(&path).is_ok_and(|m| ours(&m)) {
            return Some(LockError::Held {
                dir,
                pid: Some(std::process::id()),
            });
        }
        let file = File::open(&path).ok()?;
        if file.metadata().is_ok_and(|m| ours(&m)) {
            // Renamed into place meanwhile: ours after all; keep the descriptor open.
            std::mem::forget(file);
            return Some(LockError::Held {
                dir,
                pid: Some(std::process::id()),
            });
        }
        probe_lock(&file).map(|pid| LockError::Held {
            dir,
            pid: pid.or_else(|| holder_pid_from_file(&path)),
        })
    }
}

/// `fcntl(F_GETLK)` for a write lock on the whole file: `Some(pid)` if another process
/// holds a conflicting lock (its pid when the kernel says), `None` if none does.
#[cfg(unix)]
fn probe_lock(file: &File) -> Option<Option<u32>> {
    use std::os::fd::AsRawFd;
    // SAFETY: `libc::flock` is a plain C struct; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0;
    // SAFETY: fcntl on a descriptor this `File` owns, with a valid `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    let unlocked = libc::F_UNLCK as libc::c_short;
    (rc == 0 && fl.l_type != unlocked).then_some((fl.l_pid > 0).then_some(fl.l_pid as u32))
}

/// Without POSIX record locks only the in-process table says who holds a directory.
#[cfg(not(unix))]
fn probe_lock(_file: &File) -> Option<Option<u32>> {
    None
}

enum LockAttempt {
    /// Another process holds it (its pid, when the kernel says).
    Held(Option<u32>),
    Io(io::Error),
}

/// `fcntl(F_SETLK)` for a write lock on the whole file, without waiting.
#[cfg(unix)]
fn try_lock(file: &File) -> Result<(), LockAttempt> {
    use std::os::fd::AsRawFd;
    // SAFETY: `libc::flock` (fcntl's lock description) is a plain C struct; all-zero
    // is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0; // to the end, however the file grows
    loop {
        // SAFETY: fcntl on a descriptor this `File` owns, with a valid `flock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EAGAIN || code == libc::EACCES => {
                let mut probe = fl;
                // SAFETY: as above; F_GETLK fills `probe` with the conflicting lock.
                let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut probe) };
                let unlocked = libc::F_UNLCK as libc::c_short;
                let pid = (rc == 0 && probe.l_type != unlocked && probe.l_pid > 0)
                    .then_some(probe.l_pid as u32);
                return Err(LockAttempt::Held(pid));
            }
            _ => return Err(LockAttempt::Io(e)),
        }
    }
}

/// Without POSIX record locks only the in-process table guards a directory.
#[cfg(not(unix))]
fn try_lock(_file: &File) -> Result<(), LockAttempt> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_directories_are_fsynced_into_their_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a").join("b").join("data");
        SYNCED_DIRS.with(|d| d.borrow_mut().clear());
        FsBackend::new(&deep).unwrap();
        let synced = SYNCED_DIRS.with(|d| d.borrow().clone());
        let want = vec![
            tmp.path().to_path_buf(),
            tmp.path().join("a"),
            tmp.path().join("a").join("b"),
        ];
        assert_eq!(
            synced, want,
            "each created directory's parent, outermost first"
        );
        // An existing directory without data yet: its parent again (it may have been
        // made by someone else and never synced).
        SYNCED_DIRS.with(|d| d.borrow_mut().clear());
        FsBackend::new(&deep).unwrap();
        let synced = SYNCED_DIRS.with(|d| d.borrow().clone());
        assert_eq!(synced, vec![tmp.path().join("a").join("b")]);
        // A directory holding data: nothing to sync.
        std::fs::write(deep.join("manifest"), b"").unwrap();
        SYNCED_DIRS.with(|d| d.borrow_mut().clear());
        FsBackend::new(&deep).unwrap();
        assert!(SYNCED_DIRS.with(|d| d.borrow().is_empty()));
    }

    #[test]
    fn a_second_lock_names_the_holder_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let a = FsBackend::new(tmp.path()).unwrap();
        let b = FsBackend::new(tmp.path()).unwrap();
        let held = a.lock().unwrap();
        match b.lock() {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(held);
        b.lock().unwrap();
    }

    #[test]
    fn looking_at_the_lock_neither_takes_nor_releases_it() {
        let tmp = tempfile::tempdir().unwrap();
        let a = FsBackend::new(tmp.path()).unwrap();
        assert!(a.lock_holder().is_none());
        let held = a.lock().unwrap();
        match a.lock_holder() {
            Some(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("holder: {other:?}"),
        }
        // Still held: the look opened no descriptor of the file whose close would
        // release the record lock.
        assert!(matches!(a.lock(), Err(LockError::Held { .. })));
        drop(held);
        assert!(a.lock_holder().is_none());
        a.lock().unwrap();
    }
}
