//! Injected I/O errors (full disk, failed fsync) are surfaced, poison the log, and lose
//! nothing already acknowledged.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{open, set};
use larder_persistence::backend::{CrashImageBackend, FaultBackend, FaultPlan, MemoryBackend};
use larder_persistence::{AppendError, Backend as _, FsyncPolicy, OpStatus, Options, RewriteError};

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        everysec_interval: Duration::from_millis(20),
        segment_bytes: 64 << 10,
        ..Options::default()
    }
}

#[test]
fn full_disk_is_reported_and_poisons() {
    let disk = MemoryBackend::new();
    let faulty = FaultBackend::new(disk.clone(), FaultPlan::default());
    let r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::Always)).unwrap();
    assert!(!r.dir.is_poisoned());
    faulty.set_plan(FaultPlan {
        capacity: Some(500),
        ..FaultPlan::default()
    });
    let mut acked = 0;
    let err = loop {
        match r.dir.append(&set(acked + 1)) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    match &err {
        AppendError::Write { file, source, .. } => {
            assert_eq!(file, "incr.1.aof");
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
        }
        e => panic!("unexpected {e}"),
    }
    let st = r.dir.status();
    assert!(st.poisoned);
    assert!(
        r.dir.is_poisoned(),
        "the lock-free check agrees with the status"
    );
    assert!(matches!(st.last_write, OpStatus::Err(_)));
    assert!(matches!(
        r.dir.append(&set(999)),
        Err(AppendError::Poisoned { .. })
    ));
    assert!(matches!(
        r.dir.begin_rewrite(),
        Err(RewriteError::Poisoned { .. })
    ));
    drop(r);
    // Space freed, reopened: the partial frame is cut, every acked record is there.
    faulty.set_plan(FaultPlan::default());
    let r = open(Arc::new(faulty), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(r.records.len() as u64, acked);
    assert!(r.dir.status().loading.truncated.is_some());
    r.dir.append(&set(1000)).unwrap();
}

#[test]
fn failed_fsync_under_always_is_reported_and_nothing_acked_is_lost() {
    let disk = CrashImageBackend::new();
    let faulty = FaultBackend::new(disk.clone(), FaultPlan::default());
    let r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::Always)).unwrap();
    for n in 1..=10 {
        r.dir.append(&set(n)).unwrap();
    }
    faulty.set_plan(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    let err = r.dir.append(&set(11)).unwrap_err();
    assert!(
        matches!(err, AppendError::Poisoned { ref cause } if cause.contains("fsync")),
        "{err}"
    );
    assert!(r.dir.is_poisoned());
    // Later appends are refused, not silently buffered.
    faulty.set_plan(FaultPlan::default());
    assert!(matches!(
        r.dir.append(&set(12)),
        Err(AppendError::Poisoned { .. })
    ));
    assert!(matches!(r.dir.status().last_write, OpStatus::Err(ref m) if m.contains("fsync")));
    // Power lost: the failed fsync synced nothing; all acknowledged records remain.
    let image = disk.crash();
    drop(r);
    let rec = open(Arc::new(image), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(rec.records.len(), 10);
}

#[test]
fn failed_fsync_under_everysec_poisons_later_appends() {
    let disk = MemoryBackend::new();
    let faulty = FaultBackend::new(disk, FaultPlan::default());
    let r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::EverySec)).unwrap();
    faulty.set_plan(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    r.dir.append(&set(1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !r.dir.status().poisoned {
        assert!(std::time::Instant::now() < deadline, "tick never failed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(r.dir.is_poisoned());
    assert!(matches!(
        r.dir.append(&set(2)),
        Err(AppendError::Poisoned { .. })
    ));
}

#[test]
fn failed_write_of_the_nth_record() {
    let disk = MemoryBackend::new();
    let faulty = FaultBackend::new(disk, FaultPlan::default());
    let mut r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::No)).unwrap();
    // An append is two writes: the frame with its checksum zero, then the checksum.
    // Failing either leaves nothing recovery reads as a record.
    for fail in [5, 6] {
        faulty.set_plan(FaultPlan {
            fail_write: Some(fail),
            ..FaultPlan::default()
        });
        r.dir.append(&set(1)).unwrap();
        r.dir.append(&set(2)).unwrap();
        assert!(matches!(
            r.dir.append(&set(3)),
            Err(AppendError::Write { .. })
        ));
        drop(r);
        faulty.set_plan(FaultPlan::default());
        r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::No)).unwrap();
        assert_eq!(r.records.len(), 2, "failing write {fail}");
        assert_eq!(r.records[1].0, 2);
        // Start the next case from an empty directory again.
        drop(r);
        for name in faulty.inner().list().unwrap() {
            faulty.inner().remove(&name).unwrap();
        }
        r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::No)).unwrap();
    }
}

#[test]
fn failed_rewrite_keeps_the_old_files_and_can_retry() {
    let disk = MemoryBackend::new();
    let faulty = FaultBackend::new(disk.clone(), FaultPlan::default());
    let r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::Always)).unwrap();
    for n in 1..=5 {
        r.dir.append(&set(n)).unwrap();
    }
    let mut rw = r.dir.begin_rewrite().unwrap();
    for (k, (v, e)) in &r.model {
        rw.push(k, v, *e).unwrap();
    }
    // The base's fsync fails.
    faulty.set_plan(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    assert!(r.dir.finish_rewrite(rw).is_err());
    let st = r.dir.status();
    assert!(!st.rewrite_in_progress);
    assert!(matches!(st.last_rewrite, OpStatus::Err(_)));
    assert!(!st.poisoned, "a failed base write does not touch the log");
    assert!(!r.dir.is_poisoned());
    faulty.set_plan(FaultPlan::default());
    r.dir.append(&set(6)).unwrap();
    // The files in force still load.
    let copy = common::copy_dir(&disk);
    assert_eq!(
        open(Arc::new(copy), opts(FsyncPolicy::No))
            .unwrap()
            .records
            .len(),
        6
    );
    // Retry.
    let mut rw = r.dir.begin_rewrite().unwrap();
    for n in 1..=6 {
        let larder_persistence::Record::Set {
            key,
            value,
            expire_at_ms,
        } = set(n)
        else {
            unreachable!()
        };
        rw.push(&key, &value, expire_at_ms).unwrap();
    }
    r.dir.finish_rewrite(rw).unwrap();
    assert_eq!(r.dir.status().last_rewrite, OpStatus::Ok);
    drop(r);
    let r = open(Arc::new(disk), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(r.model.len(), 6);
}

#[test]
fn failed_fsync_of_the_old_file_at_a_switch_poisons() {
    let disk = MemoryBackend::new();
    let faulty = FaultBackend::new(disk, FaultPlan::default());
    let r = open(Arc::new(faulty.clone()), opts(FsyncPolicy::No)).unwrap();
    r.dir.append(&set(1)).unwrap();
    // Under `No` nothing fsyncs until the rewrite's switch: it syncs the new incr
    // file's header (1), then the old file (2).
    faulty.set_plan(FaultPlan {
        fail_sync: Some(2),
        ..FaultPlan::default()
    });
    assert!(r.dir.begin_rewrite().is_err());
    assert!(r.dir.is_poisoned());
    assert!(r.dir.status().poisoned);
    faulty.set_plan(FaultPlan::default());
    assert!(matches!(
        r.dir.append(&set(2)),
        Err(AppendError::Poisoned { ref cause }) if cause.contains("fsync")
    ));
}
