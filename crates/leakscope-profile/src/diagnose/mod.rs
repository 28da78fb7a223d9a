//! The self-check: from a series of heap profiles and snapshots taken while a
//! service ran, decide whether memory grows, and match the evidence to the
//! known ways services leak (`shared/scenarios.md`). Each finding names the
//! scenario, the evidence (holders, stacks, counts, growth), a confidence
//! and the fix.
//!
//! The rules look only at what any service's profiles show: allocation
//! stacks (framework frames such as a decoder, a server or client module, a
//! connection handshake, a JSON parser, a constructor), holder chains from
//! snapshots, slice pinning, block sizes, counts and growth.

mod from_stacks;

use serde::{Deserialize, Serialize};

use crate::snapshot::{LargeBlock, LeakKind, Link, NodeKind, Pinning, SnapshotReport};
use crate::trend::theil_sen;
use crate::units::format_value;
use crate::view::StackView;

/// Whether memory grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Leak,
    NoLeak,
    /// Too few samples to tell.
    Inconclusive,
}

/// How live memory moved over the run (warm-up excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    pub samples: usize,
    pub first_bytes: u64,
    pub last_bytes: u64,
    pub seconds: f64,
    /// Robust (Theil–Sen) slope of live bytes over time.
    pub bytes_per_second: f64,
    /// The same against the application's progress counter, if it has one.
    pub bytes_per_unit: Option<f64>,
    /// True when growth persists: most intervals grew and the total is
    /// material.
    pub persistent: bool,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The scenario name of `shared/scenarios.md`.
    pub scenario: String,
    pub title: String,
    pub confidence: f64,
    pub evidence: Vec<String>,
    pub fix: String,
    /// The holder chain (root first) or the allocation stack, as labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
}

/// The result of a self-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfCheck {
    pub verdict: Verdict,
    pub summary: String,
    pub growth: Growth,
    pub findings: Vec<Finding>,
}

fn bytes(v: f64) -> String {
    format_value(v.round() as i64, "bytes")
}

/// Frame classes the rules use.
mod frames {
    pub(super) fn any(site: &[String], pred: impl Fn(&str) -> bool) -> bool {
        site.iter().any(|f| pred(f))
    }

    pub(super) fn server_side(site: &[String]) -> bool {
        any(site, |f| {
            f.contains("::server::") || f.contains("::server<") || f.contains("serve_connection")
        })
    }

    pub(super) fn client_side(site: &[String]) -> bool {
        any(site, |f| {
            f.contains("::client::") || f.contains("::client<")
        })
    }

    pub(super) fn json_parser(site: &[String]) -> bool {
        any(site, |f| {
            let l = f.to_ascii_lowercase();
            l.contains("sonic_rs")
                || l.contains("serde_json")
                || l.contains("simd_json")
                || l.contains("json")
        })
    }

    pub(super) fn handshake(f: &str) -> bool {
        f.contains("handshake")
    }

    /// Crates known to be libraries, for snapshots that do not list their
    /// dependency crates.
    const KNOWN_LIBRARIES: [&str; 16] = [
        "core",
        "alloc",
        "std",
        "tokio",
        "hyper",
        "hyper_util",
        "h2",
        "tonic",
        "tower",
        "bytes",
        "http",
        "futures",
        "futures_util",
        "axum",
        "hashbrown",
        "indexmap",
    ];

