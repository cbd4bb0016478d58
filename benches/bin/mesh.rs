//! larder's cluster mesh (`larder::cluster`) against a real Redis 7 cluster on loopback,
//! both measured in the same run: failover time and routed throughput. Prints Markdown
//! tables with the larder/Redis ratios.
//!
//! ```text
//! cargo run --release -p larder-benches --bin mesh -- failover [--reps N] [--quick] [--no-redis]
//! cargo run --release -p larder-benches --bin mesh -- throughput [--secs S] [--samples N] [--keys N] [--inflight N,N...] [--quick] [--no-redis]
//! cargo run --release -p larder-benches --bin mesh -- all [--quick] [--no-redis]
//! ```
//!
//! - `failover`: 3 masters + 3 replicas on each side, node timeout 1000 ms. larder's
//!   nodes run in this process over QUIC on 127.0.0.1; master 0 is silenced with the
//!   fault switch (every link to and from it cut, the in-process stand-in for SIGKILL),
//!   or, in a second variant, stopped with `shutdown()`. From the cut, node 1 (another
//!   master, which forwards the write) sends `insert` of a key of master 0's slots every
//!   10 ms until one succeeds. Redis: `RedisCluster::measure_failover` (SIGKILL of a
//!   master, `SET` sent to its replicas every 10 ms). Fresh mesh / cluster per repetition
//!   (default 5, `--reps`).
//! - `throughput`: (a) one node serving all 16384 slots against a plain `Cache`, same
//!   keys, 2 threads; (b) a 3-master mesh, node 0 sending `get`/`insert` for keys of
//!   nodes 1 and 2 with many requests in flight, against `redis-benchmark --cluster`
//!   (`-c 50`, `-P 1` and `-P 16`) on a 3-master Redis cluster.
//! - `--quick`: a smoke run of everything (one repetition, short runs), under 30 s.
//!
//! Redis listens on 127.0.0.1 ports 21200..21465 and 31200..31465 only; every Redis node
//! is SIGKILLed when the program leaves, on error too. Needs redis-server, redis-cli and
//! redis-benchmark (installed with apt-get when missing) unless `--no-redis`.

/// With `--features jemalloc`, every cache in the run allocates through jemalloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::{Rng, SLOTS};
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, Faults, KeySlot, NodeId, SlotSet, StateStore,
    WriteOptions,
};
use larder::Cache;
use larder_benches::redis_cluster::{ensure_redis, RedisCluster};
use larder_benches::run_env::{git_head, loadavg, redis_version, tempdir};
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

type Res<T> = Result<T, String>;
type Node = ClusterCache<String, String>;

