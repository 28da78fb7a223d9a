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

/// Start of the reservation; 0 until the first small sampled block.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Its size (a power of two, and its alignment); set before `BASE`.
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Set when the reservation was refused: sampled small blocks then stay
/// unsampled (the front end allocates them from the inner allocator).
static REFUSED: AtomicU8 = AtomicU8::new(0);
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
    let base = BASE.load(Ordering::Acquire);
    (base != 0).then_some((base, LEN.load(Ordering::Relaxed)))
}

/// Is `ptr` a block of this heap?
#[inline]
pub(crate) fn contains(ptr: usize) -> bool {
    let base = BASE.load(Ordering::Relaxed);
    base != 0 && ptr.wrapping_sub(base) < LEN.load(Ordering::Relaxed)
}

/// Reserves the region (once). Returns its base, or `None` if the kernel
/// refused (then never asks again).
fn reserve() -> Option<usize> {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        return Some(base);
    }
    if REFUSED.load(Ordering::Relaxed) != 0 {
        return None;
    }
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
            REFUSED.store(1, Ordering::Relaxed);
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
        LEN.store(len, Ordering::Relaxed);
        BASE.store(aligned, Ordering::Release);
        return Some(aligned);
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
    let Some(base) = reserve() else {
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
        if heap.next_slab == LEN.load(Ordering::Relaxed) >> SLAB_SHIFT {
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
    let slab = (ptr - BASE.load(Ordering::Relaxed)) >> SLAB_SHIFT;
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
    let slab = (ptr - BASE.load(Ordering::Relaxed)) >> SLAB_SHIFT;
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
