//! request-field-held: a handler keeps small slices of requests (zero-copy
//! `Bytes` fields), so each keeps its whole receive buffer alive.
//!
//! With snapshots: receive buffers pinned by slices held in the
//! application's structures, on the server side (or a side no frame names),
//! and not JSON values (json-borrowed-strings). From stacks alone: a server
//! receive path grows in a run without zero-copy JSON values, or (sampled
//! mode, a protocol no frame names) a growing stack whose buffers the heap
//! walk finds pinned by small slices held from a static.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_KEYWORD_ONLY, CONFIDENCE_STACK_ONLY};
use super::super::Finding;
use super::{pinned, stack_finding, Rule};
use crate::frames::{Class, Side};

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
        if ev.seen.contains(Class::JsonZeroCopy) {
            return Vec::new();
        }
        // A receive path the frame table knows; else (a hand-written
        // protocol over plain sockets) buffers the heap walk finds pinned by
        // small slices the application holds.
        if let Some(s) = ev.growing_stacks().find(|s| {
            s.facts.role == Some(Class::Receive)
                && s.facts.side != Some(Side::Client)
                && super::receives_into_buffers(s)
        }) {
            let krate = s
                .frame(s.facts.role_frame)
                .map_or("", crate::frames::crate_of);
            return vec![stack_finding(
                ev,
                ID,
                CONFIDENCE_KEYWORD_ONLY,
                s,
                format!(
                    "the growth is under the server's receive path ({krate}): requests, or \
                     zero-copy parts of them, are being kept"
                ),
            )];
        }
        ev.growing_stacks()
            .filter(|s| s.facts.side != Some(Side::Client))
            .find_map(|s| Some((s, pinned::walked_pin(ev, s.frames())?)))
            .map(|(s, p)| {
                let pin = &p.pin;
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!(
                        "a walk of glibc's heap finds {} buffers allocated here ({}) kept alive \
                         by {} of slices of them, held from {}: received data, or zero-copy \
                         parts of it, are being kept",
                        pin.buffers.blocks,
                        super::bytes(pin.buffers.bytes as f64),
                        super::bytes(pin.slice_bytes as f64),
                        p.root.as_deref().unwrap_or("an unknown root")
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
    fn a_growing_hyper_receive_path_names_it_from_stacks_alone() {
        let run = Run::stacks_only(|t, p| {
            p.stack(HYPER_READ, 100 * t, 8192);
            p.stack(&["app::steady", "app::main"], 10, 4096);
        });
        let f = only(&run, &RequestFieldHeld);
        assert_eq!(f.confidence, CONFIDENCE_KEYWORD_ONLY);
        assert!(f.evidence.iter().any(|e| e.contains("(hyper)")), "{f:#?}");
        assert!(f.evidence.iter().any(|e| e.contains("holder is unknown")));
    }

    #[test]
    fn a_users_frame_file_teaches_the_receive_path_of_their_framework() {
        let own: &[&str] = &[
            "bytes::bytes_mut::BytesMut::reserve_inner",
            "mynet::conn::Reader<S>::fill",
            "mynet::server::Server::serve_one",
            "app::main",
        ];
        let run = || Run::stacks_only(|t, p| p.stack(own, 100 * t, 8192));
        assert!(RequestFieldHeld.check(&run().evidence()).is_empty());
        let mut frames = crate::frames::FrameTable::builtin();
        frames
            .add_text(
                "receive mynet::conn::Reader::fill\nserver mynet::server::*\nlibrary mynet::*\n",
                "mine",
            )
            .unwrap();
        let run = run().with_frames(frames);
        let f = only(&run, &RequestFieldHeld);
        assert!(f.evidence.iter().any(|e| e.contains("(mynet)")), "{f:#?}");
    }

    #[test]
    fn buffers_a_heap_walk_finds_pinned_by_a_static_need_no_known_receive_path() {
        let run = Run::walked(|t, p| {
            p.pin_walked("static app::KEPT", TOKIO_READ_BUF, 300 * t as u64, 8192, 4);
        });
        let f = only(&run, &RequestFieldHeld);
        assert_eq!(f.confidence, CONFIDENCE_STACK_ONLY);
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
    fn flat_receive_buffers_are_no_finding() {
        let run = Run::stacks_only(|_, p| p.stack(HYPER_READ, 100, 8192));
        assert!(RequestFieldHeld.check(&run.evidence()).is_empty());
    }
}
