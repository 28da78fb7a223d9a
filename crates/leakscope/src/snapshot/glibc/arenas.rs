//! Finding the arenas: the main arena by its shape in libc's data, the
//! others through its `next` list, and every heap each arena owns.

use super::layout::{Layout, BIN_PAIRS, FAST_BINS, HEAP_MAX};
use super::WalkError;
use crate::snapshot::image::{Memory, RegionKind};
use crate::snapshot::mmap_vec::MmapVec;

/// Longest arena list or heap chain believed (glibc caps arenas at eight
/// per core; a corrupt list must not loop forever).
const MAX_CHAIN: usize = 4096;

/// A stretch of chunks owned by one arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeapRegion {
    /// The first chunk.
    pub(crate) first: u64,
    /// Where the heap's memory ends (no chunk reaches past it).
    pub(crate) end: u64,
    /// The arena's index in [`Heaps::arena_addresses`] (0: the main arena).
    pub(crate) arena: u32,
    /// The arena's top chunk if it lies in this heap, else 0 (an older heap
    /// of the arena, ended by fenceposts).
    pub(crate) top: u64,
    /// The whole reservation (a non-main heap's 64 MiB), excluded from the
    /// search for mmapped chunks.
    pub(crate) span: (u64, u64),
}

/// Every arena and heap.
pub(crate) struct Heaps {
    pub(crate) arenas: u32,
    pub(crate) arena_addresses: MmapVec<u64>,
    pub(crate) regions: MmapVec<HeapRegion>,
    /// Where the main arena's chunks start (glibc's `sbrk_base`).
    pub(crate) main_heap_start: u64,
}

impl Heaps {
    /// The heap region containing `addr`.
    pub(crate) fn region_of(&self, addr: u64) -> Option<&HeapRegion> {
        self.regions
            .iter()
            .find(|r| r.first <= addr && addr < r.end)
    }
}

/// The main arena: the place in libc's writable data that has an arena's
/// shape (see [`looks_like_arena`]). Candidates are checked again by the
/// walk of the main heap, which must land on their `top` chunk.
pub(crate) fn find_main_arena<M: Memory>(
    mem: &M,
    layout: &Layout,
    data: &[(u64, u64)],
    torn_bins: usize,
) -> Result<u64, WalkError> {
    for &(start, end) in data {
        let mut a = start.next_multiple_of(16);
        while a + layout.arena_size <= end {
            if looks_like_arena(mem, layout, a, torn_bins) {
                return Ok(a);
            }
            // Arenas are 32-byte aligned in practice, but the static's
            // alignment is the compiler's choice: step by 16.
            a += 16;
        }
    }
    Err(WalkError::NoMainArena)
}

/// Whether the main arena could start at `a`: every bin's list head either
/// points to itself (an empty bin: both links to the bin's own fake chunk)
/// or has two links into the heap; `top` is a chunk in the program break
/// area; `next` is this arena or another readable one; the fast bins hold
/// aligned chunk addresses; `system_mem` is a positive number of bytes.
/// A copy taken while other threads run may catch up to `torn_bins` bins
/// in the middle of an update; a frozen heap is read with none.
pub(crate) fn looks_like_arena<M: Memory>(
    mem: &M,
    layout: &Layout,
    a: u64,
    torn_bins: usize,
) -> bool {
    arena_shape(mem, layout, a, torn_bins).is_ok()
}

/// [`looks_like_arena`], saying which part of the shape is wrong.
pub(crate) fn arena_shape<M: Memory>(
    mem: &M,
    layout: &Layout,
    a: u64,
    torn_bins: usize,
) -> Result<(), WalkError> {
    let Some(w) = mem.words(a, a + layout.arena_size) else {
        return Err(WalkError::Unreadable);
    };
    let at = |offset: u64| w[(offset / 8) as usize];
    let maps = mem.maps();
    let in_heap = |p: u64| {
        p % 16 == 0
            && maps.region(p).is_some_and(|r| {
                r.readable && matches!(r.kind, RegionKind::Brk | RegionKind::Anonymous)
            })
    };
    let top = at(layout.top);
    if !maps.region(top).is_some_and(|r| r.kind == RegionKind::Brk) || top % 16 != 0 {
        return Err(WalkError::ArenaTopOutsideBrk);
    }
    let next = at(layout.next);
    if next != a && !(next % 16 == 0 && maps.mapping(next).is_some()) {
        return Err(WalkError::ArenaBadNext);
    }
    if at(layout.system_mem) == 0 {
        return Err(WalkError::ArenaNoSystemMem);
    }
    let mut torn = 0;
    for i in 0..BIN_PAIRS as u64 {
        let (fd, bk) = (at(layout.bins + 16 * i), at(layout.bins + 16 * i + 8));
        let own = a + layout.bins + 16 * i - 16;
        let empty = fd == own && bk == own;
        let whole = empty || (fd != own && bk != own && in_heap(fd) && in_heap(bk));
        // Half-updated links still point at the bin or into the heap.
        let half = (fd == own || in_heap(fd)) && (bk == own || in_heap(bk));
        if !whole {
            torn += 1;
            if !half || torn > torn_bins {
                return Err(WalkError::ArenaBadBin);
            }
        }
    }
    if let Some(fast) = layout.fastbins {
        for i in 0..FAST_BINS as u64 {
            let p = at(fast + 8 * i);
            if p != 0 && !in_heap(p) {
                return Err(WalkError::ArenaBadFastBin);
            }
        }
    }
    Ok(())
}

