//! The workload under leakscope; LEAKSCOPE_MODE picks off, sampled or full.
//! The tracked-block figures are read while the live set is still held.

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

fn main() {
    let name = format!(
        "leakscope-{}",
        std::env::var("LEAKSCOPE_MODE").unwrap_or_else(|_| "sampled".into())
    );
    leakscope_bench::run_and_report(&name, || {
        let s = leakscope::stats();
        format!(
            "\"tracked_blocks\":{},\"sites\":{},\"profiler_bytes\":{}",
            s.tracked_blocks, s.sites, s.profiler_bytes
        )
    });
}
