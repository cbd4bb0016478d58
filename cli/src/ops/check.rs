//! `check` and `info`: what is wrong with a cluster, and how it is loaded.

use std::fmt;
use std::net::SocketAddr;

use larder::cluster::admin_wire::to_ranges;

use super::view::{ClusterNode, ClusterView};
use super::{count_slots, flags, format_ranges, in_turn, short, Admin, NodeId, OpsError, SLOTS};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A check passed.
    Ok,
    /// Worth knowing; the cluster is still healthy.
    Warn,
    /// A problem: the cluster is unhealthy.
    Err,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "[OK]",
            Level::Warn => "[WARN]",
            Level::Err => "[ERR]",
        })
    }
}

/// One line of a check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What.
    pub text: String,
}

impl Finding {
    fn new(level: Level, text: impl Into<String>) -> Self {
        Finding {
            level,
            text: text.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.level, self.text)
    }
}

/// Keys per slot held by one node, or why they could not be had.
pub type KeyCounts = Result<Vec<(u16, u64)>, String>;

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The cluster as loaded.
    pub view: ClusterView,
    /// Keys per slot of every node (in `view.nodes` order).
    pub key_counts: Vec<(NodeId, KeyCounts)>,
    /// The verdict, one finding per line.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// No [`Level::Err`] finding.
    pub fn healthy(&self) -> bool {
        self.findings.iter().all(|f| f.level != Level::Err)
    }

    /// The [`Level::Err`] findings.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Err)
    }

    /// The report as `larder-cli check` prints it: the nodes (redis-cli's
    /// `M:`/`S:` blocks), every finding, then a summary line.
    pub fn render(&self) -> String {
        let mut out = format!(
            ">>> Performing Cluster Check (using node {})\n",
            self.view.entry
        );
        out.push_str(&render_topology(&self.view));
        for f in &self.findings {
            out.push_str(&format!("{f}\n"));
        }
        let problems = self.problems().count();
        if problems == 0 {
            out.push_str("[OK] The cluster is healthy.\n");
        } else {
            out.push_str(&format!("[ERR] {problems} problem(s) found.\n"));
        }
        out
    }
}

/// redis-cli's node blocks: `M: <id> <addr>`, slots, replica count or master.
pub fn render_topology(view: &ClusterView) -> String {
    let mut out = String::new();
    for n in &view.nodes {
        let me = n.me();
        let role = if n.is_master() { "M" } else { "S" };
        out.push_str(&format!("{role}: {} {}\n", n.id, n.addr));
        let slots = &me.slots;
        let listed = if slots.is_empty() {
            String::new()
        } else {
            format!("[{}]", format_ranges(slots))
        };
        out.push_str(&format!(
            "   slots:{listed} ({} slots) {}\n",
            count_slots(slots),
            if n.is_master() { "master" } else { "slave" }
        ));
        if n.is_master() {
            let r = view.replicas_of(n.id).len();
            if r > 0 {
                out.push_str(&format!("   {r} additional replica(s)\n"));
            }
        } else if let Some(m) = n.master() {
            out.push_str(&format!("   replicates {m}\n"));
        }
        if let Err(e) = &n.view {
            out.push_str(&format!("   unreachable: {e}\n"));
        }
    }
    out
}

/// Checks the cluster as seen from the node at `addr` (exit 2 if that node cannot be
/// reached): every node is asked for its view and its keys per slot, then
/// [`check_findings`] judges. `CheckReport::healthy` is `larder-cli check`'s exit 0.
pub async fn check(admin: &Admin, addr: SocketAddr) -> Result<CheckReport, OpsError> {
    let view = ClusterView::load(admin, addr).await?;
    let key_counts = load_key_counts(admin, &view).await;
    let findings = check_findings(&view, &key_counts);
    Ok(CheckReport {
        view,
        key_counts,
        findings,
    })
}

/// Keys per slot of every reachable node.
pub(crate) async fn load_key_counts(admin: &Admin, view: &ClusterView) -> Vec<(NodeId, KeyCounts)> {
    let futs = view
        .nodes
        .iter()
        .map(|n| async move {
            let counts = match (&n.view, n.sock) {
                (Ok(_), Some(s)) => admin.key_counts(s).await.map_err(|e| e.to_string()),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), None) => Err("no address".to_string()),
            };
            (n.id, counts)
        })
        .collect();
    in_turn(futs).await
}

fn name(n: &ClusterNode) -> String {
    format!("{} ({})", n.addr, short(&n.id))
}