/// `cluster-node-timeout` of both sides in the failover comparison.
const NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Interval between two write attempts after the cut (as `measure_failover`'s).
const POLL: Duration = Duration::from_millis(10);
/// A failover slower than this is an error.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);
/// First client port of the Redis clusters of the failover runs (rotated by 20 per run).
/// Client and bus ports (+10000) stay below Linux's ephemeral range (32768..), where an
/// outgoing connection of an earlier cluster lingering in TIME-WAIT could hold one.
const REDIS_FAILOVER_PORT: u16 = 21200;
/// First client port of the Redis cluster of the throughput runs.
const REDIS_THROUGHPUT_PORT: u16 = 21260;
/// The project's goal for failover: larder at most this times Redis's time.
const FAILOVER_GOAL: f64 = 0.6;
/// Threads (or tasks) of the local-slot throughput runs: the machine's cores.
const THREADS: usize = 2;
/// Worker threads of the tokio runtime that hosts the nodes.
const WORKERS: usize = 2;

struct Opts {
    quick: bool,
    redis: bool,
    /// Failover repetitions.
    reps: usize,
    /// Throughput samples per subject (median reported).
    samples: usize,
    /// Seconds per throughput sample.
    secs: f64,
    /// Keys of the throughput runs.
    keys: usize,
    /// Requests in flight of the remote-slot runs.
    inflight: Vec<usize>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let num = |name: &str, default: f64| -> f64 {
        value(name).map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}"))
        })
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let quick = has("--quick");
    let inflight = value("--inflight").map_or_else(
        || if quick { vec![64] } else { vec![50, 64, 800] },
        |v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("--inflight takes N[,N...]"))
                .collect()
        },
    );
    let opts = Opts {
        quick,
        redis: !has("--no-redis"),
        reps: (num("--reps", if quick { 1.0 } else { 5.0 }) as usize).max(1),
        samples: (num("--samples", if quick { 1.0 } else { 3.0 }) as usize).max(1),
        secs: num("--secs", if quick { 0.2 } else { 3.0 }),
        keys: num("--keys", if quick { 20_000.0 } else { 100_000.0 }) as usize,
        inflight,
    };
    let what = args.first().map(String::as_str).unwrap_or("");
    if !matches!(what, "failover" | "throughput" | "all") {
        eprintln!(
            "usage: mesh failover|throughput|all [--quick] [--no-redis] [--reps N] \
             [--samples N] [--secs S] [--keys N] [--inflight N,N...]"
        );
        std::process::exit(2);
    }
    println!(
        "# mesh: larder cluster vs Redis cluster\n\ncommand: `cargo run --release -p larder-benches --bin mesh -- {}`\n",
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
    let result = (|| -> Res<()> {
        if opts.redis {
            ensure_redis()?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        if what == "failover" || what == "all" {
            failover(&rt, &opts)?;
        }
        if what == "throughput" || what == "all" {
            local_slots(&rt, &opts)?;
            remote_slots(&rt, &opts)?;
        }
        Ok(())
    })();
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// The mesh, formed as tests/cluster.rs forms it.

/// Slots of master `i` of `masters`.
fn range(i: usize, masters: usize) -> SlotSet {
    let lo = (SLOTS * i / masters) as u16;
    let hi = (SLOTS * (i + 1) / masters) as u16;
    SlotSet::from_range(lo..hi)
}

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

/// `masters` masters splitting the slots and `replicas` replicas (replica i follows
/// master i % masters), node ids from `seed`, all sharing `faults`; returns once every
/// node is OK with every slot assigned, the masters writable and the replicas streaming.
async fn mesh(masters: usize, replicas: usize, seed: u64, faults: &Faults) -> Res<Vec<Node>> {
    let ca = ClusterCa::generate("mesh bench").map_err(|e| format!("cluster CA: {e}"))?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..masters + replicas {
        let id = NodeId::random(&mut Rng::new(seed + i as u64));
        let identity = ca.issue(id).map_err(|e| format!("certificate: {e}"))?;
        let config = ClusterConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            identity,
            ca.cert_der(),
            StateStore::Memory(MemoryStore::new()),
        )
        .node_timeout(NODE_TIMEOUT)
        .faults(faults.clone());
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
    for (i, m) in nodes[..masters].iter().enumerate() {
        m.node()
            .add_slots(range(i, masters))
            .await
            .map_err(|e| format!("add_slots: {e}"))?;
    }
    for i in 0..replicas {
        nodes[masters + i]
            .node()
            .replicate(all[i % masters])
            .await
            .map_err(|e| format!("replicate: {e}"))?;
    }
    let probe = "{probe}".to_string();
    eventually("the mesh to settle", Duration::from_secs(20), || async {
        nodes.iter().enumerate().all(|(i, n)| {
            let rt = n.routing();
            let info = n.info();
            let streaming = info
                .replication
                .as_ref()
                .is_some_and(|r| r.master_link_status == Some("up"));
            rt.cluster_ok
                && rt.slots.assigned() == SLOTS
                && if i < masters {
                    rt.slots.owner(probe.slot()) != Some(n.id())
                        || n.local().insert(probe.clone(), "x".into()).is_ok()
                } else {
                    streaming
                }
        })
    })
    .await?;
    // The probe key is no part of any workload.
    for n in &nodes[..masters] {
        if n.routing().slots.owner(probe.slot()) == Some(n.id()) {
            let _ = n.local().remove(&probe);
        }
    }
    Ok(nodes)
}

async fn shutdown_all(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------
// Failover.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every link to and from the master cut by the fault switch: silent, as a killed
    /// process is.
    Silence,
    /// `shutdown()`: the node's driver ends and its connections close.
    Shutdown,
}

struct FailoverSample {
    took: Duration,
    attempts: u32,
    longest_attempt: Duration,
    last_error: String,
    shutdown_took: Duration,
}

/// One larder failover on a fresh 3+3 mesh.
async fn larder_failover(seed: u64, how: Stop) -> Res<FailoverSample> {
    let faults = Faults::new();
    let nodes = mesh(3, 3, seed, &faults).await?;
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    let slots = range(0, 3);
    let key = (0..100_000)
        .map(|n| format!("failover:{n}"))
        .find(|k| slots.contains(k.slot()))
        .ok_or("no key of master 0's slots")?;
    let owner = nodes[1].routing().slots.owner(key.slot());
    if owner != Some(ids[0]) {
        return Err(format!("{key}: node 1 sees owner {owner:?}, not master 0"));
    }
    // Forwarded through node 1, acknowledged by master 0's replica (node 3).
    nodes[1]
        .insert_with(
            key.clone(),
            "before".into(),
            None,
            WriteOptions::acked_by(1, Duration::from_secs(5)),
        )
        .await
        .map_err(|e| format!("insert {key} through node 1 before the cut: {e}"))?;

    let mut shutdown_took = Duration::ZERO;
    let cut = match how {
        Stop::Silence => {
            let t = Instant::now();
            faults.partition(&ids[..1], &ids[1..]);
            t
        }
        Stop::Shutdown => {
            let t = Instant::now();
            nodes[0].shutdown().await;
            shutdown_took = t.elapsed();
            // As measure_failover starts its clock once the process is reaped.
            Instant::now()
        }
    };
    let mut attempts = 0u32;
    let mut longest_attempt = Duration::ZERO;
    let mut last_error = String::from("-");
    let took = loop {
        attempts += 1;
        let a = Instant::now();
        let r = nodes[1].insert(key.clone(), "after".into()).await;
        longest_attempt = longest_attempt.max(a.elapsed());
        match r {
            Ok(()) => break cut.elapsed(),
            Err(e) => last_error = e.to_string(),
        }
        if cut.elapsed() > FAILOVER_LIMIT {
            return Err(format!(
                "no write of {key} through node 1 succeeded within {FAILOVER_LIMIT:?}; \
                 last error: {last_error}"
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let new_owner = nodes[1].routing().slots.owner(key.slot());
    if new_owner != Some(ids[3]) {
        eprintln!(
            "  note: after the failover node 1 sees {new_owner:?} owning {key}, \
             not node 3 (master 0's replica, {})",
            ids[3]
        );
    }
    faults.heal_all();
    shutdown_all(nodes).await;
    Ok(FailoverSample {
        took,
        attempts,
        longest_attempt,
        last_error,
        shutdown_took,
    })
}

/// `RedisCluster::start` from `base_port`, or from 100 or 200 ports higher when a port is
/// taken.
fn start_redis(
    dir: &std::path::Path,
    base_port: u16,
    masters: usize,
    replicas_per_master: usize,
) -> Res<RedisCluster> {
    let mut last = String::new();
    for shift in [0, 100, 200] {
        let port = base_port + shift;
        let timeout = NODE_TIMEOUT.as_millis() as u64;
        match RedisCluster::start(dir, port, masters, replicas_per_master, timeout) {
            Ok(c) => return Ok(c),
            Err(e) if e.contains("is not free") => {
                eprintln!("Redis cluster on port {port}: {e}; trying other ports");
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One Redis failover on a fresh 3+3 cluster.
fn redis_failover(rep: usize) -> Res<Duration> {
    let dir = tempdir("mesh-redis-failover-")?;
    let port = REDIS_FAILOVER_PORT + (rep % 3) as u16 * 20;
    let mut cluster = start_redis(dir.path(), port, 3, 1)?;
    let master = *cluster
        .master_ports()
        .first()
        .ok_or("the Redis cluster has no master")?;
    cluster.measure_failover(master, FAILOVER_LIMIT)
}

fn failover(rt: &Runtime, opts: &Opts) -> Res<()> {
    println!(
        "## Failover: 3 masters + 3 replicas, node timeout {} ms, {} repetitions\n",
        NODE_TIMEOUT.as_millis(),
        opts.reps
    );
    println!(
        "larder: nodes in this process (one tokio runtime, {WORKERS} workers), QUIC on \
         127.0.0.1. From the cut, node 1 (a master that forwards the write) sends `insert` \
         of a key of master 0's slots every {} ms until one succeeds; time from the cut to \
         that success (with `shutdown()`, from when it returned, as Redis's clock starts \
         once the killed process is reaped). Redis: SIGKILL of a master, `SET` to its \
         replicas every {} ms (RedisCluster::measure_failover). Fresh mesh / cluster for \
         each repetition.\n",
        POLL.as_millis(),
        POLL.as_millis()
    );
    let mut silence = Vec::new();
    let mut stopped = Vec::new();
    let mut redis = Vec::new();
    for rep in 0..opts.reps {
        for how in [Stop::Silence, Stop::Shutdown] {
            let seed = 10_000 + rep as u64 * 100 + if how == Stop::Shutdown { 50 } else { 0 };
            let s = rt.block_on(larder_failover(seed, how))?;
            let name = match how {
                Stop::Silence => "larder, master silenced",
                Stop::Shutdown => "larder, master shutdown()",
            };
            let extra = if how == Stop::Shutdown {
                format!(", shutdown() took {:.1} ms", ms(s.shutdown_took))
            } else {
                String::new()
            };
            eprintln!(
                "rep {rep} {name} (seed {seed}): {:.0} ms, {} attempts, longest attempt \
                 {:.1} ms{extra}; last refusal: {}",
                ms(s.took),
                s.attempts,
                ms(s.longest_attempt),
                s.last_error
            );
            match how {
                Stop::Silence => silence.push(s),
                Stop::Shutdown => stopped.push(s),
            }
        }
        if opts.redis {
            let d = redis_failover(rep)?;
            eprintln!("rep {rep} Redis, master SIGKILLed: {:.0} ms", ms(d));
            redis.push(d);
        }
    }
    let stats = |xs: &[Duration]| -> (f64, f64, f64, f64) {
        let mut v: Vec<f64> = xs.iter().map(|d| ms(*d)).collect();
        v.sort_by(f64::total_cmp);
        (v[0], median(&v), percentile(&v, 0.9), v[v.len() - 1])
    };
    let larder_s: Vec<Duration> = silence.iter().map(|s| s.took).collect();
    let larder_d: Vec<Duration> = stopped.iter().map(|s| s.took).collect();
    let rows = [
        ("larder, master silenced (fault switch)", &larder_s),
        ("larder, master shutdown()", &larder_d),
        ("Redis 7, master SIGKILLed", &redis),
    ];
    println!("| side | runs | min ms | median ms | p90 ms | max ms | all (ms) |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (name, xs) in rows {
        if xs.is_empty() {
            continue;
        }
        let (lo, med, p90, hi) = stats(xs);
        let all: Vec<String> = xs.iter().map(|d| format!("{:.0}", ms(*d))).collect();
        println!(
            "| {name} | {} | {lo:.0} | {med:.0} | {p90:.0} | {hi:.0} | {} |",
            xs.len(),
            all.join(", ")
        );
    }
    println!("\np90 is the nearest rank (with 5 runs, the slowest).\n");
    if !redis.is_empty() {
        let (_, r_med, r_p90, _) = stats(&redis);
        println!("| larder / Redis | median | p90 | goal |");
        println!("|---|---:|---:|---|");
        for (name, xs) in [
            ("master silenced", &larder_s),
            ("master shutdown()", &larder_d),
        ] {
            let (_, med, p90, _) = stats(xs);
            let (rm, rp) = (med / r_med, p90 / r_p90);
            println!(
                "| {name} | {rm:.2}x | {rp:.2}x | <= {FAILOVER_GOAL}x: {} |",
                if rm <= FAILOVER_GOAL {
                    "met (median)"
                } else {
                    "NOT met (median)"
                }
            );
        }
        println!();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Throughput, local slots: a node serving every slot against a plain Cache.

/// `n` keys and values, as the throughput runs use them.
fn keyset(n: usize, filter: impl Fn(&str) -> bool) -> (Arc<Vec<String>>, Arc<Vec<String>>) {
    let keys: Vec<String> = (0..)
        .map(|i: u64| format!("key:{i:010}"))
        .filter(|k| filter(k))
        .take(n)
        .collect();
    let vals: Vec<String> = (0..n).map(|i| format!("value-{i:010}")).collect();
    (Arc::new(keys), Arc::new(vals))
}

/// A stride through the key set that visits every index (odd, not a multiple of 5, so
/// coprime with the power-of-ten key counts; checked against `n` anyway).
fn stride(n: usize) -> usize {
    let mut s = 38_011 % n.max(2);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s.max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Runs `body(thread, stop)` on `threads` plain threads for `secs`; returns operations per
/// second (the sum of what the bodies return over the wall time).
fn on_threads(threads: usize, secs: f64, body: impl Fn(usize, &AtomicBool) -> u64 + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (body, stop, barrier) = (&body, &stop, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    body(t, stop)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Relaxed);
        let ops: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        ops as f64 / start.elapsed().as_secs_f64()
    })
}

/// The same as [`on_threads`] with `tasks` tokio tasks on the runtime's workers. Each
/// task yields every 1024 operations so the runtime's own work (the node's driver) runs.
fn on_tasks<F, Fut>(rt: &Runtime, tasks: usize, secs: f64, body: F) -> f64
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| rt.spawn(body(t, stop.clone())))
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Relaxed);
    let ops: u64 = rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.expect("task");
        }
        sum
    });
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Polls `f` on this thread until it completes, parking between polls: the cheapest
/// way to drive a future that (on a local slot) is ready at its first poll.
fn poll_inline<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    thread_local! {
        static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    }
    let mut f = std::pin::pin!(f);
    WAKER.with(|w| {
        let mut cx = Context::from_waker(w);
        loop {
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return v,
                Poll::Pending => std::thread::park(),
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Get,
    Insert,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Insert => "insert",
        }
    }
}

/// How the local-slot subjects are driven.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// Plain `Cache` from plain threads.
    Plain,
    /// Plain `Cache` from tokio tasks.
    PlainTasks,
    /// The node's own `Cache` (`ClusterCache::local()`, no routing) from plain threads.
    Local,
    /// `ClusterCache`'s async methods polled in place on plain threads.
    Inline,
    /// `ClusterCache::blocking()` from plain threads (`Handle::block_on` per call).
    Blocking,
    /// `ClusterCache`'s async methods awaited in tokio tasks.
    Tasks,
}

impl Driver {
    const ALL: [Driver; 6] = [
        Driver::Plain,
        Driver::PlainTasks,
        Driver::Local,
        Driver::Inline,
        Driver::Blocking,
        Driver::Tasks,
    ];

    fn name(self) -> &'static str {
        match self {
            Driver::Plain => "plain `Cache`, 2 threads",
            Driver::PlainTasks => "plain `Cache`, 2 tokio tasks",
            Driver::Local => "the node's `Cache` (`local()`, no routing), 2 threads",
            Driver::Inline => "`ClusterCache`, futures polled in place on 2 threads",
            Driver::Blocking => "`ClusterCache::blocking()`, 2 threads",
            Driver::Tasks => "`ClusterCache` async, 2 tokio tasks",
        }
    }
}

/// Operations per chunk between two looks at the stop flag.
const CHUNK: usize = 64;

/// The two caches of the local-slot runs and their keys.
struct Local {
    plain: Cache<String, String>,
    node: Node,
    keys: Arc<Vec<String>>,
    vals: Arc<Vec<String>>,
}

/// Operations refused during a sample (counted, not thrown: one refused write must not
/// cost the whole run its figures), with the first refusal's text.
#[derive(Default)]
struct Refused {
    count: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl Refused {
    fn note(&self, e: &dyn std::fmt::Display) {
        if self.count.fetch_add(1, Relaxed) == 0 {
            *self.first.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
    }
}

/// Successful operations per second of one subject; refusals are counted in `refused`.
fn local_sample(
    rt: &Runtime,
    driver: Driver,
    op: Op,
    l: &Local,
    secs: f64,
    refused: &Arc<Refused>,
) -> f64 {
    let Local {
        plain,
        node,
        keys,
        vals,
    } = l;
    let n = keys.len();
    let step = stride(n);
    let begin = move |t: usize| t * n / THREADS;
    match driver {
        Driver::Plain | Driver::Local => on_threads(THREADS, secs, |t, stop| {
            let plain = if driver == Driver::Local {
                node.local()
            } else {
                plain
            };
            let mut i = begin(t);
            let mut done = 0;
            while !stop.load(Relaxed) {
                for _ in 0..CHUNK {
                    match op {
                        Op::Get => {
                            black_box(plain.get(&keys[i]));
                            done += 1;
                        }
                        Op::Insert => match plain.insert(keys[i].clone(), vals[i].clone()) {
                            Ok(()) => done += 1,
                            Err(e) => refused.note(&e),
                        },
                    }
                    i = (i + step) % n;
                }
            }
            done
        }),
        Driver::Inline | Driver::Blocking => on_threads(THREADS, secs, |t, stop| {
            let _guard = rt.enter();
            let mut i = begin(t);
            let mut done = 0;
            let b = node.blocking();
            while !stop.load(Relaxed) {
                for _ in 0..CHUNK {
                    let r = match (op, driver) {
                        (Op::Get, Driver::Inline) => poll_inline(node.get(&keys[i])).map(|v| {
                            black_box(v);
                        }),
                        (Op::Insert, Driver::Inline) => {
                            poll_inline(node.insert(keys[i].clone(), vals[i].clone()))
                        }
                        (Op::Get, _) => b.get(&keys[i]).map(|v| {
                            black_box(v);
                        }),
                        (Op::Insert, _) => b.insert(keys[i].clone(), vals[i].clone()),
                    };
                    match r {
                        Ok(()) => done += 1,
                        Err(e) => refused.note(&e),
                    }
                    i = (i + step) % n;
                }
            }
            done
        }),
        Driver::PlainTasks | Driver::Tasks => on_tasks(rt, THREADS, secs, |t, stop| {
            let (keys, vals, node, plain) =
                (keys.clone(), vals.clone(), node.clone(), plain.clone());
            let refused = refused.clone();
            async move {
                let mut i = begin(t);
                let mut done = 0u64;
                let mut chunks = 0u64;
                while !stop.load(Relaxed) {
                    for _ in 0..CHUNK {
                        let r = match (op, driver) {
                            (Op::Get, Driver::PlainTasks) => {
                                black_box(plain.get(&keys[i]));
                                Ok(())
                            }
                            (Op::Insert, Driver::PlainTasks) => plain
                                .insert(keys[i].clone(), vals[i].clone())
                                .map_err(|e| e.to_string()),
                            (Op::Get, _) => node
                                .get(&keys[i])
                                .await
                                .map(|v| {
                                    black_box(v);
                                })
                                .map_err(|e| e.to_string()),
                            (Op::Insert, _) => node
                                .insert(keys[i].clone(), vals[i].clone())
                                .await
                                .map_err(|e| e.to_string()),
                        };
                        match r {
                            Ok(()) => done += 1,
                            Err(e) => refused.note(&e),
                        }
                        i = (i + step) % n;
                    }
                    chunks += 1;
                    if chunks & 15 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                done
            }
        }),
    }
}

fn local_slots(rt: &Runtime, opts: &Opts) -> Res<()> {
    println!(
        "## Throughput (a), local slots: one node serving all {SLOTS} slots vs a plain `Cache`\n"
    );
    println!(
        "{} keys (`key:NNNNNNNNNN`, 16-byte values), all present; each thread walks them \
         with a stride from its own start. `insert` overwrites (key and value cloned per \
         call on both sides). {} s per sample, {} sample(s) per subject, the subjects \
         interleaved; median reported. The node has no replicas and no peers; its tokio \
         runtime has {WORKERS} workers.\n",
        opts.keys, opts.secs, opts.samples
    );
    let (keys, vals) = keyset(opts.keys, |_| true);
    let plain: Cache<String, String> = Cache::builder().build();
    let nodes = rt.block_on(mesh(1, 0, 20_000, &Faults::new()))?;
    let node = nodes[0].clone();
    for (k, v) in keys.iter().zip(vals.iter()) {
        plain
            .insert(k.clone(), v.clone())
            .map_err(|e| format!("plain insert: {e}"))?;
        node.local()
            .insert(k.clone(), v.clone())
            .map_err(|e| format!("node insert: {e}"))?;
    }
    let local = Local {
        plain,
        node,
        keys,
        vals,
    };
    let mut results: Vec<(Op, Driver, Vec<f64>)> = Vec::new();
    let mut refusals: Vec<(Op, Driver, u64, String)> = Vec::new();
    for op in [Op::Get, Op::Insert] {
        for d in Driver::ALL {
            results.push((op, d, Vec::new()));
        }
    }
    for sample in 0..opts.samples {
        for op in [Op::Get, Op::Insert] {
            // Rotate the order so no subject always runs first.
            for j in 0..Driver::ALL.len() {
                let d = Driver::ALL[(j + sample) % Driver::ALL.len()];
                let refused = Arc::new(Refused::default());
                let r = local_sample(rt, d, op, &local, opts.secs, &refused);
                let count = refused.count.load(Relaxed);
                if count > 0 {
                    let first = refused
                        .first
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .unwrap_or_default();
                    eprintln!(
                        "sample {sample} {} {}: {count} operations REFUSED, the first with: {}",
                        op.name(),
                        d.name(),
                        first
                    );
                    refusals.push((op, d, count, first));
                }
                eprintln!(
                    "sample {sample} {} {}: {:.2} M/s",
                    op.name(),
                    d.name(),
                    r / 1e6
                );
                let slot = results
                    .iter_mut()
                    .find(|(o, dd, _)| *o == op && *dd == d)
                    .expect("subject");
                slot.2.push(r);
            }
        }
    }
    let Local {
        plain, node, keys, ..
    } = &local;
    if node.local().len() != keys.len() || plain.len() != keys.len() {
        return Err(format!(
            "key counts differ after the run: node {}, plain {}, expected {}",
            node.local().len(),
            plain.len(),
            keys.len()
        ));
    }
    rt.block_on(shutdown_all(nodes));
    println!("| op | subject | Mops/s (median) | samples | vs plain `Cache` (threads) |");
    println!("|---|---|---:|---|---:|");
    let med = |op: Op, d: Driver| -> f64 {
        let (_, _, xs) = results
            .iter()
            .find(|(o, dd, _)| *o == op && *dd == d)
            .expect("subject");
        median(xs)
    };
    for (op, d, xs) in &results {
        let base = med(*op, Driver::Plain);
        let m = median(xs);
        let all: Vec<String> = xs.iter().map(|x| format!("{:.2}", x / 1e6)).collect();
        println!(
            "| {} | {} | {:.2} | {} | {:.2}x |",
            op.name(),
            d.name(),
            m / 1e6,
            all.join(", "),
            m / base
        );
    }
    println!();
    println!(
        "| op | best `ClusterCache` driver | best plain `Cache` driver | cluster / plain | \
         goal: within 10% |"
    );
    println!("|---|---|---|---:|---|");
    let best = |op: Op, drivers: &[Driver]| -> (Driver, f64) {
        drivers
            .iter()
            .map(|&d| (d, med(op, d)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("drivers")
    };
    for op in [Op::Get, Op::Insert] {
        // The best of each side, so neither is held back by a driver that suits it less.
        let (d, cluster) = best(op, &[Driver::Inline, Driver::Blocking, Driver::Tasks]);
        let (p, plain) = best(op, &[Driver::Plain, Driver::PlainTasks]);
        let ratio = cluster / plain;
        println!(
            "| {} | {} | {} | {ratio:.2}x | {} |",
            op.name(),
            d.name(),
            p.name(),
            if ratio >= 0.9 { "met" } else { "NOT met" }
        );
    }
    println!();
    if refusals.is_empty() {
        println!("No operation was refused.\n");
    } else {
        println!("Refused operations (not counted in the rates above):\n");
        for (op, d, count, first) in &refusals {
            println!(
                "- {} {}: {count} refused, the first with `{first}`",
                op.name(),
                d.name()
            );
        }
        println!();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Throughput, remote slots: node 0 of a 3-master mesh asking nodes 1 and 2.

/// Requests per second of `op` from node 0 with `inflight` tasks, each awaiting one
/// request at a time, over `secs` after a short warm-up.
fn remote_sample(
    rt: &Runtime,
    node: &Node,
    op: Op,
    inflight: usize,
    keys: &Arc<Vec<String>>,
    vals: &Arc<Vec<String>>,
    secs: f64,
) -> Res<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let n = keys.len();
    let step = stride(n);
    let handles: Vec<_> = (0..inflight)
        .map(|t| {
            let (node, keys, vals) = (node.clone(), keys.clone(), vals.clone());
            let (stop, done) = (stop.clone(), done.clone());
            rt.spawn(async move {
                let mut i = t * n / inflight;
                while !stop.load(Relaxed) {
                    match op {
                        Op::Get => match node.get(&keys[i]).await {
                            Ok(Some(_)) => {}
                            Ok(None) => return Err(format!("get {}: missing", keys[i])),
                            Err(e) => return Err(format!("get {}: {e}", keys[i])),
                        },
                        Op::Insert => node
                            .insert(keys[i].clone(), vals[i].clone())
                            .await
                            .map_err(|e| format!("insert {}: {e}", keys[i]))?,
                    }
                    done.fetch_add(1, Relaxed);
                    i = (i + step) % n;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64((secs / 4.0).clamp(0.1, 0.5)));
    let (c0, t0) = (done.load(Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, t1) = (done.load(Relaxed), Instant::now());
    stop.store(true, Relaxed);
    rt.block_on(async {
        for h in handles {
            h.await.map_err(|e| format!("task: {e}"))??;
        }
        Ok::<_, String>(())
    })?;
    Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
}

/// redis-benchmark's requests per second, run long enough to last about `secs` (a first
/// short run sizes the second; in `--quick` only the short run).
fn redis_rate(
    cluster: &RedisCluster,
    test: &str,
    pipeline: u32,
    secs: f64,
    quick: bool,
) -> Res<f64> {
    let probe = match (quick, pipeline > 1) {
        (true, true) => 200_000,
        (true, false) => 25_000,
        (false, true) => 400_000,
        (false, false) => 50_000,
    };
    let first = cluster.benchmark(test, probe, 50, pipeline)?;
    if quick {
        return Ok(first);
    }
    let n = ((first * secs.max(2.0)) as u64).max(probe);
    let r = cluster.benchmark(test, n, 50, pipeline)?;
    eprintln!(
        "redis-benchmark -t {test} -c 50 -P {pipeline}: sizing run {first:.0}/s, \
         measured run of {n} requests {r:.0}/s"
    );
    Ok(r)
}

fn remote_slots(rt: &Runtime, opts: &Opts) -> Res<()> {
    println!("## Throughput (b), remote slots: 3 masters, no replicas\n");
    println!(
        "larder: node 0 sends `get`/`insert` of {} keys owned by nodes 1 and 2 (forwarded \
         over QUIC, one stream per request, on the one connection node 0 opened to each \
         peer before the runs), from N tokio tasks each awaiting one request at a time (N \
         requests in flight); all three nodes in this process on one tokio runtime \
         ({WORKERS} workers). {} s per sample after a warm-up, {} sample(s), median. Redis: \
         `redis-benchmark --cluster -c 50 -P 1|16 -t get|set` on a 3-master cluster (its \
         default: one key per client, 3-byte values, requests spread over all 3 masters), \
         {}. Client and servers share the same {} cores on both sides.\n",
        opts.keys,
        opts.secs,
        opts.samples,
        if opts.quick {
            "one short run each (--quick: rough, redis-benchmark rounds its time up to 250 ms)"
                .to_string()
        } else {
            format!(
                "each run sized by a first short run to last about {} s",
                opts.secs.max(2.0)
            )
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let nodes = rt.block_on(mesh(3, 0, 30_000, &Faults::new()))?;
    let mine = range(0, 3);
    let (keys, vals) = keyset(opts.keys, |k| !mine.contains(k.slot()));
    for (k, v) in keys.iter().zip(vals.iter()) {
        let owner = nodes[0].routing().slots.owner(k.slot());
        let node = nodes
            .iter()
            .find(|n| Some(n.id()) == owner)
            .ok_or_else(|| format!("{k}: no owner"))?;
        node.local()
            .insert(k.clone(), v.clone())
            .map_err(|e| format!("prefill: {e}"))?;
    }
    let on_1 = keys
        .iter()
        .filter(|k| nodes[0].routing().slots.owner(k.slot()) == Some(nodes[1].id()))
        .count();
    eprintln!("{} keys on node 1, {} on node 2", on_1, keys.len() - on_1);
    // One request to each remote node first, so that node 0 holds its connection to
    // each before the many tasks start (concurrent first requests each dial one).
    rt.block_on(async {
        for owner in [nodes[1].id(), nodes[2].id()] {
            let k = keys
                .iter()
                .find(|k| nodes[0].routing().slots.owner(k.slot()) == Some(owner))
                .ok_or("no key of a remote node")?;
            nodes[0]
                .get(k)
                .await
                .map_err(|e| format!("warm-up get {k}: {e}"))?;
        }
        Ok::<_, String>(())
    })?;
    let mut larder: Vec<(Op, usize, Vec<f64>)> = Vec::new();
    for sample in 0..opts.samples {
        for op in [Op::Get, Op::Insert] {
            for &f in &opts.inflight {
                let r = remote_sample(rt, &nodes[0], op, f, &keys, &vals, opts.secs)?;
                eprintln!(
                    "sample {sample} larder {} {f} in flight: {r:.0}/s",
                    op.name()
                );
                match larder.iter_mut().find(|(o, ff, _)| *o == op && *ff == f) {
                    Some(e) => e.2.push(r),
                    None => larder.push((op, f, vec![r])),
                }
            }
        }
    }
    rt.block_on(shutdown_all(nodes));

    let mut redis: Vec<(Op, u32, f64)> = Vec::new();
    if opts.redis {
        let dir = tempdir("mesh-redis-throughput-")?;
        let cluster = start_redis(dir.path(), REDIS_THROUGHPUT_PORT, 3, 0)?;
        for op in [Op::Get, Op::Insert] {
            let test = if op == Op::Get { "get" } else { "set" };
            for pipeline in [1, 16] {
                let r = redis_rate(&cluster, test, pipeline, opts.secs, opts.quick)?;
                redis.push((op, pipeline, r));
            }
        }
        drop(cluster);
    }

    println!("| op | larder in flight | larder req/s | Redis | Redis req/s | larder / Redis |");
    println!("|---|---:|---:|---|---:|---:|");
    for (op, f, xs) in &larder {
        let m = median(xs);
        // Compare with the Redis setup of about as many requests in flight.
        let pipeline = if *f > 200 { 16 } else { 1 };
        let r = redis
            .iter()
            .find(|(o, p, _)| o == op && *p == pipeline)
            .map(|x| x.2);
        let redis_name = if *op == Op::Get { "GET" } else { "SET" };
        match r {
            Some(r) => println!(
                "| {} | {f} | {m:.0} | {redis_name} -c 50 -P {pipeline} ({} in flight) | {r:.0} | {:.2}x |",
                op.name(),
                50 * pipeline,
                m / r
            ),
            None => println!("| {} | {f} | {m:.0} | - | - | - |", op.name()),
        }
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Small helpers.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `xs` (any order).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted `xs`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
