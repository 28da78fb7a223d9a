//! Walking chunks: every heap of every arena from its first chunk to its
//! top chunk (or its fenceposts), and the mmapped chunks at the start of
//! anonymous mappings.

use super::arenas::{HeapRegion, Heaps};
use super::freelists::{FreeKind, FreeSet};
use super::layout::{
    Layout, HEADER, IS_MMAPPED, MIN_CHUNK, NON_MAIN_ARENA, PREV_INUSE, SIZE_FLAGS,
};
use super::{HeapStats, ThreadRef, WalkError, WalkedBlock};
use crate::snapshot::image::{Memory, RegionKind};
use crate::snapshot::mmap_vec::MmapVec;

const PAGE: u64 = 4096;

/// How far ahead of the next chunk's header the walk asks for memory.
/// Each header's address comes from the header before it: a chain of
/// dependent loads, each a cache miss once the heap outgrows the cache
/// (165 ns a chunk for 1 GiB of 512 B chunks). The chunks lie one after
/// another, so the bytes ahead are read soon whatever their sizes.
const PREFETCH_AHEAD: u64 = 4096;

/// Walks the chunks of every heap region, appending the blocks in use.
pub(crate) fn walk_heaps<M: Memory>(
    mem: &M,
    layout: &Layout,
    heaps: &Heaps,
    free: &FreeSet,
    out: &mut MmapVec<WalkedBlock>,
    stats: &mut HeapStats,
) -> Result<(), WalkError> {
    let _ = layout;
    for region in heaps.regions.iter() {
        walk_region(mem, region, free, out, stats)?;
        stats.arena_mut(region.arena as usize).heaps += 1;
    }
    Ok(())
}

fn walk_region<M: Memory>(
    mem: &M,
    r: &HeapRegion,
    free: &FreeSet,
    out: &mut MmapVec<WalkedBlock>,
    stats: &mut HeapStats,
) -> Result<(), WalkError> {
    let main = r.arena == 0;
    let corrupt = if main {
        WalkError::MainHeapMismatch
    } else {
        WalkError::CorruptChunk
    };
    let words = mem.words(r.first, r.end).ok_or(WalkError::Unreadable)?;
    let word = |addr: u64| words[((addr - r.first) / 8) as usize];
    let s = stats.arena_mut(r.arena as usize);
    let mut c = r.first;
    loop {
        if c == r.top {
            let size = word(c + 8) & !SIZE_FLAGS;
            if c + size > r.end {
                return Err(corrupt);
            }
            s.top_bytes += size;
            return Ok(());
        }
        if c + HEADER > r.end {
            // Only an older heap (no top chunk) may end without one, after
            // its fenceposts.
            return if r.top == 0 { Ok(()) } else { Err(corrupt) };
        }
        let size_word = word(c + 8);
        let size = size_word & !SIZE_FLAGS;
        if size == 0 && r.top == 0 {
            // The last fencepost of an older heap.
            s.internal_bytes += HEADER;
            return Ok(());
        }
        if size == HEADER {
            // A fencepost chunk (where the arena moved to a new heap).
            s.internal_bytes += HEADER;
            c += HEADER;
            continue;
        }
        if size < MIN_CHUNK
            || size % 16 != 0
            || size_word & IS_MMAPPED != 0
            || c + size + HEADER > r.end
            || (r.top != 0 && c + size > r.top)
        {
            return Err(corrupt);
        }
        if let Some(ahead) = words.get(((c + size + PREFETCH_AHEAD - r.first) / 8) as usize) {
            crate::snapshot::child::prefetch(ahead);
        }
        let looks_in_use = word(c + size + 8) & PREV_INUSE != 0;
        match free.kind_of(c) {
            Some(FreeKind::Fast) => {
                s.fast_chunks += 1;
                s.fast_bytes += size;
            }
            Some(FreeKind::Tcache) => {
                s.tcache_chunks += 1;
                s.tcache_bytes += size;
            }
            Some(FreeKind::Internal) => s.internal_bytes += size,
            None if looks_in_use => {
                if (size_word & NON_MAIN_ARENA != 0) == main {
                    return Err(WalkError::ArenaFlagMismatch);
                }
                s.in_use_chunks += 1;
                s.in_use_bytes += size;
                out.push(WalkedBlock {
                    addr: c + HEADER,
                    // The next chunk's first word is the block's too.
                    usable: size - 8,
                })
                .ok_or(WalkError::NoMemory)?;
            }
            None => {
                s.bin_chunks += 1;
                s.bin_bytes += size;
                s.largest_free = s.largest_free.max(size);
            }
        }
        c += size;
    }
}

