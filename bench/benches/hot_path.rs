//! The allocation hot path in isolation: one alloc + free pair through
//! `leakscope::Profiler` in each mode, next to the bare system allocator, for
//! a small and a medium size. The difference between `sampled` and `system`
//! is what leakscope adds to an allocation that is not sampled (one is
//! sampled per 512 KiB allocated, i.e. once per 8192 pairs of 64 bytes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use leakscope::{Mode, Profiler};

// Not the global allocator: only the calls below go through it, so the
// benchmark harness's own allocations do not disturb the measurement.
static PROFILER: Profiler = Profiler::new().with_mode(Mode::Off);

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: non-zero layout; the block is freed with the same layout.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        a.dealloc(p, layout);
    }
}

fn hot_path(c: &mut Criterion) {
    pair(&PROFILER, Layout::new::<u64>()); // initialise the profiler
    for size in [64usize, 4096] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let mut group = c.benchmark_group(format!("alloc_free_{size}"));
        group.bench_function("system", |b| b.iter(|| pair(&System, layout)));
        for (name, mode) in [
            ("leakscope_off", Mode::Off),
            ("leakscope_sampled", Mode::Sampled),
            ("leakscope_full", Mode::Full),
        ] {
            leakscope::set_mode(mode);
            group.bench_function(name, |b| b.iter(|| pair(&PROFILER, layout)));
        }
        leakscope::set_mode(Mode::Off);
        group.finish();
    }
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
