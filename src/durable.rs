//! Durability (cargo feature `persistence`): a cache whose writes go to an append-only
//! file and survive restarts.
//!
//! The files are `larder-persistence`'s: a manifest naming one base snapshot and the
//! incr log files after it (Redis 7's multi-part AOF). A rewrite (`rewrite_aof`, `save`,
//! `bgsave`, or the automatic rules) switches writes to a new incr file, streams a fuzzy
//! snapshot of the keyspace into a new base while writes go on, and swaps the manifest:
//! the new base plus the log from its start sequence replays to the exact state because
//! records are idempotent (absolute times, whole values).

use crate::builder::CacheBuilder;
use crate::cache::Cache;
use crate::error::Error;
use crate::info::PersistenceInfo;
use crate::journal::{Journal, LogOp, LogRecord, RewriteSink};
use crate::weigh::Weigher;
use larder_persistence::{
    backend::FsBackend, Backend, DataDir, FsyncPolicy, OpStatus, Options, Record, Rewrite,
};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use larder_persistence::FsyncPolicy as Fsync;

/// How a key or value type becomes bytes in the log and snapshots, and back.
///
/// Implemented for every type that rkyv can archive, check and deserialize (derive
/// `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize`); K and V need it only for a
/// durable cache.
///
/// ```
/// use larder::Codec;
///
/// #[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// struct Session {
///     user: String,
///     scopes: Vec<String>,
/// }
///
/// let s = Session { user: "alice".into(), scopes: vec!["read".into()] };
/// let bytes = s.encode().unwrap();
/// assert_eq!(Session::decode(&bytes).unwrap(), s);
/// // Bytes that are not a `Session` are an error, never a panic.
/// assert!(Session::decode(&bytes[..bytes.len() / 2]).is_err());
/// ```
///
/// A `Cache<String, Session>` opened with
/// [`durability`](crate::CacheBuilder::durability) then logs and recovers sessions.
pub trait Codec: Sized {
    /// The bytes of `self`.
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
    /// The bytes of `self` into `buf` (cleared first), reusing its allocation.
    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        *buf = self.encode()?;
        Ok(())
    }
    /// Decodes bytes written by `encode`, checking them: malformed bytes are an error,
    /// never a panic. A codec need not detect every corruption (an rkyv prefix can be
    /// another valid archive); the log and snapshot checksums do that before bytes
    /// reach it.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

/// A key or value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

impl<T> Codec for T
where
    T: rkyv::Archive
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                Vec<u8>,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        // Straight into the `Vec` the record keeps: one allocation, no copy. Alignment
        // does not matter here; `decode` realigns.
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, Vec::new())
            .map_err(|e| CodecError(e.to_string()))
    }

    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut out = std::mem::take(buf);
        out.clear();
        *buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, out)
            .map_err(|e| CodecError(e.to_string()))?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        // rkyv reads in place and needs the archive aligned; bytes inside a log record or
        // a snapshot section may not be. Aligned bytes are read where they are; others
        // are copied into this thread's scratch buffer (no allocation once it has grown).
        thread_local! {
            static SCRATCH: std::cell::RefCell<rkyv::util::AlignedVec<16>> =
                std::cell::RefCell::new(rkyv::util::AlignedVec::new());
        }
        let decode = |b: &[u8]| {
            rkyv::from_bytes::<T, rkyv::rancor::Error>(b).map_err(|e| CodecError(e.to_string()))
        };
        if (bytes.as_ptr() as usize) % 16 == 0 {
            return decode(bytes);
        }
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                scratch.extend_from_slice(bytes);
                decode(&scratch)
            }
            // Re-entered (a Deserialize impl decoding a nested Codec): use a fresh buffer.
            Err(_) => {
                let mut fresh = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
                fresh.extend_from_slice(bytes);
                decode(&fresh)
            }
        })
    }
}

/// Where and how a cache persists itself.
///
/// ```no_run
/// use larder::{Cache, Durability, Fsync};
/// let cache: Cache<String, String> = Cache::builder()
///     .durability(Durability::new("/var/lib/myapp/cache").fsync(Fsync::Always))
///     .open()
///     .expect("open the data directory");
/// ```
#[derive(Debug, Clone)]
pub struct Durability {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) auto_rewrite_percentage: u64,
    pub(crate) auto_rewrite_min_size: u64,
    pub(crate) save_rules: Vec<(Duration, u64)>,
}

