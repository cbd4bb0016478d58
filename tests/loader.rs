//! `get_with` and friends: one load per key however many callers miss it at once,
//! errors shared and not cached, and a loader that panics or is cancelled releases its
//! waiters.

use larder::{Background, Cache, LoadError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Generous: the machine may be busy; a correct run returns long before.
const PATIENCE: Duration = Duration::from_secs(120);

fn cache() -> Cache<u64, String> {
    Cache::builder()
        .shards(4)
        .background(Background::Manual)
        .build()
}

/// Spins (yielding) until `cond` holds; panics after [`PATIENCE`].
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Awaits (yielding to the runtime) until `cond` holds; panics after [`PATIENCE`].
async fn wait_until_async(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

#[test]
fn hundred_threads_missing_one_key_load_it_once() {
    const N: usize = 100;
    let c = cache();
    let loads = AtomicUsize::new(0);
    let start = Barrier::new(N);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    c.get_with(42, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Hold the load until every other thread waits on it, so all
                        // 100 really overlap.
                        wait_until("99 waiters", || c.loading_waiters() == N - 1);
                        "loaded".to_string()
                    })
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), "loaded");
        }
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(c.loading_waiters(), 0);
    assert_eq!(c.get(&42).as_deref(), Some("loaded"));
}

/// On a single-threaded runtime: if a waiting task blocked its thread, the loading task
/// could never run and the test would not finish.
#[tokio::test(flavor = "current_thread")]
async fn hundred_tasks_missing_one_key_load_it_once_without_blocking_the_runtime() {
    hundred_tasks(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_tasks_on_a_multi_thread_runtime_load_once() {
    hundred_tasks(100).await;
}

async fn hundred_tasks(n: usize) {
    let c = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, loads) = (c.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                let c2 = c.clone();
                c.get_with_async(42, async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    wait_until_async("all waiters", || c2.loading_waiters() == n - 1).await;
                    "loaded".to_string()
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "loaded");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(c.loading_waiters(), 0);
}

#[test]
fn an_error_reaches_every_waiter_and_is_not_cached() {
    const N: usize = 10;
    let c = cache();
    let loads = AtomicUsize::new(0);
    let start = Barrier::new(N);
    let errors: Vec<Arc<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let r = c.try_get_with(7, || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        wait_until("9 waiters", || c.loading_waiters() == N - 1);
                        Err("backend down".to_string())
                    });
                    match r {
                        Err(LoadError::Loader(e)) => e,
                        other => panic!("expected the loader's error, got {other:?}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // One error, shared: every caller holds the same allocation.
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(*errors[0], "backend down");
    assert!(!c.contains(&7), "an error is not cached");
    // The next call loads again, and this time succeeds.
    let v = c
        .try_get_with(7, || Ok::<_, String>("back".to_string()))
        .unwrap();
    assert_eq!(v, "back");
    assert_eq!(c.get(&7).as_deref(), Some("back"));
}

#[test]
fn a_panicking_loader_releases_its_waiters_and_one_of_them_loads() {
    const N: usize = 10;
    let c = cache();
    let calls = AtomicUsize::new(0);
    let start = Barrier::new(N);
    let results: Vec<Option<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.get_with(3, || {
                            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                                wait_until("9 waiters", || c.loading_waiters() == N - 1);
                                panic!("loader failed");
                            }
                            "second try".to_string()
                        })
                        .unwrap()
                    }));
                    r.ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The first loader panicked (in its own caller only); exactly one waiter loaded.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(results.iter().filter(|r| r.is_none()).count(), 1);
    assert!(results.iter().flatten().all(|v| v == "second try"));
    assert_eq!(c.loading_waiters(), 0);
    assert_eq!(c.get(&3).as_deref(), Some("second try"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_load_releases_its_waiters_and_one_of_them_loads() {
    const WAITERS: usize = 20;
    let c = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    // The first task leads with a loader that never finishes.
    let leader = {
        let (c, started) = (c.clone(), Arc::clone(&started));
        tokio::spawn(async move {
            c.get_with_async(9, async move {
                started.store(1, Ordering::SeqCst);
                std::future::pending::<String>().await
            })
            .await
        })
    };
    wait_until_async("the leader's loader", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (c, loads) = (c.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                c.get_with_async(9, async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    "after cancel".to_string()
                })
                .await
                .unwrap()
            })
        })
        .collect();
    wait_until_async("every waiter", || c.loading_waiters() == WAITERS).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for w in waiters {
        assert_eq!(w.await.unwrap(), "after cancel");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(c.loading_waiters(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn async_errors_reach_every_waiter() {
    const N: usize = 10;
    let c = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (c, loads) = (c.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                let c2 = c.clone();
                c.try_get_with_async(5, async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    wait_until_async("waiters", || c2.loading_waiters() == N - 1).await;
                    Err::<String, _>(std::io::Error::other("refused"))
                })
                .await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Err(LoadError::Loader(e)) => errors.push(e),
            other => panic!("expected the loader's error, got {other:?}"),
        }
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert!(!c.contains(&5));
}

#[test]
fn a_hit_does_not_run_the_loader() {
    let c = cache();
    c.insert(1, "present".into()).unwrap();
    let v = c
        .get_with(1, || panic!("the loader must not run on a hit"))
        .unwrap();
    assert_eq!(v, "present");
}

#[test]
fn a_refused_value_is_an_error_for_the_caller() {
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .shards(1)
        .max_memory(1024)
        .background(Background::Manual)
        .build();
    let r = c.get_with(1, || vec![0u8; 4096]);
    assert!(
        matches!(r, Err(larder::Error::EntryTooLarge { .. })),
        "{r:?}"
    );
    assert!(!c.contains(&1));
}

#[cfg(feature = "persistence")]
#[test]
fn a_loaded_value_is_logged_and_survives_a_reopen() {
    use larder::{Durability, Fsync};
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Cache<u64, String> {
        Cache::builder()
            .shards(2)
            .background(Background::Manual)
            .durability(Durability::new(dir.path()).fsync(Fsync::Always))
            .open()
            .unwrap()
    };
    let c = open();
    assert_eq!(
        c.get_with(11, || "from the loader".into()).unwrap(),
        "from the loader"
    );
    drop(c);
    let c = open();
    assert_eq!(c.get(&11).as_deref(), Some("from the loader"));
}

#[test]
fn a_value_inserted_while_loading_is_not_overwritten_by_the_loaded_one() {
    let c = cache();
    let v = c
        .get_with(1, || {
            // A writer stores a newer value while the loader still runs.
            c.insert(1, "written meanwhile".into()).unwrap();
            "loaded from a stale read".to_string()
        })
        .unwrap();
    assert_eq!(c.get(&1).as_deref(), Some("written meanwhile"));
    assert_eq!(v, "written meanwhile");
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_load_does_not_overwrite_a_value_inserted_meanwhile() {
    let c = cache();
    let v = c
        .get_with_async(2, async {
            c.insert(2, "written meanwhile".into()).unwrap();
            "loaded from a stale read".to_string()
        })
        .await
        .unwrap();
    assert_eq!(c.get(&2).as_deref(), Some("written meanwhile"));
    assert_eq!(v, "written meanwhile");
}
