//! Bad input: truncation at every byte, bit flips in every kind of file. Every case
//! recovers as specified or fails with the specified error; none panics.

mod common;

use std::sync::Arc;

use common::{copy_dir, open, put, set};
use larder_persistence::backend::MemoryBackend;
use larder_persistence::frame::{
    file_header_version, frames, AOF_VERSION_APPENDED, FILE_HEADER_LEN,
};
use larder_persistence::{Backend, FsyncPolicy, OpenError, Options, Record};

fn opts(truncate: bool) -> Options {
    Options {
        fsync: FsyncPolicy::No,
        aof_load_truncated: truncate,
        load_threads: 2,
        section_bytes: 64,
        segment_bytes: 1024,
        ..Options::default()
    }
}

fn records() -> Vec<Record> {
    (1..=6)
        .map(|n| {
            if n % 3 == 0 {
                Record::Multi(vec![
                    set(n),
                    Record::Del {
                        key: b"key1".to_vec(),
                    },
                ])
            } else {
                set(n)
            }
        })
        .collect()
}

/// A directory with one incr file holding `records()`; returns it and frame ends.
fn small_dir() -> (MemoryBackend, Vec<usize>) {
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts(true)).unwrap();
    for rec in records() {
        r.dir.append(&rec).unwrap();
    }
    drop(r);
    let bytes = b.read_all("incr.1.aof").unwrap();
    let ends: Vec<usize> = frames(&bytes, FILE_HEADER_LEN)
        .map_while(Result::ok)
        .map(|f| f.end())
        .collect();
    assert_eq!(ends.len(), records().len());
    // The mapped segment's zero tail is cut off: the cases below damage the frames.
    put(&b, "incr.1.aof", &bytes[..*ends.last().unwrap()]);
    (b, ends)
}

