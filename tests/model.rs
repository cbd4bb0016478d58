//! Random operation sequences, with TTLs and clock jumps, checked step by step against a
//! simple model: a map from key to (value, expiry).

use larder::{Background, Cache, ManualClock, Policy, Ttl};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const T0: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u32),
    InsertTtl(u8, u32, u16),
    Get(u8),
    Contains(u8),
    Remove(u8),
    Unlink(u8),
    Expire(u8, u16),
    Persist(u8),
    Ttl(u8),
    Advance(u16),
    RunPending,
    Clear,
    Scan(u8),
    Batch(Vec<(u8, Option<u32>)>),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..40;
    prop_oneof![
        4 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => (key.clone(), any::<u32>(), 0u16..200).prop_map(|(k, v, t)| Op::InsertTtl(k, v, t)),
        4 => key.clone().prop_map(Op::Get),
        2 => key.clone().prop_map(Op::Contains),
        2 => key.clone().prop_map(Op::Remove),
        1 => key.clone().prop_map(Op::Unlink),
        2 => (key.clone(), 0u16..200).prop_map(|(k, t)| Op::Expire(k, t)),
        1 => key.clone().prop_map(Op::Persist),
        2 => key.clone().prop_map(Op::Ttl),
        3 => (0u16..150).prop_map(Op::Advance),
        1 => Just(Op::RunPending),
        1 => Just(Op::Clear),
        1 => (1u8..20).prop_map(Op::Scan),
        1 => prop::collection::vec((key, prop::option::of(any::<u32>())), 0..8).prop_map(Op::Batch),
    ]
}

#[derive(Default)]
struct Model {
    map: HashMap<u8, (u32, Option<u64>)>,
}

impl Model {
    fn live(&self, k: u8, now: u64) -> Option<(u32, Option<u64>)> {
        self.map
            .get(&k)
            .copied()
            .filter(|(_, at)| at.is_none_or(|at| at > now))
    }
    fn live_keys(&self, now: u64) -> HashSet<u8> {
        self.map
            .keys()
            .copied()
            .filter(|&k| self.live(k, now).is_some())
            .collect()
    }
}

fn run(ops: Vec<Op>) {
    let clock = Arc::new(ManualClock::new(T0));
    let cache: Cache<u8, u32> = Cache::builder()
        .clock(Arc::clone(&clock))
        .background(Background::Manual)
        .shards(4)
        .hasher_seed(7)
        .build();
    let mut m = Model::default();
    let mut now = T0;
    for (step, op) in ops.into_iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        match op {
            Op::Insert(k, v) => {
                cache.insert(k, v).unwrap();
                m.map.insert(k, (v, None));
            }
            Op::InsertTtl(k, v, t) => {
                cache
                    .insert_with_ttl(k, v, Duration::from_millis(t as u64))
                    .unwrap();
                if t == 0 {
                    m.map.remove(&k);
                } else {
                    m.map.insert(k, (v, Some(now + t as u64)));
                }
            }
            Op::Get(k) => {
                assert_eq!(cache.get(&k), m.live(k, now).map(|x| x.0), "{ctx}");
            }
            Op::Contains(k) => {
                assert_eq!(cache.contains(&k), m.live(k, now).is_some(), "{ctx}");
            }
            Op::Remove(k) | Op::Unlink(k) => {
                let want = m.live(k, now).is_some();
                let got = if matches!(op, Op::Remove(_)) {
                    cache.remove(&k).unwrap()
                } else {
                    cache.unlink(&k).unwrap()
                };
                assert_eq!(got, want, "{ctx}");
                m.map.remove(&k);
            }
            Op::Expire(k, t) => {
                let want = m.live(k, now).is_some();
                assert_eq!(
                    cache.expire(&k, Duration::from_millis(t as u64)).unwrap(),
                    want,
                    "{ctx}"
                );
                if want {
                    if t == 0 {
                        m.map.remove(&k);
                    } else {
                        m.map.get_mut(&k).unwrap().1 = Some(now + t as u64);
                    }
                }
            }
            Op::Persist(k) => {
                let want = m.live(k, now).is_some_and(|x| x.1.is_some());
                assert_eq!(cache.persist(&k).unwrap(), want, "{ctx}");
                if want {
                    m.map.get_mut(&k).unwrap().1 = None;
                }
            }
            Op::Ttl(k) => {
                let want = match m.live(k, now) {
                    None => Ttl::Missing,
                    Some((_, None)) => Ttl::Persistent,
                    Some((_, Some(at))) => Ttl::Remaining(at - now),
                };
                assert_eq!(cache.ttl(&k), want, "{ctx}");
            }
            Op::Advance(ms) => {
                now += ms as u64;
                clock.set(now);
            }
            Op::RunPending => {
                cache.run_pending_tasks();
                assert_eq!(cache.lazyfree_pending_objects(), 0, "{ctx}");
            }
            Op::Clear => {
                cache.clear().unwrap();
                m.map.clear();
                assert_eq!(cache.len(), 0, "{ctx}");
            }
            Op::Scan(count) => {
                let mut seen = HashSet::new();
                let mut cursor = 0;
                loop {
                    let page = cache.scan(cursor, None, count as usize);
                    seen.extend(page.keys);
                    cursor = page.cursor;
                    if cursor == 0 {
                        break;
                    }
                }
                assert_eq!(seen, m.live_keys(now), "{ctx}");
            }
            Op::Batch(items) => {
                let mut b = cache.batch();
                for &(k, v) in &items {
                    b = match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    };
                }
                b.apply().unwrap();
                for (k, v) in items {
                    match v {
                        Some(v) => {
                            m.map.insert(k, (v, None));
                        }
                        None => {
                            m.map.remove(&k);
                        }
                    }
                }
            }
        }
        // Deleted-but-expired keys may linger until touched; live ones must all be there.
        let live = m.live_keys(now).len();
        assert!(
            cache.len() >= live,
            "{ctx}: len {} < live {live}",
            cache.len()
        );
        assert!(cache.len() <= m.map.len().max(live), "{ctx}");
    }
    for k in 0..40u8 {
        assert_eq!(cache.get(&k), m.live(k, now).map(|x| x.0), "final get {k}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cache_matches_model(ops in prop::collection::vec(op(), 1..200)) {
        run(ops);
    }

    /// Under a bound, a read returns nothing or the last value written; the bound holds.
    #[test]
    fn bounded_cache_returns_only_last_writes(
        ops in prop::collection::vec((0u16..500, any::<u32>(), any::<bool>()), 1..2000),
        policy in prop::sample::select(vec![Policy::AllKeysLru, Policy::AllKeysLfu, Policy::AllKeysRandom]),
    ) {
        let cache: Cache<u16, u32> = Cache::builder()
            .max_entries(64)
            .shards(1)
            .eviction(policy)
            .background(Background::Manual)
            .build();
        let mut last = HashMap::new();
        for (k, v, write) in ops {
            if write {
                cache.insert(k, v).unwrap();
                last.insert(k, v);
            } else if let Some(got) = cache.get(&k) {
                prop_assert_eq!(Some(&got), last.get(&k));
            }
            prop_assert!(cache.len() <= 64);
        }
    }
}
