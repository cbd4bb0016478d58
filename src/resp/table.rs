//! The command table: every command the server knows, with Redis's arity, flags and
//! key positions. It decides arity errors, which arguments are keys (cluster routing,
//! `COMMAND GETKEYS`), which commands write (read-only users, replicas), and what
//! `COMMAND` / `COMMAND INFO` answer.

/// One command as `COMMAND INFO` describes it.
#[derive(Debug)]
pub struct CommandSpec {
    /// The name, lower case (`get`, `client|list` for a subcommand is not listed here:
    /// subcommands are parsed by their container).
    pub name: &'static str,
    /// Redis's arity: `n` exactly `n` arguments (the name included), `-n` at least `n`.
    pub arity: i32,
    /// Redis's command flags (`write`, `readonly`, `fast`, `denyoom`, `admin`, ...).
    pub flags: &'static [&'static str],
    /// The first key's position (0: no keys).
    pub first_key: i32,
    /// The last key's position (-1: the last argument).
    pub last_key: i32,
    /// The step between keys.
    pub step: i32,
}

impl CommandSpec {
    /// Whether the command writes to the keyspace.
    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Whether `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// The positions of the keys among `argc` arguments.
    pub fn key_positions(&self, argc: usize) -> impl Iterator<Item = usize> {
        let argc = argc as i32;
        let (first, step) = (self.first_key, self.step.max(1));
        let last = if self.last_key < 0 {
            argc + self.last_key
        } else {
            self.last_key.min(argc - 1)
        };
        // No keys: an empty range (first past last).
        let (first, last) = if first == 0 { (1, 0) } else { (first, last) };
        (first..=last).step_by(step as usize).map(|i| i as usize)
    }
}

macro_rules! spec {
    ($name:literal, $arity:expr, [$($f:literal),*], $first:expr, $last:expr, $step:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: &[$($f),*],
            first_key: $first,
            last_key: $last,
            step: $step,
        }
    };
}

/// Every command, sorted by name (binary search).
pub static COMMANDS: &[CommandSpec] = &[
    spec!("append", 3, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("asking", 1, ["fast"], 0, 0, 0),
    spec!(
        "auth",
        -2,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0
    ),
    spec!("bgrewriteaof", 1, ["admin", "noscript"], 0, 0, 0),
    spec!("bgsave", -1, ["admin", "noscript"], 0, 0, 0),
    spec!(
        "client",
        -2,
        ["admin", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!("cluster", -2, [], 0, 0, 0),
    spec!("command", -1, ["loading", "stale"], 0, 0, 0),
    spec!(
        "config",
        -2,
        ["admin", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!("dbsize", 1, ["readonly", "fast"], 0, 0, 0),
    spec!("decr", 2, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("decrby", 3, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("del", -2, ["write"], 1, -1, 1),
    spec!(
        "discard",
        1,
        ["noscript", "loading", "stale", "fast"],
        0,
        0,
        0
    ),
    spec!("echo", 2, ["fast"], 0, 0, 0),
    spec!("exec", 1, ["noscript", "loading", "stale"], 0, 0, 0),
    spec!("exists", -2, ["readonly", "fast"], 1, -1, 1),
    spec!("expire", -3, ["write", "fast"], 1, 1, 1),
    spec!("expireat", -3, ["write", "fast"], 1, 1, 1),
    spec!("expiretime", 2, ["readonly", "fast"], 1, 1, 1),
    spec!("flushall", -1, ["write"], 0, 0, 0),
    spec!("flushdb", -1, ["write"], 0, 0, 0),
    spec!("get", 2, ["readonly", "fast"], 1, 1, 1),
    spec!("getdel", 2, ["write", "fast"], 1, 1, 1),
    spec!("getex", -2, ["write", "fast"], 1, 1, 1),
    spec!("getrange", 4, ["readonly"], 1, 1, 1),
    spec!(
        "hello",
        -1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0
    ),
    spec!("incr", 2, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("incrby", 3, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("incrbyfloat", 3, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("info", -1, ["loading", "stale"], 0, 0, 0),
    spec!("keys", 2, ["readonly"], 0, 0, 0),
    spec!("lastsave", 1, ["loading", "stale", "fast"], 0, 0, 0),
    spec!(
        "latency",
        -2,
        ["admin", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!("memory", -2, ["readonly"], 0, 0, 0),
    spec!("mget", -2, ["readonly", "fast"], 1, -1, 1),
    spec!("mset", -3, ["write", "denyoom"], 1, -1, 2),
    spec!("msetnx", -3, ["write", "denyoom"], 1, -1, 2),
    spec!(
        "multi",
        1,
        ["noscript", "loading", "stale", "fast"],
        0,
        0,
        0
    ),
    spec!("object", -2, ["readonly"], 2, 2, 1),
    spec!("persist", 2, ["write", "fast"], 1, 1, 1),
    spec!("pexpire", -3, ["write", "fast"], 1, 1, 1),
    spec!("pexpireat", -3, ["write", "fast"], 1, 1, 1),
    spec!("pexpiretime", 2, ["readonly", "fast"], 1, 1, 1),
    spec!("ping", -1, ["fast"], 0, 0, 0),
    spec!("psetex", 4, ["write", "denyoom"], 1, 1, 1),
    spec!(
        "psubscribe",
        -2,
        ["pubsub", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!("pttl", 2, ["readonly", "fast"], 1, 1, 1),
    spec!(
        "publish",
        3,
        ["pubsub", "loading", "stale", "fast", "may_replicate"],
        0,
        0,
        0
    ),
    spec!("pubsub", -2, ["pubsub", "loading", "stale"], 0, 0, 0),
    spec!(
        "punsubscribe",
        -1,
        ["pubsub", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!(
        "quit",
        -1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0
    ),
    spec!("randomkey", 1, ["readonly"], 0, 0, 0),
    spec!("readonly", 1, ["fast", "loading", "stale"], 0, 0, 0),
    spec!("readwrite", 1, ["fast", "loading", "stale"], 0, 0, 0),
    spec!(
        "reset",
        1,
        ["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0
    ),
    spec!("save", 1, ["admin", "noscript"], 0, 0, 0),
    spec!("scan", -2, ["readonly"], 0, 0, 0),
    spec!("select", 2, ["loading", "stale", "fast"], 0, 0, 0),
    spec!("set", -3, ["write", "denyoom"], 1, 1, 1),
    spec!("setex", 4, ["write", "denyoom"], 1, 1, 1),
    spec!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1),
    spec!("setrange", 4, ["write", "denyoom"], 1, 1, 1),
    spec!("slowlog", -2, ["admin", "loading", "stale"], 0, 0, 0),
    spec!("strlen", 2, ["readonly", "fast"], 1, 1, 1),
    spec!(
        "subscribe",
        -2,
        ["pubsub", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!("time", 1, ["loading", "stale", "fast"], 0, 0, 0),
    spec!("touch", -2, ["readonly", "fast"], 1, -1, 1),
    spec!("ttl", 2, ["readonly", "fast"], 1, 1, 1),
    spec!("type", 2, ["readonly", "fast"], 1, 1, 1),
    spec!("unlink", -2, ["write", "fast"], 1, -1, 1),
    spec!(
        "unsubscribe",
        -1,
        ["pubsub", "noscript", "loading", "stale"],
        0,
        0,
        0
    ),
    spec!(
        "unwatch",
        1,
        ["noscript", "loading", "stale", "fast"],
        0,
        0,
        0
    ),
    spec!("wait", 3, ["noscript"], 0, 0, 0),
    spec!(
        "watch",
        -2,
        ["noscript", "loading", "stale", "fast"],
        1,
        -1,
        1
    ),
];

/// A name of at most 16 bytes as one big-endian integer, zero-padded: integers compare
/// as the names do byte by byte, so the sorted table stays sorted.
fn packed(name: &[u8]) -> Option<u128> {
    // No command name holds a zero byte, which padding could not tell from the end.
    if name.len() > 16 || name.contains(&0) {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..name.len()].copy_from_slice(name);
    buf.make_ascii_lowercase();
    Some(u128::from_be_bytes(buf))
}

/// The spec of `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    // Every command runs this: a search over integers, not over strings.
    static PACKED: std::sync::OnceLock<Vec<u128>> = std::sync::OnceLock::new();
    let keys = PACKED.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|c| packed(c.name.as_bytes()).expect("command names fit 16 bytes"))
            .collect()
    });
    let key = packed(name)?;
    keys.binary_search(&key).ok().map(|i| &COMMANDS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_found_in_any_case() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        for c in COMMANDS {
            assert_eq!(
                lookup(c.name.to_uppercase().as_bytes()).unwrap().name,
                c.name
            );
        }
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"averyveryverylongcommandname").is_none());
        // A prefix, or a name with a zero byte, is not the command.
        assert!(lookup(b"ge").is_none());
        assert!(lookup(b"get\0").is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn key_positions_follow_first_last_step() {
        let mset = lookup(b"mset").unwrap();
        assert_eq!(mset.key_positions(5).collect::<Vec<_>>(), vec![1, 3]);
        let del = lookup(b"del").unwrap();
        assert_eq!(del.key_positions(4).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(lookup(b"ping").unwrap().key_positions(2).count(), 0);
        assert!(lookup(b"get").unwrap().arity_ok(2) && !lookup(b"get").unwrap().arity_ok(3));
        assert!(mset.arity_ok(5) && !mset.arity_ok(2));
    }
}