impl Durability {
    /// Persist into directory `dir` (created if missing) with `appendfsync everysec`,
    /// `auto-aof-rewrite-percentage 100`, `auto-aof-rewrite-min-size 64mb` and no save
    /// rules.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Durability {
            dir: dir.into(),
            options: Options::default(),
            auto_rewrite_percentage: 100,
            auto_rewrite_min_size: 64 << 20,
            save_rules: Vec::new(),
        }
    }

    /// `appendfsync`: `Always` (a write returns after its record is fsynced; concurrent
    /// writers share fsyncs), `EverySec` (default; a power cut loses at most about the
    /// last second), or `No` (the OS decides).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.options.fsync = policy;
        self
    }

    /// `aof-load-truncated`: whether a torn tail of the last log file is cut on open
    /// (default, reported in `info()`) or refuses to open.
    pub fn aof_load_truncated(mut self, on: bool) -> Self {
        self.options.aof_load_truncated = on;
        self
    }

    /// `auto-aof-rewrite-percentage` and `auto-aof-rewrite-min-size`: rewrite when the
    /// files have grown by `percentage` since the last rewrite and are at least
    /// `min_size` bytes. A percentage of 0 turns automatic rewrites off.
    pub fn auto_rewrite(mut self, percentage: u64, min_size: u64) -> Self {
        self.auto_rewrite_percentage = percentage;
        self.auto_rewrite_min_size = min_size;
        self
    }

    /// A save rule like Redis's `save 900 1`: rewrite (snapshot) when at least
    /// `changes` writes happened and `after` has passed since the last snapshot.
    pub fn save_rule(mut self, after: Duration, changes: u64) -> Self {
        self.save_rules.push((after, changes));
        self
    }
}

/// A builder with durability configured: finish it with [`open`](Self::open).
#[must_use]
pub struct DurableBuilder<K, V, W> {
    builder: CacheBuilder<K, V, W>,
    durability: Durability,
    backend: Option<Arc<dyn Backend>>,
}

impl<K, V, W> CacheBuilder<K, V, W> {
    /// Makes the cache durable: [`DurableBuilder::open`] recovers `durability.dir` and
    /// logs every write there.
    #[cfg_attr(docsrs, doc(cfg(feature = "persistence")))]
    pub fn durability(self, durability: Durability) -> DurableBuilder<K, V, W> {
        DurableBuilder {
            builder: self,
            durability,
            backend: None,
        }
    }
}

impl<K, V, W> DurableBuilder<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static + Codec,
    V: Clone + Send + Sync + 'static + Codec,
    W: Weigher<K, V>,
{
    /// Stores the files through `backend` instead of the directory (tests inject crash
    /// images and I/O faults this way).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Recovers the data directory into a new cache (base snapshot, then every logged
    /// record), then logs every write. A torn tail is cut and reported in
    /// `info().persistence`; corruption elsewhere refuses with an error naming the file,
    /// offset and sequence.
    pub fn open(self) -> Result<Cache<K, V, W>, OpenError> {
        let (cache, journal) = self.open_parts(&mut |_| {})?;
        cache.inner.set_journal(journal);
        Ok(cache)
    }

    /// Recovers the cache and returns it with its journal not yet attached; `observe`
    /// sees every recovered record in log order before it is applied.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn open_parts(
        self,
        observe: &mut dyn FnMut(&Record),
    ) -> Result<Recovered<K, V, W>, OpenError> {
        let d = self.durability;
        let backend: Arc<dyn Backend> = match self.backend {
            Some(b) => b,
            None => Arc::new(FsBackend::new(&d.dir).map_err(|e| OpenError::Dir {
                dir: d.dir.clone(),
                reason: e.to_string(),
            })?),
        };
        let cache = self.builder.build();
        let failure: Mutex<Option<OpenError>> = Mutex::new(None);
        let fail = |e: OpenError| {
            failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        };
        let sink = |section: larder_persistence::Section<'_>| {
            // Grow the tables once for the whole section instead of doubling as it loads.
            cache.inner.reserve(section.len());
            for e in section.iter() {
                let kv = K::decode(e.key).and_then(|k| Ok((k, V::decode(e.value)?)));
                match kv {
                    Ok((k, v)) => {
                        let r = cache.insert_exact(k, v, e.expire_at_ms);
                        if let Err(err) = r {
                            fail(OpenError::Load(format!(
                                "base section {}: {err}",
                                section.index()
                            )));
                        }
                    }
                    Err(err) => fail(OpenError::Decode(format!(
                        "base section {}: {err}",
                        section.index()
                    ))),
                }
            }
        };
        let mut on_record = |seq: u64, r: Record| {
            observe(&r);
            if let Err(e) = apply(&cache, r) {
                fail(OpenError::Decode(format!("record {seq}: {e}")));
            }
        };
        let dir = DataDir::open(backend, d.options.clone(), &sink, &mut on_record)
            .map_err(|e| OpenError::Files(e.to_string()))?;
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let now = cache.inner.clock.now_ms();
        let base_size = dir.status().aof_current_size;
        let journal = AofJournal {
            dir: Arc::new(dir),
            auto_rewrite_percentage: d.auto_rewrite_percentage,
            auto_rewrite_min_size: d.auto_rewrite_min_size,
            save_rules: d.save_rules,
            changes: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(RewriteState {
                last_save_ms: now,
                base_size,
                failures: 0,
                retry_at_ms: 0,
            }),
        };
        Ok((cache, Box::new(journal)))
    }
}

