//! larder's durability and lazy-free benchmarks, with redis-server (Debian's) measured in
//! the same run where there is a Redis counterpart. Prints Markdown tables for
//! BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p larder-benches --bin persist -- unlink [--items N] [--reps N]
//! cargo run --release -p larder-benches --bin persist -- snapshot [--keys N] [--cold] [--no-redis] [--disk-mib N]
//! cargo run --release -p larder-benches --bin persist -- fsync [--secs N] [--reps N] [--only none,no,everysec,always]
//! cargo run --release -p larder-benches --bin persist -- all
//! # a fixed number of single-writer inserts, for instruction counts under callgrind:
//! cargo run --release -p larder-benches --bin persist -- insert-cost --policy none|no|everysec --n N
//! ```
//!
//! Temporary directories live under `$TMPDIR` (default `/tmp`) and are removed at the
//! end; redis-server listens on 127.0.0.1:6399 only and is killed when the program
//! leaves, on error too.

/// With `--features jemalloc`, every cache in the run allocates through jemalloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::{Cache, Durability, Fsync};
use larder_benches::resp::{self, Reply};
use larder_benches::rng::mix64;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// A result that can come back from a writer thread.
type SendRes<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.replace('_', "").parse().expect("numeric flag")
            })
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let result = match args.first().map(String::as_str) {
        Some("unlink") => unlink(flag("--items", 1_000_000), flag("--reps", 7)),
        Some("snapshot") => snapshot(
            flag("--keys", 10_000_000),
            has("--cold"),
            !has("--no-redis"),
            flag("--disk-mib", 2048),
        ),
        Some("fsync") => fsync(
            flag("--secs", 3),
            flag("--reps", 3),
            args.iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map(String::as_str),
        ),
        Some("insert-cost") => insert_cost(
            args.iter()
                .position(|a| a == "--policy")
                .and_then(|i| args.get(i + 1))
                .map_or("none", String::as_str),
            flag("--n", 100_000) as u64,
        ),
        Some("all") => unlink(1_000_000, 7)
            .and_then(|()| fsync(3, 3, None))
            .and_then(|()| snapshot(10_000_000, false, true, 2048)),
        _ => {
            eprintln!("usage: persist unlink|snapshot|fsync|all [flags, see the source]");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn tempdir(prefix: &str) -> Res<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir()?)
}

// ---------------------------------------------------------------------------------------
// unlink vs remove: one value holding `items` heap allocations.

/// The big value: a million boxes. `Arc` so the cache's `Clone` bound costs nothing
/// (nothing clones it here); the cache holds the only reference, so removing the entry
/// frees every box.
type Big = Arc<Vec<Box<u64>>>;

fn big(items: usize) -> Big {
    Arc::new((0..items as u64).map(Box::new).collect())
}

