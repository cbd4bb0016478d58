//! The end-state check: after faults stop, the cluster must agree on one configuration.

use std::collections::BTreeMap;

use super::Sim;
use crate::proto::{ClusterState, SLOTS};

impl Sim {
    /// Why the cluster has not converged, or `None` if it has: every running node sees
    /// state OK and the same owner for every slot, each owner is a running master that
    /// agrees and accepts writes, and masters hold distinct configEpochs.
    pub fn convergence_gap(&self) -> Option<String> {
        let now = self.now;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some())
            .collect();
        let first = self.node(*up.first()?)?;
        for &i in &up {
            let n = self.node(i)?;
            if n.state() != ClusterState::Ok {
                return Some(format!("n{i} cluster state is FAIL"));
            }
            for slot in 0..SLOTS as u16 {
                if n.slots().owner(slot) != first.slots().owner(slot) {
                    return Some(format!(
                        "n{i} and n{} disagree on the owner of slot {slot}",
                        up[0]
                    ));
                }
            }
        }
        let mut epochs = BTreeMap::new();
        let mut covered = 0;
        for &i in &up {
            let n = self.node(i)?;
            if n.is_master() && !n.my_slots().is_empty() {
                if let Some(j) = epochs.insert(n.config_epoch(), i) {
                    return Some(format!(
                        "n{i} and n{j} share configEpoch {}",
                        n.config_epoch()
                    ));
                }
                if let Err(e) = n.write_permission(now, n.my_slots().iter().next()?) {
                    return Some(format!("master n{i} refuses writes: {e}"));
                }
                covered += n.my_slots().len();
            }
        }
        if covered != SLOTS {
            return Some(format!("running masters serve {covered} slots"));
        }
        for slot in 0..SLOTS as u16 {
            let owner = first.slots().owner(slot)?;
            let i = self.index_of(owner)?;
            if self.node(i).is_none_or(|n| !n.my_slots().contains(slot)) {
                return Some(format!("slot {slot} owner n{i} is down or disagrees"));
            }
        }
        None
    }

    /// Runs until [`Sim::convergence_gap`] is `None`; errors after `max_ms`. Returns
    /// the time it took.
    pub fn run_until_converged(&mut self, max_ms: u64) -> Result<u64, String> {
        let start = self.now;
        loop {
            match self.convergence_gap() {
                None => return Ok(self.now.since(start)),
                Some(gap) if self.now.since(start) > max_ms => {
                    return Err(self.fail(&format!("no convergence after {max_ms} ms: {gap}")))
                }
                Some(_) => self.run_for(50)?,
            }
        }
    }
}
