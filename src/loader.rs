//! Loading with single flight: `get_with`, `try_get_with` and their async versions.
//!
//! When many callers miss the same key at once, one of them (the *leader*) runs its
//! loader; the others (*waiters*) park on the key's flight, not on a shard lock, and
//! take the leader's outcome. The in-flight map holds one [`Flight`] per key (and per
//! loader error type, so a waiter can read the error it expects); a flight leaves the
//! map before its outcome is published, so a caller arriving later either finds the
//! loaded value in the cache or starts a new flight.
//!
//! A leader that panics, or whose future is dropped before it finishes (an async
//! cancellation), abandons its flight: its guard removes the flight and wakes every
//! waiter, and the waiters start over, so one of them becomes the next leader.
//!
//! Sync waiters block on the flight's condition variable; async waiters store a
//! [`Waker`] in a slot of the flight and are woken by whoever finishes or abandons it.
//! Nothing here depends on an async runtime.

use crate::cache::{Cache, Inner};
use crate::error::Error;
use crate::shard::Lookup;
use crate::shim::{lock, read, Arc, AtomicUsize, Condvar, Mutex, Ordering};
use crate::weigh::Weigher;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Why [`Cache::try_get_with`] (or a cluster node's `try_get_with`, with
/// `C = ClusterError`) returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError<E, C = Error> {
    /// The loader returned this error. Every caller that was waiting on the same load
    /// receives the same `Arc`; nothing was cached, so the next call loads again.
    #[error("loader failed: {0}")]
    Loader(Arc<E>),
    /// The loader succeeded but the cache refused to store the value, or (on a
    /// cluster node) the lookup or the store failed. Every caller that was waiting on
    /// the same load receives this error.
    #[error(transparent)]
    Cache(C),
}

impl<E> From<Error> for LoadError<E> {
    fn from(e: Error) -> Self {
        LoadError::Cache(e)
    }
}

impl<E, C: Clone> Clone for LoadError<E, C> {
    fn clone(&self) -> Self {
        match self {
            LoadError::Loader(e) => LoadError::Loader(Arc::clone(e)),
            LoadError::Cache(e) => LoadError::Cache(e.clone()),
        }
    }
}

/// A failed load's error, with its type erased so one map holds flights of every
/// error type; a waiter downcasts it to the type its flight is keyed by.
type AnyError = Arc<dyn Any + Send + Sync>;

/// How a flight ended, as waiters receive it.
enum Outcome<V> {
    Value(V),
    Failed(AnyError),
}

impl<V: Clone> Outcome<V> {
    fn of<X: Clone + Send + Sync + 'static>(r: &Result<V, X>) -> Self {
        match r {
            Ok(v) => Outcome::Value(v.clone()),
            Err(x) => Outcome::Failed(Arc::new(x.clone())),
        }
    }

    fn to_result<X: Clone + 'static>(&self) -> Result<V, X> {
        match self {
            Outcome::Value(v) => Ok(v.clone()),
            Outcome::Failed(e) => match e.downcast_ref::<X>() {
                Some(x) => Err(x.clone()),
                // Flights are keyed by the error's type: a waiter only joins a flight
                // whose callers return its own error type.
                None => unreachable!("flight keyed by a different error type"),
            },
        }
    }
}

enum State<V> {
    /// The leader's loader runs. Async waiters' wakers, one slot per waiter (a slot is
    /// emptied when its waiter is dropped).
    Loading { wakers: Vec<Option<Waker>> },
    /// The leader finished; its outcome, for every waiter.
    Done(Outcome<V>),
    /// The leader panicked or was dropped: waiters start over.
    Abandoned,
}

/// One key's load in progress.
pub(crate) struct Flight<V> {
    state: Mutex<State<V>>,
    /// Sync waiters wait here.
    done: Condvar,
}

type FlightMap<K, V> = HashMap<(K, TypeId), Arc<Flight<V>>, ahash::RandomState>;

