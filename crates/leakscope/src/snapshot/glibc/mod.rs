//! A walker of glibc's malloc heap: every block in use, without any
//! tracking, so that snapshots work in sampled and off modes (and, over a
//! memory image, outside the process).
//!
//! How it finds things on a stripped libc (no debug symbols):
//! - the release, from `gnu_get_libc_version()`, picks a [`Layout`];
//! - the main arena (`main_arena`, a static in libc's data) is the one
//!   place in libc's writable segments that has an arena's shape: 127 bin
//!   list heads each either pointing to itself (an empty bin) or into the
//!   heap, a `top` chunk and a `next` pointer ([`arenas::find_main_arena`]);
//!   the walk then checks it: walking the chunks of the main heap (the
//!   program break area) must land exactly on `top`;
//! - the other arenas follow from the main arena's `next` list; each sits
//!   after the `heap_info` header of a 64 MiB-aligned heap, whose `prev`
//!   links give the arena's older heaps;
//! - chunks that look in use but are free: the arenas' fast bins and each
//!   thread's tcache (found through a pointer in libc's thread-local block
//!   of each thread); both lists are safe-linked from 2.32 and are decoded
//!   and checked chunk by chunk (alignment, size, a shared key);
//! - mmapped chunks (large blocks) sit alone at the start of anonymous
//!   mappings; their count and bytes are checked against glibc's own
//!   totals (`mp_.n_mmaps`, `mp_.mmapped_mem`) when those are found.
//!
//! Anything that does not fit ends the walk with a [`WalkError`]: a wrong
//! block set would be worse than none.

pub(crate) mod arenas;
pub(crate) mod chunks;
pub(crate) mod freelists;
pub(crate) mod layout;
pub(crate) mod locks;
pub(crate) mod prepare;
#[cfg(test)]
mod tests;

use super::image::Memory;
use super::mmap_vec::MmapVec;

pub(crate) use prepare::Prepared;

/// A block in use, as the walker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalkedBlock {
    /// The user's block (16 bytes into its chunk, or further for mmapped
    /// chunks with an alignment offset).
    pub(crate) addr: u64,
    /// The bytes the user may use (`malloc_usable_size`): at least what was
    /// asked for.
    pub(crate) usable: u64,
}

/// What the walker needs of a thread: its thread pointer (libc's
/// thread-locals, with the tcache pointer, sit at a fixed offset from it)
/// and its stack pointer (its stack is not searched for mmapped chunks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ThreadRef {
    pub(crate) tp: u64,
    pub(crate) sp: u64,
}

/// Arenas whose statistics are kept one by one; more are summed into the
/// last.
pub(crate) const MAX_ARENAS: usize = 64;

/// What one arena holds, in bytes of chunks (headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct ArenaStats {
    pub(crate) address: u64,
    /// Bytes the arena got from the system (`system_mem`).
    pub(crate) system_bytes: u64,
    pub(crate) heaps: u64,
    pub(crate) in_use_chunks: u64,
    pub(crate) in_use_bytes: u64,
    /// Free chunks in the unsorted, small and large bins.
    pub(crate) bin_chunks: u64,
    pub(crate) bin_bytes: u64,
    pub(crate) fast_chunks: u64,
    pub(crate) fast_bytes: u64,
    pub(crate) tcache_chunks: u64,
    pub(crate) tcache_bytes: u64,
    /// The top chunk: free memory at the end of the current heap.
    pub(crate) top_bytes: u64,
    /// The largest free chunk outside top (how fragmented the free space is).
    pub(crate) largest_free: u64,
    /// glibc's own chunks: tcache structures, heap fenceposts.
    pub(crate) internal_bytes: u64,
}

/// Everything the walk counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct HeapStats {
    pub(crate) version_major: u32,
    pub(crate) version_minor: u32,
    pub(crate) arenas: u32,
    pub(crate) threads_with_tcache: u32,
    pub(crate) mmapped_chunks: u64,
    pub(crate) mmapped_bytes: u64,
    /// glibc's own count of mmapped chunks, when its parameters were found
    /// (`u64::MAX` otherwise).
    pub(crate) mmapped_expected: u64,
    pub(crate) per_arena: [ArenaStats; MAX_ARENAS],
}

impl Default for HeapStats {
    fn default() -> Self {
        HeapStats {
            version_major: 0,
            version_minor: 0,
            arenas: 0,
            threads_with_tcache: 0,
            mmapped_chunks: 0,
            mmapped_bytes: 0,
            mmapped_expected: u64::MAX,
            per_arena: [ArenaStats::default(); MAX_ARENAS],
        }
    }
}

impl HeapStats {
    pub(crate) fn arena_mut(&mut self, i: usize) -> &mut ArenaStats {
        &mut self.per_arena[i.min(MAX_ARENAS - 1)]
    }
}

