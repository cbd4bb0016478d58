//! The TCP server: accepts clients (over TLS too, with feature `resp-tls`), reads
//! their requests (pipelined: every complete request in the buffer runs before the
//! replies are written, in one write), enforces the limits, and keeps the client table
//! `CLIENT LIST` / `CLIENT KILL` read.
//!
//! The connection loop is generic over the stream, so a plain connection is served
//! from its `TcpStream` as it is, with no boxing or extra buffer on its path.

use super::codec::{parse_request, Value};
use super::keyspace::Keyspace;
use super::latency::{CommandLatency, ServerLatency};
use super::pubsub::{Bridge, Notice, NotifyFlags, Registry};
use super::session::{Flow, Session};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
#[cfg(feature = "resp-tls")]
use tokio_rustls::{rustls, TlsAcceptor};

/// How long a TLS client has to complete its handshake. A handshake in progress holds
/// a task and a socket but not a client slot (`maxclients` counts a TLS client once
/// its handshake is done, so the refusal can be read), hence the bound.
#[cfg(feature = "resp-tls")]
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing TLS connection may take to send its `close_notify` (a client
/// that reads nothing would otherwise hold its task).
#[cfg(feature = "resp-tls")]
const TLS_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A user of the server besides `default` (ACL-lite): a password, and whether it may
/// only run commands that do not write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespUser {
    /// The user name (`AUTH name password`).
    pub name: String,
    /// The password.
    pub password: String,
    /// Refused every command flagged `write` (Redis's `NOPERM`).
    pub read_only: bool,
}

/// The server's settings, named as Redis names them.
#[derive(Clone, Debug)]
pub struct RespConfig {
    /// `requirepass`: the `default` user's password. Without it, and without
    /// `users`, connections start authenticated, as in Redis.
    pub requirepass: Option<String>,
    /// More users, authenticated with `AUTH name password` or `HELLO 3 AUTH name
    /// password`.
    pub users: Vec<RespUser>,
    /// `maxclients`: more connections are answered "ERR max number of clients reached"
    /// and closed (default 10000).
    pub maxclients: usize,
    /// `timeout`: a client idle this long is closed (`None`: never, Redis's 0).
    pub timeout: Option<Duration>,
    /// `client-query-buffer-limit`: a client whose unparsed input exceeds this is
    /// closed (default 1 GiB).
    pub client_query_buffer_limit: usize,
    /// `proto-max-bulk-len`: the longest bulk string a request may carry (default
    /// 512 MiB).
    pub proto_max_bulk_len: usize,
    /// `client-output-buffer-limit normal` hard limit: a client whose pending replies
    /// exceed this is closed (0: no limit, Redis's default for normal clients).
    pub output_buffer_limit: usize,
    /// `notify-keyspace-events`: which keyspace notifications subscribers get (none by
    /// default, as in Redis).
    pub notify_keyspace_events: NotifyFlags,
    /// `latency-tracking`: per-command latency histograms for `LATENCY HISTOGRAM`
    /// (on by default, as in Redis 7).
    pub latency_tracking: bool,
    /// `latency-monitor-threshold`: commands taking at least this many milliseconds
    /// are latency-monitor samples (`LATENCY LATEST`); 0, the default, turns the
    /// monitor off.
    pub latency_monitor_threshold_ms: u64,
    /// `slowlog-log-slower-than`: commands taking at least this many microseconds go
    /// to `SLOWLOG` (Redis's default 10000; 0 logs every command; negative, none).
    pub slowlog_log_slower_than: i64,
    /// `slowlog-max-len`: the slowlog keeps this many newest entries (default 128).
    pub slowlog_max_len: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            requirepass: None,
            users: Vec::new(),
            maxclients: 10_000,
            timeout: None,
            client_query_buffer_limit: 1 << 30,
            proto_max_bulk_len: 512 << 20,
            output_buffer_limit: 0,
            notify_keyspace_events: NotifyFlags::default(),
            latency_tracking: true,
            latency_monitor_threshold_ms: 0,
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
        }
    }
}

