//! The analysis that runs in the snapshot's forked child.
//!
//! The child is a frozen copy of the process: every other thread is gone,
//! and any lock they held stays held. It therefore never allocates or frees
//! (its arrays are [`MmapVec`]s; see `collect::enter_snapshot_child`), reads
//! only memory it has checked against `/proc/self/maps`, and writes its
//! results into a shared mapping the parent reads after it exits.
//!
//! Steps: index the live blocks by address; scan every root region and every
//! block for words that point into a block (interior pointers included);
//! build the graph (super-root → roots → blocks); breadth-first shortest
//! chains; dominators and retained sizes; classify what no root reaches
//! (definitely / indirectly lost) and what only interior pointers reach
//! (possibly lost); find large blocks kept alive by small slices of them.

use super::blocks::{self, Block, BlockSource, CrossCheck};
use super::fields::{self, FirstView};
use super::glibc::{HeapStats, Prepared, ThreadRef};
use super::graph::{self, Csr, NONE};
use super::image::{Maps, Memory, OwnMemory, RegionKind};
use super::mmap_vec::MmapVec;
use super::page_index::{PageIndex, PAGE_SHIFT};
use super::parallel_scan;
use super::threads::{FP, PC, SAVED_REGS, SP};
use super::wire::{BlockOut, Header, Output, RootKind, RootOut};
use crate::collect::backtrace::MAX_FRAMES;

/// A thread's roots as the handler saved them.
#[derive(Clone, Copy)]
pub(crate) struct ThreadRoots {
    /// False when the thread did not stop in time: nothing of it is scanned.
    pub(crate) stopped: bool,
    /// The thread exited before it could be stopped.
    pub(crate) exited: bool,
    /// The snapshotting thread itself (its stack is scanned from the child's
    /// own stack pointer).
    pub(crate) is_self: bool,
    /// One of leakscope's own threads: nothing it holds is a root.
    pub(crate) own: bool,
    pub(crate) regs: [u64; SAVED_REGS],
    pub(crate) tp: u64,
}

/// How unreached and interior-reached blocks are classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rules {
    /// Snapshots of a running program (who holds what): a reachable block
    /// a reachable block points to at its start is still reachable (so the
    /// values of a Rust `HashMap`, whose table is held by a pointer into
    /// its middle, are); lost blocks nothing unreachable points to lead
    /// their cliques first.
    Holders,
    /// The leak check at exit, by Valgrind's rules, for its numbers: still
    /// reachable only along a chain of pointers to blocks' starts (possibly
    /// lost propagates), cliques led in address order, earlier leaders
    /// claimed by later ones.
    Valgrind,
}

/// What the parent prepared for the child (read-only, in the child's copy of
/// the parent's memory).
pub(crate) struct ChildInput<'a> {
    /// The snapshotting thread's stack starts at its caller's frame.
    pub(crate) caller: super::CallerFrame,
    pub(crate) rules: Rules,
    pub(crate) segments: &'a [(u64, u64)],
    /// Disjoint, sorted variable ranges inside the segments.
    pub(crate) variables: &'a [(u64, u64)],
    /// Per variable: one of leakscope's own statics.
    pub(crate) own_variables: &'a [bool],
    /// leakscope's own code, sorted: frames running it are leakscope's.
    pub(crate) own_code: &'a [(u64, u64)],
    pub(crate) threads: &'a [ThreadRoots],
    pub(crate) static_tls_bytes: u64,
    /// Where the blocks come from (never `Auto` here).
    pub(crate) source: BlockSource,
    /// What the heap walker needs to know about libc.
    pub(crate) glibc: Prepared,
    /// Which live table describes the image's blocks.
    pub(crate) table: TableOf<'a>,
    /// Valgrind's leak-check heuristics in force (`config::Heuristics`
    /// bits), with [`Rules::Valgrind`] only.
    pub(crate) heuristics: u8,
    /// Scan anonymous writable memory that is not heap as roots (when the
    /// heap is glibc's, whose arenas can be told apart; another allocator's
    /// mappings hold freed memory with stale pointers).
    pub(crate) anonymous_roots: bool,
    /// Processes the analysis may fork to scan blocks on other cores.
    pub(crate) scan_helpers: u32,
}

/// The live table of the image's blocks.
#[derive(Clone, Copy)]
pub(crate) enum TableOf<'a> {
    /// This process's (the image is its own frozen copy).
    ThisProcess,
    /// Another process's, read from its image (an instrumented target):
    /// its blocks sorted by address, and its sample heap's range.
    Read {
        blocks: &'a [Block],
        sample_heap: Option<(u64, u64)>,
    },
    /// None: another process's heap, walked.
    Walked,
}

/// Root-entity slots per thread: registers, thread-local storage, stack
/// words outside any frame, then one per frame.
pub(crate) const PER_THREAD: u32 = 3 + MAX_FRAMES as u32;

/// Node ids of the root entities, in the order the parent expects.
#[derive(Clone, Copy)]
pub(crate) struct RootLayout {
    pub(crate) variables: u32,
    pub(crate) segments: u32,
    pub(crate) threads: u32,
    /// Anonymous mappings scanned as roots (found by the child; the parent
    /// reserves [`MAX_ANONYMOUS_ROOTS`]).
    pub(crate) anonymous: u32,
}

/// Anonymous mappings scanned as roots, at most (the rest are left out).
pub(crate) const MAX_ANONYMOUS_ROOTS: u32 = 4096;

impl RootLayout {
    pub(crate) fn variable(&self, i: usize) -> u32 {
        1 + i as u32
    }
    pub(crate) fn segment(&self, i: usize) -> u32 {
        1 + self.variables + i as u32
    }
    pub(crate) fn thread(&self, t: usize) -> u32 {
        1 + self.variables + self.segments + t as u32 * PER_THREAD
    }
    pub(crate) fn anonymous(&self, i: usize) -> u32 {
        1 + self.variables + self.segments + self.threads * PER_THREAD + i as u32
    }
    /// Number of root entities (node ids `1..=roots()`).
    pub(crate) fn roots(&self) -> u32 {
        self.variables + self.segments + self.threads * PER_THREAD + self.anonymous
    }
}

#[derive(Clone, Copy)]
struct Edge {
    from: u32,
    /// Target node; the top bit marks an interior pointer.
    to: u32,
    /// Byte offset of the pointer inside its source.
    offset: u32,
}

const INTERIOR: u32 = 1 << 31;

/// Live blocks sorted by address, with an index from each 4 KiB page that
/// any block touches to the blocks touching it ([`PageIndex`]). A word in a
/// page no block touches is rejected after one probe; otherwise a short
/// binary search among the few blocks of that page finds the one it points
/// into. (A binary search over all blocks misses the cache at every step.)
struct BlockIndex {
    blocks: MmapVec<Block>,
    /// `(start, end)` of each block: what a lookup reads, kept together so
    /// that one cache miss answers both the search and the containment test.
    spans: MmapVec<(u64, u64)>,
    pages: PageIndex,
    min: u64,
    max_end: u64,
    /// The parts of blocks that cannot be read (pages made inaccessible by
    /// the program), sorted: their words are not scanned, and, as in
    /// Valgrind, a word pointing into them is no reference.
    unreadable: MmapVec<(u64, u64)>,
}

/// How many blocks ahead the scan asks for a block's first words: the
/// blocks are scanned in address order, and each is read for the first
/// time. A heap of 1 GiB of 512 B blocks scanned in 350 ms without, 260 ms
/// 8 blocks ahead, 230 ms 16 or 32 ahead.
const SCAN_PREFETCH_BLOCKS: usize = 16;

/// Candidate words looked up together by [`BlockIndex::find_batch`].
const SCAN_BATCH: usize = 32;

#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    prefetch_address(r as *const T as usize);
}

pub(crate) use crate::collect::raw_mem::prefetch_address;

