//! The bodies of larder's fuzz targets, as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` is `fuzz_target!(|data: &[u8]| larder_fuzz::<name>(data))`:
//! what a target checks lives here, so it also runs on a stable toolchain without
//! libFuzzer. [`replay`] feeds every body the checked-in seeds (`seeds/<name>/`), the
//! valid inputs [`seeds::build`] makes with the encoders, and a bounded number of
//! seeded mutations of both; `cargo test --manifest-path fuzz/Cargo.toml --lib` runs
//! that (CI does), so a body that panics on valid input fails CI, not only a fuzzing
//! session.
//!
//! The codecs of the QUIC framing and of `larder::cluster`'s wire are included as
//! source files, so the crate builds without the QUIC stack.

use std::sync::Arc;

use larder_persistence::backend::MemoryBackend;
use larder_persistence::frame::{
    check_file_header, decode_frame, frames, next_in_segment, valid_frame_follows, SegmentStep,
    FILE_HEADER_LEN,
};
use larder_persistence::snapshot::{encode_v1, load_slice, reseal, Entry, SnapshotWriter};
use larder_persistence::{Backend, Manifest, Record};

#[allow(dead_code, missing_docs)]
#[path = "../../cluster/src/net/frame.rs"]
pub mod frame;

#[allow(dead_code, missing_docs)]
#[path = "../../src/cluster/wire.rs"]
pub mod wire;

#[allow(dead_code, missing_docs)]
#[path = "../../src/cluster/admin_wire.rs"]
pub mod admin_wire;

#[allow(dead_code, missing_docs)]
#[path = "../../src/resp/codec.rs"]
pub mod resp_codec;

pub mod replay;
pub mod seeds;

/// A target's body: runs one input, panics on a finding.
pub type Body = fn(&[u8]);

/// Every target: its name (the file `fuzz_targets/<name>.rs`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("aof_record", aof_record),
    ("aof_segment", aof_segment),
    ("snapshot", snapshot),
    ("manifest", manifest),
    ("cluster_message", cluster_message),
    ("net_frame", net_frame),
    ("repl_message", repl_message),
    ("cluster_request", cluster_request),
    ("cluster_admin", cluster_admin),
    ("codec", codec),
    ("resp", resp),
];

/// The RESP decoders (`larder::resp::codec`): the server's request parser and the
/// RESP3 value decoder. Neither may panic. A parsed request lies within the bytes it
/// says it took, and its arguments sent again as an array parse back the same; a
/// decoded value's encoding decodes to a value that encodes the same.
pub fn resp(data: &[u8]) {
    use resp_codec::{decode, parse_request, Protocol};
    let mut rest = data;
    while let Ok(Some((args, used))) = parse_request(rest, 1 << 20) {
        assert!(
            used > 0 && used <= rest.len(),
            "took {used} of {}",
            rest.len()
        );
        let argv = args.slices(rest);
        let mut again = format!("*{}\r\n", argv.len()).into_bytes();
        for a in &argv {
            again.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            again.extend_from_slice(a);
            again.extend_from_slice(b"\r\n");
        }
        let (back, n) = parse_request(&again, 1 << 20)
            .expect("re-encoded request parses")
            .expect("re-encoded request is complete");
        assert_eq!(n, again.len());
        assert_eq!(back.slices(&again), argv);
        rest = &rest[used..];
    }
    if let Ok(Some((value, used))) = decode(data) {
        assert!(used <= data.len());
        let bytes = value.to_bytes(Protocol::Resp3);
        let (again, n) = decode(&bytes)
            .expect("re-encoded value decodes")
            .expect("re-encoded value is complete");
        assert_eq!(n, bytes.len());
        assert_eq!(again.to_bytes(Protocol::Resp3), bytes, "{value:?}");
        let _ = value.to_bytes(Protocol::Resp2);
    }
}

