//! Test harness: `larder-node` child processes with certificates from a temporary
//! CA, the `larder-cli` binary, and a client writing and reading keys.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_cli::certs;
use larder_cli::ops::{self, Admin, NodeId};

/// How long a node may take to print that it listens (a second on a quiet machine;
/// the bound is for a loaded one).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The admin client's limit on one request: a live node on a loaded machine must
/// answer within it (a dead one costs it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a write is retried while refused (a node starved past its write lease).
const WRITE_RETRY: Duration = Duration::from_secs(120);

/// Process scenarios running at once: each starts 3 to 5 debug-build nodes, and more
/// than two clusters on a 2-core machine starve nodes past their failure detection.
const CONCURRENT_SCENARIOS: usize = 2;

static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A scenario's turn to run; the next waiting one starts when it is dropped.
pub struct Turn(());

impl Drop for Turn {
    fn drop(&mut self) {
        let mut n = RUNNING.0.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        RUNNING.1.notify_one();
    }
}

/// Waits until fewer than [`CONCURRENT_SCENARIOS`] scenarios run, then takes a turn.
pub async fn take_turn() -> Turn {
    tokio::task::spawn_blocking(|| {
        let mut n = RUNNING.0.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= CONCURRENT_SCENARIOS {
            n = RUNNING.1.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Turn(())
    })
    .await
    .unwrap()
}

/// A temporary directory with a CA and the tool's certificate.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cli_cert: PathBuf,
    pub cli_key: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = certs::init(dir.path(), "larder-cli tests").expect("a CA");
        certs::issue_with_roles(
            dir.path(),
            dir.path().join("cli"),
            &[larder::cluster::larder_cluster::net::Role::Admin],
        )
        .expect("the tool's certificate");
        Env {
            ca,
            cli_cert: dir.path().join("cli.pem"),
            cli_key: dir.path().join("cli.key"),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An admin client of the tests' CA.
    pub fn admin(&self) -> Arc<Admin> {
        let identity = certs::load_identity(&self.cli_cert, &self.cli_key).unwrap();
        let ca = certs::load_ca(&self.ca).unwrap();
        Arc::new(Admin::new(&identity, &ca, REQUEST_TIMEOUT).unwrap())
    }

    /// Runs `larder-cli` with the tests' certificates (on a blocking thread).
    pub async fn cli(&self, args: &[&str]) -> Cli {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder-cli"));
        cmd.arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cli_cert)
            .arg("--key")
            .arg(&self.cli_key)
            .args(args)
            .stdin(Stdio::null());
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run larder-cli"))
            .await
            .unwrap();
        let cli = Cli::from(out);
        eprintln!(
            "larder-cli {} -> {:?} in {:.1} s",
            args.join(" "),
            cli.code,
            started.elapsed().as_secs_f64()
        );
        cli
    }

    /// Starts `larder-cli` without waiting for it (killed if dropped still running).
    pub fn spawn_cli(&self, args: &[&str]) -> CliChild {
        let child = Command::new(env!("CARGO_BIN_EXE_larder-cli"))
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cli_cert)
            .arg("--key")
            .arg(&self.cli_key)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start larder-cli");
        CliChild(Some(child))
    }
}

/// A running `larder-cli`, killed when dropped (a failing test leaves none behind).
pub struct CliChild(Option<Child>);

impl CliChild {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for it to exit (on a blocking thread) and returns its output.
    pub async fn output(mut self) -> Cli {
        let c = self.0.take().expect("running");
        let out = tokio::task::spawn_blocking(move || c.wait_with_output().unwrap())
            .await
            .unwrap();
        Cli::from(out)
    }
}