fn unlink(items: usize, reps: usize) -> Res<()> {
    println!("## unlink vs remove: one value of {items} boxed u64s\n");
    println!("load average at start: {}\n", loadavg());
    // Weight: the vector's slot plus the box (8 + 8 bytes, glibc rounds a box to 32).
    let cache: Cache<u64, Big, _> = Cache::builder()
        .weigher(|_: &u64, v: &Big| v.len() * 40)
        .build();
    let (mut inline, mut removes, mut unlinks, mut bg) = (vec![], vec![], vec![], vec![]);
    let wait_lazy = |cache: &Cache<u64, Big, _>| {
        let t = Instant::now();
        while cache.info().stats.lazyfree_pending_objects > 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        t.elapsed()
    };
    for rep in 0..reps {
        // Rotate the order so neither operation always runs first.
        for step in 0..3 {
            match (rep + step) % 3 {
                0 => {
                    let v = big(items);
                    let t = Instant::now();
                    drop(v);
                    inline.push(t.elapsed().as_secs_f64());
                }
                1 => {
                    cache.insert(1, big(items))?;
                    let t = Instant::now();
                    assert!(cache.remove(&1)?);
                    removes.push(t.elapsed().as_secs_f64());
                }
                _ => {
                    cache.insert(2, big(items))?;
                    let t = Instant::now();
                    assert!(cache.unlink(&2)?);
                    let took = t.elapsed();
                    unlinks.push(took.as_secs_f64());
                    eprintln!("rep {rep} step {step}: unlink returned in {took:?}");
                    // Time until the lazy-free thread has dropped it (polled), so the
                    // next measurement does not share the CPU with that drop.
                    bg.push((t.elapsed() + wait_lazy(&cache)).as_secs_f64());
                }
            }
        }
    }
    let (mi, mr, mu, mb) = (
        median(&mut inline),
        median(&mut removes),
        median(&mut unlinks),
        median(&mut bg),
    );
    let max = |xs: &[f64]| xs.iter().cloned().fold(0.0, f64::max);
    println!("| operation | median | max | of {reps} |");
    println!("|---|---:|---:|---|");
    println!(
        "| `drop(value)` outside the cache (baseline) | {:.1} ms | {:.1} ms | |",
        mi * 1e3,
        max(&inline) * 1e3
    );
    println!(
        "| `remove` (drop inline, after the shard lock) | {:.1} ms | {:.1} ms | |",
        mr * 1e3,
        max(&removes) * 1e3
    );
    println!(
        "| `unlink` returns | **{:.1} µs** | {:.1} µs | |",
        mu * 1e6,
        max(&unlinks) * 1e6
    );
    println!(
        "| `unlink` until the lazy-free thread finished (polled every 200 µs) | {:.1} ms | {:.1} ms | |",
        mb * 1e3,
        max(&bg) * 1e3
    );
    println!("\nremove / unlink (medians): {:.0}×\n", mr / mu);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Snapshot save and restart, larder vs redis-server.

fn value_of(i: u64) -> [u8; 16] {
    // 16 printable bytes, the same for larder and Redis.
    let mut v = [0u8; 16];
    v.copy_from_slice(format!("{:016x}", mix64(i)).as_bytes());
    v
}

struct Timings {
    load: f64,
    save: f64,
    restart: f64,
    file_bytes: u64,
    /// Write latencies with no save running, and while a background save runs.
    idle: Latencies,
    during_bgsave: Latencies,
    /// How long the background save took.
    bgsave: f64,
}

/// One writer's latencies, one operation at a time, in microseconds.
#[derive(Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            self.0.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.quantile(1.0)
        )
    }
}

/// Records one writer's latencies in two phases: `phase` 0 = idle, 1 = during a
/// background save, 2 = stop. `write(i)` writes key `i`.
fn record_phases(
    keys: usize,
    phase: &std::sync::atomic::AtomicU8,
    mut write: impl FnMut(u64) -> SendRes<()>,
) -> SendRes<(Latencies, Latencies)> {
    let (mut idle, mut during) = (Latencies::default(), Latencies::default());
    let mut n = 0u64;
    loop {
        let p = phase.load(Ordering::Acquire);
        if p == 2 {
            return Ok((idle, during));
        }
        let i = mix64(n) % keys as u64;
        n += 1;
        let t = Instant::now();
        write(i)?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if p == 0 { &mut idle } else { &mut during }.0.push(us);
    }
}

