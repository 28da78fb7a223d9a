//! The global-allocator front end.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::collect;
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
pub struct Profiler<A: GlobalAlloc = System> {
    inner: A,
    settings: Settings,
}

impl Profiler<System> {
    /// Profiles the system allocator.
    pub const fn new() -> Self {
        Profiler::wrap(System)
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
}

// SAFETY: every method forwards to the inner allocator with the caller's
// arguments unchanged and returns its result unchanged; the profiler only
// observes addresses and sizes. Frees are reported before the inner free, so
// an address is never recorded for two blocks at once.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiler<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller's contract.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            collect::on_alloc(ptr, layout.size(), &self.settings);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from our caller's contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            collect::on_alloc(ptr, layout.size(), &self.settings);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        collect::on_free(ptr);
        // SAFETY: forwarded from our caller's contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = collect::take_for_realloc(ptr);
        // SAFETY: forwarded from our caller's contract.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if new.is_null() {
            collect::restore_after_failed_realloc(ptr, old);
        } else {
            collect::on_alloc(new, new_size, &self.settings);
        }
        new
    }
}
