//! `LATENCY`: per-command latency histograms (Redis 7's `latency-tracking`, `LATENCY
//! HISTOGRAM`) and the latency monitor (`latency-monitor-threshold`, `LATENCY LATEST`,
//! `HISTORY`, `RESET`, `DOCTOR`, `GRAPH`); and `SLOWLOG`, the commands that took at
//! least `slowlog-log-slower-than`, with their arguments and client, as Redis logs
//! them.
//!
//! A command's time runs from the end of the previous command of the same batch (or
//! from the batch's start) to the end of its reply's encoding: one clock read per
//! command. Each connection counts into its own histograms and adds them to its
//! client entry once per batch, under a lock only that connection and a reader of
//! `LATENCY HISTOGRAM` take; a closed connection's counts move to the server's.

use super::codec::Value;
use super::session::help_lines;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

/// Histogram buckets: bucket `b` counts durations of at most `2^b` microseconds.
const BUCKETS: usize = 40;
/// Samples kept per latency-monitor event (Redis's `LATENCY_TS_LEN`).
const HISTORY_LEN: usize = 160;

/// The bucket of a duration of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us <= 1 {
        0
    } else {
        ((64 - (us - 1).leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

/// Calls and a histogram per command.
#[derive(Clone, Debug, Default)]
pub(crate) struct CommandLatency {
    per: Vec<(&'static str, u64, [u64; BUCKETS])>,
}

impl CommandLatency {
    /// Counts one call of `name` that took `us` microseconds.
    pub(crate) fn record(&mut self, name: &'static str, us: u64) {
        let b = bucket(us);
        // Few commands per connection: a linear search on the name's address first.
        if let Some(e) = self
            .per
            .iter_mut()
            .find(|e| std::ptr::eq(e.0, name) || e.0 == name)
        {
            e.1 += 1;
            e.2[b] += 1;
            return;
        }
        let mut h = [0; BUCKETS];
        h[b] = 1;
        self.per.push((name, 1, h));
    }

    /// Adds `other`'s counts and empties it.
    pub(crate) fn drain_into(&mut self, into: &mut CommandLatency) {
        for (name, calls, h) in self.per.drain(..) {
            match into.per.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += calls;
                    for (a, b) in e.2.iter_mut().zip(h) {
                        *a += b;
                    }
                }
                None => into.per.push((name, calls, h)),
            }
        }
    }

    /// Adds `other`'s counts.
    pub(crate) fn add(&mut self, other: &CommandLatency) {
        other.clone().drain_into(self);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.per.is_empty()
    }

    /// `LATENCY HISTOGRAM`'s reply for `names` (every command with calls if empty).
    pub(crate) fn reply(&self, names: &[String]) -> Value {
        let mut per: Vec<_> = self
            .per
            .iter()
            .filter(|e| names.is_empty() || names.iter().any(|n| n == e.0))
            .collect();
        per.sort_by_key(|e| e.0);
        Value::Map(
            per.into_iter()
                .map(|(name, calls, h)| {
                    // Cumulative counts at each bucket where the count grows, as Redis
                    // lists them.
                    let mut total = 0;
                    let mut buckets = Vec::new();
                    for (b, n) in h.iter().enumerate() {
                        if *n > 0 {
                            total += n;
                            buckets.push((Value::Integer(1 << b), Value::Integer(total as i64)));
                        }
                    }
                    (
                        Value::bulk(*name),
                        Value::Map(vec![
                            (Value::bulk("calls"), Value::Integer(*calls as i64)),
                            (Value::bulk("histogram_usec"), Value::Map(buckets)),
                        ]),
                    )
                })
                .collect(),
        )
    }
}

/// One latency-monitor event's samples: one per second, the highest of that second.
#[derive(Debug, Default)]
struct Event {
    history: VecDeque<(u64, u64)>,
    max_ms: u64,
}

/// One `SLOWLOG GET` entry.
#[derive(Debug)]
pub(crate) struct SlowEntry {
    id: u64,
    at_s: u64,
    us: u64,
    args: Vec<Vec<u8>>,
    client: String,
    name: String,
}

/// Redis's `SLOWLOG_ENTRY_MAX_ARGC` and `SLOWLOG_ENTRY_MAX_STRING`.
const SLOWLOG_MAX_ARGC: usize = 32;
const SLOWLOG_MAX_STRING: usize = 128;

/// A command's arguments as the slowlog keeps them: at most 32 (the last saying how
/// many more there were), each at most 128 bytes (saying how many more), and
/// passwords redacted (`AUTH`, `HELLO ... AUTH`), as Redis does.
fn slowlog_args(argv: &[&[u8]]) -> Vec<Vec<u8>> {
    let redact_from = if argv[0].eq_ignore_ascii_case(b"auth") {
        1
    } else if argv[0].eq_ignore_ascii_case(b"hello") {
        argv.iter()
            .position(|a| a.eq_ignore_ascii_case(b"auth"))
            .map_or(usize::MAX, |i| i + 1)
    } else {
        usize::MAX
    };
    let shown = if argv.len() > SLOWLOG_MAX_ARGC {
        SLOWLOG_MAX_ARGC - 1
    } else {
        argv.len()
    };
    let mut out: Vec<Vec<u8>> = argv[..shown]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i >= redact_from {
                b"(redacted)".to_vec()
            } else if a.len() > SLOWLOG_MAX_STRING {
                let mut v = a[..SLOWLOG_MAX_STRING].to_vec();
                v.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - SLOWLOG_MAX_STRING).as_bytes(),
                );
                v
            } else {
                a.to_vec()
            }
        })
        .collect();
    if shown < argv.len() {
        out.push(format!("... ({} more arguments)", argv.len() - shown).into_bytes());
    }
    out
}

