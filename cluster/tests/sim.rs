//! Cluster scenarios from Redis's own cluster tests, run over many seeds in the
//! deterministic simulation. Every failure prints its seed; rerun one with
//! `LARDER_SIM_SEED=<seed> cargo test -p larder-cluster --test sim <scenario>`, and run
//! more seeds with `LARDER_SIM_SEEDS=<n>`.

use larder_cluster::proto::{FailoverMode, SLOTS};
use larder_cluster::sim::{NetConfig, Sim, SimConfig};

/// Seeds per scenario in CI unless `LARDER_SIM_SEEDS` says otherwise.
const DEFAULT_SEEDS: u64 = 4;

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("LARDER_SIM_SEED") {
        return vec![s.parse().expect("LARDER_SIM_SEED must be a number")];
    }
    let n = std::env::var("LARDER_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    (1..=n).collect()
}

fn run(name: &str, scenario: impl Fn(u64) -> Result<(), String>) {
    for seed in seeds(DEFAULT_SEEDS) {
        // Scenario seeds differ per scenario so two scenarios never share a run.
        let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ name.len() as u64;
        if let Err(e) = scenario(seed) {
            panic!("scenario {name} failed with seed {seed}\nrerun: LARDER_SIM_SEED={seed} cargo test -p larder-cluster --test sim {name}\n{e}");
        }
    }
}

fn cluster(seed: u64, masters: usize, replicas: usize) -> Result<Sim, String> {
    let mut sim = Sim::new(SimConfig::new(seed, masters, replicas));
    sim.bootstrap()?;
    Ok(sim)
}

/// The first slot master `i` serves at bootstrap.
fn first_slot(sim: &Sim, i: usize) -> u16 {
    sim.node(i).and_then(|n| n.my_slots().iter().next()).unwrap_or(0)
}

#[test]
fn master_crash_fails_over() {
    run("master_crash_fails_over", |seed| {
        let mut sim = cluster(seed, 3, 1)?;
        sim.run_for(2000)?;
        let slot = first_slot(&sim, 0);
        sim.crash(0);
        let took = sim.run_until(10_000, "replica takes over", |s| s.writer_of(slot) == Some(3))?;
        if took > 3000 {
            return Err(format!("seed {seed}: failover took {took} ms"));
        }
        sim.run_until_converged(10_000)?;
        Ok(())
    });
}
