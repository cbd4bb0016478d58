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
use crate::journal::{Journal, LogOp, LogRecord, RewritePart, RewriteSink};
use crate::weigh::Weigher;
use larder_persistence::{
    backend::FsBackend, Backend, DataDir, FsyncPolicy, OpStatus, Options, Record, RecordAt,
    Rewrite, SchemaMismatch,
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
///
/// A type that is not rkyv's (say a serde type) implements it by hand, with any
/// self-describing or fixed format; `decode` must return an error, never panic, on
/// bytes it did not write:
///
/// ```ignore
/// // With serde and serde_json (or bincode, postcard, ...) in your Cargo.toml:
/// #[derive(serde::Serialize, serde::Deserialize, Clone)]
/// struct Profile { name: String, visits: u64 }
///
/// impl larder::Codec for Profile {
///     fn encode(&self) -> Result<Vec<u8>, larder::CodecError> {
///         serde_json::to_vec(self).map_err(|e| larder::CodecError(e.to_string()))
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, larder::CodecError> {
///         serde_json::from_slice(bytes).map_err(|e| larder::CodecError(e.to_string()))
///     }
///     // A stable name for the schema tag (the default is `std::any::type_name`).
///     fn type_tag() -> String {
///         "Profile".into()
///     }
/// }
/// ```
pub trait Codec: Sized {
    /// The type's name in a data directory's schema tag (see
    /// [`Durability::schema_version`]): opening data written as another type fails
    /// with [`OpenError::Schema`] instead of a codec error (or, worse, decoding
    /// without one: rkyv reads a `u64`'s bytes as a short `String`).
    ///
    /// Defaults to [`std::any::type_name`] with module paths dropped
    /// (`alloc::vec::Vec<alloc::string::String>` is `Vec<String>`), so moving a type
    /// between modules or a change of std's internal paths does not refuse old data.
    /// Rust does not promise `type_name`'s text across compiler versions; a
    /// hand-written codec can return a fixed name instead.
    fn type_tag() -> String {
        short_type_name(std::any::type_name::<Self>())
    }
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

/// `name` with every module path dropped: `a::b::C<d::E>` becomes `C<E>`.
pub(crate) fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            word.clear(); // a path segment
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

/// A key or value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

impl<T> Codec for T
where
    T: 'static
        + rkyv::Archive
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
        let mut buf = Vec::new();
        if crate::codec_fast::encode(self, &mut buf) {
            return Ok(buf);
        }
        // Straight into the `Vec` the record keeps: one allocation, no copy. Alignment
        // does not matter here; `decode` realigns.
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, buf)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        // Strings, byte vectors and arrays, and integers: the same bytes, written
        // directly (see `codec_fast`).
        if crate::codec_fast::encode(self, buf) {
            return Ok(());
        }
        let mut out = std::mem::take(buf);
        out.clear();
        *buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(self, out)
            .map_err(|e| CodecError(e.to_string()))?;
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if let Some(done) = crate::codec_fast::decode::<T>(bytes) {
            return done;
        }
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
    pub(crate) schema_version: u32,
    pub(crate) discard_on_schema_change: bool,
}

/// The schema tag a cache of `K` and `V` records in its manifest.
pub(crate) fn schema_tag<K: Codec, V: Codec>(version: u32) -> String {
    let tag = format!(
        "key={} value={} version={version}",
        K::type_tag(),
        V::type_tag()
    );
    // One printable line of bounded length, whatever a type_tag returns.
    let mut out: String = tag
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let max = larder_persistence::manifest::MAX_SCHEMA_LEN;
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
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
            schema_version: 0,
            discard_on_schema_change: false,
        }
    }

    /// The version of what the data means, recorded with the key and value type names
    /// ([`Codec::type_tag`]) as the directory's schema tag. Bump it when a type keeps
    /// its name but changes its encoding or meaning. Opening data recorded under
    /// another tag fails with [`OpenError::Schema`] (or starts empty, see
    /// [`Durability::discard_on_schema_change`]). Default 0.
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// When the data was written under another schema tag, or (in a directory written
    /// before tags existed) does not decode as this cache's types, discard it and start
    /// empty instead of failing: for a cache that can be rebuilt from its source. Data
    /// tagged as this cache's own types that does not decode is still refused: that is
    /// damage or a codec bug, not a schema change. The tag of what was discarded is reported in
    /// `info()`'s persistence section as `loading_discarded_schema`. Default off.
    pub fn discard_on_schema_change(mut self, on: bool) -> Self {
        self.discard_on_schema_change = on;
        self
    }

    /// `appendfsync`: `Always` (a write returns after its record is fsynced; concurrent
    /// writers share fsyncs), `EverySec` (default; a power cut loses at most about the
    /// last second), or `No` (the OS decides).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.options.fsync = policy;
        self
    }

    /// Bytes preallocated and memory-mapped for each log file (default 64 MiB); a
    /// write that does not fit switches to a new file. Each write is copied into the
    /// mapping without a system call, so the size bounds the disk taken ahead of use,
    /// not throughput. At most 4 GiB - 1.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.options.segment_bytes = bytes;
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
        let tag = schema_tag::<K, V>(d.schema_version);
        let mut options = d.options.clone();
        options.schema = Some(tag.clone());
        options.on_schema_mismatch = if d.discard_on_schema_change {
            SchemaMismatch::Discard
        } else {
            SchemaMismatch::Refuse
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
            let at = || {
                format!(
                    "{} section {} at byte {}",
                    section.file(),
                    section.index(),
                    section.offset()
                )
            };
            let mut entries = Vec::with_capacity(section.len());
            for e in section.iter() {
                match K::decode(e.key).and_then(|k| Ok((k, V::decode(e.value)?))) {
                    Ok((k, v)) => entries.push((k, v, e.expire_at_ms)),
                    Err(err) => return fail(OpenError::Decode(format!("{}: {err}", at()))),
                }
            }
            // Keys are distinct only if the base says so and the cache was empty: a
            // base loads first, into a new cache.
            let rotate = section.index().wrapping_mul(0x9e37_79b9);
            if let Err(err) = cache
                .inner
                .restore(entries, section.distinct_keys(), rotate)
            {
                fail(OpenError::Load(format!("{}: {err}", at())));
            }
        };
        let mut on_record = |at: RecordAt<'_>, r: Record| {
            observe(&r);
            if let Err(e) = apply(&cache, r) {
                fail(OpenError::Decode(format!("{at}: {e}")));
            }
        };
        let dir = DataDir::open_at(backend.clone(), options.clone(), &sink, &mut on_record)
            .map_err(open_error)?;
        let mut discarded_schema = dir.status().loading.discarded_schema;
        let dir = match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            None => {
                // Tag a directory written before tags existed, now that it decoded.
                dir.record_schema(&tag)
                    .map_err(|e| OpenError::Files(e.to_string()))?;
                dir
            }
            Some(OpenError::Decode(_))
                if d.discard_on_schema_change && dir.manifest().schema.is_none() =>
            {
                // Untagged data (written before tags existed) that does not decode as
                // these types: a schema change after all, so start empty. Data tagged
                // as these very types that does not decode is refused, not discarded.
                drop(dir);
                cache.clear().map_err(|e| OpenError::Load(e.to_string()))?;
                larder_persistence::discard(&*backend, Some(tag)).map_err(open_error)?;
                discarded_schema = Some("unknown (written before schema tags)".into());
                DataDir::open(backend, options, &|_| {}, &mut |_, _| {}).map_err(open_error)?
            }
            Some(e) => return Err(e),
        };
        let now = cache.inner.clock.now_ms();
        let base_size = dir.status().aof_current_size;
        let journal = AofJournal {
            dir: Arc::new(dir),
            auto_rewrite_percentage: d.auto_rewrite_percentage,
            auto_rewrite_min_size: d.auto_rewrite_min_size,
            save_rules: Mutex::new(d.save_rules),
            changes: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(RewriteState {
                last_save_ms: now,
                base_size,
                failures: 0,
                retry_at_ms: 0,
            }),
            discarded_schema,
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

/// The persistence crate's open error as this crate's.
fn open_error(e: larder_persistence::OpenError) -> OpenError {
    match e {
        larder_persistence::OpenError::Locked(l) => OpenError::Locked(l.to_string()),
        larder_persistence::OpenError::Schema { found, expected } => {
            OpenError::Schema { found, expected }
        }
        other => OpenError::Files(other.to_string()),
    }
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
    /// Another open cache (in this process or another) holds the data directory.
    #[error("{0}")]
    Locked(String),
    /// The data was written as other key or value types, or under another
    /// [`Durability::schema_version`].
    #[error(
        "the data directory holds {found:?}, but this cache is {expected:?}: open it with \
         the types and schema version that wrote it, or set \
         Durability::discard_on_schema_change(true) to start empty"
    )]
    Schema {
        /// The schema tag in the directory.
        found: String,
        /// This cache's schema tag.
        expected: String,
    },
    /// A logged key or value does not decode as this cache's types (the message names
    /// the file, offset and sequence or section).
    #[error(
        "decoding the data: {0} (written as other key or value types? open with the \
         types that wrote it, or set Durability::discard_on_schema_change(true))"
    )]
    Decode(String),
    /// A loaded entry was refused (for example larger than the memory bound).
    #[error("loading the data: {0}")]
    Load(String),
}

