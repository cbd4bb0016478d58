//! A cache that is one node of a mesh (cargo feature `cluster`): [`ClusterCache`].
//!
//! Keys live in 16384 hash slots (Redis Cluster's CRC16, with `{hash tags}`, see
//! [`KeySlot`]). Each master serves some slots; its replicas copy them. A
//! [`ClusterCache`] offers `Cache`'s operations, routed by slot:
//!
//! - a key of a slot this node serves is read and written in-process, with no network;
//! - other keys are forwarded to their owner over QUIC (mutual TLS under one cluster
//!   CA); `MOVED` and `ASK` answers are followed inside the library;
//! - operations on several keys need one slot, else [`ClusterError::CrossSlot`];
//! - reads may be served by a replica ([`ReadFrom::Replica`]).
//!
//! A master streams its writes to its replicas (partial resync from a backlog, full
//! sync from a snapshot). If a master fails, a replica is elected and promoted; writes
//! to its slots resume there. Writes are refused with a clear [`ClusterError`] when the
//! node may not take them: a replica, a master cut off from the majority, or one with
//! fewer good replicas than `min_replicas_to_write`. [`ClusterCache::wait`] and
//! [`WriteOptions::replicas`] wait for replicas to acknowledge writes.
//!
//! [`ClusterCache`]'s documentation shows a node started and used.

pub mod admin;
pub mod admin_wire;
mod data;
mod journal;
mod keyslot;
mod load;
pub mod wire;

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

pub use keyslot::KeySlot;
pub use larder_cluster;
pub use larder_cluster::net::certs::{ClusterCa, NodeIdentity};
pub use larder_cluster::net::store::StateStore;
pub use larder_cluster::net::{ClusterNode, Faults, Limits, NetError, Routing};
pub use larder_cluster::proto::{key_hash_slot, FailoverMode, NodeId, Slot, SlotSet};
pub use larder_cluster::repl::ReplConfig;

use larder_cluster::net::CertificateDer;
use larder_cluster::net::{NetConfig, PeerCert, ReplInfo, ReplSetup, Replication, Role};
use larder_cluster::proto::{Config as ProtoConfig, KeyPresence, NodeFlags, Route};

use self::data::CacheData;
use self::journal::{in_slot, ClusterJournal, Position, Shared, SlotFence, FENCED};
use self::wire::{ErrorKind, WireOp, WireRequest, WireResponse, WireTtl};
use crate::builder::CacheBuilder;
use crate::durable::{Codec, Durability, OpenError};
use crate::error::{Error, TxError};
use crate::events::Subscriber;
use crate::info::{ClusterInfo, Info, ReplicaLine, ReplicationInfo};
use crate::shard::Ttl;
use crate::txn::Transaction;
use crate::weigh::{DefaultWeigher, Weigher};
use crate::Cache;

/// Redirects followed for one operation before giving up.
const MAX_REDIRECTS: usize = 8;

/// How a cluster node is started. [`ClusterConfig::new`] fills in defaults.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The UDP address to bind.
    pub bind: SocketAddr,
    /// The address peers reach this node at (default: the bound address).
    pub advertise: Option<String>,
    /// This node's certificate and key; its node id is the certificate's.
    pub identity: NodeIdentity,
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// Where the node's cluster state (epochs, votes, slots) is kept.
    pub state: StateStore,
    /// `cluster-node-timeout`: silence after which a node is suspected failing.
    pub node_timeout: Duration,
    /// Replication settings: backlog size, `min_replicas_to_write`,
    /// `min_replicas_max_lag`, timeouts.
    pub replication: ReplConfig,
    /// How long a forwarded operation may take before it fails.
    pub request_timeout: Duration,
    /// Fault injection shared by the nodes of a test (default: nothing cut).
    pub faults: Faults,
    /// What one authenticated peer may hold of this node: connections, streams,
    /// buffered bytes, time (see [`larder_cluster::net::limits`]).
    pub limits: Limits,
    /// The cluster CA's revocation list file, watched and reloaded when it changes
    /// (see [`larder_cluster::net::revocation`]). Default: none.
    pub revocation_list: Option<std::path::PathBuf>,
    /// Whether certificates naming no role (made before roles existed) are accepted
    /// as node and administrator, with a warning. Default: true.
    pub allow_roleless: bool,
    /// `cluster-require-full-coverage`: while any slot is unserved the whole cluster
    /// is down (`CLUSTERDOWN`). With false, the covered slots stay served and only
    /// operations on unserved slots fail. Default: true.
    pub require_full_coverage: bool,
    /// `cluster-allow-reads-when-down`: while this node's cluster state is down, reads
    /// are still routed and served as if it were up (writes still fail with
    /// `CLUSTERDOWN`); a read of an unassigned slot still fails. Default: false.
    pub allow_reads_when_down: bool,
    /// `cluster-replica-validity-factor`: a replica whose master has been silent for
    /// more than `node_timeout * factor` + `repl-ping-replica-period` does not start
    /// an automatic failover (its data is too old). 0: always try. Default: 10.
    pub replica_validity_factor: u64,
    /// `cluster-replica-no-failover`: this node, as a replica, never starts an
    /// automatic failover (a manual [`ClusterNode::failover`] still works); siblings
    /// leave it out of their election ranks. Default: false.
    pub replica_no_failover: bool,
    /// `cluster-migration-barrier`: a replica moves to an orphaned master only if its
    /// own master keeps at least this many working replicas without it. Default: 1.
    pub migration_barrier: usize,
    /// `cluster-allow-replica-migration`: replicas may move to orphaned masters, and a
    /// master that hands over its last slot becomes a replica of the taker.
    /// Default: true.
    pub allow_replica_migration: bool,
    /// `replica-serve-stale-data`: with false, a replica whose link to its master is
    /// down (or not yet synchronised) refuses reads it would serve from its own copy
    /// (`ReadFrom::Replica`) with `MASTERDOWN`. Default: true.
    pub replica_serve_stale_data: bool,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("id", &self.identity.id())
            .field("node_timeout", &self.node_timeout)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// Defaults: node timeout 15 s (Redis's), replication timeout 10 s, backlog
    /// 16 MiB, no `min_replicas_to_write`, requests time out after 5 s.
    pub fn new(
        bind: SocketAddr,
        identity: NodeIdentity,
        ca: CertificateDer<'static>,
        state: StateStore,
    ) -> Self {
        let replication = ReplConfig {
            repl_timeout: 10_000,
            handshake_timeout: 1_000,
            backlog_size: 16 * 1024 * 1024,
            ..ReplConfig::default()
        };
        ClusterConfig {
            bind,
            advertise: None,
            identity,
            ca,
            state,
            node_timeout: Duration::from_secs(15),
            replication,
            request_timeout: Duration::from_secs(5),
            faults: Faults::default(),
            limits: Limits::default(),
            revocation_list: None,
            allow_roleless: true,
            require_full_coverage: true,
            allow_reads_when_down: false,
            replica_validity_factor: 10,
            replica_no_failover: false,
            migration_barrier: 1,
            allow_replica_migration: true,
            replica_serve_stale_data: true,
        }
    }

    /// Sets `cluster-node-timeout`.
    pub fn node_timeout(mut self, t: Duration) -> Self {
        self.node_timeout = t;
        self
    }

    /// `min-replicas-to-write` and `min-replicas-max-lag`: a master refuses writes
    /// unless `n` replicas acknowledged the stream within `max_lag`.
    pub fn min_replicas_to_write(mut self, n: usize, max_lag: Duration) -> Self {
        self.replication.min_replicas_to_write = n;
        self.replication.min_replicas_max_lag = max_lag.as_millis() as u64;
        self
    }

    /// `repl-backlog-size` in bytes. Besides covering reconnections, the backlog must
    /// hold every write made while a full sync's snapshot is walked and sent (Redis
    /// keeps those in the replica's output buffer): size it at least to the write rate
    /// (stream bytes per second) times the snapshot time, or a loaded master's new
    /// replicas resync forever.
    pub fn backlog_size(mut self, bytes: u64) -> Self {
        self.replication.backlog_size = bytes;
        self
    }

    /// The fault-injection switch (tests).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The keys of one operation hash to different slots (Redis's `CROSSSLOT`). Use a
    /// `{hash tag}` to keep related keys in one slot.
    #[error("CROSSSLOT keys in request don't hash to the same slot ({first} and {other})")]
    CrossSlot {
        /// The first key's slot.
        first: Slot,
        /// A slot that differs.
        other: Slot,
    },
    /// The owner refused the operation: a write to a replica, a master without
    /// quorum or replicas, out of memory, a failed log write... The text begins with
    /// Redis's error word (`READONLY`, `CLUSTERDOWN`, `NOREPLICAS`, `OOM`, `MISCONF`).
    #[error("{0}")]
    Refused(String),
    /// The slot has no reachable owner now (unassigned, or the cluster is down).
    #[error("CLUSTERDOWN {0}")]
    ClusterDown(String),
    /// The node that serves the slot could not be reached (a failover may be under
    /// way; retry).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The write was applied by its master, but fewer replicas than asked acknowledged
    /// it in time: it may be lost if the master fails now.
    #[error("write applied but acknowledged by {acked} of {needed} replicas")]
    NotAcknowledged {
        /// Replicas that acknowledged.
        acked: usize,
        /// Replicas asked for.
        needed: usize,
    },
    /// The slot kept moving: more than the redirect limit.
    #[error("too many redirects for slot {0}")]
    TooManyRedirects(Slot),
    /// A transaction closure can only run where its slot is served.
    #[error("slot {slot} is served by {owner:?}, not this node; run the transaction there")]
    NotLocal {
        /// The slot.
        slot: Slot,
        /// Its owner, if any.
        owner: Option<NodeId>,
    },
    /// A key or value could not be encoded or decoded, or a peer sent bad bytes.
    #[error("encoding: {0}")]
    Codec(String),
    /// The operation did not complete within the request timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl From<Error> for ClusterError {
    fn from(e: Error) -> Self {
        match e {
            Error::Cluster(msg) => match msg.strip_prefix("CLUSTERDOWN ") {
                Some(why) => ClusterError::ClusterDown(why.to_string()),
                None => ClusterError::Refused(msg),
            },
            e => ClusterError::Refused(e.to_string()),
        }
    }
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The node's data could not be recovered.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The transport could not start.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Where a read may be served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// The slot's master (always up to date).
    #[default]
    Master,
    /// This node if it replicates the slot's master, else a replica of it, else the
    /// master. A replica may lag behind (Redis's `READONLY` connections).
    Replica,
}

