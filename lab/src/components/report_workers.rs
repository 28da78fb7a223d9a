//! Report builders: a fixed pool of worker threads that, in turn, build a
//! report from many 64 KiB parts, keep 16 parts spread evenly over it (the
//! report's index pages, the last one at its end) and free the rest. Each
//! report is a little larger than the last, and replaces the worker's
//! previous one. Nothing leaks (the live heap is 16 parts per worker), yet
//! RSS climbs: each worker allocates in its own glibc arena, and the kept
//! parts span the whole report, so the arena can give none of it back. The next, larger report
//! refills the holes and extends the arena. Arena fragmentation.
//!
//! The kept parts are chosen by position, not left to where glibc places a
//! small block (a summary allocated after the report landed in a freed
//! chunk of the same size, low in the arena, as often as at its top), so
//! RSS climbs at the same pace on every run.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Workers, each with its own arena.
const WORKERS: usize = 8;
/// How much larger each report is than the worker's previous one.
const GROWTH_PER_REPORT: usize = 1 << 20;
/// Pause between a worker's reports.
const PAUSE: Duration = Duration::from_millis(400);
/// A part: large enough that a report takes few allocations (built in a
/// millisecond, so a snapshot rarely finds one in flight), below glibc's
/// mmap threshold (128 KiB), so parts come from the arena.
const BLOCK: usize = 64 << 10;

/// Parts kept of each report, spread evenly over it.
const KEPT_PARTS: usize = 16;

/// The index of each worker's latest report: all the service keeps.
static INDEXES: Mutex<Vec<Vec<Vec<u8>>>> = Mutex::new(Vec::new());
/// Reports are built one at a time, so the memory in flight at any moment
/// is one report, whatever the workers' timing.
static BUILDING: Mutex<()> = Mutex::new(());

/// Starts the workers (once).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        INDEXES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resize_with(WORKERS, Vec::new);
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
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let count = bytes / BLOCK;
    let parts: Vec<Vec<u8>> = (0..count).map(|i| vec![(i % 251) as u8; BLOCK]).collect();
    let stride = count.div_ceil(KEPT_PARTS);
    // A list of its own: collecting in place would keep the whole report's
    // list of parts, which grows with the report.
    let mut index = Vec::with_capacity(KEPT_PARTS + 1);
    index.extend(
        parts
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % stride == stride - 1 || i + 1 == count)
            .map(|(_, part)| part),
    );
    // The new index replaces the old one, whose parts the next report reuses.
    let old = std::mem::replace(
        &mut INDEXES.lock().unwrap_or_else(|e| e.into_inner())[worker],
        index,
    );
    drop(old);
}
