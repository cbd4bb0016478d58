//! Who is in the cluster: `cluster create`, `add-node`, `del-node`, `failover`.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use larder::cluster::admin_wire::AdminRequest;

use super::plan::{allocate_slots, assign_replicas};
use super::view::ClusterView;
use super::{
    flags, format_ranges, in_turn, short, wait_until, Admin, Limits, NodeId, NodesView, OpsError,
    SlotRange,
};

/// A master of a cluster about to be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMaster {
    /// Where it answers.
    pub addr: SocketAddr,
    /// Its address as it advertises it (what the others MEET).
    pub advertised: String,
    /// Its id.
    pub id: NodeId,
    /// The slots it will serve.
    pub slots: SlotRange,
}

/// A replica of a cluster about to be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedReplica {
    /// Where it answers.
    pub addr: SocketAddr,
    /// Its id.
    pub id: NodeId,
    /// The master it will follow.
    pub master: NodeId,
}

/// What `cluster create` will do: masters with their slots, replicas with their
/// masters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePlan {
    /// The masters, in the order given.
    pub masters: Vec<PlannedMaster>,
    /// The replicas.
    pub replicas: Vec<PlannedReplica>,
}

impl CreatePlan {
    /// The plan as `larder-cli cluster create` shows it before asking.
    pub fn render(&self) -> String {
        let mut out = format!(
            ">>> Performing hash slots allocation on {} nodes...\n",
            self.masters.len() + self.replicas.len()
        );
        for (i, m) in self.masters.iter().enumerate() {
            out.push_str(&format!(
                "Master[{i}] -> Slots {} - {}\n",
                m.slots.0, m.slots.1
            ));
        }
        for r in &self.replicas {
            let m = self.masters.iter().find(|m| m.id == r.master);
            let maddr = m.map_or(String::new(), |m| m.addr.to_string());
            out.push_str(&format!("Adding replica {} to {maddr}\n", r.addr));
        }
        for m in &self.masters {
            out.push_str(&format!(
                "M: {} {}\n   slots:[{}] ({} slots) master\n",
                m.id,
                m.addr,
                format_ranges(&[m.slots]),
                m.slots.1 - m.slots.0 + 1
            ));
        }
        for r in &self.replicas {
            out.push_str(&format!(
                "S: {} {}\n   replicates {}\n",
                r.id, r.addr, r.master
            ));
        }
        out
    }
}

fn me_of(v: &NodesView) -> Option<&larder::cluster::admin_wire::NodeEntry> {
    v.nodes.iter().find(|n| n.id == v.me)
}

/// Asks every address for its view (in turn); the first unreachable one is an
/// [`OpsError::Unreachable`].
async fn views_of(admin: &Admin, addrs: &[SocketAddr]) -> Result<Vec<NodesView>, OpsError> {
    let got = in_turn(addrs.iter().map(|&a| admin.nodes(a)).collect()).await;
    got.into_iter()
        .zip(addrs)
        .map(|(r, a)| {
            r.map_err(|source| OpsError::Unreachable {
                addr: a.to_string(),
                source,
            })
        })
        .collect()
}

/// A node fit to join: knows nobody, serves nothing, holds no keys.
fn check_empty(addr: SocketAddr, v: &NodesView) -> Result<(), OpsError> {
    let serves = me_of(v).is_some_and(|m| !m.slots.is_empty());
    if v.nodes.len() > 1 || serves || v.keys > 0 {
        return Err(OpsError::Failed(format!(
            "node {addr} is not empty: it knows {} other node(s), serves {} slot range(s) and \
             holds {} key(s). Use a fresh node (new state file and data directory).",
            v.nodes.len().saturating_sub(1),
            me_of(v).map_or(0, |m| m.slots.len()),
            v.keys
        )));
    }
    Ok(())
}

