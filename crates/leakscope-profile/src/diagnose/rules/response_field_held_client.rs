//! response-field-held-client: the caller keeps small slices of responses,
//! pinning the buffers they were received into (request-field-held on the
//! client's side).

use super::super::evidence::Evidence;
use super::super::thresholds::CONFIDENCE_STACK_ONLY;
use super::super::Finding;
use super::{pinned, stack_finding, Rule};
use crate::frames::{Class, Side};

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
        ev.growing_stacks()
            .find(|s| s.facts.role == Some(Class::Receive) && s.facts.side == Some(Side::Client))
            .map(|s| {
                let krate = s
                    .frame(s.facts.role_frame)
                    .map_or("", crate::frames::crate_of);
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!(
                        "the growth is under the client's receive path ({krate}): responses, \
                         or zero-copy parts of them, are being kept"
                    ),
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
    fn a_growing_client_receive_path_from_stacks_alone() {
        let run = Run::stacks_only(|t, p| p.stack(TONIC_CLIENT_READ, 100 * t, 8192));
        let f = only(&run, &ResponseFieldHeldClient);
        assert_eq!(f.confidence, CONFIDENCE_STACK_ONLY);
    }

    #[test]
    fn the_server_side_is_not_the_caller() {
        let run = Run::stacks_only(|t, p| p.stack(HYPER_READ, 100 * t, 8192));
        assert!(ResponseFieldHeldClient.check(&run.evidence()).is_empty());
    }
}
