//! The workload under leakscope wrapping the system allocator (glibc);
//! LEAKSCOPE_MODE picks off, sampled or full. With `BENCH_LIVE_BLOCKS=N` it
//! also reports the profiler's memory per tracked block.

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

fn main() {
    let name = leakscope_bench::leakscope_config();
    leakscope_bench::run_and_report(&name, leakscope_bench::leakscope_extra);
}
