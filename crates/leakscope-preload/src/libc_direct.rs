//! glibc's allocator, called by its internal entry points: what the hooks
//! forward to, and the allocator of this library's own Rust code (so that
//! its allocations bypass the hooks).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

extern "C" {
    pub(crate) fn __libc_malloc(size: usize) -> *mut c_void;
    pub(crate) fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    pub(crate) fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    pub(crate) fn __libc_free(ptr: *mut c_void);
    pub(crate) fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
}

/// malloc's guaranteed alignment on x86-64 and aarch64 glibc.
pub(crate) const MALLOC_ALIGN: usize = 16;

/// A `GlobalAlloc` over glibc's internal entry points.
pub struct LibcDirect;

// SAFETY: every block comes from glibc with at least the layout's alignment
// (malloc's 16 bytes, or memalign for more) and is freed with glibc's free,
// which accepts blocks from any of these entry points.
unsafe impl GlobalAlloc for LibcDirect {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into glibc's allocator.
        unsafe {
            if layout.align() <= MALLOC_ALIGN {
                __libc_malloc(layout.size()).cast()
            } else {
                __libc_memalign(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain call into glibc's allocator.
            return unsafe { __libc_calloc(1, layout.size()).cast() };
        }
        // SAFETY: as `alloc`; the block has `layout.size()` writable bytes.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                std::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of glibc's entry points above.
        unsafe { __libc_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `ptr` is a glibc block; glibc's realloc keeps malloc's
            // alignment, which is all the layout asks.
            return unsafe { __libc_realloc(ptr.cast(), new_size).cast() };
        }
        // SAFETY: over-aligned blocks move by hand: a new block with the
        // same alignment, the common prefix copied, the old one freed.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let q = self.alloc(new_layout);
            if !q.is_null() {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            q
        }
    }
}
