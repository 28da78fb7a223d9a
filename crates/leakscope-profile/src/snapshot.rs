//! The snapshot file: what a heap snapshot found, in a versioned JSON form
//! that outlives the process (so that `leakscope refs` can read it, and two
//! snapshots can be compared), and the holder-chain ("refs") profile derived
//! from it.

use std::collections::HashMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::builder::Id;
use crate::fields::PinnedField;
use crate::units::{clamp_i64, format_value};
use crate::{pb, ProfileBuilder};

/// The `format` field of every snapshot file.
pub const FORMAT: &str = "leakscope-snapshot";
/// The newest version this code writes and reads.
pub const VERSION: u32 = 1;

/// A count of blocks and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub blocks: u64,
    pub bytes: u64,
}

impl Amount {
    pub fn add(&mut self, bytes: u64) {
        self.blocks = self.blocks.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// What a node of the reference graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A named global variable (a Rust `static`).
    Static,
    /// Words of an object's writable data outside any named variable.
    Data,
    /// A thread's registers.
    Registers,
    /// A thread's thread-local storage.
    ThreadLocal,
    /// A stack frame (or stack words outside any frame).
    Stack,
    /// A heap block.
    Heap,
    /// Links left out of the middle of a long chain (`name` says how many).
    Elided,
}

/// A root or a heap block, named for a reader.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    pub kind: NodeKind,
    /// `myapp::CACHE`, `thread main: myapp::run`, or for a heap block the
    /// function that allocated it.
    pub name: String,
    /// For heap blocks: the allocation stack, leaf first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site: Vec<String>,
    /// For heap blocks: the block's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// How a root in anonymous memory (a mapping the program made itself) is
/// named.
pub const ANONYMOUS_MEMORY: &str = "anonymous memory at ";

impl Node {
    /// A root in anonymous memory: words outside any block of a mapping
    /// nobody names, where a stale pointer is as likely as a live one.
    pub fn is_anonymous_memory(&self) -> bool {
        self.kind == NodeKind::Data && self.name.starts_with(ANONYMOUS_MEMORY)
    }

    /// The label used in chains and the refs profile.
    pub fn label(&self) -> String {
        match self.kind {
            NodeKind::Heap => format!("{} (heap)", self.name),
            NodeKind::Static => format!("static {}", self.name),
            _ => self.name.clone(),
        }
    }
}

/// One link of a reference chain: a node, and where inside it the pointer
/// to the next link sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub node: Node,
    #[serde(default)]
    pub offset: u64,
}

/// A node that keeps memory alive: everything it dominates would be freed
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub node: Node,
    pub retained: Amount,
    /// From a root to the holder (inclusive), shortest.
    pub chain: Vec<Link>,
}

/// Large buffers kept alive by small slices of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinning {
    /// The node that holds the slices (the buffers' dominator).
    pub holder: Node,
    /// Allocation stack of the buffers, leaf first.
    pub buffer_site: Vec<String>,
    pub buffers: Amount,
    /// Bytes the slices actually cover.
    pub slice_bytes: u64,
    /// From a heap walk: the buffers among them whose allocation stack is
    /// known (sampled); `buffer_site` is theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_stacks: Option<Amount>,
    /// From a root to the holder.
    pub chain: Vec<Link>,
    /// Which field of its buffer each buffer's (first) slice is, grouped:
    /// most buffers first (see [`crate::fields`]). Structure only (tags,
    /// paths, offsets), never the buffers' contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<PinnedField>,
}

impl Pinning {
    /// Adds another group's buffers (of the same holder, say: a decode
    /// buffer's first allocation and its growth) to this one, fields merged
    /// by field (most buffers first).
    pub fn absorb(&mut self, other: &Pinning) {
        self.buffers.blocks += other.buffers.blocks;
        self.buffers.bytes += other.buffers.bytes;
        self.slice_bytes += other.slice_bytes;
        for f in &other.fields {
            match self.fields.iter_mut().find(|g| g.field == f.field) {
                Some(g) => {
                    g.buffers += f.buffers;
                    g.bytes += f.bytes;
                    if g.seen_tags.len() < f.seen_tags.len() {
                        g.seen_tags.resize(f.seen_tags.len(), Vec::new());
                    }
                    for (mine, theirs) in g.seen_tags.iter_mut().zip(&f.seen_tags) {
                        mine.extend(theirs);
                        mine.sort_unstable();
                        mine.dedup();
                    }
                    if g.name.is_none() {
                        g.name.clone_from(&f.name);
                    }
                }
                None => self.fields.push(f.clone()),
            }
        }
        self.fields.sort_by_key(|f| std::cmp::Reverse(f.buffers));
    }
}

