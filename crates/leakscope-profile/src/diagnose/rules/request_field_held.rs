//! request-field-held: a handler keeps small slices of requests (zero-copy
//! `Bytes` fields), so each keeps its whole receive buffer alive.
//!
//! With snapshots: receive buffers pinned by slices held in the
//! application's structures, on the server side (or a side no frame names),
//! and not JSON values (json-borrowed-strings). Without snapshots (sampled
//! mode): a growing stack whose buffers the heap walk finds pinned by small
//! slices held from a static. Never from a receive path's name alone.

use super::super::evidence::Evidence;
use super::super::Finding;
use super::{pinned, Rule};
use crate::frames::Side;

pub struct RequestFieldHeld;

const ID: &str = "request-field-held";

impl Rule for RequestFieldHeld {
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
                        && p.buffer_facts.side != Some(Side::Client)
                        && !pinned::is_json(ev, p)
                })
                .map(|p| pinned::pinned_finding(ev, p, ID))
                .collect();
        }
        // From stacks, only with a heap walk's evidence: buffers allocated
        // at a growing stack, pinned by small slices the application holds.
        // A receive path's name alone is no evidence (unclassified says
        // what such a stack shows).
        ev.growing_stacks()
            .filter(|s| s.facts.side != Some(Side::Client))
            .find_map(|s| Some((s, pinned::walked_pin(ev, s)?)))
            .map(|(s, p)| {
                pinned::walked_finding(
                    ev,
                    ID,
                    s,
                    p,
                    "received data, or zero-copy parts of it, are being kept",
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
    fn pinned_request_buffers_held_by_a_static_are_named_with_their_holder() {
        let run = Run::new(|t, b| {
            b.pin("static app::CACHE", HYPER_READ, 300 * t as u64, 8192, 4);
        });
        let f = only(&run, &RequestFieldHeld);
        assert_eq!(f.scenario, ID);
        assert_eq!(f.chain[0], "static app::CACHE");
        assert!(
            f.evidence[0].contains("hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io"),
            "{f:#?}"
        );
        assert!(f.confidence > 0.9);
    }

    #[test]
    fn buffers_pinned_on_the_client_side_are_not_requests() {
        let run = Run::new(|t, b| {
            b.pin(
                "static app::REPLIES",
                TONIC_CLIENT_READ,
                300 * t as u64,
                8192,
                4,
            );
        });
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_growing_receive_path_alone_is_no_slice_pinning() {
        // The name of a receive path is no evidence that slices pin its
        // buffers (issue: a dependency's own state grew under `recv`).
        let run = Run::stacks_only(|t, p| {
            p.stack(HYPER_READ, 100 * t, 8192);
            p.stack(&["app::steady", "app::main"], 10, 4096);
        });
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }

    #[test]
    fn buffers_a_heap_walk_finds_pinned_by_a_static_need_no_known_receive_path() {
        let run = Run::walked(|t, p| {
            p.pin_walked("static app::KEPT", TOKIO_READ_BUF, 300 * t as u64, 8192, 4);
        });
        let f = only(&run, &RequestFieldHeld);
        assert_eq!(
            f.confidence,
            crate::diagnose::thresholds::CONFIDENCE_STACK_ONLY
        );
        assert!(
            f.evidence.iter().any(|e| e.contains(
                "finds 2400 buffers allocated here (18.75MB) kept alive by 9.38kB of slices of \
                 them, held from static app::KEPT"
            )),
            "{f:#?}"
        );
        // Without the walk, or pinned from a thread's stack (work in flight,
        // a framework's connection state), the stack alone says nothing.
        let run = Run::stacks_only(|t, p| p.stack(TOKIO_READ_BUF, 300 * t, 8192));
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
        let run = Run::walked(|t, p| {
            p.pin_walked(
                "thread w: app::conn::serve",
                TOKIO_READ_BUF,
                300 * t as u64,
                8192,
                4,
            );
        });
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }

    #[test]
    fn a_walk_may_find_pinned_the_read_buffers_the_same_handler_made_first() {
        // The growing stack regrows the read buffer (`reserve`); the walk
        // sampled the pinned buffers a handler made first (`with_capacity`).
        let pinned_made_by = |handler: &'static str| {
            Run::walked(move |t, p| {
                p.stack(TOKIO_READ_BUF, 300 * t, 8192);
                let site = [
                    "bytes::bytes_mut::BytesMut::with_capacity",
                    handler,
                    "tokio::runtime::task::core::Core<T,S>::poll",
                ];
                p.pin_walked("static app::KEPT", &site, 200, 8192, 4);
            })
        };
        // The same handler asked for both.
        let f = only(
            &pinned_made_by("app::conn::serve::{{closure}}"),
            &RequestFieldHeld,
        );
        assert!(
            f.evidence.iter().any(|e| e.contains("finds 200 buffers")),
            "{f:#?}"
        );
        // Another handler's pinned buffers are not this stack's.
        let run = pinned_made_by("app::admin::serve::{{closure}}");
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }

    #[test]
    fn flat_receive_buffers_are_no_finding() {
        let run = Run::stacks_only(|_, p| p.stack(HYPER_READ, 100, 8192));
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }
}
