//! The allocation-heavy workload every allocator configuration runs, and the
//! one-line JSON report each run prints for `bench/run.sh`.
//!
//! The workload imitates request handling in a service: each request
//! allocates a body, a header map of small strings, a response built by
//! pushes (reallocations), a batch of small boxed objects, and sometimes a
//! large buffer; a bounded per-thread cache keeps recent bodies alive, so the
//! heap has a steady live set as well as churn.

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::Instant;

/// Threads and requests, from `BENCH_THREADS` / `BENCH_REQUESTS` (per thread),
/// and which workload, from `BENCH_WORKLOAD`: `requests` (default, the
/// request-handling imitation) or `mixed` (bare allocation churn of mixed
/// sizes over a live working set; a request is then one free + allocation).
pub struct Config {
    pub threads: usize,
    pub requests_per_thread: usize,
    pub mixed: bool,
}

impl Config {
    pub fn from_env() -> Self {
        let get = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Config {
            threads: get("BENCH_THREADS", 4),
            requests_per_thread: get("BENCH_REQUESTS", 200_000),
            mixed: std::env::var("BENCH_WORKLOAD").is_ok_and(|w| w == "mixed"),
        }
    }
}

#[inline(never)]
fn handle_request(i: usize, seed: &mut u64, cache: &mut VecDeque<Vec<u8>>) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let body = vec![(i % 251) as u8; 256 + (*seed % 4096) as usize];
    let mut headers: HashMap<String, String> = HashMap::with_capacity(8);
    for h in 0..8 {
        headers.insert(format!("x-header-{h}"), format!("value-{i}-{h}"));
    }
    let mut response = Vec::new();
    for chunk in body.chunks(64) {
        response.extend_from_slice(chunk);
        response.push(b'\n');
    }
    let items: Vec<Box<[u64; 4]>> = (0..16).map(|k| Box::new([k; 4])).collect();
    if i % 97 == 0 {
        black_box(vec![0u8; 256 * 1024]);
    }
    cache.push_back(body);
    if cache.len() > 2000 {
        cache.pop_front();
    }
    black_box(&headers);
    black_box(&items);
    response.len()
}

/// Runs one thread's requests; returns its cache so that the live set is
/// still held when the report reads the profiler's figures.
fn worker(thread: usize, requests: usize, mixed: bool) -> (usize, VecDeque<Vec<u8>>) {
    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (thread as u64 + 1);
    if mixed {
        return mixed_churn(&mut seed, requests);
    }
    let mut cache = VecDeque::new();
    let total = (0..requests)
        .map(|i| handle_request(i, &mut seed, &mut cache))
        .sum();
    (total, cache)
}

/// Live blocks each `mixed` thread keeps (its working set: about 10 MiB).
const MIXED_LIVE: usize = 1024;

/// Allocation churn of mixed sizes, as an allocator benchmark sees it: each
/// step frees a random block of the working set and allocates a new one,
/// 16 B to 256 KiB with sizes spread evenly over powers of two (so most
/// blocks are small, as in real programs), and writes its first and last
/// byte. Nothing else happens between allocations.
fn mixed_churn(seed: &mut u64, steps: usize) -> (usize, VecDeque<Vec<u8>>) {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let mut live: Vec<Vec<u8>> = (0..MIXED_LIVE).map(|_| Vec::new()).collect();
    let mut total = 0;
    for _ in 0..steps {
        let r = next();
        // 2^4 .. 2^18 bytes: a power of two, then a uniform size below the next.
        let log = 4 + (r % 14) as u32;
        let size = (1usize << log) + ((r >> 8) as usize & ((1 << log) - 1));
        let slot = (r >> 40) as usize % MIXED_LIVE;
        let mut block: Vec<u8> = Vec::with_capacity(size);
        // SAFETY: the capacity is at least `size`; u8 needs no initialisation
        // beyond what is written (the first and last byte).
        unsafe {
            block.as_mut_ptr().write(r as u8);
            block.as_mut_ptr().add(size - 1).write(1);
        }
        total += black_box(&block).capacity();
        live[slot] = block;
    }
    (total, live.into_iter().collect())
}

