//! `larder-node`'s configuration: a TOML file (documented with a commented example in
//! `docs/operations.md`, section "larder-node configuration").
//!
//! ```toml
//! listen = "127.0.0.1:7101"
//! seeds = ["127.0.0.1:7102"]
//! data_dir = "data/node1"
//! cert = "certs/node1.pem"
//! key = "certs/node1.key"
//! ca = "certs/ca.pem"
//! maxmemory = "256mb"
//! maxmemory_policy = "allkeys-lru"
//! ```
//!
//! Unknown keys are refused, and every error names the file and the field (and the
//! line, where the TOML parser knows it). Relative paths are resolved against the
//! configuration file's directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use larder::cluster::larder_cluster::net::store::MemoryStore;
use larder::cluster::larder_cluster::net::CertificateDer;
use larder::cluster::{ClusterConfig, NodeId, NodeIdentity, StateStore};
use larder::resp::RespUser;
use larder::{Durability, Fsync, Policy};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Defaults, as `ClusterConfig::new` and Redis have them.
const DEFAULT_NODE_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_BACKLOG: u64 = 16 << 20;
const DEFAULT_MAX_LAG_MS: u64 = 10_000;

/// The file as written: every key `larder-node` knows, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    advertise: Option<String>,
    #[serde(default)]
    seeds: Vec<String>,
    data_dir: Option<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    maxmemory: Option<ByteSize>,
    maxmemory_policy: Option<String>,
    appendfsync: Option<String>,
    node_timeout_ms: Option<u64>,
    min_replicas_to_write: Option<usize>,
    min_replicas_max_lag_ms: Option<u64>,
    repl_backlog_size: Option<ByteSize>,
    request_timeout_ms: Option<u64>,
    replica_of: Option<String>,
    revocation_list: Option<PathBuf>,
    allow_roleless: Option<bool>,
    require_full_coverage: Option<bool>,
    allow_reads_when_down: Option<bool>,
    replica_validity_factor: Option<u64>,
    replica_no_failover: Option<bool>,
    migration_barrier: Option<usize>,
    allow_replica_migration: Option<bool>,
    replica_serve_stale_data: Option<bool>,
    resp_listen: Option<String>,
    requirepass: Option<String>,
    maxclients: Option<usize>,
    timeout: Option<u64>,
    io_threads: Option<usize>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_auth_clients: Option<TlsAuthClients>,
    #[serde(default)]
    resp_users: Vec<RawUser>,
}

/// One `[[resp_users]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: String,
    #[serde(default)]
    read_only: bool,
}

/// `tls_auth_clients` (Redis's `tls-auth-clients`): whether RESP clients over TLS
/// present a certificate signed by `tls_ca_cert_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAuthClients {
    /// `"yes"` or `true`: a client without a valid certificate is refused in the
    /// handshake (Redis's default, and larder-node's when `tls_ca_cert_file` is set).
    Yes,
    /// `"no"` or `false`: no certificate is asked for (the default without
    /// `tls_ca_cert_file`).
    No,
    /// `"optional"`: a client may present none, but one it presents must be valid.
    Optional,
}