/// The server's latency state: closed connections' histograms, the monitor and the
/// slowlog.
#[derive(Debug, Default)]
pub(crate) struct ServerLatency {
    /// Histograms of connections that closed.
    pub(crate) retired: CommandLatency,
    events: BTreeMap<&'static str, Event>,
    slowlog: VecDeque<SlowEntry>,
    next_slow_id: u64,
}

impl ServerLatency {
    /// Logs a command that took `us` microseconds, keeping the newest `max_len`.
    pub(crate) fn slow(
        &mut self,
        argv: &[&[u8]],
        us: u64,
        at_s: u64,
        client: String,
        name: String,
        max_len: usize,
    ) {
        self.slowlog.push_front(SlowEntry {
            id: self.next_slow_id,
            at_s,
            us,
            args: slowlog_args(argv),
            client,
            name,
        });
        self.next_slow_id += 1;
        self.slowlog.truncate(max_len);
    }

    /// `SLOWLOG GET [count] | LEN | RESET | HELP`.
    pub(crate) fn slowlog_command(&mut self, argv: &[&[u8]]) -> Value {
        let sub = argv[1].to_ascii_lowercase();
        match sub.as_slice() {
            b"get" if argv.len() <= 3 => {
                let n = match argv.get(2).map(|n| super::strings::parse_i64(n)) {
                    None => 10,
                    Some(Ok(-1)) => usize::MAX,
                    Some(Ok(n)) if n >= 0 => n as usize,
                    Some(_) => {
                        return Value::error("ERR count should be greater than or equal to -1")
                    }
                };
                Value::Array(
                    self.slowlog
                        .iter()
                        .take(n)
                        .map(|e| {
                            Value::Array(vec![
                                Value::Integer(e.id as i64),
                                Value::Integer(e.at_s as i64),
                                Value::Integer(e.us as i64),
                                Value::Array(e.args.iter().cloned().map(Value::Bulk).collect()),
                                Value::bulk(e.client.as_str()),
                                Value::bulk(e.name.as_str()),
                            ])
                        })
                        .collect(),
                )
            }
            b"len" if argv.len() == 2 => Value::Integer(self.slowlog.len() as i64),
            b"reset" if argv.len() == 2 => {
                self.slowlog.clear();
                Value::ok()
            }
            b"help" if argv.len() == 2 => help_lines(&[
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
            ]),
            b"get" | b"len" | b"reset" | b"help" => {
                super::session::wrong_arity(&format!("slowlog|{}", String::from_utf8_lossy(&sub)))
            }
            _ => super::session::unknown_subcommand("slowlog", argv[1]),
        }
    }

    /// Records a latency-monitor sample of `event` (`command`, `fast-command`) at
    /// `now_s` (Unix seconds).
    pub(crate) fn sample(&mut self, event: &'static str, now_s: u64, ms: u64) {
        let e = self.events.entry(event).or_default();
        e.max_ms = e.max_ms.max(ms);
        match e.history.back_mut() {
            Some(last) if last.0 == now_s => last.1 = last.1.max(ms),
            _ => {
                e.history.push_back((now_s, ms));
                if e.history.len() > HISTORY_LEN {
                    e.history.pop_front();
                }
            }
        }
    }