    std::thread_local! {
        /// The dependency crates of the snapshot being diagnosed.
        pub(super) static DEPENDENCIES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn crate_of(f: &str) -> &str {
        let f = f
            .trim_start_matches(['<', '&', '*'])
            .trim_start_matches("mut ")
            .trim_start_matches("dyn ");
        f.split([':', '<', ' ', '>']).next().unwrap_or("")
    }

    /// A frame of the application's own code (not a dependency's or std's).
    pub(super) fn application(f: &str) -> bool {
        let krate = crate_of(f);
        f.contains("::")
            && !KNOWN_LIBRARIES.contains(&krate)
            && DEPENDENCIES.with(|d| !d.borrow().iter().any(|c| c == krate))
    }

    /// An application frame named like a constructor.
    pub(super) fn constructor(site: &[String]) -> Option<&str> {
        site.iter().map(String::as_str).find(|f| {
            if !application(f) {
                return false;
            }
            let base = f.split("::{{closure}}").next().unwrap_or(f);
            let last = base.rsplit("::").next().unwrap_or("");
            matches!(
                last,
                "new" | "connect" | "build" | "create" | "open" | "init"
            ) || last.starts_with("new_")
                || last.starts_with("connect_")
        })
    }

    /// The first application frame (the code a reader owns).
    pub(super) fn first_application(site: &[String]) -> Option<&str> {
        site.iter().map(String::as_str).find(|f| application(f))
    }
}

fn chain_labels(chain: &[Link]) -> Vec<String> {
    chain.iter().map(|l| l.node.label()).collect()
}

fn root_label(chain: &[Link]) -> Option<String> {
    chain.first().map(|l| l.node.label())
}

/// Connections seen in a profile: (accepted or opened so far, still live),
/// from the allocations each connection's handshake makes once.
fn connections(view: &StackView, side: &str) -> (i64, i64) {
    let alloc = view.sample_index(Some("alloc_objects")).ok();
    let inuse = view.sample_index(Some("inuse_objects")).ok();
    let (Some(alloc), Some(inuse)) = (alloc, inuse) else {
        return (0, 0);
    };
    let mut best = (0, 0);
    for s in &view.samples {
        let mut names = view.function_names(s);
        if names.any(|f| frames::handshake(f) && f.contains(side)) && s.values[alloc] > best.0 {
            best = (s.values[alloc], s.values[inuse]);
        }
    }
    best
}

/// Blocks of one allocation site reached from a root.
struct HeldSite {
    site: Vec<String>,
    amount: crate::snapshot::Amount,
}

/// What a root reaches along shortest chains, by the allocating function of
/// each block (with that function's full stack when a group shows it).
fn reached_sites(r: &SnapshotReport, root: &str) -> Vec<HeldSite> {
    let mut by_leaf: std::collections::HashMap<&str, crate::snapshot::Amount> =
        std::collections::HashMap::new();
    for p in r
        .retention
        .iter()
        .filter(|p| p.path.first().map(String::as_str) == Some(root))
    {
        if let Some(leaf) = p.path.last().filter(|_| p.path.len() > 1) {
            let a = by_leaf.entry(leaf.trim_end_matches(" (heap)")).or_default();
            a.blocks += p.amount.blocks;
            a.bytes += p.amount.bytes;
        }
    }
    by_leaf
        .into_iter()
        .map(|(name, amount)| HeldSite {
            site: r
                .groups
                .iter()
                .find(|g| g.site.first().map(String::as_str) == Some(name))
                .map_or_else(|| vec![name.to_string()], |g| g.site.clone()),
            amount,
        })
        .collect()
}

/// Bytes and blocks reached from each root along shortest chains. Unlike
/// dominator-retained sizes, this does not collapse when a stale word on
/// some stack also points into the structure.
fn reached_from_roots(
    r: &SnapshotReport,
) -> std::collections::HashMap<&str, crate::snapshot::Amount> {
    let mut out: std::collections::HashMap<&str, crate::snapshot::Amount> =
        std::collections::HashMap::new();
    for p in &r.retention {
        if let Some(root) = p.path.first() {
            let a = out.entry(root.as_str()).or_default();
            a.blocks += p.amount.blocks;
            a.bytes += p.amount.bytes;
        }
    }
    out
}

/// Runs the self-check over snapshots and profiles in time order (either
/// may be empty).
pub fn self_check(snapshots: &[SnapshotReport], profiles: &[StackView]) -> SelfCheck {
    let dependencies: Vec<String> = snapshots
        .iter()
        .flat_map(|s| s.dependency_crates.iter().cloned())
        .collect();
    frames::DEPENDENCIES.with(|d| *d.borrow_mut() = dependencies);
    let growth = measure_growth(&live_series(snapshots, profiles));
    let mut findings = Vec::new();
    if let (Some(first), Some(last)) = (first_after_warmup(snapshots), richest_last(snapshots)) {
        pinning_findings(first, last, &growth, &mut findings);
        // A pooled buffer may be in use (held by a handler's stack) at any one
        // moment: look back through the run for a snapshot where the pool
        // holds it.
        for snap in snapshots.iter().rev() {
            if oversized_findings(snap, profiles, &mut findings) {
                break;
            }
        }
        if growth.persistent {
            constructor_findings(first, last, &mut findings);
            static_holder_findings(first, last, profiles, &growth, &mut findings);
            connection_findings(first, last, profiles, &growth, &mut findings);
        }
    }
    if snapshots.len() < 3 && growth.persistent {
        from_stacks::stack_growth_findings(profiles, &mut findings);
    }
    findings.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let verdict = if growth.samples < 3 {
        Verdict::Inconclusive
    } else if growth.persistent || findings.iter().any(|f| f.confidence >= 0.6) {
        Verdict::Leak
    } else {
        Verdict::NoLeak
    };
    let most_likely = findings
        .first()
        .map_or("no known pattern matched".to_string(), |f| {
            format!("most likely {}", f.scenario)
        });
    let summary = match verdict {
        Verdict::Leak if !growth.persistent => format!(
            "memory is being held: {} live at the end; {}",
            bytes(growth.last_bytes as f64),
            most_likely
        ),
        Verdict::Leak => format!(
            "memory grows: {} -> {} over {:.1}s ({}/s{}); {}",
            bytes(growth.first_bytes as f64),
            bytes(growth.last_bytes as f64),
            growth.seconds,
            bytes(growth.bytes_per_second),
            growth
                .bytes_per_unit
                .map_or(String::new(), |u| format!(", {} per request", bytes(u))),
            most_likely
        ),
        Verdict::NoLeak => format!(
            "no leak: live memory levels off at about {} ({}/s over {:.1}s)",
            bytes(growth.last_bytes as f64),
            bytes(growth.bytes_per_second),
            growth.seconds
        ),
        Verdict::Inconclusive => {
            "inconclusive: fewer than three snapshots or profiles to compare".to_string()
        }
    };
    if verdict == Verdict::NoLeak {
        findings.retain(|f| f.confidence >= 0.6);
    }
    SelfCheck {
        verdict,
        summary,
        growth,
        findings,
    }
}

/// The snapshots that describe the running service: the one written at exit
/// (after the load stopped) is left out when there are enough others.
fn running(snapshots: &[SnapshotReport]) -> &[SnapshotReport] {
    if snapshots.len() > 3 {
        &snapshots[..snapshots.len() - 1]
    } else {
        snapshots
    }
}

fn first_after_warmup(snapshots: &[SnapshotReport]) -> Option<&SnapshotReport> {
    let r = running(snapshots);
    r.get(r.len() / 4)
}

/// The last snapshot, or the one before it if the exit freed memory.
fn richest_last(snapshots: &[SnapshotReport]) -> Option<&SnapshotReport> {
    let r = running(snapshots);
    let last = r.last()?;
    match snapshots.last() {
        Some(exit) if exit.totals.live.bytes > last.totals.live.bytes => Some(exit),
        _ => Some(last),
    }
}

/// One point of the live-memory series: (seconds, progress, live bytes).
type LivePoint = (f64, u64, u64);

/// The live-memory series: from the snapshots, or from the heap profiles
/// when there are too few snapshots (sampled mode writes none).
fn live_series(snapshots: &[SnapshotReport], profiles: &[StackView]) -> Vec<LivePoint> {
    if snapshots.len() >= 3 || profiles.len() < 3 {
        return running(snapshots)
            .iter()
            .map(|s| (s.time_unix_ms as f64 / 1e3, s.progress, s.totals.live.bytes))
            .collect();
    }
    let seconds = crate::trend::seconds_of(profiles.iter().map(|p| p.time_nanos as f64 / 1e9));
    let all: Vec<LivePoint> = profiles
        .iter()
        .zip(seconds)
        .map(|(p, t)| {
            let live = p
                .sample_index(Some("inuse_space"))
                .map_or(0, |i| p.total(i).max(0) as u64);
            (t, p.progress().unwrap_or(0), live)
        })
        .collect();
    // As for snapshots: the profile written at exit is not the running
    // service.
    let keep = if all.len() > 3 {
        all.len() - 1
    } else {
        all.len()
    };
    all[..keep].to_vec()
}

fn measure_growth(points: &[LivePoint]) -> Growth {
    let warm = points.len() / 4;
    let series = &points[warm.min(points.len())..];
    let t0 = series.first().map_or(0.0, |s| s.0);
    let by_time: Vec<(f64, f64)> = series.iter().map(|s| (s.0 - t0, s.2 as f64)).collect();
    let by_progress: Vec<(f64, f64)> = series.iter().map(|s| (s.1 as f64, s.2 as f64)).collect();
    let per_second = theil_sen(&by_time);
    let has_progress = series.last().is_some_and(|s| s.1 > series[0].1);
    let first = series.first().map_or(0, |s| s.2);
    let last = series.last().map_or(0, |s| s.2);
    let rising = series.windows(2).filter(|w| w[1].2 > w[0].2).count();
    let intervals = series.len().saturating_sub(1).max(1);
    let grown = last.saturating_sub(first);
    let persistent = series.len() >= 3
        && rising * 10 >= intervals * 7
        && grown >= (256 * 1024).max(first / 10)
        && per_second > 0.0;
    Growth {
        samples: series.len(),
        first_bytes: first,
        last_bytes: last,
        seconds: by_time.last().map_or(0.0, |p| p.0),
        bytes_per_second: per_second,
        bytes_per_unit: has_progress.then(|| theil_sen(&by_progress)),
        persistent,
    }
}

fn pinning_findings(
    first: &SnapshotReport,
    last: &SnapshotReport,
    growth: &Growth,
    out: &mut Vec<Finding>,
) {
    let live = last.totals.live.bytes.max(1);
    // One finding per holder: buffers of several allocation sites (a decode
    // buffer's first allocation and its growth) pinned by the same slices.
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
    for p in &merged {
        if p.buffers.bytes < (1 << 20).min(live / 5) {
            continue;
        }
        // Slices kept by the application (a static, or a structure its own
        // code allocated); a framework's connection state holding a slice of
        // its current read buffer is how buffers work, not a leak.
        let held_by_application = match p.holder.kind {
            NodeKind::Static | NodeKind::Data => true,
            NodeKind::Heap => p
                .holder
                .site
                .first()
                .is_some_and(|f| frames::application(f)),
            _ => false,
        };
        if !held_by_application {
            continue;
        }
        let root = root_label(&p.chain);
        let earlier = first
            .pinned
            .iter()
            .filter(|q| root_label(&q.chain) == root && q.buffer_site == p.buffer_site)
            .map(|q| q.buffers.bytes)
            .sum::<u64>();
        let grew = p.buffers.bytes > earlier;
        let json = frames::json_parser(&p.holder.site)
            || last.groups.iter().any(|g| {
                frames::json_parser(&g.site) && root_label(&g.chain) == root && root.is_some()
            });
        let (scenario, title, fix) = if json {
            (
                "json-borrowed-strings",
                "cached values parsed zero-copy from JSON keep whole input documents alive",
                "copy the strings you cache out of the input (owned String / into_owned) before caching, or parse into owned types; a zero-copy value shares the whole received buffer",
            )
        } else if frames::client_side(&p.buffer_site) {
            (
                "response-field-held-client",
                "the caller keeps small slices of responses, pinning whole receive buffers",
                "copy what you keep from a response (Bytes::copy_from_slice, to_vec) instead of keeping a zero-copy slice of it",
            )
        } else {
            (
                "request-field-held",
                "a handler keeps small slices of requests, pinning whole receive buffers",
                "copy what you keep from a request (Bytes::copy_from_slice, to_vec) instead of keeping a zero-copy slice of it",
            )
        };
        out.push(pinned_finding(
            p,
            scenario,
            title,
            fix,
            grew && growth.persistent,
        ));
    }
}

fn pinned_finding(p: &Pinning, scenario: &str, title: &str, fix: &str, growing: bool) -> Finding {
    let avg = p.buffers.bytes as f64 / p.buffers.blocks.max(1) as f64;
    let where_read = p
        .buffer_site
        .iter()
        .find(|f| f.contains("decode") || f.contains("read") || f.contains("recv"))
        .or(p.buffer_site.first())
        .cloned()
        .unwrap_or_default();
    let mut evidence = vec![
        format!(
            "{} buffers ({}, about {} each) allocated in {} are kept alive by {} of slices of them",
            p.buffers.blocks,
            bytes(p.buffers.bytes as f64),
            bytes(avg),
            where_read,
            bytes(p.slice_bytes as f64)
        ),
        format!(
            "the slices are held in {} (allocated in {})",
            p.holder.label(),
            frames::first_application(&p.holder.site).unwrap_or(&p.holder.name)
        ),
        format!("holder chain: {}", crate::snapshot::chain_text(&p.chain)),
    ];
    if growing {
        evidence.push("the number of pinned buffers grows over the run".to_string());
    }
    Finding {
        scenario: scenario.to_string(),
        title: title.to_string(),
        confidence: if growing { 0.95 } else { 0.75 },
        evidence,
        fix: fix.to_string(),
        chain: chain_labels(&p.chain),
        stack: p.buffer_site.clone(),
    }
}

/// Allocations of at least 1 MiB made in a read or decode path during the
/// run: (count, bytes).
fn large_reads(profiles: &[StackView]) -> (i64, i64) {
    let Some(view) = profiles.last() else {
        return (0, 0);
    };
    let (Ok(objects), Ok(space)) = (
        view.sample_index(Some("alloc_objects")),
        view.sample_index(Some("alloc_space")),
    ) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for s in &view.samples {
        let (n, b) = (s.values[objects], s.values[space]);
        let reading = view
            .function_names(s)
            .any(|f| f.contains("decode") || f.contains("read"));
        if n > 0 && b / n >= 1 << 20 && reading {
            total.0 += n;
            total.1 += b;
        }
    }
    total
}

/// Adds a finding if `last` shows oversized blocks kept by a component;
/// returns whether it did.
fn oversized_findings(
    last: &SnapshotReport,
    profiles: &[StackView],
    out: &mut Vec<Finding>,
) -> bool {
    let live = &last.totals.live;
    let typical = live.bytes as f64 / live.blocks.max(1) as f64;
    let outliers: Vec<&LargeBlock> = last
        .largest
        .iter()
        .filter(|b| b.size >= 1 << 20 && b.size as f64 >= 64.0 * typical && !b.chain.is_empty())
        .collect();
    let Some(big) = outliers.iter().find(|b| {
        b.chain
            .first()
            .is_some_and(|l| matches!(l.node.kind, NodeKind::Static | NodeKind::Data))
    }) else {
        return false;
    };
    let total: u64 = outliers.iter().map(|b| b.size).sum();
    let site = frames::first_application(&big.site)
        .unwrap_or_else(|| big.site.first().map_or("?", String::as_str));
    let (reads, read_bytes) = large_reads(profiles);
    let mut evidence = Vec::new();
    if reads > 0 {
        evidence.push(format!(
            "the read path allocated {reads} buffers of 1 MiB or more during the run ({} in all): size outliers among requests",
            bytes(read_bytes as f64)
        ));
    }
    out.push(Finding {
        scenario: "oversized-request".into(),
        title: "a few oversized buffers from request handling are kept by a pool".into(),
        confidence: 0.85,
        evidence: evidence.into_iter().chain([
            format!(
                "{} live blocks of {} to {} ({}) — {:.0}x the average live block of {}",
                outliers.len(),
                bytes(outliers.last().map_or(0, |b| b.size) as f64),
                bytes(big.size as f64),
                bytes(total as f64),
                big.size as f64 / typical.max(1.0),
                bytes(typical)
            ),
            format!("allocated in {site} (request handling{})", if frames::server_side(&big.site) { ", server side" } else { "" }),
            format!("kept by {} after the requests ended", crate::snapshot::chain_text(&big.chain)),
        ]).collect(),
        fix: "find where the oversized payloads come from and fix them at the source; cap the size of buffers the pool keeps (drop larger ones on return)".into(),
        chain: chain_labels(&big.chain),
        stack: big.site.clone(),
    });
    true
}

/// Live instances of what one application constructor builds: (constructor
/// frame, instances, bytes, its stack).
fn constructed(r: &SnapshotReport) -> Option<(String, u64, u64, Vec<String>)> {
    let mut by_ctor: std::collections::HashMap<&str, (u64, u64, Vec<String>)> =
        std::collections::HashMap::new();
    for g in r
        .groups
        .iter()
        .filter(|g| matches!(g.kind, LeakKind::StillReachable | LeakKind::PossiblyLost))
    {
        if let Some(ctor) = frames::constructor(&g.site) {
            let e = by_ctor.entry(ctor).or_insert((u64::MAX, 0, g.site.clone()));
            // Every instance allocates each of the constructor's blocks once:
            // the rarest of them counts the instances.
            e.0 = e.0.min(g.amount.blocks);
            e.1 += g.amount.bytes;
        }
    }
    // The constructor that builds the most (a client's caches), not a thin
    // wrapper that only allocates a handle.
    by_ctor
        .into_iter()
        .map(|(c, (n, b, site))| (c.to_string(), n, b, site))
        .max_by_key(|(_, _, b, _)| *b)
}

/// Many live instances of something an application constructor builds,
/// growing: a client (or any object meant to exist once) built per call.
fn constructor_findings(first: &SnapshotReport, last: &SnapshotReport, out: &mut Vec<Finding>) {
    let Some((ctor, instances, built, site)) = constructed(last) else {
        return;
    };
    let before = constructed(first)
        .filter(|c| c.0 == ctor)
        .map_or(0, |c| c.1);
    // Many instances, more than after warm-up, each of some substance.
    if instances < 16 || instances <= before || built < instances * 4096 {
        return;
    }
    // Who keeps them: the root most of their blocks are reached from.
    let leaf = format!("{} (heap)", site.first().map_or("", String::as_str));
    let mut roots: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for p in last
        .retention
        .iter()
        .filter(|p| p.path.last() == Some(&leaf))
    {
        if let Some(root) = p.path.first() {
            *roots.entry(root.as_str()).or_default() += p.amount.blocks;
        }
    }
    let holder = roots
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(r, _)| r.to_string());
    let requests = last.progress.saturating_sub(first.progress);
    out.push(Finding {
        scenario: "client-per-call".into(),
        title: "a client (with its own caches) is built again for every call and kept".into(),
        confidence: 0.9,
        evidence: vec![
            format!("{instances} live instances built by the constructor {ctor} (up from {before} after warm-up, {requests} calls since)"),
            format!("{} in the blocks the constructor allocates", bytes(built as f64)),
            format!("kept by {}", holder.as_deref().unwrap_or("?")),
        ],
        fix: "build the client once and share it (clone the handle); do not register a new client per call".into(),
        chain: holder.into_iter().collect(),
        stack: site,
    });
}