/// The slots a node may hold keys of: a master's own, a replica's master's.
pub(crate) fn served_slots(view: &ClusterView, n: &ClusterNode) -> Vec<bool> {
    let mut served = vec![false; usize::from(SLOTS)];
    let ranges: &[(u16, u16)] = if n.is_master() {
        n.slots()
    } else {
        match n.master().and_then(|m| view.node(m)) {
            Some(m) => m.slots(),
            None => &[],
        }
    };
    for s in super::expand(ranges) {
        served[usize::from(s)] = true;
    }
    served
}

/// The slots whose keys a node may hold while they move in: those it imports, and
/// for a replica those its master imports (the master's writes, the imported keys
/// included, are replicated to it; a replica does not know its master's IMPORTING
/// state, so the master's own answer is taken).
pub(crate) fn importing_slots(view: &ClusterView, n: &ClusterNode) -> Vec<u16> {
    let own = |n: &ClusterNode| -> Vec<u16> {
        n.view
            .as_ref()
            .map(|v| v.importing.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default()
    };
    let mut slots = own(n);
    if !n.is_master() {
        if let Some(m) = n.master().and_then(|m| view.node(m)) {
            slots.extend(own(m));
        }
    }
    slots
}

/// Judges a loaded cluster (no I/O). One finding per problem, `[OK]` lines for the
/// checks that passed:
///
/// - every node answers (an unreachable master is an error, a replica a warning) and
///   none is flagged failing;
/// - every node sees the same slot owners and the same nodes;
/// - no slot is open (MIGRATING or IMPORTING) anywhere;
/// - the masters cover all 16384 slots;
/// - no node holds keys of a slot it does not serve (a replica: its master's), or
///   imports (a replica: its master imports);
/// - every node's cluster state is ok.
pub fn check_findings(view: &ClusterView, key_counts: &[(NodeId, KeyCounts)]) -> Vec<Finding> {
    let mut out = Vec::new();

    // Reachability and failure flags.
    let before = out.len();
    for n in &view.nodes {
        if let Err(e) = &n.view {
            let level = if n.is_master() {
                Level::Err
            } else {
                Level::Warn
            };
            let role = if n.is_master() { "master" } else { "replica" };
            out.push(Finding::new(
                level,
                format!("{role} {} is unreachable: {e}", name(n)),
            ));
        }
        let seen = n.seen.flags;
        if seen & (flags::FAIL | flags::PFAIL) != 0 {
            let level = if n.is_master() {
                Level::Err
            } else {
                Level::Warn
            };
            let what = if seen & flags::FAIL != 0 {
                "fail"
            } else {
                "fail?"
            };
            out.push(Finding::new(
                level,
                format!("{} is flagged {what} by {}", name(n), short(&view.entry_id)),
            ));
        }
    }
    for p in &view.pending {
        out.push(Finding::new(
            Level::Warn,
            format!(
                "{} ({}) is still in handshake with {}",
                p.addr,
                short(&NodeId(p.id)),
                short(&view.entry_id)
            ),
        ));
    }
    if out.len() == before {
        out.push(Finding::new(
            Level::Ok,
            format!("All {} nodes reachable.", view.nodes.len()),
        ));
    }

    // Agreement.
    match view.agreement() {
        Ok(()) => out.push(Finding::new(
            Level::Ok,
            "All nodes agree about slots configuration.",
        )),
        Err(why) => out.push(Finding::new(
            Level::Err,
            format!("Nodes don't agree about configuration: {why}"),
        )),
    }

    // Open slots.
    let before = out.len();
    for n in &view.nodes {
        let Ok(v) = &n.view else { continue };
        for (kind, list) in [("migrating", &v.migrating), ("importing", &v.importing)] {
            let mut by_peer: Vec<(NodeId, Vec<u16>)> = Vec::new();
            for &(s, peer) in list {
                match by_peer.iter_mut().find(|(p, _)| p.0 == peer) {
                    Some((_, v)) => v.push(s),
                    None => by_peer.push((NodeId(peer), vec![s])),
                }
            }
            for (peer, slots) in by_peer {
                let dir = if kind == "migrating" { "to" } else { "from" };
                out.push(Finding::new(
                    Level::Err,
                    format!(
                        "{} has slots in {kind} state {} {dir} {} (run `larder-cli fix`)",
                        name(n),
                        format_ranges(&to_ranges(slots)),
                        short(&peer)
                    ),
                ));
            }
        }
    }
    if out.len() == before {
        out.push(Finding::new(Level::Ok, "No open slots."));
    }

    // Coverage.
    let owners = view.owners();
    let missing: Vec<u16> = (0..SLOTS)
        .filter(|&s| owners[usize::from(s)].is_none())
        .collect();
    if missing.is_empty() {
        out.push(Finding::new(Level::Ok, "All 16384 slots covered."));
    } else {
        out.push(Finding::new(
            Level::Err,
            format!(
                "Not all 16384 slots are covered by nodes: {} unassigned ({})",
                missing.len(),
                format_ranges(&to_ranges(missing))
            ),
        ));
    }

    // Keys where they do not belong.
    let before = out.len();
    for (id, counts) in key_counts {
        let Some(n) = view.node(*id) else { continue };
        let counts = match counts {
            Ok(c) => c,
            Err(e) => {
                if n.reachable() {
                    out.push(Finding::new(
                        Level::Warn,
                        format!("cannot count the keys of {}: {e}", name(n)),
                    ));
                }
                continue;
            }
        };
        let served = served_slots(view, n);
        let importing = importing_slots(view, n);
        let stray: Vec<(u16, u64)> = counts
            .iter()
            .copied()
            .filter(|&(s, k)| k > 0 && !served[usize::from(s)] && !importing.contains(&s))
            .collect();
        if !stray.is_empty() {
            let keys: u64 = stray.iter().map(|(_, k)| k).sum();
            let slots: Vec<u16> = stray.iter().map(|(s, _)| *s).collect();
            out.push(Finding::new(
                Level::Err,
                format!(
                    "{} holds {keys} key(s) in {} slot(s) it does not serve: {} (run `larder-cli fix`)",
                    name(n),
                    slots.len(),
                    format_ranges(&to_ranges(slots))
                ),
            ));
        }
    }
    if out.len() == before {
        out.push(Finding::new(
            Level::Ok,
            "No keys in slots their node does not serve.",
        ));
    }

    // Cluster state.
    let before = out.len();
    for n in &view.nodes {
        if let Ok(v) = &n.view {
            if !v.cluster_ok {
                out.push(Finding::new(
                    Level::Err,
                    format!("{} reports cluster_state:fail", name(n)),
                ));
            }
        }
    }
    if out.len() == before {
        out.push(Finding::new(
            Level::Ok,
            "cluster_state:ok on every reachable node.",
        ));
    }
    out
}

/// One master as `info` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Keys it holds, if it answered.
    pub keys: Option<u64>,
    /// Slots it serves.
    pub slots: usize,
    /// Replicas following it.
    pub replicas: usize,
}