/// Why a walk failed. Plain codes, so the child can report them without
/// allocating; [`WalkError::message`] says them in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum WalkError {
    UnknownRelease = 1,
    NoMainArena = 2,
    /// The main heap's chunks do not lead to its top chunk.
    MainHeapMismatch = 3,
    /// A chunk's header makes no sense (size, flags, bounds).
    CorruptChunk = 4,
    /// An arena in the list does not sit in a heap of the known shape.
    BadArena = 5,
    /// A fast bin list does not decode to chunks of its size.
    BadFastBin = 6,
    /// A thread's tcache list does not decode.
    BadTcache = 7,
    /// The mmapped chunks found do not add up to glibc's own totals.
    MmappedMismatch = 8,
    /// The main arena's memory is not one contiguous program break area.
    NonContiguousMain = 9,
    /// Out of memory for the walker's arrays.
    NoMemory = 10,
    /// Memory the walk needed could not be read.
    Unreadable = 11,
    /// The process does not use glibc's malloc for its blocks.
    NotGlibc = 12,
    /// A chunk marked in use carries the wrong arena flag.
    ArenaFlagMismatch = 13,
    /// The main arena found before the fork no longer has an arena's
    /// shape in the frozen copy: one code per part of the shape.
    ArenaTopOutsideBrk = 14,
    ArenaBadNext = 15,
    ArenaNoSystemMem = 16,
    ArenaBadBin = 17,
    ArenaBadFastBin = 18,
}

impl WalkError {
    pub(crate) fn from_code(code: u32) -> Option<WalkError> {
        use WalkError::*;
        Some(match code {
            1 => UnknownRelease,
            2 => NoMainArena,
            3 => MainHeapMismatch,
            4 => CorruptChunk,
            5 => BadArena,
            6 => BadFastBin,
            7 => BadTcache,
            8 => MmappedMismatch,
            9 => NonContiguousMain,
            10 => NoMemory,
            11 => Unreadable,
            12 => NotGlibc,
            13 => ArenaFlagMismatch,
            14 => ArenaTopOutsideBrk,
            15 => ArenaBadNext,
            16 => ArenaNoSystemMem,
            17 => ArenaBadBin,
            18 => ArenaBadFastBin,
            _ => return None,
        })
    }

    pub(crate) fn message(self) -> &'static str {
        use WalkError::*;
        match self {
            UnknownRelease => "this glibc release's malloc layout is not one leakscope knows (2.32 to 2.43)",
            NoMainArena => "glibc's main arena was not found in libc's data",
            MainHeapMismatch => "the main heap's chunks do not lead to its top chunk (unknown layout or a corrupt heap)",
            CorruptChunk => "a chunk header does not fit glibc's layout (unknown layout or a corrupt heap)",
            BadArena => "an arena does not sit in a heap of the expected shape",
            BadFastBin => "a fast bin list does not decode to chunks of its size",
            BadTcache => "a thread's tcache list does not decode",
            MmappedMismatch => "the mmapped chunks found do not add up to glibc's own count",
            NonContiguousMain => "glibc's main arena is not one contiguous program break area (sbrk failed); its heap cannot be walked",
            NoMemory => "no memory for the heap walk",
            Unreadable => "memory the heap walk needed could not be read",
            NotGlibc => "the process's blocks are not allocated by glibc's malloc",
            ArenaFlagMismatch => "a chunk in use carries the wrong arena flag (unknown layout or a corrupt heap)",
            ArenaTopOutsideBrk => "the main arena's top chunk is not in the program break area",
            ArenaBadNext => "the main arena's next-arena link is not an arena",
            ArenaNoSystemMem => "the main arena says it holds no memory from the system",
            ArenaBadBin => "a bin of the main arena does not link into the heap",
            ArenaBadFastBin => "a fast bin of the main arena does not point into the heap",
        }
    }
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Walks every arena, thread cache and mmapped chunk of the image and
/// appends the blocks in use to `out`, sorted by address.
pub(crate) fn walk<M: Memory>(
    prep: &Prepared,
    mem: &M,
    threads: &[ThreadRef],
    out: &mut MmapVec<WalkedBlock>,
    stats: &mut HeapStats,
) -> Result<(), WalkError> {
    let layout = prep.layout.ok_or(WalkError::UnknownRelease)?;
    stats.version_major = prep.version.0;
    stats.version_minor = prep.version.1;
    // The parent found the main arena (and holds its lock); it is checked
    // again here, where the heap is frozen, with nothing torn.
    let main = match prep.main_arena {
        0 => arenas::find_main_arena(mem, layout, prep.libc_data(), 0)?,
        a => arenas::arena_shape(mem, layout, a, 0).map(|()| a)?,
    };
    let heaps = arenas::heaps(mem, layout, main)?;
    stats.arenas = heaps.arenas;
    for (i, &a) in heaps.arena_addresses[..heaps.arenas as usize]
        .iter()
        .enumerate()
    {
        let s = stats.arena_mut(i);
        s.address = a;
        s.system_bytes = mem
            .word(a + layout.system_mem)
            .ok_or(WalkError::Unreadable)?;
    }
    let free = freelists::collect(mem, layout, &heaps, prep, threads, stats)?;
    chunks::walk_heaps(mem, layout, &heaps, &free, out, stats)?;
    let mp = arenas::find_malloc_params(mem, layout, prep.libc_data(), heaps.main_heap_start);
    chunks::walk_mmapped(mem, layout, &heaps, threads, mp, out, stats)?;
    out.as_mut_slice().sort_unstable_by_key(|b| b.addr);
    Ok(())
}
