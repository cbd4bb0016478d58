//! loom models of the append log: the claims of the module docs of `log`, each checked
//! by one small model named for it.
//!
//! Under `--cfg loom` each model explores every interleaving of its threads (with
//! preemptions bounded by `LOOM_MAX_PREEMPTIONS`); without it, each runs once on std
//! threads as a plain test. Run them with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p larder-persistence --lib --release log::models
//! ```
//!
//! (the filter matters: the crate's other unit tests use the log outside a model, which
//! loom's types refuse).
//!
//! The segment is mapped onto [`ModelMap`], whose bytes are loom cells: loom fails a
//! model when two accesses to one byte are not ordered by happens-before, so a sync
//! that reads bytes still being copied, or two appenders copying into the same bytes,
//! is caught in whichever order the model ran them. Each sync also keeps an image of
//! what it made durable, which the models compare with what the log reported.

use std::ops::RangeInclusive;
use std::sync::Arc;

use super::{FsyncPolicy, Log, Segment, Written};
use crate::backend::{CrashImageBackend, FileHandle, MappedFile};
use crate::error::AppendError;
use crate::frame::{frames, FILE_HEADER_LEN, FRAME_HEADER_LEN};
use crate::record::Record;
use crate::{Backend, DirLock, LockError, OpenMode};
use crate::{DataDir, Options};

#[cfg(loom)]
use loom::thread;
#[cfg(not(loom))]
use std::thread;

/// Runs `a` and `b` on two threads of their own and returns their results. The model's
/// main thread only waits: a switch between the two racing threads is then a
/// preemption only where it interleaves them, which keeps the interesting schedules
/// within loom's preemption bound.
fn race<A, B>(
    a: impl FnOnce() -> A + Send + 'static,
    b: impl FnOnce() -> B + Send + 'static,
) -> (A, B)
where
    A: Send + 'static,
    B: Send + 'static,
{
    let a = thread::spawn(a);
    let b = thread::spawn(b);
    (a.join().unwrap(), b.join().unwrap())
}

/// Runs `f` as a loom model under `--cfg loom`, or once on std threads otherwise.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    #[cfg(loom)]
    loom::model(f);
    #[cfg(not(loom))]
    f();
}

/// One byte of the model mapping: a loom cell (accesses checked against happens-before)
/// under loom, a relaxed atomic otherwise.
#[cfg(loom)]
struct Byte(loom::cell::UnsafeCell<u8>);

#[cfg(loom)]
impl Byte {
    fn new(b: u8) -> Byte {
        Byte(loom::cell::UnsafeCell::new(b))
    }
    fn get(&self) -> u8 {
        // SAFETY: loom checks this read against every write to the cell and panics
        // before the read if they are not ordered; model threads share one OS thread.
        self.0.with(|p| unsafe { *p })
    }
    fn set(&self, b: u8) {
        // SAFETY: as for `get`, for a write against every access.
        self.0.with_mut(|p| unsafe { *p = b })
    }
}

#[cfg(not(loom))]
struct Byte(std::sync::atomic::AtomicU8);

