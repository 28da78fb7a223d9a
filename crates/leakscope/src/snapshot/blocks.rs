//! The blocks a snapshot analyses, from one of two sources: leakscope's
//! live table (full mode: every block, its exact size and allocation stack)
//! or glibc's heap, walked (any mode: every block, with stacks for those the
//! sampler recorded). Both can be taken and compared.
//!
//! Runs in the snapshot child: allocation-free.

use super::glibc::{self, HeapStats, Prepared, ThreadRef, WalkError, WalkedBlock};
use super::image::Memory;
use super::mmap_vec::MmapVec;
use crate::collect::LIVE;

/// Where a snapshot's block set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum BlockSource {
    /// The live table in full mode, the heap walk otherwise.
    #[default]
    Auto = 0,
    /// leakscope's live table (full mode): exact sizes and stacks.
    LiveTable = 1,
    /// glibc's heap, walked: every block, stacks only for sampled ones.
    HeapWalk = 2,
    /// Both, compared (results from the live table); the differences are in
    /// [`crate::Snapshot::cross_check`].
    CrossCheck = 3,
}

/// Site id of a block with no recorded allocation stack.
pub(crate) const NO_SITE: u32 = u32::MAX;

/// A block to analyse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) addr: u64,
    /// Requested bytes when recorded, else the usable bytes of its chunk.
    pub(crate) size: u64,
    pub(crate) site: u32,
    /// Recorded by the sampler (its figures are estimates).
    pub(crate) sampled: bool,
}

/// Addresses kept as examples of each difference.
pub(crate) const EXAMPLES: usize = 8;

/// How the live table and the heap walk differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct CrossCheck {
    pub(crate) table_blocks: u64,
    pub(crate) walked_blocks: u64,
    /// In the table, not found in use by the walk.
    pub(crate) only_in_table: u64,
    /// Found in use by the walk, not in the table (glibc's own blocks and
    /// blocks allocated by code that bypasses the profiled allocator).
    pub(crate) only_in_walk: u64,
    /// In both, but the chunk is smaller than the recorded size.
    pub(crate) too_small: u64,
    pub(crate) only_in_table_examples: [u64; EXAMPLES],
    pub(crate) only_in_walk_examples: [u64; EXAMPLES],
    /// glibc's own totals (`mallinfo2()`) of the same frozen heap, taken in
    /// the child after the walk; all zero if they could not be taken.
    pub(crate) mallinfo: Mallinfo,
}

/// `struct mallinfo2`'s fields, in its order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Mallinfo {
    /// Bytes from the system for the main arena (sbrk).
    pub(crate) arena: u64,
    /// Free chunks (bins, and top).
    pub(crate) ordblks: u64,
    /// Free fast-bin chunks.
    pub(crate) smblks: u64,
    /// Mmapped chunks.
    pub(crate) hblks: u64,
    /// Bytes of mmapped chunks.
    pub(crate) hblkhd: u64,
    pub(crate) usmblks: u64,
    /// Bytes in free fast-bin chunks.
    pub(crate) fsmblks: u64,
    /// Bytes in chunks in use (tcache'd chunks included).
    pub(crate) uordblks: u64,
    /// Bytes in free chunks (bins, fast bins, top).
    pub(crate) fordblks: u64,
    /// The top chunk's releasable bytes.
    pub(crate) keepcost: u64,
}

/// Why the blocks could not be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    NoMemory,
    Walk(WalkError),
}

/// The blocks of `source` (not `Auto`), sorted by address; for the heap
/// walk, table entries attach their sizes and stacks to the walked blocks.
pub(crate) fn collect<M: Memory>(
    source: BlockSource,
    prep: &Prepared,
    mem: &M,
    threads: &[ThreadRef],
    heap: &mut HeapStats,
    check: &mut CrossCheck,
) -> Result<MmapVec<Block>, Failure> {
    let table = table_blocks()?;
    if source == BlockSource::LiveTable {
        return Ok(table);
    }
    let mut walked: MmapVec<WalkedBlock> = MmapVec::new();
    glibc::walk(prep, mem, threads, &mut walked, heap).map_err(Failure::Walk)?;
    if source == BlockSource::CrossCheck {
        *check = compare(&table, &walked);
        check.mallinfo = mallinfo_of_frozen_heap(heap).unwrap_or_default();
        return Ok(table);
    }
    // The sampled blocks outside leakscope's sample heap must be among the
    // walked ones: if most are not, the walk did not see the heap the
    // profiled blocks live in.
    let merged = merge(&table, &walked)?;
    let in_glibc = table.iter().filter(|b| !in_sample_heap(b.addr)).count();
    let found = merged
        .iter()
        .filter(|b| b.site != NO_SITE && !in_sample_heap(b.addr))
        .count();
    if in_glibc >= 4 && found * 2 < in_glibc {
        return Err(Failure::Walk(WalkError::NotGlibc));
    }
    Ok(merged)
}

