//! A durable cache's data directory has one owner and one schema: a second open is
//! refused naming the holder, data written as other types is refused by name (or
//! discarded on request), and `verify` decodes what `larder-check` cannot.
#![cfg(feature = "persistence")]

use larder::persistence::manifest::MANIFEST_NAME;
use larder::persistence::Manifest;
use larder::{Background, Cache, Durability, OpenError, VerifyError};
use std::path::Path;

fn open<K, V>(
    dir: &Path,
    d: impl FnOnce(Durability) -> Durability,
) -> Result<Cache<K, V>, OpenError>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static + larder::Codec + larder::Weigh,
    V: Clone + Send + Sync + 'static + larder::Codec + larder::Weigh,
{
    Cache::builder()
        .shards(2)
        .background(Background::Manual)
        .durability(d(Durability::new(dir)))
        .open()
}

/// Removes the schema line, as a directory written before tags existed.
fn untag(dir: &Path) {
    let path = dir.join(MANIFEST_NAME);
    let mut m = Manifest::parse(&std::fs::read(&path).unwrap()).unwrap();
    assert!(m.schema.is_some());
    m.schema = None;
    std::fs::write(&path, m.encode()).unwrap();
}

#[test]
fn a_second_cache_on_one_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open::<String, String>(tmp.path(), |d| d).unwrap();
    a.insert("k".into(), "v".into()).unwrap();
    match open::<String, String>(tmp.path(), |d| d) {
        Err(OpenError::Locked(msg)) => {
            assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two caches opened one directory"),
    }
    drop(a);
    let b = open::<String, String>(tmp.path(), |d| d).unwrap();
    assert_eq!(b.get(&"k".to_string()), Some("v".to_string()));
}

