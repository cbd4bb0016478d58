//! Hit ratios on the generated workload suite (benches/workloads.rs): every workload at
//! two cache sizes, replayed single-threaded (`get`, then `insert` on a miss, cold start
//! counted) through Belady's optimum, moka, quick_cache, larder's default and larder
//! under each allkeys policy. Prints a Markdown table and writes docs/plots/suite.svg.
//!
//! ```text
//! cargo run --release -p larder-benches --bin suite -- [--ops N] [--quick] [--only NAME] [--variants] [--no-plot]
//! cargo run --release -p larder-benches --bin suite -- --dump DIR [--ops N]
//! ```
//!
//! `--dump DIR` writes each stream as little-endian `u64`s to `DIR/<n>.bin` with an
//! index `DIR/index.tsv` (file, workload, sizes) and exits, for replayers of other caches
//! (benches/caffeine/Replay.java).
//!
//! `--quick` replays 500k requests per workload instead of 2M; `--only` keeps the
//! workloads whose name contains NAME; `--variants` adds larder configurations beside
//! the default (admission modes, LFU decay settings) to compare designs.

use larder::{Admission, LfuDecay, Policy};
use larder_benches::contenders::{Larder, Replay, WithSubject};
use larder_benches::workloads::suite;
use larder_benches::{belady_hits, svg, Contender, Value};
use std::time::Instant;

/// A larder configuration compared beside the default with `--variants`.
struct Variant {
    name: &'static str,
    build: fn(u64) -> larder::Cache<u64, Value>,
}

fn base(capacity: u64) -> larder::CacheBuilder<u64, Value> {
    larder::Cache::builder()
        .max_entries(capacity)
        .hasher_seed(42)
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "default + doorkeeper",
            build: |c| base(c).admission_doorkeeper(true).build(),
        },
        Variant {
            name: "default 1 shard",
            build: |c| base(c).shards(1).build(),
        },
        Variant {
            name: "default 2 shards",
            build: |c| base(c).shards(2).build(),
        },
        Variant {
            name: "lfu turnovers 1",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLfu)
                    .lfu_decay(LfuDecay::Turnovers(1))
                    .build()
            },
        },
        Variant {
            name: "lfu turnovers 16",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLfu)
                    .lfu_decay(LfuDecay::Turnovers(16))
                    .build()
            },
        },
        Variant {
            name: "lru+tinylfu",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLru)
                    .admission(Admission::TinyLfu)
                    .build()
            },
        },
        Variant {
            name: "lfu+tinylfu",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLfu)
                    .admission(Admission::TinyLfu)
                    .build()
            },
        },
        Variant {
            name: "lru+w-tinylfu",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLru)
                    .admission(Admission::WindowTinyLfu)
                    .build()
            },
        },
        Variant {
            name: "lfu+w-tinylfu",
            build: |c| {
                base(c)
                    .eviction(Policy::AllKeysLfu)
                    .admission(Admission::WindowTinyLfu)
                    .build()
            },
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let ops = match value_of("--ops") {
        Some(v) => v.replace('_', "").parse().expect("--ops N"),
        None if has("--quick") => 500_000,
        None => 2_000_000,
    };
    let only = value_of("--only");
    if let Some(dir) = value_of("--dump") {
        dump(std::path::Path::new(&dir), ops);
        return;
    }
    let variants = if has("--variants") {
        variants()
    } else {
        Vec::new()
    };

    let contenders = [
        Contender::Moka,
        Contender::QuickCache,
        Contender::LarderDefault,
        Contender::Larder(Policy::AllKeysLru),
        Contender::Larder(Policy::AllKeysLfu),
        Contender::Larder(Policy::AllKeysRandom),
    ];
    let mut series: Vec<String> = vec!["Belady".into()];
    series.extend(contenders.iter().map(|c| c.name()));
    series.extend(variants.iter().map(|v| format!("larder {}", v.name)));

    println!(
        "## Workload suite: {ops} requests per workload, single-threaded, get + insert on \
         miss, cold start counted\n"
    );
    print!("| workload | size |");
    for s in &series {
        print!(" {s} |");
    }
    println!(" default − best peer |");
    print!("|---|---:|");
    for _ in &series {
        print!("---:|");
    }
    println!("---:|");

    let started = Instant::now();
    let mut groups = Vec::new();
    let mut values = Vec::new();
    let (mut at_least_peer, mut cases) = (0, 0);
    for w in suite(ops) {
        if only.as_deref().is_some_and(|o| !w.name.contains(o)) {
            continue;
        }
        let n = w.stream.len() as f64;
        for &size in &w.sizes {
            let mut row = vec![belady_hits(&w.stream, size as usize) as f64 / n];
            for &c in &contenders {
                let t0 = Instant::now();
                let hits = c.run(size, Replay { stream: &w.stream });
                row.push(hits as f64 / n);
                eprintln!(
                    "{:<18} {size:>7} {:<22} {:6.2}% ({:.1}s)",
                    w.name,
                    c.name(),
                    hits as f64 / n * 100.0,
                    t0.elapsed().as_secs_f64()
                );
            }
            for v in &variants {
                let cache = Larder::new((v.build)(size));
                let hits = Replay { stream: &w.stream }.visit(&cache);
                row.push(hits as f64 / n);
                eprintln!(
                    "{:<18} {size:>7} larder {:<15} {:6.2}%",
                    w.name,
                    v.name,
                    hits as f64 / n * 100.0
                );
            }
            let best_peer = row[1].max(row[2]);
            let gap = row[3] - best_peer;
            cases += 1;
            if gap >= 0.0 {
                at_least_peer += 1;
            }
            print!("| {} | {} |", w.name, size);
            for v in &row {
                print!(" {:.2} |", v * 100.0);
            }
            println!(" {:+.2} |", gap * 100.0);
            groups.push(format!("{} @{}k", w.name, size / 1000));
            values.push(row);
        }
    }
    println!(
        "\nCells: hit ratio in percent. larder's default at or above the best of moka and \
         quick_cache in {at_least_peer} of {cases} cases. ({:.0} s)\n",
        started.elapsed().as_secs_f64()
    );
    if has("--no-plot") || only.is_some() {
        return;
    }
    let plot = svg::grouped_bars(
        &format!("Hit ratio on the workload suite, {ops} requests each"),
        &groups,
        &series,
        &values,
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plots");
    std::fs::create_dir_all(&dir).expect("create docs/plots");
    let path = dir.join("suite.svg");
    std::fs::write(&path, plot).expect("write plot");
    eprintln!("wrote {}", path.display());
}

/// Writes every workload's stream and sizes under `dir`.
fn dump(dir: &std::path::Path, ops: usize) {
    std::fs::create_dir_all(dir).expect("create dump directory");
    let mut index = String::new();
    for (i, w) in suite(ops).iter().enumerate() {
        let file = format!("{i}.bin");
        let bytes: Vec<u8> = w.stream.iter().flat_map(|k| k.to_le_bytes()).collect();
        std::fs::write(dir.join(&file), bytes).expect("write stream");
        index.push_str(&format!(
            "{file}\t{}\t{}\t{}\n",
            w.name, w.sizes[0], w.sizes[1]
        ));
    }
    std::fs::write(dir.join("index.tsv"), index).expect("write index");
    eprintln!("wrote {} streams to {}", suite(0).len(), dir.display());
}
