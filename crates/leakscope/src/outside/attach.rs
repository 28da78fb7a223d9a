//! `attach(pid)`: stop every thread of a running process, capture each
//! one's registers and thread pointer, and take a consistent copy of its
//! memory with the shortest pause: the target forks itself (see
//! [`super::inject`]), is let go at once, and the frozen child is copied
//! and killed; or, when that cannot be done safely, the memory is copied
//! while the target is stopped.
//!
//! The target is never left stopped or traced: leakscope's threads use
//! `PTRACE_SEIZE` (no `SIGSTOP` is ever sent, so a tracer that dies leaves
//! no stop behind: the kernel detaches and resumes its tracees), and the
//! injection is safe at every instant (see `inject.rs`). Every exit path
//! detaches what it attached.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::inject;
use super::permissions::{self, PtraceRefusal};
use super::process::{CopyPolicy, ProcessImage};
use super::ptrace::{self, Stop};
use super::{regs, ThreadState};

/// How to get a consistent copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttachMethod {
    /// Fork injection when it is safe, else copy while stopped.
    #[default]
    Auto,
    /// Fork injection or an error.
    Fork,
    /// Copy memory while the target is stopped (a pause as long as the
    /// copy).
    Copy,
}

/// The stages of an attach, in order (for tests that kill leakscope at
/// each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Every thread seized and stopped.
    Stopped = 1,
    /// Registers and thread pointers captured.
    Captured = 2,
    /// The injection's frames written below the chosen thread's stack.
    FramesWritten = 3,
    /// The chosen thread's registers point at the injected `clone`.
    RegistersSet = 4,
    /// The thread stopped at the `clone` system call's entry.
    SyscallEntered = 5,
    /// The child exists (fork event seen).
    Forked = 6,
    /// Every thread of the target detached and running.
    Resumed = 7,
    /// The frozen child's (or the stopped target's) memory copied.
    Copied = 8,
    /// The child killed and reaped.
    ChildKilled = 9,
}

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub method: AttachMethod,
    pub copy: CopyPolicy,
    /// Testing only: leakscope kills itself (SIGKILL) right after this
    /// step, to check the target survives it.
    #[doc(hidden)]
    pub die_after: Option<Step>,
}

/// How the copy was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// The target forked; `child` was copied, then killed.
    Forked { child: i32, thread: i32 },
    /// Copied while the target was stopped; `reason` says why not forked.
    Copied { reason: String },
}

/// The result of an attach: the image, and what it cost the target.
pub struct Attached {
    pub pid: i32,
    pub image: ProcessImage,
    pub made: Made,
    /// How long the target's threads were stopped.
    pub pause: Duration,
    /// How long copying the memory took (after the target resumed, when
    /// forked).
    pub copy_time: Duration,
}

impl Attached {
    pub fn threads(&self) -> &[ThreadState] {
        self.image.threads()
    }
}

/// A thread seized by leakscope.
struct Tracee {
    tid: i32,
    /// Stopped by our interrupt (not a group stop or a signal).
    interrupted: bool,
    /// A signal it was about to receive, given back at detach.
    signal: i32,
    user_regs: Vec<u64>,
}

/// The seized threads; detached on drop, whatever happened.
struct Session {
    tracees: Vec<Tracee>,
}

