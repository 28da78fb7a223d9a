//! `LEAKSCOPE_OUT`: the heap profile written when the process exits normally.

use crate::config::{expand_path, OUT_PATH};

extern "C" fn write_at_exit() {
    let Some(template) = OUT_PATH.get() else {
        return;
    };
    let path = expand_path(template);
    if let Err(e) = super::heap_profile().write_pprof(&path) {
        eprintln!("leakscope: could not write the heap profile to {path}: {e}");
    }
}

/// Registers the exit handler if `LEAKSCOPE_OUT` is set. Called once, right
/// after initialisation.
pub(crate) fn install() {
    if OUT_PATH.get().is_some() {
        // SAFETY: `write_at_exit` is an `extern "C" fn()` valid for the whole
        // process; atexit only stores it.
        unsafe { libc::atexit(write_at_exit) };
    }
}
