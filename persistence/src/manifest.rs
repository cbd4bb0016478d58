//! The manifest: which base snapshot and which incr files make up the data, in order.
//!
//! It is text, like Redis 7's: an operator can read it with `cat` while deciding what
//! to do with a damaged directory, and it is tiny and rewritten only on rewrite, so the
//! cost of parsing text does not matter. A final CRC line catches bit flips that would
//! otherwise still parse (a digit of a sequence number).
//!
//! ```text
//! larder-manifest 1\n
//! schema key=String value=u64 version=1\n  optional, at most one, before the files
//! file base.3.snap type b seq 120\n      at most one base, and first if present
//! file incr.3.aof type i seq 120\n       one or more incr files, in replay order,
//! file incr.4.aof type i seq 200\n       start sequences non-decreasing; the first
//!                                        equals the base's, or is 1 without a base
//! crc32 1a2b3c4d\n                       CRC-32 (IEEE) of every byte before this line,
//!                                        8 lowercase hex digits
//! ```
//! Names are `[A-Za-z0-9._-]+`, at most 255 bytes, not `.` or `..`; a data file's
//! numeric id (`incr.<id>.aof`) is at most [`MAX_FILE_ID`]. Sequences are
//! `1..=`[`MAX_SEQ`]. The schema tag is opaque text (printable, at most
//! [`MAX_SCHEMA_LEN`] bytes) that the cache compares on open; a manifest without one
//! (written before tags existed) matches any.

/// File name of the manifest in a data directory.
pub const MANIFEST_NAME: &str = "manifest";
/// First line of every manifest.
pub const MANIFEST_HEADER: &str = "larder-manifest 1";

/// Largest sequence a manifest may name. Far beyond any real log (2^63 - 1: three
/// centuries at a billion records a second), so `seq + records` never wraps a `u64`.
pub const MAX_SEQ: u64 = i64::MAX as u64;
/// Largest numeric id of a data file name, so the next id never wraps.
pub const MAX_FILE_ID: u64 = i64::MAX as u64;
/// Longest schema tag, in bytes.
pub const MAX_SCHEMA_LEN: usize = 1024;

/// One file named by the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// The file name within the data directory.
    pub name: String,
    /// For the base: the sequence the log replays from on top of it. For an incr file:
    /// the sequence of its first record (the next sequence when it was started).
    pub seq: u64,
}

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The base snapshot, if a rewrite ever completed.
    pub base: Option<ManifestFile>,
    /// The incr files in replay order; the last one is being appended to.
    pub incrs: Vec<ManifestFile>,
    /// What the data encodes (key and value types, a user version), as the cache that
    /// wrote it described it. `None`: written before tags existed, or by a caller that
    /// records none; matches any.
    pub schema: Option<String>,
}

/// Why a manifest is not acceptable. Lines are 1-based.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Reading or writing the manifest failed.
    #[error("manifest: {op} {file} failed: {source}")]
    Io {
        /// The file involved (the manifest or its temp file).
        file: String,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No manifest, but files that look like larder data are present.
    #[error(
        "manifest missing, but the directory holds data files ({files}); refusing to start empty"
    )]
    Missing {
        /// Some of the data files found.
        files: String,
    },
    /// Not valid UTF-8, or the first line is not the expected header.
    #[error("manifest line 1: expected {MANIFEST_HEADER:?}")]
    BadHeader,
    /// The final line is not `crc32 <hex>`.
    #[error("manifest: missing or malformed final crc32 line")]
    MissingChecksum,
    /// The checksum line does not match the content.
    #[error("manifest: checksum mismatch (content {computed:08x}, crc32 line {stored:08x})")]
    Checksum {
        /// CRC of the content.
        computed: u32,
        /// CRC on the last line.
        stored: u32,
    },
    /// A line that does not parse.
    #[error("manifest line {line}: cannot parse {text:?}")]
    Syntax {
        /// The line.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A file type other than `b` or `i`.
    #[error("manifest line {line}: unknown file type {kind:?}")]
    UnknownType {
        /// The line.
        line: usize,
        /// The type found.
        kind: String,
    },
    /// A second base.
    #[error("manifest line {line}: a second base file {name:?}")]
    DuplicateBase {
        /// The line.
        line: usize,
        /// The second base's name.
        name: String,
    },
    /// A base after incr files.
    #[error("manifest line {line}: base {name:?} listed after incr files")]
    BaseNotFirst {
        /// The line.
        line: usize,
        /// The base's name.
        name: String,
    },
    /// A file name that is not plain, or listed twice.
    #[error("manifest line {line}: bad or repeated file name {name:?}")]
    BadName {
        /// The line.
        line: usize,
        /// The name.
        name: String,
    },
    /// A start sequence lower than the one before it.
    #[error("manifest line {line}: sequence {seq} is below the previous file's {prev}")]
    SequenceOrder {
        /// The line.
        line: usize,
        /// Its sequence.
        seq: u64,
        /// The previous file's sequence.
        prev: u64,
    },
    /// A sequence of 0 or above [`MAX_SEQ`].
    #[error("manifest line {line}: sequence {seq} is out of range (1..={MAX_SEQ})")]
    SequenceRange {
        /// The line.
        line: usize,
        /// The sequence found.
        seq: u64,
    },
    /// A data file name whose numeric id exceeds [`MAX_FILE_ID`].
    #[error("manifest line {line}: file id of {name:?} is above {MAX_FILE_ID}")]
    FileId {
        /// The line.
        line: usize,
        /// The name.
        name: String,
    },
    /// The first incr file does not start where the base ends (or at 1 without a
    /// base): the records in between would be silently missing.
    #[error(
        "manifest line {line}: first incr file {name:?} starts at sequence {seq}, but the \
         log starts at {expected} (the base's sequence, or 1 without a base)"
    )]
    Start {
        /// The line of the first incr file.
        line: usize,
        /// Its name.
        name: String,
        /// Its start sequence.
        seq: u64,
        /// The sequence it must start at.
        expected: u64,
    },
    /// A malformed schema line, a second one, or one after the file lines.
    #[error("manifest line {line}: bad schema line {text:?} (one, before the files, printable, at most {MAX_SCHEMA_LEN} bytes)")]
    Schema {
        /// The line.
        line: usize,
        /// Its text (cut to 120 characters).
        text: String,
    },
    /// No file lines at all.
    #[error("manifest names no files")]
    Empty,
    /// A base but no incr file to append to.
    #[error("manifest names no incr file")]
    NoIncr,
    /// A named file is missing from the directory.
    #[error("manifest names {name}, which does not exist")]
    MissingFile {
        /// The missing file.
        name: String,
    },
}