impl Session {
    fn detach_all(&mut self) {
        for t in self.tracees.drain(..) {
            let _ = ptrace::detach(t.tid, t.signal);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn at_step(options: &AttachOptions, step: Step, child: Option<i32>) {
    if options.die_after == Some(step) {
        eprintln!(
            "leakscope: killing itself after step {} ({step:?}){}",
            step as u32,
            child.map(|c| format!(" child {c}")).unwrap_or_default()
        );
        // SAFETY: raising a signal on ourselves; SIGKILL cannot be caught.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Attaches to `pid` and returns a consistent image of it.
pub fn attach(pid: i32, options: &AttachOptions) -> Result<Attached, String> {
    if pid <= 0 || pid == std::process::id() as i32 {
        return Err(format!("cannot attach to process {pid}"));
    }
    let mut reason = match options.method {
        AttachMethod::Copy => Some("copying was asked for".to_string()),
        _ => inject::why_not(pid),
    };
    if let (AttachMethod::Fork, Some(r)) = (options.method, &reason) {
        return Err(format!("cannot make process {pid} fork: {r}"));
    }
    if reason.is_none() {
        match attach_forking(pid, options)? {
            Ok(attached) => return Ok(attached),
            Err(why) if options.method == AttachMethod::Fork => {
                return Err(format!("cannot make process {pid} fork: {why}"))
            }
            Err(why) => reason = Some(why),
        }
    }
    attach_copying(
        pid,
        options,
        reason.unwrap_or_else(|| "copying was asked for".into()),
    )
}

/// Seizes and stops every thread, until a listing of `/proc/PID/task`
/// shows no thread that is not stopped (a running thread may have created
/// one since the last listing).
fn stop_all(pid: i32, options: &AttachOptions) -> Result<(Session, Instant), String> {
    let mut session = Session {
        tracees: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let mut started = None;
    loop {
        let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|_| PtraceRefusal::NoProcess { pid }.to_string())?;
        let mut new = Vec::new();
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if seen.insert(tid) {
                new.push(tid);
            }
        }
        if new.is_empty() {
            break;
        }
        let mut seized = Vec::new();
        for tid in new {
            started.get_or_insert_with(Instant::now);
            match ptrace::seize(tid, 0) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    // Another of our own threads? No: a refusal for the
                    // process (another tracer, permissions).
                    return Err(permissions::diagnose(pid, errno).to_string());
                }
            }
            let _ = ptrace::interrupt(tid);
            seized.push(tid);
        }
        for tid in seized {
            match ptrace::wait(tid) {
                Ok(Stop::Exited) | Err(_) => {}
                Ok(Stop::Event { signal, .. }) => session.tracees.push(Tracee {
                    tid,
                    interrupted: signal == libc::SIGTRAP,
                    signal: 0,
                    user_regs: Vec::new(),
                }),
                Ok(Stop::Signal(signal)) => session.tracees.push(Tracee {
                    tid,
                    interrupted: false,
                    signal,
                    user_regs: Vec::new(),
                }),
                Ok(Stop::Syscall) => session.tracees.push(Tracee {
                    tid,
                    interrupted: false,
                    signal: 0,
                    user_regs: Vec::new(),
                }),
            }
        }
    }
    if session.tracees.is_empty() {
        return Err(PtraceRefusal::NoProcess { pid }.to_string());
    }
    at_step(options, Step::Stopped, None);
    Ok((session, started.unwrap_or_else(Instant::now)))
}

/// Reads every stopped thread's registers.
fn capture(session: &mut Session, options: &AttachOptions) -> Vec<ThreadState> {
    let mut threads = Vec::new();
    session.tracees.retain_mut(|t| {
        let Ok(words) = ptrace::user_regs(t.tid) else {
            return true;
        };
        let Some((saved, tp)) = regs::from_user_regs(&words) else {
            return true;
        };
        let tp = tp.unwrap_or_else(|| ptrace::thread_pointer(t.tid, &words).unwrap_or(0));
        threads.push(ThreadState {
            tid: t.tid,
            regs: saved,
            tp,
        });
        t.user_regs = words;
        true
    });
    at_step(options, Step::Captured, None);
    threads
}

fn attach_copying(pid: i32, options: &AttachOptions, reason: String) -> Result<Attached, String> {
    let (mut session, started) = stop_all(pid, options)?;
    let threads = capture(&mut session, options);
    let copy_started = Instant::now();
    let image = ProcessImage::copy(pid, threads, options.copy)?;
    let copy_time = copy_started.elapsed();
    at_step(options, Step::Copied, None);
    session.detach_all();
    let pause = started.elapsed();
    at_step(options, Step::Resumed, None);
    Ok(Attached {
        pid,
        image,
        made: Made::Copied { reason },
        pause,
        copy_time,
    })
}

/// The fork path. The outer error ends the attach; the inner one says why
/// it fell back (the target was let go before falling back).
fn attach_forking(pid: i32, options: &AttachOptions) -> Result<Result<Attached, String>, String> {
    let (mut session, started) = stop_all(pid, options)?;
    let threads = capture(&mut session, options);
    let mem = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("cannot open /proc/{pid}/mem: {e}"))),
    };
    let Some(gadgets) = inject::find_gadgets(pid, &mem) else {
        return Ok(Err(
            "no `syscall; ret` and `rt_sigreturn` code found in the target".into(),
        ));
    };
    let stacks = writable_regions(pid);
    // The thread to fork: stopped by us, not in a sleep that restarts
    // through restart_syscall, with room below its stack; threads stopped
    // in user code first (nothing to restart).
    let mut order: Vec<usize> = (0..session.tracees.len()).collect();
    order.sort_by_key(|&i| (session.tracees[i].user_regs.get(15) != Some(&u64::MAX)) as u8);
    let mut chosen = None;
    for i in order {
        let t = &session.tracees[i];
        if !t.interrupted || t.user_regs.is_empty() || !inject::eligible(&t.user_regs) {
            continue;
        }
        let sp = t.user_regs[19];
        let Some(&stack) = stacks.iter().find(|&&(s, e)| s < sp && sp <= e) else {
            continue;
        };
        let Ok(mask) = ptrace::sigmask(t.tid) else {
            continue;
        };
        let mut xstate = vec![0u8; 64 << 10];
        let xlen = ptrace::regset(t.tid, 0x202, &mut xstate).unwrap_or(0);
        xstate.truncate(xlen);
        let mut fxsave = vec![0u8; 512];
        if xstate.is_empty() && ptrace::regset(t.tid, 2, &mut fxsave).is_err() {
            continue;
        }
        if let Some(plan) = inject::plan(&t.user_regs, mask, &xstate, &fxsave, stack, gadgets) {
            chosen = Some((i, plan));
            break;
        }
    }
    let Some((index, plan)) = chosen else {
        return Ok(Err(
            "no thread can run the injection (each sleeps in a system call that would return EINTR, or lacks stack room)".into(),
        ));
    };
    let tid = session.tracees[index].tid;
    // Nothing is changed before this write, and after it the thread still
    // resumes exactly where it was if we die.
    if mem.write_all_at(&plan.bytes, plan.at).is_err() {
        return Ok(Err("cannot write below the thread's stack pointer".into()));
    }
    at_step(options, Step::FramesWritten, None);
    if let Err(e) = ptrace::set_options(
        tid,
        libc::PTRACE_O_TRACEFORK as u64 | libc::PTRACE_O_TRACESYSGOOD as u64,
    ) {
        return Ok(Err(format!("cannot set trace options: {e}")));
    }
    if let Err(e) = ptrace::set_user_regs(tid, &plan.regs) {
        return Ok(Err(format!("cannot set the thread's registers: {e}")));
    }
    at_step(options, Step::RegistersSet, None);
    // From here the thread's own frame restores its mask; until the
    // sigreturn it runs with every signal blocked (and so does the child).
    let _ = ptrace::set_sigmask(tid, u64::MAX);
    let child = match run_clone(tid, options) {
        Ok(child) => child,
        Err(why) => {
            // Detaching lets the thread finish the sequence: a clone
            // already entered makes a child that ends itself.
            session.detach_all();
            return Ok(Err(why));
        }
    };
    at_step(options, Step::Forked, Some(child));
    // The target goes on: its copy is the child.
    session.detach_all();
    let pause = started.elapsed();
    at_step(options, Step::Resumed, Some(child));
    let copied = copy_child(child, pid, threads, options);
    // SAFETY: killing the child we traced and made; it is ours until
    // reaped below.
    unsafe { libc::kill(child, libc::SIGKILL) };
    while let Ok(stop) = ptrace::wait(child) {
        if stop == Stop::Exited {
            break;
        }
    }
    at_step(options, Step::ChildKilled, Some(child));
    let (image, copy_time) = copied?;
    Ok(Ok(Attached {
        pid,
        image,
        made: Made::Forked { child, thread: tid },
        pause,
        copy_time,
    }))
}

