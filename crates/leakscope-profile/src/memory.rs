//! Where a process's resident memory goes: a breakdown of RSS into named
//! parts (the heap's blocks in use, memory the allocator keeps after frees,
//! thread stacks, loaded objects, other anonymous and file-backed mappings,
//! leakscope's own memory) that sum to RSS, with whatever is left named
//! "unexplained". It answers "is it a leak at all?": RSS that climbs while
//! the live heap stays flat is the allocator or something outside the heap.
//!
//! Pure: [`compute`] takes the mappings (as `/proc/PID/smaps` lists them)
//! and the heap's figures (from a heap walk, `mallinfo2()` or the
//! profiler's table) and classifies every resident byte.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Amount, ArenaUsage};
use crate::units::{clamp_i64, format_value};

/// The `format` field of every breakdown file.
pub const FORMAT: &str = "leakscope-memory";
/// The newest version this code writes and reads.
pub const VERSION: u32 = 1;

/// glibc's non-main arenas live in heaps aligned to this size
/// (`HEAP_MAX_SIZE`, 64 MiB on 64-bit targets).
pub const GLIBC_HEAP_ALIGN: u64 = 64 << 20;

/// One mapping, as `/proc/PID/smaps` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    /// The file, a `[name]` the kernel gives (`[heap]`, `[stack]`,
    /// `[vdso]`), or empty for anonymous memory.
    pub path: String,
    /// Resident bytes (`Rss:`).
    pub rss: u64,
    /// `VmFlags: nr`: no swap reserved (glibc maps its arena heaps so).
    pub no_reserve: bool,
}

impl Mapping {
    fn anonymous(&self) -> bool {
        self.path.is_empty()
    }
    fn file(&self) -> bool {
        self.path.starts_with('/')
    }
}

/// The named parts of RSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// Heap chunks in use (the program's blocks, their headers, glibc's own
    /// chunks; mallinfo2 counts thread-cached chunks here too).
    HeapInUse,
    /// Heap memory the allocator holds after frees: free chunks in bins,
    /// fast bins, thread caches and the top chunk, still resident.
    HeapFree,
    ThreadStacks,
    /// Code of the program and its shared libraries (and the vDSO).
    Code,
    /// Data of loaded objects: their writable and read-only segments and
    /// `.bss`.
    Data,
    /// Anonymous memory outside the heap and stacks: other allocators
    /// (Python's, a C library's pool), large `mmap`s, runtimes' regions.
    OtherAnonymous,
    /// Mapped files that are not loaded objects, and shared memory.
    FileBacked,
    /// leakscope's own tables, sample heap and heap blocks.
    Leakscope,
    /// RSS no mapping accounts for (memory changed while it was read).
    Unexplained,
}

impl PartKind {
    pub const ALL: [PartKind; 9] = [
        PartKind::HeapInUse,
        PartKind::HeapFree,
        PartKind::ThreadStacks,
        PartKind::Code,
        PartKind::Data,
        PartKind::OtherAnonymous,
        PartKind::FileBacked,
        PartKind::Leakscope,
        PartKind::Unexplained,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PartKind::HeapInUse => "heap: blocks in use",
            PartKind::HeapFree => "heap: freed, kept by the allocator",
            PartKind::ThreadStacks => "thread stacks",
            PartKind::Code => "code of loaded objects",
            PartKind::Data => "data of loaded objects",
            PartKind::OtherAnonymous => "other anonymous mappings",
            PartKind::FileBacked => "file-backed mappings",
            PartKind::Leakscope => "leakscope's own",
            PartKind::Unexplained => "unexplained",
        }
    }
}

/// One part of RSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub kind: PartKind,
    pub resident: u64,
    /// Mappings (wholly or partly) in this part.
    pub mappings: u32,
}

/// Where the heap's figures came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapSource {
    /// A walk of glibc's heap in a snapshot: per arena, every free list.
    Walk,
    /// glibc's `mallinfo2()`: totals over all arenas.
    Mallinfo2,
    /// jemalloc's own statistics (`stats.*` after an `epoch` refresh), read
    /// in the process that wraps it.
    JemallocStats,
    /// No allocator statistics (another allocator, whose statistics are not
    /// read): only the profiler's live figures.
    #[default]
    None,
}

/// How the program's live blocks were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveSource {
    /// Every block, from a heap walk (usable sizes).
    Walk,
    /// Every block, from full mode's live table (requested sizes).
    LiveTable,
    /// Estimated from the sampled blocks.
    SampledEstimate,
}

/// The program's live heap blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub amount: Amount,
    pub from: LiveSource,
}