impl Drop for CliChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A finished `larder-cli` run.
pub struct Cli {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn from(out: Output) -> Cli {
        Cli {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing the output if it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Cli {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A free UDP port on 127.0.0.1 (bound and released: the node binds it next).
pub fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Options of a test node.
#[derive(Clone, Copy)]
pub struct NodeOpts {
    /// A data directory with `appendfsync always`.
    pub durable: bool,
    pub node_timeout_ms: u64,
    /// A RESP listener on TCP at the mesh's (UDP) port number.
    pub resp: bool,
}

impl Default for NodeOpts {
    fn default() -> Self {
        // Long enough that nodes starved on a busy 2-core CI machine are not
        // suspected failing; short enough for failovers to take a few seconds.
        NodeOpts {
            durable: false,
            node_timeout_ms: 4000,
            resp: false,
        }
    }
}

/// One `larder-node` child process; killed when dropped.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub id: NodeId,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Writes a configuration and certificate for a new node and starts it.
    pub fn start(env: &Env, name: &str, opts: NodeOpts) -> Node {
        Node::start_with(env, name, opts, "")
    }

    /// As [`Node::start`], with `extra` appended to the configuration (keys, then
    /// tables; paths in it are relative to the node's directory, `env.path()/name`).
    pub fn start_with(env: &Env, name: &str, opts: NodeOpts, extra: &str) -> Node {
        let dir = env.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let id = certs::issue(env.path(), dir.join("node")).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut toml = format!(
            "listen = \"{addr}\"\ncert = \"node.pem\"\nkey = \"node.key\"\nca = {:?}\n\
             node_timeout_ms = {}\n",
            env.ca.display().to_string(),
            opts.node_timeout_ms
        );
        if opts.durable {
            toml.push_str("data_dir = \"data\"\nappendfsync = \"always\"\n");
        }
        if opts.resp {
            toml.push_str(&format!("resp_listen = \"{addr}\"\n"));
        }
        toml.push_str(extra);
        let config = dir.join("node.toml");
        std::fs::write(&config, toml).unwrap();
        let mut n = Node {
            name: name.to_string(),
            addr,
            id,
            config,
            log: dir.join("node.log"),
            child: None,
        };
        n.spawn();
        n
    }

    /// Starts the process (again) and waits for its "listening" line.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_larder-node"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start larder-node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{} did not start within {START_TIMEOUT:?}; log:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
        };
        let expected = format!("larder-node {} listening on ", self.id);
        assert!(
            line.starts_with(&expected),
            "{}: unexpected first line {line:?}",
            self.name
        );
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit on its own (after a shutdown request).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit within {within:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn addr_s(&self) -> String {
        self.addr.to_string()
    }

    pub fn id_s(&self) -> String {
        self.id.to_string()
    }

    /// The node's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `n` nodes concurrently (each waits for its own "listening" line).
pub fn start_nodes(env: &Env, prefix: &str, n: usize, opts: NodeOpts) -> Vec<Node> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| s.spawn(move || Node::start(env, &format!("{prefix}{i}"), opts)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The value stored for key `k` in the tests.
pub fn value_of(k: &str) -> Vec<u8> {
    format!("value of {k}").into_bytes()
}

/// Writes `keys` (value [`value_of`]) through the nodes at `via`, round-robin, 32 at
/// a time, each retried while refused (a node that lost its write lease for a
/// moment).
pub async fn write_keys(admin: &Arc<Admin>, via: &[SocketAddr], keys: &[String]) {
    let mut set = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<(usize, String)>> = {
        let mut c: Vec<Vec<(usize, String)>> = vec![Vec::new(); 32];
        for (i, k) in keys.iter().enumerate() {
            c[i % 32].push((i, k.clone()));
        }
        c
    };
    for chunk in chunks {
        let admin = admin.clone();
        let via = via.to_vec();
        set.spawn(async move {
            for (i, k) in chunk {
                let to = via[i % via.len()];
                let start = Instant::now();
                loop {
                    match ops::set(&admin, to, &k, &value_of(&k)).await {
                        Ok(()) => break,
                        // A busy machine can starve a node past its write lease for a
                        // while: retry (bounded).
                        Err(e) if start.elapsed() < WRITE_RETRY => {
                            eprintln!("write {k} via {to}: {e} (retrying)");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("write {k} via {to}: {e}"),
                    }
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Reads every key through the nodes at `via` and asserts its value.
pub async fn assert_keys(admin: &Arc<Admin>, via: &[SocketAddr], keys: &[String]) {
    let mut set = tokio::task::JoinSet::new();
    let mut chunks: Vec<Vec<(usize, String)>> = vec![Vec::new(); 32];
    for (i, k) in keys.iter().enumerate() {
        chunks[i % 32].push((i, k.clone()));
    }
    for chunk in chunks {
        let admin = admin.clone();
        let via = via.to_vec();
        set.spawn(async move {
            for (i, k) in chunk {
                let from = via[i % via.len()];
                let got = ops::get(&admin, from, &k)
                    .await
                    .unwrap_or_else(|e| panic!("read {k} via {from}: {e}"));
                assert_eq!(got, Some(value_of(&k)), "key {k} via {from}");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Total keys held by the masters, from each one's own count.
pub async fn master_keys(admin: &Admin, addr: SocketAddr) -> u64 {
    ops::info(admin, addr)
        .await
        .unwrap()
        .iter()
        .map(|m| m.keys.expect("every master answers"))
        .sum()
}

/// `check` through the library, polled until healthy (or panics with the report).
pub async fn wait_healthy(admin: &Admin, addr: SocketAddr, within: Duration) {
    let start = Instant::now();
    loop {
        let r = ops::check(admin, addr).await.unwrap();
        if r.healthy() {
            return;
        }
        if start.elapsed() > within {
            panic!("not healthy within {within:?}:\n{}", r.render());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `redis-cli` with `args`, and `commands` on its stdin (one connection, one command a
/// line): its stdout.
pub fn redis_cli_stdin(args: &[std::ffi::OsString], commands: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run redis-cli");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