/// Finds the mmapped chunks: each alone in its own mapping, its header at
/// the mapping's start, or after an alignment offset (`memalign`) recorded
/// in its `prev_size`. Adjacent mappings of the same kind show as one
/// region (a chunk next to an arena's heap, a thread's stack or another
/// chunk), so every page of anonymous memory outside the arenas' heaps is a
/// possible start. `expected` is glibc's own count and bytes, if found: the
/// chunks found must add up to it exactly. (A thread stopped inside `free`
/// between glibc's count and the unmapping would make them differ: the
/// snapshot then fails rather than guess.)
pub(crate) fn walk_mmapped<M: Memory>(
    mem: &M,
    layout: &Layout,
    heaps: &Heaps,
    threads: &[ThreadRef],
    expected: Option<(u64, u64)>,
    out: &mut MmapVec<WalkedBlock>,
    stats: &mut HeapStats,
) -> Result<(), WalkError> {
    let _ = threads;
    // Arenas' heaps and leakscope's own mappings: skipped.
    let own = mem.maps().own();
    let in_heap = |addr: u64| {
        heaps
            .regions
            .iter()
            .map(|h| h.span)
            .chain(own.iter().copied())
            .find(|&(start, end)| start <= addr && addr < end)
            .map(|(_, end)| end)
    };
    for region in mem.maps().regions() {
        if !region.readable || !region.writable || region.kind != RegionKind::Anonymous {
            continue;
        }
        let mut at = region.start;
        let mut after_chunk = true;
        while at + PAGE <= region.end {
            if let Some(span_end) = in_heap(at) {
                at = span_end;
                after_chunk = true;
                continue;
            }
            if mem.is_guard_page(at) {
                at += PAGE;
                after_chunk = true;
                continue;
            }
            match mmapped_chunk_at(mem, layout, at, region.end, after_chunk) {
                Some((chunk, total, usable)) if in_heap(at + total - 1).is_none() => {
                    out.push(WalkedBlock {
                        addr: chunk + HEADER,
                        usable,
                    })
                    .ok_or(WalkError::NoMemory)?;
                    stats.mmapped_chunks += 1;
                    stats.mmapped_bytes += total;
                    at += total;
                    after_chunk = true;
                }
                _ => {
                    at += PAGE;
                    after_chunk = false;
                }
            }
        }
    }
    if let Some((chunks, bytes)) = expected {
        stats.mmapped_expected = chunks;
        let bytes_differ = layout.mmapped_bytes_exact && stats.mmapped_bytes != bytes;
        if stats.mmapped_chunks != chunks || bytes_differ {
            return Err(WalkError::MmappedMismatch);
        }
    }
    Ok(())
}

/// The mmapped chunk whose mapping starts at `at`, as (chunk address, bytes
/// from `at` to the end of its mapping, usable bytes). An aligned chunk
/// (its header after zeroed bytes whose count its `prev_size` repeats) is
/// looked for only where a mapping may begin: a region's start or the end
/// of a chunk.
fn mmapped_chunk_at<M: Memory>(
    mem: &M,
    layout: &Layout,
    at: u64,
    end: u64,
    mapping_start: bool,
) -> Option<(u64, u64, u64)> {
    let fits = |chunk: u64, prev_size: u64, size_word: u64| {
        let (offset, total, usable) = layout.mmapped.decode(prev_size, size_word & !SIZE_FLAGS);
        (size_word & SIZE_FLAGS == IS_MMAPPED
            && usable >= MIN_CHUNK
            && total % PAGE == 0
            && chunk == at + offset
            && at + total <= end)
            .then_some((chunk, total, usable))
    };
    let header = mem.words(at, at + 16)?;
    if header[0] & !1 == 0 && header[1] != 0 {
        return fits(at, header[0], header[1]);
    }
    if !mapping_start || header[0] != 0 {
        return None;
    }
    // The first non-zero word within an alignment's reach (up to a guard
    // page, if one follows).
    let mut reach = PAGE;
    while reach < (64 << 10).min(end - at) && !mem.is_guard_page(at + reach) {
        reach += PAGE;
    }
    let reach = reach.min(end - at) & !15;
    let words = mem.words(at, at + reach)?;
    let k = words.iter().position(|&w| w != 0)?;
    let offset = (k as u64) * 8;
    if offset % 16 != 0 || k + 1 >= words.len() || words[k] & !1 != offset {
        return None;
    }
    fits(at + offset, words[k], words[k + 1])
}
