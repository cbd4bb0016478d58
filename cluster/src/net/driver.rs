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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::certs::NodeIdentity;
use super::faults::Faults;
use super::frame::{encode_frame, StreamDecoder, MAX_FRAME_LEN, PREAMBLE};
use super::store::StateStore;
use super::tls::{client_config, peer_node_id, server_config, server_name_for};
use super::NetError;
use crate::proto::{
    ClusterState, Config, Event, FailoverMode, HandleError, Instant, Message, Node, NodeId,
    NodeView, Rejected, Slot, SlotSet, SlotTable, Transmit, WriteRefusal,
};

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
}

/// Messages queued per link while it connects; more are dropped (the state machine
/// repeats what matters).
const LINK_QUEUE: usize = 256;

/// How a node is started. [`NetConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
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
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    dials_failed: AtomicU64,
    frames_received: AtomicU64,
    bad_frames: AtomicU64,
    messages_rejected: AtomicU64,
    sender_mismatches: AtomicU64,
    dropped_by_faults: AtomicU64,
    dropped_queue_full: AtomicU64,
}

fn bump(c: &AtomicU64) {
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
        }
    }
}

/// A command run on the node inside the driver task; it replies on its own channel.
type Command = Box<dyn FnOnce(&mut Node, Instant) + Send>;

enum Input {
    /// A message from the authenticated peer `from`.
    Message {
        from: NodeId,
        msg: Message,
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
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
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
}

impl ClusterNode {
    /// Binds the endpoint, restores the node from `config.store` if it holds a saved
    /// state (it must be this node's), and starts the driver. Must be called inside a
    /// tokio runtime.
    pub async fn start(config: NetConfig) -> Result<ClusterNode, NetError> {
        let me = config.identity.id();
        let server = server_config(&config.identity, &config.ca, config.idle_timeout)?;
        let client = client_config(&config.identity, &config.ca, config.idle_timeout)?;
        let mut endpoint = quinn::Endpoint::server(server, config.bind)?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr()?;
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());

        let origin = tokio::time::Instant::now();
        let node = match config.store.load()? {
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

        let (inputs, input_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let (stop, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let ctx = Ctx {
            me,
            endpoint: endpoint.clone(),
            inputs: inputs.clone(),
            faults: config.faults.clone(),
            counters: counters.clone(),
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max.max(config.backoff_min),
            dial_timeout: config.idle_timeout,
        };
        let accept = tokio::spawn(accept_loop(ctx.clone()));
        let driver = Driver {
            node,
            origin,
            store: config.store,
            events: events.clone(),
            links: HashMap::new(),
            ctx,
        };
        let task = tokio::spawn(async move {
            driver.run(input_rx, stop_rx).await;
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
            stop: Some(stop),
            task: Some(task),
        })
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

    /// Runs `f` on the state machine inside the driver task (with the current time),
    /// then sends what it produced. The general form of the commands below.
    pub async fn with_node<R, F>(&self, f: F) -> Result<R, NetError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Node, Instant) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cmd: Command = Box::new(move |node, now| {
            let _ = tx.send(f(node, now));
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
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // Dropping `stop` wakes the driver, which shuts down on its own.
        self.stop.take();
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
    ctx: Ctx,
}

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
        loop {
            let wake = self.origin + Duration::from_millis(self.node.poll_timeout().as_millis());
            tokio::select! {
                // Timers before inputs, so a peer that floods messages cannot
                // starve failure detection and elections.
                biased;
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
                input = inputs.recv() => match input {
                    // Unreachable while `ctx` holds a sender; kept for completeness.
                    None => break,
                    Some(Input::Message { from, msg }) => {
                        let now = self.now();
                        if let Err(e) = self.node.handle_message(now, from, msg) {
                            self.rejected(from, e);
                        }
                    }
                    Some(Input::Command(cmd)) => {
                        let now = self.now();
                        cmd(&mut self.node, now);
                    }
                },
            }
            if self.drain().is_err() {
                break;
            }
        }
        info!(node = %me, "driver stopped");
        // Dropping the links ends their tasks, which close their connections.
        self.links.clear();
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
    /// events. A failed save stops the node (fail-stop, as Redis exits when it cannot
    /// write nodes.conf): sending after it could let a vote out that a restart forgets.
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
            // No subscriber is fine.
            let _ = self.events.send(e);
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
            tokio::spawn(run_link(self.ctx.clone(), to, t.addr.clone(), rx));
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

/// Dials `addr`, expecting node `id` (or any node of the cluster for `None`).
async fn dial(ctx: &Ctx, addr: &str, id: Option<NodeId>) -> Result<quinn::Connection, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let connecting = ctx
        .endpoint
        .connect(sock, &server_name_for(id))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ctx.dial_timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
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

/// The task behind one [`Link`]: dial, open the stream, write queued frames; on any
/// failure back off (doubling from `backoff_min` to `backoff_max`, reset after a
/// successful dial) and dial again. Ends when the driver drops the queue's sender.
async fn run_link(ctx: Ctx, peer: NodeId, addr: String, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut backoff = ctx.backoff_min;
    loop {
        match dial(&ctx, &addr, Some(peer)).await {
            Ok(conn) => {
                backoff = ctx.backoff_min;
                debug!(node = %ctx.me, %peer, %addr, "link up");
                let Ok(mut stream) = conn.open_uni().await else {
                    continue;
                };
                let mut ok = stream.write_all(&PREAMBLE).await.is_ok();
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
        // stale by the time it is back, and the state machine repeats what matters.
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

/// One incoming connection: authenticate the peer from its certificate, then read
/// every stream it opens.
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
    let peer = match peer_node_id(&conn) {
        Ok(p) => p,
        Err(e) => {
            bump(&ctx.counters.handshakes_failed);
            warn!(node = %ctx.me, %remote, "peer not identified: {e}");
            conn.close(close::BAD_IDENTITY.into(), b"no node id in certificate");
            return;
        }
    };
    bump(&ctx.counters.connections_accepted);
    debug!(node = %ctx.me, %peer, %remote, "connection accepted");
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_stream(ctx.clone(), conn.clone(), peer, stream));
    }
}

/// Reads frames from one stream and hands each decoded message to the driver. A
/// framing error or an undecodable message closes the whole connection; other peers
/// and the node are unaffected.
async fn read_stream(
    ctx: Ctx,
    conn: quinn::Connection,
    peer: NodeId,
    mut stream: quinn::RecvStream,
) {
    let mut decoder = StreamDecoder::new(MAX_FRAME_LEN);
    let mut buf = vec![0u8; 16 * 1024];
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
            let msg = match Message::decode(payload) {
                Ok(m) => m,
                Err(e) => {
                    let e = HandleError::Decode(e);
                    refuse(&ctx, &conn, peer, close::BAD_MESSAGE, &e.to_string());
                    return;
                }
            };
            if ctx
                .inputs
                .send(Input::Message { from: peer, msg })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn refuse(ctx: &Ctx, conn: &quinn::Connection, peer: NodeId, code: u32, why: &str) {
    bump(&ctx.counters.bad_frames);
    warn!(node = %ctx.me, %peer, "closing connection: {why}");
    conn.close(code.into(), why.as_bytes());
}
