//! The master side: the write stream, the backlog, PSYNC decisions, snapshot transfer,
//! replica acknowledgements, min-replicas and WAIT.

use std::collections::{BTreeMap, VecDeque};

use crate::proto::{Instant, NodeId};
use crate::repl::backlog::{stream_len, Backlog};
use crate::repl::codec::{ReplMessage, MAX_RECORD_LEN};
use crate::repl::config::ReplConfig;
use crate::repl::id::ReplId;
use crate::repl::sink::ReplicationSink;
use crate::repl::{HandleError, WaitId};

/// A message for one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The replica it is for.
    pub to: NodeId,
    /// The message.
    pub message: ReplMessage,
}

/// What a master tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEvent {
    /// `replica` needs a full resync: produce a snapshot and call
    /// [`ReplicationSource::begin_snapshot`] with the offset it reflects, then
    /// [`ReplicationSource::snapshot_chunk`] and [`ReplicationSource::finish_snapshot`].
    SnapshotNeeded {
        /// The replica.
        replica: NodeId,
    },
    /// A replica is streaming: after a partial resync (`partial`) or once its snapshot
    /// was sent.
    ReplicaOnline {
        /// The replica.
        replica: NodeId,
        /// Where its stream starts.
        offset: u64,
        /// True for a partial resync (CONTINUE).
        partial: bool,
    },
    /// A replica was forgotten; the driver may close its connection.
    ReplicaDropped {
        /// The replica.
        replica: NodeId,
        /// Why.
        reason: DropReason,
    },
    /// A [`ReplicationSource::wait`] finished: enough replicas acknowledged, or its
    /// timeout passed.
    WaitDone {
        /// The wait.
        id: WaitId,
        /// Replicas that had acknowledged the offset when it finished.
        acked: usize,
        /// True if `acked` reached the number asked for.
        satisfied: bool,
    },
}

/// Why a master dropped a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Nothing heard from it for `repl_timeout`.
    Timeout,
    /// The stream it still needs has left the backlog (Redis's output buffer limit).
    BacklogOverrun,
}

/// A command the master refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The replica is not known (never sent PSYNC, or was dropped).
    #[error("replica {0} is not known to this master")]
    UnknownReplica(NodeId),
    /// The replica is not in the snapshot step the command belongs to.
    #[error("replica {replica} is not {expected}")]
    WrongState {
        /// The replica.
        replica: NodeId,
        /// What the command needs ("awaiting a snapshot", "receiving a snapshot").
        expected: &'static str,
    },
    /// A snapshot offset the backlog cannot continue from.
    #[error(
        "snapshot offset {offset} is outside the backlog {start}..={end} or not a record boundary"
    )]
    OffsetUnavailable {
        /// The offset given.
        offset: u64,
        /// Backlog start.
        start: u64,
        /// Backlog end (the master offset).
        end: u64,
    },
    /// A record larger than a message can carry.
    #[error("record of {len} bytes exceeds the {max} byte limit")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The answer a master gives a PSYNC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsyncDecision {
    /// Partial resync from the requested offset.
    Continue,
    /// Full resync, and why a partial one is impossible.
    FullResync(FullReason),
}

/// Why a PSYNC cannot continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    /// The replica holds no history.
    NoHistory,
    /// The replica's id is neither the current nor the secondary id.
    UnknownId,
    /// The replica holds the secondary id past the point where this master's history
    /// left it (a diverged history).
    BeyondSecondaryOffset,
    /// The offset is not in the backlog (too old, ahead of the master, or not a record
    /// boundary).
    OutOfBacklog,
}

/// What a master knows about one replica, for `info()` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The replica.
    pub id: NodeId,
    /// Where its synchronisation stands.
    pub status: ReplicaStatus,
    /// The offset it last acknowledged in this session.
    pub ack_offset: Option<u64>,
    /// When that acknowledgement came.
    pub last_ack: Option<Instant>,
    /// Milliseconds since that acknowledgement (Redis's `lag`, in ms).
    pub lag: Option<u64>,
}

