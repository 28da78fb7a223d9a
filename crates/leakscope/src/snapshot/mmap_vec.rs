//! A growable array in memory straight from `mmap`, for the snapshot child.
//!
//! The child of a snapshot fork must not call `malloc`: another thread may
//! have held an allocator lock at the fork, and the child inherits it held.
//! Everything the child builds (block index, edges, dominator arrays) lives
//! in `MmapVec`s instead. Only `Copy` element types, so dropping never runs
//! element destructors.

use std::ptr::NonNull;

use crate::collect::raw_mem;

/// Arrays from this size on ask for transparent huge pages: the analysis
/// reads its large arrays at random (a TLB miss per access with 4 KiB
/// pages) and fills them once (a page fault per 4 KiB, slow in a VM).
const HUGE_PAGES_FROM: usize = 4 << 20;

pub(crate) struct MmapVec<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
}

impl<T: Copy> MmapVec<T> {
    pub(crate) fn new() -> Self {
        MmapVec {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        }
    }

    /// An array of `len` copies of `value`, or `None` when memory is refused.
    pub(crate) fn filled(len: usize, value: T) -> Option<Self> {
        let mut v = Self::new();
        v.reserve(len)?;
        for _ in 0..len {
            v.push(value)?;
        }
        Some(v)
    }

    fn bytes_for(cap: usize) -> usize {
        cap.max(1) * std::mem::size_of::<T>().max(1)
    }

    /// Makes room for `extra` more elements.
    pub(crate) fn reserve(&mut self, extra: usize) -> Option<()> {
        let needed = self.len.checked_add(extra)?;
        if needed <= self.cap {
            return Some(());
        }
        let new_cap = needed.max(self.cap * 2).max(64);
        let bytes = Self::bytes_for(new_cap);
        let new = raw_mem::map_zeroed(bytes)?.cast::<T>();
        if bytes >= HUGE_PAGES_FROM {
            // SAFETY: advice on a mapping just made; it changes no contents.
            unsafe { libc::madvise(new.as_ptr().cast(), bytes, libc::MADV_HUGEPAGE) };
        }
        if self.cap > 0 {
            // SAFETY: both regions are live and distinct; `len` elements of
            // the old one are initialised.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len);
                raw_mem::unmap(self.ptr.cast(), Self::bytes_for(self.cap));
            }
        }
        self.ptr = new;
        self.cap = new_cap;
        Some(())
    }

    /// Appends; `None` when memory is refused.
    pub(crate) fn push(&mut self, value: T) -> Option<()> {
        if self.len == self.cap {
            self.reserve(1)?;
        }
        // SAFETY: `len < cap`, so the slot is inside the mapping.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Some(())
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drops the elements from `len` on (keeps the memory).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `len` elements are initialised (dangling but aligned when
        // empty, which a zero-length slice allows).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for MmapVec<T> {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: the mapping was created by `reserve` with this size.
            unsafe { raw_mem::unmap(self.ptr.cast(), Self::bytes_for(self.cap)) };
        }
    }
}

impl<T: Copy> std::ops::Deref for MmapVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy> std::ops::DerefMut for MmapVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_keeps_contents() {
        let mut v = MmapVec::new();
        for i in 0..100_000u64 {
            v.push(i * 3).unwrap();
        }
        assert_eq!(v.len(), 100_000);
        assert_eq!(v[99_999], 299_997);
        v.as_mut_slice().sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(v[0], 299_997);
        let f = MmapVec::filled(10, 7u32).unwrap();
        assert_eq!(&f[..], &[7; 10]);
        assert!(MmapVec::<u8>::new().as_slice().is_empty());
    }
}
