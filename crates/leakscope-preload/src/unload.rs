//! `dlclose`, passed on to the C library's, telling the profiler which code
//! went away: return addresses captured in it are then shown as unknown,
//! never named after a library mapped at the same addresses later.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The C library's `dlclose`, looked up once (by a constructor of this
/// library, or at the first call if that comes first).
static NEXT_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn find_next_dlclose() {
    // SAFETY: a plain symbol lookup in the objects loaded after this one,
    // outside any lock of the loader's or ours.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlclose".as_ptr()) } as usize;
    if f != 0 && f != dlclose as *const () as usize {
        NEXT_DLCLOSE.store(f, Ordering::Release);
    }
}

#[used]
#[link_section = ".init_array"]
static FIND_NEXT_DLCLOSE: extern "C" fn() = find_next_dlclose;

/// At most this many executable segments per object are followed.
const MAX_SEGMENTS: usize = 8;

/// An object's load bias and the ranges of its executable segments.
#[derive(Default)]
struct Code {
    base: usize,
    ranges: [(u64, u64); MAX_SEGMENTS],
    n: usize,
    found: bool,
}

extern "C" fn collect_code(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid `info` for the duration of the
    // call, and `data` is the `Code` given below, borrowed for the walk.
    unsafe {
        let code = &mut *data.cast::<Code>();
        let info = &*info;
        if info.dlpi_addr as usize != code.base {
            return 0;
        }
        code.found = true;
        let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
        for h in headers {
            if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 && code.n < MAX_SEGMENTS {
                let start = info.dlpi_addr + h.p_vaddr;
                code.ranges[code.n] = (start, start + h.p_memsz);
                code.n += 1;
            }
        }
        1
    }
}

/// The loaded object whose load bias is `base`, if one is loaded.
fn code_at(base: usize) -> Code {
    let mut code = Code {
        base,
        ..Code::default()
    };
    // SAFETY: `collect_code` only reads the headers it is given and writes
    // into `code`, which outlives the walk.
    unsafe { libc::dl_iterate_phdr(Some(collect_code), (&mut code as *mut Code).cast()) };
    code
}

/// # Safety
/// C's `dlclose`.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    if NEXT_DLCLOSE.load(Ordering::Acquire) == 0 {
        // Called before this library's constructors ran (from another
        // library's): look it up now (no lock of ours is held here).
        find_next_dlclose();
    }
    let next = NEXT_DLCLOSE.load(Ordering::Acquire);
    if next == 0 {
        // No C library's dlclose to pass on to.
        return -1;
    }
    // SAFETY: `next` is the C library's dlclose, of this signature.
    let next: unsafe extern "C" fn(*mut c_void) -> c_int = unsafe { std::mem::transmute(next) };
    // The object's load bias, from its link map (whose first member is
    // `l_addr`), before it goes.
    let mut map: *mut usize = std::ptr::null_mut();
    // SAFETY: dlinfo with RTLD_DI_LINKMAP writes a `struct link_map *` for a
    // valid handle (the caller's promise) and fails cleanly otherwise.
    let base = unsafe {
        if handle.is_null()
            || libc::dlinfo(
                handle,
                libc::RTLD_DI_LINKMAP,
                (&mut map as *mut *mut usize).cast(),
            ) != 0
            || map.is_null()
        {
            None
        } else {
            Some(*map)
        }
    };
    let before = base.filter(|&b| b != 0).map(code_at);
    // SAFETY: passed on as the caller gave it.
    let result = unsafe { next(handle) };
    if let Some(code) = before.filter(|c| c.found) {
        if !code_at(code.base).found {
            for &(start, end) in &code.ranges[..code.n] {
                leakscope::frontend::code_unloaded(start, end);
            }
        }
    }
    result
}
