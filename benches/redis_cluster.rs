//! A real Redis Cluster on loopback, the counterpart of larder's cluster mesh in the
//! failover and throughput comparisons.
//!
//! [`RedisCluster::start`] runs one `redis-server` child per node on `127.0.0.1`, joins
//! them with `redis-cli --cluster create` and waits until the cluster is healthy
//! ([`RedisCluster::start_masters`] joins masters without replicas by hand, for fewer
//! than the 3 masters `--cluster create` insists on); dropping it SIGKILLs every node. [`RedisCluster::measure_failover`] kills a master and
//! times how long its replica takes to accept a write; [`RedisCluster::benchmark`] runs
//! `redis-benchmark --cluster` against it.
//!
//! Every node listens on `127.0.0.1` only, on `base_port..base_port + nodes` and on the
//! cluster bus ports 10000 above those. Unix only (SIGKILL, executable bits on `PATH`).
//!
//! ```no_run
//! use larder_benches::redis_cluster::{ensure_redis, RedisCluster};
//! use std::time::Duration;
//!
//! ensure_redis()?;
//! let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//! let mut cluster = RedisCluster::start(dir.path(), 27100, 3, 1, 1000)?;
//! let master = cluster.master_ports()[0];
//! let took = cluster.measure_failover(master, Duration::from_secs(15))?;
//! let sets = cluster.benchmark("set", 100_000, 50, 1)?;
//! println!("failover {took:?}, {sets:.0} SET/s");
//! # Ok::<(), String>(())
//! ```

use crate::resp::{self, Reply};
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The programs the cluster needs, all from Debian's `redis-server` and `redis-tools`.
const TOOLS: [&str; 3] = ["redis-server", "redis-cli", "redis-benchmark"];

/// How long [`RedisCluster::start`] may take, all steps together.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long one `redis-benchmark` run may take before it is killed.
const BENCHMARK_LIMIT: Duration = Duration::from_secs(600);

/// Interval between two write attempts while a failover is under way.
const FAILOVER_POLL: Duration = Duration::from_millis(10);

/// Cluster bus ports are the client ports plus this (Redis's fixed offset).
const BUS_OFFSET: u16 = 10_000;

/// Redis Cluster's number of hash slots.
const SLOTS: u16 = 16_384;

/// Makes sure `redis-server`, `redis-cli` and `redis-benchmark` are on `PATH`.
///
/// When one is missing, runs `apt-get install -y redis-server redis-tools` (as root), and
/// if that fails, `apt-get update` followed by the same install. Returns an error naming
/// the programs still missing, with the tail of apt-get's output.
pub fn ensure_redis() -> Result<(), String> {
    if missing_tools().is_empty() {
        return Ok(());
    }
    let apt = |args: &[&str]| -> Result<(bool, String), String> {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run apt-get {}: {e}", args.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let install = ["install", "-y", "redis-server", "redis-tools"];
    let (mut ok, mut output) = apt(&install)?;
    if !ok {
        let (updated, update_output) = apt(&["update"])?;
        if !updated {
            return Err(format!(
                "apt-get install -y redis-server redis-tools failed, and so did apt-get update:\n{}",
                tail(&update_output, 10)
            ));
        }
        (ok, output) = apt(&install)?;
    }
    let missing = missing_tools();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} not on PATH after apt-get install -y redis-server redis-tools ({}):\n{}",
        missing.join(", "),
        if ok {
            "which succeeded"
        } else {
            "which failed"
        },
        tail(&output, 10)
    ))
}

