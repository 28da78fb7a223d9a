//! The evidence of one run, built once from its profiles and snapshots, and
//! read by every rule: the growth model's verdicts (from [`crate::trend`]),
//! what each root reaches over the run, buffers pinned by slices, live
//! blocks per allocation site, connection counts, and the growing stacks
//! with what their frames are (from [`crate::frames`]).
//!
//! Rules never look at files or at each other's findings; what two rules
//! need is computed here once. Snapshots may lack stacks for some blocks
//! (sampled-mode snapshots know stacks of sampled blocks only): an empty
//! site is simply a site no rule recognises.
//!
//! New kinds of evidence (a memory breakdown per point, crate versions and
//! advisories) are new fields of [`Evidence`], computed in [`Evidence::build`]
//! and read by the rules that need them.

use std::collections::{HashMap, HashSet};

use crate::dependencies::DependencyVersions;
use crate::frames::{Class, Classes, FrameTable, Side};
use crate::snapshot::{Amount, GroupHolder, LeakKind, Link, NodeKind, Pinning, SnapshotReport};
use crate::trend::{self, RunPoints, SeriesKind, SeriesTrend, TrendReport, TrendState};
use crate::view::StackView;

/// What the frames of one stack (leaf first) say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackFacts {
    /// Every class any frame has.
    pub classes: Classes,
    /// The first frame that is not allocation plumbing (allocator, std,
    /// container internals): who asked for the memory.
    pub leaf: Option<usize>,
    /// The first application frame.
    pub first_app: Option<usize>,
    /// What the stack does: the role of the leaf-most frame with one, if
    /// it comes before any application frame (a framework's receive path,
    /// connection set-up, a task's cell, a queue growing).
    pub role: Option<Class>,
    pub role_frame: Option<usize>,
    /// The side of the leaf-most frame that has one.
    pub side: Option<Side>,
    /// For a task's cell or a queue's growth: the first application frame
    /// past the role frame (the spawn site, the sender).
    pub caller: Option<usize>,
    /// Classes of the frames between the role frame and `caller`.
    pub between: Classes,
}

impl StackFacts {
    /// Whether the leaf-most meaningful frame is the application's.
    pub fn app_leaf(&self) -> bool {
        self.first_app.is_some() && self.first_app == self.leaf
    }
}

/// Classifies a stack.
pub fn stack_facts(frames: &[String], table: &FrameTable, deps: &HashSet<String>) -> StackFacts {
    let classes: Vec<Classes> = frames.iter().map(|f| table.classify(f)).collect();
    let is_dep = |c: &str| deps.contains(c);
    let app: Vec<bool> = frames
        .iter()
        .map(|f| table.is_application(f, &is_dep))
        .collect();
    let mut facts = StackFacts {
        leaf: classes.iter().position(|c| !c.is_plumbing()),
        first_app: app.iter().position(|&a| a),
        ..StackFacts::default()
    };
    for c in &classes {
        for class in c.iter() {
            facts.classes.insert(class);
        }
    }
    let role_frame = classes.iter().position(|c| c.role().is_some());
    if let Some(r) = role_frame.filter(|&r| facts.first_app.is_none_or(|a| r < a)) {
        facts.role_frame = Some(r);
        facts.role = classes[r].role();
        if matches!(facts.role, Some(Class::TaskCell | Class::ChannelGrow)) {
            facts.caller = app[r..].iter().position(|&a| a).map(|i| r + i);
            for c in &classes[r + 1..facts.caller.unwrap_or(classes.len())] {
                for class in c.iter() {
                    facts.between.insert(class);
                }
            }
        }
    }
    facts.side = classes.iter().find_map(|c| {
        if c.contains(Class::Server) {
            Some(Side::Server)
        } else if c.contains(Class::Client) {
            Some(Side::Client)
        } else {
            None
        }
    });
    facts
}

