//! redis-benchmark against larder's RESP server and against redis-server, in one run
//! on this machine: SET, GET, INCR and MSET with 50 clients, without pipelining and
//! with 16 requests in flight per client. Contenders are interleaved round by round;
//! each figure is the median of the rounds; the ratio is larder / Redis.
//!
//! ```text
//! cargo run --release -p larder-benches --features jemalloc --bin resp_bench -- [requests per test] [rounds] [cluster]
//! ```
//!
//! larder runs in this process over a `Cache<String, Vec<u8>>`, served by
//! `RespServer::spawn` on two event-loop threads (as larder-node serves RESP);
//! redis-server runs without persistence. Both listen on
//! 127.0.0.1. Then `redis-benchmark --cluster` (SET, GET, INCR) against three larder
//! cluster nodes in this process (one RESP event loop each, on each node's mesh port number)
//! and a three-master Redis cluster (ports 21300..21302 and their bus ports). The load
//! average is printed: the machine may be shared.

/// With `--features jemalloc` (as BENCHMARKS.md runs it), larder allocates through
/// jemalloc, as larder-node does and as redis-server does.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::proto::{Rng, SLOTS};
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, KeySlot, NodeId, SlotSet, StateStore,
};
use larder::resp::{ClusterKeyspace, RespConfig, RespServer, RespThreads};
use larder::Cache;
use larder_benches::redis_cluster::{ensure_redis, RedisCluster};
use larder_benches::run_env::{git_head, loadavg, redis_version};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG") {
            return;
        }
        assert!(Instant::now() < deadline, "no PONG on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests per second that redis-benchmark measured for `test`.
fn benchmark(port: u16, test: &str, requests: u64, pipeline: u32) -> f64 {
    benchmark_with(port, test, requests, pipeline, false)
}

fn benchmark_with(port: u16, test: &str, requests: u64, pipeline: u32, cluster: bool) -> f64 {
    let mut cmd = Command::new("redis-benchmark");
    if cluster {
        cmd.arg("--cluster");
    }
    let out = cmd
        .args([
            "-p",
            &port.to_string(),
            "-t",
            test,
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-P",
            &pipeline.to_string(),
            "-r",
            "100000",
            "--csv",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps",...: the second field of the line after the header.
    text.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no figure from redis-benchmark -t {test}: {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    // `cluster`: only the --cluster comparison.
    let only_cluster = args.get(3).is_some_and(|a| a == "cluster");
    ensure_redis().expect("redis-server, redis-cli and redis-benchmark");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache: Cache<String, Vec<u8>> = Cache::builder().build();
    // Two event loops of its own, as larder-node runs it on two cores.
    let larder_server = RespServer::new(cache, RespConfig::default())
        .spawn(TcpListener::bind("127.0.0.1:0").unwrap(), 2)
        .unwrap();
    let larder_port = larder_server.local_addr().port();

    let redis_port = free_port();
    let _redis = RedisServer(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    wait_ping(redis_port);
    wait_ping(larder_port);

    println!(
        "resp_bench: {requests} requests per test, 50 clients, {rounds} rounds (median), \
         {}, git {}, load {}",
        redis_version(),
        git_head(),
        loadavg()
    );
    println!(
        "| test | pipeline | larder req/s | redis req/s | larder / redis |\n|---|---|---|---|---|"
    );
    for pipeline in [1u32, 16].into_iter().filter(|_| !only_cluster) {
        for test in ["set", "get", "incr", "mset"] {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for round in 0..rounds {
                // Alternate who goes first, so neither always meets a warmer machine.
                if round % 2 == 0 {
                    ours.push(benchmark(larder_port, test, requests, pipeline));
                    theirs.push(benchmark(redis_port, test, requests, pipeline));
                } else {
                    theirs.push(benchmark(redis_port, test, requests, pipeline));
                    ours.push(benchmark(larder_port, test, requests, pipeline));
                }
            }
            let (l, r) = (median(ours), median(theirs));
            println!(
                "| {} | {pipeline} | {l:.0} | {r:.0} | {:.2} |",
                test.to_uppercase(),
                l / r
            );
        }
    }
    println!("load after: {}", loadavg());

    // --cluster: three masters each side.
    let (nodes, _servers) = rt.block_on(larder_cluster()).expect("a larder cluster");
    let dir = tempfile::tempdir().expect("a directory for the Redis cluster");
    let redis_cluster =
        RedisCluster::start_masters(dir.path(), 21300, 3, 5000).expect("a Redis cluster");
    let larder_entry = nodes[0].1;
    println!(
        "\nredis-benchmark --cluster, 3 masters each, {requests} requests, 50 clients, load {}",
        loadavg()
    );
    println!(
        "| test | pipeline | larder req/s | redis req/s | larder / redis |\n|---|---|---|---|---|"
    );
    for pipeline in [1u32, 16] {
        // redis-benchmark --cluster times a run in steps of about 250 ms: pipelined
        // runs get ten times the requests, so that a step is a small part of them.
        let requests = if pipeline > 1 {
            requests * 10
        } else {
            requests
        };
        for test in ["set", "get", "incr"] {
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for round in 0..rounds {
                let redis_run = || {
                    redis_cluster
                        .benchmark(test, requests, 50, pipeline)
                        .expect("redis-benchmark --cluster on Redis")
                };
                if round % 2 == 0 {
                    ours.push(benchmark_with(larder_entry, test, requests, pipeline, true));
                    theirs.push(redis_run());
                } else {
                    theirs.push(redis_run());
                    ours.push(benchmark_with(larder_entry, test, requests, pipeline, true));
                }
            }
            let (l, r) = (median(ours), median(theirs));
            println!(
                "| {} | {pipeline} | {l:.0} | {r:.0} | {:.2} |",
                test.to_uppercase(),
                l / r
            );
        }
    }
    println!("load after: {}", loadavg());
    drop(redis_cluster);
    rt.block_on(async {
        for (n, _) in nodes {
            n.shutdown().await;
        }
    });
}

type Node = ClusterCache<String, Vec<u8>>;

/// A port free for both UDP (the mesh) and TCP (RESP).
fn free_pair() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Three masters in this process, each serving RESP on its mesh port number; the
/// nodes with their RESP ports.
#[allow(clippy::type_complexity)]
async fn larder_cluster() -> Result<(Vec<(Node, u16)>, Vec<RespThreads>), String> {
    let ca = ClusterCa::generate("resp bench").map_err(|e| e.to_string())?;
    let mut nodes: Vec<(Node, u16)> = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3u64 {
        let id = NodeId::random(&mut Rng::new(0x5e5b + i));
        let identity = ca.issue(id).map_err(|e| e.to_string())?;
        let port = free_pair();
        let config = ClusterConfig::new(
            format!("127.0.0.1:{port}").parse().expect("an address"),
            identity,
            ca.cert_der(),
            StateStore::Memory(MemoryStore::new()),
        );
        let node: Node = Cache::builder()
            .cluster(config)
            .start()
            .await
            .map_err(|e| format!("node {i}: {e}"))?;
        // One event loop per node, as each Redis node has one.
        let server = RespServer::new(
            ClusterKeyspace::new(node.clone(), port),
            RespConfig::default(),
        )
        .spawn(
            TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("RESP on {port}: {e}"))?,
            1,
        )
        .map_err(|e| format!("RESP on {port}: {e}"))?;
        servers.push(server);
        nodes.push((node, port));
    }
    for (n, _) in &nodes[1..] {
        n.node()
            .meet(nodes[0].0.local_addr())
            .await
            .map_err(|e| format!("meet: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let ids: Vec<NodeId> = nodes.iter().map(|(n, _)| n.id()).collect();
    while !nodes
        .iter()
        .all(|(n, _)| ids.iter().all(|id| n.routing().node(*id).is_some()))
    {
        if Instant::now() > deadline {
            return Err("the nodes did not meet".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, (n, _)) in nodes.iter().enumerate() {
        let start = (i * SLOTS / 3) as u16;
        let end = ((i + 1) * SLOTS / 3) as u16;
        n.node()
            .add_slots(SlotSet::from_range(start..end))
            .await
            .map_err(|e| format!("add_slots: {e}"))?;
    }
    while !nodes.iter().all(|(n, _)| {
        let rt = n.routing();
        rt.cluster_ok && rt.slots.assigned() == SLOTS
    }) {
        if Instant::now() > deadline {
            return Err("the cluster did not become ok".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes are taken once every node sees itself as a writable master.
    let probe = |i: usize| format!("{{probe{i}}}");
    for (n, _) in &nodes {
        loop {
            let ok = (0..64).any(|i| {
                let k = probe(i);
                n.routing().slots.owner(k.slot()) == Some(n.id())
                    && n.local().insert(k.clone(), Vec::new()).is_ok()
                    && n.local().remove(&k).is_ok()
            });
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err("a master did not take writes".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((nodes, servers))
}
