//! The leak summary of a program at exit, in the vocabulary people know from
//! Valgrind's memcheck: definitely lost, indirectly lost, possibly lost,
//! still reachable; each group with its bytes, blocks, allocation stack and,
//! for what is still reachable, the chain that holds it. Groups a
//! suppression rule matches (`suppressions`) are counted as suppressed.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Amount, HeuristicAmount, LeakKind, SnapshotReport};
use crate::suppressions::{first_match, Suppression};
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
    /// The suppression rule that matched the allocation stack: then the
    /// group counts as suppressed, not as `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
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
    /// Blocks a suppression rule matched, whatever their kind (not in the
    /// four categories, as in Valgrind's summary).
    #[serde(default)]
    pub suppressed: Amount,
}

/// The `--report` file of `leakscope run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakSummary {
    pub pid: u32,
    pub leaks: Vec<Leak>,
    pub totals: LeakTotals,
    /// Of what is still reachable, the blocks reached only through an
    /// interior pointer a leak-check heuristic accepted, by heuristic (as
    /// Valgrind lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via_heuristic: Vec<HeuristicAmount>,
}

impl LeakSummary {
    /// The summary of a snapshot at exit, with the groups whose allocation
    /// stack a rule of `suppressions` matches counted apart.
    pub fn from_snapshot(report: &SnapshotReport, suppressions: &[Suppression]) -> Self {
        let leaks: Vec<Leak> = report
            .groups
            .iter()
            .map(|g| Leak {
                kind: g.kind,
                bytes: g.amount.bytes,
                blocks: g.amount.blocks,
                stack: g.site.clone(),
                holder_chain: g.chain.iter().map(|l| l.node.label()).collect(),
                suppressed_by: first_match(suppressions, &g.site).map(|r| r.name.clone()),
            })
            .collect();
        let t = &report.totals;
        let mut totals = LeakTotals {
            definitely_lost: t.definitely_lost,
            indirectly_lost: t.indirectly_lost,
            possibly_lost: t.possibly_lost,
            still_reachable: t.still_reachable,
            unscanned: t.unscanned,
            suppressed: Amount::default(),
        };
        for leak in leaks.iter().filter(|l| l.suppressed_by.is_some()) {
            let category = match leak.kind {
                LeakKind::DefinitelyLost => &mut totals.definitely_lost,
                LeakKind::IndirectlyLost => &mut totals.indirectly_lost,
                LeakKind::PossiblyLost => &mut totals.possibly_lost,
                LeakKind::StillReachable => &mut totals.still_reachable,
            };
            category.bytes = category.bytes.saturating_sub(leak.bytes);
            category.blocks = category.blocks.saturating_sub(leak.blocks);
            totals.suppressed.bytes += leak.bytes;
            totals.suppressed.blocks += leak.blocks;
        }
        LeakSummary {
            pid: report.pid,
            leaks,
            totals,
            via_heuristic: report.totals.via_heuristic.clone(),
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
        if !self.via_heuristic.is_empty() {
            let _ = writeln!(out, "{prefix}{:>22}of which reachable via heuristic:", "");
            for h in &self.via_heuristic {
                let _ = writeln!(
                    out,
                    "{prefix}{:>24}{:<19}: {}",
                    "",
                    h.heuristic,
                    amount(&h.amount)
                );
            }
        }
        let _ = writeln!(
            out,
            "{prefix}{:>18}: {}",
            "suppressed",
            amount(&t.suppressed)
        );
        // What each rule suppressed: never hidden.
        let mut by_rule: Vec<(&str, Amount)> = Vec::new();
        for leak in &self.leaks {
            if let Some(rule) = &leak.suppressed_by {
                match by_rule.iter_mut().find(|(r, _)| r == rule) {
                    Some((_, a)) => {
                        a.bytes += leak.bytes;
                        a.blocks += leak.blocks;
                    }
                    None => by_rule.push((
                        rule,
                        Amount {
                            bytes: leak.bytes,
                            blocks: leak.blocks,
                        },
                    )),
                }
            }
        }
        for (rule, a) in by_rule {
            let _ = writeln!(out, "{prefix}{:>22}{rule}: {}", "", amount(&a));
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
                .filter(|l| l.kind == kind && l.suppressed_by.is_none())
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
