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

mod blocks;
mod child;
mod fields;
pub(crate) mod foreign;
mod foreign_table;
pub(crate) mod glibc;
mod graph;
mod heuristics;
pub(crate) mod image;
mod memory_guard;
pub(crate) mod mmap_vec;
pub(crate) mod modules;
mod page_index;
mod parallel_scan;
mod report;
pub(crate) mod threads;
mod wire;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use leakscope_profile::snapshot::{
    Amount, ArenaUsage, BlocksFrom, GlibcHeap, Holder, LeakGroup, LeakKind, Link, Node, NodeKind,
    Pinning, SnapshotReport, ThreadReport,
};

pub use blocks::BlockSource;

use crate::collect::thread::UntrackedScope;
use crate::collect::{self, LIVE};
use crate::config::{HeapKind, Mode};
use child::{ChildInput, RootLayout, Rules, ThreadRoots};
use report::{ReportMeta, Resolved};
use threads::{ThreadInfo, ThreadSlot};
use wire::Output;

/// Why a snapshot could not be taken.
#[derive(Debug)]
pub enum SnapshotError {
    /// The live table was asked for ([`BlockSource::LiveTable`]), but it
    /// holds every block only in full mode: `LEAKSCOPE_MODE=full`.
    NotFullMode(Mode),
    /// The heap cannot be walked (outside full mode, blocks come from a
    /// walk of glibc's heap): another allocator, or a glibc release whose
    /// layout is not known. The text says which and what to do.
    NoHeapWalk(String),
    /// The heap walk found something that does not fit glibc's layout; no
    /// results rather than wrong ones.
    HeapWalk(String),
    /// A thread held an allocator lock for too long to stop safely.
    AllocatorBusy,
    /// The snapshot would have pushed the process past its memory cgroup's
    /// limit, or the machine past its available memory, so it was not taken
    /// or abandoned (the text says which).
    MemoryPressure(String),
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
                "the live table holds every block only in full mode, but the profiler is in {} mode; set LEAKSCOPE_MODE=full or take the blocks from a heap walk",
                m.as_str()
            ),
            SnapshotError::NoHeapWalk(why) => write!(f, "{why}"),
            SnapshotError::HeapWalk(why) => write!(f, "the heap walk failed: {why}"),
            SnapshotError::MemoryPressure(why) => write!(f, "{why}"),
            SnapshotError::AllocatorBusy => write!(
                f,
                "a thread held one of glibc's arena locks for more than {} s; the snapshot was not taken",
                ARENA_LOCK_TIMEOUT.as_secs()
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
    phases: [(&'static str, Duration); 9],
    steps: u64,
    scan_processes: u32,
    cross_check: Option<CrossCheckReport>,
}

/// How leakscope's live table and a walk of glibc's heap differ
/// ([`BlockSource::CrossCheck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossCheckReport {
    pub table_blocks: u64,
    pub walked_blocks: u64,
    /// Blocks in the table that the walk did not find in use.
    pub only_in_table: u64,
    /// Blocks in use that the table does not have (glibc's own, and blocks
    /// of code that bypasses the profiled allocator).
    pub only_in_walk: u64,
    /// Blocks whose chunk is smaller than the size the table recorded.
    pub too_small: u64,
    /// Up to eight addresses of each kind of difference.
    pub only_in_table_examples: Vec<usize>,
    pub only_in_walk_examples: Vec<usize>,
    /// glibc's own totals (`mallinfo2()`) for the same frozen heap, when
    /// they could be taken.
    pub mallinfo2: Option<Mallinfo2>,
}

/// `struct mallinfo2`, field for field (see `mallinfo(3)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    pub arena: u64,
    pub ordblks: u64,
    pub smblks: u64,
    pub hblks: u64,
    pub hblkhd: u64,
    pub usmblks: u64,
    pub fsmblks: u64,
    pub uordblks: u64,
    pub fordblks: u64,
    pub keepcost: u64,
}

