//! json-borrowed-strings: values parsed zero-copy from JSON (sonic-rs lazy
//! values, borrowed strings) are cached, and each keeps its whole input
//! document alive. The allocation profile shows only the receive path; the
//! holder's link to a JSON parser tells it apart from request-field-held.

use super::super::evidence::Evidence;
use super::super::Finding;
use super::{pinned, Rule};
use crate::frames::Side;

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
        // From stacks, only with a heap walk's evidence (see
        // request-field-held): buffers pinned from JSON values.
        ev.growing_stacks()
            .filter(|s| s.facts.side != Some(Side::Client))
            .find_map(|s| Some((s, pinned::walked_json_pin(ev, s)?)))
            .map(|(s, p)| {
                pinned::walked_finding(
                    ev,
                    ID,
                    s,
                    p,
                    "values parsed zero-copy from JSON (which borrow their input document) \
                     are being kept",
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

    /// A walk's received buffers, pinned by slices held from a static.
    fn pin_received_buffers(t: i64, p: &mut Point) {
        p.pin_walked(
            "static app::PROFILES",
            TONIC_SERVER_READ,
            300 * t as u64,
            16384,
            40,
        );
    }

    #[test]
    fn from_stacks_only_with_a_walk_finding_buffers_pinned_from_json_values() {
        // A receive path in a run that makes lazy values is no evidence by
        // itself: the walk must find the buffers pinned from JSON values.
        let stacks = Run::stacks_only(|t, p| {
            p.stack(TONIC_SERVER_READ, 100 * t, 16384);
            p.stack(SONIC_LAZY, 1, 32);
        });
        assert!(JsonBorrowedStrings.check(&stacks.evidence()).is_empty());
        let walked = Run::walked(|t, p| {
            pin_received_buffers(t, p);
            p.group("static app::PROFILES", SONIC_LAZY, 300 * t as u64, 32);
        });
        let f = only(&walked, &JsonBorrowedStrings);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("held from static app::PROFILES")),
            "{f:#?}"
        );
        // A holder the walk knows nothing of (not sampled), in a run that
        // makes zero-copy JSON values: JSON values' slices.
        let unsampled_holder = Run::walked(|t, p| {
            pin_received_buffers(t, p);
            p.stack(SONIC_LAZY, 1, 32);
        });
        assert_eq!(only(&unsampled_holder, &JsonBorrowedStrings).scenario, ID);
        assert!(super::super::request_field_held::RequestFieldHeld
            .check(&unsampled_holder.evidence())
            .is_empty());
        // A holder the walk knows (a map's table, sampled) that is no JSON
        // value's, whose slices the field attribution reads inside a JSON
        // document: JSON values' slices, kept inline in the table.
        let json_fields = Run::walked(|t, p| {
            pin_received_buffers(t, p);
            if let Some(pin) = p.pinned.last_mut() {
                pin.holder.name = "app::cache_user".into();
                pin.holder.site = vec!["app::cache_user".into(), "app::handle".into()];
                pin.fields = vec![crate::fields::PinnedField {
                    field: crate::fields::FieldRef {
                        framing: crate::fields::Framing::Grpc,
                        content: crate::fields::Content::Protobuf,
                        tags: vec![2],
                        wire_type: Some(crate::fields::WireType::Len),
                        json_path: Some("$.user".into()),
                        json_key: false,
                        http_part: None,
                    },
                    buffers: pin.buffers.blocks,
                    bytes: pin.buffers.bytes,
                    example: crate::fields::FieldExample::default(),
                    seen_tags: Vec::new(),
                    name: None,
                }];
            }
            p.stack(SONIC_LAZY, 1, 32);
        });
        assert_eq!(only(&json_fields, &JsonBorrowedStrings).scenario, ID);
        assert!(super::super::request_field_held::RequestFieldHeld
            .check(&json_fields.evidence())
            .is_empty());
        // The same walk without JSON values is a plain request field.
        let plain = Run::walked(|t, p| {
            pin_received_buffers(t, p);
        });
        assert!(JsonBorrowedStrings.check(&plain.evidence()).is_empty());
        assert_eq!(
            only(&plain, &super::super::request_field_held::RequestFieldHeld).scenario,
            "request-field-held"
        );
    }
}