impl BlockIndex {
    fn build(readable: &Maps, blocks: MmapVec<Block>) -> Option<(BlockIndex, u32)> {
        // Drop entries that overlap the previous block: stale records of
        // blocks freed behind our back. Blocks whose pages cannot be read
        // stay (they are the program's all the same); their unreadable
        // parts are noted.
        let mut unreadable: MmapVec<(u64, u64)> = MmapVec::new();
        let mut kept: MmapVec<Block> = MmapVec::new();
        kept.reserve(blocks.len())?;
        let mut dropped = 0u32;
        let mut last_end = 0;
        // The readable mapping holding the previous block: most blocks share
        // one with their neighbour.
        let mut mapping = (0u64, 0u64);
        for &b in blocks.iter() {
            let end = b.addr + b.size;
            let readable_here = if b.addr >= mapping.0 && end <= mapping.1 {
                true
            } else {
                if let Some(m) = readable.mapping(b.addr) {
                    mapping = m;
                }
                readable.covers(b.addr, end)
            };
            if b.addr < last_end {
                dropped += 1;
                continue;
            }
            if !readable_here {
                let mut at = b.addr;
                while at < end {
                    match readable.mapping(at) {
                        Some((_, m_end)) => at = m_end,
                        None => {
                            let next = readable.next_readable(at).unwrap_or(end).min(end);
                            unreadable.push((at, next))?;
                            at = next;
                        }
                    }
                }
            }
            last_end = b.addr + b.size.max(1);
            kept.push(b)?;
        }
        drop(blocks);
        let mut spans = MmapVec::new();
        spans.reserve(kept.len())?;
        for b in kept.iter() {
            spans.push((b.addr, b.addr + b.size))?;
        }
        let pages = PageIndex::build(&spans)?;
        let min = kept.first().map_or(0, |b| b.addr);
        let max_end = kept
            .iter()
            .map(|b| b.addr + b.size.max(1))
            .max()
            .unwrap_or(0);
        Some((
            BlockIndex {
                blocks: kept,
                spans,
                pages,
                min,
                max_end,
                unreadable,
            },
            dropped,
        ))
    }

    /// Looks up a batch of words: first prefetching every page-table slot,
    /// then every span range, so that the cache misses of a batch overlap
    /// instead of following one another (pointers in a heap are mostly
    /// random, and one miss costs more than the rest of a lookup).
    fn find_batch(&self, words: &[u64], out: &mut [Option<(u32, bool)>]) {
        let mut slots = [None; SCAN_BATCH];
        for (slot, &w) in slots.iter_mut().zip(words) {
            *slot = self.pages.slot(w >> PAGE_SHIFT);
            if let Some(at) = *slot {
                prefetch(self.pages.entry(at));
            }
        }
        let mut ranges = [(0u32, 0u32); SCAN_BATCH];
        for (range, &slot) in ranges.iter_mut().zip(&slots) {
            *range = slot
                .and_then(|at| self.pages.blocks_at(at))
                .unwrap_or((u32::MAX, 0));
            if range.0 != u32::MAX {
                prefetch(&self.spans[range.0 as usize]);
            }
        }
        for ((o, &w), &(first, last)) in out.iter_mut().zip(words).zip(&ranges) {
            *o = if first == u32::MAX {
                None
            } else {
                self.find_between(w, first as usize, last as usize + 1)
            };
        }
    }

    /// The block in `spans[first..end]` that `word` points into.
    #[inline(always)]
    fn find_between(&self, word: u64, first: usize, end: usize) -> Option<(u32, bool)> {
        let i = first + self.spans[first..end].partition_point(|&(s, _)| s <= word);
        let i = i.checked_sub(1)?;
        let (start, end) = self.spans[i];
        if word >= end && word != start || self.in_unreadable(word) {
            None
        } else {
            Some((i as u32, word != start))
        }
    }

    /// Whether `word` points into a part of a block that cannot be read.
    #[inline(always)]
    fn in_unreadable(&self, word: u64) -> bool {
        if self.unreadable.is_empty() {
            return false;
        }
        let k = self.unreadable.partition_point(|&(s, _)| s <= word);
        k > 0 && word < self.unreadable[k - 1].1
    }

    /// The first readable piece of `[at, end)` (part of a block), if any.
    fn readable_piece(&self, at: u64, end: u64) -> Option<(u64, u64)> {
        let mut lo = at;
        let mut k = self.unreadable.partition_point(|&(_, e)| e <= lo);
        while let Some(&(s, e)) = self.unreadable.get(k) {
            if s > lo {
                break;
            }
            lo = lo.max(e);
            k += 1;
        }
        let hi = self.unreadable.get(k).map_or(end, |&(s, _)| s.min(end));
        (lo < hi).then_some((lo, hi))
    }

    /// Whether any part of `[start, end)` is unreadable.
    fn has_unreadable(&self, start: u64, end: u64) -> bool {
        let k = self.unreadable.partition_point(|&(_, e)| e <= start);
        self.unreadable.get(k).is_some_and(|&(s, _)| s < end)
    }

    /// The block `word` points into, and whether it points past its start.
    #[inline(always)]
    fn find(&self, word: u64) -> Option<(u32, bool)> {
        if word < self.min || word >= self.max_end {
            return None;
        }
        let (first, last) = self.pages.get(word >> PAGE_SHIFT)?;
        self.find_between(word, first as usize, last as usize + 1)
    }
}

/// Candidate pointers waiting for one batched lookup, with the node and
/// address each was found at. Shared by every scanned range, so that the
/// lookups of many small blocks (one or two pointers each) overlap their
/// cache misses too.
struct Pending {
    words: [u64; SCAN_BATCH],
    at: [u64; SCAN_BATCH],
    from: [(u32, u64); SCAN_BATCH],
    n: usize,
    /// With leak-check heuristics: each interior edge's index and pointer,
    /// for [`apply_heuristics`].
    interior: Option<MmapVec<(usize, u64)>>,
}

impl Pending {
    fn new(record_interior: bool) -> Self {
        Pending {
            words: [0; SCAN_BATCH],
            at: [0; SCAN_BATCH],
            from: [(0, 0); SCAN_BATCH],
            n: 0,
            interior: record_interior.then(MmapVec::new),
        }
    }

    /// Notes an interior edge just pushed (with heuristics on).
    fn note_interior(&mut self, edges: &MmapVec<Edge>, pointer: u64) -> Option<()> {
        if let Some(list) = &mut self.interior {
            list.push((edges.len() - 1, pointer))?;
        }
        Some(())
    }

    /// Queues a word found at `at` in node `from` (whose range starts at
    /// `base`), looking the batch up when it is full.
    fn push(
        &mut self,
        word: u64,
        at: u64,
        from: (u32, u64),
        index: &BlockIndex,
        first_block: u32,
        edges: &mut MmapVec<Edge>,
    ) -> Option<()> {
        let n = self.n;
        self.words[n] = word;
        self.at[n] = at;
        self.from[n] = from;
        self.n = n + 1;
        if self.n == SCAN_BATCH {
            self.flush(index, first_block, edges)?;
        }
        Some(())
    }

    /// Looks up every queued word and records an edge for each that points
    /// into a block.
    fn flush(
        &mut self,
        index: &BlockIndex,
        first_block: u32,
        edges: &mut MmapVec<Edge>,
    ) -> Option<()> {
        let n = std::mem::take(&mut self.n);
        let mut found = [None; SCAN_BATCH];
        index.find_batch(&self.words[..n], &mut found[..n]);
        for (i, hit) in found[..n].iter().enumerate() {
            let Some((b, interior)) = *hit else {
                continue;
            };
            let (from, base) = self.from[i];
            let to = first_block + b;
            if from != to && from != NONE {
                let offset = (self.at[i] - base).min(u64::from(u32::MAX)) as u32;
                edges.push(Edge {
                    from,
                    to: to | if interior { INTERIOR } else { 0 },
                    offset,
                })?;
                if interior {
                    self.note_interior(edges, self.words[i])?;
                }
            }
        }
        Some(())
    }
}

/// Scans the aligned words of `[start, end)` and queues each that may point
/// into a block. `node_of` names the source node of a word (and the start
/// of its range); it is called in address order.
#[allow(clippy::too_many_arguments)]
fn scan<M: Memory>(
    mem: &M,
    start: u64,
    end: u64,
    index: &BlockIndex,
    first_block: u32,
    mut node_of: impl FnMut(u64) -> (u32, u64),
    pending: &mut Pending,
    edges: &mut MmapVec<Edge>,
) -> Option<u64> {
    let start = start.next_multiple_of(8);
    if end < start + 8 {
        return Some(0);
    }
    let words = ((end - start) / 8) as usize;
    // A plain slice (the callers checked the range readable), so that the
    // candidate test below runs vectorised.
    let Some(memory) = mem.words(start, start + words as u64 * 8) else {
        return Some(0);
    };
    let (lo, span) = (index.min, index.max_end - index.min);
    const CHUNK: usize = 8;
    for (c, chunk) in memory.chunks(CHUNK).enumerate() {
        // Most words are not heap addresses: test a chunk at once.
        if !chunk
            .iter()
            .fold(false, |any, &w| any | (w.wrapping_sub(lo) < span))
        {
            continue;
        }
        for (k, &word) in chunk.iter().enumerate() {
            if word.wrapping_sub(lo) >= span {
                continue;
            }
            let at = start + ((c * CHUNK + k) * 8) as u64;
            pending.push(word, at, node_of(at), index, first_block, edges)?;
        }
    }
    Some(words as u64 * 8)
}

