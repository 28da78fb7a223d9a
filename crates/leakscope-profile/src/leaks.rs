//! The leak summary of a program at exit, in the vocabulary people know from
//! Valgrind's memcheck: definitely lost, indirectly lost, possibly lost,
//! still reachable; each group with its bytes, blocks, allocation stack and,
//! for what is still reachable, the chain that holds it.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Amount, LeakKind, SnapshotReport};
use crate::units::format_value;

/// One group of blocks: one kind, one allocation site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    pub kind: LeakKind,
    pub bytes: u64,
    pub blocks: u64,
    /// Allocation stack, leaf first.
    pub stack: Vec<String>,
    /// For reachable blocks: from a root (first) to the holder of the
    /// group's largest block.
    pub holder_chain: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakTotals {
    pub definitely_lost: Amount,
    pub indirectly_lost: Amount,
    pub possibly_lost: Amount,
    pub still_reachable: Amount,
    /// Blocks counted above whose memory could not all be read: what they
    /// point to there was not followed.
    #[serde(default)]
    pub unscanned: Amount,
}

/// The `--report` file of `leakscope run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakSummary {
    pub pid: u32,
    pub leaks: Vec<Leak>,
    pub totals: LeakTotals,
}

impl LeakSummary {
    pub fn from_snapshot(report: &SnapshotReport) -> Self {
        let leaks = report
            .groups
            .iter()
            .map(|g| Leak {
                kind: g.kind,
                bytes: g.amount.bytes,
                blocks: g.amount.blocks,
                stack: g.site.clone(),
                holder_chain: g.chain.iter().map(|l| l.node.label()).collect(),
            })
            .collect();
        let t = &report.totals;
        LeakSummary {
            pid: report.pid,
            leaks,
            totals: LeakTotals {
                definitely_lost: t.definitely_lost,
                indirectly_lost: t.indirectly_lost,
                possibly_lost: t.possibly_lost,
                still_reachable: t.still_reachable,
                unscanned: t.unscanned,
            },
        }
    }

    /// The summary as text, one line per category and the largest groups
    /// of each, every line starting with `prefix`.
    pub fn render(&self, prefix: &str, groups_per_kind: usize) -> String {
        let mut out = String::new();
        let amount = |a: &Amount| format!("{} bytes in {} blocks", a.bytes, a.blocks);
        let t = &self.totals;
        let _ = writeln!(out, "{prefix}LEAK SUMMARY (pid {}):", self.pid);
        for (kind, a) in [
            ("definitely lost", &t.definitely_lost),
            ("indirectly lost", &t.indirectly_lost),
            ("possibly lost", &t.possibly_lost),
            ("still reachable", &t.still_reachable),
        ] {
            let _ = writeln!(out, "{prefix}{kind:>18}: {}", amount(a));
        }
        if t.unscanned.blocks > 0 {
            let _ = writeln!(
                out,
                "{prefix}{:>18}: {} (counted above; their pages were made unreadable, so \
                 what they point to was not followed)",
                "not scanned",
                amount(&t.unscanned)
            );
        }
        for (kind, words) in [
            (LeakKind::DefinitelyLost, "are definitely lost"),
            (LeakKind::IndirectlyLost, "are indirectly lost"),
            (LeakKind::PossiblyLost, "are possibly lost"),
            (LeakKind::StillReachable, "are still reachable"),
        ] {
            for leak in self
                .leaks
                .iter()
                .filter(|l| l.kind == kind)
                .take(groups_per_kind)
            {
                let _ = writeln!(
                    out,
                    "{prefix}\n{prefix}{} ({}) in {} blocks {words}, allocated at",
                    leak.bytes,
                    format_value(crate::units::clamp_i64(leak.bytes), "bytes"),
                    leak.blocks
                );
                for frame in leak.stack.iter().take(6) {
                    let _ = writeln!(out, "{prefix}      {frame}");
                }
                if !leak.holder_chain.is_empty() {
                    let _ = writeln!(
                        out,
                        "{prefix}   held by: {}",
                        leak.holder_chain.join(" -> ")
                    );
                }
            }
        }
        out
    }
}
