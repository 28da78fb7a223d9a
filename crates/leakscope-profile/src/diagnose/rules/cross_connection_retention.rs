//! cross-connection-retention: a component keeps a buffer for every
//! connection it has seen. What grows is about one block per connection
//! accepted, while few connections stay open.

use super::super::evidence::{ConnectionCount, Evidence};
use super::super::thresholds::{
    CONFIDENCE_HOLDER, CONFIDENCE_STACK_ONLY, MAX_OPEN_SHARE, MIN_OPENED_CONNECTIONS,
    PER_EVENT_RANGE,
};
use super::super::Finding;
use super::{bytes, finding, stack_finding, Rule};
use crate::frames::Side;

pub struct CrossConnectionRetention;

const ID: &str = "cross-connection-retention";

/// Connections come and go: many opened, few open.
fn churn(c: &ConnectionCount) -> bool {
    c.opened_now >= MIN_OPENED_CONNECTIONS && c.live_now <= MAX_OPEN_SHARE * c.opened_now
}

/// About one kept block per connection ever opened.
fn per_connection(blocks: f64, c: &ConnectionCount) -> bool {
    let ratio = blocks / c.opened_now.max(1.0);
    (PER_EVENT_RANGE.0..=PER_EVENT_RANGE.1).contains(&ratio)
}

impl Rule for CrossConnectionRetention {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        let conns = ev.connections(Side::Server);
        if !churn(&conns) {
            return Vec::new();
        }
        let said = format!(
            "about one per connection: {:.0} connections accepted during the run, {:.0} still open",
            conns.opened_now, conns.live_now
        );
        if let Some(snaps) = &ev.snapshots {
            let mut out = Vec::new();
            for root in snaps.roots.iter().filter(|r| r.growing()) {
                let Some(main) = root.main() else { continue };
                let kept_per_connection = main.facts.app_leaf()
                    && main.facts.side == Some(Side::Server)
                    && per_connection(main.amount.blocks as f64, &conns);
                if !kept_per_connection {
                    continue;
                }
                let at = main
                    .facts
                    .first_app
                    .and_then(|i| main.site.get(i))
                    .map_or("?", String::as_str);
                let mut f = finding(ID, CONFIDENCE_HOLDER);
                f.evidence.push(format!(
                    "{} holds {} buffers ({}, about {} each) allocated in {at}",
                    root.label,
                    main.amount.blocks,
                    bytes(main.amount.bytes as f64),
                    bytes(main.amount.bytes as f64 / main.amount.blocks.max(1) as f64)
                ));
                f.evidence.push(said.clone());
                f.evidence.push(format!(
                    "grew by {} while connections came and went",
                    bytes(root.last.bytes.saturating_sub(root.first.bytes) as f64)
                ));
                f.chain = vec![root.label.clone()];
                f.stack = main.site.clone();
                f.claims.push(root.label.clone());
                out.push(f);
            }
            return out;
        }
        ev.growing_stacks()
            .find(|s| {
                s.facts.app_leaf()
                    && s.facts.side == Some(Side::Server)
                    && per_connection(s.objects_last, &conns)
            })
            .map(|s| {
                stack_finding(
                    ev,
                    ID,
                    CONFIDENCE_STACK_ONLY,
                    s,
                    format!(
                        "{:.0} blocks of about {} live at this stack, {said}",
                        s.objects_last,
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

    fn scratch(t: i64, b: &mut Point) {
        // 20 connections a second, 2 open at any time; a buffer kept for each.
        b.connections(Side::Server, 20 * t as u64, 2);
        b.group("static app::SCRATCH", HANDLER_ALLOC, 20 * t as u64, 65536);
    }

    #[test]
    fn one_buffer_per_connection_ever_seen() {
        let f = only(&Run::new(scratch), &CrossConnectionRetention);
        assert_eq!(f.chain, ["static app::SCRATCH"]);
        assert!(f.evidence[1].contains("140 connections accepted"), "{f:#?}");
        assert_eq!(
            only(&Run::stacks_only(scratch), &CrossConnectionRetention).confidence,
            CONFIDENCE_STACK_ONLY
        );
    }

    #[test]
    fn without_connection_churn_it_is_something_else() {
        let run = Run::new(|t, b| {
            b.connections(Side::Server, 1, 1);
            b.group("static app::SCRATCH", HANDLER_ALLOC, 20 * t as u64, 65536);
        });
        assert!(CrossConnectionRetention.check(&run.evidence()).is_empty());
    }
}
