//! The safety properties checked after every simulation step.

use std::collections::BTreeMap;

use crate::proto::{Instant, NodeId, SlotSet};

/// Remembers what the properties need across steps.
#[derive(Debug, Default)]
pub struct Checker {
    /// Highest currentEpoch / configEpoch seen per node (across restarts).
    epochs: BTreeMap<NodeId, (u64, u64)>,
    /// Who each (voter, epoch) voted for.
    votes: BTreeMap<(NodeId, u64), NodeId>,
    /// Until then, two writable masters for one slot are tolerated (after an operator
    /// TAKEOVER, which bypasses agreement by design).
    pub(crate) overlap_allowed_until: Instant,
    /// Number of steps checked.
    pub steps: u64,
}

impl Checker {
    /// Epochs never go down, even across a crash and restart.
    pub(crate) fn check_epochs(
        &mut self,
        id: NodeId,
        current: u64,
        config: u64,
    ) -> Result<(), String> {
        let e = self.epochs.entry(id).or_insert((current, config));
        if current < e.0 {
            return Err(format!(
                "node {id:?}: currentEpoch went down from {} to {current}",
                e.0
            ));
        }
        if config < e.1 {
            return Err(format!(
                "node {id:?}: configEpoch went down from {} to {config}",
                e.1
            ));
        }
        *e = (current, config);
        Ok(())
    }

    /// A master votes for at most one candidate per epoch.
    pub(crate) fn check_vote(
        &mut self,
        voter: NodeId,
        epoch: u64,
        candidate: NodeId,
    ) -> Result<(), String> {
        match self.votes.insert((voter, epoch), candidate) {
            Some(prev) if prev != candidate => Err(format!(
                "master {voter:?} voted twice in epoch {epoch}: for {prev:?} and {candidate:?}"
            )),
            _ => Ok(()),
        }
    }

    /// At most one node may accept writes for any slot.
    pub(crate) fn check_single_writer(
        &self,
        now: Instant,
        writable: &[(usize, SlotSet)],
    ) -> Result<(), String> {
        if now < self.overlap_allowed_until {
            return Ok(());
        }
        for (i, (a, sa)) in writable.iter().enumerate() {
            for (b, sb) in &writable[i + 1..] {
                if sa.intersects(sb) {
                    let slot = sa.iter().find(|s| sb.contains(*s)).unwrap_or(0);
                    return Err(format!(
                        "nodes {a} and {b} both accept writes for slot {slot}"
                    ));
                }
            }
        }
        Ok(())
    }
}