/// One connected client, as `CLIENT LIST` shows it and `CLIENT KILL` reaches it.
pub(crate) struct ClientEntry {
    pub(crate) id: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) laddr: SocketAddr,
    pub(crate) created: Instant,
    pub(crate) name: Mutex<Option<String>>,
    pub(crate) user: Mutex<String>,
    /// Milliseconds since `created` of the last command.
    pub(crate) last_active_ms: AtomicU64,
    pub(crate) last_cmd: Mutex<&'static str>,
    pub(crate) resp3: AtomicBool,
    pub(crate) killed: AtomicBool,
    pub(crate) kill: Notify,
    /// The connection's command latency, added once per batch.
    pub(crate) latency: Mutex<CommandLatency>,
}

impl ClientEntry {
    /// This client's `CLIENT LIST` / `CLIENT INFO` line (without the newline).
    pub(crate) fn line(&self) -> String {
        let lock = |m: &Mutex<Option<String>>| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default()
        };
        let age = self.created.elapsed();
        let idle = age
            .as_millis()
            .saturating_sub(u128::from(self.last_active_ms.load(Ordering::Relaxed)))
            / 1000;
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 \
             ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
             oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr,
            lock(&self.name),
            age.as_secs(),
            idle,
            self.last_cmd.lock().unwrap_or_else(PoisonError::into_inner),
            self.user.lock().unwrap_or_else(PoisonError::into_inner),
            if self.resp3.load(Ordering::Relaxed) {
                3
            } else {
                2
            },
        )
    }
}

/// What every connection shares: the keyspace, the settings, the clients.
pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) config: RwLock<RespConfig>,
    pub(crate) clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    pub(crate) connected: AtomicUsize,
    pub(crate) next_id: AtomicU64,
    pub(crate) started: Instant,
    /// Bumped by every `CONFIG SET`: connections re-read the settings they copy
    /// when it moves.
    pub(crate) config_gen: AtomicU64,
    /// Connections accepted and refused.
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Keyspace notifications, started by the first subscriber.
    pub(crate) bridge: Mutex<Option<Bridge>>,
    /// The transaction lock and the command count, one lane per worker thread.
    pub(crate) lanes: Lanes,
    /// Subscriber counts per channel and pattern.
    pub(crate) registry: Mutex<Registry>,
    /// Command latency of connections that closed, and the latency monitor.
    pub(crate) latency: Mutex<ServerLatency>,
}

impl<S> Shared<S> {
    pub(crate) fn config(&self) -> std::sync::RwLockReadGuard<'_, RespConfig> {
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn clients(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientEntry>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn latency(&self) -> std::sync::MutexGuard<'_, ServerLatency> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Keyspace> Shared<S> {
    /// A receiver of keyspace notifications (the bridge starts on the first call).
    pub(crate) fn notices(&self) -> tokio::sync::broadcast::Receiver<Arc<Notice>> {
        let mut bridge = self.bridge.lock().unwrap_or_else(PoisonError::into_inner);
        bridge
            .get_or_insert_with(|| Bridge::start(self.store.cache().subscribe()))
            .sender
            .subscribe()
    }
}

/// How many lanes: more than the worker threads of any runtime this serves, so that
/// threads rarely share one.
const LANES: usize = 16;

/// What every batch of requests touches besides its own connection: the shared side of
/// the transaction lock (`EXEC` takes every lane's exclusive side, so a transaction's
/// commands run with no other client's command between them, as in Redis) and
/// `total_commands_processed`. Each worker thread has its lane, on a cache line of its
/// own, so batches on different cores do not write the same memory.
pub(crate) struct Lanes {
    lanes: Box<[Lane]>,
}

#[repr(align(128))]
#[derive(Default)]
struct Lane {
    exec: RwLock<()>,
    commands: AtomicU64,
}

/// A batch's hold on its lane.
pub(crate) struct LaneGuard<'a> {
    _shared: std::sync::RwLockReadGuard<'a, ()>,
    lane: &'a Lane,
}

impl LaneGuard<'_> {
    /// Counts `n` commands.
    pub(crate) fn count(&self, n: u64) {
        self.lane.commands.fetch_add(n, Ordering::Relaxed);
    }
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            lanes: (0..LANES).map(|_| Lane::default()).collect(),
        }
    }

    /// This thread's lane, held shared.
    pub(crate) fn enter(&self) -> LaneGuard<'_> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static LANE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LANES;
        }
        let lane = &self.lanes[LANE.with(|l| *l)];
        LaneGuard {
            _shared: lane.exec.read().unwrap_or_else(PoisonError::into_inner),
            lane,
        }
    }

    /// Every lane held exclusively (`EXEC`), taken in order.
    pub(crate) fn exclusive(&self) -> Vec<std::sync::RwLockWriteGuard<'_, ()>> {
        self.lanes
            .iter()
            .map(|l| l.exec.write().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }

    /// `total_commands_processed`.
    pub(crate) fn commands(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.commands.load(Ordering::Relaxed))
            .sum()
    }

    /// `CONFIG RESETSTAT`.
    pub(crate) fn reset_commands(&self) {
        for l in self.lanes.iter() {
            l.commands.store(0, Ordering::Relaxed);
        }
    }
}

