//! The connections a node holds, by authenticated peer: the per-peer limits of
//! [`super::limits`] (connections, request bytes, requests in service) and the sweep
//! that closes the connections of certificates a new revocation list revokes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;

use super::limits::Limits;
use super::revocation::RevocationList;
use crate::proto::NodeId;

/// What one peer's requests share: the byte budget and the service slots.
#[derive(Clone)]
pub(crate) struct PeerBudget {
    /// Permits are bytes of request payload.
    pub bytes: Arc<Semaphore>,
    /// Permits are requests in service.
    pub serving: Arc<Semaphore>,
}

impl PeerBudget {
    /// Whether only the registry holds the budget: every request of the peer (each
    /// holds a clone, and its reservations hold the semaphores) and every
    /// connection's loop have let go of it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.bytes) == 1 && Arc::strong_count(&self.serving) == 1
    }
}

struct PeerEntry {
    /// Incoming connections, oldest first.
    conns: VecDeque<quinn::Connection>,
    budget: PeerBudget,
}

#[derive(Default)]
struct Inner {
    by_peer: HashMap<NodeId, PeerEntry>,
    /// Every live connection (incoming and dialled) with the peer's leaf certificate.
    all: HashMap<usize, (quinn::Connection, CertificateDer<'static>)>,
}

/// The registry (see the module docs).
pub(crate) struct Peers {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl Peers {
    pub(crate) fn new(limits: Limits) -> Self {
        Peers {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an incoming connection of `peer` and returns the peer's budget and
    /// the connections it pushed out (the oldest ones beyond the limit), which the
    /// caller closes.
    pub(crate) fn admit(
        &self,
        peer: NodeId,
        conn: &quinn::Connection,
        leaf: CertificateDer<'static>,
    ) -> (PeerBudget, Vec<quinn::Connection>) {
        let mut inner = self.lock();
        inner
            .all
            .insert(conn.stable_id(), (conn.clone(), leaf.clone()));
        let limits = &self.limits;
        let entry = inner.by_peer.entry(peer).or_insert_with(|| PeerEntry {
            conns: VecDeque::new(),
            budget: PeerBudget {
                bytes: Arc::new(Semaphore::new(limits.request_budget())),
                serving: Arc::new(Semaphore::new(limits.requests_per_peer.max(1))),
            },
        });
        entry.conns.push_back(conn.clone());
        let mut evicted = Vec::new();
        while entry.conns.len() > self.limits.connections_per_peer.max(1) {
            if let Some(old) = entry.conns.pop_front() {
                evicted.push(old);
            }
        }
        let budget = entry.budget.clone();
        for c in &evicted {
            inner.all.remove(&c.stable_id());
        }
        (budget, evicted)
    }

    /// Forgets an incoming connection of `peer` (it closed).
    ///
    /// A request outlives its connection while the service answers it (a `WAIT`, a
    /// write waiting for replicas), so a peer's budget is kept while any request still
    /// holds some of it, even with none of its connections left: otherwise closing
    /// every connection and dialling again would hand the peer a fresh budget while
    /// the old one is still in use, and repeating that, any number of requests in
    /// service. Budgets of peers with no connection are dropped once idle (checked
    /// here, on every connection's close).
    pub(crate) fn leave(&self, peer: NodeId, conn: &quinn::Connection) {
        let mut inner = self.lock();
        inner.all.remove(&conn.stable_id());
        if let Some(entry) = inner.by_peer.get_mut(&peer) {
            entry.conns.retain(|c| c.stable_id() != conn.stable_id());
        }
        inner
            .by_peer
            .retain(|_, e| !e.conns.is_empty() || !e.budget.idle());
    }

    /// Registers a connection this node dialled (for revocation sweeps).
    pub(crate) fn track(&self, conn: &quinn::Connection, leaf: CertificateDer<'static>) {
        self.lock()
            .all
            .insert(conn.stable_id(), (conn.clone(), leaf));
    }

    /// Forgets a dialled connection (it closed).
    pub(crate) fn untrack(&self, conn: &quinn::Connection) {
        self.lock().all.remove(&conn.stable_id());
    }

    /// The live connections whose peer certificate `list` revokes.
    pub(crate) fn revoked_by(&self, list: &RevocationList) -> Vec<quinn::Connection> {
        self.lock()
            .all
            .values()
            .filter(|(_, leaf)| list.revokes(leaf))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Incoming connections of `peer` currently held.
    pub(crate) fn connections_of(&self, peer: NodeId) -> usize {
        self.lock().by_peer.get(&peer).map_or(0, |e| e.conns.len())
    }
}
