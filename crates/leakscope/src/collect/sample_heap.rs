//! Where small sampled blocks live: a region of address space of leakscope's
//! own, so that `free` tells them apart by address alone.
//!
//! Every `free` must learn whether its block was sampled, and most blocks
//! were not. When sampled blocks came from the inner allocator, the only
//! cheap tell was a layout habit (256-byte alignment), which suits glibc's
//! 16-byte granularity but not jemalloc's or mimalloc's size classes, where
//! most blocks of 256 bytes and more are 256-aligned by nature. Here every
//! sampled block under [`MAX_SIZE`] is carved from one reservation aligned to
//! its own size, so "was this sampled?" is one subtraction and one compare
//! against two words that never change once set, whatever allocator is
//! wrapped, with no false positives (every block here *is* sampled).
//!
//! It is a small segregated-fit allocator: size classes four to a doubling
//! (16 B .. 64 KiB), 256 KiB slabs committed as needed (the reservation is
//! `PROT_NONE`, so it costs no commit charge), one free list per class.
//! Sampled allocations are rare (about one per `rate` bytes allocated), so
//! carving and popping run under one spin lock; freeing pushes onto a
//! lock-free stack, so a free never waits (a signal handler may free while
//! its thread is inside the allocator). Freed blocks stay with their class
//! for the next sample of that class: giving their pages back on every free
//! (a system call, then page faults on reuse) cost more than the whole
//! sampling when mid-sized blocks are sampled often, so the heap keeps the
//! most it ever held of each class (about `size / rate` of the peak bytes
//! in live blocks of that size).
//!
//! What this costs: the sampled blocks' bytes sit here instead of in the
//! inner allocator (at the default rate, about `size / 512 KiB` of the bytes
//! of blocks of each size), with at most a quarter of a block lost to
//! rounding up to the class size.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::spinlock::SpinLock;

/// Blocks of this size and more are not served here: they keep the inner
/// allocator's layout and are recognised at free by their size.
pub const MAX_SIZE: usize = 64 << 10;
/// The largest alignment served (larger ones with small sizes stay
/// unsampled).
pub(crate) const MAX_ALIGN: usize = MAX_SIZE;

/// Bytes of address space reserved (64 GiB; only slabs in use are
/// committed). Where the address space is limited (`ulimit -v`), smaller
/// reservations are tried, down to [`SMALLEST_REGION`].
const REGION_BYTES: usize = 1 << 36;
const SMALLEST_REGION: usize = 1 << 28;
const SLAB_SHIFT: u32 = 18;
const SLAB_BYTES: usize = 1 << SLAB_SHIFT;
const SLABS: usize = REGION_BYTES >> SLAB_SHIFT;
const CLASSES: usize = 44;

/// The reserved address range.
pub(crate) static REGION: Region = Region::new();

/// Where the reservation's bounds lie, for a reader of this process's
/// memory from outside: see `collect::tables`.
pub(crate) mod layout {
    use super::*;

    pub(crate) const BASE_OFFSET: usize = std::mem::offset_of!(Region, base);
    pub(crate) const LEN_OFFSET: usize = std::mem::offset_of!(Region, len);
}

/// One reservation of address space, made once by whichever thread first
/// needs it.
pub(crate) struct Region {
    /// Start of the reservation; 0 until made. Published after `len`.
    base: AtomicUsize,
    /// Its size (a power of two, and its alignment).
    len: AtomicUsize,
    /// Taken by the one thread that makes the reservation: two threads
    /// reserving at once would each carve blocks from their own range while
    /// only one range is published, and a block of the other would then be
    /// handed to the inner allocator's `free`.
    claimed: AtomicU8,
}

impl Region {
    const fn new() -> Self {
        Region {
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            claimed: AtomicU8::new(0),
        }
    }
}

/// Size class + 1 of every slab carved so far (0: not carved).
static SLAB_CLASS: [AtomicU8; SLABS] = [const { AtomicU8::new(0) }; SLABS];
/// Lock-free stacks of free blocks, one per class (links in the blocks).
static FREE: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];

struct Carving {
    /// Index of the next slab never carved.
    next_slab: usize,
    /// Per class: the next fresh block of its current slab, and its end.
    fresh: [(usize, usize); CLASSES],
}

static HEAP: SpinLock<Carving> = SpinLock::new(Carving {
    next_slab: 0,
    fresh: [(0, 0); CLASSES],
});

/// The class of a block of `size` bytes aligned to `align`, and the class's
/// block size; `None` if it is not served here. Classes: 16, 32, 48, 64,
/// then four per doubling (80, 96, 112, 128, 160, ...). An alignment above
/// 16 picks the power-of-two class that covers both (blocks of those classes
/// are aligned to their size, since slabs are aligned to 256 KiB).
fn class_of(size: usize, align: usize) -> Option<(usize, usize)> {
    if size >= MAX_SIZE || align > MAX_ALIGN {
        return None;
    }
    let size = if align > 16 {
        size.max(align).next_power_of_two()
    } else {
        size.max(1)
    };
    if size <= 64 {
        let i = (size - 1) / 16;
        return Some((i, (i + 1) * 16));
    }
    let lg = usize::BITS - 1 - (size - 1).leading_zeros(); // size in (2^lg, 2^(lg+1)]
    let step = 1usize << (lg - 2);
    let q = (size - 1 - (1 << lg)) / step;
    Some((4 + (lg as usize - 6) * 4 + q, (1 << lg) + (q + 1) * step))
}

