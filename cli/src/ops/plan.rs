//! Pure planning, no I/O: how `create` splits the slots, which slots `reshard` takes
//! from which masters, and what `rebalance` moves. Each follows redis-cli's
//! `--cluster` rules (noted per function), so a plan can be shown (`--simulate`),
//! tested and then carried out.

use larder::cluster::NodeId;

use super::SLOTS;

/// The slot ranges of `masters` masters at cluster creation: contiguous and as even as
/// possible, as redis-cli's `clusterManagerCommandCreate` computes them (a running
/// fractional cursor, each range ending at the rounded cursor, the last one at 16383).
///
/// ```
/// use larder_cli::ops::plan::allocate_slots;
/// assert_eq!(allocate_slots(3), vec![(0, 5460), (5461, 10922), (10923, 16383)]);
/// ```
pub fn allocate_slots(masters: usize) -> Vec<(u16, u16)> {
    if masters == 0 {
        return Vec::new();
    }
    let per = f64::from(SLOTS) / masters as f64;
    let mut out = Vec::with_capacity(masters);
    let mut first: i64 = 0;
    let mut cursor = 0.0f64;
    for i in 0..masters {
        let mut last = (cursor + per - 1.0).round() as i64;
        if last > i64::from(SLOTS) - 1 || i == masters - 1 {
            last = i64::from(SLOTS) - 1;
        }
        if last < first {
            last = first;
        }
        out.push((first as u16, last as u16));
        first = last + 1;
        cursor += per;
    }
    out
}

/// Assigns `replicas` replica nodes (given by their index) to `masters` masters
/// round-robin: replica `i` follows master `i % masters`. Returns, per replica, the
/// index of its master.
pub fn assign_replicas(masters: usize, replicas: usize) -> Vec<usize> {
    if masters == 0 {
        return Vec::new();
    }
    (0..replicas).map(|i| i % masters).collect()
}

/// A master as the planners see it: its id, the slots it serves (sorted ascending)
/// and its weight (1.0 unless `--weight` says otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct MasterSlots {
    /// The master.
    pub id: NodeId,
    /// The slots it serves, ascending.
    pub slots: Vec<u16>,
    /// Its share of the slots relative to the others (rebalance only).
    pub weight: f64,
}

impl MasterSlots {
    /// A master of weight 1.
    pub fn new(id: NodeId, mut slots: Vec<u16>) -> Self {
        slots.sort_unstable();
        slots.dedup();
        MasterSlots {
            id,
            slots,
            weight: 1.0,
        }
    }
}

/// One step of a plan: move `slots` (ascending) from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The master giving the slots.
    pub from: NodeId,
    /// The master receiving them.
    pub to: NodeId,
    /// The slots, ascending.
    pub slots: Vec<u16>,
}

/// Which slots to take from `sources` to move `count` slots in all, as redis-cli's
/// `clusterManagerComputeReshardTable`: sources with more slots first, each giving a
/// share proportional to its slot count (the first rounded up, the others down),
/// lowest-numbered slots first. Where redis-cli's rounding leaves the table short of
/// `count`, the remainder is taken from the sources in the same order, so the plan
/// always moves `min(count, slots held)` slots. Returns one `(source, slots)` per
/// source that gives any, in that order.
pub fn reshard_table(sources: &[MasterSlots], count: usize) -> Vec<(NodeId, Vec<u16>)> {
    let total: usize = sources.iter().map(|s| s.slots.len()).sum();
    let count = count.min(total);
    if count == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&MasterSlots> = sources.iter().filter(|s| !s.slots.is_empty()).collect();
    // Stable: equal counts keep the caller's order.
    sorted.sort_by_key(|s| std::cmp::Reverse(s.slots.len()));
    let mut taken: Vec<usize> = Vec::with_capacity(sorted.len());
    let mut moved = 0usize;
    for (i, s) in sorted.iter().enumerate() {
        let share = count as f64 / total as f64 * s.slots.len() as f64;
        let share = if i == 0 { share.ceil() } else { share.floor() } as usize;
        let n = share.min(s.slots.len()).min(count - moved);
        taken.push(n);
        moved += n;
    }
    // Rounding down may leave a few slots: take them in the same order.
    let mut i = 0;
    while moved < count {
        if taken[i] < sorted[i].slots.len() {
            taken[i] += 1;
            moved += 1;
        }
        i = (i + 1) % sorted.len();
    }
    sorted
        .iter()
        .zip(taken)
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.id, s.slots[..n].to_vec()))
        .collect()
}