/// How a group of blocks stands, in Valgrind's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// No pointer to it anywhere.
    DefinitelyLost,
    /// Pointed to only from lost blocks.
    IndirectlyLost,
    /// Reachable only through pointers into its middle.
    PossiblyLost,
    /// Reachable from a root.
    StillReachable,
}

/// Blocks of one kind allocated at one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakGroup {
    pub kind: LeakKind,
    /// Allocation stack, leaf first.
    pub site: Vec<String>,
    pub amount: Amount,
    /// For reachable groups: the chain to the group's largest block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Link>,
    /// From a heap walk, for reachable groups with a stack: the group's
    /// blocks by what holds them directly on their shortest chains, most
    /// bytes first, the first few. One block's chain is a fragile witness
    /// (the block being handled sits in a thread's registers); these say
    /// what keeps most of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<GroupHolder>,
}

/// Blocks of a group held directly by the same kind of holder: a root, or
/// heap blocks of one allocation stack, or, without one, referring to the
/// same thing (a task's vtable, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHolder {
    pub amount: Amount,
    /// The chain to the largest of them reached from the root that reaches
    /// most of them (the block last, its direct holder before it).
    pub chain: Vec<Link>,
}

/// One of the largest live blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeBlock {
    pub size: u64,
    pub kind: LeakKind,
    /// Allocation stack, leaf first.
    pub site: Vec<String>,
    /// From a root to the block (empty if unreachable).
    pub chain: Vec<Link>,
}

/// Bytes reached along one chain of labels (root first), for the refs
/// profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPath {
    pub path: Vec<String>,
    pub amount: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadReport {
    pub tid: i32,
    pub name: String,
    /// False if it did not stop in time (its stack was not scanned).
    pub stopped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub live: Amount,
    pub still_reachable: Amount,
    pub possibly_lost: Amount,
    pub definitely_lost: Amount,
    pub indirectly_lost: Amount,
    /// Tracked entries left out (overlapping another: stale records).
    pub dropped_entries: u64,
    /// Blocks (counted above) part of whose memory could not be read (the
    /// program made its pages inaccessible): what they point to there was
    /// not followed.
    #[serde(default)]
    pub unscanned: Amount,
    /// Blocks held only by leakscope itself (its threads, statics and
    /// frames), left out of everything else.
    #[serde(default)]
    pub leakscope_own: Amount,
    pub scanned_bytes: u64,
    pub edges: u64,
    /// Of the still reachable blocks, those reached only through an
    /// interior pointer one of Valgrind's leak-check heuristics accepted
    /// (the leak check at exit), by heuristic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via_heuristic: Vec<HeuristicAmount>,
}

/// Blocks reached through one leak-check heuristic (Valgrind's name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeuristicAmount {
    pub heuristic: String,
    pub amount: Amount,
}

/// Everything a snapshot found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub format: String,
    pub version: u32,
    pub pid: u32,
    pub time_unix_ms: u64,
    /// The application's progress counter (requests served, say) when the
    /// snapshot was taken; 0 if it reports none.
    #[serde(default)]
    pub progress: u64,
    /// How long the process was stopped.
    pub pause_ms: f64,
    /// How long the analysis took (in the forked child).
    pub analysis_ms: f64,
    pub threads: Vec<ThreadReport>,
    pub totals: Totals,
    pub holders: Vec<Holder>,
    pub pinned: Vec<Pinning>,
    pub groups: Vec<LeakGroup>,
    /// The largest live blocks, largest first.
    #[serde(default)]
    pub largest: Vec<LargeBlock>,
    /// Crates whose frames come from dependencies (registry, vendored or
    /// the Rust distribution), as opposed to the application's own code.
    #[serde(default)]
    pub dependency_crates: Vec<String>,
    /// The version of each registry crate on the allocation stacks, from the
    /// source paths of the debug information (`hyper 1.4.1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_versions: Vec<crate::dependencies::CrateVersion>,
    pub retention: Vec<RetentionPath>,
    /// Where the block set came from.
    #[serde(default)]
    pub blocks_from: BlocksFrom,
    /// Blocks whose allocation stack is known. In full mode every block;
    /// from a heap walk in sampled mode, only the sampled ones: figures
    /// grouped by allocation stack then cover those blocks only.
    #[serde(default)]
    pub with_stacks: Amount,
    /// glibc's heap as the walk found it (heap walks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glibc_heap: Option<GlibcHeap>,
    /// Where the process's RSS went when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::memory::Breakdown>,
}

