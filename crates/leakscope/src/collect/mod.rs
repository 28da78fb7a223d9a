//! Collection: the part of leakscope that runs inside `malloc` and `free`.
//!
//! Every front end (the [`crate::Profiler`] global allocator; the `LD_PRELOAD`
//! library) reports events through a few calls: [`plan_alloc`] before an
//! allocation (what to do with it), [`record_alloc`] after a tracked one,
//! [`needs_free_check`] before a free or realloc, then [`free_sampled`] for
//! blocks of the sample heap and [`may_be_tracked`] / [`untrack`] for the
//! rest. The fast paths are a thread-local subtraction (alloc) and one
//! range test of the address plus a size test (free); anything more goes
//! through a `#[cold]` slow path that holds a [`thread::ReentryGuard`], so
//! allocations made by code the profiler calls are never profiled and never
//! recurse.
//!
//! ```text
//!   plan_alloc ──► countdown (per thread) ──► sampler / mode
//!                       │ Sampled: small blocks from sample_heap (alloc_sampled),
//!                       │ large ones from the inner allocator; Exact (full mode)
//!                       ▼
//!   record_alloc ──► backtrace::capture (frame pointers / libunwind)
//!                       ▼
//!                  stack_table::intern ──► SiteId; per-thread alloc counters
//!                       ▼
//!                  live_table::insert (address → size, site, flags)
//!   needs_free_check (address range, size) ──► sample heap: free_sampled
//!                                          └─► untrack ──► filter ──► live_table::remove
//! ```
//!
//! Nothing here allocates through the global allocator: tables live in
//! memory from `mmap` ([`raw_mem`]) and locks are [`spinlock::SpinLock`]s.

pub(crate) mod backtrace;
pub(crate) mod filter;
pub(crate) mod fork;
pub(crate) mod live_table;
pub(crate) mod raw_mem;
pub(crate) mod sample_heap;
pub(crate) mod sampler;
pub(crate) mod spinlock;
pub(crate) mod stack_table;
pub(crate) mod tables;
pub mod thread;
pub(crate) mod thread_counters;
pub(crate) mod unloaded;
pub(crate) mod unwind;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::config::{Mode, Settings};
use filter::FreeFilter;
use live_table::{LiveEntry, LiveTable};
use spinlock::SpinLock;
use stack_table::StackTable;
use thread::{ReentryGuard, ThreadState};

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const OFF: u8 = 2;
const SAMPLED: u8 = 3;
const FULL: u8 = 4;
/// The child of a snapshot fork: it must neither allocate nor free (another
/// thread may have held an allocator lock at the fork); any attempt aborts
/// it with a message instead of deadlocking.
const SNAPSHOT_CHILD: u8 = 5;

/// The profiling mode, or the initialisation state before it is known.
static MODE: AtomicU8 = AtomicU8::new(UNINIT);
/// Mean bytes between samples in sampled mode.
static RATE: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_RATE);
/// Blocks that could not be tracked because table memory was refused.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Units of work the application reported done (see [`add_progress`]).
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Reports `n` more units of work done (requests served, say). Profiles and
/// snapshots record the running total, so that growth can be measured per
/// request as well as per second.
pub fn add_progress(n: u64) {
    PROGRESS.fetch_add(n, Ordering::Relaxed);
}

/// The work reported so far with [`add_progress`].
pub fn progress() -> u64 {
    PROGRESS.load(Ordering::Relaxed)
}

pub(crate) static STACKS: StackTable = StackTable::new();
pub(crate) static LIVE: LiveTable = LiveTable::new();
pub(crate) static FILTER: FreeFilter = FreeFilter::new();
/// Serialises mode changes (and is held across fork).
static MODE_SWITCH: SpinLock<()> = SpinLock::new(());

fn encode(mode: Mode) -> u8 {
    match mode {
        Mode::Off => OFF,
        Mode::Sampled => SAMPLED,
        Mode::Full => FULL,
    }
}

/// The current mode (`Off` before the first allocation).
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        SAMPLED => Mode::Sampled,
        FULL | SNAPSHOT_CHILD => Mode::Full,
        _ => Mode::Off,
    }
}

