//! One writer per directory, manifests that cannot be trusted, files that must not be
//! deleted, schema tags, and the cost of cutting a garbage tail.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::{open, put, set, Rng};
use larder_persistence::backend::{FsBackend, MemoryBackend};
use larder_persistence::frame::{decode_frame, file_header, FRAME_HEADER_LEN};
use larder_persistence::manifest::{base_name, incr_name, ManifestFile};
use larder_persistence::{
    Backend, FsyncPolicy, LockError, Manifest, ManifestError, OpenError, Options, SchemaMismatch,
    TailKind,
};

const CHILD_ENV: &str = "LARDER_HARDENING_CHILD";

fn opts() -> Options {
    Options {
        fsync: FsyncPolicy::No,
        load_threads: 2,
        segment_bytes: 64 << 10,
        ..Options::default()
    }
}

fn write_manifest(b: &dyn Backend, m: &Manifest) {
    put(b, "manifest", &m.encode());
}

fn incr(name: &str, seq: u64) -> ManifestFile {
    ManifestFile {
        name: name.into(),
        seq,
    }
}

#[test]
fn a_second_open_in_one_process_is_refused_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = || -> Arc<dyn Backend> { Arc::new(FsBackend::new(tmp.path()).unwrap()) };
    let first = open(disk(), opts()).unwrap();
    first.dir.append(&set(1)).unwrap();
    match open(disk(), opts()) {
        Err(OpenError::Locked(LockError::Held { pid, .. })) => {
            assert_eq!(pid, Some(std::process::id()));
        }
        Err(e) => panic!("second open: {e}"),
        Ok(_) => panic!("a second open of one directory succeeded"),
    }
    let msg = open(disk(), opts()).err().unwrap().to_string();
    assert!(msg.contains("already open in this process"), "{msg}");
    drop(first);
    let again = open(disk(), opts()).unwrap();
    assert_eq!(again.records.len(), 1);

    // The in-memory backends lock the same way.
    let mem = MemoryBackend::new();
    let a = open(Arc::new(mem.clone()), opts()).unwrap();
    assert!(matches!(
        open(Arc::new(mem.clone()), opts()),
        Err(OpenError::Locked(_))
    ));
    drop(a);
    open(Arc::new(mem), opts()).unwrap();
}

/// The child: opens the directory, says so, and holds it until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = open(Arc::new(FsBackend::new(&path).unwrap()), opts()).unwrap();
    r.dir.append(&set(7)).unwrap();
    println!("OPEN {}", std::process::id());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(r);
}

#[test]
fn a_second_open_from_another_process_names_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let pid = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
        // libtest may print "test lock_holder_child ... " on the same line first.
        if let Some(at) = line.find("OPEN ") {
            break line[at + 5..].trim().parse::<u32>().unwrap();
        }
    };
    assert_eq!(pid, child.id());
    let disk = || -> Arc<dyn Backend> { Arc::new(FsBackend::new(tmp.path()).unwrap()) };
    match open(disk(), opts()) {
        Err(OpenError::Locked(LockError::Held { pid: got, .. })) => assert_eq!(got, Some(pid)),
        Err(e) => panic!("open while another process holds it: {e}"),
        Ok(_) => panic!("two processes opened one directory"),
    }
    let msg = open(disk(), opts()).err().unwrap().to_string();
    assert!(msg.contains(&format!("by process {pid}")), "{msg}");
    // The holder exits; its lock goes with it.
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
    let r = open(disk(), opts()).unwrap();
    assert_eq!(r.records.len(), 1);
}

#[test]
fn a_manifest_with_sequence_zero_or_a_maximal_file_id_does_not_open() {
    let b = MemoryBackend::new();
    drop(open(Arc::new(b.clone()), opts()).unwrap());
    let bad = "larder-manifest 1\nfile incr.1.aof type i seq 0\n";
    put(&b, "manifest", &with_crc(bad));
    match open(Arc::new(b.clone()), opts()) {
        Err(OpenError::Manifest(ManifestError::SequenceRange { seq: 0, .. })) => {}
        Err(e) => panic!("seq 0: {e}"),
        Ok(_) => panic!("a manifest with seq 0 opened"),
    }
    let name = format!("incr.{}.aof", u64::MAX);
    put(&b, &name, &file_header());
    let bad = format!("larder-manifest 1\nfile {name} type i seq 1\n");
    put(&b, "manifest", &with_crc(&bad));
    assert!(matches!(
        open(Arc::new(b.clone()), opts()),
        Err(OpenError::Manifest(ManifestError::FileId { .. }))
    ));
    assert!(larder_persistence::recovery::check(&b, &mut |_| {}).is_err());
}

