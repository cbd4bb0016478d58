//! The string commands (`GET`, `SET` and its options, `INCR`..., `APPEND`,
//! `GETRANGE`, `SETRANGE`, `MGET`, `MSET`...), with Redis's replies and error texts.
//! Read-modify-write commands run as one `Cache::transaction` over their keys, so they
//! are atomic as in Redis.

use super::codec::Value;
use super::keyspace::Keyspace;
use super::session::{now_ms, wrong_arity};
use crate::{Cache, Error, TxError, Weigher};

pub(crate) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub(crate) const SYNTAX: &str = "ERR syntax error";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const OVERFLOW: &str = "ERR increment or decrement would overflow";
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
/// Redis's `proto-max-bulk-len` default, the longest string `APPEND` and `SETRANGE`
/// may build.
const MAX_STRING: usize = 512 << 20;

/// Redis's `string2ll`: an optional `-`, then digits without a leading zero (`0`
/// itself aside), nothing else, in range.
pub(crate) fn parse_i64(b: &[u8]) -> Result<i64, Value> {
    let bad = || Value::error(NOT_INTEGER);
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && (digits.len() > 1 || b.len() > 1))
    {
        return Err(bad());
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

/// Redis's `string2ld` for `INCRBYFLOAT`: a finite decimal or exponent number, no
/// spaces.
fn parse_f64(b: &[u8]) -> Result<f64, Value> {
    let bad = || Value::error(NOT_FLOAT);
    let s = std::str::from_utf8(b).map_err(|_| bad())?;
    if s.is_empty()
        || s.bytes()
            .any(|c| !(c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')))
    {
        return Err(bad());
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(bad)
}

/// Redis's text for `INCRBYFLOAT`'s result: fixed notation, at most 17 decimals,
/// trailing zeros dropped.
fn format_float(f: f64) -> String {
    let mut s = format!("{f:.15}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// A key as the cache stores it: UTF-8 text.
pub(crate) fn key(b: &[u8]) -> Result<&str, Value> {
    std::str::from_utf8(b)
        .map_err(|_| Value::error("ERR invalid key: this server stores UTF-8 keys only"))
}

/// The reply for a refused write.
pub(crate) fn write_error(e: Error) -> Value {
    match e {
        Error::OutOfMemory { .. } | Error::EntryTooLarge { .. } => Value::error(OOM),
        Error::Cluster(text) => Value::Error(text),
        Error::Persistence(_) => Value::Error(e.to_string()),
        e => Value::Error(format!("ERR {e}")),
    }
}

pub(crate) fn tx_error(e: TxError<Value>) -> Value {
    match e {
        TxError::Aborted(v) => v,
        TxError::Write(e) => write_error(e),
        // Every key a command touches is declared: this is a bug, said as Redis would.
        _ => Value::error("ERR internal error: a transaction touched an undeclared key"),
    }
}

fn done<T>(r: Result<T, Error>, f: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(t) => f(t),
        Err(e) => write_error(e),
    }
}

type Tx<'t, W> = crate::Transaction<'t, String, Vec<u8>, W>;

/// Runs `f` atomically over `keys`.
pub(crate) fn atomically<W: Weigher<String, Vec<u8>>>(
    cache: &Cache<String, Vec<u8>, W>,
    keys: &[&[u8]],
    f: impl FnOnce(&mut Tx<'_, W>, &[String]) -> Result<Value, Value>,
) -> Value {
    let keys: Vec<String> = match keys.iter().map(|k| key(k).map(str::to_owned)).collect() {
        Ok(k) => k,
        Err(e) => return e,
    };
    match cache.transaction(&keys, |tx| f(tx, &keys)) {
        Ok(v) => v,
        Err(e) => tx_error(e),
    }
}

/// Whether `name` is one of the commands of this module.
pub(crate) fn is_string_command(name: &str) -> bool {
    matches!(
        name,
        "get"
            | "set"
            | "setnx"
            | "setex"
            | "psetex"
            | "getdel"
            | "getex"
            | "mget"
            | "mset"
            | "msetnx"
            | "incr"
            | "decr"
            | "incrby"
            | "decrby"
            | "incrbyfloat"
            | "append"
            | "strlen"
            | "getrange"
            | "setrange"
    )
}

/// An expiry option's absolute time in ms, from `EX`/`PX`/`EXAT`/`PXAT` and its
/// argument; `cmd` names the command in the error.
fn expire_at(unit: &[u8], arg: &[u8], cmd: &str) -> Result<u64, Value> {
    let n = parse_i64(arg)?;
    let invalid = || Value::Error(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let n = n as u64;
    let ms = match unit.to_ascii_uppercase().as_slice() {
        b"EX" => n.checked_mul(1000).and_then(|m| m.checked_add(now_ms())),
        b"PX" => n.checked_add(now_ms()),
        b"EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    ms.filter(|m| *m <= i64::MAX as u64).ok_or_else(invalid)
}

/// Runs the string command `name`, or `None` if it is not one.
pub(crate) fn run<S: Keyspace>(store: &S, name: &str, a: &[&[u8]]) -> Option<Value> {
    let cache = store.cache();
    Some(match name {
        "get" => match key(a[1]) {
            Ok(k) => Value::opt_bulk(cache.get(k)),
            Err(e) => e,
        },
        "set" => set(cache, a),
        "setnx" => atomically(cache, &a[1..2], |tx, k| {
            if tx.contains(&k[0]) {
                return Ok(Value::Integer(0));
            }
            tx.insert(k[0].clone(), a[2].to_vec());
            Ok(Value::Integer(1))
        }),
        "setex" | "psetex" => {
            let unit: &[u8] = if name == "setex" { b"EX" } else { b"PX" };
            match (key(a[1]), expire_at(unit, a[2], name)) {
                (Ok(k), Ok(at)) => done(
                    cache.insert_expiring_at(k.to_owned(), a[3].to_vec(), at),
                    |()| Value::ok(),
                ),
                (Err(e), _) | (_, Err(e)) => e,
            }
        }
        "getdel" => atomically(cache, &a[1..2], |tx, k| {
            let v = tx.get(&k[0]);
            if v.is_some() {
                tx.remove(&k[0]);
            }
            Ok(Value::opt_bulk(v))
        }),
        "getex" => getex(cache, a),
        "mget" => Value::Array(
            a[1..]
                .iter()
                .map(|k| match key(k) {
                    Ok(k) => Value::opt_bulk(cache.get(k)),
                    Err(_) => Value::Null,
                })
                .collect(),
        ),
        "mset" => {
            if a.len() % 2 == 0 {
                return Some(wrong_arity(name));
            }
            let mut entries = Vec::with_capacity(a.len() / 2);
            for pair in a[1..].chunks_exact(2) {
                match key(pair[0]) {
                    Ok(k) => entries.push((k.to_owned(), pair[1].to_vec())),
                    Err(e) => return Some(e),
                }
            }
            done(cache.insert_all(entries), |()| Value::ok())
        }
        "msetnx" => {
            if a.len() % 2 == 0 {
                return Some(wrong_arity(name));
            }
            let keys: Vec<&[u8]> = a[1..].iter().step_by(2).copied().collect();
            atomically(cache, &keys, |tx, k| {
                if k.iter().any(|k| tx.contains(k)) {
                    return Ok(Value::Integer(0));
                }
                for (i, k) in k.iter().enumerate() {
                    tx.insert(k.clone(), a[2 + 2 * i].to_vec());
                }
                Ok(Value::Integer(1))
            })
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match parse_i64(a[2]) {
                    Ok(n) if name == "incrby" => n,
                    Ok(n) => match n.checked_neg() {
                        Some(n) => n,
                        None => return Some(Value::error("ERR decrement would overflow")),
                    },
                    Err(e) => return Some(e),
                },
            };
            atomically(cache, &a[1..2], |tx, k| {
                let cur = match tx.get(&k[0]) {
                    Some(v) => parse_i64(&v)?,
                    None => 0,
                };
                let new = cur.checked_add(by).ok_or_else(|| Value::error(OVERFLOW))?;
                tx.insert_keep_ttl(k[0].clone(), new.to_string().into_bytes());
                Ok(Value::Integer(new))
            })
        }
        "incrbyfloat" => {
            let by = match parse_f64(a[2]) {
                Ok(f) => f,
                Err(e) => return Some(e),
            };
            atomically(cache, &a[1..2], |tx, k| {
                let cur = match tx.get(&k[0]) {
                    Some(v) => parse_f64(&v)?,
                    None => 0.0,
                };
                let new = cur + by;
                if !new.is_finite() {
                    return Err(Value::error("ERR increment would produce NaN or Infinity"));
                }
                let text = format_float(new);
                tx.insert_keep_ttl(k[0].clone(), text.clone().into_bytes());
                Ok(Value::bulk(text))
            })
        }
        "append" => atomically(cache, &a[1..2], |tx, k| {
            let mut v = tx.get(&k[0]).unwrap_or_default();
            if v.len() + a[2].len() > MAX_STRING {
                return Err(Value::error(TOO_BIG));
            }
            v.extend_from_slice(a[2]);
            let n = v.len();
            tx.insert_keep_ttl(k[0].clone(), v);
            Ok(Value::Integer(n as i64))
        }),
        "strlen" => match key(a[1]) {
            Ok(k) => Value::Integer(cache.get(k).map_or(0, |v| v.len()) as i64),
            Err(e) => e,
        },
        "getrange" => {
            let (start, end) = match (parse_i64(a[2]), parse_i64(a[3])) {
                (Ok(s), Ok(e)) => (s, e),
                (Err(e), _) | (_, Err(e)) => return Some(e),
            };
            match key(a[1]) {
                Ok(k) => Value::bulk(getrange(&cache.get(k).unwrap_or_default(), start, end)),
                Err(e) => e,
            }
        }
        "setrange" => {
            let offset = match parse_i64(a[2]) {
                Ok(o) if o < 0 => return Some(Value::error("ERR offset is out of range")),
                Ok(o) => o as usize,
                Err(e) => return Some(e),
            };
            let piece = a[3];
            atomically(cache, &a[1..2], |tx, k| {
                let cur = tx.get(&k[0]);
                if piece.is_empty() {
                    return Ok(Value::Integer(cur.map_or(0, |v| v.len()) as i64));
                }
                if offset.saturating_add(piece.len()) > MAX_STRING {
                    return Err(Value::error(TOO_BIG));
                }
                let mut v = cur.unwrap_or_default();
                if v.len() < offset + piece.len() {
                    v.resize(offset + piece.len(), 0);
                }
                v[offset..offset + piece.len()].copy_from_slice(piece);
                let n = v.len();
                tx.insert_keep_ttl(k[0].clone(), v);
                Ok(Value::Integer(n as i64))
            })
        }
        _ => return None,
    })
}

/// Redis's `GETRANGE` arithmetic.
fn getrange(v: &[u8], mut start: i64, mut end: i64) -> Vec<u8> {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Vec::new();
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if len == 0 || start > end {
        return Vec::new();
    }
    v[start as usize..=end as usize].to_vec()
}

/// How `SET` treats the key's expiry.
enum Expiry {
    Clear,
    Keep,
    At(u64),
}

fn set<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>, a: &[&[u8]]) -> Value {
    let (mut nx, mut xx, mut get) = (false, false, false);
    let mut expiry = Expiry::Clear;
    let mut expiry_given = false;
    let mut i = 3;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if !expiry_given => {
                expiry = Expiry::Keep;
                expiry_given = true;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !expiry_given && i + 1 < a.len() => {
                match expire_at(&opt, a[i + 1], "set") {
                    Ok(at) => expiry = Expiry::At(at),
                    Err(e) => return e,
                }
                expiry_given = true;
                i += 1;
            }
            _ => return Value::error(SYNTAX),
        }
        i += 1;
    }
    let k = match key(a[1]) {
        Ok(k) => k,
        Err(e) => return e,
    };
    if !(nx || xx || get) {
        return match expiry {
            Expiry::Clear => done(cache.insert(k.to_owned(), a[2].to_vec()), |()| Value::ok()),
            Expiry::At(at) => done(
                cache.insert_expiring_at(k.to_owned(), a[2].to_vec(), at),
                |()| Value::ok(),
            ),
            Expiry::Keep => atomically(cache, &a[1..2], |tx, k| {
                tx.insert_keep_ttl(k[0].clone(), a[2].to_vec());
                Ok(Value::ok())
            }),
        };
    }
    atomically(cache, &a[1..2], |tx, k| {
        let old = if get { tx.get(&k[0]) } else { None };
        let exists = if get {
            old.is_some()
        } else {
            tx.contains(&k[0])
        };
        let skip = (nx && exists) || (xx && !exists);
        if !skip {
            let v = a[2].to_vec();
            match expiry {
                Expiry::Clear => tx.insert(k[0].clone(), v),
                Expiry::Keep => tx.insert_keep_ttl(k[0].clone(), v),
                Expiry::At(at) => tx.insert_expiring_at(k[0].clone(), v, at),
            }
        }
        Ok(if get {
            Value::opt_bulk(old)
        } else if skip {
            Value::Null
        } else {
            Value::ok()
        })
    })
}

fn getex<W: Weigher<String, Vec<u8>>>(cache: &Cache<String, Vec<u8>, W>, a: &[&[u8]]) -> Value {
    let mut change: Option<Expiry> = None;
    let mut i = 2;
    while i < a.len() {
        let opt = a[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"PERSIST" if change.is_none() => change = Some(Expiry::Clear),
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if change.is_none() && i + 1 < a.len() => {
                match expire_at(&opt, a[i + 1], "getex") {
                    Ok(at) => change = Some(Expiry::At(at)),
                    Err(e) => return e,
                }
                i += 1;
            }
            _ => return Value::error(SYNTAX),
        }
        i += 1;
    }
    let Some(change) = change else {
        return match key(a[1]) {
            Ok(k) => Value::opt_bulk(cache.get(k)),
            Err(e) => e,
        };
    };
    atomically(cache, &a[1..2], |tx, k| {
        let v = tx.get(&k[0]);
        if let Some(v) = &v {
            match change {
                Expiry::At(at) if at <= tx.now_ms() => {
                    tx.remove(&k[0]);
                }
                Expiry::At(at) => tx.insert_expiring_at(k[0].clone(), v.clone(), at),
                Expiry::Clear if tx.expire_at(&k[0]) == Some(None) => {}
                Expiry::Clear | Expiry::Keep => tx.insert(k[0].clone(), v.clone()),
            }
        }
        Ok(Value::opt_bulk(v))
    })
}

/// A TTL in whole seconds as Redis rounds it for `TTL`.
pub(crate) fn ttl_seconds(ms: u64) -> i64 {
    ((ms + 500) / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Ok(0));
        assert_eq!(parse_i64(b"-12"), Ok(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            &b"01"[..],
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"9223372036854775808",
            b"1.0",
        ] {
            assert!(
                parse_i64(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn floats_and_ranges() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(3.0e3), "3000");
        assert_eq!(format_float(-0.0), "0");
        assert!(parse_f64(b"inf").is_err() && parse_f64(b"nan").is_err());
        assert_eq!(parse_f64(b"5.0e3"), Ok(5000.0));
        assert_eq!(getrange(b"Hello World", 0, 3), b"Hell");
        assert_eq!(getrange(b"Hello World", -3, -1), b"rld");
        assert_eq!(getrange(b"Hello World", 0, -1), b"Hello World");
        assert_eq!(getrange(b"Hello World", 10, 100), b"d");
        assert_eq!(getrange(b"Hello World", 5, 3), b"");
        assert_eq!(getrange(b"", 0, -1), b"");
        assert_eq!(ttl_seconds(1499), 1);
        assert_eq!(ttl_seconds(1500), 2);
    }
}
