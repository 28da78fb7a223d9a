//! The workload on jemalloc built with profiling support. Profiling is off
//! unless `_RJEM_MALLOC_CONF=prof:true,lg_prof_sample:19` turns it on
//! (2^19 = 512 KiB, leakscope's default rate).

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let name = match std::env::var("_RJEM_MALLOC_CONF") {
        Ok(conf) if conf.contains("prof:true") => "jemalloc-prof",
        _ => "jemalloc",
    };
    leakscope_bench::run_and_report(name, String::new);
}
