//! A data directory: the manifest, one base snapshot, incr files, and the log that
//! appends to the last incr file. This is what the cache opens.

use std::ops::RangeInclusive;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(not(loom))]
use crossbeam_channel::RecvTimeoutError;
use crossbeam_channel::Sender;

use crate::backend::{Backend, DirLock, OpenMode};
use crate::error::{AppendError, OpenError, RewriteError};
use crate::frame::{file_header, AOF_VERSION, FILE_HEADER_LEN, FRAME_HEADER_LEN};
use crate::log::{FsyncPolicy, Log, Segment, Written, MAX_SEGMENT_BYTES};
use crate::manifest::{
    base_name, file_id, incr_name, Manifest, ManifestError, ManifestFile, MANIFEST_NAME,
};
use crate::record::Record;
use crate::recovery::{self, Mode, RecordAt, Tail};
// The directory's state is locked around a switch, which takes the log's locks inside:
// it must be loom's under `--cfg loom` too, or a model thread preempted inside a
// switch would block the (single) OS thread loom runs on.
use crate::shim::{Mutex, MutexGuard};
use crate::snapshot::{
    Section, SectionWriter, SnapshotInfo, SnapshotWriter, DEFAULT_SECTION_BYTES,
};

/// How to open a data directory.
#[derive(Debug, Clone)]
pub struct Options {
    /// When appends are fsynced.
    pub fsync: FsyncPolicy,
    /// Cut a torn tail of the last incr file on open (Redis's `aof-load-truncated`).
    /// When false, a torn tail refuses to open with [`OpenError::TornTail`].
    pub aof_load_truncated: bool,
    /// Threads used to check and decode base sections.
    pub load_threads: usize,
    /// Target bytes per snapshot section written by rewrites.
    pub section_bytes: usize,
    /// Interval of the `EverySec` background fsync.
    pub everysec_interval: Duration,
    /// What the data encodes (say the key and value type names and a user version),
    /// written into the manifest. Opening a directory whose manifest carries another
    /// tag fails with [`OpenError::Schema`], or starts empty under
    /// [`SchemaMismatch::Discard`]. A manifest without a tag (older versions) matches
    /// any; [`DataDir::record_schema`] adds one once the caller has decoded the data.
    pub schema: Option<String>,
    /// What opening does when the manifest's schema tag differs from [`Options::schema`].
    pub on_schema_mismatch: SchemaMismatch,
    /// Bytes preallocated (and mapped) for each incr file; when an append does not
    /// fit, the log switches to a new file. An append larger than this gets a file of
    /// its own size. At most 4 GiB - 1.
    pub segment_bytes: u64,
}

/// The default [`Options::segment_bytes`]: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// What [`DataDir::open`] does with data written under another schema tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMismatch {
    /// Refuse to open ([`OpenError::Schema`]); the files are left untouched.
    #[default]
    Refuse,
    /// Discard the old data and start empty (for a cache that can be rebuilt).
    Discard,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::EverySec,
            aof_load_truncated: true,
            load_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            section_bytes: DEFAULT_SECTION_BYTES,
            everysec_interval: Duration::from_secs(1),
            schema: None,
            on_schema_mismatch: SchemaMismatch::Refuse,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Outcome of an operation that may not have happened yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OpStatus {
    /// Not attempted since open.
    #[default]
    None,
    /// The last attempt succeeded.
    Ok,
    /// The last attempt failed, with the message.
    Err(String),
}

/// Figures from recovery, for `info()`'s loading section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Entries loaded from the base snapshot.
    pub base_entries: u64,
    /// Records replayed from incr files.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Time spent loading.
    pub duration: Duration,
    /// The torn tail cut from the last incr file, if any.
    pub truncated: Option<Tail>,
    /// Holes skipped in the last incr file: frames reserved but never copied before a
    /// crash (see [`crate::Hole`]).
    pub holes: Vec<crate::Hole>,
    /// Data written under another schema tag that was discarded on open
    /// ([`SchemaMismatch::Discard`]): the tag found.
    pub discarded_schema: Option<String>,
}

/// Persistence figures for `info()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Bytes of the base plus all incr files (Redis's `aof_current_size`).
    pub aof_current_size: u64,
    /// Bytes of the base snapshot (`aof_base_size`).
    pub aof_base_size: u64,
    /// Bytes of the incr file being appended to.
    pub aof_incr_size: u64,
    /// Sequence the next append gets.
    pub next_seq: u64,
    /// Every sequence up to this one is durable.
    pub durable_seq: u64,
    /// Fsyncs of the log since open (under `Always`, appends divided by this is the
    /// mean group-commit size).
    pub fsyncs: u64,
    /// A rewrite has begun and not finished.
    pub rewrite_in_progress: bool,
    /// How the last rewrite ended.
    pub last_rewrite: OpStatus,
    /// How the last write or fsync ended (`Err` once poisoned).
    pub last_write: OpStatus,
    /// The log refuses appends until reopened.
    pub poisoned: bool,
    /// Recovery figures.
    pub loading: LoadStats,
}