#[test]
fn a_changed_value_type_or_schema_version_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    for i in 0..50u64 {
        c.insert(format!("k{i}"), i).unwrap();
    }
    drop(c);
    match open::<String, String>(tmp.path(), |d| d) {
        Err(OpenError::Schema { found, expected }) => {
            assert!(found.contains("value=u64"), "{found}");
            assert!(expected.contains("String"), "{expected}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened u64 values as String"),
    }
    match open::<String, u64>(tmp.path(), |d| d.schema_version(2)) {
        Err(OpenError::Schema { found, expected }) => {
            assert!(found.ends_with("version=0") && expected.ends_with("version=2"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened under another schema version"),
    }
    // The refusals changed nothing.
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    assert_eq!(c.get(&"k7".to_string()), Some(7));
    drop(c);
    // A cache that may start empty discards the old data instead.
    let c = open::<String, String>(tmp.path(), |d| d.discard_on_schema_change(true)).unwrap();
    assert_eq!(c.len(), 0);
    let p = c.info().persistence.unwrap();
    assert!(
        p.loading_discarded_schema
            .as_deref()
            .is_some_and(|t| t.contains("value=u64")),
        "{p:?}"
    );
    c.insert("a".into(), "b".into()).unwrap();
    drop(c);
    let c = open::<String, String>(tmp.path(), |d| d).unwrap();
    assert_eq!(c.get(&"a".to_string()), Some("b".to_string()));
}

#[test]
fn untagged_data_of_another_type_names_file_offset_and_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    for i in 0..20u64 {
        // Read as a Vec, these bytes are a pointer and a length far out of range.
        c.insert(format!("k{i}"), u64::MAX - i).unwrap();
    }
    drop(c);
    untag(tmp.path());
    let err = open::<String, Vec<String>>(tmp.path(), |d| d)
        .err()
        .unwrap();
    let OpenError::Decode(msg) = &err else {
        panic!("{err}")
    };
    assert!(msg.contains("incr.1.aof at byte 16 (sequence 1)"), "{msg}");
    assert!(
        err.to_string().contains("discard_on_schema_change"),
        "{err}"
    );
    // The refused open did not tag the directory with the wrong types.
    let m = Manifest::parse(&std::fs::read(tmp.path().join(MANIFEST_NAME)).unwrap()).unwrap();
    assert_eq!(m.schema, None);
    // The right types open it and tag it.
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    assert_eq!(c.len(), 20);
    drop(c);
    let m = Manifest::parse(&std::fs::read(tmp.path().join(MANIFEST_NAME)).unwrap()).unwrap();
    assert!(m.schema.unwrap().contains("value=u64"));

    // Tagged as the reader's very types but undecodable: not a schema change, so
    // refused even with discarding allowed, and kept.
    let path = tmp.path().join(MANIFEST_NAME);
    let mut m = Manifest::parse(&std::fs::read(&path).unwrap()).unwrap();
    m.schema = Some("key=String value=Vec<String> version=0".into());
    std::fs::write(&path, m.encode()).unwrap();
    let err = open::<String, Vec<String>>(tmp.path(), |d| d.discard_on_schema_change(true));
    assert!(matches!(err, Err(OpenError::Decode(_))), "{:?}", err.err());

    // Untagged and undecodable, with discarding allowed: starts empty.
    untag(tmp.path());
    let c = open::<String, Vec<String>>(tmp.path(), |d| d.discard_on_schema_change(true)).unwrap();
    assert_eq!(c.len(), 0);
    assert!(c
        .info()
        .persistence
        .unwrap()
        .loading_discarded_schema
        .is_some());
}

#[test]
fn verify_decodes_what_larder_check_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    for i in 0..30u64 {
        c.insert(format!("k{i}"), u64::MAX - i).unwrap();
    }
    c.rewrite_aof().unwrap();
    c.insert("after".into(), u64::MAX).unwrap();
    drop(c);
    let ok = larder::verify::<String, u64>(tmp.path()).unwrap();
    assert_eq!((ok.base_entries, ok.records, ok.last_seq), (30, 1, 31));
    assert!(ok.tail.is_none());
    // Bytes-only checking passes; decoding as the wrong value type does not, and says
    // where: the first base section.
    match larder::verify::<String, Vec<String>>(tmp.path()) {
        Err(VerifyError::Decode { at, reason }) => {
            assert!(at.contains("base.2.snap section 0 at byte"), "{at}");
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        larder::verify::<String, u64>(tmp.path().join("missing")),
        Err(VerifyError::Files(_))
    ));
}

/// A value type that is not rkyv's, with a hand-written codec (as a serde user would
/// write one) and a fixed type tag.
#[derive(Clone, Debug, PartialEq)]
struct Profile {
    name: String,
}

impl larder::Weigh for Profile {
    fn weigh(&self) -> usize {
        std::mem::size_of::<Self>() + self.name.len()
    }
}

impl larder::Codec for Profile {
    fn encode(&self) -> Result<Vec<u8>, larder::CodecError> {
        Ok(self.name.as_bytes().to_vec())
    }
    fn decode(bytes: &[u8]) -> Result<Self, larder::CodecError> {
        let name = std::str::from_utf8(bytes).map_err(|e| larder::CodecError(e.to_string()))?;
        Ok(Profile { name: name.into() })
    }
    fn type_tag() -> String {
        "Profile".into()
    }
}

#[test]
fn a_hand_written_codec_records_its_own_type_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let c = open::<String, Profile>(tmp.path(), |d| d).unwrap();
    c.insert("u".into(), Profile { name: "ann".into() })
        .unwrap();
    drop(c);
    let m = Manifest::parse(&std::fs::read(tmp.path().join(MANIFEST_NAME)).unwrap()).unwrap();
    assert!(m.schema.unwrap().contains("value=Profile version=0"));
    let c = open::<String, Profile>(tmp.path(), |d| d).unwrap();
    assert_eq!(
        c.get(&"u".to_string()),
        Some(Profile { name: "ann".into() })
    );
}

#[test]
fn a_cut_tail_is_reported_with_file_offset_and_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    for i in 0..5u64 {
        c.insert(format!("k{i}"), i).unwrap();
    }
    drop(c);
    let incr = tmp.path().join("incr.1.aof");
    // The log file is a preallocated segment: the torn write goes after its last frame.
    let bytes = std::fs::read(&incr).unwrap();
    let good = larder::persistence::frame::frames(&bytes, 16)
        .map_while(Result::ok)
        .last()
        .unwrap()
        .end() as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&incr).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 11], good).unwrap();
    drop(f);
    let c = open::<String, u64>(tmp.path(), |d| d).unwrap();
    let p = c.info().persistence.unwrap();
    assert_eq!(p.loading_truncated_file.as_deref(), Some("incr.1.aof"));
    assert_eq!(
        (
            p.loading_truncated_offset,
            p.loading_truncated_bytes,
            p.loading_truncated_after_seq
        ),
        (good, 11, 5)
    );
    let text = c.info().to_string();
    assert!(text.contains("loading_truncated_after_seq:5"), "{text}");
}
