//! Removal by predicate: `invalidate_if` and `retain`.

use crate::cache::Cache;
use crate::error::Error;
use crate::latency::Op;
use crate::weigh::Weigher;
use std::hash::Hash;

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Removes every live entry for which `pred` returns true; returns how many it
    /// removed. Each removal is a `del` event, and on a durable cache a logged delete,
    /// as if by [`remove`](Self::remove).
    ///
    /// Runs shard by shard: each shard is locked while `pred` looks at all of its
    /// entries and then while they are removed, so one shard's removals are atomic but
    /// the whole call is not (entries written to another shard meanwhile may or may not
    /// be seen). `pred` runs under the shard's lock and must not use this cache. If it
    /// panics, nothing of that shard is removed.
    ///
    /// ```
    /// use larder::Cache;
    /// let cache: Cache<String, u32> = Cache::builder().build();
    /// for (k, v) in [("user:1", 1), ("user:2", 2), ("page:1", 3)] {
    ///     cache.insert(k.to_string(), v).unwrap();
    /// }
    /// assert_eq!(cache.invalidate_if(|k, _| k.starts_with("user:")).unwrap(), 2);
    /// assert_eq!(cache.len(), 1);
    /// ```
    pub fn invalidate_if(&self, mut pred: impl FnMut(&K, &V) -> bool) -> Result<u64, Error> {
        let inner = &*self.inner;
        let mut removed = 0;
        for i in 0..inner.slots.len() {
            removed += inner.write_slot(
                Op::Remove,
                i,
                false,
                |s, env, g| {
                    let now = env.clock.now_ms();
                    // Decide on every entry first: a panicking `pred` leaves the shard
                    // untouched (and nothing unlogged).
                    let doomed: Vec<K> = s
                        .entries()
                        .filter(|(_, _, _, at)| at.is_none_or(|at| at > now))
                        .filter(|(k, v, _, _)| pred(k, v))
                        .map(|(k, _, _, _)| k.clone())
                        .collect();
                    let mut n = 0;
                    for k in &doomed {
                        n += u64::from(s.remove(inner.hash(k), k, env, g));
                    }
                    Ok(n)
                },
                // The removals are logged as deletes by `write_slot`.
                |_, _, _| Ok(None),
                |_| None,
            )?;
        }
        Ok(removed)
    }

    /// Keeps only the live entries for which `keep` returns true, removing the others
    /// as [`invalidate_if`](Self::invalidate_if) does; returns how many it removed.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) -> Result<u64, Error> {
        self.invalidate_if(|k, v| !keep(k, v))
    }
}
