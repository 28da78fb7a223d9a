//! The self-check: from a series of heap profiles and snapshots taken while a
//! service ran, decide whether memory grows, and match the evidence to the
//! known ways services leak. Each finding names the scenario, the evidence
//! (holders, stacks, counts, growth), a confidence and the fix.
//!
//! Data flows one way:
//!
//! ```text
//! profiles, snapshots ─► Evidence::build (evidence.rs: growth from trend.rs,
//!                        roots, pins, sites, connections, stacks with frame
//!                        classes from frames.rs)
//!                     ─► every rule of rules::RULES, in order (one per
//!                        scenario of scenarios::SCENARIOS)
//!                     ─► resolve.rs (overlaps) ─► verdict and summary
//! ```
//!
//! No rule sees a scenario's name from outside (the lab's scenario name
//! never reaches the analysis); thresholds live in `thresholds.rs`.

pub mod evidence;
pub mod memory_growth;
mod resolve;
pub mod rules;
pub mod scenarios;
pub mod thresholds;

use serde::{Deserialize, Serialize};

use crate::dependencies::{CrateVersion, FindingDependency};
use crate::frames::FrameTable;
use crate::snapshot::SnapshotReport;
use crate::trend::{TotalSource, TrendState};
use crate::units::format_value;
use crate::view::StackView;
use evidence::Evidence;

/// Whether memory grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Leak,
    NoLeak,
    /// Too few samples to tell.
    Inconclusive,
}

/// How live memory moved over the run, as the growth model
/// ([`crate::trend`]) judged it: the same figures `leakscope trend` prints
/// for all live memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    pub state: TrendState,
    /// Points judged, and points skipped as warm-up before them.
    pub samples: usize,
    pub warmup: usize,
    pub source: TotalSource,
    pub first_bytes: u64,
    pub last_bytes: u64,
    pub seconds: f64,
    /// Robust (Theil–Sen) slope of live bytes over time.
    pub bytes_per_second: f64,
    /// The same against the application's progress counter, if it has one.
    pub bytes_per_unit: Option<f64>,
    /// Kendall's tau: 1 when it rose at every step.
    pub consistency: f64,
}

/// One diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A scenario id of [`scenarios::SCENARIOS`].
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
    /// The dependencies its stack and chain pass through (stack first,
    /// leaf first), with their versions and, when checked against an
    /// advisory database, the advisories that can explain the growth.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<FindingDependency>,
    /// What the finding explains (holder labels, stack frames), for the
    /// post-pass.
    #[serde(skip)]
    pub claims: Vec<String>,
}

/// The result of a self-check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfCheck {
    pub verdict: Verdict,
    pub summary: String,
    pub growth: Growth,
    pub findings: Vec<Finding>,
    /// Every dependency crate whose version the run's debug information
    /// names (from snapshots and profiles), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<CrateVersion>,
}

/// In sampled mode, findings come from growing stacks; a heap walk's
/// snapshots then say who holds the sampled blocks of each finding's stack.
fn name_walked_holders(ev: &Evidence, findings: &mut [Finding]) {
    for f in findings.iter_mut().filter(|f| f.chain.is_empty()) {
        if let Some(walked) = ev.walked_chain(&f.stack) {
            let chain = walked.chain;
            let how_many = if walked.held >= walked.sampled {
                format!(
                    "the sampled blocks of this stack ({})",
                    bytes(walked.held as f64)
                )
            } else {
                format!(
                    "the most of the sampled blocks of this stack ({} of {})",
                    bytes(walked.held as f64),
                    bytes(walked.sampled as f64)
                )
            };
            f.evidence.push(format!(
                "a walk of glibc's heap finds {how_many} held by {}",
                chain.join(" -> ")
            ));
            if chain
                .first()
                .is_some_and(|root| root.starts_with("static "))
            {
                f.confidence = f.confidence.max(thresholds::CONFIDENCE_WALKED_STATIC);
            }
            if let Some((task, why)) = held_by_a_task(f, &chain) {
                // Kept by tasks that never complete, not by a handler
                // keeping a field or a collection: the fix is the task's.
                let stack = std::mem::take(&mut f.stack);
                let mut evidence = std::mem::take(&mut f.evidence);
                *f = rules::finding("task-leak", thresholds::CONFIDENCE_STACK_ONLY);
                evidence.push(format!("on that chain, {task} is a task: {why}"));
                f.evidence = evidence;
                f.stack = stack;
            }
            f.chain = chain;
        }
    }
}