/// A growing (or levelled-off) allocation stack of the profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct StackEvidence {
    pub trend: SeriesTrend,
    pub facts: StackFacts,
    /// Live blocks at the first judged point and at the last running one.
    pub objects_first: f64,
    pub objects_last: f64,
    /// Allocations and bytes allocated at this stack over the whole run
    /// (at the last running point).
    pub alloc_objects: f64,
    pub alloc_bytes: f64,
}

impl StackEvidence {
    /// The stack, leaf first.
    pub fn frames(&self) -> &[String] {
        &self.trend.detail
    }

    pub fn frame(&self, i: Option<usize>) -> Option<&str> {
        i.and_then(|i| self.trend.detail.get(i)).map(String::as_str)
    }

    pub fn growing(&self) -> bool {
        self.trend.state == TrendState::Growing
    }

    /// Average size of the live blocks at the end.
    pub fn average_live(&self) -> f64 {
        self.trend.last_bytes / self.objects_last.max(1.0)
    }
}

/// A root (a static, a thread's stack or thread-locals) and what it reaches
/// along shortest chains, over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RootEvidence {
    pub label: String,
    pub kind: NodeKind,
    /// Bytes reached, judged by the growth model.
    pub trend: SeriesTrend,
    /// Reached at the first judged snapshot and at the last.
    pub first: Amount,
    pub last: Amount,
    /// What it reaches at the end, by allocation site, largest first.
    pub held: Vec<HeldSite>,
}

impl RootEvidence {
    pub fn growing(&self) -> bool {
        self.trend.state == TrendState::Growing
    }

    /// The reached site with the most bytes.
    pub fn main(&self) -> Option<&HeldSite> {
        self.held.first()
    }
}

/// Blocks of one allocation site reached from a root.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldSite {
    /// The allocating function's stack (leaf first) where a group shows it,
    /// else the function alone.
    pub site: Vec<String>,
    pub facts: StackFacts,
    pub amount: Amount,
    /// The same, at the first judged snapshot.
    pub first: Amount,
    /// The chain's labels from the root to these blocks.
    pub path: Vec<String>,
}

/// Buffers pinned by small slices at the end of the run (one entry per
/// holder: a decode buffer's first allocation and its growth are pinned by
/// the same slices).
#[derive(Debug, Clone, PartialEq)]
pub struct PinEvidence {
    pub pin: Pinning,
    pub buffer_facts: StackFacts,
    pub holder_facts: StackFacts,
    /// Pinned bytes of the same root and buffer site at the first judged
    /// snapshot.
    pub earlier_bytes: u64,
    pub root: Option<String>,
}

/// Live reachable blocks of one allocation site over the run.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteEvidence {
    pub site: Vec<String>,
    pub facts: StackFacts,
    pub first: Amount,
    pub last: Amount,
    /// Chain to the site's largest block at the end.
    pub chain: Vec<Link>,
    /// From a heap walk: the site's sampled blocks at the end by what holds
    /// them directly, most bytes first (see [`GroupHolder`]).
    pub holders: Vec<GroupHolder>,
}

/// Who holds the sampled blocks of a stack, as a heap walk finds them.
#[derive(Debug, Clone, PartialEq)]
pub struct WalkedHolder {
    /// Labels, root first, to the largest of the blocks so held.
    pub chain: Vec<String>,
    /// Sampled bytes of the stack held this way.
    pub held: u64,
    /// Sampled bytes of the stack, however held.
    pub sampled: u64,
}

/// What the snapshots of a run show.
#[derive(Debug, Clone)]
pub struct SnapshotEvidence<'a> {
    /// Every snapshot, the exit one included.
    pub all: &'a [SnapshotReport],
    /// The first snapshot past warm-up.
    pub first: &'a SnapshotReport,
    /// The last running snapshot, or the exit one if it holds more.
    pub last: &'a SnapshotReport,
    /// Roots other than leakscope's own, most bytes first.
    pub roots: Vec<RootEvidence>,
    pub pins: Vec<PinEvidence>,
    pub sites: Vec<SiteEvidence>,
}

/// Connections of one side, counted from the allocations each makes once
/// when it is set up: opened (allocated so far) and live (still allocated).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionCount {
    pub opened_before: f64,
    pub opened_now: f64,
    pub live_before: f64,
    pub live_now: f64,
}

