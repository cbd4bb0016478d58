//! The driver: one tokio task owns the [`Node`] and is its only caller; reader tasks
//! feed it decoded messages, link tasks carry what it sends, and [`ClusterNode`] is the
//! handle the application holds.
//!
//! Streams: every node dials each peer it sends to and keeps that connection (its
//! *link*) with one long-lived unidirectional stream of frames; it receives on the
//! connections peers dialed to it. So a pair of nodes has two connections, one per
//! direction, like Redis's outbound and inbound cluster links. One stream per link
//! keeps stream-credit bookkeeping out of the hot path and gives one reader per peer;
//! the head-of-line blocking it brings is what Redis lives with on TCP, and the state
//! machine tolerates delay. A MEET to a bare address (the peer's id is not known yet)
//! goes over a short-lived connection of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::certs::NodeIdentity;
use super::faults::Faults;
use super::frame::{
    check_preamble, encode_frame, StreamDecoder, StreamKind, MAX_FRAME_LEN, PREAMBLE, PREAMBLE_LEN,
    REPL_PREAMBLE, REQUEST_PREAMBLE,
};
use super::limits::Limits;
use super::peers::Peers;
use super::replication::{ReplSetup, Replication, Role};
use super::revocation::RevocationList;
use super::roles::{PeerCert, Role as CertRole};
use super::routing::{Routing, RoutingCell};
use super::service::Service;
use super::store::StateStore;
use super::tls::{client_config_with, peer_cert, peer_leaf, server_config_with, server_name_for};
use super::NetError;
use crate::proto::{
    ClusterState, Config, Event, FailoverMode, HandleError, Instant, Message, Node, NodeId,
    NodeView, Rejected, Slot, SlotSet, SlotTable, Transmit, WriteRefusal,
};
use crate::repl::{ReplMessage, ReplicationSink, ReplicationSource, SinkEvent, SourceEvent};

/// QUIC application close codes.
mod close {
    /// Normal close: shutdown, or a MEET connection done.
    pub const DONE: u32 = 0;
    /// The peer sent a frame that breaks the framing (see `frame`).
    pub const FRAME_ERROR: u32 = 1;
    /// The peer sent a frame that is not a valid cluster message.
    pub const BAD_MESSAGE: u32 = 2;
    /// The peer's certificate names no node id.
    pub const BAD_IDENTITY: u32 = 3;
    /// The peer sent a stream of a kind that does not belong there (a request on a
    /// unidirectional stream, ...).
    pub const BAD_STREAM: u32 = 4;
    /// The peer's certificate lacks the role what it did needs (a bus stream from a
    /// certificate without the node role), or names no role where roles are required.
    pub const FORBIDDEN: u32 = 6;
    /// The peer opened more connections than its limit; this, its oldest, was closed.
    pub const TOO_MANY_CONNECTIONS: u32 = 8;
    /// The peer's certificate was revoked.
    pub const REVOKED: u32 = 9;
}

/// Messages queued per link while it connects; more are dropped (the state machine
/// repeats what matters).
const LINK_QUEUE: usize = 256;

/// How a node is started. [`NetConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct NetConfig {
    /// The UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// The address other nodes reach this one at; by default the bound address.
    pub advertise: Option<String>,
    /// This node's certificate and key; the node id is the certificate's.
    pub identity: NodeIdentity,
    /// The cluster CA certificate, the only trust root.
    pub ca: CertificateDer<'static>,
    /// The protocol settings (node_timeout, ...).
    pub cluster: Config,
    /// Where the node's state is saved and, at start, restored from.
    pub store: StateStore,
    /// Fault injection, shared between the nodes of a test. Default: nothing cut.
    pub faults: Faults,
    /// First delay before redialing a peer after a failed dial or a lost link.
    pub backoff_min: Duration,
    /// Cap of the doubling redial delay.
    pub backoff_max: Duration,
    /// A connection silent this long is dropped (keep-alives go every third of it).
    pub idle_timeout: Duration,
    /// Seed of the state machine's randomness (gossip targets, election delays).
    pub seed: u64,
    /// Replication of the application's data, if any (see [`super::replication`]).
    pub replication: Option<ReplSetup>,
    /// The handler of requests forwarded by peers ([`ClusterNode::request`]); without
    /// one, request streams are refused.
    pub service: Option<Arc<dyn Service>>,
    /// What one authenticated peer may hold of this node (see [`super::limits`]).
    pub limits: Limits,
    /// A revocation list file (PEM or DER, signed by the cluster CA; see
    /// [`super::revocation`]), loaded at start, watched, and loaded again when it
    /// changes. Default: none.
    pub revocation_list: Option<PathBuf>,
    /// How often the revocation list file is checked for changes. Default 2 s.
    pub revocation_poll: Duration,
    /// Whether certificates that name no role (issued before roles existed) are
    /// accepted, as `node` and `admin` with a warning (see [`super::roles`]).
    /// Default: true.
    pub allow_roleless: bool,
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("id", &self.identity.id())
            .field("cluster", &self.cluster)
            .field("replication", &self.replication)
            .field("service", &self.service.is_some())
            .finish_non_exhaustive()
    }
}

impl NetConfig {
    /// A configuration with default settings: node_timeout 15 s, redial backoff
    /// 50 ms doubling to 2 s, idle timeout 5 s, nothing cut.
    pub fn new(
        bind: SocketAddr,
        identity: NodeIdentity,
        ca: CertificateDer<'static>,
        store: StateStore,
    ) -> Self {
        let seed = u64::from_le_bytes(identity.id().0[..8].try_into().unwrap_or([0u8; 8]));
        NetConfig {
            bind,
            advertise: None,
            identity,
            ca,
            cluster: Config::default(),
            store,
            faults: Faults::default(),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            seed,
            replication: None,
            service: None,
            limits: Limits::default(),
            revocation_list: None,
            revocation_poll: Duration::from_secs(2),
            allow_roleless: true,
        }
    }
}

/// Transport counters, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Incoming connections whose handshake succeeded.
    pub connections_accepted: u64,
    /// Incoming connections refused during or right after the handshake (wrong CA,
    /// no node id in the certificate, ...).
    pub handshakes_failed: u64,
    /// Outgoing dials that failed (unreachable, or the server's certificate refused).
    pub dials_failed: u64,
    /// Frames read from peers.
    pub frames_received: u64,
    /// Connections closed because a peer broke the framing or sent an undecodable
    /// message.
    pub bad_frames: u64,
    /// Messages the state machine rejected (unknown or forgotten sender, ...).
    pub messages_rejected: u64,
    /// Messages whose header named a sender other than the certificate's node.
    pub sender_mismatches: u64,
    /// Messages dropped by the fault-injection switch.
    pub dropped_by_faults: u64,
    /// Messages dropped because a link's queue was full.
    pub dropped_queue_full: u64,
    /// Connections refused or closed because the certificate's roles do not allow what
    /// the peer did (or it names no role where roles are required).
    pub role_refusals: u64,
    /// Connections closed because their peer opened more than its limit.
    pub connections_evicted: u64,
    /// Request streams reset because the request or its response took longer than
    /// the deadline.
    pub requests_timed_out: u64,
    /// Request payload bytes held right now, all peers together.
    pub request_bytes_buffered: u64,
    /// The most request payload bytes ever held at once.
    pub request_bytes_peak: u64,
    /// Requests waiting right now for one of their peer's service slots
    /// ([`super::Limits::requests_per_peer`]), all peers together.
    pub requests_waiting: u64,
    /// Revocation lists loaded (at start and on change).
    pub revocation_loads: u64,
    /// Connections closed because a loaded revocation list revokes their peer.
    pub revoked_closed: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    connections_accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    dials_failed: AtomicU64,
    frames_received: AtomicU64,
    bad_frames: AtomicU64,
    messages_rejected: AtomicU64,
    sender_mismatches: AtomicU64,
    dropped_by_faults: AtomicU64,
    dropped_queue_full: AtomicU64,
    role_refusals: AtomicU64,
    connections_evicted: AtomicU64,
    pub(super) requests_timed_out: AtomicU64,
    pub(super) request_bytes_buffered: AtomicU64,
    pub(super) request_bytes_peak: AtomicU64,
    pub(super) requests_waiting: AtomicU64,
    revocation_loads: AtomicU64,
    revoked_closed: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            connections_accepted: g(&self.connections_accepted),
            handshakes_failed: g(&self.handshakes_failed),
            dials_failed: g(&self.dials_failed),
            frames_received: g(&self.frames_received),
            bad_frames: g(&self.bad_frames),
            messages_rejected: g(&self.messages_rejected),
            sender_mismatches: g(&self.sender_mismatches),
            dropped_by_faults: g(&self.dropped_by_faults),
            dropped_queue_full: g(&self.dropped_queue_full),
            role_refusals: g(&self.role_refusals),
            connections_evicted: g(&self.connections_evicted),
            requests_timed_out: g(&self.requests_timed_out),
            request_bytes_buffered: g(&self.request_bytes_buffered),
            request_bytes_peak: g(&self.request_bytes_peak),
            requests_waiting: g(&self.requests_waiting),
            revocation_loads: g(&self.revocation_loads),
            revoked_closed: g(&self.revoked_closed),
        }
    }
}

