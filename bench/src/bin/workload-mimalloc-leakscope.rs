//! The workload under leakscope wrapping mimalloc (`Profiler::wrap`);
//! LEAKSCOPE_MODE picks off, sampled or full.

#[global_allocator]
static ALLOC: leakscope::Profiler<mimalloc::MiMalloc> =
    leakscope::Profiler::wrap(mimalloc::MiMalloc);

fn main() {
    let name = format!("mimalloc+{}", leakscope_bench::leakscope_config());
    leakscope_bench::run_and_report(&name, leakscope_bench::leakscope_extra);
}
