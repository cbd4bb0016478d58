//! `larder-node` as a process: certificates made with `larder_cli::certs`, a config
//! file, the binary spawned; it is checked through the admin API (`Admin`) and the
//! cache's wire requests, and stopped by an administrative `Shutdown`, SIGTERM and
//! SIGINT (exit 0 each time). Bad configurations exit non-zero naming the field.
//! Every wait is bounded; a guard kills the children if a test fails.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larder::cluster::admin::Admin;
use larder::cluster::admin_wire::AdminRequest;
use larder::cluster::larder_cluster::proto::NodeFlags;
use larder::cluster::wire::{WireOp, WireRequest, WireResponse};
use larder::cluster::NodeId;
use larder::Codec;
use larder_cli::certs;

// Bounds on waits for conditions, for a loaded 2-core machine (a quiet one needs a
// fraction of each): they end as soon as the condition holds.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on each wait for a node or cluster state (`eventually`).
const CONVERGE: Duration = Duration::from_secs(120);
/// The admin client's limit on one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `larder-node`, killed (SIGKILL) when dropped unless it exited.
struct NodeProc {
    child: Child,
    id: NodeId,
    addr: SocketAddr,
    stderr: Captured,
}

impl NodeProc {
    /// Spawns `larder-node --config <config>` and waits for its ready line.
    fn start(config: &Path) -> NodeProc {
        let mut child = spawn(config);
        let stderr = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guard = Guard(Some(child));
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "no ready line within {READY_TIMEOUT:?} ({e}); stderr:\n{}",
                stderr.now()
            ),
        };
        // larder-node <id> listening on <addr>
        let w: Vec<&str> = line.split_whitespace().collect();
        assert!(
            w.len() == 5 && w[0] == "larder-node" && w[2] == "listening" && w[3] == "on",
            "unexpected ready line {line:?}"
        );
        let id = NodeId::from_hex(w[1]).expect("an id in the ready line");
        let addr = w[4].parse().expect("an address in the ready line");
        NodeProc {
            child: guard.0.take().unwrap(),
            id,
            addr,
            stderr,
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({sig})");
    }

    /// Waits for the process to exit (bounded); its status and whole stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child, &self.stderr);
        (status, self.stderr.all())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills a child not yet handed to a [`NodeProc`] (the ready wait failed).
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_larder-node"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn larder-node")
}