/// The settings a connection reads on every batch, copied from [`RespConfig`] when it
/// changes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSettings {
    gen: u64,
    max_bulk: usize,
    query_limit: usize,
    out_limit: usize,
    timeout: Option<Duration>,
    pub(crate) latency_tracking: bool,
    pub(crate) latency_monitor_us: u64,
    pub(crate) slowlog_us: Option<u64>,
    pub(crate) slowlog_max_len: usize,
}

impl<S> Shared<S> {
    /// The settings for a batch: `cached` unless a `CONFIG SET` came since.
    pub(crate) fn batch_settings(&self, cached: &mut Option<BatchSettings>) -> BatchSettings {
        let gen = self.config_gen.load(Ordering::Acquire);
        match *cached {
            Some(b) if b.gen == gen => b,
            _ => {
                let c = self.config();
                let b = BatchSettings {
                    gen,
                    max_bulk: c.proto_max_bulk_len,
                    query_limit: c.client_query_buffer_limit,
                    out_limit: c.output_buffer_limit,
                    timeout: c.timeout,
                    latency_tracking: c.latency_tracking,
                    latency_monitor_us: c.latency_monitor_threshold_ms.saturating_mul(1000),
                    slowlog_us: u64::try_from(c.slowlog_log_slower_than).ok(),
                    slowlog_max_len: c.slowlog_max_len,
                };
                *cached = Some(b);
                b
            }
        }
    }
}

/// A RESP server over a [`Keyspace`]: a `Cache<String, Vec<u8>, W>` or a
/// `ClusterCache<String, Vec<u8>, W>`. Cheap to clone (one shared state).
pub struct RespServer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for RespServer<S> {
    fn clone(&self) -> Self {
        RespServer {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Keyspace> RespServer<S> {
    /// A server for `store` with `config`.
    pub fn new(store: S, config: RespConfig) -> Self {
        RespServer {
            shared: Arc::new(Shared {
                store,
                config: RwLock::new(config),
                clients: Mutex::new(BTreeMap::new()),
                connected: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                started: Instant::now(),
                config_gen: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                bridge: Mutex::new(None),
                lanes: Lanes::new(),
                registry: Mutex::new(Registry::default()),
                latency: Mutex::new(ServerLatency::default()),
            }),
        }
    }

    /// How many clients are connected.
    pub fn connected_clients(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Accepts clients on `listener` until the task is dropped or aborted; each is
    /// served on a task of its own. Accept errors (out of file descriptors) are logged
    /// and retried after a pause; one client's failure never stops the server.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let laddr = listener.local_addr()?;
        loop {
            let (mut stream, addr) = accept(&listener, laddr).await;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                client(shared, &mut stream, addr, laddr).await;
            });
        }
    }

    /// As [`serve`](Self::serve), for clients speaking TLS (Redis's `tls-port`):
    /// each connection's handshake runs on its own task with `tls` (its certificate,
    /// and whether client certificates are required, as the `ServerConfig`'s client
    /// verifier says), then the client is served as a plain one is.
    ///
    /// A handshake that fails (a client speaking plain RESP, an untrusted or missing
    /// client certificate) or takes more than 10 seconds closes that connection only,
    /// with the reason logged. A server may serve plain and TLS listeners at once
    /// (`serve` and `serve_tls` on clones): their clients share the keyspace, the
    /// users and the limits, and see each other in `CLIENT LIST`.
    ///
    /// ```no_run
    /// # async fn run(tls: std::sync::Arc<larder::resp::rustls::ServerConfig>) -> std::io::Result<()> {
    /// use larder::resp::{RespConfig, RespServer};
    /// use larder::Cache;
    ///
    /// let cache: Cache<String, Vec<u8>> = Cache::builder().build();
    /// let server = RespServer::new(cache, RespConfig::default());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:6380").await?;
    /// server.serve_tls(listener, tls).await
    /// # }
    /// ```
    #[cfg(feature = "resp-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "resp-tls")))]
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<()> {
        let laddr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(tls);
        loop {
            let (stream, addr) = accept(&listener, laddr).await;
            tokio::spawn(tls_client(
                self.shared.clone(),
                acceptor.clone(),
                stream,
                addr,
                laddr,
            ));
        }
    }
}

/// A TLS client: its handshake (bounded in time; a failure closes this connection
/// only, logged), then the client as a plain one is served, then `close_notify`.
#[cfg(feature = "resp-tls")]
async fn tls_client<S: Keyspace>(
    shared: Arc<Shared<S>>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    laddr: SocketAddr,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let mut stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            log_info(format_args!(
                "resp {laddr}: TLS handshake with {addr} failed: {e}"
            ));
            return;
        }
        Err(_) => {
            log_info(format_args!(
                "resp {laddr}: TLS handshake with {addr} failed: not done within \
                 {TLS_HANDSHAKE_TIMEOUT:?}"
            ));
            return;
        }
    };
    client(shared, &mut stream, addr, laddr).await;
    // close_notify, so the client can tell a close from a truncation.
    let _ = tokio::time::timeout(TLS_CLOSE_TIMEOUT, stream.shutdown()).await;
}

