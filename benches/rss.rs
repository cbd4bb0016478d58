//! Resident set size of this process, for memory-per-entry measurements.

/// Current resident set size in bytes, from `VmRSS` in `/proc/self/status`; `None` where
/// procfs is unavailable (non-Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// Extracts `VmRSS` (reported in kB) from the text of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_text() {
        let text = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(text), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn grows_when_memory_is_touched() {
        let Some(before) = resident_bytes() else {
            return; // not Linux
        };
        let v = vec![1u8; 16 << 20];
        let after = resident_bytes().unwrap();
        assert!(after > before, "{before} -> {after}");
        drop(v);
    }
}