/// A recovered cache and the journal to attach to it.
pub(crate) type Recovered<K, V, W> = (Cache<K, V, W>, Box<dyn Journal<K, V>>);

/// Replays one record into the cache (nothing is logged: the journal is not attached
/// while loading).
pub(crate) fn apply<K, V, W>(cache: &Cache<K, V, W>, r: Record) -> Result<(), String>
where
    K: Hash + Eq + Clone + Send + Sync + 'static + Codec,
    V: Clone + Send + Sync + 'static + Codec,
    W: Weigher<K, V>,
{
    let key = |b: &[u8]| K::decode(b).map_err(|e| e.to_string());
    let done = match r {
        Record::Set {
            key: k,
            value,
            expire_at_ms,
        } => {
            let (k, v) = (key(&k)?, V::decode(&value).map_err(|e| e.to_string())?);
            cache.insert_exact(k, v, expire_at_ms)
        }
        Record::Del { key: k } => cache.remove(&key(&k)?).map(|_| ()),
        Record::Expire { key: k, at_ms } => cache.expire_at(&key(&k)?, at_ms).map(|_| ()),
        Record::Persist { key: k } => cache.persist(&key(&k)?).map(|_| ()),
        Record::Flush => cache.clear(),
        // The cluster layer's replication position; not a write.
        Record::Meta(_) => Ok(()),
        Record::Multi(records) => {
            for r in records {
                apply(cache, r)?;
            }
            Ok(())
        }
    };
    done.map_err(|e| e.to_string())
}

/// Why a durable cache could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created or opened.
    #[error("data directory {dir:?}: {reason}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The files are damaged or inconsistent (the message names file, offset and
    /// sequence), or could not be read.
    #[error("{0}")]
    Files(String),
    /// A logged key or value does not decode as this cache's types.
    #[error("decoding the data: {0}")]
    Decode(String),
    /// A loaded entry was refused (for example larger than the memory bound).
    #[error("loading the data: {0}")]
    Load(String),
}

struct RewriteState {
    last_save_ms: u64,
    /// Size of the files right after the last rewrite (or at open).
    base_size: u64,
    failures: u32,
    retry_at_ms: u64,
}

/// The journal of a durable cache: the data directory plus the rewrite rules.
struct AofJournal {
    dir: Arc<DataDir>,
    auto_rewrite_percentage: u64,
    auto_rewrite_min_size: u64,
    save_rules: Vec<(Duration, u64)>,
    /// Writes since the last snapshot (`rdb_changes_since_last_save`).
    changes: Arc<AtomicU64>,
    state: Mutex<RewriteState>,
}