/// The sampling rate in effect (mean bytes between samples).
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// How an allocation is to be made and recorded; see [`plan_alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not recorded: allocate as asked.
    Untracked,
    /// Recorded exactly (full mode): allocate as asked.
    Exact,
    /// Recorded as a sample: below [`ALWAYS_CHECKED_SIZE`], take the block
    /// from [`alloc_sampled`] (the sample heap, which is how `free`
    /// recognises it by address); larger ones come from the inner allocator
    /// as asked.
    Sampled,
}

/// Blocks of this size and more are always checked at free (the check is
/// nothing next to freeing them), and when sampled come from the inner
/// allocator with the caller's layout: the allocator's own way with large
/// blocks (and calloc's lazily zeroed fresh pages) stays.
pub const ALWAYS_CHECKED_SIZE: usize = sample_heap::MAX_SIZE;

/// The addresses whose frees must look further: `[start, start + len)`.
/// Nothing (0, 0) until the first sampled small block; then the sample
/// heap's range; everything (0, `usize::MAX`) once full mode has been on,
/// since full mode tracks blocks at any address. Written only under
/// `MODE_SWITCH`; both words on one cache line, read without ordering (a
/// reader that sees an old value checks more, never less: see
/// [`cover_sample_heap`] and [`set_mode`]).
#[repr(align(64))]
struct FreeCheck {
    start: AtomicUsize,
    len: AtomicUsize,
}

static FREE_CHECK: FreeCheck = FreeCheck {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};

/// Makes every free look (full mode tracks blocks at any address). Caller
/// holds `MODE_SWITCH` or is initialising.
fn check_every_free() {
    FREE_CHECK.start.store(0, Ordering::Release);
    FREE_CHECK.len.store(usize::MAX, Ordering::Release);
}

/// After the sample heap handed out its first block: frees in its range
/// must look. Done before the block is returned, so any thread that is
/// handed the block sees the range.
#[cold]
fn cover_sample_heap() {
    let Some((base, len)) = sample_heap::range() else {
        return;
    };
    let _switch = MODE_SWITCH.lock();
    if FREE_CHECK.len.load(Ordering::Relaxed) == 0 {
        FREE_CHECK.start.store(base, Ordering::Release);
        FREE_CHECK.len.store(len, Ordering::Release);
    }
}

/// Bytes an `off`-mode thread allocates between looks at the mode, so that a
/// switch with [`set_mode`] reaches threads that are not sampling.
const OFF_RECHECK_BYTES: i64 = 64 << 20;

/// Decides, before the inner allocator is called, what to do with an
/// allocation of `size` bytes. The fast path is one thread-local subtraction
/// and a branch: the sampler's countdown doubles as the mode check (full
/// mode keeps it negative; off mode sets it far ahead).
#[inline(always)]
pub fn plan_alloc(size: usize, settings: &Settings) -> Plan {
    if count_down(size) {
        Plan::Untracked
    } else {
        plan_slow(size, settings)
    }
}

/// The fast path of [`plan_alloc`] on its own: true means "untracked, no
/// more to do"; false means the caller must call [`plan_slow`]. Front ends
/// use the split to keep their fast path free of the slow path's registers.
#[inline(always)]
pub fn count_down(size: usize) -> bool {
    thread::with(|t| {
        let left = t.bytes_until_sample.get().wrapping_sub(size as i64);
        t.bytes_until_sample.set(left);
        left >= 0
    })
}

/// The slow path of [`plan_alloc`], after [`count_down`] returned false.
#[cold]
#[inline(never)]
pub fn plan_slow(size: usize, settings: &Settings) -> Plan {
    thread::with(|t| plan_on(t, size, settings, &t.bytes_until_sample))
}

/// [`plan_slow`] for a front end that keeps the thread's countdown itself
/// (the preload, in initial-exec TLS): `countdown` is this thread's, with
/// `size` already subtracted, and is re-armed here.
#[cold]
#[inline(never)]
pub fn plan_slow_on(size: usize, settings: &Settings, countdown: &Cell<i64>) -> Plan {
    thread::with(|t| plan_on(t, size, settings, countdown))
}

