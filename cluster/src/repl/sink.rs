//! The replica side: PSYNC handshake, snapshot loading, applying records in offset
//! order, acknowledgements, link supervision and promotion.

use std::collections::VecDeque;

use crate::proto::Instant;
use crate::repl::backlog::{stream_len, Backlog};
use crate::repl::codec::ReplMessage;
use crate::repl::config::ReplConfig;
use crate::repl::id::ReplId;
use crate::repl::source::ReplicationSource;
use crate::repl::HandleError;

/// What a replica tells its driver (the cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkEvent {
    /// Apply this write record; it occupies the stream from `offset`. Records come
    /// exactly once each, in stream order.
    Apply {
        /// Stream offset where the record starts.
        offset: u64,
        /// The record, as the master fed it.
        payload: Vec<u8>,
    },
    /// A partial resync succeeded: the stream continues from `offset` under `replid`.
    Continued {
        /// The master's id (new if the master continued our history under a new id).
        replid: ReplId,
        /// Our offset.
        offset: u64,
    },
    /// A full resync began: stage the snapshot chunks that follow, keep serving the
    /// current data until [`SinkEvent::FullSyncDone`].
    FullSyncStarted {
        /// The master's id.
        replid: ReplId,
        /// The offset the snapshot reflects.
        offset: u64,
    },
    /// The next bytes of the snapshot, in order.
    SnapshotChunk {
        /// The bytes.
        data: Vec<u8>,
    },
    /// The snapshot arrived whole with a matching CRC: replace the data with it;
    /// records from `offset` follow.
    FullSyncDone {
        /// The snapshot's offset, now ours.
        offset: u64,
    },
    /// The snapshot transfer failed: discard what was staged; a new sync follows.
    FullSyncAborted,
    /// Nothing heard from the master for `repl_timeout` (master_link_status: down).
    LinkDown,
}

#[derive(Debug)]
enum State {
    Handshake {
        sent_at: Instant,
    },
    Loading {
        replid: ReplId,
        offset: u64,
        received: u64,
        hasher: crc32fast::Hasher,
        last_chunk: Instant,
    },
    Streaming {
        /// Our offset when the previous PING came, to notice a lost stream tail.
        offset_at_last_ping: Option<u64>,
        next_ack: Instant,
    },
}

/// A replica's synchronisation step (Redis's `master_sync_in_progress` and link state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkStatus {
    /// PSYNC sent, no answer yet.
    Handshake,
    /// Receiving a snapshot; `received` bytes so far.
    Loading {
        /// Snapshot bytes received.
        received: u64,
    },
    /// Applying the stream.
    Streaming,
}

/// A replica's replication figures (Redis `INFO replication` on a replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkInfo {
    /// The master's replication id, once known.
    pub master_replid: Option<ReplId>,
    /// `slave_repl_offset`.
    pub offset: u64,
    /// `master_link_status` is `up`.
    pub link_up: bool,
    /// `master_last_io_seconds_ago`, in ms.
    pub last_io: u64,
    /// `master_sync_in_progress`.
    pub sync_in_progress: bool,
    /// The step.
    pub status: SinkStatus,
}

/// The replica side of replication.
///
/// Getters: [`replid`](Self::replid), [`offset`](Self::offset),
/// [`status`](Self::status), [`link_up`](Self::link_up), [`info`](Self::info),
/// [`backlog`](Self::backlog).
/// Inputs: [`handle_message`](Self::handle_message), [`handle_bytes`](Self::handle_bytes),
/// [`handle_timeout`](Self::handle_timeout).
/// Commands: [`reconnect`](Self::reconnect), [`promote`](Self::promote).
/// Outputs: [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ReplicationSink {
    config: ReplConfig,
    replid: Option<ReplId>,
    backlog: Backlog,
    attempt: u32,
    state: State,
    link_up: bool,
    last_heard: Instant,
    transmits: VecDeque<ReplMessage>,
    events: VecDeque<SinkEvent>,
}

impl ReplicationSink {
    /// A replica holding no data; it asks its master for a full sync at once.
    pub fn new(config: ReplConfig, now: Instant) -> Self {
        let backlog = Backlog::new(config.backlog_size, 0);
        Self::from_parts(config, now, None, backlog)
    }

    /// A replica that restarts holding history `replid` up to `offset` (restored from
    /// its own persistence); it asks to continue from there.
    pub fn resume(config: ReplConfig, now: Instant, replid: ReplId, offset: u64) -> Self {
        let backlog = Backlog::new(config.backlog_size, offset);
        Self::from_parts(config, now, Some(replid), backlog)
    }

