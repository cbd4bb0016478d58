//! `redis-cli -c` and the `redis` crate's cluster client against a three-node
//! larder-node cluster serving RESP: writes and reads across slots follow `MOVED`,
//! through a reshard and a failover; multi-key commands across slots answer
//! `CROSSSLOT`.

mod common;

use common::{redis_cli_stdin, start_nodes, take_turn, wait_healthy, Env, NodeOpts};
use larder_cli::ops;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `redis-cli -c -p port` with `commands` on stdin (one per line); its stdout
/// without the "-> Redirected to slot ..." lines.
fn cli_c(port: u16, commands: &str) -> String {
    cli_c_redirects(port, commands).0
}

/// As [`cli_c`], with how many redirections redis-cli followed.
fn cli_c_redirects(port: u16, commands: &str) -> (String, usize) {
    let text = redis_cli_stdin(
        &["-c".into(), "-p".into(), port.to_string().into()],
        commands,
    );
    let mut redirects = 0;
    let mut kept = String::new();
    for line in text.lines() {
        if line.starts_with("-> Redirected to slot") {
            redirects += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, redirects)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const KEYS: usize = 60;

fn sets() -> String {
    (0..KEYS)
        .map(|i| format!("SET key:{i} value-{i}\n"))
        .collect()
}

fn gets() -> String {
    (0..KEYS).map(|i| format!("GET key:{i}\n")).collect()
}

fn expected_values() -> String {
    (0..KEYS).map(|i| format!("value-{i}\n")).collect()
}

/// Through the `redis` crate's cluster client (one connection, kept across the test):
/// sets `prefix:{i}` for `0..n`, or checks their values.
fn library(con: &mut redis::cluster::ClusterConnection, prefix: &str, n: usize, write: bool) {
    use redis::Commands;
    for i in 0..n {
        let k = format!("{prefix}:{i}");
        if write {
            let () = con
                .set(&k, format!("lib-{i}"))
                .expect("SET through the library");
        } else {
            let v: Option<String> = con.get(&k).expect("GET through the library");
            assert_eq!(v.as_deref(), Some(format!("lib-{i}").as_str()), "{k}");
        }
    }
    // A multi-key command on one slot (a hash tag).
    let () = con
        .mset(&[
            (format!("{{{prefix}}}:a"), "1"),
            (format!("{{{prefix}}}:b"), "2"),
        ])
        .expect("MSET on one slot");
    let v: Vec<String> = con
        .mget(&[format!("{{{prefix}}}:a"), format!("{{{prefix}}}:b")])
        .unwrap();
    assert_eq!(v, ["1", "2"]);
}

/// Retries `f` until it returns true, for at most `within`.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_follows_moved_through_reshard_and_failover() {
    if !common_have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let _turn = take_turn().await;
    let env = Env::new();
    let opts = NodeOpts {
        resp: true,
        ..NodeOpts::default()
    };
    let nodes = start_nodes(&env, "r", 4, opts);
    let admin = env.admin();
    let addr: Vec<String> = nodes.iter().map(|n| n.addr_s()).collect();
    let socks: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let ports: Vec<u16> = socks.iter().map(|s| s.port()).collect();
    env.cli(&["cluster", "create", &addr[0], &addr[1], &addr[2], "--yes"])
        .await
        .expect(0);
    wait_healthy(&admin, socks[0], Duration::from_secs(60)).await;

    // Every node's RESP server answers for the cluster.
    let info = redis_cli(ports[1], &["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    let slots = redis_cli(ports[2], &["CLUSTER", "SLOTS"]);
    for p in &ports[..3] {
        assert!(slots.contains(&p.to_string()), "{slots}");
    }
    let nodes_text = redis_cli(ports[0], &["CLUSTER", "NODES"]);
    assert_eq!(nodes_text.lines().count(), 3, "{nodes_text}");
    assert!(nodes_text.contains("myself,master"), "{nodes_text}");

    // Writes across slots from one entry point, reads from another.
    let p0 = ports[0];
    let (set_out, redirects) = tokio::task::spawn_blocking(move || cli_c_redirects(p0, &sets()))
        .await
        .unwrap();
    assert_eq!(set_out, "OK\n".repeat(KEYS), "SETs through -c");
    assert!(
        redirects > KEYS / 3,
        "{redirects} redirections for {KEYS} keys"
    );
    let p1 = ports[1];
    let got = tokio::task::spawn_blocking(move || cli_c(p1, &gets()))
        .await
        .unwrap();
    assert_eq!(got, expected_values(), "GETs through -c");

    // A cluster-aware client library, its connection kept through what follows.
    let url = format!("redis://127.0.0.1:{}/", ports[2]);
    let mut con = tokio::task::spawn_blocking(move || {
        let client = redis::cluster::ClusterClient::new(vec![url]).unwrap();
        let mut con = client.get_connection().expect("a cluster connection");
        library(&mut con, "lib", KEYS, true);
        library(&mut con, "lib", KEYS, false);
        con
    })
    .await
    .unwrap();

    // Without -c, a key of another node's slot is a MOVED to that node's RESP port.
    let slot_of = |k: &str| larder::cluster::key_hash_slot(k.as_bytes());
    let moved = (0..KEYS)
        .map(|i| format!("key:{i}"))
        .find_map(|k| {
            let out = redis_cli(ports[0], &["GET", &k]);
            out.starts_with("MOVED").then_some((k, out))
        })
        .expect("some key lives on another node");
    let (mk, text) = moved;
    assert!(
        text.starts_with(&format!("MOVED {} 127.0.0.1:", slot_of(&mk))),
        "{text}"
    );
    let target: u16 = text.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(ports[1..3].contains(&target), "{text}");
    assert_eq!(
        redis_cli(ports[0], &["MSET", "a", "1", "b", "2"]).trim_end(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );

    // A reshard: 3000 slots from node 1 to node 0; every key still reads through -c.
    let from = nodes[1].id_s();
    env.cli(&[
        "reshard", &addr[0], "--from", &from, "--to", &addr[0], "--slots", "3000", "--yes",
    ])
    .await
    .expect(0);
    wait_healthy(&admin, socks[0], Duration::from_secs(60)).await;
    let p2 = ports[2];
    let got = tokio::task::spawn_blocking(move || cli_c(p2, &gets()))
        .await
        .unwrap();
    assert_eq!(got, expected_values(), "GETs after the reshard");
    con = tokio::task::spawn_blocking(move || {
        library(&mut con, "lib", KEYS, false);
        con
    })
    .await
    .unwrap();
    let slots = redis_cli(ports[0], &["CLUSTER", "COUNTKEYSINSLOT", "0"]);
    assert!(slots.trim().parse::<u64>().is_ok(), "{slots}");

    // A failover: node 3 replicates node 1, then takes over; -c still reads it all.
    env.cli(&["add-node", &addr[3], &addr[1], "--replica"])
        .await
        .expect(0);
    let p3 = ports[3];
    // add-node picks the master (the one with the fewest replicas): ask node 3 which.
    let master_port = || {
        let nodes = redis_cli(p3, &["CLUSTER", "NODES"]);
        let me: Vec<&str> = nodes
            .lines()
            .find(|l| l.contains("myself"))?
            .split(' ')
            .collect();
        let master_id = *me.get(3)?;
        let master = nodes.lines().find(|l| l.starts_with(master_id))?;
        let addr = master.split(' ').nth(1)?.split('@').next()?;
        addr.rsplit(':').next()?.parse::<u16>().ok()
    };
    eventually(
        "the replica has its master's keys",
        Duration::from_secs(60),
        || {
            let Some(mp) = master_port() else {
                return false;
            };
            let (replica, master) = (redis_cli(p3, &["DBSIZE"]), redis_cli(mp, &["DBSIZE"]));
            replica.trim() == master.trim() && replica.trim() != "0"
        },
    );
    // WAIT on the master: its replica acknowledges what it was sent.
    let mp = master_port().expect("node 3's master");
    assert_eq!(redis_cli(mp, &["WAIT", "1", "10000"]).trim(), "1");
    env.cli(&["failover", &addr[3]]).await.expect(0);
    eventually("node 3 is a master", Duration::from_secs(60), || {
        redis_cli(p3, &["CLUSTER", "NODES"])
            .lines()
            .any(|l| l.contains("myself,master"))
    });
    wait_healthy(&admin, socks[3], Duration::from_secs(60)).await;
    let got = tokio::task::spawn_blocking(move || cli_c(p3, &gets()))
        .await
        .unwrap();
    assert_eq!(got, expected_values(), "GETs after the failover");
    let set_out = tokio::task::spawn_blocking(move || cli_c(p0, &sets()))
        .await
        .unwrap();
    assert_eq!(set_out, "OK\n".repeat(KEYS), "SETs after the failover");
    tokio::task::spawn_blocking(move || {
        library(&mut con, "lib", KEYS, false);
        library(&mut con, "lib2", KEYS, true);
        library(&mut con, "lib2", KEYS, false);
    })
    .await
    .unwrap();
    let _ = ops::NodeId::from_hex(&nodes[3].id_s()).expect("an id");
}

fn common_have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
