//! The cache as replication sees it: snapshots for full syncs, replicated records and
//! snapshots applied on a replica, the stream position kept in the node's log.

use std::hash::Hash;
use std::sync::Arc;

use larder_cluster::net::{Dataset, LoadFailure};
use larder_cluster::repl::{stream_len, ReplId};
use larder_persistence::Record;

use super::journal::{applying, Position, Shared};
use super::wire;
use crate::durable::{apply, Codec};
use crate::error::Error;
use crate::weigh::Weigher;
use crate::Cache;

/// Snapshot bytes handed to replication at a time.
const SNAPSHOT_CHUNK: usize = 256 * 1024;

pub(crate) struct CacheData<K, V, W> {
    pub(crate) cache: Cache<K, V, W>,
    pub(crate) shared: Arc<Shared<K, V>>,
}

impl<K, V, W> Dataset for CacheData<K, V, W>
where
    K: Hash + Eq + Clone + Send + Sync + 'static + Codec,
    V: Clone + Send + Sync + 'static + Codec,
    W: Weigher<K, V>,
{
    fn snapshot(&self, chunk: &mut dyn FnMut(Vec<u8>) -> bool) -> Result<(), String> {
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK + 1024);
        let codec = |e: crate::CodecError| Error::Persistence(e.to_string());
        self.cache
            .inner
            .for_each_entry(|k, v, at| {
                let r = Record::Set {
                    key: k.encode().map_err(codec)?,
                    value: v.encode().map_err(codec)?,
                    expire_at_ms: at,
                };
                wire::push_snapshot_record(&mut buf, &r.encode());
                if buf.len() >= SNAPSHOT_CHUNK {
                    let full =
                        std::mem::replace(&mut buf, Vec::with_capacity(SNAPSHOT_CHUNK + 1024));
                    if !chunk(full) {
                        return Err(Error::Cluster("snapshot transfer abandoned".into()));
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        if !buf.is_empty() {
            chunk(buf);
        }
        Ok(())
    }

    fn apply(&self, offset: u64, record: &[u8]) -> Result<(), String> {
        let r =
            Record::decode(record).map_err(|e| format!("record at stream offset {offset}: {e}"))?;
        let mut pos = self.shared.lock();
        let end = offset + stream_len(record.len());
        match applying(|| apply(&self.cache, r.clone())) {
            Ok(()) => self
                .shared
                .log_replicated(&mut pos, vec![r], end)
                .map_err(|e| format!("logging the record at offset {offset}: {e}")),
            Err(e) => {
                // The cache refused it (its memory bound): this replica's data is no
                // longer its master's. The log says so, and a restart resyncs fully.
                *pos = Position::default();
                let logged = self.shared.log_position(&pos);
                pos.offset = end;
                logged.map_err(|e| format!("logging the lost position: {e}"))?;
                Err(format!(
                    "record at stream offset {offset} refused: {e}; this replica diverges from its master until its next full sync"
                ))
            }
        }
    }

    fn load(&self, replid: ReplId, offset: u64, snapshot: Vec<u8>) -> Result<(), LoadFailure> {
        // Decode everything first: a damaged snapshot leaves the data as it was.
        let records = wire::split_snapshot(&snapshot)
            .map_err(|e| LoadFailure::Rejected(format!("snapshot: {e}")))?
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                Record::decode(b)
                    .map_err(|e| LoadFailure::Rejected(format!("snapshot record {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(snapshot);
        let mut pos = self.shared.lock();
        // The log gets: position unknown, Flush, the snapshot's records, then the new
        // position, so a crash anywhere in between restarts with a full resync, and
        // whatever rewrite runs meanwhile replays to the loaded data.
        *pos = Position::default();
        let log = |records: Vec<Record>| -> Result<(), LoadFailure> {
            match &self.shared.aof {
                Some(aof) => aof
                    .write(records, false)
                    .map(|_| ())
                    .map_err(|e| LoadFailure::Partial(format!("logging the snapshot: {e}"))),
                None => Ok(()),
            }
        };
        log(vec![Record::Meta(pos.encode()), Record::Flush])?;
        for chunk in records.chunks(1024) {
            log(chunk.to_vec())?;
        }
        let applied = applying(|| -> Result<(), String> {
            self.cache.clear().map_err(|e| e.to_string())?;
            self.cache.inner.reserve(records.len());
            let mut failed = None;
            for r in records {
                if let Err(e) = apply(&self.cache, r) {
                    failed.get_or_insert(e);
                }
            }
            failed.map_or(Ok(()), Err)
        });
        if let Err(e) = applied {
            // Position stays unknown: the data is not the snapshot.
            return Err(LoadFailure::Partial(e));
        }
        *pos = Position {
            replid: Some(replid),
            offset,
        };
        self.shared
            .log_position(&pos)
            .map_err(|e| LoadFailure::Partial(format!("logging the position: {e}")))?;
        drop(pos);
        // Compact the log in the background; one already running serves as well.
        if self.shared.aof.is_some() {
            let _ = self.cache.bgsave();
        }
        Ok(())
    }

    fn position(&self, replid: ReplId, offset: u64) {
        let mut pos = self.shared.lock();
        *pos = Position {
            replid: Some(replid),
            offset,
        };
        if let Err(e) = self.shared.log_position(&pos) {
            tracing::error!("cannot log the replication position: {e}");
        }
    }

    fn barrier(&self) {
        self.cache.inner.barrier();
    }
}