    /// `LATENCY LATEST | HISTORY | RESET | DOCTOR | GRAPH | HELP` (not `HISTOGRAM`,
    /// which needs the connections' counts). `threshold_ms` is
    /// `latency-monitor-threshold`.
    pub(crate) fn command(&mut self, argv: &[&[u8]], threshold_ms: u64) -> Value {
        let sub = argv[1].to_ascii_lowercase();
        let arity =
            || super::session::wrong_arity(&format!("latency|{}", String::from_utf8_lossy(&sub)));
        match sub.as_slice() {
            b"latest" if argv.len() == 2 => Value::Array(
                self.events
                    .iter()
                    .filter_map(|(name, e)| {
                        let (at, ms) = *e.history.back()?;
                        Some(Value::Array(vec![
                            Value::bulk(*name),
                            Value::Integer(at as i64),
                            Value::Integer(ms as i64),
                            Value::Integer(e.max_ms as i64),
                        ]))
                    })
                    .collect(),
            ),
            b"history" if argv.len() == 3 => {
                let name = String::from_utf8_lossy(argv[2]);
                Value::Array(
                    self.events
                        .get(name.as_ref())
                        .map(|e| {
                            e.history
                                .iter()
                                .map(|&(at, ms)| {
                                    Value::Array(vec![
                                        Value::Integer(at as i64),
                                        Value::Integer(ms as i64),
                                    ])
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            }
            b"reset" => {
                let before = self.events.len();
                if argv.len() == 2 {
                    self.events.clear();
                } else {
                    for name in &argv[2..] {
                        let name = String::from_utf8_lossy(name);
                        self.events.remove(name.as_ref());
                    }
                }
                Value::Integer((before - self.events.len()) as i64)
            }
            b"doctor" if argv.len() == 2 => Value::Verbatim {
                format: *b"txt",
                text: self.doctor(threshold_ms).into_bytes(),
            },
            b"graph" if argv.len() == 3 => {
                let name = String::from_utf8_lossy(argv[2]);
                match self.events.get(name.as_ref()) {
                    Some(e) if !e.history.is_empty() => Value::Verbatim {
                        format: *b"txt",
                        text: graph(&name, e).into_bytes(),
                    },
                    _ => Value::Error(format!("ERR No samples available for event '{name}'")),
                }
            }
            b"help" if argv.len() == 2 => help_lines(&[
                "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR",
                "    Return a human readable latency analysis report.",
                "GRAPH <event>",
                "    Return an ASCII latency graph for the <event> class.",
                "HISTORY <event>",
                "    Return time-latency samples for the <event> class.",
                "LATEST",
                "    Return the latest latency samples for all events.",
                "RESET [<event> ...]",
                "    Reset latency data of one or more <event> classes.",
                "    (default: reset all data for all event classes)",
                "HISTOGRAM [COMMAND ...]",
                "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
                "    If no commands are specified then all histograms are replied.",
            ]),
            b"latest" | b"history" | b"doctor" | b"graph" | b"help" => arity(),
            _ => super::session::unknown_subcommand("latency", argv[1]),
        }
    }

    fn doctor(&self, threshold_ms: u64) -> String {
        if self.events.is_empty() {
            return if threshold_ms == 0 {
                "I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this \
                 Redis instance. You may use \"CONFIG SET latency-monitor-threshold \
                 <milliseconds>.\" in order to enable it. If we weren't in a deep space \
                 mission I'd suggest to take a look at \
                 https://redis.io/topics/latency-monitor.\n"
                    .into()
            } else {
                "Dave, no latency spike was observed during the lifetime of this Redis \
                 instance, not in the slightest bit. I honestly think you ought to sit down \
                 calmly, take a stress pill, and think things over.\n"
                    .into()
            };
        }
        let mut out = String::from(
            "Dave, I have observed latency spikes in this Redis instance. You don't mind \
             talking about it, do you Dave?\n\n",
        );
        for (i, (name, e)) in self.events.iter().enumerate() {
            let n = e.history.len() as u64;
            let sum: u64 = e.history.iter().map(|s| s.1).sum();
            let avg = sum / n.max(1);
            let dev = e.history.iter().map(|s| s.1.abs_diff(avg)).sum::<u64>() / n.max(1);
            let span = e.history.back().map_or(0, |l| l.0) - e.history.front().map_or(0, |f| f.0);
            let period = span as f64 / n.max(1) as f64;
            let _ = writeln!(
                out,
                "{}. {name}: {n} latency spikes (average {avg}ms, mean deviation {dev}ms, \
                 period {period:.2} sec). Worst all time event {}ms.",
                i + 1,
                e.max_ms
            );
        }
        out.push_str(
            "\nI have a few advices for you:\n\n- Check your Slow Log to understand what \
             are the commands you are running which are too slow to execute. Please check \
             https://redis.io/commands/slowlog for more information.\n",
        );
        out
    }
}

/// `LATENCY GRAPH`: the samples as columns, highest on top, oldest on the left.
fn graph(name: &str, e: &Event) -> String {
    const ROWS: u64 = 4;
    let (lo, hi) = e
        .history
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let mut out = format!(
        "{name} - high {hi} ms, low {lo} ms (all time high {} ms)\n{}\n",
        e.max_ms,
        "-".repeat(80)
    );
    for row in (0..ROWS).rev() {
        for s in &e.history {
            let level = if hi == lo {
                ROWS
            } else {
                1 + (s.1 - lo) * (ROWS - 1) / (hi - lo)
            };
            out.push(if level > row { '#' } else { ' ' });
        }
        out.push('\n');
    }
    let now = e.history.back().map_or(0, |l| l.0);
    let ages: Vec<String> = e
        .history
        .iter()
        .map(|s| format!("{}s", now - s.0))
        .collect();
    let _ = writeln!(out, "ages, oldest first: {}", ages.join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!((bucket(0), bucket(1), bucket(2), bucket(3)), (0, 0, 1, 2));
        assert_eq!(
            (bucket(4), bucket(5), bucket(1024), bucket(1025)),
            (2, 3, 10, 11)
        );
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histograms_merge_and_answer_cumulatively() {
        let mut a = CommandLatency::default();
        a.record("get", 3);
        a.record("get", 3);
        a.record("set", 100);
        let mut b = CommandLatency::default();
        b.record("get", 1000);
        a.drain_into(&mut b);
        assert!(a.is_empty());
        let Value::Map(per) = b.reply(&["get".into()]) else {
            panic!("a map")
        };
        assert_eq!(per.len(), 1);
        let Value::Map(fields) = &per[0].1 else {
            panic!("a map")
        };
        assert_eq!(fields[0].1, Value::Integer(3));
        assert_eq!(
            fields[1].1,
            Value::Map(vec![
                (Value::Integer(4), Value::Integer(2)),
                (Value::Integer(1024), Value::Integer(3)),
            ])
        );
    }

    #[test]
    fn slowlog_arguments_are_cut_and_passwords_redacted_as_redis_does() {
        let long = vec![b'x'; 200];
        let many: Vec<&[u8]> = std::iter::once(&b"mset"[..])
            .chain(std::iter::repeat_n(&b"a"[..], 40))
            .collect();
        let args = slowlog_args(&many);
        assert_eq!(args.len(), 32);
        assert_eq!(args[31], b"... (10 more arguments)".to_vec());
        let args = slowlog_args(&[b"set", b"k", &long]);
        assert_eq!(args[2].len(), 128 + b"... (72 more bytes)".len());
        assert!(args[2].ends_with(b"... (72 more bytes)"));
        assert_eq!(
            slowlog_args(&[b"AUTH", b"user", b"secret"]),
            vec![
                b"AUTH".to_vec(),
                b"(redacted)".to_vec(),
                b"(redacted)".to_vec()
            ]
        );
        assert_eq!(
            slowlog_args(&[b"hello", b"3", b"auth", b"u", b"p"])[3..],
            [b"(redacted)".to_vec(), b"(redacted)".to_vec()]
        );
        let mut m = ServerLatency::default();
        for i in 0..5u64 {
            m.slow(
                &[b"get", b"k"],
                10 + i,
                100,
                "1.2.3.4:5".into(),
                String::new(),
                3,
            );
        }
        let Value::Array(got) = m.slowlog_command(&[b"slowlog", b"get", b"-1"]) else {
            panic!("an array")
        };
        assert_eq!(got.len(), 3);
        let Value::Array(newest) = &got[0] else {
            panic!("an entry")
        };
        assert_eq!(newest[0], Value::Integer(4));
        assert_eq!(newest[2], Value::Integer(14));
        assert_eq!(newest[4], Value::bulk("1.2.3.4:5"));
    }

    #[test]
    fn the_monitor_keeps_one_sample_a_second_and_the_maximum() {
        let mut m = ServerLatency::default();
        m.sample("command", 100, 5);
        m.sample("command", 100, 9);
        m.sample("command", 101, 2);
        for s in 0..200 {
            m.sample("fast-command", 1000 + s, 1);
        }
        let e = &m.events["command"];
        assert_eq!(e.history, [(100, 9), (101, 2)]);
        assert_eq!(e.max_ms, 9);
        assert_eq!(m.events["fast-command"].history.len(), HISTORY_LEN);
        assert_eq!(
            m.command(&[b"latency", b"reset", b"command", b"nosuch"], 1),
            Value::Integer(1)
        );
        assert!(m.doctor(1).contains("fast-command: 160 latency spikes"));
    }
}
