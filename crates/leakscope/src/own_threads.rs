//! Threads that leakscope starts itself (the periodic writer, the endpoint's
//! server, the history recorder, the push exporter). Heap snapshots never
//! count what they hold as the program's: their stacks, registers and
//! thread-locals are not roots, and blocks only they reach are leakscope's
//! own memory.
//!
//! A fixed table of thread ids, allocation-free, readable by the snapshot.

use std::sync::atomic::{AtomicI32, Ordering};

const SLOTS: usize = 64;
static TIDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Marks the calling thread as leakscope's own. Call first thing in every
/// thread leakscope starts.
pub(crate) fn register_current() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for slot in &TIDS {
        if slot.load(Ordering::Relaxed) == tid
            || slot
                .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
}

/// Whether `tid` is one of leakscope's threads.
pub(crate) fn is_own(tid: i32) -> bool {
    tid != 0 && TIDS.iter().any(|t| t.load(Ordering::Acquire) == tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_threads_are_own() {
        let tid = std::thread::spawn(|| {
            register_current();
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() }
        })
        .join()
        .unwrap();
        assert!(is_own(tid));
        // SAFETY: as above.
        assert!(!is_own(unsafe { libc::gettid() }));
    }
}
