//! Serving a cluster node: commands on this node's slots run here; others are
//! answered with Redis Cluster's redirections (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `CROSSSLOT`) so cluster-aware clients route by themselves, and
//! `CLUSTER SLOTS` / `SHARDS` / `NODES` tell them the map.
//!
//! A client reaches nodes by their RESP addresses, which the mesh does not carry: a
//! node's RESP port is its mesh port plus the same offset on every node (this node's
//! `resp port - mesh port`), as Redis derives a node's bus port from its client port
//! (+10000). The simplest layout is offset 0: RESP over TCP on the port number the
//! mesh uses over UDP.

use super::codec::Value;
use super::keyspace::{Keyspace, RouteFlags};
use super::strings::{key, parse_i64};
use crate::cluster::larder_cluster::proto::{KeyPresence, NodeFlags, Route};
use crate::cluster::{key_hash_slot, ClusterCache, NodeId, Routing};
use crate::{Cache, Weigher};
use std::fmt::Write as _;

/// A [`ClusterCache`] served over RESP.
pub struct ClusterKeyspace<W> {
    cache: ClusterCache<String, Vec<u8>, W>,
    /// RESP port minus mesh port, the same on every node.
    port_offset: i32,
}

impl<W> Clone for ClusterKeyspace<W> {
    fn clone(&self) -> Self {
        ClusterKeyspace {
            cache: self.cache.clone(),
            port_offset: self.port_offset,
        }
    }
}

impl<W: Weigher<String, Vec<u8>>> ClusterKeyspace<W> {
    /// Serves `cache`, whose RESP listener is on `resp_port`; every node of the
    /// cluster keeps the same distance between its mesh port and its RESP port.
    pub fn new(cache: ClusterCache<String, Vec<u8>, W>, resp_port: u16) -> Self {
        let port_offset = i32::from(resp_port) - i32::from(cache.local_addr().port());
        ClusterKeyspace { cache, port_offset }
    }

    /// The cluster node.
    pub fn cluster(&self) -> &ClusterCache<String, Vec<u8>, W> {
        &self.cache
    }

    /// `(host, RESP port)` of a node known at mesh address `addr`.
    fn resp_addr(&self, addr: &str) -> (String, u16) {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
        let port = port.parse::<i32>().unwrap_or(0) + self.port_offset;
        (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.clamp(0, 65535) as u16,
        )
    }

