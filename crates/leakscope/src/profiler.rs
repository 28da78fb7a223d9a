//! The global-allocator front end.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::collect::{self, Plan};
use crate::config::{Mode, Settings};

/// A global allocator that profiles the allocator it wraps.
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: leakscope::Profiler = leakscope::Profiler::new();
/// ```
///
/// The mode is chosen at the first allocation: [`Profiler::with_mode`] if the
/// code forces one, else `LEAKSCOPE_MODE` (`off`, `sampled`, `full`), else
/// [`Profiler::with_default_mode`]'s value, else `sampled`. The same order
/// applies to the sampling rate (`LEAKSCOPE_RATE`, mean bytes between
/// samples, 512 KiB by default). `LEAKSCOPE_OUT=path` (`%p` is the pid)
/// writes a pprof heap profile when the process exits normally.
///
/// Sampled blocks are allocated from the inner allocator with 256-byte
/// alignment (see [`crate::frontend::SAMPLED_ALIGN`]); every other call
/// reaches the inner allocator unchanged.
pub struct Profiler<A: GlobalAlloc = System> {
    inner: A,
    settings: Settings,
}

impl Profiler<System> {
    /// Profiles the system allocator.
    pub const fn new() -> Self {
        let mut p = Profiler::wrap(System);
        p.settings.heap = crate::config::HeapKind::System;
        p
    }
}

impl Default for Profiler<System> {
    fn default() -> Self {
        Profiler::new()
    }
}

impl<A: GlobalAlloc> Profiler<A> {
    /// Profiles `inner` (jemalloc, mimalloc, ...).
    pub const fn wrap(inner: A) -> Self {
        let mut settings = Settings::new();
        settings.on_init = Some(crate::export::at_exit::install);
        Profiler { inner, settings }
    }

    /// Forces the mode, whatever `LEAKSCOPE_MODE` says.
    pub const fn with_mode(mut self, mode: Mode) -> Self {
        self.settings.forced_mode = Some(mode);
        self
    }

    /// The mode used when `LEAKSCOPE_MODE` is unset.
    pub const fn with_default_mode(mut self, mode: Mode) -> Self {
        self.settings.default_mode = mode;
        self
    }

    /// Forces the sampling rate (mean bytes between samples).
    pub const fn with_rate(mut self, bytes: u64) -> Self {
        self.settings.forced_rate = Some(bytes);
        self
    }

    /// Fixes the seed of the samplers' random streams (the k-th thread to
    /// allocate gets the k-th stream), for reproducible sampling in tests.
    /// `LEAKSCOPE_SEED` does the same from the environment.
    pub const fn with_seed(mut self, seed: u64) -> Self {
        self.settings.forced_seed = Some(seed);
        self
    }

    /// The rate used when `LEAKSCOPE_RATE` is unset.
    pub const fn with_default_rate(mut self, bytes: u64) -> Self {
        self.settings.default_rate = bytes;
        self
    }

    /// The allocation slow path: the countdown ran out, so ask the sampler
    /// (or the mode) what to do.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `zeroed` selects `alloc_zeroed`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let plan = collect::plan_slow(layout.size(), &self.settings);
        // SAFETY: forwarded from our caller's contract.
        unsafe { self.alloc_planned(layout, plan, zeroed) }
    }

    /// Allocates a block as `plan` says, recording it if tracked.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `zeroed` selects `alloc_zeroed`.
    unsafe fn alloc_planned(&self, layout: Layout, plan: Plan, zeroed: bool) -> *mut u8 {
        if plan == Plan::Untracked {
            // SAFETY: forwarded from our caller's contract.
            return unsafe {
                if zeroed {
                    self.inner.alloc_zeroed(layout)
                } else {
                    self.inner.alloc(layout)
                }
            };
        }
        let actual = if plan == Plan::Sampled {
            collect::sampled_layout(layout)
        } else {
            layout
        };
        // SAFETY: `actual` has the caller's size and an alignment at least as
        // large, so it is a valid non-zero-size layout.
        let ptr = unsafe {
            if zeroed {
                self.inner.alloc_zeroed(actual)
            } else {
                self.inner.alloc(actual)
            }
        };
        if ptr.is_null() || collect::record_alloc(ptr, layout.size(), plan) {
            return ptr;
        }
        // The sample could not be recorded, so nothing would remember its
        // alignment at free time: trade it for a block allocated as asked.
        // SAFETY: `ptr` came from `inner` with `actual`; the replacement uses
        // the caller's own layout.
        unsafe {
            self.inner.dealloc(ptr, actual);
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// Frees a block the profiler may have recorded.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_checked(&self, ptr: *mut u8, layout: Layout) {
        let block = collect::untrack(ptr);
        let actual = match block {
            Some(b) if b.was_sampled() => collect::sampled_layout(layout),
            _ => layout,
        };
        // SAFETY: the block was allocated by `inner` with `actual`.
        unsafe { self.inner.dealloc(ptr, actual) }
    }
}

// SAFETY: blocks come from the inner allocator with the caller's layout, or,
// for sampled blocks, the same size with a larger alignment (which satisfies
// the caller's); every free and realloc hands the inner allocator the layout
// the block was really allocated with (recorded as the entry's `sampled`
// flag). Frees are reported before the inner free, so an address is never
// recorded for two blocks at once.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiler<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if collect::count_down(layout.size()) {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.inner.alloc(layout) }
        } else {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.alloc_slow(layout, false) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if collect::count_down(layout.size()) {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.inner.alloc_zeroed(layout) }
        } else {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.alloc_slow(layout, true) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if collect::may_be_tracked(ptr, layout.size()) {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.dealloc_checked(ptr, layout) }
        } else {
            // SAFETY: forwarded from our caller's contract; a small block
            // whose address has low bits set was never allocated with the
            // sampled layout.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = if collect::may_be_tracked(ptr, layout.size()) {
            collect::untrack(ptr)
        } else {
            None
        };
        let old_sampled = old.is_some_and(|b| b.was_sampled());
        let plan = collect::plan_alloc(new_size, &self.settings);
        if plan != Plan::Sampled && !old_sampled {
            // SAFETY: forwarded from our caller's contract.
            let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
            if new.is_null() {
                collect::restore_after_failed_realloc(ptr, old);
            } else if plan == Plan::Exact {
                collect::record_alloc(new, new_size, plan);
            }
            return new;
        }
        // One side has the sampled alignment, which the inner realloc would
        // not preserve or expect: move the block by hand.
        // SAFETY: GlobalAlloc::realloc guarantees `new_size` with the old
        // alignment forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is valid and non-zero-size (realloc contract).
        let new = unsafe { self.alloc_planned(new_layout, plan, false) };
        if new.is_null() {
            collect::restore_after_failed_realloc(ptr, old);
            return new;
        }
        let old_layout = if old_sampled {
            collect::sampled_layout(layout)
        } else {
            layout
        };
        // SAFETY: both blocks are live and distinct; the copy covers the
        // smaller of the two sizes; the old block goes back to `inner` with
        // the layout it was allocated with.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.inner.dealloc(ptr, old_layout);
        }
        new
    }
}
