//! jemalloc's statistics (through `tikv-jemalloc-ctl`, the control crate of
//! the jemalloc that `tikv-jemallocator` links), for breakdowns of a process
//! that wraps it.

use leakscope_profile::memory::{AllocatorHeap, JemallocStats};
use tikv_jemalloc_ctl::{epoch, raw, stats, version};

/// jemalloc's `MALLCTL_ARENAS_ALL`: the arena index that merges them all.
const ALL_ARENAS: &str = "4096";

/// Reads jemalloc's statistics, refreshed (`epoch`), as breakdown figures;
/// `None` if jemalloc does not answer (it is not linked in, or built
/// without statistics). Give it to [`crate::Profiler::with_allocator_stats`],
/// or use [`crate::Profiler::with_jemalloc_stats`].
pub fn stats() -> Option<AllocatorHeap> {
    epoch::advance().ok()?;
    let page = read_size(b"arenas.page\0")?;
    let pages = |what: &str| {
        let name = format!("stats.arenas.{ALL_ARENAS}.{what}\0");
        read_size(name.as_bytes()).map(|n| n.saturating_mul(page))
    };
    let figures = JemallocStats {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        mapped: stats::mapped::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
        dirty: pages("pdirty").unwrap_or(0),
        muzzy: pages("pmuzzy").unwrap_or(0),
    };
    let release = version::read().unwrap_or("(version unknown)");
    // "5.3.0-0-g54eaed1d8b56b1aa528be3bdd1877e59c56fa90c": the release.
    let release = release.split('-').next().unwrap_or(release);
    Some(AllocatorHeap::from_jemalloc(release, figures))
}

/// A `size_t` statistic by name (NUL-terminated).
fn read_size(name: &[u8]) -> Option<u64> {
    // SAFETY: every name read here is a `size_t` statistic in jemalloc 5
    // (`arenas.page`, `stats.arenas.<i>.pdirty`, `.pmuzzy`), so reading it
    // as `usize` matches its type; an unknown name is an error, not a read.
    unsafe { raw::read::<usize>(name) }.ok().map(|v| v as u64)
}
