//! Snapshot pause and analysis time for a heap of a given size:
//! `snapshot-bench MIB BLOCK_BYTES`. Builds MIB MiB of live blocks of
//! BLOCK_BYTES each, every block holding a pointer to an earlier one (so the
//! graph has as many edges as blocks), takes three snapshots and prints one
//! JSON line with the best pause and analysis time.

use std::alloc::{alloc_zeroed, Layout};

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new().with_mode(leakscope::Mode::Full);

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let block: usize = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let n = (mib << 20) / block;
    let layout = Layout::from_size_align(block, 8).unwrap();
    let mut blocks: Vec<usize> = Vec::with_capacity(n);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..n {
        // SAFETY: non-zero layout; the blocks live until the process exits.
        let b = unsafe { alloc_zeroed(layout) } as *mut usize;
        assert!(!b.is_null());
        if i > 0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // SAFETY: `b` has room for at least one word.
            unsafe { *b = blocks[(seed % i as u64) as usize] };
        }
        blocks.push(b as usize);
    }
    let stats = leakscope::stats();
    let mut best_pause = f64::MAX;
    let mut best_analysis = f64::MAX;
    let mut live_bytes = 0;
    let mut phases = String::new();
    for _ in 0..3 {
        let snap = leakscope::snapshot().expect("snapshot");
        let analysis = snap.analysis_time().as_secs_f64() * 1e3;
        if analysis < best_analysis {
            // The phases of the best analysis, as a JSON object.
            let timed: Vec<String> = snap
                .analysis_phases()
                .iter()
                .map(|(name, d)| format!("\"{name}\":{:.1}", d.as_secs_f64() * 1e3))
                .collect();
            phases = format!("{{{}}}", timed.join(","));
        }
        best_pause = best_pause.min(snap.pause().as_secs_f64() * 1e3);
        best_analysis = best_analysis.min(analysis);
        live_bytes = snap.report().totals.live.bytes;
    }
    let rss = rss_bytes();
    println!(
        "{{\"heap_mib\":{mib},\"block_bytes\":{block},\"blocks\":{n},\"live_bytes\":{live_bytes},\"rss_bytes\":{rss},\"pause_ms\":{best_pause:.3},\"analysis_ms\":{best_analysis:.1},\"pause_ms_per_gib_rss\":{:.3},\"analysis_gib_per_s\":{:.3},\"profiler_bytes_per_block\":{:.1},\"phases_ms\":{phases}}}",
        best_pause / (rss as f64 / (1u64 << 30) as f64),
        (live_bytes as f64 / (1u64 << 30) as f64) / (best_analysis / 1e3),
        stats.profiler_bytes as f64 / stats.tracked_blocks as f64
    );
    std::hint::black_box(&blocks);
}