    fn endpoint(&self, rt: &Routing, id: NodeId) -> String {
        let addr = rt.node(id).map(|n| n.addr.as_str()).unwrap_or("");
        let (host, port) = self.resp_addr(addr);
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// Contiguous slot ranges and their owners. Slots still bound to a master that
    /// turned replica (until their taker's claim arrives) are left out, as Redis, which
    /// unassigns them at once, would show them: a replica never owns slots.
    fn ranges(rt: &Routing) -> Vec<(u16, u16, NodeId)> {
        let mut out: Vec<(u16, u16, NodeId)> = Vec::new();
        for slot in 0..16384u16 {
            let Some(owner) = rt.slots.owner(slot) else {
                continue;
            };
            if !rt
                .node(owner)
                .is_some_and(|n| n.flags.contains(NodeFlags::MASTER))
            {
                continue;
            }
            match out.last_mut() {
                Some((_, end, o)) if *o == owner && *end + 1 == slot => *end = slot,
                _ => out.push((slot, slot, owner)),
            }
        }
        out
    }

    fn node_entry(&self, rt: &Routing, id: NodeId) -> Value {
        let (host, port) = self.resp_addr(rt.node(id).map(|n| n.addr.as_str()).unwrap_or(""));
        Value::Array(vec![
            Value::bulk(host),
            Value::Integer(i64::from(port)),
            Value::bulk(id.to_string()),
            Value::Map(Vec::new()),
        ])
    }

    fn healthy(rt: &Routing, id: NodeId) -> bool {
        rt.node(id).is_some_and(|n| {
            !n.flags.contains(NodeFlags::FAIL) && !n.flags.contains(NodeFlags::PFAIL)
        })
    }

    fn slots(&self, rt: &Routing) -> Value {
        Value::Array(
            Self::ranges(rt)
                .into_iter()
                .map(|(start, end, owner)| {
                    let mut entry = vec![
                        Value::Integer(start.into()),
                        Value::Integer(end.into()),
                        self.node_entry(rt, owner),
                    ];
                    entry.extend(
                        rt.replicas_of(owner)
                            .filter(|r| Self::healthy(rt, r.id))
                            .map(|r| self.node_entry(rt, r.id)),
                    );
                    Value::Array(entry)
                })
                .collect(),
        )
    }

    fn shards(&self, rt: &Routing) -> Value {
        let masters: Vec<_> = rt
            .nodes
            .iter()
            .filter(|n| {
                n.flags.contains(NodeFlags::MASTER) && !n.flags.contains(NodeFlags::HANDSHAKE)
            })
            .collect();
        let ranges = Self::ranges(rt);
        let node_map = |id: NodeId, role: &str| {
            let n = rt.node(id);
            let (host, port) = self.resp_addr(n.map(|n| n.addr.as_str()).unwrap_or(""));
            let kv = |k: &str, v: Value| (Value::bulk(k), v);
            Value::Map(vec![
                kv("id", Value::bulk(id.to_string())),
                kv("port", Value::Integer(port.into())),
                kv("ip", Value::bulk(host.clone())),
                kv("endpoint", Value::bulk(host)),
                kv("role", Value::bulk(role)),
                kv(
                    "replication-offset",
                    Value::Integer(n.map_or(0, |n| n.repl_offset as i64)),
                ),
                kv(
                    "health",
                    Value::bulk(if Self::healthy(rt, id) {
                        "online"
                    } else {
                        "failed"
                    }),
                ),
            ])
        };
        Value::Array(
            masters
                .iter()
                .map(|m| {
                    let slots = ranges
                        .iter()
                        .filter(|r| r.2 == m.id)
                        .flat_map(|r| [Value::Integer(r.0.into()), Value::Integer(r.1.into())])
                        .collect();
                    let mut nodes = vec![node_map(m.id, "master")];
                    nodes.extend(
                        rt.nodes
                            .iter()
                            .filter(|n| n.master == Some(m.id))
                            .map(|n| node_map(n.id, "replica")),
                    );
                    Value::Map(vec![
                        (Value::bulk("slots"), Value::Array(slots)),
                        (Value::bulk("nodes"), Value::Array(nodes)),
                    ])
                })
                .collect(),
        )
    }

    /// `CLUSTER NODES`: one line per node, as Redis writes it.
    fn nodes(&self, rt: &Routing) -> String {
        let ranges = Self::ranges(rt);
        let mut text = String::new();
        for n in &rt.nodes {
            let mut flags = Vec::new();
            if n.id == rt.me {
                flags.push("myself");
            }
            if n.flags.contains(NodeFlags::MASTER) {
                flags.push("master");
            }
            if n.flags.contains(NodeFlags::REPLICA) {
                flags.push("slave");
            }
            if n.flags.contains(NodeFlags::PFAIL) {
                flags.push("fail?");
            }
            if n.flags.contains(NodeFlags::FAIL) {
                flags.push("fail");
            }
            if n.flags.contains(NodeFlags::HANDSHAKE) {
                flags.push("handshake");
            }
            if n.flags.contains(NodeFlags::NOADDR) {
                flags.push("noaddr");
            }
            if n.flags.contains(NodeFlags::NOFAILOVER) {
                flags.push("nofailover");
            }
            if flags.is_empty() {
                flags.push("noflags");
            }
            let (host, port) = self.resp_addr(&n.addr);
            let mesh_port = n.addr.rsplit_once(':').map_or("0", |(_, p)| p);
            let _ = write!(
                text,
                "{} {host}:{port}@{mesh_port} {} {} 0 0 {} connected",
                n.id,
                flags.join(","),
                n.master.map_or("-".to_string(), |m| m.to_string()),
                n.config_epoch,
            );
            for (start, end, _) in ranges.iter().filter(|r| r.2 == n.id) {
                if start == end {
                    let _ = write!(text, " {start}");
                } else {
                    let _ = write!(text, " {start}-{end}");
                }
            }
            if n.id == rt.me {
                for slot in 0..16384u16 {
                    if let Some(to) = rt.slots.migrating_to(slot) {
                        let _ = write!(text, " [{slot}->-{to}]");
                    }
                    if let Some(from) = rt.slots.importing_from(slot) {
                        let _ = write!(text, " [{slot}-<-{from}]");
                    }
                }
            }
            text.push('\n');
        }
        text
    }

    fn info(&self, rt: &Routing) -> String {
        let assigned = rt.slots.assigned();
        let mut pfail = 0;
        let mut fail = 0;
        for slot in 0..16384u16 {
            if let Some(n) = rt.slots.owner(slot).and_then(|o| rt.node(o)) {
                if n.flags.contains(NodeFlags::FAIL) {
                    fail += 1;
                } else if n.flags.contains(NodeFlags::PFAIL) {
                    pfail += 1;
                }
            }
        }
        let size = rt
            .nodes
            .iter()
            .filter(|n| n.flags.contains(NodeFlags::MASTER) && n.slot_count > 0)
            .count();
        let epoch = rt.nodes.iter().map(|n| n.config_epoch).max().unwrap_or(0);
        let my_epoch = rt.node(rt.me).map_or(0, |n| n.config_epoch);
        format!(
            "cluster_enabled:1\r\ncluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\n\
             cluster_slots_ok:{}\r\ncluster_slots_pfail:{pfail}\r\ncluster_slots_fail:{fail}\r\n\
             cluster_known_nodes:{}\r\ncluster_size:{size}\r\ncluster_current_epoch:{epoch}\r\n\
             cluster_my_epoch:{my_epoch}\r\n",
            if rt.cluster_ok { "ok" } else { "fail" },
            assigned - pfail - fail,
            rt.nodes.len(),
        )
    }

    /// The local keys of `slot`, at most `limit`.
    fn keys_in_slot(&self, slot: u16, limit: usize) -> Vec<String> {
        let cache = self.cache.local();
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let page = cache.scan(cursor, None, 1024);
            out.extend(
                page.keys
                    .into_iter()
                    .filter(|k| key_hash_slot(k.as_bytes()) == slot),
            );
            cursor = page.cursor;
            if cursor == 0 || out.len() >= limit {
                break;
            }
        }
        out.sort();
        out.dedup();
        out.truncate(limit);
        out
    }
}