/// The AOF decoders: incr file header, frames, record payloads, and the torn-tail
/// scan. None may panic; a payload that decodes re-encodes to the same bytes.
pub fn aof_record(data: &[u8]) {
    let _ = check_file_header(data);
    let mut last = None;
    for frame in frames(data, 0) {
        match frame {
            Ok(f) => {
                last = Some(f.seq);
                if let Ok(rec) = f.record() {
                    assert_eq!(rec.encode(), f.payload);
                }
            }
            Err(e) => {
                let _ = valid_frame_follows(data, e.offset(), last);
            }
        }
    }
    if let Ok(rec) = Record::decode(data) {
        assert_eq!(rec.encode(), data);
    }
}

/// The scan of a mapped incr segment, as recovery drives it from the file header on:
/// frames, holes (reserved frames never copied), the zero tail, torn or corrupt ends.
/// It never panics and always moves forward; a frame it hands out passes its checksum
/// and lies inside the input, a hole is followed by a whole frame with a higher
/// sequence, and the end is only zeros.
pub fn aof_segment(data: &[u8]) {
    let mut pos = FILE_HEADER_LEN.min(data.len());
    let mut expected = 1u64;
    loop {
        match next_in_segment(data, pos, expected) {
            SegmentStep::Frame(f) => {
                assert_eq!(f.offset, pos);
                assert!(f.end() > pos && f.end() <= data.len());
                assert_eq!(decode_frame(data, f.offset), Ok(f));
                expected = f.seq.saturating_add(1);
                pos = f.end();
            }
            SegmentStep::Hole {
                offset,
                next,
                missing,
            } => {
                assert_eq!(offset, pos);
                assert!(next > pos && missing >= 1);
                let f = decode_frame(data, next).expect("a whole frame follows a hole");
                assert_eq!(f.seq, expected.saturating_add(missing));
                expected = f.seq;
                pos = next;
            }
            SegmentStep::End => {
                assert!(data.get(pos..).unwrap_or(&[]).iter().all(|&b| b == 0));
                break;
            }
            SegmentStep::Torn(_) | SegmentStep::Corrupt(_) => break,
        }
    }
}

fn walk_snapshot(data: &[u8]) {
    // One thread: runs inline, so LeakSanitizer does not flag the 32-byte TLS
    // destructor record every spawned thread leaves (a known false positive).
    let _ = load_slice("fuzz", data, 1, &|section| {
        for e in section.iter() {
            std::hint::black_box((e.key.len(), e.value.len(), e.expire_at_ms));
        }
    });
}

/// The snapshot reader: header, footer index, section checksums, then each section's
/// entries (packed in version 2, rkyv archives in version 1) validated and handed to the
/// sink. None may panic.
///
/// Raw bytes rarely get past the checksums, so inputs with an odd first byte instead
/// build a valid snapshot from the rest (first half: entries split at `0xff`; second
/// half: `(offset, xor)` damage), damage it and recompute the checksums
/// (`snapshot::reseal`): that puts hostile bytes in front of the section decoders. Bit
/// 1 of the first byte picks the version-1 layout for the built snapshot.
pub fn snapshot(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        walk_snapshot(rest);
        return;
    }
    let (entries, damage) = rest.split_at(rest.len() / 2);
    let entries: Vec<Entry> = entries
        .split(|&b| b == 0xff)
        .enumerate()
        .map(|(i, chunk)| {
            let (k, v) = chunk.split_at(chunk.len().min(4));
            Entry {
                key: k.to_vec(),
                value: v.to_vec(),
                expire_at_ms: (i % 2 == 0).then_some(i as u64),
            }
        })
        .collect();
    let mut bytes = if mode & 2 != 0 {
        encode_v1(&entries, 1, 3)
    } else {
        let backend = MemoryBackend::new();
        let mut w = match SnapshotWriter::create(Arc::new(backend.clone()), "s", 1) {
            Ok(w) => w.section_bytes(64),
            Err(_) => return,
        };
        if mode & 4 != 0 {
            w.distinct_keys();
        }
        for e in &entries {
            let _ = w.push(&e.key, &e.value, e.expire_at_ms);
        }
        if w.finish().is_err() {
            return;
        }
        let Ok(bytes) = backend.read_all("s") else {
            return;
        };
        bytes.to_vec()
    };
    for pair in damage.chunks_exact(3) {
        let at = u16::from_le_bytes([pair[0], pair[1]]) as usize;
        if let Some(b) = bytes.get_mut(at) {
            *b ^= pair[2];
        }
    }
    reseal(&mut bytes);
    walk_snapshot(&bytes);
}