/// Options of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Return only once this many replicas acknowledged the write (0: do not wait).
    pub replicas: usize,
    /// How long to wait for them; past it the write fails with
    /// [`ClusterError::NotAcknowledged`] (it was applied by the master all the same).
    pub timeout: Duration,
}

impl WriteOptions {
    /// Wait for `replicas` acknowledgements, at most `timeout`.
    pub fn acked_by(replicas: usize, timeout: Duration) -> Self {
        WriteOptions { replicas, timeout }
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            replicas: 0,
            timeout: Duration::from_secs(1),
        }
    }
}

/// One operation of a [`ClusterCache::batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOp<K, V> {
    /// `get`.
    Get(K),
    /// `contains`.
    Contains(K),
    /// `ttl`.
    Ttl(K),
    /// `insert`, with a TTL or none.
    Insert(K, V, Option<Duration>),
    /// `remove`.
    Remove(K),
    /// `expire`.
    Expire(K, Duration),
    /// `persist`.
    Persist(K),
}

/// The answer to one [`ClusterOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterReply<V> {
    /// A `get`.
    Value(Option<V>),
    /// `contains`, `remove` (was present), `expire` (existed), `persist` (had a TTL).
    Bool(bool),
    /// A `ttl`.
    Ttl(Ttl),
    /// An `insert`.
    Done,
    /// This operation of a `batch` failed (the text says why); the others ran.
    Error(String),
}

/// Builds a [`ClusterCache`]: `Cache::builder()...cluster(config)`.
pub struct ClusterBuilder<K, V, W> {
    builder: CacheBuilder<K, V, W>,
    config: ClusterConfig,
    durability: Option<Durability>,
}

impl<K, V, W> CacheBuilder<K, V, W> {
    /// Makes the cache a node of a mesh; [`ClusterBuilder::start`] starts it.
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster(self, config: ClusterConfig) -> ClusterBuilder<K, V, W> {
        ClusterBuilder {
            builder: self,
            config,
            durability: None,
        }
    }
}

/// Slot owners learned from MOVED answers, valid for the routing table whose version
/// is the first field.
type Hints = (u64, HashMap<Slot, (NodeId, String)>);

struct Core<K, V, W> {
    /// Unique per node handle in this process: the key of the thread-local routing
    /// copies.
    uid: u64,
    /// Whether `hints` may hold anything (read on every operation).
    hinted: AtomicBool,
    cache: Cache<K, V, W>,
    node: ClusterNode,
    repl: Arc<Replication>,
    request_timeout: Duration,
    /// [`ClusterConfig::allow_reads_when_down`].
    allow_reads_when_down: bool,
    /// [`ClusterConfig::replica_serve_stale_data`].
    replica_serve_stale_data: bool,
    /// Owners learned from MOVED answers, until the routing table changes.
    hints: Mutex<Hints>,
    /// The journal's shared state (its slot fence).
    shared: Arc<Shared<K, V>>,
    /// The move lock of each slot whose keys this node is moving away: operations on
    /// the slot hold it shared from their routing decision to their end, the mover
    /// holds it exclusively while a batch of keys changes hands.
    moves: Mutex<HashMap<Slot, Arc<tokio::sync::RwLock<()>>>>,
    /// How many slots `moves` holds (read on every routed operation).
    moving: std::sync::atomic::AtomicUsize,
    /// Set by an administrative `Shutdown`.
    shutdown_requested: tokio::sync::watch::Sender<bool>,
    /// The node's runtime's handle (blocking wrappers run on it).
    handle: tokio::runtime::Handle,
    /// Owns the runtime the node runs on (stopped when the last handle goes).
    _runtime: NodeRuntime,
}

/// The node's own tokio runtime; stopped without waiting when the last handle goes
/// (dropping a runtime from async code would panic).
struct NodeRuntime(Option<tokio::runtime::Runtime>);

impl NodeRuntime {
    /// Takes ownership of `rt`; returns a handle to it too.
    fn new(rt: tokio::runtime::Runtime) -> (NodeRuntime, tokio::runtime::Handle) {
        let handle = rt.handle().clone();
        (NodeRuntime(Some(rt)), handle)
    }
}

impl Drop for NodeRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Source of [`Core::uid`].
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Per thread, the routing table last seen of each node handle used here, with its
    /// version: operations check the version with one atomic load instead of taking
    /// the table's lock and reference count (shared cache lines) every time.
    static ROUTES: RefCell<Vec<(u64, u64, Arc<Routing>)>> = const { RefCell::new(Vec::new()) };
}

impl<K, V, W> Core<K, V, W> {
    fn with_routing<R>(&self, f: impl FnOnce(&Routing) -> R) -> R {
        let version = self.node.routing_version();
        ROUTES.with(|cell| {
            let mut routes = cell.borrow_mut();
            let i = match routes.iter().position(|e| e.0 == self.uid) {
                Some(i) => {
                    if routes[i].1 != version {
                        routes[i] = (self.uid, version, self.node.routing());
                    }
                    i
                }
                None => {
                    if routes.len() >= 8 {
                        routes.remove(0);
                    }
                    routes.push((self.uid, version, self.node.routing()));
                    routes.len() - 1
                }
            };
            f(&routes[i].2)
        })
    }
}

/// A cache that is one node of a mesh. Cheap to clone (a shared handle).
///
/// Operations that may cross the network are `async` (tokio); on keys of slots this
/// node serves they complete without waiting. [`ClusterCache::blocking`] offers the
/// same operations for threads outside the runtime.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use larder::cluster::larder_cluster::net::store::MemoryStore;
/// use larder::cluster::{ClusterCa, ClusterCache, ClusterConfig, NodeId, SlotSet, StateStore};
/// use larder::Cache;
///
/// // One CA for the cluster; each node's certificate names its node id.
/// let ca = ClusterCa::generate("my cluster")?;
/// let id = NodeId::generate();
/// let config = ClusterConfig::new(
///     "0.0.0.0:7000".parse()?,
///     ca.issue(id)?,
///     ca.cert_der(),
///     StateStore::Memory(MemoryStore::new()), // a file in production
/// );
/// let node: ClusterCache<String, String> =
///     Cache::builder().max_memory(1 << 30).cluster(config).start().await?;
/// node.node().meet("10.0.0.2:7000".parse()?).await?; // CLUSTER MEET
/// node.node().add_slots(SlotSet::from_range(0..5461)).await?; // CLUSTER ADDSLOTS
///
/// // Any node serves any key: this one answers for its slots and forwards the rest.
/// node.insert("user:{42}:name".into(), "alice".into()).await?;
/// assert_eq!(node.get("user:{42}:name").await?.as_deref(), Some("alice"));
/// # Ok(())
/// # }
/// ```
pub struct ClusterCache<K, V, W = DefaultWeigher<K, V>> {
    core: Arc<Core<K, V, W>>,
}

impl<K, V, W> Clone for ClusterCache<K, V, W> {
    fn clone(&self) -> Self {
        ClusterCache {
            core: Arc::clone(&self.core),
        }
    }
}

/// What a cluster cache's keys and values must be.
pub trait ClusterKey: Hash + Eq + Clone + Send + Sync + 'static + Codec + KeySlot {}
impl<T: Hash + Eq + Clone + Send + Sync + 'static + Codec + KeySlot> ClusterKey for T {}

/// What a cluster cache's values must be.
pub trait ClusterValue: Clone + Send + Sync + 'static + Codec {}
impl<T: Clone + Send + Sync + 'static + Codec> ClusterValue for T {}