/// Plans `cluster create`: the first `addrs.len() / (replicas + 1)` nodes become
/// masters with 16384 slots split evenly ([`allocate_slots`]); the rest become
/// replicas, round-robin. At least 3 masters are needed, as in Redis (exit 2
/// otherwise). Every node must be reachable (exit 2) and empty (exit 1).
pub async fn plan_create(
    admin: &Admin,
    addrs: &[SocketAddr],
    replicas: usize,
) -> Result<CreatePlan, OpsError> {
    let masters = addrs.len() / (replicas + 1);
    if masters < 3 {
        return Err(OpsError::Usage(format!(
            "a cluster needs at least 3 masters: with --replicas {replicas}, give at least {} \
             nodes (got {})",
            3 * (replicas + 1),
            addrs.len()
        )));
    }
    let uniq: BTreeSet<&SocketAddr> = addrs.iter().collect();
    if uniq.len() != addrs.len() {
        return Err(OpsError::Usage("an address is given twice".into()));
    }
    let views = views_of(admin, addrs).await?;
    let ids: BTreeSet<[u8; 20]> = views.iter().map(|v| v.me).collect();
    if ids.len() != views.len() {
        return Err(OpsError::Usage(
            "two addresses answer as the same node".into(),
        ));
    }
    for (a, v) in addrs.iter().zip(&views) {
        check_empty(*a, v)?;
    }
    let ranges = allocate_slots(masters);
    let planned_masters: Vec<PlannedMaster> = (0..masters)
        .map(|i| PlannedMaster {
            addr: addrs[i],
            advertised: me_of(&views[i]).map_or(addrs[i].to_string(), |m| m.addr.clone()),
            id: NodeId(views[i].me),
            slots: ranges[i],
        })
        .collect();
    let rest = addrs.len() - masters;
    let planned_replicas = assign_replicas(masters, rest)
        .into_iter()
        .enumerate()
        .map(|(j, m)| PlannedReplica {
            addr: addrs[masters + j],
            id: NodeId(views[masters + j].me),
            master: planned_masters[m].id,
        })
        .collect();
    Ok(CreatePlan {
        masters: planned_masters,
        replicas: planned_replicas,
    })
}

