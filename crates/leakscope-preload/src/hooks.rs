//! The exported C allocation functions. Each asks the collection core what
//! to do with the block (untracked, exact, sampled), calls glibc, and records
//! or forgets the block; the fast path of `malloc` is one thread-local
//! subtraction, that of `free` a range test of the address and a test of the
//! block's size in glibc's chunk header.
//!
//! Sampled blocks under 64 KiB come from the collection core's sample heap
//! (leakscope's own address range), so `free` (which is not told the size)
//! knows them by address. Larger sampled blocks are glibc's (calloc's lazily
//! zeroed pages stay untouched) and `free` recognises them as candidates by
//! the size glibc wrote before them.

use std::ffi::{c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicUsize, Ordering};

use leakscope::frontend::{
    alloc_sampled, free_sampled, in_checked_range, in_sample_heap, may_be_tracked, plan_slow_on,
    record_alloc, restore_after_failed_realloc, sample_heap_usable_size, sampled_from_heap,
    untrack, AllocSlowPath, HeapKind, Plan, Settings, ALWAYS_CHECKED_SIZE,
};

use crate::countdown::{count_down, countdown_cell};

use crate::libc_direct::{
    __libc_calloc, __libc_free, __libc_malloc, __libc_memalign, __libc_realloc, MALLOC_ALIGN,
};

/// Settings from the environment (`LEAKSCOPE_MODE`, `LEAKSCOPE_RATE`, ...),
/// with the outputs it asks for (`LEAKSCOPE_OUT`, `LEAKSCOPE_REFS_OUT`,
/// `LEAKSCOPE_DIR`).
static SETTINGS: Settings = Settings::new()
    .with_on_init(crate::at_exit::on_init)
    .with_heap(HeapKind::Glibc);

/// Allocates `size` bytes aligned to `align` (a power of two) as `plan`
/// says, zeroed if asked, and records it.
///
/// # Safety
/// Calls into glibc; `align` must be a power of two.
unsafe fn allocate(size: usize, align: usize, zeroed: bool, mut plan: Plan) -> *mut c_void {
    if plan == Plan::Sampled && sampled_from_heap(size) {
        // Small sampled blocks come from the sample heap: that is how `free`
        // (which has no size) tells them from the rest.
        let p = alloc_sampled(size, align.max(MALLOC_ALIGN));
        if !p.is_null() {
            if zeroed {
                // SAFETY: the block has at least `size` writable bytes.
                unsafe { std::ptr::write_bytes(p, 0, size) };
            }
            return p.cast();
        }
        plan = Plan::Untracked;
    }
    // SAFETY: plain calls into glibc; a block of `size` bytes is writable.
    unsafe {
        let p = match plan {
            _ if align > MALLOC_ALIGN => __libc_memalign(align, size),
            _ if zeroed => return record(__libc_calloc(1, size), size, plan),
            _ => __libc_malloc(size),
        };
        if zeroed && !p.is_null() {
            std::ptr::write_bytes(p.cast::<u8>(), 0, size);
        }
        record(p, size, plan)
    }
}

/// Records a fresh glibc block. A block the tables could not take stays
/// untracked: `free` finding no record for it is the ordinary case.
fn record(p: *mut c_void, size: usize, plan: Plan) -> *mut c_void {
    if !p.is_null() && plan != Plan::Untracked {
        let _errno = KeepErrno::save();
        record_alloc(p.cast(), size, plan);
    }
    p
}

/// Restores `errno` when dropped: the profiler's own work (its
/// initialisation reads files, its tables map memory) must not change what
/// the program sees after a call that succeeded, as glibc's allocator
/// leaves it (and its `free` always does).
struct KeepErrno(c_int);

