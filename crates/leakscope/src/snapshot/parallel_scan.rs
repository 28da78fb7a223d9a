//! The scan of heap blocks on several cores.
//!
//! The snapshot child may not start threads (a thread needs `malloc`, and
//! the child inherited every allocator lock as the other threads held it).
//! It forks helpers instead: each is a copy of the same frozen image. The
//! blocks are cut into shares, several per process, which every process
//! takes one at a time from a counter in shared memory until none is left
//! (pointer density varies: one vector of a million pointers is one block).
//! A helper scans into its own edge list, copies it into a mapping shared
//! with the child, and exits; the child then appends every share's edges
//! in share order, so the edge list is exactly the one a single scan gives.
//! A share whose helper cannot be forked or does not finish is scanned by
//! the child. Analyses of other processes' images (attach, core) use it the
//! same way.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::mmap_vec::MmapVec;
use crate::collect::raw_mem;

/// Helpers at most (the child makes one more scanner).
pub(crate) const MAX_HELPERS: usize = 7;

/// Shares per scanning process: enough to even out shares of unequal cost.
const SHARES_PER_PROCESS: usize = 4;

pub(crate) const MAX_SHARES: usize = (MAX_HELPERS + 1) * SHARES_PER_PROCESS;

/// Bytes of blocks per scanning process below which another one is not
/// worth its fork (which copies the page tables of every mapped page).
const MIN_PROCESS_BYTES: u64 = 16 << 20;

/// Helpers for an analysis allowed `cores` cores (`None`: one). One core
/// is the default: on the 2-vCPU VM of `bench/RESULTS.md` a second scanning
/// process made the scan no faster (the fork and the return of the edges
/// cost what the second core saved).
pub(crate) fn helpers_for(cores: Option<usize>) -> u32 {
    cores.map_or(0, |c| c.saturating_sub(1).min(MAX_HELPERS) as u32)
}

/// How the blocks are scanned: consecutive shares of blocks (`first..end`
/// in the index) and the processes that take them.
pub(crate) struct Plan {
    shares: [(usize, usize); MAX_SHARES],
    count: usize,
    pub(crate) processes: usize,
}

impl Plan {
    /// Cuts blocks `0..sizes.len()` into shares of about equal bytes, for
    /// at most `helpers + 1` processes.
    pub(crate) fn new(sizes: impl ExactSizeIterator<Item = u64> + Clone, helpers: usize) -> Plan {
        let n = sizes.len();
        let total: u64 = sizes.clone().sum();
        let processes =
            (helpers.min(MAX_HELPERS) + 1).min((total / MIN_PROCESS_BYTES).max(1) as usize);
        let wanted = if processes == 1 {
            1
        } else {
            processes * SHARES_PER_PROCESS
        };
        let per_share = total.div_ceil(wanted as u64).max(1);
        let mut plan = Plan {
            shares: [(0, 0); MAX_SHARES],
            count: 0,
            processes,
        };
        let (mut start, mut bytes) = (0, 0u64);
        for (i, size) in sizes.enumerate() {
            bytes += size;
            if bytes >= per_share && plan.count + 1 < wanted {
                plan.shares[plan.count] = (start, i + 1);
                plan.count += 1;
                start = i + 1;
                bytes = 0;
            }
        }
        plan.shares[plan.count] = (start, n);
        plan.count += 1;
        plan
    }

    pub(crate) fn shares(&self) -> &[(usize, usize)] {
        &self.shares[..self.count]
    }
}

/// What a scanner reports for one share: who scanned it (0: nobody yet,
/// else the helper's number), where its edges start in that scanner's list
/// and how many there are, and the bytes scanned.
#[derive(Clone, Copy)]
#[repr(C)]
struct ShareDone {
    by: u32,
    _pad: u32,
    start: u64,
    len: u64,
    scanned: u64,
}

/// Memory shared by the child and its helpers: the counter shares are
/// taken from, and each share's report (written by other processes, so
/// only read and written through `UnsafeCell`, volatile).
#[repr(C)]
struct Control {
    next: AtomicU32,
    done: [UnsafeCell<ShareDone>; MAX_SHARES],
}

impl Control {
    fn report(&self, k: usize) -> ShareDone {
        // SAFETY: the slot is valid memory of the shared mapping; its
        // writer (a helper) has exited when the child reads it.
        unsafe { self.done[k].get().read_volatile() }
    }

    fn write_report(&self, k: usize, report: ShareDone) {
        // SAFETY: share `k` was taken by this process alone, so no other
        // process writes its slot.
        unsafe { self.done[k].get().write_volatile(report) }
    }
}

/// A mapping shared with the helpers, unmapped when dropped.
struct Shared {
    at: NonNull<u8>,
    bytes: usize,
}