#[cfg(not(loom))]
impl Byte {
    fn new(b: u8) -> Byte {
        Byte(std::sync::atomic::AtomicU8::new(b))
    }
    fn get(&self) -> u8 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn set(&self, b: u8) {
        self.0.store(b, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the model mapping's syncs did.
#[derive(Default)]
struct Syncs {
    /// Calls so far, failed ones included.
    attempts: usize,
    /// The highest sequence a successful sync made durable (0: none).
    through: u64,
}

/// A segment's mapping for the models: bytes checked by loom, syncs that decode what
/// they make durable, and optionally one sync that fails.
struct ModelMap {
    bytes: Box<[Byte]>,
    /// The 1-based sync call that fails.
    fail_sync: Option<usize>,
    /// The file a successful sync writes its image to and syncs, if any: the map is
    /// then the file's page cache, and only synced bytes reach the file.
    file: Option<Arc<dyn FileHandle>>,
    /// A std lock: it guards no loom operation, so no model thread is preempted in it.
    syncs: std::sync::Mutex<Syncs>,
}

// SAFETY: under loom the cells are `!Sync` only because loom's `UnsafeCell` is. Every
// access goes through `Byte::get`/`Byte::set`, which loom checks against
// happens-before (failing the model on a race, before the access), and loom runs model
// threads one at a time on one OS thread. Without loom the bytes are atomics.
#[cfg(loom)]
unsafe impl Sync for ModelMap {}

impl ModelMap {
    /// `len` zero bytes of no file.
    fn new(len: usize, fail_sync: Option<usize>) -> ModelMap {
        ModelMap {
            bytes: (0..len).map(|_| Byte::new(0)).collect(),
            fail_sync,
            file: None,
            syncs: std::sync::Mutex::new(Syncs::default()),
        }
    }

    /// The first `len` bytes of `file`, as they are now.
    fn over(file: Arc<dyn FileHandle>, len: u64) -> std::io::Result<ModelMap> {
        let mut now = vec![0; len as usize];
        file.read_at(&mut now, 0)?;
        Ok(ModelMap {
            bytes: now.into_iter().map(Byte::new).collect(),
            fail_sync: None,
            file: Some(file),
            syncs: std::sync::Mutex::new(Syncs::default()),
        })
    }

    fn syncs(&self) -> std::sync::MutexGuard<'_, Syncs> {
        self.syncs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes before `end`, read as a sync reads them (checked by loom).
    fn read(&self, end: u64) -> Vec<u8> {
        self.bytes[..end as usize].iter().map(Byte::get).collect()
    }

    /// Sync calls so far.
    fn sync_attempts(&self) -> usize {
        self.syncs().attempts
    }

    /// The highest sequence a successful sync made durable.
    fn synced_through(&self) -> u64 {
        self.syncs().through
    }
}

/// The records of the frames in `bytes` after the file header, in file order with
/// their sequences. Fails unless they are whole and end exactly at the end of `bytes`:
/// a sync point or a copy that left a hole, a torn frame or overlapping frames fail.
fn decode(bytes: &[u8]) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    let mut at = FILE_HEADER_LEN;
    for frame in frames(bytes, FILE_HEADER_LEN) {
        let frame = frame.unwrap_or_else(|e| panic!("a hole or torn frame at byte {at}: {e}"));
        out.push((frame.seq, frame.record().expect("a frame that decodes")));
        at = frame.end();
    }
    assert_eq!(
        at,
        bytes.len(),
        "the frames end where the reserved bytes end"
    );
    out
}

impl MappedFile for ModelMap {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let bytes = &self.bytes[offset as usize..offset as usize + buf.len()];
        for (byte, b) in bytes.iter().zip(buf) {
            byte.set(*b);
        }
        Ok(())
    }

    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        assert_eq!(offset, 0, "the log syncs from the start of a segment");
        let attempt = {
            let mut s = self.syncs();
            s.attempts += 1;
            s.attempts
        };
        if self.fail_sync == Some(attempt) {
            return Err(std::io::Error::other(format!(
                "injected fault: sync {attempt}"
            )));
        }
        // What a sync makes durable: every byte before the sync point, each of which
        // must have been copied before the sync started (loom checks the reads).
        let bytes = self.read(len);
        let image = decode(&bytes);
        let seqs: Vec<u64> = image.iter().map(|(seq, _)| *seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "file order is sequence order: {seqs:?}"
        );
        if let Some(file) = &self.file {
            file.write_at(&bytes, 0)?;
            file.sync_data()?;
        }
        let mut s = self.syncs();
        s.through = s.through.max(seqs.last().copied().unwrap_or(0));
        Ok(())
    }
}

/// The segment's file: only its mapping is used by the log.
struct ModelFile(Arc<ModelMap>);

impl FileHandle for ModelFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.0.bytes[offset as usize + i].get();
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "the model segment has a fixed length",
        ))
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn map_mut(&self, len: u64) -> std::io::Result<Option<Arc<dyn MappedFile>>> {
        assert_eq!(len, self.0.len());
        Ok(Some(self.0.clone()))
    }
}