/// A child's stderr, read by a thread (which keeps the pipe drained).
struct Captured {
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Captured {
    /// What was read so far.
    fn now(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the process has exited (the pipe is closed).
    fn all(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.now()
    }
}

fn collect(mut stderr: impl Read + Send + 'static) -> Captured {
    let text = Arc::new(Mutex::new(String::new()));
    let t = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            t.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Captured {
        text,
        reader: Some(reader),
    }
}

fn wait_exit(child: &mut Child, stderr: &Captured) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "larder-node did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                stderr.now()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CA, node certificates `node1..=nodes`, and the test's own (`cli`).
fn make_certs(dir: &Path, nodes: usize) -> PathBuf {
    let certs_dir = dir.join("certs");
    certs::init(&certs_dir, "node test").unwrap();
    for n in 1..=nodes {
        certs::issue(&certs_dir, certs_dir.join(format!("node{n}"))).unwrap();
    }
    certs::issue_with_roles(
        &certs_dir,
        certs_dir.join("cli"),
        &[larder::cluster::larder_cluster::net::Role::Admin],
    )
    .unwrap();
    certs_dir
}

/// Writes `nodeN.toml` in `dir` (relative certificate paths) with `extra` lines.
fn write_config(dir: &Path, n: usize, extra: &str) -> PathBuf {
    let path = dir.join(format!("node{n}.toml"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\ncert = \"certs/node{n}.pem\"\nkey = \"certs/node{n}.key\"\n\
         ca = \"certs/ca.pem\"\nnode_timeout_ms = 1000\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn admin(certs_dir: &Path) -> Admin {
    let identity =
        certs::load_identity(&certs_dir.join("cli.pem"), &certs_dir.join("cli.key")).unwrap();
    let ca = certs::load_ca(&certs_dir.join("ca.pem")).unwrap();
    Admin::new(&identity, &ca, REQUEST_TIMEOUT).unwrap()
}

/// Polls `f` every 50 ms until it is true or `timeout` passed.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wire(admin: &Admin, addr: SocketAddr, op: WireOp) -> WireResponse {
    let req = WireRequest {
        flags: 0,
        ack_replicas: 0,
        ack_timeout_ms: 0,
        op,
    };
    let (_, bytes) = tokio::time::timeout(CONVERGE, admin.request_raw(addr, &req.encode()))
        .await
        .expect("request timed out")
        .expect("request");
    WireResponse::decode(&bytes).unwrap()
}

fn key(k: &str) -> Vec<u8> {
    k.to_string().encode().unwrap()
}

/// A durable node answers `nodes` and `info`, serves writes once it has slots,
/// exits 0 on an administrative `Shutdown`, and comes back from its data directory
/// with the same id, slots and data; SIGTERM then stops it with 0 too.
#[test]
fn node_serves_admin_and_stops_on_shutdown_request_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs_dir = make_certs(dir, 1);
    let config = write_config(
        dir,
        1,
        "data_dir = \"data/node1\"\nappendfsync = \"always\"\nmaxmemory = \"64mb\"\n\
         maxmemory_policy = \"allkeys-lfu\"\n",
    );
    let rt = runtime();

    let mut node = NodeProc::start(&config);
    let issued =
        certs::load_identity(&certs_dir.join("node1.pem"), &certs_dir.join("node1.key")).unwrap();
    assert_eq!(node.id, issued.id(), "the node's id is its certificate's");
    assert!(
        dir.join("data/node1/data").is_dir(),
        "the log lives in data_dir"
    );

    rt.block_on(async {
        let admin = admin(&certs_dir);
        let view = admin.nodes(node.addr).await.unwrap();
        assert_eq!(NodeId(view.me), node.id);
        assert_eq!(view.nodes.len(), 1, "a new node knows only itself");
        let me = &view.nodes[0];
        assert!(me.flags & NodeFlags::MYSELF.bits() != 0);
        assert!(me.flags & NodeFlags::MASTER.bits() != 0);
        assert!(me.slots.is_empty());

        let info = admin.info(node.addr).await.unwrap();
        assert!(info.contains("role:master"), "{info}");
        assert!(info.contains("maxmemory_policy:allkeys-lfu"), "{info}");

        // Give it every slot and write through the wire protocol.
        admin
            .ok(node.addr, &AdminRequest::AddSlots(vec![(0, 16383)]))
            .await
            .unwrap();
        eventually("the cluster state to be ok", CONVERGE, || async {
            admin.nodes(node.addr).await.is_ok_and(|v| v.cluster_ok)
        })
        .await;
        let set = WireOp::Set {
            key: key("greeting"),
            value: b"hello".to_vec().encode().unwrap(),
            expire_at_ms: None,
        };
        assert_eq!(wire(&admin, node.addr, set).await, WireResponse::Done);

        admin.ok(node.addr, &AdminRequest::Shutdown).await.unwrap();
        admin.close().await;
    });
    let (status, log) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("administrative shutdown"), "{log}");
    assert!(dir.join("data/node1/cluster.state").is_file());

    // Restarted from its data directory: same id, its slots, its data.
    let node = NodeProc::start(&config);
    assert_eq!(node.id, issued.id());
    rt.block_on(async {
        let admin = admin(&certs_dir);
        let view = admin.nodes(node.addr).await.unwrap();
        assert_eq!(view.nodes[0].slots, vec![(0, 16383)]);
        assert_eq!(view.keys, 1);
        eventually("the cluster state to be ok", CONVERGE, || async {
            admin.nodes(node.addr).await.is_ok_and(|v| v.cluster_ok)
        })
        .await;
        let got = wire(&admin, node.addr, WireOp::Get(key("greeting"))).await;
        let WireResponse::Value(Some(bytes)) = got else {
            panic!("the key did not survive the restart: {got:?}");
        };
        assert_eq!(Vec::<u8>::decode(&bytes).unwrap(), b"hello");
        admin.close().await;
    });
    let mut node = node;
    node.signal(libc::SIGTERM);
    let (status, log) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("SIGTERM"),
        "the log says why it stopped: {log}"
    );
}

/// A memory-only node stops with 0 on SIGINT.
#[test]
fn memory_only_node_exits_zero_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs_dir = make_certs(dir, 1);
    let config = write_config(dir, 1, "");
    let mut node = NodeProc::start(&config);
    let rt = runtime();
    rt.block_on(async {
        let admin = admin(&certs_dir);
        assert_eq!(NodeId(admin.nodes(node.addr).await.unwrap().me), node.id);
        admin.close().await;
    });
    node.signal(libc::SIGINT);
    let (status, log) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGINT"), "{log}");
    assert!(
        !dir.join("data").exists(),
        "nothing on disk without data_dir"
    );
}