/// Functions a block without an allocation stack refers to (its vtable's
/// first entry) that make it an async runtime's task.
const TASK_VTABLES: &[&str] = &["tokio::runtime::task::raw::", "async_task::raw::"];

/// The chain node that is a task, when the walk finds a finding's blocks
/// held through one, and what that says: for received data kept (request
/// or response slices), any task on the chain; for growth nothing named,
/// a task that refers to the blocks directly (tasks piling up, each keeping
/// some; a task's own collection would be the blocks' direct holder).
fn held_by_a_task<'c>(f: &Finding, chain: &'c [String]) -> Option<(&'c str, &'static str)> {
    let is_task = |node: &&String| {
        node.split_once("refers to ")
            .is_some_and(|(_, what)| TASK_VTABLES.iter().any(|t| what.starts_with(t)))
    };
    match f.scenario.as_str() {
        "request-field-held" | "response-field-held-client" => {
            chain.iter().find(is_task).map(|t| {
                (
                    t.as_str(),
                    "tasks that never complete keep what they received",
                )
            })
        }
        "unclassified" => chain
            .len()
            .checked_sub(2)
            .map(|i| &chain[i])
            .filter(is_task)
            .map(|t| {
                (
                    t.as_str(),
                    "the growing blocks are referred to directly by tasks' state: tasks that \
                     never complete keep what they hold",
                )
            }),
        _ => None,
    }
}

fn bytes(v: f64) -> String {
    format_value(v.round() as i64, "bytes")
}

/// Runs the self-check over snapshots and profiles in time order (either
/// may be empty), with the frame classes in use ([`crate::frames::global`]).
pub fn self_check(snapshots: &[SnapshotReport], profiles: &[StackView]) -> SelfCheck {
    self_check_with(snapshots, profiles, crate::frames::global())
}

/// The same with a given frame table.
pub fn self_check_with(
    snapshots: &[SnapshotReport],
    profiles: &[StackView],
    frames: &FrameTable,
) -> SelfCheck {
    self_check_of_run(snapshots, profiles, &[], frames)
}

/// The self-check of a whole run: snapshots, profiles and the memory
/// breakdowns written beside the profiles (each in time order, any may be
/// empty), which say whether RSS grows outside the live heap.
pub fn self_check_of_run(
    snapshots: &[SnapshotReport],
    profiles: &[StackView],
    memory: &[crate::memory::Breakdown],
    frames: &FrameTable,
) -> SelfCheck {
    let ev = Evidence::build(snapshots, profiles, frames).with_memory(memory);
    let found: Vec<Finding> = rules::RULES.iter().flat_map(|r| r.check(&ev)).collect();
    let mut findings = resolve::resolve(found);
    // Not re-ranked: the rules' order stands; a raised confidence only
    // says memory is held (the verdict below).
    name_walked_holders(&ev, &mut findings);
    for f in &mut findings {
        f.dependencies = ev
            .versions
            .named_by(&f.stack, &f.chain, &|c| ev.is_dependency(c));
    }
    // What explains growth without a leak (the allocator keeping freed
    // memory) comes after every finding of memory being kept.
    findings.sort_by_key(|f| !scenarios::scenario(&f.scenario).leak);
    let t = &ev.trend.total;
    let growth = Growth {
        state: t.state,
        samples: ev.trend.samples,
        warmup: ev.trend.warmup,
        source: ev.trend.source,
        first_bytes: t.first_bytes.max(0.0) as u64,
        last_bytes: t.last_bytes.max(0.0) as u64,
        seconds: ev.trend.seconds,
        bytes_per_second: t.bytes_per_second,
        bytes_per_unit: t.bytes_per_unit,
        consistency: t.consistency,
    };
    let grows = growth.state == TrendState::Growing;
    let verdict = if growth.state == TrendState::Inconclusive {
        Verdict::Inconclusive
    } else if grows
        || findings.iter().any(|f| {
            f.confidence >= thresholds::VERDICT_CONFIDENCE && scenarios::scenario(&f.scenario).leak
        })
    {
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
        Verdict::Leak
            if !grows
                && findings
                    .first()
                    .is_some_and(|f| f.scenario == "growth-outside-heap") =>
        {
            let f = &findings[0];
            format!(
                "{}; live heap memory is {} at about {}",
                f.title,
                growth.state.name(),
                bytes(growth.last_bytes as f64)
            )
        }
        Verdict::NoLeak
            if findings
                .iter()
                .any(|f| !scenarios::scenario(&f.scenario).leak) =>
        {
            let rss = ev.memory.as_ref().map_or(String::new(), |g| {
                format!(
                    "RSS grew {} -> {} while ",
                    bytes(g.first.rss as f64),
                    bytes(g.last.rss as f64)
                )
            });
            format!(
                "not a leak: {rss}live memory is {} at about {}; the allocator keeps memory the program freed",
                growth.state.name(),
                bytes(growth.last_bytes as f64)
            )
        }
        Verdict::Leak if !grows => format!(
            "memory is being held: {} live at the end (live memory {}); {}",
            bytes(growth.last_bytes as f64),
            growth.state.name(),
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
            "no leak: live memory is {} at about {} ({}/s over {:.1}s)",
            growth.state.name(),
            bytes(growth.last_bytes as f64),
            bytes(growth.bytes_per_second),
            growth.seconds
        ),
        Verdict::Inconclusive => {
            "inconclusive: fewer than three snapshots or profiles to compare".to_string()
        }
    };
    if verdict == Verdict::NoLeak {
        findings.retain(|f| f.confidence >= thresholds::VERDICT_CONFIDENCE);
    }
    SelfCheck {
        verdict,
        summary,
        growth,
        findings,
        dependencies: ev.versions.all(),
    }
}

