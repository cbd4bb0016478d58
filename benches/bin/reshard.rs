//! Slot migration: larder's `migrate_slots` against Redis 7's `redis-cli --cluster
//! reshard`, on the same data, both started by this program, with a client reading and
//! writing the moving keys all along. Prints Markdown tables: migration throughput (keys/s,
//! MB/s, larder/Redis), the client's latency and errors before and during the move, and
//! whether the issue's goal (faster than Redis, no client-visible error) is met.
//!
//! ```text
//! cargo run --release -p larder-benches --bin reshard -- [--quick] [--keys N] [--sizes V,V...]
//!     [--reps N] [--batch N] [--node-timeout MS] [--in-process] [--no-redis] [--no-larder]
//! ```
//!
//! - Shape, both sides: 2 masters, no replicas, loopback, `cluster-node-timeout`
//!   `--node-timeout` (default 15000 ms, both sides' default). Master A serves slots
//!   0..=8191, master B 8192..=16383. N keys (`key:NNNNNNNNNN`, 14 bytes, only those
//!   whose slot is A's; default 200 000, `--quick` 20 000) with values of V bytes
//!   (`--sizes`, default 100 and 1024), loaded into A, then all 8192 slots of A moved
//!   to B, `--batch` keys per round trip (default 100). `--reps` fresh clusters per side
//!   and size (default 1); the median is reported, failed runs apart.
//! - Redis 7 (`redis-server` children, [`RedisCluster::start_masters`]): data loaded with
//!   pipelined `SET`s (1000 per write), then the wall time of `redis-cli --cluster
//!   reshard 127.0.0.1:<A> --cluster-from <A> --cluster-to <B> --cluster-slots 8192
//!   --cluster-yes --cluster-pipeline <batch>`.
//! - larder: three `ClusterCache<String, Vec<u8>>` nodes in this process over QUIC on
//!   127.0.0.1: A and B as above, and C, a master with no slots that only carries the
//!   client. Data loaded through A (`insert`), then the time of `Admin::migrate_slots(A,
//!   B, [0..=8191], batch)` over QUIC from a tool identity (`--in-process`: the same
//!   request through `ClusterCache::admin` on A, awaited on this program's runtime).
//!   Meanwhile a thread samples A's and B's write gates every millisecond (what a
//!   write on the node checks) and compares A's and B's routing tables; the run's notes
//!   say when a gate was closed and why.
//! - The client, both sides: one thread, one operation at a time, `GET` or `SET` (50/50)
//!   of a random key among the N, a `SET` writing the value the key already has (so the
//!   final check holds). Redis: a cluster-aware RESP client (slot table, `MOVED` updates
//!   it, `ASK` is followed with `ASKING`); larder: `ClusterCache::blocking()` on node C,
//!   which follows redirects itself. It runs a warm-up phase (the "before" figures), then
//!   the migration ("during"); it stops when the migration returns. Errors are every
//!   failed operation other than a followed redirect; a `GET` answering nothing or the
//!   wrong bytes counts apart ("missing/wrong").
//! - After each migration, a check (not timed): every key is on B with its value (larder:
//!   B's own cache, B's routing table owning each moved slot, A a replica of B with a
//!   full copy of B's keys, as in Redis 7 where an emptied master follows its slots; Redis:
//!   `GET` of every key on B without redirection, `DBSIZE` of B). A larder migration that
//!   fails is recorded with where the data stands (keys on A and B, keys readable through
//!   C), then resumed once (the slots A still serves moved again, not timed) and checked
//!   as above; it is left out of the medians. A failed check or a failed Redis reshard
//!   ends the program.
//!
//! Redis listens on 127.0.0.1 ports 21600..21700 and 31600..31700 only; every Redis node
//! is SIGKILLed when the program leaves, on error too. Needs redis-server and redis-cli
//! (installed with apt-get when missing) unless `--no-redis`.

/// With `--features jemalloc`, every cache in the run allocates through jemalloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::cluster::admin::Admin;
use larder::cluster::admin_wire::{to_ranges, AdminRequest, AdminResponse};
use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::net::Replication;
use larder::cluster::larder_cluster::proto::{Rng, SLOTS};
use larder::cluster::{
    key_hash_slot, ClusterCa, ClusterCache, ClusterConfig, KeySlot, NodeId, SlotSet, StateStore,
};
use larder::Cache;
use larder_benches::redis_cluster::{ensure_redis, RedisCluster};
use larder_benches::resp::{self, Reply};
use larder_benches::run_env::{git_head, loadavg, redis_version, tempdir};
use larder_benches::Xoshiro256;
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

type Res<T> = Result<T, String>;
type Node = ClusterCache<String, Vec<u8>>;

/// The slots moved: all of master A's, `0..MOVED_SLOTS`.
const MOVED_SLOTS: u16 = 8192;
/// Default `cluster-node-timeout` of both sides, ms (`--node-timeout`): both sides'
/// own default. No node fails here; larder's write lease is 9/10 of it.
const NODE_TIMEOUT_MS: u64 = 15_000;
/// How often the larder run samples A's write gate during the move.
const GATE_POLL: Duration = Duration::from_millis(1);
/// First client port of the Redis clusters (rotated by 10 per run; bus ports +10000).
const REDIS_PORT: u16 = 21_600;
/// `SET`s or `GET`s per write when loading and checking Redis.
const PIPELINE: usize = 1000;
/// Redirects one client operation may follow before it counts as an error.
const MAX_REDIRECTS: usize = 5;
/// How long the larder checks wait for a condition.
const TEN_S: Duration = Duration::from_secs(10);
/// How long the check waits for A, B's replica after the move, to hold B's keys.
const SYNC_LIMIT: Duration = Duration::from_secs(120);
/// A migration slower than this is an error (redis-cli is killed).
const MIGRATION_LIMIT: Duration = Duration::from_secs(900);

/// Client phases, in order.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const STOP: u8 = 2;

