//! The cluster as seen from one node, with every node's own answer: what every
//! operation starts from (redis-cli's `clusterManagerLoadInfoFromNode`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::plan::MasterSlots;
use super::{
    expand, flags, format_ranges, in_turn, Admin, NodeEntry, NodeId, NodesView, OpsError, SLOTS,
};

/// One node of the cluster: how the entry node sees it and what it says itself.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    /// Its id.
    pub id: NodeId,
    /// Its address as the cluster knows it.
    pub addr: String,
    /// That address resolved, if it could be.
    pub sock: Option<SocketAddr>,
    /// How the entry node sees it.
    pub seen: NodeEntry,
    /// Its own view of the cluster, or why it could not be had.
    pub view: Result<NodesView, String>,
}

impl ClusterNode {
    /// How the node describes itself if it answered, else how the entry node sees it.
    pub fn me(&self) -> &NodeEntry {
        self.view
            .as_ref()
            .ok()
            .and_then(|v| v.nodes.iter().find(|n| n.id == v.me))
            .unwrap_or(&self.seen)
    }

    /// Whether it answered.
    pub fn reachable(&self) -> bool {
        self.view.is_ok()
    }

    /// Whether it is a master.
    pub fn is_master(&self) -> bool {
        self.me().flags & flags::MASTER != 0
    }

    /// The master it replicates.
    pub fn master(&self) -> Option<NodeId> {
        self.me().master.map(NodeId)
    }

    /// The slots it serves, as it says.
    pub fn slots(&self) -> &[(u16, u16)] {
        &self.me().slots
    }

    /// Its address to send requests to.
    pub fn sock(&self) -> Result<SocketAddr, OpsError> {
        self.sock.ok_or_else(|| {
            OpsError::Failed(format!(
                "node {} has no usable address ({:?})",
                self.id, self.addr
            ))
        })
    }
}

/// The cluster as seen from an entry node, with every known node asked for its own
/// view.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// The address asked first.
    pub entry: SocketAddr,
    /// Its id.
    pub entry_id: NodeId,
    /// Its view.
    pub entry_view: NodesView,
    /// Every node it knows (except those still in handshake or without an
    /// address): masters first, then replicas, each by address.
    pub nodes: Vec<ClusterNode>,
    /// Nodes the entry node knows only from gossip so far (handshake) or without an
    /// address.
    pub pending: Vec<NodeEntry>,
}