/// The blocks of another process's image: its glibc heap, walked (this
/// process's live table says nothing of it). No allocation stacks.
pub(crate) fn walked_only<M: Memory>(
    prep: &Prepared,
    mem: &M,
    threads: &[ThreadRef],
    heap: &mut HeapStats,
) -> Result<MmapVec<Block>, Failure> {
    let mut walked: MmapVec<WalkedBlock> = MmapVec::new();
    glibc::walk(prep, mem, threads, &mut walked, heap).map_err(Failure::Walk)?;
    merge_with(&[], &walked, |_| false)
}

/// The blocks of an instrumented process's image: its glibc heap, walked,
/// with sizes and stacks from its own live table (read from the image),
/// and the table's blocks in its sample heap (`[base, base + len)`).
pub(crate) fn walked_with_table<M: Memory>(
    prep: &Prepared,
    mem: &M,
    threads: &[ThreadRef],
    heap: &mut HeapStats,
    table: &[Block],
    sample_heap: Option<(u64, u64)>,
) -> Result<MmapVec<Block>, Failure> {
    let mut walked: MmapVec<WalkedBlock> = MmapVec::new();
    glibc::walk(prep, mem, threads, &mut walked, heap).map_err(Failure::Walk)?;
    merge_with(table, &walked, |addr| {
        sample_heap.is_some_and(|(base, len)| addr.wrapping_sub(base) < len)
    })
}

/// glibc's own totals for the heap just walked. The arena locks this
/// child holds (the parent's snapshot thread took them before the fork, and
/// that thread is the child) are released first, in the child's copy only;
/// if any arena's lock is still held (by a thread that is not in the
/// child), nothing is taken. `mallinfo2` reads the arenas and allocates
/// nothing.
fn mallinfo_of_frozen_heap(heap: &HeapStats) -> Option<Mallinfo> {
    if (heap.version_major, heap.version_minor) < (2, 33)
        || heap.arenas as usize > glibc::MAX_ARENAS
    {
        return None;
    }
    for a in &heap.per_arena[..heap.arenas as usize] {
        // SAFETY: `a.address` is an arena the walk read; its first field is
        // its lock, an aligned int. This process is the fork child and its
        // only thread: the write changes only its own copy.
        unsafe { std::ptr::write_volatile(a.address as *mut i32, 0) };
    }
    // SAFETY: a plain call into glibc with no arguments; every arena lock is
    // free (released above) and no other thread runs.
    let m = unsafe { libc::mallinfo2() };
    Some(Mallinfo {
        arena: m.arena as u64,
        ordblks: m.ordblks as u64,
        smblks: m.smblks as u64,
        hblks: m.hblks as u64,
        hblkhd: m.hblkhd as u64,
        usmblks: m.usmblks as u64,
        fsmblks: m.fsmblks as u64,
        uordblks: m.uordblks as u64,
        fordblks: m.fordblks as u64,
        keepcost: m.keepcost as u64,
    })
}

fn table_blocks() -> Result<MmapVec<Block>, Failure> {
    let mut blocks = MmapVec::new();
    // SAFETY: we are the fork child's only thread; the shard locks were
    // held by the parent's snapshot thread (us) at the fork.
    unsafe {
        // One mapping of the right size: growing by doubling would copy the
        // largest array of the analysis several times.
        blocks
            .reserve(LIVE.len_unlocked())
            .ok_or(Failure::NoMemory)?;
        LIVE.for_each_unlocked(|addr, e| {
            let _ = blocks.push(Block {
                addr: addr as u64,
                size: e.size,
                site: e.site,
                sampled: e.sampled,
            });
        });
    }
    blocks.as_mut_slice().sort_unstable_by_key(|b| b.addr);
    Ok(blocks)
}

/// Whether a block lives in leakscope's sample heap (small sampled blocks,
/// outside glibc's heap: the walk never sees them, the table has them all).
fn in_sample_heap(addr: u64) -> bool {
    crate::collect::sample_heap::contains(addr as usize)
}

/// The walked blocks, with the table's size, stack and sampled flag where
/// the table has the block, and the table's blocks in the sample heap.
fn merge(table: &[Block], walked: &[WalkedBlock]) -> Result<MmapVec<Block>, Failure> {
    merge_with(table, walked, in_sample_heap)
}

