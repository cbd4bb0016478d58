//! Replica migration to orphaned masters (Redis's `clusterHandleReplicaMigration`,
//! `cluster-migration-barrier`, `cluster-allow-replica-migration`): a replica of a
//! master with spare replicas moves to a master left without any working replica, so
//! one more failure does not leave that master's slots without a standby.
//!
//! The rules, as this node sees the cluster:
//! - A master is **orphaned** when it serves slots, is not PFAIL/FAIL, has
//!   `migrate_to` set, and none of the replicas pointing at it is working (each is
//!   PFAIL or FAIL). `migrate_to` is Redis's `CLUSTER_NODE_MIGRATE_TO`: set once the
//!   master is seen with a replica, or when a replica is seen becoming a master (it
//!   took over a shard that had replicas); cleared when every replica pointing at it
//!   goes away (moves to another master or is forgotten) or when it turns replica. So
//!   a master that never had replicas, or whose replicas an operator moved elsewhere,
//!   is never filled. The flag is local and not persisted: after a restart it comes
//!   back from the replicas in the saved table.
//! - The orphaned condition must have lasted more than
//!   [`Config::replica_migration_delay`] (Redis: 5 s after `orphaned_time`), so the
//!   replicas of a master that just failed over can first announce their new master.
//! - A replica moves only if replica migration is allowed, the cluster state is OK, no
//!   manual failover is under way here, its master is not PFAIL/FAIL and has more than
//!   [`Config::migration_barrier`] working replicas (itself included), and, as in
//!   Redis, its master is among the masters with the most working replicas, that
//!   number being at least 2. So a master's only replica never moves, whatever the
//!   barrier.
//! - Of the working replicas of all masters with that largest number, only the one
//!   with the smallest id moves, so one replica moves at a time (Redis also counts
//!   failing replicas here, which can let a failed replica block every migration).
//! - It moves to the orphaned master with the smallest id among those orphaned for
//!   longer than the delay (Redis takes the first orphan of its table), through the
//!   same path as `CLUSTER REPLICATE`, so the driver sees the same
//!   [`Event::RoleChanged`] and follows the new master.

use super::*;

/// Replicas pointing at a master: all of them, and the working ones (not PFAIL/FAIL).
#[derive(Clone, Copy, Default)]
struct ReplicaCount {
    all: usize,
    working: usize,
}

impl Node {
    /// How many replicas point at each master, in this node's table (itself included).
    fn replica_counts(&self) -> BTreeMap<NodeId, ReplicaCount> {
        let mut counts: BTreeMap<NodeId, ReplicaCount> = BTreeMap::new();
        for r in self.nodes.values() {
            let Some(master) = r.master.filter(|_| !r.is_master()) else {
                continue;
            };
            let c = counts.entry(master).or_default();
            c.all += 1;
            if !r.is_failing() && !r.in_handshake() {
                c.working += 1;
            }
        }
        counts
    }

    /// Keeps every master's `migrate_to` flag and orphaned timer up to date. Runs on
    /// every tick, whatever this node's role, so the timers measure how long the
    /// condition has lasted rather than how long this node has been a candidate.
    fn track_orphans(&mut self, now: Instant) -> BTreeMap<NodeId, ReplicaCount> {
        let counts = self.replica_counts();
        let me = self.me;
        for rec in self.nodes.values_mut() {
            let c = counts.get(&rec.id).copied().unwrap_or_default();
            if !rec.is_master() {
                rec.migrate_to = false;
                rec.replicas_seen = 0;
                rec.orphaned_since = None;
                continue;
            }
            if c.all > 0 {
                rec.migrate_to = true;
            } else if rec.replicas_seen > 0 {
                // Its last replica left (Redis's `clusterNodeRemoveReplica`).
                rec.migrate_to = false;
            }
            rec.replicas_seen = c.all;
            let orphaned = rec.id != me
                && rec.migrate_to
                && c.working == 0
                && !rec.slots.is_empty()
                && !rec.is_failing()
                && !rec.in_handshake();
            if !orphaned {
                rec.orphaned_since = None;
            } else if rec.orphaned_since.is_none() {
                rec.orphaned_since = Some(now);
            }
        }
        counts
    }

    /// The orphaned master this replica should move to now, if it is the one that
    /// should move (see the module documentation for the rules).
    fn migration_target(
        &self,
        now: Instant,
        counts: &BTreeMap<NodeId, ReplicaCount>,
    ) -> Option<NodeId> {
        if !self.config.allow_replica_migration
            || self.is_master()
            || self.state != ClusterState::Ok
            || self.manual.end.is_some()
        {
            return None;
        }
        let my_master = self.master()?;
        let m = self.nodes.get(&my_master)?;
        if !m.is_master() || m.is_failing() {
            return None;
        }
        let working = |id: NodeId| counts.get(&id).map_or(0, |c| c.working);
        let mine = working(my_master);
        if mine <= self.config.migration_barrier {
            return None;
        }
        let healthy_masters = || {
            self.nodes
                .values()
                .filter(|r| r.is_master() && !r.is_failing() && !r.in_handshake())
        };
        let max = healthy_masters().map(|r| working(r.id)).max().unwrap_or(0);
        if max < 2 || mine != max {
            return None;
        }
        let busiest: BTreeSet<NodeId> = healthy_masters()
            .filter(|r| working(r.id) == max)
            .map(|r| r.id)
            .collect();
        let candidate = self
            .nodes
            .values()
            .filter(|r| {
                !r.is_master()
                    && !r.is_failing()
                    && !r.in_handshake()
                    && r.master.is_some_and(|m| busiest.contains(&m))
            })
            .map(|r| r.id)
            .min();
        if candidate != Some(self.me) {
            return None;
        }
        let delay = self.config.replica_migration_delay;
        // The table is ordered by id: the first match has the smallest.
        self.nodes
            .values()
            .find(|r| r.orphaned_since.is_some_and(|t| now.since(t) > delay))
            .map(|r| r.id)
    }

    /// Redis's `clusterHandleReplicaMigration`, from the cron: track orphaned masters
    /// and, if this replica is the one to move, replicate the orphan.
    pub(super) fn handle_replica_migration(&mut self, now: Instant) {
        let counts = self.track_orphans(now);
        let Some(target) = self.migration_target(now, &counts) else {
            return;
        };
        // The `CLUSTER REPLICATE` path: same checks, same role switch and event. It
        // cannot refuse here (the target is a known master other than us, and we are a
        // replica), but if it did, staying put is the safe outcome.
        let _ = self.replicate(now, target);
    }
}