impl ClusterView {
    /// Asks the node at `entry` for its view, then every node it knows for theirs.
    /// Fails (exit 2) only if `entry` itself cannot be reached; other unreachable
    /// nodes are recorded in [`ClusterNode::view`].
    pub async fn load(admin: &Admin, entry: SocketAddr) -> Result<ClusterView, OpsError> {
        let entry_view = admin
            .nodes(entry)
            .await
            .map_err(|source| OpsError::Unreachable {
                addr: entry.to_string(),
                source,
            })?;
        let entry_id = NodeId(entry_view.me);
        let (known, pending): (Vec<NodeEntry>, Vec<NodeEntry>) =
            entry_view.nodes.iter().cloned().partition(|n| {
                n.flags & (flags::HANDSHAKE | flags::NOADDR) == 0 && !n.addr.is_empty()
            });
        let futs = known
            .iter()
            .map(|n| {
                let entry_view = &entry_view;
                async move {
                    let id = NodeId(n.id);
                    let sock = if id == entry_id {
                        Some(entry)
                    } else {
                        n.addr.parse::<SocketAddr>().ok()
                    };
                    let view = if id == entry_id {
                        Ok(entry_view.clone())
                    } else if let Some(s) = sock {
                        match admin.nodes(s).await {
                            Ok(v) if v.me == n.id => Ok(v),
                            Ok(v) => Err(format!("{s} answers as {}, not {id}", NodeId(v.me))),
                            Err(e) => Err(e.to_string()),
                        }
                    } else {
                        Err(format!(
                            "address {:?} is not an IP address and port",
                            n.addr
                        ))
                    };
                    ClusterNode {
                        id,
                        addr: n.addr.clone(),
                        sock,
                        seen: n.clone(),
                        view,
                    }
                }
            })
            .collect();
        let mut nodes = in_turn(futs).await;
        nodes.sort_by(|a, b| (!a.is_master(), &a.addr, a.id).cmp(&(!b.is_master(), &b.addr, b.id)));
        Ok(ClusterView {
            entry,
            entry_id,
            entry_view,
            nodes,
            pending,
        })
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Finds a node by full id, unique id prefix (at least 4 hex characters) or
    /// address (as the cluster knows it, or `ip:port`).
    pub fn find(&self, spec: &str) -> Result<&ClusterNode, OpsError> {
        let lower = spec.to_ascii_lowercase();
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| n.addr == spec || n.sock.is_some_and(|s| s.to_string() == spec))
        {
            return Ok(n);
        }
        if lower.len() >= 4 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
            let hits: Vec<&ClusterNode> = self
                .nodes
                .iter()
                .filter(|n| n.id.to_string().starts_with(&lower))
                .collect();
            match hits.len() {
                1 => return Ok(hits[0]),
                0 => {}
                _ => {
                    return Err(OpsError::Usage(format!(
                        "node id prefix {spec:?} is ambiguous ({} nodes)",
                        hits.len()
                    )))
                }
            }
        }
        Err(OpsError::Usage(format!(
            "no node {spec:?} in the cluster (give an id, a unique id prefix or an address)"
        )))
    }

    /// The masters (as they describe themselves).
    pub fn masters(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.is_master())
    }

    /// The replicas of `master` (as they describe themselves).
    pub fn replicas_of(&self, master: NodeId) -> Vec<&ClusterNode> {
        self.nodes
            .iter()
            .filter(|n| !n.is_master() && n.master() == Some(master))
            .collect()
    }

    /// Each master with the slots it says it serves, for the planners.
    pub fn master_slots(&self) -> Vec<MasterSlots> {
        self.masters()
            .map(|m| MasterSlots::new(m.id, expand(m.slots()).collect()))
            .collect()
    }

    /// The owner of every slot according to the masters' own claims (`None`:
    /// unclaimed). Where two masters claim a slot, the higher configEpoch wins, as in
    /// the cluster.
    pub fn owners(&self) -> Vec<Option<NodeId>> {
        let mut owner: Vec<Option<(u64, NodeId)>> = vec![None; usize::from(SLOTS)];
        for m in self.masters() {
            let epoch = m.me().config_epoch;
            for s in expand(m.slots()) {
                let o = &mut owner[usize::from(s)];
                if o.is_none_or(|(e, _)| epoch > e) {
                    *o = Some((epoch, m.id));
                }
            }
        }
        owner.into_iter().map(|o| o.map(|(_, id)| id)).collect()
    }

    /// Whether every reachable node sees the same slot owners and the same set of
    /// nodes (those in handshake left out); `Err` says how they differ.
    pub fn agreement(&self) -> Result<(), String> {
        let mut reference: Option<(NodeId, Owners, BTreeSet<[u8; 20]>)> = None;
        for n in &self.nodes {
            let Ok(v) = &n.view else { continue };
            let owners = owner_map(v);
            // Nodes in handshake are still being learnt (`check` warns about them).
            let ids: BTreeSet<[u8; 20]> = v
                .nodes
                .iter()
                .filter(|e| e.flags & flags::HANDSHAKE == 0)
                .map(|e| e.id)
                .collect();
            match &reference {
                None => reference = Some((n.id, owners, ids)),
                Some((rid, rowners, rids)) => {
                    if *rids != ids {
                        return Err(format!(
                            "{} and {} know different nodes ({} and {})",
                            super::short(rid),
                            super::short(&n.id),
                            rids.len(),
                            ids.len()
                        ));
                    }
                    if let Some(s) = (0..usize::from(SLOTS)).find(|&s| rowners[s] != owners[s]) {
                        let name = |o: Option<[u8; 20]>| {
                            o.map_or("nobody".to_string(), |b| super::short(&NodeId(b)))
                        };
                        return Err(format!(
                            "slot {s}: {} says {}, {} says {}",
                            super::short(rid),
                            name(rowners[s]),
                            super::short(&n.id),
                            name(owners[s])
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The owner of each slot (index) in one node's view.
pub(crate) type Owners = Vec<Option<[u8; 20]>>;

/// The owner of each slot in one node's view.
pub(crate) fn owner_map(v: &NodesView) -> Owners {
    let mut owners = vec![None; usize::from(SLOTS)];
    for n in &v.nodes {
        for s in expand(&n.slots) {
            owners[usize::from(s)] = Some(n.id);
        }
    }
    owners
}

/// Flag names as `CLUSTER NODES` prints them.
pub(crate) fn flag_names(f: u16) -> String {
    let names = [
        (flags::MYSELF, "myself"),
        (flags::MASTER, "master"),
        (flags::REPLICA, "slave"),
        (flags::PFAIL, "fail?"),
        (flags::FAIL, "fail"),
        (flags::HANDSHAKE, "handshake"),
        (flags::NOADDR, "noaddr"),
        (flags::NOFAILOVER, "nofailover"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "noflags".into()
    } else {
        v.join(",")
    }
}

/// One node's view as `CLUSTER NODES` lines:
/// `<id> <addr> <flags> <master|-> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...`.
/// larder does not report ping times, so both are 0; the link state is
/// `disconnected` for nodes flagged `fail?`/`fail`. The answering node's line ends
/// with its open slots, `[slot->-target]` (migrating) and `[slot-<-source]`
/// (importing).
pub fn nodes_lines(view: &NodesView) -> Vec<String> {
    view.nodes
        .iter()
        .map(|n| {
            let master = n.master.map_or("-".to_string(), |m| NodeId(m).to_string());
            let link = if n.flags & (flags::PFAIL | flags::FAIL) != 0 {
                "disconnected"
            } else {
                "connected"
            };
            let mut line = format!(
                "{} {} {} {} 0 0 {} {}",
                NodeId(n.id),
                n.addr,
                flag_names(n.flags),
                master,
                n.config_epoch,
                link
            );
            for r in &n.slots {
                line.push(' ');
                line.push_str(&format_ranges(std::slice::from_ref(r)));
            }
            if n.id == view.me {
                for (s, t) in &view.migrating {
                    line.push_str(&format!(" [{s}->-{}]", NodeId(*t)));
                }
                for (s, f) in &view.importing {
                    line.push_str(&format!(" [{s}-<-{}]", NodeId(*f)));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_lines_look_like_cluster_nodes() {
        let me = [0xab; 20];
        let other = [0x01; 20];
        let v = NodesView {
            me,
            cluster_ok: true,
            current_epoch: 3,
            keys: 0,
            nodes: vec![
                NodeEntry {
                    id: me,
                    addr: "127.0.0.1:7000".into(),
                    flags: flags::MYSELF | flags::MASTER,
                    master: None,
                    config_epoch: 2,
                    repl_offset: 0,
                    slots: vec![(0, 5460), (6000, 6000)],
                },
                NodeEntry {
                    id: other,
                    addr: "127.0.0.1:7001".into(),
                    flags: flags::REPLICA | flags::PFAIL,
                    master: Some(me),
                    config_epoch: 2,
                    repl_offset: 0,
                    slots: vec![],
                },
            ],
            migrating: vec![(6000, other)],
            importing: vec![],
        };
        let lines = nodes_lines(&v);
        let abab = NodeId(me).to_string();
        assert_eq!(
            lines[0],
            format!(
                "{abab} 127.0.0.1:7000 myself,master - 0 0 2 connected 0-5460 6000 [6000->-{}]",
                NodeId(other)
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "{} 127.0.0.1:7001 slave,fail? {abab} 0 0 2 disconnected",
                NodeId(other)
            )
        );
    }
}