/// The plan, with this thread's state at hand. Full mode is decided first
/// and without further calls: every allocation of a self-check comes here.
#[inline(always)]
fn plan_on(t: &ThreadState, size: usize, settings: &Settings, countdown: &Cell<i64>) -> Plan {
    let may_track = !t.in_profiler.get() && t.untracked_depth.get() == 0;
    let mut mode = MODE.load(Ordering::Acquire);
    if mode == FULL {
        countdown.set(-1);
        return if may_track {
            Plan::Exact
        } else {
            Plan::Untracked
        };
    }
    if mode == UNINIT {
        initialize(settings);
        mode = MODE.load(Ordering::Acquire);
    }
    match mode {
        SAMPLED => {
            // Re-arm the countdown even when not tracking, or every later
            // allocation of this thread would come back here.
            let sampled = sampler::crossed(t, countdown, size, RATE.load(Ordering::Relaxed));
            if sampled && may_track {
                Plan::Sampled
            } else {
                Plan::Untracked
            }
        }
        FULL => {
            countdown.set(-1);
            if may_track {
                Plan::Exact
            } else {
                Plan::Untracked
            }
        }
        OFF => {
            countdown.set(OFF_RECHECK_BYTES);
            Plan::Untracked
        }
        SNAPSHOT_CHILD => die_in_snapshot_child("allocation"),
        // Another thread is initialising: stay on the slow path until it
        // is done, and leave this allocation untracked.
        _ => {
            countdown.set(-1);
            Plan::Untracked
        }
    }
}

/// Whether a [`Plan::Sampled`] block of `size` bytes comes from the sample
/// heap ([`alloc_sampled`]) rather than the inner allocator.
#[inline]
pub fn sampled_from_heap(size: usize) -> bool {
    size < ALWAYS_CHECKED_SIZE
}

/// A block of the sample heap for a [`Plan::Sampled`] allocation of `size`
/// (< [`ALWAYS_CHECKED_SIZE`]) bytes aligned to `align`, recorded; its
/// contents are unspecified. Null if none can be had (an alignment above 64
/// KiB, memory refused, or this thread is already inside the profiler): the
/// front end then allocates from the inner allocator, untracked.
#[inline(never)]
pub fn alloc_sampled(size: usize, align: usize) -> *mut u8 {
    let Some(_guard) = ReentryGuard::enter() else {
        return std::ptr::null_mut();
    };
    let p = sample_heap::alloc(size, align);
    if p.is_null() {
        return p;
    }
    if FREE_CHECK.len.load(Ordering::Relaxed) == 0 {
        cover_sample_heap();
    }
    if record_guarded(p, size, Some(RATE.load(Ordering::Relaxed))) {
        p
    } else {
        // SAFETY: the block was just taken from the heap and never handed out.
        unsafe { sample_heap::free(p as usize) };
        std::ptr::null_mut()
    }
}

/// Records a block allocated by the inner allocator under a [`Plan::Exact`]
/// or (large) [`Plan::Sampled`] plan (`ptr` non-null). Returns false if it
/// could not be recorded (table memory refused); it then stays untracked,
/// which is harmless since its layout is the caller's.
#[inline]
pub fn record_alloc(ptr: *mut u8, size: usize, plan: Plan) -> bool {
    match plan {
        Plan::Untracked => true,
        Plan::Exact => record_slow(ptr, size, None),
        Plan::Sampled => record_slow(ptr, size, Some(RATE.load(Ordering::Relaxed))),
    }
}

/// Must the free of the block of `size` bytes at `ptr` look further? False
/// means it was certainly never tracked: hand it straight to the inner
/// allocator. True for blocks of the sample heap (see [`in_sample_heap`]),
/// blocks of [`ALWAYS_CHECKED_SIZE`] and more, and, once full mode has been
/// on, every block. Two loads from one line the profiler rarely writes, a
/// subtraction and two compares, whatever allocator is wrapped.
#[inline(always)]
pub fn needs_free_check(ptr: *mut u8, size: usize) -> bool {
    size >= ALWAYS_CHECKED_SIZE || in_checked_range(ptr)
}

