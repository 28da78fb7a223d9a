//! json-borrowed-strings: values parsed zero-copy from JSON (sonic-rs lazy
//! values, borrowed strings) are cached, and each keeps its whole input
//! document alive. The allocation profile shows only the receive path; the
//! holder's link to a JSON parser tells it apart from request-field-held.

use super::super::evidence::Evidence;
use super::super::thresholds::CONFIDENCE_STACK_ONLY;
use super::super::Finding;
use super::{pinned, stack_finding, Rule};
use crate::frames::{Class, Side};

pub struct JsonBorrowedStrings;

const ID: &str = "json-borrowed-strings";

impl Rule for JsonBorrowedStrings {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            return snaps
                .pins
                .iter()
                .filter(|p| pinned::counts(ev, p) && pinned::is_json(ev, p))
                .map(|p| pinned::pinned_finding(ev, p, ID))
                .collect();
        }
        if !ev.seen.contains(Class::JsonZeroCopy) {
            return Vec::new();
        }
        ev.growing_stacks()
            .find(|s| s.facts.role == Some(Class::Receive) && s.facts.side != Some(Side::Client))
            .map(|s| {
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    "the growth is under the server's receive path, and this service makes \
                     zero-copy JSON values (values that borrow their input document)"
                        .to_string(),
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
    fn pinned_buffers_reached_with_json_values_are_json() {
        let run = Run::new(|t, b| {
            b.pin(
                "static app::PROFILES",
                TONIC_SERVER_READ,
                300 * t as u64,
                16384,
                40,
            );
            b.group("static app::PROFILES", SONIC_LAZY, 300 * t as u64, 32);
        });
        let f = only(&run, &JsonBorrowedStrings);
        assert_eq!(f.chain[0], "static app::PROFILES");
        // The same pins are not a plain request field.
        assert!(super::super::request_field_held::RequestFieldHeld
            .check(&run.evidence())
            .is_empty());
    }

    #[test]
    fn from_stacks_a_receive_path_in_a_run_making_lazy_values() {
        let run = Run::stacks_only(|t, p| {
            p.stack(TONIC_SERVER_READ, 100 * t, 16384);
            p.stack(SONIC_LAZY, 1, 32);
        });
        assert_eq!(only(&run, &JsonBorrowedStrings).scenario, ID);
        let plain = Run::stacks_only(|t, p| p.stack(TONIC_SERVER_READ, 100 * t, 16384));
        assert!(JsonBorrowedStrings.check(&plain.evidence()).is_empty());
    }
}