/// Scans heap blocks `first..end` of the index (of those partly
/// unreadable, the parts that can be read), then looks up what is queued.
fn scan_blocks<M: Memory>(
    mem: &M,
    index: &BlockIndex,
    first_block: u32,
    (first, end): (usize, usize),
    pending: &mut Pending,
    edges: &mut MmapVec<Edge>,
) -> Option<u64> {
    let mut scanned = 0;
    for (i, b) in index.blocks[first..end].iter().enumerate() {
        if let Some(ahead) = index.blocks.get(first + i + SCAN_PREFETCH_BLOCKS) {
            mem.prefetch(ahead.addr);
        }
        let node = first_block + (first + i) as u32;
        let block_end = b.addr + b.size;
        // The whole block, or its readable pieces when part of it is not.
        let mut at = b.addr;
        while let Some((lo, hi)) = index.readable_piece(at, block_end) {
            scanned += scan(
                mem,
                lo,
                hi,
                index,
                first_block,
                |_| (node, b.addr),
                pending,
                edges,
            )?;
            at = hi;
        }
    }
    pending.flush(index, first_block, edges)?;
    Some(scanned)
}

/// The frames of a thread's stack, from its saved registers: `(high end of
/// the frame's words, program counter)`, innermost first. A word at address
/// `a` belongs to the first frame whose high end is above `a`.
fn stack_frames<M: Memory>(
    mem: &M,
    sp: u64,
    fp: u64,
    pc: u64,
    stack_end: u64,
    out: &mut [(u64, u64); MAX_FRAMES],
) -> usize {
    let mut n = 0;
    let (mut fp, mut pc) = (fp, pc);
    while n < MAX_FRAMES {
        if fp < sp || fp % 8 != 0 || fp + 16 > stack_end {
            break;
        }
        out[n] = (fp + 16, pc);
        n += 1;
        let Some(&[next, ret]) = mem.words(fp, fp + 16) else {
            break;
        };
        if next <= fp {
            break;
        }
        fp = next;
        pc = ret;
    }
    n
}

/// Whether the instruction before `pc` is a system call (the thread was
/// stopped inside one).
fn stopped_in_syscall<M: Memory>(pc: u64, mem: &M) -> bool {
    // The word holding the two bytes before `pc` (code is mapped readable
    // on the platforms we build for; a core file may not hold it).
    let Some(at) = pc.checked_sub(2) else {
        return false;
    };
    let word_at = at & !7;
    let Some(words) = mem.words(word_at, ((at + 1) & !7) + 8) else {
        return false;
    };
    let mut bytes = [0u8; 16];
    for (dst, w) in bytes.chunks_mut(8).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    let k = (at - word_at) as usize;
    let before = [bytes[k], bytes[k + 1]];
    #[cfg(target_arch = "x86_64")]
    {
        before == [0x0f, 0x05]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = before;
        false
    }
}

/// The frame pointer of the calling function.
#[inline(always)]
pub(crate) fn frame_pointer() -> u64 {
    let fp: u64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading a register has no side effects.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading a register has no side effects.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Block flags in [`BlockOut::flags`].
pub(crate) mod flags {
    pub(crate) const REACHABLE: u32 = 1;
    pub(crate) const DEFINITELY_LOST: u32 = 2;
    pub(crate) const INDIRECTLY_LOST: u32 = 4;
    pub(crate) const POSSIBLY_LOST: u32 = 8;
    pub(crate) const PINNED: u32 = 16;
    pub(crate) const SAMPLED: u32 = 32;
    /// Held only by leakscope itself (its threads, statics and frames): not
    /// the program's memory.
    pub(crate) const OWN: u32 = 64;
    /// Part of the block's memory could not be read (the program made its
    /// pages inaccessible): what it points to there was not followed.
    pub(crate) const UNSCANNED: u32 = 128;
    /// Bits 8 to 11: the leak-check heuristic (`config::Heuristics`) by
    /// which alone a still reachable block is reached.
    pub(crate) const HEURISTIC_SHIFT: u32 = 8;
}

/// The analysis phases, timed one by one in [`Header::phase_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The block set: the live table read, or glibc's heap walked.
    Blocks,
    /// Blocks sorted and indexed by page.
    Index,
    /// Roots and blocks scanned for pointers.
    Scan,
    /// The reference graph built (both directions).
    Graph,
    /// Shortest chains from the roots.
    Chains,
    /// Dominators and retained sizes.
    Dominators,
    /// Lost, reachable and possibly lost.
    Classify,
    /// Buffers kept alive by small slices.
    Pinning,
    /// Results written for the parent.
    Write,
}

impl Phase {
    pub(crate) const ALL: [Phase; 9] = [
        Phase::Blocks,
        Phase::Index,
        Phase::Scan,
        Phase::Graph,
        Phase::Chains,
        Phase::Dominators,
        Phase::Classify,
        Phase::Pinning,
        Phase::Write,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Blocks => "blocks",
            Phase::Index => "index",
            Phase::Scan => "scan",
            Phase::Graph => "graph",
            Phase::Chains => "chains",
            Phase::Dominators => "dominators",
            Phase::Classify => "classify",
            Phase::Pinning => "pinning",
            Phase::Write => "write",
        }
    }
}

/// Whether the words around a pointer to the start of a `size`-byte block
/// (`before` and `after` it) are those of an owner rather than a view: a
/// length or capacity in bytes equal to the block's (a `String`, a
/// `Vec<u8>`), or a `Vec<T>`'s capacity and length counted in elements of a
/// power-of-two size up to 128 bytes (a `Vec<u64>` of 1024 elements owns an
/// 8 KiB block although its words say 1024). A slice's length alone, next to
/// whatever precedes it, does not make an owner.
fn owns_block(before: u64, after: u64, size: u64) -> bool {
    let vec_of_elements = before != 0
        && size % before == 0
        && (size / before).is_power_of_two()
        && size / before <= 128
        && after <= before;
    before == size || after == size || vec_of_elements
}

/// The most a block's size can exceed what was asked for: glibc rounds a
/// request up to its 16-byte granule plus its 8-byte header word (a heap
/// walk's blocks are chunks); full tracking records the exact size.
const ROUNDING_SLACK: u64 = 32;

/// Whether a pointer into the middle of a block, followed by a length and
/// a capacity, is the block's owner after it consumed the block's front (a
/// `BytesMut` after `advance`, a read buffer's cursor): its capacity runs
/// to the block's end (`end`), as a view's next word does not.
fn owns_rest_of_block(pointer: u64, len: u64, capacity: u64, end: u64) -> bool {
    len <= capacity
        && pointer
            .checked_add(capacity)
            .is_some_and(|reach| reach <= end && end - reach < ROUNDING_SLACK)
}

/// What a word pointing into a pinning candidate is.
#[derive(Clone, Copy)]
enum View {
    /// It holds the whole block (see [`owns_block`], [`owns_rest_of_block`]).
    Owner,
    /// A view `offset` bytes into the block, of `len` bytes (0: no
    /// plausible length beside it); `next` is the word after the length
    /// (a `Bytes`'s shared header).
    Slice { offset: u64, len: u64, next: u64 },
}

/// Adds a view of a pinning candidate to its view bytes and first view.
fn add_view(bytes: &mut u64, first: &mut FirstView, view: View) {
    if *bytes == u64::MAX {
        return;
    }
    match view {
        View::Owner => *bytes = u64::MAX,
        View::Slice { offset, len, .. } => {
            *bytes = bytes.saturating_add(if len == 0 { 8 } else { len });
            first.note(offset, len);
        }
    }
}

/// Reads the words of `[start, end)` (a holder) and calls `seen(block,
/// word address, view)` for each one pointing into a block, telling owners
/// from views by the words around it.
fn read_views<M: Memory>(
    mem: &M,
    index: &BlockIndex,
    readable: &Maps,
    (start, end): (u64, u64),
    mut seen: impl FnMut(u32, u64, View),
) {
    if end <= start || !readable.covers(start, end) {
        return;
    }
    let word_at = |at: u64, limit: u64| {
        if at >= start && at + 8 <= limit {
            mem.word(at).unwrap_or(0)
        } else {
            0
        }
    };
    let mut at = start.next_multiple_of(8);
    while at + 8 <= end {
        let word = mem.word(at).unwrap_or(0);
        if let Some((b, _)) = index.find(word) {
            let blk = &index.blocks[b as usize];
            let blk_end = blk.addr + blk.size;
            let len = word_at(at + 8, end);
            let before = at.checked_sub(8).map_or(0, |a| word_at(a, end));
            let capacity = word_at(at + 16, end);
            // An owner, not a view, holds the whole block: one with an
            // owner's length or capacity beside it, or a plain pointer to
            // its start (a C pointer, a `Box`: a view has a length), or one
            // whose capacity runs to the block's end.
            let plausible = len > 0 && word.checked_add(len).is_some_and(|e| e <= blk_end);
            let owner = if word == blk.addr {
                owns_block(before, len, blk.size) || !plausible
            } else {
                owns_rest_of_block(word, len, capacity, blk_end)
            };
            seen(
                b,
                at,
                if owner {
                    View::Owner
                } else {
                    View::Slice {
                        offset: word - blk.addr,
                        len: if plausible { len } else { 0 },
                        next: capacity,
                    }
                },
            );
        }
        at += 8;
    }
}

