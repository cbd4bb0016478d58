//! Fault injection for tests: a switch, shared by the nodes of a test, that drops
//! cluster-bus messages between chosen pairs of nodes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::proto::NodeId;

/// Directed links whose messages are dropped. Clones share the same set, so one switch
/// given to every node of a test partitions them all at once.
///
/// The receiver applies it: a message from `a` that reaches `b` while `a -> b` is cut
/// is dropped right after it is read, before the state machine sees it (so a cut
/// affects MEETs too). Connections stay up, as in a network that loses packets but
/// keeps routes.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    cut: Arc<Mutex<HashSet<(NodeId, NodeId)>>>,
}

impl Faults {
    /// A switch with every link up.
    pub fn new() -> Self {
        Faults::default()
    }

    fn links(&self) -> MutexGuard<'_, HashSet<(NodeId, NodeId)>> {
        // A panic while holding this lock cannot leave the set half-updated.
        self.cut.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops messages from `from` to `to` (one direction).
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.links().insert((from, to));
    }

    /// Drops messages between `a` and `b` in both directions.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut l = self.links();
        l.insert((a, b));
        l.insert((b, a));
    }

    /// Cuts every link between a node of `side` and a node of `rest`, both ways.
    pub fn partition(&self, side: &[NodeId], rest: &[NodeId]) {
        for &a in side {
            for &b in rest {
                self.cut(a, b);
            }
        }
    }

    /// Restores messages between `a` and `b` in both directions.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut l = self.links();
        l.remove(&(a, b));
        l.remove(&(b, a));
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.links().clear();
    }

    /// Whether messages from `from` to `to` are dropped.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.links().contains(&(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_directed_and_shared() {
        let (a, b, c) = (NodeId([1; 20]), NodeId([2; 20]), NodeId([3; 20]));
        let f = Faults::new();
        let g = f.clone();
        f.cut_one_way(a, b);
        assert!(g.is_cut(a, b) && !g.is_cut(b, a));
        g.partition(&[c], &[a, b]);
        assert!(f.is_cut(c, a) && f.is_cut(b, c));
        f.heal(a, c);
        assert!(!f.is_cut(c, a) && f.is_cut(c, b));
        f.heal_all();
        assert!(!g.is_cut(a, b));
    }
}