impl ConnectionCount {
    pub fn opened(&self) -> f64 {
        self.opened_now - self.opened_before
    }

    pub fn live_growth(&self) -> f64 {
        self.live_now - self.live_before
    }
}

/// The evidence of one run.
pub struct Evidence<'a> {
    pub frames: &'a FrameTable,
    /// The growth model's verdicts: the whole heap, stacks, holders.
    pub trend: TrendReport,
    /// Requests served between the first judged point and the last running
    /// one (the application's progress counter), if counted.
    pub requests: Option<u64>,
    pub snapshots: Option<SnapshotEvidence<'a>>,
    /// Snapshots from a walk of glibc's heap (sampled mode): every block,
    /// stacks for the sampled ones only. Rules classify from the growing
    /// stacks as without snapshots; these only name who holds the sampled
    /// blocks of a finding's stack (see [`Evidence::walked_chain`]).
    pub walked: Option<SnapshotEvidence<'a>>,
    /// Every profile, in time order.
    pub profiles: &'a [StackView],
    /// The last running profile.
    pub last_profile: Option<&'a StackView>,
    /// Growing and levelled-off stacks, as the trend orders them.
    pub stacks: Vec<StackEvidence>,
    pub server_connections: ConnectionCount,
    pub client_connections: ConnectionCount,
    /// Classes of any frame seen anywhere in the run.
    pub seen: Classes,
    dependencies: HashSet<String>,
    /// The version of each dependency crate, where the debug information's
    /// source paths say it.
    pub versions: DependencyVersions,
    /// How RSS grew, part by part (from the run's memory breakdowns).
    pub memory: Option<super::memory_growth::MemoryGrowth>,
}