/// The address part of [`needs_free_check`], for front ends that learn the
/// size only later (the preload reads it from glibc's chunk header, which
/// blocks of the sample heap do not have).
#[inline(always)]
pub fn in_checked_range(ptr: *mut u8) -> bool {
    (ptr as usize).wrapping_sub(FREE_CHECK.start.load(Ordering::Relaxed))
        < FREE_CHECK.len.load(Ordering::Relaxed)
}

/// Is `ptr` a block of the sample heap (allocated by [`alloc_sampled`])?
/// Such blocks are freed with [`free_sampled`], never by the inner
/// allocator.
#[inline]
pub fn in_sample_heap(ptr: *mut u8) -> bool {
    sample_heap::contains(ptr as usize)
}

/// How many bytes of a block of the sample heap can be used (its size
/// class, at least the size asked for).
pub fn sample_heap_usable_size(ptr: *mut u8) -> usize {
    sample_heap::usable_size(ptr as usize)
}

/// Forgets a block of the sample heap and gives it back. Never waits for a
/// lock its own thread may hold.
///
/// # Safety
/// `ptr` is a live block of the sample heap ([`in_sample_heap`]), not used
/// afterwards.
#[inline(never)]
pub unsafe fn free_sampled(ptr: *mut u8) {
    free_slow(ptr);
    // SAFETY: forwarded from the caller; the entry is gone first, so the
    // address is never recorded for two blocks at once.
    unsafe { sample_heap::free(ptr as usize) }
}

/// Could the block at `ptr` (not of the sample heap) be tracked? False
/// means certainly not. Call after [`needs_free_check`] said true: a
/// lookup in the free filter outside full mode.
#[inline]
pub fn may_be_tracked(ptr: *mut u8) -> bool {
    MODE.load(Ordering::Acquire) >= FULL || FILTER.may_contain(ptr as usize)
}

/// A front end's own countdown of the calling thread (see
/// [`set_external_countdown`]), as a function address; 0 for none.
static EXTERNAL_COUNTDOWN: AtomicUsize = AtomicUsize::new(0);

/// Tells the core where a front end keeps each thread's countdown (the
/// preload keeps it in initial-exec TLS, read without `__tls_get_addr`), so
/// that a mode switch and a snapshot child send the calling thread's next
/// allocation to the slow path there too. `countdown` returns the calling
/// thread's countdown.
pub fn set_external_countdown(countdown: fn() -> *mut i64) {
    EXTERNAL_COUNTDOWN.store(countdown as usize, Ordering::Release);
}

/// Sends the calling thread's next allocation to the slow path, through
/// every countdown it has.
fn park_countdowns() {
    thread::with(|t| t.bytes_until_sample.set(-1));
    let f = EXTERNAL_COUNTDOWN.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: only `set_external_countdown` stores here, a `fn() -> *mut
        // i64`; the pointer it returns is the calling thread's countdown,
        // valid and used by this thread alone.
        unsafe {
            let countdown: fn() -> *mut i64 = std::mem::transmute(f);
            *countdown() = -1;
        }
    }
}

/// Turns this process into a snapshot child: from now on any allocation or
/// free aborts (see [`SNAPSHOT_CHILD`]).
pub(crate) fn enter_snapshot_child() {
    check_every_free();
    MODE.store(SNAPSHOT_CHILD, Ordering::Release);
    park_countdowns();
}

#[cold]
fn die_in_snapshot_child(what: &str) -> ! {
    crate::config::warn(&[
        "snapshot child: ",
        what,
        " attempted; aborting the analysis",
    ]);
    // SAFETY: _exit ends the child at once, running nothing else.
    unsafe { libc::_exit(70) }
}

/// Forgets a block that is about to be freed (or reallocated) and returns
/// what was recorded. Call it when [`may_be_tracked`] says so (it is correct,
/// only slower, otherwise), *before* the block goes back to the inner
/// allocator, so that another thread cannot be handed the same address while
/// it is still recorded.
#[inline]
pub fn untrack(ptr: *mut u8) -> Option<TrackedBlock> {
    free_slow(ptr).map(TrackedBlock)
}

/// What the profiler knew about a block being freed or reallocated.
#[derive(Debug, Clone, Copy)]
pub struct TrackedBlock(LiveEntry);

