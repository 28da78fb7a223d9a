//! Chunks that look in use but are free: the fast bins of each arena and
//! each thread's tcache. Both keep the next chunk's `PREV_INUSE` bit set,
//! so the chunk walk alone would count them as blocks.

use super::arenas::Heaps;
use super::layout::{Layout, FAST_BINS, HEADER, MIN_CHUNK, SIZE_FLAGS};
use super::{HeapStats, Prepared, ThreadRef, WalkError};
use crate::snapshot::image::Memory;
use crate::snapshot::mmap_vec::MmapVec;

/// Longest free list believed (tcache bins hold at most 65535 chunks).
const MAX_LIST: usize = 1 << 24;

/// Why a chunk that looks in use is not a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreeKind {
    Fast,
    Tcache,
    /// glibc's own: a thread's tcache structure.
    Internal,
}

#[derive(Debug, Clone, Copy)]
struct FreeChunk {
    chunk: u64,
    kind: FreeKind,
}

/// Free chunks by address.
pub(crate) struct FreeSet {
    chunks: MmapVec<FreeChunk>,
}

impl FreeSet {
    /// What the chunk at `chunk` is, if it is in a free list.
    pub(crate) fn kind_of(&self, chunk: u64) -> Option<FreeKind> {
        let i = self.chunks.partition_point(|c| c.chunk < chunk);
        self.chunks
            .get(i)
            .filter(|c| c.chunk == chunk)
            .map(|c| c.kind)
    }
}

/// Safe-linking (glibc 2.32 on): a list link is stored XORed with the
/// address it is stored at, shifted by a page.
pub(crate) fn reveal(stored_at: u64, stored: u64) -> u64 {
    (stored_at >> 12) ^ stored
}

/// The fast bins of every arena and the tcache of every thread.
pub(crate) fn collect<M: Memory>(
    mem: &M,
    layout: &Layout,
    heaps: &Heaps,
    prep: &Prepared,
    threads: &[ThreadRef],
    stats: &mut HeapStats,
) -> Result<FreeSet, WalkError> {
    let mut chunks: MmapVec<FreeChunk> = MmapVec::new();
    if let Some(fast) = layout.fastbins {
        for (arena_index, &a) in heaps.arena_addresses.iter().enumerate() {
            for bin in 0..FAST_BINS as u64 {
                let size = MIN_CHUNK + 16 * bin;
                let mut p = mem.word(a + fast + 8 * bin).ok_or(WalkError::Unreadable)?;
                let mut n = 0;
                while p != 0 {
                    let owned = heaps
                        .region_of(p)
                        .is_some_and(|r| r.arena as usize == arena_index && p + size <= r.end);
                    if p % 16 != 0 || !owned || chunk_size(mem, p) != Some(size) || n > MAX_LIST {
                        return Err(WalkError::BadFastBin);
                    }
                    push(&mut chunks, p, FreeKind::Fast)?;
                    n += 1;
                    let link = p + HEADER;
                    p = reveal(link, mem.word(link).ok_or(WalkError::BadFastBin)?);
                }
            }
        }
    }
    let tcache_size = layout.tcache_chunk_size();
    for &ThreadRef { tp, .. } in threads {
        // Where a pointer to this thread's tcache can be: libc's TLS block,
        // else the whole static TLS area below the thread pointer.
        let (lo, hi, strict) = match prep.libc_tls {
            Some((offset, len)) => {
                let lo = tp.wrapping_add_signed(offset);
                (lo, lo + len, true)
            }
            None => (tp.saturating_sub(prep.static_tls_bytes + 2048), tp, false),
        };
        let Some(words) = mem.words(lo.next_multiple_of(8), hi & !7) else {
            continue;
        };
        for &w in words {
            if w < HEADER || w % 16 != 0 {
                continue;
            }
            let chunk = w - HEADER;
            if heaps.region_of(chunk).is_none() || chunk_size(mem, chunk) != Some(tcache_size) {
                continue;
            }
            let mark = chunks.len();
            if tcache_entries(mem, layout, heaps, w, &mut chunks)? {
                push(&mut chunks, chunk, FreeKind::Internal)?;
                stats.threads_with_tcache += 1;
                break;
            }
            chunks.truncate(mark);
            if strict {
                // A chunk of the tcache's size pointed to from libc's own
                // thread-locals that does not decode as one: the layout is
                // not the one assumed.
                return Err(WalkError::BadTcache);
            }
        }
    }
    chunks.as_mut_slice().sort_unstable_by_key(|c| c.chunk);
    // A chunk in two lists (two threads' TLS naming one tcache) is kept once.
    let mut unique: MmapVec<FreeChunk> = MmapVec::new();
    unique.reserve(chunks.len()).ok_or(WalkError::NoMemory)?;
    for &c in chunks.iter() {
        if unique.last().is_some_and(|u| u.chunk == c.chunk) {
            continue;
        }
        push(&mut unique, c.chunk, c.kind)?;
    }
    Ok(FreeSet { chunks: unique })
}