/// The synchronisation step of one replica, as its master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Full resync decided; the driver has not started the snapshot.
    WaitSnapshot,
    /// Snapshot in transfer (Redis: `send_bulk`).
    SendingSnapshot,
    /// Streaming records (Redis: `online`).
    Online,
}

/// A master's replication figures (Redis `INFO replication`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// `master_replid`.
    pub replid: ReplId,
    /// `master_replid2`, if this master continued another history.
    pub replid2: Option<ReplId>,
    /// `master_repl_offset`.
    pub offset: u64,
    /// `second_repl_offset`: the last offset of `replid2`'s history this master shares.
    pub second_replid_offset: Option<u64>,
    /// `repl_backlog_first_byte_offset`.
    pub backlog_first_byte_offset: u64,
    /// `repl_backlog_histlen`.
    pub backlog_histlen: u64,
    /// `connected_slaves`: replicas online.
    pub connected_replicas: usize,
    /// `slaveN`: every known replica.
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Debug)]
enum State {
    WaitSnapshot,
    SendingSnapshot {
        offset: u64,
        sent: u64,
        hasher: crc32fast::Hasher,
    },
    Online {
        cursor: u64,
    },
}

#[derive(Debug)]
struct Replica {
    /// The PSYNC that began this session, and when it came.
    attempt: u32,
    since: Instant,
    state: State,
    acked: Option<u64>,
    last_ack: Instant,
    last_heard: Instant,
    next_ping: Instant,
    /// A WAIT asked for an ACK; sent once the replica is sent everything (GETACK
    /// follows the records in the stream, as in Redis, so the ACK covers them).
    getack: bool,
}

#[derive(Debug)]
struct Waiter {
    id: WaitId,
    replicas: usize,
    offset: u64,
    deadline: Instant,
}

/// The master side of replication.
///
/// Getters: [`replid`](Self::replid), [`offset`](Self::offset),
/// [`secondary`](Self::secondary), [`backlog`](Self::backlog),
/// [`decide`](Self::decide), [`replicas`](Self::replicas),
/// [`good_replicas`](Self::good_replicas), [`write_allowed`](Self::write_allowed),
/// [`acked_count`](Self::acked_count), [`info`](Self::info).
/// Inputs: [`handle_message`](Self::handle_message), [`handle_bytes`](Self::handle_bytes),
/// [`handle_timeout`](Self::handle_timeout), [`disconnected`](Self::disconnected).
/// Commands: [`feed`](Self::feed), [`begin_snapshot`](Self::begin_snapshot),
/// [`snapshot_chunk`](Self::snapshot_chunk), [`finish_snapshot`](Self::finish_snapshot),
/// [`wait`](Self::wait), [`into_replica`](Self::into_replica).
/// Outputs: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ReplicationSource {
    config: ReplConfig,
    replid: ReplId,
    secondary: Option<(ReplId, u64)>,
    backlog: Backlog,
    replicas: BTreeMap<NodeId, Replica>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SourceEvent>,
    waiters: Vec<Waiter>,
    next_wait: u64,
    /// The replica the last record batch went to: batches rotate among replicas so a
    /// far-behind one does not hold up the others.
    last_served: Option<NodeId>,
}

impl ReplicationSource {
    /// A master starting a new history at offset 0, its id drawn from `seed`.
    pub fn new(config: ReplConfig, seed: u64) -> Self {
        let backlog = Backlog::new(config.backlog_size, 0);
        Self::from_parts(config, ReplId::from_seed(seed), None, backlog)
    }

    /// A master restarting with the data of history `replid` up to `offset`, restored
    /// from its own persistence. Like a promotion it takes a new id from `seed` and
    /// keeps `replid` as the secondary id up to `offset`: the restart may have lost
    /// writes a replica already received, and new writes at those offsets must not be
    /// mistaken for them. Its backlog starts empty, so replicas exactly at `offset`
    /// continue and the others resync fully.
    pub fn resume(config: ReplConfig, replid: ReplId, offset: u64, seed: u64) -> Self {
        let backlog = Backlog::new(config.backlog_size, offset);
        Self::from_parts(
            config,
            ReplId::from_seed(seed),
            Some((replid, offset)),
            backlog,
        )
    }

