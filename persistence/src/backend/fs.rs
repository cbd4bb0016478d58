//! The real filesystem: one directory, positioned reads and writes, `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_name, Backend, DirLock, FileBytes, FileHandle, LockError, OpenMode};

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
/// acknowledged in it, away.
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
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        sync_path(parent)?;
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
}

/// Holds the `flock` on the lock file until dropped (closing the file releases it).
struct FsLock {
    _file: File,
}

fn holder_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_suffix('\n')?.parse().ok()
}

impl Backend for FsBackend {
    /// Locks [`LOCK_NAME`] in the directory with `flock(LOCK_EX | LOCK_NB)` and writes
    /// this process's id into it. `flock` locks belong to the open file, so a second
    /// open in the same process is refused like one in another process, and the kernel
    /// releases the lock when the holder exits, however it exits.
    fn lock(&self) -> Result<DirLock, LockError> {
        let path = self.dir.join(LOCK_NAME);
        let dir = self.dir.display().to_string();
        let io = |op, source| LockError::Io {
            dir: dir.clone(),
            op,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", e))?;
        try_flock(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                LockError::Held {
                    dir: dir.clone(),
                    pid: holder_pid(&path),
                }
            } else {
                io("flock", e)
            }
        })?;
        // The pid first, then cut to its length: a reader racing this sees the old pid,
        // a mix that does not parse (reported as unknown), or the new pid.
        let pid = format!("{}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0)
            .and_then(|()| file.set_len(pid.len() as u64))
            .map_err(|e| io("write pid", e))?;
        Ok(DirLock::new(FsLock { _file: file }))
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

/// `flock(LOCK_EX | LOCK_NB)`; a lock held elsewhere is `ErrorKind::WouldBlock`.
#[cfg(unix)]
fn try_flock(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor this `File` owns and keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Without `flock`, the lock is advisory in name only: every open succeeds.
#[cfg(not(unix))]
fn try_flock(_file: &File) -> io::Result<()> {
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
        // An existing directory creates nothing, so syncs nothing.
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
}