impl<K, V, W> ClusterBuilder<K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    /// Makes the node durable: its data and its place in the replication stream
    /// survive restarts (a restarted replica continues partially when its master's
    /// backlog still covers the gap).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Recovers the data (if durable), binds the endpoint, restores the node's cluster
    /// state and starts it. Must be called inside a tokio runtime.
    ///
    /// Fails with [`StartError`], never a panic, whatever the caller's runtime: a UDP
    /// port already in use is `StartError::Net(NetError::Io(e))` with
    /// `e.kind() == AddrInUse` and a message naming the address; a key that is not
    /// the certificate's is `StartError::Net(NetError::Certificate(_))`.
    pub async fn start(self) -> Result<ClusterCache<K, V, W>, StartError> {
        let mut pos = Position::default();
        let (cache, aof) = match self.durability {
            Some(d) => {
                let (cache, journal) = self
                    .builder
                    .durability(d)
                    .open_parts(&mut |r| pos.observe(r))?;
                // Data discarded on open (another schema) takes its replication
                // position with it: the node starts over as a fresh one.
                if journal
                    .info()
                    .is_some_and(|i| i.loading_discarded_schema.is_some())
                {
                    pos = Position::default();
                }
                (cache, Some(journal))
            }
            None => (self.builder.build(), None),
        };
        let resume = pos.replid.map(|id| (id, pos.offset));
        let shared = Arc::new(Shared {
            aof,
            repl: OnceLock::new(),
            pos: Mutex::new(pos),
            fence: SlotFence::new(),
        });
        cache.inner.set_journal(Box::new(ClusterJournal {
            shared: Arc::clone(&shared),
        }));
        let dataset = Arc::new(CacheData {
            cache: cache.clone(),
            shared: Arc::clone(&shared),
        });
        let c = self.config;
        let service = Arc::new(NodeService::<K, V, W> {
            core: OnceLock::new(),
        });
        let mut net = NetConfig::new(c.bind, c.identity, c.ca, c.state);
        net.advertise = c.advertise;
        net.cluster = ProtoConfig {
            require_full_coverage: c.require_full_coverage,
            replica_validity_factor: c.replica_validity_factor,
            replica_no_failover: c.replica_no_failover,
            migration_barrier: c.migration_barrier,
            allow_replica_migration: c.allow_replica_migration,
            ..ProtoConfig::with_node_timeout(c.node_timeout.as_millis() as u64)
        };
        net.faults = c.faults;
        net.limits = c.limits;
        net.revocation_list = c.revocation_list;
        net.allow_roleless = c.allow_roleless;
        // A connection to a peer that restarted is only noticed when it idles out (the
        // peer's new endpoint cannot reset it): keep that within the failure-detection
        // time, and redial about as fast.
        net.idle_timeout = c
            .node_timeout
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        net.backoff_max =
            (c.node_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
        net.replication = Some(ReplSetup {
            dataset,
            config: c.replication,
            resume,
        });
        net.service = Some(service.clone());
        // The node runs on a runtime of its own, so application tasks that block their
        // runtime cannot delay failure detection, elections or the renewal of the
        // write permission.
        //
        // It is owned by a `NodeRuntime` from the moment it exists: an early return
        // below (a port in use, a bad key) drops it here, in async context, where
        // dropping a plain `Runtime` would panic.
        let (runtime, handle) = NodeRuntime::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("larder-cluster")
                .enable_all()
                .build()
                .map_err(NetError::Io)?,
        );
        let node = handle
            .spawn(ClusterNode::start(net))
            .await
            .map_err(|e| NetError::Io(std::io::Error::other(e.to_string())))??;
        let repl = node
            .replication()
            .cloned()
            .ok_or_else(|| NetError::State("replication did not start".into()))?;
        // A fresh master starts a history: the log says where the data stands.
        if resume.is_none() {
            if let Some(ReplInfo::Master(info)) = repl.info() {
                let mut p = shared.lock();
                if p.replid.is_none() {
                    *p = Position {
                        replid: Some(info.replid),
                        offset: info.offset,
                    };
                    shared.log_position(&p).map_err(|e| {
                        OpenError::Files(format!("logging the replication position: {e}"))
                    })?;
                }
            }
        }
        let _ = shared.repl.set(Arc::clone(&repl));
        let core = Arc::new(Core {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            hinted: AtomicBool::new(false),
            cache,
            node,
            repl,
            request_timeout: c.request_timeout,
            allow_reads_when_down: c.allow_reads_when_down,
            replica_serve_stale_data: c.replica_serve_stale_data,
            hints: Mutex::new((0, HashMap::new())),
            shared,
            moves: Mutex::new(HashMap::new()),
            moving: std::sync::atomic::AtomicUsize::new(0),
            shutdown_requested: tokio::sync::watch::channel(false).0,
            handle,
            _runtime: runtime,
        });
        let _ = service.core.set(Arc::downgrade(&core));
        Ok(ClusterCache { core })
    }
}

/// Answers operations forwarded by peers.
struct NodeService<K, V, W> {
    core: OnceLock<Weak<Core<K, V, W>>>,
}

impl<K, V, W> larder_cluster::net::Service for NodeService<K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    fn call(
        &self,
        from: PeerCert,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>> {
        let core = self.core.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(core) = core else {
                return WireResponse::Error(ErrorKind::ClusterDown, "node is starting".into())
                    .encode();
            };
            let cc = ClusterCache { core };
            if request.first() == Some(&admin_wire::ADMIN_VERSION) {
                return match admin_wire::AdminRequest::decode(&request) {
                    Ok(req) => match admin::check_permitted(&from, &req) {
                        Ok(()) => cc.admin(Some(from.id), req).await.encode(),
                        Err(e) => admin_wire::AdminResponse::Error(e).encode(),
                    },
                    Err(e) => {
                        admin_wire::AdminResponse::Error(format!("ERR request: {e}")).encode()
                    }
                };
            }
            // Writes from nodes (forwarded) and administrators; reads from any role.
            let may_write = from.roles.any(&[Role::Node, Role::Admin]);
            cc.serve(&request, may_write, &from).await.encode()
        })
    }
}

/// Where an operation goes.
enum Dest {
    Local,
    Remote {
        node: NodeId,
        addr: String,
        asking: bool,
    },
    TryAgain,
    Down(String),
    /// This node refuses the operation (a replica read while its master link is down
    /// and `replica_serve_stale_data` is off).
    Refused(String),
}

/// A typed operation.
#[derive(Clone)]
enum Op<K, V> {
    Get(K),
    Contains(K),
    Ttl(K),
    Set(K, V, Option<u64>),
    Del(K),
    Unlink(K),
    Expire(K, u64),
    Persist(K),
    Batch(bool, Vec<Op<K, V>>),
}

/// A typed answer.
enum Reply<V> {
    Value(Option<V>),
    Bool(bool),
    Ttl(Ttl),
    Done,
    Batch(Vec<Reply<V>>),
    /// One failed operation inside a batch.
    Error(String),
}

impl<K, V> Op<K, V> {
    fn keys<'a>(&'a self, out: &mut Vec<&'a K>) {
        match self {
            Op::Get(k)
            | Op::Contains(k)
            | Op::Ttl(k)
            | Op::Set(k, _, _)
            | Op::Del(k)
            | Op::Unlink(k)
            | Op::Expire(k, _)
            | Op::Persist(k) => out.push(k),
            Op::Batch(_, ops) => ops.iter().for_each(|o| o.keys(out)),
        }
    }

    fn is_write(&self) -> bool {
        match self {
            Op::Get(_) | Op::Contains(_) | Op::Ttl(_) => false,
            Op::Batch(_, ops) => ops.iter().any(Op::is_write),
            _ => true,
        }
    }
}

fn codec(e: crate::CodecError) -> ClusterError {
    ClusterError::Codec(e.to_string())
}

fn to_wire<K: Codec, V: Codec>(op: &Op<K, V>) -> Result<WireOp, ClusterError> {
    Ok(match op {
        Op::Get(k) => WireOp::Get(k.encode().map_err(codec)?),
        Op::Contains(k) => WireOp::Contains(k.encode().map_err(codec)?),
        Op::Ttl(k) => WireOp::Ttl(k.encode().map_err(codec)?),
        Op::Set(k, v, at) => WireOp::Set {
            key: k.encode().map_err(codec)?,
            value: v.encode().map_err(codec)?,
            expire_at_ms: *at,
        },
        Op::Del(k) => WireOp::Del(k.encode().map_err(codec)?),
        Op::Unlink(k) => WireOp::Unlink(k.encode().map_err(codec)?),
        Op::Expire(k, at) => WireOp::Expire {
            key: k.encode().map_err(codec)?,
            at_ms: *at,
        },
        Op::Persist(k) => WireOp::Persist(k.encode().map_err(codec)?),
        Op::Batch(atomic, ops) => WireOp::Batch {
            atomic: *atomic,
            ops: ops.iter().map(to_wire).collect::<Result<_, _>>()?,
        },
    })
}

