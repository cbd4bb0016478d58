//! Power loss: the crash-image backend keeps only fsynced bytes and fsynced renames.
//! Recovery must open every image and keep everything acknowledged under `Always`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{open, set, Rng};
use larder_persistence::backend::{CrashImageBackend, FaultBackend, FaultPlan};
use larder_persistence::{Backend, FsyncPolicy, Options, Record};

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        load_threads: 2,
        section_bytes: 128,
        everysec_interval: Duration::from_millis(50),
        segment_bytes: 64 << 10,
        ..Options::default()
    }
}

fn record_for(thread: u64, i: u64) -> Record {
    let n = thread * 1_000_000 + i;
    if i % 4 == 3 {
        // All-or-nothing group: three sets sharing a tag.
        Record::Multi((0..3).map(|j| set(n * 10 + j)).collect())
    } else {
        set(n)
    }
}

/// Several appenders under `Always`; a crash image taken while they run.
#[test]
fn acknowledged_appends_survive_power_loss() {
    for round in 0..6u64 {
        let disk = CrashImageBackend::new();
        let r = open(Arc::new(disk.clone()), opts(FsyncPolicy::Always)).unwrap();
        let acked: Mutex<Vec<(u64, Record)>> = Mutex::new(Vec::new());
        let attempted: Mutex<Vec<Record>> = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        let image = std::thread::scope(|s| {
            for t in 0..4 {
                let (dir, acked, attempted, stop) = (&r.dir, &acked, &attempted, &stop);
                s.spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let rec = record_for(t, i);
                        attempted.lock().unwrap().push(rec.clone());
                        let seq = dir.append(&rec).unwrap();
                        acked.lock().unwrap().push((seq, rec));
                        i += 1;
                    }
                });
            }
            // At least one append acknowledged however slowly a busy machine schedules
            // the writers; then the cut lands at a different point each round.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: no append acknowledged in 60 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(5 + round * 7));
            // Everything acknowledged before the cut must be in the image.
            let before = acked.lock().unwrap().clone();
            let image = disk.crash();
            stop.store(true, Ordering::Relaxed);
            (before, image)
        });
        let (before, image) = image;
        assert!(!before.is_empty());
        let rec = open(Arc::new(image), opts(FsyncPolicy::Always)).unwrap();
        let got: HashMap<u64, Record> = rec.records.into_iter().collect();
        for (seq, r) in &before {
            assert_eq!(got.get(seq), Some(r), "round {round}: acked seq {seq} lost");
        }
        // Nothing half-applied: every recovered record is one that was appended whole.
        let attempted = attempted.into_inner().unwrap();
        for r in got.values() {
            assert!(attempted.contains(r), "round {round}: unknown record {r:?}");
        }
    }
}

/// `EverySec`: a record acknowledged more than one interval plus one fsync before the
/// power cut is durable.
#[test]
fn everysec_loses_at_most_the_last_interval() {
    let disk = CrashImageBackend::new();
    let r = open(Arc::new(disk.clone()), opts(FsyncPolicy::EverySec)).unwrap();
    for n in 1..=200 {
        r.dir.append(&set(n)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(250));
    for n in 201..=210 {
        r.dir.append(&set(n)).unwrap();
    }
    let image = disk.crash();
    let rec = open(Arc::new(image), opts(FsyncPolicy::EverySec)).unwrap();
    assert!(rec.records.len() >= 200, "lost {}", 210 - rec.records.len());
    assert!(r.dir.status().durable_seq >= 200);
}

/// A scripted workload (appends, two rewrites) cut after every single backend
/// operation, then power lost: every image opens and keeps every acknowledged record.
#[test]
fn every_cut_point_through_rewrites_recovers() {
    let script = |backend: Arc<dyn Backend>, acked: &mut Vec<u64>| -> Result<(), String> {
        let r = open(backend, opts(FsyncPolicy::Always)).map_err(|e| e.to_string())?;
        let mut n = 0u64;
        let mut append = |dir: &larder_persistence::DataDir, acked: &mut Vec<u64>| {
            n += 1;
            dir.append(&set(n)).map_err(|e| e.to_string())?;
            acked.push(n);
            Ok::<(), String>(())
        };
        for _ in 0..4 {
            append(&r.dir, acked)?;
        }
        for _ in 0..2 {
            let mut rw = r.dir.begin_rewrite().map_err(|e| e.to_string())?;
            append(&r.dir, acked)?;
            for &k in acked.iter() {
                let Record::Set {
                    key,
                    value,
                    expire_at_ms,
                } = set(k)
                else {
                    unreachable!()
                };
                rw.push(&key, &value, expire_at_ms)
                    .map_err(|e| e.to_string())?;
            }
            append(&r.dir, acked)?;
            r.dir.finish_rewrite(rw).map_err(|e| e.to_string())?;
            append(&r.dir, acked)?;
        }
        Ok(())
    };
    // Count the operations of a full run.
    let full = FaultBackend::new(CrashImageBackend::new(), FaultPlan::default());
    script(Arc::new(full.clone()), &mut Vec::new()).unwrap();
    let total = full.ops();
    assert!(total > 20);
    for cut in 1..=total + 1 {
        let disk = CrashImageBackend::new();
        let faulty = FaultBackend::new(
            disk.clone(),
            FaultPlan {
                fail_after_ops: Some(cut),
                ..FaultPlan::default()
            },
        );
        let mut acked = Vec::new();
        let _ = script(Arc::new(faulty), &mut acked);
        let image = disk.crash();
        if acked.is_empty() && image.list().unwrap().is_empty() {
            continue;
        }
        let rec = open(Arc::new(image), opts(FsyncPolicy::Always))
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        for k in &acked {
            let Record::Set {
                key,
                value,
                expire_at_ms,
            } = set(*k)
            else {
                unreachable!()
            };
            assert_eq!(
                rec.model.get(&key),
                Some(&(value, expire_at_ms)),
                "cut {cut}: acked {k} lost"
            );
        }
    }
}

/// Random crash points with random workloads, seeded.
#[test]
fn random_power_cuts() {
    let mut rng = Rng(0x5eed);
    for round in 0..20 {
        let disk = CrashImageBackend::new();
        let faulty = FaultBackend::new(
            disk.clone(),
            FaultPlan {
                fail_after_ops: Some(5 + rng.below(60)),
                ..FaultPlan::default()
            },
        );
        let mut acked = Vec::new();
        if let Ok(r) = open(Arc::new(faulty), opts(FsyncPolicy::Always)) {
            for n in 1..40 {
                if rng.below(10) == 0 {
                    if let Ok(mut rw) = r.dir.begin_rewrite() {
                        for &k in &acked {
                            let Record::Set { key, value, .. } = set(k) else {
                                unreachable!()
                            };
                            let _ = rw.push(&key, &value, None);
                        }
                        let _ = r.dir.finish_rewrite(rw);
                    }
                }
                if r.dir.append(&set(n)).is_ok() {
                    acked.push(n);
                }
            }
        }
        let rec = open(Arc::new(disk.crash()), opts(FsyncPolicy::Always))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        for k in &acked {
            let Record::Set { key, value, .. } = set(*k) else {
                unreachable!()
            };
            assert_eq!(
                rec.model.get(&key).map(|v| &v.0),
                Some(&value),
                "round {round}"
            );
        }
    }
}