/// Where a snapshot's blocks came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlocksFrom {
    /// leakscope's live table (full mode): every block with its exact size
    /// and allocation stack.
    #[default]
    LiveTable,
    /// A walk of glibc's heap: every block with its usable size; stacks only
    /// for the blocks the sampler recorded.
    HeapWalk,
    /// A walk of glibc's heap from outside the process (`leakscope attach`,
    /// `leakscope core`): every block with its usable size, no stacks.
    OutsideWalk,
}

impl BlocksFrom {
    /// The blocks come from a walk of glibc's heap (usable sizes; stacks
    /// for sampled blocks at most).
    pub fn is_heap_walk(self) -> bool {
        matches!(self, BlocksFrom::HeapWalk | BlocksFrom::OutsideWalk)
    }
}

/// glibc's heap as the walk found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlibcHeap {
    /// The glibc release, e.g. "2.36".
    pub release: String,
    /// The main arena first.
    pub arenas: Vec<ArenaUsage>,
    /// Chunks mmapped on their own (large blocks), with their mappings' bytes.
    pub mmapped: Amount,
    pub threads_with_tcache: u32,
}

/// What one arena holds, in chunk bytes (headers included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArenaUsage {
    /// Bytes the arena got from the system.
    pub system_bytes: u64,
    pub heaps: u64,
    pub in_use: Amount,
    /// Free chunks in the unsorted, small and large bins.
    pub free_in_bins: Amount,
    pub fast_bins: Amount,
    /// Free chunks parked in threads' caches.
    pub tcache: Amount,
    /// Free memory at the end of the arena's current heap.
    pub top_bytes: u64,
    /// The largest free chunk outside top.
    pub largest_free: u64,
    /// glibc's own chunks (thread caches, heap fenceposts).
    pub internal_bytes: u64,
}

impl ArenaUsage {
    /// Free bytes the arena keeps (bins, fast bins, thread caches, top).
    pub fn free_bytes(&self) -> u64 {
        self.free_in_bins.bytes + self.fast_bins.bytes + self.tcache.bytes + self.top_bytes
    }
}

impl GlibcHeap {
    /// Every arena summed.
    pub fn total(&self) -> ArenaUsage {
        let mut t = ArenaUsage::default();
        for a in &self.arenas {
            t.system_bytes += a.system_bytes;
            t.heaps += a.heaps;
            for (sum, part) in [
                (&mut t.in_use, a.in_use),
                (&mut t.free_in_bins, a.free_in_bins),
                (&mut t.fast_bins, a.fast_bins),
                (&mut t.tcache, a.tcache),
            ] {
                sum.blocks += part.blocks;
                sum.bytes += part.bytes;
            }
            t.top_bytes += a.top_bytes;
            t.largest_free = t.largest_free.max(a.largest_free);
            t.internal_bytes += a.internal_bytes;
        }
        t
    }
}

/// Why a snapshot file could not be read.
#[derive(Debug)]
pub enum SnapshotFileError {
    Json(serde_json::Error),
    NotASnapshot,
    Version(u32),
}

impl std::fmt::Display for SnapshotFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotFileError::Json(e) => write!(f, "not a leakscope snapshot file ({e})"),
            SnapshotFileError::NotASnapshot => write!(f, "not a leakscope snapshot file"),
            SnapshotFileError::Version(v) => {
                write!(
                    f,
                    "snapshot format version {v} is newer than this leakscope reads ({VERSION})"
                )
            }
        }
    }
}

impl std::error::Error for SnapshotFileError {}