/// What the allocator holds, in chunk bytes (headers included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorHeap {
    pub from: HeapSource,
    /// E.g. "glibc 2.36", or "jemalloc (statistics not read)".
    pub allocator: String,
    /// Bytes the arenas got from the system.
    pub system_bytes: u64,
    /// Chunks in use in the arenas.
    pub in_use_bytes: u64,
    /// Free chunks in the unsorted, small and large bins.
    pub free_in_bins: u64,
    pub fast_bins: u64,
    /// Free chunks in threads' caches (a walk tells them apart; mallinfo2
    /// counts them in use).
    pub tcache: u64,
    pub top_bytes: u64,
    /// Chunks mmapped on their own (large blocks).
    pub mmapped: Amount,
    /// Per arena, the main arena first (walks only).
    #[serde(default)]
    pub arenas: Vec<ArenaUsage>,
    /// jemalloc's statistics, when that is the allocator and they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jemalloc: Option<JemallocStats>,
}

/// jemalloc's view of itself (its `stats.*` names), in bytes. Its memory
/// lives in anonymous mappings that `smaps` cannot tell apart, so these
/// figures are what splits them: `allocated` is the program's blocks,
/// `resident - allocated` what jemalloc keeps (dirty and muzzy pages not
/// yet returned, the unused parts of active pages, its metadata).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JemallocStats {
    /// Bytes in blocks the program allocated (size classes, so a little
    /// above what it asked for).
    pub allocated: u64,
    /// Bytes in pages that hold at least one allocated block.
    pub active: u64,
    /// jemalloc's own bookkeeping.
    pub metadata: u64,
    /// At most this much is resident: active pages, dirty pages, metadata.
    pub resident: u64,
    /// Bytes in extents mapped from the system.
    pub mapped: u64,
    /// Virtual memory kept mapped for reuse (not resident).
    pub retained: u64,
    /// Freed pages not yet purged (resident until they decay:
    /// `dirty_decay_ms`).
    pub dirty: u64,
    /// Pages purged lazily (`MADV_FREE`): resident until the kernel needs
    /// them (`muzzy_decay_ms`).
    pub muzzy: u64,
}

impl JemallocStats {
    /// Resident bytes jemalloc keeps beyond the program's blocks.
    pub fn kept(&self) -> u64 {
        self.resident.saturating_sub(self.allocated)
    }
}

impl AllocatorHeap {
    /// Free bytes the allocator keeps, by its own count.
    pub fn free_bytes(&self) -> u64 {
        match self.jemalloc {
            Some(j) => j.kept(),
            None => self.free_in_bins + self.fast_bins + self.tcache + self.top_bytes,
        }
    }

    /// The figures of jemalloc's statistics.
    pub fn from_jemalloc(version: &str, stats: JemallocStats) -> AllocatorHeap {
        AllocatorHeap {
            from: HeapSource::JemallocStats,
            allocator: format!("jemalloc {version}"),
            system_bytes: stats.mapped,
            in_use_bytes: stats.allocated,
            jemalloc: Some(stats),
            ..AllocatorHeap::default()
        }
    }

    /// The totals of a heap walk.
    pub fn from_walk(heap: &crate::snapshot::GlibcHeap) -> AllocatorHeap {
        let t = heap.total();
        AllocatorHeap {
            from: HeapSource::Walk,
            allocator: format!("glibc {}", heap.release),
            system_bytes: t.system_bytes,
            in_use_bytes: t.in_use.bytes + t.internal_bytes,
            free_in_bins: t.free_in_bins.bytes,
            fast_bins: t.fast_bins.bytes,
            tcache: t.tcache.bytes,
            top_bytes: t.top_bytes,
            mmapped: heap.mmapped,
            arenas: heap.arenas.clone(),
            jemalloc: None,
        }
    }
}

/// How fragmented an arena is: the share of its memory below the top chunk
/// that is free (holes between blocks in use, which the arena can only
/// reuse for blocks that fit, and cannot give back by shrinking).
pub fn fragmentation(a: &ArenaUsage) -> f64 {
    let holes = a.free_in_bins.bytes + a.fast_bins.bytes + a.tcache.bytes;
    let below_top = holes + a.in_use.bytes + a.internal_bytes;
    if below_top == 0 {
        0.0
    } else {
        holes as f64 / below_top as f64
    }
}

/// The heap's figures beside the parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapFigures {
    /// The program's live blocks, when the profiler knows them (not in
    /// `off` mode without a walk).
    pub live: Option<Live>,
    pub allocator: AllocatorHeap,
    /// Heap blocks only leakscope holds (from a walk), counted in the
    /// `leakscope` part.
    pub leakscope_blocks: Amount,
}

