//! The mapped log tail: the appended format (version 1) still opens, holes left by
//! copies cut short are skipped, segments roll over, and concurrent appenders keep
//! every record.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{open, put, set, Model};
use larder_persistence::backend::{CrashImageBackend, FsBackend, MemoryBackend};
use larder_persistence::frame::{
    check_file_header, decode_frame, frames, AOF_VERSION, AOF_VERSION_APPENDED, CRC_OFFSET,
    FILE_HEADER_LEN,
};
use larder_persistence::{Backend, FsyncPolicy, OpenError, Options, Record};

fn opts(fsync: FsyncPolicy, segment_bytes: u64) -> Options {
    Options {
        fsync,
        load_threads: 2,
        segment_bytes,
        everysec_interval: Duration::from_millis(20),
        ..Options::default()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `tests/fixtures/v1-log` was written by larder before the tail was mapped
/// (`pwrite` appends, version 1 incr files, two of them). It opens with the same
/// records, appends go to a new mapped segment, and all of it opens again.
#[test]
fn a_directory_of_the_appended_format_still_opens() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log");
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture, tmp.path());
    for name in ["incr.1.aof", "incr.2.aof"] {
        let bytes = std::fs::read(tmp.path().join(name)).unwrap();
        assert_eq!(check_file_header(&bytes), Ok(AOF_VERSION_APPENDED));
    }
    let backend = || -> Arc<dyn Backend> { Arc::new(FsBackend::new(tmp.path()).unwrap()) };
    let mut want = Model::new();
    want.insert(b"b".to_vec(), (b"2".to_vec(), None));
    want.insert(b"c".to_vec(), (b"3".to_vec(), Some(5_000_000_000_000)));
    want.insert(b"d".to_vec(), (b"4".to_vec(), None));
    want.insert(b"e".to_vec(), (b"5".to_vec(), None));

    let r = open(backend(), opts(FsyncPolicy::Always, 4096)).unwrap();
    assert_eq!(r.model, want);
    let seqs: Vec<u64> = r.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let m = r.dir.manifest();
    let names: Vec<&str> = m.incrs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["incr.1.aof", "incr.2.aof", "incr.3.aof"]);
    assert_eq!(m.incrs[2].seq, 8);
    assert_eq!(r.dir.append(&set(1)).unwrap(), 8);
    drop(r);
    let bytes = std::fs::read(tmp.path().join("incr.3.aof")).unwrap();
    assert_eq!(check_file_header(&bytes), Ok(AOF_VERSION));

    let r = open(backend(), opts(FsyncPolicy::Always, 4096)).unwrap();
    want.insert(b"key1".to_vec(), (b"value1".to_vec(), None));
    assert_eq!(r.model, want);
    assert_eq!(r.dir.status().next_seq, 9);
}

/// A directory with `n` records in one mapped segment; returns the backend and the
/// offsets of the frames.
fn mapped_dir(n: u64) -> (MemoryBackend, Vec<usize>) {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts(FsyncPolicy::No, 4096)).unwrap();
    for i in 1..=n {
        r.dir.append(&set(i)).unwrap();
    }
    drop(r);
    let bytes = b.read_all("incr.1.aof").unwrap();
    let starts = frames(&bytes, FILE_HEADER_LEN)
        .map_while(Result::ok)
        .map(|f| f.offset)
        .collect();
    (b, starts)
}

fn zero(bytes: &mut [u8], start: usize, end: usize) {
    bytes[start..end].iter_mut().for_each(|b| *b = 0);
}

/// Frames reserved but never copied (zeros), or copied but for their checksum (the
/// last store), before later whole frames: skipped and reported; the later frames
/// are kept, and appends go on after them.
#[test]
fn holes_before_whole_frames_are_skipped_and_reported() {
    let (b, starts) = mapped_dir(6);
    let full = b.read_all("incr.1.aof").unwrap().to_vec();
    let end_of = |i: usize| decode_frame(&full, starts[i]).unwrap().end();
    // Frame 2 (seq 3) never copied; frame 4 (seq 5) copied without its checksum.
    let mut bytes = full.clone();
    zero(&mut bytes, starts[2], end_of(2));
    zero(
        &mut bytes,
        starts[4] + CRC_OFFSET,
        starts[4] + CRC_OFFSET + 4,
    );
    put(&b, "incr.1.aof", &bytes);
    let r = open(Arc::new(b.clone()), opts(FsyncPolicy::No, 4096)).unwrap();
    let seqs: Vec<u64> = r.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 4, 6]);
    let holes = r.dir.status().loading.holes;
    let found: Vec<(u64, u64, u64)> = holes
        .iter()
        .map(|h| (h.offset, h.first_seq, h.records))
        .collect();
    assert_eq!(found, [(starts[2] as u64, 3, 1), (starts[4] as u64, 5, 1)]);
    assert_eq!(r.dir.append(&set(7)).unwrap(), 7);
    drop(r);
    let r = open(Arc::new(b.clone()), opts(FsyncPolicy::No, 4096)).unwrap();
    let seqs: Vec<u64> = r.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 4, 6, 7]);

    // Two adjacent reservations never copied: one hole of two records.
    let (b, starts) = mapped_dir(6);
    let mut bytes = b.read_all("incr.1.aof").unwrap().to_vec();
    zero(&mut bytes, starts[1], starts[3]);
    put(&b, "incr.1.aof", &bytes);
    let r = open(Arc::new(b), opts(FsyncPolicy::No, 4096)).unwrap();
    let seqs: Vec<u64> = r.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 4, 5, 6]);
    assert_eq!(r.dir.status().loading.holes[0].records, 2);
}

