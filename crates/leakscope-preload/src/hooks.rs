//! The exported C allocation functions. Each asks the collection core what
//! to do with the block (untracked, exact, sampled), calls glibc, and records
//! or forgets the block; the fast path of `malloc` is one thread-local
//! subtraction, that of `free` one test of the address's low bits.

use std::ffi::{c_int, c_void};
use std::ptr::null_mut;

use leakscope::frontend::{
    count_down, may_be_tracked, plan_alloc, plan_slow, record_alloc, restore_after_failed_realloc,
    untrack, Plan, Settings, SAMPLED_ALIGN,
};

use crate::libc_direct::{
    __libc_calloc, __libc_free, __libc_malloc, __libc_memalign, __libc_realloc, MALLOC_ALIGN,
};

/// Settings from the environment (`LEAKSCOPE_MODE`, `LEAKSCOPE_RATE`, ...),
/// with the outputs it asks for (`LEAKSCOPE_OUT`, `LEAKSCOPE_REFS_OUT`,
/// `LEAKSCOPE_DIR`).
static SETTINGS: Settings = Settings::new().with_on_init(crate::at_exit::on_init);

/// Allocates `size` bytes aligned to `align` (a power of two) as `plan`
/// says, zeroed if asked, and records it.
///
/// # Safety
/// Calls into glibc; `align` must be a power of two.
unsafe fn allocate(size: usize, align: usize, zeroed: bool, plan: Plan) -> *mut c_void {
    // SAFETY: plain calls into glibc; a block of `size` bytes is writable.
    unsafe {
        let p = match plan {
            // Sampled blocks are 256-aligned whatever their size: that is how
            // `free` (which has no size) tells candidates from the rest.
            Plan::Sampled => __libc_memalign(align.max(SAMPLED_ALIGN), size),
            _ if align > MALLOC_ALIGN => __libc_memalign(align, size),
            _ if zeroed => return record(__libc_calloc(1, size), size, plan, align, zeroed),
            _ => __libc_malloc(size),
        };
        if zeroed && !p.is_null() {
            std::ptr::write_bytes(p.cast::<u8>(), 0, size);
        }
        record(p, size, plan, align, zeroed)
    }
}

/// Records a fresh block; a sample the tables could not take is replaced by
/// a block allocated as asked (nothing would remember its alignment).
///
/// # Safety
/// `p` is null or a glibc block of `size` bytes just allocated under `plan`.
unsafe fn record(
    p: *mut c_void,
    size: usize,
    plan: Plan,
    align: usize,
    zeroed: bool,
) -> *mut c_void {
    if p.is_null() || plan == Plan::Untracked || record_alloc(p.cast(), size, plan) {
        return p;
    }
    // SAFETY: `p` is ours and unrecorded; the replacement is untracked.
    unsafe {
        __libc_free(p);
        allocate(size, align, zeroed, Plan::Untracked)
    }
}

/// Forgets a block about to go back to glibc (or be reallocated).
fn forget(p: *mut c_void) -> Option<leakscope::frontend::TrackedBlock> {
    if may_be_tracked(p.cast(), 0) {
        untrack(p.cast())
    } else {
        None
    }
}

#[cold]
#[inline(never)]
unsafe fn malloc_slow(size: usize, zeroed: bool) -> *mut c_void {
    let plan = plan_slow(size, &SETTINGS);
    // SAFETY: forwarded to glibc with a valid alignment.
    unsafe { allocate(size, MALLOC_ALIGN, zeroed, plan) }
}

/// # Safety
/// C's `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if count_down(size) {
        // SAFETY: plain call into glibc.
        unsafe { __libc_malloc(size) }
    } else {
        // SAFETY: as above.
        unsafe { malloc_slow(size, false) }
    }
}

/// # Safety
/// C's `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return null_mut();
    };
    if count_down(total) {
        // SAFETY: plain call into glibc.
        unsafe { __libc_calloc(count, size) }
    } else {
        // SAFETY: as above.
        unsafe { malloc_slow(total, true) }
    }
}

/// # Safety
/// C's `free`.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    forget(ptr);
    // SAFETY: `ptr` is a glibc block (every block we hand out is one).
    unsafe { __libc_free(ptr) }
}

/// `cfree`, an old alias some programs still call.
///
/// # Safety
/// C's `free`.
#[no_mangle]
pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
    // SAFETY: same contract.
    unsafe { free(ptr) }
}

/// # Safety
/// C's `realloc`.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        // SAFETY: realloc(NULL, n) is malloc(n).
        return unsafe { malloc(size) };
    }
    let old = forget(ptr);
    let plan = plan_alloc(size, &SETTINGS);
    if plan == Plan::Sampled {
        // The new block must be 256-aligned: move by hand.
        // SAFETY: `ptr` is a live glibc block; glibc's usable size bounds
        // what can be read from it.
        unsafe {
            let q = allocate(size, MALLOC_ALIGN, false, plan);
            if q.is_null() {
                restore_after_failed_realloc(ptr.cast(), old);
                return q;
            }
            let readable = libc::malloc_usable_size(ptr);
            std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), readable.min(size));
            __libc_free(ptr);
            return q;
        }
    }
    // SAFETY: `ptr` is a glibc block (glibc's realloc also takes memalign'd
    // ones; the result need only be malloc-aligned).
    let q = unsafe { __libc_realloc(ptr, size) };
    if q.is_null() {
        if size != 0 {
            // Failed: the old block is still there.
            restore_after_failed_realloc(ptr.cast(), old);
        }
        return q;
    }
    // SAFETY: `q` is a fresh glibc block of `size` bytes.
    unsafe { record(q, size, plan, MALLOC_ALIGN, false) }
}

/// # Safety
/// C's `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: same contract as realloc.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// Aligned allocation shared by the memalign family.
///
/// # Safety
/// `align` must be a power of two.
unsafe fn aligned(align: usize, size: usize) -> *mut c_void {
    let plan = plan_alloc(size, &SETTINGS);
    // SAFETY: forwarded with a power-of-two alignment.
    unsafe { allocate(size, align, false, plan) }
}

/// # Safety
/// C's `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % std::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    // SAFETY: checked power of two.
    let p = unsafe { aligned(align, size) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable pointer slot.
    unsafe { *out = p };
    0
}

/// # Safety
/// C's `aligned_alloc`.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    // SAFETY: checked power of two.
    unsafe { aligned(align, size) }
}

/// # Safety
/// C's `memalign`.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // glibc rounds a non-power-of-two alignment up; so do we.
    let align = align.max(1).checked_next_power_of_two().unwrap_or(0);
    if align == 0 {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    // SAFETY: a power of two.
    unsafe { aligned(align, size) }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// # Safety
/// C's `valloc`.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: the page size is a power of two.
    unsafe { aligned(page_size(), size) }
}

/// # Safety
/// C's `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    let Some(rounded) = size.max(1).checked_next_multiple_of(page) else {
        set_errno(libc::ENOMEM);
        return null_mut();
    };
    // SAFETY: the page size is a power of two.
    unsafe { aligned(page, rounded) }
}

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}
