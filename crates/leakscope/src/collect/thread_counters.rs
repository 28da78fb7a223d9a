//! Per-thread allocation counters.
//!
//! In full mode every allocation bumps the counters of its site. With one set
//! of shared atomics per site, threads that allocate from the same code (the
//! common case in a server) fight over the same cache lines. Instead each
//! thread counts into a block of its own: a small open-addressing table keyed
//! by site id that only its owner writes (plain loads and stores, no locked
//! instructions), and that readers sum with relaxed loads.
//!
//! Blocks are registered in a global list and never freed. When a thread
//! exits, a `pthread` key destructor hands its block back for the next new
//! thread, counts included (a block's counts are part of the totals whoever
//! owns it), so memory stays bounded under thread churn. A thread with no
//! block (while it is being torn down) counts into the shared fallback
//! counters of the site record instead.

use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::raw_mem;
use super::spinlock::SpinLock;
use super::stack_table::SiteId;
use super::thread::ThreadState;

/// One site's counts in one thread's block.
#[repr(C)]
pub(crate) struct Counts {
    /// Site id + 1; 0 marks an empty slot.
    site: AtomicU32,
    pub(crate) exact_objects: AtomicU64,
    pub(crate) exact_bytes: AtomicU64,
    /// `f64` bits.
    pub(crate) estimated_objects: AtomicU64,
    /// `f64` bits.
    pub(crate) estimated_bytes: AtomicU64,
}

/// A table of [`Counts`]: `cap` slots after the header.
#[repr(C)]
struct Table {
    cap: usize,
    len: usize,
}

/// A thread's block, linked into the global registry.
pub(crate) struct Block {
    next: *mut Block,
    /// Link in the free list while no thread owns the block.
    next_free: *mut Block,
    table: AtomicPtr<Table>,
}

static REGISTRY: AtomicPtr<Block> = AtomicPtr::new(ptr::null_mut());
/// Blocks whose thread exited, ready for reuse.
static FREE_BLOCKS: SpinLock<FreeList> = SpinLock::new(FreeList(ptr::null_mut()));
/// The pthread key whose destructor returns a block; `u32::MAX` until made.
static KEY: AtomicU32 = AtomicU32::new(u32::MAX);

struct FreeList(*mut Block);
// SAFETY: the list is only touched under its lock; blocks are never freed.
unsafe impl Send for FreeList {}

fn slots(table: NonNull<Table>) -> &'static [Counts] {
    // SAFETY: a table allocation is a header followed by `cap` zeroed slots
    // (see `new_table`); tables are never freed.
    unsafe {
        let cap = table.as_ref().cap;
        std::slice::from_raw_parts(table.as_ptr().add(1).cast::<Counts>(), cap)
    }
}

fn new_table(cap: usize) -> Option<NonNull<Table>> {
    let bytes = std::mem::size_of::<Table>() + cap * std::mem::size_of::<Counts>();
    let table = raw_mem::map_zeroed(bytes)?.cast::<Table>();
    // SAFETY: fresh, exclusively owned mapping large enough for the header.
    unsafe { table.as_ptr().write(Table { cap, len: 0 }) };
    Some(table)
}

fn home(site: SiteId, cap: usize) -> usize {
    ((u64::from(site).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u128 * cap as u128) >> 64) as usize
}

extern "C" fn release_at_thread_exit(block: *mut libc::c_void) {
    super::thread::with(|t| {
        t.counts_cache.clear();
        t.counter_block.set(ptr::null_mut());
        t.counters_released.set(true);
    });
    let block = block.cast::<Block>();
    if block.is_null() {
        return;
    }
    let mut free = FREE_BLOCKS.lock();
    // SAFETY: the block was this exiting thread's; nobody else writes its
    // free link, and we hold the free-list lock.
    unsafe { (*block).next_free = free.0 };
    free.0 = block;
}

/// Creates the thread-exit key. Called once at initialisation.
pub(crate) fn install() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: pthread_key_create writes the new key into `key`; the
    // destructor is a plain extern "C" function valid for the process.
    if unsafe { libc::pthread_key_create(&mut key, Some(release_at_thread_exit)) } == 0 {
        KEY.store(key, Ordering::Release);
    }
}

