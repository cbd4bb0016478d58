//! `larder-node`: one larder cluster node as a process.
//!
//! ```text
//! larder-node --config node.toml
//! ```
//!
//! Embeds a `ClusterCache<String, Vec<u8>>` configured from a TOML file (see
//! `docs/operations.md`, "larder-node configuration"): durable when the file names a
//! `data_dir`, memory-only otherwise. At start it MEETs its `seeds` (again, with
//! backoff, until it has joined a cluster), then, if `replica_of` is set and the node
//! is a fresh master without slots, replicates that master. It answers cache and
//! administrative requests (`larder-cli`) on its QUIC port, and, with `resp_listen`,
//! Redis clients (RESP2/RESP3 over TCP, or over TLS with `tls_cert_file`, redirected
//! between nodes as Redis Cluster does), with the users of `[[resp_users]]`.
//!
//! When ready it prints one line to stdout, `larder-node <id> listening on <addr>`;
//! logs go to stderr (`RUST_LOG` filters them; default `info`). It exits with 0 after
//! shutting the node down on SIGTERM, SIGINT or an administrative `Shutdown`; with 2
//! on a configuration error, 1 if the node cannot start.

/// jemalloc, as Redis allocates: fragmentation stays low under churn, and `INFO`'s
/// allocator figures describe the process.
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use larder::cluster::larder_cluster::proto::NodeFlags;
use larder::cluster::{ClusterCache, NodeId};
use larder::resp::{rustls, ClusterKeyspace, RespConfig, RespServer};
use larder::Cache;
use larder_cli::certs;
use larder_cli::config::{NodeConfig, ReplicaOf};
use tracing::{info, warn};

/// The node's cache type: string keys, byte values.
type Node = ClusterCache<String, Vec<u8>>;

/// How long an administrative `Shutdown` is given to reach its sender before the
/// node's endpoint closes.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

#[derive(Parser, Debug)]
#[command(
    name = "larder-node",
    version,
    about = "A larder cluster node: an embedded larder cache on the QUIC mesh, configured from a TOML file"
)]
struct Args {
    /// The configuration file (TOML; relative paths in it are resolved against its
    /// directory).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let config = match NodeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("larder-node: {e}");
            return ExitCode::from(2);
        }
    };
    // The TLS files are read before anything starts: a bad one is a configuration
    // error, named with its key.
    let tls = match config
        .resp_tls
        .as_ref()
        .map(|t| t.server_config(&config.path))
    {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => {
            eprintln!("larder-node: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Another subscriber cannot be installed already; ignore the error if it were.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Certs(#[from] certs::CertError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen for RESP clients on {addr}: {source}")]
    Resp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{}: cannot start the node: {source}", config.display())]
    Start {
        config: PathBuf,
        source: larder::cluster::StartError,
    },
}

async fn run(config: NodeConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Result<(), RunError> {
    // From here on SIGTERM and SIGINT are ours: one that arrives while the node
    // starts is acted on as soon as it has started.
    let mut signals = Signals::listen().map_err(RunError::Signals)?;
    let identity = certs::load_identity(&config.cert, &config.key)?;
    let ca = certs::load_ca(&config.ca)?;
    let id = identity.id();

    let mut builder = Cache::<String, Vec<u8>>::builder();
    if let Some(bytes) = config.maxmemory {
        builder = builder.max_memory(bytes);
    }
    if let Some(policy) = config.maxmemory_policy {
        builder = builder.eviction(policy);
    }
    let mut cluster = builder.cluster(config.cluster_config(identity, ca));
    if let Some(durability) = config.durability() {
        cluster = cluster.durability(durability);
    }
    let node: Node = cluster.start().await.map_err(|source| RunError::Start {
        config: config.path.clone(),
        source,
    })?;
    info!(
        node = %id,
        durable = config.data_dir.is_some(),
        "started from {}",
        config.path.display()
    );

    let joining = tokio::spawn(join(node.clone(), config.clone()));
    let resp = match config.resp_listen {
        Some(addr) => {
            let settings = RespConfig {
                requirepass: config.requirepass.clone(),
                users: config.resp_users.clone(),
                maxclients: config.maxclients,
                timeout: (config.timeout > 0).then(|| Duration::from_secs(config.timeout)),
                ..RespConfig::default()
            };
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|source| RunError::Resp { addr, source })?;
            let port = listener.local_addr().map_or(addr.port(), |a| a.port());
            let server = RespServer::new(ClusterKeyspace::new(node.clone(), port), settings);
            let over = if tls.is_some() { " over TLS" } else { "" };
            let server = match tls {
                Some(tls) => server.spawn_tls(listener, config.io_threads, tls),
                None => server.spawn(listener, config.io_threads),
            }
            .map_err(|source| RunError::Resp { addr, source })?;
            info!(
                node = %id,
                "RESP clients{over} on {} ({} event loops)",
                server.local_addr(),
                config.io_threads
            );
            Some(server)
        }
        None => None,
    };

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "larder-node {id} listening on {}", node.local_addr());
        let _ = out.flush();
    }

    let reason = signals.stop(&node).await;
    info!(node = %id, "stopping: {reason}");
    if reason == Stop::AdminRequest {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    }
    joining.abort();
    let _ = joining.await;
    if let Some(resp) = resp {
        // Joins the event-loop threads once they have closed their connections.
        tokio::task::block_in_place(|| resp.stop());
    }
    node.shutdown().await;
    // The last handle: the node's runtime stops, and the cache syncs its log when
    // its last reference goes.
    drop(node);
    info!(node = %id, "stopped");
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Terminate,
    Interrupt,
    AdminRequest,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Terminate => "SIGTERM",
            Stop::Interrupt => "SIGINT",
            Stop::AdminRequest => "administrative shutdown request",
        })
    }
}

