//! The workload under dhat-rs (heap profiling of every allocation).

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let out = std::env::temp_dir().join(format!("dhat-bench-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder().file_name(&out).build();
    leakscope_bench::run_and_report("dhat", String::new);
    drop(profiler);
    std::fs::remove_file(out).ok();
}
