//! Per-thread state of the profiler, in one `const`-initialised thread-local
//! with no destructor: reading it never allocates, never registers a TLS
//! destructor, and stays valid while a thread is exiting (allocations made by
//! other TLS destructors still reach us).

use std::cell::Cell;

pub(crate) struct ThreadState {
    /// Set while this thread runs profiler code; allocations made meanwhile
    /// (by libc or by symbolisation) pass through untracked.
    pub(crate) in_profiler: Cell<bool>,
    /// Set while a front end's allocation slow path runs (see
    /// [`AllocSlowPath`]).
    pub(crate) in_alloc_slow_path: Cell<bool>,
    /// The frame record of the front end's slow-path function while one
    /// runs (0 otherwise): stacks are walked from there, so the profiler's
    /// own frames are neither walked nor interned.
    pub(crate) user_frame: Cell<usize>,
    /// Depth of [`UntrackedScope`]s: profiler API calls (building a profile,
    /// symbolising) whose own allocations must not show up in profiles.
    pub(crate) untracked_depth: Cell<u32>,
    /// Bytes left until the next sample point of this thread's Poisson
    /// process; negative sends the next allocation to the slow path. Starts
    /// at -1, so the first allocation (even of 0 bytes) learns the mode there
    /// and draws the first gap. Full mode keeps it at -1.
    pub(crate) bytes_until_sample: Cell<i64>,
    /// xorshift state of this thread's sampler; 0 until first use.
    pub(crate) rng: Cell<u64>,
    /// Bounds of this thread's stack, `[stack_low, stack_high)`; 0 until first
    /// looked up, `usize::MAX` in `stack_high` when they are unknown.
    pub(crate) stack_low: Cell<usize>,
    pub(crate) stack_high: Cell<usize>,
    /// Interned label set of this thread's allocations (see `labels`); 0 is
    /// none.
    pub(crate) labels: Cell<u32>,
    /// Address of the frame record where this thread's frame-pointer chain is
    /// known to end (see `backtrace::capture`); 0 if not learnt.
    pub(crate) fp_outer_edge: Cell<usize>,
    /// This thread's block of allocation counters (see `thread_counters`).
    pub(crate) counter_block: Cell<*mut super::thread_counters::Block>,
    /// Set once the block was handed back at thread exit.
    pub(crate) counters_released: Cell<bool>,
    /// Where the counts of this thread's latest sites are.
    pub(crate) counts_cache: super::thread_counters::CountsCache,
    /// A measuring scope (`leakscope::testing`) is open on this thread: in
    /// full mode its allocations add to `scope_net` and its frees take away.
    pub(crate) scope_active: Cell<bool>,
    pub(crate) scope_net: Cell<i64>,
    pub(crate) scope_peak: Cell<i64>,
    /// Sites this thread interned lately (see `StackTable::intern_recent`).
    pub(crate) recent_sites: super::stack_table::RecentSites,
}

impl ThreadState {
    pub(crate) const fn new() -> Self {
        ThreadState {
            in_profiler: Cell::new(false),
            in_alloc_slow_path: Cell::new(false),
            user_frame: Cell::new(0),
            untracked_depth: Cell::new(0),
            bytes_until_sample: Cell::new(-1),
            rng: Cell::new(0),
            stack_low: Cell::new(0),
            stack_high: Cell::new(0),
            labels: Cell::new(0),
            fp_outer_edge: Cell::new(0),
            counter_block: Cell::new(std::ptr::null_mut()),
            counters_released: Cell::new(false),
            counts_cache: super::thread_counters::CountsCache::new(),
            scope_active: Cell::new(false),
            scope_net: Cell::new(0),
            scope_peak: Cell::new(0),
            recent_sites: super::stack_table::RecentSites::new(),
        }
    }
}

// A destructor would make this thread-local lazily registered (and that
// registration allocates); keep it trivially droppable.
const _: () = assert!(!std::mem::needs_drop::<ThreadState>());

thread_local! {
    static THREAD: ThreadState = const { ThreadState::new() };
}