/// A realloc failed, so the old block is still live: record it again.
#[cold]
pub fn restore_after_failed_realloc(ptr: *mut u8, block: Option<TrackedBlock>) {
    let Some(TrackedBlock(entry)) = block else {
        return;
    };
    let Some(_guard) = ReentryGuard::enter() else {
        return;
    };
    if LIVE.insert(ptr as usize, || entry).is_ok() && entry.in_filter {
        FILTER.add(ptr as usize);
    }
}

/// The allocator behind the profiled blocks (`config::HeapKind` as u8).
static HEAP_KIND: AtomicU8 = AtomicU8::new(crate::config::HeapKind::Other as u8);

/// The allocator behind the profiled blocks, as the front end declared it.
pub(crate) fn heap_kind() -> crate::config::HeapKind {
    use crate::config::HeapKind;
    match HEAP_KIND.load(Ordering::Relaxed) {
        x if x == HeapKind::Glibc as u8 => HeapKind::Glibc,
        x if x == HeapKind::System as u8 => HeapKind::System,
        _ => HeapKind::Other,
    }
}

/// Initialises the profiler from `settings` and the environment, once. Returns
/// true when the mode is known; false while another thread is initialising
/// (its concurrent allocations simply go untracked).
/// Whether an allocator (by its type name) hands threads 64 KiB pages
/// interleaved within 2 MiB: mimalloc's `MiMalloc`. Allocates nothing.
fn interleaves_threads_pages(type_name: &str) -> bool {
    type_name.contains("mimalloc") || type_name.contains("MiMalloc")
}

pub fn initialize(settings: &Settings) -> bool {
    if MODE
        .compare_exchange(UNINIT, INITIALIZING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        return MODE.load(Ordering::Acquire) > INITIALIZING;
    }
    let stood_down = {
        let _guard = ReentryGuard::enter();
        let resolved = settings.resolve();
        RATE.store(resolved.rate, Ordering::Relaxed);
        sampler::SEED.store(resolved.seed, Ordering::Relaxed);
        unwind::set_policy(resolved.unwind);
        HEAP_KIND.store(settings.heap as u8, Ordering::Relaxed);
        if let Some(read) = settings.allocator_stats {
            crate::memory::register_allocator_stats(read);
        }
        if settings
            .inner_type
            .is_some_and(|name| interleaves_threads_pages(name()))
        {
            // Nothing is tracked yet: the mode is still being decided.
            live_table::use_page_regions();
        }
        thread_counters::install();
        fork::install_handlers();
        tables::keep_linked();
        if resolved.mode == Mode::Full {
            check_every_free();
        }
        MODE.store(encode(resolved.mode), Ordering::Release);
        resolved.stood_down
    };
    if let Some(hook) = settings.on_init.filter(|_| !stood_down) {
        hook();
    }
    true
}

/// Switches the mode at run time. Blocks already tracked stay tracked until
/// freed; blocks allocated while tracking was off are never seen. The calling
/// thread follows at once; other threads follow at their next sampling
/// decision (within 64 MiB of allocation for threads that were not
/// sampling).
pub fn set_mode(mode: Mode) {
    initialize(&Settings::new());
    let _guard = ReentryGuard::enter();
    let _switch = MODE_SWITCH.lock();
    let new = encode(mode);
    if new == FULL {
        // Full mode tracks blocks at any address: from now on every free
        // must look. Published before the mode, so that any thread that sees
        // full mode also sees the range.
        check_every_free();
    }
    park_countdowns();
    if MODE.load(Ordering::Acquire) == FULL && new != FULL {
        // Blocks tracked in full mode skipped the free filter (full mode
        // looks every free up). Enter them now, with every shard locked so no
        // free can slip between the filter update and the mode change.
        LIVE.with_all_locked(
            |addr, entry| {
                if !entry.in_filter {
                    entry.in_filter = true;
                    FILTER.add(addr);
                }
            },
            || MODE.store(new, Ordering::Release),
        );
    } else {
        MODE.store(new, Ordering::Release);
    }
}

/// Records a tracked block: its stack, its counters, its live entry.
/// `sampled_at` is the rate it was sampled at, `None` for exact tracking.
/// Returns false when the live table could not take the entry.
#[inline(never)]
fn record_slow(ptr: *mut u8, size: usize, sampled_at: Option<u64>) -> bool {
    let Some(_guard) = ReentryGuard::enter() else {
        return false;
    };
    record_guarded(ptr, size, sampled_at)
}