impl<'a> Evidence<'a> {
    /// Builds the evidence of a run: snapshots and profiles in time order
    /// (either may be empty).
    pub fn build(
        snapshots: &'a [SnapshotReport],
        profiles: &'a [StackView],
        frames: &'a FrameTable,
    ) -> Evidence<'a> {
        let trend = trend::trends(profiles, snapshots);
        let dependencies = dependencies(snapshots, profiles);
        let profile_points = RunPoints::of(profiles.len());
        let first_profile = profiles.get(profile_points.warmup);
        let last_profile = profile_points
            .running
            .checked_sub(1)
            .and_then(|i| profiles.get(i));
        let stacks = stack_evidence(&trend, first_profile, last_profile, frames, &dependencies);
        let (server_connections, client_connections) =
            connections(first_profile, last_profile, frames, &dependencies);
        // Rules judge sites from snapshots whose blocks all have stacks; a
        // heap walk's snapshots lack most, so they only name holders.
        let walked_run = snapshots.iter().any(|s| s.blocks_from.is_heap_walk());
        let all_evidence = snapshot_evidence(snapshots, frames, &dependencies);
        let (snapshot_evidence, walked) = if walked_run {
            (None, all_evidence)
        } else {
            (all_evidence, None)
        };
        let requests = match (
            snapshot_evidence.as_ref().or(walked.as_ref()),
            first_profile,
            last_profile,
        ) {
            (Some(s), _, _) if s.last.progress > 0 => {
                Some(s.last.progress.saturating_sub(s.first.progress))
            }
            (_, Some(a), Some(b)) => match (a.progress(), b.progress()) {
                (Some(a), Some(b)) if b > 0 => Some(b.saturating_sub(a)),
                _ => None,
            },
            _ => None,
        };
        let mut seen = Classes::default();
        let mut mark = |name: &str| {
            for c in frames.classify(name).iter() {
                seen.insert(c);
            }
        };
        if let Some(p) = last_profile {
            for f in &p.frames {
                mark(&f.function);
            }
        }
        if let Some(s) = &snapshot_evidence {
            for g in &s.last.groups {
                for f in &g.site {
                    mark(f);
                }
            }
        }
        Evidence {
            frames,
            trend,
            requests,
            snapshots: snapshot_evidence,
            walked,
            profiles,
            last_profile,
            stacks,
            server_connections,
            client_connections,
            seen,
            dependencies,
            versions: DependencyVersions::of_run(snapshots, profiles),
            memory: None,
        }
    }

    /// The same with the run's memory breakdowns, in time order.
    pub fn with_memory(mut self, memory: &[crate::memory::Breakdown]) -> Evidence<'a> {
        self.memory = super::memory_growth::MemoryGrowth::of(memory);
        self
    }

    /// From a heap walk's snapshots, at the end: what holds the most bytes
    /// of the sampled blocks allocated at `stack` (leaf first) directly,
    /// summed over the site groups of the stack (snapshot sites are cut at
    /// 16 frames, so one stack may be a prefix of the other), with the
    /// chain from the root reaching most of them. Not the chain of one block:
    /// the block being handled may sit in a thread's registers while the
    /// rest are kept by tasks or a static. Snapshots that list no holders
    /// per group (older files) give the chain to the largest block of the
    /// largest group.
    pub fn walked_chain(&self, stack: &[String]) -> Option<WalkedHolder> {
        let walked = self.walked.as_ref()?;
        let same = |site: &[String]| {
            let n = site.len().min(stack.len());
            n >= 1 && site[..n] == stack[..n]
        };
        let sites: Vec<&SiteEvidence> = walked
            .sites
            .iter()
            .filter(|g| same(&g.site) && !g.chain.is_empty())
            .collect();
        let sampled = sites.iter().map(|g| g.last.bytes).sum();
        let labels = |chain: &[Link]| chain.iter().map(|l| l.node.label()).collect();
        let holders = merge_holders(sites.iter().flat_map(|g| &g.holders));
        if let Some(h) = holders.first() {
            return Some(WalkedHolder {
                chain: labels(&h.chain),
                held: h.amount.bytes,
                sampled,
            });
        }
        sites
            .iter()
            .max_by_key(|g| g.last.bytes)
            .map(|g| WalkedHolder {
                chain: labels(&g.chain),
                held: g.last.bytes,
                sampled: g.last.bytes,
            })
    }

    /// Whether the whole heap grows (the growth model's verdict).
    pub fn heap_grows(&self) -> bool {
        self.trend.total.state == TrendState::Growing
    }

    /// Classifies another stack (a holder's site, say) with this run's
    /// dependencies.
    pub fn facts(&self, frames: &[String]) -> StackFacts {
        stack_facts(frames, self.frames, &self.dependencies)
    }

    /// Whether one function is the application's.
    pub fn is_application(&self, name: &str) -> bool {
        self.frames
            .is_application(name, &|c| self.dependencies.contains(c))
    }

    /// Whether a crate's code comes from dependency sources in this run.
    pub fn is_dependency(&self, krate: &str) -> bool {
        self.dependencies.contains(krate)
    }

    /// " 0.3.16" after a crate's name when one version of it is known,
    /// " 0.3.16 or 0.4.6" for several, else nothing.
    pub fn version_suffix(&self, krate: &str) -> String {
        let versions: Vec<&str> = self
            .versions
            .of_crate(krate)
            .map(|v| v.version.as_str())
            .collect();
        if versions.is_empty() {
            String::new()
        } else {
            format!(" {}", versions.join(" or "))
        }
    }

    /// Growing stacks, steepest first.
    pub fn growing_stacks(&self) -> impl Iterator<Item = &StackEvidence> {
        self.stacks.iter().filter(|s| s.growing())
    }

    /// Live connections grew on either side; the side with more.
    pub fn connections(&self, side: Side) -> ConnectionCount {
        match side {
            Side::Server => self.server_connections,
            Side::Client => self.client_connections,
        }
    }
}

/// Crates whose frames come from dependency sources: as the snapshots list
/// them, and from the source files of the profiles' frames.
fn dependencies(snapshots: &[SnapshotReport], profiles: &[StackView]) -> HashSet<String> {
    let mut out: HashSet<String> = snapshots
        .iter()
        .flat_map(|s| s.dependency_crates.iter().cloned())
        .collect();
    if let Some(p) = profiles.last() {
        for f in &p.frames {
            if crate::frames::is_dependency_file(&f.file) {
                let krate = crate::frames::crate_of(&f.function);
                if !krate.is_empty() {
                    out.insert(krate.to_string());
                }
            }
        }
    }
    out
}

