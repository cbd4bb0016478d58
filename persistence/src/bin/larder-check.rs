//! `larder-check`: verifies a larder data directory and optionally cuts a damaged tail
//! of its last incr file.
//!
//! Exit codes (stable, for scripts):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | healthy: opens as is, nothing would be cut |
//! | 1 | torn tail in the last incr file (open cuts it by default; not fixed) |
//! | 2 | usage error |
//! | 3 | damage that open refuses: a corrupt tail of the last incr file (fixable with `--fix`), or damage elsewhere (not fixable by this tool) |
//! | 4 | `--fix` cut the tail; the directory is now healthy |
//! | 5 | I/O error, the fix was declined, or `--fix` found the directory open elsewhere |
//!
//! `--fix` takes the directory's lock (the one an open cache holds), so it never cuts
//! a file a running process is appending to. Without `--fix` nothing is locked or
//! changed; a directory open elsewhere is noted, since its last file may be growing.
//!
//! This tool checks frames, checksums and sequences, not whether the keys and values
//! decode as the application's types (it knows bytes only). For that, the application
//! calls `larder::verify::<K, V>(dir)`, which decodes every entry and record and names
//! the first that fails by file, offset and sequence.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use larder_persistence::backend::FsBackend;
use larder_persistence::recovery::{check, truncate_tail};
use larder_persistence::{Backend, FileKind, OpenError, TailKind};

/// Verify a larder data directory: manifest, base snapshot and incr files.
///
/// Checks frames, checksums and sequences; it does not decode keys and values as the
/// application's types (use `larder::verify::<K, V>(dir)` from the application for
/// that). `--fix` takes the directory's lock and refuses while a cache has it open.
#[derive(Parser, Debug)]
#[command(name = "larder-check", version)]
struct Args {
    /// The data directory (holding `manifest`).
    dir: PathBuf,
    /// Cut a torn or corrupt tail of the last incr file (asks first).
    #[arg(long)]
    fix: bool,
    /// Do not ask before fixing.
    #[arg(long, requires = "fix")]
    yes: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

const HEALTHY: u8 = 0;
const TORN: u8 = 1;
const CORRUPT: u8 = 3;
const FIXED: u8 = 4;
const FAILED: u8 = 5;

/// Files larger than this in total get a progress bar.
const PROGRESS_BYTES: u64 = 64 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    ExitCode::from(run(&args))
}

fn total_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn run(args: &Args) -> u8 {
    if !args.dir.is_dir() {
        eprintln!("larder-check: {} is not a directory", args.dir.display());
        return FAILED;
    }
    let backend = match FsBackend::new(&args.dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("larder-check: {}: {e}", args.dir.display());
            return FAILED;
        }
    };
    // --fix writes: it needs the directory to itself, for as long as it runs.
    let _lock = if args.fix {
        match backend.lock() {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("larder-check: cannot fix: {e}");
                return FAILED;
            }
        }
    } else {
        // Looked at, not taken: taking it, even for a moment, could make a cache
        // opening the directory just then fail as busy.
        if let Some(e) = backend.lock_holder() {
            println!("note: {e}; its last file may grow while this reads");
        }
        None
    };
    let total = total_bytes(&args.dir);
    let bar = if !args.no_progress && total >= PROGRESS_BYTES {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = check(&backend, &mut |n| bar.inc(n));
    bar.finish_and_clear();
    let replay = match result {
        Ok(r) => r,
        Err(e) => {
            println!("UNREADABLE: {e}");
            return match e {
                OpenError::Io { .. } => FAILED,
                _ => CORRUPT,
            };
        }
    };
    println!(
        "{:<24} {:>5} {:>14} {:>10} {:>21}",
        "file", "type", "bytes", "records", "sequences"
    );
    for f in &replay.files {
        let kind = match f.kind {
            FileKind::Base => "base",
            FileKind::Incr => "incr",
        };
        let seqs = match (f.kind, f.first_seq, f.last_seq) {
            (FileKind::Base, ..) => format!(
                "from {}",
                replay.manifest.base.as_ref().map_or(0, |b| b.seq)
            ),
            (_, Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "-".into(),
        };
        println!(
            "{:<24} {kind:>5} {:>14} {:>10} {seqs:>21}",
            f.name, f.bytes, f.records
        );
    }
    match &replay.manifest.schema {
        Some(tag) => println!("schema: {tag}"),
        None => println!("schema: none recorded"),
    }
    for h in &replay.holes {
        // Not damage: appends a crash stopped mid-copy, never acknowledged; open
        // skips them too (docs/format.md, "Holes").
        println!(
            "hole: {} at byte {} ({} bytes): sequences {}..={} were reserved but never \
             written (a crash mid-append); skipped",
            h.file,
            h.offset,
            h.bytes,
            h.first_seq,
            h.first_seq + h.records - 1
        );
    }
    let last_good = replay.next_seq.saturating_sub(1);
    println!("last good sequence: {last_good}");
    let Some(tail) = replay.tail else {
        println!("OK");
        return HEALTHY;
    };
    let (what, code) = match &tail.kind {
        TailKind::Torn => ("torn tail".to_string(), TORN),
        TailKind::Corrupt(why) => (format!("corrupt tail ({why})"), CORRUPT),
    };
    println!(
        "{what}: {} at byte {}: {} bytes after sequence {}; everything from sequence {} on \
         in this file is lost if cut",
        tail.file,
        tail.offset,
        tail.bytes,
        tail.last_good_seq,
        tail.last_good_seq + 1
    );
    if !args.fix {
        println!("run with --fix to cut it");
        return code;
    }
    if !args.yes {
        print!(
            "Cut {} at byte {}, dropping {} bytes and whatever records from sequence {} on \
             they held? [y/N] ",
            tail.file,
            tail.offset,
            tail.bytes,
            tail.last_good_seq + 1
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not fixed");
            return FAILED;
        }
    }
    match truncate_tail(&backend, &tail) {
        Ok(()) => {
            println!(
                "FIXED: cut {} at byte {}; dropped {} bytes; last good sequence {}",
                tail.file, tail.offset, tail.bytes, tail.last_good_seq
            );
            FIXED
        }
        Err(e) => {
            println!("fix failed: {e}");
            FAILED
        }
    }
}
