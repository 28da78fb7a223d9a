//! Holding glibc's arena locks across the snapshot's fork, as glibc's own
//! `fork()` does, so that no thread is stopped half-way through changing an
//! arena (splitting a chunk, relinking a bin): the child then walks heaps
//! that are consistent. Threads that call malloc meanwhile wait on the lock
//! (in a futex wait, where they can also be stopped).
//!
//! An arena's mutex is the first `int` of `struct malloc_state`, a glibc
//! "low-level lock": 0 free, 1 held, 2 held with waiters. Taking and
//! releasing it here follows glibc's protocol (compare-and-swap, futex wait
//! on 2, wake one on release of 2), so glibc's own waiters are woken.
//! Arenas are taken in list order (main first), the order glibc's fork
//! handler uses, so the two cannot deadlock.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::arenas;
use super::layout::{Layout, HEAP_MAX};
use super::Prepared;
use super::WalkError;
use crate::snapshot::image::{Maps, Memory};

/// Longest arena list believed.
const MAX_ARENAS: usize = 4096;

/// The arenas of the running process, main first, read with volatile loads
/// (other threads run) from addresses checked against the maps first.
/// Allocates: call before stopping anything. The error says what failed.
pub(crate) fn live_arenas(prep: &Prepared) -> Result<Vec<u64>, &'static str> {
    // A thread's first allocation can add an arena (and map its heap)
    // between reading the maps and reading the list: read both again.
    let mut result = Err("");
    for _ in 0..8 {
        result = arena_list(prep);
        if result != Err(BAD_LIST) {
            break;
        }
        std::thread::yield_now();
    }
    result
}

const BAD_LIST: &str = "glibc's list of arenas does not lead from arena to arena";

fn arena_list(prep: &Prepared) -> Result<Vec<u64>, &'static str> {
    let layout = prep.layout.ok_or(WalkError::UnknownRelease.message())?;
    let maps = Maps::read_own().ok_or("/proc/self/maps could not be read")?;
    let main = main_arena_live(prep, layout, &maps).ok_or(WalkError::NoMainArena.message())?;
    let read = |addr: u64| {
        // SAFETY: the address is 8-aligned and lies in a readable mapping
        // (checked first); what it reads can be stale, which the list's
        // checks and the child's walk catch.
        (addr % 8 == 0 && maps.covers(addr, addr + 8))
            .then(|| unsafe { std::ptr::read_volatile(addr as *const u64) })
    };
    let mut list = vec![main];
    let mut a = read(main + layout.next).ok_or(BAD_LIST)?;
    while a != main {
        let heap = a.wrapping_sub(layout.heap_info_size);
        // An arena sits after the `heap_info` of its first heap, which
        // names it.
        if list.len() >= MAX_ARENAS || heap % HEAP_MAX != 0 || read(heap) != Some(a) {
            return Err(BAD_LIST);
        }
        list.push(a);
        a = read(a + layout.next).ok_or(BAD_LIST)?;
    }
    Ok(list)
}

/// Whether the arena list is still `arenas` (no arena was added since it
/// was read). Allocates nothing: for use while threads are stopped.
pub(crate) fn unchanged(prep: &Prepared, arenas: &[u64]) -> bool {
    let Some(layout) = prep.layout else {
        return false;
    };
    let Some(&main) = arenas.first() else {
        return false;
    };
    let mut i = 0;
    let mut a = main;
    loop {
        if arenas.get(i) != Some(&a) {
            return false;
        }
        i += 1;
        // SAFETY: `a` is one of the arenas read before (arenas are never
        // unmapped), and `next` is an aligned field inside it.
        a = unsafe { std::ptr::read_volatile((a + layout.next) as *const u64) };
        if a == main {
            return i == arenas.len();
        }
    }
}

