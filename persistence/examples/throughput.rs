//! Measures append throughput per fsync policy and thread count, and snapshot write and
//! load speed, on the disk holding the given directory (default: a temp dir under
//! `target/`). Not a test: run with
//! `cargo run --release -p larder-persistence --example throughput -- [DIR]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_persistence::backend::FsBackend;
use larder_persistence::snapshot::{self, SnapshotWriter};
use larder_persistence::{Backend, DataDir, FsyncPolicy, Options, Record};

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/larder-throughput".into());
    std::fs::create_dir_all(&root).unwrap();
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    println!("directory: {root}; {secs} s per point; 100-byte values, 16-byte keys");
    for (policy, threads) in [
        (FsyncPolicy::Always, 1),
        (FsyncPolicy::Always, 8),
        (FsyncPolicy::Always, 64),
        (FsyncPolicy::EverySec, 1),
        (FsyncPolicy::EverySec, 8),
    ] {
        let tmp = tempfile::tempdir_in(&root).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(tmp.path()).unwrap());
        let opts = Options {
            fsync: policy,
            ..Options::default()
        };
        let dir = DataDir::open(backend, opts, &|_| {}, &mut |_, _| {}).unwrap();
        let stop = AtomicBool::new(false);
        let count = AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let (dir, stop, count) = (&dir, &stop, &count);
                s.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let rec = Record::Set {
                            key: format!("k{t:04}-{i:010}").into_bytes(),
                            value: vec![b'v'; 100],
                            expire_at_ms: None,
                        };
                        dir.append(&rec).unwrap();
                        i += 1;
                    }
                    count.fetch_add(i, Ordering::Relaxed);
                });
            }
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
        let n = count.load(Ordering::Relaxed) as f64;
        let el = started.elapsed().as_secs_f64();
        let fsyncs = dir.status().fsyncs;
        println!(
            "append {policy:?} threads={threads:>2}: {:>10.0} appends/s ({:.1} us per append per thread), {fsyncs} fsyncs ({:.1} appends/fsync)",
            n / el,
            el * 1e6 * threads as f64 / n,
            n / fsyncs.max(1) as f64
        );
    }

    // Snapshot write and load.
    let tmp = tempfile::tempdir_in(&root).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(tmp.path()).unwrap());
    let entries = 200_000u64;
    let value = vec![b'x'; 500];
    let started = Instant::now();
    let mut w = SnapshotWriter::create(backend.clone(), "bench.snap", 1).unwrap();
    for i in 0..entries {
        w.push(format!("key{i:012}").as_bytes(), &value, Some(i))
            .unwrap();
    }
    let info = w.finish().unwrap();
    let el = started.elapsed().as_secs_f64();
    let mb = info.bytes as f64 / 1e6;
    println!(
        "snapshot write: {entries} entries, {mb:.1} MB, {} sections in {el:.2} s = {:.0} MB/s (incl. fsync)",
        info.sections,
        mb / el
    );
    for threads in [1, 2] {
        let seen = AtomicU64::new(0);
        let started = Instant::now();
        snapshot::load(&*backend, "bench.snap", threads, &|s| {
            let n = s.iter().filter(|e| !e.key.is_empty()).count();
            seen.fetch_add(n as u64, Ordering::Relaxed);
        })
        .unwrap();
        let el = started.elapsed().as_secs_f64();
        println!(
            "snapshot load ({threads} threads, page cache warm): {} entries in {el:.3} s = {:.0} MB/s",
            seen.load(Ordering::Relaxed),
            mb / el
        );
    }
}