#[cfg(test)]
mod tests {
    use super::rules::test_support::*;
    use super::*;

    #[test]
    fn report_and_trend_agree_on_growth() {
        let run = Run::new(|t, b| b.stack(&["app::leak"], 100 * t, 4096));
        let check = self_check_with(&run.snapshots, &run.profiles, &FrameTable::builtin());
        let trend = crate::trend::trends(&run.profiles, &run.snapshots);
        assert_eq!(check.growth.state, trend.total.state);
        assert_eq!(check.growth.state, TrendState::Growing);
        assert_eq!(check.growth.last_bytes, trend.total.last_bytes as u64);
        assert_eq!(check.verdict, Verdict::Leak);
    }

    #[test]
    fn a_steady_service_is_no_leak_and_has_no_findings() {
        let run = Run::new(|_, b| b.stack(&["app::steady"], 100, 4096));
        let check = self_check_with(&run.snapshots, &run.profiles, &FrameTable::builtin());
        assert_eq!(check.verdict, Verdict::NoLeak);
        assert!(check.findings.is_empty(), "{check:#?}");
    }

    #[test]
    fn growth_a_heap_walk_finds_held_directly_by_tasks_is_a_task_leak() {
        let task = "(allocation stack not sampled), refers to tokio::runtime::task::raw::poll";
        let check = |via: &str| {
            let run = Run::walked(|t, b| {
                b.held(
                    "thread w: tokio::runtime::task::raw::RawTask::poll",
                    &[task, task, via],
                    TOKIO_READ_BUF,
                    300 * t as u64,
                    8192,
                )
            });
            self_check_with(&run.snapshots, &run.profiles, &FrameTable::builtin())
        };
        let found = check(task);
        assert_eq!(found.findings[0].scenario, "task-leak", "{found:#?}");
        assert!(found.findings[0]
            .evidence
            .last()
            .is_some_and(|e| e.contains("referred to directly by tasks' state")));
        // Reached through a task, but held by something else (a task's own
        // collection): not said to be the tasks'.
        let found = check("(allocation stack not sampled)");
        assert_eq!(found.findings[0].scenario, "unclassified", "{found:#?}");
    }

    #[test]
    fn findings_name_the_dependencies_on_their_stacks_with_versions() {
        const REGISTRY: &str = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        let stack = &[
            "bytes::bytes_mut::BytesMut::reserve_inner",
            "h2::proto::streams::recv::Recv::recv_data",
            "app::serve",
        ];
        let run = Run::stacks_only(|t, b| {
            b.file(
                "bytes::bytes_mut::BytesMut::reserve_inner",
                &format!("{REGISTRY}/bytes-1.10.1/src/bytes_mut.rs"),
            );
            b.file(
                "h2::proto::streams::recv::Recv::recv_data",
                &format!("{REGISTRY}/h2-0.3.16/src/proto/streams/recv.rs"),
            );
            b.stack(stack, 100 * t, 4096);
        });
        let check = self_check_with(&[], &run.profiles, &FrameTable::builtin());
        let top = &check.findings[0];
        let deps: Vec<String> = top.dependencies.iter().map(|d| d.to_string()).collect();
        assert_eq!(deps, ["bytes 1.10.1", "h2 0.3.16"], "{check:#?}");
        assert!(
            top.evidence
                .iter()
                .any(|e| e.contains("the h2 0.3.16 crate")),
            "{check:#?}"
        );
        let all: Vec<String> = check.dependencies.iter().map(|d| d.to_string()).collect();
        assert_eq!(all, ["bytes 1.10.1", "h2 0.3.16"]);
        // Without registry paths: no versions, and crates of unknown
        // origin are not called dependencies.
        let run = Run::stacks_only(|t, b| b.stack(stack, 100 * t, 4096));
        let check = self_check_with(&[], &run.profiles, &FrameTable::builtin());
        assert!(check.dependencies.is_empty());
        assert!(check.findings[0].dependencies.is_empty(), "{check:#?}");
    }

