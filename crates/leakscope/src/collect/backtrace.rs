//! Call-stack capture inside the allocator.
//!
//! The fast way is a walk of the frame-pointer chain: every function built
//! with frame pointers saves its caller's frame pointer and return address in
//! a two-word record on the stack, so a stack of 20 frames costs 20 dependent
//! loads. Every record address is checked against this thread's stack bounds
//! before it is read, so a frame without a frame pointer (whose register holds
//! some other value) ends the walk instead of faulting.
//!
//! Where the chain is broken early (code built without frame pointers), the
//! walk is finished with libunwind's `unw_backtrace` if the library is present
//! (see [`super::unwind`]). libgcc's `_Unwind_Backtrace` is never used here: it
//! is slow and takes locks that may be held by the very `malloc` we are in.

use super::thread::{self, ThreadState};

/// Deepest stack recorded; deeper stacks keep their innermost frames.
pub const MAX_FRAMES: usize = 128;

/// Reads the frame pointer of the calling function.
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading a register has no side effects.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading a register has no side effects.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

/// Looks up (once per thread) the bounds of the current thread's stack.
fn stack_bounds(t: &ThreadState) -> Option<(usize, usize)> {
    let high = t.stack_high.get();
    if high == usize::MAX {
        return None;
    }
    if high != 0 {
        return Some((t.stack_low.get(), high));
    }
    // SAFETY: `attr` is initialised by pthread_getattr_np before any read and
    // destroyed once; pthread_attr_getstack writes into locals we own. For the
    // main thread glibc reads /proc/self/maps with malloc; we run with the
    // re-entry guard held, so those allocations pass through untracked.
    let bounds = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            None
        } else {
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            ok.then(|| (addr as usize, addr as usize + size))
        }
    };
    match bounds {
        Some((low, high)) => {
            t.stack_low.set(low);
            t.stack_high.set(high);
        }
        None => t.stack_high.set(usize::MAX),
    }
    bounds
}

/// How a frame-pointer walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalkEnd {
    /// Reached the outermost frame (a null frame pointer or return address).
    Complete,
    /// Stopped at a frame pointer outside the stack: some caller has no frame
    /// pointer, and frames beyond it are missing.
    Broken,
    /// Filled the buffer.
    Full,
}

/// Captures return addresses of the callers of the function that calls this
/// one, innermost first, into `out`. Returns how many were written.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize; MAX_FRAMES]) -> usize {
    if super::unwind::always_dwarf() {
        if let Some(n) = super::unwind::backtrace(out) {
            return n;
        }
    }
    let (n, end) = walk_frame_pointers(out);
    if end == WalkEnd::Broken {
        if let Some(n) = super::unwind::backtrace(out) {
            return n;
        }
    }
    n
}

/// The frame-pointer walk on its own.
#[inline(never)]
pub(crate) fn walk_frame_pointers(out: &mut [usize; MAX_FRAMES]) -> (usize, WalkEnd) {
    let mut fp = frame_pointer();
    let here = &fp as *const usize as usize;
    let Some((low, high)) = thread::with(stack_bounds) else {
        return (0, WalkEnd::Broken);
    };
    // On an alternate signal stack or a user-space coroutine stack we cannot
    // tell which addresses are mapped; record nothing rather than guess.
    if here < low || here >= high {
        return (0, WalkEnd::Broken);
    }
    let mut n = 0;
    while n < MAX_FRAMES {
        // A frame record is two words at `fp`: the caller's frame pointer,
        // then the return address. It lives above our own locals.
        if fp < here || fp % std::mem::align_of::<usize>() != 0 || fp > high - 16 {
            return (n, WalkEnd::Broken);
        }
        // SAFETY: `fp` is aligned and `[fp, fp + 16)` lies inside
        // `[here, high)`, the live part of this thread's stack, which is
        // mapped and readable.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            return (n, WalkEnd::Complete);
        }
        out[n] = ret;
        n += 1;
        if next == 0 {
            return (n, WalkEnd::Complete);
        }
        if next <= fp {
            // Frames only move toward the stack's high end; anything else is
            // not a frame pointer.
            return (n, WalkEnd::Broken);
        }
        fp = next;
    }
    (n, WalkEnd::Full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn depth_three(out: &mut [usize; MAX_FRAMES]) -> (usize, WalkEnd) {
        std::hint::black_box(depth_two(out))
    }
    #[inline(never)]
    fn depth_two(out: &mut [usize; MAX_FRAMES]) -> (usize, WalkEnd) {
        std::hint::black_box(walk_frame_pointers(out))
    }

    #[test]
    fn walk_finds_callers_and_ends_cleanly() {
        let mut out = [0; MAX_FRAMES];
        let (n, end) = depth_three(&mut out);
        assert!(n >= 3, "only {n} frames");
        assert_ne!(end, WalkEnd::Full);
        // The first two return addresses lie inside our two helpers, in order.
        let two = depth_two as *const () as usize;
        let three = depth_three as *const () as usize;
        assert!(
            out[0] > two && out[0] < two + 256,
            "{:#x} vs {two:#x}",
            out[0]
        );
        assert!(
            out[1] > three && out[1] < three + 256,
            "{:#x} vs {three:#x}",
            out[1]
        );
    }

    #[test]
    fn walk_reaches_the_thread_entry() {
        let handle = std::thread::spawn(|| {
            let mut out = [0; MAX_FRAMES];
            walk_frame_pointers(&mut out)
        });
        let (n, end) = handle.join().unwrap();
        assert!(n >= 2);
        println!("thread walk: {n} frames, {end:?}");
    }
}