    pub(crate) fn from_parts(
        config: ReplConfig,
        now: Instant,
        replid: Option<ReplId>,
        backlog: Backlog,
    ) -> Self {
        let mut sink = ReplicationSink {
            config,
            replid,
            backlog,
            attempt: 0,
            state: State::Handshake { sent_at: now },
            link_up: false,
            last_heard: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        sink.send_psync(now);
        sink
    }

    // ---- getters ----

    /// The history we hold, if any.
    pub fn replid(&self) -> Option<ReplId> {
        self.replid
    }

    /// `slave_repl_offset`: stream bytes applied.
    pub fn offset(&self) -> u64 {
        self.backlog.end()
    }

    /// The number of the latest PSYNC.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The synchronisation step.
    pub fn status(&self) -> SinkStatus {
        match &self.state {
            State::Handshake { .. } => SinkStatus::Handshake,
            State::Loading { received, .. } => SinkStatus::Loading {
                received: *received,
            },
            State::Streaming { .. } => SinkStatus::Streaming,
        }
    }

    /// master_link_status: streaming, and heard from the master within `repl_timeout`.
    pub fn link_up(&self, now: Instant) -> bool {
        self.link_up
            && matches!(self.state, State::Streaming { .. })
            && now.since(self.last_heard) < self.config.repl_timeout
    }

    /// The records applied recently (what a promotion serves partial resyncs from).
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Redis's `INFO replication` figures for a replica.
    pub fn info(&self, now: Instant) -> SinkInfo {
        SinkInfo {
            master_replid: self.replid,
            offset: self.offset(),
            link_up: self.link_up(now),
            last_io: now.since(self.last_heard),
            sync_in_progress: matches!(self.state, State::Loading { .. }),
            status: self.status(),
        }
    }

    // ---- inputs ----

    /// Decodes and handles one message from the master.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), HandleError> {
        let msg = ReplMessage::decode(bytes)?;
        self.handle_message(now, msg)
    }

    /// Handles one message from the master. Late, duplicated and stale messages are
    /// ignored; a gap in the stream starts a new PSYNC from our offset.
    pub fn handle_message(&mut self, now: Instant, msg: ReplMessage) -> Result<(), HandleError> {
        self.last_heard = now;
        match msg {
            ReplMessage::Continue {
                attempt,
                replid,
                offset,
            } => {
                if !self.answers_handshake(attempt) {
                    return Ok(());
                }
                if offset != self.offset() {
                    // Not the offset we asked from: ask again.
                    self.restart(now);
                    return Ok(());
                }
                self.replid = Some(replid);
                self.enter_streaming(now);
                self.events
                    .push_back(SinkEvent::Continued { replid, offset });
            }
            ReplMessage::FullResync {
                attempt,
                replid,
                offset,
            } => {
                if !self.answers_handshake(attempt) {
                    return Ok(());
                }
                self.state = State::Loading {
                    replid,
                    offset,
                    received: 0,
                    hasher: crc32fast::Hasher::new(),
                    last_chunk: now,
                };
                self.events
                    .push_back(SinkEvent::FullSyncStarted { replid, offset });
            }
            ReplMessage::SnapshotChunk {
                attempt,
                position,
                data,
            } => {
                let State::Loading {
                    received,
                    hasher,
                    last_chunk,
                    ..
                } = &mut self.state
                else {
                    return Ok(());
                };
                if attempt != self.attempt || position < *received {
                    return Ok(());
                }
                if position > *received {
                    self.restart(now);
                    return Ok(());
                }
                hasher.update(&data);
                *received += data.len() as u64;
                *last_chunk = now;
                self.events.push_back(SinkEvent::SnapshotChunk { data });
            }
            ReplMessage::SnapshotEnd {
                attempt,
                total_len,
                crc,
            } => {
                let State::Loading {
                    replid,
                    offset,
                    received,
                    hasher,
                    ..
                } = &self.state
                else {
                    return Ok(());
                };
                if attempt != self.attempt {
                    return Ok(());
                }
                if total_len != *received || hasher.clone().finalize() != crc {
                    self.restart(now);
                    return Ok(());
                }
                let (replid, offset) = (*replid, *offset);
                self.replid = Some(replid);
                self.backlog.reset(offset);
                self.enter_streaming(now);
                self.events.push_back(SinkEvent::FullSyncDone { offset });
            }
            ReplMessage::Records {
                replid,
                start,
                records,
            } => {
                if !matches!(self.state, State::Streaming { .. }) || Some(replid) != self.replid {
                    return Ok(());
                }
                self.apply(now, start, records);
            }
            ReplMessage::Ping { replid, offset } => {
                let mine = self.offset();
                let State::Streaming {
                    offset_at_last_ping,
                    ..
                } = &mut self.state
                else {
                    return Ok(());
                };
                let stalled = *offset_at_last_ping == Some(mine);
                *offset_at_last_ping = Some(mine);
                // A different id means the master started another history; a master
                // ahead of us while we made no progress since the last ping means the
                // tail of the stream was lost. Either way, ask where we stand.
                if Some(replid) != self.replid || (offset > mine && stalled) {
                    self.restart(now);
                }
            }
            ReplMessage::GetAck => {
                if matches!(self.state, State::Streaming { .. }) {
                    self.send_ack();
                }
            }
            other => {
                return Err(HandleError::Unexpected {
                    message: other.name(),
                    role: "replica",
                })
            }
        }
        Ok(())
    }

