//! One connection's state (protocol, user, name, `ASKING`/`READONLY`) and the path
//! every request takes: authentication, lookup in the command table, arity, the
//! user's permissions, cluster routing, then the command itself. Connection and
//! server commands live here; the data commands in `strings` and `keys`.

use super::codec::{Protocol, Value};
use super::keyspace::{Keyspace, RouteFlags};
use super::latency::CommandLatency;
use super::pubsub::{Notice, NotifyFlags, Subscriptions};
use super::server::{BatchSettings, ClientEntry, LaneGuard, Shared};
use super::table::{self, CommandSpec, COMMANDS};
use super::{admin, keys, strings};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next request.
    Continue,
    /// Write the replies so far, then close (`QUIT`).
    Close,
    /// `WAIT`: write the replies so far, await the replicas, then answer.
    Wait {
        /// Replicas to wait for.
        replicas: usize,
        /// The timeout in milliseconds (0: none).
        timeout_ms: u64,
    },
}

/// The version `HELLO` and `INFO` report: the Redis release whose commands and
/// replies the server follows.
pub(crate) const REDIS_VERSION: &str = "7.0.15";

pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";
pub(crate) const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// One connection.
pub(crate) struct Session<'a, S> {
    shared: &'a Shared<S>,
    entry: Arc<ClientEntry>,
    proto: Protocol,
    authenticated: bool,
    /// The authenticated user may not write.
    read_only_user: bool,
    route: RouteFlags,
    /// Commands run and the last one since [`Session::publish`].
    commands: u64,
    last_cmd: Option<&'static CommandSpec>,
    /// Replies after the first, for commands that answer several (`SUBSCRIBE a b`).
    extra: Vec<Value>,
    subs: Subscriptions,
    notices: Option<broadcast::Receiver<Arc<Notice>>>,
    /// Commands queued since `MULTI` (`None`: not in a transaction).
    multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A command refused while queuing: `EXEC` answers `EXECABORT`.
    multi_error: bool,
    /// `WATCH`ed keys with what they held then (value and expiry; `None`: absent).
    watched: Vec<(String, Watched)>,
    /// The command `dispatch` found, for its latency.
    ran: Option<&'static CommandSpec>,
    /// `EXEC` is running its queued commands.
    in_exec: bool,
    /// When the last command of this batch ended (`None`: latency is not measured).
    timing: Option<Instant>,
    /// `latency-tracking` and `latency-monitor-threshold` for this batch.
    tracking: bool,
    monitor_us: u64,
    /// `slowlog-log-slower-than` (`None`: off) and `slowlog-max-len` for this batch.
    slowlog_us: Option<u64>,
    slowlog_max_len: usize,
    /// Command latency since the last [`Session::publish`].
    latency: CommandLatency,
}

impl<S> Drop for Session<'_, S> {
    /// A closed connection's subscriptions end, and its latency counts go to its
    /// client entry (and from there to the server's when the entry is removed).
    fn drop(&mut self) {
        if self.subs.count() > 0 {
            let mut registry = self.shared.registry();
            for c in &self.subs.channels {
                registry.remove(false, c);
            }
            for p in &self.subs.patterns {
                registry.remove(true, p);
            }
        }
        self.flush_latency();
    }
}