struct Opts {
    keys: usize,
    sizes: Vec<usize>,
    reps: usize,
    batch: u32,
    node_timeout: Duration,
    /// Seconds of the client's warm-up phase.
    warmup: f64,
    in_process: bool,
    redis: bool,
    larder: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let num = |name: &str, default: usize| -> usize {
        value(name).map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}"))
        })
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let flags = ["--quick", "--in-process", "--no-redis", "--no-larder"];
    let valued = ["--keys", "--sizes", "--reps", "--batch", "--node-timeout"];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if valued.contains(&a) {
            i += 2;
        } else if flags.contains(&a) {
            i += 1;
        } else {
            eprintln!(
                "unknown argument {a:?}; usage: reshard [--quick] [--keys N] [--sizes V,V...] \
                 [--reps N] [--batch N] [--node-timeout MS] [--in-process] [--no-redis] \
                 [--no-larder]"
            );
            std::process::exit(2);
        }
    }
    let quick = has("--quick");
    let opts = Opts {
        keys: num("--keys", if quick { 20_000 } else { 200_000 }).max(1),
        sizes: value("--sizes").map_or_else(
            || vec![100, 1024],
            |v| {
                v.split(',')
                    .map(|n| n.trim().parse().expect("--sizes takes V[,V...]"))
                    .collect()
            },
        ),
        reps: num("--reps", 1).max(1),
        batch: num("--batch", 100).max(1) as u32,
        node_timeout: Duration::from_millis(num("--node-timeout", NODE_TIMEOUT_MS as usize) as u64),
        warmup: if quick { 0.3 } else { 1.0 },
        in_process: has("--in-process"),
        redis: !has("--no-redis"),
        larder: !has("--no-larder"),
    };
    println!(
        "# reshard: slot migration, larder vs redis-cli --cluster reshard\n\ncommand: `cargo run \
         --release -p larder-benches --bin reshard -- {}`\n",
        args.join(" ")
    );
    println!(
        "{} cores, load average at start {}, {}, commit {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        redis_version(),
        git_head(),
    );
    let started = Instant::now();
    let result = run(&opts);
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Res<()> {
    if opts.redis {
        ensure_redis()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    println!(
        "2 masters (A: slots 0..=8191, B: 8192..=16383), no replicas, loopback. {} keys \
         (14-byte keys), all in A's slots, loaded into A; then all {MOVED_SLOTS} slots of A \
         moved to B, {} keys per batch. One client thread, one operation at a time (GET or \
         SET of a random key of the N, 50/50), {:.1} s before the move and all through it. \
         {} repetition(s) per side and value size, fresh cluster each; the median is \
         reported.\n",
        opts.keys, opts.batch, opts.warmup, opts.reps
    );
    let keys = Arc::new(keyset(opts.keys));
    let mut runs: Vec<RunResult> = Vec::new();
    let mut run_no = 0u16;
    for &size in &opts.sizes {
        for rep in 0..opts.reps {
            if opts.redis {
                let r = redis_run(opts, &keys, size, run_no)?;
                eprintln!("{}", r.line(rep));
                runs.push(r);
                run_no += 1;
            }
            if opts.larder {
                let r = larder_run(&rt, opts, &keys, size, 40_000 + run_no as u64 * 10)?;
                eprintln!("{}", r.line(rep));
                runs.push(r);
                run_no += 1;
            }
        }
    }
    report(opts, &runs);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Data.

/// The first `n` keys `key:NNNNNNNNNN` whose slot is below [`MOVED_SLOTS`].
fn keyset(n: usize) -> Vec<String> {
    (0..)
        .map(|i: u64| format!("key:{i:010}"))
        .filter(|k| key_hash_slot(k.as_bytes()) < MOVED_SLOTS)
        .take(n)
        .collect()
}

/// The value of key number `i`: `size` printable bytes that depend on `i`.
fn value(i: usize, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    let tag = format!("{i}:");
    v.extend(tag.bytes().cycle().take(size.min(tag.len())));
    v.extend((v.len()..size).map(|j| b'a' + ((i * 7 + j) % 26) as u8));
    v
}

/// Key and value bytes of the data set.
fn payload_bytes(keys: &[String], size: usize) -> u64 {
    keys.iter().map(|k| (k.len() + size) as u64).sum()
}

// ---------------------------------------------------------------------------------------
// The client, both sides.

/// What one client operation came to.
enum Outcome {
    Ok,
    /// A `GET` found nothing, or other bytes than the key's value.
    Wrong(String),
    /// Failed (redirects followed are not failures).
    Error(String),
}

/// Latencies and failures of one client phase.
#[derive(Default)]
struct Phase {
    /// Nanoseconds per operation.
    lat: Vec<u64>,
    /// Wall time of the phase.
    secs: f64,
    /// The slowest operation, ns, and when it started (from the start of the phase).
    slowest: u64,
    slowest_at: Duration,
    errors: u64,
    first_error: Option<String>,
    /// When the first and the last failed operation started (from the start of the
    /// phase).
    error_span: Option<(Duration, Duration)>,
    last_error: Option<String>,
    /// Errors by kind ([`error_kind`]), in order of first appearance.
    kinds: Vec<(&'static str, u64)>,
    wrong: u64,
    first_wrong: Option<String>,
}

impl Phase {
    fn note(&mut self, o: Outcome, at: Duration) {
        match o {
            Outcome::Ok => {}
            Outcome::Wrong(e) => {
                self.wrong += 1;
                self.first_wrong.get_or_insert(e);
            }
            Outcome::Error(e) => {
                self.errors += 1;
                let kind = error_kind(&e);
                match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => self.kinds.push((kind, 1)),
                }
                let span = self.error_span.get_or_insert((at, at));
                span.1 = at;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                } else {
                    self.last_error = Some(e);
                }
            }
        }
    }

    /// The errors by kind and when they happened, "TRYAGAIN 3, CLUSTERDOWN 1, from
    /// 0.512 s to 0.730 s", or "-".
    fn kinds_note(&self) -> String {
        if self.kinds.is_empty() {
            return "-".into();
        }
        let v: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        match self.error_span {
            Some((a, b)) => format!(
                "{}, from {:.3} s to {:.3} s",
                v.join(", "),
                a.as_secs_f64(),
                b.as_secs_f64()
            ),
            None => v.join(", "),
        }
    }

    /// (p50, p99, max) in microseconds.
    fn stats(&self) -> (f64, f64, f64) {
        if self.lat.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let mut v = self.lat.clone();
        v.sort_unstable();
        let us = |x: u64| x as f64 / 1e3;
        (
            us(percentile(&v, 0.50)),
            us(percentile(&v, 0.99)),
            us(v[v.len() - 1]),
        )
    }
}

/// The kind of a client error, for counting: the Redis error code it carries
/// (`TRYAGAIN`, `CLUSTERDOWN`, ...), else a rough class.
fn error_kind(e: &str) -> &'static str {
    const CODES: [&str; 8] = [
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MOVED",
        "ASK",
        "READONLY",
        "LOADING",
        "too many redirects",
        "unreachable",
    ];
    CODES
        .iter()
        .find(|c| e.contains(*c))
        .copied()
        .unwrap_or("other")
}