impl SnapshotReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a snapshot report always serialises")
    }

    pub fn from_json(text: &str) -> Result<SnapshotReport, SnapshotFileError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u32>,
        }
        let probe: Probe = serde_json::from_str(text).map_err(SnapshotFileError::Json)?;
        if probe.format.as_deref() != Some(FORMAT) {
            return Err(SnapshotFileError::NotASnapshot);
        }
        match probe.version {
            Some(v) if v > VERSION => return Err(SnapshotFileError::Version(v)),
            None => return Err(SnapshotFileError::NotASnapshot),
            _ => {}
        }
        serde_json::from_str(text).map_err(SnapshotFileError::Json)
    }

    /// The holder-chain profile, in the style of Go's goref: each sample's
    /// stack is a reference chain (leaf: the block's allocating function;
    /// then its holders; last: the root), with `inuse_objects` and
    /// `inuse_space`, so pprof tools show retention as they show allocation.
    pub fn refs_profile(&self) -> pb::Profile {
        let mut b = ProfileBuilder::new(
            &[("inuse_objects", "count"), ("inuse_space", "bytes")],
            ("space", "bytes"),
            1,
        );
        b.set_default_sample_type("inuse_space");
        b.set_time_nanos(clamp_i64(self.time_unix_ms).saturating_mul(1_000_000));
        b.add_comment(
            "leakscope refs: stacks are reference chains (leaf: allocating function; root last)",
        );
        if let Some(memory) = &self.memory {
            for line in memory.render().lines() {
                b.add_comment(line);
            }
        }
        let mut locations: HashMap<&str, Id> = HashMap::new();
        for path in &self.retention {
            let ids: Vec<Id> = path
                .path
                .iter()
                .rev()
                .map(|label| {
                    let next = locations.len() as u64 + 1;
                    *locations.entry(label.as_str()).or_insert_with(|| {
                        let f = b.function(label, label, "", 0);
                        b.location(0, next, &[(f, 0)])
                    })
                })
                .collect();
            b.add_sample(
                &ids,
                &[clamp_i64(path.amount.blocks), clamp_i64(path.amount.bytes)],
                &[],
            );
        }
        b.build()
    }

    /// A text report: totals, top holders with chains, pinned buffers, leaks.
    pub fn render(&self, limit: usize) -> String {
        let mut out = String::new();
        let b = |v: u64| format_value(clamp_i64(v), "bytes");
        let t = &self.totals;
        let _ = writeln!(
            out,
            "Heap snapshot of pid {}: {} in {} live blocks (paused {:.1} ms, analysed in {:.1} ms)",
            self.pid,
            b(t.live.bytes),
            t.live.blocks,
            self.pause_ms,
            self.analysis_ms
        );
        for (name, a) in [
            ("still reachable", t.still_reachable),
            ("possibly lost", t.possibly_lost),
            ("indirectly lost", t.indirectly_lost),
            ("definitely lost", t.definitely_lost),
        ] {
            let _ = writeln!(
                out,
                "  {name:<16} {:>10} in {} blocks",
                b(a.bytes),
                a.blocks
            );
        }
        if self.blocks_from == BlocksFrom::HeapWalk {
            let _ = writeln!(
                out,
                "  blocks from a walk of glibc's heap{}: {} of them ({}) have an allocation stack (recorded by leakscope); \
                 figures by allocation stack cover those",
                self.glibc_heap
                    .as_ref()
                    .map_or(String::new(), |h| format!(" (glibc {})", h.release)),
                self.with_stacks.blocks,
                b(self.with_stacks.bytes)
            );
        }
        if self.blocks_from == BlocksFrom::OutsideWalk {
            let _ = writeln!(
                out,
                "  blocks from a walk of glibc's heap{} from outside the process: no allocation stacks (it recorded none)",
                self.glibc_heap
                    .as_ref()
                    .map_or(String::new(), |h| format!(" (glibc {})", h.release)),
            );
        }
        let outside = self.blocks_from == BlocksFrom::OutsideWalk;
        // Where blocks were allocated, when that is known.
        let allocated_in = |site: &[String]| {
            if outside {
                String::new()
            } else {
                format!(" allocated in {}", site.first().map_or("?", String::as_str))
            }
        };
        if t.leakscope_own.blocks > 0 {
            let _ = writeln!(
                out,
                "  leakscope's own: {} in {} blocks (not counted above)",
                b(t.leakscope_own.bytes),
                t.leakscope_own.blocks
            );
        }
        if t.unscanned.blocks > 0 {
            let _ = writeln!(
                out,
                "  not scanned: {} in {} blocks (counted above) whose pages were made unreadable; \
                 what they point to was not followed",
                b(t.unscanned.bytes),
                t.unscanned.blocks
            );
        }
        for th in self.threads.iter().filter(|th| !th.stopped) {
            let _ = writeln!(
                out,
                "  warning: thread {} ({}) did not stop; its stack was not scanned",
                th.name, th.tid
            );
        }
        let _ = writeln!(out, "\nTop holders by retained size:");
        for (i, h) in self.holders.iter().take(limit).enumerate() {
            let _ = writeln!(
                out,
                "{:>3}. {} retains {} in {} blocks",
                i + 1,
                h.node.label(),
                b(h.retained.bytes),
                h.retained.blocks
            );
            let _ = writeln!(out, "     chain: {}", chain_text(&h.chain));
        }
        if !self.pinned.is_empty() {
            let _ = writeln!(out, "\nBuffers pinned by small slices:");
            for p in self.pinned.iter().take(limit) {
                let sampled = p
                    .with_stacks
                    .filter(|_| !outside)
                    .map_or(String::new(), |s| {
                        format!(" ({} of them sampled)", s.blocks)
                    });
                let _ = writeln!(
                    out,
                    "  {} buffers ({}){sampled}{} are kept alive by {} of slices held in {}",
                    p.buffers.blocks,
                    b(p.buffers.bytes),
                    allocated_in(&p.buffer_site),
                    b(p.slice_bytes),
                    p.holder.label()
                );
                for f in p.fields.iter().take(3) {
                    let _ = writeln!(
                        out,
                        "     field: {} ({} of {} buffers)",
                        f.describe(),
                        f.buffers,
                        p.buffers.blocks
                    );
                }
                let _ = writeln!(out, "     chain: {}", chain_text(&p.chain));
            }
        }
        self.render_held_groups(&mut out, limit);
        let lost: Vec<&LeakGroup> = self
            .groups
            .iter()
            .filter(|g| matches!(g.kind, LeakKind::DefinitelyLost | LeakKind::IndirectlyLost))
            .collect();
        if !lost.is_empty() {
            let _ = writeln!(out, "\nUnreachable (leaked) blocks:");
            for g in lost.iter().take(limit) {
                let _ = writeln!(
                    out,
                    "  {:?}: {} in {} blocks{}",
                    g.kind,
                    b(g.amount.bytes),
                    g.amount.blocks,
                    allocated_in(&g.site)
                );
            }
        }
        if let Some(memory) = &self.memory {
            let _ = write!(out, "\n{}", memory.render());
        }
        out
    }

    /// A heap walk's reachable groups (sampled allocation stacks) with what
    /// holds most of each: the holders list of a group says more than one
    /// block's chain, which may start at a worker handling that block.
    fn render_held_groups(&self, out: &mut String, limit: usize) {
        let held: Vec<&LeakGroup> = self
            .groups
            .iter()
            .filter(|g| !g.holders.is_empty())
            .filter(|g| matches!(g.kind, LeakKind::StillReachable | LeakKind::PossiblyLost))
            .collect();
        if held.is_empty() {
            return;
        }
        let b = |v: u64| format_value(clamp_i64(v), "bytes");
        let _ = writeln!(
            out,
            "\nBlocks with an allocation stack, by stack, and what holds them directly:"
        );
        for g in held.iter().take(limit) {
            let _ = writeln!(
                out,
                "  {} in {} blocks with a stack, allocated in {}",
                b(g.amount.bytes),
                g.amount.blocks,
                g.site.first().map_or("?", String::as_str)
            );
            for h in &g.holders {
                let holder = h
                    .chain
                    .len()
                    .checked_sub(2)
                    .map_or_else(|| "a root".to_string(), |i| h.chain[i].node.label());
                let _ = writeln!(
                    out,
                    "     {} in {} blocks held by {holder}; chain: {}",
                    b(h.amount.bytes),
                    h.amount.blocks,
                    chain_text(&h.chain)
                );
            }
        }
    }
}

