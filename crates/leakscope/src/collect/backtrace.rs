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

use std::mem::MaybeUninit;

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
    // The main thread's stack ends at `__libc_stack_end` (the stack pointer
    // at process entry; every frame lies below it). Asking glibc instead
    // would deadlock under LD_PRELOAD: for the main thread
    // pthread_getattr_np reads /proc/self/maps with malloc while holding the
    // thread's lock, and that malloc comes back here for the same lock.
    // SAFETY: getpid and gettid have no preconditions.
    let main_thread = unsafe { libc::getpid() == libc::gettid() };
    let bounds = if main_thread {
        main_stack_end().map(|high| (0, high))
    } else {
        thread_stack_bounds()
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

/// Where the main thread's stack ends, from the dynamic loader.
fn main_stack_end() -> Option<usize> {
    extern "C" {
        static __libc_stack_end: *mut libc::c_void;
    }
    // SAFETY: a plain read of a pointer-sized variable the loader sets before
    // any code of the program runs and never changes.
    let end = unsafe { __libc_stack_end } as usize;
    (end != 0).then_some(end)
}

/// A thread's stack bounds from glibc (any thread but the main one: for
/// those glibc neither allocates nor reads files).
fn thread_stack_bounds() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialised by pthread_getattr_np before any read and
    // destroyed once; pthread_attr_getstack writes into locals we own.
    unsafe {
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
    }
}

/// Return addresses of one stack, innermost first. Not zero-initialised:
/// filling 1 KiB on every capture would cost more than the walk.
pub(crate) struct StackBuf {
    frames: [MaybeUninit<usize>; MAX_FRAMES],
    len: usize,
}

impl StackBuf {
    pub(crate) fn new() -> Self {
        StackBuf {
            frames: [const { MaybeUninit::uninit() }; MAX_FRAMES],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, addr: usize) {
        if self.len < MAX_FRAMES {
            self.frames[self.len].write(addr);
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[usize] {
        // SAFETY: the first `len` entries were written by `push`.
        unsafe { std::slice::from_raw_parts(self.frames.as_ptr().cast::<usize>(), self.len) }
    }
}

/// How a frame-pointer walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WalkEnd {
    /// Reached the outermost frame (a null frame pointer or return address).
    Complete,
    /// Stopped because the frame record at `last` points to something that is
    /// not a frame record: the next caller has no frame pointer.
    Broken { last: usize },
    /// Filled the buffer.
    Full,
}

/// Captures return addresses of the callers of the function that calls this
/// one, innermost first.
///
/// Under the `auto` unwind policy a broken frame-pointer chain is finished by
/// libunwind, except where this thread's chain is known to end anyway: the
/// main thread's chain breaks at `main`'s caller in libc on every walk. The
/// first time a walk breaks at a given frame, libunwind is asked once; if it
/// finds at most a few more frames, that frame is remembered as this thread's
/// outer edge and later walks that end there are taken as complete.
#[inline(never)]
pub(crate) fn capture(out: &mut StackBuf) {
    if super::unwind::always_dwarf() && super::unwind::backtrace(out) {
        return;
    }
    let WalkEnd::Broken { last } = walk_frame_pointers(out) else {
        return;
    };
    if super::unwind::policy() != super::unwind::UnwindPolicy::Auto
        || thread::with(|t| t.fp_outer_edge.get()) == last
    {
        return;
    }
    let mut dwarf = StackBuf::new();
    if !super::unwind::backtrace(&mut dwarf) {
        return;
    }
    const FEW: usize = 3;
    if dwarf.len <= out.len + FEW {
        thread::with(|t| t.fp_outer_edge.set(last));
    } else {
        *out = dwarf;
    }
}

/// The frame-pointer walk on its own.
#[inline(never)]
pub(crate) fn walk_frame_pointers(out: &mut StackBuf) -> WalkEnd {
    let mut fp = frame_pointer();
    let here = &fp as *const usize as usize;
    let Some((low, high)) = thread::with(stack_bounds) else {
        return WalkEnd::Broken { last: 0 };
    };
    // On an alternate signal stack or a user-space coroutine stack we cannot
    // tell which addresses are mapped; record nothing rather than guess.
    if here < low || here >= high - 16 {
        return WalkEnd::Broken { last: 0 };
    }
    // A frame record (two words: the caller's frame pointer, then the return
    // address) must lie in [here, high - 16], aligned: one unsigned compare
    // checks both ends.
    let span = high - 16 - here;
    let mut last = 0;
    let mut n = out.len;
    while n < MAX_FRAMES {
        if fp.wrapping_sub(here) > span || fp % std::mem::align_of::<usize>() != 0 {
            out.len = n;
            return WalkEnd::Broken { last };
        }
        // SAFETY: `fp` is aligned and `[fp, fp + 16)` lies inside
        // `[here, high)`, the live part of this thread's stack, which is
        // mapped and readable.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            out.len = n;
            return WalkEnd::Complete;
        }
        out.frames[n].write(ret);
        n += 1;
        if next <= fp {
            out.len = n;
            // A null link is the outermost frame; anything else that does not
            // move toward the stack's high end is not a frame pointer.
            return if next == 0 {
                WalkEnd::Complete
            } else {
                WalkEnd::Broken { last: fp }
            };
        }
        last = fp;
        fp = next;
    }
    out.len = n;
    WalkEnd::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn depth_three(out: &mut StackBuf) -> WalkEnd {
        std::hint::black_box(depth_two(out))
    }
    #[inline(never)]
    fn depth_two(out: &mut StackBuf) -> WalkEnd {
        std::hint::black_box(walk_frame_pointers(out))
    }

    #[test]
    fn walk_finds_callers_and_ends_cleanly() {
        let mut out = StackBuf::new();
        let end = depth_three(&mut out);
        let frames = out.as_slice();
        assert!(frames.len() >= 3, "only {} frames", frames.len());
        assert_ne!(end, WalkEnd::Full);
        // The first two return addresses lie inside our two helpers, in order.
        let two = depth_two as *const () as usize;
        let three = depth_three as *const () as usize;
        assert!(
            frames[0] > two && frames[0] < two + 256,
            "{:#x} vs {two:#x}",
            frames[0]
        );
        assert!(
            frames[1] > three && frames[1] < three + 256,
            "{:#x} vs {three:#x}",
            frames[1]
        );
    }

    #[test]
    fn spawned_threads_walk_to_their_entry() {
        let end = std::thread::spawn(|| {
            let mut out = StackBuf::new();
            let end = walk_frame_pointers(&mut out);
            assert!(out.as_slice().len() >= 2);
            end
        })
        .join()
        .unwrap();
        assert_eq!(end, WalkEnd::Complete);
    }

    #[test]
    fn a_full_buffer_stops_the_walk() {
        #[inline(never)]
        fn recurse(depth: usize, out: &mut StackBuf) -> WalkEnd {
            if depth == 0 {
                walk_frame_pointers(out)
            } else {
                std::hint::black_box(recurse(depth - 1, std::hint::black_box(out)))
            }
        }
        let mut out = StackBuf::new();
        assert_eq!(recurse(MAX_FRAMES + 10, &mut out), WalkEnd::Full);
        assert_eq!(out.as_slice().len(), MAX_FRAMES);
    }
}
