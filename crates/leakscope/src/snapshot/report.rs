//! Naming what the child found: roots by variable, thread and frame; heap
//! blocks by where they were allocated. Builds the [`SnapshotReport`] and
//! answers questions about single blocks.

/// Maps keyed by small numbers (sites, nodes, labels), looked up for every
/// block of the heap: a hash of a few instructions (FxHash), not SipHash,
/// which cost 2M-block reports a fifth of their time. The keys come from
/// the analysis, not from anyone choosing them to collide.
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

use leakscope_profile::dependencies::CrateVersion;
use leakscope_profile::snapshot::{
    Amount, ArenaUsage, BlocksFrom, GlibcHeap, GroupHolder, HeuristicAmount, Holder, LargeBlock,
    LeakGroup, LeakKind, Link, Node, NodeKind, Pinning, RetentionPath, SnapshotReport,
    ThreadReport, Totals, FORMAT, VERSION,
};

use super::blocks::{BlockSource, NO_SITE};
use super::child::flags;
use super::fields::model::FieldGroups;
use super::glibc::HeapStats;
use super::graph::NONE;
use super::modules::Modules;
use super::threads::ThreadInfo;
use super::wire::{BlockOut, BlockRecords, FieldOut, Header, RootKind, RootOut};
use crate::collect::stack_table::SiteId;
use crate::collect::STACKS;
use crate::config::Heuristics;
use crate::export::stacks::{call_site, Symbols};

/// The name of a heap block whose allocation stack was not recorded (heap
/// walks outside full mode).
const NOT_SAMPLED: &str = "(allocation stack not sampled)";
/// A block of another process's heap (it recorded no stacks).
const OUTSIDE_BLOCK: &str = "(heap block)";

/// Holders listed in a report.
const TOP_HOLDERS: usize = 25;
/// Holders listed per site group of a heap walk.
const TOP_GROUP_HOLDERS: usize = 3;
/// Longest chain kept in retention paths and holder chains: longer ones keep
/// their first [`HEAD`] links (from the root) and their last
/// `MAX_PATH - HEAD - 1`, with one elision link between.
const MAX_PATH: usize = 32;
const HEAD: u32 = 8;
const TAIL: usize = MAX_PATH - HEAD as usize - 1;

/// What holds a block directly, as a reader tells holders apart: a root, or
/// a heap block of some allocation site (a reader's key; `u32::MAX` for
/// none) and, for one without, what it refers to (a task's vtable, say).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum DirectHolder<'a> {
    Root(u32),
    Heap(u32, Option<&'a str>),
}

/// The child's results with names attached.
pub(crate) struct Resolved {
    roots: Vec<RootOut>,
    blocks: BlockRecords,
    /// Which field of its buffer each pinned block's slice is, in block
    /// order.
    fields: Vec<FieldOut>,
    root_nodes: Vec<Node>,
    site_names: HashMap<SiteId, Vec<String>>,
    /// For blocks without a stack: what the word they refer to names (see
    /// `BlockOut::refers_to`), by target address.
    referred_names: HashMap<u64, String>,
    /// Sites whose stacks read the same (after symbolisation and trimming)
    /// share a key: reports group by what a reader sees.
    site_key: HashMap<SiteId, u32>,
    dependency_crates: Vec<String>,
    dependency_versions: Vec<CrateVersion>,
    first_block: u32,
    /// Per node: links from the super-root along parents (roots are at 1),
    /// 0 when unreached.
    depth: Vec<u32>,
    /// Per node: its ancestor at depth [`HEAD`] (`NONE` if not that deep),
    /// so a chain's head is found without walking its whole length.
    head: Vec<u32>,
    /// Steps taken to find depths (linear in the blocks).
    pub(crate) naming_steps: u64,
    /// Another process's snapshot without its own live table (its heap
    /// walked from outside: no allocation stacks at all).
    outside: bool,
}

/// One word of this process's memory, if readable (`process_vm_readv`
/// on itself: an object unloaded since the snapshot gives `None`, not a
/// fault).
fn read_own_word(addr: u64) -> Option<u64> {
    let mut word = 0u64;
    let local = libc::iovec {
        iov_base: (&raw mut word).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: `local` is our own 8-byte buffer; the kernel checks the
    // remote range and fails with EFAULT instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == 8).then_some(word)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whose code the snapshot's addresses are: this process's (symbolised
/// through its own maps), or another's, from its object files.
pub(crate) enum CodeOf<'a> {
    ThisProcess,
    Objects {
        code: &'a [crate::export::symbolize::ObjectCode<'a>],
        /// The allocation stacks of the image's sites, when its own live
        /// table was read (an instrumented target).
        sites: Option<&'a std::collections::HashMap<SiteId, Vec<usize>>>,
    },
}

