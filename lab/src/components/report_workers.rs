//! Report builders: a fixed pool of worker threads that, in turn, build a
//! report from many short-lived 4 KiB blocks, keep only a small summary of
//! it, and free the rest. Each report is a little larger than the last.
//! Nothing leaks (the live heap is a few summaries), yet RSS climbs: each
//! worker allocates in its own glibc arena, and the summary allocated after
//! each report sits at the top of the arena, above the freed report, so the
//! arena can never give that memory back. Arena fragmentation.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Workers, each with its own arena.
const WORKERS: usize = 8;
/// How much larger each report is than the worker's previous one.
const GROWTH_PER_REPORT: usize = 1 << 20;
/// Pause between a worker's reports.
const PAUSE: Duration = Duration::from_millis(400);
const BLOCK: usize = 4096;

/// The latest summary of each worker: all the service keeps.
static SUMMARIES: Mutex<Vec<Option<Box<[u8; 64]>>>> = Mutex::new(Vec::new());

/// Starts the workers (once).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        SUMMARIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resize_with(WORKERS, || None);
        for w in 0..WORKERS {
            let _ = std::thread::Builder::new()
                .name(format!("report-{w}"))
                .spawn(move || work(w));
        }
    });
}

fn work(worker: usize) {
    // Staggered, so that the workers' reports do not all coincide.
    std::thread::sleep(PAUSE / WORKERS as u32 * worker as u32);
    for report in 1.. {
        build_report(worker, report * GROWTH_PER_REPORT);
        std::thread::sleep(PAUSE);
    }
}

#[inline(never)]
fn build_report(worker: usize, bytes: usize) {
    let parts: Vec<Vec<u8>> = (0..bytes / BLOCK)
        .map(|i| vec![(i % 251) as u8; BLOCK])
        .collect();
    let mut summary = Box::new([0u8; 64]);
    for (i, p) in parts.iter().enumerate() {
        summary[i % 64] ^= p[0];
    }
    // The new summary replaces the old one, then the report is freed.
    let old = SUMMARIES.lock().unwrap_or_else(|e| e.into_inner())[worker].replace(summary);
    drop(old);
    drop(parts);
}
