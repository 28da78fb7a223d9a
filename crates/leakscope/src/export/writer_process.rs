//! The periodic writer's files are symbolised and written by a short-lived
//! child process: a fork of this one, taken after the set's figures were
//! read. Symbolising parses each binary's debug information (tens of MB for
//! a Rust service); in the child that memory never becomes the service's:
//! its RSS, its heap's fragmentation and its snapshots stay free of it, and
//! a fault while symbolising ends the child, not the service. The child
//! exists for the few hundred milliseconds a set takes; in a container its
//! pages count towards the cgroup's memory while it runs.
//!
//! glibc's `fork` (not the raw system call the snapshot uses): its atfork
//! handlers release leakscope's locks and reset the allocator's in the
//! child, which must allocate. Whatever else another thread held at the
//! fork (a lock of the program's) stays held in the child, so the child
//! prints through `write(2)` only, and the parent kills it when it runs
//! longer than [`WRITER_TIMEOUT`]. It dies with the service (a parent-death
//! signal): a killed service leaves at most a hidden temporary, never a
//! writer running on.

use std::io;
use std::time::{Duration, Instant};

/// The longest a writer child may take (symbolising a large binary takes
/// seconds; a child stuck on a lock another thread held at the fork would
/// never end).
const WRITER_TIMEOUT: Duration = Duration::from_secs(120);

/// Exit status of a child that panicked.
const PANICKED: i32 = 76;
/// Exit status of a child that reported errors of its own.
const REPORTED: i32 = 1;

/// Runs `write` (which symbolises and writes files, returning the errors to
/// report) in a forked child and waits for it. Where the child cannot be
/// made (no memory to fork, a sandbox that forbids it), `write` runs here,
/// as it did before. Errors reach standard error either way.
pub(super) fn write_in_child(write: impl FnOnce() -> Vec<String>) {
    // SAFETY: getpid has no preconditions.
    let service = unsafe { libc::getpid() };
    // SAFETY: glibc's fork. Its atfork handlers run: leakscope's take every
    // profiler lock before and release them in both processes after, and
    // glibc resets its allocator's locks in the child, which may therefore
    // allocate. The child only runs `write` and `_exit`s (below).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let errors = super::symbolize::with_shared_symbolizer(write);
        report(&errors);
        return;
    }
    if pid == 0 {
        // The writer never outlives the service: killed with the thread
        // that forked it (which waits for it), or at once if the service
        // died before this line.
        // SAFETY: PR_SET_PDEATHSIG only sets this process's parent-death
        // signal; getppid and _exit have no preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != service {
                libc::_exit(0);
            }
        }
        // A panic must end the child, never unwind into the program's code.
        struct ExitOnUnwind;
        impl Drop for ExitOnUnwind {
            fn drop(&mut self) {
                // SAFETY: ends the child at once (only reached by unwinding).
                unsafe { libc::_exit(PANICKED) };
            }
        }
        let guard = ExitOnUnwind;
        let errors = super::symbolize::with_shared_symbolizer_then_exit(write);
        report_raw(&errors);
        std::mem::forget(guard);
        let status = if errors.is_empty() { 0 } else { REPORTED };
        // SAFETY: ends the child without running the program's exit
        // handlers (leakscope's own would write the exit outputs again) or
        // flushing buffers that are the parent's to flush.
        unsafe { libc::_exit(status) };
    }
    if let Err(why) = wait_for(pid, WRITER_TIMEOUT) {
        eprintln!("leakscope: the periodic writer process {why}: this set may be incomplete");
    }
}

fn report(errors: &[String]) {
    for e in errors {
        eprintln!("leakscope: {e}");
    }
}

/// Writes each error to standard error with `write(2)`: Rust's `stderr`
/// lock may have been held by another thread at the fork.
fn report_raw(errors: &[String]) {
    for e in errors {
        let line = format!("leakscope: {e}\n");
        // SAFETY: writes from a live buffer of `line.len()` bytes to fd 2;
        // a failed or short write only loses the message.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }
}

/// Waits for the writer child, killing it past `timeout`.
fn wait_for(pid: libc::pid_t, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a status out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                match libc::WEXITSTATUS(status) {
                    0 | REPORTED => Ok(()),
                    PANICKED => Err("panicked (a bug)".into()),
                    code => Err(format!("ended with status {code}")),
                }
            } else {
                Err(format!("was killed by signal {}", libc::WTERMSIG(status)))
            };
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The program reaped it (SIGCHLD ignored, or a handler
                // waiting for any child): it has ended.
                Some(libc::ECHILD) => return Ok(()),
                _ => return Err(e.to_string()),
            }
        }
        if start.elapsed() > timeout {
            let mut status = 0;
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "took longer than {}s and was killed",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}