struct DirState {
    manifest: Manifest,
    next_id: u64,
    rewrite_in_progress: bool,
    last_rewrite: OpStatus,
    base_size: u64,
    /// Incr files other than the current one, with the end of their last frame.
    closed_incrs: Vec<(String, u64)>,
}

impl DirState {
    fn closed_incr_size(&self) -> u64 {
        self.closed_incrs.iter().map(|(_, end)| end).sum()
    }
}

struct Shared {
    /// Held for as long as anything may still write the directory.
    _lock: DirLock,
    backend: Arc<dyn Backend>,
    log: Log,
    dir: Mutex<DirState>,
    opts: Options,
    loading: LoadStats,
}

impl Shared {
    fn dir(&self) -> MutexGuard<'_, DirState> {
        self.dir.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An open data directory; see the crate docs for the life cycle.
pub struct DataDir {
    shared: Arc<Shared>,
    /// The `EverySec` sync thread, started at open or by the first switch to it. A
    /// std mutex: nothing the models see happens under it.
    syncer: std::sync::Mutex<Option<Syncer>>,
}

/// Outcome of [`write_manifest`] when it fails: whether the new manifest is already
/// in place (renamed) even though the directory sync failed.
struct ManifestWriteError {
    renamed: bool,
    error: ManifestError,
}

fn write_manifest(backend: &dyn Backend, m: &Manifest) -> Result<(), ManifestWriteError> {
    let tmp = format!("{MANIFEST_NAME}.tmp");
    let fail = |renamed, op, source, file: &str| ManifestWriteError {
        renamed,
        error: ManifestError::Io {
            file: file.to_owned(),
            op,
            source,
        },
    };
    let f = backend
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| fail(false, "create", e, &tmp))?;
    f.write_at(&m.encode(), 0)
        .map_err(|e| fail(false, "write", e, &tmp))?;
    f.sync_data().map_err(|e| fail(false, "fsync", e, &tmp))?;
    backend
        .rename(&tmp, MANIFEST_NAME)
        .map_err(|e| fail(false, "rename", e, &tmp))?;
    backend
        .sync_dir()
        .map_err(|e| fail(true, "fsync directory", e, MANIFEST_NAME))
}

/// Creates an incr file: its header, then zeros to `size` bytes (a segment to map),
/// all synced.
fn create_incr(
    backend: &dyn Backend,
    name: &str,
    size: u64,
) -> Result<Arc<dyn crate::backend::FileHandle>, (&'static str, std::io::Error)> {
    let f = backend
        .open(name, OpenMode::CreateTruncate)
        .map_err(|e| ("create", e))?;
    f.write_at(&file_header(), 0)
        .map_err(|e| ("write header", e))?;
    f.set_len(size).map_err(|e| ("preallocate", e))?;
    f.sync_data().map_err(|e| ("fsync", e))?;
    Ok(f)
}

/// Whether an incr file holds anything past its header: a first frame header that is
/// not all zeros (a preallocated segment without records is zeros after its header).
fn incr_holds_records(backend: &dyn Backend, name: &str) -> std::io::Result<(bool, u64)> {
    let f = backend.open(name, OpenMode::Existing)?;
    let len = f.len()?;
    if len <= FILE_HEADER_LEN as u64 {
        return Ok((false, len));
    }
    let n = (len - FILE_HEADER_LEN as u64).min(FRAME_HEADER_LEN as u64) as usize;
    let mut first = [0u8; FRAME_HEADER_LEN];
    f.read_at(&mut first[..n], FILE_HEADER_LEN as u64)?;
    Ok((first[..n].iter().any(|&b| b != 0), len))
}

fn is_data_file(backend: &dyn Backend, name: &str) -> bool {
    if name.starts_with("base.") && file_id(name).is_some() {
        return true;
    }
    // An incr file holding nothing past its header carries no records: a fresh
    // directory whose manifest was never written.
    name.starts_with("incr.")
        && file_id(name).is_some()
        && incr_holds_records(backend, name).map_or(true, |(holds, _)| holds)
}

/// The segment size for an append of `need` bytes.
fn segment_size(opts: &Options, need: u64) -> u64 {
    let floor = (FILE_HEADER_LEN + FRAME_HEADER_LEN) as u64 * 2;
    opts.segment_bytes
        .max(FILE_HEADER_LEN as u64 + need)
        .max(floor)
        .min(MAX_SEGMENT_BYTES)
}

/// One more than the largest data file id in `names` (every file present, named by
/// the manifest or not), so a new file never truncates an existing one.
fn next_free_id(names: &[String], m: Option<&Manifest>) -> u64 {
    // Ids above MAX_FILE_ID are never named (the manifest refuses them); such files
    // are removed as leftovers or refuse the open, so they need not be stepped over.
    let present = names
        .iter()
        .filter_map(|n| file_id(n))
        .filter(|&id| id <= crate::manifest::MAX_FILE_ID)
        .max()
        .unwrap_or(0);
    let named = m.map_or(1, Manifest::next_id).saturating_sub(1);
    present.max(named).saturating_add(1)
}