/// A crash-image directory whose files map onto [`ModelMap`]s, so that a data
/// directory's appends and switches go through loom-checked bytes too. A file's own
/// bytes receive only what a sync of its mapping wrote: a power cut keeps exactly the
/// synced frames.
#[derive(Clone, Default)]
struct ModelDisk(CrashImageBackend);

impl Backend for ModelDisk {
    fn lock(&self) -> Result<DirLock, LockError> {
        self.0.lock()
    }
    fn open(&self, name: &str, mode: OpenMode) -> std::io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(ModelDiskFile(self.0.open(name, mode)?)))
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.0.remove(name)
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.0.list()
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.0.sync_dir()
    }
}

/// A file of a [`ModelDisk`]: the crash image's file, mapped onto a [`ModelMap`].
struct ModelDiskFile(Arc<dyn FileHandle>);

impl FileHandle for ModelDiskFile {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn map_mut(&self, len: u64) -> std::io::Result<Option<Arc<dyn MappedFile>>> {
        Ok(Some(Arc::new(ModelMap::over(self.0.clone(), len)?)))
    }
}

/// Bytes of the model segments: room for a few small frames.
const SEGMENT_BYTES: usize = 192;

/// A log on one empty model segment whose records start at sequence 1.
fn model_log(policy: FsyncPolicy, fail_sync: Option<usize>) -> (Arc<Log>, Arc<ModelMap>) {
    let map = Arc::new(ModelMap::new(SEGMENT_BYTES, fail_sync));
    let file: Arc<dyn FileHandle> = Arc::new(ModelFile(map.clone()));
    let len = SEGMENT_BYTES as u64;
    let segment = Segment::open(file, "incr.model".into(), 1, 0, FILE_HEADER_LEN as u64, len)
        .expect("the model segment maps");
    (Arc::new(Log::new(segment, 0, policy)), map)
}

fn rec(key: &[u8]) -> Record {
    Record::Set {
        key: key.to_vec(),
        value: b"v".to_vec(),
        expire_at_ms: None,
    }
}

/// Opens a data directory on `disk`, passing the records it replays to `log`.
fn open_dir(disk: Arc<dyn Backend>, opts: &Options, log: &mut Vec<(u64, Record)>) -> DataDir {
    DataDir::open(disk, opts.clone(), &|_| {}, &mut |seq, r| {
        log.push((seq, r))
    })
    .expect("the directory opens")
}

/// The sequences of a write that must have fit.
fn written(w: Result<Written, AppendError>) -> RangeInclusive<u64> {
    match w.expect("the write succeeds") {
        Written::Seqs(seqs) => seqs,
        Written::Full { bytes } => panic!("the model segment is full ({bytes} bytes)"),
    }
}

/// An append as `DataDir::append` makes it: the write, then the wait for durability.
fn append(log: &Log, key: &[u8]) -> Result<u64, AppendError> {
    let seq = *written(Ok(log.write(&[rec(key)])?)).end();
    log.wait_durable(seq)?;
    Ok(seq)
}

/// Two appenders race, one writing a batch of two: their sequences are distinct and
/// each batch's consecutive, file order is sequence order, and the mapping decodes to
/// exactly their frames (a shared or overlapping reservation would leave a gap, lose a
/// frame or, under loom, race on the same bytes).
#[test]
fn racing_appenders_get_consecutive_sequences_in_file_order() {
    model(|| {
        let (log, map) = model_log(FsyncPolicy::No, None);
        let (la, lb) = (log.clone(), log.clone());
        let (a, b) = race(
            move || written(la.write(&[rec(b"a")])),
            move || written(lb.write(&[rec(b"b1"), rec(b"b2")])),
        );
        assert_eq!(a.clone().count(), 1);
        assert_eq!(b.clone().count(), 2);
        let mut all: Vec<u64> = a.clone().chain(b.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3], "distinct sequences from 1 on");
        let expected = |seq: u64| match seq {
            s if a.contains(&s) => rec(b"a"),
            s if s == *b.start() => rec(b"b1"),
            _ => rec(b"b2"),
        };
        let seg = log.segment();
        assert_eq!(seg.next_seq(), 4);
        let frames = decode(&map.read(seg.end()));
        let seqs: Vec<u64> = frames.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2, 3], "file order is sequence order");
        for (seq, record) in frames {
            assert_eq!(record, expected(seq), "the frame of sequence {seq}");
        }
    });
}

