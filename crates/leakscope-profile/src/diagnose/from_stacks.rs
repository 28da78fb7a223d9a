//! Findings from allocation stacks alone, for runs without snapshots
//! (sampled mode, or profiles saved from a service's endpoint). Without a
//! snapshot the holder is unknown, so these findings name the growing stack,
//! the scenario it suggests, and ask for a full-mode snapshot to name the
//! holder; their confidence stays below that of holder-based findings.

use super::{bytes, frames, Finding};
use crate::trend::{self, SeriesTrend};
use crate::view::StackView;

/// Confidence of a finding made from a growing stack alone.
const STACK_ONLY_CONFIDENCE: f64 = 0.5;

const SNAPSHOT_HINT: &str = "run with LEAKSCOPE_MODE=full (or take leakscope::snapshot()) to see \
     which object holds it";

fn lower(site: &[String]) -> Vec<String> {
    site.iter().map(|f| f.to_ascii_lowercase()).collect()
}

/// The scenario a growing allocation stack suggests, with a title and fix.
fn classify(site: &[String]) -> (&'static str, f64, String, &'static str) {
    let l = lower(site);
    let has = |needle: &str| l.iter().any(|f| f.contains(needle));
    let connects = has("handshake") || has("accept") || has("serve_connection");
    let reads = has("decode") || has("::read") || has("recv");
    if let (Some(ctor), true) = (
        frames::constructor(site),
        frames::client_side(site) || connects,
    ) {
        return (
            "client-per-call",
            STACK_ONLY_CONFIDENCE,
            format!(
                "memory grows under a client constructor ({ctor}): clients may be built per call"
            ),
            "build the client once and share it (clone the channel) instead of one per call",
        );
    }
    if connects {
        return (
            "idle-connections",
            STACK_ONLY_CONFIDENCE,
            "memory grows with connection set-up: connections are opened and left open".into(),
            "limit idle connections (idle timeout, keep-alive limits, max connections)",
        );
    }
    if reads && frames::client_side(site) {
        return (
            "response-field-held-client",
            STACK_ONLY_CONFIDENCE,
            "memory grows under the client's receive path: responses (or parts of them) are kept"
                .into(),
            "copy what you keep from a response (Bytes::copy_from_slice, to_vec, String) \
             instead of keeping a zero-copy slice of it",
        );
    }
    if reads {
        return (
            "request-field-held",
            STACK_ONLY_CONFIDENCE,
            "memory grows under the server's request-decoding path: requests (or parts of \
             them) are kept"
                .into(),
            "copy what you keep from a request (Bytes::copy_from_slice, to_vec, String) \
             instead of keeping a zero-copy slice of it",
        );
    }
    let place =
        frames::first_application(site).map_or_else(|| trend::stack_name(site), str::to_string);
    (
        "unclassified",
        0.3,
        format!("memory allocated in {place} grows, and nothing shows who keeps it"),
        "find what keeps these blocks (a collection that only grows, a cache without a bound) \
         with a full-mode snapshot",
    )
}

fn finding(s: &SeriesTrend, scenario: &str, confidence: f64, title: String, fix: &str) -> Finding {
    let mut evidence = vec![format!(
        "live memory allocated at {} grows {}/s ({} -> {}), consistency (Kendall's tau) {:.2}",
        s.name,
        bytes(s.bytes_per_second),
        bytes(s.first_bytes),
        bytes(s.last_bytes),
        s.consistency
    )];
    if let Some(u) = s.bytes_per_unit {
        evidence.push(format!("about {} more per request served", bytes(u)));
    }
    evidence.push(format!(
        "no snapshot in this run, so the holder is unknown: {SNAPSHOT_HINT}"
    ));
    Finding {
        scenario: scenario.to_string(),
        title,
        confidence,
        evidence,
        fix: fix.to_string(),
        chain: Vec::new(),
        stack: s.detail.clone(),
    }
}

/// One finding per scenario suggested by the steepest growing stacks.
pub(super) fn stack_growth_findings(profiles: &[StackView], out: &mut Vec<Finding>) {
    let report = trend::profile_trends(profiles);
    let mut seen: Vec<&str> = Vec::new();
    for s in report.growing().take(5) {
        let (scenario, confidence, title, fix) = classify(&s.detail);
        if seen.contains(&scenario) {
            continue;
        }
        seen.push(scenario);
        out.push(finding(s, scenario, confidence, title, fix));
    }
}
