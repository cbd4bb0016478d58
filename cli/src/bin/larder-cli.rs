//! `larder-cli`: cluster tools for larder, modelled on `redis-cli --cluster`.
//!
//! A thin layer over [`larder_cli::ops`]: it parses arguments, loads the tool's
//! certificate, calls the operation and prints. Run `larder-cli --help` for the
//! commands; the exit codes are:
//!
//! - **0**: success (for `check`, the cluster is healthy);
//! - **1**: the operation failed, or the cluster is unhealthy (`check`, `fix`), or
//!   the key does not exist (`get`);
//! - **2**: bad usage, or a node named on the command line cannot be reached.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use larder::cluster::larder_cluster::net::Role;
use larder_cli::certs;
use larder_cli::ops::{self, plan::RebalancePlan, Admin, Limits, MoveOptions, OpsError};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (check: the cluster is healthy)
  1  the operation failed, or the cluster is unhealthy (check, fix), or the key does not exist (get)
  2  bad usage, or a node named on the command line cannot be reached

Certificates: --ca/--cert/--key, or the LARDER_CA, LARDER_CERT and LARDER_KEY
environment variables. A tool certificate is issued with the admin role:
`larder-cli certs issue --role admin <dir> cli` (a read-only one with --role client).";

/// larder's cluster tools, modelled on `redis-cli --cluster`.
#[derive(Parser, Debug)]
#[command(name = "larder-cli", version, after_help = EXIT_CODES)]
struct Cli {
    /// The cluster CA certificate (PEM) [env: LARDER_CA].
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// This tool's certificate (PEM), issued by the cluster CA [env: LARDER_CERT].
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// This tool's private key (PEM) [env: LARDER_KEY].
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Time limit of one request to a node (e.g. 500ms, 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Time limit of each wait for the cluster to converge (agreement after MEET,
    /// slot moves, failovers, cluster_ok).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    wait: Duration,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The cluster CA and certificates on disk.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Cluster creation.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Checks the cluster: agreement on slot owners, all 16384 slots covered, no
    /// open slots, no keys in slots their node does not serve, cluster_ok
    /// everywhere, every master reachable. Exit 0 if healthy, 1 if not.
    Check {
        /// Any node of the cluster.
        addr: String,
    },
    /// Keys, slots and replicas of each master. Exit 1 if a master does not answer.
    Info {
        /// Any node of the cluster.
        addr: String,
    },
    /// The node's view of the cluster as CLUSTER NODES lines.
    Nodes {
        /// Any node of the cluster.
        addr: String,
    },
    /// Moves slots, with their keys, from one or more masters to another (each
    /// source's lowest-numbered slots first, as redis-cli). Refused (exit 1) unless
    /// `check` passes.
    Reshard {
        /// Any node of the cluster.
        addr: String,
        /// Source master(s): id, unique id prefix or address; comma-separated or
        /// repeated; `all` for every other master, proportionally.
        #[arg(long, required = true, value_delimiter = ',')]
        from: Vec<String>,
        /// Target master: id, unique id prefix or address.
        #[arg(long)]
        to: String,
        /// How many slots to move.
        #[arg(long)]
        slots: usize,
        #[command(flatten)]
        mover: MoverArgs,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Balances slots across masters by weight (redis-cli's algorithm). Refused
    /// (exit 1) unless `check` passes.
    Rebalance {
        /// Any node of the cluster.
        addr: String,
        /// A master's weight, `<node>=<weight>` (default 1; 0 empties the master).
        #[arg(long = "weight", value_parser = parse_weight)]
        weights: Vec<(String, f64)>,
        /// Do nothing if every master is within this percentage of its share (0: any
        /// difference counts).
        #[arg(long, default_value_t = 2.0)]
        threshold: f64,
        /// Give slots to masters that have none too.
        #[arg(long)]
        use_empty_masters: bool,
        /// Print the moves without making them.
        #[arg(long)]
        simulate: bool,
        #[command(flatten)]
        mover: MoverArgs,
    },
    /// Adds an empty node to the cluster, as a master or a replica.
    AddNode {
        /// The new node.
        new_addr: String,
        /// Any node of the cluster.
        existing_addr: String,
        /// Make it a replica of this master (id, unique id prefix or address).
        #[arg(long, conflicts_with = "replica")]
        replica_of: Option<String>,
        /// Make it a replica of the master with the fewest replicas.
        #[arg(long)]
        replica: bool,
    },
    /// Removes a node that serves no slots: every other node forgets it, then it
    /// shuts down.
    DelNode {
        /// Any node of the cluster.
        addr: String,
        /// The node to remove: id, unique id prefix or address.
        node: String,
    },
    /// Makes a replica take over its master's slots.
    Failover {
        /// The replica.
        replica_addr: String,
        /// force: without the master's agreement; takeover: without an election.
        mode: Option<FailoverMode>,
    },
    /// Repairs the cluster: resumes or rolls back open slots, assigns unassigned
    /// slots, hands keys held by nodes that do not serve their slots to the slots'
    /// owners. Exit 0 if the cluster is healthy afterwards.
    Fix {
        /// Any node of the cluster.
        addr: String,
        #[command(flatten)]
        mover: MoverArgs,
    },
    /// Prints the value of a key (raw bytes). Exit 1 if there is no such key.
    Get {
        /// Any node of the cluster.
        addr: String,
        /// The key.
        #[arg(value_name = "KEY")]
        name: String,
    },
    /// Sets a key to a value.
    Set {
        /// Any node of the cluster.
        addr: String,
        /// The key.
        #[arg(value_name = "KEY")]
        name: String,
        /// The value.
        value: String,
    },
    /// Deletes a key; prints 1 if it existed, 0 if not.
    Del {
        /// Any node of the cluster.
        addr: String,
        /// The key.
        #[arg(value_name = "KEY")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Creates a cluster CA (ca.pem, ca.key) in a directory.
    Init {
        /// The directory.
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "larder cluster")]
        name: String,
    },
    /// Issues a certificate with a fresh node id (<prefix>.pem, <prefix>.key) from
    /// the CA in a directory; prints the id.
    Issue {
        /// The CA's directory.
        dir: PathBuf,
        /// The files' name: a bare name is written in <dir>, a path where it says.
        prefix: PathBuf,
        /// What the certificate may do: node (a cluster node), admin (larder-cli:
        /// every administrative command, reads and writes), client (reads and
        /// read-only queries). Repeat or separate with commas for several.
        #[arg(long, value_delimiter = ',', default_value = "node", value_parser = parse_role)]
        role: Vec<Role>,
    },
    /// Revokes certificates: adds them to the CA directory's revocation list
    /// (<dir>/revoked.crl, signed by the CA; created if missing, empty if no
    /// certificate is named). Copy the list to every node's `revocation_list` path;
    /// nodes load it when it changes and close the certificates' connections.
    Revoke {
        /// The CA's directory.
        dir: PathBuf,
        /// The certificates to revoke (PEM).
        certs: Vec<PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Creates a cluster from empty nodes: slots split evenly among the masters,
    /// MEET, replicas, then waits for cluster_ok on every node.
    Create {
        /// The nodes: masters first, then replicas.
        #[arg(required = true)]
        addrs: Vec<String>,
        /// Replicas per master.
        #[arg(long, default_value_t = 0)]
        replicas: usize,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug, Clone, Copy)]
struct MoverArgs {
    /// Keys moved per round trip between source and target.
    #[arg(long, default_value_t = larder::cluster::admin::DEFAULT_BATCH)]
    batch: u32,
    /// Slots per move request (finer progress; less left open by a crash).
    #[arg(long, default_value_t = 32)]
    slots_per_call: usize,
    /// Time limit of one move request.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    call_timeout: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailoverMode {
    /// Without the master's agreement (it is down).
    Force,
    /// Without an election.
    Takeover,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 5s, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn parse_weight(s: &str) -> Result<(String, f64), String> {
    let (node, w) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected <node>=<weight>"))?;
    let w: f64 = w
        .parse()
        .map_err(|_| format!("{s:?}: the weight is not a number"))?;
    if !w.is_finite() || w < 0.0 {
        return Err(format!("{s:?}: the weight must be 0 or more"));
    }
    Ok((node.to_string(), w))
}

impl MoverArgs {
    fn options(&self, limits: Limits) -> MoveOptions {
        MoveOptions {
            batch: self.batch,
            slots_per_call: self.slots_per_call.max(1),
            call_timeout: self.call_timeout,
            limits,
        }
    }
}

/// An error with its exit code.
struct Fail(i32, String);

impl From<OpsError> for Fail {
    fn from(e: OpsError) -> Self {
        Fail(e.exit_code(), e.to_string())
    }
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

fn path_arg(flag: &Option<PathBuf>, env: &str, name: &str) -> Result<PathBuf, Fail> {
    flag.clone()
        .or_else(|| std::env::var_os(env).map(PathBuf::from))
        .ok_or_else(|| {
            usage(format!(
                "--{name} (or {env}) is required to reach the cluster"
            ))
        })
}

fn confirm(prompt: &str) -> bool {
    print!("{prompt} (type 'yes' to accept): ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

/// A progress bar on stderr when it is a terminal; plain lines on stdout otherwise.
struct Bar {
    bar: ProgressBar,
    keys: AtomicU64,
    started: Instant,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} slots {msg}",
            )
            .expect("a valid template"),
        );
        Bar {
            bar,
            keys: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

impl ops::Progress for Bar {
    fn start(&self, slots: u64) {
        self.bar.set_length(slots);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, slots: u64, keys: u64) {
        let total = self.keys.fetch_add(keys, Ordering::Relaxed) + keys;
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar
            .set_message(format!("{total} keys, {:.0} keys/s", total as f64 / secs));
        self.bar.inc(slots);
    }

    fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn print_stats(s: &ops::MoveStats) {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    println!(
        "[OK] Moved {} slots and {} keys ({} bytes) in {:.1} s ({:.0} keys/s).",
        s.slots,
        s.keys,
        s.bytes,
        secs,
        s.keys as f64 / secs
    );
}

async fn addr(s: &str) -> Result<SocketAddr, Fail> {
    Ok(ops::resolve(s).await?)
}

async fn run(cli: Cli) -> Result<i32, Fail> {
    let limits = Limits {
        wait: cli.wait,
        ..Limits::default()
    };
    // Commands that need no cluster connection.
    if let Cmd::Certs(c) = &cli.cmd {
        return match c {
            CertsCmd::Init { dir, name } => {
                let ca = certs::init(dir, name).map_err(|e| Fail(1, e.to_string()))?;
                println!("[OK] CA created: {}", ca.display());
                Ok(0)
            }
            CertsCmd::Issue { dir, prefix, role } => {
                let bare = prefix.components().count() == 1 && !prefix.is_absolute();
                let out = if bare {
                    dir.join(prefix)
                } else {
                    prefix.clone()
                };
                let id =
                    certs::issue_with_roles(dir, &out, role).map_err(|e| Fail(1, e.to_string()))?;
                println!("{id}");
                Ok(0)
            }
            CertsCmd::Revoke { dir, certs: files } => {
                let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
                let (list, n) = certs::revoke(dir, &paths).map_err(|e| Fail(1, e.to_string()))?;
                println!("[OK] {} revokes {n} certificate(s)", list.display());
                Ok(0)
            }
        };
    }
    let ca = path_arg(&cli.ca, "LARDER_CA", "ca")?;
    let cert = path_arg(&cli.cert, "LARDER_CERT", "cert")?;
    let key = path_arg(&cli.key, "LARDER_KEY", "key")?;
    let ca = certs::load_ca(&ca).map_err(|e| usage(e.to_string()))?;
    let identity = certs::load_identity(&cert, &key).map_err(|e| usage(e.to_string()))?;
    let admin = Admin::new(&identity, &ca, cli.timeout)
        .map_err(|e| Fail(2, format!("cannot start the client: {e}")))?;
    let r = command(&admin, cli.cmd, limits).await;
    // Let the nodes see the connections close (bounded: a dead peer never answers).
    let _ = tokio::time::timeout(Duration::from_secs(1), admin.close()).await;
    r
}

async fn command(admin: &Admin, cmd: Cmd, limits: Limits) -> Result<i32, Fail> {
    let mut log = |line: &str| println!("{line}");
    match cmd {
        Cmd::Certs(_) => unreachable!("handled before"),
        Cmd::Cluster(ClusterCmd::Create {
            addrs,
            replicas,
            yes,
        }) => {
            let mut socks = Vec::new();
            for a in &addrs {
                socks.push(addr(a).await?);
            }
            let plan = ops::plan_create(admin, &socks, replicas).await?;
            print!("{}", plan.render());
            if !yes && !confirm("Can I set the above configuration?") {
                return Err(Fail(1, "aborted".into()));
            }
            ops::apply_create(admin, &plan, &limits, &mut log).await?;
            Ok(0)
        }
        Cmd::Check { addr: a } => {
            let report = ops::check(admin, addr(&a).await?).await?;
            print!("{}", report.render());
            Ok(if report.healthy() { 0 } else { 1 })
        }
        Cmd::Info { addr: a } => {
            let masters = ops::info(admin, addr(&a).await?).await?;
            print!("{}", ops::render_info(&masters));
            Ok(if masters.iter().all(|m| m.keys.is_some()) {
                0
            } else {
                1
            })
        }
        Cmd::Nodes { addr: a } => {
            let v = admin
                .nodes(addr(&a).await?)
                .await
                .map_err(|source| OpsError::Unreachable { addr: a, source })?;
            for line in ops::nodes_lines(&v) {
                println!("{line}");
            }
            Ok(0)
        }
        Cmd::Reshard {
            addr: a,
            from,
            to,
            slots,
            mover,
            yes,
        } => {
            let report = ops::check(admin, addr(&a).await?).await?;
            if !report.healthy() {
                for p in report.problems() {
                    println!("{p}");
                }
                return Err(Fail(
                    1,
                    "*** Please fix your cluster problems before resharding".into(),
                ));
            }
            let moves = ops::plan_reshard(&report.view, &from, &to, slots)?;
            let target = report.view.find(&to)?;
            println!(
                "Ready to move {slots} slots to {} ({}).",
                target.addr, target.id
            );
            print!("{}", ops::render_moves(&report.view, &moves));
            if !yes && !confirm("Do you want to proceed with the proposed reshard plan?") {
                return Err(Fail(1, "aborted".into()));
            }
            let bar = Bar::new();
            let stats =
                ops::execute_moves(admin, &report.view, &moves, &mover.options(limits), &bar)
                    .await?;
            print_stats(&stats);
            Ok(0)
        }
        Cmd::Rebalance {
            addr: a,
            weights,
            threshold,
            use_empty_masters,
            simulate,
            mover,
        } => {
            let report = ops::check(admin, addr(&a).await?).await?;
            if !report.healthy() {
                for p in report.problems() {
                    println!("{p}");
                }
                return Err(Fail(
                    1,
                    "*** Please fix your cluster problems before rebalancing".into(),
                ));
            }
            match ops::plan_rebalance(&report.view, &weights, threshold, use_empty_masters)? {
                RebalancePlan::Balanced { worst_pct } => {
                    println!(
                        "*** No rebalancing needed! All nodes are within the {threshold:.2}% \
                         threshold (largest difference {worst_pct:.2}%)."
                    );
                    Ok(0)
                }
                RebalancePlan::Moves {
                    nodes,
                    total_weight,
                    moves,
                } => {
                    println!(
                        ">>> Rebalancing across {nodes} nodes. Total weight = {total_weight:.2}"
                    );
                    print!("{}", ops::render_moves(&report.view, &moves));
                    if simulate {
                        return Ok(0);
                    }
                    let bar = Bar::new();
                    let stats = ops::execute_moves(
                        admin,
                        &report.view,
                        &moves,
                        &mover.options(limits),
                        &bar,
                    )
                    .await?;
                    print_stats(&stats);
                    Ok(0)
                }
            }
        }
        Cmd::AddNode {
            new_addr,
            existing_addr,
            replica_of,
            replica,
        } => {
            let role = match (replica_of, replica) {
                (Some(m), _) => ops::NewRole::ReplicaOf(m),
                (None, true) => ops::NewRole::Replica,
                (None, false) => ops::NewRole::Master,
            };
            let id = ops::add_node(
                admin,
                addr(&new_addr).await?,
                addr(&existing_addr).await?,
                role,
                &limits,
                &mut log,
            )
            .await?;
            println!("{id}");
            Ok(0)
        }
        Cmd::DelNode { addr: a, node } => {
            let id = ops::del_node(admin, addr(&a).await?, &node, &limits, &mut log).await?;
            println!("[OK] Node {id} removed.");
            Ok(0)
        }
        Cmd::Failover { replica_addr, mode } => {
            let kind = match mode {
                None => ops::FailoverKind::Default,
                Some(FailoverMode::Force) => ops::FailoverKind::Force,
                Some(FailoverMode::Takeover) => ops::FailoverKind::Takeover,
            };
            let old = ops::failover(admin, addr(&replica_addr).await?, kind, &limits).await?;
            println!("[OK] {replica_addr} took over from {old}.");
            Ok(0)
        }
        Cmd::Fix { addr: a, mover } => {
            let r = ops::fix(admin, addr(&a).await?, &mover.options(limits), &mut log).await?;
            print!("{}", r.after.render());
            Ok(if r.after.healthy() { 0 } else { 1 })
        }
        Cmd::Get { addr: a, name } => match ops::get(admin, addr(&a).await?, &name).await? {
            Some(v) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&v);
                if std::io::stdout().is_terminal() {
                    let _ = out.write_all(b"\n");
                }
                Ok(0)
            }
            None => {
                eprintln!("(nil)");
                Ok(1)
            }
        },
        Cmd::Set {
            addr: a,
            name,
            value,
        } => {
            ops::set(admin, addr(&a).await?, &name, value.as_bytes()).await?;
            println!("OK");
            Ok(0)
        }
        Cmd::Del { addr: a, name } => {
            let existed = ops::del(admin, addr(&a).await?, &name).await?;
            println!("{}", u8::from(existed));
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder-cli: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(Fail(c, msg)) => {
            eprintln!("[ERR] {msg}");
            c
        }
    };
    ExitCode::from(code as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_weights_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_weight("abcd=2"), Ok(("abcd".into(), 2.0)));
        assert!(parse_weight("abcd").is_err());
        assert!(parse_weight("abcd=-1").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
