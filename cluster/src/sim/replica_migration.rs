//! Seeded scenarios for replica migration (Redis's `tests/unit/cluster/replica-migration`
//! in spirit): after replicas die, a spare replica of another shard moves over until
//! every slot is served by a master that has a standby again.
//!
//! Every failure prints its seed; rerun one with
//! `LARDER_SIM_SEED=<seed> cargo test -p larder-cluster --lib replica_migration`, and
//! run more seeds with `LARDER_SIM_SEEDS=<n>`.

use super::seeds::run;
use super::{NetConfig, Sim, SimConfig};
use crate::proto::{Rng, SLOTS};

/// Every slot is served by a running master (in its own view) and none of those
/// masters is without a running replica.
fn all_slots_have_a_standby(sim: &Sim) -> bool {
    let covered: usize = sim
        .masters()
        .iter()
        .filter_map(|&m| sim.node(m))
        .map(|n| n.my_slots().len())
        .sum();
    covered == SLOTS && sim.unreplicated_masters().is_empty()
}

/// Every running node knows, for every running replica, which master it replicates.
/// Gossip does not carry that (as in Redis): a node learns it from the replica's own
/// messages, so a replica that dies before it was heard stays a "master" to some nodes,
/// and its master never looks orphaned to them.
fn everyone_knows_the_replicas(sim: &Sim) -> bool {
    let replicas: Vec<_> = (0..sim.len())
        .filter_map(|r| Some((sim.machine(r).id, sim.node(r)?.master()?)))
        .collect();
    (0..sim.len()).filter_map(|i| sim.node(i)).all(|n| {
        replicas
            .iter()
            .all(|&(r, m)| n.node(r).is_some_and(|v| v.master == Some(m)))
    })
}

/// 3 masters with 2 replicas each. One shard loses its standby, either because both
/// its replicas crash (the master is orphaned) or because its master and one replica
/// crash (the other replica is promoted with no replica of its own). A replica of
/// another shard must move over, the cluster must converge, and no shard may be
/// stripped of its last replica by the move.
#[test]
fn replica_migration_refills_orphans() {
    run("replica_migration_refills_orphans", |seed| {
        let mut rng = Rng::new(seed ^ 0x006d_6967_7261_7465);
        let mut sim = Sim::new(SimConfig::new(seed, 3, 2));
        sim.bootstrap()?;
        sim.run_until(
            10_000,
            "everyone knows the replicas",
            everyone_knows_the_replicas,
        )?;
        if rng.chance(0.5) {
            sim.set_net(NetConfig::lossy());
        }
        sim.run_for(rng.range(0, 1000))?;
        let shard = rng.below(3) as usize;
        let replicas = sim.replicas_of(shard);
        if replicas.len() != 2 {
            return Err(sim.fail(&format!("n{shard} has replicas {replicas:?}")));
        }
        let first = replicas[rng.below(2) as usize];
        let promoted = rng.chance(0.5);
        sim.crash(first);
        sim.run_for(rng.range(0, 1500))?;
        if promoted {
            sim.crash(shard);
        } else {
            let other = replicas
                .iter()
                .copied()
                .find(|&r| r != first)
                .unwrap_or(first);
            sim.crash(other);
        }
        // Failure detection (and a failover) take a few node_timeouts, then the
        // orphan must stay orphaned for the 5 s delay.
        sim.run_until(
            30_000,
            "every slot has a master with a replica",
            all_slots_have_a_standby,
        )?;
        sim.set_net(NetConfig::lan());
        sim.run_until_converged(15_000)?;
        // The moves are over: nothing flaps back and no shard was emptied.
        sim.run_for(3000)?;
        if !all_slots_have_a_standby(&sim) {
            return Err(sim.fail(&format!(
                "masters without a replica after settling: {:?}",
                sim.unreplicated_masters()
            )));
        }
        Ok(())
    });
}
