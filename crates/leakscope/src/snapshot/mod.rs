//! Heap snapshots: who holds the memory.
//!
//! A snapshot stops the process for as short a time as it can, then analyses
//! a frozen copy of it:
//!
//! 1. Before stopping anything (allocation allowed): list the loaded
//!    objects' writable segments and named variables, the threads and their
//!    names; prepare every buffer the stopped phase will write into.
//! 2. Stop (no allocation, no free from here): take the profiler's table
//!    locks (no tracked allocation or free can complete), signal every other thread, whose
//!    handler saves its registers and waits; `fork` with a raw system call
//!    (no `atfork` handlers, no `malloc` locks taken); resume the threads and
//!    release the locks. The parent's pause is this step only.
//! 3. The child analyses its copy without allocating (see [`child`]) and
//!    writes the results into a shared mapping; the parent waits for it,
//!    then names what it found (symbols, threads, allocation stacks).

mod child;
mod fields;
mod graph;
mod mmap_vec;
mod modules;
mod report;
mod threads;
mod wire;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use leakscope_profile::snapshot::{
    Amount, Holder, LeakGroup, LeakKind, Link, Node, NodeKind, Pinning, SnapshotReport,
    ThreadReport,
};

use crate::collect::thread::UntrackedScope;
use crate::collect::{self, LIVE};
use crate::config::Mode;
use child::{ChildInput, RootLayout, ThreadRoots};
use report::{ReportMeta, Resolved};
use threads::{ThreadInfo, ThreadSlot};
use wire::Output;