impl<'de> Deserialize<'de> for TlsAuthClients {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TlsAuthClients;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"yes\", \"no\", \"optional\", true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TlsAuthClients, E> {
                Ok(if v {
                    TlsAuthClients::Yes
                } else {
                    TlsAuthClients::No
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TlsAuthClients, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "yes" => Ok(TlsAuthClients::Yes),
                    "no" => Ok(TlsAuthClients::No),
                    "optional" => Ok(TlsAuthClients::Optional),
                    _ => Err(E::custom(format!(
                        "{v:?}: expected \"yes\", \"no\", \"optional\", true or false"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The RESP server's TLS settings (`tls_*` keys), paths resolved. The files are read
/// by [`RespTls::server_config`], when the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespTls {
    /// `tls_cert_file`: the server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// `tls_key_file`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `tls_ca_cert_file`: the CA certificates (PEM) client certificates are checked
    /// against.
    pub ca_cert_file: Option<PathBuf>,
    /// `tls_auth_clients`: whether clients must present a certificate.
    pub auth_clients: TlsAuthClients,
}

/// A byte count: an integer, or a string with Redis's units (`"256mb"`, `"1gb"`,
/// `"100k"`: k/m/g are powers of 1000, kb/mb/gb powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let mult: u64 = match unit.trim() {
            "" | "b" => 1,
            "k" => 1000,
            "kb" => 1 << 10,
            "m" => 1_000_000,
            "mb" => 1 << 20,
            "g" => 1_000_000_000,
            "gb" => 1 << 30,
            _ => {
                return Err(format!(
                    "{s:?} is not a size: expected bytes or a number with b, k, kb, m, mb, \
                     g or gb (like \"256mb\")"
                ))
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size: no number before the unit"))?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a size like \"256mb\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What `replica_of` names: the master to replicate once the node has joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOf {
    /// A node id (40 hex digits).
    Id(NodeId),
    /// The address a master is known at (`host:port`, as the nodes' table shows it).
    Addr(String),
}

/// `larder-node`'s configuration, checked, with paths resolved.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `listen`: the UDP address to bind (`ip:port`).
    pub listen: SocketAddr,
    /// `advertise`: the `host:port` peers should dial, when it is not `listen` (for
    /// example when listening on `0.0.0.0`).
    pub advertise: Option<String>,
    /// `seeds`: `host:port` addresses of nodes to MEET at start, until the node has
    /// joined a cluster. Its own address is skipped, so every node may share a list.
    pub seeds: Vec<String>,
    /// `data_dir`: where the cluster state (`cluster.state`) and the data (`data/`,
    /// the append-only log) live. Without it the node keeps nothing on disk and a
    /// restart is a new, empty node.
    pub data_dir: Option<PathBuf>,
    /// `cert`: this node's certificate (PEM); it names the node id.
    pub cert: PathBuf,
    /// `key`: the certificate's private key (PEM).
    pub key: PathBuf,
    /// `ca`: the cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// `maxmemory` in bytes (`None`: unbounded).
    pub maxmemory: Option<u64>,
    /// `maxmemory_policy` (Redis's names; `None`: larder's default, `allkeys-lru`).
    pub maxmemory_policy: Option<Policy>,
    /// `appendfsync` (`always`, `everysec`, `no`; default `everysec`). Needs `data_dir`.
    pub appendfsync: Option<Fsync>,
    /// `node_timeout_ms` (default 15000).
    pub node_timeout: Duration,
    /// `min_replicas_to_write` (default 0: off).
    pub min_replicas_to_write: usize,
    /// `min_replicas_max_lag_ms` (default 10000).
    pub min_replicas_max_lag: Duration,
    /// `repl_backlog_size` in bytes (default 16mb).
    pub repl_backlog_size: u64,
    /// `request_timeout_ms`: how long a forwarded operation may take (default 5000).
    pub request_timeout: Duration,
    /// `replica_of`: a master (id or address) to replicate once joined.
    pub replica_of: Option<ReplicaOf>,
    /// `revocation_list`: the cluster CA's revocation list (`larder-cli certs
    /// revoke` writes it), watched and loaded again when it changes.
    pub revocation_list: Option<PathBuf>,
    /// `allow_roleless`: whether certificates that name no role (made before roles
    /// existed) are accepted as node and administrator (default true).
    pub allow_roleless: bool,
    /// `require_full_coverage` (`cluster-require-full-coverage`, default true).
    pub require_full_coverage: bool,
    /// `allow_reads_when_down` (`cluster-allow-reads-when-down`, default false).
    pub allow_reads_when_down: bool,
    /// `replica_validity_factor` (`cluster-replica-validity-factor`, default 10; 0:
    /// a replica always tries to fail over).
    pub replica_validity_factor: u64,
    /// `replica_no_failover` (`cluster-replica-no-failover`, default false).
    pub replica_no_failover: bool,
    /// `migration_barrier` (`cluster-migration-barrier`, default 1).
    pub migration_barrier: usize,
    /// `allow_replica_migration` (`cluster-allow-replica-migration`, default true).
    pub allow_replica_migration: bool,
    /// `replica_serve_stale_data` (`replica-serve-stale-data`, default true).
    pub replica_serve_stale_data: bool,
    /// `resp_listen`: the TCP address of the RESP (Redis protocol) server, if any.
    /// Every node of a cluster keeps the same distance between its mesh port and its
    /// RESP port (clients are redirected to peers by it); the same port number as
    /// `listen` is the simplest.
    pub resp_listen: Option<SocketAddr>,
    /// `requirepass`: the password RESP clients authenticate with (`AUTH`).
    pub requirepass: Option<String>,
    /// `maxclients`: RESP connections beyond this are refused (default 10000).
    pub maxclients: usize,
    /// `io_threads`: the RESP server's event-loop threads (default: one per core).
    pub io_threads: usize,
    /// `timeout`: RESP clients idle this many seconds are closed (0: never, the
    /// default).
    pub timeout: u64,
    /// TLS on `resp_listen` (the `tls_*` keys; `tls_cert_file` and `tls_key_file`
    /// turn it on): the listener speaks TLS only, as a Redis with `port 0` and
    /// `tls-port` does. `None`: plain RESP.
    pub resp_tls: Option<RespTls>,
    /// `[[resp_users]]`: RESP users besides `default` (whose password is
    /// `requirepass`), authenticated with `AUTH name password`.
    pub resp_users: Vec<RespUser>,
}

/// A configuration error. Its text names the file, and the field where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a field is missing, unknown or of a wrong type
    /// or value.
    #[error("{}{}: {}{message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based), when known.
        line: Option<usize>,
        /// The field, when the error is about one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => field.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Checks `host:port` (a port number after the last colon, a host before it).
fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
                Err(format!(
                    "{s:?}: an IPv6 address needs brackets (\"[::1]:7000\")"
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("{s:?} is not host:port")),
    }
}

impl NodeConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks configuration `text`, read from `path` (which names it in
    /// errors and anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(""));
        let err = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: key_line(text, field),
            field: Some(field.to_string()),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;

        let listen = raw
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| err("listen", format!("{:?} is not ip:port ({e})", raw.listen)))?;
        if let Some(a) = &raw.advertise {
            check_host_port(a).map_err(|m| err("advertise", m))?;
        }
        for s in &raw.seeds {
            check_host_port(s).map_err(|m| err("seeds", m))?;
        }
        let resolve = |p: PathBuf, field: &str| {
            if p.as_os_str().is_empty() {
                Err(err(field, "an empty path".into()))
            } else if p.is_absolute() {
                Ok(p)
            } else {
                Ok(base.join(p))
            }
        };
        let data_dir = raw.data_dir.map(|p| resolve(p, "data_dir")).transpose()?;
        let cert = resolve(raw.cert, "cert")?;
        let key = resolve(raw.key, "key")?;
        let ca = resolve(raw.ca, "ca")?;
        let revocation_list = raw
            .revocation_list
            .map(|p| resolve(p, "revocation_list"))
            .transpose()?;
        let maxmemory_policy = raw
            .maxmemory_policy
            .map(|p| p.parse::<Policy>())
            .transpose()
            .map_err(|e| err("maxmemory_policy", e.to_string()))?;
        let appendfsync = match raw.appendfsync.as_deref() {
            None => None,
            Some(s) => Some(match s.trim().to_ascii_lowercase().as_str() {
                "always" => Fsync::Always,
                "everysec" => Fsync::EverySec,
                "no" => Fsync::No,
                _ => {
                    return Err(err(
                        "appendfsync",
                        format!("{s:?}: expected always, everysec or no"),
                    ))
                }
            }),
        };
        if appendfsync.is_some() && data_dir.is_none() {
            return Err(err(
                "appendfsync",
                "needs data_dir (without one the node keeps nothing on disk)".into(),
            ));
        }
        let positive = |v: Option<u64>, field: &str, default: u64| match v {
            Some(0) => Err(err(field, "must be more than 0".into())),
            Some(v) => Ok(Duration::from_millis(v)),
            None => Ok(Duration::from_millis(default)),
        };
        let node_timeout = positive(
            raw.node_timeout_ms,
            "node_timeout_ms",
            DEFAULT_NODE_TIMEOUT_MS,
        )?;
        let request_timeout = positive(
            raw.request_timeout_ms,
            "request_timeout_ms",
            DEFAULT_REQUEST_TIMEOUT_MS,
        )?;
        let min_replicas_max_lag = positive(
            raw.min_replicas_max_lag_ms,
            "min_replicas_max_lag_ms",
            DEFAULT_MAX_LAG_MS,
        )?;
        let repl_backlog_size = match raw.repl_backlog_size {
            Some(ByteSize(0)) => {
                return Err(err("repl_backlog_size", "must be more than 0".into()))
            }
            Some(ByteSize(n)) => n,
            None => DEFAULT_BACKLOG,
        };
        let replica_of = match raw.replica_of {
            None => None,
            Some(s) => {
                let t = s.trim();
                if let Some(id) =
                    NodeId::from_hex(&t.to_ascii_lowercase()).filter(|_| t.len() == 40)
                {
                    Some(ReplicaOf::Id(id))
                } else {
                    check_host_port(t).map_err(|m| {
                        err(
                            "replica_of",
                            format!("{m}; expected a node id (40 hex digits) or host:port"),
                        )
                    })?;
                    Some(ReplicaOf::Addr(t.to_string()))
                }
            }
        };
        let resp_listen = raw
            .resp_listen
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| err("resp_listen", format!("{a:?} is not ip:port ({e})")))
            })
            .transpose()?;
        if raw.requirepass.as_deref() == Some("") {
            return Err(err(
                "requirepass",
                "an empty password (leave the key out for none)".into(),
            ));
        }
        if raw.io_threads == Some(0) {
            return Err(err("io_threads", "must be more than 0".into()));
        }
        if raw.maxclients == Some(0) {
            return Err(err("maxclients", "must be more than 0".into()));
        }
        let resp_tls = match (raw.tls_cert_file, raw.tls_key_file) {
            (None, None) => {
                for (set, field) in [
                    (raw.tls_ca_cert_file.is_some(), "tls_ca_cert_file"),
                    (raw.tls_auth_clients.is_some(), "tls_auth_clients"),
                ] {
                    if set {
                        return Err(err(
                            field,
                            "needs tls_cert_file and tls_key_file (TLS is off without them)".into(),
                        ));
                    }
                }
                None
            }
            (Some(_), None) => {
                return Err(err(
                    "tls_cert_file",
                    "needs tls_key_file (the certificate's private key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls_key_file",
                    "needs tls_cert_file (the certificate of this key)".into(),
                ))
            }
            (Some(cert), Some(key)) => {
                if resp_listen.is_none() {
                    return Err(err(
                        "tls_cert_file",
                        "TLS is for the RESP server: needs resp_listen".into(),
                    ));
                }
                let ca_cert_file = raw
                    .tls_ca_cert_file
                    .map(|p| resolve(p, "tls_ca_cert_file"))
                    .transpose()?;
                let auth_clients = match (raw.tls_auth_clients, &ca_cert_file) {
                    (Some(TlsAuthClients::Yes | TlsAuthClients::Optional), None) => {
                        return Err(err(
                            "tls_auth_clients",
                            "needs tls_ca_cert_file (the CA client certificates are \
                             checked against)"
                                .into(),
                        ))
                    }
                    (Some(a), _) => a,
                    (None, Some(_)) => TlsAuthClients::Yes,
                    (None, None) => TlsAuthClients::No,
                };
                Some(RespTls {
                    cert_file: resolve(cert, "tls_cert_file")?,
                    key_file: resolve(key, "tls_key_file")?,
                    ca_cert_file,
                    auth_clients,
                })
            }
        };
        let resp_users = check_users(raw.resp_users, |nth, message| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: table_line(text, "resp_users", nth),
            field: Some("resp_users".into()),
            message,
        })?;
        Ok(NodeConfig {
            path: path.to_path_buf(),
            listen,
            advertise: raw.advertise,
            seeds: raw.seeds,
            data_dir,
            cert,
            key,
            ca,
            maxmemory: raw.maxmemory.map(|b| b.0),
            maxmemory_policy,
            appendfsync,
            node_timeout,
            min_replicas_to_write: raw.min_replicas_to_write.unwrap_or(0),
            min_replicas_max_lag,
            repl_backlog_size,
            request_timeout,
            replica_of,
            revocation_list,
            allow_roleless: raw.allow_roleless.unwrap_or(true),
            require_full_coverage: raw.require_full_coverage.unwrap_or(true),
            allow_reads_when_down: raw.allow_reads_when_down.unwrap_or(false),
            replica_validity_factor: raw.replica_validity_factor.unwrap_or(10),
            replica_no_failover: raw.replica_no_failover.unwrap_or(false),
            migration_barrier: raw.migration_barrier.unwrap_or(1),
            allow_replica_migration: raw.allow_replica_migration.unwrap_or(true),
            replica_serve_stale_data: raw.replica_serve_stale_data.unwrap_or(true),
            resp_listen,
            requirepass: raw.requirepass,
            maxclients: raw.maxclients.unwrap_or(10_000),
            timeout: raw.timeout.unwrap_or(0),
            io_threads: raw.io_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            resp_tls,
            resp_users,
        })
    }

    /// Where the node's cluster state is kept: `<data_dir>/cluster.state`.
    pub fn state_path(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("cluster.state"))
    }

    /// Where the node's data (append-only log and snapshots) is kept:
    /// `<data_dir>/data`.
    pub fn aof_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("data"))
    }

    /// The node's `ClusterConfig` for this identity and CA: bind, advertise, state
    /// store (a file in `data_dir`, else memory), timeouts, replication settings.
    pub fn cluster_config(
        &self,
        identity: NodeIdentity,
        ca: CertificateDer<'static>,
    ) -> ClusterConfig {
        let state = match self.state_path() {
            Some(p) => StateStore::File(p),
            None => StateStore::Memory(MemoryStore::new()),
        };
        let mut config = ClusterConfig::new(self.listen, identity, ca, state)
            .node_timeout(self.node_timeout)
            .backlog_size(self.repl_backlog_size);
        if self.min_replicas_to_write > 0 {
            config =
                config.min_replicas_to_write(self.min_replicas_to_write, self.min_replicas_max_lag);
        }
        config.advertise = self.advertise.clone();
        config.request_timeout = self.request_timeout;
        config.revocation_list = self.revocation_list.clone();
        config.allow_roleless = self.allow_roleless;
        config.require_full_coverage = self.require_full_coverage;
        config.allow_reads_when_down = self.allow_reads_when_down;
        config.replica_validity_factor = self.replica_validity_factor;
        config.replica_no_failover = self.replica_no_failover;
        config.migration_barrier = self.migration_barrier;
        config.allow_replica_migration = self.allow_replica_migration;
        config.replica_serve_stale_data = self.replica_serve_stale_data;
        config
    }

    /// The node's `Durability`, if it has a `data_dir`.
    pub fn durability(&self) -> Option<Durability> {
        self.aof_dir()
            .map(|d| Durability::new(d).fsync(self.appendfsync.unwrap_or_default()))
    }

    /// The addresses this node is known at (`listen`, and `advertise` if set), which
    /// it does not MEET.
    pub fn own_addresses(&self) -> Vec<String> {
        let mut own = vec![self.listen.to_string()];
        own.extend(self.advertise.clone());
        own
    }
}