fn class_size(class: usize) -> usize {
    if class < 4 {
        return (class + 1) * 16;
    }
    let lg = (class - 4) / 4 + 6;
    let q = (class - 4) % 4;
    (1 << lg) + (q + 1) * (1 << (lg - 2))
}

/// The range every sampled small block lies in, or `None` before the first
/// one.
pub(crate) fn range() -> Option<(usize, usize)> {
    REGION.range()
}

/// Is `ptr` a block of this heap?
#[inline]
pub(crate) fn contains(ptr: usize) -> bool {
    let base = REGION.base.load(Ordering::Relaxed);
    base != 0 && ptr.wrapping_sub(base) < REGION.len.load(Ordering::Relaxed)
}

impl Region {
    fn range(&self) -> Option<(usize, usize)> {
        let base = self.base.load(Ordering::Acquire);
        (base != 0).then(|| (base, self.len.load(Ordering::Relaxed)))
    }

    /// Reserves the region (once). Returns its base, or `None` if the
    /// kernel refused (then never asks again) or another thread is making
    /// the reservation right now (this one sampled block then comes from
    /// the inner allocator, untracked; a fork child whose parent was
    /// reserving at fork time keeps getting `None`).
    fn reserve(&self) -> Option<usize> {
        let base = self.base.load(Ordering::Acquire);
        if base != 0 {
            return Some(base);
        }
        if self
            .claimed
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Made meanwhile, being made, or refused.
            return self.range().map(|(base, _)| base);
        }
        let (aligned, len) = reserve_aligned()?;
        self.len.store(len, Ordering::Relaxed);
        self.base.store(aligned, Ordering::Release);
        Some(aligned)
    }
}

/// Reserves address space aligned to its size: [`REGION_BYTES`], or less
/// where the address space is limited, down to [`SMALLEST_REGION`].
fn reserve_aligned() -> Option<(usize, usize)> {
    let mut len = REGION_BYTES;
    loop {
        // Twice the size, so an aligned half can be cut out of it.
        let span = 2 * len;
        // SAFETY: an anonymous PROT_NONE reservation with no hint; checked
        // against MAP_FAILED. MAP_NORESERVE and PROT_NONE: no commit charge.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            if len > SMALLEST_REGION {
                len /= 16;
                continue;
            }
            return None;
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(len);
        // SAFETY: both ranges lie inside the mapping just made and nothing
        // refers to them; unmapping the parts outside the aligned half.
        unsafe {
            if aligned > start {
                libc::munmap(p, aligned - start);
            }
            let end = aligned + len;
            if start + span > end {
                libc::munmap(end as *mut libc::c_void, start + span - end);
            }
        }
        return Some((aligned, len));
    }
}

/// A block for a sampled allocation of `size` bytes aligned to `align`, or
/// null if none can be had here (too large, too aligned, memory refused).
/// Its contents are unspecified. The caller holds the re-entry guard (so a
/// signal handler on this thread cannot come back for the lock).
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    let Some((class, bytes)) = class_of(size, align) else {
        return std::ptr::null_mut();
    };
    let Some(base) = REGION.reserve() else {
        return std::ptr::null_mut();
    };
    let mut heap = HEAP.lock();
    // Pop: only the lock holder pops, so the head cannot be popped and
    // pushed again between the load and the exchange (no ABA).
    let head = &FREE[class];
    let mut top = head.load(Ordering::Acquire);
    while top != 0 {
        // SAFETY: `top` is a free block of this heap (committed, at least 16
        // bytes, 8-aligned); its first word is the link written by `free`.
        let next = unsafe { (top as *const usize).read() };
        match head.compare_exchange_weak(top, next, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return top as *mut u8,
            Err(now) => top = now,
        }
    }
    let (mut fresh, mut end) = heap.fresh[class];
    if end - fresh < bytes {
        if heap.next_slab == REGION.len.load(Ordering::Relaxed) >> SLAB_SHIFT {
            return std::ptr::null_mut();
        }
        let slab = base + (heap.next_slab << SLAB_SHIFT);
        // SAFETY: the slab lies inside our reservation and is not in use;
        // making it readable and writable commits it (zero-filled).
        let ok = unsafe {
            libc::mprotect(
                slab as *mut libc::c_void,
                SLAB_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        } == 0;
        if !ok {
            return std::ptr::null_mut();
        }
        SLAB_CLASS[heap.next_slab].store(class as u8 + 1, Ordering::Release);
        heap.next_slab += 1;
        fresh = slab;
        end = slab + SLAB_BYTES / bytes * bytes;
    }
    heap.fresh[class] = (fresh + bytes, end);
    fresh as *mut u8
}

