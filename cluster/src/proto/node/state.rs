//! Cluster state and write safety: when this node may accept writes.

use super::*;

impl Node {
    /// Redis's `clusterUpdateState`: FAIL if a slot is unserved (with full coverage
    /// required) or, for a master, if it cannot reach a majority of masters; a master
    /// back from a minority waits the rejoin delay before turning OK.
    pub(super) fn update_state(&mut self, now: Instant) {
        let mut ok = true;
        if self.config.require_full_coverage {
            let covered: usize = self
                .nodes
                .values()
                .filter(|r| !r.flags.contains(NodeFlags::FAIL))
                .map(|r| r.slots.len())
                .sum();
            ok = covered == SLOTS;
        }
        let i_am_master = self.is_master();
        if i_am_master {
            let (_, needed) = self.quorum();
            let reachable = self
                .nodes
                .values()
                .filter(|r| r.is_voting_master() && (r.id == self.me || !r.is_failing()))
                .count();
            if reachable < needed {
                ok = false;
                self.among_minority_time = Some(now);
            }
        }
        if ok && self.state == ClusterState::Fail && i_am_master {
            if let Some(t) = self.among_minority_time {
                if now.since(t) < self.config.rejoin_delay() {
                    return;
                }
            }
        }
        let new = if ok {
            ClusterState::Ok
        } else {
            ClusterState::Fail
        };
        if new != self.state {
            self.state = new;
            self.events.push_back(Event::StateChanged(ok));
        }
    }

    /// The slot-independent part of [`Node::write_permission`].
    ///
    /// Beyond Redis's checks (cluster state, manual-failover pause,
    /// min-replicas-to-write), a master needs a current *lease*: a majority of
    /// slot-serving masters, itself included, must have acknowledged its slot claims
    /// in answer to a ping sent less than 9/10 of node_timeout ago. Voters wait a full
    /// node_timeout after their last acknowledgement before voting for a replacement,
    /// so an old master's lease always ends before a new master's begins.
    pub(super) fn write_status(&self, now: Instant) -> Result<(), WriteRefusal> {
        if self.state != ClusterState::Ok {
            return Err(WriteRefusal::ClusterDown);
        }
        if self.manual.end.is_some() && self.manual.replica.is_some() {
            return Err(WriteRefusal::Paused);
        }
        let needed_replicas = self.config.min_replicas_to_write;
        if needed_replicas > 0 {
            let healthy = self
                .nodes
                .values()
                .filter(|r| {
                    r.master == Some(self.me)
                        && !r.is_master()
                        && !r.is_failing()
                        && now.since(r.data_received) <= self.config.min_replicas_max_lag
                })
                .count();
            if healthy < needed_replicas {
                return Err(WriteRefusal::NotEnoughReplicas {
                    healthy,
                    needed: needed_replicas,
                });
            }
        }
        let (acked, needed) = self.lease_quorum(now);
        if acked < needed {
            return Err(WriteRefusal::NoQuorum { acked, needed });
        }
        Ok(())
    }

    /// Masters (this one included) whose acknowledgement of this node's slot claims is
    /// current, and how many make a majority of slot-serving masters.
    pub(super) fn lease_quorum(&self, now: Instant) -> (usize, usize) {
        let (_, needed) = self.quorum();
        // A master that voted for its own replica no longer vouches for itself: its vote
        // may be the one that makes the replica's majority.
        let self_ok = !self.abstaining();
        let acked = self
            .nodes
            .values()
            .filter(|r| {
                r.is_voting_master()
                    && if r.id == self.me {
                        self_ok
                    } else {
                        r.lease_until > now
                    }
            })
            .count();
        (acked, needed)
    }
}
