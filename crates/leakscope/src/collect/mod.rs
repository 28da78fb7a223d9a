//! Collection: the part of leakscope that runs inside `malloc` and `free`.
//!
//! Every front end (the [`crate::Profiler`] global allocator; the `LD_PRELOAD`
//! library) reports events through three calls: [`on_alloc`], [`on_free`] and
//! the realloc pair [`take_for_realloc`] / [`on_alloc`]. Their fast paths are
//! a few instructions; anything more goes through a `#[cold]` slow path that
//! holds a [`thread::ReentryGuard`], so allocations made by code the profiler
//! calls are never profiled and never recurse.
//!
//! ```text
//!            on_alloc ──► sampler (Poisson countdown, per thread)
//!                            │ sampled, or full mode
//!                            ▼
//!                 backtrace::capture (frame pointers / libunwind)
//!                            ▼
//!                 stack_table::intern ──► SiteId, per-site alloc counters
//!                            ▼
//!                 live_table::insert (address → size, site, flags)
//!            on_free ──► filter ──► live_table::remove
//! ```
//!
//! Nothing here allocates through the global allocator: tables live in
//! memory from `mmap` ([`raw_mem`]) and locks are [`spinlock::SpinLock`]s.

pub(crate) mod backtrace;
pub(crate) mod filter;
pub(crate) mod fork;
pub(crate) mod live_table;
pub(crate) mod raw_mem;
pub(crate) mod sampler;
pub(crate) mod spinlock;
pub(crate) mod stack_table;
pub mod thread;
pub(crate) mod thread_counters;
pub(crate) mod unwind;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::config::{Mode, Settings};
use filter::FreeFilter;
use live_table::{LiveEntry, LiveTable};
use spinlock::SpinLock;
use stack_table::StackTable;
use thread::ReentryGuard;

const UNINIT: u8 = 0;
const INITIALIZING: u8 = 1;
const OFF: u8 = 2;
const SAMPLED: u8 = 3;
const FULL: u8 = 4;

/// The profiling mode, or the initialisation state before it is known.
static MODE: AtomicU8 = AtomicU8::new(UNINIT);
/// Mean bytes between samples in sampled mode.
static RATE: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_RATE);
/// Blocks that could not be tracked because table memory was refused.
static DROPPED: AtomicU64 = AtomicU64::new(0);

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
        FULL => Mode::Full,
        _ => Mode::Off,
    }
}

/// The sampling rate in effect (mean bytes between samples).
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// Reports a new block of `size` bytes at `ptr` (non-null).
#[inline(always)]
pub fn on_alloc(ptr: *mut u8, size: usize, settings: &Settings) {
    match MODE.load(Ordering::Relaxed) {
        OFF => {}
        SAMPLED => {
            let crossed = thread::with(|t| {
                let left = t.bytes_until_sample.get() - size as i64;
                t.bytes_until_sample.set(left);
                left < 0
            });
            if crossed {
                sampled_slow(ptr, size);
            }
        }
        FULL => full_slow(ptr, size),
        _ => init_slow(ptr, size, settings),
    }
}

/// Reports that the block at `ptr` is about to be freed. Must be called
/// *before* the block is returned to the inner allocator, so that another
/// thread cannot be handed the same address while it is still recorded.
#[inline(always)]
pub fn on_free(ptr: *mut u8) {
    if MODE.load(Ordering::Acquire) == FULL || FILTER.may_contain(ptr as usize) {
        free_slow(ptr);
    }
}

/// First half of a realloc: forgets the old block and returns what was
/// recorded, for [`restore_after_failed_realloc`] if the realloc fails. On
/// success the front end reports the new block with [`on_alloc`].
#[inline(always)]
pub fn take_for_realloc(ptr: *mut u8) -> Option<TrackedBlock> {
    if MODE.load(Ordering::Acquire) == FULL || FILTER.may_contain(ptr as usize) {
        return free_slow(ptr).map(TrackedBlock);
    }
    None
}

