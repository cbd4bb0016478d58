//! Replication settings, named after their Redis counterparts.

/// Settings for both sides of replication. Times are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplConfig {
    /// `repl-backlog-size`: stream bytes a master keeps for partial resyncs. It must also
    /// hold every write made while a full sync's snapshot is in transfer (Redis keeps
    /// those in the replica's output buffer; here the replica reads them from the
    /// backlog), else the replica is dropped and must sync again.
    pub backlog_size: u64,
    /// `repl-ping-replica-period`: how often a master pings each replica with its offset.
    pub ping_period: u64,
    /// How often a replica sends REPLCONF ACK with its offset (Redis: every second).
    pub ack_period: u64,
    /// `repl-timeout`: a replica that hears nothing from its master for this long marks
    /// the link down and resyncs; a master drops a replica silent for this long; a
    /// snapshot transfer stalled this long is abandoned.
    pub repl_timeout: u64,
    /// A replica re-sends PSYNC if no answer came within this long.
    pub handshake_timeout: u64,
    /// `min-replicas-to-write`: writes are refused unless this many replicas are good
    /// (0 disables the check).
    pub min_replicas_to_write: usize,
    /// `min-replicas-max-lag`: a replica is good while its last ACK is at most this old.
    pub min_replicas_max_lag: u64,
    /// Most stream bytes per RECORDS message (one larger record is still sent alone).
    pub max_batch_bytes: u64,
    /// Most snapshot bytes per SNAPSHOT_CHUNK message.
    pub snapshot_chunk_bytes: usize,
}

impl Default for ReplConfig {
    fn default() -> Self {
        ReplConfig {
            backlog_size: 1024 * 1024,
            ping_period: 1_000,
            ack_period: 1_000,
            repl_timeout: 60_000,
            handshake_timeout: 5_000,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10_000,
            max_batch_bytes: 64 * 1024,
            snapshot_chunk_bytes: 64 * 1024,
        }
    }
}