/// Per stack of a profile: (inuse_objects, inuse_space, alloc_objects,
/// alloc_space).
type StackValues = HashMap<Vec<String>, [f64; 4]>;

fn stack_values(view: Option<&StackView>) -> StackValues {
    let mut out = StackValues::new();
    let Some(view) = view else {
        return out;
    };
    let idx = view.heap_indices();
    for s in &view.samples {
        let key: Vec<String> = view.function_names(s).map(str::to_string).collect();
        let e = out.entry(key).or_insert([0.0; 4]);
        for (slot, i) in e.iter_mut().zip(idx) {
            if let Some(i) = i {
                *slot += s.values[i] as f64;
            }
        }
    }
    out
}

fn stack_evidence(
    trend: &TrendReport,
    first: Option<&StackView>,
    last: Option<&StackView>,
    frames: &FrameTable,
    deps: &HashSet<String>,
) -> Vec<StackEvidence> {
    let before = stack_values(first);
    let now = stack_values(last);
    trend
        .series
        .iter()
        .filter(|s| {
            s.kind == SeriesKind::Stack
                && matches!(s.state, TrendState::Growing | TrendState::LevelledOff)
        })
        .map(|s| {
            let b = before.get(&s.detail).copied().unwrap_or_default();
            let n = now.get(&s.detail).copied().unwrap_or_default();
            StackEvidence {
                trend: s.clone(),
                facts: stack_facts(&s.detail, frames, deps),
                objects_first: b[0],
                objects_last: n[0],
                alloc_objects: n[2],
                alloc_bytes: n[3],
            }
        })
        .collect()
}

