//! A durable cache: what was acknowledged survives a restart, a SIGKILL mid-write, a
//! power cut, and I/O errors; rewrites keep the exact state while writes go on.
#![cfg(feature = "persistence")]

use larder::persistence::backend::{CrashImageBackend, FaultBackend, FaultPlan, MemoryBackend};
use larder::persistence::Backend;
use larder::{Background, Cache, Durability, Error, Fsync, Ttl};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Kv = Cache<String, Vec<u8>>;

fn open_dir(dir: &Path, fsync: Fsync) -> Kv {
    Cache::builder()
        .shards(4)
        .background(Background::Manual)
        .durability(Durability::new(dir).fsync(fsync))
        .open()
        .expect("open")
}

fn open_backend(b: Arc<dyn Backend>, fsync: Fsync) -> Result<Kv, larder::OpenError> {
    Cache::builder()
        .shards(4)
        .background(Background::Manual)
        .durability(Durability::new("unused").fsync(fsync))
        .backend(b)
        .open()
}

/// Everything live in the cache, with expiries.
fn contents(c: &Kv) -> BTreeMap<String, (Vec<u8>, Ttl)> {
    let mut out = BTreeMap::new();
    let mut cursor = 0;
    loop {
        let page = c.scan(cursor, None, 100);
        for k in page.keys {
            if let Some(v) = c.get(&k) {
                let ttl = match c.ttl(&k) {
                    Ttl::Remaining(_) => Ttl::Remaining(0), // time moves; compare presence
                    t => t,
                };
                out.insert(k, (v, ttl));
            }
        }
        cursor = page.cursor;
        if cursor == 0 {
            return out;
        }
    }
}

#[test]
fn every_kind_of_write_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let c = open_dir(dir.path(), Fsync::Always);
        for i in 0..200 {
            c.insert(format!("k{i}"), vec![i as u8; i % 50]).unwrap();
        }
        c.insert_with_ttl("t1".into(), b"ttl".to_vec(), Duration::from_secs(3600))
            .unwrap();
        c.insert_with_ttl("gone".into(), b"x".to_vec(), Duration::from_millis(1))
            .unwrap();
        c.expire("k1", Duration::from_secs(3600)).unwrap();
        c.persist("k1").unwrap();
        c.expire("k2", Duration::from_secs(7200)).unwrap();
        c.remove("k3").unwrap();
        c.unlink("k4").unwrap();
        c.insert("k5".into(), b"overwritten".to_vec()).unwrap();
        c.batch()
            .insert("b1".into(), b"1".to_vec())
            .remove("k6".into())
            .expire("k7".into(), Duration::from_secs(60))
            .apply()
            .unwrap();
        let keys = ["k8".to_string(), "k9".to_string()];
        c.transaction(&keys, |tx| {
            let a = tx.get(&keys[0]).unwrap();
            tx.insert(keys[1].clone(), a);
            tx.remove(&keys[0]);
            Ok::<_, ()>(())
        })
        .unwrap();
        c.insert_all(vec![
            ("m1".into(), b"one".to_vec()),
            ("k10".into(), b"ten".to_vec()),
            ("t1".into(), b"no ttl".to_vec()),
        ])
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        contents(&c)
    };
    assert!(!before.contains_key("gone"));
    let c = open_dir(dir.path(), Fsync::Always);
    assert_eq!(contents(&c), before);
    let info = c.info();
    let p = info.persistence.as_ref().unwrap();
    assert!(p.loading_records > 200);
    assert_eq!(
        p.aof_durable_seq, p.aof_last_seq,
        "always: everything durable"
    );
    assert!(info.to_string().contains("aof_enabled:1"));

    c.insert("one more".into(), vec![1]).unwrap();
    let p = c.info().persistence.unwrap();
    assert!(
        p.aof_fsyncs >= 1 && p.aof_durable_seq == p.aof_last_seq,
        "{p:?}"
    );
    // A flush is logged too.
    c.clear().unwrap();
    drop(c);
    assert!(contents(&open_dir(dir.path(), Fsync::Always)).is_empty());
}

