//! Facts about the run that benches print with their figures (load, versions, the
//! commit) and small helpers the bench binaries share.

use std::process::Command;

/// The load averages (1, 5, 15 min) from /proc/loadavg, or "?".
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The installed redis-server's version (`redis-server 7.0.15`), or that it is missing.
pub fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|v| format!("redis-server {}", &v[2..]))
        })
        .unwrap_or_else(|| "redis-server not found".into())
}

/// The commit, and whether larder's sources differ from it.
pub fn git_head() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "?".into();
    };
    let root = git(&["rev-parse", "--show-toplevel"]).unwrap_or_else(|| ".".into());
    let dirty = git(&[
        "-C",
        &root,
        "status",
        "--porcelain",
        "--",
        "src",
        "cluster/src",
        "persistence/src",
    ])
    .unwrap_or_default();
    if dirty.is_empty() {
        head
    } else {
        let files: Vec<&str> = dirty.lines().map(|l| l[3..].trim()).collect();
        format!("{head} with uncommitted changes to {}", files.join(", "))
    }
}

/// A temporary directory named with `prefix`, removed when dropped.
pub fn tempdir(prefix: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))
}