/// Whether `tag` may be written as a manifest schema tag: 1 to [`MAX_SCHEMA_LEN`]
/// bytes, no control characters (so it stays one line).
pub fn schema_ok(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_SCHEMA_LEN && !tag.chars().any(char::is_control)
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Manifest {
    /// Parses and checks a manifest. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::BadHeader)?;
        if !text.starts_with(MANIFEST_HEADER) {
            return Err(ManifestError::BadHeader);
        }
        // Split off the crc line: the last line, terminated by '\n'.
        let body_end = text
            .strip_suffix('\n')
            .and_then(|t| t.rfind('\n'))
            .map(|i| i + 1)
            .ok_or(ManifestError::MissingChecksum)?;
        let (body, crc_line) = text.split_at(body_end);
        let stored = crc_line
            .strip_prefix("crc32 ")
            .and_then(|s| s.strip_suffix('\n'))
            .filter(|h| h.len() == 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or(ManifestError::MissingChecksum)?;
        let computed = crc32fast::hash(body.as_bytes());
        if computed != stored {
            return Err(ManifestError::Checksum { computed, stored });
        }
        let mut lines = body.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, MANIFEST_HEADER)) => {}
            _ => return Err(ManifestError::BadHeader),
        }
        let mut m = Manifest {
            base: None,
            incrs: Vec::new(),
            schema: None,
        };
        let mut names = std::collections::HashSet::new();
        for (line, l) in lines {
            let syntax = || ManifestError::Syntax {
                line,
                text: l.chars().take(120).collect(),
            };
            if let Some(tag) = l.strip_prefix("schema ") {
                let before_files = m.base.is_none() && m.incrs.is_empty();
                if !before_files || m.schema.is_some() || !schema_ok(tag) {
                    return Err(ManifestError::Schema {
                        line,
                        text: l.chars().take(120).collect(),
                    });
                }
                m.schema = Some(tag.to_owned());
                continue;
            }
            let words: Vec<&str> = l.split(' ').collect();
            let ["file", name, "type", kind, "seq", seq] = words[..] else {
                return Err(syntax());
            };
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            let seq: u64 = seq.parse().map_err(|_| syntax())?;
            if !plain_name(name) || !names.insert(name.to_owned()) {
                return Err(ManifestError::BadName {
                    line,
                    name: name.to_owned(),
                });
            }
            if seq == 0 || seq > MAX_SEQ {
                return Err(ManifestError::SequenceRange { line, seq });
            }
            if file_id(name).is_some_and(|id| id > MAX_FILE_ID) {
                return Err(ManifestError::FileId {
                    line,
                    name: name.to_owned(),
                });
            }
            let f = ManifestFile {
                name: name.to_owned(),
                seq,
            };
            match kind {
                "b" if m.base.is_some() => {
                    return Err(ManifestError::DuplicateBase { line, name: f.name })
                }
                "b" if !m.incrs.is_empty() => {
                    return Err(ManifestError::BaseNotFirst { line, name: f.name })
                }
                "b" => m.base = Some(f),
                "i" if m.incrs.is_empty() => {
                    let expected = m.base.as_ref().map_or(1, |b| b.seq);
                    if seq != expected {
                        return Err(ManifestError::Start {
                            line,
                            name: f.name,
                            seq,
                            expected,
                        });
                    }
                    m.incrs.push(f);
                }
                "i" => {
                    let prev = m
                        .incrs
                        .last()
                        .or(m.base.as_ref())
                        .map_or(0, |p: &ManifestFile| p.seq);
                    if seq < prev {
                        return Err(ManifestError::SequenceOrder { line, seq, prev });
                    }
                    m.incrs.push(f);
                }
                other => {
                    return Err(ManifestError::UnknownType {
                        line,
                        kind: other.chars().take(16).collect(),
                    })
                }
            }
        }
        if m.base.is_none() && m.incrs.is_empty() {
            return Err(ManifestError::Empty);
        }
        if m.incrs.is_empty() {
            return Err(ManifestError::NoIncr);
        }
        Ok(m)
    }

    /// The manifest's bytes, crc line included.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{MANIFEST_HEADER}\n");
        if let Some(tag) = &self.schema {
            s.push_str(&format!("schema {tag}\n"));
        }
        if let Some(b) = &self.base {
            s.push_str(&format!("file {} type b seq {}\n", b.name, b.seq));
        }
        for i in &self.incrs {
            s.push_str(&format!("file {} type i seq {}\n", i.name, i.seq));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc32 {crc:08x}\n"));
        s.into_bytes()
    }

    /// Every file named, base first.
    pub fn files(&self) -> impl Iterator<Item = &ManifestFile> {
        self.base.iter().chain(&self.incrs)
    }

    /// One more than the largest numeric id in the names (`base.<id>.snap`,
    /// `incr.<id>.aof`), so new files never reuse a name.
    pub fn next_id(&self) -> u64 {
        self.files()
            .filter_map(|f| file_id(&f.name))
            .max()
            .map_or(1, |m| m.saturating_add(1))
    }
}

