//! The global-allocator front end.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::collect::thread::AllocSlowPath;
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
/// Sampled blocks under 64 KiB come from leakscope's own sample heap (a
/// reserved address range, so that `free` knows them by address whatever
/// the inner allocator's size classes); every other call reaches the inner
/// allocator unchanged, with the caller's layout.
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
        settings.inner_type = Some(std::any::type_name::<A>);
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

    /// Reads the wrapped allocator's own statistics into every memory
    /// breakdown (periodic sets, snapshots, `/debug/leakscope/memory`):
    /// without them, what a non-glibc allocator keeps after frees cannot be
    /// told from other anonymous memory. `read` runs outside any allocator
    /// hook and may allocate; it returns `None` when it cannot read them.
    pub const fn with_allocator_stats(mut self, read: crate::memory::AllocatorStatsReader) -> Self {
        self.settings.allocator_stats = Some(read);
        self
    }

    /// [`Profiler::with_allocator_stats`] with jemalloc's reader
    /// ([`crate::memory::jemalloc_stats`]), for `Profiler::wrap(Jemalloc)`.
    #[cfg(feature = "jemalloc")]
    pub const fn with_jemalloc_stats(self) -> Self {
        self.with_allocator_stats(crate::memory::jemalloc_stats)
    }

    /// The allocation slow path: the countdown ran out, so ask the sampler
    /// (or the mode) what to do.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `zeroed` selects `alloc_zeroed`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let Some(_slow) = AllocSlowPath::enter() else {
            // A signal handler interrupted this thread's slow path: plain.
            // SAFETY: forwarded from our caller's contract.
            return unsafe { self.inner_alloc(layout, zeroed) };
        };
        let plan = collect::plan_slow(layout.size(), &self.settings);
        // SAFETY: forwarded from our caller's contract.
        unsafe { self.alloc_planned(layout, plan, zeroed) }
    }

    /// The inner allocator, as asked.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn inner_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded from our caller's contract.
        unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// Allocates a block as `plan` says, recording it if tracked.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`; `zeroed` selects `alloc_zeroed`.
    unsafe fn alloc_planned(&self, layout: Layout, plan: Plan, zeroed: bool) -> *mut u8 {
        if plan == Plan::Sampled && collect::sampled_from_heap(layout.size()) {
            let p = collect::alloc_sampled(layout.size(), layout.align());
            if !p.is_null() {
                if zeroed {
                    // SAFETY: the block has at least `layout.size()` bytes.
                    unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                }
                return p;
            }
            // No block of the sample heap: an untracked one, as asked.
            // SAFETY: forwarded from our caller's contract.
            return unsafe { self.inner_alloc(layout, zeroed) };
        }
        // SAFETY: forwarded from our caller's contract.
        let ptr = unsafe { self.inner_alloc(layout, zeroed) };
        if !ptr.is_null() {
            collect::record_alloc(ptr, layout.size(), plan);
        }
        ptr
    }

    /// Frees a block the profiler may have recorded.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_checked(&self, ptr: *mut u8, layout: Layout) {
        if collect::in_sample_heap(ptr) {
            // SAFETY: a live block of the sample heap, freed once.
            return unsafe { collect::free_sampled(ptr) };
        }
        if collect::may_be_tracked(ptr) {
            collect::untrack(ptr);
        }
        // SAFETY: the block was allocated by `inner` with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// Reallocates a block the profiler may have recorded, or whose new
    /// size is to be sampled.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_checked(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        counted_untracked: bool,
    ) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc guarantees `new_size` with the old
        // alignment forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let slow = AllocSlowPath::enter();
        let plan = if counted_untracked || slow.is_none() {
            Plan::Untracked
        } else {
            collect::plan_slow(new_size, &self.settings)
        };
        let in_heap = collect::in_sample_heap(ptr);
        if in_heap || (plan == Plan::Sampled && collect::sampled_from_heap(new_size)) {
            // One side lives in the sample heap: move by hand.
            // SAFETY: `new_layout` is valid and non-zero-size.
            let new = unsafe { self.alloc_planned(new_layout, plan, false) };
            if new.is_null() {
                return new;
            }
            // SAFETY: both blocks are live and distinct; the copy covers the
            // smaller of the two sizes; the old block goes back where it
            // came from, forgotten first.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            return new;
        }
        let old = if collect::needs_free_check(ptr, layout.size()) && collect::may_be_tracked(ptr) {
            collect::untrack(ptr)
        } else {
            None
        };
        // SAFETY: forwarded from our caller's contract.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if new.is_null() {
            collect::restore_after_failed_realloc(ptr, old);
        } else {
            collect::record_alloc(new, new_size, plan);
        }
        new
    }
}

// SAFETY: blocks come from the inner allocator with the caller's layout,
// or, for small sampled ones, from the sample heap (at least the size and
// alignment asked); every free and realloc hands a block back where it came
// from (the sample heap is told apart by address), and the inner allocator
// always sees the layout it handed out. Frees are reported before the inner
// free, so an address is never recorded for two blocks at once.
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
        if collect::needs_free_check(ptr, layout.size()) {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.dealloc_checked(ptr, layout) }
        } else {
            // SAFETY: forwarded from our caller's contract; the block is
            // not of the sample heap, so `inner` allocated it with `layout`.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let untracked = collect::count_down(new_size);
        if untracked && !collect::needs_free_check(ptr, layout.size()) {
            // Neither side is tracked: the inner allocator's own realloc.
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.inner.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: forwarded from our caller's contract.
            unsafe { self.realloc_checked(ptr, layout, new_size, untracked) }
        }
    }
}