fn from_wire<K: Codec, V: Codec>(op: WireOp) -> Result<Op<K, V>, String> {
    let k = |b: Vec<u8>| K::decode(&b).map_err(|e| format!("key: {e}"));
    Ok(match op {
        WireOp::Get(b) => Op::Get(k(b)?),
        WireOp::Contains(b) => Op::Contains(k(b)?),
        WireOp::Ttl(b) => Op::Ttl(k(b)?),
        WireOp::Set {
            key,
            value,
            expire_at_ms,
        } => Op::Set(
            k(key)?,
            V::decode(&value).map_err(|e| format!("value: {e}"))?,
            expire_at_ms,
        ),
        WireOp::Del(b) => Op::Del(k(b)?),
        WireOp::Unlink(b) => Op::Unlink(k(b)?),
        WireOp::Expire { key, at_ms } => Op::Expire(k(key)?, at_ms),
        WireOp::Persist(b) => Op::Persist(k(b)?),
        WireOp::Batch { atomic, ops } => Op::Batch(
            atomic,
            ops.into_iter().map(from_wire).collect::<Result<_, _>>()?,
        ),
        WireOp::Len | WireOp::Wait { .. } => return Err("not a keyed operation".into()),
    })
}

fn reply_to_wire<V: Codec>(r: Reply<V>) -> WireResponse {
    match r {
        Reply::Value(None) => WireResponse::Value(None),
        Reply::Value(Some(v)) => match v.encode() {
            Ok(b) => WireResponse::Value(Some(b)),
            Err(e) => WireResponse::Error(ErrorKind::Refused, format!("encoding the value: {e}")),
        },
        Reply::Bool(b) => WireResponse::Bool(b),
        Reply::Ttl(Ttl::Missing) => WireResponse::Ttl(WireTtl::Missing),
        Reply::Ttl(Ttl::Persistent) => WireResponse::Ttl(WireTtl::Persistent),
        Reply::Ttl(Ttl::Remaining(ms)) => WireResponse::Ttl(WireTtl::Remaining(ms)),
        Reply::Done => WireResponse::Done,
        Reply::Batch(rs) => WireResponse::Batch(rs.into_iter().map(reply_to_wire).collect()),
        Reply::Error(t) => WireResponse::Error(ErrorKind::Refused, t),
    }
}

