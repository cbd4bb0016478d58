//! Pub/sub: `PUBLISH`ed messages and keyspace notifications over `SUBSCRIBE` /
//! `PSUBSCRIBE`. Notifications are published as Redis's `notify-keyspace-events`
//! publishes them: `__keyspace@0__:<key>` carries the event name,
//! `__keyevent@0__:<event>` carries the key.
//!
//! Messages reach the subscribers of this server only: in a cluster, `PUBLISH` is not
//! forwarded to the other nodes (Redis broadcasts it over its cluster bus).
//!
//! The cache's events ([`Cache::subscribe`](crate::Cache::subscribe)) are read by one
//! bridge thread per server, started when the first client subscribes (a cache nobody
//! listens to pays nothing for events), and fanned out to subscribed connections
//! through a bounded broadcast channel. A connection that falls behind by more than
//! the channel holds is closed, Redis's `client-output-buffer-limit pubsub`.

use super::codec::Value;
use crate::{EventKind, Subscriber};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How many notifications a subscribed connection may fall behind before it is closed.
pub(crate) const BACKLOG: usize = 4096;

/// What subscribed connections receive: a keyspace event, as the bridge forwards it,
/// or a message a client published.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A keyspace event.
    Event { kind: EventKind, key: String },
    /// `PUBLISH channel message`.
    Message { channel: Vec<u8>, message: Vec<u8> },
}

/// How many connections subscribe to each channel and pattern: `PUBLISH`'s receiver
/// count and `PUBSUB`'s answers.
#[derive(Default)]
pub(crate) struct Registry {
    channels: HashMap<Vec<u8>, usize>,
    patterns: HashMap<Vec<u8>, usize>,
}

impl Registry {
    fn map(&mut self, pattern: bool) -> &mut HashMap<Vec<u8>, usize> {
        if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        }
    }

    /// One more subscriber of `name`.
    pub(crate) fn add(&mut self, pattern: bool, name: &[u8]) {
        *self.map(pattern).entry(name.to_vec()).or_insert(0) += 1;
    }

    /// One subscriber of `name` fewer.
    pub(crate) fn remove(&mut self, pattern: bool, name: &[u8]) {
        let map = self.map(pattern);
        if let Some(n) = map.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                map.remove(name);
            }
        }
    }

    /// How many subscriptions a message on `channel` reaches (a connection subscribed
    /// to the channel and to a matching pattern counts twice, as in Redis).
    pub(crate) fn receivers(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).copied().unwrap_or(0)
            + self
                .patterns
                .iter()
                .filter(|(p, _)| crate::glob_match(p, channel))
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    /// `PUBSUB CHANNELS [pattern]`: the channels with subscribers, sorted.
    pub(crate) fn channels(&self, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::glob_match(p, c)))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// `PUBSUB NUMSUB channel`: its subscribers.
    pub(crate) fn numsub(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).copied().unwrap_or(0)
    }

    /// `PUBSUB NUMPAT`: patterns with subscribers.
    pub(crate) fn numpat(&self) -> usize {
        self.patterns.len()
    }
}

/// `notify-keyspace-events`, parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyFlags {
    /// `K`: keyspace channels.
    pub keyspace: bool,
    /// `E`: keyevent channels.
    pub keyevent: bool,
    /// `g`: generic events (`del`).
    pub generic: bool,
    /// `$`: string events (`set`).
    pub string: bool,
    /// `x`: `expired`.
    pub expired: bool,
    /// `e`: `evicted`.
    pub evicted: bool,
}

impl NotifyFlags {
    /// Parses Redis's letters (`K`, `E`, `g`, `$`, `x`, `e`, `A`; the letters of the
    /// types larder has no events for, `l s h z t d m n`, are accepted and mean
    /// nothing here). `None` for any other character.
    pub fn parse(s: &str) -> Option<NotifyFlags> {
        let mut f = NotifyFlags::default();
        for c in s.chars() {
            match c {
                'K' => f.keyspace = true,
                'E' => f.keyevent = true,
                'g' => f.generic = true,
                '$' => f.string = true,
                'x' => f.expired = true,
                'e' => f.evicted = true,
                'A' => {
                    f.generic = true;
                    f.string = true;
                    f.expired = true;
                    f.evicted = true;
                }
                'l' | 's' | 'h' | 'z' | 't' | 'd' | 'm' | 'n' => {}
                _ => return None,
            }
        }
        Some(f)
    }

    /// Whether `kind` is published.
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        (self.keyspace || self.keyevent)
            && match kind {
                EventKind::Set => self.string,
                EventKind::Del => self.generic,
                EventKind::Expired => self.expired,
                EventKind::Evicted => self.evicted,
            }
    }
}