/// Growth held by a named root (a static): per call site of what it holds.
fn static_holder_findings(
    first: &SnapshotReport,
    last: &SnapshotReport,
    profiles: &[StackView],
    growth: &Growth,
    out: &mut Vec<Finding>,
) {
    let requests = (last.progress as i64 - first.progress as i64).max(0);
    let (accepted_before, _) = profiles
        .first()
        .map_or((0, 0), |v| connections(v, "server"));
    let (accepted_now, live_now) = profiles.last().map_or((0, 0), |v| connections(v, "server"));
    let accepted = accepted_now - accepted_before;
    let before = reached_from_roots(first);
    let now = reached_from_roots(last);
    let mut roots: Vec<(&str, crate::snapshot::Amount)> = now
        .iter()
        .filter(|(k, _)| k.starts_with("static "))
        .map(|(k, a)| (*k, *a))
        .collect();
    roots.sort_by_key(|(_, a)| std::cmp::Reverse(a.bytes));
    for (label, reached) in roots {
        let label = label.to_string();
        let earlier = before.get(label.as_str()).copied().unwrap_or_default();
        let grew_bytes = reached.bytes as i64 - earlier.bytes as i64;
        let grew_blocks = reached.blocks as i64 - earlier.blocks as i64;
        if grew_bytes < (256 * 1024).max(growth.first_bytes as i64 / 20) || grew_blocks <= 0 {
            continue;
        }
        if out.iter().any(|f| f.chain.first() == Some(&label)) {
            continue; // already explained (pinning, outliers)
        }
        // What it reaches, by allocation site (from the shortest chains of
        // every block, so that one block's stale second root does not hide
        // its group).
        let held = reached_sites(last, &label);
        let Some(main) = held.iter().max_by_key(|g| g.amount.bytes) else {
            continue;
        };
        let avg = main.amount.bytes as f64 / main.amount.blocks.max(1) as f64;
        // Blocks the application's own request handling allocated (not a
        // framework's connection state reached through its task lists).
        if !frames::server_side(&main.site)
            || !main.site.first().is_some_and(|f| frames::application(f))
        {
            continue;
        }
        let per_connection = accepted >= 8
            && live_now * 4 <= accepted
            && (main.amount.blocks as i64) <= accepted * 2
            && (main.amount.blocks as i64) * 2 >= accepted / 2;
        if per_connection {
            out.push(Finding {
                scenario: "cross-connection-retention".into(),
                title: "a component keeps buffers of connections that are gone".into(),
                confidence: 0.85,
                evidence: vec![
                    format!(
                        "{} holds {} buffers ({}, about {} each) allocated in {}",
                        label,
                        main.amount.blocks,
                        bytes(main.amount.bytes as f64),
                        bytes(avg),
                        frames::first_application(&main.site).unwrap_or("?")
                    ),
                    format!(
                        "about one buffer per connection: {accepted} connections accepted during the run, {live_now} still open"
                    ),
                    format!("grew by {} while connections came and went", bytes(grew_bytes as f64)),
                ],
                fix: "release a connection's buffers when it closes (or bound the shared list and shrink it), instead of keeping one per connection ever seen".into(),
                chain: vec![label.clone()],
                stack: main.site.clone(),
            });
        } else if main.amount.blocks as i64 * 2 >= requests {
            out.push(Finding {
                scenario: "response-field-held".into(),
                title: "a handler keeps a reference to what it returns".into(),
                confidence: 0.85,
                evidence: vec![
                    format!(
                        "{} holds {} blocks ({}, about {} each) allocated in {} while handling requests",
                        label,
                        main.amount.blocks,
                        bytes(main.amount.bytes as f64),
                        bytes(avg),
                        frames::first_application(&main.site).unwrap_or("?")
                    ),
                    format!("about one block per request ({requests} requests since warm-up); up {}", bytes(grew_bytes as f64)),
                ],
                fix: "do not keep the response (or the buffer it was sent from) after sending it; keep a small copy of what you need".into(),
                chain: vec![label.clone()],
                stack: main.site.clone(),
            });
        }
    }
}