/// A sync point taken while an appender copies (by the `EverySec` tick): the sync
/// starts only after every frame before its point is copied (loom checks the sync's
/// reads against the copy; the sync's image must be whole frames), and it reports as
/// durable exactly what it synced.
#[test]
fn a_sync_point_has_no_copy_in_flight_behind_it() {
    model(|| {
        let (log, map) = model_log(FsyncPolicy::EverySec, None);
        written(log.write(&[rec(b"a")]));
        let (appender, syncer) = (log.clone(), log.clone());
        let (b, ()) = race(
            move || written(appender.write(&[rec(b"b")])),
            // The `EverySec` tick, the whole body of the background thread.
            move || syncer.sync_tick(),
        );
        assert_eq!(b, 2..=2);
        assert_eq!(map.sync_attempts(), 1);
        let through = map.synced_through();
        assert!(through >= 1, "the sync covers what was written before it");
        assert_eq!(
            log.lock().durable_seq,
            through,
            "durable is what was synced"
        );
    });
}

/// An append under `Always` that checks, once it returns, that a sync covering its
/// record has finished and that `durable_seq` is no further than the syncs.
fn append_checked(log: &Log, map: &ModelMap, key: &[u8]) -> u64 {
    let seq = append(log, key).expect("the append succeeds");
    assert!(
        map.synced_through() >= seq,
        "returned before a sync covered {seq}"
    );
    // `durable_seq` is read first: syncs only grow.
    let durable = log.lock().durable_seq;
    assert!(
        durable <= map.synced_through(),
        "durable {durable} not synced"
    );
    seq
}

/// Group commit under `Always`: two appenders wait, each returns only after a sync
/// covering its record has finished, `durable_seq` never runs ahead of the syncs, and
/// no waiter is left asleep (loom fails a model whose threads all block). Two
/// appenders need at most two syncs.
#[test]
fn group_commit_returns_only_after_a_sync_covers_the_record() {
    model(|| {
        let (log, map) = model_log(FsyncPolicy::Always, None);
        let (la, ma, lb, mb) = (log.clone(), map.clone(), log.clone(), map.clone());
        let (a, b) = race(
            move || append_checked(&la, &ma, b"a"),
            move || append_checked(&lb, &mb, b"b"),
        );
        assert_ne!(a, b);
        let st = log.lock();
        assert_eq!(st.durable_seq, 2);
        assert_eq!(map.synced_through(), 2);
        assert!(
            (1..=2).contains(&st.fsyncs),
            "{} syncs for two appends",
            st.fsyncs
        );
        assert_eq!(map.sync_attempts() as u64, st.fsyncs);
    });
}

/// After a failed sync the log is poisoned: neither racing append succeeds (their
/// records were never synced), every later append fails, a wait for a sequence synced
/// before the failure still succeeds, a wait for any other fails, and the failed sync
/// is never retried (Linux may drop the dirty pages and report success on a retry).
#[test]
fn a_failed_sync_poisons_every_later_append_and_wait() {
    model(|| {
        let (log, map) = model_log(FsyncPolicy::Always, Some(2));
        assert_eq!(append(&log, b"a").expect("the first sync succeeds"), 1);
        let (lb, lc) = (log.clone(), log.clone());
        let (b, c) = race(move || append(&lb, b"b"), move || append(&lc, b"c"));
        for (name, result) in [("b", b), ("c", c)] {
            assert!(
                matches!(result, Err(AppendError::Poisoned { .. })),
                "append {name} after the failed sync: {result:?}"
            );
        }
        assert!(log.is_poisoned());
        assert!(matches!(
            log.write(&[rec(b"d")]),
            Err(AppendError::Poisoned { .. })
        ));
        log.wait_durable(1)
            .expect("sequence 1 was durable before the failure");
        assert!(log.wait_durable(2).is_err());
        assert!(log.sync_all().is_err());
        assert_eq!(log.lock().durable_seq, 1);
        assert_eq!(map.sync_attempts(), 2, "no sync after the failed one");
        assert_eq!(map.synced_through(), 1);
    });
}