/// The graph's edges that point to the start of a block (and the
/// super-root's), as CSR offsets and targets.
fn start_pointer_csr(
    edges: &MmapVec<Edge>,
    n_nodes: usize,
) -> Option<(MmapVec<u32>, MmapVec<u32>)> {
    let mut offsets = MmapVec::filled(n_nodes + 1, 0u32)?;
    let starts = || edges.iter().filter(|e| e.to & INTERIOR == 0);
    for e in starts() {
        offsets[e.from as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut targets = MmapVec::filled(offsets[n_nodes] as usize, 0u32)?;
    let mut cursor = MmapVec::filled(n_nodes, 0u32)?;
    cursor.as_mut_slice().copy_from_slice(&offsets[..n_nodes]);
    for e in starts() {
        let slot = &mut cursor[e.from as usize];
        targets[*slot as usize] = e.to;
        *slot += 1;
    }
    Some((offsets, targets))
}

/// What Valgrind's heuristics decided: per block, the first heuristic that
/// accepted a pointer into it; the edges they turned into start pointers
/// (indices, ascending).
struct HeuristicReach {
    kind: MmapVec<u8>,
    turned: MmapVec<usize>,
}

impl HeuristicReach {
    /// Per block: a true pointer to its start (not one a heuristic turned)
    /// from a reached node. Such a block is not reached "via a heuristic",
    /// as Valgrind clears its mark on meeting one.
    fn true_start_from_reached(
        &self,
        edges: &MmapVec<Edge>,
        parent: &MmapVec<u32>,
        first_block: u32,
    ) -> Option<MmapVec<bool>> {
        let mut out = MmapVec::filled(self.kind.len(), false)?;
        let mut turned = self.turned.iter().peekable();
        for (i, e) in edges.iter().enumerate() {
            if turned.peek() == Some(&&i) {
                turned.next();
                continue;
            }
            let reached = e.from < first_block || parent[e.from as usize] != NONE;
            if e.to & INTERIOR == 0 && e.to >= first_block && reached {
                out[(e.to - first_block) as usize] = true;
            }
        }
        Some(out)
    }
}

/// Turns every interior edge a heuristic of `set` accepts into a pointer to
/// its block's start.
fn apply_heuristics<M: Memory>(
    mem: &M,
    index: &BlockIndex,
    first_block: u32,
    set: u8,
    interior: &MmapVec<(usize, u64)>,
    edges: &mut MmapVec<Edge>,
) -> Option<HeuristicReach> {
    let n_blocks = index.blocks.len();
    let mut reach = HeuristicReach {
        kind: MmapVec::filled(n_blocks, 0u8)?,
        turned: MmapVec::new(),
    };
    for &(at, pointer) in interior.iter() {
        let e = &mut edges[at];
        let b = ((e.to & !INTERIOR) - first_block) as usize;
        let block = &index.blocks[b];
        let kind = super::heuristics::reachedness(mem, block.addr, block.size, pointer, set);
        if kind != 0 {
            e.to &= !INTERIOR;
            reach.turned.push(at)?;
            if reach.kind[b] == 0 {
                reach.kind[b] = kind;
            }
        }
    }
    Some(reach)
}

/// glibc's non-main arenas live in heaps of at most this size, aligned to it.
const GLIBC_HEAP_MAX: u64 = 64 << 20;

/// The anonymous writable mappings Valgrind would scan and leakscope does
/// not otherwise: not glibc's arenas (`[heap]` and the 64 MiB-aligned heaps
/// of the others, holding freed chunks), not leakscope's own, not a thread's
/// stack (one holding a thread's stack or thread pointer, or above a guard
/// page: also the stacks glibc keeps of exited threads).
fn anonymous_regions<M: Memory>(
    mem: &M,
    input: &ChildInput<'_>,
    out: &mut MmapVec<(u64, u64)>,
) -> Option<()> {
    let maps = mem.maps();
    let own = maps.own();
    let regions = maps.regions();
    for (i, r) in regions.iter().enumerate() {
        if r.kind != RegionKind::Anonymous || !r.readable || !r.writable {
            continue;
        }
        let arena_heap = r.start % GLIBC_HEAP_MAX == 0 && r.end - r.start <= GLIBC_HEAP_MAX;
        let owned = {
            let k = own.partition_point(|&(_, e)| e <= r.start);
            own.get(k).is_some_and(|&(s, _)| s < r.end)
        };
        let inside = |a: u64| a >= r.start && a < r.end;
        let a_stack = input.threads.iter().any(|t| {
            inside(t.tp) || inside(t.regs[SP]) || (t.is_self && inside(input.caller.stack_start))
        });
        let guard_below = i > 0 && {
            let p = &regions[i - 1];
            p.end == r.start
                && p.kind == RegionKind::Anonymous
                && !p.readable
                && !p.writable
                && p.end - p.start <= 1 << 20
        };
        // A stack whose guard is installed inside its mapping (glibc 2.43's
        // `MADV_GUARD_INSTALL`), such as one glibc keeps for a later thread.
        let guard_inside = mem.is_guard_page(r.start);
        if arena_heap || owned || a_stack || guard_below || guard_inside {
            continue;
        }
        if out.len() as u32 == MAX_ANONYMOUS_ROOTS {
            break;
        }
        out.push((r.start, r.end))?;
    }
    Some(())
}

/// The length of a glibc mmapped chunk starting at page `at` and ending by
/// `end`, if the words there are its header: no offset before it, then a
/// page-multiple size with the `IS_MMAPPED` bit and neither of the others.
fn mmapped_chunk_at<M: Memory>(mem: &M, at: u64, end: u64) -> Option<u64> {
    let header = mem.words(at, at + 16)?;
    let (prev_size, size_word) = (header[0], header[1]);
    let len = size_word & !7;
    let is_mmapped = size_word & 7 == 2;
    (prev_size == 0 && is_mmapped && len >= 4096 && len % 4096 == 0 && len <= end - at)
        .then_some(len)
}

/// The first piece of `[at, end)` outside every segment (sorted) and every
/// block: `(lo, hi)`, empty (`lo >= hi`) if none is left.
fn next_piece(mut at: u64, end: u64, segments: &[(u64, u64)], index: &BlockIndex) -> (u64, u64) {
    loop {
        if at >= end {
            return (end, end);
        }
        // Past a segment or block covering `at`.
        let s = segments.partition_point(|&(_, e)| e <= at);
        if let Some(&(s_start, s_end)) = segments.get(s) {
            if s_start <= at {
                at = s_end;
                continue;
            }
        }
        let b = index.spans.partition_point(|&(_, e)| e <= at);
        if let Some(&(b_start, b_end)) = index.spans.get(b) {
            if b_start <= at {
                at = b_end;
                continue;
            }
        }
        // Up to the next segment or block.
        let next_segment = segments.get(s).map_or(end, |&(s_start, _)| s_start);
        let next_block = index.spans.get(b).map_or(end, |&(b_start, _)| b_start);
        return (at, end.min(next_segment).min(next_block));
    }
}

/// Whether `pc` is in leakscope's own code (`own` sorted, disjoint).
fn is_own_code(own: &[(u64, u64)], pc: u64) -> bool {
    let i = own.partition_point(|&(start, _)| start <= pc);
    i > 0 && pc < own[i - 1].1
}

/// Blocks at least this large are checked for slice pinning.
pub(crate) const PIN_MIN_BYTES: u64 = 4096;

/// Runs the whole analysis and writes it to `out`. Returns an exit code.
pub(crate) fn run(input: &ChildInput<'_>, out: &mut Output) -> i32 {
    fault::catch(out);
    let Some(mem) = OwnMemory::read_own() else {
        return 71;
    };
    match analyse(&mem, input, out) {
        Some(()) => 0,
        None => 71,
    }
}

/// A fault in the analysis (a read of memory that turned out unmapped: a
/// bug, as every read is checked first) ends the child with exit status 74,
/// and the faulting address and instruction in the results' header, so
/// that the parent can say what happened.
mod fault {
    use std::sync::atomic::{AtomicPtr, Ordering};

    use super::super::wire::{Header, Output};

    static HEADER: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());

    pub(super) fn catch(out: &mut Output) {
        HEADER.store(out.header_ptr(), Ordering::Relaxed);
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: installs a handler in this single-threaded child; the
            // sigaction struct is fully initialised.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO;
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    }

    extern "C" fn handler(_: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let header = HEADER.load(Ordering::Relaxed);
        // SAFETY: the kernel passes a valid siginfo and context; `header`
        // points to the start of the shared results mapping, which stays
        // mapped until the child exits.
        unsafe {
            let addr = (*info).si_addr() as u64;
            let pc = super::super::threads::fault_pc(ctx);
            if !header.is_null() {
                (*header).fault_addr = addr;
                (*header).fault_pc = pc;
            }
            libc::_exit(74);
        }
    }
}

/// The analysis over any memory image: this process's own (the snapshot
/// child) or another's (a core file, a copy of an attached process).
/// Words of a block's head looked at for what it refers to: a Rust
/// object's vtable pointer sits in its first fields (a tokio task's header
/// has it third).
const HEAD_WORDS: u64 = 4;

/// The first of the block's first [`HEAD_WORDS`] words that lies in one of
/// the writable segments (sorted, disjoint), 0 if none: for a block with no
/// allocation stack, what it is an instance of (named by the parent).
fn refers_to<M: Memory>(mem: &M, segments: &[(u64, u64)], addr: u64, size: u64) -> u64 {
    let end = addr + size.min(HEAD_WORDS * 8) / 8 * 8;
    let Some(words) = mem.words(addr, end) else {
        return 0;
    };
    words
        .iter()
        .copied()
        .find(|&w| {
            let i = segments.partition_point(|&(_, e)| e <= w);
            segments.get(i).is_some_and(|&(s, _)| s <= w)
        })
        .unwrap_or(0)
}

pub(crate) fn analyse<M: Memory>(mem: &M, input: &ChildInput<'_>, out: &mut Output) -> Option<()> {
    let started = now_ns();
    let mut phase_ns = [0u64; Phase::ALL.len()];
    let mut mark = started;
    let mut lap = |phase: Phase| {
        let now = now_ns();
        phase_ns[phase as usize] = now - mark;
        mark = now;
    };
    let readable = mem.maps();
    let walker_threads = {
        let mut refs = [ThreadRef::default(); 1024];
        let n = input.threads.len().min(refs.len());
        for (r, t) in refs.iter_mut().zip(input.threads) {
            *r = ThreadRef {
                tp: t.tp,
                sp: if t.is_self {
                    input.caller.stack_start
                } else {
                    t.regs[SP]
                },
            };
        }
        (refs, n)
    };
    let mut heap = HeapStats::default();
    let mut check = CrossCheck::default();
    let walker_threads = &walker_threads.0[..walker_threads.1];
    let collected = match input.table {
        TableOf::ThisProcess => blocks::collect(
            input.source,
            &input.glibc,
            mem,
            walker_threads,
            &mut heap,
            &mut check,
        ),
        TableOf::Read {
            blocks: table,
            sample_heap,
        } => blocks::walked_with_table(
            &input.glibc,
            mem,
            walker_threads,
            &mut heap,
            table,
            sample_heap,
        ),
        TableOf::Walked => blocks::walked_only(&input.glibc, mem, walker_threads, &mut heap),
    };
    let blocks = match collected {
        Ok(blocks) => blocks,
        Err(blocks::Failure::NoMemory) => return None,
        Err(blocks::Failure::Walk(e)) => {
            // Reported by the parent from the header; nothing else written.
            out.write_header(&Header {
                walk_error: e as u32,
                heap,
                ..Header::default()
            });
            return Some(());
        }
    };
    lap(Phase::Blocks);
    let (index, dropped) = BlockIndex::build(readable, blocks)?;
    lap(Phase::Index);
    let mut anonymous: MmapVec<(u64, u64)> = MmapVec::new();
    if input.anonymous_roots {
        anonymous_regions(mem, input, &mut anonymous)?;
    }
    let layout = RootLayout {
        variables: input.variables.len() as u32,
        segments: input.segments.len() as u32,
        threads: input.threads.len() as u32,
        anonymous: anonymous.len() as u32,
    };
    let first_block = layout.roots() + 1;
    let n_blocks = index.blocks.len();
    let n_nodes = first_block as usize + n_blocks;
    if n_blocks > out.block_capacity() || first_block as usize > out.root_capacity() {
        return None;
    }
    let mut roots_out = MmapVec::filled(first_block as usize, RootOut::default())?;
    // Roots that are leakscope's own: not reached from the super-root.
    let mut root_own = MmapVec::filled(first_block as usize, false)?;
    let mut edges: MmapVec<Edge> = MmapVec::new();
    let mut pending = Pending::new(input.rules == Rules::Valgrind && input.heuristics != 0);
    // Heaps hold about one to two pointers per block; reserving up front
    // saves regrowing (and copying) the largest array of the analysis.
    edges.reserve(n_blocks * 2 + first_block as usize)?;
    let mut scanned: u64 = 0;

    // Where glibc's main arena is (known after a walk; else looked for by
    // its shape, as the walk does).
    let malloc_state = match (heap.per_arena[0].address, input.glibc.layout) {
        (0, Some(l)) => super::glibc::arenas::find_main_arena(mem, l, input.glibc.libc_data(), 0)
            .map_or((u64::MAX, u64::MAX), |a| (a, a + l.arena_size)),
        (a, Some(l)) => (a, a + l.arena_size),
        (_, None) => (u64::MAX, u64::MAX),
    };
    // Roots: writable segments, word by word attributed to the variable that
    // contains it, else to the segment.
    for (si, &(start, end)) in input.segments.iter().enumerate() {
        let seg_node = layout.segment(si);
        roots_out[seg_node as usize] = RootOut::new(RootKind::Segment, si as u32, 0, 0, start, end);
        let mut vi = input.variables.partition_point(|&(_, e)| e <= start);
        let mut at = start;
        while at < end {
            let Some((m_start, m_end)) = readable.mapping(at) else {
                at = readable.next_readable(at).unwrap_or(end).min(end);
                continue;
            };
            let chunk_end = m_end.min(end);
            let variables = input.variables;
            // glibc's main arena is not a root: its bin heads and top point
            // to chunk headers, which lie in the last word of the block
            // before each (a block may use the next chunk's first word).
            let (ex_start, ex_end) = malloc_state;
            let pieces = [
                (
                    at.max(m_start),
                    chunk_end.min(ex_start.max(at.max(m_start))),
                ),
                (ex_end.max(at.max(m_start)), chunk_end),
            ];
            for (lo, hi) in pieces {
                if lo >= hi {
                    continue;
                }
                scanned += scan(
                    mem,
                    lo,
                    hi,
                    &index,
                    first_block,
                    |word| {
                        while vi < variables.len() && variables[vi].1 <= word {
                            vi += 1;
                        }
                        match variables.get(vi) {
                            Some(&(vs, _)) if vs <= word => (layout.variable(vi), vs),
                            _ => (seg_node, start),
                        }
                    },
                    &mut pending,
                    &mut edges,
                )?;
            }
            at = chunk_end;
        }
    }
    for (vi, &(start, end)) in input.variables.iter().enumerate() {
        roots_out[layout.variable(vi) as usize] =
            RootOut::new(RootKind::Variable, vi as u32, 0, 0, start, end);
        root_own[layout.variable(vi) as usize] = input.own_variables.get(vi) == Some(&true);
    }

    // Roots: anonymous memory a program mapped itself, outside the blocks
    // in it (glibc's large blocks are mappings of their own, which the
    // kernel may merge with a neighbour) and outside objects' data.
    for (ai, &(start, end)) in anonymous.iter().enumerate() {
        let node = layout.anonymous(ai);
        roots_out[node as usize] = RootOut::new(RootKind::Anonymous, ai as u32, 0, 0, start, end);
        let mut at = start;
        while at < end {
            let (lo, hi) = next_piece(at, end, input.segments, &index);
            if lo >= hi {
                break;
            }
            // Page by page past guard pages and pages never touched (a
            // reservation of gigabytes costs nothing to skip), and past
            // glibc's mmapped chunks that are no block of the program's
            // (leakscope's own large buffers).
            let mut page = lo;
            while page < hi {
                let page_end = ((page & !4095) + 4096).min(hi);
                // A guard page faults when read, header included.
                if mem.is_guard_page(page) {
                    page = page_end;
                    continue;
                }
                if page % 4096 == 0 {
                    if let Some(len) = mmapped_chunk_at(mem, page, hi) {
                        page += len;
                        continue;
                    }
                }
                if mem.is_populated(page) {
                    scanned += scan(
                        mem,
                        page,
                        page_end,
                        &index,
                        first_block,
                        |_| (node, start),
                        &mut pending,
                        &mut edges,
                    )?;
                }
                page = page_end;
            }
            at = hi;
        }
    }

    // Roots: each thread's registers, thread-local storage and stack.
    for (ti, t) in input.threads.iter().enumerate() {
        let base = layout.thread(ti);
        let (sp, fp, pc) = if t.is_self {
            (input.caller.stack_start, input.caller.fp, input.caller.pc)
        } else {
            (t.regs[SP], t.regs[FP], t.regs[PC])
        };
        roots_out[base as usize] = RootOut::new(RootKind::Registers, ti as u32, 0, 0, 0, 0);
        root_own[base as usize] = t.own;
        root_own[(base + 1) as usize] = t.own;
        if !t.stopped {
            continue;
        }
        if !t.is_self {
            for (r, &value) in t.regs.iter().enumerate() {
                if let Some((b, interior)) = index.find(value) {
                    edges.push(Edge {
                        from: base,
                        to: (first_block + b) | if interior { INTERIOR } else { 0 },
                        offset: r as u32 * 8,
                    })?;
                    if interior {
                        pending.note_interior(&edges, value)?;
                    }
                }
            }
        }
        // Static TLS sits just below the thread pointer (x86-64 and glibc's
        // aarch64 layout keep the TCB around it).
        let tls_node = base + 1;
        let (mut tls_lo, mut tls_hi) = (
            t.tp.saturating_sub(input.static_tls_bytes + 2048),
            t.tp + 2304,
        );
        if let Some((m_start, m_end)) = readable.mapping(t.tp) {
            tls_lo = tls_lo.max(m_start);
            tls_hi = tls_hi.min(m_end);
            roots_out[tls_node as usize] =
                RootOut::new(RootKind::ThreadLocal, ti as u32, 0, 0, tls_lo, tls_hi);
            scanned += scan(
                mem,
                tls_lo,
                tls_hi,
                &index,
                first_block,
                |_| (tls_node, tls_lo),
                &mut pending,
                &mut edges,
            )?;
        } else {
            tls_lo = u64::MAX;
        }
        // The stack, from below the red zone to the end of its mapping (or
        // the TLS area, when the thread library put it on top of the stack).
        let Some((_, stack_map_end)) = readable.mapping(sp) else {
            continue;
        };
        // Below the stack pointer, the red zone may hold a leaf function's
        // live data. Not for a thread stopped in a system call (most idle
        // threads): there it only holds stale words from earlier calls,
        // which would count as references. The snapshotting thread starts
        // exactly at its caller.
        let below = if t.is_self || stopped_in_syscall(pc, mem) {
            0
        } else {
            128
        };
        let lo = sp.saturating_sub(below).max(
            readable
                .mapping(sp.saturating_sub(below))
                .map_or(sp, |m| m.0),
        );
        let hi = if tls_lo > sp && tls_lo < stack_map_end {
            tls_lo
        } else {
            stack_map_end
        };
        let mut frames = [(0u64, 0u64); MAX_FRAMES];
        let n_frames = stack_frames(mem, sp, fp, pc, hi, &mut frames);
        // leakscope's frames, and every frame they called, are not roots:
        // a whole own thread, else the frames from the outermost one that
        // runs leakscope's code inwards (the registers with them, when the
        // thread stopped inside leakscope).
        let own_frames = if t.own {
            n_frames
        } else {
            frames[..n_frames]
                .iter()
                .enumerate()
                .rev()
                .find(|&(k, &(_, frame_pc))| {
                    let code = if k == 0 {
                        frame_pc
                    } else {
                        frame_pc.saturating_sub(1)
                    };
                    is_own_code(input.own_code, code)
                })
                .map_or(0, |(k, _)| k + 1)
        };
        for k in 0..own_frames {
            root_own[(base + 3 + k as u32) as usize] = true;
        }
        root_own[base as usize] |= own_frames > 0;
        let other = base + 2;
        root_own[other as usize] = t.own;
        roots_out[other as usize] = RootOut::new(RootKind::StackOther, ti as u32, 0, 0, lo, hi);
        for (k, &(frame_hi, frame_pc)) in frames[..n_frames].iter().enumerate() {
            let frame_lo = if k == 0 { lo } else { frames[k - 1].0 };
            roots_out[(base + 3 + k as u32) as usize] = RootOut::new(
                RootKind::StackFrame,
                ti as u32,
                k as u32,
                frame_pc,
                frame_lo,
                frame_hi,
            );
        }
        let mut k = 0;
        scanned += scan(
            mem,
            lo,
            hi,
            &index,
            first_block,
            |word| {
                while k < n_frames && frames[k].0 <= word {
                    k += 1;
                }
                if k < n_frames {
                    let frame_lo = if k == 0 { lo } else { frames[k - 1].0 };
                    (base + 3 + k as u32, frame_lo)
                } else {
                    (other, lo)
                }
            },
            &mut pending,
            &mut edges,
        )?;
    }

    // Heap blocks, in shares scanned on several cores (not with Valgrind's
    // heuristics, whose list of interior edges is kept in scan order).
    pending.flush(&index, first_block, &mut edges)?;
    let helpers = if pending.interior.is_some() {
        0
    } else {
        input.scan_helpers as usize
    };
    let plan = parallel_scan::Plan::new(index.blocks.iter().map(|b| b.size), helpers);
    let (block_bytes, scan_processes) = if plan.processes == 1 {
        let everything = (0, index.blocks.len());
        (
            scan_blocks(
                mem,
                &index,
                first_block,
                everything,
                &mut pending,
                &mut edges,
            )?,
            1,
        )
    } else {
        let words: usize = index
            .spans
            .iter()
            .map(|&(s, e)| ((e - s) / 8) as usize)
            .sum();
        parallel_scan::scan_shares(&plan, &mut edges, words, |share, out| {
            let mut pending = Pending::new(false);
            scan_blocks(mem, &index, first_block, share, &mut pending, out)
        })?
    };
    scanned += block_bytes;
    // The super-root points to every root but leakscope's own.
    for r in 1..first_block {
        if !root_own[r as usize] {
            edges.push(Edge {
                from: 0,
                to: r,
                offset: 0,
            })?;
        }
    }

    // Valgrind's heuristics (the leak check at exit): interior pointers of
    // the shapes they accept count as pointers to their block's start.
    let heuristic = match pending.interior.take() {
        Some(interior) => Some(apply_heuristics(
            mem,
            &index,
            first_block,
            input.heuristics,
            &interior,
            &mut edges,
        )?),
        None => None,
    };

    lap(Phase::Scan);
    // Graph: successors grouped by source, predecessors by target, each
    // group in scan (address) order: `build_csr` is a stable counting sort,
    // so the edge list itself needs no sorting.
    let n_edges = edges.len();
    let mut succ_off = MmapVec::filled(n_nodes + 1, 0u32)?;
    let mut succ_to = MmapVec::filled(n_edges, 0u32)?;
    let mut pairs: MmapVec<(u32, u32)> = MmapVec::new();
    pairs.reserve(n_edges)?;
    for e in edges.iter() {
        pairs.push((e.from, e.to & !INTERIOR))?;
    }
    graph::build_csr(&pairs, false, &mut succ_off, &mut succ_to);
    let mut pred_off = MmapVec::filled(n_nodes + 1, 0u32)?;
    let mut pred_from = MmapVec::filled(n_edges, 0u32)?;
    graph::build_csr(&pairs, true, &mut pred_off, &mut pred_from);
    drop(pairs);
    let succ = Csr {
        offsets: &succ_off,
        targets: &succ_to,
    };
    let pred = Csr {
        offsets: &pred_off,
        targets: &pred_from,
    };

    lap(Phase::Graph);
    let mut work = graph::Work::default();
    let mut parent = MmapVec::filled(n_nodes, NONE)?;
    {
        let mut queue = MmapVec::filled(n_nodes, 0u32)?;
        // Chains start at the program's statics and data where those reach
        // a block at all; stacks, registers and thread-locals hold the rest.
        graph::breadth_first_preferring(succ, &mut parent, &mut queue, &mut work, |root| {
            matches!(
                roots_out[root as usize].kind,
                RootKind::Variable | RootKind::Segment
            )
        });
    }
    lap(Phase::Chains);
    let mut vertex = MmapVec::filled(n_nodes, 0u32)?;
    let mut idom = MmapVec::filled(n_nodes, NONE)?;
    let reached = {
        let mut pre = MmapVec::filled(n_nodes, NONE)?;
        let mut dfs_parent = MmapVec::filled(n_nodes, NONE)?;
        let reached = {
            let mut stack = MmapVec::filled(n_nodes, (0u32, 0u32))?;
            graph::preorder(
                succ,
                &mut vertex,
                &mut pre,
                &mut dfs_parent,
                &mut stack,
                &mut work,
            )
        };
        let mut nodes = MmapVec::filled(reached, [0u32; 4])?;
        let mut words = MmapVec::filled(graph::DominatorScratch::words(reached), 0u32)?;
        let mut scratch = graph::DominatorScratch::split(&mut nodes, &mut words, reached);
        graph::dominators(
            pred,
            &vertex[..reached],
            &pre,
            &dfs_parent[..reached],
            &mut scratch,
            &mut idom,
            &mut work,
        );
        reached
    };
    let mut size = MmapVec::filled(n_nodes, 0u64)?;
    for (i, b) in index.blocks.iter().enumerate() {
        size[first_block as usize + i] = b.size;
    }
    let mut kept_bytes = MmapVec::filled(n_nodes, 0u64)?;
    let mut kept_blocks = MmapVec::filled(n_nodes, 0u32)?;
    graph::retained(
        &vertex[..reached],
        &idom,
        &size,
        first_block,
        &mut kept_bytes,
        &mut kept_blocks,
    );
    lap(Phase::Dominators);

    // Per block: the offset of the first pointer (in scan order) from its
    // breadth-first parent, and whether a reachable node holds a pointer to
    // its start.
    const UNSET: u32 = u32::MAX;
    // What only leakscope's own roots reach is leakscope's memory: neither
    // the program's nor lost.
    let mut block_flags = MmapVec::filled(n_blocks, 0u32)?;
    let mut own_node = MmapVec::filled(n_nodes, false)?;
    {
        let mut queue = MmapVec::filled(n_nodes, 0u32)?;
        let mut tail = 0;
        for r in 1..first_block as usize {
            if root_own[r] {
                own_node[r] = true;
                queue[tail] = r as u32;
                tail += 1;
            }
        }
        let mut head = 0;
        while head < tail {
            let n = queue[head];
            head += 1;
            for &m in succ.neighbours(n) {
                if m >= first_block && parent[m as usize] == NONE && !own_node[m as usize] {
                    own_node[m as usize] = true;
                    block_flags[(m - first_block) as usize] = flags::OWN;
                    queue[tail] = m;
                    tail += 1;
                }
            }
        }
    }
    let mut parent_offset = MmapVec::filled(n_nodes, UNSET)?;
    for e in edges.iter() {
        let to = (e.to & !INTERIOR) as usize;
        if parent[to] == e.from && parent_offset[to] == UNSET {
            parent_offset[to] = e.offset;
        }
    }

    // Definitely reached: by Valgrind's rules, along a chain from a root in
    // which every link points to the start of its block (a block reached
    // otherwise, an interior pointer somewhere on every chain, even before
    // a pointer to its start, is possibly lost); for holders, pointed to at
    // its start by any reached node.
    let mut definite = MmapVec::filled(n_nodes, false)?;
    if input.rules == Rules::Valgrind {
        let (start_off, start_to) = start_pointer_csr(&edges, n_nodes)?;
        let start_succ = Csr {
            offsets: &start_off,
            targets: &start_to,
        };
        let mut queue = MmapVec::filled(n_nodes, 0u32)?;
        definite[0] = true;
        let (mut head, mut tail) = (0, 1);
        while head < tail {
            let n = queue[head];
            head += 1;
            for &m in start_succ.neighbours(n) {
                if !definite[m as usize] {
                    definite[m as usize] = true;
                    queue[tail] = m;
                    tail += 1;
                }
            }
        }
    } else {
        for e in edges.iter() {
            if parent[e.from as usize] != NONE && e.to & INTERIOR == 0 {
                definite[e.to as usize] = true;
            }
        }
    }

    // Unreachable blocks. By Valgrind's rules, in address order: each one
    // not yet claimed leads a clique (definitely lost) and claims every
    // unreachable block it leads to (indirectly lost), earlier leaders
    // included, so linked lost cycles end with one leader. For holders,
    // blocks no unreachable block points to lead first, then (cycles with
    // no way in) the rest in address order, claiming no leader.
    {
        let mut unreachable_in = MmapVec::filled(n_nodes, 0u32)?;
        if input.rules == Rules::Holders {
            for e in edges.iter() {
                if parent[e.from as usize] == NONE && !own_node[e.from as usize] {
                    unreachable_in[(e.to & !INTERIOR) as usize] += 1;
                }
            }
        }
        let claims_leaders = input.rules == Rules::Valgrind;
        let mut queue = MmapVec::filled(n_nodes, 0u32)?;
        let mut lead = |leader: u32, block_flags: &mut MmapVec<u32>| {
            block_flags[(leader - first_block) as usize] = flags::DEFINITELY_LOST;
            let (mut head, mut tail) = (0, 1);
            queue[0] = leader;
            while head < tail {
                let n = queue[head];
                head += 1;
                for &m in succ.neighbours(n) {
                    if m < first_block || m == leader || parent[m as usize] != NONE {
                        continue;
                    }
                    let j = (m - first_block) as usize;
                    let claimable = block_flags[j] == 0
                        || (claims_leaders && block_flags[j] == flags::DEFINITELY_LOST);
                    if claimable {
                        block_flags[j] = flags::INDIRECTLY_LOST;
                        queue[tail] = m;
                        tail += 1;
                    }
                }
            }
        };
        let unreached = |i: usize, block_flags: &MmapVec<u32>| {
            parent[first_block as usize + i] == NONE && block_flags[i] == 0
        };
        if input.rules == Rules::Holders {
            for i in 0..n_blocks {
                if unreached(i, &block_flags) && unreachable_in[first_block as usize + i] == 0 {
                    lead(first_block + i as u32, &mut block_flags);
                }
            }
        }
        for i in 0..n_blocks {
            if unreached(i, &block_flags) {
                lead(first_block + i as u32, &mut block_flags);
            }
        }
    }
    let true_start = match &heuristic {
        Some(h) => Some(h.true_start_from_reached(&edges, &parent, first_block)?),
        None => None,
    };
    for (i, b) in index.blocks.iter().enumerate() {
        let node = first_block as usize + i;
        if parent[node] != NONE {
            block_flags[i] |= flags::REACHABLE;
            if !definite[node] {
                block_flags[i] |= flags::POSSIBLY_LOST;
            }
        }
        if b.sampled {
            block_flags[i] |= flags::SAMPLED;
        }
        if let (Some(h), Some(true_start)) = (&heuristic, &true_start) {
            if parent[node] != NONE && definite[node] && !true_start[i] {
                block_flags[i] |= u32::from(h.kind[i]) << flags::HEURISTIC_SHIFT;
            }
        }
        if index.has_unreadable(b.addr, b.addr + b.size) {
            block_flags[i] |= flags::UNSCANNED;
        }
    }

    lap(Phase::Classify);
    // Slice pinning: a large data buffer (a block that holds no pointers of
    // its own, like a network read buffer or a JSON document; containers
    // such as hash tables are excluded) whose holder holds it only through
    // small views: pointers into it followed by a plausible length (the
    // layout of Rust slices, `Bytes` and `&str`). A pointer without a
    // plausible length counts as a pointer-sized view: conservative
    // scanning also meets stale words, which must not hide a pinned buffer.
    //
    // The holder read is the buffer's dominator. Where that holds no word
    // pointing to it (a second holder moved the dominator up: a stale copy
    // of some slices, as a freed `Vec`'s old elements left in a block that
    // reused its memory), every direct holder is read instead: the buffer
    // is pinned if they hold views only, but for the shared header of a
    // view (a `Bytes`'s reference count and capacity, the word after its
    // length), and its chain is made to end in the holder of the most
    // views (the application's collection of slices, not a stale copy of
    // part of it).
    let mut view_bytes = MmapVec::filled(n_blocks, u64::MAX)?;
    let mut first_view = MmapVec::filled(n_blocks, FirstView::NONE)?;
    {
        let range = |holder: u32| {
            if holder >= first_block {
                let hb = &index.blocks[(holder - first_block) as usize];
                (hb.addr, hb.addr + hb.size)
            } else {
                let r = &roots_out[holder as usize];
                (r.start, r.end)
            }
        };
        let mut by_dominator: MmapVec<(u32, u32)> = MmapVec::new();
        for (i, b) in index.blocks.iter().enumerate() {
            let node = first_block as usize + i;
            let holds_pointers = !succ.neighbours(node as u32).is_empty();
            if b.size >= PIN_MIN_BYTES
                && parent[node] != NONE
                && !holds_pointers
                && block_flags[i] & flags::UNSCANNED == 0
            {
                view_bytes[i] = 0;
                by_dominator.push((idom[node], i as u32))?;
            }
        }
        by_dominator.as_mut_slice().sort_unstable();
        let mut previous = NONE;
        for &(holder, _) in by_dominator.iter() {
            if holder == previous || holder == 0 {
                continue;
            }
            previous = holder;
            read_views(mem, &index, readable, range(holder), |b, _, view| {
                let node = first_block as usize + b as usize;
                if idom[node] == holder && view_bytes[b as usize] != u64::MAX {
                    add_view(
                        &mut view_bytes[b as usize],
                        &mut first_view[b as usize],
                        view,
                    );
                }
            });
        }
        drop(by_dominator);

        // Buffers whose dominator holds no word to them: their direct
        // holders, each read once.
        let mut holders: MmapVec<u32> = MmapVec::new();
        let mut second_look = MmapVec::filled(n_blocks, false)?;
        for (i, &bytes) in view_bytes.iter().enumerate() {
            if bytes == 0 {
                second_look[i] = true;
                for &holder in pred.neighbours(first_block + i as u32) {
                    // The virtual root's edges are not words in memory; an
                    // unreached holder is garbage that holds nothing.
                    if holder != 0 && parent[holder as usize] != NONE {
                        holders.push(holder)?;
                    }
                }
            }
        }
        holders.as_mut_slice().sort_unstable();
        let mut distinct = 0;
        for i in 0..holders.len() {
            if distinct == 0 || holders[i] != holders[distinct - 1] {
                holders[distinct] = holders[i];
                distinct += 1;
            }
        }
        let holders = &holders[..distinct];
        // Views per holder (indexed like `holders`), and the blocks that
        // are a view's shared header.
        let mut views_held = MmapVec::filled(holders.len(), 0u32)?;
        let mut is_header = MmapVec::filled(n_blocks, false)?;
        for (h, &holder) in holders.iter().enumerate() {
            read_views(mem, &index, readable, range(holder), |b, _, view| {
                let i = b as usize;
                if let View::Slice { next, .. } = view {
                    if let Some((header, _)) = index.find(next) {
                        is_header[header as usize] = true;
                    }
                    // Views of every buffer that may be pinned count
                    // (a collection of slices holds views of buffers it
                    // dominates as well).
                    if view_bytes[i] != u64::MAX {
                        views_held[h] = views_held[h].saturating_add(1);
                    }
                    if second_look[i] {
                        add_view(&mut view_bytes[i], &mut first_view[i], view);
                    }
                }
            });
        }
        let mut most_views = MmapVec::filled(n_blocks, 0u32)?;
        for (h, &holder) in holders.iter().enumerate() {
            let (start, _) = range(holder);
            let header = holder >= first_block && is_header[(holder - first_block) as usize];
            read_views(mem, &index, readable, range(holder), |b, at, view| {
                let i = b as usize;
                if !second_look[i] {
                    return;
                }
                match view {
                    View::Owner if !header => view_bytes[i] = u64::MAX,
                    View::Owner => {}
                    View::Slice { .. } if views_held[h] > most_views[i] => {
                        // A pinned buffer holds no pointers: no other
                        // node's chain passes through it.
                        most_views[i] = views_held[h];
                        let node = first_block as usize + i;
                        parent[node] = holder;
                        parent_offset[node] = u32::try_from(at - start).unwrap_or(u32::MAX);
                    }
                    View::Slice { .. } => {}
                }
            });
        }

        for (i, b) in index.blocks.iter().enumerate() {
            if view_bytes[i] == u64::MAX {
                continue;
            }
            if view_bytes[i] == 0 || view_bytes[i].saturating_mul(8) > b.size {
                view_bytes[i] = u64::MAX;
            } else {
                block_flags[i] |= flags::PINNED;
            }
        }
    }
    // Which field of its buffer each pinned block's first slice is.
    let pinned = index.blocks.iter().enumerate().filter_map(|(i, b)| {
        (block_flags[i] & flags::PINNED != 0).then_some((i as u32, b.addr, b.size, first_view[i]))
    });
    fields::attribute_pinned(mem, pinned, out);

    lap(Phase::Pinning);
    // Results.
    for r in 1..first_block as usize {
        let root = &mut roots_out[r];
        root.retained = kept_bytes[r];
        root.retained_blocks = kept_blocks[r];
        root.reachable = u32::from(parent[r] != NONE);
    }
    out.write_roots(&roots_out[..]);
    for (i, b) in index.blocks.iter().enumerate() {
        let node = first_block as usize + i;
        out.write_block(
            i,
            &BlockOut {
                addr: b.addr,
                size: b.size,
                site: b.site,
                flags: block_flags[i],
                parent: parent[node],
                parent_offset: match parent_offset[node] {
                    UNSET => 0,
                    offset => offset,
                },
                idom: idom[node],
                retained_blocks: kept_blocks[node],
                retained: kept_bytes[node],
                view_bytes: view_bytes[i],
                refers_to: if b.site == super::blocks::NO_SITE {
                    refers_to(mem, input.segments, b.addr, b.size)
                } else {
                    0
                },
            },
        );
    }
    lap(Phase::Write);
    out.write_header(&Header {
        phase_ns,
        roots: first_block - 1,
        blocks: n_blocks as u32,
        threads: input.threads.len() as u32,
        dropped_blocks: dropped,
        edges: n_edges as u64,
        scanned_bytes: scanned,
        analysis_ns: now_ns() - started,
        graph_steps: work.steps,
        scan_processes,
        source: input.source as u32,
        heap,
        check,
        ..Header::default()
    });
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_owners_from_views_at_the_start_of_a_block() {
        // A String or Vec<u8>: its capacity in bytes, before or after.
        assert!(owns_block(8192, 100, 8192));
        assert!(owns_block(7, 8192, 8192));
        // A Vec<u64> of 1024 elements, full or partly used.
        assert!(owns_block(1024, 1024, 8192));
        assert!(owns_block(1024, 10, 8192));
        // A 4 KiB slice of a 64 KiB buffer, after an unrelated word (a
        // vtable, nothing): a view.
        assert!(!owns_block(0x5555_0000_1230, 4096, 65536));
        assert!(!owns_block(0, 4096, 65536));
        // Slices after a small word that divides the size: views (longer
        // than that "capacity").
        assert!(!owns_block(3, 1, 65536));
        assert!(!owns_block(16, 100, 65536));
    }

    #[test]
    fn tells_an_owner_that_consumed_its_front_from_a_view() {
        let (addr, size) = (0x10_0000u64, 16_392u64);
        let end = addr + size;
        // A `BytesMut` of 16 KiB advanced by 8448 bytes, empty or not, in a
        // walked chunk (8 bytes over the request) or an exact block.
        assert!(owns_rest_of_block(addr + 8448, 0, 16_384 - 8448, end));
        assert!(owns_rest_of_block(addr + 8448, 100, 16_384 - 8448, end));
        assert!(owns_rest_of_block(addr + 8448, 0, size - 8448, end));
        // A `Bytes` slice: its length, then a pointer or a vtable.
        assert!(!owns_rest_of_block(addr + 8448, 1, 0x5555_0000_1230, end));
        // A slice followed by a small count that stops short of the end.
        assert!(!owns_rest_of_block(addr + 8448, 1, 4, end));
        // Nor may a "capacity" run past the block.
        assert!(!owns_rest_of_block(addr + 8448, 1, size, end));
    }

    #[test]
    fn frames_partition_the_stack() {
        // A fake stack: frame records at 0x1100 -> 0x1200 -> 0x1300 -> end.
        let mut stack = vec![0u64; 0x100];
        let base = stack.as_mut_ptr() as u64;
        let rec = |off: u64| base + off;
        let put = |stack: &mut Vec<u64>, at: u64, v: u64| stack[((at - base) / 8) as usize] = v;
        put(&mut stack, rec(0x100), rec(0x200));
        put(&mut stack, rec(0x108), 0xAAA);
        put(&mut stack, rec(0x200), rec(0x300));
        put(&mut stack, rec(0x208), 0xBBB);
        put(&mut stack, rec(0x300), 0);
        put(&mut stack, rec(0x308), 0xCCC);
        let mut out = [(0, 0); MAX_FRAMES];
        let mem = OwnMemory::read_own().expect("our maps");
        let n = stack_frames(&mem, rec(0x40), rec(0x100), 0x999, base + 0x800, &mut out);
        assert_eq!(
            &out[..n],
            &[
                (rec(0x110), 0x999),
                (rec(0x210), 0xAAA),
                (rec(0x310), 0xBBB)
            ]
        );
    }
}
