//! DWARF unwinding fallback through libunwind, loaded on demand.
//!
//! Frame-pointer walks lose frames in code built without frame pointers. When
//! that happens and `libunwind.so.8` is installed, its `unw_backtrace` (about
//! 200 ns per stack, no `malloc`, safe to call inside the allocator) finishes
//! the job. The library is opened with `dlopen` rather than linked, so
//! leakscope has no hard dependency on it.
//!
//! `LEAKSCOPE_UNWIND` chooses the policy: `auto` (the default: frame pointers,
//! libunwind when the chain breaks), `fp` (never load libunwind), `dwarf`
//! (always libunwind when available).

use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use std::mem::MaybeUninit;

use super::backtrace::{StackBuf, MAX_FRAMES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum UnwindPolicy {
    Auto = 0,
    FramePointers = 1,
    Dwarf = 2,
}

static POLICY: AtomicU8 = AtomicU8::new(UnwindPolicy::Auto as u8);

const UNTRIED: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;
const UNAVAILABLE: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNTRIED);

type UnwBacktrace = unsafe extern "C" fn(*mut *mut libc::c_void, libc::c_int) -> libc::c_int;
static UNW_BACKTRACE: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

pub(crate) fn set_policy(policy: UnwindPolicy) {
    POLICY.store(policy as u8, Ordering::Relaxed);
}

pub(crate) fn policy() -> UnwindPolicy {
    match POLICY.load(Ordering::Relaxed) {
        1 => UnwindPolicy::FramePointers,
        2 => UnwindPolicy::Dwarf,
        _ => UnwindPolicy::Auto,
    }
}

/// Returns `unw_backtrace`, loading libunwind the first time. Threads that
/// arrive while another one is loading it get `None` rather than waiting.
fn function() -> Option<UnwBacktrace> {
    match STATE.load(Ordering::Acquire) {
        READY => {
            let f = UNW_BACKTRACE.load(Ordering::Relaxed);
            // SAFETY: READY is published only after a non-null pointer to
            // `unw_backtrace`, whose C signature is `UnwBacktrace`, was stored.
            return Some(unsafe { std::mem::transmute::<*mut libc::c_void, UnwBacktrace>(f) });
        }
        UNTRIED => {}
        _ => return None,
    }
    if STATE
        .compare_exchange(UNTRIED, LOADING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return None;
    }
    // SAFETY: dlopen/dlsym take NUL-terminated names; RTLD_LOCAL keeps the
    // library's own `backtrace`/`_Unwind_Backtrace` exports from interposing
    // on anyone else's. The handle is never closed, so the function pointer
    // stays valid for the life of the process.
    let f = unsafe {
        let handle = libc::dlopen(
            c"libunwind.so.8".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if handle.is_null() {
            std::ptr::null_mut()
        } else {
            libc::dlsym(handle, c"unw_backtrace".as_ptr())
        }
    };
    if f.is_null() {
        STATE.store(UNAVAILABLE, Ordering::Release);
        return None;
    }
    UNW_BACKTRACE.store(f, Ordering::Relaxed);
    STATE.store(READY, Ordering::Release);
    function()
}

/// Unwinds the current stack with libunwind into `out` if the policy allows
/// it and the library is available; false otherwise. This function's own
/// frame is dropped, so the result starts, like a frame-pointer walk, with
/// the return address into the capture function.
#[inline(never)]
pub(crate) fn backtrace(out: &mut StackBuf) -> bool {
    if policy() == UnwindPolicy::FramePointers {
        return false;
    }
    let Some(f) = function() else {
        return false;
    };
    const SKIP: usize = 1;
    let mut raw = [const { MaybeUninit::<*mut libc::c_void>::uninit() }; MAX_FRAMES + SKIP];
    // SAFETY: the buffer holds `raw.len()` pointers and we pass that length;
    // unw_backtrace initialises the first `n` it returns.
    let n = unsafe { f(raw.as_mut_ptr().cast(), raw.len() as libc::c_int) };
    let n = (n.max(0) as usize).min(raw.len());
    for r in raw.iter().take(n).skip(SKIP) {
        // SAFETY: entries below `n` were written by unw_backtrace.
        out.push(unsafe { r.assume_init() } as usize);
    }
    true
}

/// Whether stacks should always be unwound with libunwind.
pub(crate) fn always_dwarf() -> bool {
    policy() == UnwindPolicy::Dwarf
}