/// Connections per side, from the stacks whose role is connection set-up:
/// each connection allocates at each of them about once, so the median over
/// them of allocations made counts connections opened, and of blocks still
/// live, connections open.
fn connections(
    first: Option<&StackView>,
    last: Option<&StackView>,
    frames: &FrameTable,
    deps: &HashSet<String>,
) -> (ConnectionCount, ConnectionCount) {
    let count = |view: Option<&StackView>, side: Side| -> (f64, f64) {
        let values = stack_values(view);
        // Sampled profiles estimate counts of small blocks poorly (one
        // sample of a 100-byte block stands for hundreds): count with
        // blocks large enough to be sampled often.
        let min_size = view.map_or(0.0, |v| {
            v.period.max(1) as f64 / super::thresholds::SAMPLED_COUNT_DIVISOR
        });
        let mut opened = Vec::new();
        let mut live = Vec::new();
        for (stack, v) in &values {
            if v[2] <= 0.0 || v[3] / v[2] < min_size {
                continue;
            }
            let f = stack_facts(stack, frames, deps);
            if f.role == Some(Class::Connection) && f.side == Some(side) {
                opened.push(v[2]);
                live.push(v[0]);
            }
        }
        (median(&mut opened), median(&mut live))
    };
    let side = |side| {
        let (opened_before, live_before) = count(first, side);
        let (opened_now, live_now) = count(last, side);
        ConnectionCount {
            opened_before,
            opened_now,
            live_before,
            live_now,
        }
    };
    (side(Side::Server), side(Side::Client))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The kind of a root from its label (`static X`, `thread T: f`, ...).
pub fn root_kind(label: &str) -> NodeKind {
    if label.starts_with("static ") {
        NodeKind::Static
    } else if label.starts_with("data of ") {
        NodeKind::Data
    } else if label.starts_with("thread-locals of ") {
        NodeKind::ThreadLocal
    } else if label.starts_with("registers of ") {
        NodeKind::Registers
    } else {
        NodeKind::Stack
    }
}

/// leakscope's own threads and frames (its periodic writer, its exporter,
/// the symboliser they call) hold nothing of the application's; a word
/// left in such a frame that points into the heap is stale.
fn is_own_root(label: &str) -> bool {
    ["leakscope::export::", "leakscope::snapshot::", "blazesym::"]
        .iter()
        .any(|own| label.contains(own))
}

fn snapshot_evidence<'a>(
    snapshots: &'a [SnapshotReport],
    frames: &FrameTable,
    deps: &HashSet<String>,
) -> Option<SnapshotEvidence<'a>> {
    let run = RunPoints::of(snapshots.len());
    let running = &snapshots[..run.running];
    let first = running.get(run.warmup)?;
    let last = {
        let last = running.last()?;
        match snapshots.last() {
            Some(exit) if exit.totals.live.bytes > last.totals.live.bytes => exit,
            _ => last,
        }
    };
    let facts = |site: &[String]| stack_facts(site, frames, deps);

    // What each root reaches in every snapshot, and by allocation site.
    let reached: Vec<HashMap<&str, Amount>> = snapshots.iter().map(reached_from_roots).collect();
    let seconds: Vec<f64> = snapshots
        .iter()
        .map(|s| s.time_unix_ms as f64 / 1e3)
        .collect();
    let seconds = trend::seconds_of(seconds.into_iter());
    let progress: Vec<Option<f64>> = snapshots
        .iter()
        .map(|s| (s.progress > 0).then_some(s.progress as f64))
        .collect();
    let last_index = snapshots
        .iter()
        .position(|s| std::ptr::eq(s, last))
        .unwrap_or(0);
    let first_index = run.warmup;
    // A frame or registers holding work in flight are judged only when they
    // hold something throughout (see `trend::held_throughout`).
    let judged = run.judged();
    let held_throughout = |label: &str| {
        trend::held_throughout(
            reached[judged.start..judged.end.min(reached.len())]
                .iter()
                .map(|r| r.contains_key(label)),
        )
    };
    let mut roots: Vec<RootEvidence> = reached[last_index]
        .iter()
        .filter(|(label, _)| !is_own_root(label))
        .filter(|(label, _)| !trend::is_in_flight_root(label) || held_throughout(label))
        .map(|(&label, &amount)| {
            // A static that reaches nothing holds 0 bytes; work in flight
            // missing from a snapshot was not seen there.
            let observed: Vec<usize> = (0..reached.len())
                .filter(|&i| !trend::is_in_flight_root(label) || reached[i].contains_key(label))
                .collect();
            let values: Vec<f64> = observed
                .iter()
                .map(|&i| reached[i].get(label).map_or(0.0, |a| a.bytes as f64))
                .collect();
            let at_seconds: Vec<f64> = observed.iter().map(|&i| seconds[i]).collect();
            let at_progress: Vec<Option<f64>> = observed.iter().map(|&i| progress[i]).collect();
            let trend = trend::judge_series(
                SeriesKind::Holder,
                label.to_string(),
                vec![label.to_string()],
                &at_seconds,
                &at_progress,
                &values,
                trend::MIN_SERIES_GROWTH,
            );
            let held_first = held_sites(&snapshots[first_index], label, &facts);
            let mut held = held_sites(last, label, &facts);
            for h in &mut held {
                h.first = held_first
                    .iter()
                    .find(|e| e.site.first() == h.site.first())
                    .map_or_else(Amount::default, |e| e.amount);
            }
            RootEvidence {
                label: label.to_string(),
                kind: root_kind(label),
                trend,
                first: reached[first_index].get(label).copied().unwrap_or_default(),
                last: amount,
                held,
            }
        })
        .collect();
    roots.sort_by(|a, b| {
        b.last
            .bytes
            .cmp(&a.last.bytes)
            .then_with(|| a.label.cmp(&b.label))
    });

    let root_label = |chain: &[Link]| chain.first().map(|l| l.node.label());
    let mut merged: Vec<Pinning> = Vec::new();
    for p in &last.pinned {
        match merged.iter_mut().find(|m| m.holder == p.holder) {
            Some(m) => {
                m.buffers.blocks += p.buffers.blocks;
                m.buffers.bytes += p.buffers.bytes;
                m.slice_bytes += p.slice_bytes;
            }
            None => merged.push(p.clone()),
        }
    }
    let pins = merged
        .into_iter()
        .map(|pin| {
            let root = root_label(&pin.chain);
            let earlier_bytes = first
                .pinned
                .iter()
                .filter(|q| root_label(&q.chain) == root && q.buffer_site == pin.buffer_site)
                .map(|q| q.buffers.bytes)
                .sum();
            PinEvidence {
                buffer_facts: facts(&pin.buffer_site),
                holder_facts: facts(&pin.holder.site),
                earlier_bytes,
                root,
                pin,
            }
        })
        .collect();

    type SiteGroups<'a> = (Amount, &'a [Link], Vec<&'a GroupHolder>);
    let by_site = |s: &'a SnapshotReport| {
        let mut m: HashMap<&'a [String], SiteGroups<'a>> = HashMap::new();
        for g in s
            .groups
            .iter()
            .filter(|g| matches!(g.kind, LeakKind::StillReachable | LeakKind::PossiblyLost))
        {
            let e = m
                .entry(&g.site)
                .or_insert((Amount::default(), &g.chain, Vec::new()));
            e.0.blocks += g.amount.blocks;
            e.0.bytes += g.amount.bytes;
            e.2.extend(&g.holders);
        }
        m
    };
    let before = by_site(first);
    let mut sites: Vec<SiteEvidence> = by_site(last)
        .into_iter()
        .map(|(site, (amount, chain, holders))| SiteEvidence {
            site: site.to_vec(),
            facts: facts(site),
            first: before.get(site).map_or_else(Amount::default, |e| e.0),
            last: amount,
            chain: chain.to_vec(),
            holders: merge_holders(holders),
        })
        .collect();
    sites.sort_by(|a, b| {
        b.last
            .bytes
            .cmp(&a.last.bytes)
            .then_with(|| a.site.cmp(&b.site))
    });
    Some(SnapshotEvidence {
        all: snapshots,
        first,
        last,
        roots,
        pins,
        sites,
    })
}