impl<W: Weigher<String, Vec<u8>>> ClusterKeyspace<W> {
    fn route_slot(
        &self,
        rt: &Routing,
        slot: u16,
        keys: &[&[u8]],
        write: bool,
        flags: RouteFlags,
    ) -> Result<Option<u16>, Value> {
        // Whether the keys are here matters only while the slot moves.
        let presence =
            if rt.slots.migrating_to(slot).is_some() || rt.slots.importing_from(slot).is_some() {
                let local = self.cache.local();
                let here = keys
                    .iter()
                    .filter(|k| key(k).is_ok_and(|k| local.contains(k)))
                    .count();
                if here == keys.len() {
                    KeyPresence::All
                } else if here == 0 {
                    KeyPresence::None
                } else {
                    KeyPresence::Some
                }
            } else {
                KeyPresence::All
            };
        match rt.route(slot, presence, flags.asking) {
            Route::Serve => Ok(Some(slot)),
            Route::Moved { node, .. }
                if !write
                    && flags.readonly
                    && rt.node(rt.me).is_some_and(|m| m.master == Some(node)) =>
            {
                Ok(Some(slot))
            }
            Route::Moved { slot, node } => Err(Value::Error(format!(
                "MOVED {slot} {}",
                self.endpoint(rt, node)
            ))),
            Route::Ask { slot, node } => Err(Value::Error(format!(
                "ASK {slot} {}",
                self.endpoint(rt, node)
            ))),
            Route::TryAgain => Err(Value::error(
                "TRYAGAIN Multiple keys request during rehashing of slot",
            )),
            Route::ClusterDown if rt.slots.owner(slot).is_none() => {
                Err(Value::error("CLUSTERDOWN Hash slot not served"))
            }
            Route::ClusterDown => Err(Value::error("CLUSTERDOWN The cluster is down")),
        }
    }
}

fn slot_arg(a: &[u8]) -> Result<u16, Value> {
    match parse_i64(a) {
        Ok(s) if (0..16384).contains(&s) => Ok(s as u16),
        _ => Err(Value::error("ERR Invalid or out of range slot")),
    }
}

impl<W: Weigher<String, Vec<u8>>> Keyspace for ClusterKeyspace<W> {
    type W = W;

    fn cache(&self) -> &Cache<String, Vec<u8>, W> {
        self.cache.local()
    }

    fn routes(&self) -> bool {
        true
    }

    fn route(&self, keys: &[&[u8]], write: bool, flags: RouteFlags) -> Result<Option<u16>, Value> {
        let mut slot = None;
        for k in keys {
            let s = key_hash_slot(k);
            match slot {
                Some(first) if first != s => {
                    return Err(Value::error(
                        "CROSSSLOT Keys in request don't hash to the same slot",
                    ))
                }
                _ => slot = Some(s),
            }
        }
        let Some(slot) = slot else {
            return Ok(None);
        };
        self.cache
            .with_routing(|rt| self.route_slot(rt, slot, keys, write, flags))
    }