/// This thread's block, taking one (a freed one if any) on first use.
fn block_of(t: &ThreadState) -> Option<NonNull<Block>> {
    if let Some(b) = NonNull::new(t.counter_block.get()) {
        return Some(b);
    }
    if t.counters_released.get() {
        return None;
    }
    let key = KEY.load(Ordering::Acquire);
    if key == u32::MAX {
        return None;
    }
    let reused = {
        let mut free = FREE_BLOCKS.lock();
        NonNull::new(free.0).map(|b| {
            // SAFETY: blocks on the list are valid and owned by it.
            free.0 = unsafe { b.as_ref().next_free };
            b.as_ptr()
        })
    };
    let block = match reused {
        Some(b) => b,
        None => {
            let b = raw_mem::map_zeroed(std::mem::size_of::<Block>())?
                .cast::<Block>()
                .as_ptr();
            let table = new_table(64)?;
            // SAFETY: fresh memory for one Block, ours until published.
            unsafe {
                b.write(Block {
                    next: ptr::null_mut(),
                    next_free: ptr::null_mut(),
                    table: AtomicPtr::new(table.as_ptr()),
                })
            };
            let mut head = REGISTRY.load(Ordering::Acquire);
            loop {
                // SAFETY: not yet published; only we write it.
                unsafe { (*b).next = head };
                match REGISTRY.compare_exchange_weak(head, b, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
            b
        }
    };
    t.counter_block.set(block);
    // SAFETY: `key` was created by pthread_key_create. glibc stores the value
    // without allocating for the first 32 keys; beyond that it may allocate,
    // which passes through untracked under the re-entry guard we run under.
    unsafe { libc::pthread_setspecific(key, block.cast()) };
    NonNull::new(block)
}

/// A thread's memory of where the counts of its latest sites are: one
/// comparison instead of finding its block and probing its table.
/// Direct-mapped on the site id; a slot holds site id + 1 (0: none) and
/// its counts. Emptied whenever the counts move (the table grows) or stop
/// being the thread's (its block is handed back at exit).
pub(crate) struct CountsCache([(Cell<u32>, Cell<*const Counts>); COUNTS_CACHE]);

const COUNTS_CACHE: usize = 32;

impl CountsCache {
    pub(crate) const fn new() -> Self {
        CountsCache([const { (Cell::new(0), Cell::new(ptr::null())) }; COUNTS_CACHE])
    }

    fn clear(&self) {
        for (site, counts) in &self.0 {
            site.set(0);
            counts.set(ptr::null());
        }
    }
}

/// The counts of `site` in this thread's block, or `None` when the thread has
/// no block (the caller then uses the shared fallback counters).
#[inline]
pub(crate) fn counts_for(t: &ThreadState, site: SiteId) -> Option<&'static Counts> {
    let (cached_site, counts) = &t.counts_cache.0[site as usize % COUNTS_CACHE];
    let cached = counts.get();
    if cached_site.get() == site.wrapping_add(1) && !cached.is_null() {
        // SAFETY: non-null, so cached from `find_counts` below while this
        // thread owned the block; tables are never freed, and the cache is
        // emptied before the counts move or the block changes hands.
        return Some(unsafe { &*cached });
    }
    let found = find_counts(t, site)?;
    cached_site.set(site.wrapping_add(1));
    counts.set(found);
    Some(found)
}

#[inline(never)]
fn find_counts(t: &ThreadState, site: SiteId) -> Option<&'static Counts> {
    let block = block_of(t)?;
    // SAFETY: blocks are never freed; this thread owns this one.
    let block = unsafe { block.as_ref() };
    let mut table = NonNull::new(block.table.load(Ordering::Relaxed))?;
    // SAFETY: only the owning thread (us) reads or writes `len`.
    let len = unsafe { table.as_ref().len };
    if (len + 1) * 10 > slots(table).len() * 7 {
        t.counts_cache.clear();
        table = grow(block, table)?;
    }
    let slots = slots(table);
    let cap = slots.len();
    let mut i = home(site, cap);
    loop {
        let s = slots[i].site.load(Ordering::Relaxed);
        if s == site + 1 {
            return Some(&slots[i]);
        }
        if s == 0 {
            slots[i].site.store(site + 1, Ordering::Release);
            // SAFETY: only the owning thread writes `len`.
            unsafe { (*table.as_ptr()).len += 1 };
            return Some(&slots[i]);
        }
        i = if i + 1 == cap { 0 } else { i + 1 };
    }
}

