//! The manifest: which base snapshot and which incr files make up the data, in order.
//!
//! It is text, like Redis 7's: an operator can read it with `cat` while deciding what
//! to do with a damaged directory, and it is tiny and rewritten only on rewrite, so the
//! cost of parsing text does not matter. A final CRC line catches bit flips that would
//! otherwise still parse (a digit of a sequence number).
//!
//! ```text
//! larder-manifest 1\n
//! file base.3.snap type b seq 120\n      at most one base, and first if present
//! file incr.3.aof type i seq 120\n       one or more incr files, in replay order,
//! file incr.4.aof type i seq 200\n       start sequences non-decreasing, >= base seq
//! crc32 1a2b3c4d\n                       CRC-32 (IEEE) of every byte before this line,
//!                                        8 lowercase hex digits
//! ```
//! Names are `[A-Za-z0-9._-]+`, at most 255 bytes, not `.` or `..`.

/// File name of the manifest in a data directory.
pub const MANIFEST_NAME: &str = "manifest";
/// First line of every manifest.
pub const MANIFEST_HEADER: &str = "larder-manifest 1";

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
        };
        let mut names = std::collections::HashSet::new();
        for (line, l) in lines {
            let syntax = || ManifestError::Syntax {
                line,
                text: l.chars().take(120).collect(),
            };
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
            .map_or(1, |m| m + 1)
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
                format!("{h}file a type i seq 5\nfile b type i seq 4\n"),
                |e| {
                    matches!(
                        e,
                        ManifestError::SequenceOrder {
                            line: 3,
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
                format!("{h}file a type i seq 5\nfile a type i seq 6\n"),
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
        fn round_trip_any(base in proptest::option::of(0u64..1000), steps in proptest::collection::vec(0u64..50, 1..6)) {
            let mut seq = base.unwrap_or(1);
            let m = Manifest {
                base: base.map(|s| ManifestFile { name: base_name(9), seq: s }),
                incrs: steps.iter().enumerate().map(|(i, d)| {
                    seq += d;
                    ManifestFile { name: incr_name(i as u64 + 10), seq }
                }).collect(),
            };
            prop_assert_eq!(Manifest::parse(&m.encode()).unwrap(), m);
        }
    }
}
