//! The TCP server: accepts clients (over TLS too, with feature `resp-tls`), reads
//! their requests (pipelined: every complete request in the buffer runs before the
//! replies are written, in one write), enforces the limits, and keeps the client table
//! `CLIENT LIST` / `CLIENT KILL` read.
//!
//! The connection loop is generic over the stream, so a plain connection is served
//! from its `TcpStream` as it is, with no boxing or extra buffer on its path.

use super::codec::{parse_request, Value};
use super::keyspace::Keyspace;
use super::pubsub::{Bridge, Notice, NotifyFlags};
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
    /// Commands processed (INFO's `total_commands_processed`).
    pub(crate) commands: AtomicU64,
    /// Connections accepted and refused.
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Keyspace notifications, started by the first subscriber.
    pub(crate) bridge: Mutex<Option<Bridge>>,
    /// Held shared while commands run, exclusively by `EXEC`.
    pub(crate) exec_lock: RwLock<()>,
}

impl<S> Shared<S> {
    pub(crate) fn config(&self) -> std::sync::RwLockReadGuard<'_, RespConfig> {
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn clients(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientEntry>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
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
                commands: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                bridge: Mutex::new(None),
                exec_lock: RwLock::new(()),
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
            let shared = self.shared.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
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
            });
        }
    }
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
    loop {
        let (max_bulk, query_limit, out_limit, timeout) = {
            let c = shared.config();
            (
                c.proto_max_bulk_len,
                c.client_query_buffer_limit,
                c.output_buffer_limit,
                c.timeout,
            )
        };
        let mut start = 0;
        let mut flow = Flow::Continue;
        // Commands run under the shared side of the transaction lock, taken once per
        // batch; EXEC takes the exclusive side, so a transaction's commands run with
        // no other client's command between them, as in Redis.
        let failure = {
            let mut shared_side = Some(
                shared
                    .exec_lock
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            );
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
                            drop(shared_side.take());
                            let exclusive = shared
                                .exec_lock
                                .write()
                                .unwrap_or_else(PoisonError::into_inner);
                            flow = session.execute(&argv, &mut out);
                            drop(exclusive);
                            shared_side = Some(
                                shared
                                    .exec_lock
                                    .read()
                                    .unwrap_or_else(PoisonError::into_inner),
                            );
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
            drop(shared_side);
            failure
        };
        if let Some(why) = failure {
            if why.starts_with("protocol error") {
                let _ = send(stream, &out).await;
            }
            return Err(why);
        }
        session.publish();
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