/// A breakdown of RSS at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub format: String,
    pub version: u32,
    pub pid: u32,
    pub time_unix_ms: u64,
    /// Resident set size (`smaps_rollup`'s `Rss:`).
    pub rss: u64,
    /// The resident bytes of every mapping summed (equal to `rss` unless
    /// memory changed between the two reads).
    pub mapped_rss: u64,
    /// Every part, in [`PartKind::ALL`]'s order; they sum to `rss`.
    pub parts: Vec<Part>,
    pub heap: HeapFigures,
    /// What the figures cannot say, in words.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What [`compute`] works from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub pid: u32,
    pub time_unix_ms: u64,
    pub rss: u64,
    pub mappings: Vec<Mapping>,
    /// The stack pointers of the threads known (a thread's stack is the
    /// mapping containing its stack pointer).
    pub stack_pointers: Vec<u64>,
    /// leakscope's own mappings: (start, length, resident bytes).
    pub own: Vec<(u64, u64, u64)>,
    /// leakscope's sample heap reservation (start, length).
    pub sample_heap: Option<(u64, u64)>,
    /// The anonymous tails of loaded objects' writable segments (`.bss`
    /// past the file's last page): (start, length, resident bytes). The
    /// kernel merges them with anonymous memory mapped right after, so a
    /// mapping that begins with one is not all data. When empty, an
    /// anonymous mapping right after an object's writable one counts as its
    /// `.bss` whole.
    pub object_bss: Vec<(u64, u64, u64)>,
    /// Where loaded objects' segments lie (start, end), as the loader
    /// placed them: a mapping of an object's file elsewhere (a symboliser
    /// reading it) is a file mapping, not the object's data. When empty,
    /// every mapping of a loaded object's file counts as its data.
    pub object_segments: Vec<(u64, u64)>,
    pub heap: HeapFigures,
}

/// Why a breakdown file could not be read.
#[derive(Debug)]
pub enum BreakdownFileError {
    Json(serde_json::Error),
    NotABreakdown,
    Version(u32),
}

impl std::fmt::Display for BreakdownFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BreakdownFileError::Json(e) => write!(f, "not a leakscope memory file ({e})"),
            BreakdownFileError::NotABreakdown => write!(f, "not a leakscope memory file"),
            BreakdownFileError::Version(v) => write!(
                f,
                "memory file version {v} is newer than this leakscope reads ({VERSION})"
            ),
        }
    }
}

impl std::error::Error for BreakdownFileError {}