/// Marks a directory being started over: it holds the name of the new, first incr
/// file. Written (durably) before the manifest naming only that file, removed once
/// the old data files are. While it stands and the manifest names that file first,
/// without a base, older data files are discarded data and go as leftovers; without
/// it, an unnamed incr file holding records refuses the open (a stale manifest).
pub const DISCARD_MARKER: &str = "discarding";

/// Starts the directory over, empty: a new incr file with an id above every file
/// present, the [`DISCARD_MARKER`], then a manifest naming only the new file (the
/// switch point: a crash before it keeps the old data in force), then the old data
/// files are removed, then the marker.
fn start_fresh(
    backend: &dyn Backend,
    names: &[String],
    schema: Option<String>,
    size: u64,
) -> Result<Manifest, OpenError> {
    let m = Manifest {
        base: None,
        incrs: vec![ManifestFile {
            name: incr_name(next_free_id(names, None)),
            seq: 1,
        }],
        schema,
    };
    let first = &m.incrs[0].name;
    create_incr(backend, first, size).map_err(|(op, source)| OpenError::Io {
        file: first.clone(),
        op,
        source,
    })?;
    // Durable before the switch: a crash after it, with old files left, then opens.
    let io = |file: &str, op| {
        let file = file.to_owned();
        move |source| OpenError::Io { file, op, source }
    };
    let marker = backend
        .open(DISCARD_MARKER, OpenMode::CreateTruncate)
        .map_err(io(DISCARD_MARKER, "create"))?;
    marker
        .write_at(format!("{first}\n").as_bytes(), 0)
        .map_err(io(DISCARD_MARKER, "write"))?;
    marker.sync_data().map_err(io(DISCARD_MARKER, "fsync"))?;
    drop(marker);
    backend.sync_dir().map_err(io(".", "fsync directory"))?;
    write_manifest(backend, &m).map_err(|e| e.error)?;
    for n in names {
        if (file_id(n).is_some() || n.ends_with(".tmp")) && n != first {
            match backend.remove(n) {
                // `manifest.tmp` left by a crash was just reused and renamed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(|source| OpenError::Io {
                    file: n.clone(),
                    op: "remove discarded file",
                    source,
                })?,
            }
        }
    }
    backend
        .remove(DISCARD_MARKER)
        .map_err(io(DISCARD_MARKER, "remove"))?;
    backend.sync_dir().map_err(|source| OpenError::Io {
        file: ".".into(),
        op: "fsync directory",
        source,
    })?;
    Ok(m)
}

/// The files present that `m` does not name and that may be removed: temp files,
/// bases of unfinished or superseded rewrites (a rewrite's base takes the id of the
/// incr file it switched to, which the manifest names first), incr files holding no
/// record, incr files older than the base, and the files of data discarded by
/// starting over whose removal was cut short (see [`DISCARD_MARKER`]). An unnamed incr
/// file holding records the base does not cover, or a base newer than every file
/// named, means the manifest
/// lost track of written data (a stale or hand-edited manifest): that refuses the
/// open and nothing is removed.
pub(crate) fn leftovers(
    backend: &dyn Backend,
    names: &[String],
    m: &Manifest,
) -> Result<Vec<String>, OpenError> {
    let base_id = m.base.as_ref().and_then(|b| file_id(&b.name));
    let newest_named = m
        .files()
        .filter_map(|f| file_id(&f.name))
        .max()
        .unwrap_or(0);
    let io = |n: &String| {
        let file = n.clone();
        move |source| OpenError::Io {
            file,
            op: "stat",
            source,
        }
    };
    let size = |n: &String| {
        backend
            .open(n, OpenMode::Existing)
            .and_then(|f| f.len())
            .map_err(io(n))
    };
    // A directory started over names, without a base, the incr file the marker
    // names: every older data file is discarded data (see DISCARD_MARKER).
    let mut out = Vec::new();
    let mut started_over = None;
    if names.iter().any(|n| n == DISCARD_MARKER) {
        let marker = backend
            .read_all(DISCARD_MARKER)
            .map_err(|source| OpenError::Io {
                file: DISCARD_MARKER.into(),
                op: "read",
                source,
            })?;
        let first = std::str::from_utf8(&marker)
            .ok()
            .and_then(|t| t.strip_suffix('\n'));
        if m.base.is_none() && first.is_some() && first == m.incrs.first().map(|f| f.name.as_str())
        {
            started_over = first.and_then(file_id);
        }
        out.push(DISCARD_MARKER.to_owned());
    }
    let start_id = base_id.or(started_over);
    for n in names {
        if m.files().any(|f| &f.name == n) {
            continue;
        }
        if n.ends_with(".tmp") {
            out.push(n.clone());
            continue;
        }
        if let Some(id) = file_id(n).filter(|_| n.starts_with("base.")) {
            if id > newest_named {
                return Err(OpenError::Unnamed {
                    file: n.clone(),
                    bytes: size(n)?,
                });
            }
            out.push(n.clone());
            continue;
        }
        let Some(id) = file_id(n).filter(|_| n.starts_with("incr.")) else {
            continue;
        };
        let (holds, bytes) = incr_holds_records(backend, n).map_err(io(n))?;
        if !holds || start_id.is_some_and(|b| id < b) {
            out.push(n.clone());
        } else {
            return Err(OpenError::Unnamed {
                file: n.clone(),
                bytes,
            });
        }
    }
    Ok(out)
}