/// Checks the `[[resp_users]]` tables: a name that is not empty, not `default` (the
/// user `requirepass` sets), without spaces or control characters (as Redis's ACL
/// names), given once; a password that is not empty. `err(i, message)` makes the
/// error about the `i`th table (0-based).
fn check_users(
    raw: Vec<RawUser>,
    err: impl Fn(usize, String) -> ConfigError,
) -> Result<Vec<RespUser>, ConfigError> {
    let mut users: Vec<RespUser> = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        let which = format!("user {} ({:?})", i + 1, u.name);
        if u.name.is_empty() {
            return Err(err(i, format!("user {}: an empty name", i + 1)));
        }
        if u.name == "default" {
            return Err(err(
                i,
                format!("{which}: `default` is the user requirepass sets; name another"),
            ));
        }
        if u.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                i,
                format!("{which}: a name has no spaces or control characters, as in Redis"),
            ));
        }
        if let Some(first) = users.iter().position(|o| o.name == u.name) {
            return Err(err(
                i,
                format!("{which}: user {} has this name already", first + 1),
            ));
        }
        if u.password.is_empty() {
            return Err(err(i, format!("{which}: an empty password")));
        }
        users.push(RespUser {
            name: u.name,
            password: u.password,
            read_only: u.read_only,
        });
    }
    Ok(users)
}