/// Classifies every resident byte of `input`'s mappings.
pub fn compute(input: &Inputs) -> Breakdown {
    let mut resident = [0u64; PartKind::ALL.len()];
    let mut counts = [0u32; PartKind::ALL.len()];
    let mut add = |kind: PartKind, bytes: u64| {
        let i = kind as usize;
        resident[i] += bytes;
        counts[i] += 1;
    };
    let maps = &input.mappings;
    let loaded: std::collections::HashSet<&str> = maps
        .iter()
        .filter(|m| m.exec && m.file())
        .map(|m| m.path.as_str())
        .collect();
    let heap = &input.heap;
    let glibc = matches!(
        heap.allocator.from,
        HeapSource::Walk | HeapSource::Mallinfo2
    );
    // Resident heap arena memory, filled below and split afterwards.
    let mut arena_resident = 0u64;
    let mut arena_mappings = 0u32;
    for (i, m) in maps.iter().enumerate() {
        if m.rss == 0 {
            continue;
        }
        let inside_sample_heap = input
            .sample_heap
            .is_some_and(|(s, len)| m.start >= s && m.end <= s + len);
        if inside_sample_heap {
            add(PartKind::Leakscope, m.rss);
            continue;
        }
        // leakscope's tables may share a mapping with the program's memory
        // (the kernel merges neighbouring anonymous mappings).
        let own = resident_inside(&input.own, m).min(m.rss);
        if own > 0 {
            add(PartKind::Leakscope, own);
        }
        let mut rss = m.rss - own;
        if m.anonymous() {
            let bss = resident_inside(&input.object_bss, m).min(rss);
            if bss > 0 {
                add(PartKind::Data, bss);
                rss -= bss;
            }
        }
        if rss == 0 {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &maps[p]);
        let holds_a_stack_pointer = input
            .stack_pointers
            .iter()
            .any(|&sp| sp >= m.start && sp < m.end);
        // jemalloc and mimalloc also map with MAP_NORESERVE, and one of their
        // mappings may start on a 64 MiB boundary: only glibc's own figures
        // make such a mapping one of its arenas.
        let kind = if m.path == "[heap]" || (glibc && glibc_arena_heap(m)) {
            arena_resident += rss;
            arena_mappings += 1;
            continue;
        } else if m.path == "[stack]" || (m.anonymous() && holds_a_stack_pointer) {
            PartKind::ThreadStacks
        } else if m.anonymous() && m.write && prev.is_some_and(|p| guard_below(p, m)) {
            // A thread that was running user code (its stack pointer
            // unknown): a stack is the only anonymous mapping with an
            // inaccessible guard page right below it.
            PartKind::ThreadStacks
        } else if m.path.starts_with("[v") || (m.file() && m.exec) {
            // The vDSO (and its data, `[vvar]`) or an object's code.
            PartKind::Code
        } else if m.file()
            && loaded.contains(m.path.as_str())
            && (input.object_segments.is_empty()
                || input
                    .object_segments
                    .iter()
                    .any(|&(s, e)| s < m.end && m.start < e))
        {
            PartKind::Data
        } else if m.anonymous()
            && input.object_bss.is_empty()
            && prev.is_some_and(|p| {
                p.end == m.start && p.write && p.file() && loaded.contains(p.path.as_str())
            })
        {
            // `.bss` beyond the file's last page.
            PartKind::Data
        } else if m.anonymous() || m.path.starts_with("[anon:") {
            PartKind::OtherAnonymous
        } else {
            PartKind::FileBacked
        };
        add(kind, rss);
    }

    // The arenas: in use (by the allocator's count, never more than is
    // resident), the rest freed memory it keeps.
    let mut notes = Vec::new();
    let in_use = if glibc {
        heap.allocator.in_use_bytes
    } else {
        0
    };
    let arena_in_use = in_use.min(arena_resident);
    resident[PartKind::HeapInUse as usize] += arena_in_use;
    resident[PartKind::HeapFree as usize] += arena_resident - arena_in_use;
    counts[PartKind::HeapInUse as usize] += arena_mappings;
    counts[PartKind::HeapFree as usize] += arena_mappings;
    // Blocks outside the arenas live in anonymous mappings the maps cannot
    // tell apart: glibc's mmapped chunks by its own count, another
    // allocator's blocks and kept pages by its statistics, or, without
    // them, its blocks by the profiler's count.
    let (outside_arenas, kept_outside) = match (&heap.allocator.jemalloc, glibc) {
        (_, true) => (heap.allocator.mmapped.bytes, 0),
        (Some(j), false) => {
            notes.push(format!(
                "jemalloc's statistics: {} allocated in {} of active pages; it keeps {} of dirty and {} of muzzy pages after frees and {} of metadata; {} more is retained unmapped from RAM (not resident)",
                format_value(clamp_i64(j.allocated), "bytes"),
                format_value(clamp_i64(j.active), "bytes"),
                format_value(clamp_i64(j.dirty), "bytes"),
                format_value(clamp_i64(j.muzzy), "bytes"),
                format_value(clamp_i64(j.metadata), "bytes"),
                format_value(clamp_i64(j.retained), "bytes"),
            ));
            (j.allocated, j.kept())
        }
        (None, false) => {
            notes.push(format!(
                "{}: its statistics are not read; memory it keeps after frees is in \"other anonymous mappings\"",
                if heap.allocator.allocator.is_empty() {
                    "the allocator is not glibc's"
                } else {
                    heap.allocator.allocator.as_str()
                }
            ));
            (heap.live.map_or(0, |l| l.amount.bytes), 0)
        }
    };
    let other = &mut resident[PartKind::OtherAnonymous as usize];
    let moved = outside_arenas.min(*other);
    *other -= moved;
    let kept = kept_outside.min(*other);
    *other -= kept;
    resident[PartKind::HeapInUse as usize] += moved;
    resident[PartKind::HeapFree as usize] += kept;
    if glibc && heap.allocator.mmapped.bytes > 0 {
        notes
            .push("large blocks mmapped on their own are counted at their mapped size".to_string());
    }
    // Heap blocks only leakscope holds are leakscope's, not the program's.
    let own_blocks = heap
        .leakscope_blocks
        .bytes
        .min(resident[PartKind::HeapInUse as usize]);
    resident[PartKind::HeapInUse as usize] -= own_blocks;
    resident[PartKind::Leakscope as usize] += own_blocks;

    let mapped_rss: u64 = maps.iter().map(|m| m.rss).sum();
    let counted: u64 = resident.iter().sum();
    resident[PartKind::Unexplained as usize] = input.rss.saturating_sub(counted);
    if counted > input.rss {
        notes.push(format!(
            "the mappings hold {} more than RSS (memory changed while they were read)",
            counted - input.rss
        ));
    }
    if heap.live.is_none() {
        notes.push("the program's live blocks are unknown (profiler off, no heap walk)".into());
    }
    Breakdown {
        format: FORMAT.into(),
        version: VERSION,
        pid: input.pid,
        time_unix_ms: input.time_unix_ms,
        rss: input.rss,
        mapped_rss,
        parts: PartKind::ALL
            .iter()
            .map(|&kind| Part {
                kind,
                resident: resident[kind as usize],
                mappings: counts[kind as usize],
            })
            .collect(),
        heap: heap.clone(),
        notes,
    }
}

