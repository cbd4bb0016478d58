//! Cluster nodes as separate processes over real QUIC on 127.0.0.1: three masters and
//! three replicas, each a child process (this test binary re-run as `node_process`)
//! with a durable data directory, driven through its stdin. A master is killed with
//! SIGKILL: its replica must be promoted, writes to its slots resume, and every write
//! acknowledged by a replica is still there. The killed node is restarted from its
//! directory: it rejoins as a replica of the promoted node and resynchronises
//! partially (the new master's backlog covers the gap).
//!
//! The child speaks a line protocol; every answer starts with `@@ `:
//! `meet <addr>`, `addslots <lo> <hi>`, `replicate <id>`, `state`, `set <k> <v> <acks>`,
//! `get <k>`, `localget <k>`, `owner <k>`.
#![cfg(all(feature = "cluster", unix))]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use larder::cluster::larder_cluster::proto::{Rng, SLOTS};
use larder::cluster::{
    ClusterCa, ClusterCache, ClusterConfig, KeySlot, NodeId, NodeIdentity, SlotSet, StateStore,
    WriteOptions,
};
use larder::{Cache, Durability, Fsync};

const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The child: a durable cluster node in `LARDER_NODE_DIR`, commanded through stdin.
#[test]
fn node_process() {
    let Ok(dir) = std::env::var("LARDER_NODE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let port: u16 = std::env::var("LARDER_NODE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // The node's log: this process's stderr, which the test writes to `node.log`.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "larder=info,larder_cluster=info".into()),
        )
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(serve_node(&dir, port));
}

async fn serve_node(dir: &Path, port: u16) {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let identity = NodeIdentity::from_pem(
        &String::from_utf8(read("node.pem")).unwrap(),
        &String::from_utf8(read("node.key")).unwrap(),
    )
    .unwrap();
    let ca = larder::cluster::larder_cluster::net::CertificateDer::from(read("ca.der"));
    let config = ClusterConfig::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        identity,
        ca,
        StateStore::File(dir.join("node.state")),
    )
    .node_timeout(NODE_TIMEOUT);
    let node: ClusterCache<String, String> = Cache::builder()
        .cluster(config)
        .durability(Durability::new(dir.join("data")).fsync(Fsync::Always))
        .start()
        .await
        .unwrap();
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        writeln!(o, "@@ {line}").unwrap();
        o.flush().unwrap();
    };
    say(format!("READY {} {}", node.local_addr(), node.id()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let w: Vec<&str> = line.split_whitespace().collect();
        let answer = match w.as_slice() {
            ["meet", addr] => match node.node().meet(addr.parse().unwrap()).await {
                Ok(()) => "OK".to_string(),
                Err(e) => format!("ERR {e}"),
            },
            ["addslots", lo, hi] => {
                let set = SlotSet::from_range(lo.parse().unwrap()..hi.parse().unwrap());
                match node.node().add_slots(set).await {
                    Ok(()) => "OK".into(),
                    Err(e) => format!("ERR {e}"),
                }
            }
            ["replicate", id] => match node.node().replicate(NodeId::from_hex(id).unwrap()).await {
                Ok(()) => "OK".into(),
                Err(e) => format!("ERR {e}"),
            },
            ["state"] => {
                let rt = node.routing();
                let info = node.info();
                let r = info.replication.unwrap();
                format!(
                    "STATE ok={} role={} link={} known={} assigned={} partial={} full={}",
                    u8::from(rt.cluster_ok),
                    r.role,
                    r.master_link_status.unwrap_or("-"),
                    rt.nodes.len(),
                    rt.slots.assigned(),
                    r.sync_partial_ok,
                    r.sync_full
                )
            }
            ["set", k, v, acks] => {
                let opts = WriteOptions::acked_by(acks.parse().unwrap(), Duration::from_secs(2));
                match node
                    .insert_with(k.to_string(), v.to_string(), None, opts)
                    .await
                {
                    Ok(()) => "OK".into(),
                    Err(e) => format!("ERR {e}"),
                }
            }
            ["get", k] => match node.get(&k.to_string()).await {
                Ok(Some(v)) => format!("VAL {v}"),
                Ok(None) => "NIL".into(),
                Err(e) => format!("ERR {e}"),
            },
            ["localget", k] => match node.local().get(&k.to_string()) {
                Some(v) => format!("VAL {v}"),
                None => "NIL".into(),
            },
            ["owner", k] => match node.routing().slots.owner(k.slot()) {
                Some(id) => format!("OWNER {id}"),
                None => "OWNER -".into(),
            },
            _ => format!("ERR unknown command {line:?}"),
        };
        say(answer);
    }
}

