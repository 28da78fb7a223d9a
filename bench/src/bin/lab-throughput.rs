//! The lab's request throughput (a real tonic service and client over
//! loopback, closed-loop load) under leakscope; LEAKSCOPE_MODE picks off,
//! sampled or full. `BENCH_LAB_SECONDS` (default 5) and `BENCH_LAB_WORKERS`
//! (default 8) set the run. Prints one JSON line.

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

fn main() {
    let name = leakscope_bench::leakscope_config();
    leakscope_bench::lab_throughput(&name);
}
