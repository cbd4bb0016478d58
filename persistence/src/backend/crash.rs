//! A directory that remembers what a power cut would leave.
//!
//! Every file (inode) has "live" bytes, what readers see now, and "durable" bytes, the
//! content as of its last `sync_data`. The directory has a live name table and a
//! durable one, copied on `sync_dir`. [`CrashImageBackend::crash`] builds the directory
//! a power cut at that instant would leave: durable names pointing at durable bytes.
//! This is the strictest reading of POSIX: a file created but never covered by a
//! directory sync is gone even if its data was synced, and a synced file's unsynced
//! writes vanish entirely (no partial pages), which is what the recovery code must
//! survive anyway.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::memory::{not_found, Sparse};
use super::{check_name, flag_lock, Backend, DirLock, FileHandle, LockError, OpenMode};

#[derive(Default, Clone)]
struct Inode {
    live: Sparse,
    durable: Sparse,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    live_dir: HashMap<String, u64>,
    durable_dir: HashMap<String, u64>,
    next_inode: u64,
}

/// An in-memory directory with separate live and durable bytes; see the module docs.
/// Cloning shares the same directory (and its lock; a crash image starts unlocked, as
/// a power cut releases every lock).
#[derive(Clone, Default)]
pub struct CrashImageBackend {
    state: Arc<Mutex<State>>,
    locked: Arc<std::sync::atomic::AtomicBool>,
}

impl CrashImageBackend {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory a power cut right now would leave, as a new, independent backend
    /// whose live and durable bytes are both that image. Atomic with respect to every
    /// other operation on this backend.
    pub fn crash(&self) -> CrashImageBackend {
        let st = self.state();
        let mut image = State {
            next_inode: st.next_inode,
            ..State::default()
        };
        for (name, ino) in &st.durable_dir {
            let bytes = st
                .inodes
                .get(ino)
                .map(|i| i.durable.clone())
                .unwrap_or_default();
            image.inodes.insert(
                *ino,
                Inode {
                    live: bytes.clone(),
                    durable: bytes,
                },
            );
            image.live_dir.insert(name.clone(), *ino);
            image.durable_dir.insert(name.clone(), *ino);
        }
        CrashImageBackend {
            state: Arc::new(Mutex::new(image)),
            locked: Arc::default(),
        }
    }

    /// Bytes of `name` written but not yet durable (live length minus durable prefix
    /// that matches), for tests that want to see what a crash would drop.
    pub fn unsynced_bytes(&self, name: &str) -> Option<u64> {
        let st = self.state();
        let ino = st.inodes.get(st.live_dir.get(name)?)?;
        let same = ino.live.common_prefix(&ino.durable);
        Some(ino.live.len() - same)
    }
}

struct CrashFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl CrashFile {
    fn with<R>(&self, f: impl FnOnce(&mut Inode) -> io::Result<R>) -> io::Result<R> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // An inode stays in the table while any name or handle may refer to it; files
        // are small in tests so nothing is ever reclaimed.
        let inode = st.inodes.entry(self.ino).or_default();
        f(inode)
    }
}

impl FileHandle for CrashFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|i| Ok(i.live.len()))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|i| i.live.read_at(buf, offset))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|i| i.live.write_at(buf, offset))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|i| i.live.set_len(len))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.with(|i| {
            i.durable = i.live.clone();
            Ok(())
        })
    }
}

impl Backend for CrashImageBackend {
    fn lock(&self) -> Result<DirLock, LockError> {
        flag_lock(&self.locked, "(crash image)")
    }
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        check_name(name)?;
        let mut st = self.state();
        let ino = match (mode, st.live_dir.get(name).copied()) {
            (OpenMode::Existing, Some(ino)) => ino,
            (OpenMode::Existing, None) => return Err(not_found(name)),
            (OpenMode::CreateTruncate, Some(ino)) => {
                if let Some(i) = st.inodes.get_mut(&ino) {
                    i.live.clear();
                }
                ino
            }
            (OpenMode::CreateTruncate, None) => {
                let ino = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(ino, Inode::default());
                st.live_dir.insert(name.to_owned(), ino);
                ino
            }
        };
        Ok(Arc::new(CrashFile {
            state: self.state.clone(),
            ino,
        }))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut st = self.state();
        let ino = st.live_dir.remove(from).ok_or_else(|| not_found(from))?;
        st.live_dir.insert(to.to_owned(), ino);
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.state()
            .live_dir
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state().live_dir.keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state();
        st.durable_dir = st.live_dir.clone();
        Ok(())
    }
}
