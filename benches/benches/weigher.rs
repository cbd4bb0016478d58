//! What the weigher costs on the write path: inserts into a full, memory-bounded cache
//! (each insert weighs the new entry and its evicted victim) with the default weigher
//! (a function pointer chosen at build time), a weigher type called directly, and a
//! boxed closure (`FnWeigher`).
//!
//! `cargo bench -p larder-benches --bench weigher`.

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use larder::{Background, Cache, MemoryWeigher, Weigh, Weigher};
use larder_benches::zipf_stream;
use std::hint::black_box;
use std::time::Duration;

const KEYS: usize = 1_000_000;
const BATCH: usize = 1024;
/// About 100k entries of `u64 -> String` with 16-byte strings.
const MAX_MEMORY: u64 = 100_000 * 70;

/// `Weigh`, called directly: what the default weigher was before it became a function
/// pointer.
struct Direct;

impl Weigher<u64, String> for Direct {
    #[inline]
    fn weight(&self, k: &u64, v: &String) -> usize {
        k.weigh() + v.weigh()
    }
}

impl MemoryWeigher<u64, String> for Direct {}

fn value(k: u64) -> String {
    format!("{k:016x}")
}

fn run<W: Weigher<u64, String>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    cache: Cache<u64, String, W>,
    stream: &[u64],
) {
    for &k in stream.iter().take(400_000) {
        let _ = cache.insert(k, value(k));
    }
    let mut pos = 0usize;
    group.bench_function(BenchmarkId::new("insert", name), |b| {
        b.iter(|| {
            if pos + BATCH > stream.len() {
                pos = 0;
            }
            for &k in &stream[pos..pos + BATCH] {
                black_box(cache.insert(k, value(k))).ok();
            }
            pos += BATCH;
        })
    });
}

fn weighers(c: &mut Criterion) {
    let stream = zipf_stream(KEYS, 0.99, 2_000_000, 91);
    let mut group = c.benchmark_group("weigher");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    let base = || {
        Cache::<u64, String>::builder()
            .shards(16)
            .hasher_seed(5)
            .background(Background::Manual)
    };
    run(
        &mut group,
        "default",
        base().max_memory(MAX_MEMORY).build(),
        &stream,
    );
    run(
        &mut group,
        "direct",
        base().custom_weigher(Direct).max_memory(MAX_MEMORY).build(),
        &stream,
    );
    run(
        &mut group,
        "closure",
        base()
            .weigher(|k: &u64, v: &String| k.weigh() + v.weigh())
            .max_memory(MAX_MEMORY)
            .build(),
        &stream,
    );
    group.finish();
}

criterion_group!(benches, weighers);
criterion_main!(benches);