impl<S> Session<'_, S> {
    /// Adds this connection's latency counts to its client entry.
    fn flush_latency(&mut self) {
        if !self.latency.is_empty() {
            self.latency.drain_into(
                &mut self
                    .entry
                    .latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

/// A watched key's value and absolute expiry when `WATCH` ran; `None` if absent.
type Watched = Option<(Vec<u8>, Option<u64>)>;

/// Redis's `rejectCommandFormat`: no CR or LF may reach the error line.
fn sanitize(mut s: String) -> String {
    if s.contains(['\r', '\n']) {
        s = s.replace(['\r', '\n'], " ");
    }
    s
}

/// "ERR unknown command 'x', with args beginning with: 'a' 'b' ", as Redis words it.
pub(crate) fn unknown_command(argv: &[&[u8]]) -> Value {
    let name = String::from_utf8_lossy(argv[0]);
    let name: String = name.chars().take(128).collect();
    let mut args = String::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let a = String::from_utf8_lossy(a);
        let a: String = a.chars().take(room).collect();
        let _ = write!(args, "'{a}' ");
    }
    Value::Error(sanitize(format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    )))
}

/// "ERR unknown subcommand 'x'. Try CONTAINER HELP."
pub(crate) fn unknown_subcommand(container: &str, sub: &[u8]) -> Value {
    let sub: String = String::from_utf8_lossy(sub).chars().take(128).collect();
    Value::Error(sanitize(format!(
        "ERR unknown subcommand '{sub}'. Try {} HELP.",
        container.to_ascii_uppercase()
    )))
}

/// A `HELP` reply: the lines, then Redis's closing "HELP / Prints this help.".
pub(crate) fn help_lines(lines: &[&str]) -> Value {
    Value::Array(
        lines
            .iter()
            .chain(&["HELP", "    Prints this help."])
            .map(|s| Value::Simple((*s).into()))
            .collect(),
    )
}

/// "ERR wrong number of arguments for 'name' command".
pub(crate) fn wrong_arity(name: &str) -> Value {
    Value::Error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<'a, S: Keyspace> Session<'a, S> {
    pub(crate) fn new(shared: &'a Shared<S>, entry: Arc<ClientEntry>, authenticated: bool) -> Self {
        Session {
            shared,
            entry,
            proto: Protocol::Resp2,
            authenticated,
            read_only_user: false,
            route: RouteFlags::default(),
            commands: 0,
            last_cmd: None,
            extra: Vec::new(),
            subs: Subscriptions::default(),
            notices: None,
            multi: None,
            multi_error: false,
            watched: Vec::new(),
            ran: None,
            in_exec: false,
            timing: None,
            tracking: false,
            monitor_us: 0,
            slowlog_us: None,
            slowlog_max_len: 0,
            latency: CommandLatency::default(),
        }
    }

    /// Awaits `WAIT`'s replicas and appends its answer to `out`.
    pub(crate) async fn finish_wait(
        &mut self,
        replicas: usize,
        timeout_ms: u64,
        out: &mut Vec<u8>,
    ) {
        let reply = match self.shared.store.wait(replicas, timeout_ms).await {
            Ok(acked) => Value::Integer(acked as i64),
            Err(e) => e,
        };
        reply.encode(self.proto, out);
    }

    /// Starts a batch of requests: commands are timed from here, as `config` asks.
    pub(crate) fn begin_batch(&mut self, settings: &BatchSettings) {
        self.tracking = settings.latency_tracking;
        self.monitor_us = settings.latency_monitor_us;
        self.slowlog_us = settings.slowlog_us;
        self.slowlog_max_len = settings.slowlog_max_len;
        self.timing =
            (self.tracking || self.monitor_us > 0 || self.slowlog_us.is_some()).then(Instant::now);
    }

    /// Counts the command that just ran in the latency histograms and the monitor.
    fn time_command(&mut self, t0: Instant, argv: &[&[u8]]) {
        let t1 = Instant::now();
        self.timing = Some(t1);
        let Some(spec) = self.ran.take() else {
            return;
        };
        let us = t1.duration_since(t0).as_micros() as u64;
        if self.tracking {
            self.latency.record(spec.name, us);
        }
        if self.slowlog_us.is_some_and(|t| us >= t) {
            let name = self
                .entry
                .name
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            self.shared.latency().slow(
                argv,
                us,
                now_ms() / 1000,
                self.entry.addr.to_string(),
                name,
                self.slowlog_max_len,
            );
        }
        if self.monitor_us > 0 && us >= self.monitor_us {
            let event = if spec.flags.contains(&"fast") {
                "fast-command"
            } else {
                "command"
            };
            self.shared
                .latency()
                .sample(event, now_ms() / 1000, us / 1000);
        }
    }

    /// `LATENCY ...`: `HISTOGRAM` from every connection's counts, the rest from the
    /// monitor.
    fn latency(&mut self, argv: &[&[u8]]) -> Value {
        if !argv[1].eq_ignore_ascii_case(b"histogram") {
            let threshold = self.shared.config().latency_monitor_threshold_ms;
            return self.shared.latency().command(argv, threshold);
        }
        self.flush_latency();
        let server = self.shared.latency();
        let mut all = server.retired.clone();
        let clients: Vec<Arc<ClientEntry>> = self.shared.clients().values().cloned().collect();
        for c in clients {
            all.add(&c.latency.lock().unwrap_or_else(PoisonError::into_inner));
        }
        drop(server);
        let names: Vec<String> = argv[2..]
            .iter()
            .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
            .collect();
        all.reply(&names)
    }

    /// Whether the next request is `EXEC` of a transaction (the server runs it under
    /// the exclusive side of the transaction lock).
    pub(crate) fn is_exec(&self, argv: &[&[u8]]) -> bool {
        self.multi.is_some() && argv[0].eq_ignore_ascii_case(b"exec")
    }

    /// What `key` holds now, for `WATCH`.
    fn snapshot(&self, key: &str) -> Watched {
        let cache = self.shared.store.cache();
        let keys = [key.to_owned()];
        cache
            .transaction(&keys, |tx| {
                Ok::<_, ()>(tx.get(&keys[0]).map(|v| {
                    let at = tx.expire_at(&keys[0]).flatten();
                    (v, at)
                }))
            })
            .unwrap_or(None)
    }

    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
    fn transaction_command(&mut self, name: &str, argv: &[&[u8]]) -> Value {
        match name {
            "multi" if self.multi.is_some() => Value::error("ERR MULTI calls can not be nested"),
            "multi" => {
                self.multi = Some(Vec::new());
                self.multi_error = false;
                Value::ok()
            }
            "discard" => match self.multi.take() {
                Some(_) => {
                    self.watched.clear();
                    Value::ok()
                }
                None => Value::error("ERR DISCARD without MULTI"),
            },
            "watch" if self.multi.is_some() => {
                Value::error("ERR WATCH inside MULTI is not allowed")
            }
            "watch" => {
                for k in &argv[1..] {
                    let k = match strings::key(k) {
                        Ok(k) => k,
                        Err(e) => return e,
                    };
                    if !self.watched.iter().any(|(w, _)| w == k) {
                        let now = self.snapshot(k);
                        self.watched.push((k.to_owned(), now));
                    }
                }
                Value::ok()
            }
            "unwatch" => {
                self.watched.clear();
                Value::ok()
            }
            _ => {
                // "exec"
                let Some(queued) = self.multi.take() else {
                    return Value::error("ERR EXEC without MULTI");
                };
                let watched = std::mem::take(&mut self.watched);
                if std::mem::take(&mut self.multi_error) {
                    return Value::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    );
                }
                if watched.iter().any(|(k, then)| self.snapshot(k) != *then) {
                    return Value::NullArray;
                }
                let mut replies = Vec::with_capacity(queued.len());
                self.in_exec = true;
                for cmd in &queued {
                    let argv: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
                    replies.push(self.dispatch(&argv).0);
                    replies.append(&mut self.extra);
                }
                self.in_exec = false;
                Value::Array(replies)
            }
        }
    }

    /// Whether the connection has subscriptions.
    pub(crate) fn subscribed(&self) -> bool {
        self.subs.count() > 0
    }

    /// The next keyspace notification (pending forever when not subscribed); an error
    /// with how many were missed when the connection fell behind.
    pub(crate) async fn next_notice(&mut self) -> Result<Arc<Notice>, u64> {
        match &mut self.notices {
            None => std::future::pending().await,
            Some(rx) => match rx.recv().await {
                Ok(n) => Ok(n),
                Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
                Err(broadcast::error::RecvError::Closed) => {
                    self.notices = None;
                    std::future::pending().await
                }
            },
        }
    }

    /// Appends the messages `notice` makes for this connection to `out`.
    pub(crate) fn deliver(&self, notice: &Notice, out: &mut Vec<u8>) {
        let flags = self.shared.config().notify_keyspace_events;
        for m in self.subs.messages(notice, flags) {
            m.encode(self.proto, out);
        }
    }

    /// Drops every subscription (`RESET`, and the connection's end).
    fn unsubscribe_all(&mut self) {
        if self.subs.count() == 0 {
            return;
        }
        let mut registry = self.shared.registry();
        for c in self.subs.channels.drain(..) {
            registry.remove(false, &c);
        }
        for p in self.subs.patterns.drain(..) {
            registry.remove(true, &p);
        }
        self.notices = None;
    }

    /// `PUBLISH channel message`: delivered to this server's subscribers; answers how
    /// many subscriptions it reached.
    fn publish_message(&self, argv: &[&[u8]]) -> Value {
        let receivers = self.shared.registry().receivers(argv[1]);
        if receivers > 0 {
            let bridge = self
                .shared
                .bridge
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(b) = bridge.as_ref() {
                let _ = b.sender.send(Arc::new(Notice::Message {
                    channel: argv[1].to_vec(),
                    message: argv[2].to_vec(),
                }));
            }
        }
        Value::Integer(receivers as i64)
    }

    /// `PUBSUB CHANNELS [pattern]`, `NUMSUB [channel ...]`, `NUMPAT`, `HELP`.
    fn pubsub_introspection(&self, argv: &[&[u8]]) -> Value {
        let sub = argv[1].to_ascii_lowercase();
        let registry = self.shared.registry();
        match sub.as_slice() {
            b"channels" if argv.len() <= 3 => Value::Array(
                registry
                    .channels(argv.get(2).copied())
                    .into_iter()
                    .map(Value::Bulk)
                    .collect(),
            ),
            b"numsub" => Value::Array(
                argv[2..]
                    .iter()
                    .flat_map(|c| [Value::bulk(*c), Value::Integer(registry.numsub(c) as i64)])
                    .collect(),
            ),
            b"numpat" if argv.len() == 2 => Value::Integer(registry.numpat() as i64),
            b"help" if argv.len() == 2 => help_lines(&[
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
            ]),
            b"channels" | b"numpat" | b"help" => {
                wrong_arity(&format!("pubsub|{}", String::from_utf8_lossy(&sub)))
            }
            _ => unknown_subcommand("pubsub", argv[1]),
        }
    }

    /// `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`: one confirmation per
    /// channel, the first returned, the others queued in `extra`.
    fn pubsub(&mut self, name: &str, argv: &[&[u8]]) -> Value {
        let pattern = name.starts_with('p');
        let mut replies = Vec::new();
        if name.ends_with("unsubscribe") {
            let other = if pattern {
                self.subs.channels.len()
            } else {
                self.subs.patterns.len()
            };
            let list = if pattern {
                &mut self.subs.patterns
            } else {
                &mut self.subs.channels
            };
            let targets: Vec<Vec<u8>> = if argv.len() > 1 {
                argv[1..].iter().map(|a| a.to_vec()).collect()
            } else {
                list.clone()
            };
            if targets.is_empty() {
                replies.push((None, other));
            }
            // Each confirmation counts the subscriptions left after it.
            let mut registry = self.shared.registry();
            for t in targets {
                if list.contains(&t) {
                    list.retain(|c| *c != t);
                    registry.remove(pattern, &t);
                }
                replies.push((Some(t), list.len() + other));
            }
        } else {
            for a in &argv[1..] {
                let list = if pattern {
                    &mut self.subs.patterns
                } else {
                    &mut self.subs.channels
                };
                if !list.iter().any(|c| c == a) {
                    list.push(a.to_vec());
                    self.shared.registry().add(pattern, a);
                }
                replies.push((Some(a.to_vec()), self.subs.count()));
            }
            if self.notices.is_none() {
                self.notices = Some(self.shared.notices());
            }
        }
        if !self.subscribed() {
            self.notices = None;
        }
        let mut values = replies.into_iter().map(|(ch, n)| {
            Value::Push(vec![
                Value::bulk(name),
                ch.map_or(Value::Null, Value::Bulk),
                Value::Integer(n as i64),
            ])
        });
        let first = values.next().unwrap_or(Value::Null);
        self.extra.extend(values);
        first
    }

    /// Publishes what the connection did since the last call (the server's command
    /// count, the client's last command and activity for `CLIENT LIST`): once per
    /// batch of pipelined requests, not per request, so connections on different
    /// cores do not contend on shared counters.
    pub(crate) fn publish(&mut self, lane: &LaneGuard<'_>) {
        if self.commands == 0 {
            return;
        }
        self.flush_latency();
        lane.count(std::mem::take(&mut self.commands));
        self.entry.last_active_ms.store(
            self.entry.created.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        if let Some(spec) = self.last_cmd.take() {
            *self
                .entry
                .last_cmd
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = spec.name;
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.proto
    }

    /// Runs one request and appends its reply to `out`.
    pub(crate) fn execute(&mut self, argv: &[&[u8]], out: &mut Vec<u8>) -> Flow {
        self.commands += 1;
        let (reply, flow) = self.dispatch(argv);
        if matches!(flow, Flow::Wait { .. }) {
            // Answered by `finish_wait` once the replicas have.
            return flow;
        }
        reply.encode(self.proto, out);
        for v in self.extra.drain(..) {
            v.encode(self.proto, out);
        }
        if let Some(t0) = self.timing {
            self.time_command(t0, argv);
        }
        flow
    }

    fn dispatch(&mut self, argv: &[&[u8]]) -> (Value, Flow) {
        let Some(spec) = table::lookup(argv[0]) else {
            self.multi_error |= self.multi.is_some();
            return (unknown_command(argv), Flow::Continue);
        };
        self.last_cmd = Some(spec);
        self.ran = Some(spec);
        if !self.authenticated && !spec.flags.contains(&"no_auth") {
            return (Value::error(NOAUTH), Flow::Continue);
        }
        if !spec.arity_ok(argv.len()) {
            self.multi_error |= self.multi.is_some();
            return (wrong_arity(spec.name), Flow::Continue);
        }
        if self.multi.is_some()
            && !matches!(
                spec.name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            if let Some(q) = &mut self.multi {
                q.push(argv.iter().map(|a| a.to_vec()).collect());
            }
            return (Value::Simple("QUEUED".into()), Flow::Continue);
        }
        if self.proto == Protocol::Resp2
            && self.subscribed()
            && !matches!(
                spec.name,
                "subscribe"
                    | "psubscribe"
                    | "unsubscribe"
                    | "punsubscribe"
                    | "ping"
                    | "quit"
                    | "reset"
            )
        {
            return (
                Value::Error(format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                     QUIT / RESET are allowed in this context",
                    spec.name
                )),
                Flow::Continue,
            );
        }
        if self.read_only_user && spec.is_write() {
            let user = self
                .entry
                .user
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return (
                Value::Error(format!(
                    "NOPERM User {user} has no permissions to run the '{}' command",
                    spec.name
                )),
                Flow::Continue,
            );
        }
        let asking = std::mem::take(&mut self.route.asking);
        let slot = if spec.first_key > 0 && self.shared.store.routes() {
            let keys: Vec<&[u8]> = spec.key_positions(argv.len()).map(|i| argv[i]).collect();
            let flags = RouteFlags {
                asking,
                readonly: self.route.readonly,
            };
            match self.shared.store.route(&keys, spec.is_write(), flags) {
                Ok(slot) => slot,
                Err(redirect) => return (redirect, Flow::Continue),
            }
        } else {
            None
        };
        let store = &self.shared.store;
        let reply = match spec.name {
            "ping" if self.proto == Protocol::Resp2 && self.subscribed() => Value::Array(vec![
                Value::bulk("pong"),
                Value::bulk(argv.get(1).copied().unwrap_or(b"")),
            ]),
            "ping" => self.ping(argv),
            "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => {
                self.pubsub(spec.name, argv)
            }
            "multi" | "exec" | "discard" | "watch" | "unwatch" => {
                self.transaction_command(spec.name, argv)
            }
            "echo" => Value::bulk(argv[1]),
            "publish" => self.publish_message(argv),
            "pubsub" => self.pubsub_introspection(argv),
            "latency" => self.latency(argv),
            "quit" => return (Value::ok(), Flow::Close),
            "auth" => self.auth(argv),
            "hello" => self.hello(argv),
            "client" => self.client(argv),
            "select" => match strings::parse_i64(argv[1]) {
                Ok(0) => Value::ok(),
                Ok(_) => Value::error("ERR DB index is out of range"),
                Err(e) => e,
            },
            "reset" => {
                self.unsubscribe_all();
                self.multi = None;
                self.multi_error = false;
                self.watched.clear();
                self.proto = Protocol::Resp2;
                self.entry.resp3.store(false, Ordering::Relaxed);
                let c = self.shared.config();
                self.authenticated = c.requirepass.is_none() && c.users.is_empty();
                self.read_only_user = false;
                self.route = RouteFlags::default();
                *self
                    .entry
                    .name
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                *self
                    .entry
                    .user
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = "default".into();
                Value::Simple("RESET".into())
            }
            "command" => command(argv),
            "time" => {
                let us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                Value::Array(vec![
                    Value::bulk((us / 1_000_000).to_string()),
                    Value::bulk((us % 1_000_000).to_string()),
                ])
            }
            "asking" => {
                self.route.asking = true;
                Value::ok()
            }
            "readonly" => {
                self.route.readonly = true;
                Value::ok()
            }
            "readwrite" => {
                self.route.readonly = false;
                Value::ok()
            }
            "cluster" => match store.cluster_command(&argv[1..]) {
                Some(v) => v,
                None => Value::error("ERR This instance has cluster support disabled"),
            },
            "wait" => match (strings::parse_i64(argv[1]), strings::parse_i64(argv[2])) {
                // Inside EXEC, as in Redis, WAIT does not block: it answers how many
                // replicas have acknowledged so far.
                (Ok(n), Ok(_)) if n >= 0 && self.in_exec => {
                    let waker = std::task::Waker::noop();
                    let mut cx = std::task::Context::from_waker(waker);
                    let acked = (1..=n as usize).rev().find_map(|k| {
                        let f = std::pin::pin!(store.wait(k, 1));
                        match f.poll(&mut cx) {
                            std::task::Poll::Ready(Ok(a)) if a >= k => Some(a),
                            _ => None,
                        }
                    });
                    Value::Integer(acked.unwrap_or(0) as i64)
                }
                (Ok(n), Ok(t)) if n >= 0 && t >= 0 => {
                    return (
                        Value::Null,
                        Flow::Wait {
                            replicas: n as usize,
                            timeout_ms: t as u64,
                        },
                    )
                }
                (Ok(_), Ok(_)) => Value::error("ERR timeout is negative"),
                (Err(e), _) | (_, Err(e)) => e,
            },
            "info" => self.info(argv),
            "config" => self.config(argv),
            "dbsize" => Value::Integer(store.cache().len() as i64),
            "slowlog" => self.shared.latency().slowlog_command(argv),
            "save" | "bgsave" | "bgrewriteaof" | "lastsave" | "memory" => {
                let started = admin::unix_secs_ago(self.shared.started.elapsed().as_secs());
                admin::run(store, spec.name, argv, started).unwrap_or_else(|| unknown_command(argv))
            }
            _ => store.in_slot(slot, || match strings::run(store, spec.name, argv) {
                Some(v) => v,
                None => keys::run(store, spec.name, argv).unwrap_or_else(|| unknown_command(argv)),
            }),
        };
        (reply, Flow::Continue)
    }

    fn ping(&self, argv: &[&[u8]]) -> Value {
        match argv.len() {
            1 => Value::Simple("PONG".into()),
            2 => Value::bulk(argv[1]),
            _ => wrong_arity("ping"),
        }
    }

    /// Checks `user` / `password`; on success the connection is that user.
    fn login(&mut self, user: Option<&[u8]>, password: &[u8]) -> Result<(), Value> {
        let c = self.shared.config();
        let user = user.unwrap_or(b"default");
        let read_only = if user == b"default" {
            match &c.requirepass {
                Some(p) if p.as_bytes() == password => false,
                Some(_) => return Err(Value::error(WRONGPASS)),
                // No password: Redis's default user is `nopass`, any password works.
                None => false,
            }
        } else {
            match c
                .users
                .iter()
                .find(|u| u.name.as_bytes() == user && u.password.as_bytes() == password)
            {
                Some(u) => u.read_only,
                None => return Err(Value::error(WRONGPASS)),
            }
        };
        drop(c);
        self.authenticated = true;
        self.read_only_user = read_only;
        *self
            .entry
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = String::from_utf8_lossy(user).into_owned();
        Ok(())
    }

    fn auth(&mut self, argv: &[&[u8]]) -> Value {
        let (user, pass) = match argv.len() {
            2 => (None, argv[1]),
            3 => (Some(argv[1]), argv[2]),
            _ => return Value::error("ERR syntax error"),
        };
        if user.is_none() {
            let c = self.shared.config();
            if c.requirepass.is_none() && c.users.is_empty() {
                return Value::error(
                    "ERR AUTH <password> called without any password configured for the \
                     default user. Are you sure your configuration is correct?",
                );
            }
        }
        match self.login(user, pass) {
            Ok(()) => Value::ok(),
            Err(e) => e,
        }
    }

    fn hello(&mut self, argv: &[&[u8]]) -> Value {
        let mut proto = self.proto;
        let mut i = 1;
        if argv.len() > 1 {
            match strings::parse_i64(argv[1]) {
                Ok(2) => proto = Protocol::Resp2,
                Ok(3) => proto = Protocol::Resp3,
                Ok(_) => return Value::error("NOPROTO unsupported protocol version"),
                Err(_) => {
                    return Value::error("ERR Protocol version is not an integer or out of range")
                }
            }
            i = 2;
        }
        let mut name = None;
        while i < argv.len() {
            let more = argv.len() - i - 1;
            if argv[i].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                if let Err(e) = self.login(Some(argv[i + 1]), argv[i + 2]) {
                    return e;
                }
                i += 3;
            } else if argv[i].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                name = Some(argv[i + 1]);
                i += 2;
            } else {
                return Value::Error(sanitize(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(argv[i])
                )));
            }
        }
        if !self.authenticated {
            return Value::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time",
            );
        }
        if let Some(n) = name {
            if let Err(e) = self.set_name(n) {
                return e;
            }
        }
        self.proto = proto;
        self.entry
            .resp3
            .store(proto == Protocol::Resp3, Ordering::Relaxed);
        let mode = if self.shared.store.cluster_command(&[b"MYID"]).is_some() {
            "cluster"
        } else {
            "standalone"
        };
        Value::Map(vec![
            (Value::bulk("server"), Value::bulk("redis")),
            (Value::bulk("version"), Value::bulk(REDIS_VERSION)),
            (
                Value::bulk("proto"),
                Value::Integer(if proto == Protocol::Resp3 { 3 } else { 2 }),
            ),
            (Value::bulk("id"), Value::Integer(self.entry.id as i64)),
            (Value::bulk("mode"), Value::bulk(mode)),
            (Value::bulk("role"), Value::bulk("master")),
            (Value::bulk("modules"), Value::Array(Vec::new())),
        ])
    }

    fn set_name(&self, name: &[u8]) -> Result<(), Value> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(Value::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        let name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        *self
            .entry
            .name
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = name;
        Ok(())
    }

    fn client(&mut self, argv: &[&[u8]]) -> Value {
        let sub = argv[1].to_ascii_lowercase();
        let arity = |n: usize| {
            if argv.len() == n {
                None
            } else {
                Some(wrong_arity(&format!(
                    "client|{}",
                    String::from_utf8_lossy(&sub)
                )))
            }
        };
        match sub.as_slice() {
            b"id" => arity(2).unwrap_or(Value::Integer(self.entry.id as i64)),
            b"getname" => arity(2).unwrap_or_else(|| {
                Value::opt_bulk(
                    self.entry
                        .name
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                        .map(String::into_bytes),
                )
            }),
            b"setname" => arity(3).unwrap_or_else(|| match self.set_name(argv[2]) {
                Ok(()) => Value::ok(),
                Err(e) => e,
            }),
            b"setinfo" => {
                if argv.len() != 4 {
                    return wrong_arity("client|setinfo");
                }
                let attr = argv[2].to_ascii_lowercase();
                if attr == b"lib-name" || attr == b"lib-ver" {
                    Value::ok()
                } else {
                    Value::Error(sanitize(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(argv[2])
                    )))
                }
            }
            b"info" => arity(2).unwrap_or_else(|| Value::Verbatim {
                format: *b"txt",
                text: format!("{}\n", self.entry.line()).into_bytes(),
            }),
            b"list" => {
                let mut ids: Option<Vec<u64>> = None;
                let mut i = 2;
                while i < argv.len() {
                    if argv[i].eq_ignore_ascii_case(b"TYPE") && i + 1 < argv.len() {
                        let t = argv[i + 1].to_ascii_lowercase();
                        if !matches!(t.as_slice(), b"normal" | b"master" | b"replica" | b"pubsub") {
                            return Value::Error(sanitize(format!(
                                "ERR Unknown client type '{}'",
                                String::from_utf8_lossy(argv[i + 1])
                            )));
                        }
                        if t != b"normal" {
                            ids = Some(Vec::new());
                        }
                        i += 2;
                    } else if argv[i].eq_ignore_ascii_case(b"ID") && i + 1 < argv.len() {
                        let mut list = Vec::new();
                        for a in &argv[i + 1..] {
                            match strings::parse_i64(a) {
                                Ok(n) if n > 0 => list.push(n as u64),
                                _ => return Value::error("ERR Invalid client ID"),
                            }
                        }
                        ids = Some(list);
                        i = argv.len();
                    } else {
                        return Value::error("ERR syntax error");
                    }
                }
                let clients = self.shared.clients();
                let mut text = String::new();
                for (id, c) in clients.iter() {
                    if ids.as_ref().is_none_or(|l| l.contains(id)) {
                        text.push_str(&c.line());
                        text.push('\n');
                    }
                }
                Value::Verbatim {
                    format: *b"txt",
                    text: text.into_bytes(),
                }
            }
            b"kill" => self.client_kill(argv),
            b"help" => Value::Array(
                [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GETNAME",
                    "ID",
                    "INFO",
                    "KILL <ip:port> | <option> <value> [...]",
                    "LIST [TYPE normal|master|replica|pubsub] [ID <id> [<id> ...]]",
                    "SETNAME <name>",
                    "SETINFO <lib-name|lib-ver> <value>",
                ]
                .iter()
                .map(|s| Value::Simple((*s).into()))
                .collect(),
            ),
            _ => unknown_subcommand("client", argv[1]),
        }
    }

    fn client_kill(&self, argv: &[&[u8]]) -> Value {
        let kill = |c: &ClientEntry| {
            c.killed.store(true, Ordering::Relaxed);
            c.kill.notify_one();
        };
        if argv.len() == 3 {
            // The old form: CLIENT KILL ip:port.
            let clients = self.shared.clients();
            let addr = String::from_utf8_lossy(argv[2]);
            return match clients.values().find(|c| c.addr.to_string() == addr) {
                Some(c) => {
                    kill(c);
                    Value::ok()
                }
                None => Value::error("ERR No such client"),
            };
        }
        if argv.len() < 4 || argv.len() % 2 != 0 {
            return Value::error("ERR syntax error");
        }
        let mut id = None;
        let mut addr = None;
        let mut laddr = None;
        let mut user = None;
        let mut skipme = true;
        for pair in argv[2..].chunks(2) {
            let v = String::from_utf8_lossy(pair[1]).into_owned();
            match pair[0].to_ascii_lowercase().as_slice() {
                b"id" => match strings::parse_i64(pair[1]) {
                    Ok(n) if n > 0 => id = Some(n as u64),
                    _ => return Value::error("ERR client-id should be greater than 0"),
                },
                b"addr" => addr = Some(v),
                b"laddr" => laddr = Some(v),
                b"user" => user = Some(v),
                b"skipme" => match v.to_ascii_lowercase().as_str() {
                    "yes" => skipme = true,
                    "no" => skipme = false,
                    _ => return Value::error("ERR syntax error"),
                },
                b"type" => {}
                _ => return Value::error("ERR syntax error"),
            }
        }
        let clients = self.shared.clients();
        let mut n = 0;
        for c in clients.values() {
            let matches = id.is_none_or(|i| i == c.id)
                && addr.as_ref().is_none_or(|a| *a == c.addr.to_string())
                && laddr.as_ref().is_none_or(|a| *a == c.laddr.to_string())
                && user
                    .as_ref()
                    .is_none_or(|u| *u == *c.user.lock().unwrap_or_else(PoisonError::into_inner))
                && !(skipme && c.id == self.entry.id);
            if matches {
                kill(c);
                n += 1;
            }
        }
        Value::Integer(n)
    }

    /// `CONFIG GET pattern...` / `CONFIG SET name value...` / `CONFIG RESETSTAT`.
    /// The server's limits and the cache's bounds, policy, LFU knobs and fsync policy
    /// change at run time; the rest is reported and fixed when the cache was built
    /// (setting it is refused, naming it).
    fn config(&mut self, argv: &[&[u8]]) -> Value {
        let sub = argv[1].to_ascii_lowercase();
        match sub.as_slice() {
            b"get" if argv.len() >= 3 => {
                let params = self.config_params();
                let mut pairs = Vec::new();
                for pattern in &argv[2..] {
                    let pattern = pattern.to_ascii_lowercase();
                    for (name, value) in &params {
                        if crate::glob_match(&pattern, name.as_bytes())
                            && !pairs.iter().any(|(n, _): &(String, String)| n == name)
                        {
                            pairs.push((name.to_string(), value.clone()));
                        }
                    }
                }
                Value::Map(
                    pairs
                        .into_iter()
                        .map(|(n, v)| (Value::bulk(n), Value::bulk(v)))
                        .collect(),
                )
            }
            b"set" if argv.len() >= 4 && argv.len() % 2 == 0 => {
                let mut c = self.shared.config().clone();
                for pair in argv[2..].chunks(2) {
                    let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
                    let value = String::from_utf8_lossy(pair[1]).into_owned();
                    let failed = |why: &str| {
                        Value::Error(format!(
                            "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                        ))
                    };
                    let number = || {
                        value
                            .parse::<u64>()
                            .map_err(|_| failed("argument couldn't be parsed into an integer"))
                    };
                    match name.as_str() {
                        "requirepass" => {
                            c.requirepass = (!value.is_empty()).then(|| value.clone());
                        }
                        "notify-keyspace-events" => match NotifyFlags::parse(&value) {
                            Some(f) => c.notify_keyspace_events = f,
                            None => return failed("Invalid event class character. Use 'Ag$lshzxeKEtmd'."),
                        },
                        "maxclients" => match number() {
                            Ok(0) => return failed("argument must be between 1 and 4294967295 inclusive"),
                            Ok(n) => c.maxclients = n as usize,
                            Err(e) => return e,
                        },
                        "timeout" => match number() {
                            Ok(n) => c.timeout = (n > 0).then(|| std::time::Duration::from_secs(n)),
                            Err(e) => return e,
                        },
                        "proto-max-bulk-len" => match number() {
                            Ok(n) if n >= 1024 * 1024 => c.proto_max_bulk_len = n as usize,
                            Ok(_) => return failed("argument must be between 1048576 and 9223372036854775807 inclusive"),
                            Err(e) => return e,
                        },
                        "latency-tracking" => match value.to_ascii_lowercase().as_str() {
                            "yes" => c.latency_tracking = true,
                            "no" => c.latency_tracking = false,
                            _ => return failed("argument must be 'yes' or 'no'"),
                        },
                        "slowlog-log-slower-than" => match value.parse::<i64>() {
                            Ok(n) => c.slowlog_log_slower_than = n,
                            Err(_) => {
                                return failed("argument couldn't be parsed into an integer")
                            }
                        },
                        "slowlog-max-len" => match number() {
                            Ok(n) => c.slowlog_max_len = n as usize,
                            Err(e) => return e,
                        },
                        "latency-monitor-threshold" => match number() {
                            Ok(n) => c.latency_monitor_threshold_ms = n,
                            Err(e) => return e,
                        },
                        "client-query-buffer-limit" => match number() {
                            Ok(n) if n >= 1024 * 1024 => c.client_query_buffer_limit = n as usize,
                            Ok(_) => return failed("argument must be between 1048576 and 9223372036854775807 inclusive"),
                            Err(e) => return e,
                        },
                        "maxmemory" | "maxmemory-policy" | "maxmemory-samples"
                        | "lfu-log-factor" | "lfu-decay-time" | "appendfsync"
                        | "save" | "lazyfree-lazy-eviction" | "lazyfree-lazy-expire"
                        | "lazyfree-lazy-server-del" | "lazyfree-lazy-user-del" => {
                            if let Err(why) = self.set_cache_config(&name, &value) {
                                return failed(&why);
                            }
                        }
                        _ if self.config_params().iter().any(|(n, _)| *n == name) => {
                            return failed("larder fixes this setting when the cache is built")
                        }
                        _ => {
                            return Value::Error(sanitize(format!(
                                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                            )))
                        }
                    }
                }
                *self
                    .shared
                    .config
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = c;
                self.shared.config_gen.fetch_add(1, Ordering::Release);
                Value::ok()
            }
            b"resetstat" if argv.len() == 2 => {
                self.shared.lanes.reset_commands();
                self.shared.accepted.store(0, Ordering::Relaxed);
                self.shared.rejected.store(0, Ordering::Relaxed);
                self.shared.store.cache().slowlog_reset();
                Value::ok()
            }
            b"get" | b"set" | b"resetstat" => {
                wrong_arity(&format!("config|{}", String::from_utf8_lossy(&sub)))
            }
            _ => unknown_subcommand("config", argv[1]),
        }
    }

    /// `CONFIG SET` of one of the cache's own settings, through the cache's runtime
    /// configuration (a lowered `maxmemory` evicts before this returns). The error is
    /// what follows Redis's "CONFIG SET failed ... - ".
    fn set_cache_config(&self, name: &str, value: &str) -> Result<(), String> {
        let cache = self.shared.store.cache();
        let int = || {
            value
                .parse::<u64>()
                .map_err(|_| "argument couldn't be parsed into an integer".to_string())
        };
        let done = match name {
            "maxmemory" => {
                let bytes = parse_memory(value).ok_or("argument must be a memory value")?;
                cache.set_max_memory((bytes > 0).then_some(bytes))
            }
            "maxmemory-policy" => {
                let policy = value
                    .parse::<crate::Policy>()
                    .map_err(|_| "argument(s) must be one of the following: volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, volatile-random, allkeys-random, volatile-ttl, noeviction".to_string())?;
                cache.set_eviction(policy)
            }
            "maxmemory-samples" => match int()? {
                n @ 1..=64 => cache.set_maxmemory_samples(n as usize),
                _ => return Err("argument must be between 1 and 64 inclusive".into()),
            },
            "lfu-log-factor" => match u32::try_from(int()?) {
                Ok(f) => cache.set_lfu_log_factor(f),
                Err(_) => return Err("argument must be between 0 and 2147483647 inclusive".into()),
            },
            "lfu-decay-time" => match u32::try_from(int()?) {
                Ok(m) => cache.set_lfu_decay(crate::LfuDecay::Minutes(m)),
                Err(_) => return Err("argument must be between 0 and 2147483647 inclusive".into()),
            },
            "save" => {
                let words: Vec<&str> = value.split_whitespace().collect();
                if words.len() % 2 != 0 {
                    return Err("Invalid save parameters".into());
                }
                let mut rules = Vec::new();
                for pair in words.chunks(2) {
                    match (pair[0].parse::<u64>(), pair[1].parse::<u64>()) {
                        (Ok(secs), Ok(changes)) => {
                            rules.push((std::time::Duration::from_secs(secs), changes))
                        }
                        _ => return Err("Invalid save parameters".into()),
                    }
                }
                match cache.set_save_rules(rules) {
                    // Nothing to turn off on a cache that writes no snapshots.
                    Err(crate::Error::NotDurable) if words.is_empty() => Ok(()),
                    other => other,
                }
            }
            "lazyfree-lazy-eviction"
            | "lazyfree-lazy-expire"
            | "lazyfree-lazy-server-del"
            | "lazyfree-lazy-user-del" => {
                let on = match value.to_ascii_lowercase().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err("argument must be 'yes' or 'no'".into()),
                };
                let mut lf = cache.lazy_free();
                match name {
                    "lazyfree-lazy-eviction" => lf.eviction = on,
                    "lazyfree-lazy-expire" => lf.expire = on,
                    "lazyfree-lazy-server-del" => lf.server_del = on,
                    _ => lf.user_del = on,
                }
                cache.set_lazy_free(lf)
            }
            "appendfsync" => {
                #[cfg(feature = "persistence")]
                {
                    let policy =
                        value
                            .to_ascii_lowercase()
                            .parse::<crate::Fsync>()
                            .map_err(|_| {
                                "argument(s) must be one of the following: always, everysec, no"
                                    .to_string()
                            })?;
                    cache.set_fsync(policy)
                }
                #[cfg(not(feature = "persistence"))]
                return Err("this cache has no persistence configured".into());
            }
            _ => return Err(format!("unknown setting {name}")),
        };
        done.map_err(|e| e.to_string())
    }

    /// Every parameter `CONFIG GET` knows, with its value now.
    fn config_params(&self) -> Vec<(&'static str, String)> {
        let c = self.shared.config();
        let info = self.shared.store.cache().info();
        let live = self.shared.store.cache().config();
        let lazy = self.shared.store.cache().lazy_free();
        let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
        let m = &info.memory;
        let durable = info.persistence.is_some();
        let decay = match live.lfu_decay {
            crate::LfuDecay::Minutes(m) => m.to_string(),
            crate::LfuDecay::Turnovers(_) => "0".into(),
        };
        vec![
            ("maxmemory", m.maxmemory.to_string()),
            ("maxmemory-policy", m.maxmemory_policy.to_string()),
            ("maxmemory-samples", live.samples.to_string()),
            ("lfu-log-factor", live.lfu_log_factor.to_string()),
            ("lfu-decay-time", decay),
            (
                "appendfsync",
                info.persistence
                    .as_ref()
                    .map_or("no", |p| p.aof_fsync)
                    .to_string(),
            ),
            ("maxclients", c.maxclients.to_string()),
            ("lazyfree-lazy-eviction", yes_no(lazy.eviction)),
            ("lazyfree-lazy-expire", yes_no(lazy.expire)),
            ("lazyfree-lazy-server-del", yes_no(lazy.server_del)),
            ("lazyfree-lazy-user-del", yes_no(lazy.user_del)),
            (
                "slowlog-log-slower-than",
                c.slowlog_log_slower_than.to_string(),
            ),
            ("slowlog-max-len", c.slowlog_max_len.to_string()),
            (
                "latency-tracking",
                if c.latency_tracking { "yes" } else { "no" }.into(),
            ),
            (
                "latency-monitor-threshold",
                c.latency_monitor_threshold_ms.to_string(),
            ),
            ("timeout", c.timeout.map_or(0, |t| t.as_secs()).to_string()),
            ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
            (
                "client-query-buffer-limit",
                c.client_query_buffer_limit.to_string(),
            ),
            ("requirepass", c.requirepass.clone().unwrap_or_default()),
            (
                "notify-keyspace-events",
                c.notify_keyspace_events.to_string(),
            ),
            ("databases", "1".into()),
            ("appendonly", if durable { "yes" } else { "no" }.into()),
            (
                "save",
                self.shared
                    .store
                    .cache()
                    .save_rules()
                    .unwrap_or_default()
                    .iter()
                    .map(|(after, n)| format!("{} {n}", after.as_secs()))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (
                "cluster-enabled",
                if self.shared.store.routes() {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            ),
        ]
    }

    fn info(&self, argv: &[&[u8]]) -> Value {
        let store = &self.shared.store;
        let want: Vec<String> = argv[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let all = want.is_empty()
            || want
                .iter()
                .any(|w| w == "all" || w == "everything" || w == "default");
        let wants = |s: &str| all || want.iter().any(|w| w == s);
        let mut text = String::new();
        if wants("server") {
            let uptime = self.shared.started.elapsed().as_secs();
            let mode = if store.cluster_command(&[b"MYID"]).is_some() {
                "cluster"
            } else {
                "standalone"
            };
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nlarder_version:{}\r\n\
                 redis_mode:{mode}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
                 uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                self.entry.laddr.port(),
                uptime / 86400,
            );
        }
        if wants("clients") {
            let c = self.shared.config();
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                self.shared.connected.load(Ordering::Relaxed),
                c.maxclients
            );
        }
        let info = store.cache().info().to_string();
        for section in info.split("\n\n") {
            let name = section
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# "))
                .unwrap_or("")
                .to_ascii_lowercase();
            if name.is_empty() || !wants(&name) {
                continue;
            }
            for line in section.lines() {
                text.push_str(line);
                text.push_str("\r\n");
            }
            if name == "stats" {
                let _ = write!(
                    text,
                    "total_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                     rejected_connections:{}\r\n",
                    self.shared.accepted.load(Ordering::Relaxed),
                    self.shared.lanes.commands(),
                    self.shared.rejected.load(Ordering::Relaxed),
                );
            }
            text.push_str("\r\n");
        }
        Value::Verbatim {
            format: *b"txt",
            text: text.into_bytes(),
        }
    }
}

/// Redis's command group of `name`, for `COMMAND DOCS`.
fn group(spec: &CommandSpec) -> &'static str {
    match spec.name {
        "auth" | "client" | "echo" | "hello" | "ping" | "quit" | "reset" | "select" => "connection",
        "asking" | "cluster" | "readonly" | "readwrite" => "cluster",
        "multi" | "exec" | "discard" | "watch" | "unwatch" => "transactions",
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => "pubsub",
        "del" | "unlink" | "exists" | "expire" | "pexpire" | "expireat" | "pexpireat" | "ttl"
        | "pttl" | "expiretime" | "pexpiretime" | "persist" | "type" | "scan" | "keys"
        | "randomkey" | "touch" | "object" => "generic",
        _ if strings::is_string_command(spec.name) => "string",
        _ => "server",
    }
}