/// Replaces the owner's table by one twice as large. The old table stays
/// mapped for readers that loaded it.
fn grow(block: &Block, old: NonNull<Table>) -> Option<NonNull<Table>> {
    let old_slots = slots(old);
    let new = new_table(old_slots.len() * 2)?;
    let new_slots = slots(new);
    let mut len = 0;
    for s in old_slots {
        let site = s.site.load(Ordering::Relaxed);
        if site == 0 {
            continue;
        }
        let mut i = home(site - 1, new_slots.len());
        while new_slots[i].site.load(Ordering::Relaxed) != 0 {
            i = if i + 1 == new_slots.len() { 0 } else { i + 1 };
        }
        let d = &new_slots[i];
        for (dst, src) in [
            (&d.exact_objects, &s.exact_objects),
            (&d.exact_bytes, &s.exact_bytes),
            (&d.estimated_objects, &s.estimated_objects),
            (&d.estimated_bytes, &s.estimated_bytes),
        ] {
            dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        d.site.store(site, Ordering::Relaxed);
        len += 1;
    }
    // SAFETY: `new` is not yet published; we own it.
    unsafe { (*new.as_ptr()).len = len };
    block.table.store(new.as_ptr(), Ordering::Release);
    Some(new)
}

impl Counts {
    /// Adds one exactly tracked block. Only the owning thread calls this.
    pub(crate) fn add_exact(&self, bytes: u64) {
        bump(&self.exact_objects, 1);
        bump(&self.exact_bytes, bytes);
    }

    /// Adds a sampled block's weighted contribution. Owner only.
    pub(crate) fn add_estimate(&self, objects: f64, bytes: f64) {
        bump_f64(&self.estimated_objects, objects);
        bump_f64(&self.estimated_bytes, bytes);
    }
}

/// Single-writer increment: a load and a store, no locked instruction.
fn bump(cell: &AtomicU64, by: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

fn bump_f64(cell: &AtomicU64, by: f64) {
    let v = f64::from_bits(cell.load(Ordering::Relaxed)) + by;
    cell.store(v.to_bits(), Ordering::Relaxed);
}

/// Adds every thread's `(objects, bytes)` allocated per site into `out`
/// (indexed by site id; grown as needed).
pub(crate) fn sum_into(out: &mut Vec<(f64, f64)>) {
    let mut block = REGISTRY.load(Ordering::Acquire);
    while let Some(b) = NonNull::new(block) {
        // SAFETY: registered blocks are never freed.
        let b = unsafe { b.as_ref() };
        if let Some(table) = NonNull::new(b.table.load(Ordering::Acquire)) {
            for s in slots(table) {
                let site = s.site.load(Ordering::Acquire);
                if site == 0 {
                    continue;
                }
                let i = (site - 1) as usize;
                if out.len() <= i {
                    out.resize(i + 1, (0.0, 0.0));
                }
                out[i].0 += s.exact_objects.load(Ordering::Relaxed) as f64
                    + f64::from_bits(s.estimated_objects.load(Ordering::Relaxed));
                out[i].1 += s.exact_bytes.load(Ordering::Relaxed) as f64
                    + f64::from_bits(s.estimated_bytes.load(Ordering::Relaxed));
            }
        }
        block = b.next;
    }
}

/// Number of counter blocks ever created (live threads plus free blocks).
pub(crate) fn block_count() -> usize {
    let mut n = 0;
    let mut block = REGISTRY.load(Ordering::Acquire);
    while let Some(b) = NonNull::new(block) {
        n += 1;
        // SAFETY: registered blocks are never freed.
        block = unsafe { b.as_ref().next };
    }
    n
}

/// Bytes of memory the blocks occupy (current tables only).
pub(crate) fn memory_bytes() -> usize {
    let mut total = 0;
    let mut block = REGISTRY.load(Ordering::Acquire);
    while let Some(b) = NonNull::new(block) {
        // SAFETY: registered blocks are never freed.
        let b = unsafe { b.as_ref() };
        if let Some(table) = NonNull::new(b.table.load(Ordering::Acquire)) {
            total += std::mem::size_of::<Block>() + std::mem::size_of_val(slots(table));
        }
        block = b.next;
    }
    total
}

pub(crate) fn lock_for_fork() {
    FREE_BLOCKS.raw_lock();
}

/// # Safety
/// Only after [`lock_for_fork`] on this thread (or inherited by a fork
/// child's only thread).
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { FREE_BLOCKS.raw_unlock() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site's cached counts are dropped when the table grows: its later
    /// allocations land in the new table, where readers look.
    #[test]
    fn cached_counts_follow_the_table_when_it_grows() {
        install();
        std::thread::spawn(|| {
            let t = ThreadState::new();
            let hot: SiteId = 5;
            counts_for(&t, hot).unwrap().add_exact(10);
            // Enough new sites to grow the table, none in the hot site's
            // cache slot (which stays filled).
            let others = (100..)
                .filter(|s| s % COUNTS_CACHE as u32 != hot % COUNTS_CACHE as u32)
                .take(200);
            for site in others {
                counts_for(&t, site).unwrap().add_exact(1);
            }
            for _ in 0..10 {
                counts_for(&t, hot).unwrap().add_exact(10);
            }
            let block = block_of(&t).unwrap();
            // SAFETY: blocks are never freed; this thread owns this one.
            let table = NonNull::new(unsafe { block.as_ref() }.table.load(Ordering::Acquire));
            let table = table.unwrap();
            assert!(slots(table).len() > 64, "the table grew");
            let counts = slots(table)
                .iter()
                .find(|s| s.site.load(Ordering::Relaxed) == hot + 1)
                .unwrap();
            assert_eq!(counts.exact_objects.load(Ordering::Relaxed), 11);
            assert_eq!(counts.exact_bytes.load(Ordering::Relaxed), 110);
        })
        .join()
        .unwrap();
    }
}
