//! The workload under leakscope; LEAKSCOPE_MODE picks off, sampled or full.
//! The tracked-block figures are read while the live set is still held.
//! With `BENCH_LIVE_BLOCKS=N` it then also holds N more small blocks and
//! reports the profiler's memory per tracked block.

use std::hint::black_box;

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

fn main() {
    let name = leakscope_bench::leakscope_config();
    leakscope_bench::run_and_report(&name, || {
        let s = leakscope::stats();
        let mut extra = format!(
            "\"tracked_blocks\":{},\"sites\":{},\"profiler_bytes\":{}",
            s.tracked_blocks, s.sites, s.profiler_bytes
        );
        if leakscope::mode() == leakscope::Mode::Full {
            // Every allocation of the run, counted exactly.
            let allocations: f64 = leakscope::heap_profile()
                .sites()
                .iter()
                .map(|s| s.alloc_objects)
                .sum();
            extra += &format!(",\"allocations\":{allocations}");
        }
        if let Some(n) = std::env::var("BENCH_LIVE_BLOCKS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            let blocks: Vec<Box<[u64; 4]>> =
                (0..n).map(|i| black_box(Box::new([i as u64; 4]))).collect();
            let after = leakscope::stats();
            extra += &format!(
                ",\"live_blocks\":{},\"bytes_per_tracked_block\":{:.2}",
                after.tracked_blocks,
                after.profiler_bytes as f64 / after.tracked_blocks as f64
            );
            drop(blocks);
        }
        extra
    });
}