/// Redis's ACL categories of `spec`: read or write, its group, fast or slow.
fn categories(spec: &CommandSpec) -> Vec<Value> {
    let mut c = Vec::new();
    if spec.is_write() {
        c.push("@write".to_string());
    } else if spec.flags.contains(&"readonly") {
        c.push("@read".to_string());
    }
    c.push(format!("@{}", group(spec)));
    c.push(
        if spec.flags.contains(&"fast") {
            "@fast"
        } else {
            "@slow"
        }
        .to_string(),
    );
    c.into_iter().map(Value::Simple).collect()
}

/// Redis 7's key specifications: where the keys begin (an index) and how they
/// continue (a range to the last key, with a step).
fn key_specs(spec: &CommandSpec) -> Vec<Value> {
    if spec.first_key == 0 {
        return Vec::new();
    }
    let (access, kind) = if spec.is_write() {
        ("RW", "update")
    } else {
        ("RO", "access")
    };
    let lastkey = if spec.last_key < 0 {
        spec.last_key
    } else {
        spec.last_key - spec.first_key
    };
    let kv = |k: &str, v: Value| (Value::bulk(k), v);
    vec![Value::Map(vec![
        kv(
            "flags",
            Value::Set(vec![
                Value::Simple(access.into()),
                Value::Simple(kind.into()),
            ]),
        ),
        kv(
            "begin_search",
            Value::Map(vec![
                kv("type", Value::bulk("index")),
                kv(
                    "spec",
                    Value::Map(vec![kv("index", Value::Integer(spec.first_key.into()))]),
                ),
            ]),
        ),
        kv(
            "find_keys",
            Value::Map(vec![
                kv("type", Value::bulk("range")),
                kv(
                    "spec",
                    Value::Map(vec![
                        kv("lastkey", Value::Integer(lastkey.into())),
                        kv("keystep", Value::Integer(spec.step.into())),
                        kv("limit", Value::Integer(0)),
                    ]),
                ),
            ]),
        ),
    ])]
}

