//! Moving slots: `reshard` and `rebalance` plans over a loaded cluster, and the mover
//! that carries out any list of [`Move`]s with `Admin::migrate_slots`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use larder::cluster::admin::DEFAULT_BATCH;
use larder::cluster::admin_wire::to_ranges;

use super::plan::{self, Move, RebalancePlan};
use super::view::{owner_map, ClusterView};
use super::{
    format_ranges, in_turn, short, wait_until, Admin, AdminError, Limits, NodeId, OpsError, SLOTS,
};

/// Times a chunk whose move failed transiently (`TRYAGAIN`) is asked again.
const MOVE_RETRIES: u32 = 10;
/// The pause before asking again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Whether a failed move is worth asking again at once: the node refused for a
/// moment (`TRYAGAIN`: a write permission that lapsed on a busy node, a slot briefly
/// locked). A move resumes where it stopped.
fn is_transient(e: &AdminError) -> bool {
    matches!(e, AdminError::Refused(t) if t.contains("TRYAGAIN"))
}

/// Receives a move's progress (`larder-cli` draws a progress bar with it).
pub trait Progress: Sync {
    /// The moves begin: `slots` slots in all.
    fn start(&self, _slots: u64) {}
    /// `slots` more slots and `keys` more keys moved.
    fn advance(&self, _slots: u64, _keys: u64) {}
    /// A line of text (which move is under way).
    fn note(&self, _line: &str) {}
    /// The moves ended (or failed).
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

/// How slots are moved.
#[derive(Clone, Copy, Debug)]
pub struct MoveOptions {
    /// Keys per round trip between source and target.
    pub batch: u32,
    /// Slots per `migrate_slots` request (each request hands its slots over one by
    /// one; a smaller number means finer progress and less left open by a crash).
    pub slots_per_call: usize,
    /// Longest one `migrate_slots` request may take before the move is abandoned
    /// (the slots it was moving may be left open: `fix` resumes them).
    pub call_timeout: Duration,
    /// Bound on the wait for every node to see the new owners.
    pub limits: Limits,
}

impl Default for MoveOptions {
    /// 100 keys per batch, 32 slots per request, 10 minutes per request.
    fn default() -> Self {
        MoveOptions {
            batch: DEFAULT_BATCH,
            slots_per_call: 32,
            call_timeout: Duration::from_secs(600),
            limits: Limits::default(),
        }
    }
}

/// What a series of moves did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MoveStats {
    /// Slots handed over.
    pub slots: u64,
    /// Keys moved.
    pub keys: u64,
    /// Key and value bytes moved.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Plans `reshard`: `count` slots from `from` (node specs; `["all"]` for every other
/// master with slots, proportionally) to master `to`, with redis-cli's reshard table
/// ([`plan::reshard_table`]). Usage errors (exit 2): unknown nodes, a source or
/// target that is not a master, `to` among the sources, fewer slots than asked.
pub fn plan_reshard(
    view: &ClusterView,
    from: &[String],
    to: &str,
    count: usize,
) -> Result<Vec<Move>, OpsError> {
    if count == 0 || count > usize::from(SLOTS) {
        return Err(OpsError::Usage(format!(
            "--slots must be between 1 and 16384 (got {count})"
        )));
    }
    let target = view.find(to)?;
    if !target.is_master() {
        return Err(OpsError::Usage(format!(
            "the target {} is not a master",
            target.addr
        )));
    }
    let masters = view.master_slots();
    let sources: Vec<plan::MasterSlots> = if from.iter().any(|f| f == "all") {
        if from.len() > 1 {
            return Err(OpsError::Usage(
                "--from all cannot be combined with other sources".into(),
            ));
        }
        masters
            .into_iter()
            .filter(|m| m.id != target.id && !m.slots.is_empty())
            .collect()
    } else {
        let mut v = Vec::new();
        for spec in from {
            let n = view.find(spec)?;
            if !n.is_master() {
                return Err(OpsError::Usage(format!(
                    "the source {} is not a master",
                    n.addr
                )));
            }
            if n.id == target.id {
                return Err(OpsError::Usage("the target cannot also be a source".into()));
            }
            if let Some(m) = masters.iter().find(|m| m.id == n.id) {
                if !v.iter().any(|x: &plan::MasterSlots| x.id == m.id) {
                    v.push(m.clone());
                }
            }
        }
        v
    };
    let held: usize = sources.iter().map(|s| s.slots.len()).sum();
    if held < count {
        return Err(OpsError::Usage(format!(
            "the source nodes serve {held} slots, fewer than the {count} asked for"
        )));
    }
    Ok(plan::reshard_table(&sources, count)
        .into_iter()
        .map(|(from, slots)| Move {
            from,
            to: target.id,
            slots,
        })
        .collect())
}

/// Plans `rebalance` over a loaded cluster ([`plan::plan_rebalance`]): `weights` as
/// `(node spec, weight)`; unknown nodes or non-masters are usage errors (exit 2).
pub fn plan_rebalance(
    view: &ClusterView,
    weights: &[(String, f64)],
    threshold_pct: f64,
    use_empty_masters: bool,
) -> Result<RebalancePlan, OpsError> {
    let mut masters = view.master_slots();
    for (spec, w) in weights {
        let n = view.find(spec)?;
        let m = masters
            .iter_mut()
            .find(|m| m.id == n.id)
            .ok_or_else(|| OpsError::Usage(format!("{spec} is not a master")))?;
        if !w.is_finite() || *w < 0.0 {
            return Err(OpsError::Usage(format!("bad weight {w} for {spec}")));
        }
        m.weight = *w;
    }
    Ok(plan::plan_rebalance(
        &masters,
        threshold_pct,
        use_empty_masters,
    ))
}

/// Describes moves for the user, one line each.
pub fn render_moves(view: &ClusterView, moves: &[Move]) -> String {
    let name = |id: NodeId| view.node(id).map_or(short(&id), |n| n.addr.clone());
    moves
        .iter()
        .map(|m| {
            format!(
                "Moving {} slots from {} to {}: {}\n",
                m.slots.len(),
                name(m.from),
                name(m.to),
                format_ranges(&to_ranges(m.slots.iter().copied()))
            )
        })
        .collect()
}

/// Carries out `moves`: each source is asked to move its slots to the target
/// (`Admin::migrate_slots`), `opts.slots_per_call` at a time, `opts.batch` keys per
/// round trip, each request bounded by `opts.call_timeout` (a request refused with
/// `TRYAGAIN` is asked again, up to 10 times, half a second apart); then waits (bounded by
/// `opts.limits`) until every reachable node sees the new owners. A failure stops
/// the moves (exit 1) and says which slots may be left open.
pub async fn execute_moves(
    admin: &Admin,
    view: &ClusterView,
    moves: &[Move],
    opts: &MoveOptions,
    progress: &dyn Progress,
) -> Result<MoveStats, OpsError> {
    let started = Instant::now();
    let mut stats = MoveStats::default();
    let total: usize = moves.iter().map(|m| m.slots.len()).sum();
    progress.start(total as u64);
    let result = async {
        for mv in moves {
            let src = view
                .node(mv.from)
                .ok_or_else(|| OpsError::Failed(format!("unknown source {}", mv.from)))?;
            let src_addr = src.sock()?;
            let dst_name = view.node(mv.to).map_or(short(&mv.to), |n| n.addr.clone());
            progress.note(&format!(
                ">>> Moving {} slots from {} to {dst_name}...",
                mv.slots.len(),
                src.addr
            ));
            for chunk in mv.slots.chunks(opts.slots_per_call.max(1)) {
                let ranges = to_ranges(chunk.iter().copied());
                let open = || {
                    format!(
                        "slots {} may be left open: run `larder-cli fix {}` to resume or roll \
                         back",
                        format_ranges(&ranges),
                        src.addr
                    )
                };
                let mut retries = 0;
                let m = loop {
                    let call = admin.migrate_slots(src_addr, mv.to, ranges.clone(), opts.batch);
                    match tokio::time::timeout(opts.call_timeout, call).await {
                        Ok(Ok(m)) => break m,
                        // A node too busy to renew its write permission, a slot briefly
                        // locked: the move resumes where it stopped when asked again.
                        Ok(Err(e)) if is_transient(&e) && retries < MOVE_RETRIES => {
                            retries += 1;
                            progress.note(&format!(
                                "[WARN] moving slots {} paused ({e}); resuming",
                                format_ranges(&ranges)
                            ));
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                        Ok(Err(e)) => {
                            return Err(OpsError::Failed(format!(
                                "moving slots {} from {} to {dst_name} failed: {e}; {}",
                                format_ranges(&ranges),
                                src.addr,
                                open()
                            )))
                        }
                        Err(_) => {
                            return Err(OpsError::Timeout {
                                what: format!(
                                    "{} to move slots {} to {dst_name}",
                                    src.addr,
                                    format_ranges(&ranges)
                                ),
                                waited: opts.call_timeout,
                                last: open(),
                            })
                        }
                    }
                };
                // A resumed call reports only what it moved itself; the chunk is done.
                stats.slots += chunk.len() as u64;
                stats.keys += m.keys;
                stats.bytes += m.bytes;
                progress.advance(chunk.len() as u64, m.keys);
            }
        }
        Ok(())
    }
    .await;
    progress.finish();
    result?;
    wait_owners(admin, view, moves, opts).await?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Every node at `socks` sees each moved slot owned by its move's target.
pub(crate) async fn all_see_owners(
    admin: &Admin,
    socks: &[SocketAddr],
    moves: &[Move],
) -> Result<(), String> {
    let views = in_turn(socks.iter().map(|&a| admin.nodes(a)).collect()).await;
    for (a, v) in socks.iter().zip(views) {
        let v = v.map_err(|e| format!("{a}: {e}"))?;
        let owners = owner_map(&v);
        for mv in moves {
            if let Some(&s) = mv
                .slots
                .iter()
                .find(|&&s| owners[usize::from(s)] != Some(mv.to.0))
            {
                return Err(format!(
                    "{a} does not see slot {s} on {} yet",
                    short(&mv.to)
                ));
            }
        }
    }
    Ok(())
}

/// Waits until every reachable node sees each move's slots owned by its target.
pub(super) async fn wait_owners(
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