    #[test]
    fn the_walked_holder_is_the_one_keeping_most_bytes_not_the_largest_blocks() {
        let task = "(allocation stack not sampled), refers to tokio::runtime::task::raw::poll";
        let registers = "registers of thread tokio-runtime-worker";
        let check = |holders: &[(&str, &[&str], u64, u64)]| {
            let run = Run::walked(|t, b| {
                let grown: Vec<_> = holders
                    .iter()
                    .map(|&(root, via, blocks, each)| {
                        // The block in a worker's hands stays one.
                        (
                            root,
                            via,
                            if blocks > 1 {
                                blocks * t as u64
                            } else {
                                blocks
                            },
                            each,
                        )
                    })
                    .collect();
                b.held_variously(TOKIO_READ_BUF, &grown)
            });
            let walked = run.evidence().walked_chain(&strings(TOKIO_READ_BUF));
            let check = self_check_with(&run.snapshots, &run.profiles, &FrameTable::builtin());
            (walked, check)
        };
        // The block being handled, the largest, sits in a worker's
        // registers; the many smaller ones are kept by tasks.
        let (walked, found) = check(&[
            (registers, &[], 1, 65536),
            (
                "thread w: tokio::runtime::task::raw::RawTask::poll",
                &[task, task],
                300,
                8192,
            ),
        ]);
        let walked = walked.expect("a walked holder");
        assert_eq!(walked.held, 2400 * 8192);
        assert_eq!(walked.sampled, 2400 * 8192 + 65536);
        assert_eq!(walked.chain[2], format!("{task} (heap)"));
        let f = &found.findings[0];
        assert_eq!(f.scenario, "task-leak", "{found:#?}");
        assert!(
            f.evidence.iter().any(|e| e.contains(
                "finds the most of the sampled blocks of this stack (18.75MB of 18.81MB) held by thread w"
            )),
            "{f:#?}"
        );
        // Tasks in a list are reached from several roots: together they
        // keep more than a collection reached from one, and the chain is
        // the root's that reaches most of them.
        let (walked, found) = check(&[
            (registers, &[], 1, 65536),
            ("static app::SHUTDOWN", &[task, task], 100, 8192),
            (
                "thread w: tokio::runtime::task::raw::RawTask::poll",
                &[task],
                120,
                8192,
            ),
            (
                "static app::SEEN",
                &["(allocation stack not sampled)"],
                150,
                8192,
            ),
        ]);
        let walked = walked.expect("a walked holder");
        assert_eq!(walked.held, 220 * 8 * 8192);
        assert_eq!(
            walked.chain[0],
            "thread w: tokio::runtime::task::raw::RawTask::poll"
        );
        assert_eq!(found.findings[0].scenario, "task-leak", "{found:#?}");
        // Kept by a static: named, and sure memory is held.
        let (_, found) = check(&[
            (registers, &[], 1, 65536),
            (
                "static app::FRAMES",
                &["(allocation stack not sampled)"],
                300,
                8192,
            ),
        ]);
        let f = &found.findings[0];
        assert_eq!(f.scenario, "unclassified", "{found:#?}");
        assert_eq!(f.chain[0], "static app::FRAMES");
        assert!(f.confidence >= thresholds::CONFIDENCE_WALKED_STATIC);
    }

    #[test]
    fn too_few_points_are_inconclusive() {
        let run = Run::stacks_only(|t, b| b.stack(&["app::leak"], 100 * t, 4096));
        let check = self_check_with(&[], &run.profiles[..2], &FrameTable::builtin());
        assert_eq!(check.verdict, Verdict::Inconclusive);
    }
}
