//! response-field-held: a handler keeps a reference to what it returns. The
//! kept blocks were allocated by the handler itself (a reply sent without
//! copying), about one per request, each the size of a payload; a kept
//! `Bytes` clone of the reply shows as a shared-buffer record beside it.

use super::super::evidence::{Evidence, HeldSite};
use super::super::thresholds::{
    CONFIDENCE_HOLDER, CONFIDENCE_STACK_ONLY, PAYLOAD_BYTES, PER_EVENT_RANGE,
};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::{Class, Side};

pub struct ResponseFieldHeld;

const ID: &str = "response-field-held";

/// About one per request.
fn per_request(kept: f64, requests: Option<u64>) -> bool {
    requests.is_some_and(|r| {
        let ratio = kept / (r as f64).max(1.0);
        r > 0 && (PER_EVENT_RANGE.0..=PER_EVENT_RANGE.1).contains(&ratio)
    })
}

fn handler_allocated(h: &HeldSite) -> bool {
    h.facts.app_leaf() && h.facts.side == Some(Side::Server)
}

impl Rule for ResponseFieldHeld {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        if let Some(snaps) = &ev.snapshots {
            let mut out = Vec::new();
            for root in snaps.roots.iter().filter(|r| r.growing()) {
                let Some(main) = root.main().filter(|m| handler_allocated(m)) else {
                    continue;
                };
                let kept = main.amount.blocks.saturating_sub(main.first.blocks) as f64;
                let avg = main.amount.bytes as f64 / main.amount.blocks.max(1) as f64;
                let clones = root
                    .held
                    .iter()
                    .filter(|h| h.facts.role == Some(Class::BufferShare))
                    .map(|h| h.amount.blocks)
                    .sum::<u64>();
                let shared = clones * 2 >= main.amount.blocks;
                if !per_request(kept, ev.requests) || !(shared || avg >= PAYLOAD_BYTES) {
                    continue;
                }
                let mut f = finding(ID, CONFIDENCE_HOLDER);
                let at = main
                    .facts
                    .first_app
                    .and_then(|i| main.site.get(i))
                    .map_or("?", String::as_str);
                f.evidence.push(format!(
                    "{} holds {} blocks ({}, about {} each) allocated in {at} while handling requests",
                    root.label,
                    main.amount.blocks,
                    bytes(main.amount.bytes as f64),
                    bytes(avg)
                ));
                f.evidence.push(format!(
                    "about one block per request: {} more since warm-up, {} requests; it grows {}/s",
                    kept,
                    ev.requests.unwrap_or(0),
                    bytes(root.trend.bytes_per_second)
                ));
                if shared {
                    f.evidence.push(format!(
                        "it also holds {clones} shared-buffer records (Bytes clones): a second reference to buffers that were sent"
                    ));
                }
                f.chain = vec![root.label.clone()];
                f.stack = main.site.clone();
                f.claims.push(root.label.clone());
                out.push(f);
            }
            return out;
        }
        let requests = ev.requests;
        ev.growing_stacks()
            .find(|s| {
                s.facts.app_leaf()
                    && s.facts.side == Some(Side::Server)
                    && per_request(s.objects_last - s.objects_first, requests)
                    && s.average_live() >= PAYLOAD_BYTES
            })
            .map(|s| {
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!(
                        "a handler's own allocation keeps about one block of {} per request: \
                         replies (or copies of requests) that are kept after sending",
                        bytes(s.average_live())
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
    fn a_static_holding_one_reply_per_request_is_named() {
        let run = Run::new(|t, b| {
            b.group("static app::HISTORY", HANDLER_ALLOC, 100 * t as u64, 4000);
        });
        let f = only(&run, &ResponseFieldHeld);
        assert_eq!(f.chain, ["static app::HISTORY"]);
        assert!(f.evidence[0].contains("app::handler::reply"), "{f:#?}");
    }

    #[test]
    fn small_entries_are_not_replies_unless_they_are_shared_buffers() {
        let small =
            Run::new(|t, b| b.group("static app::INDEX", HANDLER_ALLOC, 100 * t as u64, 200));
        assert!(ResponseFieldHeld.check(&small.evidence()).is_empty());
        let shared = Run::new(|t, b| {
            b.group("static app::INDEX", HANDLER_ALLOC, 100 * t as u64, 800);
            b.group(
                "static app::INDEX",
                &[
                    "bytes::bytes::shallow_clone_vec",
                    "<bytes::bytes::Bytes as core::clone::Clone>::clone",
                    "app::history::record",
                ],
                100 * t as u64,
                24,
            );
        });
        assert!(only(&shared, &ResponseFieldHeld).evidence[2].contains("shared-buffer"));
    }

    #[test]
    fn from_stacks_a_handler_keeping_a_payload_per_request() {
        let run = Run::stacks_only(|t, p| p.stack(HANDLER_ALLOC, 100 * t, 4000));
        assert_eq!(
            only(&run, &ResponseFieldHeld).confidence,
            CONFIDENCE_STACK_ONLY
        );
        // Ten blocks per request are not replies.
        let many = Run::stacks_only(|t, p| p.stack(HANDLER_ALLOC, 1000 * t, 4000));
        assert!(ResponseFieldHeld.check(&many.evidence()).is_empty());
    }
}
