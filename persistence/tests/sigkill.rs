//! Crash by SIGKILL: this test binary re-runs itself as a writer child (selected by the
//! `LARDER_CRASH_CHILD` variable), which prints every acknowledged sequence; the parent
//! kills it at a random moment, reopens the directory and checks that every
//! acknowledged record is present and nothing is half-applied. Rounds per mode:
//! `LARDER_CRASH_ROUNDS` (default 5).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{open, set, Rng};
use larder_persistence::backend::FsBackend;
use larder_persistence::{DataDir, FsyncPolicy, Options, Record};

const CHILD_ENV: &str = "LARDER_CRASH_CHILD";

/// Writers of the `many` mode, all copying frames into the mapped tail at once.
const MANY_WRITERS: u64 = 16;

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        section_bytes: 16 << 10,
        segment_bytes: 1 << 20,
        ..Options::default()
    }
}

fn record_for(thread: u64, i: u64) -> Record {
    let n = thread * 1_000_000 + i;
    if i % 4 == 3 {
        Record::Multi((0..3).map(|j| set(n * 10 + j)).collect())
    } else {
        set(n)
    }
}

fn rounds() -> u64 {
    std::env::var("LARDER_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// The child: runs a writer mode until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').unwrap();
    let backend = Arc::new(FsBackend::new(path).unwrap());
    let fsync = match mode {
        "everysec" => FsyncPolicy::EverySec,
        "many" => FsyncPolicy::No,
        _ => FsyncPolicy::Always,
    };
    let mut o = opts(fsync);
    if mode == "many" {
        // Small segments: kills land in switches as well as in copies.
        o.segment_bytes = 64 << 10;
    }
    let r = open(backend, o).unwrap();
    let dir = &r.dir;
    match mode {
        "many" => std::thread::scope(|s| {
            for t in 0..MANY_WRITERS {
                s.spawn(move || {
                    for i in 0.. {
                        let seq = dir.append(&record_for(t, i)).unwrap();
                        println!("ACK {seq} {t} {i}");
                    }
                });
            }
        }),
        "always" | "everysec" => std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0.. {
                        let seq = dir.append(&record_for(t, i)).unwrap();
                        println!("ACK {seq} {t} {i}");
                    }
                });
            }
        }),
        "rewrite" => rewrite_child(dir),
        other => panic!("unknown mode {other}"),
    }
}

/// One writer appends `set(n)` under a model lock; the main thread rewrites in a loop
/// with a padded keyspace so kills land inside snapshot writing too.
fn rewrite_child(dir: &DataDir) {
    let model: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 1.. {
                let mut m = model.lock().unwrap();
                dir.append(&set(n)).unwrap();
                m.push(n);
                drop(m);
                println!("ACK {n}");
            }
        });
        let pad = vec![7u8; 2048];
        loop {
            let (mut rw, keys) = {
                let m = model.lock().unwrap();
                (dir.begin_rewrite().unwrap(), m.clone())
            };
            for p in 0..400u32 {
                rw.push(format!("pad{p}").as_bytes(), &pad, None).unwrap();
            }
            for n in keys {
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
            dir.finish_rewrite(rw).unwrap();
            println!("REWRITE");
        }
    });
}