/// Runs the thread through the `clone` entry to the fork event; returns
/// the child.
fn run_clone(tid: i32, options: &AttachOptions) -> Result<i32, String> {
    ptrace::resume_to_syscall(tid, 0).map_err(|e| format!("cannot resume the thread: {e}"))?;
    let mut entered = false;
    // Stops other than ours (a group stop) are passed on; a bounded number.
    for _ in 0..16 {
        match ptrace::wait(tid).map_err(|e| format!("lost the thread: {e}"))? {
            Stop::Syscall if !entered => {
                entered = true;
                at_step(options, Step::SyscallEntered, None);
                ptrace::resume_to_syscall(tid, 0).map_err(|e| e.to_string())?;
            }
            Stop::Syscall => return Err("the target could not fork (clone failed)".into()),
            Stop::Event {
                event: ptrace::PTRACE_EVENT_FORK,
                ..
            } => {
                let child = ptrace::event_message(tid).map_err(|e| e.to_string())? as i32;
                return Ok(child);
            }
            Stop::Event { .. } => {
                ptrace::resume_to_syscall(tid, 0).map_err(|e| e.to_string())?;
            }
            Stop::Signal(s) => {
                ptrace::resume_to_syscall(tid, s).map_err(|e| e.to_string())?;
            }
            Stop::Exited => return Err("the thread ended".into()),
        }
    }
    Err("the thread did not reach the fork".into())
}

/// Waits for the child's first stop, makes it die with leakscope, copies
/// it.
fn copy_child(
    child: i32,
    pid: i32,
    threads: Vec<ThreadState>,
    options: &AttachOptions,
) -> Result<(ProcessImage, Duration), String> {
    match ptrace::wait(child) {
        Ok(Stop::Exited) | Err(_) => return Err("the target's copy ended at once".into()),
        Ok(_) => {}
    }
    let _ = ptrace::set_options(child, libc::PTRACE_O_EXITKILL as u64);
    let started = Instant::now();
    let image = ProcessImage::copy_with_files_of(child, pid, threads, options.copy)?;
    let time = started.elapsed();
    at_step(options, Step::Copied, Some(child));
    Ok((image, time))
}

/// The writable regions of `pid` (thread stacks among them).
fn writable_regions(pid: i32) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (s, e) = f.next()?.split_once('-')?;
            f.next()?.starts_with("rw").then(|| {
                (
                    u64::from_str_radix(s, 16).unwrap_or(0),
                    u64::from_str_radix(e, 16).unwrap_or(0),
                )
            })
        })
        .collect()
}
