//! Slot ownership as one node sees it, MIGRATING/IMPORTING states, and the routing
//! decision for a key (serve, MOVED, ASK, TRYAGAIN).

use std::collections::BTreeMap;

use super::id::NodeId;
use super::slots::{Slot, SlotSet, SLOTS};

/// Owner of every slot, plus the slots this node is moving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTable {
    owner: Vec<Option<NodeId>>,
    /// Slots whose owner's own header stopped claiming them (Redis's
    /// `owner_not_claiming_slot`), or whose owner turned replica. The owner stays
    /// bound, so routing and coverage do not change, but the next claimant takes the
    /// slot whatever its configEpoch.
    not_claimed: SlotSet,
    migrating: BTreeMap<Slot, NodeId>,
    importing: BTreeMap<Slot, NodeId>,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            owner: vec![None; SLOTS],
            not_claimed: SlotSet::new(),
            migrating: BTreeMap::new(),
            importing: BTreeMap::new(),
        }
    }
}

/// Which of a command's keys exist on this node (Redis's `existing_keys` count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPresence {
    /// Every key exists (or the command has one key and it exists).
    All,
    /// Some keys of a multi-key command exist and some do not.
    Some,
    /// No key exists.
    None,
}

/// Where a command for one slot must go, as Redis's `getNodeByQuery` decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Serve it here.
    Serve,
    /// The slot lives elsewhere: `-MOVED slot node`. The client updates its map.
    Moved {
        /// The slot.
        slot: Slot,
        /// Its owner.
        node: NodeId,
    },
    /// The slot is migrating and the key is not here any more: `-ASK slot node`. The
    /// client retries there once, preceded by ASKING, without updating its map.
    Ask {
        /// The slot.
        slot: Slot,
        /// The migration target.
        node: NodeId,
    },
    /// A multi-key command whose keys are split by an ongoing migration: `-TRYAGAIN`.
    TryAgain,
    /// The cluster cannot serve the slot (unassigned, or the cluster state is FAIL).
    ClusterDown,
}

impl SlotTable {
    /// The owner of `slot`.
    pub fn owner(&self, slot: Slot) -> Option<NodeId> {
        self.owner.get(slot as usize).copied().flatten()
    }

    /// True if nobody claims `slot`: it has no owner, or its owner's own messages
    /// stopped claiming it (Redis's `isSlotUnclaimed`), or its owner turned replica.
    /// Any master's claim takes such a slot, whatever its configEpoch.
    pub fn is_unclaimed(&self, slot: Slot) -> bool {
        self.owner(slot).is_none() || self.not_claimed.contains(slot)
    }

    /// Where `slot` is migrating to, if this node is moving it away.
    pub fn migrating_to(&self, slot: Slot) -> Option<NodeId> {
        self.migrating.get(&slot).copied()
    }

    /// Where `slot` is imported from, if this node is receiving it.
    pub fn importing_from(&self, slot: Slot) -> Option<NodeId> {
        self.importing.get(&slot).copied()
    }

    /// All MIGRATING states.
    pub fn migrating(&self) -> &BTreeMap<Slot, NodeId> {
        &self.migrating
    }

    /// All IMPORTING states.
    pub fn importing(&self) -> &BTreeMap<Slot, NodeId> {
        &self.importing
    }

    /// The slots `node` owns.
    pub fn slots_of(&self, node: NodeId) -> SlotSet {
        let mut s = SlotSet::new();
        for (i, o) in self.owner.iter().enumerate() {
            if *o == Some(node) {
                s.insert(i as Slot);
            }
        }
        s
    }

    /// Number of slots with an owner.
    pub fn assigned(&self) -> usize {
        self.owner.iter().filter(|o| o.is_some()).count()
    }

    /// Binds `slot` to `node` (or to nobody); the new binding is claimed.
    pub(crate) fn set_owner(&mut self, slot: Slot, node: Option<NodeId>) {
        if let Some(o) = self.owner.get_mut(slot as usize) {
            *o = node;
        }
        self.not_claimed.remove(slot);
    }

