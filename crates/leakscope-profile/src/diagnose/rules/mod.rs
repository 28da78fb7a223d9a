//! The rules: one type per scenario, one file each, checked in the order of
//! [`RULES`] against one [`Evidence`]. A rule reads only the evidence (never
//! another rule's findings); the post-pass (`super::resolve`) settles
//! overlaps.
//!
//! Adding a scenario: an entry in `super::scenarios::SCENARIOS`, a file here
//! with its rule and the rule's unit tests (on evidence built from small
//! synthetic profiles and snapshots, see `test_support`), its place in
//! [`RULES`], and the lab's reproduction of it.

use super::evidence::{Evidence, StackEvidence};
use super::scenarios::scenario;
use super::Finding;
use crate::frames::Class;
use crate::snapshot::{Link, NodeKind};
use crate::units::format_value;

mod allocator_keeps_freed;
mod cache_without_bound;
mod client_per_call;
mod cross_connection_retention;
mod growth_inside_dependency;
mod growth_outside_heap;
mod idle_connections;
mod json_borrowed_strings;
mod oversized_request;
mod pinned;
mod request_field_held;
mod response_field_held;
mod response_field_held_client;
mod task_leak;
mod unbounded_channel;
mod unclassified;

#[cfg(test)]
pub(crate) mod test_support;

/// A rule: recognises one scenario in the evidence.
pub trait Rule: Sync {
    /// The id of its scenario (in `super::scenarios::SCENARIOS`).
    fn scenario(&self) -> &'static str;
    /// Its findings (usually none or one).
    fn check(&self, ev: &Evidence) -> Vec<Finding>;
}

/// Every rule, in the order they are checked: growth that is not the
/// heap's (mappings outside it, memory the allocator keeps), then Rust's own patterns and
/// client construction first (they explain what other rules would see
/// alone: tasks and clients hold receive buffers and connections), then the
/// framework patterns, then the general case and the fallback. Among
/// findings of equal confidence, this order ranks them.
pub static RULES: [&dyn Rule; 15] = [
    &growth_outside_heap::GrowthOutsideHeap,
    &allocator_keeps_freed::AllocatorKeepsFreed,
    &task_leak::TaskLeak,
    &unbounded_channel::UnboundedChannel,
    &client_per_call::ClientPerCall,
    &idle_connections::IdleConnections,
    &oversized_request::OversizedRequest,
    &json_borrowed_strings::JsonBorrowedStrings,
    &response_field_held_client::ResponseFieldHeldClient,
    &request_field_held::RequestFieldHeld,
    &cross_connection_retention::CrossConnectionRetention,
    &response_field_held::ResponseFieldHeld,
    &growth_inside_dependency::GrowthInsideDependency,
    &cache_without_bound::CacheWithoutBound,
    &unclassified::Unclassified,
];

/// The position of a scenario's rule in [`RULES`].
pub fn rank(scenario: &str) -> usize {
    RULES
        .iter()
        .position(|r| r.scenario() == scenario)
        .unwrap_or(RULES.len())
}

pub(crate) fn bytes(v: f64) -> String {
    format_value(v.round() as i64, "bytes")
}

pub(crate) fn chain_labels(chain: &[Link]) -> Vec<String> {
    chain.iter().map(|l| l.node.label()).collect()
}

/// A finding of `id` with its registry title and fix.
pub(crate) fn finding(id: &str, confidence: f64) -> Finding {
    let s = scenario(id);
    Finding {
        scenario: s.id.to_string(),
        title: s.title.to_string(),
        confidence,
        evidence: Vec::new(),
        fix: s.fix.to_string(),
        chain: Vec::new(),
        stack: Vec::new(),
        dependencies: Vec::new(),
        claims: Vec::new(),
    }
}

/// Whether a stack with a receive role allocates byte buffers (`bytes`'
/// buffers, below its receive frame): what a zero-copy slice can pin. A
/// receive path that decodes into structures (a header map, say) keeps
/// copies, and no slice of a request pins them.
pub(crate) fn receives_into_buffers(s: &StackEvidence) -> bool {
    bytes_frames_below(s, s.facts.role_frame)
}

/// Whether a `bytes` frame lies below frame `upto` of the stack (none
/// when `upto` is unknown): the allocation is one of `bytes`' buffers.
pub(crate) fn bytes_frames_below(s: &StackEvidence, upto: Option<usize>) -> bool {
    s.frames()[..upto.unwrap_or(0)]
        .iter()
        .any(|f| f.starts_with("bytes::"))
}

/// The first task's cell on `chain` and where the task was spawned: the
/// first application frame of the cell's allocation stack past the
/// runtime's spawn (unknown when the snapshot's stack stops short of it).
pub(crate) fn task_on_chain<'a>(
    ev: &Evidence,
    chain: &'a [Link],
) -> Option<(&'a Link, Option<&'a str>)> {
    let task = chain.iter().find(|l| {
        l.node.kind == NodeKind::Heap && ev.facts(&l.node.site).role == Some(Class::TaskCell)
    })?;
    let spawned = ev
        .facts(&task.node.site)
        .caller
        .and_then(|i| task.node.site.get(i))
        .map(String::as_str);
    Some((task, spawned))
}

/// Said of every finding from stacks alone.
pub(crate) const SNAPSHOT_HINT: &str = "run with LEAKSCOPE_MODE=full (or take \
     leakscope::snapshot()) to see which object holds it";

/// A finding of `id` from one growing stack: its growth, what its frames
/// are, and that the holder is unknown. `what` says what the stack shows.
pub(crate) fn stack_finding(
    ev: &Evidence,
    id: &str,
    confidence: f64,
    s: &StackEvidence,
    what: String,
) -> Finding {
    let mut f = finding(id, confidence);
    f.evidence.push(format!(
        "live memory allocated at {} grows {}/s ({} -> {}), consistency (Kendall's tau) {:.2}",
        s.trend.name,
        bytes(s.trend.bytes_per_second),
        bytes(s.trend.first_bytes),
        bytes(s.trend.last_bytes),
        s.trend.consistency
    ));
    if let Some(u) = s.trend.bytes_per_unit {
        f.evidence
            .push(format!("about {} more per request served", bytes(u)));
    }
    f.evidence.push(what);
    if let Some(krate) = s
        .frame(s.facts.role_frame.or(s.facts.leaf))
        .map(crate::frames::crate_of)
        .filter(|k| !k.is_empty())
    {
        let owner = if s.facts.app_leaf() {
            "the application's own code".to_string()
        } else {
            format!("the {krate}{} crate", ev.version_suffix(krate))
        };
        f.evidence.push(format!(
            "the allocations are made by {owner} ({})",
            s.frame(s.facts.role_frame.or(s.facts.leaf)).unwrap_or("?")
        ));
    }
    f.evidence.push(format!(
        "no snapshot in this run, so the holder is unknown: {SNAPSHOT_HINT}"
    ));
    f.stack = s.trend.detail.clone();
    if let Some(leaf) = s.frame(s.facts.leaf) {
        f.claims.push(leaf.to_string());
    }
    f.claims.push(s.trend.name.clone());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::scenarios::SCENARIOS;

    #[test]
    fn every_scenario_has_one_rule_and_every_rule_a_scenario() {
        for s in SCENARIOS {
            let n = RULES.iter().filter(|r| r.scenario() == s.id).count();
            assert_eq!(n, 1, "{} has {n} rules", s.id);
        }
        assert_eq!(RULES.len(), SCENARIOS.len());
    }
}
