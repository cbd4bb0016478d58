//! Criterion micro-benchmarks: larder vs quick_cache vs moka, side by side in one group.
//!
//! Each iteration replays a batch of 1024 keys from a pre-generated Zipf(0.99) stream
//! over 1M keys (capacity 100k), so key generation is outside the timing.
//!
//! `cargo bench -p larder-benches --bench cache`. A name filter (`-- get_hit`) still builds
//! and warms every cache, since the warm-up happens outside criterion's routines.

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use larder::Policy;
use larder_benches::contenders::{value_for, WithSubject};
use larder_benches::{zipf_stream, Contender, Subject};
use std::hint::black_box;
use std::time::Duration;

const KEYS: usize = 1_000_000;
const CAPACITY: u64 = 100_000;
const BATCH: usize = 1024;

/// Whether criterion is measuring (`cargo bench` passes `--bench`) rather than smoke-testing
/// each routine once under `cargo test --benches`, where a debug build should stay quick.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Which operation a benchmark times.
#[derive(Clone, Copy)]
enum Op {
    /// `get` of keys known to be present.
    GetHit,
    /// `insert` of Zipf keys into a full cache (replacements and evictions).
    Insert,
    /// `get`, then `insert` on a miss.
    GetOrInsert,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetHit => "get_hit",
            Op::Insert => "insert",
            Op::GetOrInsert => "get_then_insert_on_miss",
        }
    }
}

struct Bench<'a, 'c> {
    group: &'a mut criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
    op: Op,
    name: String,
    stream: &'a [u64],
    resident: &'a [u64],
}

impl WithSubject for Bench<'_, '_> {
    type Output = ();
    fn visit<S: Subject>(self, cache: &S) {
        // Warm: fill to capacity with the stream, then make sure the hit set is present.
        let warm = if measuring() {
            CAPACITY as usize * 4
        } else {
            10_000
        };
        for &k in self.stream.iter().take(warm) {
            cache.access(k);
        }
        for &k in self.resident {
            cache.insert(k, value_for(k));
        }
        cache.settle();
        let keys = match self.op {
            Op::GetHit => self.resident,
            Op::Insert | Op::GetOrInsert => self.stream,
        };
        let mut pos = 0usize;
        let op = self.op;
        self.group
            .bench_function(BenchmarkId::new(op.name(), &self.name), |b| {
                b.iter(|| {
                    if pos + BATCH > keys.len() {
                        pos = 0;
                    }
                    let batch = &keys[pos..pos + BATCH];
                    pos += BATCH;
                    let mut acc = 0u64;
                    for &k in batch {
                        match op {
                            Op::GetHit => acc += u64::from(cache.get(k).is_some()),
                            Op::Insert => cache.insert(k, value_for(k)),
                            Op::GetOrInsert => acc += u64::from(cache.access(k)),
                        }
                    }
                    black_box(acc)
                })
            });
    }
}

fn compare(c: &mut Criterion) {
    let len = if measuring() { 2_000_000 } else { 20_000 };
    let stream = zipf_stream(KEYS, 0.99, len, 77);
    // The 10k hottest keys (ranks 0..10k), small enough to stay resident under every
    // policy, looked up with Zipf(0.99) skew among themselves.
    let resident = zipf_stream(10_000, 0.99, len / 2, 78);

    let mut group = c.benchmark_group("cache");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(BATCH as u64));
    for op in [Op::GetHit, Op::Insert, Op::GetOrInsert] {
        for contender in [
            Contender::Larder(Policy::AllKeysLru),
            Contender::Larder(Policy::AllKeysLfu),
            Contender::QuickCache,
            Contender::Moka,
        ] {
            let name = contender.name().replace(' ', "_");
            contender.run(
                CAPACITY,
                Bench {
                    group: &mut group,
                    op,
                    name,
                    stream: &stream,
                    resident: &resident,
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
