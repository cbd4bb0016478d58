//! `larder-check`: verifies a larder data directory (placeholder, filled in next).
fn main() {}
