//! Open, append, reopen, rewrite: the life cycle on every backend.

mod common;

use std::sync::Arc;

use common::{open, set, Model};
use larder_persistence::backend::{FsBackend, MemoryBackend};
use larder_persistence::{
    Backend, FsyncPolicy, OpStatus, OpenError, Options, Record, RewriteError,
};

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        section_bytes: 200,
        segment_bytes: 64 << 10,
        ..Options::default()
    }
}

fn life_cycle(backend: Arc<dyn Backend>) {
    let r = open(backend.clone(), opts(FsyncPolicy::Always)).unwrap();
    assert!(r.model.is_empty());
    let mut expect = Model::new();
    for n in 1..=50 {
        let rec = set(n);
        assert_eq!(r.dir.append(&rec).unwrap(), n);
        common::apply(&mut expect, &rec);
    }
    let multi = Record::Multi(vec![
        Record::Del {
            key: b"key1".to_vec(),
        },
        set(99),
    ]);
    assert_eq!(r.dir.append(&multi).unwrap(), 51);
    common::apply(&mut expect, &multi);
    drop(r);

    let r = open(backend.clone(), opts(FsyncPolicy::EverySec)).unwrap();
    assert_eq!(r.model, expect);
    assert_eq!(r.records.len(), 51);
    assert_eq!(r.dir.status().next_seq, 52);

    // Rewrite while appends continue into the new incr file.
    let mut rw = r.dir.begin_rewrite().unwrap();
    assert_eq!(rw.start_seq(), 52);
    assert!(matches!(
        r.dir.begin_rewrite(),
        Err(RewriteError::InProgress)
    ));
    for n in 100..110 {
        let rec = set(n);
        r.dir.append(&rec).unwrap();
        common::apply(&mut expect, &rec);
    }
    for (k, (v, e)) in &r.model {
        rw.push(k, v, *e).unwrap();
    }
    let info = r.dir.finish_rewrite(rw).unwrap();
    assert_eq!(info.start_seq, 52);
    let st = r.dir.status();
    assert!(!st.rewrite_in_progress);
    assert_eq!(st.last_rewrite, OpStatus::Ok);
    assert_eq!(st.aof_base_size, info.bytes);
    let m = r.dir.manifest();
    assert_eq!(m.base.as_ref().unwrap().seq, 52);
    assert_eq!(m.incrs.len(), 1);
    drop(r);

    // Only the files the manifest names remain (and a disk's lock file).
    let mut names = backend.list().unwrap();
    names.retain(|n| n != larder_persistence::backend::LOCK_NAME);
    names.sort();
    assert_eq!(names, vec!["base.2.snap", "incr.2.aof", "manifest"]);

    let r = open(backend.clone(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(r.model, expect);
    assert_eq!(r.records.len(), 10);
    assert_eq!(r.dir.status().loading.base_entries, 50);
}

#[test]
fn life_cycle_in_memory() {
    life_cycle(Arc::new(MemoryBackend::new()));
}

#[test]
fn life_cycle_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    life_cycle(Arc::new(FsBackend::new(tmp.path()).unwrap()));
}

#[test]
fn abandoned_rewrite_leaves_files_loadable_and_can_retry() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let r = open(backend.clone(), opts(FsyncPolicy::Always)).unwrap();
    for n in 1..=5 {
        r.dir.append(&set(n)).unwrap();
    }
    let mut rw = r.dir.begin_rewrite().unwrap();
    rw.push(b"key1", b"value1", None).unwrap();
    drop(rw);
    assert!(matches!(r.dir.status().last_rewrite, OpStatus::Err(_)));
    r.dir.append(&set(6)).unwrap();
    let r2 = open(backend.crash_clone(), opts(FsyncPolicy::Always));
    drop(r2);
    // Retry succeeds.
    let mut rw = r.dir.begin_rewrite().unwrap();
    for n in 1..=6 {
        let Record::Set {
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
    r.dir.append(&set(7)).unwrap();
    drop(r);
    let r = open(backend, opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(r.model.len(), 7);
    assert_eq!(r.records.len(), 1);
}

trait CrashClone {
    fn crash_clone(&self) -> Arc<dyn Backend>;
}
impl CrashClone for Arc<dyn Backend> {
    fn crash_clone(&self) -> Arc<dyn Backend> {
        // Copy the directory so a second opener does not disturb the first.
        let copy = MemoryBackend::new();
        for n in self.list().unwrap() {
            let bytes = self.read_all(&n).unwrap();
            let f = copy
                .open(&n, larder_persistence::OpenMode::CreateTruncate)
                .unwrap();
            f.write_at(&bytes, 0).unwrap();
        }
        Arc::new(copy)
    }
}

#[test]
fn missing_manifest_with_data_refuses() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let r = open(backend.clone(), opts(FsyncPolicy::Always)).unwrap();
    r.dir.append(&set(1)).unwrap();
    drop(r);
    backend.remove("manifest").unwrap();
    let err = open(backend, opts(FsyncPolicy::Always)).err().unwrap();
    assert!(matches!(err, OpenError::Manifest(_)), "{err}");
    assert!(err.to_string().contains("incr.1.aof"), "{err}");
}

#[test]
fn missing_named_file_refuses() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    drop(open(backend.clone(), opts(FsyncPolicy::Always)).unwrap());
    backend.remove("incr.1.aof").unwrap();
    let err = open(backend, opts(FsyncPolicy::Always)).err().unwrap();
    assert!(err.to_string().contains("incr.1.aof"), "{err}");
}

#[test]
fn concurrent_appenders_get_distinct_contiguous_sequences() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let r = open(backend.clone(), opts(FsyncPolicy::Always)).unwrap();
    let dir = &r.dir;
    let mut seqs: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                s.spawn(move || {
                    (0..100)
                        .map(|i| dir.append(&set(t * 1000 + i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    seqs.sort();
    assert_eq!(seqs, (1..=800).collect::<Vec<_>>());
    assert_eq!(dir.status().durable_seq, 800);
    drop(r);
    let r = open(backend, opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(r.records.len(), 800);
}

#[test]
fn group_commit_shares_fsyncs_between_appenders() {
    use larder_persistence::backend::{FaultBackend, FaultPlan};
    let slow = FaultBackend::new(
        MemoryBackend::new(),
        FaultPlan {
            sync_delay: Some(std::time::Duration::from_millis(3)),
            ..FaultPlan::default()
        },
    );
    let r = open(Arc::new(slow.clone()), opts(FsyncPolicy::Always)).unwrap();
    let before = slow.syncs();
    let dir = &r.dir;
    std::thread::scope(|s| {
        for t in 0..16 {
            s.spawn(move || {
                for i in 0..20 {
                    dir.append(&set(t * 100 + i)).unwrap();
                }
            });
        }
    });
    let fsyncs = slow.syncs() - before;
    assert_eq!(fsyncs, dir.status().fsyncs);
    // 320 durable appends; without group commit that is 320 fsyncs.
    assert!(fsyncs < 160, "{fsyncs} fsyncs for 320 appends");
    assert_eq!(dir.status().durable_seq, 320);
}
