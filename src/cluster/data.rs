//! The cache as replication sees it: snapshots for full syncs, replicated records and
//! snapshots applied on a replica, the stream position kept in the node's log.

use std::hash::Hash;
use std::sync::Arc;

use larder_cluster::net::Dataset;
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
    fn snapshot(&self, chunk: &mut dyn FnMut(Vec<u8>)) -> Result<(), String> {
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
                    chunk(std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(SNAPSHOT_CHUNK + 1024),
                    ));
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
        let applied = applying(|| apply(&self.cache, r.clone()));
        // Logged even if the cache refused it (memory): the log mirrors the stream, so
        // the position stays right; the refusal is reported.
        self.shared
            .log_replicated(&mut pos, vec![r], offset + stream_len(record.len()))
            .map_err(|e| format!("logging the record at offset {offset}: {e}"))?;
        applied.map_err(|e| format!("record at stream offset {offset}: {e}"))
    }

    fn load(&self, replid: ReplId, offset: u64, snapshot: Vec<u8>) -> Result<(), String> {
        // Decode everything first: a damaged snapshot leaves the data as it was.
        let records = wire::split_snapshot(&snapshot)
            .map_err(|e| format!("snapshot: {e}"))?
            .into_iter()
            .enumerate()
            .map(|(i, b)| Record::decode(b).map_err(|e| format!("snapshot record {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        drop(snapshot);
        {
            let mut pos = self.shared.lock();
            let r = applying(|| -> Result<(), String> {
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
            *pos = Position {
                replid: Some(replid),
                offset,
            };
            r?;
        }
        // The log gets a new base holding the loaded data, and the position with it.
        if self.shared.aof.is_some() {
            self.cache
                .rewrite_aof()
                .map_err(|e| format!("rewriting the log after a full sync: {e}"))?;
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
