//! The server commands over the cache's own introspection and persistence:
//! `MEMORY`, `SAVE`, `BGSAVE`, `BGREWRITEAOF`, `LASTSAVE`.

use super::codec::Value;
use super::keyspace::Keyspace;
use super::session::{unknown_subcommand, wrong_arity};
use super::strings::{key, write_error};
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs the server command `name`, or `None` if it is not one of this module's.
/// `started_unix` is when the server started (Redis's `LASTSAVE` before any save).
pub(crate) fn run<S: Keyspace>(
    store: &S,
    name: &str,
    a: &[&[u8]],
    started_unix: u64,
) -> Option<Value> {
    let cache = store.cache();
    Some(match name {
        "save" => {
            // A save takes as long as writing the whole keyspace: on a multi-threaded
            // runtime the other connections move off this worker meanwhile (Redis's
            // SAVE stops the whole server).
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let saved = if multi {
                tokio::task::block_in_place(|| cache.save())
            } else {
                cache.save()
            };
            match saved {
                Ok(()) => Value::ok(),
                Err(e) => write_error(e),
            }
        }
        "bgsave" | "bgrewriteaof" => {
            if a.len() > 2 || (a.len() == 2 && !a[1].eq_ignore_ascii_case(b"SCHEDULE")) {
                return Some(Value::error("ERR syntax error"));
            }
            match cache.bgsave() {
                Ok(()) if name == "bgsave" => Value::Simple("Background saving started".into()),
                Ok(()) => Value::Simple("Background append only file rewriting started".into()),
                Err(e) => write_error(e),
            }
        }
        "lastsave" => {
            let info = cache.info();
            let at = info
                .persistence
                .map(|p| p.rdb_last_save_time)
                .filter(|t| *t > 0)
                .unwrap_or(started_unix);
            Value::Integer(at as i64)
        }
        "memory" => memory(store, a),
        _ => return None,
    })
}

fn memory<S: Keyspace>(store: &S, a: &[&[u8]]) -> Value {
    let cache = store.cache();
    match a[1].to_ascii_lowercase().as_slice() {
        b"usage" if a.len() == 3 || (a.len() == 5 && a[3].eq_ignore_ascii_case(b"SAMPLES")) => {
            match key(a[2]) {
                Ok(k) => cache
                    .memory_usage(k)
                    .map_or(Value::Null, |n| Value::Integer(n as i64)),
                Err(e) => e,
            }
        }
        b"usage" => Value::error("ERR syntax error"),
        b"purge" if a.len() == 2 => {
            cache.memory_purge();
            Value::ok()
        }
        b"stats" if a.len() == 2 => {
            let info = cache.info();
            let m = &info.memory;
            let kv = |k: &str, v: u64| (Value::bulk(k), Value::Integer(v as i64));
            Value::Map(vec![
                kv("peak.allocated", m.used_memory_peak),
                kv("total.allocated", m.used_memory),
                kv("keys.count", cache.len() as u64),
                kv("dataset.bytes", m.used_memory),
            ])
        }
        b"doctor" if a.len() == 2 => {
            let info = cache.info();
            let m = &info.memory;
            let text = if m.maxmemory > 0 && m.used_memory * 10 > m.maxmemory * 9 {
                format!(
                    "used_memory is {} of maxmemory {} (over 90%): expect evictions, or raise \
                     maxmemory.\n",
                    m.used_memory, m.maxmemory
                )
            } else {
                "No memory problem found: used_memory is within bounds.\n".to_string()
            };
            Value::Verbatim {
                format: *b"txt",
                text: text.into_bytes(),
            }
        }
        b"purge" | b"stats" | b"doctor" => wrong_arity(&format!(
            "memory|{}",
            String::from_utf8_lossy(&a[1].to_ascii_lowercase())
        )),
        _ => unknown_subcommand("memory", a[1]),
    }
}

/// Unix seconds now minus `elapsed_secs`.
pub(crate) fn unix_secs_ago(elapsed_secs: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(elapsed_secs)
}
