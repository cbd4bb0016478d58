//! Seeded scenarios for slot moves, driven at the proto level the way the application's
//! mover (`migrate_slots` in `src/cluster/admin.rs`) drives them: IMPORTING on the
//! target, MIGRATING on the source, then for each group of slots the target takes them
//! (`SETSLOT NODE` and an announcement) and, one request round trip later, the source
//! hands them over (and announces, unless handing over its last slot made it a replica).
//!
//! 3 masters A, B, C (n0, n1, n2) with one replica each (n3, n4, n5). The moves: half
//! of A's slots to B; all of C's slots to A, so C is emptied and must become a replica
//! of A; some of the slots B got back to A; sometimes some of C's former slots on to B.
//! Half the runs are on a lossy network; some crash a replica that takes no part (and
//! restart it afterwards).
//!
//! Checked after every step: the sim's safety invariants (one writer per slot, epochs,
//! votes). The source's MIGRATING slots are fenced by the application (a client write
//! there is refused), so by default they do not count as writable on the source; with
//! `LARDER_SIM_STRICT_WRITERS=1` they do, and the check is `writable_slots` as is. On a
//! lossless network, also that every master serving slots keeps its write lease
//! throughout the moves (`writable_slots` is all of its slots). At the end: convergence,
//! every node agrees with the expected owner of every slot, no node is left MIGRATING
//! or IMPORTING, and C is a replica of A in everyone's view (or of B, if B's only
//! replica was down and replica migration moved C there).
//!
//! Before a node let the next claimant take a slot its owner had stopped claiming
//! (Redis's `owner_not_claiming_slot`), 28 of 500 seeds failed here: a node that learnt
//! the source's later configEpoch bump (it takes slots back in the next move) before
//! it heard the target's claim of a slot kept the source as that slot's owner for
//! good, since the target's claim carried a lower epoch than the one the source then
//! had. [`slot_moves_stale_owner_seeds`] replays two of those seeds.
//!
//! Every failure prints its seed; rerun one with
//! `LARDER_SIM_SEED=<seed> cargo test -p larder-cluster --lib slot_moves`, and run more
//! seeds with `LARDER_SIM_SEEDS=<n>` (in release for many; add `LARDER_SIM_KEEP_GOING=1`
//! to list every failing seed instead of stopping at the first).