/// Runs `op(is_get, key index)` until `phase` reads [`STOP`], one at a time, filing each
/// operation under the phase it started in. Returns the before and during phases.
fn client_loop(
    phase: &AtomicU8,
    n: usize,
    seed: u64,
    mut op: impl FnMut(bool, usize) -> Outcome,
) -> (Phase, Phase) {
    let mut rng = Xoshiro256::seed_from_u64(seed);
    let mut phases = [Phase::default(), Phase::default()];
    let mut starts = [Instant::now(), Instant::now()];
    let mut last = BEFORE;
    loop {
        let p = phase.load(Relaxed);
        if p == STOP {
            break;
        }
        if p != last {
            phases[last as usize].secs = starts[last as usize].elapsed().as_secs_f64();
            starts[p as usize] = Instant::now();
            last = p;
        }
        let r = rng.next_u64();
        let i = (r >> 1) as usize % n;
        let t = Instant::now();
        let o = op(r & 1 == 0, i);
        let took = t.elapsed().as_nanos() as u64;
        let ph = &mut phases[p as usize];
        if took > ph.slowest {
            ph.slowest = took;
            ph.slowest_at = t - starts[p as usize];
        }
        ph.lat.push(took);
        ph.note(o, t - starts[p as usize]);
    }
    phases[last as usize].secs = starts[last as usize].elapsed().as_secs_f64();
    let [before, during] = phases;
    (before, during)
}

/// Runs the client on its own thread while `migrate` runs on this one: the warm-up
/// phase first, then `migrate`, whose result comes back with both phases.
fn with_client<T>(
    warmup: f64,
    client: impl FnOnce(&AtomicU8) -> (Phase, Phase) + Send,
    migrate: impl FnOnce() -> Res<T>,
) -> Res<(T, Phase, Phase)> {
    let phase = AtomicU8::new(BEFORE);
    std::thread::scope(|s| {
        let h = s.spawn(|| client(&phase));
        std::thread::sleep(Duration::from_secs_f64(warmup));
        phase.store(DURING, Relaxed);
        let r = migrate();
        phase.store(STOP, Relaxed);
        let (before, during) = h.join().map_err(|_| "the client thread panicked")?;
        r.map(|t| (t, before, during))
    })
}

// ---------------------------------------------------------------------------------------
// One run's figures.

struct RunResult {
    side: &'static str,
    size: usize,
    keys: usize,
    took: Duration,
    bytes: u64,
    /// What the migration itself reported, for the record.
    detail: String,
    /// Why the migration failed (the run's figures are then left out).
    failure: Option<String>,
    before: Phase,
    during: Phase,
    /// Redirects the client followed (Redis: MOVED, ASK); larder's client does not see them.
    redirects: Option<(u64, u64)>,
}

impl RunResult {
    fn keys_per_s(&self) -> f64 {
        self.keys as f64 / self.took.as_secs_f64()
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.took.as_secs_f64()
    }

    fn line(&self, rep: usize) -> String {
        let (p50, p99, max) = self.during.stats();
        let head = match &self.failure {
            Some(e) => format!(
                "rep {rep} {} V={}: FAILED after {:.3} s: {e} ({})",
                self.side,
                self.size,
                self.took.as_secs_f64(),
                self.detail
            ),
            None => format!(
                "rep {rep} {} V={}: {} keys in {:.3} s = {:.0} keys/s, {:.1} MB/s ({})",
                self.side,
                self.size,
                self.keys,
                self.took.as_secs_f64(),
                self.keys_per_s(),
                self.mb_per_s(),
                self.detail
            ),
        };
        format!(
            "{head}; client during: {} ops, p50 {p50:.0} us, p99 {p99:.0} us, max {:.1} ms \
             (started {:.3} s into the move), {} errors ({}){}{}, {} missing/wrong{}",
            self.during.lat.len(),
            max / 1e3,
            self.during.slowest_at.as_secs_f64(),
            self.during.errors,
            self.during.kinds_note(),
            self.during
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first: {e})")),
            self.during
                .last_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (last: {e})")),
            self.during.wrong,
            self.during
                .first_wrong
                .as_ref()
                .map_or(String::new(), |e| format!(" (first: {e})")),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Redis.

/// A RESP connection with time limits.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn connect(port: u16) -> io::Result<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            reader: BufReader::with_capacity(1 << 16, s.try_clone()?),
            writer: s,
        })
    }

    fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.writer.write_all(&out)?;
        resp::read_reply(&mut self.reader)
    }

    /// Sends every command of `cmds` in one write and reads as many replies.
    fn pipeline(&mut self, cmds: &[Vec<&[u8]>]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        for c in cmds {
            resp::encode(&mut out, c);
        }
        self.writer.write_all(&out)?;
        cmds.iter()
            .map(|_| resp::read_reply(&mut self.reader))
            .collect()
    }
}

/// A cluster-aware client: a slot table, one connection per node, `MOVED` updates the
/// table, `ASK` is followed once with `ASKING`.
struct RedisClient {
    table: Vec<u16>,
    conns: HashMap<u16, Conn>,
    moved: u64,
    ask: u64,
}

impl RedisClient {
    fn new(ports: &[u16]) -> RedisClient {
        let n = ports.len();
        let table = (0..SLOTS).map(|s| ports[s * n / SLOTS]).collect();
        RedisClient {
            table,
            conns: HashMap::new(),
            moved: 0,
            ask: 0,
        }
    }

    /// `args` for a key of `slot`, redirects followed.
    fn call(&mut self, slot: u16, args: &[&[u8]]) -> Result<Reply, String> {
        let mut port = self.table[slot as usize];
        let mut asking = false;
        for _ in 0..MAX_REDIRECTS {
            let r = self.send(port, asking, args);
            let reply = match r {
                Ok(r) => r,
                Err(e) => {
                    self.conns.remove(&port);
                    return Err(format!("port {port}: {e}"));
                }
            };
            match &reply {
                Reply::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => {
                    let to = redirect_port(e).ok_or_else(|| format!("bad redirect {e:?}"))?;
                    if e.starts_with("MOVED ") {
                        self.moved += 1;
                        self.table[slot as usize] = to;
                        asking = false;
                    } else {
                        self.ask += 1;
                        asking = true;
                    }
                    port = to;
                }
                _ => return Ok(reply),
            }
        }
        Err(format!(
            "more than {MAX_REDIRECTS} redirects for slot {slot}"
        ))
    }