    pub(crate) fn from_parts(
        config: ReplConfig,
        replid: ReplId,
        secondary: Option<(ReplId, u64)>,
        backlog: Backlog,
    ) -> Self {
        ReplicationSource {
            config,
            replid,
            secondary,
            backlog,
            replicas: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            waiters: Vec::new(),
            next_wait: 0,
            last_served: None,
        }
    }

    // ---- getters ----

    /// The settings.
    pub fn config(&self) -> &ReplConfig {
        &self.config
    }

    /// The current replication id.
    pub fn replid(&self) -> ReplId {
        self.replid
    }

    /// `master_repl_offset`: stream bytes written so far.
    pub fn offset(&self) -> u64 {
        self.backlog.end()
    }

    /// The secondary id and the last offset of its history this master shares.
    pub fn secondary(&self) -> Option<(ReplId, u64)> {
        self.secondary
    }

    /// The backlog.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// How this master would answer `PSYNC replid offset` now.
    pub fn decide(&self, replid: Option<ReplId>, offset: u64) -> PsyncDecision {
        let Some(id) = replid else {
            return PsyncDecision::FullResync(FullReason::NoHistory);
        };
        if id != self.replid {
            match self.secondary {
                Some((id2, off2)) if id2 == id => {
                    if offset > off2 {
                        return PsyncDecision::FullResync(FullReason::BeyondSecondaryOffset);
                    }
                }
                _ => return PsyncDecision::FullResync(FullReason::UnknownId),
            }
        }
        if self.backlog.can_serve(offset) {
            PsyncDecision::Continue
        } else {
            PsyncDecision::FullResync(FullReason::OutOfBacklog)
        }
    }

    /// Every known replica.
    pub fn replicas(&self, now: Instant) -> Vec<ReplicaInfo> {
        self.replicas
            .iter()
            .map(|(id, r)| ReplicaInfo {
                id: *id,
                status: match r.state {
                    State::WaitSnapshot => ReplicaStatus::WaitSnapshot,
                    State::SendingSnapshot { .. } => ReplicaStatus::SendingSnapshot,
                    State::Online { .. } => ReplicaStatus::Online,
                },
                ack_offset: r.acked,
                last_ack: r.acked.map(|_| r.last_ack),
                lag: r.acked.map(|_| now.since(r.last_ack)),
            })
            .collect()
    }

    /// How many replicas this master knows (in any synchronisation step).
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Online replicas whose last ACK is at most `min_replicas_max_lag` old.
    pub fn good_replicas(&self, now: Instant) -> usize {
        self.replicas
            .values()
            .filter(|r| {
                matches!(r.state, State::Online { .. })
                    && r.acked.is_some()
                    && now.since(r.last_ack) <= self.config.min_replicas_max_lag
            })
            .count()
    }

    /// False when `min_replicas_to_write` is set and fewer replicas are good.
    pub fn write_allowed(&self, now: Instant) -> bool {
        self.config.min_replicas_to_write == 0
            || self.good_replicas(now) >= self.config.min_replicas_to_write
    }

    /// Online replicas that acknowledged `offset` or beyond.
    pub fn acked_count(&self, offset: u64) -> usize {
        self.replicas
            .values()
            .filter(|r| matches!(r.state, State::Online { .. }) && r.acked >= Some(offset))
            .count()
    }

    /// Messages queued for sending, not counting record batches (which are read from
    /// the backlog on demand). A driver streaming a large snapshot can wait for this to
    /// fall before producing more chunks.
    pub fn queued_transmits(&self) -> usize {
        self.transmits.len()
    }

    /// Redis's `INFO replication` figures.
    pub fn info(&self, now: Instant) -> SourceInfo {
        let replicas = self.replicas(now);
        SourceInfo {
            replid: self.replid,
            replid2: self.secondary.map(|s| s.0),
            offset: self.offset(),
            second_replid_offset: self.secondary.map(|s| s.1),
            backlog_first_byte_offset: self.backlog.start(),
            backlog_histlen: self.backlog.len(),
            connected_replicas: replicas
                .iter()
                .filter(|r| r.status == ReplicaStatus::Online)
                .count(),
            replicas,
        }
    }

