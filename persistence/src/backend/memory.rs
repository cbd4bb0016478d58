//! An in-memory directory: every write is immediately "durable"; nothing survives drop.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{check_name, flag_lock, Backend, DirLock, FileHandle, LockError, OpenMode};

/// A directory held in memory. Cloning shares the same directory (and its lock).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    files: Arc<Mutex<HashMap<String, Arc<MemFile>>>>,
    locked: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryBackend {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> MutexGuard<'_, HashMap<String, Arc<MemFile>>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(crate) struct MemFile {
    pub(crate) bytes: Mutex<Sparse>,
}

impl MemFile {
    pub(crate) fn bytes(&self) -> MutexGuard<'_, Sparse> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A file's bytes as a sparse file keeps them: `data`, then zeros up to `len` that
/// take no memory (a preallocated log segment is mostly such zeros).
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct Sparse {
    data: Vec<u8>,
    len: u64,
}

impl Sparse {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn byte(&self, i: u64) -> u8 {
        self.data.get(i as usize).copied().unwrap_or(0)
    }

    /// Leading bytes equal in `self` and `other`, up to the shorter length.
    pub(crate) fn common_prefix(&self, other: &Sparse) -> u64 {
        let n = self.len.min(other.len);
        (0..n).find(|&i| self.byte(i) != other.byte(i)).unwrap_or(n)
    }

    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.len => {
                let have = self.data.len() as u64;
                let split = end.min(have).max(offset);
                let n = (split - offset) as usize;
                if n > 0 {
                    buf[..n].copy_from_slice(&self.data[offset as usize..split as usize]);
                }
                buf[n..].iter_mut().for_each(|b| *b = 0);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            )),
        }
    }

    pub(crate) fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start + buf.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(buf);
        self.len = self.len.max(end as u64);
        Ok(())
    }

    pub(crate) fn set_len(&mut self, len: u64) -> io::Result<()> {
        usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        if (self.data.len() as u64) > len {
            self.data.truncate(len as usize);
        }
        self.len = len;
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.len = 0;
    }
}

impl FileHandle for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.bytes().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.bytes().write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes().set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file: {name}"))
}

impl Backend for MemoryBackend {
    fn lock(&self) -> Result<DirLock, LockError> {
        flag_lock(&self.locked, "(memory)")
    }
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        check_name(name)?;
        let mut files = self.files();
        match mode {
            OpenMode::Existing => match files.get(name) {
                Some(f) => Ok(f.clone()),
                None => Err(not_found(name)),
            },
            OpenMode::CreateTruncate => {
                let f = files.entry(name.to_owned()).or_default().clone();
                f.bytes().clear();
                Ok(f)
            }
        }
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut files = self.files();
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_owned(), f);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.files()
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files().keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}