/// A command run on the node inside the driver task; it replies on its own channel.
/// A command runs on the node and returns its reply, which the driver delivers once
/// what the command changed is saved, sent and published in the routing table.
type Command = Box<dyn FnOnce(&mut Node, Instant) -> Box<dyn FnOnce() + Send> + Send>;

enum Input {
    /// A message from the authenticated peer `from`.
    Message {
        from: NodeId,
        msg: Message,
    },
    /// A replication message from the authenticated peer `from`.
    Repl {
        from: NodeId,
        msg: ReplMessage,
    },
    /// `from` opened a new replication stream to this node: any session it had here
    /// is over (it reconnected or restarted).
    ReplStreamOpened {
        from: NodeId,
    },
    /// This node's replication link to `to` connected again after a loss.
    ReplLinkRestored {
        to: NodeId,
    },
    Command(Command),
}

/// What one node sees of the cluster, taken at one instant.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// This node's id.
    pub id: NodeId,
    /// Its cluster state.
    pub state: ClusterState,
    /// Whether it is a master.
    pub is_master: bool,
    /// The master it replicates, if it is a replica.
    pub master: Option<NodeId>,
    /// currentEpoch.
    pub current_epoch: u64,
    /// Its (or its master's) configEpoch.
    pub config_epoch: u64,
    /// Slot owners and slot moves as this node sees them.
    pub slots: SlotTable,
    /// Every node it knows, itself included (`CLUSTER NODES`).
    pub nodes: Vec<NodeView>,
}

/// The handle to a running node. Dropping it stops the node like
/// [`ClusterNode::shutdown`], without waiting.
pub struct ClusterNode {
    id: NodeId,
    local_addr: SocketAddr,
    inputs: mpsc::Sender<Input>,
    events: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    repl: Option<Arc<Replication>>,
    routing: Arc<RoutingCell>,
    ctx: Ctx,
}

/// The shared parts every task of a node needs.
#[derive(Clone)]
struct Ctx {
    me: NodeId,
    endpoint: quinn::Endpoint,
    inputs: mpsc::Sender<Input>,
    faults: Faults,
    counters: Arc<Counters>,
    backoff_min: Duration,
    backoff_max: Duration,
    dial_timeout: Duration,
    service: Option<Arc<dyn Service>>,
    /// Connections this node dialed for requests, by peer.
    request_conns: Arc<Mutex<HashMap<NodeId, ConnSlot>>>,
    /// Live connections by peer, and the per-peer limits.
    peers: Arc<Peers>,
    /// What the TLS configurations are rebuilt from when the revocation list changes.
    tls: Arc<TlsParts>,
    allow_roleless: bool,
}

/// What the endpoint's TLS configurations are made of.
struct TlsParts {
    identity: NodeIdentity,
    ca: CertificateDer<'static>,
    idle_timeout: Duration,
    limits: Limits,
    revocation_file: Option<PathBuf>,
    /// The revocation list in force, and the file bytes it was read from.
    revoked: Mutex<Option<(RevocationList, Vec<u8>)>>,
    /// The client configuration dials use (rebuilt with the revocation list).
    client: Mutex<quinn::ClientConfig>,
    /// The file bytes last refused, so the watcher warns once per bad version.
    rejected: Mutex<Option<Vec<u8>>>,
}

impl TlsParts {
    /// Whether the revocation list in force revokes `leaf`.
    fn revokes(&self, leaf: &CertificateDer<'_>) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(list, _)| list.revokes(leaf))
    }
}

/// Says in words what rustls means by a key that does not match the certificate
/// (its own text is "keys may not be consistent: KeyMismatch").
fn identity_error(e: NetError, me: NodeId) -> NetError {
    match e {
        NetError::Rustls(rustls::Error::InconsistentKeys(k)) => NetError::Certificate(format!(
            "the private key does not belong to the certificate of node {me} ({k:?})"
        )),
        e => e,
    }
}