    // ---- inputs ----

    /// Decodes and handles one message from `from`.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), HandleError> {
        let msg = ReplMessage::decode(bytes)?;
        self.handle_message(now, from, msg)
    }

    /// Handles one message from replica `from` (the transport's authenticated peer).
    /// Late, duplicated and stale messages are ignored; only messages a master never
    /// receives are errors.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: ReplMessage,
    ) -> Result<(), HandleError> {
        match msg {
            ReplMessage::Psync {
                attempt,
                replid,
                offset,
            } => {
                self.on_psync(now, from, attempt, replid, offset);
                Ok(())
            }
            ReplMessage::Ack {
                attempt,
                replid,
                offset,
            } => {
                self.on_ack(now, from, attempt, replid, offset);
                Ok(())
            }
            other => Err(HandleError::Unexpected {
                message: other.name(),
                role: "master",
            }),
        }
    }

    fn on_psync(
        &mut self,
        now: Instant,
        from: NodeId,
        attempt: u32,
        replid: Option<ReplId>,
        offset: u64,
    ) {
        // A PSYNC not newer than the session's is a duplicate or a late copy, whose
        // answer was already sent; but no message stays in flight for `repl_timeout`,
        // so one that comes later than that after the session began is from a
        // restarted replica counting from 1 again. (The driver's `disconnected` lets
        // a restarted replica in at once.)
        if let Some(r) = self.replicas.get_mut(&from) {
            if attempt <= r.attempt && now.since(r.since) < self.config.repl_timeout {
                r.last_heard = now;
                return;
            }
        }
        let decision = self.decide(replid, offset);
        let state = match decision {
            PsyncDecision::Continue => {
                self.transmits.push_back(Transmit {
                    to: from,
                    message: ReplMessage::Continue {
                        attempt,
                        replid: self.replid,
                        offset,
                    },
                });
                self.events.push_back(SourceEvent::ReplicaOnline {
                    replica: from,
                    offset,
                    partial: true,
                });
                State::Online { cursor: offset }
            }
            PsyncDecision::FullResync(_) => {
                self.events
                    .push_back(SourceEvent::SnapshotNeeded { replica: from });
                State::WaitSnapshot
            }
        };
        let acked = matches!(decision, PsyncDecision::Continue).then_some(offset);
        self.replicas.insert(
            from,
            Replica {
                attempt,
                since: now,
                state,
                acked,
                last_ack: now,
                last_heard: now,
                next_ping: now + self.config.ping_period,
                getack: false,
            },
        );
        self.check_waiters(now);
    }

    fn on_ack(&mut self, now: Instant, from: NodeId, attempt: u32, replid: ReplId, offset: u64) {
        let master_offset = self.offset();
        let my_id = self.replid;
        let Some(r) = self.replicas.get_mut(&from) else {
            return;
        };
        r.last_heard = now;
        if r.attempt != attempt
            || replid != my_id
            || offset > master_offset
            || !matches!(r.state, State::Online { .. })
        {
            return;
        }
        r.acked = r.acked.max(Some(offset));
        r.last_ack = now;
        self.check_waiters(now);
    }

    /// Forgets a replica whose connection closed; its next PSYNC starts afresh.
    pub fn disconnected(&mut self, replica: NodeId) {
        self.replicas.remove(&replica);
    }

    /// Sends pings, drops silent replicas and ends timed-out waits. Call at
    /// [`poll_timeout`](Self::poll_timeout) (earlier or later calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut dropped = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            if !matches!(r.state, State::Online { .. }) {
                continue;
            }
            if now.since(r.last_heard) >= self.config.repl_timeout {
                dropped.push(*id);
                continue;
            }
            if now >= r.next_ping {
                r.next_ping = now + self.config.ping_period;
                self.transmits.push_back(Transmit {
                    to: *id,
                    message: ReplMessage::Ping {
                        replid: self.replid,
                        offset: self.backlog.end(),
                    },
                });
            }
        }
        for id in dropped {
            self.drop_replica(id, DropReason::Timeout);
        }
        self.check_waiters(now);
    }

    // ---- commands ----

    /// Appends a write record to the stream; returns the master offset after it (the
    /// offset to pass to [`wait`](Self::wait)). The payload is opaque here.
    pub fn feed(&mut self, payload: Vec<u8>) -> Result<u64, CommandError> {
        if payload.len() > MAX_RECORD_LEN {
            return Err(CommandError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_LEN,
            });
        }
        self.backlog.push(payload);
        Ok(self.backlog.end())
    }

    /// Starts sending a snapshot to `replica`: the snapshot must reflect exactly the
    /// records up to `offset` (usually [`offset`](Self::offset) at the moment the
    /// snapshot is taken). Records after `offset` are streamed from the backlog once the
    /// snapshot is finished, so the backlog must still hold `offset` then.
    pub fn begin_snapshot(&mut self, replica: NodeId, offset: u64) -> Result<(), CommandError> {
        if !self.backlog.can_serve(offset) {
            return Err(CommandError::OffsetUnavailable {
                offset,
                start: self.backlog.start(),
                end: self.backlog.end(),
            });
        }
        let replid = self.replid;
        let r = self
            .replicas
            .get_mut(&replica)
            .ok_or(CommandError::UnknownReplica(replica))?;
        if !matches!(r.state, State::WaitSnapshot) {
            return Err(CommandError::WrongState {
                replica,
                expected: "awaiting a snapshot",
            });
        }
        r.state = State::SendingSnapshot {
            offset,
            sent: 0,
            hasher: crc32fast::Hasher::new(),
        };
        self.transmits.push_back(Transmit {
            to: replica,
            message: ReplMessage::FullResync {
                attempt: r.attempt,
                replid,
                offset,
            },
        });
        Ok(())
    }

    /// Sends the next bytes of `replica`'s snapshot (split into chunks of at most
    /// `snapshot_chunk_bytes`). [`CommandError::WrongState`] or
    /// [`CommandError::UnknownReplica`] mean the replica asked again or was dropped
    /// meanwhile: abandon this snapshot (a new `SnapshotNeeded` says if another is due).
    pub fn snapshot_chunk(&mut self, replica: NodeId, data: &[u8]) -> Result<(), CommandError> {
        let chunk = self.config.snapshot_chunk_bytes.max(1);
        let r = self
            .replicas
            .get_mut(&replica)
            .ok_or(CommandError::UnknownReplica(replica))?;
        let State::SendingSnapshot { sent, hasher, .. } = &mut r.state else {
            return Err(CommandError::WrongState {
                replica,
                expected: "receiving a snapshot",
            });
        };
        hasher.update(data);
        for piece in data.chunks(chunk) {
            self.transmits.push_back(Transmit {
                to: replica,
                message: ReplMessage::SnapshotChunk {
                    attempt: r.attempt,
                    position: *sent,
                    data: piece.to_vec(),
                },
            });
            *sent += piece.len() as u64;
        }
        Ok(())
    }

    /// Ends `replica`'s snapshot; the records written since its offset follow. If the
    /// backlog no longer holds that offset the replica is dropped
    /// ([`DropReason::BacklogOverrun`]) and must sync again.
    pub fn finish_snapshot(&mut self, replica: NodeId) -> Result<(), CommandError> {
        let r = self
            .replicas
            .get_mut(&replica)
            .ok_or(CommandError::UnknownReplica(replica))?;
        let State::SendingSnapshot {
            offset,
            sent,
            hasher,
        } = std::mem::replace(&mut r.state, State::WaitSnapshot)
        else {
            return Err(CommandError::WrongState {
                replica,
                expected: "receiving a snapshot",
            });
        };
        self.transmits.push_back(Transmit {
            to: replica,
            message: ReplMessage::SnapshotEnd {
                attempt: r.attempt,
                total_len: sent,
                crc: hasher.finalize(),
            },
        });
        if !self.backlog.can_serve(offset) {
            self.drop_replica(replica, DropReason::BacklogOverrun);
            return Ok(());
        }
        r.state = State::Online { cursor: offset };
        r.acked = None;
        self.events.push_back(SourceEvent::ReplicaOnline {
            replica,
            offset,
            partial: false,
        });
        Ok(())
    }

    /// Redis's `WAIT`: reports [`SourceEvent::WaitDone`] once `replicas` replicas have
    /// acknowledged `offset`, or when `timeout` ms have passed. Asks every online
    /// replica to acknowledge (GETACK, sent after the records it has not been sent).
    pub fn wait(&mut self, now: Instant, replicas: usize, offset: u64, timeout: u64) -> WaitId {
        let id = WaitId(self.next_wait);
        self.next_wait += 1;
        for r in self.replicas.values_mut() {
            if matches!(r.state, State::Online { .. }) {
                r.getack = true;
            }
        }
        self.waiters.push(Waiter {
            id,
            replicas,
            offset,
            deadline: now + timeout,
        });
        self.check_waiters(now);
        id
    }

    /// Turns this master into a replica of another master: it keeps its id and offset,
    /// so it can continue partially if the new master's history contains its own.
    /// Events and messages still queued are dropped, and replicas forgotten.
    ///
    /// A master that took no write under its current id (for example one resumed
    /// after a restart and demoted before its first write) holds exactly its secondary
    /// history up to the secondary offset; it then asks to continue that history, the
    /// one its new master knows.
    pub fn into_replica(self, now: Instant) -> ReplicationSink {
        let replid = match self.secondary {
            Some((id, offset)) if offset == self.backlog.end() => id,
            _ => self.replid,
        };
        ReplicationSink::from_parts(self.config, now, Some(replid), self.backlog)
    }

    // ---- outputs ----

    /// The next message to send. Queued answers come first, then record batches read
    /// from the backlog for each online replica that is behind.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let end = self.backlog.end();
        // Start after the replica served last, wrapping around.
        let mut order: Vec<NodeId> = self.replicas.keys().copied().collect();
        if let Some(last) = self.last_served {
            let split = order.partition_point(|id| *id <= last);
            order.rotate_left(split);
        }
        for id in order {
            let Some(r) = self.replicas.get_mut(&id) else {
                continue;
            };
            let State::Online { cursor } = &mut r.state else {
                continue;
            };
            let message = if *cursor >= end {
                if !std::mem::take(&mut r.getack) {
                    continue;
                }
                ReplMessage::GetAck
            } else {
                let Some(records) = self.backlog.read(*cursor, self.config.max_batch_bytes) else {
                    self.drop_replica(id, DropReason::BacklogOverrun);
                    continue;
                };
                let start = *cursor;
                *cursor += records.iter().map(|p| stream_len(p.len())).sum::<u64>();
                ReplMessage::Records {
                    replid: self.replid,
                    start,
                    records,
                }
            };
            self.last_served = Some(id);
            return Some(Transmit { to: id, message });
        }
        None
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SourceEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let replicas = self
            .replicas
            .values()
            .filter(|r| matches!(r.state, State::Online { .. }))
            .map(|r| r.next_ping.min(r.last_heard + self.config.repl_timeout));
        let waits = self.waiters.iter().map(|w| w.deadline);
        replicas.chain(waits).min()
    }

    fn drop_replica(&mut self, replica: NodeId, reason: DropReason) {
        if self.replicas.remove(&replica).is_some() {
            self.events
                .push_back(SourceEvent::ReplicaDropped { replica, reason });
        }
    }

    fn check_waiters(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let acked = self.acked_count(w.offset);
            let satisfied = acked >= w.replicas;
            if satisfied || now >= w.deadline {
                let w = self.waiters.remove(i);
                self.events.push_back(SourceEvent::WaitDone {
                    id: w.id,
                    acked,
                    satisfied,
                });
            } else {
                i += 1;
            }
        }
    }
}