/// What `rebalance` would do.
#[derive(Clone, Debug, PartialEq)]
pub enum RebalancePlan {
    /// Every master is within the threshold: nothing to move.
    Balanced {
        /// The largest deviation found, in percent of a master's expected slots.
        worst_pct: f64,
    },
    /// Moves to make, in order.
    Moves {
        /// Masters taking part (slot-less masters only with `use_empty_masters`).
        nodes: usize,
        /// Their total weight.
        total_weight: f64,
        /// The moves.
        moves: Vec<Move>,
    },
}

/// Plans a rebalance, as redis-cli's `clusterManagerCommandRebalance`:
///
/// - masters without slots take part only with `use_empty_masters` (otherwise their
///   weight is 0 and they are left alone);
/// - each master should hold `floor(16384 / total_weight * weight)` slots; its
///   *balance* is what it holds minus that;
/// - if no master is off by more than `threshold_pct` percent of what it holds (a
///   master with no slots and more than one expected is always off), nothing moves.
///   A threshold of 0 means any difference counts (redis-cli would do nothing);
/// - rounding leaves the balances summing to more than 0: masters at or below their
///   share are lowered one by one until the sum is 0;
/// - masters are sorted by balance (ties by id); the most negative receives from the
///   most positive, `min(|balance|)` slots at a time, each taken lowest-numbered first
///   from the giver's slots, until every balance is 0.
///
/// A master with weight 0 gives away every slot (how `del-node` candidates are
/// drained with `--weight <id>=0`).
pub fn plan_rebalance(
    masters: &[MasterSlots],
    threshold_pct: f64,
    use_empty_masters: bool,
) -> RebalancePlan {
    struct N {
        id: NodeId,
        slots: Vec<u16>,
        balance: i64,
    }
    let involved: Vec<&MasterSlots> = masters
        .iter()
        .filter(|m| use_empty_masters || !m.slots.is_empty())
        .collect();
    let total_weight: f64 = involved.iter().map(|m| m.weight).sum();
    if involved.is_empty() || total_weight <= 0.0 {
        return RebalancePlan::Balanced { worst_pct: 0.0 };
    }
    let mut nodes: Vec<N> = Vec::with_capacity(involved.len());
    let mut total_balance: i64 = 0;
    let mut over = false;
    let mut worst_pct = 0.0f64;
    for m in &involved {
        let expected = (f64::from(SLOTS) / total_weight * m.weight) as i64;
        let held = m.slots.len() as i64;
        let balance = held - expected;
        total_balance += balance;
        if held > 0 {
            let pct = (100.0 - 100.0 * expected as f64 / held as f64).abs();
            worst_pct = worst_pct.max(pct);
            if pct > threshold_pct || (threshold_pct <= 0.0 && balance != 0) {
                over = true;
            }
        } else if expected > 1 || (threshold_pct <= 0.0 && expected > 0) {
            worst_pct = 100.0f64.max(worst_pct);
            over = true;
        }
        nodes.push(N {
            id: m.id,
            slots: m.slots.clone(),
            balance,
        });
    }
    if !over {
        return RebalancePlan::Balanced { worst_pct };
    }
    while total_balance > 0 {
        for n in nodes.iter_mut() {
            if n.balance <= 0 && total_balance > 0 {
                n.balance -= 1;
                total_balance -= 1;
            }
        }
    }
    nodes.sort_by(|a, b| a.balance.cmp(&b.balance).then(a.id.cmp(&b.id)));
    let mut moves = Vec::new();
    let (mut dst, mut src) = (0usize, nodes.len() - 1);
    while dst < src {
        let need = nodes[dst].balance.unsigned_abs();
        let give = nodes[src].balance.unsigned_abs();
        let n = need.min(give) as usize;
        if n > 0 {
            let take = n.min(nodes[src].slots.len());
            let slots: Vec<u16> = nodes[src].slots.drain(..take).collect();
            let to = nodes[dst].id;
            nodes[dst].slots.extend_from_slice(&slots);
            moves.push(Move {
                from: nodes[src].id,
                to,
                slots,
            });
        }
        nodes[dst].balance += n as i64;
        nodes[src].balance -= n as i64;
        if nodes[dst].balance == 0 {
            dst += 1;
        }
        if nodes[src].balance == 0 {
            src -= 1;
        }
    }
    RebalancePlan::Moves {
        nodes: involved.len(),
        total_weight,
        moves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 20])
    }

    fn range(a: u16, b: u16) -> Vec<u16> {
        (a..=b).collect()
    }

    /// Applies a plan to the masters and returns the slot counts after it.
    fn apply(masters: &[MasterSlots], moves: &[Move]) -> Vec<(NodeId, usize)> {
        let mut held: Vec<(NodeId, Vec<u16>)> =
            masters.iter().map(|m| (m.id, m.slots.clone())).collect();
        for mv in moves {
            let from = held.iter_mut().find(|(i, _)| *i == mv.from).unwrap();
            for s in &mv.slots {
                let at = from
                    .1
                    .iter()
                    .position(|x| x == s)
                    .expect("giver holds the slot");
                from.1.remove(at);
            }
            let to = held.iter_mut().find(|(i, _)| *i == mv.to).unwrap();
            to.1.extend_from_slice(&mv.slots);
        }
        held.into_iter().map(|(i, s)| (i, s.len())).collect()
    }

    #[test]
    fn allocation_covers_every_slot_once() {
        for n in 1..=20 {
            let r = allocate_slots(n);
            assert_eq!(r.len(), n);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[n - 1].1, SLOTS - 1);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
            let sizes: Vec<u16> = r.iter().map(|(a, b)| b - a + 1).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n}: {sizes:?}");
        }
        // redis-cli's split of 16384 in 3 and 4.
        assert_eq!(
            allocate_slots(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
        assert_eq!(
            allocate_slots(4),
            vec![(0, 4095), (4096, 8191), (8192, 12287), (12288, 16383)]
        );
    }

    #[test]
    fn replicas_round_robin() {
        assert_eq!(assign_replicas(3, 4), vec![0, 1, 2, 0]);
        assert!(assign_replicas(0, 2).is_empty());
    }

    #[test]
    fn reshard_table_is_proportional_and_exact() {
        let a = MasterSlots::new(id(1), range(0, 5460));
        let b = MasterSlots::new(id(2), range(5461, 10922));
        let c = MasterSlots::new(id(3), range(10923, 16383));
        let t = reshard_table(&[a.clone(), b.clone(), c.clone()], 100);
        let total: usize = t.iter().map(|(_, s)| s.len()).sum();
        assert_eq!(total, 100);
        // b has the most slots (5462): first, rounded up; lowest-numbered first.
        assert_eq!(t[0].0, id(2));
        assert_eq!(t[0].1[0], 5461);
        assert_eq!(t[0].1.len(), 34);
        assert!(t.iter().all(|(_, s)| (33..=34).contains(&s.len())), "{t:?}");
        // Equal counts keep the given order.
        assert_eq!((t[1].0, t[1].1[0]), (id(1), 0));
        assert_eq!((t[2].0, t[2].1[0]), (id(3), 10923));
        // One source: exactly its lowest slots.
        let t = reshard_table(std::slice::from_ref(&b), 3);
        assert_eq!(t, vec![(id(2), vec![5461, 5462, 5463])]);
        // More than held: everything.
        let small = MasterSlots::new(id(4), vec![7, 9]);
        assert_eq!(reshard_table(&[small], 10), vec![(id(4), vec![7, 9])]);
        assert!(reshard_table(&[], 10).is_empty());
        // Uneven sources where floor() would leave the table short.
        let srcs = [
            MasterSlots::new(id(1), range(0, 9)),
            MasterSlots::new(id(2), range(10, 19)),
            MasterSlots::new(id(3), range(20, 29)),
        ];
        let t = reshard_table(&srcs, 8);
        assert_eq!(t.iter().map(|(_, s)| s.len()).sum::<usize>(), 8);
    }

    #[test]
    fn rebalance_equal_shares_onto_an_empty_master() {
        let masters = [
            MasterSlots::new(id(1), range(0, 5460)),
            MasterSlots::new(id(2), range(5461, 10922)),
            MasterSlots::new(id(3), range(10923, 16383)),
            MasterSlots::new(id(4), vec![]),
        ];
        // Without --use-empty-masters the empty one is left out: already balanced.
        assert!(matches!(
            plan_rebalance(&masters, 2.0, false),
            RebalancePlan::Balanced { .. }
        ));
        let RebalancePlan::Moves {
            nodes,
            total_weight,
            moves,
        } = plan_rebalance(&masters, 2.0, true)
        else {
            panic!("expected moves");
        };
        assert_eq!((nodes, total_weight), (4, 4.0));
        assert!(moves.iter().all(|m| m.to == id(4)));
        let after = apply(&masters, &moves);
        for (_, n) in &after {
            assert!((4095..=4097).contains(n), "{after:?}");
        }
        assert_eq!(after.iter().map(|(_, n)| n).sum::<usize>(), 16384);
        // Lowest-numbered slots of each giver first.
        let from1 = moves.iter().find(|m| m.from == id(1)).unwrap();
        assert_eq!(from1.slots[0], 0);
    }

    #[test]
    fn rebalance_by_weight() {
        let mut masters = [
            MasterSlots::new(id(1), range(0, 8191)),
            MasterSlots::new(id(2), range(8192, 16383)),
        ];
        masters[0].weight = 3.0;
        let RebalancePlan::Moves { moves, .. } = plan_rebalance(&masters, 2.0, false) else {
            panic!("expected moves");
        };
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].from, id(2));
        let after = apply(&masters, &moves);
        assert_eq!(after, vec![(id(1), 12288), (id(2), 4096)]);
        // Weight 0 drains a master completely.
        masters[0].weight = 1.0;
        masters[1].weight = 0.0;
        let RebalancePlan::Moves { moves, .. } = plan_rebalance(&masters, 2.0, false) else {
            panic!("expected moves");
        };
        assert_eq!(apply(&masters, &moves), vec![(id(1), 16384), (id(2), 0)]);
    }

    #[test]
    fn rebalance_threshold() {
        // 5% off each way: within a 10% threshold, over a 2% one.
        let masters = [
            MasterSlots::new(id(1), range(0, 8601)),
            MasterSlots::new(id(2), range(8602, 16383)),
        ];
        match plan_rebalance(&masters, 10.0, false) {
            RebalancePlan::Balanced { worst_pct } => assert!(worst_pct > 2.0 && worst_pct < 10.0),
            p => panic!("{p:?}"),
        }
        let RebalancePlan::Moves { moves, .. } = plan_rebalance(&masters, 2.0, false) else {
            panic!("expected moves");
        };
        assert_eq!(apply(&masters, &moves), vec![(id(1), 8192), (id(2), 8192)]);
        // Perfectly balanced: nothing to do even at threshold 0.
        let even = [
            MasterSlots::new(id(1), range(0, 8191)),
            MasterSlots::new(id(2), range(8192, 16383)),
        ];
        assert!(matches!(
            plan_rebalance(&even, 0.0, false),
            RebalancePlan::Balanced { .. }
        ));
        // A one-slot difference counts at threshold 0 only.
        let off = [
            MasterSlots::new(id(1), range(0, 8192)),
            MasterSlots::new(id(2), range(8193, 16383)),
        ];
        assert!(matches!(
            plan_rebalance(&off, 2.0, false),
            RebalancePlan::Balanced { .. }
        ));
        let RebalancePlan::Moves { moves, .. } = plan_rebalance(&off, 0.0, false) else {
            panic!("expected moves");
        };
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].slots, vec![0]);
    }

    #[test]
    fn rebalance_rounding_never_loses_a_slot() {
        // 16384 / 3 is not whole: the plan still moves whole slots and conserves them.
        let masters = [
            MasterSlots::new(id(1), range(0, 16383)),
            MasterSlots::new(id(2), vec![]),
            MasterSlots::new(id(3), vec![]),
        ];
        let RebalancePlan::Moves { moves, .. } = plan_rebalance(&masters, 2.0, true) else {
            panic!("expected moves");
        };
        let after = apply(&masters, &moves);
        assert_eq!(after.iter().map(|(_, n)| n).sum::<usize>(), 16384);
        for (_, n) in &after {
            assert!((5461..=5462).contains(n), "{after:?}");
        }
    }
}
