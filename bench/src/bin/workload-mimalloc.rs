//! The workload on mimalloc alone.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    leakscope_bench::run_and_report("mimalloc", String::new);
}
