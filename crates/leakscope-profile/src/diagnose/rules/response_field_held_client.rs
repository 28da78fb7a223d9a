//! response-field-held-client: the caller keeps small slices of responses,
//! pinning the buffers they were received into (request-field-held on the
//! client's side).

use super::super::evidence::Evidence;
use super::super::Finding;
use super::{pinned, Rule};
use crate::frames::Side;

pub struct ResponseFieldHeldClient;

const ID: &str = "response-field-held-client";

impl Rule for ResponseFieldHeldClient {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            return snaps
                .pins
                .iter()
                .filter(|p| {
                    pinned::counts(ev, p)
                        && p.buffer_facts.side == Some(Side::Client)
                        && !pinned::is_json(ev, p)
                })
                .map(|p| pinned::pinned_finding(ev, p, ID))
                .collect();
        }
        // From stacks, only with a heap walk's evidence (see
        // request-field-held): a client's receive path that grows.
        ev.growing_stacks()
            .filter(|s| s.facts.side == Some(Side::Client))
            .find_map(|s| Some((s, pinned::walked_pin(ev, s)?)))
            .map(|(s, p)| {
                pinned::walked_finding(
                    ev,
                    ID,
                    s,
                    p,
                    "responses, or zero-copy parts of them, are being kept",
                )
            })
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;

    #[test]
    fn pinned_response_buffers_are_the_callers() {
        let run = Run::new(|t, b| {
            b.pin(
                "static app::REPLIES",
                TONIC_CLIENT_READ,
                300 * t as u64,
                8192,
                4,
            );
        });
        let f = only(&run, &ResponseFieldHeldClient);
        assert_eq!(f.chain[0], "static app::REPLIES");
    }

    #[test]
    fn from_stacks_only_with_a_walk_finding_the_buffers_pinned() {
        let stacks = Run::stacks_only(|t, p| p.stack(TONIC_CLIENT_READ, 100 * t, 8192));
        assert!(ResponseFieldHeldClient.check(&stacks.evidence()).is_empty());
        let walked = Run::walked(|t, p| {
            p.pin_walked(
                "static app::REPLIES",
                TONIC_CLIENT_READ,
                300 * t as u64,
                8192,
                4,
            );
        });
        let f = only(&walked, &ResponseFieldHeldClient);
        assert_eq!(
            f.confidence,
            crate::diagnose::thresholds::CONFIDENCE_STACK_ONLY
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("held from static app::REPLIES")),
            "{f:#?}"
        );
        // They are not a server's request fields.
        assert!(super::super::request_field_held::RequestFieldHeld
            .check(&walked.evidence())
            .is_empty());
    }

    #[test]
    fn the_server_side_is_not_the_caller() {
        let run = Run::walked(|t, p| {
            p.pin_walked("static app::KEPT", HYPER_READ, 300 * t as u64, 8192, 4);
        });
        assert!(ResponseFieldHeldClient.check(&run.evidence()).is_empty());
    }
}
