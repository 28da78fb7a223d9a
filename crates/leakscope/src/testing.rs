//! Leak assertions for a program's own tests:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: leakscope::Profiler =
//!     leakscope::Profiler::new().with_mode(leakscope::Mode::Full);
//!
//! #[test]
//! fn handling_a_request_keeps_nothing() {
//!     leakscope::testing::assert_no_leak(|| {
//!         // handle_request(...);
//!     });
//! }
//! ```
//!
//! Accounting is per thread and per scope, so tests running in parallel do
//! not see each other's memory: a scope counts what the calling thread
//! allocates while the closure runs (blocks carry a scope label) and what it
//! frees. Work the closure hands to other threads is not counted. Needs full
//! mode (every block tracked).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use leakscope_profile::StackView;

use crate::collect::{scope_begin, scope_end};
use crate::Mode;

/// The label key that marks a scope's allocations.
const SCOPE_LABEL: &str = "leakscope.scope";

/// Blocks the closure allocated and did not free, by allocation stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSite {
    pub bytes: u64,
    pub blocks: u64,
    /// Allocation stack, leaf first.
    pub stack: Vec<String>,
}

/// What a closure did to the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeReport {
    /// Allocated by the closure (on this thread) and still live after it.
    pub kept_bytes: u64,
    pub kept_blocks: u64,
    /// The most bytes the closure's thread had allocated and not freed at
    /// any moment while it ran (frees of older blocks count against it).
    pub peak_bytes: u64,
    pub kept: Vec<KeptSite>,
}

fn require_full_mode(what: &str) {
    assert!(
        crate::mode() == Mode::Full,
        "leakscope::testing::{what} needs full mode (every block tracked): use \
         `Profiler::new().with_mode(Mode::Full)` or set LEAKSCOPE_MODE=full"
    );
}

/// Runs `f` and reports what it kept and its peak.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, ScopeReport) {
    require_full_mode("measure");
    static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed).to_string();
    let label = crate::label(SCOPE_LABEL, &id);
    let saved = scope_begin();
    let result = catch_unwind(AssertUnwindSafe(f));
    let peak = scope_end(saved);
    drop(label);
    let value = match result {
        Ok(v) => v,
        Err(panic) => resume_unwind(panic),
    };
    let view = StackView::new(&crate::heap_profile().to_pprof());
    let (Ok(bytes_at), Ok(blocks_at)) = (
        view.sample_index(Some("inuse_space")),
        view.sample_index(Some("inuse_objects")),
    ) else {
        unreachable!("heap profiles have inuse values")
    };
    let mut kept: Vec<KeptSite> = view
        .samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == SCOPE_LABEL && *v == id))
        .filter(|s| s.values[bytes_at] > 0)
        .map(|s| KeptSite {
            bytes: s.values[bytes_at] as u64,
            blocks: s.values[blocks_at] as u64,
            stack: view.function_names(s).map(str::to_string).collect(),
        })
        .collect();
    kept.sort_by_key(|k| std::cmp::Reverse(k.bytes));
    let report = ScopeReport {
        kept_bytes: kept.iter().map(|k| k.bytes).sum(),
        kept_blocks: kept.iter().map(|k| k.blocks).sum(),
        peak_bytes: peak.max(0) as u64,
        kept,
    };
    (value, report)
}

/// Who holds the blocks of each kept site, from a heap snapshot.
fn holders(kept: &[KeptSite]) -> Vec<Option<String>> {
    let Ok(snapshot) = crate::snapshot() else {
        return vec![None; kept.len()];
    };
    kept.iter()
        .map(|k| {
            let group = snapshot.report().groups.iter().find(|g| {
                let n = g.site.len().min(k.stack.len()).min(4);
                n > 0 && g.site[..n] == k.stack[..n]
            })?;
            Some(if group.chain.is_empty() {
                format!("no pointer to it remains ({:?})", group.kind)
            } else {
                leakscope_profile::snapshot::chain_text(&group.chain)
            })
        })
        .collect()
}

fn describe(report: &ScopeReport) -> String {
    use std::fmt::Write;
    let holders = holders(&report.kept);
    let mut out = String::new();
    for (k, holder) in report.kept.iter().zip(holders).take(5) {
        let _ = writeln!(
            out,
            "  {} bytes in {} blocks allocated at:",
            k.bytes, k.blocks
        );
        for frame in k.stack.iter().take(8) {
            let _ = writeln!(out, "      {frame}");
        }
        if let Some(h) = holder {
            let _ = writeln!(out, "    held by: {h}");
        }
    }
    out
}

/// Panics, listing what was kept with its stacks and holders, if `f` leaves
/// any block it allocated alive.
pub fn assert_no_leak<R>(f: impl FnOnce() -> R) -> R {
    let (value, report) = measure(f);
    if report.kept_blocks > 0 {
        panic!(
            "leakscope: the closure kept {} bytes in {} blocks it allocated:\n{}",
            report.kept_bytes,
            report.kept_blocks,
            describe(&report)
        );
    }
    value
}

/// Panics if, while `f` ran, its thread ever had more than `limit` bytes
/// allocated and not yet freed.
pub fn assert_max_inuse<R>(limit: u64, f: impl FnOnce() -> R) -> R {
    let (value, report) = measure(f);
    if report.peak_bytes > limit {
        panic!(
            "leakscope: the closure's peak was {} bytes in use, over the limit of {limit}{}",
            report.peak_bytes,
            if report.kept.is_empty() {
                String::new()
            } else {
                format!("; it kept:\n{}", describe(&report))
            }
        );
    }
    value
}
