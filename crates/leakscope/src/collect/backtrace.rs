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
pub(crate) fn frame_pointer() -> usize {
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

/// The bounds of the current thread's stack, looked up once per thread.
#[inline(always)]
fn stack_bounds(t: &ThreadState) -> Option<(usize, usize)> {
    match t.stack_high.get() {
        0 => find_stack_bounds(t),
        usize::MAX => None,
        high => Some((t.stack_low.get(), high)),
    }
}

/// [`stack_bounds`] the first time on a thread.
#[cold]
#[inline(never)]
fn find_stack_bounds(t: &ThreadState) -> Option<(usize, usize)> {
    // The mapping that holds this thread's stack, read from /proc/self/maps
    // with plain system calls. Not pthread_getattr_np: it holds the thread's
    // lock while it allocates (a CPU-set buffer; for the main thread also
    // /proc/self/maps through stdio), and under LD_PRELOAD that allocation,
    // made by the program's own call, comes back here for the same lock.
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let bounds = mapping_containing(here)
        .map(|(_, end)| (0, end))
        .or_else(|| main_stack_end().map(|end| (0, end)));
    match bounds {
        Some((low, high)) => {
            t.stack_low.set(low);
            t.stack_high.set(high);
        }
        None => t.stack_high.set(usize::MAX),
    }
    bounds
}

/// Where the main thread's stack ends, from the dynamic loader (every frame
/// of the main thread lies below the stack pointer at process entry).
fn main_stack_end() -> Option<usize> {
    // SAFETY: getpid and gettid have no preconditions.
    if unsafe { libc::getpid() != libc::gettid() } {
        return None;
    }
    extern "C" {
        static __libc_stack_end: *mut libc::c_void;
    }
    // SAFETY: a plain read of a pointer-sized variable the loader sets before
    // any code of the program runs and never changes.
    let end = unsafe { __libc_stack_end } as usize;
    (end != 0).then_some(end)
}

/// The `[start, end)` of the mapping that contains `addr`, parsed from
/// /proc/self/maps with `open`/`read` into a buffer on the stack: no
/// allocation, no lock.
fn mapping_containing(addr: usize) -> Option<(usize, usize)> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut line = [0u8; 64];
    let mut line_len = 0usize;
    let mut skipping = false;
    let mut found = None;
    'read: loop {
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b == b'\n' {
                if let Some((start, end)) = parse_range(&line[..line_len]) {
                    if start <= addr && addr < end {
                        found = Some((start, end));
                        break 'read;
                    }
                }
                line_len = 0;
                skipping = false;
            } else if !skipping {
                // Only the address range at the start of a line matters.
                if b == b' ' || line_len == line.len() {
                    skipping = true;
                } else {
                    line[line_len] = b;
                    line_len += 1;
                }
            }
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

/// Parses `start-end` (hexadecimal).
fn parse_range(text: &[u8]) -> Option<(usize, usize)> {
    let dash = text.iter().position(|&b| b == b'-')?;
    let hex = |digits: &[u8]| -> Option<usize> {
        if digits.is_empty() || digits.len() > 16 {
            return None;
        }
        digits.iter().try_fold(0usize, |acc, &d| {
            let v = (d as char).to_digit(16)?;
            Some(acc << 4 | v as usize)
        })
    };
    Some((hex(&text[..dash])?, hex(&text[dash + 1..])?))
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
    // The walk may have started at the front end's frame: drop what
    // libunwind found below it, so the two are compared like for like.
    if let Some(&first) = out.as_slice().first() {
        if let Some(i) = dwarf.as_slice().iter().position(|&r| r == first) {
            dwarf.frames.copy_within(i..dwarf.len, 0);
            dwarf.len -= i;
        }
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
    // This function's own frame record: the live part of the stack starts
    // at or below it. (A value, not the address of a local, so that the
    // walk keeps its frame pointer in a register.)
    let here = frame_pointer();
    let mut fp = here;
    let Some((low, high, user_frame)) =
        thread::with(|t| stack_bounds(t).map(|(low, high)| (low, high, t.user_frame.get())))
    else {
        return WalkEnd::Broken { last: 0 };
    };
    // On an alternate signal stack or a user-space coroutine stack we cannot
    // tell which addresses are mapped; record nothing rather than guess.
    if here < low || here >= high - 16 {
        return WalkEnd::Broken { last: 0 };
    }
    // Inside a front end's slow path, start at its frame: the frames below
    // it are the profiler's own (a live frame above this one, so it passes
    // the checks below like any other record).
    if user_frame > fp && user_frame < high - 16 {
        fp = user_frame;
    }
    // A frame record (two words: the caller's frame pointer, then the return
    // address) must lie in [here, high - 16], aligned. Each link must move
    // toward the high end, so after the first record only the upper bound
    // needs checking.
    let limit = high - 16;
    let aligned = |p: usize| p % std::mem::align_of::<usize>() == 0;
    if fp > limit || !aligned(fp) {
        return WalkEnd::Broken { last: 0 };
    }
    let mut n = out.len;
    while n < MAX_FRAMES {
        // SAFETY: `fp` is aligned and `[fp, fp + 16)` lies inside
        // `[here, high)`, the live part of this thread's stack, which is
        // mapped and readable: checked above for the first record, and for
        // each next one below before it becomes `fp`.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            out.len = n;
            return WalkEnd::Complete;
        }
        out.frames[n].write(ret);
        n += 1;
        if next <= fp || next > limit || !aligned(next) {
            out.len = n;
            // A null link is the outermost frame; anything else that does not
            // move toward the stack's high end, or leaves the stack, is not a
            // frame pointer.
            return if next == 0 {
                WalkEnd::Complete
            } else {
                WalkEnd::Broken { last: fp }
            };
        }
        fp = next;
    }
    out.len = n;
    WalkEnd::Full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapping_of_this_threads_stack() {
        let local = 1u64;
        let addr = std::hint::black_box(&local) as *const u64 as usize;
        let (start, end) = mapping_containing(addr).expect("the stack is mapped");
        assert!(start <= addr && addr < end, "{start:#x} {addr:#x} {end:#x}");
        let other = std::thread::spawn(|| {
            let local = 2u64;
            let addr = std::hint::black_box(&local) as *const u64 as usize;
            let (start, end) = mapping_containing(addr).unwrap();
            start <= addr && addr < end
        });
        assert!(other.join().unwrap());
        assert_eq!(parse_range(b"7f00-7f10"), Some((0x7f00, 0x7f10)));
        assert_eq!(parse_range(b"zz-10"), None);
    }

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