fn drop_caches() -> bool {
    // SAFETY: `sync` takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn snapshot(keys: usize, cold: bool, redis: bool, disk_mib: usize) -> Res<()> {
    println!("## Snapshot save and restart: {keys} keys `key:N` -> 16-byte values\n");
    println!("load average at start: {}\n", loadavg());
    let tmp = tempdir("larder-snapshot-")?;
    println!(
        "directory: {} (cold restarts: {cold})\n",
        tmp.path().display()
    );
    if cold && !drop_caches() {
        return Err("--cold needs write access to /proc/sys/vm/drop_caches".into());
    }
    let disk = disk_bandwidth(tmp.path(), disk_mib);
    let l = larder_snapshot(&tmp.path().join("larder"), keys, cold)?;
    std::fs::remove_dir_all(tmp.path().join("larder"))?;
    let r = if redis {
        Some(redis_snapshot(&tmp.path().join("redis"), keys, cold)?)
    } else {
        None
    };
    println!("load average at end: {}\n", loadavg());

    let mb = |bytes: u64, secs: f64| bytes as f64 / secs / 1e6;
    println!("| | larder | redis-server 7.0 | Redis / larder |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, l: f64, r: Option<f64>| {
        let (rs, ratio) = r.map_or(("-".into(), "-".into()), |r| {
            (format!("{r:.2} s"), format!("**{:.1}×**", r / l))
        });
        println!("| {name} | {l:.2} s | {rs} | {ratio} |");
    };
    row(
        "load the keys (larder: 2 threads; Redis: pipelined SET)",
        l.load,
        r.as_ref().map(|r| r.load),
    );
    row("`save()` / `SAVE`", l.save, r.as_ref().map(|r| r.save));
    row(
        "restart (`open()` / process start until DBSIZE answers)",
        l.restart,
        r.as_ref().map(|r| r.restart),
    );
    println!(
        "| snapshot file | {:.0} MB | {} | |",
        l.file_bytes as f64 / 1e6,
        r.as_ref().map_or("-".into(), |r| format!(
            "{:.0} MB",
            r.file_bytes as f64 / 1e6
        ))
    );
    println!();
    println!("One writer, one write at a time (larder: `insert` in process; Redis: `SET` over");
    println!("loopback), for a second idle and then while a background save runs:\n");
    println!("| writer | writes | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", l.idle.row("larder, idle"));
    println!(
        "{}",
        l.during_bgsave
            .row(&format!("larder, during `bgsave()` ({:.2} s)", l.bgsave))
    );
    if let Some(r) = &r {
        println!("{}", r.idle.row("Redis, idle"));
        println!(
            "{}",
            r.during_bgsave
                .row(&format!("Redis, during `BGSAVE` ({:.2} s)", r.bgsave))
        );
    }
    println!();
    println!("| larder throughput | MB/s | of disk |");
    println!("|---|---:|---:|");
    let of = |x: f64, d: Option<f64>| d.map_or("-".into(), |d| format!("{:.0}%", 100.0 * x / d));
    let (sv, ld) = (mb(l.file_bytes, l.save), mb(l.file_bytes, l.restart));
    println!("| save (write + fsync) | {sv:.0} | {} |", of(sv, disk.0));
    println!("| restart (read + decode) | {ld:.0} | {} |", of(ld, disk.1));
    println!(
        "\ndisk: sequential write (dd, conv=fdatasync) {}, sequential read after drop_caches {}\n",
        disk.0
            .map_or("not measured".into(), |w| format!("{w:.0} MB/s")),
        disk.1
            .map_or("not measured".into(), |r| format!("{r:.0} MB/s")),
    );
    Ok(())
}

/// Sequential write (with fdatasync) and cold read bandwidth of `dir`'s disk, in MB/s,
/// through `dd`. `None` where it could not be measured.
fn disk_bandwidth(dir: &Path, mib: usize) -> (Option<f64>, Option<f64>) {
    let file = dir.join("ddtest");
    let run = |args: &[String]| -> Option<f64> {
        let t = Instant::now();
        let ok = Command::new("dd")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| (mib as f64 * 1048576.0) / t.elapsed().as_secs_f64() / 1e6)
    };
    let write = run(&[
        "if=/dev/zero".into(),
        format!("of={}", file.display()),
        "bs=1M".into(),
        format!("count={mib}"),
        "conv=fdatasync".into(),
    ]);
    let read = if write.is_some() && drop_caches() {
        run(&[
            format!("if={}", file.display()),
            "of=/dev/null".into(),
            "bs=1M".into(),
        ])
    } else {
        None
    };
    let _ = std::fs::remove_file(&file);
    (write, read)
}

