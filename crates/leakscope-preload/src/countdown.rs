//! The calling thread's sampling countdown, in initial-exec TLS
//! (`countdown.c`): on x86-64 reached with the thread pointer and an offset
//! from the GOT, no `__tls_get_addr` call. Elsewhere an ordinary
//! thread-local stands in.

use std::cell::Cell;

#[cfg(target_arch = "x86_64")]
mod imp {
    /// The countdown's address for this thread.
    #[inline(always)]
    pub(super) fn countdown() -> *mut i64 {
        let offset: usize;
        let thread_pointer: usize;
        // SAFETY: the GOT slot holds the variable's offset from the thread
        // pointer (the dynamic linker fills it: the variable is in the
        // static TLS block of a library loaded at start-up), and %fs:0 holds
        // the thread pointer itself (x86-64 TLS ABI). Both are plain loads.
        unsafe {
            std::arch::asm!(
                "mov {off}, qword ptr [rip + leakscope_preload_countdown@GOTTPOFF]",
                "mov {tp}, qword ptr fs:[0]",
                off = out(reg) offset,
                tp = out(reg) thread_pointer,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        thread_pointer.wrapping_add(offset) as *mut i64
    }

    /// Subtracts `size` from this thread's countdown; true while it stays
    /// non-negative (the allocation is not sampled).
    #[inline(always)]
    pub(crate) fn count_down(size: usize) -> bool {
        let left: i64;
        // SAFETY: as in `countdown`; the read-modify-write is on this
        // thread's own variable (a signal handler interrupting it only
        // loses a few bytes of count).
        unsafe {
            std::arch::asm!(
                "mov {off}, qword ptr [rip + leakscope_preload_countdown@GOTTPOFF]",
                "mov {left}, qword ptr fs:[{off}]",
                "sub {left}, {size}",
                "mov qword ptr fs:[{off}], {left}",
                off = out(reg) _,
                left = out(reg) left,
                size = in(reg) size,
                options(nostack),
            );
        }
        left >= 0
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static COUNTDOWN: Cell<i64> = const { Cell::new(-1) };
    }

    #[inline(always)]
    pub(super) fn countdown() -> *mut i64 {
        COUNTDOWN.with(|c| c.as_ptr())
    }

    #[inline(always)]
    pub(crate) fn count_down(size: usize) -> bool {
        COUNTDOWN.with(|c| {
            let left = c.get().wrapping_sub(size as i64);
            c.set(left);
            left >= 0
        })
    }
}

pub(crate) use imp::count_down;

/// The countdown's address for this thread (for the core's mode switches).
pub(crate) fn countdown_ptr() -> *mut i64 {
    imp::countdown()
}

/// This thread's countdown, for the core's slow path.
#[inline(always)]
pub(crate) fn countdown_cell() -> &'static Cell<i64> {
    // SAFETY: the variable is this thread's, lives as long as the thread,
    // and is only ever touched by this thread (Cell: no references into it
    // are handed out); `Cell<i64>` has the layout of `i64`.
    unsafe { &*(imp::countdown() as *const Cell<i64>) }
}
