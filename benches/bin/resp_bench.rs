//! redis-benchmark against larder's RESP server and against redis-server, in one run
//! on this machine: SET, GET, INCR and MSET with 50 clients, without pipelining and
//! with 16 requests in flight per client. Contenders are interleaved round by round;
//! each figure is the median of the rounds; the ratio is larder / Redis.
//!
//! ```text
//! cargo run --release -p larder-benches --bin resp_bench -- [requests per test] [rounds]
//! ```
//!
//! larder runs in this process on a tokio runtime of two worker threads over a
//! `Cache<String, Vec<u8>>`; redis-server runs without persistence. Both listen on
//! 127.0.0.1. The load average is printed: the machine may be shared.

use larder::resp::{RespConfig, RespServer};
use larder::Cache;
use larder_benches::redis_cluster::ensure_redis;
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
    let out = Command::new("redis-benchmark")
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
    ensure_redis().expect("redis-server, redis-cli and redis-benchmark");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let larder_port = listener.local_addr().unwrap().port();
    let cache: Cache<String, Vec<u8>> = Cache::builder().build();
    rt.spawn(RespServer::new(cache, RespConfig::default()).serve(listener));

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
    for pipeline in [1u32, 16] {
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
}
