//! A real Redis 7 cluster on loopback (3 masters, 3 replicas, `cluster-node-timeout
//! 1000`): one failover timed, then a short GET and SET benchmark.
//!
//! Needs redis-server, redis-cli and redis-benchmark (installed with apt-get when
//! missing), and ports 27100..27106 and 37100..37106 free. Run by hand:
//!
//! ```text
//! cargo test -p larder-benches --test redis_cluster -- --ignored --nocapture
//! ```

use larder_benches::redis_cluster::{ensure_redis, RedisCluster};
use std::time::{Duration, Instant};

const BASE_PORT: u16 = 27100;

#[test]
#[ignore = "starts a Redis cluster (needs redis-server, redis-cli, redis-benchmark); run by hand"]
fn redis_cluster_failover_and_throughput() {
    ensure_redis().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let t = Instant::now();
    let mut cluster = RedisCluster::start(dir.path(), BASE_PORT, 3, 1, 1000).unwrap();
    println!("cluster of 6 nodes healthy in {:.2?}", t.elapsed());
    assert_eq!(
        cluster.ports(),
        (BASE_PORT..BASE_PORT + 6).collect::<Vec<_>>()
    );

    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    let master = masters[0];
    let replica = cluster.replica_of(master).expect("a replica");
    assert!(!masters.contains(&replica));

    let took = cluster
        .measure_failover(master, Duration::from_secs(15))
        .unwrap();
    println!(
        "failover of master {master} to replica {replica}: {:.0} ms (node timeout 1000 ms)",
        took.as_secs_f64() * 1e3
    );
    assert!(
        took > Duration::from_millis(1000),
        "faster than the node timeout: {took:?}"
    );

    // The other nodes learn of the promotion through gossip: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let masters = loop {
        let m = cluster.master_ports();
        if m.contains(&replica) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        masters.contains(&replica),
        "masters after failover: {masters:?}"
    );
    assert!(
        !masters.contains(&master),
        "masters after failover: {masters:?}"
    );
    assert_eq!(cluster.replica_of(replica), None);

    // Runs of about 5 s each: redis-benchmark's cluster mode rounds a run's time up to a
    // multiple of 250 ms, so shorter runs read noticeably low.
    for test in ["set", "get"] {
        for (requests, pipeline) in [(500_000, 1), (4_000_000, 16)] {
            let t = Instant::now();
            let rps = cluster.benchmark(test, requests, 50, pipeline).unwrap();
            println!(
                "redis-benchmark --cluster -t {test} -n {requests} -c 50 -P {pipeline}: \
                 {rps:.0} req/s ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
            assert!(rps > 0.0);
        }
    }

    assert!(cluster.kill(BASE_PORT + 1000).is_err());
}
