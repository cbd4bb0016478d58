//! The RESP server with real clients: redis-cli, a conformance script whose replies are
//! compared with a real redis-server's, pipelining, per-connection errors,
//! authentication and limits.

#![cfg(feature = "resp")]

mod resp_support;

use larder::resp::{RespConfig, RespUser, Value};
use larder::Cache;
use resp_support::{have, redis_cli, Client, Larder, Redis};
use std::time::Duration;

/// The conformance script: each line runs on larder and on redis-server, and the
/// replies must be equal. Lines starting with `sorted:` compare arrays as sets
/// (KEYS order is the hash table's).
const SCRIPT: &str = r#"
FLUSHALL
PING
PING hello
ECHO "hi there"
SET k v
GET k
GET missing
SET k v2 NX
SET k v3 XX
GET k
SET k v4 XX GET
SET k2 v NX GET
SET n 10
INCR n
INCRBY n 5
DECR n
DECRBY n 3
INCR k
INCRBY n abc
INCRBY n 9223372036854775807
DECRBY n -9223372036854775808
INCR nope
SET lead 012
INCR lead
INCRBYFLOAT f 10.5
INCRBYFLOAT f 0.25
INCRBYFLOAT f 5.0e3
INCRBYFLOAT f abc
INCRBYFLOAT k 1
APPEND a Hello
APPEND a " World"
STRLEN a
STRLEN missing
GETRANGE a 0 4
GETRANGE a -5 -1
GETRANGE a 5 3
GETRANGE a 0 100
GETRANGE missing 0 -1
GETRANGE a x 1
SETRANGE a 6 Redis
GET a
SETRANGE pad 3 x
GET pad
SETRANGE a -1 x
SETRANGE empty 0 ""
EXISTS empty
SETNX k x
SETNX new x
SETEX e 100 v
SETEX e 0 v
SETEX e x v
PSETEX e2 100000 v
TTL e
PTTL k
TTL k
TTL missing
PTTL missing
GETDEL new
GETDEL new
GETEX k
GETEX k PERSIST
GETEX k EX 0
GETEX k BAD
GETEX missing EX 10
MSET m1 a m2 b
MGET m1 m2 missing
MSET m1
MSETNX m1 x m3 y
MSETNX m3 x m4 y
MGET m3 m4
DEL m1 m2 missing
EXISTS m3 m3 missing
UNLINK m3 m4
EXPIRE k 100
EXPIRE k 100 NX
EXPIRE k 200 GT
EXPIRE k 50 GT
EXPIRE k 50 LT
EXPIRE k 10 NX XX
EXPIRE k 10 GT LT
EXPIRE k 10 FOO
EXPIRE k abc
EXPIRE missing 10
PERSIST k
PERSIST k
EXPIRE k 100 XX
EXPIRE k 100 GT
EXPIRE k 100 LT
PERSIST k
PEXPIRE k 100000 LT
PEXPIREAT k 99999999999999 GT
EXPIREAT k 99999999999 LT
EXPIRE k 99999999999999999
EXPIRE k -1
EXISTS k
EXPIRETIME k
EXPIRETIME a
PEXPIRETIME missing
EXPIREAT kk 100
SET at v PXAT 99999999999999
PEXPIRETIME at
EXPIRETIME at
SET at2 v EXAT 99999999999
EXPIRETIME at2
SET at v KEEPTTL
PEXPIRETIME at
SET at v
PEXPIRETIME at
TYPE a
TYPE missing
SET o 12345
OBJECT ENCODING o
OBJECT ENCODING missing
SET big 01234567890123456789012345678901234567890123456789
OBJECT ENCODING big
OBJECT FOO o
SELECT 0
SELECT 1
SELECT x
SET x y EX 10 PX 100
SET x y NX XX
SET x y EX abc
SET x y EX -5
SET x y PX 0
SET x y KEEPTTL EX 5
SET x y BADOPT
SET x y EX
GET
GET a b
SET k
NOSUCHCMD a b
nosuchcmd
FLUSHDB BAD
TOUCH a x missing
sorted: KEYS *
sorted: KEYS m*
sorted: KEYS ?
DBSIZE
CLIENT SETNAME my-conn
CLIENT GETNAME
CLIENT SETNAME "bad name"
CLIENT FOO
CLIENT KILL 1.2.3.4:5
COMMAND FOO
COMMAND INFO get
AUTH foo
FLUSHALL
DBSIZE
RANDOMKEY
SET only one
RANDOMKEY
SCAN 0 COUNT 0
SCAN x
SCAN 0 FOO bar
SCAN 0 COUNT 100 TYPE list
WAIT 0 0
HELLO 4
FLUSHDB ASYNC
CONFIG GET timeout
CONFIG GET databases
CONFIG GET nosuchparameter
CONFIG SET nosuchparameter 1
CONFIG SET timeout abc
CONFIG SET timeout 0
CONFIG FOO
CONFIG GET
MULTI
SET t1 5
INCR t1
GET t1
INCR k
EXEC
MULTI
MULTI
DISCARD
DISCARD
EXEC
MULTI
NOSUCH
SET t1
GET t1
EXEC
WATCH t1
MULTI
WATCH t2
GET t1
EXEC
WATCH t1 t2
UNWATCH
MEMORY USAGE missing
MEMORY FOO
SLOWLOG RESET
SLOWLOG FOO
SLOWLOG GET x
OBJECT HELP
OBJECT FREQ k
OBJECT FREQ
OBJECT IDLETIME missing
OBJECT REFCOUNT k
OBJECT FOO x
PUBLISH nochan hello
PUBSUB HELP
PUBSUB NUMSUB a b
PUBSUB NUMPAT
PUBSUB NUMPAT x
PUBSUB CHANNELS
PUBSUB FOO
LATENCY HELP
LATENCY LATEST
LATENCY HISTORY command
LATENCY RESET
LATENCY GRAPH command
LATENCY DOCTOR
LATENCY FOO
UNSUBSCRIBE
SUBSCRIBE chan-a
PSUBSCRIBE pat*
GET k
PING
PING hi
UNSUBSCRIBE chan-a
UNSUBSCRIBE nosuch
PUNSUBSCRIBE
PING
"#;