/// Takes `backend`'s lock and starts its directory over, empty, with `schema` (what
/// [`SchemaMismatch::Discard`] does, for a caller that found the data undecodable
/// only after [`DataDir::open`]). Every data file is removed once the new, empty
/// manifest is durable.
pub fn discard(backend: &dyn Backend, schema: Option<String>) -> Result<(), OpenError> {
    let _lock = backend.lock()?;
    let names = backend.list().map_err(|source| OpenError::Io {
        file: ".".into(),
        op: "list directory",
        source,
    })?;
    start_fresh(backend, &names, schema, DEFAULT_SEGMENT_BYTES).map(|_| ())
}

impl DataDir {
    /// Opens (recovers) the data directory behind `backend`, creating it if empty.
    ///
    /// The base's sections go to `sink`, in parallel and in no particular order; then
    /// every record of the incr files goes to `on_record` in sequence order. A torn
    /// tail of the last incr file is cut (reported in [`Status::loading`]) when
    /// [`Options::aof_load_truncated`] is set. On error the callbacks may have seen a
    /// prefix; discard it.
    ///
    /// The directory's lock ([`Backend::lock`]) is taken first and held until the
    /// `DataDir` is dropped: a second open of the same directory fails with
    /// [`OpenError::Locked`].
    pub fn open(
        backend: Arc<dyn Backend>,
        opts: Options,
        sink: &(dyn Fn(Section<'_>) + Sync),
        on_record: &mut dyn FnMut(u64, Record),
    ) -> Result<DataDir, OpenError> {
        Self::open_at(backend, opts, sink, &mut |at, rec| on_record(at.seq, rec))
    }

    /// [`DataDir::open`], with each record's file and offset, for callers whose own
    /// decoding of a record can fail and must say where.
    pub fn open_at(
        backend: Arc<dyn Backend>,
        opts: Options,
        sink: &(dyn Fn(Section<'_>) + Sync),
        on_record: &mut dyn FnMut(RecordAt<'_>, Record),
    ) -> Result<DataDir, OpenError> {
        if let Some(tag) = opts
            .schema
            .as_ref()
            .filter(|t| !crate::manifest::schema_ok(t))
        {
            return Err(OpenError::BadSchemaTag { tag: tag.clone() });
        }
        let lock = backend.lock()?;
        let names = backend.list().map_err(|source| OpenError::Io {
            file: ".".into(),
            op: "list directory",
            source,
        })?;
        let mut discarded_schema = None;
        let manifest = if names.iter().any(|n| n == MANIFEST_NAME) {
            let m = recovery::read_manifest(&*backend)?;
            match (&m.schema, &opts.schema) {
                (Some(found), Some(want)) if found != want => match opts.on_schema_mismatch {
                    SchemaMismatch::Refuse => {
                        return Err(OpenError::Schema {
                            found: found.clone(),
                            expected: want.clone(),
                        })
                    }
                    SchemaMismatch::Discard => {
                        discarded_schema = Some(found.clone());
                        start_fresh(
                            &*backend,
                            &names,
                            opts.schema.clone(),
                            segment_size(&opts, 0),
                        )?
                    }
                },
                _ => m,
            }
        } else {
            let data: Vec<&String> = names
                .iter()
                .filter(|n| is_data_file(&*backend, n))
                .collect();
            if !data.is_empty() {
                let files = data.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>();
                return Err(ManifestError::Missing {
                    files: files.join(", "),
                }
                .into());
            }
            start_fresh(
                &*backend,
                &names,
                opts.schema.clone(),
                segment_size(&opts, 0),
            )?
        };
        // Listed again: a fresh start replaced the files.
        let names = backend.list().map_err(|source| OpenError::Io {
            file: ".".into(),
            op: "list directory",
            source,
        })?;
        // Decided before recovery changes anything (it may cut a torn tail): a
        // directory whose manifest lost track of written data is refused untouched.
        let remove = leftovers(&*backend, &names, &manifest)?;
        let replay = recovery::replay(
            &*backend,
            manifest,
            Mode::Open {
                truncate: opts.aof_load_truncated,
            },
            opts.load_threads,
            sink,
            on_record,
            &mut |_| {},
        )?;
        let mut manifest = replay.manifest;
        let last = manifest
            .incrs
            .last()
            .cloned()
            .expect("a manifest names at least one incr file");
        let io = |file: &str, op| {
            let file = file.to_owned();
            move |source| OpenError::Io { file, op, source }
        };
        let file = backend
            .open(&last.name, OpenMode::Existing)
            .map_err(io(&last.name, "open"))?;
        // What was replayed is now the cache's state: make it durable before anything
        // is acknowledged on top of it (a process crash may have left it in page cache).
        file.sync_data().map_err(io(&last.name, "fsync"))?;
        // Files no manifest names are leftovers of an interrupted rewrite or switch;
        // anything that could still hold acknowledged writes refuses the open instead.
        for n in &remove {
            let _ = backend.remove(n);
        }
        if !remove.is_empty() {
            let _ = backend.sync_dir();
        }
        let mut next_id = next_free_id(&names, Some(&manifest));

        let base_size = replay
            .files
            .iter()
            .filter(|f| f.kind == recovery::FileKind::Base)
            .map(|f| f.bytes)
            .sum();
        let mut closed_incrs: Vec<(String, u64)> = replay
            .files
            .iter()
            .filter(|f| f.kind == recovery::FileKind::Incr && f.name != last.name)
            .map(|f| (f.name.clone(), f.end))
            .collect();
        let size = segment_size(&opts, 0);
        let segment = if replay.last_version == AOF_VERSION {
            // Appends go on in the mapped segment, grown back to its size if it was
            // cut (a torn tail) or made smaller.
            let len = file.len().map_err(io(&last.name, "stat"))?;
            let size = len.max(size).min(MAX_SEGMENT_BYTES);
            if len < size {
                file.set_len(size).map_err(io(&last.name, "preallocate"))?;
                file.sync_data().map_err(io(&last.name, "fsync"))?;
            }
            Segment::open(
                file,
                last.name.clone(),
                last.seq,
                replay.next_seq - last.seq,
                replay.last_len,
                size,
            )
            .map_err(io(&last.name, "map"))?
        } else {
            // A file of the appended format (version 1) is closed as it is; appends go
            // to a new mapped segment, named in the manifest before any is taken.
            let name = incr_name(next_id);
            next_id += 1;
            let new =
                create_incr(&*backend, &name, size).map_err(|(op, source)| OpenError::Io {
                    file: name.clone(),
                    op,
                    source,
                })?;
            manifest.incrs.push(ManifestFile {
                name: name.clone(),
                seq: replay.next_seq,
            });
            write_manifest(&*backend, &manifest).map_err(|e| e.error)?;
            closed_incrs.push((last.name.clone(), replay.last_len));
            Segment::open(
                new,
                name.clone(),
                replay.next_seq,
                0,
                FILE_HEADER_LEN as u64,
                size,
            )
            .map_err(io(&name, "map"))?
        };
        let log = Log::new(segment, replay.next_seq - 1, opts.fsync);
        let shared = Arc::new(Shared {
            _lock: lock,
            backend,
            log,
            dir: Mutex::new(DirState {
                next_id,
                manifest,
                rewrite_in_progress: false,
                last_rewrite: OpStatus::None,
                base_size,
                closed_incrs,
            }),
            loading: LoadStats {
                base_entries: replay.base_entries,
                records: replay.records,
                bytes: replay.bytes,
                duration: replay.duration,
                truncated: replay.tail,
                holes: replay.holes,
                discarded_schema,
            },
            opts,
        });
        let syncer = if shared.opts.fsync == FsyncPolicy::EverySec {
            start_syncer(&shared).map_err(|source| OpenError::Io {
                file: ".".into(),
                op: "spawn the everysec fsync thread",
                source,
            })?
        } else {
            None
        };
        let syncer = std::sync::Mutex::new(syncer);
        Ok(DataDir { shared, syncer })
    }

    /// Appends one record and, under [`FsyncPolicy::Always`], returns only once it is
    /// durable (sharing the fsync with concurrent appenders). Returns its sequence.
    pub fn append(&self, record: &Record) -> Result<u64, AppendError> {
        let seqs = self.write(std::slice::from_ref(record))?;
        self.wait_durable(*seqs.end())?;
        Ok(*seqs.end())
    }

    /// Appends several records in one write (a pipeline); each gets its own sequence.
    /// Durability as [`DataDir::append`]. For all-or-nothing, wrap them in
    /// [`Record::Multi`] instead.
    pub fn append_batch(&self, records: &[Record]) -> Result<RangeInclusive<u64>, AppendError> {
        let seqs = self.write(records)?;
        self.wait_durable(*seqs.end())?;
        Ok(seqs)
    }

    /// The first half of an append: reserves the records' sequences and copies their
    /// frames into the mapped tail (in the page cache, not necessarily durable; no lock
    /// shared with other appenders and no system call, except when the segment is full
    /// and the log switches to a new one) and returns their sequences. A cache calls
    /// this under its shard lock, so log order follows lock order, then releases the
    /// lock and calls [`DataDir::wait_durable`], so the sync is not waited for under it.
    pub fn write(&self, records: &[Record]) -> Result<RangeInclusive<u64>, AppendError> {
        loop {
            match self.shared.log.write(records)? {
                Written::Seqs(seqs) => return Ok(seqs),
                Written::Full { bytes } => self.roll(records.len() as u64, bytes)?,
            }
        }
    }

    /// Switches to a new segment with room for `bytes` in `records` frames, unless
    /// another appender already did.
    fn roll(&self, records: u64, bytes: u64) -> Result<(), AppendError> {
        if bytes > MAX_SEGMENT_BYTES - FILE_HEADER_LEN as u64 {
            return Err(AppendError::TooLarge {
                len: bytes as usize,
            });
        }
        let mut dir = self.shared.dir();
        if self.shared.log.segment().has_room(records, bytes) {
            return Ok(());
        }
        match self.switch_incr(&mut dir, bytes) {
            Ok(_) => Ok(()),
            Err(RewriteError::Poisoned { cause }) => Err(AppendError::Poisoned { cause }),
            Err(e) => Err(AppendError::Switch {
                reason: e.to_string(),
            }),
        }
    }

    /// The second half of an append: under `Always`, waits until `seq` is durable,
    /// leading or joining a group fsync; otherwise returns at once. Fails if the log
    /// was poisoned before `seq` became durable.
    pub fn wait_durable(&self, seq: u64) -> Result<(), AppendError> {
        self.shared.log.wait_durable(seq)
    }

    /// Fsyncs everything written so far, whatever the policy (for a clean shutdown).
    pub fn sync(&self) -> Result<(), AppendError> {
        self.shared.log.sync_all()
    }

    /// Whether the log refuses appends until the directory is reopened (after a failed
    /// write or fsync): [`Status::poisoned`] without the locks and copies of
    /// [`DataDir::status`], for a check on every write.
    pub fn is_poisoned(&self) -> bool {
        self.shared.log.is_poisoned()
    }

    /// Changes the fsync policy of the open directory (Redis's `CONFIG SET
    /// appendfsync`). What was written before is synced first, so the new policy's
    /// promise covers it too; a switch to `EverySec` starts the background sync thread
    /// if it is not running. Fails if that sync fails (the log is then poisoned, as for
    /// any failed sync) or the thread cannot start.
    pub fn set_fsync(&self, policy: FsyncPolicy) -> Result<(), AppendError> {
        if policy == FsyncPolicy::EverySec {
            let mut syncer = self.syncer.lock().unwrap_or_else(PoisonError::into_inner);
            if syncer.is_none() {
                *syncer = start_syncer(&self.shared).map_err(AppendError::Syncer)?;
            }
        }
        self.shared.log.set_policy(policy);
        self.shared.log.sync_all()
    }

    /// Current figures.
    pub fn status(&self) -> Status {
        let dir = self.shared.dir();
        let seg = self.shared.log.segment();
        let (len, next_seq) = (seg.end(), seg.next_seq());
        let st = self.shared.log.lock();
        Status {
            fsync: self.shared.log.policy(),
            aof_current_size: dir.base_size + dir.closed_incr_size() + len,
            aof_base_size: dir.base_size,
            aof_incr_size: len,
            next_seq,
            durable_seq: st.durable_seq,
            fsyncs: st.fsyncs,
            rewrite_in_progress: dir.rewrite_in_progress,
            last_rewrite: dir.last_rewrite.clone(),
            last_write: match &st.last_write_error {
                Some(e) => OpStatus::Err(e.clone()),
                None => OpStatus::Ok,
            },
            poisoned: st.poisoned.is_some(),
            loading: self.shared.loading.clone(),
        }
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Manifest {
        self.shared.dir().manifest.clone()
    }

    /// Records `tag` as the manifest's schema tag (see [`Options::schema`]) if it
    /// carries another or none, rewriting the manifest. A caller opening a directory
    /// written before tags existed calls this once it has decoded every record, so a
    /// directory is never tagged with types that could not read it.
    pub fn record_schema(&self, tag: &str) -> Result<(), ManifestError> {
        if !crate::manifest::schema_ok(tag) {
            return Err(ManifestError::Schema {
                line: 0,
                text: tag.chars().take(120).collect(),
            });
        }
        let mut dir = self.shared.dir();
        if dir.manifest.schema.as_deref() == Some(tag) {
            return Ok(());
        }
        let mut m = dir.manifest.clone();
        m.schema = Some(tag.to_owned());
        match write_manifest(&*self.shared.backend, &m) {
            Ok(()) => {
                dir.manifest = m;
                Ok(())
            }
            Err(e) => {
                if e.renamed {
                    dir.manifest = m;
                }
                Err(e.error)
            }
        }
    }

    /// Step 1 of a rewrite: switches appends to a new incr file (fsyncing the old one
    /// and recording the new one in the manifest) and returns a [`Rewrite`] whose
    /// [`Rewrite::start_seq`] is the first sequence of the new file. Blocks appends for
    /// the duration of the switch (a few fsyncs). Then take the keyspace (fuzzily,
    /// shard by shard, while writes go on) into [`Rewrite::push`] and call
    /// [`DataDir::finish_rewrite`]. Dropping the `Rewrite` abandons it; the files in
    /// force stay complete and loadable, and a new `begin_rewrite` may follow.
    pub fn begin_rewrite(&self) -> Result<Rewrite, RewriteError> {
        let sh = &self.shared;
        let mut dir = sh.dir();
        if dir.rewrite_in_progress {
            return Err(RewriteError::InProgress);
        }
        let result = self.switch_incr(&mut dir, 0);
        let (start_seq, id) = match result {
            Ok(v) => v,
            Err(e) => {
                dir.last_rewrite = OpStatus::Err(e.to_string());
                return Err(e);
            }
        };
        let base = base_name(id);
        let schema = dir.manifest.schema.clone();
        let writer = match SnapshotWriter::create_tagged(
            sh.backend.clone(),
            &base,
            start_seq,
            schema.as_deref(),
        ) {
            Ok(w) => w.section_bytes(sh.opts.section_bytes),
            Err(e) => {
                dir.last_rewrite = OpStatus::Err(e.to_string());
                return Err(e.into());
            }
        };
        dir.rewrite_in_progress = true;
        Ok(Rewrite {
            shared: sh.clone(),
            writer: Some(writer),
            base,
            first_incr: incr_name(id),
            start_seq,
        })
    }

    /// Switches the log to a new incr file with room for `need` bytes; returns (its
    /// start sequence, its id). Appends wait for the switch (a few syncs).
    fn switch_incr(&self, dir: &mut DirState, need: u64) -> Result<(u64, u64), RewriteError> {
        let sh = &self.shared;
        if let Some(cause) = &sh.log.lock().poisoned {
            return Err(RewriteError::Poisoned {
                cause: cause.clone(),
            });
        }
        let id = dir.next_id;
        dir.next_id += 1;
        let name = incr_name(id);
        let io = |file: &str, op, source| RewriteError::Io {
            file: file.to_owned(),
            op,
            source,
        };
        let size = segment_size(&sh.opts, need);
        let file = create_incr(&*sh.backend, &name, size).map_err(|(op, e)| io(&name, op, e))?;
        // Most of the old segment reaches the disk before appends are held (under `no`
        // it may hold everything written since the last switch): the sync under the
        // lock below then covers only what is written meanwhile. A failure poisons the
        // log, which the locked step reports.
        let _ = sh.log.sync_all();
        // No copy is in flight while this is held: the old segment is complete.
        let mut current = sh.log.exclusive();
        if let Some(cause) = &sh.log.lock().poisoned {
            let cause = cause.clone();
            drop(current);
            let _ = sh.backend.remove(&name);
            return Err(RewriteError::Poisoned { cause });
        }
        let old = current.clone();
        let (old_end, start_seq) = (old.end(), old.next_seq());
        // The old file must be complete on disk before the manifest says a newer one
        // follows it: recovery treats damage in a non-last file as corruption.
        if let Err(e) = old.sync(old_end).and_then(|()| old.file.sync_data()) {
            drop(current);
            sh.log
                .poison_and_wake(format!("fsync of {} failed: {e}", old.name));
            let _ = sh.backend.remove(&name);
            return Err(io(&old.name, "fsync", e));
        }
        let mut m = dir.manifest.clone();
        m.incrs.push(ManifestFile {
            name: name.clone(),
            seq: start_seq,
        });
        let segment = Segment::open(
            file,
            name.clone(),
            start_seq,
            0,
            FILE_HEADER_LEN as u64,
            size,
        )
        .map_err(|e| io(&name, "map", e));
        let segment = match segment {
            Ok(s) => s,
            Err(e) => {
                drop(current);
                let _ = sh.backend.remove(&name);
                return Err(e);
            }
        };
        let written = write_manifest(&*sh.backend, &m);
        if let Err(ManifestWriteError {
            renamed: false,
            error,
        }) = written
        {
            drop(current);
            let _ = sh.backend.remove(&name);
            return Err(error.into());
        }
        // In place (if maybe not durable when the directory sync failed): follow it.
        *current = Arc::new(segment);
        dir.closed_incrs.push((old.name.clone(), old_end));
        dir.manifest = m;
        drop(current);
        sh.log.mark_durable(start_seq);
        if let Err(ManifestWriteError { error, .. }) = written {
            // As for an fsync error: the new manifest may not be durable.
            sh.log.poison_and_wake(error.to_string());
            return Err(error.into());
        }
        Ok((start_seq, id))
    }

    /// Step 3 of a rewrite: finishes the new base (fsync, rename, directory fsync),
    /// swaps the manifest to name it and the incr files from the rewrite's start on,
    /// and deletes the files it replaces. On error the previous manifest stays in
    /// force (complete and loadable) and the rewrite may be retried.
    pub fn finish_rewrite(&self, mut rewrite: Rewrite) -> Result<SnapshotInfo, RewriteError> {
        let result = self.finish_inner(&mut rewrite);
        let mut dir = self.shared.dir();
        dir.rewrite_in_progress = false;
        dir.last_rewrite = match &result {
            Ok(_) => OpStatus::Ok,
            Err(e) => OpStatus::Err(e.to_string()),
        };
        result
    }

    fn finish_inner(&self, rewrite: &mut Rewrite) -> Result<SnapshotInfo, RewriteError> {
        let sh = &self.shared;
        let writer = rewrite.writer.take().ok_or(RewriteError::InProgress)?;
        let info = writer.finish().inspect_err(|_| {
            // A base renamed into place before a failed directory fsync is an orphan.
            let _ = sh.backend.remove(&rewrite.base);
        })?;
        let mut dir = sh.dir();
        let old = dir.manifest.clone();
        // The rewrite's own incr file is in the manifest since begin_rewrite; keep it
        // and every incr file added after it.
        let Some(pos) = old.incrs.iter().position(|f| f.name == rewrite.first_incr) else {
            let _ = sh.backend.remove(&rewrite.base);
            return Err(RewriteError::InProgress);
        };
        let m = Manifest {
            base: Some(ManifestFile {
                name: rewrite.base.clone(),
                seq: rewrite.start_seq,
            }),
            incrs: old.incrs[pos..].to_vec(),
            schema: old.schema.clone(),
        };
        match write_manifest(&*sh.backend, &m) {
            Ok(()) => {}
            Err(ManifestWriteError {
                renamed: false,
                error,
            }) => {
                let _ = sh.backend.remove(&rewrite.base);
                return Err(error.into());
            }
            Err(ManifestWriteError {
                renamed: true,
                error,
            }) => {
                // In place but maybe not durable; either manifest loads. Follow it.
                dir.manifest = m;
                return Err(error.into());
            }
        }
        let keep: Vec<String> = m.files().map(|f| f.name.clone()).collect();
        for f in old.files() {
            if !keep.contains(&f.name) {
                let _ = sh.backend.remove(&f.name);
            }
        }
        let _ = sh.backend.sync_dir();
        dir.manifest = m;
        dir.base_size = info.bytes;
        dir.closed_incrs.retain(|(name, _)| keep.contains(name));
        Ok(info)
    }
}

/// A rewrite in progress: feed it the keyspace, then pass it to
/// [`DataDir::finish_rewrite`]. Dropping it abandons the rewrite (the partial base is
/// removed; the files in force are untouched).
pub struct Rewrite {
    shared: Arc<Shared>,
    writer: Option<SnapshotWriter>,
    base: String,
    first_incr: String,
    start_seq: u64,
}

impl Rewrite {
    /// The first sequence of the incr file the rewrite switched to: the new base plus
    /// the log from here replays to the exact state.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// Adds one entry to the new base.
    pub fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: Option<u64>,
    ) -> Result<(), RewriteError> {
        match &mut self.writer {
            Some(w) => Ok(w.push(key, value, expire_at_ms)?),
            None => Err(RewriteError::InProgress),
        }
    }

    /// Adds every entry of `entries` (for instance one shard's worth, taken under that
    /// shard's lock while other shards keep taking writes).
    pub fn extend<'a>(
        &mut self,
        entries: impl IntoIterator<Item = crate::snapshot::EntryRef<'a>>,
    ) -> Result<(), RewriteError> {
        match &mut self.writer {
            Some(w) => Ok(w.extend(entries)?),
            None => Err(RewriteError::InProgress),
        }
    }

    /// A writer for one thread's share of the new base; several threads may each fill
    /// one at once (one shard each, say). Finish or drop them all before
    /// [`DataDir::finish_rewrite`].
    pub fn section_writer(&self) -> Result<SectionWriter<'_>, RewriteError> {
        match &self.writer {
            Some(w) => Ok(w.section_writer()),
            None => Err(RewriteError::InProgress),
        }
    }

    /// Declares that no key is pushed twice, so the new base tells its loader to insert
    /// without looking for an earlier copy. The caller keeps the promise.
    pub fn distinct_keys(&mut self) {
        if let Some(w) = &mut self.writer {
            w.distinct_keys();
        }
    }

    /// Entries pushed so far (those of section writers once their sections are written).
    pub fn entries(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.entries())
    }
}

impl Drop for Rewrite {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let mut dir = self.shared.dir();
            dir.rewrite_in_progress = false;
            dir.last_rewrite = OpStatus::Err("rewrite abandoned".into());
        }
    }
}

