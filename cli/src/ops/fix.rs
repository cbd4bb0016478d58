//! `fix`: closes open slots, covers unassigned slots, hands keys left where they do
//! not belong to their slot's owner (redis-cli's `--cluster fix`, with the rules of
//! larder's slot mover).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use larder::cluster::admin_wire::{to_ranges, AdminRequest, SlotState};

use super::check::{check, importing_slots, load_key_counts, served_slots, CheckReport};
use super::migrate::{wait_owners, MoveOptions};
use super::plan::Move;
use super::view::ClusterView;
use super::{format_ranges, short, Admin, AdminError, NodeId, OpsError, SLOTS};

/// What [`fix`] did and how the cluster looks afterwards.
#[derive(Clone, Debug)]
pub struct FixReport {
    /// One line per action taken (or attempted and failed, prefixed `[WARN]`).
    pub actions: Vec<String>,
    /// A check made after the actions (waited for, up to the limits, to be healthy).
    pub after: CheckReport,
}

/// Fixes the cluster of the node at `addr`:
///
/// 1. **Open slots.** Planned from a fresh view in rounds until none is open or
///    `opts.limits.wait` has passed (a node that answered too slowly for one round,
///    or a restarted node that had not yet learnt of a failover, is seen as it is
///    in the next; stale owners are corrected between rounds, see 2b). For each slot
///    MIGRATING on A to B or IMPORTING on B from A: if A
///    and B both answer and A still serves the slot, the move is resumed
///    (`migrate_slots(A, B, slot)`: the keys still on A are sent again, A's copy
///    being the authoritative one); if B is gone, A's MIGRATING is cleared (rolled
///    back); if A is gone or no longer serves the slot, B's IMPORTING (and A's
///    MIGRATING, if A answers) is cleared.
/// 2. **Unassigned slots** go to the master holding keys of them (the most keys), or
///    else to the master with the fewest slots. (2b) A node whose table names
///    another owner than the only master claiming a slot is told the owner.
/// 3. **Keys in slots a node does not serve** (copies of a batch whose delete on the
///    source never happened, or of a rolled-back import) go to the slot's owner,
///    which keeps its own copy where it has one, and are then deleted from the node
///    (`DropSlotKeys`). Only masters are asked: a replica's copies go with its
///    master's deletes (a replica's own strays stay in the check).
///
/// Then checks the cluster (if anything was done, waiting up to `opts.limits.wait`
/// for the check to be healthy) and returns the check with the actions;
/// `after.healthy()` is `larder-cli fix`'s exit 0. What `fix` cannot repair (a
/// master that does not answer, nodes that disagree) stays in the check.
pub async fn fix(
    admin: &Admin,
    addr: SocketAddr,
    opts: &MoveOptions,
    log: &mut dyn FnMut(&str),
) -> Result<FixReport, OpsError> {
    let mut actions = Vec::new();
    let mut act = |line: String, log: &mut dyn FnMut(&str)| {
        log(&line);
        actions.push(line);
    };

    // 1. Open slots. Planned from a fresh view every round until none is left (or
    // the wait runs out): a plan made while a node answered slowly (a busy machine)
    // or before a restarted node learnt of a failover would otherwise be acted on
    // for the whole wait (resuming a move from a source that no longer serves the
    // slot, say), and never revisited.
    let start = tokio::time::Instant::now();
    let mut resumed: Vec<Move> = Vec::new();
    let mut announced: Vec<String> = Vec::new();
    let mut rounds = 0u32;
    loop {
        let view = ClusterView::load(admin, addr).await?;
        let plan = plan_open_slots(&view);
        if plan.is_empty() {
            if rounds == 0 {
                log(">>> No open slots.");
            }
            break;
        }
        rounds += 1;
        let name = |id: &NodeId| view.node(*id).map_or(short(id), |n| n.addr.clone());
        let mut failures: Vec<String> = Vec::new();
        for step in plan {
            match step {
                OpenSlotFix::Resume { from, to, slots } => {
                    let ranges = format_ranges(&to_ranges(slots.iter().copied()));
                    let (a, b) = (name(&from), name(&to));
                    let line = format!(">>> Resuming the move of slots {ranges} from {a} to {b}");
                    if !announced.contains(&line) {
                        log(&line);
                        announced.push(line);
                    }
                    let src = view.node(from).expect("planned from the view").sock()?;
                    match resume_move(admin, src, to, &slots, opts).await {
                        Ok((keys, n)) => {
                            act(
                                format!(
                                    "resumed the move of slots {ranges} from {a} to {b}: {n} \
                                     slot(s) handed over, {keys} key(s) moved"
                                ),
                                log,
                            );
                            resumed.push(Move { from, to, slots });
                        }
                        Err(e) => failures.push(format!(
                            "resuming the move of slots {ranges} from {a} to {b} failed: {e}"
                        )),
                    }
                }
                OpenSlotFix::Stable { node, slots, why } => {
                    let ranges = format_ranges(&to_ranges(slots.iter().copied()));
                    let sock = view.node(node).expect("planned from the view").sock()?;
                    let mut failed = None;
                    for &s in &slots {
                        if let Err(e) = admin
                            .ok(sock, &AdminRequest::SetSlot(s, SlotState::Stable))
                            .await
                        {
                            failed = Some(e);
                            break;
                        }
                    }
                    let n = name(&node);
                    match failed {
                        None => act(format!("set slots {ranges} stable on {n} ({why})"), log),
                        Some(e) => failures
                            .push(format!("setting slots {ranges} stable on {n} failed: {e}")),
                    }
                }
            }
        }
        if start.elapsed() >= opts.limits.wait {
            for f in failures {
                act(format!("[WARN] {f}"), log);
            }
            break;
        }
        // Whether or not everything succeeded, the next round's view says what is
        // still open (a node that did not answer this time may answer next time).
        tokio::time::sleep(opts.limits.poll).await;
        if !failures.is_empty() {
            // A target whose table names a stale owner of a slot (it was importing
            // the slot from a master that failed over meanwhile) counts the slot as
            // uncovered and refuses the move (CLUSTERDOWN) until it is told.
            for line in correct_stale_owners(admin, addr).await? {
                act(line, log);
            }
        }
    }
    if !resumed.is_empty() {
        let view = ClusterView::load(admin, addr).await?;
        wait_owners(admin, &view, &resumed, opts).await?;
    }

    // 2. Unassigned slots.
    let view = ClusterView::load(admin, addr).await?;
    let counts = load_key_counts(admin, &view).await;
    let owners = view.owners();
    let unassigned: Vec<u16> = (0..SLOTS)
        .filter(|&s| owners[usize::from(s)].is_none())
        .collect();
    if !unassigned.is_empty() {
        let masters: Vec<_> = view.masters().filter(|m| m.reachable()).collect();
        if masters.is_empty() {
            return Err(OpsError::Failed(
                "no reachable master to give unassigned slots to".into(),
            ));
        }
        let mut held: BTreeMap<NodeId, usize> = masters
            .iter()
            .map(|m| (m.id, super::count_slots(m.slots())))
            .collect();
        let keys_in = |node: NodeId, s: u16| -> u64 {
            counts
                .iter()
                .find(|(id, _)| *id == node)
                .and_then(|(_, c)| c.as_ref().ok())
                .and_then(|c| c.iter().find(|(slot, _)| *slot == s).map(|(_, k)| *k))
                .unwrap_or(0)
        };
        let mut give: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
        let mut run_owner: Option<NodeId> = None;
        let mut prev: Option<u16> = None;
        for &s in &unassigned {
            if prev.is_none_or(|p| p + 1 != s) {
                run_owner = None;
            }
            prev = Some(s);
            let with_keys = masters
                .iter()
                .map(|m| (keys_in(m.id, s), m.id))
                .filter(|(k, _)| *k > 0)
                .max();
            let to = match with_keys {
                Some((_, id)) => id,
                None => *run_owner.get_or_insert_with(|| {
                    *held
                        .iter()
                        .min_by_key(|(id, n)| (**n, **id))
                        .map(|(id, _)| id)
                        .expect("a master")
                }),
            };
            *held.entry(to).or_default() += 1;
            give.entry(to).or_default().push(s);
        }
        let mut moves = Vec::new();
        for (to, slots) in give {
            let node = view.node(to).expect("a master of the view");
            let ranges = to_ranges(slots.iter().copied());
            match admin
                .ok(node.sock()?, &AdminRequest::AddSlots(ranges.clone()))
                .await
            {
                Ok(()) => {
                    act(
                        format!(
                            "assigned unassigned slots {} to {}",
                            format_ranges(&ranges),
                            node.addr
                        ),
                        log,
                    );
                    moves.push(Move {
                        from: to,
                        to,
                        slots,
                    });
                }
                Err(e) => act(
                    format!(
                        "[WARN] assigning slots {} to {} failed: {e}",
                        format_ranges(&ranges),
                        node.addr
                    ),
                    log,
                ),
            }
        }
        if !moves.is_empty() {
            wait_owners(admin, &view, &moves, opts).await?;
        }
    } else {
        log(">>> All 16384 slots are assigned.");
    }

    // 2b. Stale owners (see `correct_stale_owners`).
    for line in correct_stale_owners(admin, addr).await? {
        act(line, log);
    }

    // 3. Keys where they do not belong. A node hands its strays to the owner its own
    // table names, and a node that was importing a slot ignores news of its owner
    // until the import is closed: so first wait until every node agrees on the
    // owners, and retry refusals (bounded) while the cluster converges.
    let start = tokio::time::Instant::now();
    let mut stray_found = false;
    loop {
        let view = ClusterView::load(admin, addr).await?;
        if let Err(why) = view.agreement() {
            if start.elapsed() < opts.limits.wait {
                tokio::time::sleep(opts.limits.poll).await;
                continue;
            }
            act(
                format!("[WARN] misplaced keys left alone: the nodes disagree ({why})"),
                log,
            );
            break;
        }
        let counts = load_key_counts(admin, &view).await;
        let mut failures: Vec<(String, u16, AdminError)> = Vec::new();
        for (id, c) in &counts {
            let (Some(n), Ok(c)) = (view.node(*id), c) else {
                continue;
            };
            // A replica refuses DropSlotKeys: its copies follow its master's (the
            // master's hand-over deletes are replicated to it).
            if !n.is_master() {
                continue;
            }
            let served = served_slots(&view, n);
            let importing = importing_slots(&view, n);
            let stray: Vec<u16> = c
                .iter()
                .filter(|&&(s, k)| k > 0 && !served[usize::from(s)] && !importing.contains(&s))
                .map(|&(s, _)| s)
                .collect();
            if stray.is_empty() {
                continue;
            }
            stray_found = true;
            let sock = n.sock()?;
            let mut handed = 0u64;
            let mut done = Vec::new();
            for &s in &stray {
                match admin.drop_slot_keys(sock, s).await {
                    Ok(k) => {
                        handed += k;
                        done.push(s);
                    }
                    Err(e) => failures.push((n.addr.clone(), s, e)),
                }
            }
            if !done.is_empty() {
                act(
                    format!(
                        "handed {handed} key(s) of slots {} held by {} ({}), which does not \
                         serve them, to their owner",
                        format_ranges(&to_ranges(done)),
                        n.addr,
                        short(&n.id)
                    ),
                    log,
                );
            }
        }
        if failures.is_empty() {
            break;
        }
        if start.elapsed() >= opts.limits.wait {
            for (a, s, e) in failures {
                act(
                    format!(
                        "[WARN] handing the keys of slot {s} held by {a} to its owner failed: {e}"
                    ),
                    log,
                );
            }
            break;
        }
        tokio::time::sleep(opts.limits.poll).await;
    }
    if !stray_found {
        log(">>> No keys in slots their node does not serve.");
    }

    // Then a check; after changes, waited for (bounded) to be healthy while the
    // cluster converges.
    let start = tokio::time::Instant::now();
    let after = loop {
        let r = check(admin, addr).await?;
        if r.healthy() || actions.is_empty() || start.elapsed() >= opts.limits.wait {
            break r;
        }
        tokio::time::sleep(opts.limits.poll).await;
    };
    Ok(FixReport { actions, after })
}