fn larder_snapshot(dir: &Path, keys: usize, cold: bool) -> Res<Timings> {
    let durability = || {
        Durability::new(dir)
            .fsync(Fsync::No)
            // No automatic rewrite while the keys go in: only the timed `save()` writes
            // a base.
            .auto_rewrite(0, 0)
    };
    let cache: Cache<String, [u8; 16]> = Cache::builder().durability(durability()).open()?;
    let t = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let cache = &cache;
                s.spawn(move || -> Result<(), larder::Error> {
                    for i in (w..keys as u64).step_by(2) {
                        cache.insert(format!("key:{i}"), value_of(i))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("loader thread")?;
        }
        Ok(())
    })?;
    let load = t.elapsed().as_secs_f64();
    eprintln!("larder: loaded {} keys in {load:.2} s", cache.len());

    let t = Instant::now();
    cache.save()?;
    let save = t.elapsed().as_secs_f64();
    let p = cache.info().persistence.ok_or("no persistence info")?;
    eprintln!(
        "larder: save {save:.2} s, base {} B, current {} B",
        p.aof_base_size, p.aof_current_size
    );
    let (idle, during_bgsave, bgsave) = larder_bgsave_latency(&cache, keys)?;
    let t = Instant::now();
    drop(cache);
    eprintln!("larder: drop {:.2} s", t.elapsed().as_secs_f64());
    if cold {
        drop_caches();
    }

    let t = Instant::now();
    let cache: Cache<String, [u8; 16]> = Cache::builder().durability(durability()).open()?;
    let restart = t.elapsed().as_secs_f64();
    let p = cache.info().persistence.ok_or("no persistence info")?;
    eprintln!(
        "larder: open {restart:.2} s (loading_time_ms {}, base entries {}, records {}, bytes {})",
        p.loading_time_ms, p.loading_base_entries, p.loading_records, p.loading_bytes
    );
    if cache.len() != keys {
        return Err(format!("larder reopened with {} keys, expected {keys}", cache.len()).into());
    }
    let probe = keys as u64 / 3;
    if cache.get(&format!("key:{probe}")) != Some(value_of(probe)) {
        return Err("larder reopened with a wrong value".into());
    }
    let t = Instant::now();
    drop(cache);
    eprintln!("larder: drop {:.2} s", t.elapsed().as_secs_f64());
    Ok(Timings {
        load,
        save,
        restart,
        file_bytes: p.aof_base_size,
        idle,
        during_bgsave,
        bgsave,
    })
}

/// One writer overwriting random keys for a second, then while `bgsave` runs.
fn larder_bgsave_latency(
    cache: &Cache<String, [u8; 16]>,
    keys: usize,
) -> Res<(Latencies, Latencies, f64)> {
    let phase = std::sync::atomic::AtomicU8::new(0);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut key = String::new();
            record_phases(keys, &phase, |i| {
                use std::fmt::Write as _;
                key.clear();
                write!(key, "key:{i}")?;
                Ok(cache.insert(key.clone(), value_of(i))?)
            })
        });
        std::thread::sleep(Duration::from_secs(1));
        phase.store(1, Ordering::Release);
        let t = Instant::now();
        let started = cache.bgsave();
        while started.is_ok()
            && cache
                .info()
                .persistence
                .is_some_and(|p| p.aof_rewrite_in_progress)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = t.elapsed().as_secs_f64();
        phase.store(2, Ordering::Release);
        let (idle, during) = writer
            .join()
            .expect("writer thread")
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        started?;
        eprintln!("larder: bgsave {took:.2} s with a writer going");
        Ok((idle, during, took))
    })
}

const REDIS_PORT: u16 = 6399;

/// A redis-server child on 127.0.0.1, killed when dropped (also on error and panic).
struct RedisServer {
    child: Child,
}

