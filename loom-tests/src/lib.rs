//! loom models of larder's concurrent parts, in `tests/models.rs`.
//!
//! Run them exhaustively (bounded preemptions) with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     CARGO_TARGET_DIR=target/loom cargo test -p larder-loom-tests --release
//! ```
//!
//! Without `--cfg loom` the same models run once each on std threads, as plain tests.
//!
//! The append log's models are in larder-persistence (`persistence/src/log/models.rs`),
//! next to the crate-private types they drive; `.ci/run` runs both.

/// Runs `f` as a loom model under `--cfg loom`, or once on std threads otherwise.
pub fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    #[cfg(loom)]
    loom::model(f);
    #[cfg(not(loom))]
    f();
}

/// Threads: loom's under `--cfg loom`, std's otherwise.
pub mod thread {
    #[cfg(loom)]
    pub use loom::thread::spawn;
    #[cfg(not(loom))]
    pub use std::thread::spawn;
}

/// Sync types: loom's under `--cfg loom`, std's otherwise.
pub mod sync {
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicUsize, Ordering};
    pub use std::sync::Arc;
}