/// What `fix` does about a group of open slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenSlotFix {
    /// Move `slots` again from `from` (which still serves them) to `to`.
    Resume {
        /// The source, MIGRATING.
        from: NodeId,
        /// The target, IMPORTING.
        to: NodeId,
        /// The slots, ascending.
        slots: Vec<u16>,
    },
    /// Clear MIGRATING/IMPORTING of `slots` on `node`.
    Stable {
        /// The node.
        node: NodeId,
        /// The slots, ascending.
        slots: Vec<u16>,
        /// Why (rolled back, or closed after the hand-over).
        why: String,
    },
}

/// Decides what to do about every open slot of a loaded cluster (no I/O), by the
/// rules of larder's slot mover. For a slot MIGRATING on A to B and/or IMPORTING on
/// B from A, with the slot's owner taken from the masters' own claims:
///
/// - A serves it, A and B (a master) answer: **resume** the move;
/// - A serves it and answers, B does not: **roll back** (A's MIGRATING cleared; B
///   keeps IMPORTING until it is back, when the next `fix` closes it);
/// - A does not serve it (the hand-over happened, or A failed over) or does not
///   answer: **close** it (B's IMPORTING and A's MIGRATING cleared where they
///   answer). B's copies of a slot it does not serve are then handed to the owner
///   by `fix`'s misplaced-key step (the owner's own copies win).
///
/// A node that does not answer cannot say what it has open: its side is dealt with
/// by a `fix` after it is back.
pub fn plan_open_slots(view: &ClusterView) -> Vec<OpenSlotFix> {
    // (source, target) -> slot -> (MIGRATING on the source, IMPORTING on the target)
    let mut open: BTreeMap<(NodeId, NodeId), BTreeMap<u16, (bool, bool)>> = BTreeMap::new();
    for n in &view.nodes {
        let Ok(v) = &n.view else { continue };
        for &(s, t) in &v.migrating {
            open.entry((n.id, NodeId(t)))
                .or_default()
                .entry(s)
                .or_default()
                .0 = true;
        }
        for &(s, f) in &v.importing {
            open.entry((NodeId(f), n.id))
                .or_default()
                .entry(s)
                .or_default()
                .1 = true;
        }
    }
    let owners = view.owners();
    let up = |id: NodeId| view.node(id).is_some_and(|n| n.reachable());
    let name = |id: NodeId| view.node(id).map_or(short(&id), |n| n.addr.clone());
    let mut out = Vec::new();
    for ((a, b), slots) in open {
        let a_up = up(a);
        let b_up = up(b);
        let b_master = view.node(b).is_some_and(|n| n.reachable() && n.is_master());
        let mut resume = Vec::new();
        let mut stable_a = Vec::new();
        let mut stable_b = Vec::new();
        for (s, (mig, imp)) in slots {
            let a_owns = owners[usize::from(s)] == Some(a);
            if a_owns && a_up && b_master {
                resume.push(s);
            } else if a_owns && a_up {
                if mig {
                    stable_a.push(s);
                }
            } else {
                if imp && b_up {
                    stable_b.push(s);
                }
                if mig && a_up {
                    stable_a.push(s);
                }
            }
        }
        if !resume.is_empty() {
            out.push(OpenSlotFix::Resume {
                from: a,
                to: b,
                slots: resume,
            });
        }
        if !stable_a.is_empty() {
            let why = if owners[usize::from(stable_a[0])] == Some(a) {
                format!("rolled back: {} cannot take them", name(b))
            } else {
                format!("closed: {} no longer serves them", name(a))
            };
            out.push(OpenSlotFix::Stable {
                node: a,
                slots: stable_a,
                why,
            });
        }
        if !stable_b.is_empty() {
            out.push(OpenSlotFix::Stable {
                node: b,
                slots: stable_b,
                why: format!(
                    "closed: {} no longer serves them or does not answer",
                    name(a)
                ),
            });
        }
    }
    out
}