    fn in_slot<R>(&self, slot: Option<u16>, f: impl FnOnce() -> R) -> R {
        match slot {
            Some(s) => self.cache.in_slot(s, f),
            None => f(),
        }
    }

    fn cluster_command(&self, args: &[&[u8]]) -> Option<Value> {
        let rt = self.cache.routing();
        let Some(sub) = args.first() else {
            return Some(super::session::wrong_arity("cluster"));
        };
        let sub = sub.to_ascii_lowercase();
        let arity = |n: usize| {
            (args.len() != n).then(|| {
                super::session::wrong_arity(&format!("cluster|{}", String::from_utf8_lossy(&sub)))
            })
        };
        let text = |s: String| Value::Verbatim {
            format: *b"txt",
            text: s.into_bytes(),
        };
        Some(match sub.as_slice() {
            b"myid" => arity(1).unwrap_or_else(|| Value::bulk(rt.me.to_string())),
            b"keyslot" => arity(2).unwrap_or_else(|| Value::Integer(key_hash_slot(args[1]).into())),
            b"slots" => arity(1).unwrap_or_else(|| self.slots(&rt)),
            b"shards" => arity(1).unwrap_or_else(|| self.shards(&rt)),
            b"nodes" => arity(1).unwrap_or_else(|| text(self.nodes(&rt))),
            b"info" => arity(1).unwrap_or_else(|| text(self.info(&rt))),
            b"countkeysinslot" => arity(2).unwrap_or_else(|| match slot_arg(args[1]) {
                Ok(s) => Value::Integer(self.keys_in_slot(s, usize::MAX).len() as i64),
                Err(e) => e,
            }),
            b"getkeysinslot" => arity(3).unwrap_or_else(|| {
                let slot = match slot_arg(args[1]) {
                    Ok(s) => s,
                    Err(e) => return e,
                };
                match parse_i64(args[2]) {
                    Ok(n) if n >= 0 => Value::Array(
                        self.keys_in_slot(slot, n as usize)
                            .into_iter()
                            .map(Value::bulk)
                            .collect(),
                    ),
                    _ => Value::error("ERR Invalid number of keys"),
                }
            }),
            _ => super::session::unknown_subcommand("cluster", args[0]),
        })
    }

    fn wait(
        &self,
        replicas: usize,
        timeout_ms: u64,
    ) -> impl std::future::Future<Output = Result<usize, Value>> + Send {
        let timeout = std::time::Duration::from_millis(if timeout_ms == 0 {
            u64::MAX / 4
        } else {
            timeout_ms
        });
        let cache = self.cache.clone();
        async move { Ok(cache.wait(replicas, timeout).await) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::larder_cluster::proto::{Config, Instant, Node, NodeView, SlotSet};
    use crate::DefaultWeigher;

    type Keyspace = ClusterKeyspace<DefaultWeigher<String, Vec<u8>>>;

    /// A master that turned replica may still hold its slots in a peer's table until
    /// their taker's claim arrives; `CLUSTER SLOTS`/`SHARDS`/`NODES` list none for it,
    /// as Redis (which unassigns them at once) would.
    #[test]
    fn slots_held_by_a_replica_are_not_listed() {
        let id = NodeId::from_hex("5f2a000000000000000000000000000000000001").unwrap();
        let me = NodeId::from_hex("5f2a000000000000000000000000000000000002").unwrap();
        let mut owner = Node::new(Config::default(), id, "10.0.0.1:7000", Instant::ZERO, 1);
        owner
            .add_slots(Instant::ZERO, &SlotSet::from_range(0..100))
            .unwrap();
        let view = |flags| NodeView {
            id,
            addr: "10.0.0.1:7000".into(),
            flags,
            master: None,
            config_epoch: 1,
            repl_offset: 0,
            slot_count: 100,
            failure_reports: 0,
        };
        let mut rt = Routing {
            me,
            cluster_ok: true,
            is_master: true,
            slots: owner.slots().clone(),
            nodes: vec![view(NodeFlags::MASTER)],
        };
        assert_eq!(Keyspace::ranges(&rt), vec![(0, 99, id)]);
        rt.nodes = vec![view(NodeFlags::REPLICA)];
        assert_eq!(Keyspace::ranges(&rt), vec![]);
    }
}
