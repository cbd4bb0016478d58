//! A cache that survives a restart: open a data directory, write, close, reopen.
//!
//! Run with `cargo run --example durable --features persistence`.

use larder::{Cache, Durability, Fsync};
use std::time::Duration;

/// With `--features jemalloc`, the example runs on jemalloc and `info()` shows its figures.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("larder-durable-example-{}", std::process::id()));
    let durability = || Durability::new(&dir).fsync(Fsync::Always);

    {
        let cache: Cache<String, String> = Cache::builder().durability(durability()).open()?;
        cache.insert("user:1".into(), "Ada".into())?;
        cache.insert_with_ttl(
            "session:9".into(),
            "user:1".into(),
            Duration::from_secs(600),
        )?;
        cache.remove("nobody")?;
        // `always`: each write above returned only once its record was fsynced.
        cache.save()?; // compact the log into a snapshot
        cache.insert("user:2".into(), "Grace".into())?;
        println!("wrote 3 keys to {}", dir.display());
    } // dropped: the cache is closed (a crash here would lose nothing acknowledged)

    let cache: Cache<String, String> = Cache::builder().durability(durability()).open()?;
    println!("after restart: user:1 = {:?}", cache.get("user:1"));
    println!("after restart: user:2 = {:?}", cache.get("user:2"));
    println!(
        "after restart: session:9 ttl = {:?}",
        cache.ttl("session:9")
    );
    let info = cache.info();
    if let Some(p) = &info.persistence {
        println!(
            "loaded {} base entries and {} log records in {} ms",
            p.loading_base_entries, p.loading_records, p.loading_time_ms
        );
    }
    drop(cache);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