/// The numeric id of a data file name (`base.<id>.snap`, `incr.<id>.aof`), if it is one.
pub fn file_id(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("base.")
        .and_then(|r| r.strip_suffix(".snap"))
        .or_else(|| {
            name.strip_prefix("incr.")
                .and_then(|r| r.strip_suffix(".aof"))
        })?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Name of the base snapshot with id `id`.
pub fn base_name(id: u64) -> String {
    format!("base.{id}.snap")
}

/// Name of the incr file with id `id`.
pub fn incr_name(id: u64) -> String {
    format!("incr.{id}.aof")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            base: Some(ManifestFile {
                name: "base.3.snap".into(),
                seq: 120,
            }),
            incrs: vec![
                ManifestFile {
                    name: "incr.3.aof".into(),
                    seq: 120,
                },
                ManifestFile {
                    name: "incr.4.aof".into(),
                    seq: 200,
                },
            ],
            schema: None,
        }
    }

    fn with_crc(body: &str) -> Vec<u8> {
        format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes())).into_bytes()
    }

    #[test]
    fn round_trip_and_ids() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.encode()).unwrap(), m);
        assert_eq!(m.next_id(), 5);
        assert_eq!(file_id("incr.17.aof"), Some(17));
        assert_eq!(file_id("incr..aof"), None);
    }

    #[test]
    fn named_errors() {
        let h = "larder-manifest 1\n";
        type Check = fn(&ManifestError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (h.to_string(), |e| matches!(e, ManifestError::Empty)),
            (format!("{h}file a type b seq 1\n"), |e| {
                matches!(e, ManifestError::NoIncr)
            }),
            (
                format!("{h}file a type b seq 1\nfile b type b seq 1\n"),
                |e| matches!(e, ManifestError::DuplicateBase { line: 3, .. }),
            ),
            (
                format!("{h}file a type i seq 1\nfile b type i seq 5\nfile c type i seq 4\n"),
                |e| {
                    matches!(
                        e,
                        ManifestError::SequenceOrder {
                            line: 4,
                            seq: 4,
                            prev: 5
                        }
                    )
                },
            ),
            (format!("{h}file a type x seq 5\n"), |e| {
                matches!(e, ManifestError::UnknownType { line: 2, .. })
            }),
            (format!("{h}file a/b type i seq 5\n"), |e| {
                matches!(e, ManifestError::BadName { line: 2, .. })
            }),
            (
                format!("{h}file a type i seq 1\nfile a type i seq 6\n"),
                |e| matches!(e, ManifestError::BadName { line: 3, .. }),
            ),
            (format!("{h}file a type i seq -5\n"), |e| {
                matches!(e, ManifestError::Syntax { line: 2, .. })
            }),
            (
                format!("{h}file a type i seq 1\nfile b type b seq 1\n"),
                |e| matches!(e, ManifestError::BaseNotFirst { line: 3, .. }),
            ),
        ];
        for (body, ok) in cases {
            let err = Manifest::parse(&with_crc(&body)).unwrap_err();
            assert!(ok(&err), "{body:?} gave {err}");
        }
        let mut bad = sample().encode();
        bad[30] ^= 1;
        assert!(Manifest::parse(&bad).is_err());
        assert!(matches!(
            Manifest::parse(b"larder-manifest 1\n"),
            Err(ManifestError::MissingChecksum)
        ));
    }

    #[test]
    fn out_of_range_and_inconsistent_manifests_are_refused() {
        let h = "larder-manifest 1\n";
        type Check = fn(&ManifestError) -> bool;
        let max_id = format!("incr.{}.aof", u64::MAX);
        let cases: Vec<(String, Check)> = vec![
            // seq 0 would make every later append count as already durable.
            (format!("{h}file incr.1.aof type i seq 0\n"), |e| {
                matches!(e, ManifestError::SequenceRange { line: 2, seq: 0 })
            }),
            (
                format!("{h}file base.1.snap type b seq 0\nfile incr.1.aof type i seq 0\n"),
                |e| matches!(e, ManifestError::SequenceRange { line: 2, seq: 0 }),
            ),
            (
                format!("{h}file incr.1.aof type i seq {}\n", u64::MAX),
                |e| matches!(e, ManifestError::SequenceRange { line: 2, .. }),
            ),
            // An id of u64::MAX would wrap the next file id.
            (format!("{h}file {max_id} type i seq 1\n"), |e| {
                matches!(e, ManifestError::FileId { line: 2, .. })
            }),
            // No base, first incr at 101: records 1..=100 would be silently missing.
            (format!("{h}file incr.1.aof type i seq 101\n"), |e| {
                matches!(
                    e,
                    ManifestError::Start {
                        line: 2,
                        seq: 101,
                        expected: 1,
                        ..
                    }
                )
            }),
            (
                format!("{h}file base.2.snap type b seq 120\nfile incr.2.aof type i seq 121\n"),
                |e| {
                    matches!(
                        e,
                        ManifestError::Start {
                            line: 3,
                            seq: 121,
                            expected: 120,
                            ..
                        }
                    )
                },
            ),
            (
                format!("{h}schema a\nschema b\nfile incr.1.aof type i seq 1\n"),
                |e| matches!(e, ManifestError::Schema { line: 3, .. }),
            ),
            (
                format!("{h}file incr.1.aof type i seq 1\nschema a\n"),
                |e| matches!(e, ManifestError::Schema { line: 3, .. }),
            ),
            (format!("{h}schema \nfile incr.1.aof type i seq 1\n"), |e| {
                matches!(e, ManifestError::Schema { line: 2, .. })
            }),
        ];
        for (body, ok) in cases {
            let err = Manifest::parse(&with_crc(&body)).unwrap_err();
            assert!(ok(&err), "{body:?} gave {err}");
        }
        // A manifest written before schema tags existed still parses, with no tag.
        let old = Manifest::parse(&with_crc(&format!("{h}file incr.1.aof type i seq 1\n")));
        assert_eq!(old.unwrap().schema, None);
        let mut tagged = sample();
        tagged.schema = Some("key=String value=(u32, String) version=3".into());
        assert_eq!(Manifest::parse(&tagged.encode()).unwrap(), tagged);
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let good = sample().encode();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            // A flip may only ever be refused: CRC-32 catches every single-bit error.
            assert!(Manifest::parse(&bad).is_err(), "bit {bit} accepted");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::parse(&bytes);
            let mut with_header = b"larder-manifest 1\n".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = Manifest::parse(&with_header);
        }

        #[test]
        fn round_trip_any(
            base in proptest::option::of(1u64..1000),
            steps in proptest::collection::vec(0u64..50, 1..6),
            schema in proptest::option::of("[ -~]{1,40}"),
        ) {
            let mut seq = base.unwrap_or(1);
            let m = Manifest {
                base: base.map(|s| ManifestFile { name: base_name(9), seq: s }),
                incrs: steps.iter().enumerate().map(|(i, d)| {
                    // The first incr file starts where the base (or 1) says.
                    if i > 0 {
                        seq += d;
                    }
                    ManifestFile { name: incr_name(i as u64 + 10), seq }
                }).collect(),
                schema,
            };
            prop_assert_eq!(Manifest::parse(&m.encode()).unwrap(), m);
        }
    }
}