/// A second node MEETs the first from its `seeds` and, with `replica_of` naming the
/// first by address, becomes its replica.
#[test]
fn seeds_join_and_replica_of_follows_the_master() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs_dir = make_certs(dir, 2);
    let master = NodeProc::start(&write_config(dir, 1, ""));
    let replica = NodeProc::start(&write_config(
        dir,
        2,
        &format!(
            "seeds = [\"{}\"]\nreplica_of = \"{}\"\n",
            master.addr, master.addr
        ),
    ));
    let rt = runtime();
    rt.block_on(async {
        let admin = admin(&certs_dir);
        let (m, r) = (master.id, replica.id);
        eventually(
            "the second node to replicate the first",
            CONVERGE,
            || async {
                let Ok(view) = admin.nodes(master.addr).await else {
                    return false;
                };
                view.nodes
                    .iter()
                    .any(|n| NodeId(n.id) == r && n.master == Some(m.0))
            },
        )
        .await;
        let view = admin.nodes(replica.addr).await.unwrap();
        let me = view.nodes.iter().find(|n| NodeId(n.id) == r).unwrap();
        assert!(me.flags & NodeFlags::REPLICA.bits() != 0, "{me:?}");
        assert_eq!(me.master, Some(m.0));
        for p in [&master, &replica] {
            admin.ok(p.addr, &AdminRequest::Shutdown).await.unwrap();
        }
        admin.close().await;
    });
    for mut p in [master, replica] {
        let (status, log) = p.wait_exit();
        assert_eq!(status.code(), Some(0), "{log}");
    }
}

/// Runs larder-node on `text` and returns its exit status and stderr.
fn run_bad(dir: &Path, text: &str) -> (ExitStatus, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = spawn(&path);
    let mut stderr = collect(child.stderr.take().unwrap());
    let mut guard = Guard(Some(child));
    let status = wait_exit(guard.0.as_mut().unwrap(), &stderr);
    (status, stderr.all())
}

/// A node that cannot start (its UDP port taken, a key that is not its
/// certificate's) exits 1 with the reason, not with a panic (101).
#[test]
fn node_that_cannot_start_exits_one_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, 2);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, stderr) = run_bad(
        dir,
        &format!(
            "listen = \"{addr}\"\ncert = \"certs/node1.pem\"\nkey = \"certs/node1.key\"\n\
             ca = \"certs/ca.pem\"\n"
        ),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("cannot start the node"), "{stderr}");
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("in use"),
        "{stderr}"
    );
    drop(taken);

    let (status, stderr) = run_bad(
        dir,
        "listen = \"127.0.0.1:0\"\ncert = \"certs/node1.pem\"\nkey = \"certs/node2.key\"\n\
         ca = \"certs/ca.pem\"\n",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("private key does not belong to the certificate"),
        "{stderr}"
    );
}

/// A node given its own certificate as the `ca` (it could never join anything)
/// refuses to start: exit 1, naming the file.
#[test]
fn node_refuses_a_ca_file_that_is_not_a_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, 1);
    let (status, stderr) = run_bad(
        dir,
        "listen = \"127.0.0.1:0\"\ncert = \"certs/node1.pem\"\nkey = \"certs/node1.key\"\n\
         ca = \"certs/node1.pem\"\n",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node1.pem") && stderr.contains("not a CA certificate"),
        "{stderr}"
    );
}

