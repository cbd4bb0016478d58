//! Side-by-side comparison of larder with quick_cache and moka on identical seeded key
//! streams. Prints Markdown tables (pasted into BENCHMARKS.md) and ratios measured in
//! the same run.
//!
//! ```text
//! cargo run --release -p larder-benches --bin compare -- throughput [--ops N] [--reps N] [--samples N] [--only NAME]
//! cargo run --release -p larder-benches --bin compare -- memory [--entries N]
//! cargo run --release -p larder-benches --bin compare -- hit-ratio [--ops N]
//! cargo run --release -p larder-benches --bin compare -- all
//! ```

/// With `--features jemalloc`, every cache in the run allocates through jemalloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::Policy;
use larder_benches::contenders::{value_for, Replay, WithSubject};
use larder_benches::{
    belady_hits, resident_bytes, scan_polluted_stream, svg, thread_cpu_time, zipf_stream,
    Contender, Subject,
};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const KEYS: usize = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.replace('_', "").parse().expect("numeric flag")
            })
    };
    match args.first().map(String::as_str) {
        Some("throughput") => {
            let only = args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map(String::as_str);
            throughput(
                flag("--ops", 4_000_000),
                flag("--reps", 3),
                flag("--samples", 5),
                only,
            )
        }
        Some("memory") => memory(flag("--entries", 5_000_000)),
        Some("mem-child") => mem_child(&args[1], args[2].parse().expect("entry count")),
        Some("hit-ratio") => hit_ratio(flag("--ops", 3_000_000)),
        Some("all") => {
            throughput(4_000_000, 3, 5, None);
            memory(5_000_000);
            hit_ratio(3_000_000);
        }
        _ => {
            eprintln!(
                "usage: compare throughput|memory|hit-ratio|all [--ops N] [--reps N] [--entries N]"
            );
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Throughput: two threads, Zipf(0.99) over 1M keys, 100k capacity, get + insert on miss.

/// Replays one pre-generated stream per thread, all threads released together.
struct ParallelReplay<'a> {
    streams: &'a [Vec<u64>],
}

impl WithSubject for ParallelReplay<'_> {
    /// Wall time, summed worker CPU time, hits.
    type Output = (Duration, Duration, u64);
    fn visit<S: Subject>(self, cache: &S) -> (Duration, Duration, u64) {
        let start = Barrier::new(self.streams.len() + 1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .streams
                .iter()
                .map(|stream| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        let cpu0 = thread_cpu_time();
                        let mut hits = 0u64;
                        for &k in stream {
                            hits += u64::from(cache.access(k));
                        }
                        (thread_cpu_time() - cpu0, hits)
                    })
                })
                .collect();
            start.wait();
            let t0 = Instant::now();
            let (mut cpu, mut hits) = (Duration::ZERO, 0);
            for w in workers {
                let (c, h) = w.join().expect("worker");
                cpu += c;
                hits += h;
            }
            (t0.elapsed(), cpu, hits)
        })
    }
}

