//! The lab's request throughput on the system allocator alone (see
//! `lab-throughput.rs`).

fn main() {
    leakscope_bench::lab_throughput("system");
}
