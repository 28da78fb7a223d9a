//! Stopping every other thread for the instant of a snapshot.
//!
//! Each thread is sent a real-time signal; its handler (async-signal-safe:
//! atomics and raw syscalls only) saves the interrupted registers and thread
//! pointer into the thread's slot, reports itself stopped, and waits on a
//! futex until the snapshot resumes everyone. A thread that does not answer
//! in time (signal blocked, uninterruptible sleep) is reported and its
//! registers and stack go unscanned.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) use arch::{fault_pc, thread_pointer, FP, PC, SAVED_REGS, SP};

const WAITING: u32 = 0;
const STOPPED: u32 = 1;
/// The thread no longer exists (it exited since it was listed).
const GONE: u32 = 2;

/// One thread's slot, written by its signal handler.
#[repr(C)]
pub(crate) struct ThreadSlot {
    pub(crate) tid: i32,
    state: AtomicU32,
    /// General-purpose registers; `regs[SP]`, `regs[FP]`, `regs[PC]` index
    /// the stack pointer, frame pointer and program counter.
    pub(crate) regs: [u64; SAVED_REGS],
    /// Thread pointer (TLS base).
    pub(crate) tp: u64,
}

#[cfg(target_arch = "x86_64")]
mod arch {
    /// The 16 general-purpose registers and the program counter, in glibc's
    /// `gregs` order: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip.
    pub(crate) const SAVED_REGS: usize = 17;
    pub(crate) const FP: usize = 10;
    pub(crate) const SP: usize = 15;
    pub(crate) const PC: usize = 16;

    /// Copies the interrupted thread's registers out of its `ucontext_t`.
    ///
    /// # Safety
    /// `ctx` must be the third argument of an `SA_SIGINFO` handler.
    pub(crate) unsafe fn save(ctx: *mut libc::c_void, regs: &mut [u64; SAVED_REGS]) {
        // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
        let gregs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        for (r, g) in regs.iter_mut().zip(gregs.iter()) {
            *r = *g as u64;
        }
    }

    /// The program counter of an `SA_SIGINFO` handler's interrupted code.
    ///
    /// # Safety
    /// `ctx` must be the third argument of an `SA_SIGINFO` handler.
    pub(crate) unsafe fn fault_pc(ctx: *mut libc::c_void) -> u64 {
        let mut regs = [0; SAVED_REGS];
        // SAFETY: as the caller promises.
        unsafe { save(ctx, &mut regs) };
        regs[PC]
    }

    /// The calling thread's thread pointer: glibc keeps the TCB's own
    /// address in its first word, at %fs:0.
    pub(crate) fn thread_pointer() -> u64 {
        let tp: u64;
        // SAFETY: %fs:0 is the TCB self-pointer on x86_64 glibc; reading it
        // has no side effects.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// x0..x30, the stack pointer and the program counter.
    pub(crate) const SAVED_REGS: usize = 33;
    pub(crate) const FP: usize = 29;
    pub(crate) const SP: usize = 31;
    pub(crate) const PC: usize = 32;

    /// # Safety
    /// `ctx` must be the third argument of an `SA_SIGINFO` handler.
    pub(crate) unsafe fn save(ctx: *mut libc::c_void, regs: &mut [u64; SAVED_REGS]) {
        // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
        let mc = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext };
        regs[..31].copy_from_slice(&mc.regs);
        regs[SP] = mc.sp;
        regs[PC] = mc.pc;
    }

    /// The program counter of an `SA_SIGINFO` handler's interrupted code.
    ///
    /// # Safety
    /// `ctx` must be the third argument of an `SA_SIGINFO` handler.
    pub(crate) unsafe fn fault_pc(ctx: *mut libc::c_void) -> u64 {
        // SAFETY: as the caller promises.
        unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.pc }
    }

    pub(crate) fn thread_pointer() -> u64 {
        let tp: u64;
        // SAFETY: reading tpidr_el0 has no side effects.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags))
        };
        tp
    }
}

static SLOTS: AtomicPtr<ThreadSlot> = AtomicPtr::new(std::ptr::null_mut());
static SLOT_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Bumped to let stopped threads go.
static RESUME: AtomicU32 = AtomicU32::new(0);
/// The value of `RESUME` that stopped threads wait out. A signal that
/// arrives after the snapshot resumed (a thread that answered late) finds
/// `RESUME` already past it and returns at once.
static TARGET: AtomicU32 = AtomicU32::new(0);
static INSTALLED_SIGNAL: AtomicI32 = AtomicI32::new(0);

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn futex(word: &AtomicU32, op: libc::c_int, value: u32, timeout: Option<&libc::timespec>) {
    let t = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32; the other arguments are plain
    // values or a valid timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            value,
            t,
        );
    }
}

