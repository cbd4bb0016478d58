//! Shared helpers for larder's benches: seeded key streams and measurement.
