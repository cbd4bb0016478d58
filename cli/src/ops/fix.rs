//! `fix`: closes open slots, covers unassigned slots, drops keys left where they do
//! not belong (redis-cli's `--cluster fix`, with the rules of larder's slot mover).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use larder::cluster::admin_wire::{to_ranges, AdminRequest, SlotState};

use super::check::{check, load_key_counts, served_slots, CheckReport};
use super::migrate::{all_see_owners, MoveOptions};
use super::plan::Move;
use super::view::ClusterView;
use super::{format_ranges, short, wait_until, Admin, AdminError, NodeId, OpsError, SLOTS};

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
/// 1. **Open slots.** For each slot MIGRATING on A to B or IMPORTING on B from A: if A
///    and B both answer and A still serves the slot, the move is resumed
///    (`migrate_slots(A, B, slot)`: the keys still on A are sent again, A's copy
///    being the authoritative one); if B is gone, A's MIGRATING is cleared (rolled
///    back); if A is gone or no longer serves the slot, B's IMPORTING (and A's
///    MIGRATING, if A answers) is cleared.
/// 2. **Unassigned slots** go to the master holding keys of them (the most keys), or
///    else to the master with the fewest slots.
/// 3. **Keys in slots a node does not serve** (copies of a batch whose delete on the
///    source never happened, or of a rolled-back import) are dropped
///    (`DropSlotKeys`).
///
/// Then waits (up to `opts.limits.wait`) for a healthy [`check`] and returns it with
/// the actions; `after.healthy()` is `larder-cli fix`'s exit 0.
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

    // 1. Open slots.
    let view = ClusterView::load(admin, addr).await?;
    let owners = view.owners();
    // (source, target) -> slot -> (migrating on source, importing on target)
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
    if open.is_empty() {
        log(">>> No open slots.");
    }
    let mut resumed: Vec<Move> = Vec::new();
    for ((a, b), slots) in &open {
        let an = view.node(*a).filter(|n| n.reachable());
        let bn = view.node(*b).filter(|n| n.reachable() && n.is_master());
        let mut resume = Vec::new();
        let mut stable_a = Vec::new();
        let mut stable_b = Vec::new();
        for (&s, &(mig, imp)) in slots {
            let owner = owners[usize::from(s)];
            if owner == Some(*a) && an.is_some() && bn.is_some() {
                resume.push(s);
            } else if owner == Some(*a) && an.is_some() {
                // The target is gone: roll back on the source.
                if mig {
                    stable_a.push(s);
                }
            } else {
                // The source is gone or no longer serves the slot.
                if imp && view.node(*b).is_some_and(|n| n.reachable()) {
                    stable_b.push(s);
                }
                if mig && an.is_some() {
                    stable_a.push(s);
                }
            }
        }
        let aname = view.node(*a).map_or(short(a), |n| n.addr.clone());
        let bname = view.node(*b).map_or(short(b), |n| n.addr.clone());
        if !resume.is_empty() {
            let src = an.expect("checked").sock()?;
            let ranges = to_ranges(resume.iter().copied());
            log(&format!(
                ">>> Resuming the move of slots {} from {aname} to {bname}",
                format_ranges(&ranges)
            ));
            match resume_move(admin, src, *b, &resume, opts).await {
                Ok((keys, slots)) => {
                    act(
                        format!(
                            "resumed the move of slots {} from {aname} to {bname}: {slots} \
                             slot(s) handed over, {keys} key(s) moved",
                            format_ranges(&ranges)
                        ),
                        log,
                    );
                    resumed.push(Move {
                        from: *a,
                        to: *b,
                        slots: resume.clone(),
                    });
                }
                Err(e) => act(
                    format!(
                        "[WARN] resuming the move of slots {} from {aname} to {bname} failed: {e}",
                        format_ranges(&ranges)
                    ),
                    log,
                ),
            }
        }
        for (list, who, name, why) in [
            (
                &stable_a,
                an,
                &aname,
                format!("rolled back: {bname} cannot take them"),
            ),
            (
                &stable_b,
                view.node(*b).filter(|n| n.reachable()),
                &bname,
                format!("closed: {aname} no longer serves them or is unreachable"),
            ),
        ] {
            let Some(node) = who else { continue };
            if list.is_empty() {
                continue;
            }
            let sock = node.sock()?;
            let mut failed = None;
            for &s in list {
                if let Err(e) = admin
                    .ok(sock, &AdminRequest::SetSlot(s, SlotState::Stable))
                    .await
                {
                    failed = Some(e);
                    break;
                }
            }
            let ranges = format_ranges(&to_ranges(list.iter().copied()));
            match failed {
                None => act(format!("set slots {ranges} stable on {name} ({why})"), log),
                Some(e) => act(
                    format!("[WARN] setting slots {ranges} stable on {name} failed: {e}"),
                    log,
                ),
            }
        }
    }
    if !resumed.is_empty() {
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

    // 3. Keys where they do not belong.
    let view = ClusterView::load(admin, addr).await?;
    let counts = load_key_counts(admin, &view).await;
    let mut stray_found = false;
    for (id, c) in &counts {
        let (Some(n), Ok(c)) = (view.node(*id), c) else {
            continue;
        };
        let served = served_slots(&view, n);
        let importing: Vec<u16> = n
            .view
            .as_ref()
            .map(|v| v.importing.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default();
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
        let mut dropped = 0u64;
        let mut failures: Vec<(u16, AdminError)> = Vec::new();
        for &s in &stray {
            match admin.drop_slot_keys(sock, s).await {
                Ok(k) => dropped += k,
                Err(e) => failures.push((s, e)),
            }
        }
        let done: Vec<u16> = stray
            .iter()
            .copied()
            .filter(|s| !failures.iter().any(|(f, _)| f == s))
            .collect();
        if !done.is_empty() {
            act(
                format!(
                    "dropped {dropped} key(s) of slots {} from {} ({}), which does not serve them",
                    format_ranges(&to_ranges(done)),
                    n.addr,
                    short(&n.id)
                ),
                log,
            );
        }
        for (s, e) in failures {
            act(
                format!(
                    "[WARN] dropping the keys of slot {s} from {} failed: {e}",
                    n.addr
                ),
                log,
            );
        }
    }
    if !stray_found {
        log(">>> No keys in slots their node does not serve.");
    }

    // Then a check, waited for to be healthy.
    let start = tokio::time::Instant::now();
    let after = loop {
        let r = check(admin, addr).await?;
        if r.healthy() || start.elapsed() >= opts.limits.wait {
            break r;
        }
        tokio::time::sleep(opts.limits.poll).await;
    };
    Ok(FixReport { actions, after })
}

/// Resumes moving `slots` from the node at `src` to `to`; retried while the source
/// refuses because it still sees the target failing (a restarted node is cleared
/// after a while) or cannot reach it, up to `opts.limits.wait`.
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
        let m = wait_until(&opts.limits, "the source to resume the move", || async {
            match tokio::time::timeout(
                opts.call_timeout,
                admin.migrate_slots(src, to, ranges.clone(), opts.batch),
            )
            .await
            {
                Ok(Ok(m)) => Ok(m),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", opts.call_timeout)),
            }
        })
        .await?;
        keys += m.keys;
        moved += m.slots;
    }
    Ok((keys, moved))
}

/// Waits until every reachable node sees each move's slots owned by its target.
async fn wait_owners(
    admin: &Admin,
    view: &ClusterView,
    moves: &[Move],
    opts: &MoveOptions,
) -> Result<(), OpsError> {
    let socks: Vec<SocketAddr> = view
        .nodes
        .iter()
        .filter(|n| n.reachable())
        .filter_map(|n| n.sock)
        .collect();
    wait_until(
        &opts.limits,
        "every node to see the new slot owners",
        || all_see_owners(admin, &socks, moves),
    )
    .await
}