extern "C" fn on_stop_signal(
    _signo: libc::c_int,
    _info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; we restore it before returning.
    let saved_errno = unsafe { *libc::__errno_location() };
    let slots = SLOTS.load(Ordering::Acquire);
    let count = SLOT_COUNT.load(Ordering::Acquire);
    if !slots.is_null() {
        let tid = gettid();
        // SAFETY: the snapshot publishes `count` initialised slots before
        // signalling and keeps them alive until every thread has resumed.
        let slots = unsafe { std::slice::from_raw_parts_mut(slots, count) };
        let target = TARGET.load(Ordering::Acquire);
        let slot = slots.iter_mut().find(|s| s.tid == tid);
        if let Some(slot) = slot.filter(|_| RESUME.load(Ordering::Acquire) == target) {
            // SAFETY: `ctx` is our SA_SIGINFO argument.
            unsafe { arch::save(ctx, &mut slot.regs) };
            slot.tp = thread_pointer();
            slot.state.store(STOPPED, Ordering::Release);
            // Wait to be resumed, but never forever: after 30 s assume the
            // snapshot thread died and carry on.
            let deadline = Instant::now() + Duration::from_secs(30);
            let tick = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            while RESUME.load(Ordering::Acquire) == target && Instant::now() < deadline {
                futex(&RESUME, libc::FUTEX_WAIT, target, Some(&tick));
            }
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Installs the stop handler (once).
pub(crate) fn install_handler() -> Result<libc::c_int, String> {
    let installed = INSTALLED_SIGNAL.load(Ordering::Acquire);
    if installed != 0 {
        return Ok(installed);
    }
    let signo = crate::config::stop_signal();
    // SAFETY: a zeroed sigaction is a valid starting point; we set the
    // handler, flags and an empty mask before passing it to the kernel.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signo, &action, std::ptr::null_mut()) != 0 {
            return Err(format!("cannot install the handler for signal {signo}"));
        }
    }
    INSTALLED_SIGNAL.store(signo, Ordering::Release);
    Ok(signo)
}

/// A thread of this process, as listed before the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct ThreadInfo {
    pub(crate) tid: i32,
    pub(crate) name: String,
}

/// Lists this process's threads other than the caller.
pub(crate) fn other_threads() -> Vec<ThreadInfo> {
    let me = gettid();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out: Vec<ThreadInfo> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&tid| tid != me)
        .map(|tid| ThreadInfo {
            tid,
            name: std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// The name of the calling thread.
pub(crate) fn own_thread() -> ThreadInfo {
    let tid = gettid();
    ThreadInfo {
        tid,
        name: std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Stops the threads whose slots are in `slots` (tids filled in, state
/// `WAITING`). Returns, per slot, whether it stopped. Must not allocate: it
/// runs while the profiler's locks are held.
pub(crate) fn stop(slots: &mut [ThreadSlot], signo: libc::c_int, timeout: Duration) -> usize {
    TARGET.store(RESUME.load(Ordering::Acquire), Ordering::Release);
    SLOT_COUNT.store(slots.len(), Ordering::Release);
    SLOTS.store(slots.as_mut_ptr(), Ordering::Release);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: tgkill to a thread of our own process; `sig` 0 only checks
    // that it exists. A thread that has exited since it was listed makes it
    // fail (ESRCH), harmlessly.
    let tgkill =
        |tid: i32, sig: libc::c_int| unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } == 0;
    for slot in slots.iter() {
        if !tgkill(slot.tid, signo) {
            slot.state.store(GONE, Ordering::Release);
        }
    }
    let start = Instant::now();
    let mut checked_gone = start;
    loop {
        let waiting = slots
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) == WAITING)
            .count();
        if waiting == 0 || start.elapsed() > timeout {
            return slots
                .iter()
                .filter(|s| s.state.load(Ordering::Acquire) == STOPPED)
                .count();
        }
        // A thread on its way out has signals blocked: stop waiting for it
        // once it is gone.
        if checked_gone.elapsed() > Duration::from_millis(1) {
            checked_gone = Instant::now();
            for slot in slots
                .iter()
                .filter(|s| s.state.load(Ordering::Acquire) == WAITING)
            {
                if !tgkill(slot.tid, 0) {
                    let _ = slot.state.compare_exchange(
                        WAITING,
                        GONE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            }
        }
        std::hint::spin_loop();
        if start.elapsed() > Duration::from_micros(200) {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

pub(crate) fn stopped(slot: &ThreadSlot) -> bool {
    slot.state.load(Ordering::Acquire) == STOPPED
}

/// The thread exited before it could be stopped.
pub(crate) fn gone(slot: &ThreadSlot) -> bool {
    slot.state.load(Ordering::Acquire) == GONE
}

/// Lets every stopped thread go.
pub(crate) fn resume() {
    RESUME.fetch_add(1, Ordering::AcqRel);
    futex(&RESUME, libc::FUTEX_WAKE, i32::MAX as u32, None);
}

/// Forgets the slots. A thread whose signal arrives late finds no slot, or a
/// slot of a finished snapshot that it does not wait in; slot memory is
/// therefore never freed while a handler could read it (see `freeze`).
pub(crate) fn retire_slots() {
    SLOTS.store(std::ptr::null_mut(), Ordering::Release);
    SLOT_COUNT.store(0, Ordering::Release);
}

impl ThreadSlot {
    pub(crate) fn new(tid: i32) -> Self {
        ThreadSlot {
            tid,
            state: AtomicU32::new(WAITING),
            regs: [0; SAVED_REGS],
            tp: 0,
        }
    }
}