/// `root -> ... -> holder`, with offsets.
pub fn chain_text(chain: &[Link]) -> String {
    chain
        .iter()
        .map(|l| {
            if l.offset > 0 {
                format!("{} [+{}]", l.node.label(), l.offset)
            } else {
                l.node.label()
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> SnapshotReport {
        let stat = Node {
            kind: NodeKind::Static,
            name: "app::CACHE".into(),
            site: vec![],
            size: None,
        };
        let table = Node {
            kind: NodeKind::Heap,
            name: "app::remember".into(),
            site: vec!["app::remember".into(), "app::main".into()],
            size: Some(1024),
        };
        SnapshotReport {
            format: FORMAT.into(),
            version: VERSION,
            pid: 42,
            time_unix_ms: 1_700_000_000_000,
            progress: 0,
            pause_ms: 1.5,
            analysis_ms: 20.0,
            threads: vec![ThreadReport {
                tid: 42,
                name: "main".into(),
                stopped: true,
            }],
            totals: Totals {
                live: Amount {
                    blocks: 3,
                    bytes: 2048,
                },
                ..Totals::default()
            },
            holders: vec![Holder {
                node: stat.clone(),
                retained: Amount {
                    blocks: 2,
                    bytes: 2000,
                },
                chain: vec![Link {
                    node: stat.clone(),
                    offset: 0,
                }],
            }],
            pinned: vec![],
            groups: vec![],
            largest: vec![],
            dependency_crates: vec![],
            dependency_versions: vec![],
            retention: vec![RetentionPath {
                path: vec![stat.label(), table.label()],
                amount: Amount {
                    blocks: 1,
                    bytes: 1024,
                },
            }],
            blocks_from: BlocksFrom::LiveTable,
            with_stacks: Amount {
                blocks: 3,
                bytes: 2048,
            },
            glibc_heap: None,
            memory: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let r = sample();
        assert_eq!(SnapshotReport::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn text_names_what_holds_a_walked_group() {
        let mut r = sample();
        let chain = r.holders[0].chain.clone();
        let block = Link {
            node: Node {
                kind: NodeKind::Heap,
                name: "app::remember".into(),
                site: vec!["app::remember".into()],
                size: Some(64),
            },
            offset: 0,
        };
        let amount = |blocks, bytes| Amount { blocks, bytes };
        r.groups.push(LeakGroup {
            kind: LeakKind::StillReachable,
            site: vec!["app::remember".into()],
            amount: amount(40, 2560),
            chain: vec![],
            holders: vec![GroupHolder {
                amount: amount(39, 2496),
                chain: [chain.clone(), vec![block]].concat(),
            }],
        });
        let text = r.render(5);
        assert!(
            text.contains("2.50kB in 40 blocks with a stack, allocated in app::remember"),
            "{text}"
        );
        assert!(
            text.contains("in 39 blocks held by static app::CACHE"),
            "{text}"
        );
        // A group without holders (full mode) adds no section.
        r.groups[0].holders.clear();
        assert!(!r.render(5).contains("what holds them"));
    }

    #[test]
    fn refuses_other_files_and_newer_versions() {
        assert!(matches!(
            SnapshotReport::from_json("{}"),
            Err(SnapshotFileError::NotASnapshot)
        ));
        assert!(matches!(
            SnapshotReport::from_json("not json"),
            Err(SnapshotFileError::Json(_))
        ));
        let mut newer = sample();
        newer.version = VERSION + 1;
        assert!(matches!(
            SnapshotReport::from_json(&newer.to_json()),
            Err(SnapshotFileError::Version(_))
        ));
    }

    #[test]
    fn absorbing_a_group_merges_its_fields() {
        use crate::fields::{Content, FieldExample, FieldRef, Framing, PinnedField};
        let field = |tags: Vec<u32>, buffers: u64, seen: Vec<u32>| PinnedField {
            field: FieldRef {
                framing: Framing::Grpc,
                content: Content::Protobuf,
                tags,
                wire_type: None,
                json_path: None,
                json_key: false,
                http_part: None,
            },
            buffers,
            bytes: buffers * 8192,
            example: FieldExample::default(),
            seen_tags: vec![seen],
            name: None,
        };
        let node = sample().holders[0].node.clone();
        let group = |fields: Vec<PinnedField>| Pinning {
            holder: node.clone(),
            buffer_site: vec![],
            buffers: Amount {
                blocks: fields.iter().map(|f| f.buffers).sum(),
                bytes: fields.iter().map(|f| f.bytes).sum(),
            },
            slice_bytes: 10,
            with_stacks: None,
            chain: vec![],
            fields,
        };
        let mut a = group(vec![field(vec![2], 3, vec![1, 2])]);
        let b = group(vec![
            field(vec![3], 1, vec![3]),
            field(vec![2], 4, vec![2, 5]),
        ]);
        a.absorb(&b);
        assert_eq!(a.buffers.blocks, 8);
        assert_eq!(a.slice_bytes, 20);
        assert_eq!(a.fields.len(), 2);
        assert_eq!(
            (a.fields[0].field.tags.as_slice(), a.fields[0].buffers),
            (&[2][..], 7)
        );
        assert_eq!(a.fields[0].seen_tags, [vec![1, 2, 5]]);
        assert_eq!(a.fields[1].buffers, 1);
    }

    #[test]
    fn refs_profile_puts_the_root_last() {
        let p = sample().refs_profile();
        let view = crate::StackView::new(&p);
        let names: Vec<&str> = view.function_names(&view.samples[0]).collect();
        assert_eq!(names, ["app::remember (heap)", "static app::CACHE"]);
        assert_eq!(view.samples[0].values, [1, 1024]);
    }
}
