// The tests of `inner_layouts`, included by one test binary per wrapped
// allocator (`inner_layouts.rs`, `inner_layouts_jemalloc.rs`, `inner_layouts_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use leakscope::{Mode, Profiler};

use common::Rng;

const SLOTS: usize = 1 << 17;

/// The wrapped allocator, plus a record of every live block's layout.
struct CheckingAlloc {
    table: Mutex<[(usize, usize, usize); SLOTS]>,
}

static MISMATCHES: AtomicUsize = AtomicUsize::new(0);

impl CheckingAlloc {
    fn slot(ptr: usize) -> usize {
        (ptr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 47) & (SLOTS - 1)
    }

    fn insert(&self, ptr: *mut u8, layout: Layout) {
        if ptr.is_null() {
            return;
        }
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = Self::slot(ptr as usize);
        while t[i].0 != 0 {
            i = (i + 1) & (SLOTS - 1);
        }
        t[i] = (ptr as usize, layout.size(), layout.align());
    }

    fn remove(&self, ptr: *mut u8, layout: Layout) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = Self::slot(ptr as usize);
        loop {
            if t[i].0 == 0 {
                MISMATCHES.fetch_add(1, Ordering::Relaxed); // never handed out
                return;
            }
            if t[i].0 == ptr as usize {
                break;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        if (t[i].1, t[i].2) != (layout.size(), layout.align()) {
            MISMATCHES.fetch_add(1, Ordering::Relaxed);
        }
        // Backward-shift delete.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & (SLOTS - 1);
            if t[j].0 == 0 {
                break;
            }
            let home = Self::slot(t[j].0);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                t[hole] = t[j];
                hole = j;
            }
        }
        t[hole] = (0, 0, 0);
    }
}

// SAFETY: forwards to INNER; the bookkeeping never touches the blocks.
unsafe impl GlobalAlloc for CheckingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { INNER.alloc(layout) };
        self.insert(p, layout);
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let p = unsafe { INNER.alloc_zeroed(layout) };
        self.insert(p, layout);
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.remove(ptr, layout);
        // SAFETY: forwarded.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.remove(ptr, layout);
        // SAFETY: forwarded.
        let p = unsafe { INNER.realloc(ptr, layout, new_size) };
        if p.is_null() {
            self.insert(ptr, layout);
        } else {
            // SAFETY: realloc's contract makes this a valid layout.
            self.insert(p, unsafe {
                Layout::from_size_align_unchecked(new_size, layout.align())
            });
        }
        p
    }
}

#[global_allocator]
static ALLOC: Profiler<CheckingAlloc> = Profiler::wrap(CheckingAlloc {
    table: Mutex::new([(0, 0, 0); SLOTS]),
})
.with_mode(Mode::Sampled)
.with_rate(512);

#[test]
fn every_call_returns_the_layout_it_was_given() {
    let mut rng = Rng(12345);
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut most_tracked = 0;
    for step in 0..60_000 {
        if step % 1000 == 0 {
            most_tracked = most_tracked.max(leakscope::stats().tracked_blocks);
        }
        match rng.below(6) {
            0 | 1 if live.len() < 2000 => {
                let size = 1 + rng.below(3000) as usize;
                live.push(black_box(Vec::with_capacity(size)));
            }
            2 if live.len() < 2000 => {
                let size = 1 + rng.below(200_000) as usize;
                let v = black_box(vec![0u8; size]);
                assert!(
                    v.iter().step_by(4096).all(|&b| b == 0),
                    "zeroed block not zero"
                );
                live.push(v);
            }
            3 if !live.is_empty() => {
                // Grow or shrink across the always-checked size.
                let i = rng.below(live.len() as u64) as usize;
                let target = 1 + rng.below(150_000) as usize;
                let v = &mut live[i];
                if target > v.capacity() {
                    v.reserve_exact(target - v.len());
                } else {
                    v.truncate(target.min(v.len()));
                    v.shrink_to(target);
                }
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live.swap_remove(i);
            }
            _ => {}
        }
    }
    drop(live);
    assert_eq!(
        MISMATCHES.load(Ordering::Relaxed),
        0,
        "the inner allocator saw a wrong layout, or a block it never handed out"
    );
    assert!(
        most_tracked > 1000,
        "too few sampled blocks to mean anything ({most_tracked})"
    );
}