/// Encodes one operation as a log record.
pub(crate) fn record_of<K: Codec, V: Codec>(op: LogOp<'_, K, V>) -> Result<Record, Error> {
    Ok(match op {
        LogOp::Set {
            key,
            value,
            expire_at,
        } => Record::Set {
            key: encode(key)?,
            value: encode(value)?,
            expire_at_ms: expire_at,
        },
        LogOp::Del(key) => Record::Del { key: encode(key)? },
        LogOp::Expire(key, at) => Record::Expire {
            key: encode(key)?,
            at_ms: at,
        },
        LogOp::Persist(key) => Record::Persist { key: encode(key)? },
        LogOp::Flush => Record::Flush,
    })
}

fn persistence_error(e: impl std::fmt::Display) -> Error {
    Error::Persistence(e.to_string())
}

fn encode<T: Codec>(t: &T) -> Result<Vec<u8>, Error> {
    t.encode().map_err(|e| Error::Persistence(e.to_string()))
}

impl<K: Codec + 'static, V: Codec + 'static> Journal<K, V> for AofJournal {
    fn check(&self) -> Result<(), Error> {
        let st = self.dir.status();
        if st.poisoned {
            let why = match st.last_write {
                OpStatus::Err(e) => e,
                _ => "an earlier write failed".into(),
            };
            return Err(Error::Persistence(why));
        }
        Ok(())
    }

    fn record(&self, op: LogOp<'_, K, V>) -> Result<LogRecord, Error> {
        record_of(op)
    }

    fn write(&self, mut records: Vec<LogRecord>, atomic: bool) -> Result<u64, Error> {
        if records.is_empty() {
            return Ok(0);
        }
        if atomic && records.len() > 1 {
            records = vec![Record::Multi(records)];
        }
        let n = records.len() as u64;
        let seqs = self.dir.write(&records).map_err(persistence_error)?;
        self.changes.fetch_add(n, Ordering::Relaxed);
        Ok(*seqs.end())
    }

    fn wait(&self, seq: u64) -> Result<(), Error> {
        self.dir.wait_durable(seq).map_err(persistence_error)
    }

    fn info(&self) -> Option<PersistenceInfo> {
        let st = self.dir.status();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let status = |s: &OpStatus| match s {
            OpStatus::None | OpStatus::Ok => "ok".to_string(),
            OpStatus::Err(e) => format!("err: {e}"),
        };
        Some(PersistenceInfo {
            aof_enabled: true,
            aof_fsync: match st.fsync {
                FsyncPolicy::Always => "always",
                FsyncPolicy::EverySec => "everysec",
                FsyncPolicy::No => "no",
            },
            aof_rewrite_in_progress: st.rewrite_in_progress,
            aof_last_rewrite_status: status(&st.last_rewrite),
            aof_last_write_status: status(&st.last_write),
            aof_current_size: st.aof_current_size,
            aof_base_size: st.aof_base_size,
            aof_fsyncs: st.fsyncs,
            aof_last_seq: st.next_seq.saturating_sub(1),
            aof_durable_seq: st.durable_seq,
            rdb_last_save_time: state.last_save_ms / 1000,
            rdb_changes_since_last_save: self.changes.load(Ordering::Relaxed),
            loading_base_entries: st.loading.base_entries,
            loading_records: st.loading.records,
            loading_bytes: st.loading.bytes,
            loading_time_ms: st.loading.duration.as_millis() as u64,
            loading_truncated_bytes: st.loading.truncated.as_ref().map_or(0, |t| t.bytes),
            loading_truncated_file: st.loading.truncated.as_ref().map(|t| t.file.clone()),
        })
    }

    fn begin_rewrite(&self) -> Result<Box<dyn RewriteSink<K, V>>, Error> {
        let rw = self
            .dir
            .begin_rewrite()
            .map_err(|e| Error::Rewrite(e.to_string()))?;
        Ok(Box::new(AofRewrite {
            rewrite: rw,
            dir: Arc::clone(&self.dir),
            changes: Arc::clone(&self.changes),
            changes_at_begin: self.changes.load(Ordering::Relaxed),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            _types: std::marker::PhantomData,
        }))
    }