impl ClusterNode {
    /// Binds the endpoint, restores the node from `config.store` if it holds a saved
    /// state (it must be this node's), and starts the driver. Must be called inside a
    /// tokio runtime.
    pub async fn start(config: NetConfig) -> Result<ClusterNode, NetError> {
        let me = config.identity.id();
        if !config.identity.roles().contains(CertRole::Node) {
            return Err(NetError::Certificate(format!(
                "this certificate has roles {}; a node needs the node role",
                config.identity.roles()
            )));
        }
        super::certs::check_ca_cert(&config.ca)?;
        let revoked = match &config.revocation_list {
            Some(path) => Some(load_revocation_list(path, &config.ca, &config.identity)?),
            None => None,
        };
        let list = revoked.as_ref().map(|(l, _)| l);
        let server = server_config_with(
            &config.identity,
            &config.ca,
            list,
            config.idle_timeout,
            &config.limits,
        )
        .map_err(|e| identity_error(e, me))?;
        let client = client_config_with(
            &config.identity,
            &config.ca,
            list,
            config.idle_timeout,
            &config.limits,
        )
        .map_err(|e| identity_error(e, me))?;
        let mut endpoint = quinn::Endpoint::server(server, config.bind).map_err(|e| {
            // The error kind stays (`AddrInUse`, ...); the text gains the address.
            NetError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot bind UDP {}: {e}", config.bind),
            ))
        })?;
        endpoint.set_default_client_config(client.clone());
        let local_addr = endpoint.local_addr()?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());

        let origin = tokio::time::Instant::now();
        let mut node = match config.store.load()? {
            Some(saved) if saved.id != me => {
                return Err(NetError::State(format!(
                    "saved state belongs to node {}, the certificate names {me}",
                    saved.id
                )))
            }
            Some(saved) => {
                info!(node = %me, "restoring from saved state");
                Node::restore(
                    config.cluster.clone(),
                    &saved,
                    addr,
                    Instant::ZERO,
                    config.seed,
                )
            }
            None => Node::new(config.cluster.clone(), me, addr, Instant::ZERO, config.seed),
        };

        let repl = config.replication.as_ref().map(|setup| {
            let now = Instant::ZERO;
            let seed = config.seed ^ 0x5eed_0f7e_91aa;
            let role = match (node.master(), setup.resume) {
                (None, None) => Role::Master(ReplicationSource::new(setup.config.clone(), seed)),
                (None, Some((id, off))) => Role::Master(ReplicationSource::resume(
                    setup.config.clone(),
                    id,
                    off,
                    seed,
                )),
                (Some(m), None) => Role::Replica {
                    sink: ReplicationSink::new(setup.config.clone(), now),
                    master: m,
                },
                (Some(m), Some((id, off))) => Role::Replica {
                    sink: ReplicationSink::resume(setup.config.clone(), now, id, off),
                    master: m,
                },
            };
            if let Role::Master(source) = &role {
                node.set_repl_offset(source.offset());
                // A resumed master continues under a new id; the data must say so.
                if setup.resume.is_some() {
                    setup.dataset.position(source.replid(), source.offset());
                }
            }
            Arc::new(Replication::new(role, origin.into_std()))
        });
        let routing = Arc::new(RoutingCell::new(Routing::of(&node)));
        let (inputs, input_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let (stop, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        if revoked.is_some() {
            bump(&counters.revocation_loads);
        }
        let ctx = Ctx {
            me,
            endpoint: endpoint.clone(),
            inputs: inputs.clone(),
            faults: config.faults.clone(),
            counters: counters.clone(),
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max.max(config.backoff_min),
            dial_timeout: config.idle_timeout,
            service: config.service.clone(),
            request_conns: Arc::new(Mutex::new(HashMap::new())),
            peers: Arc::new(Peers::new(config.limits.clone())),
            tls: Arc::new(TlsParts {
                identity: config.identity.clone(),
                ca: config.ca.clone(),
                idle_timeout: config.idle_timeout,
                limits: config.limits.clone(),
                revocation_file: config.revocation_list.clone(),
                revoked: Mutex::new(revoked),
                client: Mutex::new(client),
                rejected: Mutex::new(None),
            }),
            allow_roleless: config.allow_roleless,
        };
        let accept = tokio::spawn(accept_loop(ctx.clone()));
        let watcher = config
            .revocation_list
            .is_some()
            .then(|| tokio::spawn(watch_revocation_list(ctx.clone(), config.revocation_poll)));
        let driver = Driver {
            node,
            origin,
            store: config.store,
            events: events.clone(),
            links: HashMap::new(),
            repl: repl
                .clone()
                .zip(config.replication)
                .map(|(shared, setup)| ReplDriver {
                    shared,
                    config: setup.config,
                    dataset: setup.dataset,
                    staged: None,
                    links: HashMap::new(),
                    promotions: 0,
                    gate_open: false,
                }),
            routing: routing.clone(),
            routing_dirty: false,
            last_routing: Instant::ZERO,
            ctx: ctx.clone(),
        };
        let task = tokio::spawn(async move {
            driver.run(input_rx, stop_rx).await;
            if let Some(w) = watcher {
                w.abort();
            }
            // Closing the endpoint ends the accept loop and every connection (their
            // readers see the close and stop).
            endpoint.close(close::DONE.into(), b"shutdown");
            let _ = accept.await;
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        });
        Ok(ClusterNode {
            id: me,
            local_addr,
            inputs,
            events,
            counters,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
            repl,
            routing,
            ctx,
        })
    }

    /// The replication side of this node, if it was started with
    /// [`NetConfig::replication`].
    pub fn replication(&self) -> Option<&Arc<Replication>> {
        self.repl.as_ref()
    }

    /// Slot owners and nodes as this node sees them, refreshed whenever the cluster
    /// state machine reports a change (and at least every second). Cheap: a shared
    /// pointer.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load()
    }

    /// A number that changes whenever [`routing`](Self::routing) does: a caller may
    /// keep a table and reload it only when this moved (one atomic load).
    pub fn routing_version(&self) -> u64 {
        self.routing.version()
    }

    /// Sends `payload` to node `to` (reached at `addr`) as one request and returns its
    /// response. Requests to one peer share a connection, each on a stream of its own,
    /// so concurrent requests are pipelined. Fails if the peer is unreachable, has no
    /// request handler, or the connection breaks.
    pub async fn request(
        &self,
        to: NodeId,
        addr: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, NetError> {
        request(&self.ctx, to, addr, payload).await
    }

    /// This node's id (the one its certificate names).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A receiver of the state machine's events from now on. A receiver that falls
    /// more than 1024 events behind loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The transport counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Loads the revocation list file ([`NetConfig::revocation_list`]) again now, as
    /// the watcher does when the file changes: new handshakes are checked against it
    /// and the connections of certificates it revokes are closed. Returns how many
    /// certificates it revokes. A list that cannot be read, or that the cluster CA did
    /// not sign, is refused and the one in force kept.
    pub fn reload_revocation_list(&self) -> Result<usize, NetError> {
        reload_revocation_list(&self.ctx, true)
    }

    /// The incoming connections `peer` holds to this node right now.
    pub fn connections_from(&self, peer: NodeId) -> usize {
        self.ctx.peers.connections_of(peer)
    }

    /// Runs `f` on the state machine inside the driver task (with the current time),
    /// then sends what it produced. The general form of the commands below.
    pub async fn with_node<R, F>(&self, f: F) -> Result<R, NetError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Node, Instant) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cmd: Command = Box::new(move |node, now| {
            let r = f(node, now);
            Box::new(move || {
                let _ = tx.send(r);
            })
        });
        self.inputs
            .send(Input::Command(cmd))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// `CLUSTER MEET`: greet the node at `addr`.
    pub async fn meet(&self, addr: SocketAddr) -> Result<(), NetError> {
        self.with_node(move |n, now| n.meet(now, addr.to_string()))
            .await
    }

    /// `CLUSTER ADDSLOTS`.
    pub async fn add_slots(&self, slots: SlotSet) -> Result<(), NetError> {
        Ok(self
            .with_node(move |n, now| n.add_slots(now, &slots))
            .await??)
    }

    /// `CLUSTER DELSLOTS`.
    pub async fn del_slots(&self, slots: SlotSet) -> Result<(), NetError> {
        self.with_node(move |n, now| n.del_slots(now, &slots)).await
    }

    /// Reports this node's replication offset (gossiped to peers; elections rank
    /// replicas by it).
    pub async fn set_repl_offset(&self, offset: u64) -> Result<(), NetError> {
        self.with_node(move |n, _| n.set_repl_offset(offset)).await
    }

    /// `CLUSTER REPLICATE master`.
    pub async fn replicate(&self, master: NodeId) -> Result<(), NetError> {
        Ok(self
            .with_node(move |n, now| n.replicate(now, master))
            .await??)
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]`, on a replica.
    pub async fn failover(&self, mode: FailoverMode) -> Result<(), NetError> {
        Ok(self
            .with_node(move |n, now| n.failover(now, mode))
            .await??)
    }

    /// `CLUSTER FORGET id`.
    pub async fn forget(&self, id: NodeId) -> Result<(), NetError> {
        Ok(self.with_node(move |n, now| n.forget(now, id)).await??)
    }

    /// May this node accept a write for `slot` now?
    pub async fn write_permission(&self, slot: Slot) -> Result<Result<(), WriteRefusal>, NetError> {
        self.with_node(move |n, now| n.write_permission(now, slot))
            .await
    }

    /// A snapshot of this node's view of the cluster.
    pub async fn view(&self) -> Result<ClusterView, NetError> {
        self.with_node(|n, _| ClusterView {
            id: n.id(),
            state: n.state(),
            is_master: n.is_master(),
            master: n.master(),
            current_epoch: n.current_epoch(),
            config_epoch: n.config_epoch(),
            slots: n.slots().clone(),
            nodes: n.nodes().collect(),
        })
        .await
    }

    /// Stops the node: the driver ends, every connection is closed, and the endpoint
    /// waits (up to a second) for the closes to reach peers.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Stops the node like [`shutdown`](Self::shutdown), through a shared reference;
    /// later calls return at once.
    pub async fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // Dropping `stop` wakes the driver, which shuts down on its own.
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// An outgoing link to one peer: its address and the queue its task sends from.
struct Link {
    addr: String,
    tx: mpsc::Sender<Vec<u8>>,
}

struct Driver {
    node: Node,
    origin: tokio::time::Instant,
    store: StateStore,
    events: broadcast::Sender<Event>,
    links: HashMap<NodeId, Link>,
    repl: Option<ReplDriver>,
    routing: Arc<RoutingCell>,
    /// The state machine reported a change since the routing table was published.
    routing_dirty: bool,
    last_routing: Instant,
    ctx: Ctx,
}

/// The driver's replication state.
struct ReplDriver {
    shared: Arc<Replication>,
    config: crate::repl::ReplConfig,
    dataset: Arc<dyn super::replication::Dataset>,
    /// A full sync in progress: its id, offset and the snapshot bytes so far.
    staged: Option<(crate::repl::ReplId, u64, Vec<u8>)>,
    /// Outgoing replication links (unbounded: replication must not drop messages).
    links: HashMap<NodeId, ReplLink>,
    promotions: u64,
    gate_open: bool,
}

struct ReplLink {
    addr: String,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

/// How often the write gate and the routing table are republished, at most.
const REFRESH: Duration = Duration::from_millis(25);

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    async fn run(mut self, mut inputs: mpsc::Receiver<Input>, mut stop: oneshot::Receiver<()>) {
        let me = self.ctx.me;
        // The state of a fresh or restored node is saved before its first message.
        if self.drain().is_err() {
            return;
        }
        let shared = self.repl.as_ref().map(|r| r.shared.clone());
        loop {
            let mut wake_ms = self.node.poll_timeout().as_millis();
            if let Some(t) = self.repl.as_ref().and_then(ReplDriver::poll_timeout) {
                wake_ms = wake_ms.min(t.as_millis());
            }
            let wake = self.origin + Duration::from_millis(wake_ms);
            let notified = async {
                match &shared {
                    Some(r) => r.notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Timers before inputs, so a peer that floods messages cannot
                // starve failure detection and elections.
                biased;
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                    if let Some(r) = &mut self.repl {
                        r.handle_timeout(now);
                    }
                }
                // The application fed records or started a wait.
                _ = notified => {}
                // The write gate and the routing table are republished regularly.
                _ = tokio::time::sleep(REFRESH) => {}
                input = inputs.recv() => match input {
                    // Unreachable while `ctx` holds a sender; kept for completeness.
                    None => break,
                    Some(Input::Message { from, msg }) => {
                        let now = self.now();
                        if matches!(msg.body, crate::proto::Body::MfStart) {
                            self.quiesce_for_pause();
                        }
                        if let Err(e) = self.node.handle_message(now, from, msg) {
                            self.rejected(from, e);
                        }
                    }
                    Some(Input::Repl { from, msg }) => {
                        let now = self.now();
                        if let Some(r) = &mut self.repl {
                            r.handle(now, from, msg);
                        }
                    }
                    Some(Input::ReplStreamOpened { from }) => {
                        if let Some(r) = &mut self.repl {
                            if let Role::Master(s) = &mut *r.shared.role() {
                                s.disconnected(from);
                            }
                        }
                    }
                    Some(Input::ReplLinkRestored { to }) => {
                        let now = self.now();
                        if let Some(r) = &mut self.repl {
                            if let Role::Replica { sink, master } = &mut *r.shared.role() {
                                if *master == to {
                                    sink.reconnect(now);
                                }
                            }
                        }
                    }
                    Some(Input::Command(cmd)) => {
                        let now = self.now();
                        let reply = cmd(&mut self.node, now);
                        // A command may change slots without an event (SETSLOT
                        // MIGRATING/IMPORTING): publish, then answer.
                        self.routing_dirty = true;
                        let drained = self.drain();
                        reply();
                        if drained.is_err() {
                            break;
                        }
                        continue;
                    }
                },
            }
            if self.drain().is_err() {
                break;
            }
        }
        info!(node = %me, "driver stopped");
        if let Some(r) = &self.repl {
            r.shared
                .set_gate(Err("CLUSTERDOWN the node has stopped".into()));
            *r.shared.role() = Role::Stopped;
            r.shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        // Dropping the links ends their tasks, which close their connections.
        self.links.clear();
    }

    /// Before a master handles MFSTART (which pauses writes and tells the replica the
    /// offset to reach): close the write gate, wait for every write that passed it,
    /// and give the state machine the final offset, so the offset it announces covers
    /// every acknowledged write. If the MFSTART is refused the gate reopens at the
    /// next drain.
    fn quiesce_for_pause(&mut self) {
        if let Some(r) = &mut self.repl {
            r.shared.set_gate(Err(
                "TRYAGAIN writes are paused for a manual failover".into()
            ));
            r.dataset.barrier();
            r.gate_open = false;
            self.node.set_repl_offset(r.shared.offset());
        }
    }

    fn rejected(&self, from: NodeId, e: Rejected) {
        match e {
            Rejected::SenderMismatch { .. } => {
                bump(&self.ctx.counters.sender_mismatches);
                warn!(node = %self.ctx.me, peer = %from, "dropped impersonating message: {e}");
            }
            _ => {
                bump(&self.ctx.counters.messages_rejected);
                debug!(node = %self.ctx.me, peer = %from, "message ignored: {e}");
            }
        }
    }

    /// Drains the state machine's outputs in the order it requires: save, send,
    /// events; then replication (role changes, messages, the application's data, the
    /// write gate) and the routing table. A failed save stops the node (fail-stop, as
    /// Redis exits when it cannot write nodes.conf): sending after it could let a vote
    /// out that a restart forgets.
    fn drain(&mut self) -> Result<(), NetError> {
        if let Some(state) = self.node.poll_save() {
            if let Err(e) = self.store.save(&state) {
                error!(node = %self.ctx.me, "cannot save node state, stopping: {e}");
                return Err(e);
            }
        }
        while let Some(t) = self.node.poll_transmit() {
            self.send(t);
        }
        while let Some(e) = self.node.poll_event() {
            debug!(node = %self.ctx.me, "event {e:?}");
            self.routing_dirty = true;
            // No subscriber is fine.
            let _ = self.events.send(e);
        }
        let now = self.now();
        if let Some(r) = &mut self.repl {
            // The gate closes (and in-flight writes finish) before the role changes
            // or the offset is reported; it opens only after both.
            r.update_gate(now, &self.node, false);
            r.sync_role(now, &self.node);
            r.drain(now, &self.ctx, &self.node);
            self.node.set_repl_offset(r.shared.offset());
            r.update_gate(now, &self.node, true);
        }
        if self.routing_dirty || now.since(self.last_routing) >= 1000 {
            self.routing.publish(Routing::of(&self.node));
            self.routing_dirty = false;
            self.last_routing = now;
        }
        Ok(())
    }

    fn send(&mut self, t: Transmit) {
        let payload = match t.message.to_bytes() {
            Ok(p) => p,
            Err(e) => {
                error!(node = %self.ctx.me, "cannot encode message: {e}");
                return;
            }
        };
        let mut frame = Vec::with_capacity(payload.len() + 4);
        encode_frame(&payload, &mut frame);
        let Some(to) = t.to else {
            tokio::spawn(send_meet(self.ctx.clone(), t.addr, frame));
            return;
        };
        let stale = self
            .links
            .get(&to)
            .is_none_or(|l| l.addr != t.addr || l.tx.is_closed());
        if stale {
            let (tx, rx) = mpsc::channel(LINK_QUEUE);
            tokio::spawn(run_link(self.ctx.clone(), to, t.addr.clone(), PREAMBLE, rx));
            // Replacing a link drops the old sender, which ends the old task.
            self.links.insert(to, Link { addr: t.addr, tx });
        }
        if let Some(link) = self.links.get(&to) {
            if link.tx.try_send(frame).is_err() {
                bump(&self.ctx.counters.dropped_queue_full);
            }
        }
    }
}

impl ReplDriver {
    fn poll_timeout(&self) -> Option<Instant> {
        match &*self.shared.role() {
            Role::Master(s) => s.poll_timeout(),
            Role::Replica { sink, .. } => sink.poll_timeout(),
            Role::Stopped => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut *self.shared.role() {
            Role::Master(s) => s.handle_timeout(now),
            Role::Replica { sink, .. } => sink.handle_timeout(now),
            Role::Stopped => {}
        }
    }

    fn handle(&mut self, now: Instant, from: NodeId, msg: ReplMessage) {
        let r = match &mut *self.shared.role() {
            Role::Master(s) => s.handle_message(now, from, msg),
            // Only the master we replicate speaks to us; others are late or stray.
            Role::Replica { sink, master } if *master == from => sink.handle_message(now, msg),
            _ => Ok(()),
        };
        if let Err(e) = r {
            debug!(peer = %from, "replication message ignored: {e}");
        }
    }

    /// Follows the cluster state machine's idea of this node's role: promotion turns
    /// the replica side into a master (the history continues under a new id), a
    /// demotion turns the master side into a replica of the new master, and a new
    /// master for a replica restarts its handshake there.
    fn sync_role(&mut self, now: Instant, node: &Node) {
        let want = node.master();
        let mut role = self.shared.role();
        match (&mut *role, want) {
            (Role::Master(_), None) | (Role::Stopped, _) => {}
            (Role::Replica { master, .. }, Some(m)) if *master == m => {}
            (Role::Replica { sink, master }, Some(m)) => {
                info!(node = %node.id(), old = %master, new = %m, "replicating a new master");
                *master = m;
                sink.reconnect(now);
            }
            (Role::Master(_), Some(m)) => {
                let Role::Master(source) = std::mem::replace(&mut *role, Role::Stopped) else {
                    return;
                };
                info!(node = %node.id(), master = %m, "now a replica");
                *role = Role::Replica {
                    sink: source.into_replica(now),
                    master: m,
                };
                drop(role);
                // Pending WAITs end with what they had: nothing more can be acked here.
                self.shared
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
            (Role::Replica { .. }, None) => {
                let Role::Replica { sink, .. } = std::mem::replace(&mut *role, Role::Stopped)
                else {
                    return;
                };
                self.promotions += 1;
                let seed = u64::from_le_bytes(node.id().0[..8].try_into().unwrap_or([0; 8]))
                    ^ self.promotions.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ now.as_millis();
                let (source, events) = sink.promote(seed);
                let (id, offset) = (source.replid(), source.offset());
                info!(node = %node.id(), replid = %id.as_str(), offset, "promoted: replication master");
                *role = Role::Master(source);
                drop(role);
                let _ = self.sink_events(events);
                self.dataset.position(id, offset);
            }
        }
    }

    /// Sends what the replication side queued and hands its events to the data.
    fn drain(&mut self, now: Instant, ctx: &Ctx, node: &Node) {
        loop {
            let mut out = Vec::new();
            let mut source_events = Vec::new();
            let mut sink_events = Vec::new();
            match &mut *self.shared.role() {
                Role::Master(s) => {
                    while let Some(t) = s.poll_transmit() {
                        out.push((t.to, t.message));
                    }
                    while let Some(e) = s.poll_event() {
                        source_events.push(e);
                    }
                }
                Role::Replica { sink, master } => {
                    while let Some(m) = sink.poll_transmit() {
                        out.push((*master, m));
                    }
                    while let Some(e) = sink.poll_event() {
                        sink_events.push(e);
                    }
                }
                Role::Stopped => {}
            }
            if out.is_empty() && source_events.is_empty() && sink_events.is_empty() {
                return;
            }
            // Events first: a replica's acknowledgement queued with records (or with
            // the end of a snapshot) must leave only once they are applied.
            for e in source_events {
                self.source_event(now, e);
            }
            if self.sink_events(sink_events) {
                if let Role::Replica { sink, .. } = &mut *self.shared.role() {
                    // The snapshot was refused before the data changed: forget the
                    // history it claimed and ask for a new full sync.
                    *sink = ReplicationSink::new(self.config.clone(), now);
                }
            }
            for (to, msg) in out {
                self.send(ctx, node, to, &msg);
            }
        }
    }

    fn send(&mut self, ctx: &Ctx, node: &Node, to: NodeId, msg: &ReplMessage) {
        let Some(addr) = node.node(to).map(|v| v.addr) else {
            debug!(peer = %to, "replication message for an unknown node dropped");
            return;
        };
        let payload = match msg.to_bytes() {
            Ok(p) => p,
            Err(e) => {
                error!(peer = %to, "cannot encode replication message: {e}");
                return;
            }
        };
        let mut frame = Vec::with_capacity(payload.len() + 4);
        encode_frame(&payload, &mut frame);
        let stale = self
            .links
            .get(&to)
            .is_none_or(|l| l.addr != addr || l.tx.is_closed());
        if stale {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_link(ctx.clone(), to, addr.clone(), REPL_PREAMBLE, rx));
            self.links.insert(to, ReplLink { addr, tx });
        }
        if let Some(link) = self.links.get(&to) {
            let _ = link.tx.send(frame);
        }
    }

    fn source_event(&mut self, _now: Instant, e: SourceEvent) {
        match e {
            SourceEvent::SnapshotNeeded { replica } => {
                let shared = self.shared.clone();
                let dataset = self.dataset.clone();
                tokio::task::spawn_blocking(move || send_snapshot(&shared, &*dataset, replica));
            }
            SourceEvent::ReplicaOnline {
                replica,
                offset,
                partial,
            } => {
                let c = if partial {
                    &self.shared.partial_syncs
                } else {
                    &self.shared.full_syncs
                };
                c.fetch_add(1, Ordering::Relaxed);
                info!(%replica, offset, partial, "replica online");
            }
            SourceEvent::ReplicaDropped { replica, reason } => {
                warn!(%replica, ?reason, "replica dropped")
            }
            SourceEvent::WaitDone { id, acked, .. } => {
                let tx = self
                    .shared
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(acked);
                }
            }
        }
    }

    /// Hands a replica's events to the data; true if a full sync must start over.
    fn sink_events(&mut self, events: Vec<SinkEvent>) -> bool {
        let mut resync = false;
        for e in events {
            match e {
                SinkEvent::Apply { offset, payload } => {
                    if let Err(e) = self.dataset.apply(offset, &payload) {
                        error!(offset, "replicated record not applied: {e}");
                    }
                }
                SinkEvent::Continued { replid, offset } => {
                    info!(replid = %replid.as_str(), offset, "partial resync");
                    self.shared.partial_syncs.fetch_add(1, Ordering::Relaxed);
                    self.dataset.position(replid, offset);
                }
                SinkEvent::FullSyncStarted { replid, offset } => {
                    info!(replid = %replid.as_str(), offset, "full resync started");
                    self.staged = Some((replid, offset, Vec::new()));
                }
                SinkEvent::SnapshotChunk { data } => {
                    if let Some((_, _, buf)) = &mut self.staged {
                        buf.extend_from_slice(&data);
                    }
                }
                SinkEvent::FullSyncDone { offset } => {
                    if let Some((replid, at, buf)) = self.staged.take() {
                        debug_assert_eq!(at, offset);
                        info!(
                            offset,
                            bytes = buf.len(),
                            "full resync: loading the snapshot"
                        );
                        self.shared.full_syncs.fetch_add(1, Ordering::Relaxed);
                        match self.dataset.load(replid, offset, buf) {
                            Ok(()) => {}
                            Err(e @ super::replication::LoadFailure::Rejected(_)) => {
                                error!(offset, "{e}; asking for a new full sync");
                                resync = true;
                            }
                            Err(e) => error!(offset, "{e}"),
                        }
                    }
                }
                SinkEvent::FullSyncAborted => {
                    self.staged = None;
                }
                SinkEvent::LinkDown => warn!("replication link down"),
            }
        }
        resync
    }

    /// Publishes whether writes are allowed for the next moments. Permission is
    /// checked at `now + horizon`: every condition (quorum lease, replica lag) only
    /// gets worse with time, so a write accepted before the published deadline was
    /// allowed when it was accepted.
    fn update_gate(&mut self, now: Instant, node: &Node, may_open: bool) {
        let horizon = (node.config().node_timeout / 10).clamp(10, 500);
        let at = now + horizon;
        let verdict = if let Some(m) = node.master() {
            Err(format!("READONLY this node is a replica of {m}"))
        } else if !node.my_slots().is_empty() || !node.slots().importing().is_empty() {
            // A master that serves no slot yet but imports some takes their keys (and
            // ASKING writes) under the same conditions as any master.
            let permission = match node.my_slots().iter().next() {
                Some(slot) => node.write_permission(at, slot),
                None => node.master_write_status(at),
            };
            match permission {
                Ok(()) => match &*self.shared.role() {
                    Role::Master(s) if !s.write_allowed(at) => {
                        Err("NOREPLICAS not enough good replicas to write".to_string())
                    }
                    Role::Master(_) => Ok(at),
                    _ => Err("CLUSTERDOWN replication is not running".to_string()),
                },
                Err(e) => Err(refusal_text(&e)),
            }
        } else {
            Err("CLUSTERDOWN this node serves no slots".to_string())
        };
        let open = verdict.is_ok();
        if open && !may_open {
            return;
        }
        let withdrawn = self.shared.set_gate(verdict);
        if withdrawn || (self.gate_open && !open) {
            // Every write that passed the old gate is fed before anything reads the
            // offset (a manual failover, a promotion elsewhere).
            self.dataset.barrier();
        }
        self.gate_open = open;
    }
}

/// A write refusal in Redis's words.
fn refusal_text(e: &WriteRefusal) -> String {
    match e {
        WriteRefusal::NotMaster => "READONLY this node is a replica".into(),
        WriteRefusal::NotOwner(_) => "CLUSTERDOWN this node does not serve the slot".into(),
        WriteRefusal::ClusterDown => "CLUSTERDOWN the cluster is down".into(),
        WriteRefusal::Paused => "TRYAGAIN writes are paused for a manual failover".into(),
        other => format!("CLUSTERDOWN {other}"),
    }
}

/// Produces a snapshot for `replica` on a blocking thread: the offset is taken first,
/// then the data is read (every write fed up to the offset is already applied).
fn send_snapshot(shared: &Replication, dataset: &dyn super::replication::Dataset, replica: NodeId) {
    let started = match &mut *shared.role() {
        Role::Master(s) => {
            let offset = s.offset();
            s.begin_snapshot(replica, offset)
        }
        _ => return,
    };
    if let Err(e) = started {
        warn!(%replica, "snapshot not started: {e}");
        return;
    }
    let mut failed = None;
    let r = dataset.snapshot(&mut |chunk| {
        match &mut *shared.role() {
            Role::Master(s) => {
                if let Err(e) = s.snapshot_chunk(replica, &chunk) {
                    failed = Some(e.to_string());
                }
            }
            _ => failed = Some("this node is no longer a master".into()),
        }
        shared.notify.notify_one();
        failed.is_none()
    });
    if let Some(e) = failed {
        warn!(%replica, "snapshot abandoned: {e}");
        return;
    }
    if let Err(e) = r {
        error!(%replica, "snapshot failed: {e}");
        return;
    }
    if let Role::Master(s) = &mut *shared.role() {
        if let Err(e) = s.finish_snapshot(replica) {
            warn!(%replica, "snapshot not finished: {e}");
        }
    }
    shared.notify.notify_one();
}

/// Dials `addr`, expecting node `id` (or any node of the cluster for `None`). The
/// connection is tracked for revocation sweeps until it closes.
async fn dial(ctx: &Ctx, addr: &str, id: Option<NodeId>) -> Result<quinn::Connection, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let config = ctx
        .tls
        .client
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let connecting = ctx
        .endpoint
        .connect_with(config, sock, &server_name_for(id))
        .map_err(|e| e.to_string())?;
    let conn = match tokio::time::timeout(ctx.dial_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("handshake timed out".into()),
    };
    if !ctx.allow_roleless && peer_cert(&conn).is_ok_and(|p| p.legacy) {
        bump(&ctx.counters.role_refusals);
        conn.close(
            close::FORBIDDEN.into(),
            b"certificate names no role (re-issue it with a role)",
        );
        return Err("the node's certificate names no role (allow_roleless is off)".into());
    }
    if let Ok(leaf) = peer_leaf(&conn) {
        ctx.peers.track(&conn, leaf.clone());
        let (peers, c) = (ctx.peers.clone(), conn.clone());
        tokio::spawn(async move {
            c.closed().await;
            peers.untrack(&c);
        });
        // The handshake ran under the list in force when the dial began; a list
        // loaded meanwhile swept only the connections tracked then. Checked after
        // tracking, so a reload either sees this connection or is seen here.
        if ctx.tls.revokes(&leaf) {
            bump(&ctx.counters.revoked_closed);
            conn.close(close::REVOKED.into(), b"certificate revoked");
            return Err("the node's certificate is revoked".into());
        }
    }
    Ok(conn)
}

/// Reads and checks a revocation list file: it must parse and be the cluster CA's.
fn load_revocation_list(
    path: &std::path::Path,
    ca: &CertificateDer<'static>,
    identity: &NodeIdentity,
) -> Result<(RevocationList, Vec<u8>), NetError> {
    let bytes = std::fs::read(path).map_err(|e| {
        NetError::Io(std::io::Error::new(
            e.kind(),
            format!("revocation list {}: {e}", path.display()),
        ))
    })?;
    let list = RevocationList::from_bytes(&bytes)
        .map_err(|e| NetError::Certificate(format!("{}: {e}", path.display())))?;
    if list
        .check_signed_by(ca, identity)
        .map_err(|e| NetError::Certificate(format!("{}: {e}", path.display())))?
    {
        error!(node = %identity.id(), "{}: this node's own certificate is revoked; peers will refuse it", path.display());
    }
    Ok((list, bytes))
}

/// Loads the revocation list file again (if `force`, even if its bytes did not
/// change), installs it in the endpoint's TLS configurations and closes the
/// connections of the certificates it revokes.
fn reload_revocation_list(ctx: &Ctx, force: bool) -> Result<usize, NetError> {
    let tls = &ctx.tls;
    let Some(path) = &tls.revocation_file else {
        return Err(NetError::Certificate(
            "this node was started without a revocation list file".into(),
        ));
    };
    let mut current = tls.revoked.lock().unwrap_or_else(|p| p.into_inner());
    let mut rejected = tls.rejected.lock().unwrap_or_else(|p| p.into_inner());
    if !force {
        let bytes = std::fs::read(path)?;
        let in_force = current.as_ref().filter(|(_, old)| *old == bytes);
        if let Some((list, _)) = in_force {
            return Ok(list.len());
        }
        // Refused already (and warned about): wait for the next version.
        if rejected.as_ref() == Some(&bytes) {
            return Ok(current.as_ref().map_or(0, |(l, _)| l.len()));
        }
    }
    let (list, bytes) = match load_revocation_list(path, &tls.ca, &tls.identity) {
        Ok(loaded) => loaded,
        Err(e) => {
            *rejected = std::fs::read(path).ok();
            return Err(e);
        }
    };
    let server = server_config_with(
        &tls.identity,
        &tls.ca,
        Some(&list),
        tls.idle_timeout,
        &tls.limits,
    )?;
    let client = client_config_with(
        &tls.identity,
        &tls.ca,
        Some(&list),
        tls.idle_timeout,
        &tls.limits,
    )?;
    ctx.endpoint.set_server_config(Some(server));
    *tls.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    bump(&ctx.counters.revocation_loads);
    for conn in ctx.peers.revoked_by(&list) {
        bump(&ctx.counters.revoked_closed);
        warn!(node = %ctx.me, remote = %conn.remote_address(), "closing the connection of a revoked certificate");
        conn.close(close::REVOKED.into(), b"certificate revoked");
    }
    let n = list.len();
    info!(node = %ctx.me, revoked = n, "revocation list loaded from {}", path.display());
    *current = Some((list, bytes));
    Ok(n)
}

/// Checks the revocation list file every `poll` and loads it again when its bytes
/// change. A list that fails to load is logged and the one in force kept.
async fn watch_revocation_list(ctx: Ctx, poll: Duration) {
    let poll = poll.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(poll).await;
        if let Err(e) = reload_revocation_list(&ctx, false) {
            warn!(node = %ctx.me, "revocation list not reloaded (the one in force is kept): {e}");
        }
    }
}

/// Sends one MEET over a connection of its own, then closes it once the peer has
/// read the stream (or after the dial timeout).
async fn send_meet(ctx: Ctx, addr: String, frame: Vec<u8>) {
    let conn = match dial(&ctx, &addr, None).await {
        Ok(c) => c,
        Err(e) => {
            bump(&ctx.counters.dials_failed);
            warn!(node = %ctx.me, %addr, "MEET dial failed: {e}");
            return;
        }
    };
    let sent = async {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&PREAMBLE).await.map_err(|e| e.to_string())?;
        s.write_all(&frame).await.map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        s.stopped().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(ctx.dial_timeout, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(node = %ctx.me, %addr, "MEET not delivered: {e}"),
        Err(_) => debug!(node = %ctx.me, %addr, "MEET not acknowledged in time"),
    }
    conn.close(close::DONE.into(), b"meet sent");
}

/// A queue a link sends from: bounded for the bus (stale messages may be dropped),
/// unbounded for replication (nothing may be dropped while the peer is reachable).
trait Queue: Send + 'static {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send;
}

impl Queue for mpsc::Receiver<Vec<u8>> {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        mpsc::Receiver::recv(self)
    }
}

impl Queue for mpsc::UnboundedReceiver<Vec<u8>> {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
}

/// The task behind one link: dial, open the stream (its preamble names what it
/// carries), write queued frames; on any failure back off (doubling from
/// `backoff_min` to `backoff_max`, reset after a successful dial) and dial again. Ends
/// when the driver drops the queue's sender.
async fn run_link(ctx: Ctx, peer: NodeId, addr: String, preamble: [u8; 4], mut rx: impl Queue) {
    let mut backoff = ctx.backoff_min;
    let mut was_up = false;
    loop {
        match dial(&ctx, &addr, Some(peer)).await {
            Ok(conn) => {
                backoff = ctx.backoff_min;
                debug!(node = %ctx.me, %peer, %addr, "link up");
                let Ok(mut stream) = conn.open_uni().await else {
                    continue;
                };
                let mut ok = stream.write_all(&preamble).await.is_ok();
                // A replica whose link to its master came back asks to continue
                // (what was in flight on the old connection is lost).
                if ok && was_up && preamble == REPL_PREAMBLE {
                    let _ = ctx.inputs.send(Input::ReplLinkRestored { to: peer }).await;
                }
                was_up |= ok;
                while ok {
                    let Some(frame) = rx.recv().await else {
                        let _ = stream.finish();
                        conn.close(close::DONE.into(), b"link closed");
                        return;
                    };
                    ok = stream.write_all(&frame).await.is_ok();
                }
                debug!(node = %ctx.me, %peer, %addr, "link lost");
            }
            Err(e) => {
                bump(&ctx.counters.dials_failed);
                debug!(node = %ctx.me, %peer, %addr, "dial failed: {e}");
            }
        }
        // Frames queued while the peer is unreachable are dropped: they would be
        // stale by the time it is back, and both protocols repeat what matters (a
        // replica notices the gap and asks again from its offset).
        let wake = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                f = rx.recv() => if f.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(ctx.backoff_max);
    }
}

async fn accept_loop(ctx: Ctx) {
    while let Some(incoming) = ctx.endpoint.accept().await {
        tokio::spawn(serve_connection(ctx.clone(), incoming));
    }
}

/// One incoming connection: authenticate the peer from its certificate (its id and
/// roles), admit it under the per-peer limits, then read every stream it opens.
async fn serve_connection(ctx: Ctx, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            bump(&ctx.counters.handshakes_failed);
            warn!(node = %ctx.me, %remote, "handshake refused: {e}");
            return;
        }
    };
    let identified = peer_cert(&conn).and_then(|p| peer_leaf(&conn).map(|l| (p, l)));
    let (peer, leaf) = match identified {
        Ok(p) => p,
        Err(e) => {
            bump(&ctx.counters.handshakes_failed);
            warn!(node = %ctx.me, %remote, "peer not identified: {e}");
            conn.close(close::BAD_IDENTITY.into(), b"no node id in certificate");
            return;
        }
    };
    if peer.legacy {
        if !ctx.allow_roleless {
            bump(&ctx.counters.role_refusals);
            warn!(node = %ctx.me, peer = %peer.id, %remote, "refused: the certificate names no role");
            conn.close(
                close::FORBIDDEN.into(),
                b"certificate names no role (re-issue it with a role)",
            );
            return;
        }
        warn!(node = %ctx.me, peer = %peer.id, %remote, "certificate names no role: taken as node+admin; re-issue it with a role");
    }
    // A handshake that began under the previous revocation list: refused before it
    // can push out the peer's other connections, and checked again once registered,
    // so a reload running in between either sweeps it or is seen here.
    if ctx.tls.revokes(&leaf) {
        bump(&ctx.counters.revoked_closed);
        conn.close(close::REVOKED.into(), b"certificate revoked");
        return;
    }
    let (budget, evicted) = ctx.peers.admit(peer.id, &conn, leaf.clone());
    if ctx.tls.revokes(&leaf) {
        bump(&ctx.counters.revoked_closed);
        conn.close(close::REVOKED.into(), b"certificate revoked");
        drop(budget);
        ctx.peers.leave(peer.id, &conn);
        return;
    }
    for old in evicted {
        bump(&ctx.counters.connections_evicted);
        warn!(node = %ctx.me, peer = %peer.id, "too many connections: closing its oldest");
        old.close(
            close::TOO_MANY_CONNECTIONS.into(),
            b"too many connections from this certificate",
        );
    }
    bump(&ctx.counters.connections_accepted);
    debug!(node = %ctx.me, peer = %peer.describe(), %remote, "connection accepted");
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(stream) => {
                    tokio::spawn(read_stream(ctx.clone(), conn.clone(), peer, stream));
                }
                Err(_) => break,
            },
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    let admission = super::service::Admission {
                        budget: budget.clone(),
                        deadline: ctx.tls.limits.request_deadline,
                        counters: ctx.counters.clone(),
                    };
                    tokio::spawn(super::service::serve_request(
                        ctx.me,
                        ctx.faults.clone(),
                        ctx.service.clone(),
                        admission,
                        peer,
                        send,
                        recv,
                    ));
                }
                Err(_) => break,
            },
        }
    }
    // The registry keeps the budget while requests still hold it (see `leave`).
    drop(budget);
    ctx.peers.leave(peer.id, &conn);
}

/// Reads frames from one unidirectional stream (cluster bus or replication, named by
/// its preamble) and hands each decoded message to the driver. A framing error or an
/// undecodable message closes the whole connection; other peers and the node are
/// unaffected.
async fn read_stream(
    ctx: Ctx,
    conn: quinn::Connection,
    cert: PeerCert,
    mut stream: quinn::RecvStream,
) {
    let peer = cert.id;
    // The bus and replication are for nodes only: a tool's certificate cannot join.
    if !cert.roles.contains(CertRole::Node) {
        bump(&ctx.counters.role_refusals);
        warn!(node = %ctx.me, peer = %cert.describe(), "closing connection: a bus or replication stream from a certificate without the node role");
        conn.close(
            close::FORBIDDEN.into(),
            format!(
                "certificate has roles {}: the cluster bus needs the node role",
                cert.roles
            )
            .as_bytes(),
        );
        return;
    }
    let mut pre = [0u8; PREAMBLE_LEN];
    match stream.read_exact(&mut pre).await {
        Ok(()) => {}
        // A stream that ends before its preamble carries nothing.
        Err(quinn::ReadExactError::FinishedEarly(0)) => return,
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            let e = super::frame::FrameError::Truncated { pending: n };
            refuse(&ctx, &conn, peer, close::FRAME_ERROR, &e.to_string());
            return;
        }
        Err(_) => return,
    }
    let kind = match check_preamble(pre) {
        Ok(k) => k,
        Err(e) => {
            refuse(&ctx, &conn, peer, close::FRAME_ERROR, &e.to_string());
            return;
        }
    };
    let max = match kind {
        StreamKind::Bus => MAX_FRAME_LEN,
        StreamKind::Replication => crate::repl::codec::MAX_MESSAGE_LEN,
        StreamKind::Request => {
            refuse(
                &ctx,
                &conn,
                peer,
                close::BAD_STREAM,
                "request on a unidirectional stream",
            );
            return;
        }
    };
    if kind == StreamKind::Replication
        && ctx
            .inputs
            .send(Input::ReplStreamOpened { from: peer })
            .await
            .is_err()
    {
        return;
    }
    let mut decoder = StreamDecoder::new(max);
    decoder.push(&pre);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                if let Err(e) = decoder.finish() {
                    refuse(&ctx, &conn, peer, close::FRAME_ERROR, &e.to_string());
                }
                return;
            }
            // The connection or stream was closed or reset; nothing to refuse.
            Err(_) => return,
        };
        decoder.push(&buf[..n]);
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    refuse(&ctx, &conn, peer, close::FRAME_ERROR, &e.to_string());
                    return;
                }
            };
            bump(&ctx.counters.frames_received);
            if ctx.faults.is_cut(peer, ctx.me) {
                bump(&ctx.counters.dropped_by_faults);
                continue;
            }
            let input = match kind {
                StreamKind::Bus => match Message::decode(payload) {
                    Ok(msg) => Input::Message { from: peer, msg },
                    Err(e) => {
                        let e = HandleError::Decode(e);
                        refuse(&ctx, &conn, peer, close::BAD_MESSAGE, &e.to_string());
                        return;
                    }
                },
                _ => match ReplMessage::decode(payload) {
                    Ok(msg) => Input::Repl { from: peer, msg },
                    Err(e) => {
                        let e = crate::repl::HandleError::Decode(e);
                        refuse(&ctx, &conn, peer, close::BAD_MESSAGE, &e.to_string());
                        return;
                    }
                },
            };
            if ctx.inputs.send(input).await.is_err() {
                return;
            }
        }
    }
}

/// The request connection to one peer. The async lock makes concurrent first
/// requests wait for one dial instead of each starting a handshake.
type ConnSlot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// The cached request connection to `to`, dialled if there is none (or it closed).
async fn request_conn(ctx: &Ctx, to: NodeId, addr: &str) -> Result<quinn::Connection, NetError> {
    let slot = ctx
        .request_conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(to)
        .or_default()
        .clone();
    let mut conn = slot.lock().await;
    if let Some(c) = conn
        .as_ref()
        .filter(|c| c.close_reason().is_none() && c.remote_address().to_string() == addr)
    {
        return Ok(c.clone());
    }
    let c = dial(ctx, addr, Some(to))
        .await
        .map_err(|e| NetError::Unreachable(format!("{to} at {addr}: {e}")))?;
    *conn = Some(c.clone());
    Ok(c)
}

/// Forgets `dead` as the request connection to `to` (unless it was replaced already).
async fn drop_request_conn(ctx: &Ctx, to: NodeId, dead: &quinn::Connection) {
    let slot = ctx
        .request_conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&to)
        .cloned();
    if let Some(slot) = slot {
        let mut conn = slot.lock().await;
        if conn
            .as_ref()
            .is_some_and(|c| c.stable_id() == dead.stable_id())
        {
            *conn = None;
        }
    }
}

/// Sends one request to `to` and reads its response (see [`ClusterNode::request`]).
async fn request(ctx: &Ctx, to: NodeId, addr: &str, payload: &[u8]) -> Result<Vec<u8>, NetError> {
    if ctx.faults.is_cut(ctx.me, to) {
        return Err(NetError::Unreachable(format!(
            "{to} at {addr}: cut by fault injection"
        )));
    }
    let mut frame = Vec::with_capacity(PREAMBLE_LEN + 4 + payload.len());
    frame.extend_from_slice(&REQUEST_PREAMBLE);
    encode_frame(payload, &mut frame);
    let mut last = String::new();
    // One retry on a fresh connection: a cached one may have died since.
    for _ in 0..2 {
        let conn = request_conn(ctx, to, addr).await?;
        match super::service::exchange(&conn, &frame).await {
            Ok(response) => {
                if ctx.faults.is_cut(to, ctx.me) {
                    return Err(NetError::Unreachable(format!(
                        "{to} at {addr}: response cut by fault injection"
                    )));
                }
                return Ok(response);
            }
            Err(super::service::ExchangeError::Connection(e)) => {
                last = e;
                drop_request_conn(ctx, to, &conn).await;
            }
            Err(super::service::ExchangeError::Refused(e)) => {
                return Err(NetError::Request(format!("{to} at {addr}: {e}")))
            }
        }
    }
    Err(NetError::Unreachable(format!("{to} at {addr}: {last}")))
}

fn refuse(ctx: &Ctx, conn: &quinn::Connection, peer: NodeId, code: u32, why: &str) {
    bump(&ctx.counters.bad_frames);
    warn!(node = %ctx.me, %peer, "closing connection: {why}");
    conn.close(code.into(), why.as_bytes());
}