fn with_crc(body: &str) -> Vec<u8> {
    format!("{body}crc32 {:08x}\n", crc32fast_hash(body.as_bytes())).into_bytes()
}

/// CRC-32 (IEEE) without a dev-dependency: a manifest re-encoded gives the same line.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_log_that_does_not_start_where_the_base_or_1_says_does_not_open() {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    for n in 1..=100 {
        r.dir.append(&set(n)).unwrap();
    }
    drop(r);
    // A second incr file starting at 101 and a manifest that forgets the first one:
    // 100 keys would be silently missing.
    put(&b, "incr.2.aof", &file_header());
    write_manifest(
        &b,
        &Manifest {
            base: None,
            incrs: vec![incr("incr.2.aof", 101)],
            schema: None,
        },
    );
    match open(Arc::new(b.clone()), opts()) {
        Err(OpenError::Manifest(ManifestError::Start {
            seq: 101,
            expected: 1,
            ..
        })) => {}
        Err(e) => panic!("{e}"),
        Ok(r) => panic!("opened with {} records", r.records.len()),
    }
    // The refused open removed nothing.
    assert!(b.list().unwrap().contains(&"incr.1.aof".to_string()));
}

#[test]
fn files_the_manifest_lost_track_of_are_kept_and_refuse_the_open() {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    for n in 1..=10 {
        r.dir.append(&set(n)).unwrap();
    }
    drop(r);
    // A stale manifest naming only a fresh file with a torn tail: incr.1.aof's ten
    // records are acknowledged writes no manifest names.
    let mut torn = file_header().to_vec();
    torn.extend_from_slice(&[0x55; 9]);
    put(&b, "incr.2.aof", &torn);
    write_manifest(
        &b,
        &Manifest {
            base: None,
            incrs: vec![incr("incr.2.aof", 1)],
            schema: None,
        },
    );
    match open(Arc::new(b.clone()), opts()) {
        Err(OpenError::Unnamed { file, .. }) => assert_eq!(file, "incr.1.aof"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened over unnamed records"),
    }
    // Nothing was removed, and nothing cut: the refusal came before recovery.
    assert!(b.list().unwrap().contains(&"incr.1.aof".to_string()));
    assert_eq!(b.read_all("incr.2.aof").unwrap().len(), torn.len());

    // Real leftovers still go: a temp file, a base of an unfinished rewrite, an incr
    // file holding only its header, an incr file older than the base.
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    for n in 1..=5 {
        r.dir.append(&set(n)).unwrap();
    }
    let rw = r.dir.begin_rewrite().unwrap();
    r.dir.finish_rewrite(rw).unwrap();
    drop(r);
    let old = b.list().unwrap();
    put(&b, "manifest.tmp", b"half");
    // A base a later rewrite replaced.
    put(&b, &base_name(1), b"superseded base");
    put(&b, &incr_name(8), &file_header());
    let mut stale = file_header().to_vec();
    stale.extend_from_slice(&[1; 40]);
    put(&b, &incr_name(1), &stale);
    // A base newer than everything named: a stale manifest, refused untouched.
    put(&b, &base_name(9), b"newer base");
    assert!(matches!(
        open(Arc::new(b.clone()), opts()),
        Err(OpenError::Unnamed { file, .. }) if file == base_name(9)
    ));
    b.remove(&base_name(9)).unwrap();
    drop(open(Arc::new(b.clone()), opts()).unwrap());
    let mut now = b.list().unwrap();
    now.sort();
    let mut want = old;
    want.sort();
    assert_eq!(now, want);
}

#[test]
fn new_files_never_reuse_the_id_of_a_file_present() {
    let b = MemoryBackend::new();
    drop(open(Arc::new(b.clone()), opts()).unwrap());
    // A failed switch's empty incr file with an id above the manifest's: the next
    // switch must not create (and truncate) a file of the same id.
    put(&b, &incr_name(5), &file_header());
    // A file with an id no manifest may name is not stepped over (its successor
    // would wrap), only removed.
    put(&b, &incr_name(u64::MAX), &file_header());
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    r.dir.append(&set(1)).unwrap();
    let rw = r.dir.begin_rewrite().unwrap();
    r.dir.finish_rewrite(rw).unwrap();
    let m = r.dir.manifest();
    assert_eq!(m.base.unwrap().name, base_name(6));
    drop(r);
    assert!(!b.list().unwrap().contains(&incr_name(u64::MAX)));
    open(Arc::new(b), opts()).unwrap();
}

#[test]
fn a_changed_schema_tag_refuses_or_discards() {
    let b = MemoryBackend::new();
    let tagged = |tag: &str, on: SchemaMismatch| Options {
        schema: Some(tag.into()),
        on_schema_mismatch: on,
        ..opts()
    };
    let r = open(Arc::new(b.clone()), tagged("v1", SchemaMismatch::Refuse)).unwrap();
    r.dir.append(&set(1)).unwrap();
    assert_eq!(r.dir.manifest().schema.as_deref(), Some("v1"));
    drop(r);
    // Same tag, or none asked for: opens.
    assert_eq!(
        open(Arc::new(b.clone()), tagged("v1", SchemaMismatch::Refuse))
            .unwrap()
            .records
            .len(),
        1
    );
    assert_eq!(open(Arc::new(b.clone()), opts()).unwrap().records.len(), 1);
    match open(Arc::new(b.clone()), tagged("v2", SchemaMismatch::Refuse)) {
        Err(OpenError::Schema { found, expected }) => {
            assert_eq!((found.as_str(), expected.as_str()), ("v1", "v2"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened under another schema"),
    }
    let r = open(Arc::new(b.clone()), tagged("v2", SchemaMismatch::Discard)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(
        r.dir.status().loading.discarded_schema.as_deref(),
        Some("v1")
    );
    assert_eq!(r.dir.manifest().schema.as_deref(), Some("v2"));
    r.dir.append(&set(2)).unwrap();
    drop(r);
    let r = open(Arc::new(b.clone()), tagged("v2", SchemaMismatch::Refuse)).unwrap();
    assert_eq!(r.records.len(), 1);
    drop(r);

    // An untagged directory (older versions) opens under any tag and is tagged only
    // when the caller says the data decoded.
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    r.dir.append(&set(1)).unwrap();
    drop(r);
    let r = open(Arc::new(b.clone()), tagged("v3", SchemaMismatch::Refuse)).unwrap();
    assert_eq!(r.dir.manifest().schema, None);
    r.dir.record_schema("v3").unwrap();
    drop(r);
    assert!(matches!(
        open(Arc::new(b), tagged("v4", SchemaMismatch::Refuse)),
        Err(OpenError::Schema { .. })
    ));
}

#[test]
fn an_emptied_last_incr_file_is_reported_as_lost_records_not_a_torn_tail() {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    for n in 1..=150 {
        r.dir.append(&set(n)).unwrap();
    }
    let rw = r.dir.begin_rewrite().unwrap();
    drop(rw);
    for n in 151..=300 {
        r.dir.append(&set(n)).unwrap();
    }
    drop(r);
    put(&b, "incr.2.aof", b"");
    let replay = larder_persistence::recovery::check(&b, &mut |_| {}).unwrap();
    let tail = replay.tail.unwrap();
    assert_eq!((tail.file.as_str(), tail.offset), ("incr.2.aof", 0));
    let TailKind::Corrupt(why) = &tail.kind else {
        panic!("reported as {:?}", tail.kind)
    };
    assert!(why.contains("from sequence 151 on is lost"), "{why}");
    match open(Arc::new(b), opts()) {
        Err(OpenError::Corrupt { file, seq: 151, .. }) => assert_eq!(file, "incr.2.aof"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an emptied file opened as a torn tail"),
    }
}

/// A random garbage tail cut on open costs time linear in its size. Prints figures;
/// run with `cargo test --release -p larder-persistence --test hardening -- --ignored
/// --nocapture garbage_tail_figures`.
#[test]
#[ignore = "prints timings; run by hand in release"]
fn garbage_tail_figures() {
    for mib in [4usize, 16, 64] {
        let tmp = tempfile::tempdir().unwrap();
        let disk = || -> Arc<dyn Backend> { Arc::new(FsBackend::new(tmp.path()).unwrap()) };
        let r = open(disk(), opts()).unwrap();
        for n in 1..=100 {
            r.dir.append(&set(n)).unwrap();
        }
        drop(r);
        let path = tmp.path().join("incr.1.aof");
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len();
        let mut rng = Rng(0x5eed ^ mib as u64);
        bytes.extend((0..mib << 20).map(|_| rng.next() as u8));
        std::fs::write(&path, &bytes).unwrap();

        let started = Instant::now();
        let replay = larder_persistence::recovery::check(&*disk(), &mut |_| {}).unwrap();
        let check_s = started.elapsed().as_secs_f64();
        assert_eq!(replay.tail.unwrap().offset, good as u64);
        let started = Instant::now();
        let r = open(disk(), opts()).unwrap();
        let open_s = started.elapsed().as_secs_f64();
        assert_eq!(r.records.len(), 100);
        let scan = larder_persistence::frame::scan_for_frame(&bytes, good, Some(100));
        println!(
            "garbage tail {mib:>3} MiB: check {check_s:.3} s, open {open_s:.3} s, \
             {:.2} bytes hashed per byte",
            scan.bytes_hashed as f64 / (bytes.len() - good) as f64
        );
        // Crafted garbage: a header passing every cheap test at every 16th byte, each
        // claiming a payload to the end of the file (the worst case for the scan).
        let mut crafted = bytes[..good].to_vec();
        let mut i = 0u64;
        while crafted.len() + FRAME_HEADER_LEN <= bytes.len() {
            let rest = bytes.len() - crafted.len() - FRAME_HEADER_LEN;
            crafted.extend_from_slice(&(rest as u32).to_le_bytes());
            crafted.extend_from_slice(&[0xAB; 4]);
            crafted.extend_from_slice(&(101 + i / 4).to_le_bytes());
            i += 1;
        }
        let started = Instant::now();
        let scan = larder_persistence::frame::scan_for_frame(&crafted, good, Some(100));
        assert_eq!(scan.found, None);
        println!(
            "crafted tail {mib:>3} MiB: scan {:.3} s, {:.2} bytes hashed per byte",
            started.elapsed().as_secs_f64(),
            scan.bytes_hashed as f64 / (crafted.len() - good) as f64
        );
        // A uniform fill under a log whose sequences have the same bytes: every
        // offset is a candidate.
        let uniform = vec![1u8; bytes.len()];
        let started = Instant::now();
        let scan =
            larder_persistence::frame::scan_for_frame(&uniform, 0, Some(0x0101_0101_0101_0100));
        assert_eq!(scan.found, None);
        println!(
            "uniform tail {mib:>3} MiB: scan {:.3} s, {:.2} bytes hashed per byte",
            started.elapsed().as_secs_f64(),
            scan.bytes_hashed as f64 / uniform.len() as f64
        );
        if mib <= 16 {
            // The byte-by-byte scan this replaced, for comparison.
            let started = Instant::now();
            let mut pos = good + 1;
            while pos + FRAME_HEADER_LEN <= bytes.len() {
                std::hint::black_box(decode_frame(std::hint::black_box(&bytes), pos).is_ok());
                pos += 1;
            }
            println!(
                "garbage tail {mib:>3} MiB: byte-by-byte CRC scan (before) {:.3} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

#[test]
fn a_base_records_its_schema_and_a_manifest_of_another_is_refused() {
    let b = MemoryBackend::new();
    let tagged = |tag: &str| Options {
        schema: Some(tag.into()),
        ..opts()
    };
    let r = open(Arc::new(b.clone()), tagged("v1")).unwrap();
    r.dir.append(&set(1)).unwrap();
    let mut rw = r.dir.begin_rewrite().unwrap();
    rw.push(b"key1", b"value1", None).unwrap();
    r.dir.finish_rewrite(rw).unwrap();
    let base = r.dir.manifest().base.unwrap().name;
    drop(r);
    let bytes = b.read_all(&base).unwrap();
    let layout = larder_persistence::snapshot::SnapshotLayout::parse(&base, &bytes).unwrap();
    assert_eq!(
        layout.schema_crc,
        larder_persistence::snapshot::schema_crc(Some("v1"))
    );
    // The manifest re-tagged by hand: the base says otherwise.
    let mut m = Manifest::parse(&b.read_all("manifest").unwrap()).unwrap();
    m.schema = Some("v2".into());
    write_manifest(&b, &m);
    match open(Arc::new(b.clone()), tagged("v2")) {
        Err(OpenError::BaseSchema { file, .. }) => assert_eq!(file, base),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a base of another schema"),
    }
    // An untagged manifest (older versions) accepts any base.
    m.schema = None;
    write_manifest(&b, &m);
    assert_eq!(open(Arc::new(b), opts()).unwrap().model.len(), 1);
}

#[test]
fn an_emptied_earlier_incr_file_names_the_sequences_it_held() {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts()).unwrap();
    for n in 1..=40 {
        r.dir.append(&set(n)).unwrap();
    }
    drop(r.dir.begin_rewrite().unwrap());
    r.dir.append(&set(41)).unwrap();
    drop(r);
    put(&b, "incr.1.aof", b"");
    let err = open(Arc::new(b), opts()).err().unwrap();
    assert!(
        matches!(&err, OpenError::Header { file, seq: 1, .. } if file == "incr.1.aof"),
        "{err}"
    );
    assert!(err.to_string().contains("from sequence 1 on"), "{err}");
}

/// A directory closed and reopened while another thread spawns processes is never
/// reported busy: a child forked on its way to `exec` must not hold a copy of the lock
/// (as it would hold a copy of an `flock`).
#[test]
fn reopening_while_another_thread_spawns_processes_is_never_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("true").status();
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for round in 0..300 {
                let disk: Arc<dyn Backend> = Arc::new(FsBackend::new(tmp.path()).unwrap());
                let r = open(disk, opts()).unwrap_or_else(|e| panic!("round {round}: {e}"));
                r.dir.append(&set(round)).unwrap();
            }
        }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });
}

#[test]
fn removing_the_lock_file_does_not_let_a_second_open_in_this_process() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = || -> Arc<dyn Backend> { Arc::new(FsBackend::new(tmp.path()).unwrap()) };
    let first = open(disk(), opts()).unwrap();
    first.dir.append(&set(1)).unwrap();
    // An operator takes the lock file for a stale one and removes it.
    std::fs::remove_file(tmp.path().join("lock")).unwrap();
    match open(disk(), opts()) {
        Err(OpenError::Locked(LockError::Held { pid, .. })) => {
            assert_eq!(pid, Some(std::process::id()));
        }
        Err(e) => panic!("second open: {e}"),
        Ok(_) => panic!("a second open succeeded once the lock file was removed"),
    }
    // The same directory by another path (a symlink) is the same directory.
    let link = tempfile::tempdir().unwrap();
    let alias = link.path().join("alias");
    std::os::unix::fs::symlink(tmp.path(), &alias).unwrap();
    assert!(matches!(
        open(Arc::new(FsBackend::new(&alias).unwrap()), opts()),
        Err(OpenError::Locked(_))
    ));
    drop(first);
    let again = open(disk(), opts()).unwrap();
    assert_eq!(again.records.len(), 1);
}

#[test]
fn a_discard_cut_short_at_any_step_still_opens() {
    use larder_persistence::backend::{FaultBackend, FaultPlan};
    let tagged = |tag: &str| Options {
        schema: Some(tag.into()),
        on_schema_mismatch: SchemaMismatch::Discard,
        ..opts()
    };
    // The data is discarded (a schema change) and the process dies after each step in
    // turn: before the switch the old data stands, after it the directory is empty;
    // either way it opens, and the old files go.
    let mut n = 1;
    loop {
        let b = MemoryBackend::new();
        let r = open(Arc::new(b.clone()), tagged("v1")).unwrap();
        for k in 1..=3 {
            r.dir.append(&set(k)).unwrap();
        }
        let mut rw = r.dir.begin_rewrite().unwrap();
        rw.push(b"key0", b"value0", None).unwrap();
        r.dir.finish_rewrite(rw).unwrap();
        r.dir.append(&set(4)).unwrap();
        drop(r);
        let faulty = FaultBackend::new(
            b.clone(),
            FaultPlan {
                fail_after_ops: Some(n),
                ..FaultPlan::default()
            },
        );
        let done = larder_persistence::discard(&faulty, Some("v2".into())).is_ok();
        let r = open(Arc::new(b.clone()), tagged("v2"))
            .unwrap_or_else(|e| panic!("cut after {n} operations: {e}"));
        assert!(r.model.is_empty(), "cut after {n} operations");
        drop(r);
        let names = b.list().unwrap();
        // The manifest and one empty incr file: no old data, no marker.
        assert_eq!(names.len(), 2, "cut after {n} operations: {names:?}");
        if done {
            break;
        }
        n += 1;
    }
    assert!(n > 5, "the discard took {n} operations");
}