impl Resolved {
    pub(crate) fn new(
        roots: Vec<RootOut>,
        blocks: BlockRecords,
        fields: Vec<FieldOut>,
        modules: &Modules,
        threads: &[ThreadInfo],
        code: CodeOf<'_>,
    ) -> Resolved {
        let mut sites: Vec<SiteId> = blocks.iter().map(|b| b.site).collect();
        sites.sort_unstable();
        sites.dedup();
        // Frames in code unloaded since they were captured are marked (and
        // stay unknown).
        let site_frames: HashMap<SiteId, Vec<usize>> = match code {
            CodeOf::ThisProcess => sites
                .iter()
                .filter(|&&s| s < STACKS.len())
                .map(|&s| (s, STACKS.record(s).frames_now()))
                .collect(),
            CodeOf::Objects {
                sites: Some(known), ..
            } => sites
                .iter()
                .filter_map(|s| Some((*s, known.get(s)?.clone())))
                .collect(),
            CodeOf::Objects { sites: None, .. } => HashMap::default(),
        };
        let stacks: Vec<&[usize]> = site_frames.values().map(Vec::as_slice).collect();
        let frame_pcs = roots
            .iter()
            .filter(|r| r.kind == RootKind::StackFrame && r.pc != 0)
            .map(|r| {
                if r.frame == 0 {
                    r.pc
                } else {
                    call_site(r.pc as usize)
                }
            });
        let outside = matches!(code, CodeOf::Objects { .. });
        // What blocks without a stack refer to: the first word at each
        // target (a vtable's first entry is a function), read from this
        // process's own copy of the object's segments.
        let referred: Vec<(u64, u64)> = if outside {
            Vec::new()
        } else {
            let mut targets: Vec<u64> = blocks
                .iter()
                .filter(|b| b.site == NO_SITE && b.refers_to != 0)
                .map(|b| b.refers_to)
                .collect();
            targets.sort_unstable();
            targets.dedup();
            // Only words that are code: a vtable's entries are functions;
            // anything else the nearest symbol would misname.
            let code = if targets.is_empty() {
                Vec::new()
            } else {
                crate::export::maps::executable_mappings()
            };
            targets
                .into_iter()
                .filter_map(|t| read_own_word(t).map(|w| (t, w)))
                .filter(|&(_, w)| code.iter().any(|m| m.start <= w && w < m.end))
                .collect()
        };
        let frame_pcs = frame_pcs.chain(referred.iter().map(|&(_, w)| w));
        let symbols = match code {
            CodeOf::ThisProcess => Symbols::for_stacks_and_code(stacks.iter().copied(), frame_pcs),
            CodeOf::Objects { code: objects, .. } => Symbols::for_code_in_objects(
                frame_pcs.chain(stacks.iter().flat_map(|s| s.iter().map(|&r| call_site(r)))),
                objects,
            ),
        };
        let referred_names: HashMap<u64, String> = referred
            .iter()
            .filter_map(|&(target, word)| {
                let named = symbols.at(word).last().map(|f| f.name.clone())?;
                Some((target, named))
            })
            .collect();
        let site_names: HashMap<SiteId, Vec<String>> = sites
            .iter()
            .filter(|s| site_frames.contains_key(s))
            .map(|&s| (s, symbols.names(&site_frames[&s])))
            .collect();
        let dependencies = symbols.dependency_crates(
            sites
                .iter()
                .filter_map(|s| site_frames.get(s))
                .map(Vec::as_slice),
        );
        let dependency_crates = dependencies.crates.into_iter().collect();
        let dependency_versions = dependencies.versions.into_iter().collect();
        let mut keys: HashMap<&Vec<String>, u32> = HashMap::default();
        let site_key = site_names
            .iter()
            .map(|(&site, names)| {
                let next = keys.len() as u32;
                (site, *keys.entry(names).or_insert(next))
            })
            .collect();
        let thread_name = |i: u32| {
            threads.get(i as usize).map_or_else(
                || format!("#{i}"),
                |t| {
                    if t.name.is_empty() {
                        format!("{}", t.tid)
                    } else {
                        t.name.clone()
                    }
                },
            )
        };
        let root_nodes = roots
            .iter()
            .map(|r| {
                let (kind, name) = match r.kind {
                    RootKind::Variable => (
                        NodeKind::Static,
                        modules
                            .variables
                            .get(r.index as usize)
                            .map_or_else(|| "?".into(), |v| v.name.clone()),
                    ),
                    RootKind::Segment => {
                        let module = modules
                            .segments
                            .get(r.index as usize)
                            .and_then(|s| modules.paths.get(s.module as usize))
                            .map_or("?", |p| basename(p));
                        (NodeKind::Data, format!("data of {module}"))
                    }
                    RootKind::Registers => (
                        NodeKind::Registers,
                        format!("registers of thread {}", thread_name(r.index)),
                    ),
                    RootKind::ThreadLocal => (
                        NodeKind::ThreadLocal,
                        format!("thread-locals of thread {}", thread_name(r.index)),
                    ),
                    RootKind::StackOther => (
                        NodeKind::Stack,
                        format!("stack of thread {}", thread_name(r.index)),
                    ),
                    RootKind::StackFrame => {
                        let pc = if r.frame == 0 {
                            r.pc
                        } else {
                            call_site(r.pc as usize)
                        };
                        let frames = symbols.at(pc);
                        // The innermost frame that is not the standard
                        // library's (a frame inside Vec::push is the caller's).
                        let f = frames
                            .iter()
                            .find(|f| !crate::export::symbolize::is_standard_library(f))
                            .or(frames.first());
                        let function = f.map_or_else(|| format!("{pc:#x}"), |f| f.name.clone());
                        (
                            NodeKind::Stack,
                            format!("thread {}: {function}", thread_name(r.index)),
                        )
                    }
                    RootKind::Anonymous => (
                        NodeKind::Data,
                        format!(
                            "{}{:#x} ({})",
                            leakscope_profile::snapshot::ANONYMOUS_MEMORY,
                            r.start,
                            leakscope_profile::units::format_value(
                                leakscope_profile::units::clamp_i64(r.end - r.start),
                                "bytes"
                            )
                        ),
                    ),
                    RootKind::Unused => (NodeKind::Data, String::new()),
                };
                Node {
                    kind,
                    name,
                    site: Vec::new(),
                    size: None,
                }
            })
            .collect();
        let first_block = roots.len() as u32;
        let (depth, head, naming_steps) = depths(first_block, &blocks);
        Resolved {
            roots,
            blocks,
            fields,
            root_nodes,
            site_names,
            referred_names,
            site_key,
            dependency_crates,
            dependency_versions,
            first_block,
            depth,
            head,
            naming_steps,
            // With the target's own table read, blocks have stacks as in a
            // walk of this process's heap.
            outside: matches!(code, CodeOf::Objects { sites: None, .. }),
        }
    }

