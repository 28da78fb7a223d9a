//! Surviving `fork`: a lock held by another thread at the moment of the fork
//! would stay held forever in the child, whose only thread is the forking
//! one. The prepare handler takes every profiler lock, so the fork happens at
//! a moment when no other thread is inside a profiler critical section; both
//! parent and child then release them.

use std::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    super::lock_all();
}

extern "C" fn parent() {
    // SAFETY: `prepare` took every lock on this thread just before the fork.
    unsafe { super::unlock_all() }
}

extern "C" fn child() {
    // SAFETY: the child's only thread is the one that ran `prepare`; it owns
    // every lock and no other thread exists to hold one.
    unsafe { super::unlock_all() }
}

/// Registers the handlers once per process.
pub(crate) fn install_handlers() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the handlers are plain `extern "C"` functions valid for the
    // life of the process. glibc may allocate while registering; we run under
    // the re-entry guard, so that allocation passes through untracked.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}
