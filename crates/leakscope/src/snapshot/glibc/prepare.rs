//! What the walker needs to know about libc, learned once in the parent
//! (where allocating and calling the loader are allowed): the release, where
//! libc's writable data is (the main arena and malloc's parameters live
//! there), and where libc's thread-local block sits relative to a thread's
//! pointer (each thread's tcache pointer lives there).

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use super::layout::{self, Layout};
use crate::snapshot::threads;

/// Writable segments of libc kept (an object has one or two).
const MAX_DATA: usize = 8;

/// Facts about libc, found in the parent and copied into the child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared {
    /// `None` for a release whose layout is not known.
    pub(crate) layout: Option<&'static Layout>,
    pub(crate) version: (u32, u32),
    data: [(u64, u64); MAX_DATA],
    data_len: usize,
    /// libc's static thread-local block: its offset from a thread's
    /// pointer and its size. `None` when the loader cannot say (a static
    /// executable); then the whole static TLS area is searched.
    pub(crate) libc_tls: Option<(i64, u64)>,
    /// Size of all static TLS blocks, for that fallback.
    pub(crate) static_tls_bytes: u64,
    /// The main arena, when the parent found it before the fork (0: the
    /// walk looks for it).
    pub(crate) main_arena: u64,
}

impl Prepared {
    /// libc's writable segments.
    pub(crate) fn libc_data(&self) -> &[(u64, u64)] {
        &self.data[..self.data_len]
    }

    /// The facts about another process's libc (a core file, an attached
    /// process), found by reading its files and memory rather than through
    /// this process's loader. At most eight writable segments are kept.
    pub(crate) fn from_parts(
        version: (u32, u32),
        data: &[(u64, u64)],
        libc_tls: Option<(i64, u64)>,
        static_tls_bytes: u64,
    ) -> Prepared {
        let mut p = Prepared {
            layout: layout::for_version(version.0, version.1),
            version,
            data: [(0, 0); MAX_DATA],
            data_len: data.len().min(MAX_DATA),
            libc_tls,
            static_tls_bytes,
            main_arena: 0,
        };
        p.data[..p.data_len].copy_from_slice(&data[..p.data_len]);
        p
    }

    #[cfg(test)]
    pub(crate) fn for_tests(layout: &'static Layout, data: &[(u64, u64)]) -> Prepared {
        let mut p = Prepared {
            layout: Some(layout),
            version: (2, 36),
            data: [(0, 0); MAX_DATA],
            data_len: data.len(),
            libc_tls: None,
            static_tls_bytes: 0,
            main_arena: 0,
        };
        p.data[..data.len()].copy_from_slice(data);
        p
    }
}

/// The facts, found on first use.
pub(crate) fn prepared(static_tls_bytes: u64) -> Prepared {
    static ONCE: OnceLock<Prepared> = OnceLock::new();
    Prepared {
        static_tls_bytes,
        ..*ONCE.get_or_init(find)
    }
}

struct Search {
    /// An address inside libc's code.
    inside: u64,
    data: [(u64, u64); MAX_DATA],
    data_len: usize,
    tls_size: u64,
    found: bool,
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the call, and `data`
    // is the `Search` we passed in.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let contains = headers.iter().any(|ph| {
        let start = info.dlpi_addr + ph.p_vaddr;
        ph.p_type == libc::PT_LOAD && search.inside >= start && search.inside < start + ph.p_memsz
    });
    if !contains {
        return 0;
    }
    search.found = true;
    for ph in headers {
        if ph.p_type == libc::PT_LOAD
            && ph.p_flags & libc::PF_W != 0
            && ph.p_memsz > 0
            && search.data_len < MAX_DATA
        {
            let start = info.dlpi_addr + ph.p_vaddr;
            search.data[search.data_len] = (start, start + ph.p_memsz);
            search.data_len += 1;
        }
        if ph.p_type == libc::PT_TLS {
            search.tls_size = ph.p_memsz;
        }
    }
    1
}

extern "C" {
    fn dlinfo(handle: *mut c_void, request: c_int, arg: *mut c_void) -> c_int;
}

/// `RTLD_DI_TLS_DATA`: the calling thread's block of an object's TLS.
const RTLD_DI_TLS_DATA: c_int = 10;

fn find() -> Prepared {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    let version = layout::parse_version(text.to_bytes()).unwrap_or((0, 0));
    let mut search = Search {
        inside: libc::gnu_get_libc_version as *const () as u64,
        data: [(0, 0); MAX_DATA],
        data_len: 0,
        tls_size: 0,
        found: false,
    };
    // SAFETY: the callback only reads the headers it is given and writes
    // into `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    Prepared {
        layout: layout::for_version(version.0, version.1),
        version,
        data: search.data,
        data_len: search.data_len,
        libc_tls: if search.found {
            libc_tls_block(search.inside, search.tls_size)
        } else {
            None
        },
        static_tls_bytes: 0,
        main_arena: 0,
    }
}

/// libc's TLS block for this thread, as an offset from the thread pointer
/// (the same in every thread: static TLS sits at a fixed distance).
fn libc_tls_block(inside: u64, size: u64) -> Option<(i64, u64)> {
    if size == 0 {
        return None;
    }
    let mut info: libc::Dl_info = empty_dl_info();
    // SAFETY: dladdr fills `info` for an address inside a loaded object.
    if unsafe { libc::dladdr(inside as *const c_void, &mut info) } == 0 || info.dli_fname.is_null()
    {
        return None;
    }
    // SAFETY: dli_fname names a loaded object; RTLD_NOLOAD only returns a
    // handle to it (no loading); the handle is closed below.
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    let mut block: *mut c_void = std::ptr::null_mut();
    // SAFETY: RTLD_DI_TLS_DATA writes one pointer into `block`.
    let ok = unsafe {
        dlinfo(
            handle,
            RTLD_DI_TLS_DATA,
            (&mut block as *mut *mut c_void).cast(),
        )
    };
    // SAFETY: closing the handle dlopen gave us.
    unsafe { libc::dlclose(handle) };
    if ok != 0 || block.is_null() {
        return None;
    }
    let offset = (block as u64).wrapping_sub(threads::thread_pointer()) as i64;
    Some((offset, size))
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}