    fn block_node(&self, i: usize) -> Node {
        let b = &self.blocks[i];
        let site = self.site_names.get(&b.site).cloned().unwrap_or_default();
        let unknown = match (b.site == NO_SITE, self.outside) {
            (true, true) => OUTSIDE_BLOCK,
            (true, false) => NOT_SAMPLED,
            _ => "?",
        };
        let name = match (site.first(), self.referred_names.get(&b.refers_to)) {
            (Some(allocated_at), _) => allocated_at.clone(),
            (None, Some(what)) => format!("{unknown}, refers to {what}"),
            (None, None) => unknown.into(),
        };
        Node {
            kind: NodeKind::Heap,
            name,
            site: site.into_iter().take(16).collect(),
            size: Some(b.size),
        }
    }

    fn node(&self, n: u32) -> Node {
        if n >= self.first_block {
            self.block_node((n - self.first_block) as usize)
        } else {
            self.root_nodes[n as usize].clone()
        }
    }

    fn parent(&self, n: u32) -> u32 {
        if n >= self.first_block {
            self.blocks[(n - self.first_block) as usize].parent
        } else {
            0
        }
    }

    /// The nodes of the shortest chain from a root to node `n` (inclusive),
    /// root first; the middle of a chain longer than [`MAX_PATH`] is one
    /// `Err(links left out)`. Costs at most `MAX_PATH` steps, however deep.
    fn chain_nodes(&self, n: u32) -> Vec<Result<u32, u32>> {
        let depth = self.depth[n as usize];
        let mut tail = Vec::with_capacity(MAX_PATH);
        let mut at = n;
        let keep = if depth as usize > MAX_PATH {
            TAIL
        } else {
            depth as usize
        };
        while tail.len() < keep && at != 0 && at != NONE {
            tail.push(Ok(at));
            at = self.parent(at);
        }
        if depth as usize > MAX_PATH {
            let mut head = Vec::with_capacity(HEAD as usize);
            let mut at = self.head[n as usize];
            while at != 0 && at != NONE {
                head.push(Ok(at));
                at = self.parent(at);
            }
            tail.push(Err(depth - HEAD - TAIL as u32));
            tail.extend(head);
        }
        tail.reverse();
        tail
    }