/// Spawns the child, kills it after it acknowledged something plus a random delay,
/// returns its stdout lines.
fn run_and_kill(mode: &str, path: &std::path::Path, rng: &mut Rng) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                lines.lock().unwrap().push(l);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.lock().unwrap().iter().any(|l| l.starts_with("ACK")) {
        assert!(Instant::now() < deadline, "child never acknowledged");
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(rng.below(400)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    lines
}

fn threaded_mode(mode: &str, seed: u64) {
    let mut rng = Rng(seed);
    for round in 0..rounds() {
        let tmp = tempfile::tempdir().unwrap();
        let lines = run_and_kill(mode, tmp.path(), &mut rng);
        let r = open(
            Arc::new(FsBackend::new(tmp.path()).unwrap()),
            opts(FsyncPolicy::Always),
        )
        .unwrap_or_else(|e| panic!("{mode} round {round}: {e}"));
        let got: HashMap<u64, Record> = r.records.into_iter().collect();
        let mut acked = 0;
        for l in lines.iter().filter(|l| l.starts_with("ACK ")) {
            let v: Vec<u64> = l[4..].split(' ').map(|x| x.parse().unwrap()).collect();
            let [seq, t, i] = v[..] else {
                panic!("bad line {l}")
            };
            assert_eq!(
                got.get(&seq),
                Some(&record_for(t, i)),
                "{mode} round {round}: acknowledged seq {seq} lost"
            );
            acked += 1;
        }
        // Unacknowledged records that made it are whole: a Multi has all three parts.
        for rec in got.values() {
            if let Record::Multi(parts) = rec {
                assert_eq!(parts.len(), 3, "{mode} round {round}: partial Multi");
            }
        }
        // A writer's next append starts after its previous one returned, so what
        // survives of each writer is a prefix of its appends: a hole left by a copy cut
        // short never hides an earlier record of the same writer.
        let mut per_writer: HashMap<u64, Vec<u64>> = HashMap::new();
        for rec in got.values() {
            let n = match rec {
                Record::Multi(parts) => match &parts[0] {
                    Record::Set { key, .. } => key_number(key) / 10,
                    other => panic!("unexpected part {other:?}"),
                },
                Record::Set { key, .. } => key_number(key),
                other => panic!("unexpected record {other:?}"),
            };
            per_writer
                .entry(n / 1_000_000)
                .or_default()
                .push(n % 1_000_000);
        }
        for (t, mut is) in per_writer {
            is.sort_unstable();
            let want: Vec<u64> = (0..is.len() as u64).collect();
            assert_eq!(
                is, want,
                "{mode} round {round}: writer {t} lost a record in the middle"
            );
        }
        if !r.dir.status().loading.holes.is_empty() {
            eprintln!(
                "{mode} round {round}: holes {:?}",
                r.dir.status().loading.holes
            );
        }
        assert!(acked > 0);
    }
}

fn key_number(key: &[u8]) -> u64 {
    std::str::from_utf8(key)
        .unwrap()
        .strip_prefix("key")
        .unwrap()
        .parse()
        .unwrap()
}

/// Many writers copying into the mapped tail at once, with segments small enough that
/// switches happen too: every acknowledged record survives, frames reserved but not
/// copied when the kill lands are skipped, and each writer keeps a prefix.
#[test]
fn sigkill_while_many_writers_copy_into_the_mapped_tail() {
    threaded_mode("many", 0x3a);
}

#[test]
fn sigkill_during_always_appends() {
    threaded_mode("always", 0xa1);
}

/// Under `EverySec` each append is in the OS before it returns, so a process crash
/// (as opposed to a power cut) loses nothing acknowledged either.
#[test]
fn sigkill_during_everysec_appends() {
    threaded_mode("everysec", 0xe5);
}

#[test]
fn sigkill_during_rewrites_and_snapshot_writing() {
    let mut rng = Rng(0x4e);
    for round in 0..rounds() {
        let tmp = tempfile::tempdir().unwrap();
        let lines = run_and_kill("rewrite", tmp.path(), &mut rng);
        let r = open(
            Arc::new(FsBackend::new(tmp.path()).unwrap()),
            opts(FsyncPolicy::Always),
        )
        .unwrap_or_else(|e| panic!("rewrite round {round}: {e}"));
        for l in lines.iter().filter(|l| l.starts_with("ACK ")) {
            let n: u64 = l[4..].parse().unwrap();
            let Record::Set {
                key,
                value,
                expire_at_ms,
            } = set(n)
            else {
                unreachable!()
            };
            assert_eq!(
                r.model.get(&key),
                Some(&(value, expire_at_ms)),
                "rewrite round {round}: acknowledged {n} lost"
            );
        }
        // Only the files the manifest names (plus the manifest) are left after open.
        let m = r.dir.manifest();
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = m.files().map(|f| f.name.clone()).collect();
        want.push("manifest".into());
        want.push(larder_persistence::backend::LOCK_NAME.into());
        want.sort();
        assert_eq!(names, want, "rewrite round {round}");
    }
}
