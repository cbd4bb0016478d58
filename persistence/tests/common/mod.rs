//! Helpers shared by the integration tests: a model keyspace built from recovery.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use larder_persistence::{Backend, DataDir, OpenError, Options, Record, Section};

/// Key -> (value, expiry), as the cache would hold it.
pub type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// Applies one record to the model, as the cache would on replay.
pub fn apply(model: &mut Model, rec: &Record) {
    match rec {
        Record::Set {
            key,
            value,
            expire_at_ms,
        } => {
            model.insert(key.clone(), (value.clone(), *expire_at_ms));
        }
        Record::Del { key } => {
            model.remove(key);
        }
        Record::Expire { key, at_ms } => {
            if let Some(e) = model.get_mut(key) {
                e.1 = Some(*at_ms);
            }
        }
        Record::Persist { key } => {
            if let Some(e) = model.get_mut(key) {
                e.1 = None;
            }
        }
        Record::Flush => model.clear(),
        Record::Meta(_) => {}
        Record::Multi(rs) => rs.iter().for_each(|r| apply(model, r)),
    }
}

/// What recovery handed over.
pub struct Recovered {
    pub dir: DataDir,
    pub model: Model,
    pub records: Vec<(u64, Record)>,
}

/// Opens `backend`, building the model from the base and the log.
pub fn open(backend: Arc<dyn Backend>, opts: Options) -> Result<Recovered, OpenError> {
    let base = Mutex::new(Model::new());
    let mut records = Vec::new();
    let dir = DataDir::open(
        backend,
        opts,
        &|s: Section<'_>| {
            let mut m = base.lock().unwrap();
            for e in s.iter() {
                m.insert(e.key.to_vec(), (e.value.to_vec(), e.expire_at_ms));
            }
        },
        &mut |seq, r| records.push((seq, r)),
    )?;
    let mut model = base.into_inner().unwrap();
    for (_, r) in &records {
        apply(&mut model, r);
    }
    Ok(Recovered {
        dir,
        model,
        records,
    })
}

/// A `Set` of `key{n}` to `value{n}`.
pub fn set(n: u64) -> Record {
    Record::Set {
        key: format!("key{n}").into_bytes(),
        value: format!("value{n}").into_bytes(),
        expire_at_ms: (n % 3 == 0).then_some(n * 1000),
    }
}

/// A tiny xorshift generator, so tests need no RNG crate and replay by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An independent copy of a directory (a second "disk" with the same bytes).
pub fn copy_dir(from: &dyn Backend) -> larder_persistence::backend::MemoryBackend {
    let copy = larder_persistence::backend::MemoryBackend::new();
    for n in from.list().unwrap() {
        let bytes = from.read_all(&n).unwrap();
        let f = copy
            .open(&n, larder_persistence::OpenMode::CreateTruncate)
            .unwrap();
        f.write_at(&bytes, 0).unwrap();
    }
    copy
}

/// Replaces the content of `name` in `backend`.
pub fn put(backend: &dyn Backend, name: &str, bytes: &[u8]) {
    let f = backend
        .open(name, larder_persistence::OpenMode::CreateTruncate)
        .unwrap();
    f.write_at(bytes, 0).unwrap();
}