impl From<&blocks::CrossCheck> for CrossCheckReport {
    fn from(c: &blocks::CrossCheck) -> Self {
        let examples = |count: u64, list: &[u64]| {
            list[..(count as usize).min(list.len())]
                .iter()
                .map(|&a| a as usize)
                .collect()
        };
        CrossCheckReport {
            table_blocks: c.table_blocks,
            walked_blocks: c.walked_blocks,
            only_in_table: c.only_in_table,
            only_in_walk: c.only_in_walk,
            too_small: c.too_small,
            only_in_table_examples: examples(c.only_in_table, &c.only_in_table_examples),
            only_in_walk_examples: examples(c.only_in_walk, &c.only_in_walk_examples),
            mallinfo2: (c.mallinfo != blocks::Mallinfo::default()).then(|| {
                let m = &c.mallinfo;
                Mallinfo2 {
                    arena: m.arena,
                    ordblks: m.ordblks,
                    smblks: m.smblks,
                    hblks: m.hblks,
                    hblkhd: m.hblkhd,
                    usmblks: m.usmblks,
                    fsmblks: m.fsmblks,
                    uordblks: m.uordblks,
                    fordblks: m.fordblks,
                    keepcost: m.keepcost,
                }
            }),
        }
    }
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

    /// Processes that scanned the heap's blocks: the analysis and the
    /// helpers it forked to use the other cores ([`SnapshotOptions::cores`]).
    pub fn scan_processes(&self) -> u32 {
        self.scan_processes
    }

    /// For [`BlockSource::CrossCheck`]: how the live table and the heap walk
    /// differ.
    pub fn cross_check(&self) -> Option<&CrossCheckReport> {
        self.cross_check.as_ref()
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
        crate::export::write_atomic(path, self.report.to_json().as_bytes())
    }

    /// The holder-chain profile (gzipped pprof), as `go tool pprof` reads it.
    pub fn encode_refs_pprof(&self) -> Vec<u8> {
        let _scope = UntrackedScope::enter();
        leakscope_profile::encode_gzip(&self.report.refs_profile())
    }