/// What the profiler knew about a block handed to `realloc`.
#[derive(Debug, Clone, Copy)]
pub struct TrackedBlock(LiveEntry);

/// The inner realloc failed, so the old block is still live: record it again.
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

#[cold]
#[inline(never)]
fn init_slow(ptr: *mut u8, size: usize, settings: &Settings) {
    if initialize(settings) {
        on_alloc(ptr, size, settings);
    }
}

/// Initialises the profiler from `settings` and the environment, once. Returns
/// true when the mode is known; false while another thread is initialising
/// (its concurrent allocations simply go untracked).
pub fn initialize(settings: &Settings) -> bool {
    if MODE
        .compare_exchange(UNINIT, INITIALIZING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        return MODE.load(Ordering::Acquire) > INITIALIZING;
    }
    {
        let _guard = ReentryGuard::enter();
        let resolved = settings.resolve();
        RATE.store(resolved.rate, Ordering::Relaxed);
        sampler::SEED.store(resolved.seed, Ordering::Relaxed);
        unwind::set_policy(resolved.unwind);
        thread_counters::install();
        fork::install_handlers();
        MODE.store(encode(resolved.mode), Ordering::Release);
    }
    if let Some(hook) = settings.on_init {
        hook();
    }
    true
}

/// Switches the mode at run time. Blocks already tracked stay tracked until
/// freed; blocks allocated while tracking was off are never seen.
pub fn set_mode(mode: Mode) {
    initialize(&Settings::new());
    let _guard = ReentryGuard::enter();
    let _switch = MODE_SWITCH.lock();
    let new = encode(mode);
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

#[cold]
#[inline(never)]
fn sampled_slow(ptr: *mut u8, size: usize) {
    let rate = RATE.load(Ordering::Relaxed);
    // Re-arm the countdown even when re-entered, or every later allocation of
    // this thread would come back here.
    if !thread::with(|t| sampler::crossed(t, size, rate)) {
        return;
    }
    if let Some(_guard) = ReentryGuard::enter_to_track() {
        record(ptr, size, Some(rate));
    }
}

#[inline(never)]
fn full_slow(ptr: *mut u8, size: usize) {
    if let Some(_guard) = ReentryGuard::enter_to_track() {
        record(ptr, size, None);
    }
}

/// Records a tracked block: its stack, its counters, its live entry.
/// `sampled_at` is the rate it was sampled at, `None` for exact tracking.
#[inline(always)]
fn record(ptr: *mut u8, size: usize, sampled_at: Option<u64>) {
    let mut frames = [0usize; backtrace::MAX_FRAMES];
    let depth = backtrace::capture(&mut frames);
    let site = STACKS.intern(&frames[..depth], 0);
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
    let addr = ptr as usize;
    let mut stored = None;
    let inserted = LIVE.insert(addr, || {
        // Decided under the shard lock: a switch out of full mode holds every
        // shard lock while it adds full-mode entries to the filter.
        let e = LiveEntry {
            size: size as u64,
            site,
            sampled: sampled_at.is_some(),
            in_filter: MODE.load(Ordering::Acquire) != FULL,
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
        }
        _ => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[inline(never)]
fn free_slow(ptr: *mut u8) -> Option<LiveEntry> {
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
    }
    removed
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
/// order: mode switch, free counter blocks, stack table, live-table shards.
pub(crate) fn lock_all() {
    MODE_SWITCH.raw_lock();
    thread_counters::lock_for_fork();
    STACKS.lock_for_fork();
    LIVE.lock_for_fork();
}

/// Releases what [`lock_all`] took.
///
/// # Safety
/// Only after `lock_all` on this thread, or in a fork child whose only thread
/// inherited the locks.
pub(crate) unsafe fn unlock_all() {
    // SAFETY: forwarded from the caller.
    unsafe {
        LIVE.unlock_after_fork();
        STACKS.unlock_after_fork();
        thread_counters::unlock_after_fork();
        MODE_SWITCH.raw_unlock();
    }
}