/// The programs of [`TOOLS`] that no directory of `PATH` holds as an executable file.
fn missing_tools() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    TOOLS
        .into_iter()
        .filter(|tool| {
            !dirs.iter().any(|d| {
                fs::metadata(d.join(tool))
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .collect()
}

/// One `redis-server` child.
struct Node {
    port: u16,
    dir: PathBuf,
    /// `None` once killed (and waited for).
    child: Option<Child>,
}

impl Node {
    /// The last lines of this node's log, for error messages.
    fn log_tail(&self) -> String {
        match fs::read_to_string(self.dir.join("redis.log")) {
            Ok(log) => tail(&log, 8),
            Err(e) => format!("(no log: {e})"),
        }
    }

    /// Whether the process is still running (not killed by us, not exited by itself).
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A Redis Cluster of `redis-server` children on `127.0.0.1`, killed (SIGKILL) when
/// dropped, on error and panic too.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts `masters * (1 + replicas_per_master)` nodes on ports `base_port..` and joins
    /// them into one cluster with `redis-cli --cluster create`, which makes the first
    /// `masters` ports the masters (16384 slots split evenly) and pairs the others with
    /// them in an order of its own: ask [`master_ports`](Self::master_ports) and
    /// [`replica_of`](Self::replica_of).
    ///
    /// Each node gets `dir/<port>/` with its `redis.conf`, `nodes.conf` and `redis.log`
    /// (no persistence: `save ""`, `appendonly no`). Returns once every node reports
    /// `cluster_state:ok`, sees every other node with the expected roles and no failure
    /// flags, and every replica reports `master_link_status:up`; fails with what was not
    /// ready, and on which port, after 30 s. Also fails at once when a port or its cluster
    /// bus port (`port + 10000`) is already taken, or with fewer than 3 masters (Redis
    /// Cluster's minimum).
    pub fn start(
        dir: &Path,
        base_port: u16,
        masters: usize,
        replicas_per_master: usize,
        node_timeout_ms: u64,
    ) -> Result<RedisCluster, String> {
        let deadline = Instant::now() + START_LIMIT;
        if masters < 3 {
            return Err(format!(
                "Redis Cluster needs at least 3 masters, {masters} asked"
            ));
        }
        let total = masters * (1 + replicas_per_master);
        let last = base_port as usize + total - 1 + BUS_OFFSET as usize;
        if base_port == 0 || last > u16::MAX as usize {
            return Err(format!(
                "{total} nodes from port {base_port} need bus ports up to {last}, past 65535"
            ));
        }
        let ports: Vec<u16> = (0..total as u16).map(|i| base_port + i).collect();
        for &port in &ports {
            for (p, what) in [(port, "client"), (port + BUS_OFFSET, "cluster bus")] {
                TcpListener::bind(("127.0.0.1", p)).map_err(|e| {
                    format!("port 127.0.0.1:{p} ({what} port of node {port}) is not free: {e}")
                })?;
            }
        }
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", dir.display()))?;

        // Built before the first spawn so that every early return kills what was started.
        let mut cluster = RedisCluster {
            dir: dir.clone(),
            nodes: Vec::with_capacity(total),
        };
        for &port in &ports {
            let node = spawn_node(&dir, port, node_timeout_ms)?;
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ping(i, deadline)?;
        }

        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", &replicas_per_master.to_string()]);
        create.arg("--cluster-yes");
        let log = dir.join("cluster-create.log");
        let left = deadline.saturating_duration_since(Instant::now());
        let (status, output) = run_bounded(&mut create, &log, left)
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !status.success() || output.contains("[ERR]") {
            return Err(format!(
                "redis-cli --cluster create on ports {}..={} failed ({status}):\n{}",
                ports[0],
                ports[total - 1],
                tail(&output, 15)
            ));
        }

        cluster.wait_healthy(masters, masters * replicas_per_master, deadline)?;
        Ok(cluster)
    }

    /// Starts `masters` nodes on ports `base_port..` with no replicas and joins them by
    /// hand, as `redis-cli --cluster create` would but without its 3-master minimum:
    /// each node gets `CLUSTER SET-CONFIG-EPOCH <i + 1>` and `CLUSTER ADDSLOTSRANGE` of
    /// an even share of the 16384 slots in port order (node `i` serves
    /// `16384 * i / masters ..= 16384 * (i + 1) / masters - 1`), then the first node
    /// `CLUSTER MEET`s the others. Returns once [`start`](Self::start)'s health check
    /// passes on every node; the same port, directory and 30 s rules as `start`.
    pub fn start_masters(
        dir: &Path,
        base_port: u16,
        masters: usize,
        node_timeout_ms: u64,
    ) -> Result<RedisCluster, String> {
        let deadline = Instant::now() + START_LIMIT;
        if masters == 0 || masters > SLOTS as usize {
            return Err(format!("{masters} masters asked"));
        }
        let last = base_port as usize + masters - 1 + BUS_OFFSET as usize;
        if base_port == 0 || last > u16::MAX as usize {
            return Err(format!(
                "{masters} nodes from port {base_port} need bus ports up to {last}, past 65535"
            ));
        }
        let ports: Vec<u16> = (0..masters as u16).map(|i| base_port + i).collect();
        for &port in &ports {
            for (p, what) in [(port, "client"), (port + BUS_OFFSET, "cluster bus")] {
                TcpListener::bind(("127.0.0.1", p)).map_err(|e| {
                    format!("port 127.0.0.1:{p} ({what} port of node {port}) is not free: {e}")
                })?;
            }
        }
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", dir.display()))?;
        let mut cluster = RedisCluster {
            dir: dir.clone(),
            nodes: Vec::with_capacity(masters),
        };
        for &port in &ports {
            let node = spawn_node(&dir, port, node_timeout_ms)?;
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ping(i, deadline)?;
        }
        let ok = |port: u16, args: &[&[u8]]| -> Result<(), String> {
            let what = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
            match Conn::connect(port)?.call(args) {
                Ok(Reply::Simple(s)) if s == "OK" => Ok(()),
                other => Err(format!("{what} on port {port} answered {other:?}")),
            }
        };
        for (i, &port) in ports.iter().enumerate() {
            let lo = SLOTS as usize * i / masters;
            let hi = SLOTS as usize * (i + 1) / masters - 1;
            let epoch = (i + 1).to_string();
            ok(port, &[b"CLUSTER", b"SET-CONFIG-EPOCH", epoch.as_bytes()])?;
            let (lo, hi) = (lo.to_string(), hi.to_string());
            ok(
                port,
                &[b"CLUSTER", b"ADDSLOTSRANGE", lo.as_bytes(), hi.as_bytes()],
            )?;
        }
        for &port in &ports[1..] {
            let p = port.to_string();
            ok(ports[0], &[b"CLUSTER", b"MEET", b"127.0.0.1", p.as_bytes()])?;
        }
        cluster.wait_healthy(masters, 0, deadline)?;
        Ok(cluster)
    }

    /// The node id (`CLUSTER MYID`, 40 hex characters) of the node on `port`.
    pub fn node_id(&self, port: u16) -> Result<String, String> {
        bulk_text(port, &[b"CLUSTER", b"MYID"])
    }

    /// Every node's port, in start order, killed nodes included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the masters that serve slots, in ascending order, as `CLUSTER NODES`
    /// on the first node that answers has them (nodes flagged `fail` and nodes killed
    /// through [`kill`](Self::kill) are left out). Empty when no live node answers.
    ///
    /// Right after a failover the node asked may not know the new master yet, for as
    /// long as the cluster's gossip takes to reach it.
    pub fn master_ports(&self) -> Vec<u16> {
        let Ok(view) = self.cluster_nodes() else {
            return Vec::new();
        };
        let mut ports: Vec<u16> = view
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty() && !n.failed())
            .map(|n| n.port)
            .filter(|&p| self.is_alive(p))
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The lowest port among the live replicas of the master on `master_port`, as
    /// `CLUSTER NODES` on the first node that answers has them; `None` when it has none
    /// (or no live node answers).
    pub fn replica_of(&self, master_port: u16) -> Option<u16> {
        let view = self.cluster_nodes().ok()?;
        let replicas = replicas_in(&view, master_port).ok()?;
        replicas.into_iter().find(|&p| self.is_alive(p))
    }

    /// SIGKILLs the node on `port` and waits for the process to end. Killing a node
    /// already killed does nothing; a port that is not one of the cluster's is an error.
    pub fn kill(&mut self, port: u16) -> Result<(), String> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .ok_or_else(|| format!("no node of this cluster on port {port}"))?;
        if let Some(mut child) = node.child.take() {
            // An error here means the process had already exited; wait() reaps it anyway.
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| format!("wait for redis-server on port {port}: {e}"))?;
        }
        Ok(())
    }

    /// SIGKILLs the master on `master_port` and returns how long after the kill one of
    /// its replicas first answered `OK` to a `SET`, within `timeout`.
    ///
    /// Before the kill it picks a key of a slot that master serves (trying `failover:0`,
    /// `failover:1`, ... with `CLUSTER KEYSLOT`), checks the master accepts a `SET` of it
    /// and that each live replica refuses one (`MOVED`). After the kill it sends the
    /// `SET` every 10 ms to each replica directly, on a persistent connection (no cluster
    /// redirection), until one answers `OK`: a replica answers `MOVED` until it is
    /// promoted. The figure is thus failure detection + election + the polling interval
    /// (at most 10 ms more than the true promotion time, plus a loopback round trip).
    pub fn measure_failover(
        &mut self,
        master_port: u16,
        timeout: Duration,
    ) -> Result<Duration, String> {
        if !self.is_alive(master_port) {
            return Err(format!(
                "no live node of this cluster on port {master_port}"
            ));
        }
        let view = self.cluster_nodes()?;
        let master = view
            .iter()
            .find(|n| n.port == master_port)
            .ok_or_else(|| format!("CLUSTER NODES does not list port {master_port}"))?;
        if !master.is_master() || master.slots.is_empty() {
            return Err(format!(
                "port {master_port} is not a master serving slots (flags {})",
                master.flags.join(",")
            ));
        }
        let replicas: Vec<u16> = replicas_in(&view, master_port)?
            .into_iter()
            .filter(|&p| self.is_alive(p))
            .collect();
        if replicas.is_empty() {
            return Err(format!(
                "the master on port {master_port} has no live replica"
            ));
        }

        let mut on_master = Conn::connect(master_port)?;
        let key = (0..100_000)
            .map(|n| format!("failover:{n}"))
            .find_map(
                |key| match on_master.call(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()]) {
                    Ok(Reply::Integer(slot)) if master.serves(slot) => Some(Ok(key)),
                    Ok(Reply::Integer(_)) => None,
                    other => Some(Err(format!(
                        "CLUSTER KEYSLOT on port {master_port} answered {other:?}"
                    ))),
                },
            )
            .unwrap_or_else(|| Err(format!("no key found for a slot of port {master_port}")))?;
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), b"after-failover"];
        match on_master.call(&set) {
            Ok(Reply::Simple(s)) if s == "OK" => {}
            other => {
                return Err(format!(
                    "SET {key} on master port {master_port} answered {other:?}"
                ))
            }
        }
        let mut conns = Vec::with_capacity(replicas.len());
        for &port in &replicas {
            let mut c = Conn::connect(port)?;
            match c.call(&set) {
                Ok(Reply::Error(e)) if e.starts_with("MOVED") => {}
                other => {
                    return Err(format!(
                        "SET {key} on replica port {port} answered {other:?} before the kill, \
                         expected MOVED"
                    ))
                }
            }
            conns.push(Some(c));
        }
        drop(on_master);

        self.kill(master_port)?;
        let killed = Instant::now();
        let mut last: Vec<String> = vec![String::from("MOVED"); replicas.len()];
        loop {
            for (i, &port) in replicas.iter().enumerate() {
                let reply = match &mut conns[i] {
                    Some(c) => c.call(&set),
                    None => Conn::connect(port)
                        .map_err(io::Error::other)
                        .and_then(|mut c| {
                            let r = c.call(&set);
                            conns[i] = Some(c);
                            r
                        }),
                };
                match reply {
                    Ok(Reply::Simple(s)) if s == "OK" => return Ok(killed.elapsed()),
                    Ok(other) => last[i] = format!("{other:?}"),
                    Err(e) => {
                        // Reconnect on the next round: a half-read reply would desync.
                        conns[i] = None;
                        last[i] = format!("I/O error: {e}");
                    }
                }
            }
            if killed.elapsed() > timeout {
                let tried: Vec<String> = replicas
                    .iter()
                    .zip(&last)
                    .map(|(p, r)| format!("port {p}: {r}"))
                    .collect();
                return Err(format!(
                    "no replica of port {master_port} accepted a write within {timeout:?} of \
                     the kill; last replies: {}",
                    tried.join("; ")
                ));
            }
            std::thread::sleep(FAILOVER_POLL);
        }
    }

    /// Runs `redis-benchmark --cluster -h 127.0.0.1 -p <first master> -t <test>
    /// -n <requests> -c <clients> -P <pipeline> -q --csv` and returns its requests per
    /// second.
    ///
    /// `test` is one of redis-benchmark's test names, `"get"` or `"set"` here. No `-r`:
    /// as redis-benchmark does by default, each client reuses one key, with a hash tag of
    /// a slot of the master it talks to, and values are 3 bytes. redis-benchmark finds
    /// the masters itself (one thread per master) and skips a failed master without
    /// slots. Killed after 10 minutes. Its output is kept in `dir/benchmark-<test>.log`.
    ///
    /// Size `requests` so that a run lasts several seconds: in cluster mode
    /// redis-benchmark runs threads that notice the end of the run only on a 250 ms
    /// timer, so the time it divides by is rounded *up* to a multiple of 250 ms (seen
    /// with Redis 7.0: 1.001 s, 1.252 s, 2.002 s, ...). A 1 s run can thus read up to
    /// 20% low; a 10 s run at most 2.5%.
    pub fn benchmark(
        &self,
        test: &str,
        requests: u64,
        clients: u32,
        pipeline: u32,
    ) -> Result<f64, String> {
        if test.is_empty() || !test.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "one redis-benchmark test name expected, got {test:?}"
            ));
        }
        let port = *self
            .master_ports()
            .first()
            .ok_or("redis-benchmark: no live master to connect to")?;
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["--cluster", "-h", "127.0.0.1", "-p", &port.to_string()]);
        cmd.args(["-t", test, "-n", &requests.to_string()]);
        cmd.args(["-c", &clients.to_string(), "-P", &pipeline.to_string()]);
        cmd.args(["-q", "--csv"]);
        let log = self.dir.join(format!("benchmark-{test}.log"));
        let (status, output) = run_bounded(&mut cmd, &log, BENCHMARK_LIMIT)
            .map_err(|e| format!("redis-benchmark -t {test} on port {port}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "redis-benchmark -t {test} on port {port} failed ({status}):\n{}",
                tail(&output, 15)
            ));
        }
        parse_csv_rps(&output, test).ok_or_else(|| {
            format!(
                "redis-benchmark -t {test} on port {port}: no requests-per-second row for \
                 {test} in its output:\n{}",
                tail(&output, 15)
            )
        })
    }

    /// Whether the node on `port` is one of ours and not killed through [`Self::kill`].
    /// (A node that died by itself is seen as `fail` by the others' `CLUSTER NODES`.)
    fn is_alive(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|n| n.port == port && n.child.is_some())
    }

    /// `CLUSTER NODES` from the first live node that answers it.
    fn cluster_nodes(&self) -> Result<Vec<NodeLine>, String> {
        let mut errors = Vec::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let port = node.port;
            match bulk_text(port, &[b"CLUSTER", b"NODES"]) {
                Ok(text) => {
                    return parse_cluster_nodes(&text).map_err(|e| format!("port {port}: {e}"))
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Err("CLUSTER NODES: no node of the cluster is alive".into())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Waits until node `i` answers PING; fails if it exits or the deadline passes.
    fn wait_ping(&mut self, i: usize, deadline: Instant) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let port = node.port;
        loop {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "redis-server on port {port} exited ({status}) before answering PING; \
                         its log:\n{}",
                        node.log_tail()
                    ));
                }
            }
            let last = match Conn::connect(port).and_then(|mut c| {
                c.call(&[b"PING"])
                    .map_err(|e| format!("PING on port {port}: {e}"))
            }) {
                Ok(Reply::Simple(s)) if s == "PONG" => return Ok(()),
                Ok(other) => format!("PING on port {port} answered {other:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer PING within {START_LIMIT:?} \
                     ({last}); its log:\n{}",
                    node.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until [`Self::health`] finds nothing wrong, up to the deadline.
    fn wait_healthy(
        &mut self,
        masters: usize,
        replicas: usize,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            let problem = match self.health(masters, replicas) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "cluster not healthy within {START_LIMIT:?} of the start: {problem}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first thing found wrong with the cluster, or `Ok` when every node reports
    /// `cluster_state:ok`, lists every node with `masters` slot-serving masters and
    /// `replicas` replicas and no failure or handshake flags, and every replica has
    /// `master_link_status:up`.
    fn health(&mut self, masters: usize, replicas: usize) -> Result<(), String> {
        let total = masters + replicas;
        for i in 0..self.nodes.len() {
            let port = self.nodes[i].port;
            if !self.nodes[i].alive() {
                return Err(format!(
                    "redis-server on port {port} has exited; its log:\n{}",
                    self.nodes[i].log_tail()
                ));
            }
            let info = bulk_text(port, &[b"CLUSTER", b"INFO"])?;
            let state = resp::info_field(&info, "cluster_state");
            if state != Some("ok") {
                return Err(format!(
                    "port {port}: cluster_state:{}",
                    state.unwrap_or("?")
                ));
            }
            let view = parse_cluster_nodes(&bulk_text(port, &[b"CLUSTER", b"NODES"])?)
                .map_err(|e| format!("port {port}: {e}"))?;
            let seen_masters = view
                .iter()
                .filter(|n| n.is_master() && !n.slots.is_empty())
                .count();
            let seen_replicas = view.iter().filter(|n| n.is_replica()).count();
            if view.len() != total || seen_masters != masters || seen_replicas != replicas {
                return Err(format!(
                    "port {port} sees {} nodes, {seen_masters} masters with slots and \
                     {seen_replicas} replicas; expected {total}, {masters} and {replicas}",
                    view.len()
                ));
            }
            if let Some(n) = view.iter().find(|n| {
                n.failed()
                    || n.flags
                        .iter()
                        .any(|f| f == "handshake" || f == "noaddr" || f == "nofailover")
            }) {
                return Err(format!(
                    "port {port} sees port {} with flags {}",
                    n.port,
                    n.flags.join(",")
                ));
            }
            let repl = bulk_text(port, &[b"INFO", b"replication"])?;
            if resp::info_field(&repl, "role") == Some("slave") {
                let link = resp::info_field(&repl, "master_link_status");
                if link != Some("up") {
                    return Err(format!(
                        "replica on port {port}: master_link_status:{}",
                        link.unwrap_or("?")
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
    }
}

/// Writes `dir/<port>/redis.conf` and starts `redis-server` on it, its output going to
/// `dir/<port>/redis.log`.
fn spawn_node(dir: &Path, port: u16, node_timeout_ms: u64) -> Result<Node, String> {
    let node_dir = dir.join(port.to_string());
    fs::create_dir_all(&node_dir).map_err(|e| format!("create {}: {e}", node_dir.display()))?;
    // A nodes.conf left by an earlier run would make the node rejoin that old cluster.
    for stale in ["nodes.conf", "dump.rdb"] {
        let _ = fs::remove_file(node_dir.join(stale));
    }
    let quoted_dir = node_dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", node_dir.display()))?
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let conf = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode no\n\
         daemonize no\n\
         dir \"{quoted_dir}\"\n\
         logfile \"\"\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {node_timeout_ms}\n\
         appendonly no\n\
         save \"\"\n\
         # Start the replicas' first (diskless) sync at once instead of after 5 s: this\n\
         # shortens the start only, failover and throughput are not affected.\n\
         repl-diskless-sync-delay 0\n"
    );
    let conf_path = node_dir.join("redis.conf");
    fs::write(&conf_path, conf).map_err(|e| format!("write {}: {e}", conf_path.display()))?;
    let log_path = node_dir.join("redis.log");
    let log = File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("clone {}: {e}", log_path.display()))?;
    let child = Command::new("redis-server")
        .arg(&conf_path)
        .current_dir(&node_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("spawn redis-server for port {port}: {e} (see ensure_redis)"))?;
    Ok(Node {
        port,
        dir: node_dir,
        child: Some(child),
    })
}

/// Runs `cmd` with its stdout and stderr in the file `out`, killing it after `limit`;
/// returns its exit status and output.
fn run_bounded(
    cmd: &mut Command,
    out: &Path,
    limit: Duration,
) -> Result<(ExitStatus, String), String> {
    let file = File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let file_err = file
        .try_clone()
        .map_err(|e| format!("clone {}: {e}", out.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let output = fs::read_to_string(out).unwrap_or_default();
                return Err(format!(
                    "still running after {limit:?}, killed; its output:\n{}",
                    tail(&output, 15)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let output = fs::read_to_string(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    Ok((status, output))
}

/// A RESP connection to one node, with timeouts so that a stuck node cannot hang a step.
struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn connect(port: u16) -> Result<Conn, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let timeout = Duration::from_secs(1);
        let s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        let setup = |s: &TcpStream| -> io::Result<TcpStream> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            s.try_clone()
        };
        let reader = setup(&s).map_err(|e| format!("set up 127.0.0.1:{port}: {e}"))?;
        Ok(Conn {
            port,
            reader: BufReader::new(reader),
            writer: s,
        })
    }

    fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        resp::encode(&mut out, args);
        self.writer.write_all(&out)?;
        resp::read_reply(&mut self.reader)
    }
}

/// Sends one command on a fresh connection and returns its bulk-string reply as text.
fn bulk_text(port: u16, args: &[&[u8]]) -> Result<String, String> {
    let mut c = Conn::connect(port)?;
    let what = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
    match c.call(args) {
        Ok(Reply::Bulk(Some(b))) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(other) => Err(format!("{what} on port {} answered {other:?}", c.port)),
        Err(e) => Err(format!("{what} on port {}: {e}", c.port)),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The master's node id, for a replica.
    master_id: Option<String>,
    /// Inclusive slot ranges served (migrating/importing entries left out).
    slots: Vec<(i64, i64)>,
}

impl NodeLine {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    fn is_replica(&self) -> bool {
        self.flags.iter().any(|f| f == "slave")
    }

    /// Flagged `fail` or `fail?` (suspected) by the node that listed it.
    fn failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }

    fn serves(&self, slot: i64) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> ...`.
fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("bad CLUSTER NODES line {line:?}");
        if fields.len() < 8 {
            return Err(bad());
        }
        let addr = fields[1].split(['@', ',']).next().ok_or_else(bad)?;
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(bad)?;
        let mut slots = Vec::new();
        for s in fields[8..].iter().filter(|s| !s.starts_with('[')) {
            let range = match s.split_once('-') {
                Some((a, b)) => (a.parse(), b.parse()),
                None => (s.parse(), s.parse()),
            };
            match range {
                (Ok(a), Ok(b)) => slots.push((a, b)),
                _ => return Err(bad()),
            }
        }
        nodes.push(NodeLine {
            id: fields[0].to_string(),
            port,
            flags: fields[2].split(',').map(str::to_string).collect(),
            master_id: Some(fields[3]).filter(|m| *m != "-").map(str::to_string),
            slots,
        });
    }
    Ok(nodes)
}

/// The ports of the replicas of the node on `master_port` in `view`, ascending, those
/// flagged failed left out.
fn replicas_in(view: &[NodeLine], master_port: u16) -> Result<Vec<u16>, String> {
    let master = view
        .iter()
        .find(|n| n.port == master_port)
        .ok_or_else(|| format!("CLUSTER NODES does not list port {master_port}"))?;
    let mut ports: Vec<u16> = view
        .iter()
        .filter(|n| n.is_replica() && !n.failed() && n.master_id.as_ref() == Some(&master.id))
        .map(|n| n.port)
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// The requests per second of `test` in redis-benchmark's `--csv` output
/// (`"SET","81234.57",...`, after a `"test","rps",...` header).
fn parse_csv_rps(output: &str, test: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let mut fields = line.split(',').map(|f| f.trim().trim_matches('"'));
        let name = fields.next()?;
        if !name.eq_ignore_ascii_case(test) {
            return None;
        }
        fields.next()?.parse().ok()
    })
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
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 1426238316232 0 5 disconnected
";
        let view = parse_cluster_nodes(text).unwrap();
        assert_eq!(view.len(), 4);
        assert_eq!(view[0].port, 30004);
        assert!(view[0].is_replica());
        assert_eq!(
            view[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(view[1].slots, vec![(5461, 10922)]);
        assert_eq!(view[2].slots, vec![(0, 5460)]);
        assert!(view[2].serves(0) && view[2].serves(5460) && !view[2].serves(5461));
        assert!(view[3].failed() && view[3].slots.is_empty());
        assert_eq!(replicas_in(&view, 30001).unwrap(), vec![30004]);
        assert!(replicas_in(&view, 30002).unwrap().is_empty());
        assert!(parse_cluster_nodes("garbage line").is_err());
    }

    #[test]
    fn parses_benchmark_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                   \"SET\",\"81234.57\",\"0.350\",\"0.100\"\n";
        assert_eq!(parse_csv_rps(out, "set"), Some(81234.57));
        assert_eq!(parse_csv_rps(out, "get"), None);
    }

    #[test]
    fn tails_text() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