/// Every node in `addrs` sees every id in `ids`, none in handshake.
async fn all_know(
    admin: &Admin,
    addrs: &[SocketAddr],
    ids: &BTreeSet<[u8; 20]>,
) -> Result<(), String> {
    let views = in_turn(addrs.iter().map(|&a| admin.nodes(a)).collect()).await;
    for (a, v) in addrs.iter().zip(views) {
        let v = v.map_err(|e| format!("{a}: {e}"))?;
        for id in ids {
            match v.nodes.iter().find(|n| n.id == *id) {
                None => return Err(format!("{a} does not know {} yet", short(&NodeId(*id)))),
                Some(n) if n.flags & flags::HANDSHAKE != 0 => {
                    return Err(format!("{a} is in handshake with {}", n.addr))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Carries out a [`CreatePlan`] (redis-cli's order): slots to the masters, every
/// node MEETs the first master, wait until everyone knows everyone (no handshake),
/// replicas REPLICATE their masters, then wait until every node sees every replica
/// with its master and reports `cluster_ok`. Each step's progress is written to
/// `log`.
pub async fn apply_create(
    admin: &Admin,
    plan: &CreatePlan,
    limits: &Limits,
    log: &mut dyn FnMut(&str),
) -> Result<(), OpsError> {
    let all: Vec<SocketAddr> = plan
        .masters
        .iter()
        .map(|m| m.addr)
        .chain(plan.replicas.iter().map(|r| r.addr))
        .collect();
    let ids: BTreeSet<[u8; 20]> = plan
        .masters
        .iter()
        .map(|m| m.id.0)
        .chain(plan.replicas.iter().map(|r| r.id.0))
        .collect();
    log(">>> Assigning slots to the masters");
    for m in &plan.masters {
        admin
            .ok(m.addr, &AdminRequest::AddSlots(vec![m.slots]))
            .await
            .map_err(|e| OpsError::during("adding slots", m.addr, e))?;
    }
    log(">>> Sending MEET messages to join the cluster");
    let first = &plan.masters[0];
    for &a in &all[1..] {
        admin
            .ok(a, &AdminRequest::Meet(first.advertised.clone()))
            .await
            .map_err(|e| OpsError::during("meeting the first master", a, e))?;
    }
    log("Waiting for the cluster to join");
    wait_until(limits, "every node to know every other node", || {
        all_know(admin, &all, &ids)
    })
    .await?;
    if !plan.replicas.is_empty() {
        log(">>> Configuring replicas");
        for r in &plan.replicas {
            admin
                .ok(r.addr, &AdminRequest::Replicate(r.master.0))
                .await
                .map_err(|e| OpsError::during("setting up a replica", r.addr, e))?;
        }
    }
    log("Waiting for every node to report cluster_ok");
    wait_until(
        limits,
        "every node to see the replicas and cluster_ok",
        || async {
            let views = in_turn(all.iter().map(|&a| admin.nodes(a)).collect()).await;
            for (a, v) in all.iter().zip(views) {
                let v = v.map_err(|e| format!("{a}: {e}"))?;
                for r in &plan.replicas {
                    let ok = v.nodes.iter().any(|n| {
                        n.id == r.id.0
                            && n.flags & flags::REPLICA != 0
                            && n.master == Some(r.master.0)
                    });
                    if !ok {
                        return Err(format!("{a} does not see {} as a replica yet", r.addr));
                    }
                }
                if !v.cluster_ok {
                    return Err(format!("{a} reports cluster_state:fail"));
                }
            }
            Ok(())
        },
    )
    .await?;
    log("[OK] All 16384 slots covered.");
    Ok(())
}

/// The role of a node being added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewRole {
    /// An empty master (give it slots with `reshard` or `rebalance
    /// --use-empty-masters`).
    Master,
    /// A replica of this master (id, id prefix or address).
    ReplicaOf(String),
    /// A replica of the master with the fewest replicas.
    Replica,
}

/// Adds the empty node at `new` to the cluster of the node at `existing`: MEET,
/// wait until every node knows it and it reports `cluster_ok`, then for a replica REPLICATE and wait until it
/// follows its master. Returns its id. Both nodes must be reachable (exit 2); the
/// new node must be empty (exit 1).
pub async fn add_node(
    admin: &Admin,
    new: SocketAddr,
    existing: SocketAddr,
    role: NewRole,
    limits: &Limits,
    log: &mut dyn FnMut(&str),
) -> Result<NodeId, OpsError> {
    let view = ClusterView::load(admin, existing).await?;
    let nv = views_of(admin, &[new]).await?.remove(0);
    let id = NodeId(nv.me);
    if view.node(id).is_some() {
        return Err(OpsError::Failed(format!(
            "node {new} ({}) is already part of the cluster",
            short(&id)
        )));
    }
    check_empty(new, &nv)?;
    let master = match &role {
        NewRole::Master => None,
        NewRole::ReplicaOf(spec) => {
            let m = view.find(spec)?;
            if !m.is_master() {
                return Err(OpsError::Usage(format!("{spec} is not a master")));
            }
            Some(m.id)
        }
        NewRole::Replica => {
            let m = view
                .masters()
                .filter(|m| !m.slots().is_empty())
                .min_by_key(|m| view.replicas_of(m.id).len())
                .ok_or_else(|| OpsError::Failed("the cluster has no master with slots".into()))?;
            Some(m.id)
        }
    };
    let entry = view
        .node(view.entry_id)
        .map_or(existing.to_string(), |n| n.me().addr.clone());
    log(&format!(
        ">>> Send MEET to node {new} to make it join the cluster."
    ));
    admin
        .ok(new, &AdminRequest::Meet(entry))
        .await
        .map_err(|e| OpsError::during("sending MEET", new, e))?;
    let mut addrs: Vec<SocketAddr> = view
        .nodes
        .iter()
        .filter(|n| n.reachable())
        .filter_map(|n| n.sock)
        .collect();
    addrs.push(new);
    let mut ids: BTreeSet<[u8; 20]> = view
        .nodes
        .iter()
        .filter(|n| n.reachable())
        .map(|n| n.id.0)
        .collect();
    ids.insert(id.0);
    wait_until(limits, "every node to know the new node", || {
        all_know(admin, &addrs, &ids)
    })
    .await?;
    wait_until(limits, "the new node to report cluster_ok", || async {
        let v = admin.nodes(new).await.map_err(|e| e.to_string())?;
        if v.cluster_ok {
            Ok(())
        } else {
            Err(format!("{new} reports cluster_state:fail"))
        }
    })
    .await?;
    if let Some(m) = master {
        log(&format!(">>> Configure node as replica of {m}."));
        admin
            .ok(new, &AdminRequest::Replicate(m.0))
            .await
            .map_err(|e| OpsError::during("setting up the replica", new, e))?;
        let master_addr = view.node(m).and_then(|n| n.sock);
        wait_until(limits, "the new replica to follow its master", || async {
            let v = admin.nodes(new).await.map_err(|e| e.to_string())?;
            let me = me_of(&v).ok_or("no entry for itself")?;
            if me.flags & flags::REPLICA == 0 || me.master != Some(m.0) {
                return Err(format!("{new} is not a replica of {} yet", short(&m)));
            }
            if let Some(ma) = master_addr {
                let mv = admin.nodes(ma).await.map_err(|e| e.to_string())?;
                if !mv
                    .nodes
                    .iter()
                    .any(|n| n.id == id.0 && n.master == Some(m.0))
                {
                    return Err(format!("the master does not see {new} as its replica yet"));
                }
            }
            Ok(())
        })
        .await?;
    }
    log("[OK] New node added correctly.");
    Ok(id)
}

/// Removes node `spec` (id, id prefix or address) from the cluster of the node at
/// `addr`, as redis-cli's `del-node`: refused (exit 1) while it serves slots; its
/// replicas are first moved to the master with the fewest replicas; every other node
/// FORGETs it (in quick succession, so none re-learns it from another's gossip, as
/// redis-cli does); then it is
/// told to shut down. Waits until no node lists it.
pub async fn del_node(
    admin: &Admin,
    addr: SocketAddr,
    spec: &str,
    limits: &Limits,
    log: &mut dyn FnMut(&str),
) -> Result<NodeId, OpsError> {
    let view = ClusterView::load(admin, addr).await?;
    let node = view.find(spec)?.clone();
    let id = node.id;
    let serves = !node.slots().is_empty() || !node.seen.slots.is_empty();
    if serves {
        return Err(OpsError::Failed(format!(
            "node {} ({}) is not empty: it serves slots {}. Reshard its slots away and try again.",
            node.addr,
            short(&id),
            format_ranges(node.slots())
        )));
    }
    let others: Vec<_> = view
        .nodes
        .iter()
        .filter(|n| n.id != id && n.reachable())
        .collect();
    if node.is_master() {
        for r in view.replicas_of(id) {
            let target = view
                .masters()
                .filter(|m| m.id != id && !m.slots().is_empty())
                .min_by_key(|m| view.replicas_of(m.id).len())
                .ok_or_else(|| {
                    OpsError::Failed("no other master to move its replicas to".into())
                })?;
            log(&format!(">>> {} as replica of {}", r.addr, target.addr));
            admin
                .ok(r.sock()?, &AdminRequest::Replicate(target.id.0))
                .await
                .map_err(|e| OpsError::during("moving a replica", &r.addr, e))?;
        }
    }
    log(&format!(
        ">>> Removing node {} from cluster {}",
        short(&id),
        view.entry
    ));
    log(">>> Sending CLUSTER FORGET messages to the cluster...");
    let mut futs = Vec::new();
    for n in &others {
        let s = n.sock()?;
        futs.push(async move { (n, admin.ok(s, &AdminRequest::Forget(id.0)).await) });
    }
    for (n, r) in in_turn(futs).await {
        r.map_err(|e| OpsError::during("sending FORGET", &n.addr, e))?;
    }
    if let Ok(s) = node.sock() {
        log(">>> Sending SHUTDOWN to the node.");
        if let Err(e) = admin.ok(s, &AdminRequest::Shutdown).await {
            log(&format!("[WARN] the node did not take SHUTDOWN: {e}"));
        }
    }
    let socks: Vec<SocketAddr> = others.iter().filter_map(|n| n.sock).collect();
    wait_until(limits, "every node to forget the removed node", || async {
        let views = in_turn(socks.iter().map(|&a| admin.nodes(a)).collect()).await;
        for (a, v) in socks.iter().zip(views) {
            let v = v.map_err(|e| format!("{a}: {e}"))?;
            if v.nodes.iter().any(|n| n.id == id.0) {
                return Err(format!("{a} still knows {}", short(&id)));
            }
        }
        Ok(())
    })
    .await?;
    Ok(id)
}

/// The kind of manual failover (`CLUSTER FAILOVER [FORCE|TAKEOVER]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverKind {
    /// Coordinated with the master: no write is lost.
    Default,
    /// Without the master's agreement (it is down), with an election.
    Force,
    /// Without an election: the replica takes the slots with a new epoch.
    Takeover,
}

/// Asks the replica at `replica` to take over its master's slots and waits until it
/// is a master serving them with `cluster_ok`. Returns the old master's id. Exit 2 if
/// the node cannot be reached or is not a replica.
pub async fn failover(
    admin: &Admin,
    replica: SocketAddr,
    kind: FailoverKind,
    limits: &Limits,
) -> Result<NodeId, OpsError> {
    let v = views_of(admin, &[replica]).await?.remove(0);
    let me = me_of(&v).ok_or_else(|| OpsError::Failed("the node does not list itself".into()))?;
    let Some(old) = me.master.filter(|_| me.flags & flags::REPLICA != 0) else {
        return Err(OpsError::Usage(format!(
            "{replica} is not a replica: send failover to a replica"
        )));
    };
    let mode = match kind {
        FailoverKind::Default => 0,
        FailoverKind::Force => 1,
        FailoverKind::Takeover => 2,
    };
    admin
        .ok(replica, &AdminRequest::Failover(mode))
        .await
        .map_err(|e| OpsError::during("failover", replica, e))?;
    wait_until(limits, "the replica to become a master", || async {
        let v = admin.nodes(replica).await.map_err(|e| e.to_string())?;
        let me = me_of(&v).ok_or("no entry for itself")?;
        if me.flags & flags::MASTER == 0 {
            return Err(format!("{replica} is still a replica"));
        }
        if me.slots.is_empty() {
            return Err(format!("{replica} is a master without slots"));
        }
        if !v.cluster_ok {
            return Err(format!("{replica} reports cluster_state:fail"));
        }
        Ok(())
    })
    .await?;
    Ok(NodeId(old))
}