impl Shared {
    fn new(bytes: usize) -> Option<Shared> {
        Some(Shared {
            at: raw_mem::map_shared_zeroed(bytes)?,
            bytes,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: made by `map_shared_zeroed` with this size; whatever was
        // read from it has been copied out.
        unsafe { raw_mem::unmap(self.at, self.bytes) };
    }
}

/// A forked helper and the mapping it returns its edges in.
struct Helper {
    pid: libc::pid_t,
    edges: Shared,
}

/// Scans the plan's shares with `scan_share` (which appends a share's
/// edges, in scan order, and returns the bytes it scanned), in this
/// process and in forked helpers, appending every edge to `edges` in share
/// order. `most_edges` bounds the edges of all shares together (a word
/// yields at most one). Returns the bytes scanned and how many processes
/// scanned, or `None` when memory is refused.
pub(crate) fn scan_shares<E: Copy>(
    plan: &Plan,
    edges: &mut MmapVec<E>,
    most_edges: usize,
    mut scan_share: impl FnMut((usize, usize), &mut MmapVec<E>) -> Option<u64>,
) -> Option<(u64, u32)> {
    let shares = plan.shares();
    let control_mapping = Shared::new(std::mem::size_of::<Control>())?;
    // SAFETY: a zeroed, page-aligned mapping at least as large as
    // `Control`, whose fields are valid when zero; shared with the helpers
    // only through atomics and reports written before they exit.
    let control = unsafe { &*control_mapping.at.as_ptr().cast::<Control>() };
    let mut helpers: [Option<Helper>; MAX_HELPERS] = [const { None }; MAX_HELPERS];
    for (h, slot) in helpers.iter_mut().enumerate().take(plan.processes - 1) {
        *slot = fork_helper(h as u32 + 1, control, shares, most_edges, &mut scan_share);
    }
    // The child's own shares, into one list.
    let mut mine = MmapVec::new();
    let done_here = take_shares(control, shares, &mut mine, &mut scan_share)?;
    let mut returned = [false; MAX_HELPERS];
    for (h, helper) in helpers.iter().enumerate() {
        returned[h] = helper.as_ref().is_some_and(|helper| finished(helper.pid));
    }
    let mut scanned = 0;
    let mut used = [false; MAX_HELPERS];
    for (k, &share) in shares.iter().enumerate() {
        if let Some((start, len, bytes)) = done_here[k] {
            append(edges, &mine[start..start + len])?;
            scanned += bytes;
            continue;
        }
        let report = control.report(k);
        let by = report.by as usize;
        let from_helper = (1..=MAX_HELPERS).contains(&by) && returned[by - 1];
        match &helpers[by.saturating_sub(1)] {
            Some(helper) if from_helper => {
                let capacity = helper.edges.bytes / std::mem::size_of::<E>().max(1);
                let (start, len) = (report.start as usize, report.len as usize);
                if start.checked_add(len).is_none_or(|end| end > capacity) {
                    scanned += scan_share(share, edges)?;
                    continue;
                }
                let size = std::mem::size_of::<E>();
                // SAFETY: `start` is within the mapping (checked above).
                let first = unsafe { helper.edges.at.add(start * size) };
                populate(first, len * size, libc::MADV_POPULATE_READ);
                // SAFETY: the helper exited after copying its edges to the
                // start of this mapping, `start + len` within its capacity.
                let from = unsafe {
                    std::slice::from_raw_parts(helper.edges.at.as_ptr().cast::<E>().add(start), len)
                };
                append(edges, from)?;
                scanned += report.scanned;
                used[by - 1] = true;
            }
            _ => scanned += scan_share(share, edges)?,
        }
    }
    Some((scanned, 1 + used.iter().filter(|&&u| u).count() as u32))
}

/// The next share nobody has taken.
fn take(control: &Control, shares: usize) -> Option<usize> {
    let k = control.next.fetch_add(1, Ordering::Relaxed) as usize;
    (k < shares).then_some(k)
}

/// Forks helper number `number`, or `None` when it cannot.
fn fork_helper<E: Copy>(
    number: u32,
    control: &Control,
    shares: &[(usize, usize)],
    most_edges: usize,
    scan_share: &mut impl FnMut((usize, usize), &mut MmapVec<E>) -> Option<u64>,
) -> Option<Helper> {
    let edges = Shared::new(most_edges.checked_mul(std::mem::size_of::<E>())?)?;
    let pid = super::raw_fork() as libc::pid_t;
    if pid == 0 {
        // SAFETY: a setting of this single-threaded helper: it dies with the
        // child that forked it, should that one be killed.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let status = match help(number, control, shares, most_edges, scan_share, &edges) {
            Some(()) => 0,
            None => 1,
        };
        // SAFETY: ends the helper without running anything of the child's
        // (no destructors, no atexit handlers).
        unsafe { libc::_exit(status) };
    }
    (pid > 0).then_some(Helper { pid, edges })
}

/// A helper's work: takes shares until none is left, then returns their
/// edges and reports.
fn help<E: Copy>(
    number: u32,
    control: &Control,
    shares: &[(usize, usize)],
    capacity: usize,
    scan_share: &mut impl FnMut((usize, usize), &mut MmapVec<E>) -> Option<u64>,
    out: &Shared,
) -> Option<()> {
    let mut own = MmapVec::new();
    let reports = take_shares(control, shares, &mut own, scan_share)?;
    if own.len() > capacity {
        return None;
    }
    populate(
        out.at,
        own.len() * std::mem::size_of::<E>(),
        libc::MADV_POPULATE_WRITE,
    );
    // SAFETY: the edge mapping holds `capacity` edges, page-aligned, and
    // `own.len() <= capacity`.
    unsafe { std::ptr::copy_nonoverlapping(own.as_ptr(), out.at.as_ptr().cast::<E>(), own.len()) };
    for (k, report) in reports.iter().enumerate() {
        if let Some((start, len, scanned)) = *report {
            control.write_report(
                k,
                ShareDone {
                    by: number,
                    _pad: 0,
                    start: start as u64,
                    len: len as u64,
                    scanned,
                },
            );
        }
    }
    Some(())
}

/// Where a process put a share's edges in its list (start, count) and the
/// bytes it scanned.
type Scanned = Option<(usize, usize, u64)>;

/// Takes shares until none is left, scanning each into `list`.
fn take_shares<E: Copy>(
    control: &Control,
    shares: &[(usize, usize)],
    list: &mut MmapVec<E>,
    scan_share: &mut impl FnMut((usize, usize), &mut MmapVec<E>) -> Option<u64>,
) -> Option<[Scanned; MAX_SHARES]> {
    let mut done = [None; MAX_SHARES];
    while let Some(k) = take(control, shares.len()) {
        let start = list.len();
        let scanned = scan_share(shares[k], list)?;
        done[k] = Some((start, list.len() - start, scanned));
    }
    Some(done)
}

/// Waits for a helper; whether it finished its work.
fn finished(pid: libc::pid_t) -> bool {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    }
}