/// `only`: run just the contenders whose name contains it (for profiling one cache);
/// ratios are printed only when all five ran.
/// `samples`: larder's `maxmemory-samples`.
fn throughput(ops_per_thread: usize, reps: usize, samples: usize, only: Option<&str>) {
    const THREADS: usize = 2;
    const CAPACITY: u64 = 100_000;
    let streams: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| zipf_stream(KEYS, 0.99, ops_per_thread, 1_000 + t as u64))
        .collect();
    let contenders = [
        Contender::LarderDefault,
        Contender::Larder(Policy::AllKeysLru),
        Contender::Larder(Policy::AllKeysLfu),
        Contender::QuickCache,
        Contender::Moka,
    ];
    let contenders: Vec<Contender> = contenders
        .into_iter()
        .filter(|c| only.is_none_or(|o| c.name().contains(o)))
        .collect();
    let total_ops = (THREADS * ops_per_thread) as f64;
    // Per contender, per rep: ops per wall second and ops per CPU second (summed over
    // the worker threads; time spent descheduled by other jobs does not count).
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut hit_ratios = vec![0.0; contenders.len()];
    println!(
        "## Throughput: {THREADS} threads x {ops_per_thread} ops, Zipf 0.99 over {KEYS} keys, \
         capacity {CAPACITY}, get + insert on miss, u64 -> [u8; 16], {reps} reps, \
         larder maxmemory-samples {samples}\n"
    );
    for rep in 0..reps {
        // Rotate the order so no cache always runs first (cold CPU, other jobs, ...).
        for i in 0..contenders.len() {
            let c = (i + rep) % contenders.len();
            let (elapsed, cpu_time, hits) = contenders[c].run_with_samples(
                CAPACITY,
                samples,
                ParallelReplay { streams: &streams },
            );
            wall[c].push(total_ops / elapsed.as_secs_f64());
            cpu[c].push(total_ops / cpu_time.as_secs_f64());
            hit_ratios[c] = hits as f64 / total_ops;
            eprintln!(
                "rep {rep} {:<20} {:>6.2} Mops/s wall {:>6.2} Mops/CPU-s  hit {:.2}%",
                contenders[c].name(),
                wall[c][rep] / 1e6,
                cpu[c][rep] / 1e6,
                hit_ratios[c] * 100.0
            );
        }
    }
    let best = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
    let wall_med: Vec<f64> = wall.iter().map(|r| median(r)).collect();
    let wall_best: Vec<f64> = wall.iter().map(|r| best(r)).collect();
    let cpu_med: Vec<f64> = cpu.iter().map(|r| median(r)).collect();
    println!("| cache | Mops/s wall, median | Mops/s wall, best | Mops per CPU-second, median | hit ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (c, contender) in contenders.iter().enumerate() {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2}% |",
            contender.name(),
            wall_med[c] / 1e6,
            wall_best[c] / 1e6,
            cpu_med[c] / 1e6,
            hit_ratios[c] * 100.0
        );
    }
    if contenders.len() < 5 {
        return;
    }
    println!("\n| ratio | wall, median | wall, best | per CPU-second |");
    println!("|---|---:|---:|---:|");
    for (l, name) in [(0, "default"), (1, "allkeys-lru"), (2, "allkeys-lfu")] {
        for (p, peer) in [(3, "quick_cache"), (4, "moka")] {
            println!(
                "| larder {name} / {peer} | {:.2} | {:.2} | {:.2} |",
                wall_med[l] / wall_med[p],
                wall_best[l] / wall_best[p],
                cpu_med[l] / cpu_med[p]
            );
        }
    }
    println!();
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------
// Memory per entry: each cache in its own child process, RSS before and after.

const LIBS: [&str; 3] = ["larder", "quick_cache", "moka"];