/// The signals that stop the node, listened for from before the ready line on (a
/// signal sent right after it is not missed).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves when the node should stop.
    async fn stop(&mut self, node: &Node) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Stop::Terminate,
                _ = self.interrupt.recv() => Stop::Interrupt,
                () = node.shutdown_requested() => Stop::AdminRequest,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if let Err(e) = r {
                        warn!("cannot listen for Ctrl-C: {e}");
                        std::future::pending::<()>().await;
                    }
                    Stop::Interrupt
                }
                () = node.shutdown_requested() => Stop::AdminRequest,
            }
        }
    }
}

/// Whether the node knows another node that answered (it has joined a cluster).
fn joined(node: &Node) -> bool {
    let rt = node.routing();
    rt.nodes
        .iter()
        .any(|n| n.id != rt.me && !n.flags.contains(NodeFlags::HANDSHAKE))
}

/// The first address `host:port` resolves to.
async fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    match tokio::net::lookup_host(addr).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            warn!("cannot resolve {addr}: {e}");
            None
        }
    }
}

/// MEETs the seeds until the node has joined, then applies `replica_of`.
async fn join(node: Node, config: NodeConfig) {
    let mut own: Vec<SocketAddr> = vec![node.local_addr(), config.listen];
    for a in config.own_addresses() {
        own.extend(resolve(&a).await);
    }
    // A MEET to a node that is not up takes the handshake timeout (seconds) to fail:
    // retry no faster than that, so attempts do not pile up.
    let mut delay = Duration::from_secs(5);
    let mut attempt = 0u32;
    while !config.seeds.is_empty() && !joined(&node) {
        attempt += 1;
        for seed in &config.seeds {
            let Some(addr) = resolve(seed).await else {
                continue;
            };
            if own.contains(&addr) {
                continue;
            }
            match node.node().meet(addr).await {
                Ok(()) => {
                    if attempt == 1 {
                        info!("meeting seed {seed}");
                    }
                }
                Err(e) => warn!("cannot meet seed {seed}: {e}"),
            }
        }
        let deadline = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < deadline && !joined(&node) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if attempt % 3 == 0 && !joined(&node) {
            warn!(
                "not joined yet: none of the seeds ({}) answered",
                config.seeds.join(", ")
            );
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    if let Some(target) = &config.replica_of {
        follow(&node, target).await;
    }
}

/// Makes the node a replica of `target` once that master is known, unless the node
/// already replicates someone or serves slots (`replica_of` sets up a new node; the
/// cluster decides roles after that).
async fn follow(node: &Node, target: &ReplicaOf) {
    let mut attempt = 0u32;
    loop {
        let rt = node.routing();
        let me = rt.node(rt.me);
        if let Some(master) = me.and_then(|m| m.master) {
            match find(node, target).await {
                Some(id) if id == master => info!("replica of {master}"),
                _ => info!("already a replica of {master}; replica_of left alone"),
            }
            return;
        }
        if me.is_some_and(|m| m.slot_count > 0) {
            warn!("this node serves slots; replica_of left alone");
            return;
        }
        if let Some(id) = find(node, target).await {
            if id == rt.me {
                warn!("replica_of names this node itself; ignored");
                return;
            }
            match node.node().replicate(id).await {
                Ok(()) => {
                    info!("replicating {id}");
                    return;
                }
                Err(e) if attempt % 20 == 0 => warn!("cannot replicate {id} yet: {e}"),
                Err(_) => {}
            }
        } else if attempt > 0 && attempt % 20 == 0 {
            warn!("waiting for replica_of's master to be known: {target:?}");
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The id of `target`, if the node knows it (and has heard from it).
async fn find(node: &Node, target: &ReplicaOf) -> Option<NodeId> {
    let rt = node.routing();
    let known = |id: NodeId| {
        rt.node(id)
            .filter(|n| !n.flags.contains(NodeFlags::HANDSHAKE))
            .map(|n| n.id)
    };
    match target {
        ReplicaOf::Id(id) => known(*id),
        ReplicaOf::Addr(addr) => {
            let resolved = resolve(addr).await;
            rt.nodes
                .iter()
                .filter(|n| !n.flags.contains(NodeFlags::HANDSHAKE))
                .find(|n| {
                    n.addr == *addr
                        || resolved.is_some_and(|r| n.addr.parse::<SocketAddr>() == Ok(r))
                })
                .map(|n| n.id)
        }
    }
}