/// Runs `f` with this thread's state.
///
/// The thread-local is reached through a closure that only takes its
/// address, which the compiler always inlines into one thread-pointer
/// relative address; handing `f` itself to `LocalKey::with` let large
/// closures (the allocation plan, the record path) be compiled out of line
/// behind an indirect call to the key's accessor, about 40 instructions per
/// tracked allocation.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    let state: *const ThreadState = THREAD.with(|t| t as *const ThreadState);
    // SAFETY: `THREAD` is const-initialised and has no destructor, so the
    // calling thread's instance is valid for the whole life of the thread,
    // which outlasts this call; it is only ever shared as `&ThreadState`
    // (its fields are `Cell`s, used by this thread alone).
    f(unsafe { &*state })
}

/// Marks this thread as inside the profiler for as long as it lives.
///
/// `enter` refuses (returns `None`) when the thread is already inside, which
/// is how re-entry is detected: an allocation made by code the profiler calls
/// (libc's `pthread_getattr_np`, the symboliser) must not be profiled, and a
/// signal handler that allocates while we hold a lock must not take it again.
pub(crate) struct ReentryGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ReentryGuard {
    #[inline]
    pub(crate) fn enter() -> Option<ReentryGuard> {
        Self::enter_if(|t| !t.in_profiler.get())
    }

    #[inline]
    fn enter_if(allowed: impl FnOnce(&ThreadState) -> bool) -> Option<ReentryGuard> {
        with(|t| {
            if !allowed(t) {
                None
            } else {
                t.in_profiler.set(true);
                Some(ReentryGuard {
                    _not_send: std::marker::PhantomData,
                })
            }
        })
    }

    /// True if this thread is inside profiler code right now.
    #[cfg(test)]
    pub(crate) fn is_active() -> bool {
        with(|t| t.in_profiler.get())
    }
}

impl Drop for ReentryGuard {
    #[inline]
    fn drop(&mut self) {
        with(|t| t.in_profiler.set(false));
    }
}

/// Held by a front end for the whole of an allocation's slow path (plan,
/// the inner allocator's call, record). `enter` refuses when this thread is
/// already inside one: the allocation then comes from a signal handler that
/// interrupted the slow path (or from code the profiler calls), and must
/// take the plain path, the inner allocator as asked, untracked, touching
/// no sampler state, lock or libc function that the interrupted code may be
/// in the middle of. The fast path needs no such mark: a countdown
/// interrupted between its load and store only loses a few bytes of count.
pub struct AllocSlowPath {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl AllocSlowPath {
    /// Always inlined: the calling function's frame is where stacks
    /// captured meanwhile start, so it must be the front end's slow-path
    /// function itself, alive until the guard drops.
    #[inline(always)]
    pub fn enter() -> Option<AllocSlowPath> {
        let frame = super::backtrace::frame_pointer();
        with(|t| {
            if t.in_alloc_slow_path.replace(true) {
                None
            } else {
                t.user_frame.set(frame);
                Some(AllocSlowPath {
                    _not_send: std::marker::PhantomData,
                })
            }
        })
    }
}

impl Drop for AllocSlowPath {
    #[inline]
    fn drop(&mut self) {
        with(|t| {
            t.user_frame.set(0);
            t.in_alloc_slow_path.set(false)
        });
    }
}

/// While alive, allocations of this thread are not tracked (frees still
/// are). Profiler API calls hold one, so the memory they use to build and
/// symbolise a profile stays out of the profile.
pub struct UntrackedScope {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl UntrackedScope {
    pub fn enter() -> Self {
        with(|t| t.untracked_depth.set(t.untracked_depth.get() + 1));
        UntrackedScope {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for UntrackedScope {
    fn drop(&mut self) {
        with(|t| t.untracked_depth.set(t.untracked_depth.get() - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_refuses_reentry_until_dropped() {
        let outer = ReentryGuard::enter().expect("first entry");
        assert!(ReentryGuard::is_active());
        assert!(ReentryGuard::enter().is_none());
        drop(outer);
        assert!(!ReentryGuard::is_active());
        assert!(ReentryGuard::enter().is_some());
    }
}
