//! `get_with` and `try_get_with` on a cluster node: the cache's single flight, with the
//! lookup and the store routed by slot like any `get` and `insert`.

use super::{ClusterCache, ClusterError, ClusterKey, ClusterValue};
use crate::loader::{LoadError, Role, WaitFlight};
use crate::weigh::Weigher;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

impl<K, V, W> ClusterCache<K, V, W>
where
    K: ClusterKey,
    V: ClusterValue,
    W: Weigher<K, V>,
{
    /// The value of `key` (read from the slot's master), or, on a miss, the value
    /// `init` produces, written as by [`insert`](Self::insert) (routed to the slot's
    /// master, logged and replicated there, with that node's default TTL) and returned.
    ///
    /// Single flight per node: the tasks of this node that miss the same key at once
    /// share one run of `init` (see [`Cache::get_with_async`](crate::Cache::get_with_async));
    /// callers on other nodes load on their own. A cancelled or panicking load releases
    /// the waiting tasks, one of which then loads.
    ///
    /// Unlike [`Cache::get_with`](crate::Cache::get_with), the store is a plain routed
    /// insert: a value another client writes to the key while `init` runs can be
    /// overwritten by the loaded one (the mesh has no insert-if-absent request yet).
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> Result<V, ClusterError> {
        self.try_get_with::<Infallible>(key, async { Ok(init.await) })
            .await
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(e) => match *e {},
            })
    }

    /// Like [`get_with`](Self::get_with), for a loader that can fail: the error is not
    /// cached, and every task of this node that was waiting on the load receives the
    /// same `Arc<E>`. A failed lookup or store is [`LoadError::Cache`].
    pub async fn try_get_with<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, LoadError<E, ClusterError>>
    where
        E: Send + Sync + 'static,
    {
        let inner = &*self.core.cache.inner;
        let hash = inner.hash(&key);
        loop {
            if let Some(v) = self.get(&key).await.map_err(LoadError::Cache)? {
                return Ok(v);
            }
            match inner.join::<LoadError<E, ClusterError>>(&key, hash) {
                Role::Waiter(flight) => {
                    if let Some(r) = WaitFlight::new(flight, &inner.flights).await {
                        return r;
                    }
                }
                Role::Leader(guard) => {
                    // A second look: a load may have finished between the miss and the
                    // join. Dropping this future before `finish` abandons the flight.
                    let r = match self.get(&key).await {
                        Err(e) => Err(LoadError::Cache(e)),
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => match init.await {
                            Err(e) => Err(LoadError::Loader(Arc::new(e))),
                            Ok(v) => match self.insert(key, v.clone()).await {
                                Ok(()) => Ok(v),
                                Err(e) => Err(LoadError::Cache(e)),
                            },
                        },
                    };
                    return guard.finish(r);
                }
            }
        }
    }
}