/// A segment switch racing an append, through the data directory on a crash image
/// under `Always`: the segment holds one record, so whichever appender comes second
/// switches while the first may still be copying or syncing. Both get consecutive
/// sequences and both acknowledged records survive a power cut, in sequence order (the
/// switch synced the old segment only once its copies were done).
#[test]
fn a_segment_switch_racing_an_append_loses_nothing() {
    let frame = (FRAME_HEADER_LEN + rec(b"a").encoded_len()) as u64;
    // Room for one frame after the header, not two (and above the smallest segment).
    let segment_bytes = (FILE_HEADER_LEN as u64 + frame * 3 / 2).max(64);
    assert!(segment_bytes - (FILE_HEADER_LEN as u64) < 2 * frame);
    let opts = Options {
        fsync: FsyncPolicy::Always,
        load_threads: 1,
        segment_bytes,
        ..Options::default()
    };
    model(move || {
        let disk = ModelDisk::default();
        let dir = Arc::new(open_dir(Arc::new(disk.clone()), &opts, &mut Vec::new()));
        let (da, db) = (dir.clone(), dir.clone());
        let (a, b) = race(
            move || da.append(&rec(b"a")).expect("append a"),
            move || db.append(&rec(b"b")).expect("append b"),
        );
        let mut acked = [(a, rec(b"a")), (b, rec(b"b"))];
        acked.sort_by_key(|(seq, _)| *seq);
        assert_eq!([acked[0].0, acked[1].0], [1, 2]);
        assert_eq!(
            dir.manifest().incrs.len(),
            2,
            "one append switched segments"
        );
        let mut replayed = Vec::new();
        let after_crash = open_dir(Arc::new(disk.0.crash()), &opts, &mut replayed);
        assert_eq!(
            replayed, acked,
            "the acknowledged records after a power cut"
        );
        drop(after_crash);
    });
}

/// A switch (the first step of a rewrite) racing an append under `Always`: the switch
/// syncs the old segment only once every copy into it is done (loom checks the sync's
/// reads against the copy), so what it then marks durable is, and the acknowledged
/// record survives a power cut whichever segment it went to.
#[test]
fn a_switch_racing_an_append_syncs_the_copy_before_marking_it_durable() {
    let opts = Options {
        fsync: FsyncPolicy::Always,
        load_threads: 1,
        segment_bytes: SEGMENT_BYTES as u64,
        ..Options::default()
    };
    model(move || {
        let disk = ModelDisk::default();
        let dir = Arc::new(open_dir(Arc::new(disk.clone()), &opts, &mut Vec::new()));
        let (appender, switcher) = (dir.clone(), dir.clone());
        let (a, ()) = race(
            move || appender.append(&rec(b"a")).expect("append a"),
            move || drop(switcher.begin_rewrite().expect("the switch succeeds")),
        );
        assert_eq!(a, 1);
        assert_eq!(
            dir.manifest().incrs.len(),
            2,
            "the rewrite switched segments"
        );
        let mut replayed = Vec::new();
        let after_crash = open_dir(Arc::new(disk.0.crash()), &opts, &mut replayed);
        assert_eq!(
            replayed,
            [(1, rec(b"a"))],
            "the acknowledged record after a power cut"
        );
        drop(after_crash);
    });
}

/// Group commit with three appenders: records copied while a leader syncs wait for
/// the next leader, every waiter woken by a sync that did not cover it either leads
/// or sleeps again until one does, and all three return (no lost wake-up), each only
/// after a sync covering it.
#[test]
fn group_commit_of_three_wakes_every_waiter() {
    model(|| {
        let (log, map) = model_log(FsyncPolicy::Always, None);
        let appender = |key: &'static [u8]| {
            let (log, map) = (log.clone(), map.clone());
            thread::spawn(move || append_checked(&log, &map, key))
        };
        let threads = [appender(b"a"), appender(b"b"), appender(b"c")];
        let mut seqs: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(log.lock().durable_seq, 3);
        assert_eq!(map.synced_through(), 3);
    });
}