/// Damage to a whole frame leaves its checksum field nonzero: not a hole, and open
/// refuses it as before, naming file and offset.
#[test]
fn a_damaged_whole_frame_before_later_frames_is_corruption() {
    let (b, starts) = mapped_dir(6);
    let mut bytes = b.read_all("incr.1.aof").unwrap().to_vec();
    bytes[starts[2] + 20] ^= 0x40;
    put(&b, "incr.1.aof", &bytes);
    match open(Arc::new(b), opts(FsyncPolicy::No, 4096)) {
        Err(OpenError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, "incr.1.aof");
            assert_eq!(offset, starts[2] as u64);
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("damage accepted as a hole"),
    }
}

/// A hole in a file that is not the last is corruption: a segment is synced whole
/// before the manifest names its successor.
#[test]
fn a_hole_in_a_closed_segment_is_corruption() {
    let (b, starts) = mapped_dir(6);
    {
        let r = open(Arc::new(b.clone()), opts(FsyncPolicy::No, 4096)).unwrap();
        drop(r.dir.begin_rewrite().unwrap());
        r.dir.append(&set(50)).unwrap();
    }
    let mut bytes = b.read_all("incr.1.aof").unwrap().to_vec();
    let end = decode_frame(&bytes, starts[2]).unwrap().end();
    zero(&mut bytes, starts[2], end);
    put(&b, "incr.1.aof", &bytes);
    assert!(matches!(
        open(Arc::new(b), opts(FsyncPolicy::No, 4096)),
        Err(OpenError::Corrupt { .. })
    ));
}

/// Segments roll over when full (an append bigger than a segment gets one of its own
/// size), under concurrent appenders; every record is replayed in sequence order and
/// the sizes count frames, not preallocated zeros.
#[test]
fn segments_roll_over_under_concurrent_appenders() {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts(FsyncPolicy::EverySec, 1024)).unwrap();
    let acked: Mutex<Vec<(u64, Record)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (dir, acked) = (&r.dir, &acked);
            s.spawn(move || {
                for i in 0..150 {
                    let rec = set(t * 1000 + i);
                    let seq = dir.append(&rec).unwrap();
                    acked.lock().unwrap().push((seq, rec));
                }
            });
        }
    });
    let big = Record::Set {
        key: b"big".to_vec(),
        value: vec![9; 3000],
        expire_at_ms: None,
    };
    r.dir.append(&big).unwrap();
    let st = r.dir.status();
    assert_eq!(st.next_seq, 602);
    let files = r.dir.manifest().incrs.len();
    assert!(
        files > 10,
        "only {files} segments for ~20 KiB in 1 KiB segments"
    );
    let logged: u64 = 601 * 10 + 3000;
    assert!(
        st.aof_current_size < logged * 4,
        "aof_current_size {} counts preallocation",
        st.aof_current_size
    );
    drop(r);
    let r = open(Arc::new(b), opts(FsyncPolicy::EverySec, 1024)).unwrap();
    let seqs: Vec<u64> = r.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=601).collect::<Vec<_>>());
    let got: HashMap<u64, Record> = r.records.into_iter().collect();
    for (seq, rec) in acked.into_inner().unwrap() {
        assert_eq!(got.get(&seq), Some(&rec));
    }
    assert_eq!(got.get(&601), Some(&big));
    assert!(r.dir.status().loading.holes.is_empty());
}

/// Power cut under `Always` with many appenders and small segments (switches in the
/// middle): every acknowledged record is in the image; the image opens.
#[test]
fn power_cut_under_always_with_many_appenders_and_switches() {
    for round in 0..4u64 {
        let disk = CrashImageBackend::new();
        let r = open(Arc::new(disk.clone()), opts(FsyncPolicy::Always, 2048)).unwrap();
        let acked: Mutex<Vec<(u64, Record)>> = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        let (before, image) = std::thread::scope(|s| {
            for t in 0..8u64 {
                let (dir, acked, stop) = (&r.dir, &acked, &stop);
                s.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let rec = set(t * 1_000_000 + i);
                        let seq = dir.append(&rec).unwrap();
                        acked.lock().unwrap().push((seq, rec));
                        i += 1;
                    }
                });
            }
            // Wait for acknowledged appends past a few switches, then cut.
            let want = 50 + round * 40;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while (acked.lock().unwrap().len() as u64) < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: stalled"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let before = acked.lock().unwrap().clone();
            let image = disk.crash();
            stop.store(true, Ordering::Relaxed);
            (before, image)
        });
        let rec = open(Arc::new(image), opts(FsyncPolicy::Always, 2048))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got: HashMap<u64, Record> = rec.records.into_iter().collect();
        for (seq, r) in &before {
            assert_eq!(got.get(seq), Some(r), "round {round}: acked seq {seq} lost");
        }
    }
}