fn reply_from_wire<V: Codec>(r: WireResponse) -> Result<Reply<V>, ClusterError> {
    Ok(match r {
        WireResponse::Value(None) => Reply::Value(None),
        WireResponse::Value(Some(b)) => Reply::Value(Some(V::decode(&b).map_err(codec)?)),
        WireResponse::Bool(b) => Reply::Bool(b),
        WireResponse::Ttl(WireTtl::Missing) => Reply::Ttl(Ttl::Missing),
        WireResponse::Ttl(WireTtl::Persistent) => Reply::Ttl(Ttl::Persistent),
        WireResponse::Ttl(WireTtl::Remaining(ms)) => Reply::Ttl(Ttl::Remaining(ms)),
        WireResponse::Done => Reply::Done,
        WireResponse::Batch(rs) => Reply::Batch(
            rs.into_iter()
                .map(|r| match r {
                    // One operation's failure stays that operation's.
                    WireResponse::Error(_, t) => Ok(Reply::Error(t)),
                    WireResponse::NotAcked { acked, needed } => Ok(Reply::Error(format!(
                        "acknowledged by {acked} of {needed} replicas"
                    ))),
                    r => reply_from_wire(r),
                })
                .collect::<Result<_, _>>()?,
        ),
        WireResponse::Error(ErrorKind::ClusterDown, t) => return Err(ClusterError::ClusterDown(t)),
        WireResponse::Error(_, t) => return Err(ClusterError::Refused(t)),
        WireResponse::NotAcked { acked, needed } => {
            return Err(ClusterError::NotAcknowledged {
                acked: acked as usize,
                needed: needed as usize,
            })
        }
        other => return Err(ClusterError::Codec(format!("unexpected answer {other:?}"))),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<K, V, W> ClusterCache<K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    // ---- reads ----

    /// The value of `key`, from the slot's master. Like [`Cache::get`] it takes any
    /// borrowed form of the key (`&str` for `String` keys); one that must travel to
    /// another node is made owned first.
    pub async fn get<Q>(&self, key: &Q) -> Result<Option<V>, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        self.get_from(key, ReadFrom::Master).await
    }

    /// The value of `key`, read where `from` allows.
    pub async fn get_from<Q>(&self, key: &Q, from: ReadFrom) -> Result<Option<V>, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        if self.is_local(key.slot(), from, false) {
            return Ok(self.core.cache.get(key));
        }
        match self
            .call(Op::Get(key.to_owned()), from, WriteOptions::default())
            .await?
        {
            Reply::Value(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// Whether `key` exists (any borrowed form, as for [`ClusterCache::get`]).
    pub async fn contains<Q>(&self, key: &Q) -> Result<bool, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        if self.is_local(key.slot(), ReadFrom::Master, false) {
            return Ok(self.core.cache.contains(key));
        }
        self.bool(Op::Contains(key.to_owned()), WriteOptions::default())
            .await
    }

    /// The remaining time to live of `key`.
    pub async fn ttl(&self, key: &K) -> Result<Ttl, ClusterError> {
        match self
            .call(
                Op::Ttl(key.clone()),
                ReadFrom::Master,
                WriteOptions::default(),
            )
            .await?
        {
            Reply::Ttl(t) => Ok(t),
            _ => Err(unexpected()),
        }
    }

    // ---- writes ----

    /// Sets `key` to `value` (clearing any TTL).
    pub async fn insert(&self, key: K, value: V) -> Result<(), ClusterError> {
        self.insert_with(key, value, None, WriteOptions::default())
            .await
    }

    /// Sets `key` to `value`, expiring after `ttl`.
    pub async fn insert_with_ttl(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        self.insert_with(key, value, Some(ttl), WriteOptions::default())
            .await
    }

    /// Sets `key` to `value` with an optional TTL, returning as `opts` asks (for
    /// example only once a replica acknowledged it).
    pub async fn insert_with(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        opts: WriteOptions,
    ) -> Result<(), ClusterError> {
        let at = ttl.map(|t| now_ms().saturating_add(t.as_millis() as u64));
        let slot = key.slot();
        // While this node moves slots away, writes take the routed path, which can
        // retry a write refused by the slot fence.
        if !self.core.shared.fence.any() && self.is_local(slot, ReadFrom::Master, true) {
            in_slot(slot, || match at {
                None => self.core.cache.insert(key, value),
                Some(at) => self.core.cache.insert_expiring_at(key, value, at),
            })?;
            return self.await_acks(true, opts).await;
        }
        self.call(Op::Set(key, value, at), ReadFrom::Master, opts)
            .await
            .map(|_| ())
    }

    /// Sets `key` to `value`, expiring at `at_ms` (milliseconds since the Unix epoch,
    /// Redis's `SET PXAT`).
    pub async fn insert_expiring_at(
        &self,
        key: K,
        value: V,
        at_ms: u64,
    ) -> Result<(), ClusterError> {
        self.call(
            Op::Set(key, value, Some(at_ms)),
            ReadFrom::Master,
            WriteOptions::default(),
        )
        .await
        .map(|_| ())
    }

    /// Sets an absolute expiry (ms since the Unix epoch) on `key`; true if it exists.
    pub async fn expire_at(&self, key: &K, at_ms: u64) -> Result<bool, ClusterError> {
        self.bool(Op::Expire(key.clone(), at_ms), WriteOptions::default())
            .await
    }

    /// Removes `key`; true if it was present.
    pub async fn remove(&self, key: &K) -> Result<bool, ClusterError> {
        let slot = key.slot();
        if !self.core.shared.fence.any() && self.is_local(slot, ReadFrom::Master, true) {
            return Ok(in_slot(slot, || self.core.cache.remove(key))?);
        }
        self.bool(Op::Del(key.clone()), WriteOptions::default())
            .await
    }

    /// Removes `key`, as `opts` asks.
    pub async fn remove_with(&self, key: &K, opts: WriteOptions) -> Result<bool, ClusterError> {
        self.bool(Op::Del(key.clone()), opts).await
    }

    /// Removes `key`, dropping its value on the lazy-free thread.
    pub async fn unlink(&self, key: &K) -> Result<bool, ClusterError> {
        self.bool(Op::Unlink(key.clone()), WriteOptions::default())
            .await
    }

    /// Sets a TTL on `key`; true if it exists.
    pub async fn expire(&self, key: &K, ttl: Duration) -> Result<bool, ClusterError> {
        let at = now_ms().saturating_add(ttl.as_millis() as u64);
        self.bool(Op::Expire(key.clone(), at), WriteOptions::default())
            .await
    }

    /// Removes the TTL of `key`; true if it had one.
    pub async fn persist(&self, key: &K) -> Result<bool, ClusterError> {
        self.bool(Op::Persist(key.clone()), WriteOptions::default())
            .await
    }

    /// Runs `ops` on one slot, in order, with one round trip (a pipeline; each
    /// operation applies on its own, and one that fails answers
    /// [`ClusterReply::Error`] while the others run). All keys must share a slot.
    pub async fn batch(
        &self,
        ops: Vec<ClusterOp<K, V>>,
    ) -> Result<Vec<ClusterReply<V>>, ClusterError> {
        self.batch_inner(false, ops).await
    }

    /// Runs `ops` on one slot atomically (Redis's `MULTI`/`EXEC`): all apply or none,
    /// logged and replicated as one record. All keys must share a slot; `Expire` and
    /// `Persist` are not available inside (use `Insert` with a TTL).
    pub async fn multi(
        &self,
        ops: Vec<ClusterOp<K, V>>,
    ) -> Result<Vec<ClusterReply<V>>, ClusterError> {
        self.batch_inner(true, ops).await
    }

    /// Runs `f` as a transaction over `keys` (see [`Cache::transaction`]). The closure
    /// runs here, so the keys' slot must be served by this node
    /// ([`ClusterError::NotLocal`] otherwise; use [`multi`](Self::multi), which is
    /// forwarded).
    pub fn transaction<R, E>(
        &self,
        keys: &[K],
        f: impl FnOnce(&mut Transaction<'_, K, V, W>) -> Result<R, E>,
    ) -> Result<R, TransactionError<E>> {
        let slot = one_slot(keys.iter()).map_err(TransactionError::Cluster)?;
        if let Some(slot) = slot {
            let rt = self.core.node.routing();
            if rt.slots.owner(slot) != Some(rt.me) {
                return Err(TransactionError::Cluster(ClusterError::NotLocal {
                    slot,
                    owner: rt.slots.owner(slot),
                }));
            }
            if rt.slots.migrating_to(slot).is_some() || self.core.shared.fence.contains(slot) {
                // Some of the keys may have moved already (Redis answers TRYAGAIN).
                return Err(TransactionError::Cluster(ClusterError::Refused(
                    FENCED.to_string(),
                )));
            }
            return in_slot(slot, || self.core.cache.transaction(keys, f))
                .map_err(TransactionError::Tx);
        }
        self.core
            .cache
            .transaction(keys, f)
            .map_err(TransactionError::Tx)
    }

    /// Redis's `WAIT` for writes made through this node to slots it serves: waits until
    /// `replicas` replicas acknowledged everything written so far, or `timeout`;
    /// returns how many did.
    pub async fn wait(&self, replicas: usize, timeout: Duration) -> usize {
        let offset = self.core.repl.offset();
        self.core
            .repl
            .wait(replicas, offset, timeout.as_millis() as u64)
            .await
    }

    // ---- node-local ----

    /// Keys held by this node (its slots as master, or its master's as replica).
    pub fn local_len(&self) -> usize {
        self.core.cache.len()
    }

    /// Keys held by all masters together (asks each master).
    pub async fn cluster_len(&self) -> Result<usize, ClusterError> {
        let rt = self.core.node.routing();
        let mut total = self.core.cache.len() * usize::from(rt.is_master);
        for n in rt.nodes.iter() {
            if n.id == rt.me || !n.flags.contains(NodeFlags::MASTER) || n.slot_count == 0 {
                continue;
            }
            let req = WireRequest {
                flags: 0,
                ack_replicas: 0,
                ack_timeout_ms: 0,
                op: WireOp::Len,
            };
            match self.remote(n.id, &n.addr, &req).await? {
                WireResponse::Count(c) => total += c as usize,
                other => reply_from_wire::<V>(other).map(|_| ())?,
            }
        }
        Ok(total)
    }

    /// Keyspace events of this node's own data: writes to the slots it serves (as a
    /// master) or replicates (as a replica), evictions and expirations here. Events of
    /// other nodes' slots are delivered on those nodes.
    pub fn subscribe(&self) -> Subscriber<K> {
        self.core.cache.subscribe()
    }

    /// This node's figures: the cache's (memory, stats, keyspace of its own data,
    /// persistence), plus `# Replication` and `# Cluster`.
    pub fn info(&self) -> Info {
        let mut info = self.core.cache.info();
        let rt = self.core.node.routing();
        let addr_of = |id: NodeId| rt.node(id).map(|n| n.addr.clone()).unwrap_or_default();
        let (sync_partial_ok, sync_full) = self.core.repl.syncs();
        info.replication = self.core.repl.info().map(|r| match r {
            ReplInfo::Master(s) => ReplicationInfo {
                role: "master",
                master_id: None,
                master_addr: None,
                master_link_status: None,
                master_last_io_ms: None,
                master_sync_in_progress: false,
                slave_repl_offset: None,
                connected_slaves: s.connected_replicas,
                slaves: s
                    .replicas
                    .iter()
                    .map(|r| ReplicaLine {
                        id: r.id.to_string(),
                        addr: addr_of(r.id),
                        state: match r.status {
                            larder_cluster::repl::ReplicaStatus::WaitSnapshot => "wait_bgsave",
                            larder_cluster::repl::ReplicaStatus::SendingSnapshot => "send_bulk",
                            larder_cluster::repl::ReplicaStatus::Online => "online",
                        },
                        offset: r.ack_offset.unwrap_or(0),
                        lag_ms: r.lag,
                    })
                    .collect(),
                master_replid: s.replid.as_str().to_string(),
                master_replid2: s.replid2.map(|i| i.as_str().to_string()),
                master_repl_offset: s.offset,
                second_repl_offset: s.second_replid_offset,
                repl_backlog_first_byte_offset: s.backlog_first_byte_offset,
                repl_backlog_histlen: s.backlog_histlen,
                sync_partial_ok,
                sync_full,
            },
            ReplInfo::Replica { master, info: s } => ReplicationInfo {
                role: "slave",
                master_id: Some(master.to_string()),
                master_addr: Some(addr_of(master)),
                master_link_status: Some(if s.link_up { "up" } else { "down" }),
                master_last_io_ms: Some(s.last_io),
                master_sync_in_progress: s.sync_in_progress,
                slave_repl_offset: Some(s.offset),
                connected_slaves: 0,
                slaves: Vec::new(),
                master_replid: s
                    .master_replid
                    .map(|i| i.as_str().to_string())
                    .unwrap_or_else(|| "0".repeat(40)),
                master_replid2: None,
                master_repl_offset: s.offset,
                second_repl_offset: None,
                repl_backlog_first_byte_offset: 0,
                repl_backlog_histlen: 0,
                sync_partial_ok,
                sync_full,
            },
        });
        info.cluster = Some(ClusterInfo {
            cluster_state: if rt.cluster_ok { "ok" } else { "fail" },
            cluster_slots_assigned: rt.slots.assigned(),
            cluster_known_nodes: rt.nodes.len(),
            cluster_size: rt
                .nodes
                .iter()
                .filter(|n| n.flags.contains(NodeFlags::MASTER) && n.slot_count > 0)
                .count(),
            myself: rt.me.to_string(),
        });
        info
    }

    // ---- administration ----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.node.id()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.node.local_addr()
    }

    /// The transport node (cluster commands: `meet`, `add_slots`, `replicate`,
    /// `failover`, `forget`, `view`, `subscribe` to cluster events).
    pub fn node(&self) -> &ClusterNode {
        &self.core.node
    }

    /// Slot owners as this node sees them.
    pub fn routing(&self) -> Arc<Routing> {
        self.core.node.routing()
    }

    /// This node's own data, for reads (`scan`, `memory_usage`, `hot_keys`, ...).
    /// Writes through it skip slot routing: they are refused unless this node is a
    /// writable master, but a key of another node's slot would be stored here where
    /// no one looks for it. Write through the routed methods.
    pub fn local(&self) -> &Cache<K, V, W> {
        &self.core.cache
    }

    /// Runs `f` on this node's data as a write routed to `slot` (the RESP server's
    /// path: it routed the command itself and answers redirections to its client).
    /// A write to a slot being moved away is refused with `TRYAGAIN`, as on the
    /// routed path.
    #[cfg(feature = "resp")]
    pub(crate) fn in_slot<R>(&self, slot: Slot, f: impl FnOnce() -> R) -> R {
        in_slot(slot, f)
    }

    /// Runs `f` with this thread's copy of the routing table (reloaded only when the
    /// table changed: one atomic load on the hot path, no lock).
    #[cfg(feature = "resp")]
    pub(crate) fn with_routing<R>(&self, f: impl FnOnce(&Routing) -> R) -> R {
        self.core.with_routing(f)
    }

    /// Stops this node: its driver ends and its connections close (peers see it fail
    /// after the node timeout). Every clone of this handle stops serving remote
    /// operations; the local data stays readable through [`local`](Self::local).
    pub async fn shutdown(&self) {
        self.core.node.stop().await;
    }

    /// Blocking versions of the operations, for threads outside the tokio runtime.
    pub fn blocking(&self) -> Blocking<'_, K, V, W> {
        Blocking { cache: self }
    }

    // ---- routing ----

    async fn bool(&self, op: Op<K, V>, opts: WriteOptions) -> Result<bool, ClusterError> {
        match self.call(op, ReadFrom::Master, opts).await? {
            Reply::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    async fn batch_inner(
        &self,
        atomic: bool,
        ops: Vec<ClusterOp<K, V>>,
    ) -> Result<Vec<ClusterReply<V>>, ClusterError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let typed = ops
            .into_iter()
            .map(|o| match o {
                ClusterOp::Get(k) => Op::Get(k),
                ClusterOp::Contains(k) => Op::Contains(k),
                ClusterOp::Ttl(k) => Op::Ttl(k),
                ClusterOp::Insert(k, v, ttl) => {
                    Op::Set(k, v, ttl.map(|t| now.saturating_add(t.as_millis() as u64)))
                }
                ClusterOp::Remove(k) => Op::Del(k),
                ClusterOp::Expire(k, t) => Op::Expire(k, now.saturating_add(t.as_millis() as u64)),
                ClusterOp::Persist(k) => Op::Persist(k),
            })
            .collect();
        match self
            .call(
                Op::Batch(atomic, typed),
                ReadFrom::Master,
                WriteOptions::default(),
            )
            .await?
        {
            Reply::Batch(rs) => Ok(rs
                .into_iter()
                .map(|r| match r {
                    Reply::Value(v) => ClusterReply::Value(v),
                    Reply::Bool(b) => ClusterReply::Bool(b),
                    Reply::Ttl(t) => ClusterReply::Ttl(t),
                    Reply::Error(t) => ClusterReply::Error(t),
                    _ => ClusterReply::Done,
                })
                .collect()),
            _ => Err(unexpected()),
        }
    }

    /// Routes one operation: in-process if this node serves its slot, else to the
    /// owner, following MOVED and ASK.
    async fn call(
        &self,
        op: Op<K, V>,
        from: ReadFrom,
        opts: WriteOptions,
    ) -> Result<Reply<V>, ClusterError> {
        let mut keys = Vec::new();
        op.keys(&mut keys);
        let Some(slot) = one_slot(keys.into_iter())? else {
            return Ok(Reply::Batch(Vec::new()));
        };
        let write = op.is_write();
        let mut next: Option<Dest> = None;
        let mut wire: Option<Vec<u8>> = None;
        let mut op = Some(op);
        // Nodes that answered MOVED.
        let mut moved_from: Vec<NodeId> = Vec::new();
        for attempt in 0..MAX_REDIRECTS {
            // Held from the routing decision to the end of a local execution: a batch
            // of the slot's keys cannot change hands in between.
            let mut guard = None;
            let dest = match next.take() {
                Some(d) => d,
                None => {
                    guard = self.move_guard(slot).await;
                    self.decide(slot, op.as_ref(), false, from, write)
                }
            };
            match dest {
                Dest::Local => {
                    let Some(o) = op.take() else {
                        return Err(unexpected());
                    };
                    // Without the move lock a fenced slot refuses the write: keep a
                    // copy to retry with.
                    let fenced = guard.is_none() && self.core.shared.fence.contains(slot);
                    if fenced {
                        op = Some(o.clone());
                    }
                    let r = match self.exec_routed(slot, guard.is_some(), o) {
                        Err(ClusterError::Refused(t)) if fenced && t == FENCED => {
                            drop(guard);
                            tokio::time::sleep(Duration::from_millis(1 << attempt.min(5))).await;
                            continue;
                        }
                        r => r?,
                    };
                    drop(guard);
                    self.await_acks(write, opts).await?;
                    return Ok(r);
                }
                Dest::TryAgain => {
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(5))).await;
                }
                Dest::Refused(why) => return Err(ClusterError::Refused(why)),
                Dest::Down(why) => {
                    // A gap in this node's view may last only a moment (a hand-over
                    // spreading: the old owner's demotion heard before the new owner's
                    // claim); retry a few times (about 0.3 s in all) before reporting.
                    if attempt + 1 >= MAX_REDIRECTS.min(7) {
                        return Err(ClusterError::ClusterDown(why));
                    }
                    tokio::time::sleep(Duration::from_millis(5 << attempt.min(5))).await;
                }
                Dest::Remote { node, addr, asking } => {
                    let node_sent = node;
                    let bytes = match &wire {
                        Some(b) => b,
                        None => {
                            let Some(o) = op.as_ref() else {
                                return Err(unexpected());
                            };
                            wire.insert(encode_request(o, opts)?)
                        }
                    };
                    let mut req = bytes.clone();
                    // Flags are byte 1 (see wire.rs): set per attempt.
                    req[1] = (u8::from(asking) * wire::FLAG_ASKING)
                        | (u8::from(from == ReadFrom::Replica && !write) * wire::FLAG_REPLICA_READ);
                    // A write that waits for replicas may take its ack timeout longer.
                    let extra = if write && opts.replicas > 0 {
                        opts.timeout
                    } else {
                        Duration::ZERO
                    };
                    let answer = match self.remote_watched(slot, node, &addr, &req, extra).await? {
                        Some(a) => a,
                        None => {
                            // The slot changed hands while we waited (the owner failed
                            // over): ask again where it lives now.
                            self.forget_hint(slot);
                            continue;
                        }
                    };
                    match answer {
                        WireResponse::Moved { slot, node, addr } => {
                            let id = NodeId(node);
                            if id == self.core.node.id() || moved_from.contains(&id) {
                                // Sent back where it was refused: the nodes disagree
                                // for a moment (a hand-over or failover spreading).
                                tokio::time::sleep(Duration::from_millis(1 << attempt.min(6)))
                                    .await;
                            }
                            moved_from.push(node_sent);
                            self.hint(slot, id, addr.clone());
                            // Sent back here: decide again with this node's table.
                            next = (id != self.core.node.id()).then_some(Dest::Remote {
                                node: id,
                                addr,
                                asking: false,
                            });
                        }
                        WireResponse::Ask { node, addr, .. } => {
                            next = Some(Dest::Remote {
                                node: NodeId(node),
                                addr,
                                asking: true,
                            });
                        }
                        WireResponse::TryAgain => {
                            tokio::time::sleep(Duration::from_millis(5 << attempt.min(5))).await;
                        }
                        other => return reply_from_wire(other),
                    }
                }
            }
        }
        Err(ClusterError::TooManyRedirects(slot))
    }

    async fn await_acks(&self, write: bool, opts: WriteOptions) -> Result<(), ClusterError> {
        if !write || opts.replicas == 0 {
            return Ok(());
        }
        let acked = self.wait(opts.replicas, opts.timeout).await;
        if acked < opts.replicas {
            return Err(ClusterError::NotAcknowledged {
                acked,
                needed: opts.replicas,
            });
        }
        Ok(())
    }

    fn hint(&self, slot: Slot, node: NodeId, addr: String) {
        if node == self.core.node.id() {
            // A peer believes this node serves the slot; this node's table will say.
            return;
        }
        let version = self.core.node.routing_version();
        let mut h = self.core.hints.lock().unwrap_or_else(|p| p.into_inner());
        if h.0 != version {
            *h = (version, HashMap::new());
        }
        h.1.insert(slot, (node, addr));
        self.core.hinted.store(true, Ordering::Relaxed);
    }

    /// Whether an operation on `slot` is served here now with no redirect logic: the
    /// common case, checked without building the operation.
    fn is_local(&self, slot: Slot, from: ReadFrom, write: bool) -> bool {
        if self.core.hinted.load(Ordering::Relaxed) {
            return false;
        }
        self.core.with_routing(|rt| {
            if rt.slots.migrating_to(slot).is_some() || rt.slots.importing_from(slot).is_some() {
                return false;
            }
            match self.route_in(rt, slot, KeyPresence::All, false, write) {
                Route::Serve => true,
                Route::Moved { node: owner, .. } => {
                    !write
                        && from == ReadFrom::Replica
                        && rt.node(rt.me).is_some_and(|m| m.master == Some(owner))
                        && self.stale_read_refusal().is_none()
                }
                _ => false,
            }
        })
    }

    /// Redis's `getNodeByQuery` for `slot`: with `allow_reads_when_down`, a read is
    /// routed as if the cluster state were OK.
    fn route_in(
        &self,
        rt: &Routing,
        slot: Slot,
        keys: KeyPresence,
        asking: bool,
        write: bool,
    ) -> Route {
        let ok = rt.cluster_ok || (!write && self.core.allow_reads_when_down);
        rt.slots.route(rt.me, slot, keys, asking, ok)
    }

    /// Why this replica refuses to serve a read from its own copy: its master link is
    /// down and `replica_serve_stale_data` is off (Redis's `MASTERDOWN`).
    fn stale_read_refusal(&self) -> Option<String> {
        if self.core.replica_serve_stale_data {
            return None;
        }
        match self.core.repl.info() {
            Some(ReplInfo::Replica { info, .. }) if info.link_up => None,
            Some(ReplInfo::Master(_)) => None,
            _ => Some(
                "MASTERDOWN Link with MASTER is down and replica_serve_stale_data is off"
                    .to_string(),
            ),
        }
    }

    /// Where an operation on `slot` goes, as this node sees it.
    fn decide(
        &self,
        slot: Slot,
        op: Option<&Op<K, V>>,
        asking: bool,
        from: ReadFrom,
        write: bool,
    ) -> Dest {
        self.route_op(slot, op, asking, from, write, true)
    }

    /// The routing decision. `origin`: the operation was made on this node (use MOVED
    /// hints, send replica reads to a replica), not forwarded here by a peer.
    fn route_op(
        &self,
        slot: Slot,
        op: Option<&Op<K, V>>,
        asking: bool,
        from: ReadFrom,
        write: bool,
        origin: bool,
    ) -> Dest {
        let rt = self.core.node.routing();
        if origin && self.core.hinted.load(Ordering::Relaxed) {
            let mut h = self.core.hints.lock().unwrap_or_else(|p| p.into_inner());
            if h.0 != self.core.node.routing_version() {
                // The table changed since: it knows better than the hints.
                h.1.clear();
                self.core.hinted.store(false, Ordering::Relaxed);
            } else if let Some((node, addr)) = h.1.get(&slot) {
                if *node != rt.me {
                    return Dest::Remote {
                        node: *node,
                        addr: addr.clone(),
                        asking: false,
                    };
                }
            }
        }
        // Key presence matters only while the slot migrates.
        let presence =
            if rt.slots.migrating_to(slot).is_some() || rt.slots.importing_from(slot).is_some() {
                let mut keys = Vec::new();
                if let Some(op) = op {
                    op.keys(&mut keys);
                }
                let here = keys.iter().filter(|k| self.core.cache.contains(*k)).count();
                match here {
                    0 => KeyPresence::None,
                    n if n == keys.len() => KeyPresence::All,
                    _ => KeyPresence::Some,
                }
            } else {
                KeyPresence::All
            };
        match self.route_in(&rt, slot, presence, asking, write) {
            Route::Serve => Dest::Local,
            Route::Moved { node: owner, .. } => {
                if !write && from == ReadFrom::Replica {
                    let me = rt.node(rt.me);
                    if me.is_some_and(|m| m.master == Some(owner)) {
                        return match self.stale_read_refusal() {
                            Some(why) => Dest::Refused(why),
                            None => Dest::Local,
                        };
                    }
                    if let Some(r) = rt.replicas_of(owner).next().filter(|_| origin) {
                        return Dest::Remote {
                            node: r.id,
                            addr: r.addr.clone(),
                            asking: false,
                        };
                    }
                }
                match rt.node(owner) {
                    Some(n) => Dest::Remote {
                        node: owner,
                        addr: n.addr.clone(),
                        asking: false,
                    },
                    None => Dest::Down(format!("slot {slot}'s owner {owner} is unknown here")),
                }
            }
            Route::Ask { node, .. } => match rt.node(node) {
                Some(n) => Dest::Remote {
                    node,
                    addr: n.addr.clone(),
                    asking: true,
                },
                None => Dest::Down(format!("slot {slot} migrates to unknown node {node}")),
            },
            Route::TryAgain => Dest::TryAgain,
            Route::ClusterDown => Dest::Down(if rt.slots.owner(slot).is_none() {
                format!("hash slot {slot} is not served")
            } else {
                "the cluster is down".to_string()
            }),
        }
    }

    /// The read side of `slot`'s move lock, if this node is moving the slot's keys.
    async fn move_guard(&self, slot: Slot) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        if self.core.moving.load(Ordering::Acquire) == 0 {
            return None;
        }
        let lock = self
            .core
            .moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .cloned()?;
        Some(lock.read_owned().await)
    }

    /// Executes `op` here: under the slot's move lock (`locked`) the fence lets it
    /// write, else the fence decides.
    fn exec_routed(
        &self,
        slot: Slot,
        locked: bool,
        op: Op<K, V>,
    ) -> Result<Reply<V>, ClusterError> {
        if locked {
            self.exec_local(op)
        } else {
            in_slot(slot, || self.exec_local(op))
        }
    }

    fn exec_local(&self, op: Op<K, V>) -> Result<Reply<V>, ClusterError> {
        let c = &self.core.cache;
        Ok(match op {
            Op::Get(k) => Reply::Value(c.get(&k)),
            Op::Contains(k) => Reply::Bool(c.contains(&k)),
            Op::Ttl(k) => Reply::Ttl(c.ttl(&k)),
            Op::Set(k, v, None) => {
                c.insert(k, v)?;
                Reply::Done
            }
            Op::Set(k, v, Some(at)) => {
                c.insert_expiring_at(k, v, at)?;
                Reply::Done
            }
            Op::Del(k) => Reply::Bool(c.remove(&k)?),
            Op::Unlink(k) => Reply::Bool(c.unlink(&k)?),
            Op::Expire(k, at) => Reply::Bool(c.expire_at(&k, at)?),
            Op::Persist(k) => Reply::Bool(c.persist(&k)?),
            Op::Batch(false, ops) => Reply::Batch(
                ops.into_iter()
                    .map(|o| {
                        self.exec_local(o)
                            .unwrap_or_else(|e| Reply::Error(e.to_string()))
                    })
                    .collect(),
            ),
            Op::Batch(true, ops) => Reply::Batch(self.exec_multi(ops)?),
        })
    }

    fn exec_multi(&self, ops: Vec<Op<K, V>>) -> Result<Vec<Reply<V>>, ClusterError> {
        let mut keys = Vec::new();
        for o in &ops {
            let mut ks = Vec::new();
            o.keys(&mut ks);
            keys.extend(ks.into_iter().cloned());
        }
        let now = now_ms();
        let r = self.core.cache.transaction(&keys, |tx| {
            let mut out = Vec::with_capacity(ops.len());
            for o in ops {
                out.push(match o {
                    Op::Get(k) => Reply::Value(tx.get(&k)),
                    Op::Contains(k) => Reply::Bool(tx.contains(&k)),
                    Op::Ttl(k) => Reply::Ttl(tx.ttl(&k)),
                    Op::Set(k, v, None) => {
                        tx.insert(k, v);
                        Reply::Done
                    }
                    // Already past: the key expires at once, as a single insert would.
                    Op::Set(k, _, Some(at)) if at <= now => {
                        tx.remove(&k);
                        Reply::Done
                    }
                    Op::Set(k, v, Some(at)) => {
                        tx.insert_with_ttl(k, v, Duration::from_millis(at - now));
                        Reply::Done
                    }
                    Op::Del(k) | Op::Unlink(k) => Reply::Bool(tx.remove(&k)),
                    Op::Expire(..) | Op::Persist(_) | Op::Batch(..) => {
                        return Err(ClusterError::Refused(
                            "ERR expire and persist are not available in multi".into(),
                        ))
                    }
                });
            }
            Ok(out)
        });
        match r {
            Ok(out) => Ok(out),
            Err(TxError::Aborted(e)) => Err(e),
            Err(TxError::Write(e)) => Err(e.into()),
            Err(e) => Err(ClusterError::Refused(e.to_string())),
        }
    }

    /// Sends a request for `slot` to `node`, giving up early (`None`) if this node's
    /// routing table moves the slot to another node meanwhile: a request to a master
    /// that just died would otherwise wait out the whole request timeout.
    async fn remote_watched(
        &self,
        slot: Slot,
        node: NodeId,
        addr: &str,
        req: &[u8],
        extra: Duration,
    ) -> Result<Option<WireResponse>, ClusterError> {
        let request = self.remote_bytes(node, addr, req, extra);
        tokio::pin!(request);
        let owner_then = self.core.node.routing().slots.owner(slot);
        loop {
            tokio::select! {
                r = &mut request => return r.map(Some),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    let now = self.core.node.routing().slots.owner(slot);
                    if now != owner_then && now.is_some() && now != Some(node) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn forget_hint(&self, slot: Slot) {
        self.core
            .hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(&slot);
    }

    async fn remote(
        &self,
        node: NodeId,
        addr: &str,
        req: &WireRequest,
    ) -> Result<WireResponse, ClusterError> {
        self.remote_bytes(node, addr, &req.encode(), Duration::ZERO)
            .await
    }

    async fn remote_bytes(
        &self,
        node: NodeId,
        addr: &str,
        req: &[u8],
        extra: Duration,
    ) -> Result<WireResponse, ClusterError> {
        let t = self.core.request_timeout + extra;
        let bytes = tokio::time::timeout(t, self.core.node.request(node, addr, req))
            .await
            .map_err(|_| ClusterError::Timeout(t))?
            .map_err(|e| match e {
                NetError::Unreachable(why) => ClusterError::Unreachable(why),
                other => ClusterError::Unreachable(other.to_string()),
            })?;
        WireResponse::decode(&bytes)
            .map_err(|e| ClusterError::Codec(format!("answer from {node}: {e}")))
    }

    /// Serves a request forwarded by a peer.
    /// Serves a forwarded operation; a write is refused unless `may_write` (the
    /// sender's certificate is a node's or an administrator's).
    async fn serve(&self, bytes: &[u8], may_write: bool, from: &PeerCert) -> WireResponse {
        let req = match WireRequest::decode(bytes) {
            Ok(r) => r,
            Err(e) => return WireResponse::Error(ErrorKind::BadRequest, format!("request: {e}")),
        };
        match req.op {
            WireOp::Len => return WireResponse::Count(self.core.cache.len() as u64),
            WireOp::Wait {
                replicas,
                timeout_ms,
            } => {
                let n = self
                    .wait(replicas as usize, Duration::from_millis(timeout_ms))
                    .await;
                return WireResponse::Count(n as u64);
            }
            _ => {}
        }
        let op: Op<K, V> = match from_wire(req.op) {
            Ok(op) => op,
            Err(e) => return WireResponse::Error(ErrorKind::BadRequest, e),
        };
        let mut keys = Vec::new();
        op.keys(&mut keys);
        let slot = match one_slot(keys.into_iter()) {
            Ok(Some(s)) => s,
            Ok(None) => return WireResponse::Batch(Vec::new()),
            Err(e) => return WireResponse::Error(ErrorKind::BadRequest, e.to_string()),
        };
        let write = op.is_write();
        if write && !may_write {
            return WireResponse::Error(
                ErrorKind::Refused,
                format!(
                    "NOPERM the certificate of {} may not write (a write needs the node or admin role)",
                    from.describe()
                ),
            );
        }
        let from = if req.flags & wire::FLAG_REPLICA_READ != 0 {
            ReadFrom::Replica
        } else {
            ReadFrom::Master
        };
        let asking = req.flags & wire::FLAG_ASKING != 0;
        let guard = self.move_guard(slot).await;
        match self.decide_served(slot, &op, asking, from, write) {
            Dest::Local => {}
            Dest::Remote { node, addr, asking } => {
                return if asking {
                    WireResponse::Ask {
                        slot,
                        node: node.0,
                        addr,
                    }
                } else {
                    WireResponse::Moved {
                        slot,
                        node: node.0,
                        addr,
                    }
                }
            }
            Dest::TryAgain => return WireResponse::TryAgain,
            Dest::Down(why) => return WireResponse::Error(ErrorKind::ClusterDown, why),
            Dest::Refused(why) => return WireResponse::Error(ErrorKind::Refused, why),
        }
        let reply = match self.exec_routed(slot, guard.is_some(), op) {
            Ok(r) => r,
            // Routed here with a table from before the move: the peer retries.
            Err(ClusterError::Refused(t)) if t == FENCED => return WireResponse::TryAgain,
            Err(ClusterError::ClusterDown(t)) => {
                return WireResponse::Error(ErrorKind::ClusterDown, t)
            }
            Err(e) => return WireResponse::Error(ErrorKind::Refused, e.to_string()),
        };
        drop(guard);
        if write && req.ack_replicas > 0 {
            let acked = self
                .wait(
                    req.ack_replicas as usize,
                    Duration::from_millis(req.ack_timeout_ms),
                )
                .await;
            if acked < req.ack_replicas as usize {
                return WireResponse::NotAcked {
                    acked: acked as u32,
                    needed: req.ack_replicas,
                };
            }
        }
        reply_to_wire(reply)
    }

    /// The routing decision for a request a peer sent here: the table's, without
    /// this node's MOVED hints and without choosing replicas (the peer is told the owner
    /// this node believes in).
    fn decide_served(
        &self,
        slot: Slot,
        op: &Op<K, V>,
        asking: bool,
        from: ReadFrom,
        write: bool,
    ) -> Dest {
        self.route_op(slot, Some(op), asking, from, write, false)
    }
}

/// The request bytes of `op`, with no flags (they are set per attempt: byte 1).
fn encode_request<K: Codec, V: Codec>(
    op: &Op<K, V>,
    opts: WriteOptions,
) -> Result<Vec<u8>, ClusterError> {
    Ok(WireRequest {
        flags: 0,
        ack_replicas: u32::try_from(opts.replicas).unwrap_or(u32::MAX),
        ack_timeout_ms: opts.timeout.as_millis() as u64,
        op: to_wire(op)?,
    }
    .encode())
}

fn unexpected() -> ClusterError {
    ClusterError::Codec("answer of the wrong kind".into())
}

/// The one slot all `keys` hash to (`None` without keys).
fn one_slot<'a, K: KeySlot + 'a>(
    keys: impl Iterator<Item = &'a K>,
) -> Result<Option<Slot>, ClusterError> {
    let mut slot = None;
    for k in keys {
        let s = k.slot();
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => return Err(ClusterError::CrossSlot { first, other: s }),
            _ => {}
        }
    }
    Ok(slot)
}

/// Why a [`ClusterCache::transaction`] did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError<E> {
    /// The keys span slots, or their slot is not served here.
    #[error(transparent)]
    Cluster(ClusterError),
    /// The transaction itself failed (see [`TxError`]).
    #[error(transparent)]
    Tx(TxError<E>),
}