    /// Writes the holder-chain profile.
    pub fn write_refs_pprof(&self, path: impl AsRef<Path>) -> io::Result<()> {
        crate::export::write_atomic(path, &self.encode_refs_pprof())
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

pub(super) fn raw_fork() -> libc::c_long {
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

/// How a snapshot is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Where the block set comes from.
    pub blocks: BlockSource,
    /// Cores the analysis may use to scan blocks (at most 8); `None`: one.
    /// Each core past the first is a helper process forked for the scan.
    pub cores: Option<usize>,
}

/// Takes a heap snapshot of this process: in full mode from the live table
/// (exact sizes and allocation stacks), otherwise from a walk of glibc's
/// heap (every block; stacks for the blocks the sampler recorded).
///
/// The calling thread's stack is scanned from the caller's frame up: the
/// snapshot's own frames reuse stack memory where deeper calls of the caller
/// left stale pointers, which would otherwise count as references.
#[inline(never)]
pub fn snapshot() -> Result<Snapshot, SnapshotError> {
    take_snapshot(
        caller_frame(child::frame_pointer()),
        SnapshotOptions::default(),
        Rules::Holders,
    )?
    .name()
}

/// [`snapshot`] without naming what it found (symbolising): the periodic
/// writer names its snapshots in its own child process.
#[inline(never)]
pub(crate) fn snapshot_unnamed() -> Result<Unnamed, SnapshotError> {
    take_snapshot(
        caller_frame(child::frame_pointer()),
        SnapshotOptions::default(),
        Rules::Holders,
    )
}

/// [`snapshot`] with options.
#[inline(never)]
pub fn snapshot_with(options: SnapshotOptions) -> Result<Snapshot, SnapshotError> {
    take_snapshot(
        caller_frame(child::frame_pointer()),
        options,
        Rules::Holders,
    )?
    .name()
}

/// The leak check at exit: a snapshot whose calling thread's stack is
/// scanned from `caller` up (the exit handler's caller: see
/// `export::at_exit`), its blocks classified by Valgrind's rules.
#[inline(never)]
pub(crate) fn snapshot_from(caller: CallerFrame) -> Result<Snapshot, SnapshotError> {
    take_snapshot(caller, SnapshotOptions::default(), Rules::Valgrind)?.name()
}

pub(crate) use child::frame_pointer;

/// The frame of the function whose frame pointer is `fp`'s caller.
#[inline(always)]
pub(crate) fn caller_frame(fp: u64) -> CallerFrame {
    // SAFETY: with frame pointers, a frame record is two words at `fp`: the
    // caller's frame pointer and the return address; both are on this
    // thread's live stack.
    let (caller_fp, return_address) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
    CallerFrame {
        stack_start: fp + 16,
        fp: caller_fp,
        pc: return_address,
    }
}

/// Where the snapshot's caller's stack begins.
#[derive(Clone, Copy, Default)]
pub(crate) struct CallerFrame {
    pub(crate) stack_start: u64,
    pub(crate) fp: u64,
    pub(crate) pc: u64,
}

/// At most how many blocks glibc's heap can hold now: every chunk is at
/// least 32 bytes, in the program break area or anonymous memory. (The
/// result mapping is reserved, not committed: untouched pages cost nothing.)
fn heap_block_bound() -> usize {
    let Some(maps) = image::Maps::read_own() else {
        return 1 << 20;
    };
    let bytes: u64 = maps
        .regions()
        .iter()
        .filter(|r| {
            r.writable
                && matches!(
                    r.kind,
                    image::RegionKind::Anonymous | image::RegionKind::Brk
                )
        })
        .map(|r| r.end - r.start)
        .sum();
    (bytes / glibc::layout::MIN_CHUNK) as usize
}

/// How often the arena list is read again when arenas keep being added.
const ARENA_LIST_TRIES: u32 = 8;

/// How long the snapshot waits for each of glibc's arena locks.
const ARENA_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The block source to use, or why there is none. `LEAKSCOPE_SNAPSHOT_BLOCKS`
/// (`table`, `walk`, `check`) chooses for snapshots that do not.
fn resolve_source(requested: BlockSource, mode: Mode) -> Result<BlockSource, SnapshotError> {
    use crate::config::SnapshotBlocks;
    let requested = match (requested, crate::config::snapshot_blocks()) {
        (BlockSource::Auto, Some(SnapshotBlocks::Table)) => BlockSource::LiveTable,
        (BlockSource::Auto, Some(SnapshotBlocks::Walk)) => BlockSource::HeapWalk,
        (BlockSource::Auto, Some(SnapshotBlocks::Check)) => BlockSource::CrossCheck,
        (r, _) => r,
    };
    let source = match requested {
        BlockSource::Auto if mode == Mode::Full => BlockSource::LiveTable,
        BlockSource::Auto => BlockSource::HeapWalk,
        other => other,
    };
    if source == BlockSource::LiveTable && mode != Mode::Full {
        return Err(SnapshotError::NotFullMode(mode));
    }
    if source != BlockSource::LiveTable {
        if let Some(other) = other_allocator() {
            return Err(SnapshotError::NoHeapWalk(format!(
                "outside full mode, a snapshot walks glibc's heap, but this process's blocks come from {other}; \
                 set LEAKSCOPE_MODE=full (every block tracked) to take snapshots"
            )));
        }
    }
    Ok(source)
}

/// The allocator behind the profiled blocks if it is not glibc's malloc.
pub(crate) fn other_allocator() -> Option<String> {
    let named = |symbol: &std::ffi::CStr| {
        // SAFETY: dlsym with RTLD_DEFAULT only looks a name up.
        !unsafe { libc::dlsym(libc::RTLD_DEFAULT, symbol.as_ptr()) }.is_null()
    };
    let guess = || {
        if named(c"_rjem_malloc") || named(c"mallocx") || named(c"je_malloc") {
            "jemalloc".to_string()
        } else if named(c"mi_malloc") {
            "mimalloc".to_string()
        } else if named(c"tc_malloc") {
            "tcmalloc".to_string()
        } else {
            "an allocator other than glibc's malloc".to_string()
        }
    };
    match collect::heap_kind() {
        HeapKind::Glibc => None,
        HeapKind::Other => Some(format!("{} (Profiler::wrap)", guess())),
        HeapKind::System => {
            // `malloc` may have been replaced (LD_PRELOAD of another
            // allocator, or one linked in): then it is not libc's.
            let mut info = libc::Dl_info {
                dli_fname: std::ptr::null(),
                dli_fbase: std::ptr::null_mut(),
                dli_sname: std::ptr::null(),
                dli_saddr: std::ptr::null_mut(),
            };
            let mut libc_info = info;
            // SAFETY: dladdr only reads the loader's tables.
            let (a, b) = unsafe {
                (
                    libc::dladdr(libc::malloc as *const libc::c_void, &mut info),
                    libc::dladdr(
                        libc::gnu_get_libc_version as *const libc::c_void,
                        &mut libc_info,
                    ),
                )
            };
            (a != 0 && b != 0 && info.dli_fbase != libc_info.dli_fbase)
                .then(|| format!("{} (malloc is not libc's)", guess()))
        }
    }
}

fn take_snapshot(
    caller: CallerFrame,
    options: SnapshotOptions,
    rules: Rules,
) -> Result<Unnamed, SnapshotError> {
    let mode = collect::mode();
    let source = resolve_source(options.blocks, mode)?;
    let walking = source != BlockSource::LiveTable;
    let _scope = UntrackedScope::enter();
    let _one = SNAPSHOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let signo = threads::install_handler().map_err(SnapshotError::Signal)?;
    let time_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);

    // Step 1: everything that allocates.
    let guard = memory_guard::Guard::for_this_process();
    if let Some(why) = guard.pressure(0) {
        return Err(SnapshotError::MemoryPressure(why));
    }
    let modules = modules::loaded_modules();
    let segments: Vec<(u64, u64)> = modules.segments.iter().map(|s| (s.start, s.end)).collect();
    let variables: Vec<(u64, u64)> = modules.variables.iter().map(|v| (v.start, v.end)).collect();
    let own_variables: Vec<bool> = modules.variables.iter().map(|v| v.own).collect();
    let heuristics = match rules {
        Rules::Valgrind => crate::config::leak_heuristics().0,
        Rules::Holders => 0,
    };
    // Asks the loader (and allocates): never once other threads are
    // stopped, one of which may hold the loader's lock or an arena's.
    let anonymous_roots = other_allocator().is_none();
    let scan_helpers = parallel_scan::helpers_for(options.cores);
    let me = threads::own_thread();
    let others = threads::other_threads();
    let mut thread_roots = vec![
        ThreadRoots {
            stopped: true,
            exited: false,
            is_self: true,
            own: crate::own_threads::is_own(me.tid),
            regs: [0; threads::SAVED_REGS],
            tp: threads::thread_pointer(),
        };
        others.len() + 1
    ];
    let layout = RootLayout {
        variables: variables.len() as u32,
        segments: segments.len() as u32,
        threads: thread_roots.len() as u32,
        anonymous: child::MAX_ANONYMOUS_ROOTS,
    };
    let mut slot_buffer = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let slots = slot_buffer.prepare(&others)?;
    // The heap walk: what it needs to know about libc, and the arenas whose
    // locks are held across the fork.
    let mut glibc = glibc::prepare::prepared(modules.static_tls_bytes);
    let (mut arenas, walk_capacity) = if walking {
        let Some(layout) = glibc.layout else {
            return Err(SnapshotError::NoHeapWalk(format!(
                "glibc {}.{}: {}",
                glibc.version.0,
                glibc.version.1,
                glibc::WalkError::UnknownRelease.message()
            )));
        };
        let _ = layout;
        let arenas =
            glibc::locks::live_arenas(&glibc).map_err(|why| SnapshotError::HeapWalk(why.into()))?;
        glibc.main_arena = arenas[0];
        (arenas, heap_block_bound())
    } else {
        (Vec::new(), 0)
    };

    // Step 2: stopped. No allocation or free until the locks are released.
    let paused_at = Instant::now();
    let mut tries = 0;
    let arena_locks = loop {
        if !walking {
            break None;
        }
        let locks = glibc::locks::lock_all(&arenas, ARENA_LOCK_TIMEOUT)
            .map_err(|_| SnapshotError::AllocatorBusy)?;
        if glibc::locks::unchanged(&glibc, &arenas) {
            break Some(locks);
        }
        // A thread added an arena after the list was read (a thread's
        // first allocation): its lock is not held. Read the list again.
        locks.release();
        tries += 1;
        if tries == ARENA_LIST_TRIES {
            return Err(SnapshotError::AllocatorBusy);
        }
        std::thread::yield_now();
        arenas =
            glibc::locks::live_arenas(&glibc).map_err(|why| SnapshotError::HeapWalk(why.into()))?;
    };
    collect::lock_for_snapshot();
    // SAFETY: lock_for_snapshot holds every shard lock.
    let live = unsafe { LIVE.len_unlocked() };
    let out = Output::new(layout.roots() as usize + 1, live.max(walk_capacity) + 16);
    threads::stop(slots, signo, STOP_TIMEOUT);
    for (roots, slot) in thread_roots[1..].iter_mut().zip(slots.iter()) {
        roots.is_self = false;
        roots.own = crate::own_threads::is_own(slot.tid);
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
        // A panic in the child must end it, never unwind into the program.
        struct ExitOnUnwind;
        impl Drop for ExitOnUnwind {
            fn drop(&mut self) {
                // SAFETY: ends the child at once (only reached by unwinding).
                unsafe { libc::_exit(75) };
            }
        }
        let _exit_on_unwind = ExitOnUnwind;
        collect::enter_snapshot_child();
        let input = ChildInput {
            caller,
            rules,
            segments: &segments,
            variables: &variables,
            own_variables: &own_variables,
            own_code: &modules.own_code,
            threads: &thread_roots,
            static_tls_bytes: modules.static_tls_bytes,
            source,
            glibc,
            table: child::TableOf::ThisProcess,
            heuristics,
            anonymous_roots,
            scan_helpers,
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
    if let Some(locks) = arena_locks {
        locks.release();
    }
    let pause = paused_at.elapsed();
    threads::retire_slots();
    let stopped: Vec<(bool, bool)> = thread_roots.iter().map(|t| (t.stopped, t.exited)).collect();
    drop(slot_buffer);
    // RSS as the fork left it, read while the child analyses: the parent
    // reads smaps (which allocates); the child never does. Without a walk,
    // the allocator's figures come from mallinfo2 at the same moment.
    let memory_reading = crate::memory::read_process().ok();
    let allocator_figures = (!walking).then(crate::memory::allocator_figures);

    // Step 3: wait for the child, then name its results.
    let Some(out) = out else {
        return Err(SnapshotError::Fork(io::Error::other(
            "no memory for the snapshot results",
        )));
    };
    if pid < 0 {
        return Err(SnapshotError::Fork(fork_error));
    }
    if let Err(e) = wait_for(
        pid as libc::pid_t,
        crate::config::snapshot_timeout(),
        &guard,
    ) {
        let h = out.raw_header();
        if h.fault_addr != 0 || h.fault_pc != 0 {
            return Err(SnapshotError::Analysis(format!(
                "it read unmapped memory at {:#x} (code at {}): a bug, please report it",
                h.fault_addr,
                describe_code(h.fault_pc)
            )));
        }
        return Err(e);
    }
    let Some((header, _, _)) = out.read() else {
        return Err(SnapshotError::Analysis(
            "the analysis wrote no results".into(),
        ));
    };
    if header.walk_error != 0 {
        let why = glibc::WalkError::from_code(header.walk_error)
            .map_or("unknown error", glibc::WalkError::message);
        return Err(SnapshotError::HeapWalk(format!(
            "{why} (glibc {}.{})",
            glibc.version.0, glibc.version.1
        )));
    }
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
    Ok(Unnamed {
        out,
        modules,
        threads: all_threads,
        thread_reports,
        time_unix_ms,
        pause,
        source,
        memory_reading,
        allocator_figures,
    })
}

/// A snapshot taken but not yet named: the analysis's results (in the
/// mapping its child wrote) and what they refer to (modules, threads).
/// Naming symbolises every stack and code address it holds.
pub(crate) struct Unnamed {
    out: Output,
    modules: modules::Modules,
    threads: Vec<ThreadInfo>,
    thread_reports: Vec<ThreadReport>,
    time_unix_ms: u64,
    pause: Duration,
    source: BlockSource,
    memory_reading: Option<leakscope_profile::memory::Inputs>,
    allocator_figures: Option<crate::memory::AllocatorHeap>,
}

impl Unnamed {
    /// Names the results: the snapshot's frames, roots and holders.
    pub(crate) fn name(self) -> Result<Snapshot, SnapshotError> {
        let _scope = UntrackedScope::enter();
        let Some(results) = self.out.into_results() else {
            return Err(SnapshotError::Analysis(
                "the analysis wrote no results".into(),
            ));
        };
        let header = results.header;
        let resolved = Resolved::new(
            results.roots,
            results.blocks,
            results.fields,
            &self.modules,
            &self.threads,
            report::CodeOf::ThisProcess,
        );
        let mut report = resolved.report(
            &header,
            ReportMeta {
                time_unix_ms: self.time_unix_ms,
                pause: self.pause,
                threads: &self.thread_reports,
                source: self.source,
            },
        );
        let allocator_figures = self.allocator_figures;
        report.memory = self
            .memory_reading
            .map(|inputs| memory_of(inputs, &report, allocator_figures));
        let steps = header.graph_steps + resolved.naming_steps;
        Ok(Snapshot {
            report,
            resolved,
            pause: self.pause,
            analysis: Duration::from_nanos(header.analysis_ns),
            phases: std::array::from_fn(|i| {
                (
                    child::Phase::ALL[i].name(),
                    Duration::from_nanos(header.phase_ns[i]),
                )
            }),
            steps,
            scan_processes: header.scan_processes,
            cross_check: (self.source == BlockSource::CrossCheck)
                .then(|| CrossCheckReport::from(&header.check)),
        })
    }
}

/// The breakdown of RSS with the snapshot's heap figures: from the walk
/// when there was one (per arena), else the live table's and `mallinfo2`'s.
fn memory_of(
    mut inputs: leakscope_profile::memory::Inputs,
    report: &SnapshotReport,
    allocator: Option<crate::memory::AllocatorHeap>,
) -> crate::memory::Breakdown {
    use crate::memory::{AllocatorHeap, HeapFigures, Live, LiveSource};
    let walked = report.blocks_from.is_heap_walk();
    inputs.heap = HeapFigures {
        live: Some(Live {
            amount: report.totals.live,
            from: if walked {
                LiveSource::Walk
            } else {
                LiveSource::LiveTable
            },
        }),
        allocator: match (&report.glibc_heap, allocator) {
            (Some(heap), _) => AllocatorHeap::from_walk(heap),
            (None, Some(figures)) => figures,
            (None, None) => AllocatorHeap::default(),
        },
        leakscope_blocks: report.totals.leakscope_own,
    };
    leakscope_profile::memory::compute(&inputs)
}

/// `pc` as `object!symbol+offset` when the loader can say.
fn describe_code(pc: u64) -> String {
    let mut info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    if unsafe { libc::dladdr(pc as *const libc::c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return format!("{pc:#x}");
    }
    // SAFETY: the loader's strings are NUL-terminated and live.
    let object = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy();
    let object = object.rsplit('/').next().unwrap_or_default().to_string();
    if info.dli_sname.is_null() {
        return format!("{object}+{:#x}", pc - info.dli_fbase as u64);
    }
    // SAFETY: as above.
    let symbol = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }.to_string_lossy();
    format!("{object}!{symbol}+{:#x}", pc - info.dli_saddr as u64)
}

/// Waits for the analysis child; kills it when it runs too long, or when
/// memory runs short (its copy-on-write pages and arrays must not take the
/// process past its limits).
fn wait_for(
    pid: libc::pid_t,
    timeout: Duration,
    guard: &memory_guard::Guard,
) -> Result<(), SnapshotError> {
    let kill = |pid: libc::pid_t| {
        let mut status = 0;
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
    };
    let longest_nap = if guard.limited() {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(20)
    };
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
                    74 => "it read unmapped memory".into(),
                    75 => "it panicked (a bug)".into(),
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
            kill(pid);
            return Err(SnapshotError::Analysis(format!(
                "it took longer than {}s",
                timeout.as_secs()
            )));
        }
        if let Some(why) = guard.pressure(0) {
            kill(pid);
            return Err(SnapshotError::MemoryPressure(why));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(longest_nap);
    }
}
