//! The workload under leakscope wrapping jemalloc (`Profiler::wrap`);
//! LEAKSCOPE_MODE picks off, sampled or full.

#[global_allocator]
static ALLOC: leakscope::Profiler<tikv_jemallocator::Jemalloc> =
    leakscope::Profiler::wrap(tikv_jemallocator::Jemalloc);

fn main() {
    let name = format!("jemalloc+{}", leakscope_bench::leakscope_config());
    leakscope_bench::run_and_report(&name, leakscope_bench::leakscope_extra);
}