/// An fsync that fails on the everysec thread, not on any writer's path, still makes
/// every later write refused before it changes the cache.
#[test]
fn failed_background_fsync_refuses_later_writes_before_applying_them() {
    let mem = MemoryBackend::new();
    let faulty = FaultBackend::new(mem, FaultPlan::default());
    let c = open_backend(Arc::new(faulty.clone()), Fsync::EverySec).unwrap();
    c.insert("k0".into(), vec![1]).unwrap();
    faulty.set_plan(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    c.insert("k1".into(), vec![2]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c
        .info()
        .persistence
        .unwrap()
        .aof_last_write_status
        .starts_with("err")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the everysec fsync never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let len = c.len();
    assert!(matches!(
        c.insert("after".into(), vec![3]),
        Err(Error::Persistence(ref why)) if why.contains("fsync")
    ));
    assert_eq!(c.len(), len);
    assert!(!c.contains("after"));
}

#[test]
fn rewrite_under_concurrent_writes_keeps_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = open_dir(dir.path(), Fsync::No);
    for i in 0..5000 {
        c.insert(format!("k{i}"), vec![1; 20]).unwrap();
    }
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..5000u32 {
                    let k = format!("k{}", (i * 7 + t) % 8000);
                    match i % 4 {
                        0 => drop(c.remove(&k).unwrap()),
                        1 => c
                            .insert_with_ttl(k, vec![2; 10], Duration::from_secs(600))
                            .unwrap(),
                        _ => c.insert(k, i.to_le_bytes().to_vec()).unwrap(),
                    }
                }
            })
        })
        .collect();
    for _ in 0..3 {
        c.rewrite_aof().unwrap();
    }
    for w in writers {
        w.join().unwrap();
    }
    let before = contents(&c);
    let info = c.info();
    let p = info.persistence.unwrap();
    assert_eq!(p.aof_last_rewrite_status, "ok");
    assert!(p.aof_base_size > 0);
    drop(c);
    assert_eq!(contents(&open_dir(dir.path(), Fsync::No)), before);
}

/// The base snapshot in force in `dir`, read raw: (layout, every entry's key bytes).
fn base_keys(dir: &Path) -> (larder::persistence::snapshot::SnapshotLayout, Vec<Vec<u8>>) {
    use larder::persistence::snapshot;
    let base = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("base.") && n.ends_with(".snap"))
        .expect("a base");
    let bytes = std::fs::read(dir.join(&base)).unwrap();
    let keys = std::sync::Mutex::new(Vec::new());
    let layout = snapshot::load_slice(&base, &bytes, 2, &|s| {
        let mut k = keys.lock().unwrap();
        k.extend(s.iter().map(|e| e.key.to_vec()));
    })
    .unwrap();
    (layout, keys.into_inner().unwrap())
}

#[test]
fn bases_written_under_churn_say_their_keys_are_distinct_and_reopen_exactly() {
    // A writer empties and refills the tables (so they would shrink and grow under the
    // SCAN cursor) while bases are written: each base says its keys are distinct and
    // they are, and the reopened cache holds exactly what was there. (That a held table
    // size is what keeps a walk from meeting a key twice is shown deterministically in
    // the table's own tests; here the timing decides whether a shrink falls mid-walk.)
    let dir = tempfile::tempdir().unwrap();
    let c = open_dir(dir.path(), Fsync::No);
    let fill = |c: &Kv, from: u32| {
        for i in from..from + 20_000 {
            c.insert(format!("k{i}"), vec![1; 8]).unwrap();
        }
    };
    fill(&c, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Remove all but a few keys, then bring them back.
                for i in 100..20_000 {
                    c.remove(&format!("k{i}")).unwrap();
                }
                fill(&c, (round % 2) * 10_000);
                round += 1;
            }
        })
    };
    for _ in 0..4 {
        c.rewrite_aof().unwrap();
        let (layout, keys) = base_keys(dir.path());
        assert!(layout.distinct_keys);
        assert_eq!(layout.version, 2);
        let unique: HashSet<&Vec<u8>> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "a base repeats a key");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let before = contents(&c);
    drop(c);
    assert_eq!(contents(&open_dir(dir.path(), Fsync::No)), before);
}

