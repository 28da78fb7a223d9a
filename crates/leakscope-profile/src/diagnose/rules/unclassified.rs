//! unclassified: the heap grows and no pattern explains it. Names the
//! steepest growing stacks so that a reader knows where to look; the
//! post-pass drops it when any other finding exists.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_UNCLASSIFIED, UNCLASSIFIED_STACKS};
use super::super::Finding;
use super::{bytes, finding, Rule, SNAPSHOT_HINT};

pub struct Unclassified;

const ID: &str = "unclassified";

impl Rule for Unclassified {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if !ev.heap_grows() {
            return Vec::new();
        }
        let stacks: Vec<_> = ev.growing_stacks().take(UNCLASSIFIED_STACKS).collect();
        let Some(top) = stacks.first() else {
            return Vec::new();
        };
        let mut f = finding(ID, CONFIDENCE_UNCLASSIFIED);
        for s in &stacks {
            let place = s
                .frame(s.facts.first_app.or(s.facts.leaf))
                .unwrap_or(&s.trend.name);
            f.evidence.push(format!(
                "memory allocated in {place} grows {}/s ({} -> {})",
                bytes(s.trend.bytes_per_second),
                bytes(s.trend.first_bytes),
                bytes(s.trend.last_bytes)
            ));
        }
        if ev.snapshots.is_none() {
            f.evidence.push(SNAPSHOT_HINT.to_string());
        }
        f.stack = top.trend.detail.clone();
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    #[test]
    fn growth_is_named_by_its_stacks() {
        let run =
            Run::stacks_only(|t, p| p.stack(&["tokio::io::something", "app::run"], 300 * t, 1000));
        let f = only(&run, &Unclassified);
        assert!(
            f.evidence[0].starts_with("memory allocated in app::run grows"),
            "{f:#?}"
        );
    }

    #[test]
    fn no_growth_no_finding() {
        let run = Run::stacks_only(|_, p| p.stack(&["app::run"], 300, 1000));
        assert!(Unclassified.check(&run.evidence()).is_empty());
    }
}