/// What [`verify`] found: every entry and record decoded as `K` and `V`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Entries in the base snapshot.
    pub base_entries: u64,
    /// Records in the incr files.
    pub records: u64,
    /// Sequence of the last whole record (0: none).
    pub last_seq: u64,
    /// The directory's schema tag, if it has one.
    pub schema: Option<String>,
    /// A torn or damaged tail of the last incr file that opening would cut or refuse
    /// (`larder-check` says which), as text naming file, offset and sequence.
    pub tail: Option<String>,
}

/// Why [`verify`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The directory is missing, or its files are damaged where no open can repair
    /// them (the message names file, offset and sequence).
    #[error("{0}")]
    Files(String),
    /// A key or value does not decode as the types asked for.
    #[error("{at}: {reason}")]
    Decode {
        /// Where: the file and offset, with the sequence (a record) or the section
        /// (the base).
        at: String,
        /// The codec's message.
        reason: String,
    },
}

/// Checks a data directory as a cache of `K` and `V` would read it, without opening
/// or changing it: frames, checksums and sequences as `larder-check` does, and then
/// every key and value of the base and of every record decoded as `K` and `V`. The
/// first that fails is named by file, offset and sequence (or base section).
/// `larder-check` cannot do this part: it knows bytes, not the application's types.
///
/// It takes no lock, so it can run next to the cache that owns the directory, but a
/// rewrite there may remove a file while it reads (an error, not a wrong answer); run
/// it on a directory no cache has open for a stable result.
///
/// ```no_run
/// let report = larder::verify::<String, u64>("/var/lib/myapp/cache")?;
/// println!("{} records decode; last sequence {}", report.records, report.last_seq);
/// # Ok::<(), larder::VerifyError>(())
/// ```
pub fn verify<K: Codec, V: Codec>(
    dir: impl AsRef<std::path::Path>,
) -> Result<Verified, VerifyError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(VerifyError::Files(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let backend =
        FsBackend::new(dir).map_err(|e| VerifyError::Files(format!("{}: {e}", dir.display())))?;
    verify_backend::<K, V>(&backend)
}

/// [`verify`] on any backend.
pub(crate) fn verify_backend<K: Codec, V: Codec>(
    backend: &dyn Backend,
) -> Result<Verified, VerifyError> {
    // Sections decode in parallel: keep the failure of the lowest section.
    let base_failure: Mutex<Option<(usize, VerifyError)>> = Mutex::new(None);
    let entry = |_file: &str, section: larder_persistence::Section<'_>| {
        for (i, e) in section.iter().enumerate() {
            let r = K::decode(e.key).and_then(|_| V::decode(e.value).map(|_| ()));
            if let Err(err) = r {
                let mut slot = base_failure.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_none_or(|(s, _)| section.index() < *s) {
                    *slot = Some((
                        section.index(),
                        VerifyError::Decode {
                            at: format!(
                                "{} section {} at byte {}, entry {i}",
                                section.file(),
                                section.index(),
                                section.offset()
                            ),
                            reason: err.to_string(),
                        },
                    ));
                }
                return;
            }
        }
    };
    let mut record_failure: Option<VerifyError> = None;
    let mut record = |at: RecordAt<'_>, r: Record| {
        if record_failure.is_none() {
            if let Err(reason) = decode_record::<K, V>(&r) {
                record_failure = Some(VerifyError::Decode {
                    at: at.to_string(),
                    reason,
                });
            }
        }
    };
    let replay =
        larder_persistence::recovery::check_with(backend, &entry, &mut record, &mut |_| {})
            .map_err(|e| VerifyError::Files(e.to_string()))?;
    if let Some((_, e)) = base_failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if let Some(e) = record_failure {
        return Err(e);
    }
    Ok(Verified {
        base_entries: replay.base_entries,
        records: replay.records,
        last_seq: replay.next_seq.saturating_sub(1),
        schema: replay.manifest.schema.clone(),
        tail: replay.tail.map(|t| {
            let what = match &t.kind {
                larder_persistence::TailKind::Torn => "torn tail (open cuts it)".to_string(),
                larder_persistence::TailKind::Corrupt(why) => {
                    format!("damage open refuses ({why})")
                }
            };
            format!(
                "{what}: {} at byte {}, {} bytes after sequence {}",
                t.file, t.offset, t.bytes, t.last_good_seq
            )
        }),
    })
}