    /// The shortest chain from a root to node `n` (inclusive), elided in the
    /// middle when long.
    fn chain(&self, n: u32) -> Vec<Link> {
        let nodes = self.chain_nodes(n);
        let mut links: Vec<Link> = Vec::with_capacity(nodes.len());
        for (i, step) in nodes.iter().enumerate() {
            // The offset inside this node of the pointer to the next one.
            let offset = match nodes.get(i + 1) {
                Some(&Ok(next)) if next >= self.first_block => {
                    u64::from(self.blocks[(next - self.first_block) as usize].parent_offset)
                }
                _ => 0,
            };
            let node = match *step {
                Ok(m) => self.node(m),
                Err(left_out) => elided(left_out),
            };
            links.push(Link { node, offset });
        }
        links
    }

    /// The index of the program's block containing `addr` (leakscope's own
    /// blocks are not the program's).
    pub(crate) fn block_index(&self, addr: u64) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.addr <= addr)
            .checked_sub(1)?;
        let b = &self.blocks[i];
        ((addr == b.addr || addr < b.addr + b.size) && b.flags & flags::OWN == 0).then_some(i)
    }

    pub(crate) fn block(&self, i: usize) -> &BlockOut {
        &self.blocks[i]
    }

    /// The field record of pinned block `i`, if it has one.
    fn field_of(&self, i: usize) -> Option<&FieldOut> {
        let k = self.fields.partition_point(|f| (f.block as usize) < i);
        self.fields.get(k).filter(|f| f.block as usize == i)
    }

    pub(crate) fn block_kind(&self, i: usize) -> LeakKind {
        let f = self.blocks[i].flags;
        if f & flags::DEFINITELY_LOST != 0 {
            LeakKind::DefinitelyLost
        } else if f & flags::INDIRECTLY_LOST != 0 {
            LeakKind::IndirectlyLost
        } else if f & flags::POSSIBLY_LOST != 0 {
            LeakKind::PossiblyLost
        } else {
            LeakKind::StillReachable
        }
    }

    pub(crate) fn block_chain(&self, i: usize) -> Vec<Link> {
        if self.blocks[i].parent == NONE {
            return Vec::new();
        }
        self.chain(self.first_block + i as u32)
    }

    /// The node that dominates block `i` (its immediate dominator).
    pub(crate) fn block_holder(&self, i: usize) -> Option<Node> {
        let d = self.blocks[i].idom;
        (d != NONE && d != 0).then(|| self.node(d))
    }

    fn retained_of(&self, n: u32) -> Amount {
        if n >= self.first_block {
            let b = &self.blocks[(n - self.first_block) as usize];
            Amount {
                blocks: u64::from(b.retained_blocks),
                bytes: b.retained,
            }
        } else {
            let r = &self.roots[n as usize];
            Amount {
                blocks: u64::from(r.retained_blocks),
                bytes: r.retained,
            }
        }
    }

    /// The root at the head of node `n`'s shortest chain (`None` if
    /// unreached); at most [`HEAD`] steps, however deep.
    fn root_of(&self, n: u32) -> Option<u32> {
        let mut at = if self.depth[n as usize] > HEAD {
            self.head[n as usize]
        } else {
            n
        };
        for _ in 0..=HEAD {
            if at == NONE || at == 0 {
                return None;
            }
            if at < self.first_block {
                return Some(at);
            }
            at = self.parent(at);
        }
        None
    }

    /// What holds block `i` directly, on its shortest chain, as
    /// [`DirectHolder`] tells holders apart.
    fn direct_holder(&self, i: usize, key: impl Fn(SiteId) -> u32) -> Option<DirectHolder<'_>> {
        let p = self.blocks[i].parent;
        if p == NONE || p == 0 {
            None
        } else if p < self.first_block {
            Some(DirectHolder::Root(p))
        } else {
            let holder = &self.blocks[(p - self.first_block) as usize];
            let refers_to = (holder.site == NO_SITE)
                .then(|| self.referred_names.get(&holder.refers_to))
                .flatten()
                .map(String::as_str);
            Some(DirectHolder::Heap(key(holder.site), refers_to))
        }
    }

    fn idom(&self, n: u32) -> u32 {
        if n >= self.first_block {
            self.blocks[(n - self.first_block) as usize].idom
        } else {
            0
        }
    }

    /// The labels of `n`'s chain, as ids into `labels` (interned per
    /// allocation site or root, so a million blocks of one site cost one
    /// label).
    fn label_path(&self, n: u32, labels: &mut Labels) -> Vec<u32> {
        self.chain_nodes(n)
            .into_iter()
            .map(|step| match step {
                Ok(m) => labels.of(self, m),
                Err(_) => labels.elision(),
            })
            .collect()
    }

    pub(crate) fn report(&self, header: &Header, meta: ReportMeta<'_>) -> SnapshotReport {
        let mut totals = Totals {
            dropped_entries: u64::from(header.dropped_blocks),
            scanned_bytes: header.scanned_bytes,
            edges: header.edges,
            ..Totals::default()
        };
        let mut groups: HashMap<(LeakKind, u32), (Amount, usize)> = HashMap::default();
        // From a heap walk: the reachable blocks with a stack of each group
        // by root and direct holder, with the largest of each (blocks by
        // root: a list of tasks is reached from many roots, each task
        // from whichever is nearest).
        type HolderKey<'a> = ((LeakKind, u32), u32, DirectHolder<'a>);
        let mut group_holders: HashMap<HolderKey<'_>, (Amount, usize)> = HashMap::default();
        // Pinned buffers by holder and allocation stack; from a heap walk,
        // where most buffers have no stack, by holder alone, with the
        // sampled ones' stack (the largest's) standing for the group.
        // Per group: buffers, slice bytes, example block, buffers with
        // stacks, fields.
        let walked = meta.source != BlockSource::LiveTable;
        type PinGroup = (Amount, u64, usize, Amount, FieldGroups);
        let mut pinned: HashMap<(u32, u32), PinGroup> = HashMap::default();
        let mut with_stacks = Amount::default();
        // Pinned blocks with a field: (block, group, field).
        let mut block_fields = Vec::new();
        let key = |site: SiteId| self.site_key.get(&site).copied().unwrap_or(u32::MAX);
        for (i, b) in self.blocks.iter().enumerate() {
            if b.flags & flags::OWN != 0 {
                totals.leakscope_own.add(b.size);
                continue;
            }
            totals.live.add(b.size);
            if b.flags & flags::UNSCANNED != 0 {
                totals.unscanned.add(b.size);
            }
            let heuristic = (b.flags >> flags::HEURISTIC_SHIFT) & 0xf;
            if let Some(&(_, name)) = Heuristics::NAMES
                .iter()
                .find(|&&(bit, _)| u32::from(bit) == heuristic)
            {
                match totals
                    .via_heuristic
                    .iter_mut()
                    .find(|h| h.heuristic == name)
                {
                    Some(h) => h.amount.add(b.size),
                    None => {
                        let mut amount = Amount::default();
                        amount.add(b.size);
                        totals.via_heuristic.push(HeuristicAmount {
                            heuristic: name.to_string(),
                            amount,
                        });
                    }
                }
            }
            let kind = self.block_kind(i);
            match kind {
                LeakKind::DefinitelyLost => totals.definitely_lost.add(b.size),
                LeakKind::IndirectlyLost => totals.indirectly_lost.add(b.size),
                LeakKind::PossiblyLost => totals.possibly_lost.add(b.size),
                LeakKind::StillReachable => totals.still_reachable.add(b.size),
            }
            let g = groups
                .entry((kind, key(b.site)))
                .or_insert((Amount::default(), i));
            g.0.add(b.size);
            if b.size > self.blocks[g.1].size {
                g.1 = i;
            }
            if b.site != NO_SITE {
                with_stacks.add(b.size);
            }
            if walked
                && b.site != NO_SITE
                && matches!(kind, LeakKind::StillReachable | LeakKind::PossiblyLost)
            {
                let n = self.first_block + i as u32;
                if let (Some(root), Some(direct)) = (self.root_of(n), self.direct_holder(i, key)) {
                    let h = group_holders
                        .entry(((kind, key(b.site)), root, direct))
                        .or_insert((Amount::default(), i));
                    h.0.add(b.size);
                    if b.size > self.blocks[h.1].size {
                        h.1 = i;
                    }
                }
            }
            if b.flags & flags::PINNED != 0 {
                // By the holder its chain ends in (the shortest chain,
                // statics first), which holds a view of it: its dominator
                // is higher up when a stale word elsewhere also points to
                // it.
                let group = (b.parent, if walked { 0 } else { key(b.site) });
                let p = pinned.entry(group).or_insert((
                    Amount::default(),
                    0,
                    i,
                    Amount::default(),
                    FieldGroups::default(),
                ));
                p.0.add(b.size);
                p.1 += b.view_bytes;
                if b.site != NO_SITE {
                    p.3.add(b.size);
                    let example = &self.blocks[p.2];
                    if example.site == NO_SITE || b.size > example.size {
                        p.2 = i;
                    }
                }
                if let Some(f) = self.field_of(i) {
                    block_fields.push((i, group, p.4.add(&f.field, b.size)));
                }
            }
        }
        // In Valgrind's order of the heuristics.
        totals.via_heuristic.sort_by_key(|h| {
            Heuristics::NAMES
                .iter()
                .position(|&(_, name)| name == h.heuristic)
        });

        // Holders: roots and heap containers by retained bytes; a node that
        // adds little to a dominator already listed is left out (it shows in
        // that holder's chain).
        let mut candidates: Vec<u32> = (1..self.first_block)
            .filter(|&r| self.roots[r as usize].retained_blocks > 0)
            .chain(
                self.blocks
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.retained_blocks >= 2)
                    .map(|(i, _)| self.first_block + i as u32),
            )
            .collect();
        candidates.sort_by_key(|&n| std::cmp::Reverse(self.retained_of(n).bytes));
        let mut chosen: Vec<u32> = Vec::new();
        for n in candidates {
            if chosen.len() == TOP_HOLDERS {
                break;
            }
            let kept = self.retained_of(n).bytes;
            let d = self.idom(n);
            if chosen.contains(&d) && kept * 10 >= self.retained_of(d).bytes * 9 {
                continue;
            }
            chosen.push(n);
        }
        let holders = chosen
            .iter()
            .map(|&n| Holder {
                node: self.node(n),
                retained: self.retained_of(n),
                chain: self.chain(n),
            })
            .collect();

        let mut pinned: Vec<((u32, u32), Pinning)> = pinned
            .into_iter()
            .map(
                |(group, (buffers, slice_bytes, example, sampled, fields))| {
                    let mut p = Pinning {
                        holder: self.node(group.0),
                        buffer_site: self.block_node(example).site,
                        buffers,
                        slice_bytes,
                        with_stacks: walked.then_some(sampled),
                        chain: self.chain(group.0),
                        fields: fields.into_sorted(),
                    };
                    crate::descriptors::with_registered(|schema| {
                        leakscope_profile::fields::naming::name_pinning(&mut p, schema)
                    });
                    (group, p)
                },
            )
            .collect();
        pinned.sort_by_key(|(_, p)| std::cmp::Reverse(p.buffers.bytes));
        // In the refs profile, a pinned buffer's chain passes through the
        // field its slice is: `… -> holder -> [slice: field] -> buffer`.
        let mut slice_labels: HashMap<usize, String> = HashMap::default();
        for (i, group, field) in block_fields {
            let text = pinned
                .iter()
                .find(|(g, _)| *g == group)
                .and_then(|(_, p)| p.fields.iter().find(|f| f.field == field))
                // pprof tools cut parenthesised parts out of function
                // names: none in this label.
                .map(|f| {
                    let text = f.describe().replace(" (", ", ").replace(['(', ')'], "");
                    format!("[slice: {text}]")
                });
            if let Some(text) = text {
                slice_labels.insert(i, text);
            }
        }
        let pinned: Vec<Pinning> = pinned.into_iter().map(|(_, p)| p).collect();

        // Per group and direct holder: the blocks, and of the root reaching
        // most of them (its bytes), the largest block.
        type ByDirect<'a> = HashMap<DirectHolder<'a>, (Amount, u64, usize)>;
        let mut holders_of: HashMap<(LeakKind, u32), ByDirect<'_>> = HashMap::default();
        for ((group, _, direct), (amount, largest)) in group_holders {
            let h = holders_of
                .entry(group)
                .or_default()
                .entry(direct)
                .or_insert((Amount::default(), 0, largest));
            h.0.blocks += amount.blocks;
            h.0.bytes += amount.bytes;
            if (amount.bytes, std::cmp::Reverse(largest)) > (h.1, std::cmp::Reverse(h.2)) {
                h.1 = amount.bytes;
                h.2 = largest;
            }
        }
        let mut groups: Vec<LeakGroup> = groups
            .into_iter()
            .map(|(group, (amount, largest))| {
                let kind = group.0;
                let mut held: Vec<(Amount, u64, usize)> = holders_of
                    .remove(&group)
                    .map(|by_direct| by_direct.into_values().collect())
                    .unwrap_or_default();
                held.sort_by_key(|&(a, _, i)| (std::cmp::Reverse(a.bytes), i));
                LeakGroup {
                    kind,
                    site: self.block_node(largest).site,
                    amount,
                    chain: if matches!(kind, LeakKind::StillReachable | LeakKind::PossiblyLost) {
                        self.block_chain(largest)
                    } else {
                        Vec::new()
                    },
                    holders: held
                        .into_iter()
                        .take(TOP_GROUP_HOLDERS)
                        .map(|(amount, _, i)| GroupHolder {
                            amount,
                            chain: self.block_chain(i),
                        })
                        .collect(),
                }
            })
            .collect();
        groups.sort_by_key(|g| (g.kind as u8, std::cmp::Reverse(g.amount.bytes)));

        let mut labels = Labels::default();
        let mut retention: HashMap<Vec<u32>, Amount> = HashMap::default();
        for (i, b) in self.blocks.iter().enumerate() {
            if b.parent == NONE {
                continue;
            }
            let mut path = self.label_path(self.first_block + i as u32, &mut labels);
            if let Some(text) = slice_labels.get(&i) {
                let at = path.len().saturating_sub(1);
                path.insert(at, labels.named(text));
            }
            retention.entry(path).or_default().add(b.size);
        }
        let retention = retention.into_iter().map(|(path, amount)| {
            let path = path
                .iter()
                .map(|&l| labels.names[l as usize].clone())
                .collect();
            (path, amount)
        });
        let mut retention: Vec<RetentionPath> = retention
            .map(|(path, amount)| RetentionPath { path, amount })
            .collect();
        retention.sort_by(|a, b| {
            b.amount
                .bytes
                .cmp(&a.amount.bytes)
                .then_with(|| a.path.cmp(&b.path))
        });

        let mut by_size: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| self.blocks[i].flags & flags::OWN == 0)
            .collect();
        by_size.sort_by_key(|&i| std::cmp::Reverse(self.blocks[i].size));
        let largest = by_size
            .into_iter()
            .take(10)
            .map(|i| LargeBlock {
                size: self.blocks[i].size,
                kind: self.block_kind(i),
                site: self.block_node(i).site,
                chain: self.block_chain(i),
            })
            .collect();

        SnapshotReport {
            format: FORMAT.into(),
            version: VERSION,
            pid: std::process::id(),
            time_unix_ms: meta.time_unix_ms,
            progress: crate::collect::progress(),
            pause_ms: meta.pause.as_secs_f64() * 1e3,
            analysis_ms: header.analysis_ns as f64 / 1e6,
            threads: meta.threads.to_vec(),
            totals,
            holders,
            pinned,
            groups,
            largest,
            dependency_crates: self.dependency_crates.clone(),
            dependency_versions: self.dependency_versions.clone(),
            retention,
            blocks_from: if self.outside {
                BlocksFrom::OutsideWalk
            } else if walked {
                BlocksFrom::HeapWalk
            } else {
                BlocksFrom::LiveTable
            },
            with_stacks,
            glibc_heap: walked.then(|| glibc_heap(&header.heap)),
            memory: None,
        }
    }
}