#[test]
fn a_base_in_the_earlier_rkyv_layout_still_opens() {
    use larder::persistence::snapshot;
    let dir = tempfile::tempdir().unwrap();
    let c = open_dir(dir.path(), Fsync::No);
    for i in 0..3000 {
        if i % 3 == 0 {
            c.insert_with_ttl(format!("k{i}"), vec![i as u8; 5], Duration::from_secs(900))
                .unwrap();
        } else {
            c.insert(format!("k{i}"), vec![i as u8; 30]).unwrap();
        }
    }
    c.save().unwrap();
    c.insert("after".into(), b"the base".to_vec()).unwrap();
    let before = contents(&c);
    drop(c);
    // Put the same entries back as version 1 wrote them.
    let base = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("base.") && n.ends_with(".snap"))
        .unwrap();
    let bytes = std::fs::read(dir.path().join(&base)).unwrap();
    let entries = std::sync::Mutex::new(Vec::new());
    let layout = snapshot::load_slice(&base, &bytes, 1, &|s| {
        entries
            .lock()
            .unwrap()
            .extend(s.iter().map(|e| snapshot::Entry {
                key: e.key.to_vec(),
                value: e.value.to_vec(),
                expire_at_ms: e.expire_at_ms,
            }));
    })
    .unwrap();
    let v1 = snapshot::encode_v1(&entries.into_inner().unwrap(), layout.start_seq, 100);
    std::fs::write(dir.path().join(&base), v1).unwrap();
    let (layout, keys) = base_keys(dir.path());
    assert_eq!(
        (layout.version, layout.distinct_keys, keys.len()),
        (1, false, 3000)
    );
    assert_eq!(contents(&open_dir(dir.path(), Fsync::No)), before);
}

