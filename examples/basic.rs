//! A tour of larder's cache: bounded memory with LFU eviction, TTLs, SCAN, a pipeline,
//! a transaction, keyspace events, and INFO.
//!
//! Run with `cargo run --example basic`.

use larder::{Cache, EventKind, Policy, Ttl};
use std::time::Duration;

/// With `--features jemalloc`, the example runs on jemalloc and `info()` shows its figures.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // maxmemory 8mb, maxmemory-policy allkeys-lfu
    let cache: Cache<String, String> = Cache::builder()
        .max_memory(8 << 20)
        .eviction("allkeys-lfu".parse::<Policy>()?)
        .build();
    let events = cache.subscribe();

    cache.insert("user:1:name".into(), "Ada".into())?;
    cache.insert("user:2:name".into(), "Grace".into())?;
    cache.insert_with_ttl(
        "session:abc".into(),
        "user:1".into(),
        Duration::from_secs(30),
    )?;
    println!("GET user:1:name -> {:?}", cache.get("user:1:name"));
    match cache.ttl("session:abc") {
        Ttl::Remaining(ms) => println!("PTTL session:abc -> {ms} ms"),
        other => println!("PTTL session:abc -> {other:?}"),
    }

    // A pipeline: one lock per shard for many operations.
    let mut batch = cache.batch();
    for i in 0..1000 {
        batch = batch.insert(format!("item:{i}"), format!("value {i}"));
    }
    batch.apply()?;

    // SCAN with MATCH, as redis-cli --scan --pattern 'user:*' does.
    let mut cursor = 0;
    let mut users = Vec::new();
    loop {
        let page = cache.scan(cursor, Some("user:*"), 100);
        users.extend(page.keys);
        cursor = page.cursor;
        if cursor == 0 {
            break;
        }
    }
    users.sort();
    println!("SCAN MATCH user:* -> {users:?}");

    // A transaction over two keys: all or nothing.
    cache.insert("acct:a".into(), "100".into())?;
    cache.insert("acct:b".into(), "0".into())?;
    let keys = ["acct:a".to_string(), "acct:b".to_string()];
    cache.transaction(&keys, |tx| {
        let a: i64 = tx.get(&keys[0]).unwrap_or_default().parse().unwrap_or(0);
        let b: i64 = tx.get(&keys[1]).unwrap_or_default().parse().unwrap_or(0);
        if a < 30 {
            return Err("insufficient funds");
        }
        tx.insert(keys[0].clone(), (a - 30).to_string());
        tx.insert(keys[1].clone(), (b + 30).to_string());
        Ok(())
    })?;
    println!(
        "after transfer: a={:?} b={:?}",
        cache.get("acct:a"),
        cache.get("acct:b")
    );

    cache.unlink("item:0")?; // dropped on the lazy-free thread
    let sets = events
        .drain()
        .iter()
        .filter(|e| e.kind == EventKind::Set)
        .count();
    println!("keyspace events: {sets} set, {} dropped", events.dropped());

    println!("\n{}", cache.info());
    Ok(())
}