#[test]
fn truncation_at_every_byte() {
    let (b, ends) = small_dir();
    let full = b.read_all("incr.1.aof").unwrap().to_vec();
    for cut in 0..=full.len() {
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let at_boundary = cut == FILE_HEADER_LEN || ends.contains(&cut);

        let d = copy_dir(&b);
        put(&d, "incr.1.aof", &full[..cut]);
        if cut < FILE_HEADER_LEN {
            // The header was durable before the manifest named the file: a shorter
            // file was emptied after the fact, not torn by a crash. Both modes refuse,
            // saying from which sequence the records are lost.
            for truncate in [true, false] {
                match open(Arc::new(copy_dir(&d)), opts(truncate)) {
                    Err(OpenError::Corrupt {
                        file,
                        offset: 0,
                        seq: 1,
                        reason,
                    }) => {
                        assert_eq!(file, "incr.1.aof");
                        assert!(reason.contains(&format!("is {cut} bytes")), "{reason}");
                        assert!(reason.contains("from sequence 1 on is lost"), "{reason}");
                    }
                    Err(e) => panic!("cut {cut}: {e}"),
                    Ok(_) => panic!("cut {cut}: an emptied file opened"),
                }
            }
            continue;
        }
        let r = open(Arc::new(d.clone()), opts(true)).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let got: Vec<Record> = r.records.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(got, records()[..whole], "cut {cut}");
        let st = r.dir.status();
        assert_eq!(st.next_seq, whole as u64 + 1);
        match &st.loading.truncated {
            Some(t) => {
                assert!(!at_boundary, "cut {cut} reported a tail");
                assert_eq!(t.last_good_seq, whole as u64);
                // A segment's tail counts up to its last nonzero byte.
                let end = (t.offset + t.bytes) as usize;
                assert!(end <= cut, "cut {cut}: tail ends at {end}");
                assert!(full[end..cut].iter().all(|&b| b == 0), "cut {cut}");
            }
            None => assert!(at_boundary, "cut {cut} not reported"),
        }
        // The repaired file takes appends and reopens cleanly.
        r.dir.append(&set(100)).unwrap();
        drop(r);
        let r = open(Arc::new(d), opts(false)).unwrap();
        assert_eq!(r.records.len(), whole + 1);

        // With aof_load_truncated = false a torn tail refuses to open.
        let d = copy_dir(&b);
        put(&d, "incr.1.aof", &full[..cut]);
        match open(Arc::new(d), opts(false)) {
            Ok(_) => assert!(at_boundary, "cut {cut} opened"),
            Err(OpenError::TornTail { last_good_seq, .. }) => {
                assert!(!at_boundary);
                assert_eq!(last_good_seq, whole as u64);
            }
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn bit_flips_in_the_last_incr_file() {
    let (b, ends) = small_dir();
    let full = b.read_all("incr.1.aof").unwrap().to_vec();
    let last_start = ends[ends.len() - 2];
    for bit in 0..full.len() * 8 {
        let byte = bit / 8;
        let mut bad = full.clone();
        bad[byte] ^= 1 << (bit % 8);
        let d = copy_dir(&b);
        put(&d, "incr.1.aof", &bad);
        match open(Arc::new(d), opts(true)) {
            Ok(r) => {
                // Only damage to the last frame is a torn tail.
                assert!(byte >= last_start, "bit {bit} accepted mid-file damage");
                let got: Vec<Record> = r.records.iter().map(|(_, r)| r.clone()).collect();
                assert_eq!(got, records()[..ends.len() - 1], "bit {bit}");
            }
            Err(OpenError::Header { file, .. }) => {
                assert!(byte < FILE_HEADER_LEN);
                assert_eq!(file, "incr.1.aof");
            }
            Err(OpenError::Corrupt {
                file, offset, seq, ..
            }) => {
                assert_eq!(file, "incr.1.aof");
                assert!(byte >= offset as usize, "bit {bit}: offset {offset}");
                assert!(seq >= 1);
            }
            Err(e) => panic!("bit {bit}: unexpected {e}"),
        }
    }
}

#[test]
fn bit_flips_in_an_earlier_incr_file_refuse() {
    let (b, _) = small_dir();
    // Switch to a second incr file by starting and abandoning a rewrite.
    {
        let r = open(Arc::new(b.clone()), opts(true)).unwrap();
        drop(r.dir.begin_rewrite().unwrap());
        r.dir.append(&set(50)).unwrap();
    }
    let full = b.read_all("incr.1.aof").unwrap().to_vec();
    for bit in (0..full.len() * 8).step_by(3) {
        let mut bad = full.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let d = copy_dir(&b);
        put(&d, "incr.1.aof", &bad);
        match open(Arc::new(d), opts(true)) {
            Err(OpenError::Corrupt { file, .. } | OpenError::Header { file, .. }) => {
                assert_eq!(file, "incr.1.aof")
            }
            Err(e) => panic!("bit {bit}: unexpected {e}"),
            Ok(_) => panic!("bit {bit}: damage in a closed file accepted"),
        }
    }
    // Truncating a closed file inside its frames is corruption too, never a torn tail.
    let end = frames(&full, FILE_HEADER_LEN)
        .map_while(Result::ok)
        .last()
        .unwrap()
        .end();
    let d = copy_dir(&b);
    put(&d, "incr.1.aof", &full[..end - 3]);
    assert!(matches!(
        open(Arc::new(d), opts(true)),
        Err(OpenError::Corrupt { .. })
    ));
}

fn rewritten_dir() -> (MemoryBackend, common::Model) {
    let (b, _) = small_dir();
    let r = open(Arc::new(b.clone()), opts(true)).unwrap();
    let mut rw = r.dir.begin_rewrite().unwrap();
    for (k, (v, e)) in &r.model {
        rw.push(k, v, *e).unwrap();
    }
    r.dir.finish_rewrite(rw).unwrap();
    r.dir.append(&set(77)).unwrap();
    drop(r);
    let model = open(Arc::new(copy_dir(&b)), opts(true)).unwrap().model;
    (b, model)
}

#[test]
fn bit_flips_in_the_base_refuse_or_change_nothing() {
    let (b, model) = rewritten_dir();
    let base = b.manifest_base();
    let full = b.read_all(&base).unwrap().to_vec();
    for bit in (0..full.len() * 8).step_by(5) {
        let mut bad = full.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let d = copy_dir(&b);
        put(&d, &base, &bad);
        match open(Arc::new(d), opts(true)) {
            Ok(r) => assert_eq!(r.model, model, "bit {bit} changed the data"),
            Err(OpenError::Snapshot(e)) => assert!(e.to_string().contains(&base), "{e}"),
            Err(OpenError::BaseSequence { .. }) => {}
            Err(e) => panic!("bit {bit}: unexpected {e}"),
        }
    }
}

#[test]
fn bit_flips_in_the_manifest_refuse() {
    let (b, _) = rewritten_dir();
    let full = b.read_all("manifest").unwrap().to_vec();
    for bit in 0..full.len() * 8 {
        let mut bad = full.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let d = copy_dir(&b);
        put(&d, "manifest", &bad);
        match open(Arc::new(d), opts(true)) {
            Err(OpenError::Manifest(_)) => {}
            Err(e) => panic!("bit {bit}: unexpected {e}"),
            Ok(_) => panic!("bit {bit}: damaged manifest accepted"),
        }
    }
}

trait BaseName {
    fn manifest_base(&self) -> String;
}
impl BaseName for MemoryBackend {
    fn manifest_base(&self) -> String {
        let m = self.read_all("manifest").unwrap();
        larder_persistence::Manifest::parse(&m)
            .unwrap()
            .base
            .unwrap()
            .name
    }
}

/// A filesystem may extend a file whose new data never reached the disk, leaving
/// zeros: that is a torn tail, not corruption.
#[test]
fn zero_filled_tail_is_torn_in_an_appended_file_and_the_end_in_a_mapped_one() {
    let (b, ends) = small_dir();
    let mut bytes = b.read_all("incr.1.aof").unwrap().to_vec();
    let good = bytes.len();
    bytes.extend_from_slice(&[0u8; 4096]);
    // A mapped segment (version 2) is preallocated with zeros: they end the data.
    put(&b, "incr.1.aof", &bytes);
    let r = open(Arc::new(b.clone()), opts(true)).unwrap();
    assert_eq!(r.records.len(), ends.len());
    assert_eq!(r.dir.status().loading.truncated, None);
    drop(r);
    // A file of the appended format (version 1) ends at its last frame: zeros there
    // are a torn write.
    let b = MemoryBackend::new();
    let r = open(Arc::new(b.clone()), opts(true)).unwrap();
    drop(r);
    bytes[..FILE_HEADER_LEN].copy_from_slice(&file_header_version(AOF_VERSION_APPENDED));
    put(&b, "incr.1.aof", &bytes);
    let r = open(Arc::new(b.clone()), opts(true)).unwrap();
    assert_eq!(r.records.len(), ends.len());
    let t = r.dir.status().loading.truncated.unwrap();
    assert_eq!((t.offset, t.bytes), (good as u64, 4096));
    assert_eq!(t.last_good_seq, ends.len() as u64);
}
