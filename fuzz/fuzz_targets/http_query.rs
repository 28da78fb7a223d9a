#![no_main]

#[path = "../exercise.rs"]
mod exercise;
#[allow(dead_code)]
#[path = "../../crates/leakscope/src/http/query.rs"]
mod query;

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise::query(
    data,
    query::parse_heap,
    query::parse_format
));