/// Invalid configurations: non-zero exit, a message naming the file and the field.
#[test]
fn bad_config_exits_nonzero_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir, 1);
    let good = "listen = \"127.0.0.1:0\"\ncert = \"certs/node1.pem\"\nkey = \"certs/node1.key\"\n\
                ca = \"certs/ca.pem\"\n";
    for (extra, field) in [
        ("maxmemory = \"lots\"\n", "maxmemory"),
        ("maxmemroy = \"1gb\"\n", "maxmemroy"),
        ("appendfsync = \"sometimes\"\n", "appendfsync"),
        ("node_timeout_ms = \"fast\"\n", "node_timeout_ms"),
    ] {
        let (status, stderr) = run_bad(dir, &format!("{good}{extra}"));
        assert_eq!(status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains("bad.toml"), "{extra}: {stderr}");
        assert!(stderr.contains(&format!("`{field}`")), "{extra}: {stderr}");
    }
    // A missing required field.
    let (status, stderr) = run_bad(dir, "listen = \"127.0.0.1:0\"\n");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`cert`"), "{stderr}");
    // A certificate that is not there: the node cannot start (1), naming the file.
    let (status, stderr) = run_bad(dir, &good.replace("certs/node1.pem", "certs/nope.pem"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nope.pem"), "{stderr}");
    // A missing config file.
    let (status, stderr) = {
        let mut child = Guard(Some(spawn(&dir.join("absent.toml"))));
        let c = child.0.as_mut().unwrap();
        let mut stderr = collect(c.stderr.take().unwrap());
        (wait_exit(c, &stderr), stderr.all())
    };
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

/// `certs revoke` retires a tool's certificate: a node that names the revocation
/// list in its configuration closes the tool's connection once the list changes and
/// refuses it from then on, while another tool is still served. A client-role
/// certificate reads but cannot shut the node down.
#[test]
fn a_revoked_tool_certificate_can_no_longer_reach_the_node() {
    use larder::cluster::admin::AdminError;
    use larder::cluster::larder_cluster::net::Role;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs_dir = make_certs(dir, 1);
    certs::issue_with_roles(&certs_dir, certs_dir.join("ro"), &[Role::Client]).unwrap();
    // A list that revokes nothing yet, in place from the start.
    let (list, n) = certs::revoke(&certs_dir, &[]).unwrap();
    assert_eq!((list.clone(), n), (certs_dir.join(certs::REVOKED), 0));
    let config = write_config(dir, 1, "revocation_list = \"certs/revoked.crl\"\n");
    let rt = runtime();
    let mut node = NodeProc::start(&config);
    rt.block_on(async {
        let admin = admin(&certs_dir);
        let ro = {
            let identity =
                certs::load_identity(&certs_dir.join("ro.pem"), &certs_dir.join("ro.key")).unwrap();
            let ca = certs::load_ca(&certs_dir.join("ca.pem")).unwrap();
            Admin::new(&identity, &ca, Duration::from_secs(5)).unwrap()
        };
        ro.nodes(node.addr).await.unwrap();
        match ro.ok(node.addr, &AdminRequest::Shutdown).await {
            Err(AdminError::Refused(e)) => assert!(e.starts_with("NOPERM"), "{e}"),
            other => panic!("Shutdown from a client certificate: {other:?}"),
        }

        // Revoke the read-only tool; the node notices the file changed.
        let (_, n) = certs::revoke(&certs_dir, &[&certs_dir.join("ro.pem")]).unwrap();
        assert_eq!(n, 1);
        eventually(
            "the revoked tool to be refused",
            Duration::from_secs(30),
            || async { ro.nodes(node.addr).await.is_err() },
        )
        .await;
        // Revoking it again changes nothing; the admin tool is still served.
        let (_, n) = certs::revoke(&certs_dir, &[&certs_dir.join("ro.pem")]).unwrap();
        assert_eq!(n, 1);
        admin.nodes(node.addr).await.unwrap();
        assert!(ro.nodes(node.addr).await.is_err());
        admin.ok(node.addr, &AdminRequest::Shutdown).await.unwrap();
        admin.close().await;
    });
    let (status, log) = node.wait_exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("revoked"), "{log}");
}

/// Two nodes given one `data_dir`: the second exits non-zero naming the first's pid,
/// and the first keeps serving (its data directory is locked for as long as it runs).
#[test]
fn second_node_on_one_data_dir_exits_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs_dir = make_certs(dir, 2);
    let first = write_config(dir, 1, "data_dir = \"data/shared\"\n");
    let second = write_config(dir, 2, "data_dir = \"data/shared\"\n");
    let node = NodeProc::start(&first);

    let mut child = spawn(&second);
    let mut stderr = collect(child.stderr.take().unwrap());
    let mut guard = Guard(Some(child));
    let status = wait_exit(guard.0.as_mut().unwrap(), &stderr);
    let log = stderr.all();
    assert_ne!(status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("already open by process {}", node.child.id())),
        "the error names the holder: {log}"
    );

    let rt = runtime();
    rt.block_on(async {
        let admin = admin(&certs_dir);
        assert_eq!(NodeId(admin.nodes(node.addr).await.unwrap().me), node.id);
        admin.close().await;
    });
}
