// The tests of `fork`, included by one test binary per wrapped
// allocator (`fork.rs`, `fork_jemalloc.rs`, `fork_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakscope::{Mode, Profiler};

use common::{current_view, figures_for, watchdog};

#[global_allocator]
static ALLOC: Profiler<Inner> = Profiler::wrap(INNER).with_mode(Mode::Full);

#[inline(never)]
fn churn_in_background(stop: Arc<AtomicBool>) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        blocks.push(black_box(vec![0u8; 16 + i % 4000]));
        if blocks.len() > 500 {
            blocks.drain(..250);
        }
        i += 1;
    }
}

#[inline(never)]
fn allocated_in_child() -> Vec<Vec<u8>> {
    // black_box keeps this frame on the stack (no tail call into collect).
    black_box((0..10).map(|_| vec![1u8; 1000]).collect())
}

/// Waits for `pid` for at most `limit`; kills it on timeout.
fn wait_with_timeout(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if start.elapsed() > limit {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn fork_while_threads_allocate() {
    watchdog(300);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || churn_in_background(stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    for round in 0..40 {
        // SAFETY: the child only allocates, reads the profile (through the
        // profiler, whose locks the fork handlers released) and exits with
        // _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let kept = allocated_in_child();
            let ok = if round % 8 == 0 {
                // A full profile in the child, symbolisation included.
                let view = current_view();
                figures_for(&view, "::allocated_in_child")[2] == 11
            } else {
                leakscope::stats().tracked_blocks > 0
            };
            drop(kept);
            // SAFETY: ends the child without running the parent's atexit
            // handlers or test-harness code.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let status = wait_with_timeout(pid, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("child {round} hung (a lock held across fork?)"));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {round} failed: status {status:#x}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // The parent still profiles.
    let kept = allocated_in_child();
    assert_eq!(figures_for(&current_view(), "::allocated_in_child")[2], 11);
    drop(kept);
}