/// The resident bytes of the `(start, length, resident)` ranges lying in `m`.
fn resident_inside(ranges: &[(u64, u64, u64)], m: &Mapping) -> u64 {
    ranges
        .iter()
        .filter(|&&(s, len, _)| s >= m.start && s + len <= m.end)
        .map(|&(_, _, r)| r)
        .sum()
}

/// A non-main glibc arena's heap: anonymous, writable, mapped without swap
/// reservation, starting on a `HEAP_MAX_SIZE` boundary.
fn glibc_arena_heap(m: &Mapping) -> bool {
    m.anonymous()
        && m.write
        && m.no_reserve
        && m.start % GLIBC_HEAP_ALIGN == 0
        && m.end - m.start <= GLIBC_HEAP_ALIGN
}

/// `below` is an inaccessible anonymous guard of at most 1 MiB ending where
/// `m` starts (how glibc and Rust lay out a thread's stack).
fn guard_below(below: &Mapping, m: &Mapping) -> bool {
    below.end == m.start
        && below.anonymous()
        && !below.read
        && !below.write
        && !below.exec
        && below.end - below.start <= 1 << 20
}

impl Breakdown {
    /// The resident bytes of one part.
    pub fn part(&self, kind: PartKind) -> u64 {
        self.parts
            .iter()
            .find(|p| p.kind == kind)
            .map_or(0, |p| p.resident)
    }

    /// Every part summed (equal to `rss` unless the mappings held more).
    pub fn sum_of_parts(&self) -> u64 {
        self.parts.iter().map(|p| p.resident).sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a breakdown always serialises")
    }