impl KeepErrno {
    fn save() -> KeepErrno {
        // SAFETY: __errno_location returns this thread's errno slot.
        KeepErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

/// The header word glibc keeps just before a block: its chunk's size, with
/// flags in the low three bits. `None` for a pointer carrying a memory tag
/// (aarch64 MTE), whose header granule is tagged differently: reading it
/// through this pointer would fault.
///
/// # Safety
/// `p` is a live block from glibc's allocator.
unsafe fn chunk_header(p: *mut c_void) -> Option<usize> {
    if cfg!(target_arch = "aarch64") && (p as usize) >> 56 != 0 {
        return None;
    }
    // SAFETY: every glibc block, mmapped or not, memalign'd or not, is
    // preceded by its chunk's size word; the caller owns the block, so the
    // header is mapped and stable.
    Some(unsafe { p.cast::<usize>().sub(1).read() })
}

/// The size of glibc's chunk behind a block: at least the size that was
/// asked for. A block whose header cannot be read counts as large (so
/// `free` checks it).
///
/// # Safety
/// `p` is a live block from glibc's allocator.
unsafe fn chunk_size(p: *mut c_void) -> usize {
    // SAFETY: as the caller promises.
    unsafe { chunk_header(p) }.map_or(usize::MAX, |h| h & !7)
}

/// Must the free of `p` look further? Blocks of the sample heap, and in
/// full mode every block, are in the checked range; outside it, glibc's
/// chunk header (which its free reads next anyway) tells large blocks.
///
/// # Safety
/// `p` is a live block from this allocator.
#[inline(always)]
unsafe fn needs_check(p: *mut c_void) -> bool {
    // SAFETY: outside the checked range, `p` is a glibc block.
    in_checked_range(p.cast()) || unsafe { chunk_size(p) } >= ALWAYS_CHECKED_SIZE
}

/// Forgets a glibc block about to go back to glibc (or be reallocated).
///
/// # Safety
/// `p` is a live block from glibc's allocator.
unsafe fn forget(p: *mut c_void) -> Option<leakscope::frontend::TrackedBlock> {
    // SAFETY: as the caller promises.
    if unsafe { needs_check(p) } && may_be_tracked(p.cast()) {
        untrack(p.cast())
    } else {
        None
    }
}

/// `free` of a block that needs a closer look.
///
/// # Safety
/// `p` is a live block from this allocator.
#[cold]
#[inline(never)]
unsafe fn free_checked(p: *mut c_void) {
    let _errno = KeepErrno::save();
    if in_sample_heap(p.cast()) {
        // SAFETY: a live block of the sample heap, freed once.
        return unsafe { free_sampled(p.cast()) };
    }
    if may_be_tracked(p.cast()) {
        untrack(p.cast());
    }
    // SAFETY: a glibc block, forgotten first.
    unsafe { __libc_free(p) }
}

/// The plan for an allocation of `size` bytes whose countdown ran out
/// (`count_down` returned false), if `slow` could be entered; otherwise a
/// signal handler interrupted this thread's slow path (or the profiler
/// itself allocates) and the allocation takes the plain path, untracked.
fn plan_for(size: usize, slow: &Option<AllocSlowPath>) -> Plan {
    let _errno = KeepErrno::save();
    if slow.is_some() {
        plan_slow_on(size, &SETTINGS, countdown_cell())
    } else {
        Plan::Untracked
    }
}

/// The plan for an allocation of `size` bytes, with the slow path's mark
/// held (by the returned guard) if it is taken. Always inlined: the mark
/// records the caller's frame, where captured stacks start.
#[inline(always)]
fn plan_alloc(size: usize) -> (Plan, Option<AllocSlowPath>) {
    if count_down(size) {
        return (Plan::Untracked, None);
    }
    let slow = AllocSlowPath::enter();
    (plan_for(size, &slow), slow)
}

#[cold]
#[inline(never)]
unsafe fn malloc_slow(size: usize, zeroed: bool) -> *mut c_void {
    let slow = AllocSlowPath::enter();
    let plan = plan_for(size, &slow);
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
    // SAFETY: `ptr` is a live block from this allocator; outside the
    // checked range and below the checked size it is an untracked glibc
    // block.
    unsafe {
        if needs_check(ptr) {
            free_checked(ptr)
        } else {
            __libc_free(ptr)
        }
    }
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
    let in_heap = in_sample_heap(ptr.cast());
    if in_heap && size == 0 {
        // glibc's realloc(p, 0) frees and returns null.
        // SAFETY: a live block of the sample heap, freed once.
        unsafe { free_sampled(ptr.cast()) };
        return null_mut();
    }
    let (mut plan, _slow) = plan_alloc(size);
    if in_heap || (plan == Plan::Sampled && sampled_from_heap(size)) {
        // One side lives in the sample heap: move by hand.
        // SAFETY: `ptr` is a live block from this allocator.
        let readable = unsafe { usable_size(ptr) };
        if readable > 0 {
            // SAFETY: `ptr` has `readable` bytes; the new block `size`; the
            // old block is freed (and forgotten) only once the copy is made.
            unsafe {
                let q = allocate(size, MALLOC_ALIGN, false, plan);
                if q.is_null() {
                    return q;
                }
                std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), readable.min(size));
                free(ptr);
                return q;
            }
        }
        // A glibc block whose size cannot be known (a tagged pointer before
        // glibc's function was found): no sample rather than a short copy.
        plan = Plan::Untracked;
    }
    // SAFETY: `ptr` is a live glibc block.
    let old = unsafe { forget(ptr) };
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
    record(q, size, plan)
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
    let (plan, _slow) = plan_alloc(size);
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
    if !strict_aligned_alloc() {
        // Until 2.38 glibc's aligned_alloc is memalign: any alignment is
        // rounded up to a power of two.
        // SAFETY: same contract.
        return unsafe { memalign(align, size) };
    }
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    // SAFETY: checked power of two.
    unsafe { aligned(align, size) }
}