/// The loads in progress: one map per shard (picked by the key's hash like the shard
/// itself), so misses on different shards do not contend.
pub(crate) struct Flights<K, V> {
    maps: Box<[Mutex<FlightMap<K, V>>]>,
    /// Callers currently waiting for another caller's loader.
    waiting: AtomicUsize,
}

impl<K: Hash + Eq, V> Flights<K, V> {
    pub(crate) fn new(shards: usize, hasher: &ahash::RandomState) -> Self {
        Flights {
            maps: (0..shards)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// What joining a key's flight made of the caller.
pub(crate) enum Role<'a, K: Hash + Eq, V> {
    Leader(LeaderGuard<'a, K, V>),
    Waiter(Arc<Flight<V>>),
}

/// Held by the leader while its loader runs. Dropped without [`finish`](Self::finish)
/// (the loader panicked, or the leader's future was dropped), it abandons the flight
/// and wakes the waiters, one of which then loads.
pub(crate) struct LeaderGuard<'a, K: Hash + Eq, V> {
    map: &'a Mutex<FlightMap<K, V>>,
    key: Option<(K, TypeId)>,
    flight: Arc<Flight<V>>,
}

impl<K: Hash + Eq, V: Clone> LeaderGuard<'_, K, V> {
    /// Publishes the leader's result to every waiter and returns it.
    pub(crate) fn finish<X: Clone + Send + Sync + 'static>(
        mut self,
        r: Result<V, X>,
    ) -> Result<V, X> {
        self.end(State::Done(Outcome::of(&r)));
        r
    }
}

impl<K: Hash + Eq, V> LeaderGuard<'_, K, V> {
    /// Takes the flight out of the map, then publishes `end` and wakes every waiter.
    /// Out of the map first: a caller arriving from now on starts afresh (and finds the
    /// value in the cache if it was stored) rather than joining a flight that ended.
    fn end(&mut self, end: State<V>) {
        let Some(key) = self.key.take() else {
            return;
        };
        {
            let mut map = lock(self.map);
            if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                map.remove(&key);
            }
        }
        let wakers = {
            let mut state = lock(&self.flight.state);
            match std::mem::replace(&mut *state, end) {
                State::Loading { wakers } => wakers,
                State::Done(_) | State::Abandoned => Vec::new(),
            }
        };
        self.flight.done.notify_all();
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }
}

impl<K: Hash + Eq, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        self.end(State::Abandoned);
    }
}

impl<K, V, W> Inner<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// Joins the flight of `key` whose callers return errors of type `X`, or starts it.
    pub(crate) fn join<X: 'static>(&self, key: &K, hash: u64) -> Role<'_, K, V> {
        let map = &self.flights.maps[self.shard_of(hash)];
        let id = (key.clone(), TypeId::of::<X>());
        let mut m = lock(map);
        if let Some(f) = m.get(&id) {
            return Role::Waiter(Arc::clone(f));
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Loading { wakers: Vec::new() }),
            done: Condvar::new(),
        });
        m.insert(id.clone(), Arc::clone(&flight));
        drop(m);
        Role::Leader(LeaderGuard {
            map,
            key: Some(id),
            flight,
        })
    }

    /// The live value of `key`, without counting a hit or miss or touching its metadata:
    /// the leader's second look, after the first (counted) read missed.
    fn peek_value(&self, hash: u64, key: &K) -> Option<V> {
        let s = read(&self.slots[self.shard_of(hash)].shard);
        match s.lookup(hash, key, &*self.clock) {
            Lookup::Live(idx) => Some(s.value_at(idx).clone()),
            Lookup::Missing | Lookup::Expired => None,
        }
    }
}

/// Blocks until `flight` ends: its outcome, or `None` when it was abandoned.
fn wait_sync<V: Clone, X: Clone + 'static>(
    flight: &Flight<V>,
    waiting: &AtomicUsize,
) -> Option<Result<V, X>> {
    waiting.fetch_add(1, Ordering::Relaxed);
    let mut state = lock(&flight.state);
    loop {
        match &*state {
            State::Loading { .. } => {
                state = match flight.done.wait(state) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                }
            }
            State::Done(outcome) => {
                let r = outcome.to_result();
                drop(state);
                waiting.fetch_sub(1, Ordering::Relaxed);
                return Some(r);
            }
            State::Abandoned => {
                drop(state);
                waiting.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
        }
    }
}

