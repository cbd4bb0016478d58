//! What the server serves: a [`Keyspace`] is a `Cache<String, Vec<u8>, W>` (the whole
//! keyspace is here) or, with feature `cluster`, a `ClusterCache<String, Vec<u8>, W>`
//! (this node's slots are here; commands on other slots are redirected).

use super::codec::Value;
use crate::{Cache, Weigher};

/// How a connection asks to be routed (`ASKING`, `READONLY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteFlags {
    /// The next command follows an `ASK` redirection (`ASKING` was sent).
    pub asking: bool,
    /// The connection reads from replicas (`READONLY`).
    pub readonly: bool,
}

/// The data a RESP server serves, and how commands on it are routed.
pub trait Keyspace: Clone + Send + Sync + 'static {
    /// The cache's weigher.
    type W: Weigher<String, Vec<u8>>;

    /// The data this server holds and runs commands on.
    fn cache(&self) -> &Cache<String, Vec<u8>, Self::W>;

    /// Whether commands are routed by their keys ([`Keyspace::route`] is called): false
    /// for a plain cache, which serves every key.
    fn routes(&self) -> bool {
        false
    }

    /// Where a command over `keys` runs: `Ok(slot)` to run it here (the slot of its
    /// keys, `None` when not clustered or keyless), or the redirection or refusal to
    /// answer (`MOVED`, `ASK`, `CROSSSLOT`, `TRYAGAIN`, `CLUSTERDOWN`).
    fn route(&self, keys: &[&[u8]], write: bool, flags: RouteFlags) -> Result<Option<u16>, Value> {
        let _ = (keys, write, flags);
        Ok(None)
    }

    /// Runs `f`, a command routed to `slot`, where its writes may go (a cluster node
    /// fences the writes of a slot it is moving away).
    fn in_slot<R>(&self, slot: Option<u16>, f: impl FnOnce() -> R) -> R {
        let _ = slot;
        f()
    }

    /// `CLUSTER ...` (`args` after the word `CLUSTER`), or `None` when not clustered
    /// (Redis answers "ERR This instance has cluster support disabled").
    fn cluster_command(&self, args: &[&[u8]]) -> Option<Value> {
        let _ = args;
        None
    }

    /// Redis's `WAIT numreplicas timeout`: how many replicas acknowledged this node's
    /// writes within `timeout_ms` (0: no limit; 0 replicas when there is no
    /// replication), or the error to answer. Only the waiting connection waits: the
    /// server awaits this between its requests.
    fn wait(
        &self,
        replicas: usize,
        timeout_ms: u64,
    ) -> impl std::future::Future<Output = Result<usize, Value>> + Send {
        let _ = (replicas, timeout_ms);
        std::future::ready(Ok(0))
    }
}

impl<W: Weigher<String, Vec<u8>>> Keyspace for Cache<String, Vec<u8>, W> {
    type W = W;

    fn cache(&self) -> &Cache<String, Vec<u8>, W> {
        self
    }
}