fn connection_findings(
    _first: &SnapshotReport,
    last: &SnapshotReport,
    profiles: &[StackView],
    growth: &Growth,
    out: &mut Vec<Finding>,
) {
    if profiles.len() < 2 {
        return;
    }
    let first_view = &profiles[profiles.len() / 4];
    let last_view = &profiles[profiles.len() - 1];
    let mut best: Option<(&str, i64, i64)> = None;
    for side in ["server", "client"] {
        let (_, before) = connections(first_view, side);
        let (_, now) = connections(last_view, side);
        if now - before >= 10 && best.is_none_or(|b| now > b.2) {
            best = Some((side, before, now));
        }
    }
    let Some((side, before, now)) = best else {
        return;
    };
    if out.iter().any(|f| f.scenario == "client-per-call") {
        return;
    }
    let grown = growth.last_bytes.saturating_sub(growth.first_bytes) as f64;
    let per_connection = grown / (now - before).max(1) as f64;
    let held_in_tasks = last
        .holders
        .iter()
        .take(5)
        .filter(|h| h.node.kind == NodeKind::Heap || h.node.kind == NodeKind::ThreadLocal)
        .count();
    out.push(Finding {
        scenario: "idle-connections".into(),
        title: "open connections accumulate, each holding its buffers".into(),
        confidence: if held_in_tasks > 0 { 0.85 } else { 0.7 },
        evidence: vec![
            format!("{now} live {side} connections (up from {before} after warm-up)"),
            format!("live memory grew {} — about {} per connection", bytes(grown), bytes(per_connection)),
            "the growth is in connection state: handshake, codec and I/O buffers, connection tasks".to_string(),
        ],
        fix: "limit idle connections: set an idle timeout (e.g. tonic Server::http2_keepalive / tcp_keepalive with a max connection age) and bound the client's pool".into(),
        chain: Vec::new(),
        stack: Vec::new(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let pts = [
            (0.0, 0.0),
            (1.0, 10.0),
            (2.0, 20.0),
            (3.0, 1000.0),
            (4.0, 40.0),
        ];
        assert!((theil_sen(&pts) - 10.0).abs() < 1e-9);
        assert_eq!(theil_sen(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn constructor_frames_are_application_frames_named_like_constructors() {
        let site = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            frames::constructor(&site(&[
                "alloc::x",
                "myapp::Client::connect::{{closure}}",
                "main"
            ])),
            Some("myapp::Client::connect::{{closure}}")
        );
        assert_eq!(
            frames::constructor(&site(&["tokio::runtime::Builder::new", "myapp::run"])),
            None
        );
    }
}