    pub fn from_json(text: &str) -> Result<Breakdown, BreakdownFileError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u32>,
        }
        let probe: Probe = serde_json::from_str(text).map_err(BreakdownFileError::Json)?;
        if probe.format.as_deref() != Some(FORMAT) {
            return Err(BreakdownFileError::NotABreakdown);
        }
        match probe.version {
            Some(v) if v > VERSION => return Err(BreakdownFileError::Version(v)),
            None => return Err(BreakdownFileError::NotABreakdown),
            _ => {}
        }
        serde_json::from_str(text).map_err(BreakdownFileError::Json)
    }

    /// The breakdown as text: one line per part, then the heap's figures
    /// and, per arena, what it keeps.
    pub fn render(&self) -> String {
        let b = |v: u64| format_value(clamp_i64(v), "bytes");
        let pct = |v: u64| {
            if self.rss == 0 {
                0.0
            } else {
                v as f64 * 100.0 / self.rss as f64
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "Memory of pid {}: RSS {}", self.pid, b(self.rss));
        for p in &self.parts {
            if p.resident == 0 && p.kind == PartKind::Unexplained {
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<36} {:>10} {:>5.1}%",
                p.kind.label(),
                b(p.resident),
                pct(p.resident)
            );
        }
        let h = &self.heap;
        if let Some(live) = h.live {
            let how = match live.from {
                LiveSource::Walk => "every block, from a heap walk",
                LiveSource::LiveTable => "every block, from the live table",
                LiveSource::SampledEstimate => "estimated from samples",
            };
            let _ = writeln!(
                out,
                "  live heap blocks: {} in {} blocks ({how})",
                b(live.amount.bytes),
                live.amount.blocks
            );
        }
        let a = &h.allocator;
        let glibc = matches!(a.from, HeapSource::Walk | HeapSource::Mallinfo2);
        if let (Some(live), true) = (h.live, glibc) {
            let not_program = (a.in_use_bytes + a.mmapped.bytes).saturating_sub(live.amount.bytes);
            let _ = writeln!(
                out,
                "  of the heap in use, {} is not the program's live blocks (chunk headers, libc's and leakscope's own allocations)",
                b(not_program)
            );
        }
        if let Some(j) = &a.jemalloc {
            let _ = writeln!(
                out,
                "  {} (its statistics): {} allocated, {} active, {} resident, {} kept after frees ({} dirty, {} muzzy), {} metadata, {} mapped, {} retained",
                a.allocator,
                b(j.allocated),
                b(j.active),
                b(j.resident),
                b(j.kept()),
                b(j.dirty),
                b(j.muzzy),
                b(j.metadata),
                b(j.mapped),
                b(j.retained)
            );
        }
        if glibc {
            let _ = writeln!(
                out,
                "  {} ({}): {} from the system, {} in use, {} free: {} in bins, {} in fast bins, {} in thread caches, {} at the top; {} mmapped in {} large blocks",
                a.allocator,
                match a.from {
                    HeapSource::Walk => "heap walk",
                    _ => "mallinfo2",
                },
                b(a.system_bytes),
                b(a.in_use_bytes),
                b(a.free_bytes()),
                b(a.free_in_bins),
                b(a.fast_bins),
                b(a.tcache),
                b(a.top_bytes),
                b(a.mmapped.bytes),
                a.mmapped.blocks
            );
        }
        for (i, ar) in a.arenas.iter().enumerate() {
            let _ = writeln!(
                out,
                "    arena {i}{}: {} from the system, {} in use, {} free ({} at the top, largest hole {}), fragmentation {:.0}%",
                if i == 0 { " (main)" } else { "" },
                b(ar.system_bytes),
                b(ar.in_use.bytes),
                b(ar.free_bytes()),
                b(ar.top_bytes),
                b(ar.largest_free),
                fragmentation(ar) * 100.0
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

/// How each part of RSS changed from `first` to `last` (two breakdowns of
/// one process), largest growth first.
pub fn growth(first: &Breakdown, last: &Breakdown) -> Vec<(PartKind, i64)> {
    let mut parts: Vec<(PartKind, i64)> = PartKind::ALL
        .iter()
        .map(|&k| (k, clamp_i64(last.part(k)) - clamp_i64(first.part(k))))
        .collect();
    parts.sort_by_key(|&(_, d)| std::cmp::Reverse(d));
    parts
}

/// [`growth`] as text, parts that changed only.
pub fn render_growth(first: &Breakdown, last: &Breakdown) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nRSS by part, {:.0} s apart: {} -> {}",
        last.time_unix_ms.saturating_sub(first.time_unix_ms) as f64 / 1000.0,
        format_value(clamp_i64(first.rss), "bytes"),
        format_value(clamp_i64(last.rss), "bytes")
    );
    for (kind, delta) in growth(first, last).into_iter().filter(|&(_, d)| d != 0) {
        let sign = if delta > 0 { "+" } else { "" };
        let _ = writeln!(
            out,
            "  {:<36} {sign}{}",
            kind.label(),
            format_value(delta, "bytes")
        );
    }
    out
}

/// RSS and its main parts over a run (breakdowns in time order), as a
/// table of at most eight evenly spaced points; empty with fewer than two.
pub fn render_series(memory: &[Breakdown]) -> String {
    let mut out = String::new();
    if memory.len() < 2 {
        return out;
    }
    let t0 = memory[0].time_unix_ms;
    let shown = 8.min(memory.len());
    let b = |v: u64| format_value(clamp_i64(v), "bytes");
    let _ = writeln!(
        out,
        "\nRSS over time:\n  {:>7} {:>10} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "time", "RSS", "heap in use", "heap freed", "stacks", "other anon", "files"
    );
    for k in 0..shown {
        let m = &memory[k * (memory.len() - 1) / (shown - 1)];
        let _ = writeln!(
            out,
            "  {:>6.1}s {:>10} {:>12} {:>12} {:>10} {:>10} {:>10}",
            m.time_unix_ms.saturating_sub(t0) as f64 / 1e3,
            b(m.rss),
            b(m.part(PartKind::HeapInUse)),
            b(m.part(PartKind::HeapFree)),
            b(m.part(PartKind::ThreadStacks)),
            b(m.part(PartKind::OtherAnonymous)),
            b(m.part(PartKind::FileBacked))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, perms: &str, path: &str, rss: u64) -> Mapping {
        let p = perms.as_bytes();
        Mapping {
            start,
            end,
            read: p[0] == b'r',
            write: p[1] == b'w',
            exec: p[2] == b'x',
            shared: p[3] == b's',
            path: path.into(),
            rss,
            no_reserve: false,
        }
    }

    const K: u64 = 1024;

    /// A small process: a program, libc, brk heap, one arena heap, a thread
    /// stack with its guard, another with a known stack pointer, Python-like
    /// anonymous arenas, a data file, and a table of leakscope's.
    fn sample() -> Inputs {
        let arena = 5 * GLIBC_HEAP_ALIGN;
        let mut arena_heap = map(arena, arena + 4096 * K, "rw-p", "", 2048 * K);
        arena_heap.no_reserve = true;
        Inputs {
            pid: 7,
            time_unix_ms: 1,
            rss: 0,
            mappings: vec![
                map(0x1000, 0x3000, "r--p", "/bin/prog", 8 * K),
                map(0x3000, 0x9000, "r-xp", "/bin/prog", 20 * K),
                map(0x9000, 0xa000, "rw-p", "/bin/prog", 4 * K),
                map(0xa000, 0xc000, "rw-p", "", 8 * K),
                map(0x100000, 0x900000, "rw-p", "[heap]", 6000 * K),
                arena_heap,
                map(arena + 4096 * K, arena + GLIBC_HEAP_ALIGN, "---p", "", 0),
                map(0x7000_0000, 0x7000_1000, "---p", "", 0),
                map(0x7000_1000, 0x7080_1000, "rw-p", "", 64 * K),
                map(0x7100_0000, 0x7180_0000, "rw-p", "", 32 * K),
                map(0x7200_0000, 0x7300_0000, "rw-p", "", 3000 * K),
                map(0x7400_0000, 0x7400_4000, "r--s", "/data/file", 16 * K),
                map(0x7500_0000, 0x7510_0000, "r-xp", "/lib/libc.so.6", 900 * K),
                map(0x7510_0000, 0x7511_0000, "rw-p", "/lib/libc.so.6", 12 * K),
                map(0x7600_0000, 0x7600_1000, "r-xp", "[vdso]", 4 * K),
                map(0x7ff0_0000, 0x7ff2_0000, "rw-p", "[stack]", 100 * K),
            ],
            stack_pointers: vec![0x7170_0000],
            own: vec![(0x7200_0000, 0x10_0000, 1000 * K)],
            sample_heap: None,
            object_bss: Vec::new(),
            object_segments: Vec::new(),
            heap: HeapFigures {
                live: Some(Live {
                    amount: Amount {
                        blocks: 10,
                        bytes: 5000 * K,
                    },
                    from: LiveSource::LiveTable,
                }),
                allocator: AllocatorHeap {
                    from: HeapSource::Mallinfo2,
                    allocator: "glibc 2.36".into(),
                    in_use_bytes: 5000 * K,
                    mmapped: Amount {
                        blocks: 1,
                        bytes: 500 * K,
                    },
                    ..Default::default()
                },
                leakscope_blocks: Amount::default(),
            },
        }
    }

    #[test]
    fn every_resident_byte_goes_to_one_part() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        let b = compute(&input);
        assert_eq!(b.sum_of_parts(), b.rss);
        assert_eq!(b.part(PartKind::Unexplained), 0);
        // brk 6000K + arena heap 2048K; 5000K in use + 500K mmapped.
        assert_eq!(b.part(PartKind::HeapInUse), 5500 * K);
        assert_eq!(b.part(PartKind::HeapFree), 6000 * K + 2048 * K - 5000 * K);
        // [stack] + the guarded stack + the one holding a stack pointer.
        assert_eq!(b.part(PartKind::ThreadStacks), (100 + 64 + 32) * K);
        assert_eq!(b.part(PartKind::Code), (20 + 900 + 4) * K);
        // Read-only and writable segments and .bss.
        assert_eq!(b.part(PartKind::Data), (8 + 4 + 8 + 12) * K);
        assert_eq!(b.part(PartKind::FileBacked), 16 * K);
        assert_eq!(b.part(PartKind::Leakscope), 1000 * K);
        // Python-like arenas minus leakscope's table and the mmapped block.
        assert_eq!(b.part(PartKind::OtherAnonymous), (3000 - 1000 - 500) * K);
    }

    #[test]
    fn anonymous_memory_merged_after_bss_is_not_data() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        // The .bss after /bin/prog is 4 KiB resident of the 8 KiB mapping:
        // the rest is anonymous memory the kernel merged into it.
        input.object_bss = vec![(0xa000, 0x1000, 4 * K)];
        let b = compute(&input);
        assert_eq!(b.part(PartKind::Data), (8 + 4 + 4 + 12) * K);
        assert_eq!(
            b.part(PartKind::OtherAnonymous),
            (3000 - 1000 - 500 + 4) * K
        );
        assert_eq!(b.sum_of_parts(), b.rss);
    }

    #[test]
    fn a_loaded_objects_file_mapped_again_elsewhere_is_a_file_mapping() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        // libc read again by a symboliser, outside its loaded segments.
        input.mappings.push(map(
            0x7700_0000,
            0x7780_0000,
            "r--p",
            "/lib/libc.so.6",
            2048 * K,
        ));
        input.rss += 2048 * K;
        input.object_segments = vec![(0x1000, 0xa000), (0x7500_0000, 0x7511_0000)];
        let b = compute(&input);
        assert_eq!(b.part(PartKind::Data), (8 + 4 + 8 + 12) * K);
        assert_eq!(b.part(PartKind::FileBacked), (16 + 2048) * K);
    }

    #[test]
    fn a_remainder_is_named_unexplained() {
        let mut input = sample();
        let mapped: u64 = input.mappings.iter().map(|m| m.rss).sum();
        input.rss = mapped + 300 * K;
        let b = compute(&input);
        assert_eq!(b.part(PartKind::Unexplained), 300 * K);
        assert_eq!(b.sum_of_parts(), b.rss);
        assert!(b.render().contains("unexplained"));
    }

    #[test]
    fn another_allocator_counts_live_blocks_out_of_anonymous_memory() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        input.heap.allocator = AllocatorHeap {
            allocator: "jemalloc (statistics not read)".into(),
            ..Default::default()
        };
        input.heap.live.as_mut().unwrap().amount.bytes = 1500 * K;
        let b = compute(&input);
        // No glibc figures: brk's resident bytes are all "free"; the
        // 64 MiB-aligned mapping may be jemalloc's own, so it is anonymous.
        assert_eq!(b.part(PartKind::HeapInUse), 1500 * K);
        assert_eq!(b.part(PartKind::HeapFree), 6000 * K);
        assert_eq!(b.part(PartKind::OtherAnonymous), 2548 * K);
        assert_eq!(b.sum_of_parts(), b.rss);
        assert!(b.notes.iter().any(|n| n.contains("jemalloc")));
    }

    #[test]
    fn jemallocs_statistics_split_anonymous_memory_into_blocks_and_kept_pages() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        let stats = JemallocStats {
            allocated: 1200 * K,
            active: 1300 * K,
            metadata: 60 * K,
            resident: 1700 * K,
            mapped: 2000 * K,
            retained: 9000 * K,
            dirty: 300 * K,
            muzzy: 40 * K,
        };
        input.heap.allocator = AllocatorHeap::from_jemalloc("5.3.0", stats);
        let b = compute(&input);
        // Of the 4048K of other anonymous memory (leakscope's table out, the
        // 64 MiB-aligned NORESERVE mapping in: jemalloc maps so too), 1200K
        // are blocks and 500K kept pages; the rest is something else.
        assert_eq!(b.part(PartKind::HeapInUse), 1200 * K);
        assert_eq!(
            b.part(PartKind::HeapFree),
            // glibc's brk heap (unread beside jemalloc) and jemalloc's kept pages.
            6000 * K + 500 * K
        );
        assert_eq!(b.part(PartKind::OtherAnonymous), 2348 * K);
        assert_eq!(b.sum_of_parts(), b.rss);
        assert_eq!(b.heap.allocator.free_bytes(), 500 * K);
        assert!(b.notes.iter().any(|n| n.contains("dirty")), "{:?}", b.notes);
        let text = b.render();
        assert!(text.contains("jemalloc 5.3.0 (its statistics)"), "{text}");
        // Statistics larger than the anonymous memory are capped by it.
        input.heap.allocator.jemalloc.as_mut().unwrap().resident = 1 << 40;
        let b = compute(&input);
        assert_eq!(b.part(PartKind::OtherAnonymous), 0);
        assert_eq!(b.sum_of_parts(), b.rss);
        assert_eq!(Breakdown::from_json(&b.to_json()).unwrap(), b);
    }

    #[test]
    fn files_round_trip_and_foreign_ones_are_refused() {
        let mut input = sample();
        input.rss = 1 << 30;
        let b = compute(&input);
        assert_eq!(Breakdown::from_json(&b.to_json()).unwrap(), b);
        assert!(matches!(
            Breakdown::from_json("{\"format\":\"x\",\"version\":1}"),
            Err(BreakdownFileError::NotABreakdown)
        ));
        let newer = b.to_json().replace("\"version\": 1", "\"version\": 99");
        assert!(matches!(
            Breakdown::from_json(&newer),
            Err(BreakdownFileError::Version(99))
        ));
    }

    #[test]
    fn growth_is_per_part_largest_first() {
        let mut input = sample();
        input.rss = input.mappings.iter().map(|m| m.rss).sum();
        let first = compute(&input);
        // The arenas' resident memory doubles, nothing more in use.
        input.mappings[4].rss *= 2;
        input.rss += 6000 * K;
        input.time_unix_ms += 10_000;
        let last = compute(&input);
        let g = growth(&first, &last);
        assert_eq!(g[0], (PartKind::HeapFree, (6000 * K) as i64));
        assert!(g[1..].iter().all(|&(_, d)| d == 0));
        let text = render_growth(&first, &last);
        assert!(text.contains("10 s apart") && text.contains("freed, kept"));
        assert!(!text.contains("thread stacks"), "{text}");
    }

    #[test]
    fn fragmentation_is_the_free_share_below_top() {
        let a = ArenaUsage {
            in_use: Amount {
                blocks: 1,
                bytes: 300,
            },
            free_in_bins: Amount {
                blocks: 1,
                bytes: 100,
            },
            top_bytes: 1000,
            ..Default::default()
        };
        assert!((fragmentation(&a) - 0.25).abs() < 1e-9);
        assert_eq!(fragmentation(&ArenaUsage::default()), 0.0);
    }
}