fn merge_with(
    table: &[Block],
    walked: &[WalkedBlock],
    in_sample_heap: impl Fn(u64) -> bool,
) -> Result<MmapVec<Block>, Failure> {
    let mut out = MmapVec::new();
    let sampled_here = table.iter().filter(|b| in_sample_heap(b.addr)).count();
    out.reserve(walked.len() + sampled_here)
        .ok_or(Failure::NoMemory)?;
    let mut t = 0;
    for w in walked {
        while t < table.len() && table[t].addr < w.addr {
            if in_sample_heap(table[t].addr) {
                out.push(table[t]).ok_or(Failure::NoMemory)?;
            }
            t += 1;
        }
        let block = match table.get(t) {
            Some(b) if b.addr == w.addr && b.size <= w.usable => *b,
            _ => Block {
                addr: w.addr,
                size: w.usable,
                site: NO_SITE,
                sampled: false,
            },
        };
        out.push(block).ok_or(Failure::NoMemory)?;
    }
    for b in &table[t..] {
        if in_sample_heap(b.addr) {
            out.push(*b).ok_or(Failure::NoMemory)?;
        }
    }
    Ok(out)
}

fn compare(table: &[Block], walked: &[WalkedBlock]) -> CrossCheck {
    let mut c = CrossCheck {
        table_blocks: table.len() as u64,
        walked_blocks: walked.len() as u64,
        ..CrossCheck::default()
    };
    let note = |count: &mut u64, examples: &mut [u64; EXAMPLES], addr: u64| {
        if (*count as usize) < EXAMPLES {
            examples[*count as usize] = addr;
        }
        *count += 1;
    };
    let (mut t, mut w) = (0, 0);
    while t < table.len() || w < walked.len() {
        let ta = table.get(t).map_or(u64::MAX, |b| b.addr);
        let wa = walked.get(w).map_or(u64::MAX, |b| b.addr);
        if ta == wa {
            if table[t].size > walked[w].usable {
                c.too_small += 1;
            }
            t += 1;
            w += 1;
        } else if ta < wa {
            // The sample heap is not glibc's: the walk cannot see it.
            if !in_sample_heap(ta) {
                note(&mut c.only_in_table, &mut c.only_in_table_examples, ta);
            }
            t += 1;
        } else {
            note(&mut c.only_in_walk, &mut c.only_in_walk_examples, wa);
            w += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(addrs: &[(u64, u64)]) -> Vec<Block> {
        addrs
            .iter()
            .map(|&(addr, size)| Block {
                addr,
                size,
                site: 7,
                sampled: true,
            })
            .collect()
    }

    fn walked(addrs: &[(u64, u64)]) -> Vec<WalkedBlock> {
        addrs
            .iter()
            .map(|&(addr, usable)| WalkedBlock { addr, usable })
            .collect()
    }

    #[test]
    fn merge_attaches_recorded_blocks() {
        let t = table(&[(0x100, 20), (0x300, 100)]);
        let w = walked(&[(0x100, 24), (0x200, 40), (0x300, 88)]);
        let m = merge(&t, &w).unwrap();
        assert_eq!(m[0], t[0]);
        assert_eq!((m[1].site, m[1].size, m[1].sampled), (NO_SITE, 40, false));
        // A recorded size larger than the chunk: not the same block.
        assert_eq!(m[2].site, NO_SITE);
    }

    #[test]
    fn merge_adds_the_sample_heaps_blocks_in_address_order() {
        let t = table(&[(0x100, 20), (0x9000, 30), (0x9100, 40)]);
        let w = walked(&[(0x100, 24), (0x200, 40)]);
        let m = merge_with(&t, &w, |a| a >= 0x8000).unwrap();
        let addrs: Vec<u64> = m.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, [0x100, 0x200, 0x9000, 0x9100]);
        assert_eq!((m[2].size, m[2].site), (30, 7));
        // Below the walked blocks too.
        let t = table(&[(0x10, 8), (0x100, 20)]);
        let m = merge_with(&t, &w, |a| a < 0x20).unwrap();
        let addrs: Vec<u64> = m.iter().map(|b| b.addr).collect();
        assert_eq!(addrs, [0x10, 0x100, 0x200]);
    }

    #[test]
    fn compare_counts_each_difference() {
        let t = table(&[(0x100, 20), (0x180, 8), (0x300, 100)]);
        let w = walked(&[(0x100, 24), (0x200, 40), (0x300, 88)]);
        let c = compare(&t, &w);
        assert_eq!((c.only_in_table, c.only_in_walk, c.too_small), (1, 1, 1));
        assert_eq!(c.only_in_table_examples[0], 0x180);
        assert_eq!(c.only_in_walk_examples[0], 0x200);
    }
}