/// Whether the C library's `aligned_alloc` refuses alignments that are not
/// powers of two (glibc 2.38 and later, as C17 asks), found once.
fn strict_aligned_alloc() -> bool {
    static STRICT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    match STRICT.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: gnu_get_libc_version returns a static NUL-terminated
            // string ("2.36"); it allocates nothing.
            let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
            let strict = glibc_at_least(version.to_bytes(), (2, 38));
            STRICT.store(if strict { 2 } else { 1 }, Ordering::Relaxed);
            strict
        }
    }
}

/// Whether a glibc version string ("2.36", "2.41.9000") is at least `want`.
fn glibc_at_least(version: &[u8], want: (u32, u32)) -> bool {
    let mut parts = version.split(|&c| c == b'.').map(|p| {
        p.iter()
            .take_while(|c| c.is_ascii_digit())
            .fold(0u32, |n, &c| {
                n.saturating_mul(10).saturating_add(u32::from(c - b'0'))
            })
    });
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= want
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

/// glibc's `malloc_usable_size`, looked up once, by a constructor of this
/// library: looking it up later, from inside an allocation, could take the
/// loader's lock in the wrong order against a thread in `dlopen`.
static GLIBC_USABLE_SIZE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn find_glibc_usable_size() {
    // SAFETY: a plain symbol lookup in the objects loaded after this one;
    // constructors run on the loading thread, under the loader's lock.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) } as usize;
    if f != 0 && f != malloc_usable_size as *const () as usize {
        GLIBC_USABLE_SIZE.store(f, Ordering::Release);
    }
}

#[used]
#[link_section = ".init_array"]
static FIND_GLIBC_USABLE_SIZE: extern "C" fn() = find_glibc_usable_size;

/// Starts the profiler as the library is loaded, before the program runs,
/// rather than at the first allocation: a program that never allocates
/// still gets its (empty) outputs at exit, and leakscope's exit handler,
/// registered before the program's own, runs after them, where Valgrind
/// checks for leaks.
extern "C" fn initialize_early() {
    let _errno = KeepErrno::save();
    leakscope::frontend::initialize(&SETTINGS);
}

#[used]
#[link_section = ".init_array"]
static INITIALIZE_EARLY: extern "C" fn() = initialize_early;

/// C's `malloc_usable_size`: glibc's answer (every block is a glibc chunk).
///
/// # Safety
/// `ptr` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: as the caller promises.
    unsafe { usable_size(ptr) }
}

/// How many bytes of a block can be read and written: its size class for a
/// block of the sample heap, else glibc's function, or, before the
/// constructor found it, glibc's rule (the chunk's size less its header: 16
/// bytes for an mmapped chunk, else 8).
///
/// # Safety
/// `ptr` is a live block from this allocator.
unsafe fn usable_size(ptr: *mut c_void) -> usize {
    if in_sample_heap(ptr.cast()) {
        return sample_heap_usable_size(ptr.cast());
    }
    let f = GLIBC_USABLE_SIZE.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: `f` is glibc's malloc_usable_size, whose C signature this
        // is; `ptr` is a live glibc block.
        return unsafe {
            let glibc: unsafe extern "C" fn(*mut c_void) -> usize = std::mem::transmute(f);
            glibc(ptr)
        };
    }
    const IS_MMAPPED: usize = 2;
    // SAFETY: as the caller promises.
    match unsafe { chunk_header(ptr) } {
        Some(header) => {
            let overhead = if header & IS_MMAPPED != 0 { 16 } else { 8 };
            (header & !7).saturating_sub(overhead)
        }
        None => 0,
    }
}

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

#[cfg(test)]
mod tests {
    use super::glibc_at_least;

    #[test]
    fn reads_glibc_versions() {
        assert!(!glibc_at_least(b"2.36", (2, 38)));
        assert!(glibc_at_least(b"2.38", (2, 38)));
        assert!(glibc_at_least(b"2.41.9000", (2, 38)));
        assert!(glibc_at_least(b"3.0", (2, 38)));
        assert!(!glibc_at_least(b"", (2, 38)));
    }
}