/// Holders of blocks (of one stack's groups, say) merged by direct holder
/// (their chains' last-but-one label), most bytes first; each keeps the
/// chain of the part with most bytes.
fn merge_holders<'h>(holders: impl IntoIterator<Item = &'h GroupHolder>) -> Vec<GroupHolder> {
    let direct = |h: &GroupHolder| {
        h.chain
            .len()
            .checked_sub(2)
            .map(|i| h.chain[i].node.label())
    };
    let mut merged: Vec<(Option<String>, u64, GroupHolder)> = Vec::new();
    for h in holders {
        let k = direct(h);
        match merged.iter_mut().find(|(m, _, _)| *m == k) {
            Some((_, most, m)) => {
                if h.amount.bytes > *most {
                    *most = h.amount.bytes;
                    m.chain.clone_from(&h.chain);
                }
                m.amount.blocks += h.amount.blocks;
                m.amount.bytes += h.amount.bytes;
            }
            None => merged.push((k, h.amount.bytes, h.clone())),
        }
    }
    let mut out: Vec<GroupHolder> = merged.into_iter().map(|(_, _, h)| h).collect();
    out.sort_by_key(|h| std::cmp::Reverse(h.amount.bytes));
    out
}

/// Bytes and blocks reached from each root along shortest chains. Unlike
/// dominator-retained sizes, this does not collapse when a stale word on
/// some stack also points into the structure.
fn reached_from_roots(r: &SnapshotReport) -> HashMap<&str, Amount> {
    let mut out: HashMap<&str, Amount> = HashMap::new();
    for p in &r.retention {
        if let Some(root) = p.path.first() {
            let a = out.entry(root.as_str()).or_default();
            a.blocks += p.amount.blocks;
            a.bytes += p.amount.bytes;
        }
    }
    out
}