/// An async waiter: resolves to the flight's outcome, or `None` when it was abandoned.
/// Its waker sits in one slot of the flight; dropping it empties the slot.
pub(crate) struct WaitFlight<'a, V, X> {
    flight: Arc<Flight<V>>,
    waiting: &'a AtomicUsize,
    /// The waker slot, once registered.
    slot: Option<usize>,
    _error: std::marker::PhantomData<fn() -> X>,
}

impl<'a, V, X> WaitFlight<'a, V, X> {
    pub(crate) fn new<K: Hash + Eq>(flight: Arc<Flight<V>>, flights: &'a Flights<K, V>) -> Self {
        WaitFlight {
            flight,
            waiting: &flights.waiting,
            slot: None,
            _error: std::marker::PhantomData,
        }
    }
}

impl<V, X> Unpin for WaitFlight<'_, V, X> {}

impl<V: Clone, X: Clone + 'static> Future for WaitFlight<'_, V, X> {
    type Output = Option<Result<V, X>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = lock(&this.flight.state);
        let out = match &mut *state {
            State::Loading { wakers } => {
                match this.slot {
                    Some(i) => match &mut wakers[i] {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        w => *w = Some(cx.waker().clone()),
                    },
                    None => {
                        this.slot = Some(wakers.len());
                        wakers.push(Some(cx.waker().clone()));
                        this.waiting.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return Poll::Pending;
            }
            State::Done(outcome) => Some(outcome.to_result()),
            State::Abandoned => None,
        };
        drop(state);
        if this.slot.take().is_some() {
            this.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        Poll::Ready(out)
    }
}

impl<V, X> Drop for WaitFlight<'_, V, X> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let State::Loading { wakers } = &mut *lock(&self.flight.state) {
                wakers[i] = None;
            }
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<K, V, W> Cache<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Weigher<K, V>,
{
    /// The value of `key`, or, on a miss, the value `init` returns, inserted as by
    /// [`insert`](Self::insert) (with the builder's default TTL, logged on a durable
    /// cache) and returned.
    ///
    /// Single flight: when many threads miss the same key at once, one of them runs its
    /// `init` and the others wait for that value (they park on the key, not on a shard
    /// lock, so other keys are not held up). If a value is written for `key` while
    /// `init` runs (an `insert`), it is newer than what `init` read: it is kept, and
    /// returned to the caller and the waiters instead of `init`'s. If `init` panics, the
    /// panic propagates to its caller and the waiting threads start over: one of them
    /// runs its own `init`.
    /// If the cache refuses the value (for example [`Error::OutOfMemory`] under
    /// `noeviction`), that error goes to the caller and every waiter. `init` must not
    /// load the same key through this cache: it would wait for itself.
    ///
    /// ```
    /// use larder::Cache;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let cache: Cache<u64, String> = Cache::builder().build();
    /// let loads = AtomicUsize::new(0);
    /// let load = |id: u64| {
    ///     loads.fetch_add(1, Ordering::Relaxed);
    ///     format!("user {id}") // an expensive lookup
    /// };
    /// std::thread::scope(|s| {
    ///     for _ in 0..8 {
    ///         s.spawn(|| assert_eq!(cache.get_with(7, || load(7)).unwrap(), "user 7"));
    ///     }
    /// });
    /// // However the threads interleaved, the value was loaded once.
    /// assert_eq!(loads.load(Ordering::Relaxed), 1);
    /// ```
    pub fn get_with(&self, key: K, init: impl FnOnce() -> V) -> Result<V, Error> {
        self.try_get_with::<Infallible>(key, || Ok(init()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(e) => match *e {},
            })
    }

    /// Like [`get_with`](Self::get_with), for a loader that can fail. An error is not
    /// cached: the caller that ran `init` and every caller that was waiting on it receive
    /// the same [`LoadError::Loader`]`(Arc<E>)`, and the next call loads again.
    ///
    /// Callers of `get_with` and of `try_get_with` with different error types do not
    /// share a load.
    pub fn try_get_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>>
    where
        E: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let hash = inner.hash(&key);
        loop {
            if let Some(v) = self.get(&key) {
                return Ok(v);
            }
            match inner.join::<LoadError<E>>(&key, hash) {
                Role::Waiter(flight) => {
                    if let Some(r) = wait_sync(&flight, &inner.flights.waiting) {
                        return r;
                    }
                    // Abandoned: start over.
                }
                Role::Leader(guard) => {
                    let r = match inner.peek_value(hash, &key) {
                        // A load finished between our miss and our joining.
                        Some(v) => Ok(v),
                        None => self.store_loaded(key, init()),
                    };
                    return guard.finish(r);
                }
            }
        }
    }

