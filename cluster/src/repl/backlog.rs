//! The replication backlog: the most recent whole records of the stream, with offsets.

use std::collections::VecDeque;

/// Bytes a record occupies in the stream beyond its payload: its `u32` length prefix.
///
/// The stream is the concatenation of length-prefixed records, and offsets count its
/// bytes, so a record of `n` payload bytes advances the offset by `n + 4`. A zero-length
/// record still advances it, which keeps every record at a distinct offset.
pub const RECORD_OVERHEAD: u64 = 4;

/// Stream bytes taken by a record with `len` payload bytes.
pub fn stream_len(len: usize) -> u64 {
    len as u64 + RECORD_OVERHEAD
}

/// A ring of whole records covering the stream from [`Backlog::start`] to
/// [`Backlog::end`], holding at most `capacity` stream bytes (the newest record is kept
/// even if it alone is larger).
///
/// Invariant: records are contiguous; the first starts at `start`, each next one where
/// the previous ends, and the last ends at `end`.
#[derive(Clone, Debug)]
pub struct Backlog {
    records: VecDeque<(u64, Vec<u8>)>,
    start: u64,
    end: u64,
    capacity: u64,
}

impl Backlog {
    /// An empty backlog whose stream position is `offset`.
    pub fn new(capacity: u64, offset: u64) -> Self {
        Backlog {
            records: VecDeque::new(),
            start: offset,
            end: offset,
            capacity,
        }
    }

    /// First offset the backlog can serve from.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The stream position after the last record (the master offset).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Stream bytes held (`end - start`), Redis's `repl_backlog_histlen`.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Capacity in stream bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Appends a record at [`Backlog::end`] and returns its start offset; evicts the
    /// oldest records beyond capacity.
    pub fn push(&mut self, payload: Vec<u8>) -> u64 {
        let at = self.end;
        self.end += stream_len(payload.len());
        self.records.push_back((at, payload));
        while self.len() > self.capacity && self.records.len() > 1 {
            if let Some((off, p)) = self.records.pop_front() {
                self.start = off + stream_len(p.len());
            }
        }
        at
    }

    /// Drops everything and restarts the stream at `offset` (after a full sync).
    pub fn reset(&mut self, offset: u64) {
        self.records.clear();
        self.start = offset;
        self.end = offset;
    }

    /// True if a reader at `offset` can continue from here: the offset is the end or the
    /// start of a held record (a position inside a record is not a record boundary of
    /// this history, so it cannot be continued).
    pub fn can_serve(&self, offset: u64) -> bool {
        offset == self.end || self.index_of(offset).is_some()
    }

    fn index_of(&self, offset: u64) -> Option<usize> {
        if offset < self.start || offset >= self.end {
            return None;
        }
        self.records.binary_search_by_key(&offset, |(o, _)| *o).ok()
    }

    /// Records from `offset` on, at least one and then up to `max_bytes` stream bytes;
    /// `None` if `offset` cannot be served, empty if it is the end.
    pub fn read(&self, offset: u64, max_bytes: u64) -> Option<Vec<Vec<u8>>> {
        if offset == self.end {
            return Some(Vec::new());
        }
        let i = self.index_of(offset)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, p) in self.records.iter().skip(i) {
            let n = stream_len(p.len());
            if !out.is_empty() && bytes + n > max_bytes {
                break;
            }
            bytes += n;
            out.push(p.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_framed_bytes_and_eviction_keeps_whole_records() {
        let mut b = Backlog::new(20, 100);
        assert_eq!(b.push(vec![1; 6]), 100); // 100..110
        assert_eq!(b.push(vec![2; 6]), 110); // 110..120
        assert_eq!((b.start(), b.end()), (100, 120));
        assert_eq!(b.push(vec![]), 120); // 120..124, evicts the first
        assert_eq!((b.start(), b.end()), (110, 124));
        assert!(b.can_serve(110) && b.can_serve(120) && b.can_serve(124));
        assert!(!b.can_serve(100) && !b.can_serve(111) && !b.can_serve(125));
        assert_eq!(b.read(110, 1).unwrap(), vec![vec![2; 6]]);
        assert_eq!(b.read(110, 100).unwrap().len(), 2);
        assert_eq!(b.read(124, 100).unwrap().len(), 0);
        assert!(b.read(100, 100).is_none());
        // A record larger than the capacity stays alone.
        b.push(vec![0; 50]);
        assert_eq!((b.start(), b.end()), (124, 178));
    }

    #[test]
    fn matches_a_model_of_the_whole_stream() {
        let mut rng = crate::proto::Rng::new(42);
        for _ in 0..200 {
            let cap = rng.range(1, 300);
            let base = rng.below(1_000);
            let mut b = Backlog::new(cap, base);
            let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
            for _ in 0..rng.below(60) {
                let p = vec![7; rng.below(40) as usize];
                all.push((b.push(p.clone()), p));
            }
            let end = base + all.iter().map(|(_, p)| stream_len(p.len())).sum::<u64>();
            assert_eq!(b.end(), end);
            assert!(b.len() <= cap || b.records.len() == 1);
            for (i, (off, _)) in all.iter().enumerate() {
                let held = *off >= b.start();
                assert_eq!(b.can_serve(*off), held);
                match b.read(*off, u64::MAX) {
                    Some(rs) => {
                        assert!(held);
                        let want: Vec<Vec<u8>> = all[i..].iter().map(|(_, p)| p.clone()).collect();
                        assert_eq!(rs, want);
                    }
                    None => assert!(!held),
                }
                // Inside a record is never a place to continue from.
                let inside = off + 1;
                if !all.iter().any(|(o, _)| *o == inside) && inside != end {
                    assert!(!b.can_serve(inside));
                }
            }
            assert!(b.can_serve(end));
        }
    }
}