fn memory(entries: usize) {
    println!(
        "## Memory per entry: {entries} entries of u64 -> [u8; 16], capacity {entries}, \
         RSS delta in a fresh child process per cache\n"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut per_entry = Vec::new();
    println!("| cache | entries held | RSS delta (MiB) | bytes/entry |");
    println!("|---|---:|---:|---:|");
    for lib in LIBS {
        let out = Command::new(&exe)
            .args(["mem-child", lib, &entries.to_string()])
            .output()
            .expect("spawn child");
        assert!(
            out.status.success(),
            "{lib}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .expect("RESULT line");
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let (delta, held) = (f[0], f[1]);
        let bpe = delta as f64 / held as f64;
        per_entry.push(bpe);
        println!(
            "| {lib} | {held} | {:.1} | {bpe:.1} |",
            delta as f64 / (1 << 20) as f64
        );
        for extra in text.lines().filter(|l| l.starts_with("NOTE")) {
            eprintln!("{lib}: {extra}");
        }
    }
    println!("\n| ratio (bytes/entry) | value |");
    println!("|---|---:|");
    println!(
        "| larder / quick_cache | {:.2} |",
        per_entry[0] / per_entry[1]
    );
    println!("| larder / moka | {:.2} |", per_entry[0] / per_entry[2]);
    println!();
}

/// Runs in the child: builds one cache, inserts `entries` keys, prints the RSS delta.
/// The cache is leaked rather than dropped: the process exits right after.
fn mem_child(lib: &str, entries: usize) {
    let before = resident_bytes().expect("/proc/self/status");
    let keys = (0..entries as u64).map(larder_benches::rng::mix64);
    match lib {
        "larder" => {
            let c: larder::Cache<u64, larder_benches::Value> = larder::Cache::builder()
                .max_entries(entries as u64)
                .hasher_seed(42)
                .build();
            for k in keys {
                c.insert(k, value_for(k)).expect("within bound");
            }
            let note = format!(
                "used_memory {} B ({:.1} B/entry by larder's own accounting)",
                c.used_memory(),
                c.used_memory() as f64 / c.len() as f64
            );
            report(before, c.len() as u64, &note);
            std::mem::forget(c);
        }
        "quick_cache" => {
            let c = quick_cache::sync::Cache::<u64, larder_benches::Value>::new(entries);
            for k in keys {
                c.insert(k, value_for(k));
            }
            report(before, c.len() as u64, "");
            std::mem::forget(c);
        }
        "moka" => {
            let c = moka::sync::Cache::<u64, larder_benches::Value>::new(entries as u64);
            for k in keys {
                c.insert(k, value_for(k));
            }
            c.run_pending_tasks();
            report(before, c.entry_count(), "");
            std::mem::forget(c);
        }
        other => panic!("unknown cache {other}"),
    }
}

fn report(before: u64, held: u64, note: &str) {
    let after = resident_bytes().expect("/proc/self/status");
    println!("RESULT {} {held}", after.saturating_sub(before));
    if !note.is_empty() {
        println!("NOTE {note}");
    }
}

// ---------------------------------------------------------------------------------------
// Hit ratio: single-threaded replay vs Belady's optimum.

fn hit_ratio(ops: usize) {
    const CAPACITY: u64 = 50_000;
    println!(
        "## Hit ratio: {ops} ops single-threaded, {KEYS} keys, capacity {CAPACITY}, \
         get + insert on miss (cold start counted)\n"
    );
    let streams: Vec<(String, Vec<u64>)> = vec![
        ("Zipf 0.8".into(), zipf_stream(KEYS, 0.8, ops, 1)),
        ("Zipf 0.99".into(), zipf_stream(KEYS, 0.99, ops, 2)),
        ("Zipf 1.2".into(), zipf_stream(KEYS, 1.2, ops, 3)),
        (
            "Zipf 0.99 + scans".into(),
            scan_polluted_stream(KEYS, 0.99, ops, 40_000, 20_000, 4),
        ),
    ];
    let mut contenders: Vec<Contender> =
        Policy::ALL.iter().map(|&p| Contender::Larder(p)).collect();
    contenders.push(Contender::QuickCache);
    contenders.push(Contender::Moka);

    let mut series: Vec<String> = contenders.iter().map(|c| c.name()).collect();
    series.push("Belady optimal".into());
    // ratios[stream][series]
    let mut ratios: Vec<Vec<f64>> = Vec::new();
    for (name, stream) in &streams {
        let n = stream.len() as f64;
        let mut row = Vec::new();
        for &c in &contenders {
            let t0 = Instant::now();
            let hits = c.run(CAPACITY, Replay { stream });
            row.push(hits as f64 / n);
            eprintln!(
                "{name:<18} {:<22} {:.2}% ({:.1}s)",
                c.name(),
                hits as f64 / n * 100.0,
                t0.elapsed().as_secs_f64()
            );
        }
        let opt = belady_hits(stream, CAPACITY as usize) as f64 / n;
        eprintln!("{name:<18} {:<22} {:.2}%", "Belady optimal", opt * 100.0);
        row.push(opt);
        ratios.push(row);
    }

    let groups: Vec<String> = streams.iter().map(|(n, _)| n.clone()).collect();
    print!("| cache |");
    for g in &groups {
        print!(" {g} |");
    }
    println!();
    print!("|---|");
    for _ in &groups {
        print!("---:|");
    }
    println!();
    for (s, name) in series.iter().enumerate() {
        print!("| {name} |");
        for row in &ratios {
            let opt = row[row.len() - 1];
            if s == row.len() - 1 {
                print!(" **{:.2}%** |", row[s] * 100.0);
            } else {
                print!(" {:.2}% (−{:.2}) |", row[s] * 100.0, (opt - row[s]) * 100.0);
            }
        }
        println!();
    }
    println!("\nCells: hit ratio (gap to Belady's optimum in percentage points).\n");

    let plot = svg::grouped_bars(
        &format!("Hit ratio, capacity {CAPACITY}, {KEYS} keys, {ops} ops"),
        &groups,
        &series,
        &ratios,
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plots");
    std::fs::create_dir_all(&dir).expect("create docs/plots");
    let path = dir.join("hit_ratio.svg");
    std::fs::write(&path, plot).expect("write plot");
    eprintln!("wrote {}", path.display());
}
