//! What the preload adds to the library's outputs: the live endpoint when
//! `LEAKSCOPE_HTTP` asks for it, and, before the leak check at exit, the
//! release of what the C++ runtime keeps for the whole process (libstdc++'s
//! emergency exception-handling pool), as Valgrind does, so that the leak
//! summary shows the program's memory, not the runtime's.

use std::ffi::CStr;

/// Runs once, right after the profiler is initialised.
pub(crate) fn on_init() {
    // Mode switches and snapshot children reach the hooks' own countdown.
    leakscope::frontend::set_external_countdown(crate::countdown::countdown_ptr);
    // Every frame in this library is the allocator's own: trimmed by
    // address, so its (large) debug information is never read.
    leakscope::frontend::mark_own_code(crate::hooks::malloc as *const () as usize);
    leakscope::frontend::install_standard_outputs();
    if std::env::var_os("LEAKSCOPE_REFS_OUT").is_some() {
        // Registered after the library's exit handler, so it runs before it
        // (exit handlers run in reverse order).
        // SAFETY: `release_runtime_pools` is an `extern "C" fn()` valid for
        // the life of the process; atexit only stores it.
        unsafe { libc::atexit(release_runtime_pools) };
    }
}

extern "C" fn release_runtime_pools() {
    // dlsym's own allocations (its error state when the symbol is missing)
    // are not the program's.
    let _untracked = leakscope::frontend::UntrackedScope::enter();
    const CXX_FREERES: &CStr = c"_ZN9__gnu_cxx9__freeresEv";
    // SAFETY: dlsym with RTLD_DEFAULT looks the symbol up in every loaded
    // object; if libstdc++ is loaded it is `void __gnu_cxx::__freeres()`,
    // which libstdc++ provides for exactly this use at exit.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, CXX_FREERES.as_ptr());
        if !f.is_null() {
            let freeres: extern "C" fn() = std::mem::transmute(f);
            freeres();
        }
    }
}

/// Starts the endpoint if `LEAKSCOPE_HTTP` names where to listen. Runs as a
/// constructor of the library, before the program's `main`, on its only
/// thread: no lock of the program or of libc is held (the first `malloc`,
/// where the profiler itself starts, may run inside `dlopen` or `fopen`,
/// too late to start a thread safely). The programs it starts inherit the
/// variable: one that execs keeps the endpoint (the address is free again
/// after exec); children running beside it find the address taken and go
/// without, silently.
extern "C" fn start_endpoint() {
    if std::env::var_os("LEAKSCOPE_HTTP").is_none() {
        return;
    }
    match leakscope::http::serve_from_env() {
        Ok(Some(handle)) => {
            // Serves until the process ends.
            std::mem::forget(handle);
        }
        Ok(None) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => eprintln!("leakscope: cannot start the endpoint: {e}"),
    }
}

#[used]
#[link_section = ".init_array"]
static START_ENDPOINT: extern "C" fn() = start_endpoint;
