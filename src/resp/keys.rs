//! The keyspace commands (`DEL`, `EXISTS`, the `EXPIRE` family with `NX`/`XX`/`GT`/
//! `LT`, `TTL`, `PERSIST`, `TYPE`, `SCAN`, `KEYS`, `RANDOMKEY`, `FLUSHDB`, `TOUCH`,
//! `OBJECT`), with Redis's replies and error texts.

use super::codec::Value;
use super::keyspace::Keyspace;
use super::session::{now_ms, unknown_subcommand, wrong_arity};
use super::strings::{atomically, key, parse_i64, ttl_seconds, write_error, NOT_INTEGER, SYNTAX};
use crate::{Cache, Ttl, Weigher};
use std::collections::HashSet;

/// Runs the key command `name`, or `None` if it is not one.
pub(crate) fn run<S: Keyspace>(store: &S, name: &str, a: &[&[u8]]) -> Option<Value> {
    let cache = store.cache();
    Some(match name {
        "del" | "unlink" => {
            let mut n = 0;
            for k in &a[1..] {
                let Ok(k) = key(k) else { continue };
                let r = if name == "del" {
                    cache.remove(k)
                } else {
                    cache.unlink(k)
                };
                match r {
                    Ok(true) => n += 1,
                    Ok(false) => {}
                    Err(e) => return Some(write_error(e)),
                }
            }
            Value::Integer(n)
        }
        "exists" => Value::Integer(
            a[1..]
                .iter()
                .filter(|k| key(k).is_ok_and(|k| cache.contains(k)))
                .count() as i64,
        ),
        "touch" => Value::Integer(
            a[1..]
                .iter()
                .filter(|k| key(k).is_ok_and(|k| cache.get(k).is_some()))
                .count() as i64,
        ),
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(cache, name, a),
        "ttl" | "pttl" => match key(a[1]) {
            Ok(k) => Value::Integer(match cache.ttl(k) {
                Ttl::Missing => -2,
                Ttl::Persistent => -1,
                Ttl::Remaining(ms) if name == "ttl" => ttl_seconds(ms),
                Ttl::Remaining(ms) => ms as i64,
            }),
            Err(e) => e,
        },
        "expiretime" | "pexpiretime" => atomically(cache, &a[1..2], |tx, k| {
            Ok(Value::Integer(match tx.expire_at(&k[0]) {
                None => -2,
                Some(None) => -1,
                Some(Some(at)) if name == "expiretime" => ((at + 500) / 1000) as i64,
                Some(Some(at)) => at as i64,
            }))
        }),
        "persist" => match key(a[1]) {
            Ok(k) => match cache.persist(k) {
                Ok(had) => Value::Integer(i64::from(had)),
                Err(e) => write_error(e),
            },
            Err(e) => e,
        },
        "type" => match key(a[1]) {
            Ok(k) if cache.contains(k) => Value::Simple("string".into()),
            Ok(_) => Value::Simple("none".into()),
            Err(e) => e,
        },
        "scan" => scan(cache, a),
        "keys" => {
            let pattern = String::from_utf8_lossy(a[1]).into_owned();
            let all = pattern == "*";
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            let mut cursor = 0;
            loop {
                let page = cache.scan(cursor, (!all).then_some(pattern.as_str()), 1024);
                for k in page.keys {
                    if seen.insert(k.clone()) {
                        out.push(Value::bulk(k));
                    }
                }
                cursor = page.cursor;
                if cursor == 0 {
                    break;
                }
            }
            Value::Array(out)
        }
        "randomkey" => randomkey(cache),
        "flushdb" | "flushall" => {
            if a.len() > 2
                || (a.len() == 2
                    && !a[1].eq_ignore_ascii_case(b"ASYNC")
                    && !a[1].eq_ignore_ascii_case(b"SYNC"))
            {
                return Some(Value::error(SYNTAX));
            }
            match cache.clear() {
                Ok(()) => Value::ok(),
                Err(e) => write_error(e),
            }
        }
        "object" => object(cache, a),
        _ => return None,
    })
}

fn expire<W: Weigher<String, Vec<u8>>>(
    cache: &Cache<String, Vec<u8>, W>,
    name: &str,
    a: &[&[u8]],
) -> Value {
    let n = match parse_i64(a[2]) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let invalid = || Value::Error(format!("ERR invalid expire time in '{name}' command"));
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Value::Error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Value::error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return Value::error("ERR GT and LT options at the same time are not compatible");
    }
    // The absolute time in ms, as Redis computes it (and refuses overflow).
    let seconds = name == "expire" || name == "expireat";
    let relative = name == "expire" || name == "pexpire";
    let ms = if seconds {
        n.checked_mul(1000)
    } else {
        Some(n)
    };
    let at = match ms.and_then(|ms| {
        if relative {
            ms.checked_add(now_ms() as i64)
        } else {
            Some(ms)
        }
    }) {
        Some(at) => at,
        None => return invalid(),
    };
    let k = match key(a[1]) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let at = at.max(0) as u64;
    if !(nx || xx || gt || lt) {
        return match cache.expire_at(k, at) {
            Ok(existed) => Value::Integer(i64::from(existed)),
            Err(e) => write_error(e),
        };
    }
    atomically(cache, &a[1..2], |tx, k| {
        let Some(current) = tx.expire_at(&k[0]) else {
            return Ok(Value::Integer(0));
        };
        // A key without a TTL counts as an infinite one for GT and LT.
        let ok = match current {
            None => !(xx || gt),
            Some(cur) => !nx && (!gt || at > cur) && (!lt || at < cur),
        };
        if !ok {
            return Ok(Value::Integer(0));
        }
        if at <= tx.now_ms() {
            tx.remove(&k[0]);
        } else if let Some(v) = tx.get(&k[0]) {
            tx.insert_expiring_at(k[0].clone(), v, at);
        }
        Ok(Value::Integer(1))
    })
}