fn command_info(spec: &CommandSpec) -> Value {
    Value::Array(vec![
        Value::bulk(spec.name),
        Value::Integer(i64::from(spec.arity)),
        Value::Set(
            spec.flags
                .iter()
                .filter(|f| **f != "no_auth")
                .map(|f| Value::Simple((*f).into()))
                .collect(),
        ),
        Value::Integer(i64::from(spec.first_key)),
        Value::Integer(i64::from(spec.last_key)),
        Value::Integer(i64::from(spec.step)),
        Value::Set(categories(spec)),
        Value::Set(Vec::new()),
        Value::Set(key_specs(spec)),
        Value::Set(Vec::new()),
    ])
}

fn command(argv: &[&[u8]]) -> Value {
    if argv.len() == 1 {
        return Value::Array(COMMANDS.iter().map(command_info).collect());
    }
    let sub = argv[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"count" if argv.len() == 2 => Value::Integer(COMMANDS.len() as i64),
        b"info" => {
            if argv.len() == 2 {
                return Value::Array(COMMANDS.iter().map(command_info).collect());
            }
            Value::Array(
                argv[2..]
                    .iter()
                    .map(|n| table::lookup(n).map_or(Value::NullArray, command_info))
                    .collect(),
            )
        }
        b"docs" => {
            let doc = |spec: &CommandSpec| {
                (
                    Value::bulk(spec.name),
                    Value::Map(vec![
                        (
                            Value::bulk("summary"),
                            Value::bulk(format!("{} (larder)", spec.name.to_ascii_uppercase())),
                        ),
                        (Value::bulk("since"), Value::bulk("1.0.0")),
                        (Value::bulk("group"), Value::bulk(group(spec))),
                    ]),
                )
            };
            if argv.len() == 2 {
                Value::Map(COMMANDS.iter().map(doc).collect())
            } else {
                Value::Map(
                    argv[2..]
                        .iter()
                        .filter_map(|n| table::lookup(n))
                        .map(doc)
                        .collect(),
                )
            }
        }
        b"getkeys" if argv.len() >= 3 => match table::lookup(argv[2]) {
            None => Value::error("ERR Invalid command specified"),
            Some(spec) if !spec.arity_ok(argv.len() - 2) => {
                Value::error("ERR Invalid number of arguments specified for command")
            }
            Some(spec) if spec.first_key == 0 => {
                Value::error("ERR The command has no key arguments")
            }
            Some(spec) => Value::Array(
                spec.key_positions(argv.len() - 2)
                    .map(|i| Value::bulk(argv[i + 2]))
                    .collect(),
            ),
        },
        b"count" | b"getkeys" => wrong_arity(&format!("command|{}", String::from_utf8_lossy(&sub))),
        _ => unknown_subcommand("command", argv[1]),
    }
}

/// A Redis memory value: bytes, or a number with `k`/`m`/`g` (powers of 1000) or
/// `kb`/`mb`/`gb` (powers of 1024), any case.
fn parse_memory(value: &str) -> Option<u64> {
    let v = value.to_ascii_lowercase();
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &v[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}