/// Per master: keys, slots and replicas (redis-cli's `--cluster info`), from the
/// node at `addr` and every master's own answer.
pub async fn info(admin: &Admin, addr: SocketAddr) -> Result<Vec<MasterInfo>, OpsError> {
    let view = ClusterView::load(admin, addr).await?;
    Ok(view
        .masters()
        .map(|m| MasterInfo {
            id: m.id,
            addr: m.addr.clone(),
            keys: m.view.as_ref().ok().map(|v| v.keys),
            slots: count_slots(m.slots()),
            replicas: view.replicas_of(m.id).len(),
        })
        .collect())
}

/// `info`'s text: one line per master, then the totals.
pub fn render_info(masters: &[MasterInfo]) -> String {
    let mut out = String::new();
    let mut keys = 0u64;
    for m in masters {
        let k = m
            .keys
            .map_or("? (unreachable)".to_string(), |k| k.to_string());
        keys += m.keys.unwrap_or(0);
        out.push_str(&format!(
            "{} ({}...) -> {k} keys | {} slots | {} replicas.\n",
            m.addr,
            short(&m.id),
            m.slots,
            m.replicas
        ));
    }
    out.push_str(&format!(
        "[OK] {keys} keys in {} masters.\n{:.2} keys per slot on average.\n",
        masters.len(),
        keys as f64 / f64::from(SLOTS)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{id, master, node_view, replica, view, Spec};
    use super::*;

    fn three() -> Vec<Spec> {
        vec![
            master(1, &[(0, 5460)]),
            master(2, &[(5461, 10922)]),
            master(3, &[(10923, 16383)]),
            replica(4, 1),
        ]
    }

    fn errors(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.level == Level::Err)
            .map(|f| f.text.as_str())
            .collect()
    }

    fn counts(v: &ClusterView, per_node: &[(u8, Vec<(u16, u64)>)]) -> Vec<(NodeId, KeyCounts)> {
        v.nodes
            .iter()
            .map(|n| {
                let c = per_node
                    .iter()
                    .find(|(i, _)| id(*i) == n.id)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                (n.id, Ok(c))
            })
            .collect()
    }

    #[test]
    fn a_healthy_cluster_passes_every_check() {
        let v = view(&three());
        // Keys on masters in their slots, and on the replica in its master's.
        let c = counts(
            &v,
            &[(1, vec![(0, 3)]), (2, vec![(6000, 1)]), (4, vec![(0, 3)])],
        );
        let f = check_findings(&v, &c);
        assert!(errors(&f).is_empty(), "{f:?}");
        assert_eq!(
            f.iter().filter(|f| f.level == Level::Ok).count(),
            6,
            "{f:?}"
        );
        let report = CheckReport {
            view: v,
            key_counts: c,
            findings: f,
        };
        assert!(report.healthy());
        let text = report.render();
        assert!(text.contains("M: 0101010101010101010101010101010101010101 127.0.0.1:7001"));
        assert!(text.contains("   slots:[0-5460] (5461 slots) master\n   1 additional replica(s)"));
        assert!(text.ends_with("[OK] The cluster is healthy.\n"), "{text}");
    }

    #[test]
    fn open_slots_uncovered_slots_and_stray_keys_are_errors() {
        let mut specs = three();
        specs[0].migrating = vec![(7, 2), (8, 2)];
        specs[1].importing = vec![(7, 1), (8, 1)];
        specs[2].slots = vec![(10923, 16000)];
        let v = view(&specs);
        // Node 2 holds keys of slot 7 (importing: not stray) and of slot 100 (stray);
        // the replica holds keys of node 2's slot 6000 (stray for it).
        let c = counts(&v, &[(2, vec![(7, 5), (100, 2)]), (4, vec![(6000, 1)])]);
        let e = errors(&check_findings(&v, &c)).join("\n");
        assert!(
            e.contains("has slots in migrating state 7-8 to 02020202"),
            "{e}"
        );
        assert!(
            e.contains("has slots in importing state 7-8 from 01010101"),
            "{e}"
        );
        assert!(e.contains("383 unassigned (16001-16383)"), "{e}");
        assert!(
            e.contains(
                "127.0.0.1:7002 (02020202) holds 2 key(s) in 1 slot(s) it does not serve: 100"
            ),
            "{e}"
        );
        assert!(
            e.contains("127.0.0.1:7004 (04040404) holds 1 key(s)"),
            "{e}"
        );
        assert!(!e.contains(" 7 "), "{e}");
    }

    #[test]
    fn a_replica_of_an_importing_master_may_hold_the_imported_keys() {
        let mut specs = three();
        specs[0].migrating = vec![(7, 2)];
        specs[1].importing = vec![(7, 1)];
        specs.push(replica(5, 2));
        let v = view(&specs);
        // The target and its replica hold some of slot 7's keys: a move under way.
        let c = counts(&v, &[(2, vec![(7, 5)]), (5, vec![(7, 5), (6000, 1)])]);
        let e = errors(&check_findings(&v, &c)).join("\n");
        assert!(!e.contains("holds"), "{e}");
        // Once the import is closed, the replica's copies are strays like its master's.
        specs[0].migrating.clear();
        specs[1].importing.clear();
        let v = view(&specs);
        let e = errors(&check_findings(&v, &c)).join("\n");
        assert!(
            e.contains("127.0.0.1:7005 (05050505) holds 5 key(s)"),
            "{e}"
        );
    }

    #[test]
    fn reachability_state_and_agreement() {
        // An unreachable replica is a warning; an unreachable master an error.
        let mut specs = three();
        specs[3].reachable = false;
        let v = view(&specs);
        let f = check_findings(&v, &counts(&v, &[]));
        assert!(errors(&f).is_empty(), "{f:?}");
        assert!(f
            .iter()
            .any(|f| f.level == Level::Warn && f.text.contains("replica 127.0.0.1:7004")));
        specs[1].reachable = false;
        let v = view(&specs);
        let e = errors(&check_findings(&v, &counts(&v, &[]))).join("\n");
        assert!(
            e.contains("master 127.0.0.1:7002 (02020202) is unreachable"),
            "{e}"
        );

        // A node reporting cluster_state:fail, and one seeing another owner.
        let mut specs = three();
        specs[2].cluster_ok = false;
        let mut v = view(&specs);
        let mut other = specs.clone();
        other[0].slots = vec![(0, 5459)];
        other[1].slots = vec![(5460, 10922)];
        v.nodes[1].view = Ok(node_view(&other, &other[1]));
        let e = errors(&check_findings(&v, &counts(&v, &[]))).join("\n");
        assert!(
            e.contains("127.0.0.1:7003 (03030303) reports cluster_state:fail"),
            "{e}"
        );
        assert!(
            e.contains("Nodes don't agree about configuration: slot 5460"),
            "{e}"
        );
    }
}
