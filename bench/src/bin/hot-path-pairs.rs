//! N alloc + free pairs of 64 bytes through one allocator configuration, for
//! counting instructions with callgrind (`--toggle-collect=*measured_pairs*`):
//! `hot-path-pairs [glibc|jemalloc|mimalloc] alone|off|sampled|full [N [SIZE]]`.
//! Deterministic, so it shows the instructions leakscope adds per
//! allocation exactly, free of timing noise. `glibc alone` calls C's
//! `malloc` and `free`, so under `LD_PRELOAD` it measures the preload's
//! hooks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use leakscope::{Mode, Profiler};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

static ON_GLIBC: Profiler = Profiler::new().with_mode(Mode::Off);
static ON_JEMALLOC: Profiler<Jemalloc> = Profiler::wrap(Jemalloc).with_mode(Mode::Off);
static ON_MIMALLOC: Profiler<MiMalloc> = Profiler::wrap(MiMalloc).with_mode(Mode::Off);

/// Allocates into a ring of 64 live blocks, freeing the oldest each time, so
/// that addresses vary as in a real program (a bare alloc/free loop gets the
/// same address back every time).
#[inline(never)]
fn measured_pairs<A: GlobalAlloc>(a: &A, n: usize, size: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
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

fn run<A: GlobalAlloc>(inner: &A, wrapped: &Profiler<A>, config: &str, n: usize, size: usize) {
    // Initialise the profiler (and the inner allocator), then pick the mode.
    measured_pairs(wrapped, 16, size);
    measured_pairs(inner, 16, size);
    match config {
        "alone" | "system" => measured_pairs(inner, n, size),
        "off" => measured_pairs(wrapped, n, size),
        "sampled" => {
            leakscope::set_mode(Mode::Sampled);
            measured_pairs(wrapped, n, size)
        }
        "full" => {
            leakscope::set_mode(Mode::Full);
            measured_pairs(wrapped, n, size)
        }
        other => {
            eprintln!("hot-path-pairs: unknown configuration {other}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let allocator = match args.first().map(String::as_str) {
        Some("glibc" | "jemalloc" | "mimalloc") => args.remove(0),
        _ => "glibc".to_string(),
    };
    let config = args.first().cloned().unwrap_or_else(|| "alone".into());
    let n = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let size = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(64);
    match allocator.as_str() {
        "jemalloc" => run(&Jemalloc, &ON_JEMALLOC, &config, n, size),
        "mimalloc" => run(&MiMalloc, &ON_MIMALLOC, &config, n, size),
        _ => run(&System, &ON_GLIBC, &config, n, size),
    }
}
