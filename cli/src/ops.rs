//! The cluster operations of `larder-cli`, as async functions over an [`Admin`]
//! client, usable from Rust (tests, your own tooling) as well as through the binary.
//!
//! They follow `redis-cli --cluster`:
//!
//! | function | `larder-cli` | what it does |
//! |---|---|---|
//! | [`plan_create`], [`apply_create`] | `cluster create` | slots split evenly, MEET, replicas, waits for `cluster_ok` |
//! | [`check`] | `check` | agreement, coverage, open slots, misplaced keys, state, reachability |
//! | [`info`] | `info` | keys, slots and replicas per master |
//! | [`ClusterView::load`], [`nodes_lines`] | `nodes` | `CLUSTER NODES`-like lines |
//! | [`plan_reshard`], [`execute_moves`] | `reshard` | moves N slots with their keys |
//! | [`plan_rebalance`], [`execute_moves`] | `rebalance` | redis-cli's rebalance ([`plan::plan_rebalance`]) |
//! | [`add_node`], [`del_node`] | `add-node`, `del-node` | joins or removes a node |
//! | [`failover`] | `failover` | manual failover on a replica |
//! | [`fix`] | `fix` | closes open slots, covers unassigned slots, hands misplaced keys to their owners |
//! | [`get`], [`set`], [`del`] | `get`, `set`, `del` | one key, following MOVED/ASK |
//!
//! Every wait is bounded ([`Limits`]); a wait that runs out is an
//! [`OpsError::Timeout`] naming what was awaited and what was last seen.
//!
//! # Errors and exit codes
//!
//! [`OpsError::exit_code`] maps errors to `larder-cli`'s exit codes: **2** for bad
//! usage ([`OpsError::Usage`]) and for a node named on the command line that cannot
//! be reached ([`OpsError::Unreachable`]); **1** when the operation failed or the
//! cluster is unhealthy ([`OpsError::Failed`], [`OpsError::Timeout`]); **0** for
//! success.

mod check;
mod data;
mod fix;
mod membership;
mod migrate;
pub mod plan;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use larder::cluster::admin::{Admin, AdminError, Migrated};
pub use larder::cluster::admin_wire::{NodeEntry, NodesView, SlotRange};
pub use larder::cluster::NodeId;

pub use check::{
    check, check_findings, info, render_info, render_topology, CheckReport, Finding, KeyCounts,
    Level, MasterInfo,
};
pub use data::{del, get, set};
pub use fix::{fix, plan_open_slots, FixReport, OpenSlotFix};
pub use membership::{
    add_node, apply_create, del_node, failover, plan_create, CreatePlan, FailoverKind, NewRole,
};
pub use migrate::{
    execute_moves, plan_rebalance, plan_reshard, render_moves, MoveOptions, MoveStats, Progress,
    Silent,
};
pub use view::{nodes_lines, ClusterNode, ClusterView};

/// Number of hash slots.
pub const SLOTS: u16 = 16384;

/// Node flag bits, as in `NodeEntry::flags` (`larder_cluster::proto::NodeFlags`).
pub mod flags {
    /// A master.
    pub const MASTER: u16 = 1;
    /// A replica.
    pub const REPLICA: u16 = 2;
    /// Possibly failing (seen by the answering node only).
    pub const PFAIL: u16 = 4;
    /// Failing (agreed by a majority of masters).
    pub const FAIL: u16 = 8;
    /// The answering node itself.
    pub const MYSELF: u16 = 16;
    /// Learnt from gossip, not yet answered a ping.
    pub const HANDSHAKE: u16 = 32;
    /// Address unknown.
    pub const NOADDR: u16 = 64;
    /// A replica that never starts a failover.
    pub const NOFAILOVER: u16 = 128;
}

/// Why an operation failed; [`OpsError::exit_code`] gives `larder-cli`'s exit code.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request makes no sense (unknown node, bad argument, too few nodes). Exit 2.
    #[error("{0}")]
    Usage(String),
    /// A node named on the command line could not be reached. Exit 2.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// What went wrong.
        source: AdminError,
    },
    /// The operation failed, or the cluster is not in a state that allows it. Exit 1.
    #[error("{0}")]
    Failed(String),
    /// A bounded wait ran out. Exit 1.
    #[error("timed out after {:.1} s waiting for {what}; last seen: {last}", waited.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// What was last seen instead.
        last: String,
    },
}

impl OpsError {
    /// `larder-cli`'s exit code for this error: 2 for usage errors and unreachable
    /// nodes named on the command line, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Usage(_) | OpsError::Unreachable { .. } => 2,
            OpsError::Failed(_) | OpsError::Timeout { .. } => 1,
        }
    }

    /// An [`AdminError`] from `addr` during an operation (exit 1), with context.
    pub(crate) fn during(what: &str, addr: impl std::fmt::Display, e: AdminError) -> OpsError {
        OpsError::Failed(format!("{what} ({addr}): {e}"))
    }
}

/// Bounds on the waits of an operation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long to wait for the cluster to converge (nodes agreeing after MEET,
    /// slot moves, failovers, `cluster_ok`).
    pub wait: Duration,
    /// How often to poll while waiting.
    pub poll: Duration,
}

impl Default for Limits {
    /// 60 s, polled every 100 ms.
    fn default() -> Self {
        Limits {
            wait: Duration::from_secs(60),
            poll: Duration::from_millis(100),
        }
    }
}

/// Resolves `host:port` (a literal address or a name) to a socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, OpsError> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    let mut it = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| OpsError::Usage(format!("bad address {addr:?}: {e}")))?;
    it.next()
        .ok_or_else(|| OpsError::Usage(format!("bad address {addr:?}: no address found")))
}