/// The walk's counts as the report shows them.
fn glibc_heap(h: &HeapStats) -> GlibcHeap {
    let amount = |blocks: u64, bytes: u64| Amount { blocks, bytes };
    GlibcHeap {
        release: format!("{}.{}", h.version_major, h.version_minor),
        arenas: h.per_arena[..(h.arenas as usize).min(h.per_arena.len())]
            .iter()
            .map(|a| ArenaUsage {
                system_bytes: a.system_bytes,
                heaps: a.heaps,
                in_use: amount(a.in_use_chunks, a.in_use_bytes),
                free_in_bins: amount(a.bin_chunks, a.bin_bytes),
                fast_bins: amount(a.fast_chunks, a.fast_bytes),
                tcache: amount(a.tcache_chunks, a.tcache_bytes),
                top_bytes: a.top_bytes,
                largest_free: a.largest_free,
                internal_bytes: a.internal_bytes,
            })
            .collect(),
        mmapped: amount(h.mmapped_chunks, h.mmapped_bytes),
        threads_with_tcache: h.threads_with_tcache,
    }
}

/// What the parent knows beyond the child's results.
pub(crate) struct ReportMeta<'a> {
    pub(crate) time_unix_ms: u64,
    pub(crate) pause: std::time::Duration,
    pub(crate) threads: &'a [ThreadReport],
    pub(crate) source: super::BlockSource,
}