use super::seeds::run;
use super::{NetConfig, Sim, SimConfig};
use crate::proto::{Rng, SLOTS};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Most slots handed over together (the mover's `MAX_GROUP`).
const MAX_GROUP: u64 = 1024;

/// One run: the cluster, its randomness, what the slots' owners must end up as.
struct Moves {
    sim: Sim,
    rng: Rng,
    /// No loss on the network: the masters' write leases must never lapse.
    lossless: bool,
    /// Check the leases (only while moves are under way).
    watch_leases: bool,
    /// Expected owner (machine index) of every slot.
    owner: Vec<usize>,
}

impl Moves {
    /// A one-way network delay, as the sim's network draws them.
    fn one_way(&mut self) -> u64 {
        let net = self.sim.cfg.net.clone();
        self.rng.range(net.min_delay, net.max_delay)
    }

    /// Runs `ms` of virtual time, a millisecond at a time, checking the leases.
    fn run(&mut self, ms: u64) -> Result<(), String> {
        for _ in 0..ms {
            self.sim.run_for(1)?;
            if self.lossless && self.watch_leases {
                self.check_leases()?;
            }
        }
        Ok(())
    }

    /// Every running master that serves slots (in its own view) may write them all.
    fn check_leases(&self) -> Result<(), String> {
        let now = self.sim.now;
        for i in 0..self.sim.len() {
            let Some(n) = self.sim.node(i) else { continue };
            if !n.is_master() || n.my_slots().is_empty() {
                continue;
            }
            if n.writable_slots(now).len() != n.my_slots().len() {
                let why = n
                    .master_write_status(now)
                    .map_or_else(|e| e.to_string(), |()| "?".into());
                return Err(self.sim.fail(&format!(
                    "lossless network: master n{i} ({} slots) cannot write: {why}",
                    n.my_slots().len()
                )));
            }
        }
        Ok(())
    }

    /// Applies `f` to running node `i` now, then sends what it queued.
    fn on(
        &mut self,
        i: usize,
        what: &str,
        f: impl FnOnce(&mut crate::proto::Node, crate::proto::Instant) -> Result<(), String>,
    ) -> Result<(), String> {
        let now = self.sim.now;
        let r = match self.sim.nodes[i].node.as_mut() {
            Some(n) => f(n, now),
            None => Err("node is down".into()),
        };
        if let Err(e) = r {
            return Err(self.sim.fail(&format!("n{i}: {what}: {e}")));
        }
        self.sim.flush(i)
    }

    /// Moves `slots` from `src` to `dst` as the application's mover does.
    fn move_slots(&mut self, src: usize, dst: usize, slots: &[u16]) -> Result<(), String> {
        let (sid, did) = (self.sim.machine(src).id, self.sim.machine(dst).id);
        self.sim
            .log(format!("move {} slots n{src} -> n{dst}", slots.len()));
        // 1. IMPORTING on the target (a request to it and its answer), 2. MIGRATING here.
        let d = self.one_way();
        self.run(d)?;
        self.on(dst, "SETSLOT IMPORTING", |n, _| {
            slots.iter().try_for_each(|&s| {
                n.set_slot_importing(s, sid)
                    .map_err(|e| format!("slot {s}: {e}"))
            })
        })?;
        let d = self.one_way();
        self.run(d)?;
        self.on(src, "SETSLOT MIGRATING", |n, _| {
            slots.iter().try_for_each(|&s| {
                n.set_slot_migrating(s, did)
                    .map_err(|e| format!("slot {s}: {e}"))
            })
        })?;
        // 3. The fence grace and the keys (not modelled).
        let d = self.rng.range(50, 400);
        self.run(d)?;
        // 4. A group at a time: the target takes it, then (its answer back) the source.
        let mut rest = slots;
        while !rest.is_empty() {
            let k = (self.rng.range(1, MAX_GROUP) as usize).min(rest.len());
            let (group, tail) = rest.split_at(k);
            rest = tail;
            let d = self.one_way();
            self.run(d)?;
            self.sim.log(format!(
                "n{dst} takes {} slots {}..={}",
                group.len(),
                group[0],
                group[group.len() - 1]
            ));
            self.on(dst, "SETSLOT NODE (target)", |n, now| {
                group
                    .iter()
                    .try_for_each(|&s| n.set_slot_node(now, s, did).map_err(|e| e.to_string()))?;
                n.announce(now);
                Ok(())
            })?;
            let d = self.one_way();
            self.run(d)?;
            self.sim.log(format!("n{src} hands over"));
            self.on(src, "SETSLOT NODE (source)", |n, now| {
                group
                    .iter()
                    .try_for_each(|&s| n.set_slot_node(now, s, did).map_err(|e| e.to_string()))?;
                if n.is_master() {
                    n.announce(now);
                }
                Ok(())
            })?;
            for &s in group {
                self.owner[s as usize] = dst;
            }
            // The next group's keys.
            let d = self.rng.range(0, 60);
            self.run(d)?;
        }
        Ok(())
    }

    /// The slots `i` is expected to own, ascending.
    fn slots_of(&self, i: usize) -> Vec<u16> {
        (0..SLOTS as u16)
            .filter(|&s| self.owner[s as usize] == i)
            .collect()
    }

    /// Each node's view of the masters' configEpochs and of the first slot whose owner
    /// differs from the expected one, for failure reports.
    fn views(&self) -> String {
        let sim = &self.sim;
        let mut out = String::from("views (configEpoch of n0..n2; first unexpected owner):");
        for i in 0..sim.len() {
            let Some(n) = sim.node(i) else {
                out += &format!("\n  n{i}: down");
                continue;
            };
            let epochs: Vec<u64> = (0..3)
                .map(|m| n.node(sim.machine(m).id).map_or(0, |v| v.config_epoch))
                .collect();
            let bad = (0..SLOTS as u16).find(|&s| {
                n.slots().owner(s).and_then(|o| sim.index_of(o)) != Some(self.owner[s as usize])
            });
            let bad = bad.map(|s| {
                let got = n.slots().owner(s).and_then(|o| sim.index_of(o));
                format!(
                    "slot {s} owned by {got:?}, expected n{}",
                    self.owner[s as usize]
                )
            });
            out += &format!(
                "\n  n{i}: master {} currentEpoch {} configEpoch {} epochs {epochs:?} {}",
                n.is_master(),
                n.current_epoch(),
                n.config_epoch(),
                bad.unwrap_or_default()
            );
        }
        out
    }

    /// The end state: converged, as expected, nothing left MIGRATING/IMPORTING, C a
    /// replica of A (or of the master replica migration moved it to: with B's only
    /// replica crashed, A has C and two more, and C may move to the orphaned B).
    fn check_end(&mut self) -> Result<(), String> {
        if let Err(e) = self.sim.run_until_converged(30_000) {
            return Err(format!("{e}\n{}", self.views()));
        }
        let a = self.sim.machine(A).id;
        let c = self.sim.machine(C).id;
        let followed = |sim: &Sim| sim.node(C).and_then(|n| n.master()).unwrap_or(a);
        self.sim.run_until(
            10_000,
            "everyone sees C as a replica of the master C follows",
            |sim| {
                let m = followed(sim);
                (0..sim.len()).filter_map(|i| sim.node(i)).all(|n| {
                    n.node(c).is_some_and(|v| {
                        v.master == Some(m) && !v.flags.contains(crate::proto::NodeFlags::MASTER)
                    })
                })
            },
        )?;
        let sim = &self.sim;
        let cn = sim.node(C).ok_or("C is down")?;
        let master = cn.master().and_then(|m| sim.index_of(m));
        let migrated = master.is_some_and(|m| m != A && sim.masters().contains(&m));
        if cn.is_master() || (master != Some(A) && !migrated) {
            return Err(sim.fail(&format!(
                "emptied C is not a replica of A (nor of a master it migrated to): master {master:?}, is_master {}",
                cn.is_master()
            )));
        }
        for i in 0..sim.len() {
            let Some(n) = sim.node(i) else { continue };
            if let Some((s, to)) = n.slots().migrating().iter().next() {
                return Err(sim.fail(&format!(
                    "n{i} still has slot {s} MIGRATING to {:?}",
                    sim.index_of(*to)
                )));
            }
            if let Some((s, from)) = n.slots().importing().iter().next() {
                return Err(sim.fail(&format!(
                    "n{i} still has slot {s} IMPORTING from {:?}",
                    sim.index_of(*from)
                )));
            }
            for s in 0..SLOTS as u16 {
                let want = self.owner[s as usize];
                let got = n.slots().owner(s).and_then(|o| sim.index_of(o));
                if got != Some(want) {
                    return Err(sim.fail(&format!(
                        "n{i} sees slot {s} owned by {got:?}, expected n{want}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Most slots per mover call in [`slot_moves`]: a master sends its replicas every
/// MIGRATING/IMPORTING slot in each ping and pong (23 bytes each), and past about 2800
/// of them the message exceeds the codec's 64 KiB cap (see
/// [`slot_moves_whole_master_at_once`]).
const SLOTS_PER_CALL: usize = 2048;

fn slot_moves_scenario(seed: u64, per_call: usize) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0x0073_6c6f_746d_6f76);
    let mut sim = Sim::new(SimConfig::new(seed, 3, 1));
    sim.fence_migrating = std::env::var("LARDER_SIM_STRICT_WRITERS").is_err();
    sim.bootstrap()?;
    let lossless = rng.chance(0.5);
    if !lossless {
        sim.set_net(NetConfig::lossy());
    }
    let owner = (0..SLOTS)
        .map(|s| (0..3).find(|&m| s < SLOTS * (m + 1) / 3).unwrap_or(2))
        .collect();
    let mut mv = Moves {
        sim,
        rng,
        lossless,
        watch_leases: false,
        owner,
    };
    let d = mv.rng.range(0, 1000);
    mv.run(d)?;
    mv.sim.log(format!(
        "moves start ({})",
        if lossless { "lossless" } else { "lossy" }
    ));
    mv.watch_leases = true;
    // A replica that takes no part may crash during the moves (A's or B's).
    let crash = mv
        .rng
        .chance(0.3)
        .then(|| 3 + mv.rng.below(2) as usize)
        .map(|i| (i, mv.rng.below(4)));
    let crash_before = |mv: &mut Moves, k: u64| {
        if let Some((i, at)) = crash {
            if at == k {
                mv.sim.crash(i);
            }
        }
    };

    // 1. Half of A's slots to B.
    crash_before(&mut mv, 0);
    let a = mv.slots_of(A);
    let half = a[..a.len() / 2].to_vec();
    for call in half.chunks(per_call) {
        mv.move_slots(A, B, call)?;
    }
    let d = mv.rng.range(0, 500);
    mv.run(d)?;
    // 2. All of C's slots to A: C is emptied and turns replica of A.
    crash_before(&mut mv, 1);
    let c = mv.slots_of(C);
    for call in c.chunks(per_call) {
        mv.move_slots(C, A, call)?;
        let d = mv.rng.range(0, 500);
        mv.run(d)?;
    }
    // 3. Some of what B got back to A.
    crash_before(&mut mv, 2);
    let n = mv.rng.range(1, half.len() as u64) as usize;
    let back = half[half.len() - n..].to_vec();
    for call in back.chunks(per_call) {
        mv.move_slots(B, A, call)?;
    }
    // 4. Sometimes some of C's former slots on to B (A is a source again).
    if mv.rng.chance(0.5) {
        let d = mv.rng.range(0, 500);
        mv.run(d)?;
        crash_before(&mut mv, 3);
        let n = mv.rng.range(1, c.len() as u64) as usize;
        for call in c[..n].chunks(per_call) {
            mv.move_slots(A, B, call)?;
        }
    }
    let d = mv.rng.range(0, 300);
    mv.run(d)?;
    mv.watch_leases = false;
    if let Some((i, _)) = crash {
        if mv.sim.node(i).is_none() {
            mv.sim.restart(i)?;
        }
    }
    mv.sim.set_net(NetConfig::lan());
    mv.check_end()
}

/// 3 masters with 1 replica each; slots move A to B, C to A (emptying C), B to A and
/// sometimes A to B, under the sim's faults. See the module documentation.
#[test]
fn slot_moves() {
    run("slot_moves", |seed| {
        slot_moves_scenario(seed, SLOTS_PER_CALL)
    });
}

/// The same with each move made in one mover call, as `migrate_slots` allows: emptying
/// C puts its 5462 slots MIGRATING at once (and A's IMPORTING), and the pings and pongs
/// C and A send their replicas no longer encode (over the codec's 64 KiB cap; the real
/// driver logs the error and drops the message). Fails on every seed until the proto
/// bounds what it sends; run it with `--ignored`.
#[test]
#[ignore = "a move of more than ~2800 slots makes messages to replicas exceed the 64 KiB cap"]
fn slot_moves_whole_master_at_once() {
    run("slot_moves_whole_master_at_once", |seed| {
        slot_moves_scenario(seed, SLOTS)
    });
}

/// Seeds that left a stale owner before claims a slot's owner dropped became takeable:
/// a replica down across two moves (n4), and message loss with no crash (n2).
#[test]
fn slot_moves_stale_owner_seeds() {
    for seed in [7_288_707_563_474_517_695, 2_126_816_204_183_968_992] {
        if let Err(e) = slot_moves_scenario(seed, SLOTS_PER_CALL) {
            panic!("slot_moves_stale_owner_seeds failed with seed {seed}\n{e}");
        }
    }
}

/// The seed that found the gap on a master turned replica: C (n2) hands its last slots
/// to A and turns replica; B hears C's new role before A's claim of that group. When B
/// unassigned the slots (Redis's `clusterDelNodeSlots`), its cluster state was FAIL for
/// the 2 ms until the claim came, and the lossless lease check caught B unable to
/// write. They now stay bound to C, unclaimed, until the claim takes them.
#[test]
fn slot_moves_turned_replica_seed() {
    let seed = 4_350_273_523_730_244_377;
    if let Err(e) = slot_moves_scenario(seed, SLOTS_PER_CALL) {
        panic!("slot_moves_turned_replica_seed failed with seed {seed}\n{e}");
    }
}
