//! The results the snapshot child hands to its parent: fixed-size records in
//! a shared anonymous mapping, created by the parent before the fork (so the
//! child writes with plain stores and nothing is copied through a pipe).
//!
//! Layout: a [`Header`], then `root_capacity` [`RootOut`] records indexed by
//! node id (entry 0, the super-root, unused), then `block_capacity`
//! [`BlockOut`] records in address order, then up to `field_capacity`
//! [`FieldOut`] records: which field of its buffer each pinned block's slice
//! is (structure only, never contents; see `fields`).

use std::ptr::NonNull;

use super::blocks::CrossCheck;
use super::fields::Attribution;
use super::glibc::HeapStats;
use crate::collect::raw_mem;

const MAGIC: u64 = 0x6c65616b_73636f70; // "leakscop"

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: u64,
    pub(crate) roots: u32,
    pub(crate) blocks: u32,
    pub(crate) threads: u32,
    /// Live-table entries left out (overlapping the block before).
    pub(crate) dropped_blocks: u32,
    pub(crate) edges: u64,
    pub(crate) scanned_bytes: u64,
    pub(crate) analysis_ns: u64,
    /// Time spent per analysis phase, see `child::Phase`.
    pub(crate) phase_ns: [u64; 9],
    /// Steps of the graph algorithms (see `graph::Work`).
    pub(crate) graph_steps: u64,
    /// `blocks::BlockSource` the blocks came from.
    pub(crate) source: u32,
    /// A `glibc::WalkError` code when the heap walk failed (then nothing
    /// else is written), else 0.
    pub(crate) walk_error: u32,
    /// What the heap walk counted (zero when the heap was not walked).
    pub(crate) heap: HeapStats,
    /// Differences between the live table and the walk (cross-check only).
    pub(crate) check: CrossCheck,
    /// Where the analysis faulted (exit status 74), else 0.
    pub(crate) fault_addr: u64,
    pub(crate) fault_pc: u64,
    /// [`FieldOut`] records written.
    pub(crate) fields: u32,
    /// Processes that scanned the blocks (the child and its helpers).
    pub(crate) scan_processes: u32,
}

/// What kind of root an entity is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum RootKind {
    #[default]
    Unused = 0,
    /// A named variable; `index` into the variable list.
    Variable = 1,
    /// A writable segment (words outside any named variable); `index` into
    /// the segment list.
    Segment = 2,
    /// A thread's registers; `index` is the thread.
    Registers = 3,
    /// A thread's static thread-local storage.
    ThreadLocal = 4,
    /// Stack words of a thread outside any frame found.
    StackOther = 5,
    /// A stack frame: `index` the thread, `frame` its depth, `pc` the code
    /// address it was executing.
    StackFrame = 6,
    /// Anonymous writable memory that is neither heap, a stack, an object's
    /// data nor leakscope's (a program's own arena, a JIT region); `start`
    /// and `end` its mapping.
    Anonymous = 7,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct RootOut {
    pub(crate) kind: RootKind,
    pub(crate) index: u32,
    pub(crate) frame: u32,
    pub(crate) reachable: u32,
    pub(crate) pc: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) retained: u64,
    pub(crate) retained_blocks: u32,
    pub(crate) _pad: u32,
}