/// Blocking versions of [`ClusterCache`]'s operations ([`ClusterCache::blocking`]).
/// They run the operation on the calling thread with the node's own runtime and wait;
/// they need no runtime of the caller's, and panic if called from async code (use the
/// async methods there).
pub struct Blocking<'a, K, V, W> {
    cache: &'a ClusterCache<K, V, W>,
}

impl<K, V, W> Blocking<'_, K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.cache.core.handle.block_on(f)
    }

    /// [`ClusterCache::get`].
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        self.run(self.cache.get(key))
    }

    /// [`ClusterCache::get_from`].
    pub fn get_from<Q>(&self, key: &Q, from: ReadFrom) -> Result<Option<V>, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        self.run(self.cache.get_from(key, from))
    }

    /// [`ClusterCache::contains`].
    pub fn contains<Q>(&self, key: &Q) -> Result<bool, ClusterError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + KeySlot + ToOwned<Owned = K> + ?Sized,
    {
        self.run(self.cache.contains(key))
    }

    /// [`ClusterCache::ttl`].
    pub fn ttl(&self, key: &K) -> Result<Ttl, ClusterError> {
        self.run(self.cache.ttl(key))
    }

    /// [`ClusterCache::insert`].
    pub fn insert(&self, key: K, value: V) -> Result<(), ClusterError> {
        self.run(self.cache.insert(key, value))
    }

    /// [`ClusterCache::insert_with_ttl`].
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), ClusterError> {
        self.run(self.cache.insert_with_ttl(key, value, ttl))
    }

    /// [`ClusterCache::insert_with`].
    pub fn insert_with(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        opts: WriteOptions,
    ) -> Result<(), ClusterError> {
        self.run(self.cache.insert_with(key, value, ttl, opts))
    }

    /// [`ClusterCache::insert_expiring_at`].
    pub fn insert_expiring_at(&self, key: K, value: V, at_ms: u64) -> Result<(), ClusterError> {
        self.run(self.cache.insert_expiring_at(key, value, at_ms))
    }

    /// [`ClusterCache::expire_at`].
    pub fn expire_at(&self, key: &K, at_ms: u64) -> Result<bool, ClusterError> {
        self.run(self.cache.expire_at(key, at_ms))
    }

    /// [`ClusterCache::remove`].
    pub fn remove(&self, key: &K) -> Result<bool, ClusterError> {
        self.run(self.cache.remove(key))
    }

    /// [`ClusterCache::unlink`].
    pub fn unlink(&self, key: &K) -> Result<bool, ClusterError> {
        self.run(self.cache.unlink(key))
    }

    /// [`ClusterCache::expire`].
    pub fn expire(&self, key: &K, ttl: Duration) -> Result<bool, ClusterError> {
        self.run(self.cache.expire(key, ttl))
    }

    /// [`ClusterCache::persist`].
    pub fn persist(&self, key: &K) -> Result<bool, ClusterError> {
        self.run(self.cache.persist(key))
    }

    /// [`ClusterCache::batch`].
    pub fn batch(&self, ops: Vec<ClusterOp<K, V>>) -> Result<Vec<ClusterReply<V>>, ClusterError> {
        self.run(self.cache.batch(ops))
    }

    /// [`ClusterCache::multi`].
    pub fn multi(&self, ops: Vec<ClusterOp<K, V>>) -> Result<Vec<ClusterReply<V>>, ClusterError> {
        self.run(self.cache.multi(ops))
    }

    /// [`ClusterCache::wait`].
    pub fn wait(&self, replicas: usize, timeout: Duration) -> usize {
        self.run(self.cache.wait(replicas, timeout))
    }

    /// [`ClusterCache::cluster_len`].
    pub fn cluster_len(&self) -> Result<usize, ClusterError> {
        self.run(self.cache.cluster_len())
    }
}
