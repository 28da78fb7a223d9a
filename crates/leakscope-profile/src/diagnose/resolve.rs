//! The post-pass: one answer per holder and per stack, in a stated order.
//!
//! 1. Findings are ranked by confidence, then by the rules' order.
//! 2. A finding is dropped when a better-ranked one of a scenario that
//!    explains it exists (`Scenario::explains`).
//! 3. A finding that shares a claim (a holder, a stack's frame) with a
//!    better-ranked one is dropped: the holder or stack is explained.
//! 4. The fallback (unclassified) is dropped when anything else is found.

use super::rules::rank;
use super::scenarios::{scenario, Scope};
use super::Finding;

pub fn resolve(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| rank(&a.scenario).cmp(&rank(&b.scenario)))
    });
    let mut kept: Vec<Finding> = Vec::new();
    for f in findings {
        let explained = kept.iter().any(|k| {
            scenario(&k.scenario)
                .explains
                .contains(&f.scenario.as_str())
                || k.claims.iter().any(|c| f.claims.contains(c))
        });
        if !explained {
            kept.push(f);
        }
    }
    if kept
        .iter()
        .any(|f| scenario(&f.scenario).scope != Scope::Fallback)
    {
        kept.retain(|f| scenario(&f.scenario).scope != Scope::Fallback);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::finding;

    fn f(id: &str, confidence: f64, claims: &[&str]) -> Finding {
        let mut f = finding(id, confidence);
        f.claims = claims.iter().map(|c| c.to_string()).collect();
        f
    }

    fn ids(v: &[Finding]) -> Vec<&str> {
        v.iter().map(|f| f.scenario.as_str()).collect()
    }

    #[test]
    fn one_finding_per_holder_the_best_ranked() {
        let out = resolve(vec![
            f("cache-without-bound", 0.8, &["static app::CACHE"]),
            f("request-field-held", 0.95, &["static app::CACHE"]),
        ]);
        assert_eq!(ids(&out), ["request-field-held"]);
    }

    #[test]
    fn equal_confidence_follows_the_rules_order() {
        let out = resolve(vec![
            f("request-field-held", 0.5, &["a"]),
            f("task-leak", 0.5, &["b"]),
        ]);
        assert_eq!(ids(&out), ["task-leak", "request-field-held"]);
    }

    #[test]
    fn clients_per_call_explain_their_connections() {
        let out = resolve(vec![
            f("idle-connections", 0.5, &[]),
            f("client-per-call", 0.5, &["x"]),
        ]);
        assert_eq!(ids(&out), ["client-per-call"]);
    }

    #[test]
    fn the_fallback_only_when_nothing_else() {
        let out = resolve(vec![
            f("unclassified", 0.3, &[]),
            f("cache-without-bound", 0.4, &["y"]),
        ]);
        assert_eq!(ids(&out), ["cache-without-bound"]);
        let out = resolve(vec![f("unclassified", 0.3, &[])]);
        assert_eq!(ids(&out), ["unclassified"]);
    }
}