/// How a thread of [`RespServer::spawn`] serves a connection it is dealt.
#[derive(Clone)]
enum Transport {
    Plain,
    #[cfg(feature = "resp-tls")]
    Tls(TlsAcceptor),
}

/// The next client of `listener`, with Nagle's algorithm off (replies go out as soon
/// as a batch is written). Accept errors (out of file descriptors) are logged and
/// retried after a pause.
async fn accept(listener: &TcpListener, laddr: SocketAddr) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                return (stream, addr);
            }
            Err(e) => {
                log_warn(format_args!("resp {laddr}: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Writes `bytes` and flushes: a no-op for a `TcpStream`, and what sends the records
/// a TLS stream still holds once its socket would block.
async fn send<T: AsyncWrite + Unpin>(stream: &mut T, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

impl<S: Keyspace> RespServer<S> {
    /// Serves `listener` on `threads` threads of its own, each an event loop (a
    /// current-thread tokio runtime) that keeps the connections it is dealt: a
    /// connection's requests are read, run and answered on one thread, with no
    /// hand-over between threads and no work stealing (Redis's event loop, one per
    /// core). The first thread also accepts, and deals connections round-robin.
    ///
    /// Dropping the returned handle, or [`RespThreads::stop`], closes the listener
    /// and every connection.
    ///
    /// `WAIT` is awaited by the waiting connection alone; `SAVE` runs on its
    /// connection's thread and holds up that thread's other connections until it
    /// ends (Redis's holds up all of them).
    pub fn spawn(self, listener: std::net::TcpListener, threads: usize) -> io::Result<RespThreads> {
        self.spawn_with(listener, threads, Transport::Plain)
    }

    /// As [`spawn`](Self::spawn), for clients speaking TLS (see
    /// [`serve_tls`](Self::serve_tls)): the handshake runs on the thread that keeps
    /// the connection.
    #[cfg(feature = "resp-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "resp-tls")))]
    pub fn spawn_tls(
        self,
        listener: std::net::TcpListener,
        threads: usize,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<RespThreads> {
        self.spawn_with(listener, threads, Transport::Tls(TlsAcceptor::from(tls)))
    }

    fn spawn_with(
        self,
        listener: std::net::TcpListener,
        threads: usize,
        transport: Transport,
    ) -> io::Result<RespThreads> {
        let threads = threads.max(1);
        listener.set_nonblocking(true)?;
        let laddr = listener.local_addr()?;
        let (stop, _) = tokio::sync::watch::channel(false);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>())
            .unzip();
        let mut listener = Some(listener);
        let mut handles = Vec::with_capacity(threads);
        for (i, mut dealt) in receivers.into_iter().enumerate() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let acceptor = match listener.take() {
                Some(l) => {
                    // Registered with this thread's runtime (entered, not blocked on:
                    // the caller may be inside a runtime of its own).
                    let _entered = rt.enter();
                    Some((TcpListener::from_std(l)?, senders.clone()))
                }
                None => None,
            };
            let shared = self.shared.clone();
            let transport = transport.clone();
            let mut stopped = stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("larder-resp-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        if let Some((listener, senders)) = acceptor {
                            tokio::spawn(deal(listener, laddr, senders));
                        }
                        let serve = async {
                            while let Some((stream, peer)) = dealt.recv().await {
                                match TcpStream::from_std(stream) {
                                    Ok(mut stream) => {
                                        let shared = shared.clone();
                                        match &transport {
                                            Transport::Plain => tokio::spawn(async move {
                                                client(shared, &mut stream, peer, laddr).await
                                            }),
                                            #[cfg(feature = "resp-tls")]
                                            Transport::Tls(acceptor) => tokio::spawn(tls_client(
                                                shared,
                                                acceptor.clone(),
                                                stream,
                                                peer,
                                                laddr,
                                            )),
                                        };
                                    }
                                    Err(e) => {
                                        log_warn(format_args!("resp {laddr}: dropped {peer}: {e}"))
                                    }
                                }
                            }
                        };
                        tokio::select! {
                            () = serve => {}
                            _ = stopped.wait_for(|s| *s) => {}
                        }
                    });
                    // The runtime drops here, and with it every connection of this
                    // thread.
                });
            match thread {
                Ok(t) => handles.push(t),
                Err(e) => {
                    let _ = stop.send(true);
                    for t in handles {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(RespThreads {
            addr: laddr,
            stop,
            threads: handles,
        })
    }
}

/// Accepts connections and deals them round-robin to the threads.
async fn deal(
    listener: TcpListener,
    laddr: SocketAddr,
    senders: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
) {
    let mut next = 0;
    loop {
        let (stream, peer) = accept(&listener, laddr).await;
        match stream.into_std() {
            Ok(stream) => {
                // A thread that has stopped drops what it is sent.
                let _ = senders[next % senders.len()].send((stream, peer));
                next += 1;
            }
            Err(e) => log_warn(format_args!("resp {laddr}: dropped {peer}: {e}")),
        }
    }
}

/// A RESP server running on threads of its own ([`RespServer::spawn`]). Dropping it
/// stops the server and waits for its threads to end (a few milliseconds): from async
/// code, drop it or call [`stop`](Self::stop) inside `tokio::task::block_in_place` or
/// `spawn_blocking`, as larder-node does.
#[derive(Debug)]
pub struct RespThreads {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RespThreads {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection; returns when the threads have
    /// ended.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RespThreads {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn log_warn(args: std::fmt::Arguments<'_>) {
    tracing::warn!("{args}");
}

fn log_info(args: std::fmt::Arguments<'_>) {
    tracing::info!("{args}");
}

/// Decrements the connected count and removes the client from the table however its
/// task ends.
struct Registered<'a, S> {
    shared: &'a Shared<S>,
    id: u64,
}

impl<S> Drop for Registered<'_, S> {
    fn drop(&mut self) {
        // The counts move under the server's latency lock, which a reader of
        // `LATENCY HISTOGRAM` holds while it sums: it sees them once, here or there.
        {
            let mut server = self.shared.latency();
            let entry = self.shared.clients().get(&self.id).cloned();
            if let Some(entry) = entry {
                entry
                    .latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain_into(&mut server.retired);
            }
        }
        self.shared.clients().remove(&self.id);
        self.shared.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn client<S: Keyspace, T: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared<S>>,
    stream: &mut T,
    addr: SocketAddr,
    laddr: SocketAddr,
) {
    let (maxclients, needs_auth) = {
        let c = shared.config();
        (c.maxclients, c.requirepass.is_some() || !c.users.is_empty())
    };
    if shared.connected.fetch_add(1, Ordering::Relaxed) >= maxclients {
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        log_warn(format_args!(
            "resp: refused {addr}: max number of clients reached ({maxclients})"
        ));
        let _ = send(stream, b"-ERR max number of clients reached\r\n").await;
        return;
    }
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(ClientEntry {
        id,
        addr,
        laddr,
        created: Instant::now(),
        name: Mutex::new(None),
        user: Mutex::new("default".into()),
        last_active_ms: AtomicU64::new(0),
        last_cmd: Mutex::new("NULL"),
        resp3: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        kill: Notify::new(),
        latency: Mutex::new(CommandLatency::default()),
    });
    shared.clients().insert(id, entry.clone());
    let _registered = Registered {
        shared: &shared,
        id,
    };
    let mut session = Session::new(&shared, entry.clone(), !needs_auth);
    if let Err(why) = run(&shared, &mut session, stream, &entry).await {
        log_info(format_args!(
            "resp: closed client id={id} addr={addr}: {why}"
        ));
    }
}

/// Serves one connection until it closes; the error says why it was closed when the
/// server closed it.
async fn run<S: Keyspace, T: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared<S>,
    session: &mut Session<'_, S>,
    stream: &mut T,
    entry: &ClientEntry,
) -> Result<(), String> {
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut settings = None;
    loop {
        let b = shared.batch_settings(&mut settings);
        session.begin_batch(&b);
        let (max_bulk, query_limit, out_limit, timeout) =
            (b.max_bulk, b.query_limit, b.out_limit, b.timeout);
        let mut start = 0;
        let mut flow = Flow::Continue;
        // Commands run under the shared side of the transaction lock, taken once per
        // batch (see `Lanes`).
        let failure = {
            let mut shared_side = Some(shared.lanes.enter());
            let mut failure = None;
            while flow == Flow::Continue {
                match parse_request(&input[start..], max_bulk) {
                    Ok(Some((args, used))) => {
                        let base = start;
                        start += used;
                        if args.is_empty() {
                            continue;
                        }
                        let argv = args.slices(&input[base..]);
                        if session.is_exec(&argv) {
                            if let Some(lane) = shared_side.take() {
                                session.publish(&lane);
                            }
                            let exclusive = shared.lanes.exclusive();
                            flow = session.execute(&argv, &mut out);
                            drop(exclusive);
                            shared_side = Some(shared.lanes.enter());
                        } else {
                            flow = session.execute(&argv, &mut out);
                        }
                        if out_limit > 0 && out.len() > out_limit {
                            failure = Some(format!(
                                "output buffer of {} bytes over the limit of {out_limit} \
                                 (client-output-buffer-limit)",
                                out.len()
                            ));
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        Value::error(format!("ERR {}", e.redis_text()))
                            .encode(session.protocol(), &mut out);
                        failure = Some(format!("protocol error: {e}"));
                        break;
                    }
                }
            }
            if let Some(lane) = shared_side {
                session.publish(&lane);
            }
            failure
        };
        if let Some(why) = failure {
            if why.starts_with("protocol error") {
                let _ = send(stream, &out).await;
            }
            return Err(why);
        }
        if !out.is_empty() {
            send(stream, &out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            out.clear();
            if out.capacity() > 1 << 20 {
                out.shrink_to(16 * 1024);
            }
        }
        if flow == Flow::Close {
            return Ok(());
        }
        if let Flow::Wait {
            replicas,
            timeout_ms,
        } = flow
        {
            // Only this client waits; the rest of its pipeline runs after the answer.
            session.finish_wait(replicas, timeout_ms, &mut out).await;
            send(stream, &out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            out.clear();
            input.drain(..start);
            continue;
        }
        input.drain(..start);
        if input.len() > query_limit {
            return Err(format!(
                "query buffer of {} bytes over the limit of {query_limit} \
                 (client-query-buffer-limit)",
                input.len()
            ));
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024.max(input.len()));
        }
        // Subscribed clients are not idle-closed (Redis exempts them from `timeout`).
        let timeout = timeout.filter(|_| !session.subscribed());
        let read = async {
            loop {
                tokio::select! {
                    r = stream.read_buf(&mut input) => return Ok(Some(r)),
                    () = entry.kill.notified() => return Ok(None),
                    n = session.next_notice() => {
                        match n {
                            Ok(notice) => {
                                session.deliver(&notice, &mut out);
                                if !out.is_empty() {
                                    if let Err(e) = send(stream, &out).await {
                                        return Err(format!("write failed: {e}"));
                                    }
                                    out.clear();
                                }
                            }
                            Err(lagged) => return Err(format!(
                                "fell {lagged} keyspace notifications behind \
                                 (client-output-buffer-limit pubsub)"
                            )),
                        }
                    }
                }
            }
        };
        let r = match timeout {
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(r) => r?,
                Err(_) => return Err(format!("idle for {t:?} (timeout)")),
            },
            None => read.await?,
        };
        match r {
            None => return Err("killed (CLIENT KILL)".into()),
            Some(Ok(0)) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read failed: {e}")),
        }
        if entry.killed.load(Ordering::Relaxed) {
            return Err("killed (CLIENT KILL)".into());
        }
    }
}