    /// Acks on schedule, re-sends an unanswered PSYNC, and marks the link down after
    /// `repl_timeout` of silence (then resyncs).
    pub fn handle_timeout(&mut self, now: Instant) {
        let silent = now.since(self.last_heard) >= self.config.repl_timeout;
        match &mut self.state {
            State::Handshake { sent_at } => {
                if now.since(*sent_at) >= self.config.handshake_timeout {
                    self.restart(now);
                }
            }
            State::Loading { last_chunk, .. } => {
                if now.since(*last_chunk) >= self.config.repl_timeout {
                    self.restart(now);
                }
            }
            State::Streaming { next_ack, .. } => {
                if silent {
                    self.restart(now);
                } else if now >= *next_ack {
                    *next_ack = now + self.config.ack_period;
                    self.send_ack();
                }
            }
        }
        if silent && self.link_up {
            self.link_up = false;
            self.events.push_back(SinkEvent::LinkDown);
        }
    }

    // ---- commands ----

    /// The connection to the master was re-established: start a new PSYNC now.
    pub fn reconnect(&mut self, now: Instant) {
        self.restart(now);
    }

    /// Makes this replica a master (Redis's shiftReplicationId): the history it holds
    /// becomes the secondary id, valid up to its current offset, and a new id is drawn
    /// from `seed`. Other replicas of the old master then continue partially from it.
    ///
    /// Also returns the events not yet polled: they must be handled as usual (an
    /// `Apply` among them is part of the history the new master serves). A snapshot
    /// being loaded is abandoned, so the driver discards what it staged
    /// ([`SinkEvent::FullSyncAborted`] is the last returned event then).
    pub fn promote(mut self, seed: u64) -> (ReplicationSource, Vec<SinkEvent>) {
        if matches!(self.state, State::Loading { .. }) {
            self.events.push_back(SinkEvent::FullSyncAborted);
        }
        let secondary = self.replid.map(|id| (id, self.offset()));
        let source = ReplicationSource::from_parts(
            self.config,
            ReplId::from_seed(seed),
            secondary,
            self.backlog,
        );
        (source, self.events.into())
    }

    // ---- outputs ----

    /// The next message for the master.
    pub fn poll_transmit(&mut self) -> Option<ReplMessage> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SinkEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.last_heard + self.config.repl_timeout;
        Some(match &self.state {
            State::Handshake { sent_at } => *sent_at + self.config.handshake_timeout,
            State::Loading { last_chunk, .. } => *last_chunk + self.config.repl_timeout,
            State::Streaming { next_ack, .. } => (*next_ack).min(link),
        })
    }

    // ---- internals ----

    fn answers_handshake(&self, attempt: u32) -> bool {
        matches!(self.state, State::Handshake { .. }) && attempt == self.attempt
    }

    fn enter_streaming(&mut self, now: Instant) {
        self.state = State::Streaming {
            offset_at_last_ping: None,
            next_ack: now + self.config.ack_period,
        };
        self.link_up = true;
        self.send_ack();
    }

    fn apply(&mut self, now: Instant, start: u64, records: Vec<Vec<u8>>) {
        let mut at = start;
        for payload in records {
            let end = at.saturating_add(stream_len(payload.len()));
            let mine = self.offset();
            if end <= mine {
                // Already applied: duplicates are harmless.
            } else if at == mine {
                self.backlog.push(payload.clone());
                self.events.push_back(SinkEvent::Apply {
                    offset: at,
                    payload,
                });
            } else {
                // A gap (at > mine) or a record straddling our offset (not a boundary of
                // our history): never apply, ask again from where we are.
                self.restart(now);
                return;
            }
            at = end;
        }
    }

    /// Starts a new PSYNC from our offset (after a gap, a failed snapshot, a timeout).
    fn restart(&mut self, now: Instant) {
        if matches!(self.state, State::Loading { .. }) {
            self.events.push_back(SinkEvent::FullSyncAborted);
        }
        self.send_psync(now);
    }

    fn send_psync(&mut self, now: Instant) {
        self.attempt = self.attempt.wrapping_add(1);
        self.state = State::Handshake { sent_at: now };
        self.transmits.push_back(ReplMessage::Psync {
            attempt: self.attempt,
            replid: self.replid,
            offset: self.offset(),
        });
    }

    fn send_ack(&mut self) {
        if let Some(replid) = self.replid {
            self.transmits.push_back(ReplMessage::Ack {
                attempt: self.attempt,
                replid,
                offset: self.offset(),
            });
        }
    }
}