#[test]
fn bgsave_and_save_rules() {
    let dir = tempfile::tempdir().unwrap();
    let c: Kv = Cache::builder()
        .background(Background::Threads)
        .cron_period(Duration::from_millis(10))
        .durability(
            Durability::new(dir.path())
                .fsync(Fsync::EverySec)
                .save_rule(Duration::from_millis(0), 100),
        )
        .open()
        .unwrap();
    for i in 0..150 {
        c.insert(format!("k{i}"), vec![0; 8]).unwrap();
    }
    // The save rule (100 changes) makes the cron snapshot on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = c.info().persistence.unwrap();
        if p.aof_base_size > 0 && !p.aof_rewrite_in_progress {
            assert!(p.rdb_changes_since_last_save < 150);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no automatic snapshot"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // bgsave returns at once; a second one while the first runs is refused.
    let mut refused = 0;
    for _ in 0..20 {
        if let Err(Error::Rewrite(_)) = c.bgsave() {
            refused += 1;
        }
    }
    let _ = refused;
    let plain: Cache<u8, u8> = Cache::builder().background(Background::Manual).build();
    assert_eq!(plain.save(), Err(Error::NotDurable));
}

/// Power cut: only fsynced bytes survive. Under `always`, every acknowledged write is
/// in the image taken at any moment after its acknowledgement.
#[test]
fn power_cut_keeps_every_write_acknowledged_under_always() {
    let disk = CrashImageBackend::new();
    let c = open_backend(Arc::new(disk.clone()), Fsync::Always).unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, acked) = (c.clone(), Arc::clone(&acked));
        std::thread::spawn(move || {
            for i in 0..3000u64 {
                if i % 10 == 0 {
                    let keys = [format!("a{i}"), format!("b{i}")];
                    c.transaction(&keys, |tx| {
                        tx.insert(keys[0].clone(), i.to_le_bytes().to_vec());
                        tx.insert(keys[1].clone(), i.to_le_bytes().to_vec());
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                } else {
                    c.insert(format!("k{i}"), i.to_le_bytes().to_vec()).unwrap();
                }
                acked.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    // An image at least every 50 acknowledged writes (each image copies the mapped
    // segments, and each is reopened and checked in full below).
    let mut images = Vec::new();
    let mut last = None;
    while !writer.is_finished() {
        let n = acked.load(Ordering::SeqCst);
        if last.is_none_or(|l| n >= l + 50) {
            images.push((n, disk.crash()));
            last = Some(n);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap();
    images.push((acked.load(Ordering::SeqCst), disk.crash()));
    assert!(images.len() >= 2);
    for (n, image) in images {
        let r = open_backend(Arc::new(image), Fsync::Always).unwrap();
        for i in 0..n {
            if i % 10 == 0 {
                assert!(r.contains(&format!("a{i}")) && r.contains(&format!("b{i}")));
            } else {
                assert_eq!(r.get(&format!("k{i}")), Some(i.to_le_bytes().to_vec()));
            }
        }
        // Nothing half-applied: transactions are all or nothing.
        for i in (0..3000).step_by(10) {
            assert_eq!(r.contains(&format!("a{i}")), r.contains(&format!("b{i}")));
        }
    }
}

/// I/O errors are surfaced: the failing write reports it, later writes are refused
/// before changing anything, and what was acknowledged before is kept.
#[test]
fn the_fsync_policy_changes_on_a_running_cache() {
    let disk = CrashImageBackend::new();
    let c = open_backend(Arc::new(disk.clone()), Fsync::No).unwrap();
    c.insert("before".into(), b"1".to_vec()).unwrap();
    // Under `no` nothing is synced yet: a power cut now would lose it.
    let cut = open_backend(Arc::new(disk.crash()), Fsync::No).unwrap();
    assert_eq!(cut.get("before"), None);
    drop(cut);
    c.set_fsync(Fsync::Always).unwrap();
    assert_eq!(c.info().persistence.unwrap().aof_fsync, "always");
    c.insert("after".into(), b"2".to_vec()).unwrap();
    // The switch synced what came before; `always` synced what came after.
    let cut = open_backend(Arc::new(disk.crash()), Fsync::No).unwrap();
    assert_eq!(cut.get("before"), Some(b"1".to_vec()));
    assert_eq!(cut.get("after"), Some(b"2".to_vec()));
    drop(cut);
    // To `everysec` from `no`: the background sync starts and catches up by itself.
    c.set_fsync(Fsync::No).unwrap();
    c.set_fsync(Fsync::EverySec).unwrap();
    c.insert("later".into(), b"3".to_vec()).unwrap();
    let p = c.info().persistence.unwrap();
    assert_eq!(p.aof_fsync, "everysec");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.info().persistence.unwrap().aof_durable_seq < p.aof_last_seq {
        assert!(
            std::time::Instant::now() < deadline,
            "everysec never synced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cut = open_backend(Arc::new(disk.crash()), Fsync::No).unwrap();
    assert_eq!(cut.get("later"), Some(b"3".to_vec()));
    let plain: Kv = Cache::builder().build();
    assert_eq!(plain.set_fsync(Fsync::Always), Err(Error::NotDurable));
}

#[test]
fn io_errors_are_surfaced_and_lose_nothing_acknowledged() {
    for plan in [
        FaultPlan {
            fail_sync: Some(6),
            ..FaultPlan::default()
        },
        FaultPlan {
            capacity: Some(4096),
            ..FaultPlan::default()
        },
    ] {
        let mem = MemoryBackend::new();
        let faulty = FaultBackend::new(mem.clone(), FaultPlan::default());
        let c = open_backend(Arc::new(faulty.clone()), Fsync::Always).unwrap();
        faulty.set_plan(plan.clone());
        let mut acked = Vec::new();
        let mut failed = None;
        for i in 0..500 {
            match c.insert(format!("k{i}"), vec![7; 64]) {
                Ok(()) => acked.push(i),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        let (i, e) = failed.unwrap_or_else(|| panic!("{plan:?}: no error surfaced"));
        assert!(matches!(e, Error::Persistence(_)), "{e}");
        // Refused before applying: the cache does not change.
        let len = c.len();
        assert!(matches!(
            c.insert("after".into(), vec![1]),
            Err(Error::Persistence(_))
        ));
        assert!(matches!(c.remove("k0"), Err(Error::Persistence(_))));
        assert_eq!(c.len(), len);
        assert!(!c.contains("after"));
        let p = c.info().persistence.unwrap();
        assert!(p.aof_last_write_status.starts_with("err"), "{p:?}");
        drop(c);
        let r = open_backend(Arc::new(mem), Fsync::Always).unwrap();
        for k in &acked {
            assert!(
                r.contains(&format!("k{k}")),
                "{plan:?}: acknowledged k{k} lost (failed at {i})"
            );
        }
    }
}

#[test]
fn corrupt_files_refuse_to_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = open_dir(dir.path(), Fsync::Always);
        for i in 0..50 {
            c.insert(format!("k{i}"), vec![1; 100]).unwrap();
        }
    }
    let incr = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("incr"))
        .unwrap();
    let mut bytes = std::fs::read(&incr).unwrap();
    // The log file is a preallocated segment: damage its frames, not its zero tail.
    let data_end = larder::persistence::frame::frames(&bytes, 16)
        .map_while(Result::ok)
        .last()
        .unwrap()
        .end();
    let mid = data_end / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&incr, &bytes).unwrap();
    let err = Cache::<String, Vec<u8>>::builder()
        .durability(Durability::new(dir.path()))
        .open()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("incr"), "{msg}");
}

// ---- SIGKILL crash test ------------------------------------------------------------

const CHILD_DIR: &str = "LARDER_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "LARDER_CRASH_CHILD_MODE";
const CHILD_ROUND: &str = "LARDER_CRASH_CHILD_ROUND";

fn mode_fsync(mode: &str) -> Fsync {
    match mode {
        "everysec" => Fsync::EverySec,
        _ => Fsync::Always,
    }
}

/// The child: writes until killed, printing each acknowledged write (and announcing
/// each removal before issuing it, so the parent knows which keys are in doubt).
fn child(dir: &str, mode: &str, round: u64) {
    use std::io::Write;
    let c: Kv = Cache::builder()
        .durability(Durability::new(dir).fsync(mode_fsync(mode)))
        .open()
        .unwrap();
    let out = std::io::stdout();
    // Each round writes its own keys.
    for i in round * 10_000_000.. {
        if i % 7 == 0 {
            let keys = [format!("a{i}"), format!("b{i}")];
            c.transaction(&keys, |tx| {
                tx.insert(keys[0].clone(), i.to_le_bytes().to_vec());
                tx.insert(keys[1].clone(), i.to_le_bytes().to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
            writeln!(out.lock(), "tx {i}").unwrap();
        } else {
            c.insert(format!("k{i}"), i.to_le_bytes().to_vec()).unwrap();
            writeln!(out.lock(), "set {i}").unwrap();
        }
        if i % 5 == 4 && (i - 3) % 7 != 0 {
            writeln!(out.lock(), "deling {}", i - 3).unwrap();
            c.remove(&format!("k{}", i - 3)).unwrap();
            writeln!(out.lock(), "del {}", i - 3).unwrap();
        }
        if mode == "rewrite" && i % 300 == 0 {
            let _ = c.bgsave();
        }
    }
}

#[test]
fn sigkill_mid_write_loses_nothing_acknowledged() {
    if let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_MODE)) {
        let round = std::env::var(CHILD_ROUND).map_or(0, |r| r.parse().unwrap_or(0));
        child(&dir, &mode, round);
        return;
    }
    let rounds: u64 = std::env::var("LARDER_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    if let Ok(s) = std::env::var("LARDER_CRASH_SEED") {
        seed = s.parse().expect("LARDER_CRASH_SEED is a number");
    }
    eprintln!("crash test seed {seed} (replay with LARDER_CRASH_SEED={seed})");
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for mode in ["always", "everysec", "rewrite"] {
        let dir = tempfile::tempdir().unwrap();
        let mut set = HashSet::new();
        let mut tx = HashSet::new();
        let mut del = HashSet::new();
        let mut deling = HashSet::new();
        // Several kills into the same directory: each restart recovers the last.
        for round in 0..rounds {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sigkill_mid_write_loses_nothing_acknowledged",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_MODE, mode)
                .env(CHILD_ROUND, round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (first_tx, first_rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut lines = Vec::new();
                let mut acked = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // The test harness prints its own lines first; wait for a write.
                    if !acked && (line.starts_with("set ") || line.starts_with("tx ")) {
                        acked = true;
                        let _ = first_tx.send(());
                    }
                    lines.push(line);
                }
                lines
            });
            // Kill at a random moment after the child starts acknowledging writes (its
            // start-up time varies with the machine's load).
            first_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child never acknowledged a write");
            std::thread::sleep(Duration::from_millis(20 + rng() % 300));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            for line in reader.join().unwrap() {
                let mut parts = line.split(' ');
                let (Some(kind), Some(n)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match kind {
                    "set" => drop(set.insert(n)),
                    "tx" => drop(tx.insert(n)),
                    "del" => drop(del.insert(n)),
                    "deling" => drop(deling.insert(n)),
                    _ => {}
                }
            }
            let c = open_dir(dir.path(), mode_fsync(mode));
            for &n in &set {
                let present = c.get(&format!("k{n}"));
                if deling.contains(&n) && !del.contains(&n) {
                    continue; // removal issued, not acknowledged: either outcome is right
                }
                if del.contains(&n) {
                    assert_eq!(
                        present, None,
                        "{mode} round {round}: deleted k{n} came back"
                    );
                } else {
                    assert_eq!(
                        present,
                        Some(n.to_le_bytes().to_vec()),
                        "{mode} round {round}: acknowledged k{n} lost"
                    );
                }
            }
            for &n in &tx {
                assert!(c.contains(&format!("a{n}")) && c.contains(&format!("b{n}")));
            }
            // Unacknowledged transactions are all or nothing.
            let mut cursor = 0;
            loop {
                let page = c.scan(cursor, Some("a*"), 100);
                for k in page.keys {
                    let b = format!("b{}", &k[1..]);
                    assert!(
                        c.contains(&b),
                        "{mode}: half a transaction: {k} without {b}"
                    );
                }
                cursor = page.cursor;
                if cursor == 0 {
                    break;
                }
            }
            assert!(
                !set.is_empty() || !tx.is_empty(),
                "{mode}: the child acknowledged nothing"
            );
        }
    }
}