/// The main arena, searched in a copy of libc's data (the live data changes
/// under other threads, so it is copied word by word first). Cached once
/// found: the arena is a static.
fn main_arena_live(prep: &Prepared, layout: &Layout, maps: &Maps) -> Option<u64> {
    static FOUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let cached = FOUND.load(Ordering::Relaxed);
    if cached != 0 {
        return Some(cached);
    }
    // Other threads keep allocating while the copy is taken (and glibc
    // trims the heap on free): a few bins may be caught mid-update, and a
    // failed attempt is retried after letting the others run.
    const TORN_BINS: usize = 4;
    for _attempt in 0..16 {
        for &(start, end) in prep.libc_data() {
            let copy = Copied::of(maps, start.next_multiple_of(8), end & !7)?;
            // The copy's own allocation may have grown the heap (moving the
            // main arena's top past the end the maps said): check against
            // maps read after the copy.
            if let Ok(a) =
                arenas::find_main_arena(&copy, layout, &[(copy.base, copy.end())], TORN_BINS)
            {
                FOUND.store(a, Ordering::Relaxed);
                return Some(a);
            }
        }
        std::thread::yield_now();
    }
    None
}

/// A copy of some of this process's memory, read as it was, with the maps
/// as they were after the copy.
struct Copied {
    maps: Maps,
    base: u64,
    words: Vec<u64>,
}

impl Copied {
    fn of(readable: &Maps, start: u64, end: u64) -> Option<Copied> {
        if !readable.covers(start, end) {
            return None;
        }
        let mut words = Vec::with_capacity(((end - start) / 8) as usize);
        for at in (start..end).step_by(8) {
            // SAFETY: `[start, end)` is readable (checked above), 8-aligned,
            // and libc's data is never unmapped.
            words.push(unsafe { std::ptr::read_volatile(at as *const u64) });
        }
        Some(Copied {
            maps: Maps::read_own()?,
            base: start,
            words,
        })
    }

    fn end(&self) -> u64 {
        self.base + 8 * self.words.len() as u64
    }
}

impl Memory for Copied {
    fn maps(&self) -> &Maps {
        &self.maps
    }

    fn is_guard_page(&self, _addr: u64) -> bool {
        false
    }

    fn words(&self, start: u64, end: u64) -> Option<&[u64]> {
        if start % 8 != 0 || start < self.base || end > self.end() || end < start {
            return None;
        }
        let i = ((start - self.base) / 8) as usize;
        Some(&self.words[i..i + ((end - start) / 8) as usize])
    }
}

/// Arena locks held by this thread; released by [`ArenaLocks::release`].
#[must_use]
pub(crate) struct ArenaLocks<'a> {
    arenas: &'a [u64],
}

/// Takes every arena's lock, in list order, waiting at most `timeout` for
/// each; on a timeout releases what it took and returns the arena that
/// could not be locked. Allocates nothing.
pub(crate) fn lock_all(arenas: &[u64], timeout: Duration) -> Result<ArenaLocks<'_>, u64> {
    for (i, &a) in arenas.iter().enumerate() {
        if !lock(a, timeout) {
            ArenaLocks {
                arenas: &arenas[..i],
            }
            .release();
            return Err(a);
        }
    }
    Ok(ArenaLocks { arenas })
}

impl ArenaLocks<'_> {
    /// Releases the locks, waking one waiter of each that has some.
    pub(crate) fn release(self) {
        for &a in self.arenas.iter().rev() {
            let m = mutex(a);
            if m.swap(0, Ordering::Release) > 1 {
                futex(m, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1, None);
            }
        }
    }
}

fn mutex(arena: u64) -> &'static AtomicI32 {
    // SAFETY: an arena's first field is its lock, an aligned int that
    // glibc only ever accesses atomically; arenas are never freed.
    unsafe { &*(arena as *const AtomicI32) }
}

fn lock(arena: u64, timeout: Duration) -> bool {
    let m = mutex(arena);
    if m.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return true;
    }
    let deadline = Instant::now() + timeout;
    loop {
        // Mark it contended; if it was free meanwhile, it is ours.
        if m.swap(2, Ordering::Acquire) == 0 {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        futex(
            m,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            2,
            Some(left.min(Duration::from_millis(10))),
        );
    }
}

fn futex(m: &AtomicI32, op: i32, value: i32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex call on a live, aligned int; the timeout (if any)
    // outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            m.as_ptr(),
            op,
            value,
            ts_ptr,
            std::ptr::null::<u32>(),
            0,
        );
    }
}
