//! loom models of larder's concurrent parts live in `tests/`; run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p larder-loom-tests --release`.
