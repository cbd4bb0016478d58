//! Seeds and the runner the seeded scenarios of this module share.

/// Seeds in a plain `cargo test` (a few seconds in a debug build).
pub(super) const DEFAULT_SEEDS: u64 = 6;

/// `LARDER_SIM_SEED` exactly as printed by a failure, or `LARDER_SIM_SEEDS` (default
/// [`DEFAULT_SEEDS`]) seeds derived from 1..=n and the scenario name.
pub(super) fn seeds(name: &str) -> Vec<u64> {
    if let Ok(s) = std::env::var("LARDER_SIM_SEED") {
        return vec![s.parse().expect("LARDER_SIM_SEED must be a number")];
    }
    let n = std::env::var("LARDER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (1..=n)
        .map(|i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ name.len() as u64)
        .collect()
}

/// Runs `scenario` over the seeds; panics on the first failure, or with
/// `LARDER_SIM_KEEP_GOING=1` after all of them, listing every failing seed.
pub(super) fn run(name: &str, scenario: impl Fn(u64) -> Result<(), String>) {
    let keep_going = std::env::var("LARDER_SIM_KEEP_GOING").is_ok();
    let mut failed = Vec::new();
    for seed in seeds(name) {
        if let Err(e) = scenario(seed) {
            let msg = format!(
                "scenario {name} failed with seed {seed}\nrerun: LARDER_SIM_SEED={seed} cargo test -p larder-cluster --lib {name}\n{e}"
            );
            if !keep_going {
                panic!("{msg}");
            }
            let first = msg.lines().nth(2).unwrap_or_default().to_string();
            eprintln!("{msg}\n");
            failed.push(format!("{seed}: {first}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failing seeds:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