/// The link standing for `left_out` links cut from the middle of a chain.
fn elided(left_out: u32) -> Node {
    Node {
        kind: NodeKind::Elided,
        name: format!("... {left_out} more links"),
        site: Vec::new(),
        size: None,
    }
}

/// Chain labels interned: one per root node and one per allocation site.
#[derive(Default)]
struct Labels {
    names: Vec<String>,
    by_root: HashMap<u32, u32>,
    by_site: HashMap<SiteId, u32>,
    by_text: HashMap<String, u32>,
    elision: Option<u32>,
}

impl Labels {
    fn add(&mut self, name: String) -> u32 {
        self.names.push(name);
        self.names.len() as u32 - 1
    }

    fn of(&mut self, r: &Resolved, n: u32) -> u32 {
        if n >= r.first_block {
            let site = r.blocks[(n - r.first_block) as usize].site;
            if let Some(&l) = self.by_site.get(&site) {
                return l;
            }
            let l = self.add(r.node(n).label());
            self.by_site.insert(site, l);
            l
        } else {
            if let Some(&l) = self.by_root.get(&n) {
                return l;
            }
            let l = self.add(r.node(n).label());
            self.by_root.insert(n, l);
            l
        }
    }

    /// A label of its own (a pinned buffer's field).
    fn named(&mut self, text: &str) -> u32 {
        if let Some(&l) = self.by_text.get(text) {
            return l;
        }
        let l = self.add(text.to_string());
        self.by_text.insert(text.to_string(), l);
        l
    }