    /// The async form of [`get_with`](Self::get_with): on a miss, awaits `init` and
    /// inserts its value. Waiting tasks park on the key (their wakers are stored with
    /// the load in progress) and never block the thread. Works on any executor.
    ///
    /// If the future running `init` is dropped before it finishes (a cancelled task, a
    /// lost `select!`), or `init` panics, the waiting tasks are woken and one of them
    /// loads instead. The insert itself is the same as [`insert`](Self::insert)'s: on a
    /// durable cache with `appendfsync always` it waits for the fsync on this thread.
    ///
    /// ```
    /// # fn main() {
    /// use larder::Cache;
    /// let cache: Cache<u64, String> = Cache::builder().build();
    /// let value = futures_lite_block_on(cache.get_with_async(1, async { "one".to_string() }));
    /// assert_eq!(value.unwrap(), "one");
    /// # }
    /// # // A minimal executor, so the example needs no runtime.
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #     }
    /// # }
    /// ```
    pub async fn get_with_async(&self, key: K, init: impl Future<Output = V>) -> Result<V, Error> {
        self.try_get_with_async::<Infallible>(key, async { Ok(init.await) })
            .await
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(e) => match *e {},
            })
    }

    /// The async form of [`try_get_with`](Self::try_get_with): errors are not cached, and
    /// every task waiting on the load receives the same `Arc<E>`.
    pub async fn try_get_with_async<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, LoadError<E>>
    where
        E: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let hash = inner.hash(&key);
        loop {
            if let Some(v) = self.get(&key) {
                return Ok(v);
            }
            match inner.join::<LoadError<E>>(&key, hash) {
                Role::Waiter(flight) => {
                    if let Some(r) = WaitFlight::new(flight, &inner.flights).await {
                        return r;
                    }
                }
                // Dropping this future while `init` is pending drops the guard, which
                // abandons the flight.
                Role::Leader(guard) => {
                    let r = match inner.peek_value(hash, &key) {
                        Some(v) => Ok(v),
                        None => self.store_loaded(key, init.await),
                    };
                    return guard.finish(r);
                }
            }
        }
    }

    /// Callers (threads or tasks) currently waiting for a value another caller's loader
    /// is producing, over all keys. For monitoring, and for tests that need every caller
    /// to have reached the wait.
    pub fn loading_waiters(&self) -> usize {
        self.inner.flights.waiting()
    }

    /// The leader's part once its loader returned: store the value, unless a value was
    /// written meanwhile (it is newer than what the loader read): that one is returned.
    fn store_loaded<E>(&self, key: K, loaded: Result<V, E>) -> Result<V, LoadError<E>> {
        let v = loaded.map_err(|e| LoadError::Loader(Arc::new(e)))?;
        match self
            .inner
            .insert_absent(key, v.clone(), self.default_ttl())?
        {
            Some(newer) => Ok(newer),
            None => Ok(v),
        }
    }
}
