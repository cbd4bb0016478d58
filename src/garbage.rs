//! What an operation removed. A shard never drops a user's key or value: it hands them
//! back here so the cache can emit their events under the lock, log them, and drop them
//! after unlocking (inline or on the lazy-free thread).

/// Why an entry left the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    Removed,
    Expired,
    Evicted,
}

/// What an operation removed, to be dropped outside the lock. The values are never read:
/// they are held so that dropping them happens where the caller chooses.
#[allow(dead_code)]
pub(crate) enum Dead<K, V> {
    /// A whole entry left the cache.
    Entry {
        key: K,
        value: V,
        cause: Cause,
        /// Its weight including the per-entry overhead.
        weight: u64,
    },
    /// An overwrite replaced this value.
    Value {
        value: V,
        /// The replaced entry's weight including the per-entry overhead.
        weight: u64,
    },
}

/// What an operation removed. The first item is held inline: most operations remove
/// nothing or one entry (an eviction, an overwrite), and this keeps them off the
/// allocator.
pub(crate) struct Garbage<K, V> {
    first: Option<Dead<K, V>>,
    rest: Vec<Dead<K, V>>,
    /// How many leading items have had their keyspace events emitted.
    reported: usize,
    /// How many leading items have been written to the log.
    logged: usize,
}

impl<K, V> Garbage<K, V> {
    pub(crate) fn new() -> Self {
        Garbage {
            first: None,
            rest: Vec::new(),
            reported: 0,
            logged: 0,
        }
    }
    pub(crate) fn push(&mut self, d: Dead<K, V>) {
        if self.first.is_none() {
            self.first = Some(d);
        } else {
            self.rest.push(d);
        }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
    fn iter(&self) -> impl Iterator<Item = &Dead<K, V>> {
        self.first.iter().chain(self.rest.iter())
    }
    /// Items whose events have not been emitted yet; marks them emitted.
    pub(crate) fn unreported(&mut self) -> impl Iterator<Item = &Dead<K, V>> {
        let len = self.len();
        let from = std::mem::replace(&mut self.reported, len);
        self.iter().skip(from)
    }
    /// Keys of entries removed and not yet logged; marks them logged.
    pub(crate) fn unlogged_keys(&mut self) -> impl Iterator<Item = &K> {
        let len = self.len();
        let from = std::mem::replace(&mut self.logged, len);
        self.iter().skip(from).filter_map(|d| match d {
            Dead::Entry { key, .. } => Some(key),
            Dead::Value { .. } => None,
        })
    }
    pub(crate) fn into_items(self) -> impl Iterator<Item = Dead<K, V>> {
        self.first.into_iter().chain(self.rest)
    }
}