    fn rewrite_due(&self, now_ms: u64) -> bool {
        let st = self.dir.status();
        if st.rewrite_in_progress {
            return false;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms < state.retry_at_ms {
            return false;
        }
        if state.failures > 0 {
            return true;
        }
        let grown = self.auto_rewrite_percentage > 0
            && st.aof_current_size >= self.auto_rewrite_min_size
            && st.aof_current_size
                >= state.base_size + state.base_size * self.auto_rewrite_percentage / 100;
        let changes = self.changes.load(Ordering::Relaxed);
        let saved_ago = now_ms.saturating_sub(state.last_save_ms);
        let rule = self
            .save_rules
            .iter()
            .any(|(after, n)| changes >= *n && saved_ago >= after.as_millis() as u64);
        grown || rule
    }

    fn rewrite_done(&self, now_ms: u64, ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            state.failures = 0;
            state.retry_at_ms = 0;
            state.last_save_ms = now_ms;
            state.base_size = self.dir.status().aof_current_size;
        } else {
            // Redis retries a failed rewrite later; back off 1 s, 2 s, ... up to 60 s.
            state.failures += 1;
            let backoff = 1000u64 << state.failures.min(6);
            state.retry_at_ms = now_ms + backoff.min(60_000);
        }
    }

    fn sync(&self) -> Result<(), Error> {
        self.dir.sync().map_err(persistence_error)
    }
}

/// A rewrite in progress, fed by the cache.
struct AofRewrite<K, V> {
    rewrite: Rewrite,
    dir: Arc<DataDir>,
    changes: Arc<AtomicU64>,
    /// Changes counted when the rewrite began: the snapshot covers those.
    changes_at_begin: u64,
    /// Scratch for encoding, reused for every entry.
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    _types: std::marker::PhantomData<fn(&K, &V)>,
}

impl<K: Codec, V: Codec> RewriteSink<K, V> for AofRewrite<K, V> {
    fn push(&mut self, key: &K, value: &V, expire_at: Option<u64>) -> Result<(), Error> {
        let codec = |e: CodecError| Error::Rewrite(e.to_string());
        key.encode_into(&mut self.key_buf).map_err(codec)?;
        value.encode_into(&mut self.value_buf).map_err(codec)?;
        self.rewrite
            .push(&self.key_buf, &self.value_buf, expire_at)
            .map_err(|e| Error::Rewrite(e.to_string()))
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        let (changes, covered) = (Arc::clone(&self.changes), self.changes_at_begin);
        self.dir
            .finish_rewrite(self.rewrite)
            .map(|_| {
                changes.fetch_sub(covered, Ordering::Relaxed);
            })
            .map_err(|e| Error::Rewrite(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::Codec;

    /// Copies `bytes` to an offset of `shift` bytes from a 16-aligned start.
    fn at_offset(bytes: &[u8], shift: usize) -> (rkyv::util::AlignedVec<16>, usize) {
        let mut buf = rkyv::util::AlignedVec::<16>::new();
        buf.extend_from_slice(&vec![0u8; shift]);
        buf.extend_from_slice(bytes);
        (buf, shift)
    }

    #[test]
    fn decodes_aligned_and_unaligned_bytes_alike() {
        let values = [
            String::new(),
            "k".into(),
            "a longer key than inline".repeat(4),
        ];
        for v in values {
            let enc = v.encode().unwrap();
            for shift in [0, 1, 3, 8, 15, 16] {
                let (buf, at) = at_offset(&enc, shift);
                assert_eq!(String::decode(&buf[at..]).unwrap(), v, "shift {shift}");
            }
            let mut reused = vec![9u8; 100];
            v.encode_into(&mut reused).unwrap();
            assert_eq!(reused, enc, "encode_into clears and refills");
        }
        assert_eq!(
            <[u8; 16]>::decode(&[7u8; 16].encode().unwrap()).unwrap(),
            [7u8; 16]
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let original = "some key that is stored out of line".to_string();
        let enc = original.encode().unwrap();
        // rkyv archives carry no length or checksum, so a prefix can be another valid
        // archive (the frames' CRC is what rejects damaged log bytes); it must never
        // read back as the original, nor panic.
        for cut in 0..enc.len() {
            assert_ne!(
                String::decode(&enc[..cut]).ok(),
                Some(original.clone()),
                "cut {cut}"
            );
        }
        // Seeded garbage and single bit flips: every outcome is Ok or Err, never a panic.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..64usize {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = String::decode(&junk);
            let _ = Vec::<u8>::decode(&junk);
            let _ = u64::decode(&junk);
        }
        for bit in 0..enc.len() * 8 {
            let mut flipped = enc.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = String::decode(&flipped);
        }
    }
}