/// Decodes the tcache structure at `t` (a user pointer) and appends its
/// cached chunks. Returns false if it is not a tcache structure (its counts
/// and lists disagree, a link does not decode to a chunk of its bin's size,
/// or the chunks do not share one key).
fn tcache_entries<M: Memory>(
    mem: &M,
    layout: &Layout,
    heaps: &Heaps,
    t: u64,
    out: &mut MmapVec<FreeChunk>,
) -> Result<bool, WalkError> {
    let bins = layout.tcache_bins;
    let counts_bytes = (bins as u64 * 2).next_multiple_of(8);
    let Some(words) = mem.words(t, t + counts_bytes + 8 * bins as u64) else {
        return Ok(false);
    };
    let count = |i: usize| (words[i / 4] >> (16 * (i % 4))) as u16;
    let entries = &words[(counts_bytes / 8) as usize..];
    let small_max = layout.tcache_bin_chunk_size(layout.tcache_small_bins - 1);
    let mut key: Option<u64> = None;
    // Slots plus chunks: the same fill count in every bin (2.42 on).
    let mut capacity: Option<usize> = None;
    for (i, &head) in entries.iter().enumerate() {
        let mut e = head;
        let mut n = 0usize;
        while e != 0 {
            if e % 16 != 0 || n >= MAX_LIST {
                return Ok(false);
            }
            let chunk = e - HEADER;
            let Some(size) = chunk_size(mem, chunk) else {
                return Ok(false);
            };
            let size_fits = if i < layout.tcache_small_bins {
                size == layout.tcache_bin_chunk_size(i)
            } else {
                size > small_max
            };
            if !size_fits || heaps.region_of(chunk).is_none_or(|r| chunk + size > r.end) {
                return Ok(false);
            }
            let Some(k) = mem.word(e + 8) else {
                return Ok(false);
            };
            if *key.get_or_insert(k) != k {
                return Ok(false);
            }
            push(out, chunk, FreeKind::Tcache)?;
            n += 1;
            let Some(stored) = mem.word(e) else {
                return Ok(false);
            };
            e = reveal(e, stored);
        }
        if layout.tcache_counts_slots {
            let c = usize::from(count(i)) + n;
            if c == 0 || *capacity.get_or_insert(c) != c {
                return Ok(false);
            }
        } else if usize::from(count(i)) != n {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The size of the chunk at `chunk` (flags masked off).
pub(crate) fn chunk_size<M: Memory>(mem: &M, chunk: u64) -> Option<u64> {
    mem.word(chunk + 8).map(|w| w & !SIZE_FLAGS)
}

fn push(v: &mut MmapVec<FreeChunk>, chunk: u64, kind: FreeKind) -> Result<(), WalkError> {
    v.push(FreeChunk { chunk, kind }).ok_or(WalkError::NoMemory)
}