/// A child node process.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: String,
    id: String,
    dir: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, port: u16) -> Proc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["node_process", "--exact", "--nocapture", "--test-threads=1"])
            .env("LARDER_NODE_DIR", dir)
            .env("LARDER_NODE_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("node.log")).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Proc {
            child,
            stdin,
            stdout,
            addr: String::new(),
            id: String::new(),
            dir: dir.to_path_buf(),
        };
        let ready = p.answer();
        let w: Vec<&str> = ready.split_whitespace().collect();
        assert_eq!(w[0], "READY", "{ready}");
        p.addr = w[1].to_string();
        p.id = w[2].to_string();
        p
    }

    /// The next protocol line (the test harness prints other lines too).
    fn answer(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "node {} exited", self.dir.display());
            // The harness may print "test node_process ... " before the first answer.
            if let Some(at) = line.find("@@ ") {
                return line[at + 3..].trim_end().to_string();
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    fn state(&mut self) -> HashMap<String, String> {
        parse_state(&self.cmd("state"))
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown code runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a condition may take to come true before the test fails. Only a bound for a
/// broken build: on a loaded machine leases, gossip and failover all run late.
const SETTLE: Duration = Duration::from_secs(60);

/// Sends `line` until the answer is not an error, at most for [`SETTLE`]. A write refused
/// while leases and routes settle (CLUSTERDOWN, an acknowledgement that timed out) is not
/// acknowledged, and retrying it is what a client does; an answer that is not an error
/// (a value, NIL) is returned at once and checked by the caller.
fn settled(p: &mut Proc, line: &str) -> String {
    let start = Instant::now();
    loop {
        let answer = p.cmd(line);
        if !answer.starts_with("ERR") {
            return answer;
        }
        assert!(
            start.elapsed() < SETTLE,
            "{line}: still {answer:?} after {SETTLE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `key=value` fields of a `STATE` answer.
fn parse_state(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// On a failing test's way out, prints the end of every node's log, and then lets the
/// directories go.
struct LogsOnPanic(Vec<PathBuf>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for dir in &self.0 {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("--- {} (last {} lines)", dir.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn range(i: usize) -> (u16, u16) {
    ((SLOTS * i / 3) as u16, (SLOTS * (i + 1) / 3) as u16)
}

fn key_in(i: usize, n: usize) -> String {
    let (lo, hi) = range(i);
    (0..)
        .map(|j| format!("k{n}x{j}"))
        .find(|k| (lo..hi).contains(&k.slot()))
        .unwrap()
}

#[test]
fn sigkill_master_promotes_replica_and_restart_resyncs_partially() {
    let root = tempfile::tempdir().unwrap();
    eprintln!("node directories under {}", root.path().display());
    let ca = ClusterCa::generate("process test").unwrap();
    let dirs: Vec<PathBuf> = (0..6)
        .map(|i| {
            let d = root.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let id = NodeId::random(&mut Rng::new(9000 + i));
            let identity = ca.issue(id).unwrap();
            std::fs::write(d.join("node.pem"), identity.cert_pem()).unwrap();
            std::fs::write(d.join("node.key"), identity.key_pem()).unwrap();
            std::fs::write(d.join("ca.der"), ca.cert_der().as_ref()).unwrap();
            d
        })
        .collect();
    let _logs = LogsOnPanic(dirs.clone());
    let mut nodes: Vec<Proc> = dirs.iter().map(|d| Proc::spawn(d, 0)).collect();

    // Form: meet, slots, replicas.
    let first = nodes[0].addr.clone();
    for n in &mut nodes[1..] {
        assert_eq!(n.cmd(&format!("meet {first}")), "OK");
    }
    eventually("every node to know the others", SETTLE, || {
        nodes.iter_mut().all(|n| n.state()["known"] == "6")
    });
    for (i, n) in nodes[..3].iter_mut().enumerate() {
        let (lo, hi) = range(i);
        assert_eq!(n.cmd(&format!("addslots {lo} {hi}")), "OK");
    }
    for i in 0..3 {
        let master = nodes[i].id.clone();
        assert_eq!(nodes[3 + i].cmd(&format!("replicate {master}")), "OK");
    }
    let start = Instant::now();
    loop {
        let states: Vec<String> = nodes.iter_mut().map(|n| n.cmd("state")).collect();
        let s: Vec<_> = states.iter().map(|l| parse_state(l)).collect();
        // Each pair (i, i + 3) a master and a replica streaming from it. Which one is
        // the master may have changed: on a loaded machine a node can miss its node
        // timeout, and its replica then rightly takes over.
        let formed = s
            .iter()
            .all(|s| s["ok"] == "1" && s["assigned"] == SLOTS.to_string())
            && (0..3).all(|i| {
                let (a, b) = (&s[i], &s[i + 3]);
                let streaming = |m: &HashMap<String, String>, r: &HashMap<String, String>| {
                    m["role"] == "master" && r["role"] == "slave" && r["link"] == "up"
                };
                streaming(a, b) || streaming(b, a)
            });
        if formed {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "the cluster did not form with replicas streaming in {SETTLE:?}; last states: {states:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Writes through any node, each acknowledged by one replica; reads through others.
    let mut acked = Vec::new();
    for n in 0..150usize {
        let k = key_in(n % 3, n);
        let v = format!("v{n}");
        let r = settled(&mut nodes[n % 6], &format!("set {k} {v} 1"));
        assert_eq!(r, "OK", "set {k} via node {}", n % 6);
        acked.push((k, v));
    }
    for (n, (k, v)) in acked.iter().enumerate() {
        assert_eq!(
            settled(&mut nodes[(n + 2) % 6], &format!("get {k}")),
            format!("VAL {v}")
        );
    }

    // SIGKILL the master of the first third of the slots: node 0, or node 3 if it took
    // over, and `r` is the other of the pair.
    let probe = key_in(0, 100_000);
    let owner = nodes[1].cmd(&format!("owner {probe}"));
    let m = [0, 3]
        .into_iter()
        .find(|&i| owner == format!("OWNER {}", nodes[i].id))
        .unwrap_or_else(|| panic!("the first third is owned by neither 0 nor 3: {owner}"));
    let r = 3 - m;
    let port_m: u16 = nodes[m].addr.rsplit(':').next().unwrap().parse().unwrap();
    nodes[m].kill();
    let took = eventually(
        "writes to the killed master's slots to resume",
        SETTLE,
        || nodes[1].cmd(&format!("set {probe} after 0")) == "OK",
    );
    eprintln!("writes resumed {took:?} after SIGKILL of master {m}");
    assert_eq!(nodes[r].state()["role"], "master");
    let new_owner = nodes[r].id.clone();
    // Another master learns the new owner by gossip, which may lag the write.
    eventually("node 2 to route to the new owner", SETTLE, || {
        nodes[2].cmd(&format!("owner {probe}")) == format!("OWNER {new_owner}")
    });
    for (k, v) in &acked {
        assert_eq!(
            settled(&mut nodes[4], &format!("get {k}")),
            format!("VAL {v}"),
            "acknowledged {k} lost"
        );
    }
    // Writes while the killed node is down (the new master has no replica to ack them),
    // through every other node.
    let alive: Vec<usize> = (0..6).filter(|&i| i != m).collect();
    let mut later = Vec::new();
    for n in 0..40usize {
        let k = key_in(0, 200_000 + n);
        assert_eq!(
            settled(&mut nodes[alive[n % 5]], &format!("set {k} w{n} 0")),
            "OK"
        );
        later.push((k, format!("w{n}")));
    }

    // Restart the killed node from its directory on its old port.
    let dir_m = nodes[m].dir.clone();
    nodes[m] = Proc::spawn(&dir_m, port_m);
    let took = eventually("the restarted node to rejoin as a replica", SETTLE, || {
        let s = nodes[m].state();
        s["role"] == "slave" && s["link"] == "up"
    });
    eprintln!("restarted node {m} streaming {took:?} after it started");
    let s = nodes[m].state();
    assert_eq!(
        s["full"], "0",
        "the restarted node needed a full resync: {s:?}"
    );
    assert!(s["partial"].parse::<u64>().unwrap() >= 1, "{s:?}");
    // It holds what it had and what was written while it was down.
    eventually("the restarted node to catch up", SETTLE, || {
        later
            .iter()
            .all(|(k, v)| nodes[m].cmd(&format!("localget {k}")) == format!("VAL {v}"))
    });
    for (k, v) in acked
        .iter()
        .filter(|(k, _)| range(0).0 <= k.slot() && k.slot() < range(0).1)
    {
        assert_eq!(nodes[m].cmd(&format!("localget {k}")), format!("VAL {v}"));
    }
}
