//! Allocator figures from jemalloc (cargo feature `jemalloc`).
//!
//! The figures describe the process's jemalloc, so they mean something only when the
//! program installs it as the global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: larder::Jemalloc = larder::Jemalloc;
//! ```

pub use tikv_jemallocator::Jemalloc;

use crate::info::AllocatorInfo;

/// Reads jemalloc's statistics (after advancing its epoch so they are current).
pub(crate) fn allocator_info(used_memory: u64) -> Option<AllocatorInfo> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()? as u64;
    let active = stats::active::read().ok()? as u64;
    let resident = stats::resident::read().ok()? as u64;
    let rss = process_rss().unwrap_or(resident);
    Some(AllocatorInfo {
        allocated,
        active,
        resident,
        rss,
        allocator_frag_ratio: ratio(active, allocated),
        mem_fragmentation_ratio: ratio(rss, used_memory),
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The process's resident set size from `/proc/self/statm` (Linux).
fn process_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Asks jemalloc to return unused dirty pages of every arena to the OS (Redis's
/// `MEMORY PURGE`). Returns whether jemalloc accepted the request.
pub fn memory_purge() -> bool {
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    let name = b"arena.4096.purge\0";
    // SAFETY: `name` is NUL-terminated; "arena.<i>.purge" takes neither an old nor a
    // new value, so null pointers and zero lengths are what jemalloc expects.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc == 0
}