/// A reply as text, for failure messages.
fn show(v: &Value) -> String {
    String::from_utf8_lossy(&v.to_bytes(larder::resp::Protocol::Resp3)).replace("\r\n", " ")
}

fn compare(larder: &mut Client, redis: &mut Client, line: &str) {
    let (sorted, line) = match line.strip_prefix("sorted: ") {
        Some(l) => (true, l),
        None => (false, line),
    };
    let mut ours = larder.line(line);
    let mut theirs = redis.line(line);
    if sorted {
        for v in [&mut ours, &mut theirs] {
            if let Value::Array(items) = v {
                items.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            }
        }
    }
    assert_eq!(
        ours,
        theirs,
        "`{line}`: larder answered {}, redis {}",
        show(&ours),
        show(&theirs)
    );
}

#[test]
fn replies_match_redis_server() {
    let Some(redis) = Redis::start() else { return };
    let larder = Larder::start(RespConfig::default());
    for proto in ["2", "3"] {
        let mut ours = Client::connect(larder.port).unwrap();
        let mut theirs = Client::connect(redis.port).unwrap();
        // The HELLO maps differ (server, version, id); what follows is compared.
        assert!(!ours.line(&format!("HELLO {proto}")).is_error());
        assert!(!theirs.line(&format!("HELLO {proto}")).is_error());
        for line in SCRIPT.lines().map(str::trim).filter(|l| !l.is_empty()) {
            compare(&mut ours, &mut theirs, line);
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let larder = Larder::start(RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend(resp_support::encode(&[
            "SET",
            &format!("k{i}"),
            &i.to_string(),
        ]));
        batch.extend(resp_support::encode(&["INCR", &format!("k{i}")]));
    }
    // Inline commands mixed in, as telnet users send them.
    batch.extend_from_slice(b"GET k7\r\nPING\r\n");
    c.send_raw(&batch);
    for i in 0..2000 {
        assert_eq!(c.read(), Some(Value::ok()), "SET {i}");
        assert_eq!(c.read(), Some(Value::Integer(i + 1)), "INCR {i}");
    }
    assert_eq!(c.read(), Some(Value::bulk("8")));
    assert_eq!(c.read(), Some(Value::Simple("PONG".into())));
    assert_eq!(larder.cache.len(), 2000);
}

#[test]
fn a_protocol_error_closes_only_its_connection() {
    let larder = Larder::start(RespConfig::default());
    let mut good = Client::connect(larder.port).unwrap();
    assert_eq!(good.call(&["SET", "a", "1"]), Value::ok());
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n+GET\r\n",
            "ERR Protocol error: expected '+', got '+'",
        ),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"SET \"a b\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (bytes, text) in cases {
        let mut bad = Client::connect(larder.port).unwrap();
        // A valid command first: its reply comes before the error's.
        let mut input = resp_support::encode(&["GET", "a"]);
        input.extend_from_slice(bytes);
        bad.send_raw(&input);
        assert_eq!(bad.read(), Some(Value::bulk("1")));
        let text = text.replace("expected '+'", "expected '$'");
        assert_eq!(bad.read(), Some(Value::Error(text)));
        assert!(bad.closed(), "closed after {bytes:?}");
    }
    assert_eq!(good.call(&["GET", "a"]), Value::bulk("1"));
    // A command error leaves the connection open.
    assert!(good.call(&["INCR", "a", "b"]).is_error());
    assert_eq!(good.call(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn requirepass_and_read_only_users() {
    let larder = Larder::start(RespConfig {
        requirepass: Some("secret".into()),
        users: vec![RespUser {
            name: "reader".into(),
            password: "r-pass".into(),
            read_only: true,
        }],
        ..RespConfig::default()
    });
    let mut c = Client::connect(larder.port).unwrap();
    assert_eq!(
        c.call(&["GET", "k"]),
        Value::error("NOAUTH Authentication required.")
    );
    assert_eq!(
        c.call(&["AUTH", "wrong"]),
        Value::error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert!(matches!(c.call(&["HELLO", "3"]), Value::Error(e) if e.starts_with("NOAUTH HELLO")));
    assert_eq!(c.call(&["AUTH", "secret"]), Value::ok());
    assert_eq!(c.call(&["SET", "k", "v"]), Value::ok());

    let mut r = Client::connect(larder.port).unwrap();
    let hello = r.call(&["HELLO", "3", "AUTH", "reader", "r-pass", "SETNAME", "rd"]);
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(r.call(&["GET", "k"]), Value::bulk("v"));
    assert_eq!(
        r.call(&["SET", "k", "x"]),
        Value::error("NOPERM User reader has no permissions to run the 'set' command")
    );
    assert_eq!(r.call(&["CLIENT", "GETNAME"]), Value::bulk("rd"));
    assert_eq!(r.call(&["RESET"]), Value::Simple("RESET".into()));
    assert_eq!(
        r.call(&["GET", "k"]),
        Value::error("NOAUTH Authentication required.")
    );
}

#[test]
fn client_list_and_kill() {
    let larder = Larder::start(RespConfig::default());
    let mut a = Client::connect(larder.port).unwrap();
    let mut b = Client::connect(larder.port).unwrap();
    assert_eq!(b.call(&["CLIENT", "SETNAME", "victim"]), Value::ok());
    let Value::Integer(id) = b.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID")
    };
    let Value::Bulk(list) = a.call(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST is a bulk string in RESP2")
    };
    let list = String::from_utf8(list).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=victim"),
        "{list}"
    );
    assert_eq!(
        a.call(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Value::Integer(1)
    );
    assert!(b.closed());
    assert_eq!(
        a.call(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Value::Integer(0)
    );
}

#[test]
fn limits_close_the_client_not_the_server() {
    let larder = Larder::start(RespConfig {
        maxclients: 2,
        client_query_buffer_limit: 64 * 1024,
        proto_max_bulk_len: 1024,
        timeout: Some(Duration::from_millis(300)),
        ..RespConfig::default()
    });
    // proto-max-bulk-len: a longer bulk string is a protocol error.
    let mut c = Client::connect(larder.port).unwrap();
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n");
    assert_eq!(
        c.read(),
        Some(Value::error("ERR Protocol error: invalid bulk length"))
    );
    assert!(c.closed());
    // client-query-buffer-limit: an unfinished request growing past it.
    let mut c = Client::connect(larder.port).unwrap();
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'*', 10));
    c.send_raw(&big);
    // An inline request without a newline, past 64 KiB.
    let mut c2 = Client::connect(larder.port).unwrap();
    c2.send_raw(&vec![b'a'; 70 * 1024]);
    assert_eq!(
        c2.read(),
        Some(Value::error("ERR Protocol error: too big inline request"))
    );
    assert!(c2.closed());
    drop(c);
    // timeout: an idle client is closed.
    let mut idle = Client::connect(larder.port).unwrap();
    assert_eq!(idle.call(&["PING"]), Value::Simple("PONG".into()));
    assert!(idle.closed(), "closed after the idle timeout");
    // maxclients: the third is refused.
    drop(idle);
    larder.wait_clients(0);
    let mut one = Client::connect(larder.port).unwrap();
    let mut two = Client::connect(larder.port).unwrap();
    assert_eq!(one.call(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(two.call(&["PING"]), Value::Simple("PONG".into()));
    let mut three = Client::connect(larder.port).unwrap();
    assert_eq!(
        three.read(),
        Some(Value::error("ERR max number of clients reached"))
    );
    assert!(three.closed());
    assert_eq!(one.call(&["PING"]), Value::Simple("PONG".into()));
}

#[test]
fn redis_cli_talks_to_larder() {
    if !have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let larder = Larder::start(RespConfig::default());
    let p = larder.port;
    assert_eq!(redis_cli(p, &["PING"]), "PONG\n");
    assert_eq!(redis_cli(p, &["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(redis_cli(p, &["GET", "greeting"]), "hello world\n");
    assert_eq!(redis_cli(p, &["INCRBY", "n", "41"]), "41\n");
    assert_eq!(redis_cli(p, &["--no-raw", "INCR", "n"]), "(integer) 42\n");
    assert_eq!(redis_cli(p, &["--no-raw", "GET", "missing"]), "(nil)\n");
    assert_eq!(
        redis_cli(p, &["--no-raw", "FOO"]),
        "(error) ERR unknown command 'FOO', with args beginning with: \n"
    );
    assert_eq!(
        redis_cli(p, &["MGET", "greeting", "n"]),
        "hello world\n42\n"
    );
    assert_eq!(
        redis_cli(p, &["-3", "--no-raw", "GET", "missing"]),
        "(nil)\n"
    );
    assert_eq!(redis_cli(p, &["DBSIZE"]), "2\n");
    // Commands on stdin, pipelined (`--pipe` sends them all, then counts replies).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf 'SET a 1\\r\\nINCR a\\r\\nGET a\\r\\n' | redis-cli -p {p} --pipe"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 3"), "{text}");
    assert_eq!(redis_cli(p, &["GET", "a"]), "2\n");
    // --scan walks the keyspace with SCAN.
    let mut keys: Vec<String> = redis_cli(p, &["--scan"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "greeting", "n"]);
    let info = redis_cli(p, &["INFO", "keyspace"]);
    assert!(info.contains("db0:keys=3"), "{info}");
}

#[test]
fn config_set_changes_the_server_limits_at_run_time() {
    let larder = Larder::start(RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    assert_eq!(c.call(&["CONFIG", "SET", "requirepass", "pw"]), Value::ok());
    let mut late = Client::connect(larder.port).unwrap();
    assert_eq!(
        late.call(&["GET", "k"]),
        Value::error("NOAUTH Authentication required.")
    );
    assert_eq!(late.call(&["AUTH", "pw"]), Value::ok());
    assert_eq!(
        late.call(&["CONFIG", "GET", "requirepass"]),
        Value::Array(vec![Value::bulk("requirepass"), Value::bulk("pw")])
    );
    assert_eq!(c.call(&["CONFIG", "SET", "maxclients", "2"]), Value::ok());
    larder.wait_clients(2);
    let mut third = Client::connect(larder.port).unwrap();
    assert_eq!(
        third.read(),
        Some(Value::error("ERR max number of clients reached"))
    );
    // This cache was built without a memory bound, so its weights are inline sizes.
    let Value::Error(e) = c.call(&["CONFIG", "SET", "maxmemory", "100mb"]) else {
        panic!("a cache built without max_memory cannot take one")
    };
    assert!(
        e.contains("'maxmemory'") && e.contains("memory weights"),
        "{e}"
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "maxm*"]),
        Value::Array(vec![
            Value::bulk("maxmemory"),
            Value::bulk("0"),
            Value::bulk("maxmemory-policy"),
            Value::bulk(larder::DEFAULT_POLICY.to_string()),
            Value::bulk("maxmemory-samples"),
            Value::bulk("5"),
        ])
    );
}

#[test]
fn config_set_changes_the_caches_bounds_and_policy() {
    let cache: Cache<String, Vec<u8>> = Cache::builder().max_memory(64 << 20).build();
    let larder = Larder::start_with(cache.clone(), RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    for i in 0..2000 {
        assert_eq!(
            c.call(&["SET", &format!("key:{i}"), &"v".repeat(200)]),
            Value::ok()
        );
    }
    assert_eq!(
        c.call(&["CONFIG", "SET", "maxmemory", "100kb"]),
        Value::ok()
    );
    // Evicted down to the bound before the reply.
    assert!(cache.info().memory.used_memory <= 100 * 1024);
    let Value::Integer(n) = c.call(&["DBSIZE"]) else {
        panic!("DBSIZE")
    };
    assert!(n < 2000, "{n} keys left");
    assert_eq!(
        c.call(&[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-lfu",
            "lfu-log-factor",
            "3"
        ]),
        Value::ok()
    );
    assert_eq!(
        c.call(&[
            "CONFIG",
            "GET",
            "maxmemory",
            "maxmemory-policy",
            "lfu-log-factor"
        ]),
        Value::Array(vec![
            Value::bulk("maxmemory"),
            Value::bulk("102400"),
            Value::bulk("maxmemory-policy"),
            Value::bulk("allkeys-lfu"),
            Value::bulk("lfu-log-factor"),
            Value::bulk("3"),
        ])
    );
    assert_eq!(cache.policy(), larder::Policy::AllKeysLfu);
    let Value::Error(e) = c.call(&["CONFIG", "SET", "maxmemory-policy", "sometimes"]) else {
        panic!("an unknown policy is refused")
    };
    assert!(
        e.starts_with("ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy')"),
        "{e}"
    );
    let Value::Error(e) = c.call(&["CONFIG", "SET", "appendfsync", "always"]) else {
        panic!("a cache without a log has no fsync policy")
    };
    assert!(e.contains("no persistence"), "{e}");
}

/// The keyspace notifications a subscriber sees for SET, EXPIRE... on `port` with
/// `notify-keyspace-events KEA`.
fn notifications(port: u16) -> Vec<Value> {
    let mut admin = Client::connect(port).unwrap();
    assert_eq!(
        admin.call(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
        Value::ok()
    );
    let mut sub = Client::connect(port).unwrap();
    assert_eq!(
        sub.call(&["PSUBSCRIBE", "__key*__:*"]),
        Value::Array(vec![
            Value::bulk("psubscribe"),
            Value::bulk("__key*__:*"),
            Value::Integer(1)
        ])
    );
    assert!(!sub.call(&["SUBSCRIBE", "__keyevent@0__:del"]).is_error());
    assert_eq!(admin.call(&["SET", "note", "v"]), Value::ok());
    assert_eq!(admin.call(&["DEL", "note"]), Value::Integer(1));
    // 2 messages for SET (keyspace, keyevent), 3 for DEL (and the plain channel).
    let got: Vec<Value> = (0..5).map(|_| sub.read().unwrap()).collect();
    assert_eq!(
        admin.call(&["CONFIG", "SET", "notify-keyspace-events", ""]),
        Value::ok()
    );
    got
}

#[test]
fn keyspace_notifications_as_redis_sends_them() {
    let larder = Larder::start(RespConfig::default());
    let ours = notifications(larder.port);
    let pm = |ch: &str, payload: &str| {
        Value::Array(vec![
            Value::bulk("pmessage"),
            Value::bulk("__key*__:*"),
            Value::bulk(ch),
            Value::bulk(payload),
        ])
    };
    assert_eq!(
        ours,
        vec![
            pm("__keyspace@0__:note", "set"),
            pm("__keyevent@0__:set", "note"),
            pm("__keyspace@0__:note", "del"),
            Value::Array(vec![
                Value::bulk("message"),
                Value::bulk("__keyevent@0__:del"),
                Value::bulk("note"),
            ]),
            pm("__keyevent@0__:del", "note"),
        ]
    );
    if let Some(redis) = Redis::start() {
        assert_eq!(
            ours,
            notifications(redis.port),
            "redis-server sends the same"
        );
    }
}

/// WATCH on one connection, a write on another: EXEC aborts with a null reply. Run
/// against larder, and against redis-server for the same replies.
fn watch_conflict(port: u16) -> Vec<Value> {
    let mut a = Client::connect(port).unwrap();
    let mut b = Client::connect(port).unwrap();
    let mut got = vec![
        a.call(&["SET", "w", "1"]),
        a.call(&["WATCH", "w"]),
        a.call(&["MULTI"]),
        a.call(&["INCR", "w"]),
    ];
    got.push(b.call(&["SET", "w", "2"]));
    got.push(a.call(&["EXEC"]));
    got.push(a.call(&["GET", "w"]));
    // Unchanged since WATCH: EXEC runs.
    got.push(a.call(&["WATCH", "w"]));
    got.push(a.call(&["MULTI"]));
    got.push(a.call(&["INCR", "w"]));
    got.push(b.call(&["GET", "w"]));
    got.push(a.call(&["EXEC"]));
    got
}

#[test]
fn watch_aborts_exec_after_another_clients_write() {
    let larder = Larder::start(RespConfig::default());
    let ours = watch_conflict(larder.port);
    assert_eq!(ours[5], Value::NullArray, "{ours:?}");
    assert_eq!(ours[6], Value::bulk("2"));
    assert_eq!(ours[11], Value::Array(vec![Value::Integer(3)]));
    if let Some(redis) = Redis::start() {
        assert_eq!(
            ours,
            watch_conflict(redis.port),
            "redis-server answers the same"
        );
    }
}

#[test]
fn exec_runs_without_other_clients_in_between() {
    let larder = Larder::start(RespConfig::default());
    // Each transaction reads the counter twice around its INCRs; another client
    // incrementing in between would show as a gap.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let port = larder.port;
            std::thread::spawn(move || {
                let mut c = Client::connect(port).unwrap();
                for _ in 0..200 {
                    assert_eq!(c.call(&["MULTI"]), Value::ok());
                    for cmd in [
                        &["GET", "ctr"][..],
                        &["INCR", "ctr"],
                        &["INCR", "ctr"],
                        &["GET", "ctr"],
                    ] {
                        assert_eq!(c.call(cmd), Value::Simple("QUEUED".into()));
                    }
                    let Value::Array(r) = c.call(&["EXEC"]) else {
                        panic!("EXEC answers an array")
                    };
                    let before = match &r[0] {
                        Value::Bulk(b) => String::from_utf8_lossy(b).parse::<i64>().unwrap(),
                        _ => 0,
                    };
                    assert_eq!(r[1], Value::Integer(before + 1));
                    assert_eq!(r[2], Value::Integer(before + 2));
                    assert_eq!(r[3], Value::bulk((before + 2).to_string()));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(larder.cache.get("ctr"), Some(b"1600".to_vec()));
}

#[test]
fn memory_slowlog_and_saving() {
    let larder = Larder::start(RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    assert_eq!(c.call(&["SET", "k", "hello"]), Value::ok());
    assert!(matches!(c.call(&["MEMORY", "USAGE", "k"]), Value::Integer(n) if n > 5));
    assert_eq!(c.call(&["MEMORY", "PURGE"]), Value::ok());
    assert!(matches!(c.call(&["MEMORY", "STATS"]), Value::Array(v) if v.len() == 8));
    assert!(matches!(c.call(&["SLOWLOG", "LEN"]), Value::Integer(_)));
    assert!(matches!(c.call(&["SLOWLOG", "GET", "-1"]), Value::Array(_)));
    // A cache without persistence cannot save; LASTSAVE is the server's start.
    assert_eq!(
        c.call(&["SAVE"]),
        Value::error("ERR this cache has no persistence configured")
    );
    assert!(matches!(c.call(&["LASTSAVE"]), Value::Integer(n) if n > 1_600_000_000));
}

#[cfg(feature = "persistence")]
#[test]
fn save_and_bgsave_on_a_durable_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache: larder::Cache<String, Vec<u8>> = larder::Cache::builder()
        .durability(larder::Durability::new(dir.path()))
        .open()
        .unwrap();
    let larder = Larder::start_with(cache, RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    assert_eq!(c.call(&["SET", "k", "v"]), Value::ok());
    assert_eq!(c.call(&["SAVE"]), Value::ok());
    let Value::Integer(first) = c.call(&["LASTSAVE"]) else {
        panic!("LASTSAVE is an integer")
    };
    assert!(
        (1_600_000_000..100_000_000_000).contains(&first),
        "Unix seconds: {first}"
    );
    assert_eq!(
        c.call(&["BGSAVE"]),
        Value::Simple("Background saving started".into())
    );
    // The save rules change on the running cache.
    assert_eq!(
        c.call(&["CONFIG", "SET", "save", "100 5 60 1000"]),
        Value::ok()
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "save"]),
        Value::Array(vec![Value::bulk("save"), Value::bulk("100 5 60 1000")])
    );
    assert_eq!(
        larder.cache.save_rules().unwrap(),
        [
            (Duration::from_secs(100), 5),
            (Duration::from_secs(60), 1000)
        ]
    );
    assert!(c.call(&["CONFIG", "SET", "save", "100"]).is_error());
    assert_eq!(c.call(&["CONFIG", "SET", "save", ""]), Value::ok());
    assert!(larder.cache.save_rules().unwrap().is_empty());
}

#[test]
fn lazyfree_and_save_settings_at_run_time() {
    // A cache weighed by memory: the lazy-free switches can change.
    let cache: Cache<String, Vec<u8>> = Cache::builder().max_memory(64 << 20).build();
    let larder = Larder::start_with(cache.clone(), RespConfig::default());
    let mut c = Client::connect(larder.port).unwrap();
    assert_eq!(
        c.call(&["CONFIG", "GET", "lazyfree-lazy-e*"]),
        Value::Array(vec![
            Value::bulk("lazyfree-lazy-eviction"),
            Value::bulk("no"),
            Value::bulk("lazyfree-lazy-expire"),
            Value::bulk("no"),
        ])
    );
    assert_eq!(
        c.call(&["CONFIG", "SET", "lazyfree-lazy-eviction", "yes"]),
        Value::ok()
    );
    assert_eq!(
        c.call(&["CONFIG", "SET", "lazyfree-lazy-user-del", "yes"]),
        Value::ok()
    );
    let lf = cache.lazy_free();
    assert!(lf.eviction && lf.user_del && !lf.expire && !lf.server_del);
    assert!(c
        .call(&["CONFIG", "SET", "lazyfree-lazy-expire", "maybe"])
        .is_error());
    // Without persistence there are no save rules: turning them off is a no-op,
    // setting some is refused.
    assert_eq!(c.call(&["CONFIG", "SET", "save", ""]), Value::ok());
    assert!(c.call(&["CONFIG", "SET", "save", "60 1"]).is_error());

    // An unbounded cache weighs inline sizes only: no lazy free by size.
    let plain = Larder::start(RespConfig::default());
    let mut p = Client::connect(plain.port).unwrap();
    let Value::Error(e) = p.call(&["CONFIG", "SET", "lazyfree-lazy-eviction", "yes"]) else {
        panic!("refused")
    };
    assert!(e.contains("memory weights"), "{e}");
}

/// The slowlog's entries for a few commands on `port`: (arguments, client name), with
/// every command logged.
fn slow_entries(port: u16) -> Vec<Value> {
    let mut c = Client::connect(port).unwrap();
    assert_eq!(
        c.call(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        Value::ok()
    );
    assert_eq!(c.call(&["SLOWLOG", "RESET"]), Value::ok());
    assert_eq!(c.call(&["CLIENT", "SETNAME", "tester"]), Value::ok());
    assert_eq!(c.call(&["SET", "k", &"v".repeat(200)]), Value::ok());
    let Value::Array(entries) = c.call(&["SLOWLOG", "GET", "3"]) else {
        panic!("an array")
    };
    assert_eq!(c.call(&["SLOWLOG", "LEN"]), Value::Integer(4));
    assert_eq!(
        c.call(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]),
        Value::ok()
    );
    entries
        .into_iter()
        .map(|e| {
            let Value::Array(f) = e else {
                panic!("an entry")
            };
            assert_eq!(f.len(), 6);
            let Value::Bulk(client) = &f[4] else {
                panic!("an address")
            };
            assert!(String::from_utf8_lossy(client).starts_with("127.0.0.1:"));
            Value::Array(vec![f[3].clone(), f[5].clone()])
        })
        .collect()
}

#[test]
fn slowlog_logs_commands_with_their_arguments_and_client_as_redis_does() {
    let larder = Larder::start(RespConfig::default());
    let ours = slow_entries(larder.port);
    let mut long = "v".repeat(128);
    long.push_str("... (72 more bytes)");
    assert_eq!(
        ours,
        vec![
            Value::Array(vec![
                Value::Array(vec![
                    Value::bulk("SET"),
                    Value::bulk("k"),
                    Value::bulk(long)
                ]),
                Value::bulk("tester"),
            ]),
            Value::Array(vec![
                Value::Array(vec![
                    Value::bulk("CLIENT"),
                    Value::bulk("SETNAME"),
                    Value::bulk("tester"),
                ]),
                Value::bulk("tester"),
            ]),
            Value::Array(vec![
                Value::Array(vec![Value::bulk("SLOWLOG"), Value::bulk("RESET")]),
                Value::bulk(""),
            ]),
        ]
    );
    if let Some(redis) = Redis::start() {
        assert_eq!(ours, slow_entries(redis.port), "redis-server logs the same");
    }
}

/// PUBLISH to a channel and a pattern subscriber, with PUBSUB's counts, on `port`.
fn published(port: u16) -> Vec<Value> {
    let mut sub = Client::connect(port).unwrap();
    let mut publisher = Client::connect(port).unwrap();
    assert!(!sub.call(&["SUBSCRIBE", "news"]).is_error());
    assert!(!sub.call(&["PSUBSCRIBE", "n*"]).is_error());
    let mut got = vec![
        publisher.call(&["PUBLISH", "news", "hi"]),
        publisher.call(&["PUBLISH", "nope", "x"]),
        publisher.call(&["PUBLISH", "other", "x"]),
        publisher.call(&["PUBSUB", "NUMSUB", "news", "nope"]),
        publisher.call(&["PUBSUB", "NUMPAT"]),
        publisher.call(&["PUBSUB", "CHANNELS"]),
        publisher.call(&["PUBSUB", "CHANNELS", "x*"]),
    ];
    got.extend((0..3).map(|_| sub.read().unwrap()));
    drop(sub);
    // The server sees the close when it sees it.
    let mut left = Value::Null;
    for _ in 0..500 {
        left = publisher.call(&["PUBLISH", "news", "bye"]);
        if left == Value::Integer(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    got.push(left);
    got
}

#[test]
fn publish_reaches_channel_and_pattern_subscribers_as_in_redis() {
    let larder = Larder::start(RespConfig::default());
    let ours = published(larder.port);
    let message = |kind: &str, parts: &[&str]| {
        let mut v = vec![Value::bulk(kind)];
        v.extend(parts.iter().map(|p| Value::bulk(*p)));
        Value::Array(v)
    };
    assert_eq!(
        ours,
        vec![
            Value::Integer(2),
            Value::Integer(1),
            Value::Integer(0),
            Value::Array(vec![
                Value::bulk("news"),
                Value::Integer(1),
                Value::bulk("nope"),
                Value::Integer(0)
            ]),
            Value::Integer(1),
            Value::Array(vec![Value::bulk("news")]),
            Value::Array(vec![]),
            message("message", &["news", "hi"]),
            message("pmessage", &["n*", "news", "hi"]),
            message("pmessage", &["n*", "nope", "x"]),
            Value::Integer(0),
        ]
    );
    if let Some(redis) = Redis::start() {
        assert_eq!(ours, published(redis.port), "redis-server answers the same");
    }
}

#[test]
fn latency_histograms_count_every_connections_commands() {
    let larder = Larder::start(RespConfig::default());
    let mut a = Client::connect(larder.port).unwrap();
    for i in 0..3 {
        assert_eq!(a.call(&["SET", "k", &i.to_string()]), Value::ok());
    }
    let mut b = Client::connect(larder.port).unwrap();
    assert_eq!(b.call(&["SET", "k", "x"]), Value::ok());
    let calls = |c: &mut Client| match c.call(&["LATENCY", "HISTOGRAM", "SET", "nosuch"]) {
        Value::Array(v) if v.len() == 2 && v[0] == Value::bulk("set") => match &v[1] {
            Value::Array(f) if f[0] == Value::bulk("calls") => {
                let Value::Array(buckets) = &f[3] else {
                    panic!("{f:?}")
                };
                // Cumulative: the last bucket counts every call.
                assert_eq!(buckets.last(), Some(&f[1]), "{f:?}");
                f[1].clone()
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(calls(&mut b), Value::Integer(4));
    // A closed connection's counts stay.
    drop(a);
    assert_eq!(calls(&mut b), Value::Integer(4));
    assert_eq!(
        b.call(&["CONFIG", "SET", "latency-tracking", "no"]),
        Value::ok()
    );
    assert_eq!(b.call(&["SET", "k", "y"]), Value::ok());
    assert_eq!(calls(&mut b), Value::Integer(4));
    assert_eq!(
        b.call(&["CONFIG", "GET", "latency-*"]),
        Value::Array(vec![
            Value::bulk("latency-tracking"),
            Value::bulk("no"),
            Value::bulk("latency-monitor-threshold"),
            Value::bulk("0"),
        ])
    );
}

#[test]
fn a_server_on_threads_of_its_own_serves_many_clients_and_stops() {
    use larder::resp::RespServer;
    let cache: Cache<String, Vec<u8>> = Cache::builder().build();
    let server = RespServer::new(cache.clone(), RespConfig::default());
    let threads = server
        .clone()
        .spawn(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 2)
        .unwrap();
    let port = threads.local_addr().port();
    // Eight clients at once, dealt to two threads; each sees its own writes, and
    // pipelines work as on the shared runtime.
    let handles: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut cl = Client::connect(port).unwrap();
                for i in 0..200 {
                    let v = i.to_string();
                    assert_eq!(cl.call(&["SET", &format!("{c}:{i}"), &v]), Value::ok());
                }
                for i in 0..200 {
                    cl.send(&["GET", &format!("{c}:{i}")]);
                }
                for i in 0..200 {
                    assert_eq!(cl.read(), Some(Value::bulk(i.to_string())));
                }
                assert_eq!(cl.call(&["WAIT", "0", "0"]), Value::Integer(0));
                cl
            })
        })
        .collect();
    let mut clients: Vec<Client> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(cache.len(), 1600);
    assert_eq!(server.connected_clients(), 8);
    threads.stop();
    // Every connection was closed, and the port no longer accepts.
    for c in &mut clients {
        assert!(c.closed());
    }
    assert_eq!(server.connected_clients(), 0);
    assert!(Client::connect(port).is_err());
}
