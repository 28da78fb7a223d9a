//! Memory for the profiler's own tables, straight from the kernel.
//!
//! Nothing here goes through the global allocator, so the profiler can grow
//! its tables while it is *inside* an allocation without recursing, and its
//! memory never shows up in the profiles it writes.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system page size (4 KiB on the platforms we build for; the kernel
/// rounds mappings up anyway).
pub(crate) const PAGE: usize = 4096;

fn round_to_pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE) * PAGE
}

/// Maps `bytes` (rounded up to pages) of zeroed, private, read-write memory.
/// Returns `None` when the kernel refuses.
pub(crate) fn map_zeroed(bytes: usize) -> Option<NonNull<u8>> {
    map_anonymous(bytes, libc::MAP_PRIVATE)
}

/// Maps `bytes` (rounded up to pages) of zeroed memory shared with the
/// processes this one forks afterwards, committed only where written
/// (`MAP_NORESERVE`): the snapshot child's helpers return their results in
/// it. Returns `None` when the kernel refuses.
pub(crate) fn map_shared_zeroed(bytes: usize) -> Option<NonNull<u8>> {
    map_anonymous(bytes, libc::MAP_SHARED | libc::MAP_NORESERVE)
}

fn map_anonymous(bytes: usize, flags: libc::c_int) -> Option<NonNull<u8>> {
    let len = round_to_pages(bytes.max(1));
    // SAFETY: an anonymous mapping with a null hint has no preconditions;
    // the kernel picks an unused range. The result is checked against
    // MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        register(p as usize, len);
        NonNull::new(p.cast())
    }
}

/// Mappings of leakscope's own (tables, the snapshot child's arrays), so
/// that heap snapshots can tell them from the program's memory: the heap
/// walker must not mistake a table's page for an mmapped chunk, and the
/// memory breakdown counts them as leakscope's. Best effort: a mapping made
/// when every slot is taken is not listed (the walker's own checks still
/// catch what it would confuse).
const OWN_SLOTS: usize = 4096;
static OWN_START: [AtomicUsize; OWN_SLOTS] = [const { AtomicUsize::new(0) }; OWN_SLOTS];
static OWN_LEN: [AtomicUsize; OWN_SLOTS] = [const { AtomicUsize::new(0) }; OWN_SLOTS];
/// Where the search for a free slot starts (slots fill from the front).
static OWN_HINT: AtomicUsize = AtomicUsize::new(0);

fn register(start: usize, len: usize) {
    let hint = OWN_HINT.load(Ordering::Relaxed);
    for i in (hint..OWN_SLOTS).chain(0..hint) {
        if OWN_START[i]
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            OWN_LEN[i].store(len, Ordering::Release);
            OWN_HINT.store(i + 1, Ordering::Relaxed);
            return;
        }
    }
}

fn deregister(start: usize) {
    for i in 0..OWN_SLOTS {
        if OWN_START[i].load(Ordering::Acquire) == start {
            OWN_LEN[i].store(0, Ordering::Release);
            OWN_START[i].store(0, Ordering::Release);
            OWN_HINT.fetch_min(i, Ordering::Relaxed);
            return;
        }
    }
}

/// Calls `f(start, len)` for each of leakscope's own mappings listed.
pub(crate) fn own_mappings(mut f: impl FnMut(usize, usize)) {
    for i in 0..OWN_SLOTS {
        let start = OWN_START[i].load(Ordering::Acquire);
        let len = OWN_LEN[i].load(Ordering::Acquire);
        if start != 0 && len != 0 {
            f(start, len);
        }
    }
}

/// Returns memory obtained from [`map_zeroed`].
///
/// # Safety
/// `ptr` and `bytes` must be exactly a pointer returned by `map_zeroed` (or
/// `map_shared_zeroed`) and the size passed to it, and nothing may use the
/// memory afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, bytes: usize) {
    // SAFETY: the caller guarantees this is a whole mapping we created and
    // that it is no longer referenced.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), round_to_pages(bytes.max(1)));
    }
    deregister(ptr.as_ptr() as usize);
}

/// A bump allocator over mapped chunks, for data that lives as long as the
/// process (interned stacks). Not thread-safe: callers hold a lock.
pub(crate) struct Arena {
    next: usize,
    end: usize,
}

impl Arena {
    const CHUNK: usize = 1 << 20;

    pub(crate) const fn new() -> Self {
        Arena { next: 0, end: 0 }
    }

    /// Allocates `bytes` aligned to 8, or `None` when memory is exhausted.
    pub(crate) fn alloc(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let bytes = bytes.next_multiple_of(8);
        if self.end - self.next < bytes {
            let chunk = bytes.max(Self::CHUNK);
            let base = map_zeroed(chunk)?;
            self.next = base.as_ptr() as usize;
            self.end = self.next + round_to_pages(chunk);
        }
        let p = self.next;
        self.next += bytes;
        NonNull::new(p as *mut u8)
    }
}

/// Asks for the cache line holding `addr`, which need not be mapped.
#[inline(always)]
pub(crate) fn prefetch_address(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that loads nothing into registers and
    // is dropped for an address with no mapping: it cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch(addr as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_mappings_are_listed_until_unmapped() {
        let p = map_zeroed(3 * PAGE).unwrap();
        let listed = |p: NonNull<u8>| {
            let mut found = None;
            own_mappings(|s, l| {
                if s == p.as_ptr() as usize {
                    found = Some(l);
                }
            });
            found
        };
        assert_eq!(listed(p), Some(3 * PAGE));
        // SAFETY: mapped just above with this size, unused.
        unsafe { unmap(p, 3 * PAGE) };
        assert_eq!(listed(p), None);
    }

    #[test]
    fn arena_hands_out_aligned_disjoint_zeroed_memory() {
        let mut arena = Arena::new();
        let a = arena.alloc(3).unwrap().as_ptr() as usize;
        let b = arena.alloc(16).unwrap().as_ptr() as usize;
        assert_eq!(a % 8, 0);
        assert_eq!(b, a + 8);
        let big = arena.alloc(3 << 20).unwrap();
        // SAFETY: the arena just handed out 3 MiB at `big`.
        let zero = unsafe { *big.as_ptr().add((3 << 20) - 1) };
        assert_eq!(zero, 0);
    }
}