    fn elision(&mut self) -> u32 {
        match self.elision {
            Some(l) => l,
            None => {
                let l = self.add("...".into());
                self.elision = Some(l);
                l
            }
        }
    }
}

/// Each node's depth along breadth-first parents and its ancestor at depth
/// [`HEAD`], in time linear in the nodes however long the chains: a walk up
/// stops at the first node already known, and fills in the nodes it passed
/// on the way back down.
fn depths(first_block: u32, blocks: &[BlockOut]) -> (Vec<u32>, Vec<u32>, u64) {
    let mut steps = 0u64;
    let n_nodes = first_block as usize + blocks.len();
    let mut depth = vec![0u32; n_nodes];
    let mut head = vec![NONE; n_nodes];
    for r in 1..first_block as usize {
        depth[r] = 1;
        if HEAD == 1 {
            head[r] = r as u32;
        }
    }
    // The parents alone, read once in order: the walks up below jump
    // between random blocks, and 4 bytes per block stay in cache where the
    // 64-byte records do not (a heap of 2M blocks: 8 MB against 128 MB).
    let parents: Vec<u32> = blocks.iter().map(|b| b.parent).collect();
    let parent = |n: u32| parents[(n - first_block) as usize];
    let mut walk: Vec<u32> = Vec::new();
    for (i, &own_parent) in parents.iter().enumerate() {
        let n = first_block + i as u32;
        if depth[n as usize] != 0 || own_parent == NONE {
            continue;
        }
        // Up to the first node whose depth is known (a root, at worst).
        let mut at = n;
        while at >= first_block
            && depth[at as usize] == 0
            && parent(at) != NONE
            && walk.len() <= blocks.len()
        {
            walk.push(at);
            steps += 1;
            at = parent(at);
        }
        let (mut d, mut h) = if at < first_block || depth[at as usize] != 0 {
            (depth[at as usize], head[at as usize])
        } else {
            (0, NONE)
        };
        if d == 0 {
            // A parent chain that reaches no root: left unreached.
            walk.clear();
            continue;
        }
        while let Some(m) = walk.pop() {
            d += 1;
            if d == HEAD {
                h = m;
            }
            depth[m as usize] = d;
            head[m as usize] = h;
        }
    }
    (depth, head, steps)
}