/// Why a snapshot could not be taken.
#[derive(Debug)]
pub enum SnapshotError {
    /// Snapshots need every live block tracked: `LEAKSCOPE_MODE=full`.
    NotFullMode(Mode),
    /// The stop signal's handler could not be installed.
    Signal(String),
    /// Memory for the results or the fork itself was refused.
    Fork(io::Error),
    /// The analysis child failed (its exit status says how).
    Analysis(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotFullMode(m) => write!(
                f,
                "heap snapshots need full mode (every block tracked), but the profiler is in {} mode; set LEAKSCOPE_MODE=full",
                m.as_str()
            ),
            SnapshotError::Signal(e) => write!(f, "cannot stop threads: {e}"),
            SnapshotError::Fork(e) => write!(f, "cannot fork the analysis process: {e}"),
            SnapshotError::Analysis(e) => write!(f, "the snapshot analysis failed: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// A heap snapshot: every live block, who holds it, and what it retains.
pub struct Snapshot {
    report: SnapshotReport,
    resolved: Resolved,
    pause: Duration,
    analysis: Duration,
    phases: [(&'static str, Duration); 8],
    steps: u64,
}

/// What the snapshot knows about one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockReport {
    pub addr: usize,
    pub size: u64,
    pub kind: LeakKind,
    /// Bytes that would be freed with this block.
    pub retained: Amount,
    /// The shortest chain from a root to this block (empty if unreachable).
    pub chain: Vec<Link>,
    /// The node whose release would free this block (its immediate
    /// dominator), if reachable.
    pub holder: Option<Node>,
    /// For a buffer kept alive by small slices of it: the bytes those
    /// slices cover.
    pub pinned_by_slices: Option<u64>,
}

impl Snapshot {
    /// The summary: totals, top holders, pinned buffers, leak groups and the
    /// retention paths of the refs profile.
    pub fn report(&self) -> &SnapshotReport {
        &self.report
    }

    /// How long the process was stopped.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// How long the analysis took (in the forked child).
    pub fn analysis_time(&self) -> Duration {
        self.analysis
    }

    /// How long each phase of the analysis took.
    pub fn analysis_phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// Steps the analysis took in its graph algorithms and in naming chains:
    /// a measure of its work that, unlike time, does not depend on the
    /// machine (it grows linearly with blocks and pointers).
    pub fn analysis_steps(&self) -> u64 {
        self.steps
    }

    /// What the snapshot found about the block containing `addr`.
    pub fn block_at(&self, addr: *const u8) -> Option<BlockReport> {
        let r = &self.resolved;
        let i = r.block_index(addr as u64)?;
        let b = r.block(i);
        Some(BlockReport {
            addr: b.addr as usize,
            size: b.size,
            kind: r.block_kind(i),
            retained: Amount {
                blocks: u64::from(b.retained_blocks),
                bytes: b.retained,
            },
            chain: r.block_chain(i),
            holder: r.block_holder(i),
            pinned_by_slices: (b.flags & child::flags::PINNED != 0).then_some(b.view_bytes),
        })
    }

    /// Writes the snapshot file (JSON, see `leakscope refs`).
    pub fn write(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let _scope = UntrackedScope::enter();
        std::fs::write(path, self.report.to_json())
    }

    /// The holder-chain profile (gzipped pprof), as `go tool pprof` reads it.
    pub fn encode_refs_pprof(&self) -> Vec<u8> {
        let _scope = UntrackedScope::enter();
        leakscope_profile::encode_gzip(&self.report.refs_profile())
    }

    /// Writes the holder-chain profile.
    pub fn write_refs_pprof(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.encode_refs_pprof())
    }
}

/// One snapshot at a time.
static SNAPSHOT_LOCK: Mutex<()> = Mutex::new(());

/// Memory for the stop handler's slots. Never unmapped: a thread whose
/// signal arrives late may still read it (see `threads`).
struct SlotBuffer {
    ptr: *mut ThreadSlot,
    cap: usize,
}

// SAFETY: only used under SNAPSHOT_LOCK.
unsafe impl Send for SlotBuffer {}

static SLOTS: Mutex<SlotBuffer> = Mutex::new(SlotBuffer {
    ptr: std::ptr::null_mut(),
    cap: 0,
});

impl SlotBuffer {
    fn prepare(&mut self, threads: &[ThreadInfo]) -> Result<&mut [ThreadSlot], SnapshotError> {
        if self.cap < threads.len() {
            let cap = threads.len().next_power_of_two().max(64);
            let mem = collect::raw_mem::map_zeroed(cap * std::mem::size_of::<ThreadSlot>())
                .ok_or_else(|| {
                    SnapshotError::Fork(io::Error::other("no memory for thread slots"))
                })?;
            self.ptr = mem.as_ptr().cast();
            self.cap = cap;
        }
        for (i, t) in threads.iter().enumerate() {
            // SAFETY: `i < cap`; the slot memory is ours (SNAPSHOT_LOCK).
            unsafe { self.ptr.add(i).write(ThreadSlot::new(t.tid)) };
        }
        // SAFETY: the first `len` slots were just initialised.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, threads.len()) })
    }
}

/// How long threads get to stop before the snapshot goes on without them.
const STOP_TIMEOUT: Duration = Duration::from_millis(500);

fn snapshot_timeout() -> Duration {
    let secs = crate::config::getenv(c"LEAKSCOPE_SNAPSHOT_TIMEOUT")
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

fn raw_fork() -> libc::c_long {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a plain fork system call. Unlike glibc's fork() it runs no
    // atfork handlers and takes no malloc locks, which other (stopped)
    // threads may hold; the child therefore never allocates.
    unsafe {
        libc::syscall(libc::SYS_fork)
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: clone with only SIGCHLD is fork, see above.
    unsafe {
        libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0)
    }
}

/// Takes a heap snapshot of this process (full mode only).
///
/// The calling thread's stack is scanned from the caller's frame up: the
/// snapshot's own frames reuse stack memory where deeper calls of the caller
/// left stale pointers, which would otherwise count as references.
#[inline(never)]
pub fn snapshot() -> Result<Snapshot, SnapshotError> {
    let fp = child::frame_pointer();
    // SAFETY: with frame pointers, our frame record is two words at `fp`:
    // the caller's frame pointer and our return address; both are on this
    // thread's live stack.
    let (caller_fp, return_address) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
    take_snapshot(CallerFrame {
        stack_start: fp + 16,
        fp: caller_fp,
        pc: return_address,
    })
}

/// Where the snapshot's caller's stack begins.
#[derive(Clone, Copy)]
pub(crate) struct CallerFrame {
    pub(crate) stack_start: u64,
    pub(crate) fp: u64,
    pub(crate) pc: u64,
}

fn take_snapshot(caller: CallerFrame) -> Result<Snapshot, SnapshotError> {
    let mode = collect::mode();
    if mode != Mode::Full {
        return Err(SnapshotError::NotFullMode(mode));
    }
    let _scope = UntrackedScope::enter();
    let _one = SNAPSHOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let signo = threads::install_handler().map_err(SnapshotError::Signal)?;
    let time_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);

    // Step 1: everything that allocates.
    let modules = modules::loaded_modules();
    let segments: Vec<(u64, u64)> = modules.segments.iter().map(|s| (s.start, s.end)).collect();
    let variables: Vec<(u64, u64)> = modules.variables.iter().map(|v| (v.start, v.end)).collect();
    let me = threads::own_thread();
    let others = threads::other_threads();
    let mut thread_roots = vec![
        ThreadRoots {
            stopped: true,
            exited: false,
            is_self: true,
            regs: [0; threads::SAVED_REGS],
            tp: threads::thread_pointer(),
        };
        others.len() + 1
    ];
    let layout = RootLayout {
        variables: variables.len() as u32,
        segments: segments.len() as u32,
        threads: thread_roots.len() as u32,
    };
    let mut slot_buffer = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let slots = slot_buffer.prepare(&others)?;

    // Step 2: stopped. No allocation or free until the locks are released.
    let paused_at = Instant::now();
    collect::lock_for_snapshot();
    // SAFETY: lock_for_snapshot holds every shard lock.
    let live = unsafe { LIVE.len_unlocked() };
    let out = Output::new(layout.roots() as usize + 1, live + 16);
    threads::stop(slots, signo, STOP_TIMEOUT);
    for (roots, slot) in thread_roots[1..].iter_mut().zip(slots.iter()) {
        roots.is_self = false;
        roots.stopped = threads::stopped(slot);
        roots.exited = threads::gone(slot);
        roots.regs = slot.regs;
        roots.tp = slot.tp;
    }
    let pid = match &out {
        Some(_) => raw_fork(),
        None => -1,
    };
    if pid == 0 {
        collect::enter_snapshot_child();
        let input = ChildInput {
            caller,
            segments: &segments,
            variables: &variables,
            threads: &thread_roots,
            static_tls_bytes: modules.static_tls_bytes,
        };
        let code = match out {
            Some(mut out) => child::run(&input, &mut out),
            None => 72,
        };
        // SAFETY: ends the child at once, without unwinding or running any
        // exit handler of the parent's program.
        unsafe { libc::_exit(code) };
    }
    let fork_error = io::Error::last_os_error();
    threads::resume();
    // SAFETY: this thread took the locks with lock_for_snapshot above.
    unsafe { collect::unlock_after_snapshot() };
    let pause = paused_at.elapsed();
    threads::retire_slots();
    let stopped: Vec<(bool, bool)> = thread_roots.iter().map(|t| (t.stopped, t.exited)).collect();
    drop(slot_buffer);

    // Step 3: wait for the child, then name its results.
    let Some(out) = out else {
        return Err(SnapshotError::Fork(io::Error::other(
            "no memory for the snapshot results",
        )));
    };
    if pid < 0 {
        return Err(SnapshotError::Fork(fork_error));
    }
    wait_for(pid as libc::pid_t, snapshot_timeout())?;
    let Some((header, roots, blocks)) = out.read() else {
        return Err(SnapshotError::Analysis(
            "the analysis wrote no results".into(),
        ));
    };
    let all_threads: Vec<ThreadInfo> = std::iter::once(me).chain(others).collect();
    // Threads that exited before they could be stopped are left out.
    let thread_reports: Vec<ThreadReport> = all_threads
        .iter()
        .zip(&stopped)
        .filter(|(_, &(_, exited))| !exited)
        .map(|(t, &(stopped, _))| ThreadReport {
            tid: t.tid,
            name: t.name.clone(),
            stopped,
        })
        .collect();
    let resolved = Resolved::new(roots, blocks, out.read_fields(), &modules, &all_threads);
    let report = resolved.report(
        &header,
        ReportMeta {
            time_unix_ms,
            pause,
            threads: &thread_reports,
        },
    );
    let steps = header.graph_steps + resolved.naming_steps;
    Ok(Snapshot {
        report,
        resolved,
        pause,
        analysis: Duration::from_nanos(header.analysis_ns),
        phases: std::array::from_fn(|i| {
            (child::PHASES[i], Duration::from_nanos(header.phase_ns[i]))
        }),
        steps,
    })
}

fn wait_for(pid: libc::pid_t, timeout: Duration) -> Result<(), SnapshotError> {
    let start = Instant::now();
    let mut nap = Duration::from_micros(200);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a status out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else if libc::WIFEXITED(status) {
                Err(SnapshotError::Analysis(match libc::WEXITSTATUS(status) {
                    70 => "it tried to allocate (a bug: the child must not)".into(),
                    71 => "it ran out of memory".into(),
                    code => format!("exit status {code}"),
                }))
            } else {
                Err(SnapshotError::Analysis(format!(
                    "killed by signal {}",
                    libc::WTERMSIG(status)
                )))
            };
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            // The program reaped it (a SIGCHLD handler waiting for any
            // child, as shells have, or SIGCHLD ignored): it has exited, and
            // its results say whether it finished.
            if e.raw_os_error() == Some(libc::ECHILD) {
                return Ok(());
            }
            return Err(SnapshotError::Analysis(e.to_string()));
        }
        if start.elapsed() > timeout {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(SnapshotError::Analysis(format!(
                "it took longer than {}s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}