    fn send(&mut self, port: u16, asking: bool, args: &[&[u8]]) -> io::Result<Reply> {
        let conn = match self.conns.entry(port) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Conn::connect(port)?),
        };
        if !asking {
            return conn.call(args);
        }
        let mut r = conn.pipeline(&[vec![b"ASKING".as_slice()], args.to_vec()])?;
        let reply = r.pop().expect("two replies");
        match r.pop() {
            Some(Reply::Simple(s)) if s == "OK" => Ok(reply),
            other => Err(io::Error::other(format!("ASKING answered {other:?}"))),
        }
    }
}

/// The port of `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`.
fn redirect_port(e: &str) -> Option<u16> {
    e.split_whitespace()
        .nth(2)?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// `RedisCluster::start_masters(2)` from `port`, or 30 or 60 ports higher when a port
/// is taken.
fn start_redis(dir: &Path, port: u16, node_timeout: Duration) -> Res<RedisCluster> {
    let mut last = String::new();
    for shift in [0, 30, 60] {
        match RedisCluster::start_masters(dir, port + shift, 2, node_timeout.as_millis() as u64) {
            Ok(c) => return Ok(c),
            Err(e) if e.contains("is not free") => {
                eprintln!(
                    "Redis cluster on port {}: {e}; trying other ports",
                    port + shift
                );
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One Redis run on a fresh 2-master cluster.
fn redis_run(opts: &Opts, keys: &Arc<Vec<String>>, size: usize, run_no: u16) -> Res<RunResult> {
    let dir = tempdir("reshard-redis-")?;
    let cluster = start_redis(
        dir.path(),
        REDIS_PORT + (run_no % 3) * 10,
        opts.node_timeout,
    )?;
    let ports = cluster.ports();
    let (a, b) = (ports[0], ports[1]);
    let (id_a, id_b) = (cluster.node_id(a)?, cluster.node_id(b)?);

    // larder's slot function is Redis's: checked on a few keys.
    let mut conn = Conn::connect(a).map_err(|e| format!("connect to {a}: {e}"))?;
    for k in keys.iter().take(16) {
        let got = conn.call(&[b"CLUSTER", b"KEYSLOT", k.as_bytes()]);
        match got {
            Ok(Reply::Integer(s)) if s == key_hash_slot(k.as_bytes()) as i64 => {}
            other => {
                return Err(format!(
                    "CLUSTER KEYSLOT {k} answered {other:?}, larder computes {}",
                    key_hash_slot(k.as_bytes())
                ))
            }
        }
    }

    // Load, pipelined, straight into A (every key is A's).
    let t = Instant::now();
    for (c, chunk) in keys.chunks(PIPELINE).enumerate() {
        let vals: Vec<Vec<u8>> = (0..chunk.len())
            .map(|j| value(c * PIPELINE + j, size))
            .collect();
        let cmds: Vec<Vec<&[u8]>> = chunk
            .iter()
            .zip(&vals)
            .map(|(k, v)| vec![b"SET".as_slice(), k.as_bytes(), v])
            .collect();
        let replies = conn
            .pipeline(&cmds)
            .map_err(|e| format!("load into {a}: {e}"))?;
        if let Some(r) = replies.iter().find(|r| **r != Reply::Simple("OK".into())) {
            return Err(format!("SET while loading {a} answered {r:?}"));
        }
    }
    match conn.call(&[b"DBSIZE"]) {
        Ok(Reply::Integer(n)) if n as usize == keys.len() => {}
        other => return Err(format!("DBSIZE on A after loading: {other:?}")),
    }
    eprintln!(
        "Redis V={size}: {} keys loaded into port {a} in {:.2} s",
        keys.len(),
        t.elapsed().as_secs_f64()
    );
    drop(conn);

    let client_keys = keys.clone();
    let mut redirects = (0, 0);
    let redirects_out = &mut redirects;
    let (took, before, during) = with_client(
        opts.warmup,
        move |phase| {
            let mut c = RedisClient::new(&[a, b]);
            let n = client_keys.len();
            let r = client_loop(phase, n, 7, |get, i| {
                let k = client_keys[i].as_bytes();
                let slot = key_hash_slot(k);
                let v = value(i, size);
                if get {
                    match c.call(slot, &[b"GET", k]) {
                        Ok(Reply::Bulk(Some(got))) if got == v => Outcome::Ok,
                        Ok(Reply::Bulk(Some(got))) => Outcome::Wrong(format!(
                            "GET {}: {} other bytes",
                            client_keys[i],
                            got.len()
                        )),
                        Ok(Reply::Bulk(None)) => {
                            Outcome::Wrong(format!("GET {}: nil", client_keys[i]))
                        }
                        Ok(other) => Outcome::Error(format!("GET {}: {other:?}", client_keys[i])),
                        Err(e) => Outcome::Error(format!("GET {}: {e}", client_keys[i])),
                    }
                } else {
                    match c.call(slot, &[b"SET", k, &v]) {
                        Ok(Reply::Simple(s)) if s == "OK" => Outcome::Ok,
                        Ok(other) => Outcome::Error(format!("SET {}: {other:?}", client_keys[i])),
                        Err(e) => Outcome::Error(format!("SET {}: {e}", client_keys[i])),
                    }
                }
            });
            *redirects_out = (c.moved, c.ask);
            r
        },
        || {
            let mut cmd = Command::new("redis-cli");
            cmd.args(["--cluster", "reshard", &format!("127.0.0.1:{a}")]);
            cmd.args(["--cluster-from", &id_a, "--cluster-to", &id_b]);
            cmd.args(["--cluster-slots", &MOVED_SLOTS.to_string(), "--cluster-yes"]);
            cmd.args(["--cluster-pipeline", &opts.batch.to_string()]);
            let log = dir.path().join("reshard.log");
            let t = Instant::now();
            let (ok, output) = run_bounded(&mut cmd, &log, MIGRATION_LIMIT)?;
            let took = t.elapsed();
            if !ok || output.contains("[ERR]") {
                return Err(format!(
                    "redis-cli --cluster reshard failed:\n{}",
                    tail(&output, 15)
                ));
            }
            Ok(took)
        },
    )?;

    // Check: every key on B, with its value, without redirection.
    let mut conn = Conn::connect(b).map_err(|e| format!("connect to {b}: {e}"))?;
    for (c, chunk) in keys.chunks(PIPELINE).enumerate() {
        let cmds: Vec<Vec<&[u8]>> = chunk
            .iter()
            .map(|k| vec![b"GET".as_slice(), k.as_bytes()])
            .collect();
        let replies = conn
            .pipeline(&cmds)
            .map_err(|e| format!("check on {b}: {e}"))?;
        for (j, r) in replies.into_iter().enumerate() {
            let i = c * PIPELINE + j;
            if r != Reply::Bulk(Some(value(i, size))) {
                return Err(format!(
                    "check: GET {} on B (port {b}) after the reshard answered {}",
                    keys[i],
                    brief(&r)
                ));
            }
        }
    }
    match conn.call(&[b"DBSIZE"]) {
        Ok(Reply::Integer(n)) if n as usize == keys.len() => {}
        other => return Err(format!("DBSIZE on B after the reshard: {other:?}")),
    }
    drop(cluster);
    Ok(RunResult {
        side: "Redis 7",
        size,
        keys: keys.len(),
        took,
        bytes: payload_bytes(keys, size),
        detail: "redis-cli wall time".into(),
        failure: None,
        before,
        during,
        redirects: Some(redirects),
    })
}

/// A reply, shortened for an error message.
fn brief(r: &Reply) -> String {
    match r {
        Reply::Bulk(Some(b)) => format!(
            "{} bytes {:?}...",
            b.len(),
            String::from_utf8_lossy(&b[..b.len().min(16)])
        ),
        other => format!("{other:?}"),
    }
}

/// Runs `cmd` with its output in the file `out`, killing it after `limit`; returns
/// whether it exited with success, and its output.
fn run_bounded(cmd: &mut Command, out: &Path, limit: Duration) -> Res<(bool, String)> {
    let file = std::fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let file_err = file
        .try_clone()
        .map_err(|e| format!("clone {}: {e}", out.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} still running after {limit:?}, killed",
                    cmd.get_program()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let output =
        std::fs::read_to_string(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    Ok((status.success(), output))
}

// ---------------------------------------------------------------------------------------
// larder.

/// Polls `f` every 25 ms until it holds; an error after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Res<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// A, B (the two masters, halves of the slots) and C (a master without slots, the
/// client's node), with the CA that issued their certificates; returns once every node
/// is OK with every slot assigned and A and B writable.
async fn mesh(seed: u64, node_timeout: Duration) -> Res<(Vec<Node>, ClusterCa)> {
    let ca = ClusterCa::generate("reshard bench").map_err(|e| format!("cluster CA: {e}"))?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let id = NodeId::random(&mut Rng::new(seed + i));
        let identity = ca.issue(id).map_err(|e| format!("certificate: {e}"))?;
        let config = ClusterConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            identity,
            ca.cert_der(),
            StateStore::Memory(MemoryStore::new()),
        )
        .node_timeout(node_timeout);
        let node = Cache::builder()
            .cluster(config)
            .start()
            .await
            .map_err(|e| format!("start node {i}: {e}"))?;
        nodes.push(node);
    }
    for n in &nodes[1..] {
        n.node()
            .meet(nodes[0].local_addr())
            .await
            .map_err(|e| format!("meet: {e}"))?;
    }
    let all: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    eventually(
        "every node to know every node",
        Duration::from_secs(15),
        || async {
            nodes
                .iter()
                .all(|n| all.iter().all(|id| n.routing().node(*id).is_some()))
        },
    )
    .await?;
    let half = SLOTS as u16 / 2;
    nodes[0]
        .node()
        .add_slots(SlotSet::from_range(0..half))
        .await
        .map_err(|e| format!("add_slots: {e}"))?;
    nodes[1]
        .node()
        .add_slots(SlotSet::from_range(half..SLOTS as u16))
        .await
        .map_err(|e| format!("add_slots: {e}"))?;
    let probes = ["{probe-a}".to_string(), "{probe-b}".to_string()];
    eventually("the mesh to settle", Duration::from_secs(20), || async {
        nodes.iter().all(|n| {
            let rt = n.routing();
            rt.cluster_ok
                && rt.slots.assigned() == SLOTS
                && rt.slots.owner(0) == Some(all[0])
                && rt.slots.owner(SLOTS as u16 - 1) == Some(all[1])
        }) && probes.iter().all(|p| {
            nodes[..2]
                .iter()
                .filter(|n| n.routing().slots.owner(p.slot()) == Some(n.id()))
                .all(|n| n.local().insert(p.clone(), b"x".to_vec()).is_ok())
        })
    })
    .await?;
    // The probe keys are no part of the data.
    for n in &nodes[..2] {
        for p in &probes {
            let _ = n.local().remove(p);
        }
    }
    Ok((nodes, ca))
}

/// One larder run on a fresh mesh.
fn larder_run(
    rt: &Runtime,
    opts: &Opts,
    keys: &Arc<Vec<String>>,
    size: usize,
    seed: u64,
) -> Res<RunResult> {
    let (nodes, ca) = rt.block_on(mesh(seed, opts.node_timeout))?;
    let (a, b, c) = (nodes[0].clone(), nodes[1].clone(), nodes[2].clone());
    if keys
        .iter()
        .any(|k| a.routing().slots.owner(k.slot()) != Some(a.id()))
    {
        return Err("a key of the data set is not A's".into());
    }

    // Load through A.
    let t = Instant::now();
    {
        let blocking = a.blocking();
        for (i, k) in keys.iter().enumerate() {
            blocking
                .insert(k.clone(), value(i, size))
                .map_err(|e| format!("load {k} into A: {e}"))?;
        }
    }
    if a.local_len() != keys.len() {
        return Err(format!(
            "A holds {} keys after loading {}",
            a.local_len(),
            keys.len()
        ));
    }
    eventually_blocking("C to hold a connection to A", TEN_S, || {
        c.blocking().get(&keys[0]).is_ok()
    })?;
    eprintln!(
        "larder V={size}: {} keys loaded through A in {:.2} s",
        keys.len(),
        t.elapsed().as_secs_f64()
    );

    let admin = if opts.in_process {
        None
    } else {
        let tool = NodeId::random(&mut Rng::new(seed + 9));
        let identity = ca
            .issue_as(tool, &[larder::cluster::larder_cluster::net::Role::Admin])
            .map_err(|e| format!("certificate: {e}"))?;
        let _guard = rt.enter();
        Some(
            Admin::new(&identity, &ca.cert_der(), Duration::from_secs(10))
                .map_err(|e| format!("admin client: {e}"))?,
        )
    };
    let client_keys = keys.clone();
    let client_node = c.clone();
    let (id_a, id_b) = (a.id(), b.id());
    // C's view of the cluster when an operation fails, for the record.
    let view = move |c: &Node| {
        let rt = c.routing();
        let owned = |id| {
            (0..SLOTS as u16)
                .filter(|&s| rt.slots.owner(s) == Some(id))
                .count()
        };
        let role = |id| match rt.node(id) {
            Some(n) if n.master.is_some() => "replica",
            Some(_) => "master",
            None => "unknown",
        };
        format!(
            " [C's view: cluster {}, {} slots assigned, A {} with {}, B {} with {}]",
            if rt.cluster_ok { "ok" } else { "FAIL" },
            rt.slots.assigned(),
            role(id_a),
            owned(id_a),
            role(id_b),
            owned(id_b)
        )
    };
    let (migrated, before, during) = with_client(
        opts.warmup,
        move |phase| {
            let n = client_keys.len();
            let c = client_node.blocking();
            client_loop(phase, n, 7, |get, i| {
                let k = &client_keys[i];
                let v = value(i, size);
                if get {
                    match c.get(k) {
                        Ok(Some(got)) if got == v => Outcome::Ok,
                        Ok(Some(got)) => {
                            Outcome::Wrong(format!("get {k}: {} other bytes", got.len()))
                        }
                        Ok(None) => Outcome::Wrong(format!("get {k}: none")),
                        Err(e) => Outcome::Error(format!("get {k}: {e}{}", view(&client_node))),
                    }
                } else {
                    match c.insert(k.clone(), v) {
                        Ok(()) => Outcome::Ok,
                        Err(e) => Outcome::Error(format!("insert {k}: {e}{}", view(&client_node))),
                    }
                }
            })
        },
        || {
            let repl = |n: &Node, name: &str| {
                n.node()
                    .replication()
                    .cloned()
                    .ok_or(format!("node {name} runs no replication"))
            };
            let (repl_a, repl_b) = (repl(&a, "A")?, repl(&b, "B")?);
            let done = AtomicBool::new(false);
            std::thread::scope(|s| {
                let watcher = s.spawn(|| watch_gate(&a, &b, &repl_a, &repl_b, &done));
                let t = Instant::now();
                let r = rt.block_on(migrate(&a, b.id(), admin.as_ref(), opts.batch));
                let took = t.elapsed();
                done.store(true, Relaxed);
                let lapses = watcher.join().map_err(|_| "the gate watcher panicked")?;
                Ok((took, r, lapses))
            })
        },
    )?;
    let (took, result, lapses) = migrated;
    let lapse_note = gate_note(&lapses);
    let (detail, failure) = match result {
        Ok((k, bytes, slots)) => (
            format!("migrate_slots reported {k} keys, {bytes} bytes, {slots} slots{lapse_note}"),
            None,
        ),
        Err(e) => {
            // Where the data stands after the failed move: no timing, just the record.
            let owned = (0..MOVED_SLOTS)
                .filter(|&s| b.routing().slots.owner(s) == Some(b.id()))
                .count();
            let cb = c.blocking();
            let readable = keys
                .iter()
                .enumerate()
                .filter(|(i, k)| matches!(cb.get(k.as_str()), Ok(Some(v)) if v == value(*i, size)))
                .count();
            let state = format!(
                "after the failure: B owns {owned} of the {MOVED_SLOTS} slots, A holds {} keys, \
                 B {}, {readable} of {} readable with their value through C{lapse_note}",
                a.local_len(),
                b.local_len(),
                keys.len()
            );
            // Resume: the slots A still serves, moved again (not timed).
            let left: Vec<u16> = (0..MOVED_SLOTS)
                .filter(|&s| a.routing().slots.owner(s) == Some(a.id()))
                .collect();
            let t = Instant::now();
            let resumed = rt.block_on(migrate_slots_of(
                &a,
                b.id(),
                admin.as_ref(),
                to_ranges(left.iter().copied()),
                opts.batch,
            ));
            let resumed = match resumed {
                Ok((k, _, n)) => format!(
                    "; resumed by moving the {} slots A still served: done in {:.2} s, {k} keys \
                     and {n} slots reported, then the check below passed",
                    left.len(),
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => format!(
                    "; resuming with the {} slots A still served failed too: {e}",
                    left.len()
                ),
            };
            (format!("{state}{resumed}"), Some(e))
        }
    };
    if let Some(admin) = &admin {
        rt.block_on(admin.close());
    }

    // Check: every key on B with its value, B owning every moved slot, and A, emptied,
    // a replica of B (Redis 7's behaviour) whose copy of B's data is complete (after a
    // failed move, once it was resumed).
    if failure.is_none() || (0..MOVED_SLOTS).all(|s| b.routing().slots.owner(s) == Some(b.id())) {
        let routing = b.routing();
        if let Some(s) = (0..MOVED_SLOTS).find(|&s| routing.slots.owner(s) != Some(b.id())) {
            return Err(format!(
                "check: B's routing table gives slot {s} to {:?} after the migration",
                routing.slots.owner(s)
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            match b.local().get(k) {
                Some(v) if v == value(i, size) => {}
                Some(v) => return Err(format!("check: {k} on B has {} other bytes", v.len())),
                None => return Err(format!("check: {k} is not on B after the migration")),
            }
        }
        if b.local_len() != keys.len() {
            return Err(format!(
                "check: B holds {} keys after the migration; expected {}",
                b.local_len(),
                keys.len()
            ));
        }
        let a_master = || {
            let ra = a.routing();
            (!ra.is_master)
                .then(|| ra.node(a.id()).and_then(|n| n.master))
                .flatten()
        };
        eventually_blocking("A to become a replica of B", TEN_S, || {
            a_master() == Some(b.id())
        })
        .map_err(|e| {
            format!(
                "check: {e}: A is {} after handing over its last slot",
                match a_master() {
                    Some(m) => format!("a replica of {m:?}"),
                    None => "a master".into(),
                }
            )
        })?;
        eventually_blocking("A, B's replica, to hold B's keys", SYNC_LIMIT, || {
            a.local_len() == keys.len()
        })
        .map_err(|e| format!("check: {e}: A holds {} keys", a.local_len()))?;
        for (i, k) in keys.iter().enumerate() {
            match a.local().get(k) {
                Some(v) if v == value(i, size) => {}
                Some(v) => return Err(format!("check: {k} on A has {} other bytes", v.len())),
                None => return Err(format!("check: {k} is not on A, B's replica")),
            }
        }
    }
    rt.block_on(async {
        for n in nodes {
            n.shutdown().await;
        }
    });
    Ok(RunResult {
        side: if opts.in_process {
            "larder (in-process admin)"
        } else {
            "larder"
        },
        size,
        keys: keys.len(),
        took,
        bytes: payload_bytes(keys, size),
        detail,
        failure,
        before,
        during,
        redirects: None,
    })
}

/// Keys, bytes and slots moved by `migrate_slots` of A's slots to `to` (over QUIC with
/// `admin`, else in-process).
async fn migrate(a: &Node, to: NodeId, admin: Option<&Admin>, batch: u32) -> Res<(u64, u64, u32)> {
    migrate_slots_of(a, to, admin, vec![(0, MOVED_SLOTS - 1)], batch).await
}

/// [`migrate`] of the given slots.
async fn migrate_slots_of(
    a: &Node,
    to: NodeId,
    admin: Option<&Admin>,
    slots: Vec<(u16, u16)>,
    batch: u32,
) -> Res<(u64, u64, u32)> {
    match admin {
        Some(admin) => admin
            .migrate_slots(a.local_addr(), to, slots, batch)
            .await
            .map(|m| (m.keys, m.bytes, m.slots))
            .map_err(|e| format!("migrate_slots: {e}")),
        None => {
            let req = AdminRequest::MigrateSlots {
                to: to.0,
                batch,
                slots,
            };
            match a.admin(None, req).await {
                AdminResponse::Migrated { keys, bytes, slots } => Ok((keys, bytes, slots)),
                other => Err(format!("MigrateSlots answered {other:?}")),
            }
        }
    }
}

/// A time a write gate was closed during the move.
struct Lapse {
    /// From the start of the move.
    at: Duration,
    len: Duration,
    /// The gate's refusal when first seen closed.
    why: String,
}

/// The closed stretches of one node's write gate.
#[derive(Default)]
struct GateLog {
    lapses: Vec<Lapse>,
    open: bool,
}

impl GateLog {
    /// Files one sample of the gate at `now`. Refusals in `ignore` (the gate of a node
    /// that serves no slot, or is a replica: the end of the move for A, the start for
    /// B before it takes anything if it did not serve slots) count as open.
    fn sample(&mut self, now: Duration, gate: Result<(), String>, ignore: &[&str]) {
        match gate {
            Ok(()) => self.open = true,
            Err(why) if ignore.iter().any(|i| why.contains(i)) => self.open = true,
            Err(why) => {
                if self.open || self.lapses.is_empty() {
                    self.lapses.push(Lapse {
                        at: now,
                        len: Duration::ZERO,
                        why,
                    });
                } else if let Some(l) = self.lapses.last_mut() {
                    l.len = now - l.at;
                }
                self.open = false;
            }
        }
    }

    /// "A's write gate stayed open" or when and why it closed.
    fn note(&self, name: &str) -> String {
        let lapses = &self.lapses;
        if lapses.is_empty() {
            return format!("{name}'s write gate stayed open");
        }
        let total: Duration = lapses.iter().map(|l| l.len).sum();
        let longest = lapses.iter().map(|l| l.len).max().unwrap_or_default();
        let mut kinds: Vec<String> = Vec::new();
        for l in lapses {
            let kind = l.why.split(' ').next().unwrap_or("").to_string();
            if !kinds.iter().any(|k| k.starts_with(&kind)) {
                kinds.push(format!(
                    "{kind} (first at {:.2} s: {})",
                    l.at.as_secs_f64(),
                    l.why
                ));
            }
        }
        format!(
            "{name}'s write gate closed {} time(s) during the move, {:.0} ms in all, longest \
             {:.0} ms: {}",
            lapses.len(),
            total.as_secs_f64() * 1e3,
            longest.as_secs_f64() * 1e3,
            kinds.join("; ")
        )
    }
}

/// What A's and B's write gates and the two routing tables did during the move.
struct Watch {
    a: GateLog,
    b: GateLog,
    /// Samples of both routing tables (every 5th gate sample).
    table_samples: u64,
    /// Of those, how many found A's table still giving A a slot that B's table already
    /// gives to B: B does not acknowledge A's slot claims then (a ping from A claims
    /// more than B grants it), so A's write lease is not renewed.
    claims_ahead: u64,
}

/// Samples A's and B's write gates (what every write on the node checks) every
/// [`GATE_POLL`] until `done`, leaving out the end of the move for A (A serving no
/// slot, or A a replica of B once it handed over its last slot), and every fifth time
/// compares A's and B's routing tables over the moved slots.
fn watch_gate(
    a: &Node,
    b: &Node,
    repl_a: &Replication,
    repl_b: &Replication,
    done: &AtomicBool,
) -> Watch {
    let start = Instant::now();
    let mut w = Watch {
        a: GateLog {
            open: true,
            ..GateLog::default()
        },
        b: GateLog {
            open: true,
            ..GateLog::default()
        },
        table_samples: 0,
        claims_ahead: 0,
    };
    let (a_id, b_id) = (a.id(), b.id());
    let mut round = 0u64;
    while !done.load(Relaxed) {
        round += 1;
        if round.is_multiple_of(5) {
            let (ta, tb) = (a.routing(), b.routing());
            w.table_samples += 1;
            if (0..MOVED_SLOTS)
                .any(|s| ta.slots.owner(s) == Some(a_id) && tb.slots.owner(s) == Some(b_id))
            {
                w.claims_ahead += 1;
            }
        }
        let now = start.elapsed();
        let gate = |r: &Replication| r.check_write().map_err(|e| e.to_string());
        w.a.sample(now, gate(repl_a), &["serves no slots", "replica"]);
        w.b.sample(now, gate(repl_b), &[]);
        std::thread::sleep(GATE_POLL);
    }
    w
}

/// What [`watch_gate`] saw, for a run's notes.
fn gate_note(w: &Watch) -> String {
    format!(
        "; {}; {} (sampled every {} ms); A's table claimed a slot B's table already gave B \
         in {} of {} samples",
        w.a.note("A"),
        w.b.note("B"),
        GATE_POLL.as_millis(),
        w.claims_ahead,
        w.table_samples
    )
}

/// Polls `f` every 25 ms for up to `limit`, outside async code.
fn eventually_blocking(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Res<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report.

fn report(opts: &Opts, runs: &[RunResult]) {
    let mut sides: Vec<&str> = runs.iter().map(|r| r.side).collect();
    sides.sort_unstable();
    sides.dedup();
    // Redis first.
    sides.sort_by_key(|s| !s.starts_with("Redis"));
    let all_of = |side: &str, size: usize| -> Vec<&RunResult> {
        runs.iter()
            .filter(|r| r.side == side && r.size == size)
            .collect()
    };
    // The median successful run by migration time, else the first run.
    let median_of = |side: &str, size: usize| -> Option<&RunResult> {
        let mut ok: Vec<&RunResult> = all_of(side, size)
            .into_iter()
            .filter(|r| r.failure.is_none())
            .collect();
        ok.sort_by_key(|r| r.took);
        ok.get(ok.len() / 2)
            .copied()
            .or_else(|| all_of(side, size).first().copied())
    };
    println!("## Migration throughput\n");
    println!(
        "Time from the request to its answer (Redis: `redis-cli --cluster reshard`'s wall \
         time, its own cluster check included; larder: `migrate_slots`). keys/s and MB/s \
         over {} keys of 14 + V bytes; failed runs are left out of the medians.\n",
        opts.keys
    );
    println!("| side | V bytes | time s | keys/s | MB/s | runs (s) | larder / Redis (keys/s) |");
    println!("|---|---:|---:|---:|---:|---|---:|");
    for &size in &opts.sizes {
        let redis = median_of("Redis 7", size).filter(|r| r.failure.is_none());
        for side in &sides {
            let Some(m) = median_of(side, size) else {
                continue;
            };
            let all: Vec<String> = all_of(side, size)
                .iter()
                .map(|r| match r.failure {
                    None => format!("{:.2}", r.took.as_secs_f64()),
                    Some(_) => format!("FAILED after {:.2}", r.took.as_secs_f64()),
                })
                .collect();
            if m.failure.is_some() {
                println!("| {side} | {size} | - | - | - | {} | - |", all.join(", "));
                continue;
            }
            let ratio = match redis {
                Some(r) if !side.starts_with("Redis") => {
                    format!("**{:.2}x**", m.keys_per_s() / r.keys_per_s())
                }
                _ => "-".into(),
            };
            println!(
                "| {side} | {size} | {:.2} | {:.0} | {:.1} | {} | {ratio} |",
                m.took.as_secs_f64(),
                m.keys_per_s(),
                m.mb_per_s(),
                all.join(", ")
            );
        }
    }
    println!();
    for r in runs {
        match &r.failure {
            None => println!("- {} V={}: {}", r.side, r.size, r.detail),
            Some(e) => println!("- {} V={}: **failed**: `{e}`; {}", r.side, r.size, r.detail),
        }
    }
    println!();
    println!("## The client during the migration\n");
    println!(
        "One thread, one operation at a time (GET/SET 50/50 of random keys of the data set); \
         latency per operation, redirects included. \"before\": the {:.1} s warm-up without \
         a migration; \"during\": from the migration's start to its end. Errors: failed \
         operations (not redirects); missing/wrong: a GET that found nothing or other \
         bytes. The median run by migration time.\n",
        opts.warmup
    );
    println!(
        "| side | V bytes | phase | ops | ops/s | p50 us | p99 us | max ms | errors | \
         missing/wrong | redirects (MOVED, ASK) |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for &size in &opts.sizes {
        for side in &sides {
            let Some(m) = median_of(side, size) else {
                continue;
            };
            for (name, ph) in [("before", &m.before), ("during", &m.during)] {
                let (p50, p99, max) = ph.stats();
                let redirects = match (name, m.redirects) {
                    ("during", Some((mv, ask))) => format!("{mv}, {ask}"),
                    ("during", None) => "not visible".into(),
                    _ => "-".into(),
                };
                let failed = if m.failure.is_some() {
                    " (failed run)"
                } else {
                    ""
                };
                println!(
                    "| {side} | {size} | {name}{failed} | {} | {:.0} | {p50:.0} | {p99:.0} | {:.1} | {} | {} | {redirects} |",
                    ph.lat.len(),
                    ph.lat.len() as f64 / ph.secs.max(1e-9),
                    max / 1e3,
                    ph.errors,
                    ph.wrong
                );
            }
        }
    }
    println!();
    let failures: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            [("before", &r.before), ("during", &r.during)]
                .into_iter()
                .filter(|(_, p)| p.errors + p.wrong > 0)
                .map(move |(name, p)| {
                    format!(
                        "- {} V={} {name}: {} errors ({}; first: `{}`), {} missing/wrong (first: `{}`)",
                        r.side,
                        r.size,
                        p.errors,
                        p.kinds_note(),
                        p.first_error.as_deref().unwrap_or("-"),
                        p.wrong,
                        p.first_wrong.as_deref().unwrap_or("-")
                    )
                })
        })
        .collect();
    if failures.is_empty() {
        println!("No client operation failed, in any run.\n");
    } else {
        println!("Client failures, every run:\n");
        for f in failures {
            println!("{f}");
        }
        println!();
    }
    println!("## The issue's goal: faster than Redis, no client-visible errors\n");
    for side in sides.iter().filter(|s| !s.starts_with("Redis")) {
        for &size in &opts.sizes {
            let mine = all_of(side, size);
            let (Some(m), Some(r)) = (median_of(side, size), median_of("Redis 7", size)) else {
                continue;
            };
            let failed = mine.iter().filter(|r| r.failure.is_some()).count();
            let errors: u64 = mine.iter().map(|r| r.during.errors + r.during.wrong).sum();
            let faster = m.failure.is_none() && r.failure.is_none() && m.took < r.took;
            println!(
                "- {side}, V={size}: faster than Redis: {} ({}); runs failed: {failed} of {}; \
                 client errors during the move, all runs: {errors} -> **{}**",
                if faster { "yes" } else { "no" },
                if m.failure.is_none() && r.failure.is_none() {
                    format!("{:.2}x Redis's keys/s", m.keys_per_s() / r.keys_per_s())
                } else {
                    "no successful run to compare".into()
                },
                mine.len(),
                if faster && failed == 0 && errors == 0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// Small helpers.

/// Nearest-rank percentile of sorted `xs`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_the_key_and_have_their_size() {
        assert_eq!(value(3, 100).len(), 100);
        assert_eq!(value(123_456, 1024).len(), 1024);
        assert_eq!(value(5, 3).len(), 3);
        assert_ne!(value(1, 100), value(2, 100));
        assert_eq!(value(7, 50), value(7, 50));
    }

    #[test]
    fn keys_are_in_the_moved_slots() {
        let keys = keyset(1000);
        assert_eq!(keys.len(), 1000);
        assert!(keys
            .iter()
            .all(|k| key_hash_slot(k.as_bytes()) < MOVED_SLOTS));
        assert!(keys.iter().all(|k| k.len() == 14));
    }

    #[test]
    fn parses_redirects() {
        assert_eq!(redirect_port("MOVED 3999 127.0.0.1:6381"), Some(6381));
        assert_eq!(redirect_port("ASK 3999 127.0.0.1:21601"), Some(21601));
        assert_eq!(redirect_port("ERR nope"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&xs, 0.5), 50);
        assert_eq!(percentile(&xs, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