fn scan<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>, a: &[&[u8]]) -> Value {
    let cursor = match std::str::from_utf8(a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => return Value::error("ERR invalid cursor"),
    };
    let mut pattern = None;
    let mut count = 10usize;
    let mut only_strings = true;
    let mut i = 2;
    while i < a.len() {
        if i + 1 >= a.len() {
            return Value::error(SYNTAX);
        }
        match a[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(String::from_utf8_lossy(a[i + 1]).into_owned()),
            b"COUNT" => match parse_i64(a[i + 1]) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => return Value::error(SYNTAX),
                Err(_) => return Value::error(NOT_INTEGER),
            },
            b"TYPE" => only_strings = a[i + 1].eq_ignore_ascii_case(b"string"),
            _ => return Value::error(SYNTAX),
        }
        i += 2;
    }
    let pattern = pattern.filter(|p| p != "*");
    let page = cache.scan(cursor, pattern.as_deref(), count);
    let keys = if only_strings {
        page.keys.into_iter().map(Value::bulk).collect()
    } else {
        Vec::new()
    };
    Value::Array(vec![
        Value::bulk(page.cursor.to_string()),
        Value::Array(keys),
    ])
}

fn randomkey<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>) -> Value {
    if cache.is_empty() {
        return Value::Null;
    }
    // Start a scan at a random shard and bucket: the cursor's high half is the shard,
    // the low half the bucket; the scan returns the first live key from there on.
    let r = crate::counter::thread_rand();
    let mut cursor = r & 0x0000_00ff_ffff_ffff;
    for _ in 0..64 {
        let page = cache.scan(cursor, None, 1);
        if let Some(k) = page.keys.into_iter().next() {
            return Value::bulk(k);
        }
        cursor = page.cursor;
    }
    let page = cache.scan(0, None, 1);
    Value::opt_bulk(page.keys.into_iter().next().map(String::into_bytes))
}

fn object<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>, a: &[&[u8]]) -> Value {
    let sub = a[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"encoding" if a.len() == 3 => match key(a[2]) {
            Ok(k) => match cache.get(k) {
                None => Value::Null,
                Some(v) => Value::bulk(if v.len() <= 20 && parse_i64(&v).is_ok() {
                    "int"
                } else if v.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }),
            },
            Err(e) => e,
        },
        b"freq" | b"idletime" | b"refcount" if a.len() == 3 => {
            let k = match key(a[2]) {
                Ok(k) => k,
                Err(e) => return e,
            };
            let Some(stats) = cache.access_stats(k) else {
                return Value::Null;
            };
            match (sub.as_slice(), stats) {
                (b"refcount", _) => Value::Integer(refcount(cache, k)),
                (b"freq", crate::AccessStats::Frequency(f)) => Value::Integer(f.into()),
                (b"freq", _) => Value::error(
                    "ERR An LFU maxmemory policy is not selected, access frequency not \
                     tracked. Please note that when switching between policies at runtime \
                     LRU and LFU data will take some time to adjust.",
                ),
                (_, crate::AccessStats::Idle(d)) => Value::Integer(d.as_secs() as i64),
                (_, _) => Value::error(
                    "ERR An LFU maxmemory policy is selected, idle time not tracked. Please \
                     note that when switching between policies at runtime LRU and LFU data \
                     will take some time to adjust.",
                ),
            }
        }
        b"encoding" | b"freq" | b"idletime" | b"refcount" => {
            wrong_arity(&format!("object|{}", String::from_utf8_lossy(&sub)))
        }
        b"help" => super::session::help_lines(&[
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ]),
        _ => unknown_subcommand("object", a[1]),
    }
}

/// `OBJECT REFCOUNT`: 1, or Redis's shared-integer count (`INT_MAX`) for the values
/// Redis stores as shared integers: canonical 0..=9999, unless an LRU or LFU policy
/// bounds memory (Redis then gives each key its own object to keep its access data).
fn refcount<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>, k: &str) -> i64 {
    let shared = cache.get(k).is_some_and(|v| {
        !v.is_empty()
            && v.len() <= 4
            && v.iter().all(u8::is_ascii_digit)
            && (v[0] != b'0' || v.len() == 1)
    });
    let info = cache.info();
    let policy = info.memory.maxmemory_policy.to_string();
    let own_objects =
        info.memory.maxmemory > 0 && (policy.ends_with("-lru") || policy.ends_with("-lfu"));
    if shared && !own_objects {
        i64::from(i32::MAX)
    } else {
        1
    }
}