/// The 1-based line of the `nth` (0-based) `[[table]]` header in `text`, if the array
/// of tables is written with headers.
fn table_line(text: &str, table: &str, nth: usize) -> Option<usize> {
    let header = format!("[[{table}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let squeezed: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            squeezed.starts_with(&header)
        })
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// The 1-based line of the top-level key `field` in `text`, if it is there.
fn key_line(text: &str, field: &str) -> Option<usize> {
    let table: Result<BTreeMap<toml::Spanned<String>, toml::Value>, _> = toml::from_str(text);
    let table = table.ok()?;
    let (k, _) = table.iter().find(|(k, _)| k.get_ref() == field)?;
    Some(line_of(text, k.span().start))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A TOML parser error, with the field it is about: named by the message (unknown
/// and missing fields), or found from the error's position (wrong types and values).
fn toml_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().replace('\n', "; ");
    let line = e.span().map(|s| line_of(text, s.start));
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let field = quoted("unknown field `")
        .or_else(|| quoted("missing field `"))
        .or_else(|| {
            // The key whose entry holds the error's position.
            let span = e.span()?;
            let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
                toml::from_str(text).ok()?;
            table
                .iter()
                .find(|(k, v)| {
                    k.span().start <= span.start && span.start < v.span().end.max(k.span().end)
                })
                .map(|(k, _)| k.get_ref().clone())
        });
    // "missing field" errors point at the whole document: no useful line.
    let line = if message.starts_with("missing field") {
        None
    } else {
        line
    };
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        field,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:7101"
cert = "node1.pem"
key = "node1.key"
ca = "/etc/larder/ca.pem"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("/srv/larder/node.toml"))
    }

    fn error(text: &str) -> (Option<String>, String) {
        let e = parse(text).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/srv/larder/node.toml"), "{s}");
        (e.field().map(str::to_string), s)
    }

    #[test]
    fn minimal_file_gets_defaults_and_resolved_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7101".parse::<SocketAddr>().unwrap());
        assert_eq!(c.cert, Path::new("/srv/larder/node1.pem"));
        assert_eq!(c.key, Path::new("/srv/larder/node1.key"));
        assert_eq!(c.ca, Path::new("/etc/larder/ca.pem"));
        assert_eq!(c.data_dir, None);
        assert!(c.durability().is_none() && c.state_path().is_none());
        assert_eq!(c.seeds, Vec::<String>::new());
        assert_eq!(c.maxmemory, None);
        assert_eq!(c.maxmemory_policy, None);
        assert_eq!(c.node_timeout, Duration::from_secs(15));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.repl_backlog_size, 16 << 20);
        assert_eq!(c.min_replicas_to_write, 0);
        assert_eq!(c.replica_of, None);
        assert!(c.require_full_coverage && !c.allow_reads_when_down);
        assert_eq!(c.replica_validity_factor, 10);
        assert!(!c.replica_no_failover);
        assert_eq!(c.migration_barrier, 1);
        assert!(c.allow_replica_migration && c.replica_serve_stale_data);
        assert_eq!(c.own_addresses(), vec!["127.0.0.1:7101".to_string()]);
        assert_eq!((c.resp_listen, c.requirepass.as_deref()), (None, None));
        assert_eq!((c.maxclients, c.timeout), (10_000, 0));
    }

    #[test]
    fn resp_settings() {
        let c = parse(&format!(
            "{MINIMAL}resp_listen = \"127.0.0.1:6379\"\nrequirepass = \"s3cret\"\n\
             maxclients = 50\ntimeout = 300\nio_threads = 3\n"
        ))
        .unwrap();
        assert_eq!(c.resp_listen, Some("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(c.requirepass.as_deref(), Some("s3cret"));
        assert_eq!((c.maxclients, c.timeout, c.io_threads), (50, 300, 3));
        for (line, field, needle) in [
            ("resp_listen = \"localhost:1\"", "resp_listen", "ip:port"),
            ("requirepass = \"\"", "requirepass", "empty"),
            ("maxclients = 0", "maxclients", "more than 0"),
            ("io_threads = 0", "io_threads", "more than 0"),
        ] {
            let (f, s) = error(&format!("{MINIMAL}{line}\n"));
            assert_eq!(f.as_deref(), Some(field), "{line}: {s}");
            assert!(s.contains(needle), "{line}: {s}");
        }
    }

    #[test]
    fn resp_tls_settings() {
        let base = format!("{MINIMAL}resp_listen = \"127.0.0.1:6379\"\n");
        let c = parse(&base).unwrap();
        assert_eq!(c.resp_tls, None);

        let c = parse(&format!(
            "{base}tls_cert_file = \"tls/redis.crt\"\ntls_key_file = \"/etc/tls/redis.key\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.resp_tls,
            Some(RespTls {
                cert_file: PathBuf::from("/srv/larder/tls/redis.crt"),
                key_file: PathBuf::from("/etc/tls/redis.key"),
                ca_cert_file: None,
                auth_clients: TlsAuthClients::No,
            })
        );

        // A CA asks for client certificates unless told otherwise, as in Redis.
        let with_ca = format!(
            "{base}tls_cert_file = \"r.crt\"\ntls_key_file = \"r.key\"\n\
             tls_ca_cert_file = \"ca.crt\"\n"
        );
        let tls = parse(&with_ca).unwrap().resp_tls.unwrap();
        assert_eq!(tls.ca_cert_file, Some(PathBuf::from("/srv/larder/ca.crt")));
        assert_eq!(tls.auth_clients, TlsAuthClients::Yes);
        for (value, auth) in [
            ("\"optional\"", TlsAuthClients::Optional),
            ("\"no\"", TlsAuthClients::No),
            ("\"YES\"", TlsAuthClients::Yes),
            ("false", TlsAuthClients::No),
            ("true", TlsAuthClients::Yes),
        ] {
            let c = parse(&format!("{with_ca}tls_auth_clients = {value}\n")).unwrap();
            assert_eq!(c.resp_tls.unwrap().auth_clients, auth, "{value}");
        }
        // Without a CA, "no" is what it is anyway.
        let c = parse(&format!(
            "{base}tls_cert_file = \"r.crt\"\ntls_key_file = \"r.key\"\ntls_auth_clients = \"no\"\n"
        ))
        .unwrap();
        assert_eq!(c.resp_tls.unwrap().auth_clients, TlsAuthClients::No);

        let cert_key = "tls_cert_file = \"r.crt\"\ntls_key_file = \"r.key\"\n";
        for (extra, field, needle) in [
            (
                "tls_cert_file = \"r.crt\"",
                "tls_cert_file",
                "needs tls_key_file",
            ),
            (
                "tls_key_file = \"r.key\"",
                "tls_key_file",
                "needs tls_cert_file",
            ),
            (
                "tls_ca_cert_file = \"ca.crt\"",
                "tls_ca_cert_file",
                "needs tls_cert_file",
            ),
            (
                "tls_auth_clients = \"yes\"",
                "tls_auth_clients",
                "needs tls_cert_file",
            ),
            (
                &format!("{cert_key}tls_auth_clients = \"optional\""),
                "tls_auth_clients",
                "needs tls_ca_cert_file",
            ),
            (
                &format!("{cert_key}tls_auth_clients = \"sometimes\""),
                "tls_auth_clients",
                "\"optional\"",
            ),
            (
                &format!("{cert_key}tls_auth_clients = 1"),
                "tls_auth_clients",
                "\"yes\"",
            ),
            (
                "tls_cert_file = \"\"\ntls_key_file = \"r.key\"",
                "tls_cert_file",
                "empty",
            ),
        ] {
            let (f, s) = error(&format!("{base}{extra}\n"));
            assert_eq!(f.as_deref(), Some(field), "{extra}: {s}");
            assert!(s.contains(needle), "{extra}: {s} (wanted {needle:?})");
        }
        // TLS is the RESP server's.
        let (f, s) = error(&format!("{MINIMAL}{cert_key}"));
        assert_eq!(f.as_deref(), Some("tls_cert_file"), "{s}");
        assert!(s.contains("needs resp_listen") && s.contains(":6:"), "{s}");
    }

    #[test]
    fn resp_users_tables() {
        let c = parse(MINIMAL).unwrap();
        assert!(c.resp_users.is_empty());
        let c = parse(&format!(
            "{MINIMAL}requirepass = \"admin-pass\"\n\n\
             [[resp_users]]\nname = \"reader\"\npassword = \"r-pass\"\nread_only = true\n\n\
             [[resp_users]]\nname = \"writer\"\npassword = \"w-pass\"\n"
        ))
        .unwrap();
        let user = |name: &str, password: &str, read_only| RespUser {
            name: name.into(),
            password: password.into(),
            read_only,
        };
        assert_eq!(
            c.resp_users,
            [
                user("reader", "r-pass", true),
                user("writer", "w-pass", false)
            ]
        );
        assert_eq!(c.requirepass.as_deref(), Some("admin-pass"));

        let table = |name: &str, password: &str| {
            format!("\n[[resp_users]]\nname = {name:?}\npassword = {password:?}\n")
        };
        // Tables start on line 7 (after MINIMAL's 5 lines and a blank one), a second on 11.
        for (tables, needle, line) in [
            (table("", "p"), "user 1: an empty name", 7),
            (table("default", "p"), "`default`", 7),
            (table("a b", "p"), "no spaces", 7),
            (
                format!("{}{}", table("x", "p"), table("x", "q")),
                "user 2 (\"x\"): user 1 has this name",
                11,
            ),
            (table("x", ""), "user 1 (\"x\"): an empty password", 7),
        ] {
            let (f, s) = error(&format!("{MINIMAL}{tables}"));
            assert_eq!(f.as_deref(), Some("resp_users"), "{tables}: {s}");
            assert!(s.contains(needle), "{tables}: {s} (wanted {needle:?})");
            assert!(
                s.contains(&format!(":{line}:")),
                "{tables}: {s} (line {line})"
            );
        }
        // Unknown and missing fields of a table are named.
        let (f, s) = error(&format!(
            "{MINIMAL}\n[[resp_users]]\nname = \"x\"\npasword = \"p\"\n"
        ));
        assert_eq!(f.as_deref(), Some("pasword"), "{s}");
        let (f, s) = error(&format!("{MINIMAL}\n[[resp_users]]\nname = \"x\"\n"));
        assert_eq!(f.as_deref(), Some("password"), "{s}");
        assert!(s.contains("missing field"), "{s}");
        let (f, s) = error(&format!(
            "{MINIMAL}\n[[resp_users]]\nname = \"x\"\npassword = \"p\"\nread_only = \"yes\"\n"
        ));
        assert!(s.contains("bool"), "{f:?}: {s}");
    }

    #[test]
    fn full_file() {
        let text = r#"
listen = "0.0.0.0:7101"
advertise = "node1.example:7101"
seeds = ["127.0.0.1:7102", "node3.example:7103", "[::1]:7104"]
data_dir = "data/node1"
cert = "certs/node1.pem"
key = "certs/node1.key"
ca = "certs/ca.pem"
maxmemory = "256mb"
maxmemory_policy = "allkeys-lfu"
appendfsync = "always"
node_timeout_ms = 5000
min_replicas_to_write = 1
min_replicas_max_lag_ms = 2000
repl_backlog_size = "1gb"
request_timeout_ms = 3000
replica_of = "127.0.0.1:7102"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.advertise.as_deref(), Some("node1.example:7101"));
        assert_eq!(c.seeds.len(), 3);
        assert_eq!(
            c.data_dir.as_deref(),
            Some(Path::new("/srv/larder/data/node1"))
        );
        assert_eq!(
            c.state_path().unwrap(),
            Path::new("/srv/larder/data/node1/cluster.state")
        );
        assert_eq!(
            c.aof_dir().unwrap(),
            Path::new("/srv/larder/data/node1/data")
        );
        assert_eq!(c.cert, Path::new("/srv/larder/certs/node1.pem"));
        assert_eq!(c.maxmemory, Some(256 << 20));
        assert_eq!(c.maxmemory_policy, Some(Policy::AllKeysLfu));
        assert_eq!(c.appendfsync, Some(Fsync::Always));
        assert_eq!(c.node_timeout, Duration::from_secs(5));
        assert_eq!(c.min_replicas_to_write, 1);
        assert_eq!(c.min_replicas_max_lag, Duration::from_secs(2));
        assert_eq!(c.repl_backlog_size, 1 << 30);
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.replica_of, Some(ReplicaOf::Addr("127.0.0.1:7102".into())));
        assert_eq!(
            c.own_addresses(),
            vec!["0.0.0.0:7101".to_string(), "node1.example:7101".to_string()]
        );

        let id = "AB".repeat(20);
        let c = parse(&format!(
            "{MINIMAL}replica_of = \"{id}\"\nmaxmemory = 1048576\n"
        ))
        .unwrap();
        assert_eq!(c.replica_of, Some(ReplicaOf::Id(NodeId([0xab; 20]))));
        assert_eq!(c.maxmemory, Some(1 << 20));
    }

    #[test]
    fn sizes_use_redis_units() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("100"), Ok(100));
        assert_eq!(p("100b"), Ok(100));
        assert_eq!(p("1k"), Ok(1000));
        assert_eq!(p("1kb"), Ok(1024));
        assert_eq!(p("256mb"), Ok(256 << 20));
        assert_eq!(p("256MB"), Ok(256 << 20));
        assert_eq!(p("2m"), Ok(2_000_000));
        assert_eq!(p("1gb"), Ok(1 << 30));
        assert_eq!(p("3g"), Ok(3_000_000_000));
        assert!(p("mb").is_err());
        assert!(p("1tb").is_err());
        assert!(p("1.5gb").is_err());
        assert!(p("-1").is_err());
        assert!(p("99999999999999gb").is_err());
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let (field, s) = error(&format!("{MINIMAL}maxmemroy = \"1gb\"\n"));
        assert_eq!(field.as_deref(), Some("maxmemroy"), "{s}");
        assert!(s.contains("unknown field") && s.contains(":6:"), "{s}");
        let (field, s) = error(&format!("{MINIMAL}[tls]\ncert = \"x\"\n"));
        assert_eq!(field.as_deref(), Some("tls"), "{s}");

        let (field, s) = error("listen = \"127.0.0.1:1\"\ncert = \"a\"\nkey = \"b\"\n");
        assert_eq!(field.as_deref(), Some("ca"), "{s}");
        assert!(s.contains("missing field"), "{s}");
    }

    #[test]
    fn wrong_types_and_values_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "node_timeout_ms = \"5s\"",
                "node_timeout_ms",
                "expected u64",
            ),
            ("node_timeout_ms = -1", "node_timeout_ms", "u64"),
            ("node_timeout_ms = 0", "node_timeout_ms", "more than 0"),
            (
                "request_timeout_ms = 0",
                "request_timeout_ms",
                "more than 0",
            ),
            ("seeds = [7102]", "seeds", "expected a string"),
            ("seeds = [\"localhost\"]", "seeds", "host:port"),
            ("seeds = \"127.0.0.1:7102\"", "seeds", "sequence"),
            ("maxmemory = \"lots\"", "maxmemory", "not a size"),
            ("maxmemory = -5", "maxmemory", "negative"),
            ("maxmemory = true", "maxmemory", "256mb"),
            ("repl_backlog_size = 0", "repl_backlog_size", "more than 0"),
            (
                "maxmemory_policy = \"lru\"",
                "maxmemory_policy",
                "allkeys-lru",
            ),
            ("appendfsync = \"sometimes\"", "appendfsync", "everysec"),
            ("appendfsync = \"always\"", "appendfsync", "data_dir"),
            ("advertise = \"somewhere\"", "advertise", "host:port"),
            ("advertise = \"::1:7000\"", "advertise", "brackets"),
            ("replica_of = \"master\"", "replica_of", "node id"),
            (
                "min_replicas_to_write = \"one\"",
                "min_replicas_to_write",
                "usize",
            ),
            ("data_dir = \"\"", "data_dir", "empty"),
        ];
        for (line, field, needle) in cases {
            let (f, s) = error(&format!("{MINIMAL}{line}\n"));
            assert_eq!(f.as_deref(), Some(*field), "{line}: {s}");
            assert!(s.contains(&format!("field `{field}`")), "{line}: {s}");
            assert!(s.contains(needle), "{line}: {s} (wanted {needle:?})");
            assert!(s.contains(":6:"), "{line}: {s} (the line)");
        }
        let (f, s) = error(&MINIMAL.replace("127.0.0.1:7101", "localhost:7101"));
        assert_eq!(f.as_deref(), Some("listen"), "{s}");
        assert!(s.contains(":2:"), "{s}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let e = parse("listen = \n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/srv/larder/node.toml:1:"), "{s}");
        assert!(!s.contains('\n'), "one line: {s}");
    }

    #[test]
    fn cluster_config_carries_the_settings() {
        let ca = larder::cluster::ClusterCa::generate("t").unwrap();
        let identity = ca.issue(NodeId([9; 20])).unwrap();
        let text = format!(
            "{MINIMAL}data_dir = \"d\"\nadvertise = \"10.0.0.1:7101\"\nnode_timeout_ms = 2000\n\
             min_replicas_to_write = 2\nmin_replicas_max_lag_ms = 3000\nrepl_backlog_size = \"1mb\"\n\
             request_timeout_ms = 700\nrequire_full_coverage = false\nallow_reads_when_down = true\n\
             replica_validity_factor = 0\nreplica_no_failover = true\nmigration_barrier = 3\n\
             allow_replica_migration = false\nreplica_serve_stale_data = false\n"
        );
        let c = parse(&text).unwrap();
        let cc = c.cluster_config(identity, ca.cert_der());
        assert!(!cc.require_full_coverage && cc.allow_reads_when_down);
        assert_eq!(cc.replica_validity_factor, 0);
        assert!(cc.replica_no_failover);
        assert_eq!(cc.migration_barrier, 3);
        assert!(!cc.allow_replica_migration && !cc.replica_serve_stale_data);
        assert_eq!(cc.bind, c.listen);
        assert_eq!(cc.advertise.as_deref(), Some("10.0.0.1:7101"));
        assert_eq!(cc.node_timeout, Duration::from_secs(2));
        assert_eq!(cc.request_timeout, Duration::from_millis(700));
        assert_eq!(cc.replication.backlog_size, 1 << 20);
        assert_eq!(cc.replication.min_replicas_to_write, 2);
        assert_eq!(cc.replication.min_replicas_max_lag, 3000);
        assert!(
            matches!(&cc.state, StateStore::File(p) if p == Path::new("/srv/larder/d/cluster.state"))
        );
        assert!(c.durability().is_some());
    }

    /// The commented example in docs/operations.md and the walkthrough's files in
    /// examples/edge/ are valid configurations.
    #[test]
    fn documented_and_example_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let doc = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
        let section = &doc[doc.find("## larder-node").expect("## larder-node section")..];
        let start = section.find("```toml\n").expect("a toml example") + "```toml\n".len();
        let end = start + section[start..].find("```").unwrap();
        let c = NodeConfig::parse(&section[start..end], &root.join("docs/node.toml")).unwrap();
        assert_eq!(c.seeds.len(), 2);
        assert!(c.data_dir.is_some() && c.replica_of.is_some() && c.advertise.is_some());
        assert_eq!(
            c.revocation_list.as_deref(),
            Some(Path::new("/etc/larder/revoked.crl"))
        );
        assert!(c.allow_roleless);
        let cc = c.cluster_config(
            larder::cluster::ClusterCa::generate("t")
                .unwrap()
                .issue(NodeId([1; 20]))
                .unwrap(),
            CertificateDer::from(vec![0u8]),
        );
        assert_eq!(cc.revocation_list, c.revocation_list);
        let tls = c.resp_tls.as_ref().expect("the example's TLS settings");
        assert_eq!(tls.auth_clients, TlsAuthClients::Yes);
        assert!(tls.ca_cert_file.is_some());
        assert_eq!(c.resp_users.len(), 2);
        assert!(c.resp_users[0].read_only && !c.resp_users[1].read_only);

        for n in 1..=3 {
            let path = root.join(format!("examples/edge/node{n}.toml"));
            let c = NodeConfig::load(&path).unwrap();
            assert_eq!(
                c.listen,
                format!("127.0.0.1:710{n}").parse::<SocketAddr>().unwrap()
            );
            assert!(c.data_dir.unwrap().ends_with(format!("data/node{n}")));
            assert!(c.cert.ends_with(format!("certs/node{n}.pem")));
            assert!(
                c.seeds.is_empty(),
                "cluster create wants nodes that know nobody"
            );
        }
    }
}