/// Every arena (the main one first) and every heap of each.
pub(crate) fn heaps<M: Memory>(mem: &M, layout: &Layout, main: u64) -> Result<Heaps, WalkError> {
    let mut h = Heaps {
        arenas: 0,
        arena_addresses: MmapVec::new(),
        regions: MmapVec::new(),
        main_heap_start: 0,
    };
    let word = |addr: u64| mem.word(addr).ok_or(WalkError::Unreadable);
    // The main arena's heap: the program break area holding its top chunk.
    let top = word(main + layout.top)?;
    let maps = mem.maps();
    let brk = maps
        .region(top)
        .filter(|r| r.kind == RegionKind::Brk)
        .copied()
        .ok_or(WalkError::NonContiguousMain)?;
    // The program break area can show as several adjacent regions (a
    // forked child's heap grown past its parent's is a separate mapping):
    // the heap starts at the first and ends at the last.
    let regions = maps.regions();
    let mut i = regions
        .iter()
        .position(|r| *r == brk)
        .ok_or(WalkError::NonContiguousMain)?;
    let end = regions[i..]
        .windows(2)
        .take_while(|w| w[1].kind == RegionKind::Brk && w[1].start == w[0].end)
        .last()
        .map_or(brk.end, |w| w[1].end);
    while i > 0 && regions[i - 1].kind == RegionKind::Brk && regions[i - 1].end == regions[i].start
    {
        i -= 1;
    }
    let brk = crate::snapshot::image::Region {
        start: regions[i].start,
        end,
        ..brk
    };
    h.main_heap_start = brk.start;
    push(&mut h.arena_addresses, main)?;
    push(
        &mut h.regions,
        HeapRegion {
            first: brk.start,
            end: brk.end,
            arena: 0,
            top,
            span: (brk.start, brk.end),
        },
    )?;
    // The other arenas, each in the first of its heaps, after `heap_info`.
    let mut a = word(main + layout.next)?;
    while a != main {
        if h.arena_addresses.len() >= MAX_CHAIN {
            return Err(WalkError::BadArena);
        }
        let index = h.arena_addresses.len() as u32;
        let first_heap = a
            .checked_sub(layout.heap_info_size)
            .filter(|h| h % HEAP_MAX == 0)
            .ok_or(WalkError::BadArena)?;
        if word(first_heap)? != a {
            return Err(WalkError::BadArena);
        }
        push(&mut h.arena_addresses, a)?;
        let top = word(a + layout.top)?;
        let mut heap = top & !(HEAP_MAX - 1);
        let mut steps = 0;
        loop {
            // heap_info: ar_ptr, prev, size, ...
            let (ar_ptr, prev, size) = (word(heap)?, word(heap + 8)?, word(heap + 16)?);
            if ar_ptr != a || size > HEAP_MAX || size < layout.heap_info_size {
                return Err(WalkError::BadArena);
            }
            let first = if heap == first_heap {
                layout.first_chunk_after_arena(a)
            } else {
                heap + layout.heap_info_size
            };
            push(
                &mut h.regions,
                HeapRegion {
                    first,
                    end: heap + size,
                    arena: index,
                    top: if top >= heap && top < heap + HEAP_MAX {
                        top
                    } else {
                        0
                    },
                    span: (heap, heap + HEAP_MAX),
                },
            )?;
            if heap == first_heap {
                break;
            }
            steps += 1;
            if prev == 0 || prev % HEAP_MAX != 0 || steps > MAX_CHAIN {
                return Err(WalkError::BadArena);
            }
            heap = prev;
        }
        a = word(a + layout.next)?;
    }
    h.arenas = h.arena_addresses.len() as u32;
    Ok(h)
}

fn push<T: Copy>(v: &mut MmapVec<T>, value: T) -> Result<(), WalkError> {
    v.push(value).ok_or(WalkError::NoMemory)
}

/// glibc's count of mmapped chunks and their bytes (`mp_.n_mmaps`,
/// `mp_.mmapped_mem`), read from `struct malloc_par` in libc's data: it is
/// the place holding `sbrk_base` (the main heap's start) followed by sane
/// tcache parameters. `None` when no such place is found.
pub(crate) fn find_malloc_params<M: Memory>(
    mem: &M,
    layout: &Layout,
    data: &[(u64, u64)],
    sbrk_base: u64,
) -> Option<(u64, u64)> {
    if sbrk_base == 0 {
        return None;
    }
    for &(start, end) in data {
        let words = mem.words(start.next_multiple_of(8), end & !7)?;
        let base = start.next_multiple_of(8);
        for (i, &w) in words.iter().enumerate() {
            if w != sbrk_base || i < 5 || i + 4 > words.len() {
                continue;
            }
            // After sbrk_base: tcache bins, max bytes, count, unsorted limit.
            let (bins, max_bytes, count) = (words[i + 1], words[i + 2], words[i + 3]);
            if !(1..=128).contains(&bins) || max_bytes > (64 << 20) || count > 65535 {
                continue;
            }
            // Before it: mmapped_mem (two words back) and the 32-bit n_mmaps.
            let at = base + 8 * i as u64;
            let mmapped_mem = mem.word(at - 16)?;
            let n_at = at - layout.n_mmaps_before_sbrk_base;
            let n_mmaps_word = mem.word(n_at & !7)?;
            let n_mmaps = if n_at % 8 == 4 {
                n_mmaps_word >> 32
            } else {
                n_mmaps_word & 0xffff_ffff
            } as i32;
            if n_mmaps < 0 || (layout.mmapped_bytes_exact && mmapped_mem % 4096 != 0) {
                continue;
            }
            return Some((n_mmaps as u64, mmapped_mem));
        }
    }
    None
}