impl RootOut {
    pub(crate) fn new(
        kind: RootKind,
        index: u32,
        frame: u32,
        pc: u64,
        start: u64,
        end: u64,
    ) -> Self {
        RootOut {
            kind,
            index,
            frame,
            pc,
            start,
            end,
            ..RootOut::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct BlockOut {
    pub(crate) addr: u64,
    pub(crate) size: u64,
    pub(crate) site: u32,
    /// `child::flags`.
    pub(crate) flags: u32,
    /// Node through which a shortest chain reaches the block (`NONE` if
    /// unreachable).
    pub(crate) parent: u32,
    /// Offset of the pointer inside the parent.
    pub(crate) parent_offset: u32,
    /// Immediate dominator node (`NONE` if unreachable).
    pub(crate) idom: u32,
    pub(crate) retained_blocks: u32,
    pub(crate) retained: u64,
    /// Bytes of the slices its holders hold of it, for pinned blocks;
    /// `u64::MAX` otherwise.
    pub(crate) view_bytes: u64,
    /// For a block without an allocation stack: the first of its first
    /// words that points into a loaded object's writable segments (a
    /// vtable in relocated read-only data, or a static), which says what
    /// the block is an instance of; 0 if none.
    pub(crate) refers_to: u64,
}

/// Which field of its buffer a pinned block's (first) slice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct FieldOut {
    /// Index of the pinned block among the block records.
    pub(crate) block: u32,
    pub(crate) field: Attribution,
}

/// Pinned buffers attributed to a field, at most (a bound on the mapping;
/// untouched pages of it cost nothing).
const MAX_FIELDS: usize = 1 << 16;

/// The shared result mapping.
pub(crate) struct Output {
    base: NonNull<u8>,
    bytes: usize,
    roots: usize,
    blocks: usize,
    fields: usize,
    /// Field records written (the child sets it; the header carries it).
    fields_written: u32,
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for Output {}

impl Output {
    fn size_for(roots: usize, blocks: usize, fields: usize) -> usize {
        std::mem::size_of::<Header>()
            + roots * std::mem::size_of::<RootOut>()
            + blocks * std::mem::size_of::<BlockOut>()
            + fields * std::mem::size_of::<FieldOut>()
    }

    /// Maps a shared region for `roots` root records and `blocks` block
    /// records, for a snapshot child to write and its parent to read.
    /// Untouched pages cost nothing.
    pub(crate) fn new(roots: usize, blocks: usize) -> Option<Output> {
        Self::mapped(roots, blocks, libc::MAP_SHARED)
    }

    /// The same, for an analysis that writes its results in the process
    /// that reads them (another process's image: attach, core). Private
    /// memory in huge pages where the kernel has them: a heap of 2M blocks
    /// writes 128 MB of records, which in shared memory took 4 KiB page
    /// faults costing up to 0.4 s, a third of the whole analysis.
    pub(crate) fn new_private(roots: usize, blocks: usize) -> Option<Output> {
        let out = Self::mapped(roots, blocks, libc::MAP_PRIVATE)?;
        // SAFETY: advice on a mapping this value owns; failing (no
        // transparent huge pages) leaves ordinary pages.
        unsafe {
            libc::madvise(out.base.as_ptr().cast(), out.bytes, libc::MADV_HUGEPAGE);
        }
        Some(out)
    }

    fn mapped(roots: usize, blocks: usize, sharing: libc::c_int) -> Option<Output> {
        let fields = blocks.min(MAX_FIELDS);
        let bytes = Self::size_for(roots, blocks, fields);
        // SAFETY: an anonymous mapping with no hint; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                sharing | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Output {
            base: NonNull::new(p.cast())?,
            bytes,
            roots,
            blocks,
            fields,
            fields_written: 0,
        })
    }

    pub(crate) fn root_capacity(&self) -> usize {
        self.roots
    }

    pub(crate) fn block_capacity(&self) -> usize {
        self.blocks
    }

    fn roots_ptr(&self) -> *mut RootOut {
        // SAFETY: the header is at the start of the mapping; records follow.
        unsafe { self.base.as_ptr().add(std::mem::size_of::<Header>()).cast() }
    }

    fn blocks_ptr(&self) -> *mut BlockOut {
        // SAFETY: block records follow the root records inside the mapping.
        unsafe { self.roots_ptr().add(self.roots).cast() }
    }

    /// The header's place in the mapping (for the fault handler).
    pub(crate) fn header_ptr(&mut self) -> *mut Header {
        self.base.as_ptr().cast()
    }

    /// The header as written, whatever state the rest is in.
    pub(crate) fn raw_header(&self) -> Header {
        // SAFETY: the mapping starts with a Header (zero until written).
        unsafe { self.base.as_ptr().cast::<Header>().read() }
    }

    fn fields_ptr(&self) -> *mut FieldOut {
        // SAFETY: field records follow the block records inside the
        // mapping; every record size is a multiple of 8, so they stay
        // aligned.
        unsafe { self.blocks_ptr().add(self.blocks).cast() }
    }

    pub(crate) fn field_capacity(&self) -> usize {
        self.fields
    }

    pub(crate) fn write_field(&mut self, i: usize, field: &FieldOut) {
        if i < self.fields {
            // SAFETY: `i` is inside the field area.
            unsafe { self.fields_ptr().add(i).write(*field) };
        }
    }

    /// How many field records were written (carried by the header).
    pub(crate) fn set_fields(&mut self, n: usize) {
        self.fields_written = n.min(self.fields) as u32;
    }

    /// The field records the child wrote, if it finished.
    pub(crate) fn read_fields(&self) -> &[FieldOut] {
        let Some((header, _, _)) = self.read() else {
            return &[];
        };
        let n = (header.fields as usize).min(self.fields);
        // SAFETY: the first `n` records of the field area were written by
        // the child before its header.
        unsafe { std::slice::from_raw_parts(self.fields_ptr(), n) }
    }

    pub(crate) fn write_header(&mut self, header: &Header) {
        let h = Header {
            magic: MAGIC,
            fields: self.fields_written,
            ..*header
        };
        // SAFETY: the mapping starts with room for a Header; it is aligned
        // (page-aligned mapping).
        unsafe { self.base.as_ptr().cast::<Header>().write(h) };
    }

    pub(crate) fn write_roots(&mut self, roots: &[RootOut]) {
        let n = roots.len().min(self.roots);
        // SAFETY: `n` records fit in the root area.
        unsafe { std::ptr::copy_nonoverlapping(roots.as_ptr(), self.roots_ptr(), n) };
    }

    pub(crate) fn write_block(&mut self, i: usize, block: &BlockOut) {
        if i < self.blocks {
            // SAFETY: `i` is inside the block area.
            unsafe { self.blocks_ptr().add(i).write(*block) };
        }
    }

    /// The results, if the child finished writing them.
    pub(crate) fn read(&self) -> Option<(Header, &[RootOut], &[BlockOut])> {
        // SAFETY: the mapping starts with a Header (zero until written).
        let header = unsafe { self.base.as_ptr().cast::<Header>().read() };
        if header.magic != MAGIC
            || header.blocks as usize > self.blocks
            || header.roots as usize + 1 > self.roots
        {
            return None;
        }
        // SAFETY: both areas lie inside the mapping and hold initialised
        // (zeroed or written) records.
        let roots =
            unsafe { std::slice::from_raw_parts(self.roots_ptr(), header.roots as usize + 1) };
        // SAFETY: as above.
        let blocks =
            unsafe { std::slice::from_raw_parts(self.blocks_ptr(), header.blocks as usize) };
        Some((header, roots, blocks))
    }

    /// The results of a finished analysis, for naming: its header, root and
    /// field records (copied: a few), and its block records, which stay in
    /// the mapping. `None` if the analysis did not finish.
    pub(crate) fn into_results(self) -> Option<Results> {
        let (header, roots, _) = self.read()?;
        let roots = roots.to_vec();
        let fields = self.read_fields().to_vec();
        Some(Results {
            header,
            roots,
            fields,
            blocks: BlockRecords {
                len: header.blocks as usize,
                out: self,
            },
        })
    }
}

/// What [`Output::into_results`] hands over.
pub(crate) struct Results {
    pub(crate) header: Header,
    pub(crate) roots: Vec<RootOut>,
    pub(crate) blocks: BlockRecords,
    pub(crate) fields: Vec<FieldOut>,
}

/// The block records of a finished analysis, left where it wrote them: a
/// heap of 2M blocks has 128 MB of them, which a copy would fault in again.
pub(crate) struct BlockRecords {
    out: Output,
    len: usize,
}

impl std::ops::Deref for BlockRecords {
    type Target = [BlockOut];

    fn deref(&self) -> &[BlockOut] {
        // SAFETY: `into_results` checked `len` against the mapping's
        // block area, whose records are initialised (zeroed or written);
        // nothing writes them once the analysis finished.
        unsafe { std::slice::from_raw_parts(self.out.blocks_ptr(), self.len) }
    }
}

// SAFETY: a `BlockRecords` only reads its mapping, which no one writes any
// more: shared references may cross threads.
unsafe impl Sync for BlockRecords {}

impl Drop for Output {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `mapped` with this size.
        unsafe { raw_mem::unmap(self.base, self.bytes) };
    }
}

// Records follow one another in the mapping: each must keep the next aligned.
const _: () = assert!(std::mem::size_of::<Header>() % 8 == 0);
const _: () = assert!(std::mem::size_of::<RootOut>() % 8 == 0);
const _: () = assert!(std::mem::size_of::<BlockOut>() % 8 == 0);
const _: () = assert!(std::mem::size_of::<FieldOut>() % 8 == 0);