    /// Records what a master claims in its own message: of the slots `bound` to it in
    /// this table, those outside `claimed` become unclaimed and the rest claimed again.
    /// Other slots are left as they are.
    pub(crate) fn note_claims(&mut self, bound: &SlotSet, claimed: &SlotSet) {
        let (nc, b, c) = (self.not_claimed.words(), bound.words(), claimed.words());
        let mut words = [0u64; SlotSet::WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = (nc[i] & !b[i]) | (b[i] & !c[i]);
        }
        self.not_claimed = SlotSet::from_words(words);
    }

    pub(crate) fn set_migrating(&mut self, slot: Slot, to: Option<NodeId>) {
        match to {
            Some(n) => self.migrating.insert(slot, n),
            None => self.migrating.remove(&slot),
        };
    }

    pub(crate) fn set_importing(&mut self, slot: Slot, from: Option<NodeId>) {
        match from {
            Some(n) => self.importing.insert(slot, n),
            None => self.importing.remove(&slot),
        };
    }

    /// Removes every reference to `node` (after FORGET).
    pub(crate) fn forget(&mut self, node: NodeId) {
        for (slot, o) in self.owner.iter_mut().enumerate() {
            if *o == Some(node) {
                *o = None;
                self.not_claimed.remove(slot as Slot);
            }
        }
        self.migrating.retain(|_, n| *n != node);
        self.importing.retain(|_, n| *n != node);
    }

    /// The routing decision for a command on `slot` received by `me`.
    ///
    /// `asking` is true when the client sent ASKING just before. `cluster_ok` is the
    /// node's cluster state; Redis refuses every keyed command while it is FAIL.
    pub fn route(
        &self,
        me: NodeId,
        slot: Slot,
        keys: KeyPresence,
        asking: bool,
        cluster_ok: bool,
    ) -> Route {
        let Some(owner) = self.owner(slot) else {
            return Route::ClusterDown;
        };
        if !cluster_ok {
            return Route::ClusterDown;
        }
        if owner == me {
            // A migrating slot is served for keys still here; missing keys were moved
            // (or never existed) and are looked up on the target.
            return match (self.migrating_to(slot), keys) {
                (Some(_), KeyPresence::Some) => Route::TryAgain,
                (Some(target), KeyPresence::None) => Route::Ask { slot, node: target },
                _ => Route::Serve,
            };
        }
        if asking && self.importing_from(slot).is_some() {
            // An importing node serves ASKING clients, but a multi-key command must not
            // see half of its keys while the rest are still on the source.
            return if keys == KeyPresence::Some {
                Route::TryAgain
            } else {
                Route::Serve
            };
        }
        Route::Moved { slot, node: owner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rng::Rng;

    #[test]
    fn routing_decisions() {
        let mut rng = Rng::new(1);
        let (a, b) = (NodeId::random(&mut rng), NodeId::random(&mut rng));
        let mut t = SlotTable::default();
        assert_eq!(
            t.route(a, 1, KeyPresence::All, false, true),
            Route::ClusterDown
        );
        t.set_owner(1, Some(a));
        t.set_owner(2, Some(b));
        assert_eq!(t.route(a, 1, KeyPresence::None, false, true), Route::Serve);
        assert_eq!(
            t.route(a, 1, KeyPresence::All, false, false),
            Route::ClusterDown
        );
        assert_eq!(
            t.route(a, 2, KeyPresence::All, false, true),
            Route::Moved { slot: 2, node: b }
        );
        // a migrates slot 1 to b.
        t.set_migrating(1, Some(b));
        assert_eq!(t.route(a, 1, KeyPresence::All, false, true), Route::Serve);
        assert_eq!(
            t.route(a, 1, KeyPresence::None, false, true),
            Route::Ask { slot: 1, node: b }
        );
        assert_eq!(
            t.route(a, 1, KeyPresence::Some, false, true),
            Route::TryAgain
        );
        // a imports slot 2 from b: only ASKING clients are served.
        t.set_importing(2, Some(b));
        assert_eq!(
            t.route(a, 2, KeyPresence::None, false, true),
            Route::Moved { slot: 2, node: b }
        );
        assert_eq!(t.route(a, 2, KeyPresence::None, true, true), Route::Serve);
        assert_eq!(
            t.route(a, 2, KeyPresence::Some, true, true),
            Route::TryAgain
        );
        assert_eq!(t.slots_of(a).len(), 1);
        t.forget(b);
        assert_eq!(t.owner(2), None);
        assert!(t.migrating().is_empty() && t.importing().is_empty());
    }
}