/// The built-in codec's decoders (`larder::Codec`) for the types it reads without
/// rkyv's validator: `String`, `Vec<u8>`, `[u8; 16]`, `u64`, `i32`. None may panic; a
/// decoded value encodes to bytes that decode to the same value.
pub fn codec(data: &[u8]) {
    fn check<T: larder::Codec + PartialEq + std::fmt::Debug>(data: &[u8]) {
        if let Ok(v) = T::decode(data) {
            let again = v.encode().expect("a decoded value encodes");
            assert_eq!(T::decode(&again).expect("its encoding decodes"), v);
        }
    }
    check::<String>(data);
    check::<Vec<u8>>(data);
    check::<[u8; 16]>(data);
    check::<u64>(data);
    check::<i32>(data);
}

/// The manifest parser. None may panic; what parses re-encodes and re-parses to the
/// same manifest.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        check_manifest(&m);
        let again = Manifest::parse(&m.encode()).expect("an encoded manifest parses");
        assert_eq!(again, m);
    }
    // The same bytes with a correct checksum line appended, so the fuzzer reaches the
    // line checks without having to forge a CRC.
    if let Ok(body) = std::str::from_utf8(data) {
        let body = format!("larder-manifest 1\n{body}");
        let body = if body.ends_with('\n') {
            body
        } else {
            format!("{body}\n")
        };
        let sealed = format!("{body}crc32 {:08x}\n", crc32(body.as_bytes()));
        if let Ok(m) = Manifest::parse(sealed.as_bytes()) {
            check_manifest(&m);
            assert_eq!(Manifest::parse(&m.encode()).expect("re-parses"), m);
        }
    }
}

/// The invariants recovery relies on, for a manifest that parsed: sequences in
/// `1..=MAX_SEQ`, file ids at most `MAX_FILE_ID`, the first incr file starting where
/// the base (or 1) says, start sequences non-decreasing, a storable schema tag.
fn check_manifest(m: &Manifest) {
    use larder_persistence::manifest::{file_id, schema_ok, MAX_FILE_ID, MAX_SEQ};
    for f in m.files() {
        assert!((1..=MAX_SEQ).contains(&f.seq), "seq {} accepted", f.seq);
        assert!(file_id(&f.name).is_none_or(|id| id <= MAX_FILE_ID));
    }
    let first = m
        .incrs
        .first()
        .expect("a parsed manifest names an incr file");
    assert_eq!(first.seq, m.base.as_ref().map_or(1, |b| b.seq));
    assert!(m.incrs.windows(2).all(|w| w[0].seq <= w[1].seq));
    assert!(m.schema.as_deref().is_none_or(schema_ok));
    // next_id never wraps.
    assert!(m.next_id() > 0);
}

/// CRC-32 (IEEE), bit by bit: the manifest's checksum line.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The cluster bus decoder. It must never panic, and whatever it accepts must
/// re-encode to the same bytes (the format has one encoding per message).
pub fn cluster_message(data: &[u8]) {
    use larder_cluster::proto::Message;
    if let Ok(msg) = Message::decode(data) {
        let bytes = msg.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(bytes, data, "decode/encode is not the identity");
    }
}