/// [`record_slow`] for a caller that holds the re-entry guard.
fn record_guarded(ptr: *mut u8, size: usize, sampled_at: Option<u64>) -> bool {
    // The live-table lines load while the stack is walked and interned.
    LIVE.prefetch(ptr as usize);
    let mut stack = backtrace::StackBuf::new();
    backtrace::capture(&mut stack);
    let site =
        thread::with(|t| STACKS.intern_recent(&t.recent_sites, stack.as_slice(), t.labels.get()));
    // This thread's own counters; the site record's shared ones only while
    // the thread is being torn down.
    let counts = thread::with(|t| thread_counters::counts_for(t, site));
    let record = STACKS.record(site);
    match (sampled_at, counts) {
        (Some(rate), counts) => {
            let w = sampler::weight(size as u64, rate);
            match counts {
                Some(c) => c.add_estimate(w, w * size as f64),
                None => record.add_estimate(w, w * size as f64),
            }
        }
        (None, Some(c)) => c.add_exact(size as u64),
        (None, None) => record.add_exact(size as u64),
    }
    if sampled_at.is_none() {
        scope_add(size as i64);
    }
    let addr = ptr as usize;
    let mut stored = None;
    let inserted = LIVE.insert(addr, || {
        // Decided under the shard lock: a switch out of full mode holds every
        // shard lock while it adds full-mode entries to the filter.
        // Blocks of the sample heap are known by address: no filter.
        let e = LiveEntry {
            size: size as u64,
            site,
            sampled: sampled_at.is_some(),
            in_filter: MODE.load(Ordering::Acquire) != FULL && !sample_heap::contains(addr),
        };
        stored = Some(e);
        e
    });
    match (inserted, stored) {
        (Ok(replaced), Some(entry)) => {
            if replaced.is_some_and(|old| old.in_filter) {
                FILTER.remove(addr);
            }
            if entry.in_filter {
                FILTER.add(addr);
            }
            true
        }
        _ => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

#[inline(never)]
fn free_slow(ptr: *mut u8) -> Option<LiveEntry> {
    if MODE.load(Ordering::Relaxed) == SNAPSHOT_CHILD {
        die_in_snapshot_child("free");
    }
    let addr = ptr as usize;
    let removed = match ReentryGuard::enter() {
        Some(_guard) => LIVE.remove(addr),
        // Re-entered (a signal handler interrupting the profiler): this
        // thread may hold the shard lock, so do not wait for it.
        None => LIVE.try_remove(addr),
    };
    if let Some(entry) = removed {
        if entry.in_filter {
            FILTER.remove(addr);
        }
        if !entry.sampled {
            scope_add(-(entry.size as i64));
        }
    }
    removed
}

/// Counts bytes in this thread's measuring scope, if one is open.
#[inline]
fn scope_add(bytes: i64) {
    thread::with(|t| {
        if t.scope_active.get() {
            let net = t.scope_net.get() + bytes;
            t.scope_net.set(net);
            if net > t.scope_peak.get() {
                t.scope_peak.set(net);
            }
        }
    });
}

/// A thread's measuring scope, saved while a nested one runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeState {
    active: bool,
    net: i64,
    peak: i64,
}

/// Opens a measuring scope on this thread (full mode counts every tracked
/// allocation and free the thread makes) and returns the enclosing one.
pub(crate) fn scope_begin() -> ScopeState {
    thread::with(|t| {
        let saved = ScopeState {
            active: t.scope_active.get(),
            net: t.scope_net.get(),
            peak: t.scope_peak.get(),
        };
        t.scope_net.set(0);
        t.scope_peak.set(0);
        t.scope_active.set(true);
        saved
    })
}

/// Closes the scope opened by [`scope_begin`]: returns its peak of net
/// bytes, and folds it into the enclosing scope.
pub(crate) fn scope_end(saved: ScopeState) -> i64 {
    thread::with(|t| {
        let (net, peak) = (t.scope_net.get(), t.scope_peak.get());
        t.scope_active.set(saved.active);
        t.scope_net.set(saved.net + net);
        t.scope_peak.set(saved.peak.max(saved.net + peak));
        peak
    })
}

/// Charges the live block at `ptr` to the calling code from now on: its
/// in-use figures move to the current call stack (and labels). For pools:
/// call it when a buffer is handed out, so that profiles show who holds a
/// pooled buffer now rather than who allocated it long ago. The block's
/// allocation counts stay with the original site. A no-op for blocks the
/// profiler does not track.
#[inline(never)]
pub fn reattribute(ptr: *const u8) {
    if MODE.load(Ordering::Acquire) != FULL
        && !FILTER.may_contain(ptr as usize)
        && !sample_heap::contains(ptr as usize)
    {
        return;
    }
    let Some(_guard) = ReentryGuard::enter() else {
        return;
    };
    let mut stack = backtrace::StackBuf::new();
    backtrace::capture(&mut stack);
    let labels = thread::with(|t| t.labels.get());
    let site = STACKS.intern(stack.as_slice(), labels);
    LIVE.update(ptr as usize, |entry| entry.site = site);
}

/// Counters describing the profiler itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Blocks currently tracked (all live blocks in full mode).
    pub tracked_blocks: usize,
    /// Distinct call sites interned.
    pub sites: usize,
    /// Bytes of memory the profiler's tables occupy.
    pub profiler_bytes: usize,
    /// Blocks that went untracked because table memory was refused.
    pub dropped_blocks: u64,
    /// Per-thread counter blocks in existence (reused as threads come and go).
    pub counter_blocks: usize,
}