/// The running `EverySec` thread: dropping `stop` ends it.
#[cfg_attr(loom, allow(dead_code))] // never started under loom (see below)
struct Syncer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts the `EverySec` thread: syncs once per interval while the policy is
/// `EverySec`; ends when its sender is dropped (the `DataDir` dropped).
#[cfg(not(loom))]
fn start_syncer(shared: &Arc<Shared>) -> std::io::Result<Option<Syncer>> {
    let (stop, rx) = crossbeam_channel::bounded::<()>(1);
    let s = shared.clone();
    let interval = s.opts.everysec_interval;
    let thread = std::thread::Builder::new()
        .name("larder-everysec".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                if s.log.policy() == FsyncPolicy::EverySec {
                    s.log.sync_tick();
                }
            }
        })?;
    Ok(Some(Syncer { stop, thread }))
}

/// Under `--cfg loom` no `EverySec` thread is started, as the cache starts none by
/// default: loom has no clock (a timed wait is an untimed one), a std thread must not
/// touch loom's locks, and a thread ticking until the directory is dropped would keep
/// a model from ending. Syncs then happen at switches, `sync()` and drop; a model of
/// the tick calls `Log::sync_tick` from a thread of its own.
#[cfg(loom)]
fn start_syncer(_shared: &Arc<Shared>) -> std::io::Result<Option<Syncer>> {
    Ok(None)
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let syncer = self
            .syncer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Syncer { stop, thread }) = syncer {
            drop(stop);
            let _ = thread.join();
        }
        // Best effort: a clean close leaves nothing for the OS to lose.
        let _ = self.shared.log.sync_all();
    }
}
