//! N alloc + free pairs of 64 bytes through one allocator configuration, for
//! counting instructions with callgrind (`--toggle-collect=*measured_pairs*`):
//! `hot-path-pairs system|off|sampled|full [N]`. Deterministic, so it shows
//! the instructions leakscope adds per allocation exactly, free of timing
//! noise.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use leakscope::{Mode, Profiler};

static PROFILER: Profiler = Profiler::new().with_mode(Mode::Off);

/// Allocates into a ring of 64 live blocks, freeing the oldest each time, so
/// that addresses vary as in a real program (a bare alloc/free loop gets the
/// same address back every time).
#[inline(never)]
fn measured_pairs<A: GlobalAlloc>(a: &A, n: usize) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut ring = [std::ptr::null_mut::<u8>(); 64];
    for i in 0..n + ring.len() {
        let slot = &mut ring[i % 64];
        // SAFETY: non-zero layout; every block is freed once, with the same
        // layout, when its slot comes round again (or at the end).
        unsafe {
            if !slot.is_null() {
                a.dealloc(*slot, layout);
                *slot = std::ptr::null_mut();
            }
            if i < n {
                *slot = black_box(a.alloc(layout));
            }
        }
    }
}

fn main() {
    let config = std::env::args().nth(1).unwrap_or_else(|| "system".into());
    let n = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // Initialise the profiler, then pick the mode.
    measured_pairs(&PROFILER, 0);
    // SAFETY: one allocation to initialise; freed at once.
    unsafe {
        let l = Layout::new::<u64>();
        PROFILER.dealloc(PROFILER.alloc(l), l);
    }
    match config.as_str() {
        "system" => measured_pairs(&System, n),
        "off" => measured_pairs(&PROFILER, n),
        "sampled" => {
            leakscope::set_mode(Mode::Sampled);
            measured_pairs(&PROFILER, n)
        }
        "full" => {
            leakscope::set_mode(Mode::Full);
            measured_pairs(&PROFILER, n)
        }
        other => {
            eprintln!("hot-path-pairs: unknown configuration {other}");
            std::process::exit(2);
        }
    }
}