/// Reads the profiler's own counters.
pub fn stats() -> Stats {
    Stats {
        tracked_blocks: LIVE.len(),
        sites: STACKS.len() as usize,
        profiler_bytes: LIVE.memory_bytes()
            + STACKS.memory_bytes()
            + thread_counters::memory_bytes(),
        dropped_blocks: DROPPED.load(Ordering::Relaxed),
        counter_blocks: thread_counters::block_count(),
    }
}

/// Takes every profiler lock (fork's prepare handler), in the one global
/// order: mode switch, free counter blocks, stack table, live-table shards,
/// sample heap.
pub(crate) fn lock_all() {
    MODE_SWITCH.raw_lock();
    thread_counters::lock_for_fork();
    STACKS.lock_for_fork();
    LIVE.lock_for_fork();
    sample_heap::lock_for_fork();
}

/// Takes the locks a heap snapshot needs (mode switch, stack table, live
/// shards): while they are held no tracked allocation or free can complete.
/// The free list of per-thread counter blocks is left alone: a thread
/// handing its block back at exit does so with signals blocked, and must
/// not be kept waiting by a snapshot that is waiting for it to stop.
pub(crate) fn lock_for_snapshot() {
    MODE_SWITCH.raw_lock();
    STACKS.lock_for_fork();
    LIVE.lock_for_fork();
}

/// Releases what [`lock_for_snapshot`] took.
///
/// # Safety
/// Only after `lock_for_snapshot` on this thread.
pub(crate) unsafe fn unlock_after_snapshot() {
    // SAFETY: forwarded from the caller.
    unsafe {
        LIVE.unlock_after_fork();
        STACKS.unlock_after_fork();
        MODE_SWITCH.raw_unlock();
    }
}

/// Releases what [`lock_all`] took.
///
/// # Safety
/// Only after `lock_all` on this thread, or in a fork child whose only thread
/// inherited the locks.
pub(crate) unsafe fn unlock_all() {
    // SAFETY: forwarded from the caller.
    unsafe {
        sample_heap::unlock_after_fork();
        LIVE.unlock_after_fork();
        STACKS.unlock_after_fork();
        thread_counters::unlock_after_fork();
        MODE_SWITCH.raw_unlock();
    }
}

#[cfg(test)]
mod region_tests {
    #[test]
    fn mimalloc_alone_gets_page_regions() {
        assert!(super::interleaves_threads_pages("mimalloc::MiMalloc"));
        assert!(!super::interleaves_threads_pages("std::alloc::System"));
        assert!(!super::interleaves_threads_pages(
            "tikv_jemallocator::Jemalloc"
        ));
    }
}
