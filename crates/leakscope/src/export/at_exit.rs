//! Output written when the process exits normally: `LEAKSCOPE_OUT` (a heap
//! profile) and `LEAKSCOPE_REFS_OUT` (a heap snapshot).

use crate::config::{expand_path, OUT_PATH, PERIODIC_DIR, REFS_OUT_PATH};

#[inline(never)]
extern "C" fn write_at_exit() {
    // The program's frames end where this handler's begins: the snapshot
    // scans the exiting thread's stack from the handler's caller (glibc's
    // exit code) up, as Valgrind does, so words left in leakscope's own
    // frames (or in the memory they reuse) never hold anything.
    let program = crate::snapshot::caller_frame(crate::snapshot::frame_pointer());
    let _scope = crate::collect::thread::UntrackedScope::enter();
    // After the writer thread's set, if one is being written: its
    // symbolizer is gone by then.
    let _one = super::periodic::one_set_at_a_time();
    super::symbolize::with_shared_symbolizer(|| write_outputs(program));
}

fn write_outputs(program: crate::snapshot::CallerFrame) {
    // The snapshot first: its memory breakdown is read before anything is
    // symbolised, so the symboliser's memory is not counted as the program's.
    if let Some(template) = REFS_OUT_PATH.get() {
        let path = expand_path(template);
        let written = crate::snapshot::snapshot_from(program)
            .map_err(|e| e.to_string())
            .and_then(|snap| {
                if path.ends_with(".pb.gz") {
                    snap.write_refs_pprof(&path)
                } else {
                    snap.write(&path)
                }
                .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!("leakscope: could not write the heap snapshot to {path}: {e}");
        }
    }
    if let Some(template) = OUT_PATH.get() {
        let path = expand_path(template);
        if let Err(e) = super::heap_profile().write_pprof(&path) {
            eprintln!("leakscope: could not write the heap profile to {path}: {e}");
        }
    }
    if PERIODIC_DIR.get().is_some() {
        // The last of the periodic outputs: the state at exit.
        super::periodic::write_next_holding_the_lock();
    }
}

/// Registers the exit handler if an exit output is configured, and starts
/// the periodic writer. Called once, right after initialisation.
pub fn install() {
    super::periodic::install();
    if OUT_PATH.get().is_some() || REFS_OUT_PATH.get().is_some() || PERIODIC_DIR.get().is_some() {
        // SAFETY: `write_at_exit` is an `extern "C" fn()` valid for the whole
        // process; atexit only stores it.
        unsafe { libc::atexit(write_at_exit) };
    }
}
