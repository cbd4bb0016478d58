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
    pub(crate) bytes: Mutex<Vec<u8>>,
}

impl MemFile {
    pub(crate) fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn read_at(bytes: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    match start.checked_add(buf.len()) {
        Some(end) if end <= bytes.len() => {
            buf.copy_from_slice(&bytes[start..end]);
            Ok(())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read past end of file",
        )),
    }
}

pub(crate) fn write_at(bytes: &mut Vec<u8>, buf: &[u8], offset: u64) -> io::Result<()> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = start + buf.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(buf);
    Ok(())
}

impl FileHandle for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_at(&self.bytes(), buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        write_at(&mut self.bytes(), buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        self.bytes().resize(len, 0);
        Ok(())
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
