//! The real filesystem: one directory, positioned reads and writes, `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_name, Backend, FileBytes, FileHandle, OpenMode};

/// A directory on the real filesystem. Unix only (positioned I/O, directory fsync).
#[derive(Debug, Clone)]
pub struct FsBackend {
    dir: PathBuf,
}

impl FsBackend {
    /// Uses `dir`, creating it (and its parents) if missing.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(dir.as_ref())?;
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

impl Backend for FsBackend {
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
        File::open(&self.dir)?.sync_all()
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