impl std::fmt::Display for NotifyFlags {
    /// Redis's canonical form (`CONFIG GET` answers it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.generic && self.string && self.expired && self.evicted {
            f.write_str("A")?;
        } else {
            for (on, c) in [
                (self.generic, "g"),
                (self.string, "$"),
                (self.expired, "x"),
                (self.evicted, "e"),
            ] {
                if on {
                    f.write_str(c)?;
                }
            }
        }
        if self.keyspace {
            f.write_str("K")?;
        }
        if self.keyevent {
            f.write_str("E")?;
        }
        Ok(())
    }
}

/// Redis's name of an event.
pub(crate) fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Set => "set",
        EventKind::Del => "del",
        EventKind::Expired => "expired",
        EventKind::Evicted => "evicted",
    }
}

/// The bridge from the cache's events to the subscribed connections; stops when the
/// server is dropped.
pub(crate) struct Bridge {
    pub(crate) sender: broadcast::Sender<Arc<Notice>>,
    stop: Arc<AtomicBool>,
}

impl Bridge {
    pub(crate) fn start(events: Subscriber<String>) -> Bridge {
        let (sender, _) = broadcast::channel(BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, halt) = (sender.clone(), stop.clone());
        std::thread::Builder::new()
            .name("larder-resp-notify".into())
            .spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    if let Some(e) = events.recv_timeout(Duration::from_millis(200)) {
                        // No receiver now is not an error: nobody is subscribed.
                        let _ = tx.send(Arc::new(Notice::Event {
                            kind: e.kind,
                            key: e.key,
                        }));
                    }
                }
            })
            .expect("spawn the keyspace notification thread");
        Bridge { sender, stop }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A connection's subscriptions.
#[derive(Default)]
pub(crate) struct Subscriptions {
    pub(crate) channels: Vec<Vec<u8>>,
    pub(crate) patterns: Vec<Vec<u8>>,
}

impl Subscriptions {
    pub(crate) fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// The messages `notice` makes for this connection under `flags`.
    pub(crate) fn messages(&self, notice: &Notice, flags: NotifyFlags) -> Vec<Value> {
        let mut out = Vec::new();
        let mut publish = |c: &[u8], payload: &[u8]| {
            if self.channels.iter().any(|s| s == c) {
                out.push(Value::Push(vec![
                    Value::bulk("message"),
                    Value::bulk(c),
                    Value::bulk(payload),
                ]));
            }
            for p in &self.patterns {
                if crate::glob_match(p, c) {
                    out.push(Value::Push(vec![
                        Value::bulk("pmessage"),
                        Value::bulk(p.clone()),
                        Value::bulk(c),
                        Value::bulk(payload),
                    ]));
                }
            }
        };
        match notice {
            Notice::Message { channel, message } => publish(channel, message),
            Notice::Event { kind, key } => {
                if !flags.wants(*kind) {
                    return Vec::new();
                }
                let event = event_name(*kind);
                if flags.keyspace {
                    publish(format!("__keyspace@0__:{key}").as_bytes(), event.as_bytes());
                }
                if flags.keyevent {
                    publish(format!("__keyevent@0__:{event}").as_bytes(), key.as_bytes());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_as_redis() {
        let f = NotifyFlags::parse("KEA").unwrap();
        assert_eq!(f.to_string(), "AKE");
        assert_eq!(NotifyFlags::parse("Ex").unwrap().to_string(), "xE");
        assert_eq!(NotifyFlags::parse("").unwrap().to_string(), "");
        assert!(NotifyFlags::parse("KQ").is_none());
        assert!(
            !NotifyFlags::parse("A").unwrap().wants(EventKind::Set),
            "no K or E"
        );
        assert!(NotifyFlags::parse("K$").unwrap().wants(EventKind::Set));
        assert!(!NotifyFlags::parse("K$").unwrap().wants(EventKind::Del));
    }

    #[test]
    fn the_registry_counts_subscriptions_as_redis_counts_receivers() {
        let mut r = Registry::default();
        r.add(false, b"news");
        r.add(false, b"news");
        r.add(true, b"n*");
        r.add(true, b"x*");
        assert_eq!(r.receivers(b"news"), 3);
        assert_eq!(r.receivers(b"nope"), 1);
        assert_eq!(r.receivers(b"other"), 0);
        assert_eq!((r.numsub(b"news"), r.numpat()), (2, 2));
        r.remove(false, b"news");
        r.remove(false, b"news");
        r.remove(true, b"x*");
        assert_eq!(r.channels(None), Vec::<Vec<u8>>::new());
        assert_eq!((r.numsub(b"news"), r.numpat()), (0, 1));
        // Removing what is not there changes nothing.
        r.remove(true, b"zz");
        assert_eq!(r.numpat(), 1);
    }
}