/// What a root reaches along shortest chains, by the allocating function of
/// each block (with that function's full stack when a group shows it),
/// largest first.
fn held_sites(
    r: &SnapshotReport,
    root: &str,
    facts: &dyn Fn(&[String]) -> StackFacts,
) -> Vec<HeldSite> {
    let mut by_leaf: HashMap<&str, (Amount, &[String])> = HashMap::new();
    for p in r
        .retention
        .iter()
        .filter(|p| p.path.first().map(String::as_str) == Some(root))
    {
        if let Some(leaf) = p.path.last().filter(|_| p.path.len() > 1) {
            let e = by_leaf
                .entry(leaf.trim_end_matches(" (heap)"))
                .or_insert((Amount::default(), &p.path));
            e.0.blocks += p.amount.blocks;
            e.0.bytes += p.amount.bytes;
        }
    }
    let mut out: Vec<HeldSite> = by_leaf
        .into_iter()
        .map(|(name, (amount, path))| {
            let site = r
                .groups
                .iter()
                .find(|g| g.site.first().map(String::as_str) == Some(name))
                .map_or_else(|| vec![name.to_string()], |g| g.site.clone());
            HeldSite {
                facts: facts(&site),
                site,
                amount,
                first: Amount::default(),
                path: path.to_vec(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.amount
            .bytes
            .cmp(&a.amount.bytes)
            .then_with(|| a.site.cmp(&b.site))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_receive_path_has_its_role_and_side() {
        let t = FrameTable::builtin();
        let f = stack_facts(
            &s(&[
                "bytes::bytes_mut::BytesMut::reserve_inner",
                "hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io",
                "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_read",
                "<hyper::server::conn::http1::Connection<I,S> as core::future::future::Future>::poll",
                "myapp::serve::{{closure}}",
            ]),
            &t,
            &HashSet::new(),
        );
        assert_eq!(f.role, Some(Class::Receive));
        assert_eq!(f.leaf, Some(1));
        assert_eq!(f.side, Some(Side::Server));
        assert_eq!(f.first_app, Some(4));
        assert!(!f.app_leaf());
    }

    #[test]
    fn a_task_cell_names_its_spawn_site_past_the_runtime() {
        let t = FrameTable::builtin();
        let f = stack_facts(
            &s(&[
                "tokio::runtime::task::core::Cell<T,S>::new",
                "tokio::runtime::task::new_task",
                "tokio::task::spawn::spawn",
                "myapp::jobs::defer",
                "myapp::handler",
            ]),
            &t,
            &HashSet::new(),
        );
        assert_eq!(f.role, Some(Class::TaskCell));
        assert_eq!(f.caller, Some(3));
        assert!(f.between.contains(Class::TaskSpawn));
        assert!(!f.between.contains(Class::Connection));
    }

    #[test]
    fn application_code_before_any_framework_role_owns_the_allocation() {
        let t = FrameTable::builtin();
        let f = stack_facts(
            &s(&[
                "myapp::cache::remember",
                "myapp::handler",
                "tonic::codec::decode::StreamingInner::decode_chunk",
                "tonic::server::grpc::Grpc<T>::unary",
            ]),
            &t,
            &HashSet::new(),
        );
        assert!(f.app_leaf());
        assert_eq!(f.role, None);
        assert_eq!(f.side, Some(Side::Server));
    }

    #[test]
    fn dependencies_listed_by_a_snapshot_are_not_application_code() {
        let t = FrameTable::builtin();
        let deps: HashSet<String> = ["mycorp_rpc".to_string()].into();
        let f = stack_facts(&s(&["mycorp_rpc::read", "myapp::main"]), &t, &deps);
        assert_eq!(f.first_app, Some(1));
    }

    #[test]
    fn root_kinds_come_from_labels() {
        assert_eq!(root_kind("static app::CACHE"), NodeKind::Static);
        assert_eq!(
            root_kind("thread-locals of thread w"),
            NodeKind::ThreadLocal
        );
        assert_eq!(root_kind("thread w: app::run"), NodeKind::Stack);
        assert!(is_own_root(
            "thread leakscope: leakscope::export::periodic::write_set"
        ));
    }
}
