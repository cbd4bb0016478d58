//! `larder-check`: output and exit codes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{open, set};
use larder_persistence::backend::FsBackend;
use larder_persistence::{FsyncPolicy, Options};

fn check(dir: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder-check"))
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

fn make_dir(records: u64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let b = Arc::new(FsBackend::new(tmp.path()).unwrap());
    let opts = Options {
        fsync: FsyncPolicy::No,
        segment_bytes: 4096,
        ..Options::default()
    };
    let r = open(b, opts).unwrap();
    for n in 1..=records {
        r.dir.append(&set(n)).unwrap();
    }
    tmp
}

fn incr(dir: &Path) -> std::path::PathBuf {
    dir.join("incr.1.aof")
}

/// End of the last frame of the (mapped, zero-tailed) incr file.
fn data_end(dir: &Path) -> u64 {
    use larder_persistence::frame::{frames, FILE_HEADER_LEN};
    let bytes = std::fs::read(incr(dir)).unwrap();
    frames(&bytes, FILE_HEADER_LEN)
        .map_while(Result::ok)
        .last()
        .map_or(FILE_HEADER_LEN, |f| f.end()) as u64
}

#[test]
fn healthy_directory() {
    let tmp = make_dir(10);
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("incr.1.aof"), "{out}");
    assert!(out.contains("last good sequence: 10"), "{out}");
    assert!(out.contains("schema: none recorded"), "{out}");
}

/// A hole (a frame reserved but never copied, before whole frames) is reported and is
/// not damage: exit 0, as open accepts it.
#[test]
fn a_hole_is_reported_and_healthy() {
    use larder_persistence::frame::{frames, FILE_HEADER_LEN};
    let tmp = make_dir(10);
    let mut bytes = std::fs::read(incr(tmp.path())).unwrap();
    let third = frames(&bytes, FILE_HEADER_LEN).nth(2).unwrap().unwrap();
    let (start, end) = (third.offset, third.end());
    bytes[start..end].iter_mut().for_each(|b| *b = 0);
    std::fs::write(incr(tmp.path()), &bytes).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("hole: incr.1.aof at byte {start}"))
            && out.contains("sequences 3..=3"),
        "{out}"
    );
    assert!(out.contains("last good sequence: 10"), "{out}");
}

#[test]
fn torn_tail_reported_then_fixed() {
    let tmp = make_dir(10);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(incr(tmp.path()))
        .unwrap();
    let len = data_end(tmp.path());
    f.set_len(len - 5).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("torn tail") && out.contains("after sequence 9"),
        "{out}"
    );
    // Declined.
    let (code, out) = check(tmp.path(), &["--fix"], "n\n");
    assert_eq!(code, 5, "{out}");
    // Confirmed.
    let (code, out) = check(tmp.path(), &["--fix"], "y\n");
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("FIXED"), "{out}");
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("last good sequence: 9"), "{out}");
}

#[test]
fn corrupt_middle_of_last_file_needs_fix() {
    let tmp = make_dir(10);
    let mut bytes = std::fs::read(incr(tmp.path())).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(incr(tmp.path()), &bytes).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("corrupt tail"), "{out}");
    let (code, out) = check(tmp.path(), &["--fix", "--yes"], "");
    assert_eq!(code, 4, "{out}");
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("last good sequence: 0"), "{out}");
}

#[test]
fn damaged_manifest_and_usage_errors() {
    let tmp = make_dir(3);
    let m = tmp.path().join("manifest");
    let mut bytes = std::fs::read(&m).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&m, &bytes).unwrap();
    let (code, out) = check(tmp.path(), &["--fix", "--yes"], "");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("manifest"), "{out}");
    let (code, _) = check(&tmp.path().join("nope"), &[], "");
    assert_eq!(code, 5);
    let (code, _) = check(tmp.path(), &["--yes"], "");
    assert_eq!(code, 2, "--yes without --fix is a usage error");
}

#[test]
fn fix_refuses_while_the_directory_is_open() {
    let tmp = make_dir(10);
    let holder = open(
        Arc::new(FsBackend::new(tmp.path()).unwrap()),
        Options {
            fsync: FsyncPolicy::No,
            ..Options::default()
        },
    )
    .unwrap();
    // A torn tail appears while the directory is open (as if mid-write).
    use std::os::unix::fs::FileExt;
    let end = data_end(tmp.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(incr(tmp.path()))
        .unwrap()
        .write_all_at(b"garbage", end)
        .unwrap();
    let before = std::fs::read(incr(tmp.path())).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("by process {}", std::process::id())),
        "a read-only check notes the holder: {out}"
    );
    let (code, out) = check(tmp.path(), &["--fix", "--yes"], "");
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("cannot fix") && out.contains("already open"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(incr(tmp.path())).unwrap(),
        before,
        "nothing was cut"
    );
    drop(holder);
    let (code, out) = check(tmp.path(), &["--fix", "--yes"], "");
    assert_eq!(code, 4, "{out}");
}

#[test]
fn files_the_manifest_does_not_name_are_reported_as_open_refuses_them() {
    let tmp = make_dir(10);
    // A stale manifest naming only a new, empty file; incr.1.aof's records unnamed.
    let header = larder_persistence::frame::file_header();
    std::fs::write(tmp.path().join("incr.2.aof"), header).unwrap();
    let m = larder_persistence::Manifest {
        base: None,
        incrs: vec![larder_persistence::manifest::ManifestFile {
            name: "incr.2.aof".into(),
            seq: 1,
        }],
        schema: None,
    };
    std::fs::write(tmp.path().join("manifest"), m.encode()).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("incr.1.aof") && out.contains("does not name it"),
        "{out}"
    );
}

#[test]
fn a_read_only_check_looks_at_the_lock_without_taking_it() {
    let tmp = make_dir(3);
    // A copy made without its lock file (a backup, say): a read-only check writes
    // nothing into it. Taking the lock, even for a moment, would create the file,
    // write the checker's pid, and make an open starting then fail as busy.
    std::fs::remove_file(tmp.path().join("lock")).unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        !tmp.path().join("lock").exists(),
        "a read-only check created the lock file"
    );
    // With a lock file no one holds, it is left as it was.
    std::fs::write(tmp.path().join("lock"), "12345\n").unwrap();
    let (code, out) = check(tmp.path(), &[], "");
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("note:"), "{out}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("lock")).unwrap(),
        "12345\n",
        "a read-only check wrote into the lock file"
    );
}