impl RedisServer {
    fn start(dir: &Path) -> Res<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (apt-get install -y redis-server)"))?;
        Ok(RedisServer { child })
    }

    /// Waits until the server answers PING, reports `loading:0` and DBSIZE, within
    /// `limit`; returns the DBSIZE.
    fn wait_ready(&mut self, limit: Duration) -> Res<i64> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("redis-server not ready in time".into());
            }
            if let Ok(mut c) = Conn::connect() {
                if c.call(&[b"PING"])? == Reply::Simple("PONG".into()) {
                    let info = c.call(&[b"INFO", b"persistence"])?;
                    let loaded = matches!(&info, Reply::Bulk(Some(b))
                        if resp::info_field(&String::from_utf8_lossy(b), "loading") == Some("0"));
                    if loaded {
                        if let Reply::Integer(n) = c.call(&[b"DBSIZE"])? {
                            return Ok(n);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `SHUTDOWN NOSAVE` and wait for the process to exit (killed after 30 s).
    fn shutdown(mut self) -> Res<()> {
        if let Ok(mut c) = Conn::connect() {
            let _ = c.call(&[b"SHUTDOWN", b"NOSAVE"]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err("redis-server did not shut down".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn connect() -> std::io::Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", REDIS_PORT))?;
        s.set_nodelay(true)?;
        // Bounded: SAVE of 10M keys takes seconds, not minutes.
        s.set_read_timeout(Some(Duration::from_secs(600)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(1 << 16, s.try_clone()?),
            writer: s,
        })
    }

    fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.writer.write_all(&out)?;
        resp::read_reply(&mut self.reader)
    }
}

/// The `DB loaded from disk: X seconds` figure of Redis's log, if present.
fn redis_logged_load(dir: &Path) -> Option<String> {
    let log = std::fs::read_to_string(dir.join("redis.log")).ok()?;
    log.lines().rev().find_map(|l| {
        l.split_once("DB loaded from disk: ")
            .map(|(_, r)| r.to_string())
    })
}

fn redis_snapshot(dir: &Path, keys: usize, cold: bool) -> Res<Timings> {
    std::fs::create_dir_all(dir)?;
    let mut server = RedisServer::start(dir)?;
    server.wait_ready(Duration::from_secs(10))?;
    let mut c = Conn::connect()?;

    // Pipelined SETs in batches of 10k: write a batch, read its replies.
    let t = Instant::now();
    let batch = 10_000usize;
    let mut out = Vec::with_capacity(batch * 48);
    let mut reply = vec![0u8; batch * 5];
    let mut i = 0usize;
    while i < keys {
        out.clear();
        let n = batch.min(keys - i);
        for k in i..i + n {
            resp::encode(
                &mut out,
                &[b"SET", format!("key:{k}").as_bytes(), &value_of(k as u64)],
            );
        }
        c.writer.write_all(&out)?;
        c.reader.read_exact(&mut reply[..n * 5])?;
        if reply[..n * 5].chunks(5).any(|r| r != b"+OK\r\n") {
            return Err("redis-server refused a SET".into());
        }
        i += n;
    }
    let load = t.elapsed().as_secs_f64();
    let size = c.call(&[b"DBSIZE"])?;
    eprintln!("redis: loaded {size:?} keys in {load:.2} s");

    let t = Instant::now();
    let r = c.call(&[b"SAVE"])?;
    let save = t.elapsed().as_secs_f64();
    if r != Reply::Simple("OK".into()) {
        return Err(format!("SAVE answered {r:?}").into());
    }
    let file_bytes = std::fs::metadata(dir.join("dump.rdb"))?.len();
    eprintln!("redis: SAVE {save:.2} s, dump.rdb {file_bytes} B");
    let (idle, during_bgsave, bgsave) = redis_bgsave_latency(&mut c, keys)?;
    drop(c);
    server.shutdown()?;
    if cold {
        drop_caches();
    }

    let t = Instant::now();
    let mut server = RedisServer::start(dir)?;
    let n = server.wait_ready(Duration::from_secs(600))?;
    let restart = t.elapsed().as_secs_f64();
    eprintln!(
        "redis: restart {restart:.2} s, DBSIZE {n}, log says loaded in {}",
        redis_logged_load(dir).unwrap_or_else(|| "?".into())
    );
    if n != keys as i64 {
        return Err(format!("redis-server restarted with {n} keys, expected {keys}").into());
    }
    server.shutdown()?;
    Ok(Timings {
        load,
        save,
        restart,
        file_bytes,
        idle,
        during_bgsave,
        bgsave,
    })
}

/// One client sending SETs of random keys one at a time for a second, then while
/// `BGSAVE` runs (polled on `c`).
fn redis_bgsave_latency(c: &mut Conn, keys: usize) -> Res<(Latencies, Latencies, f64)> {
    let phase = std::sync::atomic::AtomicU8::new(0);
    std::thread::scope(|s| {
        let writer = s.spawn(|| -> SendRes<(Latencies, Latencies)> {
            let mut w = Conn::connect()?;
            let mut out = Vec::new();
            let mut reply = [0u8; 5];
            record_phases(keys, &phase, |i| {
                out.clear();
                resp::encode(
                    &mut out,
                    &[b"SET", format!("key:{i}").as_bytes(), &value_of(i)],
                );
                w.writer.write_all(&out)?;
                w.reader.read_exact(&mut reply)?;
                if &reply != b"+OK\r\n" {
                    return Err("redis-server refused a SET".into());
                }
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_secs(1));
        phase.store(1, Ordering::Release);
        let t = Instant::now();
        let started = c.call(&[b"BGSAVE"]);
        loop {
            let info = c.call(&[b"INFO", b"persistence"])?;
            let text = match info {
                Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            };
            if !text.contains("rdb_bgsave_in_progress:1") {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = t.elapsed().as_secs_f64();
        phase.store(2, Ordering::Release);
        let (idle, during) = writer
            .join()
            .map_err(|_| "redis writer thread panicked")?
            .map_err(|e| e as Box<dyn std::error::Error>)?;
        started?;
        eprintln!("redis: BGSAVE {took:.2} s with a writer going");
        Ok((idle, during, took))
    })
}

// ---------------------------------------------------------------------------------------
// Write throughput by fsync policy.

#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    fsync: Option<Fsync>,
    threads: usize,
}

const CONFIGS: [Config; 13] = [
    Config {
        name: "no persistence",
        fsync: None,
        threads: 1,
    },
    Config {
        name: "no persistence",
        fsync: None,
        threads: 2,
    },
    Config {
        name: "no persistence",
        fsync: None,
        threads: 8,
    },
    Config {
        name: "`No`",
        fsync: Some(Fsync::No),
        threads: 1,
    },
    Config {
        name: "`No`",
        fsync: Some(Fsync::No),
        threads: 2,
    },
    Config {
        name: "`No`",
        fsync: Some(Fsync::No),
        threads: 8,
    },
    Config {
        name: "`EverySec`",
        fsync: Some(Fsync::EverySec),
        threads: 1,
    },
    Config {
        name: "`EverySec`",
        fsync: Some(Fsync::EverySec),
        threads: 2,
    },
    Config {
        name: "`EverySec`",
        fsync: Some(Fsync::EverySec),
        threads: 8,
    },
    Config {
        name: "`Always`",
        fsync: Some(Fsync::Always),
        threads: 1,
    },
    Config {
        name: "`Always`",
        fsync: Some(Fsync::Always),
        threads: 2,
    },
    Config {
        name: "`Always`",
        fsync: Some(Fsync::Always),
        threads: 8,
    },
    Config {
        name: "`Always`",
        fsync: Some(Fsync::Always),
        threads: 64,
    },
];

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Inserts per second of `cfg` over `secs`, the writers' CPU time per insert in
/// nanoseconds (what a write costs, whatever else the machine runs), and the log's
/// syncs in the run: each writer overwrites its own 2^20 keys (`u64 -> [u8; 16]`) in a
/// loop until told to stop.
fn run_config(cfg: Config, secs: u64) -> Res<(f64, f64, u64)> {
    let tmp = tempdir("larder-fsync-")?;
    let cache: Cache<u64, [u8; 16]> = match cfg.fsync {
        None => Cache::builder().build(),
        Some(policy) => Cache::builder()
            .durability(Durability::new(tmp.path()).fsync(policy).auto_rewrite(0, 0))
            .open()?,
    };
    let stop = AtomicBool::new(false);
    let start = Barrier::new(cfg.threads + 1);
    let (total, cpu, elapsed) = std::thread::scope(|s| -> Res<(u64, u64, f64)> {
        let workers: Vec<_> = (0..cfg.threads as u64)
            .map(|w| {
                let (cache, stop, start) = (&cache, &stop, &start);
                s.spawn(move || -> Result<(u64, u64), larder::Error> {
                    start.wait();
                    let cpu = thread_cpu_ns();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let k = (w << 32) | (n & 0xF_FFFF);
                        cache.insert(k, value_of(k))?;
                        n += 1;
                    }
                    Ok((n, thread_cpu_ns() - cpu))
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        let (mut total, mut cpu) = (0, 0);
        for w in workers {
            let (n, ns) = w.join().expect("writer thread")?;
            total += n;
            cpu += ns;
        }
        Ok((total, cpu, t.elapsed().as_secs_f64()))
    })?;
    let syncs = cache.info().persistence.map_or(0, |p| p.aof_fsyncs);
    drop(cache);
    Ok((total as f64 / elapsed, cpu as f64 / total as f64, syncs))
}

/// `n` inserts by one writer, as `run_config`'s writers do them, and nothing else: run
/// under `valgrind --tool=callgrind` at two values of `n`, the difference of the
/// instruction counts divided by the difference of `n` is the cost of one insert,
/// free of setup and of the machine's load.
fn insert_cost(policy: &str, n: u64) -> Res<()> {
    let tmp = tempdir("larder-insert-cost-")?;
    let fsync = match policy {
        "none" => None,
        "no" => Some(Fsync::No),
        "everysec" => Some(Fsync::EverySec),
        "always" => Some(Fsync::Always),
        other => return Err(format!("unknown policy {other}").into()),
    };
    let cache: Cache<u64, [u8; 16]> = match fsync {
        None => Cache::builder().build(),
        Some(policy) => Cache::builder()
            .durability(Durability::new(tmp.path()).fsync(policy).auto_rewrite(0, 0))
            .open()?,
    };
    for i in 0..n {
        let k = i & 0xF_FFFF;
        cache.insert(k, value_of(k))?;
    }
    println!("{policy}: {n} inserts, {} entries", cache.len());
    Ok(())
}

/// fdatasyncs per second of a loop appending 64 bytes and syncing, in `dir`: the rate a
/// single writer under `Always` cannot beat.
fn raw_fsync_rate(dir: &Path, secs: f64) -> Res<f64> {
    let path: PathBuf = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        f.write_all(&[0x5a; 64])?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Appends of one `len`-byte frame per `pwrite` per second, single-threaded, in `dir`:
/// the ceiling of a log that makes one syscall per acknowledged write.
fn raw_pwrite_rate(dir: &Path, len: usize, secs: f64) -> Res<f64> {
    use std::os::unix::fs::FileExt;
    let path: PathBuf = dir.join("pwrite-probe");
    let f = std::fs::File::create(&path)?;
    let frame = vec![0x5au8; len];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        for _ in 0..1024 {
            f.write_all_at(&frame, n * len as u64)?;
            n += 1;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// One run of a configuration: inserts/s, raw fdatasyncs/s probed just before it, CPU
/// ns per insert, inserts per log sync.
type Sample = (f64, f64, f64, f64);

fn fsync(secs: usize, reps: usize, only: Option<&str>) -> Res<()> {
    println!("## Write throughput by fsync policy ({secs} s per run, {reps} reps)\n");
    println!("load average at start: {}\n", loadavg());
    let probe = tempdir("larder-fsync-probe-")?;
    let configs: Vec<Config> = CONFIGS
        .iter()
        .copied()
        .filter(|c| {
            let name = match c.fsync {
                None => "none",
                Some(Fsync::No) => "no",
                Some(Fsync::EverySec) => "everysec",
                Some(Fsync::Always) => "always",
            };
            only.is_none_or(|o| o.split(',').any(|p| p == name))
        })
        .collect();
    // Per configuration: (inserts/s, raw fdatasyncs/s probed just before the run, CPU
    // ns per insert, inserts per log sync).
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    let mut pwrites = Vec::new();
    for rep in 0..reps {
        // A `u64 -> [u8; 16]` insert is one 50-byte frame.
        let p = raw_pwrite_rate(probe.path(), 50, 1.0)?;
        eprintln!("rep {rep}: raw pwrite(50 B) probe {p:.0}/s");
        pwrites.push(p);
        for step in 0..configs.len() {
            let i = (rep + step) % configs.len();
            // The disk's fsync latency swings widely on a shared virtual disk, so each
            // `Always` run is paired with a raw probe taken right before it.
            let raw = if configs[i].fsync == Some(Fsync::Always) {
                raw_fsync_rate(probe.path(), 1.0)?
            } else {
                f64::NAN
            };
            let (r, cpu, syncs) = run_config(configs[i], secs as u64)?;
            let per_sync = r * secs as f64 / syncs.max(1) as f64;
            eprintln!(
                "rep {rep}: {} x{}: {:.0} inserts/s, {cpu:.0} CPU ns/insert, {per_sync:.1} inserts per sync (raw fdatasync probe {:.0}/s)",
                configs[i].name, configs[i].threads, r, raw
            );
            results[i].push((r, raw, cpu, per_sync));
        }
    }
    println!("load average at end: {}\n", loadavg());
    println!(
        "raw `pwrite` of a 50-byte frame, one thread, median: {:.0}/s\n",
        median(&mut pwrites)
    );
    let med = |i: usize, f: &dyn Fn(&Sample) -> f64| -> f64 {
        let mut xs: Vec<f64> = results[i].iter().map(f).collect();
        median(&mut xs)
    };
    let find = |fsync: Option<Fsync>, threads: usize| {
        configs
            .iter()
            .position(|c| c.fsync == fsync && c.threads == threads)
    };
    let thr: Vec<f64> = (0..configs.len()).map(|i| med(i, &|r| r.0)).collect();
    let per: Vec<f64> = (0..configs.len()).map(|i| med(i, &|r| r.0 / r.1)).collect();
    let always1 = find(Some(Fsync::Always), 1);
    println!(
        "| policy | writers | inserts/s, median | min–max | vs no persistence, same writers | vs `No`, same writers | writers' CPU ns per insert, median | raw fdatasync/s before the run, median | inserts per raw fsync, median | inserts per log sync, median | vs `Always` ×1 (normalised) | of linear |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, cfg) in configs.iter().enumerate() {
        let lo = results[i].iter().map(|r| r.0).fold(f64::MAX, f64::min);
        let hi = results[i].iter().map(|r| r.0).fold(0.0, f64::max);
        let (raw, pr, vs1, lin) = match (cfg.fsync, always1) {
            (Some(Fsync::Always), Some(a1)) => (
                format!("{:.0}", med(i, &|r| r.1)),
                format!("{:.2}", per[i]),
                format!("{:.1}×", per[i] / per[a1]),
                format!("{:.2}", per[i] / per[a1] / cfg.threads as f64),
            ),
            _ => Default::default(),
        };
        let per_sync = match cfg.fsync {
            Some(Fsync::Always) => format!("{:.1}", med(i, &|r| r.3)),
            _ => String::new(),
        };
        let ratio = |base: Option<usize>| match base {
            Some(b) if b != i => format!("{:.2}", thr[i] / thr[b]),
            _ => String::new(),
        };
        let (vs_mem, vs_no) = match cfg.fsync {
            None => Default::default(),
            Some(_) => (
                ratio(find(None, cfg.threads)),
                ratio(find(Some(Fsync::No), cfg.threads)),
            ),
        };
        println!(
            "| {} | {} | {:.0} | {:.0}–{:.0} | {vs_mem} | {vs_no} | {:.0} | {raw} | {pr} | {per_sync} | {vs1} | {lin} |",
            cfg.name,
            cfg.threads,
            thr[i],
            lo,
            hi,
            med(i, &|r| r.2),
        );
    }
    println!();
    Ok(())
}