/// The usable size of a block of this heap (its class's size).
pub(crate) fn usable_size(ptr: usize) -> usize {
    let slab = (ptr - REGION.base.load(Ordering::Relaxed)) >> SLAB_SHIFT;
    match SLAB_CLASS[slab].load(Ordering::Acquire) {
        0 => 0,
        c => class_size(c as usize - 1),
    }
}

/// Returns a block to its class. Never waits: safe from a signal handler
/// that interrupted this thread inside [`alloc`].
///
/// # Safety
/// `ptr` is a live block of this heap, not used after this call.
pub(crate) unsafe fn free(ptr: usize) {
    let slab = (ptr - REGION.base.load(Ordering::Relaxed)) >> SLAB_SHIFT;
    let class = match SLAB_CLASS[slab].load(Ordering::Acquire) {
        0 => return, // not a block of ours: nothing to do
        c => c as usize - 1,
    };
    let head = &FREE[class];
    let mut top = head.load(Ordering::Relaxed);
    loop {
        // SAFETY: the block is ours until the exchange publishes it; its
        // first word holds the link.
        unsafe { (ptr as *mut usize).write(top) };
        match head.compare_exchange_weak(top, ptr, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => top = now,
        }
    }
}

/// Fork's prepare handler: no carving in progress at the fork.
pub(crate) fn lock_for_fork() {
    HEAP.raw_lock();
}

/// # Safety
/// Only after [`lock_for_fork`] on this thread, or in the fork child.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { HEAP.raw_unlock() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads that reserve at the same moment all get one region (or
    /// none): never a range of their own that nobody else knows. Before the
    /// claim, two published bases raced and a block carved from the losing
    /// one reached the inner allocator's `free` (a crash in 1 of ~20 runs
    /// of the two-process benchmark, mimalloc and jemalloc alike).
    #[test]
    fn threads_reserving_at_once_share_one_region() {
        for _ in 0..50 {
            let region: &'static Region = Box::leak(Box::new(Region::new()));
            // Threads spin until all are up, then start together (a
            // barrier wakes them one by one, too far apart to race).
            let ready = std::sync::atomic::AtomicUsize::new(0);
            let bases: Vec<Option<usize>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            ready.fetch_add(1, Ordering::SeqCst);
                            while ready.load(Ordering::SeqCst) < 4 {
                                std::hint::spin_loop();
                            }
                            region.reserve()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let (base, len) = region.range().expect("one thread reserved");
            for got in &bases {
                assert!(
                    got.is_none() || *got == Some(base),
                    "{bases:x?} vs {base:#x}"
                );
            }
            assert!(bases.iter().any(Option::is_some));
            assert_eq!(region.reserve(), Some(base));
            // SAFETY: the reservation made above, referred to by nothing.
            unsafe { libc::munmap(base as *mut libc::c_void, len) };
        }
    }

    #[test]
    fn classes_cover_sizes_and_alignments() {
        let mut last = 0;
        for size in 1..MAX_SIZE {
            let (c, bytes) = class_of(size, 8).unwrap();
            assert!(bytes >= size && bytes % 16 == 0, "{size} -> {bytes}");
            assert!(bytes <= size.max(16) * 5 / 4 + 16, "{size} -> {bytes}");
            assert_eq!(class_size(c), bytes);
            assert!(c >= last && c < CLASSES);
            last = c;
        }
        for align in [32, 64, 256, 4096, MAX_ALIGN] {
            for size in [1, 100, 5000, MAX_SIZE - 1] {
                let (_, bytes) = class_of(size, align).unwrap();
                assert!(bytes >= size && bytes % align == 0 && bytes.is_power_of_two());
                assert!(SLAB_BYTES % bytes == 0);
            }
        }
        assert_eq!(class_of(MAX_SIZE, 8), None);
        assert_eq!(class_of(8, MAX_ALIGN * 2), None);
    }

    #[test]
    fn blocks_are_disjoint_aligned_and_reused() {
        let mut blocks = Vec::new();
        for i in 0..2000usize {
            let size = 1 + (i * 7919) % 70_000 % MAX_SIZE;
            let align = [8, 16, 64, 4096][i % 4];
            let p = {
                let _g = super::super::thread::ReentryGuard::enter();
                alloc(size, align)
            };
            assert!(!p.is_null());
            let p = p as usize;
            assert!(contains(p) && p % align == 0);
            assert!(usable_size(p) >= size);
            // SAFETY: the block has `size` writable bytes.
            unsafe { std::ptr::write_bytes(p as *mut u8, 0xAB, size) };
            blocks.push((p, size));
        }
        let mut sorted = blocks.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {w:?}");
        }
        let (p, size) = blocks[8];
        // SAFETY: a live block of this heap, not used again.
        unsafe { free(p) };
        let again = {
            let _g = super::super::thread::ReentryGuard::enter();
            alloc(size, 8) as usize
        };
        assert_eq!(again, p, "a freed block is reused first");
        assert!(!contains(0x1000));
    }
}