/// Stale owners: a node that heard a later configEpoch bump of a slot's previous
/// owner before the new owner's claim keeps the previous owner for good (the new
/// owner's claim carries an older epoch); so does a node that was importing the slot
/// while its owner changed (it ignores news of the owner until the import is closed).
/// The masters' own claims are the truth where exactly one master claims a slot:
/// tell the others (SETSLOT NODE, as redis-cli's fix does). Returns one line per
/// correction (failed ones prefixed `[WARN]`).
async fn correct_stale_owners(admin: &Admin, addr: SocketAddr) -> Result<Vec<String>, OpsError> {
    let mut lines = Vec::new();
    let view = ClusterView::load(admin, addr).await?;
    let mut claimers: Vec<Vec<NodeId>> = vec![Vec::new(); usize::from(SLOTS)];
    for m in view.nodes.iter().filter(|n| n.reachable() && n.is_master()) {
        for slot in super::expand(m.slots()) {
            claimers[usize::from(slot)].push(m.id);
        }
    }
    for n in view.nodes.iter().filter(|n| n.reachable()) {
        let Ok(v) = &n.view else { continue };
        let owners = super::view::owner_map(v);
        let mut wrong: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
        for slot in 0..SLOTS {
            let i = usize::from(slot);
            if let [only] = claimers[i].as_slice() {
                if owners[i] != Some(only.0) {
                    wrong.entry(*only).or_default().push(slot);
                }
            }
        }
        for (owner, slots) in wrong {
            let ranges = to_ranges(slots.iter().copied());
            let line = match admin
                .ok(
                    n.sock()?,
                    &AdminRequest::SetSlots(ranges.clone(), SlotState::Node(owner.0)),
                )
                .await
            {
                Ok(()) => format!(
                    "told {} that {} serves slots {} (its table named another owner)",
                    n.addr,
                    short(&owner),
                    format_ranges(&ranges)
                ),
                Err(e) => format!(
                    "[WARN] correcting {}'s owner of slots {} failed: {e}",
                    n.addr,
                    format_ranges(&ranges)
                ),
            };
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Resumes moving `slots` from the node at `src` to `to`, once (each request bounded
/// by `opts.call_timeout`). A refusal (the source still sees the target failing, a
/// restarted node being cleared after a while; or cannot reach it) is retried by
/// [`fix`]'s next round, planned from a fresh view.
async fn resume_move(
    admin: &Admin,
    src: SocketAddr,
    to: NodeId,
    slots: &[u16],
    opts: &MoveOptions,
) -> Result<(u64, u32), OpsError> {
    let mut keys = 0u64;
    let mut moved = 0u32;
    for chunk in slots.chunks(opts.slots_per_call.max(1)) {
        let ranges = to_ranges(chunk.iter().copied());
        let m = match tokio::time::timeout(
            opts.call_timeout,
            admin.migrate_slots(src, to, ranges, opts.batch),
        )
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(OpsError::during("the source", src, e)),
            Err(_) => {
                return Err(OpsError::Failed(format!(
                    "the source ({src}) did not answer within {:?}",
                    opts.call_timeout
                )))
            }
        };
        keys += m.keys;
        moved += m.slots;
    }
    Ok((keys, moved))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{id, master, view};
    use super::*;

    fn both_open(slot: u16) -> Vec<super::super::testing::Spec> {
        let mut a = master(1, &[(0, 99)]);
        let mut b = master(2, &[(100, 199)]);
        let c = master(3, &[(200, 16383)]);
        a.migrating = vec![(slot, 2)];
        b.importing = vec![(slot, 1)];
        vec![a, b, c]
    }

    #[test]
    fn open_slots_resume_when_both_sides_answer() {
        let v = view(&both_open(5));
        assert_eq!(
            plan_open_slots(&v),
            vec![OpenSlotFix::Resume {
                from: id(1),
                to: id(2),
                slots: vec![5]
            }]
        );
        // Only IMPORTING left (the source had not set MIGRATING yet): resumed too.
        let mut specs = both_open(5);
        specs[0].migrating.clear();
        let p = plan_open_slots(&view(&specs));
        assert!(matches!(&p[..], [OpenSlotFix::Resume { .. }]), "{p:?}");
    }

    #[test]
    fn open_slots_roll_back_without_the_target() {
        let mut specs = both_open(5);
        specs[1].reachable = false;
        let p = plan_open_slots(&view(&specs));
        match &p[..] {
            [OpenSlotFix::Stable { node, slots, why }] => {
                assert_eq!((*node, slots.as_slice()), (id(1), &[5][..]));
                assert!(why.contains("rolled back"), "{why}");
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn open_slots_close_without_the_source_or_after_the_hand_over() {
        // The source does not answer: the target's IMPORTING is closed.
        let mut specs = both_open(5);
        specs[0].reachable = false;
        let p = plan_open_slots(&view(&specs));
        assert!(
            matches!(&p[..], [OpenSlotFix::Stable { node, .. }] if *node == id(2)),
            "{p:?}"
        );
        // The target already took the slot: both sides closed.
        let mut specs = both_open(5);
        specs[0].slots = vec![(0, 4), (6, 99)];
        specs[1].slots = vec![(5, 5), (100, 199)];
        let p = plan_open_slots(&view(&specs));
        let nodes: Vec<NodeId> = p
            .iter()
            .map(|f| match f {
                OpenSlotFix::Stable { node, .. } => *node,
                f => panic!("{f:?}"),
            })
            .collect();
        assert_eq!(nodes, vec![id(1), id(2)]);
        // Nothing open, nothing to do.
        let p = plan_open_slots(&view(&[master(1, &[(0, 16383)])]));
        assert!(p.is_empty());
    }
}
