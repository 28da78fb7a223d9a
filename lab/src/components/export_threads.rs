//! Exports on a thread of their own: now and then a request starts a thread
//! that formats an export (on its stack) and then waits for the export
//! service to take it, which never happens. The threads are never joined:
//! their stacks accumulate outside the heap while the heap barely grows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one export thread per this many milliseconds.
const EVERY_MS: u64 = 25;
/// Stack the export's formatting uses.
const FORMAT_BYTES: usize = 256 << 10;

static LAST_MS: AtomicU64 = AtomicU64::new(0);

/// Starts an export thread if none started within the last interval.
pub fn maybe_export(id: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_MS.load(Ordering::Relaxed);
    if now < last + EVERY_MS
        || LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("export".into())
        .spawn(move || export(id));
}

#[inline(never)]
fn export(id: u64) {
    let mut formatted = [0u8; FORMAT_BYTES];
    for (i, b) in formatted.iter_mut().enumerate() {
        *b = (id as usize + i) as u8;
    }
    std::hint::black_box(&formatted);
    // Waits for a taker that never comes (its sender is dropped nowhere:
    // kept in the thread itself).
    let (tx, rx) = mpsc::channel::<()>();
    let _keep = tx;
    let _ = rx.recv();
}
