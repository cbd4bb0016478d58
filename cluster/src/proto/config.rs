//! Tunables, named after their `redis.conf` counterparts.

/// Cluster settings. All durations are in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `cluster-node-timeout`: how long a node may be silent before it is PFAIL, and
    /// the unit of most other timeouts.
    pub node_timeout: u64,
    /// `cluster-replica-validity-factor`: a replica whose master link has been down for
    /// more than `node_timeout * factor` (+ the ping period) does not try to fail over.
    /// 0 disables the check.
    pub replica_validity_factor: u64,
    /// `repl-ping-replica-period`, part of the validity check above.
    pub repl_ping_replica_period: u64,
    /// `min-replicas-to-write`: a master refuses writes with fewer healthy replicas.
    pub min_replicas_to_write: usize,
    /// `min-replicas-max-lag`: a replica is healthy if heard from within this time.
    pub min_replicas_max_lag: u64,
    /// `cluster-require-full-coverage`: the cluster state is FAIL while any slot is
    /// unserved.
    pub require_full_coverage: bool,
    /// `cluster-replica-no-failover`: never start an automatic failover.
    pub replica_no_failover: bool,
    /// Upper bound of the fixed part of the election delay. The delay is
    /// `min(this, node_timeout / 30)`, after Valkey, because the FAIL message it waits
    /// for is broadcast at once rather than gossiped.
    pub failover_fixed_delay_max: u64,
    /// Upper bound of the random part of the election delay, which is drawn from
    /// `0..min(this, node_timeout / 4)`. It spreads elections of replicas of different
    /// masters that failed together, so they do not split votes in one epoch.
    pub failover_random_delay_max: u64,
    /// Extra election delay per rank (replicas with a better offset go first).
    pub failover_rank_delay: u64,
    /// How long a manual failover may take before it is aborted (`CLUSTER_MF_TIMEOUT`).
    pub manual_failover_timeout: u64,
    /// `cluster-migration-barrier`: a replica moves to an orphaned master only if its
    /// own master keeps at least this many working replicas without it (it migrates
    /// only while its master has *more* than this many, itself included).
    pub migration_barrier: usize,
    /// `cluster-allow-replica-migration`: replicas may move to orphaned masters (masters
    /// serving slots whose replicas all failed), and a master that hands over its last
    /// slot (`SETSLOT NODE`) becomes a replica of the node that took it, as in Redis 7.
    /// A master that learns from another node's claims that it lost its last slots
    /// (and the replicas of such a master) always follows that node.
    pub allow_replica_migration: bool,
    /// How long a master must have been orphaned, as this node sees it, before a
    /// replica moves to it (Redis's fixed `CLUSTER_REPLICA_MIGRATION_DELAY`, 5 s). It
    /// gives the replicas of a master that just failed over time to announce that
    /// they follow the new one.
    pub replica_migration_delay: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_timeout: 15_000,
            replica_validity_factor: 10,
            repl_ping_replica_period: 10_000,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10_000,
            require_full_coverage: true,
            replica_no_failover: false,
            failover_fixed_delay_max: 500,
            failover_random_delay_max: 500,
            failover_rank_delay: 1000,
            manual_failover_timeout: 5000,
            migration_barrier: 1,
            allow_replica_migration: true,
            replica_migration_delay: 5000,
        }
    }
}

impl Config {
    /// Default settings with the given `node_timeout`.
    pub fn with_node_timeout(node_timeout: u64) -> Self {
        Config {
            node_timeout,
            ..Config::default()
        }
    }

    /// How often the periodic work runs: a twentieth of node_timeout, 10..=100 ms.
    /// Redis runs its cron at 10 Hz; a finer tick for short timeouts keeps detection
    /// latency a small fraction of node_timeout.
    pub(crate) fn cron_interval(&self) -> u64 {
        (self.node_timeout / 20).clamp(10, 100)
    }

    /// How long an election may collect votes (`max(2 * node_timeout, 2000)`).
    pub(crate) fn auth_timeout(&self) -> u64 {
        (self.node_timeout * 2).max(2000)
    }

    /// How long a master writes on a peer's acknowledgement: 9/10 of node_timeout, so a
    /// 10% clock-rate difference between nodes cannot make two leases overlap.
    pub(crate) fn lease(&self) -> u64 {
        self.node_timeout - self.node_timeout / 10
    }

    /// How long a master in a minority waits after regaining the majority before
    /// accepting writes again (`rejoin delay`, node_timeout clamped to 500..=5000 ms).
    pub(crate) fn rejoin_delay(&self) -> u64 {
        self.node_timeout.clamp(500, 5000)
    }
}