/// Polls `probe` every `limits.poll` until it answers `Ok(x)` or `limits.wait` has
/// passed. `Err(reason)` means "not yet"; the last reason is reported in the
/// [`OpsError::Timeout`].
pub(crate) async fn wait_until<T, F, Fut>(
    limits: &Limits,
    what: &str,
    mut probe: F,
) -> Result<T, OpsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let last = match probe().await {
            Ok(x) => return Ok(x),
            Err(reason) => reason,
        };
        if start.elapsed() >= limits.wait {
            return Err(OpsError::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
                last,
            });
        }
        tokio::time::sleep(limits.poll).await;
    }
}

/// Runs futures one after another and returns their outputs in order.
///
/// Requests to several nodes are sent in turn, not concurrently: the admin client
/// dials a node while holding its connection table's lock, so a concurrent request
/// to a live node would wait behind a dial to a dead one and time out with it. In
/// turn, a dead node costs its own timeout only, and the others use their cached
/// connections (a round trip each).
pub(crate) async fn in_turn<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futs.len());
    for f in futs {
        out.push(f.await);
    }
    out
}

/// Slot ranges as Redis prints them: `0-5460,5462,9000-9001`.
pub fn format_ranges(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The number of slots in `ranges`.
pub fn count_slots(ranges: &[SlotRange]) -> usize {
    ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
}

/// The slots of `ranges`, ascending as given.
pub fn expand(ranges: &[SlotRange]) -> impl Iterator<Item = u16> + '_ {
    ranges.iter().flat_map(|&(a, b)| a..=b)
}

/// The first 8 hex characters of an id, as redis-cli abbreviates them.
pub fn short(id: &NodeId) -> String {
    id.to_string()[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_like_redis() {
        assert_eq!(format_ranges(&[(0, 5460), (5462, 5462)]), "0-5460,5462");
        assert_eq!(count_slots(&[(0, 5460), (5462, 5462)]), 5462);
        assert_eq!(
            expand(&[(1, 3), (7, 7)]).collect::<Vec<_>>(),
            vec![1, 2, 3, 7]
        );
    }

    #[tokio::test]
    async fn requests_in_turn_keep_order_and_waits_time_out() {
        let futs = (0..5u64)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(50 - 10 * i)).await;
                i
            })
            .collect();
        assert_eq!(in_turn(futs).await, vec![0, 1, 2, 3, 4]);
        let limits = Limits {
            wait: Duration::from_millis(50),
            poll: Duration::from_millis(10),
        };
        let e = wait_until(&limits, "godot", || async {
            Err::<(), _>("not yet".to_string())
        })
        .await
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string().contains("godot") && e.to_string().contains("not yet"),
            "{e}"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(OpsError::Usage("x".into()).exit_code(), 2);
        assert_eq!(OpsError::Failed("x".into()).exit_code(), 1);
    }
}

/// Hand-built cluster views for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::view::{ClusterNode, ClusterView};
    use super::{flags, NodeEntry, NodeId, NodesView, SlotRange};

    /// One node of a hand-built cluster (ids are `[n; 20]`).
    #[derive(Clone, Debug)]
    pub struct Spec {
        pub id: u8,
        pub slots: Vec<SlotRange>,
        pub master: Option<u8>,
        pub reachable: bool,
        pub cluster_ok: bool,
        pub migrating: Vec<(u16, u8)>,
        pub importing: Vec<(u16, u8)>,
        pub flags: u16,
    }

    /// A reachable master serving `slots`.
    pub fn master(id: u8, slots: &[SlotRange]) -> Spec {
        Spec {
            id,
            slots: slots.to_vec(),
            master: None,
            reachable: true,
            cluster_ok: true,
            migrating: vec![],
            importing: vec![],
            flags: flags::MASTER,
        }
    }

    /// A reachable replica of `of`.
    pub fn replica(id: u8, of: u8) -> Spec {
        Spec {
            master: Some(of),
            flags: flags::REPLICA,
            ..master(id, &[])
        }
    }

    pub fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn entry(s: &Spec) -> NodeEntry {
        NodeEntry {
            id: [s.id; 20],
            addr: format!("127.0.0.1:{}", 7000 + u16::from(s.id)),
            flags: s.flags,
            master: s.master.map(|m| [m; 20]),
            config_epoch: u64::from(s.id),
            repl_offset: 0,
            slots: s.slots.clone(),
        }
    }

    /// The view of node `me` when every node agrees on `specs`.
    pub fn node_view(specs: &[Spec], me: &Spec) -> NodesView {
        NodesView {
            me: [me.id; 20],
            cluster_ok: me.cluster_ok,
            current_epoch: 9,
            keys: 0,
            nodes: specs
                .iter()
                .map(|s| {
                    let mut e = entry(s);
                    if s.id == me.id {
                        e.flags |= flags::MYSELF;
                    }
                    e
                })
                .collect(),
            migrating: me.migrating.iter().map(|&(s, n)| (s, [n; 20])).collect(),
            importing: me.importing.iter().map(|&(s, n)| (s, [n; 20])).collect(),
        }
    }

    /// A cluster where every reachable node sees `specs`; the first is the entry.
    pub fn view(specs: &[Spec]) -> ClusterView {
        let entry_view = node_view(specs, &specs[0]);
        let nodes = specs
            .iter()
            .map(|s| ClusterNode {
                id: id(s.id),
                addr: entry(s).addr,
                sock: entry(s).addr.parse().ok(),
                seen: entry(s),
                view: if s.reachable {
                    Ok(node_view(specs, s))
                } else {
                    Err("unreachable".into())
                },
            })
            .collect();
        ClusterView {
            entry: "127.0.0.1:7000".parse().unwrap(),
            entry_id: id(specs[0].id),
            entry_view,
            nodes,
            pending: vec![],
        }
    }
}