/// Decodes every key and value a record carries as `K` and `V`.
fn decode_record<K: Codec, V: Codec>(r: &Record) -> Result<(), String> {
    let key = |k: &[u8]| K::decode(k).map(|_| ()).map_err(|e| format!("key: {e}"));
    match r {
        Record::Set { key: k, value, .. } => {
            key(k)?;
            V::decode(value)
                .map(|_| ())
                .map_err(|e| format!("value: {e}"))
        }
        Record::Del { key: k } | Record::Expire { key: k, .. } | Record::Persist { key: k } => {
            key(k)
        }
        Record::Flush | Record::Meta(_) => Ok(()),
        Record::Multi(rs) => rs.iter().try_for_each(decode_record::<K, V>),
    }
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
    save_rules: Mutex<Vec<(Duration, u64)>>,
    /// Writes since the last snapshot (`rdb_changes_since_last_save`).
    changes: Arc<AtomicU64>,
    state: Mutex<RewriteState>,
    /// The schema tag of data discarded on open, if any.
    discarded_schema: Option<String>,
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

thread_local! {
    /// Byte buffers of records this thread logged, for the next records' keys and
    /// values: encoding a write then allocates nothing once the pool is warm.
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread; a write rarely carries more (its own key and value plus
/// the keys it evicted). With [`POOLED_BUFFER_BYTES`] this bounds what a thread keeps
/// to 8 KiB, however many threads write.
const POOLED_BUFFERS: usize = 8;
/// Larger buffers are freed rather than kept: encoding a big value costs more than
/// its allocation.
const POOLED_BUFFER_BYTES: usize = 1024;

fn encode<T: Codec>(t: &T) -> Result<Vec<u8>, Error> {
    let mut buf = BUFFERS
        .with(|b| b.try_borrow_mut().ok().and_then(|mut b| b.pop()))
        .unwrap_or_default();
    t.encode_into(&mut buf)
        .map_err(|e| Error::Persistence(e.to_string()))?;
    Ok(buf)
}

/// Returns the byte buffers of written records to this thread's pool, and the emptied
/// vector to the write path's.
pub(crate) fn recycle(mut records: Vec<Record>) {
    fn keep(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
        if pool.len() < POOLED_BUFFERS && buf.capacity() <= POOLED_BUFFER_BYTES {
            pool.push(buf);
        }
    }
    fn walk(pool: &mut Vec<Vec<u8>>, records: &mut Vec<Record>) {
        for r in records.drain(..) {
            match r {
                Record::Set { key, value, .. } => {
                    keep(pool, key);
                    keep(pool, value);
                }
                Record::Del { key } | Record::Expire { key, .. } | Record::Persist { key } => {
                    keep(pool, key)
                }
                Record::Multi(mut rs) => walk(pool, &mut rs),
                Record::Flush | Record::Meta(_) => {}
            }
        }
    }
    BUFFERS.with(|b| {
        if let Ok(mut pool) = b.try_borrow_mut() {
            walk(&mut pool, &mut records);
        }
    });
    crate::journal::give_back(records);
}

impl<K: Codec + 'static, V: Codec + 'static> Journal<K, V> for AofJournal {
    fn check(&self) -> Result<(), Error> {
        // Every write asks: an atomic load, and the full status only once poisoned.
        if !self.dir.is_poisoned() {
            return Ok(());
        }
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
        let written = self.dir.write(&records);
        recycle(records);
        let seqs = written.map_err(persistence_error)?;
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
            loading_truncated_offset: st.loading.truncated.as_ref().map_or(0, |t| t.offset),
            loading_truncated_after_seq: st
                .loading
                .truncated
                .as_ref()
                .map_or(0, |t| t.last_good_seq),
            loading_discarded_schema: self.discarded_schema.clone(),
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
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

    fn set_fsync(&self, fsync: Fsync) -> Result<(), Error> {
        self.dir.set_fsync(fsync).map_err(persistence_error)
    }

    fn save_rules(&self) -> Result<Vec<(Duration, u64)>, Error> {
        Ok(self
            .save_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    fn set_save_rules(&self, rules: Vec<(Duration, u64)>) -> Result<(), Error> {
        *self.save_rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
        Ok(())
    }
}

/// A rewrite in progress, fed by the cache.
struct AofRewrite<K, V> {
    rewrite: Rewrite,
    dir: Arc<DataDir>,
    changes: Arc<AtomicU64>,
    /// Changes counted when the rewrite began: the snapshot covers those.
    changes_at_begin: u64,
    _types: std::marker::PhantomData<fn(&K, &V)>,
}

/// One thread's share of a rewrite: entries are encoded into scratch buffers reused for
/// every entry and packed straight into the thread's own sections.
struct AofRewritePart<'r, K, V> {
    sections: larder_persistence::SectionWriter<'r>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    _types: std::marker::PhantomData<fn(&K, &V)>,
}

impl<K: Codec, V: Codec> RewriteSink<K, V> for AofRewrite<K, V> {
    fn distinct_keys(&mut self) {
        self.rewrite.distinct_keys();
    }

    fn part(&self) -> Result<Box<dyn RewritePart<K, V> + '_>, Error> {
        let sections = self
            .rewrite
            .section_writer()
            .map_err(|e| Error::Rewrite(e.to_string()))?;
        Ok(Box::new(AofRewritePart {
            sections,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            _types: std::marker::PhantomData,
        }))
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        let (changes, covered) = (Arc::clone(&self.changes), self.changes_at_begin);
        // The count drops before the new base becomes visible, so no reader of `info()`
        // sees the finished snapshot next to the changes it already covers; a failed
        // finish puts them back.
        changes.fetch_sub(covered, Ordering::Relaxed);
        self.dir
            .finish_rewrite(self.rewrite)
            .map(|_| ())
            .map_err(|e| {
                changes.fetch_add(covered, Ordering::Relaxed);
                Error::Rewrite(e.to_string())
            })
    }
}

impl<K: Codec, V: Codec> RewritePart<K, V> for AofRewritePart<'_, K, V> {
    fn push(&mut self, key: &K, value: &V, expire_at: Option<u64>) -> Result<(), Error> {
        let codec = |e: CodecError| Error::Rewrite(e.to_string());
        key.encode_into(&mut self.key_buf).map_err(codec)?;
        value.encode_into(&mut self.value_buf).map_err(codec)?;
        self.sections
            .push(&self.key_buf, &self.value_buf, expire_at)
            .map_err(|e| Error::Rewrite(e.to_string()))
    }

    fn finish(self: Box<Self>) -> Result<(), Error> {
        self.sections
            .finish()
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
    fn record_buffers_are_reused_after_a_write() {
        use super::{encode, record_of, recycle, Record};
        use crate::journal::LogOp;
        let set = |k: u64, v: [u8; 16]| {
            record_of(LogOp::Set {
                key: &k,
                value: &v,
                expire_at: None,
            })
            .unwrap()
        };
        let first = set(1, [7; 16]);
        let Record::Set { key, value, .. } = &first else {
            unreachable!()
        };
        let used = [key.as_ptr(), value.as_ptr()];
        recycle(vec![first]);
        // The next records are encoded into the returned buffers, with exactly the
        // bytes a fresh encoding gives.
        let second = set(2, [9; 16]);
        let Record::Set { key, value, .. } = &second else {
            unreachable!()
        };
        assert!(used.contains(&key.as_ptr()) && used.contains(&value.as_ptr()));
        assert_eq!(*key, 2u64.encode().unwrap());
        assert_eq!(*value, [9u8; 16].encode().unwrap());
        // A big buffer is freed, not kept; the pool never holds more than its bound.
        let pooled = || super::BUFFERS.with(|b| b.borrow().len());
        let before = pooled();
        recycle(vec![Record::Del {
            key: vec![0u8; 5000].encode().unwrap(),
        }]);
        assert_eq!(pooled(), before);
        let many: Vec<Record> = (0..40)
            .map(|k| Record::Del {
                key: encode(&(k as u64)).unwrap(),
            })
            .collect();
        recycle(many);
        assert_eq!(pooled(), super::POOLED_BUFFERS);
    }

    #[test]
    fn type_tags_drop_module_paths() {
        use super::short_type_name as short;
        assert_eq!(short("alloc::string::String"), "String");
        assert_eq!(
            short("alloc::vec::Vec<alloc::string::String>"),
            "Vec<String>"
        );
        assert_eq!(
            short("(u32, core::option::Option<[u8; 4]>)"),
            "(u32, Option<[u8; 4]>)"
        );
        assert_eq!(short("u64"), "u64");
        assert_eq!(<Vec<u8> as Codec>::type_tag(), "Vec<u8>");
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

#[cfg(test)]
mod admission_tests {
    use super::{apply, Codec, Record};
    use crate::{Admission, Background, Cache, Policy};

    /// A replayed or replicated `Set` records a write the writing cache already admitted:
    /// applying it is not a new contest, so TinyLFU does not refuse a key it has never
    /// counted (which would leave a replica without its master's key, silently).
    #[test]
    fn applying_a_logged_set_is_not_refused_by_tinylfu() {
        let c: Cache<u64, u64> = Cache::builder()
            .max_entries(100)
            .shards(1)
            .hasher_seed(5)
            .background(Background::Manual)
            .eviction(Policy::AllKeysLru)
            .admission(Admission::TinyLfu)
            .build();
        for k in 0..100 {
            c.insert(k, k).unwrap();
        }
        for _ in 0..5 {
            for k in 0..100u64 {
                assert_eq!(c.get(&k), Some(k));
            }
        }
        // A plain write of a key never asked for is refused...
        c.insert(1_000, 1).unwrap();
        assert!(!c.contains(&1_000));
        // ...but the same write applied from a log or a master's stream is not.
        let set = Record::Set {
            key: 1_000u64.encode().unwrap(),
            value: 1u64.encode().unwrap(),
            expire_at_ms: None,
        };
        apply(&c, set).unwrap();
        assert_eq!(c.get(&1_000), Some(1));
        assert_eq!(c.len(), 100);
    }
}