/// The stream decoder of the cluster transport (`net::frame`), fed in chunks of the
/// size the first byte says. It must never panic, never hand out a payload over the
/// cap, and a stream it accepts whole must re-encode to the same bytes: its own
/// preamble (bus, replication or request stream), then the frames.
pub fn net_frame(input: &[u8]) {
    use frame::{decode_frame, encode_frame, StreamDecoder, MAX_FRAME_LEN, PREAMBLE_LEN};
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let _ = decode_frame(data, MAX_FRAME_LEN);
    let mut decoder = StreamDecoder::new(MAX_FRAME_LEN);
    let mut frames = Vec::new();
    let mut failed = false;
    'outer: for c in data.chunks(usize::from(chunk).max(1)) {
        decoder.push(c);
        loop {
            match decoder.next_frame() {
                Ok(Some(p)) => {
                    assert!(!p.is_empty() && p.len() <= MAX_FRAME_LEN);
                    frames.push(p.to_vec());
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }
    if !failed && decoder.finish().is_ok() && !data.is_empty() {
        // A whole stream was accepted: it has a preamble, whichever kind it names.
        assert!(
            decoder.kind().is_some(),
            "accepted a stream without a preamble"
        );
        let mut again = data[..PREAMBLE_LEN].to_vec();
        for f in &frames {
            encode_frame(f, &mut again);
        }
        assert_eq!(again, data, "accepted stream does not re-encode to itself");
    }
}

/// The replication message decoder. It must never panic, and whatever it accepts
/// must re-encode to the same bytes (one encoding per message).
pub fn repl_message(data: &[u8]) {
    use larder_cluster::repl::ReplMessage;
    if let Ok(msg) = ReplMessage::decode(data) {
        let bytes = msg.to_bytes().expect("a decoded message re-encodes");
        assert_eq!(bytes, data, "decode/encode is not the identity");
    }
}

/// The decoders of forwarded cache operations, their answers and full-sync
/// snapshots (`larder::cluster::wire`). They must never panic, and whatever they
/// accept must re-encode to the same bytes.
pub fn cluster_request(data: &[u8]) {
    use wire::{split_snapshot, WireRequest, WireResponse};
    if let Ok(r) = WireRequest::decode(data) {
        assert_eq!(r.encode(), data, "request re-encodes differently: {r:?}");
    }
    if let Ok(r) = WireResponse::decode(data) {
        assert_eq!(r.encode(), data, "response re-encodes differently: {r:?}");
    }
    if let Ok(records) = split_snapshot(data) {
        let mut out = Vec::new();
        for r in records {
            wire::push_snapshot_record(&mut out, r);
        }
        assert_eq!(out, data);
    }
}

/// The decoders of administrative requests and answers
/// (`larder::cluster::admin_wire`: what `larder-cli` and slot moves send). They must
/// never panic, and whatever they accept must re-encode to the same bytes.
pub fn cluster_admin(data: &[u8]) {
    use admin_wire::{AdminRequest, AdminResponse};
    if let Ok(r) = AdminRequest::decode(data) {
        assert_eq!(r.encode(), data, "request re-encodes differently: {r:?}");
    }
    if let Ok(r) = AdminResponse::decode(data) {
        assert_eq!(r.encode(), data, "response re-encodes differently: {r:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed of the mutations: `LARDER_FUZZ_SEED` (decimal or 0x-hex) if set.
    fn seed() -> u64 {
        match std::env::var("LARDER_FUZZ_SEED") {
            Ok(s) => {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                };
                parsed.unwrap_or_else(|e| panic!("LARDER_FUZZ_SEED={s:?}: {e}"))
            }
            Err(_) => 0x1a2d_e5f0_22c4_9b17,
        }
    }

    /// Mutations per target: `LARDER_FUZZ_MUTATIONS` if set.
    fn mutations() -> usize {
        std::env::var("LARDER_FUZZ_MUTATIONS")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(10_000)
    }

    fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
        let mut inputs: Vec<(String, Vec<u8>)> = replay::checked_in(target)
            .unwrap_or_else(|e| panic!("{}: {e}", replay::seed_dir(target).display()))
            .into_iter()
            .map(|(path, bytes)| (path.display().to_string(), bytes))
            .collect();
        inputs.extend(
            seeds::build(target)
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("built seed {i} of {target}"), b)),
        );
        inputs
    }

    #[test]
    fn every_fuzz_target_calls_its_body_and_has_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(files, names, "fuzz_targets/*.rs and TARGETS differ");
        for name in &names {
            let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
            assert!(
                text.contains(&format!("larder_fuzz::{name}(")),
                "fuzz_targets/{name}.rs does not call larder_fuzz::{name}"
            );
            let seeds = replay::checked_in(name).unwrap_or_default();
            assert!(
                !seeds.is_empty(),
                "{} holds no seeds",
                replay::seed_dir(name).display()
            );
            assert!(!seeds::build(name).is_empty(), "no built seeds for {name}");
        }
    }

    /// The built seeds are valid inputs: each is accepted by its decoder, so the
    /// replay exercises the paths past the decoders' first checks.
    #[test]
    fn built_seeds_decode() {
        for s in seeds::build("aof_record").iter().skip(1) {
            Record::decode(s).unwrap();
        }
        let file = &seeds::build("aof_record")[0];
        check_file_header(file).unwrap();
        assert!(frames(file, larder_persistence::frame::FILE_HEADER_LEN).all(|f| f.is_ok()));
        for s in seeds::build("manifest") {
            Manifest::parse(&s).unwrap();
        }
        for s in seeds::build("cluster_message") {
            larder_cluster::proto::Message::decode(&s).unwrap();
        }
        for s in seeds::build("repl_message") {
            larder_cluster::repl::ReplMessage::decode(&s).unwrap();
        }
        for s in seeds::build("cluster_admin") {
            assert!(
                admin_wire::AdminRequest::decode(&s).is_ok()
                    || admin_wire::AdminResponse::decode(&s).is_ok()
            );
        }
        for s in seeds::build("cluster_request") {
            assert!(
                wire::WireRequest::decode(&s).is_ok()
                    || wire::WireResponse::decode(&s).is_ok()
                    || wire::split_snapshot(&s).is_ok()
            );
        }
        for s in seeds::build("net_frame") {
            let mut d = frame::StreamDecoder::new(frame::MAX_FRAME_LEN);
            d.push(&s[1..]);
            while d.next_frame().unwrap().is_some() {}
            d.finish().unwrap();
        }
        let raw = &seeds::build("snapshot")[2];
        assert!(raw.len() > 1, "the snapshot seed was not written");
        load_slice("seed", &raw[1..], 1, &|_| {}).unwrap();
    }

    /// A stream that is only a replication preamble is valid: the net_frame body
    /// once re-encoded every accepted stream with the bus preamble and failed here.
    #[test]
    fn net_frame_accepts_every_stream_kind() {
        for input in [&b"\x01LCR\x01"[..], b"\x02LCQ\x01", b"\x01LCB\x01"] {
            replay::run_one("net_frame", net_frame, "regression", input).unwrap();
        }
    }

    /// Every target body on its checked-in seeds, its built seeds and a bounded
    /// number of seeded mutations of them.
    #[test]
    fn replay_every_target() {
        let seed = seed();
        let n = mutations();
        for &(name, body) in TARGETS {
            let inputs = inputs(name);
            // The snapshot body writes a snapshot per input: fewer of them.
            let n = if name == "snapshot" { n / 4 } else { n };
            let start = std::time::Instant::now();
            match replay::run(name, body, &inputs, n, seed ^ name.len() as u64) {
                Ok(ran) => eprintln!(
                    "{name}: {ran} inputs in {:.1} s",
                    start.elapsed().as_secs_f64()
                ),
                Err(f) => panic!("{f}\nrerun with LARDER_FUZZ_SEED={seed:#x}"),
            }
        }
    }

    /// Writes the built seeds to `seeds/<target>/` (`cargo test -- --ignored
    /// write_seed_files`): the checked-in corpus, also cargo-fuzz's starting point.
    #[test]
    #[ignore]
    fn write_seed_files() {
        for &(name, _) in TARGETS {
            let dir = replay::seed_dir(name);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, bytes) in seeds::build(name).into_iter().enumerate() {
                std::fs::write(dir.join(format!("built-{i}")), bytes).unwrap();
            }
        }
    }
}