/// Peak resident set of this process, in KiB.
pub fn max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_maxrss
}

/// The configuration name of a leakscope binary: `leakscope-<mode>`, the
/// mode as `LEAKSCOPE_MODE` chose it (sampled by default).
pub fn leakscope_config() -> String {
    format!(
        "leakscope-{}",
        std::env::var("LEAKSCOPE_MODE").unwrap_or_else(|_| "sampled".into())
    )
}

/// What a leakscope binary adds to its report, read while the live set is
/// still held: tracked blocks, sites and the profiler's memory; in full mode
/// every allocation of the run, counted exactly; with `BENCH_LIVE_BLOCKS=N`,
/// the profiler's memory per tracked block with N more small blocks held.
pub fn leakscope_extra() -> String {
    let s = leakscope::stats();
    let mut extra = format!(
        "\"tracked_blocks\":{},\"sites\":{},\"profiler_bytes\":{}",
        s.tracked_blocks, s.sites, s.profiler_bytes
    );
    if leakscope::mode() == leakscope::Mode::Full {
        let allocations: f64 = leakscope::heap_profile()
            .sites()
            .iter()
            .map(|s| s.alloc_objects)
            .sum();
        extra += &format!(",\"allocations\":{allocations}");
    }
    if let Some(n) = std::env::var("BENCH_LIVE_BLOCKS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let blocks: Vec<Box<[u64; 4]>> =
            (0..n).map(|i| black_box(Box::new([i as u64; 4]))).collect();
        let after = leakscope::stats();
        extra += &format!(
            ",\"live_blocks\":{},\"bytes_per_tracked_block\":{:.2}",
            after.tracked_blocks,
            after.profiler_bytes as f64 / after.tracked_blocks as f64
        );
        drop(blocks);
    }
    extra
}

/// Runs the workload and prints one JSON line: the configuration's name,
/// wall time, peak RSS, and whatever `extra` adds (`"key":value` pairs).
pub fn run_and_report(name: &str, extra: impl FnOnce() -> String) {
    let cfg = Config::from_env();
    let start = Instant::now();
    let handles: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let n = cfg.requests_per_thread;
            let mixed = cfg.mixed;
            std::thread::spawn(move || worker(t, n, mixed))
        })
        .collect();
    let results: Vec<(usize, VecDeque<Vec<u8>>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = start.elapsed();
    black_box(results.iter().map(|r| r.0).sum::<usize>());
    let extra = extra();
    drop(results);
    println!(
        "{{\"config\":\"{name}\",\"workload\":\"{}\",\"threads\":{},\"requests\":{},\"wall_ms\":{:.3},\"max_rss_kib\":{}{}{}}}",
        if cfg.mixed { "mixed" } else { "requests" },
        cfg.threads,
        cfg.threads * cfg.requests_per_thread,
        wall.as_secs_f64() * 1e3,
        max_rss_kib(),
        if extra.is_empty() { "" } else { "," },
        extra
    );
}

/// Runs the lab's throughput measurement and prints
/// `{"config":..,"requests":..,"seconds":..,"requests_per_second":..}`.
pub fn lab_throughput(config: &str) {
    let seconds: f64 = env_or("BENCH_LAB_SECONDS", 5.0);
    let workers: usize = env_or("BENCH_LAB_WORKERS", 8);
    let threads: usize = env_or("BENCH_LAB_THREADS", 1);
    let start = std::time::Instant::now();
    let summary = leakscope_lab::throughput(
        std::time::Duration::from_secs_f64(seconds),
        workers,
        threads,
    )
    .expect("the lab runs");
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"config\":\"{config}\",\"requests\":{},\"errors\":{},\"seconds\":{elapsed:.3},\"requests_per_second\":{:.1}}}",
        summary.requests,
        summary.errors,
        summary.requests as f64 / elapsed
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident memory, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A snapshot's analysis phases as a JSON object of milliseconds, for the
/// benchmarks' one-line reports.
pub fn phases_json(snap: &leakscope::Snapshot) -> String {
    let timed: Vec<String> = snap
        .analysis_phases()
        .iter()
        .map(|(name, d)| format!("\"{name}\":{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    format!("{{{}}}", timed.join(","))
}
