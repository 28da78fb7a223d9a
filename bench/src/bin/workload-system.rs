//! The workload on the system allocator alone (also the binary heaptrack runs).
fn main() {
    leakscope_bench::run_and_report("system", String::new);
}
