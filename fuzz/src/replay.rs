//! Replays inputs through the target bodies on a stable toolchain: the checked-in
//! seeds, the built ones, and seeded mutations of them. Not coverage-guided (that is
//! what `cargo fuzz run` adds), but it runs on every CI build, so a harness that
//! rejects valid input, or a decoder that panics on a small mutation, shows there.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A small xorshift generator: replays are reproducible from their seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Byte values that often sit on a decoder's edge (lengths, tags, signs).
const INTERESTING: &[u8] = &[0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];

/// `input` changed by one to four edits: bit flips, byte overwrites (random or on an
/// edge), insertions, deletions, truncation, a duplicated range, or a 32-bit length
/// written little-endian.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                let copy = out[at..at + n].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            7 if len >= 4 => {
                let at = rng.below(len - 3);
                let v: u32 = match rng.below(4) {
                    0 => 0,
                    1 => u32::MAX,
                    2 => rng.below(len + 8) as u32,
                    _ => rng.next_u64() as u32,
                };
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out
}

/// The directory of `target`'s checked-in seeds: `fuzz/seeds/<target>`.
pub fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// The checked-in seeds of `target`, by file name order.
pub fn checked_in(target: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(seed_dir(target))? {
        let path = entry?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path)?;
            files.push((path, bytes));
        }
    }
    files.sort();
    Ok(files)
}

/// An input a body panicked on.
#[derive(Debug)]
pub struct Failure {
    /// The target.
    pub target: String,
    /// Where the input came from (a seed file, a built seed, a mutation of one).
    pub origin: String,
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} panicked on {} ({} bytes: {:02x?}): {}",
            self.target,
            self.origin,
            self.input.len(),
            &self.input[..self.input.len().min(256)],
            self.message
        )
    }
}

/// Runs `body` on `input`; a panic becomes a [`Failure`].
pub fn run_one(target: &str, body: crate::Body, origin: &str, input: &[u8]) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(|| body(input))).map_err(|p| Failure {
        target: target.to_string(),
        origin: origin.to_string(),
        input: input.to_vec(),
        message: p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    })
}

/// Runs `body` on every input of `inputs`, then on `mutations` mutations of randomly
/// chosen ones (a mutation is mutated further a third of the time, so edits pile
/// up). Stops at the first panic. Returns how many inputs ran.
pub fn run(
    target: &str,
    body: crate::Body,
    inputs: &[(String, Vec<u8>)],
    mutations: usize,
    seed: u64,
) -> Result<usize, Failure> {
    for (origin, input) in inputs {
        run_one(target, body, origin, input)?;
    }
    if inputs.is_empty() {
        return Ok(0);
    }
    let mut rng = Rng::new(seed);
    let mut current: Option<(usize, Vec<u8>)> = None;
    for n in 0..mutations {
        let (from, base) = match current.take() {
            Some(c) if rng.below(3) == 0 => c,
            _ => {
                let i = rng.below(inputs.len());
                (i, inputs[i].1.clone())
            }
        };
        let input = mutate(&mut rng, &base);
        let origin = format!("mutation {n} (seed {seed:#x}) of {}", inputs[from].0);
        run_one(target, body, &origin, &input)?;
        current = Some((from, input));
    }
    Ok(inputs.len() + mutations)
}