/// Maps the pages of `[at, at + bytes)` of a shared mapping in one call:
/// shared memory has no huge pages, and a fault per 4 KiB page costs more
/// than the copy (several microseconds each in a VM). Best effort: on
/// kernels before 5.14 the pages fault in as they are touched.
fn populate(at: NonNull<u8>, bytes: usize, advice: libc::c_int) {
    let page = at.as_ptr() as usize & !4095;
    let end = at.as_ptr() as usize + bytes;
    if end > page {
        // SAFETY: advice on pages of a mapping of ours; it changes no
        // contents.
        unsafe { libc::madvise(page as *mut libc::c_void, end - page, advice) };
    }
}

fn append<E: Copy>(edges: &mut MmapVec<E>, more: &[E]) -> Option<()> {
    edges.reserve(more.len())?;
    for &e in more {
        edges.push(e)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_by_bytes_and_cover_every_block() {
        let sizes = vec![1u64 << 20; 64];
        let plan = Plan::new(sizes.iter().copied(), 1);
        assert_eq!(plan.processes, 2);
        let shares = plan.shares();
        assert_eq!(shares.len(), 2 * SHARES_PER_PROCESS);
        assert_eq!(shares[0], (0, 8));
        assert_eq!(shares.last(), Some(&(56, 64)));
        assert!(shares.windows(2).all(|w| w[0].1 == w[1].0));
        // Too little to share: one share, one process.
        let plan = Plan::new([4096u64; 10].into_iter(), 3);
        assert_eq!((plan.shares(), plan.processes), (&[(0, 10)][..], 1));
        let plan = Plan::new(std::iter::empty(), 3);
        assert_eq!(plan.shares(), &[(0, 0)]);
    }

    fn scan(range: (usize, usize), out: &mut MmapVec<(u32, u32)>) -> Option<u64> {
        for i in range.0..range.1 {
            // Uneven work: the first shares hold most edges.
            if i % 3 == 0 || i < 1000 {
                out.push((i as u32, (i * 7) as u32))?;
            }
        }
        Some((range.1 - range.0) as u64 * 8)
    }

    /// Helpers' edges come back in share order, as one scan would give
    /// them; shares a helper could not return are scanned here.
    #[test]
    fn helpers_return_edges_in_share_order() {
        let sizes = vec![1u64 << 20; 5000];
        let plan = Plan::new(sizes.iter().copied(), 3);
        assert_eq!(plan.processes, 4);
        let mut expected = MmapVec::new();
        scan((0, 5000), &mut expected).unwrap();
        let mut edges = MmapVec::new();
        let (scanned, processes) = scan_shares(&plan, &mut edges, 5000, scan).unwrap();
        assert_eq!(scanned, 5000 * 8);
        assert!((1..=4).contains(&processes));
        assert_eq!(&edges[..], &expected[..]);
        // Room for too few edges: every helper fails, the child scans
        // their shares, and the result is the same.
        let mut edges = MmapVec::new();
        let (scanned, processes) = scan_shares(&plan, &mut edges, 10, scan).unwrap();
        assert_eq!((scanned, processes), (5000 * 8, 1));
        assert_eq!(&edges[..], &expected[..]);
    }
}
