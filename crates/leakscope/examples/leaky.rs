//! A small program that leaks on purpose: a "request cache" that keeps every
//! request body it sees, next to request handling that frees its memory.
//! Run it with `LEAKSCOPE_OUT=heap.pb.gz` to get a heap profile at exit.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

static CACHE: Mutex<Option<HashMap<u64, Vec<u8>>>> = Mutex::new(None);

#[inline(never)]
fn decode_request(id: u64) -> Vec<u8> {
    vec![(id % 251) as u8; 4096 + (id as usize % 512)]
}

#[inline(never)]
fn remember_request(id: u64, body: Vec<u8>) {
    CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(id, body);
}

#[inline(never)]
fn handle_request(id: u64) {
    let body = decode_request(id);
    let reply: Vec<u8> = body.iter().map(|b| b.wrapping_add(1)).collect();
    black_box(&reply);
    if id % 4 == 0 {
        remember_request(id, body);
    }
}

fn main() {
    let requests: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    for id in 0..requests {
        handle_request(id);
    }
    let stats = leakscope::stats();
    eprintln!(
        "leaky: {requests} requests handled; leakscope mode {}, {} blocks tracked",
        leakscope::mode().as_str(),
        stats.tracked_blocks
    );
}
